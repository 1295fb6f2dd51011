//! Guest physical memory layout (docs/platform.md) and the e820 map that
//! describes it.

use vm_memory::GuestAddress;

use crate::BootError;

/// End of conventional memory below the EBDA.
pub const EBDA_START: u64 = 0x9_fc00;
/// End of the EBDA / start of the VGA hole.
pub const EBDA_END: u64 = 0xa_0000;
/// BIOS area holding the ACPI tables (RSDP at its start).
pub const BIOS_AREA_START: u64 = 0xe_0000;
/// 1 MiB: start of extended memory.
pub const HIGH_MEMORY_START: u64 = 0x10_0000;
/// q35's split of RAM below 4 GiB (QEMU hw/i386/pc_q35.c `pc_q35_init`):
/// RAM below 4 GiB ends at `LOW_RAM_MAX`, or at `LOW_RAM_LARGE` when the
/// guest has `LOW_RAM_MAX` bytes or more, so that the ECAM SeaBIOS programs at
/// 0xb000_0000 never overlaps RAM; the rest goes above 4 GiB.
pub const LOW_RAM_MAX: u64 = 0xb000_0000;
pub const LOW_RAM_LARGE: u64 = 0x8000_0000;
/// 32-bit PCI MMIO window: from the end of ECAM to the IOAPIC, as QEMU's DSDT
/// gives PCI0 once SeaBIOS programmed the chipset.
pub const PCI_MMIO32_START: u64 = 0xc000_0000;
pub const PCI_MMIO32_SIZE: u64 = IOAPIC_ADDR - PCI_MMIO32_START;
/// PCIe ECAM (MCFG), buses 0-255: 1 MiB per bus, where SeaBIOS puts it on q35
/// (src/fw/pciinit.c `mch_mem_addr_setup`); direct boot programs the same.
pub const ECAM_START: u64 = 0xb000_0000;
pub const ECAM_SIZE: u64 = 0x1000_0000;
/// The BIOS area whose mapping the q35 PAM registers choose (0xc0000-0xfffff).
pub const PAM_AREA_START: u64 = 0xc_0000;
/// KVM's real-mode TSS (3 pages) and identity-map page, where QEMU puts them
/// (target/i386/kvm/kvm.c `kvm_arch_init`): below any BIOS ROM of up to 16 MiB,
/// reserved in e820.
pub const KVM_IDENTITY_MAP_ADDR: u64 = 0xfeff_c000;
pub const KVM_TSS_ADDR: u64 = 0xfeff_d000;
pub const KVM_RESERVED_SIZE: u64 = 0x4000;
/// IOAPIC and local APIC MMIO.
pub const IOAPIC_ADDR: u64 = 0xfec0_0000;
pub const LAPIC_ADDR: u64 = 0xfee0_0000;
/// RAM above the PCI hole starts at 4 GiB.
pub const HIGH_RAM_START: u64 = 0x1_0000_0000;
/// The 64-bit PCI window: `PCI_MMIO64_SIZE` bytes starting at the first
/// 1 GiB boundary at or above the end of RAM (and at least 4 GiB).
pub const PCI_MMIO64_ALIGN: u64 = 0x4000_0000;
pub const PCI_MMIO64_SIZE: u64 = 0x10_0000_0000; // 64 GiB
/// The smallest RAM size we can boot anything with: the boot structures,
/// ACPI tables and at least 1 MiB of extended memory.
pub const MIN_RAM: u64 = 2 << 20;

/// e820 range types (ACPI spec, "System Address Map Interfaces").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum E820Type {
    Ram = 1,
    Reserved = 2,
    Acpi = 3,
    Nvs = 4,
}

/// One entry of the guest's physical memory map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct E820Entry {
    pub addr: u64,
    pub size: u64,
    pub kind: E820Type,
}

impl E820Entry {
    pub fn end(&self) -> u64 {
        self.addr + self.size
    }
}

/// The guest's RAM size and everything derived from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryLayout {
    pub ram_bytes: u64,
}

impl MemoryLayout {
    pub fn new(ram_bytes: u64) -> Self {
        MemoryLayout { ram_bytes }
    }

    /// Fails when RAM is too small to hold the boot structures.
    pub fn validate(&self) -> Result<(), BootError> {
        if self.ram_bytes < MIN_RAM {
            return Err(BootError::RamTooSmall {
                ram: self.ram_bytes,
                min: MIN_RAM,
            });
        }
        Ok(())
    }

    /// End of RAM below 4 GiB: all of RAM below 0xb000_0000 bytes, else
    /// 0x8000_0000 (q35's split).
    pub fn low_end(&self) -> u64 {
        if self.ram_bytes >= LOW_RAM_MAX {
            LOW_RAM_LARGE
        } else {
            self.ram_bytes
        }
    }

    /// Bytes of RAM mapped at 4 GiB.
    pub fn high_bytes(&self) -> u64 {
        self.ram_bytes - self.low_end()
    }

    /// One past the last RAM byte's address.
    pub fn ram_end(&self) -> u64 {
        if self.high_bytes() > 0 {
            HIGH_RAM_START + self.high_bytes()
        } else {
            self.low_end()
        }
    }

    /// The RAM regions to back with host memory: `[0, low_end)` (the EBDA and
    /// BIOS area are RAM-backed: the ACPI tables live there) and, when RAM
    /// exceeds the low limit, `[4 GiB, 4 GiB + high)`.
    pub fn ram_regions(&self) -> Vec<(GuestAddress, usize)> {
        let mut regions = vec![(GuestAddress(0), self.low_end() as usize)];
        if self.high_bytes() > 0 {
            regions.push((GuestAddress(HIGH_RAM_START), self.high_bytes() as usize));
        }
        regions
    }

    /// The 64-bit PCI MMIO window `(base, size)`, just above RAM.
    pub fn pci_mmio64_window(&self) -> (u64, u64) {
        let end = self.ram_end().max(HIGH_RAM_START);
        let base = end.div_ceil(PCI_MMIO64_ALIGN) * PCI_MMIO64_ALIGN;
        (base, PCI_MMIO64_SIZE)
    }

    /// Whether `[addr, addr + len)` lies entirely in one RAM region.
    pub fn is_ram(&self, addr: u64, len: u64) -> bool {
        let Some(end) = addr.checked_add(len) else {
            return false;
        };
        self.ram_regions()
            .iter()
            .any(|&(start, size)| addr >= start.0 && end <= start.0 + size as u64)
    }

    /// The map QEMU hands SeaBIOS in fw_cfg `etc/e820` (hw/i386/pc.c
    /// `pc_memory_init` and `kvm_arch_init`): RAM below and above 4 GiB and
    /// the KVM pages; the firmware adds what it reserves itself.
    pub fn firmware_e820(&self) -> Vec<E820Entry> {
        let mut map = vec![E820Entry {
            addr: 0,
            size: self.low_end(),
            kind: E820Type::Ram,
        }];
        if self.high_bytes() > 0 {
            map.push(E820Entry {
                addr: HIGH_RAM_START,
                size: self.high_bytes(),
                kind: E820Type::Ram,
            });
        }
        map.push(E820Entry {
            addr: KVM_IDENTITY_MAP_ADDR,
            size: KVM_RESERVED_SIZE,
            kind: E820Type::Reserved,
        });
        map
    }

    /// The e820 map per docs/platform.md. Assumes `validate()` passed.
    pub fn e820(&self) -> Vec<E820Entry> {
        let low_end = self.low_end();
        let e = |addr: u64, end: u64, kind| E820Entry {
            addr,
            size: end - addr,
            kind,
        };
        let mut map = vec![
            e(0, EBDA_START.min(low_end), E820Type::Ram),
            e(EBDA_START, EBDA_END, E820Type::Reserved),
            e(BIOS_AREA_START, HIGH_MEMORY_START, E820Type::Reserved),
        ];
        if low_end > HIGH_MEMORY_START {
            map.push(e(HIGH_MEMORY_START, low_end, E820Type::Ram));
        }
        map.push(e(ECAM_START, ECAM_START + ECAM_SIZE, E820Type::Reserved));
        map.push(e(
            KVM_IDENTITY_MAP_ADDR,
            KVM_IDENTITY_MAP_ADDR + KVM_RESERVED_SIZE,
            E820Type::Reserved,
        ));
        if self.high_bytes() > 0 {
            map.push(e(
                HIGH_RAM_START,
                HIGH_RAM_START + self.high_bytes(),
                E820Type::Ram,
            ));
        }
        map
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    #[test]
    fn small_ram_has_one_region() {
        let l = MemoryLayout::new(128 * MIB);
        assert_eq!(l.low_end(), 128 * MIB);
        assert_eq!(l.high_bytes(), 0);
        assert_eq!(
            l.ram_regions(),
            vec![(GuestAddress(0), (128 * MIB) as usize)]
        );
        assert_eq!(l.pci_mmio64_window(), (4 * GIB, 64 * GIB));
        let map = l.e820();
        assert_eq!(
            map,
            vec![
                E820Entry {
                    addr: 0,
                    size: 0x9fc00,
                    kind: E820Type::Ram
                },
                E820Entry {
                    addr: 0x9fc00,
                    size: 0x400,
                    kind: E820Type::Reserved
                },
                E820Entry {
                    addr: 0xe0000,
                    size: 0x20000,
                    kind: E820Type::Reserved
                },
                E820Entry {
                    addr: MIB,
                    size: 127 * MIB,
                    kind: E820Type::Ram
                },
                E820Entry {
                    addr: 0xb000_0000,
                    size: 0x1000_0000,
                    kind: E820Type::Reserved
                },
                E820Entry {
                    addr: 0xfeff_c000,
                    size: 0x4000,
                    kind: E820Type::Reserved
                },
            ]
        );
    }

    #[test]
    fn large_ram_splits_at_2g() {
        // QEMU q35: 5 GiB is at least 0xb000_0000, so 2 GiB low and 3 GiB high.
        let l = MemoryLayout::new(5 * GIB);
        assert_eq!(l.low_end(), 2 * GIB);
        assert_eq!(l.high_bytes(), 3 * GIB);
        assert_eq!(
            l.ram_regions(),
            vec![
                (GuestAddress(0), (2 * GIB) as usize),
                (GuestAddress(4 * GIB), (3 * GIB) as usize)
            ]
        );
        let map = l.e820();
        assert_eq!(map.len(), 7);
        assert_eq!(
            map[3],
            E820Entry {
                addr: MIB,
                size: 2 * GIB - MIB,
                kind: E820Type::Ram
            }
        );
        assert_eq!(
            map[6],
            E820Entry {
                addr: 4 * GIB,
                size: 3 * GIB,
                kind: E820Type::Ram
            }
        );
        assert_eq!(l.pci_mmio64_window(), (7 * GIB, 64 * GIB));
        // Entries are sorted and disjoint.
        for w in map.windows(2) {
            assert!(w[0].end() <= w[1].addr);
        }
    }

    #[test]
    fn the_split_follows_qemu_q35() {
        // hw/i386/pc_q35.c: below 0xb0000000 bytes all RAM is low; from there
        // on low RAM ends at 2 GiB, so ECAM at 0xb0000000 never overlaps it.
        let cases = [
            (2816 * MIB - 1, 2816 * MIB - 1, 0),
            (2816 * MIB, 2 * GIB, 768 * MIB),
            (3 * GIB, 2 * GIB, GIB),
        ];
        for (ram, low, high) in cases {
            let l = MemoryLayout::new(ram);
            assert_eq!((l.low_end(), l.high_bytes()), (low, high), "{ram:#x}");
            assert!(l.low_end() <= ECAM_START);
        }
    }

    #[test]
    fn firmware_e820_is_qemus() {
        let l = MemoryLayout::new(3 * GIB);
        assert_eq!(
            l.firmware_e820(),
            vec![
                E820Entry {
                    addr: 0,
                    size: 2 * GIB,
                    kind: E820Type::Ram
                },
                E820Entry {
                    addr: 4 * GIB,
                    size: GIB,
                    kind: E820Type::Ram
                },
                E820Entry {
                    addr: 0xfeff_c000,
                    size: 0x4000,
                    kind: E820Type::Reserved
                },
            ]
        );
    }

    #[test]
    fn is_ram_checks_holes() {
        let l = MemoryLayout::new(5 * GIB);
        assert!(l.is_ram(MIB, 4096));
        assert!(!l.is_ram(2 * GIB - 4096, 8192));
        assert!(l.is_ram(4 * GIB, 3 * GIB));
        assert!(!l.is_ram(4 * GIB, 3 * GIB + 1));
        assert!(!l.is_ram(u64::MAX, 2));
    }

    #[test]
    fn validate_rejects_tiny_ram() {
        assert!(MemoryLayout::new(MIB).validate().is_err());
        assert!(MemoryLayout::new(MIN_RAM).validate().is_ok());
    }
}
