//! The owner of the guest's life: run state, vCPUs and power events. The QMP
//! commands that drive it live in [`crate::commands`], one file per schema
//! module.
//!
//! Every run-state change goes through [`RunStateMachine`]; events are
//! emitted where QEMU 7.2 emits them and in its order (softmmu/runstate.c,
//! softmmu/cpus.c): STOP after the vCPUs have stopped and before `stop`
//! returns; RESUME before `cont` returns; RESET, POWERDOWN and SHUTDOWN
//! before the return of `system_reset`, `system_powerdown` and `quit`.

use std::collections::VecDeque;
use std::sync::mpsc::Receiver;
use std::sync::Arc;

use devices::GuestRequest;
use qmp::{Event, EventSink};
use serde_json::{json, Value};

use crate::devices::DeviceManager;
use crate::error::VmmError;
use crate::machine::{Machine, MachineSpec};
use crate::messages::{ControlMsg, ControlSender, DeviceEvent, Exit};
use crate::runstate::{
    Actions, RebootAction, RunState, RunStateMachine, ShutdownAction, ShutdownCause,
};
use crate::vcpu::{VcpuCommand, VcpuEvent, VcpuHandle};

/// What the monitor reports about the machine that never changes.
#[derive(Debug, Clone, Default)]
pub struct VmInfo {
    pub name: Option<String>,
    pub uuid: Option<String>,
    /// QOM type of the machine, e.g. `pc-q35-7.2-machine`.
    pub machine_type: String,
    pub ram_bytes: u64,
    pub sockets: u32,
    pub cores: u32,
    pub threads: u32,
    /// `query-chardev` entries for chardevs that are not monitors (the QMP
    /// library adds the monitors' own, which only it knows live).
    pub chardevs: Vec<Value>,
    /// `-machine none,accel=tcg`: KVM is present but not in use.
    pub accel_tcg: bool,
    /// `-accel qtest`: KVM is present but not in use either.
    pub accel_qtest: bool,
}

impl VmInfo {
    /// Whether the accelerator is KVM (QEMU's `kvm_enabled()`).
    pub fn kvm_in_use(&self) -> bool {
        !self.accel_tcg && !self.accel_qtest
    }
}

pub struct Vm {
    pub(crate) machine: Option<Machine>,
    /// Under `-accel qtest`, the board instead of a machine.
    pub(crate) tree: Option<crate::devices::tree::DeviceTree>,
    /// A machine to build on a helper thread (see [`Vm::defer_start`]).
    pub(crate) unbuilt: Option<Box<(MachineSpec, DeviceManager)>>,
    /// The machine being built on a helper thread.
    pub(crate) building: Option<std::thread::JoinHandle<Result<Machine, VmmError>>>,
    /// Start-up still to do, with its `-S` flag.
    pub(crate) pending_start: Option<bool>,
    pub(crate) vcpus: Vec<VcpuHandle>,
    pub(crate) sender: Arc<ControlSender>,
    pub(crate) msgs: Receiver<ControlMsg>,
    /// Messages that arrived while a command waited for vCPU acknowledgements.
    pub(crate) deferred: VecDeque<ControlMsg>,
    pub(crate) runstate: RunStateMachine,
    pub(crate) actions: Actions,
    pub(crate) info: VmInfo,
    /// Without a monitor, nobody could act on a stopped machine: vCPU
    /// failures end the process instead of entering `internal-error`.
    pub(crate) has_monitors: bool,
    pub(crate) exit: Option<Result<Exit, VmmError>>,
    /// The block graph: nodes, and the backends devices use.
    pub(crate) block: block::BlockGraph,
    /// The network backends (`-netdev`, `netdev_add`).
    pub(crate) netdevs: crate::network::Netdevs,
    /// `announce-self` timers.
    pub(crate) announcers: crate::announce::Announcers,
    /// Block jobs; their workers report through `sender`.
    pub(crate) jobs: block::job::Jobs,
    /// The NBD server (`nbd-server-start`); its threads report through
    /// `sender`.
    pub(crate) nbd: block::nbd::NbdServer,
    /// The `events` migration capability (`migrate-set-capabilities`).
    pub(crate) migration_events: bool,
    /// Without a machine: the stats of an empty KVM VM, made on the first
    /// query-stats (QEMU's accelerator holds one even for `-machine none`).
    pub(crate) idle_vm_stats: Option<Result<crate::kvm_stats::StatsFd, String>>,
}

impl Vm {
    pub fn new(
        machine: Option<Machine>,
        sender: Arc<ControlSender>,
        msgs: Receiver<ControlMsg>,
        actions: Actions,
        info: VmInfo,
        has_monitors: bool,
    ) -> Self {
        let to_owner = sender.clone();
        let jobs = block::job::Jobs::new(Arc::new(move |m| to_owner.send(ControlMsg::Job(m))));
        let to_owner = sender.clone();
        let nbd = block::nbd::NbdServer::new(Arc::new(move |m| to_owner.send(ControlMsg::Nbd(m))));
        let to_owner = sender.clone();
        block::events::set_sink(Arc::new(move |e| {
            to_owner.send(ControlMsg::Device(DeviceEvent::Node(e)))
        }));
        Self {
            jobs,
            nbd,
            machine,
            tree: None,
            unbuilt: None,
            building: None,
            pending_start: None,
            vcpus: Vec::new(),
            sender,
            msgs,
            deferred: VecDeque::new(),
            runstate: RunStateMachine::new(RunState::Prelaunch),
            actions,
            info,
            has_monitors,
            exit: None,
            block: block::BlockGraph::new(),
            netdevs: crate::network::Netdevs::default(),
            announcers: Default::default(),
            migration_events: false,
            idle_vm_stats: None,
        }
    }

    /// Under `-accel qtest`: the board's device tree, in place of a machine.
    pub fn with_tree(mut self, tree: Option<crate::devices::tree::DeviceTree>) -> Self {
        self.tree = tree;
        self
    }

    /// Whether there is a board (a machine, or qtest's device tree): not
    /// `-machine none`.
    pub(crate) fn has_board(&self) -> bool {
        self.machine.is_some() || self.tree.is_some()
    }

    /// The devices built from `-device` (and the board's own under qtest).
    pub(crate) fn peripherals(&self) -> Vec<crate::devices::Peripheral> {
        match (&self.machine, &self.tree) {
            (Some(m), _) => m.devices.peripherals(),
            (None, Some(t)) => t.peripherals(),
            (None, None) => Vec::new(),
        }
    }

    pub fn with_block(mut self, graph: block::BlockGraph) -> Self {
        self.block = graph;
        self
    }

    /// The netdevs opened at start-up.
    pub fn with_netdevs(mut self, netdevs: crate::network::Netdevs) -> Self {
        self.netdevs = netdevs;
        self
    }

    /// With `-S` nothing runs before `cont`, so the monitors may greet their
    /// clients while the KVM machine is built (and, for a distro bzImage, its
    /// kernel decompressed) on a helper thread. The first command waits for
    /// it; a failure ends the process with the error, as it would have before.
    pub fn defer_start(&mut self, unbuilt: Option<(MachineSpec, DeviceManager)>) {
        self.unbuilt = unbuilt.map(Box::new);
        self.pending_start = Some(true);
    }

    /// Whether a deferred machine still waits for [`Vm::begin_build`].
    pub fn build_pending(&self) -> bool {
        self.unbuilt.is_some()
    }

    /// Starts building a deferred machine on a helper thread. The event loop
    /// calls it once the first client has been greeted (or nobody came within
    /// a few milliseconds): creating a KVM VM takes process-wide locks that
    /// would otherwise hold up that first greeting.
    pub fn begin_build(&mut self) {
        if let Some(b) = self.unbuilt.take() {
            let (spec, devices) = *b;
            let sender = self.sender.clone();
            self.building = Some(std::thread::spawn(move || {
                let built = Machine::new(spec, devices);
                sender.send(ControlMsg::MachineBuilt);
                built
            }));
        }
    }

    /// Finishes a deferred start-up; on failure the machine exits with the error.
    pub fn ensure_started(&mut self) {
        self.begin_build();
        if let Some(b) = self.building.take() {
            let built = b.join().unwrap_or_else(|_| {
                Err(VmmError::Device(
                    "the machine-building thread panicked".into(),
                ))
            });
            match built {
                Ok(m) => self.machine = Some(m),
                Err(e) => {
                    self.pending_start = None;
                    self.exit = Some(Err(e));
                    return;
                }
            }
        }
        if let Some(paused) = self.pending_start.take() {
            if let Err(e) = self.start(paused) {
                self.exit = Some(Err(e));
            }
        }
    }

    /// Creates the vCPUs and, unless `-S`, starts the guest (QEMU's
    /// `vm_start()` at the end of start-up; no client can see its RESUME).
    pub fn start(&mut self, start_paused: bool) -> Result<(), VmmError> {
        if let Some(m) = &mut self.machine {
            self.vcpus = m.boot(self.sender.clone(), start_paused)?;
        }
        if !start_paused {
            self.set_state(RunState::Running);
            if let Some(m) = &self.machine {
                m.devices.resume();
            }
        }
        Ok(())
    }

    pub fn take_exit(&mut self) -> Option<Result<Exit, VmmError>> {
        self.exit.take()
    }

    /// Whether the machine is about to stop for good.
    pub fn exiting(&self) -> bool {
        self.exit.is_some()
    }

    pub fn serial(&self) -> Option<&std::sync::Mutex<devices::Serial>> {
        self.machine.as_ref()?.devices.legacy.serial.as_deref()
    }

    /// The next message from another thread, deferred ones first.
    pub fn next_msg(&mut self) -> Option<ControlMsg> {
        self.deferred
            .pop_front()
            .or_else(|| self.msgs.try_recv().ok())
    }

    /// Reacts to a message from a vCPU or device thread.
    pub fn handle(&mut self, msg: ControlMsg, events: &mut dyn EventSink) {
        match msg {
            ControlMsg::Vcpu(VcpuEvent::Guest(GuestRequest::Poweroff)) => {
                self.shutdown(ShutdownCause::GuestShutdown, events)
            }
            ControlMsg::Vcpu(VcpuEvent::Guest(GuestRequest::Reset)) => {
                self.reset_request(ShutdownCause::GuestReset, events)
            }
            ControlMsg::Vcpu(VcpuEvent::Failed(index, why)) => self.vcpu_failed(index, why, events),
            ControlMsg::Vcpu(VcpuEvent::Paused(_)) | ControlMsg::Vcpu(VcpuEvent::Exited(_)) => {}
            ControlMsg::MachineBuilt => self.ensure_started(),
            ControlMsg::Job(m) => crate::commands::job::on_worker_msg(self, m, events),
            ControlMsg::Nbd(block::nbd::NbdMsg::ConnectionClosed) => {
                let gone = self.nbd.reap(&mut self.block);
                crate::commands::block_export::emit_deleted(events, gone);
            }
            ControlMsg::Device(DeviceEvent::BlockIoError { data, stop }) => {
                // QEMU's blk_error_action(): the event, then the stop.
                events.emit(Event::new("BLOCK_IO_ERROR", Some(data)));
                if stop {
                    self.vm_stop(RunState::IoError, events);
                }
            }
            ControlMsg::Device(DeviceEvent::NicRxFilterChanged { name, path }) => {
                let mut data = serde_json::Map::new();
                if let Some(n) = name {
                    data.insert("name".into(), n.into());
                }
                data.insert("path".into(), path.into());
                events.emit(Event::new("NIC_RX_FILTER_CHANGED", Some(data.into())));
            }
            ControlMsg::Device(DeviceEvent::BalloonChange { actual }) => {
                // The monitor rate-limits it (QEMU monitor_qapi_event_conf).
                events.emit(Event::new(
                    "BALLOON_CHANGE",
                    Some(serde_json::json!({ "actual": actual })),
                ));
            }
            ControlMsg::Device(DeviceEvent::GuestPanic(e)) => self.guest_panic(e, events),
            ControlMsg::Device(DeviceEvent::WatchdogExpired) => self.watchdog_expired(events),
            ControlMsg::Device(DeviceEvent::RtcChange { offset, qom_path }) => {
                events.emit(rtc_change_event(offset, qom_path))
            }
            ControlMsg::Device(DeviceEvent::Node(e)) => {
                // bdrv_get_device_or_node_name, for the node as it is now.
                let (name, data) = e.to_qmp(|n| match self.block.node(n) {
                    Some(node) => self.block.device_or_node_name(node),
                    None => n.to_string(),
                });
                events.emit(Event::new(name, Some(data)));
            }
        }
    }

    /// hw/watchdog/watchdog.c `watchdog_perform_action`: WATCHDOG with the
    /// action, then the action (the monitor rate-limits the event).
    fn watchdog_expired(&mut self, events: &mut dyn EventSink) {
        use crate::runstate::{on_watchdog, WatchdogEffect};
        let action = self.actions.watchdog;
        events.emit(Event::new(
            "WATCHDOG",
            Some(json!({ "action": action.as_str() })),
        ));
        match on_watchdog(action) {
            WatchdogEffect::ResetRequest => self.reset_request(ShutdownCause::GuestReset, events),
            WatchdogEffect::Powerdown => self.powerdown(events),
            WatchdogEffect::Exit => self.exit = Some(Ok(Exit::WatchdogPoweroff)),
            WatchdogEffect::Stop => self.vm_stop(RunState::Watchdog, events),
            WatchdogEffect::Nmi => self.inject_nmi(),
            WatchdogEffect::Debug => eprintln!("watchdog: timer fired"),
            WatchdogEffect::Nothing => {}
        }
    }

    /// `qemu_system_powerdown()`: POWERDOWN, then the ACPI power button.
    pub(crate) fn powerdown(&mut self, events: &mut dyn EventSink) {
        events.emit(Event::new("POWERDOWN", None));
        if let Some(m) = &self.machine {
            crate::sync::lock(&m.devices.legacy.acpi_pm).press_power_button();
        }
    }

    /// An NMI on every vCPU (x86's `nmi_monitor_handle`).
    pub(crate) fn inject_nmi(&self) {
        for v in &self.vcpus {
            v.send(crate::vcpu::VcpuCommand::Nmi);
        }
    }

    /// QEMU's `qemu_system_guest_panicked()` / `qemu_system_guest_crashloaded()`
    /// (softmmu/runstate.c). pvpanic reports no `info`, so neither event has
    /// one. A panic that shuts down goes through the main loop's shutdown
    /// (SHUTDOWN, reason `guest-panic`, no STOP); `exit-failure` then exits 1.
    fn guest_panic(&mut self, e: devices::pvpanic::PvPanicEvent, events: &mut dyn EventSink) {
        use devices::pvpanic::PvPanicEvent;
        match e {
            PvPanicEvent::Panicked => {
                let (action, pause, shutdown) = crate::runstate::on_panic(&self.actions);
                events.emit(Event::new(
                    "GUEST_PANICKED",
                    Some(json!({ "action": action })),
                ));
                if shutdown {
                    // QEMU asks the main loop for both the stop and the
                    // shutdown from the vCPU thread; the main loop serves the
                    // shutdown first, and a stop of a VM that is no longer
                    // running does nothing: no STOP, no guest-panicked.
                    self.shutdown(ShutdownCause::GuestPanic, events);
                    if self.actions.panic == crate::runstate::PanicAction::ExitFailure
                        && matches!(self.exit, Some(Ok(Exit::GuestPoweroff)))
                    {
                        self.exit = Some(Ok(Exit::GuestPanicFailure));
                    }
                } else if pause {
                    self.vm_stop(RunState::GuestPanicked, events);
                }
            }
            PvPanicEvent::CrashLoaded => events.emit(Event::new(
                "GUEST_CRASHLOADED",
                Some(json!({ "action": crate::runstate::GuestPanicAction::Run })),
            )),
        }
    }

    /// SIGINT/SIGTERM/SIGHUP: QEMU's `qemu_system_killed()` — SHUTDOWN, then exit
    /// whatever `-no-shutdown` says.
    pub fn host_signal(&mut self, signal: i32, events: &mut dyn EventSink) {
        events.emit(shutdown_event(ShutdownCause::HostSignal));
        self.exit = Some(Ok(Exit::Signal(signal)));
    }

    /// The NBD server stops at exit (QEMU's `blk_exp_close_all`), with a
    /// BLOCK_EXPORT_DELETED for each export.
    pub fn close_exports(&mut self, events: &mut dyn EventSink) {
        let gone = self.nbd.close_all(&mut self.block);
        crate::commands::block_export::emit_deleted(events, gone);
    }

    /// Drops the machine: devices drained and joined, KVM VM and vCPU fds
    /// closed (process exit, after [`Vm::teardown`]).
    pub fn release_machine(&mut self) {
        self.machine = None;
        if let Some(b) = self.building.take() {
            let _ = b.join();
        }
        // No device holds a queue any more, no export serves a client
        // (QEMU's blk_exp_close_all) and no job copies (job_cancel_sync_all):
        // images can be closed cleanly.
        self.nbd.close_all(&mut self.block);
        self.jobs.cancel_all_sync(&mut self.block);
        self.block.close_all();
    }

    /// Stops every vCPU thread for good (process exit).
    pub fn teardown(&mut self) {
        for v in &self.vcpus {
            v.send(VcpuCommand::Exit);
        }
        for v in self.vcpus.drain(..) {
            let _ = v.thread.join();
        }
    }

    pub(crate) fn set_state(&mut self, to: RunState) {
        if let Err(e) = self.runstate.transition(to) {
            // QEMU aborts here; ferrovm reports it and keeps the state it had.
            eprintln!("ferrovm: internal error: {e}");
        }
    }

    /// Pauses every vCPU and waits until each has left KVM_RUN.
    pub(crate) fn pause_vcpus(&mut self) {
        for v in &self.vcpus {
            v.send(VcpuCommand::Pause);
        }
        let mut waiting: Vec<bool> = vec![true; self.vcpus.len()];
        while waiting.iter().any(|w| *w) {
            match self.msgs.recv() {
                Ok(ControlMsg::Vcpu(VcpuEvent::Paused(i)))
                | Ok(ControlMsg::Vcpu(VcpuEvent::Exited(i))) => {
                    if let Some(w) = waiting.get_mut(i) {
                        *w = false;
                    }
                }
                Ok(other) => self.deferred.push_back(other),
                Err(_) => break,
            }
        }
    }

    pub(crate) fn resume_vcpus(&mut self) {
        for v in &self.vcpus {
            v.send(VcpuCommand::Resume);
        }
    }

    /// QEMU's `do_vm_stop()`: only a running VM stops (and says STOP).
    pub(crate) fn vm_stop(&mut self, to: RunState, events: &mut dyn EventSink) {
        if !self.runstate.is_running() {
            return;
        }
        self.set_state(to);
        self.pause_vcpus();
        events.emit(Event::new("STOP", None));
        // QEMU's bdrv_drain_all() after the STOP event: once `stop` returns,
        // no device writes guest memory or an image until `cont`.
        if let Some(m) = &self.machine {
            m.devices.pause();
        }
        // The same drain pauses the running jobs and lets them go again
        // (JOB_STATUS_CHANGE paused, running); they run on while stopped.
        let mut ev = Vec::new();
        let ids = self.jobs.drain_begin(None, &mut ev);
        self.jobs.drain_end(&ids, &mut ev);
        crate::commands::emit_job_events(events, ev);
    }

    /// QEMU's `vm_start()`: RESUME, then run.
    pub(crate) fn vm_start(&mut self, events: &mut dyn EventSink) {
        if self.runstate.is_running() {
            return;
        }
        events.emit(Event::new("RESUME", None));
        self.set_state(RunState::Running);
        if let Some(m) = &self.machine {
            m.devices.resume();
        }
        self.resume_vcpus();
    }

    /// `qemu_system_reset_request()`: `-no-reboot` (reboot=shutdown) turns a
    /// reset into a shutdown with the reset's cause.
    pub(crate) fn reset_request(&mut self, cause: ShutdownCause, events: &mut dyn EventSink) {
        if self.actions.reboot == RebootAction::Shutdown {
            self.shutdown(cause, events);
        } else {
            self.system_reset(cause, events);
        }
    }

    /// The main loop's reset: rebuild the machine, RESET, and a VM that was
    /// not running comes back in `prelaunch` (softmmu/runstate.c).
    pub(crate) fn system_reset(&mut self, cause: ShutdownCause, events: &mut dyn EventSink) {
        let running = self.runstate.is_running();
        // The old vCPUs' stats, for the new ones to go on from.
        let old_stats: Vec<_> = self
            .vcpus
            .iter_mut()
            .map(|v| std::mem::replace(&mut v.stats, Err(String::new())))
            .collect();
        self.teardown();
        // Requests the old machine queued (a second reset, say) are moot now.
        self.deferred.clear();
        while self.msgs.try_recv().is_ok() {}
        if let Some(m) = &mut self.machine {
            let rebuilt = m
                .reset()
                .and_then(|()| m.boot(self.sender.clone(), !running));
            match rebuilt {
                Ok(mut vcpus) => {
                    for (v, old) in vcpus.iter_mut().zip(&old_stats) {
                        if let (Ok(new), Ok(old)) = (&mut v.stats, old) {
                            new.carry_over(old);
                        }
                    }
                    self.vcpus = vcpus;
                }
                Err(e) => {
                    self.exit = Some(Err(e));
                    return;
                }
            }
        }
        if cause.emits_reset_event() {
            events.emit(Event::new(
                "RESET",
                Some(json!({"guest": cause.is_guest(), "reason": cause.as_str()})),
            ));
        }
        if !self.runstate.is_running() {
            self.set_state(RunState::Prelaunch);
        }
    }

    /// `qemu_system_shutdown()`: SHUTDOWN, then either pause in `shutdown`
    /// (`-no-shutdown`) or leave.
    pub(crate) fn shutdown(&mut self, cause: ShutdownCause, events: &mut dyn EventSink) {
        events.emit(shutdown_event(cause));
        if self.actions.shutdown == ShutdownAction::Pause && cause != ShutdownCause::HostQmpQuit {
            self.vm_stop(RunState::Shutdown, events);
            if !self.runstate.needs_reset() {
                // Already stopped (e.g. paused): QEMU still lands in `shutdown`.
                self.set_state(RunState::Shutdown);
            }
            return;
        }
        self.exit = Some(Ok(match cause {
            ShutdownCause::GuestReset => Exit::GuestResetNoReboot,
            ShutdownCause::HostQmpSystemReset => Exit::ResetNoReboot,
            _ => Exit::GuestPoweroff,
        }));
    }

    /// A vCPU that cannot go on: with a monitor, QEMU's `internal-error`
    /// state (STOP; management decides); without one, a non-zero exit.
    pub(crate) fn vcpu_failed(&mut self, index: usize, why: String, events: &mut dyn EventSink) {
        if self.has_monitors {
            eprintln!("ferrovm: vCPU {index}: {why}");
            self.vm_stop(RunState::InternalError, events);
        } else {
            self.exit = Some(Err(VmmError::Guest(index, why)));
        }
    }
}

/// QEMU's RTC_CHANGE (hw/rtc/mc146818rtc.c `rtc_set_time`); the monitor
/// rate-limits it (monitor_qapi_event_conf).
fn rtc_change_event(offset: i64, qom_path: String) -> Event {
    Event::new(
        "RTC_CHANGE",
        Some(serde_json::json!({ "offset": offset, "qom-path": qom_path })),
    )
}

pub(crate) fn shutdown_event(cause: ShutdownCause) -> Event {
    Event::new(
        "SHUTDOWN",
        Some(json!({"guest": cause.is_guest(), "reason": cause.as_str()})),
    )
}
