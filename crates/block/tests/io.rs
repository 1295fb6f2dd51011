mod common;
use std::os::unix::fs::FileExt;

use block::{BlockQueue, IoBuf, IoCompletion, IoKind, IoRequest};
use common::*;

fn wait_all(q: &mut BlockQueue, n: usize) -> Vec<IoCompletion> {
    let mut out = Vec::new();
    while out.len() < n {
        let mut pfd = libc::pollfd {
            fd: q.completion_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut pfd, 1, 5000) };
        q.take_completions(&mut out);
    }
    out
}

fn req(kind: IoKind, offset: u64, buf: &mut [u8], user_data: u64) -> IoRequest {
    IoRequest {
        kind,
        offset,
        len: buf.len() as u64,
        bufs: vec![IoBuf {
            ptr: buf.as_mut_ptr(),
            len: buf.len(),
        }],
        user_data,
    }
}

fn roundtrip(extra: &[(&str, &str)]) {
    let img = TempImage::new("rt", 1 << 20);
    let (g, bb) = attached_drive(&img, extra);
    let mut q = bb.open_queue().unwrap();
    // Unaligned for O_DIRECT on purpose: offset 512+3, odd length, odd address.
    let mut backing = vec![0u8; 8192];
    let data: &mut [u8] = &mut backing[1..1 + 3000];
    for (i, b) in data.iter_mut().enumerate() {
        *b = (i % 251) as u8;
    }
    let expect = data.to_vec();
    q.submit(req(IoKind::Write, 515, data, 1));
    assert_eq!(
        wait_all(&mut q, 1),
        [IoCompletion {
            user_data: 1,
            result: Ok(3000)
        }]
    );
    let mut flush = [0u8; 0];
    q.submit(req(IoKind::Flush, 0, &mut flush, 2));
    assert_eq!(wait_all(&mut q, 1)[0].result, Ok(0));
    let mut on_disk = vec![0u8; 3000];
    std::fs::File::open(&img.0)
        .unwrap()
        .read_exact_at(&mut on_disk, 515)
        .unwrap();
    assert_eq!(on_disk, expect);
    // Bytes around the write are untouched (read-modify-write kept them zero).
    let mut around = [9u8; 2];
    std::fs::File::open(&img.0)
        .unwrap()
        .read_exact_at(&mut around[..1], 514)
        .unwrap();
    std::fs::File::open(&img.0)
        .unwrap()
        .read_exact_at(&mut around[1..], 3515)
        .unwrap();
    assert_eq!(around, [0, 0]);
    // Many reads in flight at once, completing in any order.
    let mut bufs: Vec<Vec<u8>> = (0..32).map(|_| vec![0u8; 4096]).collect();
    for (i, b) in bufs.iter_mut().enumerate() {
        q.submit(req(IoKind::Read, 0, b, 100 + i as u64));
    }
    q.drain();
    assert_eq!(q.in_flight(), 0);
    let done = wait_all(&mut q, 32);
    assert_eq!(done.len(), 32);
    assert!(done.iter().all(|c| c.result == Ok(4096)));
    assert!(bufs.iter().all(|b| b[515..3515] == expect[..]));
    // Beyond the end: EIO, counted as failed.
    let mut b = vec![0u8; 512];
    q.submit(req(IoKind::Read, 1 << 20, &mut b, 7));
    assert_eq!(wait_all(&mut q, 1)[0].result, Err(libc::EIO));
    let s = &g.query_blockstats(false)[0]["stats"];
    assert_eq!(s["wr_operations"], 1);
    assert_eq!(s["wr_bytes"], 3000);
    assert_eq!(s["rd_operations"], 32);
    assert_eq!(s["rd_bytes"], 32 * 4096);
    assert_eq!(s["flush_operations"], 1);
    assert_eq!(s["failed_rd_operations"], 1);
    assert_eq!(s["wr_highest_offset"], 3515);
    assert!(s["idle_time_ns"].is_u64());
}

#[test]
fn io_uring_buffered() {
    roundtrip(&[("aio", "io_uring")]);
}

#[test]
fn threads_buffered() {
    roundtrip(&[("aio", "threads")]);
}

#[test]
fn io_uring_o_direct_bounces_unaligned() {
    roundtrip(&[("aio", "io_uring"), ("cache", "none")]);
}

#[test]
fn threads_o_direct_bounces_unaligned() {
    roundtrip(&[("aio", "threads"), ("cache", "none")]);
}

#[test]
fn raw_offset_shifts_requests_and_write_highest_offsets_differ_per_node() {
    let img = TempImage::new("off", 1 << 20);
    let (g, bb) = attached_drive(&img, &[("offset", "4096")]);
    assert_eq!(bb.size(), (1 << 20) - 4096);
    let mut q = bb.open_queue().unwrap();
    let mut d = vec![0xabu8; 512];
    q.submit(req(IoKind::Write, 0, &mut d, 1));
    wait_all(&mut q, 1);
    let mut b = [0u8; 1];
    std::fs::File::open(&img.0)
        .unwrap()
        .read_exact_at(&mut b, 4096)
        .unwrap();
    assert_eq!(b[0], 0xab);
    let st = &g.query_blockstats(false)[0];
    assert_eq!(st["stats"]["wr_highest_offset"], 512);
    assert_eq!(st["parent"]["stats"]["wr_highest_offset"], 4096 + 512);
}

#[test]
fn discard_and_write_zeroes_deallocate_when_unmap_allowed() {
    use std::os::unix::fs::MetadataExt;
    let img = TempImage::new("disc", 1 << 20);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&img.0)
        .unwrap()
        .write_all_at(&vec![1u8; 1 << 20], 0)
        .unwrap();
    let (g, bb) = attached_drive(&img, &[("discard", "unmap")]);
    assert!(bb.discard_enabled());
    let mut q = bb.open_queue().unwrap();
    let blocks = || std::fs::metadata(&img.0).unwrap().blocks();
    let before = blocks();
    q.submit(IoRequest {
        kind: IoKind::Discard,
        offset: 0,
        len: 256 << 10,
        bufs: vec![],
        user_data: 1,
    });
    q.submit(IoRequest {
        kind: IoKind::WriteZeroes { may_unmap: false },
        offset: 512 << 10,
        len: 4096,
        bufs: vec![],
        user_data: 2,
    });
    wait_all(&mut q, 2);
    assert!(blocks() < before, "discard punched no hole");
    let mut b = vec![9u8; 4096];
    let f = std::fs::File::open(&img.0).unwrap();
    f.read_exact_at(&mut b, 512 << 10).unwrap();
    assert!(b.iter().all(|&x| x == 0));
    f.read_exact_at(&mut b, 0).unwrap();
    assert!(b.iter().all(|&x| x == 0));
    let st = &g.query_blockstats(false)[0];
    assert_eq!(st["stats"]["unmap_operations"], 1);
    assert_eq!(st["parent"]["driver-specific"]["discard-nb-ok"], 1);
    assert_eq!(
        st["parent"]["driver-specific"]["discard-bytes-ok"],
        256 << 10
    );
}

#[test]
fn read_only_drive_refuses_writes() {
    let img = TempImage::new("ro", 1 << 20);
    let (_g, bb) = attached_drive(&img, &[("readonly", "on")]);
    let mut q = bb.open_queue().unwrap();
    let mut d = vec![0u8; 512];
    q.submit(req(IoKind::Write, 0, &mut d, 1));
    assert_eq!(wait_all(&mut q, 1)[0].result, Err(libc::EROFS));
}

fn qemu_tool(name: &str, args: &[&str]) {
    let out = std::process::Command::new(name)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{name} is required (apt-get install qemu-utils): {e}"));
    assert!(
        out.status.success() && !String::from_utf8_lossy(&out.stdout).contains("failed"),
        "{name} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The image's guest contents as QEMU's qemu-img reads them.
fn guest_bytes(img: &TempImage, out: &TempImage) -> Vec<u8> {
    qemu_tool(
        "qemu-img",
        &[
            "convert",
            "-f",
            "qcow2",
            "-O",
            "raw",
            img.path(),
            out.path(),
        ],
    );
    std::fs::read(&out.0).unwrap()
}

/// Requests of several buffers of uneven sizes (a guest's scatter list, or
/// requests virtio-blk merged) through a qcow2 chain: each byte lands where
/// it belongs, across data, zero and unallocated clusters of every layer.
/// raw base <- qcow2 <- qcow2 top over 1 MiB, with data, zero and
/// unallocated clusters in each layer; the images (kept alive by the
/// caller) and the guest's view of the top, from qemu-img.
fn scatter_chain() -> ([TempImage; 4], Vec<u8>) {
    const MIB: usize = 1 << 20;
    let base = TempImage::new("sg-base", MIB as u64);
    let pattern: Vec<u8> = (0..MIB).map(|i| (i % 253) as u8 + 1).collect();
    std::fs::write(&base.0, &pattern).unwrap();
    let mid = TempImage::new("sg-mid", 0);
    let top = TempImage::new("sg-top", 0);
    let create = |img: &TempImage, below: &TempImage, fmt: &str| {
        qemu_tool(
            "qemu-img",
            &[
                "create",
                "-q",
                "-f",
                "qcow2",
                "-b",
                below.path(),
                "-F",
                fmt,
                img.path(),
            ],
        )
    };
    create(&mid, &base, "raw");
    let io =
        |img: &TempImage, cmd: &str| qemu_tool("qemu-io", &["-f", "qcow2", "-c", cmd, img.path()]);
    io(&mid, "write -P 0x33 128k 64k");
    io(&mid, "write -z 256k 128k");
    create(&top, &mid, "qcow2");
    io(&top, "write -P 0x44 600k 8k");
    io(&top, "write -z 700k 64k");
    let conv = TempImage::new("sg-conv", 0);
    let before = guest_bytes(&top, &conv);
    ([base, mid, top, conv], before)
}

#[test]
fn scattered_requests_through_a_qcow2_chain() {
    const MIB: usize = 1 << 20;
    let ([_base, _mid, top, conv], before) = scatter_chain();
    let (g, bb) = attached_drive(&top, &[("format", "qcow2")]);
    let mut q = bb.open_queue().unwrap();
    let sizes = [4096 + 512, 3 * 65536 - 100, 1000, 7];
    let mut bufs: Vec<Vec<u8>> = sizes
        .iter()
        .map(|&n| vec![0u8; n])
        .chain(std::iter::once(vec![
            0u8;
            MIB - sizes.iter().sum::<usize>()
        ]))
        .collect();
    let sg = |bufs: &mut Vec<Vec<u8>>| {
        bufs.iter_mut()
            .map(|b| IoBuf {
                ptr: b.as_mut_ptr(),
                len: b.len(),
            })
            .collect::<Vec<_>>()
    };
    q.submit(IoRequest {
        kind: IoKind::Read,
        offset: 0,
        len: MIB as u64,
        bufs: sg(&mut bufs),
        user_data: 1,
    });
    assert_eq!(wait_all(&mut q, 1)[0].result, Ok(MIB as u64));
    assert!(
        bufs.concat() == before,
        "a scattered read differs from qemu-img's view"
    );

    // A scattered write across clusters, partly into allocated ones.
    let mut data: Vec<Vec<u8>> = [5000usize, 70000, 12345]
        .iter()
        .enumerate()
        .map(|(i, &n)| vec![0xa0 + i as u8; n])
        .collect();
    let at = 590 << 10;
    let len: usize = data.iter().map(|b| b.len()).sum();
    q.submit(IoRequest {
        kind: IoKind::Write,
        offset: at as u64,
        len: len as u64,
        bufs: sg(&mut data),
        user_data: 2,
    });
    assert_eq!(wait_all(&mut q, 1)[0].result, Ok(len as u64));
    drop(q);
    drop(bb);
    drop(g);
    let mut expect = before;
    expect[at..at + len].copy_from_slice(&data.concat());
    assert!(
        guest_bytes(&top, &conv) == expect,
        "a scattered write landed wrong"
    );
}

/// The same scattered read under O_DIRECT (`cache=none`), from buffers in
/// page-aligned guest-like memory: runs whose buffers O_DIRECT can take are
/// read straight into them, runs that cross the 7-byte buffer through an
/// aligned bounce; every byte lands where qemu-img says it belongs.
#[test]
fn scattered_direct_reads_through_a_qcow2_chain() {
    const MIB: usize = 1 << 20;
    let ([_base, _mid, top, _conv], before) = scatter_chain();
    let (_g, bb) = attached_drive(&top, &[("format", "qcow2"), ("cache", "none")]);
    let mut q = bb.open_queue().unwrap();
    let mut arena = vec![0u8; MIB + 4096];
    let skip = arena.as_ptr().align_offset(4096);
    let mem = &mut arena[skip..skip + MIB];
    let sizes = [8192, 3 * 65536, 4096 + 512, 7, 4096 - 7];
    let mut bufs = Vec::new();
    let mut pos = 0;
    for n in sizes
        .into_iter()
        .chain(std::iter::once(MIB - sizes.iter().sum::<usize>()))
    {
        bufs.push(IoBuf {
            ptr: mem[pos..].as_mut_ptr(),
            len: n,
        });
        pos += n;
    }
    q.submit(IoRequest {
        kind: IoKind::Read,
        offset: 0,
        len: MIB as u64,
        bufs,
        user_data: 1,
    });
    assert_eq!(wait_all(&mut q, 1)[0].result, Ok(MIB as u64));
    assert!(
        mem[..] == before[..],
        "an O_DIRECT scattered read differs from qemu-img's view"
    );
}
