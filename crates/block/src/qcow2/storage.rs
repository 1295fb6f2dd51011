//! What the qcow2 driver runs on: the image file ([`ImageFile`], positional
//! sync I/O as the thread-pool engine does it) and what it reads from below
//! (a backing image, [`ImageRead`], which a raw file or another qcow2 image
//! implements, so chains of any depth work).

use std::fs::File;
use std::os::unix::fs::FileExt;

use super::error::{Qcow2Error, Result};
use crate::io::IoBuf;
use crate::iovec;

/// The host file a qcow2 image lives in. Reads past the end of the file
/// return zeros (as QEMU's file-posix does for a short read).
pub trait ImageFile: Send + Sync {
    fn read_at(&self, buf: &mut [u8], off: u64) -> std::io::Result<()>;
    /// Reads into a scatter list (guest buffers) from `off`; a file that
    /// can, does it in one preadv.
    fn readv_at(&self, bufs: &[IoBuf], mut off: u64) -> std::io::Result<()> {
        for b in bufs {
            // SAFETY: see IoBuf.
            self.read_at(unsafe { std::slice::from_raw_parts_mut(b.ptr, b.len) }, off)?;
            off += b.len as u64;
        }
        Ok(())
    }
    fn write_at(&self, buf: &[u8], off: u64) -> std::io::Result<()>;
    /// fdatasync: what was written before is on stable storage after.
    fn flush(&self) -> std::io::Result<()>;
    fn file_size(&self) -> std::io::Result<u64>;
    fn set_len(&self, len: u64) -> std::io::Result<()>;
    /// Drop the host blocks of a range (best effort; reads then give zeros).
    fn punch_hole(&self, _off: u64, _len: u64) -> std::io::Result<()> {
        Ok(())
    }
    /// Zero a range cheaply, growing the file if it ends inside it
    /// (`bdrv_co_pwrite_zeroes` with `BDRV_REQ_NO_FALLBACK`); false when
    /// the file cannot, and the caller writes zeros itself.
    fn zero_range(&self, _off: u64, _len: u64) -> std::io::Result<bool> {
        Ok(false)
    }
    /// `BLKDBG_EVENT(bs->file, ev)`: the format is about to do `ev` on
    /// this file (only a `blkdebug` file node acts on it).
    fn debug_event(&self, _ev: crate::debug::DebugEvent) {}
}

impl ImageFile for File {
    fn read_at(&self, buf: &mut [u8], off: u64) -> std::io::Result<()> {
        let mut done = 0;
        while done < buf.len() {
            match FileExt::read_at(self, &mut buf[done..], off + done as u64) {
                Ok(0) => {
                    buf[done..].fill(0);
                    return Ok(());
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn write_at(&self, buf: &[u8], off: u64) -> std::io::Result<()> {
        self.write_all_at(buf, off)
    }

    fn flush(&self) -> std::io::Result<()> {
        self.sync_data()
    }

    fn file_size(&self) -> std::io::Result<u64> {
        Ok(self.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        File::set_len(self, len)
    }

    fn punch_hole(&self, off: u64, len: u64) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        // SAFETY: plain syscall on an open fd; no memory is passed.
        let r = unsafe {
            libc::fallocate(
                self.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                off as i64,
                len as i64,
            )
        };
        // Not every file system can punch holes; the data is dead anyway.
        let _ = r;
        Ok(())
    }

    fn zero_range(&self, off: u64, len: u64) -> std::io::Result<bool> {
        use std::os::fd::AsRawFd;
        // SAFETY: plain syscall on an open fd; no memory is passed.
        let r = unsafe {
            libc::fallocate(
                self.as_raw_fd(),
                libc::FALLOC_FL_ZERO_RANGE,
                off as i64,
                len as i64,
            )
        };
        if r == 0 {
            return Ok(true);
        }
        match std::io::Error::last_os_error() {
            e if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EINVAL)) => Ok(false),
            e => Err(e),
        }
    }
}

/// A read-only image a qcow2 image can sit on (its backing file).
/// Reads beyond [`ImageRead::size`] return zeros, as QEMU does for a
/// backing file shorter than the overlay.
pub trait ImageRead: Send + Sync {
    fn size(&self) -> u64;
    fn read_at(&self, buf: &mut [u8], off: u64) -> Result<()>;
    /// Reads into a scatter list from `off` (zeros beyond the size).
    fn readv_at(&self, bufs: &[IoBuf], mut off: u64) -> Result<()> {
        for b in bufs {
            // SAFETY: see IoBuf.
            self.read_at(unsafe { std::slice::from_raw_parts_mut(b.ptr, b.len) }, off)?;
            off += b.len as u64;
        }
        Ok(())
    }
}

/// A raw image as a backing file.
pub struct RawImage<F: ImageFile> {
    file: F,
    size: u64,
}

impl<F: ImageFile> RawImage<F> {
    pub fn new(file: F) -> Result<Self> {
        let size = file
            .file_size()
            .map_err(|e| Qcow2Error::io("Could not get file size", &e))?;
        Ok(RawImage { file, size })
    }
}

impl<F: ImageFile> ImageRead for RawImage<F> {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], off: u64) -> Result<()> {
        self.readv_at(&iovec::of(buf), off)
    }

    fn readv_at(&self, bufs: &[IoBuf], off: u64) -> Result<()> {
        readv_clipped(bufs, off, self.size, |b, o| {
            self.file
                .readv_at(b, o)
                .map_err(|e| Qcow2Error::io("Could not read backing file", &e))
        })
    }
}

/// Reads the part of `bufs` below `size` with `f` and zero-fills the rest.
pub(crate) fn readv_clipped(
    bufs: &[IoBuf],
    off: u64,
    size: u64,
    f: impl FnOnce(&[IoBuf], u64) -> Result<()>,
) -> Result<()> {
    let len = iovec::total(bufs);
    let avail = size.saturating_sub(off).min(len as u64) as usize;
    iovec::zero(&iovec::slice(bufs, avail, len - avail));
    if avail == 0 {
        return Ok(());
    }
    if avail == len {
        return f(bufs, off);
    }
    f(&iovec::slice(bufs, 0, avail), off)
}
