//! fw_cfg item selectors (QEMU include/standard-headers/linux/qemu_fw_cfg.h
//! and hw/i386/fw_cfg.h) and the formats of the items built from tables.

pub const SIGNATURE: u16 = 0x00;
pub const ID: u16 = 0x01;
pub const UUID: u16 = 0x02;
pub const RAM_SIZE: u16 = 0x03;
pub const NOGRAPHIC: u16 = 0x04;
pub const NB_CPUS: u16 = 0x05;
pub const MACHINE_ID: u16 = 0x06;
pub const BOOT_DEVICE: u16 = 0x0c;
pub const NUMA: u16 = 0x0d;
pub const BOOT_MENU: u16 = 0x0e;
pub const MAX_CPUS: u16 = 0x0f;
pub const FILE_DIR: u16 = 0x19;
pub const FILE_FIRST: u16 = 0x20;
/// QEMU's default `x-file-slots`.
pub const FILE_SLOTS: u16 = 0x20;
pub const ACPI_TABLES: u16 = 0x8000;
pub const SMBIOS_ENTRIES: u16 = 0x8001;
pub const IRQ0_OVERRIDE: u16 = 0x8002;
pub const E820_TABLE: u16 = 0x8003;
pub const HPET: u16 = 0x8004;

/// ID bits: the port interface, and DMA.
pub const ID_TRADITIONAL: u32 = 1;
pub const ID_DMA: u32 = 2;

/// `etc/e820`: packed `le64 address, le64 length, le32 type` entries
/// (QEMU hw/i386/e820_memory_layout.h `struct e820_entry`).
pub fn e820_file(entries: &[(u64, u64, u32)]) -> Vec<u8> {
    let mut v = Vec::with_capacity(entries.len() * 20);
    for &(addr, len, kind) in entries {
        v.extend_from_slice(&addr.to_le_bytes());
        v.extend_from_slice(&len.to_le_bytes());
        v.extend_from_slice(&kind.to_le_bytes());
    }
    v
}
