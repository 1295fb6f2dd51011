//! PCI: bus 0 (`pcie.0` of a q35-like machine) with its functions, their
//! configuration spaces, BARs, capabilities and MSI-X.
//!
//! - [`config`]: a type 0 configuration space with write masks, BARs and a
//!   capability list ([`PciConfigSpace`]).
//! - [`bar`]: BAR kinds, sizing and decoding ([`BarKind`], [`BarWindow`]) and
//!   the build-time BAR allocator ([`PciWindows`]).
//! - [`capability`]: capability IDs and the list walk.
//! - [`msix`]: the MSI-X table, PBA and masking ([`Msix`]).
//! - [`root`]: [`PciRoot`] with its slots and functions, BAR mapping on the
//!   buses and the [`BarObserver`]; its configuration front-ends are
//!   [`PciConfigIo`] at 0xcf8 (with RST_CNT) and [`PciConfigMmio`] for ECAM.
//! - [`host_bridge`]: the host bridge at 00:00.0.
//! - [`bridge`]: the type 1 header and its windows; [`root_port`] and
//!   [`pcie_pci_bridge`] are QEMU's `pcie-root-port` and `pcie-pci-bridge`.
//! - [`enumerate`]: what firmware does on a direct boot: bus numbers, bridge
//!   windows and BARs ([`PciRoot::assign_bars`]).
//! - [`info`]: what QMP `query-pci` reports ([`PciDeviceInfo`]).

pub mod bar;
pub mod bridge;
#[cfg(test)]
mod bridge_tests;
pub mod capability;
pub mod config;
pub mod enumerate;
pub mod host_bridge;
pub mod info;
pub mod msix;
pub mod pcie_pci_bridge;
pub mod root;
pub mod root_port;

use std::fmt;
use std::sync::{Arc, Mutex};

pub use bar::{BarKind, BarSpace, BarWindow, PciBar, PciWindows};
pub use bridge::{BridgeRange, BridgeState};
pub use capability::PciCapability;
pub use config::PciConfigSpace;
pub use host_bridge::HostBridge;
pub use info::{PciClassInfo, PciDeviceId, PciDeviceInfo, PciRegionInfo};
pub use msix::Msix;
pub use pcie_pci_bridge::PciePciBridge;
pub use root::{
    BarObserver, BusIndex, FunctionOptions, PciConfigIo, PciConfigMmio, PciRoot, SecondaryBus,
    ECAM_SIZE, PCI_CONFIG_IO_LEN,
};
pub use root_port::{PcieRootPort, RootPortError, RootPortOptions};

/// Devices on bus 0.
pub const PCI_SLOTS: usize = 32;
/// Functions per device.
pub const PCI_FUNCTIONS: usize = 8;
/// Dwords in a conventional (256-byte) configuration space.
pub const PCI_CONFIG_REGS: usize = 64;
/// Dwords in a PCIe (4 KiB) configuration space.
pub const PCIE_CONFIG_REGS: usize = 1024;
/// BARs in a type 0 header.
pub const PCI_NUM_BARS: usize = 6;

/// Command register bits a guest may change on a simple function: I/O,
/// memory, bus master, parity error response, SERR#, INTx disable.
pub const COMMAND_WRITABLE: u32 = 0x0547;
/// Command register: I/O space decode enable (PCI 3.0 §6.2.2).
pub const COMMAND_IO: u16 = 1 << 0;
/// Command register: memory space decode enable.
pub const COMMAND_MEMORY: u16 = 1 << 1;
/// Command register: bus master enable.
pub const COMMAND_BUS_MASTER: u16 = 1 << 2;
/// Command register: INTx emulation disable.
pub const COMMAND_INTX_DISABLE: u16 = 1 << 10;

/// A function on the PCI bus: its configuration space and its BARs.
///
/// Functions are shared between [`PciRoot`] (configuration cycles) and the
/// buses their BARs are mapped on, so they live in a [`SharedPciDevice`].
pub trait PciDevice: Send {
    /// The configuration dword at byte offset `reg_idx * 4` (`reg_idx` below
    /// [`PCIE_CONFIG_REGS`]). Registers past the function's configuration
    /// space read all ones.
    fn read_config(&mut self, reg_idx: usize) -> u32;

    /// Writes `data` (1, 2 or 4 bytes) at byte `offset` (0-3) of dword
    /// `reg_idx`; `offset + data.len() <= 4`.
    fn write_config(&mut self, reg_idx: usize, offset: u64, data: &[u8]);

    /// Machine reset: configuration back to power-on values.
    fn reset(&mut self) {}

    /// The function's BARs with what each decodes now. [`PciRoot`] asks after
    /// every configuration write and moves the bus mappings to match.
    fn bars(&self) -> Vec<PciBar> {
        Vec::new()
    }

    /// A guest read of `data.len()` bytes at `offset` inside BAR `bar`.
    fn bar_read(&mut self, _bar: u8, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }

    /// A guest write inside BAR `bar`.
    fn bar_write(&mut self, _bar: u8, _offset: u64, _data: &[u8]) {}
}

pub type SharedPciDevice = Arc<Mutex<dyn PciDevice>>;

/// Where a function sits: bus, slot (device) and function number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PciAddress {
    pub bus: u8,
    pub slot: u8,
    pub function: u8,
}

impl PciAddress {
    pub fn new(bus: u8, slot: u8, function: u8) -> Self {
        Self {
            bus,
            slot,
            function,
        }
    }

    /// slot << 3 | function, as in a configuration address.
    pub fn devfn(&self) -> u8 {
        self.slot << 3 | (self.function & 7)
    }
}

/// `bb:ss.f`, the way lspci and QEMU print it.
impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x}:{:02x}.{:x}", self.bus, self.slot, self.function)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PciError {
    #[error("PCI slot {0} does not exist (bus 0 has slots 0-31)")]
    InvalidSlot(u8),
    #[error("PCI function {0} does not exist (functions are 0-7)")]
    InvalidFunction(u8),
    /// QEMU hw/pci/pci.c `do_pci_register_device`.
    #[error("PCI: slot {slot} function {function} not available for {driver}, in use by {other},id={other_id}")]
    SlotInUse {
        slot: u8,
        function: u8,
        driver: String,
        other: String,
        other_id: String,
    },
    #[error("no room for the {size:#x}-byte window of bridge {addr} in the {space} window")]
    NoWindowSpace {
        addr: PciAddress,
        size: u64,
        space: &'static str,
    },
    #[error("PCI bus {0} does not exist")]
    NoBus(u8),
    #[error("PCI: no slot/function available for {0}, all in use or reserved")]
    NoFreeSlot(String),
    /// QEMU hw/pci/pci.c `pci_init_multifunction`.
    #[error("PCI: single function device can't be populated in function {slot:x}.{function:x}")]
    SingleFunctionSlot { slot: u8, function: u8 },
    #[error("PCI: {slot:x}.0 indicates single function, but {slot:x}.{function:x} is already populated.")]
    FunctionsPopulated { slot: u8, function: u8 },
    #[error("BAR {index} cannot be a {kind:?} BAR of {size:#x} bytes")]
    InvalidBar { index: u8, kind: BarKind, size: u64 },
    #[error("no room for a {size:#x}-byte capability in configuration space")]
    NoCapabilitySpace { size: usize },
    #[error("no room for BAR {bar} ({size:#x} bytes) of {addr} in the {space} window")]
    NoBarSpace {
        addr: PciAddress,
        bar: u8,
        size: u64,
        space: &'static str,
    },
}
