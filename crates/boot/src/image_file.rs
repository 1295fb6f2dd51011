//! Reading the `-kernel` and `-initrd` files: regular files only, and never
//! more bytes than the guest could hold.
//!
//! `std::fs::read` on `/dev/zero` never ends (and grows the heap without
//! bound), and on a FIFO without a writer `open` itself blocks. QEMU 7.2
//! (hw/i386/x86.c `x86_load_linux`) hangs on a FIFO and reads whatever a file
//! holds; ferrovm refuses both up front: the file is opened with `O_NONBLOCK`
//! (so a FIFO opens at once), checked with `fstat` on the opened descriptor
//! (no race with a rename of the path), and read through a bound of
//! `max + 1` bytes, so a file that grows after the `fstat`, or a
//! `/proc`-like file whose `st_size` is 0, cannot exceed the bound either.
//!
//! The bound the caller passes is the guest's low RAM
//! ([`crate::MemoryLayout::low_end`]): the boot protocols put both the
//! kernel (at 1 MiB) and the initrd (below the top of low RAM) there, so a
//! larger file can never be loaded.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// Why a kernel or initrd file was refused. The messages follow a
/// "could not load kernel '<path>': " prefix.
#[derive(Debug, thiserror::Error)]
pub enum ImageFileError {
    /// open/fstat/read failed: the OS's reason, as QEMU prints `strerror`.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// QEMU's wording for a directory (`strerror(EISDIR)`).
    #[error("Is a directory")]
    Directory,
    /// A character or block device, FIFO or socket.
    #[error("not a regular file ({0})")]
    NotRegular(&'static str),
    /// QEMU's wording for an oversized initrd ("initrd is too large, cannot
    /// support.(max: %u, need %d)"), applied to every image file.
    #[error("file is too large for guest RAM, cannot support (max: {max} bytes, need {size})")]
    TooLarge { max: u64, size: u64 },
    /// The file grew past the bound between `fstat` and the end of reading.
    #[error("file grew past {max} bytes (what fits guest RAM) while it was read")]
    Grew { max: u64 },
}

/// Opens `path` for reading without blocking and checks that it is a regular
/// file of at most `max` bytes. Returns the file and its size.
pub fn open(path: &Path, max: u64) -> Result<(File, u64), ImageFileError> {
    let file = OpenOptions::new()
        .read(true)
        // A FIFO opens at once instead of waiting for a writer; a terminal
        // device does not become the controlling terminal.
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    // fstat on the descriptor just opened, not stat on the path.
    let meta = file.metadata()?;
    let kind = meta.file_type();
    if kind.is_dir() {
        return Err(ImageFileError::Directory);
    }
    if !kind.is_file() {
        let what = if kind.is_char_device() {
            "character device"
        } else if kind.is_block_device() {
            "block device"
        } else if kind.is_fifo() {
            "FIFO"
        } else if kind.is_socket() {
            "socket"
        } else {
            "unknown file type"
        };
        return Err(ImageFileError::NotRegular(what));
    }
    let size = meta.len();
    if size > max {
        return Err(ImageFileError::TooLarge { max, size });
    }
    Ok((file, size))
}

/// Reads the whole of `path` if it is a regular file of at most `max` bytes.
pub fn read(path: &Path, max: u64) -> Result<Vec<u8>, ImageFileError> {
    let (file, size) = open(path, max)?;
    let mut bytes = Vec::new();
    // `size <= max`, and max is at most the guest's RAM; a failed allocation
    // is an error, not an abort.
    bytes
        .try_reserve_exact(usize::try_from(size).unwrap_or(usize::MAX))
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::OutOfMemory))?;
    file.take(max.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(ImageFileError::Grew { max });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::{Duration, Instant};

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            static N: AtomicU32 = AtomicU32::new(0);
            let dir = std::env::temp_dir().join(format!(
                "ferrovm-image-file-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn a_regular_file_is_read_whole() {
        let dir = TempDir::new();
        let p = dir.0.join("kernel");
        let data: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
        std::fs::write(&p, &data).unwrap();
        assert_eq!(read(&p, 10_000).unwrap(), data, "exactly at the bound");
        assert_eq!(read(&p, u64::MAX).unwrap(), data);
    }

    #[test]
    fn an_empty_regular_file_reads_as_empty() {
        let dir = TempDir::new();
        let p = dir.0.join("empty");
        std::fs::write(&p, b"").unwrap();
        assert!(read(&p, 0).unwrap().is_empty());
    }

    #[test]
    fn one_byte_over_the_bound_is_refused_with_both_sizes() {
        let dir = TempDir::new();
        let p = dir.0.join("big");
        std::fs::write(&p, vec![0u8; 4097]).unwrap();
        let err = read(&p, 4096).unwrap_err();
        assert!(
            matches!(
                err,
                ImageFileError::TooLarge {
                    max: 4096,
                    size: 4097
                }
            ),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains("4096") && msg.contains("4097"), "{msg}");
    }

    #[test]
    fn a_sparse_file_larger_than_the_bound_is_refused_without_reading() {
        let dir = TempDir::new();
        let p = dir.0.join("sparse");
        let f = File::create(&p).unwrap();
        f.set_len(64 << 30).unwrap(); // 64 GiB, no blocks
        let start = Instant::now();
        assert!(matches!(
            read(&p, 128 << 20),
            Err(ImageFileError::TooLarge { .. })
        ));
        assert!(start.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn dev_zero_is_refused_as_a_character_device() {
        let err = read(Path::new("/dev/zero"), 1 << 20).unwrap_err();
        assert!(
            matches!(err, ImageFileError::NotRegular("character device")),
            "{err:?}"
        );
        assert_eq!(err.to_string(), "not a regular file (character device)");
    }

    #[test]
    fn a_directory_is_refused_in_qemus_words() {
        let dir = TempDir::new();
        let err = read(&dir.0, 1 << 20).unwrap_err();
        assert!(matches!(err, ImageFileError::Directory), "{err:?}");
        assert_eq!(err.to_string(), "Is a directory");
    }

    #[test]
    fn a_fifo_without_writer_is_refused_without_blocking() {
        let dir = TempDir::new();
        let p = dir.0.join("fifo");
        let c = CString::new(p.as_os_str().as_bytes()).unwrap();
        // SAFETY: mkfifo with a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // A blocking open would wait for a writer forever: run it on a
        // thread so a regression fails the test instead of hanging it.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(read(&p, 1 << 20).map(|_| ()));
        });
        let got = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("opening a FIFO must not block");
        assert!(
            matches!(got, Err(ImageFileError::NotRegular("FIFO"))),
            "{got:?}"
        );
    }

    #[test]
    fn a_unix_socket_is_refused() {
        let dir = TempDir::new();
        let p = dir.0.join("sock");
        let _listener = std::os::unix::net::UnixListener::bind(&p).unwrap();
        // Opening a socket path fails with ENXIO on Linux: still an error, never a read.
        let err = read(&p, 1 << 20).unwrap_err();
        assert!(
            matches!(
                err,
                ImageFileError::NotRegular("socket") | ImageFileError::Io(_)
            ),
            "{err:?}"
        );
    }

    #[test]
    fn a_missing_file_gives_the_os_reason() {
        let err = read(Path::new("/nonexistent/ferrovm/kernel"), 1 << 20).unwrap_err();
        match err {
            ImageFileError::Io(e) => assert_eq!(e.kind(), std::io::ErrorKind::NotFound),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_proc_file_with_zero_st_size_is_still_bounded() {
        // /proc files report st_size 0 but have content: the read bound, not
        // the fstat size, is what stops an overlong read.
        let whole = read(Path::new("/proc/self/maps"), 1 << 20).unwrap();
        assert!(!whole.is_empty());
        let err = read(Path::new("/proc/self/maps"), 8).unwrap_err();
        assert!(matches!(err, ImageFileError::Grew { max: 8 }), "{err:?}");
    }
}
