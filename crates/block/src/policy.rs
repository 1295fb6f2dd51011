//! `-drive` policies: error actions (werror/rerror), the I/O status, and
//! `cache=` modes (QEMU 7.2 blockdev.c).

use crate::error::BlockError;
use crate::io::ErrorAction;

/// `BlockdevOnError` (without `auto`, which only block jobs use).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    Report,
    Ignore,
    /// Stop on ENOSPC, report anything else (`werror` default).
    Enospc,
    Stop,
}

impl OnError {
    /// `parse_block_error_action`: rerror refuses `enospc`.
    pub fn parse(s: &str, is_read: bool) -> Result<Self, BlockError> {
        let kind = if is_read { "read" } else { "write" };
        match s {
            "report" => Ok(OnError::Report),
            "ignore" => Ok(OnError::Ignore),
            "stop" => Ok(OnError::Stop),
            "enospc" if !is_read => Ok(OnError::Enospc),
            _ => Err(BlockError::new(format!(
                "'{s}' invalid {kind} error action"
            ))),
        }
    }

    /// `blk_get_error_action`.
    pub fn action(self, errno: i32) -> ErrorAction {
        match self {
            OnError::Report => ErrorAction::Report,
            OnError::Ignore => ErrorAction::Ignore,
            OnError::Stop => ErrorAction::Stop,
            OnError::Enospc if errno == libc::ENOSPC => ErrorAction::Stop,
            OnError::Enospc => ErrorAction::Report,
        }
    }
}

/// `BlockDeviceIoStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoStatus {
    Ok,
    Failed,
    Nospace,
}

impl IoStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            IoStatus::Ok => "ok",
            IoStatus::Failed => "failed",
            IoStatus::Nospace => "nospace",
        }
    }
}

/// What a `cache=` mode means (`bdrv_parse_cache_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheMode {
    /// The guest-visible write cache (`cache.writeback`).
    pub writeback: bool,
    /// `cache.direct`: O_DIRECT.
    pub direct: bool,
    /// `cache.no-flush`.
    pub no_flush: bool,
}

impl CacheMode {
    pub fn parse(s: &str) -> Result<Self, BlockError> {
        let (writeback, direct, no_flush) = match s {
            "none" | "off" => (true, true, false),
            "directsync" => (false, true, false),
            "writeback" => (true, false, false),
            "unsafe" => (true, false, true),
            "writethrough" => (false, false, false),
            _ => return Err(BlockError::new("invalid cache option")),
        };
        Ok(CacheMode {
            writeback,
            direct,
            no_flush,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enospc_stops_only_on_enospc() {
        let w = OnError::parse("enospc", false).unwrap();
        assert_eq!(w.action(libc::ENOSPC), ErrorAction::Stop);
        assert_eq!(w.action(libc::EIO), ErrorAction::Report);
    }

    #[test]
    fn rerror_refuses_enospc_with_qemus_text() {
        // qemu-system-x86_64 -drive ...,rerror=enospc
        assert_eq!(
            OnError::parse("enospc", true).unwrap_err().msg,
            "'enospc' invalid read error action"
        );
        assert_eq!(
            OnError::parse("foo", false).unwrap_err().msg,
            "'foo' invalid write error action"
        );
    }

    #[test]
    fn cache_modes_map_as_qemu() {
        let m = |s| CacheMode::parse(s).unwrap();
        assert_eq!(
            m("none"),
            CacheMode {
                writeback: true,
                direct: true,
                no_flush: false
            }
        );
        assert_eq!(
            m("directsync"),
            CacheMode {
                writeback: false,
                direct: true,
                no_flush: false
            }
        );
        assert_eq!(
            m("writethrough"),
            CacheMode {
                writeback: false,
                direct: false,
                no_flush: false
            }
        );
        assert_eq!(
            m("unsafe"),
            CacheMode {
                writeback: true,
                direct: false,
                no_flush: true
            }
        );
    }
}
