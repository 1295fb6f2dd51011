//! `struct virtio_net_hdr` (virtio 1.2 §5.1.6) and what a transmitted chain
//! turns into (QEMU `virtio_net_flush_tx`). Pure functions over guest-given
//! values, so a fuzz target can call them.
//!
//! The guest header is 12 bytes for a VERSION_1 driver. The backend
//! exchanges 0 (bare frames), 10 or 12 bytes of header (`host_hdr_len`).
//! QEMU passes the first `host_hdr_len` bytes of the guest's header on and
//! skips the rest; with no backend header it offers none of the offloads,
//! so the header carries nothing and is dropped.

/// `struct virtio_net_hdr` (legacy, no `num_buffers`).
pub const HDR_LEN: usize = 10;
/// `struct virtio_net_hdr_v1` / `virtio_net_hdr_mrg_rxbuf`.
pub const HDR_LEN_V1: usize = 12;
/// Offset of `num_buffers` in the v1 header.
pub const NUM_BUFFERS_OFFSET: usize = 10;

pub const F_NEEDS_CSUM: u8 = 1;
pub const F_DATA_VALID: u8 = 2;
pub const GSO_NONE: u8 = 0;
pub const GSO_TCPV4: u8 = 1;
pub const GSO_UDP: u8 = 3;
pub const GSO_TCPV6: u8 = 4;
pub const GSO_ECN: u8 = 0x80;

/// The fields of `struct virtio_net_hdr_v1`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VirtioNetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
    pub num_buffers: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("virtio-net header is {0} bytes, shorter than {HDR_LEN}")]
    TooShort(usize),
}

impl VirtioNetHdr {
    /// Reads a header from `b`: 10 bytes at least; `num_buffers` is read
    /// when the 12-byte form is there, else 0.
    pub fn parse(b: &[u8]) -> Result<Self, HeaderError> {
        if b.len() < HDR_LEN {
            return Err(HeaderError::TooShort(b.len()));
        }
        let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        Ok(Self {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
            num_buffers: if b.len() >= HDR_LEN_V1 {
                u16_at(NUM_BUFFERS_OFFSET)
            } else {
                0
            },
        })
    }

    pub fn to_bytes(&self) -> [u8; HDR_LEN_V1] {
        let mut b = [0u8; HDR_LEN_V1];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        b[10..12].copy_from_slice(&self.num_buffers.to_le_bytes());
        b
    }
}

/// Why a transmitted chain is unusable: QEMU answers `virtio_error` (the
/// device needs a reset).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    #[error("virtio-net header not in first element")]
    NoHeader,
    #[error("virtio-net header incorrect")]
    HeaderIncorrect,
    #[error("virtio-net nothing to send")]
    NothingToSend,
}

/// What to do with one transmitted chain of `total` device-readable bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxPlan {
    /// Send bytes `0..host_hdr_len` of the chain followed by bytes
    /// `payload_start..total`: `len` bytes in all.
    Send {
        host_hdr_len: usize,
        payload_start: usize,
        len: usize,
    },
    /// Complete the chain without sending: the frame exceeds NET_BUFSIZE
    /// (net/net.c drops it silently).
    Drop,
}

/// `virtio_net_flush_tx` for a chain with `readable_descs` device-readable
/// descriptors holding `total` bytes, a guest header of `guest_hdr_len`
/// bytes, and a backend header of `host_hdr_len` (0 = no vnet header).
pub fn tx_plan(
    readable_descs: usize,
    total: u64,
    guest_hdr_len: usize,
    host_hdr_len: usize,
    max_frame: usize,
) -> Result<TxPlan, TxError> {
    if readable_descs == 0 {
        return Err(TxError::NoHeader);
    }
    let guest = guest_hdr_len as u64;
    // QEMU requires a header only when the backend has vnet headers.
    if host_hdr_len > 0 && total < guest {
        return Err(TxError::HeaderIncorrect);
    }
    let host = host_hdr_len.min(guest_hdr_len) as u64;
    let (payload_start, len) = if host == guest {
        (0, total)
    } else {
        let payload = total.saturating_sub(guest);
        if payload == 0 && host.min(total) == 0 {
            return Err(TxError::NothingToSend);
        }
        (guest, host.min(total) + payload)
    };
    if len > max_frame as u64 {
        return Ok(TxPlan::Drop);
    }
    Ok(TxPlan::Send {
        host_hdr_len: if host == guest { 0 } else { host as usize },
        payload_start: payload_start as usize,
        len: len as usize,
    })
}

/// QEMU `work_around_broken_dhclient` (hw/net/virtio-net.c): old dhclients
/// read DHCP replies through AF_PACKET without the checksum-offload
/// metadata, so a reply the host left with NEEDS_CSUM (partial checksum)
/// looks corrupt to them. For such a frame — NEEDS_CSUM, 42..1499 bytes,
/// IPv4, UDP, from port 67 — QEMU computes the UDP checksum and clears the
/// flag. `hdr` is the backend's vnet header, `frame` the Ethernet frame.
pub fn work_around_broken_dhclient(hdr: &mut [u8], frame: &mut [u8]) {
    let size = frame.len();
    let Some(flags) = hdr.first_mut() else {
        return;
    };
    if *flags & F_NEEDS_CSUM != 0
        && (14 + 20 + 8..1500).contains(&size)
        && frame[12..14] == [0x08, 0x00]
        && frame[23] == 17
        && frame[34..36] == [0, 67]
    {
        udp_checksum(frame);
        *flags &= !F_NEEDS_CSUM;
    }
}

/// `net_checksum_calculate(data, length, CSUM_UDP)` for an untagged IPv4
/// frame, QEMU's quirks kept: the UDP header is taken right after a
/// 20-byte IP header whatever its IHL, and a sum of 0 is stored as 0.
fn udp_checksum(frame: &mut [u8]) {
    const ETH: usize = 14;
    let len = frame.len() - ETH;
    let ip = &frame[ETH..];
    if len < 20 || ip[0] >> 4 != 4 {
        return;
    }
    let ihl = usize::from(ip[0] & 0xf) << 2;
    // Fragments carry no whole datagram.
    if u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0 {
        return;
    }
    let ip_len = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    if len < ip_len {
        return;
    }
    // C: `ip_len -= IHL` in int, compared unsigned with the UDP header's
    // size (a negative length passes), then used as a uint16_t; bytes past
    // the frame are not summed.
    let diff = ip_len as i32 - ihl as i32;
    if (0..8).contains(&diff) {
        return;
    }
    let l4_len = diff as u16;
    let udp = ETH + 20;
    frame[udp + 6] = 0;
    frame[udp + 7] = 0;
    let sum_be = |b: &[u8]| -> u32 {
        b.chunks(2)
            .map(|c| u32::from(c[0]) << 8 | u32::from(*c.get(1).unwrap_or(&0)))
            .sum()
    };
    let end = (udp + usize::from(l4_len)).min(frame.len());
    let mut sum = sum_be(&frame[udp..end]);
    sum += sum_be(&frame[ETH + 12..ETH + 20]);
    sum += 17 + u32::from(l4_len);
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let csum = !(sum as u16);
    frame[udp + 6..udp + 8].copy_from_slice(&csum.to_be_bytes());
}
