//! Compressed clusters (docs/interop/qcow2.txt "Compressed Clusters
//! Descriptor"; QEMU block/qcow2-threads.c `qcow2_zlib_decompress`): raw
//! deflate data (zlib window bits -12, no zlib header) that must inflate
//! to exactly one cluster.

use flate2::{Decompress, FlushDecompress, Status};

use super::error::{Qcow2Error, Result};

/// Inflates one compressed cluster of `cluster_size` bytes.
pub fn inflate_cluster(input: &[u8], cluster_size: usize) -> Result<Vec<u8>> {
    let mut out = vec![0u8; cluster_size];
    let mut d = Decompress::new(false);
    let r = d.decompress(input, &mut out, FlushDecompress::Finish);
    // QEMU accepts Z_STREAM_END and Z_BUF_ERROR as long as the output is full
    // (the compressed size is rounded up to sectors, so input may have tail
    // garbage).
    match r {
        Ok(Status::StreamEnd | Status::BufError | Status::Ok)
            if d.total_out() == cluster_size as u64 =>
        {
            Ok(out)
        }
        _ => Err(Qcow2Error::Io {
            what: "Could not decompress cluster".into(),
            errno: libc::EIO,
        }),
    }
}
