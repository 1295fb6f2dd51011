//! `-device pvpanic-pci` (QEMU hw/misc/pvpanic-pci.c): 1b36:0011,
//! revision 1, class 0x0880, no interrupt pin, subsystem 1af4:1100, and the
//! pvpanic register in BAR0, a 32-bit memory BAR of 2 bytes.
//!
//! A memory BAR register cannot decode less than 16 bytes (its low 4 bits
//! are type bits), so the configuration space sizes BAR0 as 16 bytes — what
//! a guest's sizing finds on QEMU too — while [`PciDevice::bars`] reports
//! QEMU's 2 bytes, so the mapping and `query-pci` match QEMU. (On QEMU,
//! whose write mask is `~(size - 1)`, bits 1-3 of the BAR register are
//! writable too; here they stay the type bits.)

use super::{PvPanicCore, PvPanicFn};
use crate::pci::{BarKind, PciBar, PciConfigSpace, PciDevice, PciError};

/// `PCI_VENDOR_ID_REDHAT`.
pub const PVPANIC_PCI_VENDOR: u16 = 0x1b36;
/// `PCI_DEVICE_ID_REDHAT_PVPANIC`.
pub const PVPANIC_PCI_DEVICE: u16 = 0x0011;
pub const PVPANIC_PCI_REVISION: u8 = 1;
/// `PCI_CLASS_SYSTEM_OTHER` << 8.
pub const PVPANIC_PCI_CLASS: u32 = 0x08_80_00;
pub const PVPANIC_PCI_BAR: u8 = 0;
/// The register's size (`pvpanic_setup_io(.., 2)`).
pub const PVPANIC_PCI_BAR_SIZE: u64 = 2;
/// What the BAR register decodes (the smallest memory BAR).
const BAR_REGISTER_SIZE: u64 = 16;

pub struct PvPanicPci {
    config: PciConfigSpace,
    core: PvPanicCore,
}

impl PvPanicPci {
    /// `events`: what reads return (QEMU's `events` property); `report`
    /// hears every event.
    pub fn new(events: u8, report: PvPanicFn) -> Result<Self, PciError> {
        let mut config = PciConfigSpace::new(
            PVPANIC_PCI_VENDOR,
            PVPANIC_PCI_DEVICE,
            PVPANIC_PCI_CLASS,
            PVPANIC_PCI_REVISION,
        );
        config.add_bar(
            PVPANIC_PCI_BAR,
            BarKind::Memory32 {
                prefetchable: false,
            },
            BAR_REGISTER_SIZE,
        )?;
        // hw/pci/pci.c pci_init_wmask: every byte after the header.
        config.set_writable(0x40, &[0xff; 0xc0]);
        Ok(Self {
            config,
            core: PvPanicCore::new(events, report),
        })
    }
}

impl PciDevice for PvPanicPci {
    fn read_config(&mut self, reg_idx: usize) -> u32 {
        self.config.read(reg_idx)
    }

    fn write_config(&mut self, reg_idx: usize, offset: u64, data: &[u8]) {
        self.config.write(reg_idx, offset, data);
    }

    /// The header back to power-on; bytes from 0x40 keep what the guest
    /// wrote, as hw/pci/pci.c `pci_do_device_reset` leaves them.
    fn reset(&mut self) {
        let kept: Vec<u32> = (0x10..0x40).map(|r| self.config.read(r)).collect();
        self.config.reset();
        for (i, v) in kept.iter().enumerate() {
            self.config.write(0x10 + i, 0, &v.to_le_bytes());
        }
    }

    fn bars(&self) -> Vec<PciBar> {
        let command = self.config.command();
        self.config
            .bars()
            .into_iter()
            .map(|b| PciBar::decode(b.index, b.kind, PVPANIC_PCI_BAR_SIZE, b.address, command))
            .collect()
    }

    fn bar_read(&mut self, bar: u8, offset: u64, data: &mut [u8]) {
        if bar == PVPANIC_PCI_BAR {
            self.core.read(PVPANIC_PCI_BAR_SIZE, offset, data);
        } else {
            data.fill(0);
        }
    }

    fn bar_write(&mut self, bar: u8, offset: u64, data: &[u8]) {
        if bar == PVPANIC_PCI_BAR {
            self.core.write(PVPANIC_PCI_BAR_SIZE, offset, data);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::recorder;
    use super::super::{
        PvPanicEvent, PVPANIC_CRASH_LOADED, PVPANIC_EVENTS_DEFAULT, PVPANIC_PANICKED,
    };
    use super::*;
    use crate::pci::{BarSpace, BarWindow, COMMAND_MEMORY};

    fn dev() -> (
        PvPanicPci,
        std::sync::Arc<std::sync::Mutex<Vec<PvPanicEvent>>>,
    ) {
        let (f, log) = recorder();
        (PvPanicPci::new(PVPANIC_EVENTS_DEFAULT, f).unwrap(), log)
    }

    #[test]
    fn identifies_as_qemus_pvpanic_pci() {
        let (mut d, _) = dev();
        assert_eq!(d.read_config(0), 0x0011_1b36);
        assert_eq!(d.read_config(2), 0x0880_0001);
        assert_eq!(d.read_config(0x2c / 4), 0x1100_1af4);
        assert_eq!(d.read_config(0x3c / 4) >> 8 & 0xff, 0, "no interrupt pin");
        d.write_config(4, 0, &[0xff; 4]);
        assert_eq!(d.read_config(4), 0xffff_fff0, "sizes as 16 bytes");
        assert_eq!(d.bars()[0].size, 2, "query-pci reports QEMU's 2 bytes");
    }

    #[test]
    fn the_bar_maps_two_bytes_once_enabled() {
        let (mut d, _) = dev();
        d.write_config(4, 0, &0xfebf_f000u32.to_le_bytes());
        assert_eq!(d.bars()[0].window, None);
        d.write_config(1, 0, &[COMMAND_MEMORY as u8]);
        assert_eq!(
            d.bars()[0].window,
            Some(BarWindow {
                space: BarSpace::Memory,
                base: 0xfebf_f000,
                size: 2
            })
        );
        d.write_config(0x40 / 4, 1, &[0x5a]);
        d.reset();
        assert_eq!(d.bars()[0].window, None);
        assert_eq!(d.read_config(4), 0, "BAR address cleared");
        assert_eq!(d.read_config(0x40 / 4), 0x5a00, "0x40-0xff survive reset");
    }

    #[test]
    fn bar_writes_report_events_byte_by_byte() {
        let (mut d, log) = dev();
        d.bar_write(0, 0, &[PVPANIC_PANICKED]);
        d.bar_write(0, 1, &[PVPANIC_CRASH_LOADED]);
        // A word write is two byte writes: low byte first.
        d.bar_write(0, 0, &[PVPANIC_CRASH_LOADED, PVPANIC_PANICKED]);
        d.bar_write(0, 0, &[0x03, 0x00]);
        d.bar_write(0, 1, &[0x01, 0x01]); // unaligned: refused
        d.bar_write(0, 2, &[0x01]); // past the register
        d.bar_write(1, 0, &[0x01]);
        use PvPanicEvent::*;
        assert_eq!(
            *log.lock().unwrap(),
            vec![Panicked, CrashLoaded, CrashLoaded, Panicked, Panicked]
        );
        let mut b = [0xffu8; 4];
        d.bar_read(0, 0, &mut b);
        assert_eq!(b, [3, 3, 0, 0], "two bytes of events, then unassigned");
        let mut b = [0xffu8; 2];
        d.bar_read(0, 1, &mut b);
        assert_eq!(b, [0, 0], "unaligned read");
    }

    #[test]
    fn garbage_never_panics() {
        let (mut d, _) = dev();
        for off in [0u64, 1, 2, 15, 16, u64::MAX - 1, u64::MAX] {
            for w in [0usize, 1, 2, 3, 4, 8] {
                let mut b = [0u8; 8];
                d.bar_read(0, off, &mut b[..w]);
                d.bar_write(0, off, &[0xff; 8][..w]);
            }
        }
        for reg in 0..70 {
            d.write_config(reg, 0, &[0xff; 4]);
            let _ = d.read_config(reg);
        }
    }
}
