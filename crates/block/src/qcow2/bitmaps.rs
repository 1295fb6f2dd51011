//! Persistent dirty bitmaps in a qcow2 image (docs/interop/qcow2.txt
//! "Bitmaps extension", "Bitmap directory", "Bitmap table"; behaviour of
//! QEMU 7.2 block/qcow2-bitmap.c).
//!
//! The extension (type 0x23852875) names the bitmap directory; each entry
//! has a bitmap table whose entries point at clusters of bitmap data (one
//! bit per granule, least significant bit first; entry 0 means all zeros,
//! entry 1 all ones). The autoclear bit 0 says the extension is valid: a
//! program that does not know bitmaps clears it on a read-write open, and
//! then the bitmaps are ignored.
//!
//! As QEMU: a read-write open marks every stored bitmap IN_USE on disk (a
//! crash leaves them so, and the next open loads them inconsistent); the
//! close writes the bitmaps' data into new clusters, a new directory with
//! the IN_USE flags cleared, then frees the old clusters. Removing a
//! persistent bitmap takes it out of the image at once.

use super::error::{Qcow2Error, Result};
use super::header::{EXT_END, OFF_AUTOCLEAR};
use super::Qcow2;
use crate::bitmap::DirtyBitmap;

pub const EXT_BITMAPS: u32 = 0x2385_2875;
pub const AUTOCLEAR_BITMAPS: u64 = 1;
const FLAG_IN_USE: u32 = 1;
const FLAG_AUTO: u32 = 2;
const TYPE_DIRTY_TRACKING: u8 = 1;
const ENTRY_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
const ENTRY_ALL_ONES: u64 = 1;

/// A bitmap read from the image.
pub struct StoredBitmap {
    pub name: String,
    pub granularity: u64,
    /// BME_FLAG_AUTO: it records writes.
    pub enabled: bool,
    /// BME_FLAG_IN_USE was set when the image was opened: not saved
    /// properly; its data is not loaded.
    pub in_use: bool,
    pub bits: DirtyBitmap,
}

/// A bitmap to write at close.
pub struct BitmapToStore<'a> {
    pub name: &'a str,
    pub enabled: bool,
    pub bits: &'a DirtyBitmap,
}

/// One directory entry (`Qcow2BitmapDirEntry`), extra data kept as it is.
#[derive(Clone)]
struct Entry {
    table_offset: u64,
    table_size: u32,
    flags: u32,
    typ: u8,
    granularity_bits: u8,
    extra: Vec<u8>,
    name: String,
}

impl Entry {
    fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&self.table_offset.to_be_bytes());
        out.extend_from_slice(&self.table_size.to_be_bytes());
        out.extend_from_slice(&self.flags.to_be_bytes());
        out.push(self.typ);
        out.push(self.granularity_bits);
        out.extend_from_slice(&(self.name.len() as u16).to_be_bytes());
        out.extend_from_slice(&(self.extra.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.extra);
        out.extend_from_slice(self.name.as_bytes());
        let len = out.len() - start;
        out.resize(start + len.div_ceil(8) * 8, 0);
    }
}

/// Where the extension's fields are and what they say.
struct Ext {
    nb: u32,
    dir_size: u64,
    dir_offset: u64,
}

fn be16(b: &[u8], o: usize) -> u16 {
    u16::from_be_bytes([b[o], b[o + 1]])
}
fn be32(b: &[u8], o: usize) -> u32 {
    u32::from_be_bytes(b[o..o + 4].try_into().unwrap_or_default())
}
fn be64(b: &[u8], o: usize) -> u64 {
    u64::from_be_bytes(b[o..o + 8].try_into().unwrap_or_default())
}

fn io(what: &str) -> impl Fn(std::io::Error) -> Qcow2Error + '_ {
    move |e| Qcow2Error::io(what, &e)
}

fn invalid(m: &str) -> Qcow2Error {
    Qcow2Error::Invalid(m.to_string())
}

/// Every cluster the bitmaps extension references (directory, tables,
/// data), as (byte offset, length), read from the header on disk: what
/// `qcow2_check_bitmaps_refcounts` counts, so a check or a repair of a
/// dirty image keeps the bitmaps' clusters.
pub(crate) fn referenced(file: &dyn super::storage::ImageFile, cs: u64) -> Result<Vec<(u64, u64)>> {
    let mut cl = vec![0u8; cs as usize];
    file.read_at(&mut cl, 0)
        .map_err(io("Could not read qcow2 header"))?;
    if be32(&cl, 4) < 3 || be64(&cl, OFF_AUTOCLEAR as usize) & AUTOCLEAR_BITMAPS == 0 {
        return Ok(Vec::new());
    }
    let end = match be64(&cl, 8) {
        0 => cl.len(),
        o => (o as usize).min(cl.len()),
    };
    let mut pos = (be32(&cl, 100) as usize).min(cl.len());
    let mut ext = None;
    while pos + 8 <= end {
        let typ = be32(&cl, pos);
        let len = be32(&cl, pos + 4) as usize;
        if typ == EXT_END || pos + 8 + len > end {
            break;
        }
        if typ == EXT_BITMAPS && len >= 24 {
            let d = pos + 8;
            ext = Some(Ext {
                nb: be32(&cl, d),
                dir_size: be64(&cl, d + 8),
                dir_offset: be64(&cl, d + 16),
            });
        }
        pos += 8 + len.div_ceil(8) * 8;
    }
    let Some(ext) = ext.filter(|e| e.nb > 0) else {
        return Ok(Vec::new());
    };
    let mut out = vec![(ext.dir_offset, ext.dir_size)];
    for e in parse_directory(file, &ext, cs)? {
        if e.table_offset == 0 {
            continue;
        }
        out.push((e.table_offset, (e.table_size as u64 * 8).max(1)));
        for t in read_table(file, &e)? {
            if t & ENTRY_OFFSET_MASK != 0 {
                out.push((t & ENTRY_OFFSET_MASK, cs));
            }
        }
    }
    Ok(out)
}

/// `bitmap_list_load`.
fn parse_directory(file: &dyn super::storage::ImageFile, ext: &Ext, cs: u64) -> Result<Vec<Entry>> {
    if ext.dir_size > 1024 * 65535 || !ext.dir_offset.is_multiple_of(cs) {
        return Err(invalid("Bitmap directory is invalid"));
    }
    let mut dir = vec![0u8; ext.dir_size as usize];
    file.read_at(&mut dir, ext.dir_offset)
        .map_err(io("Failed to read bitmap directory"))?;
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 24 <= dir.len() && out.len() < ext.nb as usize {
        let name_size = be16(&dir, pos + 18) as usize;
        let extra = be32(&dir, pos + 20) as usize;
        let end = pos + 24 + extra + name_size;
        if end > dir.len() {
            return Err(invalid("Broken bitmap directory"));
        }
        out.push(Entry {
            table_offset: be64(&dir, pos),
            table_size: be32(&dir, pos + 8),
            flags: be32(&dir, pos + 12),
            typ: dir[pos + 16],
            granularity_bits: dir[pos + 17],
            extra: dir[pos + 24..pos + 24 + extra].to_vec(),
            name: String::from_utf8_lossy(&dir[pos + 24 + extra..end]).into_owned(),
        });
        pos += (24 + extra + name_size).div_ceil(8) * 8;
    }
    if out.len() != ext.nb as usize {
        return Err(invalid("Broken bitmap directory"));
    }
    Ok(out)
}

fn read_table(file: &dyn super::storage::ImageFile, e: &Entry) -> Result<Vec<u64>> {
    let mut b = vec![0u8; e.table_size as usize * 8];
    file.read_at(&mut b, e.table_offset).map_err(io(
        "Could not read bitmap_table table from image for bitmap",
    ))?;
    Ok(b.chunks_exact(8).map(|c| be64(c, 0)).collect())
}

impl Qcow2 {
    /// The header cluster and the bounds of its extension area.
    fn header_area(&self) -> Result<(Vec<u8>, usize, usize)> {
        let h = self.header();
        let cs = self.cluster_size() as usize;
        let mut cl = vec![0u8; cs];
        self.file
            .read_at(&mut cl, 0)
            .map_err(io("Could not read qcow2 header"))?;
        let hlen = (h.header_length as usize).min(cs);
        let end = match h.backing_file_offset {
            0 => cs,
            o => (o as usize).min(cs),
        };
        Ok((cl, hlen, end))
    }

    /// The bitmaps extension, if there is one and it is valid (the
    /// autoclear bit as the image was opened).
    fn bitmaps_ext(&self) -> Result<Option<Ext>> {
        if self.header().autoclear_features & AUTOCLEAR_BITMAPS == 0 {
            return Ok(None);
        }
        let (cl, mut pos, end) = self.header_area()?;
        while pos + 8 <= end {
            let typ = be32(&cl, pos);
            let len = be32(&cl, pos + 4) as usize;
            if typ == EXT_END || pos + 8 + len > end {
                break;
            }
            if typ == EXT_BITMAPS && len >= 24 {
                let d = pos + 8;
                return Ok(Some(Ext {
                    nb: be32(&cl, d),
                    dir_size: be64(&cl, d + 8),
                    dir_offset: be64(&cl, d + 16),
                }));
            }
            pos += 8 + len.div_ceil(8) * 8;
        }
        Ok(None)
    }

    fn read_directory(&self, ext: &Ext) -> Result<Vec<Entry>> {
        parse_directory(&*self.file, ext, self.cluster_size())
    }

    fn read_table(&self, e: &Entry) -> Result<Vec<u64>> {
        read_table(&*self.file, e)
    }

    /// `load_bitmap_data`: the table's clusters into a bitmap of the
    /// virtual size.
    fn read_bits(&self, e: &Entry) -> Result<DirtyBitmap> {
        let g = 1u64 << e.granularity_bits;
        let bits = DirtyBitmap::new(self.virtual_size(), g);
        let cs = self.cluster_size();
        // Granules per data cluster.
        let per = cs * 8;
        let table = self.read_table(e)?;
        let mut words = bits.snapshot();
        let mut buf = vec![0u8; cs as usize];
        for (i, &t) in table.iter().enumerate() {
            let off = t & ENTRY_OFFSET_MASK;
            let first_word = (i as u64 * per / 64) as usize;
            if off == 0 {
                if t & ENTRY_ALL_ONES != 0 {
                    for w in words.iter_mut().skip(first_word).take((per / 64) as usize) {
                        *w = u64::MAX;
                    }
                }
                continue;
            }
            self.file
                .read_at(&mut buf, off)
                .map_err(io("Could not read from cluster"))?;
            for (k, c) in buf.chunks_exact(8).enumerate() {
                if let Some(w) = words.get_mut(first_word + k) {
                    *w = u64::from_le_bytes(c.try_into().unwrap_or_default());
                }
            }
        }
        // Bits past the end (all-ones clusters) must not count.
        bits.restore(&words);
        Ok(bits.resized(bits.size()))
    }

    /// `qcow2_load_dirty_bitmaps`: the stored bitmaps in directory order.
    /// On a read-write image the ones not in use are marked IN_USE on disk.
    pub fn load_bitmaps(&self) -> Result<Vec<StoredBitmap>> {
        let Some(ext) = self.bitmaps_ext()? else {
            return Ok(Vec::new());
        };
        if ext.nb == 0 {
            return Ok(Vec::new());
        }
        let mut dir = self.read_directory(&ext)?;
        let mut out = Vec::new();
        let mut update = false;
        for e in &mut dir {
            if e.typ != TYPE_DIRTY_TRACKING {
                continue;
            }
            let in_use = e.flags & FLAG_IN_USE != 0;
            let bits = if in_use {
                DirtyBitmap::new(self.virtual_size(), 1 << e.granularity_bits)
            } else {
                self.read_bits(e)?
            };
            out.push(StoredBitmap {
                name: e.name.clone(),
                granularity: 1 << e.granularity_bits,
                enabled: e.flags & FLAG_AUTO != 0,
                in_use,
                bits,
            });
            if !in_use {
                e.flags |= FLAG_IN_USE;
                update = true;
            }
        }
        if update && self.meta().writable {
            self.rewrite_in_place(&ext, &dir)?;
        }
        Ok(out)
    }

    /// `update_ext_header_and_dir_in_place`: same size, same place.
    fn rewrite_in_place(&self, ext: &Ext, dir: &[Entry]) -> Result<()> {
        let mut b = Vec::new();
        for e in dir {
            e.encode(&mut b);
        }
        self.file
            .write_at(&b, ext.dir_offset)
            .and_then(|()| self.file.flush())
            .map_err(io("Failed to update bitmap extension"))
    }

    /// `qcow2_reopen_bitmaps_rw`: the image became writable again, and the
    /// bitmaps it stores are in use from now on.
    pub fn mark_bitmaps_in_use(&self) -> Result<()> {
        let Some(ext) = self.bitmaps_ext()?.filter(|e| e.nb > 0) else {
            return Ok(());
        };
        let mut dir = self.read_directory(&ext)?;
        if dir.iter().all(|e| e.flags & FLAG_IN_USE != 0) {
            return Ok(());
        }
        for e in &mut dir {
            e.flags |= FLAG_IN_USE;
        }
        self.rewrite_in_place(&ext, &dir)
    }

    /// Writes `bits` into new clusters; returns the new table's offset and
    /// size (`store_bitmap`).
    fn write_bits(&self, bits: &DirtyBitmap) -> Result<(u64, u32)> {
        let cs = self.cluster_size();
        let per = cs * 8;
        let nbits = bits.size().div_ceil(bits.granularity());
        let tb_size = nbits.div_ceil(per);
        let words = bits.snapshot();
        let wpc = (per / 64) as usize;
        let mut table = vec![0u64; tb_size as usize];
        let mut m = self.meta();
        for (i, t) in table.iter_mut().enumerate() {
            let chunk = words
                .get(i * wpc..((i + 1) * wpc).min(words.len()))
                .unwrap_or(&[]);
            if chunk.iter().all(|w| *w == 0) {
                continue;
            }
            let off = m.alloc(1)?;
            let mut buf = vec![0u8; cs as usize];
            for (k, w) in chunk.iter().enumerate() {
                buf[k * 8..k * 8 + 8].copy_from_slice(&w.to_le_bytes());
            }
            m.check_overlap(off, cs)?;
            self.file
                .write_at(&buf, off)
                .map_err(io("Failed to write bitmap to file"))?;
            *t = off;
        }
        let bytes: Vec<u8> = table.iter().flat_map(|t| t.to_be_bytes()).collect();
        let n = (bytes.len() as u64).div_ceil(cs).max(1);
        let off = m.alloc(n)?;
        m.check_overlap(off, n * cs)?;
        self.file
            .write_at(&bytes, off)
            .map_err(io("Failed to write bitmap table"))?;
        Ok((off, tb_size as u32))
    }

    /// The clusters of an entry's table and data.
    fn entry_clusters(&self, e: &Entry) -> Result<Vec<(u64, u64)>> {
        if e.table_offset == 0 {
            return Ok(Vec::new());
        }
        let cs = self.cluster_size();
        let mut r: Vec<(u64, u64)> = self
            .read_table(e)?
            .into_iter()
            .map(|t| t & ENTRY_OFFSET_MASK)
            .filter(|o| *o != 0)
            .map(|o| (o, cs))
            .collect();
        r.push((e.table_offset, (e.table_size as u64 * 8).max(1)));
        Ok(r)
    }

    /// `update_ext_header_and_dir`: a new directory (or none), the header
    /// extension and the autoclear bit naming it, then the old directory
    /// freed.
    fn write_directory(&self, old: Option<&Ext>, dir: &[Entry]) -> Result<()> {
        let cs = self.cluster_size();
        let (mut new_off, mut new_size) = (0, 0);
        if !dir.is_empty() {
            let mut b = Vec::new();
            for e in dir {
                e.encode(&mut b);
            }
            let mut m = self.meta();
            new_size = b.len() as u64;
            new_off = m.alloc(new_size.div_ceil(cs))?;
            m.check_overlap(new_off, new_size)?;
            self.file
                .write_at(&b, new_off)
                .map_err(io("Failed to update bitmap extension"))?;
            // The refcounts of everything the directory names are on disk
            // before the header points at it.
            m.flush()?;
        }
        self.write_bitmaps_ext(dir.len() as u32, new_size, new_off)?;
        if let Some(o) = old.filter(|o| o.dir_size > 0) {
            self.meta().release(&[(o.dir_offset, o.dir_size)])?;
        }
        Ok(())
    }

    /// Rewrites the header's extension area with the bitmaps extension
    /// (dropped when `nb` is 0) and sets or clears the autoclear bit.
    fn write_bitmaps_ext(&self, nb: u32, size: u64, off: u64) -> Result<()> {
        let (cl, hlen, end) = self.header_area()?;
        let mut h = self.header.write().unwrap_or_else(|e| e.into_inner());
        let cs = cl.len();
        let mut kept = Vec::new();
        let mut pos = hlen;
        while pos + 8 <= end {
            let typ = be32(&cl, pos);
            let len = be32(&cl, pos + 4) as usize;
            if typ == EXT_END {
                break;
            }
            let Some(next) = (len.div_ceil(8) * 8)
                .checked_add(pos + 8)
                .filter(|n| *n <= end)
            else {
                break;
            };
            if typ != EXT_BITMAPS {
                kept.extend_from_slice(&cl[pos..next]);
            }
            pos = next;
        }
        let old_used = match h.backing_file_offset {
            0 => (pos + 8).min(cs),
            o => (o as usize + h.backing_file_size as usize).min(cs),
        };
        let mut out = cl[..hlen].to_vec();
        out.extend_from_slice(&kept);
        if nb > 0 {
            out.extend_from_slice(&EXT_BITMAPS.to_be_bytes());
            out.extend_from_slice(&24u32.to_be_bytes());
            out.extend_from_slice(&nb.to_be_bytes());
            out.extend_from_slice(&0u32.to_be_bytes());
            out.extend_from_slice(&size.to_be_bytes());
            out.extend_from_slice(&off.to_be_bytes());
        }
        out.extend_from_slice(&[0u8; 8]);
        let name = h.backing_file.clone().unwrap_or_default();
        let name_off = out.len();
        if name_off + name.len() > cs {
            return Err(Qcow2Error::Invalid("Header does not fit".into()));
        }
        out.extend_from_slice(name.as_bytes());
        let boff = if h.backing_file.is_some() {
            name_off as u64
        } else {
            0
        };
        out[8..16].copy_from_slice(&boff.to_be_bytes());
        // The other autoclear bits were cleared at the read-write open.
        let autoclear = if nb > 0 { AUTOCLEAR_BITMAPS } else { 0 };
        if h.version >= 3 && out.len() >= OFF_AUTOCLEAR as usize + 8 {
            let a = OFF_AUTOCLEAR as usize;
            out[a..a + 8].copy_from_slice(&autoclear.to_be_bytes());
        }
        if out.len() < old_used {
            out.resize(old_used, 0);
        }
        self.file
            .write_at(&out, 0)
            .and_then(|()| self.file.flush())
            .map_err(io("Could not update qcow2 header"))?;
        h.backing_file_offset = boff;
        h.autoclear_features = autoclear;
        Ok(())
    }

    /// `qcow2_store_persistent_dirty_bitmaps` at close: `list` in the
    /// node's order (newest first); bitmaps already in the image (in use
    /// since the open) get new data in their entry, new ones are appended.
    /// Entries no bitmap of `list` names (inconsistent ones) stay as they
    /// are.
    pub fn store_bitmaps(&self, list: &[BitmapToStore<'_>]) -> Result<()> {
        if list.is_empty() {
            return Ok(());
        }
        if !self.meta().writable {
            return Err(invalid("No write access"));
        }
        let ext = self.bitmaps_ext()?;
        let mut dir = match &ext {
            Some(e) if e.nb > 0 => self.read_directory(e)?,
            _ => Vec::new(),
        };
        let mut drop = Vec::new();
        for b in list {
            let flags = if b.enabled { FLAG_AUTO } else { 0 };
            let gbits = b.bits.granularity().trailing_zeros() as u8;
            let (off, size) = self.write_bits(b.bits)?;
            match dir.iter_mut().find(|e| e.name == b.name) {
                Some(e) => {
                    if e.flags & FLAG_IN_USE == 0 {
                        return Err(invalid(&format!(
                            "Bitmap '{}' already exists in the image",
                            b.name
                        )));
                    }
                    drop.push(e.clone());
                    e.table_offset = off;
                    e.table_size = size;
                    e.flags = flags;
                    e.granularity_bits = gbits;
                }
                None => dir.push(Entry {
                    table_offset: off,
                    table_size: size,
                    flags,
                    typ: TYPE_DIRTY_TRACKING,
                    granularity_bits: gbits,
                    extra: Vec::new(),
                    name: b.name.to_string(),
                }),
            }
        }
        self.write_directory(ext.as_ref(), &dir)?;
        for e in &drop {
            let r = self.entry_clusters(e)?;
            self.meta().release(&r)?;
        }
        Ok(())
    }

    /// `qcow2_co_remove_persistent_dirty_bitmap`: a bitmap the image does
    /// not hold is not an error.
    pub fn remove_bitmap(&self, name: &str) -> Result<()> {
        let Some(ext) = self.bitmaps_ext()?.filter(|e| e.nb > 0) else {
            return Ok(());
        };
        let mut dir = self.read_directory(&ext)?;
        let Some(i) = dir.iter().position(|e| e.name == name) else {
            return Ok(());
        };
        let e = dir.remove(i);
        self.write_directory(Some(&ext), &dir)?;
        let r = self.entry_clusters(&e)?;
        let mut m = self.meta();
        m.release(&r)?;
        m.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qcow2::{create, CreateOptions, OpenOptions};
    use std::sync::Arc;

    fn image(tag: &str) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!("ferrovm-bm-{}-{tag}.qcow2", std::process::id()));
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&p)
            .unwrap();
        let mut o = CreateOptions::new(4 << 20);
        o.cluster_size = 4096;
        create(Arc::new(f), &o).unwrap();
        p
    }

    fn open(p: &std::path::Path, writable: bool) -> Qcow2 {
        Qcow2::open_path(
            p,
            OpenOptions {
                writable,
                ..OpenOptions::default()
            },
        )
        .unwrap()
    }

    #[test]
    fn stored_bitmaps_load_back_and_are_in_use_while_open() {
        let p = image("roundtrip");
        let q = open(&p, true);
        q.write_at(&[1u8; 8192], 65536).unwrap();
        let a = DirtyBitmap::new(4 << 20, 4096);
        a.set(65536, 8192);
        a.set((4 << 20) - 1, 1);
        let b = DirtyBitmap::new(4 << 20, 1 << 20);
        let list = [
            BitmapToStore {
                name: "a",
                enabled: true,
                bits: &a,
            },
            BitmapToStore {
                name: "b",
                enabled: false,
                bits: &b,
            },
        ];
        q.store_bitmaps(&list).unwrap();
        q.close().unwrap();
        drop(q);

        let q = open(&p, true);
        let got = q.load_bitmaps().unwrap();
        let names: Vec<_> = got.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert!(got[0].enabled && !got[1].enabled && !got[0].in_use);
        assert_eq!(got[0].bits.snapshot(), a.snapshot());
        assert_eq!(got[1].bits.count_granules(), 0);
        assert!(q.check().unwrap().is_clean());
        // Closed without storing (a crash): the bitmaps stay IN_USE.
        q.close().unwrap();
        drop(q);
        let q = open(&p, false);
        assert!(q.load_bitmaps().unwrap().iter().all(|s| s.in_use));
        drop(q);

        // Removal takes the bitmap and its clusters out of the image.
        let q = open(&p, true);
        q.load_bitmaps().unwrap();
        q.remove_bitmap("a").unwrap();
        q.remove_bitmap("nope").unwrap();
        assert!(q.check().unwrap().is_clean());
        q.remove_bitmap("b").unwrap();
        assert!(q.bitmaps_ext().unwrap().is_none());
        assert!(q.check().unwrap().is_clean());
        drop(q);
        let _ = std::fs::remove_file(&p);
    }
}
