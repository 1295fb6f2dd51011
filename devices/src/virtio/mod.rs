//! Virtio devices (virtio 1.2, modern interface only).
//!
//! - [`device`]: the device/transport contract ([`VirtioDevice`]).
//! - [`pci`]: the virtio-pci modern transport ([`pci::VirtioPciDevice`]).

pub mod device;
pub mod pci;

pub use device::{ActivateError, ActiveQueue, EventSource, VirtioDevice, VirtioInterrupt};
