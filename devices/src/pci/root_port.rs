//! `pcie-root-port` (QEMU hw/pci-bridge/gen_pcie_root_port.c over
//! pcie_root_port.c): Red Hat 1b36:000c, a type 1 header whose capabilities
//! are QEMU's: subsystem vendor ID (0x40), MSI-X with one vector in an
//! exclusive 4 KiB BAR 0 (0x48), PCIe as a root port with a slot (0x54), the
//! QEMU resource-reserve capability when a `*-reserve` is given, and the AER
//! and ACS extended capabilities (read-only). The port signals nothing:
//! hot-plug, PME and AER events are not modelled, so its vector never fires.

use std::sync::Arc;

use super::bar::{BarKind, PciBar};
use super::bridge::{
    disable_base_limit, pcie_capability_body, pcie_capability_masks, type1_config,
    PCIE_TYPE_ROOT_PORT,
};
use super::capability::CAP_ID_VENDOR;
use super::msix::{exclusive_bar_layout, Msix};
use super::{PciConfigSpace, PciDevice, PciError, PCIE_CONFIG_REGS, PCI_CONFIG_REGS};
use crate::interrupt::{MsiMessage, MsiVectors};

pub const ROOT_PORT_VENDOR: u16 = 0x1b36;
pub const ROOT_PORT_DEVICE: u16 = 0x000c;
/// Capability ID 0x0d: bridge subsystem vendor ID.
const CAP_ID_SSVID: u8 = 0x0d;
/// QEMU's vendor capability type for the resource reservation
/// (include/hw/pci/pci_bridge.h `REDHAT_PCI_CAP_RESOURCE_RESERVE`).
const REDHAT_RESOURCE_RESERVE: u8 = 1;

/// `-device pcie-root-port`'s properties; `None` is QEMU's -1 (not set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RootPortOptions {
    /// `port=`: the port number in the link capabilities.
    pub port: u8,
    /// `chassis=`.
    pub chassis: u8,
    /// `slot=`: the physical slot number.
    pub slot: u16,
    pub bus_reserve: Option<u32>,
    pub io_reserve: Option<u64>,
    pub mem_reserve: Option<u64>,
    pub pref32_reserve: Option<u64>,
    pub pref64_reserve: Option<u64>,
}

impl RootPortOptions {
    fn any_reserve(&self) -> bool {
        self.bus_reserve.is_some()
            || self.io_reserve.is_some()
            || self.mem_reserve.is_some()
            || self.pref32_reserve.is_some()
            || self.pref64_reserve.is_some()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RootPortError {
    /// hw/pci/pci_bridge.c `pci_bridge_qemu_reserve_cap_init`.
    #[error("PCI resource reserve cap: PREF32 and PREF64 conflict")]
    PrefConflict,
    #[error("PCI resource reserve cap: mem-reserve must be less than 4G")]
    MemTooBig,
    #[error("PCI resource reserve cap: pref32-reserve  must be less than 4G")]
    Pref32TooBig,
    #[error(transparent)]
    Pci(#[from] PciError),
}

struct NoVectors;
impl MsiVectors for NoVectors {
    fn set_route(&self, _: u16, _: Option<MsiMessage>) {}
    fn trigger(&self, _: u16) {}
}

pub struct PcieRootPort {
    config: PciConfigSpace,
    msix: Msix,
    /// Extended configuration space 0x100-0xfff (read-only).
    ext: Vec<u32>,
    pba_offset: u64,
}

const AER_OFFSET: usize = 0x100;
/// PCI_ERR_SIZEOF: the ACS capability follows AER.
const ACS_OFFSET: usize = 0x148;

impl PcieRootPort {
    pub fn new(o: RootPortOptions) -> Result<Self, RootPortError> {
        if o.pref32_reserve.is_some() && o.pref64_reserve.is_some() {
            return Err(RootPortError::PrefConflict);
        }
        if o.mem_reserve.is_some_and(|m| m >= 1 << 32) {
            return Err(RootPortError::MemTooBig);
        }
        if o.pref32_reserve.is_some_and(|m| m >= 1 << 32) {
            return Err(RootPortError::Pref32TooBig);
        }
        let mut config = type1_config(ROOT_PORT_VENDOR, ROOT_PORT_DEVICE, 0);
        // pcie_port_init_reg: no 66 MHz / fast back-to-back on the secondary side.
        config.set_bytes(super::bridge::PCI_SEC_STATUS, &[0, 0]);
        config.set_bytes(super::config::PCI_STATUS, &[0, 0]);
        config.set_interrupt_pin(1);
        disable_base_limit(&mut config);
        let mut ssvid = [0u8; 6];
        ssvid[2..4].copy_from_slice(&ROOT_PORT_VENDOR.to_le_bytes());
        config.add_capability(CAP_ID_SSVID, &ssvid)?;
        let (bar_size, table, pba) = exclusive_bar_layout(1);
        config.add_bar(
            0,
            BarKind::Memory32 {
                prefetchable: false,
            },
            bar_size,
        )?;
        let mut msix = Msix::new(1, Arc::new(NoVectors));
        msix.add_capability(&mut config, 0, table as u32, 0, pba as u32)?;
        let body = pcie_capability_body(PCIE_TYPE_ROOT_PORT, o.port, Some(o.slot));
        let cap = config.add_capability(super::capability::CAP_ID_PCIE, &body)?;
        pcie_capability_masks(&mut config, usize::from(cap), true, true);
        if o.any_reserve() {
            // PCIBridgeQemuCap: len, type, bus_res, io, mem, mem_pref_32, mem_pref_64.
            let mut b = Vec::with_capacity(30);
            b.extend_from_slice(&[32, REDHAT_RESOURCE_RESERVE]);
            b.extend_from_slice(&o.bus_reserve.unwrap_or(u32::MAX).to_le_bytes());
            b.extend_from_slice(&o.io_reserve.unwrap_or(u64::MAX).to_le_bytes());
            let lo = |v: Option<u64>| v.map_or(u32::MAX, |v| v as u32);
            b.extend_from_slice(&lo(o.mem_reserve).to_le_bytes());
            b.extend_from_slice(&lo(o.pref32_reserve).to_le_bytes());
            b.extend_from_slice(&o.pref64_reserve.unwrap_or(u64::MAX).to_le_bytes());
            config.add_capability(CAP_ID_VENDOR, &b)?;
        }
        let mut ext = vec![0u32; PCIE_CONFIG_REGS - PCI_CONFIG_REGS];
        // AER v2 (next: ACS), its error masks as QEMU's pcie_aer_init sets them.
        ext[0] = 0x0001 | 0x2 << 16 | (ACS_OFFSET as u32) << 20;
        ext[3] = 0x0046_2030; // uncorrectable severity
        ext[5] = 0x0000_e000; // correctable mask (advisory non-fatal and up)
        ext[6] = 0x0000_02a0; // capabilities and control
        let acs = (ACS_OFFSET - AER_OFFSET) / 4;
        ext[acs] = 0x000d | 0x1 << 16;
        ext[acs + 1] = 0x0000_005f; // SV, TB, RR, CR, UF, DT
        Ok(Self {
            config,
            msix,
            ext,
            pba_offset: pba,
        })
    }
}

impl PciDevice for PcieRootPort {
    fn read_config(&mut self, reg_idx: usize) -> u32 {
        if reg_idx < PCI_CONFIG_REGS {
            self.config.read(reg_idx)
        } else {
            self.ext
                .get(reg_idx - PCI_CONFIG_REGS)
                .copied()
                .unwrap_or(u32::MAX)
        }
    }
    fn write_config(&mut self, reg_idx: usize, offset: u64, data: &[u8]) {
        self.config.write(reg_idx, offset, data);
        self.msix.config_written(&self.config);
    }
    fn reset(&mut self) {
        self.config.reset();
        self.msix.reset();
        self.msix.config_written(&self.config);
    }
    fn bars(&self) -> Vec<PciBar> {
        self.config.bars()
    }
    fn bar_read(&mut self, _bar: u8, offset: u64, data: &mut [u8]) {
        if offset >= self.pba_offset {
            self.msix.pba_read(offset - self.pba_offset, data);
        } else {
            self.msix.table_read(offset, data);
        }
    }
    fn bar_write(&mut self, _bar: u8, offset: u64, data: &[u8]) {
        if offset < self.pba_offset {
            self.msix.table_write(offset, data);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::capability::walk;

    /// Registers as QEMU 7.2 shows them for `-device pcie-root-port,port=8,
    /// chassis=1` (read through ECAM with `xp`, before firmware writes).
    #[test]
    fn header_and_capabilities_are_qemus() {
        let mut rp = PcieRootPort::new(RootPortOptions {
            port: 8,
            chassis: 1,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(rp.read_config(0), 0x000c_1b36);
        assert_eq!(rp.read_config(1), 0x0010_0000);
        assert_eq!(rp.read_config(2), 0x0604_0000);
        assert_eq!(rp.read_config(3), 0x0001_0000);
        assert_eq!(rp.read_config(7), 0x0000_00f0, "I/O window disabled");
        assert_eq!(rp.read_config(13), 0x54);
        assert_eq!(rp.read_config(15), 0x0000_0100, "INTA#");
        let caps: Vec<(u8, u8)> = walk(|o| rp.read_config(o / 4).to_le_bytes()[o % 4])
            .iter()
            .map(|c| (c.offset, c.id))
            .collect();
        assert_eq!(caps, vec![(0x54, 0x10), (0x48, 0x11), (0x40, 0x0d)]);
        assert_eq!(rp.read_config(0x44 / 4), 0x0000_1b36);
        assert_eq!(rp.read_config(0x48 / 4), 0x0000_4011);
        assert_eq!(
            rp.read_config(0x50 / 4),
            0x0000_0800,
            "PBA at 0x800 of BAR 0"
        );
        assert_eq!(rp.read_config(0x54 / 4), 0x0142_4810);
        assert_eq!(rp.read_config(0x60 / 4), 0x0830_0604, "port 8 in link caps");
        assert_eq!(rp.read_config(0x68 / 4), 0x0002_007b);
        assert_eq!(rp.read_config(0x100 / 4), 0x1482_0001);
        assert_eq!(rp.read_config(0x148 / 4), 0x0001_000d);
        let bars = rp.bars();
        assert_eq!((bars.len(), bars[0].size), (1, 0x1000));
    }

    #[test]
    fn reserve_capability_and_its_errors() {
        let mut rp = PcieRootPort::new(RootPortOptions {
            bus_reserve: Some(3),
            mem_reserve: Some(8 << 20),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            rp.read_config(13),
            0x90,
            "the vendor capability heads the list"
        );
        assert_eq!(rp.read_config(0x90 / 4), 0x0120_5409);
        assert_eq!(rp.read_config(0x94 / 4), 3);
        assert_eq!(rp.read_config(0x98 / 4), u32::MAX, "io not set");
        assert_eq!(rp.read_config(0xa0 / 4), 8 << 20);
        let e = |o| PcieRootPort::new(o).err().unwrap().to_string();
        assert_eq!(
            e(RootPortOptions {
                pref32_reserve: Some(1),
                pref64_reserve: Some(1),
                ..Default::default()
            }),
            "PCI resource reserve cap: PREF32 and PREF64 conflict"
        );
        assert_eq!(
            e(RootPortOptions {
                mem_reserve: Some(4 << 30),
                ..Default::default()
            }),
            "PCI resource reserve cap: mem-reserve must be less than 4G"
        );
    }
}
