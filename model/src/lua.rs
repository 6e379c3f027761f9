//! Runs a script's text in Lua 5.1 (Redis's version) against one node's [`Keyspace`],
//! atomically, as `EVAL` does: `KEYS` and `ARGV` as Lua tables of strings, `redis.call`,
//! `redis.pcall`, `redis.error_reply` and `redis.status_reply`, and Redis's conversions
//! between Lua values and replies (nil bulk is `false`, integers are numbers, a status
//! is `{ok = ...}`, an error `{err = ...}`; a Lua number returned is truncated to an
//! integer, a table is an array up to its first nil).
//!
//! One `Lua` per thread, reused; each call gets fresh `KEYS`, `ARGV` and `redis` globals,
//! and the functions behind `redis` borrow the keyspace only for that call (mlua's scope).

use std::cell::RefCell;
use std::collections::HashMap;

use mlua::{Lua, MultiValue, Table, Value};

use crate::keyspace::{Keyspace, Reply};

/// A script run: the script, the node before, its time, the keys and arguments.
type Call = ((usize, usize), Keyspace, u64, Vec<String>, Vec<String>);

/// The most script runs remembered per thread (each a few hundred bytes).
const MEMO_ENTRIES: usize = 100_000;

thread_local! {
    static LUA: Lua = Lua::new();
    /// Scripts are deterministic functions of their inputs, and the checker meets the
    /// same node state with the same request again and again: each distinct run is made
    /// once per thread.
    static MEMO: RefCell<HashMap<Call, (Reply, Keyspace)>> = RefCell::new(HashMap::new());
}

/// Runs `script` on `keys` at node time `now` (ms) and returns its reply; a Lua error
/// (also one raised by `redis.call`) is an error reply, as Redis answers it.
pub fn eval(
    script: &str,
    node: &mut Keyspace,
    now: u64,
    keys: &[String],
    argv: &[String],
) -> Reply {
    let call: Call = (
        (script.as_ptr() as usize, script.len()),
        node.clone(),
        now,
        keys.to_vec(),
        argv.to_vec(),
    );
    if let Some((reply, after)) = MEMO.with(|m| m.borrow().get(&call).cloned()) {
        *node = after;
        return reply;
    }
    let reply = LUA.with(|lua| match run(lua, script, node, now, keys, argv) {
        Ok(reply) => reply,
        Err(e) => Reply::Error(format!("ERR script: {e}")),
    });
    MEMO.with(|m| {
        let mut memo = m.borrow_mut();
        // A bound on the memory it takes: start over rather than grow without end.
        if memo.len() >= MEMO_ENTRIES {
            memo.clear();
        }
        memo.insert(call, (reply.clone(), node.clone()));
    });
    reply
}

fn run(
    lua: &Lua,
    script: &str,
    node: &mut Keyspace,
    now: u64,
    keys: &[String],
    argv: &[String],
) -> mlua::Result<Reply> {
    let globals = lua.globals();
    globals.set(
        "KEYS",
        lua.create_sequence_from(keys.iter().map(String::as_str))?,
    )?;
    globals.set(
        "ARGV",
        lua.create_sequence_from(argv.iter().map(String::as_str))?,
    )?;
    let node = RefCell::new(node);
    lua.scope(|scope| {
        let redis = lua.create_table()?;
        redis.set(
            "call",
            scope.create_function(|lua, args: MultiValue| {
                let reply = command(&node, now, args)?;
                if let Reply::Error(e) = reply {
                    return Err(mlua::Error::runtime(e));
                }
                to_lua(lua, &reply)
            })?,
        )?;
        redis.set(
            "pcall",
            scope.create_function(|lua, args: MultiValue| {
                to_lua(lua, &command(&node, now, args)?)
            })?,
        )?;
        redis.set(
            "error_reply",
            lua.create_function(|lua, msg: String| to_lua(lua, &Reply::Error(msg)))?,
        )?;
        redis.set(
            "status_reply",
            lua.create_function(|lua, msg: String| to_lua(lua, &Reply::Status(msg)))?,
        )?;
        globals.set("redis", redis)?;
        let value: Value = lua.load(script).set_name("script").call(())?;
        from_lua(&value)
    })
}

/// The arguments of `redis.call`, as Redis takes them: strings, and numbers turned into
/// their decimal text.
fn command(node: &RefCell<&mut Keyspace>, now: u64, args: MultiValue) -> mlua::Result<Reply> {
    let mut words = Vec::with_capacity(args.len());
    for arg in args {
        words.push(match arg {
            Value::String(s) => s.to_str()?.to_owned(),
            Value::Integer(i) => i.to_string(),
            Value::Number(n) if n.fract() == 0.0 && n.abs() < 1e15 => (n as i64).to_string(),
            Value::Number(n) => n.to_string(),
            other => {
                return Err(mlua::Error::runtime(format!(
                    "Lua redis lib command arguments must be strings or integers, got {}",
                    other.type_name()
                )))
            }
        });
    }
    Ok(node.borrow_mut().run(now, &words))
}

fn to_lua(lua: &Lua, reply: &Reply) -> mlua::Result<Value> {
    Ok(match reply {
        Reply::Int(i) => Value::Number(*i as f64),
        Reply::Bulk(s) => Value::String(lua.create_string(s)?),
        Reply::Nil => Value::Boolean(false),
        Reply::Array(items) => {
            let t = lua.create_table()?;
            for (i, item) in items.iter().enumerate() {
                t.raw_set(i + 1, to_lua(lua, item)?)?;
            }
            Value::Table(t)
        }
        Reply::Status(s) => Value::Table(lua.create_table_from([("ok", s.as_str())])?),
        Reply::Error(e) => Value::Table(lua.create_table_from([("err", e.as_str())])?),
    })
}

fn from_lua(value: &Value) -> mlua::Result<Reply> {
    Ok(match value {
        Value::Nil | Value::Boolean(false) => Reply::Nil,
        Value::Boolean(true) => Reply::Int(1),
        Value::Integer(i) => Reply::Int(*i),
        Value::Number(n) => Reply::Int(n.trunc() as i64),
        Value::String(s) => Reply::Bulk(s.to_str()?.to_owned()),
        Value::Table(t) => table(t)?,
        other => {
            return Err(mlua::Error::runtime(format!(
                "cannot return a {}",
                other.type_name()
            )))
        }
    })
}

fn table(t: &Table) -> mlua::Result<Reply> {
    if let Some(e) = t.raw_get::<Option<String>>("err")? {
        return Ok(Reply::Error(e));
    }
    if let Some(s) = t.raw_get::<Option<String>>("ok")? {
        return Ok(Reply::Status(s));
    }
    let mut items = Vec::new();
    for i in 1.. {
        let v: Value = t.raw_get(i)?;
        if v.is_nil() {
            break;
        }
        items.push(from_lua(&v)?);
    }
    Ok(Reply::Array(items))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_owned()).collect()
    }

    #[test]
    fn the_crate_acquire_and_release_run_as_on_redis() {
        let acquire = tokio_redlock::script_source::script("ACQUIRE_ONE").unwrap();
        let release = tokio_redlock::script_source::script("RELEASE").unwrap();
        let mut node = Keyspace::default();
        let k = s(&["lock"]);
        assert_eq!(
            eval(acquire, &mut node, 0, &k, &s(&["a", "10"])),
            Reply::Int(1)
        );
        assert_eq!(
            eval(acquire, &mut node, 1, &k, &s(&["a", "10"])),
            Reply::Int(1)
        );
        assert_eq!(
            eval(acquire, &mut node, 2, &k, &s(&["b", "10"])),
            Reply::Int(0)
        );
        // Still there at its expiry, gone after it.
        assert_eq!(
            eval(acquire, &mut node, 10, &k, &s(&["b", "10"])),
            Reply::Int(0)
        );
        assert_eq!(
            eval(acquire, &mut node, 11, &k, &s(&["b", "10"])),
            Reply::Int(1)
        );
        let released = Reply::Array(vec![Reply::Int(0), Reply::Int(0)]);
        assert_eq!(eval(release, &mut node, 12, &k, &s(&["a", ""])), released);
        let released = Reply::Array(vec![Reply::Int(1), Reply::Int(0)]);
        assert_eq!(eval(release, &mut node, 12, &k, &s(&["b", ""])), released);
        assert!(node.keys.is_empty());
    }

    #[test]
    fn errors_and_pcall_follow_redis() {
        let mut node = Keyspace::default();
        let k = s(&["x"]);
        let r = eval("return redis.pcall('INCR', KEYS[1])", &mut node, 0, &k, &[]);
        assert_eq!(r, Reply::Int(1));
        eval("redis.call('SET', KEYS[1], 'abc')", &mut node, 0, &k, &[]);
        let r = eval("return redis.pcall('INCR', KEYS[1])", &mut node, 0, &k, &[]);
        assert!(matches!(r, Reply::Error(e) if e.contains("not an integer")));
        let r = eval("return redis.call('INCR', KEYS[1])", &mut node, 0, &k, &[]);
        assert!(matches!(r, Reply::Error(e) if e.contains("not an integer")));
        let r = eval("return redis.error_reply('ERR no')", &mut node, 0, &k, &[]);
        assert_eq!(r, Reply::Error("ERR no".into()));
        let r = eval("return {1, 'a', nil, 3}", &mut node, 0, &k, &[]);
        assert_eq!(
            r,
            Reply::Array(vec![Reply::Int(1), Reply::Bulk("a".into())])
        );
        let t = eval("return redis.call('TIME')", &mut node, 2_500, &k, &[]);
        assert_eq!(
            t,
            Reply::Array(vec![Reply::Bulk("2".into()), Reply::Bulk("500000".into())])
        );
    }

    #[test]
    fn sorted_sets_order_by_score_and_expire_as_a_key() {
        let mut node = Keyspace::default();
        let k = s(&["z"]);
        let script = "redis.call('ZADD', KEYS[1], 30, 'c', 10, 'a') \
                      redis.call('ZADD', KEYS[1], 'NX', 5, 'a') \
                      redis.call('ZADD', KEYS[1], 'XX', 20, 'b') \
                      redis.call('PEXPIRE', KEYS[1], 5) \
                      return redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')";
        let want = Reply::Array(
            ["a", "10", "c", "30"]
                .map(|x| Reply::Bulk(x.into()))
                .to_vec(),
        );
        assert_eq!(eval(script, &mut node, 0, &k, &[]), want);
        let pop = eval(
            "return redis.call('ZPOPMIN', KEYS[1])",
            &mut node,
            5,
            &k,
            &[],
        );
        assert_eq!(
            pop,
            Reply::Array(vec![Reply::Bulk("a".into()), Reply::Bulk("10".into())])
        );
        let card = eval("return redis.call('ZCARD', KEYS[1])", &mut node, 6, &k, &[]);
        assert_eq!(card, Reply::Int(0));
    }
}
