//! Blocking I/O on a node, in its guest offsets, the way a BlockBackend's
//! requests reach it (straight to the host file for raw, through the
//! format otherwise). Jobs read and write with it on their worker threads,
//! and the filters they put in a device's route forward to it.

use std::sync::Arc;

use crate::engine::sync_ops;
use crate::io::{IoBuf, Route};
use crate::node::{FormatIo, Node};

pub struct NodeIo(Route);

impl NodeIo {
    pub fn new(node: &Arc<Node>) -> Self {
        NodeIo(Route::of(Some(node.clone())))
    }

    /// I/O the way a backend's requests go now, through the filters a job
    /// put in its route.
    pub(crate) fn of_route(route: Route) -> Self {
        NodeIo(route)
    }
}

fn buf(ptr: *mut u8, len: usize) -> [IoBuf; 1] {
    [IoBuf { ptr, len }]
}

impl FormatIo for NodeIo {
    fn read(&self, off: u64, b: &mut [u8]) -> Result<(), i32> {
        self.readv(off, &crate::iovec::of(b))
    }
    fn readv(&self, off: u64, bufs: &[IoBuf]) -> Result<(), i32> {
        match (&self.0.data, &self.0.format) {
            (Some(d), _) => sync_ops::read(&d.io, d.base + off, bufs).map(|_| ()),
            (None, Some(f)) => f.readv(off, bufs),
            (None, None) => Err(libc::ENOMEDIUM),
        }
    }

    fn write(&self, off: u64, b: &[u8]) -> Result<(), i32> {
        match (&self.0.data, &self.0.format) {
            // The engine's write only reads from the buffer.
            (Some(d), _) => {
                sync_ops::write(&d.io, d.base + off, &buf(b.as_ptr().cast_mut(), b.len()))
                    .map(|_| ())
            }
            (None, Some(f)) => f.write(off, b),
            (None, None) => Err(libc::ENOMEDIUM),
        }
    }

    fn flush(&self) -> Result<(), i32> {
        match (&self.0.data, &self.0.format) {
            (Some(d), _) => sync_ops::flush(&d.io).map(|_| ()),
            (None, Some(f)) => f.flush(),
            (None, None) => Ok(()),
        }
    }

    fn discard(&self, off: u64, len: u64) -> Result<(), i32> {
        match (&self.0.data, &self.0.format) {
            (Some(d), _) => sync_ops::discard(&d.io, d.base + off, len).map(|_| ()),
            (None, Some(f)) => f.discard(off, len),
            (None, None) => Err(libc::ENOMEDIUM),
        }
    }

    fn write_zeroes(&self, off: u64, len: u64, may_unmap: bool) -> Result<(), i32> {
        match (&self.0.data, &self.0.format) {
            (Some(d), _) => sync_ops::write_zeroes(&d.io, d.base + off, len, may_unmap).map(|_| ()),
            (None, Some(f)) => f.write_zeroes(off, len, may_unmap),
            (None, None) => Err(libc::ENOMEDIUM),
        }
    }

    fn debug_event(&self, ev: crate::debug::DebugEvent) {
        if let (None, Some(f)) = (&self.0.data, &self.0.format) {
            f.debug_event(ev);
        }
    }
}

impl NodeIo {
    /// The node's size as its parent sees it.
    pub fn size(&self) -> u64 {
        self.0
            .root
            .as_ref()
            .and_then(|n| n.size().ok())
            .unwrap_or(0)
    }
}

/// `bdrv_is_allocated_above(from, bottom, include_base=true)`: whether some
/// layer from `from` down to `bottom` (the whole chain with `None`) holds
/// the range, and for how many bytes from `off` that answer holds.
pub fn allocated_above(
    from: &Arc<Node>,
    bottom: Option<&Arc<Node>>,
    off: u64,
    mut n: u64,
) -> Result<(bool, u64), i32> {
    let mut cur = Some(from.clone());
    while let Some(layer) = cur {
        let size = layer.size().map_err(|_| libc::EIO)?;
        if off < size {
            let (alloc, pnum) = layer.driver.block_status(off, n.min(size - off))?;
            if alloc {
                return Ok((true, pnum));
            }
            n = n.min(pnum);
        }
        if bottom.is_some_and(|b| Arc::ptr_eq(&layer, b)) {
            break;
        }
        cur = layer.child("backing");
    }
    Ok((false, n))
}
