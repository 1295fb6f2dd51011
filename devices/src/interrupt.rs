//! How device models raise interrupts without knowing about KVM.
//!
//! The VMM implements these traits with eventfds wired to KVM (irqfd + GSI
//! routes, see `crates/vmm/src/devices/kvm_wiring.rs`); unit tests implement
//! them with recorders. A model never holds a KVM fd, so rebuilding the KVM VM
//! on reset re-wires every interrupt in one place.

/// An MSI message as the guest programmed it (PCI 3.0 §6.8.2, MSI-X table entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MsiMessage {
    pub address: u64,
    pub data: u32,
}

/// The MSI vectors of one PCI function.
///
/// The MSI-X model (`pci::msix`) owns masking and the pending-bit array: it
/// calls [`MsiVectors::set_route`] whenever what a vector delivers changes and
/// [`MsiVectors::trigger`] only for a vector that is enabled and unmasked.
pub trait MsiVectors: Send + Sync {
    /// Vector `vector` now delivers `msg`; `None` when it delivers nothing
    /// (MSI-X disabled, vector or function masked).
    fn set_route(&self, vector: u16, msg: Option<MsiMessage>);
    /// Delivers vector `vector` once (an edge).
    fn trigger(&self, vector: u16);
}

/// A level-triggered INTx line (INTA#..INTD#) of one PCI function.
pub trait IntxLine: Send + Sync {
    fn set_level(&self, asserted: bool);
}
