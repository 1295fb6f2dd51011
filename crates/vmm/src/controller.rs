//! The controller: the main thread's event loop (mio). It serves the QMP
//! monitors, host signals and the serial console's stdin, and hands every
//! message from vCPU and device threads to the [`Vm`], the single owner of
//! the machine's life.

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use qmp::{Event, MonitorSet};

use crate::console::{self, ConsoleInput, RawTerminal};
use crate::error::VmmError;
use crate::messages::{Exit, WAKER};
use crate::sync::lock;
use crate::vm::Vm;

const STDIN: Token = Token(1);
const SIGNALS: Token = Token(2);
const CONSOLE_LISTEN: Token = Token(3);
const CONSOLE_CLIENT: Token = Token(4);
const CONSOLE_PTY: Token = Token(5);
/// The `-qtest` chardev's listener and client.
pub const QTEST_LISTEN: Token = Token(6);
pub const QTEST_CONN: Token = Token(7);
const FIRST_MONITOR: usize = 16;
/// After `quit`, how long clients get to close their end before ours closes
/// (qmp-shell closes within a few milliseconds of the reply; QEMU's own
/// clean-up takes ~30 ms, so this keeps quit-to-exit below QEMU's).
const QUIT_LINGER: Duration = Duration::from_millis(15);
/// How long replies and events may take to drain to clients at exit.
const EXIT_FLUSH: Duration = Duration::from_millis(500);
/// After serving a monitor client, keep polling without sleeping for this
/// long before blocking: a client issuing commands back to back then finds
/// the loop awake, which saves a cross-CPU wake-up per command (costly under
/// nested KVM). The same idea as QEMU's iothread `poll-max-ns`; it spends CPU
/// only while a client is talking.
const MONITOR_POLL_WINDOW: Duration = Duration::from_micros(50);
/// Under `-S`, how long the loop waits for a first monitor client before it
/// builds the machine anyway (see `Vm::begin_build`).
const FIRST_CLIENT_GRACE: Duration = Duration::from_millis(5);

pub struct Controller {
    vm: Vm,
    monitors: MonitorSet,
    poll: Poll,
    signals: OwnedFd,
    console: ConsoleInput,
    /// Restores the terminal at exit (dropped with the controller).
    _raw_terminal: Option<RawTerminal>,
    /// Console bytes the UART's FIFO had no room for yet.
    pending_input: Vec<u8>,
    /// The `-qtest` server.
    qtest: Option<crate::qtest::QtestServer>,
}

impl Controller {
    pub fn new(
        vm: Vm,
        monitors: MonitorSet,
        poll: Poll,
        console: ConsoleInput,
    ) -> Result<Self, VmmError> {
        let signals = block_host_signals()?;
        poll.registry().register(
            &mut SourceFd(&signals.as_raw_fd()),
            SIGNALS,
            Interest::READABLE,
        )?;
        let mut raw_terminal = None;
        if let ConsoleInput::Stdin { signal } = console {
            if register_stdin(&poll) {
                raw_terminal = console::raw_stdin(signal);
            }
        }
        Ok(Self {
            vm,
            monitors,
            poll,
            signals,
            console,
            _raw_terminal: raw_terminal,
            pending_input: Vec::new(),
            qtest: None,
        })
    }

    pub fn with_qtest(mut self, qtest: Option<crate::qtest::QtestServer>) -> Self {
        self.qtest = qtest;
        self
    }

    /// Boots the guest and serves events until the machine stops for good.
    pub fn run(mut self, start_paused: bool) -> Result<Exit, VmmError> {
        // A `wait=on` qtest chardev, then `wait=on` monitors, hold start-up
        // until their client is there, as QEMU. (Each accepts that client
        // itself, then joins the event loop.)
        if let Some(q) = &mut self.qtest {
            q.wait_for_client()?;
            q.register(self.poll.registry())?;
        }
        self.monitors.wait_for_clients()?;
        self.monitors
            .register(self.poll.registry(), FIRST_MONITOR)?;
        match &mut self.console {
            ConsoleInput::Socket(s) => {
                s.wait_for_client()?;
                s.register(self.poll.registry(), CONSOLE_LISTEN, CONSOLE_CLIENT)?;
            }
            ConsoleInput::Pty(p) => p.register(self.poll.registry(), CONSOLE_PTY)?,
            ConsoleInput::None | ConsoleInput::Stdin { .. } => {}
        }
        let result = if start_paused {
            // The machine may still be building (Vm::defer_start): greet meanwhile.
            self.event_loop()
        } else {
            self.vm.start(false).and_then(|()| self.event_loop())
        };
        // qemu_cleanup's blk_exp_close_all: the exports' events still reach
        // the monitors (after `quit` they have already gone).
        let mut out = Vec::new();
        self.vm.close_exports(&mut out);
        self.broadcast(out);
        self.vm.teardown();
        self.monitors.flush(EXIT_FLUSH);
        // QEMU's qemu_cleanup() order: the machine and its devices go before
        // the monitors close, so a client sees its connection end only once
        // the emulator is really done (qemu.qmp's qmp-shell-wrap relies on
        // having closed its side first).
        self.vm.release_machine();
        if let Some(q) = &mut self.qtest {
            q.shutdown(self.poll.registry());
        }
        if matches!(result, Ok(Exit::Quit)) {
            self.monitors.linger(QUIT_LINGER);
        }
        result
    }

    fn event_loop(&mut self) -> Result<Exit, VmmError> {
        let mut events = Events::with_capacity(64);
        let mut busy_until: Option<std::time::Instant> = None;
        loop {
            if let Some(exit) = self.vm.take_exit() {
                return exit;
            }
            let mut timeout = self.monitors.poll_timeout();
            if busy_until.is_some_and(|t| std::time::Instant::now() < t) {
                timeout = Some(Duration::ZERO);
            } else {
                busy_until = None;
            }
            if self.vm.build_pending() {
                timeout = Some(timeout.map_or(FIRST_CLIENT_GRACE, |t| t.min(FIRST_CLIENT_GRACE)));
            }
            if !self.pending_input.is_empty() {
                timeout = Some(timeout.map_or(Duration::from_millis(5), |t| {
                    t.min(Duration::from_millis(5))
                }));
            }
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
            let served_monitor = events.iter().any(|e| self.monitors.handles(e.token()));
            for ev in events.iter() {
                match ev.token() {
                    WAKER => {}
                    STDIN => self.read_console(),
                    CONSOLE_PTY => {
                        if let ConsoleInput::Pty(p) = &mut self.console {
                            p.on_readable(&mut self.pending_input);
                        }
                    }
                    CONSOLE_LISTEN | CONSOLE_CLIENT => {
                        if let ConsoleInput::Socket(s) = &mut self.console {
                            if ev.token() == CONSOLE_LISTEN {
                                s.on_listen(self.poll.registry(), CONSOLE_CLIENT);
                            } else {
                                s.on_client(
                                    self.poll.registry(),
                                    CONSOLE_CLIENT,
                                    &mut self.pending_input,
                                );
                            }
                        }
                    }
                    SIGNALS => {
                        if let Some(sig) = self.read_signal() {
                            let mut out = Vec::new();
                            self.vm.host_signal(sig, &mut out);
                            self.broadcast(out);
                        }
                    }
                    t if self.qtest.as_ref().is_some_and(|q| q.handles(t)) => {
                        if let Some(q) = &mut self.qtest {
                            q.on_event(self.poll.registry(), t);
                        }
                    }
                    t if self.monitors.handles(t) => {
                        self.monitors.on_event(ev, &mut self.vm);
                        busy_until = Some(std::time::Instant::now() + MONITOR_POLL_WINDOW);
                    }
                    _ => {}
                }
                if self.vm.exiting() {
                    break;
                }
            }
            if self.vm.build_pending() && (served_monitor || events.is_empty()) {
                self.vm.begin_build();
            }
            self.monitors.run_timers();
            self.feed_console();
            while let Some(msg) = self.vm.next_msg() {
                let mut out = Vec::new();
                self.vm.handle(msg, &mut out);
                self.broadcast(out);
            }
        }
    }

    fn broadcast(&mut self, events: Vec<Event>) {
        for e in &events {
            self.monitors.broadcast(e);
        }
    }

    fn read_console(&mut self) {
        let mut buf = [0u8; 512];
        // SAFETY: fd 0 stays open for the life of the process; ManuallyDrop keeps it so.
        let mut stdin = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(0) });
        loop {
            match stdin.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => self.pending_input.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        // End of input (or an error): the console has no more input.
        let _ = self.poll.registry().deregister(&mut SourceFd(&0));
    }

    fn feed_console(&mut self) {
        if self.pending_input.is_empty() {
            return;
        }
        let Some(serial) = self.vm.serial() else {
            self.pending_input.clear();
            return;
        };
        let taken = lock(serial).enqueue_input(&self.pending_input);
        self.pending_input.drain(..taken);
    }

    fn read_signal(&mut self) -> Option<i32> {
        // SAFETY: signalfd_siginfo is plain data; the fd is our signalfd.
        let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        let n = unsafe {
            libc::read(
                self.signals.as_raw_fd(),
                &mut info as *mut _ as *mut libc::c_void,
                size,
            )
        };
        (n as usize == size).then_some(info.ssi_signo as i32)
    }
}

/// SIGINT, SIGTERM and SIGHUP, which the event loop reads from a signalfd.
fn host_signal_set() -> libc::sigset_t {
    // SAFETY: plain libc calls on a local sigset.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Blocks SIGINT/SIGTERM/SIGHUP for this thread and every thread it spawns
/// later. Called before any thread exists (the block layer's I/O threads
/// start while the command line is set up): a thread that did not block
/// them would take the signal's default action and kill the process.
pub fn block_signals_early() -> Result<(), VmmError> {
    let set = host_signal_set();
    // SAFETY: pthread_sigmask with a valid set.
    if unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(())
}

/// Blocks SIGINT/SIGTERM/SIGHUP for this thread and every thread it spawns
/// later, and returns a signalfd that reports them to the event loop.
fn block_host_signals() -> Result<OwnedFd, VmmError> {
    block_signals_early()?;
    let set = host_signal_set();
    // SAFETY: signalfd with a valid set.
    unsafe {
        let fd = libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC);
        if fd < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// Registers stdin for console input; false when it cannot be polled
/// (a regular file or /dev/null), in which case the console has no input.
fn register_stdin(poll: &Poll) -> bool {
    let fd: RawFd = 0;
    // SAFETY: fcntl on fd 0 with valid flags.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return false;
        }
    }
    poll.registry()
        .register(&mut SourceFd(&fd), STDIN, Interest::READABLE)
        .is_ok()
}
