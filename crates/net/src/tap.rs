//! One TAP queue: QEMU's `TAPState` (net/tap.c) behind [`NetQueue`].
//!
//! A queue owns its descriptor. Queue 0 of a TAP ferrovm opened also owns
//! the downscript, which runs (with the descriptor still open, as
//! `tap_cleanup` does) when the queue is closed or dropped.

use std::collections::BTreeSet;
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::Mutex;

use libc::c_int;

use crate::error::TapError;
use crate::queue::{NetQueue, Offloads};
use crate::script::launch_script;
use crate::tap_sys as sys;

/// The header length ferrovm sets on open: `virtio_net_hdr_mrg_rxbuf` /
/// `virtio_net_hdr_v1` (virtio 1.2 §5.1.6), what a virtio 1 NIC exchanges.
/// (QEMU opens with 10 and lets virtio-net switch to 12 at feature
/// negotiation; the NIC model can still switch with `set_vnet_hdr_len`.)
pub const VNET_HDR_LEN: usize = 12;

/// `struct virtio_net_hdr`, the shortest header the kernel takes.
const VNET_HDR_LEN_LEGACY: usize = 10;
/// `struct virtio_net_hdr_v1_hash`, the third length QEMU allows.
const VNET_HDR_LEN_HASH: usize = 20;

/// Descriptors some live [`Tap`] owns, so that `fd=N` naming one of them
/// is refused rather than owned (and later closed) twice.
static TAP_FDS: Mutex<BTreeSet<RawFd>> = Mutex::new(BTreeSet::new());

pub(crate) fn fd_in_use(fd: RawFd) -> bool {
    TAP_FDS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .contains(&fd)
}

/// `tap_fd_set_offload`'s mapping: nothing without csum, ECN only with a TSO.
fn offload_bits(o: Offloads) -> libc::c_uint {
    if !o.csum {
        return 0;
    }
    let mut bits = sys::TUN_F_CSUM;
    if o.tso4 {
        bits |= sys::TUN_F_TSO4;
    }
    if o.tso6 {
        bits |= sys::TUN_F_TSO6;
    }
    if (o.tso4 || o.tso6) && o.ecn {
        bits |= sys::TUN_F_TSO_ECN;
    }
    if o.ufo {
        bits |= sys::TUN_F_UFO;
    }
    bits
}

/// One queue of a TAP interface.
#[derive(Debug)]
pub struct Tap {
    fd: OwnedFd,
    ifname: String,
    vnet_hdr: bool,
    hdr_len: usize,
    has_ufo: bool,
    info: String,
    downscript: Option<String>,
}

impl Tap {
    /// `net_tap_fd_init` + `tap_set_sndbuf`: probe UFO, clear the offloads,
    /// set the header length, the send buffer, then take the downscript.
    pub(crate) fn new(
        fd: OwnedFd,
        ifname: String,
        vnet_hdr: bool,
        sndbuf: Option<u64>,
        info: String,
        downscript: Option<String>,
    ) -> Result<Tap, TapError> {
        TAP_FDS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(fd.as_raw_fd());
        let mut tap = Tap {
            fd,
            ifname,
            vnet_hdr,
            hdr_len: 0,
            has_ufo: false,
            info,
            downscript: None,
        };
        tap.has_ufo = sys::set_offload(tap.fd.as_fd(), sys::TUN_F_CSUM | sys::TUN_F_UFO).is_ok();
        // A kernel without TUNSETOFFLOAD has no offloads to clear.
        let _ = sys::set_offload(tap.fd.as_fd(), 0);
        if vnet_hdr {
            // A persistent TAP may carry another user's size (net_tap_fd_init).
            sys::set_vnet_hdr_size(tap.fd.as_fd(), VNET_HDR_LEN as c_int)
                .map_err(TapError::VnetHdrSize)?;
            tap.hdr_len = VNET_HDR_LEN;
        }
        // TAP_DEFAULT_SNDBUF is 0, meaning INT_MAX; larger values clamp.
        let bytes = match sndbuf {
            None | Some(0) => c_int::MAX,
            Some(n) => c_int::try_from(n).unwrap_or(c_int::MAX),
        };
        if let Err(e) = sys::set_sndbuf(tap.fd.as_fd(), bytes) {
            if sndbuf.is_some() {
                return Err(TapError::SndBuf(e));
            }
        }
        tap.downscript = downscript;
        Ok(tap)
    }

    /// The interface name (the kernel's choice when none was given).
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// Whether the descriptor is IFF_VNET_HDR (frames carry a virtio-net header).
    pub fn has_vnet_hdr(&self) -> bool {
        self.vnet_hdr
    }

    /// Whether the kernel takes TUN_F_UFO (`tap_probe_has_ufo`; a NIC
    /// offers the guest UFO only then).
    pub fn has_ufo(&self) -> bool {
        self.has_ufo
    }

    /// QEMU's `info network` text for this queue: `ifname=…,script=…,
    /// downscript=…` or `fd=N`.
    pub fn info_str(&self) -> &str {
        &self.info
    }

    /// The downscript this queue runs on close, if any (queue 0 only).
    pub fn downscript(&self) -> Option<&str> {
        self.downscript.as_deref()
    }

    /// Attaches or detaches this queue (`tap_enable`/`tap_disable`,
    /// TUNSETQUEUE), as a multiqueue NIC does when the guest changes its
    /// number of queue pairs.
    pub fn set_queue_enabled(&mut self, enabled: bool) -> io::Result<()> {
        sys::set_queue(self.fd.as_fd(), enabled).map_err(io::Error::from)
    }

    /// Closes the queue, running its downscript first and reporting how
    /// that went (dropping does the same but can only print the error).
    pub fn close(mut self) -> Result<(), TapError> {
        self.run_downscript()
    }

    fn run_downscript(&mut self) -> Result<(), TapError> {
        match self.downscript.take() {
            Some(script) => launch_script(&script, &self.ifname, self.fd.as_raw_fd()),
            None => Ok(()),
        }
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        if let Err(e) = self.run_downscript() {
            // tap_exit_notify: error_report, then carry on closing.
            eprintln!("ferrovm: {e}");
        }
        TAP_FDS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.fd.as_raw_fd());
    }
}

fn iov_count(n: usize) -> io::Result<c_int> {
    c_int::try_from(n).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

impl NetQueue for Tap {
    fn recv(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        let cnt = iov_count(bufs.len())?;
        loop {
            // SAFETY: IoSliceMut is ABI-compatible with iovec and each one
            // borrows writable memory of its length for this call.
            let r = unsafe {
                libc::readv(
                    self.fd.as_raw_fd(),
                    bufs.as_ptr() as *const libc::iovec,
                    cnt,
                )
            };
            if r >= 0 {
                return Ok(r as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    fn send(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let cnt = iov_count(bufs.len())?;
        loop {
            // SAFETY: IoSlice is ABI-compatible with iovec and each one
            // borrows readable memory of its length for this call.
            let r = unsafe {
                libc::writev(
                    self.fd.as_raw_fd(),
                    bufs.as_ptr() as *const libc::iovec,
                    cnt,
                )
            };
            if r >= 0 {
                return Ok(r as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    fn vnet_hdr_len(&self) -> usize {
        self.hdr_len
    }

    /// 10, 12 or 20 (`tap_set_vnet_hdr_len`'s three sizes); false without
    /// IFF_VNET_HDR, for another size, or if the kernel refuses.
    fn set_vnet_hdr_len(&mut self, len: usize) -> bool {
        if !self.vnet_hdr || ![VNET_HDR_LEN_LEGACY, VNET_HDR_LEN, VNET_HDR_LEN_HASH].contains(&len)
        {
            return false;
        }
        let ok = sys::set_vnet_hdr_size(self.fd.as_fd(), len as c_int).is_ok()
            && sys::vnet_hdr_size(self.fd.as_fd()) == Ok(len as c_int);
        if ok {
            self.hdr_len = len;
        }
        ok
    }

    /// TUNSETOFFLOAD as `tap_fd_set_offload` maps it, retried without UFO
    /// if the kernel refuses UFO. Without a vnet header the kernel has no
    /// way to say a frame is unsegmented or unchecksummed, so only "none"
    /// is accepted (QEMU's virtio-net never asks then).
    fn set_offloads(&mut self, offloads: Offloads) -> io::Result<()> {
        let bits = offload_bits(offloads);
        if !self.vnet_hdr && bits != 0 {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "receive offloads need the TAP's vnet header (vnet_hdr=off)",
            ));
        }
        match sys::set_offload(self.fd.as_fd(), bits) {
            Ok(()) => Ok(()),
            Err(_) if bits & sys::TUN_F_UFO != 0 => {
                sys::set_offload(self.fd.as_fd(), bits & !sys::TUN_F_UFO).map_err(io::Error::from)
            }
            Err(e) => Err(io::Error::from(e)),
        }
    }

    fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn set_enabled(&mut self, enabled: bool) -> io::Result<()> {
        self.set_queue_enabled(enabled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offloads_map_as_tap_fd_set_offload() {
        let all = Offloads {
            csum: true,
            tso4: true,
            tso6: true,
            ecn: true,
            ufo: true,
        };
        assert_eq!(offload_bits(all), 0x1f);
        assert_eq!(offload_bits(Offloads { csum: false, ..all }), 0);
        let ecn_only = Offloads {
            csum: true,
            ecn: true,
            ..Offloads::default()
        };
        assert_eq!(offload_bits(ecn_only), sys::TUN_F_CSUM);
    }
}
