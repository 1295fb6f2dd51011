//! The human monitor (HMP) subset behind `human-monitor-command`.
//!
//! Command-line parsing and output follow QEMU 7.2's monitor/hmp.c and
//! hmp-cmds.c for the commands below; they run the same handler commands as
//! QMP.  Any other command answers as QEMU's HMP does for a command it does
//! not know (`unknown command: 'NAME'`).  Output lines end in CRLF, as QEMU
//! returns them.

use serde_json::Value;

use crate::dispatch::{call, EventSink, Handler, QmpError};
use crate::qobject::QDict;
use crate::{PACKAGE, QEMU_VERSION};

#[derive(Clone, Copy)]
enum Action {
    Help,
    Info,
    Qmp(&'static str),
    InfoStatus,
    InfoVersion,
    InfoName,
    InfoCpus,
    InfoUuid,
    InfoKvm,
    InfoChardev,
    InfoIothreads,
    InfoMemorySizeSummary,
    InfoBlock,
    QemuIo,
}

struct HmpCommand {
    name: &'static str,
    params: &'static str,
    help: &'static str,
    action: Action,
}

/// Top-level commands, sorted as QEMU sorts its table.
const COMMANDS: &[HmpCommand] = &[
    HmpCommand {
        name: "cont|c",
        params: "",
        help: "resume emulation",
        action: Action::Qmp("cont"),
    },
    HmpCommand {
        name: "help|?",
        params: "[cmd]",
        help: "show the help",
        action: Action::Help,
    },
    HmpCommand {
        name: "info",
        params: "[subcommand]",
        help: "show various information about the system state",
        action: Action::Info,
    },
    HmpCommand {
        name: "qemu-io",
        params: "[-d] [device] \"[command]\"",
        help: "run a qemu-io command on a block device\n\t\t\t-d: [device] is a device ID rather than a drive ID or node name",
        action: Action::QemuIo,
    },
    HmpCommand {
        name: "quit|q",
        params: "",
        help: "quit the emulator",
        action: Action::Qmp("quit"),
    },
    HmpCommand {
        name: "stop|s",
        params: "",
        help: "stop emulation",
        action: Action::Qmp("stop"),
    },
    HmpCommand {
        name: "system_powerdown",
        params: "",
        help: "send system power down event",
        action: Action::Qmp("system_powerdown"),
    },
    HmpCommand {
        name: "system_reset",
        params: "",
        help: "reset the system",
        action: Action::Qmp("system_reset"),
    },
    HmpCommand {
        name: "system_wakeup",
        params: "",
        help: "wakeup guest from suspend",
        action: Action::Qmp("system_wakeup"),
    },
];

const INFO_COMMANDS: &[HmpCommand] = &[
    HmpCommand {
        name: "block",
        params: "[-n] [-v] [device]",
        help: "show info of one block device or all block devices (-n: show named nodes; -v: show details)",
        action: Action::InfoBlock,
    },
    HmpCommand { name: "chardev", params: "", help: "show the character devices", action: Action::InfoChardev },
    HmpCommand { name: "cpus", params: "", help: "show infos for each CPU", action: Action::InfoCpus },
    HmpCommand { name: "iothreads", params: "", help: "show iothreads", action: Action::InfoIothreads },
    HmpCommand { name: "kvm", params: "", help: "show KVM information", action: Action::InfoKvm },
    HmpCommand {
        name: "memory_size_summary",
        params: "",
        help: "show the amount of initially allocated and present hotpluggable (if enabled) memory in bytes.",
        action: Action::InfoMemorySizeSummary,
    },
    HmpCommand { name: "name", params: "", help: "show the current VM name", action: Action::InfoName },
    HmpCommand {
        name: "status",
        params: "",
        help: "show the current VM status (running|paused)",
        action: Action::InfoStatus,
    },
    HmpCommand { name: "uuid", params: "", help: "show the current VM UUID", action: Action::InfoUuid },
    HmpCommand { name: "version", params: "", help: "show the version of QEMU", action: Action::InfoVersion },
];

/// `qemu_isspace()`.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// `get_str()`: a word, or a double-quoted string with `\n \r \\ \' \"`
/// escapes; None when there is none (QEMU prints an escape or quote
/// error on stdout first).
fn get_str(s: &str) -> Option<(String, &str)> {
    let p = s.trim_start_matches(|c: char| c.is_ascii() && is_space(c as u8));
    if p.is_empty() {
        return None;
    }
    let Some(body) = p.strip_prefix('"') else {
        let end = p
            .find(|c: char| c.is_ascii() && is_space(c as u8))
            .unwrap_or(p.len());
        return Some((p[..end].to_string(), &p[end..]));
    };
    let mut out = String::new();
    let mut it = body.char_indices();
    while let Some((i, c)) = it.next() {
        match c {
            '"' => return Some((out, &body[i + 1..])),
            '\\' => match it.next().map(|(_, e)| e) {
                Some('n') => out.push('\n'),
                Some('r') => out.push('\r'),
                Some(e @ ('\\' | '\'' | '"')) => out.push(e),
                e => {
                    println!("unsupported escape code: '\\{}'", e.unwrap_or('\0'));
                    return None;
                }
            },
            c => out.push(c),
        }
    }
    println!("unterminated string");
    None
}

/// `hmp_compare_cmd()`: `name` against "a|b" alternatives.
fn compare_cmd(name: &str, list: &str) -> bool {
    list.split('|').any(|alt| alt == name)
}

/// Output collected the way `monitor_printf` does (LF becomes CRLF at the end).
#[derive(Default)]
struct Out(String);

impl Out {
    fn line(&mut self, s: &str) {
        self.0.push_str(s);
        self.0.push('\n');
    }

    fn finish(self) -> String {
        self.0.replace('\n', "\r\n")
    }
}

/// Runs an HMP command line; returns its output (the `human-monitor-command`
/// return string).  Errors are only those QEMU reports as QMP errors (the
/// `cpu-index` check); command failures are printed as HMP prints them.
pub fn run(
    line: &str,
    cpu_index: Option<i64>,
    handler: &mut dyn Handler,
    events: &mut dyn EventSink,
) -> Result<String, QmpError> {
    if let Some(i) = cpu_index {
        // monitor_set_cpu(): the index must name an existing vCPU.
        let cpus = call(handler, "query-cpus-fast", QDict::new(), events).unwrap_or(Value::Null);
        let exists = cpus.as_array().is_some_and(|l| {
            l.iter()
                .any(|c| c.get("cpu-index").and_then(Value::as_i64) == Some(i))
        });
        if !exists {
            return Err(QmpError::generic(
                "Parameter 'cpu-index' expects a CPU number",
            ));
        }
    }
    let mut out = Out::default();
    let mut ctx = Ctx {
        handler,
        events,
        cpu_index,
        out: &mut out,
    };
    ctx.handle(line);
    Ok(out.finish())
}

struct Ctx<'a> {
    handler: &'a mut dyn Handler,
    events: &'a mut dyn EventSink,
    cpu_index: Option<i64>,
    out: &'a mut Out,
}

impl Ctx<'_> {
    /// `handle_hmp_command()` / `monitor_parse_command()`.
    fn handle(&mut self, line: &str) {
        let bytes = line.as_bytes();
        let mut table = COMMANDS;
        let mut p = 0usize;
        loop {
            // get_command_name()
            while p < bytes.len() && is_space(bytes[p]) {
                p += 1;
            }
            if p >= bytes.len() {
                return;
            }
            let start = p;
            while p < bytes.len() && bytes[p] != b'/' && !is_space(bytes[p]) {
                p += 1;
            }
            let name = &line[start..p];
            let Some(cmd) = table.iter().find(|c| compare_cmd(name, c.name)) else {
                self.out.line(&format!("unknown command: '{}'", &line[..p]));
                return;
            };
            let name_end = p;
            while p < bytes.len() && is_space(bytes[p]) {
                p += 1;
            }
            if matches!(cmd.action, Action::Info) && p < bytes.len() {
                table = INFO_COMMANDS;
                continue;
            }
            let rest = &line[p..];
            match cmd.action {
                Action::Help => return self.help(rest),
                Action::InfoBlock => return self.info_block(rest),
                Action::QemuIo => return self.qemu_io(rest, &line[..name_end]),
                Action::Info => return self.help_dump(INFO_COMMANDS, &["info".to_string()], 1),
                _ => {}
            }
            if !rest.is_empty() {
                self.out.line(&format!(
                    "{}: extraneous characters at the end of line",
                    cmd.name
                ));
                self.out.line(&format!(
                    "Try \"help {}\" for more information",
                    &line[..name_end]
                ));
                return;
            }
            return self.exec(cmd.action);
        }
    }

    /// `qemu-io [-d] DEVICE "COMMAND"` (args_type `qdev:-d,device:B,command:s`,
    /// block/monitor/block-hmp-cmds.c `hmp_qemu_io`): parsed as
    /// `monitor_parse_arguments` does; the command runs in the VMM, whose
    /// output goes to the emulator's stdout as QEMU's does.
    fn qemu_io(&mut self, rest: &str, name: &str) {
        let fail = |out: &mut Out, msg: &str| {
            out.line(msg);
            out.line(&format!("Try \"help {name}\" for more information"));
        };
        let mut p = rest.trim_start_matches(|c: char| c.is_ascii() && is_space(c as u8));
        let mut qdev = false;
        if let Some(r) = p.strip_prefix('-') {
            match r.strip_prefix('d') {
                Some(r) => {
                    qdev = true;
                    p = r;
                }
                None => {
                    let c = r.chars().next().unwrap_or('\0');
                    return fail(self.out, &format!("qemu-io: unsupported option -{c}"));
                }
            }
        }
        let Some((device, r)) = get_str(p) else {
            return fail(self.out, "qemu-io: block device name expected");
        };
        let Some((command, r)) = get_str(r) else {
            return fail(self.out, "qemu-io: string expected");
        };
        if !r
            .trim_start_matches(|c: char| c.is_ascii() && is_space(c as u8))
            .is_empty()
        {
            return fail(
                self.out,
                "qemu-io: extraneous characters at the end of line",
            );
        }
        if let Err(e) = self.handler.hmp_qemu_io(qdev, &device, &command) {
            // hmp_handle_error()
            self.out.line(&format!("Error: {}", e.desc));
        }
    }

    /// `info block [-n] [-v] [device]` (block/monitor/block-hmp-cmds.c
    /// `hmp_info_block`): the BlockBackends, or with `-n` the named nodes.
    /// `-v` is accepted; the image details it adds are not printed.
    fn info_block(&mut self, rest: &str) {
        let mut nodes = false;
        let mut device = None;
        for t in rest.split_whitespace() {
            match t {
                "-n" => nodes = true,
                "-v" => {}
                d if device.is_none() && !d.starts_with('-') => device = Some(d.to_string()),
                _ => {
                    self.out
                        .line("info: extraneous characters at the end of line");
                    self.out.line("Try \"help info\" for more information");
                    return;
                }
            }
        }
        let list = |v: Result<Value, QmpError>| match v {
            Ok(Value::Array(l)) => l,
            _ => Vec::new(),
        };
        let mut first = true;
        if !nodes {
            for b in list(self.call("query-block")) {
                let name = b.get("device").and_then(Value::as_str).unwrap_or("");
                if device.as_deref().is_some_and(|d| d != name) {
                    continue;
                }
                if !first {
                    self.out.line("");
                }
                first = false;
                self.print_block_info(Some(&b), b.get("inserted"));
            }
            return;
        }
        for n in list(self.call("query-named-block-nodes")) {
            let name = n.get("node-name").and_then(Value::as_str).unwrap_or("");
            if device.as_deref().is_some_and(|d| d != name) {
                continue;
            }
            if !first {
                self.out.line("");
            }
            first = false;
            self.print_block_info(None, Some(&n));
        }
    }

    /// `print_block_info`.
    fn print_block_info(&mut self, info: Option<&Value>, ins: Option<&Value>) {
        let s = |v: Option<&Value>, k: &str| {
            v.and_then(|v| v.get(k))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let b = |v: Option<&Value>, k: &str| v.and_then(|v| v.get(k)).and_then(Value::as_bool);
        let i = |k: &str| {
            ins.and_then(|v| v.get(k))
                .and_then(Value::as_i64)
                .unwrap_or(0)
        };
        let dev = s(info, "device");
        let mut head = if !dev.is_empty() {
            match ins.and_then(|v| v.get("node-name")).and_then(Value::as_str) {
                Some(n) => format!("{dev} ({n})"),
                None => dev,
            }
        } else {
            let n = s(ins, "node-name");
            if !n.is_empty() {
                n
            } else if !s(info, "qdev").is_empty() {
                s(info, "qdev")
            } else {
                "<anonymous>".into()
            }
        };
        match ins {
            Some(_) => head.push_str(&format!(
                ": {} ({}{}{})",
                s(ins, "file"),
                s(ins, "drv"),
                if b(ins, "ro") == Some(true) {
                    ", read-only"
                } else {
                    ""
                },
                if b(ins, "encrypted") == Some(true) {
                    ", encrypted"
                } else {
                    ""
                }
            )),
            None => head.push_str(": [not inserted]"),
        }
        self.out.line(&head);
        if info.is_some() {
            let q = s(info, "qdev");
            if !q.is_empty() {
                self.out.line(&format!("    Attached to:      {q}"));
            }
            let io = s(info, "io-status");
            if !io.is_empty() && io != "ok" {
                self.out.line(&format!("    I/O status:       {io}"));
            }
            if b(info, "removable") == Some(true) {
                self.out.line(&format!(
                    "    Removable device: {}locked, tray {}",
                    if b(info, "locked") == Some(true) {
                        ""
                    } else {
                        "not "
                    },
                    if b(info, "tray_open") == Some(true) {
                        "open"
                    } else {
                        "closed"
                    }
                ));
            }
        }
        let Some(v) = ins else { return };
        let cache = v.get("cache");
        self.out.line(&format!(
            "    Cache mode:       {}{}{}",
            if b(cache, "writeback") == Some(false) {
                "writethrough"
            } else {
                "writeback"
            },
            if b(cache, "direct") == Some(true) {
                ", direct"
            } else {
                ""
            },
            if b(cache, "no-flush") == Some(true) {
                ", ignore flushes"
            } else {
                ""
            }
        ));
        let backing = s(ins, "backing_file");
        if !backing.is_empty() {
            self.out.line(&format!(
                "    Backing file:     {backing} (chain depth: {})",
                i("backing_file_depth")
            ));
        }
        let dz = s(ins, "detect_zeroes");
        if !dz.is_empty() && dz != "off" {
            self.out.line(&format!("    Detect zeroes:    {dz}"));
        }
        let limits = ["bps", "bps_rd", "bps_wr", "iops", "iops_rd", "iops_wr"];
        if limits.iter().any(|k| i(k) != 0) {
            self.out.line(&format!(
                "    I/O throttling:   bps={} bps_rd={} bps_wr={} bps_max={} bps_rd_max={} bps_wr_max={} iops={} iops_rd={} iops_wr={} iops_max={} iops_rd_max={} iops_wr_max={} iops_size={} group={}",
                i("bps"), i("bps_rd"), i("bps_wr"), i("bps_max"), i("bps_rd_max"), i("bps_wr_max"),
                i("iops"), i("iops_rd"), i("iops_wr"), i("iops_max"), i("iops_rd_max"),
                i("iops_wr_max"), i("iops_size"), s(ins, "group")
            ));
        }
    }

    fn call(&mut self, cmd: &str) -> Result<Value, QmpError> {
        call(self.handler, cmd, QDict::new(), self.events)
    }

    fn exec(&mut self, action: Action) {
        let r: Result<(), QmpError> = (|| {
            match action {
                // Parses its arguments: run from `info_block`.
                Action::InfoBlock => {}
                Action::Qmp(cmd) => {
                    self.call(cmd)?;
                }
                Action::InfoStatus => {
                    let v = self.call("query-status")?;
                    let running = v.get("running").and_then(Value::as_bool).unwrap_or(false);
                    let single = v
                        .get("singlestep")
                        .and_then(Value::as_bool)
                        .unwrap_or(false);
                    let status = v.get("status").and_then(Value::as_str).unwrap_or("");
                    let mut s = format!(
                        "VM status: {}{}",
                        if running { "running" } else { "paused" },
                        if single { " (single step mode)" } else { "" }
                    );
                    if !running && status != "paused" {
                        s.push_str(&format!(" ({status})"));
                    }
                    self.out.line(&s);
                }
                Action::InfoVersion => {
                    let (a, b, c) = QEMU_VERSION;
                    self.out.line(&format!("{a}.{b}.{c}{PACKAGE}"));
                }
                Action::InfoName => {
                    let v = self.call("query-name")?;
                    if let Some(n) = v.get("name").and_then(Value::as_str) {
                        self.out.line(n);
                    }
                }
                Action::InfoCpus => {
                    let cpus = match self.call("query-cpus-fast")? {
                        Value::Array(l) => l,
                        _ => Vec::new(),
                    };
                    // The monitor's current CPU: cpu-index, else the first.
                    let current = self.cpu_index.or_else(|| {
                        cpus.first()
                            .and_then(|c| c.get("cpu-index"))
                            .and_then(Value::as_i64)
                    });
                    for c in &cpus {
                        let idx = c.get("cpu-index").and_then(Value::as_i64).unwrap_or(0);
                        let tid = c.get("thread-id").and_then(Value::as_i64).unwrap_or(0);
                        let active = if Some(idx) == current { '*' } else { ' ' };
                        self.out
                            .line(&format!("{active} CPU #{idx}: thread_id={tid}"));
                    }
                }
                Action::InfoUuid => {
                    let v = self.call("query-uuid")?;
                    self.out
                        .line(v.get("UUID").and_then(Value::as_str).unwrap_or(""));
                }
                Action::InfoKvm => {
                    let v = self.call("query-kvm")?;
                    let s = match (
                        v.get("present").and_then(Value::as_bool),
                        v.get("enabled").and_then(Value::as_bool),
                    ) {
                        (Some(true), Some(true)) => "enabled",
                        (Some(true), _) => "disabled",
                        _ => "not compiled",
                    };
                    self.out.line(&format!("kvm support: {s}"));
                }
                Action::InfoChardev => {
                    if let Value::Array(l) = self.call("query-chardev")? {
                        for c in l {
                            let label = c.get("label").and_then(Value::as_str).unwrap_or("");
                            let file = c.get("filename").and_then(Value::as_str).unwrap_or("");
                            self.out.line(&format!("{label}: filename={file}"));
                        }
                    }
                }
                Action::InfoIothreads => {
                    if let Value::Array(l) = self.call("query-iothreads")? {
                        for t in l {
                            let n = |k: &str| t.get(k).and_then(Value::as_i64).unwrap_or(0);
                            self.out.line(&format!(
                                "{}:",
                                t.get("id").and_then(Value::as_str).unwrap_or("")
                            ));
                            self.out.line(&format!("  thread_id={}", n("thread-id")));
                            self.out
                                .line(&format!("  poll-max-ns={}", n("poll-max-ns")));
                            self.out.line(&format!("  poll-grow={}", n("poll-grow")));
                            self.out
                                .line(&format!("  poll-shrink={}", n("poll-shrink")));
                            self.out
                                .line(&format!("  aio-max-batch={}", n("aio-max-batch")));
                        }
                    }
                }
                Action::InfoMemorySizeSummary => {
                    let v = self.call("query-memory-size-summary")?;
                    self.out.line(&format!(
                        "base memory: {}",
                        v.get("base-memory").and_then(Value::as_u64).unwrap_or(0)
                    ));
                    if let Some(p) = v.get("plugged-memory").and_then(Value::as_u64) {
                        self.out.line(&format!("plugged memory: {p}"));
                    }
                }
                Action::Help | Action::Info | Action::QemuIo => {}
            }
            Ok(())
        })();
        if let Err(e) = r {
            // hmp_handle_error()
            self.out.line(&format!("Error: {}", e.desc));
        }
    }

    /// `help_cmd()`: arguments split on whitespace.
    fn help(&mut self, rest: &str) {
        let args: Vec<String> = rest
            .split(|c: char| c.is_ascii() && is_space(c as u8))
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        self.help_dump(COMMANDS, &args, 0);
    }

    /// `help_cmd_dump()`.
    fn help_dump(&mut self, table: &[HmpCommand], args: &[String], index: usize) {
        if index >= args.len() {
            for c in table {
                self.help_one(c, &args[..index]);
            }
            return;
        }
        for c in table {
            if compare_cmd(&args[index], c.name) {
                if matches!(c.action, Action::Info) {
                    self.help_dump(INFO_COMMANDS, args, index + 1);
                } else {
                    self.help_one(c, &args[..index]);
                }
                return;
            }
        }
        self.out
            .line(&format!("unknown command: '{}'", args[..=index].join(" ")));
    }

    fn help_one(&mut self, c: &HmpCommand, prefix: &[String]) {
        let mut s = String::new();
        for p in prefix {
            s.push_str(p);
            s.push(' ');
        }
        s.push_str(&format!("{} {} -- {}", c.name, c.params, c.help));
        self.out.line(&s);
    }
}
