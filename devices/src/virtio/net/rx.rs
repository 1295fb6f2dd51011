//! The receive path of one queue pair (QEMU `virtio_net_receive_rcu`,
//! `virtio_net_has_buffers`, `receive_header`, and net/net.c's link-down
//! drop).
//!
//! A frame from the backend is `host_hdr_len` bytes of vnet header then
//! Ethernet. The guest gets a 12-byte `virtio_net_hdr_v1`: the backend's
//! first 10 header bytes (or a zero header, GSO_NONE, when the backend has
//! none), then `num_buffers`. Without MRG_RXBUF the frame must fit one
//! chain: a chain too small is put back and the frame dropped, as QEMU
//! does. With it the frame spreads over as many chains as it needs and
//! `num_buffers` says how many.
//!
//! `num_buffers` without MRG_RXBUF: QEMU leaves the guest's bytes alone;
//! virtio 1.2 §5.1.6.3.1 says the device sets it to 1, which this does.

use std::io::{self, IoSliceMut};

use vm_memory::GuestMemoryMmap;

use super::filter::RxFilter;
use super::header::{self, HDR_LEN, NUM_BUFFERS_OFFSET};
use super::options::MacAddr;
use super::pair::Pair;
use super::ring::Vq;
use super::{GUEST_HDR_LEN, RX_BURST, VIRTQUEUE_MAX_SIZE};
use crate::virtio::chain::{self, ChainError};

/// What receiving needs from the device.
pub(crate) struct RxCtx<'a> {
    pub mem: &'a GuestMemoryMmap,
    pub filter: &'a RxFilter,
    pub mac: MacAddr,
    pub link_up: bool,
    pub mergeable: bool,
}

/// Why the device stopped (QEMU `virtio_error` on the receive queue).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RxError {
    #[error("{0}")]
    Chain(#[from] ChainError),
    #[error("virtio-net receive queue contains no in buffers")]
    NoInBuffers,
    #[error("virtio-net unexpected long buffer chain")]
    LongChain,
    #[error("virtio-net unexpected empty queue: i {0} mergeable 1")]
    UnexpectedEmpty(usize),
}

enum Delivery {
    Delivered,
    /// Consumed without reaching the guest (filtered, too small a chain).
    Dropped,
    /// The guest has no room: keep the frame and wait for an rx kick.
    NoBuffers,
}

/// `virtio_net_has_buffers`: whether the ring holds room for `bufsize`
/// bytes (any chain at all without MRG_RXBUF). When it does not,
/// notifications are enabled so the driver kicks once it adds buffers;
/// buffers it added meanwhile are counted again
/// (`virtio_queue_enable_notification_and_check`).
fn has_buffers(
    vq: &mut Vq,
    mem: &GuestMemoryMmap,
    bufsize: u64,
    mergeable: bool,
) -> Result<bool, ChainError> {
    loop {
        let seen = chain::avail_idx(&vq.queue, mem)?;
        let avail = chain::has_avail(&vq.queue, mem)?;
        if avail && !mergeable {
            break;
        }
        if avail && avail_bytes(vq, mem, bufsize)? >= bufsize {
            break;
        }
        vq.enable_notification(mem)?;
        if chain::avail_idx(&vq.queue, mem)? == seen {
            return Ok(false);
        }
    }
    vq.disable_notification(mem)?;
    Ok(true)
}

/// `virtqueue_get_avail_bytes`: device-writable bytes in the available
/// chains, counted up to `limit`; nothing is consumed.
fn avail_bytes(vq: &mut Vq, mem: &GuestMemoryMmap, limit: u64) -> Result<u64, ChainError> {
    use virtio_queue::QueueT;
    let start = vq.queue.next_avail();
    let mut bytes = 0u64;
    let r = (|| {
        while bytes < limit {
            match chain::pop(&mut vq.queue, mem)? {
                Some(c) => bytes += chain::total(&c.writable),
                None => break,
            }
        }
        Ok(bytes)
    })();
    vq.queue.set_next_avail(start);
    r
}

impl Pair {
    /// Reads frames from the backend and delivers them while the guest has
    /// buffers, up to RX_BURST frames (then reschedules). With the link
    /// down, frames are read and dropped.
    pub fn process_rx(&mut self, ctx: &RxCtx) -> Result<(), RxError> {
        let mut frames = 0;
        loop {
            if frames == RX_BURST {
                self.reschedule();
                break;
            }
            let len = match self.rx_frame.take() {
                Some(n) => n,
                None => match self.read_frame() {
                    Some(n) => n,
                    None => break,
                },
            };
            frames += 1;
            if !ctx.link_up {
                continue;
            }
            match self.deliver(ctx, len)? {
                Delivery::Delivered | Delivery::Dropped => {}
                Delivery::NoBuffers => {
                    self.rx_frame = Some(len);
                    break;
                }
            }
        }
        Ok(())
    }

    /// One frame from the backend; `None` when it has none (or failed).
    fn read_frame(&mut self) -> Option<usize> {
        loop {
            match self.backend.recv(&mut [IoSliceMut::new(&mut self.rx_buf)]) {
                // QEMU's tap_send stops on 0 too.
                Ok(0) => return None,
                Ok(n) => return Some(n.min(self.rx_buf.len())),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) => {
                    log::warn!("virtio-net queue pair {}: receive: {e}", self.index);
                    return None;
                }
            }
        }
    }

    fn deliver(&mut self, ctx: &RxCtx, size: usize) -> Result<Delivery, RxError> {
        let host = self.host_hdr_len;
        let Some(vq) = self.rx.as_mut() else {
            return Ok(Delivery::NoBuffers);
        };
        if size < host {
            return Ok(Delivery::Dropped);
        }
        if host >= HDR_LEN {
            let (h, f) = self.rx_buf[..size].split_at_mut(host);
            header::work_around_broken_dhclient(h, f);
        }
        let frame = &self.rx_buf[..size];
        let bufsize = (size - host + GUEST_HDR_LEN) as u64;
        if !has_buffers(vq, ctx.mem, bufsize, ctx.mergeable)? {
            return Ok(Delivery::NoBuffers);
        }
        if !ctx.filter.accepts(&frame[host..], ctx.mac) {
            return Ok(Delivery::Dropped);
        }

        // The guest header: the backend's first 10 bytes, or a zero one.
        let mut hdr = [0u8; GUEST_HDR_LEN];
        if host >= HDR_LEN {
            hdr[..HDR_LEN].copy_from_slice(&frame[..HDR_LEN]);
        }
        hdr[NUM_BUFFERS_OFFSET..].copy_from_slice(&1u16.to_le_bytes());

        use virtio_queue::QueueT;
        let start = vq.queue.next_avail();
        let mut used: Vec<(u16, u32)> = Vec::new();
        let mut first: Vec<chain::Segment> = Vec::new();
        let mut offset = 0usize;
        while offset < size {
            if used.len() == usize::from(VIRTQUEUE_MAX_SIZE) {
                return Err(RxError::LongChain);
            }
            let Some(c) = chain::pop(&mut vq.queue, ctx.mem)? else {
                if !used.is_empty() {
                    return Err(RxError::UnexpectedEmpty(used.len()));
                }
                vq.queue.set_next_avail(start);
                return Ok(Delivery::Dropped);
            };
            if c.writable.is_empty() {
                return Err(RxError::NoInBuffers);
            }
            let (mut total, guest_offset) = if used.is_empty() {
                // Without MRG_RXBUF num_buffers is 1; with it, written below.
                let n = if ctx.mergeable {
                    HDR_LEN
                } else {
                    GUEST_HDR_LEN
                };
                chain::scatter(ctx.mem, &c.writable, 0, &hdr[..n]);
                offset = host;
                first = c.writable.clone();
                (GUEST_HDR_LEN, GUEST_HDR_LEN as u64)
            } else {
                (0, 0)
            };
            let len = chain::scatter(ctx.mem, &c.writable, guest_offset, &frame[offset..]);
            total += len;
            offset += len;
            if !ctx.mergeable && offset < size {
                // QEMU `virtqueue_unpop`: the chain stays for the next
                // frame, this one is dropped.
                vq.queue.set_next_avail(start);
                return Ok(Delivery::Dropped);
            }
            used.push((c.head, total as u32));
        }
        if ctx.mergeable {
            let n = (used.len() as u16).to_le_bytes();
            chain::scatter(ctx.mem, &first, NUM_BUFFERS_OFFSET as u64, &n);
        }
        vq.push_used(ctx.mem, &used)?;
        Ok(Delivery::Delivered)
    }
}
