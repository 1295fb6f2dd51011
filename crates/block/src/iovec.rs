//! Scatter lists of guest buffers ([`IoBuf`]s) as one byte range: the
//! pieces a format driver maps a request into (QEMU's `qemu_iovec_slice`,
//! `qemu_iovec_memset`, `qemu_iovec_from_buf`), so a read lands in guest RAM
//! without a bounce copy.

use crate::io::IoBuf;

/// Total bytes the list describes.
pub fn total(bufs: &[IoBuf]) -> usize {
    bufs.iter().map(|b| b.len).sum()
}

/// The bytes `start..start + len` of the list, as a list of its own.
/// A range past the end is cut at the end.
pub fn slice(bufs: &[IoBuf], mut start: usize, mut len: usize) -> Vec<IoBuf> {
    let mut out = Vec::new();
    for b in bufs {
        if len == 0 {
            break;
        }
        if start >= b.len {
            start -= b.len;
            continue;
        }
        let n = (b.len - start).min(len);
        // SAFETY: start < b.len, so the pointer stays inside the buffer.
        out.push(IoBuf {
            ptr: unsafe { b.ptr.add(start) },
            len: n,
        });
        len -= n;
        start = 0;
    }
    out
}

/// Fills every byte of the list with zeros.
pub fn zero(bufs: &[IoBuf]) {
    for b in bufs {
        // SAFETY: an IoBuf is valid for writes of its length (see IoBuf).
        unsafe { std::ptr::write_bytes(b.ptr, 0, b.len) };
    }
}

/// Copies `src` into the list, from its start; stops at the shorter.
pub fn copy_from(bufs: &[IoBuf], src: &[u8]) {
    let mut pos = 0;
    for b in bufs {
        let n = b.len.min(src.len() - pos);
        // SAFETY: as in `zero`; `src` and guest RAM do not overlap.
        unsafe { std::ptr::copy_nonoverlapping(src[pos..].as_ptr(), b.ptr, n) };
        pos += n;
        if pos == src.len() {
            break;
        }
    }
}

/// One buffer as a list, for callers that hold a plain slice.
pub fn of(buf: &mut [u8]) -> [IoBuf; 1] {
    [IoBuf {
        ptr: buf.as_mut_ptr(),
        len: buf.len(),
    }]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(mem: &mut [u8], lens: &[usize]) -> Vec<IoBuf> {
        let mut out = Vec::new();
        let mut p = mem.as_mut_ptr();
        for &len in lens {
            out.push(IoBuf { ptr: p, len });
            p = unsafe { p.add(len) };
        }
        out
    }

    #[test]
    fn slices_cross_buffer_boundaries() {
        let mut mem: Vec<u8> = (0..30).collect();
        let bufs = list(&mut mem, &[10, 5, 15]);
        assert_eq!(total(&bufs), 30);
        let s = slice(&bufs, 8, 10);
        assert_eq!(s.iter().map(|b| b.len).collect::<Vec<_>>(), [2, 5, 3]);
        assert_eq!(unsafe { *s[0].ptr }, 8);
        assert_eq!(unsafe { *s[2].ptr }, 15);
        // Past the end: cut, never beyond the list.
        assert_eq!(total(&slice(&bufs, 25, 100)), 5);
        assert!(slice(&bufs, 30, 4).is_empty());
    }

    #[test]
    fn zero_and_copy_touch_only_the_slice() {
        let mut mem = vec![0xaau8; 24];
        let bufs = list(&mut mem, &[4, 4, 16]);
        zero(&slice(&bufs, 2, 4));
        copy_from(&slice(&bufs, 10, 3), &[1, 2, 3]);
        let mut want = vec![0xaau8; 24];
        want[2..6].fill(0);
        want[10..13].copy_from_slice(&[1, 2, 3]);
        assert_eq!(mem, want);
    }
}
