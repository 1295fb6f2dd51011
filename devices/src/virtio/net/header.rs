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
