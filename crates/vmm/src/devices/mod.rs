//! The device manager: the machine's devices, one part per bus, and the one
//! place that wires them to KVM ([`kvm_wiring`]).

pub mod kvm_wiring;
