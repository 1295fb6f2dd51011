//! virtio-balloon against guest memory in anonymous host mappings, split
//! rings built by hand (virtio 1.2 §2.7). Expected values come from the
//! spec (§5.5) and QEMU 7.2's hw/virtio/virtio-balloon.c, and what
//! `qemu-system-x86_64` 7.2 answers over QMP (`qom-get … guest-stats`,
//! `qom-set … guest-stats-polling-interval`, `x-query-virtio-status`).

use std::sync::{Arc, Mutex};

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use super::*;
use crate::virtio::test_support::*;
use crate::virtio::VirtioDevice;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
/// Guest RAM: 1 MiB at 0, a hole (think MMIO) from 1 to 2 MiB, 1 MiB at 2 MiB.
const HIGH: u64 = 2 * MIB;
const RAM_SIZE: u64 = 2 * MIB;
const QSIZE: u16 = 16;
/// Where queue `q`'s rings live, and the buffers.
fn ring_base(q: u16) -> u64 {
    0x1_0000 * (u64::from(q) + 1)
}
const DATA: u64 = 0x8_0000;
const NOW: i64 = 1_700_000_000;

// Feature bits (virtio 1.2 §5.5.3, §6).
const F_STATS_VQ: u64 = 1 << 1;
const F_DEFLATE_ON_OOM: u64 = 1 << 2;
const F_PAGE_POISON: u64 = 1 << 4;
const F_REPORTING: u64 = 1 << 5;

// Stats tags (§5.5.6.3).
const S_SWAP_IN: u16 = 0;
const S_MEMFREE: u16 = 4;
const S_MEMTOT: u16 = 5;
const S_HTLB_PGFAIL: u16 = 9;

struct Rig {
    mem: GuestMemoryMmap,
    dev: VirtioBalloon,
    irq: Arc<Irq>,
    rings: Vec<Ring>,
    changes: Arc<Mutex<Vec<u64>>>,
}

impl Rig {
    fn new(options: BalloonOptions) -> Self {
        let changes: Arc<Mutex<Vec<u64>>> = Arc::default();
        let c = changes.clone();
        let dev = VirtioBalloon::new(
            options,
            RAM_SIZE,
            Arc::new(move |v| c.lock().unwrap().push(v)),
            Arc::new(|| NOW),
        );
        let mem = guest_ram(&[(0, MIB), (HIGH, MIB)]);
        Self {
            mem,
            dev,
            irq: Arc::default(),
            rings: Vec::new(),
            changes,
        }
    }
    fn activate(&mut self, features: u64) {
        let n = self.dev.queue_max_sizes().len() as u16;
        self.rings = (0..n).map(|q| Ring::new(ring_base(q), QSIZE)).collect();
        let queues = active_queues(&self.rings);
        self.dev
            .activate(self.mem.clone(), features, queues, self.irq.clone())
            .unwrap();
    }
    /// Active with everything offered except EVENT_IDX, so that every used
    /// entry interrupts.
    fn started(options: BalloonOptions) -> Self {
        let mut r = Self::new(options);
        let f = r.dev.device_features() & !F_EVENT_IDX;
        r.activate(f);
        r
    }
    fn config32(&self, off: u64) -> u32 {
        let mut b = [0u8; 4];
        self.dev.read_config(off, &mut b);
        u32::from_le_bytes(b)
    }
    /// Writes `pfns` at `at` and queues them as one readable buffer on `q`.
    fn pfns(&mut self, q: u16, at: u64, pfns: &[u32]) {
        let bytes: Vec<u8> = pfns.iter().flat_map(|p| p.to_le_bytes()).collect();
        self.mem.write_slice(&bytes, GuestAddress(at)).unwrap();
        self.rings[usize::from(q)].add_chain(&self.mem, &[(at, bytes.len() as u32, false)]);
    }
    fn fill(&self, gpa: u64, len: u64, byte: u8) {
        self.mem
            .write_slice(&vec![byte; len as usize], GuestAddress(gpa))
            .unwrap();
    }
    fn bytes(&self, gpa: u64, len: u64) -> Vec<u8> {
        let mut v = vec![0; len as usize];
        self.mem.read_slice(&mut v, GuestAddress(gpa)).unwrap();
        v
    }
    /// Whether the host has the 4 KiB page at `gpa` in memory (mincore(2)).
    fn resident(&self, gpa: u64) -> bool {
        let host = self.mem.get_host_address(GuestAddress(gpa)).unwrap();
        let mut v = 0u8;
        // SAFETY: `host` is a page-aligned address inside the guest mapping;
        // mincore only reads the page tables and writes one byte to `v`.
        let r = unsafe { libc::mincore(host.cast(), 4096, &mut v) };
        assert_eq!(r, 0, "mincore: {}", std::io::Error::last_os_error());
        v & 1 != 0
    }
    /// A stats buffer with `entries` (tag, value), plus `extra` raw bytes.
    fn stats_buffer(&mut self, at: u64, entries: &[(u16, u64)], extra: &[u8]) -> u16 {
        let mut b = Vec::new();
        for (t, v) in entries {
            b.extend_from_slice(&t.to_le_bytes());
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(extra);
        self.mem.write_slice(&b, GuestAddress(at)).unwrap();
        self.rings[usize::from(STATS_QUEUE)].add_chain(&self.mem, &[(at, b.len() as u32, false)])
    }
}

fn host_page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as u64 }
}

// ---- configuration space and features ------------------------------------

#[test]
fn default_device_is_qemus() {
    let r = Rig::new(BalloonOptions::default());
    assert_eq!(r.dev.device_type(), 5);
    // inflate, deflate, stats: 128 each.
    assert_eq!(r.dev.queue_max_sizes(), &[128, 128, 128]);
    // x-query-virtio-status host-features: STATS_VQ and PAGE_POISON, plus
    // the ring features.
    assert_eq!(
        r.dev.device_features(),
        F_STATS_VQ | F_PAGE_POISON | F_INDIRECT | F_EVENT_IDX
    );
    // With page-poison on, the whole struct virtio_balloon_config: 16 bytes.
    assert_eq!(r.dev.config_size(), 16);
    assert_eq!(r.config32(0), 0, "num_pages");
    assert_eq!(r.config32(4), 0, "actual");
    assert_eq!(r.config32(8), 0, "free_page_hint_cmd_id");
    assert_eq!(r.config32(12), 0, "poison_val");
    assert_eq!(r.config32(16), 0xffff_ffff, "past the structure");
    let mut b = [0u8; 2];
    r.dev.read_config(15, &mut b);
    assert_eq!(b, [0xff, 0xff], "an access straddling the end");
    assert_eq!(r.dev.actual_bytes(), RAM_SIZE);
}

#[test]
fn options_add_their_features_and_the_reporting_queue() {
    let r = Rig::new(BalloonOptions {
        deflate_on_oom: true,
        free_page_reporting: true,
    });
    let f = r.dev.device_features();
    assert_ne!(f & F_DEFLATE_ON_OOM, 0);
    assert_ne!(f & F_REPORTING, 0);
    // QEMU: num-vqs 4, the reporting queue of 32 after the stats queue.
    assert_eq!(r.dev.queue_max_sizes(), &[128, 128, 128, 32]);
}

// ---- target, num_pages and actual ----------------------------------------

#[test]
fn set_target_asks_for_pages_and_raises_a_config_interrupt() {
    let mut r = Rig::started(BalloonOptions::default());
    // 2 MiB guest, 1.5 MiB target: 512 KiB = 128 pages to give back.
    r.dev.set_target(RAM_SIZE - 512 * KIB);
    assert_eq!(r.config32(0), 128);
    assert_eq!(r.irq.config_count(), 1);
    // A target above the RAM size means no balloon at all.
    r.dev.set_target(4 * RAM_SIZE);
    assert_eq!(r.config32(0), 0);
    assert_eq!(r.irq.config_count(), 2);
    // A partial page rounds the request down.
    r.dev.set_target(RAM_SIZE - 4096 - 100);
    assert_eq!(r.config32(0), 1);
    // 0 changes nothing (QEMU only acts on a non-zero target).
    r.dev.set_target(0);
    assert_eq!(r.config32(0), 1);
    assert_eq!(r.irq.config_count(), 3);
    // query-balloon still shows what the driver reported: nothing yet.
    assert_eq!(r.dev.actual_bytes(), RAM_SIZE);
}

#[test]
fn set_target_before_driver_ok_only_sets_num_pages() {
    let mut r = Rig::new(BalloonOptions::default());
    r.dev.set_target(MIB);
    assert_eq!(r.config32(0), 256);
    r.activate(r.dev.device_features());
    assert_eq!(r.irq.config_count(), 0);
    assert_eq!(r.config32(0), 256, "the driver reads it after DRIVER_OK");
}

#[test]
fn driver_writing_actual_reports_the_new_size() {
    let mut r = Rig::started(BalloonOptions::default());
    r.dev.write_config(4, &100u32.to_le_bytes());
    assert_eq!(*r.changes.lock().unwrap(), vec![RAM_SIZE - 100 * 4096]);
    assert_eq!(r.dev.actual_bytes(), RAM_SIZE - 100 * 4096);
    assert_eq!(r.config32(4), 100);
    // The same value again is no change: no event.
    r.dev.write_config(4, &100u32.to_le_bytes());
    assert_eq!(r.changes.lock().unwrap().len(), 1);
    // One byte of `actual` (the other bytes stay): 100 -> 0x164 = 356.
    r.dev.write_config(5, &[1]);
    assert_eq!(r.dev.actual_pages(), 356);
    assert_eq!(r.changes.lock().unwrap()[1], RAM_SIZE - 356 * 4096);
    // num_pages belongs to the host; writes past the structure are ignored.
    r.dev.set_target(MIB);
    r.dev.write_config(0, &7u32.to_le_bytes());
    assert_eq!(r.config32(0), 256);
    r.dev.write_config(14, &[9, 9, 9, 9]);
    assert_eq!(r.config32(12), 0);
    assert_eq!(r.changes.lock().unwrap().len(), 2);
}

// ---- inflate and deflate --------------------------------------------------

#[test]
fn inflated_pages_are_discarded_from_the_host() {
    assert_eq!(host_page_size(), 4096);
    let mut r = Rig::started(BalloonOptions::default());
    let (a, b, keep) = (HIGH + 0x3000, HIGH + 0x4000, HIGH + 0x5000);
    r.fill(a, 0x3000, 0x5a);
    assert!(r.resident(a) && r.resident(b) && r.resident(keep));
    r.pfns(INFLATE_QUEUE, DATA, &[(a >> 12) as u32, (b >> 12) as u32]);
    r.dev.queue_notify(INFLATE_QUEUE);

    // The host dropped both pages (checked before reading them back, which
    // maps them again)...
    assert!(!r.resident(a), "inflated page still resident");
    assert!(!r.resident(b), "inflated page still resident");
    assert!(r.resident(keep));
    // ...so the guest finds them zeroed; the next page is untouched.
    assert_eq!(r.bytes(a, 0x2000), vec![0; 0x2000]);
    assert_eq!(r.bytes(keep, 0x1000), vec![0x5a; 0x1000]);
    // The buffer went back, used length 0, with an interrupt.
    let ring = &r.rings[0];
    assert_eq!(ring.used_idx(&r.mem), 1);
    assert_eq!(ring.used(&r.mem, 0), (0, 0));
    assert_eq!(r.irq.queue_irqs(INFLATE_QUEUE), 1);
    assert!(!r.dev.needs_reset());
}

#[test]
fn pfns_may_straddle_descriptors() {
    let mut r = Rig::started(BalloonOptions::default());
    let page = HIGH + 0x7000;
    r.fill(page, 0x1000, 0x33);
    let pfn = ((page >> 12) as u32).to_le_bytes();
    r.mem.write_slice(&pfn[..1], GuestAddress(DATA)).unwrap();
    r.mem
        .write_slice(&pfn[1..], GuestAddress(DATA + 0x100))
        .unwrap();
    r.rings[0].add_chain(&r.mem, &[(DATA, 1, false), (DATA + 0x100, 3, false)]);
    r.dev.queue_notify(INFLATE_QUEUE);
    assert_eq!(r.bytes(page, 0x1000), vec![0; 0x1000]);
}

#[test]
fn a_pfn_list_longer_than_one_read_chunk_is_read_to_the_end() {
    let mut r = Rig::started(BalloonOptions::default());
    let page = HIGH + 0xe000;
    r.fill(page, 0x1000, 0x3c);
    // 16380 PFNs fill the 65520-byte read chunk; the good one comes after.
    let mut pfns = vec![u32::MAX; 16380];
    pfns.push((page >> 12) as u32);
    r.pfns(INFLATE_QUEUE, 0x9_0000, &pfns);
    r.dev.queue_notify(INFLATE_QUEUE);
    assert_eq!(r.bytes(page, 0x1000), vec![0; 0x1000]);
    assert!(!r.dev.needs_reset());
}

#[test]
fn deflated_pages_keep_their_contents() {
    let mut r = Rig::started(BalloonOptions::default());
    let page = HIGH + 0x9000;
    r.fill(page, 0x1000, 0x77);
    r.pfns(DEFLATE_QUEUE, DATA, &[(page >> 12) as u32]);
    r.dev.queue_notify(DEFLATE_QUEUE);
    assert_eq!(r.bytes(page, 0x1000), vec![0x77; 0x1000]);
    assert_eq!(r.rings[1].used_idx(&r.mem), 1);
    assert_eq!(r.irq.queue_irqs(DEFLATE_QUEUE), 1);
}

#[test]
fn pfns_outside_ram_are_skipped_and_the_rest_is_done() {
    let mut r = Rig::started(BalloonOptions::default());
    let good = HIGH + 0xa000;
    r.fill(good, 0x1000, 0x11);
    r.fill(0x9_f000, 0x1000, 0x22);
    let garbage = [
        u32::MAX,                     // far beyond RAM
        (MIB >> 12) as u32,           // the hole after low RAM
        ((HIGH - 4096) >> 12) as u32, // the last page of the hole
        ((HIGH + MIB) >> 12) as u32,  // just past the end of RAM
        (good >> 12) as u32,
    ];
    // Two stray bytes after the last PFN are ignored as well.
    let mut bytes: Vec<u8> = garbage.iter().flat_map(|p| p.to_le_bytes()).collect();
    bytes.extend_from_slice(&[0x9f, 0]);
    r.mem.write_slice(&bytes, GuestAddress(DATA)).unwrap();
    r.rings[0].add_chain(&r.mem, &[(DATA, bytes.len() as u32, false)]);
    r.dev.queue_notify(INFLATE_QUEUE);
    assert!(!r.dev.needs_reset());
    assert_eq!(r.rings[0].used_idx(&r.mem), 1);
    assert_eq!(r.bytes(good, 0x1000), vec![0; 0x1000]);
    // 0x9f in the stray bytes would have been PFN 0x9f: untouched.
    assert_eq!(r.bytes(0x9_f000, 0x1000), vec![0x22; 0x1000]);
    assert_eq!(r.irq.config_count(), 0);
}

#[test]
fn a_writable_descriptor_before_a_readable_one_needs_reset() {
    let mut r = Rig::started(BalloonOptions::default());
    let page = HIGH + 0xb000;
    r.fill(page, 0x1000, 0x44);
    r.mem
        .write_obj((page >> 12) as u32, GuestAddress(DATA + 0x10))
        .unwrap();
    // QEMU virtqueue_pop: "Incorrect order for descriptors".
    r.rings[0].add_chain(&r.mem, &[(DATA, 16, true), (DATA + 0x10, 4, false)]);
    r.dev.queue_notify(INFLATE_QUEUE);
    assert!(r.dev.needs_reset());
    assert_eq!(r.irq.config_count(), 1, "the driver is told once");
    assert_eq!(r.rings[0].used_idx(&r.mem), 0);
    assert_eq!(r.bytes(page, 0x1000), vec![0x44; 0x1000]);
    // Nothing is processed until reset, not even good chains.
    r.pfns(INFLATE_QUEUE, DATA + 0x100, &[(page >> 12) as u32]);
    r.dev.queue_notify(INFLATE_QUEUE);
    assert_eq!(r.bytes(page, 0x1000), vec![0x44; 0x1000]);
    assert_eq!(r.irq.config_count(), 1);
    r.dev.reset();
    assert!(!r.dev.needs_reset());
}

#[test]
fn a_writable_buffer_after_the_pfns_is_ignored() {
    // QEMU reads the PFNs from out_sg and never looks at in_sg.
    let mut r = Rig::started(BalloonOptions::default());
    let page = HIGH + 0xc000;
    r.fill(page, 0x1000, 0x55);
    r.mem
        .write_obj((page >> 12) as u32, GuestAddress(DATA))
        .unwrap();
    r.fill(DATA + 0x100, 16, 0xee);
    r.rings[0].add_chain(&r.mem, &[(DATA, 4, false), (DATA + 0x100, 16, true)]);
    r.dev.queue_notify(INFLATE_QUEUE);
    assert!(!r.dev.needs_reset());
    assert_eq!(r.bytes(page, 0x1000), vec![0; 0x1000]);
    assert_eq!(r.bytes(DATA + 0x100, 16), vec![0xee; 16]);
    assert_eq!(r.rings[0].used(&r.mem, 0), (0, 0));
}

#[test]
fn a_buffer_outside_ram_needs_reset() {
    // QEMU virtqueue_map_desc: "virtio: bogus descriptor or out of resources".
    let mut r = Rig::started(BalloonOptions::default());
    r.rings[0].add_chain(&r.mem, &[(MIB + 0x100, 4, false)]);
    r.dev.queue_notify(INFLATE_QUEUE);
    assert!(r.dev.needs_reset());
    assert_eq!(r.irq.config_count(), 1);
}

#[test]
fn a_zero_sized_buffer_needs_reset() {
    let mut r = Rig::started(BalloonOptions::default());
    r.rings[1].add_chain(&r.mem, &[(DATA, 0, false)]);
    r.dev.queue_notify(DEFLATE_QUEUE);
    assert!(r.dev.needs_reset());
}

// ---- statistics -------------------------------------------------------------

#[test]
fn guest_stats_before_any_report_are_qemus() {
    let r = Rig::new(BalloonOptions::default());
    // What QEMU 7.2 answers to qom-get guest-stats before the driver reports:
    // every stat as uint64 -1, last-update 0.
    let unknown = 18_446_744_073_709_551_615u64;
    assert_eq!(
        r.dev.guest_stats_json(),
        serde_json::json!({
            "last-update": 0,
            "stats": {
                "stat-swap-in": unknown,
                "stat-swap-out": unknown,
                "stat-major-faults": unknown,
                "stat-minor-faults": unknown,
                "stat-free-memory": unknown,
                "stat-total-memory": unknown,
                "stat-available-memory": unknown,
                "stat-disk-caches": unknown,
                "stat-htlb-pgalloc": unknown,
                "stat-htlb-pgfail": unknown,
            }
        })
    );
    assert_eq!(r.dev.stats_interval(), 0);
}

#[test]
fn a_stats_buffer_is_parsed_and_kept_until_requested() {
    let mut r = Rig::started(BalloonOptions::default());
    // Unknown tag 42 is ignored, as are 3 trailing bytes.
    r.stats_buffer(
        DATA,
        &[
            (S_SWAP_IN, 5),
            (S_MEMFREE, 123_456_789),
            (42, 1),
            (S_HTLB_PGFAIL, 7),
            (S_MEMTOT, 1 << 40),
        ],
        &[1, 2, 3],
    );
    r.dev.queue_notify(STATS_QUEUE);
    let j = r.dev.guest_stats_json();
    assert_eq!(j["last-update"], NOW);
    let s = &j["stats"];
    assert_eq!(s["stat-swap-in"], 5);
    assert_eq!(s["stat-free-memory"], 123_456_789);
    assert_eq!(s["stat-htlb-pgfail"], 7);
    assert_eq!(s["stat-total-memory"], 1u64 << 40);
    assert_eq!(s["stat-swap-out"], u64::MAX);
    assert_eq!(s["stat-htlb-pgalloc"], u64::MAX);
    assert_eq!(s.as_object().unwrap().len(), 10);
    // The device holds the buffer...
    let ring = &r.rings[usize::from(STATS_QUEUE)];
    assert_eq!(ring.used_idx(&r.mem), 0);
    assert_eq!(r.irq.queue_irqs(STATS_QUEUE), 0);
    // ...until the stats timer asks for fresh values.
    assert!(r.dev.request_stats());
    assert_eq!(ring.used_idx(&r.mem), 1);
    assert_eq!(ring.used(&r.mem, 0), (0, 0));
    assert_eq!(r.irq.queue_irqs(STATS_QUEUE), 1);
    // Nothing held any more.
    assert!(!r.dev.request_stats());
    assert_eq!(ring.used_idx(&r.mem), 1);
}

#[test]
fn a_new_stats_report_replaces_all_old_values() {
    let mut r = Rig::started(BalloonOptions::default());
    r.stats_buffer(DATA, &[(S_SWAP_IN, 5), (S_MEMFREE, 9)], &[]);
    r.dev.queue_notify(STATS_QUEUE);
    assert!(r.dev.request_stats());
    // The driver refills with fewer stats: the missing one is unknown again.
    r.stats_buffer(DATA + 0x100, &[(S_MEMFREE, 10)], &[]);
    r.dev.queue_notify(STATS_QUEUE);
    let j = r.dev.guest_stats_json();
    assert_eq!(j["stats"]["stat-free-memory"], 10);
    assert_eq!(j["stats"]["stat-swap-in"], u64::MAX);
}

#[test]
fn a_second_stats_buffer_returns_the_first() {
    let mut r = Rig::started(BalloonOptions::default());
    let first = r.stats_buffer(DATA, &[(S_MEMFREE, 1)], &[]);
    r.dev.queue_notify(STATS_QUEUE);
    r.stats_buffer(DATA + 0x100, &[(S_MEMFREE, 2)], &[]);
    r.dev.queue_notify(STATS_QUEUE);
    let ring = &r.rings[usize::from(STATS_QUEUE)];
    assert_eq!(ring.used_idx(&r.mem), 1);
    assert_eq!(ring.used(&r.mem, 0), (u32::from(first), 0));
    assert_eq!(r.dev.guest_stats_json()["stats"]["stat-free-memory"], 2);
}

#[test]
fn stats_are_not_requested_without_a_buffer_or_stats_vq() {
    let mut r = Rig::new(BalloonOptions::default());
    assert!(!r.dev.request_stats(), "not active");
    r.activate(F_PAGE_POISON);
    r.stats_buffer(DATA, &[(S_MEMFREE, 1)], &[]);
    r.dev.queue_notify(STATS_QUEUE);
    assert!(!r.dev.request_stats(), "STATS_VQ not negotiated");
    assert_eq!(r.rings[2].used_idx(&r.mem), 0);
}

#[test]
fn polling_interval_is_validated_as_qemu() {
    let mut r = Rig::new(BalloonOptions::default());
    let e = r.dev.set_stats_interval(-1).unwrap_err();
    assert_eq!(e.to_string(), "timer value must be greater than zero");
    let e = r.dev.set_stats_interval(1 << 32).unwrap_err();
    assert_eq!(e.to_string(), "timer value is too big");
    assert_eq!(r.dev.stats_interval(), 0);
    // A new timer fires at once, then every interval.
    assert_eq!(
        r.dev.set_stats_interval(5),
        Ok(StatsTimer::Arm {
            first_after_secs: 0,
            period_secs: 5
        })
    );
    assert_eq!(r.dev.stats_interval(), 5);
    assert_eq!(r.dev.set_stats_interval(5), Ok(StatsTimer::Unchanged));
    // A running timer moves to the new period.
    assert_eq!(
        r.dev.set_stats_interval(i64::from(u32::MAX)),
        Ok(StatsTimer::Arm {
            first_after_secs: u32::MAX,
            period_secs: u32::MAX
        })
    );
    assert_eq!(r.dev.set_stats_interval(0), Ok(StatsTimer::Stop));
    assert_eq!(r.dev.stats_interval(), 0);
}

// ---- free page reporting ----------------------------------------------------

#[test]
fn reported_free_pages_are_discarded() {
    let mut r = Rig::started(BalloonOptions {
        free_page_reporting: true,
        ..Default::default()
    });
    let (range, odd) = (HIGH + 0x2_0000, HIGH + 0x3_0000);
    r.fill(range, 0x2000, 0x66);
    r.fill(odd, 0x2000, 0x67);
    // Two pages, and a range that does not start on a page boundary.
    r.rings[3].add_chain(
        &r.mem,
        &[(range, 0x2000, true), (odd + 0x800, 0x1000, true)],
    );
    r.dev.queue_notify(REPORTING_QUEUE);
    assert!(!r.resident(range) && !r.resident(range + 0x1000));
    assert_eq!(r.bytes(range, 0x2000), vec![0; 0x2000]);
    assert_eq!(
        r.bytes(odd, 0x2000),
        vec![0x67; 0x2000],
        "unaligned: ignored"
    );
    assert_eq!(r.rings[3].used(&r.mem, 0), (0, 0));
    assert_eq!(r.irq.queue_irqs(REPORTING_QUEUE), 1);
    assert!(!r.dev.needs_reset());
}

#[test]
fn no_discard_while_the_guest_poisons_free_pages() {
    let mut r = Rig::new(BalloonOptions {
        free_page_reporting: true,
        ..Default::default()
    });
    // Linux writes poison_val after FEATURES_OK, before DRIVER_OK.
    r.dev.write_config(12, &0xaaaa_aaaau32.to_le_bytes());
    r.activate(r.dev.device_features() & !F_EVENT_IDX);
    assert_eq!(r.config32(12), 0xaaaa_aaaa);
    let range = HIGH + 0x4_0000;
    r.fill(range, 0x1000, 0xaa);
    r.rings[3].add_chain(&r.mem, &[(range, 0x1000, true)]);
    r.dev.queue_notify(REPORTING_QUEUE);
    assert_eq!(r.bytes(range, 0x1000), vec![0xaa; 0x1000]);
    assert_eq!(r.rings[3].used_idx(&r.mem), 1, "returned all the same");
    // Reset clears poison_val (virtio_balloon_device_reset).
    r.dev.reset();
    assert_eq!(r.config32(12), 0);
}

#[test]
fn poison_val_needs_page_poison() {
    let mut r = Rig::new(BalloonOptions::default());
    r.dev.write_config(12, &7u32.to_le_bytes());
    r.activate(F_STATS_VQ);
    assert_eq!(r.config32(12), 0);
    r.dev.write_config(12, &7u32.to_le_bytes());
    assert_eq!(r.config32(12), 0);
}

// ---- reset, pause, resume ------------------------------------------------------

#[test]
fn reset_drops_the_stats_buffer_and_keeps_the_balloon() {
    let mut r = Rig::started(BalloonOptions::default());
    r.dev.set_target(MIB);
    r.dev.write_config(4, &200u32.to_le_bytes());
    r.stats_buffer(DATA, &[(S_MEMFREE, 3)], &[]);
    r.dev.queue_notify(STATS_QUEUE);
    r.dev.set_stats_interval(2).unwrap();
    r.dev.reset();
    // QEMU keeps num_pages, actual, the stats and the interval.
    assert_eq!(r.config32(0), 256);
    assert_eq!(r.dev.actual_bytes(), RAM_SIZE - 200 * 4096);
    assert_eq!(r.dev.guest_stats_json()["stats"]["stat-free-memory"], 3);
    assert_eq!(r.dev.stats_interval(), 2);
    // The held buffer is gone: nothing is written to the old rings.
    assert!(!r.dev.request_stats());
    assert_eq!(r.rings[2].used_idx(&r.mem), 0);
    r.activate(r.dev.device_features());
    assert!(!r.dev.request_stats());
}

#[test]
fn kicks_and_stats_requests_wait_while_paused() {
    let mut r = Rig::started(BalloonOptions::default());
    r.stats_buffer(DATA, &[(S_MEMFREE, 3)], &[]);
    r.dev.queue_notify(STATS_QUEUE);
    let page = HIGH + 0xd000;
    r.fill(page, 0x1000, 0x12);
    r.pfns(INFLATE_QUEUE, DATA + 0x100, &[(page >> 12) as u32]);
    r.dev.pause();
    r.dev.queue_notify(INFLATE_QUEUE);
    assert!(!r.dev.request_stats());
    assert_eq!(r.bytes(page, 0x1000), vec![0x12; 0x1000]);
    assert_eq!(r.rings[0].used_idx(&r.mem), 0);
    assert_eq!(r.rings[2].used_idx(&r.mem), 0);
    r.dev.resume();
    assert_eq!(r.bytes(page, 0x1000), vec![0; 0x1000]);
    assert_eq!(r.rings[0].used_idx(&r.mem), 1);
    assert_eq!(
        r.rings[2].used_idx(&r.mem),
        1,
        "the stats request was served"
    );
}

#[test]
fn event_idx_suppresses_interrupts_the_driver_did_not_ask_for() {
    let mut r = Rig::new(BalloonOptions::default());
    r.activate(r.dev.device_features());
    // used_event = 1: interrupt when the used index passes 1 (§2.7.10).
    let used_event = r.rings[0].avail_addr() + 4 + 2 * u64::from(QSIZE);
    r.mem.write_obj(1u16, GuestAddress(used_event)).unwrap();
    r.pfns(INFLATE_QUEUE, DATA, &[u32::MAX]);
    r.dev.queue_notify(INFLATE_QUEUE);
    assert_eq!(r.irq.queue_irqs(INFLATE_QUEUE), 0);
    r.pfns(INFLATE_QUEUE, DATA + 0x10, &[u32::MAX]);
    r.dev.queue_notify(INFLATE_QUEUE);
    assert_eq!(r.irq.queue_irqs(INFLATE_QUEUE), 1);
}

// ---- the pure parsers ---------------------------------------------------------

#[test]
fn pfn_parser_reads_le32_and_counts_stray_bytes() {
    let l = parse_pfns(&[1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 9, 9]);
    assert_eq!(l.pfns, vec![1, u32::MAX]);
    assert_eq!(l.trailing, 2);
}

#[test]
fn consecutive_pfns_make_one_run_but_not_across_regions() {
    let ram = [
        RamRange {
            start: 0,
            len: 0x2000,
        },
        RamRange {
            start: 0x2000,
            len: 0x2000,
        },
    ];
    let plan = plan_inflate(&[0, 1, 2, 3, 7], &ram);
    assert_eq!(
        plan.runs,
        vec![
            GuestRun {
                gpa: 0,
                len: 0x2000
            },
            GuestRun {
                gpa: 0x2000,
                len: 0x2000
            },
        ]
    );
    assert_eq!(
        plan.skipped,
        vec![PageError::PfnNotRam {
            pfn: 7,
            gpa: 0x7000
        }]
    );
}

#[test]
fn stats_parser_keeps_the_last_value_of_a_tag() {
    let mut b = Vec::new();
    for (t, v) in [(S_MEMFREE, 1u64), (300, 2), (S_MEMFREE, 3)] {
        b.extend_from_slice(&t.to_le_bytes());
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.push(0);
    let s = parse_stats(&b);
    assert_eq!(s.values[usize::from(S_MEMFREE)], 3);
    assert_eq!(s.values[0], STAT_UNKNOWN);
    assert_eq!(s.unknown_tags, vec![300]);
    assert_eq!(s.trailing, 1);
}
