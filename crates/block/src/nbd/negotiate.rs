//! The handshake: fixed newstyle negotiation up to NBD_OPT_GO or
//! NBD_OPT_EXPORT_NAME (QEMU 7.2 nbd/server.c `nbd_negotiate`,
//! `nbd_negotiate_options` and the option handlers), byte for byte as QEMU
//! answers. TLS is never configured, so NBD_OPT_STARTTLS is refused by
//! policy as QEMU refuses it without `tls-creds`.

use std::io::{Read, Write};
use std::sync::Arc;

use super::export::{Export, Exports};
use super::option::{self, OptReader, Reject};
use super::proto::{self, opt_name};
use super::wire::{self, Pushback};

/// A client that finished the handshake.
pub struct Client {
    pub export: Arc<Export>,
    /// NBD_OPT_STRUCTURED_REPLY was negotiated.
    pub structured: bool,
    /// base:allocation was selected for this export (NBD_CMD_BLOCK_STATUS).
    pub base_allocation: bool,
}

pub enum Outcome {
    /// Transmission starts.
    Go(Client),
    /// NBD_OPT_ABORT: the client left in order.
    Abort,
}

/// The metadata contexts NBD_OPT_SET_META_CONTEXT chose
/// (`NBDExportMetaContexts`).
struct Meta {
    export: Arc<Export>,
    base_allocation: bool,
}

struct State<'e> {
    exports: &'e dyn Exports,
    structured: bool,
    no_zeroes: bool,
    meta: Option<Meta>,
}

impl State<'_> {
    /// `nbd_check_meta_export`: contexts chosen for another export are
    /// dropped.
    fn client(&self, export: Arc<Export>) -> Client {
        let base_allocation = self
            .meta
            .as_ref()
            .is_some_and(|m| Arc::ptr_eq(&m.export, &export) && m.base_allocation);
        Client {
            export,
            structured: self.structured,
            base_allocation,
        }
    }
}

/// `nbd_negotiate`. An `Err` is what QEMU prints after "option
/// negotiation failed: "; the connection then closes.
pub fn negotiate<S: Read + Write>(s: &mut S, exports: &dyn Exports) -> Result<Outcome, String> {
    let mut hello = [0u8; 18];
    hello[..8].copy_from_slice(proto::NBDMAGIC);
    hello[8..16].copy_from_slice(&proto::OPTS_MAGIC.to_be_bytes());
    hello[16..]
        .copy_from_slice(&(proto::FLAG_FIXED_NEWSTYLE | proto::FLAG_NO_ZEROES).to_be_bytes());
    wire::write_all(s, &[&hello]).map_err(|e| format!("write failed: {e}"))?;

    let mut flags = wire::read_u32(s, "flags")?;
    let fixed = flags & proto::FLAG_C_FIXED_NEWSTYLE != 0;
    let no_zeroes = flags & proto::FLAG_C_NO_ZEROES != 0;
    flags &= !(proto::FLAG_C_FIXED_NEWSTYLE | proto::FLAG_C_NO_ZEROES);
    if flags != 0 {
        return Err(format!("Unknown client flags 0x{flags:x} received"));
    }
    let mut st = State {
        exports,
        structured: false,
        no_zeroes,
        meta: None,
    };
    let mut s = Pushback {
        inner: s,
        front: Vec::new(),
    };
    loop {
        let magic = wire::read_u64(&mut s, "opts magic")?;
        if magic != proto::OPTS_MAGIC {
            return Err("Bad magic received".into());
        }
        let opt = wire::read_u32(&mut s, "option")?;
        let len = wire::read_u32(&mut s, "option length")?;
        if len > proto::MAX_BUFFER_SIZE {
            return Err(format!(
                "len ({len} ) is larger than max len ({})",
                proto::MAX_BUFFER_SIZE
            ));
        }
        if !fixed {
            // Broken newstyle: nothing but NBD_OPT_EXPORT_NAME.
            if opt == proto::OPT_EXPORT_NAME {
                return export_name(&mut s, len, &st);
            }
            return Err(format!("Unsupported option {opt} ({})", opt_name(opt)));
        }
        match opt {
            proto::OPT_ABORT => {
                // The client may hang up before reading the reply.
                let _ = send_rep(&mut s, opt, proto::REP_ACK, &[]);
                return Ok(Outcome::Abort);
            }
            proto::OPT_EXPORT_NAME => return export_name(&mut s, len, &st),
            _ => {}
        }
        let payload = wire::read_payload(&mut s, len, None)?;
        let mut r = OptReader::new(opt, &payload);
        let res: Result<Option<Outcome>, Fail> = match opt {
            proto::OPT_LIST if len > 0 => Err(r.unexpected_length().into()),
            proto::OPT_LIST => list(&mut s, &st).map(|()| None),
            proto::OPT_INFO | proto::OPT_GO => info(&mut s, &mut r, opt, &st),
            proto::OPT_STARTTLS if len > 0 => Err(r.unexpected_length().into()),
            proto::OPT_STARTTLS => {
                Err(Reject::new(proto::REP_ERR_POLICY, "TLS not configured").into())
            }
            proto::OPT_STRUCTURED_REPLY if len > 0 => Err(r.unexpected_length().into()),
            proto::OPT_STRUCTURED_REPLY if st.structured => {
                Err(Reject::invalid("structured reply already negotiated").into())
            }
            proto::OPT_STRUCTURED_REPLY => {
                send_rep(&mut s, opt, proto::REP_ACK, &[])?;
                st.structured = true;
                Ok(None)
            }
            proto::OPT_LIST_META_CONTEXT | proto::OPT_SET_META_CONTEXT => {
                let res = meta(&mut s, &mut r, opt, &mut st).map(|()| None);
                // QEMU does not check that the queries filled the option:
                // what is left is read as the next option.
                if res.is_ok() && r.remaining() > 0 {
                    let rest = payload.len() - r.remaining();
                    s.front = payload[rest..].to_vec();
                }
                res
            }
            _ => Err(Reject::new(
                proto::REP_ERR_UNSUP,
                format!("Unsupported option {opt} ({})", opt_name(opt)),
            )
            .into()),
        };
        match res {
            Ok(Some(outcome)) => return Ok(outcome),
            Ok(None) => {}
            Err(Fail::Reject(rej)) => send_rep(&mut s, opt, rej.rep, &rej.msg)?,
            Err(Fail::Io(m)) => return Err(m),
        }
    }
}

/// One option reply with its payload (`nbd_negotiate_send_rep_len`).
fn send_rep<S: Write>(s: &mut S, opt: u32, typ: u32, payload: &[u8]) -> Result<(), String> {
    let h = proto::option_reply(opt, typ, payload.len() as u32);
    wire::write_all(s, &[&h, payload])
}

/// `nbd_negotiate_handle_list`: one NBD_REP_SERVER per export, then ACK.
fn list<S: Write>(s: &mut S, st: &State<'_>) -> Result<(), Fail> {
    for e in st.exports.list() {
        let desc = e.description.as_deref().unwrap_or("");
        let mut p = (e.name.len() as u32).to_be_bytes().to_vec();
        p.extend_from_slice(e.name.as_bytes());
        p.extend_from_slice(desc.as_bytes());
        send_rep(s, proto::OPT_LIST, proto::REP_SERVER, &p)?;
    }
    Ok(send_rep(s, proto::OPT_LIST, proto::REP_ACK, &[])?)
}

/// Why an option was not answered normally.
enum Fail {
    /// Refused: the client gets the error reply, the handshake goes on.
    Reject(Reject),
    /// The socket failed: the connection ends with this message.
    Io(String),
}

impl From<Reject> for Fail {
    fn from(r: Reject) -> Self {
        Fail::Reject(r)
    }
}

impl From<String> for Fail {
    fn from(m: String) -> Self {
        Fail::Io(m)
    }
}

/// `nbd_negotiate_send_info`.
fn send_info<S: Write>(s: &mut S, opt: u32, info: u16, data: &[u8]) -> Result<(), Fail> {
    let mut p = info.to_be_bytes().to_vec();
    p.extend_from_slice(data);
    Ok(send_rep(s, opt, proto::REP_INFO, &p)?)
}

/// `nbd_negotiate_handle_info` for NBD_OPT_INFO and NBD_OPT_GO.
fn info<S: Write>(
    s: &mut S,
    r: &mut OptReader<'_>,
    opt: u32,
    st: &State<'_>,
) -> Result<Option<Outcome>, Fail> {
    let req = option::info(r)?;
    let found = if opt == proto::OPT_GO {
        st.exports.claim(req.name)
    } else {
        st.exports.find(req.name)
    };
    let Some(exp) = found else {
        return Err(not_present(req.name).into());
    };
    if req.send_name {
        send_info(s, opt, proto::INFO_NAME, req.name)?;
    }
    if let Some(d) = &exp.description {
        send_info(s, opt, proto::INFO_DESCRIPTION, d.as_bytes())?;
    }
    // The minimum is 1 for old clients unless they will obey it.
    let min = if opt == proto::OPT_INFO || req.block_size {
        exp.min_block
    } else {
        1
    };
    let mut sizes = Vec::with_capacity(12);
    sizes.extend_from_slice(&min.to_be_bytes());
    sizes.extend_from_slice(&min.max(4096).to_be_bytes());
    sizes.extend_from_slice(&proto::MAX_BUFFER_SIZE.to_be_bytes());
    send_info(s, opt, proto::INFO_BLOCK_SIZE, &sizes)?;
    let mut e = exp.size.to_be_bytes().to_vec();
    e.extend_from_slice(&export_flags(&exp, st.structured).to_be_bytes());
    send_info(s, opt, proto::INFO_EXPORT, &e)?;
    if opt == proto::OPT_INFO && !req.block_size && exp.min_block > 1 {
        return Err(Reject::new(
            proto::REP_ERR_BLOCK_SIZE_REQD,
            "request NBD_INFO_BLOCK_SIZE to use this export",
        )
        .into());
    }
    send_rep(s, opt, proto::REP_ACK, &[])?;
    if opt == proto::OPT_GO {
        return Ok(Some(Outcome::Go(st.client(exp))));
    }
    Ok(None)
}

/// "export 'NAME' not present" (NBD_REP_ERR_UNKNOWN).
fn not_present(name: &[u8]) -> Reject {
    let mut m = b"export '".to_vec();
    m.extend_from_slice(&option::sanitize_name(name));
    m.extend_from_slice(b"' not present");
    Reject::new(proto::REP_ERR_UNKNOWN, m)
}

fn export_flags(e: &Export, structured: bool) -> u16 {
    if structured {
        e.flags | proto::FLAG_SEND_DF
    } else {
        e.flags
    }
}

/// `nbd_negotiate_meta_queries`: NBD_OPT_LIST_META_CONTEXT lists,
/// NBD_OPT_SET_META_CONTEXT chooses (and first forgets the last choice).
fn meta<S: Write>(
    s: &mut S,
    r: &mut OptReader<'_>,
    opt: u32,
    st: &mut State<'_>,
) -> Result<(), Fail> {
    let list = opt == proto::OPT_LIST_META_CONTEXT;
    if !list && !st.structured {
        return Err(Reject::invalid(format!(
            "request option '{}' when structured reply is not negotiated",
            opt_name(opt)
        ))
        .into());
    }
    if !list {
        st.meta = None;
    }
    let name = r.name()?;
    let Some(exp) = st.exports.find(name) else {
        return Err(not_present(name).into());
    };
    let base = option::meta_queries(r, list)?;
    if base {
        let mut p = proto::META_ID_BASE_ALLOCATION.to_be_bytes().to_vec();
        p.extend_from_slice(proto::META_BASE_ALLOCATION.as_bytes());
        send_rep(s, opt, proto::REP_META_CONTEXT, &p)?;
    }
    send_rep(s, opt, proto::REP_ACK, &[])?;
    if !list {
        st.meta = Some(Meta {
            export: exp,
            base_allocation: base,
        });
    }
    Ok(())
}

/// `nbd_negotiate_handle_export_name`: the old way in; errors end the
/// connection, as the client cannot be told.
fn export_name<S: Read + Write>(s: &mut S, len: u32, st: &State<'_>) -> Result<Outcome, String> {
    if len as usize > proto::MAX_STRING_SIZE {
        return Err("Bad length received".into());
    }
    let raw = wire::read_payload(s, len, Some("export name"))?;
    // A C string: the name ends at the first NUL.
    let name = raw.split(|b| *b == 0).next().unwrap_or(&[]);
    let exp = st
        .exports
        .claim(name)
        .ok_or_else(|| "export not found".to_string())?;
    let mut buf = [0u8; proto::REPLY_EXPORT_NAME_SIZE];
    buf[..8].copy_from_slice(&exp.size.to_be_bytes());
    buf[8..10].copy_from_slice(&export_flags(&exp, st.structured).to_be_bytes());
    let n = if st.no_zeroes { 10 } else { buf.len() };
    wire::write_all(s, &[&buf[..n]]).map_err(|e| format!("write failed: {e}"))?;
    Ok(Outcome::Go(st.client(exp)))
}
