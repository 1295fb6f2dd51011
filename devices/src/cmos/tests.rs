//! Unit tests of the CMOS RTC, on a manual clock (no KVM).

use super::*;
use crate::testutil::hammer;
use crate::ManualClock;
use std::sync::{Arc, Mutex};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
/// 2024-02-29 12:34:56 UTC, a Thursday.
const LEAP_DAY: i64 = 1_709_210_096;
const SEC: i64 = 1_000_000_000;

fn cmos_at(secs: i64, frac_ns: i64) -> (Cmos, ManualClock) {
    let clock = ManualClock::new(secs * SEC + frac_ns);
    (Cmos::new(128 * MIB, 0, 1, Box::new(clock.clone())), clock)
}

/// Collects the RTC_CHANGE offsets the device reports.
#[derive(Clone, Default)]
struct Changes(Arc<Mutex<Vec<i64>>>);

impl Changes {
    /// The last offset reported since the previous call.
    fn take(&self) -> Option<i64> {
        let mut v = self.0.lock().unwrap();
        let last = v.last().copied();
        v.clear();
        last
    }
    fn count(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

fn cmos_changes(secs: i64, frac_ns: i64) -> (Cmos, ManualClock, Changes) {
    let (mut c, clock) = cmos_at(secs, frac_ns);
    let ch = Changes::default();
    let sink = ch.0.clone();
    c.on_rtc_change(Box::new(move |o| sink.lock().unwrap().push(o)));
    (c, clock, ch)
}

fn rd(c: &mut Cmos, idx: u8) -> u8 {
    c.write(0, &[idx]);
    let mut b = [0u8];
    c.read(1, &mut b);
    b[0]
}

fn wr(c: &mut Cmos, idx: u8, v: u8) {
    c.write(0, &[idx]);
    c.write(1, &[v]);
}

/// (sec, min, hour, wday, mday, month, year, century) as the guest reads them.
fn time_regs(c: &mut Cmos) -> [u8; 8] {
    [0x00, 0x02, 0x04, 0x06, 0x07, 0x08, 0x09, 0x32].map(|i| rd(c, i))
}

fn set_time_bcd(c: &mut Cmos, regs: [u8; 8]) {
    for (i, v) in [0x00, 0x02, 0x04, 0x06, 0x07, 0x08, 0x09, 0x32]
        .into_iter()
        .zip(regs)
    {
        wr(c, i, v);
    }
}

#[test]
fn memory_bytes_follow_pc_cmos_init() {
    let c = Cmos::new(8 * MIB, 0, 1, Box::new(ManualClock::default()));
    let word = |i: u8| u16::from(c.cmos_byte(i)) | u16::from(c.cmos_byte(i + 1)) << 8;
    assert_eq!(word(0x15), 640);
    assert_eq!(word(0x17), 7 * 1024);
    assert_eq!(word(0x30), 7 * 1024);
    assert_eq!(word(0x34), 0, "nothing above 16 MiB");
    assert_eq!(c.cmos_byte(0x5f), 0);
    assert_eq!(c.cmos_byte(0x14), 0x06);

    let c = Cmos::new(3 * GIB, 5 * GIB, 4, Box::new(ManualClock::default()));
    let word = |i: u8| u16::from(c.cmos_byte(i)) | u16::from(c.cmos_byte(i + 1)) << 8;
    assert_eq!(word(0x17), 0xffff, "capped at 65535 KiB");
    assert_eq!(word(0x30), 0xffff);
    assert_eq!(word(0x34), ((3 * GIB - 16 * MIB) / 65536) as u16);
    assert_eq!(
        [c.cmos_byte(0x5b), c.cmos_byte(0x5c), c.cmos_byte(0x5d)],
        [0x00, 0x40, 0x01]
    );
    assert_eq!(c.cmos_byte(0x5f), 3);

    let c = Cmos::new(512 * 1024, 0, 0, Box::new(ManualClock::default()));
    assert_eq!(
        [c.cmos_byte(0x15), c.cmos_byte(0x16)],
        [0x00, 0x02],
        "512 KiB base memory"
    );
    assert_eq!(c.cmos_byte(0x17), 0);
    assert_eq!(c.cmos_byte(0x5f), 0, "0 CPUs does not wrap");
}

#[test]
fn power_on_registers() {
    let (mut c, _) = cmos_at(LEAP_DAY, 0);
    assert_eq!(rd(&mut c, 0x0a), 0x26);
    assert_eq!(rd(&mut c, 0x0b), 0x02);
    assert_eq!(rd(&mut c, 0x0c), 0x00);
    assert_eq!(rd(&mut c, 0x0d), 0x80);
    wr(&mut c, 0x0d, 0);
    wr(&mut c, 0x0c, 0xff);
    assert_eq!(rd(&mut c, 0x0d), 0x80, "D is read-only");
    assert_eq!(rd(&mut c, 0x0c), 0x00, "C is read-only");
}

#[test]
fn reads_host_time_in_bcd_24h() {
    let (mut c, clock) = cmos_at(LEAP_DAY, 0);
    assert_eq!(
        time_regs(&mut c),
        [0x56, 0x34, 0x12, 0x05, 0x29, 0x02, 0x24, 0x20]
    );
    clock.advance_ns(4 * SEC);
    assert_eq!(rd(&mut c, 0x00), 0x00);
    assert_eq!(rd(&mut c, 0x02), 0x35);
    assert_eq!(c.guest_time(), LEAP_DAY + 4);
    clock.set_ns(946_684_799 * SEC); // 1999-12-31 23:59:59, a Friday
    assert_eq!(
        time_regs(&mut c),
        [0x59, 0x59, 0x23, 0x06, 0x31, 0x12, 0x99, 0x19]
    );
}

#[test]
fn honours_binary_and_12_hour_formats() {
    let (mut c, clock) = cmos_at(LEAP_DAY, 0);
    wr(&mut c, 0x0b, REG_B_DM); // binary, 12-hour
    assert_eq!(time_regs(&mut c), [56, 34, 0x80 | 12, 5, 29, 2, 24, 20]);
    clock.set_ns(1_709_165_100 * SEC); // 00:05:00 is 12 AM
    assert_eq!(rd(&mut c, 0x04), 12);
    wr(&mut c, 0x0b, 0); // BCD, 12-hour
    assert_eq!(rd(&mut c, 0x04), 0x12);
    clock.set_ns((1_709_165_100 + 13 * 3600) * SEC); // 13:05 is 1 PM
    assert_eq!(rd(&mut c, 0x04), 0x81);
}

#[test]
fn uip_is_set_in_the_last_244us_of_a_second() {
    let (mut c, clock) = cmos_at(LEAP_DAY, 500_000_000);
    assert_eq!(rd(&mut c, 0x0a) & 0x80, 0);
    clock.set_ns(LEAP_DAY * SEC + 999_800_000);
    assert_eq!(rd(&mut c, 0x0a), 0x80 | 0x26);
    clock.set_ns(LEAP_DAY * SEC + 999_700_000);
    assert_eq!(rd(&mut c, 0x0a) & 0x80, 0, "300 us before the update");
    clock.set_ns(LEAP_DAY * SEC + 999_800_000);
    wr(&mut c, 0x0b, REG_B_SET | REG_B_24H);
    assert_eq!(rd(&mut c, 0x0a) & 0x80, 0, "no updates while SET");
    wr(&mut c, 0x0a, 0xa6);
    assert_eq!(rd(&mut c, 0x0a) & 0x80, 0, "UIP cannot be written");
}

#[test]
fn guest_sets_time_under_set_and_reports_rtc_change() {
    let (mut c, clock, ch) = cmos_changes(LEAP_DAY, 250_000_000);
    assert_eq!(ch.take(), None);
    wr(&mut c, 0x0b, REG_B_SET | REG_B_24H);
    // 2030-01-02 03:04:05
    set_time_bcd(&mut c, [0x05, 0x04, 0x03, 0x04, 0x02, 0x01, 0x30, 0x20]);
    clock.advance_ns(3 * SEC);
    assert_eq!(rd(&mut c, 0x00), 0x05, "frozen while SET");
    assert_eq!(ch.take(), None, "nothing happens until SET clears");
    wr(&mut c, 0x0b, REG_B_24H);
    let new_time = 1_893_553_445;
    assert_eq!(ch.take(), Some(new_time - (LEAP_DAY + 3)));
    assert_eq!(ch.take(), None, "taken once");
    assert_eq!(c.rtc_offset(), new_time - (LEAP_DAY + 3));
    assert_eq!(
        time_regs(&mut c),
        [0x05, 0x04, 0x03, 0x04, 0x02, 0x01, 0x30, 0x20]
    );
    // The fraction of the second carried over: 0.75 s later the second ticks.
    clock.advance_ns(740_000_000);
    assert_eq!(rd(&mut c, 0x00), 0x05);
    clock.advance_ns(20_000_000);
    assert_eq!(rd(&mut c, 0x00), 0x06);
}

#[test]
fn writing_a_time_register_while_running_sets_the_clock() {
    let (mut c, _, ch) = cmos_changes(LEAP_DAY, 0);
    wr(&mut c, 0x09, 0x25); // year 2025, same day and time
    let delta = ch.take().unwrap();
    assert_eq!(
        delta,
        366 * 86_400,
        "2024-02-29 + 1 year = 2025-03-01 in mktimegm's arithmetic"
    );
    assert_eq!(rd(&mut c, 0x09), 0x25);
    assert_eq!(rd(&mut c, 0x08), 0x03);
    assert_eq!(rd(&mut c, 0x07), 0x01);
}

#[test]
fn set_time_is_read_in_the_guests_format() {
    let (mut c, _, ch) = cmos_changes(LEAP_DAY, 0);
    // Binary, 12-hour: 11 PM on 2024-02-29.
    wr(&mut c, 0x0b, REG_B_SET | REG_B_DM);
    set_time_bcd(&mut c, [0, 0, 0x80 | 11, 5, 29, 2, 24, 20]);
    wr(&mut c, 0x0b, REG_B_DM);
    assert_eq!(ch.take(), Some(1_709_164_800 + 23 * 3600 - LEAP_DAY));
}

#[test]
fn base_offset_shifts_the_clock_and_rtc_change_is_relative_to_it() {
    let (mut c, _, ch) = cmos_changes(LEAP_DAY, 0);
    c.set_base_offset(3600);
    assert_eq!(rd(&mut c, 0x04), 0x13);
    assert_eq!(c.rtc_offset(), 3600);
    wr(&mut c, 0x02, 0x34); // rewrite the same minute: no change from the base
    assert_eq!(ch.take(), Some(0));
    c.set_base_offset(i64::MIN);
    let _ = time_regs(&mut c);
    c.set_base_offset(i64::MAX);
    let _ = time_regs(&mut c);
}

#[test]
fn divider_reset_freezes_and_restarts_half_a_second_later() {
    let (mut c, clock, ch) = cmos_changes(LEAP_DAY, 0);
    wr(&mut c, 0x0a, 0x76);
    clock.advance_ns(10 * SEC);
    assert_eq!(rd(&mut c, 0x00), 0x56, "stopped");
    assert_eq!(rd(&mut c, 0x0a), 0x76, "no UIP while stopped");
    wr(&mut c, 0x0a, 0x26);
    assert_eq!(ch.take(), Some(-10));
    clock.advance_ns(499_000_000);
    assert_eq!(rd(&mut c, 0x00), 0x56);
    clock.advance_ns(2_000_000);
    assert_eq!(rd(&mut c, 0x00), 0x57);
}

#[test]
fn register_c_flags_update_and_alarm() {
    let (mut c, clock) = cmos_at(LEAP_DAY, 100_000_000);
    assert_eq!(rd(&mut c, 0x0c), 0);
    clock.advance_ns(SEC);
    assert_eq!(
        rd(&mut c, 0x0c),
        REG_C_UF,
        "a second went by; no IRQF since UIE is clear"
    );
    assert_eq!(rd(&mut c, 0x0c), 0, "reading C clears it");
    // Alarm at 12:35:00 (BCD), now 12:34:57.1.
    wr(&mut c, 0x01, 0x00);
    wr(&mut c, 0x03, 0x35);
    wr(&mut c, 0x05, 0x12);
    clock.advance_ns(2 * SEC);
    assert_eq!(rd(&mut c, 0x0c), REG_C_UF, "12:34:59: no alarm yet");
    clock.advance_ns(SEC);
    assert_eq!(rd(&mut c, 0x0c), REG_C_UF | REG_C_AF);
    // Don't-care hours and minutes: every minute at :30.
    wr(&mut c, 0x01, 0x30);
    wr(&mut c, 0x03, 0xc0);
    wr(&mut c, 0x05, 0xff);
    clock.advance_ns(29 * SEC);
    assert_eq!(rd(&mut c, 0x0c), REG_C_UF);
    clock.advance_ns(SEC);
    assert_eq!(rd(&mut c, 0x0c), REG_C_UF | REG_C_AF);
    // A whole day unobserved still catches a daily alarm.
    wr(&mut c, 0x05, 0x03);
    wr(&mut c, 0x03, 0x00);
    wr(&mut c, 0x01, 0x00);
    clock.advance_ns(86_400 * SEC);
    assert_eq!(rd(&mut c, 0x0c), REG_C_UF | REG_C_AF);
    // An impossible alarm never fires.
    wr(&mut c, 0x01, 0x61);
    clock.advance_ns(2 * 86_400 * SEC);
    assert_eq!(rd(&mut c, 0x0c), REG_C_UF);
}

#[test]
fn alarm_search() {
    let (mut c, _) = cmos_at(LEAP_DAY, 0);
    c.data[REG_B] = REG_B_24H | REG_B_DM;
    let at = |h: u8, m: u8, s: u8| [s, m, h];
    let check = |c: &mut Cmos, alarm: [u8; 3], from: i64, want: Option<i64>| {
        c.data[SECONDS_ALARM] = alarm[0];
        c.data[MINUTES_ALARM] = alarm[1];
        c.data[HOURS_ALARM] = alarm[2];
        assert_eq!(c.secs_to_alarm(from), want, "alarm {alarm:?} from {from}");
    };
    check(&mut c, at(0xff, 0xff, 0xff), 100, Some(1));
    check(&mut c, at(0, 0, 0), 0, Some(86_400));
    check(&mut c, at(0, 0, 1), 0, Some(1));
    check(&mut c, at(23, 59, 59), 0, Some(86_399));
    check(&mut c, at(0xff, 0xff, 0), 59, Some(1));
    check(&mut c, at(0xff, 0xff, 0), 60, Some(60));
    check(
        &mut c,
        at(0xff, 5, 0xff),
        3600 + 5 * 60 + 59,
        Some(3600 - 59),
    );
    check(&mut c, at(24, 0, 0), 0, None);
    check(&mut c, at(0, 60, 0), 0, None);
    check(&mut c, at(0, 0, 60), 0, None);
    check(&mut c, at(0xc0, 0xc0, 0xc0), -1, Some(1));
    // 12-hour: 12 AM is midnight, 0x80|12 is noon.
    c.data[REG_B] = REG_B_DM;
    check(&mut c, at(12, 0, 0), 100, Some(86_400 - 100));
    check(&mut c, at(0x80 | 12, 0, 0), 0, Some(43_200));
    check(&mut c, at(0x80 | 13, 0, 0), 0, None);
}

#[test]
fn periodic_flag_only_with_pie() {
    let (mut c, clock) = cmos_at(LEAP_DAY, 0);
    clock.advance_ns(SEC / 1024 + 1);
    assert_eq!(rd(&mut c, 0x0c) & REG_C_PF, 0);
    wr(&mut c, 0x0b, REG_B_24H | REG_B_PIE);
    clock.advance_ns(SEC / 1024 + 1);
    assert_eq!(rd(&mut c, 0x0c), REG_C_IRQF | REG_C_PF);
    assert_eq!(c.period_ticks(), 32);
    c.data[REG_A] = 0x21;
    assert_eq!(c.period_ticks(), 128, "rate 1 is rate 8 (256 Hz)");
    c.data[REG_A] = 0x20;
    assert_eq!(c.period_ticks(), 0);
}

#[test]
fn irq_is_raised_on_enabled_flags() {
    let (mut c, clock) = cmos_at(LEAP_DAY, 100_000_000);
    let line = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    c.enable_irq(line.try_clone().unwrap()).unwrap();
    assert!(c.timer_fd().is_some());
    assert_eq!(c.next_irq_deadline(), None, "nothing enabled");
    wr(&mut c, 0x0b, REG_B_24H | REG_B_UIE);
    let next = i128::from(LEAP_DAY + 1) * NS_PER_SEC;
    assert_eq!(c.next_irq_deadline(), Some(next));
    assert!(line.read().is_err());
    clock.advance_ns(SEC);
    c.handle_timer();
    assert_eq!(line.read().unwrap(), 1);
    assert_eq!(c.next_irq_deadline(), None, "IRQF pending until C is read");
    clock.advance_ns(SEC);
    c.handle_timer();
    assert!(line.read().is_err(), "no second edge before C is read");
    assert_eq!(rd(&mut c, 0x0c), REG_C_IRQF | REG_C_UF);
    assert_eq!(c.next_irq_deadline(), Some(next + 2 * NS_PER_SEC));
    // Enabling an interrupt whose flag is pending raises it at once.
    wr(&mut c, 0x0b, REG_B_24H);
    clock.advance_ns(SEC);
    c.handle_timer();
    assert!(line.read().is_err());
    wr(&mut c, 0x0b, REG_B_24H | REG_B_UIE);
    assert_eq!(line.read().unwrap(), 1);
    assert_eq!(rd(&mut c, 0x0c), REG_C_IRQF | REG_C_UF);
    // Setting SET clears UIE.
    wr(&mut c, 0x0b, REG_B_SET | REG_B_24H | REG_B_UIE);
    assert_eq!(rd(&mut c, 0x0b), REG_B_SET | REG_B_24H);
    wr(&mut c, 0x0b, REG_B_24H | REG_B_PIE);
    let d = c.next_irq_deadline().unwrap() - c.guest_ns();
    assert!(
        d > 0 && d <= NS_PER_SEC / 1024 + 1,
        "next periodic tick within 1/1024 s, got {d}"
    );
    wr(&mut c, 0x0a, 0x66);
    assert_eq!(
        c.next_irq_deadline(),
        None,
        "dividers in reset: no interrupts"
    );
    c.handle_timer();
}

#[test]
fn timer_fd_fires_for_the_next_update() {
    let (mut c, clock) = cmos_at(LEAP_DAY, SEC - 1_000_000);
    let line = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    c.enable_irq(line.try_clone().unwrap()).unwrap();
    wr(&mut c, 0x0b, REG_B_24H | REG_B_UIE);
    let mut pfd = libc::pollfd {
        fd: c.timer_fd().unwrap(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    let n = unsafe { libc::poll(&mut pfd, 1, 5000) };
    assert_eq!(n, 1, "the timer armed for 1 ms fired");
    clock.advance_ns(1_000_000);
    c.handle_timer();
    assert_eq!(line.read().unwrap(), 1);
    c.handle_timer(); // nothing to read now: must not block
}

#[test]
fn reset_keeps_nvram_and_clock() {
    let (mut c, _) = cmos_at(LEAP_DAY, 0);
    wr(&mut c, 0x40, 0xab);
    wr(&mut c, 0x7f, 0xcd);
    wr(&mut c, 0x0f, 0x0a);
    wr(
        &mut c,
        0x0b,
        REG_B_24H | REG_B_PIE | REG_B_AIE | REG_B_UIE | REG_B_SQWE | REG_B_DM,
    );
    wr(&mut c, 0x09, 30);
    c.reset();
    assert_eq!(rd(&mut c, 0x40), 0xab);
    assert_eq!(rd(&mut c, 0x7f), 0xcd);
    assert_eq!(rd(&mut c, 0x0f), 0x00);
    assert_eq!(rd(&mut c, 0x0b), REG_B_24H | REG_B_UIE | REG_B_DM);
    assert_eq!(rd(&mut c, 0x09), 30, "clock kept (binary mode kept too)");
    assert_eq!(rd(&mut c, 0x15), 0x80, "memory bytes kept");
    wr(&mut c, 0x0f, 0xfe);
    c.reset();
    assert_eq!(rd(&mut c, 0x0f), 0xfe, "S3 resume marker survives");
}

#[test]
fn index_port_details() {
    let (mut c, _) = cmos_at(LEAP_DAY, 0);
    let mut b = [0u8];
    c.read(0, &mut b);
    assert_eq!(b[0], 0xff, "index port reads as 0xff (QEMU)");
    assert_eq!(
        rd(&mut c, 0x80 | 0x0d),
        0x80,
        "bit 7 (NMI mask) is not part of the index"
    );
    assert_eq!(rd(&mut c, 0x37), 0x20, "0x37 aliases the century");
    wr(&mut c, 0x37, 0x21);
    assert_eq!(rd(&mut c, 0x32), 0x21);
    c.set_cmos_byte(0xc1, 7);
    assert_eq!(c.cmos_byte(0x41), 7);
    // A word write at 0x70 is index then data.
    c.write(0, &[0x42, 0x99]);
    assert_eq!(c.cmos_byte(0x42), 0x99);
}

#[test]
fn garbage_time_registers_do_not_panic() {
    let (mut c, _, ch) = cmos_changes(LEAP_DAY, 0);
    for v in [0x00, 0x99, 0xaa, 0xbf, 0xc0, 0xff] {
        for fmt in [0, REG_B_DM, REG_B_24H, REG_B_24H | REG_B_DM] {
            wr(&mut c, 0x0b, REG_B_SET | fmt);
            set_time_bcd(&mut c, [v; 8]);
            wr(&mut c, 0x0b, fmt);
            let _ = time_regs(&mut c);
            assert!(ch.take().is_some());
        }
    }
}

#[test]
fn civil_dates() {
    assert_eq!(civil_from_days(0), (1970, 1, 1));
    assert_eq!(civil_from_days(LEAP_DAY / 86_400), (2024, 2, 29));
    assert_eq!(civil_from_days(-1), (1969, 12, 31));
    assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    let _ = civil_from_days(i64::MAX / 86_400);
    let _ = civil_from_days(i64::MIN / 86_400);
}

#[test]
fn survives_any_access() {
    let (mut c, clock) = cmos_at(LEAP_DAY, 0);
    c.enable_irq(EventFd::new(libc::EFD_NONBLOCK).unwrap())
        .unwrap();
    hammer(&mut c, 2);
    for index in 0..=255u8 {
        for value in [
            0x00, 0x01, 0x26, 0x59, 0x70, 0x7f, 0x80, 0x9a, 0xc0, 0xfe, 0xff,
        ] {
            for width in [1usize, 2, 4, 8] {
                let mut buf = [0u8; 8];
                c.write(0, &[index]);
                c.write(1, &[value; 8][..width]);
                c.read(1, &mut buf[..width]);
                c.read(0, &mut buf[..width]);
            }
            clock.advance_ns(SEC / 3);
            c.handle_timer();
        }
    }
    c.reset();
    hammer(&mut c, 2);
}

#[test]
fn rtc_change_is_measured_against_host_utc_whatever_the_rtc_runs_on() {
    // The RTC on a clock that stands (a paused VM's virtual time) while
    // host UTC moves on: QEMU's qemu_timedate_diff reads QEMU_CLOCK_HOST.
    let rtc = ManualClock::new(LEAP_DAY * SEC);
    let host = ManualClock::new(LEAP_DAY * SEC);
    let mut c =
        Cmos::new(128 * MIB, 0, 1, Box::new(rtc.clone())).with_host_clock(Box::new(host.clone()));
    let ch = Changes::default();
    let sink = ch.0.clone();
    c.on_rtc_change(Box::new(move |o| sink.lock().unwrap().push(o)));
    host.advance_ns(100 * SEC);
    assert_eq!(rd(&mut c, 0x00), 0x56, "the RTC did not move");
    wr(&mut c, 0x00, 0x56); // rewrite the same second: the RTC is 100 s behind
    assert_eq!(ch.take(), Some(-100));
}

#[test]
fn a_set_through_the_divider_reset_is_one_rtc_change() {
    let (mut c, clock, ch) = cmos_changes(LEAP_DAY, 0);
    wr(&mut c, 0x0a, 0x76);
    wr(&mut c, 0x0b, REG_B_SET | REG_B_24H);
    // 2030-06-15 12:34:56, as the test guest's plan=rtc-set writes it.
    set_time_bcd(&mut c, [0x56, 0x34, 0x12, 0x01, 0x15, 0x06, 0x30, 0x20]);
    wr(&mut c, 0x0b, REG_B_24H);
    assert_eq!(ch.count(), 0, "nothing while the dividers are held");
    clock.advance_ns(SEC / 10);
    wr(&mut c, 0x0a, 0x26);
    assert_eq!(ch.count(), 1);
    assert_eq!(ch.take(), Some(1_907_757_296 - LEAP_DAY));
    assert_eq!(rd(&mut c, 0x06), 0x07, "the day of the week is recomputed");
}

/// 2 Hz periodic interrupts (rate 15) from a whole second, IRQ 8 connected.
fn periodic_2hz(slew: bool) -> (Cmos, ManualClock, EventFd) {
    let (mut c, clock) = cmos_at(LEAP_DAY, 0);
    c.set_lost_tick_slew(slew);
    let line = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    c.enable_irq(line.try_clone().unwrap()).unwrap();
    wr(&mut c, 0x0a, 0x2f);
    wr(&mut c, 0x0b, REG_B_24H | REG_B_PIE);
    clock.advance_ns(SEC / 2 + 1);
    c.handle_timer();
    assert_eq!(line.read().unwrap(), 1, "the first tick is delivered");
    // 30 more ticks while the guest does not read C: one edge, 30 lost.
    clock.advance_ns(15 * SEC);
    c.handle_timer();
    (c, clock, line)
}

#[test]
fn slew_gives_lost_ticks_back_on_each_read_of_c_then_by_timer() {
    let (mut c, clock, line) = periodic_2hz(true);
    assert_eq!(rd(&mut c, 0x0c), REG_C_IRQF | REG_C_PF | REG_C_UF);
    assert_eq!(c.lost_ticks(), 29, "30 lost, one given back on this read");
    assert_eq!(line.read().unwrap(), 1);
    for _ in 0..19 {
        assert_eq!(rd(&mut c, 0x0c), REG_C_IRQF | REG_C_PF);
        assert_eq!(line.read().unwrap(), 1);
    }
    assert_eq!(c.lost_ticks(), 10);
    assert_eq!(rd(&mut c, 0x0c), REG_C_IRQF | REG_C_PF);
    assert!(
        line.read().is_err(),
        "at most 20 reinjections on reads of C"
    );
    assert_eq!(c.lost_ticks(), 10);
    // The coalesced timer: period / (min(10, 7) + 1) = 62.5 ms.
    let due = c.next_irq_deadline().unwrap() - c.guest_ns();
    assert_eq!(due, 62_500_000, "due 1/8 period after the ticks were lost");
    clock.advance_ns(62_500_000);
    c.handle_timer();
    assert_eq!(line.read().unwrap(), 1);
    assert_eq!(c.lost_ticks(), 9);
    assert_eq!(rd(&mut c, 0x0c), REG_C_IRQF | REG_C_PF);
    c.reset_reinjection();
    assert_eq!(c.lost_ticks(), 0, "rtc-reset-reinjection");
    assert_eq!(rd(&mut c, 0x0c), 0, "nothing owed any more");
}

#[test]
fn slew_debt_follows_the_periodic_rate() {
    let (mut c, _, _) = periodic_2hz(true);
    assert_eq!(c.lost_ticks(), 30);
    wr(&mut c, 0x0a, 0x2e); // 4 Hz: the same lost time is twice the ticks
    assert_eq!(c.lost_ticks(), 60);
    wr(&mut c, 0x0b, REG_B_24H); // PIE off forgets them
    assert_eq!(c.lost_ticks(), 0);
    let (mut c, _, _) = periodic_2hz(true);
    c.reset();
    assert_eq!(c.lost_ticks(), 0, "machine reset");
}

#[test]
fn without_slew_lost_ticks_are_dropped() {
    let (mut c, _, line) = periodic_2hz(false);
    assert_eq!(rd(&mut c, 0x0c), REG_C_IRQF | REG_C_PF | REG_C_UF);
    assert_eq!(c.lost_ticks(), 0);
    assert_eq!(rd(&mut c, 0x0c), 0);
    assert!(line.read().is_err());
}
