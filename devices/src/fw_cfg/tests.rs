use std::sync::{Arc, Mutex};

use super::*;

const RAM: usize = 0x10_0000;

fn dev() -> (FwCfg, GuestMemoryMmap) {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), RAM)]).unwrap();
    (FwCfg::new(mem.clone()), mem)
}

fn select(d: &mut FwCfg, key: u16) {
    d.write(0, &key.to_le_bytes());
}

fn read_port(d: &mut FwCfg, n: usize) -> Vec<u8> {
    (0..n)
        .map(|_| {
            let mut b = [0u8];
            d.read(1, &mut b);
            b[0]
        })
        .collect()
}

/// Writes a descriptor at `at` and starts it as SeaBIOS does
/// (src/fw/paravirt.c `qemu_cfg_dma_transfer`: outl of cpu_to_be32 halves).
fn dma(d: &mut FwCfg, mem: &GuestMemoryMmap, at: u64, control: u32, len: u32, addr: u64) -> u32 {
    let mut desc = control.to_be_bytes().to_vec();
    desc.extend_from_slice(&len.to_be_bytes());
    desc.extend_from_slice(&addr.to_be_bytes());
    mem.write_slice(&desc, GuestAddress(at)).unwrap();
    d.write(4, &((at >> 32) as u32).to_be_bytes());
    d.write(8, &(at as u32).to_be_bytes());
    let mut c = [0u8; 4];
    mem.read_slice(&mut c, GuestAddress(at)).unwrap();
    u32::from_be_bytes(c)
}

#[test]
fn signature_and_id_through_the_port() {
    let (mut d, _) = dev();
    select(&mut d, SIGNATURE);
    assert_eq!(read_port(&mut d, 6), b"QEMU\0\0");
    select(&mut d, ID);
    assert_eq!(read_port(&mut d, 4), vec![3, 0, 0, 0], "port and DMA");
    let mut sig = [0u8; 8];
    d.read(4, &mut sig);
    assert_eq!(&sig, b"QEMU CFG");
}

#[test]
fn the_directory_lists_files_sorted_by_name() {
    let (mut d, _) = dev();
    d.add_file("etc/e820", vec![0; 40]).unwrap();
    d.add_file("bootorder", b"/pci@i0cf8/scsi@1/disk@0,0\0".to_vec())
        .unwrap();
    select(&mut d, FILE_DIR);
    let dir = read_port(&mut d, 4 + 2 * 64);
    // docs/specs/fw_cfg.rst: be32 count; be32 size, be16 select, be16 reserved, name[56].
    let mut want = vec![0, 0, 0, 2];
    want.extend_from_slice(&[0, 0, 0, 27, 0, 0x20, 0, 0]);
    want.extend_from_slice(b"bootorder");
    want.extend_from_slice(&[0; 56 - 9]);
    want.extend_from_slice(&[0, 0, 0, 40, 0, 0x21, 0, 0]);
    want.extend_from_slice(b"etc/e820");
    want.extend_from_slice(&[0; 56 - 8]);
    assert_eq!(dir, want);
    assert_eq!(d.file_selector("etc/e820"), Some(0x21));
}

#[test]
fn names_are_checked() {
    let (mut d, _) = dev();
    d.add_file("a", vec![]).unwrap();
    assert_eq!(
        d.add_file("a", vec![]),
        Err(FwCfgError::Duplicate("a".into()))
    );
    assert!(matches!(
        d.add_file(&"x".repeat(56), vec![]),
        Err(FwCfgError::BadName(_))
    ));
    assert!(matches!(
        d.add_file("", vec![]),
        Err(FwCfgError::BadName(_))
    ));
}

#[test]
fn dma_select_and_read_a_file() {
    let (mut d, mem) = dev();
    let sel = d.add_file("etc/boot-fail-wait", vec![1, 2, 3, 4]).unwrap();
    let c = dma(
        &mut d,
        &mem,
        0x1000,
        u32::from(sel) << 16 | DMA_SELECT | DMA_READ,
        6,
        0x2000,
    );
    assert_eq!(c, 0, "completed without error");
    let mut got = [0xaau8; 6];
    mem.read_slice(&mut got, GuestAddress(0x2000)).unwrap();
    assert_eq!(got, [1, 2, 3, 4, 0, 0], "zeros past the end");
}

#[test]
fn dma_skip_then_read_continues_at_the_offset() {
    let (mut d, mem) = dev();
    let sel = d.add_file("f", (0u8..16).collect()).unwrap();
    assert_eq!(
        dma(
            &mut d,
            &mem,
            0x1000,
            u32::from(sel) << 16 | DMA_SELECT | DMA_SKIP,
            10,
            0
        ),
        0
    );
    assert_eq!(dma(&mut d, &mem, 0x1000, DMA_READ, 4, 0x3000), 0);
    let mut got = [0u8; 4];
    mem.read_slice(&mut got, GuestAddress(0x3000)).unwrap();
    assert_eq!(got, [10, 11, 12, 13]);
    // The port continues where DMA stopped.
    assert_eq!(read_port(&mut d, 3), vec![14, 15, 0]);
}

#[test]
fn dma_errors() {
    let (mut d, mem) = dev();
    let sel = d.add_file("f", vec![1; 8]).unwrap();
    // Target outside RAM.
    let c = dma(
        &mut d,
        &mem,
        0x1000,
        u32::from(sel) << 16 | DMA_SELECT | DMA_READ,
        8,
        RAM as u64,
    );
    assert_eq!(c, DMA_ERROR);
    // Items are read-only.
    let c = dma(
        &mut d,
        &mem,
        0x1000,
        u32::from(sel) << 16 | DMA_SELECT | DMA_WRITE,
        4,
        0x2000,
    );
    assert_eq!(c, DMA_ERROR);
    select(&mut d, sel);
    assert_eq!(
        read_port(&mut d, 2),
        vec![1, 1],
        "the write changed nothing"
    );
    // A descriptor outside RAM: nothing to write back to, no panic.
    d.write(4, &0u32.to_be_bytes());
    d.write(8, &0xffff_fff0u32.to_be_bytes());
}

#[test]
fn refresh_runs_on_the_first_select_after_each_reset() {
    let (mut d, mem) = dev();
    let runs = Arc::new(Mutex::new(0));
    let r = runs.clone();
    let sel = d
        .add_file_with_refresh(
            "etc/acpi/tables",
            vec![0; 4],
            Box::new(move |data| {
                *r.lock().unwrap() += 1;
                data[0] = 0x42;
            }),
        )
        .unwrap();
    assert_eq!(*runs.lock().unwrap(), 0, "not before the guest asks");
    select(&mut d, sel);
    assert_eq!(read_port(&mut d, 1), vec![0x42]);
    dma(
        &mut d,
        &mem,
        0x1000,
        u32::from(sel) << 16 | DMA_SELECT | DMA_READ,
        4,
        0x2000,
    );
    assert_eq!(*runs.lock().unwrap(), 1, "once per boot");
    d.reset();
    select(&mut d, sel);
    assert_eq!(*runs.lock().unwrap(), 2);
}

#[test]
fn garbage_never_panics() {
    let (mut d, mem) = dev();
    d.add_file("f", vec![7; 100]).unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..20_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let off = x % 14;
        let len = [1usize, 2, 4, 8][(x >> 8) as usize % 4];
        let mut buf = vec![0u8; len];
        if x & 1 == 0 {
            d.read(off, &mut buf);
        } else {
            buf.copy_from_slice(&x.to_le_bytes()[..len]);
            d.write(off, &buf);
        }
        if x.is_multiple_of(97) {
            // A random descriptor in RAM.
            let at = (x >> 20) % (RAM as u64 - 16);
            let _ = mem.write_slice(&x.to_be_bytes(), GuestAddress(at));
            d.write(8, &(at as u32).to_be_bytes());
        }
    }
}
