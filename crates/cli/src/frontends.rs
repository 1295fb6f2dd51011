//! Chardev front ends: `-serial`, `-mon`, `-qmp`, `-qmp-pretty`, `-monitor`.
//!
//! As in QEMU, `-serial DEV` creates chardev `serialN` (N counts serial
//! ports; `none` adds none) and `-qmp`/`-monitor DEV` create
//! `compat_monitorN`; `chardev:ID` refers to a `-chardev` instead. References
//! are checked once the whole command line is read.

use crate::builder::{Builder, Frontend, Inv};
use crate::chardev::{parse_compat, Compat};
use crate::config::{ChardevSpec, MonitorMode, MonitorSpec, QtestLog, QtestSpec, SerialSpec};
use crate::error::CliError;
use crate::schema::{key, Kind, Schema};
use crate::table::Parsed;

pub(crate) fn handle_serial(b: &mut Builder, inv: &Inv, _p: Parsed) -> Result<(), CliError> {
    b.default_serial = false;
    let spec = inv.arg();
    if spec == "none" {
        return Ok(());
    }
    let label = format!("serial{}", b.cfg.serials.len());
    let (id, monitor) = compat_chardev(b, inv, label, true)?;
    if monitor {
        b.cfg.monitors.push(MonitorSpec {
            id: None,
            chardev_id: id.clone(),
            mode: MonitorMode::Readline,
            pretty: false,
        });
    }
    b.frontends
        .push((id.clone(), inv.clone(), Frontend::Serial));
    b.cfg.serials.push(SerialSpec { chardev_id: id });
    Ok(())
}

/// `-debugcon dev`: QEMU's shorthand for a chardev `debugcon` and
/// `-device isa-debugcon,chardev=debugcon` (port 0xe9 unless a
/// `-global isa-debugcon.iobase=` says otherwise; softmmu/vl.c `debugcon_parse`).
pub(crate) fn handle_debugcon(b: &mut Builder, inv: &Inv, _p: Parsed) -> Result<(), CliError> {
    let spec = inv.arg();
    if spec == "none" {
        return Ok(());
    }
    let (id, _) = compat_chardev(b, inv, "debugcon".into(), false)?;
    b.frontends.push((
        id.clone(),
        inv.clone(),
        Frontend::Device("isa-debugcon".into()),
    ));
    let mut dev = serde_json::Map::new();
    dev.insert("driver".into(), "isa-debugcon".into());
    dev.insert("chardev".into(), id.into());
    b.cfg.devices.push(serde_json::Value::Object(dev));
    b.cfg.device_locations.push(inv.location());
    Ok(())
}

/// `-qtest DEV`: the qtest protocol on chardev `qtest` (or on `chardev:ID`),
/// opened as QEMU's `qtest_server_init` opens it. The last one counts.
pub(crate) fn handle_qtest(b: &mut Builder, inv: &Inv, _p: Parsed) -> Result<(), CliError> {
    if let Some(old) = b.cfg.qtest.take() {
        // vl.c keeps only the last `-qtest`; an earlier one opens nothing.
        b.cfg
            .chardevs
            .retain(|c| c.id != old.chardev_id || old.chardev_id != "qtest");
        b.chardev_locs.retain(|(id, _)| id != "qtest");
        b.ids.remove(&("chardev", "qtest".to_string()));
        b.frontends.retain(|(_, _, k)| *k != Frontend::Qtest);
    }
    let (id, _) = compat_chardev(b, inv, "qtest".into(), false)?;
    b.frontends.push((id.clone(), inv.clone(), Frontend::Qtest));
    b.cfg.qtest = Some(QtestSpec {
        chardev_id: id,
        log: QtestLog::Stderr,
    });
    Ok(())
}

/// `-qtest-log FILE`: `none` logs nothing; without it the log is stderr.
pub(crate) fn handle_qtest_log(b: &mut Builder, inv: &Inv, _p: Parsed) -> Result<(), CliError> {
    b.qtest_log = match inv.arg() {
        "none" => QtestLog::None,
        f => QtestLog::File(f.into()),
    };
    Ok(())
}

/// The chardev of a compat-syntax option (`-serial`, `-monitor`, `-debugcon`):
/// `chardev:ID` names an existing one, anything else creates one called
/// `label`. Also says whether a `mon:` prefix asked for a readline monitor
/// on it (only where `permit_mux_mon`).
fn compat_chardev(
    b: &mut Builder,
    inv: &Inv,
    label: String,
    permit_mux_mon: bool,
) -> Result<(String, bool), CliError> {
    match parse_compat(inv.arg(), permit_mux_mon).map_err(|e| inv.err(e))? {
        Compat::Existing(id) => Ok((id, false)),
        Compat::New {
            backend,
            mux,
            monitor,
        } => {
            b.add_chardev(
                inv,
                ChardevSpec {
                    id: label.clone(),
                    backend,
                    mux,
                },
            )?;
            Ok((label, monitor))
        }
    }
}

/// `-mon` keys (QemuOpts, implied `chardev`).
pub(crate) const MON_SCHEMA: Schema = Schema {
    implied: Some("chardev"),
    keys: &[
        key("chardev", Kind::Str),
        key("mode", Kind::Enum(&["readline", "control"])),
        key("pretty", Kind::Bool),
        key("id", Kind::Id),
    ],
    warn_flags: true,
    open: false,
};

pub(crate) fn handle_mon(b: &mut Builder, inv: &Inv, p: Parsed) -> Result<(), CliError> {
    let o = p.opts();
    b.default_monitor = false;
    let chardev_id = o
        .str("chardev")
        .ok_or_else(|| inv.err("Parameter 'chardev' is missing"))?
        .to_string();
    let mode = match o.str("mode") {
        Some("control") => MonitorMode::Control,
        _ => MonitorMode::Readline,
    };
    let pretty = o.bool("pretty").unwrap_or(false);
    if pretty && mode == MonitorMode::Readline {
        return Err(inv.err("'pretty' is not compatible with HMP monitors"));
    }
    let id = o.str("id").map(str::to_string);
    if let Some(id) = &id {
        b.claim_id(inv, "mon", id)?;
    }
    b.frontends
        .push((chardev_id.clone(), inv.clone(), Frontend::Monitor));
    b.cfg.monitors.push(MonitorSpec {
        id,
        chardev_id,
        mode,
        pretty,
    });
    Ok(())
}

/// QEMU's `monitor_parse`: a monitor on a compat-syntax device.
fn add_monitor(
    b: &mut Builder,
    inv: &Inv,
    mode: MonitorMode,
    pretty: bool,
) -> Result<(), CliError> {
    let label = format!("compat_monitor{}", b.monitor_index);
    b.monitor_index += 1;
    let (id, _) = compat_chardev(b, inv, label, true)?;
    b.frontends
        .push((id.clone(), inv.clone(), Frontend::Monitor));
    b.cfg.monitors.push(MonitorSpec {
        id: None,
        chardev_id: id,
        mode,
        pretty,
    });
    Ok(())
}

pub(crate) fn handle_qmp(b: &mut Builder, inv: &Inv, _p: Parsed) -> Result<(), CliError> {
    b.default_monitor = false;
    add_monitor(b, inv, MonitorMode::Control, false)
}

pub(crate) fn handle_qmp_pretty(b: &mut Builder, inv: &Inv, _p: Parsed) -> Result<(), CliError> {
    b.default_monitor = false;
    add_monitor(b, inv, MonitorMode::Control, true)
}

pub(crate) fn handle_monitor(b: &mut Builder, inv: &Inv, _p: Parsed) -> Result<(), CliError> {
    b.default_monitor = false;
    if inv.arg().starts_with("none") {
        return Ok(());
    }
    add_monitor(b, inv, MonitorMode::Readline, false)
}
