//! `pcie-root-port` (hw/pci-bridge/gen_pcie_root_port.c) and
//! `pcie-pci-bridge` (hw/pci-bridge/pcie_pci_bridge.c): bridges whose
//! secondary bus later `-device`s name with `bus=` (the bridge's `id`).

use devices::pci::RootPortOptions;
use serde_json::{Map, Value};

use super::{p, props_on, Def, Kind, PciFunctionRequest, Prop, PCI_DEVICE, V};

/// QEMU's -1 for the `*-reserve` properties: not set.
const UNSET: Def = Def::UInt(u64::MAX);

pub(super) const PROPS_ROOT_PORT: &[Prop] = &[
    p("port", Kind::U8).def(Def::Int(0)),
    p("chassis", Kind::U8).def(Def::Int(0)),
    p("slot", Kind::U16).def(Def::Int(0)),
    p("bus-reserve", Kind::U32).def(Def::UInt(u32::MAX as u64)),
    p("io-reserve", Kind::Size).def(UNSET),
    p("mem-reserve", Kind::Size).def(UNSET),
    p("pref32-reserve", Kind::Size).def(UNSET),
    p("pref64-reserve", Kind::Size).def(UNSET),
];

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PcieRootPortRequest {
    pub pci: PciFunctionRequest,
    pub options: RootPortOptions,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PciePciBridgeRequest {
    pub pci: PciFunctionRequest,
}

pub(super) fn parse_root_port(dev: &Map<String, Value>) -> Result<PcieRootPortRequest, String> {
    let parsed = props_on(
        PCI_DEVICE,
        "pcie-root-port",
        "pcie-root-port",
        PROPS_ROOT_PORT,
        dev,
    )?;
    let (pci, rest) = PciFunctionRequest::take(parsed)?;
    let mut o = RootPortOptions::default();
    for (name, v) in rest {
        let V::Num(n) = v else { continue };
        // QEMU's -1 (all ones) is "not set".
        let set = |max: u64| (n != max).then_some(n);
        match name {
            "port" => o.port = n as u8,
            "chassis" => o.chassis = n as u8,
            "slot" => o.slot = n as u16,
            "bus-reserve" => o.bus_reserve = set(u64::from(u32::MAX)).map(|n| n as u32),
            "io-reserve" => o.io_reserve = set(u64::MAX),
            "mem-reserve" => o.mem_reserve = set(u64::MAX),
            "pref32-reserve" => o.pref32_reserve = set(u64::MAX),
            "pref64-reserve" => o.pref64_reserve = set(u64::MAX),
            _ => {}
        }
    }
    Ok(PcieRootPortRequest { pci, options: o })
}

pub(super) fn parse_pci_bridge(dev: &Map<String, Value>) -> Result<PciePciBridgeRequest, String> {
    let parsed = props_on(PCI_DEVICE, "pcie-pci-bridge", "pcie-pci-bridge", &[], dev)?;
    let (pci, _) = PciFunctionRequest::take(parsed)?;
    Ok(PciePciBridgeRequest { pci })
}

#[cfg(test)]
mod tests {
    use super::super::{parse as parse_device, DeviceRequest};
    use super::*;
    use serde_json::json;

    fn parse_json(v: Value) -> Result<DeviceRequest, String> {
        parse_device(v.as_object().unwrap(), 1)
    }

    /// libvirt's own `-device` objects for its q35 root ports.
    #[test]
    fn libvirts_root_ports_parse() {
        let Ok(DeviceRequest::PcieRootPort(r)) = parse_json(json!({
            "driver": "pcie-root-port", "port": 8, "chassis": 1, "id": "pci.1",
            "bus": "pcie.0", "multifunction": true, "addr": "0x1"}))
        else {
            panic!("not a root port")
        };
        assert_eq!(r.pci.id.as_deref(), Some("pci.1"));
        assert_eq!(r.pci.pci.addr, Some((1, 0)));
        assert!(r.pci.pci.multifunction);
        assert_eq!((r.options.port, r.options.chassis), (8, 1));
        assert_eq!(r.options.bus_reserve, None);
        let Ok(DeviceRequest::PcieRootPort(r)) = parse_json(json!({
            "driver": "pcie-root-port", "bus-reserve": "4", "mem-reserve": "8M",
            "io-reserve": "0"}))
        else {
            panic!("not a root port")
        };
        assert_eq!(r.options.bus_reserve, Some(4));
        assert_eq!(r.options.mem_reserve, Some(8 << 20));
        assert_eq!(r.options.io_reserve, Some(0));
        let Ok(DeviceRequest::PciePciBridge(b)) = parse_json(
            json!({"driver": "pcie-pci-bridge", "id": "pci.5", "bus": "pci.1", "addr": "0x0"}),
        ) else {
            panic!("not a pcie-pci-bridge")
        };
        assert_eq!(b.pci.pci.bus.as_deref(), Some("pci.1"));
    }

    /// QEMU 7.2's messages for the same arguments.
    #[test]
    fn errors_are_qemus() {
        let cases = [
            (
                json!({"driver": "pcie-root-port", "port": "300"}),
                "Parameter 'port' expects uint8_t",
            ),
            (
                json!({"driver": "pcie-root-port", "foo": "1"}),
                "Property 'pcie-root-port.foo' not found",
            ),
            (
                json!({"driver": "pcie-pci-bridge", "chassis": "1"}),
                "Property 'pcie-pci-bridge.chassis' not found",
            ),
        ];
        for (arg, want) in cases {
            assert_eq!(parse_json(arg.clone()).unwrap_err(), want, "{arg}");
        }
    }
}
