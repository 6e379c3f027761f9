//! [`Op`]: the request a round sends to every node, and how it is ordered against the
//! other requests of the same owner value on each node ([`Order`]).

use std::sync::Arc;

use crate::node::Request;
use crate::scripts;
use crate::wake;

/// What a request does to its owner value on each node, so that each node runs a
/// release or undo of a value after every earlier request that may set it.
pub(crate) enum Order {
    /// Neither sets nor removes an owner value (extend, queue upkeep).
    Free,
    /// May set this value (every acquire).
    Sets(Arc<str>),
    /// Removes this value (release, undo): waits, per node, for its setters.
    Clears(Arc<str>),
}

/// A request to run on every node, shared by the per-node futures.
pub(crate) struct Op {
    body: Body,
    pub(super) order: Order,
}

enum Body {
    Script(scripts::Call),
    /// An extension that heals, and the plain one for a node in restart quarantine.
    Heal(scripts::Call, scripts::Call),
    /// A plain `SET NX` (the script that replaces it when it is sent again is built
    /// from it then: `scripts::acquire_one_for`).
    Set(redis::Cmd),
}

impl Op {
    pub(super) fn request(&self) -> Request<'_> {
        match &self.body {
            Body::Script(call) => Request::Script(call),
            Body::Set(cmd) => Request::Set(cmd),
            Body::Heal(heal, plain) => Request::Heal { heal, plain },
        }
    }

    /// A script request that may set `value`.
    pub(crate) fn setting(call: scripts::Call, value: &Arc<str>) -> Self {
        Self {
            body: Body::Script(call),
            order: Order::Sets(Arc::clone(value)),
        }
    }

    /// `SET key value NX PX ttl`: the uncontended single-key acquire, one command.
    pub(crate) fn set_nx(key: &str, value: &Arc<str>, ttl_ms: u64) -> Self {
        Self {
            body: Body::Set(scripts::set_nx(key, value, ttl_ms)),
            order: Order::Sets(Arc::clone(value)),
        }
    }

    /// Compare-and-delete of `keys` held with `value`; with `notify`, waiters on the
    /// released keys are woken.
    pub(crate) fn release(keys: &[String], value: &Arc<str>, notify: bool) -> Self {
        let wake = notify.then_some(wake::CHANNEL_PREFIX);
        Self::clearing(scripts::release(keys, value, wake), value)
    }

    /// The release of a lock held at least for a period: `keys` held with `value` expire
    /// in `left_ms` instead of now. Ordered like a release, and like a release it ends
    /// the owner's hold, so a late copy can only keep the released value until then.
    pub(crate) fn hold_release(keys: &[String], value: &Arc<str>, left_ms: u64) -> Self {
        Self::clearing(scripts::hold_release(keys, value, left_ms), value)
    }

    /// An extension that also re-sets `value` where a key is missing (`heal_on_extend`),
    /// and the plain [`extend`](Self::extend) for a node in restart quarantine. It may
    /// set the value, so releases wait for it on each node, as for an acquisition.
    pub(crate) fn extend_healing(keys: &[String], value: &Arc<str>, ttl_ms: u64) -> Self {
        Self {
            body: Body::Heal(
                scripts::extend_heal(keys, value, ttl_ms),
                scripts::extend(keys, value, ttl_ms),
            ),
            order: Order::Sets(Arc::clone(value)),
        }
    }

    /// Compare-and-pexpire of `keys` held with `value`. Unordered: sent again after a
    /// release, it finds the value gone and touches nothing.
    pub(crate) fn extend(keys: &[String], value: &str, ttl_ms: u64) -> Self {
        Self::free(scripts::extend(keys, value, ttl_ms))
    }
}

/// The requests of the reader-writer lock and the semaphore (`scripts/rwlock.rs`,
/// `scripts/semaphore.rs`).
impl Op {
    /// A script request that neither sets nor removes an owner value.
    pub(crate) fn free(call: scripts::Call) -> Self {
        Self {
            body: Body::Script(call),
            order: Order::Free,
        }
    }

    /// A script request that removes `value`: runs on each node after every earlier
    /// request that may set it.
    pub(crate) fn clearing(call: scripts::Call, value: &Arc<str>) -> Self {
        Self {
            body: Body::Script(call),
            order: Order::Clears(Arc::clone(value)),
        }
    }

    /// A reader leaves the reader set `readers` (also the undo of a read attempt); the last reader
    /// out removes the readers marker from the lock key. With `notify`, the waiting
    /// writer and the oldest exclusive waiter are told when the last reader is gone.
    pub(crate) fn read_release(readers: &str, value: &Arc<str>, notify: bool) -> Self {
        let call = scripts::read_release(readers, value, wake::prefix(notify));
        Self::clearing(call, value)
    }

    /// A writer releases `key`: the readers that waited for it get the next turn
    /// and, with `notify`, are told (and the oldest exclusive waiter, as
    /// [`Op::release`]).
    pub(crate) fn write_release(key: &str, value: &Arc<str>, notify: bool) -> Self {
        let call = scripts::write_release(key, value, wake::prefix(notify));
        Self::clearing(call, value)
    }

    /// A reader's expiry becomes `ttl_ms` from now, if it is still a reader and that is
    /// later than its expiry (the readers marker in the lock key follows). Unordered,
    /// like [`Op::extend`]: sent after a release, it finds the reader gone; landing after
    /// a newer, longer extension, it lowers nothing.
    pub(crate) fn read_extend(readers: &str, value: &str, ttl_ms: u64) -> Self {
        Self::free(scripts::read_extend(readers, value, ttl_ms))
    }
}
