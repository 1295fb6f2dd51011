mod common;
use block::{AttachOptions, BlockGraph};
use common::*;
use serde_json::json;

fn auto_name_ok(n: &str, counter: &str) -> bool {
    // QEMU util/id.c: "#block" + counter + "%02d" random.
    n.len() == 6 + counter.len() + 2
        && n.starts_with(&format!("#block{counter}"))
        && n[6 + counter.len()..].chars().all(|c| c.is_ascii_digit())
}

#[test]
fn drive_creates_raw_over_file_with_qemu_automatic_names() {
    let img = TempImage::new("names", 1 << 20);
    let mut g = BlockGraph::new();
    let bb = g
        .add_drive("d0", &drive(&[("file", img.path()), ("format", "raw")]))
        .unwrap();
    let root = bb.root().unwrap();
    assert_eq!(root.driver.format_name(), "raw");
    let file = root.child("file").unwrap();
    assert_eq!(file.driver.format_name(), "file");
    // QEMU 7.2 named them #block001-like (file, counter 0) and #block157-like (raw).
    assert!(auto_name_ok(&file.name, "0"), "{}", file.name);
    assert!(auto_name_ok(&root.name, "1"), "{}", root.name);
    assert_eq!(bb.name(), "d0");
    assert_eq!(bb.size(), 1 << 20);
}

#[test]
fn blockdev_by_reference_dotted_and_inline_json() {
    let img = TempImage::new("bd", 1 << 20);
    let mut g = BlockGraph::new();
    g.add_blockdev(&drive(&[
        ("driver", "file"),
        ("node-name", "f0"),
        ("filename", img.path()),
    ]))
    .unwrap();
    let r0 = g
        .add_blockdev(&drive(&[
            ("driver", "raw"),
            ("node-name", "r0"),
            ("file", "f0"),
        ]))
        .unwrap();
    assert_eq!(r0.child("file").unwrap().name, "f0");
    let r1 = g
        .add_blockdev(&drive(&[
            ("driver", "raw"),
            ("node-name", "r1"),
            ("file.driver", "file"),
            ("file.filename", img.path()),
            ("file.locking", "off"),
        ]))
        .unwrap();
    assert!(r1.child("file").unwrap().auto_named);
    let r2 = g
        .add_blockdev(&json(
            json!({"driver": "raw", "node-name": "r2", "offset": 512, "size": 1024,
            "file": {"driver": "file", "filename": img.path(), "locking": "off"}}),
        ))
        .unwrap();
    assert_eq!(r2.size().unwrap(), 1024);
    let bb = g
        .attach(
            "r0",
            "/machine/peripheral/vd0/virtio-backend",
            AttachOptions::default(),
        )
        .unwrap();
    assert_eq!(bb.name(), "");
}

fn err(g: &mut BlockGraph, o: serde_json::Map<String, serde_json::Value>) -> String {
    g.add_blockdev(&o).err().expect("must fail").msg
}

#[test]
fn blockdev_errors_use_qemus_text() {
    let img = TempImage::new("errs", 1 << 20);
    let mut g = BlockGraph::new();
    // Texts from qemu-system-x86_64 7.2 -blockdev ...
    assert_eq!(
        err(&mut g, drive(&[("driver", "foo"), ("node-name", "x")])),
        "Parameter 'driver' does not accept value 'foo'"
    );
    assert_eq!(
        err(&mut g, drive(&[("driver", "file"), ("node-name", "f0")])),
        "Parameter 'filename' is missing"
    );
    assert_eq!(
        err(
            &mut g,
            drive(&[
                ("driver", "file"),
                ("node-name", "9x"),
                ("filename", img.path())
            ])
        ),
        "Invalid node-name: '9x'"
    );
    assert_eq!(
        err(
            &mut g,
            drive(&[("driver", "raw"), ("node-name", "r0"), ("file", "nope")])
        ),
        "Cannot find device='nope' nor node-name='nope'"
    );
    assert_eq!(
        err(&mut g, drive(&[("driver", "raw"), ("node-name", "r0")])),
        "Parameter 'file' is missing"
    );
    assert_eq!(
        err(
            &mut g,
            drive(&[
                ("driver", "file"),
                ("node-name", "f0"),
                ("filename", img.path()),
                ("bogus", "1")
            ])
        ),
        "Parameter 'bogus' is unexpected"
    );
    g.add_blockdev(&drive(&[
        ("driver", "file"),
        ("node-name", "f0"),
        ("filename", img.path()),
        ("locking", "off"),
    ]))
    .unwrap();
    assert_eq!(
        err(
            &mut g,
            drive(&[
                ("driver", "file"),
                ("node-name", "f0"),
                ("filename", img.path())
            ])
        ),
        "Duplicate nodes with node-name='f0'"
    );
}

#[test]
fn drive_errors_use_qemus_text() {
    let img = TempImage::new("derrs", 1 << 20);
    let mut g = BlockGraph::new();
    let p = img.path();
    let e = |g: &mut BlockGraph, kv: &[(&str, &str)]| {
        g.add_drive("d", &drive(kv)).err().expect("must fail").msg
    };
    assert_eq!(
        e(
            &mut g,
            &[("file", p), ("format", "raw"), ("rerror", "enospc")]
        ),
        "'enospc' invalid read error action"
    );
    assert_eq!(
        e(&mut g, &[("file", p), ("format", "foo")]),
        "Unknown driver 'foo'"
    );
    assert_eq!(
        e(&mut g, &[("file", "/nonexistent/x"), ("format", "raw")]),
        "Could not open '/nonexistent/x': No such file or directory"
    );
    assert_eq!(
        e(&mut g, &[("file", p), ("format", "raw"), ("size", "1000")]),
        "Specified size is not multiple of 512"
    );
    assert_eq!(
        e(&mut g, &[("file", p), ("format", "raw"), ("bogus", "1")]),
        "Block format 'raw' does not support the option 'bogus'"
    );
    assert_eq!(
        e(&mut g, &[("file", p), ("format", "raw"), ("aio", "native")]),
        "aio=native was specified, but it requires cache.direct=on, which was not specified."
    );
    assert_eq!(
        e(&mut g, &[("format", "raw")]),
        "A block device must be specified for \"file\""
    );
}

#[test]
fn cache_modes_and_error_policy_defaults() {
    let img = TempImage::new("cache", 1 << 20);
    let mut g = BlockGraph::new();
    let p = img.path();
    let wt = g
        .add_drive(
            "a",
            &drive(&[
                ("file", p),
                ("format", "raw"),
                ("cache", "writethrough"),
                ("file.locking", "off"),
            ]),
        )
        .unwrap();
    assert!(!wt.write_cache());
    let ds = g
        .add_drive(
            "b",
            &drive(&[
                ("file", p),
                ("format", "raw"),
                ("cache", "directsync"),
                ("file.locking", "off"),
            ]),
        )
        .unwrap();
    assert!(!ds.write_cache());
    assert!(ds.root().unwrap().flags().direct);
    let un = g
        .add_drive(
            "c",
            &drive(&[
                ("file", p),
                ("format", "raw"),
                ("cache", "unsafe"),
                ("file.locking", "off"),
            ]),
        )
        .unwrap();
    assert!(un.write_cache() && un.root().unwrap().flags().no_flush);
    // Defaults: werror=enospc, rerror=report.
    use block::ErrorAction::*;
    assert_eq!(un.error_action(false, libc::ENOSPC), Stop);
    assert_eq!(un.error_action(false, libc::EIO), Report);
    assert_eq!(un.error_action(true, libc::ENOSPC), Report);
    let st = g
        .add_drive(
            "e",
            &drive(&[
                ("file", p),
                ("format", "raw"),
                ("werror", "ignore"),
                ("rerror", "stop"),
                ("file.locking", "off"),
            ]),
        )
        .unwrap();
    assert_eq!(st.error_action(false, libc::EIO), Ignore);
    assert_eq!(st.error_action(true, libc::EIO), Stop);
}

#[test]
fn block_resize_grows_file_and_tells_the_device() {
    let img = TempImage::new("resize", 1 << 20);
    let (mut g, bb) = attached_drive(&img, &[]);
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let s2 = seen.clone();
    bb.on_resize(move |n| s2.store(n, std::sync::atomic::Ordering::SeqCst));
    g.block_resize(Some("d0"), None, 2 << 20).unwrap();
    assert_eq!(std::fs::metadata(&img.0).unwrap().len(), 2 << 20);
    assert_eq!(bb.size(), 2 << 20);
    assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 2 << 20);
    let node = bb.root().unwrap().name.clone();
    g.block_resize(None, Some(&node), 1 << 19).unwrap();
    assert_eq!(bb.size(), 1 << 19);
    // qmp_block_resize texts.
    assert_eq!(
        g.block_resize(Some("d0"), None, -1).unwrap_err().msg,
        "Parameter 'size' expects a >0 size"
    );
    assert_eq!(
        g.block_resize(Some("nope"), None, 512).unwrap_err().msg,
        "Cannot find device='nope' nor node-name=''"
    );
    let fixed = g
        .add_drive(
            "d1",
            &drive(&[
                ("file", img.path()),
                ("format", "raw"),
                ("size", "512"),
                ("file.locking", "off"),
            ]),
        )
        .unwrap();
    assert_eq!(fixed.size(), 512);
    assert_eq!(
        g.block_resize(Some("d1"), None, 1024).unwrap_err().msg,
        "Cannot resize fixed-size raw disks"
    );
}

#[test]
fn blockdev_del_removes_unused_monitor_nodes_with_qemus_refusals() {
    let img = TempImage::new("del", 1 << 20);
    let mut g = BlockGraph::new();
    let obj = |v: serde_json::Value| v.as_object().unwrap().clone();
    g.add_blockdev(&obj(
        json!({"driver": "file", "node-name": "f0", "filename": img.path()}),
    ))
    .unwrap();
    g.add_blockdev(&obj(
        json!({"driver": "raw", "node-name": "r0", "file": "f0"}),
    ))
    .unwrap();
    assert_eq!(
        g.blockdev_del("nope").unwrap_err().msg,
        "Failed to find node with node-name='nope'"
    );
    assert_eq!(
        g.blockdev_del("f0").unwrap_err().msg,
        "Block device f0 is in use"
    );
    g.blockdev_del("r0").unwrap();
    assert!(g.node("r0").is_none());
    assert!(g.node("f0").is_some(), "f0 is the monitor's own node");
    g.blockdev_del("f0").unwrap();
    assert!(g.nodes().is_empty());
    let d = g
        .add_drive("d0", &drive(&[("file", img.path()), ("format", "raw")]))
        .unwrap();
    let root = d.root().unwrap().name.clone();
    assert_eq!(
        g.blockdev_del(&root).unwrap_err().msg,
        format!("Node {root} is in use")
    );
}
