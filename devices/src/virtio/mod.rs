//! Virtio devices (virtio 1.2, modern interface only).
//!
//! - [`device`]: the device/transport contract ([`VirtioDevice`]).
//! - [`balloon`]: virtio-balloon ([`balloon::VirtioBalloon`]).
//! - [`block`]: virtio-blk ([`block::VirtioBlock`]).
//! - [`pci`]: the virtio-pci modern transport ([`pci::VirtioPciDevice`]).

pub mod balloon;
pub mod block;
pub mod device;
pub mod pci;

pub use device::{ActivateError, ActiveQueue, EventSource, VirtioDevice, VirtioInterrupt};
