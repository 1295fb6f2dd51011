//! Getting the TAP queues a [`TapOptions`] names: `net_init_tap`,
//! `net_tap_init` and `tap_open` (net/tap.c, net/tap-linux.c).

use std::fs::OpenOptions;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use libc::c_int;

use crate::error::{OsError, TapError};
use crate::options::{TapOpen, TapOptions, TapSource};
use crate::script::launch_script;
use crate::tap::{fd_in_use, Tap};
use crate::tap_sys as sys;

/// Looks up a descriptor passed by name (QMP `getfd`), handing it over.
/// Its error text is reported as is (QEMU: "File descriptor named '%s' has
/// not been found").
pub type NamedFds<'a> = &'a mut dyn FnMut(&str) -> Result<OwnedFd, String>;

/// Opens or adopts the TAP `opts` names: one [`Tap`] per queue, in queue
/// order. Descriptor names that are not numbers are invalid, as on QEMU's
/// command line (no monitor to look them up in).
pub fn open_tap(opts: &TapOptions) -> Result<Vec<Tap>, TapError> {
    open_tap_with(opts, None)
}

/// [`open_tap`] with a monitor's named descriptors (`monitor_fd_param`:
/// a name not starting with a digit is looked up there).
pub fn open_tap_with(opts: &TapOptions, named: Option<NamedFds<'_>>) -> Result<Vec<Tap>, TapError> {
    let mut named = named;
    match &opts.source {
        TapSource::Fd(name) => {
            let fd = Given::resolve(name, &mut named)?;
            let (fd, ifname, vnet_hdr) = adopt(opts, fd, None)?;
            let info = format!("fd={}", fd.as_raw_fd());
            Ok(vec![Tap::new(
                fd,
                ifname,
                vnet_hdr,
                opts.sndbuf,
                info,
                None,
            )?])
        }
        TapSource::Fds(names) => {
            let mut taps = Vec::new();
            let mut first_vnet_hdr = None;
            for name in names {
                let fd = Given::resolve(name, &mut named)?;
                let (fd, ifname, vnet_hdr) = adopt(opts, fd, first_vnet_hdr)?;
                first_vnet_hdr = Some(vnet_hdr);
                let info = format!("fd={}", fd.as_raw_fd());
                taps.push(Tap::new(fd, ifname, vnet_hdr, opts.sndbuf, info, None)?);
            }
            Ok(taps)
        }
        TapSource::Open(o) => open_queues(opts, o),
    }
}

/// A descriptor from `fd=`/`fds=`: handed over by name, or a number we
/// take only once it proved to be a TAP.
enum Given {
    Owned(OwnedFd),
    Number(RawFd),
}

impl Given {
    fn resolve(name: &str, named: &mut Option<NamedFds<'_>>) -> Result<Given, TapError> {
        if !name.starts_with(|c: char| c.is_ascii_digit()) {
            if let Some(lookup) = named {
                return lookup(name).map(Given::Owned).map_err(TapError::NamedFd);
            }
        }
        parse_fd(name)
            .map(Given::Number)
            .ok_or_else(|| TapError::BadFdNumber(name.to_string()))
    }

    fn raw(&self) -> RawFd {
        match self {
            Given::Owned(fd) => fd.as_raw_fd(),
            Given::Number(fd) => *fd,
        }
    }
}

/// `qemu_parse_fd`: `strtol` base 10 over the whole string, 0..=INT_MAX.
fn parse_fd(s: &str) -> Option<RawFd> {
    let t = s.trim_start();
    let digits = t.strip_prefix('+').unwrap_or(t);
    let (neg, digits) = match digits.strip_prefix('-') {
        Some(d) if !t.starts_with('+') => (true, d),
        _ => (false, digits),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let v: i64 = digits.parse().ok()?;
    let v = if neg { -v } else { v };
    RawFd::try_from(v).ok().filter(|&fd| fd >= 0)
}

/// The checks `net_init_tap` makes on a given descriptor: usable
/// (non-blocking), a TAP (TUNGETIFF), and, after the first of `fds=`, with
/// the same IFF_VNET_HDR. A number is owned only once it passed; a failed
/// one stays open (unlike QEMU, which closes it: it may be some other
/// part of this process's descriptor).
fn adopt(
    opts: &TapOptions,
    fd: Given,
    first_vnet_hdr: Option<bool>,
) -> Result<(OwnedFd, String, bool), TapError> {
    let raw = fd.raw();
    let cant_use = |err| TapError::CantUseFd {
        id: opts.id.clone(),
        fd: raw,
        err,
    };
    if matches!(fd, Given::Number(_)) && fd_in_use(raw) {
        return Err(cant_use(OsError(libc::EBUSY)));
    }
    sys::set_nonblocking(raw).map_err(cant_use)?;
    let probed = sys::get_iff(raw);
    let (ifname, flags) = match (first_vnet_hdr, probed) {
        (None, Err(err)) => return Err(TapError::NotTap { fd: raw, err }),
        (Some(_), Err(_)) => return Err(TapError::VnetHdrInconsistent),
        (_, Ok(p)) => p,
    };
    // QEMU takes a TUN (IP-level) or a PI-framed descriptor too, and the
    // guest then sees garbage; refuse them.
    if flags & sys::TUN_TYPE_MASK != sys::IFF_TAP || flags & sys::IFF_NO_PI == 0 {
        return Err(TapError::NotEthernetTap { fd: raw, flags });
    }
    let vnet_hdr = flags & sys::IFF_VNET_HDR != 0;
    if first_vnet_hdr.is_some_and(|v| v != vnet_hdr) {
        return Err(TapError::VnetHdrInconsistent);
    }
    let owned = match fd {
        Given::Owned(fd) => fd,
        // SAFETY: the user handed this descriptor over with fd=/fds= (as
        // libvirt does), TUNGETIFF proved it an open TAP, and no live Tap
        // owns it; from here the Tap is its one owner.
        Given::Number(n) => unsafe { OwnedFd::from_raw_fd(n) },
    };
    Ok((owned, ifname, vnet_hdr))
}

/// `net_init_tap`'s last branch: open `queues` descriptors on one
/// interface, run the script for the first, give it the downscript.
fn open_queues(opts: &TapOptions, o: &TapOpen) -> Result<Vec<Tap>, TapError> {
    let mut ifname = o.ifname.clone().unwrap_or_default();
    let mut taps = Vec::new();
    for i in 0..o.queues {
        let first = i == 0;
        let (fd, vnet_hdr) = tap_open(&mut ifname, o.vnet_hdr, o.queues > 1)?;
        let script = if first { o.script() } else { None };
        if let Some(s) = script {
            launch_script(s, &ifname, fd.as_raw_fd())?;
        }
        let downscript = if first { o.downscript() } else { None };
        let info = format!(
            "ifname={ifname},script={},downscript={}",
            if first {
                o.script.as_deref().unwrap_or(crate::DEFAULT_NETWORK_SCRIPT)
            } else {
                "no"
            },
            if first {
                o.downscript
                    .as_deref()
                    .unwrap_or(crate::DEFAULT_NETWORK_DOWN_SCRIPT)
            } else {
                "no"
            },
        );
        let tap = Tap::new(
            fd,
            ifname.clone(),
            vnet_hdr,
            opts.sndbuf,
            info,
            downscript.map(String::from),
        )?;
        taps.push(tap);
    }
    Ok(taps)
}

/// `tap_open`: one `/dev/net/tun` descriptor attached to `ifname` (empty:
/// the kernel picks `tap%d`; on return `ifname` is the actual name).
/// Returns whether it is IFF_VNET_HDR.
fn tap_open(
    ifname: &mut String,
    vnet_hdr: Option<bool>,
    multi_queue: bool,
) -> Result<(OwnedFd, bool), TapError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/net/tun")
        .map_err(|e| TapError::OpenTun(OsError::from(&e)))?;
    let fd = OwnedFd::from(file);
    let features = sys::features(fd.as_fd()).unwrap_or_else(|e| {
        eprintln!("ferrovm: warning: TUNGETFEATURES failed: {e}");
        0
    });
    let mut flags: c_int = sys::IFF_TAP | sys::IFF_NO_PI;
    if features & sys::IFF_ONE_QUEUE != 0 {
        flags |= sys::IFF_ONE_QUEUE;
    }
    let mut have_vnet_hdr = false;
    if vnet_hdr.unwrap_or(true) {
        have_vnet_hdr = features & sys::IFF_VNET_HDR != 0;
        if have_vnet_hdr {
            flags |= sys::IFF_VNET_HDR;
        } else if vnet_hdr == Some(true) {
            return Err(TapError::NoVnetHdr);
        }
    }
    if multi_queue {
        if features & sys::IFF_MULTI_QUEUE == 0 {
            return Err(TapError::NoMultiQueue);
        }
        flags |= sys::IFF_MULTI_QUEUE;
    }
    let asked = if ifname.is_empty() {
        "tap%d"
    } else {
        ifname.as_str()
    };
    match sys::set_iff(fd.as_fd(), asked, flags) {
        Ok(actual) => {
            *ifname = actual;
            Ok((fd, have_vnet_hdr))
        }
        Err(err) if ifname.is_empty() => Err(TapError::ConfigureAnyName(err)),
        Err(err) => Err(TapError::Configure {
            ifname: sys::ifreq_name(&sys::ifreq_named(asked)),
            err,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_fd;

    #[test]
    fn fd_numbers_read_as_qemu_parse_fd() {
        assert_eq!(parse_fd("3"), Some(3));
        assert_eq!(parse_fd(" 7"), Some(7));
        assert_eq!(parse_fd("-0"), Some(0));
        assert_eq!(parse_fd("-1"), None);
        assert_eq!(parse_fd("3x"), None);
        assert_eq!(parse_fd(""), None);
        assert_eq!(parse_fd("2147483648"), None);
    }
}
