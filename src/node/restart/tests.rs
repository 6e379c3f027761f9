use super::*;

const PERIOD: Duration = Duration::from_secs(60);

fn seen(run_id: &str, uptime: u64, durable: bool, marker: Option<bool>) -> Seen {
    Seen {
        run_id: Some(run_id.into()),
        uptime: Duration::from_secs(uptime),
        durable,
        marker,
    }
}

fn knew(run_id: &str, marked: bool) -> Memory {
    Memory {
        run_id: Some(run_id.into()),
        marked,
        unwritable: false,
    }
}

fn secs(s: u64) -> Option<Duration> {
    Some(Duration::from_secs(s))
}

#[test]
fn a_restart_without_the_marker_is_lost_data_even_when_durable() {
    let j = judge(&knew("a", true), &seen("b", 5, true, Some(false)), PERIOD);
    assert_eq!(j.quarantine, secs(55));
    assert_eq!(j.note, Some(Note::Lost));
    // Written once the quarantine is over, not before: another manager must not take
    // the marker for proof while the node still sits out.
    assert_eq!(j.mark_after, secs(55));
    // Also when this manager never saw the marker in the earlier run: nothing proves the
    // data survived.
    let j = judge(&knew("a", false), &seen("b", 5, true, Some(false)), PERIOD);
    assert_eq!(j.quarantine, secs(55));
}

#[test]
fn a_restart_with_the_marker_votes_at_once_when_durable() {
    let j = judge(&knew("a", true), &seen("b", 0, true, Some(true)), PERIOD);
    assert_eq!(j.quarantine, None);
    assert_eq!(j.mark_after, None);
    assert_eq!(j.note, None);
}

#[test]
fn a_memory_node_is_judged_by_uptime_as_before() {
    for marker in [Some(true), Some(false), None] {
        let j = judge(&knew("a", true), &seen("b", 10, false, marker), PERIOD);
        assert_eq!(j.quarantine, secs(50), "{marker:?}");
    }
    let j = judge(
        &Memory::default(),
        &seen("a", 60, false, Some(false)),
        PERIOD,
    );
    assert_eq!(j.quarantine, None);
    assert_eq!(j.mark_after, Some(Duration::ZERO));
}

#[test]
fn first_contact_trusts_the_configuration_but_marks_only_after_the_period() {
    let j = judge(&Memory::default(), &seen("a", 3, true, Some(false)), PERIOD);
    assert_eq!(j.quarantine, None);
    assert_eq!(j.note, None);
    assert_eq!(j.mark_after, secs(57));
    // A node up for longer than the period is marked at once.
    let j = judge(
        &Memory::default(),
        &seen("a", 600, true, Some(false)),
        PERIOD,
    );
    assert_eq!(j.mark_after, Some(Duration::ZERO));
}

#[test]
fn a_reconnect_in_the_same_run_before_the_marker_changes_nothing() {
    let j = judge(&knew("a", false), &seen("a", 3, true, Some(false)), PERIOD);
    assert_eq!(j.quarantine, None);
    assert_eq!(j.note, None);
}

#[test]
fn a_marker_gone_within_a_run_is_a_flush_and_costs_a_whole_period() {
    // Uptime says nothing about when a flush happened: the period counts from now.
    let j = judge(
        &knew("a", true),
        &seen("a", 86_400, true, Some(false)),
        PERIOD,
    );
    assert_eq!(j.quarantine, Some(PERIOD));
    assert_eq!(j.note, Some(Note::Flushed));
    assert_eq!(j.mark_after, Some(PERIOD));
}

#[test]
fn an_unreadable_or_unwritable_marker_degrades_to_the_configuration() {
    let j = judge(&knew("a", true), &seen("b", 0, true, None), PERIOD);
    assert_eq!(j.quarantine, None);
    assert_eq!(j.note, Some(Note::Unreadable));
    assert_eq!(j.mark_after, None);
    let mut memory = knew("a", false);
    memory.unwritable = true;
    let j = judge(&memory, &seen("b", 0, true, Some(false)), PERIOD);
    assert_eq!(j.quarantine, None);
    assert_eq!(j.note, Some(Note::Unproven));
}

/// Against a naive oracle over many cases: never shorter than the uptime rule unless
/// the node proves its data (durable with the marker, or the documented degradations),
/// and never writes the marker before the quarantine ends or the period has passed
/// since the node started.
#[test]
fn never_shorter_than_the_uptime_rule_without_proof() {
    for uptime in [0, 1, 30, 59, 60, 61, 1_000] {
        for durable in [false, true] {
            for marker in [Some(true), Some(false), None] {
                for (prev, marked, unwritable) in [
                    (None, false, false),
                    (Some("a"), false, false),
                    (Some("a"), true, false),
                    (Some("a"), false, true),
                ] {
                    let memory = Memory {
                        run_id: prev.map(str::to_owned),
                        marked,
                        unwritable,
                    };
                    for now in ["a", "b"] {
                        let s = seen(now, uptime, durable, marker);
                        let j = judge(&memory, &s, PERIOD);
                        let young = PERIOD.saturating_sub(Duration::from_secs(uptime));
                        let proven = durable
                            && (marker == Some(true)
                                || marker.is_none()
                                || prev.is_none()
                                || (prev == Some(now) && !marked)
                                || (prev != Some(now) && unwritable));
                        let q = j.quarantine.unwrap_or_default();
                        if !proven {
                            assert!(q >= young, "{memory:?} {s:?}: {j:?}");
                        }
                        if let Some(m) = j.mark_after {
                            assert!(m >= q && m >= young, "{memory:?} {s:?}: {j:?}");
                            assert_eq!(marker, Some(false));
                        }
                    }
                }
            }
        }
    }
}
