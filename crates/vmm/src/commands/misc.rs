//! `misc.json`: `stop`, `cont`, the VM's name and its iothreads.

use qmp::{Args, EventSink, QmpError};
use serde_json::{json, Value};

use crate::runstate::RunState;
use crate::vm::Vm;

pub(super) fn execute(
    vm: &mut Vm,
    cmd: &str,
    _args: &Args,
    events: &mut dyn EventSink,
) -> Result<Value, QmpError> {
    match cmd {
        "stop" => {
            vm.vm_stop(RunState::Paused, events);
            Ok(Value::Null)
        }
        "cont" => {
            if vm.runstate.needs_reset() {
                return Err(QmpError::generic(
                    "Resetting the Virtual Machine is required",
                ));
            }
            // qmp_cont(): every drive's I/O status is reset first.
            for b in vm.block.backends() {
                b.iostatus_reset();
            }
            if vm.runstate.state() != RunState::Suspended {
                vm.vm_start(events);
            }
            Ok(Value::Null)
        }
        "query-name" => Ok(match &vm.info.name {
            Some(n) => json!({"name": n}),
            None => json!({}),
        }),
        "query-iothreads" => Ok(json!([])),
        _ => Err(super::not_found(cmd)),
    }
}
