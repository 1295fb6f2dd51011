//! PCI root complex: bus 0 with up to 32 single-function devices, slot 0 the
//! host bridge, reached through two front-ends sharing one [`PciRoot`]:
//!
//! - [`PciConfigIo`] at port 0xcf8, length 8: configuration mechanism #1
//!   (CONFIG_ADDRESS dword at 0xcf8, CONFIG_DATA at 0xcfc-0xcff; PCI Local
//!   Bus 3.0 §3.2.2.3.2), plus the ICH reset control register RST_CNT, a byte
//!   at 0xcf9 (Intel ICH9 datasheet §13.7.5; QEMU hw/isa/lpc_ich9.c).
//! - [`PciConfigMmio`] for ECAM (PCIe 5.0 §7.2.2): offset = bus << 20 |
//!   device << 15 | function << 12 | register, 256 MiB for buses 0-255.
//!
//! Absent functions (other buses, functions 1-7, empty slots) read all ones
//! and ignore writes. Accesses that are not 1, 2 or 4 bytes inside one dword
//! of configuration space read all ones and are dropped.

use std::sync::{Arc, Mutex, MutexGuard};

use crate::bus::BusDevice;
use crate::{GuestRequest, GuestRequestFn};

/// Devices on bus 0.
pub const PCI_SLOTS: usize = 32;
/// Dwords in a conventional (256-byte) configuration space.
pub const PCI_CONFIG_REGS: usize = 64;
/// Dwords in a PCIe (4 KiB) configuration space.
pub const PCIE_CONFIG_REGS: usize = 1024;
/// Size of the ECAM window for buses 0-255.
pub const ECAM_SIZE: u64 = 256 << 20;
/// Length of the port window at 0xcf8.
pub const PCI_CONFIG_IO_LEN: u64 = 8;

/// QEMU's generic PCIe host bridge (hw/pci-host/gpex.c, "gpex-root").
pub const HOST_BRIDGE_VENDOR: u16 = 0x1b36;
pub const HOST_BRIDGE_DEVICE: u16 = 0x0008;
const CLASS_BRIDGE_HOST: u32 = 0x06_00_00;
/// What QEMU gives every non-bridge device that sets no subsystem
/// (hw/pci/pci.c `pci_set_default_subsystem_id`).
const DEFAULT_SUBSYSTEM_VENDOR: u16 = 0x1af4;
const DEFAULT_SUBSYSTEM: u16 = 0x1100;

/// Command register bits a guest may change on a simple function: I/O,
/// memory, bus master, parity error response, SERR#, INTx disable.
pub const COMMAND_WRITABLE: u32 = 0x0547;

/// A function on the PCI bus, as its configuration space.
pub trait PciDevice: Send {
    /// The configuration dword at byte offset `reg_idx * 4` (`reg_idx` below
    /// [`PCIE_CONFIG_REGS`]). Registers past the function's configuration
    /// space read all ones.
    fn read_config(&mut self, reg_idx: usize) -> u32;

    /// Writes `data` (1, 2 or 4 bytes) at byte `offset` (0-3) of dword
    /// `reg_idx`; `offset + data.len() <= 4`.
    fn write_config(&mut self, reg_idx: usize, offset: u64, data: &[u8]);

    /// Machine reset: configuration back to power-on values.
    fn reset(&mut self) {}
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PciError {
    #[error("PCI slot {0} does not exist (bus 0 has slots 0-31)")]
    InvalidSlot(u8),
    #[error("PCI slot {0} is already in use")]
    SlotInUse(u8),
    #[error("no free PCI slot on bus 0")]
    NoFreeSlot,
}

/// A 256-byte configuration space with a write mask: the part every simple
/// function shares. Header fields are read-only unless their mask bits say otherwise.
#[derive(Debug, Clone)]
pub struct PciConfigSpace {
    regs: [u32; PCI_CONFIG_REGS],
    wmask: [u32; PCI_CONFIG_REGS],
    power_on: [u32; PCI_CONFIG_REGS],
}

impl PciConfigSpace {
    /// A type 0 header; `class` is class << 16 | subclass << 8 | prog-if.
    /// Writable: command ([`COMMAND_WRITABLE`]), cache line size, latency
    /// timer, interrupt line.
    pub fn new(vendor: u16, device: u16, class: u32, revision: u8) -> Self {
        let mut regs = [0u32; PCI_CONFIG_REGS];
        regs[0] = u32::from(vendor) | u32::from(device) << 16;
        regs[2] = (class & 0x00ff_ffff) << 8 | u32::from(revision);
        regs[11] = u32::from(DEFAULT_SUBSYSTEM_VENDOR) | u32::from(DEFAULT_SUBSYSTEM) << 16;
        let mut wmask = [0u32; PCI_CONFIG_REGS];
        wmask[1] = COMMAND_WRITABLE;
        wmask[3] = 0x0000_ffff;
        wmask[15] = 0x0000_00ff;
        Self {
            regs,
            wmask,
            power_on: regs,
        }
    }

    pub fn read(&self, reg_idx: usize) -> u32 {
        self.regs.get(reg_idx).copied().unwrap_or(u32::MAX)
    }

    pub fn write(&mut self, reg_idx: usize, offset: u64, data: &[u8]) {
        let (Some(reg), Some(&mask)) = (self.regs.get_mut(reg_idx), self.wmask.get(reg_idx)) else {
            return;
        };
        for (i, &b) in data.iter().enumerate() {
            let shift = 8 * (offset + i as u64);
            if shift >= 32 {
                break;
            }
            let m = (mask >> shift) & 0xff;
            let byte = ((*reg >> shift) & !m & 0xff) | (u32::from(b) & m);
            *reg = (*reg & !(0xff << shift)) | byte << shift;
        }
    }

    pub fn reset(&mut self) {
        self.regs = self.power_on;
    }
}

/// 00:00.0.
pub struct HostBridge {
    config: PciConfigSpace,
}

impl HostBridge {
    pub fn new() -> Self {
        Self {
            config: PciConfigSpace::new(
                HOST_BRIDGE_VENDOR,
                HOST_BRIDGE_DEVICE,
                CLASS_BRIDGE_HOST,
                0,
            ),
        }
    }
}

impl Default for HostBridge {
    fn default() -> Self {
        Self::new()
    }
}

impl PciDevice for HostBridge {
    fn read_config(&mut self, reg_idx: usize) -> u32 {
        self.config.read(reg_idx)
    }
    fn write_config(&mut self, reg_idx: usize, offset: u64, data: &[u8]) {
        self.config.write(reg_idx, offset, data)
    }
    fn reset(&mut self) {
        self.config.reset()
    }
}

/// Bus 0 and its devices.
pub struct PciRoot {
    slots: Vec<Option<Box<dyn PciDevice>>>,
}

impl PciRoot {
    /// Bus 0 with the host bridge in slot 0.
    pub fn new() -> Self {
        let mut slots: Vec<Option<Box<dyn PciDevice>>> = (0..PCI_SLOTS).map(|_| None).collect();
        slots[0] = Some(Box::new(HostBridge::new()));
        Self { slots }
    }

    /// Puts `device` at function 0 of `slot`.
    pub fn add_device(&mut self, slot: u8, device: Box<dyn PciDevice>) -> Result<(), PciError> {
        let entry = self
            .slots
            .get_mut(usize::from(slot))
            .ok_or(PciError::InvalidSlot(slot))?;
        if entry.is_some() {
            return Err(PciError::SlotInUse(slot));
        }
        *entry = Some(device);
        Ok(())
    }

    /// Puts `device` in the lowest free slot and returns it.
    pub fn add_device_any_slot(&mut self, device: Box<dyn PciDevice>) -> Result<u8, PciError> {
        let slot = self
            .slots
            .iter()
            .position(Option::is_none)
            .ok_or(PciError::NoFreeSlot)?;
        self.slots[slot] = Some(device);
        Ok(slot as u8)
    }

    pub fn slot_in_use(&self, slot: u8) -> bool {
        self.slots
            .get(usize::from(slot))
            .is_some_and(Option::is_some)
    }

    fn function(&mut self, bus: u8, device: u8, function: u8) -> Option<&mut Box<dyn PciDevice>> {
        if bus != 0 || function != 0 {
            return None;
        }
        self.slots.get_mut(usize::from(device))?.as_mut()
    }

    /// A configuration dword; all ones if nothing answers.
    pub fn config_read(&mut self, bus: u8, device: u8, function: u8, reg_idx: usize) -> u32 {
        if reg_idx >= PCIE_CONFIG_REGS {
            return u32::MAX;
        }
        self.function(bus, device, function)
            .map_or(u32::MAX, |d| d.read_config(reg_idx))
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
        if reg_idx >= PCIE_CONFIG_REGS || !dword_access(offset, data.len()) {
            return;
        }
        if let Some(d) = self.function(bus, device, function) {
            d.write_config(reg_idx, offset, data);
        }
    }

    /// Machine reset of every device on the bus.
    pub fn reset(&mut self) {
        self.slots.iter_mut().flatten().for_each(|d| d.reset());
    }
}

impl Default for PciRoot {
    fn default() -> Self {
        Self::new()
    }
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
    struct Recorder(WriteLog, bool);
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
        fn reset(&mut self) {
            self.1 = true;
        }
    }

    #[test]
    fn devices_get_register_index_offset_and_bytes() {
        let (root, mut io, mut m, _) = rig();
        let seen = Arc::new(Mutex::new(Vec::new()));
        assert_eq!(
            lock(&root).add_device_any_slot(Box::new(Recorder(seen.clone(), false))),
            Ok(1)
        );
        assert_eq!(
            lock(&root).add_device(0, Box::new(Recorder(seen.clone(), false))),
            Err(PciError::SlotInUse(0))
        );
        assert_eq!(
            lock(&root).add_device(32, Box::new(Recorder(seen.clone(), false))),
            Err(PciError::InvalidSlot(32))
        );
        assert_eq!(
            lock(&root).add_device(31, Box::new(Recorder(seen.clone(), false))),
            Ok(())
        );
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
            lock(&root)
                .add_device(slot, Box::new(HostBridge::new()))
                .unwrap();
        }
        assert_eq!(
            lock(&root).add_device_any_slot(Box::new(HostBridge::new())),
            Err(PciError::NoFreeSlot)
        );
        lock(&root).reset();
    }

    #[test]
    fn config_space_helper_masks_writes() {
        let mut c = PciConfigSpace::new(0x1af4, 0x1041, 0x02_00_00, 1);
        c.write(1, 0, &[0xff, 0xff, 0xff, 0xff]);
        assert_eq!(c.read(1), 0x0547);
        c.write(1, 3, &[0xff, 0xff]); // runs off the dword: the rest is dropped
        c.write(64, 0, &[0xff]);
        assert_eq!(c.read(64), u32::MAX);
        assert_eq!(c.read(2), 0x0200_0001);
        c.reset();
        assert_eq!(c.read(1), 0);
    }

    #[test]
    fn survives_any_access() {
        let (root, mut io, mut m, _) = rig();
        lock(&root)
            .add_device(3, Box::new(HostBridge::new()))
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
