//! Image locking, as QEMU 7.2 block/file-posix.c does it: one OFD byte-range
//! lock per permission at `100 + bit` while the permission is held and at
//! `200 + bit` while it is *not shared*; all shared (read) locks, so two
//! holders of the same byte coexist and a conflict is found by testing the
//! opposite byte with F_OFD_GETLK for an exclusive lock.
//!
//! OFD locks belong to the open file description: they survive dup(), are
//! not released by closing another fd of the same file (unlike POSIX
//! locks), and never conflict with themselves.

use std::os::fd::RawFd;

use crate::error::BlockError;
use crate::perm;

/// `RAW_LOCK_PERM_BASE`: libvirt takes byte 0; QEMU starts higher.
pub const PERM_BASE: i64 = 100;
/// `RAW_LOCK_SHARED_BASE`.
pub const SHARED_BASE: i64 = 200;

fn fcntl_lock(
    fd: RawFd,
    cmd: libc::c_int,
    start: i64,
    ty: libc::c_int,
) -> Result<libc::flock, i32> {
    // SAFETY: an all-zero flock is a valid value; fields are set below.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = start;
    fl.l_len = 1;
    fl.l_type = ty as libc::c_short;
    loop {
        // SAFETY: fcntl with a valid flock pointer; the kernel reads/writes it.
        let r = unsafe { libc::fcntl(fd, cmd, &mut fl as *mut libc::flock) };
        if r == 0 {
            return Ok(fl);
        }
        let e = std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO);
        if e != libc::EINTR {
            return Err(e);
        }
    }
}

/// `qemu_lock_fd(fd, off, 1, false)`: a shared lock on one byte.
fn lock_byte(fd: RawFd, off: i64) -> Result<(), i32> {
    fcntl_lock(fd, libc::F_OFD_SETLK, off, libc::F_RDLCK).map(|_| ())
}

fn unlock_byte(fd: RawFd, off: i64) -> Result<(), i32> {
    fcntl_lock(fd, libc::F_OFD_SETLK, off, libc::F_UNLCK).map(|_| ())
}

/// `qemu_lock_fd_test(fd, off, 1, true)`: does anyone else hold the byte?
fn byte_taken(fd: RawFd, off: i64) -> Result<bool, i32> {
    let fl = fcntl_lock(fd, libc::F_OFD_GETLK, off, libc::F_WRLCK)?;
    Ok(fl.l_type != libc::F_UNLCK as libc::c_short)
}

/// `raw_lock_error_setg_errno`: EAGAIN/EACCES (a conflict) carry no errno text.
fn lock_error(errno: i32, msg: String) -> BlockError {
    if errno == libc::EAGAIN || errno == libc::EACCES {
        BlockError::new(msg)
    } else {
        BlockError::errno(msg, errno)
    }
}

/// The bytes this fd currently holds (`locked_perm`, `locked_shared_perm`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LockState {
    pub locked_perm: u64,
    /// Permissions whose "not shared" byte is locked.
    pub locked_unshared: u64,
}

/// `raw_apply_lock_bytes`: lock the bytes for `perm` and `unshared`; with
/// `unlock`, also release the bytes no longer wanted.
pub fn apply(
    fd: RawFd,
    st: &mut LockState,
    perm_bits: u64,
    unshared: u64,
    unlock: bool,
) -> Result<(), BlockError> {
    for (i, bit) in perm::bits() {
        let off = PERM_BASE + i as i64;
        if perm_bits & bit != 0 && st.locked_perm & bit == 0 {
            lock_byte(fd, off).map_err(|e| lock_error(e, format!("Failed to lock byte {off}")))?;
            st.locked_perm |= bit;
        } else if unlock && st.locked_perm & bit != 0 && perm_bits & bit == 0 {
            unlock_byte(fd, off)
                .map_err(|e| BlockError::errno(format!("Failed to unlock byte {off}"), e))?;
            st.locked_perm &= !bit;
        }
    }
    for (i, bit) in perm::bits() {
        let off = SHARED_BASE + i as i64;
        if unshared & bit != 0 && st.locked_unshared & bit == 0 {
            lock_byte(fd, off).map_err(|e| lock_error(e, format!("Failed to lock byte {off}")))?;
            st.locked_unshared |= bit;
        } else if unlock && st.locked_unshared & bit != 0 && unshared & bit == 0 {
            unlock_byte(fd, off)
                .map_err(|e| BlockError::errno(format!("Failed to unlock byte {off}"), e))?;
            st.locked_unshared &= !bit;
        }
    }
    Ok(())
}

/// `raw_check_lock_bytes`: may we take `perm` while sharing `shared`?
pub fn check(fd: RawFd, perm_bits: u64, shared: u64) -> Result<(), BlockError> {
    for (i, bit) in perm::bits() {
        if perm_bits & bit != 0 {
            let taken = byte_taken(fd, SHARED_BASE + i as i64);
            match taken {
                Ok(false) => {}
                Ok(true) => {
                    return Err(lock_error(
                        libc::EAGAIN,
                        format!("Failed to get \"{}\" lock", perm::names(bit)),
                    ))
                }
                Err(e) => {
                    return Err(lock_error(
                        e,
                        format!("Failed to get \"{}\" lock", perm::names(bit)),
                    ))
                }
            }
        }
    }
    for (i, bit) in perm::bits() {
        if shared & bit == 0 {
            let msg = || format!("Failed to get shared \"{}\" lock", perm::names(bit));
            match byte_taken(fd, PERM_BASE + i as i64) {
                Ok(false) => {}
                Ok(true) => return Err(lock_error(libc::EAGAIN, msg())),
                Err(e) => return Err(lock_error(e, msg())),
            }
        }
    }
    Ok(())
}

/// `raw_handle_perm_lock` PREPARE then COMMIT (or ABORT): move this fd's
/// locks from (`old_perm`, `old_shared`) to (`perm`, `shared`). On a
/// conflict the old locks are restored and the error carries QEMU's hint.
pub fn change(
    fd: RawFd,
    st: &mut LockState,
    old: (u64, u64),
    new: (u64, u64),
    filename: &str,
) -> Result<(), BlockError> {
    let (old_perm, old_shared) = old;
    let (perm_bits, shared) = new;
    let only_dropping = (old_perm | perm_bits) == old_perm && (old_shared & shared) == old_shared;
    if !only_dropping {
        let prepared = apply(fd, st, old_perm | perm_bits, !old_shared | !shared, false)
            .and_then(|_| check(fd, perm_bits, shared));
        if let Err(e) = prepared {
            let _ = apply(fd, st, old_perm, !old_shared & perm::ALL, true);
            return Err(e.with_hint(format!(
                "Is another process using the image [{filename}]?\n"
            )));
        }
    }
    // Unlocking cannot meaningfully fail; QEMU only warns.
    let _ = apply(fd, st, perm_bits, !shared & perm::ALL, true);
    Ok(())
}
