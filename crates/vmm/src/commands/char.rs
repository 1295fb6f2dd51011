//! `char.json`: the chardevs that are not monitors (the QMP library puts the
//! monitors' own first, as QEMU lists them).

use qmp::{Args, EventSink, QmpError};
use serde_json::Value;

use crate::vm::Vm;

pub(super) fn execute(
    vm: &mut Vm,
    cmd: &str,
    _args: &Args,
    _events: &mut dyn EventSink,
) -> Result<Value, QmpError> {
    match cmd {
        "query-chardev" => Ok(Value::Array(vm.info.chardevs.clone())),
        _ => Err(super::not_found(cmd)),
    }
}
