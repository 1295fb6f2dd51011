//! Interrupters and event rings (xHCI 1.2 §4.9.4, §4.17, §5.5.2): the
//! controller produces Event TRBs with its producer cycle state into the
//! one segment the Event Ring Segment Table names, raises the interrupter
//! unless Event Handler Busy is already set, and stops short of the
//! dequeue pointer (QEMU `xhci_event`, `xhci_write_event`, `xhci_er_reset`).

use super::ring::{trb_type, Trb, TRB_C, TRB_SIZE, TRB_TYPE_SHIFT};
use super::{addr64, Xhci, XhciInterrupts, USBCMD_INTE, USBSTS_EINT};

/// IMAN bits.
pub const IMAN_IP: u32 = 1 << 0;
pub const IMAN_IE: u32 = 1 << 1;
/// ERDP bit 3: Event Handler Busy.
pub const ERDP_EHB: u32 = 1 << 3;

/// Completion codes (xHCI 1.2 Table 6-90).
pub mod cc {
    pub const SUCCESS: u32 = 1;
    pub const USB_TRANSACTION_ERROR: u32 = 4;
    pub const TRB_ERROR: u32 = 5;
    pub const NO_SLOTS_ERROR: u32 = 9;
    pub const SLOT_NOT_ENABLED_ERROR: u32 = 11;
    pub const EP_NOT_ENABLED_ERROR: u32 = 12;
    pub const CONTEXT_STATE_ERROR: u32 = 19;
    pub const EVENT_RING_FULL_ERROR: u32 = 21;
    pub const COMMAND_RING_STOPPED: u32 = 24;
}

/// One interrupter's registers and its event ring's producer state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interrupter {
    pub iman: u32,
    pub imod: u32,
    pub erstsz: u32,
    pub erstba_low: u32,
    pub erstba_high: u32,
    pub erdp_low: u32,
    pub erdp_high: u32,
    /// Producer cycle state.
    pub er_pcs: bool,
    /// The segment (from ERST entry 0) and the enqueue index in it.
    pub er_start: u64,
    pub er_size: u32,
    pub er_ep_idx: u32,
}

impl Default for Interrupter {
    fn default() -> Self {
        Self {
            iman: 0,
            imod: 0,
            erstsz: 0,
            erstba_low: 0,
            erstba_high: 0,
            erdp_low: 0,
            erdp_high: 0,
            er_pcs: true,
            er_start: 0,
            er_size: 0,
            er_ep_idx: 0,
        }
    }
}

/// An event to post (QEMU's XHCIEvent).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Event {
    pub trb_type: u32,
    pub ccode: u32,
    pub ptr: u64,
    pub length: u32,
    pub flags: u32,
    pub slotid: u32,
    pub epid: u32,
}

impl Event {
    pub fn new(trb_type: u32, ccode: u32) -> Self {
        Self {
            trb_type,
            ccode,
            ..Self::default()
        }
    }
}

impl Xhci {
    /// Writes `ev` at interrupter `v`'s enqueue position and advances it,
    /// flipping the cycle state at the end of the segment.
    fn write_event(&mut self, ev: &Event, v: usize) {
        let Some(intr) = self.intr.get(v).copied() else {
            return;
        };
        let mut control =
            ev.slotid << 24 | ev.epid << 16 | ev.flags | ev.trb_type << TRB_TYPE_SHIFT;
        if intr.er_pcs {
            control |= TRB_C;
        }
        let trb = Trb {
            parameter: ev.ptr,
            status: ev.length | ev.ccode << 24,
            control,
        };
        let addr = intr
            .er_start
            .wrapping_add(TRB_SIZE * u64::from(intr.er_ep_idx));
        if let Err(e) = self.dma_write(addr, &trb.to_bytes()) {
            log::debug!("event ring {v}: {e}");
            self.die();
        }
        let i = &mut self.intr[v];
        i.er_ep_idx += 1;
        if i.er_ep_idx >= i.er_size {
            i.er_ep_idx = 0;
            i.er_pcs = !i.er_pcs;
        }
    }

    /// Posts `ev` on interrupter `v` and raises it. A dequeue pointer outside
    /// the segment is a controller error; a full ring gets an Event Ring
    /// Full Error in its last free entry and drops events after that.
    pub(super) fn event(&mut self, ev: &Event, v: usize, irq: &mut dyn XhciInterrupts) {
        if v >= self.numintrs as usize {
            return;
        }
        let intr = self.intr[v];
        let erdp = addr64(intr.erdp_low, intr.erdp_high);
        let end = intr
            .er_start
            .saturating_add(TRB_SIZE * u64::from(intr.er_size));
        if erdp < intr.er_start || erdp >= end {
            log::debug!("xHCI: ERDP {erdp:#x} outside event ring {v}");
            self.die();
            return;
        }
        let dp_idx = ((erdp - intr.er_start) / TRB_SIZE) as u32;
        if (intr.er_ep_idx + 2) % intr.er_size == dp_idx {
            let full = Event::new(trb_type::HOST_CONTROLLER, cc::EVENT_RING_FULL_ERROR);
            self.write_event(&full, v);
        } else if (intr.er_ep_idx + 1) % intr.er_size == dp_idx {
            log::debug!("xHCI: event ring {v} full, event dropped");
        } else {
            self.write_event(ev, v);
        }
        self.intr_raise(v, irq);
    }

    /// QEMU `xhci_intr_raise`: EHB, IP and EINT; the interrupt goes out
    /// only if EHB was clear, IMAN.IE and USBCMD.INTE are set.
    pub(super) fn intr_raise(&mut self, v: usize, irq: &mut dyn XhciInterrupts) {
        let inte = self.usbcmd & USBCMD_INTE != 0;
        let Some(i) = self.intr.get_mut(v) else {
            return;
        };
        let pending = i.erdp_low & ERDP_EHB != 0;
        i.erdp_low |= ERDP_EHB;
        i.iman |= IMAN_IP;
        self.usbsts |= USBSTS_EINT;
        if pending || i.iman & IMAN_IE == 0 || !inte {
            return;
        }
        if irq.raise(v, true) {
            i.iman &= !IMAN_IP;
        }
    }

    /// QEMU `xhci_intr_update`: interrupter 0's level (IP, IE and INTE)
    /// after a register write; only interrupter 0 has a line.
    pub(super) fn intr_update(&mut self, v: usize, irq: &mut dyn XhciInterrupts) {
        if v != 0 {
            return;
        }
        let i = &mut self.intr[0];
        let level =
            i.iman & IMAN_IP != 0 && i.iman & IMAN_IE != 0 && self.usbcmd & USBCMD_INTE != 0;
        if irq.raise(0, level) {
            i.iman &= !IMAN_IP;
        }
    }

    /// QEMU `xhci_er_reset` on an ERSTBA high write: reads the one segment
    /// the table may hold (ERSTSZ must be 1; 16 to 4096 TRBs).
    pub(super) fn er_reset(&mut self, v: usize) {
        let Some(intr) = self.intr.get(v).copied() else {
            return;
        };
        let erstba = addr64(intr.erstba_low, intr.erstba_high);
        if intr.erstsz == 0 || erstba == 0 {
            self.intr[v].er_start = 0;
            self.intr[v].er_size = 0;
            return;
        }
        if intr.erstsz != 1 {
            log::debug!("xHCI: ERSTSZ {} not supported", intr.erstsz);
            self.die();
            return;
        }
        let mut seg = [0u8; 16];
        if let Err(e) = self.dma_read(erstba, &mut seg) {
            log::debug!("ERST {v}: {e}");
            self.die();
            return;
        }
        let d = |o: usize| u32::from_le_bytes([seg[o], seg[o + 1], seg[o + 2], seg[o + 3]]);
        let size = d(8);
        if !(16..=4096).contains(&size) {
            log::debug!("xHCI: event ring segment of {size} TRBs");
            self.die();
            return;
        }
        let i = &mut self.intr[v];
        i.er_start = addr64(d(0), d(4));
        i.er_size = size;
        i.er_ep_idx = 0;
        i.er_pcs = true;
    }
}
