mod common;
use block::{AttachOptions, BlockGraph};
use common::*;
use serde_json::Value;

fn keys(v: &Value) -> Vec<&str> {
    v.as_object().unwrap().keys().map(String::as_str).collect()
}

#[test]
fn query_shapes_match_qemu_7_2() {
    let img = TempImage::new("q", 64 << 20);
    let mut g = BlockGraph::new();
    g.add_drive("d0", &drive(&[("file", img.path()), ("format", "raw")]))
        .unwrap();
    g.attach(
        "d0",
        "/machine/peripheral/vd0/virtio-backend",
        AttachOptions::default(),
    )
    .unwrap();
    // Members seen from QEMU 7.2 (-drive if=none,id=d0 + virtio-blk-pci,id=vd0),
    // in QAPI declaration order.
    let b = &g.query_block()[0];
    assert_eq!(
        keys(b),
        [
            "device",
            "qdev",
            "type",
            "removable",
            "locked",
            "inserted",
            "io-status"
        ]
    );
    assert_eq!(b["io-status"], "ok");
    assert_eq!(b["qdev"], "/machine/peripheral/vd0/virtio-backend");
    let ins = &b["inserted"];
    assert_eq!(
        keys(ins),
        [
            "file",
            "node-name",
            "ro",
            "drv",
            "backing_file_depth",
            "encrypted",
            "detect_zeroes",
            "bps",
            "bps_rd",
            "bps_wr",
            "iops",
            "iops_rd",
            "iops_wr",
            "image",
            "cache",
            "write_threshold"
        ]
    );
    assert_eq!(
        keys(&ins["image"]),
        [
            "filename",
            "format",
            "dirty-flag",
            "actual-size",
            "virtual-size"
        ]
    );
    assert_eq!(ins["image"]["virtual-size"], 64 << 20);
    assert_eq!(
        ins["cache"],
        serde_json::json!({"writeback": true, "direct": false, "no-flush": false})
    );
    let s = &g.query_blockstats(false)[0];
    assert_eq!(keys(s), ["device", "qdev", "node-name", "stats", "parent"]);
    assert_eq!(s["stats"]["account_failed"], true);
    assert_eq!(s["parent"]["stats"]["account_failed"], false);
    assert_eq!(
        s["stats"].as_object().unwrap().len(),
        26,
        "QEMU 7.2 shows 26 members before any I/O (no idle_time_ns)"
    );
    assert_eq!(s["parent"]["driver-specific"]["driver"], "file");
    let n = g.query_named_block_nodes(false);
    assert_eq!(n[0]["drv"], "raw", "newest node first");
    assert_eq!(n[1]["drv"], "file");
    assert_eq!(n[1]["image"]["format"], "file");
}

#[test]
fn io_status_only_with_a_stopping_policy() {
    let img = TempImage::new("ios", 1 << 20);
    let mut g = BlockGraph::new();
    g.add_drive(
        "d0",
        &drive(&[
            ("file", img.path()),
            ("format", "raw"),
            ("werror", "report"),
            ("rerror", "report"),
        ]),
    )
    .unwrap();
    g.attach("d0", "/q", AttachOptions::default()).unwrap();
    assert!(g.query_block()[0].get("io-status").is_none());
    let mut g = BlockGraph::new();
    g.add_drive(
        "d1",
        &drive(&[
            ("file", img.path()),
            ("format", "raw"),
            ("werror", "stop"),
            ("file.locking", "off"),
        ]),
    )
    .unwrap();
    let bb = g.attach("d1", "/q", AttachOptions::default()).unwrap();
    let ev = bb.error_event(block::ErrorAction::Stop, false, libc::ENOSPC);
    assert_eq!(ev["nospace"], true);
    assert_eq!(ev["reason"], "No space left on device");
    assert_eq!(g.query_block()[0]["io-status"], "nospace");
    bb.iostatus_reset();
    assert_eq!(g.query_block()[0]["io-status"], "ok");
}

/// QEMU 7.2 with `-drive if=ide,id=cd,media=cdrom` (no file): an empty,
/// read-only drive whose device has a tray; `removable` and `tray_open` as
/// QEMU shows them for an ide-cd, no `inserted`. A disk device refuses an
/// empty drive with QEMU's words.
#[test]
fn empty_cdrom_drive_and_its_tray() {
    let mut g = BlockGraph::new();
    g.add_drive(
        "cd",
        &drive(&[("if", "ide"), ("media", "cdrom"), ("read-only", "on")]),
    )
    .unwrap();
    let b = &g.query_block()[0];
    assert_eq!(keys(b), ["device", "type", "removable", "locked"]);
    assert_eq!(b["removable"], true);
    let o = AttachOptions {
        read_only: true,
        removable: true,
        ..AttachOptions::default()
    };
    g.attach("cd", "/machine/unattached/device[16]", o).unwrap();
    let b = &g.query_block()[0];
    assert_eq!(
        keys(b),
        [
            "device",
            "qdev",
            "type",
            "removable",
            "locked",
            "tray_open",
            "io-status"
        ]
    );
    assert_eq!(
        (&b["removable"], &b["tray_open"]),
        (&Value::Bool(true), &Value::Bool(false))
    );
    g.add_drive("e", &drive(&[("if", "none")])).unwrap();
    let e = g.attach("e", "/q", AttachOptions::default()).err().unwrap();
    assert_eq!(e.full(), "Device needs media, but drive is empty");
    // Options for a format still need a file, as QEMU's blockdev_init.
    let e = g
        .add_drive("f", &drive(&[("format", "raw")]))
        .err()
        .unwrap();
    assert_eq!(e.full(), "A block device must be specified for \"file\"");
}

/// blockdev.c blockdev_auto_del: unplugging the device of a `-drive` drops
/// the drive and the nodes only it held; a `-blockdev` node stays.
#[test]
fn auto_del_drops_a_drive_with_its_device() {
    let img = TempImage::new("ad", 1 << 20);
    let mut g = BlockGraph::new();
    g.add_drive("d0", &drive(&[("file", img.path()), ("format", "raw")]))
        .unwrap();
    let bb = g.attach("d0", "scsi0", AttachOptions::default()).unwrap();
    assert!(g.auto_del(&bb).is_empty());
    assert_eq!(g.query_block(), Value::Array(vec![]));
    assert!(g.nodes().is_empty());
}
