//! The command ring (xHCI 1.2 §4.6), run when the guest rings doorbell 0
//! with value 0: each command TRB gets a Command Completion Event on
//! interrupter 0 with the completion code QEMU's `xhci_process_commands`
//! gives on a controller whose root hub has no devices. As in QEMU the
//! event's slot id carries over from the previous command of the same
//! doorbell unless the command names a slot (a No Op after an Enable Slot
//! reports that slot).

use super::event::{cc, Event};
use super::ring::{trb_type as t, Trb};
use super::{addr64, Xhci, XhciInterrupts};

/// QEMU's COMMAND_LIMIT: commands handled per doorbell (QEMU stops after
/// the 258th; the rest wait for the next doorbell).
pub const COMMAND_LIMIT: u32 = 256;
/// CRCR bits (§5.4.5).
pub const CRCR_RCS: u32 = 1 << 0;
pub const CRCR_CS: u32 = 1 << 1;
pub const CRCR_CA: u32 = 1 << 2;
pub const CRCR_CRR: u32 = 1 << 3;
/// Command TRB control fields.
const TRB_CR_SLOTID_SHIFT: u32 = 24;
const TRB_CR_EPID_SHIFT: u32 = 16;
const TRB_CR_EPID_MASK: u32 = 0x1f;
const TRB_CR_DC: u32 = 1 << 9;
/// Slot context dword 3: Slot State.
const SLOT_STATE_SHIFT: u32 = 27;
const SLOT_STATE_MASK: u32 = 0x1f;
const SLOT_DEFAULT: u32 = 1;
const SLOT_ADDRESSED: u32 = 2;
/// Slot context dword 2: Interrupter Target.
const TRB_INTR_SHIFT: u32 = 22;
const TRB_INTR_MASK: u32 = 0x3ff;

impl Xhci {
    /// Doorbell 0: runs the command ring until it is empty (or the limit).
    pub(super) fn process_commands(&mut self, irq: &mut dyn XhciInterrupts) {
        if !self.running() {
            return;
        }
        self.crcr_low |= CRCR_CRR;
        let mut event = Event::new(t::COMMAND_COMPLETION, cc::SUCCESS);
        let mut slotid = 0;
        let mut count = 0;
        loop {
            let mut ring = self.cmd_ring;
            let fetched = self.ring_fetch(&mut ring);
            self.cmd_ring = ring;
            let Some((trb, addr)) = fetched else {
                return;
            };
            if trb.trb_type() == 0 {
                return;
            }
            event.ptr = addr;
            match trb.trb_type() {
                t::ENABLE_SLOT => match self.slots.iter().position(|s| !s.enabled) {
                    Some(i) => {
                        self.slots[i].enabled = true;
                        slotid = i as u32 + 1;
                        event.ccode = cc::SUCCESS;
                    }
                    None => event.ccode = cc::NO_SLOTS_ERROR,
                },
                t::GET_PORT_BANDWIDTH => event.ccode = self.get_port_bandwidth(trb.parameter),
                t::NOOP_COMMAND => event.ccode = cc::SUCCESS,
                t::DISABLE_SLOT
                | t::ADDRESS_DEVICE
                | t::CONFIGURE_ENDPOINT
                | t::EVALUATE_CONTEXT
                | t::STOP_ENDPOINT
                | t::RESET_ENDPOINT
                | t::SET_TR_DEQUEUE
                | t::RESET_DEVICE => {
                    slotid = match self.get_slot(&trb) {
                        Ok(s) => {
                            event.ccode = self.slot_command(s, &trb);
                            s
                        }
                        Err(code) => {
                            event.ccode = code;
                            0
                        }
                    };
                }
                _ => event.ccode = cc::TRB_ERROR,
            }
            event.slotid = slotid;
            self.event(&event, 0, irq);
            count += 1;
            if count > COMMAND_LIMIT + 1 {
                return;
            }
        }
    }

    /// QEMU `xhci_get_slot`: the TRB's slot id, which must be enabled.
    fn get_slot(&self, trb: &Trb) -> Result<u32, u32> {
        let id = trb.control >> TRB_CR_SLOTID_SHIFT;
        if id < 1 || id > self.numslots {
            return Err(cc::TRB_ERROR);
        }
        if !self.slots[id as usize - 1].enabled {
            return Err(cc::SLOT_NOT_ENABLED_ERROR);
        }
        Ok(id)
    }

    /// A command on enabled slot `id` (1-based, checked).
    fn slot_command(&mut self, id: u32, trb: &Trb) -> u32 {
        let i = id as usize - 1;
        let epid = (trb.control >> TRB_CR_EPID_SHIFT) & TRB_CR_EPID_MASK;
        match trb.trb_type() {
            t::DISABLE_SLOT => {
                self.slots[i].enabled = false;
                self.slots[i].intr = 0;
                cc::SUCCESS
            }
            t::ADDRESS_DEVICE => self.address_device(id, trb.parameter),
            t::CONFIGURE_ENDPOINT => self.configure_endpoint(i, trb),
            t::EVALUATE_CONTEXT => self.evaluate_context(i, trb.parameter),
            // xhci_stop_ep / xhci_reset_ep / xhci_set_ep_dequeue: no endpoint
            // is ever enabled without a device.
            t::STOP_ENDPOINT | t::RESET_ENDPOINT | t::SET_TR_DEQUEUE => {
                if !(1..=31).contains(&epid) {
                    cc::TRB_ERROR
                } else {
                    cc::EP_NOT_ENABLED_ERROR
                }
            }
            // xhci_reset_slot: the output context's state becomes Default.
            _ => {
                let octx = self.slots[i].ctx;
                let mut slot: [u32; 4] = self.read_u32s(octx);
                slot[3] &= !(SLOT_STATE_MASK << SLOT_STATE_SHIFT);
                slot[3] |= SLOT_DEFAULT << SLOT_STATE_SHIFT;
                self.write_u32s(octx, &slot);
                cc::SUCCESS
            }
        }
    }

    /// QEMU `xhci_address_slot`: with a valid input control context the
    /// slot context names a root port; no port has a device, so QEMU's
    /// port lookup fails and the command completes with TRB Error.
    fn address_device(&mut self, id: u32, pictx: u64) -> u32 {
        let dcbaap = addr64(self.dcbaap_low, self.dcbaap_high);
        let mut poctx = [0u8; 8];
        // ldq_le_dma: QEMU ignores a failure here.
        let _ = self.dma_read(dcbaap.wrapping_add(8 * u64::from(id)), &mut poctx);
        let ictl: [u32; 2] = self.read_u32s(pictx);
        if ictl != [0, 3] {
            return cc::TRB_ERROR;
        }
        let _slot: [u32; 4] = self.read_u32s(pictx.wrapping_add(32));
        let _ep0: [u32; 5] = self.read_u32s(pictx.wrapping_add(64));
        cc::TRB_ERROR
    }

    /// QEMU `xhci_configure_slot`. Deconfigure (DC) sets the output slot
    /// context's state to Addressed. Otherwise the input control context
    /// must add the slot context and the output context (never set up
    /// without a device) must be Addressed or later.
    fn configure_endpoint(&mut self, i: usize, trb: &Trb) -> u32 {
        let octx = self.slots[i].ctx;
        if trb.control & TRB_CR_DC != 0 {
            let mut slot: [u32; 4] = self.read_u32s(octx);
            slot[3] &= !(SLOT_STATE_MASK << SLOT_STATE_SHIFT);
            slot[3] |= SLOT_ADDRESSED << SLOT_STATE_SHIFT;
            self.write_u32s(octx, &slot);
            return cc::SUCCESS;
        }
        let ictx = trb.parameter;
        let ictl: [u32; 2] = self.read_u32s(ictx);
        if ictl[0] & 3 != 0 || ictl[1] & 3 != 1 {
            return cc::TRB_ERROR;
        }
        let _islot: [u32; 4] = self.read_u32s(ictx.wrapping_add(32));
        let slot: [u32; 4] = self.read_u32s(octx);
        if (slot[3] >> SLOT_STATE_SHIFT) & SLOT_STATE_MASK < SLOT_ADDRESSED {
            return cc::CONTEXT_STATE_ERROR;
        }
        // QEMU would now enable the endpoints the input context adds; only
        // a guest whose memory at address 0 looks like an addressed slot
        // context gets here, and ferrovm models no endpoints.
        log::debug!("xHCI: Configure Endpoint on an unaddressed slot");
        cc::CONTEXT_STATE_ERROR
    }

    /// QEMU `xhci_evaluate_slot`: copies the max exit latency, interrupter
    /// target and ep0 max packet size into the output context.
    fn evaluate_context(&mut self, i: usize, ictx: u64) -> u32 {
        let octx = self.slots[i].ctx;
        let ictl: [u32; 2] = self.read_u32s(ictx);
        if ictl[0] != 0 || ictl[1] & !3 != 0 {
            return cc::TRB_ERROR;
        }
        if ictl[1] & 1 != 0 {
            let islot: [u32; 4] = self.read_u32s(ictx.wrapping_add(32));
            let mut slot: [u32; 4] = self.read_u32s(octx);
            slot[1] = (slot[1] & !0xffff) | (islot[1] & 0xffff);
            let intr = (islot[2] >> TRB_INTR_SHIFT) & TRB_INTR_MASK;
            self.slots[i].intr = intr;
            slot[2] = (slot[2] & !(TRB_INTR_MASK << TRB_INTR_SHIFT)) | intr << TRB_INTR_SHIFT;
            self.write_u32s(octx, &slot);
        }
        if ictl[1] & 2 != 0 {
            let iep0: [u32; 5] = self.read_u32s(ictx.wrapping_add(64));
            let mut ep0: [u32; 5] = self.read_u32s(octx.wrapping_add(32));
            ep0[1] = (ep0[1] & 0xffff) | (iep0[1] & 0xffff_0000);
            self.write_u32s(octx.wrapping_add(32), &ep0);
        }
        cc::SUCCESS
    }

    /// QEMU `xhci_get_port_bandwidth`: 0 then 80 (percent) per port.
    fn get_port_bandwidth(&mut self, ctx: u64) -> u32 {
        let mut bw = vec![80u8; self.numports() as usize + 1];
        bw[0] = 0;
        match self.dma_write(ctx, &bw) {
            Ok(()) => cc::SUCCESS,
            Err(_) => cc::TRB_ERROR,
        }
    }

    /// CRCR high written while the ring runs with CS or CA set: QEMU stops
    /// it with a Command Ring Stopped event; otherwise the write (re)starts
    /// the ring at CRCR's pointer with cycle state 1.
    pub(super) fn crcr_high_written(&mut self, val: u32, irq: &mut dyn XhciInterrupts) {
        self.crcr_high = val;
        if self.crcr_low & (CRCR_CA | CRCR_CS) != 0 && self.crcr_low & CRCR_CRR != 0 {
            self.crcr_low &= !CRCR_CRR;
            let ev = Event::new(t::COMMAND_COMPLETION, cc::COMMAND_RING_STOPPED);
            self.event(&ev, 0, irq);
        } else {
            let base = addr64(self.crcr_low & !0x3f, val);
            self.cmd_ring = super::ring::Ring::new(base);
        }
        self.crcr_low &= !(CRCR_CA | CRCR_CS);
    }
}
