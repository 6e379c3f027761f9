//! The promises of the reader-writer lock (C5) and the counting semaphore (C6), over the
//! same claims as C1: a hold claims `[success, min(valid_until, release)]`.
//!
//! A history does not record what kind of lock each acquisition took: the caller says
//! which holds were writes (for C5), and runs C6 on the resources that are semaphores.
//! Holds that came with no validity left claim nothing here (C1 reports them).

use std::collections::BTreeMap;

use super::{holds, violation, Check, Hold, Violation};
use crate::history::History;

/// The holds of `h` that claim some time, per resource, sorted by success.
fn claiming(h: &History) -> BTreeMap<String, Vec<Hold>> {
    let mut by_resource: BTreeMap<String, Vec<Hold>> = BTreeMap::new();
    for hold in holds(h) {
        if hold.end_ns > hold.success_ns {
            by_resource
                .entry(hold.resource.clone())
                .or_default()
                .push(hold);
        }
    }
    by_resource
}

fn overlap(a: &Hold, b: &Hold) -> bool {
    a.success_ns < b.end_ns && b.success_ns < a.end_ns
}

/// C5: per resource, no write claim overlaps any other claim, read or write;
/// `is_write` says which holds were writes. Read claims may overlap each other.
pub fn read_write(h: &History, is_write: impl Fn(&Hold) -> bool) -> Vec<Violation> {
    let mut out = Vec::new();
    for (resource, list) in claiming(h) {
        for (i, w) in list.iter().enumerate().filter(|(_, w)| is_write(w)) {
            for (j, other) in list.iter().enumerate() {
                // A pair of writes is reported once, from the earlier one.
                let seen = is_write(other) && j < i;
                if i == j || seen || !overlap(w, other) {
                    continue;
                }
                let what = if is_write(other) { "write" } else { "read" };
                out.push(violation(
                    Check::ReadWrite,
                    format!(
                        "`{resource}`: client {} op {} writes in [{}, {}] while client {} op {} \
                         holds a {what} claim [{}, {}]",
                        w.client,
                        w.op,
                        w.success_ns,
                        w.end_ns,
                        other.client,
                        other.op,
                        other.success_ns,
                        other.end_ns
                    ),
                ));
            }
        }
    }
    out
}

/// C6: on each of `resources` (semaphores of `permits` permits), never more than
/// `permits` claims at one instant. One violation per stretch over the bound, at its
/// peak.
pub fn permits(h: &History, resources: &[&str], permits: usize) -> Vec<Violation> {
    let mut out = Vec::new();
    for (resource, list) in claiming(h) {
        if !resources.contains(&resource.as_str()) {
            continue;
        }
        // Ends sort before starts at the same instant: claims that touch do not overlap.
        let mut edges: Vec<(u64, bool, usize)> = Vec::new();
        for (i, hold) in list.iter().enumerate() {
            edges.push((hold.success_ns, true, i));
            edges.push((hold.end_ns, false, i));
        }
        edges.sort_by_key(|(t, start, _)| (*t, *start));
        let mut live: Vec<usize> = Vec::new();
        let mut peak: Option<(u64, Vec<usize>)> = None;
        for (t, start, i) in edges {
            if start {
                live.push(i);
                if live.len() > permits && peak.as_ref().is_none_or(|(_, p)| live.len() > p.len()) {
                    peak = Some((t, live.clone()));
                }
            } else {
                live.retain(|j| *j != i);
                if live.len() <= permits {
                    if let Some((at, holders)) = peak.take() {
                        out.push(over_bound(&resource, permits, at, &holders, &list));
                    }
                }
            }
        }
        if let Some((at, holders)) = peak {
            out.push(over_bound(&resource, permits, at, &holders, &list));
        }
    }
    out
}

fn over_bound(
    resource: &str,
    permits: usize,
    at: u64,
    holders: &[usize],
    list: &[Hold],
) -> Violation {
    let who: Vec<String> = holders
        .iter()
        .map(|i| format!("client {} op {}", list[*i].client, list[*i].op))
        .collect();
    violation(
        Check::Permits,
        format!(
            "`{resource}`: {} claims at {at} on {permits} permits: {}",
            holders.len(),
            who.join(", ")
        ),
    )
}

#[cfg(test)]
mod tests;
