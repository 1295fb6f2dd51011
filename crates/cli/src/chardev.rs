//! `-chardev backend,id=ID[,...]` and QEMU's compatibility syntax for
//! character devices (`stdio`, `file:PATH`, `unix:PATH,server=on`,
//! `tcp:HOST:PORT,...`, `mon:DEV`) used by `-serial`, `-qmp` and `-monitor`.

use crate::builder::{Builder, Inv};
use crate::config::{ChardevBackend, ChardevSpec, SocketAddress, SocketSpec};
use crate::error::CliError;
use crate::opts::{lex, RawOpt};
use crate::schema::{key, Kind, Opts, Schema};
use crate::table::Parsed;
use std::path::PathBuf;

const KEYS: &[crate::schema::Key] = &[
    key("backend", Kind::Str),
    key("id", Kind::Id),
    key("mux", Kind::Bool),
    key("signal", Kind::Bool),
    key("path", Kind::Str),
    key("append", Kind::Bool),
    key("host", Kind::Str),
    key("port", Kind::Str),
    key("fd", Kind::Str),
    key("server", Kind::Bool),
    key("wait", Kind::Bool),
    key("delay", Kind::Bool),
    key("nodelay", Kind::Bool),
    key("ipv4", Kind::Bool),
    key("ipv6", Kind::Bool),
    key("to", Kind::Number),
    key("telnet", Kind::Bool),
    key("tn3270", Kind::Bool),
    key("websocket", Kind::Bool),
    key("reconnect", Kind::Number),
    key("abstract", Kind::Bool),
    key("tight", Kind::Bool),
];

/// `-chardev` keys (QemuOpts, implied `backend`); which apply depends on the backend.
pub(crate) const CHARDEV_SCHEMA: Schema = Schema {
    implied: Some("backend"),
    keys: KEYS,
    warn_flags: true,
    open: false,
};

/// The same keys for the compatibility syntax, which QEMU parses without
/// short-form-flag warnings.
const COMPAT_SCHEMA: Schema = Schema {
    warn_flags: false,
    ..CHARDEV_SCHEMA
};

const COMMON: &[&str] = &["backend", "id", "mux"];
const STDIO: &[&str] = &["signal"];
const FILE: &[&str] = &["path", "append"];
const SOCKET: &[&str] = &[
    "path",
    "host",
    "port",
    "fd",
    "server",
    "wait",
    "delay",
    "nodelay",
    "ipv4",
    "ipv6",
    "to",
    "telnet",
    "tn3270",
    "websocket",
    "reconnect",
    "abstract",
    "tight",
];

/// Backends ferrovm provides, with their keys (for docs and checks).
pub(crate) const BACKENDS: &[(&str, &[&str])] = &[
    ("stdio", STDIO),
    ("null", &[]),
    ("file", FILE),
    ("socket", SOCKET),
    ("pty", &[]),
];

/// QEMU backends ferrovm does not provide.
const OTHER_BACKENDS: &[&str] = &[
    "vc",
    "pipe",
    "serial",
    "tty",
    "parallel",
    "parport",
    "udp",
    "msmouse",
    "wctablet",
    "braille",
    "testdev",
    "ringbuf",
    "memory",
    "spicevmc",
    "spiceport",
    "qemu-vdagent",
    "dbus",
    "console",
];

fn unsupported_backend(name: &str) -> String {
    format!("chardev backend '{name}' is not supported by ferrovm (supported: stdio, null, file, socket, pty)")
}

/// Build the backend from checked options.
pub(crate) fn backend_from_opts(o: &Opts) -> Result<ChardevBackend, String> {
    let name = o.str("backend").unwrap_or("");
    let Some((_, keys)) = BACKENDS.iter().find(|(n, _)| *n == name) else {
        return Err(if OTHER_BACKENDS.contains(&name) {
            unsupported_backend(name)
        } else {
            format!("'{name}' is not a valid char driver name")
        });
    };
    if let Some(k) = o
        .keys()
        .into_iter()
        .find(|k| !COMMON.contains(k) && !keys.contains(k))
    {
        return Err(format!(
            "Parameter '{k}' is not valid for chardev backend '{name}'"
        ));
    }
    Ok(match name {
        "stdio" => ChardevBackend::Stdio {
            signal: o.bool("signal").unwrap_or(true),
        },
        "null" => ChardevBackend::Null,
        "pty" => ChardevBackend::Pty,
        "file" => ChardevBackend::File {
            path: PathBuf::from(
                o.str("path")
                    .ok_or_else(|| "chardev: file: no filename given".to_string())?,
            ),
            append: o.bool("append").unwrap_or(false),
        },
        _ => ChardevBackend::Socket(socket_from_opts(o)?),
    })
}

fn socket_from_opts(o: &Opts) -> Result<SocketSpec, String> {
    for flag in ["telnet", "tn3270", "websocket", "abstract"] {
        if o.bool(flag) == Some(true) {
            return Err(format!("'{flag}=on' is not supported by ferrovm"));
        }
    }
    if o.num("reconnect").is_some_and(|r| r > 0) {
        return Err("'reconnect' is not supported by ferrovm".to_string());
    }
    let given: Vec<&str> = ["path", "host", "fd"]
        .into_iter()
        .filter(|k| o.has(k))
        .collect();
    let addr = match given.as_slice() {
        ["path"] => SocketAddress::Unix(PathBuf::from(o.str("path").unwrap_or_default())),
        ["host"] => {
            let port = o
                .str("port")
                .ok_or_else(|| "chardev: socket: no port given".to_string())?;
            let port = port
                .parse::<u16>()
                .map_err(|_| format!("Parameter 'port' expects a port number, not '{port}'"))?;
            SocketAddress::Tcp {
                host: o.str("host").unwrap_or_default().to_string(),
                port,
            }
        }
        ["fd"] => {
            let fd = o.str("fd").unwrap_or_default();
            SocketAddress::Fd(
                fd.parse::<i32>()
                    .ok()
                    .filter(|n| *n >= 0)
                    .ok_or_else(|| format!("Unable to parse FD number {fd}"))?,
            )
        }
        [] => return Err("chardev: socket: one of 'path', 'host' or 'fd' is required".into()),
        _ => return Err("chardev: socket: only one of 'path', 'host' or 'fd' may be given".into()),
    };
    if o.has("port") && !matches!(addr, SocketAddress::Tcp { .. }) {
        return Err("Parameter 'port' is only valid with 'host'".into());
    }
    let server = o.bool("server").unwrap_or(false);
    if !server && o.has("wait") {
        return Err("'wait' option is incompatible with socket in client connect mode".into());
    }
    Ok(SocketSpec {
        addr,
        server,
        wait: server && o.bool("wait").unwrap_or(true),
        nodelay: o.bool("delay") == Some(false) || o.bool("nodelay") == Some(true),
    })
}

pub(crate) fn handle_chardev(b: &mut Builder, inv: &Inv, p: Parsed) -> Result<(), CliError> {
    let o = p.opts();
    let id = o
        .str("id")
        .ok_or_else(|| inv.err("chardev: no id specified"))?
        .to_string();
    if !o.has("backend") {
        return Err(inv.err(format!("chardev: \"{id}\" missing backend")));
    }
    let backend = backend_from_opts(&o).map_err(|e| inv.err(e))?;
    let mux = o.bool("mux").unwrap_or(false);
    b.add_chardev(inv, ChardevSpec { id, backend, mux })
}

/// What a compatibility-syntax device string names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Compat {
    /// `chardev:ID`: an existing `-chardev`.
    Existing(String),
    /// A new chardev to create under the caller's label; `monitor` is set
    /// for `mon:` (a readline monitor muxed onto it).
    New {
        backend: ChardevBackend,
        mux: bool,
        monitor: bool,
    },
}

/// Parse the compatibility syntax (`qemu_chr_parse_compat`).
pub(crate) fn parse_compat(spec: &str, permit_mux_mon: bool) -> Result<Compat, String> {
    if let Some(id) = spec.strip_prefix("chardev:") {
        return Ok(Compat::Existing(id.to_string()));
    }
    let (rest, mon) = match spec.strip_prefix("mon:") {
        Some(r) if permit_mux_mon => (r, true),
        Some(_) => return Err("mon: isn't supported in this context".into()),
        None => (spec, false),
    };
    let mut raw: Vec<RawOpt> = Vec::new();
    let set = |k: &str, v: &str| RawOpt {
        key: k.to_string(),
        value: v.to_string(),
        flag: None,
    };
    if rest == "stdio" {
        raw.push(set("backend", "stdio"));
        if mon {
            // Monitor muxed on stdio: Ctrl-C goes to the guest.
            raw.push(set("signal", "off"));
        }
    } else if rest == "null" {
        raw.push(set("backend", "null"));
    } else if rest == "pty" {
        raw.push(set("backend", "pty"));
    } else if let Some(path) = rest.strip_prefix("file:") {
        raw.push(set("backend", "file"));
        raw.push(set("path", path));
    } else if let Some(p) = rest.strip_prefix("unix:") {
        raw.push(set("backend", "socket"));
        raw.extend(lex(p, Some("path")));
    } else if let Some(p) = rest.strip_prefix("tcp:") {
        let (addr, opts) = p.split_once(',').unwrap_or((p, ""));
        let (host, port) = match addr.split_once(':') {
            Some((h, port)) if !port.is_empty() => (h, port),
            _ => return Err(format!("parse error: {spec}")),
        };
        raw.push(set("backend", "socket"));
        raw.push(set("host", host));
        raw.push(set("port", port));
        raw.extend(lex(opts, None));
    } else {
        let driver = rest.split([':', ',']).next().unwrap_or(rest);
        let known = [
            "vc",
            "con",
            "pipe",
            "udp",
            "telnet",
            "tn3270",
            "websocket",
            "msmouse",
        ]
        .contains(&driver)
            || ["wctablet", "braille", "testdev", "COM"].contains(&driver)
            || rest.starts_with("/dev/");
        return Err(if known {
            format!("char device '{rest}' is not supported by ferrovm (supported: stdio, null, pty, file:, unix:, tcp:, chardev:)")
        } else {
            format!("'{rest}' is not a valid char driver")
        });
    }
    let o = COMPAT_SCHEMA.check_all(raw)?;
    if o.has("id") {
        return Err("Invalid parameter 'id'".into());
    }
    Ok(Compat::New {
        backend: backend_from_opts(&o)?,
        mux: mon || o.bool("mux").unwrap_or(false),
        monitor: mon,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chardev(s: &str) -> Result<ChardevSpec, String> {
        let o = CHARDEV_SCHEMA.parse(s)?;
        let mut b = Builder::new();
        let inv = Inv::new("-chardev", Some(s));
        handle_chardev(&mut b, &inv, Parsed::Opts(o)).map_err(|e| e.message().to_string())?;
        Ok(b.cfg.chardevs.remove(0))
    }

    fn sock(addr: SocketAddress, server: bool, wait: bool) -> ChardevBackend {
        ChardevBackend::Socket(SocketSpec {
            addr,
            server,
            wait,
            nodelay: false,
        })
    }

    #[test]
    fn backends() {
        assert_eq!(
            chardev("stdio,id=s").unwrap().backend,
            ChardevBackend::Stdio { signal: true }
        );
        assert_eq!(
            chardev("stdio,id=s,signal=off").unwrap().backend,
            ChardevBackend::Stdio { signal: false }
        );
        assert_eq!(chardev("null,id=n").unwrap().backend, ChardevBackend::Null);
        assert_eq!(
            chardev("file,id=f,path=/tmp/a,,b,append=on")
                .unwrap()
                .backend,
            ChardevBackend::File {
                path: "/tmp/a,b".into(),
                append: true
            }
        );
        let c = chardev("stdio,id=s,mux=on").unwrap();
        assert!(c.mux);
        assert_eq!(c.id, "s");
    }

    #[test]
    fn sockets() {
        assert_eq!(
            chardev("socket,id=m,path=/tmp/q,server=on,wait=off")
                .unwrap()
                .backend,
            sock(SocketAddress::Unix("/tmp/q".into()), true, false)
        );
        assert_eq!(
            chardev("socket,id=m,path=/tmp/q,server,nowait")
                .unwrap()
                .backend,
            sock(SocketAddress::Unix("/tmp/q".into()), true, false)
        );
        assert_eq!(
            chardev("socket,id=m,path=/tmp/q,server=on")
                .unwrap()
                .backend,
            sock(SocketAddress::Unix("/tmp/q".into()), true, true)
        );
        assert_eq!(
            chardev("socket,id=m,path=/tmp/q").unwrap().backend,
            sock(SocketAddress::Unix("/tmp/q".into()), false, false)
        );
        assert_eq!(
            chardev("socket,id=m,host=127.0.0.1,port=4444,server=on,wait=off")
                .unwrap()
                .backend,
            sock(
                SocketAddress::Tcp {
                    host: "127.0.0.1".into(),
                    port: 4444
                },
                true,
                false
            )
        );
        assert_eq!(
            chardev("socket,id=charmonitor,fd=31,server=on,wait=off")
                .unwrap()
                .backend,
            sock(SocketAddress::Fd(31), true, false)
        );
        let ChardevBackend::Socket(s) = chardev("socket,id=m,host=h,port=1,nodelay")
            .unwrap()
            .backend
        else {
            panic!()
        };
        assert!(s.nodelay);
    }

    #[test]
    fn errors() {
        let e = |s: &str| chardev(s).unwrap_err();
        assert_eq!(e("socket,path=/tmp/x"), "chardev: no id specified");
        assert_eq!(e("id=x"), "chardev: \"x\" missing backend");
        assert!(e("vc,id=x").contains("'vc' is not supported"));
        assert_eq!(e("bogus,id=x"), "'bogus' is not a valid char driver name");
        assert_eq!(e("file,id=x"), "chardev: file: no filename given");
        assert_eq!(
            e("socket,id=x,host=localhost"),
            "chardev: socket: no port given"
        );
        assert!(e("socket,id=x").contains("one of 'path', 'host' or 'fd' is required"));
        assert!(e("socket,id=x,port=4").contains("one of 'path', 'host' or 'fd' is required"));
        assert!(e("socket,id=x,path=/a,fd=3").contains("only one of"));
        assert_eq!(e("socket,id=x,fd=foo"), "Unable to parse FD number foo");
        assert_eq!(
            e("socket,id=c,path=/tmp/zz,wait=off"),
            "'wait' option is incompatible with socket in client connect mode"
        );
        assert_eq!(
            e("socket,id=x,path=/x,server=maybe"),
            "Parameter 'server' expects 'on' or 'off'"
        );
        assert_eq!(
            e("socket,id=x,path=/x,bogus=1"),
            "Invalid parameter 'bogus'"
        );
        assert_eq!(
            e("stdio,id=x,path=/x"),
            "Parameter 'path' is not valid for chardev backend 'stdio'"
        );
        assert!(e("socket,id=x,path=/x,telnet=on").contains("not supported"));
        assert!(e("socket,id=x,host=h,port=http").contains("port number"));
        assert!(e("null,id=1x").contains("expects an identifier"));
    }

    #[test]
    fn compat() {
        let new = |b, mux, monitor| Compat::New {
            backend: b,
            mux,
            monitor,
        };
        assert_eq!(
            parse_compat("stdio", true),
            Ok(new(ChardevBackend::Stdio { signal: true }, false, false))
        );
        assert_eq!(
            parse_compat("mon:stdio", true),
            Ok(new(ChardevBackend::Stdio { signal: false }, true, true))
        );
        assert_eq!(
            parse_compat("null", true),
            Ok(new(ChardevBackend::Null, false, false))
        );
        assert_eq!(
            parse_compat("file:/tmp/log", true),
            Ok(new(
                ChardevBackend::File {
                    path: "/tmp/log".into(),
                    append: false
                },
                false,
                false
            ))
        );
        assert_eq!(
            parse_compat("chardev:c0", true),
            Ok(Compat::Existing("c0".into()))
        );
        assert_eq!(
            parse_compat("unix:/tmp/q,server=on,wait=off", false),
            Ok(new(
                sock(SocketAddress::Unix("/tmp/q".into()), true, false),
                false,
                false
            ))
        );
        assert_eq!(
            parse_compat("unix:/tmp/q,server,nowait", false),
            Ok(new(
                sock(SocketAddress::Unix("/tmp/q".into()), true, false),
                false,
                false
            ))
        );
        assert_eq!(
            parse_compat("tcp:localhost:4444,server=on,wait=off", false),
            Ok(new(
                sock(
                    SocketAddress::Tcp {
                        host: "localhost".into(),
                        port: 4444
                    },
                    true,
                    false
                ),
                false,
                false
            ))
        );
        assert_eq!(
            parse_compat("tcp::4444,server=on", false),
            Ok(new(
                sock(
                    SocketAddress::Tcp {
                        host: String::new(),
                        port: 4444
                    },
                    true,
                    true
                ),
                false,
                false
            ))
        );
    }

    #[test]
    fn compat_errors() {
        assert_eq!(
            parse_compat("foo", true).unwrap_err(),
            "'foo' is not a valid char driver"
        );
        assert!(parse_compat("pipe:/tmp/x", true)
            .unwrap_err()
            .contains("not supported"));
        assert!(parse_compat("vc:80Cx24C", true)
            .unwrap_err()
            .contains("not supported"));
        assert_eq!(
            parse_compat("tcp:localhost", false).unwrap_err(),
            "parse error: tcp:localhost"
        );
        assert_eq!(
            parse_compat("mon:stdio", false).unwrap_err(),
            "mon: isn't supported in this context"
        );
        assert!(parse_compat("unix:", false)
            .unwrap_err()
            .contains("required"));
        assert_eq!(
            parse_compat("unix:/x,bogus=1", false).unwrap_err(),
            "Invalid parameter 'bogus'"
        );
    }
}
