//! QEMU's pvpanic devices (hw/misc/pvpanic.c): a register the guest writes
//! when it panics (Linux drivers/misc/pvpanic), reading back the events the
//! device supports.
//!
//! - [`PvPanicIsa`]: `-device pvpanic`, one I/O port (0x505 by default;
//!   hw/misc/pvpanic-isa.c). The DSDT's `QEMU0001` device and the fw_cfg
//!   file `etc/pvpanic-port` are the machine's to build.
//! - [`pci::PvPanicPci`]: `-device pvpanic-pci` (hw/misc/pvpanic-pci.c).
//!
//! A write reports at most one event (QEMU `handle_event`): bit 0
//! (`PVPANIC_PANICKED`) wins over bit 1 (`PVPANIC_CRASH_LOADED`); other bits
//! are ignored (and logged once). The `events` property only changes what
//! reads return, not what writes report. The region is byte-wide
//! (`impl.max_access_size = 1`): a wider access is served byte by byte, each
//! byte a write of its own. What a panic does (`-action panic=`) is the
//! machine's business: the device hands it a [`PvPanicEvent`].

pub mod pci;

use std::sync::Arc;

use crate::bus::BusDevice;

pub use pci::PvPanicPci;

/// include/standard-headers/linux/pvpanic.h.
pub const PVPANIC_PANICKED: u8 = 1 << 0;
pub const PVPANIC_CRASH_LOADED: u8 = 1 << 1;
/// QEMU's default `events` property: both.
pub const PVPANIC_EVENTS_DEFAULT: u8 = PVPANIC_PANICKED | PVPANIC_CRASH_LOADED;
/// QEMU's default `ioport` of the ISA device.
pub const PVPANIC_ISA_PORT: u16 = 0x505;
pub const PVPANIC_ISA_LEN: u64 = 1;

/// What the guest reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PvPanicEvent {
    /// QEMU `qemu_system_guest_panicked`: GUEST_PANICKED and the panic action.
    Panicked,
    /// QEMU `qemu_system_guest_crashloaded`: GUEST_CRASHLOADED.
    CrashLoaded,
}

/// How a pvpanic device hands an event to the machine. Called on a vCPU
/// thread with the device lock held: it must not block.
pub type PvPanicFn = Arc<dyn Fn(PvPanicEvent) + Send + Sync>;

/// The event a written byte reports, as QEMU's `handle_event` decides.
pub fn decode_event(byte: u8) -> Option<PvPanicEvent> {
    if byte & PVPANIC_PANICKED != 0 {
        Some(PvPanicEvent::Panicked)
    } else if byte & PVPANIC_CRASH_LOADED != 0 {
        Some(PvPanicEvent::CrashLoaded)
    } else {
        None
    }
}

/// The register both devices share (QEMU `PVPanicState` and its ops).
pub(crate) struct PvPanicCore {
    events: u8,
    report: PvPanicFn,
    logged_unknown: bool,
}

impl PvPanicCore {
    pub(crate) fn new(events: u8, report: PvPanicFn) -> Self {
        Self {
            events,
            report,
            logged_unknown: false,
        }
    }

    fn handle(&mut self, byte: u8) {
        if byte & !PVPANIC_EVENTS_DEFAULT != 0 && !self.logged_unknown {
            log::warn!("pvpanic: unknown event {byte:#x}.");
            self.logged_unknown = true;
        }
        if let Some(e) = decode_event(byte) {
            (self.report)(e);
        }
    }

    /// An access to a region of `len` bytes. QEMU refuses unaligned accesses
    /// (no `valid.unaligned`): reads 0, writes dropped. Bytes past the region
    /// read 0 and are not written (unassigned memory).
    pub(crate) fn read(&self, len: u64, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if aligned(offset, data.len()) {
            for (i, b) in data.iter_mut().enumerate() {
                if offset.checked_add(i as u64).is_some_and(|o| o < len) {
                    *b = self.events;
                }
            }
        }
    }

    pub(crate) fn write(&mut self, len: u64, offset: u64, data: &[u8]) {
        if !aligned(offset, data.len()) {
            return;
        }
        for (i, &b) in data.iter().enumerate() {
            if offset.checked_add(i as u64).is_some_and(|o| o < len) {
                self.handle(b);
            }
        }
    }
}

fn aligned(offset: u64, len: usize) -> bool {
    len == 0 || (len.is_power_of_two() && offset.is_multiple_of(len as u64))
}

/// `-device pvpanic`: the port at [`PVPANIC_ISA_PORT`] (length
/// [`PVPANIC_ISA_LEN`]).
pub struct PvPanicIsa {
    core: PvPanicCore,
}

impl PvPanicIsa {
    /// `events`: what reads return (QEMU's `events` property,
    /// [`PVPANIC_EVENTS_DEFAULT`]); `report` hears every event.
    pub fn new(events: u8, report: PvPanicFn) -> Self {
        Self {
            core: PvPanicCore::new(events, report),
        }
    }
}

impl BusDevice for PvPanicIsa {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        self.core.read(PVPANIC_ISA_LEN, offset, data);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        self.core.write(PVPANIC_ISA_LEN, offset, data);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::Mutex;

    pub(crate) fn recorder() -> (PvPanicFn, Arc<Mutex<Vec<PvPanicEvent>>>) {
        let log = Arc::new(Mutex::new(Vec::new()));
        let l = log.clone();
        (Arc::new(move |e| l.lock().unwrap().push(e)), log)
    }

    #[test]
    fn reads_return_the_supported_events() {
        let (f, _) = recorder();
        let mut d = PvPanicIsa::new(PVPANIC_EVENTS_DEFAULT, f.clone());
        let mut b = [0u8; 1];
        d.read(0, &mut b);
        assert_eq!(b, [3]);
        let mut d = PvPanicIsa::new(PVPANIC_PANICKED, f);
        d.read(0, &mut b);
        assert_eq!(b, [1], "the events property");
    }

    #[test]
    fn each_bit_reports_its_event_and_panicked_wins() {
        let (f, log) = recorder();
        let mut d = PvPanicIsa::new(PVPANIC_EVENTS_DEFAULT, f);
        d.write(0, &[0x01]);
        d.write(0, &[0x02]);
        d.write(0, &[0x03]);
        d.write(0, &[0x00]);
        d.write(0, &[0xfc]);
        d.write(0, &[0xfe]);
        use PvPanicEvent::*;
        assert_eq!(
            *log.lock().unwrap(),
            vec![Panicked, CrashLoaded, Panicked, CrashLoaded]
        );
    }

    #[test]
    fn writes_report_even_events_not_advertised() {
        // QEMU's handle_event does not look at the events property.
        let (f, log) = recorder();
        let mut d = PvPanicIsa::new(0, f);
        d.write(0, &[PVPANIC_CRASH_LOADED]);
        assert_eq!(*log.lock().unwrap(), vec![PvPanicEvent::CrashLoaded]);
    }

    #[test]
    fn garbage_never_panics() {
        let (f, _) = recorder();
        let mut d = PvPanicIsa::new(PVPANIC_EVENTS_DEFAULT, f);
        crate::testutil::hammer(&mut d, PVPANIC_ISA_LEN);
    }
}
