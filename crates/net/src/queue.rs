//! The contract between a NIC model and the host side of one of its queue
//! pairs (a TAP queue; a socketpair in the model's unit tests).

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::RawFd;

/// Offloads the guest accepts on received frames, which the backend may then
/// hand over unsegmented or without a checksum (Linux TUNSETOFFLOAD's
/// TUN_F_* bits; QEMU `tap_set_offload`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Offloads {
    pub csum: bool,
    pub tso4: bool,
    pub tso6: bool,
    pub ecn: bool,
    pub ufo: bool,
}

/// One queue pair's host side. Non-blocking: `recv` and `send` return
/// `ErrorKind::WouldBlock` rather than wait.
///
/// With [`NetQueue::vnet_hdr_len`] > 0 every frame, in both directions,
/// starts with that many bytes of `struct virtio_net_hdr` (10 bytes) or
/// `virtio_net_hdr_mrg_rxbuf`/`virtio_net_hdr_v1` (12 bytes), little endian,
/// as virtio 1.2 §5.1.6 lays it out. With 0 the frames are bare Ethernet and
/// the NIC model adds or strips the header itself.
pub trait NetQueue: Send {
    /// Reads one frame (header first, if any) into `bufs`; its length.
    fn recv(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize>;
    /// Writes one frame (header first, if any) gathered from `bufs`.
    fn send(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
    /// The header length the backend exchanges now: 0, 10 or 12.
    fn vnet_hdr_len(&self) -> usize;
    /// Switches to header length `len` (10 or 12; TUNSETVNETHDRSZ). False
    /// if the backend has no header or cannot change it.
    fn set_vnet_hdr_len(&mut self, len: usize) -> bool;
    /// Tells the backend which offloads the guest accepts on receive.
    fn set_offloads(&mut self, offloads: Offloads) -> io::Result<()>;
    /// Attaches (true) or detaches this queue of a multiqueue backend, so
    /// that the host steers frames only to the queues the guest uses (QEMU
    /// `peer_attach`/`peer_detach`, TUNSETQUEUE). A single queue ignores it.
    fn set_enabled(&mut self, _enabled: bool) -> io::Result<()> {
        Ok(())
    }
    /// Readable whenever a frame waits for [`NetQueue::recv`]. The backend
    /// thread watches it edge-triggered: the model reads until WouldBlock
    /// or until the guest has no receive buffers left.
    fn raw_fd(&self) -> RawFd;
}
