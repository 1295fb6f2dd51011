//! QMP sockets, driven by the VMM's mio event loop.
//!
//! A [`MonitorSet`] owns every monitor.  Each monitor is a listening socket
//! (unix path, TCP address, or an inherited listening fd as libvirt passes)
//! or a single connection (an inherited connected fd as QEMU's Python
//! `QEMUMachine` passes, or a connection ferrovm makes itself in client
//! mode, `server=off`).
//!
//! As QEMU: one client per monitor at a time — while a client is connected,
//! further connections wait in the listen backlog and are accepted when it
//! leaves; events reach every monitor whose client has negotiated; a
//! client's replies and events are written in order, each line ending in
//! CRLF.
//!
//! Bounded memory per client: requests are only read while less than
//! [`READ_PAUSE_BYTES`] of output is waiting for the client, so a client
//! that sends but never reads stalls itself; events still queue, and a
//! client with more than [`MAX_OUTPUT_BYTES`] unread is disconnected.
//!
//! Driving it from the VMM:
//! ```ignore
//! let mut mons = MonitorSet::new(specs)?;
//! mons.wait_for_clients()?;                  // wait=on monitors, before vCPUs start
//! mons.register(poll.registry(), FIRST_QMP_TOKEN)?;
//! loop {
//!     poll.poll(&mut events, mons.poll_timeout())?;
//!     mons.run_timers();
//!     for ev in events.iter() {
//!         if mons.handles(ev.token()) {
//!             mons.on_event(ev, &mut handler);
//!         }
//!     }
//!     for e in vcpu_events.try_iter() { mons.broadcast(&e); } // e.g. guest RESET
//!     if handler.exit_requested() { mons.flush(Duration::from_secs(1)); break; }
//! }
//! ```

use std::collections::VecDeque;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use mio::{Interest, Registry, Token};

use crate::dispatch::{Event, Handler};
use crate::readline::{banner, Readline};
use crate::session::{greeting, Session};
use crate::throttle::Throttle;

/// Output waiting for a client above which its requests are not read.
pub const READ_PAUSE_BYTES: usize = 1 << 20;
/// Output waiting for a client above which it is disconnected.
pub const MAX_OUTPUT_BYTES: usize = 16 << 20;
/// Input read per `on_event` call before yielding to other sources.
const READ_BUDGET: usize = 1 << 20;

/// Where a monitor's socket is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MonitorAddr {
    /// `unix:PATH` / `-chardev socket,path=PATH`.
    Unix(PathBuf),
    /// `tcp:HOST:PORT` / `-chardev socket,host=HOST,port=PORT`.  An empty
    /// host listens on every IPv4 address, as QEMU.
    Tcp { host: String, port: String },
    /// `-chardev socket,fd=N`: an inherited socket, listening or connected
    /// (told apart with SO_ACCEPTCONN).  The set takes ownership of the fd.
    Fd(RawFd),
}

/// `-mon mode=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum MonitorMode {
    #[default]
    Control,
    /// The human monitor (HMP subset) with QEMU's line editor.
    Readline,
}

/// One `-qmp` / `-mon` monitor, as the VMM maps it from the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MonitorSpec {
    /// The chardev id (`-qmp` monitors are `compat_monitor0`, `1`, ...).
    pub label: String,
    pub addr: MonitorAddr,
    /// Listen (`server=on`) or connect out (`server=off`).  Ignored for fds.
    pub server: bool,
    /// `wait=on`: [`MonitorSet::wait_for_clients`] blocks until a client
    /// connects.  Only for listening monitors.
    pub wait: bool,
    pub mode: MonitorMode,
}

impl MonitorSpec {
    /// The label QEMU gives the n-th `-qmp` monitor.
    pub fn compat_label(n: usize) -> String {
        format!("compat_monitor{n}")
    }
}

enum Listener {
    Unix(UnixListener, Option<PathBuf>),
    Tcp(TcpListener),
}

enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Stream {
    fn fd(&self) -> RawFd {
        match self {
            Stream::Unix(s) => s.as_raw_fd(),
            Stream::Tcp(s) => s.as_raw_fd(),
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Tcp(s) => s.write(buf),
        }
    }

    fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Stream::Unix(s) => s,
            Stream::Tcp(s) => s,
        }
    }
}

enum Proto {
    Qmp(Session),
    Hmp(Readline),
}

struct Conn {
    stream: Stream,
    proto: Proto,
    out: VecDeque<u8>,
    /// Reading stopped with input possibly left in the socket.
    read_paused: bool,
    registered: bool,
    /// WRITABLE is in the registration: only while output is queued, since a
    /// standing WRITABLE interest wakes the loop each time the client reads
    /// (an IPI per round trip, expensive under nested KVM).
    want_write: bool,
    filename: String,
}

struct Monitor {
    label: String,
    listener: Option<Listener>,
    conn: Option<Conn>,
    /// Filename shown while no client is connected.
    disconnected_name: String,
    wait: bool,
    mode: MonitorMode,
}

/// Every monitor of the VM.
pub struct MonitorSet {
    monitors: Vec<Monitor>,
    first_token: Option<usize>,
    registry: Option<Registry>,
    throttle: Throttle,
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(ErrorKind::InvalidInput, msg.into())
}

fn sockopt_int(fd: RawFd, level: libc::c_int, name: libc::c_int) -> io::Result<libc::c_int> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: v and len are valid for the duration of the call.
    let r = unsafe {
        libc::getsockopt(
            fd,
            level,
            name,
            &mut v as *mut _ as *mut libc::c_void,
            &mut len,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(v)
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: plain fcntl calls on an fd we own.
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        if fl < 0 || libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Formats a socket address as QEMU's `getnameinfo(NI_NUMERICHOST)` does.
fn sockaddr_text(fd: RawFd, peer: bool) -> Option<(String, String)> {
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: ss/len describe a buffer large enough for any address.
    let r = unsafe {
        let p = &mut ss as *mut _ as *mut libc::sockaddr;
        if peer {
            libc::getpeername(fd, p, &mut len)
        } else {
            libc::getsockname(fd, p, &mut len)
        }
    };
    if r < 0 {
        return None;
    }
    match ss.ss_family as libc::c_int {
        libc::AF_UNIX => {
            // SAFETY: the family says this is a sockaddr_un.
            let un = unsafe { &*(&ss as *const _ as *const libc::sockaddr_un) };
            let path: Vec<u8> = un
                .sun_path
                .iter()
                .take_while(|&&c| c != 0)
                .map(|&c| c as u8)
                .collect();
            Some(("unix".into(), String::from_utf8_lossy(&path).into_owned()))
        }
        libc::AF_INET => {
            // SAFETY: the family says this is a sockaddr_in.
            let sin = unsafe { &*(&ss as *const _ as *const libc::sockaddr_in) };
            let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(("tcp".into(), format!("{ip}:{}", u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this is a sockaddr_in6.
            let sin6 = unsafe { &*(&ss as *const _ as *const libc::sockaddr_in6) };
            let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some((
                "tcp".into(),
                format!("[{ip}]:{}", u16::from_be(sin6.sin6_port)),
            ))
        }
        _ => None,
    }
}

/// `qemu_chr_compute_filename()` for a connected socket.
fn connected_name(fd: RawFd, is_listen: bool) -> String {
    let server = if is_listen { ",server=on" } else { "" };
    match sockaddr_text(fd, false) {
        Some((proto, local)) if proto == "unix" => format!("unix:{local}{server}"),
        Some((proto, local)) => {
            let peer = sockaddr_text(fd, true).map(|p| p.1).unwrap_or_default();
            format!("{proto}:{local}{server} <-> {peer}")
        }
        None => "unknown".into(),
    }
}

fn resolve(host: &str, port: &str) -> io::Result<SocketAddr> {
    let port: u16 = port
        .parse()
        .map_err(|_| invalid(format!("invalid port '{port}'")))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = if host.is_empty() { "0.0.0.0" } else { host };
    (host, port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| invalid(format!("address resolution failed for {host}:{port}")))
}

impl Monitor {
    fn open(spec: MonitorSpec) -> io::Result<Monitor> {
        let mut m = Monitor {
            label: spec.label.clone(),
            listener: None,
            conn: None,
            disconnected_name: String::new(),
            wait: false,
            mode: spec.mode,
        };
        match spec.addr {
            MonitorAddr::Unix(path) if spec.server => {
                // QEMU removes a stale socket file before binding.
                let _ = std::fs::remove_file(&path);
                let l = UnixListener::bind(&path).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("Failed to bind socket to {}: {e}", path.display()),
                    )
                })?;
                m.disconnected_name = format!("disconnected:unix:{},server=on", path.display());
                m.listener = Some(Listener::Unix(l, Some(path)));
                m.wait = spec.wait;
            }
            MonitorAddr::Unix(path) => {
                let s = std::os::unix::net::UnixStream::connect(&path).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("Failed to connect to '{}': {e}", path.display()),
                    )
                })?;
                s.set_nonblocking(true)?;
                m.disconnected_name = format!("disconnected:unix:{}", path.display());
                m.set_conn(Stream::Unix(UnixStream::from_std(s)), false);
            }
            MonitorAddr::Tcp { host, port } if spec.server => {
                let addr = resolve(&host, &port)?;
                let l = TcpListener::bind(addr).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("Failed to bind socket to {host}:{port}: {e}"),
                    )
                })?;
                m.disconnected_name = format!("disconnected:tcp:{host}:{port},server=on");
                m.listener = Some(Listener::Tcp(l));
                m.wait = spec.wait;
            }
            MonitorAddr::Tcp { host, port } => {
                let addr = resolve(&host, &port)?;
                let s = std::net::TcpStream::connect(addr).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("Failed to connect to '{host}:{port}': {e}"),
                    )
                })?;
                s.set_nonblocking(true)?;
                m.disconnected_name = format!("disconnected:tcp:{host}:{port}");
                m.set_conn(Stream::Tcp(TcpStream::from_std(s)), false);
            }
            MonitorAddr::Fd(fd) => {
                let domain = sockopt_int(fd, libc::SOL_SOCKET, libc::SO_DOMAIN).map_err(|e| {
                    io::Error::new(e.kind(), format!("fd {fd} is not a socket: {e}"))
                })?;
                let listening = sockopt_int(fd, libc::SOL_SOCKET, libc::SO_ACCEPTCONN)? != 0;
                set_nonblocking(fd)?;
                let name = match sockaddr_text(fd, false) {
                    Some((proto, a)) => format!("{proto}:{a}"),
                    None => "unknown".into(),
                };
                // SAFETY: the caller hands us ownership of an open socket fd
                // of the checked domain.
                unsafe {
                    match (domain, listening) {
                        (libc::AF_UNIX, true) => {
                            m.listener = Some(Listener::Unix(UnixListener::from_raw_fd(fd), None));
                            m.disconnected_name = format!("disconnected:{name},server=on");
                            m.wait = spec.wait;
                        }
                        (libc::AF_INET | libc::AF_INET6, true) => {
                            m.listener = Some(Listener::Tcp(TcpListener::from_raw_fd(fd)));
                            m.disconnected_name = format!("disconnected:{name},server=on");
                            m.wait = spec.wait;
                        }
                        (libc::AF_UNIX, false) => {
                            m.disconnected_name = format!("disconnected:{name}");
                            m.set_conn(Stream::Unix(UnixStream::from_raw_fd(fd)), false);
                        }
                        (libc::AF_INET | libc::AF_INET6, false) => {
                            m.disconnected_name = format!("disconnected:{name}");
                            m.set_conn(Stream::Tcp(TcpStream::from_raw_fd(fd)), false);
                        }
                        _ => {
                            return Err(invalid(format!(
                                "fd {fd}: unsupported socket family {domain}"
                            )))
                        }
                    }
                }
            }
        }
        Ok(m)
    }

    fn set_conn(&mut self, stream: Stream, is_listen: bool) {
        let filename = connected_name(stream.fd(), is_listen);
        let mut out = VecDeque::new();
        let proto = match self.mode {
            MonitorMode::Control => {
                out.extend(greeting().as_bytes());
                Proto::Qmp(Session::new())
            }
            MonitorMode::Readline => {
                out.extend(banner().as_bytes());
                Proto::Hmp(Readline::new())
            }
        };
        self.conn = Some(Conn {
            stream,
            proto,
            out,
            read_paused: false,
            registered: false,
            want_write: false,
            filename,
        });
    }

    /// Accepts one pending client if none is connected.
    fn try_accept(&mut self) -> io::Result<bool> {
        if self.conn.is_some() {
            return Ok(false);
        }
        let stream = match &self.listener {
            Some(Listener::Unix(l, _)) => match l.accept() {
                Ok((s, _)) => Stream::Unix(s),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            },
            Some(Listener::Tcp(l)) => match l.accept() {
                Ok((s, _)) => {
                    let _ = s.set_nodelay(true);
                    Stream::Tcp(s)
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            },
            None => return Ok(false),
        };
        self.set_conn(stream, true);
        Ok(true)
    }

    fn listener_fd(&self) -> Option<RawFd> {
        match &self.listener {
            Some(Listener::Unix(l, _)) => Some(l.as_raw_fd()),
            Some(Listener::Tcp(l)) => Some(l.as_raw_fd()),
            None => None,
        }
    }
}

impl Drop for MonitorSet {
    fn drop(&mut self) {
        for m in &self.monitors {
            if let Some(Listener::Unix(_, Some(path))) = &m.listener {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

impl MonitorSet {
    /// Opens every monitor: binds listeners, adopts inherited fds, connects
    /// out for client-mode monitors.
    pub fn new(specs: Vec<MonitorSpec>) -> io::Result<MonitorSet> {
        let monitors = specs
            .into_iter()
            .map(Monitor::open)
            .collect::<io::Result<Vec<_>>>()?;
        Ok(MonitorSet {
            monitors,
            first_token: None,
            registry: None,
            throttle: Throttle::default(),
        })
    }

    /// Blocks until every `wait=on` monitor has a client, as QEMU does
    /// before starting the machine.  Call before starting vCPUs.
    pub fn wait_for_clients(&mut self) -> io::Result<()> {
        for m in &mut self.monitors {
            if !m.wait || m.conn.is_some() {
                continue;
            }
            eprintln!(
                "ferrovm: QEMU waiting for connection on: {}",
                m.disconnected_name
            );
            let fd = m
                .listener_fd()
                .ok_or_else(|| invalid("wait=on without a listening socket"))?;
            while m.conn.is_none() {
                let mut pfd = libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                let r = unsafe { libc::poll(&mut pfd, 1, -1) };
                if r < 0 && io::Error::last_os_error().kind() != ErrorKind::Interrupted {
                    return Err(io::Error::last_os_error());
                }
                m.try_accept()?;
            }
        }
        Ok(())
    }

    /// Number of mio tokens the set uses, starting at `first_token`.
    pub fn token_count(&self) -> usize {
        2 * self.monitors.len()
    }

    /// Registers every socket with the VMM's poll, using tokens
    /// `first_token .. first_token + token_count()`.
    pub fn register(&mut self, registry: &Registry, first_token: usize) -> io::Result<()> {
        self.first_token = Some(first_token);
        self.registry = Some(registry.try_clone()?);
        for i in 0..self.monitors.len() {
            let lt = Token(first_token + 2 * i);
            match &mut self.monitors[i].listener {
                Some(Listener::Unix(l, _)) => registry.register(l, lt, Interest::READABLE)?,
                Some(Listener::Tcp(l)) => registry.register(l, lt, Interest::READABLE)?,
                None => {}
            }
            self.register_conn(i);
            self.write_out(i);
            // Connections that arrived before registration.
            self.accept_and_serve(i);
        }
        Ok(())
    }

    /// Whether `token` belongs to this set.
    pub fn handles(&self, token: Token) -> bool {
        self.first_token
            .is_some_and(|f| token.0 >= f && token.0 < f + self.token_count())
    }

    fn register_conn(&mut self, i: usize) {
        let (Some(first), Some(registry)) = (self.first_token, self.registry.as_ref()) else {
            return;
        };
        let Some(c) = self.monitors[i].conn.as_mut() else {
            return;
        };
        if !c.registered {
            let t = Token(first + 2 * i + 1);
            c.want_write = !c.out.is_empty();
            match registry.register(c.stream.source(), t, conn_interest(c.want_write)) {
                Ok(()) => c.registered = true,
                Err(e) => {
                    log::warn!(
                        "QMP monitor {}: cannot register client: {e}",
                        self.monitors[i].label
                    );
                    self.monitors[i].conn = None;
                }
            }
        }
    }

    /// Handles a readiness event for one of the set's tokens.
    pub fn on_event(&mut self, event: &mio::event::Event, handler: &mut dyn Handler) {
        let Some(first) = self.first_token else {
            return;
        };
        let Some(rel) = event.token().0.checked_sub(first) else {
            return;
        };
        let i = rel / 2;
        if i >= self.monitors.len() {
            return;
        }
        if rel % 2 == 0 {
            self.accept_and_serve(i);
            return;
        }
        if self.monitors[i].conn.is_none() {
            return;
        }
        if event.is_writable() || event.is_write_closed() || event.is_error() {
            self.write_out(i);
        }
        // Readable, or hung up: read until EOF/WouldBlock (an EOF is only
        // seen by reading).
        if self.monitors[i].conn.is_some() {
            // `query-chardev` needs the monitors' live state, which only the
            // set knows: the handler's answer is completed here.
            let mut with_monitors = WithMonitorChardevs {
                inner: handler,
                monitors: self.chardev_info(),
            };
            self.read_in(i, &mut with_monitors);
        }
    }

    fn accept_and_serve(&mut self, i: usize) {
        match self.monitors[i].try_accept() {
            Ok(true) => {
                self.register_conn(i);
                self.write_out(i);
            }
            Ok(false) => {}
            Err(e) => log::warn!("QMP monitor {}: accept failed: {e}", self.monitors[i].label),
        }
    }

    fn disconnect(&mut self, i: usize) {
        if let Some(mut c) = self.monitors[i].conn.take() {
            if let (true, Some(registry)) = (c.registered, self.registry.as_ref()) {
                let _ = registry.deregister(c.stream.source());
            }
        }
        // As QEMU: the next waiting client is accepted when this one leaves.
        self.accept_and_serve(i);
    }

    /// Writes queued output; disconnects on error or overflow.
    fn write_out(&mut self, i: usize) {
        let label = self.monitors[i].label.clone();
        let mut failed = false;
        let mut resume = false;
        if let Some(c) = self.monitors[i].conn.as_mut() {
            while !c.out.is_empty() {
                let (a, _) = c.out.as_slices();
                match c.stream.write(a) {
                    Ok(0) => {
                        failed = true;
                        break;
                    }
                    Ok(n) => {
                        c.out.drain(..n);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(_) => {
                        failed = true;
                        break;
                    }
                }
            }
            if c.out.len() > MAX_OUTPUT_BYTES {
                log::warn!(
                    "QMP monitor {label}: client does not read ({} bytes queued), disconnecting",
                    c.out.len()
                );
                failed = true;
            }
            if c.read_paused && c.out.len() < READ_PAUSE_BYTES {
                c.read_paused = false;
                resume = true;
            }
        }
        let interest_changed = self.monitors[i]
            .conn
            .as_ref()
            .is_some_and(|c| c.registered && c.want_write == c.out.is_empty());
        if failed {
            self.disconnect(i);
        } else if resume || interest_changed {
            self.rearm(i);
        }
    }

    /// Re-arms the edge-triggered registration (WRITABLE only while output
    /// is queued) so pending input produces a
    /// new readiness event.
    fn rearm(&mut self, i: usize) {
        let (Some(first), Some(registry)) = (self.first_token, self.registry.as_ref()) else {
            return;
        };
        if let Some(c) = self.monitors[i].conn.as_mut() {
            let t = Token(first + 2 * i + 1);
            c.want_write = !c.out.is_empty();
            let _ = registry.reregister(c.stream.source(), t, conn_interest(c.want_write));
        }
    }

    fn read_in(&mut self, i: usize, handler: &mut dyn Handler) {
        let mut buf = [0u8; 16384];
        let mut budget = READ_BUDGET;
        loop {
            if handler_exit(handler) {
                return;
            }
            let Some(c) = self.monitors[i].conn.as_mut() else {
                return;
            };
            if c.out.len() >= READ_PAUSE_BYTES {
                c.read_paused = true;
                return;
            }
            if budget == 0 {
                // Let other sources run; come back through a fresh event.
                self.rearm(i);
                return;
            }
            match c.stream.read(&mut buf) {
                Ok(0) => {
                    self.disconnect(i);
                    return;
                }
                Ok(n) => {
                    budget = budget.saturating_sub(n);
                    match &mut c.proto {
                        Proto::Qmp(session) => {
                            session.feed(&buf[..n]);
                            self.serve_requests(i, handler);
                        }
                        Proto::Hmp(_) => self.serve_hmp(i, &buf[..n], handler),
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.disconnect(i);
                    return;
                }
            }
        }
    }

    /// Runs HMP input through the line editor of monitor `i`.
    fn serve_hmp(&mut self, i: usize, input: &[u8], handler: &mut dyn Handler) {
        let mut out = Vec::new();
        let mut events: Vec<Event> = Vec::new();
        if let Some(Conn {
            proto: Proto::Hmp(rl),
            ..
        }) = self.monitors[i].conn.as_mut()
        {
            for &b in input {
                if handler_exit(handler) {
                    break;
                }
                rl.feed_byte(b, &mut out, handler, &mut events);
            }
        }
        for e in &events {
            self.broadcast(e);
        }
        if let Some(c) = self.monitors[i].conn.as_mut() {
            c.out.extend(&out);
        }
        self.write_out(i);
    }

    /// Runs every complete request of monitor `i`.
    fn serve_requests(&mut self, i: usize, handler: &mut dyn Handler) {
        loop {
            if handler_exit(handler) {
                return;
            }
            let Some(c) = self.monitors[i].conn.as_mut() else {
                return;
            };
            let Proto::Qmp(session) = &mut c.proto else {
                return;
            };
            let Some(item) = session.next_request() else {
                return;
            };
            let mut events: Vec<Event> = Vec::new();
            let reply = session.handle(item, handler, &mut events);
            for e in &events {
                self.broadcast(e);
            }
            if let Some(c) = self.monitors[i].conn.as_mut() {
                c.out.extend(reply.as_bytes());
            }
            self.write_out(i);
            if self.monitors[i]
                .conn
                .as_ref()
                .is_some_and(|c| c.out.len() >= READ_PAUSE_BYTES)
            {
                return;
            }
        }
    }

    /// Sends an event to every negotiated client (events for monitors
    /// without a client are dropped, as QEMU drops them).  Guest-triggerable
    /// events QEMU rate-limits (WATCHDOG, RTC_CHANGE, ...) go out at most
    /// once a second; held ones are sent by [`MonitorSet::run_timers`].
    pub fn broadcast(&mut self, event: &Event) {
        if let Some(e) = self.throttle.offer(event.clone(), Instant::now()) {
            self.send_event(&e);
        }
    }

    /// Sends held rate-limited events whose time has come.  Call after every
    /// poll wake-up; [`MonitorSet::poll_timeout`] says when one is due.
    pub fn run_timers(&mut self) {
        for e in self.throttle.expire(Instant::now()) {
            self.send_event(&e);
        }
    }

    /// How long the VMM's poll may sleep before [`MonitorSet::run_timers`]
    /// has work (`None`: no timer pending).
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.throttle
            .next_deadline()
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    fn send_event(&mut self, event: &Event) {
        let line = event.to_json() + "\r\n";
        for i in 0..self.monitors.len() {
            if let Some(c) = self.monitors[i].conn.as_mut() {
                if matches!(&c.proto, Proto::Qmp(s) if s.negotiated()) {
                    c.out.extend(line.as_bytes());
                    self.write_out(i);
                }
            }
        }
    }

    /// Writes all queued output, waiting up to `timeout` for slow clients
    /// (before exiting after `quit`).
    pub fn flush(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        for m in &mut self.monitors {
            let Some(c) = m.conn.as_mut() else { continue };
            while !c.out.is_empty() {
                let (a, _) = c.out.as_slices();
                match c.stream.write(a) {
                    Ok(n) if n > 0 => {
                        c.out.drain(..n);
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        let left = deadline.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            break;
                        }
                        let mut pfd = libc::pollfd {
                            fd: c.stream.fd(),
                            events: libc::POLLOUT,
                            revents: 0,
                        };
                        // SAFETY: one valid pollfd.
                        unsafe {
                            libc::poll(&mut pfd, 1, left.as_millis().min(i32::MAX as u128) as i32)
                        };
                    }
                    _ => break,
                }
            }
        }
    }

    /// After `quit`: gives connected clients up to `max` to close their end
    /// first, as they have time to with QEMU, whose clean-up takes tens of
    /// milliseconds before its sockets close (qemu.qmp's shells close right
    /// after the reply, and report an error if the server's EOF comes first).
    /// Returns as soon as every client has closed.
    pub fn linger(&mut self, max: Duration) {
        let deadline = Instant::now() + max;
        let mut open: Vec<RawFd> = self
            .monitors
            .iter()
            .filter_map(|m| m.conn.as_ref().map(|c| c.stream.fd()))
            .collect();
        while !open.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            let mut pfds: Vec<libc::pollfd> = open
                .iter()
                .map(|&fd| libc::pollfd {
                    fd,
                    events: libc::POLLIN | libc::POLLRDHUP,
                    revents: 0,
                })
                .collect();
            // SAFETY: `pfds` is a valid array of pollfds for its length.
            let n = unsafe {
                libc::poll(
                    pfds.as_mut_ptr(),
                    pfds.len() as libc::nfds_t,
                    left.as_millis().clamp(1, i32::MAX as u128) as i32,
                )
            };
            if n <= 0 {
                continue;
            }
            let mut still = Vec::new();
            for p in &pfds {
                let mut buf = [0u8; 4096];
                let closed = p.revents & (libc::POLLHUP | libc::POLLRDHUP | libc::POLLERR) != 0
                    || (p.revents & libc::POLLIN != 0
                        // SAFETY: reading into a local buffer from our socket.
                        && unsafe { libc::recv(p.fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) } == 0);
                if !closed {
                    still.push(p.fd);
                }
            }
            open = still;
        }
    }

    /// `query-chardev` entries for the monitors' chardevs.
    pub fn chardev_info(&self) -> Vec<serde_json::Value> {
        self.monitors
            .iter()
            .map(|m| {
                let filename = m
                    .conn
                    .as_ref()
                    .map_or(m.disconnected_name.clone(), |c| c.filename.clone());
                serde_json::json!({"label": m.label, "filename": filename, "frontend-open": true})
            })
            .collect()
    }

    /// Whether monitor `index` has a client that completed negotiation.
    pub fn is_negotiated(&self, index: usize) -> bool {
        self.monitors
            .get(index)
            .and_then(|m| m.conn.as_ref())
            .is_some_and(|c| matches!(&c.proto, Proto::Qmp(s) if s.negotiated()))
    }
}

fn handler_exit(handler: &dyn Handler) -> bool {
    handler.exit_requested()
}

fn conn_interest(want_write: bool) -> Interest {
    if want_write {
        Interest::READABLE | Interest::WRITABLE
    } else {
        Interest::READABLE
    }
}

/// A handler whose `query-chardev` answer starts with the monitors' own
/// chardevs (as QEMU lists them) followed by the VMM's.
struct WithMonitorChardevs<'a> {
    inner: &'a mut dyn Handler,
    monitors: Vec<serde_json::Value>,
}

impl Handler for WithMonitorChardevs<'_> {
    fn execute(
        &mut self,
        cmd: &str,
        args: &crate::dispatch::Args,
        events: &mut dyn crate::dispatch::EventSink,
    ) -> Result<serde_json::Value, crate::dispatch::QmpError> {
        let reply = self.inner.execute(cmd, args, events)?;
        if cmd != "query-chardev" {
            return Ok(reply);
        }
        let mut all = self.monitors.clone();
        if let serde_json::Value::Array(more) = reply {
            all.extend(more);
        }
        Ok(serde_json::Value::Array(all))
    }

    fn exit_requested(&self) -> bool {
        self.inner.exit_requested()
    }

    fn hmp_qemu_io(
        &mut self,
        qdev: bool,
        device: &str,
        command: &str,
    ) -> Result<(), crate::dispatch::QmpError> {
        self.inner.hmp_qemu_io(qdev, device, command)
    }
}
