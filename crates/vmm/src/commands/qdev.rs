//! `qdev.json`: `device_add`, `device_del` and `device-list-properties`
//! (from the `-device` registry, see `qom_types`). Every device ferrovm builds
//! sits on pcie.0, which has no hotplug on q35; QEMU answers the same (PCIe
//! root ports, where hotplug lives, are not modelled yet). `device_add` is
//! `'gen': false`: its arguments arrive unchecked, so it checks `driver`
//! here, with QEMU's messages.

use qmp::{Args, Event, EventSink, QmpError};
use serde_json::Value;

use crate::devices::qdev::{self, ROOT_BUS};
use crate::devices::tree;
use crate::sync::lock;
use crate::vm::Vm;

pub(super) fn execute(
    vm: &mut Vm,
    cmd: &str,
    args: &Args,
    events: &mut dyn EventSink,
) -> Result<Value, QmpError> {
    let no_hotplug = || QmpError::generic(format!("Bus '{ROOT_BUS}' does not support hotplugging"));
    match cmd {
        "device_add" => {
            let driver = match args.get("driver") {
                None => return Err(QmpError::generic("Parameter 'driver' is missing")),
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
            };
            if let Some(d) = tree::tree_driver(&driver) {
                return tree_device_add(vm, d, args);
            }
            if qdev::driver(&driver).is_none() {
                return Err(QmpError::generic(format!(
                    "'{driver}' is not a valid device model name"
                )));
            }
            if !vm.has_board() {
                return Err(QmpError::generic(format!(
                    "No 'PCI' bus found for device '{driver}'"
                )));
            }
            Err(no_hotplug())
        }
        "device_del" => {
            let id = args.str("id")?;
            let short = id.strip_prefix("/machine/peripheral/").unwrap_or(id);
            if let Some(t) = &mut vm.tree {
                if let Some(u) = t.unplug(&mut vm.block, id) {
                    unplugged(vm, u, events);
                    return Ok(Value::Null);
                }
            }
            let known = vm.tree.as_ref().is_some_and(|t| t.has_device(id))
                || vm.machine.as_ref().is_some_and(|m| {
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

/// `device_add` of a driver that exists only in qtest's device tree: a SCSI
/// disk plugs into its controller's bus (which supports hotplug, as
/// virtio-scsi's does); a controller would go on pcie.0, which does not.
fn tree_device_add(vm: &mut Vm, driver: &'static str, args: &Args) -> Result<Value, QmpError> {
    if vm.tree.is_none() {
        return Err(QmpError::generic(format!(
            "'{driver}' has no register model in ferrovm (accepted only under -accel qtest, where no guest runs)"
        )));
    }
    let request = tree::parse(driver, args.as_map()).map_err(QmpError::generic)?;
    if let tree::TreeRequest::VirtioScsi { .. } = request {
        return Err(QmpError::generic(format!(
            "Bus '{ROOT_BUS}' does not support hotplugging"
        )));
    }
    let qom_path = match request.id() {
        Some(id) => {
            if vm
                .peripherals()
                .iter()
                .any(|p| p.qom_path == format!("/machine/peripheral/{id}"))
            {
                return Err(QmpError::generic(format!("Duplicate device ID '{id}'")));
            }
            format!("/machine/peripheral/{id}")
        }
        None => next_anon_path(&vm.peripherals()),
    };
    if let Some(t) = &mut vm.tree {
        t.add(&mut vm.block, request, qom_path)
            .map_err(QmpError::generic)?;
    }
    Ok(Value::Null)
}

/// The next `/machine/peripheral-anon/device[N]`: after the highest listed
/// (QEMU's counter never goes back, even when that device has left).
fn next_anon_path(devices: &[crate::devices::Peripheral]) -> String {
    let n = devices
        .iter()
        .filter_map(|p| {
            p.qom_path
                .strip_prefix("/machine/peripheral-anon/device[")?
                .strip_suffix(']')?
                .parse::<usize>()
                .ok()
        })
        .max()
        .map_or(0, |m| m + 1);
    format!("/machine/peripheral-anon/device[{n}]")
}

/// A device left: its drive's jobs are cancelled (blockdev.c
/// `blockdev_mark_auto_del`), then DEVICE_DELETED (qdev.c `device_unparent`).
fn unplugged(vm: &mut Vm, u: tree::Unplugged, events: &mut dyn EventSink) {
    for job in &u.jobs {
        let cancelled = super::job::drained(vm, |jobs, g| jobs.user_cancel(job, false, g));
        if let Ok(ev) = cancelled {
            super::job::emit(events, ev);
        }
    }
    // An export added by the drive's name goes with the drive.
    let gone = vm.nbd.ejected(&mut vm.block);
    super::block_export::emit_deleted(events, gone);
    let mut data = serde_json::Map::new();
    if let Some(id) = &u.id {
        data.insert("device".into(), Value::from(id.as_str()));
    }
    data.insert("path".into(), Value::from(u.qom_path));
    events.emit(Event::new("DEVICE_DELETED", Some(Value::Object(data))));
}
