//! Small options: boot files, identity, display, process control, and the
//! options accepted for compatibility (`-msg`, `-overcommit`, `-sandbox`,
//! `-no-hpet`, `-vga none`).

use crate::builder::{Builder, Inv};
use crate::config::Uuid;
use crate::error::CliError;
use crate::keyval::parse_keyval;
use crate::schema::{key, Kind, Schema};
use crate::table::Parsed;
use std::path::PathBuf;

pub(crate) fn handle_kernel(b: &mut Builder, inv: &Inv, _p: Parsed) -> Result<(), CliError> {
    b.cfg.kernel = Some(PathBuf::from(inv.arg()));
    Ok(())
}

pub(crate) fn handle_initrd(b: &mut Builder, inv: &Inv, _p: Parsed) -> Result<(), CliError> {
    b.cfg.initrd = Some(PathBuf::from(inv.arg()));
    b.initrd_set = true;
    Ok(())
}

pub(crate) fn handle_append(b: &mut Builder, inv: &Inv, _p: Parsed) -> Result<(), CliError> {
    b.cfg.append = inv.arg().to_string();
    b.append_set = true;
    Ok(())
}

pub(crate) const NAME_SCHEMA: Schema = Schema {
    implied: Some("guest"),
    keys: &[
        key("guest", Kind::Str),
        key("process", Kind::Str),
        key("debug-threads", Kind::Bool),
    ],
    warn_flags: true,
    open: false,
};

pub(crate) fn handle_name(b: &mut Builder, _inv: &Inv, p: Parsed) -> Result<(), CliError> {
    let o = p.opts();
    if let Some(g) = o.str("guest") {
        b.cfg.name = Some(g.to_string());
    }
    if let Some(p) = o.str("process") {
        b.cfg.process_name = Some(p.to_string());
    }
    if let Some(d) = o.bool("debug-threads") {
        b.cfg.debug_threads = d;
    }
    Ok(())
}

pub(crate) fn handle_uuid(b: &mut Builder, inv: &Inv, _p: Parsed) -> Result<(), CliError> {
    let u: Uuid = inv.arg().parse().map_err(|e| inv.err(format!("{e}")))?;
    b.cfg.uuid = Some(u);
    Ok(())
}

/// QEMU display types ferrovm does not provide.
const OTHER_DISPLAYS: &[&str] = &[
    "gtk",
    "sdl",
    "vnc",
    "curses",
    "egl-headless",
    "dbus",
    "spice-app",
    "cocoa",
    "default",
];

pub(crate) fn handle_display(b: &mut Builder, inv: &Inv, _p: Parsed) -> Result<(), CliError> {
    let map = parse_keyval(inv.arg(), Some("type")).map_err(|e| inv.err(e))?;
    match map.get("type").and_then(|v| v.as_str()) {
        Some("none") => {}
        Some(t) if OTHER_DISPLAYS.contains(&t) => {
            return Err(inv.err(format!(
                "display '{t}' is not supported by ferrovm (only 'none')"
            )))
        }
        Some(t) => return Err(inv.err(format!("Parameter 'type' does not accept value '{t}'"))),
        None => return Err(inv.err("Parameter 'type' is missing")),
    }
    if let Some(k) = map.keys().find(|k| *k != "type") {
        return Err(inv.err(format!("Invalid parameter '{k}'")));
    }
    b.cfg.display_none = true;
    Ok(())
}

pub(crate) fn handle_nographic(b: &mut Builder, _inv: &Inv, _p: Parsed) -> Result<(), CliError> {
    b.cfg.nographic = true;
    b.cfg.display_none = true;
    Ok(())
}

pub(crate) fn handle_vga(_b: &mut Builder, inv: &Inv, _p: Parsed) -> Result<(), CliError> {
    match inv.arg() {
        "none" => Ok(()),
        t => Err(inv.err(format!(
            "VGA card '{t}' is not supported by ferrovm (only 'none')"
        ))),
    }
}

pub(crate) fn handle_nodefaults(b: &mut Builder, _inv: &Inv, _p: Parsed) -> Result<(), CliError> {
    b.cfg.nodefaults = true;
    b.default_serial = false;
    b.default_monitor = false;
    Ok(())
}

pub(crate) fn handle_no_user_config(
    b: &mut Builder,
    _inv: &Inv,
    _p: Parsed,
) -> Result<(), CliError> {
    b.cfg.no_user_config = true;
    Ok(())
}

pub(crate) fn handle_no_acpi(b: &mut Builder, _inv: &Inv, _p: Parsed) -> Result<(), CliError> {
    b.cfg.machine.acpi = false;
    Ok(())
}

pub(crate) fn handle_daemonize(b: &mut Builder, _inv: &Inv, _p: Parsed) -> Result<(), CliError> {
    b.cfg.daemonize = true;
    Ok(())
}

pub(crate) fn handle_pidfile(b: &mut Builder, inv: &Inv, _p: Parsed) -> Result<(), CliError> {
    b.cfg.pidfile = Some(PathBuf::from(inv.arg()));
    Ok(())
}

pub(crate) const MSG_SCHEMA: Schema = Schema {
    implied: None,
    keys: &[key("timestamp", Kind::Bool), key("guest-name", Kind::Bool)],
    warn_flags: true,
    open: false,
};

pub(crate) fn handle_msg(b: &mut Builder, _inv: &Inv, p: Parsed) -> Result<(), CliError> {
    if let Some(t) = p.opts().bool("timestamp") {
        b.cfg.msg_timestamp = t;
    }
    Ok(())
}

pub(crate) const ADD_FD_SCHEMA: Schema = Schema {
    implied: None,
    keys: &[
        key("fd", Kind::Number),
        key("set", Kind::Number),
        key("opaque", Kind::Str),
    ],
    warn_flags: false,
    open: false,
};

pub(crate) fn handle_add_fd(b: &mut Builder, _inv: &Inv, p: Parsed) -> Result<(), CliError> {
    let o = p.opts();
    b.cfg.add_fds.push(crate::AddFdSpec {
        fd: o.num("fd"),
        set: o.num("set"),
        opaque: o.str("opaque").map(str::to_string),
    });
    Ok(())
}

pub(crate) const OVERCOMMIT_SCHEMA: Schema = Schema {
    implied: None,
    keys: &[key("mem-lock", Kind::Bool), key("cpu-pm", Kind::Bool)],
    warn_flags: true,
    open: false,
};

pub(crate) fn handle_overcommit(b: &mut Builder, inv: &Inv, p: Parsed) -> Result<(), CliError> {
    let o = p.opts();
    if o.bool("cpu-pm") == Some(true) {
        return Err(inv.err("'cpu-pm=on' is not supported by ferrovm"));
    }
    if let Some(m) = o.bool("mem-lock") {
        b.cfg.mem_lock = m;
    }
    Ok(())
}

pub(crate) const SANDBOX_SCHEMA: Schema = Schema {
    implied: Some("enable"),
    keys: &[
        key("enable", Kind::Bool),
        key("obsolete", Kind::Enum(&["allow", "deny"])),
        key(
            "elevateprivileges",
            Kind::Enum(&["allow", "deny", "children"]),
        ),
        key("spawn", Kind::Enum(&["allow", "deny"])),
        key("resourcecontrol", Kind::Enum(&["allow", "deny"])),
    ],
    warn_flags: true,
    open: false,
};

pub(crate) fn handle_sandbox(b: &mut Builder, _inv: &Inv, p: Parsed) -> Result<(), CliError> {
    if let Some(e) = p.opts().bool("enable") {
        b.cfg.sandbox = e;
    }
    Ok(())
}

/// Options that are checked and then have nothing to record.
pub(crate) fn handle_tolerated(_b: &mut Builder, _inv: &Inv, _p: Parsed) -> Result<(), CliError> {
    Ok(())
}
