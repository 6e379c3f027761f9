//! The restart quarantine: whether a node that was just (re)connected to may vote now.
//!
//! Judged on every new connection (a restart breaks the old one), from what the node says
//! of itself (`run_id`, uptime, AOF with `appendfsync always`) and from the **restart
//! marker**: a key without ttl that this crate writes once on each node, under one
//! well-known name per deployment (`<key prefix>tokio-redlock:restart-marker`), so that
//! every manager's marker counts for every other. A node whose data survived still has
//! it; a node that came back on an empty volume, or was flushed, does not. Configuration
//! alone cannot tell a replaced disk from a kept one; the marker can.
//!
//! Nothing here runs per acquisition: the cost is one `EXISTS` per new connection, and
//! one `SET NX` per node (and restart) in the background.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::Value;
use tokio_util::task::AbortOnDropHandle;

use crate::clock::instant_after;
use crate::info::{appendfsync, appendfsync_cmd, info_cmd, ServerInfo};
use crate::sync::lock;

/// The restart marker's key, after the key prefix.
pub(crate) const MARKER_NAME: &str = "tokio-redlock:restart-marker";

/// What the marker holds: only its presence matters; the text tells an operator who
/// finds it what it is.
const MARKER_VALUE: &str = "tokio-redlock restart marker: its absence after a restart means this \
                            node lost its data; never give it a ttl (see docs/operations.md)";

/// Bound on the marker's write: a node that hangs must not keep the task (and its
/// connection) for long; a write that failed is only a warning and a later try.
const MARK_TIMEOUT: Duration = Duration::from_secs(5);

/// What this manager remembers of one node from its earlier connections.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Memory {
    /// The node's `run_id` at the last connection; `None` before the first.
    pub(super) run_id: Option<String>,
    /// Whether the marker was there (or written) in that run.
    pub(super) marked: bool,
    /// Whether the last try to write the marker failed (an ACL, a read-only user, a full
    /// node under `noeviction`): its absence then proves nothing.
    pub(super) unwritable: bool,
}

/// What the node said at one new connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Seen {
    pub(super) run_id: Option<String>,
    /// Whole seconds, rounded down; zero where unreadable.
    pub(super) uptime: Duration,
    /// AOF on with `appendfsync always`.
    pub(super) durable: bool,
    /// Whether the marker exists; `None` where it could not be read.
    pub(super) marker: Option<bool>,
}

/// Why a connection's judgement deserves a warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Note {
    /// Restarted without the marker: the node lost its data.
    Lost,
    /// Same run, and the marker this manager saw is gone: flushed or deleted.
    Flushed,
    /// The marker could not be read: judged by configuration alone.
    Unreadable,
    /// Restarted without the marker, which could not be written before: judged by
    /// configuration alone.
    Unproven,
}

/// The judgement of one new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Judgement {
    /// How long from now the node may not vote.
    pub(super) quarantine: Option<Duration>,
    /// When to write the missing marker, from now.
    pub(super) mark_after: Option<Duration>,
    pub(super) note: Option<Note>,
}

/// Pure: may the node vote, and when is its marker written.
///
/// The marker is written only once the node may vote *and* has been up for `period`:
/// every key it could have lost before then has expired, so a marker never vouches for
/// data lost before it was written (a manager meeting a wiped node for the first time
/// cannot tell it from a fresh one, but its marker does not hide the loss from the
/// managers that knew the node before).
pub(super) fn judge(memory: &Memory, seen: &Seen, period: Duration) -> Judgement {
    // The rule for a node without proof: it may vote once up for the period.
    let young = period.checked_sub(seen.uptime).filter(|d| !d.is_zero());
    let by_config = if seen.durable { None } else { young };
    let known = memory.run_id.is_some();
    let restarted = known && memory.run_id != seen.run_id;
    let (quarantine, note) = match seen.marker {
        Some(true) => (by_config, None),
        None => (by_config, Some(Note::Unreadable)),
        // Lost at some moment up to now: whatever it held expires within the period.
        Some(false) if !restarted && memory.marked => (Some(period), Some(Note::Flushed)),
        // Lost at the start: whatever it held expires within the period of its uptime.
        Some(false) if restarted && memory.unwritable => (by_config, Some(Note::Unproven)),
        Some(false) if restarted => (young, young.filter(|_| seen.durable).map(|_| Note::Lost)),
        // First contact, or a run in which the marker was never there: nothing to
        // compare with, so the configuration is trusted as before.
        Some(false) => (by_config, None),
    };
    let mark_after = (seen.marker == Some(false)).then(|| {
        quarantine
            .unwrap_or_default()
            .max(young.unwrap_or_default())
    });
    Judgement {
        quarantine,
        mark_after,
        note,
    }
}

/// One node's quarantine: its settings, what this manager remembers of it, and until
/// when its votes do not count.
pub(crate) struct Restarts {
    period: Duration,
    marker: Arc<str>,
    memory: Mutex<Memory>,
    votes_from: Mutex<Option<Instant>>,
    /// The pending write of the marker; dropped (aborted) with the node, or replaced by
    /// the next connection's.
    marking: Mutex<Option<AbortOnDropHandle<()>>>,
}

impl Restarts {
    /// A quarantine of `period` whose marker is `marker` (the key, prefix included).
    pub(crate) fn new(period: Duration, marker: String) -> Self {
        Self {
            period,
            marker: marker.into(),
            memory: Mutex::new(Memory::default()),
            votes_from: Mutex::new(None),
            marking: Mutex::new(None),
        }
    }

    /// Until when the node's votes do not count, if that is still ahead.
    pub(crate) fn quarantined_until(&self) -> Option<Instant> {
        (*lock(&self.votes_from)).filter(|until| Instant::now() < *until)
    }

    /// Judges a new connection and sets the quarantine: it only ever grows, so that a
    /// reconnect in the middle of one does not end it.
    pub(crate) async fn check(
        self: &Arc<Self>,
        conn: &mut MultiplexedConnection,
        index: usize,
        endpoint: &str,
    ) {
        let now = Instant::now();
        let reply = info_cmd().query_async::<Value>(conn).await;
        let Some(info) = reply.ok().as_ref().and_then(ServerInfo::from_reply) else {
            // Unreadable proves nothing: the whole period, counted from now.
            self.quarantine_until(instant_after(self.period), index, endpoint);
            return;
        };
        let mut durable = false;
        if info.aof_enabled == Some(true) {
            let reply = appendfsync_cmd().query_async::<Value>(conn).await;
            durable = reply.ok().as_ref().and_then(appendfsync).as_deref() == Some("always");
        }
        let mut exists = redis::cmd("EXISTS");
        exists.arg(&*self.marker);
        let marker = match exists.query_async::<i64>(conn).await {
            Ok(n) => Some(n > 0),
            Err(e) => {
                tracing::debug!(node = index, error = %e, "could not read the restart marker");
                None
            }
        };
        let seen = Seen {
            run_id: info.run_id,
            uptime: info.uptime.unwrap_or(Duration::ZERO),
            durable,
            marker,
        };
        let judged = {
            let mut memory = lock(&self.memory);
            let judged = judge(&memory, &seen, self.period);
            let same_run = memory.run_id == seen.run_id;
            memory.marked = seen.marker.unwrap_or(same_run && memory.marked);
            memory.run_id.clone_from(&seen.run_id);
            judged
        };
        self.warn(judged.note, index, endpoint);
        if let Some(left) = judged.quarantine {
            let until = now.checked_add(left).unwrap_or_else(|| instant_after(left));
            self.quarantine_until(until, index, endpoint);
        }
        let task = judged.mark_after.map(|after| {
            let write = mark(
                Arc::downgrade(self),
                conn.clone(),
                seen.run_id,
                after,
                index,
            );
            AbortOnDropHandle::new(tokio::spawn(write))
        });
        *lock(&self.marking) = task;
    }

    fn quarantine_until(&self, until: Instant, index: usize, endpoint: &str) {
        let mut votes_from = lock(&self.votes_from);
        let until = votes_from.map_or(until, |was| was.max(until));
        *votes_from = Some(until);
        drop(votes_from);
        tracing::warn!(
            node = index, %endpoint, remaining = ?until.saturating_duration_since(Instant::now()),
            "node restarted recently without proof its data survived; it does not vote until the quarantine ends"
        );
    }

    fn warn(&self, note: Option<Note>, index: usize, endpoint: &str) {
        let marker = &*self.marker;
        match note {
            None => {}
            Some(Note::Lost) => tracing::warn!(
                node = index, %endpoint, marker,
                "node restarted without the restart marker: it lost its data (an empty volume, \
                 a replaced disk), whatever its persistence settings say"
            ),
            Some(Note::Flushed) => tracing::warn!(
                node = index, %endpoint, marker,
                "the restart marker is gone from a node that had it (FLUSHALL, FLUSHDB or a \
                 deleted key): its locks are presumed lost"
            ),
            Some(Note::Unreadable) => tracing::warn!(
                node = index, %endpoint, marker,
                "cannot read the restart marker (an ACL?): a lost disk cannot be told from a \
                 kept one, so the node is judged by its persistence settings alone"
            ),
            Some(Note::Unproven) => tracing::warn!(
                node = index, %endpoint, marker,
                "node restarted without the restart marker, which could not be written: it is \
                 judged by its persistence settings alone; allow this client to write the key"
            ),
        }
    }
}

/// Writes the marker `after` from now (`SET NX`, no ttl) if the node is still in run
/// `run_id` by this manager's knowledge, and remembers how that went.
async fn mark(
    restarts: Weak<Restarts>,
    mut conn: MultiplexedConnection,
    run_id: Option<String>,
    after: Duration,
    index: usize,
) {
    tokio::time::sleep(after).await;
    let Some(restarts) = restarts.upgrade() else {
        return;
    };
    if lock(&restarts.memory).run_id != run_id {
        return;
    }
    let mut set = redis::cmd("SET");
    set.arg(&*restarts.marker).arg(MARKER_VALUE).arg("NX");
    let reply = tokio::time::timeout(MARK_TIMEOUT, set.query_async::<Value>(&mut conn));
    let written = matches!(reply.await, Ok(Ok(_)));
    let mut memory = lock(&restarts.memory);
    if memory.run_id == run_id {
        memory.marked |= written;
        memory.unwritable = !written;
    }
    drop(memory);
    if !written {
        tracing::warn!(
            node = index,
            marker = &*restarts.marker,
            "could not write the restart marker (an ACL, a read-only user, a full node?): \
             a later restart of this node that lost its data cannot be detected"
        );
    }
}

#[cfg(test)]
mod tests;
