//! Restarting a node without its data: a replaced disk, a pod rescheduled onto an empty
//! volume, whatever makes a node come back having lost every key.

use super::Node;
use crate::HarnessError;

impl Node {
    /// Kills the server, deletes every file it persisted its data in (the AOF and any RDB
    /// snapshot), and starts it again on the same port and directory, with the same
    /// configuration: it comes back empty even with [`Persistence::AofAlways`], as after
    /// a disk was replaced or a pod was rescheduled onto an empty volume. Waits until it
    /// answers `PING`.
    ///
    /// [`Persistence::AofAlways`]: crate::Persistence::AofAlways
    ///
    /// # Errors
    ///
    /// As for [`restart`](Self::restart), plus [`HarnessError::Io`] when a data file
    /// cannot be deleted.
    ///
    /// # Cancel safety
    ///
    /// If cancelled, the server may be left killed, with or without its data; a later
    /// `restart` or `restart_empty` starts it again.
    pub async fn restart_empty(&self) -> Result<(), HarnessError> {
        self.server.restart_empty().await
    }
}
