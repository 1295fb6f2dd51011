//! One virtqueue of the device and its `BlockQueue`: pops chains, submits
//! their operations, and completes them when the block layer answers
//! (through the queue's completion eventfd, in any order).
//!
//! The error policy (QEMU `virtio_blk_handle_rw_error`): every failure is
//! reported upward, then `BlockBackend::error_action` decides: Report
//! answers IOERR, Ignore answers OK, Stop parks the request uncompleted
//! until [`QueueWorker::resume`] submits it again (QEMU's `s->rq`).

use std::collections::{HashMap, VecDeque};
use std::num::Wrapping;
use std::sync::atomic::Ordering;

use block::{BlockBackend, BlockQueue, ErrorAction, IoCompletion, IoKind, IoRequest};
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::error::{BlockIoError, BlockIoErrorFn};
use super::request::{self, Action, BlockOp, ChainError, Limits, STATUS_IOERR, STATUS_OK};

/// Why a queue stopped: the ring or a chain is unusable. The device then
/// needs a reset (virtio 1.2 §2.1.2, DEVICE_NEEDS_RESET).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueBroken {
    #[error("virtio-blk queue {queue}: {source}")]
    Chain { queue: u16, source: ChainError },
    #[error("virtio-blk queue {queue}: avail index {avail} is more than {size} ahead of {next}")]
    AvailIndex {
        queue: u16,
        avail: u16,
        next: u16,
        size: u16,
    },
    #[error("virtio-blk queue {queue}: ring access failed: {reason}")]
    Ring { queue: u16, reason: String },
}

/// QEMU's limits for one merged operation: IOV_MAX buffers, and a size
/// that keeps a merged request an ordinary one for the host.
const MERGE_MAX_BUFS: usize = 1024;
const MERGE_MAX_BYTES: u64 = 4 << 20;

/// Reads, and writes the guest lets sit in a write cache, may be merged;
/// writethrough writes (each followed by its flush) and writes to a
/// read-only device (refused one by one) are not.
fn mergeable(ctx: &Ctx, p: &Pending) -> bool {
    match p.op.kind {
        IoKind::Read => true,
        IoKind::Write => ctx.wce && !ctx.read_only,
        _ => false,
    }
}

/// What a worker needs from its device for one call.
pub(crate) struct Ctx<'a> {
    pub mem: &'a GuestMemoryMmap,
    pub backend: &'a BlockBackend,
    pub on_error: &'a BlockIoErrorFn,
    pub limits: Limits<'a>,
    /// The guest sees a write cache; without one, writes are followed by a
    /// flush before they complete (QEMU's writethrough: BDRV_REQ_FUA).
    pub wce: bool,
    pub read_only: bool,
}

/// Where a request's answer goes.
#[derive(Debug, Clone, Copy)]
struct Reply {
    head: u16,
    status: GuestAddress,
    used_len: u32,
}

/// A request the device owns until it completes.
#[derive(Debug)]
struct Pending {
    reply: Reply,
    op: BlockOp,
    /// Writethrough: flush after the write succeeds, then complete.
    flush_after: bool,
    /// The write is done and the trailing flush is in flight.
    flushing: bool,
}

pub(crate) struct QueueWorker {
    pub index: u16,
    queue: Queue,
    bq: BlockQueue,
    /// Submitted operations; one holds several requests when they were merged.
    in_flight: HashMap<u64, Vec<Pending>>,
    /// Reads and writes popped in this pass, merged and submitted at its end.
    batch: Vec<Pending>,
    parked: VecDeque<Pending>,
    next_id: u64,
    /// The driver notified while the device was paused.
    pub kicked: bool,
    /// Used entries added since the last notification check.
    used_added: bool,
    scratch: Vec<IoCompletion>,
}

impl QueueWorker {
    pub fn new(index: u16, queue: Queue, bq: BlockQueue) -> Self {
        Self {
            index,
            queue,
            bq,
            in_flight: HashMap::new(),
            batch: Vec::new(),
            parked: VecDeque::new(),
            next_id: 0,
            kicked: false,
            used_added: false,
            scratch: Vec::new(),
        }
    }

    pub fn completion_fd(&self) -> std::os::fd::RawFd {
        self.bq.completion_fd()
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.values().map(Vec::len).sum::<usize>() + self.batch.len()
    }

    pub fn parked(&self) -> usize {
        self.parked.len()
    }

    fn ring_err(&self, e: virtio_queue::Error) -> QueueBroken {
        QueueBroken::Ring {
            queue: self.index,
            reason: e.to_string(),
        }
    }

    /// Pops and starts every available chain (QEMU `virtio_blk_handle_vq`),
    /// with notifications suppressed while it runs.
    pub fn process_avail(&mut self, ctx: &Ctx) -> Result<(), QueueBroken> {
        self.bq.plug();
        let r = self.drain_avail(ctx).and_then(|()| self.submit_batch(ctx));
        self.bq.unplug();
        r
    }

    fn drain_avail(&mut self, ctx: &Ctx) -> Result<(), QueueBroken> {
        loop {
            self.queue
                .disable_notification(ctx.mem)
                .map_err(|e| self.ring_err(e))?;
            loop {
                let avail = self
                    .queue
                    .avail_idx(ctx.mem, Ordering::Acquire)
                    .map_err(|e| self.ring_err(e))?;
                let next = self.queue.next_avail();
                if (avail - Wrapping(next)).0 > self.queue.size() {
                    return Err(QueueBroken::AvailIndex {
                        queue: self.index,
                        avail: avail.0,
                        next,
                        size: self.queue.size(),
                    });
                }
                let Some(chain) = self.queue.iter(ctx.mem).ok().and_then(|mut i| i.next()) else {
                    break;
                };
                let req = request::parse(chain, ctx.mem, &ctx.limits).map_err(|source| {
                    QueueBroken::Chain {
                        queue: self.index,
                        source,
                    }
                })?;
                let reply = Reply {
                    head: req.head,
                    status: req.status,
                    used_len: req.used_len,
                };
                match req.action {
                    Action::Complete(s) => self.finish(ctx, reply, s)?,
                    Action::Submit(op) => {
                        let p = Pending {
                            reply,
                            op,
                            flush_after: false,
                            flushing: false,
                        };
                        if mergeable(ctx, &p) {
                            self.batch.push(p);
                        } else {
                            // Nothing overtakes what was popped before it
                            // (QEMU submits its multireq before a flush).
                            self.submit_batch(ctx)?;
                            self.submit(ctx, p)?;
                        }
                    }
                }
            }
            if !self
                .queue
                .enable_notification(ctx.mem)
                .map_err(|e| self.ring_err(e))?
            {
                return Ok(());
            }
        }
    }

    /// Starts `p`'s operation (or its trailing flush).
    fn submit(&mut self, ctx: &Ctx, mut p: Pending) -> Result<(), QueueBroken> {
        if !p.flushing {
            // The block layer refuses writes to a read-only node with EPERM
            // (block/io.c `bdrv_co_write_req_prepare`), and that failure goes
            // through the error policy like any other.
            if ctx.read_only && p.op.modifies() {
                return self.failed(ctx, p, libc::EPERM);
            }
            p.flush_after =
                !ctx.wce && matches!(p.op.kind, IoKind::Write | IoKind::WriteZeroes { .. });
        }
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let req = if p.flushing {
            IoRequest {
                kind: IoKind::Flush,
                offset: 0,
                len: 0,
                bufs: Vec::new(),
                user_data: id,
            }
        } else {
            IoRequest {
                kind: p.op.kind,
                offset: p.op.offset,
                len: p.op.len,
                bufs: p.op.bufs.clone(),
                user_data: id,
            }
        };
        self.in_flight.insert(id, vec![p]);
        self.bq.submit(req);
        Ok(())
    }

    /// Submits the batch, adjacent requests of one kind merged into one
    /// operation (QEMU `virtio_blk_submit_multireq`: sorted by sector, merged
    /// while contiguous, up to IOV_MAX buffers and a size limit).
    fn submit_batch(&mut self, ctx: &Ctx) -> Result<(), QueueBroken> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let mut batch = std::mem::take(&mut self.batch);
        batch.sort_by_key(|p| (p.op.is_read, p.op.offset));
        let mut group: Vec<Pending> = Vec::new();
        // The group's buffer count and size, kept as it grows.
        let (mut bufs, mut bytes) = (0usize, 0u64);
        for p in batch {
            let joins = group.last().is_some_and(|last| {
                last.op.kind == p.op.kind
                    && last.op.offset.checked_add(last.op.len) == Some(p.op.offset)
                    && bufs + p.op.bufs.len() <= MERGE_MAX_BUFS
                    && bytes + p.op.len <= MERGE_MAX_BYTES
            });
            if !joins && !group.is_empty() {
                self.submit_group(ctx, std::mem::take(&mut group));
                (bufs, bytes) = (0, 0);
            }
            bufs += p.op.bufs.len();
            bytes += p.op.len;
            group.push(p);
        }
        if !group.is_empty() {
            self.submit_group(ctx, group);
        }
        Ok(())
    }

    /// One operation for `group` (one request, or several merged).
    fn submit_group(&mut self, ctx: &Ctx, group: Vec<Pending>) {
        let first = &group[0].op;
        let req = IoRequest {
            kind: first.kind,
            offset: first.offset,
            len: group.iter().map(|p| p.op.len).sum(),
            bufs: group
                .iter()
                .flat_map(|p| p.op.bufs.iter().copied())
                .collect(),
            user_data: self.next_id,
        };
        let requests = group.len() as u64;
        if requests > 1 {
            ctx.backend.account_merged(first.kind, requests - 1);
        }
        self.next_id = self.next_id.wrapping_add(1);
        self.in_flight.insert(req.user_data, group);
        self.bq.submit_merged(req, requests);
    }

    /// Takes the block layer's completions and answers the guest.
    pub fn handle_completions(&mut self, ctx: &Ctx) -> Result<(), QueueBroken> {
        let mut done = std::mem::take(&mut self.scratch);
        self.bq.take_completions(&mut done);
        let mut result = Ok(());
        for c in done.drain(..) {
            let Some(group) = self.in_flight.remove(&c.user_data) else {
                continue;
            };
            // A merged operation answers each of its requests alike.
            for p in group {
                if result.is_err() {
                    continue;
                }
                result = match c.result {
                    Ok(_) if p.flush_after && !p.flushing => {
                        let p = Pending {
                            flushing: true,
                            ..p
                        };
                        self.submit(ctx, p)
                    }
                    Ok(_) => self.finish(ctx, p.reply, STATUS_OK),
                    Err(errno) => self.failed(ctx, p, errno),
                };
            }
        }
        self.scratch = done;
        result
    }

    /// Applies the error policy to a failed request.
    fn failed(&mut self, ctx: &Ctx, mut p: Pending, errno: i32) -> Result<(), QueueBroken> {
        let action = ctx.backend.error_action(p.op.is_read, errno);
        (ctx.on_error)(BlockIoError::new(p.op.is_read, action, errno));
        match action {
            ErrorAction::Report => self.finish(ctx, p.reply, STATUS_IOERR),
            ErrorAction::Ignore => self.finish(ctx, p.reply, STATUS_OK),
            ErrorAction::Stop => {
                // Retried from the start (the write too) on resume.
                p.flushing = false;
                self.parked.push_back(p);
                Ok(())
            }
        }
    }

    /// Writes the status byte and returns the chain to the driver.
    fn finish(&mut self, ctx: &Ctx, r: Reply, status: u8) -> Result<(), QueueBroken> {
        // The address was checked to be in RAM when the chain was parsed.
        let _ = ctx.mem.write_obj(status, r.status);
        self.queue
            .add_used(ctx.mem, r.head, r.used_len)
            .map_err(|e| self.ring_err(e))?;
        self.used_added = true;
        Ok(())
    }

    /// Whether the driver wants an interrupt for what was added to the used
    /// ring since the last call (EVENT_IDX, virtio 1.2 §2.7.10).
    pub fn needs_notification(&mut self, mem: &GuestMemoryMmap) -> Result<bool, QueueBroken> {
        if !std::mem::take(&mut self.used_added) {
            return Ok(false);
        }
        self.queue
            .needs_notification(mem)
            .map_err(|e| self.ring_err(e))
    }

    /// Waits for every in-flight request and completes it (QEMU's drain).
    /// Writethrough flushes started on the way are waited for too.
    pub fn drain(&mut self, ctx: &Ctx) -> Result<(), QueueBroken> {
        while !self.in_flight.is_empty() {
            let before = self.in_flight.len();
            self.bq.drain();
            self.handle_completions(ctx)?;
            // An engine that returned from drain without completing
            // anything would make this spin; give up instead.
            if self.in_flight.len() >= before {
                log::error!(
                    "virtio-blk queue {}: {} requests still in flight after drain",
                    self.index,
                    self.in_flight.len()
                );
                break;
            }
        }
        Ok(())
    }

    /// Resubmits what the Stop policy parked, in the order it failed.
    pub fn resume(&mut self, ctx: &Ctx) -> Result<(), QueueBroken> {
        while let Some(p) = self.parked.pop_front() {
            self.submit(ctx, p)?;
        }
        Ok(())
    }

    /// Waits for the block layer and forgets every request without touching
    /// guest memory (reset, or a broken device).
    pub fn abandon(&mut self) {
        self.bq.drain();
        self.discard_completions();
        self.in_flight.clear();
        self.batch.clear();
        self.parked.clear();
    }

    /// Consumes the completion eventfd without answering the guest.
    pub fn discard_completions(&mut self) {
        self.scratch.clear();
        self.bq.take_completions(&mut self.scratch);
        for c in self.scratch.drain(..) {
            self.in_flight.remove(&c.user_data);
        }
    }
}
