//! Descriptor sets (`-add-fd`) and the `/dev/fdset/N` paths that open them
//! (QEMU 7.2 softmmu/vl.c `parse_add_fd`, monitor/misc.c
//! `monitor_fdset_dup_fd_add`, util/osdep.c `qemu_open_internal`).
//!
//! libvirt opens files for the emulator and passes them this way: a
//! `<serial type='file'>` becomes `-add-fd set=0,fd=31` and
//! `-chardev file,path=/dev/fdset/0`. Opening such a path duplicates the
//! set's descriptor whose access mode matches the request.

use std::fs::File;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use cli::AddFdSpec;

use crate::error::VmmError;

const PREFIX: &str = "/dev/fdset/";

struct SetFd {
    set: u64,
    fd: OwnedFd,
}

/// The descriptor sets of the command line. The process owns one copy of
/// each descriptor (close-on-exec); the inherited original is left alone.
#[derive(Default)]
pub struct FdSets {
    fds: Vec<SetFd>,
}

impl FdSets {
    /// Takes the `-add-fd` descriptors, with QEMU's checks and words.
    pub fn from_specs(specs: &[AddFdSpec]) -> Result<Self, VmmError> {
        let mut fds = Vec::new();
        for spec in specs {
            let err = |m: &str| VmmError::Config(format!("-add-fd: {m}"));
            let fd = spec
                .fd
                .and_then(|f| RawFd::try_from(f).ok())
                .ok_or_else(|| err("fd option is required and must be non-negative"))?;
            if fd <= libc::STDERR_FILENO {
                return Err(err("fd cannot be a standard I/O stream"));
            }
            // Inherited descriptors have FD_CLOEXEC clear; every descriptor
            // ferrovm opened itself has it set.
            // SAFETY: F_GETFD only reads the descriptor's flags.
            let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
            if flags == -1 || flags & libc::FD_CLOEXEC != 0 {
                return Err(err("fd is not valid or already in use"));
            }
            let set = spec
                .set
                .filter(|&s| i64::try_from(s).is_ok())
                .ok_or_else(|| err("set option is required and must be non-negative"))?;
            // SAFETY: duplicates a valid descriptor; the copy is ours alone.
            let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
            if dup == -1 {
                return Err(err(&format!(
                    "error duplicating fd: {}",
                    io::Error::last_os_error()
                )));
            }
            // SAFETY: `dup` is a fresh descriptor nobody else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(dup) };
            fds.push(SetFd { set, fd });
        }
        Ok(Self { fds })
    }

    /// Opens `path` for writing: a `/dev/fdset/N` path from set N, else
    /// the file itself (created if missing), appending or truncating.
    pub fn open_for_write(&self, path: &Path, append: bool) -> io::Result<File> {
        let status = if append {
            libc::O_APPEND
        } else {
            libc::O_TRUNC
        };
        match path.to_str().and_then(|p| p.strip_prefix(PREFIX)) {
            Some(id) => self.dup(path, id, libc::O_WRONLY | libc::O_CREAT | status),
            None => std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .append(append)
                .truncate(!append)
                .open(path),
        }
    }

    /// A duplicate of set `id`'s descriptor open with `flags`' access mode,
    /// its status flags set to `flags` (`qemu_dup_flags`).
    fn dup(&self, path: &Path, id: &str, flags: i32) -> io::Result<File> {
        let fail = |e: io::Error| {
            io::Error::new(
                e.kind(),
                format!(
                    "Could not dup FD for {} flags {flags:x}: {e}",
                    path.display()
                ),
            )
        };
        let set: u64 = id.parse().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("Could not parse fdset {}", path.display()),
            )
        })?;
        let members: Vec<&SetFd> = self.fds.iter().filter(|f| f.set == set).collect();
        if members.is_empty() {
            return Err(fail(io::Error::from_raw_os_error(libc::ENOENT)));
        }
        let wanted = flags & libc::O_ACCMODE;
        let found = members.into_iter().find(|f| {
            // SAFETY: F_GETFL only reads the descriptor's status flags.
            let got = unsafe { libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(&f.fd), libc::F_GETFL) };
            got != -1 && got & libc::O_ACCMODE == wanted
        });
        let Some(member) = found else {
            return Err(fail(io::Error::from_raw_os_error(libc::EACCES)));
        };
        let file = File::from(member.fd.try_clone().map_err(fail)?);
        let raw = std::os::fd::AsRawFd::as_raw_fd(&file);
        // SAFETY: sets status flags (O_APPEND, ...) on our own descriptor.
        if unsafe { libc::fcntl(raw, libc::F_SETFL, flags) } == -1 {
            return Err(fail(io::Error::last_os_error()));
        }
        if flags & libc::O_TRUNC != 0 {
            file.set_len(0).map_err(fail)?;
        }
        Ok(file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::IntoRawFd;

    /// An inherited-looking descriptor (FD_CLOEXEC clear) on a temporary file.
    fn inherited(mode: &str) -> (RawFd, std::path::PathBuf) {
        let path = std::env::temp_dir().join(format!(
            "fv-fdset-{}-{mode}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::write(&path, b"").unwrap();
        let f = std::fs::OpenOptions::new()
            .read(mode == "r")
            .write(mode == "w")
            .open(&path)
            .unwrap();
        let fd = f.into_raw_fd();
        // SAFETY: clears FD_CLOEXEC on a descriptor this test owns.
        unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
        (fd, path)
    }

    fn spec(fd: RawFd, set: u64) -> AddFdSpec {
        AddFdSpec {
            fd: Some(fd as u64),
            set: Some(set),
            opaque: None,
        }
    }

    #[test]
    fn a_set_opens_through_its_path_with_the_requested_mode() {
        let (fd, path) = inherited("w");
        std::fs::write(&path, b"old").unwrap();
        let sets = FdSets::from_specs(&[spec(fd, 3)]).unwrap();
        let mut f = sets
            .open_for_write(Path::new("/dev/fdset/3"), false)
            .unwrap();
        f.write_all(b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new", "O_TRUNC applied");
        let mut f = sets
            .open_for_write(Path::new("/dev/fdset/3"), true)
            .unwrap();
        f.write_all(b"+").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new+", "O_APPEND applied");
        std::fs::remove_file(&path).unwrap();
        // SAFETY: closes the test's own inherited descriptor.
        unsafe { libc::close(fd) };
    }

    #[test]
    fn qemus_errors() {
        let e = |specs: &[AddFdSpec]| match FdSets::from_specs(specs) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("accepted"),
        };
        let none = AddFdSpec {
            fd: None,
            set: Some(1),
            opaque: None,
        };
        assert!(e(&[none]).contains("fd option is required and must be non-negative"));
        assert!(e(&[spec(2, 1)]).contains("fd cannot be a standard I/O stream"));
        // A descriptor ferrovm opened itself has FD_CLOEXEC set.
        let own = File::open("/dev/null").unwrap();
        let own_fd = std::os::fd::AsRawFd::as_raw_fd(&own);
        assert!(e(&[spec(own_fd, 1)]).contains("fd is not valid or already in use"));
        let (fd, path) = inherited("r");
        let no_set = AddFdSpec {
            fd: Some(fd as u64),
            set: None,
            opaque: None,
        };
        assert!(e(&[no_set]).contains("set option is required and must be non-negative"));
        let sets = FdSets::from_specs(&[spec(fd, 0)]).unwrap();
        // Read-only member, write wanted: EACCES, as monitor_fdset_dup_fd_add.
        let err = sets
            .open_for_write(Path::new("/dev/fdset/0"), true)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("Could not dup FD for /dev/fdset/0 flags 441: "),
            "{err}"
        );
        assert!(err.contains("Permission denied"), "{err}");
        let err = sets
            .open_for_write(Path::new("/dev/fdset/9"), true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("No such file or directory"), "{err}");
        let err = sets
            .open_for_write(Path::new("/dev/fdset/x"), true)
            .unwrap_err()
            .to_string();
        assert_eq!(err, "Could not parse fdset /dev/fdset/x");
        std::fs::remove_file(&path).unwrap();
        // SAFETY: closes the test's own inherited descriptor.
        unsafe { libc::close(fd) };
    }
}
