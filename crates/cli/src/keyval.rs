//! QEMU's keyval syntax (`util/keyval.c`) and the JSON alternative.
//!
//! `driver=qcow2,file.driver=file,file.filename=x` is the JSON object
//! `{"driver":"qcow2","file":{"driver":"file","filename":"x"}}`: dotted keys
//! build nested objects, objects whose keys are all decimal indexes become
//! arrays (`a.0=x,a.1=y`), and every leaf stays a string. Key fragments are
//! QAPI names (a letter, then letters, digits, `-`, `_`) or, after the first,
//! decimal indexes; a repeated key's last value wins. Unlike QemuOpts there
//! are no short-form flags. An argument starting with `{` is JSON instead.

use crate::opts::take_value;
use serde_json::{Map, Value};

/// Longest accepted key fragment (QEMU: 127 characters).
const MAX_FRAGMENT: usize = 127;
/// Deepest accepted nesting; QEMU has no limit, this keeps recursion bounded.
const MAX_DEPTH: usize = 32;

/// Length of the QAPI name at the start of `s` (0 if none).
fn qapi_name_len(s: &str) -> usize {
    let b = s.as_bytes();
    if b.first().is_some_and(|c| c.is_ascii_alphabetic()) {
        1 + b[1..]
            .iter()
            .take_while(|c| c.is_ascii_alphanumeric() || **c == b'-' || **c == b'_')
            .count()
    } else {
        0
    }
}

/// `key_to_index`: leading decimal digits as an index, capped at `i32::MAX`.
fn key_to_index(s: &str) -> Option<(usize, usize)> {
    let n = s.bytes().take_while(u8::is_ascii_digit).count();
    if n == 0 {
        return None;
    }
    let idx = s[..n]
        .parse::<u64>()
        .unwrap_or(u64::MAX)
        .min(i32::MAX as u64);
    Some((idx as usize, n))
}

/// Split `key` into fragments, checking each (QEMU's errors).
fn fragments(key: &str) -> Result<Vec<&str>, String> {
    let mut out = Vec::new();
    let mut s = key;
    loop {
        let len = if out.is_empty() {
            qapi_name_len(s)
        } else {
            match key_to_index(s) {
                Some((_, n)) => n,
                None => qapi_name_len(s),
            }
        };
        if len == 0 || (len < s.len() && s.as_bytes()[len] != b'.') {
            return Err(format!("Invalid parameter '{key}'"));
        }
        let frag = &s[..len];
        if len > MAX_FRAGMENT {
            let whole = out.is_empty() && len == s.len();
            return Err(format!(
                "Parameter{} '{frag}' is too long",
                if whole { "" } else { " fragment" }
            ));
        }
        out.push(frag);
        if out.len() > MAX_DEPTH {
            return Err(format!("Parameter '{key}' is nested too deeply"));
        }
        if len == s.len() {
            return Ok(out);
        }
        s = &s[len + 1..];
    }
}

/// Store `value` at the path `frags` in `root`.
fn put(root: &mut Map<String, Value>, frags: &[&str], value: String) -> Result<(), String> {
    let Some((last, inner)) = frags.split_last() else {
        return Ok(());
    };
    let mut cur = root;
    for (i, f) in inner.iter().enumerate() {
        let entry = cur
            .entry(f.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        match entry {
            Value::Object(m) => cur = m,
            _ => {
                return Err(format!(
                    "Parameters '{}.*' used inconsistently",
                    frags[..=i].join(".")
                ))
            }
        }
    }
    if let Some(Value::Object(_)) = cur.get(*last) {
        return Err(format!(
            "Parameters '{}.*' used inconsistently",
            frags.join(".")
        ));
    }
    cur.insert(last.to_string(), Value::String(value));
    Ok(())
}

/// Replace objects whose keys are all indexes by arrays (`keyval_listify`).
fn listify(cur: &mut Map<String, Value>, path: &str) -> Result<Option<Vec<Value>>, String> {
    let mut has_index = false;
    let mut has_member = false;
    for (k, v) in cur.iter_mut() {
        if key_to_index(k).is_some_and(|(_, n)| n == k.len()) {
            has_index = true;
        } else {
            has_member = true;
        }
        if let Value::Object(m) = v {
            let sub = format!("{path}{k}.");
            if let Some(list) = listify(m, &sub)? {
                *v = Value::Array(list);
            }
        }
    }
    if has_index && has_member {
        return Err(format!("Parameters '{path}*' used inconsistently"));
    }
    if !has_index {
        return Ok(None);
    }
    let nelt = cur.len() + 1;
    let mut elt: Vec<Option<Value>> = vec![None; nelt];
    let mut max_index = 0usize;
    for (k, v) in cur.iter() {
        let idx = key_to_index(k).map(|(i, _)| i).unwrap_or(0);
        max_index = max_index.max(idx);
        if idx < nelt - 1 {
            elt[idx] = Some(v.clone());
        }
    }
    let mut list = Vec::new();
    for (i, e) in elt.into_iter().enumerate().take(nelt.min(max_index + 1)) {
        match e {
            Some(v) => list.push(v),
            None => return Err(format!("Parameter '{path}{i}' missing")),
        }
    }
    Ok(Some(list))
}

/// Parse keyval `params`; with `implied`, a first element without `=` is that key's value.
pub(crate) fn parse_keyval(
    params: &str,
    implied: Option<&str>,
) -> Result<Map<String, Value>, String> {
    parse(params, implied, None)
}

/// As [`parse_keyval`], but an element `help` or `?` without `=` is a help
/// request rather than a key or the implied key's value (keyval.c
/// `keyval_parse_one` with `help`); the flag says whether one was given.
pub(crate) fn parse_keyval_help(
    params: &str,
    implied: Option<&str>,
) -> Result<(Map<String, Value>, bool), String> {
    let mut help = false;
    let map = parse(params, implied, Some(&mut help))?;
    Ok((map, help))
}

fn parse(
    params: &str,
    implied: Option<&str>,
    mut help: Option<&mut bool>,
) -> Result<Map<String, Value>, String> {
    let mut root = Map::new();
    let mut s = params;
    let mut implied = implied;
    while !s.is_empty() {
        let len = s.find(['=', ',']).unwrap_or(s.len());
        let bare = len > 0 && s.as_bytes().get(len) != Some(&b'=');
        if let Some(h) = help.as_deref_mut().filter(|_| bare) {
            if matches!(&s[..len], "help" | "?") {
                *h = true;
                s = s[len..].strip_prefix(',').unwrap_or(&s[len..]);
                implied = None;
                continue;
            }
        }
        let is_implied = bare && implied.is_some();
        if is_implied {
            let key = implied.unwrap_or_default();
            let (value, rest) = take_value(s);
            put(&mut root, &[key], value)?;
            s = rest;
        } else {
            let key = &s[..len];
            let frags = fragments(key)?;
            if s.as_bytes().get(len) != Some(&b'=') {
                return Err(format!("Expected '=' after parameter '{key}'"));
            }
            let (value, rest) = take_value(&s[len + 1..]);
            put(&mut root, &frags, value)?;
            s = rest;
        }
        implied = None;
    }
    listify(&mut root, "")?;
    Ok(root)
}

/// Parse a JSON object argument (one starting with `{`).
pub(crate) fn parse_json_object(s: &str) -> Result<Map<String, Value>, String> {
    match serde_json::from_str::<Value>(s) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err("JSON value is not an object".to_string()),
        Err(e) => Err(format!("JSON parse error, {e}")),
    }
}

/// Does QEMU treat this argument as JSON?
pub(crate) fn is_json(s: &str) -> bool {
    s.starts_with('{')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn kv(s: &str) -> Value {
        Value::Object(parse_keyval(s, None).unwrap())
    }

    #[test]
    fn flat_and_nested() {
        assert_eq!(kv("a=1,b=x"), json!({"a": "1", "b": "x"}));
        assert_eq!(
            kv("driver=qcow2,file.driver=file,file.filename=x"),
            json!({"driver": "qcow2", "file": {"driver": "file", "filename": "x"}})
        );
        assert_eq!(
            kv("a.b.c=1,a.b.d=2"),
            json!({"a": {"b": {"c": "1", "d": "2"}}})
        );
        assert_eq!(kv(""), json!({}));
        assert_eq!(kv("a=1,"), json!({"a": "1"}));
    }

    #[test]
    fn escapes_and_repeats() {
        assert_eq!(kv("a=x,,y,b=2"), json!({"a": "x,y", "b": "2"}));
        assert_eq!(kv("a=1,a=2"), json!({"a": "2"}));
    }

    #[test]
    fn implied() {
        let m = parse_keyval("memory-backend-ram,id=m,size=1G", Some("qom-type")).unwrap();
        assert_eq!(
            Value::Object(m),
            json!({"qom-type": "memory-backend-ram", "id": "m", "size": "1G"})
        );
        let m = parse_keyval("q35,accel=kvm", Some("type")).unwrap();
        assert_eq!(Value::Object(m), json!({"type": "q35", "accel": "kvm"}));
    }

    #[test]
    fn lists() {
        assert_eq!(kv("a.0=x,a.1=y"), json!({"a": ["x", "y"]}));
        assert_eq!(kv("a.1=y,a.0=x"), json!({"a": ["x", "y"]}));
        assert_eq!(
            kv("a.0.b=1,a.1.b=2"),
            json!({"a": [{"b": "1"}, {"b": "2"}]})
        );
        assert_eq!(
            parse_keyval("a.1=y", None).unwrap_err(),
            "Parameter 'a.0' missing"
        );
        assert_eq!(
            parse_keyval("a.0=x,a.b=y", None).unwrap_err(),
            "Parameters 'a.*' used inconsistently"
        );
    }

    #[test]
    fn errors() {
        assert_eq!(
            parse_keyval("a..b=1", None).unwrap_err(),
            "Invalid parameter 'a..b'"
        );
        assert_eq!(
            parse_keyval("0=1", None).unwrap_err(),
            "Invalid parameter '0'"
        );
        assert_eq!(
            parse_keyval("=1", None).unwrap_err(),
            "Invalid parameter ''"
        );
        assert_eq!(
            parse_keyval("a.1b=1", None).unwrap_err(),
            "Invalid parameter 'a.1b'"
        );
        assert_eq!(
            parse_keyval("driver=file,filename", None).unwrap_err(),
            "Expected '=' after parameter 'filename'"
        );
        assert_eq!(
            parse_keyval("file=1,file.x=2", None).unwrap_err(),
            "Parameters 'file.*' used inconsistently"
        );
        assert_eq!(
            parse_keyval("file.x=2,file=1", None).unwrap_err(),
            "Parameters 'file.*' used inconsistently"
        );
        let long = "a".repeat(128);
        assert_eq!(
            parse_keyval(&format!("{long}=1"), None).unwrap_err(),
            format!("Parameter '{long}' is too long")
        );
        assert!(parse_keyval(&format!("x.{long}=1"), None)
            .unwrap_err()
            .starts_with("Parameter fragment"));
        let deep = vec!["a"; 100].join(".");
        assert!(parse_keyval(&format!("{deep}=1"), None)
            .unwrap_err()
            .contains("nested too deeply"));
    }

    #[test]
    fn json() {
        assert!(is_json("{\"a\":1}"));
        assert!(!is_json("a=1"));
        assert_eq!(
            Value::Object(parse_json_object(r#"{"a":1,"b":{"c":true}}"#).unwrap()),
            json!({"a": 1, "b": {"c": true}})
        );
        assert!(parse_json_object("{\"driver\":")
            .unwrap_err()
            .starts_with("JSON parse error"));
        assert_eq!(
            parse_json_object("[1]").unwrap_err(),
            "JSON value is not an object"
        );
    }
}
