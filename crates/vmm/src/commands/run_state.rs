//! `run-state.json`: the run state and the actions taken on guest events.

use qmp::{Args, EventSink, QmpError};
use serde_json::{json, Value};

use crate::runstate::RunState;
use crate::vm::Vm;

pub(super) fn execute(
    vm: &mut Vm,
    cmd: &str,
    args: &Args,
    _events: &mut dyn EventSink,
) -> Result<Value, QmpError> {
    match cmd {
        "query-status" => {
            let s = vm.runstate.state();
            Ok(
                json!({"running": s == RunState::Running, "singlestep": false, "status": s.as_str()}),
            )
        }
        "set-action" => set_action(vm, args).map(|()| Value::Null),
        // The schema has checked the name; QEMU 7.2 keeps it for the next expiry.
        "watchdog-set-action" => {
            let v = args.str("action")?;
            vm.actions.watchdog = v.parse().map_err(|_| {
                QmpError::generic(format!("Parameter 'action' does not accept value '{v}'"))
            })?;
            Ok(Value::Null)
        }
        _ => Err(super::not_found(cmd)),
    }
}

/// `set-action`: the schema has already checked the values' names.
fn set_action(vm: &mut Vm, args: &Args) -> Result<(), QmpError> {
    fn parse<T: std::str::FromStr>(args: &Args, name: &str, into: &mut T) -> Result<(), QmpError> {
        if let Some(v) = args.opt_str(name) {
            *into = v.parse().map_err(|_| {
                QmpError::generic(format!("Parameter '{name}' does not accept value '{v}'"))
            })?;
        }
        Ok(())
    }
    let mut a = vm.actions;
    parse(args, "reboot", &mut a.reboot)?;
    parse(args, "shutdown", &mut a.shutdown)?;
    parse(args, "panic", &mut a.panic)?;
    parse(args, "watchdog", &mut a.watchdog)?;
    vm.actions = a;
    Ok(())
}
