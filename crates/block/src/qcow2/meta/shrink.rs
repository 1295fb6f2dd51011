//! Shrinking the virtual disk: the metadata steps of QEMU 7.2's
//! `qcow2_co_truncate` for a smaller size (block/qcow2.c), in its order:
//!
//! 1. the clusters past the new end are discarded for good
//!    (`qcow2_cluster_discard(..., QCOW2_DISCARD_ALWAYS, full_discard=true)`):
//!    their L2 entries become 0 and their refcounts drop;
//! 2. the L1 entries past the new end are zeroed on disk and their L2 tables
//!    freed (`qcow2_shrink_l1_table`; the L1 table keeps its size);
//! 3. refcount blocks that count nothing any more leave the refcount table
//!    (`qcow2_shrink_reftable`; the table keeps its size);
//! 4. the file is cut after the last cluster still in use
//!    (`qcow2_get_last_cluster`, then a truncate of the file; a failure
//!    there is only a warning).
//!
//! Every cluster whose refcount reaches 0 on the way is discarded in the
//! file when the file node passes discards down (`QCOW2_DISCARD_ALWAYS`
//! ignores `pass-discard-request`; `bdrv_co_pdiscard` still needs the
//! file's `discard=unmap`).

use super::{Meta, L1E_OFFSET_MASK};
use crate::debug::DebugEvent;
use crate::qcow2::error::{Qcow2Error, Result};
use crate::qcow2::meta::ClusterKind;

/// Wraps a step's failure as `error_setg_errno(errp, -ret, what)` does.
fn step<T>(what: &str, r: Result<T>) -> Result<T> {
    r.map_err(|e| Qcow2Error::Io {
        what: what.into(),
        errno: e.errno(),
    })
}

impl Meta {
    /// The shrink path of `qcow2_co_truncate` down to `new_size` (smaller
    /// than the current size, a multiple of 512). `unmap`: the file takes
    /// discards. Returns a warning for the monitor's stderr when the file's
    /// tail could not be cut.
    pub fn shrink(&mut self, new_size: u64, unmap: bool) -> Result<Option<String>> {
        let cs = self.cs;
        let mut freed = Vec::new();
        let first = new_size.div_ceil(cs);
        let end = self.size.div_ceil(cs);
        let new_l1 = new_size.div_ceil(cs * self.l2_entries());
        let r = self.discard_for_good(first, end, &mut freed);
        self.punch(&mut freed, unmap);
        step("Failed to discard cropped clusters", r)?;

        let r = self.shrink_l1(new_l1, &mut freed);
        self.punch(&mut freed, unmap);
        step("Failed to reduce the number of L2 tables", r)?;

        let r = self.shrink_reftable(&mut freed);
        self.punch(&mut freed, unmap);
        step("Failed to discard unused refblocks", r)?;

        // bdrv_getlength: whole sectors.
        let old_len = self
            .file
            .file_size()
            .map(|l| l.div_ceil(512) * 512)
            .map_err(|e| Qcow2Error::io("Failed to inquire current file length", &e))?;
        let last = step(
            "Failed to find the last cluster",
            self.last_cluster(old_len),
        )?;
        let mut warning = None;
        let keep = (last + 1) * cs;
        if keep < old_len {
            match self.file.set_len(keep) {
                Ok(()) => self.end_cluster = last + 1,
                Err(e) => {
                    // file-posix's handle_aiocb_truncate names the ftruncate.
                    warning = Some(format!(
                        "Failed to truncate the tail of the image: Could not resize file: {}",
                        crate::error::strerror(e.raw_os_error().unwrap_or(libc::EIO))
                    ))
                }
            }
        }
        self.set_size(new_size).map_err(|e| Qcow2Error::Io {
            what: "Failed to update the image size".into(),
            errno: e.errno(),
        })?;
        Ok(warning)
    }

    /// `qcow2_cluster_discard` with `full_discard` over guest clusters
    /// `[first, end)`: each L2 table of the range is made writable
    /// (`get_cluster_table`, which allocates or copies it as a write
    /// would), then every entry that is not 0 becomes 0 and what it pointed
    /// to loses a reference (`qcow2_free_any_cluster`). Tables past the new
    /// L1 size are allocated too, as QEMU does, although
    /// `qcow2_shrink_l1_table` frees them right after: the file grows by
    /// them, and its tail is then cut at a cluster boundary.
    fn discard_for_good(&mut self, first: u64, end: u64, freed: &mut Vec<u64>) -> Result<()> {
        let per = self.l2_entries();
        let mut gc = first;
        while gc < end {
            let n = (per - gc % per).min(end - gc);
            self.prepare_l2(gc)?;
            for g in gc..gc + n {
                let (kind, entry) = self.lookup(g)?;
                if entry == 0 {
                    continue;
                }
                self.set_l2(g, 0, false)?;
                let old = match kind {
                    ClusterKind::Normal(h) | ClusterKind::ZeroAlloc(h) => Some((h, self.cs)),
                    ClusterKind::Compressed(h, l) => Some((h, l)),
                    ClusterKind::ZeroPlain | ClusterKind::Unallocated => None,
                };
                if let Some((off, len)) = old {
                    self.free_always(off, len, freed)?;
                }
            }
            gc += n;
        }
        Ok(())
    }

    /// `qcow2_free_clusters(..., QCOW2_DISCARD_ALWAYS)`: one reference less
    /// for each host cluster of `[off, off + len)`; the ones now free are
    /// noted for the discard.
    fn free_always(&mut self, off: u64, len: u64, freed: &mut Vec<u64>) -> Result<()> {
        self.release(&[(off, len)])?;
        let first = off / self.cs;
        let last = (off + len.max(1) - 1) / self.cs;
        for c in first..=last {
            if self.refcount(c)? == 0 {
                freed.push(c);
            }
        }
        Ok(())
    }

    /// `qcow2_shrink_l1_table`: the entries from `new_n` on are zeroed on
    /// disk (and synced) before their L2 tables are freed, last first.
    fn shrink_l1(&mut self, new_n: u64, freed: &mut Vec<u64>) -> Result<()> {
        let old_n = self.l1.len() as u64;
        if new_n >= old_n {
            return Ok(());
        }
        self.file.debug_event(DebugEvent::L1_SHRINK_WRITE_TABLE);
        let zeros = vec![0u8; ((old_n - new_n) * 8) as usize];
        let w = self
            .file
            .write_at(&zeros, self.l1_offset + new_n * 8)
            .map_err(|e| Qcow2Error::io("Could not write L1 table", &e))
            .and_then(|_| self.sync());
        if let Err(e) = w {
            // As QEMU: the table on disk may be half written; forget the
            // entries rather than follow them later.
            self.l1[new_n as usize..].fill(0);
            return Err(e);
        }
        self.file
            .debug_event(DebugEvent::L1_SHRINK_FREE_L2_CLUSTERS);
        for i in (new_n as usize..old_n as usize).rev() {
            let off = self.l1[i] & L1E_OFFSET_MASK;
            if off == 0 {
                continue;
            }
            self.free_always(off, self.cs, freed)?;
            self.l1[i] = 0;
        }
        Ok(())
    }

    /// `qcow2_shrink_reftable`: a refcount block that counts nothing (but
    /// maybe itself) leaves the table, which is written whole and synced;
    /// then each such block's own refcount goes to 0
    /// (`qcow2_discard_refcount_block`).
    fn shrink_reftable(&mut self, freed: &mut Vec<u64>) -> Result<()> {
        let per = self.rb_entries();
        let mut kept = vec![0u64; self.reftable.len()];
        for (i, k) in kept.iter_mut().enumerate() {
            let off = self.rb_offset(i as u64)?;
            if off == 0 {
                continue;
            }
            let slot = self.load_rb(off)?;
            let own = off / self.cs;
            let blk = &self.rb_cache.ents[slot].data;
            let unused = if own / per == i as u64 {
                // The block counts its own cluster: that one does not count.
                let mut b = blk.clone();
                self.rb_set(&mut b, own % per, 0);
                b.iter().all(|&x| x == 0)
            } else {
                blk.iter().all(|&x| x == 0)
            };
            if !unused {
                *k = self.reftable[i];
            }
        }
        let w = self
            .file
            .write_at(&super::encode_u64s(&kept), self.reftable_offset)
            .map_err(|e| Qcow2Error::io("Could not write refcount table", &e))
            .and_then(|_| self.sync());
        let mut r = w;
        for (i, &k) in kept.iter().enumerate() {
            if self.reftable[i] != 0 && k == 0 {
                if r.is_ok() {
                    r = self.discard_refblock(self.reftable[i] & L1E_OFFSET_MASK, freed);
                }
                self.reftable[i] = 0;
            }
        }
        r
    }

    /// `qcow2_discard_refcount_block`: the refcount of the block at `off`
    /// must be 1 and becomes 0; the block leaves the cache.
    fn discard_refblock(&mut self, off: u64, freed: &mut Vec<u64>) -> Result<()> {
        let c = off / self.cs;
        let idx = c / self.rb_entries();
        let cover = self.rb_offset(idx)?;
        if cover == 0 {
            return Err(Qcow2Error::Corrupt(format!(
                "Refblock at {off:#x} is not covered by the refcount structures"
            )));
        }
        let v = self.refcount(c)?;
        if v != 1 {
            return Err(Qcow2Error::Corrupt(format!(
                "Invalid refcount: refblock offset {cover:#x}, reftable index {idx}, block offset {off:#x}, refcount {v:#x}"
            )));
        }
        self.set_refcount(c, 0)?;
        self.rb_cache.drop_table(off);
        freed.push(c);
        Ok(())
    }

    /// `qcow2_get_last_cluster`: the last cluster of a file of `len` bytes
    /// whose refcount is not 0 (areas no refcount block covers count 0).
    fn last_cluster(&mut self, len: u64) -> Result<u64> {
        let per = self.rb_entries();
        let mut c = len.div_ceil(self.cs);
        while c > 0 {
            let i = c - 1;
            if self.rb_offset(i / per)? == 0 {
                c = i / per * per;
                continue;
            }
            if self.refcount(i)? > 0 {
                return Ok(i);
            }
            c = i;
        }
        Err(Qcow2Error::Corrupt(
            "There are no references in the refcount table.".into(),
        ))
    }

    /// `qcow2_process_discards`: the freed clusters are discarded in the
    /// file, adjacent ones at once; failures are ignored (discard is
    /// optional).
    fn punch(&mut self, freed: &mut Vec<u64>, unmap: bool) {
        let mut list = std::mem::take(freed);
        if !unmap {
            return;
        }
        list.sort_unstable();
        list.dedup();
        let mut i = 0;
        while i < list.len() {
            let mut j = i + 1;
            while j < list.len() && list[j] == list[j - 1] + 1 {
                j += 1;
            }
            let n = (j - i) as u64;
            let _ = self.file.punch_hole(list[i] * self.cs, n * self.cs);
            i = j;
        }
    }
}
