//! QEMU's BIOS linker/loader script (hw/acpi/bios-linker-loader.c), the
//! `etc/table-loader` fw_cfg file with which SeaBIOS (src/fw/romfile_loader.c)
//! and OVMF install tables the VMM built: allocate each file in guest memory,
//! add a file's final address to pointer fields, then fix checksums.
//!
//! Each command is 128 bytes, little-endian: `u32 command`, then
//! - ALLOCATE (1): `file[56]`, `u32 align`, `u8 zone` (HIGH 1, FSEG 2);
//! - ADD_POINTER (2): `dest_file[56]`, `src_file[56]`, `u32 offset`, `u8 size`:
//!   the `size`-byte little-endian value at `offset` in dest gains src's address;
//! - ADD_CHECKSUM (3): `file[56]`, `u32 offset`, `u32 start`, `u32 length`:
//!   the byte at `offset` becomes minus the sum of `[start, start + length)`.

const COMMAND_SIZE: usize = 128;
const NAME_SIZE: usize = 56;
const ALLOCATE: u32 = 1;
const ADD_POINTER: u32 = 2;
const ADD_CHECKSUM: u32 = 3;

/// Where the firmware puts an allocated file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Zone {
    /// Anywhere in RAM below 4 GiB (QEMU `BIOS_LINKER_LOADER_ALLOC_ZONE_HIGH`).
    High = 1,
    /// The F segment, 0xf0000-0xfffff, where an OS looks for the RSDP.
    FSeg = 2,
}

/// A script being written.
#[derive(Debug, Default)]
pub struct TableLoader {
    bytes: Vec<u8>,
}

fn put_name(cmd: &mut [u8], at: usize, name: &str) {
    let n = name.len().min(NAME_SIZE - 1);
    cmd[at..at + n].copy_from_slice(&name.as_bytes()[..n]);
}

impl TableLoader {
    pub fn new() -> Self {
        Self::default()
    }

    fn command(&mut self, kind: u32) -> &mut [u8] {
        let at = self.bytes.len();
        self.bytes.resize(at + COMMAND_SIZE, 0);
        let cmd = &mut self.bytes[at..];
        cmd[..4].copy_from_slice(&kind.to_le_bytes());
        cmd
    }

    pub fn allocate(&mut self, file: &str, align: u32, zone: Zone) {
        let c = self.command(ALLOCATE);
        put_name(c, 4, file);
        c[60..64].copy_from_slice(&align.to_le_bytes());
        c[64] = zone as u8;
    }

    pub fn add_pointer(&mut self, dest: &str, src: &str, offset: u32, size: u8) {
        let c = self.command(ADD_POINTER);
        put_name(c, 4, dest);
        put_name(c, 60, src);
        c[116..120].copy_from_slice(&offset.to_le_bytes());
        c[120] = size;
    }

    pub fn add_checksum(&mut self, file: &str, offset: u32, start: u32, length: u32) {
        let c = self.command(ADD_CHECKSUM);
        put_name(c, 4, file);
        c[60..64].copy_from_slice(&offset.to_le_bytes());
        c[64..68].copy_from_slice(&start.to_le_bytes());
        c[68..72].copy_from_slice(&length.to_le_bytes());
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_have_qemus_layout() {
        // struct BiosLinkerLoaderEntry: u32 command; union { ... } of 124 bytes.
        let mut l = TableLoader::new();
        l.allocate("etc/acpi/rsdp", 16, Zone::FSeg);
        l.add_pointer("etc/acpi/rsdp", "etc/acpi/tables", 24, 8);
        l.add_checksum("etc/acpi/tables", 9, 0x40, 0x24);
        let b = l.into_bytes();
        assert_eq!(b.len(), 3 * 128);
        let mut alloc = vec![1, 0, 0, 0];
        alloc.extend_from_slice(b"etc/acpi/rsdp");
        alloc.resize(60, 0);
        alloc.extend_from_slice(&[16, 0, 0, 0, 2]);
        alloc.resize(128, 0);
        assert_eq!(&b[..128], &alloc[..]);
        let p = &b[128..256];
        assert_eq!(&p[..4], &[2, 0, 0, 0]);
        assert_eq!(&p[4..17], b"etc/acpi/rsdp");
        assert_eq!(&p[60..75], b"etc/acpi/tables");
        assert_eq!(&p[116..121], &[24, 0, 0, 0, 8]);
        let c = &b[256..];
        assert_eq!(&c[..4], &[3, 0, 0, 0]);
        assert_eq!(&c[60..72], &[9, 0, 0, 0, 0x40, 0, 0, 0, 0x24, 0, 0, 0]);
        assert!(c[72..].iter().all(|&x| x == 0));
    }
}
