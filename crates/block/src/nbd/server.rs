//! The server's threads: one accepts connections (at most
//! `max-connections` at once, as blockdev-nbd.c `nbd_update_server_watch`
//! stops listening when full), one per connection runs the handshake and
//! the requests. What they share with the owner sits behind one lock;
//! they tell the owner when a connection ends ([`NbdMsg`]).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use vmm_sys_util::eventfd::EventFd;

use super::export::{Export, Exports};
use super::listen::Listening;
use super::negotiate::{negotiate, Outcome};
use super::proto;
use super::transmit::transmit;

/// What the server's threads tell the owner of the block graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NbdMsg {
    /// A connection closed: an export being removed may have lost its
    /// last client.
    ConnectionClosed,
}

pub type Notify = Arc<dyn Fn(NbdMsg) + Send + Sync>;

/// One open connection.
struct Conn {
    id: u64,
    /// Shut down to disconnect the client (`qio_channel_shutdown`).
    fd: Arc<OwnedFd>,
    /// The export the client chose (its reference, `blk_exp_ref`).
    export: Option<Arc<Export>>,
}

#[derive(Default)]
struct State {
    /// 0: no limit.
    max_connections: u32,
    conns: Vec<Conn>,
    next_id: u64,
    /// Exports clients can find by name, in the order they were added.
    visible: Vec<Arc<Export>>,
    stopping: bool,
}

/// What the threads share with the owner.
pub(crate) struct Shared {
    st: Mutex<State>,
    cv: Condvar,
    notify: Notify,
}

impl Shared {
    pub fn new(max_connections: u32, notify: Notify) -> Arc<Self> {
        Arc::new(Shared {
            st: Mutex::new(State {
                max_connections,
                ..State::default()
            }),
            cv: Condvar::new(),
            notify,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn max_connections(&self) -> u32 {
        self.lock().max_connections
    }

    /// The export becomes visible to new clients.
    pub fn publish(&self, e: Arc<Export>) {
        self.lock().visible.push(e);
    }

    /// `nbd_export_request_shutdown`: no new client finds the export, and
    /// its clients are disconnected.
    pub fn withdraw(&self, e: &Arc<Export>, disconnect: bool) {
        let mut st = self.lock();
        st.visible.retain(|v| !Arc::ptr_eq(v, e));
        if disconnect {
            for c in &st.conns {
                if c.export.as_ref().is_some_and(|x| Arc::ptr_eq(x, e)) {
                    shutdown(&c.fd);
                }
            }
        }
    }

    /// How many connections hold `e`.
    pub fn clients(&self, e: &Arc<Export>) -> usize {
        self.lock()
            .conns
            .iter()
            .filter(|c| c.export.as_ref().is_some_and(|x| Arc::ptr_eq(x, e)))
            .count()
    }

    /// Stops accepting, disconnects everyone and waits until every
    /// connection thread has finished (`nbd_server_free`).
    fn stop_all(&self) {
        let mut st = self.lock();
        st.stopping = true;
        for c in &st.conns {
            shutdown(&c.fd);
        }
        self.cv.notify_all();
        while !st.conns.is_empty() {
            st = self.cv.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }
}

fn shutdown(fd: &OwnedFd) {
    // SAFETY: shutdown(2) on a socket this process keeps open.
    unsafe { libc::shutdown(fd.as_raw_fd(), libc::SHUT_RDWR) };
}

/// The accepting thread and what stops it.
pub(crate) struct Server {
    pub shared: Arc<Shared>,
    stop: Arc<EventFd>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Closed (and the socket file removed) when the server goes.
    _listening: Arc<Listening>,
}

impl Server {
    pub fn start(listening: Listening, shared: Arc<Shared>) -> std::io::Result<Server> {
        let stop = Arc::new(EventFd::new(libc::EFD_CLOEXEC | libc::EFD_NONBLOCK)?);
        let listening = Arc::new(listening);
        let (sh, st, l) = (shared.clone(), stop.clone(), listening.clone());
        let thread = std::thread::Builder::new()
            .name("nbd-listener".into())
            .spawn(move || accept_loop(&l, &sh, &st))?;
        Ok(Server {
            shared,
            stop,
            thread: Some(thread),
            _listening: listening,
        })
    }

    /// Stops the accepting thread, then every connection.
    pub fn stop(&mut self) {
        {
            let mut st = self.shared.lock();
            st.stopping = true;
            self.shared.cv.notify_all();
        }
        let _ = self.stop.write(1);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.shared.stop_all();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(l: &Listening, sh: &Arc<Shared>, stop: &EventFd) {
    loop {
        {
            let mut st = sh.lock();
            while !st.stopping
                && st.max_connections != 0
                && st.conns.len() >= st.max_connections as usize
            {
                st = sh.cv.wait(st).unwrap_or_else(|e| e.into_inner());
            }
            if st.stopping {
                return;
            }
        }
        let mut pfds: Vec<libc::pollfd> = l
            .fds
            .iter()
            .map(|f| libc::pollfd {
                fd: f.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        pfds.push(libc::pollfd {
            fd: stop.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        });
        // SAFETY: pfds is a valid array of pollfd for the call.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, -1) };
        if n < 0 {
            continue;
        }
        if pfds.last().is_some_and(|p| p.revents != 0) {
            return;
        }
        for p in &pfds[..pfds.len() - 1] {
            if p.revents & libc::POLLIN == 0 {
                continue;
            }
            // SAFETY: accept4 on a listening socket; no address wanted.
            let fd = unsafe {
                libc::accept4(
                    p.fd,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_CLOEXEC,
                )
            };
            if fd < 0 {
                // EMFILE and the like: do not spin.
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            // SAFETY: fd is the new connection, owned from here on.
            let fd = Arc::new(unsafe { OwnedFd::from_raw_fd(fd) });
            set_nodelay(&fd);
            spawn_conn(sh, fd);
        }
    }
}

fn set_nodelay(fd: &OwnedFd) {
    let one: libc::c_int = 1;
    // SAFETY: setsockopt on our socket; fails harmlessly on unix sockets.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

fn spawn_conn(sh: &Arc<Shared>, fd: Arc<OwnedFd>) {
    let id = {
        let mut st = sh.lock();
        if st.stopping {
            return;
        }
        st.next_id += 1;
        let id = st.next_id;
        st.conns.push(Conn {
            id,
            fd: fd.clone(),
            export: None,
        });
        id
    };
    let sh2 = sh.clone();
    let spawned = std::thread::Builder::new()
        .name("nbd-conn".into())
        .spawn(move || run_conn(&sh2, id, &fd));
    if spawned.is_err() {
        remove_conn(sh, id);
    }
}

fn remove_conn(sh: &Shared, id: u64) {
    sh.lock().conns.retain(|c| c.id != id);
    sh.cv.notify_all();
    (sh.notify)(NbdMsg::ConnectionClosed);
}

/// The exports as connection `id` sees them.
struct ConnExports<'a> {
    sh: &'a Shared,
    id: u64,
}

impl Exports for ConnExports<'_> {
    fn list(&self) -> Vec<Arc<Export>> {
        self.sh.lock().visible.clone()
    }
    fn find(&self, name: &[u8]) -> Option<Arc<Export>> {
        let st = self.sh.lock();
        st.visible
            .iter()
            .find(|e| e.name.as_bytes() == name)
            .cloned()
    }
    fn claim(&self, name: &[u8]) -> Option<Arc<Export>> {
        let mut st = self.sh.lock();
        let e = st
            .visible
            .iter()
            .find(|e| e.name.as_bytes() == name)
            .cloned()?;
        let c = st.conns.iter_mut().find(|c| c.id == self.id)?;
        c.export = Some(e.clone());
        Some(e)
    }
}

/// A connection's socket: reads during the handshake give up at its
/// deadline (QEMU's handshake timer shuts the socket down).
struct Sock {
    file: File,
    deadline: Option<Instant>,
}

impl Read for Sock {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if let Some(d) = self.deadline {
            let left = d.saturating_duration_since(Instant::now());
            let mut p = libc::pollfd {
                fd: self.file.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = left.as_millis().min(i32::MAX as u128) as i32;
            // SAFETY: poll on one valid pollfd.
            if unsafe { libc::poll(&mut p, 1, ms) } == 0 {
                // As after QEMU's shutdown: the read sees end of file.
                return Ok(0);
            }
        }
        self.file.read(buf)
    }
}

impl Write for Sock {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.file.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn run_conn(sh: &Arc<Shared>, id: u64, fd: &Arc<OwnedFd>) {
    // A second descriptor for the File; `fd` stays for shutdown.
    let file = match fd.try_clone() {
        Ok(f) => File::from(f),
        Err(_) => return remove_conn(sh, id),
    };
    let mut s = Sock {
        file,
        deadline: Some(Instant::now() + Duration::from_secs(proto::HANDSHAKE_MAX_SECS)),
    };
    let exports = ConnExports { sh, id };
    match negotiate(&mut s, &exports) {
        Err(e) => eprintln!("ferrovm: option negotiation failed: {e}"),
        Ok(Outcome::Abort) => {}
        Ok(Outcome::Go(client)) => {
            s.deadline = None;
            if let Err(e) = transmit(&mut s, &client) {
                eprintln!("ferrovm: Disconnect client, due to: {e}");
            }
        }
    }
    drop(s);
    remove_conn(sh, id);
}
