//! The `quorum` driver (QEMU 7.2 block/quorum.c): N children holding the
//! same data. Reads vote over what the children return ([`vote`]); a
//! child outvoted or failing is reported (QUORUM_REPORT_BAD), no quorum
//! fails the read (QUORUM_FAILURE, EIO). Writes go to every child and
//! succeed when `vote-threshold` of them do. The children's edges are
//! named `children.0`, `children.1`, ... and a mirror with `replaces` may
//! swap one of them for its target ([`Driver::replace_child`]).

mod io;
pub mod vote;

use std::sync::{Arc, RwLock};

use serde_json::{Map, Value};

use crate::error::BlockError;
use crate::node::{Driver, FormatIo, Node};
use crate::options::Opts;
use crate::perm;

/// The options `quorum_open` reads, checked in its order
/// ([`QuorumConfig::parse`]) before the children open.
#[derive(Debug, Clone)]
pub struct QuorumConfig {
    pub threshold: usize,
    pub blkverify: bool,
    pub rewrite_corrupted: bool,
    /// `read-pattern=fifo`: read the first child that works.
    pub fifo: bool,
    /// The strong options as given, for the node's `json:` filename.
    given: Map<String, Value>,
}

/// `-drive`'s `vote-threshold=2` is a string; blockdev-add's a number.
fn take_number(o: &mut Opts, key: &str) -> Result<Option<i64>, BlockError> {
    match o.take(key) {
        None => Ok(None),
        Some(Value::Number(n)) => Ok(Some(n.as_i64().unwrap_or(i64::MAX))),
        Some(Value::String(s)) => s
            .parse::<i64>()
            .map(Some)
            .map_err(|_| BlockError::new(format!("Parameter '{key}' expects a number"))),
        Some(_) => Err(BlockError::new(format!(
            "Invalid parameter type for '{key}', expected: integer"
        ))),
    }
}

impl QuorumConfig {
    /// `quorum_open` up to the children: the threshold against their
    /// number `n`, the read pattern, blkverify and rewrite-corrupted.
    /// `qapi`: the options come through `-blockdev`/blockdev-add, where
    /// the QAPI visitor has its say first.
    pub fn parse(o: &mut Opts, n: usize, qapi: bool) -> Result<Self, BlockError> {
        // The options as given (`-drive` strings stay strings in QEMU's
        // full_open_options).
        let mut given = Map::new();
        for k in [
            "vote-threshold",
            "read-pattern",
            "blkverify",
            "rewrite-corrupted",
        ] {
            if let Some(v) = o.get(k) {
                given.insert(k.to_string(), v.clone());
            }
        }
        if n < 1 {
            return Err(BlockError::new(
                "Number of provided children must be 1 or more",
            ));
        }
        let threshold = take_number(o, "vote-threshold")?;
        if qapi && threshold.is_none() {
            return Err(BlockError::new("Parameter 'vote-threshold' is missing"));
        }
        let blkverify = o.take_bool("blkverify")?;
        let rewrite = o.take_bool("rewrite-corrupted")?;
        let pattern = if qapi {
            o.take_enum("read-pattern", &["quorum", "fifo"])?
        } else {
            o.take_str("read-pattern")?
        };
        // quorum_valid_threshold.
        let threshold = threshold.unwrap_or(0);
        if threshold < 1 {
            return Err(BlockError::new(
                "Parameter 'vote-threshold' expects a value >= 1",
            ));
        }
        if threshold as u64 > n as u64 {
            return Err(BlockError::new("threshold may not exceed children count"));
        }
        let fifo = match pattern.as_deref() {
            None | Some("quorum") => false,
            Some("fifo") => true,
            Some(_) => return Err(BlockError::new("Please set read-pattern as fifo or quorum")),
        };
        let (mut is_blkverify, mut rewrite_corrupted) = (false, false);
        if !fifo {
            is_blkverify = blkverify.unwrap_or(false);
            if is_blkverify && (n != 2 || threshold != 2) {
                return Err(BlockError::new(
                    "blkverify=on can only be set if there are exactly two files and vote-threshold is 2",
                ));
            }
            rewrite_corrupted = rewrite.unwrap_or(false);
            if rewrite_corrupted && is_blkverify {
                return Err(BlockError::new(
                    "rewrite-corrupted=on cannot be used with blkverify=on",
                ));
            }
        }
        Ok(QuorumConfig {
            threshold: threshold as usize,
            blkverify: is_blkverify,
            rewrite_corrupted,
            fifo,
            given,
        })
    }
}

/// `qdict_array_entries(options, "children.")`: the children's options in
/// index order, from blockdev-add's list or `-drive`'s `children.N.*`
/// (numbered from 0 without gaps, nothing else under `children.`).
pub fn children_entries(v: Option<Value>) -> Result<Vec<Value>, BlockError> {
    let invalid = || BlockError::new("Option children is not a valid array");
    match v {
        None => Ok(Vec::new()),
        Some(Value::Array(a)) => Ok(a),
        Some(Value::Object(mut m)) => {
            let mut out = Vec::new();
            while let Some(e) = m.remove(&out.len().to_string()) {
                out.push(e);
            }
            if !m.is_empty() {
                return Err(invalid());
            }
            Ok(out)
        }
        Some(_) => Err(invalid()),
    }
}

/// What the driver and its requests share: the children change when a
/// mirror replaces one, and requests find the current ones.
pub(crate) struct State {
    /// The quorum node's name (QUORUM_FAILURE's `reference`).
    name: String,
    /// (edge name, child), in index order.
    children: RwLock<Vec<(String, Arc<Node>)>>,
    cfg: QuorumConfig,
}

impl State {
    fn children(&self) -> Vec<Arc<Node>> {
        self.children
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(_, n)| n.clone())
            .collect()
    }
}

pub struct QuorumDriver {
    s: Arc<State>,
}

impl QuorumDriver {
    /// The node `name` over `children` (edges `children.0`...).
    pub fn new(name: String, cfg: QuorumConfig, children: Vec<Arc<Node>>) -> Self {
        let children = children
            .into_iter()
            .enumerate()
            .map(|(i, n)| (format!("children.{i}"), n))
            .collect();
        QuorumDriver {
            s: Arc::new(State {
                name,
                children: RwLock::new(children),
                cfg,
            }),
        }
    }
}

impl Driver for QuorumDriver {
    fn format_name(&self) -> &'static str {
        "quorum"
    }

    /// `bdrv_refresh_filename` with `quorum_gather_child_options`: a
    /// `json:` name listing the children's options (observed on QEMU 7.2).
    fn filename(&self) -> String {
        let mut m = self.s.cfg.given.clone();
        m.insert("driver".into(), "quorum".into());
        let children = self
            .s
            .children()
            .iter()
            .map(|c| crate::qcow2_node::node_open_options(c))
            .collect();
        m.insert("children".into(), Value::Array(children));
        format!(
            "json:{}",
            crate::qcow2_node::qobject_json(&Value::Object(m))
        )
    }

    /// `quorum_getlength`: every child must have the same length.
    fn size(&self) -> Result<u64, BlockError> {
        let mut size = None;
        for c in self.s.children() {
            let n = c.size()?;
            if size.is_some_and(|s| s != n) {
                return Err(BlockError::new("Input/output error"));
            }
            size = Some(n);
        }
        size.ok_or_else(|| BlockError::new("Input/output error"))
    }

    /// `bdrv_sum_allocated_file_size`: what the children take on the host
    /// (observed on QEMU 7.2: the sum of the children's).
    fn actual_size(&self) -> Option<u64> {
        let mut sum = 0;
        for c in self.s.children() {
            sum += c.driver.actual_size()?;
        }
        Some(sum)
    }

    /// quorum has no `bdrv_co_truncate`.
    fn truncate(&self, _size: u64) -> Result<(), BlockError> {
        Err(BlockError::new(
            "Image format driver does not support resize",
        ))
    }

    /// `quorum_child_perm`: read and write pass through (write always with
    /// rewrite-corrupted); RESIZE and WRITE are never shared, as they
    /// would make the children differ.
    fn child_perm(&self, _role: &str, p: u64, shared: u64) -> (u64, u64) {
        let mut np = p & perm::DEFAULT_PERM_PASSTHROUGH;
        if self.s.cfg.rewrite_corrupted {
            np |= perm::WRITE;
        }
        let ns = (shared & (perm::CONSISTENT_READ | perm::WRITE_UNCHANGED))
            | perm::DEFAULT_PERM_UNCHANGED;
        (np, ns)
    }

    /// No `bdrv_get_info`: query-block shows no `dirty-flag`.
    fn has_info(&self) -> bool {
        false
    }

    fn format_io(&self) -> Option<Arc<dyn FormatIo>> {
        Some(Arc::new(io::QuorumIo::new(self.s.clone())))
    }

    fn replace_child(&self, role: &str, new: &Arc<Node>) -> Result<(), BlockError> {
        let mut c = self.s.children.write().unwrap_or_else(|e| e.into_inner());
        match c.iter_mut().find(|(r, _)| r == role) {
            Some(e) => {
                e.1 = new.clone();
                Ok(())
            }
            None => Err(BlockError::new(format!("quorum has no child '{role}'"))),
        }
    }

    /// `quorum_recurse_can_replace`: only an immediate child, and only if
    /// the quorum is its one parent (checked by the caller, who knows the
    /// graph).
    fn recurse_can_replace(&self, to_replace: &Arc<Node>) -> Option<bool> {
        let is_child = self.s.children().iter().any(|c| Arc::ptr_eq(c, to_replace));
        Some(is_child)
    }
}

#[cfg(test)]
mod tests;
