//! The transmission phase: requests read, checked and run one after the
//! other, each answered before the next is read (QEMU 7.2 nbd/server.c
//! `nbd_trip`, `nbd_co_receive_request`, `nbd_handle_request`). QEMU runs
//! up to 16 at once; the protocol lets replies come in any order, so one at
//! a time is what a client may see from QEMU too.

use std::io::{ErrorKind, Read, Write};

use super::negotiate::Client;
use super::proto;
use super::reply::{Extents, Replier};
use super::request::{Request, HEADER_SIZE};
use super::wire;
use crate::error::strerror;

/// `NBD_MAX_BLOCK_STATUS_EXTENTS`: 1 MiB of extents.
const MAX_EXTENTS: usize = (1 << 20) / 8;

/// Serves requests until the client disconnects. An `Err` is what QEMU
/// prints after "Disconnect client, due to: ".
pub fn transmit<S: Read + Write>(s: &mut S, c: &Client) -> Result<(), String> {
    loop {
        let mut h = [0u8; HEADER_SIZE];
        if !read_header(s, &mut h)? {
            return Ok(());
        }
        let req = Request::parse(&h);
        let (checked, payload, complete) = match receive(s, &req, c)? {
            Received::Disconnect => return Ok(()),
            Received::Request(p) => (Ok(()), p, true),
            Received::Invalid { msg, complete } => (Err(msg), Vec::new(), complete),
        };
        let mut r = Replier {
            s,
            handle: req.handle,
            structured: c.structured,
        };
        let sent = match checked {
            Err(msg) => r.generic(Err(libc::EINVAL), &msg),
            Ok(()) => handle(&mut r, &req, &payload, c),
        };
        sent.map_err(|e| format!("Failed to send reply: {e}"))?;
        if !complete {
            return Err("Request handling failed in intermediate state".into());
        }
    }
}

/// `nbd_read_eof`: false at a clean end of file before the header.
fn read_header<S: Read>(s: &mut S, h: &mut [u8; HEADER_SIZE]) -> Result<bool, String> {
    let mut got = 0;
    while got < h.len() {
        match s.read(&mut h[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err("Unexpected end-of-file before all bytes were read".into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(wire::read_error(&e)),
        }
    }
    Ok(true)
}

enum Received {
    /// NBD_CMD_DISC: close without a reply.
    Disconnect,
    /// Valid, with a write's payload.
    Request(Vec<u8>),
    /// Refused with EINVAL and `msg`; unless `complete`, the connection
    /// closes after the reply (a write's payload was not read).
    Invalid { msg: String, complete: bool },
}

/// `nbd_co_receive_request`. A payload that cannot be read ends the
/// connection (`Err`).
fn receive<S: Read>(s: &mut S, req: &Request, c: &Client) -> Result<Received, String> {
    if let Err(msg) = req.check_magic() {
        return Ok(Received::Invalid {
            msg,
            complete: false,
        });
    }
    if req.typ == proto::CMD_DISC {
        return Ok(Received::Disconnect);
    }
    if let Err(msg) = req.check_len() {
        return Ok(Received::Invalid {
            msg,
            complete: !req.has_payload(),
        });
    }
    let payload = if req.has_payload() {
        wire::read_payload(s, req.len, Some("CMD_WRITE data"))?
    } else {
        Vec::new()
    };
    let e = &c.export;
    match req.check(e.size, e.read_only(), c.structured) {
        Ok(()) => Ok(Received::Request(payload)),
        Err(msg) => Ok(Received::Invalid {
            msg,
            complete: true,
        }),
    }
}

/// `nbd_handle_request`: runs a checked request and sends its reply.
fn handle<S: Write>(
    r: &mut Replier<'_, S>,
    req: &Request,
    payload: &[u8],
    c: &Client,
) -> Result<(), String> {
    let io = &c.export.io;
    let fua = req.flags & proto::CMD_FLAG_FUA != 0;
    let then_flush = |res: Result<(), i32>| {
        if fua {
            res.and_then(|()| io.flush())
        } else {
            res
        }
    };
    match req.typ {
        proto::CMD_CACHE => {
            let res = prefetch(c, req.from, u64::from(req.len));
            r.generic(res, "caching data failed")
        }
        proto::CMD_READ => read(r, req, c),
        proto::CMD_WRITE => {
            let res = then_flush(io.write(req.from, payload));
            r.generic(res, "writing to file failed")
        }
        proto::CMD_WRITE_ZEROES => {
            let may_unmap = req.flags & proto::CMD_FLAG_NO_HOLE == 0;
            let res = then_flush(io.write_zeroes(req.from, u64::from(req.len), may_unmap));
            r.generic(res, "writing to file failed")
        }
        proto::CMD_FLUSH => r.generic(io.flush(), "flush failed"),
        proto::CMD_TRIM => {
            let res = then_flush(io.discard(req.from, u64::from(req.len)));
            r.generic(res, "discard failed")
        }
        proto::CMD_BLOCK_STATUS if req.len == 0 => {
            r.generic(Err(libc::EINVAL), "need non-zero length")
        }
        proto::CMD_BLOCK_STATUS if c.base_allocation => block_status(r, req, c),
        proto::CMD_BLOCK_STATUS => r.generic(Err(libc::EINVAL), "CMD_BLOCK_STATUS not negotiated"),
        t => r.generic(
            Err(libc::EINVAL),
            &format!("invalid request type ({t}) received"),
        ),
    }
}

/// NBD_CMD_CACHE: the data is read and dropped (QEMU's prefetch).
fn prefetch(c: &Client, mut off: u64, mut len: u64) -> Result<(), i32> {
    let mut buf = vec![0u8; len.min(1 << 20) as usize];
    while len > 0 {
        let n = len.min(buf.len() as u64);
        c.export.io.read(off, &mut buf[..n as usize])?;
        off += n;
        len -= n;
    }
    Ok(())
}

/// `nbd_do_cmd_read`.
fn read<S: Write>(r: &mut Replier<'_, S>, req: &Request, c: &Client) -> Result<(), String> {
    let io = &c.export.io;
    if req.flags & proto::CMD_FLAG_FUA != 0 {
        if let Err(e) = io.flush() {
            return r.generic(Err(e), "flush failed");
        }
    }
    if c.structured && req.flags & proto::CMD_FLAG_DF == 0 && req.len > 0 {
        return sparse_read(r, req, c);
    }
    let mut data = vec![0u8; req.len as usize];
    if let Err(e) = io.read(req.from, &mut data) {
        return r.generic(Err(e), "reading from file failed");
    }
    match (c.structured, req.len) {
        (true, 0) => r.done(),
        (true, _) => r.data(req.from, &data, true),
        (false, _) => r.simple(0, &data),
    }
}

/// `nbd_co_send_sparse_read`: zero ranges as holes, the rest as data. A
/// read that fails here ends the connection, as in QEMU.
fn sparse_read<S: Write>(r: &mut Replier<'_, S>, req: &Request, c: &Client) -> Result<(), String> {
    let io = &c.export.io;
    let size = u64::from(req.len);
    let mut done = 0u64;
    while done < size {
        let off = req.from + done;
        let (flags, pnum) = match io.block_status(off, size - done) {
            Ok((f, n)) => (f, n.clamp(1, size - done)),
            Err(e) => {
                let msg = format!("unable to check for holes: {}", strerror(e));
                return r.error(e, &msg);
            }
        };
        let last = done + pnum == size;
        if flags & proto::STATE_ZERO != 0 {
            r.hole(off, pnum as u32, last)?;
        } else {
            let mut data = vec![0u8; pnum as usize];
            io.read(off, &mut data)
                .map_err(|e| format!("reading from file failed: {}", strerror(e)))?;
            r.data(off, &data, last)?;
        }
        done += pnum;
    }
    Ok(())
}

/// `nbd_co_send_block_status` for base:allocation.
fn block_status<S: Write>(r: &mut Replier<'_, S>, req: &Request, c: &Client) -> Result<(), String> {
    let cap = if req.flags & proto::CMD_FLAG_REQ_ONE != 0 {
        1
    } else {
        MAX_EXTENTS
    };
    let mut ext = Extents::new(cap);
    let (mut off, mut left) = (req.from, u64::from(req.len));
    while left > 0 {
        match c.export.io.block_status(off, left) {
            Ok((flags, n)) => {
                let n = n.clamp(1, left);
                if !ext.add(n as u32, flags) {
                    break;
                }
                off += n;
                left -= n;
            }
            Err(e) => return r.error(e, "can't get block status"),
        }
    }
    r.extents(proto::META_ID_BASE_ALLOCATION, &ext.list, true)
}
