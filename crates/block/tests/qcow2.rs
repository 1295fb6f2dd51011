//! qcow2 against QEMU 7.2's qemu-img/qemu-io (qemu-utils) as the oracle:
//! images QEMU wrote are read by us, images we wrote are checked and
//! compared by QEMU.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use block::qcow2::{
    create, Compat, CreateOptions, ExtentKind, ImageFile, ImageRead, OpenOptions, Qcow2,
    Qcow2Error, RawImage,
};

// ---- helpers ------------------------------------------------------------

/// A scratch directory removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = PathBuf::from(format!(
            "/var/tmp/ferrovm-qcow2-{}-{}-{tag}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs a qemu-utils tool; a missing tool fails the test with a clear message.
fn tool(name: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new(name).args(args).output().unwrap_or_else(|e| {
        panic!("{name} is required for the qcow2 tests (apt-get install qemu-utils): {e}")
    });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn qemu_img(args: &[&str]) -> String {
    let (rc, out) = tool("qemu-img", args);
    assert_eq!(rc, 0, "qemu-img {args:?} failed: {out}");
    out
}

fn qemu_io(img: &Path, fmt: &str, cmd: &str) {
    let (rc, out) = tool("qemu-io", &["-f", fmt, "-c", cmd, img.to_str().unwrap()]);
    assert!(
        rc == 0 && !out.contains("Pattern verification failed") && !out.contains("failed"),
        "qemu-io {cmd} on {img:?}: {out}"
    );
}

/// `qemu-img check` exit code and output.
fn check(img: &Path) -> (i32, String) {
    tool("qemu-img", &["check", "-f", "qcow2", img.to_str().unwrap()])
}

fn assert_check_clean(img: &Path) {
    let (rc, out) = check(img);
    assert_eq!(rc, 0, "qemu-img check: {out}");
    assert!(out.contains("No errors were found"), "{out}");
}

fn compare(a: &Path, afmt: &str, b: &Path, bfmt: &str) {
    let (rc, out) = tool(
        "qemu-img",
        &[
            "compare",
            "-f",
            afmt,
            "-F",
            bfmt,
            a.to_str().unwrap(),
            b.to_str().unwrap(),
        ],
    );
    assert_eq!(rc, 0, "qemu-img compare: {out}");
}

fn qcreate(path: &Path, size: &str, opts: &str) {
    let mut args = vec!["create", "-q", "-f", "qcow2"];
    if !opts.is_empty() {
        args.push("-o");
        args.push(opts);
    }
    args.push(path.to_str().unwrap());
    args.push(size);
    qemu_img(&args);
}

fn open_rw(path: &Path) -> Qcow2 {
    Qcow2::open_path(
        path,
        OpenOptions {
            writable: true,
            ..Default::default()
        },
    )
    .unwrap()
}

fn open_ro(path: &Path) -> Qcow2 {
    Qcow2::open_path(path, OpenOptions::default()).unwrap()
}

fn raw_file(path: &Path, size: u64) -> std::fs::File {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .unwrap();
    f.set_len(size).unwrap();
    f
}

fn pwrite(f: &std::fs::File, buf: &[u8], off: u64) {
    use std::os::unix::fs::FileExt;
    f.write_all_at(buf, off).unwrap();
}

fn read(img: &Qcow2, off: u64, len: usize) -> Vec<u8> {
    let mut b = vec![0x55u8; len];
    img.read_at(&mut b, off).unwrap();
    b
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn header_incompat(path: &Path) -> u64 {
    let b = std::fs::read(path).unwrap();
    u64::from_be_bytes(b[72..80].try_into().unwrap())
}

// ---- reading what QEMU wrote --------------------------------------------

#[test]
fn reads_patterns_qemu_wrote_v2_and_v3() {
    let d = Dir::new("read");
    for opts in [
        "compat=1.1",
        "compat=0.10",
        "compat=1.1,cluster_size=4096",
        "compat=0.10,cluster_size=512",
    ] {
        let p = d.path("a.qcow2");
        let _ = std::fs::remove_file(&p);
        qcreate(&p, "4M", opts);
        qemu_io(&p, "qcow2", "write -P 0xab 0 64k");
        qemu_io(&p, "qcow2", "write -P 0xcd 100000 5000");
        qemu_io(&p, "qcow2", "write -P 0x11 4190000 4304");
        let img = open_ro(&p);
        assert_eq!(img.virtual_size(), 4 << 20, "{opts}");
        assert!(read(&img, 0, 65536).iter().all(|&b| b == 0xab), "{opts}");
        let r = read(&img, 99_000, 7000);
        assert!(r[..1000].iter().all(|&b| b == 0), "{opts}");
        assert!(r[1000..6000].iter().all(|&b| b == 0xcd), "{opts}");
        assert!(r[6000..].iter().all(|&b| b == 0), "{opts}");
        assert!(
            read(&img, 4_190_000, 4304).iter().all(|&b| b == 0x11),
            "{opts}"
        );
        assert!(read(&img, 2 << 20, 8192).iter().all(|&b| b == 0), "{opts}");
        let want_compat = if opts.contains("0.10") { "0.10" } else { "1.1" };
        assert_eq!(img.info().compat, want_compat);
    }
}

#[test]
fn reads_zero_clusters_qemu_wrote() {
    let d = Dir::new("zero");
    let p = d.path("z.qcow2");
    qcreate(&p, "1M", "compat=1.1");
    qemu_io(&p, "qcow2", "write -P 0xab 0 256k");
    qemu_io(&p, "qcow2", "write -z 64k 64k");
    qemu_io(&p, "qcow2", "write -z -u 128k 64k");
    let img = open_ro(&p);
    let r = read(&img, 0, 256 << 10);
    assert!(r[..64 << 10].iter().all(|&b| b == 0xab));
    assert!(r[64 << 10..192 << 10].iter().all(|&b| b == 0));
    assert!(r[192 << 10..].iter().all(|&b| b == 0xab));
    let m = img.map(0, 256 << 10).unwrap();
    assert!(matches!(m[0].kind, ExtentKind::Data { .. }));
    assert_eq!((m[1].offset, m[1].len), (64 << 10, 64 << 10));
    assert_eq!(m[1].kind, ExtentKind::Zero { allocated: true });
    assert_eq!(m[2].kind, ExtentKind::Zero { allocated: false });
}

#[test]
fn reads_compressed_image_from_qemu_img_convert() {
    let d = Dir::new("comp");
    let raw = d.path("src.raw");
    let f = raw_file(&raw, 2 << 20);
    let mut rng = Rng(7);
    // Compressible text-like data with some randomness, and a zero gap.
    let data: Vec<u8> = (0..(1 << 20))
        .map(|i| b"qcow2 "[i % 6] ^ (rng.below(4) as u8))
        .collect();
    pwrite(&f, &data, 0);
    pwrite(&f, &data[..300_000], 1_500_000);
    let q = d.path("c.qcow2");
    qemu_img(&[
        "convert",
        "-c",
        "-f",
        "raw",
        "-O",
        "qcow2",
        raw.to_str().unwrap(),
        q.to_str().unwrap(),
    ]);
    let img = open_ro(&q);
    let m = img.map(0, 1 << 20).unwrap();
    assert!(m.iter().any(|e| e.kind == ExtentKind::Compressed), "{m:?}");
    let all = read(&img, 0, 2 << 20);
    assert_eq!(&all[..1 << 20], &data[..]);
    assert!(all[1 << 20..1_500_000].iter().all(|&b| b == 0));
    assert_eq!(&all[1_500_000..1_800_000], &data[..300_000]);
    drop(img);
    // Rewriting part of a compressed cluster reallocates it.
    let img = open_rw(&q);
    img.write_at(&[0xee; 1000], 70_000).unwrap();
    img.close().unwrap();
    drop(img);
    pwrite(&f, &[0xee; 1000], 70_000);
    assert_check_clean(&q);
    compare(&q, "qcow2", &raw, "raw");
}

#[test]
fn backing_chain_qcow2_over_qcow2_over_raw() {
    let d = Dir::new("chain");
    let base = d.path("base.raw");
    let bf = raw_file(&base, 1 << 20);
    pwrite(&bf, &[0x0b; 1 << 20], 0);
    let mid = d.path("mid.qcow2");
    qcreate(
        &mid,
        "1M",
        &format!("backing_file={},backing_fmt=raw", base.display()),
    );
    qemu_io(&mid, "qcow2", "write -P 0x33 64k 64k");
    let top = d.path("top.qcow2");
    qcreate(
        &top,
        "2M",
        &format!(
            "backing_file={},backing_fmt=qcow2,cluster_size=4096",
            mid.display()
        ),
    );
    qemu_io(&top, "qcow2", "write -P 0x44 100k 8k");

    let topimg = open_rw(&top);
    let info = topimg.info();
    assert_eq!(info.backing_file.as_deref(), Some(mid.to_str().unwrap()));
    assert_eq!(info.backing_format.as_deref(), Some("qcow2"));
    let midimg = open_ro(&mid);
    assert_eq!(midimg.info().backing_format.as_deref(), Some("raw"));
    midimg.set_backing(Some(Arc::new(
        RawImage::new(std::fs::File::open(&base).unwrap()).unwrap(),
    )));
    topimg.set_backing(Some(Arc::new(midimg) as Arc<dyn ImageRead>));

    let r = read(&topimg, 0, 2 << 20);
    assert!(r[..64 << 10].iter().all(|&b| b == 0x0b));
    assert!(r[64 << 10..100 << 10].iter().all(|&b| b == 0x33));
    assert!(r[100 << 10..108 << 10].iter().all(|&b| b == 0x44));
    assert!(r[108 << 10..128 << 10].iter().all(|&b| b == 0x33));
    assert!(r[128 << 10..1 << 20].iter().all(|&b| b == 0x0b));
    assert!(
        r[1 << 20..].iter().all(|&b| b == 0),
        "beyond the backing file: zeros"
    );

    // A partial write COWs the rest of its cluster from the chain.
    topimg.write_at(&[0x77; 100], 64 * 1024 + 10).unwrap();
    topimg.write_at(&[0x78; 100], 1000).unwrap();
    topimg.close().unwrap();
    drop(topimg);
    assert_check_clean(&top);
    qemu_io(&top, "qcow2", "read -P 0x33 64k 10");
    qemu_io(&top, "qcow2", "read -P 0x77 65546 100");
    qemu_io(&top, "qcow2", "read -P 0x33 65646 2546");
    qemu_io(&top, "qcow2", "read -P 0x0b 0 1000");
    qemu_io(&top, "qcow2", "read -P 0x78 1000 100");
    qemu_io(&top, "qcow2", "read -P 0x0b 1100 2996");
}

// ---- writing, checked by QEMU -------------------------------------------

/// Random writes through our code, mirrored into a raw file.
fn random_writes(img: &Qcow2, raw: &std::fs::File, size: u64, seed: u64, count: usize) {
    let mut rng = Rng(seed);
    for i in 0..count {
        let len = 1 + rng.below(150_000) as usize;
        let off = rng.below(size - len as u64);
        let buf = vec![(i % 250) as u8 + 1; len];
        img.write_at(&buf, off).unwrap();
        pwrite(raw, &buf, off);
    }
}

#[test]
fn our_writes_pass_qemu_img_check_and_compare() {
    let d = Dir::new("write");
    for opts in [
        "compat=1.1",
        "compat=0.10",
        "compat=1.1,cluster_size=512",
        "compat=1.1,cluster_size=2M",
        "compat=1.1,refcount_bits=1",
        "compat=1.1,refcount_bits=4",
        "compat=1.1,refcount_bits=8,cluster_size=4096",
        "compat=1.1,refcount_bits=64",
    ] {
        let q = d.path("w.qcow2");
        let r = d.path("w.raw");
        let _ = std::fs::remove_file(&q);
        let _ = std::fs::remove_file(&r);
        qcreate(&q, "8M", opts);
        let raw = raw_file(&r, 8 << 20);
        let img = open_rw(&q);
        random_writes(&img, &raw, 8 << 20, 42, 40);
        // Read back through our code before QEMU looks.
        let mut a = vec![0u8; 8 << 20];
        img.read_at(&mut a, 0).unwrap();
        assert_eq!(a, std::fs::read(&r).unwrap(), "{opts}");
        img.close().unwrap();
        drop(img);
        let (rc, out) = check(&q);
        assert_eq!(rc, 0, "{opts}: {out}");
        compare(&q, "qcow2", &r, "raw");
    }
}

#[test]
fn refcount_structures_grow_and_stay_consistent() {
    // 512-byte clusters with 64-bit refcounts: one refcount block covers
    // 32 KiB and the initial one-cluster refcount table 2 MiB, so 3 MiB of
    // data needs new blocks and a bigger table.
    let d = Dir::new("grow");
    let q = d.path("g.qcow2");
    let r = d.path("g.raw");
    qcreate(&q, "4M", "cluster_size=512,refcount_bits=64");
    let header = std::fs::read(&q).unwrap();
    let rt_before = u64::from_be_bytes(header[48..56].try_into().unwrap());
    let raw = raw_file(&r, 4 << 20);
    let img = open_rw(&q);
    let chunk = vec![0x5a; 1 << 19];
    for i in 0..6u64 {
        img.write_at(&chunk, i << 19).unwrap();
        pwrite(&raw, &chunk, i << 19);
    }
    img.close().unwrap();
    drop(img);
    let header = std::fs::read(&q).unwrap();
    let rt_after = u64::from_be_bytes(header[48..56].try_into().unwrap());
    let rt_clusters = u32::from_be_bytes(header[56..60].try_into().unwrap());
    assert_ne!(rt_before, rt_after, "the refcount table moved");
    assert!(rt_clusters > 1);
    assert_check_clean(&q);
    compare(&q, "qcow2", &r, "raw");
}

#[test]
fn create_is_accepted_by_qemu() {
    let d = Dir::new("create");
    let base = d.path("base.raw");
    raw_file(&base, 1 << 20);
    let cases: Vec<(CreateOptions, &str)> = vec![
        (CreateOptions::new(10 << 20), "1.1"),
        (
            CreateOptions {
                compat: Compat::V2,
                cluster_size: 4096,
                ..CreateOptions::new(3 << 30)
            },
            "0.10",
        ),
        (
            CreateOptions {
                lazy_refcounts: true,
                backing_file: Some(base.to_str().unwrap().into()),
                backing_format: Some("raw".into()),
                ..CreateOptions::new(1 << 20)
            },
            "1.1",
        ),
    ];
    for (o, compat) in cases {
        let p = d.path("n.qcow2");
        let _ = std::fs::remove_file(&p);
        create(Arc::new(raw_file(&p, 0)), &o).unwrap();
        assert_check_clean(&p);
        let info: serde_json::Value =
            serde_json::from_str(&qemu_img(&["info", "--output=json", p.to_str().unwrap()]))
                .unwrap();
        assert_eq!(info["virtual-size"], o.size);
        assert_eq!(info["cluster-size"], o.cluster_size);
        assert_eq!(info["format-specific"]["data"]["compat"], compat);
        if o.compat == Compat::V3 {
            assert_eq!(
                info["format-specific"]["data"]["lazy-refcounts"],
                o.lazy_refcounts
            );
        }
        if let Some(b) = &o.backing_file {
            assert_eq!(info["backing-filename"], b.as_str());
            assert_eq!(info["backing-filename-format"], "raw");
        }
        qemu_io(&p, "qcow2", "write -P 0x9 0 64k");
        let img = open_ro(&p);
        assert!(read(&img, 0, 65536).iter().all(|&b| b == 9));
    }
    let bad = CreateOptions {
        cluster_size: 1000,
        ..CreateOptions::new(1 << 20)
    };
    let e = create(Arc::new(raw_file(&d.path("bad.qcow2"), 0)), &bad).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Cluster size must be a power of two between 512 and 2048k"
    );
}

#[test]
fn discard_and_write_zeroes_match_raw() {
    let d = Dir::new("disc");
    for opts in ["compat=1.1", "compat=0.10"] {
        let q = d.path("d.qcow2");
        let r = d.path("d.raw");
        let _ = std::fs::remove_file(&q);
        let _ = std::fs::remove_file(&r);
        qcreate(&q, "4M", opts);
        let raw = raw_file(&r, 4 << 20);
        let img = open_rw(&q);
        let all = vec![0xa5; 4 << 20];
        img.write_at(&all, 0).unwrap();
        pwrite(&raw, &all, 0);
        // Whole clusters discarded; partial head/tail stay (QEMU aligns).
        img.discard(64 << 10, 256 << 10).unwrap();
        pwrite(&raw, &vec![0; 256 << 10], 64 << 10);
        img.write_zeroes(1 << 20, 200_000, false).unwrap();
        pwrite(&raw, &vec![0; 200_000], 1 << 20);
        img.write_zeroes(2 << 20, 128 << 10, true).unwrap();
        pwrite(&raw, &vec![0; 128 << 10], 2 << 20);
        img.write_zeroes(3 << 20, 1000, true).unwrap();
        pwrite(&raw, &[0; 1000], 3 << 20);
        let m = img.map(64 << 10, 64 << 10).unwrap();
        if opts == "compat=1.1" {
            assert_eq!(m[0].kind, ExtentKind::Zero { allocated: false });
            let z = img.map(1 << 20, 64 << 10).unwrap();
            assert_eq!(z[0].kind, ExtentKind::Zero { allocated: true });
        } else {
            assert_eq!(m[0].kind, ExtentKind::Unallocated);
        }
        // Rewriting a zeroed cluster.
        img.write_at(&[0x3c; 10], (1 << 20) + 5).unwrap();
        pwrite(&raw, &[0x3c; 10], (1 << 20) + 5);
        img.close().unwrap();
        drop(img);
        let (rc, out) = check(&q);
        assert_eq!(rc, 0, "{opts}: {out}");
        compare(&q, "qcow2", &r, "raw");
    }
}

#[test]
fn truncate_grows_the_disk() {
    let d = Dir::new("trunc");
    let q = d.path("t.qcow2");
    qcreate(&q, "1M", "cluster_size=4096");
    let img = open_rw(&q);
    img.write_at(&[0x61; 4096], 0).unwrap();
    // 4k clusters: one L2 table maps 2 MiB, so 64 MiB needs a bigger L1.
    img.truncate(64 << 20).unwrap();
    assert_eq!(img.virtual_size(), 64 << 20);
    img.write_at(&[0x62; 4096], (64 << 20) - 4096).unwrap();
    img.close().unwrap();
    drop(img);
    assert_check_clean(&q);
    let info: serde_json::Value =
        serde_json::from_str(&qemu_img(&["info", "--output=json", q.to_str().unwrap()])).unwrap();
    assert_eq!(info["virtual-size"], 64u64 << 20);
    qemu_io(&q, "qcow2", "read -P 0x61 0 4k");
    qemu_io(&q, "qcow2", "read -P 0x62 67104768 4k");
    qemu_io(&q, "qcow2", "read -P 0 1M 1M");
}

#[test]
fn concurrent_writers_from_many_threads() {
    let d = Dir::new("threads");
    let q = d.path("c.qcow2");
    let r = d.path("c.raw");
    qcreate(&q, "16M", "");
    let raw = raw_file(&r, 16 << 20);
    let img = Arc::new(open_rw(&q));
    let hs: Vec<_> = (0..4u64)
        .map(|t| {
            let img = img.clone();
            std::thread::spawn(move || {
                // Interleaved 4k blocks: threads share clusters and L2 tables.
                for i in 0..256u64 {
                    let off = (i * 4 + t) * 4096;
                    img.write_at(&[t as u8 + 1; 4096], off).unwrap();
                    let mut b = [0u8; 4096];
                    img.read_at(&mut b, off).unwrap();
                    assert!(b.iter().all(|&x| x == t as u8 + 1));
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    for i in 0..1024u64 {
        pwrite(&raw, &[(i % 4) as u8 + 1; 4096], i * 4096);
    }
    img.close().unwrap();
    drop(img);
    assert_check_clean(&q);
    compare(&q, "qcow2", &r, "raw");
}

// ---- crash safety ---------------------------------------------------------

/// A file whose writes stop reaching the disk after `limit` writes (a
/// power cut): later writes and flushes succeed but are dropped.
struct CutFile {
    f: std::fs::File,
    writes: AtomicUsize,
    limit: usize,
}

impl ImageFile for CutFile {
    fn read_at(&self, buf: &mut [u8], off: u64) -> std::io::Result<()> {
        ImageFile::read_at(&self.f, buf, off)
    }
    fn write_at(&self, buf: &[u8], off: u64) -> std::io::Result<()> {
        if self.writes.fetch_add(1, Ordering::SeqCst) < self.limit {
            ImageFile::write_at(&self.f, buf, off)
        } else {
            Ok(())
        }
    }
    fn flush(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn file_size(&self) -> std::io::Result<u64> {
        ImageFile::file_size(&self.f)
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        ImageFile::set_len(&self.f, len)
    }
    // Zeroing a new cluster is a write too: it is lost after the cut.
    fn zero_range(&self, off: u64, len: u64) -> std::io::Result<bool> {
        if self.writes.fetch_add(1, Ordering::SeqCst) < self.limit {
            ImageFile::zero_range(&self.f, off, len)
        } else {
            Ok(true)
        }
    }
}

fn crash_workload(img: &Qcow2) -> Result<(), Qcow2Error> {
    let mut rng = Rng(99);
    for i in 0..30 {
        let off = rng.below(3 << 20);
        img.write_at(&[i as u8 + 1; 70_000], off)?;
        if i % 7 == 3 {
            img.discard(rng.below(3 << 20), 200_000)?;
        }
        if i % 10 == 9 {
            img.flush()?;
        }
    }
    Ok(())
}

fn cut_image(q: &Path, limit: usize, lazy: bool) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(q)
        .unwrap();
    let cut = Arc::new(CutFile {
        f,
        writes: AtomicUsize::new(0),
        limit,
    });
    let img = Qcow2::open(
        cut.clone(),
        OpenOptions {
            writable: true,
            lazy_refcounts: Some(lazy),
            l2_cache_tables: 2,
            refblock_cache_blocks: 1,
            ..Default::default()
        },
    )
    .unwrap();
    crash_workload(&img).unwrap();
    // The process dies: nothing is flushed or closed.
    std::mem::forget(img);
}

#[test]
fn crash_at_any_write_leaves_only_leaks() {
    let d = Dir::new("crash");
    let q = d.path("k.qcow2");
    let src = d.path("src.qcow2");
    // Small clusters so L2 tables and refblocks get allocated on the way.
    qcreate(&src, "4M", "cluster_size=4096");
    // Count the writes of the whole workload once.
    std::fs::copy(&src, &q).unwrap();
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&q)
        .unwrap();
    let counter = Arc::new(CutFile {
        f,
        writes: AtomicUsize::new(0),
        limit: usize::MAX,
    });
    let img = Qcow2::open(
        counter.clone(),
        OpenOptions {
            writable: true,
            l2_cache_tables: 2,
            refblock_cache_blocks: 1,
            ..Default::default()
        },
    )
    .unwrap();
    crash_workload(&img).unwrap();
    drop(img);
    let total = counter.writes.load(Ordering::SeqCst);
    assert!(total > 50, "workload too small: {total} writes");
    let mut leaks_seen = false;
    let step = (total / 40).max(1);
    for limit in (0..total).step_by(step) {
        std::fs::copy(&src, &q).unwrap();
        cut_image(&q, limit, false);
        let (rc, out) = check(&q);
        assert!(
            rc == 0 || rc == 3,
            "cut after {limit}/{total} writes: rc {rc}: {out}"
        );
        leaks_seen |= rc == 3;
    }
    assert!(
        leaks_seen,
        "no cut point left leaked clusters; the test cuts nowhere useful"
    );
}

#[test]
fn lazy_refcounts_crash_is_dirty_and_repaired_on_open() {
    let d = Dir::new("lazy");
    let q = d.path("l.qcow2");
    let src = d.path("src.qcow2");
    qcreate(&src, "4M", "cluster_size=4096,lazy_refcounts=on");
    // A clean close clears the dirty bit.
    std::fs::copy(&src, &q).unwrap();
    let img = open_rw(&q);
    img.write_at(&[1; 8192], 0).unwrap();
    assert_eq!(
        header_incompat(&q) & 1,
        1,
        "dirty while writing with lazy refcounts"
    );
    img.close().unwrap();
    drop(img);
    assert_eq!(header_incompat(&q) & 1, 0, "clean after close");
    assert_check_clean(&q);

    // A crash with L2 tables on disk but refcounts not written.
    let mut found_broken = false;
    for limit in [40, 80, 120, 200, 400] {
        std::fs::copy(&src, &q).unwrap();
        cut_image(&q, limit, true);
        assert_eq!(
            header_incompat(&q) & 1,
            1,
            "cut at {limit}: image must be dirty"
        );
        let (rc, out) = check(&q);
        found_broken |= rc == 2 || out.contains("ERROR");
        let img = open_rw(&q);
        assert!(!img.info().dirty);
        drop(img);
        assert_eq!(header_incompat(&q) & 1, 0);
        let (rc, out) = check(&q);
        assert_eq!(rc, 0, "after repair (cut at {limit}): {out}");
        assert!(out.contains("No errors were found"), "{out}");
    }
    assert!(
        found_broken,
        "no cut point left refcount errors for the repair to fix"
    );
}

// ---- refused and corrupt images ---------------------------------------------

#[test]
fn unsupported_features_are_refused_with_qemus_message() {
    let d = Dir::new("feat");
    let p = d.path("x.qcow2");
    qcreate(&p, "1M", "extended_l2=on");
    let e = Qcow2::open_path(&p, OpenOptions::default()).err().unwrap();
    assert_eq!(
        e.to_string(),
        "Unsupported qcow2 feature(s): extended L2 entries"
    );
    let p = d.path("u.qcow2");
    qcreate(&p, "1M", "");
    let mut b = std::fs::read(&p).unwrap();
    b[72..80].copy_from_slice(&0x400u64.to_be_bytes());
    std::fs::write(&p, &b).unwrap();
    let (rc, out) = tool("qemu-img", &["info", p.to_str().unwrap()]);
    assert_ne!(rc, 0);
    let e = Qcow2::open_path(&p, OpenOptions::default()).err().unwrap();
    assert!(out.contains(&e.to_string()), "ours: {e}; qemu: {out}");
    std::fs::write(&p, b"not an image at all, just text padding padding padding padding padding padding padding padding padding padding").unwrap();
    let e = Qcow2::open_path(&p, OpenOptions::default()).err().unwrap();
    assert_eq!(e.to_string(), "Image is not in qcow2 format");
}

/// An in-memory image file.
struct MemFile(Mutex<Vec<u8>>);

impl ImageFile for MemFile {
    fn read_at(&self, buf: &mut [u8], off: u64) -> std::io::Result<()> {
        let v = self.0.lock().unwrap();
        buf.fill(0);
        if off < v.len() as u64 {
            let n = buf.len().min(v.len() - off as usize);
            buf[..n].copy_from_slice(&v[off as usize..off as usize + n]);
        }
        Ok(())
    }
    fn write_at(&self, buf: &[u8], off: u64) -> std::io::Result<()> {
        let mut v = self.0.lock().unwrap();
        let end = off as usize + buf.len();
        if end > 64 << 20 {
            return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
        }
        if v.len() < end {
            v.resize(end, 0);
        }
        v[off as usize..end].copy_from_slice(buf);
        Ok(())
    }
    fn flush(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn file_size(&self) -> std::io::Result<u64> {
        Ok(self.0.lock().unwrap().len() as u64)
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.0.lock().unwrap().resize(len as usize, 0);
        Ok(())
    }
}

#[test]
fn corrupt_images_give_errors_never_panics() {
    let d = Dir::new("fuzz");
    let p = d.path("f.qcow2");
    qcreate(&p, "2M", "cluster_size=4096");
    qemu_io(&p, "qcow2", "write -P 0x42 0 300k");
    qemu_io(&p, "qcow2", "write -z 1M 64k");
    let pristine = std::fs::read(&p).unwrap();
    let l1_off = u64::from_be_bytes(pristine[40..48].try_into().unwrap()) as usize;
    let rt_off = u64::from_be_bytes(pristine[48..56].try_into().unwrap()) as usize;
    let l2_off = (u64::from_be_bytes(pristine[l1_off..l1_off + 8].try_into().unwrap())
        & 0x00ff_ffff_ffff_fe00) as usize;
    let rb_off = u64::from_be_bytes(pristine[rt_off..rt_off + 8].try_into().unwrap()) as usize;
    let regions = [
        (0usize, 112usize),
        (l1_off, 16),
        (l2_off, 800),
        (rt_off, 16),
        (rb_off, 200),
    ];
    let mut rng = Rng(2024);
    let mut errors = 0;
    for _ in 0..400 {
        let mut img = pristine.clone();
        for _ in 0..1 + rng.below(4) {
            let (start, len) = regions[rng.below(regions.len() as u64) as usize];
            let at = start + rng.below(len as u64) as usize;
            img[at] = rng.next() as u8;
        }
        let f = Arc::new(MemFile(Mutex::new(img)));
        let writable = rng.below(2) == 0;
        let q = match Qcow2::open(
            f,
            OpenOptions {
                writable,
                ..Default::default()
            },
        ) {
            Ok(q) => q,
            Err(_) => {
                errors += 1;
                continue;
            }
        };
        let size = q.virtual_size().min(4 << 20);
        let mut buf = vec![0u8; 70_000];
        let mut any_err = false;
        for k in 0..6u64 {
            let off = rng.below(size.max(1));
            let n = (buf.len() as u64).min(size - off) as usize;
            any_err |= q.read_at(&mut buf[..n], off).is_err();
            if writable {
                any_err |= q.write_at(&buf[..n], off).is_err();
                if k == 3 {
                    any_err |= q.discard(off, n as u64).is_err();
                    any_err |= q.write_zeroes(off, n as u64, true).is_err();
                }
            }
        }
        let _ = q.map(0, size);
        let _ = q.check();
        errors += any_err as usize;
    }
    assert!(errors > 0, "no mutation was ever detected");
}

#[test]
fn sequential_small_writes_hit_the_metadata_cache() {
    struct Counting {
        f: std::fs::File,
        reads: AtomicUsize,
    }
    impl ImageFile for Counting {
        fn read_at(&self, buf: &mut [u8], off: u64) -> std::io::Result<()> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            ImageFile::read_at(&self.f, buf, off)
        }
        fn write_at(&self, buf: &[u8], off: u64) -> std::io::Result<()> {
            ImageFile::write_at(&self.f, buf, off)
        }
        fn flush(&self) -> std::io::Result<()> {
            ImageFile::flush(&self.f)
        }
        fn file_size(&self) -> std::io::Result<u64> {
            ImageFile::file_size(&self.f)
        }
        fn set_len(&self, len: u64) -> std::io::Result<()> {
            ImageFile::set_len(&self.f, len)
        }
    }
    let d = Dir::new("cache");
    let q = d.path("s.qcow2");
    qcreate(&q, "64M", "");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&q)
        .unwrap();
    let c = Arc::new(Counting {
        f,
        reads: AtomicUsize::new(0),
    });
    let img = Qcow2::open(
        c.clone(),
        OpenOptions {
            writable: true,
            ..Default::default()
        },
    )
    .unwrap();
    let before = c.reads.load(Ordering::SeqCst);
    for i in 0..2048u64 {
        img.write_at(&[7; 4096], i * 4096).unwrap();
    }
    let reads = c.reads.load(Ordering::SeqCst) - before;
    // 8 MiB of 4k writes: 128 cluster allocations in one L2 table and one
    // refcount block; without caches every write would re-read both.
    assert!(
        reads < 20,
        "{reads} metadata reads for 2048 sequential writes"
    );
    img.close().unwrap();
    drop(img);
    assert_check_clean(&q);
}
