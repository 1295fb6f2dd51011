//! A descriptor chain walked as QEMU's `virtqueue_split_pop` does
//! (hw/virtio/virtio.c): device-readable descriptors first, then
//! device-writable ones, every buffer mapped in guest RAM. What QEMU answers
//! with `virtio_error()` is a [`ChainError`]: the device then needs a reset
//! (virtio 1.2 §2.1.2, DEVICE_NEEDS_RESET).
//!
//! Balloon requests have no header: inflate, deflate and stats read the
//! device-readable bytes (QEMU `iov_to_buf` over `out_sg`), free page
//! reporting uses the device-writable buffers as ranges. Whatever a queue
//! does not use is ignored, as in QEMU.

use virtio_queue::DescriptorChain;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory, GuestMemoryBackend, GuestMemoryMmap};

use super::VIRTQUEUE_MAX_SIZE;

/// A chain the device cannot use (QEMU: `virtio_error`).
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
    Bogus { addr: u64, len: u32 },
}

/// One guest buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub addr: u64,
    pub len: u32,
}

/// A popped chain: its head (for the used ring) and its buffers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub head: u16,
    /// Device-readable buffers (QEMU `out_sg`).
    pub readable: Vec<Segment>,
    /// Device-writable buffers (QEMU `in_sg`).
    pub writable: Vec<Segment>,
}

/// Walks `chain`. Every buffer must lie in guest RAM: QEMU's
/// `virtqueue_map_desc` fails the pop otherwise.
pub fn collect<M>(chain: DescriptorChain<M>, mem: &GuestMemoryMmap) -> Result<Chain, ChainError>
where
    M: std::ops::Deref,
    M::Target: GuestMemory,
{
    let head = chain.head_index();
    let (mut readable, mut writable) = (Vec::new(), Vec::new());
    // The iterator stops silently on a bad descriptor; a chain whose last
    // descriptor still says NEXT ended early.
    let mut last_has_next = true;
    let mut count = 0usize;
    for d in chain {
        count += 1;
        if count > VIRTQUEUE_MAX_SIZE {
            return Err(ChainError::TooMany);
        }
        if d.len() == 0 {
            return Err(ChainError::ZeroSized);
        }
        let seg = Segment {
            addr: d.addr().raw_value(),
            len: d.len(),
        };
        let mapped = GuestAddress(seg.addr)
            .checked_add(u64::from(seg.len))
            .is_some()
            && GuestMemoryBackend::check_range(mem, GuestAddress(seg.addr), seg.len as usize);
        if !mapped {
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

/// Chunk size for reading device-readable bytes: a multiple of both the
/// 4-byte PFN and the 10-byte stats entry, so that neither straddles two
/// chunks, and small enough not to copy a huge buffer at once.
pub const READ_CHUNK: usize = 65520;

impl Chain {
    /// Calls `f` with the device-readable bytes, concatenated across
    /// descriptors (QEMU `iov_to_buf`), in chunks of [`READ_CHUNK`] (the last
    /// one shorter). The buffers were checked to be in RAM by [`collect`].
    pub fn for_each_readable_chunk(&self, mem: &GuestMemoryMmap, mut f: impl FnMut(&[u8])) {
        let total: u64 = self.readable.iter().map(|s| u64::from(s.len)).sum();
        let mut buf = vec![0u8; total.min(READ_CHUNK as u64) as usize];
        let mut fill = 0usize;
        for s in &self.readable {
            let mut done = 0usize;
            let len = s.len as usize;
            while done < len {
                let n = (len - done).min(buf.len() - fill);
                let at = GuestAddress(s.addr + done as u64);
                if mem.read_slice(&mut buf[fill..fill + n], at).is_err() {
                    // Cannot happen for a checked chain; stop short rather
                    // than hand over bytes that were not read.
                    if fill > 0 {
                        f(&buf[..fill]);
                    }
                    return;
                }
                fill += n;
                done += n;
                if fill == buf.len() {
                    f(&buf);
                    fill = 0;
                }
            }
        }
        if fill > 0 {
            f(&buf[..fill]);
        }
    }
}
