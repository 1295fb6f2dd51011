//! The backup job (QEMU 7.2 block/backup.c over block/block-copy.c and the
//! copy-before-write filter, block/copy-before-write.c): `blockdev-backup`
//! and `drive-backup` make the target a copy of the source as it was when
//! the job started, while the guest goes on writing.
//!
//! [`BlockCopy`] owns which clusters are still to copy and which are being
//! copied. The worker copies what is left in the background; the filter
//! in every device route to the source ([`CopyBeforeWrite`]) copies the
//! clusters a guest write is about to overwrite first. A cluster is copied
//! once, by whichever comes first; the other waits for it.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

use super::nodeio::{allocated_above, NodeIo};
use super::worker::Progress;
use super::{JobCtl, JobDriver, JobType, OnJobError};
use crate::bitmap::DirtyBitmap;
use crate::error::strerror;
use crate::graph::BlockGraph;
use crate::io::{ErrorAction, Route};
use crate::node::{new_parent_id, FormatIo, Node};
use crate::perm;

/// `BLOCK_COPY_MAX_MEM` / the most one copy operation moves.
const MAX_IO: u64 = 1 << 20;
/// `BLOCK_COPY_CLUSTER_SIZE_DEFAULT`.
pub const DEFAULT_CLUSTER: u64 = 64 << 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackupSync {
    Full,
    /// Only what the source's top layer holds.
    Top,
    /// Nothing in the background: only what the guest overwrites (the
    /// target usually has the source as its backing: image fleecing).
    None,
    /// What a dirty bitmap holds (incremental backup).
    Bitmap,
}

/// `BitmapSyncMode`: what becomes of the sync bitmap at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BitmapMode {
    /// Cleared of what was copied if the job succeeds.
    OnSuccess,
    /// Left as it was (plus the writes meanwhile).
    Never,
    /// Cleared of what was copied, even if the job fails.
    Always,
}

/// The bitmap a backup reads (`sync=bitmap`) or writes (any sync with a
/// bitmap). QEMU freezes it and records new writes in a successor; ferrovm
/// takes its bits at the start and lets it go on recording, which is the
/// same at the end: the successor is what the bitmap holds then, the
/// parent is `taken` plus that (`bdrv_dirty_bitmap_create_successor`,
/// `_abdicate`, `bdrv_reclaim_dirty_bitmap`).
pub struct SyncBitmap {
    pub bitmap: Arc<crate::dirty::NamedBitmap>,
    pub mode: BitmapMode,
    taken: Option<DirtyBitmap>,
}

impl SyncBitmap {
    pub fn new(bitmap: Arc<crate::dirty::NamedBitmap>, mode: BitmapMode) -> Self {
        SyncBitmap {
            bitmap,
            mode,
            taken: None,
        }
    }

    /// The job starts: the bits it copies are taken out of the bitmap.
    fn take(&mut self) -> &DirtyBitmap {
        let bits = self.bitmap.bits();
        let taken = bits.resized(bits.size());
        bits.clear();
        drop(bits);
        self.bitmap.set_busy(true);
        self.taken.insert(taken)
    }

    /// `backup_cleanup_sync_bitmap`; `left`: what the job did not copy.
    fn finish(&mut self, ok: bool, left: &DirtyBitmap) {
        let Some(taken) = self.taken.take() else {
            return;
        };
        let bits = self.bitmap.bits();
        let synced = (ok || self.mode == BitmapMode::Always) && self.mode != BitmapMode::Never;
        if !synced {
            bits.merge_from(&taken);
        } else if !ok {
            bits.merge_from(left);
        }
        drop(bits);
        self.bitmap.set_busy(false);
    }
}

/// What is copied and what is being copied (`BlockCopyState`).
pub(crate) struct BlockCopy {
    source: NodeIo,
    target: NodeIo,
    cluster: u64,
    size: u64,
    /// Clusters not yet copied.
    todo: DirtyBitmap,
    /// Clusters being copied now (`BlockCopyTask`s in flight).
    busy: Mutex<HashSet<u64>>,
    done: Condvar,
    /// The job's progress meter, once its worker runs; bytes the filter
    /// copied before that wait in `early`.
    meter: OnceLock<Arc<Progress>>,
    early: AtomicU64,
}

/// A failed copy: the errno, and whether reading the source failed.
type CopyError = (i32, bool);

impl BlockCopy {
    fn new(source: &Arc<Node>, target: &Arc<Node>, cluster: u64) -> Result<Self, String> {
        let size = source.size().map_err(|e| e.msg)?;
        let todo = DirtyBitmap::new(size, cluster);
        todo.set_all();
        Ok(BlockCopy {
            source: NodeIo::new(source),
            target: NodeIo::new(target),
            cluster,
            size,
            todo,
            busy: Mutex::new(HashSet::new()),
            done: Condvar::new(),
            meter: OnceLock::new(),
            early: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<u64>> {
        self.busy.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Copies every cluster of `[off, off + len)` that is still to copy
    /// (`block_copy_dirty_clusters`); clusters another copy has in hand are
    /// waited for. Returns the bytes this call copied.
    fn copy_range(&self, off: u64, len: u64, buf: &mut Vec<u8>) -> Result<u64, CopyError> {
        self.copy_range_as(off, len, buf, false)
    }

    /// [`Self::copy_range`]; `by_filter`: the copy-before-write filter's
    /// copy, counted on the job's progress while its clusters are still
    /// claimed, so [`Self::remaining`] sees every cluster exactly once.
    fn copy_range_as(
        &self,
        off: u64,
        len: u64,
        buf: &mut Vec<u8>,
        by_filter: bool,
    ) -> Result<u64, CopyError> {
        let cl = self.cluster;
        let end = off.saturating_add(len).min(self.size);
        if off >= end {
            return Ok(0);
        }
        let last = (end - 1) / cl;
        let mut c = off / cl;
        let mut copied = 0;
        while c <= last {
            let mut busy = self.lock();
            while busy.contains(&c) {
                busy = self.done.wait(busy).unwrap_or_else(|e| e.into_inner());
            }
            if !self.todo.is_set(c * cl) {
                c += 1;
                continue;
            }
            // Claim the run of clusters from c that are free and to copy.
            let mut e = c;
            while e <= last
                && (e - c) * cl < MAX_IO
                && !busy.contains(&e)
                && self.todo.is_set(e * cl)
            {
                busy.insert(e);
                e += 1;
            }
            self.todo.reset(c * cl, (e - c) * cl);
            drop(busy);
            let start = c * cl;
            let n = (e * cl).min(self.size) - start;
            let r = self.copy_io(start, n, buf);
            if r.is_err() {
                // block_copy_task_end: the clusters are to copy again.
                self.todo.set(start, n);
            }
            let mut busy = self.lock();
            if by_filter && r.is_ok() {
                self.count_filter_copy(n);
            }
            for x in c..e {
                busy.remove(&x);
            }
            drop(busy);
            self.done.notify_all();
            r?;
            copied += n;
            c = e;
        }
        Ok(copied)
    }

    /// `block_copy_do_copy`: zeros are written as zeros (the target may
    /// keep them sparse).
    fn copy_io(&self, off: u64, n: u64, buf: &mut Vec<u8>) -> Result<(), CopyError> {
        buf.resize(n as usize, 0);
        self.source.read(off, buf).map_err(|e| (e, true))?;
        if buf.iter().all(|&b| b == 0) {
            self.target.write_zeroes(off, n, false)
        } else {
            self.target.write(off, buf)
        }
        .map_err(|e| (e, false))
    }

    /// What is left to copy: clusters still to do, clusters a copy has
    /// claimed and not yet counted, and filter copies made before the job
    /// had its meter. Taken under the claim lock, as the filter counts
    /// under it.
    fn remaining(&self) -> u64 {
        let busy = self.lock();
        let claimed = (busy.len() as u64 * self.cluster).min(self.size);
        self.todo.count() + claimed + self.early.load(Ordering::Acquire)
    }

    /// Bytes the filter copied, onto the job's progress.
    fn count_filter_copy(&self, n: u64) {
        match self.meter.get() {
            Some(m) => m.add_current(n),
            None => {
                self.early.fetch_add(n, Ordering::AcqRel);
            }
        }
    }
}

/// The copy-before-write filter between the devices and the source.
pub(crate) struct CopyBeforeWrite {
    bc: Arc<BlockCopy>,
}

impl CopyBeforeWrite {
    /// `cbw_do_copy_before_write`; a failed copy fails the guest's write
    /// (`on-cbw-error=break-guest-write`, the default).
    fn before_write(&self, off: u64, len: u64) -> Result<(), i32> {
        let mut buf = Vec::new();
        self.bc
            .copy_range_as(off, len, &mut buf, true)
            .map_err(|(e, _)| e)?;
        Ok(())
    }
}

impl FormatIo for CopyBeforeWrite {
    fn read(&self, off: u64, b: &mut [u8]) -> Result<(), i32> {
        self.bc.source.read(off, b)
    }
    fn readv(&self, off: u64, bufs: &[crate::io::IoBuf]) -> Result<(), i32> {
        self.bc.source.readv(off, bufs)
    }
    fn write(&self, off: u64, b: &[u8]) -> Result<(), i32> {
        self.before_write(off, b.len() as u64)?;
        self.bc.source.write(off, b)
    }
    fn flush(&self) -> Result<(), i32> {
        self.bc.source.flush()
    }
    fn discard(&self, off: u64, len: u64) -> Result<(), i32> {
        self.before_write(off, len)?;
        self.bc.source.discard(off, len)
    }
    fn write_zeroes(&self, off: u64, len: u64, may_unmap: bool) -> Result<(), i32> {
        self.before_write(off, len)?;
        self.bc.source.write_zeroes(off, len, may_unmap)
    }
}

/// A backup's settings, checked by the command.
pub struct BackupSpec {
    pub id: String,
    pub source: Arc<Node>,
    pub target: Arc<Node>,
    pub sync: BackupSync,
    /// `block_copy_calculate_cluster_size`.
    pub cluster: u64,
    pub on_source_error: OnJobError,
    pub on_target_error: OnJobError,
    /// drive-backup opened the target: it is closed when the job ends.
    pub owns_target: bool,
    pub bitmap: Option<SyncBitmap>,
}

pub struct Backup {
    s: BackupSpec,
    bc: Arc<BlockCopy>,
    filter: bool,
    target_perm: u64,
}

impl Backup {
    pub fn new(s: BackupSpec) -> Result<Self, String> {
        let bc = Arc::new(BlockCopy::new(&s.source, &s.target, s.cluster)?);
        Ok(Backup {
            s,
            bc,
            filter: false,
            target_perm: new_parent_id(),
        })
    }

    fn remove_filter(&mut self, g: &BlockGraph) {
        if !std::mem::take(&mut self.filter) {
            return;
        }
        for b in g.backends() {
            if b.root().is_some_and(|r| Arc::ptr_eq(&r, &self.s.source)) {
                b.inner.set_route(Route::of(Some(self.s.source.clone())));
            }
        }
    }

    /// `block_copy_reset_unallocated` over the whole disk (sync=top):
    /// clusters the top layer does not hold are not copied.
    fn skip_unallocated(&self, ctl: &mut JobCtl) -> Result<bool, i32> {
        let mut off = 0;
        while off < self.bc.size {
            ctl.pause_point();
            if ctl.is_cancelled() {
                return Ok(false);
            }
            let want = (self.bc.size - off).min(1 << 30);
            let (alloc, n) = allocated_above(&self.s.source, Some(&self.s.source), off, want)?;
            let n = n.max(1).min(self.bc.size - off);
            if !alloc {
                // Only whole clusters: a partly allocated one is copied.
                let cl = self.bc.cluster;
                let (a, b) = (off.div_ceil(cl) * cl, ((off + n) / cl) * cl);
                let b = if off + n == self.bc.size { off + n } else { b };
                if b > a {
                    self.bc.todo.reset(a, b - a);
                }
            }
            off += n;
        }
        Ok(true)
    }

    /// The background copy (`backup_loop`).
    fn copy_all(&self, ctl: &mut JobCtl) -> Result<(), String> {
        let mut buf = Vec::new();
        let mut cursor = 0;
        let mut delay = Duration::ZERO;
        loop {
            ctl.sleep(delay);
            delay = Duration::ZERO;
            if ctl.is_cancelled() {
                return Ok(());
            }
            let next = self
                .bc
                .todo
                .next_dirty(cursor, MAX_IO)
                .or_else(|| self.bc.todo.next_dirty(0, MAX_IO));
            let Some((off, n)) = next else {
                return Ok(());
            };
            match self.bc.copy_range(off, n, &mut buf) {
                Ok(done) => {
                    ctl.progress(done);
                    delay = ctl.rate_delay(done);
                }
                Err((e, is_read)) => {
                    let policy = if is_read {
                        self.s.on_source_error
                    } else {
                        self.s.on_target_error
                    };
                    if ctl.error_action(policy, is_read, e) == ErrorAction::Report {
                        return Err(strerror(e));
                    }
                }
            }
            cursor = off + n;
        }
    }
}

impl JobDriver for Backup {
    fn job_type(&self) -> JobType {
        JobType::Backup
    }

    /// `bdrv_cbw_append`: the filter in every route to the source, and the
    /// job's hold on the target (write; others may only read).
    fn install(&mut self, g: &mut BlockGraph) -> Result<(), String> {
        if let Some(sb) = self.s.bitmap.as_mut() {
            let taken = sb.take();
            if self.s.sync == BackupSync::Bitmap {
                // backup_init_bcs_bitmap: only what the bitmap holds.
                self.bc.todo.clear();
                self.bc.todo.merge_from(taken);
            }
        }
        self.s
            .target
            .set_parent_perm(
                self.target_perm,
                Some((perm::WRITE, perm::CONSISTENT_READ | perm::WRITE_UNCHANGED)),
            )
            .map_err(|e| e.msg)?;
        let filter = Arc::new(CopyBeforeWrite {
            bc: self.bc.clone(),
        });
        for b in g.backends() {
            if b.root().is_some_and(|r| Arc::ptr_eq(&r, &self.s.source)) {
                b.inner.set_route(Route {
                    root: Some(self.s.source.clone()),
                    data: None,
                    format: Some(filter.clone()),
                });
            }
        }
        self.filter = true;
        Ok(())
    }

    fn run(&mut self, ctl: &mut JobCtl) -> Result<(), String> {
        let _ = self.bc.meter.set(ctl.meter());
        ctl.progress(self.bc.early.swap(0, Ordering::AcqRel));
        if self.s.sync == BackupSync::Top && !self.skip_unallocated(ctl).map_err(strerror)? {
            return Ok(());
        }
        // backup_init_bcs_bitmap: what is left to copy. The filter may be
        // copying right now, on a guest's write: its clusters count once,
        // either as done or as left.
        ctl.set_remaining(self.bc.remaining());
        let r = match self.s.sync {
            BackupSync::None => {
                // The filter does all the copying until the job is cancelled.
                while !ctl.cancel_requested() {
                    ctl.wait_for_request(Duration::from_millis(100));
                }
                Ok(())
            }
            _ => self.copy_all(ctl),
        };
        ctl.progress(self.bc.early.swap(0, Ordering::AcqRel));
        r?;
        self.bc.target.flush().map_err(strerror)
    }

    /// `backup_commit`.
    fn prepare(&mut self, _g: &mut BlockGraph) -> Result<(), String> {
        if let Some(sb) = self.s.bitmap.as_mut() {
            sb.finish(true, &self.bc.todo);
        }
        Ok(())
    }

    /// `backup_abort`.
    fn abort(&mut self, g: &mut BlockGraph) {
        if let Some(sb) = self.s.bitmap.as_mut() {
            sb.finish(false, &self.bc.todo);
        }
        self.remove_filter(g);
    }

    /// `backup_clean`: the filter goes; drive-backup's target is closed.
    fn clean(&mut self, g: &mut BlockGraph) {
        if let Some(sb) = self.s.bitmap.as_mut() {
            // A start that failed after `take` puts the bits back.
            sb.finish(false, &self.bc.todo);
        }
        self.remove_filter(g);
        let _ = self.s.target.set_parent_perm(self.target_perm, None);
        g.unblock(&self.s.id);
        if self.s.owns_target {
            g.remove_subtree(&self.s.target);
        }
    }
}

#[cfg(test)]
mod tests;
