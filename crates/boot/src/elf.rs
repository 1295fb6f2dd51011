//! ELF kernels for the PVH boot protocol.
//!
//! Our own parser rather than `linux_loader::loader::Elf`, which reads
//! ELF64 only (a PVH kernel may be ELF32), leaves p_memsz beyond p_filesz
//! (the BSS) untouched — stale after a guest reset —, lets a later PT_NOTE
//! without the PVH note overwrite an earlier one that has it, and writes
//! segments wherever p_paddr says without checking them against the RAM map.
//! This one works on an in-memory image (the decompressed bzImage payload is
//! one) and checks every offset and size it reads.

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::layout::{MemoryLayout, HIGH_MEMORY_START};
use crate::BootError;

const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
const EM_386: u16 = 3;
const EM_X86_64: u16 = 62;
/// XEN_ELFNOTE_PHYS32_ENTRY: 32-bit physical entry point of the PVH ABI.
pub const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

/// A PT_LOAD segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub offset: u64,
    pub paddr: u64,
    pub filesz: u64,
    pub memsz: u64,
}

/// What the loader needs from an ELF file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElfInfo {
    pub class64: bool,
    pub entry: u64,
    /// The PVH entry point, when the file carries the note.
    pub pvh_entry: Option<u32>,
    pub segments: Vec<Segment>,
}

fn bad(msg: impl Into<String>) -> BootError {
    BootError::InvalidElf(msg.into())
}

/// Bounds-checked little-endian reader over the file.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn bytes(&self, at: u64, len: u64) -> Result<&'a [u8], BootError> {
        let end = at.checked_add(len).ok_or_else(|| bad("offset overflow"))?;
        if end > self.0.len() as u64 {
            return Err(bad(format!(
                "range {at:#x}+{len:#x} beyond the end of the file ({:#x})",
                self.0.len()
            )));
        }
        Ok(&self.0[at as usize..end as usize])
    }
    fn u16(&self, at: u64) -> Result<u16, BootError> {
        let b = self.bytes(at, 2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&self, at: u64) -> Result<u32, BootError> {
        let b = self.bytes(at, 4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&self, at: u64) -> Result<u64, BootError> {
        let b = self.bytes(at, 8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    /// A word of the class's natural size.
    fn word(&self, class64: bool, at: u64) -> Result<u64, BootError> {
        if class64 {
            self.u64(at)
        } else {
            self.u32(at).map(u64::from)
        }
    }
}

pub fn is_elf(data: &[u8]) -> bool {
    data.starts_with(b"\x7fELF")
}

/// Parses the ELF header, program headers and notes. Trailing data after
/// what the headers describe is allowed (the kernel appends relocations).
pub fn parse(data: &[u8]) -> Result<ElfInfo, BootError> {
    let r = Reader(data);
    if !is_elf(data) {
        return Err(bad("no ELF magic"));
    }
    let ident = r.bytes(0, 16)?;
    let class64 = match ident[4] {
        1 => false,
        2 => true,
        c => return Err(bad(format!("unknown ELF class {c}"))),
    };
    if ident[5] != 1 {
        return Err(bad("not little-endian"));
    }
    let machine = r.u16(18)?;
    if machine != EM_X86_64 && machine != EM_386 {
        return Err(bad(format!("machine {machine} is not x86")));
    }
    let (entry, phoff, phentsize, phnum, want_phentsize) = if class64 {
        (r.u64(24)?, r.u64(32)?, r.u16(54)?, r.u16(56)?, 56)
    } else {
        (
            u64::from(r.u32(24)?),
            u64::from(r.u32(28)?),
            r.u16(42)?,
            r.u16(44)?,
            32,
        )
    };
    if phentsize != want_phentsize {
        return Err(bad(format!("program header size {phentsize}")));
    }
    let mut info = ElfInfo {
        class64,
        entry,
        pvh_entry: None,
        segments: Vec::new(),
    };
    for i in 0..u64::from(phnum) {
        let ph = phoff
            .checked_add(i * u64::from(phentsize))
            .ok_or_else(|| bad("program header offset overflow"))?;
        r.bytes(ph, u64::from(phentsize))?;
        let p_type = r.u32(ph)?;
        // (offset, paddr, filesz, memsz, align) differ in place per class.
        let (offset, paddr, filesz, memsz, align) = if class64 {
            (
                r.u64(ph + 8)?,
                r.u64(ph + 24)?,
                r.u64(ph + 32)?,
                r.u64(ph + 40)?,
                r.u64(ph + 48)?,
            )
        } else {
            (
                r.word(false, ph + 4)?,
                r.word(false, ph + 12)?,
                r.word(false, ph + 16)?,
                r.word(false, ph + 20)?,
                r.word(false, ph + 28)?,
            )
        };
        match p_type {
            PT_LOAD => {
                if filesz > memsz {
                    return Err(bad(format!("segment {i}: p_filesz > p_memsz")));
                }
                r.bytes(offset, filesz)?;
                if memsz > 0 {
                    info.segments.push(Segment {
                        offset,
                        paddr,
                        filesz,
                        memsz,
                    });
                }
            }
            PT_NOTE => {
                let notes = r.bytes(offset, filesz)?;
                if let Some(e) = find_pvh_note(notes, if align == 8 { 8 } else { 4 })? {
                    info.pvh_entry.get_or_insert(e);
                }
            }
            _ => {}
        }
    }
    if info.segments.is_empty() {
        return Err(bad("no loadable segment"));
    }
    Ok(info)
}

/// Scans one note segment for the Xen PHYS32 entry note.
fn find_pvh_note(notes: &[u8], align: u64) -> Result<Option<u32>, BootError> {
    let r = Reader(notes);
    let up = |v: u64| v.div_ceil(align) * align;
    let mut at = 0u64;
    while at + 12 <= notes.len() as u64 {
        let namesz = u64::from(r.u32(at)?);
        let descsz = u64::from(r.u32(at + 4)?);
        let ty = r.u32(at + 8)?;
        let name_at = at + 12;
        let desc_at = name_at + up(namesz);
        let name = r.bytes(name_at, namesz)?;
        let desc = r.bytes(desc_at, descsz)?;
        if ty == XEN_ELFNOTE_PHYS32_ENTRY && name == b"Xen\0" {
            if desc.len() < 4 {
                return Err(bad("PVH note descriptor shorter than 4 bytes"));
            }
            return Ok(Some(u32::from_le_bytes([
                desc[0], desc[1], desc[2], desc[3],
            ])));
        }
        at = desc_at + up(descsz);
    }
    Ok(None)
}

/// Copies the PT_LOAD segments to their physical addresses and zeroes their
/// BSS. Every segment must lie in RAM at or above 1 MiB (below is ours: boot
/// structures and ACPI tables). Returns the end of the highest segment.
pub fn load(
    mem: &GuestMemoryMmap,
    data: &[u8],
    info: &ElfInfo,
    layout: &MemoryLayout,
) -> Result<u64, BootError> {
    for s in &info.segments {
        if s.paddr < HIGH_MEMORY_START || !layout.is_ram(s.paddr, s.memsz) {
            return Err(BootError::SegmentOutsideRam {
                addr: s.paddr,
                size: s.memsz,
            });
        }
    }
    let mut end = 0;
    let zeros = vec![0u8; 1 << 16];
    for s in &info.segments {
        let bytes = Reader(data).bytes(s.offset, s.filesz)?;
        write(mem, s.paddr, bytes)?;
        let mut at = s.paddr + s.filesz;
        let seg_end = s.paddr + s.memsz;
        while at < seg_end {
            let n = (seg_end - at).min(zeros.len() as u64) as usize;
            write(mem, at, &zeros[..n])?;
            at += n as u64;
        }
        end = end.max(seg_end);
    }
    Ok(end)
}

pub(crate) fn write(mem: &GuestMemoryMmap, addr: u64, bytes: &[u8]) -> Result<(), BootError> {
    mem.write_slice(bytes, GuestAddress(addr))
        .map_err(|_| BootError::GuestMemory {
            addr,
            len: bytes.len() as u64,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{build_elf, guest_mem, ElfSpec, BODY_OFFSET};

    const MIB: u64 = 1 << 20;

    #[test]
    fn parses_elf64_with_pvh_note_after_another_note() {
        let spec = ElfSpec::default();
        let info = parse(&build_elf(&spec)).unwrap();
        assert!(info.class64);
        assert_eq!(info.pvh_entry, Some(0x10_0100));
        assert_eq!(info.segments.len(), 1);
        let s = info.segments[0];
        assert_eq!(s.paddr, 0x10_0000);
        assert_eq!(s.memsz, s.filesz + spec.bss);
    }

    #[test]
    fn parses_elf32() {
        let spec = ElfSpec {
            class64: false,
            ..Default::default()
        };
        let info = parse(&build_elf(&spec)).unwrap();
        assert!(!info.class64);
        assert_eq!(info.pvh_entry, Some(0x10_0100));
        assert_eq!(info.segments[0].paddr, 0x10_0000);
    }

    #[test]
    fn no_note_means_no_pvh_entry() {
        let spec = ElfSpec {
            pvh_entry: None,
            ..Default::default()
        };
        assert_eq!(parse(&build_elf(&spec)).unwrap().pvh_entry, None);
    }

    #[test]
    fn loads_segments_and_zeroes_bss() {
        let layout = MemoryLayout::new(16 * MIB);
        let mem = guest_mem(&layout);
        let spec = ElfSpec::default();
        let elf = build_elf(&spec);
        let info = parse(&elf).unwrap();
        // Dirty the BSS as a previous boot would have.
        let bss_at = spec.paddr + elf.len() as u64;
        mem.write_slice(&vec![0xcc; spec.bss as usize], GuestAddress(bss_at))
            .unwrap();
        let end = load(&mem, &elf, &info, &layout).unwrap();
        assert_eq!(end, bss_at + spec.bss);
        let mut body = vec![0u8; spec.body.len()];
        mem.read_slice(&mut body, GuestAddress(spec.paddr + BODY_OFFSET as u64))
            .unwrap();
        assert_eq!(body, spec.body);
        let mut bss = vec![0xffu8; spec.bss as usize];
        mem.read_slice(&mut bss, GuestAddress(bss_at)).unwrap();
        assert!(bss.iter().all(|&b| b == 0));
    }

    #[test]
    fn segments_outside_ram_are_refused() {
        let layout = MemoryLayout::new(4 * MIB);
        let mem = guest_mem(&layout);
        for paddr in [0x8000u64, 4 * MIB - 0x100, 0xc000_0000, u64::MAX - 0x10] {
            let spec = ElfSpec {
                paddr,
                ..Default::default()
            };
            let elf = build_elf(&spec);
            let info = parse(&elf).unwrap();
            assert!(
                matches!(
                    load(&mem, &elf, &info, &layout),
                    Err(BootError::SegmentOutsideRam { .. })
                ),
                "{paddr:#x}"
            );
        }
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        for class64 in [true, false] {
            let elf = build_elf(&ElfSpec {
                class64,
                ..Default::default()
            });
            // Cutting into the headers or the notes must fail; cutting the
            // body is caught because PT_LOAD covers the whole file.
            for len in 0..elf.len() {
                assert!(parse(&elf[..len]).is_err(), "class64={class64} len={len}");
            }
        }
    }

    #[test]
    fn corrupted_fields_are_errors() {
        let elf = build_elf(&ElfSpec::default());
        let set = |at: usize, v: &[u8]| {
            let mut e = elf.clone();
            e[at..at + v.len()].copy_from_slice(v);
            e
        };
        assert!(parse(&set(4, &[3])).is_err(), "class");
        assert!(parse(&set(5, &[2])).is_err(), "endianness");
        assert!(parse(&set(18, &[40, 0])).is_err(), "machine");
        assert!(parse(&set(54, &[55, 0])).is_err(), "phentsize");
        assert!(parse(&set(32, &u64::MAX.to_le_bytes())).is_err(), "phoff");
        assert!(parse(&set(56, &[0xff, 0xff])).is_err(), "phnum");
        // PT_LOAD p_offset huge, p_filesz huge, filesz > memsz.
        assert!(parse(&set(64 + 8, &u64::MAX.to_le_bytes())).is_err());
        assert!(parse(&set(64 + 32, &u64::MAX.to_le_bytes())).is_err());
        assert!(parse(&set(64 + 40, &1u64.to_le_bytes())).is_err());
        // PT_NOTE: a note whose namesz runs off the segment.
        let notes_off = 64 + 2 * 56;
        assert!(parse(&set(notes_off, &u32::MAX.to_le_bytes())).is_err());
        assert!(parse(&set(notes_off + 4, &0x1000u32.to_le_bytes())).is_err());
        // No loadable segment: PT_LOAD turned into PT_NULL.
        assert!(parse(&set(64, &[0, 0, 0, 0])).is_err());
    }

    #[test]
    fn fuzzish_random_bytes_do_not_panic() {
        let elf = build_elf(&ElfSpec::default());
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..2000 {
            let mut e = elf.clone();
            for _ in 0..4 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let at = (x as usize) % 0x100;
                e[at] = (x >> 32) as u8;
            }
            let _ = parse(&e);
        }
    }
}
