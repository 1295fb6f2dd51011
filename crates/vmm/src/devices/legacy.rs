//! The PC's legacy ISA/ACPI devices at their fixed ports (docs/platform.md).

use std::io::Write;
use std::sync::{Arc, Mutex};

use std::os::fd::AsRawFd;

use devices::bus::{Bus, BusDevice};
use devices::debugcon::DebugCon;
use devices::pvpanic::{PvPanicFn, PvPanicIsa, PVPANIC_ISA_LEN};
use devices::{AcpiPm, Cmos, GuestRequestFn, IgnoredPort, Serial, I8042};
use vmm_sys_util::eventfd::EventFd;

use super::kvm_wiring::KvmWiring;
use super::rtc::RtcSpec;
use crate::backend::GuestClock;
use crate::backend::{BackendHandle, Subscriber};
use crate::error::VmmError;
use crate::sync::lock;

pub const COM1_PORT: u64 = 0x3f8;
const COM1_GSI: u32 = 4;
const CMOS_PORT: u64 = 0x70;
const I8042_DATA_PORT: u64 = 0x60;
const POST_PORT: u64 = 0x80;
const ACPI_SCI_GSI: u32 = 9;
const RTC_GSI: u32 = 8;
const KBD_GSI: u32 = 1;

pub struct LegacySpec {
    pub mem_below_4g: u64,
    pub mem_above_4g: u64,
    pub cpus: u8,
    /// Where COM1's output goes; `None` leaves COM1 out (`-serial none`).
    pub serial_out: Option<Box<dyn Write + Send>>,
    /// The CMOS clock (`-rtc`) and where its RTC_CHANGE goes.
    pub rtc: RtcSpec,
    /// `-device isa-debugcon` ports.
    pub debugcons: Vec<crate::console::DebugConSpec>,
    /// A (key-less) PS/2 keyboard behind the i8042, as QEMU always has.
    /// Firmware boot wants it: SeaBIOS waits seconds for an absent keyboard
    /// to answer its reset. Direct boot leaves it out, which spares Linux's
    /// atkbd probe in emulated ring 0.
    pub keyboard: bool,
    /// `-device pvpanic`s: port, `events`, and where a panic goes.
    pub pvpanic: Vec<(u16, u8, PvPanicFn)>,
}

/// The legacy devices, shared with the vCPUs through the buses.
pub struct LegacyDevices {
    pub serial: Option<Arc<Mutex<Serial>>>,
    pub cmos: Arc<Mutex<Cmos>>,
    pub acpi_pm: Arc<Mutex<AcpiPm>>,
    pub i8042: Arc<Mutex<I8042>>,
    serial_irq: EventFd,
    kbd_irq: Option<EventFd>,
    sci: EventFd,
    sci_resample: EventFd,
    rtc_irq: EventFd,
}

fn eventfd() -> Result<EventFd, VmmError> {
    EventFd::new(libc::EFD_NONBLOCK).map_err(VmmError::Io)
}

pub(super) fn insert(
    bus: &Bus,
    dev: Arc<Mutex<dyn BusDevice>>,
    base: u64,
    len: u64,
) -> Result<(), VmmError> {
    bus.insert(dev, base, len)
        .map_err(|e| VmmError::Device(e.to_string()))
}

impl LegacyDevices {
    /// Creates the devices and puts them on `pio`; `guest_clock` is the
    /// backend's virtual clock (`-rtc clock=vm` runs on it).
    pub fn new(
        spec: LegacySpec,
        requests: GuestRequestFn,
        pio: &Bus,
        guest_clock: GuestClock,
    ) -> Result<Self, VmmError> {
        let serial_irq = eventfd()?;
        let sci = eventfd()?;
        let rtc_irq = eventfd()?;

        let serial = match spec.serial_out {
            Some(out) => {
                let s = Arc::new(Mutex::new(Serial::new(serial_irq.try_clone()?, out)));
                insert(pio, s.clone(), COM1_PORT, 8)?;
                Some(s)
            }
            None => None,
        };
        let mut cmos = super::rtc::cmos(
            spec.mem_below_4g,
            spec.mem_above_4g,
            spec.cpus,
            spec.rtc,
            guest_clock,
        );
        cmos.enable_irq(rtc_irq.try_clone()?)?;
        let cmos = Arc::new(Mutex::new(cmos));
        insert(pio, cmos.clone(), CMOS_PORT, 2)?;
        let kbd_irq = if spec.keyboard {
            Some(eventfd()?)
        } else {
            None
        };
        let i8042 = match &kbd_irq {
            Some(fd) => I8042::with_keyboard(requests.clone(), fd.try_clone()?),
            None => I8042::new(requests.clone()),
        };
        let i8042 = Arc::new(Mutex::new(i8042));
        insert(pio, i8042.clone(), I8042_DATA_PORT, 5)?;
        insert(pio, Arc::new(Mutex::new(IgnoredPort)), POST_PORT, 1)?;
        for d in spec.debugcons {
            let dev = DebugCon::new(d.output, d.readback);
            insert(pio, Arc::new(Mutex::new(dev)), u64::from(d.iobase), 1)?;
        }
        for (port, events, report) in spec.pvpanic {
            let dev = PvPanicIsa::new(events, report);
            insert(
                pio,
                Arc::new(Mutex::new(dev)),
                u64::from(port),
                PVPANIC_ISA_LEN,
            )?;
        }
        // Mapped where the LPC bridge's PMBASE says (devices::chipset).
        let acpi_pm = Arc::new(Mutex::new(AcpiPm::new(sci.try_clone()?, requests)));
        Ok(Self {
            serial,
            cmos,
            acpi_pm,
            i8042,
            serial_irq,
            kbd_irq,
            sci,
            sci_resample: eventfd()?,
            rtc_irq,
        })
    }

    /// Their interrupt lines (COM1 and the RTC edge-triggered, the SCI
    /// level-triggered with a resample fd), and the RTC timer and the SCI
    /// resample served on the backend thread.
    pub fn wire(&self, wiring: &KvmWiring, backend: &BackendHandle) -> Result<(), VmmError> {
        wiring.add_irqfd(COM1_GSI, &self.serial_irq)?;
        wiring.add_irqfd(RTC_GSI, &self.rtc_irq)?;
        if let Some(fd) = &self.kbd_irq {
            wiring.add_irqfd(KBD_GSI, fd)?;
        }
        wiring.add_level_irqfd(ACPI_SCI_GSI, &self.sci, &self.sci_resample)?;
        if let Some(fd) = lock(&self.cmos).timer_fd() {
            backend.watch(fd, 0, Arc::new(Mutex::new(RtcTimer(self.cmos.clone()))));
        }
        backend.watch(
            self.sci_resample.as_raw_fd(),
            0,
            Arc::new(Mutex::new(SciResample {
                pm: self.acpi_pm.clone(),
                fd: self.sci_resample.try_clone()?,
            })),
        );
        Ok(())
    }

    /// Machine reset: devices return to power-on state, except what a PC keeps
    /// (CMOS NVRAM and clock).
    pub fn reset(&self) {
        lock(&self.acpi_pm).reset();
        lock(&self.i8042).reset();
        lock(&self.cmos).reset();
        if let Some(s) = &self.serial {
            lock(s).reset();
        }
    }
}

/// The RTC's update/alarm/periodic timer fired.
struct RtcTimer(Arc<Mutex<Cmos>>);

impl Subscriber for RtcTimer {
    fn ready(&mut self, _: u32) {
        lock(&self.0).handle_timer();
    }
}

/// KVM dropped the SCI at the guest's EOI: raise it again if still pending.
struct SciResample {
    pm: Arc<Mutex<AcpiPm>>,
    fd: EventFd,
}

impl Subscriber for SciResample {
    fn ready(&mut self, _: u32) {
        if self.fd.read().is_ok() {
            lock(&self.pm).sci_resample();
        }
    }
}
