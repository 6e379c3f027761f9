//! One node's keyspace in memory, and the Redis commands the crate's scripts call on it.
//!
//! Expiry runs on the node's own clock (`now`, in ms) with Redis's rule: a key whose
//! expiry is `at` still exists at `now == at` and is gone once `now > at`. The keyspace is
//! a `BTreeMap`, so a node's state hashes and compares the same whatever order it was
//! built in, as the model checker needs. Sorted-set scores are whole numbers: every
//! score the scripts write is a time in ms or µs.

use std::collections::BTreeMap;

/// A Redis reply, as a command or a script returns it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reply {
    /// An integer reply.
    Int(i64),
    /// A bulk string.
    Bulk(String),
    /// A nil bulk (Lua `false`).
    Nil,
    /// An array of replies.
    Array(Vec<Reply>),
    /// A status reply (`+OK`).
    Status(String),
    /// An error reply, or an error raised in a script.
    Error(String),
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reply::Int(i) => write!(f, "{i}"),
            Reply::Bulk(s) => write!(f, "{s:?}"),
            Reply::Nil => write!(f, "nil"),
            Reply::Status(s) => write!(f, "+{s}"),
            Reply::Error(e) => write!(f, "-{e}"),
            Reply::Array(items) => {
                let parts: Vec<String> = items.iter().map(ToString::to_string).collect();
                write!(f, "[{}]", parts.join(", "))
            }
        }
    }
}

/// What a key holds.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Data {
    /// A string.
    Str(String),
    /// A sorted set: member to score.
    Zset(BTreeMap<String, i64>),
}

/// A key's data and its expiry on the node's clock (`None`: persistent).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Entry {
    /// What the key holds.
    pub data: Data,
    /// Its expiry on the node's clock (ms).
    pub expires: Option<u64>,
}

/// One node's keys.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Keyspace {
    /// Every key, expired ones purged at each tick and command.
    pub keys: BTreeMap<String, Entry>,
}

const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";

fn err(msg: &str) -> Reply {
    Reply::Error(format!("ERR {msg}"))
}

fn int(arg: &str) -> Result<i64, Reply> {
    arg.parse()
        .map_err(|_| err("value is not an integer or out of range"))
}

fn score(arg: &str) -> Result<i64, Reply> {
    match arg {
        "-inf" => Ok(i64::MIN),
        "+inf" | "inf" => Ok(i64::MAX),
        _ => arg
            .parse::<f64>()
            .map(|f| f as i64)
            .map_err(|_| err("value is not a valid float")),
    }
}

impl Keyspace {
    /// Drops every key whose expiry has passed at `now`: what a read would see anyway, done
    /// eagerly so that equal keyspaces hash alike.
    pub fn purge(&mut self, now: u64) {
        self.keys
            .retain(|_, e| e.expires.is_none_or(|at| now <= at));
    }

    /// The string at `key`, if it exists at `now`.
    pub fn string(&self, key: &str, now: u64) -> Option<(&str, Option<u64>)> {
        let e = self.live(key, now)?;
        match &e.data {
            Data::Str(s) => Some((s, e.expires)),
            Data::Zset(_) => None,
        }
    }

    /// The score of `member` in the sorted set at `key`, if both exist at `now`.
    pub fn score(&self, key: &str, member: &str, now: u64) -> Option<i64> {
        match &self.live(key, now)?.data {
            Data::Zset(z) => z.get(member).copied(),
            Data::Str(_) => None,
        }
    }

    fn live(&self, key: &str, now: u64) -> Option<&Entry> {
        self.keys
            .get(key)
            .filter(|e| e.expires.is_none_or(|at| now <= at))
    }

    fn zset(&mut self, key: &str, now: u64) -> Result<Option<&mut BTreeMap<String, i64>>, Reply> {
        self.purge(now);
        match self.keys.get_mut(key) {
            None => Ok(None),
            Some(Entry {
                data: Data::Zset(z),
                ..
            }) => Ok(Some(z)),
            Some(_) => Err(Reply::Error(WRONGTYPE.into())),
        }
    }

    /// Runs one command at node time `now` (ms). Unknown commands are an error reply, so a
    /// script that starts calling one fails loudly in the model instead of passing.
    pub fn run(&mut self, now: u64, args: &[String]) -> Reply {
        self.purge(now);
        let name = args
            .first()
            .map(|a| a.to_ascii_uppercase())
            .unwrap_or_default();
        let a: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
        match self.command(now, &name, &a) {
            Ok(r) | Err(r) => r,
        }
    }

    fn command(&mut self, now: u64, name: &str, a: &[&str]) -> Result<Reply, Reply> {
        let arity = |n: usize| {
            if a.len() < n {
                Err(err(&format!("wrong number of arguments for '{name}'")))
            } else {
                Ok(())
            }
        };
        match name {
            "GET" => {
                arity(1)?;
                match self.keys.get(a[0]) {
                    None => Ok(Reply::Nil),
                    Some(Entry {
                        data: Data::Str(s), ..
                    }) => Ok(Reply::Bulk(s.clone())),
                    Some(_) => Err(Reply::Error(WRONGTYPE.into())),
                }
            }
            "SET" => {
                arity(2)?;
                let (mut nx, mut xx, mut px) = (false, false, None);
                let mut i = 2;
                while i < a.len() {
                    match a[i].to_ascii_uppercase().as_str() {
                        "NX" => nx = true,
                        "XX" => xx = true,
                        "PX" => {
                            let ms = int(a.get(i + 1).ok_or_else(|| err("syntax error"))?)?;
                            if ms <= 0 {
                                return Err(err("invalid expire time in 'set' command"));
                            }
                            px = Some(now + ms as u64);
                            i += 1;
                        }
                        _ => return Err(err("syntax error")),
                    }
                    i += 1;
                }
                let exists = self.keys.contains_key(a[0]);
                if (nx && exists) || (xx && !exists) {
                    return Ok(Reply::Nil);
                }
                let entry = Entry {
                    data: Data::Str(a[1].to_owned()),
                    expires: px,
                };
                self.keys.insert(a[0].to_owned(), entry);
                Ok(Reply::Status("OK".into()))
            }
            "PEXPIRE" => {
                arity(2)?;
                let ms = int(a[1])?;
                let Some(e) = self.keys.get_mut(a[0]) else {
                    return Ok(Reply::Int(0));
                };
                let at = now as i64 + ms;
                // Redis 7's options; a persistent key counts as an infinite expiry.
                let current = e.expires.map_or(i64::MAX, |x| x as i64);
                let allowed = match a.get(2).map(|o| o.to_ascii_uppercase()).as_deref() {
                    None => true,
                    Some("NX") => e.expires.is_none(),
                    Some("XX") => e.expires.is_some(),
                    Some("GT") => at > current,
                    Some("LT") => at < current,
                    Some(_) => return Err(err("Unsupported option")),
                };
                if !allowed {
                    return Ok(Reply::Int(0));
                }
                if at <= now as i64 {
                    self.keys.remove(a[0]);
                } else {
                    e.expires = Some(at as u64);
                }
                Ok(Reply::Int(1))
            }
            "PTTL" => {
                arity(1)?;
                Ok(Reply::Int(match self.keys.get(a[0]) {
                    None => -2,
                    Some(Entry { expires: None, .. }) => -1,
                    Some(Entry {
                        expires: Some(at), ..
                    }) => (*at - now) as i64,
                }))
            }
            "DEL" => {
                arity(1)?;
                Ok(Reply::Int(
                    a.iter().filter(|k| self.keys.remove(**k).is_some()).count() as i64,
                ))
            }
            "EXISTS" => {
                arity(1)?;
                Ok(Reply::Int(
                    a.iter().filter(|k| self.keys.contains_key(**k)).count() as i64,
                ))
            }
            "INCR" => {
                arity(1)?;
                let entry = self.keys.entry(a[0].to_owned()).or_insert(Entry {
                    data: Data::Str("0".into()),
                    expires: None,
                });
                let Data::Str(s) = &mut entry.data else {
                    return Err(Reply::Error(WRONGTYPE.into()));
                };
                let n = int(s)? + 1;
                *s = n.to_string();
                Ok(Reply::Int(n))
            }
            "TIME" => Ok(Reply::Array(vec![
                Reply::Bulk((now / 1000).to_string()),
                Reply::Bulk(((now % 1000) * 1000).to_string()),
            ])),
            "PUBLISH" => Ok(Reply::Int(0)),
            _ => self.zcommand(now, name, a),
        }
    }

    /// The sorted-set commands of the reader-writer and wait-queue scripts.
    fn zcommand(&mut self, now: u64, name: &str, a: &[&str]) -> Result<Reply, Reply> {
        if a.is_empty() {
            return Err(err(&format!("unknown command '{name}'")));
        }
        let key = a[0];
        match name {
            "ZADD" => {
                let mut i = 1;
                let (mut nx, mut xx, mut gt, mut ch) = (false, false, false, false);
                while i < a.len() {
                    match a[i].to_ascii_uppercase().as_str() {
                        "NX" => nx = true,
                        "XX" => xx = true,
                        "GT" => gt = true,
                        // Count the members changed (added or rescored), not only added.
                        "CH" => ch = true,
                        _ => break,
                    }
                    i += 1;
                }
                let pairs = &a[i..];
                if pairs.is_empty() || !pairs.len().is_multiple_of(2) {
                    return Err(err("syntax error"));
                }
                if self.zset(key, now)?.is_none() {
                    self.keys.insert(
                        key.to_owned(),
                        Entry {
                            data: Data::Zset(BTreeMap::new()),
                            expires: None,
                        },
                    );
                }
                let z = self.zset(key, now)?.expect("just made");
                let (mut added, mut changed) = (0, 0);
                for pair in pairs.chunks(2) {
                    let s = score(pair[0])?;
                    match z.get(pair[1]).copied() {
                        Some(old) if !nx && (!gt || s > old) => {
                            z.insert(pair[1].to_owned(), s);
                            changed += i64::from(s != old);
                        }
                        None if !xx => {
                            z.insert(pair[1].to_owned(), s);
                            added += 1;
                        }
                        _ => {}
                    }
                }
                if z.is_empty() {
                    self.keys.remove(key);
                }
                Ok(Reply::Int(if ch { added + changed } else { added }))
            }
            "ZSCORE" => Ok(
                match self.zset(key, now)?.and_then(|z| z.get(a[1]).copied()) {
                    Some(s) => Reply::Bulk(s.to_string()),
                    None => Reply::Nil,
                },
            ),
            "ZREM" => {
                let Some(z) = self.zset(key, now)? else {
                    return Ok(Reply::Int(0));
                };
                let n = a[1..].iter().filter(|m| z.remove(**m).is_some()).count();
                self.drop_if_empty(key);
                Ok(Reply::Int(n as i64))
            }
            "ZCARD" => Ok(Reply::Int(
                self.zset(key, now)?.map_or(0, |z| z.len()) as i64
            )),
            "ZRANGE" => {
                let sorted = self.sorted(key, now)?;
                let len = sorted.len() as i64;
                let at = |i: i64| if i < 0 { (len + i).max(0) } else { i };
                let (from, to) = (at(int(a[1])?), at(int(a[2])?).min(len - 1));
                let scores = a
                    .get(3)
                    .is_some_and(|o| o.eq_ignore_ascii_case("WITHSCORES"));
                let mut out = Vec::new();
                for (m, s) in sorted
                    .iter()
                    .take((to + 1).max(0) as usize)
                    .skip(from as usize)
                {
                    out.push(Reply::Bulk(m.clone()));
                    if scores {
                        out.push(Reply::Bulk(s.to_string()));
                    }
                }
                Ok(Reply::Array(out))
            }
            "ZPOPMIN" => {
                let sorted = self.sorted(key, now)?;
                let Some((m, s)) = sorted.first().cloned() else {
                    return Ok(Reply::Array(vec![]));
                };
                self.zset(key, now)?.expect("not empty").remove(&m);
                self.drop_if_empty(key);
                Ok(Reply::Array(vec![
                    Reply::Bulk(m),
                    Reply::Bulk(s.to_string()),
                ]))
            }
            "ZREMRANGEBYSCORE" => {
                let (lo, hi) = (score(a[1])?, score(a[2])?);
                let Some(z) = self.zset(key, now)? else {
                    return Ok(Reply::Int(0));
                };
                let before = z.len();
                z.retain(|_, s| *s < lo || *s > hi);
                let n = before - z.len();
                self.drop_if_empty(key);
                Ok(Reply::Int(n as i64))
            }
            "ZUNIONSTORE" => {
                // ZUNIONSTORE dest n src... AGGREGATE MAX: the only form the scripts use.
                let n = int(a[1])? as usize;
                let mut out = BTreeMap::new();
                for src in &a[2..2 + n] {
                    for (m, s) in self.zset(src, now)?.cloned().unwrap_or_default() {
                        let e = out.entry(m).or_insert(s);
                        *e = (*e).max(s);
                    }
                }
                let count = out.len() as i64;
                self.keys.remove(key);
                if count > 0 {
                    let entry = Entry {
                        data: Data::Zset(out),
                        expires: None,
                    };
                    self.keys.insert(key.to_owned(), entry);
                }
                Ok(Reply::Int(count))
            }
            _ => Err(err(&format!("unknown command '{name}'"))),
        }
    }

    fn sorted(&mut self, key: &str, now: u64) -> Result<Vec<(String, i64)>, Reply> {
        let mut v: Vec<(String, i64)> = self
            .zset(key, now)?
            .map(|z| z.iter().map(|(m, s)| (m.clone(), *s)).collect())
            .unwrap_or_default();
        v.sort_by(|x, y| (x.1, &x.0).cmp(&(y.1, &y.0)));
        Ok(v)
    }

    fn drop_if_empty(&mut self, key: &str) {
        if matches!(self.keys.get(key), Some(Entry { data: Data::Zset(z), .. }) if z.is_empty()) {
            self.keys.remove(key);
        }
    }
}
