//! Differential test against QEMU 7.2 itself: the same byte stream goes to
//! `qemu-system-x86_64 -machine none -S` and to a ferrovm session (backed by
//! `FakeVm`, which answers like that machine), and the transcripts must be
//! identical byte for byte.  Skipped when QEMU is not installed.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use qmp::testing::FakeVm;
use qmp::Session;

/// Before negotiation.
const NEGOTIATION: &[&[u8]] = &[
    b"{\"execute\":\"query-status\"}",
    b"{\"execute\":\"foo\"}",
    b"{\"exec-oob\":\"qmp_capabilities\"}",
    b"{\"execute\":\"qmp_capabilities\",\"arguments\":{\"enable\":[\"bar\"]}}",
    b"{\"execute\":\"qmp_capabilities\",\"arguments\":{\"enable\":[1]}}",
    b"{\"execute\":\"qmp_capabilities\",\"arguments\":{\"enable\":\"oob\"}}",
    b"{\"execute\":\"qmp_capabilities\",\"arguments\":{\"x\":1,\"y\":2,\"zz\":3}}",
    b"{\"execute\":\"qmp_capabilities\",\"id\":\"x\",\"foo\":1}",
    b"[]",
    b"{}",
    b"{\"execute\":1}",
    b"{\"arguments\":[], \"execute\":\"x\"}",
    b"{]\n",
    b"{\"execute\":\"qmp_capabilities\"}",
];

/// After negotiation: malformed JSON, protocol errors, argument errors
/// (recorded from QEMU 7.2 when this test was written, and re-checked live).
const COMMAND_MODE: &[&[u8]] = &[
    b"{]\n",
    b"{\xff",
    b"{\x01",
    b"{'bad \xff",
    b"{'execute': 'nonexistent', 'id':'\n",
    b"%p",
    b"null",
    b"{}",
    b"{ 'execute': true }",
    b"{ 'execute': 'no-such-cmd', 'arguments': [] }",
    b"{ 'execute': 'no-such-cmd', 'extra': true }",
    b"foo ",
    b"1 ",
    b"\"abc\"",
    b"[1,2]",
    b"}",
    b"]",
    b"{\"a\" 1}",
    b"{\"a\":}",
    b"{1:2}",
    b"{\"a\":1,}",
    b"[1,]",
    b"[1 2]",
    b"{\"a\":1 \"b\":2}",
    b"{\"a\":1,\"a\":2}",
    b"{\"execute\":\"query-name\",\"id\":\"\\u0000\"}",
    b"{\"execute\":\"query-name\",\"id\":\"\\uFFFF\"}",
    b"{\"execute\":\"query-name\",\"id\":\"\\uD800\"}",
    b"{\"execute\":\"query-name\",\"id\":\"\\uD83D\\uDE00\"}",
    b"{\"execute\":\"query-name\",\"id\":\"\\uDE00\"}",
    b"{\"execute\":\"query-name\",\"id\":\"\\uD83Dx\"}",
    b"{\"execute\":\"query-name\",\"id\":\"\\u12\"}",
    b"{\"execute\":\"query-name\",\"id\":\"\\x\"}",
    b"{\"execute\":\"query-name\",\"id\":\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"}",
    b"{\"execute\":\"query-name\",\"id\":\"\xc0\x80\"}",
    b"{\"execute\":\"query-name\",\"id\":\"\xc0\x81\"}",
    b"{\"execute\":\"query-name\",\"id\":\"\xed\xa0\x80\"}",
    b"{\"execute\":\"query-name\",\"id\":\"\xef\xbf\xbe\"}",
    b"{\"execute\":\"query-name\",\"id\":\"\x80\"}",
    b"{\"execute\":\"query-name\",\"id\":\"\xf4\x90\x80\x80\"}",
    b"{\"execute\":\"query-name\",\"id\":\"\xc3\"}",
    b"{\"execute\":\"query-name\",\"id\":\"a\\/b\\'c'd\\b\\f\\n\\r\\t\x7f\"}",
    b"{'execute':'query-name','id':'it\"s'}",
    b"{\"execute\":\"query-name\",\"id\":01}",
    b"{\"execute\":\"query-name\",\"id\":-}",
    b"{\"execute\":\"query-name\",\"id\":1.}",
    b"{\"execute\":\"query-name\",\"id\":1e}",
    b"{\"execute\":\"query-name\",\"id\":1E+2}",
    b"{\"execute\":\"query-name\",\"id\":-1.5e-3}",
    b"{\"execute\":\"query-name\",\"id\":1e400}",
    b"{\"execute\":\"query-name\",\"id\":123456789012345678901234567890}",
    b"{\"execute\":\"query-name\",\"id\":1.7976931348623157e308}",
    b"{\"execute\":\"query-name\",\"id\":5e-324}",
    b"{\"execute\":\"query-name\",\"id\":1e-400}",
    b"{\"execute\":\"query-name\",\"id\":0.5}",
    b"{\"execute\":\"query-name\",\"id\":1e16}",
    b"{\"execute\":\"query-name\",\"id\":1e17}",
    b"{\"execute\":\"query-name\",\"id\":123456789.125}",
    b"{\"execute\":\"query-name\",\"id\":0.0001}",
    b"{\"execute\":\"query-name\",\"id\":0.00001}",
    b"{\"execute\":\"query-name\",\"id\":true}",
    b"{\"execute\":\"query-name\",\"id\":TRUE}",
    b"{\"execute\":\"query-name\",\"id\":nul}",
    b"{\"execute\":\"query-name\",\"id\":[]}",
    b"{\"execute\":\"query-name\",\"id\":{}}",
    b"{\"execute\":\"query-name\",\"id\":\"x\"} {\"execute\":\"query-name\",\"id\":\"y\"}",
    b"{\"execute\":\"query-name\",",
    b"\"id\":\"split\"}",
    b"{\"execute\":\"query-name\",\"id\":\"a\tb\"}",
    b"  \t\r\n  ",
    b"{\"execute\":\"query-name\",\"id\":\"\xfe\"}",
    b"\x00",
    b"\xff",
    b"abc\xff{\"execute\":\"query-name\",\"id\":1}",
    b"x{\"execute\":\"query-name\",\"id\":2}",
    b"@@@ {\"execute\":\"query-name\",\"id\":3}",
    b"[[[[]]]",
    b"]]]]",
    b"{\"execute\":\"query-name\",\"id\":\"a\",\"id\":\"b\"}",
    b"{\"execute\":\"query-name\",\"execute\":\"query-status\"}",
    b"{\"exec-oob\":\"query-name\",\"execute\":\"query-status\"}",
    b"{\"execute\":\"query-name\",\"id\":1, \"arguments\":{}, \"control\":1}",
    b"{\"execute\":\"query-name\",\"id\":%d}",
    b"{'execute':'query-name','id':'%s'}",
    b"{\"execute\":\"query-name\",\"id\":-0}",
    b"{\"execute\":\"query-name\",\"id\":-9223372036854775808}",
    b"{\"execute\":\"query-name\",\"id\":9223372036854775807}",
    b"{\"execute\":\"query-name\",\"id\":9223372036854775808}",
    b"{\"execute\":\"query-name\",\"id\":\"\\u00e9\\u20ac\\u0001\\u001f\\u007f\"}",
    b"{\"execute\":\"query-status\",\"arguments\":{\"a\":1,\"b\":2,\"c\":3,\"d\":4,\"e\":5,\"f\":6,\"g\":7,\"h\":8,\"i\":9}}",
    b"{\"execute\":\"qom-list\",\"arguments\":{\"path\":\"/\",\"x\":1,\"abc\":2}}",
    b"{\"execute\":\"qom-list\",\"arguments\":{\"path\":1}}",
    b"{\"execute\":\"qom-get\",\"arguments\":{\"path\":\"/\"}}",
    b"{\"execute\":\"qom-get\",\"arguments\":{\"path\":\"/machine\",\"property\":\"type\"}}",
    b"{\"execute\":\"human-monitor-command\",\"arguments\":{\"command-line\":\"info status\",\"cpu-index\":1.5}}",
    b"{\"execute\":\"human-monitor-command\",\"arguments\":{\"command-line\":\"info status\"}}",
    b"{\"execute\":\"human-monitor-command\",\"arguments\":{\"command-line\":\"  info   status x\"}}",
    b"{\"execute\":\"human-monitor-command\",\"arguments\":{\"command-line\":\"foo bar\"}}",
    b"{\"execute\":\"human-monitor-command\",\"arguments\":{\"command-line\":\"help stop\"}}",
    b"{\"execute\":\"set-action\",\"arguments\":{\"reboot\":\"foo\"}}",
    b"{\"execute\":\"set-action\",\"arguments\":{\"reboot\":1}}",
    b"{\"execute\":\"query-kvm\"}",
    b"{\"execute\":\"query-target\"}",
    b"{\"execute\":\"query-iothreads\"}",
    b"{\"execute\":\"query-cpus-fast\"}",
    b"{\"execute\":\"query-hotpluggable-cpus\"}",
    b"{\"execute\":\"query-current-machine\"}",
    b"{\"execute\":\"system_wakeup\"}",
    b"{\"execute\":\"inject-nmi\"}",
    b"{\"execute\":\"query-status\",\"arguments\":{},\"id\":[1,{\"z\":null}]}",
    b"{\"execute\":\"qmp_capabilities\"}",
    b"[[[[]]]]]]]",
];

/// Argument errors of the block, PCI and qdev commands (QEMU's qobject input
/// visitor on their QAPI declarations: unions, alternates, struct bases).
const BLOCK_PCI_QDEV: &[&[u8]] = &[
    br#"{"execute":"block_resize","arguments":{"size":"x"}}"#,
    br#"{"execute":"block_resize","arguments":{}}"#,
    br#"{"execute":"block_resize","arguments":{"device":"d","size":1,"x":1}}"#,
    br#"{"execute":"block_resize","arguments":{"device":1,"size":1}}"#,
    br#"{"execute":"block_resize","arguments":{"size":1.5}}"#,
    br#"{"execute":"block_resize","arguments":{"size":18446744073709551615}}"#,
    br#"{"execute":"block_resize","arguments":{"node-name":null,"size":1}}"#,
    br#"{"execute":"block_resize","arguments":{"device":"nope","size":1}}"#,
    br#"{"execute":"query-blockstats","arguments":{"query-nodes":"yes"}}"#,
    br#"{"execute":"query-blockstats","arguments":{"query-nodes":true,"x":1}}"#,
    br#"{"execute":"query-named-block-nodes","arguments":{"flat":1}}"#,
    br#"{"execute":"query-block","arguments":{"x":1}}"#,
    br#"{"execute":"query-pci","arguments":{"a":1}}"#,
    br#"{"execute":"device_del","arguments":{}}"#,
    br#"{"execute":"device_del","arguments":{"id":1}}"#,
    br#"{"execute":"device_del","arguments":{"id":"x","y":1}}"#,
    br#"{"execute":"device_del","arguments":{"id":"nope"}}"#,
    br#"{"execute":"device_add","arguments":{}}"#,
    br#"{"execute":"device_add","arguments":{"driver":"nonexist","x":1}}"#,
];

/// Requests with many unexpected arguments: which one QEMU names depends
/// on glib's hash-table layout (growth, tombstones, shrinking).
fn unexpected_argument_cases() -> Vec<Vec<u8>> {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut out = Vec::new();
    for i in 0..300 {
        let nkeys = (next() % 40) as usize + 1;
        let mut keys: Vec<String> = Vec::new();
        while keys.len() < nkeys {
            let len = (next() % 12) as usize + 1;
            let k: String = (0..len)
                .map(|_| (b'a' + (next() % 26) as u8) as char)
                .collect();
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
        let body: Vec<String> = keys.iter().map(|k| format!("\"{k}\":1")).collect();
        let (cmd, extra) = match i % 3 {
            0 => ("query-status", ""),
            1 => ("qom-list", "\"path\":\"/\","),
            _ => ("qom-get", "\"property\":\"type\",\"path\":\"/machine\","),
        };
        out.push(
            format!(
                "{{\"execute\":\"{cmd}\",\"arguments\":{{{extra}{}}}}}",
                body.join(",")
            )
            .into_bytes(),
        );
    }
    out
}

struct Qemu(Child, std::path::PathBuf);

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_file(&self.1);
    }
}

fn start_qemu() -> Option<(Qemu, UnixStream)> {
    let path = std::env::temp_dir().join(format!("qmp-diff-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let child = Command::new("qemu-system-x86_64")
        .args([
            "-S",
            "-display",
            "none",
            "-nodefaults",
            "-machine",
            "none",
            "-qmp",
        ])
        .arg(format!("unix:{},server=on,wait=off", path.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let q = Qemu(child, path.clone());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(s) = UnixStream::connect(&path) {
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            return Some((q, s));
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends `data` plus a sentinel (after a 0xFF byte, which resets QEMU's
/// lexer from any state) and reads QEMU's output up to the sentinel reply.
fn qemu_transcript(s: &mut UnixStream, data: &[u8], tag: &str) -> String {
    let sentinel = format!("\u{ff}{{\"execute\":\"qmp_capabilities\",\"id\":\"{tag}\"}}");
    s.write_all(data).unwrap();
    let mut bytes = sentinel.into_bytes();
    // The 0xFF must be a raw byte, not UTF-8.
    bytes.splice(0..2, [0xffu8]);
    s.write_all(&bytes).unwrap();
    let end = format!("\"id\": \"{tag}\"");
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !String::from_utf8_lossy(&out).contains(&end) {
        assert!(
            Instant::now() < deadline,
            "QEMU did not answer: {}",
            String::from_utf8_lossy(&out)
        );
        let mut b = [0u8; 65536];
        if let Ok(n) = s.read(&mut b) {
            out.extend_from_slice(&b[..n]);
        }
    }
    let text = String::from_utf8(out).unwrap();
    // Drop the sentinel's stray-byte error and its reply.
    let lines: Vec<&str> = text.split_inclusive("\r\n").collect();
    lines[..lines.len() - 2].concat()
}

fn ours(session: &mut Session, vm: &mut FakeVm, data: &[u8]) -> String {
    session.process(data, vm)
}

/// The commands and events of the block, PCI and qdev modules, whose
/// query-qmp-schema entries are compared with QEMU's.
const SCHEMA_COMPARED: &[&str] = &[
    "query-block",
    "query-blockstats",
    "query-named-block-nodes",
    "block_resize",
    "BLOCK_IO_ERROR",
    "query-pci",
    "device_add",
    "device_del",
    "DEVICE_DELETED",
];

/// BlockdevOptions declares these drivers' options only (the other
/// branches are the empty object): blockdev-add's top-level variants are
/// compared for these cases.
const BLOCKDEV_DRIVERS_DECLARED: &[&str] = &["file", "host_cdrom", "host_device", "qcow2", "raw"];

/// An entity's SchemaInfo with the masked type names resolved (they are
/// numbered differently on each side): a text naming every member, type,
/// optionality, feature, tag and variant, recursion cut at a type already
/// being expanded.  `keep_cases` filters the variants of the top-level
/// argument type.
fn schema_shape(
    by_name: &std::collections::HashMap<String, serde_json::Value>,
    name: &str,
    stack: &mut Vec<String>,
    keep_cases: Option<&[&str]>,
) -> String {
    let e = &by_name[name];
    let s = |k: &str| e[k].as_str().unwrap_or("").to_string();
    let feats = match e.get("features") {
        Some(f) => format!(" features={f}"),
        None => String::new(),
    };
    match e["meta-type"].as_str().unwrap() {
        "builtin" => name.to_string(),
        "array" => format!(
            "[{}]",
            schema_shape(by_name, &s("element-type"), stack, None)
        ),
        _ if stack.iter().any(|n| n == name) => {
            format!("<rec {}>", stack.iter().position(|n| n == name).unwrap())
        }
        meta => {
            stack.push(name.to_string());
            let list = |k: &str| e[k].as_array().cloned().unwrap_or_default();
            let out = match meta {
                "enum" => format!(
                    "enum{feats}({})",
                    list("members")
                        .iter()
                        .map(|m| m.to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                ),
                "alternate" => format!(
                    "alternate{feats}({})",
                    list("members")
                        .iter()
                        .map(|m| schema_shape(by_name, m["type"].as_str().unwrap(), stack, None))
                        .collect::<Vec<_>>()
                        .join("|")
                ),
                "object" => {
                    let members: Vec<String> = list("members")
                        .iter()
                        .map(|m| {
                            format!(
                                "{}{}:{}{}",
                                m["name"].as_str().unwrap(),
                                if m.get("default").is_some() { "?" } else { "" },
                                schema_shape(by_name, m["type"].as_str().unwrap(), stack, None),
                                m.get("features").map(|f| f.to_string()).unwrap_or_default()
                            )
                        })
                        .collect();
                    let mut o = format!("object{feats}{{{}}}", members.join(", "));
                    if let Some(tag) = e.get("tag") {
                        let vs: Vec<String> = list("variants")
                            .iter()
                            .filter(|v| {
                                keep_cases.is_none_or(|k| k.contains(&v["case"].as_str().unwrap()))
                            })
                            .map(|v| {
                                format!(
                                    "{}:{}",
                                    v["case"].as_str().unwrap(),
                                    schema_shape(by_name, v["type"].as_str().unwrap(), stack, None)
                                )
                            })
                            .collect();
                        o.push_str(&format!(" tag={tag} variants{{{}}}", vs.join(", ")));
                    }
                    o
                }
                "command" => format!(
                    "command{feats} args={} ret={} oob={}",
                    schema_shape(by_name, &s("arg-type"), stack, keep_cases),
                    schema_shape(by_name, &s("ret-type"), stack, None),
                    e.get("allow-oob").is_some()
                ),
                "event" => format!(
                    "event{feats} args={}",
                    schema_shape(by_name, &s("arg-type"), stack, None)
                ),
                other => panic!("unknown meta-type {other}"),
            };
            stack.pop();
            out
        }
    }
}

fn schema_by_name(v: &serde_json::Value) -> std::collections::HashMap<String, serde_json::Value> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap().to_string(), e.clone()))
        .collect()
}

/// query-qmp-schema entries of the block, PCI and qdev commands and events
/// have QEMU's shape (same members, types, optionality, features).
fn compare_schema_with_qemu(s: &mut UnixStream) {
    let reply = qemu_transcript(s, b"{\"execute\":\"query-qmp-schema\"}", "schema");
    let theirs: serde_json::Value = serde_json::from_str(reply.trim_end()).unwrap();
    let theirs = schema_by_name(&theirs["return"]);
    let ours: serde_json::Value =
        serde_json::from_str(&qmp::schema().introspect().to_json()).unwrap();
    let ours = schema_by_name(&ours);
    for name in SCHEMA_COMPARED {
        let keep = (*name == "blockdev-add").then_some(BLOCKDEV_DRIVERS_DECLARED);
        let t = schema_shape(&theirs, name, &mut Vec::new(), keep);
        let o = schema_shape(&ours, name, &mut Vec::new(), keep);
        assert_eq!(o, t, "{name}: query-qmp-schema entry differs from QEMU's");
    }
    eprintln!("schema: {} entries of QEMU's shape", SCHEMA_COMPARED.len());
}

#[test]
fn byte_identical_to_qemu() {
    // QEMU is the oracle: `make test` installs Debian's qemu-system-x86.
    let Some((_qemu, mut s)) = start_qemu() else {
        panic!("qemu-system-x86_64 is missing or did not start: install Debian's qemu-system-x86 (make test does)");
    };
    let mut greeting = [0u8; 4096];
    let n = s.read(&mut greeting).unwrap();
    assert!(greeting[..n].starts_with(b"{\"QMP\": {\"version\": {\"qemu\": {\"micro\": "));

    let mut session = Session::new();
    let mut vm = FakeVm::default();
    // The sentinel is also fed to our side so both streams stay identical.
    let sentinel = |tag: &str| {
        let mut b = vec![0xffu8];
        b.extend_from_slice(
            format!("{{\"execute\":\"qmp_capabilities\",\"id\":\"{tag}\"}}").as_bytes(),
        );
        b
    };
    let generated = unexpected_argument_cases();
    let generated: Vec<&[u8]> = generated.iter().map(Vec::as_slice).collect();
    for (tag, cases) in [
        ("neg", NEGOTIATION),
        ("cmd", COMMAND_MODE),
        ("blk", BLOCK_PCI_QDEV),
        ("gen", &generated[..]),
    ] {
        let data: Vec<u8> = cases.concat();
        let theirs = qemu_transcript(&mut s, &data, tag);
        let mine = ours(&mut session, &mut vm, &data);
        ours(&mut session, &mut vm, &sentinel(tag));
        assert!(
            theirs.matches("\r\n").count() > cases.len() / 2,
            "{tag}: {theirs}"
        );
        eprintln!(
            "{tag}: {} reply lines identical",
            theirs.matches("\r\n").count()
        );
        if theirs != mine {
            let t: Vec<&str> = theirs.split("\r\n").collect();
            let m: Vec<&str> = mine.split("\r\n").collect();
            for (i, (a, b)) in t.iter().zip(m.iter()).enumerate() {
                assert_eq!(a, b, "{tag} line {i} differs");
            }
            assert_eq!(t.len(), m.len(), "{tag}: line counts differ");
        }
    }
    compare_schema_with_qemu(&mut s);
}
