//! ferrovm's block layer. It knows nothing about virtio: a device model
//! reaches an image only through a [`BlockBackend`] (QEMU's BlockBackend:
//! one device's attachment to a node) and the [`BlockQueue`]s it opens.
//!
//! - [`io`]: the request/completion interface devices use.
//! - [`graph`]: nodes by name, `-drive`/`-blockdev`, attach, `block_resize`.
//! - [`node`], [`file`], [`raw`]: the node, its driver trait, the drivers;
//!   [`quorum`]: the voting `quorum` driver; [`events`]: the events nodes raise.
//! - [`qcow2`]: the qcow2 image format; [`qcow2_node`]: the `qcow2` node over it.
//! - [`perm`], [`lock`]: QEMU's permission bits and OFD image locks.
//! - [`engine`]: thread pool and io_uring behind the queues.
//! - [`snapshot`]: external snapshots (a new overlay on top, devices moved).
//! - [`reopen`]: `blockdev-reopen` and `change-backing-file`.
//! - [`throttle`]: `block_set_io_throttle`'s leaky buckets and throttle groups;
//!   `drive_throttle`: `-drive throttling.*` and the legacy `bps=`... names.
//! - [`bitmap`]: dirty bitmaps (mirror, backup, `block-dirty-bitmap-*`);
//!   [`dirty`]: a node's named bitmaps and where writes mark them;
//!   [`bitmap_cmds`]: the `block-dirty-bitmap-*` commands.
//! - [`job`]: block jobs (QEMU's job state machine, stream, mirror).
//! - [`stats`], [`qapi`]: accounting and the QMP query data.
//! - [`policy`]: werror/rerror, I/O status, cache modes.
//! - [`nbd`]: the NBD server (`nbd-server-start`, `nbd-server-add`, ...).

pub mod bitmap;
pub mod bitmap_cmds;
pub mod blkdebug;
pub mod cor;
pub mod debug;
pub mod dirty;
mod drive_throttle;
pub mod engine;
pub mod error;
pub mod events;
pub mod file;
pub mod graph;
pub mod io;
pub mod iovec;
pub mod job;
pub mod lock;
pub mod nbd;
pub mod node;
pub mod null;
pub mod options;
mod parents;
pub mod perm;
pub mod policy;
pub mod qapi;
pub mod qcow2;
pub mod qcow2_node;
pub mod qemu_io;
pub mod quorum;
pub mod raw;
pub mod reopen;
pub mod replace;
pub mod snapshot;
pub mod stats;
pub mod throttle;
pub mod throttle_filter;
pub mod throttle_group;
pub mod xdbg;

pub use error::BlockError;
pub use graph::{AttachOptions, BlockGraph};
pub use io::{BlockBackend, BlockQueue, ErrorAction, IoBuf, IoCompletion, IoKind, IoRequest};
pub use node::Node;
