//! Each script's constructor owns its `KEYS`/`ARGV` layout: these pin, for every one,
//! how many keys and arguments it sends, and that the keys come first, in the order its
//! script reads them.

use redis::Arg;

use super::*;

/// The `EVALSHA` command of `call` as text: `(number of keys, keys, arguments)`.
fn layout(call: &Call) -> (usize, Vec<String>, Vec<String>) {
    let words: Vec<String> = call
        .cmd
        .args_iter()
        .map(|a| match a {
            Arg::Simple(bytes) => String::from_utf8_lossy(bytes).into_owned(),
            _ => "<cursor>".to_owned(),
        })
        .collect();
    assert_eq!(words[0], "EVALSHA");
    assert_eq!(words[1], call.script.get_hash());
    let n: usize = words[2].parse().expect("number of keys");
    let keys = words[3..3 + n].to_vec();
    let args = words[3 + n..].to_vec();
    (n, keys, args)
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn exclusive_scripts_send_their_keys_then_their_arguments() {
    let two = strings(&["a", "b"]);
    let fences = strings(&["a:fence", "b:fence"]);
    let cases: Vec<(Call, &[&str], &[&str])> = vec![
        (acquire_one("k", "v", 7), &["k"], &["v", "7"]),
        (acquire_one_for(&set_nx("k", "v", 7)), &["k"], &["v", "7"]),
        (
            acquire_or_queue("k", "k:waiters", "v", 7, "m", true, 9),
            &["k", "k:waiters"],
            &["v", "7", "m", "1", "9"],
        ),
        (acquire_many(&two, "v", 7), &["a", "b"], &["v", "7"]),
        (
            fenced_acquire(&two, &fences, "v", 7, 42),
            &["a", "b", "a:fence", "b:fence"],
            &["v", "7", "42"],
        ),
        (release(&two, "v", None), &["a", "b"], &["v", ""]),
        (
            release(&two, "v", Some("p:")),
            &["a", "b", "a:waiters", "b:waiters"],
            &["v", "p:"],
        ),
        (hold_release(&two, "v", 5), &["a", "b"], &["v", "5"]),
        (extend(&two, "v", 7), &["a", "b"], &["v", "7"]),
        (extend_heal(&two, "v", 7), &["a", "b"], &["v", "7"]),
        (
            wake_next("k", "k:waiters", "m", "p:"),
            &["k", "k:waiters"],
            &["m", "p:"],
        ),
        (
            wait_join("k:waiters", "m", false, 9),
            &["k:waiters"],
            &["m", "0", "9"],
        ),
    ];
    for (call, keys, args) in cases {
        let (n, k, a) = layout(&call);
        assert_eq!(n, keys.len(), "{keys:?}");
        assert_eq!(k, strings(keys));
        assert_eq!(a, strings(args));
    }
}

#[test]
fn reader_writer_and_semaphore_scripts_send_their_keys_then_their_arguments() {
    let rw = RwKeys::of("d");
    let five = ["d", "d:readers", "d:writer", "d:rwait", "d:rturn"];
    let slots = strings(&["g:permit:0", "g:permit:1"]);
    let cases: Vec<(Call, Vec<&str>, &[&str])> = vec![
        (
            read_acquire(&rw, "v", 7, "id", 3),
            five.to_vec(),
            &["v", "7", "id", "3"],
        ),
        (
            write_acquire(&rw, "v", 7, "id", "", 3, None),
            five.to_vec(),
            &["v", "7", "id", "", "3"],
        ),
        (
            write_acquire(&rw, "v", 7, "id", "p:", 3, Some(("d:fence", 42))),
            [&five[..], &["d:fence"]].concat(),
            &["v", "7", "id", "p:", "3", "42"],
        ),
        (
            read_extend("d:readers", "v", 7),
            vec!["d:readers", "d"],
            &["v", "7"],
        ),
        (
            read_release("d:readers", "v", "p:"),
            vec!["d:readers", "d", "d:writer", "d:rturn", "d:waiters"],
            &["v", "p:"],
        ),
        (
            write_release("d", "v", ""),
            vec!["d", "d:waiters", "d:rwait", "d:rturn"],
            &["v", ""],
        ),
        (intent_clear(&rw, "id"), vec!["d:writer"], &["id"]),
        (
            read_wait_clear(&rw, "id"),
            vec!["d:rwait", "d:rturn"],
            &["id"],
        ),
        (
            permit_acquire(&["g:permit:1", "g:permit:0"], "v", 7),
            vec!["g:permit:1", "g:permit:0"],
            &["v", "7"],
        ),
        (permit_taken(&slots), vec!["g:permit:0", "g:permit:1"], &[]),
        (
            inspect("d", "d:readers", "d:writer"),
            vec!["d", "d:readers", "d:writer"],
            &[],
        ),
    ];
    for (call, keys, args) in cases {
        let (n, k, a) = layout(&call);
        assert_eq!(n, keys.len(), "{keys:?}");
        assert_eq!(k, strings(&keys));
        assert_eq!(a, strings(args));
    }
}

#[test]
fn the_plain_set_nx_is_one_command() {
    let cmd = set_nx("k", "v", 7);
    let words: Vec<Vec<u8>> = cmd
        .args_iter()
        .map(|a| match a {
            Arg::Simple(b) => b.to_vec(),
            _ => Vec::new(),
        })
        .collect();
    let expected: Vec<&[u8]> = vec![b"SET", b"k", b"v", b"NX", b"PX", b"7"];
    assert_eq!(words, expected);
}
