/* ferrovm test guest: time from the ACPI PM timer (3.579545 MHz), TSC fallback. */
#include "tg.h"

#define PMTMR_HZ 3579545ull

static u16 pmt_port;
static u32 pmt_mask, pmt_last;
static u64 pmt_acc;             /* accumulated PM timer ticks (wrap handled) */
static u64 tsc_freq, tsc_start;

static u64 pm_ticks(void)
{
    u32 v = inl(pmt_port) & pmt_mask;
    pmt_acc += (v - pmt_last) & pmt_mask;
    pmt_last = v;
    return pmt_acc;
}

static void cpuid(u32 leaf, u32 *a, u32 *b, u32 *c, u32 *d)
{
    __asm__ volatile("cpuid" : "=a"(*a), "=b"(*b), "=c"(*c), "=d"(*d) : "a"(leaf), "c"(0));
}

/* TSC frequency from CPUID when there is no PM timer to calibrate against. */
static u64 tsc_hz_cpuid(void)
{
    u32 a, b, c, d, max;
    cpuid(0, &max, &b, &c, &d);
    if (max >= 0x15) {
        cpuid(0x15, &a, &b, &c, &d);
        if (a && b && c)
            return (u64)c * b / a;
    }
    if (max >= 0x16) {
        cpuid(0x16, &a, &b, &c, &d);
        if (a)
            return (u64)a * 1000000;
    }
    cpuid(0x40000000, &a, &b, &c, &d);
    if (a >= 0x40000010) {
        cpuid(0x40000010, &a, &b, &c, &d);
        if (a)
            return (u64)a * 1000;
    }
    return 0;
}

void clock_init(u16 port, int tmr_32bit)
{
    tsc_start = rdtsc();
    if (port) {
        pmt_port = port;
        pmt_mask = tmr_32bit ? 0xffffffffu : 0xffffffu;
        pmt_last = inl(port) & pmt_mask;
        pmt_acc = 0;
        /* The timer must move; give it ~1e9 TSC cycles. */
        u64 t0 = rdtsc();
        while ((inl(port) & pmt_mask) == pmt_last) {
            if (rdtsc() - t0 > 1000000000ull) {
                printf_("# pm timer at port 0x%x does not advance; using the TSC\n", port);
                pmt_port = 0;
                break;
            }
        }
    }
    if (pmt_port) {
        /* Calibrate the TSC over 20 ms of PM timer. */
        u64 p0 = pm_ticks(), t0 = rdtsc(), p1, t1;
        do {
            p1 = pm_ticks();
            t1 = rdtsc();
        } while (p1 - p0 < PMTMR_HZ / 50);
        tsc_freq = (t1 - t0) * PMTMR_HZ / (p1 - p0);
    } else {
        tsc_freq = tsc_hz_cpuid();
        if (!tsc_freq) {
            tsc_freq = 2000000000ull;
            puts_("# no pm timer and no cpuid tsc frequency: assuming 2 GHz\n");
        }
    }
}

int clock_has_pmtmr(void) { return pmt_port != 0; }
u64 tsc_hz(void) { return tsc_freq; }

static u64 scale(u64 v, u64 mul, u64 div)
{
    return (v / div) * mul + (v % div) * mul / div;
}

u64 clock_us(void)
{
    if (pmt_port)
        return scale(pm_ticks(), 1000000, PMTMR_HZ);
    return scale(rdtsc() - tsc_start, 1000000, tsc_freq);
}

void delay_us(u64 us)
{
    u64 end = clock_us() + us;
    while (clock_us() < end)
        cpu_relax();
}

