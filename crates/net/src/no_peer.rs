//! What a NIC talks to when it has no netdev: `-device virtio-net-pci`
//! without `netdev=`, or after `netdev_del` took its backend away. QEMU's
//! NIC then has no peer, and net/net.c drops what it sends; nothing ever
//! arrives.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, RawFd};

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::queue::{NetQueue, Offloads};

/// A queue that swallows every frame and never has one to give.
pub struct NoPeer {
    /// Never signalled: a descriptor the NIC can have watched like a TAP's.
    never: EventFd,
}

impl NoPeer {
    pub fn new() -> io::Result<Self> {
        Ok(Self {
            never: EventFd::new(EFD_NONBLOCK)?,
        })
    }
}

impl NetQueue for NoPeer {
    fn recv(&mut self, _bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        Err(io::ErrorKind::WouldBlock.into())
    }

    fn send(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        Ok(bufs.iter().map(|b| b.len()).sum())
    }

    fn vnet_hdr_len(&self) -> usize {
        0
    }

    fn set_vnet_hdr_len(&mut self, _len: usize) -> bool {
        false
    }

    fn set_offloads(&mut self, offloads: Offloads) -> io::Result<()> {
        if offloads == Offloads::default() {
            Ok(())
        } else {
            Err(io::ErrorKind::Unsupported.into())
        }
    }

    fn raw_fd(&self) -> RawFd {
        self.never.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_vanish_and_none_arrive() {
        let mut q = NoPeer::new().unwrap();
        let frame = [0u8; 60];
        assert_eq!(q.send(&[IoSlice::new(&frame)]).unwrap(), 60);
        let mut buf = [0u8; 64];
        let e = q.recv(&mut [IoSliceMut::new(&mut buf)]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(q.vnet_hdr_len(), 0);
        assert!(q.set_offloads(Offloads::default()).is_ok());
    }
}
