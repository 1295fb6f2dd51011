//! `control.json`: `quit` (the library serves the protocol's own commands).

use qmp::{Args, EventSink, QmpError};
use serde_json::Value;

use crate::messages::Exit;
use crate::runstate::ShutdownCause;
use crate::vm::{shutdown_event, Vm};

pub(super) fn execute(
    vm: &mut Vm,
    cmd: &str,
    _args: &Args,
    events: &mut dyn EventSink,
) -> Result<Value, QmpError> {
    match cmd {
        "quit" => {
            events.emit(shutdown_event(ShutdownCause::HostQmpQuit));
            // QEMU's exports go during its cleanup, with their events
            // before this command's reply.
            vm.close_exports(events);
            vm.exit = Some(Ok(Exit::Quit));
            Ok(Value::Null)
        }
        _ => Err(super::not_found(cmd)),
    }
}
