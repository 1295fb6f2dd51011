//! Parse back what `build_acpi` wrote, from guest memory, and check it.

use super::*;
use crate::testutil::guest_mem;

const MIB: u64 = 1 << 20;

fn cfg(cpus: u8, max_cpus: u8, ram: u64) -> AcpiConfig {
    AcpiConfig::new(cpus, max_cpus, MemoryLayout::new(ram))
}

fn read(mem: &GuestMemoryMmap, addr: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
    v
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes(b[off..off + 2].try_into().unwrap())
}
fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}
fn sum(b: &[u8]) -> u8 {
    b.iter().fold(0u8, |a, x| a.wrapping_add(*x))
}

/// Reads a whole SDT, checking its signature, length and checksum.
fn table(mem: &GuestMemoryMmap, addr: u64, sig: &[u8; 4]) -> Vec<u8> {
    let hdr = read(mem, addr, 36);
    assert_eq!(&hdr[0..4], sig, "signature at {addr:#x}");
    let len = u32_at(&hdr, 4) as usize;
    assert!(len >= 36);
    let t = read(mem, addr, len);
    assert_eq!(sum(&t), 0, "{} checksum", String::from_utf8_lossy(sig));
    assert_eq!(&t[10..16], b"FERROV");
    t
}

struct Parsed {
    xsdt_entries: Vec<u64>,
    fadt: Vec<u8>,
    facs: Vec<u8>,
    dsdt: Vec<u8>,
    madt: Vec<u8>,
    mcfg: Vec<u8>,
}

fn parse(mem: &GuestMemoryMmap, rsdp: GuestAddress) -> Parsed {
    assert_eq!(rsdp, GuestAddress(0xe0000));
    let r = read(mem, rsdp.0, 36);
    assert_eq!(&r[0..8], b"RSD PTR ");
    assert_eq!(sum(&r[0..20]), 0, "RSDP checksum");
    assert_eq!(sum(&r), 0, "RSDP extended checksum");
    assert_eq!(r[15], 2, "RSDP revision");
    assert_eq!(u32_at(&r, 16), 0, "no RSDT");
    assert_eq!(u32_at(&r, 20), 36, "RSDP length");
    let xsdt_addr = u64_at(&r, 24);

    let xsdt = table(mem, xsdt_addr, b"XSDT");
    let xsdt_entries: Vec<u64> = xsdt[36..].chunks(8).map(|c| u64_at(c, 0)).collect();
    assert_eq!(xsdt_entries.len(), 3);
    let fadt = table(mem, xsdt_entries[0], b"FACP");
    let madt = table(mem, xsdt_entries[1], b"APIC");
    let mcfg = table(mem, xsdt_entries[2], b"MCFG");
    let dsdt = table(mem, u64_at(&fadt, 140), b"DSDT");
    let facs_addr = u64_at(&fadt, 132);
    assert_eq!(facs_addr % 64, 0, "FACS alignment");
    let facs = read(mem, facs_addr, 64);
    assert_eq!(&facs[0..4], b"FACS");
    assert_eq!(u32_at(&facs, 4), 64);
    // Every table lies in the BIOS area.
    for a in &xsdt_entries {
        assert!((ACPI_START..ACPI_END).contains(a));
    }
    Parsed {
        xsdt_entries,
        fadt,
        facs,
        dsdt,
        madt,
        mcfg,
    }
}

fn build(c: &AcpiConfig) -> (GuestMemoryMmap, Parsed) {
    let mem = guest_mem(&c.layout);
    let rsdp = build_acpi(&mem, c).unwrap();
    let p = parse(&mem, rsdp);
    (mem, p)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[test]
fn fadt_fields() {
    let (_, p) = build(&cfg(2, 4, 128 * MIB));
    let f = &p.fadt;
    assert_eq!(f.len(), 276);
    assert_eq!(f[8], 6, "FADT major revision");
    assert_eq!(f[131], 5, "FADT minor revision");
    assert_eq!(u32_at(f, 36), 0, "FIRMWARE_CTRL: X_FIRMWARE_CTRL is used");
    assert_eq!(u32_at(f, 40), 0, "DSDT: X_DSDT is used");
    assert_ne!(u64_at(f, 132), 0, "X_FIRMWARE_CTRL");
    assert_ne!(u64_at(f, 140), 0, "X_DSDT");
    assert_eq!(u16_at(f, 46), 9, "SCI_INT");
    assert_eq!(u32_at(f, 48), 0, "SMI_CMD");
    assert_eq!((f[52], f[53]), (0, 0), "ACPI_ENABLE/DISABLE");
    assert_eq!(u32_at(f, 56), 0x600, "PM1a_EVT_BLK");
    assert_eq!(u32_at(f, 60), 0, "PM1b_EVT_BLK");
    assert_eq!(u32_at(f, 64), 0x604, "PM1a_CNT_BLK");
    assert_eq!(u32_at(f, 76), 0x608, "PM_TMR_BLK");
    assert_eq!(u32_at(f, 80), 0x620, "GPE0_BLK");
    assert_eq!(u32_at(f, 84), 0, "GPE1_BLK");
    assert_eq!(f[88], 4, "PM1_EVT_LEN");
    assert_eq!(f[89], 2, "PM1_CNT_LEN");
    assert_eq!(f[91], 4, "PM_TMR_LEN");
    assert_eq!(f[92], 16, "GPE0_BLK_LEN");
    assert!(u16_at(f, 96) > 100 && u16_at(f, 98) > 1000, "no C2/C3");
    assert_eq!(f[108], 0x32, "CENTURY");
    assert_eq!(
        u16_at(f, 109),
        0b111,
        "IAPC_BOOT_ARCH: legacy devices, 8042, no VGA"
    );
    let flags = u32_at(f, 112);
    assert_ne!(flags & (1 << 0), 0, "WBINVD");
    assert_ne!(flags & (1 << 2), 0, "PROC_C1");
    assert_eq!(
        flags & (1 << 4),
        0,
        "PWR_BUTTON clear: fixed-feature power button"
    );
    assert_ne!(flags & (1 << 5), 0, "SLP_BUTTON set: no sleep button");
    assert_eq!(flags & (1 << 8), 0, "TMR_VAL_EXT clear: 24-bit timer");
    assert_ne!(flags & (1 << 10), 0, "RESET_REG_SUP");
    assert_eq!(flags & (1 << 20), 0, "not HW_REDUCED_ACPI");
    // RESET_REG: system I/O, 8 bits, port 0xcf9; value 6.
    assert_eq!(&f[116..120], &[1, 8, 0, 1]);
    assert_eq!(u64_at(f, 120), 0xcf9);
    assert_eq!(f[128], 6);
    // X_ blocks: (offset, port, bit width).
    for (off, port, bits) in [
        (148, 0x600, 32),
        (172, 0x604, 16),
        (208, 0x608, 32),
        (220, 0x620, 128),
    ] {
        assert_eq!(f[off], 1, "X_ block at {off} in system I/O");
        assert_eq!(f[off + 1], bits, "X_ block at {off} width");
        assert_eq!(u64_at(f, off + 4), port, "X_ block at {off} address");
    }
    // Unused X_ blocks are zero.
    for off in [160, 184, 196, 232, 244, 256] {
        assert!(
            f[off..off + 12].iter().all(|&b| b == 0),
            "X_ block at {off}"
        );
    }
}

#[test]
fn facs_is_valid() {
    let (_, p) = build(&cfg(1, 1, 128 * MIB));
    assert_eq!(p.facs[32], 1, "FACS version");
}

#[test]
fn madt_entries() {
    let (_, p) = build(&cfg(2, 4, 128 * MIB));
    let m = &p.madt;
    assert_eq!(m[8], 5, "MADT revision (online capable needs 5)");
    assert_eq!(u32_at(m, 36), 0xfee0_0000, "local APIC address");
    assert_eq!(u32_at(m, 40), 1, "PCAT_COMPAT");
    let mut lapics = Vec::new();
    let mut ioapics = Vec::new();
    let mut isos = Vec::new();
    let mut nmis = Vec::new();
    let mut off = 44;
    while off < m.len() {
        let (ty, len) = (m[off], m[off + 1] as usize);
        assert!(len >= 2 && off + len <= m.len(), "entry at {off}");
        let e = &m[off..off + len];
        match ty {
            0 => {
                assert_eq!(len, 8);
                lapics.push((e[2], e[3], u32_at(e, 4)));
            }
            1 => {
                assert_eq!(len, 12);
                ioapics.push((e[2], u32_at(e, 4), u32_at(e, 8)));
            }
            2 => {
                assert_eq!(len, 10);
                isos.push((e[2], e[3], u32_at(e, 4), u16_at(e, 8)));
            }
            4 => {
                assert_eq!(len, 6);
                nmis.push((e[2], u16_at(e, 3), e[5]));
            }
            t => panic!("unexpected MADT entry type {t}"),
        }
        off += len;
    }
    assert_eq!(off, m.len());
    assert_eq!(lapics, vec![(0, 0, 1), (1, 1, 1), (2, 2, 2), (3, 3, 2)]);
    assert_eq!(ioapics, vec![(0, 0xfec0_0000, 0)]);
    assert_eq!(isos, vec![(0, 0, 2, 0), (0, 9, 9, 0x000d)]);
    assert_eq!(nmis, vec![(0xff, 0, 1)]);
}

#[test]
fn mcfg_ecam() {
    let (_, p) = build(&cfg(1, 1, 128 * MIB));
    let m = &p.mcfg;
    assert_eq!(m.len(), 36 + 8 + 16);
    assert_eq!(u64_at(m, 44), 0xb000_0000);
    assert_eq!(u16_at(m, 52), 0, "segment");
    assert_eq!((m[54], m[55]), (0, 255), "buses");
}

#[test]
fn dsdt_contents() {
    let (_, p) = build(&cfg(2, 3, 128 * MIB));
    let d = &p.dsdt;
    assert_eq!(d[8], 2, "DSDT revision: 64-bit integers");
    let body = &d[36..];
    // \_S5_ = Package (4) {0, 0, 0, 0}: NameOp "_S5_" PackageOp PkgLength NumElements.
    let s5 = find(body, b"_S5_").expect("_S5_");
    assert_eq!(body[s5 - 1], 0x08, "NameOp");
    assert_eq!(&body[s5 + 4..s5 + 11], &[0x12, 0x06, 0x04, 0, 0, 0, 0]);
    // EISA IDs are encoded as DWordConst; PNP0A08 = 0x080ad041.
    let eisa = |v: u32| {
        let mut b = vec![0x0c];
        b.extend_from_slice(&v.to_le_bytes());
        b
    };
    for (name, id) in [
        ("PNP0A08", 0x080a_d041u32),
        ("PNP0A03", 0x030a_d041),
        ("PNP0C02", 0x020c_d041),
        ("PNP0501", 0x0105_d041),
        ("PNP0B00", 0x000b_d041),
        ("PNP0303", 0x0303_d041),
    ] {
        let mut hid = b"_HID".to_vec();
        hid.extend(eisa(id));
        let mut cid = b"_CID".to_vec();
        cid.extend(eisa(id));
        assert!(find(body, &hid).or(find(body, &cid)).is_some(), "{name}");
    }
    for dev in [&b"PCI0"[..], b"MBRD", b"COM1", b"RTC_", b"KBD_"] {
        assert!(
            find(body, dev).is_some(),
            "{}",
            String::from_utf8_lossy(dev)
        );
    }
    // Processor devices: C000..C002, ACPI0007, _STA 0x0f for present ones.
    for (n, sta) in [(0u8, 0x0fu8), (1, 0x0f), (2, 0)] {
        let name = format!("C{n:03X}");
        let at = find(body, name.as_bytes()).unwrap_or_else(|| panic!("{name}"));
        let dev = &body[at..];
        let hid = find(dev, b"_HID\x0dACPI0007\0").unwrap();
        assert!(hid < 8, "{name} _HID");
        let uid = find(dev, b"_UID").unwrap();
        let expected: Vec<u8> = match n {
            0 => vec![0x00],
            1 => vec![0x01],
            n => vec![0x0a, n],
        };
        assert_eq!(
            &dev[uid + 4..uid + 4 + expected.len()],
            &expected[..],
            "{name} _UID"
        );
        let sta_m = find(dev, b"_STA").unwrap();
        // Method flags 0, then ReturnOp, then the value.
        let ret = &dev[sta_m + 5..(sta_m + 8).min(dev.len())];
        if sta == 0 {
            assert_eq!(&ret[..2], &[0xa4, 0x00]);
        } else {
            assert_eq!(ret, &[0xa4, 0x0a, sta]);
        }
    }
    assert!(find(body, b"C003").is_none());
    // COM1 _CRS: IO descriptor 0x3f8 length 8 and extended IRQ 4
    // (flags 0x03: consumer, edge triggered, active high, exclusive).
    assert!(find(body, &[0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x01, 0x08]).is_some());
    assert!(find(body, &[0x89, 0x06, 0x00, 0x03, 0x01, 4, 0, 0, 0]).is_some());
    // RTC: IO 0x70 length 2, IRQ 8. Keyboard: 0x60, 0x64, IRQ 1.
    assert!(find(body, &[0x47, 0x01, 0x70, 0x00, 0x70, 0x00, 0x01, 0x02]).is_some());
    assert!(find(body, &[0x89, 0x06, 0x00, 0x03, 0x01, 8, 0, 0, 0]).is_some());
    assert!(find(body, &[0x47, 0x01, 0x60, 0x00, 0x60, 0x00, 0x01, 0x01]).is_some());
    assert!(find(body, &[0x47, 0x01, 0x64, 0x00, 0x64, 0x00, 0x01, 0x01]).is_some());
    // Motherboard: ECAM as Memory32Fixed, PM block 0x600 length 0x30, 0xcf9.
    let mut ecam = vec![0x86, 0x09, 0x00, 0x01];
    ecam.extend_from_slice(&0xb000_0000u32.to_le_bytes());
    ecam.extend_from_slice(&0x1000_0000u32.to_le_bytes());
    assert!(find(body, &ecam).is_some());
    assert!(find(body, &[0x47, 0x01, 0x00, 0x06, 0x00, 0x06, 0x01, 0x30]).is_some());
    assert!(find(body, &[0x47, 0x01, 0xf9, 0x0c, 0xf9, 0x0c, 0x01, 0x01]).is_some());
}

/// Walks the resource template of `\_SB.PCI0._CRS`.
#[test]
fn pci0_crs_windows() {
    let c = cfg(1, 1, 5 << 30);
    let (_, p) = build(&c);
    let body = &p.dsdt[36..];
    let at = find(body, b"_CRS\x11").unwrap() + 5; // first _CRS is PCI0's
                                                   // PkgLength (1..4 bytes), then the buffer size as an integer.
    let lead = body[at];
    let pkg_bytes = 1 + (lead >> 6) as usize;
    let mut i = at + pkg_bytes;
    let size = match body[i] {
        0x0a => {
            i += 2;
            body[i - 1] as usize
        }
        0x0b => {
            i += 3;
            u16_at(body, i - 2) as usize
        }
        other => panic!("buffer size encoding {other:#x}"),
    };
    let res = &body[i..i + size];
    let mut words = Vec::new();
    let mut dwords = Vec::new();
    let mut qwords = Vec::new();
    let mut ios = Vec::new();
    let mut j = 0;
    loop {
        let tag = res[j];
        if tag == 0x79 {
            break; // EndTag
        }
        if tag & 0x80 == 0 {
            let len = (tag & 7) as usize;
            if tag >> 3 == 0x08 {
                ios.push((u16_at(res, j + 2), res[j + 7]));
            }
            j += 1 + len;
            continue;
        }
        let len = u16_at(res, j + 1) as usize;
        let d = &res[j + 3..j + 3 + len];
        match tag {
            0x88 => words.push((d[0], u16_at(d, 5), u16_at(d, 7), u16_at(d, 11))),
            0x87 => dwords.push((d[0], u32_at(d, 7), u32_at(d, 11), u32_at(d, 19))),
            0x8a => qwords.push((d[0], u64_at(d, 11), u64_at(d, 19), u64_at(d, 35))),
            t => panic!("unexpected large resource {t:#x}"),
        }
        j += 3 + len;
    }
    // Word: (type, min, max, length): bus 0-255, I/O 0-0xcf7 and 0xd00-0xffff.
    assert_eq!(
        words,
        vec![
            (2, 0, 0xff, 0x100),
            (1, 0, 0xcf7, 0xcf8),
            (1, 0xd00, 0xffff, 0xf300)
        ]
    );
    assert_eq!(ios, vec![(0xcf8, 8)]);
    assert_eq!(dwords, vec![(0, 0xc000_0000, 0xfebf_ffff, 0x3ec0_0000)]);
    let (base, size) = c.layout.pci_mmio64_window();
    assert_eq!(base, 7 << 30);
    assert_eq!(qwords, vec![(0, base, base + size - 1, size)]);
}

#[test]
fn acpi_area_is_cleared_beyond_the_tables() {
    let c = cfg(1, 1, 128 * MIB);
    let mem = guest_mem(&c.layout);
    mem.write_slice(&[0xaa; 0x20000], GuestAddress(ACPI_START))
        .unwrap();
    build_acpi(&mem, &c).unwrap();
    let (_, addrs) = build_tables(&c).unwrap();
    let rest = read(&mem, addrs.end, (ACPI_END - addrs.end) as usize);
    assert!(rest.iter().all(|&b| b == 0));
    let p = parse(&mem, GuestAddress(ACPI_START));
    assert_eq!(p.xsdt_entries[0], addrs.fadt);
}

#[test]
fn many_cpus_fit() {
    let (_, p) = build(&cfg(255, 255, 128 * MIB));
    let lapics = (p.madt.len() - 44 - 12 - 20 - 6) / 8;
    assert_eq!(lapics, 255);
    assert!(find(&p.dsdt, b"C0FE").is_some());
}

#[test]
fn bad_configs_are_rejected() {
    let mem = guest_mem(&MemoryLayout::new(128 * MIB));
    assert!(matches!(
        build_acpi(&mem, &cfg(0, 1, 128 * MIB)),
        Err(BootError::AcpiConfig(_))
    ));
    assert!(matches!(
        build_acpi(&mem, &cfg(3, 2, 128 * MIB)),
        Err(BootError::AcpiConfig(_))
    ));
    assert!(matches!(
        build_acpi(&mem, &cfg(1, 1, MIB)),
        Err(BootError::RamTooSmall { .. })
    ));
}

/// Disassembles the DSDT with iasl (acpica-tools) when it is installed. Not a
/// unit-test dependency: run with `cargo test -p boot -- --ignored`.
#[test]
#[ignore]
fn dsdt_disassembles_with_iasl() {
    let Ok(out) = std::process::Command::new("iasl").arg("-v").output() else {
        eprintln!("iasl not installed; skipping");
        return;
    };
    assert!(out.status.success() || !out.stdout.is_empty());
    let dir = std::env::temp_dir().join(format!("ferrovm-boot-iasl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (_, p) = build(&cfg(2, 4, 5 << 30));
    for (name, bytes) in [
        ("dsdt", &p.dsdt),
        ("facp", &p.fadt),
        ("apic", &p.madt),
        ("mcfg", &p.mcfg),
    ] {
        let path = dir.join(format!("{name}.dat"));
        std::fs::write(&path, bytes).unwrap();
        let out = std::process::Command::new("iasl")
            .arg("-d")
            .arg(&path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{name}: {text}");
        let dsl = std::fs::read_to_string(dir.join(format!("{name}.dsl"))).unwrap();
        assert!(!dsl.contains("**** Unknown"), "{name}: {dsl}");
        if name == "dsdt" {
            // Recompile: catches AML the disassembler accepted loosely.
            let out = std::process::Command::new("iasl")
                .arg("-p")
                .arg(dir.join("recompiled"))
                .arg(dir.join("dsdt.dsl"))
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            assert!(out.status.success(), "recompile: {text}");
            assert!(text.contains("0 Errors"), "recompile: {text}");
        }
        println!("{dsl}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// AML PkgLength at `b[at..]` (ACPI 6.5 §20.2.4): (length, bytes it takes).
/// The length counts the PkgLength bytes themselves.
fn pkg_len(b: &[u8], at: usize) -> (usize, usize) {
    let lead = b[at];
    let follow = (lead >> 6) as usize;
    if follow == 0 {
        return ((lead & 0x3f) as usize, 1);
    }
    let mut len = (lead & 0x0f) as usize;
    for i in 0..follow {
        len |= (b[at + 1 + i] as usize) << (4 + 8 * i);
    }
    (len, 1 + follow)
}

/// An AML integer (ZeroOp, OneOp or a Byte/Word/DWord/QWordConst) at `at`:
/// (value, bytes it takes).
fn aml_int(b: &[u8], at: usize) -> (u64, usize) {
    match b[at] {
        0x00 => (0, 1),
        0x01 => (1, 1),
        0x0a => (u64::from(b[at + 1]), 2),
        0x0b => (u64::from(u16_at(b, at + 1)), 3),
        0x0c => (u64::from(u32_at(b, at + 1)), 5),
        0x0e => (u64_at(b, at + 1), 9),
        op => panic!("not an integer: opcode {op:#x} at {at}"),
    }
}

/// One decoded `_PRT` entry: (address, pin, source name, source index).
type Prt = (u32, u8, String, u64);

/// Decodes `Name (_PRT, Package (n) { Package (4) {addr, pin, Name, index}, ... })`.
fn decode_prt(body: &[u8]) -> (u8, Vec<Prt>) {
    let name = find(body, b"_PRT\x12").expect("Name (_PRT, Package)");
    assert_eq!(body[name - 1], 0x08, "_PRT is a NameOp");
    let pkg = name + 4;
    let (len, lb) = pkg_len(body, pkg + 1);
    let end = pkg + 1 + len;
    let count = body[pkg + 1 + lb];
    let mut at = pkg + 2 + lb;
    let mut entries = Vec::new();
    while at < end {
        assert_eq!(body[at], 0x12, "entry {} is a package", entries.len());
        let (elen, elb) = pkg_len(body, at + 1);
        let eend = at + 1 + elen;
        assert_eq!(body[at + 1 + elb], 4, "entry has 4 elements");
        let mut i = at + 2 + elb;
        let (addr, n) = aml_int(body, i);
        i += n;
        let (pin, n) = aml_int(body, i);
        i += n;
        let source = String::from_utf8(body[i..i + 4].to_vec()).unwrap();
        i += 4;
        let (index, n) = aml_int(body, i);
        i += n;
        assert_eq!(i, eend, "entry ends with its PkgLength");
        entries.push((addr as u32, pin as u8, source, index));
        at = eend;
    }
    assert_eq!(at, end);
    (count, entries)
}

/// The contents of `Device (name)` (after its name).
fn device<'a>(body: &'a [u8], name: &str) -> &'a [u8] {
    let mut from = 0;
    while let Some(off) = find(&body[from..], &[0x5b, 0x82]) {
        let at = from + off;
        let (len, lb) = pkg_len(body, at + 2);
        if body.get(at + 2 + lb..at + 6 + lb) == Some(name.as_bytes()) {
            return &body[at + 6 + lb..at + 2 + len];
        }
        from = at + 1;
    }
    panic!("no Device ({name})");
}

/// The first Extended Interrupt descriptor of `Name (res, ResourceTemplate)`
/// in `dev`: (flags, GSI), checking it is the template's only descriptor.
fn ext_irq(dev: &[u8], res: &[u8; 4]) -> (u8, u32) {
    let mut pat = res.to_vec();
    pat.push(0x11);
    let at = find(dev, &pat).unwrap_or_else(|| panic!("{}", String::from_utf8_lossy(res)));
    let (_, lb) = pkg_len(dev, at + 5);
    let (size, n) = aml_int(dev, at + 5 + lb);
    let buf = &dev[at + 5 + lb + n..at + 5 + lb + n + size as usize];
    assert_eq!(buf[0], 0x89, "Extended Interrupt descriptor");
    assert_eq!(u16_at(buf, 1), 6);
    assert_eq!(buf[4], 1, "one interrupt");
    assert_eq!(buf[9], 0x79, "then EndTag");
    (buf[3], u32_at(buf, 5))
}

#[test]
fn prt_routes_every_slot_and_pin() {
    let (_, p) = build(&cfg(1, 1, 128 * MIB));
    let body = &p.dsdt[36..];
    // _PRT lies inside Device (PCI0).
    let pci0 = device(body, "PCI0");
    let (count, entries) = decode_prt(pci0);
    assert_eq!(count as usize, 32 * 4, "NumElements");
    assert_eq!(entries.len(), 32 * 4);
    let mut grid: Vec<(u32, u8)> = entries.iter().map(|e| (e.0, e.1)).collect();
    grid.sort();
    let expected: Vec<(u32, u8)> = (0..32u32)
        .flat_map(|s| (0..4u8).map(move |pin| ((s << 16) | 0xffff, pin)))
        .collect();
    assert_eq!(grid, expected, "one entry per slot and INTA..INTD");
    assert!(
        entries.iter().all(|e| e.3 == 0),
        "source index 0 with a link"
    );
    // First and last entries, spelled out (QEMU's PRTA starts and ends so).
    assert_eq!(entries[0], (0xffff, 0, "GSIE".into(), 0));
    assert_eq!(entries[127], (0x001f_ffff, 3, "GSID".into(), 0));
}

/// Follows one `_PRT` entry to its link device and the GSI in its `_CRS`,
/// as the OS does, and compares with `pci_intx_gsi` and QEMU's table.
#[test]
fn prt_entry_resolves_to_the_published_gsi() {
    let (_, p) = build(&cfg(1, 1, 128 * MIB));
    let body = &p.dsdt[36..];
    let (_, entries) = decode_prt(device(body, "PCI0"));
    let resolve = |slot: u32, pin: u8| {
        let e = entries
            .iter()
            .find(|e| e.0 == (slot << 16) | 0xffff && e.1 == pin)
            .unwrap();
        let link = device(body, &e.2);
        let (flags, gsi) = ext_irq(link, b"_CRS");
        // Consumer, level (bit 1 clear), active high (bit 2 clear), shared.
        assert_eq!(flags, 0x09, "{} _CRS flags", e.2);
        (e.2.clone(), gsi)
    };
    // Slot 2 INTA: QEMU's "GSIG" (append_q35_prt_entry(2, "GSIG")), GSI 22.
    assert_eq!(resolve(2, 0), ("GSIG".into(), 22));
    assert_eq!(pci_intx_gsi(2, 1), Some(22));
    // Slot 3 INTB: GSIH rotated by one → GSIE, GSI 20.
    assert_eq!(resolve(3, 1), ("GSIE".into(), 20));
    assert_eq!(pci_intx_gsi(3, 2), Some(20));
    // Slot 0x1f INTC: GSIC, GSI 18.
    assert_eq!(resolve(31, 2), ("GSIC".into(), 18));
    assert_eq!(pci_intx_gsi(31, 3), Some(18));
}

#[test]
fn gsi_link_devices_are_fixed_active_high_level() {
    let (_, p) = build(&cfg(1, 1, 128 * MIB));
    let body = &p.dsdt[36..];
    for (name, gsi) in [("GSIA", 16u32), ("GSID", 19), ("GSIE", 20), ("GSIH", 23)] {
        let dev = device(body, name);
        // _HID EISAID("PNP0C0F"): PCI interrupt link.
        assert!(
            find(dev, b"_HID\x0c\x41\xd0\x0c\x0f").is_some(),
            "{name} _HID"
        );
        assert_eq!(
            &dev[find(dev, b"_UID").unwrap() + 4..][..2],
            &[0x0a, gsi as u8]
        );
        assert_eq!(ext_irq(dev, b"_PRS"), (0x09, gsi), "{name} _PRS");
        assert_eq!(ext_irq(dev, b"_CRS"), (0x09, gsi), "{name} _CRS");
        // Empty methods: MethodOp, PkgLength 6, name, flags (args).
        assert!(find(dev, b"\x14\x06_DIS\x00").is_some(), "{name} _DIS");
        assert!(find(dev, b"\x14\x06_SRS\x01").is_some(), "{name} _SRS");
    }
    assert!(find(body, b"GSII").is_none());
}

/// Runs a table-loader script as SeaBIOS's romfile_loader.c does, with the
/// files placed at `addrs`; returns the files as the guest would see them.
fn run_loader(fw: &FirmwareAcpi, addrs: &[(&str, u64)]) -> Vec<(String, u64, Vec<u8>)> {
    let name = |b: &[u8]| {
        let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
        String::from_utf8(b[..end].to_vec()).unwrap()
    };
    let mut files: Vec<(String, u64, Vec<u8>)> = Vec::new();
    let content = |n: &str| match n {
        "etc/acpi/rsdp" => fw.rsdp.clone(),
        "etc/acpi/tables" => fw.tables.clone(),
        other => panic!("unknown file {other}"),
    };
    for c in fw.loader.chunks(128) {
        let kind = u32::from_le_bytes(c[..4].try_into().unwrap());
        let u32_at = |o: usize| u32::from_le_bytes(c[o..o + 4].try_into().unwrap());
        match kind {
            1 => {
                let n = name(&c[4..60]);
                let at = addrs.iter().find(|(a, _)| *a == n).unwrap().1;
                assert_eq!(at % u64::from(u32_at(60)), 0, "alignment of {n}");
                files.push((n.clone(), at, content(&n)));
            }
            2 => {
                let (dest, src) = (name(&c[4..60]), name(&c[60..116]));
                let (off, size) = (u32_at(116) as usize, c[120] as usize);
                let src_addr = files.iter().find(|f| f.0 == src).unwrap().1;
                let d = &mut files.iter_mut().find(|f| f.0 == dest).unwrap().2;
                let mut v = [0u8; 8];
                v[..size].copy_from_slice(&d[off..off + size]);
                let p = u64::from_le_bytes(v) + src_addr;
                d[off..off + size].copy_from_slice(&p.to_le_bytes()[..size]);
            }
            3 => {
                let f = &mut files.iter_mut().find(|f| f.0 == name(&c[4..60])).unwrap().2;
                let (off, start, len) = (
                    u32_at(60) as usize,
                    u32_at(64) as usize,
                    u32_at(68) as usize,
                );
                let sum = f[start..start + len]
                    .iter()
                    .fold(0u8, |a, &b| a.wrapping_add(b));
                f[off] = f[off].wrapping_sub(sum);
            }
            0 => {}
            k => panic!("unknown command {k}"),
        }
    }
    files
}

#[test]
fn the_table_loader_installs_valid_tables_anywhere() {
    let c = cfg(2, 4, 256 * MIB);
    let fw = build_for_firmware(&c).unwrap();
    let tables_at = 0x0fee_0000u64;
    let files = run_loader(
        &fw,
        &[("etc/acpi/rsdp", 0xf5a50), ("etc/acpi/tables", tables_at)],
    );
    let rsdp = &files.iter().find(|f| f.0 == "etc/acpi/rsdp").unwrap().2;
    let tables = &files.iter().find(|f| f.0 == "etc/acpi/tables").unwrap().2;
    let sum = |b: &[u8]| b.iter().fold(0u8, |a, &x| a.wrapping_add(x));
    assert_eq!(&rsdp[..8], b"RSD PTR ");
    assert_eq!(&rsdp[9..15], b"FERROV");
    assert_eq!(sum(&rsdp[..20]), 0, "RSDP checksum");
    assert_eq!(sum(&rsdp[..36]), 0, "RSDP extended checksum");
    // Follow the pointers as a guest would, through guest addresses.
    let at = |addr: u64| &tables[(addr - tables_at) as usize..];
    let table = |addr: u64| {
        let t = at(addr);
        let len = u32_at(t, 4) as usize;
        assert_eq!(
            sum(&t[..len]),
            0,
            "checksum of {:?}",
            std::str::from_utf8(&t[..4])
        );
        &t[..len]
    };
    let xsdt = table(u64_at(rsdp, 24));
    assert_eq!(&xsdt[..4], b"XSDT");
    let sigs: Vec<&[u8]> = (36..xsdt.len())
        .step_by(8)
        .map(|o| &table(u64_at(xsdt, o))[..4])
        .collect();
    assert_eq!(sigs, vec![&b"FACP"[..], b"APIC", b"MCFG"]);
    let fadt = table(u64_at(xsdt, 36));
    assert_eq!(&table(u64_at(fadt, 140))[..4], b"DSDT");
    let facs = u64_at(fadt, 132);
    assert_eq!(facs % 64, 0, "FACS alignment");
    assert_eq!(&at(facs)[..4], b"FACS");
}

#[test]
fn firmware_tables_keep_their_size_whatever_the_chipset_says() {
    let mut a = cfg(1, 1, 256 * MIB);
    a.ecam = None;
    let mut b = cfg(1, 1, 5 << 30);
    b.ecam = Some((0xe000_0000, 64 << 20));
    let (fa, fb) = (
        build_for_firmware(&a).unwrap(),
        build_for_firmware(&b).unwrap(),
    );
    assert_eq!(fa.tables.len(), FIRMWARE_TABLES_SIZE);
    assert_eq!(fb.tables.len(), FIRMWARE_TABLES_SIZE);
    assert_eq!(fa.rsdp.len(), fb.rsdp.len());
    // The MCFG follows PCIEXBAR: 64 MiB is buses 0-63.
    let files = run_loader(
        &fb,
        &[("etc/acpi/rsdp", 0xf0000), ("etc/acpi/tables", 0x100_0000)],
    );
    let t = &files[1].2;
    let m = find(t, b"MCFG").unwrap();
    assert_eq!(u64_at(&t[m..], 44), 0xe000_0000);
    assert_eq!((t[m + 54], t[m + 55]), (0, 63));
    let files = run_loader(
        &fa,
        &[("etc/acpi/rsdp", 0xf0000), ("etc/acpi/tables", 0x100_0000)],
    );
    assert!(find(&files[1].2, b"MCFG").is_none(), "no MCFG without ECAM");
}

/// `-device pvpanic`: QEMU's PEVT (hw/misc/pvpanic-isa.c), as iasl reads it
/// back; absent without the device.
#[test]
fn pvpanic_is_described_as_qemus_pevt() {
    let (_, p) = build(&cfg(1, 1, 1 << 30));
    assert!(find(&p.dsdt, b"PEVT").is_none());
    let (_, p) = build(&cfg(1, 1, 1 << 30).with_pvpanic(Some(0x505)));
    let at = find(&p.dsdt, b"PEVT").expect("PEVT in the DSDT");
    let dev = &p.dsdt[at..];
    assert!(find(dev, b"QEMU0001").is_some());
    // _CRS: IO (Decode16, 0x0505, 0x0505, 0x01, 0x01), the end tag.
    assert!(find(dev, &[0x47, 0x01, 0x05, 0x05, 0x05, 0x05, 0x01, 0x01, 0x79]).is_some());
    // _STA 0x0F (BytePrefix).
    assert!(find(dev, &[b'_', b'S', b'T', b'A', 0x0a, 0x0f]).is_some());
    let Ok(_) = std::process::Command::new("iasl").arg("-v").output() else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("ferrovm-pevt-iasl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("dsdt.dat"), &p.dsdt).unwrap();
    let out = std::process::Command::new("iasl")
        .arg("-d")
        .arg(dir.join("dsdt.dat"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let dsl = std::fs::read_to_string(dir.join("dsdt.dsl")).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    assert!(dsl.contains("Device (PEVT)"), "{dsl}");
    assert!(dsl.contains("Name (_HID, \"QEMU0001\")"), "{dsl}");
    assert!(dsl.contains("0x0505"), "{dsl}");
    assert!(dsl.contains("Name (_STA, 0x0F)"), "{dsl}");
}
