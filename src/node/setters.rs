//! The order of a node's requests of one owner value: a release or undo of a value runs
//! on the node after every earlier request that may set it ([`SetTicket`],
//! [`Node::settled`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::Node;
use crate::sync::lock;

/// The requests that may still set an owner value on one node: how many, per value, so
/// that a release or undo of the value is sent only after them (see [`Node::settled`]).
///
/// A count per value and one `Notify` per node, where a lock per value per node cost an
/// allocation per node on every acquire: a release waits for its value's count to reach
/// zero, and is woken (with every other waiter on the node, which looks again) each time
/// some value's count does.
#[derive(Default)]
pub(super) struct Setters {
    pub(super) counts: Mutex<HashMap<Arc<str>, usize>>,
    settled: tokio::sync::Notify,
}

/// Held by a request that may set an owner value on a node, from the moment it is made
/// until it is answered or abandoned (its deadline passed, or it was dropped); after that
/// it can no longer be sent or re-sent.
pub(crate) struct SetTicket {
    setters: Arc<Setters>,
    value: Arc<str>,
}

impl Drop for SetTicket {
    fn drop(&mut self) {
        let mut counts = lock(&self.setters.counts);
        let Some(count) = counts.get_mut(&self.value) else {
            return;
        };
        *count = count.saturating_sub(1);
        if *count == 0 {
            counts.remove(&self.value);
            drop(counts);
            self.setters.settled.notify_waiters();
        }
    }
}

impl Node {
    /// Registers a request that may set `value` on this node; the ticket must live as
    /// long as the request may still be sent. Call it when the request is made, before
    /// any await, so that a release started afterwards sees it.
    pub(crate) fn setting(&self, value: &Arc<str>) -> SetTicket {
        *lock(&self.setters.counts)
            .entry(Arc::clone(value))
            .or_default() += 1;
        SetTicket {
            setters: Arc::clone(&self.setters),
            value: Arc::clone(value),
        }
    }

    /// Resolves once no request that may set `value` on this node can still be sent:
    /// each was answered or abandoned. A release or undo of `value` waits for this, so
    /// that it runs on the node after every earlier request carrying the value, first
    /// connections and re-sends included. Bounded by the node timeout of those requests.
    pub(crate) async fn settled(&self, value: &str) {
        // Nothing to wait for, the common case: no need to listen.
        if !lock(&self.setters.counts).contains_key(value) {
            return;
        }
        loop {
            // Listening before looking: a count that reaches zero after the look
            // wakes this one (`notify_waiters` wakes only those already listening).
            let settled = self.setters.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            if !lock(&self.setters.counts).contains_key(value) {
                return;
            }
            settled.await;
        }
    }
}
