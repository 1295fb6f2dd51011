//! `-daemonize`, as QEMU does it (os-posix.c): fork before any thread
//! exists; the parent waits until the child reports that start-up finished,
//! then exits 0 (or 1 if the child failed); the child leaves the session and
//! stops using the terminal.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};

use crate::error::VmmError;

/// The child's end of the start-up handshake.
pub struct Daemon {
    ready: File,
}

/// Forks. Returns in the child only; the parent exits with the child's verdict.
pub fn daemonize() -> Result<Daemon, VmmError> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the array; fork is called before any thread exists.
    unsafe {
        if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        let (r, w) = (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]));
        match libc::fork() {
            -1 => Err(std::io::Error::last_os_error().into()),
            0 => {
                drop(r);
                libc::setsid();
                Ok(Daemon {
                    ready: File::from(w),
                })
            }
            _ => {
                drop(w);
                let mut status = [1u8];
                let mut r = File::from(r);
                // EOF (the child died before it was ready) counts as failure.
                let ok = matches!(r.read(&mut status), Ok(1)) && status[0] == 0;
                std::process::exit(if ok { 0 } else { 1 });
            }
        }
    }
}

impl Daemon {
    /// Start-up succeeded: release the parent and detach from the terminal.
    pub fn ready(mut self) {
        // SAFETY: open/dup2 on fds 0-2 with a freshly opened /dev/null.
        unsafe {
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            if null >= 0 {
                for fd in 0..3 {
                    libc::dup2(null, fd);
                }
                if null > 2 {
                    libc::close(null);
                }
            }
        }
        let _ = self.ready.write_all(&[0]);
    }
}
