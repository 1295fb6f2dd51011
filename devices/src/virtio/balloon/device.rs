//! [`VirtioBalloon`]: the virtio-balloon device model behind the
//! `VirtioDevice` contract (devices/src/virtio/device.rs), after QEMU 7.2's
//! hw/virtio/virtio-balloon.c.
//!
//! Everything is synchronous: a kick is served completely before
//! `queue_notify` returns, so pause has nothing in flight to wait for. The
//! one buffer the device keeps is the driver's stats buffer, returned when
//! the caller's stats timer calls [`VirtioBalloon::request_stats`].

use std::num::Wrapping;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::GuestMemoryMmap;

use super::config::{self, BalloonOptions, ConfigState, CONFIG_SIZE, F_PAGE_POISON, F_STATS_VQ};
use super::pages::{self, Plan, RamRange};
use super::stats::{self, StatsIntervalError, StatsReport, StatsTimer, STAT_COUNT, STAT_UNKNOWN};
use super::{
    DEFLATE_QUEUE, INFLATE_QUEUE, PFN_SHIFT, QUEUE_SIZE, REPORTING_QUEUE, REPORTING_QUEUE_SIZE,
    STATS_QUEUE, VIRTIO_ID_BALLOON,
};
use crate::virtio::chain::{self, Chain, ChainError};
use crate::virtio::{ActivateError, ActiveQueue, VirtioDevice, VirtioInterrupt};

/// Receives the new guest-visible size (`ram_size - actual << 12`) whenever
/// the driver changes `actual`: QEMU's BALLOON_CHANGE event. Called with the
/// device lock held: it must not call back into the device.
pub type ActualChangedFn = Arc<dyn Fn(u64) + Send + Sync>;

/// Wall-clock time in seconds since the Unix epoch, for the stats'
/// `last-update` (QEMU `g_get_real_time() / G_USEC_PER_SEC`).
pub type NowFn = Arc<dyn Fn() -> i64 + Send + Sync>;

/// Why a queue stopped: the device needs a reset (QEMU `virtio_error`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueBroken {
    #[error("virtio-balloon queue {queue}: {source}")]
    Chain { queue: u16, source: ChainError },
    #[error(
        "virtio-balloon queue {queue}: avail index {avail} is more than {size} ahead of {next}"
    )]
    AvailIndex {
        queue: u16,
        avail: u16,
        next: u16,
        size: u16,
    },
    #[error("virtio-balloon queue {queue}: {reason}")]
    Ring { queue: u16, reason: String },
}

/// One enabled queue.
struct Worker {
    index: u16,
    queue: Queue,
    /// The driver notified while the device was paused.
    kicked: bool,
    /// Used entries added since the last notification check.
    used_added: bool,
}

impl Worker {
    fn ring_err(&self, e: virtio_queue::Error) -> QueueBroken {
        QueueBroken::Ring {
            queue: self.index,
            reason: e.to_string(),
        }
    }

    /// Pops the next available chain, `None` when the ring is empty.
    fn pop(&mut self, mem: &GuestMemoryMmap) -> Result<Option<Chain>, QueueBroken> {
        let avail = self
            .queue
            .avail_idx(mem, Ordering::Acquire)
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
        let Some(c) = self.queue.iter(mem).ok().and_then(|mut i| i.next()) else {
            return Ok(None);
        };
        chain::collect(c, mem)
            .map(Some)
            .map_err(|source| QueueBroken::Chain {
                queue: self.index,
                source,
            })
    }

    /// Pops every available chain into `f`, with notifications suppressed
    /// meanwhile and re-enabled (EVENT_IDX: `avail_event` updated) at the end.
    fn drain(
        &mut self,
        mem: &GuestMemoryMmap,
        mut f: impl FnMut(&mut Self, Chain) -> Result<(), QueueBroken>,
    ) -> Result<(), QueueBroken> {
        loop {
            self.queue
                .disable_notification(mem)
                .map_err(|e| self.ring_err(e))?;
            while let Some(c) = self.pop(mem)? {
                f(self, c)?;
            }
            if !self
                .queue
                .enable_notification(mem)
                .map_err(|e| self.ring_err(e))?
            {
                return Ok(());
            }
        }
    }

    /// Returns a chain to the driver; balloon buffers are only read, so the
    /// used length is 0 (QEMU `virtqueue_push(vq, elem, 0)`).
    fn push(&mut self, mem: &GuestMemoryMmap, head: u16) -> Result<(), QueueBroken> {
        self.queue
            .add_used(mem, head, 0)
            .map_err(|e| self.ring_err(e))?;
        self.used_added = true;
        Ok(())
    }

    /// Whether the driver wants an interrupt for what was added since the
    /// last call (EVENT_IDX, virtio 1.2 §2.7.10).
    fn needs_notification(&mut self, mem: &GuestMemoryMmap) -> Result<bool, QueueBroken> {
        if !std::mem::take(&mut self.used_added) {
            return Ok(false);
        }
        self.queue
            .needs_notification(mem)
            .map_err(|e| self.ring_err(e))
    }
}

/// The state between DRIVER_OK and reset.
struct Active {
    mem: GuestMemoryMmap,
    ram: Vec<RamRange>,
    features: u64,
    interrupt: Arc<dyn VirtioInterrupt>,
    workers: Vec<Worker>,
    /// The stats buffer the device holds (QEMU `stats_vq_elem`).
    stats_head: Option<u16>,
}

/// A virtio-balloon device (QEMU 7.2 `virtio-balloon-pci`'s device part).
pub struct VirtioBalloon {
    options: BalloonOptions,
    ram_size: u64,
    on_actual_changed: ActualChangedFn,
    now: NowFn,
    queue_sizes: Vec<u16>,
    config: ConfigState,
    stats: [u64; STAT_COUNT],
    stats_last_update: i64,
    /// `guest-stats-polling-interval` in seconds, 0 when off.
    stats_interval: u32,
    active: Option<Active>,
    /// A queue hit a corrupt ring or chain: nothing is processed until reset.
    broken: bool,
    paused: bool,
    /// The stats timer fired while paused: served on resume.
    stats_requested: bool,
}

impl VirtioBalloon {
    /// Creates the device for a guest of `ram_size` bytes (QEMU
    /// `virtio_balloon_device_realize`; `ram_size` is its
    /// `get_current_ram_size`).
    pub fn new(
        options: BalloonOptions,
        ram_size: u64,
        on_actual_changed: ActualChangedFn,
        now: NowFn,
    ) -> Self {
        let mut queue_sizes = vec![QUEUE_SIZE; 3];
        if options.free_page_reporting {
            queue_sizes.push(REPORTING_QUEUE_SIZE);
        }
        Self {
            options,
            ram_size,
            on_actual_changed,
            now,
            queue_sizes,
            config: ConfigState::default(),
            stats: [STAT_UNKNOWN; STAT_COUNT],
            stats_last_update: 0,
            stats_interval: 0,
            active: None,
            broken: false,
            paused: false,
            stats_requested: false,
        }
    }

    /// QMP `balloon`: asks the driver to leave the guest `target` bytes
    /// (QEMU `virtio_balloon_to_target`). A target above the RAM size means
    /// all of it; 0 changes nothing. An active driver gets a configuration
    /// change interrupt.
    pub fn set_target(&mut self, target: u64) {
        let target = target.min(self.ram_size);
        if target == 0 {
            return;
        }
        // num_pages is 32 bits in the config space; QEMU truncates too.
        self.config.num_pages = ((self.ram_size - target) >> PFN_SHIFT) as u32;
        if let Some(a) = &self.active {
            a.interrupt.notify_config();
        }
    }

    /// QMP `query-balloon`'s `actual`: the guest-visible size (QEMU
    /// `virtio_balloon_stat`). Wraps like QEMU's `ram_addr_t` if the driver
    /// claims more pages than the guest has.
    pub fn actual_bytes(&self) -> u64 {
        self.ram_size
            .wrapping_sub(u64::from(self.config.actual) << PFN_SHIFT)
    }

    /// Pages the host asked for (config `num_pages`).
    pub fn num_pages(&self) -> u32 {
        self.config.num_pages
    }

    /// Pages the driver says the balloon holds (config `actual`).
    pub fn actual_pages(&self) -> u32 {
        self.config.actual
    }

    pub fn ram_size(&self) -> u64 {
        self.ram_size
    }

    pub fn options(&self) -> BalloonOptions {
        self.options
    }

    /// Bytes of configuration space the device exposes.
    pub fn config_size(&self) -> usize {
        CONFIG_SIZE
    }

    /// The stats values by tag (index into [`stats::STAT_NAMES`]),
    /// [`STAT_UNKNOWN`] for those the guest did not report.
    pub fn stats(&self) -> [u64; STAT_COUNT] {
        self.stats
    }

    /// When the guest last reported stats (seconds since the epoch), 0 if never.
    pub fn stats_last_update(&self) -> i64 {
        self.stats_last_update
    }

    /// The QOM property `guest-stats`, in QEMU's shape.
    pub fn guest_stats_json(&self) -> serde_json::Value {
        stats::guest_stats_json(&self.stats, self.stats_last_update)
    }

    /// `guest-stats-polling-interval` (seconds). 0: the caller's stats timer
    /// must not run; otherwise it calls [`VirtioBalloon::request_stats`]
    /// every that many seconds.
    pub fn stats_interval(&self) -> u32 {
        self.stats_interval
    }

    /// Sets `guest-stats-polling-interval` with QEMU's validation; the
    /// answer says what the caller's timer must do.
    pub fn set_stats_interval(&mut self, secs: i64) -> Result<StatsTimer, StatsIntervalError> {
        let t = stats::change_interval(self.stats_interval, secs)?;
        match t {
            StatsTimer::Unchanged => {}
            StatsTimer::Stop => self.stats_interval = 0,
            StatsTimer::Arm { period_secs, .. } => self.stats_interval = period_secs,
        }
        Ok(t)
    }

    /// The stats timer fired (QEMU `balloon_stats_poll_cb`): the held stats
    /// buffer goes back to the driver, which refills it with fresh values.
    /// Returns whether a buffer was returned: not before the driver gave
    /// one, nor without STATS_VQ negotiated. While paused the request waits
    /// for resume (QEMU's timer runs on the stopped virtual clock).
    pub fn request_stats(&mut self) -> bool {
        if self.broken {
            return false;
        }
        if self.paused {
            self.stats_requested = true;
            return false;
        }
        let Some(a) = self.active.as_mut() else {
            return false;
        };
        if a.features & (1 << F_STATS_VQ) == 0 {
            return false;
        }
        let Some(head) = a.stats_head.take() else {
            return false;
        };
        let Some(w) = a.workers.iter_mut().find(|w| w.index == STATS_QUEUE) else {
            return false;
        };
        let r = w
            .push(&a.mem, head)
            .and_then(|()| w.needs_notification(&a.mem));
        self.after(STATS_QUEUE, r);
        true
    }

    fn config_bytes(&self) -> [u8; CONFIG_SIZE] {
        self.config.bytes()
    }

    /// Serves a kick of queue `index`.
    fn process(&mut self, index: u16) {
        let Some(a) = self.active.as_mut() else {
            return;
        };
        let poison = self.config.poison_val;
        let Active {
            mem,
            ram,
            workers,
            stats_head,
            ..
        } = a;
        let Some(w) = workers.iter_mut().find(|w| w.index == index) else {
            return;
        };
        let r = match index {
            INFLATE_QUEUE | DEFLATE_QUEUE => {
                let inflate = index == INFLATE_QUEUE;
                w.drain(mem, |w, c| {
                    handle_pages(mem, ram, &c, inflate);
                    w.push(mem, c.head)
                })
            }
            STATS_QUEUE => match receive_stats(w, mem, stats_head) {
                Ok(Some(report)) => {
                    self.stats = report.values;
                    self.stats_last_update = (self.now)();
                    Ok(())
                }
                Ok(None) => Ok(()),
                Err(e) => Err(e),
            },
            REPORTING_QUEUE => w.drain(mem, |w, c| {
                // Discarding zeroes the pages: not when the guest expects
                // its poison pattern in free pages.
                if poison == 0 {
                    let plan = pages::plan_report(&c.writable, ram);
                    log_skipped(&plan);
                    plan.runs.iter().for_each(|r| pages::discard(mem, *r));
                }
                w.push(mem, c.head)
            }),
            _ => Ok(()),
        };
        let r = r.and_then(|()| w.needs_notification(mem));
        self.after(index, r);
    }

    /// Sends the queue interrupt the driver asked for, or marks the device
    /// broken (QEMU `virtio_error`).
    fn after(&mut self, index: u16, r: Result<bool, QueueBroken>) {
        let Some(a) = self.active.as_mut() else {
            return;
        };
        match r {
            Ok(true) => a.interrupt.notify_queue(index),
            Ok(false) => {}
            Err(e) => {
                log::error!("{e}");
                self.broken = true;
                // The transport reports DEVICE_NEEDS_RESET (needs_reset());
                // a virtio 1 driver learns of it through a config interrupt.
                a.interrupt.notify_config();
            }
        }
    }
}

fn log_skipped(plan: &Plan) {
    for e in &plan.skipped {
        log::debug!("{e}");
    }
}

/// One inflate or deflate chain (QEMU `virtio_balloon_handle_output`).
fn handle_pages(mem: &GuestMemoryMmap, ram: &[RamRange], c: &Chain, inflate: bool) {
    c.for_each_readable_chunk(mem, |bytes| {
        let pfns = pages::parse_pfns(bytes);
        let plan = pages::plan_inflate(&pfns.pfns, ram);
        log_skipped(&plan);
        for run in plan.runs {
            if inflate {
                pages::discard(mem, run);
            } else {
                pages::will_need(mem, run);
            }
        }
    });
}

/// One stats kick (QEMU `virtio_balloon_receive_stats`): pops one buffer,
/// returns the one held before (a driver that follows the spec never has
/// two out), keeps the new one and parses it.
fn receive_stats(
    w: &mut Worker,
    mem: &GuestMemoryMmap,
    held: &mut Option<u16>,
) -> Result<Option<StatsReport>, QueueBroken> {
    w.queue
        .disable_notification(mem)
        .map_err(|e| w.ring_err(e))?;
    let popped = w.pop(mem);
    w.queue
        .enable_notification(mem)
        .map_err(|e| w.ring_err(e))?;
    let Some(c) = popped? else {
        return Ok(None);
    };
    if let Some(old) = held.replace(c.head) {
        w.push(mem, old)?;
    }
    let mut report = StatsReport::default();
    c.for_each_readable_chunk(mem, |b| report.extend(b));
    Ok(Some(report))
}

impl VirtioDevice for VirtioBalloon {
    fn device_type(&self) -> u16 {
        VIRTIO_ID_BALLOON
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn device_features(&self) -> u64 {
        config::device_features(&self.options)
    }

    /// Accesses that reach past the structure read all ones, as in QEMU's
    /// `virtio_config_modern_read*`.
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        match offset.checked_add(data.len() as u64) {
            Some(end) if end <= CONFIG_SIZE as u64 => {
                let c = self.config_bytes();
                data.copy_from_slice(&c[offset as usize..end as usize]);
            }
            _ => data.fill(0xff),
        }
    }

    /// QEMU `virtio_balloon_set_config`: the driver writes `actual` (and
    /// `poison_val` with PAGE_POISON); `num_pages` is the host's. A change of
    /// `actual` is reported through `on_actual_changed`. Writes past the
    /// structure are ignored.
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        let Some(end) = offset.checked_add(data.len() as u64) else {
            return;
        };
        if end > CONFIG_SIZE as u64 {
            return;
        }
        let mut b = self.config_bytes();
        b[offset as usize..end as usize].copy_from_slice(data);
        let old = self.config.actual;
        self.config.actual = config::le32(&b, config::offset::ACTUAL);
        // The driver writes poison_val after FEATURES_OK and before
        // DRIVER_OK, when the device does not know the features yet: it is
        // kept, and cleared at activation if PAGE_POISON was not accepted.
        self.config.poison_val = match &self.active {
            Some(a) if a.features & (1 << F_PAGE_POISON) == 0 => 0,
            _ => config::le32(&b, config::offset::POISON_VAL),
        };
        if self.config.actual != old {
            (self.on_actual_changed)(self.actual_bytes());
        }
    }

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        features: u64,
        queues: Vec<ActiveQueue>,
        interrupt: Arc<dyn VirtioInterrupt>,
    ) -> Result<(), ActivateError> {
        self.active = None;
        self.broken = false;
        let mut workers = Vec::with_capacity(queues.len());
        for ActiveQueue { index, mut queue } in queues {
            if usize::from(index) >= self.queue_sizes.len() {
                return Err(ActivateError::Failed(format!(
                    "virtio-balloon has no queue {index}"
                )));
            }
            queue.set_event_idx(features & (1 << VIRTIO_RING_F_EVENT_IDX) != 0);
            workers.push(Worker {
                index,
                queue,
                kicked: false,
                used_added: false,
            });
        }
        if features & (1 << F_PAGE_POISON) == 0 {
            self.config.poison_val = 0;
        }
        self.active = Some(Active {
            ram: RamRange::of(&mem),
            mem,
            features,
            interrupt,
            workers,
            stats_head: None,
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
        self.process(queue);
    }

    /// QEMU `virtio_balloon_device_reset`: the held stats buffer is dropped
    /// (`virtqueue_unpop`) and `poison_val` cleared. `num_pages`, `actual`,
    /// the last stats and the polling interval stay.
    fn reset(&mut self) {
        self.active = None;
        self.config.poison_val = 0;
        self.broken = false;
        self.stats_requested = false;
    }

    /// Nothing is in flight: from now on kicks and stats requests wait.
    fn pause(&mut self) {
        self.paused = true;
    }

    fn resume(&mut self) {
        self.paused = false;
        if self.broken {
            return;
        }
        let kicked: Vec<u16> = self.active.as_mut().map_or_else(Vec::new, |a| {
            a.workers
                .iter_mut()
                .filter_map(|w| std::mem::take(&mut w.kicked).then_some(w.index))
                .collect()
        });
        for q in kicked {
            if !self.broken {
                self.process(q);
            }
        }
        if std::mem::take(&mut self.stats_requested) {
            self.request_stats();
        }
    }

    fn needs_reset(&self) -> bool {
        self.broken
    }
}
