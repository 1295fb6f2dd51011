//! An xHCI host controller (xHCI 1.2) as QEMU 7.2's `qemu-xhci`
//! (hw/usb/hcd-xhci.c, hw/usb/hcd-xhci-pci.c) with no USB devices: the
//! register file, the command ring and the event rings are real, so a
//! driver (Linux's xhci_hcd) initialises the controller, runs commands and
//! finds every root hub port empty.
//!
//! - [`regs`]: the MMIO register file in BAR0 at QEMU's offsets
//!   (capability 0x0, operational 0x40, ports 0x440, runtime 0x1000,
//!   doorbells 0x2000) and QEMU's access-size rules.
//! - [`ring`]: TRBs and ring dequeue with cycle bits and Link TRBs.
//! - [`event`]: interrupters and event-ring production.
//! - [`command`]: the command ring (doorbell 0) and QEMU's completion codes
//!   for a controller without devices.
//! - [`pci`]: the PCI function (1b36:000d, MSI-X in BAR0, PCIe capability).
//!
//! Guest memory is reached only through vm-memory's checked accessors: a
//! guest-supplied address that is not RAM is a failed DMA (QEMU sets
//! USBSTS.HCE), never a panic.

pub mod command;
pub mod event;
pub mod pci;
pub mod regs;
pub mod ring;

#[cfg(test)]
mod tests;

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::Clock;
use event::Interrupter;
use ring::Ring;

pub use pci::XhciPci;

/// include/hw/usb/xhci.h.
pub const XHCI_MAXPORTS_2: u32 = 15;
pub const XHCI_MAXPORTS_3: u32 = 15;
pub const XHCI_MAXSLOTS: u32 = 64;
pub const XHCI_MAXINTRS: u32 = 16;
/// BAR0's size.
pub const XHCI_LEN_REGS: u64 = 0x4000;

/// USBCMD bits (xHCI 1.2 §5.4.1).
pub const USBCMD_RS: u32 = 1 << 0;
pub const USBCMD_HCRST: u32 = 1 << 1;
pub const USBCMD_INTE: u32 = 1 << 2;
pub const USBCMD_CSS: u32 = 1 << 8;
pub const USBCMD_CRS: u32 = 1 << 9;
/// USBSTS bits (§5.4.2).
pub const USBSTS_HCH: u32 = 1 << 0;
pub const USBSTS_HSE: u32 = 1 << 2;
pub const USBSTS_EINT: u32 = 1 << 3;
pub const USBSTS_PCD: u32 = 1 << 4;
pub const USBSTS_SRE: u32 = 1 << 10;
pub const USBSTS_CNR: u32 = 1 << 11;
pub const USBSTS_HCE: u32 = 1 << 12;

/// A guest address the controller could not read or write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("xHCI DMA of {len} bytes at {addr:#x} is outside guest memory")]
pub struct DmaError {
    pub addr: u64,
    pub len: usize,
}

/// The controller's shape: QEMU's `p2`, `p3` and `streams` properties; the
/// interrupter and slot counts are qemu-xhci's fixed 16 and 64.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XhciConfig {
    /// USB 2 root hub ports (clamped to 15, as QEMU's usb_xhci_init).
    pub p2: u32,
    /// USB 3 root hub ports (clamped to 15).
    pub p3: u32,
    pub intrs: u32,
    pub slots: u32,
    /// HCCPARAMS1.MaxPSASize 7 (256 primary streams) when on.
    pub streams: bool,
}

impl Default for XhciConfig {
    fn default() -> Self {
        Self {
            p2: 4,
            p3: 4,
            intrs: XHCI_MAXINTRS,
            slots: XHCI_MAXSLOTS,
            streams: true,
        }
    }
}

/// How the controller's interrupters reach the CPU: the PCI function
/// implements this with MSI-X and INTx (QEMU `xhci_pci_intr_raise`).
pub trait XhciInterrupts {
    /// Interrupter `v` asserts (`level`) or deasserts. Returns true when the
    /// interrupt went out as a message (MSI-X), which clears IMAN.IP.
    fn raise(&mut self, v: usize, level: bool) -> bool;
}

/// A root hub port: only PORTSC has state (PORTPMSC and PORTLI read 0).
#[derive(Debug, Clone, Copy, Default)]
struct Port {
    portsc: u32,
}

/// A device slot (xHCI §4.5.3). `ctx` is the output context QEMU records
/// when Address Device succeeds, which it never does without a device, so
/// it stays 0 and later commands read and write guest address 0 as QEMU's.
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    enabled: bool,
    ctx: u64,
    intr: u32,
}

/// The controller's state (QEMU's XHCIState without USB devices).
pub struct Xhci {
    mem: GuestMemoryMmap,
    clock: Box<dyn Clock>,
    numports_2: u32,
    numports_3: u32,
    numintrs: u32,
    numslots: u32,
    max_pstreams_mask: u32,
    usbcmd: u32,
    usbsts: u32,
    dnctrl: u32,
    crcr_low: u32,
    crcr_high: u32,
    dcbaap_low: u32,
    dcbaap_high: u32,
    config: u32,
    cmd_ring: Ring,
    ports: Vec<Port>,
    slots: Vec<Slot>,
    intr: Vec<Interrupter>,
    mfindex_start: i128,
}

impl Xhci {
    /// A controller over guest memory `mem`; `clock` drives MFINDEX (one
    /// microframe per 125 us). Counts are clamped as QEMU's realize does.
    pub fn new(cfg: XhciConfig, mem: GuestMemoryMmap, clock: Box<dyn Clock>) -> Self {
        let numports_2 = cfg.p2.min(XHCI_MAXPORTS_2);
        let numports_3 = cfg.p3.min(XHCI_MAXPORTS_3);
        let numintrs = cfg.intrs.clamp(1, XHCI_MAXINTRS).next_power_of_two();
        let numslots = cfg.slots.clamp(1, XHCI_MAXSLOTS);
        let mut x = Self {
            mem,
            clock,
            numports_2,
            numports_3,
            numintrs,
            numslots,
            max_pstreams_mask: if cfg.streams { 7 } else { 0 },
            usbcmd: 0,
            usbsts: USBSTS_HCH,
            dnctrl: 0,
            crcr_low: 0,
            crcr_high: 0,
            dcbaap_low: 0,
            dcbaap_high: 0,
            config: 0,
            cmd_ring: Ring::default(),
            ports: vec![Port::default(); (numports_2 + numports_3) as usize],
            slots: vec![Slot::default(); numslots as usize],
            intr: vec![Interrupter::default(); XHCI_MAXINTRS as usize],
            mfindex_start: 0,
        };
        x.reset();
        x
    }

    pub fn numports(&self) -> u32 {
        self.numports_2 + self.numports_3
    }

    pub fn numintrs(&self) -> u32 {
        self.numintrs
    }

    /// HCRST and machine reset (QEMU `xhci_reset`): everything stopped and
    /// cleared; every port reports no device with PP and a connect change.
    pub fn reset(&mut self) {
        self.usbcmd = 0;
        self.usbsts = USBSTS_HCH;
        self.dnctrl = 0;
        self.crcr_low = 0;
        self.crcr_high = 0;
        self.dcbaap_low = 0;
        self.dcbaap_high = 0;
        self.config = 0;
        for s in &mut self.slots {
            s.enabled = false;
            s.intr = 0;
        }
        for i in 0..self.ports.len() {
            self.port_update(i);
        }
        for i in &mut self.intr {
            *i = Interrupter::default();
        }
        self.mfindex_start = self.clock.now_ns();
    }

    /// QEMU `xhci_port_update` for a port with nothing attached: PP, link
    /// state RxDetect, and CSC (no event: the controller is halted).
    fn port_update(&mut self, i: usize) {
        if let Some(p) = self.ports.get_mut(i) {
            p.portsc = regs::PORTSC_PP | (regs::PLS_RX_DETECT << regs::PORTSC_PLS_SHIFT);
            p.portsc |= regs::PORTSC_CSC;
        }
    }

    fn running(&self) -> bool {
        self.usbsts & USBSTS_HCH == 0
    }

    /// QEMU `xhci_die`: Host Controller Error.
    fn die(&mut self) {
        self.usbsts |= USBSTS_HCE;
    }

    fn dma_read(&self, addr: u64, buf: &mut [u8]) -> Result<(), DmaError> {
        self.mem
            .read_slice(buf, GuestAddress(addr))
            .map_err(|_| DmaError {
                addr,
                len: buf.len(),
            })
    }

    fn dma_write(&self, addr: u64, buf: &[u8]) -> Result<(), DmaError> {
        self.mem
            .write_slice(buf, GuestAddress(addr))
            .map_err(|_| DmaError {
                addr,
                len: buf.len(),
            })
    }

    /// QEMU `xhci_dma_read_u32s`: a failed read reads all ones and sets HCE.
    fn read_u32s<const N: usize>(&mut self, addr: u64) -> [u32; N] {
        let mut bytes = vec![0u8; N * 4];
        if let Err(e) = self.dma_read(addr, &mut bytes) {
            log::debug!("{e}");
            self.die();
            return [u32::MAX; N];
        }
        let mut out = [0u32; N];
        for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
            *o = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
        out
    }

    /// QEMU `xhci_dma_write_u32s`: a failed write sets HCE.
    fn write_u32s(&mut self, addr: u64, words: &[u32]) {
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        if let Err(e) = self.dma_write(addr, &bytes) {
            log::debug!("{e}");
            self.die();
        }
    }
}

/// `low | high << 32`.
fn addr64(low: u32, high: u32) -> u64 {
    u64::from(low) | u64::from(high) << 32
}
