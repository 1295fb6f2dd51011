//! The q35 chipset functions the firmware programs: the MCH host bridge
//! ([`mch::Mch`], PAM and PCIEXBAR), the ICH9 LPC bridge ([`lpc::Lpc`],
//! PMBASE) and the PAM area's exit handler ([`pam::PamArea`]).
//!
//! The models only keep registers; what a register change means for the
//! machine (moving ECAM or the PM block on a bus, remapping KVM memory slots)
//! they report as a [`ChipsetEvent`] to the VMM, like the BAR observer does
//! for BARs. Events come with the PCI root's lock held: the observer must
//! not reach back into PCI configuration space.

pub mod lpc;
pub mod mch;
pub mod pam;

use std::sync::Arc;

/// Where ECAM decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EcamWindow {
    pub base: u64,
    pub size: u64,
}

/// A chipset register change the machine must act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChipsetEvent {
    /// PAM0-6's new values.
    Pam([u8; pam::PAM_REGS]),
    /// PCIEXBAR's window, `None` when disabled.
    Ecam(Option<EcamWindow>),
    /// The ACPI PM block's I/O base, `None` when not decoded.
    PmBase(Option<u16>),
}

pub type ChipsetObserver = Arc<dyn Fn(ChipsetEvent) + Send + Sync>;
