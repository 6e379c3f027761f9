//! One client of a run: its managers, what it holds, and each drawn operation done
//! through the public API with the checks that belong to the call (attempts, bounds,
//! validity after a lost extension).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_redlock::{Error, KeptGuard, LockGuard, Redlock};
use tokio_redlock_harness::history::{instant_ns, EventKind, Recorder};

use super::oracle::{Belief, Kind, Oracle};
use super::rw_and_permits;
use super::schedule::{
    ms, ExtendTtl, How, MgrSpec, Op, Opts, Step, RESOURCES, TAIL_MIN_NODE_TIMEOUT_MS,
};
use super::traced::Seen;

/// Allowance on top of a call's documented bound, for a loaded 2-core machine.
const CALL_SLACK: Duration = Duration::from_millis(1_500);
/// `STALE_REROUNDS` in the crate: immediate re-rounds of a fenced attempt.
const FENCED_ROUNDS: u32 = 4;
/// Slack on one pause and one round (a loaded machine); a wait that hangs on a silent
/// node for the 2 s a subscription may take stands out above it.
const GAP_SLACK: Duration = Duration::from_millis(1_000);

/// How a holding released in the fault-free tail ends; the ghost check knows it.
pub const TAIL_RELEASED: &str = "released in the tail";

fn round_bound(s: &MgrSpec) -> Duration {
    ms(s.node_timeout_ms)
        .saturating_mul(3)
        .saturating_add(Duration::from_millis(50))
}

/// The documented bound of an acquisition with `retries`: each attempt costs at most its
/// requests and its undo (node timeout each) and the wake-up bookkeeping, each pause the
/// delay plus the jitter. `None` when that is beyond any test's patience.
fn acquire_bound(s: &MgrSpec, retries: u32) -> Option<Duration> {
    let rounds = (retries + 1) * if s.fencing { FENCED_ROUNDS } else { 1 };
    let pauses = ms(s.retry_delay_ms)
        .saturating_add(ms(s.jitter_ms))
        .saturating_mul(retries);
    let b = round_bound(s)
        .saturating_mul(rounds)
        .saturating_add(pauses)
        .saturating_add(Duration::from_millis(20))
        .saturating_add(CALL_SLACK);
    (b < Duration::from_secs(60)).then_some(b)
}

// A client holds at most one of these at a time; boxing the guard would only add an
// allocation per acquisition to the explorer's loop.
#[allow(clippy::large_enum_variant)]
pub enum Holding {
    Guard {
        guard: LockGuard,
        id: u64,
        mgr: usize,
        was_invalid: bool,
    },
    Kept {
        kept: KeptGuard,
        id: u64,
        mgr: usize,
    },
}

pub struct Client {
    pub id: u32,
    pub mgrs: Arc<[Option<Redlock>; 2]>,
    pub specs: [MgrSpec; 2],
    pub oracle: Arc<Oracle>,
    pub rec: Recorder,
    pub acquisitions: Arc<AtomicU64>,
    pub prefix: String,
    pub op: u64,
    pub holding: Option<Holding>,
    /// In the fault-free tail: releases then must remove the key everywhere.
    pub tail: bool,
}

/// Sends `value` to a plain thread (no tokio runtime there) and gets `f(value)` back.
async fn on_plain_thread<T: Send + 'static, U: Send + 'static>(
    value: T,
    f: impl FnOnce(T) -> U + Send + 'static,
) -> Option<U> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f(value));
    });
    rx.await.ok()
}

async fn within<F: std::future::Future>(budget: Option<u64>, f: F) -> Option<F::Output> {
    match budget {
        Some(b) => tokio::time::timeout(Duration::from_millis(b), f).await.ok(),
        None => Some(f.await),
    }
}

impl Client {
    fn res(&self, r: u8) -> String {
        format!("{}r{}", self.prefix, r % RESOURCES)
    }

    /// How a release ends a holding: in the tail, with a lock still held and a manager
    /// whose node timeout leaves room to send the release, it must remove every key.
    fn release_label(&self, mgr: usize, held: bool) -> &'static str {
        let sane = self.specs[mgr].node_timeout_ms >= TAIL_MIN_NODE_TIMEOUT_MS;
        if self.tail && held && sane {
            TAIL_RELEASED
        } else {
            "released"
        }
    }

    fn flag(&self, kind: Kind, what: String) {
        self.oracle.flag(kind, Some(self.id), what);
    }

    fn check_bound(&self, what: &str, took: Duration, bound: Option<Duration>) {
        if let Some(b) = bound {
            if took > b {
                self.flag(
                    Kind::CallBound,
                    format!("op {}: {what} took {took:?}, bound {b:?}", self.op),
                );
            }
        }
    }

    /// What the crate's traces showed of a call (`traced.rs`): no more attempts than
    /// `retry_count + 1`, and no gap between attempts longer than a pause and a round.
    fn check_traced(&self, what: &str, seen: Option<Seen>, spec: &MgrSpec, retries: u32) {
        let Some(seen) = seen else { return };
        self.check_attempts(
            &format!("the traces of {what}"),
            Some(seen.attempts),
            retries,
        );
        let rounds = if spec.fencing { FENCED_ROUNDS } else { 1 };
        let bound = ms(spec.retry_delay_ms)
            .saturating_add(ms(spec.jitter_ms))
            .saturating_add(round_bound(spec).saturating_mul(rounds))
            .saturating_add(GAP_SLACK);
        if seen.longest_gap > bound {
            self.flag(
                Kind::CallBound,
                format!(
                    "op {}: {what}: {:?} between two attempts, bound {bound:?} (a pause and a round)",
                    self.op, seen.longest_gap
                ),
            );
        }
    }

    fn check_attempts(&self, what: &str, made: Option<u32>, retries: u32) {
        if let Some(a) = made {
            // 0 is a lock handed over in-process by another task of the manager.
            if a > retries + 1 {
                self.flag(
                    Kind::Attempts,
                    format!(
                        "op {}: {what} reports {a} attempt(s) with retry_count {retries}",
                        self.op
                    ),
                );
            }
        }
    }

    pub async fn run(&mut self, steps: &[Step], deadline: Option<Instant>) {
        for step in steps {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            if step.think_ms > 0 {
                tokio::time::sleep(Duration::from_millis(step.think_ms)).await;
            }
            self.op += 1;
            let before = self.holding.as_ref().map(holding_id);
            let result = self.step(&step.op).await;
            if let Some(id) = before {
                self.oracle
                    .note(id, format!("op {} {}{result}", self.op, step.op));
            }
            if let Some(Holding::Guard {
                guard,
                was_invalid,
                id,
                ..
            }) = &mut self.holding
            {
                if *was_invalid && guard.is_valid() {
                    let what =
                        format!("op {}: guard {id} is valid again after it was not", self.op);
                    self.oracle.flag(Kind::Revived, Some(self.id), what);
                }
                *was_invalid |= !guard.is_valid();
            }
        }
    }

    /// Does one operation; says how it went when that matters for a holding's story.
    async fn step(&mut self, op: &Op) -> String {
        match op.clone() {
            Op::Acquire {
                mgr,
                res,
                how,
                ttl_ms,
                budget_ms,
            } => self.acquire(mgr, res, how, ttl_ms, budget_ms).await,
            Op::Extend { ttl, budget_ms } => return self.extend(ttl, budget_ms).await,
            Op::Release { budget_ms } => match self.holding.take() {
                Some(Holding::Guard { guard, id, mgr, .. }) => {
                    self.oracle.close(id, self.release_label(mgr, true));
                    let started = Instant::now();
                    let done = within(budget_ms, guard.release()).await;
                    if done.is_some() {
                        let b = round_bound(&self.specs[mgr]).saturating_add(CALL_SLACK);
                        self.check_bound("release", started.elapsed(), Some(b));
                    }
                }
                Some(Holding::Kept { kept, id, mgr }) => {
                    let held = kept.lease().is_held();
                    self.oracle.close(id, self.release_label(mgr, held));
                    let _ = within(budget_ms, kept.release()).await;
                }
                None => {}
            },
            Op::Drop => {
                if let Some(h) = self.holding.take() {
                    self.oracle.close(holding_id(&h), "dropped");
                    drop(h);
                }
            }
            Op::DropOnThread => {
                if let Some(h) = self.holding.take() {
                    self.oracle.close(holding_id(&h), "dropped on a thread");
                    on_plain_thread(h, drop).await;
                }
            }
            Op::KeepAlive { opts, on_thread } => {
                // Only a guard is kept alive; anything else stays held as it is (taking
                // it out would drop, and so release, a kept lock behind the oracle's back).
                if !matches!(self.holding, Some(Holding::Guard { .. })) {
                    return String::new();
                }
                let Some(Holding::Guard { guard, id, mgr, .. }) = self.holding.take() else {
                    return String::new();
                };
                self.oracle.set(id, Belief::InFlight);
                let options = opts.options();
                // Also the name kept for older callers, which must keep its promise too.
                #[allow(deprecated)]
                let kept = if on_thread {
                    on_plain_thread(guard, move |g| g.keep_alive_with(options)).await
                } else {
                    Some(guard.keep_alive_with(options))
                };
                match kept {
                    Some(kept) => {
                        self.oracle.set(id, Belief::Lease(kept.lease().clone()));
                        // When the lease reports the lock lost, its claim ends (C1).
                        let (lease, oracle) = (kept.lease().clone(), self.oracle.clone());
                        tokio::spawn(async move {
                            lease.lost().await;
                            if let Some(reason) = lease.lost_reason() {
                                oracle.lease_lost(id, &format!("{reason:?}"));
                            }
                        });
                        self.holding = Some(Holding::Kept { kept, id, mgr });
                    }
                    None => self.oracle.close(id, "lost in keep_alive on a thread"),
                }
            }
            Op::Hold { ms } => tokio::time::sleep(Duration::from_millis(ms)).await,
            Op::WithLock {
                mgr,
                res,
                ttl_ms,
                opts,
                work_ms,
                budget_ms,
            } => {
                if self.holding.is_some() {
                    return String::new();
                }
                self.with_lock(mgr, res, ttl_ms, opts, work_ms, budget_ms)
                    .await;
            }
        }
        String::new()
    }

    async fn acquire(
        &mut self,
        mgr: usize,
        res: u8,
        how: How,
        ttl_ms: u64,
        budget_ms: Option<u64>,
    ) {
        if self.holding.is_some() {
            return;
        }
        let mgrs = self.mgrs.clone();
        let Some(redlock) = &mgrs[mgr] else { return };
        let spec = &self.specs[mgr];
        let names = match how {
            How::Many => vec![self.res(res), self.res(res + 1)],
            How::Kind(k) => vec![rw_and_permits::resource(&self.prefix, res, k)],
            _ => vec![self.res(res)],
        };
        let ttl = ms(ttl_ms);
        let label = names.join("+");
        let retries = match how {
            How::TryAcquire | How::Kind(rw_and_permits::Ask { once: true, .. }) => 0,
            _ => spec.retry_count,
        };
        if let How::Kind(k) = how {
            rw_and_permits::note(&label, self.id, self.op, k);
        }
        self.rec.record(self.id, self.op, &label, EventKind::Start);
        let started = Instant::now();
        let call = super::traced::counted(|| async {
            match how {
                How::Acquire => redlock.acquire(&names[0], ttl).await,
                How::TryAcquire => redlock.try_acquire(&names[0], ttl).await,
                How::Many => redlock.acquire_many(&names, ttl).await,
                How::Kind(k) => rw_and_permits::acquire(redlock, &names[0], ttl, k).await,
            }
        });
        let Some((result, traced)) = within(budget_ms, call).await else {
            self.rec.record(
                self.id,
                self.op,
                &label,
                EventKind::Failed {
                    reason: "cancelled".into(),
                },
            );
            return;
        };
        let took = started.elapsed();
        self.check_bound(
            &format!("{how:?} of {label}"),
            took,
            acquire_bound(spec, retries),
        );
        self.check_traced(&format!("{how:?} of {label}"), traced, spec, retries);
        match result {
            Ok(guard) => {
                self.check_attempts("the guard", Some(guard.attempts()), retries);
                self.acquisitions.fetch_add(1, Ordering::Relaxed);
                self.rec.record(
                    self.id,
                    self.op,
                    &label,
                    EventKind::Acquired {
                        valid_until_ns: instant_ns(guard.valid_until()),
                        token: guard.fencing_token(),
                    },
                );
                let keys = match how {
                    How::Kind(_) => rw_and_permits::oracle_keys(redlock, &names[0], &guard),
                    _ => names.iter().map(|n| redlock.key_of(n)).collect(),
                };
                let id = self.oracle.open(
                    self.id,
                    self.op,
                    label,
                    spec.fencing,
                    keys,
                    Belief::Guard(guard.valid_until()),
                );
                let story = format!(
                    "op {} m{mgr}.{how:?}(ttl {ttl:?}) with {spec} -> valid for {:?} after {} attempt(s) in {took:?}",
                    self.op,
                    guard.remaining_validity(),
                    guard.attempts()
                );
                self.oracle.note(id, story);
                let was_invalid = !guard.is_valid();
                self.holding = Some(Holding::Guard {
                    guard,
                    id,
                    mgr,
                    was_invalid,
                });
            }
            Err(e) => {
                self.check_attempts(&format!("error `{e}`"), e.attempts(), retries);
                let reason = e.to_string().replace('\n', " ");
                self.rec
                    .record(self.id, self.op, &label, EventKind::Failed { reason });
            }
        }
    }

    async fn extend(&mut self, ttl: ExtendTtl, budget_ms: Option<u64>) -> String {
        let op = self.op;
        let Some(Holding::Guard {
            guard,
            id,
            mgr,
            was_invalid,
        }) = &mut self.holding
        else {
            return String::new();
        };
        let left_before = guard.remaining_validity();
        let until_before = guard.valid_until();
        let ttl = match ttl {
            ExtendTtl::OfLeft(x) => guard.remaining_validity().mul_f64(x),
            ExtendTtl::Ms(v) => ms(v),
        };
        *was_invalid |= !guard.is_valid();
        self.oracle.set(*id, Belief::InFlight);
        let started = Instant::now();
        let result = within(budget_ms, guard.extend(ttl)).await;
        let took = started.elapsed();
        self.oracle.set(*id, Belief::Guard(guard.valid_until()));
        let label = guard.resources().join("+");
        // Recorded under the acquisition's op, the holding's key in the history (the
        // checkers C5/C6 read claims from it). An extension that shortened the validity
        // (a lost lock, a shorter ttl) ends the claim now: `Extended` only lengthens one.
        let held_op = self.oracle.op_of(*id).unwrap_or(op);
        let valid_until_ns = instant_ns(guard.valid_until());
        let kind = EventKind::Extended { valid_until_ns };
        self.rec.record(self.id, held_op, &label, kind);
        if guard.valid_until() < until_before {
            self.rec
                .record(self.id, held_op, &label, EventKind::Released);
        }
        if let Some(result) = &result {
            let b = round_bound(&self.specs[*mgr]).saturating_add(CALL_SLACK);
            if took > b {
                let what = format!("op {op}: extend({ttl:?}) took {took:?}, bound {b:?}");
                self.oracle.flag(Kind::CallBound, Some(self.id), what);
            }
            if let Err(e @ Error::LockLost { .. }) = result {
                if guard.is_valid() {
                    let what =
                        format!("op {op}: extend({ttl:?}) said `{e}` and the guard is still valid");
                    self.oracle.flag(Kind::Revived, Some(self.id), what);
                }
            }
        }
        let outcome = match &result {
            None => "cancelled".to_owned(),
            Some(Ok(())) => "ok".to_owned(),
            Some(Err(e)) => format!("`{e}`"),
        };
        format!(
            " = extend({ttl:?}) with {left_before:?} left -> {outcome} in {took:?}, now {:?} left",
            guard.remaining_validity()
        )
    }

    async fn with_lock(
        &mut self,
        mgr: usize,
        res: u8,
        ttl_ms: u64,
        opts: Opts,
        work_ms: u64,
        budget_ms: Option<u64>,
    ) {
        let mgrs = self.mgrs.clone();
        let Some(redlock) = &mgrs[mgr] else { return };
        let spec = &self.specs[mgr];
        let name = self.res(res);
        let key = redlock.key_of(&name);
        let (client, op, oracle, rec) = (self.id, self.op, self.oracle.clone(), self.rec.clone());
        let acquisitions = self.acquisitions.clone();
        let fenced = spec.fencing;
        rec.record(client, op, &name, EventKind::Start);
        let started = Instant::now();
        let label = name.clone();
        let ttl = ms(ttl_ms);
        let call = super::traced::counted(|| {
            redlock.lock(&name).ttl(ms(ttl_ms)).lease_options(opts.options()).with(move |lease| async move {
            acquisitions.fetch_add(1, Ordering::Relaxed);
            rec.record(client, op, &label, EventKind::Acquired { valid_until_ns: instant_ns(lease.valid_until()), token: lease.fencing_token() });
            let id = oracle.open(client, op, label, fenced, vec![key], Belief::Lease(lease.clone()));
            oracle.note(id, format!("op {op} with_lock(ttl {ttl:?}, {opts}, work {work_ms}ms) -> valid for {:?}", lease.remaining_validity()));
            let _close = CloseOnDrop { oracle, id };
            tokio::time::sleep(Duration::from_millis(work_ms)).await;
        })
        });
        let result = within(budget_ms, call).await;
        if let Some((result, traced)) = result {
            self.check_traced("with_lock", traced, spec, spec.retry_count);
            let b = acquire_bound(spec, spec.retry_count)
                .map(|b| b + Duration::from_millis(work_ms) + round_bound(spec));
            self.check_bound("with_lock", started.elapsed(), b);
            if let Err(e) = result {
                self.check_attempts(
                    &format!("with_lock error `{e}`"),
                    e.attempts(),
                    spec.retry_count,
                );
            }
        }
    }
}

struct CloseOnDrop {
    oracle: Arc<Oracle>,
    id: u64,
}

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.oracle.close(self.id, "with_lock ended");
    }
}

pub fn holding_id(h: &Holding) -> u64 {
    match h {
        Holding::Guard { id, .. } | Holding::Kept { id, .. } => *id,
    }
}
