//! Run-state options: `-S`, `-no-shutdown`, `-no-reboot`, `-action`,
//! `-watchdog-action`. As in QEMU's vl.c they are applied in command-line
//! order: `-no-reboot` is `-action reboot=shutdown` and `-no-shutdown` is
//! `-action shutdown=pause`.

use crate::builder::{Builder, Inv};
use crate::config::{PanicAction, RebootAction, ShutdownAction, WatchdogAction};
use crate::error::CliError;
use crate::schema::{enum_error, key, Kind, Schema};
use crate::table::Parsed;

pub(crate) const ACTION_SCHEMA: Schema = Schema {
    implied: None,
    keys: &[
        key("reboot", Kind::Enum(RebootAction::NAMES)),
        key("shutdown", Kind::Enum(ShutdownAction::NAMES)),
        key("panic", Kind::Enum(PanicAction::NAMES)),
        key("watchdog", Kind::Enum(WatchdogAction::NAMES)),
    ],
    warn_flags: true,
    open: false,
};

pub(crate) fn handle_s(b: &mut Builder, _inv: &Inv, _p: Parsed) -> Result<(), CliError> {
    b.cfg.start_paused = true;
    Ok(())
}

pub(crate) fn handle_no_shutdown(b: &mut Builder, _inv: &Inv, _p: Parsed) -> Result<(), CliError> {
    b.cfg.no_shutdown = true;
    b.cfg.actions.shutdown = ShutdownAction::Pause;
    Ok(())
}

pub(crate) fn handle_no_reboot(b: &mut Builder, _inv: &Inv, _p: Parsed) -> Result<(), CliError> {
    b.cfg.no_reboot = true;
    b.cfg.actions.reboot = RebootAction::Shutdown;
    Ok(())
}

pub(crate) fn handle_action(b: &mut Builder, _inv: &Inv, p: Parsed) -> Result<(), CliError> {
    let o = p.opts();
    let a = &mut b.cfg.actions;
    // The schema has checked every value against the enum's names.
    if let Some(v) = o.str("reboot").and_then(|v| v.parse().ok()) {
        a.reboot = v;
    }
    if let Some(v) = o.str("panic").and_then(|v| v.parse().ok()) {
        a.panic = v;
    }
    if let Some(v) = o.str("watchdog").and_then(|v| v.parse().ok()) {
        a.watchdog = v;
    }
    if let Some(v) = o.str("shutdown").and_then(|v| v.parse().ok()) {
        a.shutdown = v;
    }
    Ok(())
}

pub(crate) fn handle_watchdog_action(
    b: &mut Builder,
    inv: &Inv,
    _p: Parsed,
) -> Result<(), CliError> {
    b.cfg.actions.watchdog = inv
        .arg()
        .parse()
        .map_err(|_| inv.err(enum_error("watchdog", inv.arg())))?;
    Ok(())
}
