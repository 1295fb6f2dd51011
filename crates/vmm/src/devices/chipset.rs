//! q35's chipset functions on pcie.0 — the MCH at 00:00.0 and the ICH9 LPC
//! bridge at 00:1f.0 — and what their registers move: ECAM (PCIEXBAR) on the
//! MMIO bus, the ACPI PM block (PMBASE) on the port bus, and the PAM area's
//! KVM slots (through the machine's [`MemoryMap`]).
//!
//! At power-on, as on QEMU, ECAM and the PM block do not decode and the PAM
//! area shows the BIOS ROM: firmware programs them. A direct (`-kernel`)
//! boot has no firmware, so [`program_like_seabios`] writes what SeaBIOS
//! would have (ECAM at 0xb0000000, PM block at 0x600, the PAM area as RAM).

use std::sync::{Arc, Mutex, OnceLock};

use devices::bus::{Bus, BusDevice};
use devices::chipset::lpc::{self, Lpc};
use devices::chipset::mch::{self, Mch};
use devices::chipset::pam::{self, SharedPam, PAM_REGS};
use devices::chipset::{ChipsetEvent, ChipsetObserver};
use devices::pci::{FunctionOptions, PciRoot};
use devices::AcpiPm;

use crate::error::VmmError;
use crate::memory_map::MemoryMap;
use crate::sync::lock;

/// The ACPI PM block's port as ferrovm's FADT and DSDT describe it (and
/// where SeaBIOS puts it: src/hw/pci_ids.h PORT_ACPI_PM_BASE).
pub const PM_BASE: u16 = 0x600;

/// A device mapped on a bus at a base that the guest chooses.
struct Movable {
    bus: Arc<Bus>,
    device: Arc<Mutex<dyn BusDevice>>,
    len: u64,
    /// Where it is mapped now: (base, length).
    at: Mutex<Option<(u64, u64)>>,
    what: &'static str,
}

impl Movable {
    /// Maps it at `base` (with `len`, or its usual length), or nowhere.
    fn move_to(&self, base: Option<u64>, len: Option<u64>) {
        let want = base.map(|b| (b, len.unwrap_or(self.len)));
        let mut at = lock(&self.at);
        if *at == want {
            return;
        }
        if let Some((old, _)) = at.take() {
            let _ = self.bus.remove(old);
        }
        if let Some((b, l)) = want {
            match self.bus.insert(self.device.clone(), b, l) {
                Ok(()) => *at = want,
                Err(e) => log::warn!("{} at {b:#x}: {e}; not decoded", self.what),
            }
        }
    }
}

/// The chipset's register-driven mappings.
struct Mappings {
    ecam: Movable,
    pm: Movable,
    memory: Arc<OnceLock<MemoryMap>>,
}

impl Mappings {
    fn handle(&self, event: ChipsetEvent) {
        match event {
            ChipsetEvent::Ecam(w) => self.ecam.move_to(w.map(|w| w.base), w.map(|w| w.size)),
            ChipsetEvent::PmBase(p) => self.pm.move_to(p.map(u64::from), None),
            ChipsetEvent::Pam(regs) => {
                if let Some(m) = self.memory.get() {
                    if let Err(e) = m.set_pam(regs) {
                        log::error!("PAM remap: {e}");
                    }
                }
            }
        }
    }
}

pub struct Chipset {
    pub pam: SharedPam,
    /// Set once guest RAM exists (DeviceManager::realize).
    pub memory: Arc<OnceLock<MemoryMap>>,
}

impl Chipset {
    /// Puts the MCH and the LPC bridge on `root`; `ecam` is the ECAM
    /// front-end to map on `mmio`, `acpi_pm` the PM block to map on `pio`.
    pub fn new(
        root: &Mutex<PciRoot>,
        mmio: &Arc<Bus>,
        pio: &Arc<Bus>,
        ecam: Arc<Mutex<dyn BusDevice>>,
        acpi_pm: Arc<Mutex<AcpiPm>>,
    ) -> Result<Self, VmmError> {
        let pam: SharedPam = Arc::new(Mutex::new([0; PAM_REGS]));
        let memory = Arc::new(OnceLock::new());
        let maps = Arc::new(Mappings {
            ecam: Movable {
                bus: mmio.clone(),
                device: ecam,
                len: devices::pci::ECAM_SIZE,
                at: Mutex::new(None),
                what: "ECAM",
            },
            pm: Movable {
                bus: pio.clone(),
                device: acpi_pm,
                len: lpc::PMIO_SIZE,
                at: Mutex::new(None),
                what: "ACPI PM block",
            },
            memory: memory.clone(),
        });
        let observer: ChipsetObserver = Arc::new(move |e| maps.handle(e));
        let mut m = Mch::new(pam.clone());
        m.set_observer(observer.clone());
        let mut l = Lpc::new();
        l.set_observer(observer);
        let mut root = lock(root);
        root.set_host_bridge(Arc::new(Mutex::new(m)), "mch");
        root.add_function(
            Some((lpc::LPC_SLOT, 0)),
            Arc::new(Mutex::new(l)),
            FunctionOptions {
                driver: "ICH9-LPC".into(),
                id: String::new(),
                multifunction: true,
            },
        )
        .map_err(|e| VmmError::Device(e.to_string()))?;
        Ok(Self { pam, memory })
    }
}

/// What SeaBIOS leaves programmed, for a boot without firmware: ECAM at
/// `ecam_base` (256 MiB), the PM block at [`PM_BASE`] and decoding, the PAM
/// area RAM. Goes through configuration writes, so every mapping follows.
/// Without `pm_block` (ACPI off) PMBASE stays unprogrammed and off.
pub fn program_like_seabios(root: &Mutex<PciRoot>, ecam_base: u64, pm_block: bool) {
    let mut root = lock(root);
    let bar = ecam_base | mch::PCIEXBAR_ENABLE;
    let r = mch::PCIEXBAR / 4;
    root.config_write(0, 0, 0, r + 1, 0, &((bar >> 32) as u32).to_le_bytes());
    root.config_write(0, 0, 0, r, 0, &(bar as u32).to_le_bytes());
    for (i, v) in pam::PAM_ALL_RAM.iter().enumerate() {
        let o = pam::PAM0 + i;
        root.config_write(0, 0, 0, o / 4, (o % 4) as u64, &[*v]);
    }
    if !pm_block {
        return;
    }
    let s = lpc::LPC_SLOT;
    let pmbase = u32::from(PM_BASE) | 1;
    root.config_write(0, s, 0, lpc::PMBASE / 4, 0, &pmbase.to_le_bytes());
    root.config_write(0, s, 0, lpc::ACPI_CNTL / 4, 0, &[lpc::ACPI_EN]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use devices::{GuestRequestFn, PciConfigMmio};
    use vmm_sys_util::eventfd::EventFd;

    struct Rig {
        root: Arc<Mutex<PciRoot>>,
        mmio: Arc<Bus>,
        pio: Arc<Bus>,
    }

    fn rig() -> Rig {
        let (mmio, pio) = (Arc::new(Bus::new()), Arc::new(Bus::new()));
        let root = Arc::new(Mutex::new(PciRoot::with_buses(pio.clone(), mmio.clone())));
        let ecam = Arc::new(Mutex::new(PciConfigMmio::new(root.clone())));
        let requests: GuestRequestFn = Arc::new(|_| {});
        let pm = AcpiPm::new(EventFd::new(libc::EFD_NONBLOCK).unwrap(), requests);
        Chipset::new(&root, &mmio, &pio, ecam, Arc::new(Mutex::new(pm))).unwrap();
        Rig { root, mmio, pio }
    }

    fn dword(bus: &Bus, addr: u64) -> Option<u32> {
        let mut b = [0u8; 4];
        bus.read(addr, &mut b).then(|| u32::from_le_bytes(b))
    }

    #[test]
    fn nothing_decodes_until_programmed_then_what_seabios_programs() {
        let r = rig();
        assert_eq!(dword(&r.mmio, 0xb000_0000), None, "ECAM off at power-on");
        assert_eq!(dword(&r.pio, 0x630), None, "PM block off at power-on");
        program_like_seabios(&r.root, 0xb000_0000, true);
        // ECAM: 00:00.0 is the MCH, 00:1f.0 the LPC bridge (device 31 << 15).
        assert_eq!(dword(&r.mmio, 0xb000_0000), Some(0x29c0_8086));
        assert_eq!(dword(&r.mmio, 0xb000_0000 | 31 << 15), Some(0x2918_8086));
        // SMI_EN at PMBASE + 0x30 says SMM is set up (APMC_EN).
        assert_eq!(dword(&r.pio, 0x630), Some(1 << 5));
        let pam = crate::sync::lock(&r.root).config_read(0, 0, 0, 0x90 / 4);
        assert_eq!(pam, 0x3333_3330, "PAM0-3 RAM");
        crate::sync::lock(&r.root).reset();
        assert_eq!(dword(&r.mmio, 0xb000_0000), None, "reset turns ECAM off");
        assert_eq!(dword(&r.pio, 0x630), None);
    }

    #[test]
    fn with_acpi_off_the_pm_block_stays_off() {
        let r = rig();
        program_like_seabios(&r.root, 0xb000_0000, false);
        assert_eq!(dword(&r.mmio, 0xb000_0000), Some(0x29c0_8086), "ECAM on");
        assert_eq!(dword(&r.pio, 0x630), None, "no PM block");
        assert_eq!(dword(&r.pio, 0x608), None, "no PM timer");
    }

    #[test]
    fn the_guest_moves_ecam_and_the_pm_block() {
        let r = rig();
        program_like_seabios(&r.root, 0xb000_0000, true);
        {
            let mut root = crate::sync::lock(&r.root);
            // PCIEXBAR: 64 MiB at 0xe0000000 (length field 2).
            root.config_write(0, 0, 0, 0x60 / 4, 0, &0xe000_0005u32.to_le_bytes());
            root.config_write(0, 31, 0, 0x40 / 4, 0, &0xb001u32.to_le_bytes());
        }
        assert_eq!(dword(&r.mmio, 0xb000_0000), None);
        assert_eq!(dword(&r.mmio, 0xe000_0000), Some(0x29c0_8086));
        assert_eq!(
            dword(&r.mmio, 0xe000_0000 + (64 << 20)),
            None,
            "64 MiB long"
        );
        assert_eq!(dword(&r.pio, 0x630), None);
        assert_eq!(dword(&r.pio, 0xb030), Some(1 << 5));
    }
}
