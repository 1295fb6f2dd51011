//! Decompressors for the payload of a Linux bzImage (`vmlinux.bin.*`).
//!
//! The kernel build (`arch/x86/boot/compressed/Makefile`) compresses the ELF
//! `vmlinux.bin` (plus relocations) with one of gzip, bzip2, lzma, xz (with the
//! x86 BCJ filter), lzo, lz4 (legacy frame format) or zstd, then appends the
//! uncompressed size as a little-endian u32. We handle all but bzip2 and lzo,
//! which no common distribution kernel uses.

use std::fmt;
use std::io::Read;

use crate::BootError;

/// Decompressed output larger than this is refused (a kernel ELF is tens of
/// MiB; this guards against a decompression bomb).
pub const MAX_DECOMPRESSED: usize = 512 << 20;

/// Memory the xz / lzma decoders may use for their dictionary (Debian uses a
/// 32 MiB xz dictionary).
const LZMA_MEM_LIMIT_KB: u32 = 512 * 1024;

/// Block size of the lz4 legacy frame format: every block decompresses to at
/// most this much.
const LZ4_LEGACY_BLOCK: usize = 8 << 20;
const LZ4_LEGACY_MAGIC: u32 = 0x184c_2102;

/// A compression format recognised by its magic bytes, as the kernel's own
/// `lib/decompress.c` table does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Bzip2,
    Lzma,
    Xz,
    Lzo,
    Lz4,
    Zstd,
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compression::Gzip => "gzip",
            Compression::Bzip2 => "bzip2",
            Compression::Lzma => "lzma",
            Compression::Xz => "xz",
            Compression::Lzo => "lzo",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        })
    }
}

impl Compression {
    /// Identifies the format from the first bytes of `data`.
    pub fn detect(data: &[u8]) -> Option<Compression> {
        const MAGICS: &[(&[u8], Compression)] = &[
            (&[0x1f, 0x8b], Compression::Gzip),
            (&[0x1f, 0x9e], Compression::Gzip),
            (b"BZh", Compression::Bzip2),
            (&[0x5d, 0x00, 0x00], Compression::Lzma),
            (&[0xfd, b'7', b'z', b'X', b'Z', 0x00], Compression::Xz),
            (&[0x89, b'L', b'Z', b'O'], Compression::Lzo),
            (&[0x02, 0x21, 0x4c, 0x18], Compression::Lz4),
            (&[0x28, 0xb5, 0x2f, 0xfd], Compression::Zstd),
        ];
        MAGICS
            .iter()
            .find(|(magic, _)| data.starts_with(magic))
            .map(|&(_, c)| c)
    }

    /// Whether [`decompress`] handles this format.
    pub fn is_supported(self) -> bool {
        !matches!(self, Compression::Bzip2 | Compression::Lzo)
    }
}

/// Decompresses `data` in `format`, refusing output beyond `limit` bytes.
/// Trailing bytes after the compressed stream (the kernel's appended size
/// word) are ignored. `size_hint` only sizes the first allocation.
pub fn decompress(
    format: Compression,
    data: &[u8],
    size_hint: Option<usize>,
    limit: usize,
) -> Result<Vec<u8>, BootError> {
    let err = |message: String| BootError::Decompress { format, message };
    let capacity = size_hint.unwrap_or(data.len() * 4).min(limit);
    match format {
        Compression::Gzip => read_limited(flate2::read::GzDecoder::new(data), capacity, limit)
            .map_err(|e| e.into_boot(format)),
        Compression::Xz => read_limited(
            lzma_rust2::XzReader::new_mem_limit(data, false, LZMA_MEM_LIMIT_KB),
            capacity,
            limit,
        )
        .map_err(|e| e.into_boot(format)),
        Compression::Lzma => {
            let reader = lzma_rust2::LzmaReader::new_mem_limit(data, LZMA_MEM_LIMIT_KB, None)
                .map_err(|e| err(e.to_string()))?;
            read_limited(reader, capacity, limit).map_err(|e| e.into_boot(format))
        }
        Compression::Zstd => {
            let reader =
                ruzstd::decoding::StreamingDecoder::new(data).map_err(|e| err(e.to_string()))?;
            read_limited(reader, capacity, limit).map_err(|e| e.into_boot(format))
        }
        Compression::Lz4 => lz4_legacy(data, capacity, limit),
        Compression::Bzip2 | Compression::Lzo => Err(err("format not supported".into())),
    }
}

enum ReadError {
    Io(std::io::Error),
    TooLarge(usize),
}

impl ReadError {
    fn into_boot(self, format: Compression) -> BootError {
        match self {
            ReadError::Io(e) => BootError::Decompress {
                format,
                message: e.to_string(),
            },
            ReadError::TooLarge(limit) => BootError::DecompressedTooLarge { limit },
        }
    }
}

fn read_limited<R: Read>(reader: R, capacity: usize, limit: usize) -> Result<Vec<u8>, ReadError> {
    let mut out = Vec::with_capacity(capacity);
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(ReadError::Io)?;
    if out.len() > limit {
        return Err(ReadError::TooLarge(limit));
    }
    Ok(out)
}

/// The lz4 "legacy" frame the kernel uses (`lz4 -l`): a magic word, then
/// blocks each prefixed by their compressed size; a magic word may start a
/// new stream. lz4_flex only implements the modern frame format, so the
/// framing is done here and lz4_flex decodes the blocks.
fn lz4_legacy(data: &[u8], capacity: usize, limit: usize) -> Result<Vec<u8>, BootError> {
    let err = |message: &str| BootError::Decompress {
        format: Compression::Lz4,
        message: message.to_string(),
    };
    let word = |at: usize| -> Option<u32> {
        data.get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    if word(0) != Some(LZ4_LEGACY_MAGIC) {
        return Err(err("bad magic"));
    }
    let mut out = Vec::with_capacity(capacity);
    let mut block = vec![0u8; LZ4_LEGACY_BLOCK];
    let mut pos = 4;
    while let Some(size) = word(pos) {
        pos += 4;
        if size == LZ4_LEGACY_MAGIC {
            continue;
        }
        if pos == data.len() {
            // The 4 bytes just read were the kernel's appended size word.
            break;
        }
        let size = size as usize;
        let chunk = data
            .get(pos..pos.saturating_add(size))
            .ok_or_else(|| err("truncated block"))?;
        pos += size;
        let n =
            lz4_flex::block::decompress_into(chunk, &mut block).map_err(|e| err(&e.to_string()))?;
        if out.len() + n > limit {
            return Err(BootError::DecompressedTooLarge { limit });
        }
        out.extend_from_slice(&block[..n]);
    }
    if out.is_empty() {
        return Err(err("no data"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{fixture, COMPRESSED_FIXTURES, PVH_FIXTURE};

    #[test]
    fn detects_magics() {
        assert_eq!(
            Compression::detect(&[0x1f, 0x8b, 8]),
            Some(Compression::Gzip)
        );
        assert_eq!(Compression::detect(b"\xfd7zXZ\0\0"), Some(Compression::Xz));
        assert_eq!(
            Compression::detect(&[0x28, 0xb5, 0x2f, 0xfd]),
            Some(Compression::Zstd)
        );
        assert_eq!(
            Compression::detect(&[0x5d, 0, 0, 0x80]),
            Some(Compression::Lzma)
        );
        assert_eq!(
            Compression::detect(&[0x02, 0x21, 0x4c, 0x18]),
            Some(Compression::Lz4)
        );
        assert_eq!(Compression::detect(b"BZh91AY"), Some(Compression::Bzip2));
        assert_eq!(Compression::detect(b"\x89LZO\0"), Some(Compression::Lzo));
        assert_eq!(Compression::detect(b"\x7fELF"), None);
        assert_eq!(Compression::detect(b""), None);
        assert!(!Compression::Bzip2.is_supported());
        assert!(Compression::Xz.is_supported());
    }

    /// Each fixture is the same small PVH ELF, compressed by the real tool
    /// the kernel build uses, with the kernel's 4-byte size word appended.
    #[test]
    fn decompresses_every_supported_format() {
        let expected = fixture(PVH_FIXTURE);
        for &(name, format) in COMPRESSED_FIXTURES {
            let mut data = fixture(name);
            assert_eq!(Compression::detect(&data), Some(format), "{name}");
            data.extend_from_slice(&(expected.len() as u32).to_le_bytes());
            let out = decompress(format, &data, Some(expected.len()), MAX_DECOMPRESSED)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(out, expected, "{name}");
        }
    }

    #[test]
    fn corrupt_input_is_an_error() {
        for &(name, format) in COMPRESSED_FIXTURES {
            let data = fixture(name);
            // Truncated.
            let cut = &data[..data.len() / 2];
            assert!(
                decompress(format, cut, None, MAX_DECOMPRESSED).is_err(),
                "{name} truncated"
            );
            // Garbage after the magic.
            let mut bad = data.clone();
            for b in bad.iter_mut().skip(8) {
                *b ^= 0x5a;
            }
            assert!(
                decompress(format, &bad, None, MAX_DECOMPRESSED).is_err(),
                "{name} garbage"
            );
            // Just the magic.
            assert!(
                decompress(format, &data[..4], None, MAX_DECOMPRESSED).is_err(),
                "{name} magic"
            );
        }
        assert!(decompress(Compression::Bzip2, b"BZh9", None, 100).is_err());
    }

    #[test]
    fn output_limit_is_enforced() {
        let expected = fixture(PVH_FIXTURE);
        for &(name, format) in COMPRESSED_FIXTURES {
            let data = fixture(name);
            let r = decompress(format, &data, None, expected.len() - 1);
            assert!(
                matches!(r, Err(BootError::DecompressedTooLarge { .. })),
                "{name}"
            );
        }
    }
}
