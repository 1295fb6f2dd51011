//! MonitorSet over real sockets, driven by a mio loop as the VMM drives it.

use std::io::{Read, Write};
use std::os::fd::IntoRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token, Waker};
use qmp::testing::FakeVm;
use qmp::{Event, MonitorAddr, MonitorMode, MonitorSet, MonitorSpec};

enum Ctl {
    Broadcast(Event, usize),
    Chardevs(mpsc::Sender<Vec<serde_json::Value>>),
    Stop,
}

struct Harness {
    ctl: mpsc::Sender<Ctl>,
    waker: std::sync::Arc<Waker>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Harness {
    fn start(specs: Vec<MonitorSpec>) -> Harness {
        let (ctl_tx, ctl_rx) = mpsc::channel::<Ctl>();
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = thread::spawn(move || {
            let mut vm = FakeVm::default();
            let mut mons = MonitorSet::new(specs).expect("monitors");
            let mut poll = Poll::new().unwrap();
            let waker = std::sync::Arc::new(Waker::new(poll.registry(), Token(0)).unwrap());
            mons.register(poll.registry(), 1).unwrap();
            ready_tx.send(waker).unwrap();
            let mut events = Events::with_capacity(64);
            loop {
                poll.poll(&mut events, Some(Duration::from_millis(500)))
                    .unwrap();
                for ev in events.iter() {
                    if mons.handles(ev.token()) {
                        mons.on_event(ev, &mut vm);
                    }
                }
                while let Ok(c) = ctl_rx.try_recv() {
                    match c {
                        Ctl::Broadcast(e, n) => {
                            for _ in 0..n {
                                mons.broadcast(&e);
                            }
                        }
                        Ctl::Chardevs(tx) => tx.send(mons.chardev_info()).unwrap(),
                        Ctl::Stop => return,
                    }
                }
                if vm.quit_requested {
                    mons.flush(Duration::from_secs(1));
                    return;
                }
            }
        });
        let waker = ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("server start");
        Harness {
            ctl: ctl_tx,
            waker,
            thread: Some(thread),
        }
    }

    fn send(&self, c: Ctl) {
        self.ctl.send(c).unwrap();
        self.waker.wake().unwrap();
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = self.ctl.send(Ctl::Stop);
        let _ = self.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn tmp_path(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("qmp-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

fn unix_spec(label: &str, path: &Path) -> MonitorSpec {
    MonitorSpec {
        label: label.into(),
        addr: MonitorAddr::Unix(path.to_path_buf()),
        server: true,
        wait: false,
        mode: MonitorMode::Control,
    }
}

/// A line-oriented test client.
struct Client<S: Read + Write> {
    s: S,
    buf: Vec<u8>,
}

impl Client<UnixStream> {
    fn connect(path: &Path) -> Self {
        let s = UnixStream::connect(path).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        Client { s, buf: Vec::new() }
    }
}

impl<S: Read + Write> Client<S> {
    fn wrap(s: S) -> Self {
        Client { s, buf: Vec::new() }
    }

    /// Next CRLF-terminated line, or None after `timeout`.
    fn line(&mut self, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let l: Vec<u8> = self.buf.drain(..i + 2).collect();
                return Some(String::from_utf8(l[..i].to_vec()).unwrap());
            }
            if Instant::now() > deadline {
                return None;
            }
            let mut b = [0u8; 65536];
            match self.s.read(&mut b) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&b[..n]),
                Err(_) => {}
            }
        }
    }

    fn expect_line(&mut self) -> String {
        self.line(Duration::from_secs(5))
            .expect("a line from the server")
    }

    fn cmd(&mut self, json: &str) -> String {
        self.s.write_all(json.as_bytes()).unwrap();
        self.expect_line()
    }

    fn negotiate(&mut self) {
        assert!(self.expect_line().starts_with("{\"QMP\": "));
        assert_eq!(
            self.cmd(r#"{"execute":"qmp_capabilities"}"#),
            r#"{"return": {}}"#
        );
    }
}

#[test]
fn greeting_negotiation_and_crlf() {
    let path = tmp_path("basic");
    let _h = Harness::start(vec![unix_spec("compat_monitor0", &path)]);
    let mut c = Client::connect(&path);
    assert_eq!(
        c.expect_line(),
        r#"{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": "ferrovm-0.1.0"}, "capabilities": ["oob"]}}"#
    );
    assert_eq!(
        c.cmd(r#"{"execute":"query-status"}"#),
        r#"{"error": {"class": "CommandNotFound", "desc": "Expecting capabilities negotiation with 'qmp_capabilities'"}}"#
    );
    assert_eq!(
        c.cmd(r#"{"execute":"qmp_capabilities"}"#),
        r#"{"return": {}}"#
    );
    // Several requests in one write, one split across writes.
    c.s.write_all(
        b"{\"execute\":\"query-name\",\"id\":1}{\"execute\":\"query-name\",\"id\":2}{\"execute\":",
    )
    .unwrap();
    assert_eq!(c.expect_line(), r#"{"return": {}, "id": 1}"#);
    assert_eq!(c.expect_line(), r#"{"return": {}, "id": 2}"#);
    assert_eq!(
        c.cmd(r#""query-name","id":3}"#),
        r#"{"return": {}, "id": 3}"#
    );
}

#[test]
fn one_client_at_a_time() {
    let path = tmp_path("one");
    let _h = Harness::start(vec![unix_spec("compat_monitor0", &path)]);
    let mut a = Client::connect(&path);
    a.negotiate();
    let mut b = Client::connect(&path);
    assert_eq!(
        b.line(Duration::from_millis(300)),
        None,
        "second client must wait"
    );
    // The first client leaves mid-message; the waiting one is served.
    a.s.write_all(b"{\"execute\":").unwrap();
    drop(a);
    b.negotiate();
    assert!(b
        .cmd(r#"{"execute":"query-status"}"#)
        .starts_with(r#"{"return": {"status""#));
}

#[test]
fn events_reach_every_negotiated_monitor() {
    let (p1, p2) = (tmp_path("ev1"), tmp_path("ev2"));
    let h = Harness::start(vec![unix_spec("m1", &p1), unix_spec("m2", &p2)]);
    let mut a = Client::connect(&p1);
    a.negotiate();
    let mut b = Client::connect(&p2);
    assert!(b.expect_line().starts_with("{\"QMP\""));
    // b has not negotiated: no events for it.
    let resume = a.cmd(r#"{"execute":"cont"}"#);
    assert!(resume.contains(r#""event": "RESUME""#), "{resume}");
    assert_eq!(a.expect_line(), r#"{"return": {}}"#);
    assert_eq!(b.line(Duration::from_millis(200)), None);
    assert_eq!(
        b.cmd(r#"{"execute":"qmp_capabilities"}"#),
        r#"{"return": {}}"#
    );
    // STOP goes to both, before the reply to `stop` on a.
    assert!(a
        .cmd(r#"{"execute":"stop"}"#)
        .contains(r#""event": "STOP""#));
    assert_eq!(a.expect_line(), r#"{"return": {}}"#);
    assert!(b.expect_line().contains(r#""event": "STOP""#));
    // Events from the VMM side (e.g. a guest reset).
    h.send(Ctl::Broadcast(
        Event::new(
            "RESET",
            Some(serde_json::json!({"reason": "guest-reset", "guest": true})),
        ),
        1,
    ));
    for c in [&mut a, &mut b] {
        let l = c.expect_line();
        assert!(
            l.ends_with(r#""event": "RESET", "data": {"guest": true, "reason": "guest-reset"}}"#),
            "{l}"
        );
    }
}

#[test]
fn inherited_fds_listening_and_connected() {
    let path = tmp_path("fdl");
    let listener = UnixListener::bind(&path).unwrap();
    let (ours, theirs) = UnixStream::pair().unwrap();
    let spec = |label: &str, fd| MonitorSpec {
        label: label.into(),
        addr: MonitorAddr::Fd(fd),
        server: true,
        wait: false,
        mode: MonitorMode::Control,
    };
    let h = Harness::start(vec![
        spec("lfd", listener.into_raw_fd()),
        spec("cfd", theirs.into_raw_fd()),
    ]);
    ours.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut c = Client::wrap(ours);
    c.negotiate();
    let mut l = Client::connect(&path);
    l.negotiate();
    let (tx, rx) = mpsc::channel();
    h.send(Ctl::Chardevs(tx));
    let info = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(info[0]["label"], "lfd");
    assert_eq!(
        info[0]["filename"],
        format!("unix:{},server=on", path.display())
    );
    assert_eq!(info[1]["label"], "cfd");
    assert_eq!(info[1]["filename"], "unix:");
    let _ = std::fs::remove_file(&path);
}

#[test]
fn client_mode_connects_out() {
    let path = tmp_path("client");
    let listener = UnixListener::bind(&path).unwrap();
    let spec = MonitorSpec {
        server: false,
        ..unix_spec("c", &path)
    };
    let _h = Harness::start(vec![spec]);
    let (s, _) = listener.accept().unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut c = Client::wrap(s);
    c.negotiate();
    assert!(c.cmd(r#"{"execute":"query-version"}"#).contains("ferrovm"));
    let _ = std::fs::remove_file(&path);
}

#[test]
fn tcp_listener() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let spec = MonitorSpec {
        label: "t".into(),
        addr: MonitorAddr::Tcp {
            host: "127.0.0.1".into(),
            port: port.to_string(),
        },
        server: true,
        wait: false,
        mode: MonitorMode::Control,
    };
    let h = Harness::start(vec![spec]);
    let (tx, rx) = mpsc::channel();
    h.send(Ctl::Chardevs(tx));
    assert_eq!(
        rx.recv().unwrap()[0]["filename"],
        format!("disconnected:tcp:127.0.0.1:{port},server=on")
    );
    let s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let local = s.local_addr().unwrap();
    let mut c = Client::wrap(s);
    c.negotiate();
    let (tx, rx) = mpsc::channel();
    h.send(Ctl::Chardevs(tx));
    assert_eq!(
        rx.recv().unwrap()[0]["filename"],
        format!(
            "tcp:127.0.0.1:{port},server=on <-> 127.0.0.1:{}",
            local.port()
        )
    );
}

#[test]
fn wait_on_blocks_until_a_client_connects() {
    let path = tmp_path("wait");
    let mut mons = MonitorSet::new(vec![MonitorSpec {
        wait: true,
        ..unix_spec("w", &path)
    }])
    .unwrap();
    let p = path.clone();
    let t = thread::spawn(move || {
        thread::sleep(Duration::from_millis(200));
        UnixStream::connect(&p).unwrap()
    });
    let start = Instant::now();
    mons.wait_for_clients().unwrap();
    assert!(start.elapsed() >= Duration::from_millis(150));
    let s = t.join().unwrap();
    let poll = Poll::new().unwrap();
    mons.register(poll.registry(), 0).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut c = Client::wrap(s);
    assert!(c.expect_line().starts_with("{\"QMP\""));
}

#[test]
fn client_that_never_reads_is_bounded() {
    let (p1, p2) = (tmp_path("slow"), tmp_path("fast"));
    let h = Harness::start(vec![unix_spec("slow", &p1), unix_spec("fast", &p2)]);
    let mut slow = Client::connect(&p1);
    slow.negotiate();
    // Pipeline many big replies without reading: the server stops reading
    // this client's requests instead of queueing unbounded output.
    let req = br#"{"execute":"query-qmp-schema"}"#.repeat(2000);
    slow.s
        .set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let _ = slow.s.write_all(&req);
    // Other monitors stay responsive.
    let mut fast = Client::connect(&p2);
    fast.negotiate();
    assert!(fast
        .cmd(r#"{"execute":"query-status"}"#)
        .starts_with(r#"{"return""#));
    // Events keep queueing for the slow client until the cap, then it is dropped.
    let ev = Event::new(
        "RESET",
        Some(serde_json::json!({"guest": true, "reason": "guest-reset"})),
    );
    h.send(Ctl::Broadcast(ev, 250_000));
    let mut n = 0;
    while fast.line(Duration::from_secs(5)).is_some() {
        n += 1;
        if n == 250_000 {
            break;
        }
    }
    assert_eq!(n, 250_000);
    // The slow client was disconnected: reading drains and then hits EOF.
    slow.s
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut total = 0usize;
    let mut b = vec![0u8; 1 << 20];
    loop {
        match slow.s.read(&mut b) {
            Ok(0) => break,
            Ok(k) => total += k,
            // Closed with our unread requests in its buffer: a reset.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("slow client not disconnected: {e} after {total} bytes"),
        }
    }
    assert!(total < 64 << 20, "{total}");
}

#[test]
fn quit_replies_then_stops_reading() {
    let path = tmp_path("quit");
    let _h = Harness::start(vec![unix_spec("q", &path)]);
    let mut c = Client::connect(&path);
    c.negotiate();
    c.s.write_all(br#"{"execute":"quit"}{"execute":"query-status"}"#)
        .unwrap();
    assert!(c
        .expect_line()
        .contains(r#""event": "SHUTDOWN", "data": {"guest": false, "reason": "host-qmp-quit"}"#));
    assert_eq!(c.expect_line(), r#"{"return": {}}"#);
    assert_eq!(c.line(Duration::from_millis(300)), None);
}

#[test]
fn readline_monitor_runs_hmp_and_events_reach_qmp() {
    let (ph, pq) = (tmp_path("hmp"), tmp_path("hmpq"));
    let hmp_spec = MonitorSpec {
        mode: MonitorMode::Readline,
        ..unix_spec("monitor0", &ph)
    };
    let _h = Harness::start(vec![hmp_spec, unix_spec("q", &pq)]);
    let mut q = Client::connect(&pq);
    q.negotiate();
    let mut h = UnixStream::connect(&ph).unwrap();
    h.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let read_until = |h: &mut UnixStream, end: &[u8]| {
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !got.ends_with(end) && Instant::now() < deadline {
            let mut b = [0u8; 4096];
            if let Ok(n) = h.read(&mut b) {
                got.extend_from_slice(&b[..n]);
            }
        }
        got
    };
    assert_eq!(
        read_until(&mut h, b"(qemu) "),
        b"QEMU 7.2.0 monitor - type 'help' for more information\r\n(qemu) "
    );
    h.write_all(b"cont\n").unwrap();
    let out = read_until(&mut h, b"(qemu) ");
    assert!(
        out.ends_with(b"cont\x1b[K\r\n(qemu) "),
        "{}",
        String::from_utf8_lossy(&out)
    );
    assert!(q.expect_line().contains(r#""event": "RESUME""#));
    h.write_all(b"info status\r").unwrap();
    let out = read_until(&mut h, b"(qemu) ");
    assert!(
        out.ends_with(b"\r\nVM status: running\r\n(qemu) "),
        "{}",
        String::from_utf8_lossy(&out)
    );
}
