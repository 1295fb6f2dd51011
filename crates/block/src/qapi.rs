//! QMP data in QEMU 7.2's shape (block/qapi.c): `query-block`,
//! `query-blockstats`, `query-named-block-nodes`. Members are inserted in
//! QAPI declaration order (qapi/block-core.json); QEMU's own output order
//! (its QDict hash order) is the qmp crate's business.

use std::sync::atomic::Ordering;

use serde_json::{json, Map, Value};

use crate::graph::BlockGraph;
use crate::io::BlockBackend;
use crate::node::Node;
use crate::policy::OnError;
use crate::stats::Stats;

/// `bdrv_query_image_info` for a raw or file node.
fn image_info(n: &Node) -> Value {
    let mut m = Map::new();
    m.insert("filename".into(), json!(n.filename()));
    m.insert("format".into(), json!(n.driver.format_name()));
    // bdrv_get_info succeeds for raw and file: dirty-flag false.
    m.insert("dirty-flag".into(), json!(false));
    if let Some(a) = n.driver.actual_size() {
        m.insert("actual-size".into(), json!(a));
    }
    m.insert("virtual-size".into(), json!(n.size().unwrap_or(0)));
    Value::Object(m)
}

/// `bdrv_block_device_info` (`BlockDeviceInfo`).
fn block_device_info(bb: Option<&BlockBackend>, n: &Node) -> Value {
    let mut m = Map::new();
    m.insert("file".into(), json!(n.filename()));
    m.insert("node-name".into(), json!(n.name));
    m.insert("ro".into(), json!(n.flags.read_only));
    m.insert("drv".into(), json!(n.driver.format_name()));
    m.insert("backing_file_depth".into(), json!(0));
    m.insert("encrypted".into(), json!(false));
    m.insert("detect_zeroes".into(), json!(n.detect_zeroes));
    for k in ["bps", "bps_rd", "bps_wr", "iops", "iops_rd", "iops_wr"] {
        m.insert(k.into(), json!(0));
    }
    m.insert("image".into(), image_info(n));
    m.insert(
        "cache".into(),
        json!({
            "writeback": bb.is_none_or(|b| b.write_cache()),
            "direct": n.flags.direct,
            "no-flush": n.flags.no_flush,
        }),
    );
    m.insert("write_threshold".into(), json!(0));
    Value::Object(m)
}

/// `bdrv_query_bds_stats(bs, false)`: a node's own (mostly zero) stats.
fn node_stats(n: &Node) -> Value {
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
    if let Some(c) = n.child("file") {
        m.insert("parent".into(), node_stats(c));
    }
    if let Some(c) = n.child("backing") {
        m.insert("backing".into(), node_stats(c));
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
                m.insert("removable".into(), json!(false));
                m.insert("locked".into(), json!(false));
                if let Some(r) = b.root() {
                    m.insert("inserted".into(), block_device_info(Some(b), r));
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

    /// `query-named-block-nodes` (newest node first, as QEMU's list prepend).
    pub fn query_named_block_nodes(&self) -> Value {
        Value::Array(
            self.nodes()
                .iter()
                .rev()
                .map(|n| block_device_info(None, n))
                .collect(),
        )
    }

    /// `query-blockstats` (`query-nodes`: every node instead of every backend).
    pub fn query_blockstats(&self, query_nodes: bool) -> Value {
        if query_nodes {
            return Value::Array(self.nodes().iter().map(|n| node_stats(n)).collect());
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
                    if let Some(c) = r.child("file") {
                        m.insert("parent".into(), node_stats(c));
                    }
                }
                Value::Object(m)
            })
            .collect();
        Value::Array(list)
    }
}
