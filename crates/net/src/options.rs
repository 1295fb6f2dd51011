//! `-netdev tap,...` / `netdev_add` options, typed: QAPI's
//! `NetdevTapOptions` (qapi/net.json) checked as `net_init_tap` (net/tap.c)
//! checks them, so that an accepted [`TapOptions`] names exactly one way to
//! get the TAP: adopt `fd=`, adopt `fds=`, or open `/dev/net/tun`.

use serde_json::{Map, Value};

use crate::scalar::{bool_member, size_member, str_member, u32_member};

/// QEMU's `DEFAULT_NETWORK_SCRIPT` (include/net/net.h, sysconfdir /etc).
pub const DEFAULT_NETWORK_SCRIPT: &str = "/etc/qemu-ifup";
/// QEMU's `DEFAULT_NETWORK_DOWN_SCRIPT`.
pub const DEFAULT_NETWORK_DOWN_SCRIPT: &str = "/etc/qemu-ifdown";
/// `get_fds` reads at most this many `fds=` entries (net/tap.c).
pub const MAX_TAP_QUEUES: usize = 1024;

/// The refusal for every way of asking for vhost-net.
pub const VHOST_UNSUPPORTED: &str =
    "vhost-net is not supported by ferrovm (use vhost=off; vhostforce=, vhostfd= and vhostfds= need vhost-net too)";
/// The refusal for the bridge helper.
pub const HELPER_UNSUPPORTED: &str =
    "helper= is not supported by ferrovm: create the TAP yourself and pass ifname= or fd=";

/// A checked `-netdev tap`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapOptions {
    /// The netdev id (QEMU names it in some errors: "%s: Can't use file descriptor %d").
    pub id: String,
    pub source: TapSource,
    /// `sndbuf=`: None means QEMU's default (INT_MAX, no limit); 0 too.
    pub sndbuf: Option<u64>,
    /// `poll-us=`: vhost busy-polling; accepted and unused, as QEMU without vhost.
    pub poll_us: Option<u32>,
    /// `br=`: only the bridge helper reads it, so QEMU accepts and ignores it here.
    pub br: Option<String>,
}

/// Where the TAP comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TapSource {
    /// `fd=`: a descriptor number, or the name of one passed with `getfd`.
    Fd(String),
    /// `fds=`: one descriptor (number or name) per queue, `:`-separated.
    Fds(Vec<String>),
    /// Open `/dev/net/tun` ourselves.
    Open(TapOpen),
}

/// What `net_tap_init` needs to open a TAP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapOpen {
    /// `ifname=`; None lets the kernel pick `tap%d`.
    pub ifname: Option<String>,
    /// `script=` as given; see [`TapOpen::script`].
    pub script: Option<String>,
    /// `downscript=` as given; see [`TapOpen::downscript`].
    pub downscript: Option<String>,
    /// `vnet_hdr=`: None is "use it if the kernel has it", Some(true) requires it.
    pub vnet_hdr: Option<bool>,
    /// `queues=` (default 1); above 1 the TAP is opened IFF_MULTI_QUEUE.
    pub queues: u32,
}

impl TapOpen {
    /// The setup script to run, if any: the default when none was given,
    /// nothing for "no" or "" (`net_tap_init`).
    pub fn script(&self) -> Option<&str> {
        effective(self.script.as_deref(), DEFAULT_NETWORK_SCRIPT)
    }

    /// The script to run when the TAP closes, with the same rules
    /// (`net_init_tap_one`, `tap_exit_notify`).
    pub fn downscript(&self) -> Option<&str> {
        effective(self.downscript.as_deref(), DEFAULT_NETWORK_DOWN_SCRIPT)
    }
}

fn effective<'a>(given: Option<&'a str>, default: &'a str) -> Option<&'a str> {
    match given {
        None => Some(default),
        Some("no") | Some("") => None,
        Some(s) => Some(s),
    }
}

/// The members as QAPI declares them, in declaration order (the visitor
/// reports the first bad one in this order).
#[derive(Default)]
struct Raw {
    ifname: Option<String>,
    fd: Option<String>,
    fds: Option<String>,
    script: Option<String>,
    downscript: Option<String>,
    br: Option<String>,
    helper: Option<String>,
    sndbuf: Option<u64>,
    vnet_hdr: Option<bool>,
    vhost: Option<bool>,
    vhostfd: Option<String>,
    vhostfds: Option<String>,
    vhostforce: Option<bool>,
    queues: Option<u32>,
    poll_us: Option<u32>,
}

impl Raw {
    fn read(m: &Map<String, Value>) -> Result<Raw, String> {
        let s = |k: &str| m.get(k).map(|v| str_member(k, v)).transpose();
        let b = |k: &str| m.get(k).map(|v| bool_member(k, v)).transpose();
        let u = |k: &str| m.get(k).map(|v| u32_member(k, v)).transpose();
        Ok(Raw {
            ifname: s("ifname")?,
            fd: s("fd")?,
            fds: s("fds")?,
            script: s("script")?,
            downscript: s("downscript")?,
            br: s("br")?,
            helper: s("helper")?,
            sndbuf: m
                .get("sndbuf")
                .map(|v| size_member("sndbuf", v))
                .transpose()?,
            vnet_hdr: b("vnet_hdr")?,
            vhost: b("vhost")?,
            vhostfd: s("vhostfd")?,
            vhostfds: s("vhostfds")?,
            vhostforce: b("vhostforce")?,
            queues: u("queues")?,
            poll_us: u("poll-us")?,
        })
    }
}

const KNOWN: &[&str] = &[
    "id",
    "type",
    "ifname",
    "fd",
    "fds",
    "script",
    "downscript",
    "br",
    "helper",
    "sndbuf",
    "vnet_hdr",
    "vhost",
    "vhostfd",
    "vhostfds",
    "vhostforce",
    "queues",
    "poll-us",
];

/// `get_fds`: split at `:`, an empty piece between two colons kept, a
/// trailing colon ignored, at most [`MAX_TAP_QUEUES`] pieces.
fn get_fds(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = s;
    while out.len() < MAX_TAP_QUEUES && !rest.is_empty() {
        match rest.split_once(':') {
            Some((a, b)) => {
                out.push(a.to_string());
                rest = b;
            }
            None => {
                out.push(rest.to_string());
                break;
            }
        }
    }
    out
}

/// The vhost half of `net_init_tap_one`: vhost is on if asked for, or
/// implied by a vhost fd or vhostforce; without vhost a vhost fd is an error.
fn check_vhost(raw: &Raw, vhostfdname: bool) -> Result<(), String> {
    let wanted = raw
        .vhost
        .unwrap_or(vhostfdname || raw.vhostforce == Some(true));
    if wanted {
        Err(VHOST_UNSUPPORTED.to_string())
    } else if vhostfdname {
        Err("vhostfd(s)= is not valid without vhost".to_string())
    } else {
        Ok(())
    }
}

impl TapOptions {
    /// Reads QEMU's `NetdevTapOptions` members (plus `id`; `type` is
    /// ignored) from a parsed `-netdev` (JSON strings) or a QMP `netdev_add`
    /// (native values). Errors are QEMU's texts.
    pub fn from_json(m: &Map<String, Value>) -> Result<TapOptions, String> {
        let id = match m.get("id") {
            None => return Err("Parameter 'id' is missing".to_string()),
            Some(v) => str_member("id", v)?,
        };
        let raw = Raw::read(m)?;
        if let Some(k) = m.keys().find(|k| !KNOWN.contains(&k.as_str())) {
            return Err(format!("Invalid parameter '{k}'"));
        }
        let source = if let Some(fd) = &raw.fd {
            if raw.ifname.is_some()
                || raw.script.is_some()
                || raw.downscript.is_some()
                || raw.vnet_hdr.is_some()
                || raw.helper.is_some()
                || raw.queues.is_some()
                || raw.fds.is_some()
                || raw.vhostfds.is_some()
            {
                return Err(
                    "ifname=, script=, downscript=, vnet_hdr=, helper=, queues=, fds=, \
                            and vhostfds= are invalid with fd="
                        .to_string(),
                );
            }
            check_vhost(&raw, raw.vhostfd.is_some())?;
            TapSource::Fd(fd.clone())
        } else if let Some(fds) = &raw.fds {
            if raw.ifname.is_some()
                || raw.script.is_some()
                || raw.downscript.is_some()
                || raw.vnet_hdr.is_some()
                || raw.helper.is_some()
                || raw.queues.is_some()
                || raw.vhostfd.is_some()
            {
                return Err(
                    "ifname=, script=, downscript=, vnet_hdr=, helper=, queues=, \
                            and vhostfd= are invalid with fds="
                        .to_string(),
                );
            }
            let list = get_fds(fds);
            if let Some(v) = &raw.vhostfds {
                if get_fds(v).len() != list.len() {
                    return Err("The number of fds passed does not match the number of \
                                vhostfds passed"
                        .to_string());
                }
            }
            check_vhost(&raw, raw.vhostfds.is_some())?;
            // QEMU 7.2 asserts on an empty list; read it as one empty name.
            if list.is_empty() {
                return Err("Invalid file descriptor number ''".to_string());
            }
            TapSource::Fds(list)
        } else if raw.helper.is_some() {
            if raw.ifname.is_some()
                || raw.script.is_some()
                || raw.downscript.is_some()
                || raw.vnet_hdr.is_some()
                || raw.queues.is_some()
                || raw.vhostfds.is_some()
            {
                return Err("ifname=, script=, downscript=, vnet_hdr=, queues=, \
                            and vhostfds= are invalid with helper="
                    .to_string());
            }
            return Err(HELPER_UNSUPPORTED.to_string());
        } else {
            if raw.vhostfds.is_some() {
                return Err("vhostfds= is invalid if fds= wasn't specified".to_string());
            }
            check_vhost(&raw, raw.vhostfd.is_some())?;
            let queues = raw.queues.unwrap_or(1);
            // QEMU 7.2 asserts on queues=0 (no client is created).
            if queues == 0 {
                return Err("queues=0 is invalid: a TAP needs at least one queue".to_string());
            }
            TapSource::Open(TapOpen {
                ifname: raw.ifname.clone(),
                script: raw.script.clone(),
                downscript: raw.downscript.clone(),
                vnet_hdr: raw.vnet_hdr,
                queues,
            })
        };
        Ok(TapOptions {
            id,
            source,
            sndbuf: raw.sndbuf,
            poll_us: raw.poll_us,
            br: raw.br,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fds_split_like_get_fds() {
        assert_eq!(get_fds("3:4"), vec!["3", "4"]);
        assert_eq!(get_fds("3::4"), vec!["3", "", "4"]);
        assert_eq!(get_fds("3:"), vec!["3"]);
        assert!(get_fds("").is_empty());
        assert_eq!(get_fds(&"1:".repeat(2000)).len(), MAX_TAP_QUEUES);
    }
}
