//! The guest's virtual clock (QEMU_CLOCK_VIRTUAL): nanoseconds of guest
//! run time. It advances with the host's monotonic clock while the VM runs,
//! stands still while it is paused, and in stepped mode moves only when a
//! harness steps it (QEMU's qtest accelerator, `clock_step`).
//!
//! Device timers (watchdogs, later the qtest clock) are deadlines on this
//! clock kept by [`Timers`]; the backend thread sleeps until the earliest.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockMode {
    /// Follows host time while running.
    Realtime,
    /// Moves only through [`VirtualClock::step`].
    Stepped,
}

#[derive(Debug)]
pub struct VirtualClock {
    mode: ClockMode,
    /// Virtual time at `since` (or the frozen time while stopped).
    base_ns: u64,
    /// Host instant at which `base_ns` was taken; `None` while stopped.
    since: Option<Instant>,
}

impl VirtualClock {
    /// A stopped clock at 0 (the VM starts paused until `resume`).
    pub fn new(mode: ClockMode) -> Self {
        Self {
            mode,
            base_ns: 0,
            since: None,
        }
    }

    pub fn now_ns(&self) -> u64 {
        match self.since {
            Some(t) => self
                .base_ns
                .saturating_add(t.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64),
            None => self.base_ns,
        }
    }

    pub fn running(&self) -> bool {
        self.since.is_some() || (self.mode == ClockMode::Stepped && self.base_ns > 0)
    }

    /// The VM runs: a realtime clock starts following host time.
    pub fn resume(&mut self) {
        if self.mode == ClockMode::Realtime && self.since.is_none() {
            self.since = Some(Instant::now());
        }
    }

    /// The VM stopped: the clock freezes where it is.
    pub fn pause(&mut self) {
        self.base_ns = self.now_ns();
        self.since = None;
    }

    /// Stepped mode: advances by `ns`. Ignored on a realtime clock.
    pub fn step(&mut self, ns: u64) {
        if self.mode == ClockMode::Stepped {
            self.base_ns = self.base_ns.saturating_add(ns);
        }
    }

    /// Host time until virtual time `deadline_ns` arrives, `None` if it never
    /// will by itself (stopped, or stepped mode).
    pub fn host_delay_until(&self, deadline_ns: u64) -> Option<Duration> {
        self.since?;
        Some(Duration::from_nanos(
            deadline_ns.saturating_sub(self.now_ns()),
        ))
    }
}

/// A read-only view of the backend's [`VirtualClock`] for other threads.
/// Only the backend thread moves the clock (run, pause, step).
#[derive(Clone)]
pub struct GuestClock(Arc<Mutex<VirtualClock>>);

impl GuestClock {
    pub(super) fn new(clock: Arc<Mutex<VirtualClock>>) -> Self {
        Self(clock)
    }

    pub fn now_ns(&self) -> u64 {
        crate::sync::lock(&self.0).now_ns()
    }
}

impl devices::Clock for GuestClock {
    fn now_ns(&self) -> i128 {
        i128::from(GuestClock::now_ns(self))
    }
}

/// A timer's identity, handed out by [`Timers::create`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimerId(pub u32);

/// Deadlines on the virtual clock, at most one per timer (QEMU's
/// `timer_mod` replaces a pending deadline).
#[derive(Debug, Default)]
pub struct Timers {
    next_id: u32,
    deadlines: BTreeMap<TimerId, u64>,
}

impl Timers {
    pub fn create(&mut self) -> TimerId {
        self.next_id += 1;
        TimerId(self.next_id)
    }

    /// Arms `id` for virtual time `deadline_ns`, replacing any earlier arming.
    pub fn arm(&mut self, id: TimerId, deadline_ns: u64) {
        self.deadlines.insert(id, deadline_ns);
    }

    pub fn cancel(&mut self, id: TimerId) {
        self.deadlines.remove(&id);
    }

    /// The earliest pending deadline.
    pub fn next_deadline(&self) -> Option<u64> {
        self.deadlines.values().copied().min()
    }

    /// Removes and returns every timer due at `now_ns`, earliest first.
    pub fn expire(&mut self, now_ns: u64) -> Vec<TimerId> {
        let mut due: Vec<(u64, TimerId)> = self
            .deadlines
            .iter()
            .filter(|(_, &d)| d <= now_ns)
            .map(|(&id, &d)| (d, id))
            .collect();
        due.sort();
        for (_, id) in &due {
            self.deadlines.remove(id);
        }
        due.into_iter().map(|(_, id)| id).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn realtime_clock_stands_still_while_paused() {
        let mut c = VirtualClock::new(ClockMode::Realtime);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(c.now_ns(), 0, "a VM that never ran has no guest time");
        c.resume();
        std::thread::sleep(Duration::from_millis(20));
        c.pause();
        let frozen = c.now_ns();
        assert!(frozen >= 20_000_000, "{frozen}");
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(c.now_ns(), frozen, "paused time does not count");
        c.resume();
        assert!(c.now_ns() >= frozen);
        assert!(c.now_ns() < frozen + 15_000_000, "resumes where it stopped");
    }

    #[test]
    fn stepped_clock_moves_only_when_stepped() {
        let mut c = VirtualClock::new(ClockMode::Stepped);
        c.resume();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(c.now_ns(), 0);
        c.step(1_000);
        assert_eq!(c.now_ns(), 1_000);
        assert_eq!(c.host_delay_until(5_000), None, "only a step gets there");
        let mut r = VirtualClock::new(ClockMode::Realtime);
        r.step(1_000);
        assert_eq!(r.now_ns(), 0, "a realtime clock cannot be stepped");
    }

    #[test]
    fn timers_fire_in_deadline_order_and_rearming_replaces() {
        let mut t = Timers::default();
        let (a, b, c) = (t.create(), t.create(), t.create());
        t.arm(a, 300);
        t.arm(b, 100);
        t.arm(c, 200);
        t.arm(a, 150); // replaces 300
        assert_eq!(t.next_deadline(), Some(100));
        assert_eq!(t.expire(99), vec![]);
        assert_eq!(t.expire(160), vec![b, a]);
        t.cancel(c);
        assert_eq!(t.next_deadline(), None);
        assert_eq!(t.expire(u64::MAX), vec![]);
    }
}
