//! Permissions a node's users take and share (QEMU 7.2
//! include/block/block-common.h `BLK_PERM_*`; block.c `bdrv_perm_names`).
//!
//! QEMU 7.2 removed `BLK_PERM_GRAPH_MOD` (0x10); QEMU <= 6.1 may still lock
//! its byte, so `ALL` stays 0x0f and no new permission may reuse bit 4.

pub const CONSISTENT_READ: u64 = 0x01;
pub const WRITE: u64 = 0x02;
pub const WRITE_UNCHANGED: u64 = 0x04;
pub const RESIZE: u64 = 0x08;
pub const ALL: u64 = 0x0f;

/// Bits a filter or raw child passes through from its parents.
pub const DEFAULT_PERM_PASSTHROUGH: u64 = CONSISTENT_READ | WRITE | WRITE_UNCHANGED | RESIZE;
/// Bits always shared on a pass-through child.
pub const DEFAULT_PERM_UNCHANGED: u64 = ALL & !DEFAULT_PERM_PASSTHROUGH;

/// The bit indices (0..=3) QEMU's `PERM_FOREACH` walks.
pub(crate) fn bits() -> impl Iterator<Item = (u32, u64)> {
    (0..4).map(|i| (i, 1u64 << i))
}

/// `bdrv_perm_names()`: "consistent read, write".
pub fn names(perm: u64) -> String {
    const NAMES: [(u64, &str); 4] = [
        (CONSISTENT_READ, "consistent read"),
        (WRITE, "write"),
        (WRITE_UNCHANGED, "write unchanged"),
        (RESIZE, "resize"),
    ];
    NAMES
        .iter()
        .filter(|(p, _)| perm & p != 0)
        .map(|(_, n)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The permissions a guest device takes on its BlockBackend (QEMU
/// hw/block/block.c `blkconf_apply_backend_options`): read, write unless
/// read-only; it shares read, unchanged writes, resize when the device
/// follows resizes, and write only with `share-rw=on`.
pub fn device_perms(read_only: bool, resizable: bool, share_rw: bool) -> (u64, u64) {
    let mut perm = CONSISTENT_READ;
    if !read_only {
        perm |= WRITE;
    }
    let mut shared = CONSISTENT_READ | WRITE_UNCHANGED;
    if resizable {
        shared |= RESIZE;
    }
    if share_rw {
        shared |= WRITE;
    }
    (perm, shared)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_qemu_order() {
        assert_eq!(names(WRITE), "write");
        assert_eq!(names(RESIZE | CONSISTENT_READ), "consistent read, resize");
    }

    #[test]
    fn read_write_device_unshares_write_only() {
        // QEMU 7.2 with -device virtio-blk-pci on a read-write drive locks
        // bytes 100, 101 and 201 (seen in /proc/locks).
        assert_eq!(
            device_perms(false, true, false),
            (CONSISTENT_READ | WRITE, ALL & !WRITE)
        );
    }
}
