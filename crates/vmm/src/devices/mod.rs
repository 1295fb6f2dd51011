//! The device manager: the machine's devices, one part per bus (the legacy
//! ISA/ACPI devices at fixed ports, and PCI bus 0), the address buses the
//! vCPUs dispatch exits to, the backend event thread that serves device
//! backends, and the one place that wires devices to KVM ([`kvm_wiring`]).
//!
//! A reset rebuilds the KVM VM: [`DeviceManager::detach`] releases every
//! irqfd, ioeventfd and route from the old VM and [`DeviceManager::attach`]
//! re-creates all of them on the new one.

pub mod kvm_wiring;
pub mod legacy;
pub mod pci;

use std::sync::Arc;

use devices::bus::Bus;
use devices::GuestRequestFn;
use kvm_ioctls::VmFd;

use crate::backend::clock::ClockMode;
use crate::backend::{Backend, BackendHandle};
use crate::error::VmmError;
use kvm_wiring::KvmWiring;
use legacy::{LegacyDevices, LegacySpec};
use pci::PciDevices;

/// What the device manager builds.
pub struct DeviceSpec {
    pub legacy: LegacySpec,
}

pub struct DeviceManager {
    pub pio: Arc<Bus>,
    pub mmio: Arc<Bus>,
    pub legacy: LegacyDevices,
    pub pci: PciDevices,
    wiring: KvmWiring,
    backend: Backend,
}

impl DeviceManager {
    pub fn new(spec: DeviceSpec, requests: GuestRequestFn) -> Result<Self, VmmError> {
        let mut pio = Bus::new();
        let mut mmio = Bus::new();
        let backend = Backend::start(ClockMode::Realtime)?;
        let wiring = KvmWiring::new();
        let legacy = LegacyDevices::new(spec.legacy, requests.clone(), &mut pio)?;
        legacy.wire(&wiring, backend.handle())?;
        let pci = PciDevices::new(requests, &mut pio, &mut mmio)?;
        Ok(Self {
            pio: Arc::new(pio),
            mmio: Arc::new(mmio),
            legacy,
            pci,
            wiring,
            backend,
        })
    }

    /// Wires every device to `vm` (a new or rebuilt VM).
    pub fn attach(&self, vm: Arc<VmFd>) -> Result<(), VmmError> {
        self.wiring.attach(vm)
    }

    /// Releases every device's KVM wiring from the current VM.
    pub fn detach(&self) -> Result<(), VmmError> {
        self.wiring.detach()
    }

    /// Machine reset: every device back to its power-on state (what a PC
    /// keeps, such as CMOS NVRAM, survives).
    pub fn reset(&self) {
        self.legacy.reset();
        self.pci.reset();
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
