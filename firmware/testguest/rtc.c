/* ferrovm test guest: plan=rtc-set and plan=rtc-irq, the MC146818 RTC at
 * ports 0x70/0x71 and its interrupt on ISA IRQ 8 (QEMU hw/rtc/mc146818rtc.c).
 *
 * Every set goes through the divider reset: register A = 0x76 stops the
 * clock, the time registers are written, and A = 0x26 restarts it; the first
 * update then comes half a second later (MC146818 datasheet; QEMU sets the
 * phase to 500 ms), so what is read back right after a set is exact, and
 * each set is one RTC_CHANGE event on the monitor.
 *
 * rtc-set: 2030-06-15 12:34:56 in BCD 24-hour, then at once 2031-01-02
 *   01:02:03 PM in binary 12-hour (two RTC_CHANGE within QEMU's one-second
 *   rate limit), then prints `rtc <unix seconds>` each time the RTC's second
 *   changes, forever (the host compares those with its own clock across
 *   stop/cont).
 * rtc-irq: update-ended interrupt (BCD 24h), alarm (binary 12h, after a set
 *   to 01:23:50 PM, alarm at 01:23:52 PM), periodic interrupt (64 Hz); each
 *   prints register C as the interrupt handler found it, then powers off. */
#include "tg.h"

#define RTC_A 0x0a
#define RTC_B 0x0b
#define RTC_C 0x0c
#define B_SET 0x80
#define B_PIE 0x40
#define B_AIE 0x20
#define B_UIE 0x10
#define B_DM 0x04               /* binary */
#define B_24H 0x02
#define C_IRQF 0x80
#define C_PF 0x40
#define C_AF 0x20
#define C_UF 0x10
#define A_RUN 0x26              /* 32768 Hz time base, 1024 Hz periodic rate */
#define A_HOLD 0x76             /* dividers held in reset */
#define CENTURY 0x32
#define RTC_IRQ_SLOT 3          /* vector IRQ_BASE + 3 */
#define IOAPIC_BASE 0xfec00000ul

struct tm_ {
    unsigned year, mon, day, hour, min, sec, wday;
};

static u8 enc(unsigned v, int binary) { return binary ? (u8)v : (u8)((v / 10) << 4 | v % 10); }
static unsigned dec(u8 v, int binary) { return binary ? v : (v >> 4) * 10u + (v & 0x0f); }

static i64 epoch_of(const struct tm_ *t)
{
    return days_from_civil(t->year, t->mon, t->day) * 86400 + t->hour * 3600 + t->min * 60 + t->sec;
}

/* The hour register's value for a 0-23 hour in the format `b` selects. */
static u8 hour_reg(unsigned h, u8 b)
{
    int bin = !!(b & B_DM);
    if (b & B_24H)
        return enc(h, bin);
    unsigned h12 = h % 12 ? h % 12 : 12;
    return (u8)(enc(h12, bin) | (h >= 12 ? 0x80 : 0));
}

/* Reads the clock (waiting out an update in progress), in register B's format. */
static void rtc_get(struct tm_ *t, u8 raw[8])
{
    static const u8 idx[8] = {0x00, 0x02, 0x04, 0x06, 0x07, 0x08, 0x09, CENTURY};
    u64 end = clock_us() + 1000000;
    while ((cmos_read(RTC_A) & 0x80) && clock_us() < end)
        cpu_relax();
    for (int i = 0; i < 8; i++)
        raw[i] = cmos_read(idx[i]);
    u8 b = cmos_read(RTC_B);
    int bin = !!(b & B_DM);
    t->sec = dec(raw[0], bin);
    t->min = dec(raw[1], bin);
    if (b & B_24H)
        t->hour = dec(raw[2], bin);
    else
        t->hour = dec(raw[2] & 0x7f, bin) % 12 + (raw[2] & 0x80 ? 12 : 0);
    t->wday = dec(raw[3], bin);
    t->day = dec(raw[4], bin);
    t->mon = dec(raw[5], bin);
    t->year = dec(raw[7], bin) * 100 + dec(raw[6], bin);
}

/* Sets the clock to `t` in format `b` (B_DM / B_24H) through the divider
 * reset; `alarm` (sec, min, hour registers, already encoded) is written
 * while the clock stands, and `enable` ORed into B before it restarts.
 * The day of the week is written wrong on purpose: the RTC recomputes it. */
static void rtc_set(const struct tm_ *t, u8 b, const u8 *alarm, u8 enable)
{
    int bin = !!(b & B_DM);
    cmos_write(RTC_A, A_HOLD);
    cmos_write(RTC_B, B_SET | b);
    cmos_write(0x00, enc(t->sec, bin));
    cmos_write(0x02, enc(t->min, bin));
    cmos_write(0x04, hour_reg(t->hour, b));
    cmos_write(0x06, enc(1, bin));
    cmos_write(0x07, enc(t->day, bin));
    cmos_write(0x08, enc(t->mon, bin));
    cmos_write(0x09, enc(t->year % 100, bin));
    cmos_write(CENTURY, enc(t->year / 100, bin));
    cmos_write(RTC_B, b);
    if (alarm) {
        cmos_write(0x01, alarm[0]);
        cmos_write(0x03, alarm[1]);
        cmos_write(0x05, alarm[2]);
    }
    (void)cmos_read(RTC_C);
    cmos_write(RTC_B, b | enable);
    cmos_write(RTC_A, A_RUN);
}

static const char *fmt_name(u8 b)
{
    static const char *n[4] = {"bcd 12h", "bcd 24h", "binary 12h", "binary 24h"};
    return n[(b & B_DM ? 2 : 0) | (b & B_24H ? 1 : 0)];
}

/* Sets `want` in format `b` and reads it back at once (within the half
 * second before the first update). */
static void set_and_check(const struct tm_ *want, u8 b)
{
    struct tm_ got;
    u8 raw[8];
    rtc_set(want, b, 0, 0);
    rtc_get(&got, raw);
    int ok = got.year == want->year && got.mon == want->mon && got.day == want->day && got.hour == want->hour &&
             got.min == want->min && got.sec == want->sec && cmos_read(RTC_B) == b;
    tap(ok, "rtc set", "%s %04u-%02u-%02u %02u:%02u:%02u wday %u regs %02x %02x %02x %02x %02x %02x %02x %02x",
        fmt_name(b), got.year, got.mon, got.day, got.hour, got.min, got.sec, got.wday, raw[0], raw[1], raw[2],
        raw[3], raw[4], raw[5], raw[6], raw[7]);
}

static void __attribute__((noreturn)) plan_set(void)
{
    static const struct tm_ first = {2030, 6, 15, 12, 34, 56, 0};
    static const struct tm_ second = {2031, 1, 2, 13, 2, 3, 0};
    set_and_check(&first, B_24H);
    set_and_check(&second, B_DM);
    puts_("rtc-set done\n");
    /* The RTC stays in binary 12-hour mode: each tick decodes that. */
    struct tm_ t;
    u8 raw[8];
    rtc_get(&t, raw);
    unsigned last = t.sec;
    for (;;) {
        delay_us(2000);
        rtc_get(&t, raw);
        if (t.sec != last) {
            last = t.sec;
            printf_("rtc %ld\n", epoch_of(&t));
        }
    }
}

static void ioapic_write(u32 reg, u32 v)
{
    mmio_write32(IOAPIC_BASE, reg);
    mmio_write32(IOAPIC_BASE + 0x10, v);
}

/* Waits up to `timeout_us` for IRQ 8; returns register C as read then (0
 * if no interrupt came). */
static u8 wait_irq8(u64 timeout_us)
{
    u64 before = irq_count[RTC_IRQ_SLOT];
    irq_wait_vector(RTC_IRQ_SLOT, before, timeout_us);
    if (irq_count[RTC_IRQ_SLOT] == before)
        return 0;
    return cmos_read(RTC_C);
}

static void __attribute__((noreturn)) plan_irq(void)
{
    irq_drain();
    /* ISA IRQ 8 is GSI 8 on the IOAPIC: edge, active high (no MADT override). */
    ioapic_write(0x11 + 2 * 8, lapic_id() << 24);
    ioapic_write(0x10 + 2 * 8, IRQ_BASE + RTC_IRQ_SLOT);

    /* 1: update-ended, BCD 24-hour, as the clock runs from the host. */
    cmos_write(RTC_B, B_24H);
    (void)cmos_read(RTC_C);
    cmos_write(RTC_B, B_24H | B_UIE);
    u8 c = wait_irq8(3000000);
    cmos_write(RTC_B, B_24H);
    tap(c == (C_IRQF | C_UF), "rtc update-ended irq", "bcd 24h, C=0x%02x", c);

    /* 2: alarm, binary 12-hour: 01:23:50 PM, alarm at 01:23:52 PM; the
       clock restarts half a second into :50, so the alarm comes 1.5 s later. */
    static const struct tm_ at = {2030, 6, 15, 13, 23, 50, 0};
    const u8 b = B_DM;
    const u8 alarm[3] = {52, 23, hour_reg(13, b)};
    u64 t0 = clock_us();
    rtc_set(&at, b, alarm, B_AIE);
    c = wait_irq8(4000000);
    u64 waited_ms = (clock_us() - t0) / 1000;
    struct tm_ t;
    u8 raw[8];
    rtc_get(&t, raw);
    cmos_write(RTC_B, b);
    printf_("# alarm after %lu ms\n", waited_ms);
    tap(c == (C_IRQF | C_AF | C_UF) && waited_ms >= 1000 && waited_ms < 2500, "rtc alarm irq",
        "binary 12h, C=0x%02x at hour reg 0x%02x %02u:%02u:%02u", c, raw[2], t.hour, t.min, t.sec);

    /* 3: periodic at 64 Hz (rate 10), BCD 12-hour. */
    cmos_write(RTC_B, 0);
    cmos_write(RTC_A, 0x2a);
    (void)cmos_read(RTC_C);
    cmos_write(RTC_B, B_PIE);
    c = wait_irq8(1000000);
    unsigned ticks = 0;
    u64 end = clock_us() + 500000;
    while (clock_us() < end)
        if (wait_irq8(100000) & C_PF)
            ticks++;
    cmos_write(RTC_B, 0);
    cmos_write(RTC_A, A_RUN);
    (void)cmos_read(RTC_C);
    ioapic_write(0x10 + 2 * 8, 1u << 16);
    printf_("# periodic: %u ticks in 500 ms at 64 Hz\n", ticks);
    tap((c & ~C_UF) == (C_IRQF | C_PF) && ticks >= 16 && ticks <= 40, "rtc periodic irq",
        "64 Hz, C=0x%02x without UF, 16-40 ticks in 500 ms", c & ~C_UF);

    /* The format the alarm test left is still decoded right in 12-hour BCD. */
    rtc_get(&t, raw);
    tap(t.year == 2030 && t.mon == 6 && t.day == 15 && t.hour == 13 && (raw[2] & 0x80), "rtc bcd 12h read",
        "hour reg 0x%02x", raw[2]);
    puts_("rtc-irq done\n");
    poweroff();
}

void rtc_run(int irq)
{
    if (irq)
        plan_irq();
    plan_set();
}
