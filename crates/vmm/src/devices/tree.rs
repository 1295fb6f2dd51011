//! The board under `-accel qtest`. QEMU's qtest accelerator runs no vCPU,
//! so nothing reaches a device's registers; ferrovm then builds no KVM VM
//! and no register model at all. A device is its place in the QOM tree
//! and, for storage, its attachment to the block graph, which is what the
//! block layer and its QMP commands see (query-block's `qdev`, a node "in
//! use", jobs on a device's drive). The PCI functions are the models
//! `-device` planned, properties checked and backends attached, never
//! realized.
//!
//! Devices ferrovm has no register model of at all exist only here, so only
//! under qtest: IDE disks and CD-ROMs from `-drive if=ide` (q35's AHCI
//! ports), `virtio-scsi-pci` and `scsi-hd` (QEMU's hw/scsi), which
//! `device_add` and `device_del` plug and unplug on a SCSI bus as QEMU
//! does.

use block::{AttachOptions, BlockBackend, BlockGraph};
use serde_json::{Map, Value};

use super::{PciPlan, Peripheral};

/// The drivers that exist only in the device tree, with their aliases
/// (QEMU's `qdev_class_get_alias`).
pub const TREE_DRIVERS: &[(&str, Option<&str>)] =
    &[("virtio-scsi-pci", Some("virtio-scsi")), ("scsi-hd", None)];

/// The tree-only driver `name` names (itself or its alias).
pub fn tree_driver(name: &str) -> Option<&'static str> {
    TREE_DRIVERS
        .iter()
        .find(|(n, a)| *n == name || *a == Some(name))
        .map(|(n, _)| *n)
}

/// hw/scsi/virtio-scsi.c: `VIRTIO_SCSI_MAX_CHANNEL`, `_TARGET`, `_LUN`.
const SCSI_MAX_CHANNEL: i64 = 0;
const SCSI_MAX_TARGET: i64 = 255;
const SCSI_MAX_LUN: i64 = 16383;

/// The machine's devices before any -device: q35's ICH9 AHCI has six
/// ports, one unit each (hw/i386/pc_q35.c `units_per_default_bus = 1`).
pub const IDE_BUSES: u64 = 6;

/// A device without a model.
struct Node {
    qom_path: String,
    driver: &'static str,
    id: Option<String>,
    /// The bus it provides (a SCSI controller's).
    child_bus: Option<String>,
    /// The SCSI bus it sits on, and its (channel, target, lun) there.
    scsi: Option<(String, (i64, i64, i64))>,
    backend: Option<BlockBackend>,
    /// Its backend is a `-drive` that goes when it goes (`auto_del`).
    drive_auto_del: bool,
}

/// What a device_del unplugged: its DEVICE_DELETED data, and the jobs to
/// cancel with its drive (blockdev.c `blockdev_mark_auto_del`).
pub struct Unplugged {
    pub id: Option<String>,
    pub qom_path: String,
    pub jobs: Vec<String>,
}

#[derive(Default)]
pub struct DeviceTree {
    /// The planned PCI functions (they hold their block attachments).
    pci: Vec<PciPlan>,
    nodes: Vec<Node>,
    /// `automatic_ids` of the SCSI bus class: `scsi.N` for controllers
    /// without an id.
    scsi_bus_ids: usize,
}

/// A `-device`/`device_add` request for a tree-only driver, checked.
#[derive(Debug, Clone, PartialEq)]
pub enum TreeRequest {
    VirtioScsi {
        id: Option<String>,
    },
    ScsiHd {
        id: Option<String>,
        bus: Option<String>,
        drive: Option<String>,
        channel: i64,
        target: i64,
        lun: i64,
        share_rw: bool,
    },
}

impl TreeRequest {
    pub fn id(&self) -> Option<&str> {
        match self {
            Self::VirtioScsi { id } | Self::ScsiHd { id, .. } => id.as_deref(),
        }
    }
}

fn int(driver: &str, name: &str, v: &Value) -> Result<i64, String> {
    let n = match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse::<i64>().ok(),
        _ => None,
    };
    n.ok_or_else(|| format!("Property '{driver}.{name}' doesn't take value '{v}'"))
}

fn string(name: &str, v: &Value) -> Result<String, String> {
    v.as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("Invalid parameter type for '{name}', expected: string"))
}

/// Parses a tree-only driver's properties (the ones that mean something
/// without registers); others fail in QEMU's words.
pub fn parse(driver: &'static str, dev: &Map<String, Value>) -> Result<TreeRequest, String> {
    let mut id = None;
    let mut bus = None;
    let mut drive = None;
    let (mut channel, mut target, mut lun) = (0, -1, -1);
    let mut share_rw = false;
    for (k, v) in dev {
        match (driver, k.as_str()) {
            (_, "driver") => {}
            (_, "id") => id = Some(string(k, v)?),
            (_, "bus") => bus = Some(string(k, v)?),
            ("scsi-hd", "drive") => drive = Some(string(k, v)?),
            ("scsi-hd", "channel") => channel = int(driver, k, v)?,
            ("scsi-hd", "scsi-id") => target = int(driver, k, v)?,
            ("scsi-hd", "lun") => lun = int(driver, k, v)?,
            ("scsi-hd", "share-rw") => {
                share_rw = match v {
                    Value::Bool(b) => *b,
                    Value::String(s) if matches!(s.as_str(), "on" | "yes" | "true") => true,
                    Value::String(s) if matches!(s.as_str(), "off" | "no" | "false") => false,
                    _ => return Err(format!("Parameter '{k}' expects 'on' or 'off'")),
                }
            }
            _ => return Err(format!("Property '{driver}.{k}' not found")),
        }
    }
    Ok(match driver {
        "virtio-scsi-pci" => {
            // The controller sits on pcie.0 (no PCI bus is modelled here).
            if let Some(b) = bus.filter(|b| b != super::qdev::ROOT_BUS) {
                return Err(format!("Bus '{b}' not found"));
            }
            TreeRequest::VirtioScsi { id }
        }
        _ => TreeRequest::ScsiHd {
            id,
            bus,
            drive,
            channel,
            target,
            lun,
            share_rw,
        },
    })
}

impl DeviceTree {
    /// The tree with the planned PCI functions in it.
    pub fn with_pci(mut self, pci: Vec<PciPlan>) -> Self {
        self.pci = pci;
        self
    }

    /// Whether it holds any device.
    pub fn is_empty(&self) -> bool {
        self.pci.is_empty() && self.nodes.is_empty()
    }

    /// An IDE device of `-drive if=ide` at QOM path `qom_path`, on `drive`.
    pub fn add_ide(
        &mut self,
        graph: &mut BlockGraph,
        drive: &str,
        cdrom: bool,
        qom_path: String,
    ) -> Result<(), String> {
        let o = AttachOptions {
            share_rw: false,
            read_only: cdrom,
            removable: cdrom,
        };
        // No id: query-block's `qdev` is the QOM path.
        let backend = graph.attach(drive, &qom_path, o).map_err(|e| e.full())?;
        self.nodes.push(Node {
            qom_path,
            driver: if cdrom { "ide-cd" } else { "ide-hd" },
            id: None,
            child_bus: None,
            scsi: None,
            backend: Some(backend),
            drive_auto_del: false,
        });
        Ok(())
    }

    /// A tree-only device at `qom_path`; errors are QEMU's, without the
    /// option's location.
    pub fn add(
        &mut self,
        graph: &mut BlockGraph,
        request: TreeRequest,
        qom_path: String,
    ) -> Result<(), String> {
        match request {
            TreeRequest::VirtioScsi { id } => {
                // hw/virtio/virtio-scsi-pci.c: `ID.0`; else the SCSI bus
                // class's automatic `scsi.N` (hw/core/bus.c qbus_init).
                let child_bus = match &id {
                    Some(i) => format!("{i}.0"),
                    None => {
                        self.scsi_bus_ids += 1;
                        format!("scsi.{}", self.scsi_bus_ids - 1)
                    }
                };
                self.nodes.push(Node {
                    qom_path,
                    driver: "virtio-scsi-pci",
                    id,
                    child_bus: Some(child_bus),
                    scsi: None,
                    backend: None,
                    drive_auto_del: false,
                });
                Ok(())
            }
            TreeRequest::ScsiHd {
                id,
                bus,
                drive,
                channel,
                target,
                lun,
                share_rw,
            } => {
                let bus = self.scsi_bus(bus.as_deref())?;
                let addr = self.scsi_address(&bus, channel, target, lun)?;
                let drive = drive.ok_or("drive property not set")?;
                // query-block's `qdev` is the device's id, else its path
                // (block-backend.c blk_get_attached_dev_id).
                let qdev = id.clone().unwrap_or_else(|| qom_path.clone());
                let o = AttachOptions {
                    share_rw,
                    read_only: false,
                    removable: false,
                };
                let is_drive = graph.backend(&drive).is_some();
                let backend = graph.attach(&drive, &qdev, o).map_err(|e| {
                    e.full()
                        .replace("Property 'drive'", "Property 'scsi-hd.drive'")
                })?;
                self.nodes.push(Node {
                    qom_path,
                    driver: "scsi-hd",
                    id,
                    child_bus: None,
                    scsi: Some((bus, addr)),
                    backend: Some(backend),
                    drive_auto_del: is_drive,
                });
                Ok(())
            }
        }
    }

    /// `bus=` must name a SCSI bus; without it, the one qdev-monitor.c
    /// `qbus_find_recursive` meets first (buses list their newest child
    /// first, so the latest controller's).
    fn scsi_bus(&self, bus: Option<&str>) -> Result<String, String> {
        let buses: Vec<&String> = self
            .nodes
            .iter()
            .filter_map(|n| n.child_bus.as_ref())
            .collect();
        match bus {
            Some(b) if buses.iter().any(|x| x.as_str() == b) => Ok(b.to_string()),
            Some(b) => Err(format!("Bus '{b}' not found")),
            None => buses
                .last()
                .map(|b| b.to_string())
                .ok_or_else(|| "No 'SCSI' bus found for device 'scsi-hd'".to_string()),
        }
    }

    /// hw/scsi/scsi-bus.c `scsi_qdev_check_address` and `scsi_qdev_realize`:
    /// a free (channel, target, lun) on `bus`, the first free target when
    /// none is given.
    fn scsi_address(
        &self,
        bus: &str,
        channel: i64,
        target: i64,
        lun: i64,
    ) -> Result<(i64, i64, i64), String> {
        if !(0..=SCSI_MAX_CHANNEL).contains(&channel) {
            return Err(format!("bad scsi device channel id: {channel}"));
        }
        if target != -1 && !(0..=SCSI_MAX_TARGET).contains(&target) {
            return Err(format!("bad scsi device id: {target}"));
        }
        if lun != -1 && !(0..=SCSI_MAX_LUN).contains(&lun) {
            return Err(format!("bad scsi device lun: {lun}"));
        }
        let used = |t: i64, l: i64| {
            self.nodes.iter().find(|n| {
                n.scsi
                    .as_ref()
                    .is_some_and(|(b, a)| b == bus && *a == (channel, t, l))
            })
        };
        if target != -1 && lun != -1 {
            if let Some(n) = used(target, lun) {
                return Err(format!(
                    "lun already used by '{}'",
                    n.id.as_deref().unwrap_or("(null)")
                ));
            }
            return Ok((channel, target, lun));
        }
        if target == -1 {
            let lun = lun.max(0);
            let t = (0..=SCSI_MAX_TARGET)
                .find(|t| used(*t, lun).is_none())
                .ok_or("no free target")?;
            return Ok((channel, t, lun));
        }
        let l = (0..=SCSI_MAX_LUN)
            .find(|l| used(target, *l).is_none())
            .ok_or("no free lun")?;
        Ok((channel, target, l))
    }

    /// `device_del`: a device on a SCSI bus goes at once (virtio-scsi's
    /// hotplug handler); `None` when `id` (an id or QOM path) names no
    /// such device. Every other device sits on pcie.0, which has no
    /// hotplug on q35.
    pub fn unplug(&mut self, graph: &mut BlockGraph, id: &str) -> Option<Unplugged> {
        let i = self
            .nodes
            .iter()
            .position(|n| n.scsi.is_some() && (n.id.as_deref() == Some(id) || n.qom_path == id))?;
        let n = self.nodes.remove(i);
        let mut jobs = Vec::new();
        if let Some(b) = &n.backend {
            if n.drive_auto_del {
                jobs = graph.auto_del(b);
            } else {
                graph.detach(b);
            }
        }
        Some(Unplugged {
            id: n.id,
            qom_path: n.qom_path,
            jobs,
        })
    }

    /// Whether `id` (an id or a QOM path) names a device of the tree.
    pub fn has_device(&self, id: &str) -> bool {
        self.peripherals().iter().any(|p| p.qom_path == id)
            || self.nodes.iter().any(|n| n.id.as_deref() == Some(id))
            || self
                .pci
                .iter()
                .any(|p| p.qom_path == format!("/machine/peripheral/{id}"))
    }

    /// Every device, for the QOM tree.
    pub fn peripherals(&self) -> Vec<Peripheral> {
        self.pci
            .iter()
            .map(|p| Peripheral {
                qom_path: p.qom_path.clone(),
                driver: p.driver(),
            })
            .chain(self.nodes.iter().map(|n| Peripheral {
                qom_path: n.qom_path.clone(),
                driver: n.driver,
            }))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req(v: Value) -> Result<TreeRequest, String> {
        let m = v.as_object().unwrap().clone();
        let d = tree_driver(m["driver"].as_str().unwrap()).unwrap();
        parse(d, &m)
    }

    #[test]
    fn scsi_disks_find_their_bus_and_address() {
        let mut g = BlockGraph::new();
        let mut t = DeviceTree::default();
        let hd = |extra: Value| {
            let mut m = json!({"driver": "scsi-hd"});
            for (k, v) in extra.as_object().unwrap() {
                m[k] = v.clone();
            }
            req(m).unwrap()
        };
        let e = t
            .add(&mut g, hd(json!({"drive": "x"})), "/p".into())
            .unwrap_err();
        assert_eq!(e, "No 'SCSI' bus found for device 'scsi-hd'");
        t.add(
            &mut g,
            req(json!({"driver": "virtio-scsi", "id": "vio-scsi"})).unwrap(),
            "/machine/peripheral/vio-scsi".into(),
        )
        .unwrap();
        t.add(
            &mut g,
            req(json!({"driver": "virtio-scsi-pci"})).unwrap(),
            "/machine/peripheral-anon/device[0]".into(),
        )
        .unwrap();
        let e = t
            .add(
                &mut g,
                hd(json!({"bus": "nope.0", "drive": "x"})),
                "/p".into(),
            )
            .unwrap_err();
        assert_eq!(e, "Bus 'nope.0' not found");
        for (bus, drive) in [("vio-scsi.0", "d0"), ("vio-scsi.0", "d1"), ("scsi.0", "d2")] {
            g.add_drive(drive, &Map::new()).unwrap();
            let e = t
                .add(&mut g, hd(json!({"bus": bus, "drive": drive})), "/p".into())
                .unwrap_err();
            // An empty drive is refused, as QEMU's scsi-hd does.
            assert_eq!(e, "Device needs media, but drive is empty");
        }
        // Real disks: the first free target, `qdev` the id or the path,
        // and an unplug takes a -drive with it (blockdev_auto_del).
        let img = std::env::temp_dir().join(format!("ferrovm-tree-{}.img", std::process::id()));
        std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
        let file = || {
            let mut m = Map::new();
            m.insert("file".into(), json!(img.to_str().unwrap()));
            m.insert("format".into(), json!("raw"));
            m.insert("file.locking".into(), json!("off"));
            m
        };
        g.add_drive("r0", &file()).unwrap();
        g.add_drive("r1", &file()).unwrap();
        t.add(
            &mut g,
            hd(json!({"drive": "r0", "id": "s0"})),
            "/machine/peripheral/s0".into(),
        )
        .unwrap();
        t.add(
            &mut g,
            hd(json!({"drive": "r1"})),
            "/machine/peripheral-anon/device[1]".into(),
        )
        .unwrap();
        let qdevs: Vec<Value> = g
            .query_block()
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["qdev"].clone())
            .collect();
        assert!(qdevs.contains(&json!("s0")), "{qdevs:?}");
        assert!(
            qdevs.contains(&json!("/machine/peripheral-anon/device[1]")),
            "{qdevs:?}"
        );
        // Both went to the newest controller's bus, on targets 0 and 1.
        let addr: Vec<_> = t.nodes.iter().filter_map(|n| n.scsi.clone()).collect();
        assert_eq!(
            addr,
            [
                ("scsi.0".to_string(), (0, 0, 0)),
                ("scsi.0".to_string(), (0, 1, 0))
            ]
        );
        let e = t
            .add(
                &mut g,
                hd(json!({"drive": "r0", "bus": "scsi.0", "scsi-id": 0, "lun": 0})),
                "/p".into(),
            )
            .unwrap_err();
        assert_eq!(e, "lun already used by 's0'");
        let u = t.unplug(&mut g, "s0").unwrap();
        assert_eq!(
            (u.id.as_deref(), u.qom_path.as_str()),
            (Some("s0"), "/machine/peripheral/s0")
        );
        assert!(g.backend("r0").is_none(), "the -drive went with its device");
        assert!(
            t.unplug(&mut g, "vio-scsi").is_none(),
            "a controller is on pcie.0"
        );
        assert!(t.has_device("vio-scsi"));
        std::fs::remove_file(&img).unwrap();
        assert_eq!(t.scsi_address("vio-scsi.0", 0, -1, -1), Ok((0, 0, 0)));
        assert_eq!(
            t.scsi_address("vio-scsi.0", 1, -1, -1),
            Err("bad scsi device channel id: 1".into())
        );
        assert_eq!(
            t.scsi_address("vio-scsi.0", 0, 256, 0),
            Err("bad scsi device id: 256".into())
        );
        assert_eq!(
            req(json!({"driver": "scsi-hd", "removable": "on"})),
            Err("Property 'scsi-hd.removable' not found".into())
        );
        assert_eq!(
            req(json!({"driver": "virtio-scsi-pci", "bus": "pcie.1"})),
            Err("Bus 'pcie.1' not found".into())
        );
    }
}
