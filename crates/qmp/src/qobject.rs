//! QEMU's JSON value model (`QObject`) and its compact writer.
//!
//! QMP clients see QEMU's exact bytes, so this module reproduces the three
//! things about QEMU's JSON output that differ from a generic serializer:
//!
//! * **Key order.** QEMU stores objects in a `QDict`, a 512-bucket hash table
//!   keyed by `tdb_hash`; output walks the buckets in order and, inside a
//!   bucket, newest entry first.  [`QDict::qemu_order`] reproduces that, so
//!   `{"return": {}, "id": 1}` and `{"id": 1, "error": {...}}` come out exactly
//!   as QEMU 7.2 writes them.
//! * **Numbers.** Integers are `int64`, else `uint64`, else `double`; doubles
//!   print as C's `%.17g` (so `0.1` echoes as `0.10000000000000001`, `1e400`
//!   as `inf`).
//! * **Strings.** Everything outside printable ASCII is escaped as `\uXXXX`
//!   (upper-case hex, surrogate pairs beyond the BMP); invalid code points
//!   become `\uFFFD`.

use std::collections::HashMap;
use std::fmt::Write as _;

/// A JSON value as QEMU's QObject layer holds it.
#[derive(Clone, Debug, PartialEq)]
pub enum QObject {
    Null,
    Bool(bool),
    /// A JSON integer that fits `i64`.
    Int(i64),
    /// A JSON integer above `i64::MAX` that fits `u64`.
    UInt(u64),
    /// Any other number (fractions, exponents, integers beyond 64 bits).
    Double(f64),
    Str(String),
    List(Vec<QObject>),
    Dict(QDict),
}

impl QObject {
    pub fn as_dict(&self) -> Option<&QDict> {
        match self {
            QObject::Dict(d) => Some(d),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            QObject::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The value as `i64` if QEMU's `qnum_get_try_int` would succeed.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            QObject::Int(i) => Some(i),
            _ => None,
        }
    }

    /// The value as `u64` if QEMU's `qnum_get_try_uint` would succeed.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            QObject::Int(i) if i >= 0 => Some(i as u64),
            QObject::UInt(u) => Some(u),
            _ => None,
        }
    }

    /// Compact JSON text, exactly as QEMU's `qobject_to_json()` writes it.
    pub fn to_json(&self) -> String {
        let mut out = String::new();
        write_json(self, &mut out);
        out
    }
}

impl From<&serde_json::Value> for QObject {
    fn from(v: &serde_json::Value) -> Self {
        use serde_json::Value as V;
        match v {
            V::Null => QObject::Null,
            V::Bool(b) => QObject::Bool(*b),
            V::Number(n) => {
                if let Some(i) = n.as_i64() {
                    QObject::Int(i)
                } else if let Some(u) = n.as_u64() {
                    QObject::UInt(u)
                } else {
                    QObject::Double(n.as_f64().unwrap_or(0.0))
                }
            }
            V::String(s) => QObject::Str(s.clone()),
            V::Array(a) => QObject::List(a.iter().map(QObject::from).collect()),
            V::Object(m) => {
                let mut d = QDict::new();
                for (k, v) in m {
                    d.insert(k.clone(), QObject::from(v));
                }
                QObject::Dict(d)
            }
        }
    }
}

impl From<serde_json::Value> for QObject {
    fn from(v: serde_json::Value) -> Self {
        QObject::from(&v)
    }
}

impl From<&QObject> for serde_json::Value {
    /// Converts to serde's model.  Non-finite doubles (only reachable through
    /// `1e400`-style input) have no serde representation and become `null`.
    fn from(q: &QObject) -> Self {
        use serde_json::Value as V;
        match q {
            QObject::Null => V::Null,
            QObject::Bool(b) => V::Bool(*b),
            QObject::Int(i) => V::from(*i),
            QObject::UInt(u) => V::from(*u),
            QObject::Double(f) => serde_json::Number::from_f64(*f).map_or(V::Null, V::Number),
            QObject::Str(s) => V::String(s.clone()),
            QObject::List(l) => V::Array(l.iter().map(V::from).collect()),
            QObject::Dict(d) => {
                let mut m = serde_json::Map::new();
                for (k, v) in d.iter() {
                    m.insert(k.clone(), V::from(v));
                }
                V::Object(m)
            }
        }
    }
}

/// QEMU's `QDict`: keys are unique; insertion order is remembered because it
/// decides the output order of keys that share a hash bucket.
#[derive(Clone, Debug, Default)]
pub struct QDict {
    entries: Vec<(String, QObject)>,
    index: HashMap<String, usize>,
}

impl PartialEq for QDict {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().all(|(k, v)| other.get(k) == Some(v))
    }
}

/// Number of buckets of QEMU's QDict hash table (`QDICT_BUCKET_MAX`).
const QDICT_BUCKET_MAX: u32 = 512;

/// QEMU's `tdb_hash()` (qobject/qdict.c), used to place keys in buckets.
pub fn tdb_hash(name: &str) -> u32 {
    let bytes = name.as_bytes();
    let mut value: u32 = 0x238F_13AFu32.wrapping_mul(bytes.len() as u32);
    for (i, &c) in bytes.iter().enumerate() {
        value = value.wrapping_add((c as u32) << ((i * 5) % 24));
    }
    1_103_515_243u32.wrapping_mul(value).wrapping_add(12345)
}

fn qdict_bucket(name: &str) -> u32 {
    tdb_hash(name) % QDICT_BUCKET_MAX
}

impl QDict {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, key: &str) -> Option<&QObject> {
        self.index.get(key).map(|&i| &self.entries[i].1)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.index.contains_key(key)
    }

    /// `qdict_put_obj`: replaces the value of an existing key in place,
    /// otherwise adds the key as the newest entry.
    pub fn insert(&mut self, key: impl Into<String>, value: QObject) {
        let key = key.into();
        if let Some(&i) = self.index.get(&key) {
            self.entries[i].1 = value;
        } else {
            self.index.insert(key.clone(), self.entries.len());
            self.entries.push((key, value));
        }
    }

    /// `qdict_del`.
    pub fn remove(&mut self, key: &str) -> Option<QObject> {
        let i = self.index.remove(key)?;
        let (_, v) = self.entries.remove(i);
        for (j, (k, _)) in self.entries.iter().enumerate().skip(i) {
            self.index.insert(k.clone(), j);
        }
        Some(v)
    }

    /// Entries in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &QObject)> {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    /// Entries in the order QEMU iterates (`qdict_first`/`qdict_next`) and
    /// therefore prints them: by bucket, newest first within a bucket.
    pub fn qemu_order(&self) -> Vec<(&String, &QObject)> {
        let mut v: Vec<(u32, usize, &String, &QObject)> = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, (k, val))| (qdict_bucket(k), i, k, val))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        v.into_iter().map(|(_, _, k, val)| (k, val)).collect()
    }
}

impl FromIterator<(String, QObject)> for QDict {
    fn from_iter<T: IntoIterator<Item = (String, QObject)>>(iter: T) -> Self {
        let mut d = QDict::new();
        for (k, v) in iter {
            d.insert(k, v);
        }
        d
    }
}

/// Appends the compact QEMU JSON form of `v` to `out`.
pub fn write_json(v: &QObject, out: &mut String) {
    match v {
        QObject::Null => out.push_str("null"),
        QObject::Bool(true) => out.push_str("true"),
        QObject::Bool(false) => out.push_str("false"),
        QObject::Int(i) => {
            let _ = write!(out, "{i}");
        }
        QObject::UInt(u) => {
            let _ = write!(out, "{u}");
        }
        QObject::Double(f) => out.push_str(&format_g17(*f)),
        QObject::Str(s) => write_quoted(s, out),
        QObject::List(l) => {
            out.push('[');
            for (i, e) in l.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_json(e, out);
            }
            out.push(']');
        }
        QObject::Dict(d) => {
            out.push('{');
            for (i, (k, e)) in d.qemu_order().into_iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_quoted(k, out);
                out.push_str(": ");
                write_json(e, out);
            }
            out.push('}');
        }
    }
}

/// QEMU's `is_valid_codepoint()` (util/unicode.c).
pub(crate) fn is_valid_codepoint(cp: u32) -> bool {
    if cp > 0x10FFFF {
        return false;
    }
    if (0xFDD0..=0xFDEF).contains(&cp) || (cp & 0xFFFE) == 0xFFFE {
        return false;
    }
    !(0xD800..=0xDFFF).contains(&cp)
}

/// QEMU's `quoted_str()` (qobject/json-writer.c).
fn write_quoted(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            _ => {
                let mut cp = c as u32;
                if !is_valid_codepoint(cp) {
                    cp = 0xFFFD;
                }
                if cp > 0xFFFF {
                    let v = cp - 0x10000;
                    let _ = write!(
                        out,
                        "\\u{:04X}\\u{:04X}",
                        0xD800 + (v >> 10),
                        0xDC00 + (v & 0x3FF)
                    );
                } else if !(0x20..0x7F).contains(&cp) {
                    let _ = write!(out, "\\u{cp:04X}");
                } else {
                    out.push(c);
                }
            }
        }
    }
    out.push('"');
}

/// C's `printf("%.17g", v)` as glibc prints it.
pub fn format_g17(v: f64) -> String {
    if v.is_nan() {
        return if v.is_sign_negative() { "-nan" } else { "nan" }.to_string();
    }
    if v.is_infinite() {
        return if v < 0.0 { "-inf" } else { "inf" }.to_string();
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0" } else { "0" }.to_string();
    }
    // Round to 17 significant digits first; the exponent of that decides
    // between the %e and %f styles, as C specifies for %g.
    let e_style = format!("{v:.16e}");
    let (mantissa, exp) = e_style.split_once('e').unwrap_or((&e_style, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..17).contains(&exp) {
        let m = strip_fraction_zeros(mantissa);
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{m}e{sign}{:02}", exp.unsigned_abs())
    } else {
        let prec = (16 - exp) as usize;
        strip_fraction_zeros(&format!("{v:.prec$}")).to_string()
    }
}

fn strip_fraction_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

/// Decodes a C string the way QEMU's JSON writer reads it: stops at the first
/// NUL byte, decodes modified UTF-8 (`C0 80` is U+0000) and turns every
/// sequence `mod_utf8_codepoint()` rejects into U+FFFD.  Used for error
/// messages that quote raw client input.
pub(crate) fn c_string_lossy(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    let bytes = &bytes[..end];
    let mut out = String::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let (cp, len) = mod_utf8_codepoint(&bytes[i..]);
        i += len.max(1);
        match cp.and_then(char::from_u32) {
            Some(c) => out.push(c),
            None => out.push('\u{FFFD}'),
        }
    }
    out
}

/// QEMU's `mod_utf8_codepoint()`: decodes one code point from `s` (which
/// must not be empty), returning it (or `None` if invalid) and the number of
/// bytes consumed.
pub(crate) fn mod_utf8_codepoint(s: &[u8]) -> (Option<u32>, usize) {
    const MIN_CP: [u32; 5] = [0x80, 0x800, 0x10000, 0x200000, 0x4000000];
    let byte = s[0] as u32;
    if byte < 0x80 {
        return (Some(byte), 1);
    }
    if byte >= 0xFE || byte & 0x40 == 0 {
        // impossible byte, or unexpected continuation byte
        return (None, 1);
    }
    let mut len = 0usize;
    let mut mask = 0x80u32;
    while byte & mask != 0 {
        len += 1;
        mask >>= 1;
    }
    let mut cp = byte & (mask - 1);
    let mut p = 1usize;
    for _ in 1..len {
        let b = s.get(p).copied().unwrap_or(0) as u32;
        if b & 0xC0 != 0x80 {
            return (None, p); // continuation byte missing
        }
        p += 1;
        cp = (cp << 6) | (b & 0x3F);
    }
    if !is_valid_codepoint(cp) || (cp < MIN_CP[len - 2] && !(cp == 0 && len == 2)) {
        return (None, p);
    }
    (Some(cp), p)
}

/// Convenience: build a `QObject::Dict` from pairs, inserting in order.
pub fn qdict<I, K>(pairs: I) -> QObject
where
    I: IntoIterator<Item = (K, QObject)>,
    K: Into<String>,
{
    QObject::Dict(pairs.into_iter().map(|(k, v)| (k.into(), v)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_order_matches_qemu() {
        // Observed on QEMU 7.2.
        let greeting = qdict([(
            "QMP",
            qdict([
                (
                    "version",
                    qdict([
                        (
                            "qemu",
                            qdict([
                                ("major", QObject::Int(7)),
                                ("minor", QObject::Int(2)),
                                ("micro", QObject::Int(0)),
                            ]),
                        ),
                        ("package", QObject::Str("p".into())),
                    ]),
                ),
                (
                    "capabilities",
                    QObject::List(vec![QObject::Str("oob".into())]),
                ),
            ]),
        )]);
        assert_eq!(
            greeting.to_json(),
            r#"{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": "p"}, "capabilities": ["oob"]}}"#
        );
        let status = qdict([
            ("running", QObject::Bool(false)),
            ("singlestep", QObject::Bool(false)),
            ("status", QObject::Str("prelaunch".into())),
        ]);
        assert_eq!(
            status.to_json(),
            r#"{"status": "prelaunch", "singlestep": false, "running": false}"#
        );
        let rsp = qdict([
            ("return", qdict::<[(&str, QObject); 0], &str>([])),
            ("id", QObject::Int(1)),
        ]);
        assert_eq!(rsp.to_json(), r#"{"return": {}, "id": 1}"#);
        let ev = qdict([
            ("event", QObject::Str("STOP".into())),
            ("data", qdict([("guest", QObject::Bool(true))])),
            (
                "timestamp",
                qdict([
                    ("seconds", QObject::Int(1)),
                    ("microseconds", QObject::Int(2)),
                ]),
            ),
        ]);
        assert_eq!(
            ev.to_json(),
            r#"{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "STOP", "data": {"guest": true}}"#
        );
    }

    #[test]
    fn g17_matches_c() {
        let cases: &[(f64, &str)] = &[
            (2.5, "2.5"),
            (0.1, "0.10000000000000001"),
            (100.0, "100"),
            (-0.0, "-0"),
            (1.8446744073709552e19, "1.8446744073709552e+19"),
            (-9.223372036854776e18, "-9.2233720368547758e+18"),
            (f64::INFINITY, "inf"),
            (1.2345678901234568e29, "1.2345678901234568e+29"),
            (f64::MAX, "1.7976931348623157e+308"),
            (5e-324, "4.9406564584124654e-324"),
            (1e16, "10000000000000000"),
            (1e17, "1e+17"),
            (123456789.125, "123456789.125"),
            (0.0001, "0.0001"),
            (0.00001, "1.0000000000000001e-05"),
            (-0.0015, "-0.0015"),
        ];
        for &(v, s) in cases {
            assert_eq!(format_g17(v), s, "{v:e}");
        }
    }

    #[test]
    fn g17_matches_libc_snprintf() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for i in 0..20000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = if i % 2 == 0 {
                f64::from_bits(x)
            } else {
                (x % 1_000_000_007) as f64 / 10f64.powi((x % 40) as i32 - 20)
            };
            if v.is_nan() {
                continue;
            }
            let mut buf = [0u8; 64];
            // SAFETY: buf is large enough for any %.17g output and NUL-terminated by snprintf.
            let n = unsafe {
                libc::snprintf(
                    buf.as_mut_ptr() as *mut libc::c_char,
                    buf.len(),
                    c"%.17g".as_ptr(),
                    v,
                )
            };
            let c = std::str::from_utf8(&buf[..n as usize]).unwrap();
            assert_eq!(format_g17(v), c, "bits {:x}", v.to_bits());
        }
    }

    #[test]
    fn string_escapes_match_qemu() {
        let s = QObject::Str(
            "a/b'c\"d\u{8}\u{c}\n\r\t\u{7f}\u{e9}\u{20ac}\u{1f600}\u{0}\u{fffe}".into(),
        );
        assert_eq!(
            s.to_json(),
            r#""a/b'c\"d\b\f\n\r\t\u007F\u00E9\u20AC\uD83D\uDE00\u0000\uFFFD""#
        );
    }

    #[test]
    fn lossy_c_string() {
        assert_eq!(c_string_lossy(b"'\xe9\x01"), "'\u{fffd}\u{1}");
        assert_eq!(c_string_lossy(b"a\0b"), "a");
        assert_eq!(c_string_lossy(b"\xc0\x80"), "\u{0}");
        assert_eq!(c_string_lossy(b"\xc3\xa9"), "\u{e9}");
        assert_eq!(c_string_lossy(b"\xc3x"), "\u{fffd}x");
    }

    #[test]
    fn qdict_replace_keeps_position() {
        let mut d = QDict::new();
        d.insert("a", QObject::Int(1));
        d.insert("b", QObject::Int(2));
        d.insert("a", QObject::Int(3));
        assert_eq!(
            d.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(d.remove("a"), Some(QObject::Int(3)));
        assert_eq!(d.get("b"), Some(&QObject::Int(2)));
        assert!(!d.contains_key("a"));
    }
}
