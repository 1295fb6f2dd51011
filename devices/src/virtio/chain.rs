//! Descriptor chains walked with the checks of QEMU 7.2's
//! `virtqueue_split_pop` (hw/virtio/virtio.c), shared by the virtio models:
//! device-readable descriptors first, then device-writable ones; no
//! zero-length descriptor; at most [`VIRTQUEUE_MAX_SIZE`] descriptors; a
//! chain that ends early (loop, index past the table, unreadable
//! descriptor, bad indirect table: the iterator stops silently, so its last
//! descriptor still says NEXT) is malformed; and, where the caller asks for
//! it, every buffer in guest RAM (`virtqueue_map_desc`). What QEMU answers
//! with `virtio_error()` is a [`ChainError`]: the device then needs a reset
//! (virtio 1.2 §2.1.2, DEVICE_NEEDS_RESET).
//!
//! Also the copies between guest buffers and host bytes (QEMU `iov_to_buf`,
//! `iov_from_buf`) that the models do on checked chains.

use std::num::Wrapping;
use std::sync::atomic::Ordering;

use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory, GuestMemoryBackend, GuestMemoryMmap};

use super::VIRTQUEUE_MAX_SIZE;

/// One guest buffer (a descriptor, or the part of one a request uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub addr: u64,
    pub len: u32,
}

/// A walked chain: its head (for the used ring) and its buffers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub head: u16,
    /// Device-readable buffers (QEMU `out_sg`).
    pub readable: Vec<Segment>,
    /// Device-writable buffers (QEMU `in_sg`).
    pub writable: Vec<Segment>,
}

/// A chain the device cannot use (QEMU: `virtio_error`). The texts are
/// QEMU's where QEMU has one.
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
    /// A buffer outside guest RAM (`virtqueue_map_desc`).
    #[error("virtio: bogus descriptor or out of resources")]
    Bogus { addr: u64, len: u32 },
    /// `virtqueue_num_heads`: the avail index moved by more than the size.
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

/// Bytes in `segs`.
pub fn total(segs: &[Segment]) -> u64 {
    segs.iter().map(|s| u64::from(s.len)).sum()
}

/// Whether `[addr, addr + len)` is guest RAM, without wrapping.
fn in_ram(mem: &GuestMemoryMmap, seg: Segment) -> bool {
    GuestAddress(seg.addr)
        .checked_add(u64::from(seg.len))
        .is_some()
        && GuestMemoryBackend::check_range(mem, GuestAddress(seg.addr), seg.len as usize)
}

/// The walk; `ram` is where buffers must lie, if they are checked.
fn walk<M>(chain: DescriptorChain<M>, ram: Option<&GuestMemoryMmap>) -> Result<Chain, ChainError>
where
    M: std::ops::Deref,
    M::Target: GuestMemory,
{
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
        if ram.is_some_and(|mem| !in_ram(mem, seg)) {
            return Err(ChainError::Bogus {
                addr: seg.addr,
                len: seg.len,
            });
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
    Ok(Chain {
        head,
        readable,
        writable,
    })
}

/// Walks `chain` as `virtqueue_split_pop` does, every buffer checked to be
/// in `mem`.
pub fn collect<M>(chain: DescriptorChain<M>, mem: &GuestMemoryMmap) -> Result<Chain, ChainError>
where
    M: std::ops::Deref,
    M::Target: GuestMemory,
{
    walk(chain, Some(mem))
}

/// Walks `chain` with the structural checks only, for a device that checks
/// where its buffers lie itself (virtio-blk completes a request whose data
/// is outside RAM with an error status instead).
pub fn collect_unmapped<M>(chain: DescriptorChain<M>) -> Result<Chain, ChainError>
where
    M: std::ops::Deref,
    M::Target: GuestMemory,
{
    walk(chain, None)
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

/// Pops the next available chain, checked as [`collect`] does; `None` when
/// there is none.
pub fn pop(queue: &mut Queue, mem: &GuestMemoryMmap) -> Result<Option<Chain>, ChainError> {
    if !has_avail(queue, mem)? {
        return Ok(None);
    }
    let Some(chain) = queue.iter(mem)?.next() else {
        return Err(ChainError::Ring("cannot read the avail ring".into()));
    };
    collect(chain, mem).map(Some)
}

/// Copies `buf.len()` bytes from guest memory spread over `segs`, skipping
/// the first `skip` bytes (`iov_to_buf`); how many it copied, short when
/// `segs` is or a segment is outside guest RAM.
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
        let Some(at) = s.addr.checked_add(skip) else {
            break;
        };
        if mem
            .read_slice(&mut buf[done..done + n], GuestAddress(at))
            .is_err()
        {
            break;
        }
        done += n;
        skip = 0;
    }
    done
}

/// Copies `data` into guest memory spread over `segs` from byte `skip` on
/// (`iov_from_buf`); how many bytes fitted, short when `segs` is or a
/// segment is outside guest RAM.
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
        let Some(at) = s.addr.checked_add(skip) else {
            break;
        };
        if mem
            .write_slice(&data[done..done + n], GuestAddress(at))
            .is_err()
        {
            break;
        }
        done += n;
        skip = 0;
    }
    done
}
