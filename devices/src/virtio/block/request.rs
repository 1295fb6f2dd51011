//! A descriptor chain parsed into a block request (virtio 1.2 §5.2.6), with
//! the checks of QEMU 7.2 (hw/block/virtio-blk.c `virtio_blk_handle_request`,
//! hw/virtio/virtio.c `virtqueue_split_pop`).
//!
//! A request is: a 16-byte header (type, reserved, sector) in device-readable
//! descriptors, then data, then one status byte, the last byte of the last
//! device-writable descriptor. What QEMU answers with `virtio_error()` (the
//! chain itself is unusable: loops, bad indices, missing headers, descriptors
//! out of order, walked by [`crate::virtio::chain`]) is a [`ChainError`]: the
//! device then needs a reset. Requests
//! that are well formed but wrong (out of range, unaligned, data outside
//! guest RAM) complete with an error status.

use block::{IoBuf, IoKind};
use virtio_bindings::virtio_blk::*;
use virtio_queue::DescriptorChain;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory, GuestMemoryBackend, GuestMemoryMmap};

use super::{ID_BYTES, MAX_REQUEST_SECTORS, SECTOR_SHIFT, SECTOR_SIZE};
pub use crate::virtio::chain::Segment;
use crate::virtio::chain::{self, gather, scatter, total};

/// `struct virtio_blk_outhdr`.
pub const OUTHDR_LEN: usize = 16;
/// `struct virtio_blk_discard_write_zeroes`.
pub const DWZ_SEGMENT_LEN: usize = 16;

pub const STATUS_OK: u8 = VIRTIO_BLK_S_OK as u8;
pub const STATUS_IOERR: u8 = VIRTIO_BLK_S_IOERR as u8;
pub const STATUS_UNSUPP: u8 = VIRTIO_BLK_S_UNSUPP as u8;

/// A chain the device cannot answer (QEMU: `virtio_error`, the device is
/// broken until reset).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// The walk itself failed (`virtqueue_split_pop`).
    #[error(transparent)]
    Desc(#[from] chain::ChainError),
    #[error("virtio-blk missing headers")]
    MissingHeaders,
    #[error("virtio-blk request outhdr too short")]
    OutHdrTooShort,
    #[error("virtio-blk request header outside guest RAM")]
    HeaderOutsideRam,
    #[error("virtio-blk status byte outside guest RAM")]
    StatusOutsideRam,
    #[error("virtio-blk discard/write_zeroes header too short")]
    DwzHeaderTooShort,
}

/// What the request checks need to know about the device.
#[derive(Debug, Clone, Copy)]
pub struct Limits<'a> {
    /// Capacity in 512-byte sectors.
    pub capacity: u64,
    pub logical_block_size: u32,
    pub max_discard_sectors: u32,
    pub max_write_zeroes_sectors: u32,
    /// The `serial` property (GET_ID).
    pub serial: &'a [u8],
}

impl Limits<'_> {
    /// `virtio_blk_sect_range_ok`.
    pub fn range_ok(&self, sector: u64, size: u64) -> bool {
        let nb_sectors = size >> SECTOR_SHIFT;
        let sector_mask = u64::from(self.logical_block_size) / SECTOR_SIZE - 1;
        nb_sectors <= MAX_REQUEST_SECTORS
            && sector & sector_mask == 0
            && size.is_multiple_of(u64::from(self.logical_block_size))
            && sector <= self.capacity
            && nb_sectors <= self.capacity - sector
    }
}

/// An operation for the block layer, kept until its completion (and kept
/// again, to be resubmitted, when the error policy parks it).
#[derive(Debug, Clone)]
pub struct BlockOp {
    pub kind: IoKind,
    /// Byte offset in the image.
    pub offset: u64,
    /// Bytes (Discard/WriteZeroes; the sum of `bufs` for Read/Write).
    pub len: u64,
    pub bufs: Vec<IoBuf>,
    /// Classifies a failure for `error_action` and the event (rerror/werror).
    pub is_read: bool,
}

impl BlockOp {
    /// Whether the operation changes the image (refused on a read-only device).
    pub fn modifies(&self) -> bool {
        matches!(
            self.kind,
            IoKind::Write | IoKind::Discard | IoKind::WriteZeroes { .. }
        )
    }
}

#[derive(Debug)]
pub enum Action {
    /// Answer at once with this status (nothing to submit).
    Complete(u8),
    Submit(BlockOp),
}

/// A parsed request.
#[derive(Debug)]
pub struct Request {
    pub head: u16,
    /// The status byte, checked to be in guest RAM.
    pub status: GuestAddress,
    /// The used ring's `len`: every device-writable byte, status included
    /// (QEMU's `in_len = iov_size(in_iov)`).
    pub used_len: u32,
    /// The raw request type, for logs and the fuzz target.
    pub type_: u32,
    pub action: Action,
}

/// `segs` without their first `n` bytes.
fn skip_front(segs: &[Segment], mut n: u64) -> Vec<Segment> {
    let mut out = Vec::with_capacity(segs.len());
    for s in segs {
        let len = u64::from(s.len);
        if n >= len {
            n -= len;
            continue;
        }
        out.push(Segment {
            addr: s.addr.wrapping_add(n),
            len: (len - n) as u32,
        });
        n = 0;
    }
    out
}

/// Translates guest buffers to host memory, split at region boundaries.
/// `None` if any byte is outside guest RAM (or the range wraps).
pub fn host_bufs(mem: &GuestMemoryMmap, segs: &[Segment]) -> Option<Vec<IoBuf>> {
    let mut bufs = Vec::with_capacity(segs.len());
    for s in segs {
        GuestAddress(s.addr).checked_add(u64::from(s.len))?;
        for slice in GuestMemoryBackend::get_slices(mem, GuestAddress(s.addr), s.len as usize) {
            let slice = slice.ok()?;
            bufs.push(IoBuf {
                ptr: slice.ptr_guard_mut().as_ptr(),
                len: slice.len(),
            });
        }
    }
    Some(bufs)
}

/// Parses one chain. GET_ID's answer is written here; everything else that
/// touches guest memory (data, status, used ring) happens later.
pub fn parse<M>(
    chain: DescriptorChain<M>,
    mem: &GuestMemoryMmap,
    limits: &Limits,
) -> Result<Request, ChainError>
where
    M: std::ops::Deref,
    M::Target: GuestMemory,
{
    // Buffers outside RAM are not a broken chain here: the request
    // completes with an error status (checked below and by `host_bufs`).
    let chain::Chain {
        head,
        readable,
        writable,
    } = chain::collect_unmapped(chain)?;
    if readable.is_empty() || writable.is_empty() {
        return Err(ChainError::MissingHeaders);
    }
    let mut hdr = [0u8; OUTHDR_LEN];
    if total(&readable) < OUTHDR_LEN as u64 {
        return Err(ChainError::OutHdrTooShort);
    }
    if gather(mem, &readable, 0, &mut hdr) != hdr.len() {
        return Err(ChainError::HeaderOutsideRam);
    }
    let type_ = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
    let sector = u64::from_le_bytes([
        hdr[8], hdr[9], hdr[10], hdr[11], hdr[12], hdr[13], hdr[14], hdr[15],
    ]);

    // Zero-sized descriptors were refused, so the last one has a last byte.
    let last = writable[writable.len() - 1];
    let status = GuestAddress(last.addr)
        .checked_add(u64::from(last.len) - 1)
        .filter(|a| mem.check_address(*a).is_some())
        .ok_or(ChainError::StatusOutsideRam)?;
    let used_len = u32::try_from(total(&writable)).unwrap_or(u32::MAX);
    let mut data_in = writable.clone();
    let n = data_in.len();
    data_in[n - 1].len -= 1;
    if data_in[n - 1].len == 0 {
        data_in.pop();
    }
    let data_out = skip_front(&readable, OUTHDR_LEN as u64);

    let done = |action| {
        Ok(Request {
            head,
            status,
            used_len,
            type_,
            action,
        })
    };
    let complete = |s| done(Action::Complete(s));

    // VIRTIO_BLK_T_OUT is the direction bit; BARRIER is ignored as QEMU does.
    match type_ & !(VIRTIO_BLK_T_OUT | VIRTIO_BLK_T_BARRIER) {
        VIRTIO_BLK_T_IN => {
            let is_write = type_ & VIRTIO_BLK_T_OUT != 0;
            let segs = if is_write { &data_out } else { &data_in };
            let size = total(segs);
            if !limits.range_ok(sector, size) {
                return complete(STATUS_IOERR);
            }
            let Some(bufs) = host_bufs(mem, segs) else {
                return complete(STATUS_IOERR);
            };
            done(Action::Submit(BlockOp {
                kind: if is_write {
                    IoKind::Write
                } else {
                    IoKind::Read
                },
                offset: sector << SECTOR_SHIFT,
                len: size,
                bufs,
                is_read: !is_write,
            }))
        }
        VIRTIO_BLK_T_FLUSH => done(Action::Submit(BlockOp {
            kind: IoKind::Flush,
            offset: 0,
            len: 0,
            bufs: Vec::new(),
            is_read: false,
        })),
        VIRTIO_BLK_T_SCSI_CMD => {
            // virtio_blk_handle_scsi_req without the scsi feature.
            if readable.len() < 2 || writable.len() < 3 {
                return complete(STATUS_IOERR);
            }
            // "Just put anything nonzero so that the ioctl fails in the guest":
            // virtio_scsi_inhdr.errors in the second-to-last writable buffer.
            let scsi = writable[writable.len() - 2];
            if scsi.len >= 4 {
                let _ = mem.write_slice(&255u32.to_le_bytes(), GuestAddress(scsi.addr));
            }
            complete(STATUS_UNSUPP)
        }
        VIRTIO_BLK_T_GET_ID => {
            // NUL-terminated only when shorter than the 20 bytes.
            let mut id = limits.serial.to_vec();
            id.push(0);
            let size = id.len().min(ID_BYTES).min(total(&data_in) as usize);
            if scatter(mem, &data_in, 0, &id[..size]) != size {
                return complete(STATUS_IOERR);
            }
            complete(STATUS_OK)
        }
        t if t == VIRTIO_BLK_T_DISCARD & !VIRTIO_BLK_T_OUT
            || t == VIRTIO_BLK_T_WRITE_ZEROES & !VIRTIO_BLK_T_OUT =>
        {
            let is_write_zeroes = type_ & !VIRTIO_BLK_T_BARRIER == VIRTIO_BLK_T_WRITE_ZEROES;
            let out_len = total(&data_out);
            // One segment only (max_discard_seg = max_write_zeroes_seg = 1).
            if type_ & VIRTIO_BLK_T_OUT == 0 || out_len > DWZ_SEGMENT_LEN as u64 {
                return complete(STATUS_UNSUPP);
            }
            let mut seg = [0u8; DWZ_SEGMENT_LEN];
            if out_len < DWZ_SEGMENT_LEN as u64 {
                return Err(ChainError::DwzHeaderTooShort);
            }
            if gather(mem, &data_out, 0, &mut seg) != seg.len() {
                return Err(ChainError::HeaderOutsideRam);
            }
            parse_dwz(&seg, is_write_zeroes, limits)
                .map_or_else(complete, |op| done(Action::Submit(op)))
        }
        _ => complete(STATUS_UNSUPP),
    }
}

/// `virtio_blk_handle_discard_write_zeroes`: one 16-byte segment (sector,
/// num_sectors, flags) into an operation, or the status to answer with.
fn parse_dwz(
    seg: &[u8; DWZ_SEGMENT_LEN],
    is_write_zeroes: bool,
    limits: &Limits,
) -> Result<BlockOp, u8> {
    let sector = u64::from_le_bytes([
        seg[0], seg[1], seg[2], seg[3], seg[4], seg[5], seg[6], seg[7],
    ]);
    let num_sectors = u32::from_le_bytes([seg[8], seg[9], seg[10], seg[11]]);
    let flags = u32::from_le_bytes([seg[12], seg[13], seg[14], seg[15]]);
    let max_sectors = if is_write_zeroes {
        limits.max_write_zeroes_sectors
    } else {
        limits.max_discard_sectors
    };
    if num_sectors > max_sectors {
        return Err(STATUS_IOERR);
    }
    let bytes = u64::from(num_sectors) << SECTOR_SHIFT;
    if !limits.range_ok(sector, bytes) {
        return Err(STATUS_IOERR);
    }
    // Unknown flags are unsupported; so is UNMAP on a discard.
    if flags & !VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP != 0 {
        return Err(STATUS_UNSUPP);
    }
    let unmap = flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP != 0;
    let kind = if is_write_zeroes {
        IoKind::WriteZeroes { may_unmap: unmap }
    } else if unmap {
        return Err(STATUS_UNSUPP);
    } else {
        IoKind::Discard
    };
    Ok(BlockOp {
        kind,
        offset: sector << SECTOR_SHIFT,
        len: bytes,
        bufs: Vec::new(),
        is_read: false,
    })
}
