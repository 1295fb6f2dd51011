//! A transmission request: its header and the checks QEMU 7.2 makes before
//! running it (nbd/server.c `nbd_receive_request`, `nbd_co_receive_request`).
//! Pure, so the parser is fuzzed on its own.

use super::proto::{self, cmd_name};

pub const HEADER_SIZE: usize = 28;

/// A request header, as received (`NBDRequest` with its magic).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub magic: u32,
    pub flags: u16,
    pub typ: u16,
    pub handle: u64,
    pub from: u64,
    pub len: u32,
}

impl Request {
    pub fn parse(b: &[u8; HEADER_SIZE]) -> Request {
        let be32 = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let be64 = |i: usize| (u64::from(be32(i)) << 32) | u64::from(be32(i + 4));
        Request {
            magic: be32(0),
            flags: u16::from_be_bytes([b[4], b[5]]),
            typ: u16::from_be_bytes([b[6], b[7]]),
            handle: be64(8),
            from: be64(16),
            len: be32(24),
        }
    }

    /// The magic is checked first; a bad one still gets a reply (with the
    /// handle as received), then the connection closes.
    pub fn check_magic(&self) -> Result<(), String> {
        if self.magic != proto::REQUEST_MAGIC {
            return Err(format!("invalid magic (got 0x{:x})", self.magic));
        }
        Ok(())
    }

    /// Whether the request carries data to read after its header.
    pub fn has_payload(&self) -> bool {
        self.typ == proto::CMD_WRITE
    }

    /// Reads, writes and cache requests are limited to `MAX_BUFFER_SIZE`
    /// (checked before a write's payload is read, which then is not).
    pub fn check_len(&self) -> Result<(), String> {
        let sized = matches!(
            self.typ,
            proto::CMD_READ | proto::CMD_WRITE | proto::CMD_CACHE
        );
        if sized && self.len > proto::MAX_BUFFER_SIZE {
            return Err(format!(
                "len ({} ) is larger than max len ({})",
                self.len,
                proto::MAX_BUFFER_SIZE
            ));
        }
        Ok(())
    }

    /// The checks after the payload: writes to a read-only export, ranges
    /// past the end, flags the command does not take.
    pub fn check(&self, size: u64, read_only: bool, structured: bool) -> Result<(), String> {
        let writes = matches!(
            self.typ,
            proto::CMD_WRITE | proto::CMD_WRITE_ZEROES | proto::CMD_TRIM
        );
        if read_only && writes {
            return Err("Export is read-only".into());
        }
        if self.from > size || u64::from(self.len) > size - self.from {
            return Err(format!(
                "operation past EOF; From: {}, Len: {}, Size: {}",
                self.from, self.len, size
            ));
        }
        let mut valid = proto::CMD_FLAG_FUA;
        if self.typ == proto::CMD_READ && structured {
            valid |= proto::CMD_FLAG_DF;
        } else if self.typ == proto::CMD_WRITE_ZEROES {
            valid |= proto::CMD_FLAG_NO_HOLE | proto::CMD_FLAG_FAST_ZERO;
        } else if self.typ == proto::CMD_BLOCK_STATUS {
            valid |= proto::CMD_FLAG_REQ_ONE;
        }
        if self.flags & !valid != 0 {
            return Err(format!(
                "unsupported flags for command {} (got 0x{:x})",
                cmd_name(self.typ),
                self.flags
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(typ: u16, flags: u16, from: u64, len: u32) -> Request {
        let mut b = [0u8; HEADER_SIZE];
        b[..4].copy_from_slice(&proto::REQUEST_MAGIC.to_be_bytes());
        b[4..6].copy_from_slice(&flags.to_be_bytes());
        b[6..8].copy_from_slice(&typ.to_be_bytes());
        b[8..16].copy_from_slice(&7u64.to_be_bytes());
        b[16..24].copy_from_slice(&from.to_be_bytes());
        b[24..].copy_from_slice(&len.to_be_bytes());
        Request::parse(&b)
    }

    #[test]
    fn parses_the_header() {
        let r = req(proto::CMD_WRITE, 1, 4096, 512);
        assert_eq!(
            (r.typ, r.flags, r.handle, r.from, r.len),
            (1, 1, 7, 4096, 512)
        );
        assert!(r.check_magic().is_ok() && r.has_payload());
        let bad = Request { magic: 0, ..r };
        assert_eq!(bad.check_magic().unwrap_err(), "invalid magic (got 0x0)");
    }

    /// The messages QEMU 7.2 sent back for the same requests (1 MiB export).
    #[test]
    fn checks_give_qemus_messages() {
        const M: u64 = 1 << 20;
        let e = |r: Request, ro, st| r.check(M, ro, st).unwrap_err();
        assert_eq!(
            e(req(proto::CMD_WRITE, 0, 0, 4), true, false),
            "Export is read-only"
        );
        assert_eq!(
            e(req(proto::CMD_WRITE, 0, M - 2, 4), false, true),
            "operation past EOF; From: 1048574, Len: 4, Size: 1048576"
        );
        assert_eq!(
            e(req(proto::CMD_WRITE_ZEROES, 4, 4096, 4), false, true),
            "unsupported flags for command write zeroes (got 0x4)"
        );
        assert!(e(req(proto::CMD_READ, 4, 0, 1), false, false).contains("(got 0x4)"));
        assert!(req(proto::CMD_READ, 4, 0, 1).check(M, false, true).is_ok());
        assert!(req(proto::CMD_READ, 0, M, 0).check(M, false, false).is_ok());
        assert!(req(proto::CMD_BLOCK_STATUS, 8, 0, 1)
            .check(M, true, true)
            .is_ok());
        assert_eq!(
            req(proto::CMD_WRITE, 0, 0, 33 << 20)
                .check_len()
                .unwrap_err(),
            "len (34603008 ) is larger than max len (33554432)"
        );
        assert!(req(proto::CMD_TRIM, 0, 0, 33 << 20).check_len().is_ok());
        // Overflowing ranges are past EOF, not a panic.
        assert!(req(proto::CMD_READ, 0, u64::MAX, u32::MAX)
            .check(M, false, false)
            .is_err());
    }
}
