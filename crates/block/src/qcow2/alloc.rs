//! Allocating writes (QEMU's `qcow2_alloc_host_offset`, `perform_cow`,
//! `handle_alloc_space` and `qcow2_alloc_cluster_link_l2`).
//!
//! An allocating write takes the metadata lock twice, not across its data
//! I/O: once to reserve a host cluster (its refcount is raised in the
//! cache) and mark the guest cluster as in flight, once to link the L2
//! entry after the data is on the file. Writes to other clusters allocate
//! meanwhile, as QEMU's coroutines do; a write or copy-on-read to the same
//! guest cluster waits for the allocation in flight (QEMU's
//! `handle_dependencies`), so two requests never allocate one cluster twice.
//! A crash between the two steps leaves a leaked cluster, never a reference
//! to unwritten data.
//!
//! When the parts of the cluster the guest does not write read as zeros
//! (no backing data, or a zero cluster), the host cluster is zeroed with
//! one `fallocate(FALLOC_FL_ZERO_RANGE)` and only the guest's bytes are
//! written, instead of a whole cluster of zeros (`handle_alloc_space`).

use std::sync::MutexGuard;

use super::error::{Qcow2Error, Result};
use super::meta::{ClusterKind, Meta, OFLAG_COPIED};
use super::Qcow2;
use crate::debug::DebugEvent;
use crate::iovec;

/// A host cluster reserved for one guest cluster.
#[derive(Clone, Copy)]
pub(super) struct Reserved {
    host: u64,
    /// The zero cluster's own host cluster is written in place: nothing
    /// was allocated, so nothing is given back on failure.
    reused: bool,
}

/// Marks a guest cluster as being allocated; dropping it without
/// [`InFlight::finish`] (an error or a panic on the way) clears the mark, so
/// waiters never hang.
struct InFlight<'a> {
    q: &'a Qcow2,
    gc: u64,
    armed: bool,
}

impl InFlight<'_> {
    fn finish(mut self, m: &mut Meta) {
        m.inflight.remove(&self.gc);
        self.armed = false;
        self.q.alloc_done.notify_all();
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.q.meta().inflight.remove(&self.gc);
            self.q.alloc_done.notify_all();
        }
    }
}

impl Qcow2 {
    /// The metadata lock, once no allocation of guest cluster `gc` is in
    /// flight.
    pub(super) fn meta_settled(&self, gc: u64) -> MutexGuard<'_, Meta> {
        let mut m = self.meta();
        while m.inflight.contains(&gc) {
            m = self.alloc_done.wait(m).unwrap_or_else(|e| e.into_inner());
        }
        m
    }

    /// Allocating write of one cluster: reserve under `m`, write the data
    /// unlocked, link under the lock again.
    pub(super) fn write_alloc(
        &self,
        mut m: MutexGuard<'_, Meta>,
        gc: u64,
        in_cl: u64,
        data: &[u8],
        kind: ClusterKind,
        entry: u64,
    ) -> Result<()> {
        let r = self.reserve(&mut m, gc, kind, entry)?;
        m.inflight.insert(gc);
        let flight = InFlight {
            q: self,
            gc,
            armed: true,
        };
        let (cs, size) = (m.cs, m.size);
        drop(m);
        let filled = self.fill(r, cs, size, gc, in_cl, data, kind);
        let mut m = self.meta();
        let linked = match filled {
            Ok(()) => self.link(&mut m, r, gc, kind),
            Err(e) => {
                self.unreserve(&mut m, r);
                Err(e)
            }
        };
        flight.finish(&mut m);
        linked
    }

    /// The same with the lock held throughout (write-zeroes, which runs
    /// with the gate held exclusively and so races with nothing).
    pub(super) fn write_alloc_locked(
        &self,
        m: &mut Meta,
        gc: u64,
        in_cl: u64,
        data: &[u8],
        kind: ClusterKind,
        entry: u64,
    ) -> Result<()> {
        let r = self.reserve(m, gc, kind, entry)?;
        if let Err(e) = self.fill(r, m.cs, m.size, gc, in_cl, data, kind) {
            self.unreserve(m, r);
            return Err(e);
        }
        self.link(m, r, gc, kind)
    }

    fn reserve(&self, m: &mut Meta, gc: u64, kind: ClusterKind, entry: u64) -> Result<Reserved> {
        // The L2 table first, as QEMU's handle_alloc gets it before it
        // allocates the data cluster: allocating a table writes every
        // cached refcount to disk, and the data cluster's among them would
        // be a leak after a crash, its L2 entry being only in the cache.
        m.prepare_l2(gc)?;
        let r = match kind {
            ClusterKind::ZeroAlloc(h) if entry & OFLAG_COPIED != 0 => Reserved {
                host: h,
                reused: true,
            },
            _ => Reserved {
                host: m.alloc(1)?,
                reused: false,
            },
        };
        if let Err(e) = m.check_overlap(r.host, m.cs) {
            self.unreserve(m, r);
            return Err(e);
        }
        Ok(r)
    }

    fn unreserve(&self, m: &mut Meta, r: Reserved) {
        if !r.reused {
            // Nothing references the new cluster yet.
            let _ = m.set_refcount(r.host / m.cs, 0);
        }
    }

    /// Writes the cluster's new contents: the guest's bytes, and around
    /// them the old contents (COW from the backing image, a shared or a
    /// compressed cluster) or zeros.
    #[allow(clippy::too_many_arguments)]
    fn fill(
        &self,
        r: Reserved,
        cs: u64,
        size: u64,
        gc: u64,
        in_cl: u64,
        data: &[u8],
        kind: ClusterKind,
    ) -> Result<()> {
        let werr = Self::io_err("Could not write image");
        if in_cl == 0 && data.len() as u64 == cs {
            self.file.debug_event(DebugEvent::WRITE_AIO);
            return self.file.write_at(data, r.host).map_err(werr);
        }
        let zero_cow = match kind {
            ClusterKind::ZeroPlain | ClusterKind::ZeroAlloc(_) => true,
            ClusterKind::Unallocated => self.backing().is_none(),
            _ => false,
        };
        if zero_cow && self.file.zero_range(r.host, cs).map_err(&werr)? {
            self.file.debug_event(DebugEvent::WRITE_AIO);
            return self.file.write_at(data, r.host + in_cl).map_err(werr);
        }
        let mut cl = vec![0u8; cs as usize];
        // qcow2-cluster.c do_perform_cow_read / qcow2_co_pwritev_task.
        if !matches!(kind, ClusterKind::ZeroPlain | ClusterKind::ZeroAlloc(_)) {
            self.file.debug_event(DebugEvent::COW_READ);
        }
        match kind {
            ClusterKind::Unallocated => {
                let end = (gc * cs + cs).min(size) - gc * cs;
                self.read_backing(&iovec::of(&mut cl[..end as usize]), gc * cs)?;
            }
            ClusterKind::Normal(h) => self
                .file
                .read_at(&mut cl, h)
                .map_err(Self::io_err("Could not read image"))?,
            ClusterKind::Compressed(h, len) => cl = self.read_compressed(cs, h, len)?,
            ClusterKind::ZeroPlain | ClusterKind::ZeroAlloc(_) => {}
        }
        if cl.len() as u64 != cs {
            return Err(Qcow2Error::Corrupt(
                "compressed cluster has a bad size".into(),
            ));
        }
        cl[in_cl as usize..in_cl as usize + data.len()].copy_from_slice(data);
        self.file.debug_event(DebugEvent::WRITE_AIO);
        self.file.write_at(&cl, r.host).map_err(werr)
    }

    /// Points the L2 entry at the written cluster and drops the reference
    /// to the cluster it replaces.
    fn link(&self, m: &mut Meta, r: Reserved, gc: u64, kind: ClusterKind) -> Result<()> {
        let cs = m.cs;
        m.set_l2(gc, r.host | OFLAG_COPIED, !r.reused)?;
        let old = match kind {
            ClusterKind::Normal(h) => vec![(h, cs)],
            ClusterKind::ZeroAlloc(h) if !r.reused => vec![(h, cs)],
            ClusterKind::Compressed(h, len) => vec![(h, len)],
            _ => vec![],
        };
        m.release(&old)
    }
}
