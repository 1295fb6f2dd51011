//! The virtio-blk configuration space (virtio 1.2 §5.2.4), the feature bits
//! QEMU 7.2 offers (`virtio_blk_get_features`), and the CHS geometry it
//! guesses for the image (hw/block/hd-geometry.c `hd_geometry_guess`).

use virtio_bindings::virtio_blk::*;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};

use super::options::BlkParams;
use super::SECTOR_SIZE;

/// Byte offsets of `struct virtio_blk_config` (little-endian, packed).
pub mod offset {
    pub const CAPACITY: usize = 0;
    pub const SIZE_MAX: usize = 8;
    pub const SEG_MAX: usize = 12;
    pub const CYLINDERS: usize = 16;
    pub const HEADS: usize = 18;
    pub const SECTORS: usize = 19;
    pub const BLK_SIZE: usize = 20;
    pub const PHYSICAL_BLOCK_EXP: usize = 24;
    pub const ALIGNMENT_OFFSET: usize = 25;
    pub const MIN_IO_SIZE: usize = 26;
    pub const OPT_IO_SIZE: usize = 28;
    pub const WRITEBACK: usize = 32;
    pub const NUM_QUEUES: usize = 34;
    pub const MAX_DISCARD_SECTORS: usize = 36;
    pub const MAX_DISCARD_SEG: usize = 40;
    pub const DISCARD_SECTOR_ALIGNMENT: usize = 44;
    pub const MAX_WRITE_ZEROES_SECTORS: usize = 48;
    pub const MAX_WRITE_ZEROES_SEG: usize = 52;
    pub const WRITE_ZEROES_MAY_UNMAP: usize = 56;
}

/// `sizeof(struct virtio_blk_config)` in QEMU 7.2 (before the zoned fields).
pub const CONFIG_MAX_SIZE: usize = 60;

/// How much of the structure the device exposes: QEMU hides the discard and
/// write-zeroes fields unless it offers those features
/// (hw/block/virtio-blk-common.c `virtio_blk_cfg_size_params`).
pub fn config_size(discard: bool, write_zeroes: bool) -> usize {
    if write_zeroes {
        offset::WRITE_ZEROES_MAY_UNMAP + 1
    } else if discard {
        offset::DISCARD_SECTOR_ALIGNMENT + 4
    } else {
        offset::MAX_DISCARD_SECTORS
    }
}

/// Logical CHS geometry (`virtio_blk_geometry`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub cylinders: u16,
    pub heads: u8,
    pub sectors: u8,
}

/// `guess_chs_for_size`: 16 heads, 63 sectors, 2..=16383 cylinders.
fn chs_for_size(sectors: u64) -> Geometry {
    let cylinders = (sectors / (16 * 63)).clamp(2, 16383) as u16;
    Geometry {
        cylinders,
        heads: 16,
        sectors: 63,
    }
}

/// `guess_disk_lchs`: heads and sectors from the first MBR partition that
/// ends on a cylinder boundary. Returns (cylinders, heads, sectors).
fn lchs_from_mbr(sectors: u64, mbr: &[u8; 512]) -> Option<(u64, u32, u32)> {
    if mbr[510] != 0x55 || mbr[511] != 0xaa {
        return None;
    }
    for i in 0..4 {
        let p = &mbr[0x1be + 16 * i..0x1be + 16 * (i + 1)];
        let nr_sects = u32::from_le_bytes([p[12], p[13], p[14], p[15]]);
        let end_head = p[5];
        if nr_sects == 0 || end_head == 0 {
            continue;
        }
        let heads = u32::from(end_head) + 1;
        let secs = u32::from(p[6] & 63);
        if secs == 0 {
            continue;
        }
        let cylinders = sectors / u64::from(heads * secs);
        if !(1..=16383).contains(&cylinders) {
            continue;
        }
        return Some((cylinders, heads, secs));
    }
    None
}

/// `hd_geometry_guess` for an image of `sectors` 512-byte sectors whose first
/// sector is `mbr` (None when it could not be read).
pub fn guess_geometry(sectors: u64, mbr: Option<&[u8; 512]>) -> Geometry {
    match mbr.and_then(|m| lchs_from_mbr(sectors, m)) {
        // A guess with more than 16 heads means the BIOS translated: use
        // a standard physical geometry.
        Some((_, heads, _)) if heads > 16 => chs_for_size(sectors),
        Some((cylinders, heads, secs)) => Geometry {
            cylinders: cylinders as u16,
            heads: heads as u8,
            sectors: secs as u8,
        },
        None => chs_for_size(sectors),
    }
}

/// The live values behind the configuration space.
#[derive(Debug, Clone)]
pub(crate) struct ConfigState<'a> {
    pub params: &'a BlkParams,
    pub geometry: Geometry,
    /// Image length in bytes.
    pub length: u64,
    pub wce: bool,
}

impl ConfigState<'_> {
    /// `virtio_blk_update_config`.
    pub fn bytes(&self) -> [u8; CONFIG_MAX_SIZE] {
        use offset::*;
        let p = self.params;
        let mut c = [0u8; CONFIG_MAX_SIZE];
        let mut put = |off: usize, bytes: &[u8]| c[off..off + bytes.len()].copy_from_slice(bytes);
        let blk_size = p.logical_block_size;
        put(CAPACITY, &(self.length / SECTOR_SIZE).to_le_bytes());
        put(SIZE_MAX, &0u32.to_le_bytes());
        put(SEG_MAX, &p.seg_max.to_le_bytes());
        put(CYLINDERS, &self.geometry.cylinders.to_le_bytes());
        put(HEADS, &[self.geometry.heads]);
        // The capacity must be a whole number of logical blocks per track;
        // if it is not, QEMU rounds the sectors down to the block size.
        let heads = u64::from(self.geometry.heads.max(1));
        let secs = u64::from(self.geometry.sectors.max(1));
        let sector_mask = (blk_size / SECTOR_SIZE as u32 - 1) as u8;
        let sectors = if self.length > 0
            && !(self.length / heads / secs).is_multiple_of(u64::from(blk_size))
        {
            self.geometry.sectors & !sector_mask
        } else {
            self.geometry.sectors
        };
        put(SECTORS, &[sectors]);
        put(BLK_SIZE, &blk_size.to_le_bytes());
        let exp = (p.physical_block_size / blk_size).trailing_zeros() as u8;
        put(PHYSICAL_BLOCK_EXP, &[exp]);
        put(ALIGNMENT_OFFSET, &[0]);
        put(
            MIN_IO_SIZE,
            &((p.min_io_size / blk_size) as u16).to_le_bytes(),
        );
        put(OPT_IO_SIZE, &(p.opt_io_size / blk_size).to_le_bytes());
        put(WRITEBACK, &[u8::from(self.wce)]);
        put(NUM_QUEUES, &p.num_queues.to_le_bytes());
        if p.discard {
            put(MAX_DISCARD_SECTORS, &p.max_discard_sectors.to_le_bytes());
            // QEMU sends one segment per discard (no userspace API has more).
            put(MAX_DISCARD_SEG, &1u32.to_le_bytes());
            let align = p.discard_granularity / SECTOR_SIZE as u32;
            put(DISCARD_SECTOR_ALIGNMENT, &align.to_le_bytes());
        }
        if p.write_zeroes {
            put(
                MAX_WRITE_ZEROES_SECTORS,
                &p.max_write_zeroes_sectors.to_le_bytes(),
            );
            put(MAX_WRITE_ZEROES_SEG, &1u32.to_le_bytes());
            put(WRITE_ZEROES_MAY_UNMAP, &[1]);
        }
        c
    }
}

const fn bit(b: u32) -> u64 {
    1 << b
}

/// The device feature bits (`virtio_blk_get_features` for a virtio 1 driver),
/// plus the ring features the queue processing supports.
pub(crate) fn device_features(p: &BlkParams, wce: bool, read_only: bool) -> u64 {
    let mut f = bit(VIRTIO_BLK_F_SEG_MAX)
        | bit(VIRTIO_BLK_F_GEOMETRY)
        | bit(VIRTIO_BLK_F_TOPOLOGY)
        | bit(VIRTIO_BLK_F_BLK_SIZE)
        | bit(VIRTIO_RING_F_INDIRECT_DESC)
        | bit(VIRTIO_RING_F_EVENT_IDX);
    if p.config_wce {
        f |= bit(VIRTIO_BLK_F_CONFIG_WCE);
    }
    if p.discard {
        f |= bit(VIRTIO_BLK_F_DISCARD);
    }
    if p.write_zeroes {
        f |= bit(VIRTIO_BLK_F_WRITE_ZEROES);
    }
    // x-enable-wce-if-config-wce (on): FLUSH whenever CONFIG_WCE is offered.
    if wce || p.config_wce {
        f |= bit(VIRTIO_BLK_F_FLUSH);
    }
    if read_only {
        f |= bit(VIRTIO_BLK_F_RO);
    }
    if p.num_queues > 1 {
        f |= bit(VIRTIO_BLK_F_MQ);
    }
    f
}
