//! virtio-blk against guest memory in a plain buffer, split rings built by
//! hand (virtio 1.2 §2.7) and a real BlockBackend over a memfd. Expected
//! values come from the spec and QEMU 7.2's hw/block/virtio-blk.c.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::FromRawFd;
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use block::{BlockBackend, ErrorAction};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::*;
use crate::virtio::test_support::*;
use crate::virtio::VirtioDevice;

const MIB: u64 = 1 << 20;
/// Guest RAM: two adjacent 1 MiB regions; everything from 2 MiB is outside.
const RAM_END: u64 = 2 * MIB;
const QSIZE: u16 = 16;
/// Where queue `q`'s rings live, and the data area.
fn ring_base(q: u16) -> u64 {
    0x1_0000 * (u64::from(q) + 1)
}
const DATA: u64 = 0x8_0000;

// Feature bits (virtio 1.2 §5.2.3, §6).
const F_SEG_MAX: u64 = 1 << 2;
const F_GEOMETRY: u64 = 1 << 4;
const F_RO: u64 = 1 << 5;
const F_BLK_SIZE: u64 = 1 << 6;
const F_FLUSH: u64 = 1 << 9;
const F_TOPOLOGY: u64 = 1 << 10;
const F_CONFIG_WCE: u64 = 1 << 11;
const F_MQ: u64 = 1 << 12;
const F_DISCARD: u64 = 1 << 13;
const F_WRITE_ZEROES: u64 = 1 << 14;

// Request types and statuses (§5.2.6).
const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;
const T_GET_ID: u32 = 8;
const T_DISCARD: u32 = 11;
const T_WRITE_ZEROES: u32 = 13;
const S_OK: u8 = 0;
const S_IOERR: u8 = 1;
const S_UNSUPP: u8 = 2;

fn memfd(len: u64) -> File {
    // SAFETY: a plain syscall with a static NUL-terminated name.
    let fd = unsafe { libc::memfd_create(c"vblk-test".as_ptr(), 0) };
    assert!(fd >= 0, "memfd_create");
    // SAFETY: fd is a fresh descriptor we own.
    let f = unsafe { File::from_raw_fd(fd) };
    f.set_len(len).unwrap();
    f
}

type Errors = Arc<Mutex<Vec<BlockIoError>>>;

/// Writes a request header and returns its address.
fn header(mem: &GuestMemoryMmap, at: u64, type_: u32, sector: u64) -> u64 {
    mem.write_obj(type_, GuestAddress(at)).unwrap();
    mem.write_obj(0u32, GuestAddress(at + 4)).unwrap();
    mem.write_obj(sector, GuestAddress(at + 8)).unwrap();
    at
}

fn status(mem: &GuestMemoryMmap, at: u64) -> u8 {
    mem.read_obj(GuestAddress(at)).unwrap()
}

struct Rig {
    mem: GuestMemoryMmap,
    dev: VirtioBlock,
    irq: Arc<Irq>,
    errors: Errors,
    rings: Vec<Ring>,
    image: File,
}

impl Rig {
    fn build(backend: BlockBackend, image: File, opts: &BlkOptions) -> Self {
        let errors: Errors = Arc::default();
        let e = errors.clone();
        let dev =
            VirtioBlock::new(backend, opts, Arc::new(move |x| e.lock().unwrap().push(x))).unwrap();
        let mem = guest_ram(&[(0, MIB), (MIB, MIB)]);
        // Poison the status and data areas so untouched bytes show.
        mem.write_slice(&vec![0xaa; 0x4_0000], GuestAddress(DATA))
            .unwrap();
        Self {
            mem,
            dev,
            irq: Arc::default(),
            errors,
            rings: Vec::new(),
            image,
        }
    }
    fn new(opts: &BlkOptions) -> Self {
        let image = memfd(64 * MIB);
        let backend = BlockBackend::from_file(image.try_clone().unwrap(), false);
        Self::build(backend, image, opts)
    }
    fn activate(&mut self, features: u64) {
        let n = self.dev.queue_max_sizes().len() as u16;
        self.rings = (0..n).map(|q| Ring::new(ring_base(q), QSIZE)).collect();
        let queues = active_queues(&self.rings);
        self.dev
            .activate(self.mem.clone(), features, queues, self.irq.clone())
            .unwrap();
    }
    fn started(opts: &BlkOptions) -> Self {
        let mut r = Self::new(opts);
        let f = r.dev.device_features();
        r.activate(f);
        r
    }
    /// The driver kicks queue `q`, and the backend thread serves its completion fd.
    fn kick(&mut self, q: u16) {
        self.dev.queue_notify(q);
        self.serve(q);
    }
    /// What the backend thread does: waits (bounded) for queue `q`'s
    /// completion fd while requests are in flight, then serves it. The I/O
    /// engine completes asynchronously, so an answer may take a moment.
    fn serve(&mut self, q: u16) {
        let fd = self
            .dev
            .event_sources()
            .iter()
            .find(|s| s.tag == u32::from(q))
            .map(|s| s.fd);
        if let (Some(fd), true) = (fd, self.dev.in_flight() > 0) {
            let mut p = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd, owned by this frame.
            unsafe { libc::poll(&mut p, 1, 5000) };
        }
        self.dev.handle_event(u32::from(q));
    }
    /// A request with one header, one data descriptor and the status byte.
    fn simple(&mut self, q: u16, type_: u32, sector: u64, data: Option<(u64, u32, bool)>) -> u64 {
        let hdr = header(&self.mem, DATA, type_, sector);
        let st = DATA + 0x3_f000;
        let mut d = vec![(hdr, 16, false)];
        d.extend(data);
        d.push((st, 1, true));
        self.rings[usize::from(q)].add_chain(&self.mem, &d);
        st
    }
    fn config(&self, off: u64, len: usize) -> u64 {
        let mut b = [0u8; 8];
        self.dev.read_config(off, &mut b[..len]);
        u64::from_le_bytes(b)
    }
    fn image_bytes(&mut self, off: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        self.image.read_exact_at(&mut v, off).unwrap();
        v
    }
}

fn opts() -> BlkOptions {
    BlkOptions::default()
}

// ---- configuration space and features ------------------------------------

#[test]
fn default_config_space_is_qemus() {
    let r = Rig::new(&opts());
    // 64 MiB: 131072 sectors; geometry 131072 / (16 * 63) = 130 cylinders.
    assert_eq!(r.config(0, 8), 131072, "capacity");
    assert_eq!(r.config(8, 4), 0, "size_max");
    assert_eq!(r.config(12, 4), 254, "seg_max = queue-size - 2");
    assert_eq!(r.config(16, 2), 130, "cylinders");
    assert_eq!(r.config(18, 1), 16, "heads");
    assert_eq!(r.config(19, 1), 63, "sectors");
    assert_eq!(r.config(20, 4), 512, "blk_size");
    assert_eq!(r.config(24, 1), 0, "physical_block_exp");
    assert_eq!(r.config(25, 1), 0, "alignment_offset");
    assert_eq!(r.config(26, 2), 0, "min_io_size");
    assert_eq!(r.config(28, 4), 0, "opt_io_size");
    assert_eq!(r.config(32, 1), 1, "writeback");
    assert_eq!(r.config(34, 2), 1, "num_queues");
    assert_eq!(r.config(36, 4), 4194303, "max_discard_sectors");
    assert_eq!(r.config(40, 4), 1, "max_discard_seg");
    assert_eq!(r.config(44, 4), 1, "discard_sector_alignment");
    assert_eq!(r.config(48, 4), 4194303, "max_write_zeroes_sectors");
    assert_eq!(r.config(52, 4), 1, "max_write_zeroes_seg");
    assert_eq!(r.config(56, 1), 1, "write_zeroes_may_unmap");
    // The structure QEMU exposes ends after write_zeroes_may_unmap.
    assert_eq!(r.dev.config_size(), 57);
    assert_eq!(r.config(57, 1), 0xff);
    assert_eq!(r.config(56, 2), 0xffff);
    assert_eq!(r.dev.device_type(), 2);
    assert_eq!(r.dev.queue_max_sizes(), &[256]);
}

#[test]
fn default_features_are_qemus() {
    let r = Rig::new(&opts());
    assert_eq!(
        r.dev.device_features(),
        F_SEG_MAX
            | F_GEOMETRY
            | F_BLK_SIZE
            | F_FLUSH
            | F_TOPOLOGY
            | F_CONFIG_WCE
            | F_DISCARD
            | F_WRITE_ZEROES
            | F_INDIRECT
            | F_EVENT_IDX
    );
}

#[test]
fn read_only_and_multiqueue_features() {
    let image = memfd(MIB);
    let backend = BlockBackend::from_file(image.try_clone().unwrap(), true);
    let o = BlkOptions {
        num_queues: Some(4),
        ..opts()
    };
    let r = Rig::build(backend, image, &o);
    let f = r.dev.device_features();
    assert_ne!(f & F_RO, 0);
    assert_ne!(f & F_MQ, 0);
    assert_eq!(r.config(34, 2), 4);
    assert_eq!(r.dev.queue_max_sizes(), &[256; 4]);
}

#[test]
fn num_queues_auto_follows_the_vcpus() {
    let r = Rig::new(&BlkOptions { cpus: 3, ..opts() });
    assert_eq!(r.config(34, 2), 3);
    assert_ne!(r.dev.device_features() & F_MQ, 0);
}

#[test]
fn no_discard_no_write_zeroes_shrinks_the_config() {
    let r = Rig::new(&BlkOptions {
        discard: false,
        write_zeroes: false,
        ..opts()
    });
    assert_eq!(r.dev.config_size(), 36);
    assert_eq!(r.config(36, 4), 0xffff_ffff);
    assert_eq!(r.dev.device_features() & (F_DISCARD | F_WRITE_ZEROES), 0);
}

#[test]
fn block_sizes_show_in_topology() {
    let r = Rig::new(&BlkOptions {
        logical_block_size: 4096,
        physical_block_size: 16384,
        min_io_size: 8192,
        opt_io_size: 65536,
        ..opts()
    });
    assert_eq!(r.config(20, 4), 4096);
    assert_eq!(r.config(24, 1), 2, "16384 = 4096 << 2");
    assert_eq!(r.config(26, 2), 2, "min_io_size in logical blocks");
    assert_eq!(r.config(28, 4), 16, "opt_io_size in logical blocks");
    assert_eq!(r.config(44, 4), 8, "discard alignment: 4096 / 512");
    // 64 MiB / 16 / 63 is not a multiple of 4096: sectors rounded to 8.
    assert_eq!(r.config(19, 1), 56);
}

#[test]
fn option_errors_have_qemus_text() {
    let err = |o: BlkOptions| {
        let image = memfd(MIB);
        VirtioBlock::new(BlockBackend::from_file(image, false), &o, Arc::new(|_| {}))
            .err()
            .unwrap()
            .to_string()
    };
    assert_eq!(
        err(BlkOptions {
            logical_block_size: 1000,
            ..opts()
        }),
        "Property .logical_block_size doesn't take value '1000', it's not a power of 2"
    );
    assert_eq!(
        err(BlkOptions {
            logical_block_size: 256,
            ..opts()
        }),
        "Property .logical_block_size doesn't take value 256 (minimum: 512, maximum: 2097152)"
    );
    assert_eq!(
        err(BlkOptions {
            id: "disk0".into(),
            physical_block_size: 4 << 20,
            ..opts()
        }),
        "Property disk0.physical_block_size doesn't take value 4194304 (minimum: 512, maximum: 2097152)"
    );
    assert_eq!(
        err(BlkOptions {
            logical_block_size: 4096,
            physical_block_size: 512,
            ..opts()
        }),
        "logical_block_size > physical_block_size not supported"
    );
    assert_eq!(
        err(BlkOptions {
            queue_size: 3,
            ..opts()
        }),
        "invalid queue-size property (3), must be a power of 2 (max 1024)"
    );
    assert_eq!(
        err(BlkOptions {
            queue_size: 2,
            ..opts()
        }),
        "invalid queue-size property (2), must be > 2"
    );
    assert_eq!(
        err(BlkOptions {
            queue_size: 2048,
            ..opts()
        }),
        "invalid queue-size property (2048), must be a power of 2 (max 1024)"
    );
    assert_eq!(
        err(BlkOptions {
            num_queues: Some(0),
            ..opts()
        }),
        "num-queues property must be larger than 0"
    );
    assert_eq!(
        err(BlkOptions {
            max_discard_sectors: 0,
            ..opts()
        }),
        "invalid max-discard-sectors property (0), must be between 1 and 4194303"
    );
    assert_eq!(
        err(BlkOptions {
            max_write_zeroes_sectors: 5_000_000,
            ..opts()
        }),
        "invalid max-write-zeroes-sectors property (5000000), must be between 1 and 4194303"
    );
    assert_eq!(
        err(BlkOptions {
            min_io_size: 1000,
            ..opts()
        }),
        "min_io_size must be a multiple of logical_block_size"
    );
}

#[test]
fn geometry_comes_from_the_mbr_when_it_has_one() {
    let image = memfd(64 * MIB);
    let mut mbr = [0u8; 512];
    mbr[510] = 0x55;
    mbr[511] = 0xaa;
    // Partition 1: ends at head 3, sector 32 -> 4 heads, 32 sectors.
    let p = 0x1be;
    mbr[p + 5] = 3;
    mbr[p + 6] = 32;
    mbr[p + 12..p + 16].copy_from_slice(&2048u32.to_le_bytes());
    image.write_all_at(&mbr, 0).unwrap();
    let r = Rig::build(
        BlockBackend::from_file(image.try_clone().unwrap(), false),
        image,
        &opts(),
    );
    assert_eq!(r.config(16, 2), 131072 / (4 * 32));
    assert_eq!(r.config(18, 1), 4);
    assert_eq!(r.config(19, 1), 32);
}

#[test]
fn the_driver_toggles_writeback() {
    let mut r = Rig::started(&opts());
    r.dev.write_config(32, &[0]);
    assert_eq!(r.config(32, 1), 0);
    assert!(!r.dev.write_cache());
    // Writethrough writes still complete (after their flush).
    let buf = DATA + 0x1000;
    r.mem.write_slice(&[0x5a; 512], GuestAddress(buf)).unwrap();
    let st = r.simple(0, T_OUT, 3, Some((buf, 512, false)));
    r.kick(0);
    r.serve(0);
    assert_eq!(status(&r.mem, st), S_OK);
    assert_eq!(r.image_bytes(3 * 512, 512), vec![0x5a; 512]);
    r.dev.write_config(32, &[1]);
    assert!(r.dev.write_cache());
    // Reset restores the power-on mode.
    r.dev.write_config(32, &[0]);
    r.dev.reset();
    assert_eq!(r.config(32, 1), 1);
}

#[test]
fn writeback_written_before_driver_ok_survives_activation() {
    let mut r = Rig::new(&BlkOptions {
        write_cache: WriteCache::Off,
        ..opts()
    });
    assert_eq!(r.config(32, 1), 0);
    r.dev.write_config(32, &[1]);
    let f = r.dev.device_features();
    r.activate(f);
    assert_eq!(r.config(32, 1), 1);
}

#[test]
fn a_driver_without_config_wce_gets_the_mode_it_negotiated() {
    let mut r = Rig::new(&opts());
    let f = r.dev.device_features() & !(F_CONFIG_WCE | F_FLUSH);
    r.activate(f);
    assert_eq!(r.config(32, 1), 0);
}

#[test]
fn resize_updates_capacity_and_notifies() {
    let mut r = Rig::started(&opts());
    r.dev.resize(128 * MIB);
    assert_eq!(r.config(0, 8), 262144);
    assert_eq!(r.irq.config.load(Ordering::SeqCst), 1);
}

// ---- requests --------------------------------------------------------------

#[test]
fn read_completes_through_the_completion_fd() {
    let mut r = Rig::started(&opts());
    let pattern: Vec<u8> = (0..1024u32).map(|i| (i * 7) as u8).collect();
    r.image.write_all_at(&pattern, 10 * 512).unwrap();
    let buf = DATA + 0x1000;
    let st = r.simple(0, T_IN, 10, Some((buf, 1024, true)));
    r.dev.queue_notify(0);
    // Submitted, not answered: the answer comes with the completion event.
    assert_eq!(r.rings[0].used_idx(&r.mem), 0);
    assert_eq!(r.dev.event_sources().len(), 1);
    r.serve(0);
    assert_eq!(r.rings[0].used_idx(&r.mem), 1);
    assert_eq!(status(&r.mem, st), S_OK);
    assert_eq!(r.rings[0].used(&r.mem, 0), (0, 1025), "data + status");
    let mut got = vec![0; 1024];
    r.mem.read_slice(&mut got, GuestAddress(buf)).unwrap();
    assert_eq!(got, pattern);
    assert_eq!(r.irq.queues.lock().unwrap().as_slice(), &[0]);
}

#[test]
fn write_reaches_the_image() {
    let mut r = Rig::started(&opts());
    let buf = DATA + 0x1000;
    r.mem.write_slice(&[0x42; 2048], GuestAddress(buf)).unwrap();
    // Data in two descriptors.
    let hdr = header(&r.mem, DATA, T_OUT, 100);
    let st = DATA + 0x3_f000;
    r.rings[0].add_chain(
        &r.mem,
        &[
            (hdr, 16, false),
            (buf, 1024, false),
            (buf + 1024, 1024, false),
            (st, 1, true),
        ],
    );
    r.kick(0);
    assert_eq!(status(&r.mem, st), S_OK);
    assert_eq!(
        r.rings[0].used(&r.mem, 0).1,
        1,
        "only the status byte is writable"
    );
    assert_eq!(r.image_bytes(100 * 512, 2048), vec![0x42; 2048]);
}

#[test]
fn header_and_data_in_one_descriptor() {
    let mut r = Rig::started(&opts());
    let hdr = header(&r.mem, DATA, T_OUT, 0);
    r.mem
        .write_slice(&[0x17; 512], GuestAddress(hdr + 16))
        .unwrap();
    let st = DATA + 0x3_f000;
    r.rings[0].add_chain(&r.mem, &[(hdr, 16 + 512, false), (st, 1, true)]);
    r.kick(0);
    assert_eq!(status(&r.mem, st), S_OK);
    assert_eq!(r.image_bytes(0, 512), vec![0x17; 512]);
}

#[test]
fn buffer_across_two_ram_regions() {
    let mut r = Rig::started(&opts());
    r.image.write_all_at(&[0x33; 4096], 0).unwrap();
    let buf = MIB - 1024;
    let st = r.simple(0, T_IN, 0, Some((buf, 4096, true)));
    r.kick(0);
    assert_eq!(status(&r.mem, st), S_OK);
    let mut got = vec![0; 4096];
    r.mem.read_slice(&mut got, GuestAddress(buf)).unwrap();
    assert_eq!(got, vec![0x33; 4096]);
}

#[test]
fn flush_completes_ok() {
    let mut r = Rig::started(&opts());
    let st = r.simple(0, T_FLUSH, 0, None);
    r.kick(0);
    assert_eq!(status(&r.mem, st), S_OK);
    assert_eq!(r.rings[0].used(&r.mem, 0).1, 1);
}

#[test]
fn get_id_with_a_20_character_serial_has_no_nul() {
    let mut r = Rig::started(&BlkOptions {
        serial: Some("ABCDEFGHIJKLMNOPQRST".into()),
        ..opts()
    });
    let buf = DATA + 0x1000;
    let st = r.simple(0, T_GET_ID, 0, Some((buf, 32, true)));
    r.kick(0);
    assert_eq!(status(&r.mem, st), S_OK);
    let mut got = [0u8; 21];
    r.mem.read_slice(&mut got, GuestAddress(buf)).unwrap();
    assert_eq!(&got[..20], b"ABCDEFGHIJKLMNOPQRST");
    assert_eq!(got[20], 0xaa, "byte 21 untouched");
    assert_eq!(r.rings[0].used(&r.mem, 0).1, 33);
}

#[test]
fn get_id_short_serial_is_nul_terminated_and_long_one_cut() {
    let mut r = Rig::started(&BlkOptions {
        serial: Some("abc".into()),
        ..opts()
    });
    let buf = DATA + 0x1000;
    r.simple(0, T_GET_ID, 0, Some((buf, 20, true)));
    r.kick(0);
    let mut got = [0u8; 5];
    r.mem.read_slice(&mut got, GuestAddress(buf)).unwrap();
    assert_eq!(&got, b"abc\0\xaa");

    let mut r = Rig::started(&BlkOptions {
        serial: Some("0123456789abcdefghijklmnop".into()),
        ..opts()
    });
    r.simple(0, T_GET_ID, 0, Some((buf, 64, true)));
    r.kick(0);
    let mut got = [0u8; 21];
    r.mem.read_slice(&mut got, GuestAddress(buf)).unwrap();
    assert_eq!(&got[..20], b"0123456789abcdefghij");
    assert_eq!(got[20], 0xaa);
}

#[test]
fn unknown_type_is_unsupported() {
    let mut r = Rig::started(&opts());
    let st = r.simple(0, 0x77, 0, None);
    r.kick(0);
    assert_eq!(status(&r.mem, st), S_UNSUPP);
}

#[test]
fn out_of_range_and_unaligned_requests_fail_with_ioerr() {
    let mut r = Rig::started(&opts());
    let cap = 131072;
    let buf = DATA + 0x1000;
    let past_end = r.simple(0, T_IN, cap, Some((buf, 512, true)));
    r.kick(0);
    assert_eq!(status(&r.mem, past_end), S_IOERR);
    let straddles = r.simple(0, T_OUT, cap - 1, Some((buf, 1024, false)));
    r.kick(0);
    assert_eq!(status(&r.mem, straddles), S_IOERR);
    let unaligned = r.simple(0, T_IN, 0, Some((buf, 100, true)));
    r.kick(0);
    assert_eq!(status(&r.mem, unaligned), S_IOERR);
    let last = r.simple(0, T_IN, cap - 1, Some((buf, 512, true)));
    r.kick(0);
    assert_eq!(status(&r.mem, last), S_OK);
    // None of these is an I/O error of the image.
    assert!(r.errors.lock().unwrap().is_empty());
    assert!(!r.dev.needs_reset());
}

#[test]
fn logical_block_size_alignment_of_the_sector() {
    let mut r = Rig::started(&BlkOptions {
        logical_block_size: 4096,
        physical_block_size: 4096,
        ..opts()
    });
    let buf = DATA + 0x1000;
    let misaligned = r.simple(0, T_IN, 3, Some((buf, 4096, true)));
    r.kick(0);
    assert_eq!(status(&r.mem, misaligned), S_IOERR);
    let aligned = r.simple(0, T_IN, 8, Some((buf, 4096, true)));
    r.kick(0);
    assert_eq!(status(&r.mem, aligned), S_OK);
}

/// A discard / write-zeroes request with one 16-byte segment.
fn dwz(r: &mut Rig, type_: u32, sector: u64, num: u32, flags: u32) -> u8 {
    let seg = DATA + 0x2000;
    r.mem.write_obj(sector, GuestAddress(seg)).unwrap();
    r.mem.write_obj(num, GuestAddress(seg + 8)).unwrap();
    r.mem.write_obj(flags, GuestAddress(seg + 12)).unwrap();
    let st = r.simple(0, type_, 0, Some((seg, 16, false)));
    r.kick(0);
    status(&r.mem, st)
}

#[test]
fn write_zeroes_zeroes_the_range() {
    let mut r = Rig::started(&opts());
    r.image.write_all_at(&[0xee; 8192], 0).unwrap();
    assert_eq!(dwz(&mut r, T_WRITE_ZEROES, 2, 4, 0), S_OK);
    assert_eq!(r.image_bytes(1024, 2048), vec![0; 2048]);
    assert_eq!(r.image_bytes(0, 1024), vec![0xee; 1024]);
    assert_eq!(r.image_bytes(3072, 1024), vec![0xee; 1024]);
    assert_eq!(dwz(&mut r, T_WRITE_ZEROES, 8, 2, 1), S_OK, "with UNMAP");
    assert_eq!(r.image_bytes(4096, 1024), vec![0; 1024]);
    assert_eq!(
        dwz(&mut r, T_WRITE_ZEROES, 8, 2, 2),
        S_UNSUPP,
        "unknown flag"
    );
    assert_eq!(
        dwz(&mut r, T_WRITE_ZEROES, 131071, 2, 0),
        S_IOERR,
        "past the end"
    );
}

#[test]
fn discard_checks_flags_and_limits() {
    let mut r = Rig::started(&BlkOptions {
        max_discard_sectors: 64,
        ..opts()
    });
    assert_eq!(dwz(&mut r, T_DISCARD, 0, 64, 0), S_OK);
    assert_eq!(
        dwz(&mut r, T_DISCARD, 0, 65, 0),
        S_IOERR,
        "over max-discard-sectors"
    );
    assert_eq!(
        dwz(&mut r, T_DISCARD, 0, 8, 1),
        S_UNSUPP,
        "UNMAP on a discard"
    );
    // Two segments: QEMU supports one.
    let seg = DATA + 0x2000;
    r.mem.write_slice(&[0; 32], GuestAddress(seg)).unwrap();
    let st = r.simple(0, T_DISCARD, 0, Some((seg, 32, false)));
    r.kick(0);
    assert_eq!(status(&r.mem, st), S_UNSUPP);
    // DISCARD without the OUT bit (type 10) is unsupported too.
    assert_eq!(dwz(&mut r, T_DISCARD & !T_OUT, 0, 8, 0), S_UNSUPP);
}

#[test]
fn read_only_device_refuses_writes_with_ioerr() {
    let image = memfd(MIB);
    image.write_all_at(&[0x11; 512], 0).unwrap();
    let backend = BlockBackend::from_file(image.try_clone().unwrap(), true);
    let mut r = Rig::build(backend, image, &opts());
    let f = r.dev.device_features();
    r.activate(f);
    let buf = DATA + 0x1000;
    r.mem.write_slice(&[0x99; 512], GuestAddress(buf)).unwrap();
    let st = r.simple(0, T_OUT, 0, Some((buf, 512, false)));
    r.kick(0);
    assert_eq!(status(&r.mem, st), S_IOERR);
    assert_eq!(r.image_bytes(0, 512), vec![0x11; 512]);
    assert_eq!(dwz(&mut r, T_WRITE_ZEROES, 0, 1, 0), S_IOERR);
    assert_eq!(dwz(&mut r, T_DISCARD, 0, 1, 0), S_IOERR);
    assert_eq!(r.image_bytes(0, 512), vec![0x11; 512]);
    let errors = r.errors.lock().unwrap().clone();
    assert_eq!(errors.len(), 3);
    assert_eq!(
        errors[0],
        BlockIoError {
            operation: IoOperation::Write,
            action: ErrorAction::Report,
            nospace: false,
            reason: "Operation not permitted".into(),
            errno: libc::EPERM,
        }
    );
    // Reads still work.
    let rd = r.simple(0, T_IN, 0, Some((buf, 512, true)));
    r.kick(0);
    assert_eq!(status(&r.mem, rd), S_OK);
}

#[test]
fn indirect_descriptors() {
    let mut r = Rig::started(&opts());
    r.image.write_all_at(&[0x6c; 512], 512).unwrap();
    let table = DATA + 0x3000;
    let hdr = header(&r.mem, DATA, T_IN, 1);
    let buf = DATA + 0x1000;
    let st = DATA + 0x3_f000;
    Ring::write_desc(&r.mem, table, 0, hdr, 16, DESC_F_NEXT, 1);
    Ring::write_desc(&r.mem, table, 1, buf, 512, DESC_F_WRITE | DESC_F_NEXT, 2);
    Ring::write_desc(&r.mem, table, 2, st, 1, DESC_F_WRITE, 0);
    let head = r.rings[0].next_desc;
    Ring::write_desc(
        &r.mem,
        r.rings[0].desc_addr(),
        head,
        table,
        48,
        DESC_F_INDIRECT,
        0,
    );
    r.rings[0].next_desc += 1;
    r.rings[0].publish(&r.mem, head);
    r.kick(0);
    assert_eq!(status(&r.mem, st), S_OK);
    assert_eq!(r.rings[0].used(&r.mem, 0), (u32::from(head), 513));
    let mut got = vec![0; 512];
    r.mem.read_slice(&mut got, GuestAddress(buf)).unwrap();
    assert_eq!(got, vec![0x6c; 512]);
}

#[test]
fn event_idx_suppresses_interrupts_until_used_event() {
    let mut r = Rig::started(&opts());
    assert_ne!(r.dev.device_features() & F_EVENT_IDX, 0);
    // The driver wants an interrupt once used entry 1 (the second) is added.
    r.rings[0].set_used_event(&r.mem, 1);
    r.simple(0, T_FLUSH, 0, None);
    r.kick(0);
    assert_eq!(r.rings[0].used_idx(&r.mem), 1);
    assert_eq!(r.irq.queue_count(), 0);
    r.simple(0, T_FLUSH, 0, None);
    r.kick(0);
    assert_eq!(r.rings[0].used_idx(&r.mem), 2);
    assert_eq!(r.irq.queue_count(), 1);
}

#[test]
fn without_event_idx_every_completion_interrupts() {
    let mut r = Rig::new(&opts());
    let f = r.dev.device_features() & !F_EVENT_IDX;
    r.activate(f);
    r.rings[0].set_used_event(&r.mem, 1);
    r.simple(0, T_FLUSH, 0, None);
    r.kick(0);
    r.simple(0, T_FLUSH, 0, None);
    r.kick(0);
    assert_eq!(r.irq.queue_count(), 2);
}

#[test]
fn multiqueue_completes_on_the_submitting_queue() {
    let mut r = Rig::started(&BlkOptions {
        num_queues: Some(2),
        ..opts()
    });
    let sources = r.dev.event_sources();
    assert_eq!(sources.len(), 2);
    assert_ne!(sources[0].fd, sources[1].fd);
    assert_eq!((sources[0].tag, sources[1].tag), (0, 1));
    let st = r.simple(1, T_FLUSH, 0, None);
    r.dev.queue_notify(1);
    r.dev.handle_event(0);
    assert_eq!(
        r.rings[1].used_idx(&r.mem),
        0,
        "queue 0's event is not queue 1's"
    );
    r.serve(1);
    assert_eq!(status(&r.mem, st), S_OK);
    assert_eq!(r.rings[1].used_idx(&r.mem), 1);
    assert_eq!(r.rings[0].used_idx(&r.mem), 0);
    assert_eq!(r.irq.queues.lock().unwrap().as_slice(), &[1]);
}

// ---- a guest that drives the queue wrongly ----------------------------------

#[test]
fn data_outside_ram_fails_the_request_only() {
    let mut r = Rig::started(&opts());
    let st = r.simple(0, T_IN, 0, Some((RAM_END + 0x1000, 512, true)));
    r.kick(0);
    assert_eq!(status(&r.mem, st), S_IOERR);
    let st = r.simple(0, T_OUT, 0, Some((MIB * 2 - 256, 512, false)));
    r.kick(0);
    assert_eq!(status(&r.mem, st), S_IOERR, "straddles the end of RAM");
    assert!(!r.dev.needs_reset());
    let st = r.simple(0, T_FLUSH, 0, None);
    r.kick(0);
    assert_eq!(status(&r.mem, st), S_OK, "the queue still works");
}

#[test]
fn huge_and_wrapping_lengths_fail_with_ioerr() {
    let mut r = Rig::started(&opts());
    let st = r.simple(0, T_IN, 0, Some((DATA, 0xffff_fe00, true)));
    r.kick(0);
    assert_eq!(status(&r.mem, st), S_IOERR);
    let st = r.simple(0, T_OUT, 0, Some((u64::MAX - 0xff, 512, false)));
    r.kick(0);
    assert_eq!(status(&r.mem, st), S_IOERR);
    assert!(!r.dev.needs_reset());
}

fn assert_broken(r: &mut Rig) {
    assert!(r.dev.needs_reset());
    assert_eq!(r.irq.config.load(Ordering::SeqCst), 1);
    // Nothing more is processed until reset.
    let used = r.rings[0].used_idx(&r.mem);
    r.simple(0, T_FLUSH, 0, None);
    r.kick(0);
    assert_eq!(r.rings[0].used_idx(&r.mem), used);
    r.dev.reset();
    assert!(!r.dev.needs_reset());
}

#[test]
fn looping_chain_breaks_the_device() {
    let mut r = Rig::started(&opts());
    let hdr = header(&r.mem, DATA, T_IN, 0);
    let t = r.rings[0].desc_addr();
    Ring::write_desc(&r.mem, t, 0, hdr, 16, DESC_F_NEXT, 1);
    Ring::write_desc(
        &r.mem,
        t,
        1,
        DATA + 0x1000,
        512,
        DESC_F_WRITE | DESC_F_NEXT,
        0,
    );
    r.rings[0].next_desc = 2;
    r.rings[0].publish(&r.mem, 0);
    r.kick(0);
    assert_eq!(r.rings[0].used_idx(&r.mem), 0);
    assert_broken(&mut r);
}

#[test]
fn avail_index_jumping_past_the_queue_size_breaks_the_device() {
    let mut r = Rig::started(&opts());
    r.mem
        .write_obj(QSIZE + 1, GuestAddress(r.rings[0].avail_addr() + 2))
        .unwrap();
    r.dev.queue_notify(0);
    assert!(r.dev.needs_reset());
    assert_eq!(r.rings[0].used_idx(&r.mem), 0);
}

#[test]
fn header_or_status_outside_ram_breaks_the_device() {
    let mut r = Rig::started(&opts());
    r.rings[0].add_chain(&r.mem, &[(RAM_END, 16, false), (DATA, 1, true)]);
    r.kick(0);
    assert_broken(&mut r);

    let mut r = Rig::started(&opts());
    let hdr = header(&r.mem, DATA, T_FLUSH, 0);
    r.rings[0].add_chain(&r.mem, &[(hdr, 16, false), (RAM_END + 8, 1, true)]);
    r.kick(0);
    assert_broken(&mut r);
}

#[test]
fn malformed_chains_break_the_device() {
    let hdr = |r: &Rig| header(&r.mem, DATA, T_IN, 0);
    // Writable before readable.
    let mut r = Rig::started(&opts());
    let h = hdr(&r);
    r.rings[0].add_chain(&r.mem, &[(DATA + 0x100, 1, true), (h, 16, false)]);
    r.kick(0);
    assert_broken(&mut r);
    // No status descriptor.
    let mut r = Rig::started(&opts());
    let h = hdr(&r);
    r.rings[0].add_chain(&r.mem, &[(h, 16, false)]);
    r.kick(0);
    assert_broken(&mut r);
    // Header shorter than 16 bytes.
    let mut r = Rig::started(&opts());
    let h = hdr(&r);
    r.rings[0].add_chain(&r.mem, &[(h, 8, false), (DATA + 0x100, 1, true)]);
    r.kick(0);
    assert_broken(&mut r);
    // Next index past the table.
    let mut r = Rig::started(&opts());
    let h = hdr(&r);
    Ring::write_desc(
        &r.mem,
        r.rings[0].desc_addr(),
        0,
        h,
        16,
        DESC_F_NEXT,
        QSIZE + 3,
    );
    r.rings[0].publish(&r.mem, 0);
    r.kick(0);
    assert_broken(&mut r);
    // Head index past the table.
    let mut r = Rig::started(&opts());
    r.rings[0].publish(&r.mem, QSIZE);
    r.kick(0);
    assert_broken(&mut r);
}

// ---- pause, resume, reset, error policy -------------------------------------

#[test]
fn pause_drains_and_holds_new_requests_until_resume() {
    let mut r = Rig::started(&opts());
    let st = r.simple(0, T_FLUSH, 0, None);
    r.dev.queue_notify(0);
    assert_eq!(r.dev.in_flight(), 1);
    r.dev.pause();
    assert_eq!(r.dev.in_flight(), 0);
    assert_eq!(status(&r.mem, st), S_OK, "completed by the drain");
    assert_eq!(r.rings[0].used_idx(&r.mem), 1);
    // Kicks while paused are remembered, not served.
    r.simple(0, T_FLUSH, 0, None);
    r.kick(0);
    assert_eq!(r.rings[0].used_idx(&r.mem), 1);
    assert_eq!(r.dev.in_flight(), 0);
    r.dev.resume();
    r.serve(0);
    assert_eq!(r.rings[0].used_idx(&r.mem), 2);
}

#[test]
fn reset_drops_in_flight_requests_without_touching_guest_memory() {
    let mut r = Rig::started(&opts());
    let st = r.simple(0, T_FLUSH, 0, None);
    r.dev.queue_notify(0);
    r.dev.reset();
    assert_eq!(r.rings[0].used_idx(&r.mem), 0);
    assert_eq!(status(&r.mem, st), 0xaa);
    assert!(r.dev.event_sources().is_empty());
    r.serve(0);
    assert_eq!(r.rings[0].used_idx(&r.mem), 0);
}

/// An image whose writes fail with EBADF: opened read-only, used as writable.
fn failing_writes(rerror: ErrorAction, werror: ErrorAction) -> Rig {
    let image = memfd(MIB);
    let path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&image));
    let ro = File::open(path).unwrap();
    let backend = BlockBackend::from_file_with_error_actions(ro, false, rerror, werror);
    let mut r = Rig::build(backend, image, &opts());
    let f = r.dev.device_features();
    r.activate(f);
    r
}

#[test]
fn report_and_ignore_policies_answer_and_report() {
    let mut r = failing_writes(ErrorAction::Report, ErrorAction::Report);
    let st = r.simple(0, T_OUT, 0, Some((DATA + 0x1000, 512, false)));
    r.kick(0);
    assert_eq!(status(&r.mem, st), S_IOERR);
    assert_eq!(
        r.errors.lock().unwrap()[0],
        BlockIoError {
            operation: IoOperation::Write,
            action: ErrorAction::Report,
            nospace: false,
            reason: "Bad file descriptor".into(),
            errno: libc::EBADF,
        }
    );

    let mut r = failing_writes(ErrorAction::Report, ErrorAction::Ignore);
    let st = r.simple(0, T_OUT, 0, Some((DATA + 0x1000, 512, false)));
    r.kick(0);
    assert_eq!(status(&r.mem, st), S_OK);
    assert_eq!(r.errors.lock().unwrap()[0].action, ErrorAction::Ignore);
}

#[test]
fn stop_policy_parks_the_request_and_retries_it_on_resume() {
    let mut r = failing_writes(ErrorAction::Report, ErrorAction::Stop);
    let st = r.simple(0, T_OUT, 0, Some((DATA + 0x1000, 512, false)));
    r.kick(0);
    assert_eq!(r.dev.parked(), 1);
    assert_eq!(r.rings[0].used_idx(&r.mem), 0, "not completed");
    assert_eq!(status(&r.mem, st), 0xaa);
    assert_eq!(r.errors.lock().unwrap().len(), 1);
    assert_eq!(r.errors.lock().unwrap()[0].action, ErrorAction::Stop);
    r.dev.pause();
    assert_eq!(
        r.errors.lock().unwrap().len(),
        1,
        "nothing retried while paused"
    );
    r.dev.resume();
    r.serve(0);
    // Retried, failed again, parked again.
    assert_eq!(r.errors.lock().unwrap().len(), 2);
    assert_eq!(r.dev.parked(), 1);
    // A reset drops it.
    r.dev.reset();
    assert_eq!(r.dev.parked(), 0);
    assert_eq!(r.rings[0].used_idx(&r.mem), 0);
}

/// A tmpfs of 64 KiB, unmounted on drop.
struct TinyFs(std::path::PathBuf);

impl TinyFs {
    fn mount() -> Option<Self> {
        let dir = std::env::temp_dir().join(format!("ferrovm-vblk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
            .arg(&dir)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            Some(Self(dir))
        } else {
            let _ = std::fs::remove_dir(&dir);
            None
        }
    }
}

impl Drop for TinyFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn stop_on_enospc_then_resume_after_space_is_freed() {
    let Some(fs) = TinyFs::mount() else {
        eprintln!("skipped: cannot mount a tmpfs (needs root)");
        return;
    };
    let img_path = fs.0.join("disk.img");
    let image = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&img_path)
        .unwrap();
    image.set_len(MIB).unwrap();
    // Fill the file system.
    let filler_path = fs.0.join("filler");
    let mut filler = File::create(&filler_path).unwrap();
    while filler.write_all(&[1; 4096]).is_ok() {}
    let backend = BlockBackend::from_file_with_error_actions(
        image.try_clone().unwrap(),
        false,
        ErrorAction::Report,
        ErrorAction::Stop,
    );
    let mut r = Rig::build(backend, image, &opts());
    let f = r.dev.device_features();
    r.activate(f);
    let buf = DATA + 0x1000;
    r.mem.write_slice(&[0x7e; 4096], GuestAddress(buf)).unwrap();
    let st = r.simple(0, T_OUT, 16, Some((buf, 4096, false)));
    r.kick(0);
    {
        let errors = r.errors.lock().unwrap();
        assert_eq!(errors.len(), 1);
        assert!(errors[0].nospace);
        assert_eq!(errors[0].reason, "No space left on device");
        assert_eq!(errors[0].action, ErrorAction::Stop);
    }
    assert_eq!(r.dev.parked(), 1);
    r.dev.pause();
    drop(filler);
    std::fs::remove_file(&filler_path).unwrap();
    r.dev.resume();
    r.serve(0);
    assert_eq!(r.dev.parked(), 0);
    assert_eq!(status(&r.mem, st), S_OK);
    assert_eq!(r.rings[0].used_idx(&r.mem), 1);
    let mut got = vec![0; 4096];
    r.image.seek(SeekFrom::Start(16 * 512)).unwrap();
    r.image.read_exact(&mut got).unwrap();
    assert_eq!(got, vec![0x7e; 4096]);
    drop(r);
}

/// The fuzz target's loop, run here over pseudo-random rings: descriptor
/// fields are drawn near valid values (RAM addresses, small lengths, real
/// request types) so that parsing gets deep, not just rejected at once.
#[test]
fn random_rings_never_panic() {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..300 {
        let mut r = Rig::new(&BlkOptions {
            serial: Some("ABCDEFGHIJKLMNOPQRSTUV".into()),
            ..opts()
        });
        let f = r.dev.device_features() & next();
        r.activate(f);
        let t = r.rings[0].desc_addr();
        for i in 0..QSIZE {
            let addr = match next() % 8 {
                0 => next(),
                1 => RAM_END - (next() % 64),
                _ => DATA + next() % 0x3_0000,
            };
            let len = match next() % 8 {
                0 => next() as u32,
                _ => (next() % 1100) as u32,
            };
            let flags = (next() % 8) as u16;
            let nx = (next() % u64::from(QSIZE + 2)) as u16;
            Ring::write_desc(&r.mem, t, i, addr, len, flags, nx);
        }
        let types = [
            T_IN,
            T_OUT,
            T_FLUSH,
            T_GET_ID,
            T_DISCARD,
            T_WRITE_ZEROES,
            2,
            99,
        ];
        for k in 0..64u64 {
            let ty = types[(next() % 8) as usize];
            let at = GuestAddress(DATA + k * 16);
            r.mem.write_obj(ty, at).unwrap();
            r.mem
                .write_obj(next() % 140_000, GuestAddress(at.0 + 8))
                .unwrap();
        }
        for _ in 0..(next() % u64::from(QSIZE + 1)) {
            let head = (next() % u64::from(QSIZE + 1)) as u16;
            r.rings[0].publish(&r.mem, head);
        }
        if round % 7 == 0 {
            r.mem
                .write_obj(next() as u16, GuestAddress(r.rings[0].avail_addr() + 2))
                .unwrap();
        }
        r.kick(0);
        r.dev.pause();
        r.dev.resume();
        r.kick(0);
        r.dev.reset();
    }
}

#[test]
fn contiguous_reads_in_one_pass_are_merged_and_each_answered() {
    let image = memfd(64 * MIB);
    let pat: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
    image.write_all_at(&pat, 8 * 512).unwrap();
    let backend = BlockBackend::from_file(image.try_clone().unwrap(), false);
    let mut r = Rig::build(backend.clone(), image, &opts());
    let f = r.dev.device_features();
    r.activate(f);
    // Sectors 8-11 and 12-15 touch; 40-41 stands apart.
    let reqs = [(8u64, 2048u32), (12, 2048), (40, 1024)];
    let mut placed = Vec::new();
    for (k, &(sector, len)) in reqs.iter().enumerate() {
        let base = DATA + 0x1_0000 * k as u64;
        let hdr = header(&r.mem, base, T_IN, sector);
        let (buf, st) = (base + 0x1000, base + 0x8000);
        r.rings[0].add_chain(&r.mem, &[(hdr, 16, false), (buf, len, true), (st, 1, true)]);
        placed.push((buf, len, st));
    }
    r.kick(0);
    for _ in 0..10 {
        if r.dev.in_flight() == 0 {
            break;
        }
        r.serve(0);
    }
    assert_eq!(r.rings[0].used_idx(&r.mem), 3, "every request answered");
    for (k, &(buf, len, st)) in placed.iter().enumerate() {
        assert_eq!(status(&r.mem, st), S_OK, "request {k}");
        if k < 2 {
            let mut got = vec![0; len as usize];
            r.mem.read_slice(&mut got, GuestAddress(buf)).unwrap();
            assert_eq!(
                got,
                pat[k * 2048..(k + 1) * 2048],
                "request {k}'s own bytes"
            );
        }
    }
    // As QEMU accounts a merge: every request counts, one was merged away.
    let s = backend.stats_json();
    assert_eq!(s["rd_operations"], 3);
    assert_eq!(s["rd_merged"], 1);
    assert_eq!(s["rd_bytes"], 5120);
}
