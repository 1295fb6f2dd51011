//! The device-backend event thread: one mio loop that serves every device
//! backend's file descriptors (virtqueue kick ioeventfds, block completion
//! eventfds, the RTC's timer, the SCI resample fd, later TAP fds) and the
//! timers on the guest's virtual clock ([`clock`]).
//!
//! Other threads reach it only through [`BackendMsg`]s sent by a
//! [`BackendHandle`]; it reaches the machine's owner only through the
//! controller's typed messages. It owns the run/pause state of the device
//! side: [`BackendHandle::pause`] returns once every [`Drainable`] has
//! drained (QEMU's `bdrv_drain_all()` in `do_vm_stop()`), and until
//! [`BackendHandle::resume`] no subscriber runs, so no device writes guest
//! memory or an image while the VM is stopped. Readiness that arrives while
//! paused is remembered and served on resume (mio is edge-triggered).

pub mod clock;

use std::collections::{BTreeSet, HashMap};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::sync::lock;
pub use clock::GuestClock;
pub use clock::TimerId;
use clock::{ClockMode, Timers, VirtualClock};

const WAKER: Token = Token(0);
/// After serving a device, keep polling without sleeping for this long: the
/// next doorbell or completion usually follows within microseconds, and a
/// sleeping thread costs a cross-CPU wake-up (expensive under nested KVM).
/// QEMU's iothreads do the same (`poll-max-ns`, 32 µs by default).
const POLL_WINDOW: Duration = Duration::from_micros(50);

/// A backend that reacts to a file descriptor becoming readable. It must
/// consume the readiness (read the eventfd or timerfd): the loop is
/// edge-triggered.
pub trait Subscriber: Send {
    fn ready(&mut self, tag: u32);
}

/// A device with requests in flight that `stop` must wait for.
pub trait Drainable: Send {
    /// Completes or parks every in-flight request; afterwards nothing is
    /// written to guest memory or a backend until [`Drainable::resume`].
    fn pause(&mut self);
    fn resume(&mut self);
}

/// A timer's callback, run on the backend thread when its deadline passes.
pub trait TimerSubscriber: Send {
    fn expired(&mut self, id: TimerId, now_ns: u64);
}

pub type SharedSubscriber = Arc<Mutex<dyn Subscriber>>;

/// What other threads ask of the backend thread.
pub enum BackendMsg {
    Watch {
        fd: RawFd,
        tag: u32,
        target: SharedSubscriber,
    },
    Unwatch {
        fd: RawFd,
    },
    AddDrainable(Arc<Mutex<dyn Drainable>>),
    CreateTimer(TimerId, Arc<Mutex<dyn TimerSubscriber>>),
    ArmTimer(TimerId, u64),
    /// Arms a timer `delay_ns` after the virtual clock's present.
    ArmTimerIn(TimerId, u64),
    CancelTimer(TimerId),
    /// Drain and stop serving; the reply comes once drained.
    Pause(Sender<()>),
    /// A drained section (QEMU's `bdrv_drained_begin`): drain and stop
    /// serving devices while guest time goes on; the reply says whether it
    /// drained (false: already paused).
    DrainBegin(Sender<bool>),
    DrainEnd,
    Resume,
    /// Stepped clock: advance and run what became due; reply when done.
    Step(u64, Sender<u64>),
    /// Forget every watch, drainable and timer (machine reset: the devices
    /// re-register themselves); reply when done.
    Clear(Sender<()>),
    Exit,
}

/// The sending side, cheap to clone.
#[derive(Clone)]
pub struct BackendHandle {
    tx: Sender<BackendMsg>,
    waker: Arc<Waker>,
    next_timer: Arc<AtomicU32>,
    clock: GuestClock,
}

impl BackendHandle {
    fn send(&self, msg: BackendMsg) {
        if self.tx.send(msg).is_ok() {
            let _ = self.waker.wake();
        }
    }

    /// Serves `target.ready(tag)` whenever `fd` becomes readable.
    pub fn watch(&self, fd: RawFd, tag: u32, target: SharedSubscriber) {
        self.send(BackendMsg::Watch { fd, tag, target });
    }

    pub fn unwatch(&self, fd: RawFd) {
        self.send(BackendMsg::Unwatch { fd });
    }

    pub fn add_drainable(&self, d: Arc<Mutex<dyn Drainable>>) {
        self.send(BackendMsg::AddDrainable(d));
    }

    pub fn create_timer(&self, target: Arc<Mutex<dyn TimerSubscriber>>) -> TimerId {
        let id = TimerId(self.next_timer.fetch_add(1, Ordering::Relaxed));
        self.send(BackendMsg::CreateTimer(id, target));
        id
    }

    /// Fires `id` at virtual time `deadline_ns` (replacing an earlier arming).
    pub fn arm_timer(&self, id: TimerId, deadline_ns: u64) {
        self.send(BackendMsg::ArmTimer(id, deadline_ns));
    }

    /// Fires `id` once `delay_ns` of virtual time has passed from now (the
    /// backend thread's now: callers elsewhere have no clock to add to).
    pub fn arm_timer_in(&self, id: TimerId, delay_ns: u64) {
        self.send(BackendMsg::ArmTimerIn(id, delay_ns));
    }

    /// The guest's virtual clock, readable on any thread (a watchdog's
    /// register write on a vCPU computes its deadline from it).
    pub fn guest_clock(&self) -> GuestClock {
        self.clock.clone()
    }

    pub fn cancel_timer(&self, id: TimerId) {
        self.send(BackendMsg::CancelTimer(id));
    }

    /// Returns once every drainable has drained and no subscriber runs.
    pub fn pause(&self) {
        let (tx, rx) = mpsc::channel();
        self.send(BackendMsg::Pause(tx));
        let _ = rx.recv();
    }

    pub fn resume(&self) {
        self.send(BackendMsg::Resume);
    }

    /// Runs `f` with every device drained and held (no request in flight,
    /// none started), the VM's clock running on: a block graph change such
    /// as a snapshot's switch to a new overlay happens here.
    pub fn drained<T>(&self, f: impl FnOnce() -> T) -> T {
        let (tx, rx) = mpsc::channel();
        self.send(BackendMsg::DrainBegin(tx));
        let drained = rx.recv().unwrap_or(false);
        let out = f();
        if drained {
            self.send(BackendMsg::DrainEnd);
        }
        out
    }

    /// Stepped clock only: advances it by `ns`, runs the timers that became
    /// due, and returns the new virtual time.
    pub fn step(&self, ns: u64) -> u64 {
        let (tx, rx) = mpsc::channel();
        self.send(BackendMsg::Step(ns, tx));
        rx.recv().unwrap_or(0)
    }

    pub fn clear(&self) {
        let (tx, rx) = mpsc::channel();
        self.send(BackendMsg::Clear(tx));
        let _ = rx.recv();
    }
}

/// The running thread; dropping it stops the thread.
pub struct Backend {
    handle: BackendHandle,
    thread: Option<JoinHandle<()>>,
}

impl Backend {
    /// Starts the thread, paused (the VM has not run yet).
    pub fn start(mode: ClockMode) -> std::io::Result<Self> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, rx) = mpsc::channel();
        let clock = Arc::new(Mutex::new(VirtualClock::new(mode)));
        let handle = BackendHandle {
            tx,
            waker,
            next_timer: Arc::new(AtomicU32::new(1)),
            clock: GuestClock::new(clock.clone()),
        };
        let mut state = Loop::new(poll, rx, clock);
        let thread = std::thread::Builder::new()
            .name("backend".into())
            .spawn(move || {
                block_host_signals();
                state.run()
            })?;
        Ok(Self {
            handle,
            thread: Some(thread),
        })
    }

    pub fn handle(&self) -> &BackendHandle {
        &self.handle
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.handle.send(BackendMsg::Exit);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Host signals (SIGINT, SIGTERM, SIGHUP) are the controller's: it reads
/// them from a signalfd, which works only while no thread can take them.
fn block_host_signals() {
    // SAFETY: plain libc signal-mask calls on a local sigset.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

struct Watch {
    tag: u32,
    target: SharedSubscriber,
}

struct Loop {
    poll: Poll,
    rx: Receiver<BackendMsg>,
    watches: HashMap<Token, Watch>,
    by_fd: HashMap<RawFd, Token>,
    next_token: usize,
    drainables: Vec<Arc<Mutex<dyn Drainable>>>,
    /// Written only here; [`GuestClock`]s read it on other threads.
    clock: Arc<Mutex<VirtualClock>>,
    timers: Timers,
    timer_targets: HashMap<TimerId, Arc<Mutex<dyn TimerSubscriber>>>,
    paused: bool,
    /// Readiness seen while paused, served on resume.
    pending: BTreeSet<Token>,
    exit: bool,
}

impl Loop {
    fn new(poll: Poll, rx: Receiver<BackendMsg>, clock: Arc<Mutex<VirtualClock>>) -> Self {
        Self {
            poll,
            rx,
            watches: HashMap::new(),
            by_fd: HashMap::new(),
            next_token: 1,
            drainables: Vec::new(),
            clock,
            timers: Timers::default(),
            timer_targets: HashMap::new(),
            paused: true,
            pending: BTreeSet::new(),
            exit: false,
        }
    }

    fn run(&mut self) {
        let mut events = Events::with_capacity(64);
        let mut busy_until: Option<Instant> = None;
        while !self.exit {
            let polling = !self.paused && busy_until.is_some_and(|t| Instant::now() < t);
            let timeout = if polling {
                Some(Duration::ZERO)
            } else if self.paused {
                None
            } else {
                self.timers
                    .next_deadline()
                    .and_then(|d| lock(&self.clock).host_delay_until(d))
                    // Round up so a wake-up never comes just before the deadline.
                    .map(|d| d + Duration::from_micros(1))
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    log::error!("backend: poll failed: {e}");
                    return;
                }
            }
            for ev in events.iter() {
                if ev.token() != WAKER {
                    self.pending.insert(ev.token());
                }
            }
            self.messages();
            if !self.paused {
                if !self.pending.is_empty() {
                    busy_until = Some(Instant::now() + POLL_WINDOW);
                }
                self.serve_pending();
                self.run_timers();
            }
        }
    }

    fn messages(&mut self) {
        while let Ok(msg) = self.rx.try_recv() {
            match msg {
                BackendMsg::Watch { fd, tag, target } => self.add_watch(fd, tag, target),
                BackendMsg::Unwatch { fd } => self.remove_watch(fd),
                BackendMsg::AddDrainable(d) => {
                    if self.paused {
                        lock(&d).pause();
                    }
                    self.drainables.push(d);
                }
                BackendMsg::CreateTimer(id, t) => {
                    self.timer_targets.insert(id, t);
                }
                BackendMsg::ArmTimer(id, d) => self.timers.arm(id, d),
                BackendMsg::ArmTimerIn(id, d) => {
                    let at = lock(&self.clock).now_ns().saturating_add(d);
                    self.timers.arm(id, at)
                }
                BackendMsg::CancelTimer(id) => self.timers.cancel(id),
                BackendMsg::Pause(reply) => {
                    if !self.paused {
                        self.paused = true;
                        lock(&self.clock).pause();
                        for d in &self.drainables {
                            lock(d).pause();
                        }
                    }
                    let _ = reply.send(());
                }
                BackendMsg::DrainBegin(reply) => {
                    let drained = !self.paused;
                    if drained {
                        self.paused = true;
                        for d in &self.drainables {
                            lock(d).pause();
                        }
                    }
                    let _ = reply.send(drained);
                }
                BackendMsg::DrainEnd => {
                    if self.paused {
                        self.paused = false;
                        for d in &self.drainables {
                            lock(d).resume();
                        }
                    }
                }
                BackendMsg::Resume => {
                    if self.paused {
                        self.paused = false;
                        lock(&self.clock).resume();
                        for d in &self.drainables {
                            lock(d).resume();
                        }
                    }
                }
                BackendMsg::Step(ns, reply) => {
                    lock(&self.clock).step(ns);
                    self.run_timers();
                    let _ = reply.send(lock(&self.clock).now_ns());
                }
                BackendMsg::Clear(reply) => {
                    for fd in self.by_fd.keys().copied().collect::<Vec<_>>() {
                        self.remove_watch(fd);
                    }
                    self.drainables.clear();
                    self.timers = Timers::default();
                    self.timer_targets.clear();
                    self.pending.clear();
                    let _ = reply.send(());
                }
                BackendMsg::Exit => self.exit = true,
            }
        }
    }

    fn add_watch(&mut self, fd: RawFd, tag: u32, target: SharedSubscriber) {
        self.remove_watch(fd);
        let token = Token(self.next_token);
        self.next_token += 1;
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut SourceFd(&fd), token, Interest::READABLE)
        {
            log::error!("backend: cannot watch fd {fd}: {e}");
            return;
        }
        self.by_fd.insert(fd, token);
        self.watches.insert(token, Watch { tag, target });
        // Readiness from before the registration would be lost otherwise.
        self.pending.insert(token);
    }

    fn remove_watch(&mut self, fd: RawFd) {
        if let Some(token) = self.by_fd.remove(&fd) {
            let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
            self.watches.remove(&token);
            self.pending.remove(&token);
        }
    }

    fn serve_pending(&mut self) {
        for token in std::mem::take(&mut self.pending) {
            if let Some(w) = self.watches.get(&token) {
                lock(&w.target).ready(w.tag);
            }
        }
    }

    fn run_timers(&mut self) {
        let now = lock(&self.clock).now_ns();
        for id in self.timers.expire(now) {
            if let Some(t) = self.timer_targets.get(&id) {
                lock(t).expired(id, now);
            }
        }
    }
}

#[cfg(test)]
mod tests;
