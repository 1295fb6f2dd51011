//! Image creation (QEMU block/qcow2.c `qcow2_co_create`): a header, a
//! one-cluster refcount table and one refcount block, then the image is
//! grown to its size through the normal truncate path, as QEMU does.

use std::sync::Arc;

use super::error::{Qcow2Error, Result};
use super::header::{self, KNOWN_FEATURES};
use super::storage::ImageFile;
use super::{OpenOptions, Qcow2};

/// `compat=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compat {
    /// `0.10`: version 2.
    V2,
    /// `1.1`: version 3.
    V3,
}

#[derive(Debug, Clone)]
pub struct CreateOptions {
    pub size: u64,
    pub cluster_size: u64,
    pub compat: Compat,
    pub lazy_refcounts: bool,
    pub refcount_bits: u32,
    pub backing_file: Option<String>,
    pub backing_format: Option<String>,
}

impl CreateOptions {
    /// QEMU's defaults: 64k clusters, compat=1.1, 16-bit refcounts.
    pub fn new(size: u64) -> Self {
        CreateOptions {
            size,
            cluster_size: 65536,
            compat: Compat::V3,
            lazy_refcounts: false,
            refcount_bits: 16,
            backing_file: None,
            backing_format: None,
        }
    }
}

fn ext(out: &mut Vec<u8>, typ: u32, data: &[u8]) {
    out.extend_from_slice(&typ.to_be_bytes());
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(8) * 8, 0);
}

/// Writes a new, empty image of `o.size` bytes into `file` (which should
/// be empty) with QEMU's option checks and messages.
pub fn create(file: Arc<dyn ImageFile>, o: &CreateOptions) -> Result<()> {
    let cs = o.cluster_size;
    if !cs.is_power_of_two() || !(512..=2 << 20).contains(&cs) {
        return Err(Qcow2Error::Invalid(
            "Cluster size must be a power of two between 512 and 2048k".into(),
        ));
    }
    if !o.size.is_multiple_of(512) {
        return Err(Qcow2Error::Invalid(
            "Image size must be a multiple of 512 bytes".into(),
        ));
    }
    let v3 = o.compat == Compat::V3;
    if o.backing_format.is_some() && o.backing_file.is_none() {
        return Err(Qcow2Error::Invalid(
            "Backing format cannot be used without backing file".into(),
        ));
    }
    if o.lazy_refcounts && !v3 {
        return Err(Qcow2Error::Invalid(
            "Lazy refcounts only supported with compatibility level 1.1 and above (use compat=1.1 or greater)".into(),
        ));
    }
    if !o.refcount_bits.is_power_of_two() || o.refcount_bits > 64 {
        return Err(Qcow2Error::Invalid(
            "Refcount width must be a power of two and may not exceed 64 bits".into(),
        ));
    }
    if o.refcount_bits != 16 && !v3 {
        return Err(Qcow2Error::Invalid(
            "Different refcount widths than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)".into(),
        ));
    }
    let cluster_bits = cs.trailing_zeros();
    let refcount_order = o.refcount_bits.trailing_zeros();
    let mut h = Vec::with_capacity(cs as usize);
    h.extend_from_slice(&header::MAGIC.to_be_bytes());
    h.extend_from_slice(&(if v3 { 3u32 } else { 2 }).to_be_bytes());
    h.extend_from_slice(&0u64.to_be_bytes()); // backing_file_offset, patched below
    h.extend_from_slice(&0u32.to_be_bytes()); // backing_file_size
    h.extend_from_slice(&cluster_bits.to_be_bytes());
    h.extend_from_slice(&0u64.to_be_bytes()); // size: set by truncate
    h.extend_from_slice(&0u32.to_be_bytes()); // crypt_method
    h.extend_from_slice(&0u32.to_be_bytes()); // l1_size
    h.extend_from_slice(&0u64.to_be_bytes()); // l1_table_offset
    h.extend_from_slice(&cs.to_be_bytes()); // refcount_table_offset
    h.extend_from_slice(&1u32.to_be_bytes()); // refcount_table_clusters
    h.extend_from_slice(&0u32.to_be_bytes()); // nb_snapshots
    h.extend_from_slice(&0u64.to_be_bytes()); // snapshots_offset
    if v3 {
        h.extend_from_slice(&0u64.to_be_bytes());
        let compat = if o.lazy_refcounts {
            header::COMPAT_LAZY_REFCOUNTS
        } else {
            0
        };
        h.extend_from_slice(&compat.to_be_bytes());
        h.extend_from_slice(&0u64.to_be_bytes());
        h.extend_from_slice(&refcount_order.to_be_bytes());
        h.extend_from_slice(&112u32.to_be_bytes()); // header_length
        h.resize(112, 0); // compression_type zlib + padding
    }
    if let Some(f) = &o.backing_format {
        ext(&mut h, header::EXT_BACKING_FORMAT, f.as_bytes());
    }
    if v3 && cs > 4096 {
        let mut t = Vec::new();
        for (typ, bit, name) in KNOWN_FEATURES {
            let mut e = [0u8; 48];
            e[0] = *typ;
            e[1] = *bit;
            e[2..2 + name.len()].copy_from_slice(name.as_bytes());
            t.extend_from_slice(&e);
        }
        ext(&mut h, header::EXT_FEATURE_TABLE, &t);
    }
    ext(&mut h, header::EXT_END, &[]);
    if let Some(b) = &o.backing_file {
        let off = h.len() as u64;
        h.extend_from_slice(b.as_bytes());
        h[8..16].copy_from_slice(&off.to_be_bytes());
        h[16..20].copy_from_slice(&(b.len() as u32).to_be_bytes());
    }
    if h.len() as u64 > cs {
        return Err(Qcow2Error::Invalid("Backing file name too long".into()));
    }
    h.resize(cs as usize, 0);
    // Cluster 1: refcount table pointing at cluster 2, the first refcount
    // block, which counts clusters 0..=2.
    let mut rt = vec![0u8; cs as usize];
    rt[..8].copy_from_slice(&(2 * cs).to_be_bytes());
    let mut rb = vec![0u8; cs as usize];
    for c in 0..3usize {
        match refcount_order {
            0..=2 => {
                let bits = 1usize << refcount_order;
                let per = 8 / bits;
                rb[c / per] |= 1 << ((c % per) * bits);
            }
            _ => {
                let w = 1usize << (refcount_order - 3);
                rb[c * w + w - 1] = 1;
            }
        }
    }
    let io =
        |r: std::io::Result<()>| r.map_err(|e| Qcow2Error::io("Could not write qcow2 header", &e));
    io(file.set_len(0))?;
    io(file.write_at(&h, 0))?;
    io(file.write_at(&rt, cs))?;
    io(file.write_at(&rb, 2 * cs))?;
    io(file.flush())?;
    let img = Qcow2::open(
        file,
        OpenOptions {
            writable: true,
            lazy_refcounts: Some(false),
            ..Default::default()
        },
    )?;
    img.truncate(o.size)?;
    img.close()
}
