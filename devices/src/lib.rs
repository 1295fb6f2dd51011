//! Device models for ferrovm's x86_64 machine.
//!
//! Every model implements [`bus::BusDevice`] and is unit-tested without KVM.
//! Models never act on the machine directly: they report what the guest asked
//! for through a [`GuestRequestFn`], and the machine's owner decides.
//!
//! The models (port and memory layout: docs/platform.md):
//! - [`serial::Serial`]: 16550 UART (COM1, 0x3f8, IRQ 4) over `vm_superio::Serial`.
//! - [`cmos::Cmos`]: MC146818 RTC and NVRAM (0x70/0x71, IRQ 8), QEMU's memory-size bytes.
//! - [`i8042::I8042`]: PS/2 controller (0x60/0x64) for probing and reset, optional keyboard.
//! - [`acpi_pm::AcpiPm`]: ACPI fixed hardware at 0x600: PM1 event/control, PM timer, GPE0.
//! - [`pci::PciRoot`], [`pci::PciConfigIo`], [`pci::PciConfigMmio`]: bus 0 with the host
//!   bridge, reached through 0xcf8/0xcfc (plus RST_CNT at 0xcf9) and through ECAM; BARs,
//!   capabilities, MSI-X ([`pci::Msix`]) and `query-pci` information ([`pci::info`]).
//! - [`virtio::pci::VirtioPciDevice`]: the virtio-pci modern transport for any
//!   [`virtio::VirtioDevice`].
//! - [`post::IgnoredPort`]: a port that exists but does nothing (0x80 POST, 0xed delay).
//! - [`chipset`]: q35's MCH (PAM, PCIEXBAR) and ICH9 LPC bridge (PMBASE), and the PAM
//!   area's exit handler; register changes are reported as [`chipset::ChipsetEvent`]s.
//! - [`fw_cfg::FwCfg`]: QEMU's firmware configuration device (0x510-0x51b, DMA).
//! - [`debugcon::DebugCon`]: QEMU's isa-debugcon (SeaBIOS logs to port 0x402).
//! - [`watchdog::I6300Esb`]: the i6300esb PCI watchdog, on a caller-supplied virtual clock.
//! - [`pvpanic::PvPanicIsa`] (port 0x505) and [`pvpanic::PvPanicPci`]: guest panic
//!   notification, reported as [`pvpanic::PvPanicEvent`]s.
//! - [`usb::xhci::XhciPci`]: QEMU's qemu-xhci USB 3 host controller, with no USB devices.

pub mod acpi_pm;
pub mod bus;
pub mod chipset;
pub mod cmos;
pub mod debugcon;
pub mod fw_cfg;
pub mod i8042;
pub mod interrupt;
pub mod pci;
pub mod post;
pub mod pvpanic;
pub mod serial;
pub mod usb;
pub mod virtio;
pub mod watchdog;

pub use acpi_pm::AcpiPm;
pub use cmos::Cmos;
pub use i8042::I8042;
pub use pci::{
    BarObserver, BarWindow, FunctionOptions, HostBridge, PciAddress, PciConfigIo, PciConfigMmio,
    PciConfigSpace, PciDevice, PciError, PciRoot, PciWindows, SharedPciDevice,
};
pub use post::IgnoredPort;
pub use serial::Serial;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

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

/// A source of time, injected into the models that need one so tests can fix it.
pub trait Clock: Send {
    /// Nanoseconds since the clock's epoch.
    fn now_ns(&self) -> i128;
}

/// Host UTC wall-clock time: nanoseconds since the Unix epoch (CLOCK_REALTIME).
#[derive(Debug, Default, Clone, Copy)]
pub struct WallClock;

impl Clock for WallClock {
    fn now_ns(&self) -> i128 {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_nanos() as i128,
            Err(e) => -(e.duration().as_nanos() as i128),
        }
    }
}

/// Host monotonic time: nanoseconds since this value was created.
#[derive(Debug, Clone, Copy)]
pub struct MonotonicClock(Instant);

impl MonotonicClock {
    pub fn new() -> Self {
        Self(Instant::now())
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for MonotonicClock {
    fn now_ns(&self) -> i128 {
        self.0.elapsed().as_nanos() as i128
    }
}

/// Host UTC read once, at creation, plus what `elapsed` counts from then on:
/// the RTC's time base for `-rtc clock=rt` (a [`MonotonicClock`]) and
/// `clock=vm` (the guest's virtual clock, which stands while the VM is
/// paused). QEMU softmmu/rtc.c `qemu_ref_timedate` does the same with
/// QEMU_CLOCK_REALTIME / QEMU_CLOCK_VIRTUAL and `rtc_ref_start_datetime`.
#[derive(Debug, Clone)]
pub struct EpochClock<C> {
    start_ns: i128,
    elapsed: C,
}

impl<C: Clock> EpochClock<C> {
    pub fn new(elapsed: C) -> Self {
        Self::starting_at(WallClock.now_ns(), elapsed)
    }

    /// Reads `start_ns` when `elapsed` shows its present value.
    pub fn starting_at(start_ns: i128, elapsed: C) -> Self {
        let start_ns = start_ns - elapsed.now_ns();
        Self { start_ns, elapsed }
    }
}

impl<C: Clock> Clock for EpochClock<C> {
    fn now_ns(&self) -> i128 {
        self.start_ns + self.elapsed.now_ns()
    }
}

/// A clock that moves only when told to; clones share the same time. For tests.
#[derive(Debug, Default, Clone)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    pub fn new(ns: i64) -> Self {
        Self(Arc::new(AtomicI64::new(ns)))
    }
    pub fn set_ns(&self, ns: i64) {
        self.0.store(ns, Ordering::SeqCst);
    }
    pub fn advance_ns(&self, ns: i64) {
        self.0.fetch_add(ns, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ns(&self) -> i128 {
        self.0.load(Ordering::SeqCst) as i128
    }
}

/// Reads a register file of byte registers: an access wider than a byte is
/// served as consecutive byte accesses, the way the ISA bridge splits it (and
/// QEMU's memory core does for regions with `impl.max_access_size = 1`).
pub(crate) fn read_bytewise(offset: u64, data: &mut [u8], mut read: impl FnMut(u64) -> u8) {
    for (i, b) in data.iter_mut().enumerate() {
        *b = offset.checked_add(i as u64).map_or(0xff, &mut read);
    }
}

/// Write counterpart of [`read_bytewise`].
pub(crate) fn write_bytewise(offset: u64, data: &[u8], mut write: impl FnMut(u64, u8)) {
    for (i, &b) in data.iter().enumerate() {
        if let Some(o) = offset.checked_add(i as u64) {
            write(o, b);
        }
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    use super::*;
    use crate::bus::BusDevice;
    use std::sync::Mutex;

    /// Every offset in `0..len` plus a few beyond (the bus never sends those,
    /// but a device must survive them), every width, a spread of values.
    pub fn hammer(dev: &mut dyn BusDevice, len: u64) {
        let offsets = (0..len).chain([len, len + 1, len + 7, 0x1_0000, u64::MAX - 8, u64::MAX]);
        for off in offsets {
            for width in [1usize, 2, 4, 8] {
                for value in [
                    0u64,
                    u64::MAX,
                    0x5555_5555_5555_5555,
                    0xaaaa_aaaa_aaaa_aaaa,
                    0x0e06_fe01_d1aa_6020,
                ] {
                    let mut buf = [0u8; 8];
                    dev.read(off, &mut buf[..width]);
                    dev.write(off, &value.to_le_bytes()[..width]);
                    dev.read(off, &mut buf[..width]);
                }
            }
        }
        dev.read(0, &mut []);
        dev.write(0, &[]);
    }

    /// A GuestRequestFn that records what it was asked.
    pub fn recorder() -> (GuestRequestFn, Arc<Mutex<Vec<GuestRequest>>>) {
        let log = Arc::new(Mutex::new(Vec::new()));
        let l = log.clone();
        (Arc::new(move |r| l.lock().unwrap().push(r)), log)
    }
}
