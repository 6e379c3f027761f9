//! The reader-writer scripts on a real one-node server: each request alone, each sent
//! again, and the late copies of docs/safety.md section 6's table.

use redis::aio::MultiplexedConnection;
use redis::Value;

use super::*;
use tokio_redlock_harness::Cluster;

async fn run(conn: &MultiplexedConnection, script: &Script, keys: &[&str], args: &[&str]) -> Value {
    let mut inv = script.prepare_invoke();
    for k in keys {
        inv.key(*k);
    }
    for a in args {
        inv.arg(*a);
    }
    inv.invoke_async(&mut conn.clone()).await.expect("script")
}

async fn ints(conn: &MultiplexedConnection, cmd: &str, key: &str) -> i64 {
    redis::cmd(cmd)
        .arg(key)
        .query_async(&mut conn.clone())
        .await
        .expect(cmd)
}

/// Lock key, reader set, writer intent, waiting readers, reader turn.
const RW: [&str; 5] = ["d", "d:readers", "d:writer", "d:rwait", "d:rturn"];
/// The keys of `READ_RELEASE`: reader set, lock key, writer intent, reader turn.
const LEAVE: [&str; 4] = ["d:readers", "d", "d:writer", "d:rturn"];
/// The keys of `WRITE_RELEASE`: lock key, exclusive waiters, waiting readers, turn.
const DONE: [&str; 4] = ["d", "d:waiters", "d:rwait", "d:rturn"];

async fn one_node() -> (Cluster, MultiplexedConnection) {
    let cluster = Cluster::builder().nodes(1).start().await.expect("cluster");
    let client = redis::Client::open(cluster.node(0).direct_url()).expect("url");
    let c = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    (cluster, c)
}

/// A reader's request: value, ttl, wait id, patience.
async fn read(c: &MultiplexedConnection, value: &str, id: &str) -> Value {
    run(c, &READ_ACQUIRE, &RW, &[value, "60000", id, "5000"]).await
}

/// A writer's request: value, ttl 5 s, intent id, no wake-ups, patience 5 s.
async fn write(c: &MultiplexedConnection, value: &str, intent: &str) -> Value {
    run(c, &WRITE_ACQUIRE, &RW, &[value, "5000", intent, "", "5000"]).await
}

/// What the client does once a reader won on a quorum: it gives up its place.
async fn won(c: &MultiplexedConnection, id: &str) {
    run(c, &READ_WAIT_CLEAR, &RW[3..5], &[id]).await;
}

async fn get(c: &MultiplexedConnection, key: &str) -> Option<String> {
    redis::cmd("GET")
        .arg(key)
        .query_async(&mut c.clone())
        .await
        .expect("GET")
}

async fn members(c: &MultiplexedConnection, key: &str) -> Vec<String> {
    redis::cmd("ZRANGE")
        .arg(key)
        .arg(0)
        .arg(-1)
        .query_async(&mut c.clone())
        .await
        .expect("ZRANGE")
}

/// Each request sent twice (its first reply lost) is a success both times, and the
/// scripts admit readers xor a writer on one node.
#[tokio::test]
async fn reader_writer_scripts_on_one_node() {
    let (_cluster, c) = one_node().await;
    let one = Value::Int(1);
    let zero = Value::Int(0);
    // Two readers; each re-sent request counts as admitted.
    for (r, id) in [("r1", "m|1"), ("r1", "m|1"), ("r2", "m|2")] {
        assert_eq!(read(&c, r, id).await, one);
    }
    assert_eq!(ints(&c, "ZCARD", RW[1]).await, 2);
    let pttl = ints(&c, "PTTL", RW[1]).await;
    assert!(pttl > 59_000 && pttl <= 60_000, "{pttl}");
    // The readers keep the readers marker in the lock key, with their expiry.
    assert_eq!(get(&c, RW[0]).await.as_deref(), Some(READERS_MARKER));
    let pttl = ints(&c, "PTTL", RW[0]).await;
    assert!(pttl > 59_000 && pttl <= 60_000, "{pttl}");
    // A writer is refused and leaves its intent, which refuses new readers; they
    // keep a place among the waiting readers, which expires with them.
    assert_eq!(write(&c, "w", "m|i").await, zero);
    assert_eq!(get(&c, RW[0]).await.as_deref(), Some(READERS_MARKER));
    assert!(ints(&c, "PTTL", RW[2]).await > 4_000);
    assert_eq!(read(&c, "r3", "m|3").await, zero);
    assert_eq!(members(&c, RW[3]).await, vec!["m|3"]);
    let pttl = ints(&c, "PTTL", RW[3]).await;
    assert!(pttl > 4_000 && pttl <= 5_000, "{pttl}");
    // Extending a reader rescores it; one that left cannot be extended.
    assert_eq!(
        run(&c, &READ_EXTEND, &RW[1..2], &["r1", "90000"]).await,
        one
    );
    assert!(ints(&c, "PTTL", RW[1]).await > 89_000);
    let released = Value::Array(vec![one.clone(), zero.clone()]);
    assert_eq!(run(&c, &READ_RELEASE, &LEAVE, &["r1", ""]).await, released);
    assert_eq!(
        run(&c, &READ_EXTEND, &RW[1..2], &["r1", "90000"]).await,
        zero
    );
    let not_held = Value::Array(vec![zero.clone(), zero.clone()]);
    assert_eq!(run(&c, &READ_RELEASE, &LEAVE, &["r1", ""]).await, not_held);
    // A shorter extension lowers nothing (it may be a late copy of an older one);
    // the last reader out takes the readers marker with it: the writer gets in,
    // twice.
    assert_eq!(run(&c, &READ_EXTEND, &RW[1..2], &["r2", "1"]).await, one);
    assert!(ints(&c, "PTTL", RW[1]).await > 50_000);
    assert_eq!(run(&c, &READ_RELEASE, &LEAVE, &["r2", ""]).await, released);
    assert_eq!(ints(&c, "EXISTS", RW[0]).await, 0, "the marker is gone");
    for _ in 0..2 {
        assert_eq!(write(&c, "w", "m|i").await, one);
    }
    assert_eq!(
        ints(&c, "EXISTS", RW[2]).await,
        0,
        "the winner's intent is gone"
    );
    assert_eq!(read(&c, "r4", "m|4").await, zero);
    assert_eq!(write(&c, "w2", "m|j").await, zero);
    // Fenced: the candidate must beat the counter; a re-send is granted again.
    let f = [
        "e",
        "e:readers",
        "e:writer",
        "e:rwait",
        "e:rturn",
        "e:fence",
    ];
    let code = |v: &[i64]| Value::Array(v.iter().map(|i| Value::Int(*i)).collect());
    for (value, intent, cand, want) in [
        ("w", "i", "4", [2, 4]),
        ("w", "i", "4", [2, 4]),
        ("x", "j", "4", [0, 4]),
        ("x", "j", "5", [1, 4]),
    ] {
        let args = [value, "5000", intent, "", "5000", cand];
        let got = run(&c, &WRITE_ACQUIRE, &f, &args).await;
        assert_eq!(got, code(&want));
    }
    // Withdrawing an intent only deletes one's own.
    assert_eq!(
        run(&c, &INTENT_CLEAR, &["d:writer"], &["nobody"]).await,
        zero
    );
}

/// Phase-fair admission on one node: the readers that waited for a writer go before
/// the next writer, and readers that come after a waiting writer wait for it.
#[tokio::test]
async fn readers_that_waited_go_before_the_next_writer() {
    let (_cluster, c) = one_node().await;
    let (one, zero) = (Value::Int(1), Value::Int(0));
    assert_eq!(write(&c, "w1", "a|w1").await, one);
    // r1 waits for the writer that holds the lock.
    assert_eq!(read(&c, "r1", "b|r1").await, zero);
    assert_eq!(members(&c, RW[3]).await, vec!["b|r1"]);
    // The release gives r1 the turn (no wake-ups asked for here).
    let done = run(&c, &WRITE_RELEASE, &DONE, &["w1", ""]).await;
    assert_eq!(done, Value::Array(vec![one.clone(), zero.clone()]));
    assert!(members(&c, RW[3]).await.is_empty());
    assert_eq!(members(&c, RW[4]).await, vec!["b|r1"]);
    assert!(ints(&c, "PTTL", RW[4]).await > 0, "the turn expires");
    // The next writer waits for r1's turn and sets its intent ...
    assert_eq!(write(&c, "w2", "a|w2").await, zero);
    assert_eq!(ints(&c, "EXISTS", RW[2]).await, 1);
    // ... which keeps a new reader out, but not r1, whose turn it is.
    assert_eq!(read(&c, "r2", "c|r2").await, zero);
    assert_eq!(read(&c, "r1", "b|r1").await, one);
    // r1 keeps its turn until it won on a quorum and gives it up.
    assert_eq!(members(&c, RW[4]).await, vec!["b|r1"]);
    won(&c, "b|r1").await;
    assert!(members(&c, RW[4]).await.is_empty(), "r1's turn is used");
    assert_eq!(write(&c, "w2", "a|w2").await, zero, "r1 is in");
    let left = Value::Array(vec![one.clone(), zero.clone()]);
    assert_eq!(run(&c, &READ_RELEASE, &LEAVE, &["r1", ""]).await, left);
    // r2 came after w2's intent: w2 goes first, then r2's turn.
    assert_eq!(write(&c, "w2", "a|w2").await, one);
    assert_eq!(read(&c, "r2", "c|r2").await, zero);
    run(&c, &WRITE_RELEASE, &DONE, &["w2", ""]).await;
    assert_eq!(members(&c, RW[4]).await, vec!["c|r2"]);
    assert_eq!(read(&c, "r2", "c|r2").await, one);
    won(&c, "c|r2").await;
    assert_eq!(run(&c, &READ_RELEASE, &LEAVE, &["r2", ""]).await, left);
    // A writer that finds no intent promotes the readers waiting before it: r3
    // waited for an exclusive owner (whose release gives no turn).
    let set = |v: &str| {
        redis::cmd("SET")
            .arg("d")
            .arg(v)
            .arg("PX")
            .arg(5000)
            .clone()
    };
    let () = set("x").query_async(&mut c.clone()).await.expect("SET");
    assert_eq!(read(&c, "r3", "e|r3").await, zero);
    let _: i64 = redis::cmd("DEL")
        .arg("d")
        .query_async(&mut c.clone())
        .await
        .expect("DEL");
    assert_eq!(write(&c, "w3", "a|w3").await, zero, "r3 goes first");
    assert_eq!(members(&c, RW[4]).await, vec!["e|r3"]);
    // A reader that gives up leaves its place; a turn nobody uses lapses.
    assert_eq!(run(&c, &READ_WAIT_CLEAR, &RW[3..5], &["e|r3"]).await, one);
    assert_eq!(write(&c, "w3", "a|w3").await, one);
    let short = run(&c, &READ_ACQUIRE, &RW, &["r5", "60000", "f|r5", "1"]).await;
    assert_eq!(short, zero);
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    run(&c, &WRITE_RELEASE, &DONE, &["w3", ""]).await;
    assert!(members(&c, RW[4]).await.is_empty(), "r5's place lapsed");
    assert_eq!(write(&c, "w4", "a|w4").await, one);
}

/// Issue 21 (readers hold the resource): while a live reader holds `d`, the lock key
/// holds the readers marker with the longest reader's expiry, so every exclusive
/// acquisition (`SET NX`, ours or a peer's) is refused; an owner's compare-and-delete
/// never touches it; the last reader out removes it; a marker whose readers are gone
/// does not keep a writer out.
#[tokio::test]
async fn readers_keep_the_lock_key_against_exclusive_acquirers() {
    let (_cluster, c) = one_node().await;
    let (one, zero) = (Value::Int(1), Value::Int(0));
    let set_nx = |v: &str| {
        redis::cmd("SET")
            .arg("d")
            .arg(v)
            .arg("NX")
            .arg("PX")
            .arg(5000)
            .clone()
    };
    assert_eq!(read(&c, "r1", "m|1").await, one);
    assert_eq!(get(&c, RW[0]).await.as_deref(), Some(READERS_MARKER));
    let peer: Option<String> = set_nx("peer")
        .query_async(&mut c.clone())
        .await
        .expect("SET");
    assert_eq!(
        peer, None,
        "a peer's SET NX is refused while a reader holds"
    );
    // A longer reader lengthens the marker; its leaving shortens it to the others'.
    assert_eq!(
        run(&c, &READ_ACQUIRE, &RW, &["r2", "90000", "m|2", "5000"]).await,
        one
    );
    assert!(ints(&c, "PTTL", RW[0]).await > 89_000);
    let left = Value::Array(vec![one.clone(), zero.clone()]);
    assert_eq!(run(&c, &READ_RELEASE, &LEAVE, &["r2", ""]).await, left);
    let pttl = ints(&c, "PTTL", RW[0]).await;
    assert!(pttl > 50_000 && pttl <= 60_000, "{pttl}");
    // An exclusive owner's release compares its value: the marker is never its.
    let released = run(
        &c,
        &crate::scripts::exclusive::RELEASE,
        &["d"],
        &["peer", ""],
    )
    .await;
    assert_eq!(released, Value::Array(vec![zero.clone(), zero.clone()]));
    assert_eq!(write(&c, "w", "m|w").await, zero, "readers present");
    assert_eq!(get(&c, RW[0]).await.as_deref(), Some(READERS_MARKER));
    run(&c, &INTENT_CLEAR, &[RW[2]], &["m|w"]).await;
    // The last reader out removes the marker: the key is free for anyone.
    assert_eq!(run(&c, &READ_RELEASE, &LEAVE, &["r1", ""]).await, left);
    assert_eq!(ints(&c, "EXISTS", RW[0]).await, 0);
    // A marker whose readers are gone (none in the set) is pruned by the writer.
    let () = redis::cmd("SET")
        .arg("d")
        .arg(READERS_MARKER)
        .arg("PX")
        .arg(60_000)
        .query_async(&mut c.clone())
        .await
        .expect("SET");
    assert_eq!(
        write(&c, "w", "m|w").await,
        one,
        "a stale marker is no reader"
    );
    assert_eq!(get(&c, RW[0]).await.as_deref(), Some("w"));
    assert_eq!(
        read(&c, "r3", "m|3").await,
        zero,
        "a writer's value is not a marker"
    );
}

/// Issue 21 (a reader loses its turn to a failed attempt): a reader admitted on a node
/// by its turn, whose attempt then fails elsewhere and is undone there, still has its
/// turn at its next attempt; likewise its place among the waiting readers.
#[tokio::test]
async fn a_failed_read_attempt_keeps_the_readers_place() {
    let (_cluster, c) = one_node().await;
    let (one, zero) = (Value::Int(1), Value::Int(0));
    let left = Value::Array(vec![one.clone(), zero.clone()]);
    // r1 waits for w1; w1's release gives it the turn; w2 waits behind the turn.
    assert_eq!(write(&c, "w1", "a|w1").await, one);
    assert_eq!(read(&c, "r1", "b|r1").await, zero);
    run(&c, &WRITE_RELEASE, &DONE, &["w1", ""]).await;
    assert_eq!(write(&c, "w2", "a|w2").await, zero);
    // r1's attempt is admitted here, fails on the other nodes, and is undone.
    assert_eq!(read(&c, "r1a", "b|r1").await, one);
    assert_eq!(run(&c, &READ_RELEASE, &LEAVE, &["r1a", ""]).await, left);
    assert_eq!(members(&c, RW[4]).await, vec!["b|r1"], "the turn is kept");
    assert_eq!(read(&c, "r1b", "b|r1").await, one, "r1 goes before w2");
    won(&c, "b|r1").await;
    assert_eq!(run(&c, &READ_RELEASE, &LEAVE, &["r1b", ""]).await, left);
    assert_eq!(write(&c, "w2", "a|w2").await, one);
    run(&c, &WRITE_RELEASE, &DONE, &["w2", ""]).await;

    // r3 waits for an exclusive owner; admitted once it left, its attempt is undone;
    // a writer that comes next still finds r3 waiting before it.
    let () = redis::cmd("SET")
        .arg("d")
        .arg("x")
        .arg("PX")
        .arg(5000)
        .query_async(&mut c.clone())
        .await
        .expect("SET");
    assert_eq!(read(&c, "r3", "e|r3").await, zero);
    let _: i64 = redis::cmd("DEL")
        .arg("d")
        .query_async(&mut c.clone())
        .await
        .expect("DEL");
    assert_eq!(read(&c, "r3a", "e|r3").await, one);
    assert_eq!(run(&c, &READ_RELEASE, &LEAVE, &["r3a", ""]).await, left);
    assert_eq!(write(&c, "w3", "a|w3").await, zero, "r3 goes first");
    assert_eq!(members(&c, RW[4]).await, vec!["e|r3"]);
}

/// Issue 21 (a withdrawn intent comes back): a writer's intent lives for its patience,
/// not its ttl, so a late copy of its request, landing after it withdrew, keeps new
/// readers out for at most the patience.
#[tokio::test]
async fn a_late_write_acquire_revives_an_intent_only_for_its_patience() {
    let (_cluster, c) = one_node().await;
    let (one, zero) = (Value::Int(1), Value::Int(0));
    assert_eq!(read(&c, "r1", "b|r1").await, one);
    let request = ["w", "60000", "a|w", "", "300"];
    assert_eq!(run(&c, &WRITE_ACQUIRE, &RW, &request).await, zero);
    let pttl = ints(&c, "PTTL", RW[2]).await;
    assert!(
        pttl > 0 && pttl <= 300,
        "the intent lasts the patience: {pttl}"
    );
    // The writer gives up and withdraws; a late copy of its request lands after.
    assert_eq!(run(&c, &INTENT_CLEAR, &[RW[2]], &["a|w"]).await, one);
    assert_eq!(run(&c, &WRITE_ACQUIRE, &RW, &request).await, zero);
    let pttl = ints(&c, "PTTL", RW[2]).await;
    assert!(
        pttl > 0 && pttl <= 300,
        "revived for the patience only: {pttl}"
    );
    assert_eq!(read(&c, "r2", "c|r2").await, zero);
    // Past the patience on the server's clock, new readers are admitted again.
    tokio::time::sleep(std::time::Duration::from_millis(350)).await;
    assert_eq!(read(&c, "r2", "c|r2").await, one);
}

/// Issue 21 (monotone reader extension): a late, older extension of a shorter ttl,
/// landing after a newer, longer one, lowers neither the reader's expiry, nor the
/// set's, nor the readers marker's.
#[tokio::test]
async fn a_late_shorter_read_extend_lowers_nothing() {
    let (_cluster, c) = one_node().await;
    let one = Value::Int(1);
    assert_eq!(read(&c, "r1", "b|r1").await, one);
    let score = |c: MultiplexedConnection| async move {
        let s: f64 = redis::cmd("ZSCORE")
            .arg(RW[1])
            .arg("r1")
            .query_async(&mut c.clone())
            .await
            .expect("ZSCORE");
        s
    };
    let keys = [RW[1], RW[0]];
    assert_eq!(run(&c, &READ_EXTEND, &keys, &["r1", "120000"]).await, one);
    let newer = score(c.clone()).await;
    assert_eq!(run(&c, &READ_EXTEND, &keys, &["r1", "1000"]).await, one);
    assert!(
        score(c.clone()).await >= newer,
        "the reader's expiry was lowered"
    );
    for key in [RW[1], RW[0]] {
        let pttl = ints(&c, "PTTL", key).await;
        assert!(pttl > 119_000, "{key} expires in {pttl} ms");
    }
    assert_eq!(get(&c, RW[0]).await.as_deref(), Some(READERS_MARKER));
}
