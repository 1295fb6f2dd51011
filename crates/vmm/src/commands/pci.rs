//! `pci.json`: `query-pci`, in QEMU's shape (hw/pci/pci.c `qmp_query_pci`):
//! bus 0 and every function on it, the functions behind a bridge nested in
//! its `pci_bridge`.

use devices::pci::info::PciBridgeInfo;
use devices::pci::PciDeviceInfo;
use qmp::{Args, EventSink, QmpError};
use serde_json::{json, Value};

use crate::sync::lock;
use crate::vm::Vm;

pub(super) fn execute(
    vm: &mut Vm,
    cmd: &str,
    _args: &Args,
    _events: &mut dyn EventSink,
) -> Result<Value, QmpError> {
    match cmd {
        "query-pci" => Ok(query_pci(vm)),
        _ => Err(super::not_found(cmd)),
    }
}

fn query_pci(vm: &Vm) -> Value {
    let Some(m) = &vm.machine else {
        // `-machine none` has no PCI bus.
        return json!([]);
    };
    let infos = lock(&m.devices.pci.root).query_pci();
    json!([{"bus": 0, "devices": infos.iter().map(device).collect::<Vec<_>>()}])
}

fn device(d: &PciDeviceInfo) -> Value {
    let mut class = json!({"class": d.class_info.class});
    if let Some(desc) = d.class_info.desc {
        class["desc"] = json!(desc);
    }
    let mut id = json!({"vendor": d.id.vendor, "device": d.id.device});
    if let Some(v) = d.id.subsystem_vendor {
        id["subsystem-vendor"] = json!(v);
    }
    if let Some(s) = d.id.subsystem {
        id["subsystem"] = json!(s);
    }
    let regions: Vec<Value> = d
        .regions
        .iter()
        .map(|r| {
            // An unmapped BAR is PCI_BAR_UNMAPPED, (pcibus_t)-1.
            let address = r.address.map_or(-1, |a| a as i64);
            let mut v =
                json!({"bar": r.bar, "type": r.type_name(), "address": address, "size": r.size});
            if let Some(p) = r.prefetch() {
                v["prefetch"] = json!(p);
            }
            if let Some(m) = r.mem_type_64() {
                v["mem_type_64"] = json!(m);
            }
            v
        })
        .collect();
    let mut v = json!({
        "bus": d.address.bus, "slot": d.address.slot, "function": d.address.function,
        "class_info": class, "id": id, "irq_pin": d.irq_pin, "qdev_id": d.qdev_id,
        "regions": regions,
    });
    if let Some(irq) = d.irq {
        v["irq"] = json!(irq);
    }
    if let Some(b) = &d.bridge {
        v["pci_bridge"] = bridge(b);
    }
    v
}

/// `PciBridgeInfo`: the bus numbers, the windows as [base, limit], and the
/// functions behind it once its secondary bus has a number.
fn bridge(b: &PciBridgeInfo) -> Value {
    let s = &b.state;
    let range = |r: &devices::pci::BridgeRange| json!({"base": r.base, "limit": r.limit});
    let mut v = json!({"bus": {
        "number": s.primary, "secondary": s.secondary, "subordinate": s.subordinate,
        "io_range": range(&s.io), "memory_range": range(&s.memory),
        "prefetchable_range": range(&s.prefetchable),
    }});
    if let Some(devs) = &b.devices {
        v["devices"] = json!(devs.iter().map(device).collect::<Vec<_>>());
    }
    v
}
