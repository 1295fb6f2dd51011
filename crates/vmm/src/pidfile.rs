//! `-pidfile`, as QEMU 7.2 writes it (util/oslib-posix.c `qemu_write_pidfile`,
//! softmmu/vl.c `qemu_maybe_daemonize`): the file is created without
//! truncation, write-locked as a whole with `fcntl(F_SETLK)` (a POSIX record
//! lock: it belongs to the process, so it must be taken after the
//! `-daemonize` fork, by the daemon), checked to still be the file at that
//! path, then truncated and given the PID. The descriptor stays open, and so
//! the lock stays held, for the whole life of the process: a second instance
//! with the same pidfile is refused, which libvirt relies on. The lock dies
//! with the process however it ends, so a pidfile left by a killed instance
//! does not block the next one. At a normal exit the file is removed.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// `strerror(errno)` without Rust's " (os error N)" suffix: QEMU's wording.
fn strerror(err: &std::io::Error) -> String {
    let text = err.to_string();
    match err.raw_os_error() {
        Some(code) => text
            .strip_suffix(&format!(" (os error {code})"))
            .map(str::to_owned)
            .unwrap_or(text),
        None => text,
    }
}

/// What `qemu_write_pidfile` reports, word for word.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("Could not create '{path}': {}", strerror(.err))]
    Create { path: String, err: std::io::Error },
    #[error("Cannot stat file: {}", strerror(.0))]
    Stat(std::io::Error),
    #[error("Cannot lock pid file: {}", strerror(.0))]
    Lock(std::io::Error),
    #[error("Failed to truncate pid file: {}", strerror(.0))]
    Truncate(std::io::Error),
    #[error("Failed to write pid file")]
    Write,
}

/// Why `-pidfile` stopped start-up, in QEMU's words (softmmu/vl.c).
#[derive(Debug, thiserror::Error)]
pub enum PidfileError {
    #[error("cannot create PID file: {0}")]
    Create(#[source] WriteError),
    #[error("cannot resolve PID file path: {path}: {}", strerror(.err))]
    Resolve { path: String, err: std::io::Error },
}

/// A written, locked pidfile. Dropping it removes the file, then releases
/// the lock (unlinking first, so no other instance can have locked the
/// path's file in between).
#[derive(Debug)]
pub struct Pidfile {
    /// Held open: closing it would release the lock.
    file: File,
    /// Resolved when written, as QEMU does, so the right file goes at exit.
    real_path: PathBuf,
}

impl Pidfile {
    /// Creates, locks and writes `path`; refuses if another process holds it.
    pub fn create(path: &Path) -> Result<Self, PidfileError> {
        let file = write_locked(path).map_err(PidfileError::Create)?;
        match std::fs::canonicalize(path) {
            Ok(real_path) => Ok(Pidfile { file, real_path }),
            Err(err) => {
                let _ = std::fs::remove_file(path);
                Err(PidfileError::Resolve {
                    path: path.display().to_string(),
                    err,
                })
            }
        }
    }

    /// The locked descriptor (for tests and diagnostics).
    pub fn file(&self) -> &File {
        &self.file
    }
}

impl Drop for Pidfile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.real_path);
    }
}

/// `qemu_write_pidfile`: the loop retries when the locked file is no longer
/// the one at `path` (another instance removed or recreated it meanwhile).
fn write_locked(path: &Path) -> Result<File, WriteError> {
    let mut file = loop {
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false) // only once the lock is ours
            .mode(0o600)
            .open(path)
            .map_err(|err| WriteError::Create {
                path: path.display().to_string(),
                err,
            })?;
        let locked = file.metadata().map_err(WriteError::Stat)?;
        lock_whole_file(&file).map_err(WriteError::Lock)?;
        match std::fs::metadata(path) {
            // Same device and inode: the path still names what we locked.
            Ok(now) if now.ino() == locked.ino() && now.dev() == locked.dev() => break file,
            // Removed or recreated by a racing instance: try again.
            _ => continue,
        }
    };
    file.set_len(0).map_err(WriteError::Truncate)?;
    let pid = format!("{}\n", std::process::id());
    if file.write_all(pid.as_bytes()).is_err() {
        let _ = std::fs::remove_file(path);
        return Err(WriteError::Write);
    }
    Ok(file)
}

/// `fcntl(F_SETLK)` with a write lock over the whole file, not waiting.
fn lock_whole_file(file: &File) -> std::io::Result<()> {
    // SAFETY: a zeroed flock is valid; the fields set are QEMU's.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = libc::F_WRLCK as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock.l_start = 0;
    lock.l_len = 0; // to the end of the file, however long it grows
                    // SAFETY: F_SETLK reads the flock we own, on a descriptor we own.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLK, &lock) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_path(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ferrovm-pidfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    /// Whether a process other than this one could take a write lock on
    /// `path` (F_GETLK answers as if another process asked).
    fn lock_holder(path: &Path) -> Option<libc::pid_t> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        let mut lock: libc::flock = unsafe { std::mem::zeroed() };
        lock.l_type = libc::F_WRLCK as libc::c_short;
        lock.l_whence = libc::SEEK_SET as libc::c_short;
        // SAFETY: F_GETLK fills the flock we own.
        assert_eq!(
            unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETLK, &mut lock) },
            0
        );
        // Note: closing `f` would drop this process's own locks on the
        // file; the callers only look before creating or after dropping.
        (lock.l_type != libc::F_UNLCK as libc::c_short).then_some(lock.l_pid)
    }

    #[test]
    fn writes_the_pid_over_stale_content_and_removes_the_file_when_dropped() {
        let path = temp_path("stale.pid");
        std::fs::write(&path, "999999999\nleftover from a killed instance\n").unwrap();
        let p = Pidfile::create(&path).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{}\n", std::process::id())
        );
        drop(p);
        assert!(!path.exists());
    }

    #[test]
    fn a_new_pidfile_is_readable_by_its_owner_only() {
        let path = temp_path("new.pid");
        let _ = std::fs::remove_file(&path);
        let p = Pidfile::create(&path).unwrap();
        // QEMU creates it S_IRUSR | S_IWUSR.
        assert_eq!(p.file().metadata().unwrap().mode() & 0o777, 0o600);
    }

    #[test]
    fn a_lock_held_by_another_process_refuses_in_qemus_words() {
        let path = temp_path("held.pid");
        let _ = std::fs::remove_file(&path);
        // A forked child holds the lock as a running instance would.
        let (r, w) = {
            let mut fds = [0; 2];
            assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
            (fds[0], fds[1])
        };
        let cpath = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: the child only calls async-signal-safe functions.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            unsafe {
                let fd = libc::open(cpath.as_ptr(), libc::O_WRONLY | libc::O_CREAT, 0o600);
                let mut lock: libc::flock = std::mem::zeroed();
                lock.l_type = libc::F_WRLCK as libc::c_short;
                lock.l_whence = libc::SEEK_SET as libc::c_short;
                libc::fcntl(fd, libc::F_SETLK, &lock);
                libc::write(w, b"x".as_ptr().cast(), 1);
                libc::pause();
                libc::_exit(0);
            }
        }
        let mut b = [0u8; 1];
        assert_eq!(unsafe { libc::read(r, b.as_mut_ptr().cast(), 1) }, 1);
        assert_eq!(lock_holder(&path), Some(pid));

        let err = Pidfile::create(&path).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot create PID file: Cannot lock pid file: Resource temporarily unavailable"
        );
        assert!(
            path.exists(),
            "a refused instance leaves the holder's file alone"
        );

        // The holder dies (as by SIGKILL): its lock goes with it.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
            libc::close(r);
            libc::close(w);
        }
        let p = Pidfile::create(&path).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{}\n", std::process::id())
        );
        drop(p);
    }

    #[test]
    fn an_uncreatable_path_is_reported_as_qemu_does() {
        let err = Pidfile::create(Path::new("/nonexistent/ferrovm/x.pid")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot create PID file: Could not create '/nonexistent/ferrovm/x.pid': \
             No such file or directory"
        );
        let dir = temp_path("");
        let err = Pidfile::create(&dir).unwrap_err();
        assert!(err.to_string().ends_with("': Is a directory"), "{err}");
    }
}
