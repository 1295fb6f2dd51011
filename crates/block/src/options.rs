//! Option dictionaries for nodes: `-blockdev` JSON (typed) or keyval
//! (string leaves), and `-drive` keys (strings, dotted `file.locking`).
//! Mirrors QEMU's QDict handling: values may be strings or JSON scalars,
//! dotted keys are nested (`qdict_crumple`), and keys nobody consumed are
//! reported as unexpected.

use serde_json::{Map, Value};

use crate::error::BlockError;

/// `qdict_crumple`: `{"file.locking": "off"}` -> `{"file": {"locking": "off"}}`.
/// Already-nested objects are merged.
pub fn nest(flat: &Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    for (k, v) in flat {
        insert_path(&mut out, k, v.clone());
    }
    out
}

fn insert_path(m: &mut Map<String, Value>, key: &str, v: Value) {
    match key.split_once('.') {
        None => match (m.get_mut(key), v) {
            (Some(Value::Object(dst)), Value::Object(src)) => {
                for (k, v) in src {
                    insert_path(dst, &k, v);
                }
            }
            (_, v) => {
                m.insert(key.to_string(), v);
            }
        },
        Some((head, rest)) => {
            let e = m
                .entry(head.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if !e.is_object() {
                // `file=X` and `file.locking=off` together: QEMU keeps the
                // string as `file.filename` for -drive.
                let old = std::mem::replace(e, Value::Object(Map::new()));
                if let (Value::Object(o), Value::String(s)) = (&mut *e, old) {
                    o.insert("filename".into(), Value::String(s));
                }
            }
            if let Value::Object(o) = e {
                insert_path(o, rest, v);
            }
        }
    }
}

/// A node's options being consumed by its driver.
#[derive(Debug, Clone)]
pub struct Opts {
    map: Map<String, Value>,
    /// Prefix for error messages (`file.` for an inline child).
    prefix: String,
}

impl Opts {
    pub fn new(map: Map<String, Value>) -> Self {
        Opts {
            map,
            prefix: String::new(),
        }
    }

    pub fn child(map: Map<String, Value>, prefix: String) -> Self {
        Opts { map, prefix }
    }

    fn name(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    pub fn has(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.map.get(key)
    }

    pub fn take(&mut self, key: &str) -> Option<Value> {
        self.map.remove(key)
    }

    /// A string option (QEMU: "Invalid parameter type for 'K', expected: string").
    pub fn take_str(&mut self, key: &str) -> Result<Option<String>, BlockError> {
        match self.map.remove(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(BlockError::new(format!(
                "Invalid parameter type for '{}', expected: string",
                self.name(key)
            ))),
        }
    }

    /// A bool: JSON true/false, or keyval "on"/"off" (also yes/no, true/false).
    pub fn take_bool(&mut self, key: &str) -> Result<Option<bool>, BlockError> {
        match self.map.remove(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(Value::String(s)) => match s.as_str() {
                "on" | "yes" | "true" | "y" => Ok(Some(true)),
                "off" | "no" | "false" | "n" => Ok(Some(false)),
                _ => Err(BlockError::new(format!(
                    "Parameter '{}' expects 'on' or 'off'",
                    self.name(key)
                ))),
            },
            Some(_) => Err(BlockError::new(format!(
                "Invalid parameter type for '{}', expected: boolean",
                self.name(key)
            ))),
        }
    }

    /// A non-negative integer (JSON number or decimal string, with QEMU's
    /// size suffixes k/M/G/T for keyval strings).
    pub fn take_size(&mut self, key: &str) -> Result<Option<u64>, BlockError> {
        match self.map.remove(key) {
            None => Ok(None),
            Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(|| {
                BlockError::new(format!(
                    "Invalid parameter type for '{}', expected: integer",
                    self.name(key)
                ))
            }),
            Some(Value::String(s)) => parse_size(&s).map(Some).ok_or_else(|| {
                BlockError::new(format!(
                    "Parameter '{}' expects a non-negative number below 2^64",
                    self.name(key)
                ))
            }),
            Some(_) => Err(BlockError::new(format!(
                "Invalid parameter type for '{}', expected: integer",
                self.name(key)
            ))),
        }
    }

    /// An enum value among `allowed` (QEMU: "Parameter 'K' does not accept value 'V'").
    pub fn take_enum(&mut self, key: &str, allowed: &[&str]) -> Result<Option<String>, BlockError> {
        match self.take_str(key)? {
            None => Ok(None),
            Some(v) if allowed.contains(&v.as_str()) => Ok(Some(v)),
            Some(v) => Err(BlockError::new(format!(
                "Parameter '{}' does not accept value '{v}'",
                self.name(key)
            ))),
        }
    }

    /// QEMU's complaint about the first key nobody consumed (blockdev style).
    pub fn finish(self) -> Result<(), BlockError> {
        match self.map.keys().next() {
            None => Ok(()),
            Some(k) => Err(BlockError::new(format!(
                "Parameter '{}' is unexpected",
                self.name(k)
            ))),
        }
    }

    pub fn into_map(self) -> Map<String, Value> {
        self.map
    }

    pub fn remaining_keys(&self) -> impl Iterator<Item = &String> {
        self.map.keys()
    }
}

/// `qemu_strtosz`: "64M", "1G", "4096".
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.chars().last()? {
        'k' | 'K' => (&s[..s.len() - 1], 1u64 << 10),
        'M' => (&s[..s.len() - 1], 1 << 20),
        'G' => (&s[..s.len() - 1], 1 << 30),
        'T' => (&s[..s.len() - 1], 1 << 40),
        'b' | 'B' => (&s[..s.len() - 1], 1),
        _ => (s, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dotted_drive_keys_nest() {
        let flat = json!({"file": "a.img", "file.locking": "off", "format": "raw"});
        let n = nest(flat.as_object().unwrap());
        assert_eq!(
            Value::Object(n),
            json!({"file": {"filename": "a.img", "locking": "off"}, "format": "raw"})
        );
    }

    #[test]
    fn keyval_bools_and_sizes() {
        let mut o = Opts::new(
            json!({"a": "on", "b": false, "s": "1M", "bad": "maybe"})
                .as_object()
                .unwrap()
                .clone(),
        );
        assert_eq!(o.take_bool("a").unwrap(), Some(true));
        assert_eq!(o.take_bool("b").unwrap(), Some(false));
        assert_eq!(o.take_size("s").unwrap(), Some(1 << 20));
        assert!(o.take_bool("bad").is_err());
        o.finish().unwrap();
    }
}
