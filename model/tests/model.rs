//! Issue 22: the crate's own scripts under every delivery order. The bound is
//! `REDLOCK_MODEL_BOUND` (small unless `large`); each run prints its size and time, and
//! each counterexample its story (`--nocapture`).

use tokio_redlock::script_source;
use tokio_redlock_model::check::{check, Bound, Outcome};
use tokio_redlock_model::model::Kind;
use tokio_redlock_model::model::{
    Config, BELIEF_IS_BACKED, KEYS_EXPIRE, NO_TWO_HOLDERS, SOMEONE_HOLDS, TOKENS_INCREASE,
};

const SAFETY: [&str; 4] = [
    NO_TWO_HOLDERS,
    BELIEF_IS_BACKED,
    TOKENS_INCREASE,
    KEYS_EXPIRE,
];

fn assert_safe(out: &Outcome) {
    for property in SAFETY {
        if let Some(story) = out.violated(property) {
            panic!("violated: {property}\n{story}");
        }
    }
    assert!(
        out.violated(SOMEONE_HOLDS).is_some(),
        "no client ever held: the model is vacuous"
    );
}

fn assert_found(out: &Outcome, property: &str) {
    let story = out.violated(property);
    assert!(
        story.is_some(),
        "the checker did not find a violation of: {property}"
    );
    println!("== {property}\n{}", story.unwrap_or_default());
}

/// The exclusive lock with the crate's scripts: acquire, extend (with a shorter and a
/// longer ttl, in any order: the crate's EXTEND, monotone since issue 21, never lowers
/// an expiry), release, give up.
#[test]
fn exclusive_lock_is_safe() {
    let out = check("exclusive", Config::exclusive(Bound::from_env(), &[4, 8]));
    assert_safe(&out);
}

#[test]
fn fenced_tokens_increase() {
    assert_safe(&check("fenced", Config::fenced(Bound::from_env())));
}

#[test]
fn permits_are_never_oversold() {
    assert_safe(&check("permits", Config::permits(Bound::from_env())));
}

/// The long run: every clean model above at the large bound (depth first, two steps
/// deeper, a second attempt), whatever `REDLOCK_MODEL_BOUND` says, and the exclusive
/// lock on 5 nodes: `REDLOCK_MODEL_TIMEOUT=secs cargo test -p tokio-redlock-model --
/// --ignored large_bound --nocapture` (the timeout caps each run). See
/// docs/safety-suite.md for its size.
#[test]
#[ignore = "the long run, by hand"]
fn large_bound() {
    let large = Bound::Large;
    let mut runs = vec![
        ("exclusive", Config::exclusive(large, &[4, 8])),
        ("5 nodes", Config::five_nodes(large)),
        ("fenced", Config::fenced(large)),
        ("permits", Config::permits(large)),
        ("read-write", Config::read_write(large)),
    ];
    let one_reader_two_writers = Config {
        clients: 3,
        ..Config::read_write(large)
    };
    runs.push(("read-write, 1 reader 2 writers", one_reader_two_writers));
    let fenced_writers = Config {
        kind: Kind::ReadWrite {
            readers: 0,
            exclusives: 0,
        },
        fenced_writers: true,
        ..Config::read_write(large)
    };
    runs.push(("read-write, fenced writers", fenced_writers));
    runs.push(("restart, quarantined", Config::restarts(large)));
    runs.push(("healing, with a restart", Config::healing(large)));
    runs.push(("lifetimes", Config::lifetimes(large)));
    for (name, cfg) in runs {
        assert_safe(&check(&format!("{name}, large"), cfg));
    }
}

/// The pre-fix EXTEND (compare, then PEXPIRE whatever the key's expiry): a shorter
/// extension that lands after a longer one lowers the expiry under the owner's belief,
/// and a second client acquires while the first still believes. The text is the
/// crate's `lower_extend` mutant (the EXTEND of main before issue 21).
///
/// In two searches, both breadth first (so each story is a shortest one): the owner
/// alone, until its belief is no longer backed by a quorum; then, from that state, with
/// a second client and time passing (a tick may jump up to 5 ms), until it acquires.
#[test]
fn lowering_extend_gives_two_holders() {
    let mut cfg = Config::exclusive(Bound::Small, &[4, 8]);
    cfg.scripts.extend = script_source::mutant("lower_extend").expect("lower_extend");
    (cfg.clients, cfg.max_steps, cfg.stop_at) = (1, None, Some(BELIEF_IS_BACKED));
    let lowered = check("lowering extend, the owner alone", cfg.clone());
    assert_found(&lowered, BELIEF_IS_BACKED);
    let mut start = lowered.end(BELIEF_IS_BACKED).expect("found").clone();
    start.clients.push(Default::default());
    cfg.clients = 2;
    cfg.start = Some(start);
    (cfg.max_skew, cfg.horizon, cfg.max_tick, cfg.releases) = (0, 5, 5, false);
    cfg.stop_at = Some(NO_TWO_HOLDERS);
    let out = check("lowering extend, then a second client", cfg);
    assert_found(&out, NO_TWO_HOLDERS);
}

/// The first search above, on the crate's EXTEND (monotone since issue 21): the owner
/// alone, 10 steps deep, past the 9 of the lowering's story, keeps its belief backed.
/// (The second, with two clients, is `exclusive_lock_is_safe`.)
#[test]
fn monotone_extend_is_safe() {
    let alone = Config {
        clients: 1,
        max_steps: Some(10),
        ..Config::exclusive(Bound::from_env(), &[4, 8])
    };
    assert_safe(&check("monotone extend, owner alone", alone));
}

/// `plain_del`: a release that deletes whoever holds the key. A late undo deletes the
/// next owner's key, and a third acquisition gets in.
#[test]
fn mutant_plain_del_is_caught() {
    let mut cfg = Config::exclusive(Bound::Small, &[]);
    cfg.scripts.release = script_source::mutant("plain_del").expect("plain_del");
    (cfg.attempts, cfg.max_skew, cfg.horizon, cfg.max_steps) = (2, 0, 0, None);
    cfg.stop_at = Some(NO_TWO_HOLDERS);
    assert_found(&check("plain_del", cfg), NO_TWO_HOLDERS);
}

/// `incr_max`: each node INCRs its own counter and the token is the highest of the
/// quorum's; counters drift apart, and a later acquisition gets no greater token.
#[test]
fn mutant_incr_max_is_caught() {
    let mut cfg = Config::fenced(Bound::Small);
    cfg.scripts.fenced = script_source::mutant("incr_max").expect("incr_max");
    cfg.token_from_counters = true;
    // Its shortest story has 13 steps: depth first finds one in seconds.
    (cfg.max_skew, cfg.horizon, cfg.depth_first, cfg.max_steps) = (0, 0, true, None);
    cfg.stop_at = Some(TOKENS_INCREASE);
    assert_found(&check("incr_max", cfg), TOKENS_INCREASE);
}

/// `semaphore_count`: a permit won on a quorum of grants of any slot, each node counting
/// its own holders: three clients hold two permits.
#[test]
fn mutant_semaphore_count_is_caught() {
    let mut cfg = Config::permits(Bound::Small);
    cfg.count_any_slot = true;
    (cfg.max_skew, cfg.horizon, cfg.max_steps) = (0, 0, None);
    cfg.stop_at = Some(NO_TWO_HOLDERS);
    assert_found(&check("semaphore_count", cfg), NO_TWO_HOLDERS);
}

/// `quorum_half`: half the nodes (1 of 3) make a "quorum", which is no majority: two
/// clients each win on a node of their own.
#[test]
fn mutant_quorum_half_is_caught() {
    let mut cfg = Config::exclusive(Bound::Small, &[]);
    cfg.quorum_half = true;
    (cfg.max_skew, cfg.horizon, cfg.max_steps) = (0, 0, None);
    cfg.stop_at = Some(NO_TWO_HOLDERS);
    assert_found(&check("quorum_half", cfg), NO_TWO_HOLDERS);
}

/// The reader-writer lock with the crate's scripts: a reader and a writer; two writers;
/// a reader and an exclusive owner of the same key (kept out by the readers marker).
#[test]
fn readers_and_writers_are_safe() {
    let cfg = Config::read_write(Bound::from_env());
    assert_safe(&check("read-write", cfg.clone()));
    let writers = Config {
        kind: Kind::ReadWrite {
            readers: 0,
            exclusives: 0,
        },
        ..cfg.clone()
    };
    assert_safe(&check("read-write, two writers", writers));
    let exclusive = Config {
        kind: Kind::ReadWrite {
            readers: 1,
            exclusives: 1,
        },
        ..cfg
    };
    assert_safe(&check(
        "read-write, a reader and an exclusive owner",
        exclusive,
    ));
}

/// Fenced writers (`lock_checked` on a reader-writer lock): two of them, tokens from
/// the lock's counter through `WRITE_ACQUIRE`.
#[test]
fn fenced_writers_tokens_increase() {
    let cfg = Config {
        kind: Kind::ReadWrite {
            readers: 0,
            exclusives: 0,
        },
        fenced_writers: true,
        attempts: 2,
        ..Config::read_write(Bound::from_env())
    };
    assert_safe(&check("read-write, fenced writers", cfg));
}

/// The fenced `WRITE_ACQUIRE` without its stale-candidate check (the crate's text, that
/// line cut): a writer whose candidate is not above the counter is granted, and its
/// token is not above an earlier writer's.
#[test]
fn a_write_without_the_stale_check_is_caught() {
    let text = script_source::script("WRITE_ACQUIRE").expect("WRITE_ACQUIRE");
    let cut = "if fenced and counter >= cand then return answer(FENCE_STALE) end";
    assert!(
        text.contains(cut),
        "the cut no longer applies to WRITE_ACQUIRE"
    );
    let mut cfg = Config {
        kind: Kind::ReadWrite {
            readers: 0,
            exclusives: 0,
        },
        fenced_writers: true,
        attempts: 2,
        ..Config::read_write(Bound::Small)
    };
    cfg.scripts.write_acquire = Box::leak(text.replacen(cut, "", 1).into_boxed_str());
    (cfg.max_skew, cfg.horizon, cfg.max_steps) = (0, 0, None);
    cfg.stop_at = Some(TOKENS_INCREASE);
    assert_found(
        &check("write without the stale check", cfg),
        TOKENS_INCREASE,
    );
}

/// `read_beside_writer`: `READ_ACQUIRE` without its check of the lock key's holder
/// admits a reader while the writer holds.
#[test]
fn mutant_read_beside_writer_is_caught() {
    let mut cfg = Config::read_write(Bound::Small);
    cfg.scripts.read_acquire = script_source::mutant("read_beside_writer").expect("mutant");
    (cfg.max_skew, cfg.horizon, cfg.max_steps) = (0, 0, None);
    cfg.stop_at = Some(NO_TWO_HOLDERS);
    assert_found(&check("read_beside_writer", cfg), NO_TWO_HOLDERS);
}

/// `write_beside_readers`: `WRITE_ACQUIRE` without its count of the live readers grants
/// a writer while a reader holds.
#[test]
fn mutant_write_beside_readers_is_caught() {
    let mut cfg = Config::read_write(Bound::Small);
    cfg.scripts.write_acquire = script_source::mutant("write_beside_readers").expect("mutant");
    (cfg.max_skew, cfg.horizon, cfg.max_steps) = (0, 0, None);
    cfg.stop_at = Some(NO_TWO_HOLDERS);
    assert_found(&check("write_beside_readers", cfg), NO_TWO_HOLDERS);
}

/// The exclusive lock whose extensions heal (the crate's default): a missing key is set
/// again by the owner's extension (and by a late copy of it, after the release).
#[test]
fn healing_extensions_are_safe() {
    assert_safe(&check("healing", Config::healing(Bound::from_env())));
}

/// A node restarts without its data, behind the restart quarantine: safe.
#[test]
fn restart_behind_quarantine_is_safe() {
    assert_safe(&check(
        "restart, quarantined",
        Config::restarts(Bound::from_env()),
    ));
}

/// The same restart without the quarantine: the node votes at once for a second owner
/// while the first still believes (the known-unsafe restart of docs/safety.md).
#[test]
fn restart_without_quarantine_is_caught() {
    let mut cfg = Config::restarts(Bound::Small);
    (cfg.quarantine, cfg.max_skew, cfg.horizon, cfg.max_steps) = (None, 0, 0, None);
    cfg.releases = false;
    cfg.stop_at = Some(NO_TWO_HOLDERS);
    assert_found(&check("restart, no quarantine", cfg), NO_TWO_HOLDERS);
}

/// A quarantine shorter than the ttl: the lost key would still have been live when the
/// node votes again.
#[test]
fn too_short_a_quarantine_is_caught() {
    let mut cfg = Config::restarts(Bound::Small);
    (cfg.quarantine, cfg.max_skew, cfg.horizon) = (Some(1), 0, 1);
    (cfg.max_steps, cfg.releases) = (None, false);
    cfg.stop_at = Some(NO_TWO_HOLDERS);
    assert_found(
        &check("restart, quarantine 1 ms of ttl 4", cfg),
        NO_TWO_HOLDERS,
    );
}

/// Under a late-delivery bound, no key, readers marker, intent or reader place outlives
/// its last holder's ttl (or patience) plus the bound.
#[test]
fn keys_expire_in_time() {
    assert_safe(&check("lifetimes", Config::lifetimes(Bound::from_env())));
}

/// The property bites: an EXTEND that keeps the key 1 ms longer than asked (the crate's
/// text, with `ARGV[2] + 1` for `ARGV[2]`) is caught.
#[test]
fn an_extension_past_its_ttl_is_caught() {
    let mut cfg = Config::lifetimes(Bound::Small);
    let extend = script_source::script("EXTEND").expect("EXTEND");
    let longer = extend.replacen("raise(key, ARGV[2])", "raise(key, ARGV[2] + 1)", 1);
    assert_ne!(longer, extend, "the cut no longer applies to EXTEND");
    cfg.scripts.extend = Box::leak(longer.into_boxed_str());
    // The owner alone, extending by 4 ms: a copy landing 1 ms late keeps the key to
    // 6 ms after its sending, 1 ms past its deadline.
    (cfg.kind, cfg.clients, cfg.extend_ttls) = (Kind::Exclusive, 1, vec![4]);
    cfg.heal = false;
    cfg.max_steps = Some(8);
    cfg.stop_at = Some(KEYS_EXPIRE);
    assert_found(&check("extend past its ttl", cfg), KEYS_EXPIRE);
}
