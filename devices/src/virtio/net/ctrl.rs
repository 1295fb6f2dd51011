//! Control-queue commands (virtio 1.2 §5.1.6.5) parsed from the bytes a
//! driver put in a chain's device-readable part: `struct virtio_net_ctrl_hdr`
//! (class, command) followed by the command's data. Pure functions, so a
//! fuzz target can call them; the checks are QEMU 7.2's
//! (hw/net/virtio-net.c `virtio_net_handle_*`). A command QEMU answers with
//! VIRTIO_NET_ERR is a [`CtrlError`].

use super::options::MacAddr;
use super::{MAC_TABLE_ENTRIES, MAX_VLAN};

pub const CLASS_RX: u8 = 0;
pub const RX_PROMISC: u8 = 0;
pub const RX_ALLMULTI: u8 = 1;
pub const RX_ALLUNI: u8 = 2;
pub const RX_NOMULTI: u8 = 3;
pub const RX_NOUNI: u8 = 4;
pub const RX_NOBCAST: u8 = 5;

pub const CLASS_MAC: u8 = 1;
pub const MAC_TABLE_SET: u8 = 0;
pub const MAC_ADDR_SET: u8 = 1;

pub const CLASS_VLAN: u8 = 2;
pub const VLAN_ADD: u8 = 0;
pub const VLAN_DEL: u8 = 1;

pub const CLASS_ANNOUNCE: u8 = 3;
pub const ANNOUNCE_ACK: u8 = 0;

pub const CLASS_MQ: u8 = 4;
pub const MQ_VQ_PAIRS_SET: u8 = 0;
pub const MQ_RSS_CONFIG: u8 = 1;
pub const MQ_HASH_CONFIG: u8 = 2;
/// VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MIN / _MAX.
pub const MQ_VQ_PAIRS_MIN: u16 = 1;
pub const MQ_VQ_PAIRS_MAX: u16 = 0x8000;

pub const CLASS_GUEST_OFFLOADS: u8 = 5;
pub const GUEST_OFFLOADS_SET: u8 = 0;

/// `virtio_net_ctrl_ack`.
pub const OK: u8 = 0;
pub const ERR: u8 = 1;

/// `struct virtio_net_ctrl_hdr`.
pub const CTRL_HDR_LEN: usize = 2;

/// Which receive-mode switch RX commands flip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxMode {
    Promisc,
    AllMulti,
    AllUni,
    NoMulti,
    NoUni,
    NoBcast,
}

/// A MAC_TABLE_SET payload as QEMU keeps it: `macs[..first_multi]` are
/// unicast, the rest multicast; an overflowing list keeps none of its
/// entries and sets its flag.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MacTable {
    pub macs: Vec<MacAddr>,
    pub first_multi: usize,
    pub uni_overflow: bool,
    pub multi_overflow: bool,
}

/// A well-formed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CtrlCommand {
    RxMode {
        mode: RxMode,
        on: bool,
    },
    MacTableSet(MacTable),
    MacAddrSet(MacAddr),
    VlanAdd(u16),
    VlanDel(u16),
    AnnounceAck,
    /// VQ_PAIRS_SET's value, range-checked by the device (it knows the max).
    MqVqPairsSet(u16),
    /// RSS_CONFIG / HASH_CONFIG: RSS is not offered, the answer is ERR.
    MqRss,
    GuestOffloadsSet(u64),
}

/// A command QEMU answers with VIRTIO_NET_ERR.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CtrlError {
    #[error("virtio-net ctrl: command shorter than its header")]
    NoHeader,
    #[error("virtio-net ctrl: unknown class {0}")]
    UnknownClass(u8),
    #[error("virtio-net ctrl: unknown command {cmd} of class {class}")]
    UnknownCommand { class: u8, cmd: u8 },
    #[error("virtio-net ctrl: class {class} command {cmd} wants {want} bytes, has {got}")]
    Length {
        class: u8,
        cmd: u8,
        want: usize,
        got: usize,
    },
    #[error("virtio-net ctrl: MAC table entries do not match the data")]
    MacTableLength,
    #[error("virtio-net ctrl: VLAN id {0} out of range")]
    VlanRange(u16),
}

fn exact<const N: usize>(class: u8, cmd: u8, d: &[u8]) -> Result<[u8; N], CtrlError> {
    d.get(..N)
        .and_then(|s| s.try_into().ok())
        .ok_or(CtrlError::Length {
            class,
            cmd,
            want: N,
            got: d.len(),
        })
}

/// Parses one command from `out`, the chain's device-readable bytes.
pub fn parse(out: &[u8]) -> Result<CtrlCommand, CtrlError> {
    let [class, cmd] = *out
        .first_chunk::<CTRL_HDR_LEN>()
        .ok_or(CtrlError::NoHeader)?;
    let d = &out[CTRL_HDR_LEN..];
    let unknown = CtrlError::UnknownCommand { class, cmd };
    match class {
        CLASS_RX => {
            let mode = match cmd {
                RX_PROMISC => RxMode::Promisc,
                RX_ALLMULTI => RxMode::AllMulti,
                RX_ALLUNI => RxMode::AllUni,
                RX_NOMULTI => RxMode::NoMulti,
                RX_NOUNI => RxMode::NoUni,
                RX_NOBCAST => RxMode::NoBcast,
                _ => {
                    // QEMU reads the byte first: a short command is ERR too.
                    return Err(unknown);
                }
            };
            let [on] = exact::<1>(class, cmd, d)?;
            Ok(CtrlCommand::RxMode { mode, on: on != 0 })
        }
        CLASS_MAC => match cmd {
            MAC_ADDR_SET => {
                // QEMU wants exactly the address, nothing more.
                if d.len() != 6 {
                    return Err(CtrlError::Length {
                        class,
                        cmd,
                        want: 6,
                        got: d.len(),
                    });
                }
                let m = exact::<6>(class, cmd, d)?;
                Ok(CtrlCommand::MacAddrSet(MacAddr(m)))
            }
            MAC_TABLE_SET => parse_mac_table(d).map(CtrlCommand::MacTableSet),
            _ => Err(unknown),
        },
        CLASS_VLAN => {
            let vid = u16::from_le_bytes(exact::<2>(class, cmd, d)?);
            if usize::from(vid) >= MAX_VLAN {
                return Err(CtrlError::VlanRange(vid));
            }
            match cmd {
                VLAN_ADD => Ok(CtrlCommand::VlanAdd(vid)),
                VLAN_DEL => Ok(CtrlCommand::VlanDel(vid)),
                _ => Err(unknown),
            }
        }
        CLASS_ANNOUNCE => match cmd {
            ANNOUNCE_ACK => Ok(CtrlCommand::AnnounceAck),
            _ => Err(unknown),
        },
        CLASS_MQ => match cmd {
            MQ_VQ_PAIRS_SET => {
                let n = u16::from_le_bytes(exact::<2>(class, cmd, d)?);
                Ok(CtrlCommand::MqVqPairsSet(n))
            }
            MQ_RSS_CONFIG | MQ_HASH_CONFIG => Ok(CtrlCommand::MqRss),
            _ => Err(unknown),
        },
        CLASS_GUEST_OFFLOADS => {
            let v = u64::from_le_bytes(exact::<8>(class, cmd, d)?);
            match cmd {
                GUEST_OFFLOADS_SET => Ok(CtrlCommand::GuestOffloadsSet(v)),
                _ => Err(unknown),
            }
        }
        _ => Err(CtrlError::UnknownClass(class)),
    }
}

fn read_u32(d: &[u8]) -> Option<u32> {
    d.first_chunk::<4>().map(|b| u32::from_le_bytes(*b))
}

fn macs(d: &[u8], n: usize) -> Vec<MacAddr> {
    d.chunks_exact(6)
        .take(n)
        .map(|c| MacAddr([c[0], c[1], c[2], c[3], c[4], c[5]]))
        .collect()
}

/// `virtio_net_handle_mac` for MAC_TABLE_SET: two `struct virtio_net_ctrl_mac`
/// (le32 entries, then the addresses), unicast then multicast. The
/// multicast list must end the data exactly. QEMU computes `entries * 6`
/// in 32-bit unsigned arithmetic; so does this, wrap-around included.
pub fn parse_mac_table(d: &[u8]) -> Result<MacTable, CtrlError> {
    let e = CtrlError::MacTableLength;
    let uni = read_u32(d).ok_or(e.clone())?;
    let d = &d[4..];
    let uni_bytes = uni.wrapping_mul(6) as usize;
    if uni_bytes > d.len() {
        return Err(e);
    }
    let mut t = MacTable::default();
    if uni as usize <= MAC_TABLE_ENTRIES {
        t.macs = macs(d, uni as usize);
    } else {
        t.uni_overflow = true;
    }
    let d = &d[uni_bytes..];
    t.first_multi = t.macs.len();
    let multi = read_u32(d).ok_or(e.clone())?;
    let d = &d[4..];
    if multi.wrapping_mul(6) as usize != d.len() {
        return Err(e);
    }
    if multi as usize <= MAC_TABLE_ENTRIES - t.macs.len() {
        t.macs.extend(macs(d, multi as usize));
    } else {
        t.multi_overflow = true;
    }
    Ok(t)
}
