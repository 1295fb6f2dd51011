//! `machine.json`: power and reset, NMI, and what the machine is (type,
//! vCPUs, memory, KVM).

use qmp::{Args, EventSink, QmpError};
use serde_json::{json, Value};

use crate::runstate::ShutdownCause;
use crate::sync::lock;
use crate::vm::Vm;

pub(super) fn execute(
    vm: &mut Vm,
    cmd: &str,
    args: &Args,
    events: &mut dyn EventSink,
) -> Result<Value, QmpError> {
    let none = Value::Null;
    Ok(match cmd {
        "balloon" => {
            let target = args.get("value").and_then(Value::as_i64).unwrap_or(0);
            let b = balloon(vm)?;
            if target <= 0 {
                // hw/core/machine-qmp-cmds.c qmp_balloon.
                return Err(QmpError::generic("Parameter 'target' expects a size"));
            }
            lock(&b.model).set_target(target as u64);
            none
        }
        "query-balloon" => json!({"actual": lock(&balloon(vm)?.model).actual_bytes()}),
        "system_reset" => {
            vm.reset_request(ShutdownCause::HostQmpSystemReset, events);
            none
        }
        "system_powerdown" => {
            vm.powerdown(events);
            none
        }
        "system_wakeup" => {
            if !vm.has_board() {
                return Err(QmpError::generic(
                    "wake-up from suspend is not supported by this guest",
                ));
            }
            return Err(QmpError::generic(
                "Unable to wake up: guest is not in suspended state",
            ));
        }
        "inject-nmi" => {
            if vm.vcpus.is_empty() {
                return Err(QmpError::unsupported());
            }
            vm.inject_nmi();
            none
        }
        "query-uuid" => {
            json!({"UUID": vm.info.uuid.clone().unwrap_or_else(|| "00000000-0000-0000-0000-000000000000".into())})
        }
        // Under `-machine none,accel=tcg` and `-accel qtest` KVM is present but not in use.
        "query-kvm" => json!({"enabled": vm.info.kvm_in_use(), "present": true}),
        "query-target" => json!({"arch": "x86_64"}),
        "query-machines" => machines(),
        "query-cpu-definitions" => super::cpu_model::definitions()?,
        "query-cpu-model-expansion" => super::cpu_model::expansion(args)?,
        "query-current-machine" => json!({"wakeup-suspend-support": false}),
        "query-cpus-fast" => cpus_fast(vm),
        "query-hotpluggable-cpus" => {
            if !vm.has_board() {
                return Err(QmpError::generic(
                    "The feature 'query-hotpluggable-cpus' is not enabled",
                ));
            }
            Value::Array(
                vm.vcpus
                    .iter()
                    .rev()
                    .map(|v| {
                        json!({"props": cpu_props(vm, v.index), "vcpus-count": 1,
                               "qom-path": cpu_qom_path(v.index), "type": "qemu64-x86_64-cpu"})
                    })
                    .collect(),
            )
        }
        "query-memory-size-summary" => {
            json!({"base-memory": vm.info.ram_bytes, "plugged-memory": 0})
        }
        _ => return Err(super::not_found(cmd)),
    })
}

fn cpus_fast(vm: &Vm) -> Value {
    Value::Array(
        vm.vcpus
            .iter()
            .map(|v| {
                json!({"cpu-index": v.index, "qom-path": cpu_qom_path(v.index), "thread-id": v.tid(),
                       "props": cpu_props(vm, v.index), "target": "x86_64"})
            })
            .collect(),
    )
}

fn cpu_props(vm: &Vm, index: usize) -> Value {
    let i = index as u32;
    let (t, c) = (vm.info.threads.max(1), vm.info.cores.max(1));
    json!({"core-id": (i / t) % c, "thread-id": i % t, "socket-id": i / (t * c)})
}

pub(super) fn cpu_qom_path(index: usize) -> String {
    // QEMU q35: CPU 0 is device[0]; later CPUs follow the kvmclock at device[1].
    let n = if index == 0 { 0 } else { index + 1 };
    format!("/machine/unattached/device[{n}]")
}

/// The machine types ferrovm builds (cli's table, which `-machine help`
/// prints too), in QEMU 7.2's MachineInfo shape.
fn machines() -> Value {
    Value::Array(
        cli::machine_types()
            .into_iter()
            .map(|t| {
                let pc = t.kind == cli::MachineKind::Q35;
                let mut m = json!({"name": t.name, "cpu-max": t.cpu_max, "hotpluggable-cpus": pc,
                                   "numa-mem-supported": false, "deprecated": t.deprecated,
                                   "default-ram-id": if pc { "pc.ram" } else { "ram" }});
                if pc {
                    m["default-cpu-type"] = json!("qemu64-x86_64-cpu");
                }
                if let Some(a) = t.alias {
                    m["alias"] = json!(a);
                }
                if t.is_default {
                    m["is-default"] = json!(true);
                }
                m
            })
            .collect(),
    )
}

/// The balloon, or QEMU's `have_balloon` error: a balloon counts once it is
/// realized, whether or not a driver has found it.
fn balloon(vm: &Vm) -> Result<&crate::devices::balloon::Balloon, QmpError> {
    vm.machine
        .as_ref()
        .and_then(|m| m.devices.balloon())
        .ok_or_else(|| QmpError::device_not_active("No balloon device has been activated"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_qom_paths_follow_q35_numbering() {
        assert_eq!(cpu_qom_path(0), "/machine/unattached/device[0]");
        assert_eq!(cpu_qom_path(1), "/machine/unattached/device[2]");
    }
}
