//! A job's filter as a node of the graph, when `filter-node-name` names it
//! (QEMU 7.2: mirror.c's `mirror_top`, commit.c's `commit_top`, stream.c's
//! `copy-on-read` filter). It sits between the filtered node and all of
//! that node's parents (devices and parent nodes' edges) while the job
//! runs, shows in the queries under its name, and its name counts in op
//! blockers and chain walks.
//!
//! An unnamed filter stays out of the graph: the mirror's lives in the
//! devices' routes ([`super::mirror::MirrorTop`]), which is what QEMU's
//! implicit filters look like from outside (query-block and
//! x-debug-query-block-graph skip them).

use std::sync::{Arc, RwLock};

use crate::error::BlockError;
use crate::graph::BlockGraph;
use crate::node::{Driver, FormatIo, Node, NodeFlags};
use crate::perm;

use super::nodeio::NodeIo;

/// `bdrv_mirror_top` or `bdrv_commit_top`: a filter whose one child is
/// its `backing`.
pub struct TopFilter {
    kind: TopKind,
    child: RwLock<Arc<Node>>,
    /// The mirror's write path ([`super::mirror::MirrorTop`]), set when the
    /// job installs it; until then, and for commit_top, requests pass
    /// through.
    io: RwLock<Option<Arc<dyn FormatIo>>>,
    /// Made by the job, not named by the user (`bs->implicit`):
    /// query-block looks through it.
    implicit: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum TopKind {
    Mirror,
    /// A mirror for an active commit (`is_commit`).
    ActiveCommit,
    Commit,
}

impl TopFilter {
    fn child(&self) -> Arc<Node> {
        self.child.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn set_io(&self, io: Arc<dyn FormatIo>) {
        *self.io.write().unwrap_or_else(|e| e.into_inner()) = Some(io);
    }

    /// `commit_top`'s `never_freeze`: no other job may freeze the link
    /// to it (bdrv_freeze_backing_chain).
    pub(crate) fn never_freeze(&self) -> bool {
        self.kind == TopKind::Commit
    }
}

impl Driver for TopFilter {
    fn format_name(&self) -> &'static str {
        match self.kind {
            TopKind::Mirror | TopKind::ActiveCommit => "mirror_top",
            TopKind::Commit => "commit_top",
        }
    }

    /// `bdrv_mirror_top_refresh_filename`, `bdrv_commit_top_refresh_filename`:
    /// the filtered node's name.
    fn filename(&self) -> String {
        self.child().filename()
    }

    fn size(&self) -> Result<u64, BlockError> {
        self.child().size()
    }

    fn actual_size(&self) -> Option<u64> {
        self.child().driver.actual_size()
    }

    fn truncate(&self, _size: u64) -> Result<(), BlockError> {
        Err(BlockError::new("Cannot resize a job's filter node"))
    }

    /// `bdrv_mirror_top_child_perm` (the default filter permissions; a
    /// commit takes no consistent read and shares write), and
    /// `bdrv_commit_top_child_perm` (nothing taken, all shared).
    fn child_perm(&self, _role: &str, p: u64, shared: u64) -> (u64, u64) {
        let np = p & perm::DEFAULT_PERM_PASSTHROUGH;
        let ns = (shared & perm::DEFAULT_PERM_PASSTHROUGH) | perm::DEFAULT_PERM_UNCHANGED;
        match self.kind {
            TopKind::Mirror => (np, ns),
            TopKind::ActiveCommit => (np & !perm::CONSISTENT_READ, ns | perm::WRITE),
            TopKind::Commit => (0, perm::ALL),
        }
    }

    fn is_filter(&self) -> bool {
        true
    }

    fn has_info(&self) -> bool {
        self.child().driver.has_info()
    }

    fn block_status(&self, off: u64, len: u64) -> Result<(bool, u64), i32> {
        self.child().driver.block_status(off, len)
    }

    fn format_io(&self) -> Option<Arc<dyn FormatIo>> {
        let io = self.io.read().unwrap_or_else(|e| e.into_inner()).clone();
        Some(io.unwrap_or_else(|| Arc::new(NodeIo::new(&self.child()))))
    }

    /// A pivot moves the filter's edge onto the mirror's target.
    fn set_backing(&self, backing: Option<Arc<Node>>) -> Result<(), BlockError> {
        let b = backing.ok_or_else(|| BlockError::new("a job's filter needs its child"))?;
        *self.child.write().unwrap_or_else(|e| e.into_inner()) = b;
        Ok(())
    }

    fn as_top_filter(&self) -> Option<&TopFilter> {
        Some(self)
    }

    fn is_implicit_filter(&self) -> bool {
        self.implicit
    }
}

fn top_filter_node(name: String, implicit: bool, kind: TopKind, child: &Arc<Node>) -> Arc<Node> {
    let drv = TopFilter {
        kind,
        child: RwLock::new(child.clone()),
        io: RwLock::new(None),
        implicit,
    };
    let flags = NodeFlags {
        read_only: false,
        ..child.flags()
    };
    Arc::new(Node::new(
        name,
        implicit,
        flags,
        Box::new(drv),
        vec![crate::node::Child::new("backing", child.clone())],
    ))
}

impl BlockGraph {
    /// A new node `name` over `child`, not yet in anyone's path: the name
    /// is checked as `bdrv_new_open_driver` checks it.
    pub(crate) fn new_top_filter(
        &mut self,
        name: &str,
        kind: TopKind,
        child: &Arc<Node>,
    ) -> Result<Arc<Node>, BlockError> {
        self.check_new_node_name(name)?;
        Ok(top_filter_node(name.to_string(), false, kind, child))
    }

    /// The filter QEMU makes without a name (`#blockNNN`, implicit), for
    /// a source that has parent nodes: their edges must lead through the
    /// filter, which a device's route alone cannot do.
    pub(crate) fn new_implicit_top_filter(
        &mut self,
        kind: TopKind,
        child: &Arc<Node>,
    ) -> Arc<Node> {
        let name = self.auto_name();
        top_filter_node(name, true, kind, child)
    }

    /// `bdrv_append(filter, below)`: the filter joins the graph and every
    /// parent of `below` moves onto it.
    pub(crate) fn insert_filter(
        &mut self,
        filter: &Arc<Node>,
        below: &Arc<Node>,
    ) -> Result<(), BlockError> {
        self.add_node(filter.clone());
        // The filter's own permissions on `below` come from its parents.
        let r = self.replace_node(below, filter);
        if r.is_err() {
            self.remove_node(filter);
        }
        r
    }

    /// `bdrv_replace_node(filter, child)` and the filter's unref: its
    /// parents go back to (or on to) what it filters now.
    pub(crate) fn drop_filter(&mut self, filter: &Arc<Node>) {
        if !self.nodes().iter().any(|n| Arc::ptr_eq(n, filter)) {
            return;
        }
        if let Some(child) = filter.filter_or_cow_child() {
            if let Err(e) = self.replace_node(filter, &child) {
                log::error!("removing filter '{}': {}", filter.name, e.msg);
            }
        }
        self.remove_node(filter);
        filter.release_children();
    }
}
