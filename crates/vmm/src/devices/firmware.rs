//! What the firmware learns through fw_cfg, item for item as QEMU 7.2's pc
//! machines provide it (hw/nvram/fw_cfg.c `fw_cfg_common_init`,
//! hw/i386/fw_cfg.c `fw_cfg_arch_create`, `fw_cfg_bootsplash`,
//! `fw_cfg_reboot`, softmmu/bootdevice.c for `bootorder`), plus the ACPI
//! tables through the table loader (see [`acpi_files`]).
//!
//! Not provided, unlike QEMU: `genroms/kvmvapic.bin` (an option ROM that
//! patches Windows XP's TPR accesses), `etc/system-states`, HPET (the
//! machine has none).

use std::sync::{Arc, Mutex};

use devices::fw_cfg::{self, FwCfg};
use devices::pci::PciRoot;
use vm_memory::GuestMemoryMmap;

use super::bootorder::{self, BootDevice};
use crate::error::VmmError;

/// `-boot` as the firmware sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BootConfig {
    /// `menu=on`.
    pub menu: bool,
    /// `splash-time=` (ms), the menu's wait.
    pub splash_time: Option<u16>,
    /// `reboot-timeout=` (ms; -1: never), how long to wait after a failed boot.
    pub reboot_timeout: Option<i32>,
    /// `strict=on`: boot only what `bootorder` lists.
    pub strict: bool,
    /// `order=`: drive letters, validated by the CLI (default "cad").
    pub order: String,
    /// `once=`: the order for the first boot only; resets go back to `order`
    /// (QEMU's `restore_boot_order`).
    pub once: Option<String>,
    /// `splash=`: the boot splash picture, `bootsplash.jpg` or `.bmp`.
    pub splash: Option<(&'static str, Vec<u8>)>,
}

/// The fw_cfg name of a boot splash picture, as QEMU's `read_splashfile`
/// accepts it: a JPEG, or a 24-bit BMP, at least 30 bytes.
pub fn splash_name(bytes: &[u8]) -> Option<&'static str> {
    if bytes.len() < 30 {
        return None;
    }
    match u16::from_le_bytes([bytes[0], bytes[1]]) {
        0xd8ff => Some("bootsplash.jpg"),
        0x4d42 if u16::from_le_bytes([bytes[28], bytes[29]]) == 24 => Some("bootsplash.bmp"),
        _ => None,
    }
}

/// CMOS 0x3d and 0x38 for `-boot order=`, which SeaBIOS reads on QEMU for
/// its default priorities (src/boot.c `boot_init`): a nibble per device,
/// floppy 1, hard disk 2, CD-ROM 3, network 4 (hw/i386/pc.c `set_boot_dev`;
/// 0x38 bit 0 clear: the floppy boot signature is checked, QEMU's default).
pub fn cmos_boot_order(order: &str) -> (u8, u8) {
    let nibble = |c: u8| match c {
        b'a' | b'b' => 1,
        b'c' => 2,
        b'd' => 3,
        b'n' => 4,
        _ => 0,
    };
    let mut n = [0u8; 3];
    for (slot, c) in n.iter_mut().zip(order.bytes()) {
        *slot = nibble(c);
    }
    (n[1] << 4 | n[0], n[2] << 4)
}

/// The machine facts fw_cfg carries.
#[derive(Debug, Clone)]
pub struct FirmwareSpec {
    pub ram_bytes: u64,
    pub cpus: u16,
    pub max_cpus: u16,
    pub uuid: [u8; 16],
    pub nographic: bool,
    pub boot: BootConfig,
    /// vCPUs and RAM layout for the ACPI tables.
    pub acpi: boot::AcpiConfig,
    /// `acpi=off`: no ACPI files for the firmware (SeaBIOS then builds
    /// its own minimal tables, as with QEMU).
    pub acpi_tables: bool,
    pub smbios: boot::smbios::SmbiosTables,
}

/// Builds the fw_cfg device for a firmware boot. `root` is read when the
/// firmware first asks for the ACPI tables, to describe the chipset as the
/// firmware programmed it.
pub fn fw_cfg(
    spec: &FirmwareSpec,
    mem: GuestMemoryMmap,
    boot_devices: &[BootDevice],
    root: Arc<Mutex<PciRoot>>,
) -> Result<FwCfg, VmmError> {
    let err = |e: fw_cfg::FwCfgError| VmmError::Device(e.to_string());
    let layout = boot::MemoryLayout::new(spec.ram_bytes);
    let mut f = FwCfg::new(mem);
    f.add_bytes(fw_cfg::UUID, spec.uuid.to_vec());
    f.add_u16(fw_cfg::NOGRAPHIC, u16::from(spec.nographic));
    f.add_u16(fw_cfg::BOOT_MENU, u16::from(spec.boot.menu));
    f.add_u16(fw_cfg::NB_CPUS, spec.cpus);
    // QEMU: the APIC ID limit, which is max_cpus for ferrovm's flat IDs.
    f.add_u16(fw_cfg::MAX_CPUS, spec.max_cpus);
    f.add_u64(fw_cfg::RAM_SIZE, spec.ram_bytes);
    // No -acpitable blobs: a zero count.
    f.add_bytes(fw_cfg::ACPI_TABLES, vec![0, 0]);
    f.add_u32(fw_cfg::IRQ0_OVERRIDE, 1);
    // No NUMA nodes: the count, then a node per possible CPU, all zero.
    f.add_bytes(fw_cfg::NUMA, vec![0; 8 * (1 + usize::from(spec.max_cpus))]);
    let e820: Vec<(u64, u64, u32)> = layout
        .firmware_e820()
        .iter()
        .map(|e| (e.addr, e.size, e.kind as u32))
        .collect();
    f.add_file("etc/e820", fw_cfg::e820_file(&e820))
        .map_err(err)?;
    let wait = spec.boot.reboot_timeout.unwrap_or(-1);
    f.add_file("etc/boot-fail-wait", wait.to_le_bytes().to_vec())
        .map_err(err)?;
    if let Some((name, picture)) = &spec.boot.splash {
        f.add_file(name, picture.clone()).map_err(err)?;
    }
    if let Some(ms) = spec.boot.splash_time {
        f.add_file("etc/boot-menu-wait", ms.to_le_bytes().to_vec())
            .map_err(err)?;
    }
    if let Some(order) =
        bootorder::bootorder(boot_devices, spec.boot.strict).map_err(VmmError::Config)?
    {
        f.add_file("bootorder", order).map_err(err)?;
    }
    // hw/i386/fw_cfg.c fw_cfg_build_smbios: SeaBIOS places the tables and
    // fixes the anchor's address.
    f.add_file("etc/smbios/smbios-tables", spec.smbios.tables.clone())
        .map_err(err)?;
    f.add_file("etc/smbios/smbios-anchor", spec.smbios.anchor.clone())
        .map_err(err)?;
    // hw/misc/pvpanic-isa.c pvpanic_isa_realizefn: the port, for SeaBIOS.
    if let Some(port) = spec.acpi.pvpanic_port {
        f.add_file("etc/pvpanic-port", port.to_le_bytes().to_vec())
            .map_err(err)?;
    }
    if spec.acpi_tables {
        acpi_files(&mut f, &spec.acpi, root)?;
    }
    Ok(f)
}

/// `etc/acpi/rsdp`, `etc/acpi/tables` and the `etc/table-loader` that links
/// them (QEMU's bios-linker-loader). The tables are rebuilt when the
/// firmware first selects them after each reset — by then it has programmed
/// PCIEXBAR and the BARs — as QEMU's `acpi_build_update` does.
pub fn acpi_files(
    f: &mut FwCfg,
    cfg: &boot::AcpiConfig,
    root: Arc<Mutex<PciRoot>>,
) -> Result<(), VmmError> {
    let boot_err = |e: boot::BootError| VmmError::Boot(e.to_string());
    let fw_err = |e: fw_cfg::FwCfgError| VmmError::Device(e.to_string());
    let built = boot::acpi::build_for_firmware(cfg).map_err(boot_err)?;
    let cfg = cfg.clone();
    let live = move || {
        let mut c = cfg.clone();
        platform_as_programmed(&mut c, &root);
        boot::acpi::build_for_firmware(&c)
    };
    let rebuild = Arc::new(Mutex::new(live));
    let refresh = |pick: fn(boot::acpi::FirmwareAcpi) -> Vec<u8>| {
        let rebuild = rebuild.clone();
        Box::new(
            move |data: &mut [u8]| match (crate::sync::lock(&rebuild))() {
                Ok(t) => {
                    let bytes = pick(t);
                    if bytes.len() == data.len() {
                        data.copy_from_slice(&bytes);
                    } else {
                        log::error!("ACPI rebuild changed a file's size; keeping the first build");
                    }
                }
                Err(e) => log::error!("ACPI rebuild: {e}"),
            },
        ) as fw_cfg::Refresh
    };
    f.add_file_with_refresh("etc/acpi/tables", built.tables, refresh(|t| t.tables))
        .map_err(fw_err)?;
    f.add_file_with_refresh("etc/acpi/rsdp", built.rsdp, refresh(|t| t.rsdp))
        .map_err(fw_err)?;
    f.add_file("etc/table-loader", built.loader)
        .map_err(fw_err)?;
    Ok(())
}

/// Fills in what the firmware chose: the ECAM window from the MCH, and a
/// 64-bit window that covers every BAR it put above 4 GiB (QEMU's
/// `q35_host_get_pci_hole64_start/end` take the range of the programmed
/// BARs, and the default hole when there are none).
fn platform_as_programmed(cfg: &mut boot::AcpiConfig, root: &Mutex<PciRoot>) {
    let mut root = crate::sync::lock(root);
    let r = devices::chipset::mch::PCIEXBAR / 4;
    let lo = u64::from(root.config_read(0, 0, 0, r));
    let hi = u64::from(root.config_read(0, 0, 0, r + 1));
    cfg.ecam = devices::chipset::mch::decode_pciexbar(hi << 32 | lo).map(|w| (w.base, w.size));
    let high: Vec<(u64, u64)> = root
        .addresses()
        .into_iter()
        .filter_map(|a| root.device(a))
        .flat_map(|d| crate::sync::lock(&d).bars())
        .filter_map(|b| b.window)
        .filter(|w| w.base >= 1 << 32)
        .map(|w| (w.base, w.base.saturating_add(w.size)))
        .collect();
    cfg.pci_mmio64 = covering(cfg.layout.pci_mmio64_window(), &high);
}

/// The default window grown to cover `bars` (`[start, end)` each), or
/// `None` when it already does.
fn covering(default: (u64, u64), bars: &[(u64, u64)]) -> Option<(u64, u64)> {
    let (base, size) = default;
    let lo = bars.iter().map(|b| b.0).min()?.min(base);
    let hi = bars.iter().map(|b| b.1).max()?.max(base + size);
    ((lo, hi) != (base, base + size)).then_some((lo, hi - lo))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_64_bit_window_grows_to_cover_the_firmwares_bars() {
        let d = (4 << 30, 64 << 30);
        assert_eq!(covering(d, &[]), None);
        assert_eq!(
            covering(d, &[(5 << 30, (5 << 30) + 0x4000)]),
            None,
            "inside"
        );
        // SeaBIOS may place big BARs high above RAM: the window reaches them.
        let far = (0x80_0000_0000u64, 0x80_1000_0000u64);
        assert_eq!(covering(d, &[far]), Some((4 << 30, far.1 - (4 << 30))));
    }

    #[test]
    fn splash_pictures_are_checked_as_qemu_checks_them() {
        let mut jpg = vec![0xff, 0xd8];
        jpg.resize(30, 0);
        assert_eq!(splash_name(&jpg), Some("bootsplash.jpg"));
        let mut bmp = b"BM".to_vec();
        bmp.resize(30, 0);
        assert_eq!(splash_name(&bmp), None, "not 24 bits per pixel");
        bmp[28] = 24;
        assert_eq!(splash_name(&bmp), Some("bootsplash.bmp"));
        assert_eq!(splash_name(&jpg[..29]), None, "too short");
        assert_eq!(splash_name(&[0x89, b'P', b'N', b'G']), None);
    }

    #[test]
    fn boot_order_nibbles_are_qemus() {
        // QEMU's default "cad": hard disk, floppy, CD-ROM.
        assert_eq!(cmos_boot_order("cad"), (0x12, 0x30));
        assert_eq!(cmos_boot_order("n"), (0x04, 0x00));
        assert_eq!(cmos_boot_order("dc"), (0x23, 0x00));
    }
}
