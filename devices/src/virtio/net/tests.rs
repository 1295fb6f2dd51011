//! virtio-net against guest memory in a plain buffer, split rings built by
//! hand (virtio 1.2 §2.7) and a backend on a Unix datagram socketpair (the
//! test holds the host end). Expected values come from the spec and QEMU
//! 7.2's hw/net/virtio-net.c.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use ::net::{NetQueue, Offloads};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::ctrl::*;
use super::*;
use crate::virtio::test_support::*;
use crate::virtio::VirtioDevice;

const MIB: u64 = 1 << 20;
const QSIZE: u16 = 16;
/// Queue `q`'s rings; buffers from DATA on.
fn ring_base(q: u16) -> u64 {
    0x1_0000 * (u64::from(q) + 1)
}
const DATA: u64 = 0x8_0000;
/// Guest RAM ends at 2 MiB.
const RAM_END: u64 = 2 * MIB;

// Feature bits (virtio 1.2 §5.1.3).
const F_CSUM: u64 = 1 << 0;
const F_GUEST_CSUM: u64 = 1 << 1;
const F_CTRL_GUEST_OFFLOADS: u64 = 1 << 2;
const F_MTU: u64 = 1 << 3;
const F_MAC: u64 = 1 << 5;
const F_GSO: u64 = 1 << 6;
const F_GUEST_TSO4: u64 = 1 << 7;
const F_GUEST_TSO6: u64 = 1 << 8;
const F_GUEST_ECN: u64 = 1 << 9;
const F_GUEST_UFO: u64 = 1 << 10;
const F_HOST_TSO4: u64 = 1 << 11;
const F_HOST_TSO6: u64 = 1 << 12;
const F_HOST_ECN: u64 = 1 << 13;
const F_HOST_UFO: u64 = 1 << 14;
const F_MRG_RXBUF: u64 = 1 << 15;
const F_STATUS: u64 = 1 << 16;
const F_CTRL_VQ: u64 = 1 << 17;
const F_CTRL_RX: u64 = 1 << 18;
const F_CTRL_VLAN: u64 = 1 << 19;
const F_CTRL_RX_EXTRA: u64 = 1 << 20;
const F_GUEST_ANNOUNCE: u64 = 1 << 21;
const F_MQ: u64 = 1 << 22;
const F_CTRL_MAC_ADDR: u64 = 1 << 23;

const OUR_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const OTHER_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc];

// ---- the fake backend ---------------------------------------------------

/// What the test sees of the backend's state.
#[derive(Default)]
struct BackendLog {
    hdr_len: AtomicUsize,
    /// `set_vnet_hdr_len` succeeds (a TAP with IFF_VNET_HDR).
    can_set_hdr: AtomicBool,
    /// `set_offloads` fails when UFO is asked (a kernel without it).
    no_ufo: AtomicBool,
    block_send: AtomicBool,
    offloads: Mutex<Vec<Offloads>>,
}

/// One end of a SOCK_SEQPACKET socketpair (frame boundaries kept, no
/// datagram queue limit), non-blocking.
struct Seq(OwnedFd);

impl Seq {
    fn pair() -> (Seq, Seq) {
        let mut fds = [0; 2];
        // SAFETY: a plain syscall writing two descriptors into `fds`.
        let r = unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_SEQPACKET | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            )
        };
        assert_eq!(r, 0, "socketpair");
        // SAFETY: fresh descriptors we own.
        unsafe {
            (
                Seq(OwnedFd::from_raw_fd(fds[0])),
                Seq(OwnedFd::from_raw_fd(fds[1])),
            )
        }
    }
    fn send(&self, b: &[u8]) -> io::Result<usize> {
        // SAFETY: `b` is valid for its length.
        let n = unsafe { libc::send(self.0.as_raw_fd(), b.as_ptr().cast(), b.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
    fn recv(&self, b: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `b` is valid for writes of its length.
        let n = unsafe { libc::recv(self.0.as_raw_fd(), b.as_mut_ptr().cast(), b.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

struct FakeQueue {
    sock: Seq,
    log: Arc<BackendLog>,
}

impl NetQueue for FakeQueue {
    fn recv(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        self.sock.recv(&mut bufs[0])
    }
    fn send(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        if self.log.block_send.load(Ordering::SeqCst) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let v: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
        self.sock.send(&v)
    }
    fn vnet_hdr_len(&self) -> usize {
        self.log.hdr_len.load(Ordering::SeqCst)
    }
    fn set_vnet_hdr_len(&mut self, len: usize) -> bool {
        if !self.log.can_set_hdr.load(Ordering::SeqCst) {
            return false;
        }
        self.log.hdr_len.store(len, Ordering::SeqCst);
        true
    }
    fn set_offloads(&mut self, o: Offloads) -> io::Result<()> {
        if o.ufo && self.log.no_ufo.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        self.log.offloads.lock().unwrap().push(o);
        Ok(())
    }
    fn raw_fd(&self) -> RawFd {
        self.sock.0.as_raw_fd()
    }
}

/// A backend queue and the test's end of it.
fn backend(hdr_len: usize) -> (Box<dyn NetQueue>, Seq, Arc<BackendLog>) {
    let (a, b) = Seq::pair();
    let log = Arc::new(BackendLog::default());
    log.hdr_len.store(hdr_len, Ordering::SeqCst);
    log.can_set_hdr.store(hdr_len > 0, Ordering::SeqCst);
    (
        Box::new(FakeQueue {
            sock: a,
            log: log.clone(),
        }),
        b,
        log,
    )
}

// ---- interrupts and rings -----------------------------------------------

/// Queue `q`'s ring of `size` entries, its used ring 32 KiB in.
fn net_ring(q: u16, size: u16) -> Ring {
    Ring::new(ring_base(q), size).with_used_offset(0x8000)
}

// ---- the rig ------------------------------------------------------------

struct Rig {
    mem: GuestMemoryMmap,
    dev: VirtioNet,
    irq: Arc<Irq>,
    rings: Vec<Ring>,
    hosts: Vec<Seq>,
    logs: Vec<Arc<BackendLog>>,
    filter_events: Arc<AtomicUsize>,
    /// Bump allocator for guest buffers.
    next_buf: u64,
}

impl Rig {
    fn with(opts: NetOptions, pairs: usize, hdr_len: usize) -> Self {
        let mut queues = Vec::new();
        let (mut hosts, mut logs) = (Vec::new(), Vec::new());
        for _ in 0..pairs {
            let (q, h, l) = backend(hdr_len);
            queues.push(q);
            hosts.push(h);
            logs.push(l);
        }
        let filter_events = Arc::new(AtomicUsize::new(0));
        let fe = filter_events.clone();
        let dev = VirtioNet::new(
            opts,
            queues,
            Arc::new(move || {
                fe.fetch_add(1, Ordering::SeqCst);
            }),
        )
        .unwrap();
        let mem = guest_ram(&[(0, MIB), (MIB, MIB)]);
        Self {
            mem,
            dev,
            irq: Arc::default(),
            rings: Vec::new(),
            hosts,
            logs,
            filter_events,
            next_buf: DATA,
        }
    }
    fn new() -> Self {
        Self::with(NetOptions::default(), 1, 0)
    }
    /// Driver side: accept `features`, enable every queue, DRIVER_OK.
    fn activate(&mut self, features: u64) {
        let sizes = self.dev.queue_max_sizes().to_vec();
        self.rings = (0..sizes.len() as u16)
            .map(|q| net_ring(q, QSIZE.min(sizes[usize::from(q)])))
            .collect();
        let queues = active_queues(&self.rings);
        self.dev
            .activate(self.mem.clone(), features, queues, self.irq.clone())
            .unwrap();
    }
    fn started() -> Self {
        let mut r = Self::new();
        let f = r.dev.device_features();
        r.activate(f);
        r
    }
    fn buf(&mut self, len: u32) -> u64 {
        let a = self.next_buf;
        self.next_buf += u64::from(len).next_multiple_of(64);
        assert!(self.next_buf < RAM_END);
        a
    }
    fn ctrl_q(&self) -> u16 {
        (self.rings.len() - 1) as u16
    }
    /// Sends a control command; its ack.
    fn ctrl(&mut self, class: u8, cmd: u8, data: &[u8]) -> u8 {
        let mut out = vec![class, cmd];
        out.extend_from_slice(data);
        let o = self.buf(out.len() as u32);
        self.mem.write_slice(&out, GuestAddress(o)).unwrap();
        let ack = self.buf(1);
        self.mem.write_obj(0xeeu8, GuestAddress(ack)).unwrap();
        let q = self.ctrl_q();
        self.rings[usize::from(q)]
            .add_chain(&self.mem, &[(o, out.len() as u32, false), (ack, 1, true)]);
        self.dev.queue_notify(q);
        self.mem.read_obj(GuestAddress(ack)).unwrap()
    }
    fn promisc(&mut self, on: bool) {
        assert_eq!(self.ctrl(CLASS_RX, RX_PROMISC, &[u8::from(on)]), OK);
    }
    /// The driver posts a receive chain of one buffer of `len` bytes.
    fn post_rx(&mut self, pair: usize, len: u32) -> u64 {
        let a = self.buf(len);
        self.mem
            .write_slice(&vec![0xaa; len as usize], GuestAddress(a))
            .unwrap();
        self.rings[pair * 2].add_chain(&self.mem, &[(a, len, true)]);
        a
    }
    /// The host sends `frame` to the guest and the backend thread serves
    /// the fd.
    fn host_send(&mut self, pair: usize, frame: &[u8]) {
        self.hosts[pair].send(frame).unwrap();
        self.dev.handle_event((pair as u32) << 1);
    }
    /// Frames the backend sent to the host.
    fn host_recv(&self, pair: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut b = vec![0u8; 70000];
        while let Ok(n) = self.hosts[pair].recv(&mut b) {
            out.push(b[..n].to_vec());
        }
        out
    }
    /// The driver transmits one chain of `descs` on pair `pair`.
    fn tx_chain(&mut self, pair: usize, descs: &[(u64, u32, bool)]) {
        self.rings[pair * 2 + 1].add_chain(&self.mem, descs);
        self.dev.queue_notify((pair * 2 + 1) as u16);
    }
    /// The driver transmits `frame` after a zero header, in one buffer.
    fn tx(&mut self, pair: usize, frame: &[u8]) {
        let mut b = vec![0u8; GUEST_HDR_LEN];
        b.extend_from_slice(frame);
        let a = self.buf(b.len() as u32);
        self.mem.write_slice(&b, GuestAddress(a)).unwrap();
        self.tx_chain(pair, &[(a, b.len() as u32, false)]);
    }
    fn read(&self, at: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        self.mem.read_slice(&mut v, GuestAddress(at)).unwrap();
        v
    }
    fn config(&self, off: u64, len: usize) -> u64 {
        let mut b = [0u8; 8];
        self.dev.read_config(off, &mut b[..len]);
        u64::from_le_bytes(b)
    }
    fn config_irqs(&self) -> usize {
        self.irq.config.load(Ordering::SeqCst)
    }
}

/// An Ethernet frame to `dst` of `len` bytes in all (payload bytes count up).
fn eth(dst: [u8; 6], len: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(len);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&OTHER_MAC);
    f.extend_from_slice(&[0x08, 0x00]);
    while f.len() < len {
        f.push(f.len() as u8);
    }
    f
}

/// A frame tagged with 802.1Q VLAN `vid`.
fn vlan_eth(dst: [u8; 6], vid: u16) -> Vec<u8> {
    let mut f = eth(dst, 64);
    f[12] = 0x81;
    f[13] = 0x00;
    f[14..16].copy_from_slice(&vid.to_be_bytes());
    f
}

fn mac_table(uni: &[[u8; 6]], multi: &[[u8; 6]]) -> Vec<u8> {
    let mut d = (uni.len() as u32).to_le_bytes().to_vec();
    uni.iter().for_each(|m| d.extend_from_slice(m));
    d.extend_from_slice(&(multi.len() as u32).to_le_bytes());
    multi.iter().for_each(|m| d.extend_from_slice(m));
    d
}

// ---- options, features, configuration space ----------------------------

#[test]
fn default_features_without_a_vnet_header_backend_are_qemus() {
    let r = Rig::new();
    // QEMU 7.2 with `-netdev user` (x-query-virtio-status host-features):
    // no checksum/segmentation offloads, MAC added, the rest as the props.
    assert_eq!(
        r.dev.device_features(),
        F_MAC
            | F_GSO
            | F_MRG_RXBUF
            | F_STATUS
            | F_CTRL_VQ
            | F_CTRL_RX
            | F_CTRL_VLAN
            | F_CTRL_RX_EXTRA
            | F_GUEST_ANNOUNCE
            | F_CTRL_MAC_ADDR
            | F_CTRL_GUEST_OFFLOADS
            | F_INDIRECT
            | F_EVENT_IDX
    );
    assert_eq!(r.dev.device_type(), 1);
    // rx, tx, ctrl (QEMU has the control queue even with ctrl_vq=off).
    assert_eq!(r.dev.queue_max_sizes(), &[256, 256, 64]);
}

#[test]
fn a_vnet_header_backend_gets_the_offloads_and_ufo_only_if_it_takes_it() {
    let (q, _h, _l) = backend(10);
    let dev = VirtioNet::new(NetOptions::default(), vec![q], Arc::new(|| {})).unwrap();
    let offloads = F_CSUM
        | F_GUEST_CSUM
        | F_GUEST_TSO4
        | F_GUEST_TSO6
        | F_GUEST_ECN
        | F_HOST_TSO4
        | F_HOST_TSO6
        | F_HOST_ECN;
    let f = dev.device_features();
    assert_eq!(f & offloads, offloads);
    assert_eq!(f & (F_GUEST_UFO | F_HOST_UFO), F_GUEST_UFO | F_HOST_UFO);

    let (q, _h, l) = backend(10);
    l.no_ufo.store(true, Ordering::SeqCst);
    let dev = VirtioNet::new(NetOptions::default(), vec![q], Arc::new(|| {})).unwrap();
    assert_eq!(dev.device_features() & offloads, offloads);
    assert_eq!(dev.device_features() & (F_GUEST_UFO | F_HOST_UFO), 0);
    // The probe leaves the backend without offloads (net_tap_fd_init).
    assert_eq!(
        l.offloads.lock().unwrap().last(),
        Some(&Offloads::default())
    );
}

#[test]
fn feature_properties_switch_their_bits() {
    let o = NetOptions {
        mrg_rxbuf: false,
        ctrl_vq: false,
        mq: true,
        host_mtu: Some(9000),
        ..NetOptions::default()
    };
    let r = Rig::with(o, 2, 0);
    let f = r.dev.device_features();
    assert_eq!(f & (F_MRG_RXBUF | F_CTRL_VQ), 0);
    assert_ne!(f & F_MQ, 0);
    assert_ne!(f & F_MTU, 0);
    assert_eq!(r.dev.queue_max_sizes(), &[256, 256, 256, 256, 64]);
}

#[test]
fn default_config_space_is_qemus() {
    let r = Rig::new();
    let mac: Vec<u8> = (0..6).map(|i| r.config(i, 1) as u8).collect();
    assert_eq!(mac, OUR_MAC);
    assert_eq!(r.config(6, 2), 1, "status: LINK_UP");
    // mac + status: 8 bytes; further reads are all ones.
    assert_eq!(r.dev.config_size(), 8);
    assert_eq!(r.config(8, 2), 0xffff);
    assert_eq!(r.config(7, 2), 0xffff, "straddles the end");
}

#[test]
fn mq_and_mtu_grow_the_config_space() {
    let o = NetOptions {
        mq: true,
        host_mtu: Some(9000),
        ..NetOptions::default()
    };
    let r = Rig::with(o, 3, 0);
    assert_eq!(r.dev.config_size(), 12);
    assert_eq!(r.config(8, 2), 3, "max_virtqueue_pairs");
    assert_eq!(r.config(10, 2), 9000, "mtu");
    // host_mtu=0 is unset in QEMU: no MTU feature, no mtu field.
    let r = Rig::with(
        NetOptions {
            host_mtu: Some(0),
            ..NetOptions::default()
        },
        1,
        0,
    );
    assert_eq!(r.dev.device_features() & F_MTU, 0);
    assert_eq!(r.dev.config_size(), 8);
}

#[test]
fn tx_queue_size_is_capped_at_the_taps_256() {
    let o = NetOptions {
        rx_queue_size: 1024,
        tx_queue_size: 1024,
        ..NetOptions::default()
    };
    let r = Rig::with(o, 1, 0);
    assert_eq!(r.dev.queue_max_sizes(), &[1024, 256, 64]);
}

#[test]
fn option_errors_have_qemus_text() {
    let err = |o: NetOptions, n: usize| {
        let qs = (0..n).map(|_| backend(0).0).collect();
        VirtioNet::new(o, qs, Arc::new(|| {}))
            .err()
            .unwrap()
            .to_string()
    };
    // Checked against qemu-system-x86_64 7.2 -device virtio-net-pci.
    assert_eq!(
        err(
            NetOptions {
                rx_queue_size: 128,
                ..NetOptions::default()
            },
            1
        ),
        "Invalid rx_queue_size (= 128), must be a power of 2 between 256 and 1024."
    );
    assert_eq!(
        err(
            NetOptions {
                tx_queue_size: 1000,
                ..NetOptions::default()
            },
            1
        ),
        "Invalid tx_queue_size (= 1000), must be a power of 2 between 256 and 1024"
    );
    assert_eq!(
        err(NetOptions::default(), 512),
        "Invalid number of queue pairs (= 512), must be a positive integer less than 511."
    );
}

#[test]
fn default_macs_are_allocated_like_qemus() {
    let mut a = MacAllocator::new();
    assert_eq!(a.default_if_unset(None).to_string(), "52:54:00:12:34:56");
    assert_eq!(a.default_if_unset(None).to_string(), "52:54:00:12:34:57");
    // An explicit address in QEMU's range takes its slot.
    let m: MacAddr = "52:54:00:12:34:58".parse().unwrap();
    assert_eq!(a.default_if_unset(Some(m)), m);
    assert_eq!(a.default_if_unset(None).to_string(), "52:54:00:12:34:59");
    // Elsewhere it is just kept.
    let other: MacAddr = "02-00-00-00-00-01".parse().unwrap();
    assert_eq!(a.default_if_unset(Some(other)), other);
    a.release("52:54:00:12:34:56".parse().unwrap());
    assert_eq!(a.default_if_unset(None).to_string(), "52:54:00:12:34:56");
    assert!("52:54:00:12:34".parse::<MacAddr>().is_err());
    assert!("52:54:00:12:34:5g".parse::<MacAddr>().is_err());
    assert!("52:54:00:12:34:567".parse::<MacAddr>().is_err());
}

// ---- transmit -------------------------------------------------------------

#[test]
fn a_tx_frame_reaches_the_backend_without_the_header() {
    let mut r = Rig::started();
    let frame = eth(OTHER_MAC, 60);
    // Header and frame split over three descriptors.
    let h = r.buf(12);
    let d1 = r.buf(20);
    let d2 = r.buf(40);
    r.mem.write_slice(&[0u8; 12], GuestAddress(h)).unwrap();
    r.mem.write_slice(&frame[..20], GuestAddress(d1)).unwrap();
    r.mem.write_slice(&frame[20..], GuestAddress(d2)).unwrap();
    r.tx_chain(0, &[(h, 12, false), (d1, 20, false), (d2, 40, false)]);
    assert_eq!(r.host_recv(0), vec![frame]);
    // Completed with length 0, and the driver interrupted.
    assert_eq!(r.rings[1].used_idx(&r.mem), 1);
    assert_eq!(r.rings[1].used(&r.mem, 0), (0, 0));
    assert_eq!(*r.irq.queues.lock().unwrap(), vec![1]);
}

#[test]
fn a_vnet_header_backend_gets_the_guests_header_as_is() {
    let mut r = Rig::with(NetOptions::default(), 1, 10);
    let f = r.dev.device_features();
    r.activate(f);
    // The backend switched to the guest's 12-byte header.
    assert_eq!(r.logs[0].hdr_len.load(Ordering::SeqCst), 12);
    let mut b = vec![1, 0, 0, 0, 0, 0, 34, 0, 16, 0, 0, 0];
    b.extend(eth(OTHER_MAC, 60));
    let a = r.buf(b.len() as u32);
    r.mem.write_slice(&b, GuestAddress(a)).unwrap();
    r.tx_chain(0, &[(a, b.len() as u32, false)]);
    assert_eq!(r.host_recv(0), vec![b]);
}

#[test]
fn a_backend_stuck_at_10_header_bytes_gets_the_first_10() {
    let mut r = Rig::with(NetOptions::default(), 1, 10);
    r.logs[0].can_set_hdr.store(false, Ordering::SeqCst);
    let f = r.dev.device_features();
    r.activate(f);
    let mut b = vec![1, 0, 0, 0, 0, 0, 34, 0, 16, 0, 0x77, 0x77];
    b.extend(eth(OTHER_MAC, 60));
    let a = r.buf(b.len() as u32);
    r.mem.write_slice(&b, GuestAddress(a)).unwrap();
    r.tx_chain(0, &[(a, b.len() as u32, false)]);
    let mut want = b[..10].to_vec();
    want.extend_from_slice(&b[12..]);
    assert_eq!(r.host_recv(0), vec![want]);
}

#[test]
fn writable_descriptors_after_the_frame_are_ignored_on_tx() {
    let mut r = Rig::started();
    let frame = eth(OTHER_MAC, 60);
    let mut b = vec![0u8; 12];
    b.extend_from_slice(&frame);
    let a = r.buf(b.len() as u32);
    r.mem.write_slice(&b, GuestAddress(a)).unwrap();
    let w = r.buf(64);
    r.tx_chain(0, &[(a, b.len() as u32, false), (w, 64, true)]);
    assert_eq!(r.host_recv(0), vec![frame]);
    assert!(!r.dev.needs_reset());
}

#[test]
fn a_frame_larger_than_net_bufsize_is_dropped_silently() {
    let mut r = Rig::started();
    let len = (12 + NET_BUFSIZE + 1) as u32;
    let a = r.buf(len);
    r.tx_chain(0, &[(a, len, false)]);
    assert!(r.host_recv(0).is_empty());
    assert_eq!(r.rings[1].used_idx(&r.mem), 1);
    assert!(!r.dev.needs_reset());
}

#[test]
fn a_header_only_tx_chain_without_a_vnet_backend_needs_reset() {
    let mut r = Rig::started();
    let a = r.buf(12);
    r.tx_chain(0, &[(a, 12, false)]);
    // QEMU: "virtio-net nothing to send".
    assert!(r.dev.needs_reset());
    assert_eq!(r.config_irqs(), 1);
}

#[test]
fn a_short_header_with_a_vnet_backend_needs_reset() {
    let mut r = Rig::with(NetOptions::default(), 1, 12);
    let f = r.dev.device_features();
    r.activate(f);
    let a = r.buf(8);
    r.tx_chain(0, &[(a, 8, false)]);
    // QEMU: "virtio-net header incorrect".
    assert!(r.dev.needs_reset());
}

#[test]
fn a_writable_only_tx_chain_needs_reset_and_stops_the_device() {
    let mut r = Rig::started();
    let a = r.buf(64);
    r.tx_chain(0, &[(a, 64, true)]);
    assert!(r.dev.needs_reset());
    assert_eq!(r.config_irqs(), 1);
    // Nothing more is processed until reset.
    r.tx(0, &eth(OTHER_MAC, 60));
    assert!(r.host_recv(0).is_empty());
    r.dev.reset();
    assert!(!r.dev.needs_reset());
}

#[test]
fn a_tx_descriptor_outside_ram_needs_reset() {
    let mut r = Rig::started();
    r.tx_chain(0, &[(RAM_END - 16, 64, false)]);
    assert!(r.dev.needs_reset());
    assert!(r.host_recv(0).is_empty());
    assert_eq!(r.rings[1].used_idx(&r.mem), 0);
}

#[test]
fn a_descriptor_index_past_the_table_needs_reset() {
    let mut r = Rig::started();
    // A head index past the queue size, straight into the avail ring.
    let ring = &r.rings[1];
    let slot = ring.avail_addr() + 4;
    r.mem.write_obj(200u16, GuestAddress(slot)).unwrap();
    r.mem
        .write_obj(1u16, GuestAddress(ring.avail_addr() + 2))
        .unwrap();
    r.dev.queue_notify(1);
    assert!(r.dev.needs_reset());
}

#[test]
fn would_block_keeps_the_chain_for_the_next_kick() {
    let mut r = Rig::started();
    r.logs[0].block_send.store(true, Ordering::SeqCst);
    let frame = eth(OTHER_MAC, 60);
    r.tx(0, &frame);
    assert!(r.host_recv(0).is_empty());
    assert_eq!(r.rings[1].used_idx(&r.mem), 0, "not completed");
    r.logs[0].block_send.store(false, Ordering::SeqCst);
    let second = eth(OTHER_MAC, 70);
    r.tx(0, &second);
    // The parked frame goes first.
    assert_eq!(r.host_recv(0), vec![frame, second]);
    assert_eq!(r.rings[1].used_idx(&r.mem), 2);
}

// ---- receive --------------------------------------------------------------

#[test]
fn an_rx_frame_lands_after_a_header_without_mergeable_buffers() {
    let mut r = Rig::new();
    let f = r.dev.device_features() & !F_MRG_RXBUF;
    r.activate(f);
    let b = r.post_rx(0, 1526);
    let frame = eth(OUR_MAC, 100);
    r.host_send(0, &frame);
    assert_eq!(r.rings[0].used_idx(&r.mem), 1);
    assert_eq!(r.rings[0].used(&r.mem, 0), (0, 112));
    // Zero header (GSO_NONE), num_buffers 1, then the frame.
    let mut want = vec![0u8; 10];
    want.extend_from_slice(&1u16.to_le_bytes());
    want.extend_from_slice(&frame);
    assert_eq!(r.read(b, 112), want);
    assert_eq!(r.read(b + 112, 1), [0xaa], "nothing written past the frame");
    assert_eq!(*r.irq.queues.lock().unwrap(), vec![0]);
}

#[test]
fn an_rx_frame_spreads_over_merged_buffers_with_num_buffers() {
    let mut r = Rig::started();
    let bufs: Vec<u64> = (0..4).map(|_| r.post_rx(0, 64)).collect();
    let frame = eth(OUR_MAC, 150);
    r.host_send(0, &frame);
    // 12 + 150 = 162 bytes: 64 + 64 + 34, three buffers.
    assert_eq!(r.rings[0].used_idx(&r.mem), 3);
    assert_eq!(r.rings[0].used(&r.mem, 0), (0, 64));
    assert_eq!(r.rings[0].used(&r.mem, 1), (1, 64));
    assert_eq!(r.rings[0].used(&r.mem, 2), (2, 34));
    let hdr = r.read(bufs[0], 12);
    assert_eq!(u16::from_le_bytes([hdr[10], hdr[11]]), 3, "num_buffers");
    let mut got = r.read(bufs[0] + 12, 52);
    got.extend(r.read(bufs[1], 64));
    got.extend(r.read(bufs[2], 34));
    assert_eq!(got, frame);
    // The fourth buffer is untouched and still available.
    assert_eq!(r.read(bufs[3], 4), [0xaa; 4]);
    let next = eth(OUR_MAC, 20);
    r.host_send(0, &next);
    assert_eq!(r.rings[0].used(&r.mem, 3), (3, 32));
}

#[test]
fn a_vnet_header_from_the_backend_reaches_the_guest() {
    let mut r = Rig::with(NetOptions::default(), 1, 12);
    let f = r.dev.device_features();
    r.activate(f);
    let b = r.post_rx(0, 1526);
    let hdr = [2u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x99, 0x99];
    let mut msg = hdr.to_vec();
    let frame = eth(OUR_MAC, 60);
    msg.extend_from_slice(&frame);
    r.host_send(0, &msg);
    assert_eq!(r.rings[0].used(&r.mem, 0), (0, 72));
    // DATA_VALID kept; num_buffers is the device's (1), not the backend's.
    let mut want = hdr[..10].to_vec();
    want.extend_from_slice(&1u16.to_le_bytes());
    want.extend_from_slice(&frame);
    assert_eq!(r.read(b, 72), want);
}

#[test]
fn a_too_small_chain_drops_the_frame_and_stays_for_the_next() {
    let mut r = Rig::new();
    let f = r.dev.device_features() & !F_MRG_RXBUF;
    r.activate(f);
    let b = r.post_rx(0, 64);
    r.host_send(0, &eth(OUR_MAC, 100));
    assert_eq!(r.rings[0].used_idx(&r.mem), 0, "dropped, chain kept");
    let small = eth(OUR_MAC, 40);
    r.host_send(0, &small);
    assert_eq!(r.rings[0].used(&r.mem, 0), (0, 52));
    assert_eq!(r.read(b + 12, 40), small);
}

#[test]
fn frames_wait_in_the_backend_until_the_guest_posts_buffers() {
    let mut r = Rig::started();
    let a = eth(OUR_MAC, 60);
    let b = eth(OUR_MAC, 61);
    r.hosts[0].send(&a).unwrap();
    r.hosts[0].send(&b).unwrap();
    r.dev.handle_event(0);
    assert_eq!(r.rings[0].used_idx(&r.mem), 0);
    // The driver adds buffers and kicks the receive queue.
    let b1 = r.post_rx(0, 1526);
    let b2 = r.post_rx(0, 1526);
    r.dev.queue_notify(0);
    assert_eq!(r.rings[0].used_idx(&r.mem), 2);
    assert_eq!(r.read(b1 + 12, 60), a);
    assert_eq!(r.read(b2 + 12, 61), b);
}

#[test]
fn a_receive_burst_yields_and_continues_on_its_eventfd() {
    let mut r = Rig::with(
        NetOptions {
            rx_queue_size: 256,
            ..NetOptions::default()
        },
        1,
        0,
    );
    let f = r.dev.device_features();
    // A 64-entry receive ring.
    r.rings = (0..3)
        .map(|q| net_ring(q, if q == 0 { 64 } else { QSIZE }))
        .collect();
    let queues = active_queues(&r.rings);
    r.dev
        .activate(r.mem.clone(), f, queues, r.irq.clone())
        .unwrap();
    for _ in 0..60 {
        r.post_rx(0, 256);
    }
    for i in 0..60 {
        r.hosts[0].send(&eth(OUR_MAC, 60 + i)).unwrap();
    }
    r.dev.handle_event(0);
    assert_eq!(r.rings[0].used_idx(&r.mem), RX_BURST as u16);
    // The pair's reschedule eventfd is readable and serving it goes on.
    let resched = r
        .dev
        .event_sources()
        .iter()
        .find(|s| s.tag == 1)
        .unwrap()
        .fd;
    let mut p = libc::pollfd {
        fd: resched,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd on the stack.
    assert_eq!(unsafe { libc::poll(&mut p, 1, 0) }, 1);
    r.dev.handle_event(1);
    assert_eq!(r.rings[0].used_idx(&r.mem), 60);
}

#[test]
fn an_rx_chain_without_writable_buffers_needs_reset() {
    let mut r = Rig::new();
    let f = r.dev.device_features() & !F_MRG_RXBUF;
    r.activate(f);
    let a = r.buf(1526);
    r.rings[0].add_chain(&r.mem, &[(a, 1526, false)]);
    r.host_send(0, &eth(OUR_MAC, 60));
    assert!(r.dev.needs_reset());
    assert_eq!(r.config_irqs(), 1);
}

#[test]
fn an_rx_buffer_outside_ram_needs_reset() {
    let mut r = Rig::started();
    r.rings[0].add_chain(&r.mem, &[(RAM_END + 0x1000, 1526, true)]);
    r.host_send(0, &eth(OUR_MAC, 60));
    assert!(r.dev.needs_reset());
}

#[test]
fn nothing_is_read_before_driver_ok_or_while_paused() {
    let mut r = Rig::new();
    r.hosts[0].send(&eth(OUR_MAC, 60)).unwrap();
    r.dev.handle_event(0);
    let f = r.dev.device_features();
    r.activate(f);
    r.dev.pause();
    let b = r.post_rx(0, 1526);
    r.dev.queue_notify(0);
    assert_eq!(r.rings[0].used_idx(&r.mem), 0);
    r.dev.resume();
    assert_eq!(r.rings[0].used_idx(&r.mem), 1);
    assert_eq!(r.read(b + 12, 60), eth(OUR_MAC, 60));
}

// ---- the receive filter ---------------------------------------------------

#[test]
fn the_filter_is_promiscuous_until_the_driver_says_otherwise() {
    let mut r = Rig::started();
    r.post_rx(0, 1526);
    r.host_send(0, &eth(OTHER_MAC, 60));
    assert_eq!(r.rings[0].used_idx(&r.mem), 1, "QEMU starts promiscuous");
    r.promisc(false);
    r.post_rx(0, 1526);
    r.host_send(0, &eth(OTHER_MAC, 60));
    assert_eq!(
        r.rings[0].used_idx(&r.mem),
        1,
        "another NIC's frame dropped"
    );
    r.host_send(0, &eth([0xff; 6], 60));
    assert_eq!(r.rings[0].used_idx(&r.mem), 2, "broadcast passes");
    r.post_rx(0, 1526);
    r.host_send(0, &eth(OUR_MAC, 60));
    assert_eq!(r.rings[0].used_idx(&r.mem), 3, "our own address passes");
    // The dropped frame was consumed from the backend.
    let mut b = [0u8; 64];
    assert!(r.hosts[0].recv(&mut b).is_err());
}

#[test]
fn nobcast_nouni_and_nomulti_drop_their_kind() {
    let mut r = Rig::started();
    r.promisc(false);
    assert_eq!(r.ctrl(CLASS_RX, RX_NOBCAST, &[1]), OK);
    assert_eq!(r.ctrl(CLASS_RX, RX_ALLMULTI, &[1]), OK);
    r.post_rx(0, 1526);
    r.host_send(0, &eth([0xff; 6], 60));
    assert_eq!(r.rings[0].used_idx(&r.mem), 0);
    r.host_send(0, &eth([0x01, 0x00, 0x5e, 0, 0, 1], 60));
    assert_eq!(r.rings[0].used_idx(&r.mem), 1, "allmulti");
    assert_eq!(r.ctrl(CLASS_RX, RX_NOMULTI, &[1]), OK);
    r.post_rx(0, 1526);
    r.host_send(0, &eth([0x01, 0x00, 0x5e, 0, 0, 1], 60));
    assert_eq!(r.rings[0].used_idx(&r.mem), 1, "nomulti wins over allmulti");
    assert_eq!(r.ctrl(CLASS_RX, RX_NOUNI, &[1]), OK);
    r.host_send(0, &eth(OUR_MAC, 60));
    assert_eq!(
        r.rings[0].used_idx(&r.mem),
        1,
        "nouni drops even our address"
    );
    let info = r.dev.rx_filter();
    assert_eq!(info.unicast, RxState::None);
    assert_eq!(info.multicast, RxState::None);
    // QEMU 7.2 reports nobcast as broadcast-allowed.
    assert!(info.broadcast_allowed);
}

#[test]
fn the_mac_table_filters_and_overflows() {
    let mut r = Rig::started();
    r.promisc(false);
    let uni = [0x02, 0, 0, 0, 0, 1];
    let multi = [0x01, 0x00, 0x5e, 0, 0, 0xfb];
    assert_eq!(
        r.ctrl(CLASS_MAC, MAC_TABLE_SET, &mac_table(&[uni], &[multi])),
        OK
    );
    r.post_rx(0, 1526);
    r.host_send(0, &eth(uni, 60));
    assert_eq!(r.rings[0].used_idx(&r.mem), 1, "table unicast");
    r.post_rx(0, 1526);
    r.host_send(0, &eth(multi, 60));
    assert_eq!(r.rings[0].used_idx(&r.mem), 2, "table multicast");
    r.post_rx(0, 1526);
    r.host_send(0, &eth([0x01, 0x00, 0x5e, 0, 0, 1], 60));
    assert_eq!(r.rings[0].used_idx(&r.mem), 2, "other multicast dropped");
    let info = r.dev.rx_filter();
    assert_eq!(info.unicast_table, vec![MacAddr(uni)]);
    assert_eq!(info.multicast_table, vec![MacAddr(multi)]);
    assert!(!info.unicast_overflow && !info.multicast_overflow);

    // 65 unicast entries do not fit in QEMU's 64: overflow, all unicast in.
    let many: Vec<[u8; 6]> = (0..65u8).map(|i| [0x02, 0, 0, 0, 1, i]).collect();
    assert_eq!(
        r.ctrl(CLASS_MAC, MAC_TABLE_SET, &mac_table(&many, &[multi])),
        OK
    );
    r.host_send(0, &eth(OTHER_MAC, 60));
    assert_eq!(
        r.rings[0].used_idx(&r.mem),
        3,
        "unicast overflow accepts all"
    );
    let info = r.dev.rx_filter();
    assert!(info.unicast_overflow);
    assert!(info.unicast_table.is_empty());
    assert_eq!(info.multicast_table, vec![MacAddr(multi)]);
}

#[test]
fn mac_table_lengths_that_do_not_match_answer_err() {
    let mut r = Rig::started();
    let mut d = mac_table(&[[2, 0, 0, 0, 0, 1]], &[]);
    d.push(0);
    assert_eq!(r.ctrl(CLASS_MAC, MAC_TABLE_SET, &d), ERR, "trailing byte");
    let d = 2u32.to_le_bytes().to_vec();
    assert_eq!(
        r.ctrl(CLASS_MAC, MAC_TABLE_SET, &d),
        ERR,
        "entries past the data"
    );
}

#[test]
fn the_vlan_table_filters_tagged_frames() {
    let mut r = Rig::started();
    r.promisc(false);
    r.post_rx(0, 1526);
    r.host_send(0, &vlan_eth(OUR_MAC, 5));
    assert_eq!(
        r.rings[0].used_idx(&r.mem),
        0,
        "CTRL_VLAN: no VLAN until added"
    );
    assert_eq!(r.rx_vlan_add(5), OK);
    r.host_send(0, &vlan_eth(OUR_MAC, 5));
    assert_eq!(r.rings[0].used_idx(&r.mem), 1);
    r.post_rx(0, 1526);
    r.host_send(0, &vlan_eth(OUR_MAC, 6));
    assert_eq!(r.rings[0].used_idx(&r.mem), 1, "vlan 6 dropped");
    assert_eq!(r.rx_vlan_add(100), OK);
    let info = r.dev.rx_filter();
    assert_eq!(info.vlan, RxState::Normal);
    assert_eq!(info.vlan_table, vec![100, 5], "QEMU lists them descending");
    assert_eq!(r.ctrl(CLASS_VLAN, VLAN_DEL, &5u16.to_le_bytes()), OK);
    assert_eq!(r.ctrl(CLASS_VLAN, VLAN_ADD, &4096u16.to_le_bytes()), ERR);
    assert_eq!(r.dev.rx_filter().vlan_table, vec![100]);
}

impl Rig {
    fn rx_vlan_add(&mut self, vid: u16) -> u8 {
        self.ctrl(CLASS_VLAN, VLAN_ADD, &vid.to_le_bytes())
    }
}

#[test]
fn without_ctrl_vlan_every_vlan_passes() {
    let mut r = Rig::new();
    let f = r.dev.device_features() & !F_CTRL_VLAN;
    r.activate(f);
    r.promisc(false);
    r.post_rx(0, 1526);
    r.host_send(0, &vlan_eth(OUR_MAC, 77));
    assert_eq!(r.rings[0].used_idx(&r.mem), 1);
    let info = r.dev.rx_filter();
    assert_eq!(info.vlan, RxState::All);
    assert_eq!(info.vlan_table.len(), 4096);
}

#[test]
fn the_initial_filter_reads_as_qemus() {
    let mut r = Rig::started();
    let info = r.dev.rx_filter();
    assert_eq!(
        info,
        RxFilterInfo {
            promiscuous: true,
            multicast: RxState::Normal,
            unicast: RxState::Normal,
            vlan: RxState::None,
            broadcast_allowed: false,
            multicast_overflow: false,
            unicast_overflow: false,
            main_mac: MacAddr(OUR_MAC),
            vlan_table: vec![],
            unicast_table: vec![],
            multicast_table: vec![],
        }
    );
}

#[test]
fn the_filter_changed_event_fires_once_until_queried() {
    let mut r = Rig::started();
    r.promisc(false);
    assert_eq!(r.filter_events.load(Ordering::SeqCst), 1);
    r.promisc(true);
    assert_eq!(
        r.filter_events.load(Ordering::SeqCst),
        1,
        "not again before a query"
    );
    r.dev.rx_filter();
    assert_eq!(r.ctrl(CLASS_MAC, MAC_ADDR_SET, &OTHER_MAC), OK);
    assert_eq!(r.filter_events.load(Ordering::SeqCst), 2);
    // ANNOUNCE, MQ and offload commands are no filter changes.
    r.dev.rx_filter();
    r.ctrl(CLASS_ANNOUNCE, ANNOUNCE_ACK, &[]);
    assert_eq!(r.filter_events.load(Ordering::SeqCst), 2);
}

#[test]
fn mac_addr_set_changes_the_address_until_reset() {
    let mut r = Rig::started();
    assert_eq!(r.ctrl(CLASS_MAC, MAC_ADDR_SET, &OTHER_MAC), OK);
    assert_eq!(r.dev.mac(), MacAddr(OTHER_MAC));
    assert_eq!(
        r.config(0, 6),
        u64::from_le_bytes([0x52, 0x54, 0, 0xaa, 0xbb, 0xcc, 0, 0])
    );
    assert_eq!(r.dev.rx_filter().main_mac, MacAddr(OTHER_MAC));
    r.promisc(false);
    r.post_rx(0, 1526);
    r.host_send(0, &eth(OTHER_MAC, 60));
    assert_eq!(r.rings[0].used_idx(&r.mem), 1, "the new address is ours");
    assert_eq!(r.ctrl(CLASS_MAC, MAC_ADDR_SET, &OTHER_MAC[..5]), ERR);
    r.dev.reset();
    assert_eq!(r.dev.mac(), MacAddr(OUR_MAC));
    let info = r.dev.rx_filter();
    assert!(info.promiscuous, "reset: promiscuous again");
}

// ---- control queue ----------------------------------------------------------

#[test]
fn unknown_and_malformed_commands_answer_err() {
    let mut r = Rig::started();
    assert_eq!(r.ctrl(9, 0, &[]), ERR, "unknown class");
    assert_eq!(r.ctrl(CLASS_RX, 6, &[1]), ERR, "unknown rx command");
    assert_eq!(r.ctrl(CLASS_RX, RX_PROMISC, &[]), ERR, "no data");
    assert_eq!(r.ctrl(CLASS_MQ, MQ_RSS_CONFIG, &[0; 16]), ERR, "no RSS");
    assert!(!r.dev.needs_reset());
}

#[test]
fn a_ctrl_chain_without_an_ack_buffer_needs_reset() {
    let mut r = Rig::started();
    let o = r.buf(3);
    let q = r.ctrl_q();
    r.rings[usize::from(q)].add_chain(&r.mem, &[(o, 3, false)]);
    r.dev.queue_notify(q);
    // QEMU: "virtio-net ctrl missing headers".
    assert!(r.dev.needs_reset());
}

#[test]
fn announce_sets_the_status_bit_until_the_driver_acks() {
    let mut r = Rig::started();
    assert_eq!(
        r.ctrl(CLASS_ANNOUNCE, ANNOUNCE_ACK, &[]),
        ERR,
        "nothing to ack"
    );
    r.dev.announce();
    assert_eq!(r.config(6, 2), 3, "LINK_UP | ANNOUNCE");
    assert_eq!(r.config_irqs(), 1);
    assert_eq!(r.ctrl(CLASS_ANNOUNCE, ANNOUNCE_ACK, &[]), OK);
    assert_eq!(r.config(6, 2), 1);
    // A driver without GUEST_ANNOUNCE is not asked.
    let mut r = Rig::new();
    let f = r.dev.device_features() & !F_GUEST_ANNOUNCE;
    r.activate(f);
    r.dev.announce();
    assert_eq!(r.config(6, 2), 1);
    assert_eq!(r.config_irqs(), 0);
}

#[test]
fn vq_pairs_set_checks_its_range() {
    let o = NetOptions {
        mq: true,
        ..NetOptions::default()
    };
    let mut r = Rig::with(o, 2, 0);
    let f = r.dev.device_features();
    r.activate(f);
    assert_eq!(r.ctrl_q(), 4);
    assert_eq!(r.ctrl(CLASS_MQ, MQ_VQ_PAIRS_SET, &3u16.to_le_bytes()), ERR);
    assert_eq!(r.ctrl(CLASS_MQ, MQ_VQ_PAIRS_SET, &0u16.to_le_bytes()), ERR);
    assert_eq!(r.dev.curr_queue_pairs(), 1);
    // Pair 1 does not receive until the driver enables it.
    r.post_rx(1, 1526);
    r.host_send(1, &eth(OUR_MAC, 60));
    assert_eq!(r.rings[2].used_idx(&r.mem), 0);
    assert_eq!(r.ctrl(CLASS_MQ, MQ_VQ_PAIRS_SET, &2u16.to_le_bytes()), OK);
    assert_eq!(r.dev.curr_queue_pairs(), 2);
    assert_eq!(r.rings[2].used_idx(&r.mem), 1, "the waiting frame arrives");
    // Transmit on pair 1 goes to its own backend queue.
    r.tx(1, &eth(OTHER_MAC, 60));
    assert_eq!(r.host_recv(1).len(), 1);
    assert!(r.host_recv(0).is_empty());
}

#[test]
fn without_mq_negotiated_the_control_queue_is_queue_2() {
    let o = NetOptions {
        mq: true,
        ..NetOptions::default()
    };
    let mut r = Rig::with(o, 2, 0);
    let f = r.dev.device_features() & !F_MQ;
    r.activate(f);
    // §5.1.2: controlq is 2N with N = 1 without MQ.
    let o = r.buf(3);
    let ack = r.buf(1);
    r.mem
        .write_slice(&[CLASS_MQ, MQ_VQ_PAIRS_SET, 1, 0], GuestAddress(o))
        .unwrap();
    r.rings[2].add_chain(&r.mem, &[(o, 4, false), (ack, 1, true)]);
    r.dev.queue_notify(2);
    assert_eq!(r.rings[2].used_idx(&r.mem), 1);
    let a: u8 = r.mem.read_obj(GuestAddress(ack)).unwrap();
    assert_eq!(a, ERR, "MQ not negotiated");
}

#[test]
fn guest_offloads_set_reaches_the_backend() {
    let mut r = Rig::with(NetOptions::default(), 1, 12);
    let f = r.dev.device_features() & !F_GUEST_UFO;
    r.activate(f);
    let all = Offloads {
        csum: true,
        tso4: true,
        tso6: true,
        ecn: true,
        ufo: false,
    };
    assert_eq!(
        r.logs[0].offloads.lock().unwrap().last(),
        Some(&all),
        "at activation"
    );
    let csum_only = F_GUEST_CSUM.to_le_bytes();
    assert_eq!(
        r.ctrl(CLASS_GUEST_OFFLOADS, GUEST_OFFLOADS_SET, &csum_only),
        OK
    );
    assert_eq!(
        r.logs[0].offloads.lock().unwrap().last(),
        Some(&Offloads {
            csum: true,
            ..Offloads::default()
        })
    );
    assert_eq!(r.dev.guest_offloads(), F_GUEST_CSUM);
    // UFO was not negotiated: refused.
    let ufo = F_GUEST_UFO.to_le_bytes();
    assert_eq!(r.ctrl(CLASS_GUEST_OFFLOADS, GUEST_OFFLOADS_SET, &ufo), ERR);
    assert_eq!(
        r.ctrl(CLASS_GUEST_OFFLOADS, GUEST_OFFLOADS_SET, &[0; 4]),
        ERR
    );
}

#[test]
fn guest_offloads_set_without_a_vnet_header_answers_err() {
    let mut r = Rig::started();
    assert_eq!(
        r.ctrl(
            CLASS_GUEST_OFFLOADS,
            GUEST_OFFLOADS_SET,
            &0u64.to_le_bytes()
        ),
        ERR
    );
}

// ---- link -------------------------------------------------------------------

#[test]
fn set_link_toggles_status_interrupts_and_drops_traffic() {
    let mut r = Rig::started();
    r.dev.set_link(false);
    assert!(!r.dev.link_up());
    assert_eq!(r.config(6, 2), 0);
    assert_eq!(r.config_irqs(), 1);
    r.dev.set_link(false);
    assert_eq!(r.config_irqs(), 1, "no change, no interrupt");

    // Transmit: completed, never sent.
    r.tx(0, &eth(OTHER_MAC, 60));
    assert_eq!(r.rings[1].used_idx(&r.mem), 1);
    assert!(r.host_recv(0).is_empty());
    // Receive: read from the backend and dropped.
    r.post_rx(0, 1526);
    r.host_send(0, &eth(OUR_MAC, 60));
    assert_eq!(r.rings[0].used_idx(&r.mem), 0);
    let mut b = [0u8; 64];
    assert!(r.hosts[0].recv(&mut b).is_err(), "consumed");

    r.dev.set_link(true);
    assert_eq!(r.config(6, 2), 1);
    assert_eq!(r.config_irqs(), 2);
    r.host_send(0, &eth(OUR_MAC, 60));
    assert_eq!(r.rings[0].used_idx(&r.mem), 1);
    r.tx(0, &eth(OTHER_MAC, 60));
    assert_eq!(r.host_recv(0).len(), 1);
}

#[test]
fn set_link_before_driver_ok_only_changes_the_status() {
    let mut r = Rig::new();
    r.dev.set_link(false);
    assert_eq!(r.config(6, 2), 0);
    assert_eq!(r.config_irqs(), 0);
}

#[test]
fn reset_forgets_the_filter_and_the_queues() {
    let mut r = Rig::started();
    r.promisc(false);
    assert_eq!(r.ctrl(CLASS_RX, RX_NOBCAST, &[1]), OK);
    r.dev.announce();
    r.dev.reset();
    assert_eq!(r.config(6, 2), 1, "ANNOUNCE cleared, link kept");
    let info = r.dev.rx_filter();
    assert!(info.promiscuous && !info.broadcast_allowed);
    // Nothing is written after reset.
    r.post_rx(0, 1526);
    r.dev.queue_notify(0);
    r.host_send(0, &eth(OUR_MAC, 60));
    assert_eq!(r.rings[0].used_idx(&r.mem), 0);
    assert!(r.dev.event_sources().is_empty());
}

// ---- pure parsers -------------------------------------------------------------

#[test]
fn header_parse_round_trips() {
    use super::header::*;
    let h = VirtioNetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: GSO_TCPV4,
        hdr_len: 54,
        gso_size: 1448,
        csum_start: 34,
        csum_offset: 16,
        num_buffers: 2,
    };
    assert_eq!(VirtioNetHdr::parse(&h.to_bytes()), Ok(h));
    assert_eq!(VirtioNetHdr::parse(&[0; 9]), Err(HeaderError::TooShort(9)));
}

#[test]
fn tx_plans_follow_qemus_flush_tx() {
    use super::header::*;
    assert_eq!(tx_plan(0, 0, 12, 0, NET_BUFSIZE), Err(TxError::NoHeader));
    assert_eq!(
        tx_plan(1, 72, 12, 0, NET_BUFSIZE),
        Ok(TxPlan::Send {
            host_hdr_len: 0,
            payload_start: 12,
            len: 60
        })
    );
    assert_eq!(
        tx_plan(1, 5, 12, 0, NET_BUFSIZE),
        Err(TxError::NothingToSend)
    );
    assert_eq!(
        tx_plan(1, 11, 12, 12, NET_BUFSIZE),
        Err(TxError::HeaderIncorrect)
    );
    assert_eq!(
        tx_plan(1, 12, 12, 10, NET_BUFSIZE),
        Ok(TxPlan::Send {
            host_hdr_len: 10,
            payload_start: 12,
            len: 10
        })
    );
    assert_eq!(tx_plan(2, 70000, 12, 12, NET_BUFSIZE), Ok(TxPlan::Drop));
}

#[test]
fn mac_table_entry_counts_wrap_in_32_bits_as_in_qemu() {
    // 0x2aaaaaab * 6 = 0x1_0000_0002: QEMU's unsigned int sees 2 bytes, and
    // the count is over 64, so the unicast list overflows.
    let mut d = 0x2aaa_aaabu32.to_le_bytes().to_vec();
    d.extend_from_slice(&[0, 0]);
    d.extend_from_slice(&0u32.to_le_bytes());
    let t = parse_mac_table(&d).unwrap();
    assert!(t.uni_overflow && !t.multi_overflow);
    assert!(t.macs.is_empty());
}

#[test]
fn ctrl_parse_reads_qemus_layouts() {
    assert_eq!(
        parse(&[CLASS_RX, RX_ALLUNI, 1, 99]),
        Ok(CtrlCommand::RxMode {
            mode: RxMode::AllUni,
            on: true
        })
    );
    assert_eq!(
        parse(&[CLASS_VLAN, VLAN_ADD, 0xff, 0x0f]),
        Ok(CtrlCommand::VlanAdd(4095))
    );
    assert_eq!(
        parse(&[CLASS_MQ, MQ_VQ_PAIRS_SET, 4, 0]),
        Ok(CtrlCommand::MqVqPairsSet(4))
    );
    assert_eq!(parse(&[CLASS_RX]), Err(CtrlError::NoHeader));
}

#[test]
fn with_mergeable_buffers_a_readable_only_rx_chain_leaves_the_frame_waiting() {
    // QEMU counts no writable bytes, so it has no buffers: nothing breaks.
    let mut r = Rig::started();
    let a = r.buf(1526);
    r.rings[0].add_chain(&r.mem, &[(a, 1526, false)]);
    r.host_send(0, &eth(OUR_MAC, 60));
    assert!(!r.dev.needs_reset());
    assert_eq!(r.rings[0].used_idx(&r.mem), 0);
}

/// A DHCP reply (UDP 67 -> 68) of `payload` bytes, checksum field garbage.
fn dhcp_reply(payload: usize) -> Vec<u8> {
    let mut f = eth(OUR_MAC, 14);
    let total = (20 + 8 + payload) as u16;
    f.extend_from_slice(&[0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0]);
    f[16..18].copy_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[10, 0, 2, 2, 255, 255, 255, 255]);
    f.extend_from_slice(&[0, 67, 0, 68]);
    f.extend_from_slice(&((8 + payload) as u16).to_be_bytes());
    f.extend_from_slice(&[0x12, 0x34]);
    f.extend((0..payload).map(|i| (i * 7) as u8));
    f
}

/// RFC 768: the one's complement sum over the pseudo header and the UDP
/// datagram, its checksum included, is all ones.
fn udp_checksum_ok(f: &[u8]) -> bool {
    let udp_len = usize::from(u16::from_be_bytes([f[38], f[39]]));
    let mut pseudo = f[26..34].to_vec();
    pseudo.extend_from_slice(&[0, 17]);
    pseudo.extend_from_slice(&(udp_len as u16).to_be_bytes());
    pseudo.extend_from_slice(&f[34..34 + udp_len]);
    let mut sum: u32 = pseudo
        .chunks(2)
        .map(|c| u32::from(c[0]) << 8 | u32::from(*c.get(1).unwrap_or(&0)))
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum == 0xffff
}

#[test]
fn a_partial_checksum_dhcp_reply_is_completed_for_old_dhclients() {
    let mut r = Rig::with(NetOptions::default(), 1, 12);
    let f = r.dev.device_features();
    r.activate(f);
    let b = r.post_rx(0, 1526);
    let frame = dhcp_reply(301);
    assert!(!udp_checksum_ok(&frame));
    let mut msg = vec![1u8, 0, 0, 0, 0, 0, 34, 0, 6, 0, 0, 0];
    msg.extend_from_slice(&frame);
    r.host_send(0, &msg);
    let got = r.read(b, 12 + frame.len());
    assert_eq!(got[0], 0, "NEEDS_CSUM cleared");
    assert!(udp_checksum_ok(&got[12..]));
    assert_eq!(got[12..12 + 40], frame[..40], "only the checksum changed");

    // Not a DHCP server reply: left alone.
    let b = r.post_rx(0, 1526);
    let mut other = frame.clone();
    other[35] = 68;
    let mut msg = vec![1u8, 0, 0, 0, 0, 0, 34, 0, 6, 0, 0, 0];
    msg.extend_from_slice(&other);
    r.host_send(0, &msg);
    let got = r.read(b, 12 + other.len());
    assert_eq!(got[0], 1);
    assert_eq!(got[12..], other[..]);
}
