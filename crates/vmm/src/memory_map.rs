//! The KVM memory slots of the machine: guest RAM, the BIOS ROM below 4 GiB,
//! and the q35 PAM area 0xc0000-0xfffff, whose slots follow the MCH's PAM
//! registers (devices::chipset::pam) — RAM, read-only RAM, the ROM's alias or
//! nothing (then accesses exit to `PamArea`).
//!
//! One owner for every slot: it registers them all on a new VM (before the
//! in-kernel irqchip exists: see `register_all`) and applies PAM changes as
//! the firmware writes them. A PAM change only touches the slots whose
//! mapping changed; each KVM_SET_USER_MEMORY_REGION after the irqchip
//! exists waits for an SRCU grace period (milliseconds), and SeaBIOS writes
//! the PAM registers about a dozen times per boot.

use std::sync::{Arc, Mutex};

use devices::chipset::pam::{self, PamBacking, PamMapping, PAM_REGS};
use kvm_bindings::{kvm_userspace_memory_region, KVM_MEM_READONLY};
use kvm_ioctls::VmFd;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::error::VmmError;

/// Slot numbers: fixed ones from 0, the PAM area's from here (plus the
/// index of the mapping's first segment).
const PAM_SLOT_BASE: u32 = 32;

/// A KVM slot as registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    slot: u32,
    gpa: u64,
    size: u64,
    host: u64,
    readonly: bool,
}

/// The BIOS image, mapped read-only just below 4 GiB.
pub struct BiosRom {
    /// Host memory holding the image (its guest address is where it is mapped).
    mem: GuestMemoryMmap,
    pub base: u64,
    pub size: u64,
}

impl BiosRom {
    /// `image` mapped so that its last byte is at 0xffffffff. QEMU requires a
    /// non-empty multiple of 64 KiB (hw/i386/x86.c `x86_bios_rom_init`).
    pub fn new(image: &[u8]) -> Result<Self, String> {
        let size = image.len() as u64;
        if size == 0 || !size.is_multiple_of(0x1_0000) || size > 16 << 20 {
            return Err("size must be a non-zero multiple of 64 KiB up to 16 MiB".into());
        }
        let base = (1u64 << 32) - size;
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(base), size as usize)])
            .map_err(|e| e.to_string())?;
        vm_memory::Bytes::write_slice(&mem, image, GuestAddress(base))
            .map_err(|e| e.to_string())?;
        Ok(Self { mem, base, size })
    }

    fn host(&self, gpa: u64) -> u64 {
        self.mem
            .get_host_address(GuestAddress(gpa))
            .map(|p| p as u64)
            .unwrap_or(0)
    }

    /// The last 128 KiB (or all of a smaller image), aliased at 0xe0000.
    pub fn alias_bytes(&self) -> Arc<[u8]> {
        let len = self.size.min(pam::ROM_ALIAS_SIZE);
        let mut v = vec![0u8; len as usize];
        let _ = vm_memory::Bytes::read_slice(
            &self.mem,
            &mut v,
            GuestAddress(self.base + self.size - len),
        );
        v.into()
    }
}

struct Inner {
    // Field order: the VM goes before the memory its slots point into.
    vm: Option<Arc<VmFd>>,
    fixed: Vec<Slot>,
    pam_slots: Vec<Slot>,
    pam: [u8; PAM_REGS],
    /// Host address of guest physical 0 (low RAM is one mapping).
    low_ram_host: u64,
    rom: Option<BiosRom>,
}

#[derive(Clone)]
pub struct MemoryMap {
    inner: Arc<Mutex<Inner>>,
}

impl MemoryMap {
    /// The slots for `ram` (whose first region starts at 0 and covers the
    /// PAM area) and `rom`; the PAM area starts as `pam` says.
    pub fn new(
        ram: &GuestMemoryMmap,
        rom: Option<BiosRom>,
        pam: [u8; PAM_REGS],
    ) -> Result<Self, VmmError> {
        let low_ram_host = ram
            .get_host_address(GuestAddress(0))
            .map_err(|e| VmmError::Memory(e.to_string()))? as u64;
        let mut fixed = Vec::new();
        for region in ram.iter() {
            let (start, len) = (region.start_addr().0, region.len());
            let host = region.as_ptr() as u64;
            // The PAM area is cut out of the region that holds it.
            if start < pam::PAM_START && start + len >= pam::PAM_END {
                fixed.push((start, pam::PAM_START - start, host));
                let after = pam::PAM_END - start;
                if len > after {
                    fixed.push((pam::PAM_END, len - after, host + after));
                }
            } else {
                fixed.push((start, len, host));
            }
        }
        let mut slots: Vec<Slot> = fixed
            .into_iter()
            .enumerate()
            .map(|(i, (gpa, size, host))| Slot {
                slot: i as u32,
                gpa,
                size,
                host,
                readonly: false,
            })
            .collect();
        if let Some(r) = &rom {
            slots.push(Slot {
                slot: slots.len() as u32,
                gpa: r.base,
                size: r.size,
                host: r.host(r.base),
                readonly: true,
            });
        }
        let mut inner = Inner {
            vm: None,
            fixed: slots,
            pam_slots: Vec::new(),
            pam,
            low_ram_host,
            rom,
        };
        inner.pam_slots = inner.pam_slots_for(&pam);
        Ok(Self {
            inner: Arc::new(Mutex::new(inner)),
        })
    }

    /// The ROM alias bytes for the PAM area's exit handler, if a ROM is mapped.
    pub fn rom_alias(&self) -> Option<Arc<[u8]>> {
        crate::sync::lock(&self.inner)
            .rom
            .as_ref()
            .map(BiosRom::alias_bytes)
    }

    /// Registers every slot on `vm` and keeps it for later PAM changes. Call
    /// it before KVM_CREATE_IRQCHIP: measured on this project's hosts, the
    /// first slot added after the in-kernel irqchip exists costs 5-8 ms (an
    /// SRCU grace period), against 0.03 ms before it.
    pub fn register_all(&self, vm: &Arc<VmFd>) -> Result<(), VmmError> {
        let mut inner = crate::sync::lock(&self.inner);
        for s in inner.fixed.iter().chain(inner.pam_slots.iter()) {
            set_slot(vm, s, false)?;
        }
        inner.vm = Some(vm.clone());
        Ok(())
    }

    /// Forgets the VM (it is being replaced); PAM changes until the next
    /// `register_all` only update the state.
    pub fn release(&self) {
        crate::sync::lock(&self.inner).vm = None;
    }

    /// The MCH's PAM registers changed: remap the slots that differ.
    pub fn set_pam(&self, regs: [u8; PAM_REGS]) -> Result<(), VmmError> {
        let mut inner = crate::sync::lock(&self.inner);
        inner.pam = regs;
        let new = inner.pam_slots_for(&regs);
        if let Some(vm) = inner.vm.clone() {
            // Deletions first: a slot may not overlap another.
            for old in inner.pam_slots.iter().filter(|s| !new.contains(s)) {
                set_slot(&vm, old, true)?;
            }
            for s in new.iter().filter(|s| !inner.pam_slots.contains(s)) {
                set_slot(&vm, s, false)?;
            }
        }
        inner.pam_slots = new;
        Ok(())
    }
}

impl Inner {
    fn pam_slots_for(&self, regs: &[u8; PAM_REGS]) -> Vec<Slot> {
        pam::mappings(regs, self.rom.is_some())
            .into_iter()
            .filter_map(|m| self.pam_slot(m))
            .collect()
    }

    fn pam_slot(&self, m: PamMapping) -> Option<Slot> {
        let first = (0..pam::SEGMENTS).find(|&i| pam::segment(i).0 == m.start)? as u32;
        let (host, readonly) = match m.backing {
            PamBacking::Ram => (self.low_ram_host + m.start, false),
            PamBacking::RamReadOnly => (self.low_ram_host + m.start, true),
            PamBacking::Rom => {
                let rom = self.rom.as_ref()?;
                // The alias is the ROM's tail, right-aligned at 1 MiB.
                let from_end = pam::PAM_END - m.start;
                if from_end > rom.size {
                    return None;
                }
                (rom.host(rom.base + rom.size - from_end), true)
            }
            PamBacking::Unmapped => return None,
        };
        Some(Slot {
            slot: PAM_SLOT_BASE + first,
            gpa: m.start,
            size: m.len,
            host,
            readonly,
        })
    }
}

fn set_slot(vm: &VmFd, s: &Slot, delete: bool) -> Result<(), VmmError> {
    let r = kvm_userspace_memory_region {
        slot: s.slot,
        flags: if s.readonly { KVM_MEM_READONLY } else { 0 },
        guest_phys_addr: s.gpa,
        memory_size: if delete { 0 } else { s.size },
        userspace_addr: s.host,
    };
    // SAFETY: every host range belongs to guest RAM or the BIOS ROM mapping,
    // which outlive the VM: the Machine drops the VM before its memory, and
    // Inner keeps the ROM after its VM reference.
    unsafe { vm.set_user_memory_region(r) }
        .map_err(|e| VmmError::Kvm("KVM_SET_USER_MEMORY_REGION", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pam: [u8; PAM_REGS]) -> (MemoryMap, GuestMemoryMmap) {
        let ram = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 16 << 20)]).unwrap();
        let image: Vec<u8> = (0..0x4_0000u32).map(|i| (i >> 12) as u8).collect();
        let rom = BiosRom::new(&image).unwrap();
        (MemoryMap::new(&ram, Some(rom), pam).unwrap(), ram)
    }

    #[test]
    fn ram_slots_leave_the_pam_area_out_and_the_rom_sits_below_4g() {
        let (m, ram) = map([0; PAM_REGS]);
        let inner = crate::sync::lock(&m.inner);
        let host0 = ram.get_host_address(GuestAddress(0)).unwrap() as u64;
        let f: Vec<(u64, u64, u64, bool)> = inner
            .fixed
            .iter()
            .map(|s| {
                (
                    s.gpa,
                    s.size,
                    s.host - if s.readonly { 0 } else { host0 },
                    s.readonly,
                )
            })
            .collect();
        assert_eq!(f[0], (0, 0xc_0000, 0, false));
        assert_eq!(f[1], (0x10_0000, (16 << 20) - 0x10_0000, 0x10_0000, false));
        assert_eq!((f[2].0, f[2].1, f[2].3), (0xfffc_0000, 0x4_0000, true));
    }

    #[test]
    fn power_on_maps_the_roms_last_128k_at_0xe0000() {
        let (m, _) = map([0; PAM_REGS]);
        let inner = crate::sync::lock(&m.inner);
        let rom = inner.rom.as_ref().unwrap();
        assert_eq!(inner.pam_slots.len(), 1, "0xc0000-0xdffff unmapped");
        let s = inner.pam_slots[0];
        assert_eq!((s.gpa, s.size, s.readonly), (0xe_0000, 0x2_0000, true));
        assert_eq!(s.host, rom.host(0xfffe_0000));
        drop(inner);
        // The reset vector's page is the same bytes through either address.
        let alias = m.rom_alias().unwrap();
        assert_eq!(alias.len(), 0x2_0000);
        assert_eq!(alias[0x1_fff0], (0x3_fff0u32 >> 12) as u8);
    }

    #[test]
    fn pam_changes_replace_only_what_changed() {
        let (m, _) = map([0; PAM_REGS]);
        m.set_pam(devices::chipset::pam::PAM_ALL_RAM).unwrap();
        let ram_run = crate::sync::lock(&m.inner).pam_slots.clone();
        assert_eq!(ram_run.len(), 1);
        assert_eq!(
            (ram_run[0].gpa, ram_run[0].size, ram_run[0].readonly),
            (0xc_0000, 0x4_0000, false)
        );
        // SeaBIOS's lock: its own segments read-only, the rest RAM.
        m.set_pam([0x10, 0x33, 0x33, 0x33, 0x33, 0x11, 0x11])
            .unwrap();
        let inner = crate::sync::lock(&m.inner);
        let s: Vec<(u64, u64, bool)> = inner
            .pam_slots
            .iter()
            .map(|s| (s.gpa, s.size, s.readonly))
            .collect();
        assert_eq!(
            s,
            vec![(0xc_0000, 0x2_0000, false), (0xe_0000, 0x2_0000, true)]
        );
        let slots: Vec<u32> = inner.pam_slots.iter().map(|s| s.slot).collect();
        assert_eq!(
            slots,
            vec![PAM_SLOT_BASE, PAM_SLOT_BASE + 8],
            "ids by first segment"
        );
        assert_eq!(
            inner.pam_slots[1].host,
            inner.low_ram_host + 0xe_0000,
            "RAM, not ROM"
        );
    }

    #[test]
    fn bios_images_are_checked_as_qemu_checks_them() {
        assert!(BiosRom::new(&[]).is_err());
        assert!(BiosRom::new(&[0; 0x1_8000]).is_err());
        assert!(BiosRom::new(&vec![0; 17 << 20]).is_err());
        assert_eq!(BiosRom::new(&[0; 0x2_0000]).unwrap().base, 0xfffe_0000);
    }
}
