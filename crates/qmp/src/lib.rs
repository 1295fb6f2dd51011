//! QMP monitor for ferrovm, behaving as QEMU 7.2's for everything it
//! implements.
//!
//! * [`json_stream`]: QEMU's incremental JSON reader (lexer, message
//!   boundaries, limits, error recovery).
//! * [`qobject`]: QEMU's value model and output format (key order, numbers,
//!   escapes).
//! * [`schema`]: the QAPI schema in `schema/*.json`, and everything derived
//!   from it (validation, introspection, `query-commands`, docs table).
//! * [`dispatch`]: the [`Handler`] trait the VMM implements.
//! * [`session`]: one connection's protocol state (no I/O).
//! * [`hmp`]: the HMP subset behind `human-monitor-command`.
//! * [`server`]: the sockets, driven by the VMM's mio event loop.
pub mod dispatch;
mod ghash;
pub mod hmp;
pub mod json_stream;
pub mod qobject;
pub mod schema;
pub mod server;
pub mod session;
pub mod testing;

pub use dispatch::{
    check_handler, Args, ErrorClass, Event, EventSink, Handler, QmpError, LIBRARY_COMMANDS,
};
pub use schema::{schema, support_table_markdown};
pub use server::{MonitorAddr, MonitorMode, MonitorSet, MonitorSpec};
pub use session::Session;

/// The QEMU version whose QMP behaviour ferrovm follows, reported by the
/// greeting and `query-version` (libvirt keys features on it).
pub const QEMU_VERSION: (i64, i64, i64) = (7, 2, 0);

/// The `package` string of the greeting and `query-version`.
pub const PACKAGE: &str = concat!("ferrovm-", env!("CARGO_PKG_VERSION"));
