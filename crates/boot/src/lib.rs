//! Everything that happens to guest memory and the boot vCPU before the first
//! `KVM_RUN`: the memory map (e820), the ACPI tables, loading the kernel
//! (PVH ELF, or a Linux bzImage: decompressed on the host and entered via PVH
//! when its payload carries a PVH note, else the classic 64-bit boot
//! protocol), and the boot vCPU's registers.
//!
//! # Low-memory map
//!
//! The layout of docs/platform.md, plus where this crate puts its boot
//! structures. All of them lie below 1 MiB, which Linux reserves as a whole
//! early in boot, and in e820 RAM below the EBDA except the ACPI tables.
//!
//! | guest physical      | contents                                             |
//! |---------------------|------------------------------------------------------|
//! | `0x0000 - 0x0fff`   | untouched (real-mode IVT / BDA), zero                 |
//! | `0x1000 - 0x102f`   | boot GDT: 0x08 code32, 0x10 code64, 0x18 data, 0x20 TSS |
//! | `0x2000 - 0x2037`   | PVH `hvm_start_info`                                  |
//! | `0x2040 - 0x205f`   | PVH module list (module 0 = initrd)                   |
//! | `0x3000 - 0x3bff`   | PVH memory map (`hvm_memmap_table_entry` × ≤ 128)     |
//! | `0x7000 - 0x7fff`   | Linux `boot_params` (zero page), classic boot only    |
//! | `0x8000 - 0x8fff`   | boot stack, classic boot only (RSP = 0x8ff0)          |
//! | `0x9000 - 0x9fff`   | PML4 (classic 64-bit boot only)                       |
//! | `0xa000 - 0xafff`   | PDPT                                                  |
//! | `0xb000 - 0xefff`   | 4 page directories, 2 MiB pages: identity map 0-4 GiB |
//! | `0x20000 - 0x2ffff` | kernel command line (NUL-terminated, ≤ 64 KiB)        |
//! | `0x9fc00 - 0x9ffff` | EBDA: reserved in e820, unused                        |
//! | `0xe0000 - 0xfffff` | ACPI tables, RSDP first at `0xe0000`; reserved in e820 |
//! | `0x100000 -`        | kernel (bzImage at `code32_start`, ELF at `p_paddr`) |
//! | top of low RAM      | initrd, page aligned, as high as allowed              |
//!
//! The 64-bit PCI window starts at the first 1 GiB boundary above RAM (and at
//! least at 4 GiB) and is 64 GiB long: [`MemoryLayout::pci_mmio64_window`].
//!
//! # Reset
//! [`KernelImage::parse`] decompresses once (about 1 s for Debian's kernel in
//! a release build, 3 s unoptimised); keep the `KernelImage` and call
//! [`KernelImage::load`], [`build_acpi`] and [`setup_boot_cpu`] again on every
//! reset: they rewrite everything they own, BSS and the ACPI area included.

pub mod acpi;
pub mod bzimage;
pub mod cpu;
pub mod decompress;
pub mod elf;
pub mod image_file;
pub mod layout;
pub mod loader;
pub mod pci_irq;
pub mod smbios;
pub mod table_loader;

pub use acpi::{build_acpi, AcpiConfig};
pub use bzimage::decompress_bzimage_payload;
pub use cpu::setup_boot_cpu;
pub use decompress::Compression;
pub use image_file::ImageFileError;
pub use layout::{E820Entry, E820Type, MemoryLayout};
pub use loader::{load_kernel, BootEntry, KernelImage, KernelKind};
pub use pci_irq::pci_intx_gsi;

/// Addresses of the boot structures in low memory (see the crate doc).
pub mod lowmem {
    pub const GDT: u64 = 0x1000;
    pub const PVH_START_INFO: u64 = 0x2000;
    pub const PVH_MODLIST: u64 = 0x2040;
    pub const PVH_MEMMAP: u64 = 0x3000;
    pub const PVH_MEMMAP_MAX_ENTRIES: usize = 128;
    pub const ZERO_PAGE: u64 = 0x7000;
    pub const PML4: u64 = 0x9000;
    pub const PDPT: u64 = 0xa000;
    pub const PD: u64 = 0xb000;
    pub const CMDLINE: u64 = 0x2_0000;
    /// Room for the command line, terminating NUL included.
    pub const CMDLINE_MAX: usize = 0x1_0000;
    pub const ACPI_START: u64 = 0xe_0000;
    pub const ACPI_END: u64 = 0x10_0000;
}

/// Why the guest could not be set up. Every malformed input (kernel, initrd,
/// command line) ends here, never in a panic.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("guest RAM of {ram} bytes is too small (at least {min} needed)")]
    RamTooSmall { ram: u64, min: u64 },
    #[error("guest memory write of {len:#x} bytes at {addr:#x} failed")]
    GuestMemory { addr: u64, len: u64 },
    #[error("invalid ACPI configuration: {0}")]
    AcpiConfig(String),
    #[error("ACPI tables need {needed} bytes, more than the {room} bytes of the BIOS area")]
    AcpiTooLarge { needed: usize, room: usize },
    #[error("kernel image is neither an ELF file nor a Linux bzImage")]
    UnknownKernelFormat,
    #[error("invalid ELF kernel: {0}")]
    InvalidElf(String),
    #[error("ELF kernel has no PVH entry point (XEN_ELFNOTE_PHYS32_ENTRY note)")]
    NoPvhEntry,
    #[error("kernel segment [{addr:#x}, +{size:#x}) is outside guest RAM")]
    SegmentOutsideRam { addr: u64, size: u64 },
    #[error("invalid bzImage: {0}")]
    InvalidBzImage(String),
    #[error("bzImage boot protocol {major}.{minor:02} is not supported: {reason}")]
    UnsupportedBzImage {
        major: u8,
        minor: u8,
        reason: &'static str,
    },
    #[error("decompressing the {format} kernel payload failed: {message}")]
    Decompress {
        format: Compression,
        message: String,
    },
    #[error("decompressed kernel exceeds the limit of {limit} bytes")]
    DecompressedTooLarge { limit: usize },
    #[error("kernel needs RAM up to {needed:#x} but low RAM ends at {low_end:#x}")]
    KernelTooLarge { needed: u64, low_end: u64 },
    #[error("command line of {len} bytes exceeds the kernel's limit of {max} bytes")]
    CmdlineTooLong { len: usize, max: usize },
    #[error("invalid command line: {0}")]
    InvalidCmdline(String),
    #[error("initrd of {size} bytes does not fit between the kernel (end {kernel_end:#x}) and {limit:#x}")]
    InitrdDoesNotFit {
        size: u64,
        kernel_end: u64,
        limit: u64,
    },
    #[error("boot configuration: {0}")]
    Configurator(String),
}

#[cfg(test)]
pub(crate) mod testutil;
