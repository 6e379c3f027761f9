//! Order cannot matter, for the reader-writer lock, against real servers:
//! readers hold the resource against exclusive acquirers (this crate's and a peer's
//! plain `SET NX`), and a reader whose attempt fails after its turn admitted it keeps
//! that turn. The late copies of single requests are tested on one node beside the
//! scripts (`src/scripts/rwlock/tests.rs`).

use std::time::Duration;

use tokio_redlock::Redlock;

use crate::support::{self, bounded, cluster, direct, eventually, values, WAIT};

const LONG: Duration = Duration::from_secs(10);

/// docs/safety.md section 6, "Readers hold the resource": while a reader of `doc:1` is
/// live in one service, another service's `acquire("doc:1")` and a peer's plain
/// `SET doc:1 v NX PX` are refused on every node; once the reader leaves, an exclusive
/// waiter gets in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exclusive_acquire_is_refused_while_a_reader_holds() {
    let cluster = cluster(3).await;
    let reading = support::redlock(&cluster);
    let other = support::redlock(&cluster);
    let reader = bounded(reading.lock("doc:1").read().ttl(LONG).try_acquire())
        .await
        .expect("reader");
    // The reader's acquire returned when a quorum admitted it; its request to the last
    // node may still be on its way, and an exclusive attempt that got there first would
    // keep it out of that node for good. Both checks below start once it is on each.
    let conns = direct(&cluster).await;
    eventually("the reader is on every node", || {
        let mut conns = conns.clone();
        async move {
            let ttls = support::pttls(&mut conns, "doc:1:readers").await;
            ttls.iter().all(|t| *t > 0)
        }
    })
    .await;
    let plain = bounded(other.try_acquire("doc:1", LONG)).await;
    assert!(plain.as_ref().is_err_and(|e| e.is_conflict()), "{plain:?}");
    // A peer (node-redlock, redsync, a script) takes a lock with SET NX on each node.
    for mut c in conns {
        let set: Option<String> = redis::cmd("SET")
            .arg("doc:1")
            .arg("peer-value")
            .arg("NX")
            .arg("PX")
            .arg(10_000)
            .query_async(&mut c)
            .await
            .expect("SET");
        assert_eq!(set, None, "a peer's SET NX got the key beside a reader");
    }
    // An exclusive waiter gets in once the reader leaves, and not before.
    let waiting = {
        let other = other.clone();
        tokio::spawn(async move { other.lock("doc:1").ttl(LONG).wait(WAIT).acquire().await })
    };
    bounded(reader.release())
        .await
        .expect("held until released");
    let guard = bounded(waiting)
        .await
        .expect("task")
        .expect("the exclusive waiter gets in after the reader");
    bounded(guard.release()).await.expect("held until released");
}

/// docs/safety.md section 6, phase-fair admission: a reader that the turn admits on a
/// quorum but whose attempt then fails (here too little validity is left, the nodes
/// being slow) keeps its turn, and goes before the writer that waits behind it, rather
/// than waiting a whole write phase more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_whose_attempt_fails_keeps_its_turn() {
    let cluster = cluster(3).await;
    // Node timeouts above the latency below: requests are slow, not lost.
    let patient = || -> Redlock {
        support::builder(&cluster)
            .node_timeout(Duration::from_secs(1))
            .build()
            .expect("config")
    };
    let lock = patient();
    let w1 = bounded(lock.lock("doc").write().ttl(LONG).try_acquire())
        .await
        .expect("first writer");
    // The writer's grant returned at a quorum: on a node its request has not reached
    // yet the reader would be admitted (and the writer refused there), and would never
    // wait on that node. The reader comes once the writer is on each.
    support::on_every_node(&cluster, "doc").await;
    // The reader's grant must leave 1.7 s of its 2 s: with 2 x 200 ms of latency an
    // attempt cannot, without it one can.
    let reader = {
        let r = patient();
        tokio::spawn(async move {
            r.lock("doc")
                .read()
                .ttl(Duration::from_secs(2))
                .min_validity(Duration::from_millis(1_700))
                .wait(WAIT)
                .acquire()
                .await
        })
    };
    let conns = direct(&cluster).await;
    eventually("the reader waits for the writer on every node", || {
        let mut conns = conns.clone();
        async move {
            let mut all = true;
            for c in &mut conns {
                let n: i64 = redis::cmd("ZCARD")
                    .arg("doc:rwait")
                    .query_async(c)
                    .await
                    .expect("ZCARD");
                all &= n == 1;
            }
            all
        }
    })
    .await;
    for i in 0..3 {
        cluster
            .node(i)
            .set_latency(Duration::from_millis(200))
            .await
            .expect("latency");
    }
    // The release gives the reader its turn and wakes it; its attempts are admitted
    // and fail, too slow, while a second writer comes and waits behind the turn.
    bounded(w1.release()).await.expect("held until released");
    let w2 = {
        let w = patient();
        tokio::spawn(async move { w.lock("doc").write().ttl(LONG).wait(WAIT).acquire().await })
    };
    eventually(
        "the second writer waits (its intent is on a quorum) or won",
        || {
            let mut conns = conns.clone();
            let done = w2.is_finished();
            async move {
                let v = values(&mut conns, "doc:writer").await;
                done || v.iter().filter(|v| v.is_some()).count() >= 2
            }
        },
    )
    .await;
    assert!(
        !w2.is_finished(),
        "the second writer went before the reader"
    );
    for i in 0..3 {
        cluster
            .node(i)
            .set_latency(Duration::ZERO)
            .await
            .expect("latency");
    }
    let r = bounded(reader)
        .await
        .expect("reader task")
        .expect("the reader gets in on its turn");
    assert!(
        !w2.is_finished(),
        "the second writer went before the reader whose turn it was"
    );
    bounded(r.release()).await.expect("held until released");
    let w = bounded(w2)
        .await
        .expect("writer task")
        .expect("the second writer gets in after the reader");
    bounded(w.release()).await.expect("held until released");
}

/// `inspect` of a resource that readers hold reports them as readers, not as an
/// exclusive holder with an unknown value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_reports_readers_not_an_owner() {
    let cluster = cluster(3).await;
    let lock = support::redlock(&cluster);
    let a = bounded(lock.lock("doc").read().ttl(LONG).try_acquire())
        .await
        .expect("reader");
    let b = bounded(lock.lock("doc").read().ttl(LONG).try_acquire())
        .await
        .expect("reader");
    let conns = direct(&cluster).await;
    eventually("both readers on every node", || {
        let mut conns = conns.clone();
        async move {
            let mut all = true;
            for c in &mut conns {
                let n: i64 = redis::cmd("ZCARD")
                    .arg("doc:readers")
                    .query_async(c)
                    .await
                    .expect("ZCARD");
                all &= n == 2;
            }
            all
        }
    })
    .await;
    let info = bounded(lock.inspect("doc")).await.expect("inspect");
    assert_eq!(info.holders().len(), 1, "{info}");
    let h = &info.holders()[0];
    assert!(h.is_readers() && h.label().is_none(), "{info}");
    assert_eq!(h.node_count(), 3, "{info}");
    assert!(h.min_ttl() > Duration::from_secs(5), "{info}");
    assert!(
        info.to_string().contains("\n  readers: on 3 node(s)"),
        "{info}"
    );
    // The last reader out takes the marker with it.
    bounded(a.release()).await.expect("held until released");
    let left = bounded(lock.inspect("doc")).await.expect("inspect");
    assert!(left.holders().iter().all(|h| h.is_readers()), "{left}");
    bounded(b.release()).await.expect("held until released");
    support::eventually_gone(&cluster, "doc").await;
}

/// Issue 21 (a withdrawn intent comes back; a waiting writer's place ends soon after it
/// stops asking): a waiting writer whose future is dropped sends no withdrawal, and its
/// intent, like one revived by a late copy of its request, keeps new readers out only
/// for its patience (here 20 + 20 ms of pause, 2 x 250 ms of node timeouts and 50 ms),
/// not for its 60 s ttl.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_writers_intent_ends_within_its_patience() {
    let cluster = cluster(3).await;
    let lock = support::redlock(&cluster);
    let first = bounded(lock.lock("doc").read().ttl(LONG).try_acquire())
        .await
        .expect("reader");
    let waiting = lock
        .lock("doc")
        .write()
        .ttl(Duration::from_secs(60))
        .wait(WAIT)
        .acquire();
    let conns = direct(&cluster).await;
    let cancelled = tokio::time::timeout(Duration::from_millis(300), waiting).await;
    assert!(
        cancelled.is_err(),
        "the writer cannot get in beside a reader"
    );
    let stopped = std::time::Instant::now();
    let intents = values(&mut conns.clone(), "doc:writer").await;
    assert!(
        intents.iter().filter(|v| v.is_some()).count() >= 2,
        "the writer's intent keeps readers out while it waits: {intents:?}"
    );
    let later = bounded(
        lock.lock("doc")
            .read()
            .wait(Duration::from_secs(5))
            .acquire(),
    )
    .await
    .expect("a new reader once the cancelled writer's intent lapsed");
    assert!(
        stopped.elapsed() < Duration::from_secs(2),
        "the intent outlived its patience: {:?}",
        stopped.elapsed()
    );
    drop((first, later));
}

/// Issue 21 (monotone reader extension): extending a read guard by less than it has
/// left lowers its belief, never what the nodes store, so a late, older extension of a
/// shorter ttl could not either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shorter_read_extension_lowers_nothing_on_the_nodes() {
    let cluster = cluster(3).await;
    let lock = support::redlock(&cluster);
    let mut r = bounded(lock.lock("doc").read().ttl(LONG).try_acquire())
        .await
        .expect("reader");
    bounded(r.extend(Duration::from_secs(30)))
        .await
        .expect("extends");
    bounded(r.extend(Duration::from_secs(1)))
        .await
        .expect("a shorter extension succeeds");
    assert!(r.remaining_validity() <= Duration::from_secs(1));
    let conns = direct(&cluster).await;
    // The long extension reached a quorum (it returned Ok); the short one reached a
    // quorum too, which before the fix lowered them: so a quorum keeping the long expiry
    // shows that nothing was lowered. (A node the long one never reached, its request
    // timed out on a loaded machine, keeps its older expiry either way.)
    let mut conns = conns;
    let sets = support::pttls(&mut conns, "doc:readers").await;
    let marks = support::pttls(&mut conns, "doc").await;
    for (what, ttls) in [("reader set", &sets), ("marker", &marks)] {
        let kept = ttls.iter().filter(|t| **t > 25_000).count();
        assert!(
            kept >= lock.quorum(),
            "the {what}'s expiry was lowered: {ttls:?}"
        );
    }
    drop(r);
}
