//! Starting a `block-commit`: QEMU 7.2 blockdev.c `qmp_block_commit`'s
//! checks in its order and words, then `commit_start` (intermediate) or
//! `commit_active_start` (active layer, a mirror onto the base).

use std::sync::Arc;

use super::commit::{ActiveCommit, Commit};
use super::filter_node::TopKind;
use super::mirror::{BackingMode, Mirror, MirrorSpec, SyncMode, DEFAULT_BUF_SIZE};
use super::mirror_start::default_granularity;
use super::stream::{find_backing_image, skip_filters};
use super::{JobPlan, JobType, OnJobError};
use crate::error::BlockError;
use crate::graph::BlockGraph;
use crate::node::Node;
use crate::perm;

/// `block-commit`'s arguments (speed and the auto-* flags are the job's).
pub struct CommitArgs<'a> {
    pub job_id: Option<&'a str>,
    pub device: &'a str,
    pub base_node: Option<&'a str>,
    pub base: Option<&'a str>,
    pub top_node: Option<&'a str>,
    pub top: Option<&'a str>,
    pub backing_file: Option<&'a str>,
    pub on_error: OnJobError,
    pub filter_node_name: Option<&'a str>,
}

fn msg(s: impl Into<String>) -> BlockError {
    BlockError::new(s)
}

/// The nodes below `top`, nearest first, through filters' filtered
/// children and formats' backing files (`bdrv_filter_or_cow_bs`).
fn chain_below(top: &Arc<Node>) -> Vec<Arc<Node>> {
    let mut out = Vec::new();
    let mut cur = top.filter_or_cow_child();
    while let Some(n) = cur {
        cur = n.filter_or_cow_child();
        out.push(n);
    }
    out
}

/// `bdrv_chain_contains`: `n` is `top` or below it.
fn chain_contains(top: &Arc<Node>, n: &Arc<Node>) -> bool {
    Arc::ptr_eq(top, n) || chain_below(top).iter().any(|c| Arc::ptr_eq(c, n))
}

/// `bdrv_find_overlay(active, bs)`: the layer whose backing (or filtered
/// child) is `bs`.
fn find_overlay(active: &Arc<Node>, bs: &Arc<Node>) -> Option<Arc<Node>> {
    let mut cur = active.clone();
    loop {
        let next = cur.filter_or_cow_child()?;
        if Arc::ptr_eq(&next, bs) {
            return Some(cur);
        }
        cur = next;
    }
}

impl BlockGraph {
    /// Whether `block-commit`'s device names anything at all: QEMU answers
    /// DeviceNotFound then (libvirt probes for it), before any other error.
    pub fn commit_device_exists(&self, device: &str) -> bool {
        self.lookup_bs(Some(device), Some(device)).is_ok()
    }

    /// `qmp_block_commit`: the checks, and the job to start.
    pub fn commit_job(&mut self, a: &CommitArgs<'_>) -> Result<JobPlan, BlockError> {
        let bs = self.root_bs(a.device)?;
        self.check_op_blocker(&bs)?;
        let top = match (a.top_node, a.top) {
            (Some(_), Some(_)) => return Err(msg("'top-node' and 'top' are mutually exclusive")),
            (Some(t), None) => {
                let n = self.lookup_bs(None, Some(t))?;
                if !chain_contains(&bs, &n) {
                    return Err(msg(format!("'{t}' is not in this backing file chain")));
                }
                Some(n)
            }
            (None, Some(t)) if bs.filename() != t => find_backing_image(&bs, t),
            _ => Some(bs.clone()),
        };
        let top = top.ok_or_else(|| {
            msg(format!(
                "Top image file {} not found",
                a.top.unwrap_or("NULL")
            ))
        })?;
        let base = match (a.base_node, a.base) {
            (Some(_), Some(_)) => return Err(msg("'base-node' and 'base' are mutually exclusive")),
            (Some(b), None) => {
                let n = self.lookup_bs(None, Some(b))?;
                if !chain_contains(&top, &n) {
                    return Err(msg(format!("'{b}' is not in this backing file chain")));
                }
                n
            }
            (None, Some(b)) => find_backing_image(&top, b)
                .ok_or_else(|| msg(format!("Can't find '{b}' in the backing chain")))?,
            // bdrv_find_base: the bottom of the chain (top itself if alone).
            (None, None) => chain_below(&top).pop().unwrap_or_else(|| top.clone()),
        };
        // Every layer from top down to the base, the base included.
        let mut layers = vec![top.clone()];
        layers.extend(
            chain_below(&top)
                .into_iter()
                .take_while(|n| !Arc::ptr_eq(n, &base)),
        );
        if !Arc::ptr_eq(&top, &base) {
            layers.push(base.clone());
        }
        for l in &layers {
            self.check_op_blocker(l)?;
        }
        if Arc::ptr_eq(&top, &base) {
            return Err(msg("cannot commit an image into itself"));
        }
        // bdrv_skip_filters on both: a filter over the active layer is no
        // overlay (040 TestCommitWithFilters).
        let active = Arc::ptr_eq(&skip_filters(&top), &skip_filters(&bs));
        if active || top.perms().0 & perm::WRITE != 0 {
            if a.backing_file.is_some() {
                return Err(msg(if active {
                    "'backing-file' specified, but 'top' is the active layer"
                } else {
                    "'backing-file' specified, but 'top' has a writer on it"
                }));
            }
            let id = a
                .job_id
                .map_or_else(|| self.device_name(&bs), str::to_string);
            return self.active_commit(id, top, base, layers, a);
        }
        let overlay = find_overlay(&bs, &top).ok_or_else(|| msg("no overlay above 'top'"))?;
        self.check_op_blocker(&overlay)?;
        // commit_start: bdrv_new_open_driver(&bdrv_commit_top, ...); QEMU
        // does not add it to the job's nodes.
        let filter = match a.filter_node_name {
            Some(n) => Some(self.new_top_filter(n, TopKind::Commit, &top)?),
            None => None,
        };
        let id = a
            .job_id
            .map_or_else(|| self.device_name(&bs), str::to_string);
        let base_overlay = layers[layers.len() - 2].clone();
        let mut driver = Commit::new(
            id.clone(),
            top,
            base,
            base_overlay,
            overlay,
            a.backing_file.map(str::to_string),
            a.on_error,
        );
        driver.filter = filter;
        // block_job_create's node, the layers that go, and the base.
        let mut nodes = vec![bs.clone()];
        nodes.extend(layers.into_iter().filter(|n| !Arc::ptr_eq(n, &bs)));
        Ok(JobPlan {
            id,
            driver: Box::new(driver),
            nodes,
        })
    }

    /// `commit_active_start` + `mirror_start_job` with the base as target.
    fn active_commit(
        &mut self,
        id: String,
        top: Arc<Node>,
        base: Arc<Node>,
        layers: Vec<Arc<Node>>,
        a: &CommitArgs<'_>,
    ) -> Result<JobPlan, BlockError> {
        let named_filter = match a.filter_node_name {
            Some(n) => Some(self.new_top_filter(n, TopKind::ActiveCommit, &top)?),
            None => None,
        };
        let mut layers = layers;
        layers.extend(named_filter.clone());
        let spec = MirrorSpec {
            id: id.clone(),
            kind: JobType::Commit,
            source: top.clone(),
            target: base.clone(),
            sync: SyncMode::Full,
            backing_mode: BackingMode::Leave,
            zero_target: false,
            granularity: default_granularity(&base),
            buf_size: DEFAULT_BUF_SIZE,
            on_source_error: a.on_error,
            on_target_error: a.on_error,
            write_blocking: false,
            owns_target: false,
            drop_between: true,
            replaces: None,
            named_filter,
        };
        let driver = ActiveCommit {
            mirror: Mirror::new(spec)?,
            base,
            restore_ro: false,
            source_ro: top.flags().read_only,
        };
        Ok(JobPlan {
            id,
            driver: Box::new(driver),
            nodes: layers,
        })
    }
}
