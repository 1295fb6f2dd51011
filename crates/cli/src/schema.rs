//! Typed keys for QemuOpts-style options: which keys an option accepts, the
//! type of each, and validation with QEMU's error wording.

use crate::opts::{lex, RawOpt};
use crate::size::{parse_size, parse_u64, NumError};

/// The type of one key's value.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    /// Any string.
    Str,
    /// `on/off`, `yes/no`, `true/false`, `y/n`.
    Bool,
    /// An unsigned integer (decimal, `0x` hex, `0` octal).
    Number,
    /// A size in bytes with optional suffix (`qemu_strtosz`, default unit bytes).
    Size,
    /// One of a closed set of strings.
    Enum(&'static [&'static str]),
    /// A QEMU identifier: a letter, then letters, digits, `-`, `.`, `_`.
    Id,
}

impl Kind {
    /// How the type reads in help text.
    pub(crate) fn describe(self) -> String {
        match self {
            Kind::Str => "string".into(),
            Kind::Bool => "on|off".into(),
            Kind::Number => "number".into(),
            Kind::Size => "size".into(),
            Kind::Enum(vals) => vals.join("|"),
            Kind::Id => "id".into(),
        }
    }
}

/// One accepted key.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Key {
    pub name: &'static str,
    pub kind: Kind,
}

/// Shorthand for declaring a [`Key`].
pub(crate) const fn key(name: &'static str, kind: Kind) -> Key {
    Key { name, kind }
}

/// The keys of one option.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Schema {
    /// The key a leading value without `=` belongs to.
    pub implied: Option<&'static str>,
    pub keys: &'static [Key],
    /// Warn about short-form flags (`server` for `server=on`), as QEMU 7.2
    /// does for options parsed "noisily".
    pub warn_flags: bool,
    /// Accept any key (as strings) after checking the declared ones.
    pub open: bool,
}

/// A checked value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Val {
    Str(String),
    Bool(bool),
    Num(u64),
}

/// Parsed options: (key, value) in command-line order; a repeated key's last
/// value wins, as with QEMU's `qemu_opt_get`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Opts {
    pub entries: Vec<(String, Val)>,
    /// Warning texts (without location) produced while parsing.
    pub warnings: Vec<String>,
    /// Every entry as written (unchecked keys included), for pass-through storage.
    pub raw: Vec<(String, String)>,
}

impl Opts {
    pub(crate) fn get(&self, k: &str) -> Option<&Val> {
        self.entries
            .iter()
            .rev()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v)
    }
    pub(crate) fn has(&self, k: &str) -> bool {
        self.get(k).is_some()
    }
    pub(crate) fn str(&self, k: &str) -> Option<&str> {
        match self.get(k) {
            Some(Val::Str(s)) => Some(s),
            _ => None,
        }
    }
    pub(crate) fn bool(&self, k: &str) -> Option<bool> {
        match self.get(k) {
            Some(Val::Bool(b)) => Some(*b),
            _ => None,
        }
    }
    pub(crate) fn num(&self, k: &str) -> Option<u64> {
        match self.get(k) {
            Some(Val::Num(n)) => Some(*n),
            _ => None,
        }
    }
    /// Keys present, in first-seen order, without repeats.
    pub(crate) fn keys(&self) -> Vec<&str> {
        let mut v: Vec<&str> = Vec::new();
        for (k, _) in &self.entries {
            if !v.contains(&k.as_str()) {
                v.push(k);
            }
        }
        v
    }
}

pub(crate) fn parse_bool(key: &str, v: &str) -> Result<bool, String> {
    match v {
        "on" | "yes" | "true" | "y" => Ok(true),
        "off" | "no" | "false" | "n" => Ok(false),
        _ => Err(format!("Parameter '{key}' expects 'on' or 'off'")),
    }
}

pub(crate) fn id_wellformed(id: &str) -> bool {
    let mut c = id.chars();
    matches!(c.next(), Some(f) if f.is_ascii_alphabetic())
        && c.all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '.' | '_'))
}

pub(crate) fn bad_id() -> String {
    "Parameter 'id' expects an identifier (letters, digits, '-', '.', '_', starting with a letter)"
        .to_string()
}

pub(crate) fn size_error(key: &str, value: &str, e: NumError) -> String {
    match e {
        NumError::Invalid => format!(
            "Parameter '{key}' expects a non-negative number below 2^64 \
             (optional suffix k, M, G, T, P or E)"
        ),
        NumError::Range => format!("Value '{value}' is out of range for parameter '{key}'"),
    }
}

pub(crate) fn enum_error(key: &str, value: &str) -> String {
    format!("Parameter '{key}' does not accept value '{value}'")
}

/// Check one value against its declared type.
pub(crate) fn check(kind: Kind, key: &str, v: &str) -> Result<Val, String> {
    Ok(match kind {
        Kind::Str => Val::Str(v.to_string()),
        Kind::Bool => Val::Bool(parse_bool(key, v)?),
        Kind::Number => Val::Num(parse_u64(v).map_err(|e| match e {
            NumError::Range => format!("Value '{v}' is too large for parameter '{key}'"),
            NumError::Invalid => format!("Parameter '{key}' expects a number"),
        })?),
        Kind::Size => Val::Num(parse_size(v, 1).map_err(|e| size_error(key, v, e))?.bytes),
        Kind::Enum(vals) => {
            if vals.contains(&v) {
                Val::Str(v.to_string())
            } else {
                return Err(enum_error(key, v));
            }
        }
        Kind::Id => {
            if id_wellformed(v) {
                Val::Str(v.to_string())
            } else {
                return Err(bad_id());
            }
        }
    })
}

pub(crate) fn flag_warning(o: &RawOpt, written: &str) -> String {
    let suggestion = if o.key == "delay" {
        format!("nodelay={}", if o.value == "off" { "on" } else { "off" })
    } else {
        format!("{}={}", o.key, o.value)
    };
    format!("warning: short-form boolean option '{written}' deprecated; please use {suggestion} instead")
}

impl Schema {
    pub(crate) fn find(&self, name: &str) -> Option<&Key> {
        self.keys.iter().find(|k| k.name == name)
    }

    /// Lex and check `params`.
    pub(crate) fn parse(&self, params: &str) -> Result<Opts, String> {
        self.check_all(lex(params, self.implied))
    }

    /// Check already lexed elements (used by compat syntaxes that build them).
    pub(crate) fn check_all(&self, raw: Vec<RawOpt>) -> Result<Opts, String> {
        let mut opts = Opts::default();
        for o in raw {
            if let Some(written) = &o.flag {
                if self.warn_flags {
                    opts.warnings.push(flag_warning(&o, written));
                }
            }
            match self.find(&o.key) {
                Some(k) => {
                    let v = check(k.kind, &o.key, &o.value)?;
                    opts.entries.push((o.key.clone(), v));
                }
                None if self.open && !o.key.is_empty() => {
                    opts.entries
                        .push((o.key.clone(), Val::Str(o.value.clone())));
                }
                None => return Err(format!("Invalid parameter '{}'", o.key)),
            }
            opts.raw.push((o.key, o.value));
        }
        Ok(opts)
    }

    /// `key=type` list for documentation.
    pub(crate) fn describe_keys(&self) -> String {
        self.keys
            .iter()
            .map(|k| format!("{}={}", k.name, k.kind.describe()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Schema = Schema {
        implied: Some("size"),
        keys: &[
            key("size", Kind::Size),
            key("on", Kind::Bool),
            key("n", Kind::Number),
            key("e", Kind::Enum(&["a", "b"])),
            key("id", Kind::Id),
            key("s", Kind::Str),
            key("wait", Kind::Bool),
        ],
        warn_flags: true,
        open: false,
    };

    #[test]
    fn typed_values() {
        let o = S.parse("1G,on=yes,n=0x10,e=b,id=x-1.y_z,s=a,,b").unwrap();
        assert_eq!(o.num("size"), Some(1 << 30));
        assert_eq!(o.bool("on"), Some(true));
        assert_eq!(o.num("n"), Some(16));
        assert_eq!(o.str("e"), Some("b"));
        assert_eq!(o.str("id"), Some("x-1.y_z"));
        assert_eq!(o.str("s"), Some("a,b"));
        assert_eq!(o.keys(), vec!["size", "on", "n", "e", "id", "s"]);
    }

    #[test]
    fn bools() {
        for (v, b) in [
            ("on", true),
            ("yes", true),
            ("true", true),
            ("y", true),
            ("off", false),
            ("no", false),
            ("false", false),
            ("n", false),
        ] {
            assert_eq!(S.parse(&format!("1,on={v}")).unwrap().bool("on"), Some(b));
        }
        assert_eq!(
            S.parse("1,on=maybe").unwrap_err(),
            "Parameter 'on' expects 'on' or 'off'"
        );
    }

    #[test]
    fn last_value_wins() {
        let o = S.parse("1,n=1,n=2").unwrap();
        assert_eq!(o.num("n"), Some(2));
    }

    #[test]
    fn flags_warn() {
        let o = S.parse("1,nowait").unwrap();
        assert_eq!(o.bool("wait"), Some(false));
        assert_eq!(
            o.warnings,
            vec![
                "warning: short-form boolean option 'nowait' deprecated; please use wait=off instead"
                    .to_string()
            ]
        );
    }

    #[test]
    fn errors() {
        assert_eq!(
            S.parse("1,bogus=1").unwrap_err(),
            "Invalid parameter 'bogus'"
        );
        assert_eq!(S.parse("1,bogus").unwrap_err(), "Invalid parameter 'bogus'");
        assert_eq!(
            S.parse("1,n=x").unwrap_err(),
            "Parameter 'n' expects a number"
        );
        assert_eq!(
            S.parse("1,n=99999999999999999999").unwrap_err(),
            "Value '99999999999999999999' is too large for parameter 'n'"
        );
        assert!(S
            .parse("foo")
            .unwrap_err()
            .starts_with("Parameter 'size' expects"));
        assert_eq!(
            S.parse("16E").unwrap_err(),
            "Value '16E' is out of range for parameter 'size'"
        );
        assert_eq!(
            S.parse("1,e=c").unwrap_err(),
            "Parameter 'e' does not accept value 'c'"
        );
        assert!(S
            .parse("1,id=1x")
            .unwrap_err()
            .contains("expects an identifier"));
        assert!(S
            .parse("1,id=")
            .unwrap_err()
            .contains("expects an identifier"));
    }

    #[test]
    fn open_schema_keeps_unknown_keys() {
        let s = Schema { open: true, ..S };
        let o = s.parse("1,file.driver=x,n=3").unwrap();
        assert_eq!(o.str("file.driver"), Some("x"));
        assert_eq!(o.num("n"), Some(3));
        assert_eq!(
            s.parse("1,n=x").unwrap_err(),
            "Parameter 'n' expects a number"
        );
    }

    #[test]
    fn ids() {
        assert!(id_wellformed("a"));
        assert!(id_wellformed("charmonitor"));
        assert!(id_wellformed("pci.1"));
        assert!(!id_wellformed(""));
        assert!(!id_wellformed("1a"));
        assert!(!id_wellformed("a b"));
        assert!(!id_wellformed("-a"));
    }
}
