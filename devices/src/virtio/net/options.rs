//! The properties of QEMU 7.2's virtio-net (hw/net/virtio-net.c
//! `virtio_net_properties`), their defaults, and the checks
//! `virtio_net_device_realize` makes, with QEMU's error texts.

use std::fmt;
use std::str::FromStr;

use super::{VIRTIO_QUEUE_MAX, VIRTQUEUE_MAX_SIZE};

/// An Ethernet address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// QEMU's first default NIC address.
    pub const QEMU_DEFAULT: MacAddr = MacAddr([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);

    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 != 0
    }
}

/// `qemu_mac_strdup_printf`: lower-case hex, colon separated.
impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = &self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// A `mac=` value QEMU's property parser refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid MAC address '{0}'")]
pub struct MacParseError(pub String);

/// The qdev MAC property syntax (hw/core/qdev-properties-system.c
/// `set_mac`): six pairs of hex digits, each pair but the last followed by
/// ':' or '-'.
impl FromStr for MacAddr {
    type Err = MacParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || MacParseError(s.to_string());
        let b = s.as_bytes();
        if b.len() != 17 {
            return Err(err());
        }
        let mut mac = [0u8; 6];
        for (i, byte) in mac.iter_mut().enumerate() {
            let pos = i * 3;
            let hex = std::str::from_utf8(&b[pos..pos + 2]).map_err(|_| err())?;
            if !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err(err());
            }
            *byte = u8::from_str_radix(hex, 16).map_err(|_| err())?;
            if i < 5 && b[pos + 2] != b':' && b[pos + 2] != b'-' {
                return Err(err());
            }
        }
        Ok(MacAddr(mac))
    }
}

/// QEMU's per-machine pool of default NIC addresses (net/net.c
/// `qemu_macaddr_default_if_unset`): 52:54:00:12:34:XX with XX the first
/// unused value from 0x56; an explicit address in that range marks its XX
/// used. One allocator per machine, in NIC creation order.
#[derive(Debug, Clone)]
pub struct MacAllocator {
    used: [u32; 256],
}

impl Default for MacAllocator {
    fn default() -> Self {
        Self { used: [0; 256] }
    }
}

const MAC_BASE: [u8; 5] = [0x52, 0x54, 0x00, 0x12, 0x34];

impl MacAllocator {
    pub fn new() -> Self {
        Self::default()
    }

    /// The NIC's address: `mac` if given (marking it used when it is in
    /// QEMU's range), else the next free default.
    pub fn default_if_unset(&mut self, mac: Option<MacAddr>) -> MacAddr {
        match mac {
            // QEMU treats an all-zero address as unset too.
            Some(m) if m.0 != [0; 6] => {
                if m.0[..5] == MAC_BASE {
                    self.set_used(m);
                }
                m
            }
            _ => {
                // qemu_macaddr_get_free returns -1 when all are used,
                // which lands in the last byte as 0xff.
                let last = (0x56..0xff).find(|&i| self.used[i] == 0).unwrap_or(0xff) as u8;
                let m = MacAddr([
                    MAC_BASE[0],
                    MAC_BASE[1],
                    MAC_BASE[2],
                    MAC_BASE[3],
                    MAC_BASE[4],
                    last,
                ]);
                self.set_used(m);
                m
            }
        }
    }

    /// The NIC went away (`qemu_macaddr_set_free`).
    pub fn release(&mut self, mac: MacAddr) {
        if mac.0[..5] != MAC_BASE {
            return;
        }
        let i = usize::from(mac.0[5]);
        if (0x56..0xff).contains(&i) {
            self.used[i] = self.used[i].saturating_sub(1);
        }
    }

    fn set_used(&mut self, mac: MacAddr) {
        let i = usize::from(mac.0[5]);
        if (0x56..0xff).contains(&i) {
            self.used[i] += 1;
        }
    }
}

/// QEMU's VIRTIO_NET_RX_QUEUE_MIN_SIZE / _TX_: also the defaults.
pub const QUEUE_MIN_SIZE: u16 = 256;

/// The device's properties. The feature switches are QEMU's
/// `DEFINE_PROP_BIT64` bits with QEMU's defaults (all on but `mq`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetOptions {
    /// The NIC's address (`mac`). QEMU's default for the first NIC; a caller
    /// with several NICs picks each one's with [`MacAllocator`].
    pub mac: MacAddr,
    /// `host_mtu`: offers VIRTIO_NET_F_MTU with this value. QEMU 7.2 takes
    /// any u16 and treats 0 as unset.
    pub host_mtu: Option<u16>,
    pub rx_queue_size: u16,
    /// QEMU accepts up to 1024 but a TAP backend's queue is at most 256
    /// (`virtio_net_max_tx_queue_size`).
    pub tx_queue_size: u16,
    pub csum: bool,
    pub guest_csum: bool,
    pub gso: bool,
    pub guest_tso4: bool,
    pub guest_tso6: bool,
    pub guest_ecn: bool,
    pub guest_ufo: bool,
    pub host_tso4: bool,
    pub host_tso6: bool,
    pub host_ecn: bool,
    pub host_ufo: bool,
    pub mrg_rxbuf: bool,
    pub status: bool,
    pub ctrl_vq: bool,
    pub ctrl_rx: bool,
    pub ctrl_vlan: bool,
    pub ctrl_rx_extra: bool,
    pub ctrl_mac_addr: bool,
    pub ctrl_guest_offloads: bool,
    pub guest_announce: bool,
    /// `mq`: offers VIRTIO_NET_F_MQ; the queue pairs are the backend's queues.
    pub mq: bool,
}

impl Default for NetOptions {
    fn default() -> Self {
        Self {
            mac: MacAddr::QEMU_DEFAULT,
            host_mtu: None,
            rx_queue_size: QUEUE_MIN_SIZE,
            tx_queue_size: QUEUE_MIN_SIZE,
            csum: true,
            guest_csum: true,
            gso: true,
            guest_tso4: true,
            guest_tso6: true,
            guest_ecn: true,
            guest_ufo: true,
            host_tso4: true,
            host_tso6: true,
            host_ecn: true,
            host_ufo: true,
            mrg_rxbuf: true,
            status: true,
            ctrl_vq: true,
            ctrl_rx: true,
            ctrl_vlan: true,
            ctrl_rx_extra: true,
            ctrl_mac_addr: true,
            ctrl_guest_offloads: true,
            guest_announce: true,
            mq: false,
        }
    }
}

/// Why the device could not be created; the texts are QEMU 7.2's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetOptionsError {
    #[error(
        "Invalid rx_queue_size (= {0}), must be a power of 2 between {QUEUE_MIN_SIZE} and {VIRTQUEUE_MAX_SIZE}."
    )]
    RxQueueSize(u16),
    #[error(
        "Invalid tx_queue_size (= {0}), must be a power of 2 between {QUEUE_MIN_SIZE} and {VIRTQUEUE_MAX_SIZE}"
    )]
    TxQueueSize(u16),
    #[error(
        "Invalid number of queue pairs (= {0}), must be a positive integer less than {max}.",
        max = (VIRTIO_QUEUE_MAX - 1) / 2
    )]
    QueuePairs(usize),
    /// QEMU runs a NIC without a peer; this model needs its backend.
    #[error("virtio-net needs a network backend")]
    NoBackend,
    #[error("virtio-net: {0}")]
    Backend(String),
}

fn queue_size_ok(size: u16) -> bool {
    (QUEUE_MIN_SIZE..=VIRTQUEUE_MAX_SIZE).contains(&size) && size.is_power_of_two()
}

impl NetOptions {
    /// The checks of `virtio_net_device_realize`, in its order.
    pub fn validate(&self, queue_pairs: usize) -> Result<(), NetOptionsError> {
        if !queue_size_ok(self.rx_queue_size) {
            return Err(NetOptionsError::RxQueueSize(self.rx_queue_size));
        }
        if !queue_size_ok(self.tx_queue_size) {
            return Err(NetOptionsError::TxQueueSize(self.tx_queue_size));
        }
        if queue_pairs == 0 {
            return Err(NetOptionsError::NoBackend);
        }
        if queue_pairs * 2 + 1 > VIRTIO_QUEUE_MAX {
            return Err(NetOptionsError::QueuePairs(queue_pairs));
        }
        Ok(())
    }

    /// The MTU offered, if any (`host_mtu=0` is unset).
    pub fn mtu(&self) -> Option<u16> {
        self.host_mtu.filter(|&m| m != 0)
    }
}
