//! QMP monitor for ferrovm, behaving as QEMU 7.2's.
pub mod json_stream;
pub mod qobject;
