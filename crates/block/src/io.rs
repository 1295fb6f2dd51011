//! The narrow interface between device models and the block layer.
//!
//! A device opens one [`BlockQueue`] per virtqueue, submits [`IoRequest`]s
//! that point into guest RAM, and collects [`IoCompletion`]s when the queue's
//! completion eventfd becomes readable (on the VMM's backend event thread).
//! Submission never blocks on I/O; errors come back as completions, possibly
//! out of submission order. Requests run on the I/O engine of the image's
//! protocol node (`aio=`, see [`crate::engine`]).

use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use serde_json::{json, Value};

use crate::engine::pool::pool;
use crate::engine::uring::{Op, Uring};
use crate::engine::{sync_ops, Meta, Shared};
use crate::error::BlockError;
use crate::file::{Aio, FileIo};
use crate::node::{new_parent_id, DataPath, FormatIo, Node};
use crate::policy::{IoStatus, OnError};
use crate::stats::{AcctType, Stats};
use crate::throttle::{Throttle, ThrottleConfig};

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

impl IoKind {
    /// The accounting class (virtio-blk counts write-zeroes as writes and
    /// discards as unmaps, hw/block/virtio-blk.c).
    pub fn acct(self) -> AcctType {
        match self {
            IoKind::Read => AcctType::Read,
            IoKind::Write | IoKind::WriteZeroes { .. } => AcctType::Write,
            IoKind::Flush => AcctType::Flush,
            IoKind::Discard => AcctType::Unmap,
        }
    }
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

impl ErrorAction {
    /// QAPI `BlockErrorAction` name (BLOCK_IO_ERROR's `action`).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorAction::Report => "report",
            ErrorAction::Ignore => "ignore",
            ErrorAction::Stop => "stop",
        }
    }
}

type ResizeFn = Arc<dyn Fn(u64) + Send + Sync>;

/// Device-side state of a backend.
pub(crate) struct DevState {
    /// The attached device's QOM path (`qdev` in query-block).
    pub qdev: Option<String>,
    pub iostatus_enabled: bool,
    pub iostatus: IoStatus,
    /// The device has removable media with a tray ([`crate::AttachOptions`]).
    pub removable: bool,
}

/// One device's attachment to a block node.
#[derive(Clone)]
pub struct BlockBackend {
    pub(crate) inner: Arc<Backend>,
}

/// A backend's root node and how its requests reach the image.
#[derive(Clone, Default)]
pub(crate) struct Route {
    /// None for an empty drive, and for [`BlockBackend::from_file`].
    pub root: Option<Arc<Node>>,
    /// The host file, when the formats down to it map linearly (raw).
    pub data: Option<DataPath>,
    /// A root that maps non-linearly (qcow2): requests go through it.
    pub format: Option<Arc<dyn FormatIo>>,
}

impl Route {
    pub(crate) fn of(root: Option<Arc<Node>>) -> Self {
        let data = root.as_ref().and_then(|r| r.resolve_file());
        let format = match data {
            Some(_) => None,
            None => root.as_ref().and_then(|r| r.driver.format_io()),
        };
        Route { root, data, format }
    }
}

pub(crate) struct Backend {
    /// The drive id (`device` in query-block); "" for anonymous backends.
    pub name: String,
    /// Where requests go; replaced (in a drained section) when a snapshot
    /// puts a new overlay on top.
    /// Shared, so a request takes it with one reference count.
    route: RwLock<Arc<Route>>,
    /// `block_set_io_throttle`'s limits, if any.
    throttle: Mutex<Option<Arc<Throttle>>>,
    pub read_only: bool,
    pub write_cache: AtomicBool,
    pub werror: OnError,
    pub rerror: OnError,
    pub stats: Stats,
    pub dev: Mutex<DevState>,
    pub parent_id: u64,
    resize_cbs: Mutex<Vec<ResizeFn>>,
}

impl Backend {
    pub(crate) fn new(
        name: String,
        root: Option<Arc<Node>>,
        read_only: bool,
        write_cache: bool,
        werror: OnError,
        rerror: OnError,
    ) -> Self {
        Backend {
            name,
            route: RwLock::new(Arc::new(Route::of(root))),
            throttle: Mutex::new(None),
            read_only,
            write_cache: AtomicBool::new(write_cache),
            werror,
            rerror,
            stats: Stats::new(true),
            dev: Mutex::new(DevState {
                qdev: None,
                iostatus_enabled: false,
                iostatus: IoStatus::Ok,
                removable: false,
            }),
            parent_id: new_parent_id(),
            resize_cbs: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn dev(&self) -> std::sync::MutexGuard<'_, DevState> {
        self.dev.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn notify_resize(&self, size: u64) {
        let cbs: Vec<ResizeFn> = self
            .resize_cbs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for cb in cbs {
            cb(size);
        }
    }

    pub(crate) fn route(&self) -> Arc<Route> {
        self.route.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn set_route(&self, r: Route) {
        *self.route.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(r);
    }

    pub(crate) fn throttle(&self) -> Option<Arc<Throttle>> {
        self.throttle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn root(&self) -> Option<Arc<Node>> {
        self.route().root.clone()
    }

    fn size(&self) -> u64 {
        Self::route_size(&self.route())
    }

    fn route_size(r: &Route) -> u64 {
        match (&r.root, &r.data) {
            (Some(r), _) => r.size().unwrap_or(0),
            (None, Some(d)) => d.io.file.metadata().map(|m| m.len()).unwrap_or(0),
            (None, None) => 0,
        }
    }

    /// Accounting and `wr_highest_offset` for a finished request.
    fn complete(&self, meta: &Meta, result: Result<u64, i32>) {
        if meta.accounted {
            self.stats.done(
                meta.acct,
                meta.bytes,
                meta.start,
                result.is_err(),
                meta.requests,
            );
        }
        if let (Ok(_), Some(end)) = (result, meta.write_end) {
            let r = self.route();
            match (&r.data, &r.root) {
                (Some(d), _) => {
                    for (n, off) in &d.path {
                        n.wr_highest_offset.fetch_max(end + off, Ordering::Relaxed);
                    }
                }
                (None, Some(r)) => {
                    r.wr_highest_offset.fetch_max(end, Ordering::Relaxed);
                }
                (None, None) => {}
            }
        }
    }
}

impl BlockBackend {
    /// An already-open image without a node graph or locks (tests and
    /// tools; the VMM uses [`crate::BlockGraph`]).
    pub fn from_file(file: File, read_only: bool) -> Self {
        Self::from_file_with_error_actions(
            file,
            read_only,
            ErrorAction::Report,
            ErrorAction::Report,
        )
    }

    /// Like [`BlockBackend::from_file`], with the actions for failed reads
    /// (`rerror=`) and writes (`werror=`), for device tests.
    pub fn from_file_with_error_actions(
        file: File,
        read_only: bool,
        rerror: ErrorAction,
        werror: ErrorAction,
    ) -> Self {
        let on_error = |a| match a {
            ErrorAction::Report => OnError::Report,
            ErrorAction::Ignore => OnError::Ignore,
            ErrorAction::Stop => OnError::Stop,
        };
        let io = Arc::new(FileIo {
            file,
            filename: String::new(),
            direct: false,
            req_align: 1,
            mem_align: 1,
            no_flush: false,
            aio: crate::engine::DEFAULT_AIO,
            rmw: Mutex::new(()),
            discard_nb_ok: Default::default(),
            discard_nb_failed: Default::default(),
            discard_bytes_ok: Default::default(),
            dirty: Default::default(),
        });
        let b = Backend::new(
            String::new(),
            None,
            read_only,
            true,
            on_error(werror),
            on_error(rerror),
        );
        b.set_route(Route {
            root: None,
            data: Some(DataPath {
                io,
                base: 0,
                path: Vec::new(),
            }),
            format: None,
        });
        BlockBackend { inner: Arc::new(b) }
    }

    /// The image's size in bytes.
    pub fn size(&self) -> u64 {
        self.inner.size()
    }

    pub fn read_only(&self) -> bool {
        self.inner.read_only
    }

    /// The attached device's QOM path (`qdev` in query-block).
    pub fn qdev_path(&self) -> Option<String> {
        self.inner.dev().qdev.clone()
    }

    /// The drive id ("" for a backend created for `-device drive=NODE`).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The root node (None for an empty drive).
    pub fn root(&self) -> Option<Arc<Node>> {
        self.inner.root()
    }

    /// Whether the guest sees a volatile write cache (`write-cache`/`cache=`):
    /// off for `cache=writethrough` and `cache=directsync`.
    pub fn write_cache(&self) -> bool {
        self.inner.write_cache.load(Ordering::Relaxed)
    }

    /// The guest toggled the cache (virtio-blk's `writeback` config field;
    /// QEMU `blk_set_enable_write_cache`). Shown as `cache.writeback`.
    pub fn set_write_cache(&self, on: bool) {
        self.inner.write_cache.store(on, Ordering::Relaxed);
    }

    /// Whether discard requests reach the image (`discard=unmap`).
    pub fn discard_enabled(&self) -> bool {
        self.inner.root().is_some_and(|r| r.flags().discard)
    }

    /// The policy for a failed request (`is_read`: rerror, else werror);
    /// QEMU `blk_get_error_action`: `enospc` stops on ENOSPC and reports
    /// anything else.
    pub fn error_action(&self, is_read: bool, errno: i32) -> ErrorAction {
        let p = if is_read {
            self.inner.rerror
        } else {
            self.inner.werror
        };
        p.action(errno)
    }

    /// QEMU `blk_error_action`: the device applies `action` to a failed
    /// request. A stop marks the I/O status failed/nospace (shown by
    /// query-block). Returns the data of the `BLOCK_IO_ERROR` event the VMM
    /// emits.
    pub fn error_event(&self, action: ErrorAction, is_read: bool, errno: i32) -> Value {
        if action == ErrorAction::Stop {
            let mut d = self.inner.dev();
            if d.iostatus_enabled && d.iostatus == IoStatus::Ok {
                d.iostatus = if errno == libc::ENOSPC {
                    IoStatus::Nospace
                } else {
                    IoStatus::Failed
                };
            }
        }
        let mut m = serde_json::Map::new();
        m.insert("device".into(), json!(self.inner.name));
        if let Some(r) = self.inner.root() {
            m.insert("node-name".into(), json!(r.name));
        }
        m.insert(
            "operation".into(),
            json!(if is_read { "read" } else { "write" }),
        );
        m.insert("action".into(), json!(action.as_str()));
        m.insert("nospace".into(), json!(errno == libc::ENOSPC));
        m.insert("reason".into(), json!(crate::error::strerror(errno)));
        Value::Object(m)
    }

    /// `blk_iostatus_reset` (on `cont`).
    pub fn iostatus_reset(&self) {
        self.inner.dev().iostatus = IoStatus::Ok;
    }

    /// Counts a request the device rejected itself (out of range,
    /// misaligned): `invalid_*_operations`.
    pub fn account_invalid(&self, kind: IoKind) {
        self.inner.stats.invalid(kind.acct());
    }

    /// Counts `n` requests the device merged into others (`*_merged`).
    pub fn account_merged(&self, kind: IoKind, n: u64) {
        self.inner.stats.merged(kind.acct(), n);
    }

    /// Calls `cb(new_size)` after every `block_resize` of this backend's
    /// image (QEMU's `BlockDevOps.resize_cb`); virtio-blk raises a config
    /// change interrupt from it. Called on the thread running the resize.
    pub fn on_resize(&self, cb: impl Fn(u64) + Send + Sync + 'static) {
        self.inner
            .resize_cbs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::new(cb));
    }

    /// `block_set_io_throttle` (blockdev.c `qmp_block_set_io_throttle`):
    /// limits all zero take the backend out of throttling
    /// (`blk_io_limits_disable`: what waits goes); otherwise it joins
    /// `group` (or, if not throttled yet, `default_group`) and the limits
    /// become that group's, for every member.
    pub fn set_throttle(
        &self,
        cfg: ThrottleConfig,
        group: Option<&str>,
        default_group: &str,
    ) -> Result<(), BlockError> {
        cfg.validate()?;
        let mut t = self
            .inner
            .throttle
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if !cfg.enabled() {
            *t = None;
            return Ok(());
        }
        let join = match (&*t, group) {
            (None, g) => Some(g.unwrap_or(default_group)),
            // blk_io_limits_update_group: a new name leaves the old group.
            (Some(cur), Some(g)) if cur.group_name() != g => Some(g),
            (Some(_), _) => None,
        };
        if let Some(name) = join {
            // Leave first, so a group left empty goes before one is made.
            *t = None;
            let n = Throttle::join(name)
                .map_err(|e| BlockError::new(format!("cannot start throttling: {e}")))?;
            *t = Some(Arc::new(n));
        }
        if let Some(cur) = &*t {
            cur.set_config(cfg);
        }
        Ok(())
    }

    /// The group's limits and name, for query-block.
    pub fn throttle(&self) -> Option<(ThrottleConfig, String)> {
        self.inner
            .throttle()
            .map(|t| (t.config(), t.group_name().to_string()))
    }

    /// The stats as `BlockDeviceStats` JSON (for tests and tools).
    pub fn stats_json(&self) -> Value {
        let w = self
            .inner
            .root()
            .map_or(0, |r| r.wr_highest_offset.load(Ordering::Relaxed));
        self.inner.stats.to_json(w)
    }

    /// A new submission queue with its own completion eventfd.
    pub fn open_queue(&self) -> std::io::Result<BlockQueue> {
        let shared = Arc::new(Shared::new()?);
        let uring = match &self.inner.route().data {
            Some(d) if d.io.aio == Aio::IoUring => {
                Uring::new(d.io.clone(), shared.done.as_raw_fd()).ok()
            }
            _ => None,
        };
        Ok(BlockQueue {
            backend: self.inner.clone(),
            shared,
            uring,
            reaped: Vec::new(),
            accounted: true,
        })
    }

    /// Checks that BlockBackend `b` wraps the same backend.
    pub fn same(&self, b: &BlockBackend) -> bool {
        Arc::ptr_eq(&self.inner, &b.inner)
    }
}

/// A submission queue: requests go to the node's engine (io_uring ring of
/// this queue, or the shared I/O thread pool) and complete through the
/// queue's eventfd.
pub struct BlockQueue {
    backend: Arc<Backend>,
    shared: Arc<Shared>,
    uring: Option<Uring>,
    reaped: Vec<(Meta, Result<u64, i32>)>,
    accounted: bool,
}

impl BlockQueue {
    /// Requests submitted from now on stay out of the statistics (QEMU's
    /// `blk_pread` from a device's realize, e.g. the geometry guess, is not
    /// accounted; only requests the guest made are).
    pub fn set_accounted(&mut self, on: bool) {
        self.accounted = on;
    }

    /// Batches the requests submitted until [`BlockQueue::unplug`] into one
    /// system call (QEMU's `blk_io_plug`: a device drains its ring in between).
    pub fn plug(&mut self) {
        if let Some(u) = self.uring.as_mut() {
            u.plug();
        }
    }

    /// Starts everything submitted since [`BlockQueue::plug`].
    pub fn unplug(&mut self) {
        if let Some(u) = self.uring.as_mut() {
            u.unplug();
        }
    }

    /// Starts `req`; its completion arrives through [`BlockQueue::completion_fd`].
    pub fn submit(&mut self, req: IoRequest) {
        self.submit_merged(req, 1)
    }

    /// Like [`BlockQueue::submit`] for an operation that carries `requests`
    /// guest requests the device merged: the statistics count each of them
    /// (the device reports the merge itself with `account_merged`).
    pub fn submit_merged(&mut self, req: IoRequest, requests: u64) {
        let start = Instant::now();
        let bytes = match req.kind {
            IoKind::Read | IoKind::Write => req.bufs.iter().map(|b| b.len as u64).sum(),
            IoKind::Flush => 0,
            IoKind::Discard | IoKind::WriteZeroes { .. } => req.len,
        };
        let is_write = matches!(req.kind, IoKind::Write | IoKind::WriteZeroes { .. });
        let meta = Meta {
            user_data: req.user_data,
            acct: req.kind.acct(),
            bytes,
            start,
            write_end: is_write.then(|| req.offset.saturating_add(bytes)),
            accounted: self.accounted,
            requests: requests.max(1),
        };
        let b = &self.backend;
        let route = b.route();
        if route.data.is_none() && route.format.is_none() {
            return self.finish_now(meta, Err(libc::ENOMEDIUM));
        }
        let writes = !matches!(req.kind, IoKind::Read | IoKind::Flush);
        if writes && b.read_only {
            return self.finish_now(meta, Err(libc::EROFS));
        }
        // blk_check_byte_request: -EIO beyond the end.
        let size = Backend::route_size(&route);
        if req.kind != IoKind::Flush && req.offset.checked_add(bytes).is_none_or(|e| e > size) {
            return self.finish_now(meta, Err(libc::EIO));
        }
        // QEMU throttles reads and writes (write-zeroes is a write), not
        // flushes or discards.
        let throttle = match req.kind {
            IoKind::Read | IoKind::Write | IoKind::WriteZeroes { .. } => b.throttle(),
            _ => None,
        };
        let Some(data) = route.data.clone() else {
            let f = route.format.clone();
            if let Some(f) = f {
                self.submit_format(f, req, meta, throttle);
            }
            return;
        };
        let off = data.base + req.offset;
        let io = data.io.clone();
        match req.kind {
            IoKind::Discard if !self.discard_enabled() => return self.finish_now(meta, Ok(bytes)),
            IoKind::Flush if io.no_flush => return self.finish_now(meta, Ok(0)),
            _ => {}
        }
        // A queue's ring is bound to the file it was opened on; after a
        // snapshot moved the backend elsewhere, requests take the pool.
        // Throttled requests are started later, from another thread: the pool.
        if let Some(u) = self
            .uring
            .as_mut()
            .filter(|u| throttle.is_none() && Arc::ptr_eq(u.io(), &io))
        {
            let op = match req.kind {
                IoKind::Read => Some(Op::Read),
                IoKind::Write => Some(Op::Write),
                IoKind::Flush => Some(Op::Flush),
                _ => None,
            };
            if let Some(op) = op.filter(|_| sync_ops::aligned(&io, off, &req.bufs)) {
                let iov = req
                    .bufs
                    .iter()
                    .map(|x| libc::iovec {
                        iov_base: x.ptr.cast(),
                        iov_len: x.len,
                    })
                    .collect();
                u.submit(op, meta, iov, off);
                return;
            }
        }
        let discard = self.discard_enabled();
        let shared = self.shared.clone();
        let backend = self.backend.clone();
        shared.pool_in_flight.fetch_add(1, Ordering::AcqRel);
        let write = is_write;
        Self::run_job(
            throttle,
            write,
            bytes,
            Box::new(move || {
                let r = match req.kind {
                    IoKind::Read => sync_ops::read(&io, off, &req.bufs),
                    IoKind::Write => sync_ops::write(&io, off, &req.bufs),
                    IoKind::Flush => sync_ops::flush(&io),
                    IoKind::Discard => sync_ops::discard(&io, off, req.len),
                    IoKind::WriteZeroes { may_unmap } => {
                        sync_ops::write_zeroes(&io, off, req.len, may_unmap && discard)
                    }
                };
                backend.complete(&meta, r);
                shared.push(
                    IoCompletion {
                        user_data: meta.user_data,
                        result: r,
                    },
                    true,
                );
            }),
        );
    }

    fn discard_enabled(&self) -> bool {
        self.backend.root().is_some_and(|r| r.flags().discard)
    }

    /// Starts `job` on the pool, once `throttle` (if any) lets it.
    fn run_job(
        throttle: Option<Arc<Throttle>>,
        write: bool,
        bytes: u64,
        job: Box<dyn FnOnce() + Send>,
    ) {
        match throttle {
            Some(t) => t.submit(write, bytes, Box::new(move || pool().run(job))),
            None => pool().run(job),
        }
    }

    /// A request through a format driver (qcow2), on the I/O thread pool.
    fn submit_format(
        &mut self,
        f: Arc<dyn FormatIo>,
        req: IoRequest,
        meta: Meta,
        throttle: Option<Arc<Throttle>>,
    ) {
        let no_flush = self.backend.root().is_some_and(|r| r.flags().no_flush);
        match req.kind {
            IoKind::Discard if !self.discard_enabled() => {
                return self.finish_now(meta, Ok(meta.bytes))
            }
            IoKind::Flush if no_flush => return self.finish_now(meta, Ok(0)),
            _ => {}
        }
        let discard = self.discard_enabled();
        let shared = self.shared.clone();
        let backend = self.backend.clone();
        shared.pool_in_flight.fetch_add(1, Ordering::AcqRel);
        let write = !matches!(req.kind, IoKind::Read);
        Self::run_job(
            throttle,
            write,
            meta.bytes,
            Box::new(move || {
                let r = format_op(&*f, &req, discard).map(|()| meta.bytes);
                backend.complete(&meta, r);
                shared.push(
                    IoCompletion {
                        user_data: meta.user_data,
                        result: r,
                    },
                    true,
                );
            }),
        );
    }

    fn finish_now(&mut self, meta: Meta, r: Result<u64, i32>) {
        self.backend.complete(&meta, r);
        self.shared.push(
            IoCompletion {
                user_data: meta.user_data,
                result: r,
            },
            false,
        );
    }

    fn reap_uring(&mut self) {
        if let Some(u) = self.uring.as_mut() {
            u.reap(&mut self.reaped);
        }
        let mut done = std::mem::take(&mut self.reaped);
        if done.is_empty() {
            return;
        }
        let mut l = self.shared.list.lock().unwrap_or_else(|e| e.into_inner());
        for (meta, r) in done.drain(..) {
            self.backend.complete(&meta, r);
            l.push(IoCompletion {
                user_data: meta.user_data,
                result: r,
            });
        }
        self.reaped = done;
    }

    /// Readable when completions are waiting.
    pub fn completion_fd(&self) -> RawFd {
        self.shared.done.as_raw_fd()
    }

    /// Moves every finished request's completion into `out`.
    pub fn take_completions(&mut self, out: &mut Vec<IoCompletion>) {
        let _ = self.shared.done.read();
        self.reap_uring();
        out.append(&mut self.shared.list.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// Requests submitted and not yet completed.
    pub fn in_flight(&self) -> usize {
        self.shared.pool_in_flight.load(Ordering::Acquire)
            + self.uring.as_ref().map_or(0, Uring::in_flight)
    }

    /// Waits until every submitted request has completed (QEMU's drain).
    /// Their completions stay queued and the eventfd stays readable.
    pub fn drain(&mut self) {
        loop {
            self.reap_uring();
            if let Some(u) = self.uring.as_mut() {
                if u.in_flight() > 0 {
                    u.wait();
                    continue;
                }
            }
            let l = self.shared.list.lock().unwrap_or_else(|e| e.into_inner());
            if self.shared.pool_in_flight.load(Ordering::Acquire) == 0 {
                let pending = !l.is_empty();
                drop(l);
                if pending {
                    let _ = self.shared.done.write(1);
                }
                return;
            }
            let _l = self.shared.cv.wait(l).unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl Drop for BlockQueue {
    /// Requests still in flight point into guest RAM and into this queue's
    /// ring; finish them before the ring goes away.
    fn drop(&mut self) {
        self.drain();
    }
}

/// Runs `req` through a format driver: a read as the driver's scatter
/// read, a write of one buffer in place, of several through [`gathered_write`].
fn format_op(f: &dyn FormatIo, req: &IoRequest, discard: bool) -> Result<(), i32> {
    let off = req.offset;
    match req.kind {
        IoKind::Read => f.readv(off, &req.bufs),
        IoKind::Write if req.bufs.len() > 1 => gathered_write(f, req),
        IoKind::Write => req.bufs.first().map_or(Ok(()), |b| {
            // SAFETY: see IoBuf.
            f.write(off, unsafe { std::slice::from_raw_parts(b.ptr, b.len) })
        }),
        IoKind::Flush => f.flush(),
        IoKind::Discard => f.discard(off, req.len),
        IoKind::WriteZeroes { may_unmap } => f.write_zeroes(off, req.len, may_unmap && discard),
    }
}

/// Largest bounce buffer an I/O thread keeps between requests.
const KEEP_BOUNCE: usize = 4 << 20;

thread_local! {
    static BOUNCE: std::cell::RefCell<Option<crate::file::HugeBuf>> =
        const { std::cell::RefCell::new(None) };
}

/// Runs `op` on this thread's bounce buffer, at least `len` bytes. The
/// buffer is aligned to its huge pages, so O_DIRECT needs no second bounce
/// below.
fn with_bounce(len: usize, op: impl FnOnce(&mut [u8]) -> Result<(), i32>) -> Result<(), i32> {
    BOUNCE.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|b| b.capacity() < len) {
            *slot = Some(crate::file::HugeBuf::new(len).ok_or(libc::ENOMEM)?);
        }
        let Some(bounce) = slot.as_mut() else {
            return Err(libc::ENOMEM);
        };
        let r = op(&mut bounce.as_mut_slice()[..len]);
        if len > KEEP_BOUNCE {
            *slot = None;
        }
        r
    })
}

/// A scatter read through a driver that reads only plain buffers: one
/// contiguous read into a bounce buffer, then copied out. One call lets the
/// driver map the whole range in runs (QEMU hands drivers the whole qiov)
/// where a call per buffer would issue one small request after another.
pub(crate) fn bounced_read<F: FormatIo + ?Sized>(
    f: &F,
    off: u64,
    bufs: &[IoBuf],
) -> Result<(), i32> {
    match bufs {
        [] => return Ok(()),
        // SAFETY: see IoBuf.
        [b] => return f.read(off, unsafe { std::slice::from_raw_parts_mut(b.ptr, b.len) }),
        _ => {}
    }
    with_bounce(crate::iovec::total(bufs), |buf| {
        f.read(off, buf)?;
        let mut pos = 0;
        for b in bufs {
            // SAFETY: see IoBuf.
            unsafe { std::slice::from_raw_parts_mut(b.ptr, b.len) }
                .copy_from_slice(&buf[pos..pos + b.len]);
            pos += b.len;
        }
        Ok(())
    })
}

/// A write of several guest buffers (a scatter list, or requests
/// virtio-blk merged) as one contiguous range through the bounce buffer,
/// for the reason [`bounced_read`] gives.
fn gathered_write(f: &dyn FormatIo, req: &IoRequest) -> Result<(), i32> {
    with_bounce(crate::iovec::total(&req.bufs), |buf| {
        let mut pos = 0;
        for b in &req.bufs {
            // SAFETY: see IoBuf.
            buf[pos..pos + b.len]
                .copy_from_slice(unsafe { std::slice::from_raw_parts(b.ptr, b.len) });
            pos += b.len;
        }
        f.write(req.offset, buf)
    })
}

pub(crate) fn check_resize_size(size: i64) -> Result<u64, BlockError> {
    if size < 0 {
        return Err(BlockError::new("Parameter 'size' expects a >0 size"));
    }
    Ok(size as u64)
}
