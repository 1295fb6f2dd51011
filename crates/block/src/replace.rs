//! Replacing a node in the graph (QEMU 7.2 block.c `bdrv_replace_node`,
//! `bdrv_recurse_can_replace`, `check_to_replace_node`): every parent of a
//! node (devices, other nodes' child edges) moves to another node, with the
//! permissions it held. Snapshots put an overlay in place of a node this
//! way, and a mirror puts its target in place of the source or of the node
//! `replaces` names.

use std::sync::Arc;

use crate::error::BlockError;
use crate::graph::BlockGraph;
use crate::io::Route;
use crate::node::Node;

/// A parent of a node.
pub(crate) enum Parent {
    /// Another node's child edge (`role`).
    Node(Arc<Node>, String),
    /// A BlockBackend (a drive, a device's anonymous backend, an export's).
    Backend,
    /// Anything else holding permissions on the node (a job, an export
    /// that keeps no BlockBackend in the graph).
    Other,
}

/// Whether `n` is `top` or lies below it.
fn reaches(top: &Arc<Node>, n: &Arc<Node>) -> bool {
    Arc::ptr_eq(top, n) || top.children().iter().any(|c| reaches(&c.node, n))
}

impl BlockGraph {
    /// Every parent of `node` (`bs->parents`): its parent nodes' edges,
    /// the backends on it, and any other holder of permissions on it.
    pub(crate) fn parents_of(&self, node: &Arc<Node>) -> Vec<Parent> {
        let mut out = Vec::new();
        let mut known = Vec::new();
        for n in self.nodes() {
            for c in n.children() {
                if Arc::ptr_eq(&c.node, node) {
                    out.push(Parent::Node(n.clone(), c.role.to_string()));
                    known.push(n.parent_id());
                }
            }
        }
        for b in self.backends() {
            if b.root().is_some_and(|r| Arc::ptr_eq(&r, node)) {
                out.push(Parent::Backend);
                known.push(b.inner.parent_id);
            }
        }
        for id in node.parent_ids() {
            if !known.contains(&id) {
                out.push(Parent::Other);
            }
        }
        out
    }

    /// `bdrv_recurse_can_replace(bs, to_replace)`: whether putting a node
    /// with `bs`'s data in place of `to_replace` leaves what `bs` shows
    /// unchanged.
    pub(crate) fn recurse_can_replace(&self, bs: &Arc<Node>, to_replace: &Arc<Node>) -> bool {
        if Arc::ptr_eq(bs, to_replace) {
            return true;
        }
        match bs.driver.recurse_can_replace(to_replace) {
            // quorum_recurse_can_replace: the quorum must be the child's
            // one parent.
            Some(true) => {
                let parents = self.parents_of(to_replace);
                matches!(parents.as_slice(), [Parent::Node(p, _)] if Arc::ptr_eq(p, bs))
            }
            Some(false) => false,
            None if bs.driver.is_filter() => bs
                .primary_child()
                .is_some_and(|f| self.recurse_can_replace(&f, to_replace)),
            None => false,
        }
    }

    /// `check_to_replace_node(parent_bs, node_name)`.
    pub(crate) fn check_to_replace_node(
        &self,
        parent: &Arc<Node>,
        name: &str,
    ) -> Result<Arc<Node>, BlockError> {
        let Some(n) = self.node(name).cloned() else {
            return Err(BlockError::new(format!(
                "Failed to find node with node-name='{name}'"
            )));
        };
        self.check_op_blocker(&n)?;
        if !self.recurse_can_replace(parent, &n) {
            return Err(BlockError::new(format!(
                "Cannot replace '{name}' by a node mirrored from '{}', because it cannot be guaranteed that doing so would not lead to an abrupt change of visible data",
                parent.name
            )));
        }
        Ok(n)
    }

    /// `bdrv_replace_node(from, to)`: every parent of `from` moves to `to`,
    /// except edges from `to` or below it (`should_update_child`: no loop,
    /// as an overlay's backing edge to `from`). Every parent node's driver
    /// is asked first, so a refusal changes nothing.
    pub(crate) fn replace_node(&self, from: &Arc<Node>, to: &Arc<Node>) -> Result<(), BlockError> {
        let edges: Vec<(Arc<Node>, String)> = self
            .parents_of(from)
            .into_iter()
            .filter_map(|p| match p {
                Parent::Node(n, role) if !reaches(to, &n) => Some((n, role)),
                _ => None,
            })
            .collect();
        // The dry run: each driver is asked to put in the child it has
        // now, which changes nothing but fails where it cannot follow.
        for (n, role) in &edges {
            if role != "backing" {
                n.driver.replace_child(role, from)?;
            }
        }
        for (n, role) in &edges {
            n.replace_child(role, to.clone())?;
        }
        // A device above a parent that changed (on a throttle filter over
        // `from`) has a route built through the old child: rebuild it.
        for b in self.backends() {
            let Some(root) = b.root() else { continue };
            if !Arc::ptr_eq(&root, from) && edges.iter().any(|(n, _)| reaches(&root, n)) {
                b.inner.set_route(Route::of(Some(root)));
            }
        }
        self.move_devices(from, to)
    }
}
