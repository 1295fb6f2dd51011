//! How the balloon reads a chain walked by [`crate::virtio::chain`].
//!
//! Balloon requests have no header: inflate, deflate and stats read the
//! device-readable bytes (QEMU `iov_to_buf` over `out_sg`), free page
//! reporting uses the device-writable buffers as ranges. Whatever a queue
//! does not use is ignored, as in QEMU.

use vm_memory::GuestMemoryMmap;

use crate::virtio::chain::{gather, total, Chain};

/// Chunk size for reading device-readable bytes: a multiple of both the
/// 4-byte PFN and the 10-byte stats entry, so that neither straddles two
/// chunks, and small enough not to copy a huge buffer at once.
pub const READ_CHUNK: usize = 65520;

impl Chain {
    /// Calls `f` with the device-readable bytes, concatenated across
    /// descriptors (QEMU `iov_to_buf`), in chunks of [`READ_CHUNK`] (the last
    /// one shorter). The buffers were checked to be in RAM by
    /// [`crate::virtio::chain::collect`]; should a read fail anyway, `f` gets
    /// the bytes read before it and no more.
    pub fn for_each_readable_chunk(&self, mem: &GuestMemoryMmap, mut f: impl FnMut(&[u8])) {
        let total = total(&self.readable);
        let mut buf = vec![0u8; total.min(READ_CHUNK as u64) as usize];
        let mut offset = 0u64;
        while offset < total {
            let want = ((total - offset) as usize).min(buf.len());
            let got = gather(mem, &self.readable, offset, &mut buf[..want]);
            if got > 0 {
                f(&buf[..got]);
            }
            if got < want {
                return;
            }
            offset += want as u64;
        }
    }
}
