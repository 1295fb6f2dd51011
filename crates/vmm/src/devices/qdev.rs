//! `-device` properties: QEMU's qdev property types, parsed from the command
//! line's JSON object with QEMU 7.2's messages (hw/core/qdev-properties.c,
//! qapi/qobject-input-visitor.c), into the typed options of each device model.
//! Each driver declares its properties once, in a table.

use serde_json::{Map, Value};

use devices::virtio::block::{BlkOptions, WriteCache};

/// A `-device` that ferrovm builds.
#[derive(Debug, Clone, PartialEq)]
pub enum DeviceRequest {
    VirtioBlkPci(VirtioBlkPci),
}

/// Where a PCI function goes: `bus=` (only the root bus exists) and `addr=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PciPlacement {
    /// `addr=slot[.function]`; `None` takes the first free slot.
    pub addr: Option<(u8, u8)>,
    pub multifunction: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VirtioBlkPci {
    pub id: Option<String>,
    pub drive: String,
    pub share_rw: bool,
    pub pci: PciPlacement,
    /// `vectors=`; `None` is QEMU's default (queues + 1).
    pub vectors: Option<u16>,
    /// `bootindex=`: its place in the firmware's boot order.
    pub bootindex: Option<u32>,
    pub blk: BlkOptions,
}

/// QEMU's name for the root bus of a q35 machine.
pub const ROOT_BUS: &str = "pcie.0";

#[derive(Clone, Copy)]
enum Kind {
    Str,
    Bool,
    OnOffAuto,
    U16,
    U32,
    /// A block size (`DEFINE_PROP_BLOCKSIZE`): a size with suffixes.
    Size,
    PciDevfn,
    /// Accepted and checked, but only one value is modelled (see `fixed`).
    Fixed(&'static str),
}

struct Prop {
    name: &'static str,
    kind: Kind,
}

const fn p(name: &'static str, kind: Kind) -> Prop {
    Prop { name, kind }
}

/// virtio-blk-pci's properties: the PCI proxy's, then the virtio-blk
/// device's (hw/virtio/virtio-pci.c, hw/block/virtio-blk.c).
const VIRTIO_BLK_PCI: &[Prop] = &[
    p("id", Kind::Str),
    p("bus", Kind::Str),
    p("addr", Kind::PciDevfn),
    p("multifunction", Kind::Bool),
    p("vectors", Kind::U32),
    // Modern only (docs/known-gaps.md): the transitional device is not built.
    p("disable-legacy", Kind::Fixed("on")),
    p("disable-modern", Kind::Fixed("off")),
    p("drive", Kind::Str),
    p("share-rw", Kind::Bool),
    p("serial", Kind::Str),
    p("num-queues", Kind::U16),
    p("queue-size", Kind::U16),
    p("write-cache", Kind::OnOffAuto),
    p("logical_block_size", Kind::Size),
    p("physical_block_size", Kind::Size),
    p("min_io_size", Kind::Size),
    p("opt_io_size", Kind::Size),
    p("discard_granularity", Kind::Size),
    p("config-wce", Kind::Bool),
    p("discard", Kind::Bool),
    p("write-zeroes", Kind::Bool),
    p("max-discard-sectors", Kind::U32),
    p("max-write-zeroes-sectors", Kind::U32),
    p("seg-max-adjust", Kind::Bool),
    p("bootindex", Kind::U32),
];

/// A parsed property value.
#[derive(Debug, Clone, PartialEq)]
enum V {
    Str(String),
    Bool(bool),
    OnOffAuto(Option<bool>),
    Num(u64),
    Devfn(u8, u8),
}

/// The drivers ferrovm builds from `-device` (besides `isa-serial`, which
/// is COM1's front-end).
pub const DRIVERS: &[&str] = &["virtio-blk-pci"];

/// Parses one `-device` object. `cpus` feeds virtio-blk's automatic
/// queue count. Errors are QEMU's message without the `-device ARG:` prefix.
pub fn parse(dev: &Map<String, Value>, cpus: u16) -> Result<DeviceRequest, String> {
    let driver = dev.get("driver").and_then(Value::as_str).unwrap_or("");
    match driver {
        "virtio-blk-pci" => virtio_blk_pci(dev, cpus).map(DeviceRequest::VirtioBlkPci),
        d => Err(format!("'{d}' is not a valid device model name")),
    }
}

fn props(
    driver: &str,
    table: &[Prop],
    dev: &Map<String, Value>,
) -> Result<Vec<(&'static str, V)>, String> {
    let mut out = Vec::new();
    for (k, v) in dev {
        if k == "driver" {
            continue;
        }
        let Some(prop) = table.iter().find(|p| p.name == k) else {
            return Err(format!("Property '{driver}.{k}' not found"));
        };
        out.push((prop.name, value(driver, prop, v)?));
    }
    Ok(out)
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
        Kind::U16 | Kind::U32 => {
            let n = match (v, text) {
                (Value::Number(n), _) => n.as_u64(),
                (_, Some(t)) => parse_uint(t),
                _ => None,
            }
            .ok_or_else(|| bad_type("integer"))?;
            let max = if matches!(prop.kind, Kind::U16) {
                u64::from(u16::MAX)
            } else {
                u64::from(u32::MAX)
            };
            if n > max {
                return Err(format!(
                    "Parameter '{name}' expects uint{}",
                    if max == u64::from(u16::MAX) { 16 } else { 32 }
                ));
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

fn virtio_blk_pci(dev: &Map<String, Value>, cpus: u16) -> Result<VirtioBlkPci, String> {
    let mut r = VirtioBlkPci {
        id: None,
        drive: String::new(),
        share_rw: false,
        pci: PciPlacement::default(),
        vectors: None,
        bootindex: None,
        blk: BlkOptions {
            cpus,
            ..BlkOptions::default()
        },
    };
    let mut bus = None;
    for (name, v) in props("virtio-blk-pci", VIRTIO_BLK_PCI, dev)? {
        let b = &mut r.blk;
        match (name, v) {
            ("id", V::Str(s)) => r.id = Some(s),
            ("bus", V::Str(s)) => bus = Some(s),
            ("addr", V::Devfn(s, f)) => r.pci.addr = Some((s, f)),
            ("multifunction", V::Bool(x)) => r.pci.multifunction = x,
            ("vectors", V::Num(n)) => r.vectors = Some(n.min(2048) as u16),
            ("bootindex", V::Num(n)) => r.bootindex = Some(n as u32),
            ("drive", V::Str(s)) => r.drive = s,
            ("share-rw", V::Bool(x)) => r.share_rw = x,
            ("serial", V::Str(s)) => b.serial = Some(s),
            ("num-queues", V::Num(n)) => b.num_queues = Some(n as u16),
            ("queue-size", V::Num(n)) => b.queue_size = n as u16,
            ("write-cache", V::OnOffAuto(x)) => {
                b.write_cache = match x {
                    Some(true) => WriteCache::On,
                    Some(false) => WriteCache::Off,
                    None => WriteCache::Auto,
                }
            }
            ("logical_block_size", V::Num(n)) => b.logical_block_size = n,
            ("physical_block_size", V::Num(n)) => b.physical_block_size = n,
            ("min_io_size", V::Num(n)) => b.min_io_size = n.min(u64::from(u32::MAX)) as u32,
            ("opt_io_size", V::Num(n)) => b.opt_io_size = n.min(u64::from(u32::MAX)) as u32,
            ("discard_granularity", V::Num(n)) => {
                b.discard_granularity = Some(n.min(u64::from(u32::MAX)) as u32)
            }
            ("config-wce", V::Bool(x)) => b.config_wce = x,
            ("discard", V::Bool(x)) => b.discard = x,
            ("write-zeroes", V::Bool(x)) => b.write_zeroes = x,
            ("max-discard-sectors", V::Num(n)) => b.max_discard_sectors = n as u32,
            ("max-write-zeroes-sectors", V::Num(n)) => b.max_write_zeroes_sectors = n as u32,
            ("seg-max-adjust", V::Bool(x)) => b.seg_max_adjust = x,
            _ => {}
        }
    }
    if let Some(bus) = bus {
        if bus != ROOT_BUS {
            return Err(format!("Bus '{bus}' not found"));
        }
    }
    if r.drive.is_empty() {
        return Err("drive property not set".into());
    }
    r.blk.id = r.id.clone().unwrap_or_default();
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
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
            ("virtio-blk-pci,drive=d0,bus=pci.0", "Bus 'pci.0' not found"),
            (
                "virtio-blk-pci,drive=d0,bus=pcie.1",
                "Bus 'pcie.1' not found",
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
        let DeviceRequest::VirtioBlkPci(d) = parse_kv(
            "virtio-blk-pci,drive=d0,id=vd0,addr=0x5.1,multifunction=on,serial=abc,num-queues=4,\
             queue-size=128,write-cache=off,logical_block_size=4k,physical_block_size=4096,bus=pcie.0,\
             disable-legacy=on",
        )
        .unwrap();
        assert_eq!(d.id.as_deref(), Some("vd0"));
        assert_eq!(d.drive, "d0");
        assert_eq!(
            d.pci,
            PciPlacement {
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
        let DeviceRequest::VirtioBlkPci(d) = parse(m.as_object().unwrap(), 1).unwrap();
        assert_eq!(d.blk.num_queues, Some(2));
        assert!(d.share_rw);
        let e = parse_kv("virtio-blk-pci,drive=d0,disable-legacy=off").unwrap_err();
        assert!(e.contains("disable-legacy=on"), "{e}");
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
}
