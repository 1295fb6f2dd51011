//! `misc.json`: `stop`, `cont`, the VM's name and its iothreads, the
//! command-line options (from the CLI's option table); `misc-target.json`:
//! the RTC's lost-tick reinjection, SEV and SGX (which ferrovm does not offer).

use qmp::{Args, EventSink, QmpError};
use serde_json::{json, Value};

use crate::runstate::RunState;
use crate::vm::Vm;

pub(super) fn execute(
    vm: &mut Vm,
    cmd: &str,
    args: &Args,
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
        // hw/rtc/mc146818rtc.c qmp_rtc_reset_reinjection: succeeds whether
        // or not there is an RTC, or one with driftfix=slew.
        "rtc-reset-reinjection" => {
            if let Some(m) = &vm.machine {
                crate::sync::lock(&m.devices.legacy.cmos).reset_reinjection();
            }
            Ok(Value::Null)
        }
        "query-command-line-options" => cli::command_line_options(args.opt_str("option"))
            .map(Value::Array)
            .map_err(QmpError::generic),
        // QEMU 7.2's words on a KVM without SEV or SGX (target/i386/sev.c
        // `sev_get_capabilities`, hw/i386/sgx.c `sgx_get_capabilities`):
        // ferrovm never enables either.
        "query-sev-capabilities" => Err(QmpError::generic("SEV is not enabled in KVM")),
        "query-sgx-capabilities" => Err(QmpError::generic("SGX is not enabled in KVM")),
        _ => Err(super::not_found(cmd)),
    }
}
