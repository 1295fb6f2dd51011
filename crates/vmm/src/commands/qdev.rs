//! `qdev.json`: `device_add`, `device_del` and `device-list-properties`
//! (from the `-device` registry, see `qom_types`). Every device ferrovm builds
//! sits on pcie.0, which has no hotplug on q35; QEMU answers the same (PCIe
//! root ports, where hotplug lives, are not modelled yet). `device_add` is
//! `'gen': false`: its arguments arrive unchecked, so it checks `driver`
//! here, with QEMU's messages.

use qmp::{Args, EventSink, QmpError};
use serde_json::Value;

use crate::devices::qdev::{self, ROOT_BUS};
use crate::sync::lock;
use crate::vm::Vm;

pub(super) fn execute(
    vm: &mut Vm,
    cmd: &str,
    args: &Args,
    _events: &mut dyn EventSink,
) -> Result<Value, QmpError> {
    let no_hotplug = || QmpError::generic(format!("Bus '{ROOT_BUS}' does not support hotplugging"));
    match cmd {
        "device_add" => {
            let driver = match args.get("driver") {
                None => return Err(QmpError::generic("Parameter 'driver' is missing")),
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
            };
            if qdev::driver(&driver).is_none() {
                return Err(QmpError::generic(format!(
                    "'{driver}' is not a valid device model name"
                )));
            }
            if vm.machine.is_none() {
                return Err(QmpError::generic(format!(
                    "No 'PCI' bus found for device '{driver}'"
                )));
            }
            Err(no_hotplug())
        }
        "device_del" => {
            let id = args.str("id")?;
            let short = id.strip_prefix("/machine/peripheral/").unwrap_or(id);
            let known = vm.machine.as_ref().is_some_and(|m| {
                let root = lock(&m.devices.pci.root);
                root.addresses().into_iter().any(|a| {
                    root.options(a)
                        .is_some_and(|o| !o.id.is_empty() && o.id == short)
                })
            });
            if known {
                Err(no_hotplug())
            } else {
                Err(QmpError::device_not_found(format!(
                    "Device '{id}' not found"
                )))
            }
        }
        "device-list-properties" => Ok(crate::qom_types::device_properties(args.str("typename")?)?),
        _ => Err(super::not_found(cmd)),
    }
}
