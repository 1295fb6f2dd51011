//! The qemu-io command language behind HMP `qemu-io` (QEMU 7.2
//! qemu-io-cmds.c): `read`, `write`, `aio_read`, `aio_write`, `aio_flush`,
//! `flush`, `discard`, `length`, and blkdebug's `break`, `remove_break`,
//! `resume`, `wait_break`. As in QEMU the output goes to the emulator's
//! stdout and stderr, not to the monitor; asynchronous requests report
//! when they complete, from the thread that ran them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::error::strerror;
use crate::io::BlockBackend;
use crate::job::nodeio::NodeIo;
use crate::node::{FormatIo, Node};
use crate::stats::AcctType;

/// Where qemu-io's `printf`s and `fprintf(stderr)`s go.
pub trait Sink: Send + Sync {
    fn out(&self, s: &str);
    fn err(&self, s: &str);
}

/// The process's stdout and stderr.
pub struct Stdio;

impl Sink for Stdio {
    fn out(&self, s: &str) {
        use std::io::Write;
        let mut o = std::io::stdout().lock();
        let _ = o.write_all(s.as_bytes());
        let _ = o.flush();
    }
    fn err(&self, s: &str) {
        eprint!("{s}");
    }
}

/// What a command runs on: a BlockBackend (a drive id, or a device's), or
/// a node (by name), through a temporary backend as QEMU makes one.
#[derive(Clone)]
pub struct Target {
    pub node: Arc<Node>,
    pub backend: Option<BlockBackend>,
}

/// `BDRV_REQUEST_MAX_BYTES`.
const REQUEST_MAX: u64 = (i32::MAX as u64) & !511;

/// Asynchronous requests still running (`blk_drain_all` waits for them).
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
static DONE: (Mutex<()>, Condvar) = (Mutex::new(()), Condvar::new());

struct Cmd {
    name: &'static str,
    alt: Option<&'static str>,
    argmin: usize,
    /// None: no limit.
    argmax: Option<usize>,
    args: &'static str,
    oneline: &'static str,
}

const CMDS: &[Cmd] = &[
    Cmd {
        name: "read",
        alt: Some("r"),
        argmin: 2,
        argmax: None,
        args: "[-abCqv] [-P pattern [-s off] [-l len]] off len",
        oneline: "reads a number of bytes at a specified offset",
    },
    Cmd {
        name: "write",
        alt: Some("w"),
        argmin: 2,
        argmax: None,
        args: "[-bcCfnquz] [-P pattern | -s source_file] off len",
        oneline: "writes a number of bytes at a specified offset",
    },
    Cmd {
        name: "aio_read",
        alt: None,
        argmin: 2,
        argmax: None,
        args: "[-Ciqv] [-P pattern] off len [len..]",
        oneline: "asynchronously reads a number of bytes",
    },
    Cmd {
        name: "aio_write",
        alt: None,
        argmin: 2,
        argmax: None,
        args: "[-Cfiquz] [-P pattern] off len [len..]",
        oneline: "asynchronously writes a number of bytes",
    },
    Cmd {
        name: "aio_flush",
        alt: None,
        argmin: 0,
        argmax: Some(0),
        args: "",
        oneline: "completes all outstanding aio requests",
    },
    Cmd {
        name: "flush",
        alt: Some("f"),
        argmin: 0,
        argmax: Some(0),
        args: "",
        oneline: "flush all in-core file state to disk",
    },
    Cmd {
        name: "discard",
        alt: Some("d"),
        argmin: 2,
        argmax: None,
        args: "[-Cq] off len",
        oneline: "discards a number of bytes at a specified offset",
    },
    Cmd {
        name: "length",
        alt: Some("l"),
        argmin: 0,
        argmax: Some(0),
        args: "",
        oneline: "gets the length of the current file",
    },
    Cmd {
        name: "break",
        alt: None,
        argmin: 2,
        argmax: Some(2),
        args: "event tag",
        oneline: "sets a breakpoint on event and tags the stopped request as tag",
    },
    Cmd {
        name: "remove_break",
        alt: None,
        argmin: 1,
        argmax: Some(1),
        args: "tag",
        oneline: "remove a breakpoint by tag",
    },
    Cmd {
        name: "resume",
        alt: None,
        argmin: 1,
        argmax: Some(1),
        args: "tag",
        oneline: "resumes the request tagged as tag",
    },
    Cmd {
        name: "wait_break",
        alt: None,
        argmin: 1,
        argmax: Some(1),
        args: "tag",
        oneline: "waits for the suspension of a request",
    },
];

/// `cvtstr`: a byte count with a binary suffix, `.000` trimmed.
pub fn cvtstr(v: f64) -> String {
    const UNITS: &[(f64, &str)] = &[
        (1152921504606846976.0, " EiB"),
        (1125899906842624.0, " PiB"),
        (1099511627776.0, " TiB"),
        (1073741824.0, " GiB"),
        (1048576.0, " MiB"),
        (1024.0, " KiB"),
    ];
    let (s, suffix) = match UNITS.iter().find(|(u, _)| v >= *u) {
        Some((u, sfx)) => (format!("{:.3}", v / u), *sfx),
        None => (format!("{v:.6}"), " bytes"),
    };
    match s.find(".000") {
        Some(i) => format!("{}{suffix}", &s[..i]),
        None => format!("{s}{suffix}"),
    }
}

/// `timestr(t, 0)`.
fn timestr(t: Duration) -> String {
    let secs = t.as_secs();
    let frac = t.subsec_nanos() as f64 / 1e9;
    if secs == 0 {
        return format!("{frac:05.2} sec");
    }
    format!(
        "{}:{:02}:{:05.2}",
        secs / 3600,
        (secs / 60) % 60,
        (secs % 60) as f64 + frac
    )
}

/// `print_report`.
fn report(
    op: &str,
    t: Duration,
    off: u64,
    count: u64,
    total: u64,
    cnt: u32,
    c_flag: bool,
) -> String {
    let secs = t.as_secs_f64();
    let tdiv = |v: f64| if secs > 0.0 { v / secs } else { 0.0 };
    if c_flag {
        return format!(
            "{total},{cnt},{},{:.3},{:.3}\n",
            // VERBOSE_FIXED_TIME.
            {
                let s = t.as_secs();
                format!(
                    "{}:{:02}:{:05.2}",
                    s / 3600,
                    (s / 60) % 60,
                    (s % 60) as f64 + t.subsec_nanos() as f64 / 1e9
                )
            },
            tdiv(total as f64),
            tdiv(cnt as f64)
        );
    }
    format!(
        "{op} {total}/{count} bytes at offset {off}\n{}, {cnt} ops; {} ({}/sec and {:.4} ops/sec)\n",
        cvtstr(total as f64),
        timestr(t),
        cvtstr(tdiv(total as f64)),
        tdiv(cnt as f64)
    )
}

/// `cvtnum`: `qemu_strtosz` (decimal, `0x` hex, a fraction with a
/// suffix; suffixes b k M G T P E), at most `INT64_MAX`.
fn cvtnum(s: &str) -> Result<u64, String> {
    let bad = || {
        format!("Parsing error: non-numeric argument, or extraneous/unrecognized suffix -- {s}\n")
    };
    let big = || format!("Parsing error: argument too large -- {s}\n");
    let t = s.trim_start();
    let t = t.strip_prefix('+').unwrap_or(t);
    let digits = |t: &str, radix: u32| t.chars().take_while(|c| c.is_digit(radix)).count();
    let n = digits(t, 10);
    if n == 0 {
        return Err(bad());
    }
    let mut val: u64 = t[..n].parse().map_err(|_| big())?;
    let mut rest = &t[n..];
    let mut frac = 0f64;
    if val == 0 && (rest.starts_with('x') || rest.starts_with('X')) {
        let h = &rest[1..];
        let m = digits(h, 16);
        if m == 0 {
            return Err(bad());
        }
        val = u64::from_str_radix(&h[..m], 16).map_err(|_| big())?;
        rest = &h[m..];
        if rest.starts_with('.') {
            return Err(bad());
        }
    } else if let Some(f) = rest.strip_prefix('.') {
        let m = digits(f, 10);
        frac = format!("0.{}", &f[..m]).parse().unwrap_or(0.0);
        rest = &f[m..];
    }
    let mul: u64 = match rest.chars().next() {
        Some('b' | 'B') => 1,
        Some('k' | 'K') => 1 << 10,
        Some('m' | 'M') => 1 << 20,
        Some('g' | 'G') => 1 << 30,
        Some('t' | 'T') => 1 << 40,
        Some('p' | 'P') => 1 << 50,
        Some('e' | 'E') => 1 << 60,
        _ => 0,
    };
    if mul != 0 {
        rest = &rest[1..];
    }
    if !rest.is_empty() || (mul <= 1 && frac != 0.0) {
        return Err(bad());
    }
    let v = val
        .checked_mul(mul.max(1))
        .and_then(|v| v.checked_add((frac * mul.max(1) as f64) as u64))
        .ok_or_else(big)?;
    if v > i64::MAX as u64 {
        return Err(big());
    }
    Ok(v)
}

/// `parse_pattern`.
fn parse_pattern(s: &str) -> Result<u8, String> {
    let bad = || format!("{s} is not a valid pattern byte\n");
    let v = if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        i64::from_str_radix(h, 16).map_err(|_| bad())?
    } else if s.len() > 1 && s.starts_with('0') {
        i64::from_str_radix(&s[1..], 8).map_err(|_| bad())?
    } else {
        s.parse::<i64>().map_err(|_| bad())?
    };
    u8::try_from(v).map_err(|_| bad())
}

/// Options (letter, argument) and operands.
type Parsed = (Vec<(char, String)>, Vec<String>);

/// glibc `getopt` over `args` (argv[1..]) with `spec` ("P:qz"): the
/// options in order and the operands (glibc permutes them to the end).
fn getopt(cmd: &str, args: &[&str], spec: &str) -> Result<Parsed, String> {
    let takes = |c: char| spec.find(c).map(|i| spec[i + 1..].starts_with(':'));
    let mut opts = Vec::new();
    let mut rest = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = args[i];
        i += 1;
        if a == "--" {
            rest.extend(args[i..].iter().map(|s| s.to_string()));
            break;
        }
        if !a.starts_with('-') || a == "-" {
            rest.push(a.to_string());
            continue;
        }
        for (j, c) in a[1..].char_indices() {
            match takes(c) {
                None => return Err(format!("{cmd}: invalid option -- '{c}'\n")),
                Some(false) => opts.push((c, String::new())),
                Some(true) => {
                    let attached = &a[1 + j + c.len_utf8()..];
                    let v = if !attached.is_empty() {
                        attached.to_string()
                    } else if i < args.len() {
                        i += 1;
                        args[i - 1].to_string()
                    } else {
                        return Err(format!("{cmd}: option requires an argument -- '{c}'\n"));
                    };
                    opts.push((c, v));
                    break;
                }
            }
        }
    }
    Ok((opts, rest))
}

fn usage(c: &Cmd) -> String {
    format!("{} {} -- {}\n", c.name, c.args, c.oneline)
}

impl Target {
    fn io(&self) -> NodeIo {
        match &self.backend {
            // Through the backend's route, as QEMU's qemu-io goes through
            // its BlockBackend: a job's copy-before-write or mirror filter
            // sees the write.
            Some(b) => NodeIo::of_route((*b.inner.route()).clone()),
            None => NodeIo::new(&self.node),
        }
    }

    fn size(&self) -> u64 {
        self.node.size().unwrap_or(0)
    }

    /// `blk_check_byte_request`.
    fn check(&self, off: u64, len: u64) -> Result<(), i32> {
        let size = self.size();
        if off > size || size - off < len {
            return Err(libc::EIO);
        }
        Ok(())
    }

    fn account(&self, kind: AcctType, bytes: u64, start: Instant, failed: bool) {
        if let Some(b) = &self.backend {
            b.inner.stats.done(kind, bytes, start, failed, 1);
        }
    }
}

/// `qemuio_command`: runs one command line on `t`.
pub fn run(t: &Target, line: &str, sink: Arc<dyn Sink>) {
    // breakline: split on single spaces, empty words dropped.
    let v: Vec<&str> = line.split(' ').filter(|w| !w.is_empty()).collect();
    let Some(name) = v.first() else { return };
    let Some(c) = CMDS
        .iter()
        .find(|c| c.name == *name || c.alt == Some(*name))
    else {
        sink.err(&format!("command \"{name}\" not found\n"));
        return;
    };
    let n = v.len() - 1;
    if n < c.argmin || c.argmax.is_some_and(|m| n > m) {
        let msg = match c.argmax {
            None => format!(
                "bad argument count {n} to {name}, expected at least {} arguments\n",
                c.argmin
            ),
            Some(m) if m == c.argmin => {
                format!("bad argument count {n} to {name}, expected {m} arguments\n")
            }
            Some(m) => format!(
                "bad argument count {n} to {name}, expected between {} and {m} arguments\n",
                c.argmin
            ),
        };
        sink.err(&msg);
        return;
    }
    let args = &v[1..];
    let r = match c.name {
        "read" => read(t, c, name, args, &*sink),
        "write" => write(t, c, name, args, &*sink),
        "aio_read" | "aio_write" => aio(t, c, name, args, sink.clone()),
        "aio_flush" => {
            let start = Instant::now();
            drain_all();
            t.account(AcctType::Flush, 0, start, false);
            Ok(())
        }
        // flush_f returns blk_flush's result and prints nothing.
        "flush" => {
            let _ = t.io().flush();
            Ok(())
        }
        "discard" => discard(t, c, name, args, &*sink),
        "length" => {
            sink.out(&format!("{}\n", cvtstr(t.size() as f64)));
            Ok(())
        }
        _ => debug_cmd(t, c.name, args, &*sink),
    };
    if let Err(Some((out, err))) = r {
        sink.err(&err);
        sink.out(&out);
    }
}

/// A command's failure: (stdout text, stderr text), or None when it has
/// printed already.
type CmdResult = Result<(), Option<(String, String)>>;

fn out_err(s: String) -> Option<(String, String)> {
    Some((s, String::new()))
}

fn parse_opts(
    c: &Cmd,
    name: &str,
    args: &[&str],
    spec: &str,
) -> Result<Parsed, Option<(String, String)>> {
    getopt(name, args, spec).map_err(|e| Some((usage(c), e)))
}

fn off_len(c: &Cmd, rest: &[String], exact: bool) -> Result<(u64, u64), Option<(String, String)>> {
    if rest.len() < 2 || (exact && rest.len() != 2) {
        return Err(out_err(usage(c)));
    }
    let off = cvtnum(&rest[0]).map_err(out_err)?;
    let len = cvtnum(&rest[1]).map_err(out_err)?;
    Ok((off, len))
}

fn read(t: &Target, c: &Cmd, name: &str, args: &[&str], sink: &dyn Sink) -> CmdResult {
    let (opts, rest) = parse_opts(c, name, args, "bCl:pP:qs:v")?;
    let mut pattern = None;
    let (mut q, mut cf) = (false, false);
    let (mut poff, mut plen) = (0u64, None);
    for (o, v) in &opts {
        match o {
            'P' => pattern = Some(parse_pattern(v).map_err(out_err)?),
            'q' => q = true,
            'C' => cf = true,
            's' => poff = cvtnum(v).map_err(out_err)?,
            'l' => plen = Some(cvtnum(v).map_err(out_err)?),
            _ => {
                return Err(out_err(format!(
                    "ferrovm: qemu-io read -{o} is not supported\n"
                )))
            }
        }
    }
    if rest.len() != 2 {
        return Err(out_err(usage(c)));
    }
    let (off, count) = off_len(c, &rest, true)?;
    if count > REQUEST_MAX {
        return Err(out_err(format!(
            "length cannot exceed {REQUEST_MAX}, given {}\n",
            rest[1]
        )));
    }
    if pattern.is_none() && (plen.is_some() || poff != 0) {
        return Err(out_err(usage(c)));
    }
    let pcount = plen.unwrap_or(count.saturating_sub(poff));
    if poff > count || pcount + poff > count {
        return Err(out_err(
            "pattern verification range exceeds end of read data\n".into(),
        ));
    }
    let mut buf = vec![0xabu8; count as usize];
    let start = Instant::now();
    let r = t
        .check(off, count)
        .and_then(|()| t.io().read(off, &mut buf));
    let el = start.elapsed();
    if let Err(e) = r {
        return Err(out_err(format!("read failed: {}\n", strerror(e))));
    }
    if let Some(p) = pattern {
        let s = &buf[poff as usize..(poff + pcount) as usize];
        if s.iter().any(|b| *b != p) {
            sink.out(&format!(
                "Pattern verification failed at offset {}, {pcount} bytes\n",
                off + poff
            ));
        }
    }
    if !q {
        sink.out(&report("read", el, off, count, count, 1, cf));
    }
    Ok(())
}

fn write(t: &Target, c: &Cmd, name: &str, args: &[&str], sink: &dyn Sink) -> CmdResult {
    let (opts, rest) = parse_opts(c, name, args, "bcCfnpP:qs:uz")?;
    let mut pattern = 0xcdu8;
    let (mut q, mut cf, mut z, mut u, mut pf) = (false, false, false, false, false);
    for (o, v) in &opts {
        match o {
            'P' => {
                pf = true;
                pattern = parse_pattern(v).map_err(out_err)?;
            }
            'q' => q = true,
            'C' => cf = true,
            'z' => z = true,
            'u' => u = true,
            'f' => {}
            _ => {
                return Err(out_err(format!(
                    "ferrovm: qemu-io write -{o} is not supported\n"
                )))
            }
        }
    }
    if rest.len() != 2 {
        return Err(out_err(usage(c)));
    }
    if u && !z {
        return Err(out_err("-u requires -z to be specified\n".into()));
    }
    if z && pf {
        return Err(out_err(
            "Only one of -z, -P, and -s can be specified at the same time\n".into(),
        ));
    }
    let (off, count) = off_len(c, &rest, true)?;
    if count > REQUEST_MAX {
        return Err(out_err(format!(
            "length cannot exceed {REQUEST_MAX} without -n, given {}\n",
            rest[1]
        )));
    }
    let start = Instant::now();
    let io = t.io();
    let r = t.check(off, count).and_then(|()| {
        if z {
            io.write_zeroes(off, count, u)
        } else {
            io.write(off, &vec![pattern; count as usize])
        }
    });
    let el = start.elapsed();
    if let Err(e) = r {
        return Err(out_err(format!("write failed: {}\n", strerror(e))));
    }
    if !q {
        sink.out(&report("wrote", el, off, count, count, 1, cf));
    }
    Ok(())
}

fn discard(t: &Target, c: &Cmd, name: &str, args: &[&str], sink: &dyn Sink) -> CmdResult {
    let (opts, rest) = parse_opts(c, name, args, "Cq")?;
    let q = opts.iter().any(|(o, _)| *o == 'q');
    let cf = opts.iter().any(|(o, _)| *o == 'C');
    if rest.len() != 2 {
        return Err(out_err(usage(c)));
    }
    let (off, count) = off_len(c, &rest, true)?;
    if count > REQUEST_MAX {
        return Err(out_err(format!(
            "length cannot exceed {REQUEST_MAX}, given {}\n",
            rest[1]
        )));
    }
    let start = Instant::now();
    let r = t
        .check(off, count)
        .and_then(|()| t.io().discard(off, count));
    let el = start.elapsed();
    if let Err(e) = r {
        return Err(out_err(format!("discard failed: {}\n", strerror(e))));
    }
    if !q {
        sink.out(&report("discard", el, off, count, count, 1, cf));
    }
    Ok(())
}

/// `aio_read`/`aio_write`: started on a thread of their own; the report
/// (or the failure) is printed when it completes.
fn aio(t: &Target, c: &Cmd, name: &str, args: &[&str], sink: Arc<dyn Sink>) -> CmdResult {
    let write = c.name == "aio_write";
    let spec = if write { "CfiqP:uz" } else { "CiP:qv" };
    let (opts, rest) = parse_opts(c, name, args, spec)?;
    let mut pattern = if write { Some(0xcdu8) } else { None };
    let (mut q, mut cf, mut z, mut u) = (false, false, false, false);
    for (o, v) in &opts {
        match o {
            'P' => pattern = Some(parse_pattern(v).map_err(out_err)?),
            'q' => q = true,
            'C' => cf = true,
            'z' => z = true,
            'u' => u = true,
            'f' => {}
            _ => {
                return Err(out_err(format!(
                    "ferrovm: qemu-io {} -{o} is not supported\n",
                    c.name
                )))
            }
        }
    }
    if rest.len() < 2 {
        return Err(out_err(usage(c)));
    }
    if z && rest.len() != 2 {
        return Err(out_err(
            "-z supports only a single length parameter\n".into(),
        ));
    }
    if u && !z {
        return Err(out_err("-u requires -z to be specified\n".into()));
    }
    let off = cvtnum(&rest[0]).map_err(out_err)?;
    let mut count = 0u64;
    for l in &rest[1..] {
        count += cvtnum(l).map_err(out_err)?;
    }
    let t = t.clone();
    let kind = if write {
        AcctType::Write
    } else {
        AcctType::Read
    };
    IN_FLIGHT.fetch_add(1, Ordering::AcqRel);
    std::thread::spawn(move || {
        let start = Instant::now();
        let io = t.io();
        let mut buf = vec![if write { pattern.unwrap_or(0xcd) } else { 0xab }; count as usize];
        let r = t.check(off, count).and_then(|()| match (write, z) {
            (true, true) => io.write_zeroes(off, count, u),
            (true, false) => io.write(off, &buf),
            (false, _) => io.read(off, &mut buf),
        });
        let el = start.elapsed();
        t.account(kind, count, start, r.is_err());
        match r {
            Err(e) if write => sink.out(&format!("aio_write failed: {}\n", strerror(e))),
            Err(e) => sink.out(&format!("readv failed: {}\n", strerror(e))),
            Ok(()) => {
                if let (false, Some(p)) = (write, pattern) {
                    if buf.iter().any(|b| *b != p) {
                        sink.out(&format!(
                            "Pattern verification failed at offset {off}, {count} bytes\n"
                        ));
                    }
                }
                if !q {
                    let op = if write { "wrote" } else { "read" };
                    sink.out(&report(op, el, off, count, count, 1, cf));
                }
            }
        }
        let _g = DONE.0.lock().unwrap_or_else(|e| e.into_inner());
        IN_FLIGHT.fetch_sub(1, Ordering::AcqRel);
        DONE.1.notify_all();
    });
    Ok(())
}

/// `blk_drain_all`, as far as qemu-io's own requests go.
pub fn drain_all() {
    let g = DONE.0.lock().unwrap_or_else(|e| e.into_inner());
    let _g = DONE
        .1
        .wait_while(g, |_| IN_FLIGHT.load(Ordering::Acquire) > 0)
        .unwrap_or_else(|e| e.into_inner());
}

/// `break`, `remove_break`, `resume`, `wait_break` on the blkdebug node
/// below the target (`bdrv_debug_*`: ENOTSUP without one).
fn debug_cmd(t: &Target, name: &str, args: &[&str], sink: &dyn Sink) -> CmdResult {
    let dbg = crate::blkdebug::find(&t.node);
    let rules = dbg
        .as_ref()
        .and_then(|n| n.driver.as_blkdebug().map(|d| d.rules().clone()));
    let r = match (name, rules) {
        ("wait_break", Some(r)) => {
            r.wait_suspended(args[0]);
            Ok(())
        }
        // bdrv_debug_is_suspended is false without blkdebug: QEMU polls
        // forever; ferrovm says so instead.
        ("wait_break", None) => {
            sink.err("ferrovm: wait_break without a blkdebug node would never return\n");
            return Ok(());
        }
        (_, None) => Err(libc::ENOTSUP),
        ("break", Some(r)) => r.breakpoint(args[0], args[1]),
        ("remove_break", Some(r)) => r.remove_breakpoint(args[0]),
        (_, Some(r)) => r.resume(args[0]),
    };
    let Err(e) = r else { return Ok(()) };
    let msg = match name {
        "break" => format!("Could not set breakpoint: {}\n", strerror(e)),
        "remove_break" => format!("Could not remove breakpoint {}: {}\n", args[0], strerror(e)),
        _ => format!("Could not resume request: {}\n", strerror(e)),
    };
    Err(out_err(msg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_print_as_cvtstr() {
        assert_eq!(cvtstr(512.0), "512 bytes");
        assert_eq!(cvtstr(65536.0), "64 KiB");
        assert_eq!(cvtstr(1536.0), "1.500 KiB");
        assert_eq!(cvtstr(1048576.0), "1 MiB");
        assert_eq!(cvtstr(100.25), "100.250000 bytes");
    }

    #[test]
    fn numbers_parse_as_cvtnum() {
        assert_eq!(cvtnum("512"), Ok(512));
        assert_eq!(cvtnum("64k"), Ok(65536));
        assert_eq!(cvtnum("8M"), Ok(8 << 20));
        assert_eq!(cvtnum("0x200"), Ok(512));
        assert_eq!(cvtnum("1.5k"), Ok(1536));
        assert!(cvtnum("12q")
            .unwrap_err()
            .starts_with("Parsing error: non-numeric"));
        assert!(cvtnum("").is_err());
        assert_eq!(parse_pattern("0x5e"), Ok(0x5e));
        assert_eq!(parse_pattern("1"), Ok(1));
        assert_eq!(
            parse_pattern("256").unwrap_err(),
            "256 is not a valid pattern byte\n"
        );
    }

    #[test]
    fn getopt_as_glibc() {
        let (o, r) = getopt("write", &["-P0x5e", "0", "512"], "P:qz").unwrap();
        assert_eq!(o, vec![('P', "0x5e".to_string())]);
        assert_eq!(r, vec!["0", "512"]);
        let (o, r) = getopt("write", &["0", "-qP", "1", "512"], "P:qz").unwrap();
        assert_eq!(o, vec![('q', String::new()), ('P', "1".to_string())]);
        assert_eq!(r, vec!["0", "512"]);
        assert_eq!(
            getopt("read", &["-x"], "P:").unwrap_err(),
            "read: invalid option -- 'x'\n"
        );
        assert_eq!(
            getopt("read", &["-P"], "P:").unwrap_err(),
            "read: option requires an argument -- 'P'\n"
        );
    }

    #[test]
    fn reports_as_print_report() {
        let r = report("wrote", Duration::from_millis(1), 0, 512, 512, 1, false);
        assert_eq!(
            r,
            "wrote 512/512 bytes at offset 0\n512 bytes, 1 ops; 00.00 sec (500 KiB/sec and 1000.0000 ops/sec)\n"
        );
    }
}
