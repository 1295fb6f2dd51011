//! The owner of the guest's life: run state, vCPUs, power events, and the
//! QMP commands that drive them (it is the monitor's [`qmp::Handler`]).
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
use qmp::{Args, Event, EventSink, QmpError};
use serde_json::{json, Value};

use crate::controller::{ControlMsg, ControlSender, Exit};
use crate::error::VmmError;
use crate::machine::{Machine, MachineSpec};
use crate::platform::{lock, Platform};
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
}

pub struct Vm {
    machine: Option<Machine>,
    /// A machine to build on a helper thread (see [`Vm::defer_start`]).
    unbuilt: Option<Box<(MachineSpec, Platform)>>,
    /// The machine being built on a helper thread.
    building: Option<std::thread::JoinHandle<Result<Machine, VmmError>>>,
    /// Start-up still to do, with its `-S` flag.
    pending_start: Option<bool>,
    vcpus: Vec<VcpuHandle>,
    sender: Arc<ControlSender>,
    msgs: Receiver<ControlMsg>,
    /// Messages that arrived while a command waited for vCPU acknowledgements.
    deferred: VecDeque<ControlMsg>,
    runstate: RunStateMachine,
    actions: Actions,
    info: VmInfo,
    /// Without a monitor, nobody could act on a stopped machine: vCPU
    /// failures end the process instead of entering `internal-error`.
    has_monitors: bool,
    exit: Option<Result<Exit, VmmError>>,
}

/// The commands served here; the qmp library serves the rest of the schema
/// and checks at start-up that the two lists cover it exactly.
const COMMANDS: &[&str] = &[
    "query-status",
    "stop",
    "cont",
    "system_reset",
    "system_powerdown",
    "system_wakeup",
    "quit",
    "inject-nmi",
    "set-action",
    "query-name",
    "query-uuid",
    "query-kvm",
    "query-target",
    "query-machines",
    "query-current-machine",
    "query-cpus-fast",
    "query-hotpluggable-cpus",
    "query-memory-size-summary",
    "query-chardev",
    "query-iothreads",
    "qom-list",
    "qom-get",
];

impl Vm {
    pub fn new(
        machine: Option<Machine>,
        sender: Arc<ControlSender>,
        msgs: Receiver<ControlMsg>,
        actions: Actions,
        info: VmInfo,
        has_monitors: bool,
    ) -> Self {
        Self {
            machine,
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
        }
    }

    /// With `-S` nothing runs before `cont`, so the monitors may greet their
    /// clients while the KVM machine is built (and, for a distro bzImage, its
    /// kernel decompressed) on a helper thread. The first command waits for
    /// it; a failure ends the process with the error, as it would have before.
    pub fn defer_start(&mut self, unbuilt: Option<(MachineSpec, Platform)>) {
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
            let (spec, platform) = *b;
            let sender = self.sender.clone();
            self.building = Some(std::thread::spawn(move || {
                let built = Machine::new(spec, platform);
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
        self.machine.as_ref()?.platform.serial.as_deref()
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
        }
    }

    /// SIGINT/SIGTERM/SIGHUP: QEMU's `qemu_system_killed()` — SHUTDOWN, then exit
    /// whatever `-no-shutdown` says.
    pub fn host_signal(&mut self, signal: i32, events: &mut dyn EventSink) {
        events.emit(shutdown_event(ShutdownCause::HostSignal));
        self.exit = Some(Ok(Exit::Signal(signal)));
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

    fn set_state(&mut self, to: RunState) {
        if let Err(e) = self.runstate.transition(to) {
            // QEMU aborts here; ferrovm reports it and keeps the state it had.
            eprintln!("ferrovm: internal error: {e}");
        }
    }

    /// Pauses every vCPU and waits until each has left KVM_RUN.
    fn pause_vcpus(&mut self) {
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

    fn resume_vcpus(&mut self) {
        for v in &self.vcpus {
            v.send(VcpuCommand::Resume);
        }
    }

    /// QEMU's `do_vm_stop()`: only a running VM stops (and says STOP).
    fn vm_stop(&mut self, to: RunState, events: &mut dyn EventSink) {
        if !self.runstate.is_running() {
            return;
        }
        self.set_state(to);
        self.pause_vcpus();
        events.emit(Event::new("STOP", None));
    }

    /// QEMU's `vm_start()`: RESUME, then run.
    fn vm_start(&mut self, events: &mut dyn EventSink) {
        if self.runstate.is_running() {
            return;
        }
        events.emit(Event::new("RESUME", None));
        self.set_state(RunState::Running);
        self.resume_vcpus();
    }

    /// `qemu_system_reset_request()`: `-no-reboot` (reboot=shutdown) turns a
    /// reset into a shutdown with the reset's cause.
    fn reset_request(&mut self, cause: ShutdownCause, events: &mut dyn EventSink) {
        if self.actions.reboot == RebootAction::Shutdown {
            self.shutdown(cause, events);
        } else {
            self.system_reset(cause, events);
        }
    }

    /// The main loop's reset: rebuild the machine, RESET, and a VM that was
    /// not running comes back in `prelaunch` (softmmu/runstate.c).
    fn system_reset(&mut self, cause: ShutdownCause, events: &mut dyn EventSink) {
        let running = self.runstate.is_running();
        self.teardown();
        // Requests the old machine queued (a second reset, say) are moot now.
        self.deferred.clear();
        while self.msgs.try_recv().is_ok() {}
        if let Some(m) = &mut self.machine {
            let rebuilt = m
                .reset()
                .and_then(|()| m.boot(self.sender.clone(), !running));
            match rebuilt {
                Ok(vcpus) => self.vcpus = vcpus,
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
    fn shutdown(&mut self, cause: ShutdownCause, events: &mut dyn EventSink) {
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
    fn vcpu_failed(&mut self, index: usize, why: String, events: &mut dyn EventSink) {
        if self.has_monitors {
            eprintln!("ferrovm: vCPU {index}: {why}");
            self.vm_stop(RunState::InternalError, events);
        } else {
            self.exit = Some(Err(VmmError::Guest(index, why)));
        }
    }

    fn query_status(&self) -> Value {
        let s = self.runstate.state();
        json!({"running": s == RunState::Running, "singlestep": false, "status": s.as_str()})
    }

    fn cpus_fast(&self) -> Value {
        Value::Array(
            self.vcpus
                .iter()
                .map(|v| {
                    json!({"cpu-index": v.index, "qom-path": cpu_qom_path(v.index), "thread-id": v.tid(),
                           "props": self.cpu_props(v.index), "target": "x86_64"})
                })
                .collect(),
        )
    }

    fn cpu_props(&self, index: usize) -> Value {
        let i = index as u32;
        let (t, c) = (self.info.threads.max(1), self.info.cores.max(1));
        json!({"core-id": (i / t) % c, "thread-id": i % t, "socket-id": i / (t * c)})
    }

    /// Every QOM path ferrovm models.
    fn qom_paths(&self) -> Vec<String> {
        let mut paths: Vec<String> = [
            "/",
            "/objects",
            "/chardevs",
            "/machine",
            "/machine/peripheral",
            "/machine/peripheral-anon",
            "/machine/unattached",
        ]
        .iter()
        .map(|p| p.to_string())
        .collect();
        paths.extend(self.vcpus.iter().map(|v| cpu_qom_path(v.index)));
        paths
    }

    /// QEMU's `object_resolve_path()`: an absolute path ignores empty
    /// components; a partial path names the unique object whose path ends
    /// with it, and is ambiguous when several do.
    fn resolve_qom_path(&self, path: &str) -> Result<String, QmpError> {
        let parts: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
        let paths = self.qom_paths();
        if path.starts_with('/') {
            let canon = format!("/{}", parts.join("/"));
            if paths.contains(&canon) {
                return Ok(canon);
            }
        } else {
            let matches: Vec<&String> = paths
                .iter()
                .filter(|p| {
                    let comps: Vec<&str> = p.split('/').filter(|c| !c.is_empty()).collect();
                    comps.len() >= parts.len() && comps[comps.len() - parts.len()..] == parts[..]
                })
                .collect();
            match matches.len() {
                0 => {}
                1 => return Ok(matches[0].clone()),
                _ => return Err(QmpError::generic(format!("Path '{path}' is ambiguous"))),
            }
        }
        Err(QmpError::device_not_found(format!(
            "Device '{path}' not found"
        )))
    }

    fn qom_list(&self, path: &str) -> Result<Value, QmpError> {
        let path = self.resolve_qom_path(path)?;
        let entries: Vec<(String, String)> = match path.as_str() {
            "/" => pairs(&[
                ("type", "string"),
                ("objects", "child<container>"),
                ("machine", &format!("child<{}>", self.info.machine_type)),
                ("chardevs", "child<container>"),
            ]),
            "/machine" => pairs(&[
                ("type", "string"),
                ("peripheral", "child<container>"),
                ("peripheral-anon", "child<container>"),
                ("unattached", "child<container>"),
            ]),
            "/objects" | "/chardevs" | "/machine/peripheral" | "/machine/peripheral-anon" => {
                pairs(&[("type", "string")])
            }
            "/machine/unattached" => {
                let mut v = pairs(&[("type", "string")]);
                v.extend(self.vcpus.iter().map(|c| {
                    let path = cpu_qom_path(c.index);
                    let child = path.rsplit('/').next().unwrap_or_default().to_string();
                    (child, "child<qemu64-x86_64-cpu>".to_string())
                }));
                v
            }
            p if self.cpu_by_path(p).is_some() => {
                pairs(&[("type", "string"), ("realized", "bool")])
            }
            p => {
                return Err(QmpError::device_not_found(format!(
                    "Device '{p}' not found"
                )))
            }
        };
        Ok(Value::Array(
            entries
                .into_iter()
                .map(|(n, t)| json!({"name": n, "type": t}))
                .collect(),
        ))
    }

    fn qom_get(&self, path: &str, property: &str) -> Result<Value, QmpError> {
        let path = self.resolve_qom_path(path)?;
        let type_name = match path.as_str() {
            "/machine" => self.info.machine_type.clone(),
            "/"
            | "/objects"
            | "/chardevs"
            | "/machine/peripheral"
            | "/machine/peripheral-anon"
            | "/machine/unattached" => "container".into(),
            p if self.cpu_by_path(p).is_some() => "qemu64-x86_64-cpu".into(),
            p => {
                return Err(QmpError::device_not_found(format!(
                    "Device '{p}' not found"
                )))
            }
        };
        match property {
            "type" => Ok(json!(type_name)),
            "realized" if type_name.ends_with("-cpu") => Ok(json!(true)),
            p => Err(QmpError::generic(format!(
                "Property '{type_name}.{p}' not found"
            ))),
        }
    }

    fn cpu_by_path(&self, path: &str) -> Option<usize> {
        self.vcpus
            .iter()
            .map(|v| v.index)
            .find(|&i| cpu_qom_path(i) == path)
    }

    /// `set-action`: the schema has already checked the values' names.
    fn set_action(&mut self, args: &Args) -> Result<(), QmpError> {
        fn parse<T: std::str::FromStr>(
            args: &Args,
            name: &str,
            into: &mut T,
        ) -> Result<(), QmpError> {
            if let Some(v) = args.opt_str(name) {
                *into = v.parse().map_err(|_| {
                    QmpError::generic(format!("Parameter '{name}' does not accept value '{v}'"))
                })?;
            }
            Ok(())
        }
        let mut a = self.actions;
        parse(args, "reboot", &mut a.reboot)?;
        parse(args, "shutdown", &mut a.shutdown)?;
        parse(args, "panic", &mut a.panic)?;
        parse(args, "watchdog", &mut a.watchdog)?;
        self.actions = a;
        Ok(())
    }
}

fn cpu_qom_path(index: usize) -> String {
    // QEMU q35: CPU 0 is device[0]; later CPUs follow the kvmclock at device[1].
    let n = if index == 0 { 0 } else { index + 1 };
    format!("/machine/unattached/device[{n}]")
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

fn shutdown_event(cause: ShutdownCause) -> Event {
    Event::new(
        "SHUTDOWN",
        Some(json!({"guest": cause.is_guest(), "reason": cause.as_str()})),
    )
}

impl qmp::Handler for Vm {
    fn commands(&self) -> &[&str] {
        COMMANDS
    }

    fn exit_requested(&self) -> bool {
        self.exit.is_some()
    }

    fn execute(
        &mut self,
        cmd: &str,
        args: &Args,
        events: &mut dyn EventSink,
    ) -> Result<Value, QmpError> {
        self.ensure_started();
        if self.exit.as_ref().is_some_and(|e| e.is_err()) {
            return Err(QmpError::generic("the machine could not be started"));
        }
        let none = Value::Null;
        Ok(match cmd {
            "query-status" => self.query_status(),
            "stop" => {
                self.vm_stop(RunState::Paused, events);
                none
            }
            "cont" => {
                if self.runstate.needs_reset() {
                    return Err(QmpError::generic(
                        "Resetting the Virtual Machine is required",
                    ));
                }
                if self.runstate.state() != RunState::Suspended {
                    self.vm_start(events);
                }
                none
            }
            "system_reset" => {
                self.reset_request(ShutdownCause::HostQmpSystemReset, events);
                none
            }
            "system_powerdown" => {
                events.emit(Event::new("POWERDOWN", None));
                if let Some(m) = &self.machine {
                    lock(&m.platform.acpi_pm).press_power_button();
                }
                none
            }
            "system_wakeup" => {
                if self.machine.is_none() {
                    return Err(QmpError::generic(
                        "wake-up from suspend is not supported by this guest",
                    ));
                }
                return Err(QmpError::generic(
                    "Unable to wake up: guest is not in suspended state",
                ));
            }
            "quit" => {
                events.emit(shutdown_event(ShutdownCause::HostQmpQuit));
                self.exit = Some(Ok(Exit::Quit));
                none
            }
            "inject-nmi" => {
                if self.vcpus.is_empty() {
                    return Err(QmpError::unsupported());
                }
                for v in &self.vcpus {
                    v.send(VcpuCommand::Nmi);
                }
                none
            }
            "set-action" => {
                self.set_action(args)?;
                none
            }
            "query-name" => match &self.info.name {
                Some(n) => json!({"name": n}),
                None => json!({}),
            },
            "query-uuid" => {
                json!({"UUID": self.info.uuid.clone().unwrap_or_else(|| "00000000-0000-0000-0000-000000000000".into())})
            }
            "query-kvm" => json!({"enabled": true, "present": true}),
            "query-target" => json!({"arch": "x86_64"}),
            "query-machines" => machines(),
            "query-current-machine" => json!({"wakeup-suspend-support": false}),
            "query-cpus-fast" => self.cpus_fast(),
            "query-hotpluggable-cpus" => {
                if self.machine.is_none() {
                    return Err(QmpError::generic(
                        "The feature 'query-hotpluggable-cpus' is not enabled",
                    ));
                }
                Value::Array(
                    self.vcpus
                        .iter()
                        .rev()
                        .map(|v| {
                            json!({"props": self.cpu_props(v.index), "vcpus-count": 1,
                                   "qom-path": cpu_qom_path(v.index), "type": "qemu64-x86_64-cpu"})
                        })
                        .collect(),
                )
            }
            "query-memory-size-summary" => {
                json!({"base-memory": self.info.ram_bytes, "plugged-memory": 0})
            }
            "query-chardev" => Value::Array(self.info.chardevs.clone()),
            "query-iothreads" => json!([]),
            "qom-list" => self.qom_list(args.str("path")?)?,
            "qom-get" => self.qom_get(args.str("path")?, args.str("property")?)?,
            _ => {
                return Err(QmpError::command_not_found(format!(
                    "The command {cmd} has not been found"
                )))
            }
        })
    }
}

/// The machine types ferrovm builds, in QEMU 7.2's MachineInfo shape.
fn machines() -> Value {
    let pc = |name: &str, alias: Option<&str>, default: bool| {
        let mut m = json!({"name": name, "cpu-max": 288, "hotpluggable-cpus": true, "numa-mem-supported": false,
                           "deprecated": false, "default-cpu-type": "qemu64-x86_64-cpu", "default-ram-id": "pc.ram"});
        if let Some(a) = alias {
            m["alias"] = json!(a);
        }
        if default {
            m["is-default"] = json!(true);
        }
        m
    };
    json!([
        pc("pc-q35-7.2", Some("q35"), false),
        pc("pc-i440fx-7.2", Some("pc"), true),
        pc("ferrovm", None, false),
        {"name": "none", "cpu-max": 1, "hotpluggable-cpus": false, "numa-mem-supported": false,
         "deprecated": false, "default-ram-id": "ram"}
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The handler serves exactly the schema's commands the library leaves to it.
    #[test]
    fn serves_exactly_the_schema_commands() {
        struct Commands;
        impl qmp::Handler for Commands {
            fn commands(&self) -> &[&str] {
                COMMANDS
            }
            fn execute(
                &mut self,
                cmd: &str,
                _: &Args,
                _: &mut dyn EventSink,
            ) -> Result<Value, QmpError> {
                Err(QmpError::command_not_found(format!(
                    "The command {cmd} has not been found"
                )))
            }
        }
        qmp::check_handler(&Commands).unwrap();
    }

    #[test]
    fn cpu_qom_paths_follow_q35_numbering() {
        assert_eq!(cpu_qom_path(0), "/machine/unattached/device[0]");
        assert_eq!(cpu_qom_path(1), "/machine/unattached/device[2]");
    }
}
