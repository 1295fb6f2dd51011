//! Shrinking qcow2 images (`Qcow2::truncate` to a smaller size) against
//! QEMU 7.2 as the oracle: `qemu-img resize --shrink` runs the same
//! `qcow2_co_truncate` as QMP `block_resize`, so the image QEMU leaves is
//! what ours must look like (length, map, contents, a clean `check`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use block::qcow2::{ImageFile, OpenOptions, Qcow2, Qcow2Error};

struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        static N: AtomicU64 = AtomicU64::new(0);
        // Under /var/tmp: a disk-backed fs (holes and fallocate work).
        let p = PathBuf::from(format!(
            "/var/tmp/ferrovm-shrink-{}-{}-{tag}",
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

/// Runs qemu-io commands (`-c` each) on a qcow2 image; any failure fails.
fn qemu_io(img: &Path, cmds: &[&str]) {
    let mut args = vec!["-f", "qcow2"];
    for c in cmds {
        args.push("-c");
        args.push(c);
    }
    args.push(img.to_str().unwrap());
    let (rc, out) = tool("qemu-io", &args);
    assert!(
        rc == 0 && !out.contains("Pattern verification failed") && !out.contains("failed"),
        "qemu-io {cmds:?} on {img:?}: {out}"
    );
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn assert_check_clean(img: &Path) {
    let (rc, out) = tool("qemu-img", &["check", "-f", "qcow2", s(img)]);
    assert_eq!(rc, 0, "qemu-img check: {out}");
    assert!(out.contains("No errors were found"), "{out}");
}

fn info(img: &Path) -> serde_json::Value {
    serde_json::from_str(&qemu_img(&["info", "--output=json", s(img)])).unwrap()
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

/// The same image twice: `create_opts`, `size`, then the qemu-io writes.
fn twins(d: &Dir, create_opts: &str, size: &str, writes: &[&str]) -> (PathBuf, PathBuf) {
    let a = d.path("qemu.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        create_opts,
        s(&a),
        size,
    ]);
    if !writes.is_empty() {
        qemu_io(&a, writes);
    }
    let b = d.path("ours.qcow2");
    std::fs::copy(&a, &b).unwrap();
    (a, b)
}

/// Shrinks one twin with qemu-img and the other with `Qcow2::truncate`,
/// and compares what QEMU's tools see.
fn shrink_like_qemu(create_opts: &str, size: &str, writes: &[&str], new_size: u64) {
    let d = Dir::new("like");
    let (theirs, ours) = twins(&d, create_opts, size, writes);
    qemu_img(&[
        "resize",
        "-q",
        "--shrink",
        s(&theirs),
        &new_size.to_string(),
    ]);
    let img = open_rw(&ours);
    assert_eq!(img.truncate(new_size), Ok(None), "{create_opts}");
    assert_eq!(img.virtual_size(), new_size);
    img.close().unwrap();
    drop(img);
    assert_check_clean(&ours);
    let len = |p: &Path| std::fs::metadata(p).unwrap().len();
    assert_eq!(len(&ours), len(&theirs), "file length, {create_opts}");
    assert_eq!(info(&ours)["virtual-size"], new_size);
    let map = |p: &Path| qemu_img(&["map", "--output=json", s(p)]);
    assert_eq!(map(&ours), map(&theirs), "{create_opts}");
    let (rc, out) = tool("qemu-img", &["compare", s(&theirs), s(&ours)]);
    assert_eq!(rc, 0, "{create_opts}: {out}");
    // The header and the tables QEMU keeps (L1 and refcount table sizes,
    // which entries are left) are the same bytes.
    let head = |p: &Path| std::fs::read(p).unwrap()[..104].to_vec();
    assert_eq!(head(&ours), head(&theirs), "{create_opts}");
}

const SCATTERED: &[&str] = &[
    "write -P 1 0 1M",
    "write -P 2 60M 2M",
    "write -P 3 5M 8k",
    "write -P 4 20M 64k",
    "write -P 5 4M 1M",
];

#[test]
fn shrink_gives_the_image_qemu_gives() {
    // Data past the new end in the middle of the file, an unaligned new
    // size (the cluster it ends in stays), one L2 table left.
    shrink_like_qemu("cluster_size=4096", "64M", SCATTERED, 5 * (1 << 20) + 512);
    // Default clusters: nothing past the end is allocated but the L2 table
    // the new end falls in (QEMU allocates it for the discard).
    shrink_like_qemu("cluster_size=65536", "1M", &[], 512 << 10);
    // To one sector (qemu-img refuses 0): the L1 entries but the first go.
    shrink_like_qemu("cluster_size=65536", "64M", SCATTERED, 512);
    // Many refcount blocks, which the shrink drops from the table, with
    // sub-byte, 16-bit and 64-bit refcounts.
    let small = [
        "write -P 1 0 100k",
        "write -P 2 7M 1M",
        "write -P 3 3M 300k",
        "write -P 4 64k 1k",
        "write -P 5 5M 1M",
    ];
    for bits in [1, 16, 64] {
        let o = format!("cluster_size=512,refcount_bits={bits}");
        shrink_like_qemu(&o, "8M", &small, 64 << 10);
    }
    // v2 and lazy refcounts.
    shrink_like_qemu("compat=0.10,cluster_size=4096", "64M", SCATTERED, 3 << 20);
    shrink_like_qemu(
        "lazy_refcounts=on,cluster_size=16384",
        "64M",
        SCATTERED,
        21 << 20,
    );
}

#[test]
fn shrink_frees_compressed_clusters() {
    let d = Dir::new("comp");
    let raw = d.path("r.raw");
    qemu_img(&["create", "-q", "-f", "raw", s(&raw), "8M"]);
    let (rc, out) = tool(
        "qemu-io",
        &[
            "-f",
            "raw",
            "-c",
            "write -P 7 0 3M",
            "-c",
            "write -P 8 5M 3M",
            s(&raw),
        ],
    );
    assert_eq!(rc, 0, "{out}");
    let theirs = d.path("qemu.qcow2");
    qemu_img(&[
        "convert",
        "-c",
        "-O",
        "qcow2",
        "-o",
        "cluster_size=4096",
        s(&raw),
        s(&theirs),
    ]);
    qemu_io(&theirs, &["write -P 9 6M 64k"]);
    for new_size in [6 * (1 << 20) + 512, 4 << 20] {
        let a = d.path("a.qcow2");
        let b = d.path("b.qcow2");
        std::fs::copy(&theirs, &a).unwrap();
        std::fs::copy(&theirs, &b).unwrap();
        qemu_img(&["resize", "-q", "--shrink", s(&a), &new_size.to_string()]);
        let img = open_rw(&b);
        img.truncate(new_size).unwrap();
        img.close().unwrap();
        drop(img);
        assert_check_clean(&b);
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    }
}

#[test]
fn data_below_the_new_end_stays_and_above_reads_zero_when_grown_again() {
    let d = Dir::new("regrow");
    let (_, q) = twins(&d, "cluster_size=4096", "64M", SCATTERED);
    let img = open_rw(&q);
    img.truncate(5 * (1 << 20) + 512).unwrap();
    img.truncate(64 << 20).unwrap();
    // Our own reads: zeros where the clusters went.
    let mut b = vec![0xffu8; 4096];
    img.read_at(&mut b, 60 << 20).unwrap();
    assert!(b.iter().all(|&x| x == 0));
    img.close().unwrap();
    drop(img);
    assert_check_clean(&q);
    qemu_io(
        &q,
        &[
            "read -P 1 0 1M",
            "read -P 5 4M 1M",
            // The cluster the new end fell in is kept whole (QEMU discards
            // from the next cluster on), so its tail comes back.
            "read -P 3 5M 4k",
            "read -P 0 5246976 61861888",
        ],
    );
}

#[test]
fn internal_snapshots_keep_their_data() {
    // QEMU refuses a resize only for v2 images with snapshots.
    let d = Dir::new("snap");
    let (_, q) = twins(
        &d,
        "cluster_size=65536",
        "4M",
        &["write -P 1 0 1M", "write -P 2 3M 1M"],
    );
    qemu_img(&["snapshot", "-c", "s1", s(&q)]);
    qemu_io(&q, &["write -P 3 3M 64k", "write -P 4 2M 64k"]);
    let img = open_rw(&q);
    img.truncate(1 << 20).unwrap();
    img.truncate(4 << 20).unwrap();
    img.close().unwrap();
    drop(img);
    assert_check_clean(&q);
    qemu_io(&q, &["read -P 1 0 1M", "read -P 0 1M 3M"]);
    let snap = d.path("s1.raw");
    qemu_img(&[
        "convert",
        "-l",
        "snapshot.name=s1",
        "-O",
        "raw",
        s(&q),
        s(&snap),
    ]);
    let (rc, out) = tool(
        "qemu-io",
        &[
            "-f",
            "raw",
            "-c",
            "read -P 1 0 1M",
            "-c",
            "read -P 2 3M 1M",
            s(&snap),
        ],
    );
    assert!(rc == 0 && !out.contains("failed"), "{out}");
}

#[test]
fn refusals_are_qemus() {
    let d = Dir::new("refuse");
    let (_, q) = twins(&d, "compat=0.10", "4M", &["write -P 1 0 1M"]);
    qemu_img(&["snapshot", "-c", "s1", s(&q)]);
    let img = open_rw(&q);
    assert_eq!(
        img.truncate(1 << 20).unwrap_err().to_string(),
        "Can't resize a v2 image which has snapshots"
    );
    assert_eq!(
        img.truncate(1000).unwrap_err().to_string(),
        "The new size must be a multiple of 512"
    );
    drop(img);
    let ro = Qcow2::open_path(&q, OpenOptions::default()).unwrap();
    assert_eq!(ro.truncate(1 << 20), Err(Qcow2Error::ReadOnly));
}

/// A host file that cannot be cut (as a file node without the means to).
struct NoCut(std::fs::File);

impl ImageFile for NoCut {
    fn read_at(&self, buf: &mut [u8], off: u64) -> std::io::Result<()> {
        ImageFile::read_at(&self.0, buf, off)
    }
    fn write_at(&self, buf: &[u8], off: u64) -> std::io::Result<()> {
        ImageFile::write_at(&self.0, buf, off)
    }
    fn flush(&self) -> std::io::Result<()> {
        ImageFile::flush(&self.0)
    }
    fn file_size(&self) -> std::io::Result<u64> {
        ImageFile::file_size(&self.0)
    }
    fn set_len(&self, _len: u64) -> std::io::Result<()> {
        Err(std::io::Error::from_raw_os_error(libc::EPERM))
    }
}

#[test]
fn a_tail_that_cannot_be_cut_is_only_a_warning() {
    let d = Dir::new("nocut");
    let (_, q) = twins(&d, "cluster_size=4096", "64M", SCATTERED);
    let before = std::fs::metadata(&q).unwrap().len();
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&q)
        .unwrap();
    let img = Qcow2::open(
        Arc::new(NoCut(f)),
        OpenOptions {
            writable: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        img.truncate(1 << 20).unwrap().as_deref(),
        Some(
            "Failed to truncate the tail of the image: Could not resize file: Operation not permitted"
        )
    );
    assert_eq!(img.virtual_size(), 1 << 20);
    img.close().unwrap();
    drop(img);
    // Not cut (it may even have grown by the L2 tables the discard
    // allocated for the clusters past the end); the clusters there are free.
    assert!(std::fs::metadata(&q).unwrap().len() >= before);
    assert_check_clean(&q);
    qemu_io(&q, &["read -P 1 0 1M"]);
}
