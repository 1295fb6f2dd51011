//! The boot vCPU's initial registers for each boot path, and the GDT and
//! page tables they refer to.

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_segment, kvm_sregs};
use vm_memory::GuestMemoryMmap;

use crate::elf::write;
use crate::loader::BootEntry;
use crate::lowmem::{GDT, PD, PDPT, PML4};
use crate::BootError;

/// GDT selectors. 0x10 and 0x18 are what the Linux 64-bit boot protocol
/// requires (`__BOOT_CS`, `__BOOT_DS`); PVH leaves selectors unspecified.
pub const SEL_CODE32: u16 = 0x08;
pub const SEL_CODE64: u16 = 0x10;
pub const SEL_DATA: u16 = 0x18;
pub const SEL_TSS: u16 = 0x20;

/// The boot GDT: null, flat 32-bit code, 64-bit code, flat data, and a
/// busy TSS (base 0, limit 0x67, as the PVH ABI asks) whose 16-byte 64-bit
/// form takes the last two slots.
pub const GDT_ENTRIES: [u64; 6] = [
    0,
    0x00cf_9b00_0000_ffff, // 0x08: code, exec/read, accessed, 32-bit, 4 GiB
    0x00af_9b00_0000_ffff, // 0x10: code, exec/read, accessed, L=1
    0x00cf_9300_0000_ffff, // 0x18: data, read/write, accessed, 4 GiB
    0x0000_8b00_0000_0067, // 0x20: TSS, busy, base 0, limit 0x67
    0,                     // 0x28: upper half of the 64-bit TSS descriptor
];

/// Classic boot: a stack below the zero page, in case anything pushes
/// before the kernel sets up its own.
pub const BOOT_STACK_TOP: u64 = 0x8ff0;

const CR0_PE: u64 = 1 << 0;
const CR0_ET: u64 = 1 << 4;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const RFLAGS_RESERVED: u64 = 1 << 1;

const PTE_PRESENT: u64 = 1 << 0;
const PTE_WRITE: u64 = 1 << 1;
const PTE_HUGE: u64 = 1 << 7;
/// Page directories for the identity map: 4 × 1 GiB of 2 MiB pages.
pub const IDENTITY_MAP_GIB: u64 = 4;

/// The KVM segment register state a GDT descriptor loads.
pub fn segment_from_gdt(entry: u64, selector: u16) -> kvm_segment {
    let base = ((entry >> 16) & 0x00ff_ffff) | (((entry >> 56) & 0xff) << 24);
    let raw_limit = (entry & 0xffff) | (((entry >> 48) & 0xf) << 16);
    let g = ((entry >> 55) & 1) as u8;
    let limit = if g == 1 {
        (raw_limit << 12) | 0xfff
    } else {
        raw_limit
    };
    let present = ((entry >> 47) & 1) as u8;
    kvm_segment {
        base,
        limit: limit as u32,
        selector,
        type_: ((entry >> 40) & 0xf) as u8,
        present,
        dpl: ((entry >> 45) & 3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g,
        avl: ((entry >> 52) & 1) as u8,
        unusable: u8::from(present == 0),
        padding: 0,
    }
}

fn gdt_segment(selector: u16) -> kvm_segment {
    segment_from_gdt(GDT_ENTRIES[usize::from(selector) / 8], selector)
}

fn write_gdt(mem: &GuestMemoryMmap) -> Result<(), BootError> {
    let bytes: Vec<u8> = GDT_ENTRIES.iter().flat_map(|e| e.to_le_bytes()).collect();
    write(mem, GDT, &bytes)
}

/// Identity-maps the first 4 GiB with 2 MiB pages: PML4 → one PDPT → four
/// page directories.
fn write_page_tables(mem: &GuestMemoryMmap) -> Result<(), BootError> {
    let page = |entries: &[u64]| -> Vec<u8> {
        let mut p = vec![0u8; 4096];
        for (i, e) in entries.iter().enumerate() {
            p[i * 8..i * 8 + 8].copy_from_slice(&e.to_le_bytes());
        }
        p
    };
    write(mem, PML4, &page(&[PDPT | PTE_PRESENT | PTE_WRITE]))?;
    let pdpt: Vec<u64> = (0..IDENTITY_MAP_GIB)
        .map(|i| (PD + i * 0x1000) | PTE_PRESENT | PTE_WRITE)
        .collect();
    write(mem, PDPT, &page(&pdpt))?;
    for gib in 0..IDENTITY_MAP_GIB {
        let pd: Vec<u64> = (0..512)
            .map(|i| ((gib << 30) + (i << 21)) | PTE_PRESENT | PTE_WRITE | PTE_HUGE)
            .collect();
        write(mem, PD + gib * 0x1000, &page(&pd))?;
    }
    Ok(())
}

/// Sets the boot vCPU's registers for `entry` and writes the GDT (and for
/// the 64-bit protocol the page tables) into guest memory. `regs` and `fpu`
/// are replaced; in `sregs` only the segment, descriptor-table, control and
/// EFER registers are set, so pass what `KVM_GET_SREGS` returned (the LDT,
/// APIC base and interrupt bitmap stay as KVM has them).
pub fn setup_boot_cpu(
    mem: &GuestMemoryMmap,
    entry: &BootEntry,
    regs: &mut kvm_regs,
    sregs: &mut kvm_sregs,
    fpu: &mut kvm_fpu,
) -> Result<(), BootError> {
    write_gdt(mem)?;
    *fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    *regs = kvm_regs {
        rflags: RFLAGS_RESERVED,
        ..Default::default()
    };
    sregs.gdt.base = GDT;
    sregs.gdt.limit = (GDT_ENTRIES.len() * 8 - 1) as u16;
    sregs.idt.base = 0;
    sregs.idt.limit = 0;
    let data = gdt_segment(SEL_DATA);
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = gdt_segment(SEL_TSS);
    match *entry {
        BootEntry::Pvh { entry, start_info } => {
            // PVH ABI: 32-bit protected mode, paging off, flat segments.
            sregs.cs = gdt_segment(SEL_CODE32);
            sregs.cr0 = CR0_PE | CR0_ET;
            sregs.cr3 = 0;
            sregs.cr4 = 0;
            sregs.efer = 0;
            regs.rip = entry.0;
            regs.rbx = start_info.0;
        }
        BootEntry::Linux64 { entry, boot_params } => {
            write_page_tables(mem)?;
            sregs.cs = gdt_segment(SEL_CODE64);
            sregs.cr0 = CR0_PE | CR0_ET | CR0_PG;
            sregs.cr3 = PML4;
            sregs.cr4 = CR4_PAE;
            sregs.efer = EFER_LME | EFER_LMA;
            regs.rip = entry.0;
            regs.rsi = boot_params.0;
            regs.rsp = BOOT_STACK_TOP;
            regs.rbp = BOOT_STACK_TOP;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::MemoryLayout;
    use crate::testutil::guest_mem;
    use vm_memory::{Bytes, GuestAddress};

    fn read_u64(mem: &GuestMemoryMmap, addr: u64) -> u64 {
        mem.read_obj(GuestAddress(addr)).unwrap()
    }

    #[test]
    fn segments_decode() {
        let cs = segment_from_gdt(GDT_ENTRIES[1], 0x08);
        assert_eq!(
            (cs.base, cs.limit, cs.type_, cs.s, cs.present, cs.db, cs.l, cs.g),
            (0, 0xffff_ffff, 0xb, 1, 1, 1, 0, 1)
        );
        let cs64 = segment_from_gdt(GDT_ENTRIES[2], 0x10);
        assert_eq!((cs64.l, cs64.db, cs64.type_), (1, 0, 0xb));
        let ds = segment_from_gdt(GDT_ENTRIES[3], 0x18);
        assert_eq!(
            (ds.base, ds.limit, ds.type_, ds.s, ds.db),
            (0, 0xffff_ffff, 0x3, 1, 1)
        );
        let tr = segment_from_gdt(GDT_ENTRIES[4], 0x20);
        assert_eq!(
            (
                tr.base,
                tr.limit,
                tr.type_,
                tr.s,
                tr.present,
                tr.g,
                tr.unusable
            ),
            (0, 0x67, 0xb, 0, 1, 0, 0)
        );
        let null = segment_from_gdt(0, 0);
        assert_eq!(null.unusable, 1);
        // Base and limit bits are reassembled from their split fields.
        let odd = segment_from_gdt(0x124f_9334_5678_abcd, 0x30);
        assert_eq!(odd.base, 0x1234_5678);
        assert_eq!(odd.limit, 0xfabcd);
    }

    #[test]
    fn pvh_state() {
        let mem = guest_mem(&MemoryLayout::new(16 << 20));
        let entry = BootEntry::Pvh {
            entry: GuestAddress(0x10_0100),
            start_info: GuestAddress(0x2000),
        };
        let mut regs = kvm_regs {
            rax: 5,
            ..Default::default()
        };
        let mut sregs = kvm_sregs {
            cr0: 0x6000_0010,
            apic_base: 0xfee0_0900,
            ..Default::default()
        };
        let mut fpu = kvm_fpu::default();
        setup_boot_cpu(&mem, &entry, &mut regs, &mut sregs, &mut fpu).unwrap();
        assert_eq!(
            (regs.rip, regs.rbx, regs.rflags, regs.rax),
            (0x10_0100, 0x2000, 2, 0)
        );
        assert_eq!(sregs.cr0, 0x11);
        assert_eq!((sregs.cr3, sregs.cr4, sregs.efer), (0, 0, 0));
        assert_eq!(
            (sregs.cs.selector, sregs.cs.db, sregs.cs.l, sregs.cs.limit),
            (0x08, 1, 0, 0xffff_ffff)
        );
        for s in [sregs.ds, sregs.es, sregs.ss, sregs.fs, sregs.gs] {
            assert_eq!(
                (s.selector, s.type_, s.limit, s.base),
                (0x18, 3, 0xffff_ffff, 0)
            );
        }
        assert_eq!(
            (
                sregs.tr.selector,
                sregs.tr.type_,
                sregs.tr.limit,
                sregs.tr.base
            ),
            (0x20, 0xb, 0x67, 0)
        );
        assert_eq!(sregs.apic_base, 0xfee0_0900, "untouched");
        assert_eq!((sregs.gdt.base, sregs.gdt.limit), (0x1000, 47));
        assert_eq!((fpu.fcw, fpu.mxcsr), (0x37f, 0x1f80));
        for (i, e) in GDT_ENTRIES.iter().enumerate() {
            assert_eq!(read_u64(&mem, 0x1000 + 8 * i as u64), *e);
        }
        // No page tables for PVH.
        assert_eq!(read_u64(&mem, PML4), 0);
    }

    #[test]
    fn linux64_state_and_identity_map() {
        let mem = guest_mem(&MemoryLayout::new(16 << 20));
        let entry = BootEntry::Linux64 {
            entry: GuestAddress(0x10_0200),
            boot_params: GuestAddress(0x7000),
        };
        let mut regs = kvm_regs::default();
        let mut sregs = kvm_sregs::default();
        let mut fpu = kvm_fpu::default();
        setup_boot_cpu(&mem, &entry, &mut regs, &mut sregs, &mut fpu).unwrap();
        assert_eq!((regs.rip, regs.rsi, regs.rflags), (0x10_0200, 0x7000, 2));
        assert_eq!(sregs.cr0, 0x8000_0011);
        assert_eq!((sregs.cr3, sregs.cr4, sregs.efer), (0x9000, 0x20, 0x500));
        assert_eq!((sregs.cs.selector, sregs.cs.l, sregs.cs.db), (0x10, 1, 0));
        assert_eq!(sregs.ds.selector, 0x18);
        assert_eq!(sregs.tr.type_, 0xb);
        // Walk the tables for a few addresses, up to the last 2 MiB below 4 GiB.
        for addr in [
            0u64,
            0x7000,
            0x10_0200,
            0x3fff_ffff,
            0x4000_0000,
            0xfee0_0000,
            0xffff_ffff,
        ] {
            let pml4e = read_u64(&mem, PML4 + 8 * ((addr >> 39) & 511));
            assert_eq!(pml4e & 3, 3);
            let pdpte = read_u64(&mem, (pml4e & !0xfff) + 8 * ((addr >> 30) & 511));
            assert_eq!(pdpte & 3, 3, "{addr:#x}");
            let pde = read_u64(&mem, (pdpte & !0xfff) + 8 * ((addr >> 21) & 511));
            assert_eq!(pde & 0x83, 0x83, "{addr:#x}");
            assert_eq!(
                (pde & !0x1f_ffff) | (addr & 0x1f_ffff),
                addr,
                "identity {addr:#x}"
            );
        }
        // Only the first PML4 entry and four PDPT entries are used.
        assert_eq!(read_u64(&mem, PML4 + 8), 0);
        assert_eq!(read_u64(&mem, PDPT + 8 * 4), 0);
    }
}
