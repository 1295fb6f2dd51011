//! [`VirtioBlock`]: the virtio-blk device model behind the `VirtioDevice`
//! contract (devices/src/virtio/device.rs).

use std::sync::Arc;

use block::IoBuf;
use block::{BlockBackend, IoKind, IoRequest};
use virtio_bindings::virtio_blk::{VIRTIO_BLK_F_CONFIG_WCE, VIRTIO_BLK_F_FLUSH};
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use virtio_queue::QueueT;
use vm_memory::GuestMemoryMmap;

use super::config::{self, ConfigState, Geometry};
use super::error::BlockIoErrorFn;
use super::options::{BlkOptions, BlkOptionsError, BlkParams};
use super::queue::{Ctx, QueueBroken, QueueWorker};
use super::request::Limits;
use super::{SECTOR_SIZE, VIRTIO_ID_BLOCK};
use crate::virtio::{ActivateError, ActiveQueue, EventSource, VirtioDevice, VirtioInterrupt};

/// The state between DRIVER_OK and reset.
struct Active {
    mem: GuestMemoryMmap,
    interrupt: Arc<dyn VirtioInterrupt>,
    workers: Vec<QueueWorker>,
}

/// A virtio-blk device (QEMU 7.2 `virtio-blk-pci`'s device part).
pub struct VirtioBlock {
    params: BlkParams,
    backend: BlockBackend,
    read_only: bool,
    geometry: Geometry,
    /// Image length in bytes, as of construction or the last [`VirtioBlock::resize`].
    length: u64,
    /// The guest-visible write cache (config `writeback`).
    wce: bool,
    on_error: BlockIoErrorFn,
    queue_sizes: Vec<u16>,
    active: Option<Active>,
    /// A queue hit a corrupt ring or chain: nothing is processed until reset.
    broken: bool,
    paused: bool,
}

/// Reads the first sector for the geometry guess; `None` if it cannot.
fn read_mbr(backend: &BlockBackend) -> Option<Box<[u8; 512]>> {
    let mut q = backend.open_queue().ok()?;
    q.set_accounted(false);
    let mut buf = Box::new([0u8; 512]);
    q.submit(IoRequest {
        kind: IoKind::Read,
        offset: 0,
        len: 512,
        bufs: vec![IoBuf {
            ptr: buf.as_mut_ptr(),
            len: buf.len(),
        }],
        user_data: 0,
    });
    q.drain();
    let mut done = Vec::new();
    q.take_completions(&mut done);
    match done.first() {
        Some(c) if c.result == Ok(512) => Some(buf),
        _ => None,
    }
}

impl VirtioBlock {
    /// Creates the device on `backend` (QEMU `virtio_blk_device_realize`).
    /// `on_error` receives every failed request (BLOCK_IO_ERROR).
    pub fn new(
        backend: BlockBackend,
        options: &BlkOptions,
        on_error: BlockIoErrorFn,
    ) -> Result<Self, BlkOptionsError> {
        let params = options.resolve(backend.write_cache())?;
        let length = backend.size();
        let mbr = read_mbr(&backend);
        let geometry = config::guess_geometry(length / SECTOR_SIZE, mbr.as_deref());
        Ok(Self {
            read_only: backend.read_only(),
            wce: params.write_cache,
            queue_sizes: vec![params.queue_size; usize::from(params.num_queues)],
            params,
            backend,
            geometry,
            length,
            on_error,
            active: None,
            broken: false,
            paused: false,
        })
    }

    /// The image changed size (QMP `block_resize`): the new capacity shows in
    /// the configuration space and an active driver gets a configuration
    /// change notification (QEMU `virtio_blk_resize`).
    pub fn resize(&mut self, new_size: u64) {
        self.length = new_size;
        if let Some(a) = &self.active {
            a.interrupt.notify_config();
        }
    }

    /// Capacity in 512-byte sectors.
    pub fn capacity(&self) -> u64 {
        self.length / SECTOR_SIZE
    }

    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// Whether the guest currently sees a volatile write cache.
    pub fn write_cache(&self) -> bool {
        self.wce
    }

    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// Bytes of configuration space the device exposes (57 by default).
    pub fn config_size(&self) -> usize {
        config::config_size(self.params.discard, self.params.write_zeroes)
    }

    /// Requests submitted to the block layer and not completed yet.
    pub fn in_flight(&self) -> usize {
        self.active
            .as_ref()
            .map_or(0, |a| a.workers.iter().map(QueueWorker::in_flight).sum())
    }

    /// Requests the Stop policy holds until [`VirtioDevice::resume`].
    pub fn parked(&self) -> usize {
        self.active
            .as_ref()
            .map_or(0, |a| a.workers.iter().map(QueueWorker::parked).sum())
    }

    fn config_bytes(&self) -> [u8; config::CONFIG_MAX_SIZE] {
        ConfigState {
            params: &self.params,
            geometry: self.geometry,
            length: self.length,
            wce: self.wce,
        }
        .bytes()
    }

    /// Runs `f` on the worker of queue `index` (all of them for `None`),
    /// then sends the interrupts the driver asked for. A broken queue marks
    /// the device broken (QEMU `virtio_error`).
    fn with_workers(
        &mut self,
        index: Option<u16>,
        mut f: impl FnMut(&mut QueueWorker, &Ctx) -> Result<(), QueueBroken>,
    ) {
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let ctx = Ctx {
            mem: &active.mem,
            backend: &self.backend,
            on_error: &self.on_error,
            limits: Limits {
                capacity: self.length / SECTOR_SIZE,
                logical_block_size: self.params.logical_block_size,
                max_discard_sectors: self.params.max_discard_sectors,
                max_write_zeroes_sectors: self.params.max_write_zeroes_sectors,
                serial: &self.params.serial,
            },
            wce: self.wce,
            read_only: self.read_only,
        };
        let mut broken = None;
        for w in active.workers.iter_mut() {
            if index.is_some_and(|i| i != w.index) {
                continue;
            }
            let r = f(w, &ctx).and_then(|()| w.needs_notification(ctx.mem));
            match r {
                Ok(true) => active.interrupt.notify_queue(w.index),
                Ok(false) => {}
                Err(e) => {
                    broken = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = broken {
            log::error!("{e}");
            self.broken = true;
            // The transport reports DEVICE_NEEDS_RESET (needs_reset()); a
            // virtio 1 driver learns of it through a config interrupt.
            active.interrupt.notify_config();
            for w in active.workers.iter_mut() {
                w.abandon();
            }
        }
    }
}

impl VirtioDevice for VirtioBlock {
    fn device_type(&self) -> u16 {
        VIRTIO_ID_BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn device_features(&self) -> u64 {
        config::device_features(&self.params, self.wce, self.read_only)
    }

    /// Accesses that reach past the exposed structure read all ones, as in
    /// QEMU's `virtio_config_modern_read*`.
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let size = self.config_size() as u64;
        match offset.checked_add(data.len() as u64) {
            Some(end) if end <= size => {
                let c = self.config_bytes();
                data.copy_from_slice(&c[offset as usize..end as usize]);
            }
            _ => data.fill(0xff),
        }
    }

    /// Only `writeback` is writable (QEMU `virtio_blk_set_config`).
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        let size = self.config_size() as u64;
        let Some(end) = offset.checked_add(data.len() as u64) else {
            return;
        };
        let wb = config::offset::WRITEBACK as u64;
        if end <= size && (offset..end).contains(&wb) {
            self.wce = data[(wb - offset) as usize] != 0;
        }
    }

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        features: u64,
        queues: Vec<ActiveQueue>,
        interrupt: Arc<dyn VirtioInterrupt>,
    ) -> Result<(), ActivateError> {
        // Not reset(): a `writeback` the driver wrote before DRIVER_OK stays.
        if let Some(mut a) = self.active.take() {
            a.workers.iter_mut().for_each(QueueWorker::abandon);
        }
        self.broken = false;
        let mut workers = Vec::with_capacity(queues.len());
        for ActiveQueue { index, mut queue } in queues {
            if usize::from(index) >= self.queue_sizes.len() {
                return Err(ActivateError::Failed(format!(
                    "virtio-blk has no queue {index}"
                )));
            }
            queue.set_event_idx(features & (1 << VIRTIO_RING_F_EVENT_IDX) != 0);
            let bq = self
                .backend
                .open_queue()
                .map_err(|e| ActivateError::Failed(format!("virtio-blk: {e}")))?;
            workers.push(QueueWorker::new(index, queue, bq));
        }
        // A driver without CONFIG_WCE gets the cache mode it negotiated
        // (QEMU `virtio_blk_set_status`).
        if features & (1 << VIRTIO_BLK_F_CONFIG_WCE) == 0 {
            self.wce = features & (1 << VIRTIO_BLK_F_FLUSH) != 0;
        }
        self.active = Some(Active {
            mem,
            interrupt,
            workers,
        });
        Ok(())
    }

    fn queue_notify(&mut self, queue: u16) {
        if self.broken {
            return;
        }
        if self.paused {
            if let Some(a) = self.active.as_mut() {
                a.workers
                    .iter_mut()
                    .filter(|w| w.index == queue)
                    .for_each(|w| w.kicked = true);
            }
            return;
        }
        self.with_workers(Some(queue), |w, ctx| w.process_avail(ctx));
    }

    fn event_sources(&self) -> Vec<EventSource> {
        self.active.as_ref().map_or_else(Vec::new, |a| {
            a.workers
                .iter()
                .map(|w| EventSource {
                    fd: w.completion_fd(),
                    tag: u32::from(w.index),
                })
                .collect()
        })
    }

    fn handle_event(&mut self, tag: u32) {
        let Ok(index) = u16::try_from(tag) else {
            return;
        };
        if self.broken {
            if let Some(a) = self.active.as_mut() {
                a.workers
                    .iter_mut()
                    .filter(|w| w.index == index)
                    .for_each(QueueWorker::discard_completions);
            }
            return;
        }
        self.with_workers(Some(index), |w, ctx| w.handle_completions(ctx));
    }

    /// Waits for the block layer and drops every request: nothing reaches
    /// guest memory afterwards (QEMU `virtio_blk_reset` drops `s->rq`).
    fn reset(&mut self) {
        if let Some(mut a) = self.active.take() {
            for w in a.workers.iter_mut() {
                w.abandon();
            }
        }
        self.wce = self.params.write_cache;
        self.broken = false;
    }

    fn pause(&mut self) {
        self.paused = true;
        if !self.broken {
            self.with_workers(None, |w, ctx| w.drain(ctx));
        }
    }

    fn resume(&mut self) {
        self.paused = false;
        if self.broken {
            return;
        }
        self.with_workers(None, |w, ctx| {
            w.resume(ctx)?;
            w.kicked = false;
            w.process_avail(ctx)
        });
    }

    fn needs_reset(&self) -> bool {
        self.broken
    }
}

/// Requests in flight point into guest RAM that this device keeps mapped:
/// wait for them before the mapping can go.
impl Drop for VirtioBlock {
    fn drop(&mut self) {
        self.reset();
    }
}
