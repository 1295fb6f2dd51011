//! Arbitrary bytes as a guest's virtio-blk queue: the first bytes choose the
//! queue size and negotiated features, the rest is guest RAM holding the
//! descriptor table, the rings, headers and buffers. Processing the queue
//! (notify, completions, pause/resume, reset) must never panic nor touch
//! memory outside guest RAM.
#![no_main]
use std::fs::File;
use std::os::fd::FromRawFd;
use std::sync::Arc;

use block::{BlockBackend, ErrorAction};
use devices::virtio::block::{BlkOptions, VirtioBlock};
use devices::virtio::{ActiveQueue, VirtioDevice, VirtioInterrupt};
use libfuzzer_sys::fuzz_target;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Guest RAM: 64 KiB at 0 and 4 KiB after a hole, so buffers can straddle
/// the end of RAM or fall in the hole.
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

fn image() -> Option<File> {
    // SAFETY: a plain syscall with a static NUL-terminated name.
    let fd = unsafe { libc::memfd_create(c"vblk-fuzz".as_ptr(), 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: fd is a fresh descriptor we own.
    let f = unsafe { File::from_raw_fd(fd) };
    f.set_len(1 << 20).ok()?;
    Some(f)
}

fuzz_target!(|data: &[u8]| {
    let Some((cfg, ram)) = data.split_first_chunk::<4>() else {
        return;
    };
    let Some(file) = image() else {
        return;
    };
    let read_only = cfg[1] & 1 != 0;
    let werror = match cfg[1] >> 1 & 3 {
        0 => ErrorAction::Report,
        1 => ErrorAction::Ignore,
        _ => ErrorAction::Stop,
    };
    let backend =
        BlockBackend::from_file_with_error_actions(file, read_only, ErrorAction::Report, werror);
    let opts = BlkOptions {
        serial: Some("fuzz-serial-0123456789".into()),
        logical_block_size: if cfg[1] & 8 != 0 { 4096 } else { 0 },
        physical_block_size: if cfg[1] & 8 != 0 { 4096 } else { 0 },
        ..BlkOptions::default()
    };
    let Ok(mut dev) = VirtioBlock::new(backend, &opts, Arc::new(|_| {})) else {
        return;
    };

    let Ok(mem) =
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), RAM), (GuestAddress(HIGH), 0x1000)])
    else {
        return;
    };
    let n = ram.len().min(RAM);
    let _ = mem.write_slice(&ram[..n], GuestAddress(0));

    let Ok(mut queue) = Queue::new(256) else {
        return;
    };
    queue.set_size(1 << (cfg[0] % 9));
    queue.set_desc_table_address(Some(DESC as u32), Some(0));
    queue.set_avail_ring_address(Some(AVAIL as u32), Some(0));
    queue.set_used_ring_address(Some(USED as u32), Some(0));
    queue.set_ready(true);

    // Feature bits as a driver might accept them: the offered set, masked.
    let mask = u64::from(u32::from_le_bytes([cfg[2], cfg[3], 0xff, 0xff]));
    let features = dev.device_features() & (mask | mask << 32);
    if dev
        .activate(
            mem,
            features,
            vec![ActiveQueue { index: 0, queue }],
            Arc::new(NoIrq),
        )
        .is_err()
    {
        return;
    }
    dev.write_config(32, &[cfg[2] & 1]);
    dev.queue_notify(0);
    dev.handle_event(0);
    dev.pause();
    dev.resume();
    dev.handle_event(0);
    dev.queue_notify(0);
    dev.handle_event(0);
    let _ = dev.needs_reset();
    dev.reset();
});
