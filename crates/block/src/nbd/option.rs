//! An option's payload, read the way QEMU 7.2's nbd/server.c reads it
//! (`nbd_opt_read`, `nbd_opt_skip`, `nbd_opt_read_name`): a client whose
//! lengths disagree with its payload gets NBD_REP_ERR_INVALID with QEMU's
//! message, and the rest of the option is dropped. Pure: the negotiation
//! has already read the whole payload (at most `MAX_BUFFER_SIZE` bytes).

use super::proto::{self, opt_name};

/// An option refused: the error reply (type and message) the client gets;
/// the connection goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    pub rep: u32,
    pub msg: Vec<u8>,
}

impl Reject {
    pub fn new(rep: u32, msg: impl Into<Vec<u8>>) -> Self {
        Reject {
            rep,
            msg: msg.into(),
        }
    }

    /// `nbd_opt_invalid`.
    pub fn invalid(msg: impl Into<Vec<u8>>) -> Self {
        Self::new(proto::REP_ERR_INVALID, msg)
    }
}

/// The unread part of option `opt`'s payload.
pub struct OptReader<'a> {
    opt: u32,
    buf: &'a [u8],
}

impl<'a> OptReader<'a> {
    pub fn new(opt: u32, buf: &'a [u8]) -> Self {
        OptReader { opt, buf }
    }

    /// Bytes not read yet (`client->optlen`).
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    fn inconsistent(&self) -> Reject {
        Reject::invalid(format!(
            "Inconsistent lengths in option {}",
            opt_name(self.opt)
        ))
    }

    /// `nbd_opt_read`: `n` bytes, with `check_nul` none of them NUL.
    pub fn read(&mut self, n: usize, check_nul: bool) -> Result<&'a [u8], Reject> {
        if n > self.buf.len() {
            return Err(self.inconsistent());
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        if check_nul && head.contains(&0) {
            return Err(Reject::invalid(format!(
                "Unexpected embedded NUL in option {}",
                opt_name(self.opt)
            )));
        }
        Ok(head)
    }

    pub fn u16(&mut self) -> Result<u16, Reject> {
        let b = self.read(2, false)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub fn u32(&mut self) -> Result<u32, Reject> {
        let b = self.read(4, false)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// `nbd_opt_skip`.
    pub fn skip(&mut self, n: usize) -> Result<(), Reject> {
        self.read(n, false).map(|_| ())
    }

    /// `nbd_opt_read_name`: a 32-bit length (at most `MAX_STRING_SIZE`)
    /// and that many bytes, none NUL.
    pub fn name(&mut self) -> Result<&'a [u8], Reject> {
        let len = self.u32()?;
        if len as usize > proto::MAX_STRING_SIZE {
            return Err(Reject::invalid(format!("Invalid name length: {len}")));
        }
        self.read(len as usize, true)
    }

    /// `nbd_reject_length`: bytes left over once the option is parsed.
    pub fn unexpected_length(&self) -> Reject {
        Reject::invalid(format!(
            "option '{}' has unexpected length",
            opt_name(self.opt)
        ))
    }

    /// Fails with [`Self::unexpected_length`] unless everything was read.
    pub fn finish(&self) -> Result<(), Reject> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(self.unexpected_length())
        }
    }
}

/// NBD_OPT_INFO / NBD_OPT_GO's payload: the export name and which
/// information the client asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfoRequest<'a> {
    pub name: &'a [u8],
    /// NBD_INFO_NAME was requested.
    pub send_name: bool,
    /// NBD_INFO_BLOCK_SIZE was requested.
    pub block_size: bool,
}

/// `nbd_negotiate_handle_info`'s parsing half.
pub fn info<'a>(r: &mut OptReader<'a>) -> Result<InfoRequest<'a>, Reject> {
    let name = r.name()?;
    let n = r.u16()?;
    let (mut send_name, mut block_size) = (false, false);
    for _ in 0..n {
        match r.u16()? {
            proto::INFO_NAME => send_name = true,
            proto::INFO_BLOCK_SIZE => block_size = true,
            _ => {}
        }
    }
    r.finish()?;
    Ok(InfoRequest {
        name,
        send_name,
        block_size,
    })
}

/// `nbd_sanitize_name`: a name for an error message, cut at 80 bytes.
pub fn sanitize_name(name: &[u8]) -> Vec<u8> {
    if name.len() < 80 {
        return name.to_vec();
    }
    let mut v = name[..80].to_vec();
    v.extend_from_slice(b"...");
    v
}

/// `nbd_meta_base_query` / `nbd_meta_qemu_query`: whether `query` selects
/// base:allocation (the only context without allocation-depth and dirty
/// bitmaps). `list`: NBD_OPT_LIST_META_CONTEXT, where an empty name after
/// the namespace selects everything in it.
pub fn query_selects_base_allocation(query: &[u8], list: bool) -> bool {
    match query.strip_prefix(b"base:") {
        Some(b"") => list,
        Some(rest) => rest == b"allocation",
        None => false,
    }
}

/// The meta-context queries of NBD_OPT_{LIST,SET}_META_CONTEXT after the
/// export name (`nbd_negotiate_meta_queries`): whether base:allocation is
/// selected. A query longer than `MAX_STRING_SIZE` is skipped.
pub fn meta_queries(r: &mut OptReader<'_>, list: bool) -> Result<bool, Reject> {
    let n = r.u32()?;
    if list && n == 0 {
        // Every known context.
        return Ok(true);
    }
    let mut base = false;
    for _ in 0..n {
        let len = r.u32()? as usize;
        if len > proto::MAX_STRING_SIZE {
            r.skip(len)?;
            continue;
        }
        let q = r.read(len, true)?;
        base |= query_selects_base_allocation(q, list);
    }
    Ok(base)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nbd::proto::{OPT_INFO, OPT_LIST_META_CONTEXT, OPT_SET_META_CONTEXT};

    fn name(n: &[u8]) -> Vec<u8> {
        let mut v = (n.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(n);
        v
    }

    #[test]
    fn info_reads_name_and_requests() {
        let mut p = name(b"q0");
        p.extend_from_slice(&[0, 3, 0, 0, 0, 1, 0, 3]);
        let mut r = OptReader::new(OPT_INFO, &p);
        let i = info(&mut r).unwrap();
        assert_eq!(
            (i.name, i.send_name, i.block_size),
            (&b"q0"[..], true, true)
        );
    }

    /// The messages QEMU 7.2 sent for the same payloads.
    #[test]
    fn info_errors_are_qemus() {
        let msg = |p: &[u8]| info(&mut OptReader::new(OPT_INFO, p)).unwrap_err();
        let mut short = name(b"q0");
        short.push(0);
        assert_eq!(
            msg(&short),
            Reject::invalid("Inconsistent lengths in option info")
        );
        let mut long = name(b"q0");
        long.extend_from_slice(b"\0\0zz");
        assert_eq!(
            msg(&long),
            Reject::invalid("option 'info' has unexpected length")
        );
        assert_eq!(
            msg(&5000u32.to_be_bytes()),
            Reject::invalid("Invalid name length: 5000")
        );
        assert_eq!(
            msg(b"\0\0\0\x02a\0\0\0"),
            Reject::invalid("Unexpected embedded NUL in option info")
        );
    }

    #[test]
    fn meta_queries_select_base_allocation() {
        let q = |list: bool, qs: &[&[u8]]| {
            let mut p = (qs.len() as u32).to_be_bytes().to_vec();
            for s in qs {
                p.extend_from_slice(&name(s));
            }
            let opt = if list {
                OPT_LIST_META_CONTEXT
            } else {
                OPT_SET_META_CONTEXT
            };
            meta_queries(&mut OptReader::new(opt, &p), list)
        };
        assert_eq!(q(true, &[]), Ok(true));
        assert_eq!(q(false, &[]), Ok(false));
        assert_eq!(q(true, &[b"base:", b"qemu:"]), Ok(true));
        assert_eq!(q(false, &[b"base:"]), Ok(false));
        assert_eq!(q(false, &[b"base:allocation"]), Ok(true));
        assert_eq!(q(false, &[b"qemu:dirty-bitmap:x", b"nope"]), Ok(false));
    }

    #[test]
    fn long_names_are_cut_in_messages() {
        assert_eq!(sanitize_name(b"abc"), b"abc");
        let n = [b'x'; 100];
        let s = sanitize_name(&n);
        assert_eq!(s.len(), 83);
        assert!(s.ends_with(b"x..."));
    }
}
