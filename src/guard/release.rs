//! Releasing a [`LockGuard`]: the per-node [`ReleaseReport`], and whether the lock was
//! held until it was released.

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::Value;
use tracing::Instrument;

use super::{HandOver, Held, LockGuard};
use crate::error::{Error, LostReason};
use crate::metrics;
use crate::quorum;
use crate::quorum::Vote;
use crate::round::{self, fan_out, Collecting, Count};

/// The least and most a releaser that woke a waiter holds back its own next
/// acquisition of the key: about one round trip on loopback at least, never long.
const MIN_HEAD_START: Duration = Duration::from_micros(200);
const MAX_HEAD_START: Duration = Duration::from_millis(20);

/// How a release went, node by node, and whether the lock was still held when it was
/// released ([`held_until_released`](Self::held_until_released)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReleaseReport {
    /// Nodes on which this owner's key was deleted.
    pub released: usize,
    /// Nodes that did not hold it (expired, never set, or someone else's now).
    pub not_held: usize,
    /// Nodes that failed to answer in time or answered with an error.
    pub failed: usize,
    /// Nodes still to answer when the release returned (it returns once a quorum
    /// answered; their requests finish in the background).
    pub pending: usize,
    /// Waiting clients told of the release, summed over the nodes that answered.
    pub woken: usize,
    /// The guard's validity had already ended when the release was sent: the lock was
    /// not guaranteed for some time before it was released.
    pub validity_ended: bool,
    /// Nothing was sent: the lock went, as it was, to the next task of this manager
    /// waiting for it (see [`RedlockBuilder::local_handover`](crate::RedlockBuilder::local_handover)).
    pub handed_over: bool,
}

impl ReleaseReport {
    /// Why the lock was no longer held when it was released, if it was not: its
    /// validity had ended ([`LostReason::ValidityEnded`]), or so many nodes reported the key
    /// gone or someone else's that no quorum can have held it
    /// ([`LostReason::NotHeld`]). `None` means held until released, as far as the
    /// nodes that answered can tell.
    ///
    /// ```no_run
    /// # async fn run(redlock: tokio_redlock::Redlock) -> Result<(), tokio_redlock::Error> {
    /// let guard = redlock.acquire("job:1", std::time::Duration::from_secs(1)).await?;
    /// let report = guard.release_with_report().await?;
    /// if let Some(reason) = report.lost_reason() {
    ///     eprintln!("the lock was lost before the release: {reason}");
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn lost_reason(&self) -> Option<LostReason> {
        let nodes = self.released + self.not_held + self.failed + self.pending;
        let needed = quorum::quorum(nodes);
        if self.validity_ended {
            Some(LostReason::ValidityEnded)
        } else if self.handed_over {
            None
        } else if quorum::value_lost(nodes, self.not_held) {
            Some(LostReason::NotHeld {
                held: self.released,
                needed,
            })
        } else {
            None
        }
    }

    /// Whether the lock was held until it was released: its validity had not ended
    /// when the release was sent, and no quorum of nodes reported the key gone or
    /// someone else's. What [`LockGuard::release`] turns into `Ok(())`.
    ///
    /// ```no_run
    /// # async fn run(redlock: tokio_redlock::Redlock) -> Result<(), tokio_redlock::Error> {
    /// let guard = redlock.acquire("job:1", std::time::Duration::from_secs(1)).await?;
    /// assert!(guard.release_with_report().await?.held_until_released());
    /// # Ok(())
    /// # }
    /// ```
    pub fn held_until_released(&self) -> bool {
        self.lost_reason().is_none()
    }
}

/// `(keys deleted, waiters woken)` from a release reply, or `None` for a reply no
/// Redis running our script would give.
fn release_reply(value: &Value) -> Option<(i64, usize)> {
    match value {
        Value::Array(items) => match items.as_slice() {
            [Value::Int(deleted), Value::Int(woke)] => {
                Some((*deleted, usize::try_from(*woke).unwrap_or(0)))
            }
            _ => None,
        },
        _ => None,
    }
}

impl LockGuard {
    /// Releases the lock on every node that holds it with this owner's value.
    ///
    /// `Ok(())` means the lock was held until it was released: its validity had not
    /// ended when the release was sent, and no quorum of nodes reported the key gone
    /// or someone else's. Work done under the guard was protected throughout.
    ///
    /// It returns once a quorum of nodes answered, like every operation of the crate;
    /// the slowest nodes get the release a moment later, in the background. So an
    /// [`inspect`](crate::Redlock::inspect) right after may still show this owner on
    /// one of them (seen in 11 of 300 tries on loopback). A test that needs every node
    /// clean polls `inspect` until [`LockInfo::holders`](crate::LockInfo::holders) is
    /// empty, with a bound (twice the node timeout is enough on a healthy cluster).
    ///
    /// ```no_run
    /// # async fn run(redlock: tokio_redlock::Redlock) -> Result<(), tokio_redlock::Error> {
    /// let guard = redlock.acquire("job:1", std::time::Duration::from_secs(1)).await?;
    /// guard.release().await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::LockLost`] when the validity had already ended
    /// ([`LostReason::ValidityEnded`]; another owner may have held the lock meanwhile), or so
    /// many nodes reported the key gone or someone else's that no quorum can have held
    /// it ([`LostReason::NotHeld`]): whatever the guard protected since then was not
    /// protected. Whatever this owner still held is released all the same.
    /// [`Error::NoQuorum`] when fewer than a quorum of nodes answered (and the validity
    /// had not ended): the lock may stay held on the others until its TTL.
    ///
    /// # Cancel safety
    /// Dropping the future never stops the release. Dropped before its first poll, it
    /// releases in the background as dropping the guard does; dropped later, the
    /// requests to nodes that have not answered yet (still connecting, or waiting for an
    /// earlier request of this lock to settle on that node) go on in a background task
    /// on the current runtime.
    pub async fn release(self) -> Result<(), Error> {
        // The names are shared, not copied: the copy is only made for an error.
        let names = Arc::clone(&self.resources);
        // Sampled before the release's own check, so never "valid" where it says ended.
        let validity_ended = !self.is_valid();
        let lost = |reason| Error::LockLost {
            resource: first(&names).to_owned(),
            reason,
        };
        match self.release_with_report().await {
            Ok(report) => report
                .lost_reason()
                .map_or(Ok(()), |reason| Err(lost(reason))),
            // Too few answers to release, but the loss is what the caller must hear of.
            Err(_) if validity_ended => Err(lost(LostReason::ValidityEnded)),
            Err(e) => Err(e),
        }
    }

    /// Like [`release`](Self::release), and says how each node answered.
    ///
    /// A lock that was lost before the release still gives `Ok(report)`, with the
    /// counts: [`ReleaseReport::held_until_released`] is then false and
    /// [`ReleaseReport::lost_reason`] says why (where [`release`](Self::release) returns
    /// [`Error::LockLost`]).
    ///
    /// ```no_run
    /// # async fn run(redlock: tokio_redlock::Redlock) -> Result<(), tokio_redlock::Error> {
    /// let guard = redlock.acquire("job:1", std::time::Duration::from_secs(1)).await?;
    /// let report = guard.release_with_report().await?;
    /// assert!(report.released + report.not_held >= 1);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::NoQuorum`] when fewer than a quorum of nodes answered: the lock may stay
    /// held on the others until its TTL. A lost lock is not an error here (see above).
    ///
    /// # Cancel safety
    /// As for [`release`](Self::release).
    pub async fn release_with_report(mut self) -> Result<ReleaseReport, Error> {
        let names = Arc::clone(&self.resources);
        let resource = first(&names);
        let validity_ended = !self.is_valid();
        // Another task of this manager waits for the lock: it takes it as it is.
        let turn = match self.pass_locally() {
            HandOver::Kept(turn) => turn,
            HandOver::Handed => {
                tracing::debug!(resource = %resource, "handed over within the process");
                return Ok(ReleaseReport {
                    handed_over: true,
                    ..ReleaseReport::default()
                });
            }
        };
        // The next local waiter, if any, competes once the release is done (or dropped).
        let _turn = turn;
        let Some(held) = self.held.take() else {
            return Ok(ReleaseReport {
                validity_ended,
                ..ReleaseReport::default()
            });
        };
        // If this future is dropped before its first poll, `held` still releases.
        let held = ReleaseOnDrop(Some(held));
        let span = tracing::debug_span!("release", resource = %resource);
        async move {
            let mut held = held;
            let Some(held) = held.0.take() else {
                return Ok(ReleaseReport {
                    validity_ended,
                    ..ReleaseReport::default()
                });
            };
            let inner = &held.inner;
            let started = Instant::now();
            let op = held.release_op();
            // Cancelled once sent, the rest still goes out (see `# Cancel safety`).
            let mut replies = Collecting::new(fan_out(&inner.nodes, op), "release")
                .until(round::clear_patience(&inner.nodes));
            // Once a quorum answered (released or not held), nobody can be kept from
            // the lock by this owner; the rest finish in the background. Every answer
            // counts, also from a node in restart quarantine: a release is no vote.
            let votes = round::collect(
                &mut replies,
                &inner.nodes,
                Count::Answers,
                |value| {
                    let (deleted, woke) = release_reply(value)
                        .ok_or_else(|| format!("release answered {value:?}"))?;
                    Ok((if deleted > 0 { Vote::Yes } else { Vote::No }, woke))
                },
                |tally| tally.yes + tally.no >= tally.quorum,
            )
            .await;
            let tally = votes.tally;
            let report = ReleaseReport {
                released: tally.yes,
                not_held: tally.no,
                failed: tally.failed,
                pending: tally.pending(),
                woken: votes.answers.iter().flatten().sum(),
                validity_ended,
                handed_over: false,
            };
            drop(replies);
            if report.woken > 0 {
                // One release round trip: about what the woken waiter needs to get its
                // SET to the nodes first. Bounded, so a slow release costs little.
                let head_start = started.elapsed().clamp(MIN_HEAD_START, MAX_HEAD_START);
                inner.wakeups.hints.yield_to(&held.keys[0], head_start);
            }
            tracing::debug!(?report, "released");
            let answered = report.released + report.not_held;
            metrics::released(answered >= tally.quorum);
            if answered >= tally.quorum {
                Ok(report)
            } else {
                Err(round::no_quorum(
                    resource,
                    1,
                    answered,
                    &tally,
                    votes.causes,
                ))
            }
        }
        .instrument(span)
        .await
    }
}

/// The first of a guard's resources (the one errors and logs name).
fn first(names: &[String]) -> &str {
    names.first().map_or("", String::as_str)
}

/// Releases in the background if dropped while still holding.
struct ReleaseOnDrop(Option<Held>);

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        if let Some(held) = self.0.take() {
            held.release_in_background("dropped release");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(released: usize, not_held: usize, failed: usize, pending: usize) -> ReleaseReport {
        ReleaseReport {
            released,
            not_held,
            failed,
            pending,
            ..ReleaseReport::default()
        }
    }

    #[test]
    fn lost_exactly_when_too_few_nodes_can_still_hold_it() {
        // Oracle: even if every node that failed or did not answer held the value,
        // fewer than a quorum did.
        for n in 1..=7 {
            let needed = quorum::quorum(n);
            for released in 0..=n {
                for not_held in 0..=n - released {
                    for failed in 0..=n - released - not_held {
                        let pending = n - released - not_held - failed;
                        let r = report(released, not_held, failed, pending);
                        let could_hold = n - not_held;
                        assert_eq!(r.held_until_released(), could_hold >= needed, "{r:?}");
                        if could_hold < needed {
                            assert_eq!(
                                r.lost_reason(),
                                Some(LostReason::NotHeld {
                                    held: released,
                                    needed
                                })
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn an_ended_validity_is_a_loss_whatever_the_nodes_said() {
        let r = ReleaseReport {
            validity_ended: true,
            ..report(3, 0, 0, 0)
        };
        assert_eq!(r.lost_reason(), Some(LostReason::ValidityEnded));
        assert!(!r.held_until_released());
        assert!(report(2, 1, 0, 0).held_until_released());
    }
}
