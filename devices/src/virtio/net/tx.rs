//! The transmit path of one queue pair (QEMU `virtio_net_flush_tx`,
//! `virtio_net_tx_bh`, `virtio_net_drop_tx_queue_data`).
//!
//! Each chain's device-readable bytes are a 12-byte header then the frame;
//! [`header::tx_plan`] says what the backend gets. Device-writable
//! descriptors after the readable ones are ignored, as QEMU does. Every
//! chain completes with length 0.
//!
//! WouldBlock from the backend: the chain stays uncompleted with its frame
//! in `tx_buf`, notifications stay on, and the next tx kick sends it again
//! before anything newer (QEMU keeps it as `async_tx` and resends when the
//! TAP turns writable; the backend contract has no writable event, so a
//! guest that waits for that completion without kicking again waits until
//! its next transmission).

use std::io::{self, IoSlice};

use virtio_queue::QueueOwnedT;
use vm_memory::GuestMemoryMmap;

use super::header::{self, TxPlan};
use super::pair::{Pair, Parked};
use super::{GUEST_HDR_LEN, NET_BUFSIZE, TX_BURST};
use crate::virtio::chain::{self, ChainError};

pub(crate) struct TxCtx<'a> {
    pub mem: &'a GuestMemoryMmap,
    pub link_up: bool,
}

/// Why the device stopped (QEMU `virtio_error` on the transmit queue).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxFail {
    #[error("{0}")]
    Chain(#[from] ChainError),
    #[error("{0}")]
    Frame(#[from] header::TxError),
}

enum Flush {
    /// Chains sent or dropped.
    Done(usize),
    /// The backend would block; a frame is parked.
    Busy,
}

impl Pair {
    /// A tx kick (or a reschedule): sends what the driver queued, at most
    /// TX_BURST frames per pass.
    pub fn process_tx(&mut self, ctx: &TxCtx) -> Result<(), TxFail> {
        if self.tx.is_none() {
            return Ok(());
        }
        if !ctx.link_up {
            return self.drop_tx(ctx);
        }
        if let Some(p) = self.tx_parked {
            if self.send(p.len) {
                self.keep_waiting(ctx)?;
                return Ok(());
            }
            self.tx_parked = None;
            self.complete(ctx, p.head)?;
        }
        let Some(vq) = self.tx.as_mut() else {
            return Ok(());
        };
        vq.disable_notification(ctx.mem)?;
        match self.flush(ctx)? {
            Flush::Busy => self.keep_waiting(ctx)?,
            Flush::Done(n) if n >= TX_BURST => self.reschedule(),
            Flush::Done(_) => {
                let Some(vq) = self.tx.as_mut() else {
                    return Ok(());
                };
                // Chains that came while notifications were off.
                if vq.enable_notification(ctx.mem)? {
                    vq.disable_notification(ctx.mem)?;
                    self.reschedule();
                }
            }
        }
        Ok(())
    }

    /// A parked frame waits for the next kick: the driver must send one.
    fn keep_waiting(&mut self, ctx: &TxCtx) -> Result<(), TxFail> {
        if let Some(vq) = self.tx.as_mut() {
            vq.enable_notification(ctx.mem)?;
        }
        Ok(())
    }

    fn complete(&mut self, ctx: &TxCtx, head: u16) -> Result<(), TxFail> {
        if let Some(vq) = self.tx.as_mut() {
            vq.push_used(ctx.mem, &[(head, 0)])?;
        }
        Ok(())
    }

    /// Sends `tx_buf[..len]`; true if the backend would block.
    fn send(&mut self, len: usize) -> bool {
        loop {
            match self.backend.send(&[IoSlice::new(&self.tx_buf[..len])]) {
                Ok(_) => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                // QEMU drops a frame the TAP refuses (tap_write_packet).
                Err(e) => {
                    log::debug!("virtio-net queue pair {}: send: {e}", self.index);
                    return false;
                }
            }
        }
    }

    fn flush(&mut self, ctx: &TxCtx) -> Result<Flush, TxFail> {
        let host = self.host_hdr_len;
        let mut count = 0;
        while count < TX_BURST {
            let Some(vq) = self.tx.as_mut() else {
                break;
            };
            let Some(c) = chain::pop(&mut vq.queue, ctx.mem)? else {
                break;
            };
            let total = chain::total(&c.readable);
            match header::tx_plan(c.readable.len(), total, GUEST_HDR_LEN, host, NET_BUFSIZE)? {
                TxPlan::Drop => {}
                TxPlan::Send {
                    host_hdr_len,
                    payload_start,
                    len,
                } => {
                    let buf = &mut self.tx_buf[..len];
                    chain::gather(ctx.mem, &c.readable, 0, &mut buf[..host_hdr_len]);
                    chain::gather(
                        ctx.mem,
                        &c.readable,
                        payload_start as u64,
                        &mut buf[host_hdr_len..],
                    );
                    if self.send(len) {
                        self.tx_parked = Some(Parked { head: c.head, len });
                        return Ok(Flush::Busy);
                    }
                }
            }
            self.complete(ctx, c.head)?;
            count += 1;
        }
        Ok(Flush::Done(count))
    }

    /// Link down: every queued chain completes unsent
    /// (`virtio_net_drop_tx_queue_data`, `virtqueue_drop_all`).
    pub fn drop_tx(&mut self, ctx: &TxCtx) -> Result<(), TxFail> {
        if let Some(p) = self.tx_parked.take() {
            self.complete(ctx, p.head)?;
        }
        let Some(vq) = self.tx.as_mut() else {
            return Ok(());
        };
        let mut heads = Vec::new();
        if chain::has_avail(&vq.queue, ctx.mem)? {
            let mut it = vq.queue.iter(ctx.mem).map_err(ChainError::from)?;
            for c in it.by_ref() {
                heads.push((c.head_index(), 0));
            }
        }
        vq.push_used(ctx.mem, &heads)?;
        Ok(())
    }
}
