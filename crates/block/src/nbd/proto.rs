//! The NBD protocol's numbers and names, as QEMU 7.2 spells them
//! (include/block/nbd.h, nbd/nbd-internal.h, nbd/common.c).

pub const NBDMAGIC: &[u8; 8] = b"NBDMAGIC";
/// "IHAVEOPT": the newstyle greeting and every option's header.
pub const OPTS_MAGIC: u64 = 0x4948_4156_454F_5054;
/// Every option reply's header.
pub const REP_MAGIC: u64 = 0x0003_e889_0455_65a9;
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

/// Requests, option payloads and names are limited (`NBD_MAX_BUFFER_SIZE`,
/// `NBD_MAX_STRING_SIZE`).
pub const MAX_BUFFER_SIZE: u32 = 32 * 1024 * 1024;
pub const MAX_STRING_SIZE: usize = 4096;
/// The reply to NBD_OPT_EXPORT_NAME: size, flags, 124 zeros.
pub const REPLY_EXPORT_NAME_SIZE: usize = 8 + 2 + 124;
/// `NBD_DEFAULT_HANDSHAKE_MAX_SECS`.
pub const HANDSHAKE_MAX_SECS: u64 = 10;
/// `NBD_DEFAULT_MAX_CONNECTIONS`.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 100;

// Server handshake flags.
pub const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
pub const FLAG_NO_ZEROES: u16 = 1 << 1;
// Client handshake flags.
pub const FLAG_C_FIXED_NEWSTYLE: u32 = 1 << 0;
pub const FLAG_C_NO_ZEROES: u32 = 1 << 1;

// Transmission flags.
pub const FLAG_HAS_FLAGS: u16 = 1 << 0;
pub const FLAG_READ_ONLY: u16 = 1 << 1;
pub const FLAG_SEND_FLUSH: u16 = 1 << 2;
pub const FLAG_SEND_FUA: u16 = 1 << 3;
pub const FLAG_SEND_TRIM: u16 = 1 << 5;
pub const FLAG_SEND_WRITE_ZEROES: u16 = 1 << 6;
pub const FLAG_SEND_DF: u16 = 1 << 7;
pub const FLAG_CAN_MULTI_CONN: u16 = 1 << 8;
pub const FLAG_SEND_CACHE: u16 = 1 << 10;
pub const FLAG_SEND_FAST_ZERO: u16 = 1 << 11;

// Options.
pub const OPT_EXPORT_NAME: u32 = 1;
pub const OPT_ABORT: u32 = 2;
pub const OPT_LIST: u32 = 3;
pub const OPT_STARTTLS: u32 = 5;
pub const OPT_INFO: u32 = 6;
pub const OPT_GO: u32 = 7;
pub const OPT_STRUCTURED_REPLY: u32 = 8;
pub const OPT_LIST_META_CONTEXT: u32 = 9;
pub const OPT_SET_META_CONTEXT: u32 = 10;

// Option replies.
pub const REP_ACK: u32 = 1;
pub const REP_SERVER: u32 = 2;
pub const REP_INFO: u32 = 3;
pub const REP_META_CONTEXT: u32 = 4;
pub const REP_ERR_UNSUP: u32 = (1 << 31) | 1;
pub const REP_ERR_POLICY: u32 = (1 << 31) | 2;
pub const REP_ERR_INVALID: u32 = (1 << 31) | 3;
pub const REP_ERR_UNKNOWN: u32 = (1 << 31) | 6;
pub const REP_ERR_BLOCK_SIZE_REQD: u32 = (1 << 31) | 8;

// NBD_REP_INFO kinds.
pub const INFO_EXPORT: u16 = 0;
pub const INFO_NAME: u16 = 1;
pub const INFO_DESCRIPTION: u16 = 2;
pub const INFO_BLOCK_SIZE: u16 = 3;

// Commands.
pub const CMD_READ: u16 = 0;
pub const CMD_WRITE: u16 = 1;
pub const CMD_DISC: u16 = 2;
pub const CMD_FLUSH: u16 = 3;
pub const CMD_TRIM: u16 = 4;
pub const CMD_CACHE: u16 = 5;
pub const CMD_WRITE_ZEROES: u16 = 6;
pub const CMD_BLOCK_STATUS: u16 = 7;

// Command flags.
pub const CMD_FLAG_FUA: u16 = 1 << 0;
pub const CMD_FLAG_NO_HOLE: u16 = 1 << 1;
pub const CMD_FLAG_DF: u16 = 1 << 2;
pub const CMD_FLAG_REQ_ONE: u16 = 1 << 3;
pub const CMD_FLAG_FAST_ZERO: u16 = 1 << 4;

// Structured reply chunks.
pub const REPLY_FLAG_DONE: u16 = 1 << 0;
pub const REPLY_TYPE_NONE: u16 = 0;
pub const REPLY_TYPE_OFFSET_DATA: u16 = 1;
pub const REPLY_TYPE_OFFSET_HOLE: u16 = 2;
pub const REPLY_TYPE_BLOCK_STATUS: u16 = 5;
pub const REPLY_TYPE_ERROR: u16 = (1 << 15) | 1;

// base:allocation extent flags.
pub const STATE_HOLE: u32 = 1 << 0;
pub const STATE_ZERO: u32 = 1 << 1;

/// The one metadata context ferrovm serves (`NBD_META_ID_BASE_ALLOCATION`).
pub const META_BASE_ALLOCATION: &str = "base:allocation";
pub const META_ID_BASE_ALLOCATION: u32 = 0;

/// `nbd_opt_lookup`.
pub fn opt_name(opt: u32) -> &'static str {
    match opt {
        OPT_EXPORT_NAME => "export name",
        OPT_ABORT => "abort",
        OPT_LIST => "list",
        OPT_STARTTLS => "starttls",
        OPT_INFO => "info",
        OPT_GO => "go",
        OPT_STRUCTURED_REPLY => "structured reply",
        OPT_LIST_META_CONTEXT => "list meta context",
        OPT_SET_META_CONTEXT => "set meta context",
        _ => "<unknown>",
    }
}

/// `nbd_cmd_lookup`.
pub fn cmd_name(cmd: u16) -> &'static str {
    match cmd {
        CMD_READ => "read",
        CMD_WRITE => "write",
        CMD_DISC => "disconnect",
        CMD_FLUSH => "flush",
        CMD_TRIM => "trim",
        CMD_CACHE => "cache",
        CMD_WRITE_ZEROES => "write zeroes",
        CMD_BLOCK_STATUS => "block status",
        _ => "<unknown>",
    }
}

/// `system_errno_to_nbd_errno`: the NBD error a failed request reports.
pub fn nbd_errno(err: i32) -> u32 {
    match err {
        0 => 0,
        libc::EPERM | libc::EROFS => 1,
        libc::EIO => 5,
        libc::ENOMEM => 12,
        libc::EDQUOT | libc::EFBIG | libc::ENOSPC => 28,
        libc::EOVERFLOW => 75,
        libc::ENOTSUP => 95,
        libc::ESHUTDOWN => 108,
        _ => 22,
    }
}

/// The header of an option reply (`set_be_option_rep`).
pub fn option_reply(opt: u32, typ: u32, len: u32) -> [u8; 20] {
    let mut b = [0u8; 20];
    b[..8].copy_from_slice(&REP_MAGIC.to_be_bytes());
    b[8..12].copy_from_slice(&opt.to_be_bytes());
    b[12..16].copy_from_slice(&typ.to_be_bytes());
    b[16..].copy_from_slice(&len.to_be_bytes());
    b
}

/// A simple reply's header (`set_be_simple_reply`); `err` is an errno.
pub fn simple_reply(err: i32, handle: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    b[4..8].copy_from_slice(&nbd_errno(err).to_be_bytes());
    b[8..].copy_from_slice(&handle.to_be_bytes());
    b
}

/// A structured reply chunk's header (`set_be_chunk`).
pub fn chunk(flags: u16, typ: u16, handle: u64, len: u32) -> [u8; 20] {
    let mut b = [0u8; 20];
    b[..4].copy_from_slice(&STRUCTURED_REPLY_MAGIC.to_be_bytes());
    b[4..6].copy_from_slice(&flags.to_be_bytes());
    b[6..8].copy_from_slice(&typ.to_be_bytes());
    b[8..16].copy_from_slice(&handle.to_be_bytes());
    b[16..].copy_from_slice(&len.to_be_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errnos_map_as_qemus() {
        assert_eq!(nbd_errno(libc::EROFS), 1);
        assert_eq!(nbd_errno(libc::ENOSPC), 28);
        assert_eq!(nbd_errno(libc::EBADF), 22);
    }

    #[test]
    fn headers_are_big_endian() {
        // The bytes QEMU 7.2 sends for a successful simple reply, handle 1.
        assert_eq!(simple_reply(0, 1), *b"gDf\x98\0\0\0\0\0\0\0\0\0\0\0\x01");
        assert_eq!(
            &option_reply(3, REP_ACK, 0)[..8],
            b"\0\x03\xe8\x89\x04\x55\x65\xa9"
        );
    }
}
