use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vmm_sys_util::eventfd::EventFd;

use super::*;

/// Records each signal it consumes from its eventfd, as a real subscriber
/// does (a spurious wake-up, e.g. right after registration, reads nothing).
struct Counter {
    fd: EventFd,
    seen: Vec<u32>,
}

impl Subscriber for Counter {
    fn ready(&mut self, tag: u32) {
        if self.fd.read().is_ok() {
            self.seen.push(tag);
        }
    }
}

fn counter() -> Arc<Mutex<Counter>> {
    Arc::new(Mutex::new(Counter {
        fd: EventFd::new(libc::EFD_NONBLOCK).unwrap(),
        seen: Vec::new(),
    }))
}

fn wait_for(mut cond: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}

fn fd_of(c: &Arc<Mutex<Counter>>) -> RawFd {
    use std::os::fd::AsRawFd;
    c.lock().unwrap().fd.as_raw_fd()
}

#[test]
fn readiness_waits_while_paused_and_is_served_on_resume() {
    let b = Backend::start(ClockMode::Realtime).unwrap();
    let c = counter();
    b.handle().watch(fd_of(&c), 7, c.clone());
    c.lock().unwrap().fd.write(1).unwrap();
    std::thread::sleep(Duration::from_millis(30));
    assert!(
        c.lock().unwrap().seen.is_empty(),
        "the backend starts paused: nothing runs before the VM does"
    );
    b.handle().resume();
    assert!(wait_for(|| c.lock().unwrap().seen == vec![7]));
    b.handle().pause();
    c.lock().unwrap().fd.write(1).unwrap();
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(c.lock().unwrap().seen, vec![7], "paused: not served");
    b.handle().resume();
    assert!(wait_for(|| c.lock().unwrap().seen == vec![7, 7]));
}

struct Drain(Arc<Mutex<Vec<&'static str>>>);
impl Drainable for Drain {
    fn pause(&mut self) {
        // A slow drain: pause() must not return before it finishes.
        std::thread::sleep(Duration::from_millis(20));
        self.0.lock().unwrap().push("drained");
    }
    fn resume(&mut self) {
        self.0.lock().unwrap().push("resumed");
    }
}

#[test]
fn pause_returns_only_after_every_device_drained() {
    let b = Backend::start(ClockMode::Realtime).unwrap();
    b.handle().resume();
    let log = Arc::new(Mutex::new(Vec::new()));
    b.handle()
        .add_drainable(Arc::new(Mutex::new(Drain(log.clone()))));
    b.handle().pause();
    assert_eq!(*log.lock().unwrap(), vec!["drained"]);
    b.handle().resume();
    assert!(wait_for(|| log.lock().unwrap().len() == 2));
    assert_eq!(*log.lock().unwrap(), vec!["drained", "resumed"]);
}

struct Fired(Arc<Mutex<Vec<(TimerId, u64)>>>);
impl TimerSubscriber for Fired {
    fn expired(&mut self, id: TimerId, now: u64) {
        self.0.lock().unwrap().push((id, now));
    }
}

#[test]
fn stepped_clock_fires_timers_only_when_stepped_past_them() {
    let b = Backend::start(ClockMode::Stepped).unwrap();
    b.handle().resume();
    let fired = Arc::new(Mutex::new(Vec::new()));
    let id = b
        .handle()
        .create_timer(Arc::new(Mutex::new(Fired(fired.clone()))));
    b.handle().arm_timer(id, 1_000_000);
    assert_eq!(b.handle().step(999_999), 999_999);
    assert!(fired.lock().unwrap().is_empty());
    assert_eq!(b.handle().step(1), 1_000_000);
    assert_eq!(*fired.lock().unwrap(), vec![(id, 1_000_000)]);
}

#[test]
fn realtime_timer_fires_on_its_own_and_not_while_paused() {
    let b = Backend::start(ClockMode::Realtime).unwrap();
    let fired = Arc::new(Mutex::new(Vec::new()));
    let id = b
        .handle()
        .create_timer(Arc::new(Mutex::new(Fired(fired.clone()))));
    b.handle().arm_timer(id, 10_000_000);
    std::thread::sleep(Duration::from_millis(40));
    assert!(fired.lock().unwrap().is_empty(), "guest time has not begun");
    b.handle().resume();
    assert!(wait_for(|| fired.lock().unwrap().len() == 1));
    assert!(fired.lock().unwrap()[0].1 >= 10_000_000);
}

#[test]
fn unwatch_and_clear_stop_delivery() {
    let b = Backend::start(ClockMode::Realtime).unwrap();
    b.handle().resume();
    let (c1, c2) = (counter(), counter());
    b.handle().watch(fd_of(&c1), 1, c1.clone());
    b.handle().watch(fd_of(&c2), 2, c2.clone());
    b.handle().unwatch(fd_of(&c1));
    b.handle().clear();
    c1.lock().unwrap().fd.write(1).unwrap();
    c2.lock().unwrap().fd.write(1).unwrap();
    std::thread::sleep(Duration::from_millis(30));
    assert!(c1.lock().unwrap().seen.is_empty());
    assert!(c2.lock().unwrap().seen.is_empty());
}

#[test]
fn a_relative_timer_counts_from_the_backend_clocks_present() {
    let b = Backend::start(ClockMode::Stepped).unwrap();
    b.handle().resume();
    let fired = Arc::new(Mutex::new(Vec::new()));
    let id = b
        .handle()
        .create_timer(Arc::new(Mutex::new(Fired(fired.clone()))));
    assert_eq!(b.handle().step(5_000), 5_000);
    b.handle().arm_timer_in(id, 1_000);
    assert_eq!(b.handle().step(999), 5_999);
    assert!(
        fired.lock().unwrap().is_empty(),
        "armed at 5000 for 1000 ns"
    );
    b.handle().step(1);
    assert_eq!(*fired.lock().unwrap(), vec![(id, 6_000)]);
}
