//! The host side for the TAP tests, written independently of the crate:
//! a fresh network namespace per test, raw TUNSETIFF, link flags, an
//! AF_PACKET socket on the interface, ethtool feature reads.

#![allow(dead_code)]

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// Runs `f` on a thread of its own in a new network namespace (netns is
/// per thread), so no interface a test makes is seen by, or outlives, it.
pub fn in_netns<F: FnOnce() + Send + 'static>(f: F) {
    let h = std::thread::spawn(move || {
        // SAFETY: unshare only changes this thread's namespaces.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            panic!(
                "this test needs CAP_SYS_ADMIN to unshare(CLONE_NEWNET) (run as root): {}",
                io::Error::last_os_error()
            );
        }
        if let Err(e) = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")
        {
            panic!("this test needs a usable /dev/net/tun: {e}");
        }
        f()
    });
    if let Err(p) = h.join() {
        std::panic::resume_unwind(p);
    }
}

fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: plain old data; all-zero is valid.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    ifr
}

/// Opens `/dev/net/tun` and attaches it to `name` with `flags`, as libvirt would.
pub fn raw_tap(name: &str, flags: libc::c_int) -> OwnedFd {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .expect("open /dev/net/tun");
    let mut ifr = ifreq(name);
    ifr.ifr_ifru.ifru_flags = flags as libc::c_short;
    // SAFETY: TUNSETIFF reads/writes one ifreq.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), libc::TUNSETIFF, &mut ifr) };
    assert_eq!(r, 0, "TUNSETIFF {name}: {}", io::Error::last_os_error());
    OwnedFd::from(f)
}

/// The interface's index in this thread's namespace, if it exists.
pub fn ifindex(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: a valid C string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

fn inet_socket() -> OwnedFd {
    // SAFETY: plain socket(2).
    let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    assert!(s >= 0, "socket: {}", io::Error::last_os_error());
    // SAFETY: just created, owned here.
    unsafe { OwnedFd::from_raw_fd(s) }
}

/// Sets IFF_UP (SIOCSIFFLAGS).
pub fn link_up(name: &str) {
    let s = inet_socket();
    let mut ifr = ifreq(name);
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read/write one ifreq.
    unsafe {
        assert_eq!(libc::ioctl(s.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr), 0);
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        let r = libc::ioctl(s.as_raw_fd(), libc::SIOCSIFFLAGS, &mut ifr);
        assert_eq!(r, 0, "SIOCSIFFLAGS {name}: {}", io::Error::last_os_error());
    }
}

pub const ETHTOOL_GTXCSUM: u32 = 0x16;
pub const ETHTOOL_GTSO: u32 = 0x1e;

/// A legacy ethtool "get" of one feature (struct ethtool_value).
pub fn ethtool_get(name: &str, cmd: u32) -> u32 {
    let s = inet_socket();
    let mut val = [cmd, 0u32];
    let mut ifr = ifreq(name);
    ifr.ifr_ifru.ifru_data = val.as_mut_ptr() as *mut libc::c_char;
    // SAFETY: SIOCETHTOOL reads the command from and writes the value into
    // `val`, which outlives the call.
    let r = unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCETHTOOL, &mut ifr) };
    assert_eq!(
        r,
        0,
        "SIOCETHTOOL {cmd:#x} on {name}: {}",
        io::Error::last_os_error()
    );
    val[1]
}

/// TUNGETSNDBUF on a TAP descriptor.
pub fn sndbuf(fd: RawFd) -> i32 {
    let mut v: libc::c_int = 0;
    // SAFETY: writes one int.
    let r = unsafe { libc::ioctl(fd, libc::TUNGETSNDBUF, &mut v) };
    assert_eq!(r, 0, "TUNGETSNDBUF: {}", io::Error::last_os_error());
    v
}

/// Whether O_NONBLOCK is set.
pub fn nonblocking(fd: RawFd) -> bool {
    // SAFETY: reads the status flags.
    let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    fl >= 0 && fl & libc::O_NONBLOCK != 0
}

/// A local-experimental EtherType (IEEE 802), so the kernel's own IPv6
/// chatter on a fresh link is easy to tell apart.
pub const ETHERTYPE: u16 = 0x88b5;

/// A 60-byte broadcast frame of [`ETHERTYPE`] carrying `tag`.
pub fn frame(tag: u8) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, tag]);
    f.extend_from_slice(&ETHERTYPE.to_be_bytes());
    f.extend_from_slice(b"ferrovm tap test");
    f.resize(60, tag);
    f
}

/// An AF_PACKET socket bound to one interface and [`ETHERTYPE`].
pub struct PacketSocket(OwnedFd, u32);

impl PacketSocket {
    pub fn bind(ifname: &str) -> PacketSocket {
        let idx = ifindex(ifname).unwrap_or_else(|| panic!("no interface {ifname}"));
        let proto = ETHERTYPE.to_be() as libc::c_int;
        // SAFETY: plain socket(2).
        let s =
            unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, proto) };
        assert!(s >= 0, "AF_PACKET socket: {}", io::Error::last_os_error());
        // SAFETY: just created, owned here.
        let s = unsafe { OwnedFd::from_raw_fd(s) };
        let sll = Self::addr(idx);
        // SAFETY: sll is a sockaddr_ll of the size given.
        let r = unsafe {
            libc::bind(
                s.as_raw_fd(),
                &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(r, 0, "bind AF_PACKET: {}", io::Error::last_os_error());
        PacketSocket(s, idx)
    }

    fn addr(idx: u32) -> libc::sockaddr_ll {
        // SAFETY: plain old data.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = ETHERTYPE.to_be();
        sll.sll_ifindex = idx as i32;
        sll.sll_halen = 6;
        sll.sll_addr[..6].fill(0xff);
        sll
    }

    /// Transmits `frame` out of the interface (into the TAP's queue).
    pub fn send(&self, frame: &[u8]) {
        let sll = Self::addr(self.1);
        // SAFETY: the buffer and address are valid for the call.
        let r = unsafe {
            libc::sendto(
                self.0.as_raw_fd(),
                frame.as_ptr() as *const libc::c_void,
                frame.len(),
                0,
                &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(
            r,
            frame.len() as isize,
            "sendto: {}",
            io::Error::last_os_error()
        );
    }

    /// The next frame the interface received, within two seconds.
    pub fn recv(&self) -> Vec<u8> {
        assert!(
            readable(self.0.as_raw_fd(), Duration::from_secs(2)),
            "no frame on the packet socket"
        );
        let mut buf = vec![0u8; 2048];
        // SAFETY: the buffer is valid for its length.
        let n = unsafe {
            libc::recv(
                self.0.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                0,
            )
        };
        assert!(n >= 0, "recv: {}", io::Error::last_os_error());
        buf.truncate(n as usize);
        buf
    }
}

/// Waits up to `t` for `fd` to be readable.
pub fn readable(fd: RawFd, t: Duration) -> bool {
    let end = Instant::now() + t;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd.
        let r = unsafe { libc::poll(&mut p, 1, left.as_millis() as i32) };
        if r > 0 {
            return true;
        }
        if r == 0 || left.is_zero() {
            return false;
        }
    }
}

/// The test scripts, written once before any test can run one: a test
/// writing a script while another forks would let the fork child hold it
/// open for writing, and exec would fail with ETXTBSY. Every script logs to
/// `<dir>/<ifname>.log`, so tests apart by interface name are apart here.
///
/// - `up.sh`: "up IFNAME ARGC tunfds=N present|missing": N counts the
///   `/dev/net/tun` descriptors it inherited; present if the link exists.
/// - `down.sh`: "down IFNAME present|missing".
/// - `exit3.sh`: exits 3. `down-exit2.sh`: logs, then exits 2.
pub fn scripts() -> &'static std::path::Path {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("ferrovm-net-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("scratch dir");
        let present =
            r#"if ip link show "$1" >/dev/null 2>&1; then echo present; else echo missing; fi"#;
        script(
            &d.join("up.sh"),
            &format!(
                r#"n=$(ls -l /proc/$$/fd | grep -c /dev/net/tun)
echo "up $1 $# tunfds=$n $({present})" >> "$(dirname "$0")/$1.log""#
            ),
        );
        script(
            &d.join("down.sh"),
            &format!(r#"echo "down $1 $({present})" >> "$(dirname "$0")/$1.log""#),
        );
        script(&d.join("exit3.sh"), "exit 3");
        script(
            &d.join("down-exit2.sh"),
            r#"echo "down $1" >> "$(dirname "$0")/$1.log"; exit 2"#,
        );
        d
    })
}

/// What the scripts logged for `ifname` ("" if nothing).
pub fn script_log(ifname: &str) -> String {
    std::fs::read_to_string(scripts().join(format!("{ifname}.log"))).unwrap_or_default()
}

fn script(path: &std::path::Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    if std::path::Path::new("/usr/sbin/ip").exists() || std::path::Path::new("/sbin/ip").exists() {
        std::fs::write(
            path,
            format!("#!/bin/sh\nPATH=/usr/sbin:/usr/bin:/sbin:/bin\n{body}\n"),
        )
        .expect("write script");
    } else {
        panic!("the script tests need iproute2's `ip` (for `ip link show`)");
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}
