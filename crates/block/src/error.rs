//! The block layer's error: QEMU's `Error` (a message, optionally a hint
//! printed on the next line, as `error_append_hint()` does).

/// A failure with QEMU's message text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg}")]
pub struct BlockError {
    pub msg: String,
    /// Extra line(s) QEMU prints after the message (e.g. the lock hint), with
    /// the trailing newline QEMU's hint carries.
    pub hint: Option<String>,
}

impl BlockError {
    pub fn new(msg: impl Into<String>) -> Self {
        BlockError {
            msg: msg.into(),
            hint: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// `error_setg_errno()`: "MSG: strerror(errno)".
    pub fn errno(msg: impl Into<String>, errno: i32) -> Self {
        BlockError::new(format!("{}: {}", msg.into(), strerror(errno)))
    }

    /// The message followed by the hint, as QEMU's `error_report_err()` shows it.
    pub fn full(&self) -> String {
        match &self.hint {
            Some(h) => format!("{}\n{}", self.msg, h.trim_end_matches('\n')),
            None => self.msg.clone(),
        }
    }
}

/// glibc's `strerror()` text, without Rust's " (os error N)" suffix.
pub fn strerror(errno: i32) -> String {
    let s = std::io::Error::from_raw_os_error(errno).to_string();
    match s.rfind(" (os error ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// The errno of an `std::io::Error` (EIO when it has none).
pub(crate) fn errno_of(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}
