//! `migration.json`: ferrovm does not migrate. QEMU lists every
//! capability with `state: false`, which promises that
//! `migrate-set-capabilities` can enable each one. ferrovm lists only
//! `events` (MIGRATION events), the one it can honour: with no migration
//! there is never an event to send. libvirt enables it on every domain start
//! (qemu_migration_params.c `qemuMigrationCapsCheck`) and refuses to start
//! the domain if that fails; it reads the rest of the list as "supported
//! capabilities" (`virQEMUCapsProbeQMPMigrationCapabilities`), so no
//! migration feature is offered.

use qmp::{Args, EventSink, QmpError};
use serde_json::{json, Value};

use crate::vm::Vm;

pub(super) fn execute(
    vm: &mut Vm,
    cmd: &str,
    args: &Args,
    _events: &mut dyn EventSink,
) -> Result<Value, QmpError> {
    match cmd {
        "query-migrate-capabilities" => Ok(json!([
            {"capability": "events", "state": vm.migration_events}
        ])),
        // QEMU's answer before any calc-dirty-rate (migration/dirtyrate.c
        // `query_dirty_rate_info` on the zeroed DirtyStat).
        "query-dirty-rate" => Ok(json!({
            "status": "unstarted", "sample-pages": 0, "mode": "page-sampling",
            "start-time": 0, "calc-time": 0
        })),
        "migrate-set-capabilities" => {
            let caps = args.get("capabilities").and_then(Value::as_array);
            let mut events = vm.migration_events;
            // All or nothing, as QEMU's migrate_caps_check runs before any is set.
            for c in caps.into_iter().flatten() {
                let name = c["capability"].as_str().unwrap_or_default();
                let state = c["state"].as_bool().unwrap_or_default();
                match name {
                    "events" => events = state,
                    // Disabling what is off anyway is no change.
                    _ if !state => {}
                    _ => {
                        return Err(QmpError::generic(format!(
                            "Migration capability '{name}' is not supported by ferrovm \
                             (it does not migrate)"
                        )))
                    }
                }
            }
            vm.migration_events = events;
            Ok(json!({}))
        }
        _ => Err(super::not_found(cmd)),
    }
}
