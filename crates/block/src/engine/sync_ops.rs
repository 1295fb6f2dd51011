//! Blocking implementations of each request, run on the I/O threads (QEMU
//! block/file-posix.c `handle_aiocb_*`), including the O_DIRECT bounce
//! buffer for unaligned requests (QEMU's block/io.c pads them to the
//! request alignment with read-modify-write).

use std::os::fd::AsRawFd;

use crate::file::{AlignedBuf, FileIo};
use crate::io::IoBuf;

fn last_errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn iovecs(bufs: &[IoBuf]) -> Vec<libc::iovec> {
    bufs.iter()
        .map(|b| libc::iovec {
            iov_base: b.ptr.cast(),
            iov_len: b.len,
        })
        .collect()
}

/// Drops the first `n` bytes of `iov`.
pub(crate) fn advance(iov: &mut Vec<libc::iovec>, mut n: usize) {
    while n > 0 && !iov.is_empty() {
        if n >= iov[0].iov_len {
            n -= iov[0].iov_len;
            iov.remove(0);
        } else {
            // SAFETY: stays within the same buffer.
            iov[0].iov_base = unsafe { iov[0].iov_base.cast::<u8>().add(n).cast() };
            iov[0].iov_len -= n;
            n = 0;
        }
    }
}

/// Zero-fills every byte `iov` still describes (a read past end of file).
fn zero_rest(iov: &[libc::iovec]) {
    for v in iov {
        // SAFETY: the iovec points into guest RAM or a bounce buffer.
        unsafe { std::ptr::write_bytes(v.iov_base.cast::<u8>(), 0, v.iov_len) };
    }
}

/// preadv/pwritev until done (`handle_aiocb_rw_vector` + short-I/O loop).
fn rw_vec(fd: i32, write: bool, mut iov: Vec<libc::iovec>, mut off: u64) -> Result<u64, i32> {
    let mut total = 0u64;
    while !iov.is_empty() {
        let cnt = iov.len().min(libc::UIO_MAXIOV as usize) as i32;
        // SAFETY: iovecs describe valid memory (see IoBuf); fd is open.
        let r = unsafe {
            if write {
                libc::pwritev(fd, iov.as_ptr(), cnt, off as i64)
            } else {
                libc::preadv(fd, iov.as_ptr(), cnt, off as i64)
            }
        };
        if r < 0 {
            let e = last_errno();
            if e == libc::EINTR {
                continue;
            }
            return Err(e);
        }
        if r == 0 {
            if write {
                return Err(libc::EIO);
            }
            zero_rest(&iov);
            return Ok(total + iov.iter().map(|v| v.iov_len as u64).sum::<u64>());
        }
        total += r as u64;
        off += r as u64;
        advance(&mut iov, r as usize);
    }
    Ok(total)
}

/// Whether O_DIRECT can take this request as it is (`bdrv_qiov_is_aligned`).
pub(crate) fn aligned(io: &FileIo, off: u64, bufs: &[IoBuf]) -> bool {
    if !io.direct {
        return true;
    }
    let a = io.req_align;
    off.is_multiple_of(a)
        && bufs.iter().all(|b| {
            (b.ptr as usize).is_multiple_of(io.mem_align) && (b.len as u64).is_multiple_of(a)
        })
}

pub(crate) fn read(io: &FileIo, off: u64, bufs: &[IoBuf]) -> Result<u64, i32> {
    let len: u64 = bufs.iter().map(|b| b.len as u64).sum();
    if aligned(io, off, bufs) {
        return rw_vec(io.file.as_raw_fd(), false, iovecs(bufs), off);
    }
    let a = io.req_align;
    let start = off / a * a;
    let end = (off + len).div_ceil(a) * a;
    let mut bounce = AlignedBuf::new((end - start) as usize, io.mem_align.max(a as usize))
        .ok_or(libc::ENOMEM)?;
    let b = bounce.as_mut_slice();
    let v = vec![libc::iovec {
        iov_base: b.as_mut_ptr().cast(),
        iov_len: b.len(),
    }];
    rw_vec(io.file.as_raw_fd(), false, v, start)?;
    let mut pos = (off - start) as usize;
    for buf in bufs {
        // SAFETY: see IoBuf.
        let dst = unsafe { std::slice::from_raw_parts_mut(buf.ptr, buf.len) };
        dst.copy_from_slice(&b[pos..pos + buf.len]);
        pos += buf.len;
    }
    Ok(len)
}

/// Writes `bufs` at `off`; the file's dirty bitmaps are marked after it,
/// as `bdrv_co_write_req_finish` does, whatever the result.
pub(crate) fn write(io: &FileIo, off: u64, bufs: &[IoBuf]) -> Result<u64, i32> {
    let r = write_data(io, off, bufs);
    io.dirty.mark(off, bufs.iter().map(|b| b.len as u64).sum());
    r
}

fn write_data(io: &FileIo, off: u64, bufs: &[IoBuf]) -> Result<u64, i32> {
    let len: u64 = bufs.iter().map(|b| b.len as u64).sum();
    if aligned(io, off, bufs) {
        return rw_vec(io.file.as_raw_fd(), true, iovecs(bufs), off);
    }
    let a = io.req_align;
    let start = off / a * a;
    let end = (off + len).div_ceil(a) * a;
    let mut bounce = AlignedBuf::new((end - start) as usize, io.mem_align.max(a as usize))
        .ok_or(libc::ENOMEM)?;
    let _serialise = io.rmw.lock().unwrap_or_else(|e| e.into_inner());
    let fd = io.file.as_raw_fd();
    let b = bounce.as_mut_slice();
    let au = a as usize;
    let blen = b.len();
    // Read the partial head and tail blocks (read-modify-write).
    if off != start || !(len as usize).is_multiple_of(au) {
        let head = libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: au,
        };
        rw_vec(fd, false, vec![head], start)?;
    }
    if (off + len) != end && blen > au {
        // SAFETY: the tail block lies inside the bounce buffer.
        let tail = libc::iovec {
            iov_base: unsafe { b.as_mut_ptr().add(blen - au) }.cast(),
            iov_len: au,
        };
        rw_vec(fd, false, vec![tail], end - a)?;
    }
    let mut pos = (off - start) as usize;
    for buf in bufs {
        // SAFETY: see IoBuf.
        let src = unsafe { std::slice::from_raw_parts(buf.ptr, buf.len) };
        b[pos..pos + buf.len].copy_from_slice(src);
        pos += buf.len;
    }
    let v = vec![libc::iovec {
        iov_base: b.as_mut_ptr().cast(),
        iov_len: blen,
    }];
    rw_vec(fd, true, v, start)?;
    Ok(len)
}

pub(crate) fn flush(io: &FileIo) -> Result<u64, i32> {
    if io.no_flush {
        return Ok(0);
    }
    // SAFETY: fd is open.
    if unsafe { libc::fdatasync(io.file.as_raw_fd()) } < 0 {
        return Err(last_errno());
    }
    Ok(0)
}

fn fallocate(io: &FileIo, mode: i32, off: u64, len: u64) -> Result<(), i32> {
    loop {
        // SAFETY: fd is open.
        let r = unsafe { libc::fallocate(io.file.as_raw_fd(), mode, off as i64, len as i64) };
        if r == 0 {
            return Ok(());
        }
        let e = last_errno();
        if e != libc::EINTR {
            return Err(e);
        }
    }
}

/// `handle_aiocb_discard`: punch a hole; unsupported is not an error.
pub(crate) fn discard(io: &FileIo, off: u64, len: u64) -> Result<u64, i32> {
    let r = discard_range(io, off, len);
    io.dirty.mark_discard(off, len);
    r
}

fn discard_range(io: &FileIo, off: u64, len: u64) -> Result<u64, i32> {
    use std::sync::atomic::Ordering::Relaxed;
    match fallocate(
        io,
        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
        off,
        len,
    ) {
        Ok(()) => {
            io.discard_nb_ok.fetch_add(1, Relaxed);
            io.discard_bytes_ok.fetch_add(len, Relaxed);
            Ok(len)
        }
        Err(libc::EOPNOTSUPP) => Ok(len),
        Err(e) => {
            io.discard_nb_failed.fetch_add(1, Relaxed);
            Err(e)
        }
    }
}

/// `BDRV_REQ_NO_FALLBACK` write-zeroes as qcow2's `handle_alloc_space`
/// asks it of file-posix: `FALLOC_FL_ZERO_RANGE` without `KEEP_SIZE`, so a
/// range past the end grows the file; `Ok(false)` when the file system
/// cannot, and the caller writes the zeros.
pub(crate) fn zero_range_no_fallback(io: &FileIo, off: u64, len: u64) -> Result<bool, i32> {
    match fallocate(io, libc::FALLOC_FL_ZERO_RANGE, off, len) {
        Ok(()) => Ok(true),
        Err(libc::EOPNOTSUPP) | Err(libc::EINVAL) => Ok(false),
        Err(e) => Err(e),
    }
}

/// `handle_aiocb_write_zeroes(_unmap)`: punch a hole when unmapping is
/// allowed, else ZERO_RANGE, else write zero buffers.
pub(crate) fn write_zeroes(io: &FileIo, off: u64, len: u64, unmap: bool) -> Result<u64, i32> {
    let r = zero_range(io, off, len, unmap);
    io.dirty.mark(off, len);
    r
}

fn zero_range(io: &FileIo, off: u64, len: u64, unmap: bool) -> Result<u64, i32> {
    if len == 0 {
        return Ok(0);
    }
    if unmap
        && fallocate(
            io,
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            off,
            len,
        )
        .is_ok()
    {
        return Ok(len);
    }
    match fallocate(
        io,
        libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
        off,
        len,
    ) {
        Ok(()) => return Ok(len),
        Err(libc::EOPNOTSUPP) | Err(libc::EINVAL) => {}
        Err(e) => return Err(e),
    }
    const CHUNK: usize = 1 << 20;
    let mut zero = AlignedBuf::new(CHUNK, io.mem_align.max(4096)).ok_or(libc::ENOMEM)?;
    let mut pos = off;
    let end = off + len;
    while pos < end {
        let n = (end - pos).min(CHUNK as u64) as usize;
        let b = IoBuf {
            ptr: zero.as_mut_ptr(),
            len: n,
        };
        write(io, pos, &[b])?;
        pos += n as u64;
    }
    Ok(len)
}
