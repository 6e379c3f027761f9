//! The keys of a cluster vote: every key a request names is moved into its resource's
//! hash slot, so that each script's keys, and every key kept beside a lock key, live on
//! one master.
//!
//! The requests themselves are built once, with the standalone keys (the resource name,
//! and `<key>:waiters`, `<key><fence suffix>`, the reader-writer sets
//! (`kind::SET_SUFFIXES`) and `<key>:permit:<i>` beside it), and a cluster vote rewrites the keys of its copy when
//! it sends it. A standalone node sends them as built: its keys, and so its interop with
//! other Redlock clients, do not change, and its hot path pays nothing.
//!
//! The rewrite is exact because no resource name may end with one of those suffixes
//! (`Redlock::check_request` refuses it, and the builder refuses a fence suffix that ends
//! like another): stripping the suffixes from any key a request names gives back its
//! lock key, the *base*, with nothing left to guess. The base `K` is stored as
//! [`tagged`]`(K)` (`{K}` for a plain name; `K` itself when it has a hash tag of its
//! own, so that an application can put several resources in one slot by giving them
//! one tag), and every auxiliary key is `tagged(K)` followed by its suffix, so it hashes
//! to the same slot: the hash tag lies wholly inside `tagged(K)`.
//!
//! [`tagged`] is one-to-one, so two resources never share a key on a cluster vote
//! (issue 21: `x` and `{x}` once did): a plain name (no brace) is wrapped, `{K}`; a
//! name with a non-empty tag of its own is kept as it is, unless it looks like what
//! the crate makes of another name (a wrapped plain name, or an escaped one), and a
//! name with braces but no usable tag is escaped behind a fixed tag. See [`tagged`].

use std::borrow::Cow;

use redis::cluster_routing::Slot;
use redis::{Arg, Cmd};

use crate::kind::{PERMIT_INFIX, QUEUE_SUFFIX, SET_SUFFIXES};

/// The escape mark: a stored key `{T}{=}K` stands for the name `K` (see [`tagged`]).
/// `=` as a tag is a choice, any fixed non-empty one would do.
const ESCAPE: &str = "{=}";

/// The hash tag of `key` as Redis Cluster reads it: the text between the first `{` and
/// the first `}` after it, if both are there (it may be empty: Redis then hashes the
/// whole key).
pub(crate) fn hash_tag(key: &str) -> Option<&str> {
    let open = key.find('{')?;
    let rest = &key[open + 1..];
    let close = rest.find('}')?;
    Some(&rest[..close])
}

#[cfg(test)]
fn has_tag(key: &str) -> bool {
    hash_tag(key).is_some_and(|tag| !tag.is_empty())
}

/// `P` if `key` is `{P}` with no brace in `P`: what [`tagged`] makes of a plain name.
fn wrapped(key: &str) -> Option<&str> {
    let inner = key.strip_prefix('{')?.strip_suffix('}')?;
    (!inner.is_empty() && !inner.contains(['{', '}'])).then_some(inner)
}

/// `K` if `key` is `{T}{=}K` (a tag first, then the escape mark): what [`tagged`] makes
/// of an escaped name.
fn escaped(key: &str) -> Option<&str> {
    let rest = key.strip_prefix('{')?;
    let close = rest.find('}')?;
    rest[close + 1..].strip_prefix(ESCAPE)
}

/// The key a cluster vote stores the lock key `base` under, one-to-one:
///
/// - a plain `base` (no `{` or `}`) becomes `{base}`;
/// - a `base` with a non-empty hash tag `T` stays as it is (an application may put
///   several resources in one slot by giving them one tag), unless it has the form of
///   one of the other two results, `{P}` or `{T}{=}…`: then it becomes `{T}{=}base`,
///   still in `T`'s slot;
/// - any other `base` (braces, but no non-empty tag: `a}b`, `x{}y`, `{`) becomes
///   `{=}{=}base`, in the slot of `=`.
///
/// The three results never meet: the first has exactly two braces; the second keeps
/// neither form, and the escaped ones (and the third) start with a tag followed by
/// `{=}`, with a tagged `base` behind it in the second case and an untagged one in the
/// third. [`untagged`] reads each back.
pub(crate) fn tagged(base: &str) -> Cow<'_, str> {
    if !base.contains(['{', '}']) {
        return Cow::Owned(format!("{{{base}}}"));
    }
    match hash_tag(base).filter(|tag| !tag.is_empty()) {
        Some(tag) if wrapped(base).is_some() || escaped(base).is_some() => {
            Cow::Owned(format!("{{{tag}}}{ESCAPE}{base}"))
        }
        Some(_) => Cow::Borrowed(base),
        None => Cow::Owned(format!("{ESCAPE}{ESCAPE}{base}")),
    }
}

/// The lock key whose [`tagged`] form is `stored`: the exact inverse, for the released
/// keys a cluster vote publishes to waiters.
pub(crate) fn untagged(stored: &str) -> &str {
    escaped(stored)
        .or_else(|| wrapped(stored))
        .unwrap_or(stored)
}

/// The slot a cluster vote keeps `key` (a lock key) in.
pub(crate) fn slot_of(key: &str) -> Slot {
    Slot::for_key(tagged(key).as_bytes())
}

/// How a cluster vote rewrites the keys of the requests it sends: the suffixes to strip.
#[derive(Debug, Clone)]
pub(crate) struct KeyMap {
    fence_suffix: Box<str>,
}

impl KeyMap {
    pub(crate) fn new(fence_suffix: &str) -> Self {
        Self {
            fence_suffix: fence_suffix.into(),
        }
    }

    /// `key` without the suffix it ends with, if it ends with one and something is left.
    fn strip_one<'k>(&self, key: &'k str) -> Option<&'k str> {
        let base = [QUEUE_SUFFIX, &self.fence_suffix]
            .into_iter()
            .chain(SET_SUFFIXES)
            .find_map(|s| key.strip_suffix(s))
            .or_else(|| {
                let digits = key.trim_end_matches(|c: char| c.is_ascii_digit());
                (digits.len() < key.len())
                    .then(|| digits.strip_suffix(PERMIT_INFIX))
                    .flatten()
            })?;
        (!base.is_empty()).then_some(base)
    }

    /// The lock key `key` was built from: `key` without every suffix this crate adds.
    pub(crate) fn base<'k>(&self, key: &'k str) -> &'k str {
        let mut base = key;
        while let Some(shorter) = self.strip_one(base) {
            base = shorter;
        }
        base
    }

    /// Where a cluster vote keeps `key`: its base [`tagged`], then its suffixes.
    pub(crate) fn map_key<'k>(&self, key: &'k str) -> Cow<'k, str> {
        let base = self.base(key);
        match tagged(base) {
            Cow::Borrowed(_) => Cow::Borrowed(key),
            Cow::Owned(mut t) => {
                t.push_str(&key[base.len()..]);
                Cow::Owned(t)
            }
        }
    }

    /// `cmd` with the keys it names moved to their cluster slots. Knows the commands
    /// this crate sends with keys: `EVALSHA`/`EVAL` (the `numkeys` after the script), and
    /// `SET` and `ZREM` (the first argument). Every other command names no key.
    pub(crate) fn map_cmd(&self, cmd: &Cmd) -> Cmd {
        let args: Vec<&[u8]> = cmd
            .args_iter()
            .filter_map(|a| match a {
                Arg::Simple(bytes) => Some(bytes),
                _ => None,
            })
            .collect();
        let name = args.first().copied().unwrap_or_default();
        let keys = if name.eq_ignore_ascii_case(b"EVALSHA") || name.eq_ignore_ascii_case(b"EVAL") {
            let n = args
                .get(2)
                .and_then(|n| std::str::from_utf8(n).ok())
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or(0);
            3..3 + n
        } else if name.eq_ignore_ascii_case(b"SET") || name.eq_ignore_ascii_case(b"ZREM") {
            1..2
        } else {
            0..0
        };
        let mut out = redis::cmd(&String::from_utf8_lossy(name));
        for (i, arg) in args.iter().enumerate().skip(1) {
            match std::str::from_utf8(arg) {
                Ok(key) if keys.contains(&i) => out.arg(&*self.map_key(key)),
                _ => out.arg(*arg),
            };
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> KeyMap {
        KeyMap::new(":fence")
    }

    #[test]
    fn hash_tags_as_redis_reads_them() {
        assert_eq!(hash_tag("user:{42}:cart"), Some("42"));
        assert_eq!(hash_tag("{}x"), Some(""));
        assert_eq!(hash_tag("a{b"), None);
        assert_eq!(hash_tag("a}b{c}"), Some("c"));
        assert_eq!(hash_tag("{a{b}c}"), Some("a{b"));
        assert_eq!(hash_tag("plain"), None);
    }

    #[test]
    fn a_plain_base_is_wrapped_and_one_with_a_tag_is_kept() {
        assert_eq!(tagged("payment:42"), "{payment:42}");
        assert_eq!(tagged("acct:{7}:1"), "acct:{7}:1");
        assert_eq!(tagged("кошка:🔒"), "{кошка:🔒}");
        // An empty tag is no tag (Redis would hash the whole key): escaped.
        assert_eq!(tagged("x{}y"), "{=}{=}x{}y");
        assert_eq!(tagged("{}"), "{=}{=}{}");
        assert_eq!(tagged("}abc"), "{=}{=}}abc");
        // What the crate makes of another name is escaped, in its own tag's slot.
        assert_eq!(tagged("{x}"), "{x}{=}{x}");
        assert_eq!(tagged("{x}{=}y"), "{x}{=}{x}{=}y");
        assert_eq!(tagged("{a}b}"), "{a}b}");
        for k in NAMES {
            let t = tagged(k);
            assert!(has_tag(&t), "{k} -> {t} has no tag");
            if has_tag(k) {
                assert_eq!(hash_tag(&t), hash_tag(k), "{k} -> {t} left its tag's slot");
            }
        }
    }

    /// Names chosen to trip a mapping up: braces, empty and nested tags, the escape
    /// mark, what other names map to, non-ASCII.
    const NAMES: [&str; 30] = [
        "x",
        "{x}",
        "{x}}",
        "{{x}}",
        "{x}{=}x",
        "{x}{=}{x}",
        "=",
        "{=}",
        "{=}{=}x",
        "}",
        "=}",
        "}}{}",
        "=}}}{",
        "a}b",
        "{a}b}",
        "{a}b",
        "x{}y",
        "{}",
        "{}x",
        "{",
        "a{",
        "acct:{7}:1",
        "{7}",
        "{7}:1",
        "}abc",
        "{=}}abc",
        "кошка",
        "{кошка}",
        "{к}{=}",
        "🔒{}",
    ];

    #[test]
    fn untagged_inverts_tagged() {
        for k in NAMES {
            assert_eq!(untagged(&tagged(k)), k, "{k}");
        }
        assert_eq!(untagged("acct:{7}:1"), "acct:{7}:1");
        assert_eq!(untagged("{7}"), "7");
    }

    /// Issue 21, item 2: every name over a small alphabet of the troublesome
    /// characters, up to six of them, gets a key of its own; `x`/`{x}` and `a}b`/`{a}b}`
    /// among them. Naive oracle: a map from each key back to the first name that had it.
    #[test]
    fn tagged_is_one_to_one_and_every_key_of_a_name_shares_its_slot() {
        let alphabet = ['a', '{', '}', '=', 'é'];
        let mut names = vec![String::new()];
        let mut all = Vec::new();
        for _ in 0..6 {
            names = names
                .iter()
                .flat_map(|n| alphabet.iter().map(move |c| format!("{n}{c}")))
                .collect();
            all.extend(names.iter().cloned());
        }
        all.extend(NAMES.iter().map(|n| (*n).to_owned()));
        let m = map();
        let mut seen = std::collections::HashMap::new();
        for name in &all {
            let t = tagged(name).into_owned();
            assert!(has_tag(&t), "{name} -> {t} has no tag");
            assert_eq!(untagged(&t), name, "{name} -> {t}");
            let slot = Slot::for_key(t.as_bytes());
            for suffix in ["", ":waiters", ":fence", ":readers", ":permit:3"] {
                let key = m.map_key(&format!("{name}{suffix}")).into_owned();
                assert_eq!(
                    Slot::for_key(key.as_bytes()),
                    slot,
                    "{name}{suffix} -> {key}"
                );
                if let Some(other) = seen.insert(key.clone(), format!("{name}{suffix}")) {
                    if other != format!("{name}{suffix}") {
                        panic!("`{other}` and `{name}{suffix}` share the key `{key}`");
                    }
                }
            }
        }
        assert_ne!(tagged("x"), tagged("{x}"));
        assert_ne!(tagged("a}b"), tagged("{a}b}"));
    }

    #[test]
    fn every_auxiliary_key_lands_in_its_lock_keys_slot() {
        let m = map();
        for base in ["doc", "acct:{7}:1", "x{}y", "}abc", "кошка", "a}b"] {
            let slot = Slot::for_key(m.map_key(base).as_bytes());
            assert_eq!(slot, slot_of(base), "{base}");
            // Written out, not taken from the constants: a suffix added to the crate
            // without a line here fails the check below.
            let all = [
                ":waiters",
                ":fence",
                ":readers",
                ":writer",
                ":rwait",
                ":rturn",
                ":permit:0",
                ":permit:12",
            ];
            for set in crate::kind::SET_SUFFIXES {
                assert!(all.contains(&set), "{set} is not checked here");
            }
            for suffix in all {
                let key = format!("{base}{suffix}");
                let mapped = m.map_key(&key);
                assert_eq!(m.base(&key), base, "{key}");
                assert!(mapped.ends_with(suffix), "{mapped}");
                assert_eq!(Slot::for_key(mapped.as_bytes()), slot, "{key} -> {mapped}");
            }
        }
        assert_eq!(m.map_key("doc:readers"), "{doc}:readers");
        assert_eq!(m.map_key("gpu:permit:3"), "{gpu}:permit:3");
        assert_eq!(m.map_key("acct:{7}:1:fence"), "acct:{7}:1:fence");
        // A suffix alone is no base.
        assert_eq!(m.base(":fence"), ":fence");
    }

    #[test]
    fn a_custom_fence_suffix_is_stripped() {
        let m = KeyMap::new(".token");
        assert_eq!(m.map_key("job.token"), "{job}.token");
        assert_eq!(m.map_key("job:fence"), "{job:fence}");
    }

    fn args(cmd: &Cmd) -> Vec<String> {
        cmd.args_iter()
            .filter_map(|a| match a {
                Arg::Simple(b) => Some(String::from_utf8_lossy(b).into_owned()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn commands_get_their_keys_mapped_and_nothing_else() {
        let m = map();
        let mut eval = redis::cmd("EVALSHA");
        eval.arg("abc")
            .arg(2)
            .arg("doc")
            .arg("doc:fence")
            .arg("doc")
            .arg(5);
        assert_eq!(
            args(&m.map_cmd(&eval)),
            ["EVALSHA", "abc", "2", "{doc}", "{doc}:fence", "doc", "5"]
        );
        let mut set = redis::cmd("SET");
        set.arg("doc").arg("v").arg("NX").arg("PX").arg(100);
        assert_eq!(
            args(&m.map_cmd(&set)),
            ["SET", "{doc}", "v", "NX", "PX", "100"]
        );
        let mut zrem = redis::cmd("ZREM");
        zrem.arg("doc:waiters").arg("doc");
        assert_eq!(args(&m.map_cmd(&zrem)), ["ZREM", "{doc}:waiters", "doc"]);
        let info = redis::cmd("INFO");
        assert_eq!(args(&m.map_cmd(&info)), ["INFO"]);
    }
}
