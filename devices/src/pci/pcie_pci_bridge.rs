//! `pcie-pci-bridge` (QEMU hw/pci-bridge/pcie_pci_bridge.c): Red Hat
//! 1b36:000e, a PCIe-to-PCI bridge for legacy PCI devices. Its capabilities
//! are QEMU's: SHPC (0x40), PCIe as a PCI Express-to-PCI bridge (0x48),
//! power management (0x84) and a 64-bit MSI with per-vector masking (0x8c),
//! plus the AER extended capability; BAR 0 is the 256-byte 64-bit SHPC
//! register window. Hot-plug is not modelled: the SHPC registers read zero
//! and the MSI never fires.

use super::bar::{BarKind, PciBar};
use super::bridge::{
    pcie_capability_body, pcie_capability_masks, type1_config, PCIE_TYPE_PCI_BRIDGE,
};
use super::capability::{CAP_ID_MSI, CAP_ID_PCIE, CAP_ID_PM};
use super::{PciConfigSpace, PciDevice, PciError, PCIE_CONFIG_REGS, PCI_CONFIG_REGS};

pub const PCIE_PCI_BRIDGE_VENDOR: u16 = 0x1b36;
pub const PCIE_PCI_BRIDGE_DEVICE: u16 = 0x000e;
/// Capability ID 0x0c: standard hot-plug controller.
const CAP_ID_SHPC: u8 = 0x0c;
/// hw/pci/shpc.c `shpc_bar_size` for one slot... QEMU's is 256 bytes.
const SHPC_BAR_SIZE: u64 = 0x100;
/// MSI message control: 64-bit address, per-vector masking (PCI 3.0 §6.8.1.3).
const MSI_CTL_64_MASKABLE: u16 = 0x0180;

pub struct PciePciBridge {
    config: PciConfigSpace,
}

impl PciePciBridge {
    pub fn new() -> Result<Self, PciError> {
        let mut config = type1_config(PCIE_PCI_BRIDGE_VENDOR, PCIE_PCI_BRIDGE_DEVICE, 0);
        config.set_interrupt_pin(1);
        // SHPC: dword select, pending, data.
        config.add_capability(CAP_ID_SHPC, &[0; 6])?;
        let body = pcie_capability_body(PCIE_TYPE_PCI_BRIDGE, 0, None);
        let pcie = config.add_capability(CAP_ID_PCIE, &body)?;
        pcie_capability_masks(&mut config, usize::from(pcie), false, false);
        // PM: PMC version 3; PMCSR.
        config.add_capability(CAP_ID_PM, &[0x03, 0x00, 0, 0, 0, 0])?;
        let mut msi = [0u8; 22];
        msi[..2].copy_from_slice(&MSI_CTL_64_MASKABLE.to_le_bytes());
        let m = usize::from(config.add_capability(CAP_ID_MSI, &msi)?);
        // Enable and multiple-message enable (one vector: stays 0), the
        // address, data and the mask bit of the one vector.
        config.set_writable(m + 2, &[0x01, 0x00]);
        config.set_writable(m + 4, &[0xfc, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        config.set_writable(m + 12, &[0xff, 0xff]);
        config.set_writable(m + 16, &[0x01, 0, 0, 0]);
        config.add_bar(
            0,
            BarKind::Memory64 {
                prefetchable: false,
            },
            SHPC_BAR_SIZE,
        )?;
        Ok(Self { config })
    }
}

impl PciDevice for PciePciBridge {
    fn read_config(&mut self, reg_idx: usize) -> u32 {
        match reg_idx {
            r if r < PCI_CONFIG_REGS => self.config.read(r),
            // AER v2 at 0x100, the last extended capability.
            r if r == PCI_CONFIG_REGS => 0x0002_0001,
            0x10c => 0x0046_2030,
            0x114 => 0x0000_e000,
            0x118 => 0x0000_00a0,
            r if r < PCIE_CONFIG_REGS => 0,
            _ => u32::MAX,
        }
    }
    fn write_config(&mut self, reg_idx: usize, offset: u64, data: &[u8]) {
        self.config.write(reg_idx, offset, data);
    }
    fn reset(&mut self) {
        self.config.reset();
    }
    fn bars(&self) -> Vec<PciBar> {
        self.config.bars()
    }
    fn bar_read(&mut self, _bar: u8, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::capability::walk;

    /// QEMU 7.2's `-device pcie-pci-bridge` through ECAM, firmware aside.
    #[test]
    fn header_and_capabilities_are_qemus() {
        let mut b = PciePciBridge::new().unwrap();
        assert_eq!(b.read_config(0), 0x000e_1b36);
        assert_eq!(b.read_config(1) >> 16, 0x00b0);
        assert_eq!(b.read_config(3), 0x0001_0000);
        assert_eq!(b.read_config(4), 0x4, "64-bit memory BAR");
        assert_eq!(
            b.read_config(7),
            0x00a0_0000,
            "zeroed windows, fast back-to-back"
        );
        assert_eq!(b.read_config(13), 0x8c);
        let caps: Vec<(u8, u8)> = walk(|o| b.read_config(o / 4).to_le_bytes()[o % 4])
            .iter()
            .map(|c| (c.offset, c.id))
            .collect();
        assert_eq!(
            caps,
            vec![(0x8c, 0x05), (0x84, 0x01), (0x48, 0x10), (0x40, 0x0c)]
        );
        assert_eq!(b.read_config(0x48 / 4), 0x0072_4010);
        assert_eq!(b.read_config(0x54 / 4), 0x0000_0411);
        assert_eq!(b.read_config(0x84 / 4), 0x0003_4801);
        assert_eq!(b.read_config(0x8c / 4), 0x0180_8405);
        assert_eq!(b.read_config(0x100 / 4), 0x0002_0001);
        assert_eq!(b.bars()[0].size, 0x100);
        // MSI enable is writable, the capability bits are not.
        b.write_config(0x8c / 4, 2, &[0xff, 0xff]);
        assert_eq!(b.read_config(0x8c / 4) >> 16, 0x0181);
    }
}
