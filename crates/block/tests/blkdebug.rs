//! blkdebug under qcow2 and raw (file= and backing file syntax), its rules
//! from a config file and from options, breakpoints, and the qemu-io
//! commands that drive it; data cross-checked with QEMU's qemu-io.

mod common;

use std::process::Command;
use std::sync::{Arc, Mutex};

use block::job::nodeio::NodeIo;
use block::node::FormatIo;
use block::qemu_io::{run, Sink, Target};
use common::{drive, json, TempImage};
use serde_json::json;

fn tool(name: &str, args: &[&str]) -> String {
    let o = Command::new(name).args(args).output().unwrap();
    assert!(
        o.status.success(),
        "{name} {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn qcow2(tag: &str, backing: Option<(&str, &str)>) -> TempImage {
    let img = TempImage::new(tag, 0);
    let mut args = vec!["create", "-q", "-f", "qcow2"];
    let o;
    if let Some((b, f)) = backing {
        o = format!("backing_file={b},backing_fmt={f}");
        args.extend(["-o", &o]);
    }
    args.extend([img.path(), "1M"]);
    tool("qemu-img", &args);
    img
}

#[derive(Default)]
struct Capture(Mutex<(String, String)>);

impl Sink for Capture {
    fn out(&self, s: &str) {
        self.0.lock().unwrap().0.push_str(s);
    }
    fn err(&self, s: &str) {
        self.0.lock().unwrap().1.push_str(s);
    }
}

impl Capture {
    fn take(&self) -> (String, String) {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

fn conf(text: &str) -> TempImage {
    let c = TempImage::new("conf", 0);
    std::fs::write(&c.0, text).unwrap();
    c
}

#[test]
fn injected_read_error_under_qcow2_fires_once() {
    let img = qcow2("top", None);
    tool(
        "qemu-io",
        &["-f", "qcow2", "-c", "write -P 0x11 0 64k", img.path()],
    );
    let c = conf("[inject-error]\nevent = \"read_aio\"\nerrno = \"5\"\nonce = \"on\"\n");
    let mut g = block::BlockGraph::new();
    let file = format!("blkdebug:{}:{}", c.path(), img.path());
    let bb = g
        .add_drive("d0", &drive(&[("file", &file), ("format", "qcow2")]))
        .unwrap();
    let root = bb.root().unwrap();
    let io = NodeIo::new(&root);
    let mut b = vec![0u8; 4096];
    assert_eq!(io.read(0, &mut b), Err(libc::EIO));
    io.read(0, &mut b).unwrap();
    assert!(b.iter().all(|x| *x == 0x11));
    // The nodes as QEMU lists them: qcow2 over blkdebug over file.
    let drv: Vec<String> = g
        .nodes()
        .iter()
        .map(|n| n.driver.format_name().into())
        .collect();
    assert_eq!(drv, ["blkdebug", "file", "qcow2"]);
    assert_eq!(root.filename(), file);
}

#[test]
fn backing_file_through_blkdebug_and_raw() {
    let base = TempImage::new("base", 1 << 20);
    tool(
        "qemu-io",
        &["-f", "raw", "-c", "write -P 0x22 0 1M", base.path()],
    );
    // 030's TestErrors rules: state 1 injects at sector 1024 and the state
    // flips on every read_aio.
    let c = conf(
        "[inject-error]\nstate = \"1\"\nevent = \"read_aio\"\nerrno = \"28\"\nimmediately = \"off\"\nonce = \"on\"\nsector = \"1024\"\n\n[set-state]\nstate = \"1\"\nevent = \"read_aio\"\nnew_state = \"2\"\n\n[set-state]\nstate = \"2\"\nevent = \"read_aio\"\nnew_state = \"1\"\n",
    );
    let backing = format!("blkdebug:{}:{}", c.path(), base.path());
    let top = qcow2("top", Some((&backing, "raw")));
    let mut g = block::BlockGraph::new();
    let bb = g
        .add_drive("d0", &drive(&[("file", top.path()), ("format", "qcow2")]))
        .unwrap();
    let io = NodeIo::new(&bb.root().unwrap());
    let mut b = vec![0u8; 512 << 10];
    io.read(0, &mut b).unwrap();
    assert!(b.iter().all(|x| *x == 0x22));
    assert_eq!(io.read(512 << 10, &mut b), Err(libc::ENOSPC));
    io.read(512 << 10, &mut b).unwrap();
    let q = g.query_named_block_nodes(false);
    let files: Vec<&str> = q
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["file"].as_str().unwrap())
        .collect();
    assert!(files.contains(&backing.as_str()), "{files:?}");
}

#[test]
fn blockdev_options_and_errors() {
    let img = TempImage::new("raw", 1 << 20);
    let mut g = block::BlockGraph::new();
    g.add_blockdev(&json(
        json!({"driver": "file", "node-name": "f", "filename": img.path()}),
    ))
    .unwrap();
    let e = g
        .add_blockdev(&json(
            json!({"driver": "blkdebug", "node-name": "d", "image": "f",
            "inject-error": [{"event": "nope"}]}),
        ))
        .err()
        .unwrap();
    assert_eq!(e.msg, "invalid parameter value: nope");
    let e = g
        .add_blockdev(&json(
            json!({"driver": "blkdebug", "node-name": "d", "image": "f", "align": 3}),
        ))
        .err()
        .unwrap();
    assert_eq!(e.msg, "Cannot meet constraints with align 3");
    let e = g
        .add_blockdev(&json(json!({"driver": "blkdebug", "node-name": "d"})))
        .err()
        .unwrap();
    assert_eq!(e.msg, "Parameter 'image' is missing");
    let d = g
        .add_blockdev(&json(
            json!({"driver": "blkdebug", "node-name": "d", "image": "f",
            "inject-error": [{"event": "write_aio", "errno": 28, "once": true}]}),
        ))
        .unwrap();
    g.add_blockdev(&json(
        json!({"driver": "raw", "node-name": "r", "file": "d"}),
    ))
    .unwrap();
    let r = NodeIo::new(g.node("r").unwrap());
    assert_eq!(r.write(0, &[1u8; 512]), Err(libc::ENOSPC));
    r.write(0, &[1u8; 512]).unwrap();
    assert!(d.filename().starts_with("json:"), "{}", d.filename());
}

#[test]
fn qemu_io_breakpoints_suspend_and_resume() {
    let img = TempImage::new("raw", 1 << 20);
    let mut g = block::BlockGraph::new();
    let file = format!("blkdebug::{}", img.path());
    let bb = g
        .add_drive("d0", &drive(&[("file", &file), ("format", "raw")]))
        .unwrap();
    let t = Target {
        node: bb.root().unwrap(),
        backend: Some(bb.clone()),
    };
    let cap = Arc::new(Capture::default());
    let sink: Arc<dyn Sink> = cap.clone();
    run(&t, "break write_aio bp", sink.clone());
    run(&t, "break bogus bp", sink.clone());
    assert_eq!(
        cap.take().0,
        "Could not set breakpoint: No such file or directory\n"
    );
    run(&t, "aio_write -P 0x5e 0 512", sink.clone());
    run(&t, "wait_break bp", sink.clone());
    assert_eq!(
        cap.take(),
        (String::new(), String::new()),
        "still suspended"
    );
    run(&t, "resume bp", sink.clone());
    run(&t, "aio_flush", sink.clone());
    let (out, _) = cap.take();
    assert!(
        out.starts_with("wrote 512/512 bytes at offset 0\n512 bytes, 1 ops; "),
        "{out}"
    );
    run(&t, "resume bp", sink.clone());
    assert_eq!(
        cap.take().0,
        "Could not resume request: No such file or directory\n"
    );
    run(&t, "remove_break bp", sink.clone());
    assert_eq!(
        cap.take().0,
        "Could not remove breakpoint bp: No such file or directory\n"
    );
    run(&t, "read -P 0x5e 0 512", sink.clone());
    assert!(cap.take().0.starts_with("read 512/512 bytes at offset 0\n"));
    run(&t, "read -P 0x5f 0 512", sink.clone());
    assert!(cap
        .take()
        .0
        .starts_with("Pattern verification failed at offset 0, 512 bytes\nread 512/512"));
    run(&t, "write -z 512 512", sink.clone());
    run(&t, "read 2M 512", sink.clone());
    run(&t, "bogus", sink.clone());
    run(&t, "read 0", sink.clone());
    let (out, err) = cap.take();
    assert!(out.contains("wrote 512/512 bytes at offset 512\n"), "{out}");
    assert!(out.contains("read failed: Input/output error\n"), "{out}");
    assert_eq!(
        err,
        "command \"bogus\" not found\nbad argument count 1 to read, expected at least 2 arguments\n"
    );
    drop((t, bb, g));
    // What ferrovm wrote, as QEMU reads it.
    tool(
        "qemu-io",
        &[
            "-f",
            "raw",
            "-c",
            "read -P 0x5e 0 512",
            "-c",
            "read -P 0 512 512",
            img.path(),
        ],
    );
}

#[test]
fn breakpoint_through_qcow2_suspends_the_request() {
    let img = qcow2("bp", None);
    let mut g = block::BlockGraph::new();
    let file = format!("blkdebug::{}", img.path());
    let bb = g
        .add_drive("d0", &drive(&[("file", &file), ("format", "qcow2")]))
        .unwrap();
    let t = Target {
        node: bb.root().unwrap(),
        backend: Some(bb.clone()),
    };
    let cap = Arc::new(Capture::default());
    let sink: Arc<dyn Sink> = cap.clone();
    // pause_drive / resume_drive as iotests.py does them.
    run(&t, "break read_aio bp_drive0", sink.clone());
    run(&t, "break write_aio bp_drive0", sink.clone());
    run(&t, "aio_write -P 7 64k 4k", sink.clone());
    run(&t, "wait_break bp_drive0", sink.clone());
    run(&t, "remove_break bp_drive0", sink.clone());
    run(&t, "aio_flush", sink.clone());
    assert!(cap
        .take()
        .0
        .starts_with("wrote 4096/4096 bytes at offset 65536\n"));
    run(&t, "flush", sink.clone());
    g.close_all();
    drop((t, bb, g));
    tool(
        "qemu-io",
        &["-f", "qcow2", "-c", "read -P 7 64k 4k", img.path()],
    );
}
