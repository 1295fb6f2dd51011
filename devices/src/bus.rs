//! Address-range bus: maps guest port-I/O or MMIO addresses to device models.
//!
//! The bus is built once before the vCPUs start and is then shared read-only
//! (`Arc<Bus>`) by every vCPU thread; each device sits behind its own mutex so
//! two vCPUs touching different devices never contend.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// A device model reachable through a [`Bus`].
///
/// `offset` is relative to the base address the device was inserted at; the
/// access width is `data.len()` (1, 2, 4 or 8 bytes). Devices must tolerate any
/// offset and width inside their range: the guest chooses both.
pub trait BusDevice: Send {
    fn read(&mut self, offset: u64, data: &mut [u8]);
    fn write(&mut self, offset: u64, data: &[u8]);
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    #[error("bus range {base:#x}+{len:#x} is empty")]
    EmptyRange { base: u64, len: u64 },
    #[error("bus range {base:#x}+{len:#x} overflows the address space")]
    Overflow { base: u64, len: u64 },
    #[error("bus range {base:#x}+{len:#x} overlaps a device at {other:#x}")]
    Overlap { base: u64, len: u64, other: u64 },
}

pub type SharedDevice = Arc<Mutex<dyn BusDevice>>;

#[derive(Clone)]
struct Range {
    len: u64,
    device: SharedDevice,
}

/// Non-overlapping ranges keyed by base address.
#[derive(Default, Clone)]
pub struct Bus {
    ranges: BTreeMap<u64, Range>,
}

impl Bus {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, device: SharedDevice, base: u64, len: u64) -> Result<(), BusError> {
        if len == 0 {
            return Err(BusError::EmptyRange { base, len });
        }
        let end = base
            .checked_add(len - 1)
            .ok_or(BusError::Overflow { base, len })?;
        // The closest range starting at or before our end is the only one that can overlap.
        if let Some((&other, r)) = self.ranges.range(..=end).next_back() {
            if other + (r.len - 1) >= base {
                return Err(BusError::Overlap { base, len, other });
            }
        }
        self.ranges.insert(base, Range { len, device });
        Ok(())
    }

    fn resolve(&self, addr: u64, width: usize) -> Option<(u64, &SharedDevice)> {
        let (&base, r) = self.ranges.range(..=addr).next_back()?;
        let offset = addr - base;
        // The whole access must fall inside the range; a straddling access hits nothing.
        (offset.checked_add(width as u64)? <= r.len).then_some((offset, &r.device))
    }

    /// Reads from the device at `addr`. Returns false, with `data` set to all
    /// ones (what an unclaimed bus returns on PC hardware), when nothing is there.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.resolve(addr, data.len()) {
            Some((offset, dev)) => {
                lock(dev).read(offset, data);
                true
            }
            None => {
                data.fill(0xff);
                false
            }
        }
    }

    /// Writes to the device at `addr`; returns false when nothing is there.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.resolve(addr, data.len()) {
            Some((offset, dev)) => {
                lock(dev).write(offset, data);
                true
            }
            None => false,
        }
    }
}

/// A device whose lock was poisoned by a panic is still used: the panic has
/// already been reported, and the machine keeps serving the other devices.
fn lock(dev: &SharedDevice) -> std::sync::MutexGuard<'_, dyn BusDevice + 'static> {
    dev.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo(Vec<(u64, Vec<u8>)>);
    impl BusDevice for Echo {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.0.push((offset, data.to_vec()));
        }
    }

    fn echo() -> Arc<Mutex<Echo>> {
        Arc::new(Mutex::new(Echo(Vec::new())))
    }

    #[test]
    fn routes_by_offset_inside_range() {
        let mut bus = Bus::new();
        let d = echo();
        bus.insert(d.clone(), 0x3f8, 8).unwrap();
        let mut b = [0u8; 1];
        assert!(bus.read(0x3fd, &mut b));
        assert_eq!(b, [5]);
        assert!(bus.write(0x3f8, &[0x41]));
        assert_eq!(d.lock().unwrap().0, vec![(0, vec![0x41])]);
    }

    #[test]
    fn unclaimed_reads_all_ones_and_straddling_access_misses() {
        let mut bus = Bus::new();
        bus.insert(echo(), 0x10, 4).unwrap();
        let mut b = [0u8; 4];
        assert!(!bus.read(0x0, &mut b));
        assert_eq!(b, [0xff; 4]);
        assert!(
            !bus.read(0x12, &mut b),
            "4-byte read at 0x12 straddles the end"
        );
        assert!(!bus.write(0x14, &[1]));
    }

    #[test]
    fn rejects_overlap_empty_and_overflow() {
        let mut bus = Bus::new();
        bus.insert(echo(), 0x100, 0x10).unwrap();
        assert_eq!(
            bus.insert(echo(), 0x10f, 1),
            Err(BusError::Overlap {
                base: 0x10f,
                len: 1,
                other: 0x100
            })
        );
        assert!(matches!(
            bus.insert(echo(), 0xf8, 9),
            Err(BusError::Overlap { .. })
        ));
        assert!(
            bus.insert(echo(), 0xf8, 8).is_ok(),
            "adjacent ranges are fine"
        );
        assert!(matches!(
            bus.insert(echo(), 0x0, 0),
            Err(BusError::EmptyRange { .. })
        ));
        assert!(matches!(
            bus.insert(echo(), u64::MAX, 2),
            Err(BusError::Overflow { .. })
        ));
    }
}
