//! q35's ICH9 LPC bridge at 00:1f.0 (QEMU hw/isa/lpc_ich9.c, `ICH9-LPC`):
//! 8086:2918, the function SeaBIOS programs the ACPI PM block through.
//!
//! - PMBASE (0x40): I/O base of the 128-byte PM block, bits 15:7; bit 0
//!   (RTE) reads 1. ACPI_CNTL (0x44) bit 7 (ACPI_EN) decodes it. SeaBIOS
//!   writes 0x601 and 0x80 (src/fw/pciinit.c `ich9_lpc_apmc_setup`... `mch_isa_bridge_setup`).
//! - PIRQA-D (0x60-0x63) and PIRQE-H (0x68-0x6b) routing, power-on 0x80
//!   (disabled): kept for the guest to read back. They only matter for 8259
//!   routing; in APIC mode q35's PIRQs are GSIs 16-23 (boot::pci_intx_gsi).
//! - RCBA (0xf0): kept; its chipset-configuration MMIO block is not decoded.
//!
//! As on QEMU every byte from 0x40 on is guest-writable, except PMBASE whose
//! mask QEMU 7.2 sets to 0xff80 and then ORs ACPI_EN | SCI_IRQ_SEL (0x87)
//! into its low byte (`ich9_lpc_realize` writes that mask at 0x40, not 0x44).

use super::{ChipsetEvent, ChipsetObserver};
use crate::pci::config::HEADER_TYPE_MULTIFUNCTION;
use crate::pci::{PciConfigSpace, PciDevice};

pub const LPC_VENDOR: u16 = 0x8086;
pub const LPC_DEVICE: u16 = 0x2918;
/// The LPC bridge's slot and function on pcie.0.
pub const LPC_SLOT: u8 = 31;
const CLASS_BRIDGE_ISA: u32 = 0x06_01_00;
const REVISION: u8 = 0x02;
pub const PMBASE: usize = 0x40;
const PMBASE_DEFAULT: u32 = 0x1;
const PMBASE_MASK: u32 = 0xff80;
pub const ACPI_CNTL: usize = 0x44;
pub const ACPI_EN: u8 = 0x80;
const PIRQ_ROUT_DEFAULT: u8 = 0x80;
const PIRQA_ROUT: usize = 0x60;
const PIRQE_ROUT: usize = 0x68;
/// Size of the ACPI PM I/O block PMBASE decodes (QEMU `ICH9_PMIO_SIZE`).
pub const PMIO_SIZE: u64 = 128;

pub struct Lpc {
    config: PciConfigSpace,
    observer: Option<ChipsetObserver>,
    /// The PM block base last published.
    pm_base: Option<u16>,
}

impl Lpc {
    pub fn new() -> Self {
        let mut config = PciConfigSpace::new(LPC_VENDOR, LPC_DEVICE, CLASS_BRIDGE_ISA, REVISION);
        config.set_writable(0x40, &[0xff; 0xc0]);
        let m = PMBASE_MASK | u32::from(ACPI_EN) | 0x7;
        config.set_writable(PMBASE, &m.to_le_bytes());
        config.set_bytes(PMBASE, &PMBASE_DEFAULT.to_le_bytes());
        config.set_bytes(PIRQA_ROUT, &[PIRQ_ROUT_DEFAULT; 4]);
        config.set_bytes(PIRQE_ROUT, &[PIRQ_ROUT_DEFAULT; 4]);
        // QEMU creates it multifunction (pc_q35.c), with SATA and SMBus at .2/.3.
        config.set_bytes(0x0e, &[HEADER_TYPE_MULTIFUNCTION]);
        Self {
            config,
            observer: None,
            pm_base: None,
        }
    }

    pub fn set_observer(&mut self, observer: ChipsetObserver) {
        self.observer = Some(observer);
    }

    /// The PM block's port, when ACPI_EN decodes it.
    pub fn pm_base(&self) -> Option<u16> {
        let base = self.config.read(PMBASE / 4) & PMBASE_MASK;
        (self.config.byte(ACPI_CNTL) & ACPI_EN != 0).then_some(base as u16)
    }

    fn publish(&mut self) {
        let now = self.pm_base();
        if now != self.pm_base {
            self.pm_base = now;
            if let Some(o) = &self.observer {
                o(ChipsetEvent::PmBase(now));
            }
        }
    }
}

impl Default for Lpc {
    fn default() -> Self {
        Self::new()
    }
}

impl PciDevice for Lpc {
    fn read_config(&mut self, reg_idx: usize) -> u32 {
        let v = self.config.read(reg_idx);
        // RTE is hard-wired to 1.
        if reg_idx == PMBASE / 4 {
            v | PMBASE_DEFAULT
        } else {
            v
        }
    }

    fn write_config(&mut self, reg_idx: usize, offset: u64, data: &[u8]) {
        self.config.write(reg_idx, offset, data);
        self.publish();
    }

    fn reset(&mut self) {
        self.config.reset();
        self.publish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chipset::mch::recorder;

    #[test]
    fn seabios_enables_the_pm_block_at_0x600() {
        let mut l = Lpc::new();
        let (o, log) = recorder();
        l.set_observer(o);
        assert_eq!(l.read_config(0), 0x2918_8086);
        assert_eq!(l.read_config(2), 0x0601_0002);
        assert_eq!(l.read_config(3) >> 16 & 0xff, 0x80, "multifunction");
        assert_eq!(l.read_config(PIRQA_ROUT / 4), 0x8080_8080);
        l.write_config(PMBASE / 4, 0, &0x601u32.to_le_bytes());
        assert!(log.lock().unwrap().is_empty(), "ACPI_EN still clear");
        assert_eq!(l.read_config(PMBASE / 4), 0x601);
        l.write_config(ACPI_CNTL / 4, 0, &[ACPI_EN]);
        assert_eq!(
            *log.lock().unwrap(),
            vec![ChipsetEvent::PmBase(Some(0x600))]
        );
        l.reset();
        assert_eq!(
            log.lock().unwrap().last(),
            Some(&ChipsetEvent::PmBase(None))
        );
        assert_eq!(l.read_config(PMBASE / 4), 0x1);
    }

    #[test]
    fn pmbase_keeps_qemus_mask() {
        let mut l = Lpc::new();
        l.write_config(PMBASE / 4, 0, &0xffff_ffffu32.to_le_bytes());
        assert_eq!(l.read_config(PMBASE / 4), 0xff87);
    }
}
