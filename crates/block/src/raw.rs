//! The `raw` format driver (QEMU 7.2 block/raw-format.c): a linear window
//! (`offset`, optional fixed `size`) onto its `file` child.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::debug::DebugEvent;
use crate::error::BlockError;
use crate::io::IoBuf;
use crate::job::nodeio::NodeIo;
use crate::node::{Driver, FormatIo, Node};
use crate::perm;

pub struct RawDriver {
    child: Arc<Node>,
    offset: u64,
    /// `size=` given: the disk has a fixed size and cannot be resized.
    fixed: Option<u64>,
    /// The fixed size as currently honoured.
    size: AtomicU64,
}

impl RawDriver {
    /// `raw_read_options` + `raw_apply_options`.
    pub fn open(
        child: Arc<Node>,
        offset: Option<u64>,
        size: Option<u64>,
    ) -> Result<Self, BlockError> {
        let real = child.size()?;
        let offset = offset.unwrap_or(0);
        if offset > real {
            return Err(BlockError::new(format!(
                "Offset ({offset}) cannot be greater than size of the containing file ({real})"
            )));
        }
        if let Some(sz) = size {
            if real - offset < sz {
                // QEMU's message has the doubled space.
                return Err(BlockError::new(format!(
                    "The sum of offset ({offset}) and size ({sz}) has to be smaller or equal to the  actual size of the containing file ({real})"
                )));
            }
            if sz % 512 != 0 {
                return Err(BlockError::new("Specified size is not multiple of 512"));
            }
        }
        Ok(RawDriver {
            child,
            offset,
            fixed: size,
            size: AtomicU64::new(size.unwrap_or(0)),
        })
    }
}

impl Driver for RawDriver {
    fn format_name(&self) -> &'static str {
        "raw"
    }

    fn filename(&self) -> String {
        self.child.filename()
    }

    /// `raw_getlength`: follows the file, honouring a fixed size.
    fn size(&self) -> Result<u64, BlockError> {
        let len = self.child.size()?;
        if len < self.offset {
            return Ok(0);
        }
        Ok(match self.fixed {
            Some(_) => {
                let s = self.size.load(Ordering::Relaxed).min(len - self.offset);
                self.size.store(s, Ordering::Relaxed);
                s
            }
            None => len - self.offset,
        })
    }

    fn actual_size(&self) -> Option<u64> {
        self.child.driver.actual_size()
    }

    /// `raw_co_truncate`.
    fn truncate(&self, size: u64) -> Result<(), BlockError> {
        if self.fixed.is_some() {
            return Err(BlockError::new("Cannot resize fixed-size raw disks"));
        }
        let total = size
            .checked_add(self.offset)
            .filter(|t| *t <= i64::MAX as u64)
            .ok_or_else(|| BlockError::new("Disk size too large for the chosen offset"))?;
        self.child.driver.truncate(total)
    }

    /// `raw_child_perm`: pass-through (filter defaults), WRITE and RESIZE
    /// only when a parent holds them.
    fn child_perm(&self, _role: &str, p: u64, shared: u64) -> (u64, u64) {
        let nperm = p & perm::DEFAULT_PERM_PASSTHROUGH;
        let nshared = (shared & perm::DEFAULT_PERM_PASSTHROUGH) | perm::DEFAULT_PERM_UNCHANGED;
        (nperm, nshared)
    }

    /// `raw_get_info` asks the child.
    fn has_info(&self) -> bool {
        self.child.driver.has_info()
    }

    fn linear(&self) -> Option<(u64, Option<u64>)> {
        Some((self.offset, self.fixed))
    }

    /// Over a child that is no host file (a filter, `null-co`): the
    /// requests go through the child's own path (a BlockBackend takes the
    /// host file directly when there is one, see [`Node::resolve_file`]).
    fn format_io(&self) -> Option<Arc<dyn FormatIo>> {
        Some(Arc::new(RawIo {
            child: NodeIo::new(&self.child),
            offset: self.offset,
        }))
    }
}

/// `raw_co_preadv`/`raw_co_pwritev`: the window onto the child, with the
/// debug events QEMU's raw driver signals on it.
struct RawIo {
    child: NodeIo,
    offset: u64,
}

impl FormatIo for RawIo {
    fn read(&self, off: u64, buf: &mut [u8]) -> Result<(), i32> {
        self.child.debug_event(DebugEvent::READ_AIO);
        self.child.read(off + self.offset, buf)
    }
    fn readv(&self, off: u64, bufs: &[IoBuf]) -> Result<(), i32> {
        self.child.debug_event(DebugEvent::READ_AIO);
        self.child.readv(off + self.offset, bufs)
    }
    fn write(&self, off: u64, buf: &[u8]) -> Result<(), i32> {
        self.child.debug_event(DebugEvent::WRITE_AIO);
        self.child.write(off + self.offset, buf)
    }
    fn flush(&self) -> Result<(), i32> {
        self.child.flush()
    }
    fn discard(&self, off: u64, len: u64) -> Result<(), i32> {
        self.child.discard(off + self.offset, len)
    }
    fn write_zeroes(&self, off: u64, len: u64, may_unmap: bool) -> Result<(), i32> {
        self.child.write_zeroes(off + self.offset, len, may_unmap)
    }
}
