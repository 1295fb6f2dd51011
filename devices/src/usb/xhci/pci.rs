//! `-device qemu-xhci` as a PCI function (QEMU hw/usb/hcd-xhci-pci.c):
//! 1b36:000d revision 1, class 0x0c0330 (xHCI), interrupt pin A, SBRN 0x30
//! at 0x60, BAR0 a 64-bit memory BAR of 16 KiB holding the registers and,
//! at 0x3000 / 0x3800, the MSI-X table and PBA (one vector per
//! interrupter). Capabilities where QEMU puts them on a PCIe bus: MSI-X at
//! 0x90, then a PCIe v2 capability at 0xa0 (Root Complex Integrated
//! Endpoint on pcie.0). qemu-xhci has MSI off (its `msi` default), so no
//! MSI capability.
//!
//! Interrupter 0 drives INTx while MSI-X is off; with MSI-X on every
//! interrupter signals its own vector (QEMU `xhci_pci_intr_raise`).

use std::sync::Arc;

use vm_memory::GuestMemoryMmap;

use super::{Xhci, XhciConfig, XhciInterrupts, XHCI_LEN_REGS};
use crate::interrupt::{IntxLine, MsiVectors};
use crate::pci::capability::CAP_ID_PCIE;
use crate::pci::{
    BarKind, Msix, PciBar, PciConfigSpace, PciDevice, PciError, COMMAND_INTX_DISABLE,
};
use crate::Clock;

/// `PCI_VENDOR_ID_REDHAT`, `PCI_DEVICE_ID_REDHAT_XHCI`.
pub const XHCI_PCI_VENDOR: u16 = 0x1b36;
pub const XHCI_PCI_DEVICE: u16 = 0x000d;
pub const XHCI_PCI_REVISION: u8 = 1;
/// `PCI_CLASS_SERIAL_USB` with prog-if 0x30 (xHCI).
pub const XHCI_PCI_CLASS: u32 = 0x0c_03_30;
/// hcd-xhci-pci.c `OFF_MSIX_TABLE` / `OFF_MSIX_PBA`.
pub const OFF_MSIX_TABLE: u64 = 0x3000;
pub const OFF_MSIX_PBA: u64 = 0x3800;
pub const MSIX_CAP_OFFSET: usize = 0x90;
pub const PCIE_CAP_OFFSET: usize = 0xa0;
/// `PCI_EXP_VER2_SIZEOF`.
const PCIE_CAP_SIZE: usize = 0x3c;

/// The PCIe capability's body after ID and next pointer as QEMU's
/// `pcie_endpoint_cap_init` fills it for a device on the root bus:
/// version 2, type 9 (RC integrated endpoint), DEVCAP role-based error
/// reporting, LNKCAP x1 2.5 GT/s with L0s, LNKSTA x1 2.5 GT/s, DEVCAP2
/// extended fmt field and end-end TLP prefix.
fn pcie_cap_body() -> [u8; PCIE_CAP_SIZE - 2] {
    let mut c = [0u8; PCIE_CAP_SIZE];
    let put =
        |c: &mut [u8; PCIE_CAP_SIZE], o: usize, v: &[u8]| c[o..o + v.len()].copy_from_slice(v);
    put(&mut c, 0x02, &0x0092u16.to_le_bytes());
    put(&mut c, 0x04, &0x0000_8000u32.to_le_bytes());
    put(&mut c, 0x0c, &0x0000_0411u32.to_le_bytes());
    put(&mut c, 0x12, &0x0011u16.to_le_bytes());
    put(&mut c, 0x24, &0x0030_0000u32.to_le_bytes());
    let mut body = [0u8; PCIE_CAP_SIZE - 2];
    body.copy_from_slice(&c[2..]);
    body
}

/// What the controller core raises through (QEMU `xhci_pci_intr_raise`).
struct PciInterrupts {
    msix: Msix,
    intx: Option<Arc<dyn IntxLine>>,
    /// What interrupter 0 asserts on INTx, before the command register's
    /// INTx disable.
    level: bool,
    intx_disabled: bool,
}

impl PciInterrupts {
    fn drive_intx(&self) {
        if let Some(l) = &self.intx {
            l.set_level(self.level && !self.intx_disabled);
        }
    }
}

impl XhciInterrupts for PciInterrupts {
    fn raise(&mut self, v: usize, level: bool) -> bool {
        let msix = self.msix.enabled();
        if v == 0 && !msix {
            self.level = level;
            self.drive_intx();
        }
        if msix && level {
            self.msix.notify(v as u16);
            return true;
        }
        false
    }
}

/// The qemu-xhci PCI function.
pub struct XhciPci {
    config: PciConfigSpace,
    core: Xhci,
    irq: PciInterrupts,
}

impl XhciPci {
    /// A controller of shape `cfg` on guest memory `mem`; `msi` receives
    /// the MSI-X vectors (one per interrupter), `intx` is pin A.
    pub fn new(
        cfg: XhciConfig,
        mem: GuestMemoryMmap,
        clock: Box<dyn Clock>,
        msi: Arc<dyn MsiVectors>,
        intx: Option<Arc<dyn IntxLine>>,
    ) -> Result<Self, PciError> {
        let core = Xhci::new(cfg, mem, clock);
        let mut config = PciConfigSpace::new(
            XHCI_PCI_VENDOR,
            XHCI_PCI_DEVICE,
            XHCI_PCI_CLASS,
            XHCI_PCI_REVISION,
        );
        config.set_interrupt_pin(1);
        // Serial Bus Release Number: USB 3.0.
        config.set_bytes(0x60, &[0x30]);
        config.add_bar(
            0,
            BarKind::Memory64 {
                prefetchable: false,
            },
            XHCI_LEN_REGS,
        )?;
        // hw/pci/pci.c pci_init_wmask: bytes after the header are writable,
        // except where a capability sits.
        config.set_writable(0x40, &[0xff; MSIX_CAP_OFFSET - 0x40]);
        config.set_writable(0x9c, &[0xff; 4]);
        config.set_writable(PCIE_CAP_OFFSET + PCIE_CAP_SIZE, &[0xff; 0x24]);
        config.set_capability_start(PCIE_CAP_OFFSET);
        let pcie = config.add_capability(CAP_ID_PCIE, &pcie_cap_body())?;
        // DEVCTL2: only End-End TLP Prefix Blocking is writable.
        config.set_writable(usize::from(pcie) + 0x28, &0x8000u16.to_le_bytes());
        config.set_capability_start(MSIX_CAP_OFFSET);
        let mut msix = Msix::new(core.numintrs() as u16, msi);
        msix.add_capability(
            &mut config,
            0,
            OFF_MSIX_TABLE as u32,
            0,
            OFF_MSIX_PBA as u32,
        )?;
        Ok(Self {
            config,
            core,
            irq: PciInterrupts {
                msix,
                intx,
                level: false,
                intx_disabled: false,
            },
        })
    }

    /// The controller (tests, reports).
    pub fn core(&self) -> &Xhci {
        &self.core
    }
}

impl PciDevice for XhciPci {
    fn read_config(&mut self, reg_idx: usize) -> u32 {
        self.config.read(reg_idx)
    }

    fn write_config(&mut self, reg_idx: usize, offset: u64, data: &[u8]) {
        self.config.write(reg_idx, offset, data);
        self.irq.msix.config_written(&self.config);
        let disabled = self.config.command() & COMMAND_INTX_DISABLE != 0;
        if disabled != self.irq.intx_disabled {
            self.irq.intx_disabled = disabled;
            self.irq.drive_intx();
        }
    }

    /// Machine reset (QEMU `xhci_pci_reset` and the PCI core's): the
    /// header and MSI-X back to power-on, the controller reset; other bytes
    /// past the header keep what the guest wrote (`pci_do_device_reset`).
    fn reset(&mut self) {
        let kept: Vec<u32> = (0x10..0x40).map(|r| self.config.read(r)).collect();
        self.config.reset();
        for (i, v) in kept.iter().enumerate() {
            self.config.write(0x10 + i, 0, &v.to_le_bytes());
        }
        self.config.write((MSIX_CAP_OFFSET + 2) / 4, 2, &[0, 0]);
        self.irq.msix.reset();
        self.irq.level = false;
        self.irq.intx_disabled = false;
        self.irq.drive_intx();
        self.core.reset();
    }

    fn bars(&self) -> Vec<PciBar> {
        self.config.bars()
    }

    fn bar_read(&mut self, bar: u8, offset: u64, data: &mut [u8]) {
        let table_end = OFF_MSIX_TABLE + self.irq.msix.table_len();
        let pba_end = OFF_MSIX_PBA + self.irq.msix.pba_len();
        match offset {
            _ if bar != 0 => data.fill(0),
            o if (OFF_MSIX_TABLE..table_end).contains(&o) => {
                self.irq.msix.table_read(o - OFF_MSIX_TABLE, data)
            }
            o if (OFF_MSIX_PBA..pba_end).contains(&o) => {
                self.irq.msix.pba_read(o - OFF_MSIX_PBA, data)
            }
            o => self.core.mmio_read(o, data),
        }
    }

    fn bar_write(&mut self, bar: u8, offset: u64, data: &[u8]) {
        let table_end = OFF_MSIX_TABLE + self.irq.msix.table_len();
        let pba_end = OFF_MSIX_PBA + self.irq.msix.pba_len();
        match offset {
            _ if bar != 0 => {}
            o if (OFF_MSIX_TABLE..table_end).contains(&o) => {
                self.irq.msix.table_write(o - OFF_MSIX_TABLE, data)
            }
            o if (OFF_MSIX_PBA..pba_end).contains(&o) => {}
            o => self.core.mmio_write(o, data, &mut self.irq),
        }
    }
}
