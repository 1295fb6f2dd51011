//! A node's parents as QEMU names them in permission errors
//! (block.c `bdrv_child_user_desc`, `bdrv_a_allow_b`), and the check a new
//! parent passes before it takes its permissions
//! (`bdrv_parent_perms_conflict`).

use std::sync::Arc;

use crate::error::BlockError;
use crate::graph::BlockGraph;
use crate::node::Node;
use crate::perm;

/// One parent of a node and what it holds.
pub(crate) struct PermUser {
    /// "block device 'drive0'", "an unnamed block device", "node 'q0'".
    pub desc: String,
    /// The child's role ("root" for a BlockBackend).
    pub role: String,
    pub perm: u64,
    pub shared: u64,
}

/// `blk_root_get_parent_desc`.
pub(crate) fn backend_desc(name: &str, qdev: Option<&str>) -> String {
    match (name, qdev) {
        ("", Some(d)) => format!("block device '{d}'"),
        ("", None) => "an unnamed block device".into(),
        (n, _) => format!("block device '{n}'"),
    }
}

impl BlockGraph {
    /// The parents holding permissions on `node`, newest first as QEMU
    /// lists them (BlockBackends, then nodes).
    pub(crate) fn perm_users(&self, node: &Arc<Node>) -> Vec<PermUser> {
        let mut out = Vec::new();
        for b in self.backends().iter().rev() {
            if !b.root().is_some_and(|r| Arc::ptr_eq(&r, node)) {
                continue;
            }
            if let Some((p, s)) = node.parent_perm(b.inner.parent_id) {
                let qdev = b.qdev_path();
                out.push(PermUser {
                    desc: backend_desc(b.name(), qdev.as_deref()),
                    role: "root".into(),
                    perm: p,
                    shared: s,
                });
            }
        }
        for n in self.nodes().iter().rev() {
            for c in n.children() {
                if !Arc::ptr_eq(&c.node, node) {
                    continue;
                }
                if let Some((p, s)) = node.parent_perm(n.parent_id()) {
                    out.push(PermUser {
                        desc: format!("node '{}'", n.name),
                        role: c.role.to_string(),
                        perm: p,
                        shared: s,
                    });
                }
            }
        }
        out
    }

    /// Whether a new parent `new` (perm, shared, described) may join the
    /// parents of `node`: each existing parent must allow it, and it must
    /// allow them (QEMU checks the newest parent first).
    pub(crate) fn check_new_parent(
        &self,
        node: &Arc<Node>,
        new: &PermUser,
    ) -> Result<(), BlockError> {
        let parents = self.perm_users(node);
        for b in &parents {
            a_allows_b(node, new, b)?;
        }
        for a in &parents {
            a_allows_b(node, a, new)?;
        }
        Ok(())
    }
}

/// `bdrv_a_allow_b`.
fn a_allows_b(node: &Node, a: &PermUser, b: &PermUser) -> Result<(), BlockError> {
    let missing = b.perm & !a.shared & perm::ALL;
    if missing == 0 {
        return Ok(());
    }
    let n = &node.name;
    Err(BlockError::new(format!(
        "Permission conflict on node '{n}': permissions '{}' are both required by {} (uses node '{n}' as '{}' child) and unshared by {} (uses node '{n}' as '{}' child).",
        perm::names(missing),
        b.desc,
        b.role,
        a.desc,
        a.role
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_are_described_as_qemu_does() {
        assert_eq!(backend_desc("drive0", None), "block device 'drive0'");
        assert_eq!(
            backend_desc("", Some("/machine/peripheral/vd0/virtio-backend")),
            "block device '/machine/peripheral/vd0/virtio-backend'"
        );
        assert_eq!(backend_desc("", None), "an unnamed block device");
    }
}
