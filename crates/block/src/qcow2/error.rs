//! The qcow2 driver's typed error. Messages follow QEMU 7.2's block/qcow2*.c
//! wording where QEMU has one, so a management layer sees the same text.

use crate::error::{strerror, BlockError};

/// A qcow2 failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Qcow2Error {
    /// An I/O error on the image (or backing) file: "what: strerror(errno)".
    #[error("{what}: {}", strerror(*errno))]
    Io { what: String, errno: i32 },
    /// The header or a table has a value QEMU refuses at open
    /// (e.g. "Image is not in qcow2 format").
    #[error("{0}")]
    Invalid(String),
    /// A feature the image needs that this driver does not implement
    /// ("Unsupported qcow2 feature(s): ...").
    #[error("{0}")]
    Unsupported(String),
    /// Metadata found inconsistent while doing I/O (QEMU's
    /// `qcow2_signal_corruption` messages, without marking the image).
    #[error("qcow2: Image is corrupt: {0}")]
    Corrupt(String),
    /// A write-type request on an image opened read-only.
    #[error("Image is read-only")]
    ReadOnly,
    /// A request beyond the virtual disk.
    #[error("Request out of range: offset {offset} length {len} (image size {size})")]
    OutOfRange { offset: u64, len: u64, size: u64 },
}

pub type Result<T> = std::result::Result<T, Qcow2Error>;

impl Qcow2Error {
    pub(crate) fn io(what: impl Into<String>, e: &std::io::Error) -> Self {
        Qcow2Error::Io {
            what: what.into(),
            errno: e.raw_os_error().unwrap_or(libc::EIO),
        }
    }

    /// The errno a device model should report (EIO for metadata trouble).
    pub fn errno(&self) -> i32 {
        match self {
            Qcow2Error::Io { errno, .. } => *errno,
            Qcow2Error::Invalid(_) => libc::EINVAL,
            Qcow2Error::Unsupported(_) => libc::ENOTSUP,
            Qcow2Error::Corrupt(_) => libc::EIO,
            Qcow2Error::ReadOnly => libc::EROFS,
            Qcow2Error::OutOfRange { .. } => libc::EINVAL,
        }
    }
}

impl From<Qcow2Error> for BlockError {
    fn from(e: Qcow2Error) -> Self {
        BlockError::new(e.to_string())
    }
}
