//! A type 0 configuration space (PCI Local Bus 3.0 §6.1) with a write mask,
//! BARs and a capability list: what every simple function shares.

use super::bar::{BarKind, PciBar};
use super::{PciError, COMMAND_WRITABLE, PCI_CONFIG_REGS, PCI_NUM_BARS};

/// What QEMU gives every non-bridge device that sets no subsystem
/// (hw/pci/pci.c `pci_set_default_subsystem_id`).
pub const DEFAULT_SUBSYSTEM_VENDOR: u16 = 0x1af4;
pub const DEFAULT_SUBSYSTEM: u16 = 0x1100;

/// Byte offsets in the header.
pub const PCI_COMMAND: usize = 0x04;
pub const PCI_STATUS: usize = 0x06;
pub const PCI_HEADER_TYPE: usize = 0x0e;
pub const PCI_BAR0: usize = 0x10;
pub const PCI_SUBSYSTEM_VENDOR_ID: usize = 0x2c;
pub const PCI_CAPABILITY_LIST: usize = 0x34;
pub const PCI_INTERRUPT_LINE: usize = 0x3c;
pub const PCI_INTERRUPT_PIN: usize = 0x3d;
/// Status register bit 4: the capability list at 0x34 is valid.
pub const STATUS_CAP_LIST: u16 = 1 << 4;
/// Header type bit 7: a multi-function device (on function 0).
pub const HEADER_TYPE_MULTIFUNCTION: u8 = 0x80;
/// Capabilities live after the 64-byte header.
const CAP_START: usize = 0x40;
const CONFIG_BYTES: usize = PCI_CONFIG_REGS * 4;

/// A 256-byte configuration space with a write mask. Header fields are
/// read-only unless their mask bits say otherwise; BAR registers get their
/// masks from the BAR size, so writing all ones reads back the size mask.
#[derive(Debug, Clone)]
pub struct PciConfigSpace {
    regs: [u32; PCI_CONFIG_REGS],
    wmask: [u32; PCI_CONFIG_REGS],
    power_on: [u32; PCI_CONFIG_REGS],
    bars: [Option<(BarKind, u64)>; PCI_NUM_BARS],
    /// First byte not used by a capability.
    cap_end: usize,
}

impl PciConfigSpace {
    /// A type 0 header; `class` is class << 16 | subclass << 8 | prog-if.
    /// Writable: command ([`COMMAND_WRITABLE`]), cache line size, latency
    /// timer, interrupt line.
    pub fn new(vendor: u16, device: u16, class: u32, revision: u8) -> Self {
        let mut regs = [0u32; PCI_CONFIG_REGS];
        regs[0] = u32::from(vendor) | u32::from(device) << 16;
        regs[2] = (class & 0x00ff_ffff) << 8 | u32::from(revision);
        regs[11] = u32::from(DEFAULT_SUBSYSTEM_VENDOR) | u32::from(DEFAULT_SUBSYSTEM) << 16;
        let mut wmask = [0u32; PCI_CONFIG_REGS];
        wmask[1] = COMMAND_WRITABLE;
        wmask[3] = 0x0000_ffff;
        wmask[15] = 0x0000_00ff;
        Self {
            regs,
            wmask,
            power_on: regs,
            bars: [None; PCI_NUM_BARS],
            cap_end: CAP_START,
        }
    }

    pub fn read(&self, reg_idx: usize) -> u32 {
        self.regs.get(reg_idx).copied().unwrap_or(u32::MAX)
    }

    /// A guest write through the write mask.
    pub fn write(&mut self, reg_idx: usize, offset: u64, data: &[u8]) {
        let (Some(reg), Some(&mask)) = (self.regs.get_mut(reg_idx), self.wmask.get(reg_idx)) else {
            return;
        };
        for (i, &b) in data.iter().enumerate() {
            let shift = 8 * (offset + i as u64);
            if shift >= 32 {
                break;
            }
            let m = (mask >> shift) & 0xff;
            let byte = ((*reg >> shift) & !m & 0xff) | (u32::from(b) & m);
            *reg = (*reg & !(0xff << shift)) | byte << shift;
        }
    }

    /// Machine reset: every register back to its power-on value.
    pub fn reset(&mut self) {
        self.regs = self.power_on;
    }

    /// A byte of configuration space; all ones past its end.
    pub fn byte(&self, offset: usize) -> u8 {
        self.read(offset / 4).to_le_bytes()[offset % 4]
    }

    pub fn word(&self, offset: usize) -> u16 {
        u16::from_le_bytes([self.byte(offset), self.byte(offset + 1)])
    }

    /// Sets bytes at `offset` regardless of the write mask, as power-on
    /// values (the model's own setup, not a guest write). Bytes past the end
    /// are dropped.
    pub fn set_bytes(&mut self, offset: usize, bytes: &[u8]) {
        for (i, &b) in bytes.iter().enumerate() {
            let o = offset + i;
            if o >= CONFIG_BYTES {
                break;
            }
            let shift = 8 * (o % 4);
            let r = &mut self.regs[o / 4];
            *r = (*r & !(0xff << shift)) | u32::from(b) << shift;
            self.power_on[o / 4] = *r;
        }
    }

    /// Makes the bits of `mask` (bytes from `offset`) guest-writable.
    pub fn set_writable(&mut self, offset: usize, mask: &[u8]) {
        for (i, &m) in mask.iter().enumerate() {
            let o = offset + i;
            if o >= CONFIG_BYTES {
                break;
            }
            let shift = 8 * (o % 4);
            let w = &mut self.wmask[o / 4];
            *w = (*w & !(0xff << shift)) | u32::from(m) << shift;
        }
    }

    pub fn command(&self) -> u16 {
        self.word(PCI_COMMAND)
    }

    pub fn set_subsystem(&mut self, vendor: u16, device: u16) {
        let mut b = [0u8; 4];
        b[..2].copy_from_slice(&vendor.to_le_bytes());
        b[2..].copy_from_slice(&device.to_le_bytes());
        self.set_bytes(PCI_SUBSYSTEM_VENDOR_ID, &b);
    }

    /// Interrupt pin: 0 none, 1-4 INTA#-INTD#.
    pub fn set_interrupt_pin(&mut self, pin: u8) {
        self.set_bytes(PCI_INTERRUPT_PIN, &[pin]);
    }

    pub fn interrupt_pin(&self) -> u8 {
        self.byte(PCI_INTERRUPT_PIN)
    }

    /// The interrupt line register as the guest (or firmware) set it.
    pub fn interrupt_line(&self) -> u8 {
        self.byte(PCI_INTERRUPT_LINE)
    }

    /// Declares BAR `index` of `kind` and `size` bytes (a 64-bit BAR also
    /// takes `index + 1`). Its address starts at 0 and is guest-writable in
    /// the bits above the size.
    pub fn add_bar(&mut self, index: u8, kind: BarKind, size: u64) -> Result<(), PciError> {
        let i = usize::from(index);
        let slots = if kind.is_64bit() { 2 } else { 1 };
        let free = |j: usize| j < PCI_NUM_BARS && self.bars[j].is_none() && !self.is_bar_high(j);
        if !kind.valid_size(size) || !(i..i + slots).all(free) {
            return Err(PciError::InvalidBar { index, kind, size });
        }
        self.bars[i] = Some((kind, size));
        let mask = !(size - 1) & !kind.flag_mask();
        let reg = PCI_BAR0 / 4 + i;
        self.regs[reg] = kind.flags();
        self.power_on[reg] = kind.flags();
        self.wmask[reg] = mask as u32;
        if kind.is_64bit() {
            self.wmask[reg + 1] = (mask >> 32) as u32;
        }
        Ok(())
    }

    /// Whether BAR register `j` is the high dword of a 64-bit BAR.
    fn is_bar_high(&self, j: usize) -> bool {
        j > 0 && matches!(self.bars[j - 1], Some((k, _)) if k.is_64bit())
    }

    /// The raw address held by BAR `i` (both dwords for a 64-bit BAR).
    fn bar_address(&self, i: usize, kind: BarKind) -> u64 {
        let reg = PCI_BAR0 / 4 + i;
        let lo = u64::from(self.regs[reg]) & !kind.flag_mask();
        let hi = if kind.is_64bit() {
            u64::from(self.regs[reg + 1]) << 32
        } else {
            0
        };
        hi | lo
    }

    /// The implemented BARs and what each decodes under the current command register.
    pub fn bars(&self) -> Vec<PciBar> {
        let command = self.command();
        self.bars
            .iter()
            .enumerate()
            .filter_map(|(i, b)| {
                let (kind, size) = (*b)?;
                let addr = self.bar_address(i, kind);
                Some(PciBar::decode(i as u8, kind, size, addr, command))
            })
            .collect()
    }

    /// Whether dword `reg_idx` is a BAR register (0x10-0x27).
    pub fn is_bar_reg(reg_idx: usize) -> bool {
        (PCI_BAR0 / 4..PCI_BAR0 / 4 + PCI_NUM_BARS).contains(&reg_idx)
    }

    /// Where the next [`PciConfigSpace::add_capability`] goes (4-aligned,
    /// from 0x40): QEMU's `pci_add_capability` with an explicit offset, for
    /// functions whose capabilities sit at fixed places (qemu-xhci's MSI-X
    /// at 0x90 and PCIe at 0xa0).
    pub fn set_capability_start(&mut self, offset: usize) {
        self.cap_end = offset.max(CAP_START).next_multiple_of(4);
    }

    /// Adds a capability with ID `id` whose bytes after the ID and next
    /// pointer are `body`; returns its offset. Like QEMU
    /// (hw/pci/pci.c `pci_add_capability`), the newest capability heads the
    /// list at 0x34 and space is taken upward from 0x40; offsets stay dword
    /// aligned (PCI 3.0 §6.7).
    pub fn add_capability(&mut self, id: u8, body: &[u8]) -> Result<u8, PciError> {
        let size = body.len() + 2;
        let offset = self.cap_end;
        if offset + size > CONFIG_BYTES {
            return Err(PciError::NoCapabilitySpace { size });
        }
        let head = self.byte(PCI_CAPABILITY_LIST);
        self.set_bytes(offset, &[id, head]);
        self.set_bytes(offset + 2, body);
        self.set_bytes(PCI_CAPABILITY_LIST, &[offset as u8]);
        let status = self.word(PCI_STATUS) | STATUS_CAP_LIST;
        self.set_bytes(PCI_STATUS, &status.to_le_bytes());
        self.cap_end = (offset + size).next_multiple_of(4);
        Ok(offset as u8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::{BarSpace, BarWindow, COMMAND_IO, COMMAND_MEMORY};

    fn write32(c: &mut PciConfigSpace, off: usize, v: u32) {
        c.write(off / 4, 0, &v.to_le_bytes());
    }

    #[test]
    fn masks_header_writes() {
        let mut c = PciConfigSpace::new(0x1af4, 0x1041, 0x02_00_00, 1);
        c.write(1, 0, &[0xff, 0xff, 0xff, 0xff]);
        assert_eq!(c.read(1), 0x0547);
        c.write(1, 3, &[0xff, 0xff]); // runs off the dword: the rest is dropped
        c.write(64, 0, &[0xff]);
        assert_eq!(c.read(64), u32::MAX);
        assert_eq!(c.read(2), 0x0200_0001);
        c.reset();
        assert_eq!(c.read(1), 0);
    }

    /// The sizing protocol (PCI 3.0 §6.2.5.1): write all ones, read back the
    /// size mask with the type bits; then program the address.
    #[test]
    fn bar_sizing_and_programming() {
        let mut c = PciConfigSpace::new(0x1af4, 0x1042, 0x01_00_00, 1);
        c.add_bar(0, BarKind::Io, 0x40).unwrap();
        c.add_bar(
            1,
            BarKind::Memory32 {
                prefetchable: false,
            },
            0x1000,
        )
        .unwrap();
        c.add_bar(4, BarKind::Memory64 { prefetchable: true }, 0x4000)
            .unwrap();
        assert_eq!(c.read(4), 0x1, "I/O BAR reads its type bit");
        assert_eq!(c.read(8), 0xc, "64-bit prefetchable");
        for off in (0x10..0x28).step_by(4) {
            write32(&mut c, off, 0xffff_ffff);
        }
        assert_eq!(c.read(4), 0xffff_ffc1);
        assert_eq!(c.read(5), 0xffff_f000);
        assert_eq!(c.read(6), 0, "unimplemented BAR stays 0");
        assert_eq!(c.read(8), 0xffff_c00c);
        assert_eq!(
            c.read(9),
            0xffff_ffff,
            "high dword of a 16 KiB BAR is all address"
        );
        assert!(c.bars().iter().all(|b| b.window.is_none()), "decode is off");

        write32(&mut c, 0x10, 0xc041);
        write32(&mut c, 0x14, 0xfebf_1234);
        write32(&mut c, 0x20, 0x0000_4000);
        write32(&mut c, 0x24, 0x8);
        c.write(1, 0, &[(COMMAND_IO | COMMAND_MEMORY) as u8]);
        let windows: Vec<_> = c.bars().iter().map(|b| b.window).collect();
        assert_eq!(
            windows,
            vec![
                Some(BarWindow {
                    space: BarSpace::Io,
                    base: 0xc040,
                    size: 0x40
                }),
                Some(BarWindow {
                    space: BarSpace::Memory,
                    base: 0xfebf_1000,
                    size: 0x1000
                }),
                Some(BarWindow {
                    space: BarSpace::Memory,
                    base: 0x8_0000_4000,
                    size: 0x4000
                }),
            ]
        );
        c.reset();
        assert_eq!(
            c.read(8),
            0xc,
            "reset keeps the type bits, clears the address"
        );
    }

    #[test]
    fn bad_bar_declarations_are_refused() {
        let mut c = PciConfigSpace::new(0, 0, 0, 0);
        let m64 = BarKind::Memory64 {
            prefetchable: false,
        };
        assert!(
            c.add_bar(5, m64, 0x1000).is_err(),
            "no room for the high dword"
        );
        assert!(c.add_bar(6, BarKind::Io, 4).is_err());
        assert!(
            c.add_bar(0, BarKind::Io, 0x200).is_err(),
            "I/O BARs are at most 256 bytes"
        );
        assert!(
            c.add_bar(0, BarKind::Io, 0x30).is_err(),
            "not a power of two"
        );
        c.add_bar(2, m64, 0x1000).unwrap();
        assert!(c.add_bar(3, BarKind::Io, 4).is_err(), "high dword of BAR2");
        assert!(c.add_bar(2, BarKind::Io, 4).is_err(), "taken");
        assert!(c.add_bar(1, m64, 0x1000).is_err(), "would overlap BAR2");
    }

    #[test]
    fn capabilities_chain_newest_first() {
        let mut c = PciConfigSpace::new(0, 0, 0, 0);
        assert_eq!(c.word(PCI_STATUS) & STATUS_CAP_LIST, 0);
        assert_eq!(c.add_capability(0x09, &[14, 1, 4, 0, 0, 0]), Ok(0x40));
        assert_eq!(c.add_capability(0x11, &[0; 10]), Ok(0x48));
        assert_eq!(c.byte(PCI_CAPABILITY_LIST), 0x48);
        assert_eq!(c.byte(0x48), 0x11);
        assert_eq!(c.byte(0x49), 0x40);
        assert_eq!(c.byte(0x41), 0x00, "end of list");
        assert_eq!(c.byte(0x42), 14);
        assert_ne!(c.word(PCI_STATUS) & STATUS_CAP_LIST, 0);
        c.write(0x48 / 4, 0, &[0xff; 4]);
        assert_eq!(c.byte(0x48), 0x11, "capabilities are read-only by default");
        c.reset();
        assert_eq!(c.byte(PCI_CAPABILITY_LIST), 0x48, "the list survives reset");
        assert!(c.add_capability(0x09, &[0; 200]).is_err());
    }
}
