//! The register sequences of Linux's drivers/watchdog/i6300esb.c against a
//! fake virtual clock; expectations follow QEMU's wdt_i6300esb.c.

use std::sync::{Arc, Mutex};

use super::*;
use crate::ManualClock;

/// One second of Linux heartbeat: `time << 9` ticks of 2^15 PCI clocks of
/// 30 ns (1 kHz prescaler), per stage.
const LINUX_SECOND_NS: u64 = 512 * 32768 * 30;

fn esb() -> (I6300Esb, ManualClock) {
    let clock = ManualClock::new(1_000);
    (I6300Esb::new(Box::new(clock.clone())).unwrap(), clock)
}

fn cfg_word(e: &mut I6300Esb, addr: usize, v: u16) {
    e.write_config(addr / 4, (addr % 4) as u64, &v.to_le_bytes());
}

fn cfg_byte(e: &mut I6300Esb, addr: usize, v: u8) {
    e.write_config(addr / 4, (addr % 4) as u64, &[v]);
}

fn cfg_read_byte(e: &mut I6300Esb, addr: usize) -> u8 {
    e.read_config(addr / 4).to_le_bytes()[addr % 4]
}

fn cfg_read_word(e: &mut I6300Esb, addr: usize) -> u16 {
    (e.read_config(addr / 4) >> (8 * (addr % 4))) as u16
}

fn writew(e: &mut I6300Esb, off: u64, v: u16) {
    e.bar_write(0, off, &v.to_le_bytes());
}

fn writel(e: &mut I6300Esb, off: u64, v: u32) {
    e.bar_write(0, off, &v.to_le_bytes());
}

fn readw(e: &mut I6300Esb, off: u64) -> u16 {
    let mut b = [0u8; 2];
    e.bar_read(0, off, &mut b);
    u16::from_le_bytes(b)
}

/// `esb_unlock_registers`.
fn unlock(e: &mut I6300Esb) {
    writew(e, ESB_RELOAD_REG, 0x80);
    writew(e, ESB_RELOAD_REG, 0x86);
}

/// `esb_timer_keepalive`.
fn ping(e: &mut I6300Esb) {
    unlock(e);
    writew(e, ESB_RELOAD_REG, ESB_WDT_RELOAD);
}

/// `esb_initdevice`, then `esb_timer_set_heartbeat(secs)`, then `esb_timer_start`.
fn linux_start(e: &mut I6300Esb, secs: u32, nowayout: bool) {
    cfg_word(e, ESB_CONFIG_REG, 0x0003);
    let _ = cfg_read_byte(e, ESB_LOCK_REG);
    cfg_byte(e, ESB_LOCK_REG, 0x00);
    unlock(e);
    let _ = readw(e, ESB_RELOAD_REG);
    unlock(e);
    writew(e, ESB_RELOAD_REG, ESB_WDT_TIMEOUT | ESB_WDT_RELOAD);
    unlock(e);
    writel(e, ESB_TIMER1_REG, secs << 9);
    unlock(e);
    writel(e, ESB_TIMER2_REG, secs << 9);
    ping(e);
    ping(e);
    let lock = ESB_WDT_ENABLE | if nowayout { ESB_WDT_LOCK } else { 0 };
    cfg_byte(e, ESB_LOCK_REG, lock);
}

#[test]
fn identifies_as_qemus_i6300esb() {
    let (mut e, _) = esb();
    assert_eq!(e.read_config(0), 0x25ab_8086);
    assert_eq!(e.read_config(2), 0x0880_0000, "class 0x0880, revision 0");
    assert_eq!(e.read_config(0x2c / 4), 0x1100_1af4);
    assert_eq!(e.read_config(0x3c / 4) >> 8 & 0xff, 0, "no interrupt pin");
    e.write_config(4, 0, &[0xff; 4]);
    assert_eq!(e.read_config(4), 0xffff_fff0, "16-byte 32-bit memory BAR");
    let bars = e.bars();
    assert_eq!(bars.len(), 1);
    assert_eq!(bars[0].size, 16);
    assert_eq!(e.next_deadline_ns(), None, "disabled at power-on");
}

#[test]
fn linux_driver_arms_both_stages_then_fires() {
    let (mut e, clock) = esb();
    linux_start(&mut e, 30, false);
    let t0 = 1_000;
    let stage = 30 * LINUX_SECOND_NS;
    assert_eq!(stage, 15_099_494_400);
    assert_eq!(e.next_deadline_ns(), Some(t0 + stage));
    assert_eq!(cfg_read_byte(&mut e, ESB_LOCK_REG), ESB_WDT_ENABLE);

    assert_eq!(e.expired(t0 + stage - 1), None, "early call does nothing");
    assert_eq!(e.next_deadline_ns(), Some(t0 + stage));

    clock.set_ns((t0 + stage) as i64);
    assert_eq!(e.expired(t0 + stage), None, "stage 1 only logs (QEMU 7.2)");
    assert_eq!(e.next_deadline_ns(), Some(t0 + 2 * stage), "stage 2 armed");

    assert_eq!(e.expired(t0 + 2 * stage + 5), Some(WatchdogFired));
    assert_eq!(e.next_deadline_ns(), None);
    assert_eq!(e.expired(u64::MAX), None, "fires once");
    // The watchdog reset itself; the timeout flag tells the rebooted driver.
    assert_eq!(cfg_read_byte(&mut e, ESB_LOCK_REG), 0);
    assert_eq!(cfg_read_word(&mut e, ESB_CONFIG_REG), 0);
    assert_eq!(readw(&mut e, ESB_RELOAD_REG), 0x1200);
}

#[test]
fn pings_postpone_the_deadline() {
    let (mut e, clock) = esb();
    linux_start(&mut e, 10, false);
    let stage = 10 * LINUX_SECOND_NS;
    clock.advance_ns((stage / 2) as i64);
    ping(&mut e);
    assert_eq!(e.next_deadline_ns(), Some(1_000 + stage / 2 + stage));
    // A ping during stage 2 goes back to stage 1.
    clock.set_ns((1_000 + stage / 2 + stage) as i64);
    assert_eq!(e.expired(1_000 + stage / 2 + stage), None);
    clock.advance_ns(7);
    ping(&mut e);
    let now = 1_000 + stage / 2 + stage + 7;
    assert_eq!(e.next_deadline_ns(), Some(now + stage));
    assert_eq!(e.expired(now + stage), None, "stage 1 again, not a fire");
}

#[test]
fn writes_need_the_unlock_sequence_and_consume_it() {
    let (mut e, clock) = esb();
    linux_start(&mut e, 10, false);
    let armed = e.next_deadline_ns();
    clock.advance_ns(1_000_000);
    writew(&mut e, ESB_RELOAD_REG, ESB_WDT_RELOAD);
    assert_eq!(e.next_deadline_ns(), armed, "no unlock: ignored");
    writew(&mut e, ESB_RELOAD_REG, 0x86);
    writew(&mut e, ESB_RELOAD_REG, 0x80);
    writew(&mut e, ESB_RELOAD_REG, ESB_WDT_RELOAD);
    assert_eq!(
        e.next_deadline_ns(),
        armed,
        "0x86 before 0x80, then 0x80 alone"
    );
    writew(&mut e, ESB_RELOAD_REG, 0x86);
    writel(&mut e, ESB_TIMER1_REG, 1); // consumes the unlock
    writew(&mut e, ESB_RELOAD_REG, ESB_WDT_RELOAD);
    assert_eq!(e.next_deadline_ns(), armed, "one write per unlock");
    // Byte writes step the sequence but never consume it.
    e.bar_write(0, ESB_RELOAD_REG, &[0x80]);
    e.bar_write(0, ESB_RELOAD_REG, &[0x86]);
    e.bar_write(0, ESB_RELOAD_REG, &[0x00]);
    writew(&mut e, ESB_RELOAD_REG, ESB_WDT_RELOAD);
    // TIMER1 was written as 1 tick above: 2^15 * 30 ns.
    assert_eq!(e.next_deadline_ns(), Some(1_001_000 + 32768 * 30));
}

#[test]
fn one_mhz_prescaler_and_preload_mask() {
    let (mut e, _) = esb();
    cfg_word(&mut e, ESB_CONFIG_REG, ESB_WDT_FREQ);
    assert_eq!(cfg_read_word(&mut e, ESB_CONFIG_REG), ESB_WDT_FREQ);
    unlock(&mut e);
    writel(&mut e, ESB_TIMER1_REG, 0xfff0_0000 | 1000);
    cfg_byte(&mut e, ESB_LOCK_REG, ESB_WDT_ENABLE);
    // 1000 ticks << 5 PCI clocks of 30 ns; bits above 20 dropped.
    assert_eq!(e.next_deadline_ns(), Some(1_000 + 960_000));
}

#[test]
fn reset_preloads_are_the_maximum() {
    let (mut e, _) = esb();
    cfg_byte(&mut e, ESB_LOCK_REG, ESB_WDT_ENABLE);
    assert_eq!(
        e.next_deadline_ns(),
        Some(1_000 + 0xfffff * 32768 * 30),
        "~1031 s"
    );
}

#[test]
fn lock_bit_prevents_disabling_until_reset() {
    let (mut e, clock) = esb();
    linux_start(&mut e, 5, true);
    let armed = e.next_deadline_ns();
    assert!(armed.is_some());
    cfg_byte(&mut e, ESB_LOCK_REG, 0);
    assert_eq!(
        cfg_read_byte(&mut e, ESB_LOCK_REG),
        ESB_WDT_ENABLE | ESB_WDT_LOCK
    );
    assert_eq!(e.next_deadline_ns(), armed, "still running");
    clock.set_ns(i64::MAX);
    e.reset();
    assert_eq!(cfg_read_byte(&mut e, ESB_LOCK_REG), 0);
    assert_eq!(e.next_deadline_ns(), None);
    cfg_byte(&mut e, ESB_LOCK_REG, ESB_WDT_ENABLE);
    cfg_byte(&mut e, ESB_LOCK_REG, 0);
    assert_eq!(e.next_deadline_ns(), None, "unlocked after reset");
}

#[test]
fn disabling_stops_the_timer() {
    let (mut e, _) = esb();
    linux_start(&mut e, 5, false);
    cfg_byte(&mut e, ESB_LOCK_REG, 0);
    assert_eq!(e.next_deadline_ns(), None);
    assert_eq!(e.expired(u64::MAX), None);
    // Re-enabling while enabled does not restart: only 0 -> 1 does.
    cfg_byte(&mut e, ESB_LOCK_REG, ESB_WDT_ENABLE);
    let armed = e.next_deadline_ns();
    cfg_byte(&mut e, ESB_LOCK_REG, ESB_WDT_ENABLE);
    assert_eq!(e.next_deadline_ns(), armed);
}

#[test]
fn reboot_disabled_stops_after_stage_two() {
    let (mut e, _) = esb();
    cfg_word(&mut e, ESB_CONFIG_REG, ESB_WDT_REBOOT);
    unlock(&mut e);
    writel(&mut e, ESB_TIMER1_REG, 1);
    unlock(&mut e);
    writel(&mut e, ESB_TIMER2_REG, 2);
    cfg_byte(&mut e, ESB_LOCK_REG, ESB_WDT_ENABLE);
    let tick = 32768 * 30;
    assert_eq!(e.expired(1_000 + tick), None);
    assert_eq!(e.next_deadline_ns(), Some(1_000 + 3 * tick));
    assert_eq!(
        e.expired(1_000 + 3 * tick),
        None,
        "reboot disabled: no fire"
    );
    assert_eq!(e.next_deadline_ns(), None, "not free-running: stops");
    assert_eq!(cfg_read_byte(&mut e, ESB_LOCK_REG), ESB_WDT_ENABLE);
    assert_eq!(readw(&mut e, ESB_RELOAD_REG), 0, "no timeout flag");
}

#[test]
fn free_running_restarts_stage_one() {
    let (mut e, _) = esb();
    cfg_word(&mut e, ESB_CONFIG_REG, ESB_WDT_REBOOT);
    unlock(&mut e);
    writel(&mut e, ESB_TIMER1_REG, 1);
    unlock(&mut e);
    writel(&mut e, ESB_TIMER2_REG, 1);
    cfg_byte(&mut e, ESB_LOCK_REG, ESB_WDT_ENABLE | ESB_WDT_FUNC);
    let tick = 32768 * 30;
    assert_eq!(e.expired(1_000 + tick), None);
    assert_eq!(e.expired(1_000 + 2 * tick), None);
    assert_eq!(
        e.next_deadline_ns(),
        Some(1_000 + 3 * tick),
        "stage 1 again"
    );
}

#[test]
fn free_running_with_reboot_enabled_still_fires_once() {
    // QEMU resets the watchdog (clearing free-run) before the free-run check.
    let (mut e, _) = esb();
    cfg_byte(&mut e, ESB_LOCK_REG, ESB_WDT_ENABLE | ESB_WDT_FUNC);
    let d1 = e.next_deadline_ns().unwrap();
    assert_eq!(e.expired(d1), None);
    let d2 = e.next_deadline_ns().unwrap();
    assert_eq!(e.expired(d2), Some(WatchdogFired));
    assert_eq!(e.next_deadline_ns(), None);
}

#[test]
fn timeout_flag_survives_reset_and_clears_on_request() {
    let (mut e, _) = esb();
    cfg_byte(&mut e, ESB_LOCK_REG, ESB_WDT_ENABLE);
    let d = e.next_deadline_ns().unwrap();
    e.expired(d);
    let d = e.next_deadline_ns().unwrap();
    assert_eq!(e.expired(d), Some(WatchdogFired));
    e.reset();
    assert_eq!(readw(&mut e, ESB_RELOAD_REG), 0x1200);
    let mut b = [0u8; 4];
    e.bar_read(0, ESB_RELOAD_REG, &mut b);
    assert_eq!(b, [0; 4], "only a word read shows it");
    writew(&mut e, ESB_RELOAD_REG, ESB_WDT_TIMEOUT);
    assert_eq!(readw(&mut e, ESB_RELOAD_REG), 0x1200, "needs the unlock");
    unlock(&mut e);
    writew(&mut e, ESB_RELOAD_REG, 0x1000); // the old Linux bit also clears it
    assert_eq!(readw(&mut e, ESB_RELOAD_REG), 0);
}

#[test]
fn interrupt_type_keeps_qemus_0x11_mask() {
    let (mut e, _) = esb();
    cfg_word(&mut e, ESB_CONFIG_REG, 0x0003);
    assert_eq!(cfg_read_word(&mut e, ESB_CONFIG_REG), 0x0001);
    cfg_word(&mut e, ESB_CONFIG_REG, 0xffff);
    assert_eq!(cfg_read_word(&mut e, ESB_CONFIG_REG), 0x0035);
}

#[test]
fn other_widths_reach_plain_configuration_bytes() {
    let (mut e, _) = esb();
    e.write_config(ESB_CONFIG_REG / 4, 0, &0x0000_0020u32.to_le_bytes());
    assert_eq!(
        cfg_read_word(&mut e, ESB_CONFIG_REG),
        0,
        "reboot still enabled"
    );
    cfg_word(&mut e, ESB_LOCK_REG, u16::from(ESB_WDT_ENABLE));
    assert_eq!(e.next_deadline_ns(), None, "a word write does not enable");
    assert_eq!(cfg_read_byte(&mut e, ESB_LOCK_REG + 1), 0);
    cfg_byte(&mut e, 0x62, 0xab);
    e.reset();
    assert_eq!(cfg_read_byte(&mut e, 0x62), 0xab, "0x40-0xff survive reset");
}

#[test]
fn unaligned_and_wide_accesses_are_refused() {
    let (mut e, _) = esb();
    cfg_byte(&mut e, ESB_LOCK_REG, ESB_WDT_ENABLE);
    let armed = e.next_deadline_ns();
    e.bar_write(0, 0xb, &0x8080u16.to_le_bytes());
    e.bar_write(0, 0xd, &[0x86, 0x00]);
    writew(&mut e, ESB_RELOAD_REG, ESB_WDT_RELOAD);
    e.bar_write(0, 0x8, &0x0000_0086_0000_0080u64.to_le_bytes());
    writew(&mut e, ESB_RELOAD_REG, ESB_WDT_RELOAD);
    assert_eq!(e.next_deadline_ns(), armed);
    let mut b = [0xffu8; 8];
    e.bar_read(0, 0x8, &mut b);
    assert_eq!(b, [0; 8]);
}

#[test]
fn deadline_changes_are_announced() {
    let (mut e, clock) = esb();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    e.set_deadline_notifier(Arc::new(move |d| s.lock().unwrap().push(d)));
    unlock(&mut e);
    writel(&mut e, ESB_TIMER1_REG, 1);
    cfg_byte(&mut e, ESB_LOCK_REG, ESB_WDT_ENABLE);
    clock.advance_ns(10);
    ping(&mut e);
    cfg_byte(&mut e, ESB_LOCK_REG, 0);
    let tick = 32768 * 30;
    assert_eq!(
        *seen.lock().unwrap(),
        vec![Some(1_000 + tick), Some(1_010 + tick), None]
    );
}

#[test]
fn garbage_never_panics() {
    let (mut e, clock) = esb();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..20_000u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let bytes = x.to_le_bytes();
        let width = [1usize, 2, 3, 4, 8][(x >> 8) as usize % 5];
        let off = (x >> 16) % 20;
        match x % 5 {
            0 => e.bar_write((x >> 40) as u8 % 2, off, &bytes[..width]),
            1 => {
                let mut b = [0u8; 8];
                e.bar_read(0, off, &mut b[..width]);
            }
            2 => {
                let reg = (x >> 24) as usize % 70;
                let w = width.min(4);
                let o = (x >> 32) % (5 - w as u64);
                e.write_config(reg, o, &bytes[..w]);
            }
            3 => {
                let _ = e.read_config((x >> 24) as usize % 1100);
            }
            _ => {
                clock.advance_ns((x >> 20) as i64 & 0xfff_ffff);
                let _ = e.expired(e.next_deadline_ns().unwrap_or(i));
            }
        }
    }
    clock.set_ns(i64::MIN);
    cfg_byte(&mut e, ESB_LOCK_REG, 0);
    cfg_byte(&mut e, ESB_LOCK_REG, ESB_WDT_ENABLE);
    e.reset();
}
