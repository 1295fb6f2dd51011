//! Virtio devices (virtio 1.2, modern interface only).
//!
//! - [`device`]: the device/transport contract ([`VirtioDevice`]).

pub mod device;

pub use device::{ActivateError, ActiveQueue, EventSource, VirtioDevice, VirtioInterrupt};
