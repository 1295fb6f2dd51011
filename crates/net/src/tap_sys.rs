//! The TUN/TAP ioctls (linux/if_tun.h; Documentation/networking/tuntap.rst)
//! on one `/dev/net/tun` descriptor, each a safe function returning the errno.

use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

use libc::{c_int, c_short, c_uint};

use crate::error::OsError;

pub(crate) use libc::{
    IFF_MULTI_QUEUE, IFF_NO_PI, IFF_ONE_QUEUE, IFF_TAP, IFF_VNET_HDR, TUN_F_CSUM, TUN_F_TSO4,
    TUN_F_TSO6, TUN_F_TSO_ECN, TUN_F_UFO,
};

/// The device-type bits of the TUNSETIFF flags (IFF_TUN or IFF_TAP).
pub(crate) const TUN_TYPE_MASK: c_int = libc::TUN_TYPE_MASK as c_int;

/// `IFNAMSIZ - 1`: QEMU `pstrcpy`s the name into `ifr_name`, truncating.
const IFNAME_MAX: usize = libc::IFNAMSIZ - 1;

fn check(ret: c_int) -> Result<c_int, OsError> {
    if ret < 0 {
        Err(OsError::last())
    } else {
        Ok(ret)
    }
}

fn zeroed_ifreq() -> libc::ifreq {
    // SAFETY: ifreq is plain old data (a name array and a union of integers,
    // sockaddrs and a pointer); all-zero is a valid value of each.
    unsafe { std::mem::zeroed() }
}

/// An `ifreq` named `name` as `pstrcpy(ifr_name, IFNAMSIZ, name)` would:
/// cut at a NUL or after 15 bytes.
pub(crate) fn ifreq_named(name: &str) -> libc::ifreq {
    let mut ifr = zeroed_ifreq();
    let bytes = name.as_bytes();
    let len = bytes
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(bytes.len())
        .min(IFNAME_MAX);
    for (dst, &src) in ifr.ifr_name.iter_mut().zip(&bytes[..len]) {
        *dst = src as libc::c_char;
    }
    ifr
}

/// The name in an `ifreq` the kernel filled in.
pub(crate) fn ifreq_name(ifr: &libc::ifreq) -> String {
    let bytes: Vec<u8> = ifr
        .ifr_name
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// TUNGETFEATURES: the IFF_* flags TUNSETIFF accepts.
pub(crate) fn features(fd: BorrowedFd<'_>) -> Result<c_int, OsError> {
    let mut f: c_uint = 0;
    // SAFETY: TUNGETFEATURES writes one unsigned int through the pointer,
    // which points at a live local.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNGETFEATURES, &mut f) })?;
    Ok(f as c_int)
}

/// TUNSETIFF: attaches the descriptor to interface `name` (created if
/// missing; `%d` lets the kernel number it). Returns the actual name.
pub(crate) fn set_iff(fd: BorrowedFd<'_>, name: &str, flags: c_int) -> Result<String, OsError> {
    let mut ifr = ifreq_named(name);
    ifr.ifr_ifru.ifru_flags = flags as c_short;
    // SAFETY: TUNSETIFF reads and writes one struct ifreq, a live local.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut ifr) })?;
    Ok(ifreq_name(&ifr))
}

/// TUNGETIFF: the interface name and IFF_* flags; fails (ENOTTY, EBADFD)
/// on anything but an attached TUN/TAP descriptor.
pub(crate) fn get_iff(fd: RawFd) -> Result<(String, c_int), OsError> {
    let mut ifr = zeroed_ifreq();
    // SAFETY: TUNGETIFF writes one struct ifreq into a live local; on a
    // descriptor that is not a TUN device the ioctl fails without writing.
    check(unsafe { libc::ioctl(fd, libc::TUNGETIFF, &mut ifr) })?;
    // SAFETY: TUNGETIFF filled in ifru_flags (and any union member is an
    // initialised integer view of the zeroed bytes anyway).
    let flags = unsafe { ifr.ifr_ifru.ifru_flags };
    Ok((ifreq_name(&ifr), c_int::from(flags) & 0xffff))
}

/// TUNGETVNETHDRSZ.
pub(crate) fn vnet_hdr_size(fd: BorrowedFd<'_>) -> Result<c_int, OsError> {
    let mut len: c_int = 0;
    // SAFETY: writes one int into a live local.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNGETVNETHDRSZ, &mut len) })?;
    Ok(len)
}

/// TUNSETVNETHDRSZ (the kernel takes any size >= 10).
pub(crate) fn set_vnet_hdr_size(fd: BorrowedFd<'_>, len: c_int) -> Result<(), OsError> {
    // SAFETY: reads one int from a live local.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETVNETHDRSZ, &len) })?;
    Ok(())
}

/// TUNSETOFFLOAD: TUN_F_* bits, passed by value.
pub(crate) fn set_offload(fd: BorrowedFd<'_>, flags: c_uint) -> Result<(), OsError> {
    // SAFETY: TUNSETOFFLOAD takes its argument by value; no memory is touched.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETOFFLOAD, flags as libc::c_ulong) })?;
    Ok(())
}

/// TUNSETSNDBUF.
pub(crate) fn set_sndbuf(fd: BorrowedFd<'_>, bytes: c_int) -> Result<(), OsError> {
    // SAFETY: reads one int from a live local.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETSNDBUF, &bytes) })?;
    Ok(())
}

/// TUNSETQUEUE with IFF_ATTACH_QUEUE or IFF_DETACH_QUEUE.
pub(crate) fn set_queue(fd: BorrowedFd<'_>, attach: bool) -> Result<(), OsError> {
    let mut ifr = zeroed_ifreq();
    ifr.ifr_ifru.ifru_flags = if attach {
        libc::IFF_ATTACH_QUEUE
    } else {
        libc::IFF_DETACH_QUEUE
    } as c_short;
    // SAFETY: TUNSETQUEUE reads one struct ifreq from a live local.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETQUEUE, &mut ifr) })?;
    Ok(())
}

/// Sets O_NONBLOCK (`g_unix_set_fd_nonblocking`); EBADF for a closed number.
pub(crate) fn set_nonblocking(fd: RawFd) -> Result<(), OsError> {
    // SAFETY: F_GETFL/F_SETFL only read and write the descriptor's status
    // flags; an invalid number fails with EBADF.
    let fl = check(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    // SAFETY: as above.
    check(unsafe { libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK) })?;
    Ok(())
}
