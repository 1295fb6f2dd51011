//! One queue pair: a backend queue ([`net::NetQueue`]) with its receive and
//! transmit virtqueues, the frame buffers, and the pair's "continue" eventfd.
//!
//! The backend thread watches the backend's fd edge-triggered, so a pass
//! that stops before the backend said WouldBlock must make sure it is run
//! again: when the guest has no receive buffers the frame stays in
//! `rx_frame` and the guest's rx kick resumes; when a pass reaches its burst
//! limit (QEMU's TX_BURST for transmit, the TAP's 50 frames for receive)
//! the pair signals its own eventfd, which the thread serves after the
//! other ready sources (QEMU reschedules its bottom half the same way).

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use ::net::NetQueue;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::ring::Vq;
use super::NET_BUFSIZE;

/// A transmitted frame the backend refused with WouldBlock, kept (chain
/// not completed) to be sent again on the next tx kick.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Parked {
    pub head: u16,
    pub len: usize,
}

pub(crate) struct Pair {
    pub index: usize,
    pub backend: Box<dyn NetQueue>,
    /// Header bytes the backend exchanges now (0, 10 or 12).
    pub host_hdr_len: usize,
    pub rx: Option<Vq>,
    pub tx: Option<Vq>,
    pub rx_buf: Vec<u8>,
    /// `rx_buf[..n]` holds a frame read from the backend and not yet
    /// delivered (the guest had no buffers for it).
    pub rx_frame: Option<usize>,
    pub tx_buf: Vec<u8>,
    pub tx_parked: Option<Parked>,
    resched: EventFd,
}

impl Pair {
    pub fn new(index: usize, backend: Box<dyn NetQueue>) -> io::Result<Self> {
        let host_hdr_len = backend.vnet_hdr_len();
        Ok(Self {
            index,
            backend,
            host_hdr_len,
            rx: None,
            tx: None,
            rx_buf: vec![0; NET_BUFSIZE],
            rx_frame: None,
            tx_buf: vec![0; NET_BUFSIZE],
            tx_parked: None,
            resched: EventFd::new(EFD_NONBLOCK)?,
        })
    }

    pub fn backend_fd(&self) -> RawFd {
        self.backend.raw_fd()
    }

    pub fn resched_fd(&self) -> RawFd {
        self.resched.as_raw_fd()
    }

    /// Asks the backend thread to run this pair again soon.
    pub fn reschedule(&self) {
        if let Err(e) = self.resched.write(1) {
            log::error!("virtio-net queue pair {}: eventfd write: {e}", self.index);
        }
    }

    /// Consumes a pending reschedule.
    pub fn clear_reschedule(&self) {
        let _ = self.resched.read();
    }

    /// Back to the state before activation: queues gone, nothing pending.
    pub fn deactivate(&mut self) {
        self.rx = None;
        self.tx = None;
        self.rx_frame = None;
        self.tx_parked = None;
        self.clear_reschedule();
    }
}
