//! C1's reading of the explorer's history, which the processes made necessary: the
//! sampler cannot see a process's guard, so between a process and the in-process clients
//! only the history can tell two holders apart.

use std::collections::BTreeMap;

use tokio_redlock_harness::history::Event;

use super::*;

/// The explorer's history as C1 reads it. The checker's own reading suits workloads that
/// only lengthen a lock; the explorer also shortens them and records an extension under
/// the extending call's op, so here:
/// - a client holds one thing at a time, so an extension belongs to that client's open
///   hold, whatever its op (a release names the acquisition's op: a kept lease's loss,
///   recorded by a task of its own, may come after its client moved on);
/// - after an extension made while the claim lasted, the claim ends where the holder
///   then believes (shorter or longer), not at the longest belief so far;
/// - an `acquire_many` label `a+b` claims `a` and `b`;
/// - a success with no validity left claims nothing (the oracle does not judge holdings
///   with less than the slack left either).
///
/// Each claim comes out as a `start` and an `ok` up to the claim's end.
pub fn claims_input(h: &History) -> History {
    struct Open {
        start_ns: u64,
        /// The success, as recorded; its copies carry the claim.
        ok: Event,
        end_ns: u64,
    }
    let mut starts: HashMap<(u32, u64), u64> = HashMap::new();
    let mut open: BTreeMap<u32, Open> = BTreeMap::new();
    let mut done = Vec::new();
    for e in &h.events {
        match &e.kind {
            EventKind::Start => {
                starts.insert((e.client, e.op), e.t_ns);
            }
            EventKind::Acquired { valid_until_ns, .. } => {
                let hold = Open {
                    start_ns: starts.get(&(e.client, e.op)).copied().unwrap_or(e.t_ns),
                    ok: e.clone(),
                    end_ns: *valid_until_ns,
                };
                done.extend(open.insert(e.client, hold));
            }
            EventKind::Extended { valid_until_ns } => {
                if let Some(hold) = open.get_mut(&e.client) {
                    if e.t_ns <= hold.end_ns {
                        hold.end_ns = *valid_until_ns;
                    }
                }
            }
            // Under the acquisition's op: a lease's loss may be recorded late.
            EventKind::Released if open.get(&e.client).is_some_and(|h| h.ok.op == e.op) => {
                if let Some(mut hold) = open.remove(&e.client) {
                    hold.end_ns = hold.end_ns.min(e.t_ns);
                    done.push(hold);
                }
            }
            _ => {}
        }
    }
    done.extend(open.into_values());
    let mut out = History::default();
    for hold in done {
        let EventKind::Acquired { token, .. } = hold.ok.kind else {
            continue;
        };
        if hold.end_ns <= hold.ok.t_ns {
            continue;
        }
        // Read and permit holds share by design: C5/C6 judge them (`kinds.rs`).
        let exclusive = hold
            .ok
            .resource
            .split('+')
            .filter(|r| !super::rw_and_permits::is_kind_resource(r));
        for resource in exclusive {
            let mut start = hold.ok.clone();
            start.t_ns = hold.start_ns;
            start.resource = resource.to_owned();
            start.kind = EventKind::Start;
            let mut ok = start.clone();
            ok.t_ns = hold.ok.t_ns;
            ok.kind = EventKind::Acquired {
                valid_until_ns: hold.end_ns,
                token,
            };
            out.events.extend([start, ok]);
        }
    }
    out.sort();
    out
}
