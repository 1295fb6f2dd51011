//! q35's memory controller hub at 00:00.0 (Intel 82G33 "MCH"; QEMU
//! hw/pci-host/q35.c, `mch`): the host bridge SeaBIOS recognises QEMU by
//! (8086:29c0 with subsystem 1af4:1100), with the two register groups the
//! firmware programs:
//! - PAM0-6 at 0x90-0x96: the mapping of 0xc0000-0xfffff ([`super::pam`]);
//! - PCIEXBAR at 0x60 (64 bits): where ECAM decodes — bit 0 enables it, bits
//!   2:1 choose 256/128/64 MiB, the base is bits 35:28 (35:27, 35:26) as in
//!   QEMU's `mch_update_pciexbar`. Power-on value 0xb0000000, disabled.
//!
//! As on QEMU, every byte from 0x40 to 0xff is guest-writable (hw/pci/pci.c
//! `pci_init_wmask`); SMRAM (0x9d) and ESMRAMC (0x9e) have their reset values
//! but no effect, since this machine has no SMM.

use super::pam::{SharedPam, PAM0, PAM_REGS};
use super::{ChipsetEvent, ChipsetObserver, EcamWindow};
use crate::pci::{PciConfigSpace, PciDevice};

pub const MCH_VENDOR: u16 = 0x8086;
pub const MCH_DEVICE: u16 = 0x29c0;
const CLASS_BRIDGE_HOST: u32 = 0x06_00_00;
pub const PCIEXBAR: usize = 0x60;
pub const PCIEXBAR_DEFAULT: u64 = 0xb000_0000;
pub const PCIEXBAR_ENABLE: u64 = 1;
const SMRAM: usize = 0x9d;
const SMRAM_DEFAULT: u8 = 0x02;
const ESMRAMC: usize = 0x9e;
const ESMRAMC_DEFAULT: u8 = 0x38;
/// Bits 35:28 of PCIEXBAR (QEMU `MCH_HOST_BRIDGE_PCIEXBAR_ADMSK`).
const PCIEXBAR_ADMSK: u64 = 0x0000_000f_f000_0000;

pub struct Mch {
    config: PciConfigSpace,
    pam: SharedPam,
    observer: Option<ChipsetObserver>,
    /// What the observer was last told.
    ecam: Option<EcamWindow>,
    pam_seen: [u8; PAM_REGS],
}

impl Mch {
    /// `pam` is shared with the PAM area's exit handler.
    pub fn new(pam: SharedPam) -> Self {
        let mut config = PciConfigSpace::new(MCH_VENDOR, MCH_DEVICE, CLASS_BRIDGE_HOST, 0);
        config.set_writable(0x40, &[0xff; 0xc0]);
        config.set_bytes(PCIEXBAR, &PCIEXBAR_DEFAULT.to_le_bytes());
        config.set_bytes(SMRAM, &[SMRAM_DEFAULT]);
        config.set_bytes(ESMRAMC, &[ESMRAMC_DEFAULT]);
        Self {
            config,
            pam,
            observer: None,
            ecam: None,
            pam_seen: [0; PAM_REGS],
        }
    }

    /// Who hears of ECAM and PAM changes (the VMM, which maps them).
    pub fn set_observer(&mut self, observer: ChipsetObserver) {
        self.observer = Some(observer);
    }

    /// The ECAM window PCIEXBAR decodes now, if enabled.
    pub fn ecam(&self) -> Option<EcamWindow> {
        let lo = u64::from(self.config.read(PCIEXBAR / 4));
        let hi = u64::from(self.config.read(PCIEXBAR / 4 + 1));
        decode_pciexbar(hi << 32 | lo)
    }

    pub fn pam(&self) -> [u8; PAM_REGS] {
        let mut regs = [0u8; PAM_REGS];
        for (i, r) in regs.iter_mut().enumerate() {
            *r = self.config.byte(PAM0 + i);
        }
        regs
    }

    /// Tells the observer what changed since it last heard.
    fn publish(&mut self) {
        let pam = self.pam();
        if pam != self.pam_seen {
            self.pam_seen = pam;
            *self.pam.lock().unwrap_or_else(|e| e.into_inner()) = pam;
            if let Some(o) = &self.observer {
                o(ChipsetEvent::Pam(pam));
            }
        }
        let ecam = self.ecam();
        if ecam != self.ecam {
            self.ecam = ecam;
            if let Some(o) = &self.observer {
                o(ChipsetEvent::Ecam(ecam));
            }
        }
    }
}

/// PCIEXBAR's window: `None` when disabled or with the reserved length.
pub fn decode_pciexbar(v: u64) -> Option<EcamWindow> {
    if v & PCIEXBAR_ENABLE == 0 {
        return None;
    }
    let (size, mask) = match (v >> 1) & 3 {
        0 => (256 << 20, PCIEXBAR_ADMSK),
        1 => (128 << 20, PCIEXBAR_ADMSK | 1 << 27),
        2 => (64 << 20, PCIEXBAR_ADMSK | 3 << 26),
        _ => return None,
    };
    Some(EcamWindow {
        base: v & mask,
        size,
    })
}

impl PciDevice for Mch {
    fn read_config(&mut self, reg_idx: usize) -> u32 {
        self.config.read(reg_idx)
    }

    fn write_config(&mut self, reg_idx: usize, offset: u64, data: &[u8]) {
        self.config.write(reg_idx, offset, data);
        self.publish();
    }

    /// A system reset keeps PAM0-6, as QEMU's `mch_reset` does (it resets
    /// PCIEXBAR, SMRAM and ESMRAMC only): the reset vector then runs the
    /// BIOS's locked RAM copy, and SeaBIOS, seeing it has run before, copies
    /// the ROM back and resets once more (src/fw/shadow.c `qemu_reboot`) —
    /// so a reboot shows QEMU's two RESET events.
    fn reset(&mut self) {
        let pam = self.pam();
        self.config.reset();
        for (i, v) in pam.iter().enumerate() {
            let o = PAM0 + i;
            self.config.write(o / 4, (o % 4) as u64, &[*v]);
        }
        self.publish();
    }
}

/// An observer for tests: records every event.
#[cfg(test)]
pub(crate) fn recorder() -> (
    ChipsetObserver,
    std::sync::Arc<std::sync::Mutex<Vec<ChipsetEvent>>>,
) {
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let l = log.clone();
    (std::sync::Arc::new(move |e| l.lock().unwrap().push(e)), log)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn mch() -> (Mch, Arc<Mutex<Vec<ChipsetEvent>>>, SharedPam) {
        let pam = Arc::new(Mutex::new([0; PAM_REGS]));
        let mut m = Mch::new(pam.clone());
        let (o, log) = recorder();
        m.set_observer(o);
        (m, log, pam)
    }

    #[test]
    fn identifies_as_qemus_q35_host_bridge() {
        let (mut m, _, _) = mch();
        assert_eq!(m.read_config(0), 0x29c0_8086);
        // SeaBIOS's qemu_detect needs subsystem 1af4:1100.
        assert_eq!(m.read_config(0x2c / 4), 0x1100_1af4);
        assert_eq!(m.read_config(2) >> 8, 0x06_00_00);
        assert_eq!(m.read_config(PCIEXBAR / 4), 0xb000_0000);
    }

    #[test]
    fn seabios_pciexbar_sequence_enables_ecam_at_0xb0000000() {
        // src/fw/pciinit.c mch_mem_addr_setup: low := 0, high := 0, low := addr | 1.
        let (mut m, log, _) = mch();
        m.write_config(PCIEXBAR / 4, 0, &0u32.to_le_bytes());
        m.write_config(PCIEXBAR / 4 + 1, 0, &0u32.to_le_bytes());
        assert!(log.lock().unwrap().is_empty(), "still disabled");
        m.write_config(PCIEXBAR / 4, 0, &0xb000_0001u32.to_le_bytes());
        let w = EcamWindow {
            base: 0xb000_0000,
            size: 256 << 20,
        };
        assert_eq!(*log.lock().unwrap(), vec![ChipsetEvent::Ecam(Some(w))]);
        assert_eq!(m.ecam(), Some(w));
        m.reset();
        assert_eq!(log.lock().unwrap().last(), Some(&ChipsetEvent::Ecam(None)));
    }

    #[test]
    fn pciexbar_lengths_and_masks() {
        let w = |base, size| Some(EcamWindow { base, size });
        assert_eq!(decode_pciexbar(0xb000_0001), w(0xb000_0000, 256 << 20));
        assert_eq!(decode_pciexbar(0xb800_0003), w(0xb800_0000, 128 << 20));
        assert_eq!(decode_pciexbar(0xbc00_0005), w(0xbc00_0000, 64 << 20));
        // The 256 MiB window ignores address bits below 28.
        assert_eq!(decode_pciexbar(0xbc00_0001), w(0xb000_0000, 256 << 20));
        assert_eq!(decode_pciexbar(0xb000_0007), None, "reserved length");
        assert_eq!(decode_pciexbar(0xb000_0000), None);
        assert_eq!(decode_pciexbar(0x1_0000_0001), w(0x1_0000_0000, 256 << 20));
    }

    #[test]
    fn pam_writes_are_published_once_per_change() {
        let (mut m, log, shared) = mch();
        // Three bytes at 0x91: PAM1-3.
        m.write_config(PAM0 / 4, 1, &[0x33, 0x33, 0x33]);
        m.write_config(PAM0 / 4, 1, &[0x33, 0x33, 0x33]);
        let want = [0, 0x33, 0x33, 0x33, 0, 0, 0];
        assert_eq!(*log.lock().unwrap(), vec![ChipsetEvent::Pam(want)]);
        assert_eq!(*shared.lock().unwrap(), want);
        assert_eq!(m.pam(), want);
        m.reset();
        assert_eq!(m.pam(), want, "a reset keeps PAM, as QEMU's mch_reset");
        assert_eq!(log.lock().unwrap().len(), 1);
    }

    #[test]
    fn header_stays_read_only() {
        let (mut m, _, _) = mch();
        m.write_config(0, 0, &[0xff; 4]);
        m.write_config(0x2c / 4, 0, &[0; 4]);
        assert_eq!(m.read_config(0), 0x29c0_8086);
        assert_eq!(m.read_config(0x2c / 4), 0x1100_1af4);
    }
}
