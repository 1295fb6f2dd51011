//! The type 1 (PCI-to-PCI bridge) configuration header (PCI-to-PCI Bridge
//! Architecture 1.2 §3.2) as QEMU builds it (hw/pci/pci.c
//! `pci_init_mask_bridge`, hw/pci/pci_bridge.c `pci_bridge_initfn`), and
//! the decoding of its bus numbers and forwarding windows, which the root
//! complex uses to route configuration cycles and to gate BARs behind it.

use super::config::{PciConfigSpace, PCI_COMMAND, PCI_HEADER_TYPE, PCI_STATUS};
use super::{COMMAND_IO, COMMAND_MEMORY};

pub const PCI_PRIMARY_BUS: usize = 0x18;
pub const PCI_SECONDARY_BUS: usize = 0x19;
pub const PCI_SUBORDINATE_BUS: usize = 0x1a;
pub const PCI_IO_BASE: usize = 0x1c;
pub const PCI_IO_LIMIT: usize = 0x1d;
pub const PCI_SEC_STATUS: usize = 0x1e;
pub const PCI_MEMORY_BASE: usize = 0x20;
pub const PCI_MEMORY_LIMIT: usize = 0x22;
pub const PCI_PREF_MEMORY_BASE: usize = 0x24;
pub const PCI_PREF_MEMORY_LIMIT: usize = 0x26;
pub const PCI_PREF_BASE_UPPER32: usize = 0x28;
pub const PCI_PREF_LIMIT_UPPER32: usize = 0x2c;
pub const PCI_IO_BASE_UPPER16: usize = 0x30;
pub const PCI_BRIDGE_CONTROL: usize = 0x3e;
/// Bridge control bit 6: secondary bus reset (§3.2.5.17).
pub const BRIDGE_CTL_BUS_RESET: u16 = 1 << 6;
/// Bridge control bits QEMU lets the guest write (`pci_init_mask_bridge`):
/// parity, SERR#, ISA, VGA, VGA 16-bit, master abort, bus reset, fast
/// back-to-back, the discard timers and discard SERR#.
const BRIDGE_CTL_WRITABLE: u16 = 0x0bff;
/// Status: 66 MHz capable, fast back-to-back capable.
const STATUS_66MHZ_FAST_BACK: u16 = 0x00a0;
/// PCI class 06.04.00, a PCI-to-PCI bridge.
pub const CLASS_BRIDGE_PCI: u32 = 0x06_04_00;
/// Header type 1.
const HEADER_TYPE_BRIDGE: u8 = 0x01;
/// Prefetchable base/limit low nibble 1: 64-bit addressing.
const PREF_RANGE_TYPE_64: u16 = 0x1;

/// A type 1 header: class 06.04.00, header type 1, no subsystem (0x2c is
/// the prefetchable limit's upper half), the bridge registers writable as in
/// QEMU. The windows are 16-bit I/O and 64-bit prefetchable memory.
pub fn type1_config(vendor: u16, device: u16, revision: u8) -> PciConfigSpace {
    let mut c = PciConfigSpace::new(vendor, device, CLASS_BRIDGE_PCI, revision);
    c.set_bytes(0x2c, &[0; 4]);
    c.set_bytes(PCI_HEADER_TYPE, &[HEADER_TYPE_BRIDGE]);
    let status = c.word(PCI_STATUS) | STATUS_66MHZ_FAST_BACK;
    c.set_bytes(PCI_STATUS, &status.to_le_bytes());
    c.set_bytes(PCI_SEC_STATUS, &STATUS_66MHZ_FAST_BACK.to_le_bytes());
    // Bus numbers and the secondary latency timer.
    c.set_writable(PCI_PRIMARY_BUS, &[0xff; 4]);
    c.set_writable(PCI_IO_BASE, &[0xf0, 0xf0]);
    c.set_writable(PCI_MEMORY_BASE, &[0xf0, 0xff, 0xf0, 0xff]);
    c.set_writable(PCI_PREF_MEMORY_BASE, &[0xf0, 0xff, 0xf0, 0xff]);
    c.set_writable(PCI_PREF_BASE_UPPER32, &[0xff; 8]);
    c.set_bytes(PCI_PREF_MEMORY_BASE, &PREF_RANGE_TYPE_64.to_le_bytes());
    c.set_bytes(PCI_PREF_MEMORY_LIMIT, &PREF_RANGE_TYPE_64.to_le_bytes());
    c.set_writable(PCI_BRIDGE_CONTROL, &BRIDGE_CTL_WRITABLE.to_le_bytes());
    c
}

/// Power-on windows that forward nothing (base above limit), as QEMU's
/// `pci_bridge_disable_base_limit` leaves a root port after reset.
pub fn disable_base_limit(c: &mut PciConfigSpace) {
    c.set_bytes(PCI_IO_BASE, &[0xf0, 0x00]);
    c.set_bytes(PCI_MEMORY_BASE, &[0xf0, 0xff, 0x00, 0x00]);
    let pref_base = 0xfff0 | PREF_RANGE_TYPE_64;
    c.set_bytes(PCI_PREF_MEMORY_BASE, &pref_base.to_le_bytes());
    c.set_bytes(PCI_PREF_MEMORY_LIMIT, &PREF_RANGE_TYPE_64.to_le_bytes());
}

/// A forwarding window `[base, limit]` (inclusive, as QMP reports it); empty
/// when `base > limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BridgeRange {
    pub base: u64,
    pub limit: u64,
}

impl BridgeRange {
    /// Whether `[start, start + size)` lies inside the window.
    pub fn contains(&self, start: u64, size: u64) -> bool {
        let Some(last) = start.checked_add(size.saturating_sub(1)) else {
            return false;
        };
        size > 0 && self.base <= self.limit && start >= self.base && last <= self.limit
    }
}

/// What a bridge's header says now, decoded like QEMU's
/// `pci_bridge_get_base` / `pci_bridge_get_limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BridgeState {
    pub command: u16,
    pub primary: u8,
    pub secondary: u8,
    pub subordinate: u8,
    pub io: BridgeRange,
    pub memory: BridgeRange,
    pub prefetchable: BridgeRange,
    pub control: u16,
}

impl BridgeState {
    /// Decodes the header through `dword` (a configuration-dword reader).
    pub fn read(mut dword: impl FnMut(usize) -> u32) -> Self {
        let mut byte = |o: usize| dword(o / 4).to_le_bytes()[o % 4];
        let word = |b: &mut dyn FnMut(usize) -> u8, o: usize| u16::from_le_bytes([b(o), b(o + 1)]);
        let long = |b: &mut dyn FnMut(usize) -> u8, o: usize| {
            u32::from_le_bytes([b(o), b(o + 1), b(o + 2), b(o + 3)])
        };
        let command = word(&mut byte, PCI_COMMAND);
        let io_at = |b: &mut dyn FnMut(usize) -> u8, lo: usize, hi: usize| {
            let v = b(lo);
            let mut a = u64::from(v & 0xf0) << 8;
            // Low nibble 1: 32-bit I/O with the upper 16 bits at 0x30/0x32.
            if v & 0x0f == 1 {
                a |= u64::from(word(b, hi)) << 16;
            }
            a
        };
        let io = BridgeRange {
            base: io_at(&mut byte, PCI_IO_BASE, PCI_IO_BASE_UPPER16),
            limit: io_at(&mut byte, PCI_IO_LIMIT, PCI_IO_BASE_UPPER16 + 2) | 0xfff,
        };
        let mem_at =
            |b: &mut dyn FnMut(usize) -> u8, o: usize| u64::from(word(b, o) & 0xfff0) << 16;
        let memory = BridgeRange {
            base: mem_at(&mut byte, PCI_MEMORY_BASE),
            limit: mem_at(&mut byte, PCI_MEMORY_LIMIT) | 0xfffff,
        };
        let pref_at = |b: &mut dyn FnMut(usize) -> u8, o: usize, upper: usize| {
            let mut a = mem_at(b, o);
            if word(b, o) & 0xf == PREF_RANGE_TYPE_64 {
                a |= u64::from(long(b, upper)) << 32;
            }
            a
        };
        let prefetchable = BridgeRange {
            base: pref_at(&mut byte, PCI_PREF_MEMORY_BASE, PCI_PREF_BASE_UPPER32),
            limit: pref_at(&mut byte, PCI_PREF_MEMORY_LIMIT, PCI_PREF_LIMIT_UPPER32) | 0xfffff,
        };
        BridgeState {
            command,
            primary: byte(PCI_PRIMARY_BUS),
            secondary: byte(PCI_SECONDARY_BUS),
            subordinate: byte(PCI_SUBORDINATE_BUS),
            io,
            memory,
            prefetchable,
            control: word(&mut byte, PCI_BRIDGE_CONTROL),
        }
    }

    /// Whether the bridge forwards `[base, base + size)` of I/O (`io`) or
    /// memory space to its secondary side: the command register's enable bit
    /// for the space and a window holding the whole range (PCI-to-PCI Bridge
    /// 1.2 §4.1-4.3; memory may sit in either memory window).
    pub fn forwards(&self, io: bool, base: u64, size: u64) -> bool {
        if io {
            self.command & COMMAND_IO != 0 && self.io.contains(base, size)
        } else {
            self.command & COMMAND_MEMORY != 0
                && (self.memory.contains(base, size) || self.prefetchable.contains(base, size))
        }
    }

    /// Whether configuration cycles for bus `n` go through this bridge
    /// (type 1 semantics, §3.2.5.3-5: secondary <= n <= subordinate, and
    /// never before the secondary bus number is programmed).
    pub fn routes_bus(&self, n: u8) -> bool {
        self.secondary != 0 && self.secondary <= n && n <= self.subordinate
    }
}

/// QEMU's PCIe capability (hw/pci/pcie.c `pcie_cap_init`, version 2, 0x3c
/// bytes) for a function of device/port `port_type`, its registers as QEMU
/// 7.2 shows them (read back from qemu-system-x86_64 -M q35 through ECAM).
/// `slot`: (physical slot number) for a root port with a slot.
pub fn pcie_capability_body(port_type: u8, port: u8, slot: Option<u16>) -> [u8; 0x3a] {
    let mut b = [0u8; 0x3a];
    let mut put = |off: usize, v: &[u8]| b[off - 2..off - 2 + v.len()].copy_from_slice(v);
    // Offsets below are from the capability start (ID at 0).
    let flags: u16 = 0x2 | u16::from(port_type) << 4 | if slot.is_some() { 0x100 } else { 0 };
    put(0x02, &flags.to_le_bytes());
    // Device capabilities: role-based error reporting.
    put(0x04, &0x0000_8000u32.to_le_bytes());
    match port_type {
        PCIE_TYPE_ROOT_PORT => {
            // Link: 16 GT/s x32 (QEMU's x-speed/x-width defaults), DLL link
            // active reporting and bandwidth notification, port number.
            put(
                0x0c,
                &(0x0030_0604u32 | u32::from(port) << 24).to_le_bytes(),
            );
            // Link status: 2.5 GT/s x1 negotiated.
            put(0x12, &0x0011u16.to_le_bytes());
        }
        _ => {
            put(0x0c, &0x0000_0411u32.to_le_bytes()); // 2.5 GT/s x1 (`pcie_cap_fill_link_ep_usp`)
            put(0x12, &0x0011u16.to_le_bytes());
        }
    }
    if let Some(psn) = slot {
        // Slot capabilities: attention button, power controller, attention
        // and power indicators, hot-plug surprise and capable, electromechanical
        // interlock; the physical slot number in bits 31:19.
        put(0x14, &(0x0002_007bu32 | u32::from(psn) << 19).to_le_bytes());
        // Slot control: attention indicator off, power indicator on.
        put(0x18, &0x01c0u16.to_le_bytes());
    }
    // Device capabilities 2: ARI forwarding, extended fmt field and
    // end-end TLP prefix support (QEMU's `pcie_cap_arifwd_init`, v2 defaults).
    put(0x24, &0x0030_0020u32.to_le_bytes());
    // Link capabilities/control 2: the supported speeds vector and target.
    let (lcap2, lctl2) = if port_type == PCIE_TYPE_ROOT_PORT {
        (0x1eu32, 0x4u16)
    } else {
        (0, 0)
    };
    put(0x2c, &lcap2.to_le_bytes());
    put(0x30, &lctl2.to_le_bytes());
    b
}

/// PCIe capability device/port types (PCIe 5.0 §7.5.3.2).
pub const PCIE_TYPE_ROOT_PORT: u8 = 0x4;
pub const PCIE_TYPE_PCI_BRIDGE: u8 = 0x7;

/// Makes the PCIe capability at `cap`'s control registers writable as
/// QEMU does: device control, link control, slot control, root control.
pub fn pcie_capability_masks(c: &mut PciConfigSpace, cap: usize, slot: bool, root: bool) {
    c.set_writable(cap + 0x08, &0x7ffeu16.to_le_bytes()); // device control
    c.set_writable(cap + 0x10, &0x0dffu16.to_le_bytes()); // link control (bits QEMU keeps)
    if slot {
        c.set_writable(cap + 0x18, &0x1fffu16.to_le_bytes()); // slot control
    }
    if root {
        c.set_writable(cap + 0x1c, &0x001fu16.to_le_bytes()); // root control
        c.set_writable(cap + 0x28, &0x0020u16.to_le_bytes()); // ARI forwarding enable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(c: &PciConfigSpace) -> BridgeState {
        BridgeState::read(|r| c.read(r))
    }

    #[test]
    fn windows_decode_like_qemus_query_pci() {
        let mut c = type1_config(0x1b36, 0x000c, 0);
        assert_eq!(c.read(3) >> 16 & 0xff, 1, "header type 1");
        assert_eq!(c.read(2) >> 8, 0x060400);
        assert_eq!(
            c.read(11),
            0,
            "no subsystem: 0x2c is the pref limit upper half"
        );
        // Zeroed windows: QEMU's -S query-pci of a pcie-pci-bridge.
        let s = state(&c);
        assert_eq!(
            s.io,
            BridgeRange {
                base: 0,
                limit: 0xfff
            }
        );
        assert_eq!(
            s.memory,
            BridgeRange {
                base: 0,
                limit: 0xfffff
            }
        );
        disable_base_limit(&mut c);
        // A root port after reset: 0xf000/0xfff, 0xfff00000/0xfffff.
        let s = state(&c);
        assert_eq!((s.io.base, s.io.limit), (0xf000, 0xfff));
        assert_eq!((s.memory.base, s.memory.limit), (0xfff0_0000, 0xfffff));
        assert_eq!(
            (s.prefetchable.base, s.prefetchable.limit),
            (0xfff0_0000, 0xfffff)
        );
        // What SeaBIOS programs into pci.1 (QEMU 7.2 dump at 00:01.0).
        c.write(6, 0, &0x0002_0100u32.to_le_bytes());
        c.write(7, 0, &0x0000_c0c0u32.to_le_bytes());
        c.write(8, 0, &0xfdb0_fd80u32.to_le_bytes());
        c.write(9, 0, &0xfeb1_fea1u32.to_le_bytes());
        c.write(1, 0, &0x0103u16.to_le_bytes());
        let s = state(&c);
        assert_eq!((s.primary, s.secondary, s.subordinate), (0, 1, 2));
        assert_eq!((s.io.base, s.io.limit), (0xc000, 0xcfff));
        assert_eq!((s.memory.base, s.memory.limit), (0xfd80_0000, 0xfdbf_ffff));
        assert_eq!(
            (s.prefetchable.base, s.prefetchable.limit),
            (0xfea0_0000, 0xfebf_ffff)
        );
        assert!(s.routes_bus(1) && s.routes_bus(2) && !s.routes_bus(3) && !s.routes_bus(0));
        assert!(s.forwards(false, 0xfd80_0000, 0x1000));
        assert!(s.forwards(false, 0xfeb0_0000, 0x10_0000));
        assert!(
            !s.forwards(false, 0xfdbf_f000, 0x2000),
            "straddles the limit"
        );
        assert!(s.forwards(true, 0xc000, 0x40));
        assert!(!s.forwards(true, 0xd000, 0x40));
        // The prefetchable window's upper halves move it above 4 GiB.
        c.write(10, 0, &1u32.to_le_bytes());
        c.write(11, 0, &1u32.to_le_bytes());
        assert_eq!(state(&c).prefetchable.base, 0x1_fea0_0000);
        // Memory decode off: nothing is forwarded.
        c.write(1, 0, &0x0001u16.to_le_bytes());
        assert!(!state(&c).forwards(false, 0xfd80_0000, 0x1000));
        c.reset();
        assert_eq!(state(&c).secondary, 0);
        assert!(!state(&c).routes_bus(0));
    }

    #[test]
    fn read_only_bits_stay() {
        let mut c = type1_config(0x1b36, 0x000e, 0);
        c.write(7, 0, &[0xff, 0xff, 0xff, 0xff]);
        assert_eq!(c.read(7) & 0xffff, 0xf0f0, "16-bit I/O: type nibble 0");
        c.write(9, 0, &[0xff; 4]);
        assert_eq!(c.read(9), 0xfff1_fff1, "64-bit prefetchable type nibble");
        c.write(15, 2, &[0xff, 0xff]);
        assert_eq!(c.read(15) >> 16, 0x0bff);
    }
}
