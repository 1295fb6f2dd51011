//! The QemuOpts lexer (QEMU `util/qemu-option.c`): `key=value,key=value`.
//!
//! * `,,` inside a value is a literal comma;
//! * with an implied first key, a first element without `=` is that key's
//!   value (`-m 256` is `size=256`, `-chardev socket,...` is `backend=socket`);
//! * any other element without `=` is a short-form flag: `key` means
//!   `key=on` and `nokey` means `key=off` (`server,nowait`).
//!
//! Lexing never fails; the [`crate::schema`] layer checks keys and values.

/// One `key=value` element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawOpt {
    pub key: String,
    pub value: String,
    /// Set when the element was a short-form flag: the flag as written.
    pub flag: Option<String>,
}

/// Read a value up to the next unescaped comma (`,,` is a literal comma, in
/// both of QEMU's grammars); returns (value, rest after the comma).
pub(crate) fn take_value(s: &str) -> (String, &str) {
    let mut out = String::new();
    let mut rest = s;
    loop {
        match rest.find(',') {
            None => {
                out.push_str(rest);
                return (out, "");
            }
            Some(i) => {
                out.push_str(&rest[..i]);
                let after = &rest[i + 1..];
                if let Some(more) = after.strip_prefix(',') {
                    out.push(',');
                    rest = more;
                } else {
                    return (out, after);
                }
            }
        }
    }
}

/// Split `params` into elements, desugaring the implied key and flags.
pub(crate) fn lex(params: &str, implied: Option<&str>) -> Vec<RawOpt> {
    let mut out = Vec::new();
    let mut p = params;
    let mut implied = implied;
    while !p.is_empty() {
        let len = p.find(['=', ',']).unwrap_or(p.len());
        if p.as_bytes().get(len) == Some(&b'=') {
            let key = p[..len].to_string();
            let (value, rest) = take_value(&p[len + 1..]);
            out.push(RawOpt {
                key,
                value,
                flag: None,
            });
            p = rest;
        } else if let Some(first) = implied {
            let (value, rest) = take_value(p);
            out.push(RawOpt {
                key: first.to_string(),
                value,
                flag: None,
            });
            p = rest;
        } else {
            let written = &p[..len];
            let (key, value) = match written.strip_prefix("no") {
                Some(k) => (k, "off"),
                None => (written, "on"),
            };
            out.push(RawOpt {
                key: key.to_string(),
                value: value.to_string(),
                flag: Some(written.to_string()),
            });
            p = p[len..].strip_prefix(',').unwrap_or("");
        }
        implied = None;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(params: &str, implied: Option<&str>) -> Vec<(String, String)> {
        lex(params, implied)
            .into_iter()
            .map(|o| (o.key, o.value))
            .collect()
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn key_values() {
        assert_eq!(kv("a=b,c=d", None), pairs(&[("a", "b"), ("c", "d")]));
        assert_eq!(kv("a=b,", None), pairs(&[("a", "b")]));
        assert_eq!(kv("", None), pairs(&[]));
        assert_eq!(kv("a=", None), pairs(&[("a", "")]));
        assert_eq!(kv("a=x=y", None), pairs(&[("a", "x=y")]));
    }

    #[test]
    fn comma_escape() {
        assert_eq!(kv("a=b,,c,d=e", None), pairs(&[("a", "b,c"), ("d", "e")]));
        assert_eq!(kv("a=,,,,", None), pairs(&[("a", ",,")]));
        assert_eq!(kv("a=x,,", None), pairs(&[("a", "x,")]));
    }

    #[test]
    fn implied_key() {
        assert_eq!(kv("256", Some("size")), pairs(&[("size", "256")]));
        assert_eq!(kv("size=1G", Some("size")), pairs(&[("size", "1G")]));
        assert_eq!(
            kv("socket,id=x", Some("backend")),
            pairs(&[("backend", "socket"), ("id", "x")])
        );
        assert_eq!(
            kv("foo,,bar", Some("driver")),
            pairs(&[("driver", "foo,bar")])
        );
        assert_eq!(
            kv(",id=x", Some("driver")),
            pairs(&[("driver", ""), ("id", "x")])
        );
        // Only the first element may omit its key.
        let v = lex("4,2", Some("cpus"));
        assert_eq!(v[1].key, "2");
        assert_eq!(v[1].flag.as_deref(), Some("2"));
    }

    #[test]
    fn flags() {
        let v = lex("server,nowait,nodelay", None);
        assert_eq!(v[0].key, "server");
        assert_eq!(v[0].value, "on");
        assert_eq!(v[0].flag.as_deref(), Some("server"));
        assert_eq!(v[1].key, "wait");
        assert_eq!(v[1].value, "off");
        assert_eq!(v[2].key, "delay");
        assert_eq!(v[2].value, "off");
    }
}
