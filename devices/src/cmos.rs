//! MC146818 real-time clock and 128 bytes of CMOS NVRAM: index port 0x70,
//! data port 0x71 (inserted at 0x70 with length 2), IRQ 8.
//!
//! The clock is the host clock plus an offset, like QEMU's hw/rtc/mc146818rtc.c
//! (`get_guest_rtc_ns`): nothing ticks in the background. The time registers
//! are regenerated from the clock on every read while the clock runs, in the
//! format register B selects (BCD or binary, 12 or 24 hour); they are frozen
//! while SET is set or the dividers are held in reset. When the guest sets the
//! time, the offset changes and [`Cmos::take_rtc_change`] yields the value of
//! QEMU's RTC_CHANGE event.
//!
//! Register C's flags (UF each second, AF on alarm match, PF each period while
//! PIE is set) are computed when they are looked at, from the time elapsed since
//! last looked. IRQ 8 is delivered only if the VMM calls [`Cmos::enable_irq`]
//! and serves [`Cmos::timer_fd`]: the device arms that timer for the next flag
//! whose interrupt is enabled. The periodic interrupt has no lost-tick
//! compensation (QEMU's default `lost_tick_policy=discard`), so QMP
//! `rtc-reset-reinjection` has nothing to reset.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::timerfd::TimerFd;

use crate::bus::BusDevice;
use crate::{read_bytewise, write_bytewise, Clock};

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

/// The CMOS RTC and NVRAM.
pub struct Cmos {
    index: u8,
    data: [u8; 128],
    clock: Box<dyn Clock>,
    /// Guest RTC time minus host clock time.
    offset_ns: i128,
    /// The offset `-rtc base=` asked for; RTC_CHANGE is reported relative to it.
    base_offset_s: i64,
    rtc_change: Option<i64>,
    /// Guest time up to which register C's flags have been computed.
    flags_ns: i128,
    irq: Option<Irq>,
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
            base_offset_s: 0,
            rtc_change: None,
            flags_ns: 0,
            irq: None,
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
        self.rtc_change = None;
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

    /// Once after each time the guest set the clock: the new RTC time minus
    /// the time the configured base implies now, in seconds, which is the
    /// `offset` of QEMU's RTC_CHANGE event. Several sets in a row yield the last.
    pub fn take_rtc_change(&mut self) -> Option<i64> {
        self.rtc_change.take()
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
        self.rtc_change = Some(secs - (secs_of(now) + self.base_offset_s));
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
        if period != 0 && ticks_32k(now) / period > ticks_32k(prev) / period {
            flags |= REG_C_PF;
        }
        let fresh = flags & !self.data[REG_C];
        self.data[REG_C] |= flags;
        if fresh & self.data[REG_B] & REG_C_MASK != 0 {
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
    /// enable is set and which is not already pending. None while IRQF is set
    /// (no new edge until the guest reads C) or the dividers are in reset.
    fn next_irq_deadline(&self) -> Option<i128> {
        let wanted = self.data[REG_B] & REG_C_MASK & !self.data[REG_C];
        if wanted == 0 || self.data[REG_C] & REG_C_IRQF != 0 || !self.ticking() {
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
            REG_C => std::mem::take(&mut self.data[REG_C]),
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
                self.write_data(v);
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

/// Proleptic Gregorian (year, month 1-12, day 1-31) of a day count from
/// 1970-01-01 (H. Hinnant, "chrono-Compatible Low-Level Date Algorithms").
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::hammer;
    use crate::ManualClock;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;
    /// 2024-02-29 12:34:56 UTC, a Thursday.
    const LEAP_DAY: i64 = 1_709_210_096;
    const SEC: i64 = 1_000_000_000;

    fn cmos_at(secs: i64, frac_ns: i64) -> (Cmos, ManualClock) {
        let clock = ManualClock::new(secs * SEC + frac_ns);
        (Cmos::new(128 * MIB, 0, 1, Box::new(clock.clone())), clock)
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
        let (mut c, clock) = cmos_at(LEAP_DAY, 250_000_000);
        assert_eq!(c.take_rtc_change(), None);
        wr(&mut c, 0x0b, REG_B_SET | REG_B_24H);
        // 2030-01-02 03:04:05
        set_time_bcd(&mut c, [0x05, 0x04, 0x03, 0x04, 0x02, 0x01, 0x30, 0x20]);
        clock.advance_ns(3 * SEC);
        assert_eq!(rd(&mut c, 0x00), 0x05, "frozen while SET");
        assert_eq!(
            c.take_rtc_change(),
            None,
            "nothing happens until SET clears"
        );
        wr(&mut c, 0x0b, REG_B_24H);
        let new_time = 1_893_553_445;
        assert_eq!(c.take_rtc_change(), Some(new_time - (LEAP_DAY + 3)));
        assert_eq!(c.take_rtc_change(), None, "taken once");
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
        let (mut c, _) = cmos_at(LEAP_DAY, 0);
        wr(&mut c, 0x09, 0x25); // year 2025, same day and time
        let delta = c.take_rtc_change().unwrap();
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
        let (mut c, _) = cmos_at(LEAP_DAY, 0);
        // Binary, 12-hour: 11 PM on 2024-02-29.
        wr(&mut c, 0x0b, REG_B_SET | REG_B_DM);
        set_time_bcd(&mut c, [0, 0, 0x80 | 11, 5, 29, 2, 24, 20]);
        wr(&mut c, 0x0b, REG_B_DM);
        assert_eq!(
            c.take_rtc_change(),
            Some(1_709_164_800 + 23 * 3600 - LEAP_DAY)
        );
    }

    #[test]
    fn base_offset_shifts_the_clock_and_rtc_change_is_relative_to_it() {
        let (mut c, _) = cmos_at(LEAP_DAY, 0);
        c.set_base_offset(3600);
        assert_eq!(rd(&mut c, 0x04), 0x13);
        assert_eq!(c.rtc_offset(), 3600);
        wr(&mut c, 0x02, 0x34); // rewrite the same minute: no change from the base
        assert_eq!(c.take_rtc_change(), Some(0));
        c.set_base_offset(i64::MIN);
        let _ = time_regs(&mut c);
        c.set_base_offset(i64::MAX);
        let _ = time_regs(&mut c);
    }

    #[test]
    fn divider_reset_freezes_and_restarts_half_a_second_later() {
        let (mut c, clock) = cmos_at(LEAP_DAY, 0);
        wr(&mut c, 0x0a, 0x76);
        clock.advance_ns(10 * SEC);
        assert_eq!(rd(&mut c, 0x00), 0x56, "stopped");
        assert_eq!(rd(&mut c, 0x0a), 0x76, "no UIP while stopped");
        wr(&mut c, 0x0a, 0x26);
        assert_eq!(c.take_rtc_change(), Some(-10));
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
        let (mut c, _) = cmos_at(LEAP_DAY, 0);
        for v in [0x00, 0x99, 0xaa, 0xbf, 0xc0, 0xff] {
            for fmt in [0, REG_B_DM, REG_B_24H, REG_B_24H | REG_B_DM] {
                wr(&mut c, 0x0b, REG_B_SET | fmt);
                set_time_bcd(&mut c, [v; 8]);
                wr(&mut c, 0x0b, fmt);
                let _ = time_regs(&mut c);
                assert!(c.take_rtc_change().is_some());
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
}
