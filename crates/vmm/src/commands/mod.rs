//! The QMP commands the VMM serves, routed by the schema module that declares
//! them (`crates/qmp/schema/<module>.json`): each module's file matches only
//! its own commands, so no one `match` lists them all, and the schema stays
//! the one list of what is served (the tests ask the real handler for every
//! schema command).

mod bitmap;
mod block;
pub(crate) mod block_export;
mod char;
mod control;
mod cpu_model;
mod cpu_qom;
pub(crate) mod job;
mod machine;
mod migration;
mod misc;
mod net;
mod pci;
mod qdev;
mod qom;
mod run_state;
mod stats;
mod tpm;
mod transaction;

use qmp::{Args, EventSink, QmpError};
use serde_json::Value;

use crate::vm::Vm;

pub(crate) use net::nics_of;

type Serve = fn(&mut Vm, &str, &Args, &mut dyn EventSink) -> Result<Value, QmpError>;

/// Schema module → the subsystem that serves its commands.
const ROUTES: &[(&str, Serve)] = &[
    ("run-state", run_state::execute),
    ("machine", machine::execute),
    ("misc", misc::execute),
    ("control", control::execute),
    ("char", char::execute),
    ("net", net::execute),
    ("qom", qom::execute),
    ("block-core", block::execute),
    ("block-export", block_export::execute),
    ("job", job::execute),
    ("pci", pci::execute),
    ("stats", stats::execute),
    ("qdev", qdev::execute),
    ("tpm", tpm::execute),
    ("migration", migration::execute),
    ("transaction", transaction::execute),
];

/// Job events for the monitors (from outside the job commands).
pub(crate) fn emit_job_events(events: &mut dyn EventSink, ev: Vec<::block::job::JobEvent>) {
    job::emit(events, ev);
}

fn not_found(cmd: &str) -> QmpError {
    QmpError::command_not_found(format!("The command {cmd} has not been found"))
}

impl qmp::Handler for Vm {
    fn exit_requested(&self) -> bool {
        self.exit.is_some()
    }

    fn hmp_qemu_io(&mut self, qdev: bool, device: &str, command: &str) -> Result<(), QmpError> {
        self.ensure_started();
        block::hmp_qemu_io(self, qdev, device, command)
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
        let module = qmp::schema()
            .command(cmd)
            .map(|c| c.module.as_str())
            .ok_or_else(|| not_found(cmd))?;
        let serve = ROUTES
            .iter()
            .find(|(m, _)| *m == module)
            .map(|(_, f)| *f)
            .ok_or_else(|| not_found(cmd))?;
        serve(self, cmd, args, events)
    }
}

#[cfg(test)]
mod tests {
    use crate::runstate::Actions;
    use crate::vm::{Vm, VmInfo};

    /// Every command the schema leaves to the VMM reaches a subsystem that
    /// serves it: asked of the real handler (a machine-less VM, as
    /// `-machine none`), none answers CommandNotFound.
    #[test]
    fn the_real_handler_serves_every_schema_command() {
        let (_poll, sender, msgs) = crate::messages::channel().unwrap();
        let mut vm = Vm::new(
            None,
            sender,
            msgs,
            Actions::default(),
            VmInfo::default(),
            true,
        );
        let unserved = qmp::unserved_commands(&mut vm);
        assert!(unserved.is_empty(), "not served: {unserved:?}");
    }
}
