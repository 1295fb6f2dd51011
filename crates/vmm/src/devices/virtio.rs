//! Glue between virtio devices and the backend thread: queue kicks
//! (ioeventfds) reach the transport, a device's own event sources (block
//! completions) reach the device while it is active, and `stop` drains it.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};

use devices::virtio::pci::VirtioPciDevice;
use devices::virtio::{ActivateError, ActiveQueue, EventSource, VirtioDevice, VirtioInterrupt};
use vm_memory::GuestMemoryMmap;

use crate::backend::{BackendHandle, Drainable, Subscriber};
use crate::sync::lock;

/// The transport's view of a device model: every call is the model's, and
/// while it is active its event sources are watched on the backend thread.
/// The backend thread locks only the model, never this wrapper or the
/// transport, so it cannot deadlock with a vCPU inside the transport.
pub struct Served<D: VirtioDevice + 'static> {
    inner: Arc<Mutex<D>>,
    backend: BackendHandle,
    watched: Vec<RawFd>,
    /// The model's queue sizes (fixed at construction), so the transport can
    /// borrow them without holding the model's lock.
    sizes: Vec<u16>,
}

impl<D: VirtioDevice + 'static> Served<D> {
    pub fn new(inner: Arc<Mutex<D>>, backend: BackendHandle) -> Self {
        backend.add_drainable(Arc::new(Mutex::new(Drain(inner.clone()))));
        let sizes = lock(&inner).queue_max_sizes().to_vec();
        Self {
            inner,
            backend,
            watched: Vec::new(),
            sizes,
        }
    }

    fn unwatch(&mut self) {
        for fd in self.watched.drain(..) {
            self.backend.unwatch(fd);
        }
    }
}

impl<D: VirtioDevice + 'static> VirtioDevice for Served<D> {
    fn device_type(&self) -> u16 {
        lock(&self.inner).device_type()
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &self.sizes
    }
    fn device_features(&self) -> u64 {
        lock(&self.inner).device_features()
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        lock(&self.inner).read_config(offset, data)
    }
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        lock(&self.inner).write_config(offset, data)
    }
    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        features: u64,
        queues: Vec<ActiveQueue>,
        interrupt: Arc<dyn VirtioInterrupt>,
    ) -> Result<(), ActivateError> {
        let sources: Vec<EventSource> = {
            let mut d = lock(&self.inner);
            d.activate(mem, features, queues, interrupt)?;
            d.event_sources()
        };
        self.unwatch();
        for s in sources {
            self.backend.watch(
                s.fd,
                s.tag,
                Arc::new(Mutex::new(Events(self.inner.clone()))),
            );
            self.watched.push(s.fd);
        }
        Ok(())
    }
    fn queue_notify(&mut self, queue: u16) {
        lock(&self.inner).queue_notify(queue)
    }
    fn event_sources(&self) -> Vec<EventSource> {
        lock(&self.inner).event_sources()
    }
    fn handle_event(&mut self, tag: u32) {
        lock(&self.inner).handle_event(tag)
    }
    fn reset(&mut self) {
        self.unwatch();
        lock(&self.inner).reset()
    }
    fn pause(&mut self) {
        lock(&self.inner).pause()
    }
    fn resume(&mut self) {
        lock(&self.inner).resume()
    }
    fn needs_reset(&self) -> bool {
        lock(&self.inner).needs_reset()
    }
}

/// A device's own event source became readable.
struct Events<D: VirtioDevice>(Arc<Mutex<D>>);

impl<D: VirtioDevice> Subscriber for Events<D> {
    fn ready(&mut self, tag: u32) {
        lock(&self.0).handle_event(tag);
    }
}

/// `stop` drains the device; `cont` lets it go on (and retry parked requests).
struct Drain<D: VirtioDevice>(Arc<Mutex<D>>);

impl<D: VirtioDevice> Drainable for Drain<D> {
    fn pause(&mut self) {
        lock(&self.0).pause();
    }
    fn resume(&mut self) {
        lock(&self.0).resume();
    }
}

/// The guest rang queue `queue`'s doorbell (its ioeventfd fired).
pub struct Kick {
    pub transport: Arc<Mutex<VirtioPciDevice>>,
    pub queue: u16,
}

impl Subscriber for Kick {
    fn ready(&mut self, _: u32) {
        lock(&self.transport).handle_kick(self.queue);
    }
}

/// Watches every doorbell of `transport` on the backend thread.
pub fn watch_kicks(transport: &Arc<Mutex<VirtioPciDevice>>, backend: &BackendHandle) {
    for io in lock(transport).ioevents() {
        backend.watch(
            io.eventfd.as_raw_fd(),
            u32::from(io.queue),
            Arc::new(Mutex::new(Kick {
                transport: transport.clone(),
                queue: io.queue,
            })),
        );
    }
}
