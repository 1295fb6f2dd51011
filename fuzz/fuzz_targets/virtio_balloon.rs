//! Arbitrary bytes as a guest's virtio-balloon: the first bytes choose the
//! options, the queue, its size and the negotiated features, the rest is
//! guest RAM holding the descriptor table, the rings and the buffers (PFN
//! lists, stats entries, reported ranges). Processing must never panic nor
//! touch memory outside guest RAM; the pure parsers get the bytes too.
#![no_main]
use std::sync::Arc;

use devices::virtio::balloon::{
    parse_pfns, parse_stats, plan_inflate, plan_report, BalloonOptions, RamRange, Segment,
    VirtioBalloon,
};
use devices::virtio::{ActiveQueue, VirtioDevice, VirtioInterrupt};
use libfuzzer_sys::fuzz_target;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Guest RAM: 64 KiB at 0 and 8 KiB after a hole, so PFNs and buffers can
/// fall in the hole, straddle it or run past the end of RAM.
const RAM: usize = 0x1_0000;
const HIGH: u64 = 0x2_0000;
const DESC: u64 = 0x0;
const AVAIL: u64 = 0x4000;
const USED: u64 = 0x8000;

struct NoIrq;
impl VirtioInterrupt for NoIrq {
    fn notify_queue(&self, _queue: u16) {}
    fn notify_config(&self) {}
}

fuzz_target!(|data: &[u8]| {
    let Some((cfg, ram)) = data.split_first_chunk::<8>() else {
        return;
    };

    // The pure parsers on the raw bytes.
    let ranges = [
        RamRange {
            start: 0,
            len: RAM as u64,
        },
        RamRange {
            start: HIGH,
            len: 0x2000,
        },
    ];
    let pfns = parse_pfns(ram);
    let _ = plan_inflate(&pfns.pfns, &ranges);
    let _ = parse_stats(ram);
    let segs: Vec<_> = ram
        .chunks_exact(12)
        .map(|c| Segment {
            addr: u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]),
            len: u32::from_le_bytes([c[8], c[9], c[10], c[11]]),
        })
        .collect();
    let _ = plan_report(&segs, &ranges);

    let options = BalloonOptions {
        deflate_on_oom: cfg[0] & 1 != 0,
        free_page_reporting: cfg[0] & 2 != 0,
    };
    let ram_size = u64::from(u32::from_le_bytes([cfg[4], cfg[5], cfg[6], cfg[7]])) << 8;
    let mut dev = VirtioBalloon::new(options, ram_size, Arc::new(|_| {}), Arc::new(|| 0));
    let queues = dev.queue_max_sizes().len() as u16;
    let index = u16::from(cfg[1]) % queues;

    let Ok(mem) =
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), RAM), (GuestAddress(HIGH), 0x2000)])
    else {
        return;
    };
    let n = ram.len().min(RAM);
    let _ = mem.write_slice(&ram[..n], GuestAddress(0));

    let Ok(mut queue) = Queue::new(128) else {
        return;
    };
    queue.set_size(1 << (cfg[2] % 8));
    queue.set_desc_table_address(Some(DESC as u32), Some(0));
    queue.set_avail_ring_address(Some(AVAIL as u32), Some(0));
    queue.set_used_ring_address(Some(USED as u32), Some(0));
    queue.set_ready(true);

    let mask = u64::from(cfg[3]) | u64::from(cfg[3] & 0x30) << 24;
    let features = dev.device_features() & mask;
    dev.write_config(12, &[cfg[0], 0, 0, 0]);
    if dev
        .activate(mem, features, vec![ActiveQueue { index, queue }], Arc::new(NoIrq))
        .is_err()
    {
        return;
    }
    dev.set_target(ram_size >> (cfg[0] >> 4));
    dev.write_config(u64::from(cfg[1] & 0xf), &cfg[4..8]);
    dev.queue_notify(index);
    let _ = dev.request_stats();
    dev.pause();
    dev.queue_notify(index);
    let _ = dev.request_stats();
    dev.resume();
    dev.queue_notify(index);
    let _ = dev.guest_stats_json();
    let _ = dev.actual_bytes();
    let _ = dev.needs_reset();
    dev.reset();
    let _ = dev.request_stats();
});
