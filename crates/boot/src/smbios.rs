//! SMBIOS tables as QEMU 7.2's `pc-q35-7.2` machine hands them to the
//! firmware: the fw_cfg files `etc/smbios/smbios-tables` (the structures)
//! and `etc/smbios/smbios-anchor` (the entry point, address and checksums
//! left zero: SeaBIOS copies the tables, fills the address in and computes
//! the checksums, see [`finalize_anchor`]).
//!
//! Source: QEMU 7.2 `hw/smbios/smbios.c` (`smbios_get_tables`,
//! `smbios_build_type_*_table`, `smbios_entry_add`), `hw/i386/fw_cfg.c`
//! (`fw_cfg_build_smbios`), `hw/i386/pc_q35.c` (`smbios_set_defaults("QEMU",
//! "Standard PC (Q35 + ICH9, 2009)", mc->name, ...)`), `hw/i386/pc.c`
//! (`smbios_entry_point_type` defaults to the 32-bit, SMBIOS 2.8 entry point
//! in 7.2). Structure layouts: DMTF SMBIOS 3.0 (DSP0134), which QEMU's
//! `include/hw/firmware/smbios.h` follows.
//!
//! Tables built by default: 1 (system), 3 (chassis), 4 (one per socket),
//! 16 (memory array), 17 (one per 16 GiB of RAM), 19 (one per e820 RAM
//! area), 32 (boot status), 127 (end). Type 0 and 2 only when given with
//! `-smbios type=0/2`; 11 when it has OEM strings. SeaBIOS adds its own
//! type 0 ("SeaBIOS") when there is none. A `-smbios file=` blob replaces
//! the built table of its type.

use std::fmt::Write as _;

/// The manufacturer QEMU's PC machines report (`smbios_set_defaults`).
pub const QEMU_MANUFACTURER: &str = "QEMU";
/// The q35 machines' product name (`pc_q35.c`, `mc->desc`).
pub const Q35_PRODUCT: &str = "Standard PC (Q35 + ICH9, 2009)";
/// The version string: the canonical machine name, also for the `q35` alias.
pub const Q35_7_2_VERSION: &str = "pc-q35-7.2";

/// `SMBIOS_MAX_TYPE`.
const MAX_TYPE: u8 = 127;
/// QEMU's `DEFAULT_CPU_SPEED` (MHz), what SVVP wants in type 4.
const DEFAULT_CPU_SPEED: u16 = 2000;
/// One type 17 device per 16 GiB (`MAX_DIMM_SZ`).
const MAX_DIMM_SZ: u64 = 16 << 30;
/// The 2.1 entry point's 16-bit "structure table length".
const SMBIOS_21_MAX_TABLES_LEN: usize = 0xffff;

const T0_BASE: u16 = 0x000;
const T1_BASE: u16 = 0x100;
const T2_BASE: u16 = 0x200;
const T3_BASE: u16 = 0x300;
const T4_BASE: u16 = 0x400;
const T11_BASE: u16 = 0xe00;
const T16_BASE: u16 = 0x1000;
const T17_BASE: u16 = 0x1100;
const T19_BASE: u16 = 0x1300;
const T32_BASE: u16 = 0x2000;
const T127_BASE: u16 = 0x7f00;

/// Which entry point the tables are announced with (QAPI `SmbiosEntryPointType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryPoint {
    /// `32`: the SMBIOS 2.1 `_SM_`/`_DMI_` anchor, version 2.8 (pc-q35-7.2's default).
    Smbios21,
    /// `64`: the SMBIOS 3.0 `_SM3_` anchor.
    Smbios30,
}

/// One RAM area of the machine's e820 table (QEMU's fw_cfg `etc/e820`:
/// `[0, below_4g)` and `[4 GiB, 4 GiB + above_4g)`), for type 19.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemArea {
    pub address: u64,
    pub length: u64,
}

// The fields of each `-smbios type=N` option, as the command line parsed
// them (QEMU 7.2's keys). Type 1's `uuid` is not read here: it is the
// machine UUID, [`SmbiosInput::uuid`].
pub use cli::{
    SmbiosType0 as Type0, SmbiosType1 as Type1, SmbiosType17 as Type17, SmbiosType2 as Type2,
    SmbiosType3 as Type3, SmbiosType4 as Type4,
};

/// One `-smbios` option, applied in command-line order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SmbiosEntry {
    /// `file=`: one structure as is (header, formatted area, strings, double NUL).
    Blob(Vec<u8>),
    Type0(Type0),
    Type1(Type1),
    Type2(Type2),
    Type3(Type3),
    Type4(Type4),
    /// OEM strings (`value=`, and `path=` contents read by the caller).
    Type11(Vec<String>),
    Type17(Type17),
}

/// What the tables describe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmbiosInput {
    /// Default manufacturer of types 1-4 and 17: [`QEMU_MANUFACTURER`].
    pub manufacturer: String,
    /// Default product of types 1 and 2: [`Q35_PRODUCT`].
    pub product: String,
    /// Default version of types 1-4: the machine name, [`Q35_7_2_VERSION`].
    pub version: String,
    pub entry_point: EntryPoint,
    /// The machine UUID (`-uuid`, `-smbios type=1,uuid=`) in RFC 4122 byte
    /// order, as `-uuid` is written; all zero when not given.
    pub uuid: Option<[u8; 16]>,
    /// All guest RAM in bytes (types 16 and 17).
    pub ram_size: u64,
    /// The e820 RAM areas (type 19).
    pub mem_areas: Vec<MemArea>,
    /// `-smp` sockets: one type 4 table each.
    pub sockets: u32,
    /// dies * cores: QEMU's `machine_topo_get_cores_per_socket`.
    pub cores_per_socket: u32,
    /// dies * cores * threads.
    pub threads_per_socket: u32,
    /// CPUID.1:EAX of the boot CPU (type 4 processor ID, low half).
    pub cpuid_version: u32,
    /// CPUID.1:EDX of the boot CPU (type 4 processor ID, high half).
    pub cpuid_features: u32,
    /// The user's `-smbios` options in order.
    pub entries: Vec<SmbiosEntry>,
}

impl SmbiosInput {
    /// pc-q35-7.2's defaults for this RAM split and topology, no overrides.
    pub fn q35(
        below_4g: u64,
        above_4g: u64,
        sockets: u32,
        cores_per_socket: u32,
        threads_per_socket: u32,
    ) -> Self {
        let mut mem_areas = vec![MemArea {
            address: 0,
            length: below_4g,
        }];
        if above_4g > 0 {
            mem_areas.push(MemArea {
                address: 1 << 32,
                length: above_4g,
            });
        }
        SmbiosInput {
            manufacturer: QEMU_MANUFACTURER.to_string(),
            product: Q35_PRODUCT.to_string(),
            version: Q35_7_2_VERSION.to_string(),
            entry_point: EntryPoint::Smbios21,
            uuid: None,
            ram_size: below_4g + above_4g,
            mem_areas,
            sockets,
            cores_per_socket,
            threads_per_socket,
            cpuid_version: 0,
            cpuid_features: 0,
            entries: Vec::new(),
        }
    }
}

/// The two fw_cfg files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmbiosTables {
    /// `etc/smbios/smbios-anchor`: 31 bytes (2.1) or 24 (3.0).
    pub anchor: Vec<u8>,
    /// `etc/smbios/smbios-tables`.
    pub tables: Vec<u8>,
}

/// Why the tables cannot be built; the texts are QEMU's. `index` is the
/// position in [`SmbiosInput::entries`], for the caller to name the option.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SmbiosError {
    #[error("can't add fields, binary file already loaded!")]
    FieldsAfterBlob { index: usize },
    #[error("can't load type {ty} struct, fields already specified!")]
    BlobAfterFields { index: usize, ty: u8 },
    /// QEMU: "Cannot read SMBIOS file %s" (a file shorter than a header).
    #[error("SMBIOS structure of {len} bytes is shorter than its 4-byte header")]
    BlobTooShort { index: usize, len: usize },
    #[error("Expected {expected} SMBIOS Type 4 tables, got {got} instead")]
    Type4Count { expected: u32, got: u32 },
    #[error("SMBIOS 2.1 table length {0} exceeds 65535")]
    TableTooLong(usize),
    #[error("SMBIOS entry point of {0} bytes is not one this crate builds")]
    BadAnchor(usize),
}

/// QEMU's static state after every `-smbios` (`type0` ... `type17`, bitmaps).
#[derive(Default)]
struct Fields {
    t0: Type0,
    uefi: bool,
    t1: Type1,
    t2: Type2,
    t3: Type3,
    t4: Type4,
    t4_speeds: (u16, u16),
    t4_id: u64,
    t11: Vec<String>,
    t17: Type17,
    t17_speed: u16,
    /// `have_fields_bitmap` / `have_binfile_bitmap`: bit N for type N (0..=127).
    have_fields: u128,
    have_binfile: u128,
}

fn bit(ty: u8) -> u128 {
    1u128 << (ty & MAX_TYPE)
}

fn save(dst: &mut Option<String>, v: &Option<String>) {
    if v.is_some() {
        dst.clone_from(v);
    }
}

/// The structures being built (QEMU's `smbios_tables`, `_max`, `_cnt`).
struct Out {
    bytes: Vec<u8>,
    max: usize,
    count: usize,
    type4_count: u32,
}

/// One structure: formatted area plus string set (`SMBIOS_BUILD_TABLE_*`).
struct Table {
    area: Vec<u8>,
    strings: Vec<u8>,
    nstrings: u8,
}

impl Table {
    fn new(ty: u8, len: u8, handle: u16) -> Self {
        let mut area = vec![0u8; len as usize];
        area[0] = ty;
        area[1] = len;
        area[2..4].copy_from_slice(&handle.to_le_bytes());
        Table {
            area,
            strings: Vec::new(),
            nstrings: 0,
        }
    }
    fn u8(&mut self, off: usize, v: u8) {
        self.area[off] = v;
    }
    fn u16(&mut self, off: usize, v: u16) {
        self.area[off..off + 2].copy_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, off: usize, v: u32) {
        self.area[off..off + 4].copy_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, off: usize, v: u64) {
        self.area[off..off + 8].copy_from_slice(&v.to_le_bytes());
    }
    /// Append a string (C `strlen` semantics) and return its number; an
    /// absent or empty one is 0 and adds nothing (`SMBIOS_TABLE_SET_STR`).
    fn add_str(&mut self, v: Option<&str>) -> u8 {
        let v = v.map(|s| s.split('\0').next().unwrap_or(""));
        match v {
            Some(s) if !s.is_empty() => {
                self.strings.extend_from_slice(s.as_bytes());
                self.strings.push(0);
                self.nstrings = self.nstrings.wrapping_add(1);
                self.nstrings
            }
            _ => 0,
        }
    }
    fn str(&mut self, off: usize, v: Option<&str>) {
        let n = self.add_str(v);
        self.area[off] = n;
    }
    fn finish(self, out: &mut Out) {
        let start = out.bytes.len();
        out.bytes.extend_from_slice(&self.area);
        out.bytes.extend_from_slice(&self.strings);
        // One NUL ends the string set; two when there are no strings.
        out.bytes
            .extend_from_slice(if self.nstrings == 0 { &[0, 0] } else { &[0] });
        out.max = out.max.max(out.bytes.len() - start);
        out.count += 1;
    }
}

impl Fields {
    /// `smbios_entry_add` for one entry.
    fn add(&mut self, index: usize, e: &SmbiosEntry, out: &mut Out) -> Result<(), SmbiosError> {
        let ty = match e {
            SmbiosEntry::Blob(b) => {
                if b.len() < 4 {
                    return Err(SmbiosError::BlobTooShort {
                        index,
                        len: b.len(),
                    });
                }
                let ty = b[0];
                if ty <= MAX_TYPE {
                    if self.have_fields & bit(ty) != 0 {
                        return Err(SmbiosError::BlobAfterFields { index, ty });
                    }
                    self.have_binfile |= bit(ty);
                }
                if ty == 4 {
                    out.type4_count += 1;
                }
                out.bytes.extend_from_slice(b);
                out.max = out.max.max(b.len());
                out.count += 1;
                return Ok(());
            }
            SmbiosEntry::Type0(_) => 0,
            SmbiosEntry::Type1(_) => 1,
            SmbiosEntry::Type2(_) => 2,
            SmbiosEntry::Type3(_) => 3,
            SmbiosEntry::Type4(_) => 4,
            SmbiosEntry::Type11(_) => 11,
            SmbiosEntry::Type17(_) => 17,
        };
        if self.have_binfile & bit(ty) != 0 {
            return Err(SmbiosError::FieldsAfterBlob { index });
        }
        self.have_fields |= bit(ty);
        match e {
            SmbiosEntry::Blob(_) => {}
            SmbiosEntry::Type0(t) => {
                save(&mut self.t0.vendor, &t.vendor);
                save(&mut self.t0.version, &t.version);
                save(&mut self.t0.date, &t.date);
                self.uefi = t.uefi.unwrap_or(false);
                if t.release.is_some() {
                    self.t0.release = t.release;
                }
            }
            SmbiosEntry::Type1(t) => {
                save(&mut self.t1.manufacturer, &t.manufacturer);
                save(&mut self.t1.product, &t.product);
                save(&mut self.t1.version, &t.version);
                save(&mut self.t1.serial, &t.serial);
                save(&mut self.t1.sku, &t.sku);
                save(&mut self.t1.family, &t.family);
            }
            SmbiosEntry::Type2(t) => {
                save(&mut self.t2.manufacturer, &t.manufacturer);
                save(&mut self.t2.product, &t.product);
                save(&mut self.t2.version, &t.version);
                save(&mut self.t2.serial, &t.serial);
                save(&mut self.t2.asset, &t.asset);
                save(&mut self.t2.location, &t.location);
            }
            SmbiosEntry::Type3(t) => {
                save(&mut self.t3.manufacturer, &t.manufacturer);
                save(&mut self.t3.version, &t.version);
                save(&mut self.t3.serial, &t.serial);
                save(&mut self.t3.asset, &t.asset);
                save(&mut self.t3.sku, &t.sku);
            }
            SmbiosEntry::Type4(t) => {
                save(&mut self.t4.sock_pfx, &t.sock_pfx);
                save(&mut self.t4.manufacturer, &t.manufacturer);
                save(&mut self.t4.version, &t.version);
                save(&mut self.t4.serial, &t.serial);
                save(&mut self.t4.asset, &t.asset);
                save(&mut self.t4.part, &t.part);
                self.t4_id = t.processor_id.unwrap_or(0);
                self.t4_speeds = (
                    t.max_speed.unwrap_or(DEFAULT_CPU_SPEED),
                    t.current_speed.unwrap_or(DEFAULT_CPU_SPEED),
                );
            }
            SmbiosEntry::Type11(v) => self.t11.extend(v.iter().cloned()),
            SmbiosEntry::Type17(t) => {
                save(&mut self.t17.loc_pfx, &t.loc_pfx);
                save(&mut self.t17.bank, &t.bank);
                save(&mut self.t17.manufacturer, &t.manufacturer);
                save(&mut self.t17.serial, &t.serial);
                save(&mut self.t17.asset, &t.asset);
                save(&mut self.t17.part, &t.part);
                self.t17_speed = t.speed.unwrap_or(0);
            }
        }
        Ok(())
    }

    /// `smbios_skip_table` with `smbios_have_defaults` set.
    fn skip(&self, ty: u8, required: bool) -> bool {
        if self.have_binfile & bit(ty) != 0 {
            return true;
        }
        if self.have_fields & bit(ty) != 0 {
            return false;
        }
        !required
    }
}

/// Build the tables and the entry point as QEMU 7.2 does for this input.
pub fn build_smbios(input: &SmbiosInput) -> Result<SmbiosTables, SmbiosError> {
    let mut f = Fields {
        t4_speeds: (DEFAULT_CPU_SPEED, DEFAULT_CPU_SPEED),
        ..Fields::default()
    };
    let mut out = Out {
        bytes: Vec::new(),
        max: 0,
        count: 0,
        type4_count: 0,
    };
    // Blobs go in as the options are read, before any built table.
    for (i, e) in input.entries.iter().enumerate() {
        f.add(i, e, &mut out)?;
    }
    // smbios_set_defaults: fill what the user left out.
    let dflt = |v: &Option<String>, d: &str| v.clone().unwrap_or_else(|| d.to_string());
    let (m, p, v) = (&input.manufacturer, &input.product, &input.version);

    if !f.skip(0, false) {
        let mut t = Table::new(0, 24, T0_BASE);
        t.str(4, f.t0.vendor.as_deref());
        t.str(5, f.t0.version.as_deref());
        t.u16(6, 0xe800); // starting segment, from SeaBIOS
        t.str(8, f.t0.date.as_deref());
        t.u8(9, 0); // ROM size: hardcoded in SeaBIOS
        t.u64(10, 0x08); // characteristics not supported
        t.u8(18, 0);
        t.u8(19, 0x14 | if f.uefi { 0x08 } else { 0 }); // TCD/SVVP | VM (| UEFI)
        let (major, minor) = f.t0.release.unwrap_or((0, 0));
        t.u8(20, major);
        t.u8(21, minor);
        t.u8(22, 0xff); // embedded controller: none
        t.u8(23, 0xff);
        t.finish(&mut out);
    }
    if !f.skip(1, true) {
        let mut t = Table::new(1, 27, T1_BASE);
        t.str(4, Some(&dflt(&f.t1.manufacturer, m)));
        t.str(5, Some(&dflt(&f.t1.product, p)));
        t.str(6, Some(&dflt(&f.t1.version, v)));
        t.str(7, f.t1.serial.as_deref());
        if let Some(u) = input.uuid {
            t.area[8..24].copy_from_slice(&smbios_uuid(&u));
        }
        t.u8(24, 0x06); // wake-up: power switch
        t.str(25, f.t1.sku.as_deref());
        t.str(26, f.t1.family.as_deref());
        t.finish(&mut out);
    }
    if !f.skip(2, false) {
        let mut t = Table::new(2, 15, T2_BASE);
        t.str(4, Some(&dflt(&f.t2.manufacturer, m)));
        t.str(5, Some(&dflt(&f.t2.product, p)));
        t.str(6, Some(&dflt(&f.t2.version, v)));
        t.str(7, f.t2.serial.as_deref());
        t.str(8, f.t2.asset.as_deref());
        t.u8(9, 0x01); // feature flags: hosting board (motherboard)
        t.str(10, f.t2.location.as_deref());
        t.u16(11, T3_BASE); // the chassis
        t.u8(13, 0x0a); // motherboard
        t.u8(14, 0);
        t.finish(&mut out);
    }
    if !f.skip(3, true) {
        let mut t = Table::new(3, 22, T3_BASE);
        t.str(4, Some(&dflt(&f.t3.manufacturer, m)));
        t.u8(5, 0x01); // other
        t.str(6, Some(&dflt(&f.t3.version, v)));
        t.str(7, f.t3.serial.as_deref());
        t.str(8, f.t3.asset.as_deref());
        t.u8(9, 0x03); // boot-up: safe
        t.u8(10, 0x03); // power supply: safe
        t.u8(11, 0x03); // thermal: safe
        t.u8(12, 0x02); // security: unknown
        t.str(21, f.t3.sku.as_deref());
        t.finish(&mut out);
    }
    if !f.skip(4, true) {
        let len = match input.entry_point {
            EntryPoint::Smbios21 => 42,
            EntryPoint::Smbios30 => 48,
        };
        let pfx = dflt(&f.t4.sock_pfx, "CPU");
        let cores = input.cores_per_socket;
        let threads = input.threads_per_socket;
        for i in 0..input.sockets {
            let mut t = Table::new(4, len, T4_BASE.wrapping_add(i as u16));
            let mut sock = pfx.clone();
            let _ = write!(sock, "{i:2x}");
            t.str(4, Some(&sock));
            t.u8(5, 0x03); // central processor
            t.u8(6, 0x01); // family: other
            t.str(7, Some(&dflt(&f.t4.manufacturer, m)));
            if f.t4_id == 0 {
                t.u32(8, input.cpuid_version);
                t.u32(12, input.cpuid_features);
            } else {
                t.u64(8, f.t4_id);
            }
            t.str(16, Some(&dflt(&f.t4.version, v)));
            t.u16(20, f.t4_speeds.0);
            t.u16(22, f.t4_speeds.1);
            t.u8(24, 0x41); // socket populated, CPU enabled
            t.u8(25, 0x01); // upgrade: other
            t.u16(26, 0xffff); // no cache tables
            t.u16(28, 0xffff);
            t.u16(30, 0xffff);
            t.str(32, f.t4.serial.as_deref());
            t.str(33, f.t4.asset.as_deref());
            t.str(34, f.t4.part.as_deref());
            let core_count = cores.min(255) as u8;
            t.u8(35, core_count);
            t.u8(36, core_count);
            t.u8(37, threads.min(255) as u8);
            t.u16(38, 0x02); // characteristics: unknown
            t.u16(40, 0x01); // family 2: other
            if len == 48 {
                t.u16(42, cores as u16);
                t.u16(44, cores as u16);
                t.u16(46, threads as u16);
            }
            t.finish(&mut out);
            out.type4_count += 1;
        }
    }
    if !f.t11.is_empty() && !f.skip(11, true) {
        let mut t = Table::new(11, 5, T11_BASE);
        t.u8(4, f.t11.len() as u8);
        for s in &f.t11 {
            t.add_str(Some(s));
        }
        t.finish(&mut out);
    }

    let ram = input.ram_size;
    let dimm_cnt = ram.div_ceil(MAX_DIMM_SZ);
    let t19_offset = dimm_cnt.saturating_sub(u64::from(T19_BASE - T17_BASE));
    if !f.skip(16, true) {
        let mut t = Table::new(16, 23, T16_BASE);
        t.u8(4, 0x01); // location: other
        t.u8(5, 0x03); // use: system memory
        t.u8(6, 0x06); // multi-bit ECC (for Microsoft, per SeaBIOS)
        let size_kb = ram.div_ceil(1024);
        if size_kb < 0x8000_0000 {
            t.u32(7, size_kb as u32);
        } else {
            t.u32(7, 0x8000_0000);
            t.u64(15, ram);
        }
        t.u16(11, 0xfffe); // no error information
        t.u16(13, dimm_cnt as u16);
        t.finish(&mut out);
    }
    if !f.skip(17, true) {
        for i in 0..dimm_cnt {
            let size = if i + 1 < dimm_cnt {
                MAX_DIMM_SZ
            } else {
                (ram - 1) % MAX_DIMM_SZ + 1
            };
            let mut t = Table::new(17, 40, T17_BASE.wrapping_add(i as u16));
            t.u16(4, T16_BASE);
            t.u16(6, 0xfffe);
            t.u16(8, 0xffff); // widths unknown
            t.u16(10, 0xffff);
            let size_mb = size.div_ceil(1 << 20);
            if size_mb < 0x7fff {
                t.u16(12, size_mb as u16);
            } else {
                t.u16(12, 0x7fff);
                t.u32(28, size_mb as u32);
            }
            t.u8(14, 0x09); // DIMM
            t.u8(15, 0);
            let loc = format!("{} {i}", dflt(&f.t17.loc_pfx, "DIMM"));
            t.str(16, Some(&loc));
            t.str(17, f.t17.bank.as_deref());
            t.u8(18, 0x07); // RAM
            t.u16(19, 0x02); // type detail: other
            t.u16(21, f.t17_speed);
            t.str(23, Some(&dflt(&f.t17.manufacturer, m)));
            t.str(24, f.t17.serial.as_deref());
            t.str(25, f.t17.asset.as_deref());
            t.str(26, f.t17.part.as_deref());
            t.u16(32, f.t17_speed); // configured speed: the maximum
            t.finish(&mut out);
        }
    }
    if !f.skip(19, true) {
        for (i, a) in input.mem_areas.iter().enumerate() {
            if a.length == 0 {
                continue;
            }
            let handle = T19_BASE
                .wrapping_add(t19_offset as u16)
                .wrapping_add(i as u16);
            let mut t = Table::new(19, 31, handle);
            let end = a.address.saturating_add(a.length - 1);
            let (start_kb, end_kb) = (a.address / 1024, end / 1024);
            if start_kb < u64::from(u32::MAX) && end_kb < u64::from(u32::MAX) {
                t.u32(4, start_kb as u32);
                t.u32(8, end_kb as u32);
            } else {
                t.u32(4, u32::MAX);
                t.u32(8, u32::MAX);
                t.u64(15, a.address);
                t.u64(23, end);
            }
            t.u16(12, T16_BASE);
            t.u8(14, 1); // one device per row
            t.finish(&mut out);
        }
    }
    if !f.skip(32, true) {
        Table::new(32, 11, T32_BASE).finish(&mut out);
    }
    if !f.skip(127, true) {
        Table::new(127, 4, T127_BASE).finish(&mut out);
    }

    // smbios_validate_table.
    if out.type4_count != 0 && out.type4_count != input.sockets {
        return Err(SmbiosError::Type4Count {
            expected: input.sockets,
            got: out.type4_count,
        });
    }
    let anchor = match input.entry_point {
        EntryPoint::Smbios21 => {
            if out.bytes.len() > SMBIOS_21_MAX_TABLES_LEN {
                return Err(SmbiosError::TableTooLong(out.bytes.len()));
            }
            let mut a = vec![0u8; 31];
            a[0..4].copy_from_slice(b"_SM_");
            a[5] = 31;
            a[6] = 2;
            a[7] = 8;
            a[8..10].copy_from_slice(&(out.max.min(0xffff) as u16).to_le_bytes());
            a[16..21].copy_from_slice(b"_DMI_");
            a[22..24].copy_from_slice(&(out.bytes.len() as u16).to_le_bytes());
            a[28..30].copy_from_slice(&(out.count.min(0xffff) as u16).to_le_bytes());
            a[30] = 0x28;
            a
        }
        EntryPoint::Smbios30 => {
            let mut a = vec![0u8; 24];
            a[0..5].copy_from_slice(b"_SM3_");
            a[6] = 24;
            a[7] = 3;
            a[8] = 0;
            a[9] = 0;
            a[10] = 1; // entry point revision
            a[12..16].copy_from_slice(&(out.bytes.len() as u32).to_le_bytes());
            a
        }
    };
    Ok(SmbiosTables {
        anchor,
        tables: out.bytes,
    })
}

/// Read a `-smbios file=` structure as QEMU does at option time; its error
/// is QEMU's `Cannot read SMBIOS file PATH` (unreadable or shorter than a header).
pub fn read_smbios_file(path: &std::path::Path) -> Result<Vec<u8>, String> {
    match std::fs::read(path) {
        Ok(b) if b.len() >= 4 => Ok(b),
        _ => Err(format!("Cannot read SMBIOS file {}", path.display())),
    }
}

/// Read a `-smbios type=11,path=` OEM string (`save_opt_one`), with QEMU's errors.
pub fn read_oem_string_file(path: &std::path::Path) -> Result<String, String> {
    let data = std::fs::read(path).map_err(|e| {
        let msg = e.to_string();
        // io::Error adds " (os error N)"; QEMU prints strerror alone.
        let msg = msg.split(" (os error").next().unwrap_or(&msg).to_string();
        format!("Could not open '{}': {msg}", path.display())
    })?;
    if data.contains(&0) {
        return Err(format!("NUL in OEM strings value in {}", path.display()));
    }
    Ok(String::from_utf8_lossy(&data).into_owned())
}

/// RFC 4122 (big-endian) to SMBIOS 2.6 wire format: the first three fields
/// little-endian (`smbios_encode_uuid` with `smbios_uuid_encoded`).
fn smbios_uuid(u: &[u8; 16]) -> [u8; 16] {
    let mut o = *u;
    o[0..4].reverse();
    o[4..6].reverse();
    o[6..8].reverse();
    o
}

fn checksum_fix(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b)))
}

/// What SeaBIOS (`smbios_romfile_setup`) does with the anchor once it has
/// placed the tables at `table_address`: fill the address in and compute the
/// checksums (2.1: the intermediate over bytes 0x10.., then the whole; 3.0:
/// the whole). For a boot without firmware, or to check the anchor.
pub fn finalize_anchor(anchor: &[u8], table_address: u64) -> Result<Vec<u8>, SmbiosError> {
    let mut a = anchor.to_vec();
    match a.len() {
        31 if a.starts_with(b"_SM_") => {
            let addr = u32::try_from(table_address).map_err(|_| SmbiosError::BadAnchor(31))?;
            a[24..28].copy_from_slice(&addr.to_le_bytes());
            a[21] = 0;
            a[4] = 0;
            a[21] = checksum_fix(&a[16..]);
            a[4] = checksum_fix(&a);
        }
        24 if a.starts_with(b"_SM3_") => {
            a[16..24].copy_from_slice(&table_address.to_le_bytes());
            a[5] = 0;
            a[5] = checksum_fix(&a);
        }
        n => return Err(SmbiosError::BadAnchor(n)),
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    /// One structure as dmidecode reads it.
    #[derive(Debug)]
    struct S {
        ty: u8,
        handle: u16,
        area: Vec<u8>,
        strings: Vec<String>,
    }

    impl S {
        /// String number `n` of the formatted area byte at `off` (dmidecode's
        /// `dmi_string`): None for 0.
        fn s(&self, off: usize) -> Option<&str> {
            match self.area[off] {
                0 => None,
                n => Some(self.strings[n as usize - 1].as_str()),
            }
        }
        fn u16(&self, off: usize) -> u16 {
            u16::from_le_bytes([self.area[off], self.area[off + 1]])
        }
        fn u32(&self, off: usize) -> u32 {
            u32::from_le_bytes(self.area[off..off + 4].try_into().unwrap())
        }
        fn u64(&self, off: usize) -> u64 {
            u64::from_le_bytes(self.area[off..off + 8].try_into().unwrap())
        }
    }

    /// Walk the structure table as an OS does: header, formatted area of
    /// `length` bytes, then NUL-terminated strings up to a double NUL.
    fn parse(t: &[u8]) -> Vec<S> {
        let mut out = Vec::new();
        let mut p = 0;
        while p < t.len() {
            let (ty, len) = (t[p], t[p + 1] as usize);
            assert!(len >= 4, "structure at {p} has length {len}");
            let handle = u16::from_le_bytes([t[p + 2], t[p + 3]]);
            let area = t[p..p + len].to_vec();
            let mut q = p + len;
            let mut strings = Vec::new();
            if t[q] == 0 {
                assert_eq!(t[q + 1], 0, "type {ty}: no double NUL");
                q += 2;
            } else {
                while t[q] != 0 {
                    let end = q + t[q..].iter().position(|b| *b == 0).unwrap();
                    strings.push(String::from_utf8(t[q..end].to_vec()).unwrap());
                    q = end + 1;
                }
                q += 1;
            }
            out.push(S {
                ty,
                handle,
                area,
                strings,
            });
            p = q;
        }
        assert_eq!(p, t.len());
        out
    }

    fn one(v: &[S], ty: u8) -> &S {
        let all: Vec<&S> = v.iter().filter(|s| s.ty == ty).collect();
        assert_eq!(all.len(), 1, "type {ty}");
        all[0]
    }

    fn q35_128m() -> SmbiosInput {
        let mut i = SmbiosInput::q35(128 * MIB, 0, 1, 1, 1);
        // qemu64's signature (family 15, model 107, stepping 1 encode as
        // 0x00060fb1); the EDX value is just a recognisable pattern.
        i.cpuid_version = 0x0006_0fb1;
        i.cpuid_features = 0x0781_abfd;
        i
    }

    #[test]
    fn default_q35_tables() {
        let t = build_smbios(&q35_128m()).unwrap();
        let v = parse(&t.tables);
        let kinds: Vec<(u8, u16)> = v.iter().map(|s| (s.ty, s.handle)).collect();
        assert_eq!(
            kinds,
            vec![
                (1, 0x100),
                (3, 0x300),
                (4, 0x400),
                (16, 0x1000),
                (17, 0x1100),
                (19, 0x1300),
                (32, 0x2000),
                (127, 0x7f00)
            ]
        );
        // dmidecode -t 1: Manufacturer, Product Name, Version; no serial.
        let s1 = one(&v, 1);
        assert_eq!(s1.area.len(), 27);
        assert_eq!(s1.s(4), Some("QEMU"));
        assert_eq!(s1.s(5), Some("Standard PC (Q35 + ICH9, 2009)"));
        assert_eq!(s1.s(6), Some("pc-q35-7.2"));
        assert_eq!(s1.s(7), None);
        assert_eq!(&s1.area[8..24], &[0u8; 16]);
        assert_eq!(s1.area[24], 6, "Wake-up Type: Power Switch");
        // -t 3: chassis "Other", states Safe, security Unknown.
        let s3 = one(&v, 3);
        assert_eq!(
            (s3.s(4), s3.area[5], s3.s(6)),
            (Some("QEMU"), 1, Some("pc-q35-7.2"))
        );
        assert_eq!(&s3.area[9..13], &[3, 3, 3, 2]);
        // -t 4: "Socket Designation: CPU 0", 2000 MHz, populated and enabled.
        let s4 = one(&v, 4);
        assert_eq!(s4.area.len(), 42);
        assert_eq!(
            (s4.s(4), s4.s(7), s4.s(16)),
            (Some("CPU 0"), Some("QEMU"), Some("pc-q35-7.2"))
        );
        assert_eq!((s4.u32(8), s4.u32(12)), (0x0006_0fb1, 0x0781_abfd));
        assert_eq!((s4.u16(20), s4.u16(22), s4.area[24]), (2000, 2000, 0x41));
        assert_eq!((s4.area[35], s4.area[36], s4.area[37]), (1, 1, 1));
        assert_eq!(
            (s4.u16(26), s4.u16(28), s4.u16(30)),
            (0xffff, 0xffff, 0xffff)
        );
        // -t 16: Maximum Capacity 128 MB, 1 device, Multi-bit ECC.
        let s16 = one(&v, 16);
        assert_eq!((s16.u32(7), s16.u16(13), s16.area[6]), (128 * 1024, 1, 6));
        // -t 17: Size 128 MB, Locator "DIMM 0", Manufacturer QEMU, form DIMM, RAM.
        let s17 = one(&v, 17);
        assert_eq!(
            (s17.u16(12), s17.s(16), s17.s(23)),
            (128, Some("DIMM 0"), Some("QEMU"))
        );
        assert_eq!((s17.area[14], s17.area[18], s17.u16(4)), (9, 7, 0x1000));
        // -t 19: 0x00000000000 - 0x00007FFFFFF.
        let s19 = one(&v, 19);
        assert_eq!(
            (s19.u32(4), s19.u32(8), s19.area[14]),
            (0, 128 * 1024 - 1, 1)
        );
        // Types 0 and 2 only when asked for; 11 only with strings.
        assert!(v.iter().all(|s| !matches!(s.ty, 0 | 2 | 11)));

        // The 2.1 anchor: "_SM_", 2.8, table length/count/max as built, the
        // address and checksums left to the firmware.
        let a = &t.anchor;
        assert_eq!(a.len(), 31);
        assert_eq!(&a[0..4], b"_SM_");
        assert_eq!(&a[16..21], b"_DMI_");
        assert_eq!((a[5], a[6], a[7], a[30]), (31, 2, 8, 0x28));
        assert_eq!(u16::from_le_bytes([a[22], a[23]]) as usize, t.tables.len());
        assert_eq!(u16::from_le_bytes([a[28], a[29]]), 8);
        let longest = 4 + 27 + "QEMU\0Standard PC (Q35 + ICH9, 2009)\0pc-q35-7.2\0\0".len() - 4;
        assert_eq!(u16::from_le_bytes([a[8], a[9]]) as usize, longest);
        assert_eq!((a[4], a[21], &a[24..28]), (0, 0, &[0u8; 4][..]));
        let f = finalize_anchor(a, 0x000f_0000 - 0x1000).unwrap();
        assert_eq!(f.iter().fold(0u8, |s, b| s.wrapping_add(*b)), 0);
        assert_eq!(f[16..].iter().fold(0u8, |s, b| s.wrapping_add(*b)), 0);
        assert_eq!(u32::from_le_bytes(f[24..28].try_into().unwrap()), 0xef000);
    }

    #[test]
    fn type1_bytes_and_uuid_wire_format() {
        let mut i = q35_128m();
        // -uuid 12345678-9abc-def0-1122-334455667788
        i.uuid = Some([
            0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66,
            0x77, 0x88,
        ]);
        i.entries.push(SmbiosEntry::Type1(Type1 {
            manufacturer: Some("M".into()),
            serial: Some("S1".into()),
            family: Some("F".into()),
            ..Type1::default()
        }));
        let t = build_smbios(&i).unwrap();
        // Assembled by hand from QEMU's struct smbios_type_1: header (1, 27,
        // handle 0x100), strings 1-4 at 4..7, UUID with time_low, time_mid,
        // time_hi byte-swapped (SMBIOS 2.6), wake-up 6, sku none, family 5.
        let mut want = vec![1, 27, 0x00, 0x01, 1, 2, 3, 4];
        want.extend([0x78, 0x56, 0x34, 0x12, 0xbc, 0x9a, 0xf0, 0xde]);
        want.extend([0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88]);
        want.extend([6, 0, 5]);
        want.extend(b"M\0Standard PC (Q35 + ICH9, 2009)\0pc-q35-7.2\0S1\0F\0\0");
        assert_eq!(&t.tables[..want.len()], &want[..]);
    }

    #[test]
    fn sockets_cores_threads() {
        let mut i = SmbiosInput::q35(GIB, 0, 17, 4, 8);
        i.entries.push(SmbiosEntry::Type4(Type4 {
            sock_pfx: Some("Socket".into()),
            max_speed: Some(3000),
            processor_id: Some(0x1122_3344_5566_7788),
            ..Type4::default()
        }));
        let v = parse(&build_smbios(&i).unwrap().tables);
        let t4: Vec<&S> = v.iter().filter(|s| s.ty == 4).collect();
        assert_eq!(t4.len(), 17);
        // "%s%2x": space-padded hex.
        assert_eq!(t4[0].s(4), Some("Socket 0"));
        assert_eq!(t4[10].s(4), Some("Socket a"));
        assert_eq!(t4[16].s(4), Some("Socket10"));
        assert_eq!(t4[16].handle, 0x410);
        // current-speed was not given in that option: back to 2000.
        assert_eq!((t4[3].u16(20), t4[3].u16(22)), (3000, 2000));
        assert_eq!(t4[3].u64(8), 0x1122_3344_5566_7788);
        assert_eq!((t4[3].area[35], t4[3].area[36], t4[3].area[37]), (4, 4, 8));
    }

    #[test]
    fn memory_split_and_dimms() {
        // 40 GiB on q35: 2 GiB below 4 GiB, 38 GiB above.
        let i = SmbiosInput::q35(2 * GIB, 38 * GIB, 1, 1, 1);
        let v = parse(&build_smbios(&i).unwrap().tables);
        let s16 = one(&v, 16);
        assert_eq!((s16.u32(7), s16.u16(13)), (40 * 1024 * 1024, 3));
        let t17: Vec<&S> = v.iter().filter(|s| s.ty == 17).collect();
        let sizes: Vec<u16> = t17.iter().map(|s| s.u16(12)).collect();
        assert_eq!(sizes, vec![16384, 16384, 8192]);
        assert_eq!(t17[2].s(16), Some("DIMM 2"));
        assert_eq!(t17[2].handle, 0x1102);
        let t19: Vec<&S> = v.iter().filter(|s| s.ty == 19).collect();
        assert_eq!(t19.len(), 2);
        assert_eq!((t19[0].u32(4), t19[0].u32(8)), (0, 2 * 1024 * 1024 - 1));
        assert_eq!(t19[1].handle, 0x1301);
        assert_eq!(t19[1].u32(4), 4 * 1024 * 1024);
        assert_eq!(t19[1].u32(8), (42 * 1024 * 1024) - 1);
        // Above 4 TiB in KiB the extended fields carry byte addresses.
        let big = SmbiosInput::q35(2 * GIB, 4096 * GIB, 1, 1, 1);
        let v = parse(&build_smbios(&big).unwrap().tables);
        let hi = v.iter().filter(|s| s.ty == 19).nth(1).unwrap();
        assert_eq!((hi.u32(4), hi.u32(8)), (u32::MAX, u32::MAX));
        assert_eq!((hi.u64(15), hi.u64(23)), (4 * GIB, 4100 * GIB - 1));
    }

    #[test]
    fn user_fields() {
        let mut i = q35_128m();
        i.entries = vec![
            SmbiosEntry::Type0(Type0 {
                vendor: Some("V".into()),
                release: Some((2, 7)),
                uefi: Some(true),
                ..Type0::default()
            }),
            SmbiosEntry::Type2(Type2 {
                location: Some("L".into()),
                ..Type2::default()
            }),
            SmbiosEntry::Type11(vec!["a".into(), String::new()]),
            SmbiosEntry::Type11(vec!["b".into()]),
            SmbiosEntry::Type17(Type17 {
                loc_pfx: Some("Slot".into()),
                speed: Some(2400),
                ..Type17::default()
            }),
        ];
        let v = parse(&build_smbios(&i).unwrap().tables);
        let s0 = one(&v, 0);
        assert_eq!(
            (s0.handle, s0.s(4), s0.s(5), s0.u16(6)),
            (0, Some("V"), None, 0xe800)
        );
        assert_eq!((s0.area[19], s0.area[20], s0.area[21]), (0x1c, 2, 7));
        let s2 = one(&v, 2);
        assert_eq!(
            (s2.s(4), s2.s(5), s2.s(6)),
            (Some("QEMU"), Some(Q35_PRODUCT), Some("pc-q35-7.2"))
        );
        assert_eq!(
            (s2.s(10), s2.u16(11), s2.area[13]),
            (Some("L"), 0x300, 0x0a)
        );
        // OEM strings accumulate; the count includes the empty one QEMU skips.
        let s11 = one(&v, 11);
        assert_eq!(
            (s11.area[4], s11.strings.clone()),
            (3, vec!["a".to_string(), "b".to_string()])
        );
        let s17 = one(&v, 17);
        assert_eq!(
            (s17.s(16), s17.u16(21), s17.u16(32)),
            (Some("Slot 0"), 2400, 2400)
        );
        // Table order is QEMU's: 0, 1, 2, 3, 4, 11, 16...
        let order: Vec<u8> = v.iter().map(|s| s.ty).collect();
        assert_eq!(order, vec![0, 1, 2, 3, 4, 11, 16, 17, 19, 32, 127]);
    }

    fn blob(ty: u8, handle: u16) -> Vec<u8> {
        let mut b = vec![ty, 5, 0, 0, 0x42];
        b[2..4].copy_from_slice(&handle.to_le_bytes());
        b.extend(b"blob\0\0");
        b
    }

    #[test]
    fn blobs() {
        let mut i = q35_128m();
        i.entries = vec![SmbiosEntry::Blob(blob(1, 0x1234))];
        let t = build_smbios(&i).unwrap();
        let v = parse(&t.tables);
        // The file comes first and replaces the built type 1.
        assert_eq!(
            (v[0].ty, v[0].handle, v[0].strings.clone()),
            (1, 0x1234, vec!["blob".to_string()])
        );
        assert_eq!(v.iter().filter(|s| s.ty == 1).count(), 1);
        assert_eq!(u16::from_le_bytes([t.anchor[28], t.anchor[29]]), 8);

        i.entries = vec![
            SmbiosEntry::Blob(blob(1, 0x1234)),
            SmbiosEntry::Type1(Type1::default()),
        ];
        assert_eq!(
            build_smbios(&i).unwrap_err().to_string(),
            "can't add fields, binary file already loaded!"
        );
        i.entries = vec![
            SmbiosEntry::Type3(Type3::default()),
            SmbiosEntry::Blob(blob(3, 7)),
        ];
        let e = build_smbios(&i).unwrap_err();
        assert_eq!(e, SmbiosError::BlobAfterFields { index: 1, ty: 3 });
        assert_eq!(
            e.to_string(),
            "can't load type 3 struct, fields already specified!"
        );
        // Type 4 files must match the sockets.
        let mut two = SmbiosInput::q35(128 * MIB, 0, 2, 1, 1);
        two.entries = vec![SmbiosEntry::Blob(blob(4, 0x400))];
        assert_eq!(
            build_smbios(&two).unwrap_err().to_string(),
            "Expected 2 SMBIOS Type 4 tables, got 1 instead"
        );
        two.entries.push(SmbiosEntry::Blob(blob(4, 0x401)));
        let v = parse(&build_smbios(&two).unwrap().tables);
        assert_eq!(v.iter().filter(|s| s.ty == 4).count(), 2);
        two.entries = vec![SmbiosEntry::Blob(vec![1, 4])];
        assert!(matches!(
            build_smbios(&two),
            Err(SmbiosError::BlobTooShort { index: 0, len: 2 })
        ));
    }

    #[test]
    fn entry_point_30() {
        let mut i = SmbiosInput::q35(128 * MIB, 0, 1, 300, 600);
        i.entry_point = EntryPoint::Smbios30;
        let t = build_smbios(&i).unwrap();
        let a = &t.anchor;
        assert_eq!(
            (a.len(), &a[0..5], a[6], a[7], a[8], a[10]),
            (24, &b"_SM3_"[..], 24, 3, 0, 1)
        );
        assert_eq!(
            u32::from_le_bytes(a[12..16].try_into().unwrap()) as usize,
            t.tables.len()
        );
        let v = parse(&t.tables);
        let s4 = one(&v, 4);
        assert_eq!(s4.area.len(), 48);
        // More than 255: 0xff in the old fields, the count in the 3.0 ones.
        assert_eq!(
            (s4.area[35], s4.area[37], s4.u16(42), s4.u16(46)),
            (0xff, 0xff, 300, 600)
        );
        let f = finalize_anchor(a, 0x1_0000_0000).unwrap();
        assert_eq!(f.iter().fold(0u8, |s, b| s.wrapping_add(*b)), 0);
        assert_eq!(u64::from_le_bytes(f[16..24].try_into().unwrap()), 1 << 32);
        assert!(finalize_anchor(&[0; 7], 0).is_err());
    }

    #[test]
    fn reading_files() {
        let dir = std::env::temp_dir().join(format!("ferrovm-smbios-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let oem = dir.join("oem");
        std::fs::write(&oem, "line1\n").unwrap();
        assert_eq!(read_oem_string_file(&oem).unwrap(), "line1\n");
        std::fs::write(&oem, b"a\0b").unwrap();
        assert_eq!(
            read_oem_string_file(&oem).unwrap_err(),
            format!("NUL in OEM strings value in {}", oem.display())
        );
        // qemu-system-x86_64 -smbios type=11,path=/nonexist
        assert_eq!(
            read_oem_string_file(std::path::Path::new("/nonexist")).unwrap_err(),
            "Could not open '/nonexist': No such file or directory"
        );
        // qemu-system-x86_64 -smbios file=/nonexist
        assert_eq!(
            read_smbios_file(std::path::Path::new("/nonexist")).unwrap_err(),
            "Cannot read SMBIOS file /nonexist"
        );
        let short = dir.join("short");
        std::fs::write(&short, [1, 2]).unwrap();
        assert!(read_smbios_file(&short).is_err());
        std::fs::write(&short, blob(1, 9)).unwrap();
        assert_eq!(read_smbios_file(&short).unwrap(), blob(1, 9));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn table_21_length_limit() {
        let mut i = q35_128m();
        i.entries = vec![SmbiosEntry::Type11(vec!["x".repeat(70000)])];
        assert!(matches!(build_smbios(&i), Err(SmbiosError::TableTooLong(n)) if n > 70000));
        i.entry_point = EntryPoint::Smbios30;
        assert!(build_smbios(&i).is_ok());
    }
}
