use super::*;
use crate::layout::E820Type;
use crate::testutil::{
    build_bzimage, build_elf, fixture, guest_mem, BzSpec, ElfSpec, BODY_OFFSET, BZ_ENTRY64_MARKER,
    COMPRESSED_FIXTURES, PVH_FIXTURE,
};
use vm_memory::Bytes;

const MIB: u64 = 1 << 20;
const RSDP: GuestAddress = GuestAddress(0xe0000);

fn read(mem: &GuestMemoryMmap, addr: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
    v
}

fn read_cmdline(mem: &GuestMemoryMmap, addr: u64) -> String {
    let raw = read(mem, addr, 4096);
    let end = raw.iter().position(|&b| b == 0).unwrap();
    String::from_utf8(raw[..end].to_vec()).unwrap()
}

fn initrd_bytes(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + 3) as u8).collect()
}

/// Checks the PVH start info and everything it points at.
fn check_start_info(
    mem: &GuestMemoryMmap,
    layout: &MemoryLayout,
    cmdline: &str,
    initrd: Option<&[u8]>,
    kernel_end: u64,
) {
    let si: hvm_start_info = mem.read_obj(GuestAddress(PVH_START_INFO)).unwrap();
    assert_eq!({ si.magic }, 0x336e_c578);
    assert_eq!({ si.version }, 1);
    assert_eq!({ si.rsdp_paddr }, RSDP.0);
    assert_eq!(read_cmdline(mem, si.cmdline_paddr), cmdline);
    let e820 = layout.e820();
    assert_eq!(si.memmap_entries as usize, e820.len());
    for (i, e) in e820.iter().enumerate() {
        let m: hvm_memmap_table_entry = mem
            .read_obj(GuestAddress(si.memmap_paddr + 24 * i as u64))
            .unwrap();
        assert_eq!(
            ({ m.addr }, { m.size }, { m.type_ }),
            (e.addr, e.size, e.kind as u32)
        );
    }
    match initrd {
        None => {
            assert_eq!({ si.nr_modules }, 0);
            assert_eq!({ si.modlist_paddr }, 0);
        }
        Some(data) => {
            assert_eq!({ si.nr_modules }, 1);
            let m: hvm_modlist_entry = mem.read_obj(GuestAddress(si.modlist_paddr)).unwrap();
            assert_eq!(m.size, data.len() as u64);
            assert_eq!(m.paddr % 4096, 0);
            assert!(m.paddr >= kernel_end);
            assert!(m.paddr + m.size <= layout.low_end());
            assert!(layout.low_end() - (m.paddr + m.size) < 4096, "placed high");
            assert_eq!(read(mem, m.paddr, data.len()), data);
        }
    }
}

#[test]
fn pvh_elf_with_initrd() {
    let layout = MemoryLayout::new(64 * MIB);
    let mem = guest_mem(&layout);
    let spec = ElfSpec::default();
    let elf = build_elf(&spec);
    let initrd = initrd_bytes(3 * 4096 + 17);
    let cmdline = "console=ttyS0 root=/dev/vda -- init-arg";
    let entry = load_kernel(&mem, &elf, Some(&initrd), cmdline, &layout, RSDP).unwrap();
    assert_eq!(
        entry,
        BootEntry::Pvh {
            entry: GuestAddress(0x10_0100),
            start_info: GuestAddress(0x2000)
        }
    );
    let kernel_end = spec.paddr + elf.len() as u64 + spec.bss;
    check_start_info(&mem, &layout, cmdline, Some(&initrd), kernel_end);
    assert_eq!(
        read(&mem, spec.paddr + BODY_OFFSET as u64, spec.body.len()),
        spec.body
    );
}

#[test]
fn pvh_elf32_without_initrd() {
    let layout = MemoryLayout::new(64 * MIB);
    let mem = guest_mem(&layout);
    let elf = build_elf(&ElfSpec {
        class64: false,
        ..Default::default()
    });
    let image = KernelImage::parse(&elf).unwrap();
    assert_eq!(image.kind(), &KernelKind::PvhElf);
    // An empty initrd counts as none.
    image.load(&mem, Some(&[]), "", &layout, RSDP).unwrap();
    check_start_info(&mem, &layout, "", None, 0);
}

#[test]
fn pvh_with_high_ram_has_split_memmap() {
    let layout = MemoryLayout::new(4 << 30);
    let mem = guest_mem(&layout);
    let initrd = initrd_bytes(8192);
    load_kernel(
        &mem,
        &build_elf(&ElfSpec::default()),
        Some(&initrd),
        "x",
        &layout,
        RSDP,
    )
    .unwrap();
    check_start_info(&mem, &layout, "x", Some(&initrd), 2 * MIB);
    let si: hvm_start_info = mem.read_obj(GuestAddress(PVH_START_INFO)).unwrap();
    let last: hvm_memmap_table_entry = mem
        .read_obj(GuestAddress(
            si.memmap_paddr + 24 * (si.memmap_entries as u64 - 1),
        ))
        .unwrap();
    assert_eq!(
        ({ last.addr }, { last.size }, { last.type_ }),
        (4 << 30, 2 << 30, E820Type::Ram as u32)
    );
}

fn bz_with_payload(name: &str) -> Vec<u8> {
    build_bzimage(&BzSpec {
        payload: fixture(name),
        payload_size: fixture(PVH_FIXTURE).len() as u32,
        ..Default::default()
    })
}

#[test]
fn bzimage_with_pvh_payload_boots_via_pvh_for_every_format() {
    for &(name, format) in COMPRESSED_FIXTURES {
        let layout = MemoryLayout::new(64 * MIB);
        let mem = guest_mem(&layout);
        let image = KernelImage::parse(&bz_with_payload(name)).unwrap();
        assert_eq!(
            image.kind(),
            &KernelKind::BzImagePvh {
                compression: format
            },
            "{name}"
        );
        let initrd = initrd_bytes(5000);
        let entry = image
            .load(&mem, Some(&initrd), "quiet", &layout, RSDP)
            .unwrap();
        assert!(
            matches!(entry, BootEntry::Pvh { entry, .. } if entry == GuestAddress(0x10_0100)),
            "{name}"
        );
        let spec = ElfSpec::default();
        assert_eq!(
            read(&mem, spec.paddr + BODY_OFFSET as u64, spec.body.len()),
            spec.body,
            "{name}"
        );
        check_start_info(&mem, &layout, "quiet", Some(&initrd), 2 * MIB);
    }
}

/// Checks the zero page written by the classic path.
fn check_boot_params(mem: &GuestMemoryMmap, layout: &MemoryLayout, cmdline: &str) -> boot_params {
    let bp: boot_params = mem.read_obj(GuestAddress(ZERO_PAGE)).unwrap();
    let h = bp.hdr;
    assert_eq!({ h.header }, 0x5372_6448);
    assert_eq!({ h.boot_flag }, 0xaa55);
    assert_eq!(h.type_of_loader, 0xff);
    assert_eq!(
        h.loadflags & (LOADED_HIGH | CAN_USE_HEAP),
        LOADED_HIGH | CAN_USE_HEAP
    );
    assert_eq!({ h.cmd_line_ptr }, CMDLINE as u32);
    assert_eq!(read_cmdline(mem, u64::from(h.cmd_line_ptr)), cmdline);
    assert_eq!({ h.code32_start }, 0x10_0000);
    assert_eq!({ bp.acpi_rsdp_addr }, RSDP.0);
    let e820 = layout.e820();
    assert_eq!(bp.e820_entries as usize, e820.len());
    for (i, e) in e820.iter().enumerate() {
        let t = bp.e820_table[i];
        assert_eq!(
            ({ t.addr }, { t.size }, { t.r#type }),
            (e.addr, e.size, e.kind as u32)
        );
    }
    bp
}

#[test]
fn classic_bzimage_boot() {
    let layout = MemoryLayout::new(64 * MIB);
    let mem = guest_mem(&layout);
    let spec = BzSpec::default();
    let img = build_bzimage(&spec);
    let image = KernelImage::parse(&img).unwrap();
    assert!(
        matches!(image.kind(), KernelKind::BzImage { why_not_pvh } if why_not_pvh.contains("unknown"))
    );
    let initrd = initrd_bytes(10_000);
    let entry = image
        .load(&mem, Some(&initrd), "console=ttyS0", &layout, RSDP)
        .unwrap();
    assert_eq!(
        entry,
        BootEntry::Linux64 {
            entry: GuestAddress(0x10_0200),
            boot_params: GuestAddress(0x7000)
        }
    );
    let bp = check_boot_params(&mem, &layout, "console=ttyS0");
    // The protected-mode kernel is at 1 MiB, the 64-bit entry 0x200 in.
    let setup = (spec.setup_sects as usize + 1) * 512;
    assert_eq!(read(&mem, 0x10_0000, img.len() - setup), &img[setup..]);
    assert_eq!(
        read(&mem, 0x10_0200, BZ_ENTRY64_MARKER.len()),
        BZ_ENTRY64_MARKER
    );
    // The header is copied from the image.
    assert_eq!({ bp.hdr.pref_address }, spec.pref_address);
    assert_eq!({ bp.hdr.init_size }, spec.init_size);
    assert_eq!({ bp.hdr.payload_offset }, 0x400);
    // The initrd sits page aligned at the top of low RAM, above the
    // kernel's decompression area [pref_address, +init_size).
    let (addr, size) = (
        u64::from(bp.hdr.ramdisk_image),
        u64::from(bp.hdr.ramdisk_size),
    );
    assert_eq!(size, 10_000);
    assert_eq!(addr % 4096, 0);
    assert!(addr >= spec.pref_address + u64::from(spec.init_size));
    assert!(addr + size <= 64 * MIB && 64 * MIB - (addr + size) < 4096);
    assert_eq!(read(&mem, addr, initrd.len()), initrd);
}

#[test]
fn classic_initrd_respects_initrd_addr_max() {
    let layout = MemoryLayout::new(256 * MIB);
    let mem = guest_mem(&layout);
    let img = build_bzimage(&BzSpec {
        initrd_addr_max: 0x1ff_ffff, // 32 MiB
        ..Default::default()
    });
    load_kernel(&mem, &img, Some(&initrd_bytes(4096)), "", &layout, RSDP).unwrap();
    let bp: boot_params = mem.read_obj(GuestAddress(ZERO_PAGE)).unwrap();
    assert_eq!({ bp.hdr.ramdisk_image }, 0x200_0000 - 4096);
}

#[test]
fn classic_without_initrd_and_old_rsdp_protocol() {
    let layout = MemoryLayout::new(64 * MIB);
    let mem = guest_mem(&layout);
    let img = build_bzimage(&BzSpec {
        version: 0x020c,
        ..Default::default()
    });
    load_kernel(&mem, &img, None, "a=b", &layout, RSDP).unwrap();
    let bp: boot_params = mem.read_obj(GuestAddress(ZERO_PAGE)).unwrap();
    assert_eq!(({ bp.hdr.ramdisk_image }, { bp.hdr.ramdisk_size }), (0, 0));
    assert_eq!(
        { bp.acpi_rsdp_addr },
        0,
        "acpi_rsdp_addr needs protocol 2.14"
    );
}

#[test]
fn bzimage_whose_payload_has_no_pvh_note_boots_classic() {
    let elf = build_elf(&ElfSpec {
        pvh_entry: None,
        ..Default::default()
    });
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &elf).unwrap();
    let img = build_bzimage(&BzSpec {
        payload: gz.finish().unwrap(),
        payload_size: elf.len() as u32,
        ..Default::default()
    });
    let image = KernelImage::parse(&img).unwrap();
    assert_eq!(
        image.kind(),
        &KernelKind::BzImage {
            why_not_pvh: "the payload ELF has no PVH note".into()
        }
    );
    let layout = MemoryLayout::new(64 * MIB);
    let mem = guest_mem(&layout);
    assert!(matches!(
        image.load(&mem, None, "", &layout, RSDP).unwrap(),
        BootEntry::Linux64 { .. }
    ));
}

#[test]
fn corrupt_payload_falls_back_to_classic() {
    let mut payload = fixture("pvh64.bin.xz");
    let n = payload.len();
    payload[n / 2] ^= 0xff;
    let img = build_bzimage(&BzSpec {
        payload,
        ..Default::default()
    });
    let image = KernelImage::parse(&img).unwrap();
    assert!(
        matches!(image.kind(), KernelKind::BzImage { why_not_pvh } if why_not_pvh.contains("xz"))
    );
}

#[test]
fn unsupported_bzimages_are_refused() {
    for (spec, what) in [
        (
            BzSpec {
                version: 0x020b,
                ..Default::default()
            },
            "old protocol",
        ),
        (
            BzSpec {
                xloadflags: 0,
                ..Default::default()
            },
            "no 64-bit entry",
        ),
        (
            BzSpec {
                loadflags: 0,
                ..Default::default()
            },
            "not LOADED_HIGH",
        ),
    ] {
        let r = KernelImage::parse(&build_bzimage(&spec));
        assert!(
            matches!(r, Err(BootError::UnsupportedBzImage { .. })),
            "{what}"
        );
    }
}

#[test]
fn other_files_are_refused() {
    assert!(matches!(
        KernelImage::parse(b""),
        Err(BootError::UnknownKernelFormat)
    ));
    assert!(matches!(
        KernelImage::parse(&[0u8; 4096]),
        Err(BootError::UnknownKernelFormat)
    ));
    let no_note = build_elf(&ElfSpec {
        pvh_entry: None,
        ..Default::default()
    });
    assert!(matches!(
        KernelImage::parse(&no_note),
        Err(BootError::NoPvhEntry)
    ));
}

#[test]
fn pvh_entry_outside_ram_is_refused() {
    let layout = MemoryLayout::new(16 * MIB);
    let mem = guest_mem(&layout);
    let elf = build_elf(&ElfSpec {
        pvh_entry: Some(0xd000_0000),
        ..Default::default()
    });
    assert!(matches!(
        load_kernel(&mem, &elf, None, "", &layout, RSDP),
        Err(BootError::InvalidElf(_))
    ));
}

#[test]
fn cmdline_limits() {
    let layout = MemoryLayout::new(64 * MIB);
    let mem = guest_mem(&layout);
    let img = build_bzimage(&BzSpec {
        cmdline_size: 16,
        ..Default::default()
    });
    assert!(load_kernel(&mem, &img, None, &"x".repeat(16), &layout, RSDP).is_ok());
    assert!(matches!(
        load_kernel(&mem, &img, None, &"x".repeat(17), &layout, RSDP),
        Err(BootError::CmdlineTooLong { len: 17, max: 16 })
    ));
    assert!(matches!(
        load_kernel(&mem, &img, None, "bad\u{7}char", &layout, RSDP),
        Err(BootError::InvalidCmdline(_))
    ));
    assert!(matches!(
        load_kernel(&mem, &img, None, "nul\0", &layout, RSDP),
        Err(BootError::InvalidCmdline(_))
    ));
    let elf = build_elf(&ElfSpec::default());
    assert!(matches!(
        load_kernel(&mem, &elf, None, &"y".repeat(CMDLINE_MAX), &layout, RSDP),
        Err(BootError::CmdlineTooLong { .. })
    ));
    assert!(load_kernel(&mem, &elf, None, &"y".repeat(4000), &layout, RSDP).is_ok());
}

#[test]
fn memory_limits() {
    // Initrd larger than the room above the kernel.
    let layout = MemoryLayout::new(8 * MIB);
    let mem = guest_mem(&layout);
    let elf = build_elf(&ElfSpec::default());
    let big = vec![0u8; (7 * MIB) as usize];
    assert!(matches!(
        load_kernel(&mem, &elf, Some(&big), "", &layout, RSDP),
        Err(BootError::InitrdDoesNotFit { .. })
    ));
    // Classic kernel whose decompression area exceeds RAM.
    let img = build_bzimage(&BzSpec {
        init_size: 0x1000_0000,
        ..Default::default()
    });
    assert!(matches!(
        load_kernel(&mem, &img, None, "", &layout, RSDP),
        Err(BootError::KernelTooLarge { .. })
    ));
    // RAM too small for anything.
    let tiny = MemoryLayout::new(MIB);
    let mem = guest_mem(&tiny);
    assert!(matches!(
        load_kernel(&mem, &elf, None, "", &tiny, RSDP),
        Err(BootError::RamTooSmall { .. })
    ));
}

#[test]
fn reload_after_reset_gives_the_same_memory() {
    let layout = MemoryLayout::new(64 * MIB);
    let image = KernelImage::parse(&bz_with_payload("pvh64.bin.zst")).unwrap();
    let a = guest_mem(&layout);
    let b = guest_mem(&layout);
    // `b` is dirty, as after a guest ran.
    b.write_slice(&vec![0xee; (4 * MIB) as usize], GuestAddress(MIB))
        .unwrap();
    let initrd = initrd_bytes(100);
    image.load(&a, Some(&initrd), "c", &layout, RSDP).unwrap();
    image.load(&b, Some(&initrd), "c", &layout, RSDP).unwrap();
    let spec = ElfSpec::default();
    let kernel_end = spec.paddr + build_elf(&spec).len() as u64 + spec.bss;
    assert_eq!(
        read(&a, MIB, (kernel_end - MIB) as usize),
        read(&b, MIB, (kernel_end - MIB) as usize)
    );
}

/// The real Debian kernel, when present in the CI cache directory: checks
/// that decompression and PVH-note detection work and reports the time.
/// `cargo test -p boot --release debian -- --ignored --nocapture`
#[test]
#[ignore]
fn debian_kernel_decompresses_to_pvh() {
    let Some(path) = std::fs::read_dir("/var/cache/ferrovm").ok().and_then(|d| {
        d.filter_map(|e| e.ok()).map(|e| e.path()).find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("vmlinuz-")
        })
    }) else {
        eprintln!("no /var/cache/ferrovm/vmlinuz-*; skipping");
        return;
    };
    let bytes = std::fs::read(&path).unwrap();
    let t = std::time::Instant::now();
    let image = KernelImage::parse(&bytes).unwrap();
    let elapsed = t.elapsed();
    println!("{}: {:?} in {elapsed:?}", path.display(), image.kind());
    assert_eq!(
        image.kind(),
        &KernelKind::BzImagePvh {
            compression: Compression::Xz
        }
    );
    let Repr::Pvh { info, entry, elf } = &image.repr else {
        unreachable!()
    };
    let end = info
        .segments
        .iter()
        .map(|s| s.paddr + s.memsz)
        .max()
        .unwrap();
    println!(
        "ELF {} bytes, PVH entry {entry:#x}, {} PT_LOAD segments, {:#x}..{end:#x}",
        elf.len(),
        info.segments.len(),
        info.segments.iter().map(|s| s.paddr).min().unwrap(),
    );
    let layout = MemoryLayout::new(256 * MIB);
    let mem = guest_mem(&layout);
    let t = std::time::Instant::now();
    let entry = image
        .load(&mem, Some(&[1, 2, 3]), "console=ttyS0", &layout, RSDP)
        .unwrap();
    println!("loaded in {:?}: {entry:?}", t.elapsed());
    assert!(matches!(entry, BootEntry::Pvh { .. }));
}
