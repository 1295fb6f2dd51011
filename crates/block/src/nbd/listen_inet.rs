//! TCP listening sockets as QEMU 7.2 opens them: io/dns-resolver.c
//! resolves the host, io/net-listener.c `qio_net_listener_open_sync`
//! listens on every address it gives and fails only if none works, and
//! util/qemu-sockets.c `inet_listen_saddr` tries each port up to `to`.

use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, OwnedFd};

use super::listen::{bind, errno, sock, Listening, BACKLOG};
use crate::error::{strerror, BlockError};

/// `inet_ai_family_from_address`.
fn family(ipv4: Option<bool>, ipv6: Option<bool>, host: &str) -> Result<i32, BlockError> {
    if ipv4 == Some(false) && ipv6 == Some(false) {
        return Err(BlockError::new("Cannot disable IPv4 and IPv6 at same time"));
    }
    Ok(match (ipv4, ipv6) {
        (Some(true), Some(true)) if host.is_empty() => libc::AF_INET6,
        (Some(true), Some(true)) => libc::AF_UNSPEC,
        (_, Some(true)) | (Some(false), _) => libc::AF_INET6,
        (Some(true), _) | (_, Some(false)) => libc::AF_INET,
        _ => libc::AF_UNSPEC,
    })
}

/// getaddrinfo's answers, freed when dropped.
struct AddrInfo(*mut libc::addrinfo);

impl Drop for AddrInfo {
    fn drop(&mut self) {
        // SAFETY: the list getaddrinfo returned, freed once.
        unsafe { libc::freeaddrinfo(self.0) };
    }
}

/// The resolver (io/dns-resolver.c), then `inet_listen_saddr` on every
/// address, each over its port range (`to`).
pub(super) fn inet(
    host: &str,
    port: &str,
    numeric: bool,
    to: Option<u16>,
    ipv4: Option<bool>,
    ipv6: Option<bool>,
) -> Result<Listening, BlockError> {
    let fam = family(ipv4, ipv6, host)?;
    // SAFETY: a zeroed addrinfo is a valid hints structure.
    let mut hints: libc::addrinfo = unsafe { std::mem::zeroed() };
    hints.ai_flags = libc::AI_PASSIVE;
    if numeric {
        hints.ai_flags |= libc::AI_NUMERICHOST | libc::AI_NUMERICSERV;
    }
    hints.ai_family = fam;
    hints.ai_socktype = libc::SOCK_STREAM;
    let bad = || BlockError::new(format!("address resolution failed for {host}:{port}"));
    let ch = CString::new(host).map_err(|_| bad())?;
    let cp = CString::new(port).map_err(|_| bad())?;
    let mut res: *mut libc::addrinfo = std::ptr::null_mut();
    // SAFETY: the strings are NUL-terminated, hints valid, res written.
    let rc = unsafe {
        libc::getaddrinfo(
            if host.is_empty() {
                std::ptr::null()
            } else {
                ch.as_ptr()
            },
            if port.is_empty() {
                std::ptr::null()
            } else {
                cp.as_ptr()
            },
            &hints,
            &mut res,
        )
    };
    if rc != 0 {
        // SAFETY: gai_strerror returns a static string.
        let why = unsafe { CStr::from_ptr(libc::gai_strerror(rc)) }.to_string_lossy();
        return Err(BlockError::new(format!(
            "address resolution failed for {host}:{port}: {why}"
        )));
    }
    let list = AddrInfo(res);
    // try_bind: IPV6_V6ONLY unless both families or neither were asked for.
    let v6only =
        !((ipv4.is_none() && ipv6.is_none()) || (ipv4 == Some(true) && ipv6 == Some(true)));
    let mut fds = Vec::new();
    let mut first_err = None;
    let mut e = list.0;
    while !e.is_null() {
        // SAFETY: e walks the list getaddrinfo returned.
        let ai = unsafe { &*e };
        e = ai.ai_next;
        match listen_one(ai, to, v6only) {
            Ok(fd) => fds.push(fd),
            Err(err) => {
                first_err.get_or_insert(err);
            }
        }
    }
    if fds.is_empty() {
        return Err(first_err.unwrap_or_else(|| BlockError::new("Failed to create a socket")));
    }
    Ok(Listening {
        fds,
        unix_path: None,
    })
}

/// The port of a resolved address, and a copy of it with another port.
fn with_port(ai: &libc::addrinfo, port: Option<u16>) -> (Vec<u8>, u16) {
    let len = ai.ai_addrlen as usize;
    // SAFETY: ai_addr points to ai_addrlen bytes.
    let mut raw = unsafe { std::slice::from_raw_parts(ai.ai_addr.cast::<u8>(), len) }.to_vec();
    // sin_port and sin6_port both sit right after the family, big-endian.
    let cur = match raw.get(2..4) {
        Some(p) => u16::from_be_bytes([p[0], p[1]]),
        None => 0,
    };
    if let (Some(p), Some(slot)) = (port, raw.get_mut(2..4)) {
        slot.copy_from_slice(&p.to_be_bytes());
    }
    (raw, cur)
}

/// `inet_listen_saddr` for one address: the first free port from its own
/// up to `to`.
fn listen_one(ai: &libc::addrinfo, to: Option<u16>, v6only: bool) -> Result<OwnedFd, BlockError> {
    let (_, port_min) = with_port(ai, None);
    let port_max = to.unwrap_or(port_min).max(port_min);
    let mut created = false;
    let mut last = libc::EADDRINUSE;
    for p in port_min..=port_max {
        let (raw, _) = with_port(ai, Some(p));
        let fd = match sock(ai.ai_family) {
            Ok(fd) => fd,
            Err(e) if p == port_min => {
                last = e;
                continue;
            }
            Err(e) => {
                return Err(BlockError::errno(
                    "Failed to recreate failed listening socket",
                    e,
                ))
            }
        };
        created = true;
        let one: libc::c_int = 1;
        let sz = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: setsockopt with a c_int value on our socket.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_REUSEADDR,
                (&one as *const libc::c_int).cast(),
                sz,
            )
        };
        let mut try_v6only = v6only;
        let bound = loop {
            if ai.ai_family == libc::AF_INET6 {
                let v: libc::c_int = try_v6only.into();
                // SAFETY: as above.
                unsafe {
                    libc::setsockopt(
                        fd.as_raw_fd(),
                        libc::IPPROTO_IPV6,
                        libc::IPV6_V6ONLY,
                        (&v as *const libc::c_int).cast(),
                        sz,
                    )
                };
            }
            match bind(&fd, raw.as_ptr().cast(), raw.len() as libc::socklen_t) {
                Ok(()) => break Ok(()),
                // The IPv4 port may be taken: retry IPv6 alone.
                Err(libc::EADDRINUSE) if ai.ai_family == libc::AF_INET6 && !try_v6only => {
                    try_v6only = true;
                }
                Err(e) => break Err(e),
            }
        };
        match bound {
            Ok(()) => {
                // SAFETY: listen(2) on our socket.
                if unsafe { libc::listen(fd.as_raw_fd(), BACKLOG) } == 0 {
                    return Ok(fd);
                }
                let e = errno();
                if e != libc::EADDRINUSE {
                    return Err(BlockError::errno("Failed to listen on socket", e));
                }
                last = e;
            }
            Err(libc::EADDRINUSE) => last = libc::EADDRINUSE,
            Err(e) => return Err(BlockError::errno("Failed to bind socket", e)),
        }
    }
    let what = if created {
        "Failed to find an available port"
    } else {
        "Failed to create a socket"
    };
    Err(BlockError::new(format!("{what}: {}", strerror(last))))
}

#[cfg(test)]
mod tests {
    use super::super::listen::{listen, ListenAddr};
    use std::os::fd::AsRawFd;

    #[test]
    fn a_taken_port_is_reported_and_to_finds_the_next() {
        let l = listen(&ListenAddr::Inet {
            host: "127.0.0.1".into(),
            port: "0".into(),
            numeric: true,
            to: None,
            ipv4: None,
            ipv6: None,
        })
        .unwrap();
        // SAFETY: getsockname into a sockaddr_in-sized buffer.
        let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        unsafe {
            libc::getsockname(
                l.fds[0].as_raw_fd(),
                (&mut sa as *mut libc::sockaddr_in).cast(),
                &mut len,
            )
        };
        let port = u16::from_be(sa.sin_port);
        let at = |to| ListenAddr::Inet {
            host: "127.0.0.1".into(),
            port: port.to_string(),
            numeric: false,
            to,
            ipv4: None,
            ipv6: None,
        };
        assert_eq!(
            listen(&at(None)).err().unwrap().msg,
            "Failed to find an available port: Address already in use"
        );
        if port < u16::MAX {
            assert!(listen(&at(Some(port + 1))).is_ok());
        }
    }
}
