//! `pvpanic`: QEMU's ISA pvpanic (hw/misc/pvpanic-isa.c), one I/O port the
//! guest writes when it panics. Its parent is `isa-device`, so it has none
//! of the virtio-pci proxy's properties. `pvpanic-pci`
//! (hw/misc/pvpanic-pci.c) is the same register in a PCI BAR.

use devices::pvpanic::{PVPANIC_EVENTS_DEFAULT, PVPANIC_ISA_PORT};
use serde_json::{Map, Value};

use super::{
    p, props_on, Def, Kind, PciFunctionRequest, Prop, ISA_DEVICE, PCI_DEVICE, ROOT_BUS, V,
};

/// QEMU's name of the q35 machine's ISA bus (behind the LPC bridge).
pub const ISA_BUS: &str = "isa.0";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PvPanicIsaRequest {
    pub id: Option<String>,
    /// `ioport=` (default 0x505).
    pub ioport: u16,
    /// `events=`: what a read of the port returns (default 3).
    pub events: u8,
}

pub(super) const PROPS: &[Prop] = &[
    p("ioport", Kind::U16).def(Def::Int(PVPANIC_ISA_PORT as i64)),
    p("events", Kind::U8).def(Def::Int(PVPANIC_EVENTS_DEFAULT as i64)),
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PvPanicPciRequest {
    pub pci: PciFunctionRequest,
    /// `events=`: what a read of the register returns (default 3).
    pub events: u8,
}

pub(super) const PROPS_PCI: &[Prop] =
    &[p("events", Kind::U8).def(Def::Int(PVPANIC_EVENTS_DEFAULT as i64))];

pub(super) fn parse_pci(dev: &Map<String, Value>) -> Result<PvPanicPciRequest, String> {
    let parsed = props_on(PCI_DEVICE, "pvpanic-pci", "pvpanic-pci", PROPS_PCI, dev)?;
    let (pci, rest) = PciFunctionRequest::take(parsed)?;
    let mut r = PvPanicPciRequest {
        pci,
        events: PVPANIC_EVENTS_DEFAULT,
    };
    for (name, v) in rest {
        if let ("events", V::Num(n)) = (name, v) {
            r.events = u8::try_from(n).unwrap_or(u8::MAX);
        }
    }
    Ok(r)
}

pub(super) fn parse(dev: &Map<String, Value>) -> Result<PvPanicIsaRequest, String> {
    let mut r = PvPanicIsaRequest {
        id: None,
        ioport: PVPANIC_ISA_PORT,
        events: PVPANIC_EVENTS_DEFAULT,
    };
    for (name, v) in props_on(ISA_DEVICE, "pvpanic", "pvpanic", PROPS, dev)? {
        match (name, v) {
            ("id", V::Str(s)) => r.id = Some(s),
            ("bus", V::Str(bus)) if bus == ROOT_BUS => {
                return Err("Device 'pvpanic' can't go on PCIE bus".into())
            }
            ("bus", V::Str(bus)) if bus != ISA_BUS => return Err(format!("Bus '{bus}' not found")),
            ("ioport", V::Num(n)) => r.ioport = u16::try_from(n).unwrap_or(u16::MAX),
            ("events", V::Num(n)) => r.events = u8::try_from(n).unwrap_or(u8::MAX),
            _ => {}
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::super::{parse as parse_device, DeviceRequest};
    use super::*;
    use serde_json::json;

    fn parse_json(v: Value) -> Result<DeviceRequest, String> {
        parse_device(v.as_object().unwrap(), 1)
    }

    #[test]
    fn defaults_are_qemus_and_properties_reach_the_request() {
        assert_eq!(
            parse_json(json!({"driver": "pvpanic"})),
            Ok(DeviceRequest::PvPanicIsa(PvPanicIsaRequest {
                id: None,
                ioport: 0x505,
                events: 3
            }))
        );
        assert_eq!(
            parse_json(json!({"driver": "pvpanic", "id": "p0", "ioport": "0x600",
                              "events": "1", "bus": "isa.0"})),
            Ok(DeviceRequest::PvPanicIsa(PvPanicIsaRequest {
                id: Some("p0".into()),
                ioport: 0x600,
                events: 1
            }))
        );
    }

    #[test]
    fn pvpanic_pci_takes_events_and_placement() {
        let Ok(DeviceRequest::PvPanicPci(r)) =
            parse_json(json!({"driver": "pvpanic-pci", "id": "pp", "events": "2", "addr": "7"}))
        else {
            panic!("not a pvpanic-pci")
        };
        assert_eq!(
            (r.pci.id.as_deref(), r.pci.pci.addr, r.events),
            (Some("pp"), Some((7, 0)), 2)
        );
        assert_eq!(
            parse_json(json!({"driver": "pvpanic-pci", "ioport": "0x505"})).unwrap_err(),
            "Property 'pvpanic-pci.ioport' not found"
        );
        assert_eq!(
            parse_json(json!({"driver": "pvpanic-pci", "events": "256"})).unwrap_err(),
            "Parameter 'events' expects uint8_t"
        );
    }

    /// QEMU 7.2's messages for `-device pvpanic,...` on q35.
    #[test]
    fn errors_are_qemus() {
        let cases = [
            (
                json!({"driver": "pvpanic", "events": "256"}),
                "Parameter 'events' expects uint8_t",
            ),
            (
                json!({"driver": "pvpanic", "ioport": "x"}),
                "Parameter 'ioport' expects integer",
            ),
            (
                json!({"driver": "pvpanic", "addr": "5"}),
                "Property 'pvpanic.addr' not found",
            ),
            (
                json!({"driver": "pvpanic", "bus": "pcie.0"}),
                "Device 'pvpanic' can't go on PCIE bus",
            ),
            (
                json!({"driver": "pvpanic", "bus": "foo"}),
                "Bus 'foo' not found",
            ),
            (
                json!({"driver": "pvpanic", "ioport": "65536"}),
                "Parameter 'ioport' expects uint16_t",
            ),
        ];
        for (arg, want) in cases {
            assert_eq!(parse_json(arg.clone()).unwrap_err(), want, "{arg}");
        }
    }
}
