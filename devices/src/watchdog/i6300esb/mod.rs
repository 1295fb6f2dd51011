//! Intel 6300ESB watchdog timer, behaving as QEMU 7.2's `i6300esb`
//! (hw/watchdog/wdt_i6300esb.c), which is what Linux's
//! drivers/watchdog/i6300esb.c and libvirt's `<watchdog model='i6300esb'>`
//! expect.
//!
//! The function: 8086:25ab, class 0x0880 (system peripheral, other),
//! revision 0, no interrupt pin, subsystem 1af4:1100 (QEMU's default), one
//! 16-byte 32-bit memory BAR (BAR0). Two registers live in configuration
//! space and are modelled only for QEMU's access widths:
//! - ESB_CONFIG_REG (0x60), a word access: bit 5 disables the reboot
//!   ("WDT_OUTPUT"), bit 2 selects the 1 MHz prescaler (else 1 kHz), and the
//!   interrupt type is `data & 0x11` — QEMU's `ESB_WDT_INTTYPE` is 0x11, not
//!   the datasheet's 0x03, so Linux's 0x0003 reads back as 0x0001;
//! - ESB_LOCK_REG (0x68), a byte access: bit 0 locks (until reset), bit 1
//!   enables, bit 2 is free-running mode. Once locked, every write is ignored.
//!
//! Other widths at those offsets reach the plain configuration bytes (every
//! byte from 0x40 is writable, hw/pci/pci.c `pci_init_wmask`). Writes follow
//! QEMU exactly; reads cannot, since [`PciDevice::read_config`] returns a
//! whole dword: the model's values always show in bytes 0x60-0x61 and 0x68,
//! which is what a word read of 0x60 and a byte read of 0x68 see on QEMU
//! (the accesses Linux makes); a dword read of 0x60 or 0x68 on QEMU returns
//! the plain bytes instead.
//!
//! BAR0 (accesses of 1, 2 or 4 naturally aligned bytes; others are refused
//! as QEMU's `valid` limits do: reads 0, writes dropped):
//! - 0x00 TIMER1, 0x04 TIMER2: 20-bit preloads, written by a dword access
//!   right after the unlock sequence;
//! - 0x0c RELOAD: writing 0x80 then 0x86 unlocks the next write (of any
//!   register, any width but a byte); a word write with bit 8 restarts
//!   stage 1 ("ping"), with bit 9 or bit 12 clears the timeout flag. A word
//!   read returns 0x1200 while the flag is set (bit 9, and bit 12 for an old
//!   Linux bug, as QEMU). Every other read returns 0.
//!
//! Time: a stage lasts `preload << 15` (1 kHz) or `preload << 5` (1 MHz)
//! PCI clocks of 30 ns (QEMU's `i6300esb_restart_timer`). When stage 1 runs
//! out, QEMU 7.2 does *not* deliver the interrupt its configuration asks for:
//! for interrupt type 0 (IRQ) and 2 (SMI, unreachable given the 0x11 mask) it
//! only prints that it would; this model logs the same and starts stage 2.
//! When stage 2 runs out with the reboot enabled, the timeout flag is set,
//! the watchdog's state is reset and [`I6300Esb::expired`] returns
//! [`WatchdogFired`]: the machine then performs the watchdog action. With
//! the reboot disabled nothing fires; free-running mode starts stage 1 again.
//!
//! The timeout flag survives resets (QEMU's `previous_reboot_flag`), so the
//! driver can tell after the reboot that the watchdog caused it.

#[cfg(test)]
mod tests;

use std::sync::Arc;

use crate::pci::{BarKind, PciBar, PciConfigSpace, PciDevice, PciError};
use crate::Clock;

pub const I6300ESB_VENDOR: u16 = 0x8086;
/// QEMU `PCI_DEVICE_ID_INTEL_ESB_9`.
pub const I6300ESB_DEVICE: u16 = 0x25ab;
/// `PCI_CLASS_SYSTEM_OTHER` << 8.
pub const I6300ESB_CLASS: u32 = 0x08_80_00;
pub const I6300ESB_REVISION: u8 = 0;
pub const I6300ESB_BAR: u8 = 0;
pub const I6300ESB_BAR_SIZE: u64 = 0x10;

/// Configuration registers.
pub const ESB_CONFIG_REG: usize = 0x60;
pub const ESB_LOCK_REG: usize = 0x68;
/// BAR0 registers.
pub const ESB_TIMER1_REG: u64 = 0x00;
pub const ESB_TIMER2_REG: u64 = 0x04;
pub const ESB_GINTSR_REG: u64 = 0x08;
pub const ESB_RELOAD_REG: u64 = 0x0c;

/// Lock register bits.
pub const ESB_WDT_FUNC: u8 = 1 << 2;
pub const ESB_WDT_ENABLE: u8 = 1 << 1;
pub const ESB_WDT_LOCK: u8 = 1 << 0;
/// Config register bits.
pub const ESB_WDT_REBOOT: u16 = 1 << 5;
pub const ESB_WDT_FREQ: u16 = 1 << 2;
/// QEMU's value (see the module documentation).
pub const ESB_WDT_INTTYPE: u16 = 0x11;
/// Reload register bits.
pub const ESB_WDT_RELOAD: u16 = 1 << 8;
pub const ESB_WDT_TIMEOUT: u16 = 1 << 9;
/// Where the Linux driver once looked for the timeout flag.
const ESB_WDT_TIMEOUT_LINUX_BUG: u16 = 1 << 12;
pub const ESB_UNLOCK1: u32 = 0x80;
pub const ESB_UNLOCK2: u32 = 0x86;

/// Preloads are 20 bits; both reset to the maximum.
const PRELOAD_MASK: u32 = 0xfffff;
/// One PCI clock in ns ("on a PCI bus, 1 tick is 30 ns").
const PCI_TICK_NS: u64 = 30;
/// Interrupt types (QEMU `INT_TYPE_*`).
const INT_TYPE_IRQ: u16 = 0;
const INT_TYPE_SMI: u16 = 2;

/// Stage 2 ran out with the reboot enabled: the machine performs its
/// watchdog action (`-watchdog-action`, QEMU `watchdog_perform_action`).
/// The watchdog has already reset itself, as QEMU's does right after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchdogFired;

/// Told the new deadline (virtual ns, `None`: no timer) whenever it
/// changes, so the machine's timer can rearm. Called with the device lock
/// held on a vCPU or timer thread: it must not block.
pub type DeadlineFn = Arc<dyn Fn(Option<u64>) + Send + Sync>;

/// The watchdog state QEMU's `i6300esb_reset` resets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct EsbState {
    reboot_enabled: bool,
    clock_1mhz: bool,
    int_type: u16,
    free_run: bool,
    locked: bool,
    enabled: bool,
    timer1_preload: u32,
    timer2_preload: u32,
    stage: u8,
    /// 0 -> 1 (0x80 written) -> 2 (0x86 written): the next write counts.
    unlock_state: u8,
}

impl Default for EsbState {
    fn default() -> Self {
        Self {
            reboot_enabled: true,
            clock_1mhz: false,
            int_type: INT_TYPE_IRQ,
            free_run: false,
            locked: false,
            enabled: false,
            timer1_preload: PRELOAD_MASK,
            timer2_preload: PRELOAD_MASK,
            stage: 1,
            unlock_state: 0,
        }
    }
}

pub struct I6300Esb {
    config: PciConfigSpace,
    clock: Box<dyn Clock>,
    state: EsbState,
    /// The timeout flag (QEMU `previous_reboot_flag`); survives reset.
    previous_reboot: bool,
    deadline: Option<u64>,
    on_deadline: Option<DeadlineFn>,
}

impl I6300Esb {
    /// `clock` is the guest's virtual clock: it must stop while the VM is
    /// paused, so a paused guest's watchdog does not run out.
    pub fn new(clock: Box<dyn Clock>) -> Result<Self, PciError> {
        let mut config = PciConfigSpace::new(
            I6300ESB_VENDOR,
            I6300ESB_DEVICE,
            I6300ESB_CLASS,
            I6300ESB_REVISION,
        );
        config.add_bar(
            I6300ESB_BAR,
            BarKind::Memory32 {
                prefetchable: false,
            },
            I6300ESB_BAR_SIZE,
        )?;
        config.set_writable(0x40, &[0xff; 0xc0]);
        Ok(Self {
            config,
            clock,
            state: EsbState::default(),
            previous_reboot: false,
            deadline: None,
            on_deadline: None,
        })
    }

    /// Who hears of deadline changes (the machine's timer).
    pub fn set_deadline_notifier(&mut self, f: DeadlineFn) {
        self.on_deadline = Some(f);
    }

    /// When the running stage ends, in the clock's virtual ns.
    pub fn next_deadline_ns(&self) -> Option<u64> {
        self.deadline
    }

    /// The machine's timer calls this at (or after) the deadline, with the
    /// virtual time now. Before the deadline it does nothing. Otherwise it
    /// runs QEMU's `i6300esb_timer_expired` once: the end of stage 1 starts
    /// stage 2 (the interrupt is only logged, as QEMU 7.2); the end of
    /// stage 2 fires if the reboot is enabled.
    pub fn expired(&mut self, now_ns: u64) -> Option<WatchdogFired> {
        match self.deadline {
            Some(d) if now_ns >= d => {}
            _ => return None,
        }
        self.set_deadline(None);
        if self.state.stage == 1 {
            match self.state.int_type {
                INT_TYPE_IRQ => log::warn!(
                    "i6300esb_timer_expired: I would send APIC 1 INT 10 here if I knew how (XXX)"
                ),
                INT_TYPE_SMI => {
                    log::warn!("i6300esb_timer_expired: I would send SMI here if I knew how (XXX)")
                }
                _ => {}
            }
            self.restart_timer(2, now_ns);
            return None;
        }
        let mut fired = None;
        if self.state.reboot_enabled {
            self.previous_reboot = true;
            fired = Some(WatchdogFired);
            self.reset_watchdog();
        }
        if self.state.free_run {
            self.restart_timer(1, now_ns);
        }
        fired
    }

    fn now(&self) -> u64 {
        u64::try_from(self.clock.now_ns().max(0)).unwrap_or(u64::MAX)
    }

    fn set_deadline(&mut self, d: Option<u64>) {
        if self.deadline != d {
            self.deadline = d;
            if let Some(f) = &self.on_deadline {
                f(d);
            }
        }
    }

    /// The length of a stage in ns: at most 0xfffff << 15 ticks, ~1031 s.
    fn stage_ns(&self, stage: u8) -> u64 {
        let preload = u64::from(if stage <= 1 {
            self.state.timer1_preload
        } else {
            self.state.timer2_preload
        });
        let ticks = if self.state.clock_1mhz {
            preload << 5
        } else {
            preload << 15
        };
        ticks * PCI_TICK_NS
    }

    /// QEMU `i6300esb_restart_timer`: only while enabled.
    fn restart_timer(&mut self, stage: u8, now: u64) {
        if !self.state.enabled {
            return;
        }
        self.state.stage = stage;
        let d = now.saturating_add(self.stage_ns(stage));
        // A ping re-arms at a new time even when the value repeats.
        self.deadline = None;
        self.set_deadline(Some(d));
    }

    /// QEMU `i6300esb_reset`: the timer stops; the timeout flag stays.
    fn reset_watchdog(&mut self) {
        self.set_deadline(None);
        self.state = EsbState::default();
    }

    fn config_value(&self) -> u16 {
        let s = &self.state;
        (if s.reboot_enabled { 0 } else { ESB_WDT_REBOOT })
            | (if s.clock_1mhz { ESB_WDT_FREQ } else { 0 })
            | s.int_type
    }

    fn lock_value(&self) -> u8 {
        let s = &self.state;
        (if s.free_run { ESB_WDT_FUNC } else { 0 })
            | (if s.locked { ESB_WDT_LOCK } else { 0 })
            | (if s.enabled { ESB_WDT_ENABLE } else { 0 })
    }

    fn write_config_reg(&mut self, v: u16) {
        self.state.reboot_enabled = v & ESB_WDT_REBOOT == 0;
        self.state.clock_1mhz = v & ESB_WDT_FREQ != 0;
        self.state.int_type = v & ESB_WDT_INTTYPE;
    }

    fn write_lock_reg(&mut self, v: u8) {
        if self.state.locked {
            return;
        }
        self.state.locked = v & ESB_WDT_LOCK != 0;
        self.state.free_run = v & ESB_WDT_FUNC != 0;
        let was = self.state.enabled;
        self.state.enabled = v & ESB_WDT_ENABLE != 0;
        if !was && self.state.enabled {
            let now = self.now();
            self.restart_timer(1, now);
        } else if !self.state.enabled {
            self.set_deadline(None);
        }
    }

    /// The unlock steps, common to word and dword writes; true if consumed.
    fn unlock_step(&mut self, offset: u64, val: u32) -> bool {
        if offset == ESB_RELOAD_REG && val == ESB_UNLOCK1 {
            self.state.unlock_state = 1;
            true
        } else if offset == ESB_RELOAD_REG && val == ESB_UNLOCK2 && self.state.unlock_state == 1 {
            self.state.unlock_state = 2;
            true
        } else {
            false
        }
    }

    fn mem_write(&mut self, offset: u64, data: &[u8]) {
        match *data {
            // QEMU `i6300esb_mem_writeb`: unlock steps only, never consumes.
            [b] => {
                self.unlock_step(offset, u32::from(b));
            }
            [a, b] => {
                let val = u16::from_le_bytes([a, b]);
                if self.unlock_step(offset, u32::from(val)) || self.state.unlock_state != 2 {
                    return;
                }
                if offset == ESB_RELOAD_REG {
                    if val & ESB_WDT_RELOAD != 0 {
                        let now = self.now();
                        self.restart_timer(1, now);
                    }
                    if val & (ESB_WDT_TIMEOUT | ESB_WDT_TIMEOUT_LINUX_BUG) != 0 {
                        self.previous_reboot = false;
                    }
                }
                self.state.unlock_state = 0;
            }
            [a, b, c, d] => {
                let val = u32::from_le_bytes([a, b, c, d]);
                if self.unlock_step(offset, val) || self.state.unlock_state != 2 {
                    return;
                }
                match offset {
                    ESB_TIMER1_REG => self.state.timer1_preload = val & PRELOAD_MASK,
                    ESB_TIMER2_REG => self.state.timer2_preload = val & PRELOAD_MASK,
                    _ => {}
                }
                self.state.unlock_state = 0;
            }
            _ => {}
        }
    }

    fn mem_read(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if data.len() == 2 && offset == ESB_RELOAD_REG && self.previous_reboot {
            data.copy_from_slice(&(ESB_WDT_TIMEOUT | ESB_WDT_TIMEOUT_LINUX_BUG).to_le_bytes());
        }
    }
}

/// An access QEMU's `i6300esb_ops` accepts: 1, 2 or 4 bytes, naturally
/// aligned, inside the BAR.
fn valid_access(bar: u8, offset: u64, len: usize) -> bool {
    bar == I6300ESB_BAR
        && matches!(len, 1 | 2 | 4)
        && offset.is_multiple_of(len as u64)
        && offset < I6300ESB_BAR_SIZE
}

impl PciDevice for I6300Esb {
    fn read_config(&mut self, reg_idx: usize) -> u32 {
        let v = self.config.read(reg_idx);
        if reg_idx == ESB_CONFIG_REG / 4 {
            (v & !0xffff) | u32::from(self.config_value())
        } else if reg_idx == ESB_LOCK_REG / 4 {
            (v & !0xff) | u32::from(self.lock_value())
        } else {
            v
        }
    }

    fn write_config(&mut self, reg_idx: usize, offset: u64, data: &[u8]) {
        let addr = reg_idx
            .checked_mul(4)
            .and_then(|a| a.checked_add(usize::try_from(offset).ok()?));
        match (addr, data) {
            (Some(ESB_CONFIG_REG), &[a, b]) => self.write_config_reg(u16::from_le_bytes([a, b])),
            (Some(ESB_LOCK_REG), &[v]) => self.write_lock_reg(v),
            _ => self.config.write(reg_idx, offset, data),
        }
    }

    /// QEMU resets the function's header and the watchdog
    /// (`i6300esb_reset`); bytes from 0x40 keep what the guest wrote
    /// (hw/pci/pci.c `pci_do_device_reset` leaves them), and so does the
    /// timeout flag.
    fn reset(&mut self) {
        let kept: Vec<u32> = (0x10..0x40).map(|r| self.config.read(r)).collect();
        self.config.reset();
        for (i, v) in kept.iter().enumerate() {
            self.config.write(0x10 + i, 0, &v.to_le_bytes());
        }
        self.reset_watchdog();
    }

    fn bars(&self) -> Vec<PciBar> {
        self.config.bars()
    }

    fn bar_read(&mut self, bar: u8, offset: u64, data: &mut [u8]) {
        if valid_access(bar, offset, data.len()) {
            self.mem_read(offset, data);
        } else {
            data.fill(0);
        }
    }

    fn bar_write(&mut self, bar: u8, offset: u64, data: &[u8]) {
        if valid_access(bar, offset, data.len()) {
            self.mem_write(offset, data);
        }
    }
}
