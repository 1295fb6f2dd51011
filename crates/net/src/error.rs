//! Why a TAP could not be set up, in QEMU's words (net/tap.c,
//! net/tap-linux.c, monitor/misc.c `monitor_fd_param`).

use std::fmt;
use std::io;

/// An errno shown as QEMU's `error_setg_errno` shows it: `strerror` alone,
/// without Rust's " (os error N)".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OsError(pub i32);

impl OsError {
    /// The errno left by the last failed call.
    pub fn last() -> OsError {
        OsError(io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }
}

impl From<&io::Error> for OsError {
    fn from(e: &io::Error) -> OsError {
        OsError(e.raw_os_error().unwrap_or(0))
    }
}

impl From<OsError> for io::Error {
    fn from(e: OsError) -> io::Error {
        io::Error::from_raw_os_error(e.0)
    }
}

impl fmt::Display for OsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = io::Error::from_raw_os_error(self.0).to_string();
        let suffix = format!(" (os error {})", self.0);
        f.write_str(s.strip_suffix(&suffix).unwrap_or(&s))
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TapError {
    #[error("could not open /dev/net/tun: {0}")]
    OpenTun(OsError),
    #[error("could not configure /dev/net/tun ({ifname}): {err}")]
    Configure { ifname: String, err: OsError },
    #[error("could not configure /dev/net/tun: {0}")]
    ConfigureAnyName(OsError),
    #[error("vnet_hdr=1 requested, but no kernel support for IFF_VNET_HDR available")]
    NoVnetHdr,
    #[error("multiqueue required, but no kernel support for IFF_MULTI_QUEUE available")]
    NoMultiQueue,
    #[error("could not launch network script {script}: {err}")]
    ScriptLaunch { script: String, err: OsError },
    /// `status` is the raw `waitpid` status, as QEMU prints it (exit 1 is 256).
    #[error("network script {script} failed with status {status}")]
    ScriptFailed { script: String, status: i32 },
    #[error("Invalid file descriptor number '{0}'")]
    BadFdNumber(String),
    /// A named descriptor could not be had; the resolver's own text.
    #[error("{0}")]
    NamedFd(String),
    #[error("{id}: Can't use file descriptor {fd}: {err}")]
    CantUseFd { id: String, fd: i32, err: OsError },
    #[error("Unable to query TUNGETIFF on FD {fd}: {err}")]
    NotTap { fd: i32, err: OsError },
    /// Not in QEMU, which accepts these and feeds the guest non-Ethernet frames.
    #[error("FD {fd} is not a TAP opened with IFF_TAP|IFF_NO_PI (TUNGETIFF flags {flags:#x})")]
    NotEthernetTap { fd: i32, flags: i32 },
    #[error("vnet_hdr not consistent across given tap fds")]
    VnetHdrInconsistent,
    #[error("TUNSETSNDBUF ioctl failed: {0}")]
    SndBuf(OsError),
    /// QEMU aborts here (`tap_fd_set_vnet_hdr_len`); we fail the netdev instead.
    #[error("TUNSETVNETHDRSZ ioctl() failed: {0}")]
    VnetHdrSize(OsError),
}
