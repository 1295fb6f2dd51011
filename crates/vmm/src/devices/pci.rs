//! PCI bus 0 (q35's pcie.0): the root complex, its two configuration
//! front-ends (ports 0xcf8/0xcfc and ECAM), the functions on it, and where
//! their BARs go. A BAR the guest moves moves its bus mapping (done by the
//! root) and its doorbells (the [`BarObserver`] here, through the KVM wiring).

use std::sync::{Arc, Mutex};

use devices::bus::Bus;
use devices::pci::{
    BarSpace, BarWindow, BusIndex, FunctionOptions, PciAddress, PciWindows, SecondaryBus,
    SharedPciDevice,
};
use devices::{AcpiPm, BarObserver, GuestRequestFn, PciConfigIo, PciConfigMmio, PciRoot};

use super::chipset::{self, Chipset};
use super::kvm_wiring::{IoSpace, KvmWiring};
use super::legacy::insert;
use super::qdev::PciPlacement;
use crate::error::VmmError;
use crate::sync::lock;

const PCI_CONFIG_PORT: u64 = 0xcf8;

pub struct PciDevices {
    pub root: Arc<Mutex<PciRoot>>,
    config_io: Arc<Mutex<PciConfigIo>>,
    pub chipset: Chipset,
    windows: PciWindows,
}

/// Moves a function's doorbells with its BAR.
struct MoveDoorbells(KvmWiring);

impl BarObserver for MoveDoorbells {
    fn bar_moved(
        &self,
        addr: PciAddress,
        bar: u8,
        _old: Option<BarWindow>,
        new: Option<BarWindow>,
    ) {
        let owner = doorbell_owner(addr, bar);
        if let Err(e) = self.0.move_window(owner, new.map(|w| w.base)) {
            log::error!("PCI {addr} BAR{bar}: {e}");
        }
    }
}

/// The KVM doorbell owner id of a function's BAR (`addr` a topology
/// address: its bus is the bus index, stable whatever the guest numbers).
pub fn doorbell_owner(addr: PciAddress, bar: u8) -> (u32, u8) {
    (u32::from(addr.bus) << 8 | u32::from(addr.devfn()), bar)
}

/// The space an ioeventfd of a BAR listens in.
pub fn io_space(space: BarSpace) -> IoSpace {
    match space {
        BarSpace::Io => IoSpace::Pio,
        BarSpace::Memory => IoSpace::Mmio,
    }
}

impl PciDevices {
    /// Bus 0 with q35's MCH and LPC bridge, reachable through 0xcf8 and,
    /// once PCIEXBAR enables it, ECAM. `requests` receives the resets written
    /// to RST_CNT (0xcf9); `mmio32` is the 32-bit MMIO window the DSDT gives
    /// PCI0; `acpi_pm` is the PM block the LPC bridge's PMBASE maps.
    pub fn new(
        requests: GuestRequestFn,
        pio: &Arc<Bus>,
        mmio: &Arc<Bus>,
        wiring: &KvmWiring,
        mmio32: (u64, u64),
        acpi_pm: Arc<Mutex<AcpiPm>>,
    ) -> Result<Self, VmmError> {
        let mut root = PciRoot::with_buses(pio.clone(), mmio.clone());
        root.set_bar_observer(Arc::new(MoveDoorbells(wiring.clone())));
        let root = Arc::new(Mutex::new(root));
        let config_io = Arc::new(Mutex::new(PciConfigIo::new(root.clone(), requests)));
        insert(pio, config_io.clone(), PCI_CONFIG_PORT, 8)?;
        let ecam = Arc::new(Mutex::new(PciConfigMmio::new(root.clone())));
        let chipset = Chipset::new(&root, mmio, pio, ecam, acpi_pm)?;
        Ok(Self {
            root,
            config_io,
            chipset,
            // 64-bit BARs go below 4 GiB while they fit, as SeaBIOS places
            // them; a guest that wants them higher may move them.
            windows: PciWindows {
                io: PciWindows::IO_DEFAULT,
                mmio32,
                mmio64: None,
            },
        })
    }

    /// Plugs `device` in where `at` says (`bus=`, `addr=`); `multifunction`
    /// comes from `options`.
    pub fn add_on(
        &self,
        at: &PciPlacement,
        device: SharedPciDevice,
        options: FunctionOptions,
    ) -> Result<PciAddress, String> {
        let mut root = lock(&self.root);
        let bus = bus_index(&root, at)?;
        root.add_function_on(bus, at.addr, device, options)
            .map_err(|e| e.to_string())
    }

    /// Plugs in a bridge and creates the bus behind it, named by its id.
    pub fn add_bridge(
        &self,
        at: &PciPlacement,
        device: SharedPciDevice,
        options: FunctionOptions,
        kind: SecondaryBus,
    ) -> Result<PciAddress, String> {
        let mut root = lock(&self.root);
        let bus = bus_index(&root, at)?;
        root.add_bridge(bus, at.addr, device, options, kind)
            .map(|(a, _)| a)
            .map_err(|e| e.to_string())
    }

    /// The GSI INTx pin `pin` of the function at `addr` raises, swizzled
    /// through the bridges above it.
    pub fn intx_gsi(&self, addr: PciAddress, pin: u8) -> Option<u32> {
        let (slot, pin) = lock(&self.root).intx_route(addr, pin)?;
        boot::pci_intx_gsi(slot, pin)
    }

    /// `path` (an OpenFirmware path computed as if the function at `addr`
    /// were on pcie.0) with a `pci-bridge@slot[,fn]` node for every bridge
    /// above it, as QEMU's `qdev_get_fw_dev_path` builds it (the class name
    /// of 06.04 is "pci-bridge" in hw/pci/pci.c `pci_class_descriptions`).
    pub fn fw_path(&self, path: String, addr: PciAddress) -> String {
        let root = lock(&self.root);
        let mut nodes = Vec::new();
        let mut bus = addr.bus;
        let mut last = addr;
        while let Some(b) = root.parent_of(bus) {
            nodes.push(if b.function == 0 {
                format!("pci-bridge@{:x}", b.slot)
            } else {
                format!("pci-bridge@{:x},{:x}", b.slot, b.function)
            });
            last = b;
            bus = b.bus;
        }
        if nodes.is_empty() {
            return path;
        }
        let _ = last;
        nodes.reverse();
        match path.split_once("/pci@i0cf8/") {
            Some((pre, rest)) => format!("{pre}/pci@i0cf8/{}/{rest}", nodes.join("/")),
            None => path,
        }
    }

    /// Direct boot has no firmware to program the chipset and the BARs:
    /// ferrovm does, once the functions exist and again after every reset
    /// (Cloud Hypervisor does the same for BARs). The guest may move them.
    pub fn program_like_firmware(&self, pm_block: bool) -> Result<(), VmmError> {
        chipset::program_like_seabios(&self.root, boot::layout::ECAM_START, pm_block);
        lock(&self.root)
            .assign_bars(&self.windows)
            .map_err(|e| VmmError::Device(format!("PCI BAR assignment: {e}")))
    }

    /// Machine reset: every function back to power-on state (ECAM and the
    /// PM block stop decoding; the MCH keeps PAM, as QEMU's does).
    pub fn reset(&self) {
        lock(&self.root).reset();
        lock(&self.config_io).reset();
    }
}

/// The bus `bus=` names (pcie.0 when absent), in QEMU's words if none.
fn bus_index(root: &PciRoot, at: &PciPlacement) -> Result<BusIndex, String> {
    match &at.bus {
        None => Ok(0),
        Some(b) => root
            .bus_by_name(b)
            .filter(|_| !b.is_empty())
            .ok_or_else(|| format!("Bus '{b}' not found")),
    }
}

impl super::DeviceManager {
    /// A plain (not virtio) function where `request` places it: no
    /// doorbells; its BARs are mapped by the root as the guest programs
    /// them. `behind`: the function is a bridge with a secondary bus of
    /// that kind.
    pub(super) fn add_pci_function(
        &self,
        device: SharedPciDevice,
        driver: &'static str,
        request: super::qdev::PciFunctionRequest,
        qom_path: String,
        behind: Option<SecondaryBus>,
    ) -> Result<PciAddress, String> {
        let options = FunctionOptions {
            driver: driver.into(),
            id: request.id.unwrap_or_default(),
            multifunction: request.pci.multifunction,
        };
        let addr = match behind {
            Some(kind) => self.pci.add_bridge(&request.pci, device, options, kind)?,
            None => self.pci.add_on(&request.pci, device, options)?,
        };
        lock(&self.peripherals).push(super::Peripheral { qom_path, driver });
        Ok(addr)
    }
}
