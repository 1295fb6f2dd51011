//! A block node: one driver instance with its children and the permissions
//! its parents hold on it (QEMU's BlockDriverState, BdrvChild, and the
//! permission system of block.c). Format drivers that come later (qcow2,
//! backing chains) implement [`Driver`] and add children with other roles
//! (`backing`, `data-file`); the graph, permission propagation and locking
//! stay as they are.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::BlockError;
use crate::file::FileIo;
use crate::perm;

/// Flags every node gets from its options, inherited by inline children
/// (QEMU's `bdrv_inherited_options`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeFlags {
    pub read_only: bool,
    /// `cache.direct`: O_DIRECT.
    pub direct: bool,
    /// `cache.no-flush`: flushes do not reach the disk.
    pub no_flush: bool,
    /// `discard=unmap`: discard requests are passed down.
    pub discard: bool,
    /// `auto-read-only`: a protocol node may fall back to read-only.
    pub auto_read_only: bool,
}

/// A driver instance (QEMU's BlockDriver + opaque state).
pub trait Driver: Send + Sync {
    /// `format_name` (`drv` in query-named-block-nodes).
    fn format_name(&self) -> &'static str;
    /// The file name QEMU reports (`bs->filename`).
    fn filename(&self) -> String;
    /// Virtual size in bytes.
    fn size(&self) -> Result<u64, BlockError>;
    /// Bytes allocated on the host (`bdrv_get_allocated_file_size`).
    fn actual_size(&self) -> Option<u64>;
    /// Change the virtual size (the caller resizes children when the driver asks).
    fn truncate(&self, size: u64) -> Result<(), BlockError>;
    /// Apply a new cumulative permission set (file: image locks).
    fn set_perm(&self, _old: (u64, u64), _new: (u64, u64)) -> Result<(), BlockError> {
        Ok(())
    }
    /// `bdrv_child_perm`: what this node needs from child `role` given what
    /// its parents hold on it.
    fn child_perm(&self, role: &str, perm: u64, shared: u64) -> (u64, u64);
    /// A protocol node's host file, for the I/O engines.
    fn file_io(&self) -> Option<&Arc<FileIo>> {
        None
    }
    /// The `file`/`host_device` driver, for a reopen.
    fn as_file(&self) -> Option<&crate::file::FileDriver> {
        None
    }
    /// The `qcow2` driver, for a reopen and `change-backing-file`.
    fn as_qcow2(&self) -> Option<&crate::qcow2_node::Qcow2Driver> {
        None
    }
    /// A linear mapping onto child `file` (raw): guest offset + `.0`, and
    /// the fixed size if any. Formats that map non-linearly return None.
    fn linear(&self) -> Option<(u64, Option<u64>)> {
        None
    }
    /// `driver-specific` in query-blockstats.
    fn driver_specific_stats(&self) -> Option<serde_json::Value> {
        None
    }
    /// A format that maps non-linearly (qcow2): its requests, run on the
    /// I/O thread pool.
    fn format_io(&self) -> Option<Arc<dyn FormatIo>> {
        None
    }
    /// The emulator exits (`bdrv_close_all`): metadata caches written
    /// back, the image marked clean.
    fn close(&self) -> Result<(), BlockError> {
        Ok(())
    }
    /// Reads unallocated data through `backing` from now on (formats with
    /// a backing file: qcow2).
    fn set_backing(&self, _backing: Option<Arc<Node>>) -> Result<(), BlockError> {
        Err(BlockError::new(format!(
            "Driver '{}' of node does not support backing files",
            self.format_name()
        )))
    }
    /// The backing file the image header names, resolved.
    fn full_backing_filename(&self) -> Option<String> {
        None
    }
    /// A qcow2 image's header facts (query-block's `format-specific`).
    fn image_info(&self) -> Option<crate::qcow2::ImageInfo> {
        None
    }
    /// `bdrv_block_status` for this layer alone: whether the `len` bytes
    /// at `off` are allocated here (else they come from the backing file),
    /// and how many bytes from `off` share that answer. Formats without a
    /// backing file hold all their data.
    fn block_status(&self, _off: u64, len: u64) -> Result<(bool, u64), i32> {
        Ok((true, len))
    }
    /// Copy-on-read (the `copy-on-read` filter's job in QEMU): the
    /// clusters of the range not allocated in this layer get the data the
    /// backing chain has for them, atomically against guest writes.
    fn copy_on_read(&self, _off: u64, _len: u64) -> Result<(), i32> {
        Err(libc::ENOTSUP)
    }
    /// `bdrv_change_backing_file`: the image header names `file` (with
    /// format `fmt`) as its backing file, or none.
    fn change_backing_file(
        &self,
        _file: Option<&str>,
        _fmt: Option<&str>,
    ) -> Result<(), BlockError> {
        Err(BlockError::new("Operation not supported"))
    }
    /// A format that maps non-linearly marks the node's dirty bitmaps in
    /// its own write path: it keeps `b` and returns true. Linear drivers
    /// leave it to the host file ([`crate::dirty`]).
    fn attach_bitmaps(&self, _b: &Arc<crate::dirty::NodeBitmaps>) -> bool {
        false
    }
    /// A filter (`is_filter`): its primary child is the node it filters,
    /// listed as its `backing-image` and counted in `backing_file_depth`.
    fn is_filter(&self) -> bool {
        false
    }
    /// `bdrv_get_info` succeeds (query-block's `dirty-flag` is shown);
    /// filters ask the node they filter.
    fn has_info(&self) -> bool {
        true
    }
    /// The `blkdebug` driver, for breakpoints.
    fn as_blkdebug(&self) -> Option<&crate::blkdebug::BlkdebugDriver> {
        None
    }
    /// A filter a job made without a name (`bs->implicit`).
    fn is_implicit_filter(&self) -> bool {
        false
    }
    /// A job's named filter (`mirror_top`, `commit_top`).
    fn as_top_filter(&self) -> Option<&crate::job::filter_node::TopFilter> {
        None
    }
    /// `bdrv_replace_node` moved the parent edge `role` (not `backing`,
    /// which [`Node::replace_child`] handles) onto `new`: requests go to it
    /// from now on. Drivers that cannot follow refuse before anything moved.
    fn replace_child(&self, role: &str, _new: &Arc<Node>) -> Result<(), BlockError> {
        Err(BlockError::new(format!(
            "ferrovm: the '{role}' child of a '{}' node cannot be replaced",
            self.format_name()
        )))
    }
    /// `bdrv_recurse_can_replace`'s driver callback: None for the generic
    /// rule (a filter asks its filtered child, anything else says no);
    /// `Some(false)` for no; `Some(true)` when `to_replace` is a child this
    /// driver lets go, provided this node is its only parent (quorum).
    fn recurse_can_replace(&self, _to_replace: &Arc<Node>) -> Option<bool> {
        None
    }
}

/// Blocking I/O through a format driver, in guest offsets; errors are
/// positive errnos. Called on I/O pool threads, concurrently.
pub trait FormatIo: Send + Sync {
    fn read(&self, off: u64, buf: &mut [u8]) -> Result<(), i32>;
    /// Reads into a scatter list. By default through one bounce buffer, so
    /// the driver still sees the whole range at once; qcow2 reads straight
    /// into the buffers.
    fn readv(&self, off: u64, bufs: &[crate::io::IoBuf]) -> Result<(), i32> {
        crate::io::bounced_read(self, off, bufs)
    }
    fn write(&self, off: u64, buf: &[u8]) -> Result<(), i32>;
    fn flush(&self) -> Result<(), i32>;
    fn discard(&self, off: u64, len: u64) -> Result<(), i32>;
    fn write_zeroes(&self, off: u64, len: u64, may_unmap: bool) -> Result<(), i32>;
    /// `bdrv_debug_event`: a parent signals `ev` on this node before the
    /// request it belongs to (only `blkdebug` acts on it; it may block
    /// here while a breakpoint suspends the request).
    fn debug_event(&self, _ev: crate::debug::DebugEvent) {}
}

/// An edge to a child node (QEMU's BdrvChild).
#[derive(Clone)]
pub struct Child {
    /// The edge's name (`BdrvChild.name`): `file`, `backing`, `image`, or
    /// a quorum's `children.N`.
    pub role: Cow<'static, str>,
    pub node: Arc<Node>,
}

impl Child {
    pub fn new(role: impl Into<Cow<'static, str>>, node: Arc<Node>) -> Self {
        Child {
            role: role.into(),
            node,
        }
    }
}

struct PermState {
    /// (parent id, perm, shared) for every parent.
    parents: Vec<(u64, u64, u64)>,
    /// The cumulative (perm, shared) currently applied.
    cur: (u64, u64),
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A parent identity for the permission system (a node or a BlockBackend).
pub(crate) fn new_parent_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

pub struct Node {
    pub name: String,
    /// Named by QEMU's `#block` generator rather than the user.
    pub auto_named: bool,
    /// Changed only by `blockdev-reopen` (and `change-backing-file`'s
    /// temporary read-write), inside a drained section.
    flags: Mutex<NodeFlags>,
    /// Opened inline under a parent (`-drive`, a header's backing file):
    /// a reopen of that parent reopens it too (QEMU's `inherits_from`).
    pub inherited: std::sync::atomic::AtomicBool,
    /// Its options set `read-only` themselves: a parent's
    /// `bdrv_reopen_set_read_only` leaves the flag alone (an explicit option
    /// is not inherited, bdrv_reopen_queue_child).
    pub read_only_given: std::sync::atomic::AtomicBool,
    /// `detect-zeroes` (only `off` is implemented).
    pub detect_zeroes: String,
    pub driver: Box<dyn Driver>,
    /// Changes only when a snapshot gives an overlay its backing.
    children: std::sync::RwLock<Vec<Child>>,
    id: u64,
    perms: Mutex<PermState>,
    /// `bs->wr_highest_offset`: end of the highest write through this node.
    pub wr_highest_offset: AtomicU64,
    /// The named dirty bitmaps (`bs->dirty_bitmaps`).
    pub bitmaps: Arc<crate::dirty::NodeBitmaps>,
    /// The driver marks `bitmaps` itself (a non-linear format).
    pub(crate) marks_own_bitmaps: bool,
}

impl Node {
    pub fn new(
        name: String,
        auto_named: bool,
        flags: NodeFlags,
        driver: Box<dyn Driver>,
        children: Vec<Child>,
    ) -> Self {
        let bitmaps = Arc::new(crate::dirty::NodeBitmaps::default());
        let marks_own_bitmaps = driver.attach_bitmaps(&bitmaps);
        Node {
            name,
            auto_named,
            flags: Mutex::new(flags),
            inherited: std::sync::atomic::AtomicBool::new(false),
            read_only_given: std::sync::atomic::AtomicBool::new(false),
            detect_zeroes: "off".into(),
            driver,
            children: std::sync::RwLock::new(children),
            id: new_parent_id(),
            perms: Mutex::new(PermState {
                parents: Vec::new(),
                cur: (0, perm::ALL),
            }),
            wr_highest_offset: AtomicU64::new(0),
            bitmaps,
            marks_own_bitmaps,
        }
    }

    pub fn flags(&self) -> NodeFlags {
        *self.flags.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn set_flags(&self, f: NodeFlags) {
        *self.flags.lock().unwrap_or_else(|e| e.into_inner()) = f;
    }

    pub fn children(&self) -> Vec<Child> {
        self.children
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn child(&self, role: &str) -> Option<Arc<Node>> {
        self.children()
            .into_iter()
            .find(|c| c.role == role)
            .map(|c| c.node)
    }

    /// `bdrv_primary_child`: the child holding the data (`file`, or a
    /// filter's `image`/`file`).
    pub fn primary_child(&self) -> Option<Arc<Node>> {
        self.children()
            .into_iter()
            .find(|c| matches!(c.role.as_ref(), "file" | "image"))
            .map(|c| c.node)
    }

    /// `bdrv_filter_or_cow_bs`: a filter's filtered child (its `file`, or
    /// the `backing` of a job's filter), else `backing`.
    pub fn filter_or_cow_child(&self) -> Option<Arc<Node>> {
        if self.driver.is_filter() {
            self.primary_child().or_else(|| self.child("backing"))
        } else {
            self.child("backing")
        }
    }

    /// Gives the node the backing child `backing` (QEMU's
    /// `bdrv_set_backing_hd`, used by `blockdev-snapshot`): the driver reads
    /// through it from now on, and it gets the permissions the driver asks
    /// for on a backing child.
    pub(crate) fn set_backing(&self, backing: Arc<Node>) -> Result<(), BlockError> {
        self.replace_backing(Some(backing))
    }

    /// Replaces the backing child (or with `None` drops it): the new one
    /// gets its permissions first, the old one loses them after.
    pub(crate) fn replace_backing(&self, backing: Option<Arc<Node>>) -> Result<(), BlockError> {
        let old = self.child("backing");
        if let Some(b) = &backing {
            let (p, sh) = self.perms();
            let want = self.driver.child_perm("backing", p, sh);
            b.set_parent_perm(self.id, Some(want))?;
        }
        if let Err(e) = self.driver.set_backing(backing.clone()) {
            if let Some(b) = &backing {
                let _ = b.set_parent_perm(self.id, None);
            }
            return Err(e);
        }
        {
            let mut c = self.children.write().unwrap_or_else(|e| e.into_inner());
            c.retain(|c| c.role != "backing");
            if let Some(b) = backing.clone() {
                c.push(Child::new("backing", b));
            }
        }
        if let Some(o) = old {
            if !backing.as_ref().is_some_and(|b| Arc::ptr_eq(b, &o)) {
                let _ = o.set_parent_perm(self.id, None);
            }
        }
        Ok(())
    }

    /// `bdrv_replace_node` for one parent edge: child `role` becomes
    /// `new`, which gets the permissions this node held on the old child
    /// (if it held any), and the old child loses them.
    pub(crate) fn replace_child(&self, role: &str, new: Arc<Node>) -> Result<(), BlockError> {
        if role == "backing" {
            return self.replace_backing(Some(new));
        }
        let Some(old) = self.child(role) else {
            return Err(BlockError::new(format!(
                "Node '{}' has no child '{role}'",
                self.name
            )));
        };
        if Arc::ptr_eq(&old, &new) {
            return Ok(());
        }
        let held = old.parent_perm(self.id);
        if held.is_some() {
            new.set_parent_perm(self.id, held)?;
        }
        if let Err(e) = self.driver.replace_child(role, &new) {
            if held.is_some() {
                let _ = new.set_parent_perm(self.id, None);
            }
            return Err(e);
        }
        {
            // The moved edge goes to the head of QEMU's `bs->children`
            // (observed on QEMU 7.2: x-debug-query-block-graph lists it
            // first), which is the end of this list.
            let mut c = self.children.write().unwrap_or_else(|e| e.into_inner());
            if let Some(i) = c.iter().position(|c| c.role == role) {
                let mut e = c.remove(i);
                e.node = new.clone();
                c.push(e);
            }
        }
        if held.is_some() {
            let _ = old.set_parent_perm(self.id, None);
        }
        Ok(())
    }

    /// `bdrv_attach_child`'s permissions: every child gets what the driver
    /// asks of it for the permissions this node holds now (the quorum
    /// driver's children at open; other drivers still take theirs when a
    /// parent first holds something on them).
    pub(crate) fn take_child_perms(&self) -> Result<(), BlockError> {
        let (p, sh) = self.perms();
        for c in self.children() {
            let want = self.driver.child_perm(&c.role, p, sh);
            c.node.set_parent_perm(self.id, Some(want))?;
        }
        Ok(())
    }

    /// The permissions this node holds (or, if it never took any, would
    /// take) on its child `role`: an x-debug-query-block-graph edge's.
    pub fn edge_perm(&self, c: &Child) -> (u64, u64) {
        c.node.parent_perm(self.id).unwrap_or_else(|| {
            let (p, sh) = self.perms();
            self.driver.child_perm(&c.role, p, sh)
        })
    }

    /// Every parent identity holding permissions on this node.
    pub(crate) fn parent_ids(&self) -> Vec<u64> {
        let st = self.perms.lock().unwrap_or_else(|e| e.into_inner());
        st.parents.iter().map(|e| e.0).collect()
    }

    /// This node's identity as a parent in the permission system.
    pub(crate) fn parent_id(&self) -> u64 {
        self.id
    }

    /// Asks every child again for what the driver needs of it (after a
    /// reopen changed whether the node writes), and re-applies this node's
    /// own permissions to its driver (the file driver's descriptor mode).
    /// Children this node holds nothing on yet are left alone.
    pub(crate) fn refresh_perms(&self) -> Result<(), BlockError> {
        let cur = self.perms();
        self.check_writable_perm(cur.0)?;
        self.driver.set_perm(cur, cur)?;
        for c in self.children() {
            if c.node.parent_perm(self.id).is_some() {
                let want = self.driver.child_perm(&c.role, cur.0, cur.1);
                c.node.set_parent_perm(self.id, Some(want))?;
            }
        }
        Ok(())
    }

    /// `bdrv_node_refresh_perm`: write permissions never work on a
    /// read-only node.
    fn check_writable_perm(&self, p: u64) -> Result<(), BlockError> {
        if p & (perm::WRITE | perm::WRITE_UNCHANGED) != 0 && self.flags().read_only {
            return Err(BlockError::new("Block node is read-only"));
        }
        Ok(())
    }

    /// The backing chain below this node, nearest first, through the
    /// filters in it (a job's filter between two layers).
    pub fn backing_chain(&self) -> Vec<Arc<Node>> {
        let mut out = Vec::new();
        let mut cur = self.child("backing");
        while let Some(n) = cur {
            cur = n.filter_or_cow_child();
            out.push(n);
        }
        out
    }

    /// The node leaves the graph: it gives up what it held on its children.
    pub(crate) fn release_children(&self) {
        for c in self.children() {
            let _ = c.node.set_parent_perm(self.id, None);
        }
    }

    /// The cumulative (perm, shared) held on this node.
    pub fn perms(&self) -> (u64, u64) {
        self.perms.lock().unwrap_or_else(|e| e.into_inner()).cur
    }

    /// What parent `id` holds on this node.
    pub(crate) fn parent_perm(&self, id: u64) -> Option<(u64, u64)> {
        let st = self.perms.lock().unwrap_or_else(|e| e.into_inner());
        st.parents.iter().find(|e| e.0 == id).map(|e| (e.1, e.2))
    }

    pub fn has_parents(&self) -> bool {
        !self
            .perms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .parents
            .is_empty()
    }

    /// Sets (or with `None` removes) parent `id`'s permissions and
    /// propagates the change down the graph; on failure nothing changes
    /// (QEMU's prepare/commit/abort transaction).
    pub(crate) fn set_parent_perm(&self, id: u64, p: Option<(u64, u64)>) -> Result<(), BlockError> {
        let mut st = self.perms.lock().unwrap_or_else(|e| e.into_inner());
        let saved = st.parents.clone();
        st.parents.retain(|e| e.0 != id);
        if let Some((pm, sh)) = p {
            st.parents.push((id, pm, sh));
        }
        let new = st
            .parents
            .iter()
            .fold((0, perm::ALL), |(pm, sh), e| (pm | e.1, sh & e.2));
        let old = st.cur;
        if new == old {
            return Ok(());
        }
        if let Err(e) = self
            .check_writable_perm(new.0)
            .and_then(|()| self.apply(old, new))
        {
            st.parents = saved;
            return Err(e);
        }
        st.cur = new;
        Ok(())
    }

    fn apply(&self, old: (u64, u64), new: (u64, u64)) -> Result<(), BlockError> {
        self.driver.set_perm(old, new)?;
        let children = self.children();
        for (i, c) in children.iter().enumerate() {
            let want = self.driver.child_perm(&c.role, new.0, new.1);
            if let Err(e) = c.node.set_parent_perm(self.id, Some(want)) {
                for c in &children[..i] {
                    let back = self.driver.child_perm(&c.role, old.0, old.1);
                    let _ = c.node.set_parent_perm(self.id, Some(back));
                }
                let _ = self.driver.set_perm(new, old);
                return Err(e);
            }
        }
        Ok(())
    }

    /// The host file and the byte offset guest offset 0 maps to, following
    /// linear format drivers (raw) down to the protocol node; with every
    /// node on the way and its own offset into the file.
    pub fn resolve_file(self: &Arc<Self>) -> Option<DataPath> {
        if let Some(io) = self.driver.file_io() {
            return Some(DataPath {
                io: io.clone(),
                base: 0,
                path: vec![(self.clone(), 0)],
            });
        }
        let (off, _) = self.driver.linear()?;
        let mut dp = self.child("file")?.resolve_file()?;
        dp.base += off;
        for e in &mut dp.path {
            e.1 += off;
        }
        dp.path.insert(0, (self.clone(), 0));
        Some(dp)
    }

    pub fn size(&self) -> Result<u64, BlockError> {
        self.driver.size()
    }

    /// The protocol node's file name (`file` in query-block).
    pub fn filename(&self) -> String {
        self.driver.filename()
    }
}

/// Where a BlockBackend's requests go: the host file, the file offset of
/// guest offset 0, and the nodes crossed with the file offset of their
/// offset 0 ... as seen from the root (for per-node `wr_highest_offset`).
#[derive(Clone)]
pub struct DataPath {
    pub io: Arc<FileIo>,
    pub base: u64,
    /// (node, offset added to a root offset to get this node's offset).
    pub path: Vec<(Arc<Node>, u64)>,
}
