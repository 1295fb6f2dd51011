//! What the virtio device tests share: guest RAM in anonymous mappings, a
//! split virtqueue built in it by hand the way a driver does (virtio 1.2
//! §2.7), and an interrupt sink that records what the device signalled.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::{ActiveQueue, VirtioInterrupt, VIRTQUEUE_MAX_SIZE};

// Descriptor flags (§2.7.5).
pub const DESC_F_NEXT: u16 = 1;
pub const DESC_F_WRITE: u16 = 2;
pub const DESC_F_INDIRECT: u16 = 4;

// Ring feature bits (§6).
pub const F_INDIRECT: u64 = 1 << 28;
pub const F_EVENT_IDX: u64 = 1 << 29;

/// Guest RAM over anonymous host memory: `(start, len)` regions.
pub fn guest_ram(regions: &[(u64, u64)]) -> GuestMemoryMmap {
    let ranges: Vec<_> = regions
        .iter()
        .map(|&(start, len)| (GuestAddress(start), len as usize))
        .collect();
    GuestMemoryMmap::from_ranges(&ranges).unwrap()
}

/// Records every interrupt the device raises.
#[derive(Default)]
pub struct Irq {
    /// Queue interrupts, in order.
    pub queues: Mutex<Vec<u16>>,
    /// Configuration-change interrupts.
    pub config: AtomicUsize,
}

impl VirtioInterrupt for Irq {
    fn notify_queue(&self, queue: u16) {
        self.queues.lock().unwrap().push(queue);
    }
    fn notify_config(&self) {
        self.config.fetch_add(1, Ordering::SeqCst);
    }
}

impl Irq {
    pub fn config_count(&self) -> usize {
        self.config.load(Ordering::SeqCst)
    }
    /// Queue interrupts in all.
    pub fn queue_count(&self) -> usize {
        self.queues.lock().unwrap().len()
    }
    /// Interrupts for queue `q`.
    pub fn queue_irqs(&self, q: u16) -> usize {
        self.queues
            .lock()
            .unwrap()
            .iter()
            .filter(|&&x| x == q)
            .count()
    }
}

/// A split ring in guest memory, driven the way a driver does: the
/// descriptor table at `base`, the avail ring right after it, the used ring
/// at `base + used_offset`.
pub struct Ring {
    pub base: u64,
    pub size: u16,
    pub used_offset: u64,
    /// The next free descriptor (chains take consecutive ones, wrapping).
    pub next_desc: u16,
    pub avail_idx: u16,
}

impl Ring {
    /// A ring of `size` entries at `base`, its used ring 4 KiB in.
    pub fn new(base: u64, size: u16) -> Self {
        Self {
            base,
            size,
            used_offset: 0x1000,
            next_desc: 0,
            avail_idx: 0,
        }
    }
    pub fn with_used_offset(self, used_offset: u64) -> Self {
        Self {
            used_offset,
            ..self
        }
    }
    pub fn desc_addr(&self) -> u64 {
        self.base
    }
    pub fn avail_addr(&self) -> u64 {
        self.base + 16 * u64::from(self.size)
    }
    pub fn used_addr(&self) -> u64 {
        self.base + self.used_offset
    }
    /// The device's view of this ring, ready.
    pub fn queue(&self) -> Queue {
        let mut q = Queue::new(VIRTQUEUE_MAX_SIZE).unwrap();
        q.set_size(self.size);
        let split = |a: u64| (Some(a as u32), Some((a >> 32) as u32));
        let (l, h) = split(self.desc_addr());
        q.set_desc_table_address(l, h);
        let (l, h) = split(self.avail_addr());
        q.set_avail_ring_address(l, h);
        let (l, h) = split(self.used_addr());
        q.set_used_ring_address(l, h);
        q.set_ready(true);
        q
    }
    /// Writes descriptor `i` of the table at `table`.
    pub fn write_desc(
        mem: &GuestMemoryMmap,
        table: u64,
        i: u16,
        addr: u64,
        len: u32,
        flags: u16,
        next: u16,
    ) {
        let at = GuestAddress(table + 16 * u64::from(i));
        mem.write_obj(addr, at).unwrap();
        mem.write_obj(len, GuestAddress(at.0 + 8)).unwrap();
        mem.write_obj(flags, GuestAddress(at.0 + 12)).unwrap();
        mem.write_obj(next, GuestAddress(at.0 + 14)).unwrap();
    }
    /// Descriptors `(addr, len, device_writable)` chained in the table; the
    /// head.
    pub fn add_descs(&mut self, mem: &GuestMemoryMmap, descs: &[(u64, u32, bool)]) -> u16 {
        let head = self.next_desc;
        for (k, &(addr, len, w)) in descs.iter().enumerate() {
            let i = self.next_desc;
            let last = k + 1 == descs.len();
            let flags = if w { DESC_F_WRITE } else { 0 } | if last { 0 } else { DESC_F_NEXT };
            let next = (i + 1) % self.size;
            Self::write_desc(mem, self.desc_addr(), i, addr, len, flags, next);
            self.next_desc = next;
        }
        head
    }
    /// Makes the chain at `head` available.
    pub fn publish(&mut self, mem: &GuestMemoryMmap, head: u16) {
        let slot = self.avail_addr() + 4 + 2 * u64::from(self.avail_idx % self.size);
        mem.write_obj(head, GuestAddress(slot)).unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        mem.write_obj(self.avail_idx, GuestAddress(self.avail_addr() + 2))
            .unwrap();
    }
    /// Descriptors `(addr, len, device_writable)` chained and published.
    pub fn add_chain(&mut self, mem: &GuestMemoryMmap, descs: &[(u64, u32, bool)]) -> u16 {
        let head = self.add_descs(mem, descs);
        self.publish(mem, head);
        head
    }
    pub fn used_idx(&self, mem: &GuestMemoryMmap) -> u16 {
        mem.read_obj(GuestAddress(self.used_addr() + 2)).unwrap()
    }
    /// Used element `i`: (id, len).
    pub fn used(&self, mem: &GuestMemoryMmap, i: u16) -> (u32, u32) {
        let at = self.used_addr() + 4 + 8 * u64::from(i % self.size);
        (
            mem.read_obj(GuestAddress(at)).unwrap(),
            mem.read_obj(GuestAddress(at + 4)).unwrap(),
        )
    }
    /// `used_event`, the driver's EVENT_IDX threshold after the avail ring.
    pub fn set_used_event(&self, mem: &GuestMemoryMmap, v: u16) {
        let at = self.avail_addr() + 4 + 2 * u64::from(self.size);
        mem.write_obj(v, GuestAddress(at)).unwrap();
    }
}

/// The device's queues for `rings`, indexed in order.
pub fn active_queues(rings: &[Ring]) -> Vec<ActiveQueue> {
    rings
        .iter()
        .enumerate()
        .map(|(i, r)| ActiveQueue {
            index: i as u16,
            queue: r.queue(),
        })
        .collect()
}
