//! The clock that validity is measured on: one that keeps counting while the machine
//! is suspended.
//!
//! `std::time::Instant` is `CLOCK_MONOTONIC` on Linux, which stops while the machine is
//! suspended. The Redis nodes' clocks do not stop, so a laptop or VM suspended while
//! holding a lock would wake up believing in validity the nodes have long since let
//! expire. On Linux validity is therefore measured on `CLOCK_BOOTTIME` (monotonic, and
//! counting through suspend); elsewhere on `Instant`, whose platforms' monotonic clocks
//! are documented in `docs/safety.md`.
//!
//! A [`Deadline`] is kept on both clocks. Public getters still speak `Instant`
//! (`valid_until()`): the stored one while the two clocks agree, so that it is the same
//! value at every call, and an earlier one once the machine was suspended (the boot
//! clock then shows less left than the monotonic one).

use std::fmt;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use crate::sync::lock;

/// How far ahead "never" lies for timers: tokio's own far future is 30 years, and any
/// deadline past that is treated as never by this crate too (no `Instant + Duration`
/// may overflow).
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

/// A point on a [`Clock`]: time since the clock's origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(crate) struct Moment(Duration);

impl Moment {
    /// `self + d`, saturating rather than overflowing.
    pub(crate) fn saturating_add(self, d: Duration) -> Self {
        Self(self.0.saturating_add(d))
    }

    /// `self − d`, or the origin when `d` is longer.
    pub(crate) fn saturating_sub(self, d: Duration) -> Self {
        Self(self.0.saturating_sub(d))
    }

    /// How long after `earlier` this is; zero if it is not after it.
    pub(crate) fn saturating_since(self, earlier: Moment) -> Duration {
        self.0.saturating_sub(earlier.0)
    }
}

/// Below this, a difference between what is left on the two clocks is reading noise,
/// not a suspend: the clocks are read one after the other, nanoseconds apart.
const SUSPEND_TOLERANCE: Duration = Duration::from_millis(1);

/// An instant on both clocks: the monotonic one (`Instant`, what timers and the public
/// API use) and the suspend-aware one. Validity is left only while both say so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Deadline {
    at: Instant,
    boot: Moment,
}

impl Deadline {
    /// `d` later, saturating (30 years stand for "never" on the monotonic side).
    pub(crate) fn after(self, d: Duration) -> Self {
        Self {
            at: self.at.checked_add(d.min(FAR_FUTURE)).unwrap_or(self.at),
            boot: self.boot.saturating_add(d),
        }
    }

    /// `d` earlier, saturating.
    pub(crate) fn before(self, d: Duration) -> Self {
        Self {
            at: self.at.checked_sub(d).unwrap_or(self.at),
            boot: self.boot.saturating_sub(d),
        }
    }

    /// The earlier of the two, on each clock.
    pub(crate) fn min(self, other: Self) -> Self {
        Self {
            at: self.at.min(other.at),
            boot: self.boot.min(other.boot),
        }
    }

    /// Whether this is later than `other` (on the suspend-aware clock).
    pub(crate) fn is_after(self, other: Self) -> bool {
        self.boot > other.boot
    }
}

/// Where validity is measured. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Clock(Source);

#[derive(Clone)]
enum Source {
    /// `CLOCK_BOOTTIME` (Linux): counts through suspend.
    #[cfg(target_os = "linux")]
    Boot,
    /// `Instant`, since the first use in this process.
    Monotonic,
    /// A clock a test moves by hand, to stand for a suspend.
    #[cfg_attr(not(test), allow(dead_code))]
    Manual(Arc<Mutex<Duration>>),
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match &self.0 {
            #[cfg(target_os = "linux")]
            Source::Boot => "boottime",
            Source::Monotonic => "monotonic",
            Source::Manual(_) => "manual",
        };
        f.write_str(name)
    }
}

/// The origin of the `Instant`-based clock.
static ORIGIN: LazyLock<Instant> = LazyLock::new(Instant::now);

impl Clock {
    /// The suspend-aware clock of this platform: `CLOCK_BOOTTIME` on Linux when the
    /// kernel offers it (it has since 2.6.39), `Instant` otherwise.
    pub(crate) fn system() -> Self {
        #[cfg(target_os = "linux")]
        if boottime().is_some() {
            return Self(Source::Boot);
        }
        Self(Source::Monotonic)
    }

    /// A clock that only moves when the test says so (see [`Clock::advance`]).
    #[cfg(test)]
    pub(crate) fn manual() -> (Self, Arc<Mutex<Duration>>) {
        let at = Arc::new(Mutex::new(Duration::from_secs(1)));
        (Self(Source::Manual(Arc::clone(&at))), at)
    }

    /// Now, on this clock.
    pub(crate) fn now(&self) -> Moment {
        match &self.0 {
            #[cfg(target_os = "linux")]
            // Probed when the clock was made; a failure now would mean the kernel took
            // the clock away, and the monotonic clock is then the best there is.
            Source::Boot => Moment(boottime().unwrap_or_else(|| ORIGIN.elapsed())),
            Source::Monotonic => Moment(ORIGIN.elapsed()),
            Source::Manual(at) => Moment(*lock(at)),
        }
    }

    /// Now, on both clocks.
    pub(crate) fn stamp(&self) -> Deadline {
        Deadline {
            at: Instant::now(),
            boot: self.now(),
        }
    }

    /// How long since `then`: the longer of the two clocks' counts.
    pub(crate) fn since(&self, then: Deadline) -> Duration {
        let mono = then.at.elapsed();
        mono.max(self.now().saturating_since(then.boot))
    }

    /// What is left until `deadline`: the shorter of the two clocks' counts; zero once
    /// either has passed it.
    pub(crate) fn left(&self, deadline: Deadline) -> Duration {
        let mono = deadline.at.saturating_duration_since(Instant::now());
        mono.min(deadline.boot.saturating_since(self.now()))
    }

    /// `deadline` as an `Instant`: the stored one, unless the machine was suspended
    /// since (then now plus what the suspend-aware clock says is left).
    pub(crate) fn instant(&self, deadline: Deadline) -> Instant {
        let now = Instant::now();
        let mono = deadline.at.saturating_duration_since(now);
        let boot = deadline.boot.saturating_since(self.now());
        if boot.saturating_add(SUSPEND_TOLERANCE) < mono {
            now.checked_add(boot).unwrap_or(now)
        } else {
            deadline.at
        }
    }
}

/// `Instant::now() + d`, capped 30 years ahead instead of overflowing.
pub(crate) fn instant_after(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d.min(FAR_FUTURE)).unwrap_or(now)
}

/// Like [`instant_after`], on tokio's clock (which a test may pause): for deadlines that
/// tokio's timers wait for.
pub(crate) fn tokio_instant_after(d: Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(d.min(FAR_FUTURE)).unwrap_or(now)
}

#[cfg(target_os = "linux")]
fn boottime() -> Option<Duration> {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME).ok()?;
    Some(Duration::from(ts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moments_saturate() {
        let m = Moment(Duration::from_secs(5));
        assert_eq!(m.saturating_add(Duration::MAX), Moment(Duration::MAX));
        assert_eq!(m.saturating_sub(Duration::MAX), Moment::default());
        assert_eq!(
            m.saturating_since(Moment(Duration::from_secs(9))),
            Duration::ZERO
        );
        assert_eq!(
            Moment(Duration::from_secs(9)).saturating_since(m),
            Duration::from_secs(4)
        );
    }

    #[test]
    fn far_deadlines_do_not_overflow() {
        let clock = Clock::system();
        let far = clock.stamp().after(Duration::MAX);
        assert!(clock.instant(far) > Instant::now() + Duration::from_secs(86_400 * 365));
        assert!(clock.left(far) > Duration::from_secs(86_400 * 365));
        let _ = clock.stamp().before(Duration::MAX);
        let _ = instant_after(Duration::MAX);
    }

    #[test]
    fn a_deadline_reads_the_same_instant_at_every_call() {
        let clock = Clock::system();
        let d = clock.stamp().after(Duration::from_secs(5));
        let first = clock.instant(d);
        for _ in 0..1000 {
            assert_eq!(clock.instant(d), first);
        }
    }

    #[test]
    fn a_suspend_shortens_what_is_left() {
        let (clock, at) = Clock::manual();
        let d = clock.stamp().after(Duration::from_secs(10));
        assert!(clock.left(d) > Duration::from_secs(9));
        let promised = clock.instant(d);
        // The machine sleeps 4 s: the monotonic clock stands still, the other does not.
        *lock(&at) += Duration::from_secs(4);
        assert!(clock.left(d) <= Duration::from_secs(6));
        // (The manual clock stands still between reads; `Instant` does not.)
        let slack = Duration::from_millis(100);
        assert!(clock.instant(d) <= promised - Duration::from_secs(4) + slack);
        assert!(clock.since(d.before(Duration::from_secs(10))) >= Duration::from_secs(4));
        *lock(&at) += Duration::from_secs(7);
        assert_eq!(clock.left(d), Duration::ZERO);
        assert!(clock.instant(d) <= Instant::now());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn linux_measures_on_boottime() {
        let clock = Clock::system();
        assert_eq!(format!("{clock:?}"), "boottime");
        let before = boottime().unwrap();
        let now = clock.now();
        let after = boottime().unwrap();
        assert!(Moment(before) <= now && now <= Moment(after));
    }

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let (clock, at) = Clock::manual();
        let t0 = clock.now();
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(clock.now(), t0);
        *lock(&at) += Duration::from_secs(30);
        assert_eq!(clock.now().saturating_since(t0), Duration::from_secs(30));
    }
}
