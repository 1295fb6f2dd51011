//! qmp
