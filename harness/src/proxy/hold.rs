//! Late delivery: requests held back by the proxy and written to the server later, also
//! after the client that sent them gave up, closed its connection and opened a new one.
//!
//! This is what a real network can do: TCP delivers what was written before a close, so
//! a request a client timed out on may reach its server after every request the client
//! sent afterwards on a fresh connection. The fault makes that order happen on purpose.
//!
//! Bookkeeping only; the request pump (`Pump::run` in the parent module) decides when to
//! hold and when to deliver.

use std::sync::Arc;

use tokio::sync::watch;

/// How many connections have requests held back now, so `deliver_held()` can wait until
/// every one has written them to the server.
pub(super) type HeldCount = Arc<watch::Sender<usize>>;

/// The bytes one connection's request pump holds back, oldest first.
///
/// A connection counts in [`HeldCount`] while it holds any; dropping it (the connection
/// ended by a partition's heal, or the proxy dropped) loses them and uncounts it.
pub(super) struct Held {
    bytes: Vec<u8>,
    count: HeldCount,
}

impl Held {
    pub(super) fn new(count: HeldCount) -> Self {
        Self {
            bytes: Vec::new(),
            count,
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Holds `chunk` back, behind what is held already.
    pub(super) fn push(&mut self, chunk: &[u8]) {
        if chunk.is_empty() {
            return;
        }
        if self.bytes.is_empty() {
            self.count.send_modify(|n| *n += 1);
        }
        self.bytes.extend_from_slice(chunk);
    }

    /// Everything held, to be written to the server now.
    pub(super) fn take(&mut self) -> Vec<u8> {
        let bytes = std::mem::take(&mut self.bytes);
        if !bytes.is_empty() {
            self.uncount();
        }
        bytes
    }

    fn uncount(&self) {
        self.count.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if !self.bytes.is_empty() {
            self.uncount();
        }
    }
}
