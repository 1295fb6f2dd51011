//! Named dirty bitmaps on a node (QEMU's `bs->dirty_bitmaps`) and where
//! writes mark them (`bdrv_set_dirty`, called from
//! `bdrv_co_write_req_finish` for every write, write-zeroes and discard
//! that reaches the node, whether it succeeded or not).
//!
//! A node's writes reach it on one of two paths, and each marks there:
//! - a format that maps non-linearly (qcow2) marks in its [`FormatIo`]
//!   (every route to the node, device or job, ends there);
//! - a linear node (file, raw) marks in the protocol node's [`FileIo`],
//!   whose writes every route ends in (the pool's `sync_ops`, io_uring
//!   completions). A raw node's bitmaps watch its window of the file.
//!
//! With no bitmap the cost is one relaxed atomic load per write.
//!
//! [`FormatIo`]: crate::node::FormatIo
//! [`FileIo`]: crate::file::FileIo

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use crate::bitmap::DirtyBitmap;

/// One named bitmap (QEMU's BdrvDirtyBitmap with a name).
#[derive(Debug)]
pub struct NamedBitmap {
    pub name: String,
    /// Replaced (under the write lock) when the node grows or is resized.
    bits: RwLock<DirtyBitmap>,
    enabled: AtomicBool,
    persistent: AtomicBool,
    /// Stored in an image that is read-only now (`bdrv_dirty_bitmap_readonly`).
    readonly: AtomicBool,
    /// Loaded with the IN_USE flag set: not saved properly last time.
    pub inconsistent: bool,
    /// A backup job holds it (`bdrv_dirty_bitmap_busy`).
    busy: AtomicBool,
}

impl NamedBitmap {
    pub fn new(name: &str, size: u64, granularity: u64, enabled: bool) -> Self {
        NamedBitmap {
            name: name.to_string(),
            bits: RwLock::new(DirtyBitmap::new(size, granularity)),
            enabled: AtomicBool::new(enabled),
            persistent: AtomicBool::new(false),
            readonly: AtomicBool::new(false),
            inconsistent: false,
            busy: AtomicBool::new(false),
        }
    }

    /// A bitmap read from an image's bitmaps extension.
    pub fn loaded(
        name: &str,
        bits: DirtyBitmap,
        enabled: bool,
        readonly: bool,
        inconsistent: bool,
    ) -> Self {
        NamedBitmap {
            name: name.to_string(),
            bits: RwLock::new(bits),
            enabled: AtomicBool::new(enabled && !inconsistent),
            persistent: AtomicBool::new(true),
            readonly: AtomicBool::new(readonly),
            inconsistent,
            busy: AtomicBool::new(false),
        }
    }

    pub fn bits(&self) -> RwLockReadGuard<'_, DirtyBitmap> {
        self.bits.read().unwrap_or_else(|e| e.into_inner())
    }

    /// `bdrv_dirty_bitmap_truncate`.
    pub fn resize(&self, size: u64) {
        let mut w = self.bits.write().unwrap_or_else(|e| e.into_inner());
        *w = w.resized(size);
    }

    /// Marks a range; a write past the end first grows the bitmap to the
    /// write's end in whole sectors, as the node grew
    /// (`bdrv_co_write_req_finish`); a discard never grows it.
    fn set(&self, off: u64, len: u64, grows: bool) {
        let end = off.saturating_add(len);
        {
            let b = self.bits();
            if !grows || end <= b.size() {
                b.set(off, len);
                return;
            }
        }
        let mut w = self.bits.write().unwrap_or_else(|e| e.into_inner());
        if end > w.size() {
            *w = w.resized(end.div_ceil(512) * 512);
        }
        w.set(off, len);
    }

    /// `recording` in BlockDirtyInfo (no successors without backup jobs).
    pub fn recording(&self) -> bool {
        self.enabled.load(Ordering::Acquire)
    }

    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::Release);
    }

    pub fn persistent(&self) -> bool {
        self.persistent.load(Ordering::Acquire)
    }

    pub fn set_persistent(&self, on: bool) {
        self.persistent.store(on, Ordering::Release);
    }

    pub fn readonly(&self) -> bool {
        self.readonly.load(Ordering::Acquire)
    }

    pub fn set_readonly(&self, on: bool) {
        self.readonly.store(on, Ordering::Release);
    }

    /// `bdrv_dirty_bitmap_busy`: a backup job holds it (ferrovm has no NBD
    /// exports, the other holder in QEMU).
    pub fn busy(&self) -> bool {
        self.busy.load(Ordering::Acquire)
    }

    pub(crate) fn set_busy(&self, on: bool) {
        self.busy.store(on, Ordering::Release);
    }

    /// BlockDirtyInfo.
    pub fn info(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        m.insert("name".into(), self.name.clone().into());
        let b = self.bits();
        m.insert("count".into(), b.count_granules().into());
        m.insert("granularity".into(), b.granularity().into());
        drop(b);
        m.insert("recording".into(), self.recording().into());
        m.insert("busy".into(), self.busy().into());
        m.insert("persistent".into(), self.persistent().into());
        if self.inconsistent {
            m.insert("inconsistent".into(), true.into());
        }
        serde_json::Value::Object(m)
    }
}

/// A node's bitmaps, newest first (QEMU inserts at the list head).
#[derive(Debug, Default)]
pub struct NodeBitmaps {
    any: AtomicBool,
    list: RwLock<Vec<Arc<NamedBitmap>>>,
}

impl NodeBitmaps {
    /// `bdrv_set_dirty` after a write or write-zeroes: marks every
    /// recording bitmap.
    #[inline]
    pub fn mark(&self, off: u64, len: u64) {
        if self.any.load(Ordering::Relaxed) {
            self.mark_all(off, len, true);
        }
    }

    /// The same after a discard (which never grows the node).
    #[inline]
    pub fn mark_discard(&self, off: u64, len: u64) {
        if self.any.load(Ordering::Relaxed) {
            self.mark_all(off, len, false);
        }
    }

    #[cold]
    fn mark_all(&self, off: u64, len: u64, grows: bool) {
        for b in self.list.read().unwrap_or_else(|e| e.into_inner()).iter() {
            if b.recording() {
                b.set(off, len, grows);
            }
        }
    }

    /// The node was resized (`block_resize`).
    pub fn resize(&self, size: u64) {
        for b in self.list() {
            b.resize(size);
        }
    }

    pub fn list(&self) -> Vec<Arc<NamedBitmap>> {
        self.list.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn find(&self, name: &str) -> Option<Arc<NamedBitmap>> {
        self.list
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|b| b.name == name)
            .cloned()
    }

    pub fn is_empty(&self) -> bool {
        !self.any.load(Ordering::Acquire)
    }

    pub fn insert(&self, b: Arc<NamedBitmap>) {
        self.insert_at(0, b);
    }

    /// Puts a bitmap back where it was in the list (a transaction's undo).
    pub fn insert_at(&self, i: usize, b: Arc<NamedBitmap>) {
        let mut l = self.list.write().unwrap_or_else(|e| e.into_inner());
        let i = i.min(l.len());
        l.insert(i, b);
        self.any.store(true, Ordering::Release);
    }

    /// Where `name` is in the list, newest first.
    pub fn position(&self, name: &str) -> Option<usize> {
        let l = self.list.read().unwrap_or_else(|e| e.into_inner());
        l.iter().position(|b| b.name == name)
    }

    pub fn remove(&self, name: &str) -> Option<Arc<NamedBitmap>> {
        let mut l = self.list.write().unwrap_or_else(|e| e.into_inner());
        let i = l.iter().position(|b| b.name == name)?;
        let b = l.remove(i);
        self.any.store(!l.is_empty(), Ordering::Release);
        Some(b)
    }
}

/// The bitmaps of the linear nodes over one host file, each with the file
/// offset of its offset 0.
#[derive(Default)]
pub struct FileWatchers {
    any: AtomicBool,
    list: RwLock<Vec<(Arc<NodeBitmaps>, u64)>>,
}

impl FileWatchers {
    /// A write or write-zeroes of `len` bytes at file offset `off`.
    #[inline]
    pub fn mark(&self, off: u64, len: u64) {
        if self.any.load(Ordering::Relaxed) {
            self.mark_all(off, len, true);
        }
    }

    /// A discard.
    #[inline]
    pub fn mark_discard(&self, off: u64, len: u64) {
        if self.any.load(Ordering::Relaxed) {
            self.mark_all(off, len, false);
        }
    }

    #[cold]
    fn mark_all(&self, off: u64, len: u64, grows: bool) {
        let end = off.saturating_add(len);
        for (b, base) in self.list.read().unwrap_or_else(|e| e.into_inner()).iter() {
            if end > *base {
                let start = off.max(*base);
                b.mark_all(start - base, end - start, grows);
            }
        }
    }

    /// Starts (or with `on` false stops) marking `b` at `base`.
    pub fn watch(&self, b: &Arc<NodeBitmaps>, base: u64, on: bool) {
        let mut l = self.list.write().unwrap_or_else(|e| e.into_inner());
        l.retain(|(x, _)| !Arc::ptr_eq(x, b));
        if on {
            l.push((b.clone(), base));
        }
        self.any.store(!l.is_empty(), Ordering::Release);
    }
}

impl std::fmt::Debug for FileWatchers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FileWatchers")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_recording_bitmaps_only() {
        let nb = Arc::new(NodeBitmaps::default());
        nb.mark(0, 512); // no bitmap: nothing to do
        let a = Arc::new(NamedBitmap::new("a", 1 << 20, 65536, true));
        let b = Arc::new(NamedBitmap::new("b", 1 << 20, 65536, false));
        nb.insert(a.clone());
        nb.insert(b.clone());
        assert_eq!(nb.list()[0].name, "b");
        nb.mark(100, 1);
        assert_eq!(
            (a.bits().count_granules(), b.bits().count_granules()),
            (65536, 0)
        );
        b.set_enabled(true);
        nb.mark(65536 * 3, 65537);
        assert_eq!(
            (a.bits().count_granules(), b.bits().count_granules()),
            (3 * 65536, 2 * 65536)
        );
        nb.remove("a");
        nb.remove("b");
        assert!(nb.is_empty());
    }

    #[test]
    fn file_watchers_translate_to_the_node_window() {
        let w = FileWatchers::default();
        let nb = Arc::new(NodeBitmaps::default());
        let a = Arc::new(NamedBitmap::new("a", 1 << 20, 4096, true));
        nb.insert(a.clone());
        w.watch(&nb, 8192, true);
        w.mark(0, 4096); // before the window
        assert_eq!(a.bits().count_granules(), 0);
        w.mark(4096, 8192); // half before
        assert_eq!(a.bits().count_granules(), 4096);
        assert!(a.bits().is_set(0));
        w.watch(&nb, 8192, false);
        w.mark(1 << 19, 4096);
        assert_eq!(a.bits().count_granules(), 4096);
    }
}
