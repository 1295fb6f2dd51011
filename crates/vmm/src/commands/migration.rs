//! `migration.json`: ferrovm does not migrate. QEMU lists every
//! capability with `state: false`, which promises that
//! `migrate-set-capabilities` can enable each one; ferrovm can enable none,
//! so it lists none. libvirt reads the list as "supported capabilities"
//! (qemu_capabilities.c `virQEMUCapsProbeQMPMigrationCapabilities`) and, with
//! none, offers no migration feature and sends no `migrate-set-capabilities`.

use qmp::{Args, EventSink, QmpError};
use serde_json::{json, Value};

use crate::vm::Vm;

pub(super) fn execute(
    _vm: &mut Vm,
    cmd: &str,
    _args: &Args,
    _events: &mut dyn EventSink,
) -> Result<Value, QmpError> {
    match cmd {
        "query-migrate-capabilities" => Ok(json!([])),
        _ => Err(super::not_found(cmd)),
    }
}
