//! Reading one `-netdev` member as QEMU does on either path: a JSON string
//! comes from the command line (QemuOpts + the opts visitor,
//! qapi/opts-visitor.c), a native JSON value from QMP `netdev_add` (the
//! qobject input visitor, qapi/qobject-input-visitor.c). Error texts are
//! those two visitors' (`QERR_INVALID_PARAMETER_VALUE`,
//! `QERR_INVALID_PARAMETER_TYPE`, include/qapi/qmp/qerror.h).

use serde_json::Value;

/// A `str` member: only a JSON string is one.
pub(crate) fn str_member(name: &str, v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        _ => Err(format!(
            "Invalid parameter type for '{name}', expected: string"
        )),
    }
}

/// A `bool` member: `qapi_bool_parse` for strings, a JSON boolean natively.
pub(crate) fn bool_member(name: &str, v: &Value) -> Result<bool, String> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) => match s.as_str() {
            "on" | "yes" | "true" | "y" => Ok(true),
            "off" | "no" | "false" | "n" => Ok(false),
            _ => Err(format!("Parameter '{name}' expects 'on' or 'off'")),
        },
        _ => Err(format!(
            "Invalid parameter type for '{name}', expected: boolean"
        )),
    }
}

/// A `uint64` member (the step before `uint32`'s range check).
fn u64_member(name: &str, v: &Value) -> Result<u64, String> {
    match v {
        Value::String(s) => {
            parse_uint(s).ok_or_else(|| format!("Parameter '{name}' expects a uint64 value"))
        }
        // qobject_input_type_uint64 accepts negative integers "for backward
        // compatibility", reinterpreted as two's complement.
        Value::Number(n) => n
            .as_u64()
            .or_else(|| n.as_i64().map(|i| i as u64))
            .ok_or_else(|| format!("Parameter '{name}' expects uint64")),
        _ => Err(format!("Parameter '{name}' expects uint64")),
    }
}

/// A `uint32` member: a uint64, then `visit_type_uintN`'s range check.
pub(crate) fn u32_member(name: &str, v: &Value) -> Result<u32, String> {
    let n = u64_member(name, v)?;
    u32::try_from(n).map_err(|_| format!("Parameter '{name}' expects uint32_t"))
}

/// A `size` member: `qemu_strtosz` for strings, a uint64 natively.
pub(crate) fn size_member(name: &str, v: &Value) -> Result<u64, String> {
    match v {
        Value::String(s) => {
            parse_size(s).ok_or_else(|| format!("Parameter '{name}' expects a size value"))
        }
        _ => u64_member(name, v),
    }
}

/// `parse_uint` (util/cutils.c) with base 0: leading blanks, an optional
/// `+`, then `0x` hex, `0` octal or decimal, and nothing after; no `-`.
fn parse_uint(s: &str) -> Option<u64> {
    let t = s.trim_start();
    let t = t.strip_prefix('+').unwrap_or(t);
    let (digits, radix) = if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        (h, 16)
    } else if t.len() > 1 && t.starts_with('0') {
        (&t[1..], 8)
    } else {
        (t, 10)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

/// `qemu_strtosz` (util/cutils.c `do_strtosz`, unit 1024, default suffix B):
/// a decimal integer with an optional fraction (which needs a suffix above
/// B), or a `0x` hex integer, then an optional `B K M G T P E` in any case.
pub(crate) fn parse_size(s: &str) -> Option<u64> {
    let t = s.trim_start();
    let t = t.strip_prefix('+').unwrap_or(t);
    let int_len = t.bytes().take_while(u8::is_ascii_digit).count();
    if int_len == 0 {
        return None;
    }
    let (int_part, mut rest) = t.split_at(int_len);
    let mut frac = 0f64;
    let val: u64;
    if let Some(h) = rest.strip_prefix(['x', 'X']).filter(|_| int_part == "0") {
        let hex_len = h.bytes().take_while(u8::is_ascii_hexdigit).count();
        if hex_len == 0 {
            return None;
        }
        val = u64::from_str_radix(&h[..hex_len], 16).ok()?;
        rest = &h[hex_len..];
        if rest.starts_with('.') {
            return None;
        }
    } else {
        val = int_part.parse().ok()?;
        if let Some(f) = rest.strip_prefix('.') {
            let flen = f.bytes().take_while(u8::is_ascii_digit).count();
            if flen > 0 {
                frac = format!("0.{}", &f[..flen]).parse().ok()?;
            }
            rest = &f[flen..];
        }
    }
    let mut chars = rest.chars();
    let mul: u64 = match chars.next().map(|c| c.to_ascii_uppercase()) {
        None => 1,
        Some('B') => 1,
        Some('K') => 1 << 10,
        Some('M') => 1 << 20,
        Some('G') => 1 << 30,
        Some('T') => 1 << 40,
        Some('P') => 1 << 50,
        Some('E') => 1 << 60,
        Some(_) => return None,
    };
    if chars.next().is_some() || (mul == 1 && frac != 0.0) {
        return None;
    }
    let whole = u128::from(val) * u128::from(mul);
    // Round 0.5 upward, as do_strtosz does.
    let part = (frac * mul as f64 + 0.5).floor() as u128;
    u64::try_from(whole + part).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_qemu_strtosz() {
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("64k"), Some(65536));
        assert_eq!(parse_size("1M"), Some(1 << 20));
        assert_eq!(parse_size("1.5k"), Some(1536));
        assert_eq!(parse_size("0x10"), Some(16));
        assert_eq!(parse_size("1.5"), None);
        assert_eq!(parse_size("1x"), None);
        assert_eq!(parse_size("-1"), None);
        assert_eq!(parse_size(""), None);
        assert_eq!(parse_size("16E"), None);
        // Odd input is refused, never a panic.
        assert_eq!(parse_size("1.k"), Some(1024));
        assert_eq!(parse_size("0x"), None);
        assert_eq!(parse_size("1é"), None);
        assert_eq!(parse_size("１"), None);
        assert_eq!(parse_size("1.5e3k"), None);
    }

    #[test]
    fn uints_read_with_base_0() {
        assert_eq!(parse_uint("0x2"), Some(2));
        assert_eq!(parse_uint("010"), Some(8));
        assert_eq!(parse_uint("0"), Some(0));
        assert_eq!(parse_uint("-1"), None);
        assert_eq!(parse_uint("2a"), None);
        assert_eq!(parse_uint("0é"), None);
        assert_eq!(parse_uint("99999999999999999999"), None);
    }
}
