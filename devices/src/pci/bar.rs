//! Base address registers (PCI Local Bus 3.0 §6.2.5.1): kinds, what a BAR
//! decodes, and the build-time allocator the VMM uses on direct boot, where
//! no firmware assigns addresses.

use super::{PciAddress, PciError, COMMAND_IO, COMMAND_MEMORY};

/// Bit 0 of a BAR: I/O space.
pub const BAR_IO: u32 = 0x1;
/// Bits 2:1 = 10b: a 64-bit memory BAR.
pub const BAR_MEM_TYPE_64: u32 = 0x4;
/// Bit 3 of a memory BAR.
pub const BAR_MEM_PREFETCH: u32 = 0x8;

/// What a BAR maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BarKind {
    Io,
    Memory32 {
        prefetchable: bool,
    },
    /// Takes this BAR and the next (the high dword).
    Memory64 {
        prefetchable: bool,
    },
}

impl BarKind {
    /// The read-only low bits of the BAR register.
    pub fn flags(self) -> u32 {
        match self {
            BarKind::Io => BAR_IO,
            BarKind::Memory32 { prefetchable } => u32::from(prefetchable) * BAR_MEM_PREFETCH,
            BarKind::Memory64 { prefetchable } => {
                BAR_MEM_TYPE_64 | (u32::from(prefetchable) * BAR_MEM_PREFETCH)
            }
        }
    }

    /// Address bits below this are flags.
    pub(crate) fn flag_mask(self) -> u64 {
        match self {
            BarKind::Io => 0x3,
            _ => 0xf,
        }
    }

    pub fn space(self) -> BarSpace {
        match self {
            BarKind::Io => BarSpace::Io,
            _ => BarSpace::Memory,
        }
    }

    pub fn is_64bit(self) -> bool {
        matches!(self, BarKind::Memory64 { .. })
    }

    pub fn prefetchable(self) -> bool {
        matches!(
            self,
            BarKind::Memory32 { prefetchable: true } | BarKind::Memory64 { prefetchable: true }
        )
    }

    /// Whether `size` is a valid size for this kind: a power of two, at least
    /// 4 bytes for I/O (at most 256, PCI 3.0 §6.2.5.1) and 16 for memory, and
    /// within the address width.
    pub fn valid_size(self, size: u64) -> bool {
        size.is_power_of_two()
            && match self {
                BarKind::Io => (4..=256).contains(&size),
                BarKind::Memory32 { .. } => (16..=1 << 31).contains(&size),
                BarKind::Memory64 { .. } => (16..=1 << 63).contains(&size),
            }
    }
}

/// The address space a BAR decodes in: the port I/O bus or the MMIO bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BarSpace {
    Io,
    Memory,
}

/// A decoded BAR: `size` bytes at `base` in `space`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BarWindow {
    pub space: BarSpace,
    pub base: u64,
    pub size: u64,
}

/// One implemented BAR of a function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PciBar {
    /// 0-5; a 64-bit BAR also occupies `index + 1`.
    pub index: u8,
    pub kind: BarKind,
    pub size: u64,
    /// The address the BAR registers hold (flags stripped).
    pub address: u64,
    /// What the function decodes now: `None` while the command register's
    /// enable bit for the BAR's space is clear or the address is unusable
    /// (QEMU hw/pci/pci.c `pci_bar_address`: zero, wrapping, a 32-bit BAR
    /// ending at or above 4 GiB, an I/O BAR beyond the 64 KiB port space).
    pub window: Option<BarWindow>,
}

impl PciBar {
    /// Decodes a BAR at `address` given the command register.
    pub fn decode(index: u8, kind: BarKind, size: u64, address: u64, command: u16) -> Self {
        let enable = match kind.space() {
            BarSpace::Io => COMMAND_IO,
            BarSpace::Memory => COMMAND_MEMORY,
        };
        let base = address & !(size.wrapping_sub(1));
        let last = base.checked_add(size.wrapping_sub(1));
        let limit = match kind {
            BarKind::Io => 0xffff,
            BarKind::Memory32 { .. } => u64::from(u32::MAX) - 1,
            BarKind::Memory64 { .. } => u64::MAX - 1,
        };
        let usable = command & enable != 0
            && base != 0
            && size != 0
            && last.is_some_and(|l| l > base && l <= limit);
        PciBar {
            index,
            kind,
            size,
            address,
            window: usable.then_some(BarWindow {
                space: kind.space(),
                base,
                size,
            }),
        }
    }
}

/// The address windows the VMM hands out BARs from, each `[start, end)`.
///
/// ferrovm's (crates/boot/src/layout.rs): 32-bit MMIO 0xc000_0000..0xe000_0000
/// (ECAM follows at 0xe000_0000), 64-bit MMIO above RAM
/// (`MemoryLayout::pci_mmio64_window`), I/O 0xc000..0x1_0000.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PciWindows {
    pub io: (u64, u64),
    pub mmio32: (u64, u64),
    /// Where 64-bit BARs go; `None` puts them in `mmio32` too.
    pub mmio64: Option<(u64, u64)>,
}

impl PciWindows {
    /// The I/O window firmware uses on a PC: 0xc000..0x10000.
    pub const IO_DEFAULT: (u64, u64) = (0xc000, 0x1_0000);
}

/// A bump allocator over one window with natural alignment.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WindowAllocator {
    next: u64,
    end: u64,
    pub(crate) name: &'static str,
}

impl WindowAllocator {
    pub(crate) fn new((start, end): (u64, u64), name: &'static str) -> Self {
        Self {
            next: start,
            end,
            name,
        }
    }

    /// `size` bytes aligned to `size` (a power of two), or `None` if full.
    #[cfg(test)]
    pub(crate) fn allocate(&mut self, size: u64) -> Option<u64> {
        self.allocate_aligned(size, size)
    }

    /// Where the next allocation would start.
    pub(crate) fn peek(&self) -> u64 {
        self.next
    }

    /// `size` bytes at a multiple of `align`, or `None` if full.
    pub(crate) fn allocate_aligned(&mut self, size: u64, align: u64) -> Option<u64> {
        let base = self.next.checked_next_multiple_of(align)?;
        let end = base.checked_add(size)?;
        (end <= self.end).then(|| {
            self.next = end;
            base
        })
    }
}

/// Which window a BAR comes from, by kind.
pub(crate) fn window_for(kind: BarKind, has_mmio64: bool) -> usize {
    match kind {
        BarKind::Io => 0,
        BarKind::Memory64 { .. } if has_mmio64 => 2,
        _ => 1,
    }
}

/// The error for a BAR that did not fit.
pub(crate) fn no_space(addr: PciAddress, bar: &PciBar, name: &'static str) -> PciError {
    PciError::NoBarSpace {
        addr,
        bar: bar.index,
        size: bar.size,
        space: name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_follows_qemu_pci_bar_address() {
        let mem = BarKind::Memory32 {
            prefetchable: false,
        };
        let on = COMMAND_MEMORY;
        let w = |b: PciBar| b.window.map(|w| (w.base, w.size));
        assert_eq!(
            w(PciBar::decode(0, mem, 0x1000, 0xfe00_0000, on)),
            Some((0xfe00_0000, 0x1000))
        );
        assert_eq!(
            w(PciBar::decode(0, mem, 0x1000, 0xfe00_0000, COMMAND_IO)),
            None,
            "memory decode off"
        );
        assert_eq!(
            w(PciBar::decode(0, mem, 0x1000, 0, on)),
            None,
            "address 0 is unmapped"
        );
        assert_eq!(
            w(PciBar::decode(0, mem, 0x1000, 0xffff_f000, on)),
            None,
            "32-bit BAR ending at 4G-1"
        );
        let mem64 = BarKind::Memory64 { prefetchable: true };
        assert_eq!(
            w(PciBar::decode(4, mem64, 0x4000, 0x8_0000_0000, on)),
            Some((0x8_0000_0000, 0x4000))
        );
        assert_eq!(
            w(PciBar::decode(4, mem64, 0x4000, 0xffff_ffff_ffff_c000, on)),
            None,
            "the sizing pattern does not decode"
        );
        assert_eq!(
            w(PciBar::decode(0, BarKind::Io, 0x40, 0xc040, COMMAND_IO)),
            Some((0xc040, 0x40))
        );
        assert_eq!(
            w(PciBar::decode(0, BarKind::Io, 0x40, 0xffc0, COMMAND_IO)),
            Some((0xffc0, 0x40))
        );
        assert_eq!(
            w(PciBar::decode(0, BarKind::Io, 0x40, 0x1_0000, COMMAND_IO)),
            None,
            "past port 0xffff"
        );
    }

    #[test]
    fn allocator_aligns_naturally_and_stops_at_the_end() {
        let mut a = WindowAllocator::new((0xc000_0000 + 0x100, 0xc000_4000), "mmio32");
        assert_eq!(a.allocate(0x1000), Some(0xc000_1000));
        assert_eq!(a.allocate(0x10), Some(0xc000_2000));
        assert_eq!(
            a.allocate(0x2000),
            None,
            "0xc0002010 rounds up to 0xc0004000, the end"
        );
        assert_eq!(a.allocate(0x1000), Some(0xc000_3000));
    }
}
