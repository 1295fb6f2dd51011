//! Transport tests with a recording fake device, guest memory in an
//! anonymous mapping, a recording MSI sink and INTx line.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use virtio_queue::QueueT;
use vm_memory::{GuestAddress, GuestMemoryMmap};

use super::*;
use crate::pci::capability::{walk, PciCapability, CAP_ID_MSIX};
use crate::pci::msix::tests::Vectors;
use crate::pci::{PciConfigSpace, PciDevice};
use crate::virtio::{ActivateError, ActiveQueue, VirtioDevice, VirtioInterrupt};

const F_VERSION_1: u64 = 1 << 32;
const F_EVENT_IDX: u64 = 1 << 29;
const F_INDIRECT: u64 = 1 << 28;
const F_ACCESS_PLATFORM: u64 = 1 << 33;
const F_BLK_SEG_MAX: u64 = 1 << 2;
const MEM_SIZE: u64 = 0x10_0000;

/// (index, size, descriptor table, driver area, device area) of an active queue.
type QueueSeen = (u16, u16, u64, u64, u64);

#[derive(Default)]
struct Log {
    activated: Vec<(u64, Vec<QueueSeen>)>,
    notified: Vec<u16>,
    resets: usize,
    config_writes: Vec<(u64, Vec<u8>)>,
    /// What the device answers to `needs_reset()` (a corrupt ring).
    broken: bool,
}

struct Fake {
    sizes: Vec<u16>,
    features: u64,
    fail: bool,
    log: Arc<Mutex<Log>>,
    irq: Arc<Mutex<Option<Arc<dyn VirtioInterrupt>>>>,
}

impl VirtioDevice for Fake {
    fn device_type(&self) -> u16 {
        2
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &self.sizes
    }
    fn device_features(&self) -> u64 {
        self.features
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = (offset as u8).wrapping_add(i as u8);
        }
    }
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        self.log
            .lock()
            .unwrap()
            .config_writes
            .push((offset, data.to_vec()));
    }
    fn activate(
        &mut self,
        _mem: GuestMemoryMmap,
        features: u64,
        queues: Vec<ActiveQueue>,
        interrupt: Arc<dyn VirtioInterrupt>,
    ) -> Result<(), ActivateError> {
        if self.fail {
            return Err(ActivateError::Failed("backend gone".into()));
        }
        let qs = queues
            .iter()
            .map(|q| {
                let s = q.queue.state();
                (
                    q.index,
                    q.queue.size(),
                    s.desc_table,
                    s.avail_ring,
                    s.used_ring,
                )
            })
            .collect();
        let event_idx = queues.iter().all(|q| q.queue.event_idx_enabled());
        assert_eq!(event_idx, features & F_EVENT_IDX != 0);
        self.log.lock().unwrap().activated.push((features, qs));
        *self.irq.lock().unwrap() = Some(interrupt);
        Ok(())
    }
    fn queue_notify(&mut self, queue: u16) {
        self.log.lock().unwrap().notified.push(queue);
    }
    fn reset(&mut self) {
        let mut log = self.log.lock().unwrap();
        log.resets += 1;
        log.broken = false;
        *self.irq.lock().unwrap() = None;
    }
    fn needs_reset(&self) -> bool {
        self.log.lock().unwrap().broken
    }
}

#[derive(Default)]
struct Line(AtomicBool);
impl crate::interrupt::IntxLine for Line {
    fn set_level(&self, asserted: bool) {
        self.0.store(asserted, Ordering::SeqCst);
    }
}

struct Rig {
    t: VirtioPciDevice,
    log: Arc<Mutex<Log>>,
    irq: Arc<Mutex<Option<Arc<dyn VirtioInterrupt>>>>,
    msi: Arc<Vectors>,
    line: Arc<Line>,
}

fn rig_with(features: u64, fail: bool) -> Rig {
    let log = Arc::new(Mutex::new(Log::default()));
    let irq = Arc::new(Mutex::new(None));
    let fake = Fake {
        sizes: vec![256, 128],
        features,
        fail,
        log: log.clone(),
        irq: irq.clone(),
    };
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM_SIZE as usize)]).unwrap();
    let msi = Arc::new(Vectors::default());
    let line = Arc::new(Line::default());
    let t = VirtioPciDevice::new(
        Arc::new(Mutex::new(fake)),
        mem,
        3,
        msi.clone(),
        Some(line.clone()),
    )
    .unwrap();
    Rig {
        t,
        log,
        irq,
        msi,
        line,
    }
}

fn rig() -> Rig {
    rig_with(
        F_VERSION_1 | F_EVENT_IDX | F_BLK_SEG_MAX | F_ACCESS_PLATFORM,
        false,
    )
}

fn cfg_byte(t: &mut VirtioPciDevice, off: usize) -> u8 {
    t.read_config(off / 4).to_le_bytes()[off % 4]
}

fn cfg_write(t: &mut VirtioPciDevice, off: usize, bytes: &[u8]) {
    t.write_config(off / 4, (off % 4) as u64, bytes);
}

impl Rig {
    fn r(&mut self, off: u64, len: usize) -> u64 {
        let mut b = [0u8; 8];
        self.t.bar_read(MODERN_BAR, off, &mut b[..len]);
        u64::from_le_bytes(b)
    }
    fn w(&mut self, off: u64, v: u64, len: usize) {
        self.t.bar_write(MODERN_BAR, off, &v.to_le_bytes()[..len]);
    }
    fn status(&mut self) -> u8 {
        self.r(0x14, 1) as u8
    }
    /// What Linux's virtio_pci_modern + virtio core do up to FEATURES_OK.
    fn negotiate(&mut self, accept: u64) -> u64 {
        self.w(0x14, 0, 1);
        self.w(0x14, 1, 1); // ACKNOWLEDGE
        self.w(0x14, 3, 1); // DRIVER
        self.w(0x00, 0, 4);
        let lo = self.r(0x04, 4);
        self.w(0x00, 1, 4);
        let offered = lo | self.r(0x04, 4) << 32;
        self.w(0x08, 0, 4);
        self.w(0x0c, accept & offered & 0xffff_ffff, 4);
        self.w(0x08, 1, 4);
        self.w(0x0c, (accept & offered) >> 32, 4);
        self.w(0x14, 0xb, 1); // FEATURES_OK
        offered
    }
    /// Queue `q` at `base` (descriptors, then driver and device areas).
    fn setup_queue(&mut self, q: u16, size: u16, base: u64, vector: u16) -> u16 {
        self.w(0x16, q.into(), 2);
        self.w(0x18, size.into(), 2);
        self.w(0x20, base, 4);
        self.w(0x24, base >> 32, 4);
        self.w(0x28, base + 0x1000, 4);
        self.w(0x2c, 0, 4);
        self.w(0x30, base + 0x2000, 4);
        self.w(0x34, 0, 4);
        self.w(0x1a, vector.into(), 2);
        let got = self.r(0x1a, 2) as u16;
        self.w(0x1c, 1, 2);
        got
    }
    /// MSI-X on, every vector unmasked with data 0x40 + vector.
    fn enable_msix(&mut self) {
        for v in 0..3u64 {
            let e = v * 16;
            self.t.bar_write(MSIX_BAR, e, &0xfee0_0000u32.to_le_bytes());
            self.t.bar_write(MSIX_BAR, e + 4, &0u32.to_le_bytes());
            self.t
                .bar_write(MSIX_BAR, e + 8, &(0x40 + v as u32).to_le_bytes());
            self.t.bar_write(MSIX_BAR, e + 12, &0u32.to_le_bytes());
        }
        cfg_write(&mut self.t, 0x98 + 2, &0x8000u16.to_le_bytes());
    }
    fn interrupt(&self) -> Arc<dyn VirtioInterrupt> {
        self.irq
            .lock()
            .unwrap()
            .clone()
            .expect("device was activated")
    }
}

#[test]
fn identity_matches_qemu_modern_virtio_blk() {
    let mut r = rig();
    let t = &mut r.t;
    assert_eq!(t.read_config(0), 0x1042_1af4);
    assert_eq!(
        t.read_config(2),
        0x0100_0001,
        "SCSI storage class, revision 1"
    );
    assert_eq!(t.read_config(11), 0x1100_1af4, "QEMU's default subsystem");
    assert_eq!(cfg_byte(t, 0x3d), 1, "INTA#");
    let caps = walk(|o| cfg_byte(t, o));
    let expect = [
        (0x98, CAP_ID_MSIX),
        (0x84, 9),
        (0x70, 9),
        (0x60, 9),
        (0x50, 9),
        (0x40, 9),
    ];
    assert_eq!(
        caps,
        expect
            .map(|(offset, id)| PciCapability { offset, id })
            .to_vec()
    );
    // (cfg_type, bar, offset, length) of each virtio capability.
    let vcap = |t: &mut VirtioPciDevice, o: usize| {
        (
            cfg_byte(t, o + 3),
            cfg_byte(t, o + 4),
            t.read_config((o + 8) / 4),
            t.read_config((o + 12) / 4),
        )
    };
    assert_eq!(vcap(t, 0x40), (1, 4, 0x0000, 0x1000));
    assert_eq!(vcap(t, 0x50), (3, 4, 0x1000, 0x1000));
    assert_eq!(vcap(t, 0x60), (4, 4, 0x2000, 0x1000));
    assert_eq!(vcap(t, 0x70), (2, 4, 0x3000, 0x1000));
    assert_eq!(t.read_config((0x70 + 16) / 4), 4, "notify_off_multiplier");
    assert_eq!(cfg_byte(t, 0x70 + 2), 20, "notify cap_len");
    assert_eq!(
        cfg_byte(t, 0x84 + 3),
        5,
        "PCI configuration access capability"
    );
    assert_eq!(
        u16::from_le_bytes([cfg_byte(t, 0x9a), cfg_byte(t, 0x9b)]),
        2,
        "3 vectors"
    );
    assert_eq!(t.read_config((0x98 + 4) / 4), 0x1, "table in BAR1 at 0");
    assert_eq!(t.read_config((0x98 + 8) / 4), 0x801, "PBA in BAR1 at 0x800");
    // BAR sizes as query-pci reports them.
    let bars: Vec<_> = t.bars().iter().map(|b| (b.index, b.kind, b.size)).collect();
    assert_eq!(
        bars,
        vec![
            (
                1,
                BarKind::Memory32 {
                    prefetchable: false
                },
                0x1000
            ),
            (4, BarKind::Memory64 { prefetchable: true }, 0x4000),
        ]
    );
}

#[test]
fn features_offered_are_filtered_and_version_1_is_required() {
    let mut r = rig();
    let offered = r.negotiate(0);
    assert_eq!(
        offered,
        F_VERSION_1 | F_EVENT_IDX | F_BLK_SEG_MAX,
        "ACCESS_PLATFORM is not the transport's to offer; INDIRECT_DESC not listed by the device"
    );
    assert_eq!(r.status() & 0x8, 0, "FEATURES_OK refused without VERSION_1");
    r.w(0x14, 0, 1);
    r.negotiate(F_VERSION_1 | F_INDIRECT | F_BLK_SEG_MAX);
    assert_eq!(r.status(), 0xb);
    r.w(0x08, 0, 4);
    assert_eq!(r.r(0x0c, 4), F_BLK_SEG_MAX, "driver features read back");
    r.w(0x0c, 0xffff_ffff, 4);
    assert_eq!(r.r(0x0c, 4), F_BLK_SEG_MAX, "frozen after FEATURES_OK");
    r.w(0x00, 7, 4);
    assert_eq!(r.r(0x04, 4), 0, "feature words past 1 are 0");
}

/// The whole Linux bring-up; then the device's interrupts reach the MSI-X
/// vectors the driver chose.
#[test]
fn linux_init_sequence_activates_and_interrupts_via_msix() {
    let mut r = rig();
    assert_eq!(r.r(0x12, 2), 2, "num_queues");
    r.negotiate(F_VERSION_1 | F_EVENT_IDX);
    assert_eq!(r.status(), 0xb);
    r.enable_msix();
    r.w(0x10, 0, 2);
    assert_eq!(r.r(0x10, 2), 0, "config vector 0 accepted");
    r.w(0x16, 1, 2);
    assert_eq!(r.r(0x18, 2), 128, "queue 1 max size");
    assert_eq!(r.r(0x1e, 2), 1, "queue_notify_off");
    assert_eq!(r.setup_queue(0, 256, 0x1_0000, 1), 1);
    assert_eq!(
        r.setup_queue(1, 64, 0x2_0000, 9),
        VIRTIO_MSI_NO_VECTOR,
        "vector 9 does not exist"
    );
    r.w(0x1a, 2, 2); // the vector may still change on an enabled queue (QEMU)
    assert_eq!(r.r(0x1a, 2), 2);
    r.w(0x20, 0xdead_0000, 4);
    assert_eq!(
        r.r(0x20, 8),
        0x2_0000,
        "an enabled queue's addresses are frozen"
    );
    assert!(r.log.lock().unwrap().activated.is_empty());
    r.w(0x14, 0xf, 1); // DRIVER_OK
    assert_eq!(r.status(), 0xf);
    assert!(r.t.is_active());
    assert_eq!(
        r.log.lock().unwrap().activated,
        vec![(
            F_VERSION_1 | F_EVENT_IDX,
            vec![
                (0, 256, 0x1_0000, 0x1_1000, 0x1_2000),
                (1, 64, 0x2_0000, 0x2_1000, 0x2_2000)
            ]
        )]
    );
    r.msi.take_fired();
    let irq = r.interrupt();
    irq.notify_queue(0);
    irq.notify_queue(1);
    let gen = r.r(0x15, 1);
    irq.notify_config();
    assert_eq!(r.msi.take_fired(), vec![1, 2, 0]);
    assert_eq!(
        r.r(0x15, 1),
        gen + 1,
        "config_generation moves on a config change"
    );
    assert!(
        !r.line.0.load(Ordering::SeqCst),
        "no INTx while MSI-X is on"
    );
    assert_eq!(r.r(0x1000, 1), 0, "ISR untouched under MSI-X");
    let routes = r.msi.take_routes();
    assert!(routes.contains(&(
        1,
        Some(crate::interrupt::MsiMessage {
            address: 0xfee0_0000,
            data: 0x41
        })
    )));
}

#[test]
fn intx_and_isr_without_msix() {
    let mut r = rig();
    r.negotiate(F_VERSION_1);
    r.setup_queue(0, 16, 0x4000, 0);
    r.w(0x14, 0xf, 1);
    let irq = r.interrupt();
    irq.notify_queue(0);
    assert!(r.line.0.load(Ordering::SeqCst));
    assert_eq!(r.r(0x1000, 1), 1, "ISR queue bit");
    assert!(!r.line.0.load(Ordering::SeqCst), "reading ISR deasserts");
    assert_eq!(r.r(0x1000, 1), 0, "read clears");
    irq.notify_config();
    assert_eq!(r.r(0x1000, 4), 2, "ISR config bit");
    // INTx disable in the command register masks the line.
    cfg_write(&mut r.t, 0x05, &[0x04]);
    irq.notify_queue(0);
    assert!(!r.line.0.load(Ordering::SeqCst));
    cfg_write(&mut r.t, 0x05, &[0x00]);
    assert!(
        r.line.0.load(Ordering::SeqCst),
        "pending ISR shows once re-enabled"
    );
    assert!(r.msi.take_fired().is_empty());
}

#[test]
fn bad_queue_configuration_needs_reset_instead_of_activating() {
    for (size, base, why) in [
        (3u16, 0x4000u64, "size not a power of two"),
        (512, 0x4000, "size above the maximum"),
        (0, 0x4000, "size 0"),
        (16, 0x4008, "descriptor table not 16-byte aligned"),
        (16, MEM_SIZE - 0x1000, "rings past the end of RAM"),
        (16, 0xffff_ffff_ffff_0000, "far outside RAM"),
    ] {
        let mut r = rig();
        r.negotiate(F_VERSION_1);
        r.setup_queue(0, size, base, 0);
        r.w(0x14, 0xf, 1);
        assert_eq!(r.status(), 0x4f, "{why}: DEVICE_NEEDS_RESET");
        assert!(!r.t.is_active(), "{why}");
        assert!(r.log.lock().unwrap().activated.is_empty(), "{why}");
        assert_eq!(r.r(0x1000, 1), 2, "{why}: configuration interrupt");
        r.w(0x14, 0xf, 1);
        assert!(!r.t.is_active(), "{why}: no retry until reset");
    }
    let mut r = rig_with(F_VERSION_1, true);
    r.negotiate(F_VERSION_1);
    r.w(0x14, 0xf, 1);
    assert_eq!(
        r.status() & 0x40,
        0x40,
        "the device refusing also needs reset"
    );
}

#[test]
fn driver_ok_without_features_ok_is_refused() {
    let mut r = rig();
    r.w(0x14, 0x7, 1);
    assert_eq!(r.status() & 0x40, 0x40);
    assert!(!r.t.is_active());
}

#[test]
fn notify_region_and_kicks_reach_the_device_only_when_active() {
    let mut r = rig();
    r.w(0x3000, 0, 2);
    r.t.handle_kick(0);
    assert!(r.log.lock().unwrap().notified.is_empty(), "not active yet");
    r.negotiate(F_VERSION_1);
    r.setup_queue(1, 16, 0x8000, 0);
    r.w(0x14, 0xf, 1);
    r.w(0x3004, 1, 2);
    r.w(0x3000, 0xffff_ffff, 4);
    r.w(0x3008, 2, 2); // queue 2 does not exist
    r.w(0x3ffc, 0, 4);
    let ev = r.t.ioevents();
    let spec: Vec<_> = ev.iter().map(|e| (e.queue, e.bar, e.offset)).collect();
    assert_eq!(spec, vec![(0, 4, 0x3000), (1, 4, 0x3004)]);
    ev[1].eventfd.write(1).unwrap();
    r.t.handle_kick(1);
    r.t.handle_kick(7);
    assert_eq!(r.log.lock().unwrap().notified, vec![1, 0, 1]);
    assert_eq!(
        ev[1].eventfd.read().ok(),
        None,
        "handle_kick drained the eventfd"
    );
}

#[test]
fn a_device_that_found_its_ring_corrupt_shows_needs_reset_until_reset() {
    let mut r = rig();
    r.negotiate(F_VERSION_1);
    r.setup_queue(0, 16, 0x4000, 0);
    r.w(0x14, 0xf, 1);
    assert_eq!(r.status(), 0x0f);
    r.log.lock().unwrap().broken = true;
    assert_eq!(
        r.status(),
        0x4f,
        "DEVICE_NEEDS_RESET joins the driver's bits"
    );
    r.w(0x14, 0, 1);
    assert_eq!(r.status(), 0, "a reset clears it");
}

#[test]
fn status_zero_resets_device_and_transport() {
    let mut r = rig();
    r.negotiate(F_VERSION_1);
    r.enable_msix();
    r.setup_queue(0, 16, 0x4000, 1);
    r.w(0x10, 2, 2);
    r.w(0x14, 0xf, 1);
    let before = r.log.lock().unwrap().resets;
    r.w(0x14, 0, 1);
    assert_eq!(r.log.lock().unwrap().resets, before + 1);
    assert_eq!(r.status(), 0);
    assert!(!r.t.is_active());
    r.w(0x16, 0, 2);
    assert_eq!(r.r(0x18, 2), 256, "size back to max");
    assert_eq!(r.r(0x1c, 2), 0, "disabled");
    assert_eq!(r.r(0x20, 8), 0);
    assert_eq!(r.r(0x1a, 2), 0xffff);
    assert_eq!(r.r(0x10, 2), 0xffff);
    r.w(0x08, 0, 4);
    assert_eq!(r.r(0x0c, 4), 0);
    assert_eq!(
        cfg_byte(&mut r.t, 0x9b) & 0x80,
        0x80,
        "MSI-X enable survives a device reset"
    );
    // Machine reset also resets the function.
    r.t.reset();
    assert_eq!(cfg_byte(&mut r.t, 0x9b) & 0x80, 0);
    assert_eq!(r.log.lock().unwrap().resets, before + 2);
}

#[test]
fn device_config_region_and_pci_cfg_window() {
    let mut r = rig();
    assert_eq!(r.r(0x2004, 4), 0x0706_0504, "device config at 0x2000");
    r.w(0x2010, 0xab, 1);
    assert_eq!(
        r.log.lock().unwrap().config_writes,
        vec![(0x10, vec![0xab])]
    );
    // VIRTIO_PCI_CAP_PCI_CFG: read num_queues through configuration space.
    cfg_write(&mut r.t, 0x84 + 4, &[4]);
    cfg_write(&mut r.t, 0x84 + 8, &0x12u32.to_le_bytes());
    cfg_write(&mut r.t, 0x84 + 12, &2u32.to_le_bytes());
    assert_eq!(r.t.read_config((0x84 + 16) / 4), 2);
    // ... and write queue_select through it.
    cfg_write(&mut r.t, 0x84 + 8, &0x16u32.to_le_bytes());
    cfg_write(&mut r.t, 0x84 + 16, &1u32.to_le_bytes());
    assert_eq!(r.r(0x16, 2), 1);
    cfg_write(&mut r.t, 0x84 + 4, &[2]);
    assert_eq!(
        r.t.read_config((0x84 + 16) / 4),
        1,
        "a window on another BAR reads the stored data"
    );
}

#[test]
fn survives_any_register_access() {
    let mut r = rig();
    r.negotiate(F_VERSION_1 | F_EVENT_IDX);
    r.enable_msix();
    r.setup_queue(0, 16, 0x4000, 0);
    r.w(0x14, 0xf, 1);
    let values = [0u64, u64::MAX, 0x5555_5555_5555_5555, 0x8000_0000_0001];
    for bar in [0u8, 1, 4, 6] {
        for off in (0..0x4010u64).step_by(3).chain([u64::MAX - 3, 1 << 40]) {
            for len in [1usize, 2, 3, 4, 8] {
                for v in values {
                    let mut b = [0u8; 8];
                    r.t.bar_read(bar, off, &mut b[..len]);
                    r.t.bar_write(bar, off, &v.to_le_bytes()[..len]);
                }
            }
        }
    }
    for reg in 0..1100 {
        for (off, len) in [(0u64, 4usize), (1, 2), (3, 1), (2, 2)] {
            r.t.read_config(reg);
            r.t.write_config(reg, off, &[0xff; 4][..len]);
        }
    }
    r.t.reset();
    let _ = PciConfigSpace::new(0, 0, 0, 0);
}

/// On bus 0 like `-device virtio-blk-pci,id=vb0,disable-legacy=on`: what
/// QEMU 7.2's query-pci reports for it (q35, before firmware), then BAR
/// assignment makes its registers reachable through the MMIO bus.
#[test]
fn on_the_root_bus_like_qemu() {
    use crate::bus::Bus;
    use crate::pci::{FunctionOptions, PciAddress, PciRegionInfo, PciRoot, PciWindows};
    let r = rig();
    let mmio = Arc::new(Bus::new());
    let mut root = PciRoot::with_buses(Arc::new(Bus::new()), mmio.clone());
    let t = Arc::new(Mutex::new(r.t));
    let opts = FunctionOptions {
        driver: "virtio-blk-pci".into(),
        id: "vb0".into(),
        multifunction: false,
    };
    assert_eq!(
        root.add_function(None, t.clone(), opts),
        Ok(PciAddress::new(0, 1, 0))
    );
    let info = root.function_info(PciAddress::new(0, 1, 0)).unwrap();
    assert_eq!(
        (info.class_info.class, info.class_info.desc),
        (0x0100, Some("SCSI controller"))
    );
    assert_eq!((info.id.vendor, info.id.device), (0x1af4, 0x1042));
    assert_eq!(
        (info.id.subsystem_vendor, info.id.subsystem),
        (Some(0x1af4), Some(0x1100))
    );
    assert_eq!((info.irq_pin, info.irq), (1, Some(0)));
    assert_eq!(info.qdev_id, "vb0");
    assert_eq!(
        info.regions,
        vec![
            PciRegionInfo {
                bar: 1,
                kind: BarKind::Memory32 {
                    prefetchable: false
                },
                address: None,
                size: 4096
            },
            PciRegionInfo {
                bar: 4,
                kind: BarKind::Memory64 { prefetchable: true },
                address: None,
                size: 16384
            },
        ]
    );
    assert_eq!(info.regions[1].type_name(), "memory");
    assert_eq!(info.regions[1].mem_type_64(), Some(true));

    root.assign_bars(&PciWindows {
        io: PciWindows::IO_DEFAULT,
        mmio32: (0xc000_0000, 0xe000_0000),
        mmio64: None,
    })
    .unwrap();
    let info = root.function_info(PciAddress::new(0, 1, 0)).unwrap();
    let addrs: Vec<_> = info.regions.iter().map(|r| r.address).collect();
    assert_eq!(
        addrs,
        vec![Some(0xc000_4000), Some(0xc000_0000)],
        "largest first, aligned"
    );
    let mut b = [0u8; 2];
    assert!(mmio.read(0xc000_0012, &mut b));
    assert_eq!(u16::from_le_bytes(b), 2, "num_queues through the bus");
    let mut b = [0u8; 4];
    assert!(mmio.read(0xc000_400c, &mut b));
    assert_eq!(
        u32::from_le_bytes(b),
        1,
        "MSI-X vector 0 masked, through BAR1"
    );
}
