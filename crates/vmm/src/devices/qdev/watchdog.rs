//! `i6300esb`: QEMU's Intel 6300ESB watchdog (hw/watchdog/wdt_i6300esb.c),
//! a plain PCI function with no properties of its own.

use serde_json::{Map, Value};

use super::{props_on, PciFunctionRequest, PCI_DEVICE};

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct I6300EsbRequest {
    pub pci: PciFunctionRequest,
}

pub(super) fn parse(dev: &Map<String, Value>) -> Result<I6300EsbRequest, String> {
    let parsed = props_on(PCI_DEVICE, "i6300esb", "i6300esb", &[], dev)?;
    let (pci, _) = PciFunctionRequest::take(parsed)?;
    Ok(I6300EsbRequest { pci })
}

#[cfg(test)]
mod tests {
    use super::super::{parse as parse_device, DeviceRequest, PciPlacement};
    use super::*;
    use serde_json::json;

    fn parse_json(v: Value) -> Result<DeviceRequest, String> {
        parse_device(v.as_object().unwrap(), 1)
    }

    #[test]
    fn placement_and_id_reach_the_request() {
        assert_eq!(
            parse_json(json!({"driver": "i6300esb", "id": "wd0", "addr": "0x6",
                              "bus": "pcie.0"})),
            Ok(DeviceRequest::I6300Esb(I6300EsbRequest {
                pci: PciFunctionRequest {
                    id: Some("wd0".into()),
                    pci: PciPlacement {
                        bus: None,
                        addr: Some((6, 0)),
                        multifunction: false
                    }
                }
            }))
        );
    }

    /// QEMU 7.2's messages for `-device i6300esb,...` on q35.
    #[test]
    fn errors_are_qemus() {
        let cases = [
            (
                json!({"driver": "i6300esb", "events": "1"}),
                "Property 'i6300esb.events' not found",
            ),
            (
                json!({"driver": "i6300esb", "addr": "0x20"}),
                "Property 'i6300esb.addr' doesn't take value '0x20'",
            ),
        ];
        for (arg, want) in cases {
            assert_eq!(parse_json(arg.clone()).unwrap_err(), want, "{arg}");
        }
    }
}
