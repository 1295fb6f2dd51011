//! The I/O engines behind [`crate::BlockQueue`]: a thread pool
//! ([`pool`]) and io_uring ([`uring`]), chosen per node by `aio=`.
//!
//! Measured with `cargo run --release -p block --example bench` (cache=none,
//! 256 MiB preallocated file on this host's ext4 virtio disk, 2 shared
//! vCPUs, 3 s per point; noisy, other builds were running):
//!
//! | engine      | 4K rand QD1 | 4K rand QD32 | 1M seq QD4 |
//! |-------------|-------------|--------------|------------|
//! | threads     | 6290 IOPS   | 35172 IOPS   | 670 MiB/s  |
//! | io_uring    | 8136 IOPS   | 47930 IOPS   | 780 MiB/s  |
//! | fio io_uring| 8547 IOPS   | 30700 IOPS   | 507 MiB/s  |
//!
//! io_uring wins at every point, so it is the default ([`DEFAULT_AIO`]).

pub(crate) mod pool;
pub(crate) mod sync_ops;
pub(crate) mod uring;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Instant;

use vmm_sys_util::eventfd::EventFd;

use crate::file::Aio;
use crate::io::IoCompletion;
use crate::stats::AcctType;

/// The engine used when `aio=` is not given. QEMU defaults to threads;
/// ferrovm picks io_uring because it measured faster here (figures in the
/// comment of `examples/bench.rs`), and falls back to threads if the
/// kernel refuses io_uring. The choice is invisible to QMP.
pub const DEFAULT_AIO: Aio = Aio::IoUring;

/// What a queue's completion side shares with the I/O threads.
pub(crate) struct Shared {
    pub done: EventFd,
    pub list: Mutex<Vec<IoCompletion>>,
    pub cv: Condvar,
    /// Requests handed to the pool and not yet in `list`.
    pub pool_in_flight: AtomicUsize,
}

impl Shared {
    pub fn new() -> std::io::Result<Self> {
        Ok(Shared {
            done: EventFd::new(libc::EFD_NONBLOCK)?,
            list: Mutex::new(Vec::new()),
            cv: Condvar::new(),
            pool_in_flight: AtomicUsize::new(0),
        })
    }

    pub fn push(&self, c: IoCompletion, from_pool: bool) {
        let mut l = self.list.lock().unwrap_or_else(|e| e.into_inner());
        l.push(c);
        if from_pool {
            self.pool_in_flight.fetch_sub(1, Ordering::AcqRel);
        }
        drop(l);
        self.cv.notify_all();
        let _ = self.done.write(1);
    }
}

/// Accounting data carried from submission to completion.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Meta {
    pub user_data: u64,
    pub acct: AcctType,
    pub bytes: u64,
    pub start: Instant,
    /// Guest offset of the end of a write (for `wr_highest_offset`).
    pub write_end: Option<u64>,
    /// Counted in the backend's statistics (device I/O is; a device's own
    /// probing, such as the geometry guess, is not, as in QEMU).
    pub accounted: bool,
    /// Guest requests this operation carries (merged ones count each).
    pub requests: u64,
}
