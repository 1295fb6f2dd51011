//! From the command line's `-drive`, `-blockdev` and `-device` to the block
//! graph and the list of devices to build, checked before anything runs (as
//! QEMU does), with QEMU's messages behind the option that caused them.

use std::sync::Arc;

use block::{AttachOptions, BlockGraph};
use cli::{Config, DriveInterface};
use devices::virtio::balloon::{BalloonOptions, VirtioBalloon};
use devices::virtio::block::{BlockIoError, VirtioBlock};
use devices::virtio::net::{MacAddr, MacAllocator, NetOptions, VirtioNet};
use serde_json::Value;

use super::qdev::{
    self, DeviceRequest, PvPanicIsaRequest, VirtioBalloonPci, VirtioBlkPci, VirtioNetPci,
};
use super::tree::{self, DeviceTree, TreeRequest};
use super::{PciPlan, PlannedModel};
use crate::error::VmmError;
use crate::messages::{ControlMsg, ControlSender, DeviceEvent};
use crate::network::Netdevs;

/// The block graph and the devices to build on it.
pub struct Plan {
    pub graph: BlockGraph,
    /// The PCI functions, in `-device` order.
    pub pci: Vec<PciPlan>,
    /// `-device pvpanic`s, built with the legacy devices.
    pub pvpanic: Vec<PvPanicIsaRequest>,
    /// Under `-accel qtest`: the devices without a model (IDE, SCSI), in
    /// the tree (the PCI functions join it in setup).
    pub tree: DeviceTree,
    /// A `-drive format=help` printed the formats: nothing is to run.
    pub format_help: bool,
}

/// `is_help_option`.
fn is_help(s: &str) -> bool {
    s == "help" || s == "?"
}

/// blockdev.c `blockdev_init` on `format=help`: every driver the graph
/// opens, sorted (`bdrv_iterate_format`); ferrovm has no read-only
/// whitelist, so both lists are the same, as in Debian's QEMU.
pub fn format_help() -> String {
    let list: String = block::graph::driver_names()
        .iter()
        .map(|n| format!(" {n}"))
        .collect();
    format!("Supported formats:{list}\nSupported formats (read-only):{list}\n")
}

/// A `-drive if=ide`: its place on q35's AHCI ports (blockdev.c
/// `drive_new` with one unit per bus), checked as QEMU checks it.
fn ide_bus(d: &cli::DriveSpec, taken: &[u64]) -> Result<u64, VmmError> {
    let num = |k: &str| {
        d.opts
            .get(k)
            .and_then(Value::as_str)
            .and_then(|v| v.parse::<u64>().ok())
    };
    let (index, bus, unit) = (num("index"), num("bus"), num("unit"));
    if index.is_some() && (bus.is_some() || unit.is_some()) {
        return Err(at(&d.location, "index cannot be used with bus and unit"));
    }
    let unit = unit.unwrap_or(0);
    if unit > 0 {
        return Err(at(&d.location, format!("unit {unit} too big (max is 0)")));
    }
    let bus = match index.or(bus) {
        Some(b) => b,
        // The first free unit, moving on to the next bus (max_devs 1).
        None => (0..).find(|b| !taken.contains(b)).unwrap_or(0),
    };
    if taken.contains(&bus) {
        let index = index.map_or(-1, |i| i as i64);
        return Err(at(
            &d.location,
            format!("drive with bus={bus}, unit=0 (index={index}) exists"),
        ));
    }
    if bus >= tree::IDE_BUSES {
        // Checked by QEMU once the board has claimed its drives
        // (blockdev.c drive_check_orphaned).
        return Err(at(
            &d.location,
            format!("machine type does not support if=ide,bus={bus},unit=0"),
        ));
    }
    Ok(bus)
}

/// What `-device` asks for, in order.
enum Requested {
    Model(DeviceRequest),
    Tree(TreeRequest),
}

fn at(location: &str, msg: impl std::fmt::Display) -> VmmError {
    VmmError::Config(format!("{location}: {msg}"))
}

/// QEMU's default drive ids (blockdev.c `drive_new`): the interface name
/// and the drive's index on it.
fn default_drive_id(interface: DriveInterface, index: usize) -> String {
    format!("{interface}{index}")
}

pub fn plan(
    config: &Config,
    sender: &Arc<ControlSender>,
    cpus: u16,
    netdevs: &mut Netdevs,
) -> Result<Plan, VmmError> {
    let mut graph = BlockGraph::new();
    // Objects come first (vl.c qemu_create_early_backends: throttle-group
    // is an early object), so -blockdev throttle nodes find their group.
    for (o, loc) in config.objects.iter().zip(&config.object_locations) {
        let mut props = o.as_object().cloned().unwrap_or_default();
        let ty = props.remove("qom-type");
        let id = props.remove("id");
        let (Some(Value::String(ty)), Some(Value::String(id))) = (ty, id) else {
            continue;
        };
        // Setting the properties fails at the option; completing the
        // object (its limits together, its name) without it, as in QEMU.
        if ty == "throttle-group" {
            block::throttle_group::parse_props(&props).map_err(|e| at(loc, e.full()))?;
        }
        graph
            .object_add(&ty, &id, &props, true)
            .map_err(|e| VmmError::Config(e.full()))?;
    }
    let mut implied: Vec<(String, VirtioBlkPci)> = Vec::new();
    // QEMU opens every -blockdev before any -drive (vl.c configure_blockdev),
    // which decides the automatic node names' counters.
    for (b, loc) in config.blockdevs.iter().zip(&config.blockdev_locations) {
        let map = b.as_object().cloned().unwrap_or_default();
        graph.add_blockdev(&map).map_err(|e| at(loc, e.full()))?;
    }
    let mut per_interface: std::collections::HashMap<String, usize> = Default::default();
    let mut ide: Vec<(u64, String, bool)> = Vec::new();
    let mut tree = DeviceTree::default();
    for d in &config.drives {
        if d.format.as_deref().is_some_and(is_help) {
            // The drives before it are open, as in QEMU; nothing else is.
            print!("{}", format_help());
            return Ok(Plan {
                graph,
                pci: Vec::new(),
                pvpanic: Vec::new(),
                tree,
                format_help: true,
            });
        }
        let id = if d.interface == DriveInterface::Ide {
            let taken: Vec<u64> = ide.iter().map(|(b, _, _)| *b).collect();
            let bus = ide_bus(d, &taken)?;
            if config.machine.kind == cli::MachineKind::None {
                return Err(at(
                    &d.location,
                    format!("machine type does not support if=ide,bus={bus},unit=0"),
                ));
            }
            let media = if d.cdrom { "cd" } else { "hd" };
            let id = d.id.clone().unwrap_or_else(|| format!("ide{bus}-{media}0"));
            ide.push((bus, id.clone(), d.cdrom));
            id
        } else {
            let n = per_interface.entry(d.interface.to_string()).or_default();
            *n += 1;
            d.id.clone()
                .unwrap_or_else(|| default_drive_id(d.interface, *n - 1))
        };
        graph
            .add_drive(&id, &d.opts)
            .map_err(|e| at(&d.location, e.full()))?;
        if d.interface == DriveInterface::Virtio {
            // `if=virtio` is shorthand for a virtio-blk-pci on that drive.
            implied.push((d.location.clone(), VirtioBlkPci::for_drive(&id, cpus)));
        }
    }
    // The board's own IDE devices come before any -device, in bus order
    // (hw/ide/ahci.c ahci_ide_create_devs). Their QOM paths follow QEMU
    // 7.2's q35 numbering of /machine/unattached without KVM: a device per
    // vCPU plus the kvmvapic, then ICH9-LPC ... ich9-ahci, then these.
    ide.sort();
    for (rank, (_, id, cdrom)) in ide.into_iter().enumerate() {
        let path = format!(
            "/machine/unattached/device[{}]",
            15 + usize::from(cpus) + rank
        );
        tree.add_ide(&mut graph, &id, cdrom, path)
            .map_err(VmmError::Config)?;
    }
    for w in graph.take_warnings() {
        eprintln!("ferrovm: warning: {w}");
    }
    let mut devices = Vec::new();
    for (d, loc) in config.devices.iter().zip(&config.device_locations) {
        let Some(map) = d.as_object() else { continue };
        if matches!(
            map.get("driver").and_then(Value::as_str),
            Some("isa-serial" | "isa-debugcon")
        ) {
            continue; // COM1's front-end (console.rs)
        }
        let driver = map.get("driver").and_then(Value::as_str).unwrap_or("");
        let r = match tree::tree_driver(driver) {
            Some("virtio-scsi-pci") if config.machine.kind == cli::MachineKind::None => {
                return Err(at(loc, "No 'PCI' bus found for device 'virtio-scsi-pci'"));
            }
            Some(d) => Requested::Tree(tree::parse(d, map).map_err(|e| at(loc, e))?),
            None => Requested::Model(qdev::parse(map, cpus).map_err(|e| at(loc, e))?),
        };
        devices.push((loc.clone(), r));
    }
    // QEMU queues the devices `if=virtio` implies after every -device
    // (drive_new runs after the command line is read), so they come later
    // in the anonymous numbering and on the bus.
    devices.extend(
        implied
            .into_iter()
            .map(|(loc, r)| (loc, Requested::Model(DeviceRequest::VirtioBlkPci(r)))),
    );
    let mut anon = 0;
    let mut pci = Vec::new();
    let mut pvpanic = Vec::new();
    let mut balloons = 0;
    let mut nics = NicNaming::default();
    let mut buses = super::bridges::BusNames::default();
    for (loc, requested) in devices {
        let id = match &requested {
            Requested::Model(r) => r.id(),
            Requested::Tree(r) => r.id(),
        };
        let qom_path = match id {
            Some(id) => format!("/machine/peripheral/{id}"),
            None => {
                anon += 1;
                format!("/machine/peripheral-anon/device[{}]", anon - 1)
            }
        };
        let request = match requested {
            Requested::Tree(r) => {
                tree.add(&mut graph, r, qom_path).map_err(|e| at(&loc, e))?;
                continue;
            }
            Requested::Model(r) => r,
        };
        buses.check(&request).map_err(|e| at(&loc, e))?;
        let model = match request {
            DeviceRequest::VirtioBlkPci(r) => block_device(&mut graph, sender, r, &qom_path, &loc)?,
            DeviceRequest::VirtioNetPci(r) => {
                net_device(sender, netdevs, &mut nics, r, &qom_path).map_err(|e| at(&loc, e))?
            }
            DeviceRequest::VirtioBalloonPci(r) => {
                balloons += 1;
                if balloons > 1 {
                    // hw/virtio/virtio-balloon.c: qemu_add_balloon_handler refuses a second.
                    return Err(at(&loc, "Only one balloon device is supported"));
                }
                balloon_device(config, sender, r).map_err(|e| at(&loc, e))?
            }
            DeviceRequest::PvPanicIsa(r) => {
                pvpanic.push(r);
                continue;
            }
            DeviceRequest::PvPanicPci(request) => PlannedModel::PvPanicPci {
                request,
                report: panic_report(sender),
            },
            DeviceRequest::I6300Esb(request) => PlannedModel::Watchdog { request },
            DeviceRequest::PcieRootPort(request) => PlannedModel::RootPort { request },
            DeviceRequest::PciePciBridge(request) => PlannedModel::PciBridge { request },
            DeviceRequest::Xhci(request) => PlannedModel::Xhci { request },
        };
        pci.push(PciPlan {
            model,
            qom_path,
            location: loc,
        });
    }
    Ok(Plan {
        graph,
        pci,
        pvpanic,
        tree,
        format_help: false,
    })
}

/// Where a pvpanic device's events go: GUEST_PANICKED or GUEST_CRASHLOADED,
/// then the `-action panic=` policy, on the machine's owner.
pub fn panic_report(sender: &Arc<ControlSender>) -> devices::pvpanic::PvPanicFn {
    let sender = sender.clone();
    Arc::new(move |e| sender.send(ControlMsg::Device(DeviceEvent::GuestPanic(e))))
}

/// A virtio-blk-pci on its drive: attached to the block graph, the model's
/// properties checked.
fn block_device(
    graph: &mut BlockGraph,
    sender: &Arc<ControlSender>,
    r: VirtioBlkPci,
    qom_path: &str,
    loc: &str,
) -> Result<PlannedModel, VmmError> {
    let backend = graph
        .attach(
            &r.drive,
            &format!("{qom_path}/virtio-backend"),
            AttachOptions {
                share_rw: r.share_rw,
                read_only: false,
                removable: false,
            },
        )
        .map_err(|e| {
            let msg = e.full();
            // QEMU names the property of the virtio device it sets.
            at(
                loc,
                msg.replace("Property 'drive'", "Property 'virtio-blk-device.drive'"),
            )
        })?;
    let on_error = error_reporter(backend.clone(), sender.clone());
    // The model validates its properties now, before anything runs.
    let model = VirtioBlock::new(backend.clone(), &r.blk, on_error).map_err(|e| at(loc, e))?;
    Ok(PlannedModel::Block {
        request: r,
        model,
        backend,
    })
}

/// QEMU's default NIC names and addresses, in creation order.
#[derive(Default)]
struct NicNaming {
    macs: MacAllocator,
    /// NICs of model virtio-net-pci so far (net/net.c `assign_name` counts
    /// every client of the same model, named or not).
    count: usize,
}

/// A virtio-net-pci on its netdev's queues (or on nothing: QEMU allows a
/// NIC without a peer).
fn net_device(
    sender: &Arc<ControlSender>,
    netdevs: &mut Netdevs,
    naming: &mut NicNaming,
    r: VirtioNetPci,
    qom_path: &str,
) -> Result<PlannedModel, String> {
    let name = r
        .proxy
        .id
        .clone()
        .unwrap_or_else(|| format!("virtio-net-pci.{}", naming.count));
    naming.count += 1;
    let queues: Vec<Box<dyn net::NetQueue>> = match &r.netdev {
        Some(id) => netdevs
            .attach(id, &name, "virtio-net-device.netdev")?
            .into_iter()
            .map(|t| Box::new(t) as Box<dyn net::NetQueue>)
            .collect(),
        None => vec![Box::new(net::NoPeer::new().map_err(|e| e.to_string())?)],
    };
    let f = |n: &str| r.feature(n);
    let options = NetOptions {
        mac: naming.macs.default_if_unset(r.mac.map(MacAddr)),
        host_mtu: r.host_mtu,
        rx_queue_size: r
            .rx_queue_size
            .unwrap_or(NetOptions::default().rx_queue_size),
        tx_queue_size: r
            .tx_queue_size
            .unwrap_or(NetOptions::default().tx_queue_size),
        csum: f("csum"),
        guest_csum: f("guest_csum"),
        gso: f("gso"),
        guest_tso4: f("guest_tso4"),
        guest_tso6: f("guest_tso6"),
        guest_ecn: f("guest_ecn"),
        guest_ufo: f("guest_ufo"),
        host_tso4: f("host_tso4"),
        host_tso6: f("host_tso6"),
        host_ecn: f("host_ecn"),
        host_ufo: f("host_ufo"),
        mrg_rxbuf: f("mrg_rxbuf"),
        status: f("status"),
        ctrl_vq: f("ctrl_vq"),
        ctrl_rx: f("ctrl_rx"),
        ctrl_vlan: f("ctrl_vlan"),
        ctrl_rx_extra: f("ctrl_rx_extra"),
        ctrl_mac_addr: f("ctrl_mac_addr"),
        ctrl_guest_offloads: f("ctrl_guest_offloads"),
        guest_announce: f("guest_announce"),
        mq: f("mq"),
    };
    let device_path = format!("{qom_path}/virtio-backend");
    let changed = {
        let sender = sender.clone();
        let (name, path) = (r.proxy.id.clone(), device_path.clone());
        Arc::new(move || {
            sender.send(ControlMsg::Device(DeviceEvent::NicRxFilterChanged {
                name: name.clone(),
                path: path.clone(),
            }));
        })
    };
    let model = VirtioNet::new(options, queues, changed).map_err(|e| e.to_string())?;
    Ok(PlannedModel::Net {
        request: r,
        model,
        name,
        device_path,
    })
}

/// A virtio-balloon-pci: the guest's RAM size, BALLOON_CHANGE when the
/// driver reports a new size.
fn balloon_device(
    config: &Config,
    sender: &Arc<ControlSender>,
    r: VirtioBalloonPci,
) -> Result<PlannedModel, String> {
    let options = BalloonOptions {
        deflate_on_oom: r.deflate_on_oom,
        free_page_reporting: r.free_page_reporting,
    };
    let sender = sender.clone();
    let changed = Arc::new(move |actual: u64| {
        sender.send(ControlMsg::Device(DeviceEvent::BalloonChange { actual }));
    });
    // `last-update` is wall-clock seconds (QEMU: g_get_real_time()).
    let now = Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64)
    });
    let mut model = VirtioBalloon::new(options, config.memory_bytes, changed, now);
    if let Some(secs) = r.stats_interval {
        model.set_stats_interval(secs).map_err(|e| e.to_string())?;
    }
    Ok(PlannedModel::Balloon { request: r, model })
}

/// Turns a failed request into BLOCK_IO_ERROR (and `io-error` on a stop)
/// for the machine's owner. Called on the backend thread: only sends.
fn error_reporter(
    backend: block::BlockBackend,
    sender: Arc<ControlSender>,
) -> devices::virtio::block::BlockIoErrorFn {
    Arc::new(move |e: BlockIoError| {
        let is_read = e.operation == devices::virtio::block::IoOperation::Read;
        let data = backend.error_event(e.action, is_read, e.errno);
        sender.send(ControlMsg::Device(DeviceEvent::BlockIoError {
            data,
            stop: e.action == block::ErrorAction::Stop,
        }));
    })
}
