//! Kernel loading: PVH ELF, bzImage-with-PVH-payload (decompressed on the
//! host), and the classic Linux 64-bit boot protocol.

use std::io::{Seek, SeekFrom};

use linux_loader::cmdline::{Cmdline, Error as CmdlineError};
use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use linux_loader::loader::{load_cmdline, KernelLoader};
use vm_memory::bitmap::BitmapSlice;
use vm_memory::{GuestAddress, GuestMemoryMmap, ReadVolatile, VolatileMemoryError, VolatileSlice};

use crate::bzimage::{BzImage, CAN_USE_HEAP, DEFAULT_INITRD_ADDR_MAX, LOADED_HIGH, XLF_KERNEL_64};
use crate::decompress::Compression;
use crate::elf::{self, ElfInfo};
use crate::layout::{MemoryLayout, HIGH_MEMORY_START};
use crate::lowmem::{
    CMDLINE, CMDLINE_MAX, PVH_MEMMAP, PVH_MEMMAP_MAX_ENTRIES, PVH_MODLIST, PVH_START_INFO,
    ZERO_PAGE,
};
use crate::BootError;

/// `hvm_start_info.magic`.
pub const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;
/// `type_of_loader` for a loader without an assigned ID.
const LOADER_TYPE_UNDEFINED: u8 = 0xff;
/// Offset of the 64-bit entry point from the protected-mode kernel's start.
const ENTRY64_OFFSET: u64 = 0x200;
const PAGE: u64 = 0x1000;
/// Command line limit for protocols before 2.06.
const OLD_CMDLINE_SIZE: usize = 255;

/// Where and how the boot vCPU starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootEntry {
    /// PVH: 32-bit protected mode, paging off, EBX = start_info.
    Pvh {
        entry: GuestAddress,
        start_info: GuestAddress,
    },
    /// Linux 64-bit boot protocol: long mode, RSI = boot_params.
    Linux64 {
        entry: GuestAddress,
        boot_params: GuestAddress,
    },
}

/// What kind of kernel file this is and how it will be booted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelKind {
    /// An ELF file with a PVH entry note.
    PvhElf,
    /// A bzImage whose payload decompressed to an ELF with a PVH note: that
    /// ELF is loaded and entered via PVH.
    BzImagePvh { compression: Compression },
    /// A bzImage booted through the 64-bit boot protocol (the kernel
    /// decompresses itself); `why_not_pvh` says why its payload was not used.
    BzImage { why_not_pvh: String },
}

/// A kernel file, parsed (and for a bzImage with a PVH payload, decompressed)
/// once; `load` may be called again on every guest reset.
#[derive(Debug, Clone)]
pub struct KernelImage {
    kind: KernelKind,
    repr: Repr,
}

#[derive(Debug, Clone)]
enum Repr {
    Pvh {
        elf: Vec<u8>,
        info: ElfInfo,
        entry: u32,
    },
    Bz {
        image: Vec<u8>,
    },
}

impl KernelImage {
    /// Recognises the format and, for a bzImage, tries to decompress its
    /// payload to a PVH ELF (about 1 s for Debian's kernel in a release
    /// build).
    pub fn parse(image: &[u8]) -> Result<KernelImage, BootError> {
        if elf::is_elf(image) {
            let info = elf::parse(image)?;
            let entry = info.pvh_entry.ok_or(BootError::NoPvhEntry)?;
            return Ok(KernelImage {
                kind: KernelKind::PvhElf,
                repr: Repr::Pvh {
                    elf: image.to_vec(),
                    info,
                    entry,
                },
            });
        }
        if !BzImage::is_bzimage(image) {
            return Err(BootError::UnknownKernelFormat);
        }
        let bz = BzImage::parse(image)?;
        let why_not_pvh = match bz.decompress_payload() {
            Ok(Some(payload)) if elf::is_elf(&payload.data) => match elf::parse(&payload.data) {
                Ok(info) => match info.pvh_entry {
                    Some(entry) => {
                        return Ok(KernelImage {
                            kind: KernelKind::BzImagePvh {
                                compression: payload.format,
                            },
                            repr: Repr::Pvh {
                                elf: payload.data,
                                info,
                                entry,
                            },
                        })
                    }
                    None => "the payload ELF has no PVH note".to_string(),
                },
                Err(e) => format!("payload: {e}"),
            },
            Ok(Some(payload)) => format!("the {} payload is not an ELF file", payload.format),
            Ok(None) => match bz.payload().ok().and_then(Compression::detect) {
                Some(c) => format!("{c} payload compression is not supported"),
                None => "unknown payload compression".to_string(),
            },
            // A payload we cannot decompress is left to the kernel's own
            // decompressor, which may know better.
            Err(e) => e.to_string(),
        };
        check_linux64(&bz)?;
        Ok(KernelImage {
            kind: KernelKind::BzImage { why_not_pvh },
            repr: Repr::Bz {
                image: image.to_vec(),
            },
        })
    }

    pub fn kind(&self) -> &KernelKind {
        &self.kind
    }

    /// Writes the kernel, initrd, command line and boot information into
    /// guest memory; `rsdp` is what `build_acpi` returned.
    pub fn load(
        &self,
        mem: &GuestMemoryMmap,
        initrd: Option<&[u8]>,
        cmdline: &str,
        layout: &MemoryLayout,
        rsdp: GuestAddress,
    ) -> Result<BootEntry, BootError> {
        layout.validate()?;
        let initrd = initrd.filter(|i| !i.is_empty());
        match &self.repr {
            Repr::Pvh { elf, info, entry } => {
                load_pvh(mem, elf, info, *entry, initrd, cmdline, layout, rsdp)
            }
            Repr::Bz { image } => load_linux64(mem, image, initrd, cmdline, layout, rsdp),
        }
    }
}

/// Parses and loads `kernel` in one go (see [`KernelImage`] to parse once
/// and load on every reset).
pub fn load_kernel(
    mem: &GuestMemoryMmap,
    kernel: &[u8],
    initrd: Option<&[u8]>,
    cmdline: &str,
    layout: &MemoryLayout,
    rsdp: GuestAddress,
) -> Result<BootEntry, BootError> {
    KernelImage::parse(kernel)?.load(mem, initrd, cmdline, layout, rsdp)
}

fn configurator_err(e: impl std::fmt::Display) -> BootError {
    BootError::Configurator(e.to_string())
}

/// Writes the NUL-terminated command line at `CMDLINE`; `capacity` counts
/// the NUL.
fn write_cmdline(mem: &GuestMemoryMmap, cmdline: &str, capacity: usize) -> Result<(), BootError> {
    let capacity = capacity.min(CMDLINE_MAX);
    let too_long = || BootError::CmdlineTooLong {
        len: cmdline.len(),
        max: capacity - 1,
    };
    if cmdline.len() >= capacity {
        return Err(too_long());
    }
    // linux-loader's `Cmdline` checks for printable ASCII only in its
    // key/value API, not in `try_from`; refuse here what the kernel cannot
    // take: a NUL would end the string, and control characters other than
    // whitespace are no separators to its parser.
    if let Some(c) = cmdline
        .chars()
        .find(|c| c.is_ascii_control() && !c.is_ascii_whitespace())
    {
        return Err(BootError::InvalidCmdline(format!(
            "control character {:#04x}",
            c as u32
        )));
    }
    let cl = Cmdline::try_from(cmdline, capacity).map_err(|e| match e {
        CmdlineError::TooLarge => too_long(),
        e => BootError::InvalidCmdline(e.to_string()),
    })?;
    load_cmdline(mem, GuestAddress(CMDLINE), &cl)
        .map_err(|e| BootError::InvalidCmdline(e.to_string()))
}

/// Places the initrd page-aligned as high as possible below `limit` and
/// above `kernel_end`; returns its address.
fn place_initrd(
    mem: &GuestMemoryMmap,
    initrd: &[u8],
    kernel_end: u64,
    limit: u64,
) -> Result<u64, BootError> {
    let size = initrd.len() as u64;
    let lowest = kernel_end.div_ceil(PAGE) * PAGE;
    let addr = limit
        .checked_sub(size)
        .map(|a| a & !(PAGE - 1))
        .filter(|&a| a >= lowest)
        .ok_or(BootError::InitrdDoesNotFit {
            size,
            kernel_end,
            limit,
        })?;
    elf::write(mem, addr, initrd)?;
    Ok(addr)
}

#[allow(clippy::too_many_arguments)]
fn load_pvh(
    mem: &GuestMemoryMmap,
    elf_bytes: &[u8],
    info: &ElfInfo,
    entry: u32,
    initrd: Option<&[u8]>,
    cmdline: &str,
    layout: &MemoryLayout,
    rsdp: GuestAddress,
) -> Result<BootEntry, BootError> {
    if !layout.is_ram(u64::from(entry), 1) {
        return Err(BootError::InvalidElf(format!(
            "PVH entry point {entry:#x} is outside RAM"
        )));
    }
    let kernel_end = elf::load(mem, elf_bytes, info, layout)?;
    write_cmdline(mem, cmdline, CMDLINE_MAX)?;

    let mut modules = Vec::new();
    if let Some(initrd) = initrd {
        let addr = place_initrd(mem, initrd, kernel_end, layout.low_end())?;
        modules.push(hvm_modlist_entry {
            paddr: addr,
            size: initrd.len() as u64,
            cmdline_paddr: 0,
            reserved: 0,
        });
    }

    let memmap: Vec<hvm_memmap_table_entry> = layout
        .e820()
        .iter()
        .take(PVH_MEMMAP_MAX_ENTRIES)
        .map(|e| hvm_memmap_table_entry {
            addr: e.addr,
            size: e.size,
            type_: e.kind as u32,
            reserved: 0,
        })
        .collect();

    let start_info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC,
        version: 1,
        flags: 0,
        nr_modules: modules.len() as u32,
        modlist_paddr: if modules.is_empty() { 0 } else { PVH_MODLIST },
        cmdline_paddr: CMDLINE,
        rsdp_paddr: rsdp.0,
        memmap_paddr: PVH_MEMMAP,
        memmap_entries: memmap.len() as u32,
        reserved: 0,
    };
    let mut params = BootParams::new(&start_info, GuestAddress(PVH_START_INFO));
    params.set_sections(&memmap, GuestAddress(PVH_MEMMAP));
    if !modules.is_empty() {
        params.set_modules(&modules, GuestAddress(PVH_MODLIST));
    }
    PvhBootConfigurator::write_bootparams::<GuestMemoryMmap>(&params, mem)
        .map_err(configurator_err)?;

    Ok(BootEntry::Pvh {
        entry: GuestAddress(u64::from(entry)),
        start_info: GuestAddress(PVH_START_INFO),
    })
}

/// Requirements of the 64-bit boot protocol, checked at parse time.
fn check_linux64(bz: &BzImage) -> Result<(), BootError> {
    let (major, minor) = bz.version_parts();
    let unsupported = |reason| BootError::UnsupportedBzImage {
        major,
        minor,
        reason,
    };
    if bz.version() < 0x020c {
        return Err(unsupported("the 64-bit entry point needs protocol 2.12"));
    }
    if bz.header.xloadflags & XLF_KERNEL_64 == 0 {
        return Err(unsupported(
            "the kernel has no 64-bit entry point (XLF_KERNEL_64)",
        ));
    }
    if bz.header.loadflags & LOADED_HIGH == 0 {
        return Err(unsupported(
            "the kernel does not load at 1 MiB (LOADED_HIGH)",
        ));
    }
    Ok(())
}

/// `Read`/`Seek`/`ReadVolatile` over a byte slice, for linux-loader's
/// `BzImage::load`, which only takes such readers (vm-memory implements
/// `ReadVolatile` for `&[u8]` and files, not for `Cursor`).
struct SliceReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl std::io::Read for SliceReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (&self.data[self.pos..]).read(buf)?;
        self.pos += n;
        Ok(n)
    }
}

impl Seek for SliceReader<'_> {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        let new = match pos {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => (self.data.len() as u64).checked_add_signed(d),
            SeekFrom::Current(d) => (self.pos as u64).checked_add_signed(d),
        };
        let new = new
            .filter(|&p| p <= self.data.len() as u64)
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        self.pos = new as usize;
        Ok(new)
    }
}

impl ReadVolatile for SliceReader<'_> {
    fn read_volatile<B: BitmapSlice>(
        &mut self,
        buf: &mut VolatileSlice<B>,
    ) -> Result<usize, VolatileMemoryError> {
        let mut rest = &self.data[self.pos..];
        let n = rest.read_volatile(buf)?;
        self.pos += n;
        Ok(n)
    }
}

fn load_linux64(
    mem: &GuestMemoryMmap,
    image: &[u8],
    initrd: Option<&[u8]>,
    cmdline: &str,
    layout: &MemoryLayout,
    rsdp: GuestAddress,
) -> Result<BootEntry, BootError> {
    let bz = BzImage::parse(image)?;
    check_linux64(&bz)?;
    let hdr = bz.header;
    let version = bz.version();
    let load_addr = u64::from(hdr.code32_start);
    let kernel_len = bz.kernel().len() as u64;
    if load_addr < HIGH_MEMORY_START || !layout.is_ram(load_addr, kernel_len) {
        return Err(BootError::SegmentOutsideRam {
            addr: load_addr,
            size: kernel_len,
        });
    }
    // The kernel decompresses itself into [max(load, pref_address),
    // +init_size); the initrd must stay clear of that.
    let (pref, init_size) = if version >= 0x020a {
        (hdr.pref_address, u64::from(hdr.init_size))
    } else {
        (load_addr, 0)
    };
    let kernel_end = (load_addr + kernel_len).max(load_addr.max(pref).saturating_add(init_size));
    if kernel_end > layout.low_end() {
        return Err(BootError::KernelTooLarge {
            needed: kernel_end,
            low_end: layout.low_end(),
        });
    }

    let mut reader = SliceReader {
        data: image,
        pos: 0,
    };
    let loaded = linux_loader::loader::bzimage::BzImage::load(
        mem,
        None,
        &mut reader,
        Some(GuestAddress(HIGH_MEMORY_START)),
    )
    .map_err(|e| BootError::InvalidBzImage(e.to_string()))?;
    debug_assert_eq!(loaded.kernel_load, GuestAddress(load_addr));

    let cmdline_capacity = if version >= 0x0206 {
        (hdr.cmdline_size as usize).saturating_add(1)
    } else {
        OLD_CMDLINE_SIZE + 1
    };
    write_cmdline(mem, cmdline, cmdline_capacity)?;

    let mut params = boot_params {
        hdr,
        ..Default::default()
    };
    params.hdr.type_of_loader = LOADER_TYPE_UNDEFINED;
    params.hdr.loadflags |= CAN_USE_HEAP;
    params.hdr.heap_end_ptr = 0xfe00;
    params.hdr.cmd_line_ptr = CMDLINE as u32;
    params.hdr.code32_start = load_addr as u32;
    if let Some(initrd) = initrd {
        let max = if version >= 0x0203 {
            hdr.initrd_addr_max
        } else {
            DEFAULT_INITRD_ADDR_MAX
        };
        let limit = (u64::from(max) + 1).min(layout.low_end());
        let addr = place_initrd(mem, initrd, kernel_end, limit)?;
        params.hdr.ramdisk_image = addr as u32;
        params.hdr.ramdisk_size = initrd.len() as u32;
    }
    let e820 = layout.e820();
    for (slot, e) in params.e820_table.iter_mut().zip(&e820) {
        *slot = boot_e820_entry {
            addr: e.addr,
            size: e.size,
            r#type: e.kind as u32,
        };
    }
    params.e820_entries = e820.len().min(params.e820_table.len()) as u8;
    if version >= 0x020e {
        params.acpi_rsdp_addr = rsdp.0;
    }
    let bp = BootParams::new(&params, GuestAddress(ZERO_PAGE));
    LinuxBootConfigurator::write_bootparams::<GuestMemoryMmap>(&bp, mem)
        .map_err(configurator_err)?;

    Ok(BootEntry::Linux64 {
        entry: GuestAddress(load_addr + ENTRY64_OFFSET),
        boot_params: GuestAddress(ZERO_PAGE),
    })
}

#[cfg(test)]
mod tests;
