//! The root complex with bridges: configuration routing by bus number, BAR
//! gating by bridge windows, secondary bus reset, INTx swizzling and the
//! firmware-like enumeration (checked against what SeaBIOS programs under
//! QEMU 7.2 for libvirt's q35 layout).

use std::sync::{Arc, Mutex};

use super::bar::BarKind;
use super::root::{BarObserver, FunctionOptions, PciRoot, SecondaryBus};
use super::*;
use crate::bus::Bus;

fn opts(driver: &str, id: &str, multifunction: bool) -> FunctionOptions {
    FunctionOptions {
        driver: driver.into(),
        id: id.into(),
        multifunction,
    }
}

/// An endpoint with one BAR of `kind` and `size`, echoing 0x5a on reads.
struct Endpoint {
    config: PciConfigSpace,
}

impl Endpoint {
    fn shared(kind: BarKind, size: u64) -> SharedPciDevice {
        let mut config = PciConfigSpace::new(0x1af4, 0x1045, 0x00_ff_00, 1);
        config.set_interrupt_pin(1);
        config.add_bar(4, kind, size).unwrap();
        Arc::new(Mutex::new(Endpoint { config }))
    }
}

impl PciDevice for Endpoint {
    fn read_config(&mut self, r: usize) -> u32 {
        self.config.read(r)
    }
    fn write_config(&mut self, r: usize, o: u64, d: &[u8]) {
        self.config.write(r, o, d)
    }
    fn reset(&mut self) {
        self.config.reset()
    }
    fn bars(&self) -> Vec<PciBar> {
        self.config.bars()
    }
    fn bar_read(&mut self, _: u8, _: u64, d: &mut [u8]) {
        d.fill(0x5a);
    }
}

type Moves = Mutex<Vec<(PciAddress, u8, Option<BarWindow>)>>;
#[derive(Default)]
struct Obs(Moves);
impl BarObserver for Obs {
    fn bar_moved(&self, a: PciAddress, bar: u8, _: Option<BarWindow>, new: Option<BarWindow>) {
        self.0.lock().unwrap().push((a, bar, new));
    }
}

fn root_port(port: u8) -> SharedPciDevice {
    Arc::new(Mutex::new(
        PcieRootPort::new(RootPortOptions {
            port,
            chassis: port,
            ..Default::default()
        })
        .unwrap(),
    ))
}

/// libvirt's layout: four root ports at 00:01.0-3, a pcie-pci-bridge
/// behind the first, a disk-like function behind the third, a watchdog-like
/// one (16-byte BAR) behind the pcie-pci-bridge, a balloon behind the fourth.
struct Libvirt {
    root: PciRoot,
    mmio: Arc<Bus>,
    obs: Arc<Obs>,
    disk: PciAddress,
    wdt: PciAddress,
    balloon: PciAddress,
}

fn libvirt() -> Libvirt {
    let mmio = Arc::new(Bus::new());
    let mut root = PciRoot::with_buses(Arc::new(Bus::new()), mmio.clone());
    let obs = Arc::new(Obs::default());
    root.set_bar_observer(obs.clone());
    let mut ports = Vec::new();
    for f in 0..4u8 {
        let (_, bus) = root
            .add_bridge(
                0,
                Some((1, f)),
                root_port(8 + f),
                opts("pcie-root-port", &format!("pci.{}", f + 1), f == 0),
                SecondaryBus::PcieLink,
            )
            .unwrap();
        ports.push(bus);
    }
    let ppb = Arc::new(Mutex::new(PciePciBridge::new().unwrap()));
    let (_, legacy) = root
        .add_bridge(
            ports[0],
            Some((0, 0)),
            ppb,
            opts("pcie-pci-bridge", "pci.5", false),
            SecondaryBus::Conventional,
        )
        .unwrap();
    assert_eq!(root.bus_by_name("pci.5"), Some(legacy));
    let m64 = BarKind::Memory64 { prefetchable: true };
    let m32 = BarKind::Memory32 {
        prefetchable: false,
    };
    let disk = root
        .add_function_on(
            ports[2],
            Some((0, 0)),
            Endpoint::shared(m64, 0x4000),
            opts("virtio-blk-pci", "d", false),
        )
        .unwrap();
    let wdt = root
        .add_function_on(
            legacy,
            Some((1, 0)),
            Endpoint::shared(m32, 0x10),
            opts("i6300esb", "w", false),
        )
        .unwrap();
    let balloon = root
        .add_function_on(
            ports[3],
            None,
            Endpoint::shared(m64, 0x4000),
            opts("virtio-balloon-pci", "b", false),
        )
        .unwrap();
    Libvirt {
        root,
        mmio,
        obs,
        disk,
        wdt,
        balloon,
    }
}

const WINDOWS: PciWindows = PciWindows {
    io: PciWindows::IO_DEFAULT,
    mmio32: (0xc000_0000, 0xe000_0000),
    mmio64: None,
};

fn vendor(root: &mut PciRoot, bus: u8, dev: u8, f: u8) -> u32 {
    root.config_read(bus, dev, f, 0)
}

#[test]
fn configuration_cycles_reach_buses_only_once_numbered() {
    let mut l = libvirt();
    assert_eq!(
        l.balloon,
        PciAddress::new(4, 0, 0),
        "first free slot of a link is 0"
    );
    // Power-on: no secondary numbers, so nothing behind any bridge answers.
    for bus in 1..=5 {
        assert_eq!(vendor(&mut l.root, bus, 0, 0), u32::MAX, "bus {bus}");
    }
    // Program 00:01.2 as secondary 4, subordinate 4 by hand.
    l.root.config_write(0, 1, 2, 6, 0, &[0, 4, 4, 0]);
    assert_eq!(vendor(&mut l.root, 4, 0, 0), 0x1045_1af4);
    assert_eq!(vendor(&mut l.root, 4, 1, 0), u32::MAX, "empty slot");
    assert_eq!(vendor(&mut l.root, 5, 0, 0), u32::MAX, "outside 4..=4");
    // Nested: 00:01.0 -> 1..2, the pcie-pci-bridge at 01:00.0 -> 2.
    l.root.config_write(0, 1, 0, 6, 0, &[0, 1, 2, 0]);
    assert_eq!(vendor(&mut l.root, 1, 0, 0), 0x000e_1b36);
    assert_eq!(
        vendor(&mut l.root, 2, 1, 0),
        u32::MAX,
        "bridge below not numbered yet"
    );
    l.root.config_write(1, 0, 0, 6, 0, &[1, 2, 2, 0]);
    assert_eq!(
        vendor(&mut l.root, 2, 1, 0),
        0x1045_1af4,
        "through two bridges"
    );
    // The subordinate number bounds the range: bus 2 is cut off at 1.
    l.root.config_write(0, 1, 0, 6, 2, &[1]);
    assert_eq!(vendor(&mut l.root, 2, 1, 0), u32::MAX);
    l.root.reset();
    assert_eq!(
        vendor(&mut l.root, 4, 0, 0),
        u32::MAX,
        "reset clears the numbers"
    );
}

#[test]
fn bars_behind_a_bridge_decode_only_inside_its_window_with_decode_on() {
    let mut l = libvirt();
    let (bus, dev, f) = (4, 0, 0);
    l.root.config_write(0, 1, 2, 6, 0, &[0, 4, 4, 0]);
    // The disk's BAR 4 at 0xc100_0000, memory decode on: the bridge still
    // forwards nothing.
    l.root
        .config_write(bus, dev, f, 8, 0, &0xc100_000cu32.to_le_bytes());
    l.root.config_write(bus, dev, f, 1, 0, &[2, 0]);
    let mut b = [0u8; 4];
    assert!(!l.mmio.read(0xc100_0000, &mut b), "bridge forwards nothing");
    assert!(l.obs.0.lock().unwrap().is_empty());
    // Window 0xc100_0000..0xc11f_ffff in the prefetchable window; memory
    // decode still off on the bridge.
    l.root
        .config_write(0, 1, 2, 9, 0, &0xc111_c101u32.to_le_bytes());
    assert!(!l.mmio.read(0xc100_0000, &mut b));
    l.root.config_write(0, 1, 2, 1, 0, &[2, 0]);
    assert!(l.mmio.read(0xc100_0000, &mut b));
    assert_eq!(b, [0x5a; 4]);
    let mv = std::mem::take(&mut *l.obs.0.lock().unwrap());
    assert_eq!(
        mv,
        vec![(
            l.disk,
            4,
            Some(BarWindow {
                space: BarSpace::Memory,
                base: 0xc100_0000,
                size: 0x4000
            })
        )],
        "the observer hears the topology address"
    );
    // The guest shrinks the window below the BAR: it stops decoding.
    l.root
        .config_write(0, 1, 2, 9, 0, &0xc000_c001u32.to_le_bytes());
    assert!(!l.mmio.read(0xc100_0000, &mut b));
    l.root
        .config_write(0, 1, 2, 9, 0, &0xc111_c101u32.to_le_bytes());
    assert!(l.mmio.read(0xc100_0000, &mut b));
    // Secondary bus reset clears the disk's BAR and command.
    l.root.config_write(0, 1, 2, 15, 2, &[0x40]);
    assert!(!l.mmio.read(0xc100_0000, &mut b));
    assert_eq!(l.root.config_read(4, 0, 0, 8), 0xc, "BAR back to power-on");
    assert_eq!(
        l.root.config_read(0, 1, 2, 6) >> 8 & 0xff,
        4,
        "the bridge itself keeps its numbers"
    );
}

#[test]
fn intx_swizzles_at_every_bridge() {
    let l = libvirt();
    // 04:00.0 INTA behind 00:01.2: (1 - 1 + 0) % 4 + 1 = INTA at slot 1.
    assert_eq!(l.root.intx_route(l.disk, 1), Some((1, 1)));
    // 02:01.0 INTA -> INTB at 01:00.0 -> (2 - 1 + 0) % 4 + 1 = INTB at 00:01.
    assert_eq!(l.root.intx_route(l.wdt, 1), Some((1, 2)));
    assert_eq!(
        l.root.intx_route(l.wdt, 4),
        Some((1, 1)),
        "INTD wraps to INTA"
    );
    assert_eq!(l.root.intx_route(PciAddress::new(0, 3, 0), 2), Some((3, 2)));
    assert_eq!(l.root.intx_route(l.disk, 0), None);
}

/// What SeaBIOS (QEMU 7.2, same layout) programs: buses depth-first
/// (pci.1 1..2, pci.5 2, pci.2 3, pci.3 4, pci.4 5), 2 MiB windows for
/// each hot-pluggable port, 4 KiB of I/O only behind the SHPC bridge.
#[test]
fn enumeration_numbers_and_sizes_like_seabios() {
    let mut l = libvirt();
    l.root.assign_bars(&WINDOWS).unwrap();
    let numbers = |r: &mut PciRoot, b, d, f| {
        let v = r.config_read(b, d, f, 6);
        (v as u8, (v >> 8) as u8, (v >> 16) as u8)
    };
    assert_eq!(numbers(&mut l.root, 0, 1, 0), (0, 1, 2));
    assert_eq!(numbers(&mut l.root, 1, 0, 0), (1, 2, 2));
    assert_eq!(numbers(&mut l.root, 0, 1, 1), (0, 3, 3));
    assert_eq!(numbers(&mut l.root, 0, 1, 2), (0, 4, 4));
    assert_eq!(numbers(&mut l.root, 0, 1, 3), (0, 5, 5));
    let state = |r: &PciRoot, a| r.bridge_info(a).unwrap();
    let rp1 = PciAddress::new(0, 1, 0);
    let s1 = state(&l.root, rp1);
    // pci.1: pcie-pci-bridge's 2 MiB window + its 256-byte BAR -> 4 MiB.
    assert_eq!(s1.memory.limit - s1.memory.base + 1, 4 << 20);
    assert_eq!(s1.prefetchable.limit - s1.prefetchable.base + 1, 2 << 20);
    assert_eq!(
        s1.io.limit - s1.io.base + 1,
        0x1000,
        "the SHPC bridge's I/O"
    );
    let s2 = state(&l.root, PciAddress::new(0, 1, 1));
    assert!(s2.io.base > s2.io.limit, "an empty root port gets no I/O");
    assert_eq!(s2.memory.limit - s2.memory.base + 1, 2 << 20);
    // Everything decodes: the watchdog through two bridges.
    let wdt_bar = l.root.config_read(2, 1, 0, 8) as u64 & !0xf;
    assert!(s1.memory.contains(wdt_bar, 0x10) || s1.prefetchable.contains(wdt_bar, 0x10));
    let mut b = [0u8; 1];
    assert!(l.mmio.read(wdt_bar, &mut b));
    let disk_bar = l.root.config_read(4, 0, 0, 8) as u64 & !0xf;
    assert!(l.mmio.read(disk_bar, &mut b));
    // query-pci nests what is behind each bridge, with guest bus numbers.
    let q = l.root.query_pci();
    let p1 = q.iter().find(|d| d.qdev_id == "pci.1").unwrap();
    let br = p1.bridge.as_ref().unwrap();
    let inner = br.devices.as_ref().unwrap();
    assert_eq!(inner[0].qdev_id, "pci.5");
    assert_eq!(inner[0].address, PciAddress::new(1, 0, 0));
    let wd = &inner[0].bridge.as_ref().unwrap().devices.as_ref().unwrap()[0];
    assert_eq!(
        (wd.qdev_id.as_str(), wd.address),
        ("w", PciAddress::new(2, 1, 0))
    );
    // Reset and again: the same result (direct boot re-programs after reset).
    l.root.reset();
    l.root.assign_bars(&WINDOWS).unwrap();
    assert_eq!(numbers(&mut l.root, 0, 1, 3), (0, 5, 5));
}

#[test]
fn bus_reserve_leaves_room_for_more_buses() {
    let mut root = PciRoot::new();
    let rp = PcieRootPort::new(RootPortOptions {
        bus_reserve: Some(3),
        ..Default::default()
    })
    .unwrap();
    root.add_bridge(
        0,
        None,
        Arc::new(Mutex::new(rp)),
        opts("pcie-root-port", "a", false),
        SecondaryBus::PcieLink,
    )
    .unwrap();
    root.add_bridge(
        0,
        None,
        root_port(2),
        opts("pcie-root-port", "b", false),
        SecondaryBus::PcieLink,
    )
    .unwrap();
    root.assign_bars(&WINDOWS).unwrap();
    assert_eq!(
        root.config_read(0, 1, 0, 6) & 0xffffff,
        0x04_01_00,
        "1..=1+3"
    );
    assert_eq!(root.config_read(0, 2, 0, 6) & 0xffffff, 0x05_05_00);
}
