//! One vCPU thread: an explicit state loop around KVM_RUN.
//!
//! The controller talks to a vCPU only through [`VcpuCommand`]s followed by a
//! kick (a real-time signal whose handler sets `kvm_run.immediate_exit`, so a
//! kick that lands before the thread re-enters KVM_RUN is not lost). The vCPU
//! answers with [`VcpuEvent`]s. Pausing is an acknowledged handshake: the
//! controller knows the vCPU is outside KVM_RUN when `Paused` arrives.

use std::cell::Cell;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

use devices::bus::Bus;
use devices::GuestRequest;
use kvm_ioctls::{VcpuExit, VcpuFd};

/// What the controller asks of a vCPU thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VcpuCommand {
    Pause,
    Resume,
    /// Inject an NMI (QMP `inject-nmi`).
    Nmi,
    /// Leave the loop and end the thread.
    Exit,
}

/// What a vCPU thread reports to the controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VcpuEvent {
    Paused(usize),
    /// The guest asked for a platform action by itself (a triple fault is a reset).
    Guest(GuestRequest),
    /// The vCPU cannot go on; the string says why, for the user.
    Failed(usize, String),
    Exited(usize),
}

/// Where a vCPU sends its events; the controller wakes on each.
pub trait EventSink: Send + Sync {
    fn send(&self, event: VcpuEvent);
}

/// The thread-facing half, moved into the vCPU thread.
pub struct Vcpu {
    pub index: usize,
    pub fd: VcpuFd,
    pub pio: Arc<Bus>,
    pub mmio: Arc<Bus>,
    pub commands: Receiver<VcpuCommand>,
    pub events: Arc<dyn EventSink>,
    /// Start paused (waiting for Resume) rather than running.
    pub start_paused: bool,
}

/// The controller-facing half.
pub struct VcpuHandle {
    pub index: usize,
    pub commands: Sender<VcpuCommand>,
    pub thread: JoinHandle<()>,
    /// Host thread id, as `query-cpus-fast` reports it; see [`VcpuHandle::tid`].
    tid: Receiver<i32>,
    tid_known: std::cell::Cell<i32>,
    /// The vCPU's KVM_GET_STATS_FD (opened before the thread took the vCPU
    /// fd), or QEMU's words for why there is none.
    pub stats: Result<crate::kvm_stats::StatsFd, String>,
}

impl VcpuHandle {
    pub fn new(
        index: usize,
        commands: Sender<VcpuCommand>,
        thread: JoinHandle<()>,
        tid: Receiver<i32>,
        stats: Result<crate::kvm_stats::StatsFd, String>,
    ) -> Self {
        Self {
            index,
            commands,
            thread,
            tid,
            tid_known: std::cell::Cell::new(0),
            stats,
        }
    }

    /// The vCPU thread's host id. Learnt from the thread itself the first
    /// time it is asked for, so start-up never waits for the thread to run.
    pub fn tid(&self) -> i32 {
        if self.tid_known.get() == 0 {
            self.tid_known.set(self.tid.recv().unwrap_or(0));
        }
        self.tid_known.get()
    }

    /// Queues `cmd` and interrupts KVM_RUN so the thread sees it promptly.
    pub fn send(&self, cmd: VcpuCommand) {
        // A closed channel means the thread already ended: nothing to tell it.
        if self.commands.send(cmd).is_ok() {
            kick(&self.thread);
        }
    }
}

thread_local! {
    /// The kvm_run page of the vCPU running on this thread, for the kick handler.
    static KVM_RUN: Cell<*mut kvm_bindings::kvm_run> = const { Cell::new(std::ptr::null_mut()) };
}

pub fn kick_signal() -> libc::c_int {
    libc::SIGRTMIN()
}

extern "C" fn on_kick(_: libc::c_int) {
    // Async-signal-safe: a thread-local read and a byte store.
    let run = KVM_RUN.with(|r| r.get());
    if !run.is_null() {
        // SAFETY: the pointer is the live kvm_run mapping of this thread's vCPU;
        // it is cleared before the VcpuFd is dropped.
        unsafe { (*run).immediate_exit = 1 };
    }
}

/// Installs the kick handler once per process (without SA_RESTART, so KVM_RUN returns EINTR).
pub fn install_kick_handler() -> std::io::Result<()> {
    // SAFETY: plain sigaction with a handler that only touches a thread-local pointer.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_kick as extern "C" fn(libc::c_int) as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(kick_signal(), &sa, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

fn kick(thread: &JoinHandle<()>) {
    use std::os::unix::thread::JoinHandleExt;
    // SAFETY: the pthread is alive until joined, and joining takes the handle by value.
    unsafe { libc::pthread_kill(thread.as_pthread_t(), kick_signal()) };
}

/// What the run loop decides after one exit.
enum Step {
    Continue,
    Stop,
}

impl Vcpu {
    pub fn spawn(self) -> std::io::Result<(JoinHandle<()>, Receiver<i32>)> {
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let handle = std::thread::Builder::new()
            .name(format!("vcpu{}", self.index))
            .spawn(move || {
                // SAFETY: gettid has no preconditions.
                let _ = tid_tx.send(unsafe { libc::gettid() });
                self.run_loop()
            })?;
        Ok((handle, tid_rx))
    }

    fn run_loop(mut self) {
        let run_ptr: *mut kvm_bindings::kvm_run = self.fd.get_kvm_run();
        KVM_RUN.with(|r| r.set(run_ptr));
        let mut paused = self.start_paused;
        if paused {
            self.events.send(VcpuEvent::Paused(self.index));
        }
        'outer: loop {
            // Commands first; while paused, block on them.
            loop {
                let cmd = if paused {
                    match self.commands.recv() {
                        Ok(c) => c,
                        Err(_) => break 'outer,
                    }
                } else {
                    match self.commands.try_recv() {
                        Ok(c) => c,
                        Err(std::sync::mpsc::TryRecvError::Empty) => break,
                        Err(std::sync::mpsc::TryRecvError::Disconnected) => break 'outer,
                    }
                };
                match cmd {
                    VcpuCommand::Pause => {
                        // Always acknowledged, even when already stopped, so the
                        // controller's wait for every vCPU cannot hang.
                        paused = true;
                        self.events.send(VcpuEvent::Paused(self.index));
                    }
                    VcpuCommand::Resume => paused = false,
                    VcpuCommand::Nmi => {
                        if lint1_takes_nmi(&self.fd) {
                            // KVM queues it for the next entry; a failure only means
                            // the vCPU cannot take NMIs, which the guest would see anyway.
                            let _ = self.fd.nmi();
                        }
                    }
                    VcpuCommand::Exit => break 'outer,
                }
            }
            match self.run_once() {
                Step::Continue => {}
                Step::Stop => {
                    // Wait for the controller's verdict (it will send Exit).
                    paused = true;
                }
            }
        }
        KVM_RUN.with(|r| r.set(std::ptr::null_mut()));
        self.events.send(VcpuEvent::Exited(self.index));
    }

    fn run_once(&mut self) -> Step {
        let index = self.index;
        // The access size of a port exit: kvm-ioctls hands over count * size
        // bytes, and a string instruction (`rep insb`, as SeaBIOS reads
        // fw_cfg) is `count` accesses of `size` bytes each.
        let run: *const kvm_bindings::kvm_run = self.fd.get_kvm_run();
        let io_size = || {
            // SAFETY: `run` is the vCPU's kvm_run mapping, alive as long as
            // `self.fd`; after a KVM_EXIT_IO the `io` member of the union is
            // the valid one, and it does not overlap the data area.
            usize::from(unsafe { (*run).__bindgen_anon_1.io.size }).max(1)
        };
        match self.fd.run() {
            Ok(VcpuExit::IoOut(port, data)) => {
                for chunk in data.chunks(io_size()) {
                    self.pio.write(u64::from(port), chunk);
                }
                Step::Continue
            }
            Ok(VcpuExit::IoIn(port, data)) => {
                let size = io_size();
                for chunk in data.chunks_mut(size) {
                    self.pio.read(u64::from(port), chunk);
                }
                Step::Continue
            }
            Ok(VcpuExit::MmioRead(addr, data)) => {
                self.mmio.read(addr, data);
                Step::Continue
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                self.mmio.write(addr, data);
                Step::Continue
            }
            // With the in-kernel irqchip HLT stays in the kernel; an exit here is harmless.
            Ok(VcpuExit::Hlt) | Ok(VcpuExit::IrqWindowOpen) | Ok(VcpuExit::Intr) => Step::Continue,
            Ok(VcpuExit::Shutdown) => {
                // Triple fault: on a PC this asserts INIT/reset (QEMU: qemu_system_reset_request).
                self.events.send(VcpuEvent::Guest(GuestRequest::Reset));
                Step::Stop
            }
            Ok(VcpuExit::SystemEvent(kind, _)) => {
                let req = match kind {
                    kvm_bindings::KVM_SYSTEM_EVENT_RESET => GuestRequest::Reset,
                    _ => GuestRequest::Poweroff,
                };
                self.events.send(VcpuEvent::Guest(req));
                Step::Stop
            }
            Ok(VcpuExit::InternalError) => {
                let why = describe_internal_error(&mut self.fd);
                self.fail(why)
            }
            Ok(VcpuExit::FailEntry(reason, cpu)) => self.fail(format!(
                "KVM entry failed, hardware error {reason:#x} (cpu {cpu})"
            )),
            Ok(other) => {
                let what = format!("unhandled KVM exit {other:?}");
                self.fail(what)
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                self.fd.set_kvm_immediate_exit(0);
                Step::Continue
            }
            Err(e) => self.fail(format!("KVM_RUN failed: {e} (vcpu {index})")),
        }
    }

    fn fail(&mut self, why: String) -> Step {
        let rip = self.fd.get_regs().map(|r| r.rip).unwrap_or(0);
        self.events.send(VcpuEvent::Failed(
            self.index,
            format!("{why} at rip={rip:#x}"),
        ));
        Step::Stop
    }
}

fn describe_internal_error(fd: &mut VcpuFd) -> String {
    let run = fd.get_kvm_run();
    // SAFETY: exit_reason is KVM_EXIT_INTERNAL_ERROR, so `internal` is the active union member.
    let internal = unsafe { run.__bindgen_anon_1.internal };
    let what = match internal.suberror {
        kvm_bindings::KVM_INTERNAL_ERROR_EMULATION => {
            "emulation failure (an instruction KVM cannot emulate)"
        }
        kvm_bindings::KVM_INTERNAL_ERROR_SIMUL_EX => "exception while delivering an exception",
        kvm_bindings::KVM_INTERNAL_ERROR_DELIVERY_EV => "event delivery failed",
        _ => "internal error",
    };
    format!("KVM internal error {}: {what}", internal.suberror)
}

/// An external NMI (`inject-nmi`, the watchdog's `inject-nmi`) arrives on
/// the local APIC's LINT1 pin: QEMU injects it only while LVT LINT1 is
/// unmasked with delivery mode NMI (hw/i386/kvm/apic.c
/// `do_inject_external_nmi`), so a guest that masked LINT1 never sees it.
fn lint1_takes_nmi(fd: &kvm_ioctls::VcpuFd) -> bool {
    fd.get_lapic()
        .is_ok_and(|l| crate::vcpu_setup::lint1_delivers_nmi(&l))
}
