//! Changing open nodes: `blockdev-reopen` (QEMU 7.2 blockdev.c
//! `qmp_blockdev_reopen`, block.c `bdrv_reopen_multiple` and
//! `bdrv_reopen_prepare`) and `change-backing-file` (blockdev.c
//! `qmp_change_backing_file`), which reopens a read-only image read-write
//! for as long as it rewrites the header.
//!
//! A reopen is all-or-nothing over its list: every entry is checked first
//! (options, QEMU's messages in QEMU's order), then the changes are made in
//! steps that each leave an undo behind; if a step fails (a lock conflict,
//! a file that cannot be opened for writing), the steps done are undone.
//! Options left out go back to their defaults (`read-only` and
//! `auto-read-only` off), as QEMU resets them. The caller holds the devices
//! drained, so no guest request is in flight while a descriptor or the
//! image's writability changes.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::error::BlockError;
use crate::graph::BlockGraph;
use crate::node::{Node, NodeFlags};
use crate::options::Opts;
use crate::perm;

/// What one node becomes.
struct Plan {
    node: Arc<Node>,
    flags: NodeFlags,
    /// `Some`: the backing child changes to this (or to none).
    backing: Option<Option<Arc<Node>>>,
}

/// Driver options a reopen takes as they are (QEMU's drivers re-read them
/// or ignore them; ferrovm has no state behind them).
const IGNORED: &[&str] = &[
    "force-share",
    "lazy-refcounts",
    "pass-discard-request",
    "pass-discard-snapshot",
    "pass-discard-other",
    "overlap-check",
    "cache-size",
    "l2-cache-size",
    "l2-cache-entry-size",
    "refcount-cache-size",
    "cache-clean-interval",
    "encrypt",
    "data-file",
    "aio-max-batch",
    "drop-cache",
    "x-check-cache-dropped",
    "pr-manager",
];

type Undo = Box<dyn FnOnce()>;

fn unsupported(what: &str) -> BlockError {
    BlockError::new(format!("ferrovm: blockdev-reopen cannot change {what}"))
}

impl BlockGraph {
    /// QMP `blockdev-reopen`: every entry names a node and gives its full
    /// options as `blockdev-add` would.
    pub fn blockdev_reopen(&mut self, list: &[Value]) -> Result<(), BlockError> {
        let mut entries = Vec::new();
        for v in list {
            let m = v.as_object().cloned().unwrap_or_default();
            let name = m
                .get("node-name")
                .and_then(Value::as_str)
                .ok_or_else(|| BlockError::new("node-name not specified"))?;
            let node = self.node(name).cloned().ok_or_else(|| {
                BlockError::new(format!("Failed to find node with node-name='{name}'"))
            })?;
            entries.push((node, m));
        }
        let mut plans: Vec<Plan> = Vec::new();
        for (node, m) in entries {
            for p in self.plan(&node, m)? {
                // A node queued twice: the later options win (bdrv_reopen_queue).
                plans.retain(|q| !Arc::ptr_eq(&q.node, &p.node));
                plans.push(p);
            }
        }
        self.commit(plans)
    }

    /// `bdrv_reopen_prepare` for one entry, plus the inline `file` child
    /// that inherits the new flags (`bdrv_reopen_queue_child`).
    fn plan(&self, node: &Arc<Node>, m: Map<String, Value>) -> Result<Vec<Plan>, BlockError> {
        let mut o = Opts::new(m);
        o.take("node-name");
        let driver = o.take_str("driver")?.unwrap_or_default();
        let cur = node.flags();
        let mut f = NodeFlags {
            read_only: o.take_bool("read-only")?.unwrap_or(false),
            auto_read_only: o.take_bool("auto-read-only")?.unwrap_or(false),
            ..cur
        };
        let (mut direct, mut no_flush) = (false, false);
        if let Some(Value::Object(c)) = o.take("cache") {
            let mut c = Opts::child(c, "cache.".into());
            direct = c.take_bool("direct")?.unwrap_or(false);
            no_flush = c.take_bool("no-flush")?.unwrap_or(false);
        }
        if direct != cur.direct || no_flush != cur.no_flush {
            return Err(unsupported("cache.direct or cache.no-flush"));
        }
        if let Some(d) = o.take_enum("discard", &["ignore", "off", "unmap", "on"])? {
            f.discard = matches!(d.as_str(), "unmap" | "on");
        }
        let dz = o.take_enum("detect-zeroes", &["off", "on", "unmap"])?;
        if dz.as_deref().unwrap_or("off") != node.detect_zeroes {
            return Err(unsupported("detect-zeroes"));
        }
        for k in IGNORED {
            o.take(k);
        }
        let mut plans = Vec::new();
        let mut backing = None;
        if let Some(q) = node.driver.as_qcow2() {
            let b = o.take("backing");
            let has_backing =
                node.child("backing").is_some() || q.full_backing_filename().is_some();
            if b.is_none() && has_backing {
                return Err(BlockError::new(format!(
                    "backing is missing for '{}'",
                    node.name
                )));
            }
            backing = match b {
                None => None,
                Some(Value::Null) => node.child("backing").map(|_| None),
                Some(Value::String(s)) => {
                    let new = self.node(&s).cloned().ok_or_else(|| {
                        BlockError::new(format!("Cannot find device='' nor node-name='{s}'"))
                    })?;
                    let same = node.child("backing").is_some_and(|c| Arc::ptr_eq(&c, &new));
                    if !same && reaches(&new, node) {
                        return Err(BlockError::new(format!(
                            "Making '{}' a backing child of '{}' would create a cycle",
                            new.name, node.name
                        )));
                    }
                    (!same).then_some(Some(new))
                }
                Some(_) => return Err(unsupported("'backing' to inline options")),
            };
        }
        if node.child("file").is_some() {
            let file = node.child("file").expect("checked above");
            match o.take("file") {
                None => {}
                Some(Value::String(s)) if s == file.name => {}
                Some(Value::String(_)) => return Err(unsupported("a node's 'file' child")),
                Some(Value::Object(c)) => {
                    let k = if c.contains_key("driver") {
                        "driver".to_string()
                    } else {
                        c.keys().next().cloned().unwrap_or_default()
                    };
                    return Err(BlockError::new(format!(
                        "Cannot change the option 'file.{k}'"
                    )));
                }
                Some(_) => return Err(unsupported("'file'")),
            }
            if let Some((off, size)) = node.driver.linear() {
                if o.take_size("offset")?.is_some_and(|v| v != off)
                    || o.take_size("size")?.is_some_and(|v| Some(v) != size)
                {
                    return Err(unsupported("a raw node's offset or size"));
                }
            }
            if file.inherited.load(Ordering::Relaxed) {
                plans.push(Plan {
                    flags: NodeFlags {
                        read_only: f.read_only,
                        auto_read_only: f.auto_read_only,
                        ..file.flags()
                    },
                    node: file,
                    backing: None,
                });
            }
        }
        if let Some(fd) = node.driver.as_file() {
            if let Some(n) = o.take_str("filename")? {
                if n != fd.io.filename {
                    return Err(BlockError::new("Cannot change the option 'filename'"));
                }
            }
            for k in ["locking", "aio"] {
                if let Some(v) = o.take_str(k)? {
                    let was = fd.fixed_opts.iter().find(|e| e.0 == k).map(|e| &e.1);
                    if was != Some(&v) {
                        return Err(BlockError::new(format!("Cannot change the option '{k}'")));
                    }
                }
            }
        }
        if driver != node.driver.format_name() {
            return Err(BlockError::new("Cannot change the option 'driver'"));
        }
        // The entry itself goes before the children it reopens: permissions
        // are asked again top-down.
        plans.insert(
            0,
            Plan {
                node: node.clone(),
                flags: f,
                backing,
            },
        );
        Ok(plans)
    }

    /// `bdrv_reopen_multiple`: checks, then the steps, undone on failure.
    fn commit(&mut self, mut plans: Vec<Plan>) -> Result<(), BlockError> {
        // Format nodes first, protocol nodes last.
        plans.sort_by_key(|p| p.node.driver.as_file().is_some());
        for p in &plans {
            let ro = p.flags.read_only;
            let is_file = p.node.driver.as_file().is_some();
            if ro && !is_file && p.node.perms().0 & (perm::WRITE | perm::WRITE_UNCHANGED) != 0 {
                return Err(read_write_users(&p.node));
            }
            if let (Some(q), false) = (p.node.driver.as_qcow2(), ro) {
                let file = q.file_node();
                let file_ro = plans
                    .iter()
                    .find(|x| Arc::ptr_eq(&x.node, file))
                    .map_or(file.flags().read_only, |x| x.flags.read_only);
                if file_ro {
                    return Err(BlockError::new("Block node is read-only"));
                }
            }
        }
        let mut undo: Vec<Undo> = Vec::new();
        let r = apply(&plans, &mut undo);
        if let Err(e) = r {
            while let Some(u) = undo.pop() {
                u();
            }
            for p in &plans {
                let _ = p.node.refresh_perms();
            }
            return Err(e);
        }
        // Backing nodes nobody holds any more go (QEMU drops their last
        // reference): the ones a header named, never the monitor's.
        for p in &plans {
            if p.backing.is_some() {
                self.drop_unheld();
            }
        }
        Ok(())
    }

    /// Nodes that were opened for a parent and are no one's child any more.
    fn drop_unheld(&mut self) {
        loop {
            let orphan = self.nodes().iter().find(|n| {
                n.inherited.load(Ordering::Relaxed)
                    && !self.monitor_owns(&n.name)
                    && !self
                        .nodes()
                        .iter()
                        .any(|p| p.children().iter().any(|c| Arc::ptr_eq(&c.node, n)))
                    && !self
                        .backends()
                        .iter()
                        .any(|b| b.root().is_some_and(|r| Arc::ptr_eq(&r, n)))
            });
            match orphan.cloned() {
                Some(n) => self.remove_subtree(&n),
                None => return,
            }
        }
    }

    /// QMP `change-backing-file`: the header of `image` (a qcow2 node in
    /// the backing chain of `device`) names `backing` from now on, with the
    /// image's own format as the backing format, as QEMU 7.2 writes it.
    pub fn change_backing_file(
        &mut self,
        device: &str,
        image: &str,
        backing: &str,
    ) -> Result<(), BlockError> {
        let bs = match self.backend(device) {
            Some(b) => b
                .root()
                .ok_or_else(|| BlockError::new(format!("Device '{device}' has no medium")))?,
            None => {
                let n = self.node(device).cloned().ok_or_else(|| {
                    BlockError::new(format!(
                        "Cannot find device='{device}' nor node-name='{device}'"
                    ))
                })?;
                let has_parent = self
                    .nodes()
                    .iter()
                    .any(|p| p.children().iter().any(|c| Arc::ptr_eq(&c.node, &n)));
                if has_parent {
                    return Err(BlockError::new("Need a root block node"));
                }
                n
            }
        };
        let img = self.node(image).cloned().ok_or_else(|| {
            BlockError::new(format!("Cannot find device='' nor node-name='{image}'"))
        })?;
        if img.child("backing").is_none() {
            return Err(BlockError::new(
                "not allowing backing file change on an image without a backing file",
            ));
        }
        let mut cur = Some(bs);
        let mut found = false;
        while let Some(n) = cur {
            if Arc::ptr_eq(&n, &img) {
                found = true;
                break;
            }
            cur = n.child("backing");
        }
        if !found {
            return Err(BlockError::new(format!(
                "'{device}' and image file are not in the same chain"
            )));
        }
        let failed =
            |e: i32| BlockError::errno(format!("Could not change backing file to '{backing}'"), e);
        let Some(q) = img.driver.as_qcow2() else {
            return Err(failed(libc::ENOTSUP));
        };
        let ro = img.flags().read_only;
        if ro {
            self.commit(self.keep_but(&img, false))?;
        }
        // QEMU 7.2 passes the image's own format name as the backing format.
        let r = q
            .change_backing_file(backing)
            .map_err(|e| failed(e.errno()));
        if ro {
            let back = self.commit(self.keep_but(&img, true));
            r.clone()?;
            back?;
        }
        r
    }

    /// `bdrv_reopen_set_read_only` (block-commit's base, and the overlay
    /// whose backing file name it rewrites). The caller holds the devices
    /// drained.
    pub(crate) fn reopen_set_read_only(
        &mut self,
        node: &Arc<Node>,
        read_only: bool,
    ) -> Result<(), BlockError> {
        self.commit(self.keep_but(node, read_only))
    }

    /// `bdrv_reopen_set_read_only`: the node (and the inline file under
    /// it) as it is, but for the read-only flag.
    fn keep_but(&self, node: &Arc<Node>, read_only: bool) -> Vec<Plan> {
        let mut plans = vec![Plan {
            node: node.clone(),
            flags: NodeFlags {
                read_only,
                ..node.flags()
            },
            backing: None,
        }];
        if let Some(f) = node.child("file") {
            if f.inherited.load(Ordering::Relaxed) && !f.read_only_given.load(Ordering::Relaxed) {
                plans.push(Plan {
                    flags: NodeFlags {
                        read_only,
                        ..f.flags()
                    },
                    node: f,
                    backing: None,
                });
            }
        }
        plans
    }
}

fn read_write_users(n: &Node) -> BlockError {
    BlockError::new(format!(
        "Read-only block node '{}' cannot support read-write users",
        n.name
    ))
}

/// Whether `target` is `from` or below it.
fn reaches(from: &Arc<Node>, target: &Arc<Node>) -> bool {
    Arc::ptr_eq(from, target) || from.children().iter().any(|c| reaches(&c.node, target))
}

/// The steps of a reopen, each leaving its undo.
fn apply(plans: &[Plan], undo: &mut Vec<Undo>) -> Result<(), BlockError> {
    // 1. Protocol nodes take their new flags; a descriptor that must become
    //    writable does so now (a read-only one only after the formats above
    //    wrote back).
    for p in plans {
        let Some(fd) = p.node.driver.as_file() else {
            continue;
        };
        let old = p.node.flags();
        p.node.set_flags(p.flags);
        fd.set_mode_flags(p.flags.read_only, p.flags.auto_read_only);
        let n = p.node.clone();
        undo.push(Box::new(move || {
            n.set_flags(old);
            if let Some(fd) = n.driver.as_file() {
                fd.set_mode_flags(old.read_only, old.auto_read_only);
                let _ = fd.sync_mode(n.perms().0);
            }
        }));
        if !p.flags.read_only {
            fd.sync_mode(p.node.perms().0)?;
        }
    }
    // 2. qcow2 images going read-only write back and are marked clean;
    // 3. those going writable become so over their now writable file.
    for going_ro in [true, false] {
        for p in plans {
            let Some(q) = p.node.driver.as_qcow2() else {
                continue;
            };
            if p.flags.read_only == going_ro && q.writable() == going_ro {
                q.set_writable(!going_ro)?;
                let n = p.node.clone();
                undo.push(Box::new(move || {
                    if let Some(q) = n.driver.as_qcow2() {
                        let _ = q.set_writable(going_ro);
                    }
                }));
            }
        }
    }
    // 4. The other nodes' flags.
    for p in plans.iter().filter(|p| p.node.driver.as_file().is_none()) {
        let old = p.node.flags();
        p.node.set_flags(p.flags);
        let n = p.node.clone();
        undo.push(Box::new(move || n.set_flags(old)));
    }
    // 5. Backing children.
    for p in plans {
        if let Some(b) = &p.backing {
            let old = p.node.child("backing");
            p.node.replace_backing(b.clone())?;
            let n = p.node.clone();
            undo.push(Box::new(move || {
                let _ = n.replace_backing(old);
            }));
        }
    }
    // 6. Permissions asked again, top-down; a node that became read-only
    //    must have lost its writers by the time its turn comes.
    for p in plans {
        if p.flags.read_only && p.node.perms().0 & (perm::WRITE | perm::WRITE_UNCHANGED) != 0 {
            return Err(read_write_users(&p.node));
        }
        p.node.refresh_perms()?;
    }
    // 7. Descriptors of protocol nodes that became read-only.
    for p in plans {
        if let Some(fd) = p.node.driver.as_file() {
            fd.sync_mode(p.node.perms().0)?;
        }
    }
    Ok(())
}
