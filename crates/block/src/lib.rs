//! ferrovm's block layer. It knows nothing about virtio: a device model
//! reaches an image only through a [`BlockBackend`] (QEMU's BlockBackend:
//! one device's attachment to a node) and the [`BlockQueue`]s it opens.
//!
//! - [`io`]: the request/completion interface devices use.

pub mod io;

pub use io::{BlockBackend, BlockQueue, ErrorAction, IoBuf, IoCompletion, IoKind, IoRequest};
