//! What the device reports when a request fails: the data of QEMU's
//! BLOCK_IO_ERROR event (block/block-backend.c `send_qmp_error_event`),
//! emitted for every failed request whatever the policy decided.

use std::sync::Arc;

pub use block::ErrorAction;

/// The event's `operation`: reads for IN, writes for everything else
/// (OUT, FLUSH, DISCARD, WRITE_ZEROES), as hw/block/virtio-blk.c classifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoOperation {
    Read,
    Write,
}

impl IoOperation {
    /// QAPI IoOperationType: "read" / "write".
    pub fn as_str(self) -> &'static str {
        match self {
            IoOperation::Read => "read",
            IoOperation::Write => "write",
        }
    }
}

/// One failed request, reported before the policy acts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockIoError {
    pub operation: IoOperation,
    /// What `BlockBackend::error_action` decided (the event's `action`).
    pub action: ErrorAction,
    /// `nospace`: the error was ENOSPC.
    pub nospace: bool,
    /// `reason`: strerror() of the error, as QEMU prints it.
    pub reason: String,
    /// The positive errno behind `reason`.
    pub errno: i32,
}

impl BlockIoError {
    pub(crate) fn new(is_read: bool, action: ErrorAction, errno: i32) -> Self {
        Self {
            operation: if is_read {
                IoOperation::Read
            } else {
                IoOperation::Write
            },
            action,
            nospace: errno == libc::ENOSPC,
            reason: strerror(errno),
            errno,
        }
    }
}

/// How the device hands a [`BlockIoError`] to the VMM, which emits the event
/// and, for [`ErrorAction::Stop`], stops the VM (`io-error` run state). Called
/// with the device lock held: it must not call back into the device.
pub type BlockIoErrorFn = Arc<dyn Fn(BlockIoError) + Send + Sync>;

/// The C library's text for `errno` (what QEMU's `strerror()` prints).
pub fn strerror(errno: i32) -> String {
    let mut buf = [0 as libc::c_char; 256];
    // SAFETY: the buffer is valid for its length; on success the XSI
    // strerror_r leaves a NUL-terminated string in it.
    if unsafe { libc::strerror_r(errno, buf.as_mut_ptr(), buf.len()) } != 0 {
        return format!("Unknown error {errno}");
    }
    // SAFETY: NUL-terminated by strerror_r (the buffer was zeroed too).
    unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}
