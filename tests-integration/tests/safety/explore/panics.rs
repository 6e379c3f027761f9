//! Panics in library code, background tasks included: a panic in a keep-alive or a
//! drop-release never reaches a client's `JoinHandle`, so a process-wide hook is the only
//! place to see it.

use std::sync::Mutex;

use super::oracle::lock;

/// Panics seen in library code (its files or `Instant` arithmetic in std) since the last
/// [`take_panics`]: a panic in a background task (a keep-alive, a drop-release) never
/// reaches a client's `JoinHandle`, so a process-wide hook is the only place to see it.
static PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());

pub fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let location = info
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line()))
                .unwrap_or_default();
            // The usual report first: the hook stays installed for the whole test binary.
            previous(info);
            let ours = location.starts_with("src/") || location.contains("library/std/src/time.rs");
            if !ours {
                return;
            }
            let msg = info
                .payload()
                .downcast_ref::<&str>()
                .map(ToString::to_string)
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_default();
            let thread = std::thread::current()
                .name()
                .unwrap_or("unnamed")
                .to_owned();
            // Where in the crate: the innermost frame of ours (std's location says little).
            let trace = std::backtrace::Backtrace::force_capture().to_string();
            let lines: Vec<&str> = trace.lines().map(str::trim).collect();
            let frame = lines
                .iter()
                .position(|l| l.contains("tokio_redlock::"))
                .map(|i| {
                    let at = lines
                        .get(i + 1)
                        .filter(|l| l.starts_with("at "))
                        .unwrap_or(&"");
                    format!(" in {} {at}", lines[i])
                })
                .unwrap_or_default();
            let location = format!("{location}{frame}");
            lock(&PANICS).push(format!("{msg} at {location} on thread {thread}"));
        }));
    });
}

pub fn take_panics() -> Vec<String> {
    std::mem::take(&mut *lock(&PANICS))
}
