//! The quorum driver over `file` nodes: votes, events, repairs and a
//! replaced child, as QEMU 7.2's block/quorum.c behaves (expectations
//! from its code and from 041 TestRepairQuorum).

use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{json, Map, Value};

use crate::events::{set_sink, NodeEvent};
use crate::graph::BlockGraph;
use crate::job::nodeio::NodeIo;
use crate::node::{FormatIo, Node};

/// Every event raised in this test binary; each test looks at its own
/// nodes' (their names are unique).
fn events() -> &'static Mutex<Vec<NodeEvent>> {
    static EV: OnceLock<&'static Mutex<Vec<NodeEvent>>> = OnceLock::new();
    EV.get_or_init(|| {
        let ev: &'static Mutex<Vec<NodeEvent>> = Box::leak(Box::new(Mutex::new(Vec::new())));
        set_sink(Arc::new(move |e| ev.lock().unwrap().push(e)));
        ev
    })
}

fn events_of(prefix: &str) -> Vec<NodeEvent> {
    events()
        .lock()
        .unwrap()
        .iter()
        .filter(|e| match e {
            NodeEvent::QuorumReportBad { node_name, .. }
            | NodeEvent::QuorumFailure { node_name, .. } => node_name.starts_with(prefix),
        })
        .cloned()
        .collect()
}

struct Files(Vec<std::path::PathBuf>);

impl Drop for Files {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn map(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

/// `n` file nodes `{p}f0`... of 64 KiB and a quorum `{p}q` over them.
fn quorum(p: &str, n: usize, extra: Value) -> (BlockGraph, Arc<Node>, Files) {
    events();
    let mut g = BlockGraph::new();
    let mut files = Files(Vec::new());
    let mut children = Vec::new();
    for i in 0..n {
        let path =
            std::env::temp_dir().join(format!("ferrovm-quorum-{}-{p}{i}", std::process::id()));
        std::fs::write(&path, vec![0u8; 65536]).unwrap();
        g.add_blockdev(&map(json!({
            "driver": "file", "node-name": format!("{p}f{i}"),
            "filename": path.to_str().unwrap(),
        })))
        .unwrap();
        files.0.push(path);
        children.push(Value::from(format!("{p}f{i}")));
    }
    let mut o =
        map(json!({"driver": "quorum", "node-name": format!("{p}q"), "children": children}));
    for (k, v) in map(extra) {
        o.insert(k, v);
    }
    let q = g.add_blockdev(&o).unwrap();
    (g, q, files)
}

fn io(n: &Arc<Node>) -> NodeIo {
    NodeIo::new(n)
}

fn child(g: &BlockGraph, name: &str) -> Arc<Node> {
    g.node(name).cloned().unwrap()
}

fn bad(op: &'static str, node: &str, error: Option<&str>, sector: u64, count: u64) -> NodeEvent {
    NodeEvent::QuorumReportBad {
        op,
        error: error.map(str::to_string),
        node_name: node.into(),
        sector_num: sector,
        sectors_count: count,
    }
}

#[test]
fn writes_reach_every_child_and_agreeing_reads_raise_nothing() {
    let (g, q, _f) = quorum("wr", 3, json!({"vote-threshold": 2}));
    io(&q).write(4096, &[0x5a; 4096]).unwrap();
    for i in 0..3 {
        let mut b = [0u8; 4096];
        io(&child(&g, &format!("wrf{i}")))
            .read(4096, &mut b)
            .unwrap();
        assert_eq!(b, [0x5a; 4096]);
    }
    let mut b = [0u8; 4096];
    io(&q).read(4096, &mut b).unwrap();
    assert_eq!(b, [0x5a; 4096]);
    assert_eq!(events_of("wr"), vec![]);
    assert_eq!(q.size().unwrap(), 65536);
}

#[test]
fn a_corrupt_child_is_outvoted_and_reported_bad() {
    let (g, q, _f) = quorum("one", 3, json!({"vote-threshold": 2}));
    io(&q).write(0, &[1; 4096]).unwrap();
    io(&child(&g, "onef1")).write(1024, &[9; 512]).unwrap();
    let mut b = [0u8; 4096];
    io(&q).read(0, &mut b).unwrap();
    assert_eq!(b, [1; 4096]);
    // quorum_report_bad_versions: no error member, the whole request.
    assert_eq!(events_of("one"), vec![bad("read", "onef1", None, 0, 8)]);
    // Without rewrite-corrupted the child stays as it was.
    let mut c = [0u8; 512];
    io(&child(&g, "onef1")).read(1024, &mut c).unwrap();
    assert_eq!(c, [9; 512]);
}

#[test]
fn two_different_corruptions_fail_the_read_with_quorum_failure() {
    let (g, q, _f) = quorum("two", 3, json!({"vote-threshold": 2}));
    io(&q).write(0, &[1; 1024]).unwrap();
    io(&child(&g, "twof1")).write(0, &[2; 512]).unwrap();
    io(&child(&g, "twof2")).write(0, &[3; 512]).unwrap();
    let mut b = [0u8; 1024];
    assert_eq!(io(&q).read(512, &mut b[..512]), Ok(()));
    assert_eq!(io(&q).read(0, &mut b), Err(libc::EIO));
    assert_eq!(
        events_of("two"),
        vec![NodeEvent::QuorumFailure {
            node_name: "twoq".into(),
            sector_num: 0,
            sectors_count: 2,
        }]
    );
}

#[test]
fn rewrite_corrupted_repairs_the_minority() {
    let (g, q, _f) = quorum(
        "rw",
        3,
        json!({"vote-threshold": 2, "rewrite-corrupted": true}),
    );
    io(&q).write(0, &[7; 4096]).unwrap();
    io(&child(&g, "rwf2")).write(0, &[0; 4096]).unwrap();
    let mut b = [0u8; 4096];
    io(&q).read(0, &mut b).unwrap();
    assert_eq!(b, [7; 4096]);
    io(&child(&g, "rwf2")).read(0, &mut b).unwrap();
    assert_eq!(b, [7; 4096]);
    assert_eq!(events_of("rw"), vec![bad("read", "rwf2", None, 0, 8)]);
}

#[test]
fn fifo_reads_the_first_child_without_voting() {
    let (g, q, _f) = quorum(
        "fifo",
        2,
        json!({"vote-threshold": 1, "read-pattern": "fifo"}),
    );
    io(&child(&g, "fifof0")).write(0, &[4; 512]).unwrap();
    let mut b = [0u8; 512];
    io(&q).read(0, &mut b).unwrap();
    assert_eq!(b, [4; 512]);
    assert_eq!(events_of("fifo"), vec![]);
}

#[test]
fn option_errors_are_qemus() {
    let (mut g, _q, _f) = quorum("opt", 2, json!({"vote-threshold": 1}));
    let mut err = |v: Value| {
        let mut o = map(json!({"driver": "quorum", "node-name": "optx",
                               "children": ["optf0", "optf1"]}));
        for (k, x) in map(v) {
            o.insert(k, x);
        }
        g.add_blockdev(&o).err().map(|e| e.msg)
    };
    // Observed on QEMU 7.2 (blockdev-add).
    assert_eq!(
        err(json!({"vote-threshold": 0})).as_deref(),
        Some("Parameter 'vote-threshold' expects a value >= 1")
    );
    assert_eq!(
        err(json!({"vote-threshold": 3})).as_deref(),
        Some("threshold may not exceed children count")
    );
    assert_eq!(
        err(json!({"vote-threshold": 1, "children": []})).as_deref(),
        Some("Number of provided children must be 1 or more")
    );
    assert_eq!(
        err(json!({"vote-threshold": 1, "blkverify": true})).as_deref(),
        Some("blkverify=on can only be set if there are exactly two files and vote-threshold is 2")
    );
    assert_eq!(
        err(json!({"vote-threshold": 2, "blkverify": true, "rewrite-corrupted": true})).as_deref(),
        Some("rewrite-corrupted=on cannot be used with blkverify=on")
    );
    assert_eq!(
        err(json!({"vote-threshold": 1, "children": ["nosuch"]})).as_deref(),
        Some("Cannot find device='nosuch' nor node-name='nosuch'")
    );
}

#[test]
fn children_edges_are_numbered_and_a_replaced_child_takes_the_io() {
    let (mut g, q, _f) = quorum("rep", 3, json!({"vote-threshold": 2}));
    let roles: Vec<String> = q.children().iter().map(|c| c.role.to_string()).collect();
    assert_eq!(roles, ["children.0", "children.1", "children.2"]);
    let path = std::env::temp_dir().join(format!("ferrovm-quorum-{}-rep3", std::process::id()));
    std::fs::write(&path, vec![6u8; 65536]).unwrap();
    let _f2 = Files(vec![path.clone()]);
    let new = g
        .add_blockdev(&map(json!({"driver": "file", "node-name": "repnew",
                                  "filename": path.to_str().unwrap()})))
        .unwrap();
    let old = child(&g, "repf1");
    // 041 test_with_other_parent: a second parent forbids the swap; the
    // quorum alone allows it; a node that is not a child never.
    g.add_blockdev(&map(
        json!({"driver": "raw", "node-name": "reptop", "file": "repf2"}),
    ))
    .unwrap();
    assert!(g.recurse_can_replace(&q, &old));
    assert!(!g.recurse_can_replace(&q, &child(&g, "repf2")));
    // Any other holder of permissions counts too (an NBD export's
    // BlockBackend outside the graph's list).
    let export = crate::node::new_parent_id();
    old.set_parent_perm(
        export,
        Some((crate::perm::CONSISTENT_READ, crate::perm::ALL)),
    )
    .unwrap();
    assert!(!g.recurse_can_replace(&q, &old));
    let e = g.check_to_replace_node(&q, "repf1").err().map(|e| e.msg);
    assert_eq!(
        e.as_deref(),
        Some("Cannot replace 'repf1' by a node mirrored from 'repq', because it cannot be guaranteed that doing so would not lead to an abrupt change of visible data")
    );
    old.set_parent_perm(export, None).unwrap();
    assert!(!g.recurse_can_replace(&q, &new));
    g.replace_node(&old, &new).unwrap();
    assert!(Arc::ptr_eq(&q.child("children.1").unwrap(), &new));
    let mut b = [0u8; 512];
    io(&q).read(0, &mut b).unwrap();
    assert_eq!(b, [0; 512]);
    assert_eq!(events_of("rep"), vec![bad("read", "repnew", None, 0, 1)]);
}
