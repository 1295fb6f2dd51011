//! Engine bench: `cargo run --release -p block --example bench [FILE]`.
//! 4 KiB random reads at QD1 and QD32, 1 MiB sequential reads at QD4, on
//! a 256 MiB preallocated file with cache=none (O_DIRECT), for aio=threads
//! and aio=io_uring. Figures are in the branch report and engine/mod.rs.

use std::time::{Duration, Instant};

use block::{AttachOptions, BlockGraph, BlockQueue, IoBuf, IoCompletion, IoKind, IoRequest};

const SIZE: u64 = 256 << 20;

fn wait(q: &mut BlockQueue, out: &mut Vec<IoCompletion>) {
    let mut pfd = libc::pollfd {
        fd: q.completion_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut pfd, 1, 1000) };
    q.take_completions(out);
}

fn run(q: &mut BlockQueue, bs: usize, qd: usize, random: bool, dur: Duration) -> (f64, f64) {
    let layout = std::alloc::Layout::from_size_align(bs * qd, 4096).unwrap();
    // SAFETY: non-zero layout; freed below.
    let mem = unsafe { std::alloc::alloc_zeroed(layout) };
    let mut seed = 0x9e3779b97f4a7c15u64;
    let mut next_off = |i: u64| {
        if random {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % (SIZE / bs as u64)) * bs as u64
        } else {
            (i * bs as u64) % SIZE
        }
    };
    let start = Instant::now();
    let mut n = 0u64;
    let mut out = Vec::new();
    for slot in 0..qd {
        // SAFETY: slot*bs..+bs lies inside mem.
        let ptr = unsafe { mem.add(slot * bs) };
        q.submit(IoRequest {
            kind: IoKind::Read,
            offset: next_off(n),
            len: 0,
            bufs: vec![IoBuf { ptr, len: bs }],
            user_data: slot as u64,
        });
        n += 1;
    }
    let mut done = 0u64;
    while start.elapsed() < dur {
        wait(q, &mut out);
        for c in out.drain(..) {
            assert!(c.result.is_ok(), "{:?}", c.result);
            done += 1;
            // SAFETY: as above.
            let ptr = unsafe { mem.add(c.user_data as usize * bs) };
            q.submit(IoRequest {
                kind: IoKind::Read,
                offset: next_off(n),
                len: 0,
                bufs: vec![IoBuf { ptr, len: bs }],
                user_data: c.user_data,
            });
            n += 1;
        }
    }
    q.drain();
    q.take_completions(&mut out);
    let s = start.elapsed().as_secs_f64();
    // SAFETY: allocated above with this layout.
    unsafe { std::alloc::dealloc(mem, layout) };
    (
        done as f64 / s,
        done as f64 * bs as f64 / s / (1 << 20) as f64,
    )
}

fn main() {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "/var/tmp/ferrovm-bench.img".into());
    if std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0) != SIZE {
        let f = std::fs::File::create(&path).unwrap();
        use std::os::unix::fs::FileExt;
        let chunk = vec![0x5au8; 1 << 20];
        for i in 0..(SIZE >> 20) {
            f.write_all_at(&chunk, i << 20).unwrap();
        }
        f.sync_all().unwrap();
    }
    for aio in ["threads", "io_uring"] {
        let mut g = BlockGraph::new();
        let mut m = serde_json::Map::new();
        for (k, v) in [
            ("file", path.as_str()),
            ("format", "raw"),
            ("cache", "none"),
            ("aio", aio),
        ] {
            m.insert(k.into(), v.into());
        }
        g.add_drive("d0", &m).unwrap();
        let bb = g.attach("d0", "/bench", AttachOptions::default()).unwrap();
        let mut q = bb.open_queue().unwrap();
        let d = Duration::from_secs(3);
        let (i1, _) = run(&mut q, 4096, 1, true, d);
        let (i32_, _) = run(&mut q, 4096, 32, true, d);
        let (_, seq) = run(&mut q, 1 << 20, 4, false, d);
        println!("aio={aio:9} 4k randread QD1 {i1:8.0} IOPS  QD32 {i32_:8.0} IOPS  1M seqread QD4 {seq:7.0} MiB/s");
    }
}
