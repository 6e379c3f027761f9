use super::answers::Stored;
use super::*;
use crate::scripts::READERS_MARKER;

fn at(value: &str, pttl: i64) -> Result<Stored, NodeError> {
    Ok(Stored {
        value: Some((value.to_owned(), pttl)),
        ..Stored::default()
    })
}

fn absent() -> Result<Stored, NodeError> {
    Ok(Stored::default())
}

/// The holders of a tally, as the old tests read them.
fn tally3(
    answers: Vec<(usize, Result<Stored, NodeError>)>,
) -> (Vec<Holder>, Vec<usize>, Vec<NodeError>) {
    let t = tally(answers);
    (t.holders, t.free, t.errors)
}

#[test]
fn answers_are_grouped_by_value_most_nodes_first() {
    let a = format!("w-1:{:032x}", 1);
    let b = format!("{:032x}", 2);
    let (holders, free, errors) = tally3(vec![
        (0, at(&b, 900)),
        (1, at(&a, 5_000)),
        (2, absent()),
        (3, at(&a, 4_000)),
        (4, at(&a, 4_500)),
    ]);
    assert!(errors.is_empty());
    assert_eq!(free, [2]);
    assert_eq!(
        holders,
        [
            Holder {
                label: Some("w-1".into()),
                nodes: vec![1, 3, 4],
                min_ttl: Duration::from_millis(4_000),
                readers: false,
            },
            Holder {
                label: None,
                nodes: vec![0],
                min_ttl: Duration::from_millis(900),
                readers: false,
            },
        ]
    );
}

#[test]
fn a_value_without_expiry_has_the_longest_ttl() {
    let (holders, ..) = tally3(vec![(0, at("x", -1)), (1, at("x", -1))]);
    assert_eq!(holders[0].min_ttl(), Duration::MAX);
    let (holders, ..) = tally3(vec![(0, at("x", -1)), (1, at("x", 7))]);
    assert_eq!(holders[0].min_ttl(), Duration::from_millis(7));
}

#[test]
fn the_readers_marker_is_readers_not_an_owner() {
    let (holders, ..) = tally3(vec![
        (0, at(READERS_MARKER, 800)),
        (1, at(READERS_MARKER, 900)),
    ]);
    assert!(holders[0].is_readers());
    assert_eq!((holders[0].label(), holders[0].node_count()), (None, 2));
    let (holders, ..) = tally3(vec![(0, at(&format!("w-1:{:032x}", 1), 800))]);
    assert!(!holders[0].is_readers());
}

#[test]
fn quorum_and_display() {
    let info = |holders: Vec<Holder>, free: Vec<usize>| LockInfo {
        resource: "r".into(),
        key: "p:r".into(),
        holders,
        free,
        errors: Vec::new(),
        node_count: 3,
        quorum: 2,
        readers: Vec::new(),
        writers: Vec::new(),
    };
    let two = Holder {
        label: Some("w".into()),
        nodes: vec![0, 2],
        min_ttl: Duration::from_secs(1),
        readers: false,
    };
    let held = info(vec![two.clone()], vec![1]);
    assert!(held.held_by_quorum());
    let text = held.to_string();
    assert!(
        text.starts_with("`r` (key `p:r`): held by a quorum (2 of 3 nodes needed)"),
        "{text}"
    );
    assert!(
        text.contains("\n  w: on 2 node(s) [0, 2], expires in 1s or later"),
        "{text}"
    );
    assert!(text.contains("\n  free on 1 node(s) [1]"), "{text}");
    let one = Holder {
        nodes: vec![0],
        ..two
    };
    assert!(!info(vec![one], vec![1, 2]).held_by_quorum());
    let free = info(Vec::new(), vec![0, 1, 2]);
    assert!(!free.held_by_quorum());
    assert!(free.to_string().contains(": free ("), "{free}");
}

#[test]
fn readers_and_a_waiting_writer_are_grouped_by_value() {
    let node = |readers: &[(&str, i64)], intent: Option<(&str, i64)>| {
        Ok(Stored {
            value: Some((READERS_MARKER.to_owned(), 900)),
            readers: readers.iter().map(|(r, l)| ((*r).to_owned(), *l)).collect(),
            intent: intent.map(|(i, l)| (i.to_owned(), l)),
        })
    };
    let r1 = format!("svc-a:{:032x}", 1);
    let r2 = format!("{:032x}", 2);
    let t = tally(vec![
        (0, node(&[(&r1, 900), (&r2, 400)], Some(("m|7", 120)))),
        (1, node(&[(&r1, 850)], Some(("m|7", 90)))),
        (2, absent()),
    ]);
    assert!(t.holders[0].is_readers());
    assert_eq!(t.readers.len(), 2);
    assert_eq!(t.readers[0].label(), Some("svc-a"));
    assert_eq!(t.readers[0].nodes(), [0, 1]);
    assert_eq!(t.readers[0].min_ttl(), Duration::from_millis(850));
    assert_eq!(t.readers[1].label(), None);
    assert_eq!(t.writers[0].nodes(), [0, 1]);
    assert_eq!(t.writers[0].min_ttl(), Duration::from_millis(90));
    assert_eq!(t.free, [2]);
}
