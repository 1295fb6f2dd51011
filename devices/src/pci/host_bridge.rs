//! 00:00.0, the host bridge.

use super::{PciConfigSpace, PciDevice};

/// QEMU's generic PCIe host bridge (hw/pci-host/gpex.c, "gpex-root").
pub const HOST_BRIDGE_VENDOR: u16 = 0x1b36;
pub const HOST_BRIDGE_DEVICE: u16 = 0x0008;
const CLASS_BRIDGE_HOST: u32 = 0x06_00_00;

/// A host bridge with no BARs and no capabilities.
pub struct HostBridge {
    config: PciConfigSpace,
}

impl HostBridge {
    pub fn new() -> Self {
        Self {
            config: PciConfigSpace::new(
                HOST_BRIDGE_VENDOR,
                HOST_BRIDGE_DEVICE,
                CLASS_BRIDGE_HOST,
                0,
            ),
        }
    }
}

impl Default for HostBridge {
    fn default() -> Self {
        Self::new()
    }
}

impl PciDevice for HostBridge {
    fn read_config(&mut self, reg_idx: usize) -> u32 {
        self.config.read(reg_idx)
    }
    fn write_config(&mut self, reg_idx: usize, offset: u64, data: &[u8]) {
        self.config.write(reg_idx, offset, data)
    }
    fn reset(&mut self) {
        self.config.reset()
    }
}
