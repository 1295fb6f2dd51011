//! `launch_script` (net/tap.c): run `script ifname` and wait for it. The
//! child keeps the TAP descriptor (QEMU passes it on, not close-on-exec)
//! and nothing else above stderr; any non-zero wait status is a failure,
//! reported raw as QEMU does ("failed with status 256" for exit 1 or an
//! exec failure).

use std::ffi::CString;
use std::os::fd::RawFd;
use std::ptr;

use crate::error::{OsError, TapError};

/// A C string as C code would see `s`: cut at the first NUL.
fn c_string(s: &str) -> CString {
    let bytes = s.as_bytes();
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    // The slice holds no NUL, so this cannot fail; fall back to "" anyway.
    CString::new(&bytes[..end]).unwrap_or_default()
}

/// In the forked child: close every descriptor from 3 up but `keep`.
/// Only async-signal-safe calls (close_range(2), close(2)).
fn close_all_but(keep: RawFd, open_max: libc::c_long) {
    let close_range = |first: libc::c_uint, last: libc::c_uint| -> bool {
        // SAFETY: close_range only closes descriptors in the child, which
        // owns copies of them and is about to exec.
        unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) == 0 }
    };
    let ok = if keep > 3 {
        close_range(3, keep as libc::c_uint - 1) && close_range(keep as libc::c_uint + 1, !0)
    } else if keep == 3 {
        close_range(4, !0)
    } else {
        close_range(3, !0)
    };
    if !ok {
        // Kernels before 5.9: QEMU's own loop up to sysconf(_SC_OPEN_MAX).
        let max = RawFd::try_from(open_max).unwrap_or(RawFd::MAX);
        for i in 3..max {
            if i != keep {
                // SAFETY: as above.
                unsafe { libc::close(i) };
            }
        }
    }
}

/// Runs `script ifname` with `fd` inherited and waits for it.
pub(crate) fn launch_script(script: &str, ifname: &str, fd: RawFd) -> Result<(), TapError> {
    let path = c_string(script);
    let arg = c_string(ifname);
    let argv = [path.as_ptr(), arg.as_ptr(), ptr::null()];
    // SAFETY: sysconf has no memory effects.
    let open_max = unsafe { libc::sysconf(libc::_SC_OPEN_MAX) };
    // SAFETY: fork in a threaded process: the child only calls
    // async-signal-safe functions (close_range/close, fcntl, execv, _exit)
    // on memory prepared before the fork.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(TapError::ScriptLaunch {
            script: script.to_string(),
            err: OsError::last(),
        });
    }
    if pid == 0 {
        close_all_but(fd, open_max);
        // SAFETY: see the fork above. Clearing FD_CLOEXEC hands the TAP
        // descriptor to the script as QEMU's (never close-on-exec) one is;
        // argv is NUL-terminated and its strings outlive the call.
        unsafe {
            libc::fcntl(fd, libc::F_SETFD, 0);
            libc::execv(path.as_ptr(), argv.as_ptr());
            libc::_exit(1);
        }
    }
    let mut status: libc::c_int = 0;
    loop {
        // SAFETY: waitpid writes the status into a live local.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            break;
        }
        let err = OsError::last();
        if r < 0 && err.0 != libc::EINTR {
            // Someone else reaped the child (SIGCHLD ignored?): its status is lost.
            return Err(TapError::ScriptLaunch {
                script: script.to_string(),
                err,
            });
        }
    }
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        Ok(())
    } else {
        Err(TapError::ScriptFailed {
            script: script.to_string(),
            status,
        })
    }
}
