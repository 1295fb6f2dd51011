//! What changes on an open image: whether it is writable (QEMU 7.2
//! block/qcow2.c `qcow2_reopen_prepare`: flush and mark clean before going
//! read-only) and the backing file its header names (`qcow2_change_backing_file`
//! with `qcow2_update_header`'s layout: header, backing format extension,
//! the other extensions, end marker, then the name).

use std::sync::atomic::Ordering;

use super::error::{Qcow2Error, Result};
use super::header::{self, EXT_BACKING_FORMAT, EXT_END};
use super::Qcow2;

fn be32(b: &[u8], o: usize) -> u32 {
    u32::from_be_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

fn errno(what: &str, e: i32) -> Qcow2Error {
    Qcow2Error::Io {
        what: what.into(),
        errno: e,
    }
}

impl Qcow2 {
    /// Makes the image writable or read-only. Going read-only writes every
    /// cached table back and clears the dirty bit, as QEMU does before it
    /// drops write access; going writable clears the autoclear bits but the
    /// bitmaps one, as a read-write open does. The
    /// host file must already be writable when going writable, and still
    /// be when going read-only.
    pub fn set_writable(&self, writable: bool) -> Result<()> {
        let _w = self.gate.write().unwrap_or_else(|e| e.into_inner());
        let mut m = self.meta();
        if m.writable == writable {
            return Ok(());
        }
        if writable {
            if m.incompat & header::INCOMPAT_CORRUPT != 0 {
                return Err(Qcow2Error::Invalid(
                    "qcow2: Image is corrupt; cannot be opened read/write".into(),
                ));
            }
            let h = self.header();
            // The bitmaps bit stays: bitmaps.rs keeps that extension valid.
            let keep = h.autoclear_features & super::bitmaps::AUTOCLEAR_BITMAPS;
            if h.version >= 3 && h.autoclear_features != keep {
                self.file
                    .write_at(&keep.to_be_bytes(), header::OFF_AUTOCLEAR)
                    .map_err(|e| Qcow2Error::io("Could not update qcow2 header", &e))?;
            }
            drop(h);
            let compat_lazy = self.header().compatible_features & header::COMPAT_LAZY_REFCOUNTS;
            m.lazy = compat_lazy != 0;
            m.writable = true;
            self.closed.store(false, Ordering::Release);
        } else {
            m.flush()?;
            m.mark_clean()?;
            m.writable = false;
            m.lazy = false;
            self.closed.store(true, Ordering::Release);
        }
        Ok(())
    }

    /// Rewrites the header's backing file name and backing format
    /// (`None`: no backing file / no format extension). The image must be
    /// writable. The other extensions are kept as they are.
    pub fn change_backing_file(&self, name: Option<&str>, fmt: Option<&str>) -> Result<()> {
        self.check_writable()?;
        if fmt.is_some() && name.is_none() || name.is_some_and(|n| n.len() > 1023) {
            return Err(errno("Invalid backing file", libc::EINVAL));
        }
        let _w = self.gate.write().unwrap_or_else(|e| e.into_inner());
        let m = self.meta();
        let mut h = self.header.write().unwrap_or_else(|e| e.into_inner());
        let cs = m.cs as usize;
        let mut cl = vec![0u8; cs];
        self.file
            .read_at(&mut cl, 0)
            .map_err(|e| Qcow2Error::io("Could not read qcow2 header", &e))?;
        let hlen = (h.header_length as usize).min(cs);
        let ext_end = match h.backing_file_offset {
            0 => cs,
            o => (o as usize).min(cs),
        };
        // The extensions other than the backing format, as they are.
        let mut kept = Vec::new();
        let mut pos = hlen;
        while pos + 8 <= ext_end {
            let typ = be32(&cl, pos);
            let len = be32(&cl, pos + 4) as usize;
            if typ == EXT_END {
                break;
            }
            let next = (len.div_ceil(8) * 8)
                .checked_add(pos + 8)
                .filter(|n| *n <= ext_end);
            let Some(next) = next else { break };
            if typ != EXT_BACKING_FORMAT {
                kept.extend_from_slice(&cl[pos..next]);
            }
            pos = next;
        }
        // How much of the cluster the old header used, so stale bytes go.
        let old_used = match h.backing_file_offset {
            0 => (pos + 8).min(cs),
            o => (o as usize + h.backing_file_size as usize).min(cs),
        };
        let mut out = cl[..hlen].to_vec();
        if let Some(f) = fmt {
            out.extend_from_slice(&EXT_BACKING_FORMAT.to_be_bytes());
            out.extend_from_slice(&(f.len() as u32).to_be_bytes());
            out.extend_from_slice(f.as_bytes());
            out.resize(out.len().div_ceil(8) * 8, 0);
        }
        out.extend_from_slice(&kept);
        out.extend_from_slice(&[0u8; 8]);
        let name_off = out.len();
        let name_bytes = name.map_or(&[][..], str::as_bytes);
        if name_off + name_bytes.len() > cs {
            return Err(errno("Header does not fit", libc::ENOSPC));
        }
        out.extend_from_slice(name_bytes);
        let off = if name.is_some() { name_off as u64 } else { 0 };
        if out.len() >= 20 {
            out[8..16].copy_from_slice(&off.to_be_bytes());
            out[16..20].copy_from_slice(&(name_bytes.len() as u32).to_be_bytes());
        }
        if out.len() < old_used {
            out.resize(old_used, 0);
        }
        self.file
            .write_at(&out, 0)
            .and_then(|()| self.file.flush())
            .map_err(|e| Qcow2Error::io("Could not update qcow2 header", &e))?;
        h.backing_file_offset = off;
        h.backing_file_size = name_bytes.len() as u32;
        h.backing_file = name.map(str::to_string);
        h.backing_format = fmt.map(str::to_string);
        Ok(())
    }
}
