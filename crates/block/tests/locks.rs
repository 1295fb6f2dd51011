mod common;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use block::{AttachOptions, BlockGraph};
use common::*;

const QDEV: &str = "/machine/peripheral/vd0/virtio-backend";

fn attached(
    img: &TempImage,
    extra: &[(&str, &str)],
) -> Result<(BlockGraph, block::BlockBackend), block::BlockError> {
    let mut g = BlockGraph::new();
    let mut kv = vec![("file", img.path()), ("format", "raw")];
    kv.extend_from_slice(extra);
    g.add_drive("d0", &drive(&kv))?;
    let bb = g.attach("d0", QDEV, AttachOptions::default())?;
    Ok((g, bb))
}

/// Lock bytes held on the image (from /proc/locks), as "start-end" strings.
fn lock_ranges(img: &TempImage) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let ino = std::fs::metadata(&img.0).unwrap().ino();
    let locks = std::fs::read_to_string("/proc/locks").unwrap();
    let mut v: Vec<String> = locks
        .lines()
        .filter(|l| l.contains(&format!(":{ino} ")))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            format!("{}-{}", f[f.len() - 2], f[f.len() - 1])
        })
        .collect();
    v.sort();
    v
}

#[test]
fn same_bytes_as_qemu_for_read_write_and_read_only_devices() {
    let img = TempImage::new("bytes", 1 << 20);
    let mut g = BlockGraph::new();
    g.add_drive("d0", &drive(&[("file", img.path()), ("format", "raw")]))
        .unwrap();
    // QEMU 7.2, -drive without a device: byte 100 only.
    assert_eq!(lock_ranges(&img), ["100-100"]);
    let bb = g.attach("d0", QDEV, AttachOptions::default()).unwrap();
    // With -device virtio-blk-pci: 100, 101 and 201.
    assert_eq!(lock_ranges(&img), ["100-101", "201-201"]);
    g.detach(&bb);
    assert_eq!(lock_ranges(&img), ["100-100"]);
    drop(g);
    drop(bb);
    let (_g, _bb) = attached(&img, &[("readonly", "on")]).unwrap();
    assert_eq!(lock_ranges(&img), ["100-100", "201-201"]);
}

#[test]
fn second_writer_gets_qemus_error_and_locking_off_skips() {
    let img = TempImage::new("two", 1 << 20);
    let (_g, _bb) = attached(&img, &[]).unwrap();
    let e = attached(&img, &[]).err().expect("second writer must fail");
    assert_eq!(e.msg, "Failed to get \"write\" lock");
    assert_eq!(
        e.hint.as_deref(),
        Some(format!("Is another process using the image [{}]?\n", img.path()).as_str())
    );
    let e = attached(&img, &[("readonly", "on")])
        .err()
        .expect("reader unsharing write must fail");
    assert_eq!(e.msg, "Failed to get shared \"write\" lock");
    attached(&img, &[("file.locking", "off")]).expect("locking=off takes no locks");
}

fn qemu(img: &TempImage, readonly: bool) -> Command {
    let mut c = Command::new("qemu-system-x86_64");
    let ro = if readonly { ",readonly=on" } else { "" };
    c.args([
        "-machine",
        "q35",
        "-S",
        "-nodefaults",
        "-display",
        "none",
        "-drive",
    ])
    .arg(format!("file={},format=raw,if=none,id=d0{ro}", img.path()))
    .args(["-device", "virtio-blk-pci,drive=d0"])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    c
}

#[test]
fn qemu_and_ferrovm_refuse_each_other() {
    if Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("qemu-system-x86_64 not installed; skipping");
        return;
    }
    let img = TempImage::new("qemu", 1 << 20);
    let mut q = qemu(&img, false).spawn().unwrap();
    let t = Instant::now();
    while lock_ranges(&img) != ["100-101", "201-201"] {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "QEMU never locked the image"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let e = attached(&img, &[])
        .err()
        .expect("QEMU holds the write lock");
    let _ = q.kill();
    let _ = q.wait();
    assert_eq!(
        e.full(),
        format!(
            "Failed to get \"write\" lock\nIs another process using the image [{}]?",
            img.path()
        )
    );

    let (_g, _bb) = attached(&img, &[]).unwrap();
    let out = qemu(&img, false).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Failed to get \"write\" lock"), "{err}");
    assert!(
        err.contains(&format!(
            "Is another process using the image [{}]?",
            img.path()
        )),
        "{err}"
    );
}
