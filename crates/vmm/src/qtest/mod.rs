//! The `-qtest` server: QEMU's qtest protocol ([`protocol`]) on a socket
//! chardev, served by the controller's event loop.
//!
//! As QEMU (softmmu/qtest.c, chardev/char-socket.c): without `server=on`
//! ferrovm connects out at start-up (QEMU's Python `QEMUQtestMachine`
//! listens and accepts); a listening chardev takes one client at a time;
//! when a client-mode peer goes away nothing reconnects. The protocol is
//! logged to stderr unless `-qtest-log` says otherwise, in QEMU's format
//! (`[R +SECONDS] request`, `[S +SECONDS] reply`, `[I ...] OPENED/CLOSED`).

pub mod protocol;

use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::FromRawFd;
use std::time::Instant;

use cli::{ChardevBackend, Config, QtestLog, SocketAddress, SocketSpec};
use mio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use mio::{Interest, Registry, Token};

use crate::error::VmmError;
use protocol::Qtest;

/// Requests longer than this without a newline end the connection.
const MAX_LINE: usize = 64 << 10;

enum Listener {
    Unix(UnixListener, std::path::PathBuf),
    Tcp(TcpListener),
}

enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Stream {
    fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Stream::Unix(s) => s,
            Stream::Tcp(s) => s,
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
}

struct Conn {
    stream: Stream,
    inbuf: Vec<u8>,
    outbuf: Vec<u8>,
    /// QEMU's `timer`, started when the client opened.
    opened: Instant,
}

pub struct QtestServer {
    protocol: Qtest,
    listener: Option<Listener>,
    conn: Option<Conn>,
    wait: bool,
    log: Option<Box<dyn Write + Send>>,
    listen_token: Token,
    conn_token: Token,
}

fn err(label: &str, what: impl std::fmt::Display) -> VmmError {
    VmmError::Config(format!("-qtest {label}: {what}"))
}

impl QtestServer {
    /// Opens `-qtest`'s chardev (None without `-qtest`): binds a listener or
    /// connects out, as QEMU's `qtest_server_init` at start-up.
    pub fn open(
        config: &Config,
        listen_token: Token,
        conn_token: Token,
    ) -> Result<Option<Self>, VmmError> {
        let Some(spec) = &config.qtest else {
            return Ok(None);
        };
        let id = &spec.chardev_id;
        let chardev = config
            .chardev(id)
            .ok_or_else(|| err(id, format!("chardev '{id}' not found")))?;
        let ChardevBackend::Socket(sock) = &chardev.backend else {
            return Err(err(
                id,
                "ferrovm serves qtest on socket chardevs only (unix:, tcp:, fd=)",
            ));
        };
        let log: Option<Box<dyn Write + Send>> =
            match &spec.log {
                QtestLog::Stderr => Some(Box::new(io::stderr())),
                QtestLog::None => None,
                QtestLog::File(p) => Some(Box::new(std::fs::File::create(p).map_err(|e| {
                    err(id, format!("cannot open the log '{}': {e}", p.display()))
                })?)),
            };
        let mut s = QtestServer {
            protocol: Qtest::new(config.accel_qtest),
            listener: None,
            conn: None,
            wait: false,
            log,
            listen_token,
            conn_token,
        };
        s.connect(id, sock)?;
        Ok(Some(s))
    }

    fn connect(&mut self, id: &str, sock: &SocketSpec) -> Result<(), VmmError> {
        match (&sock.addr, sock.server) {
            (SocketAddress::Unix(path), false) => {
                let s = std::os::unix::net::UnixStream::connect(path).map_err(|e| {
                    err(
                        id,
                        format!("Failed to connect to '{}': {e}", path.display()),
                    )
                })?;
                s.set_nonblocking(true)?;
                self.opened(Stream::Unix(UnixStream::from_std(s)));
            }
            (SocketAddress::Tcp { host, port }, false) => {
                let s = std::net::TcpStream::connect((host.as_str(), *port))
                    .map_err(|e| err(id, format!("Failed to connect to '{host}:{port}': {e}")))?;
                s.set_nonblocking(true)?;
                let _ = s.set_nodelay(true);
                self.opened(Stream::Tcp(TcpStream::from_std(s)));
            }
            (SocketAddress::Unix(path), true) => {
                let _ = std::fs::remove_file(path);
                let l = std::os::unix::net::UnixListener::bind(path).map_err(|e| {
                    err(
                        id,
                        format!("Failed to bind socket to {}: {e}", path.display()),
                    )
                })?;
                l.set_nonblocking(true)?;
                self.listener = Some(Listener::Unix(UnixListener::from_std(l), path.clone()));
                self.wait = sock.wait;
            }
            (SocketAddress::Tcp { host, port }, true) => {
                let host = if host.is_empty() { "0.0.0.0" } else { host };
                let l = std::net::TcpListener::bind((host, *port))
                    .map_err(|e| err(id, format!("Failed to bind socket: {e}")))?;
                l.set_nonblocking(true)?;
                self.listener = Some(Listener::Tcp(TcpListener::from_std(l)));
                self.wait = sock.wait;
            }
            (SocketAddress::Fd(fd), _) => {
                // An inherited socket, used as it is: connected or listening.
                let mut listening: libc::c_int = 0;
                let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
                // SAFETY: getsockopt into a local int; it fails on anything but a socket.
                let ok = unsafe {
                    libc::getsockopt(
                        *fd,
                        libc::SOL_SOCKET,
                        libc::SO_ACCEPTCONN,
                        &mut listening as *mut _ as *mut _,
                        &mut len,
                    )
                } == 0;
                if !ok {
                    return Err(err(id, format!("fd={fd} is not a socket")));
                }
                // SAFETY: the inherited fd is ours, a socket as just checked.
                unsafe {
                    if listening != 0 {
                        let l = std::os::unix::net::UnixListener::from_raw_fd(*fd);
                        l.set_nonblocking(true)?;
                        self.listener = Some(Listener::Unix(
                            UnixListener::from_std(l),
                            std::path::PathBuf::new(),
                        ));
                        self.wait = sock.wait;
                    } else {
                        let s = std::os::unix::net::UnixStream::from_raw_fd(*fd);
                        s.set_nonblocking(true)?;
                        self.opened(Stream::Unix(UnixStream::from_std(s)));
                    }
                }
            }
        }
        Ok(())
    }

    /// CHR_EVENT_OPENED.
    fn opened(&mut self, stream: Stream) {
        let c = Conn {
            stream,
            inbuf: Vec::new(),
            outbuf: Vec::new(),
            opened: Instant::now(),
        };
        self.log_line(&format!(
            "[I {:.6}] OPENED\n",
            c.opened.elapsed().as_secs_f64()
        ));
        self.conn = Some(c);
    }

    fn log_line(&mut self, s: &str) {
        if let Some(l) = &mut self.log {
            let _ = l.write_all(s.as_bytes());
            let _ = l.flush();
        }
    }

    /// `wait=on`: blocks until the first client connects, as QEMU does
    /// before the machine starts.
    pub fn wait_for_client(&mut self) -> Result<(), VmmError> {
        if !self.wait {
            return Ok(());
        }
        while self.conn.is_none() {
            if self.try_accept()? {
                break;
            }
            let fd = match &self.listener {
                Some(Listener::Unix(l, _)) => std::os::fd::AsRawFd::as_raw_fd(l),
                Some(Listener::Tcp(l)) => std::os::fd::AsRawFd::as_raw_fd(l),
                None => return Ok(()),
            };
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            unsafe { libc::poll(&mut pfd, 1, -1) };
        }
        Ok(())
    }

    fn try_accept(&mut self) -> Result<bool, VmmError> {
        if self.conn.is_some() {
            return Ok(false);
        }
        let accepted = match &self.listener {
            Some(Listener::Unix(l, _)) => l.accept().map(|(s, _)| Stream::Unix(s)),
            Some(Listener::Tcp(l)) => l.accept().map(|(s, _)| Stream::Tcp(s)),
            None => return Ok(false),
        };
        match accepted {
            Ok(s) => {
                self.opened(s);
                Ok(true)
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    pub fn register(&mut self, registry: &Registry) -> io::Result<()> {
        match &mut self.listener {
            Some(Listener::Unix(l, _)) => {
                registry.register(l, self.listen_token, Interest::READABLE)?
            }
            Some(Listener::Tcp(l)) => {
                registry.register(l, self.listen_token, Interest::READABLE)?
            }
            None => {}
        }
        let token = self.conn_token;
        if let Some(c) = &mut self.conn {
            registry.register(c.stream.source(), token, Interest::READABLE)?;
        }
        Ok(())
    }

    pub fn handles(&self, t: Token) -> bool {
        t == self.listen_token || t == self.conn_token
    }

    /// An event on one of its tokens.
    pub fn on_event(&mut self, registry: &Registry, t: Token) {
        if t == self.listen_token {
            if matches!(self.try_accept(), Ok(true)) {
                let token = self.conn_token;
                if let Some(c) = &mut self.conn {
                    let _ = registry.register(c.stream.source(), token, Interest::READABLE);
                }
            }
            return;
        }
        if self.serve() {
            self.close(registry);
            // A listening chardev takes the next client.
            self.on_event(registry, self.listen_token);
        } else {
            self.update_interest(registry);
        }
    }

    /// Reads what the client sent, answers each complete line and writes
    /// what fits; true when the connection has ended.
    fn serve(&mut self) -> bool {
        let Some(mut c) = self.conn.take() else {
            return false;
        };
        let mut buf = [0u8; 4096];
        let mut closed = false;
        loop {
            match c.stream.read(&mut buf) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => c.inbuf.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    closed = true;
                    break;
                }
            }
        }
        while let Some(end) = c.inbuf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = c.inbuf.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line[..end]).into_owned();
            let t = c.opened.elapsed().as_secs_f64();
            self.log_line(&format!("[R +{t:.6}] {line}\n"));
            let reply = self.protocol.process(&line);
            self.log_line(&format!("[S +{t:.6}] {reply}"));
            c.outbuf.extend_from_slice(reply.as_bytes());
        }
        if c.inbuf.len() > MAX_LINE {
            closed = true;
        }
        while !c.outbuf.is_empty() {
            match c.stream.write(&c.outbuf) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => {
                    c.outbuf.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    closed = true;
                    break;
                }
            }
        }
        self.conn = Some(c);
        closed
    }

    /// At exit the chardev closes its connection (`qemu_chr_cleanup`), so
    /// a client still connected sees CLOSED logged, as QEMU logs it.
    pub fn shutdown(&mut self, registry: &Registry) {
        self.close(registry);
    }

    /// CHR_EVENT_CLOSED.
    fn close(&mut self, registry: &Registry) {
        if let Some(mut c) = self.conn.take() {
            let _ = registry.deregister(c.stream.source());
            self.log_line(&format!(
                "[I +{:.6}] CLOSED\n",
                c.opened.elapsed().as_secs_f64()
            ));
        }
    }

    /// Keeps WRITABLE interest while replies wait for the client.
    fn update_interest(&mut self, registry: &Registry) {
        let token = self.conn_token;
        if let Some(c) = &mut self.conn {
            let i = if c.outbuf.is_empty() {
                Interest::READABLE
            } else {
                Interest::READABLE | Interest::WRITABLE
            };
            let _ = registry.reregister(c.stream.source(), token, i);
        }
    }
}

impl Drop for QtestServer {
    fn drop(&mut self) {
        if let Some(Listener::Unix(_, path)) = &self.listener {
            if !path.as_os_str().is_empty() {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}
