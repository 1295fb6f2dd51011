//! `-device` properties: QEMU's qdev property types, parsed from the command
//! line's JSON object with QEMU 7.2's messages (hw/core/qdev-properties.c,
//! qapi/qobject-input-visitor.c), into the typed options of each device model.
//! Each driver declares its properties once, in a table; [`DRIVERS`] is the
//! registry of what `-device` builds, which `device_add`, `-device help` and
//! the type queries read.

mod balloon;
mod blk;
mod bridge;
pub mod help;
mod net;
mod pvpanic;
mod watchdog;
mod xhci;

use serde_json::{Map, Value};

pub use balloon::VirtioBalloonPci;
pub use blk::VirtioBlkPci;
pub use bridge::{PciePciBridgeRequest, PcieRootPortRequest};
pub use net::VirtioNetPci;
pub use pvpanic::{PvPanicIsaRequest, PvPanicPciRequest};
pub use watchdog::I6300EsbRequest;
pub use xhci::XhciRequest;

/// A `-device` that ferrovm builds.
#[derive(Debug, Clone, PartialEq)]
pub enum DeviceRequest {
    VirtioBlkPci(VirtioBlkPci),
    VirtioNetPci(VirtioNetPci),
    VirtioBalloonPci(VirtioBalloonPci),
    PvPanicIsa(PvPanicIsaRequest),
    PvPanicPci(PvPanicPciRequest),
    I6300Esb(I6300EsbRequest),
    PcieRootPort(PcieRootPortRequest),
    PciePciBridge(PciePciBridgeRequest),
    Xhci(XhciRequest),
}

impl DeviceRequest {
    /// `id=`, which names the device's QOM path.
    pub fn id(&self) -> Option<&str> {
        match self {
            Self::VirtioBlkPci(r) => r.proxy.id.as_deref(),
            Self::VirtioNetPci(r) => r.proxy.id.as_deref(),
            Self::VirtioBalloonPci(r) => r.proxy.id.as_deref(),
            Self::PvPanicIsa(r) => r.id.as_deref(),
            Self::PvPanicPci(r) => r.pci.id.as_deref(),
            Self::I6300Esb(r) => r.pci.id.as_deref(),
            Self::PcieRootPort(r) => r.pci.id.as_deref(),
            Self::PciePciBridge(r) => r.pci.id.as_deref(),
            Self::Xhci(r) => r.pci.id.as_deref(),
        }
    }

    /// The `bus=` of a PCI function (`None`: pcie.0, or not a PCI device).
    pub fn pci_bus(&self) -> Option<&str> {
        let p = match self {
            Self::VirtioBlkPci(r) => &r.proxy.pci,
            Self::VirtioNetPci(r) => &r.proxy.pci,
            Self::VirtioBalloonPci(r) => &r.proxy.pci,
            Self::PvPanicIsa(_) => return None,
            Self::PvPanicPci(r) => &r.pci.pci,
            Self::I6300Esb(r) => &r.pci.pci,
            Self::PcieRootPort(r) => &r.pci.pci,
            Self::PciePciBridge(r) => &r.pci.pci,
            Self::Xhci(r) => &r.pci.pci,
        };
        p.bus.as_deref()
    }
}

/// Where a PCI function goes: `bus=` and `addr=`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PciPlacement {
    /// `bus=`: a bridge's id; `None` for pcie.0. Whether it exists is
    /// known only in `-device` order (plan.rs), where QEMU checks it too.
    pub bus: Option<String>,
    /// `addr=slot[.function]`; `None` takes the first free slot.
    pub addr: Option<(u8, u8)>,
    pub multifunction: bool,
}

/// What every virtio-*-pci driver has from QEMU's VirtIOPCIProxy.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VirtioPciProxy {
    pub id: Option<String>,
    pub pci: PciPlacement,
    /// `vectors=`; `None` is the driver's default.
    pub vectors: Option<u16>,
    /// `bootindex=`: its place in the firmware's boot order.
    pub bootindex: Option<u32>,
    /// The QOM type when `-device` named the `*-non-transitional` twin;
    /// `None` is the generic type.
    pub twin: Option<&'static str>,
}

impl VirtioPciProxy {
    /// The QOM type of the function: the twin's name, else `generic`.
    pub fn type_name(&self, generic: &'static str) -> &'static str {
        self.twin.unwrap_or(generic)
    }
}

/// The suffix of the modern-only twin QEMU 7.2 registers beside each
/// virtio-pci device (hw/virtio/virtio-pci.c `virtio_pci_types_register`).
/// ferrovm's virtio functions are modern-only, so the twin is the same
/// device under another name. libvirt places virtio devices on PCIe root
/// ports only when `qom-list-types` lists a twin (qemu_capabilities.c
/// QEMU_CAPS_VIRTIO_PCI_TRANSITIONAL). The `*-transitional` twins, which
/// need the legacy interface, are not built.
pub const NON_TRANSITIONAL: &str = "-non-transitional";

/// The generic type's own properties (`virtio_pci_generic_properties`),
/// which the twins do not have.
const GENERIC_ONLY: &[&str] = &["disable-legacy", "disable-modern"];

pub(super) fn is_twin(driver: &str) -> bool {
    driver.ends_with(NON_TRANSITIONAL)
}

/// QEMU's name for the root bus of a q35 machine.
pub const ROOT_BUS: &str = "pcie.0";

#[derive(Clone, Copy)]
enum Kind {
    Str,
    Bool,
    OnOffAuto,
    U8,
    U16,
    U32,
    /// A block size (`DEFINE_PROP_BLOCKSIZE`): a size with suffixes.
    Size,
    PciDevfn,
    /// `DEFINE_PROP_MACADDR`: six hex pairs split by ':' or '-'.
    Mac,
    /// A signed 64-bit QOM integer (`guest-stats-polling-interval`).
    I64,
    /// Accepted and checked, but only one value is modelled (see `fixed`).
    Fixed(&'static str),
}

/// A `-device` property: how `-device` parses it, and what
/// `device-list-properties` says of it (QEMU's `ObjectPropertyInfo`: the
/// PropertyInfo's type name and description, the qdev default).
struct Prop {
    name: &'static str,
    kind: Kind,
    qtype: &'static str,
    desc: Option<&'static str>,
    default: Def,
}

/// A property's `default-value` as QEMU reports it (none for strings,
/// links and properties without a qdev default).
#[derive(Clone, Copy)]
enum Def {
    None,
    Bool(bool),
    Int(i64),
    Str(&'static str),
    /// An unsigned default beyond i64 (QEMU's -1 of a size property).
    UInt(u64),
}

/// A property whose QEMU type and description follow from its kind
/// (hw/core/qdev-properties.c: `qdev_prop_bool` says "on/off", and so on).
const fn p(name: &'static str, kind: Kind) -> Prop {
    let (qtype, desc) = match kind {
        Kind::Str => ("str", None),
        Kind::Bool => ("bool", Some("on/off")),
        Kind::OnOffAuto => ("OnOffAuto", Some("on/off/auto")),
        Kind::U8 => ("uint8", None),
        Kind::U16 => ("uint16", None),
        Kind::U32 => ("uint32", None),
        Kind::Size => ("size", None),
        Kind::PciDevfn => (
            "int32",
            Some("Slot and optional function number, example: 06.0 or 06"),
        ),
        Kind::Mac => (
            "str",
            Some("Ethernet 6-byte MAC Address, example: 52:54:00:12:34:56"),
        ),
        Kind::I64 => ("int", None),
        Kind::Fixed(_) => ("str", None),
    };
    Prop {
        name,
        kind,
        qtype,
        desc,
        default: Def::None,
    }
}

impl Prop {
    /// QEMU's default value.
    const fn def(mut self, d: Def) -> Self {
        self.default = d;
        self
    }
    /// A type other than the kind's (e.g. `bootindex` is an int32 in QEMU).
    const fn qtype(mut self, t: &'static str) -> Self {
        self.qtype = t;
        self
    }
    /// QEMU's description; `None` where QEMU gives none (e.g. properties
    /// declared with `DEFINE_PROP_BIT` through an alias, or plain QOM ones).
    const fn desc(mut self, d: Option<&'static str>) -> Self {
        self.desc = d;
        self
    }

    /// The `ObjectPropertyInfo` of `device-list-properties`.
    fn info(&self) -> Value {
        let mut m = Map::new();
        m.insert("name".into(), Value::from(self.name));
        m.insert("type".into(), Value::from(self.qtype));
        if let Some(d) = self.desc {
            m.insert("description".into(), Value::from(d));
        }
        match self.default {
            Def::None => {}
            Def::Bool(b) => {
                m.insert("default-value".into(), Value::from(b));
            }
            Def::Int(i) => {
                m.insert("default-value".into(), Value::from(i));
            }
            Def::Str(s) => {
                m.insert("default-value".into(), Value::from(s));
            }
            Def::UInt(u) => {
                m.insert("default-value".into(), Value::from(u));
            }
        }
        Value::Object(m)
    }
}

/// A driver's properties, parsed, in command-line order.
type Parsed = Vec<(&'static str, V)>;

/// The virtio-pci proxy's own properties (hw/virtio/virtio-pci.c);
/// `vectors` is each driver's, since not all have one.
const VIRTIO_PCI_PROXY: &[Prop] = &[
    // `id` and `bus` are DeviceState's, not qdev properties: QEMU does not
    // list them in device-list-properties (see [`NOT_LISTED`]).
    p("id", Kind::Str),
    p("bus", Kind::Str),
    p("addr", Kind::PciDevfn).def(Def::Int(-1)),
    p("multifunction", Kind::Bool).def(Def::Bool(false)),
    // Modern only (docs/known-gaps.md): the transitional device is not built.
    p("disable-legacy", Kind::Fixed("on"))
        .qtype("OnOffAuto")
        .desc(Some("on/off/auto"))
        .def(Def::Str("auto")),
    p("disable-modern", Kind::Fixed("off"))
        .qtype("bool")
        .def(Def::Bool(false)),
    // PCIDevice's option ROM: ferrovm loads none (docs/known-gaps.md), so
    // only `romfile=` (none) is accepted; `rombar` then has nothing to map.
    p("romfile", Kind::Str),
    p("rombar", Kind::U32).def(Def::Int(1)),
];

/// What a plain PCI function (not virtio) accepts from QEMU's PCIDevice
/// (hw/pci/pci.c `pci_props`), as far as ferrovm models it: no option ROM
/// (see [`VIRTIO_PCI_PROXY`]), no failover pairing, no ACPI index.
const PCI_DEVICE: &[Prop] = &[
    p("id", Kind::Str),
    p("bus", Kind::Str),
    p("addr", Kind::PciDevfn).def(Def::Int(-1)),
    p("multifunction", Kind::Bool).def(Def::Bool(false)),
    p("romfile", Kind::Str),
    p("rombar", Kind::U32).def(Def::Int(1)),
];

/// A plain PCI function's `id`, `bus` and `addr`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PciFunctionRequest {
    pub id: Option<String>,
    pub pci: PciPlacement,
}

impl PciFunctionRequest {
    /// Takes [`PCI_DEVICE`]'s properties out of a parsed list, leaving the
    /// device's own; checks `bus=` and `romfile=`.
    fn take(props: Parsed) -> Result<(Self, Parsed), String> {
        let (proxy, rest) = VirtioPciProxy::take(props)?;
        let r = Self {
            id: proxy.id,
            pci: proxy.pci,
        };
        Ok((r, rest))
    }
}

/// What every ISA device accepts besides its own properties: `id` and
/// `bus` (DeviceState's; the ISA bus is `isa.0`). Neither is listed.
const ISA_DEVICE: &[Prop] = &[p("id", Kind::Str), p("bus", Kind::Str)];

/// Accepted by `-device` but not qdev properties in QEMU.
const NOT_LISTED: &[&str] = &["id", "bus"];

/// A parsed property value.
#[derive(Debug, Clone, PartialEq)]
enum V {
    Str(String),
    Bool(bool),
    OnOffAuto(Option<bool>),
    Num(u64),
    Devfn(u8, u8),
    Mac([u8; 6]),
    Int(i64),
}

/// A driver `-device` builds: its QOM name, what `-device help` says of
/// it, and its properties after its kind's (`base`).
pub struct Driver {
    pub name: &'static str,
    /// `-device help`'s `desc` (QEMU's `dc->desc`, empty for most), its `alias` (`virtio-blk` for
    /// virtio-blk-pci), its bus type and category.
    pub desc: &'static str,
    pub alias: Option<&'static str>,
    pub bus: &'static str,
    pub category: help::Category,
    /// The QOM parent type (QEMU's `virtio_pci_types_register()` gives each
    /// virtio-pci driver an abstract `*-base` parent below `virtio-pci`).
    pub parent: &'static str,
    /// The parent's own parent when it is not in [`ABSTRACT_ANCESTORS`]
    /// (`virtio-pci` for the `*-base` types).
    pub grandparent: Option<&'static str>,
    /// The properties the kind of device shares: [`VIRTIO_PCI_PROXY`],
    /// [`PCI_DEVICE`] or [`ISA_DEVICE`].
    base: &'static [Prop],
    props: &'static [Prop],
    parse: fn(&Map<String, Value>, u16) -> Result<DeviceRequest, String>,
}

/// The abstract QOM types above every driver in [`DRIVERS`], each with its
/// parent (hw/virtio/virtio-pci.c, hw/pci/pci.c, hw/core/qdev.c).
pub const ABSTRACT_ANCESTORS: &[(&str, &str)] = &[
    ("virtio-pci", "pci-device"),
    ("pci-device", "device"),
    ("pcie-root-port-base", "pcie-slot"),
    ("pcie-slot", "pcie-port"),
    ("pcie-port", "base-pci-bridge"),
    ("base-pci-bridge", "pci-device"),
    ("isa-device", "device"),
    ("device", "object"),
];

impl Driver {
    /// Every property name `-device` accepts, the base's first.
    pub fn property_names(&self) -> impl Iterator<Item = &'static str> {
        self.base.iter().chain(self.props).map(|p| p.name)
    }

    /// `device-list-properties`: every qdev property `-device` accepts for
    /// this driver, in QEMU's `ObjectPropertyInfo` shape.
    pub fn property_infos(&self) -> Vec<Value> {
        self.base
            .iter()
            .chain(self.props)
            .filter(|p| !NOT_LISTED.contains(&p.name))
            .filter(|p| !(is_twin(self.name) && GENERIC_ONLY.contains(&p.name)))
            .map(Prop::info)
            .collect()
    }
}

/// The drivers ferrovm builds from `-device` (besides `isa-serial` and
/// `isa-debugcon`, which are the console's front-ends).
pub const DRIVERS: &[Driver] = &[
    Driver {
        name: "virtio-blk-pci",
        desc: "",
        alias: Some("virtio-blk"),
        bus: "PCI",
        category: help::Category::Storage,
        parent: "virtio-blk-pci-base",
        grandparent: Some("virtio-pci"),
        base: VIRTIO_PCI_PROXY,
        props: blk::PROPS,
        parse: |d, cpus| blk::parse(d, cpus, "virtio-blk-pci").map(DeviceRequest::VirtioBlkPci),
    },
    Driver {
        name: "virtio-blk-pci-non-transitional",
        desc: "",
        alias: None,
        bus: "PCI",
        category: help::Category::Storage,
        parent: "virtio-blk-pci-base",
        grandparent: Some("virtio-pci"),
        base: VIRTIO_PCI_PROXY,
        props: blk::PROPS,
        parse: |d, cpus| {
            blk::parse(d, cpus, "virtio-blk-pci-non-transitional").map(DeviceRequest::VirtioBlkPci)
        },
    },
    Driver {
        name: "virtio-net-pci",
        desc: "",
        alias: Some("virtio-net"),
        bus: "PCI",
        category: help::Category::Network,
        parent: "virtio-net-pci-base",
        grandparent: Some("virtio-pci"),
        base: VIRTIO_PCI_PROXY,
        props: net::PROPS,
        parse: |d, _| net::parse(d, "virtio-net-pci").map(DeviceRequest::VirtioNetPci),
    },
    Driver {
        name: "virtio-net-pci-non-transitional",
        desc: "",
        alias: None,
        bus: "PCI",
        category: help::Category::Network,
        parent: "virtio-net-pci-base",
        grandparent: Some("virtio-pci"),
        base: VIRTIO_PCI_PROXY,
        props: net::PROPS,
        parse: |d, _| {
            net::parse(d, "virtio-net-pci-non-transitional").map(DeviceRequest::VirtioNetPci)
        },
    },
    Driver {
        name: "virtio-balloon-pci",
        desc: "",
        alias: Some("virtio-balloon"),
        bus: "PCI",
        category: help::Category::Misc,
        parent: "virtio-balloon-pci-base",
        grandparent: Some("virtio-pci"),
        base: VIRTIO_PCI_PROXY,
        props: balloon::PROPS,
        parse: |d, _| balloon::parse(d, "virtio-balloon-pci").map(DeviceRequest::VirtioBalloonPci),
    },
    Driver {
        name: "virtio-balloon-pci-non-transitional",
        desc: "",
        alias: None,
        bus: "PCI",
        category: help::Category::Misc,
        parent: "virtio-balloon-pci-base",
        grandparent: Some("virtio-pci"),
        base: VIRTIO_PCI_PROXY,
        props: balloon::PROPS,
        parse: |d, _| {
            balloon::parse(d, "virtio-balloon-pci-non-transitional")
                .map(DeviceRequest::VirtioBalloonPci)
        },
    },
    Driver {
        name: "pvpanic",
        desc: "",
        alias: None,
        bus: "ISA",
        category: help::Category::Misc,
        parent: "isa-device",
        grandparent: None,
        base: ISA_DEVICE,
        props: pvpanic::PROPS,
        parse: |d, _| pvpanic::parse(d).map(DeviceRequest::PvPanicIsa),
    },
    Driver {
        name: "pvpanic-pci",
        desc: "",
        alias: None,
        bus: "PCI",
        category: help::Category::Misc,
        parent: "pci-device",
        grandparent: None,
        base: PCI_DEVICE,
        props: pvpanic::PROPS_PCI,
        parse: |d, _| pvpanic::parse_pci(d).map(DeviceRequest::PvPanicPci),
    },
    Driver {
        name: "i6300esb",
        desc: "Intel 6300ESB",
        alias: None,
        bus: "PCI",
        category: help::Category::Watchdog,
        parent: "pci-device",
        grandparent: None,
        base: PCI_DEVICE,
        props: &[],
        parse: |d, _| watchdog::parse(d).map(DeviceRequest::I6300Esb),
    },
    Driver {
        name: "pcie-root-port",
        desc: "PCI Express Root Port",
        alias: None,
        bus: "PCI",
        category: help::Category::Bridge,
        parent: "pcie-root-port-base",
        grandparent: None,
        base: PCI_DEVICE,
        props: bridge::PROPS_ROOT_PORT,
        parse: |d, _| bridge::parse_root_port(d).map(DeviceRequest::PcieRootPort),
    },
    Driver {
        name: "pcie-pci-bridge",
        desc: "",
        alias: None,
        bus: "PCI",
        category: help::Category::Bridge,
        parent: "base-pci-bridge",
        grandparent: None,
        base: PCI_DEVICE,
        props: &[],
        parse: |d, _| bridge::parse_pci_bridge(d).map(DeviceRequest::PciePciBridge),
    },
    Driver {
        name: "qemu-xhci",
        desc: "",
        alias: None,
        bus: "PCI",
        category: help::Category::Usb,
        parent: "pci-xhci",
        grandparent: Some("pci-device"),
        base: PCI_DEVICE,
        props: xhci::PROPS,
        parse: |d, _| xhci::parse(d).map(DeviceRequest::Xhci),
    },
];

/// QEMU's check of `bus=` when a device is created: the bus must exist by
/// then (qdev-monitor.c `qbus_find`: "Bus 'X' not found"). `known` holds
/// the ids of the bridges created so far.
pub fn check_bus(request: &DeviceRequest, known: &[String]) -> Result<(), String> {
    match request.pci_bus() {
        Some(b) if !known.iter().any(|k| k == b) => Err(format!("Bus '{b}' not found")),
        _ => Ok(()),
    }
}

/// The registry entry for `name` or its alias (QEMU's
/// `qdev_class_get_alias`: `-device virtio-blk` is virtio-blk-pci on q35).
pub fn driver(name: &str) -> Option<&'static Driver> {
    DRIVERS
        .iter()
        .find(|d| d.name == name || d.alias == Some(name))
}

/// Parses one `-device` object. `cpus` feeds virtio-blk's automatic
/// queue count. Errors are QEMU's message without the `-device ARG:` prefix.
pub fn parse(dev: &Map<String, Value>, cpus: u16) -> Result<DeviceRequest, String> {
    let name = dev.get("driver").and_then(Value::as_str).unwrap_or("");
    match driver(name) {
        Some(d) => (d.parse)(dev, cpus),
        None => Err(format!("'{name}' is not a valid device model name")),
    }
}

/// Checks every member of `dev` against the proxy's and `table`'s
/// properties and parses its value.
/// The device's own properties are aliases of the virtio device inside the
/// proxy (`inner`, e.g. `virtio-net-device`), and QEMU's messages name it.
fn props(
    driver: &str,
    inner: &str,
    table: &[Prop],
    dev: &Map<String, Value>,
) -> Result<Parsed, String> {
    if is_twin(driver) {
        if let Some(k) = dev.keys().find(|k| GENERIC_ONLY.contains(&k.as_str())) {
            return Err(format!("Property '{driver}.{k}' not found"));
        }
    }
    props_on(VIRTIO_PCI_PROXY, driver, inner, table, dev)
}

/// [`props`] over another `base` table (an ISA device's).
fn props_on(
    base: &[Prop],
    driver: &str,
    inner: &str,
    table: &[Prop],
    dev: &Map<String, Value>,
) -> Result<Parsed, String> {
    let mut out = Vec::new();
    for (k, v) in dev {
        if k == "driver" {
            continue;
        }
        let parsed = if let Some(prop) = base.iter().find(|p| p.name == k) {
            (prop.name, value(driver, prop, v)?)
        } else if let Some(prop) = table.iter().find(|p| p.name == k) {
            (prop.name, value(inner, prop, v)?)
        } else {
            return Err(format!("Property '{driver}.{k}' not found"));
        };
        out.push(parsed);
    }
    Ok(out)
}

impl VirtioPciProxy {
    /// Takes the proxy's properties (and `vectors`, `bootindex`) out of a
    /// parsed list, leaving the device's own; checks `bus=`.
    fn take(props: Parsed) -> Result<(Self, Parsed), String> {
        let mut proxy = Self::default();
        let mut rest = Vec::new();
        for (name, v) in props {
            match (name, v) {
                ("id", V::Str(s)) => proxy.id = Some(s),
                ("bus", V::Str(bus)) if bus != ROOT_BUS => proxy.pci.bus = Some(bus),
                ("romfile", V::Str(f)) if !f.is_empty() => {
                    return Err(format!(
                        "romfile={f}: ferrovm loads no PCI option ROMs; use romfile= (none)"
                    ))
                }
                ("bus", _)
                | ("disable-legacy", _)
                | ("disable-modern", _)
                | ("romfile", _)
                | ("rombar", _) => {}
                ("addr", V::Devfn(s, f)) => proxy.pci.addr = Some((s, f)),
                ("multifunction", V::Bool(x)) => proxy.pci.multifunction = x,
                ("vectors", V::Num(n)) => proxy.vectors = Some(n.min(2048) as u16),
                ("bootindex", V::Num(n)) => proxy.bootindex = Some(n as u32),
                other => rest.push(other),
            }
        }
        Ok((proxy, rest))
    }
}

fn value(driver: &str, prop: &Prop, v: &Value) -> Result<V, String> {
    let name = prop.name;
    // Keyval leaves arrive as strings; JSON syntax keeps its types.
    let text = match v {
        Value::String(s) => Some(s.as_str()),
        _ => None,
    };
    let bad_type = |what: &str| format!("Parameter '{name}' expects {what}");
    match prop.kind {
        Kind::Str => match v {
            Value::String(s) => Ok(V::Str(s.clone())),
            _ => Err(format!(
                "Invalid parameter type for '{name}', expected: string"
            )),
        },
        Kind::Bool => match (v, text) {
            (Value::Bool(b), _) => Ok(V::Bool(*b)),
            (_, Some("on" | "yes" | "true" | "y")) => Ok(V::Bool(true)),
            (_, Some("off" | "no" | "false" | "n")) => Ok(V::Bool(false)),
            _ => Err(format!("Parameter '{name}' expects 'on' or 'off'")),
        },
        Kind::OnOffAuto => match (v, text) {
            (_, Some("on")) => Ok(V::OnOffAuto(Some(true))),
            (_, Some("off")) => Ok(V::OnOffAuto(Some(false))),
            (_, Some("auto")) => Ok(V::OnOffAuto(None)),
            (_, Some(t)) => Err(format!("Parameter '{name}' does not accept value '{t}'")),
            _ => Err(format!(
                "Invalid parameter type for '{name}', expected: string"
            )),
        },
        Kind::U8 | Kind::U16 | Kind::U32 => {
            let n = match (v, text) {
                (Value::Number(n), _) => n.as_u64(),
                (_, Some(t)) => parse_uint(t),
                _ => None,
            }
            .ok_or_else(|| bad_type("integer"))?;
            let bits = match prop.kind {
                Kind::U8 => 8,
                Kind::U16 => 16,
                _ => 32,
            };
            if n >> bits != 0 {
                return Err(format!("Parameter '{name}' expects uint{bits}_t"));
            }
            Ok(V::Num(n))
        }
        Kind::Size => match (v, text) {
            (Value::Number(n), _) => n
                .as_u64()
                .map(V::Num)
                .ok_or_else(|| bad_type("a size value")),
            (_, Some(t)) => cli_size(t)
                .map(V::Num)
                .ok_or_else(|| bad_type("a size value")),
            _ => Err(bad_type("a size value")),
        },
        Kind::PciDevfn => {
            let t = text.unwrap_or_default();
            devfn(t)
                .map(|(s, f)| V::Devfn(s, f))
                .ok_or_else(|| format!("Property '{driver}.{name}' doesn't take value '{t}'"))
        }
        Kind::Mac => {
            let t = text.unwrap_or_default();
            mac(t)
                .map(V::Mac)
                .ok_or_else(|| format!("Property '{driver}.{name}' doesn't take value '{t}'"))
        }
        Kind::I64 => match (v, text) {
            (Value::Number(n), _) => n.as_i64(),
            (_, Some(t)) => t.parse().ok(),
            _ => None,
        }
        .map(V::Int)
        .ok_or_else(|| bad_type("integer")),
        Kind::Fixed(only) => {
            let t = match (v, text) {
                (Value::Bool(true), _) => "on",
                (Value::Bool(false), _) => "off",
                (_, Some(t)) => t,
                _ => "",
            };
            let t = match t {
                "yes" | "true" | "y" => "on",
                "no" | "false" | "n" => "off",
                other => other,
            };
            if t == only || t == "auto" {
                Ok(V::Str(only.into()))
            } else {
                Err(format!(
                    "ferrovm supports only {name}={only} for {driver} (modern virtio 1.x devices)"
                ))
            }
        }
    }
}

/// QEMU's `qemu_strtou64`-based integer visitor: decimal, 0x hex, 0 octal.
pub(crate) fn parse_uint(t: &str) -> Option<u64> {
    if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        u64::from_str_radix(h, 16).ok()
    } else if t.len() > 1 && t.starts_with('0') {
        u64::from_str_radix(&t[1..], 8).ok()
    } else {
        t.parse().ok()
    }
}

/// A size with QEMU's suffixes (k, M, G, T; B for bytes).
fn cli_size(t: &str) -> Option<u64> {
    let (num, mul) = match t.char_indices().last()? {
        (i, 'k' | 'K') => (&t[..i], 1u64 << 10),
        (i, 'm' | 'M') => (&t[..i], 1 << 20),
        (i, 'g' | 'G') => (&t[..i], 1 << 30),
        (i, 't' | 'T') => (&t[..i], 1 << 40),
        (i, 'b' | 'B') => (&t[..i], 1),
        _ => (t, 1),
    };
    parse_uint(num)?.checked_mul(mul)
}

/// `addr=`: `slot[.function]` in hex (QEMU's `set_pci_devfn`: slot < 32,
/// function < 8; an optional 0x prefix).
fn devfn(t: &str) -> Option<(u8, u8)> {
    let hex = |s: &str| {
        let s = s.strip_prefix("0x").unwrap_or(s);
        (!s.is_empty() && s.len() <= 2).then(|| u8::from_str_radix(s, 16).ok())?
    };
    let (slot, func) = match t.split_once('.') {
        Some((s, f)) => (hex(s)?, hex(f)?),
        None => (hex(t)?, 0),
    };
    (slot < 32 && func < 8).then_some((slot, func))
}

/// `mac=`: QEMU's `set_mac` (hw/core/qdev-properties-system.c): six pairs
/// of hex digits, each pair but the last followed by ':' or '-'.
fn mac(t: &str) -> Option<[u8; 6]> {
    let b = t.as_bytes();
    if b.len() != 17 {
        return None;
    }
    let mut out = [0u8; 6];
    for (i, o) in out.iter_mut().enumerate() {
        let pair = t.get(i * 3..i * 3 + 2)?;
        if !pair.bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        *o = u8::from_str_radix(pair, 16).ok()?;
        if i < 5 && !matches!(b[i * 3 + 2], b':' | b'-') {
            return None;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use devices::virtio::block::WriteCache;
    use serde_json::json;

    fn parse_kv(s: &str) -> Result<DeviceRequest, String> {
        let mut m = Map::new();
        for (i, kv) in s.split(',').enumerate() {
            match kv.split_once('=') {
                Some((k, v)) => m.insert(k.into(), json!(v)),
                None if i == 0 => m.insert("driver".into(), json!(kv)),
                None => m.insert(kv.into(), json!("on")),
            };
        }
        parse(&m, 2)
    }

    /// Messages as QEMU 7.2 prints them for the same `-device` arguments
    /// (run against qemu-system-x86_64 -machine q35 with -drive id=d0).
    #[test]
    fn errors_are_qemus() {
        let cases = [
            (
                "virtio-blk-pci,drive=d0,foo=1",
                "Property 'virtio-blk-pci.foo' not found",
            ),
            ("virtio-blk-pci", "drive property not set"),
            (
                "virtio-blk-pci,drive=d0,num-queues=x",
                "Parameter 'num-queues' expects integer",
            ),
            (
                "virtio-blk-pci,drive=d0,addr=0x40",
                "Property 'virtio-blk-pci.addr' doesn't take value '0x40'",
            ),
            (
                "virtio-blk-pci,drive=d0,addr=zz",
                "Property 'virtio-blk-pci.addr' doesn't take value 'zz'",
            ),
            (
                "virtio-blk-pci,drive=d0,write-cache=maybe",
                "Parameter 'write-cache' does not accept value 'maybe'",
            ),
            (
                "nosuch,drive=d0",
                "'nosuch' is not a valid device model name",
            ),
        ];
        for (arg, want) in cases {
            assert_eq!(parse_kv(arg).unwrap_err(), want, "{arg}");
        }
    }

    #[test]
    fn properties_reach_the_device_options() {
        let Ok(DeviceRequest::VirtioBlkPci(d)) = parse_kv(
            "virtio-blk-pci,drive=d0,id=vd0,addr=0x5.1,multifunction=on,serial=abc,num-queues=4,\
             queue-size=128,write-cache=off,logical_block_size=4k,physical_block_size=4096,bus=pcie.0,\
             disable-legacy=on",
        ) else {
            panic!("not a virtio-blk-pci")
        };
        assert_eq!(d.proxy.id.as_deref(), Some("vd0"));
        assert_eq!(d.drive, "d0");
        assert_eq!(
            d.proxy.pci,
            PciPlacement {
                bus: None,
                addr: Some((5, 1)),
                multifunction: true
            }
        );
        assert_eq!(d.blk.serial.as_deref(), Some("abc"));
        assert_eq!(d.blk.num_queues, Some(4));
        assert_eq!(d.blk.queue_size, 128);
        assert_eq!(d.blk.write_cache, WriteCache::Off);
        assert_eq!(
            (d.blk.logical_block_size, d.blk.physical_block_size),
            (4096, 4096)
        );
        assert_eq!(d.blk.cpus, 2);
        assert_eq!(d.blk.id, "vd0");
    }

    #[test]
    fn json_syntax_keeps_types_and_legacy_virtio_is_refused() {
        let m =
            json!({"driver": "virtio-blk-pci", "drive": "d0", "num-queues": 2, "share-rw": true});
        let Ok(DeviceRequest::VirtioBlkPci(d)) = parse(m.as_object().unwrap(), 1) else {
            panic!("not a virtio-blk-pci")
        };
        assert_eq!(d.blk.num_queues, Some(2));
        assert!(d.share_rw);
        let e = parse_kv("virtio-blk-pci,drive=d0,disable-legacy=off").unwrap_err();
        assert!(e.contains("disable-legacy=on"), "{e}");
    }

    #[test]
    fn non_transitional_twin_is_the_same_device_under_its_own_name() {
        let Ok(DeviceRequest::VirtioBlkPci(d)) =
            parse_kv("virtio-blk-pci-non-transitional,drive=d0,id=v0")
        else {
            panic!("not a virtio-blk-pci")
        };
        assert_eq!(d.drive, "d0");
        assert_eq!(
            d.proxy.type_name("virtio-blk-pci"),
            "virtio-blk-pci-non-transitional"
        );
        // QEMU 7.2's words: the twin has no generic-type properties.
        assert_eq!(
            parse_kv("virtio-net-pci-non-transitional,disable-legacy=on").unwrap_err(),
            "Property 'virtio-net-pci-non-transitional.disable-legacy' not found"
        );
        let Ok(DeviceRequest::VirtioBalloonPci(b)) = parse_kv("virtio-balloon-pci") else {
            panic!("not a balloon")
        };
        assert_eq!(
            b.proxy.type_name("virtio-balloon-pci"),
            "virtio-balloon-pci"
        );
    }

    #[test]
    fn devfn_syntax() {
        assert_eq!(devfn("1f"), Some((0x1f, 0)));
        assert_eq!(devfn("0x3.7"), Some((3, 7)));
        assert_eq!(devfn("3.8"), None);
        assert_eq!(devfn("20"), None);
        assert_eq!(devfn(""), None);
        assert_eq!(devfn("123"), None);
    }

    /// QEMU 7.2's answers for the same arguments (`-device ARG` on q35).
    #[test]
    fn net_and_balloon_errors_are_qemus() {
        let cases = [
            (
                "virtio-net-pci,mac=52:54:00:12:34",
                "Property 'virtio-net-device.mac' doesn't take value '52:54:00:12:34'",
            ),
            (
                "virtio-net-pci,mac=52:54:00:12:34:zz",
                "Property 'virtio-net-device.mac' doesn't take value '52:54:00:12:34:zz'",
            ),
            (
                "virtio-net-pci,vhost=on",
                "Property 'virtio-net-pci.vhost' not found",
            ),
            (
                "virtio-balloon-pci,vectors=2",
                "Property 'virtio-balloon-pci.vectors' not found",
            ),
            (
                "virtio-balloon-pci,deflate-on-oom=maybe",
                "Parameter 'deflate-on-oom' expects 'on' or 'off'",
            ),
            (
                "virtio-balloon-pci,guest-stats-polling-interval=x",
                "Parameter 'guest-stats-polling-interval' expects integer",
            ),
        ];
        for (arg, want) in cases {
            assert_eq!(parse_kv(arg).unwrap_err(), want, "{arg}");
        }
    }

    #[test]
    fn net_properties_reach_the_request() {
        let Ok(DeviceRequest::VirtioNetPci(n)) = parse_kv(
            "virtio-net-pci,netdev=n0,mac=52-54-00-ab-cd-ef,id=nic0,mq=on,csum=off,host_mtu=9000,\
             rx_queue_size=1024,addr=4,vectors=10,bootindex=2",
        ) else {
            panic!("not a virtio-net-pci")
        };
        assert_eq!(n.netdev.as_deref(), Some("n0"));
        assert_eq!(n.mac, Some([0x52, 0x54, 0, 0xab, 0xcd, 0xef]));
        assert_eq!(n.proxy.id.as_deref(), Some("nic0"));
        assert_eq!(n.proxy.pci.addr, Some((4, 0)));
        assert_eq!((n.proxy.vectors, n.proxy.bootindex), (Some(10), Some(2)));
        assert!(n.feature("mq") && !n.feature("csum") && n.feature("mrg_rxbuf"));
        assert_eq!((n.host_mtu, n.rx_queue_size), (Some(9000), Some(1024)));
    }

    /// `bus=` must name pcie.0 or a bridge created earlier (QEMU 7.2:
    /// `-device virtio-blk-pci,drive=d0,bus=pci.0` on q35 says "Bus 'pci.0'
    /// not found", as does a bus=pci.1 given before its root port).
    #[test]
    fn unknown_buses_are_refused_in_device_order() {
        let blk = |bus: &str| parse_kv(&format!("virtio-blk-pci,drive=d0,bus={bus}")).unwrap();
        assert_eq!(
            check_bus(&blk("pci.0"), &[]).unwrap_err(),
            "Bus 'pci.0' not found"
        );
        assert_eq!(
            check_bus(&blk("pcie.1"), &[]).unwrap_err(),
            "Bus 'pcie.1' not found"
        );
        assert_eq!(check_bus(&blk("pcie.0"), &[]), Ok(()));
        assert_eq!(check_bus(&blk("pci.1"), &["pci.1".into()]), Ok(()));
    }
}
