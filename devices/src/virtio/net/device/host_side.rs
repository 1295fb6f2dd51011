//! What the VMM does to a NIC's host side while it runs: `netdev_del`
//! taking the backend away, and `announce-self` sending a frame from it.

use std::io::IoSlice;

use ::net::{NetQueue, NoPeer};

use super::VirtioNet;
use crate::virtio::net::config::S_LINK_UP;

impl VirtioNet {
    /// Gives up every backend queue (QEMU `qemu_del_net_client` with a NIC
    /// peer): the NIC keeps running with nothing behind it, so what the
    /// guest sends is dropped and nothing arrives. Returns the old queues
    /// for the caller to close once the backend thread stopped watching
    /// them. If a queue for nothing cannot be made (no eventfd), that pair
    /// keeps its backend.
    pub fn detach_backends(&mut self) -> Vec<Box<dyn NetQueue>> {
        let mut old = Vec::new();
        for p in self.pairs.iter_mut() {
            match NoPeer::new() {
                Ok(none) => {
                    old.push(std::mem::replace(&mut p.backend, Box::new(none)));
                    p.host_hdr_len = 0;
                    p.rx_frame = None;
                    p.tx_parked = None;
                }
                Err(e) => log::error!("virtio-net: cannot detach queue pair {}: {e}", p.index),
            }
        }
        old
    }

    /// Attaches the backend queues of the pairs the guest uses and detaches
    /// the others, so a multiqueue TAP steers every frame to a queue that is
    /// served (QEMU `virtio_net_set_queue_pairs`).
    pub(super) fn steer_to_used_pairs(&mut self) {
        if self.pairs.len() < 2 {
            return;
        }
        let used = self.curr_queue_pairs;
        for p in self.pairs.iter_mut() {
            if let Err(e) = p.backend.set_enabled(p.index < used) {
                log::warn!(
                    "virtio-net: queue pair {}: cannot attach/detach: {e}",
                    p.index
                );
            }
        }
    }

    /// Sends `frame` (bare Ethernet) out of queue pair 0's backend, as QEMU's
    /// `qemu_send_packet_raw` does for announcements; dropped while the
    /// link is down.
    pub fn send_to_backend(&mut self, frame: &[u8]) {
        if self.status & S_LINK_UP == 0 {
            return;
        }
        let Some(p) = self.pairs.first_mut() else {
            return;
        };
        // A backend that exchanges vnet headers gets an empty one first
        // (no checksum or segmentation to do).
        let hdr = [0u8; 12];
        let hdr_len = p.backend.vnet_hdr_len().min(hdr.len());
        let bufs = [IoSlice::new(&hdr[..hdr_len]), IoSlice::new(frame)];
        if let Err(e) = p.backend.send(&bufs) {
            log::warn!("virtio-net: announcement not sent: {e}");
        }
    }
}
