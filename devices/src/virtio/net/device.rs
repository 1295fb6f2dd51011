//! [`VirtioNet`]: the virtio-net device model behind the `VirtioDevice`
//! contract (devices/src/virtio/device.rs), QEMU 7.2's hw/net/virtio-net.c
//! without vhost.

mod host_side;

use std::fmt::Display;
use std::sync::Arc;

use ::net::{NetQueue, Offloads};
use virtio_bindings::virtio_net::*;
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use virtio_queue::QueueT;
use vm_memory::GuestMemoryMmap;

use super::config::{self, bit, ConfigState, GUEST_OFFLOADS_MASK, S_ANNOUNCE, S_LINK_UP};
use super::ctrl::{self, CtrlCommand, CtrlError, MQ_VQ_PAIRS_MAX, MQ_VQ_PAIRS_MIN};
use super::filter::{RxFilter, RxFilterInfo};
use super::options::{MacAddr, NetOptions, NetOptionsError};
use super::pair::Pair;
use super::ring::Vq;
use super::rx::RxCtx;
use super::tx::TxCtx;
use super::{CTRL_QUEUE_SIZE, GUEST_HDR_LEN, VIRTIO_ID_NET};
use crate::virtio::chain::{self, ChainError};
use crate::virtio::{ActivateError, ActiveQueue, EventSource, VirtioDevice, VirtioInterrupt};

/// The most device-readable bytes a control command may have; longer ones
/// are answered VIRTIO_NET_ERR unread. (QEMU walks any length; 1 MiB holds
/// a MAC table of 170000 addresses.)
pub const CTRL_MAX_LEN: u64 = 1 << 20;

/// A TAP queue is at most this long on transmit (QEMU
/// `virtio_net_max_tx_queue_size` for backends other than vhost-user/vdpa).
const TAP_TX_QUEUE_MAX: u16 = 256;

/// Event source tags: queue pair `p`'s backend fd is `2p`, its reschedule
/// eventfd `2p + 1`.
const TAG_RESCHED: u32 = 1;

/// How the device reports that the guest-visible receive filter changed
/// (QEMU's NIC_RX_FILTER_CHANGED event). Called with the device lock held:
/// it must not call back into the device.
pub type RxFilterChangedFn = Arc<dyn Fn() + Send + Sync>;

/// The state between DRIVER_OK and reset.
struct Active {
    mem: GuestMemoryMmap,
    interrupt: Arc<dyn VirtioInterrupt>,
    features: u64,
    ctrl_index: u16,
    ctrl: Option<Vq>,
}

/// A virtio-net device (QEMU 7.2 `virtio-net-pci`'s device part).
pub struct VirtioNet {
    opts: NetOptions,
    offered: u64,
    /// The backend exchanges vnet headers (QEMU `peer_has_vnet_hdr`).
    has_vnet_hdr: bool,
    queue_sizes: Vec<u16>,
    pairs: Vec<Pair>,
    /// Queue pairs the guest may use: the backend's, with `mq`; else 1.
    exposed_pairs: usize,
    /// The current address (MAC_ADDR_SET changes it until reset).
    mac: MacAddr,
    status: u16,
    filter: RxFilter,
    curr_queue_pairs: usize,
    multiqueue: bool,
    mergeable: bool,
    curr_guest_offloads: u64,
    /// QEMU `nc->rxfilter_notify_enabled`.
    notify_enabled: bool,
    on_rx_filter_changed: RxFilterChangedFn,
    active: Option<Active>,
    broken: bool,
    paused: bool,
}

fn offloads_of(f: u64) -> Offloads {
    let has = |b: u32| f & bit(b) != 0;
    Offloads {
        csum: has(VIRTIO_NET_F_GUEST_CSUM),
        tso4: has(VIRTIO_NET_F_GUEST_TSO4),
        tso6: has(VIRTIO_NET_F_GUEST_TSO6),
        ecn: has(VIRTIO_NET_F_GUEST_ECN),
        ufo: has(VIRTIO_NET_F_GUEST_UFO),
    }
}

impl VirtioNet {
    /// Creates the device on `queues`, one backend queue per queue pair
    /// (QEMU `virtio_net_device_realize`). With `mq` off only the first is
    /// used. `on_rx_filter_changed` is QEMU's NIC_RX_FILTER_CHANGED.
    pub fn new(
        options: NetOptions,
        queues: Vec<Box<dyn NetQueue>>,
        on_rx_filter_changed: RxFilterChangedFn,
    ) -> Result<Self, NetOptionsError> {
        options.validate(queues.len())?;
        let mut queues = queues;
        let has_vnet_hdr = queues[0].vnet_hdr_len() > 0;
        // QEMU's tap_probe_has_ufo: try TUN_F_CSUM | TUN_F_UFO, then
        // clear the offloads again (net_tap_fd_init).
        let has_ufo = has_vnet_hdr && {
            let q = &mut queues[0];
            let ok = q
                .set_offloads(Offloads {
                    csum: true,
                    ufo: true,
                    ..Offloads::default()
                })
                .is_ok();
            let _ = q.set_offloads(Offloads::default());
            ok
        };
        let pairs = queues
            .into_iter()
            .enumerate()
            .map(|(i, q)| Pair::new(i, q))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| NetOptionsError::Backend(e.to_string()))?;
        let exposed_pairs = if options.mq { pairs.len() } else { 1 };
        let tx_size = options.tx_queue_size.min(TAP_TX_QUEUE_MAX);
        let mut queue_sizes = Vec::with_capacity(exposed_pairs * 2 + 1);
        for _ in 0..exposed_pairs {
            queue_sizes.push(options.rx_queue_size);
            queue_sizes.push(tx_size);
        }
        queue_sizes.push(CTRL_QUEUE_SIZE);
        let mut dev = Self {
            offered: config::device_features(&options, has_vnet_hdr, has_ufo),
            mac: options.mac,
            opts: options,
            has_vnet_hdr,
            queue_sizes,
            pairs,
            exposed_pairs,
            status: S_LINK_UP,
            filter: RxFilter::after_device_reset(),
            curr_queue_pairs: 1,
            multiqueue: false,
            mergeable: false,
            curr_guest_offloads: 0,
            notify_enabled: true,
            on_rx_filter_changed,
            active: None,
            broken: false,
            paused: false,
        };
        // Until a driver asks for more, only the first queue pair is used.
        dev.steer_to_used_pairs();
        Ok(dev)
    }

    /// The address the guest sees (and the filter's own address).
    pub fn mac(&self) -> MacAddr {
        self.mac
    }

    /// Bytes of configuration space the device exposes.
    pub fn config_size(&self) -> usize {
        config::config_size(&self.opts)
    }

    /// The backend's queue pairs (`max_virtqueue_pairs`).
    pub fn queue_pairs(&self) -> usize {
        self.pairs.len()
    }

    /// The queue pairs the driver uses now (VQ_PAIRS_SET; 1 after reset).
    pub fn curr_queue_pairs(&self) -> usize {
        self.curr_queue_pairs
    }

    pub fn link_up(&self) -> bool {
        self.status & S_LINK_UP != 0
    }

    /// The receive offloads in force (GUEST_* feature bits).
    pub fn guest_offloads(&self) -> u64 {
        self.curr_guest_offloads
    }

    /// QMP `set_link` (QEMU `virtio_net_set_link_status`): the STATUS
    /// field's LINK_UP changes and an active driver gets a configuration
    /// interrupt. While the link is down, transmitted frames are completed
    /// unsent and received ones read and dropped (net/net.c).
    pub fn set_link(&mut self, up: bool) {
        let old = self.status;
        if up {
            self.status |= S_LINK_UP;
        } else {
            self.status &= !S_LINK_UP;
        }
        if self.status == old {
            return;
        }
        let Some(a) = &self.active else {
            return;
        };
        a.interrupt.notify_config();
        // QEMU `virtio_net_set_status`: flush what waited, or drop it.
        for p in 0..self.pairs.len() {
            self.run_tx(p);
            self.run_rx(p);
        }
    }

    /// QEMU `virtio_net_announce` (QMP `announce-self`): asks a driver that
    /// negotiated GUEST_ANNOUNCE (and CTRL_VQ) to announce itself.
    pub fn announce(&mut self) {
        let Some(a) = &self.active else {
            return;
        };
        let want = bit(VIRTIO_NET_F_GUEST_ANNOUNCE) | bit(VIRTIO_NET_F_CTRL_VQ);
        if a.features & want == want {
            self.status |= S_ANNOUNCE;
            a.interrupt.notify_config();
        }
    }

    /// QMP `query-rx-filter` (QEMU `virtio_net_query_rxfilter`); it also
    /// re-arms the filter-changed notification.
    pub fn rx_filter(&mut self) -> RxFilterInfo {
        self.notify_enabled = true;
        let ctrl_vlan = self
            .active
            .as_ref()
            .is_some_and(|a| a.features & bit(VIRTIO_NET_F_CTRL_VLAN) != 0);
        self.filter.info(self.mac, ctrl_vlan)
    }

    fn config_bytes(&self) -> [u8; config::CONFIG_MAX_SIZE] {
        ConfigState {
            mac: self.mac,
            status: self.status,
            max_queue_pairs: self.pairs.len() as u16,
            mtu: self.opts.mtu().unwrap_or(0),
        }
        .bytes()
    }

    /// QEMU `virtio_error`: the device stops until reset and tells a
    /// virtio 1 driver through a configuration interrupt.
    fn fail(&mut self, queue: u16, e: impl Display) {
        log::error!("virtio-net queue {queue}: {e}");
        if self.broken {
            return;
        }
        self.broken = true;
        if let Some(a) = &self.active {
            a.interrupt.notify_config();
        }
    }

    /// Whether queues may be served now.
    fn running(&self) -> bool {
        self.active.is_some() && !self.broken && !self.paused
    }

    /// Sends queue `vq`'s interrupt if the driver wants it.
    fn signal(a: &Active, vq: Option<&mut Vq>) -> Result<(), (u16, ChainError)> {
        if let Some(vq) = vq {
            if vq.needs_notification(&a.mem).map_err(|e| (vq.index, e))? {
                a.interrupt.notify_queue(vq.index);
            }
        }
        Ok(())
    }

    /// The receive path of pair `p` (`virtio_net_can_receive` first).
    fn run_rx(&mut self, p: usize) {
        if !self.running() || p >= self.curr_queue_pairs {
            return;
        }
        let Some(a) = self.active.as_ref() else {
            return;
        };
        let Some(pair) = self.pairs.get_mut(p) else {
            return;
        };
        if pair.rx.is_none() {
            return;
        }
        let ctx = RxCtx {
            mem: &a.mem,
            filter: &self.filter,
            mac: self.mac,
            link_up: self.status & S_LINK_UP != 0,
            mergeable: self.mergeable,
        };
        let qi = pair.rx.as_ref().map_or(0, |v| v.index);
        let r = pair.process_rx(&ctx).map_err(|e| (qi, e.to_string()));
        let r =
            r.and_then(|()| Self::signal(a, pair.rx.as_mut()).map_err(|(q, e)| (q, e.to_string())));
        if let Err((q, e)) = r {
            self.fail(q, e);
        }
    }

    /// The transmit path of pair `p`.
    fn run_tx(&mut self, p: usize) {
        if !self.running() {
            return;
        }
        let Some(a) = self.active.as_ref() else {
            return;
        };
        let Some(pair) = self.pairs.get_mut(p) else {
            return;
        };
        let ctx = TxCtx {
            mem: &a.mem,
            link_up: self.status & S_LINK_UP != 0,
        };
        let qi = pair.tx.as_ref().map_or(0, |v| v.index);
        let r = pair.process_tx(&ctx).map_err(|e| (qi, e.to_string()));
        let r =
            r.and_then(|()| Self::signal(a, pair.tx.as_mut()).map_err(|(q, e)| (q, e.to_string())));
        if let Err((q, e)) = r {
            self.fail(q, e);
        }
    }

    /// QEMU `rxfilter_notify`: one event until the next query.
    fn filter_changed(&mut self) {
        if self.notify_enabled {
            (self.on_rx_filter_changed)();
            self.notify_enabled = false;
        }
    }

    /// Serves the control queue (QEMU `virtio_net_handle_ctrl`).
    fn run_ctrl(&mut self) {
        if !self.running() {
            return;
        }
        let Some(mut vq) = self.active.as_mut().and_then(|a| a.ctrl.take()) else {
            return;
        };
        let r = self.ctrl_loop(&mut vq);
        let r = r.and_then(|()| match self.active.as_ref() {
            Some(a) => Self::signal(a, Some(&mut vq)).map_err(|(_, e)| e.to_string()),
            None => Ok(()),
        });
        let index = vq.index;
        if let Some(a) = self.active.as_mut() {
            a.ctrl = Some(vq);
        }
        if let Err(e) = r {
            self.fail(index, e);
        }
    }

    fn ctrl_loop(&mut self, vq: &mut Vq) -> Result<(), String> {
        loop {
            let Some(a) = self.active.as_ref() else {
                return Ok(());
            };
            let mem = a.mem.clone();
            let Some(c) = chain::pop(&mut vq.queue, &mem).map_err(|e| e.to_string())? else {
                return Ok(());
            };
            let in_len = chain::total(&c.writable);
            let out_len = chain::total(&c.readable);
            if in_len < 1 || out_len < ctrl::CTRL_HDR_LEN as u64 {
                return Err("virtio-net ctrl missing headers".into());
            }
            let cmd = if out_len > CTRL_MAX_LEN {
                Err(CtrlError::Length {
                    class: 0xff,
                    cmd: 0xff,
                    want: CTRL_MAX_LEN as usize,
                    got: out_len as usize,
                })
            } else {
                let mut out = vec![0u8; out_len as usize];
                chain::gather(&mem, &c.readable, 0, &mut out);
                ctrl::parse(&out)
            };
            let ack = self.apply(cmd);
            chain::scatter(&mem, &c.writable, 0, &[ack]);
            vq.push_used(&mem, &[(c.head, 1)])
                .map_err(|e| e.to_string())?;
        }
    }

    /// Carries out one command; the ack byte (QEMU `virtio_net_handle_*`).
    fn apply(&mut self, cmd: Result<CtrlCommand, CtrlError>) -> u8 {
        let features = self.active.as_ref().map_or(0, |a| a.features);
        let cmd = match cmd {
            Ok(c) => c,
            Err(e) => {
                log::debug!("{e}");
                return ctrl::ERR;
            }
        };
        match cmd {
            CtrlCommand::RxMode { mode, on } => {
                self.filter.set_mode(mode, on);
                self.filter_changed();
            }
            CtrlCommand::MacAddrSet(m) => {
                self.mac = m;
                self.filter_changed();
            }
            CtrlCommand::MacTableSet(t) => {
                self.filter.mac_table = t;
                self.filter_changed();
            }
            CtrlCommand::VlanAdd(v) | CtrlCommand::VlanDel(v) => {
                self.filter
                    .set_vlan(v, matches!(cmd, CtrlCommand::VlanAdd(_)));
                self.filter_changed();
            }
            CtrlCommand::AnnounceAck => {
                if self.status & S_ANNOUNCE == 0 {
                    return ctrl::ERR;
                }
                self.status &= !S_ANNOUNCE;
            }
            CtrlCommand::MqVqPairsSet(n) => {
                if features & bit(VIRTIO_NET_F_MQ) == 0
                    || !(MQ_VQ_PAIRS_MIN..=MQ_VQ_PAIRS_MAX).contains(&n)
                    || usize::from(n) > self.pairs.len()
                    || !self.multiqueue
                {
                    return ctrl::ERR;
                }
                let old = self.curr_queue_pairs;
                self.curr_queue_pairs = usize::from(n);
                self.steer_to_used_pairs();
                // Pairs that may receive again: frames may wait in them.
                for p in old..self.curr_queue_pairs {
                    self.run_rx(p);
                }
            }
            CtrlCommand::MqRss => return ctrl::ERR,
            CtrlCommand::GuestOffloadsSet(v) => {
                if features & bit(VIRTIO_NET_F_CTRL_GUEST_OFFLOADS) == 0 || !self.has_vnet_hdr {
                    return ctrl::ERR;
                }
                let v = v & !bit(VIRTIO_NET_F_RSC_EXT);
                if v & !(features & GUEST_OFFLOADS_MASK) != 0 {
                    return ctrl::ERR;
                }
                self.curr_guest_offloads = v;
                self.apply_offloads();
            }
        }
        ctrl::OK
    }

    /// QEMU `virtio_net_apply_guest_offloads` (TUNSETOFFLOAD applies to the
    /// whole TAP device; every queue is told, which is the same).
    fn apply_offloads(&mut self) {
        let o = offloads_of(self.curr_guest_offloads);
        for p in self.pairs.iter_mut() {
            if let Err(e) = p.backend.set_offloads(o) {
                log::warn!("virtio-net: setting offloads {o:?}: {e}");
            }
        }
    }

    fn deactivate(&mut self) {
        self.active = None;
        for p in self.pairs.iter_mut() {
            p.deactivate();
        }
    }
}

impl VirtioDevice for VirtioNet {
    fn device_type(&self) -> u16 {
        VIRTIO_ID_NET
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn device_features(&self) -> u64 {
        self.offered
    }

    /// Accesses past the exposed structure read all ones (QEMU
    /// `virtio_config_modern_read*`).
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

    /// A VERSION_1 driver cannot write the MAC through the configuration
    /// space (QEMU `virtio_net_set_config`); nothing else is writable.
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}

    /// QEMU `virtio_net_set_features` plus DRIVER_OK.
    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        features: u64,
        queues: Vec<ActiveQueue>,
        interrupt: Arc<dyn VirtioInterrupt>,
    ) -> Result<(), ActivateError> {
        self.deactivate();
        self.broken = false;
        self.multiqueue = features & bit(VIRTIO_NET_F_MQ) != 0;
        self.mergeable = features & bit(VIRTIO_NET_F_MRG_RXBUF) != 0;
        // §5.1.2: the control queue follows the pairs the driver uses.
        let used_pairs = if self.multiqueue {
            self.exposed_pairs
        } else {
            1
        };
        let ctrl_index = (used_pairs * 2) as u16;
        let mut ctrl = None;
        for ActiveQueue { index, mut queue } in queues {
            if usize::from(index) >= self.queue_sizes.len() {
                self.deactivate();
                return Err(ActivateError::Failed(format!(
                    "virtio-net has no queue {index}"
                )));
            }
            queue.set_event_idx(features & bit(VIRTIO_RING_F_EVENT_IDX) != 0);
            let vq = Vq::new(index, queue);
            if index == ctrl_index {
                ctrl = Some(vq);
            } else if index < ctrl_index {
                let pair = &mut self.pairs[usize::from(index / 2)];
                if index.is_multiple_of(2) {
                    pair.rx = Some(vq);
                } else {
                    pair.tx = Some(vq);
                }
            } else {
                log::warn!("virtio-net: queue {index} is not used without VIRTIO_NET_F_MQ");
            }
        }
        // QEMU `virtio_net_set_mrg_rx_bufs`: the backend switches to the
        // guest's 12-byte header if it can.
        for p in self.pairs.iter_mut() {
            if p.backend.vnet_hdr_len() > 0 {
                p.backend.set_vnet_hdr_len(GUEST_HDR_LEN);
            }
            p.host_hdr_len = p.backend.vnet_hdr_len();
            if ![0, super::header::HDR_LEN, GUEST_HDR_LEN].contains(&p.host_hdr_len) {
                let len = p.host_hdr_len;
                self.deactivate();
                return Err(ActivateError::Failed(format!(
                    "virtio-net: backend vnet header length {len} is not 0, 10 or 12"
                )));
            }
        }
        if self.has_vnet_hdr {
            self.curr_guest_offloads = features & GUEST_OFFLOADS_MASK;
            self.apply_offloads();
        }
        // Without CTRL_VLAN every VLAN passes.
        self.filter
            .set_all_vlans(features & bit(VIRTIO_NET_F_CTRL_VLAN) == 0);
        self.active = Some(Active {
            mem,
            interrupt,
            features,
            ctrl_index,
            ctrl,
        });
        Ok(())
    }

    fn queue_notify(&mut self, queue: u16) {
        let Some(a) = &self.active else {
            return;
        };
        if self.broken {
            return;
        }
        if queue == a.ctrl_index {
            self.run_ctrl();
        } else if queue < a.ctrl_index {
            let p = usize::from(queue / 2);
            if queue.is_multiple_of(2) {
                self.run_rx(p);
            } else {
                self.run_tx(p);
            }
        }
    }

    fn event_sources(&self) -> Vec<EventSource> {
        if self.active.is_none() {
            return Vec::new();
        }
        self.pairs
            .iter()
            .take(self.exposed_pairs)
            .flat_map(|p| {
                let tag = (p.index as u32) << 1;
                [
                    EventSource {
                        fd: p.backend_fd(),
                        tag,
                    },
                    EventSource {
                        fd: p.resched_fd(),
                        tag: tag | TAG_RESCHED,
                    },
                ]
            })
            .collect()
    }

    fn handle_event(&mut self, tag: u32) {
        let p = (tag >> 1) as usize;
        if p >= self.pairs.len() {
            return;
        }
        if tag & TAG_RESCHED != 0 {
            // Paused: resume() runs every pair anyway.
            self.pairs[p].clear_reschedule();
            self.run_tx(p);
        }
        self.run_rx(p);
    }

    /// Back to the state before activation and QEMU `virtio_net_reset`'s
    /// filter: promiscuous, tables empty, the configured address; one queue
    /// pair; a parked frame is dropped.
    fn reset(&mut self) {
        self.deactivate();
        self.filter = RxFilter::after_device_reset();
        self.mac = self.opts.mac;
        self.status &= !S_ANNOUNCE;
        self.curr_queue_pairs = 1;
        self.steer_to_used_pairs();
        self.multiqueue = false;
        self.mergeable = false;
        self.broken = false;
    }

    /// Nothing is in flight between calls: a pass ends with its frames
    /// sent or parked, so pausing only stops further passes.
    fn pause(&mut self) {
        self.paused = true;
    }

    /// Serves every queue: kicks and readiness that came while paused
    /// were not served (QEMU flushes queued packets and reschedules its
    /// transmit bottom halves when the VM runs again).
    fn resume(&mut self) {
        self.paused = false;
        for p in 0..self.pairs.len() {
            self.run_tx(p);
            self.run_rx(p);
        }
        self.run_ctrl();
    }

    fn needs_reset(&self) -> bool {
        self.broken
    }
}
