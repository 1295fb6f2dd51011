//! The feature bits QEMU 7.2 offers (`virtio_net_get_features`) and the
//! configuration space (virtio 1.2 §5.1.4, QEMU `virtio_net_get_config`).

use virtio_bindings::virtio_net::*;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};

use super::options::NetOptions;
use super::MacAddr;

/// Byte offsets of `struct virtio_net_config` (little endian).
pub mod offset {
    pub const MAC: usize = 0;
    pub const STATUS: usize = 6;
    pub const MAX_VIRTQUEUE_PAIRS: usize = 8;
    pub const MTU: usize = 10;
    pub const SPEED: usize = 12;
    pub const DUPLEX: usize = 16;
}

/// `sizeof(struct virtio_net_config)` in QEMU 7.2 (with the RSS fields).
pub const CONFIG_MAX_SIZE: usize = 24;

/// Status bits (§5.1.4).
pub const S_LINK_UP: u16 = VIRTIO_NET_S_LINK_UP as u16;
pub const S_ANNOUNCE: u16 = VIRTIO_NET_S_ANNOUNCE as u16;

pub const fn bit(b: u32) -> u64 {
    1 << b
}

/// The offloads that need a vnet header from the backend.
const VNET_HDR_OFFLOADS: u64 = bit(VIRTIO_NET_F_CSUM)
    | bit(VIRTIO_NET_F_HOST_TSO4)
    | bit(VIRTIO_NET_F_HOST_TSO6)
    | bit(VIRTIO_NET_F_HOST_ECN)
    | bit(VIRTIO_NET_F_GUEST_CSUM)
    | bit(VIRTIO_NET_F_GUEST_TSO4)
    | bit(VIRTIO_NET_F_GUEST_TSO6)
    | bit(VIRTIO_NET_F_GUEST_ECN);

const UFO: u64 = bit(VIRTIO_NET_F_GUEST_UFO) | bit(VIRTIO_NET_F_HOST_UFO);

/// The receive offloads a driver can switch with GUEST_OFFLOADS_SET
/// (`virtio_net_guest_offloads_by_features`).
pub const GUEST_OFFLOADS_MASK: u64 = bit(VIRTIO_NET_F_GUEST_CSUM)
    | bit(VIRTIO_NET_F_GUEST_TSO4)
    | bit(VIRTIO_NET_F_GUEST_TSO6)
    | bit(VIRTIO_NET_F_GUEST_ECN)
    | bit(VIRTIO_NET_F_GUEST_UFO);

/// QEMU's `host_features`: the property bits, plus MTU when `host_mtu` is set.
pub fn host_features(o: &NetOptions) -> u64 {
    let props = [
        (o.csum, VIRTIO_NET_F_CSUM),
        (o.guest_csum, VIRTIO_NET_F_GUEST_CSUM),
        (o.gso, VIRTIO_NET_F_GSO),
        (o.guest_tso4, VIRTIO_NET_F_GUEST_TSO4),
        (o.guest_tso6, VIRTIO_NET_F_GUEST_TSO6),
        (o.guest_ecn, VIRTIO_NET_F_GUEST_ECN),
        (o.guest_ufo, VIRTIO_NET_F_GUEST_UFO),
        (o.guest_announce, VIRTIO_NET_F_GUEST_ANNOUNCE),
        (o.host_tso4, VIRTIO_NET_F_HOST_TSO4),
        (o.host_tso6, VIRTIO_NET_F_HOST_TSO6),
        (o.host_ecn, VIRTIO_NET_F_HOST_ECN),
        (o.host_ufo, VIRTIO_NET_F_HOST_UFO),
        (o.mrg_rxbuf, VIRTIO_NET_F_MRG_RXBUF),
        (o.status, VIRTIO_NET_F_STATUS),
        (o.ctrl_vq, VIRTIO_NET_F_CTRL_VQ),
        (o.ctrl_rx, VIRTIO_NET_F_CTRL_RX),
        (o.ctrl_vlan, VIRTIO_NET_F_CTRL_VLAN),
        (o.ctrl_rx_extra, VIRTIO_NET_F_CTRL_RX_EXTRA),
        (o.ctrl_mac_addr, VIRTIO_NET_F_CTRL_MAC_ADDR),
        (o.ctrl_guest_offloads, VIRTIO_NET_F_CTRL_GUEST_OFFLOADS),
        (o.mq, VIRTIO_NET_F_MQ),
    ];
    let mut f = props
        .iter()
        .filter(|(on, _)| *on)
        .fold(0, |f, (_, b)| f | bit(*b));
    if o.mtu().is_some() {
        f |= bit(VIRTIO_NET_F_MTU);
    }
    f
}

/// `virtio_net_get_features`: MAC always; the offloads only when the
/// backend exchanges vnet headers, UFO only when it also takes TUN_F_UFO.
/// The ring features are the ones QEMU's virtio-pci offers by default.
pub fn device_features(o: &NetOptions, has_vnet_hdr: bool, has_ufo: bool) -> u64 {
    let mut f = host_features(o) | bit(VIRTIO_NET_F_MAC);
    if !has_vnet_hdr {
        f &= !VNET_HDR_OFFLOADS;
    }
    if !has_vnet_hdr || !has_ufo {
        f &= !UFO;
    }
    f | bit(VIRTIO_RING_F_INDIRECT_DESC) | bit(VIRTIO_RING_F_EVENT_IDX)
}

/// `virtio_net_set_config_size`: the structure up to the last field a
/// property feature needs (QEMU `feature_sizes`), at least the MAC.
pub fn config_size(o: &NetOptions) -> usize {
    let f = host_features(o);
    let mut size = offset::STATUS;
    if f & bit(VIRTIO_NET_F_STATUS) != 0 {
        size = offset::MAX_VIRTQUEUE_PAIRS;
    }
    if f & bit(VIRTIO_NET_F_MQ) != 0 {
        size = offset::MTU;
    }
    if f & bit(VIRTIO_NET_F_MTU) != 0 {
        size = offset::SPEED;
    }
    size
}

/// The live values behind the configuration space.
#[derive(Debug, Clone, Copy)]
pub struct ConfigState {
    pub mac: MacAddr,
    pub status: u16,
    pub max_queue_pairs: u16,
    pub mtu: u16,
}

impl ConfigState {
    /// `virtio_net_get_config`; speed is SPEED_UNKNOWN (-1) and duplex
    /// DUPLEX_UNKNOWN (0xff), as QEMU fills them even when hidden.
    pub fn bytes(&self) -> [u8; CONFIG_MAX_SIZE] {
        use offset::*;
        let mut c = [0u8; CONFIG_MAX_SIZE];
        c[MAC..MAC + 6].copy_from_slice(&self.mac.0);
        c[STATUS..STATUS + 2].copy_from_slice(&self.status.to_le_bytes());
        c[MAX_VIRTQUEUE_PAIRS..MAX_VIRTQUEUE_PAIRS + 2]
            .copy_from_slice(&self.max_queue_pairs.to_le_bytes());
        c[MTU..MTU + 2].copy_from_slice(&self.mtu.to_le_bytes());
        c[SPEED..SPEED + 4].copy_from_slice(&(-1i32).to_le_bytes());
        c[DUPLEX] = 0xff;
        // rss_max_key_size 40, rss_max_indirection_table_length 1 (no RSS),
        // supported_hash_types: QEMU's VIRTIO_NET_RSS_SUPPORTED_HASHES.
        c[17] = 40;
        c[18..20].copy_from_slice(&1u16.to_le_bytes());
        c[20..24].copy_from_slice(&0x1ffu32.to_le_bytes());
        c
    }
}
