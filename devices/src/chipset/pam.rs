//! The q35 MCH's Programmable Attribute Map (Intel 3 Series datasheet §5.1.15-21;
//! QEMU hw/pci-host/pam.c): seven registers at MCH config 0x90-0x96 that decide,
//! for 13 segments of 0xc0000-0xfffff, whether reads and writes reach RAM or go
//! on to the PCI side — where the BIOS ROM's alias answers for 0xe0000-0xfffff.
//!
//! PAM0 bits 5:4 cover 0xf0000-0xfffff (64 KiB); PAM1-6 cover 16 KiB segments
//! from 0xc0000 upwards, bits 1:0 the lower and 5:4 the upper of each pair.
//! Each two-bit field: 0 = to PCI, 1 = reads from RAM (writes to PCI),
//! 2 = writes to RAM (reads from PCI), 3 = RAM.
//!
//! SeaBIOS (src/fw/shadow.c) sets everything to 3, copies itself from the ROM
//! alias at 4 GiB into RAM, and at the end of POST locks its own segments
//! read-only (1) and leaves the rest of 0xc0000-0xeffff as RAM.

use std::sync::{Arc, Mutex};

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::bus::BusDevice;

/// MCH configuration offset of PAM0.
pub const PAM0: usize = 0x90;
pub const PAM_REGS: usize = 7;
/// The guest-writable bits of each PAM register (QEMU `MCH_HOST_BRIDGE_PAM_WMASK`).
pub const PAM_WMASK: u8 = 0x33;
pub const PAM_START: u64 = 0xc_0000;
pub const PAM_END: u64 = 0x10_0000;
/// The ROM alias: the last 128 KiB of the BIOS image appear at 0xe0000 (QEMU's "isa-bios").
pub const ROM_ALIAS_START: u64 = 0xe_0000;
pub const ROM_ALIAS_SIZE: u64 = PAM_END - ROM_ALIAS_START;
pub const SEGMENTS: usize = 13;

/// What one segment's two bits select.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PamMode {
    Pci = 0,
    ReadRam = 1,
    WriteRam = 2,
    Ram = 3,
}

impl PamMode {
    fn from_bits(bits: u8) -> Self {
        match bits & 3 {
            0 => PamMode::Pci,
            1 => PamMode::ReadRam,
            2 => PamMode::WriteRam,
            _ => PamMode::Ram,
        }
    }
}

/// The register values that make the whole area plain RAM (what SeaBIOS
/// writes to unlock it; direct boot starts with them).
pub const PAM_ALL_RAM: [u8; PAM_REGS] = [0x30, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33];

/// `(start, length)` of segment `i`: 0..12 are the 16 KiB ones from 0xc0000,
/// 12 is 0xf0000-0xfffff.
pub fn segment(i: usize) -> (u64, u64) {
    if i < 12 {
        (PAM_START + 0x4000 * i as u64, 0x4000)
    } else {
        (0xf_0000, 0x1_0000)
    }
}

/// The mode of each segment under `regs`.
pub fn modes(regs: &[u8; PAM_REGS]) -> [PamMode; SEGMENTS] {
    let mut m = [PamMode::Pci; SEGMENTS];
    for (i, mode) in m.iter_mut().enumerate().take(12) {
        let reg = regs[1 + i / 2];
        let bits = if i % 2 == 0 { reg } else { reg >> 4 };
        *mode = PamMode::from_bits(bits);
    }
    m[12] = PamMode::from_bits(regs[0] >> 4);
    m
}

/// How a range of the area is mapped for the vCPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PamBacking {
    /// Guest RAM, read and write.
    Ram,
    /// Guest RAM, read-only: writes are dropped.
    RamReadOnly,
    /// The BIOS ROM's alias, read-only.
    Rom,
    /// Nothing mapped: accesses reach [`PamArea`].
    Unmapped,
}

/// One contiguous range of equal backing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PamMapping {
    pub start: u64,
    pub len: u64,
    pub backing: PamBacking,
}

/// The area's mappings under `regs`, merged into maximal runs. `rom_alias`
/// says whether a BIOS ROM is there to alias (firmware boot).
pub fn mappings(regs: &[u8; PAM_REGS], rom_alias: bool) -> Vec<PamMapping> {
    let mut out: Vec<PamMapping> = Vec::new();
    for (i, mode) in modes(regs).into_iter().enumerate() {
        let (start, len) = segment(i);
        let backing = match mode {
            PamMode::Ram => PamBacking::Ram,
            PamMode::ReadRam => PamBacking::RamReadOnly,
            PamMode::Pci if rom_alias && start >= ROM_ALIAS_START => PamBacking::Rom,
            // Reads go to PCI (or the ROM alias) while writes reach RAM: no
            // single KVM mapping does that, so PamArea emulates it.
            PamMode::Pci | PamMode::WriteRam => PamBacking::Unmapped,
        };
        match out.last_mut() {
            Some(last) if last.backing == backing && last.start + last.len == start => {
                last.len += len
            }
            _ => out.push(PamMapping {
                start,
                len,
                backing,
            }),
        }
    }
    out
}

/// The PAM registers as the MCH last saw them, shared with [`PamArea`].
pub type SharedPam = Arc<Mutex<[u8; PAM_REGS]>>;

/// The accesses to 0xc0000-0xfffff that no KVM mapping serves (they exit to
/// the VMM): reads of an unmapped segment return the ROM alias (0xe0000 and
/// up, firmware boot) or all ones; writes reach RAM only in write-only mode
/// and are dropped otherwise (read-only RAM, ROM, PCI with nothing there).
pub struct PamArea {
    pam: SharedPam,
    rom_alias: Option<Arc<[u8]>>,
    mem: GuestMemoryMmap,
}

impl PamArea {
    /// `rom_alias`: the last [`ROM_ALIAS_SIZE`] bytes of the BIOS (shorter
    /// images are right-aligned at 1 MiB); `mem` receives write-only-mode writes.
    pub fn new(pam: SharedPam, rom_alias: Option<Arc<[u8]>>, mem: GuestMemoryMmap) -> Self {
        Self {
            pam,
            rom_alias,
            mem,
        }
    }

    fn mode_at(&self, addr: u64) -> PamMode {
        let regs = *self.pam.lock().unwrap_or_else(|e| e.into_inner());
        let i = if addr >= 0xf_0000 {
            12
        } else {
            ((addr - PAM_START) / 0x4000) as usize
        };
        modes(&regs)[i.min(SEGMENTS - 1)]
    }

    fn rom_byte(&self, addr: u64) -> u8 {
        let Some(rom) = &self.rom_alias else {
            return 0xff;
        };
        // The alias is right-aligned: its last byte is at 0xfffff.
        let from_end = PAM_END - addr;
        if addr < ROM_ALIAS_START || from_end > rom.len() as u64 {
            return 0xff;
        }
        rom[rom.len() - from_end as usize]
    }
}

/// The guest address of byte `i` of an access at `offset`, if inside the area.
fn area_address(offset: u64, i: usize) -> Option<u64> {
    let addr = PAM_START.checked_add(offset)?.checked_add(i as u64)?;
    (addr < PAM_END).then_some(addr)
}

impl BusDevice for PamArea {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            let Some(addr) = area_address(offset, i) else {
                *b = 0xff;
                continue;
            };
            *b = match self.mode_at(addr) {
                PamMode::Pci | PamMode::WriteRam => self.rom_byte(addr),
                // Mapped in KVM; an access straddling into here reads RAM.
                PamMode::ReadRam | PamMode::Ram => {
                    self.mem.read_obj(GuestAddress(addr)).unwrap_or(0xff)
                }
            };
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        for (i, &b) in data.iter().enumerate() {
            let Some(addr) = area_address(offset, i) else {
                continue;
            };
            if matches!(self.mode_at(addr), PamMode::WriteRam | PamMode::Ram) {
                let _ = self.mem.write_obj(b, GuestAddress(addr));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(start: u64, len: u64, backing: PamBacking) -> PamMapping {
        PamMapping {
            start,
            len,
            backing,
        }
    }

    #[test]
    fn power_on_maps_the_rom_alias_and_leaves_c_and_d_to_pci() {
        assert_eq!(
            mappings(&[0; PAM_REGS], true),
            vec![
                m(0xc_0000, 0x2_0000, PamBacking::Unmapped),
                m(0xe_0000, 0x2_0000, PamBacking::Rom),
            ]
        );
        assert_eq!(
            mappings(&[0; PAM_REGS], false),
            vec![m(0xc_0000, 0x4_0000, PamBacking::Unmapped)]
        );
    }

    #[test]
    fn seabios_unlock_makes_one_ram_run() {
        assert_eq!(
            mappings(&PAM_ALL_RAM, true),
            vec![m(0xc_0000, 0x4_0000, PamBacking::Ram)]
        );
    }

    #[test]
    fn seabios_lock_pattern() {
        // SeaBIOS make_bios_readonly_intel on a 1.16 image: 0xf0000 read-only
        // (PAM0 = 0x10), 0xe0000-0xeffff read-only (PAM5/6 = 0x11), the rest RAM.
        let regs = [0x10, 0x33, 0x33, 0x33, 0x33, 0x11, 0x11];
        assert_eq!(
            mappings(&regs, true),
            vec![
                m(0xc_0000, 0x2_0000, PamBacking::Ram),
                m(0xe_0000, 0x2_0000, PamBacking::RamReadOnly),
            ]
        );
    }

    #[test]
    fn fields_map_to_their_segments() {
        // PAM3's upper field is 0xd4000-0xd7fff; PAM1's lower is 0xc0000.
        let mut regs = [0u8; PAM_REGS];
        regs[3] = 0x30;
        regs[1] = 0x01;
        let modes = modes(&regs);
        assert_eq!(modes[0], PamMode::ReadRam);
        assert_eq!(segment(5), (0xd_4000, 0x4000));
        assert_eq!(modes[5], PamMode::Ram);
        assert_eq!(modes.iter().filter(|&&x| x != PamMode::Pci).count(), 2);
    }

    fn area(regs: [u8; PAM_REGS], rom: Option<Vec<u8>>) -> (PamArea, GuestMemoryMmap) {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let pam = Arc::new(Mutex::new(regs));
        let a = PamArea::new(pam, rom.map(Arc::from), mem.clone());
        (a, mem)
    }

    #[test]
    fn unmapped_reads_come_from_the_rom_alias_or_float_high() {
        let rom: Vec<u8> = (0..0x2_0000u32).map(|i| (i % 251) as u8).collect();
        let (mut a, _) = area([0; PAM_REGS], Some(rom.clone()));
        let mut b = [0u8; 2];
        a.read(0xf_fff0 - PAM_START, &mut b);
        assert_eq!(
            b.to_vec(),
            rom[0x1_fff0..0x1_fff2].to_vec(),
            "reset vector area"
        );
        a.read(0xc_0000 - PAM_START, &mut b);
        assert_eq!(b, [0xff, 0xff], "no option ROM at 0xc0000");
        // A 64 KiB ROM is right-aligned: 0xe0000-0xeffff has none of it.
        let (mut a, _) = area([0; PAM_REGS], Some(vec![0x5a; 0x1_0000]));
        a.read(0xe_0000 - PAM_START, &mut b);
        assert_eq!(b, [0xff, 0xff]);
        a.read(0xf_0000 - PAM_START, &mut b);
        assert_eq!(b, [0x5a, 0x5a]);
    }

    #[test]
    fn writes_reach_ram_only_when_the_mode_lets_them() {
        let mut regs = [0u8; PAM_REGS];
        regs[1] = 0x12; // 0xc0000 write-only, 0xc4000 read-only
        let (mut a, mem) = area(regs, None);
        a.write(0, &[0xaa]);
        a.write(0x4000, &[0xbb]);
        a.write(0x8000, &[0xcc]); // PCI
        assert_eq!(mem.read_obj::<u8>(GuestAddress(0xc_0000)).unwrap(), 0xaa);
        assert_eq!(mem.read_obj::<u8>(GuestAddress(0xc_4000)).unwrap(), 0);
        assert_eq!(mem.read_obj::<u8>(GuestAddress(0xc_8000)).unwrap(), 0);
        // Write-only reads come from PCI, not the RAM just written.
        let mut b = [0u8];
        a.read(0, &mut b);
        assert_eq!(b, [0xff]);
    }

    #[test]
    fn accesses_past_the_area_never_panic() {
        let (mut a, _) = area([0x33; PAM_REGS], Some(vec![1; 0x2_0000]));
        let mut b = [0u8; 8];
        a.read(0x3_fffc, &mut b);
        a.write(0x3_fffc, &b);
        a.read(u64::MAX - 8, &mut b);
    }
}
