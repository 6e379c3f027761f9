//! Clocks and statistics: client CPU from the kernel's per-thread accounting, latency
//! percentiles, medians over rounds.

use std::fs;
use std::time::Duration;

/// The name given to the client runtime's threads, so their CPU can be told apart from
/// the harness's (whose proxies live in this process too, on threads named `harness`).
pub(crate) const CLIENT_THREAD: &str = "client-rt";

/// CPU time, in ns, used so far by the client side of this process: the main thread (the
/// synchronous floor runs there) and every thread of the client runtime. The harness
/// thread, whose proxies forward the fault scenarios' traffic, is left out, and so are the
/// `redis-server` processes.
///
/// `/proc/<pid>/task/<tid>/schedstat` counts on-CPU time in ns, much finer than the
/// 10 ms ticks of `/proc/self/stat` or the µs of `getrusage`, and per thread.
pub(crate) fn client_cpu_ns() -> u64 {
    let pid = std::process::id().to_string();
    let Ok(tasks) = fs::read_dir("/proc/self/task") else {
        return 0;
    };
    let mut total = 0u64;
    for task in tasks.flatten() {
        let path = task.path();
        let tid = task.file_name();
        let is_main = tid.to_str() == Some(pid.as_str());
        let comm = fs::read_to_string(path.join("comm")).unwrap_or_default();
        if !is_main && !comm.trim_end().starts_with(CLIENT_THREAD) {
            continue;
        }
        let stat = fs::read_to_string(path.join("schedstat")).unwrap_or_default();
        total += stat
            .split_whitespace()
            .next()
            .and_then(|ns| ns.parse::<u64>().ok())
            .unwrap_or(0);
    }
    total
}

/// What one subject did in one round of one scenario.
#[derive(Debug, Clone, Default)]
pub(crate) struct Round {
    /// Completed operations (lock + unlock, or acquisitions for the contended scenario).
    pub(crate) ops: u64,
    pub(crate) elapsed: Duration,
    /// Latency of each operation in µs (for the contended scenario: the wait from the
    /// first attempt to success). Operations cut off at the cap count as the cap.
    pub(crate) latencies_us: Vec<u64>,
    pub(crate) cpu_ns: u64,
    /// Operations that returned an error.
    pub(crate) errors: u64,
    /// Operations cut off at the per-operation cap.
    pub(crate) capped: u64,
    /// Contended scenario only: acquisitions per client.
    pub(crate) per_client: Vec<u64>,
    /// Contended scenario only: acquisitions by the client that held the lock last.
    pub(crate) retakes: u64,
    /// Contended scenario only: times two clients were inside the critical section at
    /// once. Must be zero.
    pub(crate) overlaps: u64,
    /// Contended scenario only: per acquisition, µs from the previous holder's release
    /// call to this acquisition's success (the hand-over as the clients see it).
    pub(crate) handover_us: Vec<u64>,
}

impl Round {
    pub(crate) fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub(crate) fn percentile_us(&self, p: f64) -> f64 {
        percentile(&self.latencies_us, p)
    }

    /// CPU per operation in µs; errors and cut-off operations count as operations too.
    pub(crate) fn cpu_us_per_op(&self) -> f64 {
        let n = self.ops + self.errors + self.capped;
        self.cpu_ns as f64 / 1000.0 / n.max(1) as f64
    }

    /// CPU per completed operation in µs: the contended scenario's cost per acquisition.
    pub(crate) fn cpu_us_per_success(&self) -> f64 {
        self.cpu_ns as f64 / 1000.0 / self.ops.max(1) as f64
    }

    /// (least, most) acquisitions of one client, each over the mean.
    pub(crate) fn fairness(&self) -> (f64, f64) {
        if self.per_client.is_empty() {
            return (f64::NAN, f64::NAN);
        }
        let mean = self.per_client.iter().sum::<u64>() as f64 / self.per_client.len() as f64;
        if mean == 0.0 {
            return (f64::NAN, f64::NAN);
        }
        let min = *self.per_client.iter().min().unwrap_or(&0) as f64;
        let max = *self.per_client.iter().max().unwrap_or(&0) as f64;
        (min / mean, max / mean)
    }

    pub(crate) fn retake_share(&self) -> f64 {
        self.retakes as f64 / self.ops.max(1) as f64
    }
}

/// Nearest-rank percentile (`p` in 0..=100) of unsorted samples; NaN when empty.
pub(crate) fn percentile(samples: &[u64], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64
}

/// The median of per-round figures (NaN ignored); NaN when there is none.
pub(crate) fn median(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.into_iter().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// The medians over rounds of every figure the tables show, for one subject.
#[derive(Debug, Clone)]
pub(crate) struct Summary {
    pub(crate) ops_per_sec: f64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) max_us: f64,
    pub(crate) cpu_us_per_op: f64,
    pub(crate) cpu_us_per_success: f64,
    pub(crate) errors: u64,
    pub(crate) capped: u64,
    pub(crate) fair_min: f64,
    pub(crate) fair_max: f64,
    pub(crate) retake: f64,
    pub(crate) overlaps: u64,
    /// Every operation's latency of every round (µs), for the charts.
    pub(crate) all_us: Vec<u64>,
    /// Contended scenarios: acquisitions per client, summed over the rounds.
    pub(crate) per_client: Vec<u64>,
}

impl Summary {
    pub(crate) fn of(rounds: &[Round]) -> Self {
        Self {
            ops_per_sec: median(rounds.iter().map(Round::ops_per_sec)),
            p50_us: median(rounds.iter().map(|r| r.percentile_us(50.0))),
            p99_us: median(rounds.iter().map(|r| r.percentile_us(99.0))),
            max_us: median(rounds.iter().map(|r| r.percentile_us(100.0))),
            cpu_us_per_op: median(rounds.iter().map(Round::cpu_us_per_op)),
            cpu_us_per_success: median(rounds.iter().map(Round::cpu_us_per_success)),
            errors: rounds.iter().map(|r| r.errors).sum(),
            capped: rounds.iter().map(|r| r.capped).sum(),
            fair_min: median(rounds.iter().map(|r| r.fairness().0)),
            fair_max: median(rounds.iter().map(|r| r.fairness().1)),
            retake: median(rounds.iter().map(Round::retake_share)),
            overlaps: rounds.iter().map(|r| r.overlaps).sum(),
            all_us: rounds
                .iter()
                .flat_map(|r| r.latencies_us.iter().copied())
                .collect(),
            per_client: rounds.iter().fold(Vec::new(), |mut sum, r| {
                sum.resize(sum.len().max(r.per_client.len()), 0);
                for (s, n) in sum.iter_mut().zip(&r.per_client) {
                    *s += n;
                }
                sum
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_nearest_rank() {
        let s: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&s, 50.0), 50.0);
        assert_eq!(percentile(&s, 99.0), 99.0);
        assert_eq!(percentile(&s, 100.0), 100.0);
        assert_eq!(percentile(&[7], 99.0), 7.0);
        assert!(percentile(&[], 50.0).is_nan());
    }

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median([3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median([4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median([f64::NAN, 5.0]), 5.0);
        assert!(median([]).is_nan());
    }

    #[test]
    fn main_thread_cpu_is_counted() {
        let before = client_cpu_ns();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(client_cpu_ns() > before);
    }
}
