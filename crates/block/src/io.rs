//! The narrow interface between device models and the block layer.
//!
//! A device opens one [`BlockQueue`] per virtqueue, submits [`IoRequest`]s
//! that point into guest RAM, and collects [`IoCompletion`]s when the queue's
//! completion eventfd becomes readable (on the VMM's backend event thread).
//! Submission never blocks on I/O; errors come back as completions.

use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use vmm_sys_util::eventfd::EventFd;

/// A range of host memory (mapped guest RAM) a request reads into or writes from.
#[derive(Debug, Clone, Copy)]
pub struct IoBuf {
    pub ptr: *mut u8,
    pub len: usize,
}

// SAFETY: an IoBuf points into guest RAM, which stays mapped for the whole
// life of the VMM process; the device that built it guarantees the range was
// inside a guest memory region.
unsafe impl Send for IoBuf {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoKind {
    /// Read `bufs` from `offset`.
    Read,
    /// Write `bufs` at `offset`.
    Write,
    /// Make completed writes durable (fdatasync unless `cache=unsafe`).
    Flush,
    /// Deallocate `len` bytes at `offset` (a no-op with `discard=ignore`).
    Discard,
    /// Write `len` zero bytes at `offset`; may deallocate when `may_unmap`.
    WriteZeroes { may_unmap: bool },
}

#[derive(Debug)]
pub struct IoRequest {
    pub kind: IoKind,
    pub offset: u64,
    /// Bytes for Discard and WriteZeroes; Read and Write use `bufs`.
    pub len: u64,
    pub bufs: Vec<IoBuf>,
    /// Returned unchanged in the completion.
    pub user_data: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoCompletion {
    pub user_data: u64,
    /// Bytes transferred, or a positive errno.
    pub result: Result<u64, i32>,
}

/// What to do with a failed request (`-drive werror=/rerror=`; QEMU's
/// BlockdevOnError and `blk_get_error_action()`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorAction {
    /// Complete the request with an error status.
    Report,
    /// Complete the request as if it had succeeded.
    Ignore,
    /// Stop the VM (`io-error` run state); the request is retried on `cont`.
    Stop,
}

/// One device's attachment to a block node.
#[derive(Clone)]
pub struct BlockBackend {
    inner: Arc<Backend>,
}

struct Backend {
    file: File,
    read_only: bool,
    rerror: ErrorAction,
    werror: ErrorAction,
}

impl BlockBackend {
    /// PROVISIONAL: an already-open image. The block graph (`-drive`,
    /// `-blockdev`) replaces this constructor.
    pub fn from_file(file: File, read_only: bool) -> Self {
        Self::from_file_with_error_actions(
            file,
            read_only,
            ErrorAction::Report,
            ErrorAction::Report,
        )
    }

    /// PROVISIONAL: like [`BlockBackend::from_file`], with fixed actions for
    /// failed reads (`rerror=`) and writes (`werror=`), whatever the errno.
    pub fn from_file_with_error_actions(
        file: File,
        read_only: bool,
        rerror: ErrorAction,
        werror: ErrorAction,
    ) -> Self {
        Self {
            inner: Arc::new(Backend {
                file,
                read_only,
                rerror,
                werror,
            }),
        }
    }

    /// The image's size in bytes.
    pub fn size(&self) -> u64 {
        self.inner.file.metadata().map(|m| m.len()).unwrap_or(0)
    }

    pub fn read_only(&self) -> bool {
        self.inner.read_only
    }

    /// Whether the guest sees a volatile write cache (`write-cache`/`cache=`).
    pub fn write_cache(&self) -> bool {
        true
    }

    /// Whether discard requests reach the image (`discard=unmap`).
    pub fn discard_enabled(&self) -> bool {
        false
    }

    /// The policy for a failed request (`is_read`: rerror, else werror).
    pub fn error_action(&self, is_read: bool, _errno: i32) -> ErrorAction {
        if is_read {
            self.inner.rerror
        } else {
            self.inner.werror
        }
    }

    /// A new submission queue with its own completion eventfd.
    pub fn open_queue(&self) -> std::io::Result<BlockQueue> {
        Ok(BlockQueue {
            backend: self.inner.clone(),
            done: EventFd::new(libc::EFD_NONBLOCK)?,
            completions: Vec::new(),
        })
    }
}

/// A submission queue. PROVISIONAL: runs each request synchronously at submit
/// time; the I/O engine replaces the internals, not the interface.
pub struct BlockQueue {
    backend: Arc<Backend>,
    done: EventFd,
    completions: Vec<IoCompletion>,
}

impl BlockQueue {
    /// Starts `req`; its completion arrives through [`BlockQueue::completion_fd`].
    pub fn submit(&mut self, req: IoRequest) {
        let result = self.run(&req);
        self.completions.push(IoCompletion {
            user_data: req.user_data,
            result,
        });
        let _ = self.done.write(1);
    }

    fn run(&self, req: &IoRequest) -> Result<u64, i32> {
        let f = &self.backend.file;
        let errno = |e: std::io::Error| e.raw_os_error().unwrap_or(libc::EIO);
        let mut off = req.offset;
        match req.kind {
            IoKind::Read => {
                for b in &req.bufs {
                    // SAFETY: see IoBuf.
                    let s = unsafe { std::slice::from_raw_parts_mut(b.ptr, b.len) };
                    f.read_exact_at(s, off).map_err(errno)?;
                    off += b.len as u64;
                }
                Ok(off - req.offset)
            }
            IoKind::Write => {
                if self.backend.read_only {
                    return Err(libc::EROFS);
                }
                for b in &req.bufs {
                    // SAFETY: see IoBuf.
                    let s = unsafe { std::slice::from_raw_parts(b.ptr, b.len) };
                    f.write_all_at(s, off).map_err(errno)?;
                    off += b.len as u64;
                }
                Ok(off - req.offset)
            }
            IoKind::Flush => f.sync_data().map(|_| 0).map_err(errno),
            IoKind::Discard => Ok(0),
            IoKind::WriteZeroes { .. } => {
                if self.backend.read_only {
                    return Err(libc::EROFS);
                }
                let zeros = vec![0u8; 64 << 10];
                let end = req.offset.saturating_add(req.len);
                while off < end {
                    let n = (end - off).min(zeros.len() as u64) as usize;
                    f.write_all_at(&zeros[..n], off).map_err(errno)?;
                    off += n as u64;
                }
                Ok(req.len)
            }
        }
    }

    /// Readable when completions are waiting.
    pub fn completion_fd(&self) -> RawFd {
        self.done.as_raw_fd()
    }

    /// Moves every finished request's completion into `out`.
    pub fn take_completions(&mut self, out: &mut Vec<IoCompletion>) {
        let _ = self.done.read();
        out.append(&mut self.completions);
    }

    /// Requests submitted and not yet completed.
    pub fn in_flight(&self) -> usize {
        0
    }

    /// Waits until every submitted request has completed (QEMU's drain).
    pub fn drain(&mut self) {}
}
