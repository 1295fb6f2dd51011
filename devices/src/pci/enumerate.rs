//! Direct boot has no firmware: [`PciRoot::assign_bars`] does what SeaBIOS
//! does (src/fw/pciinit.c): numbers the buses depth-first
//! (`pci_bios_init_bus_rec`), sizes every bridge's I/O, memory and
//! prefetchable windows from what is behind it (`pci_bios_check_devices`:
//! 4 KiB I/O and 2 MiB memory granules, room kept for hot-plug on a root
//! port with a slot or a bridge with SHPC, the QEMU resource-reserve
//! capability honoured), places them with the BARs and programs it all
//! through configuration writes, so the buses and the BAR observer follow.

use std::cmp::Reverse;
use std::collections::BTreeMap;

use super::bar::{window_for, WindowAllocator};
use super::bridge::*;
use super::capability::{self, CAP_ID_PCIE, CAP_ID_VENDOR};
use super::root::{BusIndex, PciRoot};
use super::{
    BarKind, BarSpace, PciAddress, PciBar, PciError, PciWindows, COMMAND_IO, COMMAND_MEMORY,
};

/// SeaBIOS PCI_BRIDGE_IO_MIN and PCI_BRIDGE_MEM_MIN.
pub const BRIDGE_IO_MIN: u64 = 0x1000;
pub const BRIDGE_MEM_MIN: u64 = 2 << 20;
/// SeaBIOS PCI_DEVICE_MEM_MIN: a memory BAR behind a bridge takes a page.
const DEVICE_MEM_MIN: u64 = 0x1000;
const CAP_ID_SHPC: u8 = 0x0c;

/// The three kinds of window a bridge forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Region {
    Io,
    Memory,
    Prefetchable,
}

const REGIONS: [Region; 3] = [Region::Io, Region::Memory, Region::Prefetchable];

#[derive(Debug, Clone, Copy)]
enum Owner {
    Bar(PciBar),
    /// The window of the bridge behind which bus `.0` is.
    Window(BusIndex),
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    key: (BusIndex, u8),
    owner: Owner,
    region: Region,
    size: u64,
    align: u64,
}

/// Entries per bus, per region.
type Plan = BTreeMap<(BusIndex, Region), Vec<Entry>>;

fn region_of(kind: BarKind) -> Region {
    match kind {
        BarKind::Io => Region::Io,
        k if k.prefetchable() => Region::Prefetchable,
        _ => Region::Memory,
    }
}

/// How the bridge takes hot-plugged devices (SeaBIOS `pci_bus_hotplug_support`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hotplug {
    None,
    Pcie,
    Shpc,
}

/// The QEMU resource-reserve sizes of a bridge (SeaBIOS
/// `pci_find_resource_reserve_capability`): bus, io, mem, pref.
#[derive(Debug, Clone, Copy)]
struct Reserve {
    bus: u32,
    io: u64,
    mem: u32,
    pref32: u32,
    pref64: u64,
}

impl PciRoot {
    /// Numbers the buses, sizes and places every bridge window and BAR, as
    /// firmware would on a machine booted without it (`-kernel`): largest
    /// alignment first, I/O from `windows.io`, memory from `windows.mmio32`
    /// (64-bit BARs on pcie.0 from `windows.mmio64` when given); then
    /// enables decode on each function that got something.
    pub fn assign_bars(&mut self, windows: &PciWindows) -> Result<(), PciError> {
        let mut next = 0;
        self.number_bus(0, 0, &mut next);
        let mut plan = Plan::new();
        self.size_bus(0, &mut plan);
        let mut allocs = [
            WindowAllocator::new(windows.io, "I/O"),
            WindowAllocator::new(windows.mmio32, "32-bit MMIO"),
            WindowAllocator::new(windows.mmio64.unwrap_or((0, 0)), "64-bit MMIO"),
        ];
        // pcie.0: one list over every region, sorted as SeaBIOS sorts a
        // region (alignment, then size, both descending, stable).
        let mut root: Vec<Entry> = REGIONS
            .iter()
            .flat_map(|r| plan.remove(&(0, *r)).unwrap_or_default())
            .collect();
        root.sort_by_key(|e| (Reverse(e.align), Reverse(e.size)));
        let mut enables: BTreeMap<(BusIndex, u8), u16> = BTreeMap::new();
        let mut ordered: Vec<Entry> = Vec::new();
        // Keep the old devfn/BAR order among equals: sort is stable.
        ordered.extend(root);
        for e in ordered {
            let a = &mut allocs[match e.owner {
                Owner::Bar(b) => window_for(b.kind, windows.mmio64.is_some()),
                Owner::Window(_) if e.region == Region::Io => 0,
                Owner::Window(_) => 1,
            }];
            let base = allocate(a, e.size, e.align).ok_or_else(|| self.no_space(&e, a.name))?;
            self.place(e, base, &mut plan, &mut enables)?;
        }
        for (key, bits) in enables {
            let command = self.read_at(key, 1) as u16 | bits;
            self.write_at(key, 1, 0, &command.to_le_bytes());
        }
        Ok(())
    }

    fn no_space(&self, e: &Entry, name: &'static str) -> PciError {
        let addr = PciAddress::new(self.bus_number(e.key.0), e.key.1 >> 3, e.key.1 & 7);
        match e.owner {
            Owner::Bar(b) => super::bar::no_space(addr, &b, name),
            Owner::Window(_) => PciError::NoWindowSpace {
                addr,
                size: e.size,
                space: name,
            },
        }
    }

    /// Puts `e` at `base`: a BAR is programmed; a window is programmed and
    /// what is behind it placed inside it.
    fn place(
        &mut self,
        e: Entry,
        base: u64,
        plan: &mut Plan,
        enables: &mut BTreeMap<(BusIndex, u8), u16>,
    ) -> Result<(), PciError> {
        match e.owner {
            Owner::Bar(bar) => {
                let reg = 4 + usize::from(bar.index);
                self.write_at(e.key, reg, 0, &(base as u32).to_le_bytes());
                if bar.kind.is_64bit() {
                    self.write_at(e.key, reg + 1, 0, &((base >> 32) as u32).to_le_bytes());
                }
                *enables.entry(e.key).or_default() |= match bar.kind.space() {
                    BarSpace::Io => COMMAND_IO,
                    BarSpace::Memory => COMMAND_MEMORY,
                };
            }
            Owner::Window(child) => {
                self.program_window(e.key, e.region, base, e.size);
                if e.size > 0 {
                    *enables.entry(e.key).or_default() |= match e.region {
                        Region::Io => COMMAND_IO,
                        _ => COMMAND_MEMORY,
                    };
                }
                let mut a = WindowAllocator::new((base, base + e.size), "bridge");
                for c in plan.remove(&(child, e.region)).unwrap_or_default() {
                    let b = allocate(&mut a, c.size, c.align)
                        .ok_or_else(|| self.no_space(&c, "bridge"))?;
                    self.place(c, b, plan, enables)?;
                }
            }
        }
        Ok(())
    }

    /// Writes a bridge's base/limit registers for `[base, base + size)`; an
    /// empty window forwards nothing (base above limit).
    fn program_window(&mut self, key: (BusIndex, u8), region: Region, base: u64, size: u64) {
        let (b, l) = if size == 0 {
            (u64::MAX, 0)
        } else {
            (base, base + size - 1)
        };
        match region {
            Region::Io => {
                self.write_at(
                    key,
                    PCI_IO_BASE / 4,
                    0,
                    &[(b >> 8) as u8 & 0xf0, (l >> 8) as u8 & 0xf0],
                );
            }
            Region::Memory => {
                let v = (b >> 16) as u32 & 0xfff0 | ((l >> 16) as u32 & 0xfff0) << 16;
                self.write_at(key, PCI_MEMORY_BASE / 4, 0, &v.to_le_bytes());
            }
            Region::Prefetchable => {
                let v = (b >> 16) as u32 & 0xfff0 | ((l >> 16) as u32 & 0xfff0) << 16;
                self.write_at(key, PCI_PREF_MEMORY_BASE / 4, 0, &v.to_le_bytes());
                let (bh, lh) = if size == 0 {
                    (0, 0)
                } else {
                    ((b >> 32) as u32, (l >> 32) as u32)
                };
                self.write_at(key, PCI_PREF_BASE_UPPER32 / 4, 0, &bh.to_le_bytes());
                self.write_at(key, PCI_PREF_LIMIT_UPPER32 / 4, 0, &lh.to_le_bytes());
            }
        }
    }

    /// SeaBIOS `pci_bios_init_bus_rec`: every bridge on the bus numbered
    /// `number` gets primary `number`, the next secondary number, and a
    /// subordinate number covering what is below it (and its bus-reserve).
    fn number_bus(&mut self, bus: BusIndex, number: u8, next: &mut u8) {
        let bridges: Vec<_> = self
            .keys_on(bus)
            .into_iter()
            .filter_map(|k| Some((k, self.secondary_of(key_addr(k))?)))
            .collect();
        for &(k, _) in &bridges {
            self.write_at(k, PCI_PRIMARY_BUS / 4, 1, &[255]);
            self.write_at(k, PCI_PRIMARY_BUS / 4, 2, &[0]);
        }
        for (k, child) in bridges {
            let Some(secondary) = next.checked_add(1) else {
                return;
            };
            *next = secondary;
            for (i, v) in [number, secondary, 255].into_iter().enumerate() {
                self.write_at(k, PCI_PRIMARY_BUS / 4, i as u64, &[v]);
            }
            self.number_bus(child, secondary, next);
            let mut sub = *next;
            if let Some(r) = self.reserve(k) {
                if r.bus != u32::MAX {
                    let res = r.bus as u8;
                    if let Some(end) = secondary.checked_add(res) {
                        if end > *next {
                            sub = end;
                        }
                    }
                }
            }
            *next = sub;
            self.write_at(k, PCI_SUBORDINATE_BUS / 4, 2, &[sub]);
        }
    }

    /// Collects the entries of `bus` (its functions' BARs and the windows of
    /// its bridges, sized from below) into `plan`.
    fn size_bus(&mut self, bus: BusIndex, plan: &mut Plan) {
        for k in self.keys_on(bus) {
            let bars = self
                .device(key_addr(k))
                .map(|d| super::root::lock_fn(&d).bars())
                .unwrap_or_default();
            for b in bars {
                let size = if bus != 0 && b.kind != BarKind::Io {
                    b.size.max(DEVICE_MEM_MIN)
                } else {
                    b.size
                };
                let region = if bus == 0 {
                    Region::Memory
                } else {
                    region_of(b.kind)
                };
                let region = if b.kind == BarKind::Io {
                    Region::Io
                } else {
                    region
                };
                plan.entry((bus, region)).or_default().push(Entry {
                    key: k,
                    owner: Owner::Bar(b),
                    region,
                    size,
                    align: size,
                });
            }
            if let Some(child) = self.secondary_of(key_addr(k)) {
                self.size_bus(child, plan);
                for region in REGIONS {
                    if let Some(e) = self.size_window(k, child, region, plan) {
                        let at = if bus == 0 && region != Region::Io {
                            Region::Memory
                        } else {
                            region
                        };
                        plan.entry((bus, at)).or_default().push(e);
                    }
                }
            }
        }
        for region in REGIONS {
            if let Some(v) = plan.get_mut(&(bus, region)) {
                v.sort_by_key(|e| (Reverse(e.align), Reverse(e.size)));
            }
        }
    }

    /// The window bridge `k` needs for `region`, as SeaBIOS sizes it.
    fn size_window(
        &mut self,
        k: (BusIndex, u8),
        child: BusIndex,
        region: Region,
        plan: &Plan,
    ) -> Option<Entry> {
        if !self.has_region(k, region) {
            return None;
        }
        let below = plan.get(&(child, region)).map(Vec::as_slice).unwrap_or(&[]);
        let min = if region == Region::Io {
            BRIDGE_IO_MIN
        } else {
            BRIDGE_MEM_MIN
        };
        let align = below.iter().map(|e| e.align).max().unwrap_or(0).max(min);
        let mut sum: u64 = below.iter().map(|e| e.size).sum();
        let hotplug = self.hotplug(k);
        let optional = hotplug == Hotplug::Pcie && region == Region::Io;
        if align > sum && hotplug != Hotplug::None && !optional {
            sum = align;
        }
        let reserved = self.reserve(k).and_then(|r| match region {
            Region::Io => (r.io != u64::MAX).then_some(r.io),
            Region::Memory => (r.mem != u32::MAX).then_some(u64::from(r.mem)),
            Region::Prefetchable => match (r.pref32 != u32::MAX, r.pref64 != u64::MAX) {
                (true, false) => Some(u64::from(r.pref32)),
                (false, true) => Some(r.pref64),
                _ => None,
            },
        });
        let size = match reserved {
            Some(s) if s > sum && region == Region::Io => s,
            Some(s) if s > sum => s.checked_next_multiple_of(align)?,
            _ => sum.checked_next_multiple_of(align)?,
        };
        Some(Entry {
            key: k,
            owner: Owner::Window(child),
            region,
            size,
            align,
        })
    }

    /// SeaBIOS `pci_bridge_has_region`: whether the base register of the
    /// window takes a write (memory windows are mandatory).
    fn has_region(&mut self, k: (BusIndex, u8), region: Region) -> bool {
        let off = match region {
            Region::Io => PCI_IO_BASE,
            Region::Prefetchable => PCI_PREF_MEMORY_BASE,
            Region::Memory => return true,
        };
        self.write_at(k, off / 4, (off % 4) as u64, &[0xff]);
        self.read_at(k, off / 4).to_le_bytes()[off % 4] != 0
    }

    fn byte(&self, k: (BusIndex, u8), o: usize) -> u8 {
        self.read_at(k, o / 4).to_le_bytes()[o % 4]
    }

    fn hotplug(&self, k: (BusIndex, u8)) -> Hotplug {
        let caps = capability::walk(|o| self.byte(k, o));
        let has = |id| {
            caps.iter()
                .find(|c| c.id == id)
                .map(|c| usize::from(c.offset))
        };
        if let Some(p) = has(CAP_ID_PCIE) {
            let flags = u16::from_le_bytes([self.byte(k, p + 2), self.byte(k, p + 3)]);
            let kind = (flags >> 4 & 0xf) as u8;
            if kind != PCIE_TYPE_PCI_BRIDGE {
                // Root (4) or downstream (6) port with a slot.
                return if matches!(kind, 4 | 6) && flags & 0x100 != 0 {
                    Hotplug::Pcie
                } else {
                    Hotplug::None
                };
            }
        }
        if has(CAP_ID_SHPC).is_some() {
            Hotplug::Shpc
        } else {
            Hotplug::None
        }
    }

    fn reserve(&self, k: (BusIndex, u8)) -> Option<Reserve> {
        let caps = capability::walk(|o| self.byte(k, o));
        let c = caps.iter().find(|c| {
            let o = usize::from(c.offset);
            c.id == CAP_ID_VENDOR && self.byte(k, o + 2) >= 32 && self.byte(k, o + 3) == 1
        })?;
        let o = usize::from(c.offset);
        let d = |off: usize| self.read_at(k, (o + off) / 4);
        Some(Reserve {
            bus: d(4),
            io: u64::from(d(8)) | u64::from(d(12)) << 32,
            mem: d(16),
            pref32: d(20),
            pref64: u64::from(d(24)) | u64::from(d(28)) << 32,
        })
    }
}

fn key_addr((bus, devfn): (BusIndex, u8)) -> PciAddress {
    PciAddress::new(bus, devfn >> 3, devfn & 7)
}

/// `size` bytes aligned to `align`.
fn allocate(a: &mut WindowAllocator, size: u64, align: u64) -> Option<u64> {
    if size == 0 {
        return Some(a.peek());
    }
    a.allocate_aligned(size, align.max(1))
}
