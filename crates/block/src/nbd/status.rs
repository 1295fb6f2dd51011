//! base:allocation for an exported node: QEMU 7.2's
//! `bdrv_block_status_above(bs, NULL, ...)` down the node's chain, with
//! `want_zero` (block/io.c `bdrv_co_block_status`), in NBD's flags
//! (nbd/server.c `blockstatus_to_extents`: no data is a hole, zero is zero).

use std::os::fd::AsRawFd;
use std::sync::Arc;

use super::proto::{STATE_HOLE, STATE_ZERO};
use crate::node::Node;
use crate::qcow2::ExtentKind;

/// `BDRV_BLOCK_DATA` / `BDRV_BLOCK_ZERO` of one range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Status {
    data: bool,
    zero: bool,
}

const DATA: Status = Status {
    data: true,
    zero: false,
};
const ZERO: Status = Status {
    data: false,
    zero: true,
};

/// The NBD flags of the bytes at `off` on `node` and how many bytes from
/// `off` (at least 1, at most `len`) share them.
pub fn base_allocation(node: &Arc<Node>, off: u64, len: u64) -> Result<(u32, u64), i32> {
    let (st, n) = status(node, off, len.max(1), 0)?;
    let mut flags = 0;
    if !st.data {
        flags |= STATE_HOLE;
    }
    if st.zero {
        flags |= STATE_ZERO;
    }
    Ok((flags, n.clamp(1, len.max(1))))
}

/// Deep graphs end the walk (QEMU has no limit, ferrovm's graphs are
/// shallow; a cycle cannot be built).
const MAX_DEPTH: u32 = 64;

fn status(node: &Arc<Node>, off: u64, len: u64, depth: u32) -> Result<(Status, u64), i32> {
    let size = node.size().map_err(|_| libc::EIO)?;
    if off >= size || depth > MAX_DEPTH {
        // Past the end of a layer reads as zeros.
        return Ok((ZERO, len));
    }
    let len = len.min(size - off);
    if let Some(q) = node.driver.as_qcow2() {
        let ext = q.image().map(off, len).map_err(|_| libc::EIO)?;
        let Some(e) = ext.first() else {
            return Ok((DATA, len));
        };
        let n = e.len.clamp(1, len);
        return match e.kind {
            ExtentKind::Data { host } => match node.child("file") {
                // BDRV_BLOCK_RECURSE: with its metadata preallocated, a
                // data cluster the file holds as a hole reads as zeros.
                Some(f) if preallocated(q.image(), &f) => {
                    let (fs, fnum) = status(&f, host, n, depth + 1)?;
                    Ok((
                        Status {
                            data: true,
                            zero: fs.zero,
                        },
                        fnum.clamp(1, n),
                    ))
                }
                _ => Ok((DATA, n)),
            },
            ExtentKind::Zero { .. } => Ok((ZERO, n)),
            ExtentKind::Compressed => Ok((DATA, n)),
            ExtentKind::Unallocated => match node.child("backing") {
                Some(b) => status(&b, off, n, depth + 1),
                None => Ok((ZERO, n)),
            },
        };
    }
    if let Some(io) = node.driver.file_io() {
        return Ok(file_status(io.file.as_raw_fd(), off, len));
    }
    if let Some((base, _)) = node.driver.linear() {
        if let Some(f) = node.child("file") {
            return status(&f, off + base, len, depth + 1);
        }
    }
    if node.driver.is_filter() {
        if let Some(c) = node.primary_child() {
            return status(&c, off, len, depth + 1);
        }
    }
    if node.driver.format_name().starts_with("null-") {
        // null_co_block_status: nothing is stored (zero only with
        // read-zeroes, which this does not see: said to be data-less).
        return Ok((
            Status {
                data: false,
                zero: false,
            },
            len,
        ));
    }
    Ok((DATA, len))
}

fn preallocated(img: &crate::qcow2::Qcow2, file: &Node) -> bool {
    let len = file.size().unwrap_or(0);
    let alloc = file.driver.actual_size().unwrap_or(len);
    img.metadata_preallocation(len, alloc)
}

/// file-posix `raw_co_block_status` / `find_allocation`: SEEK_DATA and
/// SEEK_HOLE; no answer means data.
fn file_status(fd: i32, off: u64, len: u64) -> (Status, u64) {
    let Ok(start) = libc::off_t::try_from(off) else {
        return (DATA, len);
    };
    // SAFETY: lseek on a descriptor the node keeps open; the offset it
    // moves is not used (the engines use pread/pwrite).
    let data = unsafe { libc::lseek(fd, start, libc::SEEK_DATA) };
    if data < 0 {
        let e = std::io::Error::last_os_error().raw_os_error();
        // ENXIO: a trailing hole.
        return if e == Some(libc::ENXIO) {
            (ZERO, len)
        } else {
            (DATA, len)
        };
    }
    if data > start {
        return (ZERO, ((data - start) as u64).min(len));
    }
    if data < start {
        return (DATA, len);
    }
    // SAFETY: as above.
    let hole = unsafe { libc::lseek(fd, start, libc::SEEK_HOLE) };
    if hole <= start {
        return (DATA, len);
    }
    (DATA, ((hole - start) as u64).min(len))
}
