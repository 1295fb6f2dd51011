//! `-drive` and `-blockdev`.

use crate::builder::{Builder, Inv};
use crate::config::{DriveInterface, DriveSpec};
use crate::error::CliError;
use crate::schema::{id_wellformed, key, Kind, Schema};
use crate::table::Parsed;
use serde_json::{Map, Value};
use std::path::PathBuf;

/// `-drive`: these keys are checked; any other key is kept as a string for
/// the block layer (format and protocol options such as `file.locking=off`).
pub(crate) const DRIVE_SCHEMA: Schema = Schema {
    implied: None,
    keys: &[
        key("id", Kind::Id),
        key("file", Kind::Str),
        key("if", Kind::Enum(DriveInterface::NAMES)),
        key("format", Kind::Str),
        key("node-name", Kind::Str),
        key("media", Kind::Enum(&["disk", "cdrom"])),
        key("index", Kind::Number),
        key("bus", Kind::Number),
        key("unit", Kind::Number),
        key("readonly", Kind::Bool),
        key("read-only", Kind::Bool),
        key("snapshot", Kind::Bool),
        key(
            "cache",
            Kind::Enum(&["none", "writeback", "unsafe", "directsync", "writethrough"]),
        ),
        key("aio", Kind::Enum(&["threads", "native", "io_uring"])),
        key("discard", Kind::Enum(&["ignore", "off", "unmap", "on"])),
        key("detect-zeroes", Kind::Enum(&["off", "on", "unmap"])),
        key(
            "werror",
            Kind::Enum(&["ignore", "stop", "report", "enospc"]),
        ),
        key("rerror", Kind::Enum(&["ignore", "stop", "report"])),
        key("serial", Kind::Str),
        key("copy-on-read", Kind::Bool),
    ],
    warn_flags: true,
    open: true,
};

pub(crate) fn handle_drive(b: &mut Builder, inv: &Inv, p: Parsed) -> Result<(), CliError> {
    let o = p.opts();
    // QEMU's default interface on x86 is IDE, which ferrovm does not have.
    let interface = o
        .str("if")
        .and_then(|s| s.parse().ok())
        .unwrap_or(DriveInterface::Ide);
    // `if=ide` is accepted for `-accel qtest`, checked once the
    // accelerator is known (see [`check_qtest_only`]).
    if !matches!(
        interface,
        DriveInterface::None | DriveInterface::Virtio | DriveInterface::Ide
    ) {
        let default = if o.has("if") { "" } else { " (QEMU's default)" };
        return Err(inv.err(format!(
            "interface 'if={interface}'{default} is not supported by ferrovm; use if=virtio, or if=none with -device"
        )));
    }
    let cdrom = o.str("media") == Some("cdrom");
    let id = o.str("id").map(str::to_string);
    if let Some(id) = &id {
        b.claim_id(inv, "drive", id)?;
    }
    let mut opts = Map::new();
    for (k, v) in &o.raw {
        opts.insert(k.clone(), Value::String(v.clone()));
    }
    if cdrom {
        // blockdev.c drive_new: a CD-ROM is read-only whatever `readonly` says.
        opts.remove("readonly");
        opts.insert("read-only".into(), Value::String("on".into()));
    }
    b.cfg.drives.push(DriveSpec {
        id,
        file: o.str("file").map(PathBuf::from),
        interface,
        cdrom,
        format: o.str("format").map(str::to_string),
        opts,
        location: inv.location(),
    });
    Ok(())
}

/// `if=ide` and `media=cdrom` have no register model in ferrovm: they are
/// accepted under `-accel qtest` only, where no guest runs and a drive needs
/// only its device tree and block attachment (hw/ide's devices there).
pub(crate) fn check_qtest_only(cfg: &crate::config::Config) -> Result<(), CliError> {
    if cfg.accel_qtest {
        return Ok(());
    }
    for d in &cfg.drives {
        // `format=help` prints and exits where QEMU opens this drive: the
        // ones after it are never set up.
        if matches!(d.format.as_deref(), Some("help" | "?")) {
            break;
        }
        let what = if d.interface == DriveInterface::Ide {
            let default = if d.opts.contains_key("if") {
                ""
            } else {
                " (QEMU's default)"
            };
            format!("interface 'if=ide'{default}")
        } else if d.cdrom {
            "'media=cdrom'".to_string()
        } else {
            continue;
        };
        return Err(CliError::new(format!(
            "{}: {what} has no register model in ferrovm (accepted only under -accel qtest, where no guest runs); use if=virtio, or if=none with -device",
            d.location
        )));
    }
    Ok(())
}

pub(crate) fn handle_blockdev(b: &mut Builder, inv: &Inv, p: Parsed) -> Result<(), CliError> {
    let map = p.json();
    match map.get("driver") {
        None => return Err(inv.err("Parameter 'driver' is missing")),
        // QEMU 7.2 has no `-blockdev driver=help`: the value fails the
        // BlockdevDriver enum, before the node name is looked at.
        Some(Value::String(d)) if d == "help" || d == "?" => {
            return Err(inv.err(format!("Parameter 'driver' does not accept value '{d}'")))
        }
        Some(Value::String(_)) => {}
        Some(_) => return Err(inv.err("Invalid parameter type for 'driver', expected: string")),
    }
    let node = match map.get("node-name") {
        Some(Value::String(n)) => n.clone(),
        Some(_) => return Err(inv.err("Invalid parameter type for 'node-name', expected: string")),
        None => return Err(inv.err("'node-name' must be specified for the root node")),
    };
    if !id_wellformed(&node) {
        return Err(inv.err(format!("Invalid node-name: '{node}'")));
    }
    if !b.ids.insert(("node", node.clone())) {
        return Err(inv.err(format!("Duplicate nodes with node-name='{node}'")));
    }
    b.cfg.blockdevs.push(Value::Object(map));
    b.cfg.blockdev_locations.push(inv.location());
    Ok(())
}
