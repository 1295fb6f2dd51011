//! Command dispatch: the [`Handler`] trait the VMM implements, errors,
//! events, validated arguments, and the commands the library serves itself.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::qobject::{QDict, QObject};
use crate::schema::{schema, TypeRef};

/// QEMU's `QapiErrorClass`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    GenericError,
    CommandNotFound,
    DeviceNotActive,
    DeviceNotFound,
    KVMMissingCap,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::GenericError => "GenericError",
            ErrorClass::CommandNotFound => "CommandNotFound",
            ErrorClass::DeviceNotActive => "DeviceNotActive",
            ErrorClass::DeviceNotFound => "DeviceNotFound",
            ErrorClass::KVMMissingCap => "KVMMissingCap",
        }
    }
}

/// A command failure: QMP's `{"error": {"class": ..., "desc": ...}}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QmpError {
    pub class: ErrorClass,
    pub desc: String,
}

impl QmpError {
    pub fn new(class: ErrorClass, desc: impl Into<String>) -> Self {
        QmpError {
            class,
            desc: desc.into(),
        }
    }

    /// `error_setg()`: GenericError.
    pub fn generic(desc: impl Into<String>) -> Self {
        Self::new(ErrorClass::GenericError, desc)
    }

    pub fn command_not_found(desc: impl Into<String>) -> Self {
        Self::new(ErrorClass::CommandNotFound, desc)
    }

    pub fn device_not_found(desc: impl Into<String>) -> Self {
        Self::new(ErrorClass::DeviceNotFound, desc)
    }

    pub fn device_not_active(desc: impl Into<String>) -> Self {
        Self::new(ErrorClass::DeviceNotActive, desc)
    }

    pub fn kvm_missing_cap(desc: impl Into<String>) -> Self {
        Self::new(ErrorClass::KVMMissingCap, desc)
    }

    /// QEMU's `QERR_UNSUPPORTED`.
    pub fn unsupported() -> Self {
        Self::generic("this feature or command is not currently supported")
    }

    pub(crate) fn to_qobject(&self) -> QObject {
        let mut e = QDict::new();
        e.insert("class", QObject::Str(self.class.as_str().into()));
        e.insert("desc", QObject::Str(self.desc.clone()));
        QObject::Dict(e)
    }
}

impl std::fmt::Display for QmpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.class.as_str(), self.desc)
    }
}

impl std::error::Error for QmpError {}

/// An asynchronous QMP event.  The timestamp is taken when the event is
/// created, as QEMU takes it when it emits.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub name: String,
    /// The event's data; `None` for events without data.
    pub data: Option<Value>,
    pub seconds: i64,
    pub microseconds: i64,
}

impl Event {
    pub fn new(name: impl Into<String>, data: Option<Value>) -> Self {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Event {
            name: name.into(),
            data,
            seconds: now.as_secs() as i64,
            microseconds: now.subsec_micros() as i64,
        }
    }

    /// The event as one QMP line, without the line ending.  Data is put in
    /// schema member order; a schema mismatch (a VMM bug) is logged.
    pub fn to_json(&self) -> String {
        let mut d = QDict::new();
        d.insert("event", QObject::Str(self.name.clone()));
        let s = schema();
        let arg_type = s.event(&self.name).and_then(|e| e.arg_type.clone());
        match (&self.data, arg_type) {
            (Some(data), Some(ty)) => {
                let q = QObject::from(data);
                let q = s.conform(&q, &TypeRef::Named(ty)).unwrap_or_else(|e| {
                    log::error!("QMP event {} does not match the schema: {e}", self.name);
                    q
                });
                d.insert("data", q);
            }
            (None, Some(ty)) => {
                log::error!("QMP event {} emitted without its data ({ty})", self.name);
                d.insert("data", QObject::Dict(QDict::new()));
            }
            (Some(data), None) => {
                if s.event(&self.name).is_none() {
                    log::error!("QMP event {} is not in the schema", self.name);
                }
                d.insert("data", QObject::from(data));
            }
            (None, None) => {}
        }
        let mut ts = QDict::new();
        ts.insert("seconds", QObject::Int(self.seconds));
        ts.insert("microseconds", QObject::Int(self.microseconds));
        d.insert("timestamp", QObject::Dict(ts));
        QObject::Dict(d).to_json()
    }
}

/// Where a handler puts the events a command causes.  They reach every
/// negotiated monitor before the command's own reply (QEMU's order: STOP
/// before `stop` returns, SHUTDOWN before `quit` returns).
pub trait EventSink {
    fn emit(&mut self, event: Event);
}

impl EventSink for Vec<Event> {
    fn emit(&mut self, event: Event) {
        self.push(event);
    }
}

/// A command's arguments, already validated against the schema (types,
/// required members, no unknown members) and in schema member order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Args(pub serde_json::Map<String, Value>);

impl Args {
    /// Every argument, as the validated object.
    pub fn as_map(&self) -> &serde_json::Map<String, Value> {
        &self.0
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name)
    }

    fn missing(name: &str) -> QmpError {
        QmpError::generic(format!("Parameter '{name}' is missing"))
    }

    /// A required `str` member.
    pub fn str(&self, name: &str) -> Result<&str, QmpError> {
        self.opt_str(name).ok_or_else(|| Self::missing(name))
    }

    pub fn opt_str(&self, name: &str) -> Option<&str> {
        self.0.get(name).and_then(Value::as_str)
    }

    /// A required integer member.
    pub fn i64(&self, name: &str) -> Result<i64, QmpError> {
        self.opt_i64(name).ok_or_else(|| Self::missing(name))
    }

    pub fn opt_i64(&self, name: &str) -> Option<i64> {
        self.0.get(name).and_then(Value::as_i64)
    }

    pub fn bool(&self, name: &str) -> Result<bool, QmpError> {
        self.opt_bool(name).ok_or_else(|| Self::missing(name))
    }

    pub fn opt_bool(&self, name: &str) -> Option<bool> {
        self.0.get(name).and_then(Value::as_bool)
    }

    /// Deserializes the whole argument object into a type of the caller's.
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, QmpError> {
        serde_json::from_value(Value::Object(self.0.clone()))
            .map_err(|e| QmpError::generic(e.to_string()))
    }
}

/// What the VMM implements.  One handler serves every monitor; calls are
/// made from the VMM's event loop thread, one at a time.
///
/// It serves every schema command except [`LIBRARY_COMMANDS`]
/// ([`crate::schema::Schema::handler_commands`]); the session never passes it
/// a command the schema does not declare.  [`unserved_commands`] finds the
/// ones a handler forgets.
pub trait Handler {
    /// Runs `cmd` with validated `args`.  May block (e.g. `stop` waits for
    /// every vCPU).  Returns the command's `return` value (anything for
    /// commands without one, conventionally `Value::Null`; the library sends
    /// `{}`).  Events the command causes go to `events`.
    fn execute(
        &mut self,
        cmd: &str,
        args: &Args,
        events: &mut dyn EventSink,
    ) -> Result<Value, QmpError>;

    /// True once the VM is going away (after `quit`): monitors stop taking
    /// requests, so nothing runs after `quit` (QEMU exits before reading
    /// the next one).
    fn exit_requested(&self) -> bool {
        false
    }

    /// HMP `qemu-io [-d] DEVICE "COMMAND"`: runs a qemu-io command on a
    /// drive (or with `qdev` a device's drive, else also a node); the
    /// command's output goes to the emulator's stdout and stderr. An error
    /// is what HMP prints as `Error: ...`.
    fn hmp_qemu_io(&mut self, _qdev: bool, _device: &str, _command: &str) -> Result<(), QmpError> {
        Err(QmpError::generic("qemu-io is not available here"))
    }
}

/// Commands the library serves itself: they depend only on the protocol,
/// the schema, or other commands.
pub const LIBRARY_COMMANDS: &[&str] = &[
    "qmp_capabilities",
    "query-version",
    "query-commands",
    "query-qmp-schema",
    "human-monitor-command",
];

/// The schema's handler commands that `handler` answers with
/// CommandNotFound: each is run once with empty arguments, so call it on a
/// handler whose side effects do not matter (a unit test's machine-less VM).
pub fn unserved_commands(handler: &mut dyn Handler) -> Vec<String> {
    struct Discard;
    impl EventSink for Discard {
        fn emit(&mut self, _: Event) {}
    }
    schema()
        .handler_commands()
        .filter(|c| {
            matches!(
                handler.execute(&c.name, &Args::default(), &mut Discard),
                Err(e) if e.class == ErrorClass::CommandNotFound
            )
        })
        .map(|c| c.name.clone())
        .collect()
}

/// Runs a handler command by name with JSON arguments, validating them as
/// if they came from a client.  Used by HMP.
pub(crate) fn call(
    handler: &mut dyn Handler,
    cmd: &str,
    args: QDict,
    events: &mut dyn EventSink,
) -> Result<Value, QmpError> {
    let s = schema();
    let c = s.command(cmd).ok_or_else(|| {
        QmpError::command_not_found(format!("The command {cmd} has not been found"))
    })?;
    let args = s.validate_args(c, &args).map_err(QmpError::generic)?;
    handler.execute(cmd, &to_args(&args), events)
}

pub(crate) fn to_args(d: &QDict) -> Args {
    match Value::from(&QObject::Dict(d.clone())) {
        Value::Object(m) => Args(m),
        _ => Args::default(),
    }
}
