//! `tpm.json`: ferrovm has no TPM front-end (tpm-tis, tpm-crb) and no
//! backend (passthrough, emulator), so both lists are empty, as QEMU's are
//! for a build without them (backends/tpm/tpm_backend.c
//! `qmp_query_tpm_types` lists only the registered backends; libvirt then
//! refuses a `<tpm>` domain with a clear reason).

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
        "query-tpm-models" | "query-tpm-types" => Ok(json!([])),
        _ => Err(super::not_found(cmd)),
    }
}
