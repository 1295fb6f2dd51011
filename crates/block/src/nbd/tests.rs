//! Whole conversations in memory, checked against the bytes QEMU 7.2's
//! server sent for the same client bytes (captured with a raw client
//! against `qemu-system-x86_64 -M none` exporting a 1 MiB image).

use std::sync::{Arc, Mutex};

use super::duplex::{converse, Duplex};
use super::export::{Export, MemDisk, StaticExports};
use super::proto::*;

fn exports(writable: bool, desc: Option<&str>) -> StaticExports {
    let disk = MemDisk(Mutex::new(vec![0u8; 1 << 20]));
    StaticExports {
        exports: vec![Arc::new(Export {
            name: "q0".into(),
            description: desc.map(str::to_string),
            size: 1 << 20,
            flags: Export::flags_for(!writable, true),
            min_block: 1,
            io: Arc::new(disk),
        })],
        claims: Mutex::new(0),
    }
}

/// What a client sends.
#[derive(Default)]
struct Client(Vec<u8>);

impl Client {
    fn new(flags: u32) -> Self {
        Client(flags.to_be_bytes().to_vec())
    }
    fn opt(mut self, opt: u32, data: &[u8]) -> Self {
        self.0.extend_from_slice(&OPTS_MAGIC.to_be_bytes());
        self.0.extend_from_slice(&opt.to_be_bytes());
        self.0.extend_from_slice(&(data.len() as u32).to_be_bytes());
        self.0.extend_from_slice(data);
        self
    }
    fn go(self, name: &str) -> Self {
        let p = info_payload(name, &[]);
        self.opt(OPT_GO, &p)
    }
    fn req(mut self, typ: u16, flags: u16, from: u64, len: u32, data: &[u8]) -> Self {
        self.0.extend_from_slice(&REQUEST_MAGIC.to_be_bytes());
        self.0.extend_from_slice(&flags.to_be_bytes());
        self.0.extend_from_slice(&typ.to_be_bytes());
        self.0.extend_from_slice(&1u64.to_be_bytes());
        self.0.extend_from_slice(&from.to_be_bytes());
        self.0.extend_from_slice(&len.to_be_bytes());
        self.0.extend_from_slice(data);
        self
    }
}

fn info_payload(name: &str, reqs: &[u16]) -> Vec<u8> {
    let mut p = (name.len() as u32).to_be_bytes().to_vec();
    p.extend_from_slice(name.as_bytes());
    p.extend_from_slice(&(reqs.len() as u16).to_be_bytes());
    for r in reqs {
        p.extend_from_slice(&r.to_be_bytes());
    }
    p
}

/// An option reply: (option, type, payload).
type OptReply = (u32, u32, Vec<u8>);

/// Splits the server's bytes into the greeting and the option replies,
/// stopping at the first thing that is not one.
fn option_replies(out: &[u8]) -> (Vec<OptReply>, &[u8]) {
    assert_eq!(&out[..18], b"NBDMAGICIHAVEOPT\x00\x03");
    let mut rest = &out[18..];
    let mut v = Vec::new();
    while rest.len() >= 20 && rest[..8] == REP_MAGIC.to_be_bytes() {
        let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        let (opt, typ, len) = (be(&rest[8..]), be(&rest[12..]), be(&rest[16..]) as usize);
        v.push((opt, typ, rest[20..20 + len].to_vec()));
        rest = &rest[20 + len..];
    }
    (v, rest)
}

fn run(c: Client, e: &StaticExports) -> (Vec<u8>, Result<(), String>) {
    let mut d = Duplex::new(c.0);
    let r = converse(&mut d, e);
    (d.output, r)
}

const ERR_INVALID: u32 = REP_ERR_INVALID;

#[test]
fn options_are_answered_as_qemu_does() {
    let e = exports(false, Some("hello"));
    let c = Client::new(3)
        .opt(OPT_LIST, &[])
        .opt(OPT_LIST, b"x")
        .opt(OPT_STRUCTURED_REPLY, &[])
        .opt(OPT_STRUCTURED_REPLY, &[])
        .opt(OPT_STARTTLS, &[])
        .opt(99, b"abc")
        .opt(OPT_INFO, &info_payload("nosuch", &[]))
        .opt(OPT_INFO, &info_payload("q0", &[0, 1, 2, 3, 9]))
        .opt(OPT_ABORT, &[]);
    let (out, r) = run(c, &e);
    assert_eq!(r, Ok(()));
    let (reps, rest) = option_replies(&out);
    assert!(rest.is_empty());
    let want: Vec<(u32, u32, &[u8])> = vec![
        (3, 2, b"\x00\x00\x00\x02q0hello"),
        (3, 1, b""),
        (3, ERR_INVALID, b"option 'list' has unexpected length"),
        (8, 1, b""),
        (8, ERR_INVALID, b"structured reply already negotiated"),
        (5, REP_ERR_POLICY, b"TLS not configured"),
        (99, REP_ERR_UNSUP, b"Unsupported option 99 (<unknown>)"),
        (6, REP_ERR_UNKNOWN, b"export 'nosuch' not present"),
        (6, 3, b"\x00\x01q0"),
        (6, 3, b"\x00\x02hello"),
        (
            6,
            3,
            b"\x00\x03\x00\x00\x00\x01\x00\x00\x10\x00\x02\x00\x00\x00",
        ),
        (6, 3, b"\x00\x00\x00\x00\x00\x00\x00\x10\x00\x00\x05\x8f"),
        (6, 1, b""),
        (2, 1, b""),
    ];
    let got: Vec<(u32, u32, &[u8])> = reps.iter().map(|(o, t, p)| (*o, *t, &p[..])).collect();
    assert_eq!(got, want);
    assert_eq!(*e.claims.lock().unwrap(), 0);
}

#[test]
fn meta_contexts_are_qemus() {
    let e = exports(false, None);
    let q = |qs: &[&str]| {
        let mut p = 2u32.to_be_bytes().to_vec();
        p.extend_from_slice(b"q0");
        p.extend_from_slice(&(qs.len() as u32).to_be_bytes());
        for s in qs {
            p.extend_from_slice(&(s.len() as u32).to_be_bytes());
            p.extend_from_slice(s.as_bytes());
        }
        p
    };
    let c = Client::new(3)
        .opt(OPT_SET_META_CONTEXT, &q(&[]))
        .opt(OPT_STRUCTURED_REPLY, &[])
        .opt(OPT_LIST_META_CONTEXT, &q(&["base:", "qemu:"]))
        .opt(OPT_SET_META_CONTEXT, &q(&["base:allocation"]))
        .opt(OPT_ABORT, &[]);
    let (out, _) = run(c, &e);
    let (reps, _) = option_replies(&out);
    let got: Vec<(u32, u32, &[u8])> = reps.iter().map(|(o, t, p)| (*o, *t, &p[..])).collect();
    assert_eq!(
        got,
        vec![
            (
                10,
                ERR_INVALID,
                &b"request option 'set meta context' when structured reply is not negotiated"[..]
            ),
            (8, 1, b""),
            (9, 4, b"\x00\x00\x00\x00base:allocation"),
            (9, 1, b""),
            (10, 4, b"\x00\x00\x00\x00base:allocation"),
            (10, 1, b""),
            (2, 1, b""),
        ]
    );
}

#[test]
fn negotiation_failures_end_the_connection_with_qemus_message() {
    let e = exports(false, None);
    let fail = |c: Client| run(c, &e).1.unwrap_err();
    assert_eq!(
        fail(Client::new(1).opt(OPT_EXPORT_NAME, b"nosuch")),
        "option negotiation failed: export not found"
    );
    assert_eq!(
        fail(Client::new(0).opt(OPT_LIST, &[])),
        "option negotiation failed: Unsupported option 3 (list)"
    );
    assert_eq!(
        fail(Client::new(8)),
        "option negotiation failed: Unknown client flags 0x8 received"
    );
    assert_eq!(
        fail(Client(vec![0, 0, 0, 3, b'x', b'x'])),
        "option negotiation failed: Failed to read opts magic: Unexpected end-of-file before all data were read"
    );
    let mut c = Client::new(3);
    c.0.extend_from_slice(&[b'x'; 16]);
    assert_eq!(fail(c), "option negotiation failed: Bad magic received");
}

#[test]
fn export_name_replies_with_size_and_flags() {
    let e = exports(true, None);
    let (out, r) = run(Client::new(1).opt(OPT_EXPORT_NAME, b"q0\0junk"), &e);
    assert_eq!(r, Ok(()));
    assert_eq!(out.len(), 18 + 134);
    assert_eq!(&out[18..26], &(1u64 << 20).to_be_bytes());
    assert_eq!(&out[26..28], &0x0d6du16.to_be_bytes());
    assert_eq!(*e.claims.lock().unwrap(), 1);
    let (out, _) = run(Client::new(3).opt(OPT_EXPORT_NAME, b"q0"), &e);
    assert_eq!(out.len(), 18 + 10);
}

/// The transmission replies after GO: (error, handle, data) of simple
/// replies in order.
fn simple_replies(mut rest: &[u8], lens: &[usize]) -> Vec<(u32, Vec<u8>)> {
    let mut v = Vec::new();
    for l in lens {
        assert_eq!(&rest[..4], &SIMPLE_REPLY_MAGIC.to_be_bytes());
        let err = u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]);
        let n = if err == 0 { *l } else { 0 };
        v.push((err, rest[16..16 + n].to_vec()));
        rest = &rest[16 + n..];
    }
    assert!(rest.is_empty(), "{rest:?}");
    v
}

#[test]
fn simple_requests_on_a_read_only_export() {
    let e = exports(false, None);
    let c = Client::new(3)
        .go("q0")
        .req(CMD_READ, 0, 0, 8, &[])
        .req(CMD_WRITE, 0, 0, 4, b"abcd")
        .req(CMD_TRIM, 0, 0, 4, &[])
        .req(CMD_READ, 0, 1 << 20, 1, &[])
        .req(CMD_READ, CMD_FLAG_DF, 0, 1, &[])
        .req(CMD_READ, CMD_FLAG_FUA, 0, 1, &[])
        .req(42, 0, 0, 1, &[])
        .req(CMD_BLOCK_STATUS, 0, 0, 512, &[])
        .req(CMD_FLUSH, 0, 0, 0, &[])
        .req(CMD_CACHE, 0, 0, 4096, &[])
        .req(CMD_READ, 0, 0, 33 << 20, &[])
        .req(CMD_DISC, 0, 0, 0, &[]);
    let (out, r) = run(c, &e);
    assert_eq!(r, Ok(()));
    let (reps, rest) = option_replies(&out);
    assert_eq!(reps.last().map(|r| r.1), Some(REP_ACK));
    let got = simple_replies(rest, &[8, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0]);
    let errs: Vec<u32> = got.iter().map(|g| g.0).collect();
    // QEMU 7.2: 0, 22, 22, 22, 22, 0, 22, 22, 0, 0, 22.
    assert_eq!(errs, [0, 22, 22, 22, 22, 0, 22, 22, 0, 0, 22]);
    assert_eq!(got[0].1, vec![0; 8]);
}

/// Structured replies of one request: (flags, type, payload).
fn chunks(mut rest: &[u8]) -> Vec<(u16, u16, Vec<u8>)> {
    let mut v = Vec::new();
    while !rest.is_empty() {
        assert_eq!(
            &rest[..4],
            &STRUCTURED_REPLY_MAGIC.to_be_bytes(),
            "{rest:?}"
        );
        let flags = u16::from_be_bytes([rest[4], rest[5]]);
        let typ = u16::from_be_bytes([rest[6], rest[7]]);
        let len = u32::from_be_bytes([rest[16], rest[17], rest[18], rest[19]]) as usize;
        v.push((flags, typ, rest[20..20 + len].to_vec()));
        rest = &rest[20 + len..];
    }
    v
}

#[test]
fn structured_requests_on_a_writable_export() {
    let e = exports(true, None);
    let meta = {
        let mut p = 2u32.to_be_bytes().to_vec();
        p.extend_from_slice(b"q0");
        p.extend_from_slice(&1u32.to_be_bytes());
        p.extend_from_slice(&15u32.to_be_bytes());
        p.extend_from_slice(b"base:allocation");
        p
    };
    let c = Client::new(3)
        .opt(OPT_STRUCTURED_REPLY, &[])
        .opt(OPT_SET_META_CONTEXT, &meta)
        .go("q0")
        .req(CMD_WRITE, 0, 4096, 4, b"abcd");
    let (out, _) = run(c, &e);
    let (reps, rest) = option_replies(&out);
    // The export flags with DF: QEMU sent 0x0ded.
    assert!(reps.iter().any(|r| r.2.ends_with(&[0x0d, 0xed])));
    assert_eq!(rest, simple_reply(0, 1));

    let c = Client::new(3)
        .opt(OPT_STRUCTURED_REPLY, &[])
        .opt(OPT_SET_META_CONTEXT, &meta)
        .go("q0")
        .req(CMD_WRITE, 0, 4096, 4, b"abcd")
        // DF: one chunk, however the data lies (the memory disk calls its
        // zero bytes holes).
        .req(CMD_READ, CMD_FLAG_DF, 4094, 8, &[])
        .req(CMD_READ, 0, 0, 0, &[])
        .req(CMD_BLOCK_STATUS, 0, 0, 0, &[])
        .req(CMD_WRITE, 0, (1 << 20) - 2, 4, b"abcd")
        .req(CMD_WRITE_ZEROES, CMD_FLAG_DF, 4096, 4, &[])
        .req(42, 0, 0, 1, &[])
        .req(CMD_BLOCK_STATUS, CMD_FLAG_REQ_ONE, 0, 1 << 20, &[]);
    let (out, r) = run(c, &e);
    assert_eq!(r, Ok(()));
    let (_, rest) = option_replies(&out);
    let rest = &rest[16..]; // the write's simple reply
    let got = chunks(rest);
    let err = |msg: &str| {
        let mut p = 22u32.to_be_bytes().to_vec();
        p.extend_from_slice(&(msg.len() as u16).to_be_bytes());
        p.extend_from_slice(msg.as_bytes());
        (1u16, REPLY_TYPE_ERROR, p)
    };
    let data = {
        let mut p = 4094u64.to_be_bytes().to_vec();
        p.extend_from_slice(b"\0\0abcd\0\0");
        p
    };
    assert_eq!(got[0], (1, REPLY_TYPE_OFFSET_DATA, data));
    assert_eq!(got[1], (1, REPLY_TYPE_NONE, vec![]));
    assert_eq!(got[2], err("need non-zero length"));
    assert_eq!(
        got[3],
        err("operation past EOF; From: 1048574, Len: 4, Size: 1048576")
    );
    assert_eq!(
        got[4],
        err("unsupported flags for command write zeroes (got 0x4)")
    );
    assert_eq!(got[5], err("invalid request type (42) received"));
    // One extent: the zero bytes up to the written ones.
    assert_eq!(
        got[6],
        (
            1,
            REPLY_TYPE_BLOCK_STATUS,
            b"\0\0\0\0\0\0\x10\0\0\0\0\x03".to_vec()
        )
    );
    assert_eq!(got.len(), 7);
}

#[test]
fn sparse_reads_send_holes() {
    let e = exports(true, None);
    let c = Client::new(3)
        .opt(OPT_STRUCTURED_REPLY, &[])
        .go("q0")
        .req(CMD_WRITE, 0, 4096, 4, b"abcd")
        .req(CMD_READ, 0, 0, 8192, &[]);
    let (out, _) = run(c, &e);
    let (_, rest) = option_replies(&out);
    let got = chunks(&rest[16..]);
    let kinds: Vec<(u16, u16)> = got.iter().map(|g| (g.0, g.1)).collect();
    assert_eq!(
        kinds,
        [
            (0, REPLY_TYPE_OFFSET_HOLE),
            (0, REPLY_TYPE_OFFSET_DATA),
            (1, REPLY_TYPE_OFFSET_HOLE)
        ]
    );
    assert_eq!(&got[0].2[8..], &4096u32.to_be_bytes());
    assert_eq!(&got[1].2[8..], b"abcd");
}

#[test]
fn malformed_requests_are_answered_then_the_connection_closes() {
    let e = exports(true, None);
    // A bad magic: QEMU answered EINVAL with the handle as received, then
    // disconnected.
    let mut c = Client::new(3).go("q0");
    c.0.extend_from_slice(&[0u8; 28]);
    let (out, r) = run(c, &e);
    assert_eq!(
        r.unwrap_err(),
        "Disconnect client, due to: Request handling failed in intermediate state"
    );
    let (_, rest) = option_replies(&out);
    assert_eq!(rest, b"gDf\x98\0\0\0\x16\0\0\0\0\0\0\0\0");

    // A write larger than 32 MiB: refused without reading its payload.
    let c =
        Client::new(3)
            .opt(OPT_STRUCTURED_REPLY, &[])
            .go("q0")
            .req(CMD_WRITE, 0, 0, 33 << 20, &[]);
    let (out, r) = run(c, &e);
    assert!(r.unwrap_err().ends_with("intermediate state"));
    let (_, rest) = option_replies(&out);
    let got = chunks(rest);
    assert!(got[0]
        .2
        .ends_with(b"len (34603008 ) is larger than max len (33554432)"));

    // A truncated request.
    let mut c = Client::new(3).go("q0");
    c.0.extend_from_slice(&REQUEST_MAGIC.to_be_bytes());
    let (_, r) = run(c, &e);
    assert_eq!(
        r.unwrap_err(),
        "Disconnect client, due to: Unexpected end-of-file before all bytes were read"
    );
}

#[test]
fn leftover_meta_query_bytes_are_read_as_the_next_option() {
    let e = exports(false, None);
    let mut p = 2u32.to_be_bytes().to_vec();
    p.extend_from_slice(b"q0\0\0\0\0zz");
    let c = Client::new(3)
        .opt(OPT_STRUCTURED_REPLY, &[])
        .opt(OPT_SET_META_CONTEXT, &p)
        .opt(OPT_LIST, &[]);
    let (out, r) = run(c, &e);
    assert_eq!(
        r.unwrap_err(),
        "option negotiation failed: Bad magic received"
    );
    let (reps, _) = option_replies(&out);
    assert_eq!(reps.last().map(|r| (r.0, r.1)), Some((10, REP_ACK)));
}

/// The fuzz target's property on the stable toolchain: recorded client
/// conversations, cut and with bytes changed at random, never panic and
/// always end (xorshift, fixed seed).
#[test]
fn mangled_conversations_never_panic() {
    let meta = {
        let mut p = 2u32.to_be_bytes().to_vec();
        p.extend_from_slice(b"q0\0\0\0\x01\0\0\0\x0fbase:allocation");
        p
    };
    let seeds: Vec<Vec<u8>> = vec![
        Client::new(3)
            .opt(OPT_LIST, &[])
            .opt(OPT_INFO, &info_payload("q0", &[1, 3]))
            .opt(OPT_STRUCTURED_REPLY, &[])
            .opt(OPT_SET_META_CONTEXT, &meta)
            .go("q0")
            .req(CMD_WRITE, 0, 4096, 4, b"abcd")
            .req(CMD_READ, 0, 0, 8192, &[])
            .req(CMD_BLOCK_STATUS, 0, 0, 1 << 20, &[])
            .req(CMD_WRITE_ZEROES, 0, 0, 512, &[])
            .req(CMD_TRIM, CMD_FLAG_FUA, 0, 512, &[])
            .req(CMD_CACHE, 0, 0, 512, &[])
            .0,
        Client::new(1)
            .opt(OPT_EXPORT_NAME, b"q0")
            .req(CMD_READ, 0, 0, 512, &[])
            .req(CMD_FLUSH, 0, 0, 0, &[])
            .0,
    ];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for round in 0..800 {
        let mut b = seeds[round % seeds.len()].clone();
        for _ in 0..(next() % 4 + 1) {
            let i = (next() as usize) % b.len();
            b[i] = next() as u8;
        }
        b.truncate((next() as usize) % (b.len() + 1));
        for writable in [false, true] {
            let e = exports(writable, Some("d"));
            let (out, r) = run(Client(b.clone()), &e);
            assert!(out.starts_with(b"NBDMAGIC"));
            if let Err(m) = r {
                assert!(!m.contains('\n'), "{m}");
            }
        }
    }
}
