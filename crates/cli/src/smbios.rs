//! `-smbios`: QEMU 7.2's `smbios_entry_add` (`hw/smbios/smbios.c`).
//!
//! The option list accepts any key at parse time; `smbios_entry_add` then
//! picks the form: `file=` (only that key), else `type=` read with C's
//! `strtoul` (so `type=-1` is "out of range!"), and validates the keys of
//! that type with `qemu_opts_validate` (first bad key in command-line order,
//! numbers through `qemu_strtou64`, which wraps negative values as C does).

use crate::builder::{Builder, Inv};
use crate::config::{
    SmbiosOemString, SmbiosOption, SmbiosType0, SmbiosType1, SmbiosType17, SmbiosType2,
    SmbiosType3, SmbiosType4, Uuid,
};
use crate::error::CliError;
use crate::opts::{lex, RawOpt};
use crate::schema::{flag_warning, key, parse_bool, Key, Kind, Schema};
use crate::table::Parsed;
use std::path::PathBuf;

/// `SMBIOS_MAX_TYPE`.
const MAX_TYPE: u64 = 127;

const fn s(name: &'static str) -> Key {
    key(name, Kind::Str)
}
const fn n(name: &'static str) -> Key {
    key(name, Kind::Number)
}

/// `qemu_smbios_type0_opts` ... `qemu_smbios_type17_opts`, as QEMU 7.2 declares them.
const TYPE0: &[Key] = &[
    n("type"),
    s("vendor"),
    s("version"),
    s("date"),
    s("release"),
    key("uefi", Kind::Bool),
];
const TYPE1: &[Key] = &[
    n("type"),
    s("manufacturer"),
    s("product"),
    s("version"),
    s("serial"),
    s("uuid"),
    s("sku"),
    s("family"),
];
const TYPE2: &[Key] = &[
    n("type"),
    s("manufacturer"),
    s("product"),
    s("version"),
    s("serial"),
    s("asset"),
    s("location"),
];
const TYPE3: &[Key] = &[
    n("type"),
    s("manufacturer"),
    s("version"),
    s("serial"),
    s("asset"),
    s("sku"),
];
const TYPE4: &[Key] = &[
    n("type"),
    s("sock_pfx"),
    s("manufacturer"),
    s("version"),
    n("max-speed"),
    n("current-speed"),
    s("serial"),
    s("asset"),
    s("part"),
    n("processor-id"),
];
const TYPE11: &[Key] = &[n("type"), s("value"), s("path")];
const TYPE17: &[Key] = &[
    n("type"),
    s("loc_pfx"),
    s("bank"),
    s("manufacturer"),
    s("serial"),
    s("asset"),
    s("part"),
    n("speed"),
];

/// Every key of every supported type, for the documentation.
pub(crate) const SMBIOS_SCHEMA: Schema = Schema {
    implied: None,
    keys: &[
        s("file"),
        n("type"),
        s("vendor"),
        s("date"),
        s("release"),
        key("uefi", Kind::Bool),
        s("manufacturer"),
        s("product"),
        s("version"),
        s("serial"),
        s("uuid"),
        s("sku"),
        s("family"),
        s("asset"),
        s("location"),
        s("sock_pfx"),
        n("max-speed"),
        n("current-speed"),
        s("part"),
        n("processor-id"),
        s("value"),
        s("path"),
        s("loc_pfx"),
        s("bank"),
        n("speed"),
    ],
    warn_flags: true,
    open: false,
};

/// C's `strtoull(v, &end, 0)`: optional whitespace and sign, base prefix,
/// then as many digits as there are; returns (value, digits were found,
/// the whole string was used). Overflow gives `u64::MAX` (ERANGE).
fn strtoull(v: &str) -> (u64, bool, bool, bool) {
    let t = v.trim_start();
    let (neg, t) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let (body, radix) = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(h) if h.starts_with(|c: char| c.is_ascii_hexdigit()) => (h, 16),
        _ if t.starts_with('0') => (t, 8),
        _ => (t, 10),
    };
    let len = body
        .find(|c: char| !c.is_digit(radix))
        .unwrap_or(body.len());
    if len == 0 {
        return (0, false, false, false);
    }
    let (mag, overflow) = match u64::from_str_radix(&body[..len], radix) {
        Ok(m) => (m, false),
        Err(_) => (u64::MAX, true),
    };
    let val = if overflow {
        u64::MAX
    } else if neg {
        mag.wrapping_neg()
    } else {
        mag
    };
    (val, true, len == body.len(), overflow)
}

/// `parse_option_number` (QEMU_OPT_NUMBER).
fn number(k: &str, v: &str) -> Result<u64, String> {
    match strtoull(v) {
        (_, true, true, true) => Err(format!("Value '{v}' is too large for parameter '{k}'")),
        (n, true, true, false) => Ok(n),
        _ => Err(format!("Parameter '{k}' expects a number")),
    }
}

/// `qemu_opts_validate`: every key known, numbers and booleans well formed.
fn validate(keys: &[Key], raw: &[RawOpt]) -> Result<(), String> {
    for o in raw {
        let Some(k) = keys.iter().find(|k| k.name == o.key) else {
            return Err(format!("Invalid parameter '{}'", o.key));
        };
        match k.kind {
            Kind::Number => {
                number(&o.key, &o.value)?;
            }
            Kind::Bool => {
                parse_bool(&o.key, &o.value)?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// `qemu_opt_get`: the last value of `k`.
fn get<'a>(raw: &'a [RawOpt], k: &str) -> Option<&'a str> {
    raw.iter()
        .rev()
        .find(|o| o.key == k)
        .map(|o| o.value.as_str())
}

fn string(raw: &[RawOpt], k: &str) -> Option<String> {
    get(raw, k).map(str::to_string)
}

fn num(raw: &[RawOpt], k: &str) -> Option<u64> {
    get(raw, k).and_then(|v| number(k, v).ok())
}

/// `sscanf(v, "%hhu.%hhu", ...) == 2`: each part wraps modulo 256 as C's
/// `unsigned char` conversion does; anything after the minor is ignored.
fn release(v: &str) -> Option<(u8, u8)> {
    fn part(t: &str) -> Option<(u8, &str)> {
        let t = t.trim_start();
        let (neg, t) = match t.as_bytes().first() {
            Some(b'-') => (true, &t[1..]),
            Some(b'+') => (false, &t[1..]),
            _ => (false, t),
        };
        let len = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        if len == 0 {
            return None;
        }
        let mag = t[..len].parse::<u64>().unwrap_or(u64::MAX);
        let v = if neg { mag.wrapping_neg() } else { mag };
        Some((v as u8, &t[len..]))
    }
    let (major, rest) = part(v)?;
    let (minor, _) = part(rest.strip_prefix('.')?)?;
    Some((major, minor))
}

fn type_option(t: u64, raw: &[RawOpt]) -> Result<SmbiosOption, String> {
    Ok(match t {
        0 => {
            validate(TYPE0, raw)?;
            let release = match get(raw, "release") {
                Some(v) => Some(release(v).ok_or("Invalid release")?),
                None => None,
            };
            SmbiosOption::Type0(SmbiosType0 {
                vendor: string(raw, "vendor"),
                version: string(raw, "version"),
                date: string(raw, "date"),
                release,
                uefi: get(raw, "uefi").and_then(|v| parse_bool("uefi", v).ok()),
            })
        }
        1 => {
            validate(TYPE1, raw)?;
            let uuid = match get(raw, "uuid") {
                Some(v) => Some(v.parse::<Uuid>().map_err(|_| "Invalid UUID")?),
                None => None,
            };
            SmbiosOption::Type1(SmbiosType1 {
                manufacturer: string(raw, "manufacturer"),
                product: string(raw, "product"),
                version: string(raw, "version"),
                serial: string(raw, "serial"),
                uuid,
                sku: string(raw, "sku"),
                family: string(raw, "family"),
            })
        }
        2 => {
            validate(TYPE2, raw)?;
            SmbiosOption::Type2(SmbiosType2 {
                manufacturer: string(raw, "manufacturer"),
                product: string(raw, "product"),
                version: string(raw, "version"),
                serial: string(raw, "serial"),
                asset: string(raw, "asset"),
                location: string(raw, "location"),
            })
        }
        3 => {
            validate(TYPE3, raw)?;
            SmbiosOption::Type3(SmbiosType3 {
                manufacturer: string(raw, "manufacturer"),
                version: string(raw, "version"),
                serial: string(raw, "serial"),
                asset: string(raw, "asset"),
                sku: string(raw, "sku"),
            })
        }
        4 => {
            validate(TYPE4, raw)?;
            let speed = |k: &str| -> Result<Option<u16>, String> {
                match num(raw, k) {
                    None => Ok(None),
                    Some(v) => u16::try_from(v)
                        .map(Some)
                        .map_err(|_| "SMBIOS CPU speed is too large (> 65535)".to_string()),
                }
            };
            SmbiosOption::Type4(SmbiosType4 {
                sock_pfx: string(raw, "sock_pfx"),
                manufacturer: string(raw, "manufacturer"),
                version: string(raw, "version"),
                serial: string(raw, "serial"),
                asset: string(raw, "asset"),
                part: string(raw, "part"),
                max_speed: speed("max-speed")?,
                current_speed: speed("current-speed")?,
                processor_id: num(raw, "processor-id"),
            })
        }
        11 => {
            validate(TYPE11, raw)?;
            // save_opt_list: every value= and path=, in order.
            let strings = raw
                .iter()
                .filter_map(|o| match o.key.as_str() {
                    "value" => Some(SmbiosOemString::Value(o.value.clone())),
                    "path" => Some(SmbiosOemString::Path(PathBuf::from(&o.value))),
                    _ => None,
                })
                .collect();
            SmbiosOption::Type11(strings)
        }
        17 => {
            validate(TYPE17, raw)?;
            SmbiosOption::Type17(SmbiosType17 {
                loc_pfx: string(raw, "loc_pfx"),
                bank: string(raw, "bank"),
                manufacturer: string(raw, "manufacturer"),
                serial: string(raw, "serial"),
                asset: string(raw, "asset"),
                part: string(raw, "part"),
                // `type17.speed` is a uint16_t assigned from a uint64_t.
                speed: num(raw, "speed").map(|v| v as u16),
            })
        }
        8 | 41 => {
            return Err(format!(
                "SMBIOS type {t} fields are not supported by ferrovm"
            ))
        }
        _ => {
            return Err(format!(
                "Don't know how to build fields for SMBIOS type {t}"
            ))
        }
    })
}

/// Parse one `-smbios` argument.
fn parse_smbios(arg: &str, warnings: &mut Vec<String>) -> Result<SmbiosOption, String> {
    let raw = lex(arg, None);
    for o in &raw {
        if let Some(w) = &o.flag {
            warnings.push(flag_warning(o, w));
        }
    }
    if let Some(file) = get(&raw, "file") {
        validate(&[s("file")], &raw)?;
        return Ok(SmbiosOption::File(PathBuf::from(file)));
    }
    let Some(t) = get(&raw, "type") else {
        return Err("Must specify type= or file=".to_string());
    };
    // `strtoul(val, NULL, 0)`: a prefix is enough, no digits is type 0.
    let (t, ..) = strtoull(t);
    if t > MAX_TYPE {
        return Err("out of range!".to_string());
    }
    type_option(t, &raw)
}

pub(crate) fn handle_smbios(b: &mut Builder, inv: &Inv, _p: Parsed) -> Result<(), CliError> {
    let mut warnings = Vec::new();
    let parsed = parse_smbios(inv.arg(), &mut warnings);
    for w in &warnings {
        b.warn(inv, w);
    }
    let opt = parsed.map_err(|e| inv.err(e))?;
    if let SmbiosOption::Type1(SmbiosType1 { uuid: Some(u), .. }) = &opt {
        // QEMU's one qemu_uuid: the last of -uuid and type=1,uuid= wins.
        b.cfg.uuid = Some(*u);
    }
    b.cfg.smbios.push(opt);
    b.cfg.smbios_locations.push(inv.location());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strtoull_like_c() {
        assert_eq!(strtoull("17"), (17, true, true, false));
        assert_eq!(strtoull("0x11"), (17, true, true, false));
        assert_eq!(strtoull("021"), (17, true, true, false));
        assert_eq!(strtoull("-1"), (u64::MAX, true, true, false));
        assert_eq!(strtoull("1x"), (1, true, false, false));
        assert_eq!(strtoull("x"), (0, false, false, false));
        assert_eq!(strtoull("0"), (0, true, true, false));
        assert_eq!(strtoull("0x"), (0, true, false, false));
        assert!(strtoull("99999999999999999999").3);
    }

    #[test]
    fn release_like_sscanf() {
        assert_eq!(release("1.2"), Some((1, 2)));
        assert_eq!(release("1.2.3"), Some((1, 2)));
        assert_eq!(release("256.1"), Some((0, 1)));
        assert_eq!(release("1"), None);
        assert_eq!(release("a.b"), None);
        assert_eq!(release("1."), None);
    }
}
