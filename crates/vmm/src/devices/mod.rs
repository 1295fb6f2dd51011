//! The device manager: the machine's devices, one part per bus (the legacy
//! ISA/ACPI devices at fixed ports, and PCI bus 0), the address buses the
//! vCPUs dispatch exits to, the backend event thread that serves device
//! backends, and the one place that wires devices to KVM ([`kvm_wiring`]).
//!
//! A reset rebuilds the KVM VM: [`DeviceManager::detach`] releases every
//! irqfd, ioeventfd and route from the old VM and [`DeviceManager::attach`]
//! re-creates all of them on the new one.

pub mod balloon;
pub mod bootorder;
pub mod bridges;
pub mod chipset;
pub mod firmware;
pub mod intx;
pub mod kvm_wiring;
pub mod legacy;
pub mod nic;
pub mod pci;
pub mod plan;
pub mod qdev;
pub mod rtc;
pub mod smbios_config;
pub mod tree;
pub mod virtio;
pub mod virtio_pci;
pub mod watchdog;
pub mod xhci;

use std::sync::{Arc, Mutex};

use devices::bus::Bus;
use devices::virtio::balloon::VirtioBalloon;
use devices::virtio::block::VirtioBlock;
use devices::virtio::net::VirtioNet;
use devices::GuestRequestFn;
use kvm_ioctls::VmFd;
use vm_memory::GuestMemoryMmap;

use crate::backend::clock::ClockMode;
use crate::backend::{Backend, BackendHandle};
use crate::error::VmmError;
use crate::memory_map::{BiosRom, MemoryMap};
use crate::messages::ControlSender;
use devices::chipset::pam::{self, PamArea};
use devices::fw_cfg::{self, FwCfg};
use kvm_wiring::KvmWiring;
use legacy::{LegacyDevices, LegacySpec};
use pci::PciDevices;

/// What the device manager builds.
pub struct DeviceSpec {
    pub legacy: LegacySpec,
    /// PCI0's 32-bit MMIO window `[start, end)` (the DSDT's `_CRS`).
    pub pci_mmio32: (u64, u64),
    /// Firmware boots the machine and programs the chipset and BARs itself;
    /// without it (direct boot) ferrovm does.
    pub firmware: Option<firmware::FirmwareSpec>,
    /// `acpi=`: on direct boot, whether ferrovm enables the PM block as
    /// SeaBIOS would; with ACPI off no table tells a guest where it is.
    pub acpi: bool,
}

/// A PCI function to build once guest RAM exists, in `-device` order (which
/// decides the slots, as in QEMU).
pub struct PciPlan {
    pub model: PlannedModel,
    /// Its QOM path: `/machine/peripheral/ID`, or `peripheral-anon/device[N]`.
    pub qom_path: String,
    /// `-device ARG` (or `-drive ARG`), for errors found while building.
    pub location: String,
}

/// A device model whose properties are checked, waiting for guest RAM.
pub enum PlannedModel {
    Block {
        request: qdev::VirtioBlkPci,
        model: VirtioBlock,
        /// Its attachment to the block graph.
        backend: block::BlockBackend,
    },
    Net {
        request: qdev::VirtioNetPci,
        model: VirtioNet,
        /// Its net client name (`set_link`, `query-rx-filter`).
        name: String,
        /// The virtio device's QOM path.
        device_path: String,
    },
    Balloon {
        request: qdev::VirtioBalloonPci,
        model: VirtioBalloon,
    },
    /// `-device i6300esb`.
    Watchdog { request: qdev::I6300EsbRequest },
    /// `-device pvpanic-pci`; `report` hears the guest's writes.
    PvPanicPci {
        request: qdev::PvPanicPciRequest,
        report: devices::pvpanic::PvPanicFn,
    },
    /// `-device pcie-root-port`.
    RootPort { request: qdev::PcieRootPortRequest },
    /// `-device pcie-pci-bridge`.
    PciBridge { request: qdev::PciePciBridgeRequest },
    /// `-device qemu-xhci`.
    Xhci { request: qdev::XhciRequest },
}

impl PciPlan {
    /// The QOM type of the function.
    pub fn driver(&self) -> &'static str {
        match self.model {
            PlannedModel::Block { ref request, .. } => request.proxy.type_name("virtio-blk-pci"),
            PlannedModel::Net { ref request, .. } => request.proxy.type_name("virtio-net-pci"),
            PlannedModel::Balloon { ref request, .. } => {
                request.proxy.type_name("virtio-balloon-pci")
            }
            PlannedModel::Watchdog { .. } => "i6300esb",
            PlannedModel::PvPanicPci { .. } => "pvpanic-pci",
            PlannedModel::RootPort { .. } => "pcie-root-port",
            PlannedModel::PciBridge { .. } => "pcie-pci-bridge",
            PlannedModel::Xhci { .. } => "qemu-xhci",
        }
    }
}

pub struct DeviceManager {
    pub pio: Arc<Bus>,
    pub mmio: Arc<Bus>,
    pub legacy: LegacyDevices,
    pub pci: PciDevices,
    wiring: KvmWiring,
    backend: Backend,
    /// Devices to build once guest RAM exists ([`DeviceManager::realize`]).
    planned: Vec<PciPlan>,
    firmware: Option<firmware::FirmwareSpec>,
    acpi: bool,
    fw_cfg: Option<Arc<Mutex<FwCfg>>>,
    /// Devices with a `bootindex=`, for fw_cfg's `bootorder`.
    boot_devices: Mutex<Vec<bootorder::BootDevice>>,
    /// Every `-device` built, in order: what QOM lists under /machine.
    peripherals: Mutex<Vec<Peripheral>>,
    /// The NICs, in creation order.
    nics: Mutex<Vec<Arc<nic::Nic>>>,
    /// The virtio balloon, if there is one (QEMU allows one).
    balloon: std::sync::OnceLock<balloon::Balloon>,
    /// Where a watchdog's expiry goes (the machine's owner).
    events: Option<Arc<ControlSender>>,
}

/// A device built from `-device` (or implied by `-drive if=virtio`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peripheral {
    /// `/machine/peripheral/ID` or `/machine/peripheral-anon/device[N]`.
    pub qom_path: String,
    /// Its QOM type (`virtio-net-pci`).
    pub driver: &'static str,
}

impl DeviceManager {
    pub fn new(spec: DeviceSpec, requests: GuestRequestFn) -> Result<Self, VmmError> {
        let pio = Arc::new(Bus::new());
        let mmio = Arc::new(Bus::new());
        let backend = Backend::start(ClockMode::Realtime)?;
        let wiring = KvmWiring::new();
        let legacy = LegacyDevices::new(
            spec.legacy,
            requests.clone(),
            &pio,
            backend.handle().guest_clock(),
        )?;
        legacy.wire(&wiring, backend.handle())?;
        let pci = PciDevices::new(
            requests,
            &pio,
            &mmio,
            &wiring,
            spec.pci_mmio32,
            legacy.acpi_pm.clone(),
        )?;
        Ok(Self {
            pio,
            mmio,
            legacy,
            pci,
            wiring,
            backend,
            planned: Vec::new(),
            firmware: spec.firmware,
            acpi: spec.acpi,
            fw_cfg: None,
            boot_devices: Mutex::new(Vec::new()),
            peripherals: Mutex::new(Vec::new()),
            nics: Mutex::new(Vec::new()),
            balloon: std::sync::OnceLock::new(),
            events: None,
        })
    }

    /// The devices given a `bootindex=`, in the order they were built.
    pub fn boot_devices(&self) -> Vec<bootorder::BootDevice> {
        crate::sync::lock(&self.boot_devices).clone()
    }

    /// The devices built from `-device`, in creation order.
    pub fn peripherals(&self) -> Vec<Peripheral> {
        crate::sync::lock(&self.peripherals).clone()
    }

    pub fn nics(&self) -> Vec<Arc<nic::Nic>> {
        crate::sync::lock(&self.nics).clone()
    }

    pub fn balloon(&self) -> Option<&balloon::Balloon> {
        self.balloon.get()
    }

    /// The KVM memory slots (set by [`DeviceManager::realize`]).
    pub fn memory(&self) -> Option<&MemoryMap> {
        self.pci.chipset.memory.get()
    }

    /// Wires every device to `vm` (a new or rebuilt VM).
    pub fn attach(&self, vm: Arc<VmFd>) -> Result<(), VmmError> {
        self.wiring.attach(vm)
    }

    /// Releases every device's KVM wiring from the current VM.
    pub fn detach(&self) -> Result<(), VmmError> {
        self.wiring.detach()
    }

    /// The functions to build in [`DeviceManager::realize`]; `events`
    /// receives what their timers report (a watchdog's expiry).
    pub fn plan_pci(&mut self, plans: Vec<PciPlan>, events: Arc<ControlSender>) {
        self.planned.extend(plans);
        self.events = Some(events);
    }

    /// Builds the memory slots over `mem` (and the BIOS `rom`, for a
    /// firmware boot) and the planned devices; on direct boot, programs the
    /// chipset and every BAR.
    pub fn realize(&mut self, mem: &GuestMemoryMmap, rom: Option<BiosRom>) -> Result<(), VmmError> {
        let pam = *crate::sync::lock(&self.pci.chipset.pam);
        let memory = MemoryMap::new(mem, rom, pam)?;
        let area = PamArea::new(
            self.pci.chipset.pam.clone(),
            memory.rom_alias(),
            mem.clone(),
        );
        legacy::insert(
            &self.mmio,
            Arc::new(Mutex::new(area)),
            pam::PAM_START,
            pam::PAM_END - pam::PAM_START,
        )?;
        if self.pci.chipset.memory.set(memory).is_err() {
            return Err(VmmError::Device("devices realized twice".into()));
        }
        for p in std::mem::take(&mut self.planned) {
            let loc = p.location.clone();
            self.add_planned(mem, p.model, p.qom_path)
                .map_err(|e| VmmError::Config(format!("{loc}: {e}")))?;
        }
        if let Some(spec) = &self.firmware {
            let first = spec.boot.once.as_deref().unwrap_or(&spec.boot.order);
            self.set_cmos_boot_order(first);
            let f = firmware::fw_cfg(
                spec,
                mem.clone(),
                &self.boot_devices(),
                self.pci.root.clone(),
            )?;
            let f = Arc::new(Mutex::new(f));
            legacy::insert(
                &self.pio,
                f.clone(),
                fw_cfg::FW_CFG_PORT,
                fw_cfg::FW_CFG_PORT_LEN,
            )?;
            self.fw_cfg = Some(f);
        }
        self.program_like_firmware()
    }

    /// `-boot order=` where SeaBIOS reads it (CMOS NVRAM, kept across resets).
    fn set_cmos_boot_order(&self, order: &str) {
        let (b1, b2) = firmware::cmos_boot_order(order);
        let mut cmos = crate::sync::lock(&self.legacy.cmos);
        cmos.set_cmos_byte(0x3d, b1);
        cmos.set_cmos_byte(0x38, b2);
    }

    /// Direct boot has no firmware: program the chipset and every BAR as
    /// SeaBIOS would. A firmware boot leaves that to the firmware.
    fn program_like_firmware(&self) -> Result<(), VmmError> {
        if self.firmware.is_some() {
            return Ok(());
        }
        self.pci.program_like_firmware(self.acpi)
    }

    /// Machine reset: every device back to its power-on state (what a PC
    /// keeps, such as CMOS NVRAM, survives); on direct boot the chipset and
    /// BARs are programmed again.
    pub fn reset(&self) -> Result<(), VmmError> {
        self.legacy.reset();
        self.pci.reset();
        if let Some(f) = &self.fw_cfg {
            crate::sync::lock(f).reset();
        }
        if let Some(spec) = &self.firmware {
            // `-boot once=` was for the first boot only.
            self.set_cmos_boot_order(&spec.boot.order);
        }
        self.program_like_firmware()
    }

    /// The VM stops: returns once every device has drained its in-flight
    /// requests; until [`DeviceManager::resume`] no backend runs.
    pub fn pause(&self) {
        self.backend.handle().pause();
    }

    pub fn resume(&self) {
        self.backend.handle().resume();
    }

    pub fn backend(&self) -> &BackendHandle {
        self.backend.handle()
    }
}
