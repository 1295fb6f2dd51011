//! virtio-net (virtio 1.2 §5.1), behaving like QEMU 7.2's `virtio-net-pci`
//! without vhost (hw/net/virtio-net.c).
//!
//! - [`options`]: the device's properties ([`NetOptions`]), MAC addresses
//!   ([`MacAddr`], [`MacAllocator`]) and QEMU's realize checks
//!   ([`NetOptionsError`]).
//! - [`config`]: the offered feature bits and the configuration space
//!   (§5.1.3, §5.1.4).
//! - [`header`]: `struct virtio_net_hdr` (§5.1.6) and how a transmitted
//!   chain becomes the frame the backend gets; pure, for the fuzz target.
//! - [`ctrl`]: control-queue commands (§5.1.6.5) parsed from guest bytes;
//!   pure, for the fuzz target.
//! - [`filter`]: the receive filter (QEMU `receive_filter`) and its
//!   `query-rx-filter` view ([`RxFilterInfo`]).
//! - `ring`: used elements published and interrupts decided as QEMU does
//!   (chains are popped with [`crate::virtio::chain`]).
//! - `pair`, `rx`, `tx`: one queue pair (a backend queue, its receive and
//!   transmit virtqueues) and its two paths.
//! - [`device`]: [`VirtioNet`], the `VirtioDevice` implementation.
//!
//! Queue layout (§5.1.2): rx0, tx0, rx1, tx1, …, then the control queue.
//! QEMU always has the control queue, even with `ctrl_vq=off` (the driver
//! just never gets the feature to use it); so does this model.

pub mod config;
pub mod ctrl;
pub mod device;
pub mod filter;
pub mod header;
pub mod options;
mod pair;
mod ring;
mod rx;
mod tx;

#[cfg(test)]
mod tests;

pub use device::VirtioNet;
pub use filter::{RxFilterInfo, RxState};
pub use options::{MacAddr, MacAllocator, NetOptions, NetOptionsError};

/// Virtio device ID of a network card (virtio 1.2 §5).
pub const VIRTIO_ID_NET: u16 = 1;

/// QEMU's NET_BUFSIZE (include/net/net.h): the largest frame, vnet header
/// included, the net layer moves; larger transmitted frames are dropped
/// (net/net.c `qemu_sendv_packet_async`) and the TAP reads at most this.
pub const NET_BUFSIZE: usize = 4096 + 65536;

/// QEMU's TX_BURST (include/hw/virtio/virtio-net.h): frames sent per pass
/// before the queue yields the thread.
pub const TX_BURST: usize = 256;

/// Frames read from the backend per pass (net/tap.c `tap_send` stops at 50
/// so a flooding host cannot hog the thread).
pub const RX_BURST: usize = 50;

/// MAC_TABLE_ENTRIES: unicast + multicast filter entries.
pub const MAC_TABLE_ENTRIES: usize = 64;

/// MAX_VLAN: 802.1Q VLAN ids.
pub const MAX_VLAN: usize = 1 << 12;

/// The control queue's size (QEMU `virtio_add_queue(vdev, 64, ...)`).
pub const CTRL_QUEUE_SIZE: u16 = 64;

pub use super::VIRTQUEUE_MAX_SIZE;

/// QEMU's VIRTIO_QUEUE_MAX: queues one device may have.
pub const VIRTIO_QUEUE_MAX: usize = 1024;

/// The header a VERSION_1 driver exchanges: `struct virtio_net_hdr_v1`
/// (§5.1.6: it always has `num_buffers`).
pub const GUEST_HDR_LEN: usize = header::HDR_LEN_V1;
