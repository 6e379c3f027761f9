//! The late-delivery fault of a [`Node`]: requests that reach the server after what
//! their client sent later on a new connection.

use super::Node;
use crate::HarnessError;

impl Node {
    /// Late delivery: from now on, what clients send on the connections open now is kept
    /// by the proxy instead of reaching the server; connections opened later (a client's
    /// reconnect) flow as usual. Clients see timeouts on the held connections, give up on
    /// them and reconnect, while their bytes wait. Undo with
    /// [`deliver_held`](Self::deliver_held), which writes them to the server, in order per
    /// connection, after everything that went through the newer connections meanwhile.
    ///
    /// This is an order a real network produces: TCP delivers what was written before a
    /// client closed its socket, so a request the client timed out on can land after its
    /// later requests. A [`partition`](Self::partition)'s heal ends the held connections
    /// and loses what they held.
    ///
    /// # Errors
    ///
    /// None today; the `Result` leaves room for faults that can fail.
    pub async fn hold_requests(&self) -> Result<(), HarnessError> {
        self.proxy.hold_requests();
        Ok(())
    }

    /// Ends [`hold_requests`](Self::hold_requests): every held request is written to the
    /// server now (replies go to their client if it is still connected, else nowhere).
    /// Returns once all of them are written. Without a hold it does nothing.
    ///
    /// # Errors
    ///
    /// [`HarnessError::Timeout`] if the held bytes could not be written within 2 s (the
    /// server is paused or gone).
    pub async fn deliver_held(&self) -> Result<(), HarnessError> {
        self.proxy.deliver_held().await
    }

    /// How many connections have requests held back now by
    /// [`hold_requests`](Self::hold_requests) (a connection that sent nothing since the
    /// hold began holds nothing).
    pub fn held_connections(&self) -> usize {
        self.proxy.held_connections()
    }
}
