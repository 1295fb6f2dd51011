//! Sizes and numbers as QEMU reads them (`qemu_strtosz`, `qemu_strtou64`).
//!
//! Sizes: a decimal integer, an optional fraction (only with a suffix), or a
//! `0x` hex integer, then an optional binary suffix `B K M G T P E` (any case).
//! Without a suffix the caller's default unit applies. Negative values and
//! trailing garbage are invalid; results above `u64::MAX` are out of range.

/// Why a size or number did not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NumError {
    /// Not a number of the expected form.
    Invalid,
    /// A number, but it does not fit in 64 bits.
    Range,
}

/// A parsed size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Size {
    pub bytes: u64,
    /// The input was hex *and* had a suffix, which QEMU 7.2 accepts with a
    /// deprecation warning.
    pub hex_with_suffix: bool,
}

fn suffix_mul(c: u8) -> Option<u64> {
    Some(match c.to_ascii_uppercase() {
        b'B' => 1,
        b'K' => 1 << 10,
        b'M' => 1 << 20,
        b'G' => 1 << 30,
        b'T' => 1 << 40,
        b'P' => 1 << 50,
        b'E' => 1 << 60,
        _ => return None,
    })
}

/// Parse a size; `default_mul` is the unit used when no suffix is given.
pub(crate) fn parse_size(s: &str, default_mul: u64) -> Result<Size, NumError> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() && b[i].is_ascii_whitespace() {
        i += 1;
    }
    match b.get(i) {
        Some(b'-') => return Err(NumError::Invalid),
        Some(b'+') => i += 1,
        _ => {}
    }
    let int_start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    if i == int_start {
        return Err(NumError::Invalid);
    }
    let int_digits = &s[int_start..i];
    let mut hex = false;
    let mut val: u64;
    // (numerator, denominator) of the fractional part.
    let mut frac: (u128, u128) = (0, 1);
    if matches!(b.get(i), Some(b'x' | b'X')) {
        // Only a lone "0" prefix makes hex, and then at least one hex digit must follow.
        let hex_start = i + 1;
        let mut j = hex_start;
        while j < b.len() && b[j].is_ascii_hexdigit() {
            j += 1;
        }
        if int_digits != "0" || j == hex_start {
            return Err(NumError::Invalid);
        }
        val = u64::from_str_radix(&s[hex_start..j], 16).map_err(|_| NumError::Range)?;
        i = j;
        if b.get(i) == Some(&b'.') {
            return Err(NumError::Invalid);
        }
        hex = true;
    } else {
        val = int_digits.parse::<u64>().map_err(|_| NumError::Range)?;
        if b.get(i) == Some(&b'.') {
            i += 1;
            let fstart = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            // strtod would swallow an exponent; QEMU rejects the whole input then.
            if i > fstart && matches!(b.get(i), Some(b'e' | b'E')) {
                let mut k = i + 1;
                if matches!(b.get(k), Some(b'+' | b'-')) {
                    k += 1;
                }
                if b.get(k).is_some_and(|c| c.is_ascii_digit()) {
                    return Err(NumError::Invalid);
                }
            }
            // Keep at most 18 fractional digits: exact enough, and no u128 overflow.
            let digits = &s[fstart..i.min(fstart + 18)];
            if !digits.is_empty() {
                let num = digits.parse::<u128>().map_err(|_| NumError::Invalid)?;
                frac = (num, 10u128.pow(digits.len() as u32));
            }
        }
    }
    let mul = match b.get(i).and_then(|&c| suffix_mul(c)) {
        Some(m) => {
            i += 1;
            m
        }
        None => {
            hex = false;
            default_mul
        }
    };
    if i != b.len() {
        return Err(NumError::Invalid);
    }
    if mul == 1 && frac.0 != 0 {
        return Err(NumError::Invalid);
    }
    let whole = u128::from(val) * u128::from(mul);
    // Round half up, as QEMU does.
    let part = (frac.0 * u128::from(mul) * 2 + frac.1) / (2 * frac.1);
    let total = whole + part;
    val = u64::try_from(total).map_err(|_| NumError::Range)?;
    Ok(Size {
        bytes: val,
        hex_with_suffix: hex,
    })
}

/// Parse an unsigned number the way `strtoull(s, 0)` does for QemuOpts
/// numbers: decimal, `0x` hex or leading-`0` octal. Negative numbers are
/// rejected.
/// The digits of an unsigned C integer literal and their base, as `strtoull`
/// with base 0 reads them: `0x` hex, a leading `0` octal, else decimal.
pub(crate) fn split_radix(t: &str) -> (&str, u32) {
    if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        (h, 16)
    } else if t.len() > 1 && t.starts_with('0') {
        (&t[1..], 8)
    } else {
        (t, 10)
    }
}

pub(crate) fn parse_u64(s: &str) -> Result<u64, NumError> {
    let t = s.trim_start();
    let t = t.strip_prefix('+').unwrap_or(t);
    if t.is_empty() || t.starts_with('-') {
        return Err(NumError::Invalid);
    }
    let (digits, radix) = crate::size::split_radix(t);
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return Err(NumError::Invalid);
    }
    u64::from_str_radix(digits, radix).map_err(|_| NumError::Range)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn sz(s: &str) -> Result<u64, NumError> {
        parse_size(s, 1).map(|v| v.bytes)
    }

    #[test]
    fn plain_and_suffixed() {
        assert_eq!(sz("256"), Ok(256));
        assert_eq!(sz("256b"), Ok(256));
        assert_eq!(sz("4k"), Ok(4096));
        assert_eq!(sz("4K"), Ok(4096));
        assert_eq!(sz("256M"), Ok(256 * MIB));
        assert_eq!(sz("1G"), Ok(1 << 30));
        assert_eq!(sz("1t"), Ok(1 << 40));
        assert_eq!(sz("1P"), Ok(1 << 50));
        assert_eq!(sz("1E"), Ok(1 << 60));
        assert_eq!(sz(" 256"), Ok(256));
        assert_eq!(sz("+5"), Ok(5));
    }

    #[test]
    fn default_unit() {
        assert_eq!(parse_size("256", MIB).unwrap().bytes, 256 * MIB);
        assert_eq!(parse_size("1G", MIB).unwrap().bytes, 1 << 30);
    }

    #[test]
    fn fractions_need_a_suffix() {
        assert_eq!(sz("1.5G"), Ok(3 << 29));
        assert_eq!(sz("0.5k"), Ok(512));
        assert_eq!(sz("1.k"), Ok(1024));
        assert_eq!(sz("1.5"), Err(NumError::Invalid));
        assert_eq!(sz("1.5b"), Err(NumError::Invalid));
        assert_eq!(sz("1.5e3M"), Err(NumError::Invalid));
        // "1.5e" is 1.5 exbibytes: the 'e' is a suffix, not an exponent.
        assert_eq!(sz("1.5e"), Ok(3 << 59));
    }

    #[test]
    fn hex() {
        assert_eq!(sz("0x100"), Ok(256));
        let s = parse_size("0x100M", 1).unwrap();
        assert_eq!(s.bytes, 256 * MIB);
        assert!(s.hex_with_suffix);
        assert!(!parse_size("0x100", 1).unwrap().hex_with_suffix);
        assert_eq!(sz("0x"), Err(NumError::Invalid));
        assert_eq!(sz("00x10"), Err(NumError::Invalid));
        assert_eq!(sz("0x1.5M"), Err(NumError::Invalid));
    }

    #[test]
    fn invalid_and_range() {
        for bad in ["", "foo", "-1", " -1", "1X", "1MB", "M", "1 M", "1..5M"] {
            assert_eq!(sz(bad), Err(NumError::Invalid), "{bad:?}");
        }
        assert_eq!(sz("16E"), Err(NumError::Range));
        assert_eq!(sz("99999999999999999999999"), Err(NumError::Range));
        assert_eq!(sz("18446744073709551615"), Ok(u64::MAX));
        assert_eq!(sz("0xffffffffffffffffff"), Err(NumError::Range));
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_u64("42"), Ok(42));
        assert_eq!(parse_u64("0x1f"), Ok(31));
        assert_eq!(parse_u64("010"), Ok(8));
        assert_eq!(parse_u64("0"), Ok(0));
        assert_eq!(parse_u64("-1"), Err(NumError::Invalid));
        assert_eq!(parse_u64("09"), Err(NumError::Invalid));
        assert_eq!(parse_u64("1k"), Err(NumError::Invalid));
        assert_eq!(parse_u64(""), Err(NumError::Invalid));
        assert_eq!(parse_u64("99999999999999999999"), Err(NumError::Range));
    }
}
