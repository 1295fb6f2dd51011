//! Virtio devices (virtio 1.2, modern interface only).
//!
//! - [`device`]: the device/transport contract ([`VirtioDevice`]).
//! - [`block`]: virtio-blk ([`block::VirtioBlock`]).

pub mod block;
pub mod device;

pub use device::{ActivateError, ActiveQueue, EventSource, VirtioDevice, VirtioInterrupt};
