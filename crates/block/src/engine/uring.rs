//! The io_uring engine: one ring per [`crate::BlockQueue`], whose CQ is
//! tied to the queue's completion eventfd (`IORING_REGISTER_EVENTFD`), so
//! completions are reaped on the device's event thread without a helper
//! thread. Reads, writes and flushes go here; short transfers are
//! resubmitted for the rest (QEMU block/io_uring.c `luring_resubmit_short_read`).

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use io_uring::{opcode, types, IoUring};

use super::sync_ops::advance;
use super::Meta;
use crate::file::FileIo;

/// Ring size; more requests wait in a backlog.
const ENTRIES: u32 = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Read,
    Write,
    Flush,
}

struct Slot {
    op: Op,
    meta: Meta,
    iov: Vec<libc::iovec>,
    offset: u64,
    done: u64,
    total: u64,
}

// SAFETY: iovecs point into guest RAM (see IoBuf).
unsafe impl Send for Slot {}

pub(crate) struct Uring {
    ring: IoUring,
    io: Arc<FileIo>,
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    backlog: VecDeque<usize>,
    queued: usize,
    /// While plugged, requests are queued on the SQ but not entered: one
    /// `io_uring_enter` covers a whole batch (QEMU's `blk_io_plug`).
    plugged: bool,
}

impl Uring {
    /// The file the ring's requests go to.
    pub fn io(&self) -> &Arc<FileIo> {
        &self.io
    }

    pub fn new(io: Arc<FileIo>, eventfd: RawFd) -> std::io::Result<Self> {
        let ring = IoUring::new(ENTRIES)?;
        ring.submitter().register_eventfd(eventfd)?;
        Ok(Uring {
            ring,
            io,
            slots: Vec::new(),
            free: Vec::new(),
            backlog: VecDeque::new(),
            queued: 0,
            plugged: false,
        })
    }

    /// Requests on the ring or in its backlog.
    pub fn in_flight(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    pub fn submit(&mut self, op: Op, meta: Meta, iov: Vec<libc::iovec>, offset: u64) {
        let total = iov.iter().map(|v| v.iov_len as u64).sum();
        let slot = Slot {
            op,
            meta,
            iov,
            offset,
            done: 0,
            total,
        };
        let idx = match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(slot);
                i
            }
            None => {
                self.slots.push(Some(slot));
                self.slots.len() - 1
            }
        };
        self.backlog.push_back(idx);
        self.flush_backlog();
    }

    fn flush_backlog(&mut self) {
        while self.queued < ENTRIES as usize {
            let Some(idx) = self.backlog.pop_front() else {
                break;
            };
            let Some(s) = self.slots[idx].as_ref() else {
                continue;
            };
            let fd = types::Fd(self.io.file.as_raw_fd());
            let e = match s.op {
                Op::Read => opcode::Readv::new(fd, s.iov.as_ptr(), s.iov.len() as u32)
                    .offset(s.offset + s.done)
                    .build(),
                Op::Write => opcode::Writev::new(fd, s.iov.as_ptr(), s.iov.len() as u32)
                    .offset(s.offset + s.done)
                    .build(),
                Op::Flush => opcode::Fsync::new(fd)
                    .flags(types::FsyncFlags::DATASYNC)
                    .build(),
            }
            .user_data(idx as u64);
            // SAFETY: the iovec array and the buffers it names live in the
            // slot (and guest RAM) until the CQE for `idx` is reaped.
            if unsafe { self.ring.submission().push(&e) }.is_err() {
                self.backlog.push_front(idx);
                break;
            }
            self.queued += 1;
        }
        if !self.plugged {
            let _ = self.ring.submit();
        }
    }

    /// Holds submissions until [`Uring::unplug`].
    pub fn plug(&mut self) {
        self.plugged = true;
    }

    /// Enters every request queued while plugged, in one system call.
    pub fn unplug(&mut self) {
        self.plugged = false;
        self.flush_backlog();
    }

    /// Reaps finished requests: `(meta, result)` for each one complete.
    pub fn reap(&mut self, out: &mut Vec<(Meta, Result<u64, i32>)>) {
        let cqes: Vec<(usize, i32)> = self
            .ring
            .completion()
            .map(|c| (c.user_data() as usize, c.result()))
            .collect();
        for (idx, res) in cqes {
            self.queued -= 1;
            let Some(mut s) = self.slots.get_mut(idx).and_then(Option::take) else {
                continue;
            };
            let finished = if res == -libc::EAGAIN || res == -libc::EINTR {
                None
            } else if res < 0 {
                Some(Err(-res))
            } else if s.op == Op::Flush {
                Some(Ok(0))
            } else {
                s.done += res as u64;
                if s.done >= s.total {
                    Some(Ok(s.total))
                } else if res == 0 && s.op == Op::Read {
                    // End of file: the rest reads as zeroes.
                    for v in &s.iov {
                        // SAFETY: see IoBuf.
                        unsafe { std::ptr::write_bytes(v.iov_base.cast::<u8>(), 0, v.iov_len) };
                    }
                    Some(Ok(s.total))
                } else if res == 0 {
                    Some(Err(libc::EIO))
                } else {
                    advance(&mut s.iov, res as usize);
                    None
                }
            };
            match finished {
                Some(r) => {
                    if s.op == Op::Write {
                        self.io.dirty.mark(s.offset, s.total);
                    }
                    out.push((s.meta, r));
                    self.free.push(idx);
                }
                None => {
                    self.slots[idx] = Some(s);
                    self.backlog.push_back(idx);
                }
            }
        }
        if !self.backlog.is_empty() {
            self.flush_backlog();
        }
    }

    /// Blocks until at least one request completes.
    pub fn wait(&mut self) {
        if self.queued > 0 {
            let _ = self.ring.submit_and_wait(1);
        }
    }
}
