//! A whole Redis Cluster as one vote (see `cluster_vote.rs`): every script's keys share
//! one slot, whatever the names (keys of every master, `acquire_many` in one slot, names
//! with braces or non-ASCII characters, names that wrap one another).

use tokio_redlock::{Error, Redlock};

use crate::cluster_vote::{
    builder, cluster_get, deployment, gone_from_cluster, on_cluster, one_per_master, redis_cluster,
    refused, NODE_TIMEOUT, TTL,
};

#[tokio::test]
async fn keys_of_every_master_and_acquire_many_in_one_slot() {
    let (nodes, rc) = deployment(2).await;
    let redlock = builder(&nodes, &rc).build().expect("valid config");
    // Standalone node 0 down: every grant below needs the cluster vote's yes.
    nodes.node(0).kill().await.expect("kill");
    let resources = one_per_master(&rc);
    assert_eq!(resources.len(), 3);
    let mut guards = Vec::new();
    for r in &resources {
        guards.push(redlock.try_acquire(r, TTL).await.expect("lock"));
        // Asked of the master `master_of` names: there, or the wait times out.
        on_cluster(&rc, &format!("{{{r}}}")).await;
    }
    for g in guards {
        g.release().await.expect("release");
    }

    // Different slots: refused before anything is sent, with what to do.
    let split = [resources[0].as_str(), resources[1].as_str()];
    match redlock.acquire_many(&split, TTL).await {
        Err(Error::Config(m)) => assert!(m.contains("hash tag"), "{m}"),
        other => panic!("expected a config error, got {other:?}"),
    }
    // One hash tag: one slot, all or none, and stored as named.
    let many = redlock
        .acquire_many(&["{acct}:1", "{acct}:2"], TTL)
        .await
        .expect("lock both");
    on_cluster(&rc, "{acct}:1").await;
    on_cluster(&rc, "{acct}:2").await;
    let err = redlock.try_acquire("{acct}:2", TTL).await.unwrap_err();
    assert!(refused(&err), "{err}");
    many.release().await.expect("release");
    gone_from_cluster(&rc, "{acct}:1").await;
}

/// Names with braces, an empty tag or non-ASCII characters: every script's keys still
/// share a slot on the cluster (a fenced acquire sends the lock key and its counter
/// together, a read lock three keys), where Redis would refuse them with CROSSSLOT.
#[tokio::test]
async fn unusual_names_keep_each_scripts_keys_in_one_slot() {
    let rc = redis_cluster().await;
    let fenced = Redlock::builder()
        .cluster_node(rc.seed_urls())
        .fencing(true)
        .retry_count(0)
        .node_timeout(NODE_TIMEOUT)
        .build()
        .expect("valid config");
    let names = [
        ("}weird", "{=}{=}}weird"),
        ("x{}y", "{=}{=}x{}y"),
        ("a}b", "{=}{=}a}b"),
        ("{x}", "{x}{=}{x}"),
        ("{a}b}", "{a}b}"),
        ("кошка:🔒", "{кошка:🔒}"),
        ("user:{42}:cart", "user:{42}:cart"),
    ];
    for (name, stored) in names {
        let guard = fenced.try_acquire(name, TTL).await.expect(name);
        assert!(guard.fencing_token().is_some());
        assert!(
            cluster_get(&rc, stored).await.is_some(),
            "{name} -> {stored}"
        );
        let counter = format!("{stored}:fence");
        assert!(cluster_get(&rc, &counter).await.is_some(), "{counter}");
        guard.release().await.expect("release");
        let reader = fenced.lock(name).ttl(TTL).read().try_acquire().await;
        reader.expect("read lock").release().await.expect("release");
    }
}

/// Issue 21, item 2: names that once shared every key on a cluster vote (`x` and `{x}`
/// were both stored as `{x}`, `a}b` and `{a}b}` as `{a}b}`) are independent locks:
/// each is granted while the other is held, and each keeps its own fencing counter.
#[tokio::test]
async fn names_that_wrap_one_another_are_independent_locks_on_a_cluster_vote() {
    let rc = redis_cluster().await;
    let fenced = Redlock::builder()
        .cluster_node(rc.seed_urls())
        .fencing(true)
        .retry_count(0)
        .node_timeout(NODE_TIMEOUT)
        .build()
        .expect("valid config");
    for (a, b) in [
        ("x", "{x}"),
        ("a}b", "{a}b}"),
        ("=}", "}"),
        ("{}", "{=}{=}{}"),
    ] {
        let first = fenced.try_acquire(a, TTL).await.expect(a);
        let second = fenced.try_acquire(b, TTL).await.unwrap_or_else(|e| {
            panic!("`{b}` refused while only `{a}` is held: {e}");
        });
        assert_eq!(first.fencing_token(), Some(1), "{a}");
        assert_eq!(second.fencing_token(), Some(1), "{b}: a counter of its own");
        second.release().await.expect("release");
        // Releasing one leaves the other held.
        let again = fenced.try_acquire(a, TTL).await;
        assert!(again.is_err(), "`{a}` granted twice");
        first.release().await.expect("release");
    }
}
