//! The controller: the single owner of the machine's life. It runs the main
//! thread's event loop (mio) and reacts to typed messages from vCPU threads,
//! devices, host signals and the serial console's stdin.

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::Duration;

use devices::GuestRequest;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::error::VmmError;
use crate::machine::Machine;
use crate::platform::lock;
use crate::vcpu::{EventSink, VcpuCommand, VcpuEvent, VcpuHandle};

const WAKER: Token = Token(0);
const STDIN: Token = Token(1);
const SIGNALS: Token = Token(2);

/// Why the machine stopped for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// The guest powered off (ACPI S5).
    GuestPoweroff,
    /// The guest reset and `-no-reboot` turned that into an exit.
    GuestResetNoReboot,
    /// SIGINT, SIGTERM or SIGHUP.
    Signal(i32),
}

/// Messages that reach the controller from other threads.
#[derive(Debug)]
pub enum ControlMsg {
    Vcpu(VcpuEvent),
}

/// Sends to the controller's channel and wakes its poll.
pub struct ControlSender {
    tx: Sender<ControlMsg>,
    waker: Waker,
}

impl ControlSender {
    pub fn send(&self, msg: ControlMsg) {
        // The controller outlives every sender it handed out; a failed send
        // only happens while it is tearing down, when nobody is listening.
        if self.tx.send(msg).is_ok() {
            let _ = self.waker.wake();
        }
    }
}

impl EventSink for ControlSender {
    fn send(&self, event: VcpuEvent) {
        ControlSender::send(self, ControlMsg::Vcpu(event));
    }
}

/// Creates the poll and the channel every other thread uses to reach the controller.
pub fn channel() -> Result<(Poll, Arc<ControlSender>, Receiver<ControlMsg>), VmmError> {
    let poll = Poll::new()?;
    let waker = Waker::new(poll.registry(), WAKER)?;
    let (tx, rx) = mpsc::channel();
    Ok((poll, Arc::new(ControlSender { tx, waker }), rx))
}

pub struct Controller {
    /// `None` for `-machine none`: no guest, only the monitor and run state.
    machine: Option<Machine>,
    vcpus: Vec<VcpuHandle>,
    poll: Poll,
    sender: Arc<ControlSender>,
    msgs: Receiver<ControlMsg>,
    signals: OwnedFd,
    no_reboot: bool,
    stdin_open: bool,
    /// Console bytes the UART's FIFO had no room for yet.
    pending_input: Vec<u8>,
}

impl Controller {
    pub fn new(
        machine: Option<Machine>,
        poll: Poll,
        sender: Arc<ControlSender>,
        msgs: Receiver<ControlMsg>,
        no_reboot: bool,
        console_stdin: bool,
    ) -> Result<Self, VmmError> {
        let signals = block_host_signals()?;
        poll.registry().register(
            &mut SourceFd(&signals.as_raw_fd()),
            SIGNALS,
            Interest::READABLE,
        )?;
        let stdin_open = console_stdin && register_stdin(&poll);
        Ok(Self {
            machine,
            vcpus: Vec::new(),
            poll,
            sender,
            msgs,
            signals,
            no_reboot,
            stdin_open,
            pending_input: Vec::new(),
        })
    }

    /// Boots the guest and serves events until the machine stops for good.
    pub fn run(mut self, start_paused: bool) -> Result<Exit, VmmError> {
        if let Some(m) = &mut self.machine {
            self.vcpus = m.boot(self.sender.clone(), start_paused)?;
        }
        let result = self.event_loop();
        self.stop_vcpus();
        result
    }

    fn event_loop(&mut self) -> Result<Exit, VmmError> {
        let mut events = Events::with_capacity(64);
        loop {
            let timeout = (!self.pending_input.is_empty()).then(|| Duration::from_millis(5));
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
            for ev in events.iter() {
                match ev.token() {
                    STDIN => self.read_console()?,
                    SIGNALS => {
                        if let Some(sig) = self.read_signal() {
                            return Ok(Exit::Signal(sig));
                        }
                    }
                    _ => {}
                }
            }
            self.feed_console();
            while let Ok(msg) = self.msgs.try_recv() {
                if let Some(exit) = self.handle(msg)? {
                    return Ok(exit);
                }
            }
        }
    }

    fn handle(&mut self, msg: ControlMsg) -> Result<Option<Exit>, VmmError> {
        match msg {
            ControlMsg::Vcpu(VcpuEvent::Failed(index, why)) => Err(VmmError::Guest(index, why)),
            ControlMsg::Vcpu(VcpuEvent::Guest(GuestRequest::Poweroff)) => {
                Ok(Some(Exit::GuestPoweroff))
            }
            ControlMsg::Vcpu(VcpuEvent::Guest(GuestRequest::Reset)) => {
                if self.no_reboot {
                    return Ok(Some(Exit::GuestResetNoReboot));
                }
                self.reset()?;
                Ok(None)
            }
            ControlMsg::Vcpu(VcpuEvent::Paused(_)) | ControlMsg::Vcpu(VcpuEvent::Exited(_)) => {
                Ok(None)
            }
        }
    }

    /// A full machine reset: stop and join every vCPU, rebuild the VM, boot again.
    fn reset(&mut self) -> Result<(), VmmError> {
        self.stop_vcpus();
        // Requests queued by the old machine (e.g. a second reset) are moot now.
        while self.msgs.try_recv().is_ok() {}
        if let Some(m) = &mut self.machine {
            m.reset()?;
            self.vcpus = m.boot(self.sender.clone(), false)?;
        }
        Ok(())
    }

    fn stop_vcpus(&mut self) {
        for v in &self.vcpus {
            v.send(VcpuCommand::Exit);
        }
        for v in self.vcpus.drain(..) {
            let _ = v.thread.join();
        }
    }

    fn read_console(&mut self) -> Result<(), VmmError> {
        let mut buf = [0u8; 512];
        loop {
            // SAFETY: fd 0 stays open for the life of the process; ManuallyDrop keeps it so.
            let mut stdin = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(0) });
            match stdin.read(&mut buf) {
                Ok(0) => {
                    let _ = self.poll.registry().deregister(&mut SourceFd(&0));
                    self.stdin_open = false;
                    return Ok(());
                }
                Ok(n) => self.pending_input.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => {
                    let _ = self.poll.registry().deregister(&mut SourceFd(&0));
                    self.stdin_open = false;
                    return Ok(());
                }
            }
        }
    }

    fn feed_console(&mut self) {
        if self.pending_input.is_empty() {
            return;
        }
        let Some(serial) = self
            .machine
            .as_ref()
            .and_then(|m| m.platform.serial.as_ref())
        else {
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

/// Blocks SIGINT/SIGTERM/SIGHUP for this thread and every thread it spawns
/// later, and returns a signalfd that reports them to the event loop.
fn block_host_signals() -> Result<OwnedFd, VmmError> {
    // SAFETY: plain libc signal-mask calls on a local sigset.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
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
