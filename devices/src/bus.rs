//! Address-range bus: maps guest port-I/O or MMIO addresses to device models.
//!
//! The bus is shared (`Arc<Bus>`) by every vCPU thread. The range map sits
//! behind a `RwLock`: lookups take the read lock just long enough to clone the
//! device's `Arc`, so a vCPU never holds the map while it waits for (or runs
//! in) a device, and a guest moving a PCI BAR (which removes and re-inserts a
//! range with the write lock, see `pci::root`) never deadlocks against a vCPU
//! inside that very device. Each device sits behind its own mutex so two vCPUs
//! touching different devices never contend.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

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
    #[error("no bus range starts at {base:#x}")]
    NotFound { base: u64 },
}

pub type SharedDevice = Arc<Mutex<dyn BusDevice>>;

#[derive(Clone)]
struct Range {
    len: u64,
    device: SharedDevice,
}

/// Non-overlapping ranges keyed by base address, changeable while in use.
#[derive(Default)]
pub struct Bus {
    ranges: RwLock<BTreeMap<u64, Range>>,
}

/// Inclusive end of `base+len`, or why the range is unusable.
fn range_end(base: u64, len: u64) -> Result<u64, BusError> {
    if len == 0 {
        return Err(BusError::EmptyRange { base, len });
    }
    base.checked_add(len - 1)
        .ok_or(BusError::Overflow { base, len })
}

/// The base of a range in `ranges` that overlaps `base..=end`, ignoring `except`.
fn overlapping(
    ranges: &BTreeMap<u64, Range>,
    base: u64,
    end: u64,
    except: Option<u64>,
) -> Option<u64> {
    // Ranges never overlap each other, so only the closest ones starting at or
    // before `end` can reach `base`; skip the one being replaced.
    ranges
        .range(..=end)
        .rev()
        .find(|(&b, _)| Some(b) != except)
        .filter(|(&b, r)| b + (r.len - 1) >= base)
        .map(|(&b, _)| b)
}

impl Bus {
    pub fn new() -> Self {
        Self::default()
    }

    fn map(&self) -> RwLockReadGuard<'_, BTreeMap<u64, Range>> {
        // A poisoned map is still consistent: every mutation is a single
        // BTreeMap call that does not run device code.
        self.ranges.read().unwrap_or_else(|e| e.into_inner())
    }

    fn map_mut(&self) -> RwLockWriteGuard<'_, BTreeMap<u64, Range>> {
        self.ranges.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds `device` at `base..base+len`.
    pub fn insert(&self, device: SharedDevice, base: u64, len: u64) -> Result<(), BusError> {
        let end = range_end(base, len)?;
        let mut ranges = self.map_mut();
        if let Some(other) = overlapping(&ranges, base, end, None) {
            return Err(BusError::Overlap { base, len, other });
        }
        ranges.insert(base, Range { len, device });
        Ok(())
    }

    /// Removes the range starting exactly at `base`; returns its device and length.
    pub fn remove(&self, base: u64) -> Result<(SharedDevice, u64), BusError> {
        self.map_mut()
            .remove(&base)
            .map(|r| (r.device, r.len))
            .ok_or(BusError::NotFound { base })
    }

    /// Moves the range starting at `old_base` to `new_base..new_base+new_len`
    /// in one step: no access in between sees neither (or both). On error the
    /// old range stays where it was.
    pub fn update(&self, old_base: u64, new_base: u64, new_len: u64) -> Result<(), BusError> {
        let end = range_end(new_base, new_len)?;
        let mut ranges = self.map_mut();
        if !ranges.contains_key(&old_base) {
            return Err(BusError::NotFound { base: old_base });
        }
        if let Some(other) = overlapping(&ranges, new_base, end, Some(old_base)) {
            return Err(BusError::Overlap {
                base: new_base,
                len: new_len,
                other,
            });
        }
        if let Some(mut r) = ranges.remove(&old_base) {
            r.len = new_len;
            ranges.insert(new_base, r);
        }
        Ok(())
    }

    /// The range containing `addr`: (base, len, device).
    pub fn get(&self, addr: u64) -> Option<(u64, u64, SharedDevice)> {
        let ranges = self.map();
        let (&base, r) = ranges.range(..=addr).next_back()?;
        (addr - base < r.len).then(|| (base, r.len, r.device.clone()))
    }

    fn resolve(&self, addr: u64, width: usize) -> Option<(u64, SharedDevice)> {
        let ranges = self.map();
        let (&base, r) = ranges.range(..=addr).next_back()?;
        let offset = addr - base;
        // The whole access must fall inside the range; a straddling access hits nothing.
        (offset.checked_add(width as u64)? <= r.len).then(|| (offset, r.device.clone()))
    }

    /// Reads from the device at `addr`. Returns false, with `data` set to all
    /// ones (what an unclaimed bus returns on PC hardware), when nothing is there.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.resolve(addr, data.len()) {
            Some((offset, dev)) => {
                lock(&dev).read(offset, data);
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
                lock(&dev).write(offset, data);
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
        let bus = Bus::new();
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
        let bus = Bus::new();
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
        let bus = Bus::new();
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

    #[test]
    fn remove_returns_the_device_and_frees_the_range() {
        let bus = Bus::new();
        let d = echo();
        bus.insert(d.clone(), 0x1000, 0x100).unwrap();
        assert_eq!(
            bus.remove(0x1001).err(),
            Some(BusError::NotFound { base: 0x1001 })
        );
        let (dev, len) = bus.remove(0x1000).unwrap();
        assert_eq!(len, 0x100);
        assert!(Arc::ptr_eq(&dev, &(d.clone() as SharedDevice)));
        let mut b = [0u8; 1];
        assert!(!bus.read(0x1000, &mut b), "gone after remove");
        bus.insert(dev, 0x2000, 0x100).unwrap();
        assert!(bus.write(0x2004, &[9]));
        assert_eq!(d.lock().unwrap().0, vec![(4, vec![9])]);
    }

    #[test]
    fn update_moves_a_range_or_leaves_it_alone() {
        let bus = Bus::new();
        bus.insert(echo(), 0x1000, 0x100).unwrap();
        bus.insert(echo(), 0x3000, 0x100).unwrap();
        // Growing in place over itself is fine: only other ranges conflict.
        bus.update(0x1000, 0x1080, 0x100).unwrap();
        assert!(bus.get(0x1000).is_none());
        assert_eq!(
            bus.get(0x117f).map(|(b, l, _)| (b, l)),
            Some((0x1080, 0x100))
        );
        assert_eq!(
            bus.update(0x1080, 0x2f80, 0x100),
            Err(BusError::Overlap {
                base: 0x2f80,
                len: 0x100,
                other: 0x3000
            })
        );
        assert!(
            bus.get(0x1080).is_some(),
            "a refused move keeps the old range"
        );
        assert_eq!(
            bus.update(0x5000, 0x6000, 1),
            Err(BusError::NotFound { base: 0x5000 })
        );
        assert!(matches!(
            bus.update(0x1080, 0x6000, 0),
            Err(BusError::EmptyRange { .. })
        ));
    }

    /// vCPU threads keep reading a device that another thread keeps moving
    /// between two addresses: every read lands either on the device (at one of
    /// its two homes) or on nothing, never on a stale or half-updated map.
    #[test]
    fn concurrent_reads_during_remove_and_insert() {
        let bus = Arc::new(Bus::new());
        let moving = echo();
        let fixed = echo();
        bus.insert(fixed.clone(), 0x10_0000, 0x10).unwrap();
        bus.insert(moving.clone(), 0x1000, 0x10).unwrap();
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
        let stop = Arc::new(AtomicBool::new(false));
        let hits = Arc::new(AtomicU64::new(0));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (bus, stop, hits) = (bus.clone(), stop.clone(), hits.clone());
                std::thread::spawn(move || {
                    while !stop.load(Relaxed) {
                        let mut b = [0u8; 1];
                        for addr in [0x1003, 0x2003] {
                            if bus.read(addr, &mut b) {
                                assert_eq!(b, [3], "offset 3 inside the moving device");
                                hits.fetch_add(1, Relaxed);
                            } else {
                                assert_eq!(b, [0xff]);
                            }
                        }
                        assert!(
                            bus.read(0x10_0005, &mut b),
                            "the fixed device never vanishes"
                        );
                        assert_eq!(b, [5]);
                    }
                })
            })
            .collect();
        // Keep moving (an even number of times) until the readers have seen
        // the device a good number of times: the threads share 2 cores.
        let mut i = 0u64;
        while i < 2000 || hits.load(Relaxed) < 1000 || !i.is_multiple_of(4) {
            let (from, to) = if i.is_multiple_of(2) {
                (0x1000, 0x2000)
            } else {
                (0x2000, 0x1000)
            };
            if i % 4 < 2 {
                bus.update(from, to, 0x10).unwrap();
            } else {
                let (dev, len) = bus.remove(from).unwrap();
                bus.insert(dev, to, len).unwrap();
            }
            i += 1;
            if i.is_multiple_of(256) {
                std::thread::yield_now();
            }
        }
        stop.store(true, Relaxed);
        readers.into_iter().for_each(|r| r.join().unwrap());
        assert!(
            bus.get(0x1000).is_some(),
            "an even number of moves ends at home"
        );
    }
}
