//! Debug events (QEMU 7.2 qapi/block-core.json `BlkdebugEvent`): points in
//! a driver's request path where it tells the child it is about to read or
//! write (`BLKDBG_EVENT(bs->file, ...)`). Only a `blkdebug` child acts on
//! them: it injects errors, changes state or suspends the request.

/// `BlkdebugEvent`, in QAPI order.
pub const EVENTS: &[&str] = &[
    "l1_update",
    "l1_grow_alloc_table",
    "l1_grow_write_table",
    "l1_grow_activate_table",
    "l2_load",
    "l2_update",
    "l2_update_compressed",
    "l2_alloc_cow_read",
    "l2_alloc_write",
    "read_aio",
    "read_backing_aio",
    "read_compressed",
    "write_aio",
    "write_compressed",
    "vmstate_load",
    "vmstate_save",
    "cow_read",
    "cow_write",
    "reftable_load",
    "reftable_grow",
    "reftable_update",
    "refblock_load",
    "refblock_update",
    "refblock_update_part",
    "refblock_alloc",
    "refblock_alloc_hookup",
    "refblock_alloc_write",
    "refblock_alloc_write_blocks",
    "refblock_alloc_write_table",
    "refblock_alloc_switch_table",
    "cluster_alloc",
    "cluster_alloc_bytes",
    "cluster_free",
    "flush_to_os",
    "flush_to_disk",
    "pwritev_rmw_head",
    "pwritev_rmw_after_head",
    "pwritev_rmw_tail",
    "pwritev_rmw_after_tail",
    "pwritev",
    "pwritev_zero",
    "pwritev_done",
    "empty_image_prepare",
    "l1_shrink_write_table",
    "l1_shrink_free_l2_clusters",
    "cor_write",
    "cluster_alloc_space",
    "none",
];

/// One of [`EVENTS`], by index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DebugEvent(pub usize);

impl DebugEvent {
    pub const READ_AIO: DebugEvent = DebugEvent(9);
    pub const READ_BACKING_AIO: DebugEvent = DebugEvent(10);
    pub const READ_COMPRESSED: DebugEvent = DebugEvent(11);
    pub const WRITE_AIO: DebugEvent = DebugEvent(12);
    pub const COW_READ: DebugEvent = DebugEvent(16);
    pub const COW_WRITE: DebugEvent = DebugEvent(17);
    pub const FLUSH_TO_OS: DebugEvent = DebugEvent(33);
    pub const FLUSH_TO_DISK: DebugEvent = DebugEvent(34);
    pub const PWRITEV: DebugEvent = DebugEvent(39);
    pub const PWRITEV_ZERO: DebugEvent = DebugEvent(40);
    pub const PWRITEV_DONE: DebugEvent = DebugEvent(41);
    pub const L1_SHRINK_WRITE_TABLE: DebugEvent = DebugEvent(43);
    pub const L1_SHRINK_FREE_L2_CLUSTERS: DebugEvent = DebugEvent(44);
    pub const NONE: DebugEvent = DebugEvent(47);

    /// `qapi_enum_parse(&BlkdebugEvent_lookup, name)`.
    pub fn parse(name: &str) -> Option<Self> {
        EVENTS.iter().position(|e| *e == name).map(DebugEvent)
    }

    pub fn name(self) -> &'static str {
        EVENTS.get(self.0).copied().unwrap_or("none")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants_name_their_events() {
        assert_eq!(DebugEvent::READ_AIO.name(), "read_aio");
        assert_eq!(DebugEvent::READ_BACKING_AIO.name(), "read_backing_aio");
        assert_eq!(DebugEvent::READ_COMPRESSED.name(), "read_compressed");
        assert_eq!(DebugEvent::WRITE_AIO.name(), "write_aio");
        assert_eq!(DebugEvent::COW_READ.name(), "cow_read");
        assert_eq!(DebugEvent::COW_WRITE.name(), "cow_write");
        assert_eq!(DebugEvent::FLUSH_TO_OS.name(), "flush_to_os");
        assert_eq!(DebugEvent::FLUSH_TO_DISK.name(), "flush_to_disk");
        assert_eq!(DebugEvent::PWRITEV.name(), "pwritev");
        assert_eq!(DebugEvent::PWRITEV_ZERO.name(), "pwritev_zero");
        assert_eq!(DebugEvent::PWRITEV_DONE.name(), "pwritev_done");
        assert_eq!(
            DebugEvent::L1_SHRINK_WRITE_TABLE.name(),
            "l1_shrink_write_table"
        );
        assert_eq!(
            DebugEvent::L1_SHRINK_FREE_L2_CLUSTERS.name(),
            "l1_shrink_free_l2_clusters"
        );
        assert_eq!(DebugEvent::NONE.name(), "none");
        assert_eq!(DebugEvent::parse("cor_write"), Some(DebugEvent(45)));
        assert_eq!(DebugEvent::parse("bogus"), None);
    }
}
