//! Transmission replies, simple and structured (QEMU 7.2 nbd/server.c
//! `nbd_co_send_simple_reply`, `nbd_co_send_structured_*`,
//! `nbd_send_generic_reply`, `nbd_co_send_extents`).

use std::io::Write;

use super::proto;
use super::wire;

/// Where one request's reply goes.
pub struct Replier<'a, S> {
    pub s: &'a mut S,
    pub handle: u64,
    pub structured: bool,
}

impl<S: Write> Replier<'_, S> {
    /// A simple reply, with `data` after it on success.
    pub fn simple(&mut self, err: i32, data: &[u8]) -> Result<(), String> {
        let h = proto::simple_reply(err, self.handle);
        wire::write_all(self.s, &[&h, data])
    }

    fn chunk(&mut self, flags: u16, typ: u16, parts: &[&[u8]]) -> Result<(), String> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let h = proto::chunk(flags, typ, self.handle, len as u32);
        let mut all: Vec<&[u8]> = vec![&h];
        all.extend_from_slice(parts);
        wire::write_all(self.s, &all)
    }

    /// NBD_REPLY_TYPE_NONE, the last chunk.
    pub fn done(&mut self) -> Result<(), String> {
        self.chunk(proto::REPLY_FLAG_DONE, proto::REPLY_TYPE_NONE, &[])
    }

    /// NBD_REPLY_TYPE_OFFSET_DATA.
    pub fn data(&mut self, off: u64, data: &[u8], last: bool) -> Result<(), String> {
        let flags = if last { proto::REPLY_FLAG_DONE } else { 0 };
        self.chunk(
            flags,
            proto::REPLY_TYPE_OFFSET_DATA,
            &[&off.to_be_bytes(), data],
        )
    }

    /// NBD_REPLY_TYPE_OFFSET_HOLE.
    pub fn hole(&mut self, off: u64, len: u32, last: bool) -> Result<(), String> {
        let flags = if last { proto::REPLY_FLAG_DONE } else { 0 };
        self.chunk(
            flags,
            proto::REPLY_TYPE_OFFSET_HOLE,
            &[&off.to_be_bytes(), &len.to_be_bytes()],
        )
    }

    /// NBD_REPLY_TYPE_ERROR with QEMU's message; `err` is an errno.
    pub fn error(&mut self, err: i32, msg: &str) -> Result<(), String> {
        let code = proto::nbd_errno(err).to_be_bytes();
        let msg = &msg.as_bytes()[..msg.len().min(u16::MAX as usize)];
        self.chunk(
            proto::REPLY_FLAG_DONE,
            proto::REPLY_TYPE_ERROR,
            &[&code, &(msg.len() as u16).to_be_bytes(), msg],
        )
    }

    /// `nbd_send_generic_reply`: success, or the error (structured with
    /// its message when negotiated).
    pub fn generic(&mut self, res: Result<(), i32>, msg: &str) -> Result<(), String> {
        match res {
            Err(e) if self.structured => self.error(e, msg),
            Err(e) => self.simple(e, &[]),
            Ok(()) => self.simple(0, &[]),
        }
    }

    /// NBD_REPLY_TYPE_BLOCK_STATUS for context `id`: (length, flags) pairs.
    pub fn extents(&mut self, id: u32, extents: &[(u32, u32)], last: bool) -> Result<(), String> {
        let mut p = Vec::with_capacity(4 + extents.len() * 8);
        p.extend_from_slice(&id.to_be_bytes());
        for (len, flags) in extents {
            p.extend_from_slice(&len.to_be_bytes());
            p.extend_from_slice(&flags.to_be_bytes());
        }
        let flags = if last { proto::REPLY_FLAG_DONE } else { 0 };
        self.chunk(flags, proto::REPLY_TYPE_BLOCK_STATUS, &[&p])
    }
}

/// `NBDExtentArray`: extents of one reply, neighbours with the same flags
/// merged while the sum fits 32 bits, at most `cap` of them.
pub struct Extents {
    pub list: Vec<(u32, u32)>,
    cap: usize,
}

impl Extents {
    pub fn new(cap: usize) -> Self {
        Extents {
            list: Vec::new(),
            cap,
        }
    }

    /// `nbd_extent_array_add`: false once the array is full (the extent
    /// was not added).
    pub fn add(&mut self, len: u32, flags: u32) -> bool {
        if len == 0 {
            return true;
        }
        if let Some(last) = self.list.last_mut() {
            if last.1 == flags {
                if let Some(sum) = last.0.checked_add(len) {
                    last.0 = sum;
                    return true;
                }
            }
        }
        if self.list.len() >= self.cap {
            return false;
        }
        self.list.push((len, flags));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extents_merge_and_stop_when_full() {
        let mut e = Extents::new(2);
        assert!(e.add(10, 0) && e.add(5, 0) && e.add(0, 3) && e.add(7, 3));
        assert!(!e.add(1, 0));
        assert_eq!(e.list, vec![(15, 0), (7, 3)]);
        let mut big = Extents::new(1);
        assert!(big.add(u32::MAX, 0) && !big.add(1, 0));
    }

    /// The bytes QEMU 7.2 sent for a structured error ("need non-zero
    /// length", handle 1).
    #[test]
    fn structured_error_is_qemus() {
        let mut out = Vec::new();
        let mut r = Replier {
            s: &mut out,
            handle: 1,
            structured: true,
        };
        r.generic(Err(libc::EINVAL), "need non-zero length")
            .unwrap();
        let mut want = b"\x66\x8e\x33\xef\x00\x01\x80\x01".to_vec();
        want.extend_from_slice(&1u64.to_be_bytes());
        want.extend_from_slice(&26u32.to_be_bytes());
        want.extend_from_slice(b"\x00\x00\x00\x16\x00\x14need non-zero length");
        assert_eq!(out, want);
    }
}
