//! The qcow2 header and its extensions (docs/interop/qcow2.txt "Header",
//! "Header extensions"; QEMU 7.2 block/qcow2.c `qcow2_do_open`,
//! `qcow2_read_extensions`). Fields are big-endian.

use super::error::{Qcow2Error, Result};
use super::storage::ImageFile;

pub const MAGIC: u32 = 0x5146_49fb;
/// Smallest and largest cluster_bits QEMU accepts (MIN/MAX_CLUSTER_BITS).
pub const MIN_CLUSTER_BITS: u32 = 9;
pub const MAX_CLUSTER_BITS: u32 = 21;
pub const V2_HEADER_LEN: u32 = 72;
pub const V3_HEADER_LEN: u32 = 104;
/// QCOW_MAX_REFTABLE_SIZE and QCOW_MAX_L1_SIZE (block/qcow2.h).
pub const MAX_REFTABLE_SIZE: u64 = 8 << 20;
pub const MAX_L1_SIZE: u64 = 32 << 20;
/// QCOW_MAX_SNAPSHOTS and sizeof(QCowSnapshotHeader).
pub const MAX_SNAPSHOTS: u64 = 65536;
pub const SNAPSHOT_HEADER_LEN: u64 = 40;

pub const INCOMPAT_DIRTY: u64 = 1 << 0;
pub const INCOMPAT_CORRUPT: u64 = 1 << 1;
pub const INCOMPAT_DATA_FILE: u64 = 1 << 2;
pub const INCOMPAT_COMPRESSION: u64 = 1 << 3;
pub const INCOMPAT_EXTL2: u64 = 1 << 4;
/// What this driver implements: the dirty and corrupt bits, and the
/// compression-type bit when the type is zlib. External data files and
/// extended L2 entries are refused like unknown features.
pub const INCOMPAT_SUPPORTED: u64 = INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_COMPRESSION;
pub const COMPAT_LAZY_REFCOUNTS: u64 = 1 << 0;

/// Byte offsets of fields that get rewritten in place.
pub const OFF_SIZE: u64 = 24;
pub const OFF_L1: u64 = 36; // l1_size (u32) then l1_table_offset (u64)
pub const OFF_REFTABLE: u64 = 48; // offset (u64) then clusters (u32)
pub const OFF_INCOMPAT: u64 = 72;
pub const OFF_COMPAT: u64 = 80;
pub const OFF_AUTOCLEAR: u64 = 88;

pub const EXT_END: u32 = 0;
pub const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
pub const EXT_FEATURE_TABLE: u32 = 0x6803_f857;
pub const EXT_DATA_FILE: u32 = 0x4441_5441;

/// QEMU's built-in feature names (block/qcow2.c `qcow2_update_header`),
/// used when the image has no feature name table.
pub const KNOWN_FEATURES: &[(u8, u8, &str)] = &[
    (0, 0, "dirty bit"),
    (0, 1, "corrupt bit"),
    (0, 2, "external data file"),
    (0, 3, "compression type"),
    (0, 4, "extended L2 entries"),
    (1, 0, "lazy refcounts"),
    (2, 0, "bitmaps"),
    (2, 1, "raw external data"),
];

/// The parsed header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub version: u32,
    pub backing_file_offset: u64,
    pub backing_file_size: u32,
    pub cluster_bits: u32,
    pub size: u64,
    pub crypt_method: u32,
    pub l1_size: u32,
    pub l1_table_offset: u64,
    pub refcount_table_offset: u64,
    pub refcount_table_clusters: u32,
    pub nb_snapshots: u32,
    pub snapshots_offset: u64,
    pub incompatible_features: u64,
    pub compatible_features: u64,
    pub autoclear_features: u64,
    pub refcount_order: u32,
    pub header_length: u32,
    pub compression_type: u8,
    pub backing_file: Option<String>,
    pub backing_format: Option<String>,
    /// (type, bit, name) from the feature name table extension.
    pub feature_table: Vec<(u8, u8, String)>,
}

fn be32(b: &[u8], o: usize) -> u32 {
    u32::from_be_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

fn be64(b: &[u8], o: usize) -> u64 {
    (be32(b, o) as u64) << 32 | be32(b, o + 4) as u64
}

impl Header {
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// Reads and validates the header (the checks of `qcow2_do_open` that
    /// concern the header itself, in QEMU's order and wording).
    pub fn read(file: &dyn ImageFile) -> Result<Header> {
        let mut b = [0u8; 112];
        file.read_at(&mut b, 0)
            .map_err(|e| Qcow2Error::io("Could not read qcow2 header", &e))?;
        if be32(&b, 0) != MAGIC {
            return Err(Qcow2Error::Invalid("Image is not in qcow2 format".into()));
        }
        let version = be32(&b, 4);
        if !(2..=3).contains(&version) {
            return Err(Qcow2Error::Unsupported(format!(
                "Unsupported qcow2 version {version}"
            )));
        }
        let cluster_bits = be32(&b, 20);
        if !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&cluster_bits) {
            return Err(Qcow2Error::Invalid(format!(
                "Unsupported cluster size: 2^{cluster_bits}"
            )));
        }
        let cs = 1u64 << cluster_bits;
        let mut h = Header {
            version,
            backing_file_offset: be64(&b, 8),
            backing_file_size: be32(&b, 16),
            cluster_bits,
            size: be64(&b, 24),
            crypt_method: be32(&b, 32),
            l1_size: be32(&b, 36),
            l1_table_offset: be64(&b, 40),
            refcount_table_offset: be64(&b, 48),
            refcount_table_clusters: be32(&b, 56),
            nb_snapshots: be32(&b, 60),
            snapshots_offset: be64(&b, 64),
            incompatible_features: 0,
            compatible_features: 0,
            autoclear_features: 0,
            refcount_order: 4,
            header_length: V2_HEADER_LEN,
            compression_type: 0,
            backing_file: None,
            backing_format: None,
            feature_table: Vec::new(),
        };
        if version == 3 {
            h.incompatible_features = be64(&b, 72);
            h.compatible_features = be64(&b, 80);
            h.autoclear_features = be64(&b, 88);
            h.refcount_order = be32(&b, 96);
            h.header_length = be32(&b, 100);
            if h.header_length < V3_HEADER_LEN {
                return Err(Qcow2Error::Invalid("qcow2 header too short".into()));
            }
            if h.header_length > 104 {
                h.compression_type = b[104];
            }
        }
        if h.header_length as u64 > cs {
            return Err(Qcow2Error::Invalid(
                "qcow2 header exceeds cluster size".into(),
            ));
        }
        if h.backing_file_offset > cs {
            return Err(Qcow2Error::Invalid("Invalid backing file offset".into()));
        }
        // Extensions run from the header's end to the backing file name
        // (or the end of the cluster).
        let ext_end = if h.backing_file_offset != 0 {
            h.backing_file_offset
        } else {
            cs
        };
        h.read_extensions(file, ext_end)?;
        if h.compression_type != 0 {
            return Err(Qcow2Error::Unsupported(format!(
                "qcow2: unknown compression type: {}",
                h.compression_type
            )));
        }
        let unsupported = h.incompatible_features & !INCOMPAT_SUPPORTED;
        if unsupported != 0 {
            return Err(Qcow2Error::Unsupported(h.unsupported_message(unsupported)));
        }
        if h.refcount_order > 6 {
            return Err(Qcow2Error::Invalid(
                "Reference count entry width too large; may not exceed 64 bits".into(),
            ));
        }
        if h.crypt_method != 0 {
            return Err(Qcow2Error::Unsupported(format!(
                "Unsupported encryption method {}",
                h.crypt_method
            )));
        }
        if h.refcount_table_clusters == 0 {
            return Err(Qcow2Error::Invalid(
                "Image does not contain a reference count table".into(),
            ));
        }
        validate_table(
            cs,
            h.refcount_table_offset,
            h.refcount_table_clusters as u64,
            cs,
            MAX_REFTABLE_SIZE,
            "Reference count table",
        )?;
        validate_table(
            cs,
            h.snapshots_offset,
            h.nb_snapshots as u64,
            SNAPSHOT_HEADER_LEN,
            SNAPSHOT_HEADER_LEN * MAX_SNAPSHOTS,
            "Snapshot table",
        )?;
        validate_table(
            cs,
            h.l1_table_offset,
            h.l1_size as u64,
            8,
            MAX_L1_SIZE,
            "Active L1 table",
        )?;
        let l2_entries = cs / 8;
        let need = h.size.div_ceil(cs).div_ceil(l2_entries);
        if need > i32::MAX as u64 {
            return Err(Qcow2Error::Invalid("Image is too big".into()));
        }
        if (h.l1_size as u64) < need {
            return Err(Qcow2Error::Invalid("L1 table is too small".into()));
        }
        if h.backing_file_offset != 0 {
            let len = h.backing_file_size as u64;
            if len > 1023 || len > cs - h.backing_file_offset {
                return Err(Qcow2Error::Invalid("Backing file name too long".into()));
            }
            let mut name = vec![0u8; len as usize];
            file.read_at(&mut name, h.backing_file_offset)
                .map_err(|e| Qcow2Error::io("Could not read backing file name", &e))?;
            h.backing_file = Some(String::from_utf8_lossy(&name).into_owned());
        }
        Ok(h)
    }

    fn read_extensions(&mut self, file: &dyn ImageFile, end: u64) -> Result<()> {
        let start = self.header_length as u64;
        if end <= start {
            return Ok(());
        }
        let mut area = vec![0u8; (end - start) as usize];
        file.read_at(&mut area, start).map_err(|e| {
            Qcow2Error::io("qcow2_read_extension: ERROR: pread fail from offset", &e)
        })?;
        let mut pos = 0usize;
        while pos + 8 <= area.len() {
            let typ = be32(&area, pos);
            let len = be32(&area, pos + 4) as usize;
            pos += 8;
            if len > area.len() - pos {
                return Err(Qcow2Error::Invalid("Header extension too large".into()));
            }
            let data = &area[pos..pos + len];
            match typ {
                EXT_END => return Ok(()),
                EXT_BACKING_FORMAT => {
                    if len > 1023 {
                        return Err(Qcow2Error::Invalid(format!(
                            "ERROR: ext_backing_format: len={len} too large (>=1023)"
                        )));
                    }
                    self.backing_format = Some(String::from_utf8_lossy(data).into_owned());
                }
                EXT_FEATURE_TABLE => {
                    for e in data.chunks_exact(48) {
                        let name = &e[2..];
                        let n = name.iter().position(|&c| c == 0).unwrap_or(name.len());
                        self.feature_table.push((
                            e[0],
                            e[1],
                            String::from_utf8_lossy(&name[..n]).into(),
                        ));
                    }
                }
                _ => {}
            }
            pos += len.div_ceil(8) * 8;
        }
        Ok(())
    }

    /// `report_unsupported_feature`: names from the image's feature table,
    /// then the unnamed rest as a hex mask.
    pub fn unsupported_message(&self, mut mask: u64) -> String {
        let mut names: Vec<String> = Vec::new();
        let table: Vec<(u8, u8, String)> = if self.feature_table.is_empty() {
            KNOWN_FEATURES
                .iter()
                .map(|(t, b, n)| (*t, *b, n.to_string()))
                .collect()
        } else {
            self.feature_table.clone()
        };
        for (t, bit, name) in &table {
            if *t == 0 && *bit < 64 && mask & (1u64 << bit) != 0 {
                names.push(name.clone());
                mask &= !(1u64 << bit);
            }
        }
        if mask != 0 {
            names.push(format!("Unknown incompatible feature: {mask:x}"));
        }
        format!("Unsupported qcow2 feature(s): {}", names.join(", "))
    }
}

/// `qcow2_validate_table`.
pub fn validate_table(
    cs: u64,
    offset: u64,
    entries: u64,
    entry_len: u64,
    max_bytes: u64,
    name: &str,
) -> Result<()> {
    if entries > max_bytes / entry_len {
        return Err(Qcow2Error::Invalid(format!("{name} too large")));
    }
    if (i64::MAX as u64) - entries * entry_len < offset || !offset.is_multiple_of(cs) {
        return Err(Qcow2Error::Invalid(format!("{name} offset invalid")));
    }
    Ok(())
}
