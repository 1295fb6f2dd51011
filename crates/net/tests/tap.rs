//! TAP queues on a real `/dev/net/tun`, each test in a fresh network
//! namespace (needs root). Expectations come from Linux's tun driver and
//! QEMU 7.2's net/tap.c, net/tap-linux.c, not from this crate.

mod host;

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, IntoRawFd};
use std::time::Duration;

use host::*;
use net::{open_tap, open_tap_with, NetQueue, Offloads, Tap, TapOptions};
use serde_json::{json, Value};

fn opts(v: Value) -> TapOptions {
    match v {
        Value::Object(m) => TapOptions::from_json(&m).expect("valid options"),
        _ => panic!("options must be an object"),
    }
}

fn open(v: Value) -> Vec<Tap> {
    open_tap(&opts(v)).unwrap_or_else(|e| panic!("open_tap: {e}"))
}

fn open_err(v: Value) -> String {
    match open_tap(&opts(v)) {
        Ok(t) => panic!("expected an error, got {t:?}"),
        Err(e) => e.to_string(),
    }
}

/// Receives the next frame of our EtherType at `hdr` bytes into it.
fn recv_ours(tap: &mut Tap, hdr: usize) -> (usize, Vec<u8>) {
    for _ in 0..50 {
        assert!(
            readable(tap.raw_fd(), Duration::from_secs(2)),
            "no frame reached the TAP queue"
        );
        let mut buf = vec![0xaau8; 2048];
        let n = match tap.recv(&mut [IoSliceMut::new(&mut buf)]) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => panic!("recv: {e}"),
        };
        buf.truncate(n);
        // Skip the kernel's own IPv6 chatter on the fresh link.
        if n >= hdr + 14 && buf[hdr + 12..hdr + 14] == ETHERTYPE.to_be_bytes() {
            return (n, buf);
        }
    }
    panic!("only foreign frames reached the TAP queue");
}

/// Whether interface `name` goes away within 2 s. The kernel unregisters
/// a TAP after the last close returns (`netdev_run_todo` can lag under
/// load), so its absence right after the close is not yet a verdict.
fn gone(name: &str) -> bool {
    (0..200).any(|_| {
        if ifindex(name).is_none() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
        false
    })
}

#[test]
fn open_by_name_creates_the_interface_and_close_removes_it() {
    in_netns(|| {
        let taps =
            open(json!({"id": "n0", "ifname": "named0", "script": "no", "downscript": "no"}));
        assert_eq!(taps.len(), 1);
        assert_eq!(taps[0].ifname(), "named0");
        assert!(ifindex("named0").is_some(), "interface named0 not created");
        // vnet_hdr default: used when the kernel has it (Linux has).
        assert!(taps[0].has_vnet_hdr());
        assert_eq!(taps[0].vnet_hdr_len(), 12);
        assert!(nonblocking(taps[0].raw_fd()));
        assert_eq!(taps[0].info_str(), "ifname=named0,script=no,downscript=no");
        drop(taps);
        assert!(gone("named0"), "a non-persistent TAP outlived its queue");
    });
}

#[test]
fn without_a_name_the_kernel_picks_tap_n() {
    in_netns(|| {
        let a = open(json!({"id": "n0", "script": "no", "downscript": "no"}));
        let b = open(json!({"id": "n1", "script": "no", "downscript": "no"}));
        // Fresh namespace: the kernel's "tap%d" starts at 0.
        assert_eq!(a[0].ifname(), "tap0");
        assert_eq!(b[0].ifname(), "tap1");
        assert!(ifindex("tap0").is_some() && ifindex("tap1").is_some());
    });
}

#[test]
fn multiqueue_gives_n_descriptors_on_one_interface() {
    in_netns(|| {
        let taps = open(json!({"id": "n0", "queues": "3", "script": "no", "downscript": "no"}));
        assert_eq!(taps.len(), 3);
        assert!(taps.iter().all(|t| t.ifname() == "tap0"));
        let fds: std::collections::BTreeSet<_> = taps.iter().map(|t| t.raw_fd()).collect();
        assert_eq!(fds.len(), 3, "queues share a descriptor");
        assert!(ifindex("tap0").is_some());
        assert!(
            ifindex("tap1").is_none(),
            "a queue became its own interface"
        );
        assert_eq!(taps[1].info_str(), "ifname=tap0,script=no,downscript=no");

        // Every queue carries traffic: the packet socket sees a frame from each.
        link_up("tap0");
        let ps = PacketSocket::bind("tap0");
        let mut taps = taps;
        for (i, tap) in taps.iter_mut().enumerate() {
            let f = frame(i as u8);
            tap.send(&[IoSlice::new(&[0; 12]), IoSlice::new(&f)])
                .unwrap();
            assert_eq!(ps.recv(), f, "queue {i}");
        }
    });
}

#[test]
fn a_detached_queue_carries_nothing_until_reattached() {
    in_netns(|| {
        let mut taps = open(
            json!({"id": "n0", "ifname": "dq0", "queues": 2, "script": "no", "downscript": "no"}),
        );
        // Detached before the link is up, so not even the kernel's own
        // IPv6 frames can have reached it.
        taps[1].set_queue_enabled(false).unwrap();
        link_up("dq0");
        let ps = PacketSocket::bind("dq0");
        let f = frame(7);
        let hdr = [0u8; 12];
        // With one queue attached, every host frame goes to it, none to
        // the detached one.
        for tag in 10..14u8 {
            ps.send(&frame(tag));
            let (_, buf) = recv_ours(&mut taps[0], 12);
            assert_eq!(buf[12 + 11], tag);
        }
        assert!(!readable(taps[1].raw_fd(), Duration::from_millis(100)));
        // Detaching twice is an error (the tun driver's EINVAL).
        assert!(taps[1].set_queue_enabled(false).is_err());
        taps[1].set_queue_enabled(true).unwrap();
        taps[1]
            .send(&[IoSlice::new(&hdr), IoSlice::new(&f)])
            .unwrap();
        assert_eq!(ps.recv(), f);
    });
}

#[test]
fn a_busy_name_or_a_queue_mismatch_fails_as_in_qemu() {
    in_netns(|| {
        let _a = open(json!({"id": "a", "ifname": "qq0", "script": "no", "downscript": "no"}));
        assert_eq!(
            open_err(json!({"id": "b", "ifname": "qq0", "script": "no", "downscript": "no"})),
            "could not configure /dev/net/tun (qq0): Device or resource busy"
        );
        assert_eq!(
            open_err(
                json!({"id": "c", "ifname": "qq0", "queues": 2, "script": "no", "downscript": "no"})
            ),
            "could not configure /dev/net/tun (qq0): Invalid argument"
        );
    });
}

#[test]
fn a_long_name_is_cut_to_ifnamsiz() {
    in_netns(|| {
        // QEMU pstrcpy()s into ifr_name[IFNAMSIZ]: 15 characters survive.
        let t = open(
            json!({"id": "n0", "ifname": "averyveryverylongname0123", "script": "no", "downscript": "no"}),
        );
        assert_eq!(t[0].ifname(), "averyveryverylo");
        assert!(ifindex("averyveryverylo").is_some());
    });
}

#[test]
fn sndbuf_defaults_to_int_max() {
    in_netns(|| {
        let t = open(json!({"id": "n0", "ifname": "sb0", "script": "no", "downscript": "no"}));
        assert_eq!(sndbuf(t[0].raw_fd()), i32::MAX);
        let t = open(
            json!({"id": "n1", "ifname": "sb1", "sndbuf": "64k", "script": "no", "downscript": "no"}),
        );
        assert_eq!(sndbuf(t[0].raw_fd()), 65536);
        let t = open(
            json!({"id": "n2", "ifname": "sb2", "sndbuf": "0", "script": "no", "downscript": "no"}),
        );
        assert_eq!(sndbuf(t[0].raw_fd()), i32::MAX);
    });
}

#[test]
fn a_sent_frame_leaves_the_host_side() {
    in_netns(|| {
        let mut t = open(json!({"id": "n0", "ifname": "tx0", "script": "no", "downscript": "no"}));
        link_up("tx0");
        let ps = PacketSocket::bind("tx0");
        let f = frame(1);
        let hdr = [0u8; 12];
        let n = t[0].send(&[IoSlice::new(&hdr), IoSlice::new(&f)]).unwrap();
        assert_eq!(n, 12 + f.len());
        assert_eq!(ps.recv(), f);
    });
}

#[test]
fn a_host_frame_arrives_with_a_12_byte_vnet_header_then_10() {
    in_netns(|| {
        let mut t = open(json!({"id": "n0", "ifname": "rx0", "script": "no", "downscript": "no"}));
        link_up("rx0");
        let ps = PacketSocket::bind("rx0");
        let f = frame(2);
        ps.send(&f);
        let (n, buf) = recv_ours(&mut t[0], 12);
        assert_eq!(n, 12 + f.len());
        // struct virtio_net_hdr of a plain frame: no flags, GSO_NONE, no lengths.
        assert_eq!(&buf[..10], &[0u8; 10]);
        assert_eq!(&buf[12..], &f[..]);

        assert!(t[0].set_vnet_hdr_len(10));
        assert_eq!(t[0].vnet_hdr_len(), 10);
        let f = frame(3);
        ps.send(&f);
        let (n, buf) = recv_ours(&mut t[0], 10);
        assert_eq!(n, 10 + f.len());
        assert_eq!(&buf[10..], &f[..]);
    });
}

#[test]
fn without_vnet_hdr_frames_are_bare_and_offloads_are_refused() {
    in_netns(|| {
        let mut t = open(
            json!({"id": "n0", "ifname": "bare0", "vnet_hdr": "off", "script": "no", "downscript": "no"}),
        );
        assert!(!t[0].has_vnet_hdr());
        assert_eq!(t[0].vnet_hdr_len(), 0);
        assert!(!t[0].set_vnet_hdr_len(12));
        link_up("bare0");
        let ps = PacketSocket::bind("bare0");
        let f = frame(4);
        ps.send(&f);
        let (n, buf) = recv_ours(&mut t[0], 0);
        assert_eq!(n, f.len());
        assert_eq!(buf, f);
        let f = frame(5);
        assert_eq!(t[0].send(&[IoSlice::new(&f)]).unwrap(), f.len());
        assert_eq!(ps.recv(), f);

        let csum = Offloads {
            csum: true,
            ..Offloads::default()
        };
        assert!(t[0].set_offloads(csum).is_err());
        assert!(t[0].set_offloads(Offloads::default()).is_ok());
    });
}

#[test]
fn offloads_reach_the_interface_features() {
    in_netns(|| {
        let mut t = open(json!({"id": "n0", "ifname": "ol0", "script": "no", "downscript": "no"}));
        // QEMU clears the offloads when it takes the TAP (net_tap_fd_init).
        assert_eq!(ethtool_get("ol0", ETHTOOL_GTSO), 0);
        assert_eq!(ethtool_get("ol0", ETHTOOL_GTXCSUM), 0);
        let o = Offloads {
            csum: true,
            tso4: true,
            ..Offloads::default()
        };
        t[0].set_offloads(o).unwrap();
        assert_eq!(ethtool_get("ol0", ETHTOOL_GTSO), 1);
        assert_eq!(ethtool_get("ol0", ETHTOOL_GTXCSUM), 1);
        // TSO without csum means nothing (tap_fd_set_offload).
        t[0].set_offloads(Offloads {
            tso4: true,
            ..Offloads::default()
        })
        .unwrap();
        assert_eq!(ethtool_get("ol0", ETHTOOL_GTSO), 0);
        assert_eq!(ethtool_get("ol0", ETHTOOL_GTXCSUM), 0);
    });
}

#[test]
fn fd_adopts_a_tap_opened_elsewhere() {
    in_netns(|| {
        let fd =
            raw_tap("ext0", libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR).into_raw_fd();
        let t = open(json!({"id": "n0", "fd": fd.to_string()}));
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].raw_fd(), fd);
        assert_eq!(t[0].ifname(), "ext0");
        assert!(t[0].has_vnet_hdr());
        assert_eq!(t[0].vnet_hdr_len(), 12);
        assert!(nonblocking(fd), "fd= left blocking");
        assert_eq!(t[0].info_str(), format!("fd={fd}"));
        // The same number again while the first Tap owns it.
        let e = open_err(json!({"id": "n1", "fd": fd.to_string()}));
        assert_eq!(
            e,
            format!("n1: Can't use file descriptor {fd}: Device or resource busy")
        );

        let fd = raw_tap("ext1", libc::IFF_TAP | libc::IFF_NO_PI).into_raw_fd();
        let t = open(json!({"id": "n2", "fd": fd.to_string()}));
        assert!(!t[0].has_vnet_hdr());
        assert_eq!(t[0].vnet_hdr_len(), 0);
    });
}

#[test]
fn fds_adopts_each_queue() {
    in_netns(|| {
        let flags = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR | libc::IFF_MULTI_QUEUE;
        let a = raw_tap("mq0", flags).into_raw_fd();
        let b = raw_tap("mq0", flags).into_raw_fd();
        let t = open(json!({"id": "n0", "fds": format!("{a}:{b}")}));
        assert_eq!(t.len(), 2);
        assert_eq!((t[0].raw_fd(), t[1].raw_fd()), (a, b));
        assert!(t.iter().all(|q| q.ifname() == "mq0" && q.has_vnet_hdr()));
    });
}

#[test]
fn fds_with_and_without_vnet_hdr_are_inconsistent() {
    in_netns(|| {
        let a = raw_tap("vh0", libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR).into_raw_fd();
        let b = raw_tap("vh1", libc::IFF_TAP | libc::IFF_NO_PI);
        assert_eq!(
            open_err(json!({"id": "n0", "fds": format!("{a}:{}", b.as_raw_fd())})),
            "vnet_hdr not consistent across given tap fds"
        );
    });
}

#[test]
fn fd_errors_are_qemus() {
    in_netns(|| {
        let (r, _w) = std::io::pipe().expect("pipe");
        let fd = r.as_raw_fd();
        assert_eq!(
            open_err(json!({"id": "n0", "fd": fd.to_string()})),
            format!("Unable to query TUNGETIFF on FD {fd}: Inappropriate ioctl for device")
        );
        // Far above any descriptor this process has open.
        assert_eq!(
            open_err(json!({"id": "n0", "fd": "1000000"})),
            "n0: Can't use file descriptor 1000000: Bad file descriptor"
        );
        assert_eq!(
            open_err(json!({"id": "n0", "fd": "abc"})),
            "Invalid file descriptor number 'abc'"
        );
        // get_fds keeps the empty piece between two colons.
        let a = raw_tap("emp0", libc::IFF_TAP | libc::IFF_NO_PI).into_raw_fd();
        assert_eq!(
            open_err(json!({"id": "n0", "fds": format!("{a}::{a}")})),
            "Invalid file descriptor number ''"
        );
    });
}

#[test]
fn named_fds_come_from_the_monitor() {
    in_netns(|| {
        let mut tapfd = Some(raw_tap("named1", libc::IFF_TAP | libc::IFF_NO_PI));
        let mut lookup = |name: &str| match (name, tapfd.take()) {
            ("tapfd", Some(fd)) => Ok(fd),
            _ => Err(format!("File descriptor named '{name}' has not been found")),
        };
        let t =
            open_tap_with(&opts(json!({"id": "n0", "fd": "tapfd"})), Some(&mut lookup)).unwrap();
        assert_eq!(t[0].ifname(), "named1");
        let e = open_tap_with(&opts(json!({"id": "n0", "fd": "other"})), Some(&mut lookup))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "File descriptor named 'other' has not been found"
        );
    });
}

#[test]
fn script_runs_once_with_the_name_and_downscript_on_close() {
    let dir = scripts();
    in_netns(move || {
        let up = dir.join("up.sh");
        let down = dir.join("down.sh");
        let mut taps = open(json!({"id": "n0", "ifname": "sc0", "queues": 2,
                                   "script": up.to_str(), "downscript": down.to_str()}));
        // QEMU: one argument, the interface exists, the TAP fd is inherited;
        // only queue 0 runs it.
        assert_eq!(script_log("sc0"), "up sc0 1 tunfds=1 present\n");
        assert_eq!(
            taps[0].info_str(),
            format!(
                "ifname=sc0,script={},downscript={}",
                up.display(),
                down.display()
            )
        );
        let q1 = taps.pop();
        drop(q1);
        assert_eq!(
            script_log("sc0"),
            "up sc0 1 tunfds=1 present\n",
            "queue 1 ran a script"
        );
        drop(taps);
        // tap_cleanup runs the downscript before closing the descriptor.
        assert_eq!(
            script_log("sc0"),
            "up sc0 1 tunfds=1 present\ndown sc0 present\n"
        );
    });
}

#[test]
fn a_failing_script_fails_the_open_with_the_raw_wait_status() {
    let dir = scripts();
    in_netns(move || {
        let s = dir.join("exit3.sh");
        // exit 3 is wait status 3 << 8; QEMU prints the raw status.
        assert_eq!(
            open_err(
                json!({"id": "n0", "ifname": "sf0", "script": s.to_str(), "downscript": "no"})
            ),
            format!("network script {} failed with status 768", s.display())
        );
        assert!(gone("sf0"), "the TAP outlived its failed script");
        // A script that cannot be executed: the child's _exit(1), status 256.
        assert_eq!(
            open_err(json!({"id": "n0", "ifname": "sf1", "script": "/nonexistent/ifup"})),
            "network script /nonexistent/ifup failed with status 256"
        );
    });
}

#[test]
fn close_reports_a_failing_downscript() {
    let dir = scripts();
    in_netns(move || {
        let s = dir.join("down-exit2.sh");
        let mut taps =
            open(json!({"id": "n0", "ifname": "df0", "script": "no", "downscript": s.to_str()}));
        assert_eq!(taps[0].downscript(), s.to_str());
        let q0 = taps.remove(0);
        let e = q0.close().unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("network script {} failed with status 512", s.display())
        );
        assert_eq!(script_log("df0"), "down df0\n");
    });
}
