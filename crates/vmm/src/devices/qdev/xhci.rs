//! `qemu-xhci`: QEMU's xHCI USB host controller (hw/usb/hcd-xhci-pci.c),
//! a PCI function whose own properties are the xHCI core's, aliased
//! (hw/usb/hcd-xhci.c `xhci_properties`): `p2`, `p3` (root hub ports per
//! protocol, default 4) and `streams`. qemu-xhci has no `intrs`, `slots`,
//! `msi` or `msix` properties (those are nec-usb-xhci's): it always has 16
//! interrupters, 64 slots, MSI-X and no MSI. No USB device can be attached:
//! `-device usb-*` stays an unknown driver.

use devices::usb::xhci::XhciConfig;
use serde_json::{Map, Value};

use super::{p, props_on, Def, Kind, PciFunctionRequest, Prop, PCI_DEVICE, V};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XhciRequest {
    pub pci: PciFunctionRequest,
    pub config: XhciConfig,
}

/// QEMU's order in `-device qemu-xhci,help` is alphabetical; the table
/// follows the core's declaration.
pub(super) const PROPS: &[Prop] = &[
    p("streams", Kind::Bool).def(Def::Bool(true)),
    p("p2", Kind::U32).def(Def::Int(4)),
    p("p3", Kind::U32).def(Def::Int(4)),
];

pub(super) fn parse(dev: &Map<String, Value>) -> Result<XhciRequest, String> {
    let parsed = props_on(PCI_DEVICE, "qemu-xhci", "qemu-xhci", PROPS, dev)?;
    let (pci, rest) = PciFunctionRequest::take(parsed)?;
    let mut config = XhciConfig::default();
    for (name, v) in rest {
        match (name, v) {
            ("streams", V::Bool(b)) => config.streams = b,
            ("p2", V::Num(n)) => config.p2 = u32::try_from(n).unwrap_or(u32::MAX),
            ("p3", V::Num(n)) => config.p3 = u32::try_from(n).unwrap_or(u32::MAX),
            _ => {}
        }
    }
    Ok(XhciRequest { pci, config })
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
    fn libvirts_controller_line_parses_on_pcie_0() {
        let Ok(DeviceRequest::Xhci(r)) = parse_json(
            json!({"driver": "qemu-xhci", "id": "usb", "bus": "pcie.0", "addr": "0x5",
                              "p2": "8", "p3": 2, "streams": "off"}),
        ) else {
            panic!("not a qemu-xhci")
        };
        assert_eq!(
            (r.pci.id.as_deref(), r.pci.pci.addr),
            (Some("usb"), Some((5, 0)))
        );
        assert_eq!((r.config.p2, r.config.p3, r.config.streams), (8, 2, false));
        assert_eq!(r.config.slots, 64);
        assert_eq!(r.config.intrs, 16);
    }

    /// QEMU 7.2's messages for the same `-device qemu-xhci,...` on q35.
    #[test]
    fn errors_are_qemus() {
        let cases = [
            (
                json!({"driver": "qemu-xhci", "intrs": "4"}),
                "Property 'qemu-xhci.intrs' not found",
            ),
            (
                json!({"driver": "qemu-xhci", "msix": "off"}),
                "Property 'qemu-xhci.msix' not found",
            ),
            (
                json!({"driver": "qemu-xhci", "streams": "maybe"}),
                "Parameter 'streams' expects 'on' or 'off'",
            ),
            (
                json!({"driver": "qemu-xhci", "p2": "x"}),
                "Parameter 'p2' expects integer",
            ),
            (
                json!({"driver": "usb-kbd"}),
                "'usb-kbd' is not a valid device model name",
            ),
        ];
        for (arg, want) in cases {
            assert_eq!(parse_json(arg.clone()).unwrap_err(), want, "{arg}");
        }
    }
}
