//! COM1's chardev: where the guest's serial output goes and where its input
//! comes from (`-serial stdio|null|file:PATH|chardev:ID`).
//!
//! A socket chardev (`-chardev socket,...,server=on`) serves one client at a
//! time, as QEMU does: output goes to the connected client and is dropped
//! while nobody is connected (or the client does not keep up); the client's
//! bytes are the guest's input. Further clients wait in the listen backlog.

use std::io::{self, Read, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::sync::{Arc, Mutex};

use cli::{ChardevBackend, Config, SocketAddress, SocketSpec};
use mio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use mio::{Interest, Registry, Token};

use crate::error::VmmError;
use crate::fdsets::FdSets;
use crate::sync::lock;

/// Where the guest's serial input comes from.
pub enum ConsoleInput {
    None,
    /// `signal`: Ctrl-C and friends still signal ferrovm (QEMU's `signal=on`).
    Stdin {
        signal: bool,
    },
    Socket(SocketConsole),
    Pty(PtyConsole),
}

pub struct Console {
    /// The UART's output; `None` leaves COM1 out.
    pub output: Option<Box<dyn Write + Send>>,
    pub input: ConsoleInput,
    /// COM1's `query-chardev` entry.
    pub info: Option<serde_json::Value>,
}

/// The `driver` of a `-device`.
pub fn device_driver(device: &serde_json::Value) -> Option<&str> {
    device.get("driver").and_then(|v| v.as_str())
}

/// The chardev ids of the serial ports: `-serial` ones, then `-device
/// isa-serial,chardev=ID` ones (QEMU fills COM1 first either way).
pub fn serial_chardevs(config: &Config) -> Vec<String> {
    let mut ids: Vec<String> = config
        .serials
        .iter()
        .map(|s| s.chardev_id.clone())
        .collect();
    ids.extend(
        config
            .devices
            .iter()
            .filter(|d| device_driver(d) == Some("isa-serial"))
            .filter_map(|d| {
                d.get("chardev")
                    .and_then(|c| c.as_str())
                    .map(str::to_string)
            }),
    );
    ids
}

/// An `isa-debugcon`: its port, readback byte and output.
pub struct DebugConSpec {
    pub iobase: u16,
    pub readback: u8,
    pub output: Box<dyn Write + Send>,
}

/// A number property as `-device` gives it: a JSON number, or a string read
/// as qdev reads integers (`devices::qdev::parse_uint`).
fn number(v: &serde_json::Value) -> Option<u64> {
    match v {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => crate::devices::qdev::parse_uint(s),
        _ => None,
    }
}

/// The `-device isa-debugcon` ports, their chardevs opened (output only:
/// file, null or stdio).
pub fn debugcons(config: &Config, fdsets: &FdSets) -> Result<Vec<DebugConSpec>, VmmError> {
    let mut out = Vec::new();
    for d in config
        .devices
        .iter()
        .filter(|d| device_driver(d) == Some("isa-debugcon"))
    {
        let err = |m: String| VmmError::Config(format!("-device isa-debugcon: {m}"));
        // The device's own property, else a `-global isa-debugcon.K=`, else QEMU's default.
        let prop = |k: &str, default: u64, max: u64| {
            let global = config
                .globals
                .iter()
                .rev()
                .find(|g| g.driver == "isa-debugcon" && g.property == k)
                .map(|g| serde_json::Value::String(g.value.clone()));
            match d.get(k).cloned().or(global) {
                None => Ok(default),
                Some(v) => number(&v).filter(|&n| n <= max).ok_or_else(|| {
                    err(format!(
                        "Property 'isa-debugcon.{k}' doesn't take value {v}"
                    ))
                }),
            }
        };
        let iobase = prop(
            "iobase",
            u64::from(devices::debugcon::DEFAULT_IOBASE),
            0xffff,
        )? as u16;
        let readback = prop(
            "readback",
            u64::from(devices::debugcon::DEFAULT_READBACK),
            0xff,
        )? as u8;
        let id = d
            .get("chardev")
            .and_then(|c| c.as_str())
            .ok_or_else(|| err("Property 'chardev' is required".into()))?;
        let chardev = config.chardev(id).ok_or_else(|| {
            err(format!(
                "Property 'isa-debugcon.chardev' can't find value '{id}'"
            ))
        })?;
        let output: Box<dyn Write + Send> = match &chardev.backend {
            ChardevBackend::Null => Box::new(io::sink()),
            ChardevBackend::Stdio { .. } => Box::new(dup_stdout()?),
            ChardevBackend::File { path, append } => {
                Box::new(open_chardev_file(fdsets, path, *append)?)
            }
            _ => {
                return Err(err(format!(
                    "chardev '{id}': only file, null and stdio are supported by ferrovm yet"
                )))
            }
        };
        out.push(DebugConSpec {
            iobase,
            readback,
            output,
        });
    }
    Ok(out)
}

/// Our own unbuffered copy of stdout.
fn dup_stdout() -> Result<std::fs::File, VmmError> {
    // SAFETY: fd 1 is open for the life of the process; dup gives our own copy.
    let fd = unsafe { libc::dup(1) };
    if fd < 0 {
        return Err(io::Error::last_os_error().into());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    Ok(unsafe { std::fs::File::from_raw_fd(fd) })
}

fn open_chardev_file(
    fdsets: &FdSets,
    path: &std::path::Path,
    append: bool,
) -> Result<std::fs::File, VmmError> {
    fdsets
        .open_for_write(path, append)
        .map_err(|err| VmmError::File {
            what: "could not open chardev file",
            path: path.display().to_string(),
            err,
        })
}

/// Opens COM1's chardev as the command line describes it.
pub fn open(config: &Config, fdsets: &FdSets) -> Result<Console, VmmError> {
    let Some(chardev_id) = serial_chardevs(config).into_iter().next() else {
        return Ok(Console {
            output: None,
            input: ConsoleInput::None,
            info: None,
        });
    };
    let chardev = config.chardev(&chardev_id).ok_or_else(|| {
        VmmError::Config(format!("serial port: chardev '{chardev_id}' not found"))
    })?;
    // `query-chardev`'s filename, in QEMU's spelling.
    let info = |filename: String| {
        Some(serde_json::json!({"label": chardev.id, "filename": filename, "frontend-open": true}))
    };
    match &chardev.backend {
        ChardevBackend::Stdio { signal } => {
            // Unbuffered: the guest writes one byte per exit and expects it seen.
            let out = dup_stdout()?;
            Ok(Console {
                output: Some(Box::new(out)),
                input: ConsoleInput::Stdin { signal: *signal },
                info: info("stdio".into()),
            })
        }
        ChardevBackend::Null => Ok(Console {
            output: Some(Box::new(io::sink())),
            input: ConsoleInput::None,
            info: info("null".into()),
        }),
        ChardevBackend::File { path, append } => {
            let f = open_chardev_file(fdsets, path, *append)?;
            Ok(Console {
                output: Some(Box::new(f)),
                input: ConsoleInput::None,
                info: info(format!("file:{}", path.display())),
            })
        }
        ChardevBackend::Socket(spec) => {
            let socket = SocketConsole::listen(&chardev.id, spec)?;
            Ok(Console {
                output: Some(Box::new(ClientWriter(socket.client.clone()))),
                input: ConsoleInput::Socket(socket),
                info: info("socket".into()),
            })
        }
        ChardevBackend::Pty => {
            let pty = PtyConsole::open()?;
            // QEMU's announcement, which older libvirt reads from the log.
            eprintln!(
                "char device redirected to {} (label {})",
                pty.path, chardev.id
            );
            let filename = format!("pty:{}", pty.path);
            Ok(Console {
                output: Some(Box::new(pty.writer()?)),
                input: ConsoleInput::Pty(pty),
                info: info(filename),
            })
        }
    }
}

/// A pseudo-terminal for COM1 (`-chardev pty`): the guest talks to the
/// master side; users open the slave (`virsh console`, `screen /dev/pts/N`).
/// ferrovm keeps the slave open itself, so the master never reports hang-up
/// while nobody is attached; output then waits in the tty buffer and, once
/// that is full, is dropped (the guest's UART never stalls).
pub struct PtyConsole {
    master: std::fs::File,
    _slave: std::fs::File,
    pub path: String,
}

impl PtyConsole {
    fn open() -> Result<Self, VmmError> {
        let (mut master, mut slave) = (0, 0);
        let mut name = [0 as libc::c_char; 128];
        // SAFETY: openpty fills the two fds and the name buffer (128 bytes is
        // well above any /dev/pts path); the termios and winsize are optional.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                name.as_mut_ptr(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        if rc != 0 {
            return Err(VmmError::Config(format!(
                "-chardev pty: openpty failed: {}",
                io::Error::last_os_error()
            )));
        }
        // SAFETY: both fds were just returned by openpty and are ours.
        let (master, slave) = unsafe {
            (
                std::fs::File::from_raw_fd(master),
                std::fs::File::from_raw_fd(slave),
            )
        };
        // SAFETY: termios calls on the slave fd; fcntl on the master fd.
        unsafe {
            // Raw, as QEMU's qemu_openpty_raw(): the guest does its own line discipline.
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(std::os::fd::AsRawFd::as_raw_fd(&slave), &mut t) == 0 {
                libc::cfmakeraw(&mut t);
                libc::tcsetattr(std::os::fd::AsRawFd::as_raw_fd(&slave), libc::TCSAFLUSH, &t);
            }
            let fd = std::os::fd::AsRawFd::as_raw_fd(&master);
            libc::fcntl(
                fd,
                libc::F_SETFL,
                libc::fcntl(fd, libc::F_GETFL) | libc::O_NONBLOCK,
            );
        }
        // SAFETY: openpty wrote a NUL-terminated path into `name`.
        let path = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) }
            .to_string_lossy()
            .into_owned();
        Ok(Self {
            master,
            _slave: slave,
            path,
        })
    }

    fn writer(&self) -> io::Result<PtyWriter> {
        Ok(PtyWriter(self.master.try_clone()?))
    }

    pub fn register(&self, registry: &Registry, token: Token) -> io::Result<()> {
        registry.register(
            &mut mio::unix::SourceFd(&std::os::fd::AsRawFd::as_raw_fd(&self.master)),
            token,
            Interest::READABLE,
        )
    }

    /// The master is readable: the user's keystrokes go to `input`.
    pub fn on_readable(&mut self, input: &mut Vec<u8>) {
        let mut buf = [0u8; 4096];
        loop {
            match self.master.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => input.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // WouldBlock: drained. EIO: nobody on the slave side.
                Err(_) => return,
            }
        }
    }
}

/// COM1's output into the pty master; dropped when the tty buffer is full.
struct PtyWriter(std::fs::File);

impl Write for PtyWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let _ = self.0.write(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

enum Listener {
    Unix(UnixListener),
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
}

/// A socket chardev serving COM1: listening, or (an inherited connected
/// fd, as QEMU's Python `QEMUMachine` passes) connected from the start.
pub struct SocketConsole {
    /// `None` for an inherited connected socket: when it closes, input ends.
    listener: Option<Listener>,
    /// Shared with the UART's writer on the vCPU threads.
    client: Arc<Mutex<Option<Stream>>>,
    wait: bool,
}

fn config_err(id: &str, what: impl std::fmt::Display) -> VmmError {
    VmmError::Config(format!("-chardev {id}: {what}"))
}

impl SocketConsole {
    fn listen(id: &str, spec: &SocketSpec) -> Result<Self, VmmError> {
        // An inherited fd is used as it is, whatever `server=` says (as QEMU).
        if !spec.server && !matches!(spec.addr, SocketAddress::Fd(_)) {
            return Err(config_err(
                id,
                "a serial port on a client socket (server=off) is not supported by ferrovm",
            ));
        }
        let listener = match &spec.addr {
            SocketAddress::Unix(path) => {
                let _ = std::fs::remove_file(path);
                Listener::Unix(UnixListener::bind(path).map_err(|e| {
                    config_err(
                        id,
                        format!("Failed to bind socket to {}: {e}", path.display()),
                    )
                })?)
            }
            SocketAddress::Tcp { host, port } => {
                let host = if host.is_empty() { "0.0.0.0" } else { host };
                let addr = std::net::ToSocketAddrs::to_socket_addrs(&(host, *port))
                    .ok()
                    .and_then(|mut a| a.next())
                    .ok_or_else(|| {
                        config_err(id, format!("address resolution failed for {host}:{port}"))
                    })?;
                Listener::Tcp(
                    TcpListener::bind(addr)
                        .map_err(|e| config_err(id, format!("Failed to bind socket: {e}")))?,
                )
            }
            SocketAddress::Fd(fd) => match inherited(id, *fd)? {
                Inherited::Listening(l) => Listener::Unix(l),
                Inherited::Connected(s) => {
                    return Ok(Self {
                        listener: None,
                        client: Arc::new(Mutex::new(Some(Stream::Unix(s)))),
                        wait: false,
                    })
                }
            },
        };
        Ok(Self {
            listener: Some(listener),
            client: Arc::new(Mutex::new(None)),
            wait: spec.wait,
        })
    }

    /// `wait=on`: blocks until the first client connects, before the guest starts.
    pub fn wait_for_client(&mut self) -> Result<(), VmmError> {
        if !self.wait {
            return Ok(());
        }
        loop {
            if self.try_accept()? {
                return Ok(());
            }
            let fd = match &self.listener {
                Some(Listener::Unix(l)) => std::os::fd::AsRawFd::as_raw_fd(l),
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
    }

    pub fn register(
        &mut self,
        registry: &Registry,
        listen: Token,
        client: Token,
    ) -> io::Result<()> {
        match &mut self.listener {
            Some(Listener::Unix(l)) => registry.register(l, listen, Interest::READABLE)?,
            Some(Listener::Tcp(l)) => registry.register(l, listen, Interest::READABLE)?,
            None => {}
        }
        if let Some(s) = lock(&self.client).as_mut() {
            registry.register(s.source(), client, Interest::READABLE)?;
        }
        Ok(())
    }

    /// Accepts a waiting client if none is connected; true when one is.
    fn try_accept(&mut self) -> Result<bool, VmmError> {
        let mut client = lock(&self.client);
        if client.is_some() {
            return Ok(true);
        }
        let accepted = match &self.listener {
            Some(Listener::Unix(l)) => l.accept().map(|(s, _)| Stream::Unix(s)),
            Some(Listener::Tcp(l)) => l.accept().map(|(s, _)| Stream::Tcp(s)),
            None => return Ok(false),
        };
        match accepted {
            Ok(s) => {
                *client = Some(s);
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// The listener is readable: take the next client if the seat is free.
    pub fn on_listen(&mut self, registry: &Registry, client_token: Token) {
        if matches!(self.try_accept(), Ok(true)) {
            if let Some(s) = lock(&self.client).as_mut() {
                let _ = registry.register(s.source(), client_token, Interest::READABLE);
            }
        }
    }

    /// The client is readable: its bytes go to `input`; at EOF the seat is
    /// freed and the next waiting client (if any) takes it.
    pub fn on_client(&mut self, registry: &Registry, client_token: Token, input: &mut Vec<u8>) {
        let mut buf = [0u8; 4096];
        let closed = {
            let mut guard = lock(&self.client);
            let Some(s) = guard.as_mut() else { return };
            loop {
                let r = match s {
                    Stream::Unix(s) => s.read(&mut buf),
                    Stream::Tcp(s) => s.read(&mut buf),
                };
                match r {
                    Ok(0) => break true,
                    Ok(n) => input.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break true,
                }
            }
        };
        if closed {
            if let Some(mut s) = lock(&self.client).take() {
                let _ = registry.deregister(s.source());
            }
            self.on_listen(registry, client_token);
        }
    }
}

enum Inherited {
    Listening(UnixListener),
    Connected(UnixStream),
}

/// `fd=N`: a unix socket handed over by the parent, listening (libvirt) or
/// already connected (QEMU's Python `QEMUMachine`), told apart by SO_ACCEPTCONN.
fn inherited(id: &str, fd: RawFd) -> Result<Inherited, VmmError> {
    let mut listening: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt into a local int; it fails on anything but a socket.
    let ok = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ACCEPTCONN,
            &mut listening as *mut _ as *mut _,
            &mut len,
        )
    } == 0;
    if !ok {
        return Err(config_err(id, format!("fd={fd} is not a socket")));
    }
    // SAFETY: the fd is ours (inherited) and a socket of the kind just checked.
    unsafe {
        if listening != 0 {
            let l = std::os::unix::net::UnixListener::from_raw_fd(fd);
            l.set_nonblocking(true)?;
            Ok(Inherited::Listening(UnixListener::from_std(l)))
        } else {
            let s = std::os::unix::net::UnixStream::from_raw_fd(fd);
            s.set_nonblocking(true)?;
            Ok(Inherited::Connected(UnixStream::from_std(s)))
        }
    }
}

/// The UART's output: to the connected client, dropped when there is none or
/// it does not keep up (the guest's UART never stalls on a slow client).
struct ClientWriter(Arc<Mutex<Option<Stream>>>);

impl Write for ClientWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(s) = lock(&self.0).as_mut() {
            // Errors (a client gone) are noticed by the event loop as EOF.
            let _ = match s {
                Stream::Unix(s) => s.write(buf),
                Stream::Tcp(s) => s.write(buf),
            };
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A terminal put in raw mode for the guest's console, restored on drop.
pub struct RawTerminal(libc::termios);

/// When stdin is a terminal, hands keystrokes to the guest unprocessed, as
/// QEMU's stdio chardev does (`qemu_chr_set_echo_stdio`): no echo, no line
/// editing, no CR/NL translation; with `signal`, Ctrl-C still reaches ferrovm.
pub fn raw_stdin(signal: bool) -> Option<RawTerminal> {
    // SAFETY: isatty/tcgetattr/tcsetattr on fd 0 with a local termios.
    unsafe {
        if libc::isatty(0) != 1 {
            return None;
        }
        let mut saved: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(0, &mut saved) != 0 {
            return None;
        }
        let mut t = saved;
        t.c_iflag &= !(libc::IGNBRK
            | libc::BRKINT
            | libc::PARMRK
            | libc::ISTRIP
            | libc::INLCR
            | libc::IGNCR
            | libc::ICRNL
            | libc::IXON);
        t.c_oflag |= libc::OPOST;
        t.c_lflag &= !(libc::ECHO | libc::ECHONL | libc::ICANON | libc::IEXTEN);
        if !signal {
            t.c_lflag &= !libc::ISIG;
        }
        t.c_cflag &= !(libc::CSIZE | libc::PARENB);
        t.c_cflag |= libc::CS8;
        t.c_cc[libc::VMIN] = 1;
        t.c_cc[libc::VTIME] = 0;
        if libc::tcsetattr(0, libc::TCSANOW, &t) != 0 {
            return None;
        }
        Some(RawTerminal(saved))
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        // SAFETY: restores the settings read from the same fd.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &self.0) };
    }
}
