//! A counterexample as a numbered story: who sent what, what each node answered (and
//! what it then stores), what each client believed.

use std::fmt::Write;

use stateright::Path;

use crate::client::{Client, Phase};
use crate::keyspace::{Data, Keyspace};
use crate::model::{value, Action, Config, Kind, Msg, Op, State};

/// A request as the story tells it: the script (by the crate's name, for the
/// reader-writer lock, whose requests run several), the value, the ttl.
fn op_text(cfg: &Config, client: u8, op: &Op) -> String {
    let rw = matches!(cfg.kind, Kind::ReadWrite { .. });
    let name = |plain: &'static str| {
        if rw {
            crate::rw::script_name(cfg, client, op)
        } else {
            plain
        }
    };
    match op {
        Op::Acquire {
            attempt,
            ttl,
            candidate,
        } => {
            let v = value(client, *attempt);
            let name = name("ACQUIRE");
            match candidate {
                0 => format!("{name} {v} ttl {ttl}"),
                t => format!("{name} {v} ttl {ttl} candidate {t}"),
            }
        }
        Op::Extend { attempt, ttl, heal } => {
            let plain = if *heal { "EXTEND_HEAL" } else { "EXTEND" };
            format!("{} {} ttl {ttl}", name(plain), value(client, *attempt))
        }
        Op::Release { attempt } => format!("{} {}", name("RELEASE"), value(client, *attempt)),
        Op::Undo { attempt } => format!("{} {} (undo)", name("RELEASE"), value(client, *attempt)),
        Op::Withdraw => format!("{} {}", name("WITHDRAW"), crate::rw::wait_id(client)),
    }
}

fn keys_text(keys: &Keyspace) -> String {
    if keys.keys.is_empty() {
        return "empty".into();
    }
    let parts: Vec<String> = keys
        .keys
        .iter()
        .map(|(k, e)| {
            let data = match &e.data {
                Data::Str(s) => s.clone(),
                Data::Zset(z) => format!("{z:?}"),
            };
            match e.expires {
                Some(at) => format!("{k}={data} until {at}"),
                None => format!("{k}={data}"),
            }
        })
        .collect();
    parts.join(", ")
}

fn belief(cfg: &Config, c: usize, client: &Client) -> String {
    let what = match cfg.kind {
        Kind::ReadWrite { .. } => match crate::rw::role(cfg, c as u8) {
            crate::rw::Role::Reader => " a read lock",
            crate::rw::Role::Writer => " the write lock",
            crate::rw::Role::Exclusive => " the exclusive lock",
        },
        _ => "",
    };
    match client.hold() {
        Some(h) => {
            let token = h.token.map(|t| format!(", token {t}")).unwrap_or_default();
            let busy = matches!(client.phase, Phase::Extending(..)).then_some(" (extending)");
            format!(
                "c{c} believes it holds{what} {} until {:.3} ms{token}{}",
                value(c as u8, h.attempt),
                h.valid_until as f64 / 1000.0,
                busy.unwrap_or_default()
            )
        }
        None => format!("c{c} believes it holds nothing"),
    }
}

/// The story of `path`, one numbered line per step, then the last state.
pub fn story(cfg: &Config, path: &Path<State, Action>) -> String {
    let mut out = String::new();
    let steps = path.clone().into_vec();
    let mut n = 0;
    for pair in steps.windows(2) {
        let (before, Some(action)) = &pair[0] else {
            continue;
        };
        let after = &pair[1].0;
        n += 1;
        let what = match action {
            Action::Tick { fast: None, .. } => format!("time passes: t = {} ms", after.now),
            Action::Tick { fast: Some(n), .. } => format!(
                "time passes: t = {} ms; n{n}'s clock runs ahead, skew {} ms",
                after.now,
                after.nodes[usize::from(*n)].skew
            ),
            Action::Acquire(c) | Action::Extend(c, _) => {
                let round = after.clients[usize::from(*c)].rounds;
                let msg = after
                    .net
                    .iter()
                    .find(|m| m.client == *c && m.round == round);
                format!(
                    "c{c} sends {} to every node",
                    op_text(cfg, *c, &msg.expect("just sent").op)
                )
            }
            Action::Release(c) => {
                let attempt = before.clients[usize::from(*c)].attempts;
                let op = op_text(cfg, *c, &Op::Release { attempt });
                format!("c{c} releases: {op} to every node")
            }
            Action::GiveUp(c) => match before.clients[usize::from(*c)].phase {
                Phase::Acquiring(_) => {
                    let attempt = before.clients[usize::from(*c)].attempts;
                    let op = op_text(cfg, *c, &Op::Undo { attempt });
                    format!("c{c} gives up its attempt: {op} to every node")
                }
                _ => format!("c{c} stops waiting for its extension"),
            },
            Action::Wipe(n) => {
                let node = &after.nodes[usize::from(*n)];
                match node.quarantined_until {
                    0 => format!("n{n} restarts without its data, and votes at once"),
                    q => format!("n{n} restarts without its data; quarantined until t = {q} ms"),
                }
            }
            Action::Deliver {
                msg:
                    Msg {
                        node,
                        client,
                        round,
                        op,
                        ..
                    },
                heard,
            } => {
                let mut replay = before.clone();
                let reply = cfg.apply(&mut replay, *node, *client, op);
                let waited = before.clients[usize::from(*client)].round_id() == Some(*round);
                let late = if waited || *round == 0 {
                    ""
                } else {
                    " (late: its round is over)"
                };
                let quarantined = before.now < before.nodes[usize::from(*node)].quarantined_until;
                let heard = match (heard, waited) {
                    (true, _) if quarantined => "c{client} hears it, not as a vote: quarantined",
                    (true, _) => "c{client} hears it",
                    (false, true) => "the reply is lost",
                    (false, false) => "nobody reads the reply",
                };
                format!(
                    "n{node} runs c{client}'s {}{late} -> {reply} ({}); n{node} now: {}",
                    op_text(cfg, *client, op),
                    heard.replace("{client}", &client.to_string()),
                    keys_text(&after.nodes[usize::from(*node)].keys)
                )
            }
        };
        let _ = writeln!(out, "{n:3}. [t={} ms] {what}", before.now);
        for (c, (old, new)) in before.clients.iter().zip(&after.clients).enumerate() {
            if old.hold() != new.hold() {
                let _ = writeln!(out, "       {}", belief(cfg, c, new));
            }
        }
    }
    let last = path.last_state();
    let _ = writeln!(out, "     last state, t = {} ms:", last.now);
    for (i, node) in last.nodes.iter().enumerate() {
        let _ = writeln!(
            out,
            "       n{i} (skew {}): {}",
            node.skew,
            keys_text(&node.keys)
        );
    }
    for (c, client) in last.clients.iter().enumerate() {
        let _ = writeln!(out, "       {}", belief(cfg, c, client));
    }
    out
}
