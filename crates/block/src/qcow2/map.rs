//! Allocation map (`qemu-img map`, the later block-status): which guest
//! ranges are data at which host offset, zero, compressed or unallocated.

use super::error::Result;
use super::meta::{ClusterKind, Meta};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtentKind {
    /// Stored in this image at host byte offset `host`.
    Data { host: u64 },
    /// Reads as zeros from this image (`allocated`: a host cluster is kept).
    Zero { allocated: bool },
    /// Stored compressed in this image.
    Compressed,
    /// Not in this image: comes from the backing file, or zeros.
    Unallocated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub offset: u64,
    pub len: u64,
    pub kind: ExtentKind,
}

pub(crate) fn map(m: &mut Meta, off: u64, len: u64) -> Result<Vec<Extent>> {
    let mut out: Vec<Extent> = Vec::new();
    let cs = m.cs;
    let mut pos = off;
    let end = off + len;
    while pos < end {
        let in_cl = pos % cs;
        let n = (cs - in_cl).min(end - pos);
        let kind = match m.lookup(pos / cs)?.0 {
            ClusterKind::Unallocated => ExtentKind::Unallocated,
            ClusterKind::ZeroPlain => ExtentKind::Zero { allocated: false },
            ClusterKind::ZeroAlloc(_) => ExtentKind::Zero { allocated: true },
            ClusterKind::Normal(h) => ExtentKind::Data { host: h + in_cl },
            ClusterKind::Compressed(..) => ExtentKind::Compressed,
        };
        if let Some(last) = out.last_mut() {
            let merge = match (last.kind, kind) {
                (ExtentKind::Data { host: a }, ExtentKind::Data { host: b }) => a + last.len == b,
                (a, b) => a == b,
            };
            if merge {
                last.len += n;
                pos += n;
                continue;
            }
        }
        out.push(Extent {
            offset: pos,
            len: n,
            kind,
        });
        pos += n;
    }
    Ok(out)
}
