//! `-device pcie-root-port` and `-device pcie-pci-bridge`: the bridge
//! functions and the buses behind them, which later `-device`s name with
//! `bus=` (QEMU names a bridge's bus after its id).

use std::sync::{Arc, Mutex};

use devices::pci::{PciAddress, PciePciBridge, PcieRootPort, SecondaryBus};

use super::qdev::{self, DeviceRequest, PciePciBridgeRequest, PcieRootPortRequest};
use super::DeviceManager;

/// The buses `-device` has made so far, in command-line order, and the
/// chassis/slot pairs of the root ports (QEMU `pcie_chassis_add_slot`).
#[derive(Default)]
pub struct BusNames {
    buses: Vec<String>,
    slots: Vec<(u8, u16)>,
}

impl BusNames {
    /// Refuses `request` when its `bus=` names no bus made before it or it
    /// is a root port whose chassis and slot are taken (QEMU 7.2's words);
    /// then records the bus a bridge makes.
    pub fn check(&mut self, request: &DeviceRequest) -> Result<(), String> {
        qdev::check_bus(request, &self.buses)?;
        if let DeviceRequest::PcieRootPort(r) = request {
            let key = (r.options.chassis, r.options.slot);
            if self.slots.contains(&key) {
                // -EBUSY, printed as QEMU's rp_realize does.
                return Err("Can't add chassis slot, error -16".into());
            }
            self.slots.push(key);
        }
        if let (DeviceRequest::PcieRootPort(_) | DeviceRequest::PciePciBridge(_), Some(id)) =
            (request, request.id())
        {
            self.buses.push(id.to_string());
        }
        Ok(())
    }
}

impl DeviceManager {
    pub(super) fn add_root_port(
        &self,
        request: PcieRootPortRequest,
        qom_path: String,
    ) -> Result<PciAddress, String> {
        let dev = PcieRootPort::new(request.options).map_err(|e| e.to_string())?;
        self.add_pci_function(
            Arc::new(Mutex::new(dev)),
            "pcie-root-port",
            request.pci,
            qom_path,
            Some(SecondaryBus::PcieLink),
        )
    }

    pub(super) fn add_pcie_pci_bridge(
        &self,
        request: PciePciBridgeRequest,
        qom_path: String,
    ) -> Result<PciAddress, String> {
        let dev = PciePciBridge::new().map_err(|e| e.to_string())?;
        self.add_pci_function(
            Arc::new(Mutex::new(dev)),
            "pcie-pci-bridge",
            request.pci,
            qom_path,
            Some(SecondaryBus::Conventional),
        )
    }
}
