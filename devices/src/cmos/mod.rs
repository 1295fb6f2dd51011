//! MC146818 real-time clock and 128 bytes of CMOS NVRAM: index port 0x70,
//! data port 0x71 (inserted at 0x70 with length 2), IRQ 8.
//!
//! The clock is the host clock plus an offset, like QEMU's hw/rtc/mc146818rtc.c
//! (`get_guest_rtc_ns`): nothing ticks in the background. The time registers
//! are regenerated from the clock on every read while the clock runs, in the
//! format register B selects (BCD or binary, 12 or 24 hour); they are frozen
//! while SET is set or the dividers are held in reset. When the guest sets the
//! time, the offset changes and the callback given to [`Cmos::on_rtc_change`]
//! gets the `offset` of QEMU's RTC_CHANGE event, measured against the host's
//! UTC clock whatever clock the RTC itself runs on (QEMU softmmu/rtc.c
//! `qemu_timedate_diff` uses QEMU_CLOCK_HOST).
//!
//! Register C's flags (UF each second, AF on alarm match, PF each period while
//! PIE is set) are computed when they are looked at, from the time elapsed since
//! last looked. IRQ 8 is delivered only if the VMM calls [`Cmos::enable_irq`]
//! and serves [`Cmos::timer_fd`]: the device arms that timer for the next flag
//! whose interrupt is enabled. Periodic interrupts the guest missed are
//! dropped (QEMU's default `lost_tick_policy=discard`) unless
//! [`Cmos::set_lost_tick_slew`] asks for them back ([`slew`]).

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::timerfd::TimerFd;

use crate::bus::BusDevice;
use crate::{read_bytewise, write_bytewise, Clock};

mod calendar;
mod slew;
use calendar::civil_from_days;
use slew::Slew;

const NS_PER_SEC: i128 = 1_000_000_000;
const SECS_PER_DAY: i64 = 86_400;
/// QEMU reports UIP during the last 244 µs of each second (`UIP_HOLD_LENGTH`,
/// eight cycles of the 32768 Hz time base).
const UIP_HOLD_NS: i128 = 8 * NS_PER_SEC / 32768;
/// Bound on offsets set from the host, so time arithmetic cannot overflow.
const MAX_OFFSET_SECS: i64 = 1 << 40;

const INDEX_OFFSET: u64 = 0;
const DATA_OFFSET: u64 = 1;

const SECONDS: usize = 0x00;
const SECONDS_ALARM: usize = 0x01;
const MINUTES: usize = 0x02;
const MINUTES_ALARM: usize = 0x03;
const HOURS: usize = 0x04;
const HOURS_ALARM: usize = 0x05;
const DAY_OF_WEEK: usize = 0x06;
const DAY_OF_MONTH: usize = 0x07;
const MONTH: usize = 0x08;
const YEAR: usize = 0x09;
const REG_A: usize = 0x0a;
const REG_B: usize = 0x0b;
const REG_C: usize = 0x0c;
const REG_D: usize = 0x0d;
const SHUTDOWN_STATUS: usize = 0x0f;
const EQUIPMENT: usize = 0x14;
/// The century byte QEMU keeps (and the FADT's CENTURY field names).
const CENTURY: usize = 0x32;
/// IBM PS/2 machines kept the century at 0x37; QEMU redirects it to 0x32.
const IBM_PS2_CENTURY: usize = 0x37;

const REG_A_UIP: u8 = 0x80;
const REG_B_SET: u8 = 0x80;
const REG_B_PIE: u8 = 0x40;
const REG_B_AIE: u8 = 0x20;
const REG_B_UIE: u8 = 0x10;
const REG_B_SQWE: u8 = 0x08;
const REG_B_DM: u8 = 0x04;
const REG_B_24H: u8 = 0x02;
const REG_C_IRQF: u8 = 0x80;
const REG_C_PF: u8 = 0x40;
const REG_C_AF: u8 = 0x20;
const REG_C_UF: u8 = 0x10;
/// PF/AF/UF sit at the same bit positions as PIE/AIE/UIE in register B.
const REG_C_MASK: u8 = 0x70;
const REG_D_VRT: u8 = 0x80;

/// Told the RTC_CHANGE `offset` each time the guest sets the clock.
pub type RtcChangeFn = Box<dyn FnMut(i64) + Send>;

/// The CMOS RTC and NVRAM.
pub struct Cmos {
    index: u8,
    data: [u8; 128],
    /// What the RTC runs on (`-rtc clock=`): UTC nanoseconds since the epoch.
    clock: Box<dyn Clock>,
    /// Host UTC, the reference of RTC_CHANGE; `None`: `clock` is host UTC.
    host: Option<Box<dyn Clock>>,
    /// Guest RTC time minus `clock` time.
    offset_ns: i128,
    /// The offset `-rtc base=` asked for; RTC_CHANGE is reported relative to it.
    base_offset_s: i64,
    rtc_change: Option<RtcChangeFn>,
    /// Guest time up to which register C's flags have been computed.
    flags_ns: i128,
    irq: Option<Irq>,
    slew: Slew,
}

struct Irq {
    line: EventFd,
    timer: TimerFd,
    /// Guest time the timer is armed for.
    deadline: Option<i128>,
}

impl Cmos {
    /// `mem_below_4g`/`mem_above_4g`: guest RAM in bytes on either side of the
    /// 4 GiB hole; `cpus`: vCPUs at boot; `clock`: UTC, nanoseconds since the
    /// Unix epoch ([`crate::WallClock`] outside tests).
    pub fn new(mem_below_4g: u64, mem_above_4g: u64, cpus: u8, clock: Box<dyn Clock>) -> Self {
        let mut data = [0u8; 128];
        // Power-on register values, as QEMU's rtc_realizefn: 32768 Hz time base
        // with a 1024 Hz periodic rate, 24-hour BCD, valid RAM and time.
        data[REG_A] = 0x26;
        data[REG_B] = REG_B_24H;
        data[REG_D] = REG_D_VRT;

        // Memory sizes exactly as QEMU's pc_cmos_init (hw/i386/pc.c).
        const KIB: u64 = 1024;
        const MIB: u64 = 1024 * KIB;
        let mut put16 = |at: usize, v: u64| {
            data[at] = v as u8;
            data[at + 1] = (v >> 8) as u8;
        };
        put16(0x15, (mem_below_4g / KIB).min(640));
        let ext = (mem_below_4g.saturating_sub(MIB) / KIB).min(0xffff);
        put16(0x17, ext);
        put16(0x30, ext);
        put16(
            0x34,
            (mem_below_4g.saturating_sub(16 * MIB) / (64 * KIB)).min(0xffff),
        );
        let high = mem_above_4g / (64 * KIB);
        data[0x5b] = high as u8;
        data[0x5c] = (high >> 8) as u8;
        data[0x5d] = (high >> 16) as u8;
        data[0x5f] = cpus.saturating_sub(1);
        // Equipment byte: FPU present, PS/2 mouse port (pc_cmos_init), no floppy.
        data[EQUIPMENT] = 0x06;

        let mut cmos = Cmos {
            index: 0,
            data,
            clock,
            offset_ns: 0,
            host: None,
            base_offset_s: 0,
            rtc_change: None,
            flags_ns: 0,
            irq: None,
            slew: Slew::default(),
        };
        cmos.flags_ns = cmos.guest_ns();
        cmos.latch_time();
        cmos
    }

    /// Sets the RTC to host time plus `secs` (`-rtc base=`: 0 for utc, the
    /// zone's offset for localtime, date minus now for a date). RTC_CHANGE
    /// offsets are relative to this base, as QEMU's `qemu_timedate_diff`.
    pub fn set_base_offset(&mut self, secs: i64) {
        let secs = secs.clamp(-MAX_OFFSET_SECS, MAX_OFFSET_SECS);
        self.base_offset_s = secs;
        self.offset_ns = i128::from(secs) * NS_PER_SEC;
        self.flags_ns = self.guest_ns();
        self.latch_time();
        self.rearm();
    }

    /// Guest RTC minus host time, in whole seconds (rounded down).
    pub fn rtc_offset(&self) -> i64 {
        self.offset_ns.div_euclid(NS_PER_SEC) as i64
    }

    /// The guest's RTC as seconds since the Unix epoch (what the guest would
    /// read if the clock is running).
    pub fn guest_time(&self) -> i64 {
        secs_of(self.guest_ns())
    }

    /// The RTC runs on `clock` (`-rtc clock=rt|vm`) while RTC_CHANGE
    /// offsets stay relative to `host` (host UTC), as in QEMU.
    pub fn with_host_clock(mut self, host: Box<dyn Clock>) -> Self {
        self.host = Some(host);
        self
    }

    /// Calls `report` each time the guest sets the clock, with the new RTC
    /// time minus the time the configured base implies now (host UTC plus
    /// the `-rtc base=` offset), in seconds: QEMU's RTC_CHANGE `offset`.
    /// It runs on the vCPU thread that wrote the register, with the device
    /// locked: it must only pass the value on.
    pub fn on_rtc_change(&mut self, report: RtcChangeFn) {
        self.rtc_change = Some(report);
    }

    /// `-rtc driftfix=slew`: reinject periodic interrupts the guest missed.
    pub fn set_lost_tick_slew(&mut self, on: bool) {
        self.slew = Slew::new(on);
    }

    /// Periodic interrupts owed to the guest under `driftfix=slew`.
    pub fn lost_ticks(&self) -> u32 {
        self.slew.lost_ticks()
    }

    /// QMP `rtc-reset-reinjection`: forget the periodic interrupts owed.
    pub fn reset_reinjection(&mut self) {
        self.slew.reset_reinjection();
        self.rearm();
    }

    /// A CMOS byte as the guest would find it in storage (no clock refresh).
    pub fn cmos_byte(&self, index: u8) -> u8 {
        self.data[usize::from(index & 0x7f)]
    }

    /// Sets a CMOS byte, for VMM-provided NVRAM contents (QEMU's
    /// `mc146818rtc_set_cmos_data`). Index masked to 0..=0x7f.
    pub fn set_cmos_byte(&mut self, index: u8, value: u8) {
        self.data[usize::from(index & 0x7f)] = value;
    }

    /// Connects IRQ 8: `line` is written once per interrupt edge (ISA IRQ 8
    /// is edge-triggered; register it as an irqfd for GSI 8). The VMM must
    /// then watch [`Cmos::timer_fd`] and call [`Cmos::handle_timer`] when it
    /// becomes readable.
    pub fn enable_irq(&mut self, line: EventFd) -> io::Result<()> {
        let timer = TimerFd::new()?;
        // The VMM reads it only when readable, but the device may re-arm it
        // in between: never let that read block.
        // SAFETY: fcntl on a descriptor we own, with no pointers involved.
        let fd = timer.as_raw_fd();
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        // SAFETY: as above.
        if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
            return Err(io::Error::last_os_error());
        }
        self.irq = Some(Irq {
            line,
            timer,
            deadline: None,
        });
        self.rearm();
        Ok(())
    }

    /// The timer to watch for readability once [`Cmos::enable_irq`] was called.
    pub fn timer_fd(&self) -> Option<RawFd> {
        self.irq.as_ref().map(|i| i.timer.as_raw_fd())
    }

    /// Called when [`Cmos::timer_fd`] is readable: updates register C and
    /// raises IRQ 8 if an enabled flag came up, then re-arms.
    pub fn handle_timer(&mut self) {
        if let Some(irq) = &mut self.irq {
            let _ = irq.timer.wait(); // EAGAIN if re-armed meanwhile: fine
            irq.deadline = None;
        }
        self.catch_up();
        self.rearm();
    }

    /// Machine reset (QEMU `rtc_reset_enter`): interrupt enables and flags
    /// cleared, shutdown status cleared unless it records an S3 suspend
    /// (0xfe). The clock and the NVRAM keep their contents.
    pub fn reset(&mut self) {
        if self.data[SHUTDOWN_STATUS] != 0xfe {
            self.data[SHUTDOWN_STATUS] = 0;
        }
        self.data[REG_B] &= !(REG_B_PIE | REG_B_AIE | REG_B_SQWE);
        self.data[REG_C] = 0;
        self.slew.reset();
        self.flags_ns = self.guest_ns();
        self.rearm();
    }

    fn guest_ns(&self) -> i128 {
        self.clock.now_ns() + self.offset_ns
    }

    fn binary(&self) -> bool {
        self.data[REG_B] & REG_B_DM != 0
    }

    /// The time registers follow the clock (QEMU `rtc_running`).
    fn running(&self) -> bool {
        self.data[REG_B] & REG_B_SET == 0 && self.data[REG_A] & 0x70 <= 0x20
    }

    /// Update cycles happen (and set flags) unless the dividers are held in
    /// reset; SET stops only the register updates (QEMU `check_update_timer`).
    fn ticking(&self) -> bool {
        self.data[REG_A] & 0x60 != 0x60
    }

    fn to_reg(&self, v: i64) -> u8 {
        let v = v.rem_euclid(100) as u8;
        if self.binary() {
            v
        } else {
            ((v / 10) << 4) | (v % 10)
        }
    }

    /// QEMU `rtc_from_bcd`: -1 for the "don't care" values 0xc0-0xff.
    fn reg_value(&self, r: u8) -> i64 {
        if r & 0xc0 == 0xc0 {
            -1
        } else if self.binary() {
            i64::from(r)
        } else {
            i64::from(r >> 4) * 10 + i64::from(r & 0x0f)
        }
    }

    /// Copies the clock into the time registers (QEMU `rtc_update_time`).
    fn latch_time(&mut self) {
        if self.data[REG_B] & REG_B_SET != 0 {
            return;
        }
        let secs = secs_of(self.guest_ns());
        let days = secs.div_euclid(SECS_PER_DAY);
        let sod = secs.rem_euclid(SECS_PER_DAY);
        let (year, month, day) = civil_from_days(days);
        let hour = sod / 3600;
        self.data[SECONDS] = self.to_reg(sod % 60);
        self.data[MINUTES] = self.to_reg(sod / 60 % 60);
        self.data[HOURS] = if self.data[REG_B] & REG_B_24H != 0 {
            self.to_reg(hour)
        } else {
            let h12 = if hour % 12 == 0 { 12 } else { hour % 12 };
            self.to_reg(h12) | if hour >= 12 { 0x80 } else { 0 }
        };
        // 1970-01-01 was a Thursday; the register counts Sunday as 1.
        self.data[DAY_OF_WEEK] = self.to_reg((days + 4).rem_euclid(7) + 1);
        self.data[DAY_OF_MONTH] = self.to_reg(day);
        self.data[MONTH] = self.to_reg(month);
        self.data[YEAR] = self.to_reg(year.rem_euclid(100));
        self.data[CENTURY] = self.to_reg(year.div_euclid(100));
    }

    /// The time registers as seconds since the epoch, computed as QEMU's
    /// `rtc_get_time` + `mktimegm` do, garbage in included (no normalisation
    /// beyond what the formula does; the day of week is ignored).
    fn regs_time(&self) -> i64 {
        let sec = self.reg_value(self.data[SECONDS]);
        let min = self.reg_value(self.data[MINUTES]);
        let mut hour = self.reg_value(self.data[HOURS] & 0x7f);
        if self.data[REG_B] & REG_B_24H == 0 {
            hour %= 12;
            if self.data[HOURS] & 0x80 != 0 {
                hour += 12;
            }
        }
        let mday = self.reg_value(self.data[DAY_OF_MONTH]);
        let mut m = self.reg_value(self.data[MONTH]);
        let mut y = self.reg_value(self.data[YEAR]) + self.reg_value(self.data[CENTURY]) * 100;
        // QEMU util/cutils.c mktimegm.
        if m < 3 {
            m += 12;
            y -= 1;
        }
        let days = mday + (153 * m - 457) / 5 + 365 * y + y / 4 - y / 100 + y / 400 - 719_469;
        days * SECS_PER_DAY + 3600 * hour + 60 * min + sec
    }

    /// Moves the clock to the time registers, `phase_ns` into that second
    /// (QEMU `rtc_set_time`), and records the RTC_CHANGE offset.
    fn set_time(&mut self, phase_ns: i128) {
        let secs = self.regs_time();
        let now = self.clock.now_ns();
        self.offset_ns = i128::from(secs) * NS_PER_SEC + phase_ns - now;
        let host_now = self.host.as_ref().map_or(now, |h| h.now_ns());
        let offset = secs.saturating_sub(secs_of(host_now).saturating_add(self.base_offset_s));
        if let Some(report) = &mut self.rtc_change {
            report(offset);
        }
        self.flags_ns = self.guest_ns();
    }

    fn phase(&self) -> i128 {
        self.guest_ns().rem_euclid(NS_PER_SEC)
    }

    fn update_in_progress(&self) -> bool {
        self.running() && self.phase() >= NS_PER_SEC - UIP_HOLD_NS
    }

    /// Periodic interrupt period in 32768 Hz cycles, 0 when off (QEMU
    /// `rtc_periodic_clock_ticks`/`periodic_period_to_clock`: rates 1 and 2
    /// mean the same as 8 and 9).
    fn period_ticks(&self) -> i128 {
        if self.data[REG_B] & REG_B_PIE == 0 {
            return 0;
        }
        match self.data[REG_A] & 0x0f {
            0 => 0,
            code @ 1..=2 => 1 << (code + 6),
            code => 1 << (code - 1),
        }
    }

    /// Seconds after second `from` (1..=86400) until the alarm registers match
    /// the clock; `None` if they never can (an out-of-range value).
    fn secs_to_alarm(&self, from: i64) -> Option<i64> {
        let field = |r: u8, max: i64| match self.reg_value(r) {
            -1 => Some(None),
            v if (0..=max).contains(&v) => Some(Some(v)),
            _ => None,
        };
        let s = field(self.data[SECONDS_ALARM], 59)?;
        let m = field(self.data[MINUTES_ALARM], 59)?;
        let raw = self.data[HOURS_ALARM];
        let h = if raw & 0xc0 == 0xc0 {
            None
        } else if self.data[REG_B] & REG_B_24H != 0 {
            Some(field(raw, 23)??)
        } else {
            let h = field(raw & 0x7f, 12)??;
            Some(h % 12 + if raw & 0x80 != 0 { 12 } else { 0 })
        };
        // Walk the minutes of the next day from the one holding `from + 1`.
        let start = from + 1;
        let first_minute = start.div_euclid(60);
        for k in 0..=1440 {
            let minute = first_minute + k;
            let mod_day = minute.rem_euclid(1440);
            if h.is_some_and(|h| h != mod_day / 60) || m.is_some_and(|m| m != mod_day % 60) {
                continue;
            }
            let earliest = if k == 0 { start.rem_euclid(60) } else { 0 };
            let sec = match s {
                None => earliest,
                Some(s) if s >= earliest => s,
                Some(_) => continue,
            };
            return Some(minute * 60 + sec - from);
        }
        None
    }

    /// Brings register C up to the current time (QEMU does this from its
    /// update and periodic timers; here it happens whenever C might be seen).
    fn catch_up(&mut self) {
        let now = self.guest_ns();
        let prev = std::mem::replace(&mut self.flags_ns, now);
        if now <= prev || !self.ticking() {
            return;
        }
        let mut flags = 0;
        let (prev_s, now_s) = (secs_of(prev), secs_of(now));
        if now_s > prev_s {
            flags |= REG_C_UF;
            if self
                .secs_to_alarm(prev_s)
                .is_some_and(|d| d <= now_s - prev_s)
            {
                flags |= REG_C_AF;
            }
        }
        let period = self.period_ticks();
        let line_low = self.data[REG_C] & REG_C_IRQF == 0;
        if period != 0 {
            let ticks = ticks_32k(now) / period - ticks_32k(prev) / period;
            if ticks > 0 {
                flags |= REG_C_PF;
            }
            // One edge for all of them: the first is delivered if the line
            // was low, every other one is lost.
            self.slew.ticks(ticks, line_low, now, period);
        }
        let fresh = flags & !self.data[REG_C];
        self.data[REG_C] |= flags;
        if fresh & self.data[REG_B] & REG_C_MASK != 0 {
            self.raise_irq();
        }
        if self.slew.deadline().is_some_and(|t| now >= t) {
            // QEMU rtc_coalesced_timer: PF and IRQF, and an edge that
            // reaches the guest only if the line was low.
            let delivered = self.data[REG_C] & REG_C_IRQF == 0;
            self.raise_irq();
            self.data[REG_C] |= REG_C_PF;
            self.slew.timer_fired(delivered, now, period);
        }
    }

    /// Register C was read (and cleared): under slew an owed periodic
    /// interrupt comes back at once (QEMU `cmos_ioport_read`).
    fn acked(&mut self) {
        if self.slew.on_ack(self.data[REG_B] & REG_B_PIE != 0) {
            self.data[REG_C] |= REG_C_PF;
            self.raise_irq();
        }
    }

    fn raise_irq(&mut self) {
        if self.data[REG_C] & REG_C_IRQF == 0 {
            self.data[REG_C] |= REG_C_IRQF;
            if let Some(irq) = &self.irq {
                if let Err(e) = irq.line.write(1) {
                    log::warn!("cmos: cannot raise IRQ 8: {e}");
                }
            }
        }
    }

    /// Guest time of the next event that would raise IRQ 8: a flag whose
    /// enable is set and which is not already pending, or a reinjection. None while IRQF is set
    /// (no new edge until the guest reads C) or the dividers are in reset.
    fn next_irq_deadline(&self) -> Option<i128> {
        let wanted = self.data[REG_B] & REG_C_MASK & !self.data[REG_C];
        if self.data[REG_C] & REG_C_IRQF != 0 || !self.ticking() {
            return None;
        }
        let now = self.guest_ns();
        let next_second = |secs: i64| i128::from(secs_of(now) + secs) * NS_PER_SEC;
        let mut deadline: Option<i128> = None;
        let mut consider = |t: i128| deadline = Some(deadline.map_or(t, |d| d.min(t)));
        if wanted & REG_C_UF != 0 {
            consider(next_second(1));
        }
        if wanted & REG_C_AF != 0 {
            if let Some(d) = self.secs_to_alarm(secs_of(now)) {
                consider(next_second(d));
            }
        }
        let period = self.period_ticks();
        if wanted & REG_C_PF != 0 && period != 0 {
            let tick = (ticks_32k(now) / period + 1) * period;
            // First nanosecond at which ticks_32k reaches `tick`.
            consider((tick * NS_PER_SEC + 32767).div_euclid(32768));
        }
        if let Some(t) = self.slew.deadline() {
            consider(t.max(now));
        }
        deadline
    }

    fn rearm(&mut self) {
        if self.irq.is_none() {
            return;
        }
        let deadline = self.next_irq_deadline();
        let now = self.guest_ns();
        let Some(irq) = &mut self.irq else { return };
        if deadline == irq.deadline {
            return;
        }
        irq.deadline = deadline;
        let r = match deadline {
            Some(t) => irq.timer.reset(
                Duration::from_nanos((t - now).clamp(1, i128::from(u64::MAX)) as u64),
                None,
            ),
            None => irq.timer.clear(),
        };
        if let Err(e) = r {
            log::warn!("cmos: cannot arm the RTC timer: {e}");
        }
    }

    fn read_data(&mut self) -> u8 {
        let mut idx = usize::from(self.index);
        match idx {
            IBM_PS2_CENTURY | CENTURY | SECONDS | MINUTES | HOURS | DAY_OF_WEEK | DAY_OF_MONTH
            | MONTH | YEAR => {
                if idx == IBM_PS2_CENTURY {
                    self.index = CENTURY as u8;
                    idx = CENTURY;
                }
                if self.running() {
                    self.latch_time();
                }
                self.data[idx]
            }
            REG_A => {
                self.data[REG_A]
                    | if self.update_in_progress() {
                        REG_A_UIP
                    } else {
                        0
                    }
            }
            REG_C => {
                let v = std::mem::take(&mut self.data[REG_C]);
                self.acked();
                v
            }
            _ => self.data[idx],
        }
    }

    fn write_data(&mut self, v: u8) {
        let mut idx = usize::from(self.index);
        match idx {
            SECONDS_ALARM | MINUTES_ALARM | HOURS_ALARM => self.data[idx] = v,
            IBM_PS2_CENTURY | CENTURY | SECONDS | MINUTES | HOURS | DAY_OF_WEEK | DAY_OF_MONTH
            | MONTH | YEAR => {
                if idx == IBM_PS2_CENTURY {
                    self.index = CENTURY as u8;
                    idx = CENTURY;
                }
                if self.running() {
                    // The other registers must hold the current time, not
                    // whatever was last latched.
                    self.latch_time();
                    self.data[idx] = v;
                    let phase = self.phase();
                    self.set_time(phase);
                } else {
                    self.data[idx] = v;
                }
            }
            REG_A => {
                let old = self.data[REG_A];
                if v & 0x60 == 0x60 {
                    if self.running() {
                        self.latch_time();
                    }
                } else if old & 0x60 == 0x60
                    && v & 0x70 <= 0x20
                    && self.data[REG_B] & REG_B_SET == 0
                {
                    // Leaving divider reset: "the first update cycle begins
                    // one-half second later" (MC146818 datasheet; QEMU).
                    self.set_time(NS_PER_SEC / 2);
                }
                self.data[REG_A] = v & !REG_A_UIP;
            }
            REG_B => {
                let mut v = v;
                if v & REG_B_SET != 0 {
                    if self.running() {
                        self.latch_time();
                    }
                    // Setting SET clears UIE (datasheet; QEMU).
                    v &= !REG_B_UIE;
                } else if self.data[REG_B] & REG_B_SET != 0 && self.data[REG_A] & 0x70 <= 0x20 {
                    // Leaving SET: the registers, read in the old format,
                    // become the time; the fraction of the second carries on.
                    let phase = self.phase();
                    self.set_time(phase);
                }
                // A flag already pending whose interrupt is now enabled
                // interrupts at once; otherwise IRQF drops.
                if v & self.data[REG_C] & REG_C_MASK != 0 {
                    self.raise_irq();
                } else {
                    self.data[REG_C] &= !REG_C_IRQF;
                }
                self.data[REG_B] = v;
            }
            REG_C | REG_D => {}
            _ => self.data[idx] = v,
        }
    }
}

impl BusDevice for Cmos {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        read_bytewise(offset, data, |o| match o {
            // The index register is write-only; QEMU reads it as 0xff.
            DATA_OFFSET => {
                self.catch_up();
                let v = self.read_data();
                self.rearm();
                v
            }
            _ => 0xff,
        });
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        write_bytewise(offset, data, |o, v| match o {
            // Bit 7 masks NMIs on PC hardware; like QEMU, NMIs are not gated here.
            INDEX_OFFSET => self.index = v & 0x7f,
            DATA_OFFSET => {
                self.catch_up();
                let old_period = self.period_ticks();
                self.write_data(v);
                let period = self.period_ticks();
                if period != old_period {
                    let now = self.guest_ns();
                    self.slew.period_changed(old_period, period, now);
                }
                self.rearm();
            }
            _ => {}
        });
    }
}

fn secs_of(ns: i128) -> i64 {
    ns.div_euclid(NS_PER_SEC)
        .clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

fn ticks_32k(ns: i128) -> i128 {
    (ns * 32768).div_euclid(NS_PER_SEC)
}

#[cfg(test)]
mod tests;
