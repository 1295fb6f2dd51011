//! What a connection sees of an export (QEMU's NBDExport): its name,
//! size and flags, and the I/O behind it; and how a connection finds
//! exports and takes a reference on one (`blk_exp_ref` when a client
//! picks it).

use std::sync::{Arc, Mutex};

use super::proto;

/// Blocking I/O on the exported node, in its offsets; errors are positive
/// errnos. Called on connection threads, concurrently.
pub trait ExportIo: Send + Sync {
    fn read(&self, off: u64, buf: &mut [u8]) -> Result<(), i32>;
    fn write(&self, off: u64, buf: &[u8]) -> Result<(), i32>;
    fn write_zeroes(&self, off: u64, len: u64, may_unmap: bool) -> Result<(), i32>;
    fn discard(&self, off: u64, len: u64) -> Result<(), i32>;
    fn flush(&self) -> Result<(), i32>;
    /// base:allocation for the bytes at `off` (`bdrv_block_status_above`
    /// as NBD flags: `STATE_HOLE`, `STATE_ZERO`) and how many bytes from
    /// `off` share them (at least 1, at most `len`).
    fn block_status(&self, off: u64, len: u64) -> Result<(u32, u64), i32>;
}

/// One export as its clients see it (`NBDExport`).
pub struct Export {
    /// The NBD export name.
    pub name: String,
    pub description: Option<String>,
    /// In bytes, rounded down to 512 (`QEMU_ALIGN_DOWN(size,
    /// BDRV_SECTOR_SIZE)`).
    pub size: u64,
    /// Transmission flags (NBD_FLAG_SEND_DF is added per client).
    pub flags: u16,
    /// `blk_get_request_alignment`: the minimum block size advertised to
    /// clients that ask for NBD_INFO_BLOCK_SIZE.
    pub min_block: u32,
    pub io: Arc<dyn ExportIo>,
}

impl Export {
    /// The flags `nbd_export_create` gives an export.
    pub fn flags_for(read_only: bool, multi_conn: bool) -> u16 {
        let mut f = proto::FLAG_HAS_FLAGS
            | proto::FLAG_SEND_FLUSH
            | proto::FLAG_SEND_FUA
            | proto::FLAG_SEND_CACHE;
        if multi_conn {
            f |= proto::FLAG_CAN_MULTI_CONN;
        }
        if read_only {
            f |= proto::FLAG_READ_ONLY;
        } else {
            f |= proto::FLAG_SEND_TRIM | proto::FLAG_SEND_WRITE_ZEROES | proto::FLAG_SEND_FAST_ZERO;
        }
        f
    }

    pub fn read_only(&self) -> bool {
        self.flags & proto::FLAG_READ_ONLY != 0
    }
}

/// The server's exports as one connection sees them.
pub trait Exports {
    /// The exports NBD_OPT_LIST shows, in the order they were added.
    fn list(&self) -> Vec<Arc<Export>>;
    /// The export named `name` (`nbd_export_find`).
    fn find(&self, name: &[u8]) -> Option<Arc<Export>>;
    /// Like [`Exports::find`], and the connection now holds a reference
    /// on the export until it closes (a removal in `safe` mode refuses).
    fn claim(&self, name: &[u8]) -> Option<Arc<Export>>;
}

/// An export over memory, for tests and the fuzz targets.
pub struct MemDisk(pub Mutex<Vec<u8>>);

impl MemDisk {
    fn range(&self, off: u64, len: u64) -> Result<std::ops::Range<usize>, i32> {
        let n = self.0.lock().map_or(0, |d| d.len()) as u64;
        match off.checked_add(len) {
            Some(end) if end <= n => Ok(off as usize..end as usize),
            _ => Err(libc::EIO),
        }
    }
}

impl ExportIo for MemDisk {
    fn read(&self, off: u64, buf: &mut [u8]) -> Result<(), i32> {
        let r = self.range(off, buf.len() as u64)?;
        let d = self.0.lock().map_err(|_| libc::EIO)?;
        buf.copy_from_slice(&d[r]);
        Ok(())
    }
    fn write(&self, off: u64, buf: &[u8]) -> Result<(), i32> {
        let r = self.range(off, buf.len() as u64)?;
        let mut d = self.0.lock().map_err(|_| libc::EIO)?;
        d[r].copy_from_slice(buf);
        Ok(())
    }
    fn write_zeroes(&self, off: u64, len: u64, _may_unmap: bool) -> Result<(), i32> {
        let r = self.range(off, len)?;
        let mut d = self.0.lock().map_err(|_| libc::EIO)?;
        d[r].fill(0);
        Ok(())
    }
    fn discard(&self, off: u64, len: u64) -> Result<(), i32> {
        self.range(off, len).map(|_| ())
    }
    fn flush(&self) -> Result<(), i32> {
        Ok(())
    }
    /// Runs of zero bytes read as holes, everything else as data.
    fn block_status(&self, off: u64, len: u64) -> Result<(u32, u64), i32> {
        let r = self.range(off, len)?;
        let d = self.0.lock().map_err(|_| libc::EIO)?;
        let s = &d[r];
        let zero = s.first().is_some_and(|b| *b == 0);
        let n = s.iter().take_while(|b| (**b == 0) == zero).count().max(1);
        let flags = if zero {
            proto::STATE_HOLE | proto::STATE_ZERO
        } else {
            0
        };
        Ok((flags, n as u64))
    }
}

/// A fixed list of exports, for tests and the fuzz targets; claims are
/// counted.
#[derive(Default)]
pub struct StaticExports {
    pub exports: Vec<Arc<Export>>,
    pub claims: Mutex<usize>,
}

impl Exports for StaticExports {
    fn list(&self) -> Vec<Arc<Export>> {
        self.exports.clone()
    }
    fn find(&self, name: &[u8]) -> Option<Arc<Export>> {
        self.exports
            .iter()
            .find(|e| e.name.as_bytes() == name)
            .cloned()
    }
    fn claim(&self, name: &[u8]) -> Option<Arc<Export>> {
        let e = self.find(name)?;
        if let Ok(mut n) = self.claims.lock() {
            *n += 1;
        }
        Some(e)
    }
}
