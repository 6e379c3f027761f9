//! The lock in three steps: acquire and release, `with_lock` kept alive past its ttl,
//! and fencing tokens that let storage refuse a stale holder.
//!
//! ```sh
//! cargo run --example basic
//! ```
//!
//! It starts three local `redis-server` processes with the harness crate (`redis-server`
//! on `PATH`, or `REDIS_SERVER`); against your own nodes, give their URLs to `nodes`.

use std::time::Duration;

use tokio_redlock::{FenceGate, Redlock};
use tokio_redlock_harness::Cluster;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Three independent nodes; a lock is held when two of them (the quorum) agree.
    let cluster = Cluster::builder().nodes(3).start().await?;
    let redlock = Redlock::builder()
        .nodes(cluster.urls())
        .fencing(true)
        .build()?;

    // 1. Acquire, work within the validity, release. While it is held, nobody else
    //    gets it: a second acquisition is refused as a conflict.
    let guard = redlock.acquire("report:1", Duration::from_secs(5)).await?;
    println!(
        "locked `{}`, valid for {:?}",
        guard.resource(),
        guard.remaining_validity()
    );
    let err = redlock
        .try_acquire("report:1", Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(err.is_conflict());
    println!("a second owner is refused: {err}");
    guard.release().await?;

    // 2. Work that outlasts the ttl: with_lock extends the lock in the background (each
    //    time a third of the ttl has passed), releases it when the work ends, and drops
    //    the work if the lock is ever lost.
    let ttl = Duration::from_secs(1);
    let batches = redlock
        .with_lock("import:daily", ttl, |lease| async move {
            for batch in 1..=3 {
                tokio::time::sleep(Duration::from_millis(500)).await; // one batch of work
                println!("batch {batch} done; extended {} times", lease.extensions());
            }
            3
        })
        .await?;
    println!("{batches} batches in 1.5 s under a {ttl:?} ttl");

    // 3. Fencing: every acquisition carries a token greater than all earlier ones for
    //    the resource. Storage that remembers the highest token it saw refuses a holder
    //    that was paused past its validity and comes back with an older one.
    let first = redlock.acquire("account:7", Duration::from_secs(5)).await?;
    let old_token = first.fencing_token().ok_or("fencing is on")?;
    first.release().await?;
    let second = redlock.acquire("account:7", Duration::from_secs(5)).await?;
    let new_token = second.fencing_token().ok_or("fencing is on")?;
    println!("tokens: {old_token}, then {new_token}");

    let storage = FenceGate::new(); // in-memory; FENCE_CHECK_LUA does the same in Redis
    storage.check("account:7", new_token)?;
    let stale = storage.check("account:7", old_token).unwrap_err();
    println!("the old holder's write is refused: {stale}");
    second.release().await?;
    Ok(())
}
