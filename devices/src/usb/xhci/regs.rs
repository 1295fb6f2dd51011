//! BAR0's register file at QEMU's offsets (hw/usb/hcd-xhci.c): capability
//! registers and the two Supported Protocol capabilities at 0x0,
//! operational registers at 0x40, PORTSC and friends at 0x440 + 0x10 * n,
//! runtime registers at 0x1000 (MFINDEX, then 16 interrupter sets of 0x20),
//! doorbells at 0x2000 (xHCI 1.2 §5.3-§5.6).
//!
//! Access sizes as QEMU's MemoryRegionOps: capability registers take 1 to
//! 4 bytes (served from the dword at the access's own offset, so only
//! dword-aligned reads see a register), operational and runtime 4 or 8
//! (an 8-byte access is two dword accesses, low first), ports and
//! doorbells 4. Anything else reads 0 and writes nothing.

use super::command::CRCR_CRR;
use super::event::{ERDP_EHB, IMAN_IE, IMAN_IP};
use super::ring::TRB_SIZE;
use super::{
    addr64, Xhci, XhciInterrupts, USBCMD_CRS, USBCMD_CSS, USBCMD_HCRST, USBCMD_RS, USBSTS_EINT,
    USBSTS_HCH, USBSTS_HSE, USBSTS_PCD, USBSTS_SRE,
};

pub const LEN_CAP: u64 = 0x40;
pub const OFF_OPER: u64 = LEN_CAP;
pub const LEN_OPER: u64 = 0x400;
pub const OFF_PORTS: u64 = OFF_OPER + LEN_OPER;
pub const OFF_RUNTIME: u64 = 0x1000;
pub const LEN_RUNTIME: u64 = (super::XHCI_MAXINTRS as u64 + 1) * 0x20;
pub const OFF_DOORBELL: u64 = 0x2000;
pub const LEN_DOORBELL: u64 = (super::XHCI_MAXSLOTS as u64 + 1) * 0x20;

/// PORTSC bits (§5.4.8).
pub const PORTSC_CCS: u32 = 1 << 0;
pub const PORTSC_PED: u32 = 1 << 1;
pub const PORTSC_PR: u32 = 1 << 4;
pub const PORTSC_PLS_SHIFT: u32 = 5;
pub const PORTSC_PLS_MASK: u32 = 0xf;
pub const PORTSC_PP: u32 = 1 << 9;
pub const PORTSC_LWS: u32 = 1 << 16;
pub const PORTSC_CSC: u32 = 1 << 17;
pub const PORTSC_PEC: u32 = 1 << 18;
pub const PORTSC_WRC: u32 = 1 << 19;
pub const PORTSC_OCC: u32 = 1 << 20;
pub const PORTSC_PRC: u32 = 1 << 21;
pub const PORTSC_PLC: u32 = 1 << 22;
pub const PORTSC_CEC: u32 = 1 << 23;
pub const PORTSC_WCE: u32 = 1 << 25;
pub const PORTSC_WDE: u32 = 1 << 26;
pub const PORTSC_WOE: u32 = 1 << 27;
pub const PORTSC_WPR: u32 = 1 << 31;
/// Port link states.
pub const PLS_U0: u32 = 0;
pub const PLS_U3: u32 = 3;
pub const PLS_RX_DETECT: u32 = 5;

/// Whether an access of `len` bytes at `offset` is one QEMU's region
/// accepts: `min..=max` bytes, naturally aligned (no `valid.unaligned`).
fn size_ok(offset: u64, len: usize, min: usize, max: usize) -> bool {
    (min..=max).contains(&len) && len.is_power_of_two() && offset.is_multiple_of(len as u64)
}

/// Which register block an offset falls in, with the offset inside it.
enum Block {
    Cap(u64),
    Oper(u64),
    Port(usize, u64),
    Runtime(u64),
    Doorbell(u64),
    None,
}

impl Xhci {
    fn block(&self, offset: u64) -> Block {
        let ports_end = OFF_PORTS + 0x10 * u64::from(self.numports());
        match offset {
            o if o < LEN_CAP => Block::Cap(o),
            o if o < OFF_PORTS => Block::Oper(o - OFF_OPER),
            o if o < ports_end => {
                let r = o - OFF_PORTS;
                Block::Port((r / 0x10) as usize, r % 0x10)
            }
            o if (OFF_RUNTIME..OFF_RUNTIME + LEN_RUNTIME).contains(&o) => {
                Block::Runtime(o - OFF_RUNTIME)
            }
            o if (OFF_DOORBELL..OFF_DOORBELL + LEN_DOORBELL).contains(&o) => {
                Block::Doorbell(o - OFF_DOORBELL)
            }
            _ => Block::None,
        }
    }

    /// A guest read of BAR0 (the MSI-X table and PBA are the PCI
    /// function's). Offsets and sizes are the guest's: anything goes.
    pub fn mmio_read(&mut self, offset: u64, data: &mut [u8]) {
        let len = data.len();
        data.fill(0);
        let aligned = |min, max| size_ok(offset, len, min, max);
        let value: u64 = match self.block(offset) {
            Block::Cap(r) if aligned(1, 4) => u64::from(self.cap_read(r)),
            Block::Oper(r) if aligned(4, 8) => self.split_read(r, len, Self::oper_read),
            Block::Port(p, r) if aligned(4, 4) => u64::from(self.port_read(p, r)),
            Block::Runtime(r) if aligned(4, 8) => self.split_read(r, len, Self::runtime_read),
            _ => 0,
        };
        let bytes = value.to_le_bytes();
        data.copy_from_slice(&bytes[..len.min(8)]);
    }

    /// A guest write of BAR0.
    pub fn mmio_write(&mut self, offset: u64, data: &[u8], irq: &mut dyn XhciInterrupts) {
        let len = data.len();
        let aligned = |min, max| size_ok(offset, len, min, max);
        let mut b = [0u8; 8];
        b[..len.min(8)].copy_from_slice(&data[..len.min(8)]);
        let value = u64::from_le_bytes(b);
        match self.block(offset) {
            Block::Oper(r) if aligned(4, 8) => {
                self.oper_write(r, value as u32, irq);
                if len == 8 {
                    self.oper_write(r + 4, (value >> 32) as u32, irq);
                }
            }
            Block::Port(p, 0) if aligned(4, 4) => self.port_write(p, value as u32, irq),
            Block::Runtime(r) if aligned(4, 8) => {
                self.runtime_write(r, value as u32, irq);
                if len == 8 {
                    self.runtime_write(r + 4, (value >> 32) as u32, irq);
                }
            }
            Block::Doorbell(r) if aligned(4, 4) => self.doorbell_write(r, value as u32, irq),
            _ => {}
        }
    }

    /// An access of `len` (4 or 8) bytes as dword accesses, low first.
    fn split_read(&mut self, r: u64, len: usize, read: fn(&mut Self, u64) -> u32) -> u64 {
        let lo = u64::from(read(self, r));
        if len == 8 {
            lo | u64::from(read(self, r + 4)) << 32
        } else {
            lo
        }
    }

    /// QEMU `xhci_cap_read`.
    fn cap_read(&self, r: u64) -> u32 {
        let (n2, n3) = (self.numports_2, self.numports_3);
        match r {
            // HCIVERSION 1.0, CAPLENGTH.
            0x00 => 0x0100_0000 | LEN_CAP as u32,
            0x04 => (n2 + n3) << 24 | self.numintrs << 8 | self.numslots,
            // IST 15 microframes (bits 3:0), ERST Max 0.
            0x08 => 0x0000_000f,
            0x0c => 0,
            // AC64, xECP at dword 8 (0x20), MaxPSASize.
            0x10 => 0x0008_0001 | self.max_pstreams_mask << 12,
            0x14 => OFF_DOORBELL as u32,
            0x18 => OFF_RUNTIME as u32,
            // Supported Protocol: USB 2.0, next capability 4 dwords on;
            // "USB "; ports after the USB 3 ones (superspeed-ports-first).
            0x20 => 0x0200_0402,
            0x24 => 0x2042_5355,
            0x28 => n2 << 8 | (n3 + 1),
            // Supported Protocol: USB 3.0, last; ports 1..=p3.
            0x30 => 0x0300_0002,
            0x34 => 0x2042_5355,
            0x38 => n3 << 8 | 1,
            _ => 0,
        }
    }

    /// QEMU `xhci_oper_read`.
    fn oper_read(&mut self, r: u64) -> u32 {
        match r {
            0x00 => self.usbcmd,
            0x04 => self.usbsts,
            0x08 => 1, // PAGESIZE: 4 KiB
            0x14 => self.dnctrl,
            0x18 => self.crcr_low & !0xe,
            0x1c => self.crcr_high,
            0x30 => self.dcbaap_low,
            0x34 => self.dcbaap_high,
            0x38 => self.config,
            _ => 0,
        }
    }

    /// QEMU `xhci_oper_write`.
    fn oper_write(&mut self, r: u64, val: u32, irq: &mut dyn XhciInterrupts) {
        match r {
            0x00 => {
                if val & USBCMD_RS != 0 && self.usbcmd & USBCMD_RS == 0 {
                    self.usbsts &= !USBSTS_HCH;
                    self.mfindex_start = self.clock.now_ns();
                } else if val & USBCMD_RS == 0 && self.usbcmd & USBCMD_RS != 0 {
                    self.usbsts |= USBSTS_HCH;
                    self.crcr_low &= !CRCR_CRR;
                }
                if val & USBCMD_CSS != 0 {
                    self.usbsts &= !USBSTS_SRE;
                }
                if val & USBCMD_CRS != 0 {
                    self.usbsts |= USBSTS_SRE;
                }
                self.usbcmd = val & 0xc0f;
                if val & USBCMD_HCRST != 0 {
                    self.reset();
                }
                self.intr_update(0, irq);
            }
            0x04 => {
                self.usbsts &= !(val & (USBSTS_HSE | USBSTS_EINT | USBSTS_PCD | USBSTS_SRE));
                self.intr_update(0, irq);
            }
            0x14 => self.dnctrl = val & 0xffff,
            0x18 => self.crcr_low = (val & 0xffff_ffcf) | (self.crcr_low & CRCR_CRR),
            0x1c => self.crcr_high_written(val, irq),
            0x30 => self.dcbaap_low = val & 0xffff_ffc0,
            0x34 => self.dcbaap_high = val,
            0x38 => self.config = val & 0xff,
            _ => {}
        }
    }

    /// QEMU `xhci_port_read`: PORTSC; PORTPMSC, PORTLI and the rest read 0.
    fn port_read(&self, p: usize, r: u64) -> u32 {
        match (self.ports.get(p), r) {
            (Some(port), 0) => port.portsc,
            _ => 0,
        }
    }

    /// QEMU `xhci_port_write` on PORTSC of a port without a device: a port
    /// reset does nothing (xhci_port_reset needs a device); change bits are
    /// write-1-to-clear; PP and the wake enables are read/write; a link
    /// state write (LWS) to U0 or U3 is taken, to U0 with a link change.
    fn port_write(&mut self, p: usize, val: u32, irq: &mut dyn XhciInterrupts) {
        let Some(port) = self.ports.get(p).copied() else {
            return;
        };
        if val & (PORTSC_WPR | PORTSC_PR) != 0 {
            return;
        }
        let mut portsc = port.portsc;
        portsc &= !(val
            & (PORTSC_CSC
                | PORTSC_PEC
                | PORTSC_WRC
                | PORTSC_OCC
                | PORTSC_PRC
                | PORTSC_PLC
                | PORTSC_CEC));
        let mut notify = 0;
        if val & PORTSC_LWS != 0 {
            let old = (port.portsc >> PORTSC_PLS_SHIFT) & PORTSC_PLS_MASK;
            let new = (val >> PORTSC_PLS_SHIFT) & PORTSC_PLS_MASK;
            let set = |s: &mut u32| {
                *s = (*s & !(PORTSC_PLS_MASK << PORTSC_PLS_SHIFT)) | new << PORTSC_PLS_SHIFT
            };
            if new == PLS_U0 && old != PLS_U0 {
                set(&mut portsc);
                notify = PORTSC_PLC;
            } else if new == PLS_U3 && old < PLS_U3 {
                set(&mut portsc);
            }
        }
        let rw = PORTSC_PP | PORTSC_WCE | PORTSC_WDE | PORTSC_WOE;
        portsc = (portsc & !rw) | (val & rw);
        self.ports[p].portsc = portsc;
        if notify != 0 {
            self.port_notify(p, notify, irq);
        }
    }

    /// QEMU `xhci_port_notify`: sets the change bits and, if they were not
    /// all set and the controller runs, posts a Port Status Change Event.
    fn port_notify(&mut self, p: usize, bits: u32, irq: &mut dyn XhciInterrupts) {
        if self.ports[p].portsc & bits == bits {
            return;
        }
        self.ports[p].portsc |= bits;
        if !self.running() {
            return;
        }
        let mut ev = super::event::Event::new(super::ring::trb_type::PORT_STATUS_CHANGE, 1);
        ev.ptr = u64::from(p as u32 + 1) << 24;
        self.event(&ev, 0, irq);
    }

    /// MFINDEX: microframes (125 us) since the controller started, 14 bits.
    fn mfindex(&self) -> u32 {
        let ns = self.clock.now_ns() - self.mfindex_start;
        ((ns / 125_000) as u32) & 0x3fff
    }

    /// QEMU `xhci_runtime_read`.
    fn runtime_read(&mut self, r: u64) -> u32 {
        if r < 0x20 {
            return if r == 0 { self.mfindex() } else { 0 };
        }
        let Some(i) = self.intr.get(((r - 0x20) / 0x20) as usize) else {
            return 0;
        };
        match r & 0x1f {
            0x00 => i.iman,
            0x04 => i.imod,
            0x08 => i.erstsz,
            0x10 => i.erstba_low,
            0x14 => i.erstba_high,
            0x18 => i.erdp_low,
            0x1c => i.erdp_high,
            _ => 0,
        }
    }

    /// QEMU `xhci_runtime_write`.
    fn runtime_write(&mut self, r: u64, val: u32, irq: &mut dyn XhciInterrupts) {
        if r < 0x20 {
            return;
        }
        let v = ((r - 0x20) / 0x20) as usize;
        let Some(i) = self.intr.get_mut(v) else {
            return;
        };
        match r & 0x1f {
            0x00 => {
                if val & IMAN_IP != 0 {
                    i.iman &= !IMAN_IP;
                }
                i.iman = (i.iman & !IMAN_IE) | (val & IMAN_IE);
                self.intr_update(v, irq);
            }
            0x04 => i.imod = val,
            0x08 => i.erstsz = val & 0xffff,
            0x10 => i.erstba_low = val & 0xffff_ffc0,
            0x14 => {
                i.erstba_high = val;
                self.er_reset(v);
            }
            0x18 => {
                if val & ERDP_EHB != 0 {
                    i.erdp_low &= !ERDP_EHB;
                }
                i.erdp_low = (val & !ERDP_EHB) | (i.erdp_low & ERDP_EHB);
                if val & ERDP_EHB != 0 {
                    // Events the handler has not consumed yet: raise again.
                    let erdp = addr64(i.erdp_low, i.erdp_high);
                    let end = i.er_start.saturating_add(TRB_SIZE * u64::from(i.er_size));
                    if erdp >= i.er_start && erdp < end {
                        let dp_idx = ((erdp - i.er_start) / TRB_SIZE) as u32;
                        if dp_idx != i.er_ep_idx {
                            self.intr_raise(v, irq);
                        }
                    }
                }
            }
            0x1c => i.erdp_high = val,
            _ => {}
        }
    }

    /// QEMU `xhci_doorbell_write`: doorbell 0 with value 0 runs the command
    /// ring; device doorbells have no endpoints to kick (no devices).
    fn doorbell_write(&mut self, r: u64, val: u32, irq: &mut dyn XhciInterrupts) {
        if !self.running() {
            return;
        }
        if r == 0 && val == 0 {
            self.process_commands(irq);
        }
    }

    /// PORTSC of port `p` (0-based), for tests and reports.
    pub fn portsc(&self, p: usize) -> Option<u32> {
        self.ports.get(p).map(|x| x.portsc)
    }

    pub fn usbsts(&self) -> u32 {
        self.usbsts
    }
}
