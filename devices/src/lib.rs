//! Device models for ferrovm's x86_64 machine.
//!
//! Every model implements [`bus::BusDevice`] and is unit-tested without KVM.
//! Models never act on the machine directly: they report what the guest asked
//! for through a [`GuestRequestFn`], and the machine's owner decides.

pub mod bus;

use std::sync::Arc;

/// Something the guest asked the platform to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestRequest {
    /// ACPI S5 (PM1a_CNT SLP_EN with the S5 sleep type).
    Poweroff,
    /// Platform reset: ACPI reset register, i8042 pulse, or triple fault.
    Reset,
}

/// How a device hands a [`GuestRequest`] to the machine's owner. The callee
/// must not block: it is called on a vCPU thread with the device lock held.
pub type GuestRequestFn = Arc<dyn Fn(GuestRequest) + Send + Sync>;
