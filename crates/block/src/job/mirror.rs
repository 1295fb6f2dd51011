//! The mirror job (QEMU 7.2 block/mirror.c): `blockdev-mirror`,
//! `drive-mirror` and, with the base as target, the active `block-commit`.
//!
//! While it runs, the devices on the source reach it through a filter in
//! their route ([`MirrorTop`], QEMU's `mirror_top` node): every guest write
//! marks the dirty bitmap after it lands (`copy-mode=background`), or is
//! also written to the target (`write-blocking`). The worker copies dirty
//! chunks until none is left, says READY, and keeps the target in step
//! until `job-complete` (pivot the devices onto the target) or a cancel
//! (leave them on the source). The last dirty chunks are copied on the
//! owner inside a drained section, so the target is exact when the
//! devices move.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::filter_node::TopKind;
use super::nodeio::{allocated_above, NodeIo};
use super::{JobCtl, JobDriver, JobType, OnJobError};
use crate::bitmap::DirtyBitmap;
use crate::error::{strerror, BlockError};
use crate::graph::BlockGraph;
use crate::io::{ErrorAction, Route};
use crate::node::{new_parent_id, FormatIo, Node};
use crate::perm;

/// `MAX_IO_BYTES`: the most one copy operation moves.
const MAX_IO: u64 = 1 << 20;
/// `DEFAULT_MIRROR_BUF_SIZE` (16 operations of 1 MiB in flight).
pub const DEFAULT_BUF_SIZE: u64 = 16 << 20;
/// The most chunks copied at once (`MAX_IN_FLIGHT`), each on a thread of
/// its own for the batch.
const IN_FLIGHT: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    Full,
    Top,
    None,
}

/// What the target's backing becomes when the devices pivot onto it
/// (`BlockMirrorBackingMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackingMode {
    /// drive-mirror creating the target: the source's backing (or the
    /// source itself for `sync=none`).
    SourceChain,
    /// blockdev-mirror: the target keeps what it has.
    Leave,
    /// drive-mirror onto an existing image (`mode=existing`): the target
    /// was opened without its backing, and gets the one its header names.
    OpenChain,
}

/// The filter between the devices and the source while the job runs.
pub(crate) struct MirrorTop {
    source: NodeIo,
    /// `write-blocking`: guest writes also go to the target.
    target: Option<NodeIo>,
    dirty: Arc<DirtyBitmap>,
    /// The ranges the worker is copying now: a blocking write that meets
    /// one marks it dirty again, since the copy may carry older data.
    copying: Mutex<Vec<(u64, u64)>>,
}

impl MirrorTop {
    fn wrote(&self, off: u64, len: u64, to_target: impl FnOnce(&NodeIo) -> Result<(), i32>) {
        let Some(t) = &self.target else {
            self.dirty.set(off, len);
            return;
        };
        let overlaps = self
            .copying
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|&(o, l)| o < off + len && off < o + l);
        if overlaps || to_target(t).is_err() {
            self.dirty.set(off, len);
        }
    }
}

impl FormatIo for MirrorTop {
    fn read(&self, off: u64, b: &mut [u8]) -> Result<(), i32> {
        self.source.read(off, b)
    }
    fn readv(&self, off: u64, bufs: &[crate::io::IoBuf]) -> Result<(), i32> {
        self.source.readv(off, bufs)
    }
    fn write(&self, off: u64, b: &[u8]) -> Result<(), i32> {
        self.source.write(off, b)?;
        self.wrote(off, b.len() as u64, |t| t.write(off, b));
        Ok(())
    }
    fn flush(&self) -> Result<(), i32> {
        self.source.flush()
    }
    fn discard(&self, off: u64, len: u64) -> Result<(), i32> {
        self.source.discard(off, len)?;
        self.wrote(off, len, |t| t.write_zeroes(off, len, true));
        Ok(())
    }
    fn write_zeroes(&self, off: u64, len: u64, may_unmap: bool) -> Result<(), i32> {
        self.source.write_zeroes(off, len, may_unmap)?;
        self.wrote(off, len, |t| t.write_zeroes(off, len, may_unmap));
        Ok(())
    }
}

/// A mirror's settings, checked by the command.
pub struct MirrorSpec {
    pub id: String,
    pub kind: JobType,
    pub source: Arc<Node>,
    pub target: Arc<Node>,
    pub sync: SyncMode,
    pub backing_mode: BackingMode,
    pub zero_target: bool,
    pub granularity: u64,
    pub buf_size: u64,
    pub on_source_error: OnJobError,
    pub on_target_error: OnJobError,
    pub write_blocking: bool,
    /// drive-mirror opened the target: it goes when the job ends without
    /// a pivot.
    pub owns_target: bool,
    /// Active commit: the layers between source and target, dropped at
    /// the pivot, and the base's read-only flag to restore.
    pub drop_between: bool,
    /// `replaces`: the node the target takes the place of at the pivot
    /// (else the source).
    pub replaces: Option<String>,
    /// `filter-node-name`: the filter is a node of the graph
    /// ([`super::filter_node`]) rather than part of the devices' routes.
    pub named_filter: Option<Arc<Node>>,
}

pub struct Mirror {
    s: MirrorSpec,
    dirty: Arc<DirtyBitmap>,
    filter: Option<Arc<MirrorTop>>,
    /// `job-complete` came: the devices move to the target.
    pivot: bool,
    target_perm: u64,
    /// `s->cow_bitmap`: set when the target's clusters are larger than a
    /// chunk and its backing is not open, so a partly copied cluster
    /// would leave the rest unallocated over nothing. Copies are widened
    /// to whole target clusters until a granule has been copied once.
    cow: Option<Cow>,
}

/// The target clusters a mirror copies whole (`mirror_cow_align`).
struct Cow {
    copied: DirtyBitmap,
    cluster: u64,
}

impl Mirror {
    pub fn new(s: MirrorSpec) -> Result<Self, BlockError> {
        let size = s.source.size()?;
        Ok(Mirror {
            dirty: Arc::new(DirtyBitmap::new(size, s.granularity)),
            s,
            filter: None,
            pivot: false,
            target_perm: new_parent_id(),
            cow: None,
        })
    }

    /// `mirror_run`: copy whole target clusters when the target names a
    /// backing file that is not open (drive-mirror `mode=existing` before
    /// the pivot) and its clusters are larger than the granularity.
    fn cow_setup(&mut self) {
        let Some(info) = self.s.target.driver.image_info() else {
            return;
        };
        if info.backing_file.is_none()
            || self.s.target.child("backing").is_some()
            || self.s.granularity >= info.cluster_size
        {
            return;
        }
        self.s.buf_size = self.s.buf_size.max(info.cluster_size);
        self.cow = Some(Cow {
            copied: DirtyBitmap::new(self.dirty.size(), self.s.granularity),
            cluster: info.cluster_size,
        });
    }

    /// `mirror_cow_align`: a chunk whose first or last granule was never
    /// copied grows to the target clusters it touches (clipped at the end
    /// of the image).
    fn cow_align(&self, off: u64, n: u64) -> (u64, u64) {
        let Some(c) = &self.cow else {
            return (off, n);
        };
        if c.copied.is_set(off) && c.copied.is_set(off + n - 1) {
            return (off, n);
        }
        let start = off / c.cluster * c.cluster;
        let end = (off + n).div_ceil(c.cluster) * c.cluster;
        (start, end.min(self.dirty.size()) - start)
    }

    /// One chunk from the source to the target (`mirror_co_read` and its
    /// write); a failed chunk is dirty again. The error says whether the
    /// read failed.
    fn copy(
        &self,
        src: &NodeIo,
        tgt: &NodeIo,
        off: u64,
        n: u64,
        buf: &mut Vec<u8>,
    ) -> Result<(), (i32, bool)> {
        let filter = self.filter.as_ref();
        if let Some(f) = filter {
            f.copying
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((off, n));
        }
        self.dirty.reset(off, n);
        buf.resize(n as usize, 0);
        let r = src.read(off, buf).map_err(|e| (e, true)).and_then(|()| {
            if buf.iter().all(|&b| b == 0) {
                tgt.write_zeroes(off, n, true)
            } else {
                tgt.write(off, buf)
            }
            .map_err(|e| (e, false))
        });
        if let Some(f) = filter {
            f.copying
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|&r| r != (off, n));
        }
        // mirror_iteration_done marks the COW granules copied;
        // mirror_read_complete/mirror_write_complete: dirty again.
        if let (Ok(()), Some(c)) = (&r, &self.cow) {
            c.copied.set(off, n);
        }
        r.inspect_err(|_| self.dirty.set(off, n))
    }

    /// Up to [`IN_FLIGHT`] dirty chunks from `cursor` on, copied at once
    /// (QEMU keeps `buf-size / chunk` operations in flight). Returns the
    /// chunks and what became of each.
    #[allow(clippy::type_complexity)]
    fn copy_batch(
        &self,
        src: &NodeIo,
        tgt: &NodeIo,
        cursor: u64,
        chunk: u64,
        bufs: &mut [Vec<u8>],
    ) -> Vec<((u64, u64), Result<(), (i32, bool)>)> {
        let want = (self.s.buf_size / chunk).clamp(1, bufs.len() as u64) as usize;
        let mut chunks: Vec<(u64, u64)> = Vec::new();
        let mut from = cursor;
        while chunks.len() < want {
            let next = self.dirty.next_dirty(from, chunk).or_else(|| {
                // Wrap around once, never onto a chunk taken already.
                (from >= cursor && cursor > 0)
                    .then(|| self.dirty.next_dirty(0, chunk))
                    .flatten()
                    .filter(|&(o, _)| o < cursor)
            });
            let Some((off, n)) = next else { break };
            let (off, n) = self.cow_align(off, n);
            if chunks.iter().any(|&(o, l)| off < o + l && o < off + n) {
                break;
            }
            chunks.push((off, n));
            from = off + n;
        }
        if chunks.len() <= 1 {
            return chunks
                .into_iter()
                .map(|(o, n)| ((o, n), self.copy(src, tgt, o, n, &mut bufs[0])))
                .collect();
        }
        std::thread::scope(|sc| {
            let hs: Vec<_> = chunks
                .iter()
                .zip(bufs.iter_mut())
                .map(|(&(o, n), b)| sc.spawn(move || ((o, n), self.copy(src, tgt, o, n, b))))
                .collect();
            hs.into_iter()
                .zip(&chunks)
                .map(|(h, &c)| h.join().unwrap_or((c, Err((libc::EIO, false)))))
                .collect()
        })
    }

    /// `mirror_dirty_init`: what the first pass copies.
    fn dirty_init(&self, tgt: &NodeIo) -> Result<(), i32> {
        let size = self.dirty.size();
        if self.s.zero_target {
            tgt.write_zeroes(0, size, true)?;
        }
        let bottom = match self.s.sync {
            SyncMode::None => return Ok(()),
            SyncMode::Top => Some(self.s.source.clone()),
            SyncMode::Full => None,
        };
        let bottom = match (&bottom, &self.s.drop_between) {
            // Active commit: everything above the base (the target).
            (_, true) => self
                .s
                .source
                .backing_chain()
                .into_iter()
                .take_while(|n| !Arc::ptr_eq(n, &self.s.target))
                .last()
                .or(Some(self.s.source.clone())),
            _ => bottom,
        };
        let mut off = 0;
        while off < size {
            let want = (size - off).min(1 << 30);
            let (alloc, n) = allocated_above(&self.s.source, bottom.as_ref(), off, want)?;
            let n = n.max(1).min(size - off);
            if alloc {
                self.dirty.set(off, n);
            }
            off += n;
        }
        Ok(())
    }

    /// The devices' routes go back to the source itself; a named filter
    /// leaves the graph, its parents going to what it filters now (the
    /// target after a pivot).
    fn remove_filter(&mut self, g: &mut BlockGraph) {
        if self.filter.take().is_none() {
            return;
        }
        if let Some(f) = &self.s.named_filter {
            g.drop_filter(f);
            return;
        }
        for b in g.backends() {
            if b.root().is_some_and(|r| Arc::ptr_eq(&r, &self.s.source)) {
                b.inner.set_route(Route::of(Some(self.s.source.clone())));
            }
        }
    }
}

impl JobDriver for Mirror {
    fn job_type(&self) -> JobType {
        self.s.kind
    }

    fn completable(&self) -> bool {
        true
    }

    fn soft_cancel_when_ready(&self) -> bool {
        true
    }

    /// `mirror_start_job`: the job's hold on the target, and the filter
    /// in every route to the source (the owner has drained the devices).
    fn install(&mut self, g: &mut BlockGraph) -> Result<(), String> {
        // mirror_start_job: write to the target, others may only write
        // unchanged data (an active commit's base is shared with readers).
        let shared = if self.s.drop_between {
            perm::WRITE_UNCHANGED | perm::CONSISTENT_READ | perm::WRITE
        } else {
            perm::WRITE_UNCHANGED
        };
        self.s
            .target
            .set_parent_perm(self.target_perm, Some((perm::WRITE, shared)))
            .map_err(|e| e.msg)?;
        let filter = Arc::new(MirrorTop {
            source: NodeIo::new(&self.s.source),
            target: self.s.write_blocking.then(|| NodeIo::new(&self.s.target)),
            dirty: self.dirty.clone(),
            copying: Mutex::new(Vec::new()),
        });
        // A source with parent nodes (a device on a filter above it) gets
        // QEMU's implicit filter node: the parents' edges lead through it,
        // so their writes are tracked too.
        let has_node_parents = g
            .parents_of(&self.s.source)
            .iter()
            .any(|p| matches!(p, crate::replace::Parent::Node(..)));
        if self.s.named_filter.is_none() && has_node_parents {
            let kind = if self.s.drop_between {
                TopKind::ActiveCommit
            } else {
                TopKind::Mirror
            };
            self.s.named_filter = Some(g.new_implicit_top_filter(kind, &self.s.source));
        }
        if let Some(f) = &self.s.named_filter {
            if let Some(t) = f.driver.as_top_filter() {
                t.set_io(filter.clone());
            }
            g.insert_filter(f, &self.s.source).map_err(|e| e.msg)?;
            self.filter = Some(filter);
            return Ok(());
        }
        for b in g.backends() {
            if b.root().is_some_and(|r| Arc::ptr_eq(&r, &self.s.source)) {
                b.inner.set_route(Route {
                    root: Some(self.s.source.clone()),
                    data: None,
                    format: Some(filter.clone()),
                });
            }
        }
        self.filter = Some(filter);
        Ok(())
    }

    fn run(&mut self, ctl: &mut JobCtl) -> Result<(), String> {
        let src = NodeIo::new(&self.s.source);
        let tgt = NodeIo::new(&self.s.target);
        let len = self.dirty.size();
        let tlen = self.s.target.size().map_err(|e| e.msg)?;
        if self.s.drop_between {
            if tlen < len {
                self.s.target.driver.truncate(len).map_err(|e| e.msg)?;
            }
        } else if tlen != len {
            return Err("Source and target image have different sizes".into());
        }
        self.cow_setup();
        self.dirty_init(&tgt).map_err(strerror)?;
        let chunk = self
            .s
            .buf_size
            .clamp(self.s.granularity, MAX_IO.max(self.s.granularity));
        let mut bufs: Vec<Vec<u8>> = (0..IN_FLIGHT).map(|_| Vec::new()).collect();
        let mut cursor = 0;
        let mut ready = false;
        let mut delay = Duration::ZERO;
        loop {
            ctl.sleep(delay);
            delay = Duration::ZERO;
            if ctl.is_cancelled() {
                return Ok(());
            }
            if ctl.take_complete() {
                self.pivot = true;
            }
            ctl.set_remaining(self.dirty.count());
            let done = self.copy_batch(&src, &tgt, cursor, chunk, &mut bufs);
            if !done.is_empty() {
                let mut copied = 0;
                for ((off, n), r) in done {
                    cursor = off + n;
                    match r {
                        Ok(()) => copied += n,
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
                }
                ctl.progress(copied);
                delay = ctl.rate_delay(copied);
                continue;
            }
            if !ready {
                tgt.flush().map_err(strerror)?;
                ctl.ready();
                ready = true;
            }
            if self.pivot || ctl.cancel_requested() {
                return Ok(());
            }
            // READY and in step: look for new dirty data every slice.
            ctl.wait_for_request(Duration::from_millis(100));
        }
    }

    /// `mirror_exit_common` (success): the last dirty chunks while the
    /// devices are drained, then the pivot if `job-complete` asked for it.
    fn prepare(&mut self, g: &mut BlockGraph) -> Result<(), String> {
        let src = NodeIo::new(&self.s.source);
        let tgt = NodeIo::new(&self.s.target);
        let mut buf = Vec::new();
        while let Some((off, n)) = self.dirty.next_dirty(0, MAX_IO) {
            self.dirty.reset(off, n);
            buf.resize(n as usize, 0);
            src.read(off, &mut buf).map_err(strerror)?;
            tgt.write(off, &buf).map_err(strerror)?;
        }
        tgt.flush().map_err(strerror)?;
        // A named filter stays for the pivot: its edge is one of the
        // source's parents, moved onto the target with the others.
        if self.s.named_filter.is_none() || !self.pivot {
            self.remove_filter(g);
        }
        if !self.pivot {
            return Ok(());
        }
        let source = self.s.source.clone();
        let target = self.s.target.clone();
        if self.s.backing_mode == BackingMode::SourceChain && target.child("backing").is_none() {
            // mirror_exit_common: the source for sync=none, else `s->base`
            // (the source's backing for sync=top, nothing for full).
            let backing = match self.s.sync {
                SyncMode::None => Some(source.clone()),
                SyncMode::Top => source.child("backing"),
                SyncMode::Full => None,
            };
            if let Some(b) = backing {
                target.set_backing(b).map_err(|e| e.msg)?;
            }
        }
        if self.s.backing_mode == BackingMode::OpenChain && target.child("backing").is_none() {
            // mirror_exit_common reports a failure to open it and pivots anyway.
            if let Err(e) = g.open_header_backing(&target) {
                log::error!("{}", e.msg);
            }
        }
        let to_replace = match &self.s.replaces {
            Some(r) => g
                .node(r)
                .cloned()
                .ok_or_else(|| format!("Node name '{r}' not found"))?,
            None => source.clone(),
        };
        // mirror_exit_common: checked again (the graph may have changed
        // since the start); a failure is printed and the job fails EPERM.
        let r = if g.recurse_can_replace(&source, &to_replace) {
            g.replace_node(&to_replace, &target).map_err(|e| e.msg)
        } else {
            Err(format!(
                "Can no longer replace '{}' by '{}', because it can no longer be guaranteed that doing so would not lead to an abrupt change of visible data",
                to_replace.name, target.name
            ))
        };
        if let Err(e) = r {
            eprintln!("ferrovm: {e}");
            return Err(strerror(libc::EPERM));
        }
        self.remove_filter(g);
        // The old source (and, for an active commit, the layers down to the
        // base) go unless something else still holds them.
        g.drop_if_unused(&source);
        Ok(())
    }

    fn abort(&mut self, g: &mut BlockGraph) {
        self.remove_filter(g);
    }

    fn clean(&mut self, g: &mut BlockGraph) {
        self.remove_filter(g);
        let _ = self.s.target.set_parent_perm(self.target_perm, None);
        g.unblock(&self.s.id);
        if self.s.owns_target {
            if self.pivot {
                // The job held drive-mirror's target; with no device on
                // the source (a bare -blockdev), nothing holds it after
                // the pivot and it closes (bdrv_unref of the job's reference).
                g.drop_if_unused(&self.s.target);
            } else {
                g.remove_subtree(&self.s.target);
            }
        }
    }
}
