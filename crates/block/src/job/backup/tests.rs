//! The copy state and the copy-before-write filter on real files, no VM.

use std::sync::Arc;

use super::{BlockCopy, CopyBeforeWrite};
use crate::graph::BlockGraph;
use crate::node::{FormatIo, Node};

const MIB: u64 = 1 << 20;

struct Files(Vec<std::path::PathBuf>);

impl Drop for Files {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// A raw node over a fresh file of `size` bytes, filled by `fill`.
fn raw_node(
    g: &mut BlockGraph,
    files: &mut Files,
    name: &str,
    size: u64,
    read_only: bool,
    fill: impl Fn(u64) -> u8,
) -> Arc<Node> {
    let p = std::path::PathBuf::from(format!(
        "/var/tmp/ferrovm-backup-{}-{name}.img",
        std::process::id()
    ));
    let data: Vec<u8> = (0..size).map(&fill).collect();
    std::fs::write(&p, data).unwrap();
    files.0.push(p.clone());
    let mut o = serde_json::Map::new();
    o.insert("driver".into(), "raw".into());
    o.insert("node-name".into(), name.into());
    o.insert("read-only".into(), read_only.to_string().into());
    o.insert("file.driver".into(), "file".into());
    o.insert("file.filename".into(), p.to_str().unwrap().into());
    g.add_blockdev(&o).unwrap()
}

fn old(i: u64) -> u8 {
    (i / 4096 % 251) as u8 + 1
}

fn read_all(n: &Arc<Node>, size: u64) -> Vec<u8> {
    let mut b = vec![0u8; size as usize];
    super::NodeIo::new(n).read(0, &mut b).unwrap();
    b
}

#[test]
fn guest_writes_through_the_filter_leave_the_point_in_time_copy() {
    let mut g = BlockGraph::new();
    let mut f = Files(Vec::new());
    let src = raw_node(&mut g, &mut f, "s1", 4 * MIB, false, old);
    let tgt = raw_node(&mut g, &mut f, "t1", 4 * MIB, false, |_| 0);
    let bc = Arc::new(BlockCopy::new(&src, &tgt, 64 << 10).unwrap());
    let cbw = CopyBeforeWrite { bc: bc.clone() };
    // Partial-cluster writes, a write-zeroes and a discard across clusters.
    cbw.write(100, &[0xee; 5000]).unwrap();
    cbw.write(3 * MIB - 10, &[0xdd; 70_000]).unwrap();
    cbw.write_zeroes(MIB, 200_000, false).unwrap();
    // Only the clusters the writes touched were copied so far.
    let copied = 4 * MIB - bc.todo.count();
    // 0..5100: cluster 0; 3M-10..+70000: 47-49; 1M..+200000: 16-19.
    assert_eq!(copied, (1 + 3 + 4) * (64 << 10));
    let mut buf = Vec::new();
    assert_eq!(
        bc.copy_range(0, 4 * MIB, &mut buf).unwrap(),
        4 * MIB - copied
    );
    assert_eq!(bc.todo.count(), 0);
    let want: Vec<u8> = (0..4 * MIB).map(old).collect();
    assert!(
        read_all(&tgt, 4 * MIB) == want,
        "target is the source as it was"
    );
    let now = read_all(&src, 4 * MIB);
    assert_eq!(&now[100..5100], &[0xee; 5000][..]);
    assert!(now[MIB as usize..MIB as usize + 200_000]
        .iter()
        .all(|&b| b == 0));
}

#[test]
fn concurrent_guest_writes_and_background_copy_agree() {
    let mut g = BlockGraph::new();
    let mut f = Files(Vec::new());
    let size = 8 * MIB;
    let src = raw_node(&mut g, &mut f, "s2", size, false, old);
    let tgt = raw_node(&mut g, &mut f, "t2", size, false, |_| 0);
    let bc = Arc::new(BlockCopy::new(&src, &tgt, 64 << 10).unwrap());
    let writers: Vec<_> = (0..3u64)
        .map(|t| {
            let cbw = CopyBeforeWrite { bc: bc.clone() };
            std::thread::spawn(move || {
                for i in 0..200u64 {
                    let off = (i * 7919 + t * 104_729) * 4096 % (size - 8192);
                    cbw.write(off, &[0x80 + t as u8; 8192]).unwrap();
                }
            })
        })
        .collect();
    let mut buf = Vec::new();
    let mut off = 0;
    while off < size {
        bc.copy_range(off, MIB, &mut buf).unwrap();
        off += MIB;
    }
    for w in writers {
        w.join().unwrap();
    }
    let want: Vec<u8> = (0..size).map(old).collect();
    assert!(
        read_all(&tgt, size) == want,
        "the target is the source at the start"
    );
}

#[test]
fn a_failed_target_write_fails_the_guest_write_and_keeps_the_cluster_to_copy() {
    let mut g = BlockGraph::new();
    let mut f = Files(Vec::new());
    let src = raw_node(&mut g, &mut f, "s3", MIB, false, old);
    // Opened read-only: every write to it fails.
    let tgt = raw_node(&mut g, &mut f, "t3", MIB, true, |_| 0);
    let bc = Arc::new(BlockCopy::new(&src, &tgt, 64 << 10).unwrap());
    let cbw = CopyBeforeWrite { bc: bc.clone() };
    assert!(cbw.write(0, &[1; 512]).is_err());
    // Neither the source changed nor the cluster was marked copied.
    assert_eq!(
        read_all(&src, MIB)[..512],
        (0..512).map(old).collect::<Vec<_>>()[..]
    );
    assert_eq!(bc.todo.count(), MIB);
    let mut buf = Vec::new();
    let (_, is_read) = bc.copy_range(0, MIB, &mut buf).unwrap_err();
    assert!(!is_read, "the target write failed, not the source read");
}
