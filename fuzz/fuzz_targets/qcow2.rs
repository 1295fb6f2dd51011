//! Arbitrary bytes as a qcow2 image file held in memory: the header and
//! extension parser, the L1/L2 and refcount tables, reads, allocating
//! writes, write-zeroes, discard, growing, check and repair, the header
//! rewrite of `change-backing-file`, and closing (the dirty bit). A hostile
//! image must give an error, never a panic, an out-of-bounds access or an
//! unbounded allocation. The first input byte chooses the operations.
#![no_main]
use std::sync::{Arc, Mutex};

use block::qcow2::{ImageFile, OpenOptions, Qcow2};
use libfuzzer_sys::fuzz_target;

/// Writes may grow the image to this size; past it they fail (ENOSPC), so
/// a table pointing at 2^62 cannot make the fuzzer allocate it.
const MAX_FILE: u64 = 16 << 20;

/// The fuzz input as the image's host file.
struct MemFile(Mutex<Vec<u8>>);

fn enospc() -> std::io::Error {
    std::io::Error::from_raw_os_error(libc::ENOSPC)
}

impl ImageFile for MemFile {
    fn read_at(&self, buf: &mut [u8], off: u64) -> std::io::Result<()> {
        let v = self.0.lock().unwrap();
        buf.fill(0);
        if off < v.len() as u64 {
            let start = off as usize;
            let n = buf.len().min(v.len() - start);
            buf[..n].copy_from_slice(&v[start..start + n]);
        }
        Ok(())
    }

    fn write_at(&self, buf: &[u8], off: u64) -> std::io::Result<()> {
        let end = off.checked_add(buf.len() as u64).ok_or_else(enospc)?;
        if end > MAX_FILE {
            return Err(enospc());
        }
        let mut v = self.0.lock().unwrap();
        if v.len() < end as usize {
            v.resize(end as usize, 0);
        }
        v[off as usize..end as usize].copy_from_slice(buf);
        Ok(())
    }

    fn flush(&self) -> std::io::Result<()> {
        Ok(())
    }

    fn file_size(&self) -> std::io::Result<u64> {
        Ok(self.0.lock().unwrap().len() as u64)
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        if len > MAX_FILE {
            return Err(enospc());
        }
        self.0.lock().unwrap().resize(len as usize, 0);
        Ok(())
    }
}

fn open(image: &[u8], writable: bool) -> Option<Qcow2> {
    let f = Arc::new(MemFile(Mutex::new(image.to_vec())));
    Qcow2::open(
        f,
        OpenOptions {
            writable,
            ..OpenOptions::default()
        },
    )
    .ok()
}

fuzz_target!(|data: &[u8]| {
    let Some((&ops, image)) = data.split_first() else {
        return;
    };
    // Read-only: reads spread over the disk, the allocation map, check.
    if let Some(q) = open(image, false) {
        let size = q.virtual_size();
        let mut buf = vec![0u8; 4096];
        for i in 0..4u64 {
            let off = (size / 4 * i) & !511;
            let len = 4096.min(size.saturating_sub(off)) as usize;
            let _ = q.read_at(&mut buf[..len], off);
        }
        let _ = q.map(0, size.min(64 << 20));
        let _ = q.check();
        let _ = q.write_at(&buf[..512], 0);
    }
    // Read-write: writes, zeroes, discards, growth, the header rewrite,
    // check and repair, then close.
    if let Some(q) = open(image, true) {
        let size = q.virtual_size();
        let data = vec![0xa5u8; 8192];
        let at = |k: u64| (size / 8 * k) & !511;
        for k in 0..3u64 {
            let off = at(k + (ops as u64 & 3));
            let len = 8192.min(size.saturating_sub(off)) as usize;
            let _ = q.write_at(&data[..len], off);
        }
        if ops & 4 != 0 {
            let _ = q.write_zeroes(at(1), 4096.min(size.saturating_sub(at(1))), ops & 8 != 0);
        }
        if ops & 16 != 0 {
            let _ = q.discard(at(2), 65536.min(size.saturating_sub(at(2))));
        }
        if ops & 32 != 0 {
            let _ = q.truncate(size.saturating_add(1 << 20).min(1 << 30));
        }
        if ops & 64 != 0 {
            let _ = q.change_backing_file(Some("fuzz-backing.qcow2"), Some("qcow2"));
        }
        let _ = q.flush();
        let _ = q.check();
        if ops & 128 != 0 {
            let _ = q.repair();
        }
        let mut buf = vec![0u8; 8192];
        let _ = q.read_at(&mut buf[..8192.min(size) as usize], 0);
        let _ = q.close();
    }
});
