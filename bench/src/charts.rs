//! SVG charts of the contention scenarios, written without a plotting crate (a few
//! hundred bytes of markup each): the wait-time distribution of each subject (a CDF on
//! a log scale) and acquisitions per client. Written to `REDLOCK_BENCH_CHARTS` (default
//! `target/bench-charts`), to be copied into `docs/charts/` with a reference run.

use std::fmt::Write as _;
use std::path::PathBuf;

const W: f64 = 640.0;
const H: f64 = 360.0;
const LEFT: f64 = 60.0;
const BOTTOM: f64 = 40.0;
const TOP: f64 = 30.0;
const RIGHT: f64 = 20.0;
const COLOURS: [&str; 4] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];

/// Where the charts go.
pub(crate) fn dir() -> PathBuf {
    std::env::var_os("REDLOCK_BENCH_CHARTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/bench-charts"))
}

fn frame(title: &str, x_label: &str, y_label: &str) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/><text x="{}" y="18" text-anchor="middle" font-size="14">{title}</text><line x1="{LEFT}" y1="{}" x2="{}" y2="{}" stroke="black"/><line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{}" stroke="black"/><text x="{}" y="{}" text-anchor="middle">{x_label}</text><text x="14" y="{}" transform="rotate(-90 14 {})" text-anchor="middle">{y_label}</text>"#,
        W / 2.0,
        H - BOTTOM,
        W - RIGHT,
        H - BOTTOM,
        H - BOTTOM,
        (LEFT + W - RIGHT) / 2.0,
        H - 6.0,
        H / 2.0,
        H / 2.0,
    );
    s
}

fn legend(s: &mut String, names: &[&str]) {
    for (i, name) in names.iter().enumerate() {
        let y = TOP + 14.0 * i as f64;
        let _ = write!(
            s,
            r#"<rect x="{}" y="{}" width="10" height="10" fill="{}"/><text x="{}" y="{}">{name}</text>"#,
            W - RIGHT - 150.0,
            y,
            COLOURS[i % COLOURS.len()],
            W - RIGHT - 135.0,
            y + 9.0,
        );
    }
}

/// The share of waits at most x, x on a log scale from 10 µs to the longest wait.
pub(crate) fn wait_cdf(title: &str, series: &[(&str, &[u64])]) -> String {
    let mut s = frame(title, "wait (µs, log scale)", "share of acquisitions");
    let max = series
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .max()
        .unwrap_or(10)
        .max(100) as f64;
    let (lo, hi) = (10f64.log10(), max.log10());
    let x_of = |us: f64| LEFT + (us.max(10.0).log10() - lo) / (hi - lo) * (W - LEFT - RIGHT);
    let y_of = |f: f64| H - BOTTOM - f * (H - BOTTOM - TOP);
    let mut decade = 10f64;
    while decade <= max * 1.0001 {
        let x = x_of(decade);
        let _ = write!(
            s,
            r##"<line x1="{x}" y1="{}" x2="{x}" y2="{}" stroke="#ddd"/><text x="{x}" y="{}" text-anchor="middle">{}</text>"##,
            TOP,
            H - BOTTOM,
            H - BOTTOM + 14.0,
            decade as u64
        );
        decade *= 10.0;
    }
    for (i, (_, v)) in series.iter().enumerate() {
        let mut sorted = v.to_vec();
        sorted.sort_unstable();
        let n = sorted.len().max(1) as f64;
        let mut points = String::new();
        // At most ~400 points per curve keeps the file small.
        let step = (sorted.len() / 400).max(1);
        for (k, us) in sorted.iter().enumerate().step_by(step) {
            let _ = write!(
                points,
                "{:.1},{:.1} ",
                x_of(*us as f64),
                y_of((k + 1) as f64 / n)
            );
        }
        if let Some(last) = sorted.last() {
            let _ = write!(points, "{:.1},{:.1}", x_of(*last as f64), y_of(1.0));
        }
        let _ = write!(
            s,
            r#"<polyline fill="none" stroke="{}" stroke-width="2" points="{points}"/>"#,
            COLOURS[i % COLOURS.len()]
        );
    }
    let names: Vec<&str> = series.iter().map(|(n, _)| *n).collect();
    legend(&mut s, &names);
    s.push_str("</svg>\n");
    s
}

/// Acquisitions per client, one group of bars per subject.
pub(crate) fn per_client(title: &str, series: &[(&str, &[u64])]) -> String {
    let mut s = frame(title, "client", "acquisitions");
    let max = series
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let clients = series
        .iter()
        .map(|(_, v)| v.len())
        .max()
        .unwrap_or(1)
        .max(1);
    let slot = (W - LEFT - RIGHT) / clients as f64;
    let bar = slot / (series.len() as f64 + 1.0);
    for (i, (_, v)) in series.iter().enumerate() {
        for (c, n) in v.iter().enumerate() {
            let h = *n as f64 / max * (H - BOTTOM - TOP);
            let _ = write!(
                s,
                r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}"/>"#,
                LEFT + c as f64 * slot + i as f64 * bar + bar / 2.0,
                H - BOTTOM - h,
                bar,
                h,
                COLOURS[i % COLOURS.len()]
            );
        }
    }
    let _ = write!(
        s,
        r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
        LEFT - 4.0,
        TOP + 4.0,
        max as u64
    );
    let names: Vec<&str> = series.iter().map(|(n, _)| *n).collect();
    legend(&mut s, &names);
    s.push_str("</svg>\n");
    s
}

/// Writes both charts of one contention scenario; failures are reported, not fatal.
pub(crate) fn write_contended(tag: &str, title: &str, series: &[(&str, &[u64], &[u64])]) {
    let dir = dir();
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("charts: cannot create {}: {e}", dir.display());
        return;
    }
    let waits: Vec<(&str, &[u64])> = series.iter().map(|(n, w, _)| (*n, *w)).collect();
    let clients: Vec<(&str, &[u64])> = series.iter().map(|(n, _, c)| (*n, *c)).collect();
    for (file, svg) in [
        (
            format!("{tag}-waits.svg"),
            wait_cdf(&format!("{title}: waits"), &waits),
        ),
        (
            format!("{tag}-per-client.svg"),
            per_client(&format!("{title}: acquisitions per client"), &clients),
        ),
    ] {
        let path = dir.join(file);
        match std::fs::write(&path, svg) {
            Ok(()) => eprintln!("chart: {}", path.display()),
            Err(e) => eprintln!("charts: cannot write {}: {e}", path.display()),
        }
    }
}
