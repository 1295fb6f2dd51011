//! The virtio-pci modern transport (virtio 1.2 §4.1), laid out like QEMU's
//! hw/virtio/virtio-pci.c with `disable-legacy=on` so `query-pci` and lspci
//! compare equal:
//!
//! - IDs: vendor 0x1af4, device 0x1040 + device type, revision 1, subsystem
//!   0x1af4:0x1100 (QEMU's default), class per device type as QEMU, INTA#.
//! - BAR1: 32-bit memory, the MSI-X table at 0 and PBA at 0x800 (4 KiB for up
//!   to 128 vectors; `msix_init_exclusive_bar`). Absent with 0 vectors.
//! - BAR4: 64-bit prefetchable memory, 16 KiB: common configuration at
//!   0x0000, ISR at 0x1000, device configuration at 0x2000, notifications at
//!   0x3000 with `notify_off_multiplier` 4 (queue q at 0x3000 + 4q).
//! - Capabilities, in QEMU's order and offsets: common 0x40, ISR 0x50,
//!   device 0x60, notify 0x70, PCI configuration access 0x84, MSI-X 0x98.
//!
//! Queue kicks: a write to the notify area calls
//! [`VirtioDevice::queue_notify`] directly (the fallback). For speed the VMM
//! registers each queue's [`IoEventSpec`] as a KVM ioeventfd at the BAR's
//! current base plus `offset` (moving it on [`crate::pci::BarObserver::bar_moved`]),
//! and on a kick calls [`VirtioPciDevice::handle_kick`] from its backend thread.

mod common;
pub mod interrupt;
#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex, MutexGuard};

use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use crate::interrupt::{IntxLine, MsiVectors};
use crate::pci::capability::CAP_ID_VENDOR;
use crate::pci::msix::exclusive_bar_layout;
use crate::pci::{BarKind, Msix, PciBar, PciConfigSpace, PciDevice, PciError};
use crate::virtio::VirtioDevice;

pub use interrupt::{VirtioPciInterrupt, ISR_CONFIG, ISR_QUEUE, VIRTIO_MSI_NO_VECTOR};

/// Red Hat / Qumranet, the virtio vendor.
pub const VIRTIO_PCI_VENDOR: u16 = 0x1af4;
/// Modern device IDs are this plus the virtio device type (§4.1.2.1).
pub const VIRTIO_PCI_DEVICE_BASE: u16 = 0x1040;
/// The MSI-X BAR (QEMU `msix_bar_idx`).
pub const MSIX_BAR: u8 = 1;
/// The modern register BAR (QEMU `modern_mem_bar_idx`).
pub const MODERN_BAR: u8 = 4;
/// BAR4's size: `pow2ceil(notify.offset + notify.size)`.
pub const MODERN_BAR_SIZE: u64 = 0x4000;
pub const COMMON_OFFSET: u64 = 0x0000;
pub const ISR_OFFSET: u64 = 0x1000;
pub const DEVICE_OFFSET: u64 = 0x2000;
pub const NOTIFY_OFFSET: u64 = 0x3000;
/// Each region's length; notify: 4 bytes × VIRTIO_QUEUE_MAX (1024).
pub const REGION_SIZE: u64 = 0x1000;
pub const NOTIFY_OFF_MULTIPLIER: u32 = 4;

/// `cfg_type` of the virtio capabilities (§4.1.4).
const CAP_COMMON_CFG: u8 = 1;
const CAP_NOTIFY_CFG: u8 = 2;
const CAP_ISR_CFG: u8 = 3;
const CAP_DEVICE_CFG: u8 = 4;
const CAP_PCI_CFG: u8 = 5;

#[derive(Debug, thiserror::Error)]
pub enum VirtioPciError {
    #[error("virtio-pci: {0}")]
    Pci(#[from] PciError),
    #[error("virtio-pci: cannot create a queue eventfd: {0}")]
    EventFd(std::io::Error),
}

/// A queue kick the VMM should serve with a KVM ioeventfd: any write of any
/// width to `offset` inside BAR `bar` (no datamatch, like QEMU's
/// `memory_region_add_eventfd(.., size 0, ..)`) signals `eventfd`.
#[derive(Clone)]
pub struct IoEventSpec {
    pub queue: u16,
    pub bar: u8,
    pub offset: u64,
    pub eventfd: Arc<EventFd>,
}

/// The class code (class << 16 | subclass << 8) QEMU gives each device type
/// (the `class_id` in hw/virtio/virtio-*-pci.c).
pub fn class_for_device_type(device_type: u16) -> u32 {
    let class_id: u32 = match device_type {
        1 => 0x0200,     // net: PCI_CLASS_NETWORK_ETHERNET
        2 | 8 => 0x0100, // blk, scsi: PCI_CLASS_STORAGE_SCSI
        3 => 0x0780,     // console: PCI_CLASS_COMMUNICATION_OTHER
        9 => 0x0002,     // 9p
        16 => 0x0380,    // gpu: PCI_CLASS_DISPLAY_OTHER
        18 => 0x0980,    // input: PCI_CLASS_INPUT_OTHER
        19 => 0x0780,    // vsock
        26 => 0x0180,    // fs: PCI_CLASS_STORAGE_OTHER
        _ => 0x00ff,     // balloon, rng, ...: PCI_CLASS_OTHERS
    };
    class_id << 8
}

/// Per-queue configuration the driver writes before enabling (§4.1.4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QueueConfig {
    pub(crate) max_size: u16,
    pub(crate) size: u16,
    pub(crate) enabled: bool,
    pub(crate) desc: u64,
    pub(crate) driver: u64,
    pub(crate) device: u64,
}

impl QueueConfig {
    fn new(max_size: u16) -> Self {
        Self {
            max_size,
            size: max_size,
            enabled: false,
            desc: 0,
            driver: 0,
            device: 0,
        }
    }
}

/// A virtio device on PCI.
pub struct VirtioPciDevice {
    config: PciConfigSpace,
    device: Arc<Mutex<dyn VirtioDevice>>,
    mem: GuestMemoryMmap,
    interrupt: Arc<VirtioPciInterrupt>,
    nvectors: u16,
    /// The PBA's offset in BAR1.
    pba_offset: u64,
    pci_cfg_cap: u8,
    offered: u64,
    device_feature_select: u32,
    driver_feature_select: u32,
    driver_features: u64,
    status: u8,
    queue_select: u16,
    queues: Vec<QueueConfig>,
    kicks: Vec<Arc<EventFd>>,
    active: bool,
}

impl VirtioPciDevice {
    /// Wraps `device` with `nvectors` MSI-X vectors delivered to `msi` (0:
    /// no MSI-X, INTx only; QEMU's virtio-blk default is queues + 1) and INTx
    /// on `intx`. `mem` is where the queues live.
    pub fn new(
        device: Arc<Mutex<dyn VirtioDevice>>,
        mem: GuestMemoryMmap,
        nvectors: u16,
        msi: Arc<dyn MsiVectors>,
        intx: Option<Arc<dyn IntxLine>>,
    ) -> Result<Self, VirtioPciError> {
        let (device_type, max_sizes, device_features) = {
            let d = device.lock().unwrap_or_else(|e| e.into_inner());
            (
                d.device_type(),
                d.queue_max_sizes().to_vec(),
                d.device_features(),
            )
        };
        let mut config = PciConfigSpace::new(
            VIRTIO_PCI_VENDOR,
            VIRTIO_PCI_DEVICE_BASE.wrapping_add(device_type),
            class_for_device_type(device_type),
            1,
        );
        config.set_interrupt_pin(1);
        let cap = |cfg_type: u8, offset: u64, extra: &[u8]| {
            let mut body = vec![16 + extra.len() as u8, cfg_type, MODERN_BAR, 0, 0, 0];
            body.extend_from_slice(&(offset as u32).to_le_bytes());
            body.extend_from_slice(&(REGION_SIZE as u32).to_le_bytes());
            body.extend_from_slice(extra);
            body
        };
        config.add_capability(CAP_ID_VENDOR, &cap(CAP_COMMON_CFG, COMMON_OFFSET, &[]))?;
        config.add_capability(CAP_ID_VENDOR, &cap(CAP_ISR_CFG, ISR_OFFSET, &[]))?;
        config.add_capability(CAP_ID_VENDOR, &cap(CAP_DEVICE_CFG, DEVICE_OFFSET, &[]))?;
        let mult = NOTIFY_OFF_MULTIPLIER.to_le_bytes();
        config.add_capability(CAP_ID_VENDOR, &cap(CAP_NOTIFY_CFG, NOTIFY_OFFSET, &mult))?;
        // The configuration access window: bar, offset and length are zero
        // and guest-writable, followed by the data dword (§4.1.4.9).
        let mut body = vec![20, CAP_PCI_CFG, 0, 0, 0, 0];
        body.extend_from_slice(&[0; 12]);
        let pci_cfg_cap = config.add_capability(CAP_ID_VENDOR, &body)?;
        let o = usize::from(pci_cfg_cap);
        config.set_writable(o + 4, &[0xff]);
        config.set_writable(o + 8, &[0xff; 12]);
        config.add_bar(
            MODERN_BAR,
            BarKind::Memory64 { prefetchable: true },
            MODERN_BAR_SIZE,
        )?;
        let mut pba_offset = 0;
        let msix = if nvectors > 0 {
            let mut m = Msix::new(nvectors, msi);
            let (size, table, pba) = exclusive_bar_layout(m.nvectors());
            config.add_bar(
                MSIX_BAR,
                BarKind::Memory32 {
                    prefetchable: false,
                },
                size,
            )?;
            m.add_capability(&mut config, MSIX_BAR, table as u32, MSIX_BAR, pba as u32)?;
            pba_offset = pba;
            Some(m)
        } else {
            None
        };
        let nvectors = msix.as_ref().map_or(0, Msix::nvectors);
        let kicks = max_sizes
            .iter()
            .map(|_| EventFd::new(libc::EFD_NONBLOCK).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()
            .map_err(VirtioPciError::EventFd)?;
        Ok(Self {
            config,
            device,
            mem,
            interrupt: Arc::new(VirtioPciInterrupt::new(msix, max_sizes.len(), intx)),
            nvectors,
            pba_offset,
            pci_cfg_cap,
            offered: common::offered_features(device_features),
            device_feature_select: 0,
            driver_feature_select: 0,
            driver_features: 0,
            status: 0,
            queue_select: 0,
            queues: max_sizes.into_iter().map(QueueConfig::new).collect(),
            kicks,
            active: false,
        })
    }

    /// The interrupt state, also what the device was activated with.
    pub fn interrupt(&self) -> Arc<VirtioPciInterrupt> {
        self.interrupt.clone()
    }

    /// The device model.
    pub fn device(&self) -> Arc<Mutex<dyn VirtioDevice>> {
        self.device.clone()
    }

    /// Guest memory for the next activation (after the VMM rebuilt it).
    pub fn set_memory(&mut self, mem: GuestMemoryMmap) {
        self.mem = mem;
    }

    /// The device status register (§2.1).
    pub fn status(&self) -> u8 {
        self.status
    }

    /// Whether the device was activated (DRIVER_OK accepted).
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// The features the transport offers: the device's, filtered, plus VERSION_1.
    pub fn offered_features(&self) -> u64 {
        self.offered
    }

    /// One ioeventfd per queue at its notify address in BAR4.
    pub fn ioevents(&self) -> Vec<IoEventSpec> {
        self.kicks
            .iter()
            .enumerate()
            .map(|(q, fd)| IoEventSpec {
                queue: q as u16,
                bar: MODERN_BAR,
                offset: NOTIFY_OFFSET + q as u64 * u64::from(NOTIFY_OFF_MULTIPLIER),
                eventfd: fd.clone(),
            })
            .collect()
    }

    /// Queue `queue`'s ioeventfd fired: drains it and, while the device is
    /// active, notifies the device. Kicks before DRIVER_OK or for a queue
    /// that does not exist are dropped.
    pub fn handle_kick(&mut self, queue: u16) {
        if let Some(fd) = self.kicks.get(usize::from(queue)) {
            // Nonblocking: nothing to read (the backend already did) is fine.
            let _ = fd.read();
        }
        self.notify_device(queue);
    }

    fn notify_device(&mut self, queue: u16) {
        if self.active && usize::from(queue) < self.queues.len() {
            lock_dev(&self.device).queue_notify(queue);
        }
    }

    fn modern_read(&mut self, offset: u64, data: &mut [u8]) {
        match offset {
            o if o < ISR_OFFSET => self.common_read(o - COMMON_OFFSET, data),
            o if o < DEVICE_OFFSET => {
                data.fill(0);
                data[0] = self.interrupt.read_isr();
            }
            o if o < NOTIFY_OFFSET => lock_dev(&self.device).read_config(o - DEVICE_OFFSET, data),
            _ => data.fill(0),
        }
    }

    fn modern_write(&mut self, offset: u64, data: &[u8]) {
        match offset {
            o if o < ISR_OFFSET => self.common_write(o - COMMON_OFFSET, data),
            o if o < DEVICE_OFFSET => {}
            o if o < NOTIFY_OFFSET => lock_dev(&self.device).write_config(o - DEVICE_OFFSET, data),
            o if o < NOTIFY_OFFSET + REGION_SIZE => {
                // QEMU `virtio_pci_notify_write`: the queue is the offset
                // over the multiplier, whatever was written.
                let q = (o - NOTIFY_OFFSET) / u64::from(NOTIFY_OFF_MULTIPLIER);
                self.notify_device(q as u16);
            }
            _ => {}
        }
    }

    fn msix_read(&self, offset: u64, data: &mut [u8]) {
        let v = self.interrupt.lock();
        match v.msix.as_ref() {
            Some(m) if offset < m.table_len() => m.table_read(offset, data),
            Some(m) if offset >= self.pba_offset => m.pba_read(offset - self.pba_offset, data),
            _ => data.fill(0),
        }
    }

    fn msix_write(&self, offset: u64, data: &[u8]) {
        if let Some(m) = self.interrupt.lock().msix.as_mut() {
            if offset < m.table_len() {
                m.table_write(offset, data);
            }
        }
    }

    /// The PCI configuration access window's target: (BAR offset, length)
    /// when it names BAR4 with a 1, 2 or 4 byte access inside it.
    fn pci_cfg_target(&self) -> Option<(u64, usize)> {
        let o = usize::from(self.pci_cfg_cap);
        let bar = self.config.byte(o + 4);
        let offset = u32::from_le_bytes(self.config.read((o + 8) / 4).to_le_bytes());
        let len = self.config.read((o + 12) / 4);
        let ok = bar == MODERN_BAR
            && matches!(len, 1 | 2 | 4)
            && offset.is_multiple_of(len)
            && u64::from(offset) + u64::from(len) <= MODERN_BAR_SIZE;
        ok.then_some((u64::from(offset), len as usize))
    }

    fn pci_cfg_data_reg(&self) -> usize {
        (usize::from(self.pci_cfg_cap) + 16) / 4
    }
}

/// Splits an access wider than 4 bytes into dwords (QEMU's regions have
/// `max_access_size` 4); widths other than 1, 2, 4 and 8 read all ones.
fn split_read(offset: u64, data: &mut [u8], mut f: impl FnMut(u64, &mut [u8])) {
    match data.len() {
        1 | 2 | 4 => f(offset, data),
        8 => {
            let (lo, hi) = data.split_at_mut(4);
            f(offset, lo);
            f(offset + 4, hi);
        }
        _ => data.fill(0xff),
    }
}

fn split_write(offset: u64, data: &[u8], mut f: impl FnMut(u64, &[u8])) {
    match data.len() {
        1 | 2 | 4 => f(offset, data),
        8 => {
            f(offset, &data[..4]);
            f(offset + 4, &data[4..]);
        }
        _ => {}
    }
}

impl PciDevice for VirtioPciDevice {
    fn read_config(&mut self, reg_idx: usize) -> u32 {
        if reg_idx == self.pci_cfg_data_reg() {
            if let Some((offset, len)) = self.pci_cfg_target() {
                let mut b = [0u8; 4];
                self.modern_read(offset, &mut b[..len]);
                return u32::from_le_bytes(b);
            }
        }
        self.config.read(reg_idx)
    }

    fn write_config(&mut self, reg_idx: usize, offset: u64, data: &[u8]) {
        self.config.write(reg_idx, offset, data);
        self.interrupt.config_written(&self.config);
        if reg_idx == self.pci_cfg_data_reg() {
            if let Some((bar_offset, len)) = self.pci_cfg_target() {
                let value = self.config.read(reg_idx).to_le_bytes();
                self.modern_write(bar_offset, &value[..len]);
            }
        }
    }

    /// Machine reset: the device and the function back to power-on.
    fn reset(&mut self) {
        self.reset_device();
        self.config.reset();
        if let Some(m) = self.interrupt.lock().msix.as_mut() {
            m.reset();
        }
        self.interrupt.config_written(&self.config);
    }

    fn bars(&self) -> Vec<PciBar> {
        self.config.bars()
    }

    fn bar_read(&mut self, bar: u8, offset: u64, data: &mut [u8]) {
        match bar {
            MODERN_BAR if offset < MODERN_BAR_SIZE => {
                split_read(offset, data, |o, d| self.modern_read(o, d))
            }
            MSIX_BAR if self.nvectors > 0 => self.msix_read(offset, data),
            _ => data.fill(0xff),
        }
    }

    fn bar_write(&mut self, bar: u8, offset: u64, data: &[u8]) {
        match bar {
            MODERN_BAR if offset < MODERN_BAR_SIZE => {
                split_write(offset, data, |o, d| self.modern_write(o, d))
            }
            MSIX_BAR if self.nvectors > 0 => self.msix_write(offset, data),
            _ => {}
        }
    }
}

/// A device whose lock was poisoned by a panic is still used (see `bus::lock`).
fn lock_dev(d: &Mutex<dyn VirtioDevice>) -> MutexGuard<'_, dyn VirtioDevice + 'static> {
    d.lock().unwrap_or_else(|e| e.into_inner())
}
