//! Firmware boot options: `-bios`, `-L` and `-boot`.
//!
//! `-boot` is not QemuOpts in QEMU 7.2: `softmmu/vl.c` parses it with
//! `keyval_parse` (implied key `order`), merges every occurrence into the
//! machine's `boot` property and only then visits it as QAPI
//! `BootConfiguration` (`hw/core/machine.c` `machine_set_boot`, which calls
//! `validate_bootdevices`), so type errors name `boot.KEY` and carry no
//! option location. The `splash-time` and `reboot-timeout` ranges are
//! checked when fw_cfg is built (`hw/nvram/fw_cfg.c`); ferrovm checks them here.

use crate::builder::{Builder, Inv};
use crate::config::BootOptions;
use crate::error::CliError;
use crate::keyval::parse_keyval;
use crate::schema::{key, Kind, Schema};
use crate::table::Parsed;
use serde_json::{Map, Value};
use std::path::PathBuf;

/// QEMU's `data_dir[16]`: further `-L` directories are silently dropped.
pub const MAX_DATA_DIRS: usize = 16;

pub(crate) fn handle_bios(b: &mut Builder, inv: &Inv, _p: Parsed) -> Result<(), CliError> {
    b.cfg.bios = Some(PathBuf::from(inv.arg()));
    Ok(())
}

/// `is_help_option`.
fn is_help(s: &str) -> bool {
    s == "help" || s == "?"
}

pub(crate) fn handle_l(b: &mut Builder, inv: &Inv, _p: Parsed) -> Result<(), CliError> {
    let arg = inv.arg();
    if is_help(arg) {
        b.cfg.list_data_dirs = true;
        return Ok(());
    }
    // qemu_add_data_dir: duplicates (same string) and overflow are ignored.
    let dir = PathBuf::from(arg);
    if b.cfg.data_dirs.len() < MAX_DATA_DIRS && !b.cfg.data_dirs.contains(&dir) {
        b.cfg.data_dirs.push(dir);
    }
    Ok(())
}

/// `-boot` keys, for the documentation (parsing is keyval, see [`handle_boot`]).
pub(crate) const BOOT_SCHEMA: Schema = Schema {
    implied: Some("order"),
    keys: &[
        key("order", Kind::Str),
        key("once", Kind::Str),
        key("menu", Kind::Bool),
        key("splash", Kind::Str),
        key("splash-time", Kind::Number),
        key("reboot-timeout", Kind::Number),
        key("strict", Kind::Bool),
    ],
    warn_flags: false,
    open: false,
};

/// Parse one `-boot` and merge it into the earlier ones (a later key wins).
pub(crate) fn handle_boot(b: &mut Builder, inv: &Inv, _p: Parsed) -> Result<(), CliError> {
    if is_help(inv.arg()) {
        return Err(inv.err("option help is not supported by ferrovm"));
    }
    let map = parse_keyval(inv.arg(), Some("order")).map_err(|e| inv.err(e))?;
    for (k, v) in map {
        b.boot.insert(k, v);
    }
    Ok(())
}

/// A keyval leaf as a string, or QEMU's error for a nested value.
fn leaf<'a>(m: &'a Map<String, Value>, k: &str) -> Result<Option<&'a str>, String> {
    match m.get(k) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("Parameters 'boot.{k}.*' are unexpected")),
    }
}

/// `qapi_bool_parse`.
fn qapi_bool(k: &str, v: &str) -> Result<bool, String> {
    match v {
        "on" | "yes" | "true" | "y" => Ok(true),
        "off" | "no" | "false" | "n" => Ok(false),
        _ => Err(format!("Parameter 'boot.{k}' expects 'on' or 'off'")),
    }
}

/// `qemu_strtoi64(v, NULL, 0, ...)` over the whole string: optional
/// whitespace and sign, then decimal, `0x` hex or `0` octal.
pub(crate) fn strtoi64(v: &str) -> Option<i64> {
    let t = v.trim_start();
    let (neg, t) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let (digits, radix) = crate::size::split_radix(t);
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let mag = i128::from(u64::from_str_radix(digits, radix).ok()?);
    i64::try_from(if neg { -mag } else { mag }).ok()
}

fn qapi_int(k: &str, v: &str) -> Result<i64, String> {
    strtoi64(v).ok_or_else(|| format!("Parameter 'boot.{k}' expects integer"))
}

/// QEMU's `validate_bootdevices` (`softmmu/bootdevice.c`): letters `a`-`p`
/// (floppies, IDE disks, machine-specific, network), each at most once.
pub fn validate_boot_devices(devices: &str) -> Result<(), String> {
    let mut seen = 0u32;
    for c in devices.chars() {
        if !('a'..='p').contains(&c) {
            return Err(format!("Invalid boot device '{c}'"));
        }
        let bit = 1u32 << (c as u32 - 'a' as u32);
        if seen & bit != 0 {
            return Err(format!("Boot device '{c}' was given twice"));
        }
        seen |= bit;
    }
    Ok(())
}

/// The merged `-boot` keys as QEMU's machine property visit and fw_cfg see them.
pub(crate) fn resolve_boot(m: &Map<String, Value>) -> Result<BootOptions, String> {
    let mut out = BootOptions::default();
    // Members in BootConfiguration's order, then the leftovers.
    let order = leaf(m, "order")?;
    let once = leaf(m, "once")?;
    let menu = leaf(m, "menu")?.map(|v| qapi_bool("menu", v)).transpose()?;
    let splash = leaf(m, "splash")?;
    let splash_time = leaf(m, "splash-time")?
        .map(|v| qapi_int("splash-time", v))
        .transpose()?;
    let reboot_timeout = leaf(m, "reboot-timeout")?
        .map(|v| qapi_int("reboot-timeout", v))
        .transpose()?;
    let strict = leaf(m, "strict")?
        .map(|v| qapi_bool("strict", v))
        .transpose()?;
    if let Some(k) = m.keys().find(|k| BOOT_SCHEMA.find(k).is_none()) {
        return Err(format!("Parameter 'boot.{k}' is unexpected"));
    }
    if let Some(o) = order {
        validate_boot_devices(o)?;
        out.order = o.to_string();
    }
    if let Some(o) = once {
        validate_boot_devices(o)?;
        out.once = Some(o.to_string());
    }
    out.menu = menu.unwrap_or(false);
    out.splash = splash.map(str::to_string);
    out.strict = strict.unwrap_or(false);
    // fw_cfg_bootsplash / fw_cfg_reboot, wording (missing space included) as QEMU's.
    if let Some(t) = splash_time {
        out.splash_time = Some(u32::try_from(t).ok().filter(|t| *t <= 0xffff).ok_or(
            "splash-time is invalid,it should be a value between 0 and 65535".to_string(),
        )?);
    }
    if let Some(t) = reboot_timeout {
        if !(-1..=0xffff).contains(&t) {
            return Err(
                "reboot timeout is invalid,it should be a value between -1 and 65535".to_string(),
            );
        }
        out.reboot_timeout = Some(t);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strtoi64_like_c() {
        assert_eq!(strtoi64("10"), Some(10));
        assert_eq!(strtoi64("-1"), Some(-1));
        assert_eq!(strtoi64("0x10"), Some(16));
        assert_eq!(strtoi64("-0x2"), Some(-2));
        assert_eq!(strtoi64("010"), Some(8));
        assert_eq!(strtoi64(" 5"), Some(5));
        assert_eq!(strtoi64("0"), Some(0));
        assert_eq!(strtoi64("9223372036854775807"), Some(i64::MAX));
        assert_eq!(strtoi64("-9223372036854775808"), Some(i64::MIN));
        assert_eq!(strtoi64("9223372036854775808"), None);
        assert_eq!(strtoi64("1.5"), None);
        assert_eq!(strtoi64(""), None);
        assert_eq!(strtoi64("-"), None);
        assert_eq!(strtoi64("08"), None);
    }

    #[test]
    fn boot_devices() {
        assert!(validate_boot_devices("").is_ok());
        assert!(validate_boot_devices("abcdefghijklmnop").is_ok());
        assert_eq!(
            validate_boot_devices("cq").unwrap_err(),
            "Invalid boot device 'q'"
        );
        assert_eq!(
            validate_boot_devices("dcd").unwrap_err(),
            "Boot device 'd' was given twice"
        );
    }
}
