//! The sampler: rounds that read every node over its own direct connections, judge
//! each live holding's belief against what a quorum stores, bind values to holdings, and
//! watch the values of released holdings for coming back.

use tokio_util::sync::CancellationToken;

use super::super::direct::{Direct, NodeRead};
use super::*;

impl Oracle {
    /// Samples until `stop` is cancelled.
    pub async fn sample(self: Arc<Self>, urls: Vec<String>, stop: CancellationToken) {
        let mut nodes: Vec<Direct> = urls.into_iter().map(Direct::new).collect();
        while !stop.is_cancelled() {
            self.round(&mut nodes).await;
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(SAMPLE_EVERY) => {}
            }
        }
    }

    async fn round(&self, nodes: &mut [Direct]) {
        struct Look {
            id: u64,
            gen: u64,
            client: u32,
            op: u64,
            keys: Vec<String>,
            bound: Vec<Option<String>>,
            until: Instant,
        }
        let mut looks = Vec::new();
        let mut watches: Vec<Watch> = Vec::new();
        {
            let mut entries = lock(&self.entries);
            for (id, e) in entries.iter_mut() {
                if let Some(closed) = e.closed_at {
                    if closed.elapsed() < WATCH && e.bound.iter().any(Option::is_some) {
                        watches.push((*id, e.keys.clone(), e.bound.clone()));
                    }
                }
                let until = match &e.belief {
                    Belief::Guard(v) => *v,
                    Belief::Lease(l) => {
                        if !l.is_held() {
                            if !e.seen_not_held {
                                // The claim (for C5/C6) ends when the lease says lost.
                                self.rec
                                    .record(e.client, e.op, &e.bar.label, EventKind::Released);
                            }
                            e.seen_not_held = true;
                            continue;
                        }
                        if e.seen_not_held {
                            e.seen_not_held = false;
                            let what = format!(
                                "op {}: {} lease reports held again after it reported not held",
                                e.op, e.bar.label
                            );
                            lock(&self.violations).push(Violation {
                                t_ns: now_ns(),
                                kind: Kind::Revived,
                                client: Some(e.client),
                                what,
                            });
                        }
                        let v = l.valid_until();
                        let ns = instant_ns(v);
                        if e.bar
                            .marks
                            .last()
                            .is_none_or(|m| m.abs_diff(ns) > 1_000_000)
                        {
                            e.bar.marks.push(ns);
                            // What the lease believes now lengthens the claim (C5/C6).
                            let kind = EventKind::Extended { valid_until_ns: ns };
                            self.rec.record(e.client, e.op, &e.bar.label, kind);
                        }
                        v
                    }
                    Belief::InFlight | Belief::Closed => continue,
                };
                if e.flagged || until.saturating_duration_since(Instant::now()) <= SLACK * 2 {
                    continue;
                }
                looks.push(Look {
                    id: *id,
                    gen: e.gen,
                    client: e.client,
                    op: e.op,
                    keys: e.keys.clone(),
                    bound: e.bound.clone(),
                    until,
                });
            }
        }
        if looks.is_empty() && watches.is_empty() {
            return;
        }
        let mut keys: Vec<String> = looks
            .iter()
            .flat_map(|l| l.keys.clone())
            .chain(watches.iter().flat_map(|w| w.1.clone()))
            .collect();
        keys.sort();
        keys.dedup();
        let reads = futures::future::join_all(nodes.iter_mut().map(|n| n.read(&keys))).await;
        let t_e = Instant::now();
        self.samples.fetch_add(1, Ordering::Relaxed);
        let index: HashMap<&str, usize> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k.as_str(), i))
            .collect();
        self.watch(&watches, &index, &reads);
        // Only holdings whose state did not change while the nodes were read are judged
        // (or bound): a holding released, dropped, in a call or lost meanwhile may have
        // seen its key go and another holder's come.
        let unchanged: Vec<bool> = {
            let entries = lock(&self.entries);
            looks
                .iter()
                .map(|l| {
                    entries.get(&l.id).is_some_and(|e| {
                        e.gen == l.gen
                            && match &e.belief {
                                Belief::Guard(_) => true,
                                Belief::Lease(lease) => lease.is_held(),
                                Belief::InFlight | Belief::Closed => false,
                            }
                    })
                })
                .collect()
        };
        let mut suspects = Vec::new();
        for (look, unchanged) in looks.iter().zip(unchanged) {
            if !unchanged {
                continue;
            }
            let left = look.until.saturating_duration_since(t_e);
            if left <= SLACK {
                continue;
            }
            // A node supports a value if its expiry, at the latest `t_e + pttl + 1 ms`, is
            // no earlier than the belief's end less the slack.
            let need_ms = (left - SLACK).as_millis() as i64 - 1;
            for (k, key) in look.keys.iter().enumerate() {
                let i = index[key.as_str()];
                let mut unknown = 0;
                let mut support: HashMap<&str, usize> = HashMap::new();
                let mut seen = Vec::new();
                for r in &reads {
                    match r {
                        None => {
                            unknown += 1;
                            seen.push("?".to_string());
                        }
                        Some(vals) => {
                            let (v, pttl) = &vals[i];
                            match v {
                                Some(v) if *pttl == -1 || *pttl >= need_ms => {
                                    *support.entry(v.as_str()).or_default() += 1;
                                    seen.push(format!(
                                        "{} {}ms",
                                        short(v, look.bound[k].as_deref()),
                                        pttl
                                    ));
                                }
                                Some(v) => seen.push(format!(
                                    "{} {}ms (short)",
                                    short(v, look.bound[k].as_deref()),
                                    pttl
                                )),
                                None => seen.push("absent".into()),
                            }
                        }
                    }
                }
                let detail = || {
                    format!(
                        "op {} key {key} believes {}ms left; nodes: [{}]",
                        look.op,
                        left.as_millis(),
                        seen.join(", ")
                    )
                };
                match &look.bound[k] {
                    Some(v) => {
                        if support.get(v.as_str()).copied().unwrap_or(0) + unknown < self.quorum {
                            suspects.push((look.id, look.gen, look.client, Kind::Belief, detail()));
                        }
                    }
                    None => {
                        let best = support
                            .iter()
                            .max_by_key(|(_, c)| **c)
                            .map(|(v, c)| ((*v).to_owned(), *c));
                        match best {
                            Some((v, c)) if c >= self.quorum => {
                                if let Some(other) = self.bind(look.id, k, key, v) {
                                    let what =
                                        format!("{}; the value is holding {other}'s", detail());
                                    suspects.push((
                                        look.id,
                                        look.gen,
                                        look.client,
                                        Kind::SharedValue,
                                        what,
                                    ));
                                }
                            }
                            Some((_, c)) if c + unknown >= self.quorum => {}
                            None if unknown >= self.quorum => {}
                            _ => suspects.push((
                                look.id,
                                look.gen,
                                look.client,
                                Kind::Belief,
                                detail(),
                            )),
                        }
                    }
                }
            }
        }
        if suspects.is_empty() {
            return;
        }
        tokio::time::sleep(CONFIRM_AFTER).await;
        let mut entries = lock(&self.entries);
        for (id, gen, client, kind, what) in suspects {
            if let Some(e) = entries.get_mut(&id) {
                if e.gen == gen
                    && !matches!(e.belief, Belief::Closed | Belief::InFlight)
                    && !e.flagged
                {
                    e.flagged = true;
                    let what = format!("{what}; holding {id}: {}", e.story.join("; "));
                    lock(&self.violations).push(Violation {
                        t_ns: now_ns(),
                        kind,
                        client: Some(client),
                        what,
                    });
                }
            }
        }
    }

    /// Values of released holdings that come back: once a value was seen gone from a node
    /// after its holding's close plus the grace, it must never be seen there again.
    fn watch(&self, watches: &[Watch], index: &HashMap<&str, usize>, reads: &[Option<NodeRead>]) {
        let mut entries = lock(&self.entries);
        for (id, keys, bound) in watches {
            let Some(e) = entries.get_mut(id) else {
                continue;
            };
            let Some(closed) = e.closed_at else { continue };
            let settled = closed.elapsed() > e.grace;
            e.gone.resize(keys.len(), vec![false; reads.len()]);
            for (k, key) in keys.iter().enumerate() {
                let Some(value) = &bound[k] else { continue };
                for (node, read) in reads.iter().enumerate() {
                    let Some(vals) = read else { continue };
                    let d = self.disturbed[node].load(Ordering::Relaxed);
                    if d == ONGOING || d >= e.opened_ns {
                        continue;
                    }
                    let present = vals[index[key.as_str()]].0.as_deref() == Some(value.as_str());
                    if !present && settled {
                        e.gone[k][node] = true;
                    } else if present && e.gone[k][node] && !e.flagged {
                        e.flagged = true;
                        let what = format!(
                            "op {} key {key}: the value of holding {id} ({}) is back on node {node} {:?} after the holding ended, after it had been gone; holding {id}: {}",
                            e.op,
                            e.bar.end_how,
                            closed.elapsed(),
                            e.story.join("; ")
                        );
                        let v = Violation {
                            t_ns: now_ns(),
                            kind: Kind::Ghost,
                            client: Some(e.client),
                            what,
                        };
                        lock(&self.violations).push(v);
                    }
                }
            }
        }
    }

    /// Binds `value` to holding `id`; if another holding has it, says which (client, op,
    /// state and story) and binds nothing.
    fn bind(&self, id: u64, k: usize, key: &str, value: String) -> Option<String> {
        let owner = *lock(&self.owners)
            .entry((key.to_owned(), value.clone()))
            .or_insert(id);
        let mut entries = lock(&self.entries);
        if owner != id {
            let other = entries.get(&owner)?;
            // A holding that ended may have handed its lock, value and all, to a task
            // of the same manager (in-process hand-over): the value moves on with it.
            // So may a lease that says it no longer holds (a keep-alive that gave up
            // drops its guard, which hands the lock over while the client still has
            // the lost lease; `revived` checks that it never says held again).
            let ended = match &other.belief {
                Belief::Closed => true,
                Belief::Lease(l) => !l.is_held(),
                _ => false,
            };
            if ended {
                lock(&self.owners).insert((key.to_owned(), value.clone()), id);
                if let Some(e) = entries.get_mut(&id) {
                    e.bound[k] = Some(value);
                }
                return None;
            }
            let state = match &other.belief {
                Belief::Guard(v) => format!(
                    "a guard believing {:?} more",
                    v.saturating_duration_since(Instant::now())
                ),
                Belief::Lease(l) => format!(
                    "a lease, held: {}, {:?} more",
                    l.is_held(),
                    l.remaining_validity()
                ),
                Belief::InFlight => "a guard in a call".into(),
                Belief::Closed => format!("ended ({})", other.bar.end_how),
            };
            return Some(format!(
                "{owner} (client {} op {}, {state}): {}",
                other.client,
                other.op,
                other.story.join("; ")
            ));
        }
        if let Some(e) = entries.get_mut(&id) {
            e.bound[k] = Some(value);
        }
        None
    }
}

fn short(v: &str, mine: Option<&str>) -> String {
    if Some(v) == mine {
        "mine".into()
    } else {
        format!("other:{}", &v[..v.len().min(6)])
    }
}
