//! One client connection's protocol state, free of I/O: bytes in, lines out.
//!
//! Reproduces QEMU 7.2's monitor/qmp.c and qapi/qmp-dispatch.c: greeting,
//! capabilities negotiation, command mode, `id` echo, `exec-oob`, and the
//! exact errors for malformed requests.

use serde_json::Value;

use crate::dispatch::{to_args, Event, EventSink, Handler, QmpError};
use crate::json_stream::{JsonStream, StreamItem};
use crate::qobject::{QDict, QObject};
use crate::schema::{schema, TypeRef};
use crate::{hmp, PACKAGE, QEMU_VERSION};

/// Where a session is in the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Before `qmp_capabilities`: only that command exists, no events.
    Negotiation,
    /// After negotiation; `oob` tells whether the client enabled `oob`.
    Command { oob: bool },
}

/// The `query-version` value (also in the greeting).
pub fn version_info() -> QObject {
    let mut q = QDict::new();
    q.insert("major", QObject::Int(QEMU_VERSION.0));
    q.insert("minor", QObject::Int(QEMU_VERSION.1));
    q.insert("micro", QObject::Int(QEMU_VERSION.2));
    let mut v = QDict::new();
    v.insert("qemu", QObject::Dict(q));
    v.insert("package", QObject::Str(PACKAGE.into()));
    QObject::Dict(v)
}

/// The greeting line (with CRLF).
pub fn greeting() -> String {
    let mut qmp = QDict::new();
    qmp.insert("version", version_info());
    qmp.insert(
        "capabilities",
        QObject::List(vec![QObject::Str("oob".into())]),
    );
    let mut g = QDict::new();
    g.insert("QMP", QObject::Dict(qmp));
    QObject::Dict(g).to_json() + "\r\n"
}

/// Extra facts a session needs from its monitor.
#[derive(Clone, Copy, Debug, Default)]
pub struct SessionInfo {
    /// The monitor offers `oob` (QEMU offers it on socket monitors).
    pub oob_offered: bool,
}

/// Per-connection protocol state.
pub struct Session {
    stream: JsonStream,
    phase: Phase,
    info: SessionInfo,
}

impl Default for Session {
    fn default() -> Self {
        Self::new()
    }
}

impl Session {
    pub fn new() -> Self {
        Session {
            stream: JsonStream::new(),
            phase: Phase::Negotiation,
            info: SessionInfo { oob_offered: true },
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Whether events are delivered to this session.
    pub fn negotiated(&self) -> bool {
        matches!(self.phase, Phase::Command { .. })
    }

    /// Feeds received bytes.
    pub fn feed(&mut self, data: &[u8]) {
        self.stream.feed(data);
    }

    /// The next complete request (or input error), if any.
    pub fn next_request(&mut self) -> Option<StreamItem> {
        self.stream.next_item()
    }

    /// Number of parsed requests waiting.
    pub fn pending_requests(&self) -> usize {
        self.stream.pending()
    }

    /// Handles one request and returns the reply line (with CRLF).  Events
    /// the command causes go to `events`; the caller must deliver them to
    /// every negotiated session *before* writing the reply.
    pub fn handle(
        &mut self,
        item: StreamItem,
        handler: &mut dyn Handler,
        events: &mut dyn EventSink,
    ) -> String {
        let (id, result) = match item {
            Err(desc) => (None, Err(QmpError::generic(desc))),
            Ok(req) => self.dispatch(&req, handler, events),
        };
        let mut rsp = QDict::new();
        match result {
            Ok(v) => rsp.insert("return", v),
            Err(e) => rsp.insert("error", e.to_qobject()),
        }
        if let Some(id) = id {
            rsp.insert("id", id);
        }
        QObject::Dict(rsp).to_json() + "\r\n"
    }

    /// Convenience for tests and tools: feed bytes, handle every complete
    /// request, return events and replies in the order a client sees them.
    pub fn process(&mut self, data: &[u8], handler: &mut dyn Handler) -> String {
        self.feed(data);
        let mut out = String::new();
        while let Some(item) = self.next_request() {
            let mut events: Vec<Event> = Vec::new();
            let reply = self.handle(item, handler, &mut events);
            if self.negotiated() {
                for e in &events {
                    out.push_str(&e.to_json());
                    out.push_str("\r\n");
                }
            }
            out.push_str(&reply);
        }
        out
    }

    /// `qmp_dispatch()` plus monitor_qmp_dispatch()'s negotiation-mode
    /// rewrite of CommandNotFound.
    fn dispatch(
        &mut self,
        req: &QObject,
        handler: &mut dyn Handler,
        events: &mut dyn EventSink,
    ) -> (Option<QObject>, Result<QObject, QmpError>) {
        let negotiating = self.phase == Phase::Negotiation;
        let (id, mut result) = self.dispatch_inner(req, handler, events);
        if negotiating {
            if let Err(e) = &mut result {
                if e.class == crate::ErrorClass::CommandNotFound {
                    e.desc = "Expecting capabilities negotiation with 'qmp_capabilities'".into();
                }
            }
        }
        (id, result)
    }

    fn dispatch_inner(
        &mut self,
        req: &QObject,
        handler: &mut dyn Handler,
        events: &mut dyn EventSink,
    ) -> (Option<QObject>, Result<QObject, QmpError>) {
        let Some(dict) = req.as_dict() else {
            return (
                None,
                Err(QmpError::generic("QMP input must be a JSON object")),
            );
        };
        let id = dict.get("id").cloned();
        let allow_oob = self.phase == Phase::Command { oob: true };
        // qmp_dispatch_check_obj(): members in QDict iteration order.
        let mut exec_key: Option<&str> = None;
        for (k, v) in dict.qemu_order() {
            match k.as_str() {
                "execute" | "exec-oob" if k == "execute" || allow_oob => {
                    if !matches!(v, QObject::Str(_)) {
                        return (
                            id,
                            Err(QmpError::generic(format!(
                                "QMP input member '{k}' must be a string"
                            ))),
                        );
                    }
                    if let Some(prev) = exec_key {
                        return (
                            id,
                            Err(QmpError::generic(format!(
                                "QMP input member '{k}' clashes with '{prev}'"
                            ))),
                        );
                    }
                    exec_key = Some(k);
                }
                "arguments" => {
                    if !matches!(v, QObject::Dict(_)) {
                        return (
                            id,
                            Err(QmpError::generic(
                                "QMP input member 'arguments' must be an object",
                            )),
                        );
                    }
                }
                "id" => {}
                _ => {
                    return (
                        id,
                        Err(QmpError::generic(format!(
                            "QMP input member '{k}' is unexpected"
                        ))),
                    )
                }
            }
        }
        let Some(exec_key) = exec_key else {
            return (
                id,
                Err(QmpError::generic("QMP input lacks member 'execute'")),
            );
        };
        let oob = exec_key == "exec-oob";
        let name = dict
            .get(exec_key)
            .and_then(QObject::as_str)
            .unwrap_or_default();
        let s = schema();
        let cmd = match s.command(name) {
            Some(c) if !(self.phase == Phase::Negotiation && name != "qmp_capabilities") => c,
            _ => {
                return (
                    id,
                    Err(QmpError::command_not_found(format!(
                        "The command {name} has not been found"
                    ))),
                )
            }
        };
        if oob && !cmd.allow_oob {
            return (
                id,
                Err(QmpError::generic(format!(
                    "The command {name} does not support OOB"
                ))),
            );
        }
        let empty = QDict::new();
        let args = dict
            .get("arguments")
            .and_then(QObject::as_dict)
            .unwrap_or(&empty);
        let args = match s.validate_args(cmd, args) {
            Ok(a) => a,
            Err(desc) => return (id, Err(QmpError::generic(desc))),
        };
        let result = self
            .run(name, &args, handler, events)
            .map(|v| match &cmd.ret_type {
                None => QObject::Dict(QDict::new()),
                Some(TypeRef::Builtin(crate::schema::Builtin::Any)) => v,
                Some(t) => s.conform(&v, t).unwrap_or_else(|e| {
                    log::error!(
                        "QMP command {name} returned a value that does not match the schema: {e}"
                    );
                    v
                }),
            });
        (id, result)
    }

    fn run(
        &mut self,
        name: &str,
        args: &QDict,
        handler: &mut dyn Handler,
        events: &mut dyn EventSink,
    ) -> Result<QObject, QmpError> {
        match name {
            "qmp_capabilities" => {
                if self.phase != Phase::Negotiation {
                    return Err(QmpError::command_not_found(
                        "Capabilities negotiation is already complete, command ignored",
                    ));
                }
                let mut oob = false;
                if let Some(QObject::List(caps)) = args.get("enable") {
                    for c in caps {
                        if c.as_str() == Some("oob") {
                            if !self.info.oob_offered {
                                return Err(QmpError::generic(
                                    "Capability 'oob' not available with this monitor",
                                ));
                            }
                            oob = true;
                        }
                    }
                }
                self.phase = Phase::Command { oob };
                Ok(QObject::Dict(QDict::new()))
            }
            "query-version" => Ok(version_info()),
            "query-commands" => Ok(schema().query_commands()),
            "query-qmp-schema" => Ok(schema().introspect()),
            "human-monitor-command" => {
                let line = args
                    .get("command-line")
                    .and_then(QObject::as_str)
                    .unwrap_or_default();
                let cpu = args.get("cpu-index").and_then(QObject::as_i64);
                hmp::run(line, cpu, handler, events).map(QObject::Str)
            }
            _ => handler
                .execute(name, &to_args(args), events)
                .map(|v: Value| QObject::from(&v)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakeVm;

    /// Replaces event timestamps with S/U so transcripts compare.
    fn norm(s: &str) -> String {
        let mut out = String::new();
        for line in s.split_inclusive("\r\n") {
            if let Some(rest) = line.strip_prefix("{\"timestamp\": {\"seconds\": ") {
                let after = &rest[rest.find('}').unwrap()..];
                out.push_str("{\"timestamp\": {\"seconds\": S, \"microseconds\": U");
                out.push_str(after);
            } else {
                out.push_str(line);
            }
        }
        out
    }

    fn negotiated() -> (Session, FakeVm) {
        let mut s = Session::new();
        let mut vm = FakeVm::default();
        assert_eq!(
            s.process(b"{\"execute\":\"qmp_capabilities\"}", &mut vm),
            "{\"return\": {}}\r\n"
        );
        (s, vm)
    }

    /// (input, QEMU 7.2's reply, timestamps normalized)
    fn transcript(s: &mut Session, vm: &mut FakeVm, cases: &[(&str, &str)]) {
        for (input, want) in cases {
            let got = norm(&s.process(input.as_bytes(), vm));
            let want = want.replace('\n', "\r\n");
            assert_eq!(got, want, "input {input}");
        }
    }

    #[test]
    fn greeting_is_qemu_shaped() {
        assert_eq!(
            greeting(),
            "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, \"major\": 7}, \"package\": \"ferrovm-0.1.0\"}, \"capabilities\": [\"oob\"]}}\r\n"
        );
    }

    #[test]
    fn negotiation_mode() {
        let mut s = Session::new();
        let mut vm = FakeVm::default();
        transcript(
            &mut s,
            &mut vm,
            &[
                (
                    r#"{"execute":"query-status"}"#,
                    r#"{"error": {"class": "CommandNotFound", "desc": "Expecting capabilities negotiation with 'qmp_capabilities'"}}
"#,
                ),
                (
                    r#"{"execute":"foo"}"#,
                    r#"{"error": {"class": "CommandNotFound", "desc": "Expecting capabilities negotiation with 'qmp_capabilities'"}}
"#,
                ),
                (
                    r#"{"exec-oob":"qmp_capabilities"}"#,
                    r#"{"error": {"class": "GenericError", "desc": "QMP input member 'exec-oob' is unexpected"}}
"#,
                ),
                (
                    r#"{"execute":"qmp_capabilities","arguments":{"enable":["bar"]}}"#,
                    r#"{"error": {"class": "GenericError", "desc": "Parameter 'null' does not accept value 'bar'"}}
"#,
                ),
                (
                    r#"{"execute":"qmp_capabilities","arguments":{"enable":"oob"}}"#,
                    r#"{"error": {"class": "GenericError", "desc": "Invalid parameter type for 'enable', expected: array"}}
"#,
                ),
                (
                    r#"{"execute":"qmp_capabilities","arguments":{"x":1}}"#,
                    r#"{"error": {"class": "GenericError", "desc": "Parameter 'x' is unexpected"}}
"#,
                ),
                (
                    r#"{"execute":"qmp_capabilities","id":"x","foo":1}"#,
                    r#"{"id": "x", "error": {"class": "GenericError", "desc": "QMP input member 'foo' is unexpected"}}
"#,
                ),
                (
                    "[]",
                    r#"{"error": {"class": "GenericError", "desc": "QMP input must be a JSON object"}}
"#,
                ),
                (
                    "{}",
                    r#"{"error": {"class": "GenericError", "desc": "QMP input lacks member 'execute'"}}
"#,
                ),
                (
                    r#"{"execute":1}"#,
                    r#"{"error": {"class": "GenericError", "desc": "QMP input member 'execute' must be a string"}}
"#,
                ),
                (
                    r#"{"arguments":[], "execute":"x"}"#,
                    r#"{"error": {"class": "GenericError", "desc": "QMP input member 'arguments' must be an object"}}
"#,
                ),
                // Events are not delivered before negotiation.
                (
                    r#"{"execute":"qmp_capabilities","arguments":{"enable":["oob"]}}"#,
                    "{\"return\": {}}\n",
                ),
                (
                    r#"{"execute":"qmp_capabilities","arguments":{"enable":["oob","oob"]}}"#,
                    r#"{"error": {"class": "CommandNotFound", "desc": "Capabilities negotiation is already complete, command ignored"}}
"#,
                ),
            ],
        );
        assert_eq!(s.phase(), Phase::Command { oob: true });
    }

    #[test]
    fn command_mode_and_ids() {
        let (mut s, mut vm) = negotiated();
        transcript(
            &mut s,
            &mut vm,
            &[
                (
                    r#"{"execute":"query-status","id":1}"#,
                    r#"{"return": {"status": "prelaunch", "singlestep": false, "running": false}, "id": 1}
"#,
                ),
                (
                    r#"{"execute":"foo","id":{"b":1,"a":[1,2.5,0.1,1e2,-0,-0.0,18446744073709551615,18446744073709551616,-9223372036854775809]}}"#,
                    r#"{"id": {"a": [1, 2.5, 0.10000000000000001, 100, 0, -0, 18446744073709551615, 1.8446744073709552e+19, -9.2233720368547758e+18], "b": 1}, "error": {"class": "CommandNotFound", "desc": "The command foo has not been found"}}
"#,
                ),
                (
                    r#"{"execute":"query-version"}"#,
                    r#"{"return": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": "ferrovm-0.1.0"}}
"#,
                ),
                (
                    r#"{"execute":"query-name","id":1, "arguments":{}, "control":1}"#,
                    r#"{"id": 1, "error": {"class": "GenericError", "desc": "QMP input member 'control' is unexpected"}}
"#,
                ),
                (
                    r#"{"exec-oob":"query-name","execute":"query-status"}"#,
                    r#"{"error": {"class": "GenericError", "desc": "QMP input member 'exec-oob' is unexpected"}}
"#,
                ),
                (
                    r#"{"execute":"query-name","id":"\u0000"}"#,
                    "{\"return\": {}, \"id\": \"\\u0000\"}\n",
                ),
                (
                    r#"{"execute":"query-status","arguments":{},"id":[1,{"z":null}]}"#,
                    r#"{"return": {"status": "prelaunch", "singlestep": false, "running": false}, "id": [1, {"z": null}]}
"#,
                ),
                (
                    r#"{"exec-oob":"query-status"}"#,
                    r#"{"error": {"class": "GenericError", "desc": "QMP input member 'exec-oob' is unexpected"}}
"#,
                ),
                (
                    r#"{"execute":"qom-get","arguments":{"path":"/nope","property":"x"}}"#,
                    r#"{"error": {"class": "DeviceNotFound", "desc": "Device '/nope' not found"}}
"#,
                ),
                (
                    r#"{"execute":"qom-get","arguments":{"path":"/machine","property":"type"}}"#,
                    r#"{"return": "none-machine"}
"#,
                ),
                (
                    r#"{"execute":"query-chardev"}"#,
                    r#"{"return": [{"frontend-open": true, "filename": "unix:/tmp/q.sock,server=on", "label": "compat_monitor0"}]}
"#,
                ),
                (
                    r#"{"execute":"query-memory-size-summary"}"#,
                    r#"{"return": {"base-memory": 0, "plugged-memory": 0}}
"#,
                ),
                (
                    r#"{"execute":"inject-nmi"}"#,
                    r#"{"error": {"class": "GenericError", "desc": "this feature or command is not currently supported"}}
"#,
                ),
                // Malformed input, then recovery (qmp-test.c).
                (
                    "{]\n",
                    r#"{"error": {"class": "GenericError", "desc": "JSON parse error, expecting value"}}
"#,
                ),
                (
                    "{\u{1}",
                    r#"{"error": {"class": "GenericError", "desc": "JSON parse error, stray '\u0001'"}}
"#,
                ),
                (
                    "{ 'execute': 'no-such-cmd' }",
                    r#"{"error": {"class": "CommandNotFound", "desc": "The command no-such-cmd has not been found"}}
"#,
                ),
                (
                    "{ 'execute': 'no-such-cmd', 'extra': true }",
                    r#"{"error": {"class": "GenericError", "desc": "QMP input member 'extra' is unexpected"}}
"#,
                ),
                (
                    "{ 'execute': 'human-monitor-command', 'id': 2 }",
                    r#"{"id": 2, "error": {"class": "GenericError", "desc": "Parameter 'command-line' is missing"}}
"#,
                ),
            ],
        );
    }

    #[test]
    fn oob_mode() {
        let mut s = Session::new();
        let mut vm = FakeVm::default();
        s.process(
            br#"{"execute":"qmp_capabilities","arguments":{"enable":["oob"]}}"#,
            &mut vm,
        );
        transcript(
            &mut s,
            &mut vm,
            &[
                (
                    r#"{"exec-oob":"query-status"}"#,
                    r#"{"error": {"class": "GenericError", "desc": "The command query-status does not support OOB"}}
"#,
                ),
                (
                    r#"{"exec-oob":"query-status","id":"a"}"#,
                    r#"{"id": "a", "error": {"class": "GenericError", "desc": "The command query-status does not support OOB"}}
"#,
                ),
                (
                    r#"{"exec-oob":1}"#,
                    r#"{"error": {"class": "GenericError", "desc": "QMP input member 'exec-oob' must be a string"}}
"#,
                ),
                (
                    r#"{"exec-oob":"query-status","execute":"query-name"}"#,
                    r#"{"error": {"class": "GenericError", "desc": "QMP input member 'execute' clashes with 'exec-oob'"}}
"#,
                ),
                (
                    r#"{"execute":"query-name","exec-oob":"query-status"}"#,
                    r#"{"error": {"class": "GenericError", "desc": "QMP input member 'execute' clashes with 'exec-oob'"}}
"#,
                ),
                (
                    r#"{"exec-oob":"nope"}"#,
                    r#"{"error": {"class": "CommandNotFound", "desc": "The command nope has not been found"}}
"#,
                ),
                (
                    r#"{"exec-oob":"qmp_capabilities"}"#,
                    r#"{"error": {"class": "GenericError", "desc": "The command qmp_capabilities does not support OOB"}}
"#,
                ),
            ],
        );
    }

    #[test]
    fn events_come_before_the_reply() {
        let (mut s, mut vm) = negotiated();
        transcript(
            &mut s,
            &mut vm,
            &[
                (
                    r#"{"execute":"cont"}"#,
                    r#"{"timestamp": {"seconds": S, "microseconds": U}, "event": "RESUME"}
{"return": {}}
"#,
                ),
                (
                    r#"{"execute":"stop"}"#,
                    r#"{"timestamp": {"seconds": S, "microseconds": U}, "event": "STOP"}
{"return": {}}
"#,
                ),
                (r#"{"execute":"stop"}"#, "{\"return\": {}}\n"),
                (
                    r#"{"execute":"system_reset"}"#,
                    r#"{"timestamp": {"seconds": S, "microseconds": U}, "event": "RESET", "data": {"guest": false, "reason": "host-qmp-system-reset"}}
{"return": {}}
"#,
                ),
                (
                    r#"{"execute":"quit","id":"q"}"#,
                    r#"{"timestamp": {"seconds": S, "microseconds": U}, "event": "SHUTDOWN", "data": {"guest": false, "reason": "host-qmp-quit"}}
{"return": {}, "id": "q"}
"#,
                ),
            ],
        );
        assert!(vm.quit_requested);
    }

    fn hmp(s: &mut Session, vm: &mut FakeVm, line: &str) -> String {
        let req = QObject::Dict(
            [
                (
                    "execute".to_string(),
                    QObject::Str("human-monitor-command".into()),
                ),
                (
                    "arguments".to_string(),
                    crate::qobject::qdict([("command-line", QObject::Str(line.into()))]),
                ),
            ]
            .into_iter()
            .collect(),
        );
        norm(&s.process(req.to_json().as_bytes(), vm))
    }

    #[test]
    fn hmp_matches_qemu() {
        let (mut s, mut vm) = negotiated();
        let r = |x: &str| format!("{{\"return\": {}}}\r\n", QObject::Str(x.into()).to_json());
        assert_eq!(
            hmp(&mut s, &mut vm, "info status"),
            r("VM status: paused (prelaunch)\r\n")
        );
        assert_eq!(
            hmp(&mut s, &mut vm, "  info   status  "),
            r("VM status: paused (prelaunch)\r\n")
        );
        assert_eq!(
            hmp(&mut s, &mut vm, "info version"),
            r("7.2.0ferrovm-0.1.0\r\n")
        );
        assert_eq!(hmp(&mut s, &mut vm, "info name"), r(""));
        assert_eq!(hmp(&mut s, &mut vm, "info cpus"), r(""));
        assert_eq!(hmp(&mut s, &mut vm, "foo"), r("unknown command: 'foo'\r\n"));
        assert_eq!(
            hmp(&mut s, &mut vm, "foo bar"),
            r("unknown command: 'foo'\r\n")
        );
        assert_eq!(
            hmp(&mut s, &mut vm, "  foo"),
            r("unknown command: '  foo'\r\n")
        );
        assert_eq!(hmp(&mut s, &mut vm, ""), r(""));
        assert_eq!(hmp(&mut s, &mut vm, "   "), r(""));
        assert_eq!(
            hmp(&mut s, &mut vm, "info foo"),
            r("unknown command: 'info foo'\r\n")
        );
        assert_eq!(
            hmp(&mut s, &mut vm, "info status;"),
            r("unknown command: 'info status;'\r\n")
        );
        assert_eq!(
            hmp(&mut s, &mut vm, "STOP"),
            r("unknown command: 'STOP'\r\n")
        );
        assert_eq!(
            hmp(&mut s, &mut vm, "info status extra"),
            r("status: extraneous characters at the end of line\r\nTry \"help info status\" for more information\r\n")
        );
        assert_eq!(
            hmp(&mut s, &mut vm, "info   status x"),
            r("status: extraneous characters at the end of line\r\nTry \"help info   status\" for more information\r\n")
        );
        assert_eq!(
            hmp(&mut s, &mut vm, "  stop  x"),
            r("stop|s: extraneous characters at the end of line\r\nTry \"help   stop\" for more information\r\n")
        );
        assert_eq!(
            hmp(&mut s, &mut vm, "stop/x"),
            r("stop|s: extraneous characters at the end of line\r\nTry \"help stop\" for more information\r\n")
        );
        assert_eq!(
            hmp(&mut s, &mut vm, "q x"),
            r("quit|q: extraneous characters at the end of line\r\nTry \"help q\" for more information\r\n")
        );
        assert_eq!(
            hmp(&mut s, &mut vm, "help stop"),
            r("stop|s  -- stop emulation\r\n")
        );
        assert_eq!(
            hmp(&mut s, &mut vm, "help stop extra"),
            r("stop|s  -- stop emulation\r\n")
        );
        assert_eq!(
            hmp(&mut s, &mut vm, "help q"),
            r("quit|q  -- quit the emulator\r\n")
        );
        assert_eq!(
            hmp(&mut s, &mut vm, "help help"),
            r("help|? [cmd] -- show the help\r\n")
        );
        assert_eq!(
            hmp(&mut s, &mut vm, "help info status"),
            r("info status  -- show the current VM status (running|paused)\r\n")
        );
        assert_eq!(
            hmp(&mut s, &mut vm, "help foo"),
            r("unknown command: 'foo'\r\n")
        );
        assert_eq!(
            hmp(&mut s, &mut vm, "help info foo"),
            r("unknown command: 'info foo'\r\n")
        );
        assert!(hmp(&mut s, &mut vm, "info")
            .contains("info cpus  -- show infos for each CPU\\r\\ninfo iothreads"));
        assert_eq!(
            hmp(&mut s, &mut vm, "info"),
            hmp(&mut s, &mut vm, "help info")
        );
        assert!(hmp(&mut s, &mut vm, "help").contains(
            "cont|c  -- resume emulation\\r\\nhelp|? [cmd] -- show the help\\r\\ninfo [subcommand]"
        ));
        assert_eq!(
            hmp(&mut s, &mut vm, "system_wakeup"),
            r("Error: wake-up from suspend is not supported by this guest\r\n")
        );
        assert_eq!(
            hmp(&mut s, &mut vm, "info memory_size_summary"),
            r("base memory: 0\r\nplugged memory: 0\r\n")
        );
        assert_eq!(
            hmp(&mut s, &mut vm, "info kvm"),
            r("kvm support: disabled\r\n")
        );
        assert_eq!(
            hmp(&mut s, &mut vm, "cont"),
            "{\"timestamp\": {\"seconds\": S, \"microseconds\": U}, \"event\": \"RESUME\"}\r\n"
                .to_string()
                + &r("")
        );
        assert_eq!(
            hmp(&mut s, &mut vm, "info status"),
            r("VM status: running\r\n")
        );
        assert_eq!(hmp(&mut s, &mut vm, "c"), r(""));
        vm.cpus = 2;
        assert_eq!(
            hmp(&mut s, &mut vm, "info cpus"),
            r("* CPU #0: thread_id=1000\r\n  CPU #1: thread_id=1001\r\n")
        );
        let req = r#"{"execute":"human-monitor-command","arguments":{"command-line":"info cpus","cpu-index":1}}"#;
        assert_eq!(
            norm(&s.process(req.as_bytes(), &mut vm)),
            r("  CPU #0: thread_id=1000\r\n* CPU #1: thread_id=1001\r\n")
        );
        let req = r#"{"execute":"human-monitor-command","arguments":{"command-line":"info status","cpu-index":5}}"#;
        assert_eq!(
            s.process(req.as_bytes(), &mut vm),
            "{\"error\": {\"class\": \"GenericError\", \"desc\": \"Parameter 'cpu-index' expects a CPU number\"}}\r\n"
        );
    }

    #[test]
    fn fake_vm_serves_every_handler_command() {
        assert_eq!(
            crate::unserved_commands(&mut FakeVm::default()),
            Vec::<String>::new()
        );
        // A handler that forgets commands is caught, whatever it forgets.
        struct Partial;
        impl Handler for Partial {
            fn execute(
                &mut self,
                cmd: &str,
                _: &crate::Args,
                _: &mut dyn EventSink,
            ) -> Result<Value, QmpError> {
                match cmd {
                    "query-status" => Ok(Value::Null),
                    _ => Err(QmpError::command_not_found(format!(
                        "The command {cmd} has not been found"
                    ))),
                }
            }
        }
        let missing = crate::unserved_commands(&mut Partial);
        assert!(missing.contains(&"stop".to_string()), "{missing:?}");
        assert!(!missing.contains(&"query-status".to_string()));
        assert!(
            !missing
                .iter()
                .any(|c| crate::LIBRARY_COMMANDS.contains(&c.as_str())),
            "library commands are never asked of the handler: {missing:?}"
        );
    }

    #[test]
    fn every_command_answers_without_panicking() {
        let (mut s, mut vm) = negotiated();
        for name in schema().command_names() {
            let out = s.process(format!(r#"{{"execute":"{name}"}}"#).as_bytes(), &mut vm);
            assert!(
                out.ends_with("\r\n") && out.matches("\r\n").count() >= 1,
                "{name}: {out}"
            );
        }
        let out = s.process(br#"{"execute":"query-qmp-schema"}"#, &mut vm);
        assert!(
            out.starts_with("{\"return\": [{\"name\": \"query-status\""),
            "{}",
            &out[..200]
        );
        let out = s.process(br#"{"execute":"query-commands"}"#, &mut vm);
        assert!(out.contains("{\"name\": \"qom-get\"}"));
    }
}

#[cfg(test)]
mod order_tests {
    use super::*;
    use crate::testing::FakeVm;

    /// Member order of union/struct replies as QEMU 7.2 printed them.
    #[test]
    fn reply_key_order_matches_qemu() {
        let mut s = Session::new();
        let mut vm = FakeVm {
            cpus: 1,
            ..FakeVm::default()
        };
        s.process(b"{\"execute\":\"qmp_capabilities\"}", &mut vm);
        assert_eq!(
            s.process(b"{\"execute\":\"query-cpus-fast\"}", &mut vm),
            "{\"return\": [{\"thread-id\": 1000, \"props\": {\"core-id\": 0, \"thread-id\": 0, \"socket-id\": 0}, \
             \"qom-path\": \"/machine/unattached/device[0]\", \"cpu-index\": 0, \"target\": \"x86_64\"}]}\r\n"
        );
        assert_eq!(
            s.process(b"{\"execute\":\"query-kvm\"}", &mut vm),
            "{\"return\": {\"enabled\": false, \"present\": true}}\r\n"
        );
    }
}
