//! QMP data in QEMU 7.2's shape (block/qapi.c): `query-block`,
//! `query-blockstats`, `query-named-block-nodes`. Members are inserted in
//! QAPI declaration order (qapi/block-core.json); QEMU's own output order
//! (its QDict hash order) is the qmp crate's business.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::graph::BlockGraph;
use crate::io::BlockBackend;
use crate::node::Node;
use crate::policy::OnError;
use crate::stats::Stats;

/// `bdrv_skip_implicit_filters`.
fn skip_implicit(n: Arc<Node>) -> Arc<Node> {
    let mut n = n;
    while n.driver.is_implicit_filter() {
        match n.filter_or_cow_child() {
            Some(c) => n = c,
            None => break,
        }
    }
    n
}

/// `bdrv_query_image_info`; with `chain`, the backing images nested as
/// `backing-image` (`bdrv_block_device_info`'s loop down the chain);
/// `for_device`: query-block's view, which looks through
/// the filters a job made (bdrv_block_device_info with a BlockBackend).
fn image_info_as(n: &Node, chain: bool, for_device: bool) -> Value {
    let mut m = Map::new();
    m.insert("filename".into(), json!(n.filename()));
    m.insert("format".into(), json!(n.driver.format_name()));
    let q = n.driver.image_info();
    if n.driver.has_info() {
        m.insert(
            "dirty-flag".into(),
            json!(q.as_ref().is_some_and(|q| q.dirty)),
        );
    }
    if let Some(a) = n.driver.actual_size() {
        m.insert("actual-size".into(), json!(a));
    }
    m.insert("virtual-size".into(), json!(n.size().unwrap_or(0)));
    if q.is_none() && n.driver.is_filter() {
        // bdrv_get_info of a filter asks the node it filters.
        let mut f = n.filter_or_cow_child();
        while let Some(c) = f {
            if let Some(i) = c.driver.image_info() {
                m.insert("cluster-size".into(), json!(i.cluster_size));
                break;
            }
            f = c
                .driver
                .is_filter()
                .then(|| c.filter_or_cow_child())
                .flatten();
        }
    }
    if let Some(q) = &q {
        m.insert("cluster-size".into(), json!(q.cluster_size));
        if let Some(b) = &q.backing_file {
            m.insert("backing-filename".into(), json!(b));
            if let Some(f) = n.driver.full_backing_filename() {
                m.insert("full-backing-filename".into(), json!(f));
            }
            if let Some(f) = &q.backing_format {
                m.insert("backing-filename-format".into(), json!(f));
            }
        }
    }
    if chain {
        if let Some(c) = n.filter_or_cow_child() {
            let c = if for_device { skip_implicit(c) } else { c };
            m.insert("backing-image".into(), image_info_as(&c, true, for_device));
        }
    }
    if let Some(q) = &q {
        // ImageInfoSpecificQCow2, as qcow2_get_specific_info fills it.
        let mut d = Map::new();
        d.insert("compat".into(), json!(q.compat));
        if q.version >= 3 {
            d.insert("extended-l2".into(), json!(false));
            d.insert("lazy-refcounts".into(), json!(q.lazy_refcounts));
            d.insert("corrupt".into(), json!(q.corrupt));
        }
        d.insert("refcount-bits".into(), json!(q.refcount_bits));
        d.insert("compression-type".into(), json!("zlib"));
        m.insert(
            "format-specific".into(),
            json!({"type": "qcow2", "data": Value::Object(d)}),
        );
    }
    Value::Object(m)
}

/// How many backing nodes lie below `n`.
fn backing_depth(n: &Node, for_device: bool) -> u64 {
    n.filter_or_cow_child().map_or(0, |b| {
        let b = if for_device { skip_implicit(b) } else { b };
        1 + backing_depth(&b, for_device)
    })
}

/// `bdrv_block_device_info` (`BlockDeviceInfo`); `flat` leaves the backing
/// chain out (and reports depth 0, as QEMU 7.2 does).
fn block_device_info(bb: Option<&BlockBackend>, n: &Node, flat: bool) -> Value {
    let mut m = Map::new();
    m.insert("file".into(), json!(n.filename()));
    m.insert("node-name".into(), json!(n.name));
    m.insert("ro".into(), json!(n.flags().read_only));
    m.insert("drv".into(), json!(n.driver.format_name()));
    // `bs->backing_file`: what a format's header names; a job's filter
    // over its `backing` names none.
    if let Some(c) = n.child("backing").filter(|_| !n.driver.is_filter()) {
        m.insert("backing_file".into(), json!(c.filename()));
    }
    let depth = if flat {
        0
    } else {
        backing_depth(n, bb.is_some())
    };
    m.insert("backing_file_depth".into(), json!(depth));
    m.insert("encrypted".into(), json!(false));
    m.insert("detect_zeroes".into(), json!(n.detect_zeroes));
    let throttle = bb.and_then(|b| b.throttle());
    for (i, k) in crate::throttle::BUCKET_NAMES.iter().enumerate() {
        let v = throttle.as_ref().map_or(0, |(c, _)| c.buckets[i].avg);
        m.insert((*k).into(), json!(v));
    }
    m.insert("image".into(), image_info_as(n, !flat, bb.is_some()));
    m.insert(
        "cache".into(),
        json!({
            "writeback": bb.is_none_or(|b| b.write_cache()),
            "direct": n.flags().direct,
            "no-flush": n.flags().no_flush,
        }),
    );
    if let Some((c, group)) = &throttle {
        // block/qapi.c: each `*_max` (with its `*_max_length`) only when set.
        for (i, k) in crate::throttle::BUCKET_NAMES.iter().enumerate() {
            if c.buckets[i].max != 0 {
                m.insert(format!("{k}_max"), json!(c.buckets[i].max));
            }
        }
        for (i, k) in crate::throttle::BUCKET_NAMES.iter().enumerate() {
            if c.buckets[i].max != 0 {
                m.insert(format!("{k}_max_length"), json!(c.buckets[i].burst_length));
            }
        }
        if c.op_size != 0 {
            m.insert("iops_size".into(), json!(c.op_size));
        }
        m.insert("group".into(), json!(group));
    }
    m.insert("write_threshold".into(), json!(0));
    // bdrv_query_dirty_bitmaps: only when the node has some.
    let bitmaps = n.bitmaps.list();
    if !bitmaps.is_empty() {
        let v: Vec<Value> = bitmaps.iter().map(|b| b.info()).collect();
        m.insert("dirty-bitmaps".into(), Value::Array(v));
    }
    Value::Object(m)
}

/// `bdrv_query_bds_stats(bs, blk_level)`: a node's own (mostly zero)
/// stats, its primary child's as `parent`, and for a backend-level query
/// its backing's (or filtered child's) as `backing`.
fn node_stats(n: &Node, blk_level: bool) -> Value {
    let mut m = Map::new();
    m.insert("node-name".into(), json!(n.name));
    let zero = Stats::new(false);
    m.insert(
        "stats".into(),
        zero.to_json(n.wr_highest_offset.load(Ordering::Relaxed)),
    );
    if let Some(d) = n.driver.driver_specific_stats() {
        m.insert("driver-specific".into(), d);
    }
    if let Some(c) = n.primary_child() {
        m.insert("parent".into(), node_stats(&c, blk_level));
    }
    if blk_level {
        if let Some(c) = n.filter_or_cow_child() {
            m.insert("backing".into(), node_stats(&c, blk_level));
        }
    }
    Value::Object(m)
}

fn listed(b: &BlockBackend) -> bool {
    !b.name().is_empty() || b.inner.dev().qdev.is_some()
}

impl BlockGraph {
    /// `query-block`.
    pub fn query_block(&self) -> Value {
        let list: Vec<Value> = self
            .backends()
            .iter()
            .filter(|b| listed(b))
            .map(|b| {
                let d = b.inner.dev();
                let mut m = Map::new();
                m.insert("device".into(), json!(b.name()));
                if let Some(q) = &d.qdev {
                    m.insert("qdev".into(), json!(q));
                }
                m.insert("type".into(), json!("unknown"));
                // blk_dev_has_removable_media: without a device (or with
                // one that has no removable medium callbacks) QEMU says
                // true for none, false for virtio-blk.
                m.insert("removable".into(), json!(d.qdev.is_none() || d.removable));
                m.insert("locked".into(), json!(false));
                // "Skip automatically inserted nodes that the user isn't
                // aware of" (bdrv_query_info).
                if let Some(r) = b.root().map(skip_implicit) {
                    m.insert("inserted".into(), block_device_info(Some(b), &r, false));
                }
                // blk_dev_has_tray: the tray of a CD-ROM, which nothing opens
                // (no guest runs where ferrovm has one, see AttachOptions).
                if d.removable {
                    m.insert("tray_open".into(), json!(false));
                }
                // blk_iostatus_is_enabled: a device enabled it and a policy
                // other than report is set.
                let i = &b.inner;
                if d.iostatus_enabled
                    && (i.werror != OnError::Report || i.rerror != OnError::Report)
                {
                    m.insert("io-status".into(), json!(d.iostatus.as_str()));
                }
                Value::Object(m)
            })
            .collect();
        Value::Array(list)
    }

    /// `query-named-block-nodes` (newest node first, as QEMU's list
    /// prepend); `flat` leaves out the backing images.
    pub fn query_named_block_nodes(&self, flat: bool) -> Value {
        Value::Array(
            self.nodes()
                .iter()
                .rev()
                .map(|n| block_device_info(None, n, flat))
                .collect(),
        )
    }

    /// `query-blockstats` (`query-nodes`: every node instead of every backend).
    pub fn query_blockstats(&self, query_nodes: bool) -> Value {
        if query_nodes {
            return Value::Array(self.nodes().iter().map(|n| node_stats(n, false)).collect());
        }
        let list = self
            .backends()
            .iter()
            .filter(|b| listed(b))
            .map(|b| {
                let mut m = Map::new();
                m.insert("device".into(), json!(b.name()));
                if let Some(q) = &b.inner.dev().qdev {
                    m.insert("qdev".into(), json!(q));
                }
                if let Some(r) = b.root() {
                    m.insert("node-name".into(), json!(r.name));
                }
                m.insert("stats".into(), b.stats_json());
                if let Some(r) = b.root() {
                    if let Some(d) = r.driver.driver_specific_stats() {
                        m.insert("driver-specific".into(), d);
                    }
                    if let Some(c) = r.primary_child() {
                        m.insert("parent".into(), node_stats(&c, true));
                    }
                    if let Some(c) = r.filter_or_cow_child() {
                        m.insert("backing".into(), node_stats(&c, true));
                    }
                }
                Value::Object(m)
            })
            .collect();
        Value::Array(list)
    }
}
