//! The server's listening sockets, from QMP's SocketAddressLegacy, with
//! QEMU 7.2's errors (util/qemu-sockets.c `unix_listen_saddr`,
//! `vsock_listen_saddr`; TCP in `listen_inet`).

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use serde_json::Value;

use crate::error::BlockError;

/// `SocketAddress` (flattened from the legacy form).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    Unix {
        path: String,
        abstract_: bool,
        tight: bool,
    },
    Inet {
        host: String,
        port: String,
        numeric: bool,
        to: Option<u16>,
        ipv4: Option<bool>,
        ipv6: Option<bool>,
    },
    Vsock {
        cid: String,
        port: String,
    },
    Fd(String),
}

impl ListenAddr {
    /// `socket_address_flatten`: `{"type": T, "data": {...}}` as the schema
    /// has checked it.
    pub fn from_legacy(v: &Value) -> ListenAddr {
        let d = &v["data"];
        let s = |k: &str| d[k].as_str().unwrap_or_default().to_string();
        let b = |k: &str| d[k].as_bool();
        match v["type"].as_str().unwrap_or_default() {
            "inet" => ListenAddr::Inet {
                host: s("host"),
                port: s("port"),
                numeric: b("numeric").unwrap_or(false),
                to: d["to"].as_u64().and_then(|t| u16::try_from(t).ok()),
                ipv4: b("ipv4"),
                ipv6: b("ipv6"),
            },
            "vsock" => ListenAddr::Vsock {
                cid: s("cid"),
                port: s("port"),
            },
            "fd" => ListenAddr::Fd(s("str")),
            _ => ListenAddr::Unix {
                path: s("path"),
                abstract_: b("abstract").unwrap_or(false),
                tight: b("tight").unwrap_or(true),
            },
        }
    }
}

/// Listening sockets, and the socket file to remove when they close
/// (`socket_listen_cleanup`).
pub struct Listening {
    pub fds: Vec<OwnedFd>,
    pub unix_path: Option<String>,
}

impl Drop for Listening {
    fn drop(&mut self) {
        if let Some(p) = &self.unix_path {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// QEMU's listen backlog for the NBD server (SOMAXCONN).
pub(super) const BACKLOG: i32 = libc::SOMAXCONN;

pub(super) fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

pub(super) fn sock(family: i32) -> Result<OwnedFd, i32> {
    // SAFETY: plain socket(2); the descriptor is owned at once.
    let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(errno());
    }
    // SAFETY: fd is a new descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub(super) fn bind(
    fd: &OwnedFd,
    addr: *const libc::sockaddr,
    len: libc::socklen_t,
) -> Result<(), i32> {
    // SAFETY: addr points to `len` valid bytes of a sockaddr.
    if unsafe { libc::bind(fd.as_raw_fd(), addr, len) } != 0 {
        return Err(errno());
    }
    Ok(())
}

fn listen_on(fd: &OwnedFd) -> Result<(), BlockError> {
    // SAFETY: listen(2) on our socket.
    if unsafe { libc::listen(fd.as_raw_fd(), BACKLOG) } != 0 {
        return Err(BlockError::errno("Failed to listen on socket", errno()));
    }
    Ok(())
}

/// `socket_listen` for the server.
pub fn listen(addr: &ListenAddr) -> Result<Listening, BlockError> {
    match addr {
        ListenAddr::Unix {
            path,
            abstract_,
            tight,
        } => unix(path, *abstract_, *tight),
        ListenAddr::Inet {
            host,
            port,
            numeric,
            to,
            ipv4,
            ipv6,
        } => super::listen_inet::inet(host, port, *numeric, *to, *ipv4, *ipv6),
        ListenAddr::Vsock { cid, port } => vsock(cid, port),
        // No descriptor was passed with getfd (ferrovm has no getfd).
        ListenAddr::Fd(name) => Err(BlockError::new(format!(
            "File descriptor named '{name}' has not been found"
        ))),
    }
}

/// `unix_listen_saddr`.
fn unix(path: &str, abstract_: bool, tight: bool) -> Result<Listening, BlockError> {
    let fd =
        sock(libc::AF_UNIX).map_err(|e| BlockError::errno("Failed to create Unix socket", e))?;
    let mut path = path.to_string();
    let generated = path.is_empty() && !abstract_;
    if generated {
        let dir = std::env::var("TMPDIR").unwrap_or_else(|_| "/tmp".into());
        path = format!("{dir}/qemu-socket-XXXXXX");
    }
    // SAFETY: a zeroed sockaddr_un is valid.
    let mut un: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    let max = un.sun_path.len() - usize::from(abstract_);
    if path.len() > max {
        return Err(
            BlockError::new(format!("UNIX socket path '{path}' is too long"))
                .with_hint(format!("Path must be less than {max} bytes\n")),
        );
    }
    if generated {
        let c = CString::new(path.clone()).map_err(|_| BlockError::new("invalid path"))?;
        let mut raw = c.into_bytes_with_nul();
        // SAFETY: raw is a NUL-terminated template mkstemp rewrites in place.
        let tmp = unsafe { libc::mkstemp(raw.as_mut_ptr().cast()) };
        if tmp < 0 {
            return Err(BlockError::errno(
                format!("Failed to make a temporary socket {path}"),
                errno(),
            ));
        }
        // SAFETY: tmp is the descriptor mkstemp just opened.
        unsafe { libc::close(tmp) };
        raw.pop();
        path = String::from_utf8_lossy(&raw).into_owned();
    }
    if !abstract_ {
        if let Err(e) = std::fs::remove_file(&path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                return Err(BlockError::errno(
                    format!("Failed to unlink socket {path}"),
                    crate::error::errno_of(&e),
                ));
            }
        }
    }
    un.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let skip = usize::from(abstract_);
    for (i, b) in path.bytes().enumerate() {
        un.sun_path[i + skip] = b as libc::c_char;
    }
    let mut len = std::mem::size_of::<libc::sockaddr_un>();
    if abstract_ && tight {
        len = std::mem::size_of::<libc::sa_family_t>() + 1 + path.len();
    }
    bind(
        &fd,
        (&un as *const libc::sockaddr_un).cast(),
        len as libc::socklen_t,
    )
    .map_err(|e| BlockError::errno(format!("Failed to bind socket to {path}"), e))?;
    let unix_path = (!abstract_).then_some(path);
    let l = Listening {
        fds: vec![fd],
        unix_path,
    };
    listen_on(&l.fds[0])?;
    Ok(l)
}

/// `parse_uint_full`: a decimal number, nothing after it.
fn parse_uint(s: &str) -> Option<u64> {
    let t = s.trim_start_matches(|c: char| c.is_ascii_whitespace());
    let t = t.strip_prefix('+').unwrap_or(t);
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    t.parse().ok()
}

/// `vsock_listen_saddr`.
fn vsock(cid: &str, port: &str) -> Result<Listening, BlockError> {
    let parse = |s: &str| parse_uint(s).and_then(|v| u32::try_from(v).ok());
    let cid_v =
        parse(cid).ok_or_else(|| BlockError::new(format!("Failed to parse cid '{cid}'")))?;
    let port_v =
        parse(port).ok_or_else(|| BlockError::new(format!("Failed to parse port '{port}'")))?;
    let fd = sock(libc::AF_VSOCK).map_err(|e| BlockError::errno("Failed to create socket", e))?;
    // SAFETY: a zeroed sockaddr_vm is valid.
    let mut svm: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    svm.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    svm.svm_cid = cid_v;
    svm.svm_port = port_v;
    bind(
        &fd,
        (&svm as *const libc::sockaddr_vm).cast(),
        std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t,
    )
    .map_err(|e| BlockError::errno("Failed to bind socket", e))?;
    listen_on(&fd)?;
    Ok(Listening {
        fds: vec![fd],
        unix_path: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn legacy_addresses_flatten() {
        let a = ListenAddr::from_legacy(&json!({"type": "unix", "data": {"path": "/x"}}));
        assert_eq!(
            a,
            ListenAddr::Unix {
                path: "/x".into(),
                abstract_: false,
                tight: true
            }
        );
        let a = ListenAddr::from_legacy(
            &json!({"type": "inet", "data": {"host": "h", "port": "1", "to": 5}}),
        );
        assert!(matches!(a, ListenAddr::Inet { to: Some(5), .. }));
    }

    /// QEMU 7.2's answers for the same addresses.
    #[test]
    fn errors_are_qemus() {
        let e = |a: ListenAddr| listen(&a).err().map(|e| e.msg).unwrap_or_default();
        assert_eq!(
            e(ListenAddr::Unix {
                path: "/nonexist/x.sock".into(),
                abstract_: false,
                tight: true
            }),
            "Failed to bind socket to /nonexist/x.sock: No such file or directory"
        );
        let long = format!("/tmp/{}", "x".repeat(120));
        assert_eq!(
            e(ListenAddr::Unix {
                path: long.clone(),
                abstract_: false,
                tight: true
            }),
            format!("UNIX socket path '{long}' is too long")
        );
        assert_eq!(
            e(ListenAddr::Vsock {
                cid: "x".into(),
                port: "1".into()
            }),
            "Failed to parse cid 'x'"
        );
        assert_eq!(
            e(ListenAddr::Fd("3".into())),
            "File descriptor named '3' has not been found"
        );
        assert_eq!(
            e(ListenAddr::Inet {
                host: "127.0.0.1".into(),
                port: "abc".into(),
                numeric: false,
                to: None,
                ipv4: None,
                ipv6: None
            }),
            "address resolution failed for 127.0.0.1:abc: Servname not supported for ai_socktype"
        );
        assert_eq!(
            e(ListenAddr::Inet {
                host: "127.0.0.1".into(),
                port: "0".into(),
                numeric: false,
                to: None,
                ipv4: Some(false),
                ipv6: Some(false)
            }),
            "Cannot disable IPv4 and IPv6 at same time"
        );
    }

    #[test]
    fn the_socket_file_goes_with_the_listener() {
        let p = std::env::temp_dir().join(format!("nbd-l-{}.sock", std::process::id()));
        // A stale file is replaced, as QEMU unlinks before binding.
        std::fs::write(&p, b"").unwrap();
        let l = listen(&ListenAddr::Unix {
            path: p.to_string_lossy().into(),
            abstract_: false,
            tight: true,
        })
        .unwrap();
        assert!(p.exists());
        drop(l);
        assert!(!p.exists());
    }
}
