//! Virtio devices (virtio 1.2, modern interface only).
//!
//! - [`device`]: the device/transport contract ([`VirtioDevice`]).
//! - [`chain`]: descriptor chains walked with QEMU's `virtqueue_pop` checks,
//!   and the copies to and from their buffers.
//! - [`balloon`]: virtio-balloon ([`balloon::VirtioBalloon`]).
//! - [`block`]: virtio-blk ([`block::VirtioBlock`]).
//! - [`net`]: virtio-net ([`net::VirtioNet`]).
//! - [`pci`]: the virtio-pci modern transport ([`pci::VirtioPciDevice`]).

pub mod balloon;
pub mod block;
pub mod chain;
pub mod device;
pub mod net;
pub mod pci;
#[cfg(test)]
pub(crate) mod test_support;

pub use device::{ActivateError, ActiveQueue, EventSource, VirtioDevice, VirtioInterrupt};

/// QEMU's VIRTQUEUE_MAX_SIZE (include/hw/virtio/virtio.h): the largest
/// queue, and the most descriptors (or merged receive buffers) one element
/// may have.
pub const VIRTQUEUE_MAX_SIZE: u16 = 1024;
