//! Metadata state: the L1 table, the L2 and refcount-block caches, cluster
//! allocation with refcounts, and the write ordering QEMU uses so that a
//! crash at any point leaves at worst leaked clusters (block/qcow2-cache.c
//! dependencies, block/qcow2-refcount.c, block/qcow2-cluster.c):
//!
//! - a new reference (L2 entry, L1 entry, reftable entry) reaches the disk
//!   only after the refcount that covers its target (refblocks are written
//!   and synced before the L2 table that depends on them);
//! - a reference is removed on disk before the refcount is decreased;
//! - with `lazy_refcounts` the first rule is dropped and the image is marked
//!   dirty first, so an open after a crash rebuilds the refcounts.

use std::sync::Arc;

mod shrink;

use super::cache::Lru;
use super::error::{Qcow2Error, Result};
use super::header::{self, Header};
use super::storage::ImageFile;

pub const L1E_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
pub const L2E_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
pub const OFLAG_COPIED: u64 = 1 << 63;
pub const OFLAG_COMPRESSED: u64 = 1 << 62;
pub const OFLAG_ZERO: u64 = 1;
/// Host offsets must fit the 56-bit offset fields.
const MAX_HOST_OFFSET: u64 = 1 << 56;

/// QEMU's `QCow2ClusterType` for a standard L2 entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterKind {
    Unallocated,
    ZeroPlain,
    /// Reads as zero, host cluster kept (offset).
    ZeroAlloc(u64),
    /// Host offset.
    Normal(u64),
    /// (host byte offset, compressed byte length).
    Compressed(u64, u64),
}

/// Which cache must be written back before the other (qcow2_cache_set_dependency).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dep {
    None,
    /// L2 tables reference newly allocated clusters: refblocks first.
    L2AfterRc,
    /// Refcounts were decreased for dropped references: L2 tables first.
    RcAfterL2,
}

pub(crate) struct Meta {
    pub file: Arc<dyn ImageFile>,
    pub version: u32,
    pub cs: u64,
    pub size: u64,
    pub writable: bool,
    pub lazy: bool,
    pub incompat: u64,
    pub l1: Vec<u64>,
    pub l1_offset: u64,
    pub reftable: Vec<u64>,
    pub reftable_offset: u64,
    pub refcount_order: u32,
    pub nb_snapshots: u32,
    pub snapshots_offset: u64,
    l2_cache: Lru<Vec<u64>>,
    rb_cache: Lru<Vec<u8>>,
    dep: Dep,
    /// Guest clusters whose allocating write is between reserving its host
    /// cluster and linking it (see `alloc`).
    pub inflight: std::collections::HashSet<u64>,
    /// Lowest cluster index that may be free (QEMU's free_cluster_index).
    pub free_hint: u64,
    /// First cluster index past everything allocated or in the file.
    pub end_cluster: u64,
    /// Compressed-entry layout (csize_shift, csize_mask, offset mask).
    csize_shift: u32,
    csize_mask: u64,
    coffset_mask: u64,
}

fn eio(what: &str) -> impl Fn(std::io::Error) -> Qcow2Error + '_ {
    move |e| Qcow2Error::io(what, &e)
}

pub(crate) fn read_u64_table(file: &dyn ImageFile, off: u64, n: usize) -> Result<Vec<u64>> {
    let mut b = vec![0u8; n * 8];
    file.read_at(&mut b, off)
        .map_err(eio("Could not read metadata table"))?;
    Ok(b.chunks_exact(8)
        .map(|c| u64::from_be_bytes(c.try_into().unwrap_or([0; 8])))
        .collect())
}

pub(crate) fn encode_u64s(v: &[u64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_be_bytes()).collect()
}

impl Meta {
    pub fn new(
        file: Arc<dyn ImageFile>,
        h: &Header,
        writable: bool,
        lazy: bool,
        l2_cache_tables: usize,
        rb_cache_blocks: usize,
    ) -> Result<Self> {
        let cs = h.cluster_size();
        let l1 =
            read_u64_table(&*file, h.l1_table_offset, h.l1_size as usize).map_err(|e| match e {
                Qcow2Error::Io { errno, .. } => Qcow2Error::Io {
                    what: "Could not read L1 table".into(),
                    errno,
                },
                e => e,
            })?;
        let rt_entries = (h.refcount_table_clusters as u64 * cs / 8) as usize;
        let reftable = read_u64_table(&*file, h.refcount_table_offset, rt_entries)?;
        let flen = file.file_size().map_err(eio("Could not get file size"))?;
        let cb = h.cluster_bits;
        let csize_shift = 62 - (cb - 8);
        Ok(Meta {
            file,
            version: h.version,
            cs,
            size: h.size,
            writable,
            lazy,
            incompat: h.incompatible_features,
            l1,
            l1_offset: h.l1_table_offset,
            reftable,
            reftable_offset: h.refcount_table_offset,
            refcount_order: h.refcount_order,
            nb_snapshots: h.nb_snapshots,
            snapshots_offset: h.snapshots_offset,
            l2_cache: Lru::new(l2_cache_tables),
            rb_cache: Lru::new(rb_cache_blocks),
            dep: Dep::None,
            inflight: Default::default(),
            free_hint: 0,
            end_cluster: flen.div_ceil(cs),
            csize_shift,
            csize_mask: (1u64 << (cb - 8)) - 1,
            coffset_mask: (1u64 << csize_shift) - 1,
        })
    }

    pub fn l2_entries(&self) -> u64 {
        self.cs / 8
    }

    /// Refcount entries per refcount block.
    pub fn rb_entries(&self) -> u64 {
        (self.cs * 8) >> self.refcount_order
    }

    fn refcount_max(&self) -> u64 {
        let bits = 1u32 << self.refcount_order;
        if bits == 64 {
            u64::MAX
        } else {
            (1u64 << bits) - 1
        }
    }

    // ---- classification -------------------------------------------------

    /// `qcow2_get_cluster_type` plus the offset checks QEMU does before use.
    pub fn classify(&self, e: u64, l2_off: u64, l2_index: u64) -> Result<ClusterKind> {
        if e & OFLAG_COMPRESSED != 0 {
            let off = e & self.coffset_mask;
            let sectors = ((e >> self.csize_shift) & self.csize_mask) + 1;
            let len = (sectors * 512).saturating_sub(off & 511);
            return Ok(ClusterKind::Compressed(off, len));
        }
        let off = e & L2E_OFFSET_MASK;
        if e & OFLAG_ZERO != 0 {
            if self.version < 3 {
                return Err(Qcow2Error::Corrupt(format!(
                    "Zero cluster entry found in pre-v3 image (L2 offset: {l2_off:#x}, L2 index: {l2_index:#x})"
                )));
            }
            return Ok(if off == 0 {
                ClusterKind::ZeroPlain
            } else {
                ClusterKind::ZeroAlloc(off)
            });
        }
        if off == 0 {
            return Ok(ClusterKind::Unallocated);
        }
        if !off.is_multiple_of(self.cs) {
            return Err(Qcow2Error::Corrupt(format!(
                "Cluster allocation offset {off:#x} unaligned (L2 offset: {l2_off:#x}, L2 index: {l2_index:#x})"
            )));
        }
        Ok(ClusterKind::Normal(off))
    }

    /// The L2 table offset for guest cluster `gc`, with its L1 index
    /// (0 when unallocated); errors when the L1 entry is corrupt.
    fn l2_offset_of(&self, gc: u64) -> Result<(usize, u64, bool)> {
        let l1i = (gc / self.l2_entries()) as usize;
        let Some(&e) = self.l1.get(l1i) else {
            return Ok((l1i, 0, false));
        };
        let off = e & L1E_OFFSET_MASK;
        if !off.is_multiple_of(self.cs) {
            return Err(Qcow2Error::Corrupt(format!(
                "L2 table offset {off:#x} unaligned (L1 index: {l1i:#x})"
            )));
        }
        Ok((l1i, off, e & OFLAG_COPIED != 0))
    }

    /// The raw L2 entry of guest cluster `gc` with its L2 table offset.
    pub fn l2_entry(&mut self, gc: u64) -> Result<(u64, u64)> {
        let (_, l2, _) = self.l2_offset_of(gc)?;
        if l2 == 0 {
            return Ok((0, 0));
        }
        let slot = self.load_l2(l2)?;
        let i = (gc % self.l2_entries()) as usize;
        Ok((self.l2_cache.ents[slot].data[i], l2))
    }

    pub fn lookup(&mut self, gc: u64) -> Result<(ClusterKind, u64)> {
        let (e, l2) = self.l2_entry(gc)?;
        Ok((self.classify(e, l2, gc % self.l2_entries())?, e))
    }

    // ---- cache plumbing -------------------------------------------------

    fn load_l2(&mut self, off: u64) -> Result<usize> {
        if let Some(i) = self.l2_cache.find(off) {
            return Ok(i);
        }
        self.check_table_offset(off, "L2 table")?;
        let t = read_u64_table(&*self.file, off, self.l2_entries() as usize)?;
        self.make_room_l2()?;
        Ok(self.l2_cache.insert(off, t, false))
    }

    fn make_room_l2(&mut self) -> Result<()> {
        if let Some(v) = self.l2_cache.victim() {
            self.write_back_l2(v)?;
            self.l2_cache.remove(v);
        }
        Ok(())
    }

    fn load_rb(&mut self, off: u64) -> Result<usize> {
        if let Some(i) = self.rb_cache.find(off) {
            return Ok(i);
        }
        self.check_table_offset(off, "Refcount block")?;
        let mut b = vec![0u8; self.cs as usize];
        self.file
            .read_at(&mut b, off)
            .map_err(eio("Could not read refcount block"))?;
        self.make_room_rb()?;
        Ok(self.rb_cache.insert(off, b, false))
    }

    fn make_room_rb(&mut self) -> Result<()> {
        if let Some(v) = self.rb_cache.victim() {
            self.write_back_rb(v)?;
            self.rb_cache.remove(v);
        }
        Ok(())
    }

    fn check_table_offset(&self, off: u64, what: &str) -> Result<()> {
        if off == 0 || !off.is_multiple_of(self.cs) || off >= MAX_HOST_OFFSET {
            return Err(Qcow2Error::Corrupt(format!(
                "{what} offset {off:#x} invalid"
            )));
        }
        Ok(())
    }

    fn sync(&self) -> Result<()> {
        self.file.flush().map_err(eio("Could not flush image"))
    }

    fn write_back_l2(&mut self, slot: usize) -> Result<()> {
        if !self.l2_cache.ents[slot].dirty {
            return Ok(());
        }
        if self.dep == Dep::L2AfterRc && self.rb_cache.any_dirty() {
            self.write_all_rb()?;
            self.sync()?;
        }
        if self.dep == Dep::L2AfterRc {
            self.dep = Dep::None;
        }
        let e = &self.l2_cache.ents[slot];
        let bytes = encode_u64s(&e.data);
        self.file
            .write_at(&bytes, e.off)
            .map_err(eio("Could not write L2 table"))?;
        self.l2_cache.ents[slot].dirty = false;
        Ok(())
    }

    fn write_back_rb(&mut self, slot: usize) -> Result<()> {
        if !self.rb_cache.ents[slot].dirty {
            return Ok(());
        }
        if self.dep == Dep::RcAfterL2 && self.l2_cache.any_dirty() {
            self.write_all_l2()?;
            self.sync()?;
        }
        if self.dep == Dep::RcAfterL2 {
            self.dep = Dep::None;
        }
        let e = &self.rb_cache.ents[slot];
        self.file
            .write_at(&e.data, e.off)
            .map_err(eio("Could not write refcount block"))?;
        self.rb_cache.ents[slot].dirty = false;
        Ok(())
    }

    fn write_all_rb(&mut self) -> Result<()> {
        for s in self.rb_cache.dirty_slots() {
            self.write_back_rb(s)?;
        }
        Ok(())
    }

    fn write_all_l2(&mut self) -> Result<()> {
        for s in self.l2_cache.dirty_slots() {
            self.write_back_l2(s)?;
        }
        Ok(())
    }

    /// Refblocks synced to disk (before something comes to depend on them).
    fn commit_refcounts(&mut self) -> Result<()> {
        if self.rb_cache.any_dirty() {
            self.write_all_rb()?;
            self.sync()?;
        }
        if self.dep == Dep::L2AfterRc {
            self.dep = Dep::None;
        }
        Ok(())
    }

    /// `qcow2_flush_caches`: every dirty table written in dependency order,
    /// then the file synced.
    pub fn flush(&mut self) -> Result<()> {
        if self.dep == Dep::RcAfterL2 {
            self.write_all_l2()?;
            self.write_all_rb()?;
        } else {
            self.write_all_rb()?;
            self.write_all_l2()?;
        }
        self.dep = Dep::None;
        self.sync()
    }

    /// New references to fresh clusters are about to go into an L2 table.
    fn depend_l2_on_rc(&mut self) -> Result<()> {
        if self.lazy {
            return self.mark_dirty();
        }
        if self.dep == Dep::RcAfterL2 {
            self.flush()?;
        }
        self.dep = Dep::L2AfterRc;
        Ok(())
    }

    /// References were removed from L2 tables; refcounts drop after them.
    fn depend_rc_on_l2(&mut self) -> Result<()> {
        if self.dep == Dep::L2AfterRc {
            self.flush()?;
        }
        self.dep = Dep::RcAfterL2;
        Ok(())
    }

    // ---- header bits ----------------------------------------------------

    fn write_header_field(&self, off: u64, bytes: &[u8]) -> Result<()> {
        self.file
            .write_at(bytes, off)
            .map_err(eio("Could not update qcow2 header"))
    }

    /// `qcow2_mark_dirty`: the dirty bit is on disk before any metadata
    /// whose refcounts are not up to date.
    pub fn mark_dirty(&mut self) -> Result<()> {
        if self.incompat & header::INCOMPAT_DIRTY != 0 {
            return Ok(());
        }
        let v = self.incompat | header::INCOMPAT_DIRTY;
        self.write_header_field(header::OFF_INCOMPAT, &v.to_be_bytes())?;
        self.sync()?;
        self.incompat = v;
        Ok(())
    }

    /// `qcow2_mark_clean`: flush, then clear the dirty bit.
    pub fn mark_clean(&mut self) -> Result<()> {
        if self.incompat & header::INCOMPAT_DIRTY == 0 {
            return Ok(());
        }
        self.flush()?;
        let v = self.incompat & !header::INCOMPAT_DIRTY;
        self.write_header_field(header::OFF_INCOMPAT, &v.to_be_bytes())?;
        self.sync()?;
        self.incompat = v;
        Ok(())
    }

    // ---- refcounts ------------------------------------------------------

    fn rb_get(&self, blk: &[u8], i: u64) -> u64 {
        let order = self.refcount_order;
        if order < 3 {
            let bits = 1u64 << order;
            let per = 8 / bits;
            let byte = blk[(i / per) as usize];
            ((byte >> ((i % per) * bits)) as u64) & ((1 << bits) - 1)
        } else {
            let w = 1usize << (order - 3);
            let s = i as usize * w;
            blk[s..s + w].iter().fold(0u64, |a, &b| a << 8 | b as u64)
        }
    }

    fn rb_set(&self, blk: &mut [u8], i: u64, v: u64) {
        let order = self.refcount_order;
        if order < 3 {
            let bits = 1u64 << order;
            let per = 8 / bits;
            let sh = (i % per) * bits;
            let mask = (((1u16 << bits) - 1) as u8) << sh;
            let b = &mut blk[(i / per) as usize];
            *b = (*b & !mask) | (((v as u8) << sh) & mask);
        } else {
            let w = 1usize << (order - 3);
            let s = i as usize * w;
            let be = v.to_be_bytes();
            blk[s..s + w].copy_from_slice(&be[8 - w..]);
        }
    }

    fn rb_offset(&self, idx: u64) -> Result<u64> {
        let Some(&e) = self.reftable.get(idx as usize) else {
            return Ok(0);
        };
        let off = e & L1E_OFFSET_MASK;
        if !off.is_multiple_of(self.cs) {
            return Err(Qcow2Error::Corrupt(format!(
                "Refblock offset {off:#x} unaligned (reftable index: {idx:#x})"
            )));
        }
        Ok(off)
    }

    /// The refcount of host cluster `c` (0 where no refblock covers it).
    pub fn refcount(&mut self, c: u64) -> Result<u64> {
        let rb = self.rb_offset(c / self.rb_entries())?;
        if rb == 0 {
            return Ok(0);
        }
        let s = self.load_rb(rb)?;
        let v = self.rb_get(&self.rb_cache.ents[s].data, c % self.rb_entries());
        Ok(v)
    }

    /// Sets the refcount of host cluster `c` (its refblock must exist).
    pub fn set_refcount(&mut self, c: u64, v: u64) -> Result<()> {
        let idx = c / self.rb_entries();
        let rb = self.rb_offset(idx)?;
        if rb == 0 {
            return Err(Qcow2Error::Corrupt(format!(
                "no refcount block for cluster {c:#x}"
            )));
        }
        let s = self.load_rb(rb)?;
        let i = c % self.rb_entries();
        let mut blk = std::mem::take(&mut self.rb_cache.ents[s].data);
        self.rb_set(&mut blk, i, v);
        self.rb_cache.ents[s].data = blk;
        self.rb_cache.ents[s].dirty = true;
        if v == 0 {
            self.free_hint = self.free_hint.min(c);
        }
        Ok(())
    }

    fn add_refcount(&mut self, c: u64, delta: i64) -> Result<()> {
        let old = self.refcount(c)?;
        let new = if delta >= 0 {
            old.checked_add(delta as u64)
                .filter(|v| *v <= self.refcount_max())
        } else {
            old.checked_sub(delta.unsigned_abs())
        };
        let new = new.ok_or_else(|| {
            Qcow2Error::Corrupt(format!(
                "refcount of cluster {:#x} would leave range ({old}{delta:+})",
                c * self.cs
            ))
        })?;
        self.set_refcount(c, new)
    }

    /// Whether a refblock covers host cluster `c`.
    fn covered(&self, c: u64) -> Result<bool> {
        Ok(self.rb_offset(c / self.rb_entries())? != 0)
    }

    /// First run of `n` free clusters from the hint (QEMU's
    /// `alloc_clusters_noref`).
    fn find_free(&mut self, n: u64) -> Result<u64> {
        // Cluster 0 is the header. The hint must start where the scan does,
        // or it never moves and every allocation scans the whole image.
        self.free_hint = self.free_hint.max(1);
        let mut start = self.free_hint;
        let mut run = 0;
        let mut c = start;
        loop {
            if (c + 1) * self.cs > MAX_HOST_OFFSET {
                return Err(Qcow2Error::Io {
                    what: "Allocating clusters failed".into(),
                    errno: libc::EFBIG,
                });
            }
            let free = c >= self.end_cluster || self.refcount(c)? == 0;
            if free {
                if run == 0 {
                    start = c;
                }
                run += 1;
                if run == n {
                    return Ok(start);
                }
            } else {
                run = 0;
                if c == self.free_hint {
                    self.free_hint = c + 1;
                }
            }
            c += 1;
        }
    }

    /// Allocates `n` contiguous clusters with refcount 1 (in the cache);
    /// returns the host byte offset (`qcow2_alloc_clusters`).
    pub fn alloc(&mut self, n: u64) -> Result<u64> {
        for _ in 0..64 {
            let start = self.find_free(n)?;
            let mut changed = false;
            let first = start / self.rb_entries();
            let last = (start + n - 1) / self.rb_entries();
            for idx in first..=last {
                changed |= self.ensure_refblock(idx, 0)?;
            }
            if changed {
                continue;
            }
            for c in start..start + n {
                self.add_refcount(c, 1)?;
            }
            self.end_cluster = self.end_cluster.max(start + n);
            return Ok(start * self.cs);
        }
        Err(Qcow2Error::Corrupt(
            "cluster allocation does not converge".into(),
        ))
    }

    /// Decreases the refcount of `n` clusters from host byte offset `off`.
    /// The caller removed the references on disk first ([`Meta::release`]).
    fn free_now(&mut self, off: u64, n: u64) -> Result<()> {
        let c0 = off / self.cs;
        for c in c0..c0 + n {
            self.add_refcount(c, -1)?;
            if self.refcount(c)? == 0 {
                self.l2_cache.drop_table(c * self.cs);
            }
        }
        Ok(())
    }

    /// Drops one reference to each host cluster of `ranges` (byte offset,
    /// byte length) after the L2 changes that removed them.
    pub fn release(&mut self, ranges: &[(u64, u64)]) -> Result<()> {
        if ranges.is_empty() {
            return Ok(());
        }
        self.depend_rc_on_l2()?;
        for &(off, len) in ranges {
            let first = off / self.cs;
            let last = (off + len.max(1) - 1) / self.cs;
            self.free_now(first * self.cs, last - first + 1)?;
        }
        Ok(())
    }

    /// Makes sure refcount block `idx` exists; true if one was created
    /// (`alloc_refcount_block`). `depth` bounds the recursion on images
    /// whose refblocks would have to cover each other.
    fn ensure_refblock(&mut self, idx: u64, depth: u32) -> Result<bool> {
        if depth > 8 {
            return Err(Qcow2Error::Corrupt(
                "refcount block allocation loops".into(),
            ));
        }
        if idx < self.reftable.len() as u64 && self.rb_offset(idx)? != 0 {
            return Ok(false);
        }
        if idx >= self.reftable.len() as u64 {
            self.grow_reftable(idx)?;
            self.ensure_refblock(idx, depth + 1)?;
            return Ok(true);
        }
        loop {
            let b = self.find_free(1)?;
            let bidx = b / self.rb_entries();
            let mut blk = vec![0u8; self.cs as usize];
            if bidx == idx {
                // The new block covers itself.
                self.rb_set(&mut blk, b % self.rb_entries(), 1);
            } else if self.covered(b)? {
                self.add_refcount(b, 1)?;
            } else {
                self.ensure_refblock(bidx, depth + 1)?;
                continue;
            }
            let off = b * self.cs;
            self.file
                .write_at(&blk, off)
                .map_err(eio("Could not write refcount block"))?;
            self.end_cluster = self.end_cluster.max(b + 1);
            self.commit_refcounts()?;
            self.make_room_rb()?;
            self.rb_cache.insert(off, blk, false);
            self.reftable[idx as usize] = off;
            self.file
                .write_at(&off.to_be_bytes(), self.reftable_offset + idx * 8)
                .map_err(eio("Could not update refcount table"))?;
            self.sync()?;
            return Ok(true);
        }
    }

    /// Moves the refcount table to a bigger place at the end of the image,
    /// with new refblocks covering the table itself
    /// (`qcow2_refcount_area`).
    fn grow_reftable(&mut self, min_idx: u64) -> Result<()> {
        let per_cluster = self.cs / 8;
        let old_len = self.reftable.len() as u64;
        let mut entries = (min_idx + 1).max(old_len + old_len / 2 + 1);
        let start = self.end_cluster.max(1);
        let (tclusters, blocks) = loop {
            let t = entries.div_ceil(per_cluster);
            // Blocks needed for [start, start + t + b).
            let mut b = 0u64;
            let missing = loop {
                let end = start + t + b;
                let first = start / self.rb_entries();
                let last = (end - 1) / self.rb_entries();
                let mut m = Vec::new();
                for idx in first..=last {
                    if idx >= old_len || self.rb_offset(idx)? == 0 {
                        m.push(idx);
                    }
                }
                if m.len() as u64 == b {
                    break m;
                }
                b = m.len() as u64;
            };
            if missing.iter().all(|&i| i < t * per_cluster) && min_idx < t * per_cluster {
                break (t, missing);
            }
            entries = t * per_cluster + per_cluster;
        };
        if tclusters * self.cs > header::MAX_REFTABLE_SIZE {
            return Err(Qcow2Error::Io {
                what: "Reference count table too large".into(),
                errno: libc::EFBIG,
            });
        }
        let table_c = start;
        let mut table = self.reftable.clone();
        table.resize((tclusters * per_cluster) as usize, 0);
        let all_end = start + tclusters + blocks.len() as u64;
        // Lay out the new refblocks after the table.
        for (k, &idx) in blocks.iter().enumerate() {
            table[idx as usize] = (start + tclusters + k as u64) * self.cs;
        }
        for (k, &idx) in blocks.iter().enumerate() {
            let mut blk = vec![0u8; self.cs as usize];
            for c in start..all_end {
                if c / self.rb_entries() == idx {
                    self.rb_set(&mut blk, c % self.rb_entries(), 1);
                }
            }
            let off = (start + tclusters + k as u64) * self.cs;
            self.file
                .write_at(&blk, off)
                .map_err(eio("Could not write refcount block"))?;
        }
        // Clusters of the new area covered by existing refblocks.
        for c in start..all_end {
            let idx = c / self.rb_entries();
            if !blocks.contains(&idx) {
                self.add_refcount(c, 1)?;
            }
        }
        self.file
            .write_at(&encode_u64s(&table), table_c * self.cs)
            .map_err(eio("Could not write refcount table"))?;
        self.end_cluster = self.end_cluster.max(all_end);
        self.commit_refcounts()?;
        let mut hdr = Vec::with_capacity(12);
        hdr.extend_from_slice(&(table_c * self.cs).to_be_bytes());
        hdr.extend_from_slice(&(tclusters as u32).to_be_bytes());
        self.write_header_field(header::OFF_REFTABLE, &hdr)?;
        self.sync()?;
        let old_off = self.reftable_offset;
        let old_clusters = (old_len * 8).div_ceil(self.cs);
        self.reftable = table;
        self.reftable_offset = table_c * self.cs;
        self.free_now(old_off, old_clusters)?;
        Ok(())
    }

    // ---- L1 / L2 updates ------------------------------------------------

    /// The cache slot of a writable (COPIED) L2 table for guest cluster
    /// `gc`, allocating or copying one (`l2_allocate`, then
    /// `qcow2_write_l1_entry`).
    /// Makes guest cluster `gc`'s L2 table writable (allocated or copied)
    /// ahead of an allocation that will update it.
    pub fn prepare_l2(&mut self, gc: u64) -> Result<()> {
        self.l2_for_write(gc).map(|_| ())
    }

    fn l2_for_write(&mut self, gc: u64) -> Result<usize> {
        let (l1i, old, copied) = self.l2_offset_of(gc)?;
        if l1i >= self.l1.len() {
            return Err(Qcow2Error::Corrupt(format!(
                "guest cluster {gc:#x} beyond the L1 table"
            )));
        }
        if old != 0 && copied {
            return self.load_l2(old);
        }
        let content = if old != 0 {
            let s = self.load_l2(old)?;
            self.l2_cache.ents[s].data.clone()
        } else {
            vec![0u64; self.l2_entries() as usize]
        };
        let new = self.alloc(1)?;
        self.check_overlap(new, self.cs)?;
        self.file
            .write_at(&encode_u64s(&content), new)
            .map_err(eio("Could not write L2 table"))?;
        if self.lazy {
            self.mark_dirty()?;
        } else {
            self.commit_refcounts()?;
        }
        self.sync()?;
        let e = new | OFLAG_COPIED;
        self.file
            .write_at(&e.to_be_bytes(), self.l1_offset + l1i as u64 * 8)
            .map_err(eio("Could not write L1 table"))?;
        self.l1[l1i] = e;
        if old != 0 {
            self.sync()?;
            self.l2_cache.drop_table(old);
            self.free_now(old, 1)?;
        }
        self.make_room_l2()?;
        Ok(self.l2_cache.insert(new, content, false))
    }

    /// Sets the L2 entry of guest cluster `gc`. `new_refs`: the entry
    /// points to clusters whose refcounts were just raised.
    pub fn set_l2(&mut self, gc: u64, entry: u64, new_refs: bool) -> Result<()> {
        let slot = self.l2_for_write(gc)?;
        if new_refs {
            self.depend_l2_on_rc()?;
        }
        // depend_* may have flushed, but never evicts: slot stays valid.
        let i = (gc % self.l2_entries()) as usize;
        self.l2_cache.ents[slot].data[i] = entry;
        self.l2_cache.ents[slot].dirty = true;
        Ok(())
    }

    /// Refuses writes that would land on the header, the active L1 table
    /// or the refcount table (QEMU's overlap check, reduced to the fixed
    /// structures).
    pub fn check_overlap(&self, off: u64, len: u64) -> Result<()> {
        let hit = |s: u64, l: u64| l != 0 && off < s.saturating_add(l) && s < off + len;
        let what = if hit(0, self.cs) {
            Some("qcow2_header")
        } else if hit(self.l1_offset, self.l1.len() as u64 * 8) {
            Some("active L1 table")
        } else if hit(self.reftable_offset, self.reftable.len() as u64 * 8) {
            Some("refcount table")
        } else {
            None
        };
        match what {
            Some(w) => Err(Qcow2Error::Corrupt(format!(
                "Preventing invalid write on metadata (overlaps with {w})"
            ))),
            None => Ok(()),
        }
    }

    /// Grows the L1 table to at least `n` entries (`qcow2_grow_l1_table`).
    pub fn grow_l1(&mut self, n: u64) -> Result<()> {
        if n <= self.l1.len() as u64 {
            return Ok(());
        }
        if n * 8 > header::MAX_L1_SIZE {
            return Err(Qcow2Error::Io {
                what: "Failed to grow the L1 table".into(),
                errno: libc::EFBIG,
            });
        }
        let mut t = self.l1.clone();
        t.resize(n as usize, 0);
        let clusters = (n * 8).div_ceil(self.cs);
        let new = self.alloc(clusters)?;
        // qcow2_grow_l1_table writes the table's own bytes, not the cluster.
        let bytes = encode_u64s(&t);
        self.file
            .write_at(&bytes, new)
            .map_err(eio("Failed to grow the L1 table"))?;
        self.commit_refcounts()?;
        let mut hdr = Vec::with_capacity(12);
        hdr.extend_from_slice(&(n as u32).to_be_bytes());
        hdr.extend_from_slice(&new.to_be_bytes());
        self.write_header_field(header::OFF_L1, &hdr)?;
        self.sync()?;
        let (old, old_n) = (self.l1_offset, self.l1.len() as u64);
        self.l1 = t;
        self.l1_offset = new;
        if old != 0 && old_n != 0 {
            self.free_now(old, (old_n * 8).div_ceil(self.cs))?;
        }
        Ok(())
    }

    pub fn set_size(&mut self, size: u64) -> Result<()> {
        self.write_header_field(header::OFF_SIZE, &size.to_be_bytes())?;
        self.sync()?;
        self.size = size;
        Ok(())
    }

    /// Rewrites an L1 entry (repair of the COPIED flag).
    pub fn set_l1(&mut self, i: usize, e: u64) -> Result<()> {
        self.file
            .write_at(&e.to_be_bytes(), self.l1_offset + i as u64 * 8)
            .map_err(eio("Could not write L1 table"))?;
        self.l1[i] = e;
        Ok(())
    }

    /// Rewrites one L2 entry in place, without allocation (repair).
    pub fn patch_l2(&mut self, l2: u64, i: usize, e: u64) -> Result<()> {
        let s = self.load_l2(l2)?;
        self.l2_cache.ents[s].data[i] = e;
        self.l2_cache.ents[s].dirty = true;
        Ok(())
    }

    /// A whole L2 table (through the cache).
    pub fn l2_table(&mut self, l2: u64) -> Result<Vec<u64>> {
        let s = self.load_l2(l2)?;
        Ok(self.l2_cache.ents[s].data.clone())
    }
}

impl Meta {
    /// Sets a refcount, creating the refblock that covers it (repair).
    pub fn set_refcount_alloc(&mut self, c: u64, v: u64) -> Result<()> {
        self.ensure_refblock(c / self.rb_entries(), 0)?;
        self.set_refcount(c, v)
    }
}
