//! virtio-balloon (virtio 1.2 §5.5), behaving like QEMU 7.2's
//! `virtio-balloon-pci` (hw/virtio/virtio-balloon.c).
//!
//! - [`config`]: the device's properties ([`BalloonOptions`]), the feature
//!   bits QEMU offers and the configuration space (§5.5.4).
//! - [`chain`]: how a chain's bytes are read; the chain itself is walked
//!   by [`crate::virtio::chain`], with its `virtio_error` cases
//!   ([`ChainError`]).
//! - [`pages`]: page frame numbers and reported ranges turned into runs of
//!   guest RAM to discard (pure), and the host side (`madvise`).
//! - [`stats`]: the memory statistics (§5.5.6.3): parser, QEMU's names,
//!   the `guest-stats` JSON and the polling interval's validation.
//! - [`device`]: [`VirtioBalloon`], the `VirtioDevice` implementation.

pub mod chain;
pub mod config;
pub mod device;
pub mod pages;
pub mod stats;

#[cfg(test)]
mod tests;

pub use super::chain::{ChainError, Segment};
pub use config::BalloonOptions;
pub use device::{ActualChangedFn, NowFn, VirtioBalloon};
pub use pages::{parse_pfns, plan_inflate, plan_report, GuestRun, PageError, PfnList, RamRange};
pub use stats::{
    parse_stats, StatsIntervalError, StatsReport, StatsTimer, STAT_NAMES, STAT_UNKNOWN,
};

/// Virtio device ID of a memory balloon (virtio 1.2 §5).
pub const VIRTIO_ID_BALLOON: u16 = 5;

/// Page frame numbers count 4 KiB pages whatever the guest's page size
/// (VIRTIO_BALLOON_PFN_SHIFT, §5.5.6).
pub const PFN_SHIFT: u32 = 12;
pub const BALLOON_PAGE_SIZE: u64 = 1 << PFN_SHIFT;

/// Queue indices in QEMU's order (`virtio_balloon_device_realize`): the
/// free-page-reporting queue follows the stats queue when it exists
/// (free-page-hint, which would come before it, is not implemented).
pub const INFLATE_QUEUE: u16 = 0;
pub const DEFLATE_QUEUE: u16 = 1;
pub const STATS_QUEUE: u16 = 2;
pub const REPORTING_QUEUE: u16 = 3;

/// Queue sizes QEMU gives them: 128 for inflate, deflate and stats, 32 for
/// free page reporting.
pub const QUEUE_SIZE: u16 = 128;
pub const REPORTING_QUEUE_SIZE: u16 = 32;

pub use super::VIRTQUEUE_MAX_SIZE;
