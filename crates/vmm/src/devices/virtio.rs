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
    watch: Watched<D>,
    /// The model's queue sizes (fixed at construction), so the transport can
    /// borrow them without holding the model's lock.
    sizes: Vec<u16>,
}

/// The event sources of a model being watched on the backend thread. A
/// model whose sources change while it is active (a NIC losing its
/// backend to `netdev_del`) has them watched again with [`Watched::refresh`].
pub struct Watched<D: VirtioDevice + 'static> {
    inner: Arc<Mutex<D>>,
    backend: BackendHandle,
    fds: Arc<Mutex<Vec<RawFd>>>,
}

impl<D: VirtioDevice + 'static> Clone for Watched<D> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            backend: self.backend.clone(),
            fds: self.fds.clone(),
        }
    }
}

impl<D: VirtioDevice + 'static> Watched<D> {
    fn unwatch(&self) {
        for fd in lock(&self.fds).drain(..) {
            self.backend.unwatch(fd);
        }
    }

    fn watch(&self, sources: Vec<EventSource>) {
        let mut fds = lock(&self.fds);
        for s in sources {
            self.backend.watch(
                s.fd,
                s.tag,
                Arc::new(Mutex::new(Events(self.inner.clone()))),
            );
            fds.push(s.fd);
        }
    }

    /// Stops watching the model's old sources and watches its present ones.
    /// Call it before closing a descriptor the model gave up: the backend
    /// thread serves watch changes in order, so the old one is forgotten
    /// before its number can come back.
    pub fn refresh(&self) {
        self.unwatch();
        let sources = lock(&self.inner).event_sources();
        self.watch(sources);
    }
}

impl<D: VirtioDevice + 'static> Served<D> {
    pub fn new(inner: Arc<Mutex<D>>, backend: BackendHandle) -> Self {
        backend.add_drainable(Arc::new(Mutex::new(Drain(inner.clone()))));
        let sizes = lock(&inner).queue_max_sizes().to_vec();
        Self {
            watch: Watched {
                inner: inner.clone(),
                backend,
                fds: Arc::new(Mutex::new(Vec::new())),
            },
            inner,
            sizes,
        }
    }

    /// A handle on what the backend thread watches for this model.
    pub fn watched(&self) -> Watched<D> {
        self.watch.clone()
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
        self.watch.unwatch();
        self.watch.watch(sources);
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
        self.watch.unwatch();
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
