//! QMP monitor for ferrovm, behaving as QEMU 7.2's for everything it
//! implements.
//!
//! * [`json_stream`]: QEMU's incremental JSON reader (lexer, message
//!   boundaries, limits, error recovery).
//! * [`qobject`]: QEMU's value model and output format (key order, numbers,
//!   escapes).
//! * [`mod@schema`]: the QAPI schema in `schema/*.json`, and everything derived
//!   from it (validation, introspection, `query-commands`, docs table).
//! * [`dispatch`]: the [`Handler`] trait the VMM implements.
//! * [`session`]: one connection's protocol state (no I/O).
//! * [`hmp`]: the HMP subset behind `human-monitor-command`.
//! * [`server`]: the sockets, driven by the VMM's mio event loop.
//!
//! # What the VMM provides
//!
//! A [`Handler`] serving every schema command except [`LIBRARY_COMMANDS`]
//! (its tests check with [`unserved_commands`]): `execute(cmd, args, events)` runs one with arguments already validated
//! against the schema.  Events a command causes go to `events` and reach
//! every negotiated client before the command's reply; events from elsewhere
//! (vCPU threads: guest reset, power-off, panic) go through
//! [`MonitorSet::broadcast`].  Replies and event data are checked against the
//! schema and printed in QEMU's key order, so the handler may build them with
//! `serde_json::json!` in any order.
//!
//! ```ignore
//! impl qmp::Handler for Vm {
//!     fn execute(&mut self, cmd: &str, args: &qmp::Args, ev: &mut dyn qmp::EventSink)
//!         -> Result<serde_json::Value, qmp::QmpError> {
//!         match cmd {
//!             "stop" => { self.pause_all_vcpus(); ev.emit(qmp::Event::new("STOP", None)); Ok(Value::Null) }
//!             "qom-get" => self.qom_get(args.str("path")?, args.str("property")?),
//!             _ => Err(qmp::QmpError::command_not_found(format!("The command {cmd} has not been found"))),
//!         }
//!     }
//!     fn exit_requested(&self) -> bool { self.quitting }
//! }
//! ```
//!
//! `cargo run -p qmp --example qmp_schema table` prints the support table
//! for docs/qmp.md; `--example fake_qmp_server unix:/tmp/f.sock` serves the
//! protocol over [`testing::FakeVm`] for trying clients.
pub mod dispatch;
mod ghash;
pub mod hmp;
pub mod json_stream;
pub mod qobject;
pub mod readline;
pub mod schema;
pub mod server;
pub mod session;
pub mod testing;
mod throttle;

pub use dispatch::{
    unserved_commands, Args, ErrorClass, Event, EventSink, Handler, QmpError, LIBRARY_COMMANDS,
};
pub use schema::{schema, support_table_markdown};
pub use server::{MonitorAddr, MonitorMode, MonitorSet, MonitorSpec};
pub use session::Session;

/// The QEMU version whose QMP behaviour ferrovm follows, reported by the
/// greeting and `query-version` (libvirt keys features on it).
pub const QEMU_VERSION: (i64, i64, i64) = (7, 2, 0);

/// The `package` string of the greeting and `query-version`.
pub const PACKAGE: &str = concat!("ferrovm-", env!("CARGO_PKG_VERSION"));
