//! PCI root complex: bus 0 (`pcie.0`) with 32 slots of up to 8 functions,
//! 00:00.0 the host bridge, reached through two front-ends sharing one
//! [`PciRoot`]:
//!
//! - [`PciConfigIo`] at port 0xcf8, length 8: configuration mechanism #1
//!   (CONFIG_ADDRESS dword at 0xcf8, CONFIG_DATA at 0xcfc-0xcff; PCI Local
//!   Bus 3.0 §3.2.2.3.2), plus the ICH reset control register RST_CNT, a byte
//!   at 0xcf9 (Intel ICH9 datasheet §13.7.5; QEMU hw/isa/lpc_ich9.c).
//! - [`PciConfigMmio`] for ECAM (PCIe 5.0 §7.2.2): offset = bus << 20 |
//!   device << 15 | function << 12 | register, 256 MiB for buses 0-255.
//!
//! Absent functions (other buses, empty slots) read all ones and ignore
//! writes. Accesses that are not 1, 2 or 4 bytes inside one dword of
//! configuration space read all ones and are dropped.
//!
//! BAR mapping: after every configuration write to a function the root asks
//! it for its [`PciBar`]s and, for each BAR whose decoded window changed,
//! moves the function's range on the port I/O or MMIO [`Bus`] and tells the
//! [`BarObserver`] (the VMM moves ioeventfds with it). A window a guest places
//! over something already on the bus does not decode; a `log::warn` says why.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::bridge::BridgeState;
use super::{
    BarSpace, BarWindow, HostBridge, PciAddress, PciBar, PciDevice, PciError, SharedPciDevice,
    PCIE_CONFIG_REGS, PCI_FUNCTIONS, PCI_NUM_BARS, PCI_SLOTS,
};
use crate::bus::{Bus, BusDevice};
use crate::{GuestRequest, GuestRequestFn};

/// Size of the ECAM window for buses 0-255.
pub const ECAM_SIZE: u64 = 256 << 20;
/// Length of the port window at 0xcf8.
pub const PCI_CONFIG_IO_LEN: u64 = 8;
/// Header type dword (0x0c) bit 23: header type bit 7, multi-function.
const MULTIFUNCTION_BIT: u32 = 1 << 23;

/// Told whenever a BAR's mapping on the buses changes, after the change.
///
/// `old` is where the BAR decoded until now and `new` where it decodes from
/// now on (`None`: not at all, because decode is disabled, the address is
/// unusable or it overlaps something). The VMM uses this to move what it
/// registered at BAR-relative offsets, such as the KVM ioeventfds of a
/// virtio-pci notify region (`virtio::pci::IoEventSpec`).
///
/// Called on the vCPU thread doing the configuration write, with the
/// [`PciRoot`] locked: the observer must not lock the root or a function.
pub trait BarObserver: Send + Sync {
    fn bar_moved(&self, addr: PciAddress, bar: u8, old: Option<BarWindow>, new: Option<BarWindow>);
}

/// How a function is plugged in, as `-device` says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FunctionOptions {
    /// The qdev driver name (`virtio-blk-pci`), for error messages.
    pub driver: String,
    /// The qdev id (`id=`), empty if none; `query-pci` reports it.
    pub id: String,
    /// `multifunction=on`: header type bit 7.
    pub multifunction: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct BarMap {
    /// What the function's configuration decodes.
    wanted: Option<BarWindow>,
    /// What is on the bus.
    mapped: Option<BarWindow>,
}

struct Function {
    device: SharedPciDevice,
    options: FunctionOptions,
    maps: [BarMap; PCI_NUM_BARS],
    /// The bus behind it, for a bridge.
    secondary: Option<BusIndex>,
}

impl Function {
    fn new(device: SharedPciDevice, options: FunctionOptions) -> Self {
        Self {
            device,
            options,
            maps: Default::default(),
            secondary: None,
        }
    }
}

/// The bus a BAR range points at: forwards to the function's BAR handler.
struct BarRegion {
    device: SharedPciDevice,
    bar: u8,
}

impl BusDevice for BarRegion {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        lock_fn(&self.device).bar_read(self.bar, offset, data);
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        lock_fn(&self.device).bar_write(self.bar, offset, data);
    }
}

/// Index of a bus in the topology, fixed when the bus is created: 0 is
/// `pcie.0`, then one per bridge in the order bridges are added. Guest bus
/// numbers are whatever firmware (or [`PciRoot::assign_bars`]) programs
/// into the bridges; a [`PciAddress`] that [`PciRoot`] hands out or takes
/// (other than in configuration cycles) carries this index as `bus`, so it
/// stays the same whatever the guest numbers.
pub type BusIndex = u8;

/// What a bus behind a bridge is. QEMU 7.2 places functions at any slot of
/// either (only `pci_get_function_0` treats a PCIe link as one device).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecondaryBus {
    /// A PCIe link below a root port (QEMU's TYPE_PCIE_BUS).
    PcieLink,
    /// A conventional PCI bus (behind a pcie-pci-bridge): slots 0-31.
    Conventional,
}

struct BusNode {
    /// The bridge whose secondary side this is (`None` for pcie.0).
    parent: Option<(BusIndex, u8)>,
    kind: Option<SecondaryBus>,
    /// QEMU's bus name (`pcie.0`, or the bridge's `id`).
    name: String,
}

/// Bus 0 and its functions, and the buses behind bridges.
pub struct PciRoot {
    functions: BTreeMap<(BusIndex, u8), Function>,
    buses: Vec<BusNode>,
    pio: Option<Arc<Bus>>,
    mmio: Option<Arc<Bus>>,
    observer: Option<Arc<dyn BarObserver>>,
}

impl PciRoot {
    /// Bus 0 with the host bridge at 00:00.0 and no buses to map BARs on:
    /// BARs decode nothing until [`PciRoot::set_buses`].
    pub fn new() -> Self {
        let mut functions = BTreeMap::new();
        functions.insert(
            (0, 0),
            Function::new(
                Arc::new(Mutex::new(HostBridge::new())),
                // What QEMU's q35 calls its host bridge in error messages.
                FunctionOptions {
                    driver: "mch".into(),
                    ..Default::default()
                },
            ),
        );
        Self {
            functions,
            buses: vec![BusNode {
                parent: None,
                kind: None,
                name: "pcie.0".into(),
            }],
            pio: None,
            mmio: None,
            observer: None,
        }
    }

    /// [`PciRoot::new`] mapping I/O BARs on `pio` and memory BARs on `mmio`.
    pub fn with_buses(pio: Arc<Bus>, mmio: Arc<Bus>) -> Self {
        let mut root = Self::new();
        root.set_buses(pio, mmio);
        root
    }

    /// Where BARs are mapped from now on; every decoded BAR is mapped anew.
    pub fn set_buses(&mut self, pio: Arc<Bus>, mmio: Arc<Bus>) {
        let keys = self.keys();
        for &k in &keys {
            self.sync_bars(k, Vec::new());
        }
        self.pio = Some(pio);
        self.mmio = Some(mmio);
        for k in keys {
            self.refresh(k);
        }
    }

    /// Puts `device` at 00:00.0 in place of the generic host bridge (q35's
    /// MCH: chipset::mch), named `driver` in messages and `query-pci`.
    pub fn set_host_bridge(&mut self, device: SharedPciDevice, driver: &str) {
        self.sync_bars((0, 0), Vec::new());
        self.functions.insert(
            (0, 0),
            Function::new(
                device,
                FunctionOptions {
                    driver: driver.into(),
                    ..Default::default()
                },
            ),
        );
        self.refresh((0, 0));
    }

    pub fn set_bar_observer(&mut self, observer: Arc<dyn BarObserver>) {
        self.observer = Some(observer);
    }

    /// Plugs `device` in on bus 0 (see [`PciRoot::add_function_on`]).
    pub fn add_function(
        &mut self,
        addr: Option<(u8, u8)>,
        device: SharedPciDevice,
        options: FunctionOptions,
    ) -> Result<PciAddress, PciError> {
        self.add_function_on(0, addr, device, options)
    }

    /// The bus QEMU calls `name` (`pcie.0` or a bridge's id).
    pub fn bus_by_name(&self, name: &str) -> Option<BusIndex> {
        self.buses
            .iter()
            .position(|b| b.name == name)
            .map(|i| i as BusIndex)
    }

    /// What kind of bus `bus` is (`None`: pcie.0, or no such bus).
    pub fn bus_kind(&self, bus: BusIndex) -> Option<SecondaryBus> {
        self.buses.get(usize::from(bus)).and_then(|b| b.kind)
    }

    /// Plugs `device` in on bus `bus` at `slot.function`, or, with `None`,
    /// at function 0 of the lowest slot whose function 0 is free, as QEMU
    /// does (hw/pci/pci.c `do_pci_register_device`; q35's pcie.0 starts at
    /// slot 1 since the host bridge holds slot 0; a PCIe link has slot 0
    /// only). Refused like QEMU's `pci_init_multifunction`: a function > 0
    /// when function 0 exists without `multifunction`, or function 0 without
    /// it when other functions of the slot exist.
    pub fn add_function_on(
        &mut self,
        bus: BusIndex,
        addr: Option<(u8, u8)>,
        device: SharedPciDevice,
        options: FunctionOptions,
    ) -> Result<PciAddress, PciError> {
        if self.buses.get(usize::from(bus)).is_none() {
            return Err(PciError::NoBus(bus));
        }
        let (slot, function) = match addr {
            Some((s, _)) if usize::from(s) >= PCI_SLOTS => return Err(PciError::InvalidSlot(s)),
            Some((_, f)) if usize::from(f) >= PCI_FUNCTIONS => {
                return Err(PciError::InvalidFunction(f))
            }
            Some(a) => a,
            None => (0..PCI_SLOTS as u8)
                .find(|&s| !self.functions.contains_key(&(bus, s << 3)))
                .map(|s| (s, 0))
                .ok_or_else(|| PciError::NoFreeSlot(options.driver.clone()))?,
        };
        let devfn = slot << 3 | function;
        if let Some(other) = self.functions.get(&(bus, devfn)) {
            return Err(PciError::SlotInUse {
                slot,
                function,
                driver: options.driver,
                other: other.options.driver.clone(),
                // QEMU prints a NULL id through %s: "(null)".
                other_id: match other.options.id.as_str() {
                    "" => "(null)".into(),
                    id => id.into(),
                },
            });
        }
        if function > 0 {
            if let Some(f0) = self.functions.get(&(bus, slot << 3)) {
                if !f0.options.multifunction {
                    return Err(PciError::SingleFunctionSlot { slot, function });
                }
            }
        } else if !options.multifunction {
            if let Some(f) = (1..PCI_FUNCTIONS as u8)
                .find(|f| self.functions.contains_key(&(bus, slot << 3 | f)))
            {
                return Err(PciError::FunctionsPopulated { slot, function: f });
            }
        }
        self.functions
            .insert((bus, devfn), Function::new(device, options));
        self.refresh((bus, devfn));
        Ok(PciAddress::new(bus, slot, function))
    }

    /// Plugs in a bridge (a function with a type 1 header) like
    /// [`PciRoot::add_function_on`] and creates the bus behind it, named
    /// after its `id` as QEMU names it (hw/pci/pci_bridge.c
    /// `pci_bridge_initfn`). Returns the bridge's address and the new bus.
    pub fn add_bridge(
        &mut self,
        bus: BusIndex,
        addr: Option<(u8, u8)>,
        device: SharedPciDevice,
        options: FunctionOptions,
        secondary: SecondaryBus,
    ) -> Result<(PciAddress, BusIndex), PciError> {
        if self.buses.len() > usize::from(u8::MAX) {
            return Err(PciError::NoFreeSlot(options.driver));
        }
        let name = options.id.clone();
        let a = self.add_function_on(bus, addr, device, options)?;
        let index = self.buses.len() as BusIndex;
        self.buses.push(BusNode {
            parent: Some((bus, a.devfn())),
            kind: Some(secondary),
            name,
        });
        if let Some(f) = self.functions.get_mut(&(bus, a.devfn())) {
            f.secondary = Some(index);
        }
        Ok((a, index))
    }

    /// The function at `addr` (a topology address), if any.
    pub fn device(&self, addr: PciAddress) -> Option<SharedPciDevice> {
        self.functions
            .get(&(addr.bus, addr.devfn()))
            .map(|f| f.device.clone())
    }

    /// Every populated topology address, bus by bus in devfn order.
    pub fn addresses(&self) -> Vec<PciAddress> {
        self.keys().into_iter().map(key_address).collect()
    }

    /// The options `addr` was plugged in with.
    pub fn options(&self, addr: PciAddress) -> Option<&FunctionOptions> {
        self.functions
            .get(&(addr.bus, addr.devfn()))
            .map(|f| &f.options)
    }

    /// Whether function 0 of `slot` on bus 0 is populated.
    pub fn slot_in_use(&self, slot: u8) -> bool {
        slot < 32 && self.functions.contains_key(&(0, slot << 3))
    }

    /// The bus behind the bridge at `addr`, if it is one.
    pub fn secondary_of(&self, addr: PciAddress) -> Option<BusIndex> {
        self.functions
            .get(&(addr.bus, addr.devfn()))
            .and_then(|f| f.secondary)
    }

    /// The bridge whose secondary side `bus` is.
    pub fn parent_of(&self, bus: BusIndex) -> Option<PciAddress> {
        self.buses
            .get(usize::from(bus))?
            .parent
            .map(|(b, d)| key_address((b, d)))
    }

    /// Where INTx pin `pin` (1-4) of the function at `addr` arrives on bus 0:
    /// (slot on bus 0, pin), swizzled at every bridge on the way (PCI-to-PCI
    /// Bridge 1.2 §9.1: pin = (pin - 1 + device) % 4 + 1; QEMU's
    /// `pci_swizzle_map_irq_fn`).
    pub fn intx_route(&self, addr: PciAddress, pin: u8) -> Option<(u8, u8)> {
        if !(1..=4).contains(&pin) {
            return None;
        }
        let (mut bus, mut slot, mut pin) = (addr.bus, addr.slot, pin);
        for _ in 0..self.buses.len() {
            if bus == 0 {
                return Some((slot, pin));
            }
            let (pb, pdevfn) = self.buses.get(usize::from(bus))?.parent?;
            pin = (pin - 1 + slot) % 4 + 1;
            bus = pb;
            slot = pdevfn >> 3;
        }
        None
    }

    /// The guest-visible bus number of bus `bus`: 0 for pcie.0, else what
    /// its bridge's secondary bus number register holds.
    pub fn bus_number(&self, bus: BusIndex) -> u8 {
        match self.buses.get(usize::from(bus)).and_then(|b| b.parent) {
            Some(k) => self.bridge_state(k).map_or(0, |s| s.secondary),
            None => 0,
        }
    }

    /// The bridge registers of the function at `key`.
    fn bridge_state(&self, key: (BusIndex, u8)) -> Option<BridgeState> {
        let f = self.functions.get(&key)?;
        let mut d = lock_fn(&f.device);
        Some(BridgeState::read(|r| d.read_config(r)))
    }

    /// The bridge state of the function at `addr`, if it is a bridge.
    pub fn bridge_info(&self, addr: PciAddress) -> Option<BridgeState> {
        self.secondary_of(addr)?;
        self.bridge_state((addr.bus, addr.devfn()))
    }

    /// The bus a configuration cycle for bus number `n` reaches: pcie.0 for
    /// 0, else the bus behind the bridge whose secondary number is `n`,
    /// found through the bridges whose secondary..subordinate range holds it
    /// (type 1 forwarding, PCI-to-PCI Bridge 1.2 §3.1.2.1; QEMU's
    /// `pci_find_bus_nr`).
    fn route(&self, n: u8) -> Option<BusIndex> {
        let mut cur: BusIndex = 0;
        if n == 0 {
            return Some(0);
        }
        for _ in 0..self.buses.len() {
            let (child, state) = self
                .functions
                .range((cur, 0)..=(cur, u8::MAX))
                .filter_map(|(&k, f)| Some((f.secondary?, k)))
                .find_map(|(child, k)| {
                    let s = self.bridge_state(k)?;
                    s.routes_bus(n).then_some((child, s))
                })?;
            if state.secondary == n {
                return Some(child);
            }
            cur = child;
        }
        None
    }

    fn function(&self, bus: u8, device: u8, function: u8) -> Option<((BusIndex, u8), &Function)> {
        if device >= 32 || function >= 8 {
            return None;
        }
        let key = (self.route(bus)?, device << 3 | function);
        self.functions.get(&key).map(|f| (key, f))
    }

    /// A configuration dword; all ones if nothing answers.
    pub fn config_read(&mut self, bus: u8, device: u8, function: u8, reg_idx: usize) -> u32 {
        match self.function(bus, device, function) {
            Some((k, _)) => self.read_at(k, reg_idx),
            None => u32::MAX,
        }
    }

    /// A configuration dword of the function at topology `key`.
    pub(crate) fn read_at(&self, key: (BusIndex, u8), reg_idx: usize) -> u32 {
        let Some(f) = self.functions.get(&key) else {
            return u32::MAX;
        };
        if reg_idx >= PCIE_CONFIG_REGS {
            return u32::MAX;
        }
        let v = lock_fn(&f.device).read_config(reg_idx);
        if reg_idx == 3 && f.options.multifunction {
            v | MULTIFUNCTION_BIT
        } else {
            v
        }
    }

    /// A configuration write; dropped if nothing answers or it leaves the dword.
    pub fn config_write(
        &mut self,
        bus: u8,
        device: u8,
        function: u8,
        reg_idx: usize,
        offset: u64,
        data: &[u8],
    ) {
        if let Some((k, _)) = self.function(bus, device, function) {
            self.write_at(k, reg_idx, offset, data);
        }
    }

    /// A configuration write to the function at topology `key`. A write to
    /// a bridge re-gates every BAR behind it (its command register and
    /// windows decide what it forwards), and setting its secondary bus reset
    /// bit resets every function behind it (QEMU `pci_bridge_write_config`).
    pub(crate) fn write_at(
        &mut self,
        key: (BusIndex, u8),
        reg_idx: usize,
        offset: u64,
        data: &[u8],
    ) {
        if reg_idx >= PCIE_CONFIG_REGS || !dword_access(offset, data.len()) {
            return;
        }
        let Some(f) = self.functions.get(&key) else {
            return;
        };
        let secondary = f.secondary;
        let before = secondary.and_then(|_| self.bridge_state(key));
        let bars = {
            let mut d = lock_fn(&f.device);
            d.write_config(reg_idx, offset, data);
            d.bars()
        };
        self.sync_bars(key, bars);
        let (Some(child), Some(before)) = (secondary, before) else {
            return;
        };
        let after = self.bridge_state(key);
        let reset = after.is_some_and(|a| {
            !before.control & a.control & super::bridge::BRIDGE_CTL_BUS_RESET != 0
        });
        let behind = self.keys_behind(child);
        for k in behind {
            if reset {
                if let Some(f) = self.functions.get(&k) {
                    lock_fn(&f.device).reset();
                }
            }
            self.refresh(k);
        }
    }

    /// Every function on `bus` and the buses below it, top-down.
    fn keys_behind(&self, bus: BusIndex) -> Vec<(BusIndex, u8)> {
        let mut out = Vec::new();
        let mut todo = vec![bus];
        while let Some(b) = todo.pop() {
            for (&k, f) in self.functions.range((b, 0)..=(b, u8::MAX)) {
                out.push(k);
                todo.extend(f.secondary);
            }
        }
        out
    }

    /// Machine reset of every function; their BARs stop decoding.
    pub fn reset(&mut self) {
        for k in self.keys() {
            if let Some(f) = self.functions.get(&k) {
                lock_fn(&f.device).reset();
            }
        }
        for k in self.keys() {
            self.refresh(k);
        }
    }

    /// Every populated topology key.
    pub(crate) fn keys(&self) -> Vec<(BusIndex, u8)> {
        self.functions.keys().copied().collect()
    }

    /// The functions on `bus`, in devfn order.
    pub(crate) fn keys_on(&self, bus: BusIndex) -> Vec<(BusIndex, u8)> {
        self.functions
            .range((bus, 0)..=(bus, u8::MAX))
            .map(|(&k, _)| k)
            .collect()
    }

    /// Whether every bridge between `bus` and pcie.0 forwards `w`.
    fn forwarded(&self, mut bus: BusIndex, w: &BarWindow) -> bool {
        for _ in 0..self.buses.len() {
            let Some(parent) = self.buses.get(usize::from(bus)).and_then(|b| b.parent) else {
                return true;
            };
            let Some(s) = self.bridge_state(parent) else {
                return false;
            };
            if !s.forwards(w.space == BarSpace::Io, w.base, w.size) {
                return false;
            }
            bus = parent.0;
        }
        false
    }

    /// Asks function `key` for its BARs and maps them.
    fn refresh(&mut self, key: (BusIndex, u8)) {
        let Some(f) = self.functions.get(&key) else {
            return;
        };
        let bars = lock_fn(&f.device).bars();
        self.sync_bars(key, bars);
    }

    /// Moves the bus mappings of `key` to match `bars`, as far as the
    /// bridges above it forward them (PCI-to-PCI Bridge 1.2 §4).
    fn sync_bars(&mut self, key: (BusIndex, u8), bars: Vec<PciBar>) {
        let addr = key_address(key);
        let mut wanted = [None; PCI_NUM_BARS];
        for b in bars {
            if let Some(w) = wanted.get_mut(usize::from(b.index)) {
                *w = b.window.filter(|w| key.0 == 0 || self.forwarded(key.0, w));
            }
        }
        let Some(f) = self.functions.get_mut(&key) else {
            return;
        };
        for (i, want) in wanted.into_iter().enumerate() {
            let map = f.maps[i];
            if map.wanted == want {
                continue;
            }
            let buses = (self.pio.as_deref(), self.mmio.as_deref());
            let mapped = remap(buses, &f.device, addr, i as u8, map.mapped, want);
            f.maps[i] = BarMap {
                wanted: want,
                mapped,
            };
            if mapped != map.mapped {
                if let Some(o) = &self.observer {
                    o.bar_moved(addr, i as u8, map.mapped, mapped);
                }
            }
        }
    }
}

/// Moves BAR `bar` of `device` from `old` to `new` on the buses; returns what
/// is mapped afterwards.
fn remap(
    (pio, mmio): (Option<&Bus>, Option<&Bus>),
    device: &SharedPciDevice,
    addr: PciAddress,
    bar: u8,
    old: Option<BarWindow>,
    new: Option<BarWindow>,
) -> Option<BarWindow> {
    let bus_of = |w: &BarWindow| match w.space {
        BarSpace::Io => pio,
        BarSpace::Memory => mmio,
    };
    if let (Some(o), Some(n)) = (old, new) {
        if o.space == n.space {
            let bus = bus_of(&n)?;
            match bus.update(o.base, n.base, n.size) {
                Ok(()) => return Some(n),
                Err(e) => {
                    log::warn!("{addr} BAR {bar} at {:#x}: {e}; not decoded", n.base);
                    let _ = bus.remove(o.base);
                    return None;
                }
            }
        }
    }
    if let Some(o) = old {
        if let Some(Err(e)) = bus_of(&o).map(|b| b.remove(o.base)) {
            log::warn!("{addr} BAR {bar}: {e}");
        }
    }
    let n = new?;
    let region = Arc::new(Mutex::new(BarRegion {
        device: device.clone(),
        bar,
    }));
    match bus_of(&n)?.insert(region, n.base, n.size) {
        Ok(()) => Some(n),
        Err(e) => {
            log::warn!("{addr} BAR {bar} at {:#x}: {e}; not decoded", n.base);
            None
        }
    }
}

fn key_address((bus, devfn): (BusIndex, u8)) -> PciAddress {
    PciAddress::new(bus, devfn >> 3, devfn & 7)
}

impl Default for PciRoot {
    fn default() -> Self {
        Self::new()
    }
}

/// A function whose lock was poisoned by a panic is still used (see `bus::lock`).
pub(crate) fn lock_fn(dev: &SharedPciDevice) -> MutexGuard<'_, dyn PciDevice + 'static> {
    dev.lock().unwrap_or_else(|e| e.into_inner())
}

/// 1, 2 or 4 bytes inside one dword.
fn dword_access(offset: u64, len: usize) -> bool {
    matches!(len, 1 | 2 | 4) && offset < 4 && offset + len as u64 <= 4
}

fn lock(root: &Mutex<PciRoot>) -> MutexGuard<'_, PciRoot> {
    root.lock().unwrap_or_else(|e| e.into_inner())
}

/// Reads `data.len()` bytes at byte `offset` of a dword (checked by the caller).
fn extract(dword: u32, offset: u64, data: &mut [u8]) {
    let bytes = dword.to_le_bytes();
    data.copy_from_slice(&bytes[offset as usize..offset as usize + data.len()]);
}

const CONFIG_ADDRESS: u64 = 0;
const RST_CNT: u64 = 1;
const CONFIG_DATA: u64 = 4;
const CONFIG_ENABLE: u32 = 1 << 31;
/// RST_CNT bit 2, RST_CPU: its 0→1 transition resets the platform; bits 1
/// (SYS_RST) and 3 (FULL_RST) only choose the kind and are kept.
const RST_CNT_RST_CPU: u8 = 0x04;
const RST_CNT_KEPT: u8 = 0x0a;

/// Port window 0xcf8-0xcff.
pub struct PciConfigIo {
    root: Arc<Mutex<PciRoot>>,
    request: GuestRequestFn,
    address: u32,
    rst_cnt: u8,
}

impl PciConfigIo {
    /// `request` receives [`GuestRequest::Reset`] for RST_CNT writes with RST_CPU set.
    pub fn new(root: Arc<Mutex<PciRoot>>, request: GuestRequestFn) -> Self {
        Self {
            root,
            request,
            address: 0,
            rst_cnt: 0,
        }
    }

    /// Machine reset: CONFIG_ADDRESS and RST_CNT cleared (QEMU `ich9_lpc_reset`).
    pub fn reset(&mut self) {
        self.address = 0;
        self.rst_cnt = 0;
    }

    /// (bus, device, function, register) selected by CONFIG_ADDRESS, if enabled.
    fn target(&self) -> Option<(u8, u8, u8, usize)> {
        let a = self.address;
        (a & CONFIG_ENABLE != 0).then_some((
            (a >> 16) as u8,
            (a >> 11) as u8 & 0x1f,
            (a >> 8) as u8 & 0x7,
            (a as usize & 0xfc) >> 2,
        ))
    }
}

impl BusDevice for PciConfigIo {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match (offset, data.len()) {
            (CONFIG_ADDRESS, 4) => data.copy_from_slice(&self.address.to_le_bytes()),
            (RST_CNT, 1) => data[0] = self.rst_cnt,
            (CONFIG_DATA.., len) if dword_access(offset - CONFIG_DATA, len) => {
                match self.target() {
                    Some((bus, dev, func, reg)) => {
                        let v = lock(&self.root).config_read(bus, dev, func, reg);
                        extract(v, offset - CONFIG_DATA, data);
                    }
                    None => data.fill(0xff),
                }
            }
            _ => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        match (offset, data) {
            // QEMU keeps all 32 bits as written (hw/pci/pci_host.c).
            (CONFIG_ADDRESS, &[a, b, c, d]) => self.address = u32::from_le_bytes([a, b, c, d]),
            (RST_CNT, &[v]) => {
                if v & RST_CNT_RST_CPU != 0 {
                    (self.request)(GuestRequest::Reset);
                } else {
                    self.rst_cnt = v & RST_CNT_KEPT;
                }
            }
            (CONFIG_DATA.., _) => {
                if let Some((bus, dev, func, reg)) = self.target() {
                    lock(&self.root).config_write(bus, dev, func, reg, offset - CONFIG_DATA, data);
                }
            }
            _ => {}
        }
    }
}

/// ECAM window (MCFG), inserted on the MMIO bus at its base with [`ECAM_SIZE`].
pub struct PciConfigMmio {
    root: Arc<Mutex<PciRoot>>,
}

impl PciConfigMmio {
    pub fn new(root: Arc<Mutex<PciRoot>>) -> Self {
        Self { root }
    }
}

/// (bus, device, function, register index, byte within the dword).
fn ecam_decode(offset: u64) -> Option<(u8, u8, u8, usize, u64)> {
    (offset < ECAM_SIZE).then_some((
        (offset >> 20) as u8,
        (offset >> 15) as u8 & 0x1f,
        (offset >> 12) as u8 & 0x7,
        (offset as usize & 0xfff) >> 2,
        offset & 3,
    ))
}

impl BusDevice for PciConfigMmio {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match ecam_decode(offset) {
            Some((bus, dev, func, reg, byte)) if dword_access(byte, data.len()) => {
                let v = lock(&self.root).config_read(bus, dev, func, reg);
                extract(v, byte, data);
            }
            _ => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let Some((bus, dev, func, reg, byte)) = ecam_decode(offset) {
            lock(&self.root).config_write(bus, dev, func, reg, byte, data);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::{PciConfigSpace, PciWindows};
    use crate::testutil::{hammer, recorder};

    type RequestLog = Arc<Mutex<Vec<GuestRequest>>>;

    fn rig() -> (Arc<Mutex<PciRoot>>, PciConfigIo, PciConfigMmio, RequestLog) {
        let root = Arc::new(Mutex::new(PciRoot::new()));
        let (req, log) = recorder();
        (
            root.clone(),
            PciConfigIo::new(root.clone(), req),
            PciConfigMmio::new(root),
            log,
        )
    }

    fn addr(bus: u8, dev: u8, func: u8, reg: u8) -> u32 {
        CONFIG_ENABLE
            | u32::from(bus) << 16
            | u32::from(dev) << 11
            | u32::from(func) << 8
            | u32::from(reg)
    }

    fn cf8_read(io: &mut PciConfigIo, a: u32, len: usize) -> u32 {
        io.write(0, &(a & !3).to_le_bytes());
        let mut b = [0u8; 4];
        io.read(4 + u64::from(a & 3), &mut b[..len]);
        u32::from_le_bytes(b)
    }

    fn cf8_write(io: &mut PciConfigIo, a: u32, v: u32, len: usize) {
        io.write(0, &(a & !3).to_le_bytes());
        io.write(4 + u64::from(a & 3), &v.to_le_bytes()[..len]);
    }

    fn ecam_off(bus: u8, dev: u8, func: u8, reg: u16) -> u64 {
        u64::from(bus) << 20 | u64::from(dev) << 15 | u64::from(func) << 12 | u64::from(reg)
    }

    fn ecam_read(m: &mut PciConfigMmio, off: u64, len: usize) -> u64 {
        let mut b = [0u8; 8];
        m.read(off, &mut b[..len]);
        u64::from_le_bytes(b)
    }

    #[test]
    fn host_bridge_identity_through_cf8() {
        let (_, mut io, _, _) = rig();
        assert_eq!(cf8_read(&mut io, addr(0, 0, 0, 0x00), 4), 0x0008_1b36);
        assert_eq!(
            cf8_read(&mut io, addr(0, 0, 0, 0x08), 4),
            0x0600_0000,
            "host bridge class, rev 0"
        );
        assert_eq!(
            cf8_read(&mut io, addr(0, 0, 0, 0x0e), 1),
            0x00,
            "header type 0, single function"
        );
        assert_eq!(
            cf8_read(&mut io, addr(0, 0, 0, 0x2c), 4),
            0x1100_1af4,
            "QEMU's default subsystem"
        );
        assert_eq!(
            cf8_read(&mut io, addr(0, 0, 0, 0x02), 2),
            0x0008,
            "word at 0xcfe"
        );
        assert_eq!(
            cf8_read(&mut io, addr(0, 0, 0, 0x01), 1),
            0x1b,
            "byte at 0xcfd"
        );
        assert_eq!(
            cf8_read(&mut io, addr(0, 0, 0, 0x01), 2),
            0x081b,
            "word at 0xcfd"
        );
        assert_eq!(cf8_read(&mut io, addr(0, 0, 0, 0x10), 4), 0, "no BARs");
    }

    #[test]
    fn linux_type1_probe() {
        let (_, mut io, _, _) = rig();
        io.write(3, &[0x01]); // outb(0x01, 0xCFB): ignored
        let mut b = [0u8; 4];
        io.read(0, &mut b);
        assert_eq!(u32::from_le_bytes(b), 0);
        io.write(0, &0x8000_0000u32.to_le_bytes());
        io.read(0, &mut b);
        assert_eq!(u32::from_le_bytes(b), 0x8000_0000);
        io.write(0, &0xffff_ffffu32.to_le_bytes());
        io.read(0, &mut b);
        assert_eq!(
            u32::from_le_bytes(b),
            0xffff_ffff,
            "kept as written, like QEMU"
        );
    }

    #[test]
    fn absent_functions_read_all_ones_and_ignore_writes() {
        let (_, mut io, _, _) = rig();
        for a in [
            addr(0, 5, 0, 0),
            addr(0, 0, 1, 0),
            addr(1, 0, 0, 0),
            addr(0, 31, 7, 0xfc),
        ] {
            assert_eq!(cf8_read(&mut io, a, 4), 0xffff_ffff, "{a:#x}");
            cf8_write(&mut io, a | 4, 0xffff_ffff, 4);
        }
        // Enable bit clear: nothing is selected.
        io.write(0, &0x0000_0000u32.to_le_bytes());
        let mut b = [0u8; 4];
        io.read(4, &mut b);
        assert_eq!(b, [0xff; 4]);
        io.write(4, &[0; 4]);
        assert_eq!(cf8_read(&mut io, addr(0, 0, 0, 0), 4), 0x0008_1b36);
    }

    #[test]
    fn host_bridge_is_read_only_but_for_standard_bits() {
        let (root, mut io, _, _) = rig();
        for reg in (0..256u32).step_by(4) {
            cf8_write(&mut io, addr(0, 0, 0, reg as u8), 0xffff_ffff, 4);
        }
        assert_eq!(cf8_read(&mut io, addr(0, 0, 0, 0x00), 4), 0x0008_1b36);
        assert_eq!(
            cf8_read(&mut io, addr(0, 0, 0, 0x04), 4),
            0x0000_0547,
            "command bits only"
        );
        assert_eq!(cf8_read(&mut io, addr(0, 0, 0, 0x08), 4), 0x0600_0000);
        assert_eq!(
            cf8_read(&mut io, addr(0, 0, 0, 0x0c), 4),
            0x0000_ffff,
            "cache line + latency"
        );
        assert_eq!(cf8_read(&mut io, addr(0, 0, 0, 0x10), 4), 0);
        assert_eq!(
            cf8_read(&mut io, addr(0, 0, 0, 0x3c), 4),
            0x0000_00ff,
            "interrupt line"
        );
        cf8_write(&mut io, addr(0, 0, 0, 0x05), 0x00, 1);
        assert_eq!(
            cf8_read(&mut io, addr(0, 0, 0, 0x04), 2),
            0x0047,
            "byte write to the command high byte"
        );
        lock(&root).reset();
        assert_eq!(cf8_read(&mut io, addr(0, 0, 0, 0x04), 4), 0);
        assert_eq!(cf8_read(&mut io, addr(0, 0, 0, 0x0c), 4), 0);
    }

    #[test]
    fn rst_cnt_resets_with_rst_cpu_and_keeps_the_rest() {
        let (_, mut io, _, log) = rig();
        let rd = |io: &mut PciConfigIo| {
            let mut b = [0u8];
            io.read(1, &mut b);
            b[0]
        };
        assert_eq!(rd(&mut io), 0);
        io.write(1, &[0x02]);
        assert_eq!(rd(&mut io), 0x02);
        assert!(log.lock().unwrap().is_empty());
        io.write(1, &[0x06]);
        io.write(1, &[0x0e]);
        io.write(1, &[0x04]);
        assert_eq!(*log.lock().unwrap(), vec![GuestRequest::Reset; 3]);
        assert_eq!(
            rd(&mut io),
            0x02,
            "RST_CPU self-clears; no new value stored"
        );
        io.write(1, &[0x0f & !0x04]);
        assert_eq!(rd(&mut io), 0x0a, "only SYS_RST and FULL_RST are kept");
        io.write(1, &[0x06, 0x00]); // a word at 0xcf9 is not RST_CNT
        assert_eq!(log.lock().unwrap().len(), 3);
        io.reset();
        assert_eq!(rd(&mut io), 0);
        let mut b = [0u8; 4];
        io.read(0, &mut b);
        assert_eq!(b, [0; 4]);
    }

    #[test]
    fn ecam_reaches_the_same_bus() {
        let (_, mut io, mut m, _) = rig();
        assert_eq!(ecam_read(&mut m, 0, 4), 0x0008_1b36);
        assert_eq!(ecam_read(&mut m, 2, 2), 0x0008);
        assert_eq!(ecam_read(&mut m, 0x0b, 1), 0x06);
        assert_eq!(ecam_read(&mut m, ecam_off(0, 1, 0, 0), 4), 0xffff_ffff);
        assert_eq!(ecam_read(&mut m, ecam_off(0, 0, 1, 0), 4), 0xffff_ffff);
        assert_eq!(
            ecam_read(&mut m, ecam_off(255, 31, 7, 0xffc), 4),
            0xffff_ffff
        );
        assert_eq!(
            ecam_read(&mut m, 0x100, 4),
            0xffff_ffff,
            "no extended config space"
        );
        assert_eq!(
            ecam_read(&mut m, 0, 8),
            u64::MAX,
            "8-byte config reads are not a thing"
        );
        assert_eq!(ecam_read(&mut m, 3, 2), 0xffff, "straddles a dword");
        m.write(4, &[0x06, 0x00]);
        assert_eq!(
            cf8_read(&mut io, addr(0, 0, 0, 4), 2),
            0x0006,
            "written by ECAM, read by 0xcfc"
        );
        m.write(ecam_off(3, 0, 0, 4), &[0xff; 4]);
        m.write(0, &[0; 8]);
        assert_eq!(ecam_read(&mut m, 0, 4), 0x0008_1b36);
    }

    type WriteLog = Arc<Mutex<Vec<(usize, u64, Vec<u8>)>>>;
    struct Recorder(WriteLog);
    impl PciDevice for Recorder {
        fn read_config(&mut self, reg_idx: usize) -> u32 {
            reg_idx as u32
        }
        fn write_config(&mut self, reg_idx: usize, offset: u64, data: &[u8]) {
            self.0
                .lock()
                .unwrap()
                .push((reg_idx, offset, data.to_vec()));
        }
    }

    fn shared(d: impl PciDevice + 'static) -> SharedPciDevice {
        Arc::new(Mutex::new(d))
    }

    fn opts(driver: &str, id: &str, multifunction: bool) -> FunctionOptions {
        FunctionOptions {
            driver: driver.into(),
            id: id.into(),
            multifunction,
        }
    }

    fn bridge() -> SharedPciDevice {
        shared(HostBridge::new())
    }

    #[test]
    fn devices_get_register_index_offset_and_bytes() {
        let (root, mut io, mut m, _) = rig();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let rec = || shared(Recorder(seen.clone()));
        let add = |a, d| lock(&root).add_function(a, d, opts("rec", "", false));
        assert_eq!(
            add(None, rec()),
            Ok(PciAddress::new(0, 1, 0)),
            "first free slot is 1"
        );
        assert_eq!(add(Some((32, 0)), rec()), Err(PciError::InvalidSlot(32)));
        assert_eq!(add(Some((3, 8)), rec()), Err(PciError::InvalidFunction(8)));
        assert_eq!(add(Some((31, 0)), rec()), Ok(PciAddress::new(0, 31, 0)));
        assert!(lock(&root).slot_in_use(31));
        assert!(!lock(&root).slot_in_use(2));
        assert_eq!(cf8_read(&mut io, addr(0, 1, 0, 0x40), 4), 0x10);
        assert_eq!(
            ecam_read(&mut m, ecam_off(0, 31, 0, 0xffc), 4),
            0x3ff,
            "ECAM reaches register 1023"
        );
        cf8_write(&mut io, addr(0, 1, 0, 0x11), 0xbeef, 2);
        m.write(ecam_off(0, 31, 0, 0x203), &[0x7]);
        assert_eq!(
            *seen.lock().unwrap(),
            vec![(4, 1, vec![0xef, 0xbe]), (128, 3, vec![0x7])]
        );
        for slot in 2..31 {
            add(Some((slot, 0)), bridge()).unwrap();
        }
        assert_eq!(
            add(None, bridge()).unwrap_err().to_string(),
            "PCI: no slot/function available for rec, all in use or reserved"
        );
        lock(&root).reset();
    }

    /// QEMU's own words for the three ways to misplace a function (checked
    /// against qemu-system-x86_64 7.2 -machine q35).
    #[test]
    fn slot_conflicts_are_refused_with_qemus_errors() {
        let mut root = PciRoot::new();
        let blk = |id: &str| opts("virtio-blk-pci", id, false);
        root.add_function(Some((4, 0)), bridge(), blk("vb0"))
            .unwrap();
        assert_eq!(
            root.add_function(Some((4, 0)), bridge(), blk("vb1")).unwrap_err().to_string(),
            "PCI: slot 4 function 0 not available for virtio-blk-pci, in use by virtio-blk-pci,id=vb0"
        );
        assert_eq!(
            root.add_function(Some((4, 1)), bridge(), blk("vb1"))
                .unwrap_err()
                .to_string(),
            "PCI: single function device can't be populated in function 4.1"
        );
        assert_eq!(
            root.add_function(Some((0, 0)), bridge(), blk("vb1"))
                .unwrap_err()
                .to_string(),
            "PCI: slot 0 function 0 not available for virtio-blk-pci, in use by mch,id=(null)"
        );
        root.add_function(Some((0xa, 2)), bridge(), blk("vb2"))
            .unwrap();
        assert_eq!(
            root.add_function(Some((0xa, 0)), bridge(), blk("vb3"))
                .unwrap_err()
                .to_string(),
            "PCI: a.0 indicates single function, but a.2 is already populated."
        );
    }

    #[test]
    fn multifunction_sets_header_type_bit_7() {
        let (root, mut io, _, _) = rig();
        lock(&root)
            .add_function(Some((5, 0)), bridge(), opts("x", "", true))
            .unwrap();
        lock(&root)
            .add_function(Some((5, 3)), bridge(), opts("x", "", false))
            .unwrap();
        assert_eq!(cf8_read(&mut io, addr(0, 5, 0, 0x0e), 1), 0x80);
        assert_eq!(cf8_read(&mut io, addr(0, 5, 3, 0x0e), 1), 0x00);
        assert_eq!(cf8_read(&mut io, addr(0, 5, 3, 0x00), 4), 0x0008_1b36);
        assert_eq!(cf8_read(&mut io, addr(0, 5, 1, 0x00), 4), 0xffff_ffff);
        assert_eq!(
            lock(&root).addresses(),
            vec![
                PciAddress::new(0, 0, 0),
                PciAddress::new(0, 5, 0),
                PciAddress::new(0, 5, 3)
            ]
        );
    }

    /// A function with an I/O BAR and a 64-bit memory BAR whose BAR
    /// accesses echo back their offset.
    struct BarDev {
        config: PciConfigSpace,
        writes: Vec<(u8, u64, Vec<u8>)>,
    }

    impl BarDev {
        fn new() -> Self {
            let mut config = PciConfigSpace::new(0x1af4, 0x1042, 0x01_00_00, 1);
            config.add_bar(0, crate::pci::BarKind::Io, 0x20).unwrap();
            config
                .add_bar(
                    2,
                    crate::pci::BarKind::Memory64 { prefetchable: true },
                    0x4000,
                )
                .unwrap();
            config
                .add_bar(
                    5,
                    crate::pci::BarKind::Memory32 {
                        prefetchable: false,
                    },
                    0x1000,
                )
                .unwrap();
            BarDev {
                config,
                writes: Vec::new(),
            }
        }
    }

    impl PciDevice for BarDev {
        fn read_config(&mut self, reg_idx: usize) -> u32 {
            self.config.read(reg_idx)
        }
        fn write_config(&mut self, reg_idx: usize, offset: u64, data: &[u8]) {
            self.config.write(reg_idx, offset, data)
        }
        fn reset(&mut self) {
            self.config.reset()
        }
        fn bars(&self) -> Vec<PciBar> {
            self.config.bars()
        }
        fn bar_read(&mut self, bar: u8, offset: u64, data: &mut [u8]) {
            data.fill(bar << 4 | offset as u8);
        }
        fn bar_write(&mut self, bar: u8, offset: u64, data: &[u8]) {
            self.writes.push((bar, offset, data.to_vec()));
        }
    }

    type Moves = Mutex<Vec<(PciAddress, u8, Option<BarWindow>, Option<BarWindow>)>>;
    #[derive(Default)]
    struct Observer(Moves);
    impl BarObserver for Observer {
        fn bar_moved(
            &self,
            a: PciAddress,
            bar: u8,
            old: Option<BarWindow>,
            new: Option<BarWindow>,
        ) {
            self.0.lock().unwrap().push((a, bar, old, new));
        }
    }

    fn mem(base: u64, size: u64) -> Option<BarWindow> {
        Some(BarWindow {
            space: BarSpace::Memory,
            base,
            size,
        })
    }

    struct BarRig {
        pio: Arc<Bus>,
        mmio: Arc<Bus>,
        io: PciConfigIo,
        obs: Arc<Observer>,
        dev: Arc<Mutex<BarDev>>,
    }

    fn bar_rig() -> BarRig {
        let pio = Arc::new(Bus::new());
        let mmio = Arc::new(Bus::new());
        let mut r = PciRoot::with_buses(pio.clone(), mmio.clone());
        let obs = Arc::new(Observer::default());
        r.set_bar_observer(obs.clone());
        let dev = Arc::new(Mutex::new(BarDev::new()));
        r.add_function(Some((3, 0)), dev.clone(), FunctionOptions::default())
            .unwrap();
        let root = Arc::new(Mutex::new(r));
        let (req, _) = recorder();
        BarRig {
            pio,
            mmio,
            io: PciConfigIo::new(root, req),
            obs,
            dev,
        }
    }

    fn moves(o: &Observer) -> Vec<(PciAddress, u8, Option<BarWindow>, Option<BarWindow>)> {
        std::mem::take(&mut o.0.lock().unwrap())
    }

    #[test]
    fn guest_programmed_bars_map_move_and_unmap() {
        let mut r = bar_rig();
        let a3 = PciAddress::new(0, 3, 0);
        // Linux-style sizing with decode off.
        cf8_write(&mut r.io, addr(0, 3, 0, 0x18), 0xffff_ffff, 4);
        assert_eq!(cf8_read(&mut r.io, addr(0, 3, 0, 0x18), 4), 0xffff_c00c);
        cf8_write(&mut r.io, addr(0, 3, 0, 0x18), 0xfe00_0000, 4);
        cf8_write(&mut r.io, addr(0, 3, 0, 0x1c), 0, 4);
        cf8_write(&mut r.io, addr(0, 3, 0, 0x10), 0xc000, 4);
        assert!(
            moves(&r.obs).is_empty(),
            "nothing decodes before the command register says so"
        );
        let mut b = [0u8; 4];
        assert!(!r.mmio.read(0xfe00_0010, &mut b));

        cf8_write(&mut r.io, addr(0, 3, 0, 0x04), 0x3, 2);
        assert_eq!(
            moves(&r.obs),
            vec![
                (
                    a3,
                    0,
                    None,
                    Some(BarWindow {
                        space: BarSpace::Io,
                        base: 0xc000,
                        size: 0x20
                    })
                ),
                (a3, 2, None, mem(0xfe00_0000, 0x4000)),
            ]
        );
        assert!(r.mmio.read(0xfe00_0010, &mut b));
        assert_eq!(b, [0x20 | 0x10; 4], "BAR 2, offset 0x10");
        assert!(r.pio.read(0xc001, &mut b[..1]));
        assert_eq!(b[0], 0x01);
        assert!(r.mmio.write(0xfe00_3ffc, &[1, 2, 3, 4]));
        assert_eq!(
            r.dev.lock().unwrap().writes,
            vec![(2, 0x3ffc, vec![1, 2, 3, 4])]
        );

        // The guest moves BAR 2 above 4G: the old range stops decoding.
        cf8_write(&mut r.io, addr(0, 3, 0, 0x1c), 0x1, 4);
        assert_eq!(
            moves(&r.obs),
            vec![(a3, 2, mem(0xfe00_0000, 0x4000), mem(0x1_fe00_0000, 0x4000))]
        );
        assert!(!r.mmio.read(0xfe00_0010, &mut b));
        assert!(r.mmio.read(0x1_fe00_0010, &mut b));

        // Memory decode off: BAR 2 goes, the I/O BAR stays.
        cf8_write(&mut r.io, addr(0, 3, 0, 0x04), 0x1, 2);
        assert_eq!(
            moves(&r.obs),
            vec![(a3, 2, mem(0x1_fe00_0000, 0x4000), None)]
        );
        assert!(!r.mmio.read(0x1_fe00_0010, &mut b));
        assert!(r.pio.read(0xc001, &mut b[..1]));
    }

    #[test]
    fn overlapping_bar_does_not_decode_and_recovers_when_moved() {
        let mut r = bar_rig();
        let a3 = PciAddress::new(0, 3, 0);
        let ecam = Arc::new(Mutex::new(PciConfigMmio::new(Arc::new(Mutex::new(
            PciRoot::new(),
        )))));
        r.mmio.insert(ecam, 0xe000_0000, ECAM_SIZE).unwrap();
        // BAR 5 (32-bit) right inside ECAM.
        cf8_write(&mut r.io, addr(0, 3, 0, 0x24), 0xe000_1000, 4);
        cf8_write(&mut r.io, addr(0, 3, 0, 0x04), 0x2, 2);
        assert!(moves(&r.obs).is_empty(), "an overlapping BAR is not mapped");
        let mut b = [0u8; 4];
        assert!(r.mmio.read(0xe000_0000, &mut b));
        assert_eq!(u32::from_le_bytes(b), 0x0008_1b36, "ECAM still answers");
        cf8_write(&mut r.io, addr(0, 3, 0, 0x24), 0xd000_0000, 4);
        assert_eq!(moves(&r.obs), vec![(a3, 5, None, mem(0xd000_0000, 0x1000))]);
        // A 32-bit BAR the guest puts at the top of 4G is unusable: unmapped.
        cf8_write(&mut r.io, addr(0, 3, 0, 0x24), 0xffff_f000, 4);
        assert_eq!(moves(&r.obs), vec![(a3, 5, mem(0xd000_0000, 0x1000), None)]);
    }

    #[test]
    fn assign_bars_packs_windows_and_enables_decode() {
        let mut r = bar_rig();
        let a3 = PciAddress::new(0, 3, 0);
        let windows = PciWindows {
            io: PciWindows::IO_DEFAULT,
            mmio32: (0xc000_0000, 0xe000_0000),
            mmio64: Some((0x1_4000_0000, 0x11_4000_0000)),
        };
        let root = r.io.root.clone();
        lock(&root).assign_bars(&windows).unwrap();
        let mut got = moves(&r.obs);
        got.sort_by_key(|m| m.1);
        assert_eq!(
            got,
            vec![
                (
                    a3,
                    0,
                    None,
                    Some(BarWindow {
                        space: BarSpace::Io,
                        base: 0xc000,
                        size: 0x20
                    })
                ),
                (a3, 2, None, mem(0x1_4000_0000, 0x4000)),
                (a3, 5, None, mem(0xc000_0000, 0x1000)),
            ]
        );
        assert_eq!(cf8_read(&mut r.io, addr(0, 3, 0, 0x04), 2), 0x3);
        assert_eq!(cf8_read(&mut r.io, addr(0, 3, 0, 0x1c), 4), 0x1);
        let tiny = PciWindows {
            io: (0xc000, 0xc010),
            ..windows
        };
        assert_eq!(
            lock(&root).assign_bars(&tiny).unwrap_err().to_string(),
            "no room for BAR 0 (0x20 bytes) of 00:03.0 in the I/O window"
        );
        lock(&root).reset();
        assert_eq!(moves(&r.obs).len(), 3, "reset stops every BAR decoding");
        let mut b = [0u8; 4];
        assert!(!r.mmio.read(0xc000_0000, &mut b));
    }

    #[test]
    fn survives_any_access() {
        let (root, mut io, mut m, _) = rig();
        lock(&root)
            .add_function(Some((3, 0)), bridge(), FunctionOptions::default())
            .unwrap();
        hammer(&mut io, PCI_CONFIG_IO_LEN);
        for reg in 0..=255u8 {
            for dev in [0u8, 3, 4] {
                for len in [1usize, 2, 4, 8] {
                    for v in [0u32, 0xffff_ffff, 0x5a5a_a5a5] {
                        io.write(0, &addr(0, dev, 0, reg).to_le_bytes());
                        for off in 4..8 {
                            let mut b = [0u8; 8];
                            io.write(off, &v.to_le_bytes().repeat(2)[..len]);
                            io.read(off, &mut b[..len]);
                        }
                    }
                }
            }
        }
        for base in [
            0,
            ecam_off(0, 3, 0, 0),
            ecam_off(0, 4, 0, 0),
            ECAM_SIZE - 0x1000,
        ] {
            for reg in 0..0x1000u64 {
                for len in [1usize, 2, 4, 8] {
                    let mut b = [0u8; 8];
                    m.write(base + reg, &[0xff; 8][..len]);
                    m.read(base + reg, &mut b[..len]);
                }
            }
        }
        for off in [ECAM_SIZE, ECAM_SIZE + 1, u64::MAX - 8, u64::MAX] {
            assert_eq!(ecam_read(&mut m, off, 4), 0xffff_ffff);
            m.write(off, &[0; 4]);
        }
        assert_eq!(ecam_read(&mut m, 0, 4), 0x0008_1b36);
    }
}
