//! `net.json`: netdevs (`netdev_add`, `netdev_del`), NIC links
//! (`set_link`), receive filters (`query-rx-filter`) and self-announcement
//! (`announce-self`), as QEMU 7.2's net/net.c and net/announce.c answer.

use std::sync::Arc;

use qmp::{Args, EventSink, QmpError};
use serde_json::{json, Value};

use crate::devices::nic::Nic;
use crate::network::Removed;
use crate::vm::Vm;

pub(super) fn execute(
    vm: &mut Vm,
    cmd: &str,
    args: &Args,
    _events: &mut dyn EventSink,
) -> Result<Value, QmpError> {
    match cmd {
        "netdev_add" => {
            // A non-numeric fd= names a descriptor passed with `getfd`, which
            // ferrovm's monitors do not take yet (docs/known-gaps.md).
            let mut named =
                |name: &str| Err(format!("File descriptor named '{name}' has not been found"));
            vm.netdevs
                .add(args.as_map(), Some(&mut named))
                .map_err(QmpError::generic)?;
            Ok(json!({}))
        }
        "netdev_del" => netdev_del(vm, args.str("id")?),
        "set_link" => set_link(vm, args.str("name")?, args.bool("up")?),
        "query-rx-filter" => query_rx_filter(vm, args.opt_str("name")),
        "announce-self" => {
            crate::announce::start(vm, args.as_map());
            Ok(json!({}))
        }
        _ => Err(super::not_found(cmd)),
    }
}

pub(crate) fn nics_of(vm: &Vm) -> Vec<Arc<Nic>> {
    vm.machine
        .as_ref()
        .map(|m| m.devices.nics())
        .unwrap_or_default()
}

fn not_found(name: &str) -> QmpError {
    QmpError::device_not_found(format!("Device '{name}' not found"))
}

/// QEMU `qmp_netdev_del`: only netdevs are found (`qemu_find_netdev`
/// skips NICs); a netdev with a NIC leaves that NIC with its link down
/// and nothing behind it.
fn netdev_del(vm: &mut Vm, id: &str) -> Result<Value, QmpError> {
    match vm.netdevs.remove(id) {
        Some(Removed::Closed) => Ok(json!({})),
        Some(Removed::FromNic(nic)) => {
            if let Some(n) = nics_of(vm).into_iter().find(|n| n.name == nic) {
                n.lose_backend();
            }
            Ok(json!({}))
        }
        None => Err(not_found(id)),
    }
}

/// QEMU `qmp_set_link`: a NIC's name, or its netdev's id, changes the NIC's
/// link. A netdev without a NIC has no link a guest could see, but the name
/// is known.
fn set_link(vm: &Vm, name: &str, up: bool) -> Result<Value, QmpError> {
    let matching: Vec<Arc<Nic>> = nics_of(vm)
        .into_iter()
        .filter(|n| n.answers_to(name))
        .collect();
    if matching.is_empty() && vm.netdevs.get(name).is_none() {
        return Err(not_found(name));
    }
    for n in matching {
        n.set_link(up);
    }
    Ok(json!({}))
}

/// QEMU `qmp_query_rx_filter`.
fn query_rx_filter(vm: &Vm, name: Option<&str>) -> Result<Value, QmpError> {
    let nics = nics_of(vm);
    match name {
        None => Ok(Value::Array(nics.iter().map(|n| n.rx_filter()).collect())),
        Some(name) => {
            if let Some(n) = nics.iter().find(|n| n.name == name) {
                return Ok(json!([n.rx_filter()]));
            }
            if vm.netdevs.get(name).is_some() {
                return Err(QmpError::generic(format!("net client({name}) isn't a NIC")));
            }
            Err(QmpError::generic(format!(
                "invalid net client name: {name}"
            )))
        }
    }
}
