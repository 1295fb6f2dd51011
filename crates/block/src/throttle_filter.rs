//! The `throttle` filter (QEMU 7.2 block/throttle.c): I/O through it waits
//! for the buckets of a throttle group (`throttle-group`, an existing
//! group: a `throttle-group` object's, or a drive's), which every member
//! of the group shares; everything passes through to `file`.

use std::sync::Arc;

use crate::error::BlockError;
use crate::io::IoBuf;
use crate::job::nodeio::NodeIo;
use crate::node::{Driver, FormatIo, Node};
use crate::perm;
use crate::throttle::Throttle;

pub struct ThrottleFilter {
    /// Changes when a job's pivot replaces the filtered node.
    file: std::sync::RwLock<Arc<Node>>,
    member: Arc<Throttle>,
}

impl ThrottleFilter {
    /// `throttle_open`: `throttle_parse_options`' checks, then
    /// `throttle_group_register_tgm`.
    pub fn open(file: Arc<Node>, group: Option<String>) -> Result<Self, BlockError> {
        let group = group.ok_or_else(|| BlockError::new("Please specify a throttle group"))?;
        if !crate::throttle::group_exists(&group) {
            return Err(BlockError::new(format!(
                "Throttle group '{group}' does not exist"
            )));
        }
        let member = Throttle::join(&group).map_err(|e| BlockError::new(e.to_string()))?;
        Ok(ThrottleFilter {
            file: std::sync::RwLock::new(file),
            member: Arc::new(member),
        })
    }

    fn file(&self) -> Arc<Node> {
        self.file.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The group this node is a member of.
    pub fn group_name(&self) -> &str {
        self.member.group_name()
    }
}

impl Driver for ThrottleFilter {
    fn format_name(&self) -> &'static str {
        "throttle"
    }

    /// `bdrv_refresh_filename`: a `json:` name, `throttle-group` first
    /// (observed on QEMU 7.2 over null-co).
    fn filename(&self) -> String {
        let mut m = serde_json::Map::new();
        m.insert("throttle-group".into(), self.group_name().into());
        m.insert("driver".into(), "throttle".into());
        m.insert(
            "file".into(),
            crate::qcow2_node::node_open_options(&self.file()),
        );
        format!(
            "json:{}",
            crate::qcow2_node::qobject_json(&serde_json::Value::Object(m))
        )
    }

    fn size(&self) -> Result<u64, BlockError> {
        self.file().size()
    }

    fn actual_size(&self) -> Option<u64> {
        self.file().driver.actual_size()
    }

    fn truncate(&self, size: u64) -> Result<(), BlockError> {
        self.file().driver.truncate(size)
    }

    fn is_filter(&self) -> bool {
        true
    }

    /// `bdrv_replace_node` over the filtered node: requests follow.
    fn replace_child(&self, role: &str, new: &Arc<Node>) -> Result<(), BlockError> {
        if role != "file" {
            return Err(BlockError::new(format!("no '{role}' child")));
        }
        *self.file.write().unwrap_or_else(|e| e.into_inner()) = new.clone();
        Ok(())
    }

    fn has_info(&self) -> bool {
        self.file().driver.has_info()
    }

    /// `bdrv_default_perms` for a filtered child: everything passes through.
    fn child_perm(&self, _role: &str, p: u64, shared: u64) -> (u64, u64) {
        let np = p & perm::DEFAULT_PERM_PASSTHROUGH;
        let ns = (shared & perm::DEFAULT_PERM_PASSTHROUGH) | perm::DEFAULT_PERM_UNCHANGED;
        (np, ns)
    }

    fn block_status(&self, off: u64, len: u64) -> Result<(bool, u64), i32> {
        self.file().driver.block_status(off, len)
    }

    fn format_io(&self) -> Option<Arc<dyn FormatIo>> {
        Some(Arc::new(ThrottleIo {
            member: self.member.clone(),
            io: NodeIo::new(&self.file()),
        }))
    }
}

struct ThrottleIo {
    member: Arc<Throttle>,
    io: NodeIo,
}

impl ThrottleIo {
    /// `throttle_group_co_io_limits_intercept`: waits until the group's
    /// scheduler lets a request of `bytes` in this direction go.
    fn intercept(&self, write: bool, bytes: u64) {
        let (tx, rx) = std::sync::mpsc::channel();
        self.member.submit(
            write,
            bytes,
            Box::new(move || {
                let _ = tx.send(());
            }),
        );
        // The job runs (or is dropped, when the member leaves) exactly once.
        let _ = rx.recv();
    }
}

/// Reads, writes, zero writes and discards count (`throttle_co_*`);
/// flushes do not.
impl FormatIo for ThrottleIo {
    fn read(&self, off: u64, buf: &mut [u8]) -> Result<(), i32> {
        self.intercept(false, buf.len() as u64);
        self.io.read(off, buf)
    }
    fn readv(&self, off: u64, bufs: &[IoBuf]) -> Result<(), i32> {
        self.intercept(false, crate::iovec::total(bufs) as u64);
        self.io.readv(off, bufs)
    }
    fn write(&self, off: u64, buf: &[u8]) -> Result<(), i32> {
        self.intercept(true, buf.len() as u64);
        self.io.write(off, buf)
    }
    fn flush(&self) -> Result<(), i32> {
        self.io.flush()
    }
    fn discard(&self, off: u64, len: u64) -> Result<(), i32> {
        self.intercept(true, len);
        self.io.discard(off, len)
    }
    fn write_zeroes(&self, off: u64, len: u64, may_unmap: bool) -> Result<(), i32> {
        self.intercept(true, len);
        self.io.write_zeroes(off, len, may_unmap)
    }
    fn debug_event(&self, ev: crate::debug::DebugEvent) {
        self.io.debug_event(ev);
    }
}

#[cfg(test)]
mod tests {
    use crate::BlockGraph;
    use serde_json::{json, Map, Value};
    use std::time::{Duration, Instant};

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn opens_only_over_an_existing_group() {
        let mut g = BlockGraph::new();
        g.add_blockdev(&map(json!({"driver": "null-co", "node-name": "n"})))
            .unwrap();
        let add = |g: &mut BlockGraph, v: Value| {
            g.add_blockdev(&map(v)).map(|_| ()).map_err(|e| e.full())
        };
        assert_eq!(
            add(
                &mut g,
                json!({"driver": "throttle", "node-name": "f", "file": "n"})
            ),
            Err("Parameter 'throttle-group' is missing".into())
        );
        assert_eq!(
            add(
                &mut g,
                json!({"driver": "throttle", "node-name": "f", "file": "n",
                       "throttle-group": "tf-none"})
            ),
            Err("Throttle group 'tf-none' does not exist".into())
        );
        g.object_add("throttle-group", "tf-a", &Map::new(), false)
            .unwrap();
        add(
            &mut g,
            json!({"driver": "throttle", "node-name": "f", "file": "n",
                   "throttle-group": "tf-a"}),
        )
        .unwrap();
        let f = g.node("f").unwrap().clone();
        assert_eq!(
            f.filename(),
            r#"json:{"throttle-group": "tf-a", "driver": "throttle", "file": {"driver": "null-co"}}"#
        );
        assert_eq!(
            g.object_del("tf-a").unwrap_err().msg,
            "object 'tf-a' is in use, can not be deleted"
        );
        drop(f);
        g.blockdev_del("f").unwrap();
        g.object_del("tf-a").unwrap();
        assert_eq!(
            g.object_del("tf-a").unwrap_err().msg,
            "object 'tf-a' not found"
        );
    }

    /// Two filters in one group share its budget: what both write in a
    /// time is at most the limit over that time plus the bucket's burst
    /// (avg / 10) and one request each.
    #[test]
    fn members_share_the_group_budget() {
        const BPS: u64 = 1 << 20;
        const REQ: usize = 32 << 10;
        let mut g = BlockGraph::new();
        g.object_add(
            "throttle-group",
            "tf-b",
            &map(json!({"x-bps-total": BPS})),
            false,
        )
        .unwrap();
        for i in 0..2 {
            g.add_blockdev(&map(json!({
                "driver": "throttle", "node-name": format!("f{i}"),
                "throttle-group": "tf-b",
                "file": {"driver": "null-co"}
            })))
            .unwrap();
        }
        let ios: Vec<_> = (0..2)
            .map(|i| {
                g.node(&format!("f{i}"))
                    .unwrap()
                    .driver
                    .format_io()
                    .unwrap()
            })
            .collect();
        let start = Instant::now();
        let run = Duration::from_millis(600);
        let total: u64 = std::thread::scope(|s| {
            let hs: Vec<_> = ios
                .iter()
                .map(|io| {
                    s.spawn(move || {
                        let buf = vec![0u8; REQ];
                        let mut n = 0u64;
                        while start.elapsed() < run {
                            io.write(0, &buf).unwrap();
                            n += REQ as u64;
                        }
                        n
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum()
        });
        let t = start.elapsed().as_secs_f64();
        let bound = (BPS as f64 * t) as u64 + BPS / 10 + 2 * REQ as u64;
        assert!(total <= bound, "{total} bytes in {t:.3}s, bound {bound}");
        // And the limit is a rate, not a stop: more than the burst went.
        assert!(total > BPS / 10 + 2 * REQ as u64, "{total}");
    }
}
