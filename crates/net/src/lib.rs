//! ferrovm's network backends (QEMU's `-netdev`). A NIC model reaches the
//! host only through [`NetQueue`]: one per queue pair, so multiqueue is
//! several queues of the same backend.
//!
//! - [`queue`]: the [`NetQueue`] contract and the offloads it can be asked for.

pub mod queue;

pub use queue::{NetQueue, Offloads};
