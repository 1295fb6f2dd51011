//! ferrovm's network backends (QEMU's `-netdev`). A NIC model reaches the
//! host only through [`NetQueue`]: one per queue pair, so multiqueue is
//! several queues of the same backend.
//!
//! - [`queue`]: the [`NetQueue`] contract and the offloads it can be asked for.
//! - [`options`]: `-netdev tap` / `netdev_add` options ([`TapOptions`]), checked as QEMU 7.2 checks them.
//! - [`open`]: [`open_tap`], one [`Tap`] per queue (open `/dev/net/tun`, or adopt `fd=`/`fds=`).
//! - [`tap`]: a TAP queue behind [`NetQueue`]; queue 0 runs the downscript when it closes.
//! - `script`: QEMU's `launch_script`; `tap_sys`: the TUN/TAP ioctls; `scalar`: option values.
//! - [`no_peer`]: [`NoPeer`], what a NIC without a netdev talks to.
//! - [`error`]: [`TapError`], QEMU's texts.
//!
//! vhost-net and the bridge helper are refused (see [`options::VHOST_UNSUPPORTED`]).

pub mod error;
pub mod no_peer;
pub mod open;
pub mod options;
pub mod queue;
mod scalar;
mod script;
pub mod tap;
mod tap_sys;

pub use error::{OsError, TapError};
pub use no_peer::NoPeer;
pub use open::{open_tap, open_tap_with, NamedFds};
pub use options::{
    TapOpen, TapOptions, TapSource, DEFAULT_NETWORK_DOWN_SCRIPT, DEFAULT_NETWORK_SCRIPT,
};
pub use queue::{NetQueue, Offloads};
pub use tap::{Tap, VNET_HDR_LEN};
