//! `x-debug-query-block-graph` (QEMU 7.2 block.c
//! `bdrv_get_xdbg_block_graph`): every BlockBackend, block job and node,
//! and the edges between them with the permissions each parent holds.
//! Ids count from 1 in the order QEMU meets the objects (backends, jobs,
//! nodes in creation order, a child before its parent's later edges);
//! both lists come out reversed, as QEMU prepends to them.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::graph::BlockGraph;
use crate::node::Node;
use crate::perm;

/// `BlockPermission` names of `p`, in the order QEMU's prepending leaves
/// them (the enum reversed).
fn perm_list(p: u64) -> Value {
    const NAMES: [(u64, &str); 4] = [
        (perm::CONSISTENT_READ, "consistent-read"),
        (perm::WRITE, "write"),
        (perm::WRITE_UNCHANGED, "write-unchanged"),
        (perm::RESIZE, "resize"),
    ];
    Value::Array(
        NAMES
            .iter()
            .rev()
            .filter(|(b, _)| p & b != 0)
            .map(|(_, n)| json!(n))
            .collect(),
    )
}

/// What an id stands for (`xdbg_graph_node_num`'s hash key).
#[derive(PartialEq)]
enum Key {
    Backend(usize),
    Job(usize),
    Node(*const Node),
}

#[derive(Default)]
struct Builder {
    keys: Vec<Key>,
    nodes: Vec<Value>,
    edges: Vec<Value>,
}

impl Builder {
    fn id(&mut self, k: Key) -> usize {
        match self.keys.iter().position(|x| *x == k) {
            Some(i) => i + 1,
            None => {
                self.keys.push(k);
                self.keys.len()
            }
        }
    }

    fn node(&mut self, k: Key, ty: &str, name: &str) {
        let id = self.id(k);
        self.nodes
            .push(json!({ "id": id, "type": ty, "name": name }));
    }

    fn edge(&mut self, parent: Key, child: &Arc<Node>, name: &str, p: (u64, u64)) {
        let parent = self.id(parent);
        let child = self.id(Key::Node(Arc::as_ptr(child)));
        self.edges.push(json!({
            "parent": parent,
            "child": child,
            "name": name,
            "perm": perm_list(p.0),
            "shared-perm": perm_list(p.1),
        }));
    }
}

impl BlockGraph {
    /// QMP `x-debug-query-block-graph`.
    pub fn xdbg_block_graph(&self) -> Value {
        let mut b = Builder::default();
        for (i, bb) in self.backends().iter().enumerate() {
            // blk_name, else blk_get_attached_dev_id.
            let name = match bb.name() {
                "" => bb.qdev_path().unwrap_or_default(),
                n => n.to_string(),
            };
            b.node(Key::Backend(i), "block-backend", &name);
            if let Some(r) = bb.root() {
                let p = r.parent_perm(bb.inner.parent_id).unwrap_or((0, perm::ALL));
                b.edge(Key::Backend(i), &r, "root", p);
            }
        }
        for (i, (id, kind, nodes)) in self.job_nodes().iter().enumerate() {
            b.node(Key::Job(i), "block-job", id);
            for (j, n) in nodes.iter().enumerate() {
                // block_job_add_bdrv's names: the job's node, a mirror's
                // target, the nodes in between.
                let name = match (j, *kind) {
                    (0, _) => "main node",
                    (1, "mirror") => "target",
                    _ => "intermediate node",
                };
                b.edge(Key::Job(i), n, name, (0, perm::ALL));
            }
        }
        for n in self.nodes() {
            b.node(Key::Node(Arc::as_ptr(n)), "block-driver", &n.name);
            // bs->children lists the newest edge first.
            for c in n.children().iter().rev() {
                b.edge(Key::Node(Arc::as_ptr(n)), &c.node, &c.role, n.edge_perm(c));
            }
        }
        b.nodes.reverse();
        b.edges.reverse();
        json!({ "nodes": b.nodes, "edges": b.edges })
    }
}
