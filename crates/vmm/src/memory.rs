//! Guest RAM: anonymous host mappings (their KVM slots: `memory_map`).

use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::error::VmmError;

pub fn create(regions: &[(GuestAddress, usize)]) -> Result<GuestMemoryMmap, VmmError> {
    let mem = GuestMemoryMmap::from_ranges(regions).map_err(|e| VmmError::Memory(e.to_string()))?;
    for region in mem.iter() {
        advise(region.as_ptr(), region.len() as usize);
    }
    Ok(mem)
}

/// The advice QEMU gives every RAM block (`ram_block_add`, softmmu/physmem.c):
/// - MADV_HUGEPAGE, so that with THP in `madvise` mode (Debian's default)
///   guest RAM is backed by 2 MiB pages. The guest's TLB misses are cheaper,
///   and O_DIRECT disk reads into guest buffers pin a few huge pages instead
///   of hundreds of small ones (a 1 MiB read took 1.3 ms into 4 KiB pages
///   against 0.5 ms into huge pages here).
/// - MADV_DONTFORK, so that a child the VMM forks (a `script=` helper) does
///   not share, and copy on write, the pages KVM maps.
///
/// Advice is a hint: a kernel without THP refuses it, and RAM works as before.
fn advise(ptr: *mut u8, len: usize) {
    for advice in [libc::MADV_HUGEPAGE, libc::MADV_DONTFORK] {
        // SAFETY: the range is one whole mapping this process owns; madvise
        // changes no contents.
        unsafe { libc::madvise(ptr.cast(), len, advice) };
    }
}
