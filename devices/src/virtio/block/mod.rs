//! virtio-blk (virtio 1.2 §5.2), behaving like QEMU 7.2's `virtio-blk-pci`
//! (hw/block/virtio-blk.c).
//!
//! - [`options`]: the device's properties ([`BlkOptions`]) and their
//!   validation with QEMU's error texts ([`BlkOptionsError`]).
//! - [`config`]: the configuration space layout (§5.2.4), the offered
//!   feature bits and the CHS geometry guess (hw/block/hd-geometry.c).
//! - [`request`]: a descriptor chain parsed into a block request (§5.2.6),
//!   with QEMU's checks; guest buffers translated to host memory.
//! - [`queue`]: one virtqueue with its `BlockQueue`: submission, completion
//!   (possibly out of order), the error policy and parked requests.
//! - [`error`]: what an I/O error reports upward ([`BlockIoError`], QEMU's
//!   BLOCK_IO_ERROR event).
//! - [`device`]: [`VirtioBlock`], the `VirtioDevice` implementation.

pub mod config;
pub mod device;
pub mod error;
pub mod options;
pub mod queue;
pub mod request;

#[cfg(test)]
mod tests;

pub use device::VirtioBlock;
pub use error::{BlockIoError, BlockIoErrorFn, IoOperation};
pub use options::{BlkOptions, BlkOptionsError, WriteCache};

/// Virtio device ID of a block device (virtio 1.2 §5).
pub const VIRTIO_ID_BLOCK: u16 = 2;

/// The sector unit of the protocol, whatever the logical block size (§5.2.6).
pub const SECTOR_SHIFT: u32 = 9;
pub const SECTOR_SIZE: u64 = 1 << SECTOR_SHIFT;

/// QEMU's BDRV_REQUEST_MAX_SECTORS: INT_MAX >> 9, the largest request the
/// block layer accepts (include/block/block-common.h).
pub const MAX_REQUEST_SECTORS: u64 = (i32::MAX as u64) >> SECTOR_SHIFT;

pub use super::VIRTQUEUE_MAX_SIZE;

/// Length of the GET_ID answer (VIRTIO_BLK_ID_BYTES).
pub const ID_BYTES: usize = 20;
