//! The `block-dirty-bitmap-*` commands (QEMU 7.2
//! block/monitor/bitmap-qmp-cmds.c over block/dirty-bitmap.c), on the
//! graph's nodes. Errors are QEMU's words.

use std::sync::Arc;

use crate::dirty::NamedBitmap;
use crate::error::BlockError;
use crate::graph::BlockGraph;
use crate::node::Node;

/// `BDRV_BITMAP_MAX_NAME_SIZE`.
const MAX_NAME: usize = 1023;

/// `bdrv_dirty_bitmap_check` flags.
const BUSY: u32 = 1;
const RO: u32 = 2;
const INCONSISTENT: u32 = 4;
pub(crate) const DEFAULT: u32 = BUSY | RO | INCONSISTENT;
pub(crate) const ALLOW_RO: u32 = BUSY | INCONSISTENT;

/// A source of `block-dirty-bitmap-merge` (QAPI `BlockDirtyBitmapOrStr`).
pub enum BitmapRef {
    /// A bitmap on the target's node.
    Local(String),
    External {
        node: String,
        name: String,
    },
}

fn err(m: String) -> BlockError {
    BlockError::new(m)
}

/// `bdrv_dirty_bitmap_check`.
pub(crate) fn check(b: &NamedBitmap, flags: u32) -> Result<(), BlockError> {
    if flags & BUSY != 0 && b.busy() {
        return Err(err(format!(
            "Bitmap '{}' is currently in use by another operation and cannot be used",
            b.name
        )));
    }
    if flags & RO != 0 && b.readonly() {
        return Err(err(format!(
            "Bitmap '{}' is readonly and cannot be modified",
            b.name
        )));
    }
    if flags & INCONSISTENT != 0 && b.inconsistent {
        return Err(err(format!(
            "Bitmap '{}' is inconsistent and cannot be used",
            b.name
        )));
    }
    Ok(())
}

/// `bdrv_get_default_bitmap_granularity`: the cluster size clamped to
/// [4 KiB, 64 KiB]; 64 KiB for drivers without one (`bdrv_get_info`
/// fails for file and raw).
fn default_granularity(n: &Node) -> u64 {
    match n.driver.as_qcow2() {
        Some(q) => q.image().info().cluster_size.clamp(4096, 65536),
        None => 65536,
    }
}

/// Starts marking `n`'s bitmaps in the host file when it is a linear node
/// (qcow2 marks its own); `on` false stops it.
pub(crate) fn watch_file(n: &Arc<Node>, on: bool) {
    if n.marks_own_bitmaps {
        return;
    }
    if let Some(dp) = n.resolve_file() {
        dp.io.dirty.watch(&n.bitmaps, dp.base, on);
    }
}

/// After a resize of `n`: its bitmaps, and those of the linear nodes under
/// it (raw over file), take the new sizes.
pub(crate) fn resized(n: &Arc<Node>) {
    let mut cur = Some(n.clone());
    while let Some(c) = cur {
        if let Ok(size) = c.size() {
            c.bitmaps.resize(size);
        }
        cur = c.driver.linear().and_then(|_| c.child("file"));
    }
}

impl BlockGraph {
    /// `block_dirty_bitmap_lookup`.
    fn bitmap_lookup(
        &self,
        node: &str,
        name: &str,
    ) -> Result<(Arc<Node>, Arc<NamedBitmap>), BlockError> {
        let n = self
            .lookup_bs(Some(node), Some(node))
            .map_err(|_| err(format!("Node '{node}' not found")))?;
        let b = n
            .bitmaps
            .find(name)
            .ok_or_else(|| err(format!("Dirty bitmap '{name}' not found")))?;
        Ok((n, b))
    }

    /// `qmp_block_dirty_bitmap_add`.
    pub fn bitmap_add(
        &self,
        node: &str,
        name: &str,
        granularity: Option<u64>,
        persistent: bool,
        disabled: bool,
    ) -> Result<(), BlockError> {
        if name.is_empty() {
            return Err(err("Bitmap name cannot be empty".into()));
        }
        let n = self.lookup_bs(Some(node), Some(node))?;
        let g = match granularity {
            Some(g) if g < 512 || !g.is_power_of_two() => {
                return Err(err("Granularity must be power of 2 and at least 512".into()))
            }
            Some(g) => g,
            None => default_granularity(&n),
        };
        if persistent {
            self.can_store_new_bitmap(&n, name, g)?;
        }
        // bdrv_create_dirty_bitmap
        if n.bitmaps.find(name).is_some() {
            return Err(err(format!("Bitmap already exists: {name}")));
        }
        if name.len() > MAX_NAME {
            return Err(err(format!("Bitmap name too long: {name}")));
        }
        let size = n.size()?;
        let b = Arc::new(NamedBitmap::new(name, size, g, !disabled));
        b.set_persistent(persistent);
        let first = n.bitmaps.is_empty();
        n.bitmaps.insert(b);
        if first {
            watch_file(&n, true);
        }
        Ok(())
    }

    /// `bdrv_can_store_new_dirty_bitmap`: only qcow2 stores bitmaps
    /// (`qcow2_co_can_store_new_dirty_bitmap`).
    fn can_store_new_bitmap(&self, n: &Arc<Node>, name: &str, g: u64) -> Result<(), BlockError> {
        let who = self.device_or_node_name(n);
        let Some(q) = n.driver.as_qcow2() else {
            return Err(err(format!(
                "Can't store persistent bitmaps to {who}: {}",
                crate::error::strerror(libc::ENOTSUP)
            )));
        };
        if n.bitmaps.find(name).is_some() {
            return Err(err(format!("Bitmap already exists: {name}")));
        }
        let info = q.image().info();
        let fail = |m: &str| {
            err(format!(
                "Can't make bitmap '{name}' persistent in '{who}': {m}"
            ))
        };
        if info.version < 3 {
            return Err(fail("Cannot store dirty bitmaps in qcow2 v2 files"));
        }
        // check_constraints_on_bitmap; the QMP check already keeps the
        // granularity in [2^9, 2^31] (BME_{MIN,MAX}_GRANULARITY_BITS).
        let bytes = info.virtual_size.div_ceil(g).div_ceil(8);
        if bytes > 64 << 20 || bytes > 0x800_0000 * info.cluster_size {
            return Err(fail(
                "Too much space will be occupied by the bitmap. Use larger granularity",
            ));
        }
        if name.len() > MAX_NAME {
            return Err(fail("Name length exceeds maximum (1023 characters)"));
        }
        // calc_dir_entry_size: 24 bytes and the name, 8-aligned.
        let entry = |len: usize| (24 + len as u64).div_ceil(8) * 8;
        let stored: Vec<_> = n
            .bitmaps
            .list()
            .into_iter()
            .filter(|b| b.persistent())
            .collect();
        let dir: u64 = stored.iter().map(|b| entry(b.name.len())).sum::<u64>() + entry(name.len());
        if stored.len() + 1 > 65535 {
            return Err(fail(
                "Maximum number of persistent bitmaps is already reached",
            ));
        }
        if dir > 1024 * 65535 {
            return Err(fail("Not enough space in the bitmap directory"));
        }
        Ok(())
    }

    /// `qmp_block_dirty_bitmap_remove`.
    pub fn bitmap_remove(&self, node: &str, name: &str) -> Result<(), BlockError> {
        let (n, b) = self.bitmap_lookup(node, name)?;
        check(&b, BUSY | RO)?;
        if b.persistent() {
            if let Some(q) = n.driver.as_qcow2() {
                q.remove_persistent_bitmap(name)?;
            }
        }
        n.bitmaps.remove(name);
        if n.bitmaps.is_empty() {
            watch_file(&n, false);
        }
        Ok(())
    }

    /// A transaction's undo: the bitmap `bitmap_remove` took off `node`
    /// goes back (stored again at close if persistent).
    pub fn bitmap_restore(&self, node: &str, at: usize, b: Arc<NamedBitmap>) {
        if let Ok(n) = self.lookup_bs(Some(node), Some(node)) {
            n.bitmaps.insert_at(at, b);
            watch_file(&n, true);
        }
    }

    /// The bitmap `name` of `node` and its place in the node's list, for a
    /// transaction to note its state.
    pub fn bitmap_find(&self, node: &str, name: &str) -> Option<(usize, Arc<NamedBitmap>)> {
        let (n, b) = self.bitmap_lookup(node, name).ok()?;
        Some((n.bitmaps.position(name).unwrap_or(0), b))
    }

    /// `qmp_block_dirty_bitmap_clear`.
    pub fn bitmap_clear(&self, node: &str, name: &str) -> Result<(), BlockError> {
        let (_, b) = self.bitmap_lookup(node, name)?;
        check(&b, DEFAULT)?;
        b.bits().clear();
        Ok(())
    }

    /// `qmp_block_dirty_bitmap_enable` / `_disable`.
    pub fn bitmap_enable(&self, node: &str, name: &str, on: bool) -> Result<(), BlockError> {
        let (_, b) = self.bitmap_lookup(node, name)?;
        check(&b, ALLOW_RO)?;
        b.set_enabled(on);
        Ok(())
    }

    /// `block_dirty_bitmap_merge`: every source into the target, in order;
    /// on an error the target is put back as it was.
    pub fn bitmap_merge(
        &self,
        node: &str,
        target: &str,
        sources: &[BitmapRef],
    ) -> Result<(), BlockError> {
        let (n, dst) = self.bitmap_lookup(node, target)?;
        let mut backup = None;
        let r = (|| {
            for s in sources {
                let src = match s {
                    BitmapRef::Local(name) => n
                        .bitmaps
                        .find(name)
                        .ok_or_else(|| err(format!("Dirty bitmap '{name}' not found")))?,
                    BitmapRef::External { node, name } => self.bitmap_lookup(node, name)?.1,
                };
                // bdrv_merge_dirty_bitmap
                check(&dst, DEFAULT)?;
                check(&src, ALLOW_RO)?;
                let (sz, dz) = (src.bits().size(), dst.bits().size());
                if sz != dz {
                    return Err(err(format!(
                        "Bitmaps are of different sizes (destination size is {dz}, source size \
                         is {sz}) and can't be merged"
                    )));
                }
                if backup.is_none() {
                    backup = Some(dst.bits().snapshot());
                }
                if Arc::ptr_eq(&src, &dst) {
                    continue;
                }
                dst.bits().merge_from(&src.bits());
            }
            Ok(())
        })();
        if r.is_err() {
            if let Some(w) = &backup {
                dst.bits().restore(w);
            }
        }
        r
    }
}
