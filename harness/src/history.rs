//! Histories of a lock workload: what each client did, and when, on one machine-wide clock.
//!
//! Every event carries the `CLOCK_MONOTONIC` time in nanoseconds ([`now_ns`]), a clock all
//! processes on one machine share, so the histories of several client processes can be
//! merged ([`History::merge`]) and checked together by [`checker`](super::checker).
//!
//! The file format is one event per line, fields separated by single spaces:
//!
//! ```text
//! <t_ns> <client> <op> <resource> start
//! <t_ns> <client> <op> <resource> ok <valid_until_ns> <token|->
//! <t_ns> <client> <op> <resource> extend <valid_until_ns>
//! <t_ns> <client> <op> <resource> release
//! <t_ns> <client> <op> <resource> fail <reason, to the end of the line>
//! <t_ns> <client> <op> <resource> enter
//! <t_ns> <client> <op> <resource> exit <1 if the write was acknowledged, else 0>
//! ```
//!
//! `op` numbers the attempts of one client; the events of one acquisition share it.
//! A hand-written format rather than JSON keeps the harness free of a serialisation
//! dependency, and it is easy to read and to write by hand in checker tests.

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use nix::time::{clock_gettime, ClockId};

use crate::sync::lock;

/// `CLOCK_MONOTONIC` now, in nanoseconds: the clock every history is written in.
///
/// It is the clock `std::time::Instant` reads on Linux, shared by every process on the
/// machine (unlike `Instant`, whose value cannot be read out).
///
/// ```
/// let a = tokio_redlock_harness::history::now_ns();
/// let b = tokio_redlock_harness::history::now_ns();
/// assert!(b >= a);
/// ```
pub fn now_ns() -> u64 {
    // clock_gettime(CLOCK_MONOTONIC) cannot fail on Linux with a valid clock id; if it
    // ever did, 0 makes every check conservative rather than panicking.
    clock_gettime(ClockId::CLOCK_MONOTONIC)
        .map(|t| {
            let secs = u64::try_from(t.tv_sec()).unwrap_or(0);
            let nanos = u64::try_from(t.tv_nsec()).unwrap_or(0);
            secs.saturating_mul(1_000_000_000).saturating_add(nanos)
        })
        .unwrap_or(0)
}

/// Converts an `Instant` (such as tokio-redlock's `LockGuard::valid_until`)
/// to [`now_ns`] time.
///
/// The clock is read before the `Instant`, so the result is at most a few hundred
/// nanoseconds early: a validity converted this way never looks longer than it is.
///
/// ```
/// use std::time::{Duration, Instant};
/// use tokio_redlock_harness::history::{instant_ns, now_ns};
///
/// let later = instant_ns(Instant::now() + Duration::from_secs(1));
/// assert!(later > now_ns());
/// ```
pub fn instant_ns(at: Instant) -> u64 {
    let ns = now_ns();
    let now = Instant::now();
    if at >= now {
        let ahead = u64::try_from(at.duration_since(now).as_nanos()).unwrap_or(u64::MAX);
        ns.saturating_add(ahead)
    } else {
        let behind = u64::try_from(now.duration_since(at).as_nanos()).unwrap_or(u64::MAX);
        ns.saturating_sub(behind)
    }
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventKind {
    /// An acquisition (with its retries) starts.
    Start,
    /// The acquisition succeeded: the lock is promised until `valid_until_ns`.
    Acquired {
        /// The guard's validity end, in [`now_ns`] time.
        valid_until_ns: u64,
        /// The fencing token, when the manager hands them out.
        token: Option<u64>,
    },
    /// An extension succeeded: the lock is now promised until `valid_until_ns`.
    Extended {
        /// The new validity end, in [`now_ns`] time.
        valid_until_ns: u64,
    },
    /// The holder starts releasing: from here on it claims nothing.
    Released,
    /// The acquisition failed.
    Failed {
        /// Why (the error's message); never contains a newline.
        reason: String,
    },
    /// The holder enters its critical section on the protected resource.
    Enter,
    /// The holder leaves its critical section.
    Exit {
        /// Whether its write was acknowledged (not refused by a fencing check, no error).
        acked: bool,
    },
}

/// One event of a history.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Event {
    /// When, in [`now_ns`] time.
    pub t_ns: u64,
    /// Which client (unique across the processes of a run).
    pub client: u32,
    /// Which acquisition of that client.
    pub op: u64,
    /// The resource locked; never contains whitespace.
    pub resource: String,
    /// What happened.
    pub kind: EventKind,
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            t_ns,
            client,
            op,
            resource,
            kind,
        } = self;
        write!(f, "{t_ns} {client} {op} {resource} ")?;
        match kind {
            EventKind::Start => write!(f, "start"),
            EventKind::Acquired {
                valid_until_ns,
                token: Some(t),
            } => write!(f, "ok {valid_until_ns} {t}"),
            EventKind::Acquired {
                valid_until_ns,
                token: None,
            } => write!(f, "ok {valid_until_ns} -"),
            EventKind::Extended { valid_until_ns } => write!(f, "extend {valid_until_ns}"),
            EventKind::Released => write!(f, "release"),
            EventKind::Failed { reason } => write!(f, "fail {}", reason.replace('\n', " ")),
            EventKind::Enter => write!(f, "enter"),
            EventKind::Exit { acked } => write!(f, "exit {}", u8::from(*acked)),
        }
    }
}

/// A line of a history file that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("history line {line} is malformed ({what}); each line is `<t_ns> <client> <op> <resource> <kind> ...`")]
#[non_exhaustive]
pub struct ParseError {
    /// The 1-based line number.
    pub line: usize,
    /// What was wrong with it.
    pub what: String,
}

impl Event {
    /// Parses one line of the format in the [module docs](self).
    ///
    /// # Errors
    /// [`ParseError`] (with `line` 0) when a field is missing or not a number.
    pub fn parse(line: &str) -> Result<Self, ParseError> {
        let bad = |what: &str| ParseError {
            line: 0,
            what: what.to_owned(),
        };
        let mut it = line.splitn(6, ' ');
        let mut field = |name: &str| it.next().ok_or_else(|| bad(&format!("no {name}")));
        let t_ns = field("time")?.parse().map_err(|_| bad("time"))?;
        let client = field("client")?.parse().map_err(|_| bad("client"))?;
        let op = field("op")?.parse().map_err(|_| bad("op"))?;
        let resource = field("resource")?.to_owned();
        let kind = field("kind")?;
        let rest = it.next().unwrap_or("");
        let num = |s: Option<&str>, name: &str| -> Result<u64, ParseError> {
            s.and_then(|s| s.parse().ok()).ok_or_else(|| bad(name))
        };
        let mut args = rest.split(' ');
        let kind = match kind {
            "start" => EventKind::Start,
            "ok" => {
                let valid_until_ns = num(args.next(), "valid_until")?;
                let token = match args.next() {
                    Some("-") => None,
                    t => Some(num(t, "token")?),
                };
                EventKind::Acquired {
                    valid_until_ns,
                    token,
                }
            }
            "extend" => EventKind::Extended {
                valid_until_ns: num(args.next(), "valid_until")?,
            },
            "release" => EventKind::Released,
            "fail" => EventKind::Failed {
                reason: rest.to_owned(),
            },
            "enter" => EventKind::Enter,
            "exit" => EventKind::Exit {
                acked: num(args.next(), "acked")? == 1,
            },
            other => return Err(bad(&format!("unknown kind `{other}`"))),
        };
        Ok(Self {
            t_ns,
            client,
            op,
            resource,
            kind,
        })
    }
}

/// The events of a run, in time order once [merged](Self::merge) or [sorted](Self::sort).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct History {
    /// The events.
    pub events: Vec<Event>,
}

impl History {
    /// Parses a whole history file's text; blank lines and lines starting with `#` are skipped.
    ///
    /// # Errors
    /// [`ParseError`] naming the first malformed line.
    ///
    /// ```
    /// use tokio_redlock_harness::history::History;
    /// let h = History::parse("10 1 0 r start\n20 1 0 r ok 90 7\n")?;
    /// assert_eq!(h.events.len(), 2);
    /// # Ok::<(), tokio_redlock_harness::history::ParseError>(())
    /// ```
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let mut events = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim_end();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            events.push(Event::parse(line).map_err(|e| ParseError { line: i + 1, ..e })?);
        }
        Ok(Self { events })
    }

    /// The history as file text, one event per line.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for e in &self.events {
            out.push_str(&e.to_string());
            out.push('\n');
        }
        out
    }

    /// Writes [`to_text`](Self::to_text) to `path`.
    ///
    /// # Errors
    /// The I/O error of the write.
    pub fn write_file(&self, path: &Path) -> io::Result<()> {
        std::fs::write(path, self.to_text())
    }

    /// Reads a history file.
    ///
    /// # Errors
    /// The I/O error of the read, or [`io::ErrorKind::InvalidData`] wrapping a [`ParseError`].
    pub fn read_file(path: &Path) -> io::Result<Self> {
        let text = std::fs::read_to_string(path)?;
        Self::parse(&text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// Sorts the events by time; events at the same nanosecond keep their order.
    pub fn sort(&mut self) {
        self.events.sort_by_key(|e| e.t_ns);
    }

    /// Merges the histories of several processes (or clients) into one, in time order.
    ///
    /// ```
    /// use tokio_redlock_harness::history::History;
    /// let a = History::parse("10 1 0 r start\n30 1 0 r ok 90 -\n")?;
    /// let b = History::parse("20 2 0 r start\n")?;
    /// let merged = History::merge([a, b]);
    /// let times: Vec<u64> = merged.events.iter().map(|e| e.t_ns).collect();
    /// assert_eq!(times, [10, 20, 30]);
    /// # Ok::<(), tokio_redlock_harness::history::ParseError>(())
    /// ```
    pub fn merge(histories: impl IntoIterator<Item = History>) -> History {
        let mut all = History::default();
        for h in histories {
            all.events.extend(h.events);
        }
        all.sort();
        all
    }

    /// How many acquisitions succeeded.
    pub fn acquisitions(&self) -> usize {
        self.events
            .iter()
            .filter(|e| matches!(e.kind, EventKind::Acquired { .. }))
            .count()
    }
}

/// A shared, thread-safe event sink for the clients of one process.
///
/// Cloning shares the sink. Recording takes a short mutex; the clock is read inside it, so
/// the events of one process are recorded in time order.
///
/// ```
/// use tokio_redlock_harness::history::{EventKind, Recorder};
/// let rec = Recorder::new();
/// rec.record(1, 0, "r", EventKind::Start);
/// rec.record(1, 0, "r", EventKind::Released);
/// assert_eq!(rec.history().events.len(), 2);
/// ```
#[derive(Debug, Clone, Default)]
pub struct Recorder {
    events: Arc<Mutex<Vec<Event>>>,
}

impl Recorder {
    /// An empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records an event of `client`'s acquisition `op` on `resource`, stamped now.
    /// Returns the time stamp.
    pub fn record(&self, client: u32, op: u64, resource: &str, kind: EventKind) -> u64 {
        let mut events = lock(&self.events);
        let t_ns = now_ns();
        events.push(Event {
            t_ns,
            client,
            op,
            resource: resource.to_owned(),
            kind,
        });
        t_ns
    }

    /// A copy of everything recorded so far.
    pub fn history(&self) -> History {
        let events = lock(&self.events).clone();
        History { events }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_through_text() {
        let kinds = [
            EventKind::Start,
            EventKind::Acquired {
                valid_until_ns: 99,
                token: Some(7),
            },
            EventKind::Acquired {
                valid_until_ns: 99,
                token: None,
            },
            EventKind::Extended { valid_until_ns: 5 },
            EventKind::Released,
            EventKind::Failed {
                reason: "no quorum: 1 of 3 nodes".into(),
            },
            EventKind::Enter,
            EventKind::Exit { acked: true },
            EventKind::Exit { acked: false },
        ];
        let h = History {
            events: kinds
                .into_iter()
                .enumerate()
                .map(|(i, kind)| Event {
                    t_ns: i as u64 * 10,
                    client: 3,
                    op: 4,
                    resource: "lock:1".into(),
                    kind,
                })
                .collect(),
        };
        assert_eq!(History::parse(&h.to_text()).unwrap(), h);
    }

    #[test]
    fn malformed_lines_name_their_line() {
        let err = History::parse("1 1 1 r start\n\n# note\nx 1 1 r start\n").unwrap_err();
        assert_eq!(err.line, 4);
        assert!(History::parse("1 1 1 r bogus").is_err());
        assert!(History::parse("1 1 1 r ok 5").is_err());
        assert!(History::parse("1 1 1").is_err());
    }

    #[test]
    fn a_newline_in_a_reason_stays_on_one_line() {
        let e = Event {
            t_ns: 1,
            client: 1,
            op: 1,
            resource: "r".into(),
            kind: EventKind::Failed {
                reason: "a\nb".into(),
            },
        };
        assert_eq!(e.to_string().lines().count(), 1);
    }

    #[test]
    fn instants_map_onto_the_monotonic_clock() {
        let before = now_ns();
        let mapped = instant_ns(Instant::now());
        let after = now_ns();
        assert!(
            before <= mapped && mapped <= after,
            "{before} {mapped} {after}"
        );
        let past = instant_ns(Instant::now() - std::time::Duration::from_millis(5));
        assert!(past + 4_000_000 < now_ns());
    }

    #[test]
    fn merge_orders_by_time() {
        let a = History::parse("5 1 0 r start\n50 1 0 r release\n").unwrap();
        let b = History::parse("7 2 0 r start\n8 2 0 r fail busy\n").unwrap();
        let m = History::merge([a, b]);
        let t: Vec<u64> = m.events.iter().map(|e| e.t_ns).collect();
        assert_eq!(t, [5, 7, 8, 50]);
    }
}
