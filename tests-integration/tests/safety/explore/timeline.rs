//! A self-contained SVG timeline of a run: holds per client and resource as bars with
//! their validity ends marked, faults shaded per node, violations as red lines.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::driver::Outcome;

const LEFT: f64 = 190.0;
const WIDTH: f64 = 1800.0;
const ROW: f64 = 16.0;
const TOP: f64 = 30.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn fault_colour(kind: &str) -> &'static str {
    match kind {
        "pause" => "#f4b400",
        "kill" => "#7b1fa2",
        "partition" => "#9e9e9e",
        "drop_requests" => "#bdbdbd",
        "drop_replies" => "#757575",
        "resets" => "#ff7043",
        "flap" => "#26a69a",
        "latency" => "#90caf9",
        "spike" => "#42a5f5",
        _ => "#cddc39",
    }
}

pub fn svg(out: &Outcome, nodes: usize, title: &str) -> String {
    let (t0, t1) = (out.start_ns, out.end_ns.max(out.start_ns + 1));
    let plot = WIDTH - LEFT - 10.0;
    let x = |t: u64| LEFT + (t.clamp(t0, t1) - t0) as f64 / (t1 - t0) as f64 * plot;
    let mut rows: BTreeMap<(u32, String), usize> = BTreeMap::new();
    for b in &out.bars {
        let n = rows.len();
        rows.entry((b.client, b.label.clone())).or_insert(n);
    }
    // Number the rows in sorted order.
    for (i, v) in rows.values_mut().enumerate() {
        *v = nodes + i;
    }
    let height = TOP + (nodes + rows.len() + 1) as f64 * ROW + 20.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="monospace" font-size="11">"#
    );
    let _ = writeln!(
        s,
        r#"<text x="4" y="14" font-size="13">{}</text>"#,
        esc(title)
    );
    let y = |row: usize| TOP + row as f64 * ROW;
    // Seconds.
    let secs = (t1 - t0) / 1_000_000_000;
    for k in 0..=secs {
        let xx = x(t0 + k * 1_000_000_000);
        let _ = writeln!(
            s,
            r##"<line x1="{xx:.1}" y1="{TOP}" x2="{xx:.1}" y2="{height}" stroke="#eee"/><text x="{xx:.1}" y="{:.1}" fill="#999">{k}s</text>"##,
            TOP - 4.0
        );
    }
    for n in 0..nodes {
        let _ = writeln!(s, r#"<text x="4" y="{:.1}">node {n}</text>"#, y(n) + 11.0);
    }
    for ((client, label), row) in &rows {
        let _ = writeln!(
            s,
            r#"<text x="4" y="{:.1}">c{client} {}</text>"#,
            y(*row) + 11.0,
            esc(label)
        );
    }
    for f in &out.fault_bars {
        let (a, b) = (x(f.start_ns), x(f.end_ns).max(x(f.start_ns) + 2.0));
        let _ = writeln!(
            s,
            r#"<rect x="{a:.1}" y="{:.1}" width="{:.1}" height="{}" fill="{}" opacity="0.8"><title>node {} {} {:.0}ms</title></rect>"#,
            y(f.node) + 2.0,
            b - a,
            ROW - 4.0,
            fault_colour(&f.kind),
            f.node,
            f.kind,
            (f.end_ns - f.start_ns) as f64 / 1e6
        );
    }
    for b in &out.bars {
        let row = rows[&(b.client, b.label.clone())];
        let end = b.end_ns.unwrap_or(t1);
        let (a, e) = (x(b.acquired_ns), x(end).max(x(b.acquired_ns) + 1.5));
        let colour = if b.fenced { "#1565c0" } else { "#43a047" };
        let _ = writeln!(
            s,
            r#"<rect x="{a:.1}" y="{:.1}" width="{:.1}" height="{}" fill="{colour}" opacity="0.7"><title>c{} {} held {:.0}ms, ended: {}</title></rect>"#,
            y(row) + 3.0,
            e - a,
            ROW - 6.0,
            b.client,
            esc(&b.label),
            (end.saturating_sub(b.acquired_ns)) as f64 / 1e6,
            esc(&b.end_how)
        );
        for m in &b.marks {
            let mx = x(*m);
            let _ = writeln!(
                s,
                r##"<line x1="{mx:.1}" y1="{:.1}" x2="{mx:.1}" y2="{:.1}" stroke="#000" stroke-width="1.5"><title>validity end</title></line>"##,
                y(row) + 1.0,
                y(row) + ROW - 1.0
            );
        }
    }
    for v in &out.violations {
        let vx = x(v.t_ns);
        let _ = writeln!(
            s,
            r##"<line x1="{vx:.1}" y1="{TOP}" x2="{vx:.1}" y2="{height}" stroke="#d50000" stroke-width="2"><title>{}</title></line>"##,
            esc(&v.to_string())
        );
        if let Some(c) = v.client {
            for ((client, _), row) in &rows {
                if *client == c {
                    let _ = writeln!(
                        s,
                        r##"<rect x="{:.1}" y="{:.1}" width="8" height="{}" fill="#d50000"/>"##,
                        vx - 4.0,
                        y(*row),
                        ROW
                    );
                }
            }
        }
    }
    s.push_str("</svg>\n");
    s
}
