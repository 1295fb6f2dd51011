//! Transfer Request Blocks and ring dequeue (xHCI 1.2 §4.9, §6.4): a TRB
//! belongs to the consumer when its cycle bit equals the consumer cycle
//! state; a Link TRB moves the dequeue pointer and, with Toggle Cycle,
//! flips the cycle state (QEMU `xhci_ring_fetch`).

use super::Xhci;

pub const TRB_SIZE: u64 = 16;
/// Control bit 0: the cycle bit.
pub const TRB_C: u32 = 1 << 0;
/// Link TRB control bit 1: Toggle Cycle.
pub const TRB_LK_TC: u32 = 1 << 1;
pub const TRB_TYPE_SHIFT: u32 = 10;
/// QEMU's TRB_LINK_LIMIT: more Link TRBs in a row end the fetch.
pub const TRB_LINK_LIMIT: u32 = 32;

/// TRB types (xHCI 1.2 Table 6-91).
pub mod trb_type {
    pub const LINK: u32 = 6;
    pub const ENABLE_SLOT: u32 = 9;
    pub const DISABLE_SLOT: u32 = 10;
    pub const ADDRESS_DEVICE: u32 = 11;
    pub const CONFIGURE_ENDPOINT: u32 = 12;
    pub const EVALUATE_CONTEXT: u32 = 13;
    pub const RESET_ENDPOINT: u32 = 14;
    pub const STOP_ENDPOINT: u32 = 15;
    pub const SET_TR_DEQUEUE: u32 = 16;
    pub const RESET_DEVICE: u32 = 17;
    pub const GET_PORT_BANDWIDTH: u32 = 21;
    pub const NOOP_COMMAND: u32 = 23;
    pub const COMMAND_COMPLETION: u32 = 33;
    pub const PORT_STATUS_CHANGE: u32 = 34;
    pub const HOST_CONTROLLER: u32 = 37;
}

/// A TRB as read from guest memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Trb {
    pub parameter: u64,
    pub status: u32,
    pub control: u32,
}

impl Trb {
    pub fn from_bytes(b: &[u8; 16]) -> Self {
        let d = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        Self {
            parameter: u64::from(d(0)) | u64::from(d(4)) << 32,
            status: d(8),
            control: d(12),
        }
    }

    pub fn to_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.parameter.to_le_bytes());
        b[8..12].copy_from_slice(&self.status.to_le_bytes());
        b[12..].copy_from_slice(&self.control.to_le_bytes());
        b
    }

    pub fn trb_type(&self) -> u32 {
        (self.control >> TRB_TYPE_SHIFT) & 0x3f
    }
}

/// A ring's consumer side: dequeue pointer and consumer cycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ring {
    pub dequeue: u64,
    pub ccs: bool,
}

impl Default for Ring {
    fn default() -> Self {
        Self {
            dequeue: 0,
            ccs: true,
        }
    }
}

impl Ring {
    /// QEMU `xhci_ring_init`: at `base` with cycle state 1.
    pub fn new(base: u64) -> Self {
        Self {
            dequeue: base,
            ccs: true,
        }
    }
}

impl Xhci {
    /// The next TRB the guest handed over on `ring`, with its address,
    /// following Link TRBs. `None` when the ring is empty (cycle bit), the
    /// read fails, or more than [`TRB_LINK_LIMIT`] Link TRBs follow each
    /// other. Like QEMU, a TRB of type 0 ends the fetch too (the caller sees
    /// type 0) but is consumed.
    pub(super) fn ring_fetch(&self, ring: &mut Ring) -> Option<(Trb, u64)> {
        let mut links = 0;
        loop {
            let mut b = [0u8; 16];
            if let Err(e) = self.dma_read(ring.dequeue, &mut b) {
                log::debug!("command ring: {e}");
                return None;
            }
            let trb = Trb::from_bytes(&b);
            if (trb.control & TRB_C != 0) != ring.ccs {
                return None;
            }
            if trb.trb_type() != trb_type::LINK {
                let addr = ring.dequeue;
                ring.dequeue = ring.dequeue.wrapping_add(TRB_SIZE);
                return Some((trb, addr));
            }
            links += 1;
            if links > TRB_LINK_LIMIT {
                return None;
            }
            ring.dequeue = trb.parameter;
            if trb.control & TRB_LK_TC != 0 {
                ring.ccs = !ring.ccs;
            }
        }
    }
}
