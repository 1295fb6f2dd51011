/* ferrovm test guest: the checks and the plan, all at CPL3.
 *
 * Output is TAP-like on COM1; see README.md. */
#include "tg.h"

struct hvm_start_info {
    u32 magic;                  /* 0x336ec578 */
    u32 version;
    u32 flags;
    u32 nr_modules;
    u64 modlist_paddr;
    u64 cmdline_paddr;
    u64 rsdp_paddr;
    u64 memmap_paddr;           /* version >= 1 */
    u32 memmap_entries;
    u32 reserved;
};

struct hvm_memmap_entry {
    u64 addr;
    u64 size;
    u32 type;
    u32 reserved;
};

#define HVM_START_MAGIC 0x336ec578u
#define BOOT_COUNT_CMOS 0x7e

enum plan { PLAN_POWEROFF, PLAN_RESET, PLAN_IDLE, PLAN_REBOOT, PLAN_CRASH, PLAN_BLK, PLAN_NET, PLAN_NET_BLAST,
             PLAN_BALLOON, PLAN_PANIC, PLAN_CRASHLOADED, PLAN_RTC_SET, PLAN_RTC_IRQ, PLAN_WATCHDOG,
             PLAN_PANIC_PCI, PLAN_CRASHLOADED_PCI, PLAN_XHCI };
enum reset { RESET_ACPI, RESET_KBD, RESET_TRIPLE };

static struct {
    char cmdline[512];
    enum plan plan;
    unsigned reboot_n;
    enum reset reset;
    int have_host_time;
    i64 host_time;
    char plan_str[32];
    int bad_plan, bad_reset, bad_host_time, bad_blk, bad_net;
} cfg;

struct net_cfg netcfg;

static struct acpi_info acpi;
static const struct hvm_start_info *si;
static unsigned boot_count;
static int test_no, failures;

/* ------------------------------------------------------------------ */
void tap(int ok, const char *name, const char *fmt, ...)
{
    test_no++;
    if (!ok)
        failures++;
    printf_("%s %d - %s", ok ? "ok" : "not ok", test_no, name);
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        puts_(" (");
        vprintf_(fmt, ap);
        puts_(")");
        va_end(ap);
    }
    puts_("\n");
}

/* ------------------------------------------------------------------ */
static int parse_u64(const char *s, size_t n, u64 *out)
{
    u64 v = 0;
    if (!n)
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
        v = v * 10 + (u64)(s[i] - '0');
    }
    *out = v;
    return 1;
}

static int word_is(const char *s, size_t n, const char *lit)
{
    size_t l = strlen(lit);
    return n == l && !memcmp(s, lit, l);
}

static int blk_plan_word(const char *v, size_t vn)
{
    static const struct {
        const char *w;
        enum blk_plan p;
    } plans[] = {{"blk-write", BLK_WRITE}, {"blk-read", BLK_READ}, {"blk-ro", BLK_RO},
                 {"blk-reset", BLK_RESET}, {"blk-fill", BLK_FILL}, {"blk-bench", BLK_BENCH},
                 {"blk-resize", BLK_RESIZE}, {"blk-intx", BLK_INTX},
                 {"blk-fill2", BLK_FILL2}, {"blk-randw", BLK_RANDW}, {"blk-seqread", BLK_SEQREAD}};
    for (size_t i = 0; i < sizeof plans / sizeof plans[0]; i++)
        if (word_is(v, vn, plans[i].w)) {
            blkcfg.plan = plans[i].p;
            return 1;
        }
    return 0;
}

/* disk= seed= blk_start= blk_sectors= blk_mib= bench_mib= bench_secs= bench_start= */
static int blk_key(const char *w, size_t kn, const char *v, size_t vn)
{
    static const struct {
        const char *k;
        u64 *dst;
    } keys[] = {{"seed", &blkcfg.seed},          {"blk_start", &blkcfg.start},
                {"blk_sectors", &blkcfg.sectors}, {"blk_mib", &blkcfg.mib},
                {"bench_mib", &blkcfg.bench_mib}, {"bench_secs", &blkcfg.bench_secs},
                {"bench_start", &blkcfg.bench_start}, {"intx_gsi", &blkcfg.intx_gsi}};
    u64 num;
    if (word_is(w, kn, "disk")) {
        if (parse_u64(v, vn, &num))
            blkcfg.disk = num != 0;
        else
            cfg.bad_blk = 1;
        return 1;
    }
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        if (word_is(w, kn, keys[i].k)) {
            if (parse_u64(v, vn, &num))
                *keys[i].dst = num;
            else
                cfg.bad_blk = 1;
            return 1;
        }
    return 0;
}

/* ip=A.B.C.D blast_size= blast_secs= blast_dir=tx|rx net_ctrl=0|1 */
static int parse_ip(const char *s, size_t n, u32 *out)
{
    u32 ip = 0;
    size_t i = 0;
    for (int part = 0; part < 4; part++) {
        u64 v = 0;
        size_t st = i;
        while (i < n && s[i] >= '0' && s[i] <= '9' && i - st < 3)
            v = v * 10 + (u64)(s[i++] - '0');
        if (i == st || v > 255 || (part < 3 && (i >= n || s[i++] != '.')))
            return 0;
        ip = ip << 8 | (u32)v;
    }
    if (i != n)
        return 0;
    *out = ip;
    return 1;
}

static int net_key(const char *w, size_t kn, const char *v, size_t vn)
{
    u64 num;
    if (word_is(w, kn, "ip")) {
        if (!parse_ip(v, vn, &netcfg.ip))
            cfg.bad_net = 1;
    } else if (word_is(w, kn, "blast_size") || word_is(w, kn, "blast_secs")) {
        u64 *dst = word_is(w, kn, "blast_size") ? &netcfg.blast_size : &netcfg.blast_secs;
        if (parse_u64(v, vn, &num) && num)
            *dst = num;
        else
            cfg.bad_net = 1;
    } else if (word_is(w, kn, "net_ctrl")) {
        if (word_is(v, vn, "0") || word_is(v, vn, "1"))
            netcfg.ctrl = v[0] == '1';
        else
            cfg.bad_net = 1;
    } else if (word_is(w, kn, "blast_dir")) {
        if (word_is(v, vn, "tx") || word_is(v, vn, "rx"))
            netcfg.blast_rx = v[0] == 'r';
        else
            cfg.bad_net = 1;
    } else {
        return 0;
    }
    return 1;
}

static void parse_cmdline(void)
{
    netcfg.ip = 10u << 24 | 2u << 8 | 15u;      /* 10.0.2.15 */
    netcfg.blast_size = 1500;
    netcfg.blast_secs = 3;
    blkcfg.sectors = 1024;
    blkcfg.mib = 16;
    blkcfg.bench_mib = 64;
    blkcfg.bench_secs = 2;
    cfg.plan = PLAN_POWEROFF;
    cfg.reset = RESET_ACPI;
    memcpy(cfg.plan_str, "poweroff", 9);
    if (si && si->cmdline_paddr && si->cmdline_paddr < PHYS_LIMIT) {
        const char *src = phys(si->cmdline_paddr);
        size_t i;
        for (i = 0; i + 1 < sizeof cfg.cmdline && src[i]; i++)
            cfg.cmdline[i] = src[i];
        cfg.cmdline[i] = 0;
    }
    const char *p = cfg.cmdline;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == '\n')
            p++;
        const char *w = p;
        while (*p && *p != ' ' && *p != '\t' && *p != '\n')
            p++;
        size_t n = (size_t)(p - w);
        if (!n)
            continue;
        const char *eq = w;
        while (eq < p && *eq != '=')
            eq++;
        size_t kn = (size_t)(eq - w);
        const char *v = eq < p ? eq + 1 : p;
        size_t vn = (size_t)(p - v);
        u64 num;
        if (word_is(w, kn, "plan")) {
            if (word_is(v, vn, "poweroff"))
                cfg.plan = PLAN_POWEROFF;
            else if (word_is(v, vn, "reset"))
                cfg.plan = PLAN_RESET;
            else if (word_is(v, vn, "idle"))
                cfg.plan = PLAN_IDLE;
            else if (word_is(v, vn, "crash"))
                cfg.plan = PLAN_CRASH;
            else if (blk_plan_word(v, vn))
                cfg.plan = PLAN_BLK;
            else if (word_is(v, vn, "net"))
                cfg.plan = PLAN_NET;
            else if (word_is(v, vn, "net-blast"))
                cfg.plan = PLAN_NET_BLAST;
            else if (word_is(v, vn, "balloon"))
                cfg.plan = PLAN_BALLOON;
            else if (word_is(v, vn, "panic"))
                cfg.plan = PLAN_PANIC;
            else if (word_is(v, vn, "crashloaded"))
                cfg.plan = PLAN_CRASHLOADED;
            else if (word_is(v, vn, "rtc-set"))
                cfg.plan = PLAN_RTC_SET;
            else if (word_is(v, vn, "rtc-irq"))
                cfg.plan = PLAN_RTC_IRQ;
            else if (word_is(v, vn, "watchdog") || word_is(v, vn, "watchdog-loop")) {
                cfg.plan = PLAN_WATCHDOG;
                wdtcfg.loop = word_is(v, vn, "watchdog-loop");
            } else if (word_is(v, vn, "panic-pci"))
                cfg.plan = PLAN_PANIC_PCI;
            else if (word_is(v, vn, "crashloaded-pci"))
                cfg.plan = PLAN_CRASHLOADED_PCI;
            else if (word_is(v, vn, "xhci"))
                cfg.plan = PLAN_XHCI;
            else if (vn > 7 && !memcmp(v, "reboot:", 7) && parse_u64(v + 7, vn - 7, &num)) {
                cfg.plan = PLAN_REBOOT;
                cfg.reboot_n = (unsigned)num;
            } else {
                cfg.bad_plan = 1;
                continue;
            }
            size_t c = vn < sizeof cfg.plan_str - 1 ? vn : sizeof cfg.plan_str - 1;
            memcpy(cfg.plan_str, v, c);
            cfg.plan_str[c] = 0;
        } else if (word_is(w, kn, "reset")) {
            if (word_is(v, vn, "acpi"))
                cfg.reset = RESET_ACPI;
            else if (word_is(v, vn, "kbd"))
                cfg.reset = RESET_KBD;
            else if (word_is(v, vn, "triple"))
                cfg.reset = RESET_TRIPLE;
            else
                cfg.bad_reset = 1;
        } else if (blk_key(w, kn, v, vn) || net_key(w, kn, v, vn) || watchdog_key(w, kn, v, vn)) {
            continue;
        } else if (word_is(w, kn, "host_time")) {
            if (parse_u64(v, vn, &num)) {
                cfg.have_host_time = 1;
                cfg.host_time = (i64)num;
            } else {
                cfg.bad_host_time = 1;
            }
        }
    }
}

/* ------------------------------------------------------------------ */
/* 1: serial — the UART's registers read back what we wrote. */
static void check_serial(void)
{
    outb(0x3ff, 0x5a);
    u8 s1 = inb(0x3ff);
    outb(0x3ff, 0xa5);
    u8 s2 = inb(0x3ff);
    u8 lcr = inb(0x3fb);
    if (s1 != 0x5a || s2 != 0xa5)
        tap(0, "serial", "scratch register reads 0x%02x/0x%02x", s1, s2);
    else if (lcr != 0x03)
        tap(0, "serial", "LCR reads 0x%02x, wrote 0x03", lcr);
    else
        tap(1, "serial", 0);
}

/* 2: acpi tables */
static void check_acpi(void)
{
    if (acpi.ok)
        tap(1, "acpi tables", "cpus=%d", acpi.cpus);
    else
        tap(0, "acpi tables", "cpus=%d, %s", acpi.cpus, acpi.reason);
}

/* 3: memory map from start_info */
extern char __image_start[], __image_end[];

int ram_covers(u64 addr, u64 len)
{
    if (!si || si->version < 1 || !si->memmap_paddr)
        return 0;
    const struct hvm_memmap_entry *e = phys(si->memmap_paddr);
    for (u32 i = 0; i < si->memmap_entries && i < 128; i++)
        if (e[i].type == 1 && e[i].addr <= addr && e[i].addr + e[i].size >= addr + len)
            return 1;
    return 0;
}

u64 ram_total(void)
{
    if (!si || si->version < 1 || !si->memmap_paddr)
        return 0;
    const struct hvm_memmap_entry *e = phys(si->memmap_paddr);
    u64 t = 0;
    for (u32 i = 0; i < si->memmap_entries && i < 128; i++)
        if (e[i].type == 1)
            t += e[i].size;
    return t;
}

/* Lowers *hi below anything the guest still knows to lie in [lo, *hi). */
static void below(u64 lo, u64 *hi, u64 addr)
{
    if (addr >= lo && addr < *hi)
        *hi = addr & ~0xfffull;
}

u64 ram_free_end(u64 lo, u64 margin)
{
    if (!si || si->version < 1 || !si->memmap_paddr)
        return 0;
    const struct hvm_memmap_entry *e = phys(si->memmap_paddr);
    u64 hi = 0;
    for (u32 i = 0; i < si->memmap_entries && i < 128; i++)
        if (e[i].type == 1 && e[i].addr <= lo && e[i].addr + e[i].size > lo)
            hi = e[i].addr + e[i].size;
    if (hi > PHYS_LIMIT)
        hi = PHYS_LIMIT;                    /* only 0-4 GiB is mapped (cacheable) */
    hi = hi > lo + margin ? (hi - margin) & ~0xfffull : lo;
    below(lo, &hi, (u64)(uintptr_t)si);
    below(lo, &hi, si->memmap_paddr);
    below(lo, &hi, si->cmdline_paddr);
    below(lo, &hi, si->rsdp_paddr);
    const u64 tables[] = {acpi.rsdp, acpi.root, acpi.fadt, acpi.dsdt, acpi.madt, acpi.mcfg};
    for (size_t i = 0; i < sizeof tables / sizeof tables[0]; i++)
        below(lo, &hi, tables[i]);
    return hi;
}

static void check_memory(void)
{
    if (!si || si->version < 1 || !si->memmap_paddr || !si->memmap_entries) {
        tap(0, "memory", "mem_mib=0, no memmap in start_info (version %u)", si ? si->version : 0);
        return;
    }
    const struct hvm_memmap_entry *e = phys(si->memmap_paddr);
    u64 low_end = 0, high = 0;
    u64 img_lo = (u64)(uintptr_t)__image_start, img_hi = (u64)(uintptr_t)__image_end;
    int img_in_ram = 0;
    for (u32 i = 0; i < si->memmap_entries && i < 128; i++) {
        u64 a = e[i].addr, end = e[i].addr + e[i].size;
        printf_("# memmap 0x%016lx-0x%016lx type %u\n", a, e[i].size ? end - 1 : a, e[i].type);
        if (e[i].type != 1 || !e[i].size)
            continue;
        if (a <= img_lo && end >= img_hi)
            img_in_ram = 1;
        if (a < PHYS_LIMIT) {
            u64 top = end < PHYS_LIMIT ? end : PHYS_LIMIT;
            if (top > low_end)
                low_end = top;
        }
        if (end > PHYS_LIMIT)
            high += end - (a > PHYS_LIMIT ? a : PHYS_LIMIT);
    }
    u64 mib = (low_end + 0xfffff) / 0x100000 + high / 0x100000;
    if (!mib)
        tap(0, "memory", "mem_mib=0, no RAM in memmap");
    else if (!img_in_ram)
        tap(0, "memory", "mem_mib=%lu, image 0x%lx-0x%lx not inside RAM", mib, img_lo, img_hi);
    else
        tap(1, "memory", "mem_mib=%lu", mib);
}

/* 4: CMOS RTC */
static unsigned bcd(u8 v) { return (v >> 4) * 10 + (v & 15); }

/* Days from 1970-01-01 to a civil date (H. Hinnant's algorithm); rtc.c too. */
i64 days_from_civil(i64 y, unsigned m, unsigned d)
{
    y -= m <= 2;
    i64 era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (i64)doe - 719468;
}

struct rtc_time {
    unsigned sec, min, hour, day, mon, year;
};

static int rtc_snapshot(u8 r[7], u8 cidx)
{
    u64 end = clock_us() + 1000000;
    while (cmos_read(0x0a) & 0x80)          /* update in progress */
        if (clock_us() > end)
            return 0;
    r[0] = cmos_read(0x00);
    r[1] = cmos_read(0x02);
    r[2] = cmos_read(0x04);
    r[3] = cmos_read(0x07);
    r[4] = cmos_read(0x08);
    r[5] = cmos_read(0x09);
    r[6] = cidx ? cmos_read(cidx) : 0;
    return 1;
}

static int rtc_read(struct rtc_time *t)
{
    u8 a[7], b[7];
    u8 cidx = acpi.century && acpi.century < 0x80 ? acpi.century : 0;
    int tries = 0;
    do {
        if (!rtc_snapshot(a, cidx) || !rtc_snapshot(b, cidx))
            return 0;
    } while (memcmp(a, b, 7) && ++tries < 10);
    u8 regb = cmos_read(0x0b);
    int pm = 0;
    if (!(regb & 0x02)) {                   /* 12-hour mode: bit 7 = PM */
        pm = a[2] & 0x80;
        a[2] &= 0x7f;
    }
    if (!(regb & 0x04))                     /* BCD */
        for (int i = 0; i < 7; i++)
            a[i] = (u8)bcd(a[i]);
    t->sec = a[0];
    t->min = a[1];
    t->hour = a[2];
    if (!(regb & 0x02))
        t->hour = (t->hour % 12) + (pm ? 12 : 0);
    t->day = a[3];
    t->mon = a[4];
    t->year = cidx && a[6] >= 19 && a[6] <= 21 ? a[6] * 100u + a[5] : (a[5] < 70 ? 2000u : 1900u) + a[5];
    return 1;
}

static void check_rtc(void)
{
    struct rtc_time t;
    if (cmos_read(0x0a) == 0xff && cmos_read(0x0b) == 0xff) {
        tap(0, "rtc", "no CMOS RTC at ports 0x70/0x71");
        return;
    }
    if (!rtc_read(&t)) {
        tap(0, "rtc", "update-in-progress never clears");
        return;
    }
    char when[32];
    snprintf_(when, sizeof when, "%04u-%02u-%02u %02u:%02u:%02u", t.year, t.mon, t.day, t.hour, t.min, t.sec);
    if (t.mon < 1 || t.mon > 12 || t.day < 1 || t.day > 31 || t.hour > 23 || t.min > 59 || t.sec > 59) {
        tap(0, "rtc", "%s, invalid date", when);
        return;
    }
    i64 epoch = days_from_civil(t.year, t.mon, t.day) * 86400 + t.hour * 3600 + t.min * 60 + t.sec;
    if (!cfg.have_host_time) {
        if (t.year >= 2024)
            tap(1, "rtc", "%s", when);
        else
            tap(0, "rtc", "%s, year before 2024", when);
        return;
    }
    /* host_time is taken just before the VMM starts.  After a guest reset
     * the same (now stale) host_time comes back on the command line, so on
     * later boots only the lower bound holds. */
    i64 delta = epoch - cfg.host_time;
    int ok = delta >= -10 && (delta <= 10 || boot_count > 1);
    tap(ok, "rtc", "%s, host delta %lds", when, delta);
}

/* 5: PCI host bridge + bus 0 (enumeration, BAR sizing and assignment: pci.c) */
static void check_pci(void)
{
    if (acpi.mcfg && acpi.ecam_base && acpi.ecam_base < PHYS_LIMIT && acpi.ecam_bus_start == 0)
        pci_use_ecam(acpi.ecam_base, acpi.ecam_bus_start);
    u64 ecam = pci_ecam();
    printf_("# pci config via %s", ecam ? "ecam" : "ports 0xcf8/0xcfc");
    if (ecam)
        printf_(" at 0x%lx", ecam);
    puts_("\n");
    pci_enumerate();
    u32 id = pci_read32(0, 0);
    if ((id & 0xffff) == 0xffff || (id & 0xffff) == 0) {
        tap(0, "pci host bridge", "no device at 00:00.0");
        return;
    }
    if (ecam) {
        u32 id2 = pci_cf8_read32(0, 0);
        if (id2 != id) {
            tap(0, "pci host bridge", "00:00.0 reads %04x:%04x via ecam but %04x:%04x via 0xcf8",
                   id & 0xffff, id >> 16, id2 & 0xffff, id2 >> 16);
            return;
        }
    }
    char name[48];
    snprintf_(name, sizeof name, "pci host bridge 00:00.0 %04x:%04x", id & 0xffff, id >> 16);
    tap(1, name, 0);
}

/* ------------------------------------------------------------------ */
/* Power management */

/* SMI_CMD/ACPI_ENABLE handshake (QEMU's ICH9 needs it); returns SCI_EN. */
static int acpi_mode(void)
{
    if (!acpi.pm1a_cnt)
        return 0;
    if (inw((u16)acpi.pm1a_cnt) & 1) {
        puts_("# acpi mode: SCI_EN already set\n");
        return 1;
    }
    if (!acpi.smi_cmd || !acpi.acpi_enable) {
        puts_("# acpi mode: SCI_EN clear and no SMI_CMD/ACPI_ENABLE in the FADT\n");
        return 0;
    }
    outb((u16)acpi.smi_cmd, acpi.acpi_enable);
    u64 end = clock_us() + 3000000;
    while (!(inw((u16)acpi.pm1a_cnt) & 1)) {
        if (clock_us() > end) {
            puts_("# SCI_EN still clear 3 s after ACPI_ENABLE\n");
            return 0;
        }
        cpu_relax();
    }
    printf_("# acpi mode enabled (wrote 0x%x to port 0x%x)\n", acpi.acpi_enable, acpi.smi_cmd);
    return 1;
}

static void __attribute__((noreturn)) hang(const char *msg)
{
    puts_(msg);
    for (;;)
        cpu_relax();
}

void __attribute__((noreturn)) poweroff(void)
{
    puts_("poweroff\n");
    acpi_mode();
    if (acpi.pm1a_cnt) {
        u16 port = (u16)acpi.pm1a_cnt;
        u16 v = (u16)(inw(port) & ~(7u << 10 | 1u << 13));
        if (acpi.pm1b_cnt) {
            u16 pb = (u16)acpi.pm1b_cnt;
            outw(pb, (u16)((inw(pb) & ~(7u << 10 | 1u << 13)) | acpi.slp_typb << 10 | 1u << 13));
        }
        outw(port, (u16)(v | acpi.slp_typa << 10 | 1u << 13));
    } else if (acpi.sleep_ctl.space == 1) {
        outb((u16)acpi.sleep_ctl.addr, (u8)((acpi.slp_typa & 7) << 2 | 1 << 5));
    } else if (acpi.sleep_ctl.space == 0 && acpi.sleep_ctl.addr < PHYS_LIMIT) {
        mmio_write8(acpi.sleep_ctl.addr, (u8)((acpi.slp_typa & 7) << 2 | 1 << 5));
    } else {
        hang("not ok - poweroff did not happen (no PM1a_CNT_BLK)\n");
    }
    delay_us(3000000);
    hang("not ok - poweroff did not happen\n");
}

static void __attribute__((noreturn)) reset(void)
{
    switch (cfg.reset) {
    case RESET_ACPI:
        if (acpi.reset_reg.space == 1 && acpi.reset_reg.addr < 0x10000) {
            printf_("# reset: fadt reset_reg io 0x%lx value 0x%x\n", acpi.reset_reg.addr, acpi.reset_value);
            puts_("reset\n");
            outb((u16)acpi.reset_reg.addr, acpi.reset_value);
        } else if (acpi.reset_reg.space == 0 && acpi.reset_reg.addr < PHYS_LIMIT) {
            printf_("# reset: fadt reset_reg mmio 0x%lx value 0x%x\n", acpi.reset_reg.addr, acpi.reset_value);
            puts_("reset\n");
            mmio_write8(acpi.reset_reg.addr, acpi.reset_value);
        } else {
            puts_("# reset: port 0xcf9 value 0x06\n");
            puts_("reset\n");
            outb(0xcf9, 0x06);
        }
        break;
    case RESET_KBD: {
        puts_("# reset: i8042 command 0xfe\n");
        puts_("reset\n");
        u64 end = clock_us() + 100000;
        while ((inb(0x64) & 0x02) && clock_us() < end)
            cpu_relax();
        outb(0x64, 0xfe);
        break;
    }
    case RESET_TRIPLE:
        puts_("# reset: triple fault\n");
        puts_("reset\n");
        syscall0(SYS_TRIPLE_FAULT);
        break;
    }
    delay_us(3000000);
    hang("not ok - reset did not happen\n");
}

static u16 pwrbtn_sts;

int pwrbtn_arm(void)
{
    acpi_mode();
    pwrbtn_sts = 0;
    if (!acpi.pm1a_evt)
        return 0;
    u16 sts = (u16)acpi.pm1a_evt;
    u16 en = (u16)(acpi.pm1a_evt + (acpi.pm1_evt_len ? acpi.pm1_evt_len / 2 : 2));
    outw(sts, 0x0100);                      /* clear a stale PWRBTN_STS */
    outw(en, (u16)(inw(en) | 0x0100));      /* PWRBTN_EN */
    pwrbtn_sts = sts;
    return en;
}

int pwrbtn_pressed(void)
{
    if (!pwrbtn_sts || !(inw(pwrbtn_sts) & 0x0100))
        return 0;
    outw(pwrbtn_sts, 0x0100);
    puts_("power button\n");
    return 1;
}

static void __attribute__((noreturn)) idle(void)
{
    int en = pwrbtn_arm();
    if (en)
        printf_("# idle: power button via PM1a_STS 0x%x / PM1a_EN 0x%x, ticks from %s\n", pwrbtn_sts, en,
                clock_has_pmtmr() ? "pm timer" : "tsc");
    else
        puts_("# idle: no PM1a_EVT_BLK, no power button\n");
    u64 next = clock_us() + 100000;
    u64 spin = tsc_hz() / 5000;             /* poll ports every ~200 us */
    unsigned k = 0;
    for (;;) {
        if (pwrbtn_pressed())
            poweroff();
        u64 now = clock_us();
        if (now >= next) {
            printf_("tick %u\n", ++k);
            next += 100000;
            if (now >= next)                /* paused or starved: don't burst */
                next = now + 100000;
        }
        u64 t = rdtsc() + spin;
        while (rdtsc() < t)
            cpu_relax();
    }
}

/* plan=crash: jump into the PCI MMIO hole, where no RAM is. KVM cannot
   fetch instructions from MMIO, so on any host this ends KVM_RUN with an
   internal error: the VMM's guest-error path, made testable. */
static void __attribute__((noreturn)) crash(void)
{
    puts_("crash\n");
    void (*nowhere)(void) = (void (*)(void))0xd0000000UL;
    nowhere();
    __builtin_unreachable();
}

/* plan=panic / plan=crashloaded: QEMU's ISA pvpanic at its default port
   (hw/misc/pvpanic-isa.c): a read returns the events it supports, a write
   of bit 0 (PVPANIC_PANICKED) or bit 1 (PVPANIC_CRASH_LOADED) reports one.
   Then idle: what happens next is the VMM's -action panic= policy. */
#define PVPANIC_PORT 0x505
static void __attribute__((noreturn)) pvpanic(u8 event)
{
    printf_("# pvpanic port 0x%x reads 0x%x; writing 0x%x\n", PVPANIC_PORT, inb(PVPANIC_PORT), event);
    outb(PVPANIC_PORT, event);
    puts_("pvpanic written\n");
    idle();
}

/* ------------------------------------------------------------------ */
extern char __bss_start[], __bss_end[];
extern char tss_iomap[8192], dead_idt[32 * 16];     /* entry.S, user-writable */

void tg_main(u64 start_info)
{
    /* Memory may be stale after a reset if the VMM does not reload the
     * image: zero what must be zero (at CPL3, where it is cheap). */
    memset(tss_iomap, 0, sizeof tss_iomap);     /* all ports allowed */
    memset(dead_idt, 0, sizeof dead_idt);       /* for the triple fault */
    memset(__bss_start, 0, (size_t)(__bss_end - __bss_start));
    paging_reset();
    serial_init();
    if (start_info && start_info < PHYS_LIMIT &&
        ((const struct hvm_start_info *)phys(start_info))->magic == HVM_START_MAGIC)
        si = phys(start_info);

    boot_count = (cmos_read(BOOT_COUNT_CMOS) + 1u) & 0xff;
    cmos_write(BOOT_COUNT_CMOS, (u8)boot_count);
    int nvram_ok = cmos_read(BOOT_COUNT_CMOS) == boot_count;
    parse_cmdline();

    printf_("ferrovm-testguest: boot %u plan=%s\n", boot_count, cfg.plan_str);
    if (!si)
        printf_("# no valid hvm_start_info at 0x%lx (ebx)\n", start_info);
    else
        printf_("# start_info 0x%lx version %u cmdline '%s'\n", start_info, si->version, cfg.cmdline);
    if (!nvram_ok)
        printf_("# CMOS byte 0x%x does not keep what was written: no boot count\n", BOOT_COUNT_CMOS);
    if (cfg.bad_plan)
        puts_("# unknown plan value, using poweroff\n");
    if (cfg.bad_reset)
        puts_("# unknown reset value, using acpi\n");
    if (cfg.bad_host_time)
        puts_("# bad host_time value, ignored\n");
    if (cfg.bad_blk)
        puts_("# bad disk/seed/blk_*/bench_* value, ignored\n");
    if (cfg.bad_net)
        puts_("# bad ip/blast_*/net_ctrl value, ignored\n");

    check_serial();
    acpi_scan(si ? si->rsdp_paddr : 0, &acpi);
    clock_init((u16)acpi.pm_tmr, !!(acpi.flags & FADT_F_TMR_VAL_EXT));
    check_acpi();
    check_memory();
    check_rtc();
    check_pci();
    irq_init();
    blk_checks();
    int blk_reset = cfg.plan == PLAN_BLK && blk_plan_run(boot_count);
    int dev_up = 0;
    if (cfg.plan == PLAN_NET || cfg.plan == PLAN_NET_BLAST)
        dev_up = net_checks();
    else if (cfg.plan == PLAN_BALLOON)
        dev_up = balloon_checks();
    else if (cfg.plan == PLAN_WATCHDOG)
        dev_up = watchdog_checks(boot_count);
    else if (cfg.plan == PLAN_XHCI)
        dev_up = xhci_checks();
    printf_("1..%d\n", test_no);
    if (blk_reset)
        reset();

    switch (cfg.plan) {
    case PLAN_POWEROFF:
        poweroff();
    case PLAN_RESET:
        reset();
    case PLAN_REBOOT:
        if (!nvram_ok) {
            puts_("not ok - reboot plan needs the boot count in CMOS NVRAM\n");
            poweroff();
        }
        if (boot_count <= cfg.reboot_n)
            reset();
        poweroff();
    case PLAN_IDLE:
        idle();
    case PLAN_CRASH:
        crash();
    case PLAN_BLK:
        poweroff();
    case PLAN_NET:
    case PLAN_NET_BLAST:
        if (dev_up)
            net_run(cfg.plan == PLAN_NET_BLAST);
        poweroff();
    case PLAN_BALLOON:
        if (dev_up)
            balloon_run();
        poweroff();
    case PLAN_PANIC:
        pvpanic(1);
    case PLAN_CRASHLOADED:
        pvpanic(2);
    case PLAN_RTC_SET:
    case PLAN_RTC_IRQ:
        rtc_run(cfg.plan == PLAN_RTC_IRQ);
    case PLAN_WATCHDOG:
        watchdog_run();
    case PLAN_PANIC_PCI:
    case PLAN_CRASHLOADED_PCI:
        pvpanic_pci(cfg.plan == PLAN_PANIC_PCI ? 1 : 2);
        idle();
    case PLAN_XHCI:
        poweroff();
    }
    poweroff();
}
