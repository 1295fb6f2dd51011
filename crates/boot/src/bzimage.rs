//! Linux bzImage: the setup header (Documentation/arch/x86/boot.rst) and the
//! compressed payload (`vmlinux.bin.*`) inside the protected-mode part.

use linux_loader::loader::bootparam::setup_header;
use vm_memory::ByteValued;

use crate::decompress::{self, Compression, MAX_DECOMPRESSED};
use crate::BootError;

/// Offset of the setup header in the image (and in `boot_params`).
pub const SETUP_HEADER_OFFSET: usize = 0x1f1;
const HDRS_MAGIC: &[u8; 4] = b"HdrS";
/// loadflags.
pub const LOADED_HIGH: u8 = 0x01;
pub const CAN_USE_HEAP: u8 = 0x80;
/// xloadflags.
pub const XLF_KERNEL_64: u16 = 0x01;
/// Default `initrd_addr_max` for protocols before 2.03.
pub const DEFAULT_INITRD_ADDR_MAX: u32 = 0x37ff_ffff;

/// A parsed bzImage, borrowing the file.
#[derive(Clone)]
pub struct BzImage<'a> {
    image: &'a [u8],
    /// The setup header as found in the image; bytes past the header's own
    /// end (0x202 + byte 0x201) are zero.
    pub header: setup_header,
    /// Bytes of real-mode setup code preceding the protected-mode kernel.
    pub setup_size: usize,
}

impl std::fmt::Debug for BzImage<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BzImage")
            .field("version", &format_args!("{:#06x}", self.version()))
            .field("setup_size", &self.setup_size)
            .field("kernel_len", &self.kernel().len())
            .finish()
    }
}

/// The decompressed payload of a bzImage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecompressedPayload {
    pub format: Compression,
    pub data: Vec<u8>,
}

impl<'a> BzImage<'a> {
    /// Whether `image` carries the "HdrS" setup header magic.
    pub fn is_bzimage(image: &[u8]) -> bool {
        image.get(0x202..0x206) == Some(&HDRS_MAGIC[..])
    }

    pub fn parse(image: &'a [u8]) -> Result<Self, BootError> {
        let bad = |m: &str| BootError::InvalidBzImage(m.to_string());
        if !Self::is_bzimage(image) {
            return Err(bad("no HdrS magic at 0x202"));
        }
        let mut header = setup_header::default();
        let hdr_len = std::mem::size_of::<setup_header>();
        // The header ends at 0x202 + the jump offset at 0x201.
        let declared_end = 0x202 + usize::from(image[0x201]);
        let end = declared_end
            .min(SETUP_HEADER_OFFSET + hdr_len)
            .min(image.len());
        let n = end - SETUP_HEADER_OFFSET;
        header.as_mut_slice()[..n].copy_from_slice(&image[SETUP_HEADER_OFFSET..end]);

        let setup_sects = match header.setup_sects {
            0 => 4,
            n => usize::from(n),
        };
        let setup_size = (setup_sects + 1) * 512;
        if setup_size >= image.len() {
            return Err(bad("setup sectors extend to the end of the file"));
        }
        Ok(BzImage {
            image,
            header,
            setup_size,
        })
    }

    /// Boot protocol version, e.g. 0x020f.
    pub fn version(&self) -> u16 {
        self.header.version
    }

    pub fn version_parts(&self) -> (u8, u8) {
        ((self.version() >> 8) as u8, self.version() as u8)
    }

    /// The protected-mode kernel: everything after the setup sectors.
    pub fn kernel(&self) -> &'a [u8] {
        &self.image[self.setup_size..]
    }

    /// The raw bytes of the setup header, to copy into `boot_params`.
    pub fn image(&self) -> &'a [u8] {
        self.image
    }

    /// The compressed payload (protocol 2.08+), size word included.
    pub fn payload(&self) -> Result<&'a [u8], BootError> {
        if self.version() < 0x0208 {
            return Err(BootError::UnsupportedBzImage {
                major: self.version_parts().0,
                minor: self.version_parts().1,
                reason: "no payload_offset/payload_length before 2.08",
            });
        }
        let off = self.header.payload_offset as usize;
        let len = self.header.payload_length as usize;
        let kernel = self.kernel();
        off.checked_add(len)
            .and_then(|end| kernel.get(off..end))
            .filter(|p| !p.is_empty())
            .ok_or_else(|| {
                BootError::InvalidBzImage(format!(
                    "payload {off:#x}+{len:#x} outside the protected-mode kernel ({:#x} bytes)",
                    kernel.len()
                ))
            })
    }

    /// Decompresses the payload; `Ok(None)` when its format is unknown or
    /// not supported (bzip2, lzo).
    pub fn decompress_payload(&self) -> Result<Option<DecompressedPayload>, BootError> {
        let payload = self.payload()?;
        let Some(format) = Compression::detect(payload).filter(|c| c.is_supported()) else {
            return Ok(None);
        };
        // The build appends the uncompressed size as a little-endian u32.
        let hint = payload.len().checked_sub(4).map(|at| {
            u32::from_le_bytes([
                payload[at],
                payload[at + 1],
                payload[at + 2],
                payload[at + 3],
            ]) as usize
        });
        let data = decompress::decompress(format, payload, hint, MAX_DECOMPRESSED)?;
        Ok(Some(DecompressedPayload { format, data }))
    }
}

/// Decompresses a bzImage's payload (normally an ELF `vmlinux`). Errors when
/// `image` is no bzImage, has no payload fields, or its compression is not
/// supported.
pub fn decompress_bzimage_payload(image: &[u8]) -> Result<DecompressedPayload, BootError> {
    let bz = BzImage::parse(image)?;
    bz.decompress_payload()?.ok_or_else(|| {
        let p = bz.payload().unwrap_or_default();
        BootError::InvalidBzImage(match Compression::detect(p) {
            Some(c) => format!("{c} payload compression is not supported"),
            None => format!(
                "unknown payload compression (magic {:02x?})",
                &p[..p.len().min(6)]
            ),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{build_bzimage, build_elf, fixture, BzSpec, ElfSpec, PVH_FIXTURE};

    #[test]
    fn parses_header_fields() {
        let img = build_bzimage(&BzSpec::default());
        let bz = BzImage::parse(&img).unwrap();
        assert_eq!(bz.version(), 0x020f);
        assert_eq!(bz.setup_size, 5 * 512);
        assert_eq!({ bz.header.code32_start }, 0x10_0000);
        assert_eq!({ bz.header.cmdline_size }, 2047);
        assert_eq!({ bz.header.pref_address }, 0x100_0000);
        assert_eq!({ bz.header.init_size }, 0x40_0000);
        assert_eq!({ bz.header.boot_flag }, 0xaa55);
        assert_eq!(bz.payload().unwrap(), b"not compressed at all\0\0\0\0");
        assert_eq!(bz.decompress_payload().unwrap(), None);
        assert!(decompress_bzimage_payload(&img).is_err());
    }

    #[test]
    fn decompresses_an_xz_payload_with_bcj() {
        let payload = fixture("pvh64.bin.xz");
        let elf = fixture(PVH_FIXTURE);
        let img = build_bzimage(&BzSpec {
            payload,
            payload_size: elf.len() as u32,
            ..Default::default()
        });
        let out = decompress_bzimage_payload(&img).unwrap();
        assert_eq!(out.format, Compression::Xz);
        assert_eq!(out.data, elf);
    }

    #[test]
    fn setup_sects_zero_means_four() {
        let mut img = build_bzimage(&BzSpec::default());
        img[0x1f1] = 0;
        assert_eq!(BzImage::parse(&img).unwrap().setup_size, 5 * 512);
    }

    #[test]
    fn old_protocol_has_no_payload() {
        let img = build_bzimage(&BzSpec {
            version: 0x0206,
            ..Default::default()
        });
        let bz = BzImage::parse(&img).unwrap();
        assert!(matches!(
            bz.payload(),
            Err(BootError::UnsupportedBzImage { .. })
        ));
    }

    #[test]
    fn malformed_headers_are_errors() {
        assert!(BzImage::parse(b"").is_err());
        assert!(BzImage::parse(&[0u8; 0x300]).is_err());
        let img = build_bzimage(&BzSpec::default());
        // Truncated anywhere: parse may succeed (then the payload is out of
        // range) but never panics.
        for len in 0..img.len() {
            if let Ok(bz) = BzImage::parse(&img[..len]) {
                let _ = bz.payload();
                let _ = bz.decompress_payload();
            }
        }
        // Payload pointing outside the file.
        let mut bad = img.clone();
        bad[0x248..0x24c].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
        assert!(BzImage::parse(&bad).unwrap().payload().is_err());
        let mut bad = img.clone();
        bad[0x24c..0x250].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(BzImage::parse(&bad).unwrap().payload().is_err());
        // Setup sectors beyond the end.
        let mut bad = img;
        bad[0x1f1] = 0xff;
        assert!(BzImage::parse(&bad).is_err());
    }

    #[test]
    fn corrupt_payload_is_a_decompress_error() {
        let mut payload = fixture("pvh64.bin.gz");
        let n = payload.len();
        payload[n / 2..].iter_mut().for_each(|b| *b = !*b);
        let img = build_bzimage(&BzSpec {
            payload,
            payload_size: build_elf(&ElfSpec::default()).len() as u32,
            ..Default::default()
        });
        assert!(matches!(
            decompress_bzimage_payload(&img),
            Err(BootError::Decompress { .. })
        ));
    }
}
