//! The `copy-on-read` filter (QEMU 7.2 block/copy-on-read.c): reads through
//! it copy what the node below it (`file`) gets from its backing chain into
//! that node, as far as the data lies above `bottom`; everything else
//! passes through.

use std::sync::{Arc, RwLock};

use crate::error::BlockError;
use crate::io::IoBuf;
use crate::job::nodeio::{allocated_above, NodeIo};
use crate::node::{Driver, FormatIo, Node};
use crate::perm;

/// The filtered node; a mirror with `replaces` may swap it
/// ([`Driver::replace_child`]), and requests follow.
type FileRef = Arc<RwLock<Arc<Node>>>;

fn current(f: &FileRef) -> Arc<Node> {
    f.read().unwrap_or_else(|e| e.into_inner()).clone()
}

pub struct CorDriver {
    file: FileRef,
    bottom: Option<Arc<Node>>,
}

impl CorDriver {
    /// `cor_open`: `bottom` must be a format node in `file`'s backing chain.
    pub fn open(file: Arc<Node>, bottom: Option<Arc<Node>>) -> Result<Self, BlockError> {
        if let Some(b) = &bottom {
            if b.driver.is_filter() {
                return Err(BlockError::new(format!(
                    "Bottom node '{}' is a filter",
                    b.name
                )));
            }
            let in_chain = file.backing_chain().iter().any(|n| Arc::ptr_eq(n, b));
            if !in_chain {
                return Err(BlockError::new(format!(
                    "Bottom node '{}' is not a backing file of the top node",
                    b.name
                )));
            }
        }
        Ok(CorDriver {
            file: Arc::new(RwLock::new(file)),
            bottom,
        })
    }
}

impl Driver for CorDriver {
    fn format_name(&self) -> &'static str {
        "copy-on-read"
    }

    /// `bdrv_refresh_filename`: always a `json:` name (observed on QEMU
    /// 7.2, over a file node as over null-co).
    fn filename(&self) -> String {
        let mut m = serde_json::Map::new();
        m.insert("driver".into(), "copy-on-read".into());
        m.insert(
            "file".into(),
            crate::qcow2_node::node_open_options(&current(&self.file)),
        );
        format!(
            "json:{}",
            crate::qcow2_node::qobject_json(&serde_json::Value::Object(m))
        )
    }

    fn size(&self) -> Result<u64, BlockError> {
        current(&self.file).size()
    }

    fn actual_size(&self) -> Option<u64> {
        current(&self.file).driver.actual_size()
    }

    fn truncate(&self, size: u64) -> Result<(), BlockError> {
        current(&self.file).driver.truncate(size)
    }

    fn is_filter(&self) -> bool {
        true
    }

    fn has_info(&self) -> bool {
        current(&self.file).driver.has_info()
    }

    /// `cor_child_perm`: read, write and resize pass through; it writes
    /// unchanged data itself, and always lets others do so.
    fn child_perm(&self, _role: &str, p: u64, shared: u64) -> (u64, u64) {
        const PASS: u64 = perm::CONSISTENT_READ | perm::WRITE | perm::RESIZE;
        let np = (p & PASS) | perm::WRITE_UNCHANGED;
        let ns = (shared & PASS) | (perm::ALL & !PASS);
        (np, ns)
    }

    fn block_status(&self, off: u64, len: u64) -> Result<(bool, u64), i32> {
        current(&self.file).driver.block_status(off, len)
    }

    fn format_io(&self) -> Option<Arc<dyn FormatIo>> {
        Some(Arc::new(CorIo {
            file: self.file.clone(),
            bottom: self.bottom.clone(),
        }))
    }

    fn replace_child(&self, role: &str, new: &Arc<Node>) -> Result<(), BlockError> {
        if role != "file" {
            return Err(BlockError::new(format!(
                "copy-on-read has no child '{role}'"
            )));
        }
        *self.file.write().unwrap_or_else(|e| e.into_inner()) = new.clone();
        Ok(())
    }
}

struct CorIo {
    file: FileRef,
    bottom: Option<Arc<Node>>,
}

impl CorIo {
    /// `cor_co_preadv_part`: each run whose data the chain between
    /// `file`'s backing and `bottom` holds is copied up first (the block
    /// layer's BDRV_REQ_COPY_ON_READ); a run only `bottom`'s backing holds
    /// is read as it is.
    fn copy_up(&self, file: &Arc<Node>, off: u64, len: u64) -> Result<(), i32> {
        let Some(first) = file.child("backing") else {
            return Ok(());
        };
        let mut pos = off;
        let end = off + len;
        while pos < end {
            let (above, n) = match &self.bottom {
                None => (true, end - pos),
                Some(b) => allocated_above(&first, Some(b), pos, end - pos)?,
            };
            let n = n.max(1).min(end - pos);
            if above {
                match file.driver.copy_on_read(pos, n) {
                    // A format without a backing file to copy from.
                    Ok(()) | Err(libc::ENOTSUP) => {}
                    Err(e) => return Err(e),
                }
            }
            pos += n;
        }
        Ok(())
    }
}

impl CorIo {
    /// The node filtered now, and the way to reach it.
    fn io(&self) -> (Arc<Node>, NodeIo) {
        let f = current(&self.file);
        let io = NodeIo::new(&f);
        (f, io)
    }
}

impl FormatIo for CorIo {
    fn read(&self, off: u64, buf: &mut [u8]) -> Result<(), i32> {
        let (f, io) = self.io();
        self.copy_up(&f, off, buf.len() as u64)?;
        io.read(off, buf)
    }
    fn readv(&self, off: u64, bufs: &[IoBuf]) -> Result<(), i32> {
        let (f, io) = self.io();
        self.copy_up(&f, off, crate::iovec::total(bufs) as u64)?;
        io.readv(off, bufs)
    }
    fn write(&self, off: u64, buf: &[u8]) -> Result<(), i32> {
        self.io().1.write(off, buf)
    }
    fn flush(&self) -> Result<(), i32> {
        self.io().1.flush()
    }
    fn discard(&self, off: u64, len: u64) -> Result<(), i32> {
        self.io().1.discard(off, len)
    }
    fn write_zeroes(&self, off: u64, len: u64, may_unmap: bool) -> Result<(), i32> {
        self.io().1.write_zeroes(off, len, may_unmap)
    }
    fn debug_event(&self, ev: crate::debug::DebugEvent) {
        self.io().1.debug_event(ev);
    }
}
