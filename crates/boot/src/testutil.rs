//! Test helpers: guest memory, synthetic PVH ELF and bzImage files.

use std::path::PathBuf;

use vm_memory::GuestMemoryMmap;

use crate::layout::MemoryLayout;

pub fn guest_mem(layout: &MemoryLayout) -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&layout.ram_regions()).unwrap()
}

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name)
}

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(testdata(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

/// The uncompressed fixture: `build_elf(&ElfSpec::default())`.
pub const PVH_FIXTURE: &str = "pvh64.bin";

/// [`PVH_FIXTURE`] compressed by each tool a kernel build may use.
pub const COMPRESSED_FIXTURES: &[(&str, crate::Compression)] = &[
    ("pvh64.bin.gz", crate::Compression::Gzip),
    ("pvh64.bin.xz", crate::Compression::Xz),
    ("pvh64.bin.lzma", crate::Compression::Lzma),
    ("pvh64.bin.zst", crate::Compression::Zstd),
    ("pvh64.bin.lz4", crate::Compression::Lz4),
];

/// A minimal kernel-like ELF: one PT_LOAD covering the whole file (headers
/// included) plus `bss` zero bytes, and a PT_NOTE holding an unrelated note
/// and, optionally, the PVH entry note.
#[derive(Debug, Clone)]
pub struct ElfSpec {
    pub class64: bool,
    pub paddr: u64,
    /// XEN_ELFNOTE_PHYS32_ENTRY value; `None` leaves the note out.
    pub pvh_entry: Option<u32>,
    /// Code/data placed at file offset 0x100.
    pub body: Vec<u8>,
    pub bss: u64,
}

pub const BODY_OFFSET: usize = 0x100;

impl Default for ElfSpec {
    fn default() -> Self {
        let mut body = b"ferrovm synthetic PVH kernel\0".to_vec();
        // Something compressible but not trivial.
        for i in 0..4096u32 {
            body.push((i.wrapping_mul(2_654_435_761) >> 24) as u8 & 0x0f);
        }
        // x86 near calls, which the xz BCJ filter rewrites.
        for i in 0..64u8 {
            body.extend_from_slice(&[0xe8, i, 0x10, 0x00, 0x00, 0x90, 0x90]);
        }
        ElfSpec {
            class64: true,
            paddr: 0x10_0000,
            pvh_entry: Some(0x10_0000 + BODY_OFFSET as u32),
            body,
            bss: 0x2000,
        }
    }
}

fn note(name: &[u8], ty: u32, desc: &[u8]) -> Vec<u8> {
    let mut n = Vec::new();
    n.extend_from_slice(&(name.len() as u32).to_le_bytes());
    n.extend_from_slice(&(desc.len() as u32).to_le_bytes());
    n.extend_from_slice(&ty.to_le_bytes());
    n.extend_from_slice(name);
    n.resize(n.len().div_ceil(4) * 4, 0);
    n.extend_from_slice(desc);
    n.resize(n.len().div_ceil(4) * 4, 0);
    n
}

pub fn build_elf(spec: &ElfSpec) -> Vec<u8> {
    let (ehsize, phentsize) = if spec.class64 { (64, 56) } else { (52, 32) };
    let phoff = ehsize;
    let notes_off = phoff + 2 * phentsize;
    let mut notes = note(b"GNU\0", 3, &[1, 2, 3, 4, 5, 6, 7, 8, 9]);
    if let Some(entry) = spec.pvh_entry {
        notes.extend(note(b"Xen\0", 18, &entry.to_le_bytes()));
    }
    assert!(notes_off + notes.len() <= BODY_OFFSET);
    let filesz = (BODY_OFFSET + spec.body.len()) as u64;
    let memsz = filesz + spec.bss;
    let entry = spec.paddr.wrapping_add(BODY_OFFSET as u64);

    let mut f = vec![0u8; BODY_OFFSET];
    f.extend_from_slice(&spec.body);
    f[0..4].copy_from_slice(b"\x7fELF");
    f[4] = if spec.class64 { 2 } else { 1 };
    f[5] = 1; // little endian
    f[6] = 1; // EV_CURRENT
    let put16 =
        |f: &mut Vec<u8>, at: usize, v: u16| f[at..at + 2].copy_from_slice(&v.to_le_bytes());
    let put32 =
        |f: &mut Vec<u8>, at: usize, v: u32| f[at..at + 4].copy_from_slice(&v.to_le_bytes());
    let put64 =
        |f: &mut Vec<u8>, at: usize, v: u64| f[at..at + 8].copy_from_slice(&v.to_le_bytes());
    put16(&mut f, 16, 2); // ET_EXEC
    put16(&mut f, 18, if spec.class64 { 62 } else { 3 });
    put32(&mut f, 20, 1);
    if spec.class64 {
        put64(&mut f, 24, entry);
        put64(&mut f, 32, phoff as u64);
        put16(&mut f, 52, ehsize as u16);
        put16(&mut f, 54, phentsize as u16);
        put16(&mut f, 56, 2);
        // PT_LOAD
        let p = phoff;
        put32(&mut f, p, 1);
        put32(&mut f, p + 4, 7);
        put64(&mut f, p + 8, 0);
        put64(&mut f, p + 16, spec.paddr);
        put64(&mut f, p + 24, spec.paddr);
        put64(&mut f, p + 32, filesz);
        put64(&mut f, p + 40, memsz);
        put64(&mut f, p + 48, 0x1000);
        // PT_NOTE
        let p = phoff + phentsize;
        put32(&mut f, p, 4);
        put32(&mut f, p + 4, 4);
        put64(&mut f, p + 8, notes_off as u64);
        put64(&mut f, p + 32, notes.len() as u64);
        put64(&mut f, p + 40, notes.len() as u64);
        put64(&mut f, p + 48, 4);
    } else {
        put32(&mut f, 24, entry as u32);
        put32(&mut f, 28, phoff as u32);
        put16(&mut f, 40, ehsize as u16);
        put16(&mut f, 42, phentsize as u16);
        put16(&mut f, 44, 2);
        let p = phoff;
        put32(&mut f, p, 1);
        put32(&mut f, p + 4, 0);
        put32(&mut f, p + 8, spec.paddr as u32);
        put32(&mut f, p + 12, spec.paddr as u32);
        put32(&mut f, p + 16, filesz as u32);
        put32(&mut f, p + 20, memsz as u32);
        put32(&mut f, p + 24, 7);
        put32(&mut f, p + 28, 0x1000);
        let p = phoff + phentsize;
        put32(&mut f, p, 4);
        put32(&mut f, p + 4, notes_off as u32);
        put32(&mut f, p + 16, notes.len() as u32);
        put32(&mut f, p + 20, notes.len() as u32);
        put32(&mut f, p + 28, 4);
    }
    f[notes_off..notes_off + notes.len()].copy_from_slice(&notes);
    f
}

/// A synthetic bzImage: real-mode setup sectors with a setup header, then
/// the protected-mode part: 0x400 bytes of "code" (a marker at 0x200, the
/// 64-bit entry) followed by the payload.
#[derive(Debug, Clone)]
pub struct BzSpec {
    pub version: u16,
    pub setup_sects: u8,
    pub loadflags: u8,
    pub xloadflags: u16,
    pub code32_start: u32,
    pub initrd_addr_max: u32,
    pub cmdline_size: u32,
    pub pref_address: u64,
    pub init_size: u32,
    /// Compressed payload, without the size word (appended here).
    pub payload: Vec<u8>,
    /// Uncompressed size written after the payload.
    pub payload_size: u32,
}

pub const BZ_PAYLOAD_OFFSET: usize = 0x400;
pub const BZ_ENTRY64_MARKER: &[u8] = b"startup_64 here";

impl Default for BzSpec {
    fn default() -> Self {
        BzSpec {
            version: 0x020f,
            setup_sects: 4,
            loadflags: 0x01,
            xloadflags: 0x03,
            code32_start: 0x10_0000,
            initrd_addr_max: 0x7fff_ffff,
            cmdline_size: 2047,
            pref_address: 0x100_0000,
            init_size: 0x40_0000,
            payload: b"not compressed at all".to_vec(),
            payload_size: 0,
        }
    }
}

pub fn build_bzimage(spec: &BzSpec) -> Vec<u8> {
    let setup_len = (spec.setup_sects as usize + 1) * 512;
    let mut f = vec![0u8; setup_len];
    let put16 =
        |f: &mut Vec<u8>, at: usize, v: u16| f[at..at + 2].copy_from_slice(&v.to_le_bytes());
    let put32 =
        |f: &mut Vec<u8>, at: usize, v: u32| f[at..at + 4].copy_from_slice(&v.to_le_bytes());
    f[0x1f1] = spec.setup_sects;
    put16(&mut f, 0x1fe, 0xaa55);
    f[0x200] = 0xeb;
    f[0x201] = 0x6a; // header ends at 0x26c
    f[0x202..0x206].copy_from_slice(b"HdrS");
    put16(&mut f, 0x206, spec.version);
    f[0x211] = spec.loadflags;
    put32(&mut f, 0x214, spec.code32_start);
    put32(&mut f, 0x22c, spec.initrd_addr_max);
    put32(&mut f, 0x230, 0x20_0000);
    f[0x234] = 1;
    put16(&mut f, 0x236, spec.xloadflags);
    put32(&mut f, 0x238, spec.cmdline_size);
    put32(&mut f, 0x248, BZ_PAYLOAD_OFFSET as u32);
    put32(&mut f, 0x24c, spec.payload.len() as u32 + 4);
    f[0x258..0x260].copy_from_slice(&spec.pref_address.to_le_bytes());
    put32(&mut f, 0x260, spec.init_size);

    let mut pm = vec![0x90u8; BZ_PAYLOAD_OFFSET];
    pm[0x200..0x200 + BZ_ENTRY64_MARKER.len()].copy_from_slice(BZ_ENTRY64_MARKER);
    pm.extend_from_slice(&spec.payload);
    pm.extend_from_slice(&spec.payload_size.to_le_bytes());
    pm.extend_from_slice(b"trailing setup data");
    f.extend_from_slice(&pm);
    f
}

/// Writes `testdata/pvh64.bin` and compresses it with the tools (and the
/// options) the kernel build uses. Run by hand after changing
/// `ElfSpec::default()`: `cargo test -p boot regenerate_fixtures -- --ignored`.
#[test]
#[ignore]
fn regenerate_fixtures() {
    use std::process::Command;
    let elf = build_elf(&ElfSpec::default());
    let src = testdata(PVH_FIXTURE);
    std::fs::write(&src, &elf).unwrap();
    let run = |cmd: &str, args: &[&str], out: &str| {
        // From stdin, as the kernel build does (`cat vmlinux.bin | xz ...`):
        // lzma then writes an unknown size and an end marker.
        let input = std::fs::File::open(&src).unwrap();
        let o = Command::new(cmd).args(args).stdin(input).output().unwrap();
        assert!(
            o.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        std::fs::write(testdata(out), o.stdout).unwrap();
    };
    run("gzip", &["-n", "-9", "-c"], "pvh64.bin.gz");
    run(
        "xz",
        &["--check=crc32", "--x86", "--lzma2=,dict=32MiB", "-c"],
        "pvh64.bin.xz",
    );
    run("lzma", &["-9", "-c"], "pvh64.bin.lzma");
    run("zstd", &["-22", "--ultra", "-q", "-c"], "pvh64.bin.zst");
    run("lz4", &["-l", "-9", "-c"], "pvh64.bin.lz4");
}

#[test]
fn fixture_matches_builder() {
    assert_eq!(fixture(PVH_FIXTURE), build_elf(&ElfSpec::default()));
}
