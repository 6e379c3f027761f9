//! Attempts counted from the outside: a tracing layer counts the crate's
//! `after attempt` events (one per round an acquisition sends, `Reround` excepted: a
//! fencing round that only learnt a stale counter is documented as no attempt) inside
//! each explorer call's span. The count does not come from the crate's own attempt
//! counter, so an acquisition that makes more attempts than `retry_count + 1` while
//! reporting fewer (the `free_queue_attempt` mutant) is caught. The same events time
//! each attempt and the pause before it, so a wait that hangs on something it should not
//! (a subscription to a silent node: the `stalled_subscription` mutant) shows as a gap
//! longer than a pause and a round can take.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use tracing::field::{Field, Visit};
use tracing::Instrument;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// The span the explorer wraps each acquisition in.
const SPAN: &str = "explore_call";

/// Attempts traced in this process, over all calls.
static TOTAL: AtomicU64 = AtomicU64::new(0);

/// Attempts traced in this process so far, over all calls.
pub fn total() -> u64 {
    TOTAL.load(Ordering::Relaxed)
}

/// What the traces of one call showed.
#[derive(Debug, Clone, Copy)]
pub struct Seen {
    /// Attempts made (rounds that were not a stale-counter re-round).
    pub attempts: u32,
    /// The longest time from one attempt's end to the next one's: one pause and one
    /// attempt. (Not from the call's start: a task of a shared manager may first wait
    /// its turn in the manager's local queue, as documented.)
    pub longest_gap: Duration,
    last: Option<Instant>,
}

/// Per call id, what was seen so far.
fn counts() -> &'static Mutex<HashMap<u64, Seen>> {
    static COUNTS: OnceLock<Mutex<HashMap<u64, Seen>>> = OnceLock::new();
    COUNTS.get_or_init(Default::default)
}

/// Whether this process's global subscriber is ours (another one, installed first,
/// would leave every count empty: the caller is told, never handed a zero).
pub fn installed() -> bool {
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    *INSTALLED.get_or_init(|| {
        let layer = Counter.with_filter(filter_fn(|meta| {
            meta.name() == SPAN
                || (meta.is_event()
                    && meta.target().starts_with("tokio_redlock")
                    && meta.fields().field("step").is_some()
                    && meta.fields().field("attempts").is_some())
        }));
        // `REDLOCK_EXPLORE_LOG=<file>`: the crate's debug log too, for hunting.
        let log = std::env::var("REDLOCK_EXPLORE_LOG").ok().and_then(|path| {
            let file = std::fs::File::create(path).ok()?;
            Some(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::sync::Mutex::new(file))
                    .with_ansi(false)
                    .with_filter(tracing_subscriber::EnvFilter::new("tokio_redlock=trace")),
            )
        });
        let subscriber = tracing_subscriber::registry().with(layer).with(log);
        tracing::subscriber::set_global_default(subscriber).is_ok()
    })
}

struct CallId(u64);

struct Counter;

#[derive(Default)]
struct Fields {
    call: Option<u64>,
    message: String,
    step: String,
}

impl Visit for Fields {
    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "call" {
            self.call = Some(value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "step" => self.step = format!("{value:?}"),
            _ => {}
        }
    }
}

impl<S> Layer<S> for Counter
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let (Some(call), Some(span)) = (fields.call, ctx.span(id)) {
            span.extensions_mut().insert(CallId(call));
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        if fields.message != "after attempt" || fields.step.starts_with("Reround") {
            return;
        }
        let Some(scope) = ctx.event_scope(event) else {
            return;
        };
        for span in scope {
            if let Some(CallId(call)) = span.extensions().get::<CallId>() {
                if let Some(seen) = super::oracle::lock(counts()).get_mut(call) {
                    let now = Instant::now();
                    seen.attempts += 1;
                    if let Some(last) = seen.last {
                        seen.longest_gap = seen.longest_gap.max(now - last);
                    }
                    seen.last = Some(now);
                    TOTAL.fetch_add(1, Ordering::Relaxed);
                }
                return;
            }
        }
    }
}

/// Runs the future `make` returns inside a call span; returns its output and what the
/// traces inside it showed (`None` if this process's tracing is not ours).
pub async fn counted<F: Future>(make: impl FnOnce() -> F) -> (F::Output, Option<Seen>) {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let ours = installed();
    let call = NEXT.fetch_add(1, Ordering::Relaxed);
    let span = tracing::info_span!(target: "explore", SPAN, call);
    let start = Seen {
        attempts: 0,
        longest_gap: Duration::ZERO,
        last: None,
    };
    super::oracle::lock(counts()).insert(call, start);
    let entry = Entry(call);
    // Made inside the span, so that the crate's own spans are its children.
    let fut = span.in_scope(make);
    let out = fut.instrument(span).await;
    let seen = super::oracle::lock(counts()).remove(&entry.0);
    (out, seen.filter(|_| ours))
}

/// Forgets a call's count when the call is dropped unfinished.
struct Entry(u64);

impl Drop for Entry {
    fn drop(&mut self) {
        super::oracle::lock(counts()).remove(&self.0);
    }
}
