//! `-drive` I/O throttling options, as QEMU 7.2's blockdev.c reads them:
//! `drive_new`'s legacy renames (`bps=` is `throttling.bps-total`, ...),
//! then `extract_common_blockdev_options` (`throttling.*` as QemuOpts
//! numbers, `throttling.group`, `throttle_is_valid`), with QEMU's messages.

use serde_json::{Map, Value};

use crate::error::BlockError;
use crate::throttle::ThrottleConfig;

/// `drive_new`'s `opt_renames` table, in its order.
const RENAMES: [(&str, &str); 15] = [
    ("iops", "throttling.iops-total"),
    ("iops_rd", "throttling.iops-read"),
    ("iops_wr", "throttling.iops-write"),
    ("bps", "throttling.bps-total"),
    ("bps_rd", "throttling.bps-read"),
    ("bps_wr", "throttling.bps-write"),
    ("iops_max", "throttling.iops-total-max"),
    ("iops_rd_max", "throttling.iops-read-max"),
    ("iops_wr_max", "throttling.iops-write-max"),
    ("bps_max", "throttling.bps-total-max"),
    ("bps_rd_max", "throttling.bps-read-max"),
    ("bps_wr_max", "throttling.bps-write-max"),
    ("iops_size", "throttling.iops-size"),
    ("group", "throttling.group"),
    ("readonly", "read-only"),
];

/// `throttling.<name>` for each bucket, in [`ThrottleConfig::buckets`] order.
const BUCKETS: [&str; 6] = [
    "bps-total",
    "bps-read",
    "bps-write",
    "iops-total",
    "iops-read",
    "iops-write",
];

/// `qemu_opt_rename` over the table: the legacy name becomes the new one;
/// both given is an error.
pub fn rename_legacy(flat: &mut Map<String, Value>) -> Result<(), BlockError> {
    for (from, to) in RENAMES {
        if let Some(v) = flat.remove(from) {
            if flat.contains_key(to) {
                return Err(BlockError::new(format!(
                    "'{to}' and its alias '{from}' can't be used at the same time"
                )));
            }
            flat.insert(to.to_string(), v);
        }
    }
    Ok(())
}

/// The limits and group of a drive's `throttling` options (already nested
/// under `throttling`). Keys that are not throttle options stay in `rest`,
/// for the caller's "does not support the option" error.
pub fn extract(
    throttling: Option<Value>,
    rest: &mut Map<String, Value>,
) -> Result<(ThrottleConfig, Option<String>), BlockError> {
    let mut m = match throttling {
        Some(Value::Object(m)) => m,
        Some(v) => {
            // `throttling=X` alone: an option nobody takes.
            rest.insert("throttling".into(), v);
            Map::new()
        }
        None => Map::new(),
    };
    let mut num = |key: &str, default: u64| -> Result<u64, BlockError> {
        match m.remove(key) {
            None => Ok(default),
            Some(v) => {
                let s = match v {
                    Value::String(s) => s,
                    v => v.to_string(),
                };
                parse_number(&format!("throttling.{key}"), &s)
            }
        }
    };
    let mut cfg = ThrottleConfig::default();
    for (i, name) in BUCKETS.iter().enumerate() {
        cfg.buckets[i].avg = num(name, 0)?;
    }
    for (i, name) in BUCKETS.iter().enumerate() {
        cfg.buckets[i].max = num(&format!("{name}-max"), 0)?;
    }
    for (i, name) in BUCKETS.iter().enumerate() {
        cfg.buckets[i].burst_length = num(&format!("{name}-max-length"), 1)?;
    }
    cfg.op_size = num("iops-size", 0)?;
    let group = match m.remove("group") {
        None => None,
        Some(Value::String(s)) => Some(s),
        Some(v) => Some(v.to_string()),
    };
    for (k, v) in m {
        rest.insert(format!("throttling.{k}"), v);
    }
    cfg.validate()?;
    Ok((cfg, group))
}

/// A QemuOpts number (`parse_option_number`: `qemu_strtou64` in base 0, so
/// hex and octal too, and a minus sign wraps as strtoull does).
fn parse_number(name: &str, s: &str) -> Result<u64, BlockError> {
    let expects = || BlockError::new(format!("Parameter '{name}' expects a number"));
    let t = s.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let (neg, t) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let (radix, digits) = if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        if h.starts_with(|c: char| c.is_ascii_hexdigit()) {
            (16, h)
        } else {
            // strtoull reads "0x" as 0 followed by junk.
            return Err(expects());
        }
    } else if t.len() > 1 && t.starts_with('0') {
        (8, &t[1..])
    } else {
        (10, t)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return Err(expects());
    }
    match u64::from_str_radix(digits, radix) {
        Ok(v) if neg => Ok(v.wrapping_neg()),
        Ok(v) => Ok(v),
        Err(_) => Err(BlockError::new(format!(
            "Value '{s}' is too large for parameter '{name}'"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// QEMU 7.2's stderr for the same -drive values (checked by running it).
    #[test]
    fn numbers_are_read_as_qemu_opts_reads_them() {
        let n = |s: &str| parse_number("throttling.bps-total", s).map_err(|e| e.msg);
        assert_eq!(n("0x100"), Ok(256));
        assert_eq!(n("010"), Ok(8));
        assert_eq!(n("+5"), Ok(5));
        assert_eq!(n("-1"), Ok(u64::MAX));
        let nan = Err("Parameter 'throttling.bps-total' expects a number".to_string());
        for bad in ["abc", "1k", "12.5", "", "0x"] {
            assert_eq!(n(bad), nan, "{bad}");
        }
        assert_eq!(
            n("99999999999999999999"),
            Err(
                "Value '99999999999999999999' is too large for parameter 'throttling.bps-total'"
                    .to_string()
            )
        );
    }

    #[test]
    fn legacy_names_are_aliases() {
        let mut m = json!({"bps": "5", "group": "g"})
            .as_object()
            .unwrap()
            .clone();
        rename_legacy(&mut m).unwrap();
        assert_eq!(
            Value::Object(m),
            json!({"throttling.bps-total": "5", "throttling.group": "g"})
        );
        let mut m = json!({"bps": "5", "throttling.bps-total": "4"})
            .as_object()
            .unwrap()
            .clone();
        assert_eq!(
            rename_legacy(&mut m).unwrap_err().msg,
            "'throttling.bps-total' and its alias 'bps' can't be used at the same time"
        );
    }

    #[test]
    fn limits_and_group_are_extracted() {
        let mut rest = Map::new();
        let t = json!({"iops-total": "100", "iops-total-max": "200",
                       "iops-total-max-length": "3", "iops-size": "4096",
                       "group": "g", "foo": "1"});
        let (c, g) = extract(Some(t), &mut rest).unwrap();
        assert_eq!(c.buckets[3].avg, 100);
        assert_eq!(c.buckets[3].max, 200);
        assert_eq!(c.buckets[3].burst_length, 3);
        assert_eq!(c.op_size, 4096);
        assert_eq!(g.as_deref(), Some("g"));
        assert_eq!(Value::Object(rest), json!({"throttling.foo": "1"}));
    }
}
