//! ACPI fixed hardware (ACPI 6.5 §4.8): the PM1a event and control blocks,
//! the PM timer and GPE0, in one register file at port 0x600, length 0x30:
//!
//! | offset | register | ACPI |
//! |---|---|---|
//! | 0x00 | PM1_STS (16 bits, write 1 to clear) | §4.8.3.1.1 |
//! | 0x02 | PM1_EN (16 bits) | §4.8.3.1.2 |
//! | 0x04 | PM1_CNT (16 bits) | §4.8.3.2.1 |
//! | 0x08 | PM_TMR (32-bit read, 24-bit counter, read-only) | §4.8.3.3 |
//! | 0x20 | GPE0_STS, 8 bytes, write 1 to clear | §4.8.4.1 |
//! | 0x28 | GPE0_EN, 8 bytes | §4.8.4.1 |
//! | 0x30 | SMI_EN (32 bits), ICH9 | QEMU hw/acpi/ich9.c |
//! | 0x34 | SMI_STS (32 bits), ICH9, reads 0 | |
//!
//! The block is ICH9's 128-byte PMIO (the LPC bridge's PMBASE decodes it).
//! SMI_EN powers on with APMC_EN (bit 5) set, as QEMU's `ich9_pm_reset` does
//! on a machine without SMM: it tells SeaBIOS that SMM is already set up, so
//! the firmware never waits on an SMI handler that does not exist.
//!
//! Registers are byte-addressable; a wider access covers consecutive bytes.
//! Other offsets read all ones and ignore writes.
//!
//! SCI (IRQ 9, level-triggered, active high) is asserted while SCI_EN is set
//! and an enabled fixed event (timer, global lock, power button, RTC) or an
//! enabled GPE is pending — QEMU's `acpi_update_sci` condition, plus the
//! SCI_EN gate of §4.8.3.2.1. The line is an eventfd meant to be an irqfd with
//! a resample eventfd: the device writes it when the level rises; when KVM
//! signals the resample fd (the guest EOIed and KVM dropped the line), the VMM
//! calls [`AcpiPm::sci_resample`], which asserts again if the level is still
//! high. The SCI for the timer-carry event (TMR_EN) is only noticed when the
//! guest touches the block (no host timer; Linux never enables it).
//!
//! Sleep: SLP_EN with SLP_TYP 0 — the S5 type in our DSDT — is a poweroff
//! request. Other sleep types are ignored for now (no S1-S4 in the DSDT).
//!
//! SCI_EN: with no SMI_CMD port in this platform (FADT SMI_CMD = 0), the OS
//! treats the machine as always in ACPI mode and never sets SCI_EN, which
//! "is the responsibility of the hardware" (§4.8.3.2.1). So SCI_EN is 1 at
//! power-on and after reset; [`AcpiPm::set_sci_en`] exists for an SMI_CMD
//! (APM 0xb2) device if one is ever added.

use vmm_sys_util::eventfd::EventFd;

use crate::bus::BusDevice;
use crate::{read_bytewise, write_bytewise, Clock, GuestRequest, GuestRequestFn, MonotonicClock};

/// Length of the block at 0x600 (QEMU `ICH9_PMIO_SIZE`).
pub const ACPI_PM_LEN: u64 = 0x80;
const SMI_EN: u64 = 0x30;
/// SMI_EN's APMC_EN: set means "SMM is set up" to SeaBIOS.
pub const SMI_EN_APMC_EN: u32 = 1 << 5;

const PM1_STS: u64 = 0x00;
const PM1_EN: u64 = 0x02;
const PM1_CNT: u64 = 0x04;
const PM_TMR: u64 = 0x08;
const GPE0_STS: u64 = 0x20;
const GPE0_EN: u64 = 0x28;
const GPE0_BYTES: usize = 8;

pub const PM1_TMR_STS: u16 = 1 << 0;
pub const PM1_GBL_STS: u16 = 1 << 5;
pub const PM1_PWRBTN_STS: u16 = 1 << 8;
pub const PM1_RTC_STS: u16 = 1 << 10;
pub const PM1_WAK_STS: u16 = 1 << 15;
pub const PM1_TMR_EN: u16 = 1 << 0;
pub const PM1_PWRBTN_EN: u16 = 1 << 8;
/// Fixed events that raise the SCI (QEMU `ACPI_BITMASK_PM1_COMMON_ENABLED`).
const PM1_SCI_EVENTS: u16 = PM1_TMR_STS | PM1_GBL_STS | PM1_PWRBTN_STS | PM1_RTC_STS;

pub const PM1_CNT_SCI_EN: u16 = 1 << 0;
const PM1_CNT_SLP_TYP_SHIFT: u16 = 10;
const PM1_CNT_SLP_TYP_MASK: u16 = 0x7;
pub const PM1_CNT_SLP_EN: u16 = 1 << 13;
/// SLP_TYP of S5 in our DSDT's `_S5` package.
pub const SLP_TYP_S5: u16 = 0;

/// PM timer rate (§4.8.3.3).
pub const PM_TIMER_HZ: i128 = 3_579_545;
const PM_TIMER_MASK: u32 = 0x00ff_ffff;
/// TMR_STS is set each time bit 23 of the counter changes.
const PM_TIMER_CARRY: i128 = 1 << 23;

/// The ACPI PM register block.
pub struct AcpiPm {
    sci: EventFd,
    request: GuestRequestFn,
    clock: Box<dyn Clock>,
    pm1_sts: u16,
    pm1_en: u16,
    pm1_cnt: u16,
    gpe_sts: [u8; GPE0_BYTES],
    gpe_en: [u8; GPE0_BYTES],
    smi_en: u32,
    /// Timer count at which TMR_STS next becomes set.
    tmr_carry_at: i128,
    /// The level last signalled on `sci`.
    sci_asserted: bool,
}

impl AcpiPm {
    /// `sci`: eventfd for GSI 9 (see the module docs); `request` receives
    /// [`GuestRequest::Poweroff`]. The PM timer runs on the host's monotonic clock.
    pub fn new(sci: EventFd, request: GuestRequestFn) -> Self {
        Self::with_clock(sci, request, Box::new(MonotonicClock::new()))
    }

    /// Like [`AcpiPm::new`] with the PM timer on `clock` (nanoseconds).
    pub fn with_clock(sci: EventFd, request: GuestRequestFn, clock: Box<dyn Clock>) -> Self {
        let mut pm = AcpiPm {
            sci,
            request,
            clock,
            pm1_sts: 0,
            pm1_en: 0,
            pm1_cnt: 0,
            gpe_sts: [0; GPE0_BYTES],
            gpe_en: [0; GPE0_BYTES],
            smi_en: SMI_EN_APMC_EN,
            tmr_carry_at: 0,
            sci_asserted: false,
        };
        pm.reset();
        pm
    }

    /// Machine reset: status and enables cleared, SCI_EN back to its hardware
    /// value (set; see the module docs), SCI deasserted.
    pub fn reset(&mut self) {
        self.pm1_sts = 0;
        self.pm1_en = 0;
        self.pm1_cnt = PM1_CNT_SCI_EN;
        self.gpe_sts = [0; GPE0_BYTES];
        self.gpe_en = [0; GPE0_BYTES];
        self.smi_en = SMI_EN_APMC_EN;
        self.arm_timer_carry();
        self.sci_asserted = false;
    }

    /// The power button was pressed (QMP `system_powerdown`): PWRBTN_STS is
    /// set, and the SCI raised if the guest enabled PWRBTN_EN.
    pub fn press_power_button(&mut self) {
        self.pm1_sts |= PM1_PWRBTN_STS;
        self.update_sci();
    }

    /// Sets GPE0 status bit `bit` (0..64), for devices that signal through GPEs.
    pub fn raise_gpe(&mut self, bit: usize) {
        if let Some(b) = self.gpe_sts.get_mut(bit / 8) {
            *b |= 1 << (bit % 8);
            self.update_sci();
        }
    }

    /// Sets or clears SCI_EN as hardware would (an SMI_CMD handler).
    pub fn set_sci_en(&mut self, on: bool) {
        if on {
            self.pm1_cnt |= PM1_CNT_SCI_EN;
        } else {
            self.pm1_cnt &= !PM1_CNT_SCI_EN;
        }
        self.update_sci();
    }

    /// Whether the SCI line should be asserted now.
    pub fn sci_level(&self) -> bool {
        let fixed = self.pm1_sts() & self.pm1_en & PM1_SCI_EVENTS != 0;
        let gpe = self
            .gpe_sts
            .iter()
            .zip(&self.gpe_en)
            .any(|(s, e)| s & e != 0);
        self.pm1_cnt & PM1_CNT_SCI_EN != 0 && (fixed || gpe)
    }

    /// KVM lowered the line at EOI (resample eventfd fired): raise it again
    /// if the level is still high.
    pub fn sci_resample(&mut self) {
        self.sci_asserted = false;
        self.update_sci();
    }

    fn update_sci(&mut self) {
        let level = self.sci_level();
        if level && !self.sci_asserted {
            if let Err(e) = self.sci.write(1) {
                log::warn!("acpi: cannot raise the SCI: {e}");
            }
        }
        self.sci_asserted = level;
    }

    fn timer_count(&self) -> i128 {
        self.clock.now_ns().max(0) * PM_TIMER_HZ / 1_000_000_000
    }

    /// Next bit-23 carry after now (QEMU `acpi_pm_tmr_calc_overflow_time`).
    fn arm_timer_carry(&mut self) {
        self.tmr_carry_at = (self.timer_count() + PM_TIMER_CARRY) & !(PM_TIMER_CARRY - 1);
    }

    /// PM1_STS with TMR_STS brought up to date.
    fn pm1_sts(&self) -> u16 {
        if self.timer_count() >= self.tmr_carry_at {
            self.pm1_sts | PM1_TMR_STS
        } else {
            self.pm1_sts
        }
    }

    fn read_byte(&self, offset: u64, timer: u32) -> u8 {
        let byte = |v: u16, o: u64| (v >> (8 * (o & 1))) as u8;
        match offset {
            0x00..=0x01 => byte(self.pm1_sts(), offset - PM1_STS),
            0x02..=0x03 => byte(self.pm1_en, offset - PM1_EN),
            // SLP_EN is write-only (reads as 0).
            0x04..=0x05 => byte(self.pm1_cnt, offset - PM1_CNT),
            0x08..=0x0b => (timer >> (8 * (offset - PM_TMR))) as u8,
            0x20..=0x27 => self.gpe_sts[(offset - GPE0_STS) as usize],
            0x28..=0x2f => self.gpe_en[(offset - GPE0_EN) as usize],
            0x30..=0x33 => self.smi_en.to_le_bytes()[(offset - SMI_EN) as usize],
            0x34..=0x37 => 0,
            _ => 0xff,
        }
    }

    fn write_byte(&mut self, offset: u64, v: u8) {
        let set_byte = |reg: &mut u16, o: u64, v: u8| {
            let shift = 8 * (o & 1);
            *reg = (*reg & !(0xff << shift)) | (u16::from(v) << shift);
        };
        match offset {
            0x00..=0x01 => {
                let clear = u16::from(v) << (8 * (offset & 1));
                let sts = self.pm1_sts();
                if sts & clear & PM1_TMR_STS != 0 {
                    self.arm_timer_carry();
                }
                self.pm1_sts = sts & !clear;
            }
            0x02..=0x03 => set_byte(&mut self.pm1_en, offset, v),
            0x04 => set_byte(&mut self.pm1_cnt, offset, v),
            0x05 => {
                let val = u16::from(v) << 8;
                self.pm1_cnt = (self.pm1_cnt & 0x00ff) | (val & !PM1_CNT_SLP_EN);
                if val & PM1_CNT_SLP_EN != 0 {
                    self.sleep((val >> PM1_CNT_SLP_TYP_SHIFT) & PM1_CNT_SLP_TYP_MASK);
                }
            }
            0x20..=0x27 => self.gpe_sts[(offset - GPE0_STS) as usize] &= !v,
            0x28..=0x2f => self.gpe_en[(offset - GPE0_EN) as usize] = v,
            0x30..=0x33 => {
                let mut b = self.smi_en.to_le_bytes();
                b[(offset - SMI_EN) as usize] = v;
                self.smi_en = u32::from_le_bytes(b);
            }
            _ => {}
        }
    }

    /// SLP_EN was written (QEMU `acpi_pm1_cnt_write`).
    fn sleep(&mut self, slp_typ: u16) {
        match slp_typ {
            SLP_TYP_S5 => (self.request)(GuestRequest::Poweroff),
            t => log::info!(
                "acpi: guest asked for sleep type {t}, which this machine does not offer"
            ),
        }
    }
}

impl BusDevice for AcpiPm {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        // One sample of the timer per access, so a dword read is coherent.
        let timer = (self.timer_count() as u32) & PM_TIMER_MASK;
        read_bytewise(offset, data, |o| self.read_byte(o, timer));
        // Reading may latch TMR_STS; the SCI follows.
        self.update_sci();
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        write_bytewise(offset, data, |o, v| self.write_byte(o, v));
        self.update_sci();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{hammer, recorder};
    use crate::ManualClock;
    use std::sync::{Arc, Mutex};

    struct Rig {
        pm: AcpiPm,
        sci: EventFd,
        clock: ManualClock,
        log: Arc<Mutex<Vec<GuestRequest>>>,
    }

    fn rig() -> Rig {
        let sci = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let clock = ManualClock::new(0);
        let (req, log) = recorder();
        let pm = AcpiPm::with_clock(sci.try_clone().unwrap(), req, Box::new(clock.clone()));
        Rig {
            pm,
            sci,
            clock,
            log,
        }
    }

    fn r16(pm: &mut AcpiPm, off: u64) -> u16 {
        let mut b = [0u8; 2];
        pm.read(off, &mut b);
        u16::from_le_bytes(b)
    }

    fn w16(pm: &mut AcpiPm, off: u64, v: u16) {
        pm.write(off, &v.to_le_bytes());
    }

    fn r32(pm: &mut AcpiPm, off: u64) -> u32 {
        let mut b = [0u8; 4];
        pm.read(off, &mut b);
        u32::from_le_bytes(b)
    }

    fn raised(sci: &EventFd) -> bool {
        sci.read().is_ok()
    }

    #[test]
    fn power_on_state() {
        let mut r = rig();
        assert_eq!(r16(&mut r.pm, PM1_STS), 0);
        assert_eq!(r16(&mut r.pm, PM1_EN), 0);
        assert_eq!(r16(&mut r.pm, PM1_CNT), PM1_CNT_SCI_EN);
        assert_eq!(r32(&mut r.pm, GPE0_STS), 0);
        assert!(!r.pm.sci_level());
    }

    #[test]
    fn s5_sleep_requests_poweroff() {
        let mut r = rig();
        w16(
            &mut r.pm,
            PM1_CNT,
            PM1_CNT_SCI_EN | (SLP_TYP_S5 << 10) | PM1_CNT_SLP_EN,
        );
        assert_eq!(*r.log.lock().unwrap(), vec![GuestRequest::Poweroff]);
        assert_eq!(r16(&mut r.pm, PM1_CNT), PM1_CNT_SCI_EN, "SLP_EN reads as 0");
        // A byte write of the high half does the same.
        r.pm.write(PM1_CNT + 1, &[0x20]);
        assert_eq!(r.log.lock().unwrap().len(), 2);
    }

    #[test]
    fn other_sleep_types_are_ignored() {
        let mut r = rig();
        for typ in 1..8u16 {
            w16(
                &mut r.pm,
                PM1_CNT,
                PM1_CNT_SCI_EN | (typ << 10) | PM1_CNT_SLP_EN,
            );
            assert_eq!(r16(&mut r.pm, PM1_CNT), PM1_CNT_SCI_EN | (typ << 10));
        }
        w16(&mut r.pm, PM1_CNT, PM1_CNT_SCI_EN | (5 << 10));
        assert!(
            r.log.lock().unwrap().is_empty(),
            "SLP_TYP without SLP_EN does nothing"
        );
    }

    #[test]
    fn power_button_raises_sci_only_when_enabled() {
        let mut r = rig();
        r.pm.press_power_button();
        assert_eq!(
            r16(&mut r.pm, PM1_STS),
            PM1_PWRBTN_STS,
            "status is set regardless of enable"
        );
        assert!(!raised(&r.sci));
        assert!(!r.pm.sci_level());
        // Enabling with the status pending raises the SCI.
        w16(&mut r.pm, PM1_EN, PM1_PWRBTN_EN);
        assert!(raised(&r.sci));
        assert!(r.pm.sci_level());
        // Resample while still pending: asserted again.
        r.pm.sci_resample();
        assert!(raised(&r.sci));
        // The guest clears the status (write 1 to clear); the level drops.
        w16(&mut r.pm, PM1_STS, PM1_PWRBTN_STS);
        assert_eq!(r16(&mut r.pm, PM1_STS), 0);
        assert!(!r.pm.sci_level());
        r.pm.sci_resample();
        assert!(!raised(&r.sci));
        // Next press: a new edge.
        r.pm.press_power_button();
        assert!(raised(&r.sci));
        r.pm.press_power_button();
        assert!(!raised(&r.sci), "still asserted: no new edge");
    }

    #[test]
    fn sci_en_gates_the_sci() {
        let mut r = rig();
        w16(&mut r.pm, PM1_CNT, 0);
        w16(&mut r.pm, PM1_EN, PM1_PWRBTN_EN);
        r.pm.press_power_button();
        assert!(!raised(&r.sci));
        r.pm.set_sci_en(true);
        assert!(raised(&r.sci));
        assert_eq!(r16(&mut r.pm, PM1_CNT), PM1_CNT_SCI_EN);
    }

    #[test]
    fn status_bits_clear_only_where_one_is_written() {
        let mut r = rig();
        r.pm.pm1_sts = PM1_PWRBTN_STS | PM1_WAK_STS | PM1_GBL_STS;
        w16(&mut r.pm, PM1_STS, 0);
        assert_eq!(
            r16(&mut r.pm, PM1_STS),
            PM1_PWRBTN_STS | PM1_WAK_STS | PM1_GBL_STS
        );
        r.pm.write(PM1_STS + 1, &[0x80]); // WAK_STS by byte
        assert_eq!(r16(&mut r.pm, PM1_STS), PM1_PWRBTN_STS | PM1_GBL_STS);
        w16(&mut r.pm, PM1_STS, 0xffff);
        assert_eq!(r16(&mut r.pm, PM1_STS), 0);
    }

    #[test]
    fn pm_timer_counts_at_3_579545_mhz_in_24_bits() {
        let mut r = rig();
        assert_eq!(r32(&mut r.pm, PM_TMR), 0);
        r.clock.set_ns(1_000_000_000);
        assert_eq!(r32(&mut r.pm, PM_TMR), 3_579_545);
        r.clock.set_ns(10_000_000_000);
        assert_eq!(
            r32(&mut r.pm, PM_TMR),
            (35_795_450 & 0xff_ffff) as u32,
            "wraps at 24 bits"
        );
        assert_eq!(
            r32(&mut r.pm, PM_TMR) >> 24,
            0,
            "TMR_VAL_EXT clear: top byte reads 0"
        );
        r.pm.write(PM_TMR, &[0xff; 4]);
        assert_eq!(
            r32(&mut r.pm, PM_TMR),
            (35_795_450 & 0xff_ffff) as u32,
            "read-only"
        );
        let mut b = [0u8];
        r.pm.read(PM_TMR + 2, &mut b);
        assert_eq!(b[0], ((35_795_450 >> 16) & 0xff) as u8);
    }

    #[test]
    fn timer_carry_sets_tmr_sts_and_sci_when_enabled() {
        let mut r = rig();
        let carry_ns = (PM_TIMER_CARRY * 1_000_000_000 / PM_TIMER_HZ) as i64 + 1;
        r.clock.set_ns(carry_ns - 1000);
        assert_eq!(r16(&mut r.pm, PM1_STS) & PM1_TMR_STS, 0);
        r.clock.set_ns(carry_ns);
        assert_eq!(r16(&mut r.pm, PM1_STS) & PM1_TMR_STS, PM1_TMR_STS);
        assert!(!raised(&r.sci), "TMR_EN clear");
        w16(&mut r.pm, PM1_EN, PM1_TMR_EN);
        assert!(raised(&r.sci));
        w16(&mut r.pm, PM1_STS, PM1_TMR_STS);
        assert_eq!(
            r16(&mut r.pm, PM1_STS) & PM1_TMR_STS,
            0,
            "cleared until the next carry"
        );
        r.clock.advance_ns(carry_ns);
        assert_eq!(r16(&mut r.pm, PM1_STS) & PM1_TMR_STS, PM1_TMR_STS);
    }

    #[test]
    fn gpe_status_and_enable() {
        let mut r = rig();
        r.pm.raise_gpe(9);
        r.pm.raise_gpe(64); // out of range: ignored
        assert_eq!(r32(&mut r.pm, GPE0_STS), 0x0200);
        assert!(!raised(&r.sci));
        r.pm.write(GPE0_EN + 1, &[0x02]);
        assert!(raised(&r.sci));
        assert_eq!(r.pm.read_byte(GPE0_EN + 1, 0), 0x02);
        r.pm.write(GPE0_STS, &[0x00, 0x02]);
        assert_eq!(r32(&mut r.pm, GPE0_STS), 0);
        assert!(!r.pm.sci_level());
    }

    #[test]
    fn reset_clears_events_and_restores_sci_en() {
        let mut r = rig();
        w16(&mut r.pm, PM1_EN, 0xffff);
        w16(&mut r.pm, PM1_CNT, 0x0006);
        r.pm.press_power_button();
        r.pm.raise_gpe(0);
        r.pm.write(GPE0_EN, &[0xff; 8]);
        r.pm.reset();
        assert_eq!(r16(&mut r.pm, PM1_STS), 0);
        assert_eq!(r16(&mut r.pm, PM1_EN), 0);
        assert_eq!(r16(&mut r.pm, PM1_CNT), PM1_CNT_SCI_EN);
        let mut g = [0u8; 16];
        r.pm.read(GPE0_STS, &mut g);
        assert_eq!(g, [0; 16]);
        assert!(!r.pm.sci_level());
    }

    #[test]
    fn holes_read_all_ones() {
        let mut r = rig();
        assert_eq!(r16(&mut r.pm, 0x06), 0xffff);
        assert_eq!(r32(&mut r.pm, 0x0c), 0xffff_ffff);
        assert_eq!(r32(&mut r.pm, 0x1c), 0xffff_ffff);
        r.pm.write(0x10, &[0xff; 8]);
        assert_eq!(r16(&mut r.pm, PM1_CNT), PM1_CNT_SCI_EN);
        // A dword at 0x604 is PM1_CNT then the hole.
        assert_eq!(
            r32(&mut r.pm, PM1_CNT),
            0xffff_0000 | u32::from(PM1_CNT_SCI_EN)
        );
    }

    #[test]
    fn survives_any_access() {
        let mut r = rig();
        r.clock.set_ns(i64::MAX);
        hammer(&mut r.pm, ACPI_PM_LEN);
        r.clock.set_ns(i64::MIN);
        hammer(&mut r.pm, ACPI_PM_LEN);
        let mut pm = AcpiPm::new(EventFd::new(libc::EFD_NONBLOCK).unwrap(), recorder().0);
        hammer(&mut pm, ACPI_PM_LEN);
    }

    #[test]
    fn smi_en_says_smm_is_set_up() {
        // SeaBIOS src/fw/smm.c: APMC_EN set means skip SMM init (QEMU without SMM).
        let mut r = rig();
        let mut b = [0u8; 4];
        r.pm.read(SMI_EN, &mut b);
        assert_eq!(u32::from_le_bytes(b), SMI_EN_APMC_EN);
        r.pm.write(SMI_EN, &0u32.to_le_bytes());
        r.pm.read(SMI_EN, &mut b);
        assert_eq!(u32::from_le_bytes(b), 0, "the guest may clear it");
        r.pm.reset();
        r.pm.read(SMI_EN, &mut b);
        assert_eq!(u32::from_le_bytes(b), SMI_EN_APMC_EN);
    }
}
