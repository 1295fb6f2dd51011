//! Virtio devices (virtio 1.2, modern interface only).
//!
//! - [`device`]: the device/transport contract ([`VirtioDevice`]).
//! - [`balloon`]: virtio-balloon ([`balloon::VirtioBalloon`]).
//! - [`block`]: virtio-blk ([`block::VirtioBlock`]).
//! - [`net`]: virtio-net ([`net::VirtioNet`]).
//! - [`pci`]: the virtio-pci modern transport ([`pci::VirtioPciDevice`]).

pub mod balloon;
pub mod block;
pub mod device;
pub mod net;
pub mod pci;

pub use device::{ActivateError, ActiveQueue, EventSource, VirtioDevice, VirtioInterrupt};
