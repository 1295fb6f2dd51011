//! Descriptor chains popped with the checks of QEMU 7.2's
//! `virtqueue_split_pop` (hw/virtio/virtio.c): device-readable descriptors
//! first, then device-writable ones; no zero-length descriptor; every
//! buffer in guest RAM (`virtqueue_map_desc`). A failure is `virtio_error`:
//! the device needs a reset.

use std::num::Wrapping;
use std::sync::atomic::Ordering;

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use super::VIRTQUEUE_MAX_SIZE;

/// One guest buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub addr: u64,
    pub len: u32,
}

/// A popped chain, its buffers checked to be in guest RAM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub head: u16,
    pub readable: Vec<Segment>,
    pub writable: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("virtio: descriptor chain {0} is malformed (bad index, loop or bad indirect table)")]
    Malformed(u16),
    #[error("virtio: zero sized buffers are not allowed")]
    ZeroSized,
    #[error("Incorrect order for descriptors")]
    Order,
    #[error("virtio: too many descriptors in a chain")]
    TooMany,
    #[error("virtio: bogus descriptor or out of resources")]
    Bogus,
    #[error("Guest moved used index from {next} to {avail}")]
    AvailIndex { avail: u16, next: u16 },
    #[error("virtio: ring access failed: {0}")]
    Ring(String),
}

impl From<virtio_queue::Error> for ChainError {
    fn from(e: virtio_queue::Error) -> Self {
        ChainError::Ring(e.to_string())
    }
}

pub fn total(segs: &[Segment]) -> u64 {
    segs.iter().map(|s| u64::from(s.len)).sum()
}

/// The driver's avail index now.
pub fn avail_idx(queue: &Queue, mem: &GuestMemoryMmap) -> Result<u16, ChainError> {
    Ok(queue.avail_idx(mem, Ordering::Acquire)?.0)
}

/// Whether the driver made chains available that were not popped yet
/// (`!virtio_queue_empty`); a bogus avail index is an error.
pub fn has_avail(queue: &Queue, mem: &GuestMemoryMmap) -> Result<bool, ChainError> {
    let avail = queue.avail_idx(mem, Ordering::Acquire)?;
    let next = queue.next_avail();
    if (avail - Wrapping(next)).0 > queue.size() {
        return Err(ChainError::AvailIndex {
            avail: avail.0,
            next,
        });
    }
    Ok(avail.0 != next)
}

/// Pops the next available chain; `None` when there is none.
pub fn pop(queue: &mut Queue, mem: &GuestMemoryMmap) -> Result<Option<Chain>, ChainError> {
    if !has_avail(queue, mem)? {
        return Ok(None);
    }
    let Some(chain) = queue.iter(mem)?.next() else {
        return Err(ChainError::Ring("cannot read the avail ring".into()));
    };
    let head = chain.head_index();
    let (mut readable, mut writable) = (Vec::new(), Vec::new());
    let mut last_has_next = true;
    let mut count = 0usize;
    for d in chain {
        count += 1;
        if count > usize::from(VIRTQUEUE_MAX_SIZE) {
            return Err(ChainError::TooMany);
        }
        if d.len() == 0 {
            return Err(ChainError::ZeroSized);
        }
        let seg = Segment {
            addr: d.addr().raw_value(),
            len: d.len(),
        };
        let in_ram = GuestAddress(seg.addr)
            .checked_add(u64::from(seg.len))
            .is_some()
            && GuestMemoryBackend::check_range(mem, GuestAddress(seg.addr), seg.len as usize);
        if !in_ram {
            return Err(ChainError::Bogus);
        }
        if d.is_write_only() {
            writable.push(seg);
        } else if writable.is_empty() {
            readable.push(seg);
        } else {
            return Err(ChainError::Order);
        }
        last_has_next = d.has_next();
    }
    if count == 0 || last_has_next {
        return Err(ChainError::Malformed(head));
    }
    Ok(Some(Chain {
        head,
        readable,
        writable,
    }))
}

/// Copies `buf.len()` bytes from guest memory spread over `segs`, skipping
/// the first `skip` bytes; how many it copied (segments are in RAM).
pub fn gather(mem: &GuestMemoryMmap, segs: &[Segment], mut skip: u64, buf: &mut [u8]) -> usize {
    let mut done = 0;
    for s in segs {
        if done == buf.len() {
            break;
        }
        let len = u64::from(s.len);
        if skip >= len {
            skip -= len;
            continue;
        }
        let n = ((len - skip) as usize).min(buf.len() - done);
        if mem
            .read_slice(&mut buf[done..done + n], GuestAddress(s.addr + skip))
            .is_err()
        {
            break;
        }
        done += n;
        skip = 0;
    }
    done
}

/// Copies `data` into guest memory spread over `segs` from byte `skip`
/// on; how many bytes fitted (`iov_from_buf`).
pub fn scatter(mem: &GuestMemoryMmap, segs: &[Segment], mut skip: u64, data: &[u8]) -> usize {
    let mut done = 0;
    for s in segs {
        if done == data.len() {
            break;
        }
        let len = u64::from(s.len);
        if skip >= len {
            skip -= len;
            continue;
        }
        let n = ((len - skip) as usize).min(data.len() - done);
        if mem
            .write_slice(&data[done..done + n], GuestAddress(s.addr + skip))
            .is_err()
        {
            break;
        }
        done += n;
        skip = 0;
    }
    done
}
