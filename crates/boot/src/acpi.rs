//! ACPI 6.x tables describing the platform of docs/platform.md, written to
//! the BIOS area at 0xe0000 (RSDP first, so a guest scanning 0xe0000-0xfffff
//! finds it) for the guest's OSPM.
//!
//! Tables: RSDP (rev 2) → XSDT → FADT (rev 6.5, full ACPI hardware model, not
//! hardware-reduced) → FACS + DSDT; MADT; MCFG. The DSDT routes PCI INTx with
//! `\_SB.PCI0._PRT` and the link devices `\_SB.GSIA`..`GSIH` (see
//! `pci_prt` for why links and not hardwired GSIs). Built with `acpi_tables` where
//! it fits: its `MADT` type cannot set the header flags (PCAT_COMPAT) or the
//! revision (5, needed for the "online capable" flag) and has no interrupt
//! source override or local APIC NMI entries, so the MADT is assembled from
//! raw entries in a generic `Sdt`.
//!
//! # What the device model must match
//! - SMI_CMD is 0: the platform is always in ACPI mode, so PM1a_CNT.SCI_EN
//!   (bit 0 of port 0x604) must read 1 from reset on.
//! - The power button is the fixed-feature one (PM1 status/enable bit 8,
//!   SCI on GSI 9, level, active high); there is no sleep button.
//! - Reset: byte 0x06 written to port 0xcf9.
//! - PM timer at 0x608 is 24 bits wide (TMR_VAL_EXT clear).
//! - The RTC century byte is CMOS register 0x32 (FADT.CENTURY).
//! - INTx pin `p` of a function in root-bus slot `s` is wired to GSI
//!   [`pci_intx_gsi`]`(s, p)` (16..=23) as a level-triggered line that is
//!   asserted by raising it (irqfd with resamplefd, level 1 = asserted).

use acpi_tables::aml::{
    self, AddressSpace, AddressSpaceCacheable, Device, EISAName, Interrupt, Memory32Fixed, Method,
    Name, Package, Path, ResourceTemplate, Return, Scope, IO,
};
use acpi_tables::facs::FACS;
use acpi_tables::fadt::{FADTBuilder, Flags, FADT};
use acpi_tables::gas::{AccessSize, AddressSpace as GasSpace, GAS};
use acpi_tables::mcfg::MCFG;
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use acpi_tables::Aml;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::layout::{
    MemoryLayout, ECAM_SIZE, ECAM_START, IOAPIC_ADDR, LAPIC_ADDR, PCI_MMIO32_SIZE, PCI_MMIO32_START,
};
use crate::lowmem::{ACPI_END, ACPI_START};
use crate::pci_irq::{
    gsi_link_name, pci_intx_gsi, PCI_INTX_GSI_BASE, PCI_INTX_GSI_COUNT, PCI_SLOTS,
};
use crate::BootError;

pub const OEM_ID: [u8; 6] = *b"FERROV";
const OEM_REVISION: u32 = 1;

/// ACPI fixed-hardware I/O ports (docs/platform.md).
pub const PM1A_EVT_BLK: u16 = 0x600;
pub const PM1A_CNT_BLK: u16 = 0x604;
pub const PM_TMR_BLK: u16 = 0x608;
pub const GPE0_BLK: u16 = 0x620;
pub const PM1_EVT_LEN: u8 = 4;
pub const PM1_CNT_LEN: u8 = 2;
pub const PM_TMR_LEN: u8 = 4;
pub const GPE0_BLK_LEN: u8 = 16;
pub const SCI_IRQ: u16 = 9;
pub const RESET_PORT: u16 = 0xcf9;
pub const RESET_VALUE: u8 = 0x06;
/// CMOS register holding the century, advertised in FADT.CENTURY.
pub const RTC_CENTURY_REG: u8 = 0x32;

/// FADT IAPC_BOOT_ARCH bits.
const IAPC_LEGACY_DEVICES: u16 = 1 << 0;
const IAPC_8042: u16 = 1 << 1;
const IAPC_VGA_NOT_PRESENT: u16 = 1 << 2;

/// MADT.
const MADT_PCAT_COMPAT: u32 = 1;
const MADT_REVISION: u8 = 5;
const MADT_LAPIC_ENABLED: u32 = 1 << 0;
const MADT_LAPIC_ONLINE_CAPABLE: u32 = 1 << 1;
/// MPS INTI flags: polarity active high (01), trigger level (11 << 2).
const MPS_INTI_ACTIVE_HIGH_LEVEL: u16 = 0x1 | (0x3 << 2);
/// The IOAPIC's ID, as QEMU and KVM's in-kernel IOAPIC reset value have it.
pub const IOAPIC_ID: u8 = 0;

/// What the tables describe beyond the fixed platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcpiConfig {
    /// vCPUs present and enabled at boot (APIC IDs 0..cpus).
    pub cpus: u8,
    /// vCPUs the machine may have; those past `cpus` are "online capable".
    pub max_cpus: u8,
    pub layout: MemoryLayout,
    /// The ECAM window `(base, size)` PCIEXBAR decodes, for the MCFG and the
    /// motherboard resources; `None` (not programmed) leaves the MCFG out.
    pub ecam: Option<(u64, u64)>,
    /// PCI0's 64-bit window `(base, size)`; `None` is the layout's default
    /// ([`MemoryLayout::pci_mmio64_window`]).
    pub pci_mmio64: Option<(u64, u64)>,
    /// The port of `-device pvpanic`, described as QEMU's `PEVT` device.
    pub pvpanic_port: Option<u16>,
}

impl AcpiConfig {
    /// The tables for `layout` with ECAM where ferrovm and SeaBIOS put it.
    pub fn new(cpus: u8, max_cpus: u8, layout: MemoryLayout) -> Self {
        Self {
            cpus,
            max_cpus,
            layout,
            ecam: Some((ECAM_START, ECAM_SIZE)),
            pci_mmio64: None,
            pvpanic_port: None,
        }
    }

    /// The same with a pvpanic device at `port`.
    pub fn with_pvpanic(mut self, port: Option<u16>) -> Self {
        self.pvpanic_port = port;
        self
    }
}

/// Where each table landed, for tests and debugging.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcpiAddresses {
    pub rsdp: u64,
    pub xsdt: u64,
    pub fadt: u64,
    pub facs: u64,
    pub dsdt: u64,
    pub madt: u64,
    pub mcfg: Option<u64>,
    pub end: u64,
}

/// Writes the ACPI tables into guest memory at 0xe0000 (clearing the rest of
/// the BIOS area) and returns the RSDP's address.
pub fn build_acpi(mem: &GuestMemoryMmap, cfg: &AcpiConfig) -> Result<GuestAddress, BootError> {
    let (blob, addrs) = build_tables(cfg)?;
    let mut area = vec![0u8; (ACPI_END - ACPI_START) as usize];
    area[..blob.len()].copy_from_slice(&blob);
    mem.write_slice(&area, GuestAddress(ACPI_START))
        .map_err(|_| BootError::GuestMemory {
            addr: ACPI_START,
            len: area.len() as u64,
        })?;
    Ok(GuestAddress(addrs.rsdp))
}

/// Builds all tables as one blob to be placed at `ACPI_START`.
pub fn build_tables(cfg: &AcpiConfig) -> Result<(Vec<u8>, AcpiAddresses), BootError> {
    let (blob, addrs) = build_tables_at(cfg, ACPI_START)?;
    let room = (ACPI_END - ACPI_START) as usize;
    if blob.len() > room {
        return Err(BootError::AcpiTooLarge {
            needed: blob.len(),
            room,
        });
    }
    Ok((blob, addrs))
}

/// Builds all tables as one blob whose first byte is at guest address `base`.
fn build_tables_at(cfg: &AcpiConfig, base: u64) -> Result<(Vec<u8>, AcpiAddresses), BootError> {
    cfg.layout.validate()?;
    if cfg.cpus == 0 {
        return Err(BootError::AcpiConfig("at least one vCPU is needed".into()));
    }
    if cfg.cpus > cfg.max_cpus {
        return Err(BootError::AcpiConfig(format!(
            "{} vCPUs exceed the maximum of {}",
            cfg.cpus, cfg.max_cpus
        )));
    }

    let dsdt = dsdt(cfg);
    let madt = madt(cfg);
    let mcfg = cfg.ecam.map(mcfg);
    let facs = to_bytes(&FACS::new());

    let mut blob = Blob {
        data: Vec::new(),
        base,
    };
    let rsdp_at = blob.reserve(Rsdp::len(), 16);
    let facs_at = blob.place(&facs, 64);
    let xsdt_len = 36 + if mcfg.is_some() { 3 } else { 2 } * 8;
    let xsdt_at = blob.reserve(xsdt_len, 16);
    let fadt_at = blob.reserve(FADT::len(), 16);
    let dsdt_at = blob.place(&dsdt, 16);
    let madt_at = blob.place(&madt, 16);
    let mcfg_at = mcfg.map(|m| blob.place(&m, 16));

    let fadt = fadt(facs_at, dsdt_at);
    blob.write(fadt_at, &fadt);
    let mut xsdt = XSDT::new(OEM_ID, *b"FVMXSDT ", OEM_REVISION);
    for table in [Some(fadt_at), Some(madt_at), mcfg_at]
        .into_iter()
        .flatten()
    {
        xsdt.add_entry(table);
    }
    let xsdt = to_bytes(&xsdt);
    debug_assert_eq!(xsdt.len(), xsdt_len);
    blob.write(xsdt_at, &xsdt);
    blob.write(rsdp_at, &to_bytes(&Rsdp::new(OEM_ID, xsdt_at)));

    let addrs = AcpiAddresses {
        rsdp: rsdp_at,
        xsdt: xsdt_at,
        fadt: fadt_at,
        facs: facs_at,
        dsdt: dsdt_at,
        madt: madt_at,
        mcfg: mcfg_at,
        end: base + blob.data.len() as u64,
    };
    Ok((blob.data, addrs))
}

/// What QEMU's fw_cfg gives the firmware for its table loader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirmwareAcpi {
    /// `etc/acpi/rsdp`.
    pub rsdp: Vec<u8>,
    /// `etc/acpi/tables`: every other table, padded to [`FIRMWARE_TABLES_SIZE`].
    pub tables: Vec<u8>,
    /// `etc/table-loader`: allocate both, patch the pointers, checksum.
    pub loader: Vec<u8>,
}

/// The size of `etc/acpi/tables`, whatever the platform: the file is
/// rebuilt in place after the firmware programmed the chipset, and its size
/// is in the fw_cfg directory the firmware already read (QEMU pads to
/// `ACPI_BUILD_TABLE_SIZE` for the same reason).
pub const FIRMWARE_TABLES_SIZE: usize = 0x1_0000;
pub const RSDP_FILE: &str = "etc/acpi/rsdp";
pub const TABLES_FILE: &str = "etc/acpi/tables";

/// The tables for a firmware boot: laid out from offset 0 of the tables
/// file, pointers as offsets that the loader turns into addresses once the
/// firmware has placed the files (QEMU hw/acpi/bios-linker-loader.c).
pub fn build_for_firmware(cfg: &AcpiConfig) -> Result<FirmwareAcpi, BootError> {
    use crate::table_loader::{TableLoader, Zone};
    let (mut tables, a) = build_tables_at(cfg, 0)?;
    if tables.len() > FIRMWARE_TABLES_SIZE {
        return Err(BootError::AcpiTooLarge {
            needed: tables.len(),
            room: FIRMWARE_TABLES_SIZE,
        });
    }
    // The blob starts with an RSDP; the firmware gets its own copy in the
    // F segment and the one in the tables file stays unused.
    let rsdp = tables[..Rsdp::len()].to_vec();
    tables.resize(FIRMWARE_TABLES_SIZE, 0);
    let len_at = |t: &[u8], at: u64| {
        let o = at as usize + 4;
        u32::from_le_bytes([t[o], t[o + 1], t[o + 2], t[o + 3]])
    };
    let mut l = TableLoader::new();
    l.allocate(RSDP_FILE, 16, Zone::FSeg);
    l.allocate(TABLES_FILE, 64, Zone::High);
    // RSDP: XsdtAddress (ACPI 6.5 §5.2.5.3, offset 24).
    l.add_pointer(RSDP_FILE, TABLES_FILE, 24, 8);
    let xsdt_len = len_at(&tables, a.xsdt);
    for e in (a.xsdt + 36..a.xsdt + u64::from(xsdt_len)).step_by(8) {
        l.add_pointer(TABLES_FILE, TABLES_FILE, e as u32, 8);
    }
    // FADT: X_FIRMWARE_CTRL at 132, X_DSDT at 140 (§5.2.9).
    l.add_pointer(TABLES_FILE, TABLES_FILE, a.fadt as u32 + 132, 8);
    l.add_pointer(TABLES_FILE, TABLES_FILE, a.fadt as u32 + 140, 8);
    for t in [
        Some(a.dsdt),
        Some(a.fadt),
        Some(a.madt),
        a.mcfg,
        Some(a.xsdt),
    ]
    .into_iter()
    .flatten()
    {
        // Zero the checksum: the loader computes it after patching.
        tables[t as usize + 9] = 0;
        l.add_checksum(TABLES_FILE, t as u32 + 9, t as u32, len_at(&tables, t));
    }
    let mut rsdp = rsdp;
    rsdp[8] = 0;
    rsdp[32] = 0;
    l.add_checksum(RSDP_FILE, 8, 0, 20);
    l.add_checksum(RSDP_FILE, 32, 0, rsdp.len() as u32);
    Ok(FirmwareAcpi {
        rsdp,
        tables,
        loader: l.into_bytes(),
    })
}

fn to_bytes(aml: &dyn Aml) -> Vec<u8> {
    let mut v = Vec::new();
    aml.to_aml_bytes(&mut v);
    v
}

/// Tables laid out one after another from `ACPI_START`.
#[derive(Default)]
/// The tables being laid out from `base` (a guest address, or 0 for a
/// file the firmware places: then addresses are offsets into it).
struct Blob {
    data: Vec<u8>,
    base: u64,
}

impl Blob {
    /// Reserves `len` zero bytes at the next `align`ed offset; returns the
    /// guest address.
    fn reserve(&mut self, len: usize, align: usize) -> u64 {
        let at = self.data.len().div_ceil(align) * align;
        self.data.resize(at + len, 0);
        self.base + at as u64
    }

    fn place(&mut self, bytes: &[u8], align: usize) -> u64 {
        let addr = self.reserve(bytes.len(), align);
        self.write(addr, bytes);
        addr
    }

    fn write(&mut self, addr: u64, bytes: &[u8]) {
        let at = (addr - self.base) as usize;
        self.data[at..at + bytes.len()].copy_from_slice(bytes);
    }
}

fn io_gas(port: u16, len_bytes: u8, access: AccessSize) -> GAS {
    GAS::new(
        GasSpace::SystemIo,
        len_bytes * 8,
        0,
        access,
        u64::from(port),
    )
}

fn fadt(facs: u64, dsdt: u64) -> Vec<u8> {
    let mut f = FADTBuilder::new(OEM_ID, *b"FVMFACP ", OEM_REVISION)
        .flag(Flags::Wbinvd)
        .flag(Flags::ProcC1)
        // Set = no fixed-feature sleep button. PWR_BUTTON stays clear: the
        // power button is the fixed-feature one.
        .flag(Flags::SlpButton)
        .flag(Flags::ResetRegSup)
        // Only the 64-bit pointers: with the X_ fields in use the 32-bit
        // FIRMWARE_CTRL and DSDT are to be zero (Linux installs the FACS
        // twice when both are set).
        .firmware_ctrl_64(facs)
        .dsdt_64(dsdt);
    f.sci_int = SCI_IRQ.into();
    // SMI_CMD = 0: no SMM handshake, the hardware is in ACPI mode from reset.
    f.smi_cmd = 0.into();
    f.pm1a_evt_blk = u32::from(PM1A_EVT_BLK).into();
    f.pm1a_cnt_blk = u32::from(PM1A_CNT_BLK).into();
    f.pm_tmr_blk = u32::from(PM_TMR_BLK).into();
    f.gpe0_blk = u32::from(GPE0_BLK).into();
    f.pm1_evt_len = PM1_EVT_LEN;
    f.pm1_cnt_len = PM1_CNT_LEN;
    f.pm_tmr_len = PM_TMR_LEN;
    f.gpe0_blk_len = GPE0_BLK_LEN;
    // > 100 / > 1000: C2 and C3 are not supported.
    f.p_lvl2_lat = 0x0fff.into();
    f.p_lvl3_lat = 0x0fff.into();
    f.century = RTC_CENTURY_REG;
    f.iapc_boot_arch = (IAPC_LEGACY_DEVICES | IAPC_8042 | IAPC_VGA_NOT_PRESENT).into();
    f.reset_reg = io_gas(RESET_PORT, 1, AccessSize::ByteAccess);
    f.reset_value = RESET_VALUE;
    f.x_pm1a_evt_blk = io_gas(PM1A_EVT_BLK, PM1_EVT_LEN, AccessSize::WordAccess);
    f.x_pm1a_cnt_blk = io_gas(PM1A_CNT_BLK, PM1_CNT_LEN, AccessSize::WordAccess);
    f.x_pm_tmr_blk = io_gas(PM_TMR_BLK, PM_TMR_LEN, AccessSize::DwordAccess);
    f.x_gpe0_blk = io_gas(GPE0_BLK, GPE0_BLK_LEN, AccessSize::ByteAccess);
    to_bytes(&f.finalize())
}

fn sdt(signature: [u8; 4], revision: u8, table_id: [u8; 8], body: &[u8]) -> Vec<u8> {
    let mut t = Sdt::new(signature, 36, revision, OEM_ID, table_id, OEM_REVISION);
    t.append_slice(body);
    t.as_slice().to_vec()
}

fn madt(cfg: &AcpiConfig) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&(LAPIC_ADDR as u32).to_le_bytes());
    body.extend_from_slice(&MADT_PCAT_COMPAT.to_le_bytes());
    for cpu in 0..cfg.max_cpus {
        let flags = if cpu < cfg.cpus {
            MADT_LAPIC_ENABLED
        } else {
            MADT_LAPIC_ONLINE_CAPABLE
        };
        // Processor Local APIC: type 0, length 8, ACPI processor UID, APIC ID.
        body.extend_from_slice(&[0, 8, cpu, cpu]);
        body.extend_from_slice(&flags.to_le_bytes());
    }
    // I/O APIC: type 1, length 12, ID, reserved, address, GSI base.
    body.extend_from_slice(&[1, 12, IOAPIC_ID, 0]);
    body.extend_from_slice(&(IOAPIC_ADDR as u32).to_le_bytes());
    body.extend_from_slice(&0u32.to_le_bytes());
    // Interrupt Source Overrides: type 2, length 10, bus 0 (ISA), IRQ, GSI, flags.
    // Only ISA IRQs have overrides (ACPI 6.5 §5.2.12.5: the source is an ISA
    // IRQ): the PCI GSIs 16..=23 have no ISA alias and take trigger mode and
    // polarity from the DSDT's GSIx link devices, as in QEMU's q35 MADT.
    for (irq, gsi, flags) in [
        (0u8, 2u32, 0u16),
        (
            SCI_IRQ as u8,
            u32::from(SCI_IRQ),
            MPS_INTI_ACTIVE_HIGH_LEVEL,
        ),
    ] {
        body.extend_from_slice(&[2, 10, 0, irq]);
        body.extend_from_slice(&gsi.to_le_bytes());
        body.extend_from_slice(&flags.to_le_bytes());
    }
    // Local APIC NMI: type 4, length 6, all processors (0xff), flags 0, LINT1.
    body.extend_from_slice(&[4, 6, 0xff, 0, 0, 1]);
    sdt(*b"APIC", MADT_REVISION, *b"FVMAPIC ", &body)
}

fn mcfg((base, size): (u64, u64)) -> Vec<u8> {
    let mut m = MCFG::new(OEM_ID, *b"FVMMCFG ", OEM_REVISION);
    let last_bus = ((size >> 20).clamp(1, 256) - 1) as u8;
    m.add_ecam(base, 0, 0, last_bus);
    to_bytes(&m)
}

/// Name of the processor device for CPU `n`: `C000`..`C0FE`.
fn cpu_device_name(n: u8) -> String {
    format!("C{n:03X}")
}

/// QEMU's `PEVT` (hw/misc/pvpanic-isa.c `build_pvpanic_isa_aml`): `_HID`
/// QEMU0001, the port in `_CRS`, `_STA` 0xF, for Linux's pvpanic driver.
/// QEMU's PEOR region and its RDPT/WRPT methods are left out: no driver
/// calls them.
fn pvpanic_device(port: u16, sb: &mut Vec<u8>) {
    let io = IO::new(port, port, 1, 1);
    let crs = ResourceTemplate::new(vec![&io]);
    Device::new(
        "PEVT".into(),
        vec![
            &Name::new("_HID".into(), &"QEMU0001"),
            &Name::new("_CRS".into(), &crs),
            &Name::new("_STA".into(), &0x0fu8),
        ],
    )
    .to_aml_bytes(sb);
}

fn dsdt(cfg: &AcpiConfig) -> Vec<u8> {
    let mut aml = Vec::new();

    // \_S5_: soft-off, SLP_TYP 0 for PM1a and PM1b.
    Name::new(
        "_S5_".into(),
        &Package::new(vec![&aml::ZERO, &aml::ZERO, &aml::ZERO, &aml::ZERO]),
    )
    .to_aml_bytes(&mut aml);

    // Everything in \_SB, encoded as it is built.
    let mut sb = Vec::new();

    // PCIe host bridge and its windows.
    let (mmio64_base, mmio64_size) = cfg
        .pci_mmio64
        .unwrap_or_else(|| cfg.layout.pci_mmio64_window());
    let bus = AddressSpace::new_bus_number(0u16, 0xffu16);
    let cfg_io = IO::new(0xcf8, 0xcf8, 1, 8);
    let io_low = AddressSpace::new_io(0x0000u16, 0x0cf7u16, None);
    let io_high = AddressSpace::new_io(0x0d00u16, 0xffffu16, None);
    let mmio32 = AddressSpace::new_memory(
        AddressSpaceCacheable::NotCacheable,
        true,
        PCI_MMIO32_START as u32,
        (PCI_MMIO32_START + PCI_MMIO32_SIZE - 1) as u32,
        None,
    );
    let mmio64 = AddressSpace::new_memory(
        AddressSpaceCacheable::NotCacheable,
        true,
        mmio64_base,
        mmio64_base + mmio64_size - 1,
        None,
    );
    let pci_crs = ResourceTemplate::new(vec![&bus, &cfg_io, &io_low, &io_high, &mmio32, &mmio64]);
    Device::new(
        "PCI0".into(),
        vec![
            &Name::new("_HID".into(), &EISAName::new("PNP0A08")),
            &Name::new("_CID".into(), &EISAName::new("PNP0A03")),
            &Name::new("_SEG".into(), &aml::ZERO),
            &Name::new("_BBN".into(), &aml::ZERO),
            &Name::new("_UID".into(), &aml::ZERO),
            &Name::new("_CRS".into(), &pci_crs),
            &RawAml(pci_prt()),
        ],
    )
    .to_aml_bytes(&mut sb);
    for idx in 0..PCI_INTX_GSI_COUNT {
        gsi_link_device(PCI_INTX_GSI_BASE + idx, &mut sb);
    }

    // Motherboard resources: ECAM, the ACPI PM block, the reset register.
    // A window that is not programmed is a zero-length one, so the table's
    // size never depends on it.
    let (ecam_base, ecam_size) = cfg.ecam.unwrap_or((0, 0));
    let ecam = Memory32Fixed::new(true, ecam_base as u32, ecam_size as u32);
    let pm_io = IO::new(PM1A_EVT_BLK, PM1A_EVT_BLK, 1, 0x30);
    let rst_io = IO::new(RESET_PORT, RESET_PORT, 1, 1);
    let mbrd_crs = ResourceTemplate::new(vec![&ecam, &pm_io, &rst_io]);
    Device::new(
        "MBRD".into(),
        vec![
            &Name::new("_HID".into(), &EISAName::new("PNP0C02")),
            &Name::new("_UID".into(), &aml::ZERO),
            &Name::new("_CRS".into(), &mbrd_crs),
        ],
    )
    .to_aml_bytes(&mut sb);

    // Legacy ISA devices: edge triggered, active high, exclusive IRQs.
    let isa_irq = |n| Interrupt::new(true, true, false, false, n);
    let com1_io = IO::new(0x3f8, 0x3f8, 1, 8);
    let com1_irq = isa_irq(4);
    let com1_crs = ResourceTemplate::new(vec![&com1_io, &com1_irq]);
    Device::new(
        "COM1".into(),
        vec![
            &Name::new("_HID".into(), &EISAName::new("PNP0501")),
            &Name::new("_UID".into(), &aml::ONE),
            &Name::new("_CRS".into(), &com1_crs),
        ],
    )
    .to_aml_bytes(&mut sb);
    let rtc_io = IO::new(0x70, 0x70, 1, 2);
    let rtc_irq = isa_irq(8);
    let rtc_crs = ResourceTemplate::new(vec![&rtc_io, &rtc_irq]);
    Device::new(
        "RTC_".into(),
        vec![
            &Name::new("_HID".into(), &EISAName::new("PNP0B00")),
            &Name::new("_CRS".into(), &rtc_crs),
        ],
    )
    .to_aml_bytes(&mut sb);
    let kbd_data = IO::new(0x60, 0x60, 1, 1);
    let kbd_cmd = IO::new(0x64, 0x64, 1, 1);
    let kbd_irq = isa_irq(1);
    let kbd_crs = ResourceTemplate::new(vec![&kbd_data, &kbd_cmd, &kbd_irq]);
    Device::new(
        "KBD_".into(),
        vec![
            &Name::new("_HID".into(), &EISAName::new("PNP0303")),
            &Name::new("_CRS".into(), &kbd_crs),
        ],
    )
    .to_aml_bytes(&mut sb);

    if let Some(port) = cfg.pvpanic_port {
        pvpanic_device(port, &mut sb);
    }

    // Processor devices (ACPI0007), _UID = MADT processor UID. CPUs past
    // `cpus` are absent until hot-added.
    for n in 0..cfg.max_cpus {
        let sta: u8 = if n < cfg.cpus { 0x0f } else { 0x00 };
        let uid = n;
        Device::new(
            Path::new(&cpu_device_name(n)),
            vec![
                &Name::new("_HID".into(), &"ACPI0007"),
                &Name::new("_UID".into(), &uid),
                &Method::new("_STA".into(), 0, false, vec![&Return::new(&sta)]),
            ],
        )
        .to_aml_bytes(&mut sb);
    }

    Scope::new("\\_SB_".into(), vec![&RawAml(sb)]).to_aml_bytes(&mut aml);

    // Revision 2: 64-bit AML integers (the 64-bit PCI window needs them).
    sdt(*b"DSDT", 2, *b"FVMDSDT ", &aml)
}

/// One `_PRT` entry (ACPI 6.5 §6.2.13): `Package { Address, Pin, Source,
/// Source Index }` with Address = 0xSSSSFFFF (device `slot`, any function),
/// Pin 0..3 = INTA..INTD, Source = the link device, Source Index 0.
struct PrtEntry {
    slot: u8,
    /// 0 = INTA.
    pin: u8,
    link: Path,
}

impl Aml for PrtEntry {
    fn to_aml_bytes(&self, sink: &mut dyn acpi_tables::AmlSink) {
        let address = (u32::from(self.slot) << 16) | 0xffff;
        Package::new(vec![&address, &self.pin, &self.link, &aml::ZERO]).to_aml_bytes(sink);
    }
}

/// `Name (_PRT, Package (128) {...})` for `\_SB.PCI0`: every slot 0..=31 and
/// INTA..INTD, routed to link `GSIx` for GSI [`pci_intx_gsi`].
///
/// # Why link devices and not hardwired GSIs
///
/// A `_PRT` entry may name the GSI itself (Source 0, Source Index = GSI;
/// ACPI 6.5 §6.2.13). That carries no trigger mode or polarity, so the OS
/// takes PCI's own: level-triggered, active-low (Linux
/// drivers/acpi/pci_irq.c `acpi_pci_irq_enable` starts from
/// ACPI_LEVEL_SENSITIVE / ACPI_ACTIVE_LOW and only a link's `_CRS` changes
/// that) and programs the IOAPIC redirection entry active-low.
///
/// ferrovm's INTx lines are active-high: the VMM asserts one by signalling a
/// KVM level irqfd, which sets the GSI's level to 1 until the guest's EOI
/// resamples it to 0. KVM's in-kernel IOAPIC does not look at the polarity
/// bit at all (arch/x86/kvm/ioapic.c `ioapic_set_irq`: any non-zero level
/// sets IRR and delivers; the bit is only stored for read-back), nor does
/// QEMU's userspace IOAPIC (hw/intc/ioapic.c `ioapic_set_irq`), so an
/// active-low description would in fact still deliver on KVM. It would
/// however describe the wire wrongly: an IOAPIC model that honours polarity
/// as an 82093AA does would see an asserted line as idle and a released one
/// as a stuck interrupt. QEMU q35 avoids this the way done here: its
/// APIC-mode `_PRT` (`PRTA`, hw/i386/acpi-build.c build_q35_pci0_int) names
/// the link devices GSIA..GSIH whose fixed `_PRS` = `_CRS` is
/// `Interrupt (ResourceConsumer, Level, ActiveHigh, Shared) {16..23}`
/// (build_gsi_link_dev), so Linux, Windows and the BSDs all program these
/// pins level/active-high ("GSI 22 (level, high)" in Linux's log) on QEMU,
/// and do the same here with no firmware in between.
///
/// Unlike QEMU there is no `_PIC`-selected PIC-mode table (ferrovm has no
/// PIRQ routing registers to back LNKA..LNKH), so `_PRT` is a plain package.
fn pci_prt() -> Vec<u8> {
    let entries: Vec<PrtEntry> = (0..PCI_SLOTS)
        .flat_map(|slot| (1..=4u8).map(move |pin| (slot, pin)))
        .filter_map(|(slot, pin)| {
            let link = gsi_link_name(pci_intx_gsi(slot, pin)?)?;
            Some(PrtEntry {
                slot,
                pin: pin - 1,
                link: Path::new(&link),
            })
        })
        .collect();
    let children: Vec<&dyn Aml> = entries.iter().map(|e| e as &dyn Aml).collect();
    to_bytes(&Name::new("_PRT".into(), &Package::new(children)))
}

/// `\_SB.GSIx`, a PCI interrupt link (PNP0C0F) fixed to `gsi`, as QEMU's
/// build_gsi_link_dev: `_UID` = GSI; `_PRS` and `_CRS` the one level,
/// active-high, shared GSI; `_SRS` and `_DIS` no-ops since the routing cannot
/// change or be turned off (Linux calls `_DIS` on every link at boot and
/// `_SRS` with the `_PRS` choice before use, then re-reads `_CRS`). No `_STA`:
/// absent, the device counts as present and enabled (0x0f, ACPI 6.5 §6.3.7).
fn gsi_link_device(gsi: u32, sink: &mut Vec<u8>) {
    let Some(name) = gsi_link_name(gsi) else {
        return;
    };
    let irq = Interrupt::new(true, false, false, true, gsi);
    let crs = ResourceTemplate::new(vec![&irq]);
    Device::new(
        Path::new(&name),
        vec![
            &Name::new("_HID".into(), &EISAName::new("PNP0C0F")),
            &Name::new("_UID".into(), &gsi),
            &Name::new("_PRS".into(), &crs),
            &Name::new("_CRS".into(), &crs),
            &Method::new("_DIS".into(), 0, false, vec![]),
            &Method::new("_SRS".into(), 1, false, vec![]),
        ],
    )
    .to_aml_bytes(sink);
}

/// Pre-encoded AML spliced into a parent object.
struct RawAml(Vec<u8>);

impl Aml for RawAml {
    fn to_aml_bytes(&self, sink: &mut dyn acpi_tables::AmlSink) {
        sink.vec(&self.0);
    }
}

#[cfg(test)]
mod tests;
