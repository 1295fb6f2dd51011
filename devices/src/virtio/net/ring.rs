//! One virtqueue as virtio-net uses it: used elements published in
//! batches, and the interrupt decision made like QEMU's
//! `virtio_should_notify`.
//!
//! A merged receive buffer spans several chains; QEMU fills all their used
//! elements and then moves the used index once (`virtqueue_fill` +
//! `virtqueue_flush`), so the driver never sees the first buffer of a
//! frame without the rest (Linux drops such a frame: "rx error: N buffers
//! out of M missing"). `Queue::add_used` publishes every element, so the
//! elements are written here and the index moved once; the notification
//! check, which then cannot rely on the queue's own count, is done here too
//! (virtio 1.2 §2.7.7, §2.7.10).

use std::num::Wrapping;
use std::sync::atomic::{fence, Ordering};

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::virtio::chain::ChainError;

/// VRING_AVAIL_F_NO_INTERRUPT.
const AVAIL_F_NO_INTERRUPT: u16 = 1;

pub struct Vq {
    pub index: u16,
    pub queue: Queue,
    /// The used index at the last notification check.
    signalled: Wrapping<u16>,
}

fn mem_err(what: &str, e: vm_memory::GuestMemoryError) -> ChainError {
    ChainError::Ring(format!("{what}: {e}"))
}

impl Vq {
    pub fn new(index: u16, queue: Queue) -> Self {
        let signalled = Wrapping(queue.next_used());
        Self {
            index,
            queue,
            signalled,
        }
    }

    /// Publishes `elems` (head, written length) with one used-index update.
    pub fn push_used(
        &mut self,
        mem: &GuestMemoryMmap,
        elems: &[(u16, u32)],
    ) -> Result<(), ChainError> {
        if elems.is_empty() {
            return Ok(());
        }
        let size = self.queue.size();
        if size == 0 {
            return Err(ChainError::Ring("queue size 0".into()));
        }
        let base = self.queue.used_ring();
        let next = Wrapping(self.queue.next_used());
        for (j, &(head, len)) in elems.iter().enumerate() {
            if head >= size {
                return Err(ChainError::Ring(format!("used head {head} out of range")));
            }
            let slot = (next + Wrapping(j as u16)).0 % size;
            let at = base
                .checked_add(4 + 8 * u64::from(slot))
                .ok_or_else(|| ChainError::Ring("used ring address overflows".into()))?;
            let mut elem = [0u8; 8];
            elem[..4].copy_from_slice(&u32::from(head).to_le_bytes());
            elem[4..].copy_from_slice(&len.to_le_bytes());
            mem.write_slice(&elem, GuestAddress(at))
                .map_err(|e| mem_err("used ring", e))?;
        }
        let new = next + Wrapping(elems.len() as u16);
        let idx_at = base
            .checked_add(2)
            .ok_or_else(|| ChainError::Ring("used ring address overflows".into()))?;
        fence(Ordering::Release);
        mem.store(new.0.to_le(), GuestAddress(idx_at), Ordering::Release)
            .map_err(|e| mem_err("used index", e))?;
        self.queue.set_next_used(new.0);
        Ok(())
    }

    /// Whether the driver wants an interrupt for what was published since
    /// the last call: `used_event` with EVENT_IDX, else the avail ring's
    /// NO_INTERRUPT flag.
    pub fn needs_notification(&mut self, mem: &GuestMemoryMmap) -> Result<bool, ChainError> {
        let new = Wrapping(self.queue.next_used());
        let old = std::mem::replace(&mut self.signalled, new);
        if new == old {
            return Ok(false);
        }
        fence(Ordering::SeqCst);
        let avail = self.queue.avail_ring();
        if self.queue.event_idx_enabled() {
            let at = avail
                .checked_add(4 + 2 * u64::from(self.queue.size()))
                .ok_or_else(|| ChainError::Ring("avail ring address overflows".into()))?;
            let used_event: u16 = mem
                .load(GuestAddress(at), Ordering::Acquire)
                .map_err(|e| mem_err("used_event", e))?;
            let used_event = Wrapping(u16::from_le(used_event));
            return Ok(new - used_event - Wrapping(1) < new - old);
        }
        let flags: u16 = mem
            .load(GuestAddress(avail), Ordering::Acquire)
            .map_err(|e| mem_err("avail flags", e))?;
        Ok(u16::from_le(flags) & AVAIL_F_NO_INTERRUPT == 0)
    }

    pub fn enable_notification(&mut self, mem: &GuestMemoryMmap) -> Result<bool, ChainError> {
        Ok(self.queue.enable_notification(mem)?)
    }

    pub fn disable_notification(&mut self, mem: &GuestMemoryMmap) -> Result<(), ChainError> {
        Ok(self.queue.disable_notification(mem)?)
    }
}
