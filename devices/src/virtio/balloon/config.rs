//! The balloon's properties, offered features and configuration space
//! (virtio 1.2 §5.5.3, §5.5.4; QEMU `virtio_balloon_properties`,
//! `virtio_balloon_get_features`, `virtio_balloon_config_size`).

use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};

/// Feature bits (virtio 1.2 §5.5.3).
pub const F_STATS_VQ: u32 = 1;
pub const F_DEFLATE_ON_OOM: u32 = 2;
pub const F_FREE_PAGE_HINT: u32 = 3;
pub const F_PAGE_POISON: u32 = 4;
pub const F_REPORTING: u32 = 5;

/// The `-device virtio-balloon-pci` properties this model implements, with
/// QEMU's defaults (both off). `page-poison` is QEMU's default (on) and
/// always offered; `free-page-hint` is not implemented.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BalloonOptions {
    /// `deflate-on-oom`: VIRTIO_BALLOON_F_DEFLATE_ON_OOM.
    pub deflate_on_oom: bool,
    /// `free-page-reporting`: VIRTIO_BALLOON_F_REPORTING and its queue.
    pub free_page_reporting: bool,
}

const fn bit(b: u32) -> u64 {
    1 << b
}

/// What the device offers: STATS_VQ always (QEMU adds it in
/// `virtio_balloon_get_features`), PAGE_POISON (property default on), the
/// optional ones, and the ring features virtio-pci devices offer by default.
pub fn device_features(o: &BalloonOptions) -> u64 {
    let mut f = bit(F_STATS_VQ)
        | bit(F_PAGE_POISON)
        | bit(VIRTIO_RING_F_INDIRECT_DESC)
        | bit(VIRTIO_RING_F_EVENT_IDX);
    if o.deflate_on_oom {
        f |= bit(F_DEFLATE_ON_OOM);
    }
    if o.free_page_reporting {
        f |= bit(F_REPORTING);
    }
    f
}

/// Byte offsets of `struct virtio_balloon_config` (little-endian).
pub mod offset {
    pub const NUM_PAGES: usize = 0;
    pub const ACTUAL: usize = 4;
    pub const FREE_PAGE_HINT_CMD_ID: usize = 8;
    pub const POISON_VAL: usize = 12;
}

/// The exposed size: the whole structure, since PAGE_POISON is offered
/// (QEMU `virtio_balloon_config_size`).
pub const CONFIG_SIZE: usize = 16;

/// The fields the device keeps (QEMU `VirtIOBalloon.num_pages`, `actual`,
/// `poison_val`). `free_page_hint_cmd_id` reads 0: without free-page-hint
/// QEMU's status never leaves its initial state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConfigState {
    /// Pages the host wants in the balloon (written by the host).
    pub num_pages: u32,
    /// Pages the driver says it holds (written by the driver).
    pub actual: u32,
    pub poison_val: u32,
}

impl ConfigState {
    /// `virtio_balloon_get_config`.
    pub fn bytes(&self) -> [u8; CONFIG_SIZE] {
        let mut b = [0u8; CONFIG_SIZE];
        b[offset::NUM_PAGES..][..4].copy_from_slice(&self.num_pages.to_le_bytes());
        b[offset::ACTUAL..][..4].copy_from_slice(&self.actual.to_le_bytes());
        b[offset::POISON_VAL..][..4].copy_from_slice(&self.poison_val.to_le_bytes());
        b
    }
}

/// The little-endian u32 at `at` in `b`.
pub fn le32(b: &[u8; CONFIG_SIZE], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
