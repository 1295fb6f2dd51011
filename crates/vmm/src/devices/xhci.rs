//! `-device qemu-xhci` on the machine: the controller model over guest
//! RAM, its MSI-X vectors (one per interrupter) and its INTA# line wired
//! to KVM the way [`DeviceManager::add_virtio_pci`] wires virtio's, and
//! MFINDEX on the guest's virtual clock (QEMU: QEMU_CLOCK_VIRTUAL).

use std::sync::{Arc, Mutex};

use devices::pci::PciAddress;
use devices::usb::xhci::XhciPci;
use vm_memory::GuestMemoryMmap;

use super::qdev::XhciRequest;
use super::{intx, DeviceManager};

impl DeviceManager {
    /// Builds a qemu-xhci on bus 0.
    pub(super) fn add_xhci(
        &self,
        mem: &GuestMemoryMmap,
        request: XhciRequest,
        qom_path: String,
    ) -> Result<PciAddress, String> {
        let backend = self.backend.handle();
        let msi = self
            .wiring
            .msi_group(request.config.intrs as u16)
            .map_err(|e| e.to_string())?;
        let line = intx::LevelLine::new().map_err(|e| e.to_string())?;
        let dev = XhciPci::new(
            request.config,
            mem.clone(),
            Box::new(backend.guest_clock()),
            msi,
            Some(line.clone()),
        )
        .map_err(|e| e.to_string())?;
        let addr = self.add_pci_function(
            Arc::new(Mutex::new(dev)),
            "qemu-xhci",
            request.pci,
            qom_path,
            None,
        )?;
        // hcd-xhci-pci.c: interrupt pin 1 (INTA#).
        if let Some(gsi) = self.pci.intx_gsi(addr, 1) {
            line.wire(gsi, &self.wiring, backend)
                .map_err(|e| e.to_string())?;
        }
        Ok(addr)
    }
}
