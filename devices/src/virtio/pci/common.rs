//! The common configuration structure (virtio 1.2 §4.1.4.3), device status
//! (§2.1, §3.1.1), feature negotiation (§2.2, §6) and activation.
//!
//! Register semantics follow QEMU's `virtio_pci_common_read/write`: a field
//! is addressed by its offset and the access is truncated to its width; the
//! 64-bit queue addresses are two 32-bit halves; unknown offsets read 0.

use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_NEEDS_RESET,
    VIRTIO_F_VERSION_1,
};
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestAddress;

use super::{lock_dev, QueueConfig, VirtioPciDevice, VIRTIO_MSI_NO_VECTOR};
use crate::virtio::{ActivateError, ActiveQueue, VirtioInterrupt};

const DEVICE_FEATURE_SELECT: u64 = 0x00;
const DEVICE_FEATURE: u64 = 0x04;
const DRIVER_FEATURE_SELECT: u64 = 0x08;
const DRIVER_FEATURE: u64 = 0x0c;
const CONFIG_MSIX_VECTOR: u64 = 0x10;
const NUM_QUEUES: u64 = 0x12;
const DEVICE_STATUS: u64 = 0x14;
const CONFIG_GENERATION: u64 = 0x15;
const QUEUE_SELECT: u64 = 0x16;
const QUEUE_SIZE: u64 = 0x18;
const QUEUE_MSIX_VECTOR: u64 = 0x1a;
const QUEUE_ENABLE: u64 = 0x1c;
const QUEUE_NOTIFY_OFF: u64 = 0x1e;
const QUEUE_DESC_LO: u64 = 0x20;
const QUEUE_DESC_HI: u64 = 0x24;
const QUEUE_DRIVER_LO: u64 = 0x28;
const QUEUE_DRIVER_HI: u64 = 0x2c;
const QUEUE_DEVICE_LO: u64 = 0x30;
const QUEUE_DEVICE_HI: u64 = 0x34;

const STATUS_FEATURES_OK: u8 = VIRTIO_CONFIG_S_FEATURES_OK as u8;
const STATUS_DRIVER_OK: u8 = VIRTIO_CONFIG_S_DRIVER_OK as u8;
const STATUS_NEEDS_RESET: u8 = VIRTIO_CONFIG_S_NEEDS_RESET as u8;

/// Transport feature bits (24..41, §6) this transport implements.
const TRANSPORT_FEATURES: u64 = 1 << VIRTIO_RING_F_INDIRECT_DESC | 1 << VIRTIO_RING_F_EVENT_IDX;
const VERSION_1: u64 = 1 << VIRTIO_F_VERSION_1;

/// What the transport offers given the device's features: the device-type
/// bits (0-23) and the ring features it implements that the device also
/// lists, never other transport bits (e.g. ACCESS_PLATFORM), always VERSION_1.
pub(super) fn offered_features(device: u64) -> u64 {
    let device_specific = (1 << 24) - 1;
    device & (device_specific | TRANSPORT_FEATURES) | VERSION_1
}

/// Replaces `width` bits at `shift` of `v` with `x`.
fn set_half(v: u64, high: bool, x: u32) -> u64 {
    if high {
        (v & 0xffff_ffff) | u64::from(x) << 32
    } else {
        (v & !0xffff_ffff) | u64::from(x)
    }
}

impl VirtioPciDevice {
    fn selected(&self) -> Option<&QueueConfig> {
        self.queues.get(usize::from(self.queue_select))
    }

    pub(super) fn common_read(&mut self, offset: u64, data: &mut [u8]) {
        let sel = usize::from(self.queue_select);
        let q = self.selected().copied();
        let half = |v: u64, high: bool| if high { v >> 32 } else { v & 0xffff_ffff };
        let value: u64 = match offset {
            DEVICE_FEATURE_SELECT => self.device_feature_select.into(),
            DEVICE_FEATURE => match self.device_feature_select {
                0 | 1 => half(self.offered, self.device_feature_select == 1),
                _ => 0,
            },
            DRIVER_FEATURE_SELECT => self.driver_feature_select.into(),
            DRIVER_FEATURE => match self.driver_feature_select {
                0 | 1 => half(self.driver_features, self.driver_feature_select == 1),
                _ => 0,
            },
            CONFIG_MSIX_VECTOR => self.interrupt.lock().config.into(),
            NUM_QUEUES => self.queues.len() as u64,
            // A device that found its rings corrupt stops and asks for a
            // reset (virtio 1.2 §2.1.2, QEMU's virtio_error()).
            DEVICE_STATUS => {
                let broken = self.active && super::lock_dev(&self.device).needs_reset();
                (self.status | if broken { STATUS_NEEDS_RESET } else { 0 }).into()
            }
            CONFIG_GENERATION => self.interrupt.config_generation().into(),
            QUEUE_SELECT => self.queue_select.into(),
            QUEUE_SIZE => q.map_or(0, |q| q.size.into()),
            QUEUE_MSIX_VECTOR => {
                let v = self.interrupt.lock();
                v.queue
                    .get(sel)
                    .copied()
                    .unwrap_or(VIRTIO_MSI_NO_VECTOR)
                    .into()
            }
            QUEUE_ENABLE => q.map_or(0, |q| q.enabled.into()),
            // notify_off is the queue index (QEMU), times the multiplier.
            QUEUE_NOTIFY_OFF => self.queue_select.into(),
            QUEUE_DESC_LO | QUEUE_DESC_HI => q.map_or(0, |q| half(q.desc, offset == QUEUE_DESC_HI)),
            QUEUE_DRIVER_LO | QUEUE_DRIVER_HI => {
                q.map_or(0, |q| half(q.driver, offset == QUEUE_DRIVER_HI))
            }
            QUEUE_DEVICE_LO | QUEUE_DEVICE_HI => {
                q.map_or(0, |q| half(q.device, offset == QUEUE_DEVICE_HI))
            }
            _ => 0,
        };
        let bytes = value.to_le_bytes();
        let n = data.len().min(8);
        data[..n].copy_from_slice(&bytes[..n]);
    }

    pub(super) fn common_write(&mut self, offset: u64, data: &[u8]) {
        let mut b = [0u8; 8];
        let n = data.len().min(8);
        b[..n].copy_from_slice(&data[..n]);
        let value = u64::from_le_bytes(b);
        let v32 = value as u32;
        let v16 = value as u16;
        let sel = usize::from(self.queue_select);
        let nvectors = self.nvectors;
        let vector = |v: u16| {
            if v < nvectors {
                v
            } else {
                VIRTIO_MSI_NO_VECTOR
            }
        };
        let features_ok = self.status & STATUS_FEATURES_OK != 0;
        match offset {
            DEVICE_FEATURE_SELECT => self.device_feature_select = v32,
            DRIVER_FEATURE_SELECT => self.driver_feature_select = v32,
            // Features are fixed once FEATURES_OK is set (§3.1.1).
            DRIVER_FEATURE if !features_ok && self.driver_feature_select < 2 => {
                self.driver_features =
                    set_half(self.driver_features, self.driver_feature_select == 1, v32);
            }
            // An invalid vector reads back as NO_VECTOR so the driver sees
            // the failure (§4.1.5.1.2; QEMU does the same).
            CONFIG_MSIX_VECTOR => self.interrupt.lock().config = vector(v16),
            DEVICE_STATUS => self.write_status(value as u8),
            QUEUE_SELECT => self.queue_select = v16,
            QUEUE_MSIX_VECTOR => {
                if let Some(q) = self.interrupt.lock().queue.get_mut(sel) {
                    *q = vector(v16);
                }
            }
            _ => {
                let Some(q) = self.queues.get_mut(sel) else {
                    return;
                };
                // A queue's configuration is frozen once enabled (§4.1.4.3.2).
                if q.enabled {
                    return;
                }
                match offset {
                    QUEUE_SIZE => q.size = v16,
                    // Only 1 enables; queues are disabled by reset.
                    QUEUE_ENABLE if v16 == 1 => q.enabled = true,
                    QUEUE_DESC_LO | QUEUE_DESC_HI => {
                        q.desc = set_half(q.desc, offset == QUEUE_DESC_HI, v32)
                    }
                    QUEUE_DRIVER_LO | QUEUE_DRIVER_HI => {
                        q.driver = set_half(q.driver, offset == QUEUE_DRIVER_HI, v32)
                    }
                    QUEUE_DEVICE_LO | QUEUE_DEVICE_HI => {
                        q.device = set_half(q.device, offset == QUEUE_DEVICE_HI, v32)
                    }
                    _ => {}
                }
            }
        }
    }

    /// The features the driver accepted, limited to what was offered.
    fn negotiated(&self) -> u64 {
        self.driver_features & self.offered
    }

    /// device_status (§2.1): 0 resets; FEATURES_OK is refused (the whole
    /// write dropped, as QEMU's `virtio_set_status` does) unless the driver
    /// accepted VERSION_1; DRIVER_OK activates the device, and a failed
    /// activation sets DEVICE_NEEDS_RESET with a configuration interrupt.
    fn write_status(&mut self, value: u8) {
        if value == 0 {
            self.reset_device();
            return;
        }
        let old = self.status;
        if value & STATUS_FEATURES_OK != 0
            && old & STATUS_FEATURES_OK == 0
            && self.negotiated() & VERSION_1 == 0
        {
            log::warn!("virtio-pci: driver did not accept VIRTIO_F_VERSION_1; FEATURES_OK refused");
            return;
        }
        // Bits once set stay set until reset (§2.1.2).
        self.status = old | value;
        if value & STATUS_DRIVER_OK != 0 && !self.active && old & STATUS_NEEDS_RESET == 0 {
            self.interrupt.set_driver_ok(true);
            if let Err(e) = self.activate() {
                log::warn!("virtio-pci: {e}; DEVICE_NEEDS_RESET");
                self.status |= STATUS_NEEDS_RESET;
                self.interrupt.raise_config();
            }
        }
    }

    /// Builds the enabled queues and hands them to the device.
    fn activate(&mut self) -> Result<(), ActivateError> {
        if self.status & STATUS_FEATURES_OK == 0 {
            return Err(ActivateError::Failed(
                "DRIVER_OK without FEATURES_OK".into(),
            ));
        }
        let features = self.negotiated();
        let mut queues = Vec::new();
        for (i, c) in self.queues.iter().enumerate().filter(|(_, c)| c.enabled) {
            queues.push(ActiveQueue {
                index: i as u16,
                queue: self.build_queue(i, c, features)?,
            });
        }
        let interrupt: std::sync::Arc<dyn VirtioInterrupt> = self.interrupt.clone();
        lock_dev(&self.device).activate(self.mem.clone(), features, queues, interrupt)?;
        self.active = true;
        Ok(())
    }

    /// One queue from the driver's configuration, validated: size a power of
    /// two no larger than the maximum, rings aligned (§2.7) and inside RAM.
    fn build_queue(
        &self,
        i: usize,
        c: &QueueConfig,
        features: u64,
    ) -> Result<Queue, ActivateError> {
        let fail = |what: String| ActivateError::Failed(format!("queue {i}: {what}"));
        let mut q =
            Queue::new(c.max_size).map_err(|e| fail(format!("max size {}: {e}", c.max_size)))?;
        q.try_set_size(c.size)
            .map_err(|e| fail(format!("size {}: {e}", c.size)))?;
        q.try_set_desc_table_address(GuestAddress(c.desc))
            .map_err(|e| fail(format!("descriptor table {:#x}: {e}", c.desc)))?;
        q.try_set_avail_ring_address(GuestAddress(c.driver))
            .map_err(|e| fail(format!("driver area {:#x}: {e}", c.driver)))?;
        q.try_set_used_ring_address(GuestAddress(c.device))
            .map_err(|e| fail(format!("device area {:#x}: {e}", c.device)))?;
        q.set_event_idx(features & (1 << VIRTIO_RING_F_EVENT_IDX) != 0);
        q.set_ready(true);
        if !q.is_valid(&self.mem) {
            return Err(fail("rings are not in guest RAM".into()));
        }
        Ok(q)
    }

    /// Device reset (status written 0, or machine reset; §2.4): the device
    /// stops, and the transport's registers return to their initial values.
    /// MSI-X table contents are the function's and stay.
    pub(super) fn reset_device(&mut self) {
        lock_dev(&self.device).reset();
        self.active = false;
        self.status = 0;
        self.device_feature_select = 0;
        self.driver_feature_select = 0;
        self.driver_features = 0;
        self.queue_select = 0;
        for q in &mut self.queues {
            *q = QueueConfig::new(q.max_size);
        }
        self.interrupt.reset();
    }
}
