//! QEMU's embedded NBD server (blockdev-nbd.c, nbd/server.c,
//! block/export/export.c): `nbd-server-start` listens, `nbd-server-add`
//! exports a node, and clients such as `qemu-img` and `qemu-io` read and
//! write it over the NBD protocol (fixed newstyle handshake, simple and
//! structured replies, base:allocation block status).
//!
//! - [`owner`]: the QMP side, run by the owner of the block graph.
//! - [`server`]: the accepting thread and one thread per connection.
//! - [`listen`], `listen_inet`: the listening sockets and their errors.
//! - [`negotiate`], [`option`]: the handshake and option payloads.
//! - [`transmit`], [`request`], [`reply`]: requests and their replies.
//! - [`export`]: what a connection sees of an export; `backend_io`,
//!   [`status`], [`gate`]: the export's I/O through its BlockBackend.
//! - [`proto`], [`wire`]: the protocol's numbers and the socket's errors.
//! - [`duplex`]: a conversation in memory (tests, fuzzing).

pub(crate) mod backend_io;
pub mod duplex;
pub mod export;
pub mod gate;
pub mod listen;
mod listen_inet;
pub mod negotiate;
pub mod option;
pub mod owner;
pub mod proto;
pub mod reply;
pub mod request;
pub mod server;
pub mod status;
pub mod transmit;
pub mod wire;

pub use listen::ListenAddr;
pub use owner::{AddArgs, NbdServer};
pub use server::NbdMsg;

#[cfg(test)]
mod tests;
