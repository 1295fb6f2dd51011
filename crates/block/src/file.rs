//! The `file` protocol driver (QEMU 7.2 block/file-posix.c): a host file
//! opened with the node's cache flags, OFD image locks, and what the I/O
//! engines need to reach it ([`FileIo`]).

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::error::{errno_of, BlockError};
use crate::lock::{self, LockState};
use crate::node::{Driver, NodeFlags};
use crate::options::Opts;
use crate::perm;

/// `aio=`: which engine runs this node's requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aio {
    /// A pool of I/O threads doing preadv/pwritev (QEMU's default).
    Threads,
    /// io_uring. `aio=native` (Linux AIO) also maps here: both are the
    /// kernel's asynchronous interface, io_uring is its successor, and no
    /// maintained Rust binding to libaio exists. QEMU's requirement that
    /// `aio=native` comes with `cache.direct=on` is kept.
    IoUring,
}

/// `locking=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Locking {
    On,
    Off,
    /// QEMU: on when the host supports OFD locks (Linux always does).
    Auto,
}

/// The opened host file as the I/O engines see it.
#[derive(Debug)]
pub struct FileIo {
    pub file: File,
    pub filename: String,
    /// Opened with O_DIRECT (`cache.direct=on`).
    pub direct: bool,
    /// Required alignment of offsets and lengths under O_DIRECT.
    pub req_align: u64,
    /// Required alignment of buffer addresses under O_DIRECT.
    pub mem_align: usize,
    /// `cache.no-flush=on`: flushes complete without fdatasync.
    pub no_flush: bool,
    pub aio: Aio,
    /// Serialises read-modify-write of unaligned O_DIRECT writes (QEMU marks
    /// such requests serialising, block/io.c).
    pub rmw: Mutex<()>,
    /// `BlockStatsSpecificFile`.
    pub discard_nb_ok: AtomicU64,
    pub discard_nb_failed: AtomicU64,
    pub discard_bytes_ok: AtomicU64,
    /// The dirty bitmaps of the linear nodes over this file.
    pub dirty: crate::dirty::FileWatchers,
}

/// The `file` driver's state for one node.
pub struct FileDriver {
    pub io: std::sync::Arc<FileIo>,
    /// `host_device`: a block or character device (QEMU's file-posix
    /// `hdev` driver) rather than a regular file.
    device: bool,
    locking: bool,
    locks: Mutex<LockState>,
    /// The descriptor's mode and what decides it (QEMU's `raw_reconfigure_getfd`).
    mode: Mutex<FdMode>,
    /// `locking` and `aio` as given, which a reopen may not change.
    pub(crate) fixed_opts: Vec<(&'static str, String)>,
}

/// Whether the descriptor is open for writing, and what it must be.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FdMode {
    pub rdwr: bool,
    /// The node is read-only: the descriptor is too.
    pub read_only: bool,
    /// `auto-read-only`: a read-write node whose file cannot be opened for
    /// writing was opened read-only, and asks again when a writer comes.
    pub auto_read_only: bool,
}

impl FileDriver {
    /// `raw_open_common`: consumes `filename`, `locking`, `aio`,
    /// `aio-max-batch`, `x-check-cache-dropped`, `drop-cache`. `device`:
    /// the `host_device` driver, which wants a block or character device,
    /// where `file` wants a regular file.
    pub fn open(
        o: &mut Opts,
        flags: &NodeFlags,
        auto_read_only: bool,
        device: bool,
    ) -> Result<Self, BlockError> {
        let filename = o
            .take_str("filename")?
            .ok_or_else(|| BlockError::new("Parameter 'filename' is missing"))?;
        let mut fixed_opts = Vec::new();
        let locking_opt = o.take_enum("locking", &["on", "off", "auto"])?;
        if let Some(l) = &locking_opt {
            fixed_opts.push(("locking", l.clone()));
        }
        let locking = match locking_opt.as_deref() {
            Some("on") => Locking::On,
            Some("off") => Locking::Off,
            _ => Locking::Auto,
        };
        let aio_opt = o.take_enum("aio", &["threads", "native", "io_uring"])?;
        if let Some(a) = &aio_opt {
            fixed_opts.push(("aio", a.clone()));
        }
        let aio = match aio_opt.as_deref() {
            Some("threads") => Aio::Threads,
            Some("native") => {
                if !flags.direct {
                    return Err(BlockError::new(
                        "aio=native was specified, but it requires cache.direct=on, which was not specified.",
                    ));
                }
                Aio::IoUring
            }
            Some(_) => Aio::IoUring,
            None => crate::engine::DEFAULT_AIO,
        };
        for k in [
            "aio-max-batch",
            "drop-cache",
            "x-check-cache-dropped",
            "pr-manager",
        ] {
            o.take(k);
        }
        let mut rdwr = !flags.read_only;
        let file = match open_file(&filename, rdwr, flags.direct) {
            Err(e)
                if rdwr
                    && auto_read_only
                    && matches!(
                        e.raw_os_error(),
                        Some(libc::EACCES | libc::EPERM | libc::EROFS)
                    ) =>
            {
                rdwr = false;
                open_file(&filename, false, flags.direct)
            }
            r => r,
        }
        .map_err(|e| BlockError::errno(format!("Could not open '{filename}'"), errno_of(&e)))?;
        let kind = file
            .metadata()
            .map_err(|e| BlockError::errno(format!("Could not stat '{filename}'"), errno_of(&e)))?
            .file_type();
        use std::os::unix::fs::FileTypeExt;
        if device && !(kind.is_block_device() || kind.is_char_device()) {
            return Err(BlockError::new(format!(
                "'host_device' driver requires '{filename}' to be either a character or block device"
            )));
        }
        if !device && !kind.is_file() {
            return Err(BlockError::new(format!(
                "'file' driver requires '{filename}' to be a regular file"
            )));
        }
        let (req_align, mem_align) = if flags.direct {
            probe_alignment(&file)
                .ok_or_else(|| BlockError::new("Could not find working O_DIRECT alignment"))?
        } else {
            (1, 1)
        };
        Ok(FileDriver {
            io: std::sync::Arc::new(FileIo {
                file,
                filename,
                direct: flags.direct,
                req_align,
                mem_align,
                no_flush: flags.no_flush,
                aio,
                rmw: Mutex::new(()),
                discard_nb_ok: AtomicU64::new(0),
                discard_nb_failed: AtomicU64::new(0),
                discard_bytes_ok: AtomicU64::new(0),
                dirty: Default::default(),
            }),
            device,
            locking: locking != Locking::Off,
            locks: Mutex::new(LockState::default()),
            mode: Mutex::new(FdMode {
                rdwr,
                read_only: flags.read_only,
                auto_read_only,
            }),
            fixed_opts,
        })
    }

    /// A reopen changes the node's read-only and auto-read-only flags;
    /// the descriptor follows when permissions are applied next
    /// ([`Driver::set_perm`]) or with [`FileDriver::sync_mode`].
    pub(crate) fn set_mode_flags(&self, read_only: bool, auto_read_only: bool) {
        let mut m = self.mode.lock().unwrap_or_else(|e| e.into_inner());
        m.read_only = read_only;
        m.auto_read_only = auto_read_only;
    }

    /// Reopens the descriptor read-write or read-only when the flags and
    /// the permissions `perm` held on the node ask for another mode: a
    /// new descriptor of the same file gets this one's image locks, then
    /// takes its place under the same number (dup3), so every user of
    /// [`FileIo`] moves at once. Callers hold the devices drained.
    pub(crate) fn sync_mode(&self, perm_bits: u64) -> Result<(), BlockError> {
        let mut m = self.mode.lock().unwrap_or_else(|e| e.into_inner());
        let writers = perm_bits & (perm::WRITE | perm::WRITE_UNCHANGED | perm::RESIZE) != 0;
        let want = if m.read_only {
            false
        } else if m.auto_read_only {
            m.rdwr || writers
        } else {
            true
        };
        if want == m.rdwr {
            return Ok(());
        }
        let name = &self.io.filename;
        let new = open_file(name, want, self.io.direct)
            .map_err(|e| BlockError::errno(format!("Could not open '{name}'"), errno_of(&e)))?;
        if self.locking {
            let st = *self.locks.lock().unwrap_or_else(|e| e.into_inner());
            let mut copy = LockState::default();
            lock::apply(
                new.as_raw_fd(),
                &mut copy,
                st.locked_perm,
                st.locked_unshared,
                false,
            )?;
        }
        // SAFETY: both descriptors are open; dup3 atomically makes the old
        // number refer to the new open file description.
        let r = unsafe { libc::dup3(new.as_raw_fd(), self.io.file.as_raw_fd(), libc::O_CLOEXEC) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            return Err(BlockError::errno(
                format!("Could not reopen '{name}'"),
                errno_of(&e),
            ));
        }
        m.rdwr = want;
        Ok(())
    }
}

fn open_file(name: &str, rdwr: bool, direct: bool) -> std::io::Result<File> {
    let mut cflags = libc::O_CLOEXEC;
    if direct {
        cflags |= libc::O_DIRECT;
    }
    OpenOptions::new()
        .read(true)
        .write(rdwr)
        .custom_flags(cflags)
        .open(name)
}

impl FileDriver {
    pub fn locks(&self) -> LockState {
        *self.locks.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The O_DIRECT alignment (offset/length, memory). Linux reports it with
/// statx(STATX_DIOALIGN) (6.1+); QEMU's `raw_probe_alignment` instead
/// tries reads of growing size, which on this host's ext4 succeeds at 1 byte
/// over holes and so under-reports. Without statx, 4096 is safe.
fn probe_alignment(file: &File) -> Option<(u64, usize)> {
    // SAFETY: an all-zero statx is valid; the kernel fills it.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd, empty path with AT_EMPTY_PATH, valid out pointer.
    let r = unsafe {
        libc::statx(
            file.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_DIOALIGN,
            &mut stx,
        )
    };
    if r == 0 && stx.stx_mask & libc::STATX_DIOALIGN != 0 && stx.stx_dio_offset_align != 0 {
        return Some((
            stx.stx_dio_offset_align as u64,
            stx.stx_dio_mem_align.max(1) as usize,
        ));
    }
    Some((4096, 4096))
}

/// A zeroed heap buffer with a given alignment (bounce buffers for O_DIRECT).
pub struct AlignedBuf {
    ptr: *mut u8,
    layout: std::alloc::Layout,
}

// SAFETY: the buffer is exclusively owned.
unsafe impl Send for AlignedBuf {}

impl AlignedBuf {
    pub fn new(len: usize, align: usize) -> Option<Self> {
        let layout = std::alloc::Layout::from_size_align(len.max(1), align.max(1)).ok()?;
        // SAFETY: layout has non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        (!ptr.is_null()).then_some(AlignedBuf { ptr, layout })
    }
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr
    }
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: ptr is valid for layout.size() bytes and owned by self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.layout.size()) }
    }
}

/// An anonymous mapping in 2 MiB transparent huge pages where the kernel
/// has them, for a bounce buffer reused across requests: O_DIRECT pins every
/// page of its buffer for each request, and with 4 KiB pages a 1 MiB read
/// took 2.5 times as long as QEMU's into its guest RAM, which QEMU maps with
/// QEMU_MADV_HUGEPAGE (`qemu_ram_setup`). The advice must come before the
/// first touch, so this is not a heap allocation.
pub struct HugeBuf {
    /// The mapping (for munmap) and its length.
    map: *mut u8,
    map_len: usize,
    /// The 2 MiB-aligned buffer inside it.
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is exclusively owned.
unsafe impl Send for HugeBuf {}

impl HugeBuf {
    const HUGE: usize = 2 << 20;

    pub fn new(len: usize) -> Option<Self> {
        let len = len.max(1).div_ceil(Self::HUGE) * Self::HUGE;
        let map_len = len + Self::HUGE;
        // SAFETY: a fresh private anonymous mapping, owned by the result.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return None;
        }
        let map = map.cast::<u8>();
        // SAFETY: the aligned start stays inside the mapping (it has one
        // huge page to spare).
        let ptr = unsafe { map.add(map.align_offset(Self::HUGE)) };
        // SAFETY: inside the mapping. Best effort: without huge pages the
        // buffer works the same, only slower.
        unsafe { libc::madvise(ptr.cast(), len, libc::MADV_HUGEPAGE) };
        Some(HugeBuf {
            map,
            map_len,
            ptr,
            len,
        })
    }

    /// The usable length (a whole number of huge pages).
    pub fn capacity(&self) -> usize {
        self.len
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: ptr is valid for len bytes (zero-filled when first
        // touched) and owned by self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for HugeBuf {
    fn drop(&mut self) {
        // SAFETY: mapped in new() with this length.
        unsafe { libc::munmap(self.map.cast(), self.map_len) };
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated with this layout in new().
        unsafe { std::alloc::dealloc(self.ptr, self.layout) }
    }
}

impl Driver for FileDriver {
    fn format_name(&self) -> &'static str {
        if self.device {
            "host_device"
        } else {
            "file"
        }
    }

    fn filename(&self) -> String {
        self.io.filename.clone()
    }

    /// QEMU counts lengths in 512-byte sectors (`bdrv_getlength` is
    /// `total_sectors * 512`, rounded up), so a file of 196616 bytes is a
    /// node of 197120.
    fn size(&self) -> Result<u64, BlockError> {
        if self.device {
            // A device's length is where its end is (metadata says 0).
            // SAFETY: lseek on an open fd; no memory is passed.
            let end = unsafe { libc::lseek(self.io.file.as_raw_fd(), 0, libc::SEEK_END) };
            if end < 0 {
                return Err(BlockError::errno(
                    "Failed to get device size",
                    std::io::Error::last_os_error()
                        .raw_os_error()
                        .unwrap_or(libc::EIO),
                ));
            }
            return Ok((end as u64).div_ceil(512) * 512);
        }
        self.io
            .file
            .metadata()
            .map(|m| m.len().div_ceil(512) * 512)
            .map_err(|e| BlockError::errno("Failed to get file size", errno_of(&e)))
    }

    fn actual_size(&self) -> Option<u64> {
        self.io.file.metadata().ok().map(|m| m.blocks() * 512)
    }

    fn truncate(&self, size: u64) -> Result<(), BlockError> {
        if self.device {
            // raw_co_truncate for a device: it cannot grow.
            if size > self.size()? {
                return Err(BlockError::new("Cannot grow device files"));
            }
            return Ok(());
        }
        // raw_co_truncate for a regular file: ftruncate.
        self.io
            .file
            .set_len(size)
            .map_err(|e| BlockError::errno("Failed to resize the file", errno_of(&e)))
    }

    fn set_perm(&self, old: (u64, u64), new: (u64, u64)) -> Result<(), BlockError> {
        self.sync_mode(new.0)?;
        if !self.locking {
            return Ok(());
        }
        let mut st = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        lock::change(
            self.io.file.as_raw_fd(),
            &mut st,
            old,
            new,
            &self.io.filename,
        )
    }

    fn child_perm(&self, _role: &str, perm: u64, shared: u64) -> (u64, u64) {
        (perm, shared | perm::DEFAULT_PERM_UNCHANGED)
    }

    fn file_io(&self) -> Option<&std::sync::Arc<FileIo>> {
        Some(&self.io)
    }

    fn as_file(&self) -> Option<&FileDriver> {
        Some(self)
    }

    fn driver_specific_stats(&self) -> Option<serde_json::Value> {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Some(serde_json::json!({
            "driver": self.format_name(),
            "discard-nb-ok": g(&self.io.discard_nb_ok),
            "discard-nb-failed": g(&self.io.discard_nb_failed),
            "discard-bytes-ok": g(&self.io.discard_bytes_ok),
        }))
    }
}
