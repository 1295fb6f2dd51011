//! The contract between a virtio device model and its transport (virtio 1.2
//! §2 "Basic Facilities of a Virtio Device", §4.1 "Virtio Over PCI Bus").
//!
//! The transport (`virtio::pci`) owns the device status, feature negotiation,
//! queue configuration and interrupt delivery (MSI-X vector or INTx + ISR);
//! the device model owns its configuration space and what it does with the
//! queues once the driver sets DRIVER_OK.

use std::os::fd::RawFd;
use std::sync::Arc;

use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;

/// How a device tells the driver that something happened. The transport maps
/// this to the MSI-X vector the driver chose for the queue or for
/// configuration changes, or to ISR bits and INTx.
pub trait VirtioInterrupt: Send + Sync {
    /// The used ring of queue `queue` has new entries (the device has already
    /// honoured VIRTQ_AVAIL_F_NO_INTERRUPT / used_event suppression).
    fn notify_queue(&self, queue: u16);
    /// The device configuration changed (virtio 1.2 §2.5.1), e.g. a resize.
    fn notify_config(&self);
}

/// A queue the driver enabled, handed to the device at activation.
pub struct ActiveQueue {
    pub index: u16,
    pub queue: Queue,
}

/// Why the device refused activation; the transport sets DEVICE_NEEDS_RESET.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ActivateError {
    #[error("virtio device activation failed: {0}")]
    Failed(String),
}

/// An extra file descriptor the device wants served on the backend event
/// thread (e.g. a block completion eventfd), with a device-chosen tag that
/// comes back in [`VirtioDevice::handle_event`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventSource {
    pub fd: RawFd,
    pub tag: u32,
}

/// What a virtio device model implements.
///
/// Threading: the transport's register accesses run on vCPU threads; queue
/// notifications (ioeventfd) and [`EventSource`]s are served on the VMM's
/// single backend event thread. All calls hold the device's mutex.
pub trait VirtioDevice: Send {
    /// Virtio device ID (virtio 1.2 §5): 2 for block, 1 for net, 5 for balloon.
    fn device_type(&self) -> u16;
    /// The maximum size of each queue; the slice's length is the queue count.
    fn queue_max_sizes(&self) -> &[u16];
    /// Feature bits the device offers. The transport adds VIRTIO_F_VERSION_1
    /// and the ring features it implements (RING_EVENT_IDX, INDIRECT_DESC) and
    /// only offers those the device also lists.
    fn device_features(&self) -> u64;
    /// Reads the device-specific configuration space (offset from its start).
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes the device-specific configuration space.
    fn write_config(&mut self, offset: u64, data: &[u8]);
    /// DRIVER_OK: the driver accepted `features` and enabled `queues`.
    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        features: u64,
        queues: Vec<ActiveQueue>,
        interrupt: Arc<dyn VirtioInterrupt>,
    ) -> Result<(), ActivateError>;
    /// The driver notified queue `queue` (a notify-region write, or its ioeventfd).
    fn queue_notify(&mut self, queue: u16);
    /// File descriptors to serve on the backend thread while active.
    fn event_sources(&self) -> Vec<EventSource> {
        Vec::new()
    }
    /// One of [`VirtioDevice::event_sources`] is readable.
    fn handle_event(&mut self, _tag: u32) {}
    /// Device reset (status written 0, or machine reset): back to the state
    /// before activation. Requests still in flight are completed or dropped
    /// before it returns; nothing is written to guest memory afterwards.
    fn reset(&mut self);
    /// The VM is about to pause: finish or park every in-flight request so
    /// that, once this returns, the device writes neither guest memory nor
    /// its backend until [`VirtioDevice::resume`] (QEMU's drain).
    fn pause(&mut self) {}
    /// The VM runs again (`cont`): retry what a `stop` error policy parked.
    fn resume(&mut self) {}
    /// The device found the driver's rings or descriptors unusable and
    /// stopped processing them: the transport sets DEVICE_NEEDS_RESET (0x40)
    /// in device_status (virtio 1.2 §2.1.2). The device also calls
    /// [`VirtioInterrupt::notify_config`] once when this becomes true.
    fn needs_reset(&self) -> bool {
        false
    }
}
