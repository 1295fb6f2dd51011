//! The PC platform devices and the two buses they sit on (docs/platform.md).

use std::io::Write;
use std::sync::{Arc, Mutex};

use devices::bus::{Bus, BusDevice};
use devices::{
    AcpiPm, Cmos, GuestRequestFn, IgnoredPort, PciConfigIo, PciConfigMmio, PciRoot, Serial,
    WallClock, I8042,
};
use kvm_ioctls::VmFd;
use vmm_sys_util::eventfd::EventFd;

use crate::error::VmmError;

pub const COM1_PORT: u64 = 0x3f8;
const COM1_GSI: u32 = 4;
const CMOS_PORT: u64 = 0x70;
const I8042_DATA_PORT: u64 = 0x60;
const POST_PORT: u64 = 0x80;
const ACPI_PM_BASE: u64 = 0x600;
const ACPI_PM_LEN: u64 = devices::acpi_pm::ACPI_PM_LEN;
const ACPI_SCI_GSI: u32 = 9;
const PCI_CONFIG_PORT: u64 = 0xcf8;
pub const ECAM_BASE: u64 = 0xe000_0000;
const ECAM_SIZE: u64 = devices::pci::ECAM_SIZE;

pub struct PlatformSpec {
    pub mem_below_4g: u64,
    pub mem_above_4g: u64,
    pub cpus: u8,
    /// Where COM1's output goes; `None` leaves COM1 out (`-serial none`).
    pub serial_out: Option<Box<dyn Write + Send>>,
    /// Seconds added to host UTC for the CMOS clock (`-rtc base=`).
    pub rtc_offset: i64,
}

/// Platform devices, shared with the vCPUs through the buses.
pub struct Platform {
    pub pio: Arc<Bus>,
    pub mmio: Arc<Bus>,
    pub serial: Option<Arc<Mutex<Serial>>>,
    pub cmos: Arc<Mutex<Cmos>>,
    pub acpi_pm: Arc<Mutex<AcpiPm>>,
    pub i8042: Arc<Mutex<I8042>>,
    pub pci: Arc<Mutex<PciRoot>>,
    pci_io: Arc<Mutex<PciConfigIo>>,
    serial_irq: EventFd,
    sci: EventFd,
}

fn eventfd() -> Result<EventFd, VmmError> {
    EventFd::new(libc::EFD_NONBLOCK).map_err(VmmError::Io)
}

fn insert(
    bus: &mut Bus,
    dev: Arc<Mutex<dyn BusDevice>>,
    base: u64,
    len: u64,
) -> Result<(), VmmError> {
    bus.insert(dev, base, len)
        .map_err(|e| VmmError::Device(e.to_string()))
}

impl Platform {
    pub fn new(spec: PlatformSpec, requests: GuestRequestFn) -> Result<Self, VmmError> {
        let mut pio = Bus::new();
        let mut mmio = Bus::new();
        let serial_irq = eventfd()?;
        let sci = eventfd()?;

        let serial = match spec.serial_out {
            Some(out) => {
                let s = Arc::new(Mutex::new(Serial::new(serial_irq.try_clone()?, out)));
                insert(&mut pio, s.clone(), COM1_PORT, 8)?;
                Some(s)
            }
            None => None,
        };
        let mut cmos = Cmos::new(
            spec.mem_below_4g,
            spec.mem_above_4g,
            spec.cpus,
            Box::new(WallClock),
        );
        cmos.set_base_offset(spec.rtc_offset);
        let cmos = Arc::new(Mutex::new(cmos));
        insert(&mut pio, cmos.clone(), CMOS_PORT, 2)?;
        let i8042 = Arc::new(Mutex::new(I8042::new(requests.clone())));
        insert(&mut pio, i8042.clone(), I8042_DATA_PORT, 5)?;
        insert(&mut pio, Arc::new(Mutex::new(IgnoredPort)), POST_PORT, 1)?;
        let acpi_pm = Arc::new(Mutex::new(AcpiPm::new(sci.try_clone()?, requests.clone())));
        insert(&mut pio, acpi_pm.clone(), ACPI_PM_BASE, ACPI_PM_LEN)?;
        let pci = Arc::new(Mutex::new(PciRoot::new()));
        let pci_io = Arc::new(Mutex::new(PciConfigIo::new(pci.clone(), requests)));
        insert(&mut pio, pci_io.clone(), PCI_CONFIG_PORT, 8)?;
        insert(
            &mut mmio,
            Arc::new(Mutex::new(PciConfigMmio::new(pci.clone()))),
            ECAM_BASE,
            ECAM_SIZE,
        )?;

        Ok(Self {
            pio: Arc::new(pio),
            mmio: Arc::new(mmio),
            serial,
            cmos,
            acpi_pm,
            i8042,
            pci,
            pci_io,
            serial_irq,
            sci,
        })
    }

    pub fn register_irqfds(&self, vm: &VmFd) -> Result<(), VmmError> {
        vm.register_irqfd(&self.serial_irq, COM1_GSI)
            .map_err(|e| VmmError::Kvm("KVM_IRQFD (COM1)", e))?;
        vm.register_irqfd(&self.sci, ACPI_SCI_GSI)
            .map_err(|e| VmmError::Kvm("KVM_IRQFD (SCI)", e))?;
        Ok(())
    }

    /// Detaches the interrupt eventfds from `vm` so a new VM can take them:
    /// KVM lets an eventfd drive one VM at a time, and tears down the old VM's
    /// irqfds asynchronously.
    pub fn unregister_irqfds(&self, vm: &VmFd) -> Result<(), VmmError> {
        vm.unregister_irqfd(&self.serial_irq, COM1_GSI)
            .map_err(|e| VmmError::Kvm("KVM_IRQFD deassign (COM1)", e))?;
        vm.unregister_irqfd(&self.sci, ACPI_SCI_GSI)
            .map_err(|e| VmmError::Kvm("KVM_IRQFD deassign (SCI)", e))?;
        Ok(())
    }

    /// Machine reset: devices return to power-on state, except what a PC keeps
    /// (CMOS NVRAM and clock).
    pub fn reset(&self) {
        lock(&self.acpi_pm).reset();
        lock(&self.i8042).reset();
        lock(&self.cmos).reset();
        lock(&self.pci).reset();
        lock(&self.pci_io).reset();
        if let Some(s) = &self.serial {
            lock(s).reset();
        }
    }
}

/// Device locks are only poisoned by a panic, already reported; keep going.
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
