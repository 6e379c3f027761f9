//! Fencing tokens against real servers: strictly increasing across managers, across a
//! crash of every node with `appendfsync always`, from a fresh manager whose candidates
//! start stale, and with `acquire_many`; and a holder paused past its ttl is refused by
//! `FenceGate` and by a Redis-side `FENCE_CHECK_LUA` check.

use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use tokio_redlock::{FenceGate, LockGuard, Redlock, FENCE_CHECK_LUA};
use tokio_redlock_harness::{Cluster, Persistence};

use crate::support::*;

const TTL: Duration = Duration::from_secs(5);

/// A fenced manager. Tokens are about order, not time, so it is patient: a slow node
/// on a loaded CI box must not turn a test of ordering into a flaky test of latency.
fn fenced(cluster: &Cluster) -> Redlock {
    builder(cluster)
        .fencing(true)
        .node_timeout(Duration::from_secs(1))
        .retry_count(20)
        .build()
        .expect("valid config")
}

/// Acquires `resource` with `redlock`, returns its token, releases.
async fn token_of(redlock: &Redlock, resource: &str) -> u64 {
    let guard = bounded(redlock.acquire(resource, TTL))
        .await
        .expect("acquire");
    let token = guard
        .fencing_token()
        .expect("a fenced manager hands out tokens");
    bounded(guard.release()).await.expect("release");
    token
}

/// The counter key on each node: its value and PTTL.
async fn counters(cluster: &Cluster, key: &str) -> Vec<(Option<String>, i64)> {
    let mut conns = direct(cluster).await;
    let vals = values(&mut conns, key).await;
    let ttls = pttls(&mut conns, key).await;
    vals.into_iter().zip(ttls).collect()
}

#[tokio::test]
async fn tokens_strictly_increase_across_managers() {
    let cluster = cluster(3).await;
    let managers: Vec<Redlock> = (0..3).map(|_| fenced(&cluster)).collect();
    let mut last = 0;
    for i in 0..45 {
        let token = token_of(&managers[i % managers.len()], "fence:many").await;
        assert!(token > last, "token {token} after {last} (acquisition {i})");
        last = token;
    }
    // The counter stays behind: no ttl, not deleted by release; a quorum holds the last
    // token (a straggler that timed out may leave a node behind), and none is above it.
    let found = counters(&cluster, "fence:many:fence").await;
    let at_last = found
        .iter()
        .filter(|(v, _)| v.as_deref() == Some(last.to_string().as_str()))
        .count();
    assert!(at_last >= 2, "{found:?}");
    for (v, pttl) in &found {
        if let Some(v) = v {
            assert!(v.parse::<u64>().unwrap() <= last, "{found:?}");
            assert_eq!(*pttl, -1, "the counter must never expire");
        }
    }
    // A manager without fencing hands out no token.
    let plain = bounded(redlock(&cluster).acquire("fence:plain", TTL))
        .await
        .unwrap();
    assert_eq!(plain.fencing_token(), None);
}

#[tokio::test]
async fn tokens_start_from_the_nodes_when_the_cache_is_stale() {
    let cluster = cluster(3).await;
    let busy = fenced(&cluster);
    let mut last = 0;
    for _ in 0..30 {
        last = token_of(&busy, "fence:stale").await;
    }
    // A fresh manager proposes 1; the nodes answer STALE with 30 and it tries 31.
    let fresh = fenced(&cluster);
    let t = token_of(&fresh, "fence:stale").await;
    assert!(t > last, "fresh manager got {t} after {last}");
    // And the busy one's cache is now behind by one: it learns in turn.
    let t2 = token_of(&busy, "fence:stale").await;
    assert!(t2 > t, "{t2} after {t}");
}

#[tokio::test]
async fn tokens_survive_a_crash_of_every_node_with_aof_always() {
    let cluster = cluster_with(3, Persistence::AofAlways).await;
    let before = fenced(&cluster);
    let mut last = 0;
    for _ in 0..10 {
        last = token_of(&before, "fence:crash").await;
    }
    // As in the rolling test: no lock key comes back from the AOF to wait out.
    eventually_gone(&cluster, "fence:crash").await;
    // The last acquisition returned at a quorum: its request to the third node may
    // still be on its way (its release, ordered after it, too, so "gone" proves
    // nothing there), or have timed out on a loaded machine. Wait a while for every
    // node; a quorum is what the protocol needs.
    let expect = last.to_string();
    let deadline = Instant::now() + Duration::from_secs(5);
    let written: Vec<bool> = loop {
        let now: Vec<bool> = counters(&cluster, "fence:crash:fence")
            .await
            .iter()
            .map(|(v, _)| v.as_deref() == Some(expect.as_str()))
            .collect();
        if now.iter().all(|w| *w) || Instant::now() > deadline {
            break now;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(
        written.iter().filter(|w| **w).count() >= 2,
        "the last counter is on fewer than a quorum: {written:?}"
    );
    // The counter is on disk wherever it was written before the crash: it was fsynced
    // with the write, so killing at once loses nothing.
    for i in 0..cluster.len() {
        cluster.node(i).kill().await.unwrap();
    }
    for i in 0..cluster.len() {
        cluster.node(i).restart().await.unwrap();
    }
    for ((v, pttl), was) in counters(&cluster, "fence:crash:fence")
        .await
        .into_iter()
        .zip(&written)
    {
        if *was {
            assert_eq!(v.as_deref(), Some(expect.as_str()));
        }
        assert_eq!(pttl, -1);
    }
    // A fresh manager (nothing cached) and the old one both continue above.
    let after = fenced(&cluster);
    let t = token_of(&after, "fence:crash").await;
    assert!(t > last, "{t} after {last} across the restart");
    let t2 = token_of(&before, "fence:crash").await;
    assert!(t2 > t, "{t2} after {t}");
}

#[tokio::test]
async fn one_node_restarting_keeps_tokens_increasing() {
    let cluster = cluster_with(3, Persistence::AofAlways).await;
    let managers = [fenced(&cluster), fenced(&cluster)];
    let mut last = 0;
    for round in 0..3 {
        // Each round a different node crashes and comes back mid-sequence.
        let node = cluster.node(round);
        for i in 0..6 {
            if i == 3 {
                // Let the last release land everywhere first: a release cut off by the
                // crash would come back from the AOF as a held lock (safe, but it would
                // make this a test of waiting out its ttl).
                eventually_gone(&cluster, "fence:rolling").await;
                node.kill().await.unwrap();
                node.restart().await.unwrap();
            }
            let token = token_of(&managers[i % 2], "fence:rolling").await;
            assert!(token > last, "{token} after {last}");
            last = token;
        }
    }
}

#[tokio::test]
async fn acquire_many_is_fenced_above_each_resource() {
    let cluster = cluster(3).await;
    let singles = fenced(&cluster);
    let mut last_a = 0;
    for _ in 0..8 {
        last_a = token_of(&singles, "fence:acct:a").await;
    }
    let last_b = token_of(&singles, "fence:acct:b").await;
    // A fresh manager: its candidate starts stale for both resources.
    let many = fenced(&cluster);
    let guard: LockGuard = bounded(many.acquire_many(&["fence:acct:a", "fence:acct:b"], TTL))
        .await
        .unwrap();
    let t = guard.fencing_token().unwrap();
    assert!(t > last_a && t > last_b, "{t} after {last_a} / {last_b}");
    bounded(guard.release()).await.unwrap();
    // Each resource's later acquisitions are above the joint one.
    let ta = token_of(&singles, "fence:acct:a").await;
    let tb = token_of(&fenced(&cluster), "fence:acct:b").await;
    assert!(ta > t && tb > t, "{ta} / {tb} after {t}");
}

/// The store's fenced write, run inside Redis: FENCE_CHECK_LUA, then the write.
fn fenced_write() -> redis::Script {
    redis::Script::new(&format!(
        "{FENCE_CHECK_LUA}\nredis.call('SET', KEYS[2], ARGV[2])\nreturn {{1, tonumber(ARGV[1])}}"
    ))
}

async fn store_write(store: &mut MultiplexedConnection, token: u64, value: &str) -> (i64, u64) {
    fenced_write()
        .key("ledger:1:hw")
        .key("ledger:1")
        .arg(token)
        .arg(value)
        .invoke_async(store)
        .await
        .expect("fenced write")
}

#[tokio::test]
async fn a_holder_paused_past_its_ttl_is_refused_by_the_fence() {
    let cluster = cluster(3).await;
    let slow = fenced(&cluster);
    let fast = fenced(&cluster);
    let gate = FenceGate::new();
    // The protected store: a Redis of its own would do; one node's server is enough here,
    // under keys the lock never touches.
    let mut store = direct(&cluster).await.swap_remove(0);

    let ttl = Duration::from_millis(300);
    let old = bounded(slow.acquire("fence:pay", ttl)).await.unwrap();
    let t_old = old.fencing_token().unwrap();
    gate.check("fence:pay", t_old).unwrap();
    assert_eq!(store_write(&mut store, t_old, "old-1").await, (1, t_old));

    // The old holder "pauses" (a GC pause, a stopped VM) with its guard in hand. Meanwhile
    // the lock runs out and the other client takes it and writes.
    let t_new = {
        let fast = fast.clone();
        let mut store = store.clone();
        let gate = &gate;
        bounded(async move {
            let guard = loop {
                match fast.try_acquire("fence:pay", ttl).await {
                    Ok(g) => break g,
                    // Refused by the old holder's keys; or, when they expired between
                    // the attempt and the read that tells a holder from a split vote,
                    // a split vote: both mean "not yet", try again.
                    Err(e) if e.is_conflict() || e.is_split_vote() => {
                        tokio::time::sleep(Duration::from_millis(20)).await
                    }
                    Err(e) => panic!("{e}"),
                }
            };
            let t = guard.fencing_token().unwrap();
            gate.check("fence:pay", t).unwrap();
            assert_eq!(store_write(&mut store, t, "new").await, (1, t));
            t
        })
        .await
    };
    assert!(t_new > t_old);

    // The old holder wakes, past its validity, and tries to write.
    assert!(!old.is_valid(), "the pause outlived the lock");
    let refused = gate.check("fence:pay", t_old).unwrap_err();
    assert_eq!(refused.token, t_old);
    assert_eq!(refused.high_water, t_new);
    assert_eq!(gate.refusals(), 1);
    assert_eq!(store_write(&mut store, t_old, "old-2").await, (0, t_new));
    let stored: String = redis::cmd("GET")
        .arg("ledger:1")
        .query_async(&mut store)
        .await
        .unwrap();
    assert_eq!(stored, "new", "the stale write must not land");
    // The new holder can still write.
    assert!(gate.check("fence:pay", t_new).is_ok());
    assert_eq!(store_write(&mut store, t_new, "new-2").await, (1, t_new));
}

/// `MEMORY USAGE key SAMPLES 0` on each node, directly (past the proxies).
async fn memory_usage(cluster: &Cluster, key: &str) -> Vec<Option<i64>> {
    let mut out = Vec::new();
    for mut c in direct(cluster).await {
        let bytes: Option<i64> = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(key)
            .arg("SAMPLES")
            .arg(0)
            .query_async(&mut c)
            .await
            .expect("MEMORY USAGE");
        out.push(bytes);
    }
    out
}

/// The keys on each node that end with the fence suffix.
async fn counter_keys(cluster: &Cluster) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for mut c in direct(cluster).await {
        let mut keys: Vec<String> = redis::cmd("KEYS")
            .arg("*:fence")
            .query_async(&mut c)
            .await
            .expect("KEYS");
        keys.sort();
        out.push(keys);
    }
    out
}

/// Issue 21, item 4: resources under one `shared_fencing_counter` draw strictly
/// increasing tokens from one counter key per node (none of their own, however many
/// resources), interleaved and across managers with stale caches; a resource outside
/// the namespace keeps its own counter, as before. Prints what each key costs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resources_of_a_namespace_share_one_counter_and_tokens_still_increase() {
    let cluster = cluster(3).await;
    let shared = || {
        builder(&cluster)
            .fencing(true)
            .node_timeout(Duration::from_secs(1))
            .retry_count(20)
            .shared_fencing_counter("payment:", "payments")
            .build()
            .expect("valid config")
    };
    let (a, b) = (shared(), shared());
    assert_eq!(a.fence_key_of("payment:1"), "payments:fence");
    let mut last = 0;
    for (i, redlock) in [&a, &b, &a, &b, &b, &a].into_iter().enumerate() {
        for resource in [format!("payment:{i}"), "payment:0".to_owned()] {
            let token = token_of(redlock, &resource).await;
            assert!(token > last, "{resource}: token {token} after {last}");
            last = token;
        }
    }
    // Two payments held at once still get distinct tokens.
    let one = bounded(a.acquire("payment:x", TTL)).await.unwrap();
    let two = bounded(b.acquire("payment:y", TTL)).await.unwrap();
    assert!(two.fencing_token() > one.fencing_token());
    let two_token = two.fencing_token();
    one.release().await.unwrap();
    two.release().await.unwrap();
    // acquire_many names the shared counter once per resource: one bid, one token.
    let many = bounded(a.acquire_many(&["payment:m1", "payment:m2"], TTL))
        .await
        .unwrap();
    assert!(many.fencing_token() > two_token);
    last = many.fencing_token().unwrap();
    many.release().await.unwrap();
    // Outside the namespace: the per-resource default, unchanged.
    let order = token_of(&a, "order:1").await;
    assert_eq!(order, 1, "order:1 has a counter of its own, starting at 1");
    assert_eq!(a.fence_key_of("order:1"), "order:1:fence");
    // One counter key for all the payments on every node (a quorum holds the last
    // token; a straggler may not have written it yet, so only the quorum is required).
    for keys in counter_keys(&cluster).await {
        assert_eq!(keys, ["order:1:fence", "payments:fence"], "{keys:?}");
    }
    let values = counters(&cluster, "payments:fence").await;
    let at_last = values
        .iter()
        .filter(|(v, pttl)| *pttl == -1 && v.as_deref() == Some(last.to_string().as_str()))
        .count();
    assert!(
        at_last >= 2,
        "a quorum holds the last token {last}: {values:?}"
    );
    // What a counter key costs: the same per key, shared or not.
    eprintln!(
        "MEMORY USAGE payments:fence = {:?} bytes, order:1:fence = {:?} bytes, lock key \
         payment:x (gone) = {:?}",
        memory_usage(&cluster, "payments:fence").await,
        memory_usage(&cluster, "order:1:fence").await,
        memory_usage(&cluster, "payment:x").await,
    );
}
