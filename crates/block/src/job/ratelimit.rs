//! A block job's `speed` (QEMU include/qemu/ratelimit.h with blockjob.c's
//! 100 ms slice): bytes are counted per slice; once a slice's quota is
//! used up, the next request waits until the slices the excess covers have
//! passed.

use std::time::{Duration, Instant};

/// `BLOCK_JOB_SLICE_TIME`.
const SLICE: Duration = Duration::from_millis(100);

#[derive(Debug)]
pub struct RateLimit {
    slice_start: Instant,
    slice_end: Instant,
    /// Bytes per slice; 0 means unlimited.
    quota: u64,
    dispatched: u64,
}

impl RateLimit {
    pub fn new(speed: u64) -> Self {
        let now = Instant::now();
        let mut r = RateLimit {
            slice_start: now,
            slice_end: now,
            quota: 0,
            dispatched: 0,
        };
        r.set_speed(speed);
        r
    }

    /// `ratelimit_set_speed`: `speed` bytes per second (0: unlimited).
    pub fn set_speed(&mut self, speed: u64) {
        self.quota = if speed == 0 {
            0
        } else {
            ((speed as f64 * SLICE.as_nanos() as f64 / 1e9) as u64).max(1)
        };
    }

    /// `ratelimit_calculate_delay`: how long to wait after dispatching
    /// `n` more bytes.
    pub fn delay(&mut self, n: u64, now: Instant) -> Duration {
        if self.quota == 0 {
            return Duration::ZERO;
        }
        if self.slice_end < now {
            self.slice_start = now;
            self.slice_end = now + SLICE;
            self.dispatched = 0;
        }
        self.dispatched += n;
        if self.dispatched < self.quota {
            return Duration::ZERO;
        }
        let slices = self.dispatched as f64 / self.quota as f64;
        self.slice_end = self.slice_start + SLICE.mul_f64(slices);
        self.slice_end.saturating_duration_since(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlimited_never_waits() {
        let mut r = RateLimit::new(0);
        assert_eq!(r.delay(u64::MAX / 2, Instant::now()), Duration::ZERO);
    }

    /// 1 MiB/s is 104857 bytes per 100 ms slice: a 512 KiB chunk covers
    /// five slices, so the next one waits about 500 ms.
    #[test]
    fn a_chunk_over_quota_waits_for_the_slices_it_covers() {
        let mut r = RateLimit::new(1 << 20);
        let t0 = Instant::now();
        let d = r.delay(512 << 10, t0);
        assert!(
            d > Duration::from_millis(490) && d <= Duration::from_millis(501),
            "{d:?}"
        );
        // Within the quota of a fresh slice: no wait.
        let later = t0 + Duration::from_secs(2);
        assert_eq!(r.delay(1000, later), Duration::ZERO);
    }
}
