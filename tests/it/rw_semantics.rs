//! Reader-writer locks and counting semaphores against real servers, what each kind
//! promises: readers share, a writer excludes, a waiting writer keeps new readers out,
//! expiry frees a dead holder's place, write guards take fencing tokens, permits are
//! counted, bad names are refused, leases keep and lose them like locks. The contended
//! runs and the semaphore mutant are in `rw_and_permits.rs`.

use std::time::{Duration, Instant};

use tokio_redlock::{LockKind, Redlock};
use tokio_redlock_harness::Cluster;

use crate::rw_and_permits::LONG;
use crate::support::{self, bounded, builder, cluster, direct, eventually, values, WAIT};

/// How many members the reader set of `key` has on each node.
async fn reader_counts(cluster: &Cluster, key: &str) -> Vec<i64> {
    let mut out = Vec::new();
    for mut c in direct(cluster).await {
        let n: i64 = redis::cmd("ZCARD")
            .arg(format!("{key}:readers"))
            .query_async(&mut c)
            .await
            .expect("ZCARD");
        out.push(n);
    }
    out
}

/// Waits (bounded) until the reader set of `key` has `n` members on every node: an
/// acquisition or release returns once a quorum answered, the last node may follow.
async fn readers_everywhere(cluster: &Cluster, key: &str, n: i64) {
    eventually(
        &format!("{n} reader(s) of {key} on every node"),
        || async move { reader_counts(cluster, key).await.iter().all(|c| *c == n) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_share_and_leave_nothing_behind() {
    let cluster = cluster(3).await;
    let lock = support::redlock(&cluster);
    let mut a = bounded(lock.lock("doc").read().ttl(LONG).try_acquire())
        .await
        .expect("first reader");
    let b = bounded(lock.lock("doc").read().ttl(LONG).try_acquire())
        .await
        .expect("second reader shares");
    assert_eq!((a.kind(), b.kind()), (LockKind::Read, LockKind::Read));
    assert_eq!((a.permit(), a.fencing_token()), (None, None));
    readers_everywhere(&cluster, "doc", 2).await;
    // The set expires with its readers: it has an expiry, at most the longest ttl.
    let ttls = support::pttls(&mut direct(&cluster).await, "doc:readers").await;
    assert!(ttls.iter().all(|t| *t > 0 && *t <= 10_000), "{ttls:?}");
    // A reader extends like any guard, and the set's expiry follows its longest member.
    bounded(a.extend(Duration::from_secs(20)))
        .await
        .expect("reader extends");
    let conns = direct(&cluster).await;
    eventually("the set's expiry follows the extended reader", || {
        let mut conns = conns.clone();
        async move {
            let ttls = support::pttls(&mut conns, "doc:readers").await;
            ttls.iter().all(|t| *t > 10_000)
        }
    })
    .await;
    bounded(a.release()).await.expect("held until released");
    readers_everywhere(&cluster, "doc", 1).await;
    // Dropping releases in the background; the last reader out removes the set.
    drop(b);
    let conns = direct(&cluster).await;
    eventually("the reader set is gone", || {
        let mut conns = conns.clone();
        async move {
            support::pttls(&mut conns, "doc:readers")
                .await
                .iter()
                .all(|t| *t == -2)
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_excludes_readers_writers_and_exclusive_locks() {
    let cluster = cluster(3).await;
    let lock = support::redlock(&cluster);
    let w = bounded(lock.lock("doc").write().ttl(LONG).try_acquire())
        .await
        .expect("writer");
    assert_eq!(w.kind(), LockKind::Write);
    let reader = bounded(lock.lock("doc").read().try_acquire()).await;
    assert!(
        reader.as_ref().is_err_and(|e| e.is_conflict()),
        "{reader:?}"
    );
    let writer = bounded(lock.lock("doc").write().try_acquire()).await;
    assert!(
        writer.as_ref().is_err_and(|e| e.is_conflict()),
        "{writer:?}"
    );
    let plain = bounded(lock.try_acquire("doc", LONG)).await;
    assert!(plain.as_ref().is_err_and(|e| e.is_conflict()), "{plain:?}");
    bounded(w.release()).await.expect("held until released");

    // And readers exclude a writer, which then withdraws its intent as it gives up.
    let r = bounded(lock.lock("doc").read().ttl(LONG).try_acquire())
        .await
        .expect("reader after the writer");
    let writer = bounded(lock.lock("doc").write().ttl(LONG).try_acquire()).await;
    assert!(
        writer.as_ref().is_err_and(|e| e.is_conflict()),
        "{writer:?}"
    );
    let conns = direct(&cluster).await;
    eventually("the writer's intent is withdrawn", || {
        let mut conns = conns.clone();
        async move {
            values(&mut conns, "doc:writer")
                .await
                .iter()
                .all(Option::is_none)
        }
    })
    .await;
    let again = bounded(lock.lock("doc").read().try_acquire())
        .await
        .expect("a new reader once the writer gave up");
    drop(again);
    drop(r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_writer_keeps_new_readers_out() {
    let cluster = cluster(3).await;
    let lock = support::redlock(&cluster);
    let first = bounded(lock.lock("doc").read().ttl(LONG).try_acquire())
        .await
        .expect("first reader");
    let waiting = {
        let lock = lock.clone();
        tokio::spawn(async move {
            lock.lock("doc")
                .write()
                .ttl(LONG)
                .wait(WAIT)
                .acquire()
                .await
        })
    };
    let conns = direct(&cluster).await;
    eventually("the writer's intent is on a quorum", || {
        let mut conns = conns.clone();
        async move {
            let v = values(&mut conns, "doc:writer").await;
            v.iter().filter(|v| v.is_some()).count() >= 2
        }
    })
    .await;
    let late = bounded(lock.lock("doc").read().try_acquire()).await;
    assert!(late.as_ref().is_err_and(|e| e.is_conflict()), "{late:?}");
    assert!(
        !waiting.is_finished(),
        "the writer must wait for the first reader"
    );
    bounded(first.release()).await.expect("held until released");
    let w = bounded(waiting)
        .await
        .expect("writer task")
        .expect("the writer gets in once the reader left");
    assert_eq!(w.kind(), LockKind::Write);
    // The nodes that granted it removed its intent.
    let v = values(&mut conns.clone(), "doc:writer").await;
    assert!(v.iter().filter(|v| v.is_none()).count() >= 2, "{v:?}");
    bounded(w.release()).await.expect("held until released");
    let again = bounded(lock.lock("doc").read().try_acquire())
        .await
        .expect("readers again after the writer");
    drop(again);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_frees_a_dead_readers_and_a_dead_permits_place() {
    let cluster = cluster(3).await;
    let lock = support::redlock(&cluster);
    let ttl = Duration::from_millis(400);
    // A holder that dies: its guard is never released nor dropped.
    let dead = bounded(lock.lock("doc").read().ttl(ttl).try_acquire())
        .await
        .expect("reader");
    let until = dead.valid_until();
    std::mem::forget(dead);
    let w = bounded(lock.lock("doc").write().ttl(LONG).wait(WAIT).acquire())
        .await
        .expect("the writer gets in after the dead reader's ttl");
    assert!(
        Instant::now() >= until,
        "the writer got in before the reader's validity ended"
    );
    drop(w);

    let dead = bounded(lock.lock("gpu").permits(1).ttl(ttl).try_acquire())
        .await
        .expect("permit");
    assert_eq!((dead.kind(), dead.permit()), (LockKind::Permit(0), Some(0)));
    let until = dead.valid_until();
    std::mem::forget(dead);
    let p = bounded(lock.lock("gpu").permits(1).ttl(LONG).wait(WAIT).acquire())
        .await
        .expect("the permit is free after the dead holder's ttl");
    assert!(Instant::now() >= until);
    assert_eq!(p.permit(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_writers_intent_stops_blocking_within_its_ttl() {
    let cluster = cluster(3).await;
    let lock = support::redlock(&cluster);
    // A writer that recorded its intent and died: the intent lives on with its ttl.
    let mut conns = direct(&cluster).await;
    for c in &mut conns {
        support::set_on(c, "doc:writer", "dead-writer", 500).await;
    }
    let set_at = Instant::now();
    let refused = bounded(lock.lock("doc").read().try_acquire()).await;
    assert!(
        refused.as_ref().is_err_and(|e| e.is_conflict()),
        "{refused:?}"
    );
    let r = bounded(lock.lock("doc").read().wait(WAIT).acquire())
        .await
        .expect("a reader once the intent expired");
    assert!(set_at.elapsed() >= Duration::from_millis(400));
    drop(r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_guards_take_fencing_tokens_from_the_exclusive_counter() {
    let cluster = cluster(3).await;
    let lock = builder(&cluster).fencing(true).build().expect("config");
    let g = bounded(lock.acquire("doc", LONG)).await.expect("exclusive");
    let t1 = g.fencing_token().expect("token");
    g.release().await.expect("release");
    let w = bounded(lock.lock("doc").write().try_acquire())
        .await
        .expect("writer");
    let t2 = w.fencing_token().expect("a writer has a token");
    w.release().await.expect("release");
    // A fresh manager: no cached counter, so the nodes' counters decide.
    let other = builder(&cluster).fencing(true).build().expect("config");
    let g = bounded(other.acquire("doc", LONG))
        .await
        .expect("exclusive");
    let t3 = g.fencing_token().expect("token");
    assert!(t1 < t2 && t2 < t3, "{t1} {t2} {t3}");
    g.release().await.expect("release");
    let r = bounded(lock.lock("doc").read().try_acquire())
        .await
        .expect("reader");
    assert_eq!(r.fencing_token(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn available_counts_the_free_permits() {
    let cluster = cluster(3).await;
    let lock = support::redlock(&cluster);
    let free = || lock.lock("gpu").permits(3).available();
    assert_eq!(bounded(free()).await.expect("snapshot"), 3);
    let a = bounded(lock.lock("gpu").permits(3).try_acquire())
        .await
        .expect("a");
    let b = bounded(lock.lock("gpu").permits(3).try_acquire())
        .await
        .expect("b");
    assert_ne!(a.permit(), b.permit());
    assert_eq!(bounded(free()).await.expect("snapshot"), 1);
    bounded(a.release()).await.expect("release");
    assert_eq!(bounded(free()).await.expect("snapshot"), 2);
    let not_a_semaphore = bounded(lock.lock("gpu").available()).await;
    assert!(matches!(
        not_a_semaphore,
        Err(tokio_redlock::Error::Config(_))
    ));
    drop(b);
}

#[tokio::test]
async fn names_ending_like_the_new_keys_and_zero_permits_are_refused() {
    let lock = Redlock::builder()
        .node("redis://127.0.0.1:1")
        .build()
        .expect("config");
    for name in ["doc:readers", "doc:writer", "gpu:permit:2"] {
        let got = lock.lock(name).read().try_acquire().await;
        assert!(
            matches!(got, Err(tokio_redlock::Error::Config(_))),
            "{name}: {got:?}"
        );
        let got = lock.try_acquire(name, LONG).await;
        assert!(
            matches!(got, Err(tokio_redlock::Error::Config(_))),
            "{name}: {got:?}"
        );
    }
    let got = lock.lock("gpu").permits(0).try_acquire().await;
    assert!(
        matches!(got, Err(tokio_redlock::Error::Config(_))),
        "{got:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_keeps_a_read_lock_and_a_permit_alive() {
    let cluster = cluster(3).await;
    let lock = support::redlock(&cluster);
    let ttl = Duration::from_millis(300);
    let held = bounded(lock.lock("doc").read().ttl(ttl).with(|lease| async move {
        // Past the ttl: held only if the keep-alive extended the reader.
        tokio::time::sleep(Duration::from_millis(700)).await;
        lease.is_held()
    }))
    .await
    .expect("with a read lock");
    assert!(held);
    let held = bounded(
        lock.lock("gpu")
            .permits(2)
            .ttl(ttl)
            .with(|lease| async move {
                tokio::time::sleep(Duration::from_millis(700)).await;
                lease.is_held()
            }),
    )
    .await
    .expect("with a permit");
    assert!(held);
    assert_eq!(reader_counts(&cluster, "doc").await, vec![0, 0, 0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_reader_or_permit_is_reported_like_a_lost_lock() {
    let cluster = cluster(3).await;
    // Without healing: an extension that heals would set the wiped permit slot again
    // (a fresh vote on each node, tests/it/heal.rs); this is about reporting a loss.
    let lock = support::builder(&cluster)
        .heal_on_extend(false)
        .build()
        .unwrap();
    let mut r = bounded(lock.lock("doc").read().ttl(LONG).try_acquire())
        .await
        .expect("reader");
    let mut p = bounded(lock.lock("gpu").permits(2).ttl(LONG).try_acquire())
        .await
        .expect("permit");
    let slot_key = format!("gpu:permit:{}", p.permit().expect("a slot"));
    // Someone wipes the keys on every node (FLUSHALL, a careless operator).
    for mut c in direct(&cluster).await {
        let _: () = redis::cmd("DEL")
            .arg("doc:readers")
            .arg(&slot_key)
            .query_async(&mut c)
            .await
            .expect("DEL");
    }
    let got = bounded(r.extend(LONG)).await;
    assert!(got.as_ref().is_err_and(|e| e.is_lock_lost()), "{got:?}");
    assert!(!r.is_valid());
    let got = bounded(p.extend(LONG)).await;
    assert!(got.as_ref().is_err_and(|e| e.is_lock_lost()), "{got:?}");
    let got = bounded(p.release()).await;
    assert!(got.as_ref().is_err_and(|e| e.is_lock_lost()), "{got:?}");
    // A lease on a reader whose member is removed signals the loss.
    let ttl = Duration::from_millis(300);
    let conns = direct(&cluster).await;
    let got = bounded(lock.lock("doc").read().ttl(ttl).with(|lease| async move {
        for mut c in conns {
            let _: () = redis::cmd("DEL")
                .arg("doc:readers")
                .query_async(&mut c)
                .await
                .expect("DEL");
        }
        lease.lost().await;
    }))
    .await;
    assert!(got.as_ref().is_err_and(|e| e.is_lock_lost()), "{got:?}");
}
