//! The properties of a virtio-blk device and their validation, in the order
//! and with the messages of QEMU 7.2: property setters first
//! (util/block-helpers.c `check_block_size`), then
//! `virtio_blk_device_realize` and `blkconf_blocksizes` (hw/block/block.c).

use super::{MAX_REQUEST_SECTORS, SECTOR_SIZE, VIRTQUEUE_MAX_SIZE};

/// QEMU's MIN_BLOCK_SIZE / MAX_BLOCK_SIZE (util/block-helpers.h).
pub const MIN_BLOCK_SIZE: u64 = 512;
pub const MAX_BLOCK_SIZE: u64 = 2 << 20;

/// QEMU's PCI_MSIX_FLAGS_QSIZE: the MSI-X table bounds the automatic queue
/// count (hw/virtio/virtio-pci.c `virtio_pci_optimal_num_queues`).
const MSIX_MAX_QUEUES: u16 = 0x7ff;

/// `write-cache=on|off|auto`: whether the guest sees a volatile write cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WriteCache {
    On,
    Off,
    /// The backend's setting (`-drive cache=`).
    #[default]
    Auto,
}

/// `-device virtio-blk-pci` properties. `Default` is QEMU's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlkOptions {
    /// The device's `id`, used in property error messages ("" when unset).
    pub id: String,
    /// `serial`: what GET_ID returns (at most 20 bytes are sent).
    pub serial: Option<String>,
    /// `num-queues`; `None` is QEMU's auto: one queue per vCPU.
    pub num_queues: Option<u16>,
    /// The machine's vCPU count (`-smp`), for `num_queues: None`.
    pub cpus: u16,
    /// `queue-size` (256).
    pub queue_size: u16,
    /// `write-cache` (auto).
    pub write_cache: WriteCache,
    /// `logical_block_size` / `physical_block_size` in bytes; 0 is unset (512).
    pub logical_block_size: u64,
    pub physical_block_size: u64,
    /// `min_io_size` / `opt_io_size` in bytes (0).
    pub min_io_size: u32,
    pub opt_io_size: u32,
    /// `discard_granularity` in bytes; `None` is QEMU's -1 (the logical block size).
    pub discard_granularity: Option<u32>,
    /// `config-wce` (on): offer VIRTIO_BLK_F_CONFIG_WCE.
    pub config_wce: bool,
    /// `discard` / `write-zeroes` (on): offer the commands.
    pub discard: bool,
    pub write_zeroes: bool,
    /// `max-discard-sectors` / `max-write-zeroes-sectors` (BDRV_REQUEST_MAX_SECTORS).
    pub max_discard_sectors: u32,
    pub max_write_zeroes_sectors: u32,
    /// `seg-max-adjust` (on): seg_max is queue-size - 2, else 126.
    pub seg_max_adjust: bool,
}

impl Default for BlkOptions {
    fn default() -> Self {
        Self {
            id: String::new(),
            serial: None,
            num_queues: None,
            cpus: 1,
            queue_size: 256,
            write_cache: WriteCache::Auto,
            logical_block_size: 0,
            physical_block_size: 0,
            min_io_size: 0,
            opt_io_size: 0,
            discard_granularity: None,
            config_wce: true,
            discard: true,
            write_zeroes: true,
            max_discard_sectors: MAX_REQUEST_SECTORS as u32,
            max_write_zeroes_sectors: MAX_REQUEST_SECTORS as u32,
            seg_max_adjust: true,
        }
    }
}

/// Why a device could not be created; the texts are QEMU 7.2's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlkOptionsError {
    #[error(
        "Property {id}.{name} doesn't take value {value} (minimum: {MIN_BLOCK_SIZE}, maximum: {MAX_BLOCK_SIZE})"
    )]
    BlockSizeRange {
        id: String,
        name: &'static str,
        value: u64,
    },
    #[error("Property {id}.{name} doesn't take value '{value}', it's not a power of 2")]
    BlockSizeNotPowerOfTwo {
        id: String,
        name: &'static str,
        value: u64,
    },
    #[error("num-queues property must be larger than 0")]
    NoQueues,
    /// QEMU 7.2 aborts here; later QEMUs report this.
    #[error("num-queues property must be at most {VIRTQUEUE_MAX_SIZE}")]
    TooManyQueues,
    #[error("invalid queue-size property ({0}), must be > 2")]
    QueueSizeTooSmall(u16),
    #[error("invalid queue-size property ({0}), must be a power of 2 (max {VIRTQUEUE_MAX_SIZE})")]
    QueueSizeInvalid(u16),
    #[error("logical_block_size > physical_block_size not supported")]
    LogicalAbovePhysical,
    #[error("min_io_size must be a multiple of logical_block_size")]
    MinIoUnaligned,
    #[error("min_io_size must not exceed 65535 logical blocks")]
    MinIoTooLarge,
    #[error("opt_io_size must be a multiple of logical_block_size")]
    OptIoUnaligned,
    #[error("discard_granularity must be a multiple of logical_block_size")]
    DiscardGranularityUnaligned,
    #[error(
        "invalid max-discard-sectors property ({0}), must be between 1 and {MAX_REQUEST_SECTORS}"
    )]
    MaxDiscardSectors(u32),
    #[error(
        "invalid max-write-zeroes-sectors property ({0}), must be between 1 and {MAX_REQUEST_SECTORS}"
    )]
    MaxWriteZeroesSectors(u32),
    #[error("virtio-blk: cannot open a block queue: {0}")]
    Queue(String),
}

/// The options after validation, with defaults resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BlkParams {
    pub serial: Vec<u8>,
    pub num_queues: u16,
    pub queue_size: u16,
    /// `write-cache` resolved against the backend: the power-on WCE state.
    pub write_cache: bool,
    pub logical_block_size: u32,
    pub physical_block_size: u32,
    pub min_io_size: u32,
    pub opt_io_size: u32,
    pub discard_granularity: u32,
    pub config_wce: bool,
    pub discard: bool,
    pub write_zeroes: bool,
    pub max_discard_sectors: u32,
    pub max_write_zeroes_sectors: u32,
    pub seg_max: u32,
}

fn check_block_size(id: &str, name: &'static str, value: u64) -> Result<(), BlkOptionsError> {
    if value != 0 && !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&value) {
        return Err(BlkOptionsError::BlockSizeRange {
            id: id.to_string(),
            name,
            value,
        });
    }
    if value & value.wrapping_sub(1) != 0 {
        return Err(BlkOptionsError::BlockSizeNotPowerOfTwo {
            id: id.to_string(),
            name,
            value,
        });
    }
    Ok(())
}

impl BlkOptions {
    /// Validates the options as QEMU does, `backend_write_cache` being the
    /// drive's cache mode (for `write-cache=auto`).
    pub(crate) fn resolve(&self, backend_write_cache: bool) -> Result<BlkParams, BlkOptionsError> {
        use BlkOptionsError as E;
        check_block_size(&self.id, "logical_block_size", self.logical_block_size)?;
        check_block_size(&self.id, "physical_block_size", self.physical_block_size)?;

        let num_queues = match self.num_queues {
            Some(n) => n,
            None => self.cpus.min(MSIX_MAX_QUEUES).min(VIRTQUEUE_MAX_SIZE),
        };
        if num_queues == 0 {
            return Err(E::NoQueues);
        }
        if num_queues > VIRTQUEUE_MAX_SIZE {
            return Err(E::TooManyQueues);
        }
        if self.queue_size <= 2 {
            return Err(E::QueueSizeTooSmall(self.queue_size));
        }
        if !self.queue_size.is_power_of_two() || self.queue_size > VIRTQUEUE_MAX_SIZE {
            return Err(E::QueueSizeInvalid(self.queue_size));
        }
        let write_cache = match self.write_cache {
            WriteCache::On => true,
            WriteCache::Off => false,
            WriteCache::Auto => backend_write_cache,
        };

        // blkconf_blocksizes: a regular file probes no sizes, so unset is 512.
        let unset_512 = |v: u64| if v == 0 { SECTOR_SIZE } else { v };
        let lbs = unset_512(self.logical_block_size);
        let pbs = unset_512(self.physical_block_size);
        if lbs > pbs {
            return Err(E::LogicalAbovePhysical);
        }
        if u64::from(self.min_io_size) % lbs != 0 {
            return Err(E::MinIoUnaligned);
        }
        if u64::from(self.min_io_size) / lbs > u64::from(u16::MAX) {
            return Err(E::MinIoTooLarge);
        }
        if u64::from(self.opt_io_size) % lbs != 0 {
            return Err(E::OptIoUnaligned);
        }
        if let Some(g) = self.discard_granularity {
            if u64::from(g) % lbs != 0 {
                return Err(E::DiscardGranularityUnaligned);
            }
        }
        let sectors_ok = |n: u32| n != 0 && u64::from(n) <= MAX_REQUEST_SECTORS;
        if self.discard && !sectors_ok(self.max_discard_sectors) {
            return Err(E::MaxDiscardSectors(self.max_discard_sectors));
        }
        if self.write_zeroes && !sectors_ok(self.max_write_zeroes_sectors) {
            return Err(E::MaxWriteZeroesSectors(self.max_write_zeroes_sectors));
        }
        // Both sizes are powers of two within 512..=2 MiB here.
        let lbs = lbs as u32;
        Ok(BlkParams {
            // A C string in QEMU: it ends at the first NUL.
            serial: self
                .serial
                .as_deref()
                .unwrap_or_default()
                .bytes()
                .take_while(|&b| b != 0)
                .collect(),
            num_queues,
            queue_size: self.queue_size,
            write_cache,
            logical_block_size: lbs,
            physical_block_size: pbs as u32,
            min_io_size: self.min_io_size,
            opt_io_size: self.opt_io_size,
            discard_granularity: self.discard_granularity.unwrap_or(lbs),
            config_wce: self.config_wce,
            discard: self.discard,
            write_zeroes: self.write_zeroes,
            max_discard_sectors: self.max_discard_sectors,
            max_write_zeroes_sectors: self.max_write_zeroes_sectors,
            seg_max: if self.seg_max_adjust {
                u32::from(self.queue_size) - 2
            } else {
                128 - 2
            },
        })
    }
}
