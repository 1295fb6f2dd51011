//! The controller as a driver sees it, with guest RAM in anonymous memory.
//! Expected values come from the xHCI 1.2 specification and QEMU 7.2's
//! hcd-xhci.c (what its registers read on a qemu-xhci with defaults).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::event::cc;
use super::ring::{trb_type as t, Trb, TRB_C, TRB_LK_TC, TRB_TYPE_SHIFT};
use super::*;
use crate::interrupt::{IntxLine, MsiMessage, MsiVectors};
use crate::pci::PciDevice;
use crate::ManualClock;

const RAM: u64 = 0x10_0000;
const DCBAA: u64 = 0x1_0000;
const CMD_RING: u64 = 0x2_0000;
const ERST: u64 = 0x3_0000;
const EV_RING: u64 = 0x4_0000;

const USBCMD: u64 = 0x40;
const USBSTS: u64 = 0x44;
const CRCR: u64 = 0x58;
const DCBAAP: u64 = 0x70;
const CONFIG: u64 = 0x78;
const IMAN: u64 = 0x1020;
const ERSTSZ: u64 = 0x1028;
const ERSTBA: u64 = 0x1030;
const ERDP: u64 = 0x1038;
const DOORBELL: u64 = 0x2000;

fn portsc_off(n: u64) -> u64 {
    0x440 + 0x10 * n
}

#[derive(Default)]
struct Vectors {
    fired: Mutex<Vec<u16>>,
    routes: Mutex<Vec<(u16, Option<MsiMessage>)>>,
}

impl MsiVectors for Vectors {
    fn set_route(&self, v: u16, msg: Option<MsiMessage>) {
        self.routes.lock().unwrap().push((v, msg));
    }
    fn trigger(&self, v: u16) {
        self.fired.lock().unwrap().push(v);
    }
}

#[derive(Default)]
struct Line(AtomicBool);

impl IntxLine for Line {
    fn set_level(&self, asserted: bool) {
        self.0.store(asserted, Ordering::SeqCst);
    }
}

struct Rig {
    dev: XhciPci,
    mem: GuestMemoryMmap,
    msi: Arc<Vectors>,
    intx: Arc<Line>,
    clock: ManualClock,
}

fn rig_with(cfg: XhciConfig) -> Rig {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), RAM as usize)]).unwrap();
    let msi = Arc::new(Vectors::default());
    let intx = Arc::new(Line::default());
    let clock = ManualClock::new(0);
    let dev = XhciPci::new(
        cfg,
        mem.clone(),
        Box::new(clock.clone()),
        msi.clone(),
        Some(intx.clone()),
    )
    .unwrap();
    Rig {
        dev,
        mem,
        msi,
        intx,
        clock,
    }
}

fn rig() -> Rig {
    rig_with(XhciConfig::default())
}

impl Rig {
    fn r32(&mut self, off: u64) -> u32 {
        let mut b = [0u8; 4];
        self.dev.bar_read(0, off, &mut b);
        u32::from_le_bytes(b)
    }
    fn w32(&mut self, off: u64, v: u32) {
        self.dev.bar_write(0, off, &v.to_le_bytes());
    }
    fn w64(&mut self, off: u64, v: u64) {
        self.dev.bar_write(0, off, &v.to_le_bytes());
    }
    fn put_trb(&self, addr: u64, trb: Trb) {
        self.mem
            .write_slice(&trb.to_bytes(), GuestAddress(addr))
            .unwrap();
    }
    /// Command `i` of the ring at [`CMD_RING`] with cycle bit `cycle`.
    fn cmd(&self, i: u64, ty: u32, control: u32, parameter: u64, cycle: bool) {
        let c = control | ty << TRB_TYPE_SHIFT | u32::from(cycle);
        self.put_trb(
            CMD_RING + 16 * i,
            Trb {
                parameter,
                status: 0,
                control: c,
            },
        );
    }
    fn event(&self, i: u64) -> Trb {
        let mut b = [0u8; 16];
        self.mem
            .read_slice(&mut b, GuestAddress(EV_RING + 16 * i))
            .unwrap();
        Trb::from_bytes(&b)
    }
    /// What a driver does before it runs the controller (xHCI §4.2): reset,
    /// DCBAAP, CRCR with RCS, one event ring segment of `er_size` TRBs,
    /// interrupter 0 enabled, then Run/Stop and INTE.
    fn start(&mut self, er_size: u32) {
        self.w32(USBCMD, USBCMD_HCRST);
        self.w64(DCBAAP, DCBAA);
        self.w64(CRCR, CMD_RING | 1);
        let mut seg = [0u8; 16];
        seg[..8].copy_from_slice(&EV_RING.to_le_bytes());
        seg[8..12].copy_from_slice(&er_size.to_le_bytes());
        self.mem.write_slice(&seg, GuestAddress(ERST)).unwrap();
        self.w32(ERSTSZ, 1);
        self.w64(ERDP, EV_RING);
        self.w64(ERSTBA, ERST);
        self.w32(IMAN, 2);
        self.w32(USBCMD, USBCMD_RS | USBCMD_INTE);
    }
    fn doorbell(&mut self) {
        self.w32(DOORBELL, 0);
    }
    /// The event handler consumed events up to `idx` (clears EHB).
    fn consume(&mut self, idx: u64) {
        self.w64(
            ERDP,
            (EV_RING + 16 * idx) | u64::from(super::event::ERDP_EHB),
        );
    }
}

/// (type, completion code, slot id, cycle, parameter) of an event TRB.
fn ev(trb: Trb) -> (u32, u32, u32, bool, u64) {
    (
        trb.trb_type(),
        trb.status >> 24,
        trb.control >> 24,
        trb.control & TRB_C != 0,
        trb.parameter,
    )
}

#[test]
fn capability_registers_are_qemus() {
    let mut r = rig();
    // CAPLENGTH 0x40, HCIVERSION 1.0.
    assert_eq!(r.r32(0x00), 0x0100_0040);
    // 8 ports, 16 interrupters, 64 slots.
    assert_eq!(r.r32(0x04), 0x0800_1040);
    assert_eq!(r.r32(0x08), 0xf);
    assert_eq!(r.r32(0x0c), 0);
    // AC64, MaxPSASize 7, xECP 0x20 (dword 8).
    assert_eq!(r.r32(0x10), 0x0008_7001);
    assert_eq!((r.r32(0x14), r.r32(0x18)), (0x2000, 0x1000));
    // USB 2.0 on ports 5-8, USB 3.0 on ports 1-4 ("USB " is 0x20425355).
    assert_eq!(
        [r.r32(0x20), r.r32(0x24), r.r32(0x28)],
        [0x0200_0402, 0x2042_5355, 0x0405]
    );
    assert_eq!(
        [r.r32(0x30), r.r32(0x34), r.r32(0x38)],
        [0x0300_0002, 0x2042_5355, 0x0401]
    );
    let mut b = [0u8; 1];
    r.dev.bar_read(0, 0, &mut b);
    assert_eq!(b, [0x40], "a byte read of CAPLENGTH");
    let mut r = rig_with(XhciConfig {
        p2: 2,
        p3: 20,
        streams: false,
        ..XhciConfig::default()
    });
    assert_eq!(r.r32(0x04) >> 24, 17, "p3 is clamped to 15");
    assert_eq!(r.r32(0x10), 0x0008_0001, "streams=off");
    assert_eq!((r.r32(0x28), r.r32(0x38)), (0x0210, 0x0f01));
}

#[test]
fn operational_and_port_registers_after_reset() {
    let mut r = rig();
    assert_eq!(r.r32(USBCMD), 0);
    assert_eq!(r.r32(USBSTS), USBSTS_HCH, "halted, CNR clear");
    assert_eq!(r.r32(0x48), 1, "PAGESIZE 4 KiB");
    for p in 0..8 {
        // No device: CCS 0, PP 1, link RxDetect, connect status change.
        assert_eq!(r.r32(portsc_off(p)), 0x0002_02a0, "port {p}");
    }
    assert_eq!(r.r32(portsc_off(8)), 0, "past the last port");
    r.w32(portsc_off(0), regs::PORTSC_CSC | regs::PORTSC_PP);
    assert_eq!(r.r32(portsc_off(0)), 0x2a0, "CSC is write-1-to-clear");
    r.w32(portsc_off(1), 0);
    assert_eq!(r.r32(portsc_off(1)), 0x0002_00a0, "PP is read/write");
    r.w32(portsc_off(2), regs::PORTSC_PR);
    assert_eq!(
        r.r32(portsc_off(2)),
        0x0002_02a0,
        "no device: reset does nothing"
    );
    r.w64(DCBAAP, 0x1234_5678_9abc_deff);
    assert_eq!(
        (r.r32(DCBAAP), r.r32(DCBAAP + 4)),
        (0x9abc_dec0, 0x1234_5678)
    );
    r.w32(CONFIG, 0x1ff);
    assert_eq!(r.r32(CONFIG), 0xff);
    r.w32(0x54, 0xffff_ffff);
    assert_eq!(r.r32(0x54), 0xffff, "DNCTRL");
    r.w32(USBCMD, USBCMD_HCRST);
    assert_eq!(
        (
            r.r32(DCBAAP),
            r.r32(CONFIG),
            r.r32(0x54),
            r.r32(portsc_off(0))
        ),
        (0, 0, 0, 0x0002_02a0),
        "HCRST clears everything"
    );
    let mut two = [0u8; 2];
    r.dev.bar_read(0, USBSTS, &mut two);
    assert_eq!(two, [0, 0], "operational registers take 4 or 8 bytes");
}

#[test]
fn mfindex_counts_microframes_while_running() {
    let mut r = rig();
    r.start(16);
    r.clock.advance_ns(125_000 * 10 + 1);
    assert_eq!(r.r32(0x1000), 10);
    r.clock.advance_ns(125_000 * 0x4000);
    assert_eq!(r.r32(0x1000), 10, "14 bits wrap");
}

#[test]
fn noop_and_enable_slot_complete_on_the_event_ring() {
    let mut r = rig();
    r.start(256);
    r.cmd(0, t::NOOP_COMMAND, 0, 0, true);
    r.doorbell();
    assert_eq!(
        ev(r.event(0)),
        (t::COMMAND_COMPLETION, cc::SUCCESS, 0, true, CMD_RING)
    );
    assert_ne!(r.r32(USBSTS) & USBSTS_EINT, 0);
    assert_eq!(r.r32(ERDP) & super::event::ERDP_EHB, 8, "EHB set");
    r.consume(1);
    for i in 1..=65 {
        r.cmd(i, t::ENABLE_SLOT, 0, 0, true);
    }
    r.cmd(66, t::NOOP_COMMAND, 0, 0, true);
    r.doorbell();
    assert_eq!(ev(r.event(1)).2, 1, "first free slot");
    assert_eq!(
        ev(r.event(64)),
        (
            t::COMMAND_COMPLETION,
            cc::SUCCESS,
            64,
            true,
            CMD_RING + 16 * 64
        )
    );
    let out = ev(r.event(65));
    assert_eq!(
        (out.1, out.2),
        (cc::NO_SLOTS_ERROR, 64),
        "slots run out (QEMU keeps the last slot id)"
    );
    assert_eq!(ev(r.event(66)).1, cc::SUCCESS);
    assert_eq!(r.event(67), Trb::default(), "nothing more");
    // Disable Slot frees slot 3, Enable Slot takes it again.
    r.consume(67);
    r.cmd(67, t::DISABLE_SLOT, 3 << 24, 0, true);
    r.cmd(68, t::ENABLE_SLOT, 0, 0, true);
    r.cmd(69, t::DISABLE_SLOT, 0, 0, true);
    r.doorbell();
    assert_eq!((ev(r.event(67)).1, ev(r.event(67)).2), (cc::SUCCESS, 3));
    assert_eq!((ev(r.event(68)).1, ev(r.event(68)).2), (cc::SUCCESS, 3));
    assert_eq!(ev(r.event(69)).1, cc::TRB_ERROR, "slot id 0");
}

#[test]
fn slot_commands_without_a_device_get_qemus_codes() {
    let mut r = rig();
    r.start(64);
    let ictx = 0x5_0000;
    // Input control context: add slot and ep0 (drop 0, add 3).
    r.mem.write_obj(0u32, GuestAddress(ictx)).unwrap();
    r.mem.write_obj(3u32, GuestAddress(ictx + 4)).unwrap();
    // Slot context: root hub port 1.
    r.mem
        .write_obj(1u32 << 16, GuestAddress(ictx + 32 + 4))
        .unwrap();
    r.cmd(0, t::ADDRESS_DEVICE, 1 << 24, ictx, true);
    r.cmd(1, t::ENABLE_SLOT, 0, 0, true);
    r.cmd(2, t::ADDRESS_DEVICE, 1 << 24, ictx, true);
    r.cmd(3, t::STOP_ENDPOINT, 1 << 24 | 1 << 16, 0, true);
    r.cmd(4, t::RESET_ENDPOINT, 1 << 24, 0, true);
    r.cmd(5, t::SET_TR_DEQUEUE, 1 << 24 | 2 << 16, 0, true);
    r.cmd(6, t::CONFIGURE_ENDPOINT, 1 << 24, ictx, true);
    r.cmd(7, t::GET_PORT_BANDWIDTH, 0, 0x6_0000, true);
    r.cmd(8, 50, 0, 0, true); // NEC vendor command: not qemu-xhci's
    r.cmd(9, t::ADDRESS_DEVICE, 1 << 24, RAM + 0x1000, true);
    r.doorbell();
    let codes: Vec<(u32, u32)> = (0..10)
        .map(|i| (ev(r.event(i)).1, ev(r.event(i)).2))
        .collect();
    assert_eq!(
        codes,
        vec![
            (cc::SLOT_NOT_ENABLED_ERROR, 0),
            (cc::SUCCESS, 1),
            (cc::TRB_ERROR, 1), // no device behind port 1
            (cc::EP_NOT_ENABLED_ERROR, 1),
            (cc::TRB_ERROR, 1), // endpoint id 0
            (cc::EP_NOT_ENABLED_ERROR, 1),
            (cc::TRB_ERROR, 1), // input control context must add only the slot
            (cc::SUCCESS, 1),
            (cc::TRB_ERROR, 1),
            (cc::TRB_ERROR, 1),
        ]
    );
    let mut bw = [0u8; 10];
    r.mem.read_slice(&mut bw, GuestAddress(0x6_0000)).unwrap();
    assert_eq!(bw, [0, 80, 80, 80, 80, 80, 80, 80, 80, 0], "port bandwidth");
    assert_ne!(
        r.r32(USBSTS) & USBSTS_HCE,
        0,
        "the unreadable input context"
    );
}

#[test]
fn link_trb_with_toggle_cycle_wraps_the_command_ring() {
    let mut r = rig();
    r.start(64);
    r.cmd(0, t::NOOP_COMMAND, 0, 0, true);
    r.cmd(1, t::NOOP_COMMAND, 0, 0, true);
    r.cmd(2, t::LINK, TRB_LK_TC, CMD_RING, true);
    r.doorbell();
    assert_eq!(ev(r.event(1)).4, CMD_RING + 16);
    assert_eq!(r.event(2), Trb::default(), "the link TRB has no completion");
    // After the toggle the ring's cycle state is 0: old TRBs (cycle 1) are
    // not the guest's new ones.
    r.doorbell();
    assert_eq!(r.event(2), Trb::default(), "stale TRBs are not run again");
    r.cmd(0, t::ENABLE_SLOT, 0, 0, false);
    r.doorbell();
    assert_eq!(
        ev(r.event(2)),
        (t::COMMAND_COMPLETION, cc::SUCCESS, 1, true, CMD_RING)
    );
    // A link to itself is given up after 32 hops, without hanging.
    r.cmd(1, t::LINK, 0, CMD_RING + 16, false);
    r.doorbell();
    assert_eq!(r.event(3), Trb::default());
}

#[test]
fn event_ring_wraps_with_the_cycle_bit_and_reports_full() {
    let mut r = rig();
    r.start(16);
    for i in 0..14 {
        r.cmd(i, t::NOOP_COMMAND, 0, 0, true);
    }
    r.doorbell();
    // The handler has consumed nothing: entry 14 is the last one before
    // the dequeue pointer would be overrun.
    r.cmd(14, t::NOOP_COMMAND, 0, 0, true);
    r.cmd(15, t::NOOP_COMMAND, 0, 0, true);
    r.doorbell();
    assert_eq!(ev(r.event(13)).1, cc::SUCCESS);
    assert_eq!(
        ev(r.event(14)),
        (t::HOST_CONTROLLER, cc::EVENT_RING_FULL_ERROR, 0, true, 0),
        "Event Ring Full Error"
    );
    assert_eq!(r.event(15), Trb::default(), "then events are dropped");
    // Consume everything: the next events wrap to entry 15, then 0 with cycle 0.
    r.consume(15);
    r.cmd(16, t::NOOP_COMMAND, 0, 0, true);
    r.cmd(17, t::NOOP_COMMAND, 0, 0, true);
    r.doorbell();
    assert_eq!(
        ev(r.event(15)),
        (
            t::COMMAND_COMPLETION,
            cc::SUCCESS,
            0,
            true,
            CMD_RING + 16 * 16
        )
    );
    assert_eq!(
        ev(r.event(0)),
        (
            t::COMMAND_COMPLETION,
            cc::SUCCESS,
            0,
            false,
            CMD_RING + 16 * 17
        )
    );
}

#[test]
fn interrupts_follow_inte_iman_and_ehb() {
    let mut r = rig();
    r.start(64);
    // MSI-X off: interrupter 0 drives INTx.
    r.cmd(0, t::NOOP_COMMAND, 0, 0, true);
    r.doorbell();
    assert!(r.intx.0.load(Ordering::SeqCst), "INTx asserted");
    assert_eq!(r.r32(IMAN), 3, "IP and IE");
    r.w32(IMAN, 3);
    assert!(
        !r.intx.0.load(Ordering::SeqCst),
        "IP written 1 drops the line"
    );
    // EHB still set: another event sets IP but raises nothing.
    r.cmd(1, t::NOOP_COMMAND, 0, 0, true);
    r.doorbell();
    assert!(!r.intx.0.load(Ordering::SeqCst));
    assert_eq!(r.r32(IMAN) & 1, 1);
    // Clearing EHB with events left unconsumed raises again.
    r.w32(IMAN, 3);
    r.consume(1);
    assert!(r.intx.0.load(Ordering::SeqCst), "event 1 still pending");
    r.w32(IMAN, 3);
    r.consume(2);
    // INTE off: nothing raised.
    r.w32(USBCMD, USBCMD_RS);
    r.cmd(2, t::NOOP_COMMAND, 0, 0, true);
    r.doorbell();
    assert!(!r.intx.0.load(Ordering::SeqCst));
    r.w32(USBCMD, USBCMD_RS | USBCMD_INTE);
    assert!(
        r.intx.0.load(Ordering::SeqCst),
        "INTE on with IP pending asserts"
    );
    // INTx disable in the command register masks the line.
    r.dev.write_config(1, 0, &(1u16 << 10 | 2).to_le_bytes());
    assert!(!r.intx.0.load(Ordering::SeqCst));
}

#[test]
fn msix_vector_0_signals_interrupter_0() {
    let mut r = rig();
    // Vector 0 at 0xfee00000 data 0x31, unmasked; MSI-X enable.
    r.w64(pci::OFF_MSIX_TABLE, 0xfee0_0000);
    r.w32(pci::OFF_MSIX_TABLE + 8, 0x31);
    r.w32(pci::OFF_MSIX_TABLE + 12, 0);
    r.dev.write_config(0x90 / 4, 2, &0x8000u16.to_le_bytes());
    r.start(64);
    r.cmd(0, t::NOOP_COMMAND, 0, 0, true);
    r.doorbell();
    assert_eq!(*r.msi.fired.lock().unwrap(), vec![0]);
    assert_eq!(r.r32(IMAN), 2, "a message clears IP");
    assert!(!r.intx.0.load(Ordering::SeqCst));
    assert!(r.msi.routes.lock().unwrap().contains(&(
        0,
        Some(MsiMessage {
            address: 0xfee0_0000,
            data: 0x31
        })
    )));
    // IMAN.IE off: nothing.
    r.w32(IMAN, 0);
    r.consume(1);
    r.cmd(1, t::NOOP_COMMAND, 0, 0, true);
    r.doorbell();
    assert_eq!(r.msi.fired.lock().unwrap().len(), 1);
    r.dev.reset();
    assert_eq!(
        r.dev.read_config(0x90 / 4) >> 16,
        0x000f,
        "MSI-X disabled by reset"
    );
    assert_eq!(r.r32(USBSTS), USBSTS_HCH);
}

#[test]
fn config_space_is_qemus() {
    let mut r = rig();
    // Read from QEMU 7.2 (`-M q35 -device qemu-xhci`, `xp` of its ECAM
    // window) with the BAR, command register and interrupt line cleared.
    let qemu: [(usize, u32); 15] = [
        (0x00, 0x000d_1b36),
        (0x04, 0x0010_0000),
        (0x08, 0x0c03_3001),
        (0x10, 0x0000_0004),
        (0x2c, 0x1100_1af4),
        (0x34, 0x0000_0090),
        (0x3c, 0x0000_0100),
        (0x60, 0x0000_0030),
        (0x90, 0x000f_a011),
        (0x94, 0x0000_3000),
        (0x98, 0x0000_3800),
        (0xa0, 0x0092_0010),
        (0xa4, 0x0000_8000),
        (0xac, 0x0000_0411),
        (0xc4, 0x0030_0000),
    ];
    for (off, want) in qemu {
        assert_eq!(r.dev.read_config(off / 4), want, "config {off:#x}");
    }
    assert_eq!(
        r.dev.read_config(0xb0 / 4),
        0x0011_0000,
        "LNKSTA x1 2.5GT/s"
    );
    let bars = r.dev.bars();
    assert_eq!((bars.len(), bars[0].size), (1, 0x4000));
    assert!(bars[0].kind.is_64bit() && !bars[0].kind.prefetchable());
}

#[test]
fn bad_guest_addresses_and_garbage_never_panic() {
    let mut r = rig();
    // An event ring segment table outside RAM: controller error.
    r.w32(ERSTSZ, 1);
    r.w64(ERSTBA, RAM + 0x40);
    assert_ne!(r.r32(USBSTS) & USBSTS_HCE, 0);
    // A command ring and an event ring at the very top of the address space.
    r.start(16);
    r.w64(CRCR, 0xffff_ffff_ffff_ffc1);
    r.doorbell();
    r.w64(CRCR, CMD_RING | 1);
    let mut seg = [0u8; 16];
    seg[..8].copy_from_slice(&0xffff_ffff_ffff_ff00u64.to_le_bytes());
    seg[8..12].copy_from_slice(&16u32.to_le_bytes());
    r.mem.write_slice(&seg, GuestAddress(ERST)).unwrap();
    r.w64(ERDP, 0xffff_ffff_ffff_ff00);
    r.w64(ERSTBA, ERST);
    // Every TRB type with garbage fields, then every register.
    for i in 0..64u64 {
        let x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        r.put_trb(
            CMD_RING + 16 * i,
            Trb {
                parameter: x,
                status: x as u32,
                control: ((x >> 32) as u32 & !0xfc01) | (i as u32) << TRB_TYPE_SHIFT | 1,
            },
        );
    }
    r.doorbell();
    let mut bus = Bus(&mut r.dev);
    crate::testutil::hammer(&mut bus, XHCI_LEN_REGS);
}

/// BAR0 as a bus device, for the hammer.
struct Bus<'a>(&'a mut XhciPci);

impl crate::bus::BusDevice for Bus<'_> {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        self.0.bar_read(0, offset, data);
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        self.0.bar_write(0, offset, data);
    }
}

#[test]
fn machine_reset_returns_a_running_controller_to_power_on() {
    let mut r = rig();
    r.start(64);
    r.cmd(0, t::ENABLE_SLOT, 0, 0, true);
    r.cmd(1, t::ENABLE_SLOT, 0, 0, true);
    r.doorbell();
    r.w32(portsc_off(0), regs::PORTSC_CSC | regs::PORTSC_PP);
    assert!(r.intx.0.load(Ordering::SeqCst));
    r.dev.reset();
    assert!(!r.intx.0.load(Ordering::SeqCst), "the line drops");
    assert_eq!(
        (r.r32(USBCMD), r.r32(USBSTS), r.r32(CRCR), r.r32(DCBAAP)),
        (0, USBSTS_HCH, 0, 0)
    );
    assert_eq!((r.r32(IMAN), r.r32(ERSTSZ), r.r32(ERDP)), (0, 0, 0));
    assert_eq!(r.r32(portsc_off(0)), 0x0002_02a0, "CSC again");
    // Every slot is free again: the first Enable Slot gets slot 1.
    r.mem
        .write_slice(&[0u8; 0x100], GuestAddress(CMD_RING))
        .unwrap();
    r.mem
        .write_slice(&[0u8; 0x100], GuestAddress(EV_RING))
        .unwrap();
    r.start(64);
    r.cmd(0, t::ENABLE_SLOT, 0, 0, true);
    r.doorbell();
    assert_eq!((ev(r.event(0)).1, ev(r.event(0)).2), (cc::SUCCESS, 1));
}

#[test]
fn command_ring_stop_reports_command_ring_stopped() {
    let mut r = rig();
    r.start(64);
    r.cmd(0, t::NOOP_COMMAND, 0, 0, true);
    r.doorbell();
    // CRCR.CS with the ring running (QEMU: CRR set by the doorbell).
    r.w64(CRCR, 1 << 1);
    assert_eq!(
        ev(r.event(1)),
        (t::COMMAND_COMPLETION, cc::COMMAND_RING_STOPPED, 0, true, 0)
    );
    // Stopped: the next CRCR write sets a new ring.
    r.w64(CRCR, (CMD_RING + 0x400) | 1);
    r.cmd(0x40, t::NOOP_COMMAND, 0, 0, true);
    r.doorbell();
    assert_eq!(ev(r.event(2)).4, CMD_RING + 0x400);
}

#[test]
fn doorbells_are_ignored_while_halted() {
    let mut r = rig();
    r.start(64);
    r.w32(USBCMD, 0);
    assert_eq!(r.r32(USBSTS) & USBSTS_HCH, USBSTS_HCH);
    r.cmd(0, t::NOOP_COMMAND, 0, 0, true);
    r.doorbell();
    assert_eq!(r.event(0), Trb::default());
    r.w32(USBCMD, USBCMD_RS | USBCMD_INTE);
    r.doorbell();
    assert_eq!(ev(r.event(0)).1, cc::SUCCESS);
}
