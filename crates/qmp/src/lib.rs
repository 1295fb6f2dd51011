//! QMP monitor for ferrovm, behaving as QEMU 7.2's.
mod ghash;
pub mod json_stream;
pub mod qobject;
pub mod schema;

pub use schema::{schema, support_table_markdown};
