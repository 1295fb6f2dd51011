/* ferrovm test guest: plan=watchdog and plan=watchdog-loop, the Intel
 * 6300ESB watchdog (QEMU `-device i6300esb`, hw/watchdog/wdt_i6300esb.c),
 * driven as Linux's drivers/watchdog/i6300esb.c drives it; and an NMI
 * counter, so the `inject-nmi` watchdog action (and QMP `inject-nmi`) can be
 * seen from the guest.
 *
 * The device: 8086:25ab, BAR0 = 16 bytes of MMIO.  Configuration space 0x60
 * (word): bit 5 set disables the reboot, bit 2 selects the 1 MHz prescaler
 * (else 1 kHz), bits 1:0 the stage-1 interrupt type (3 = none); 0x68 (byte):
 * bit 0 lock, bit 1 enable, bit 2 free-running.  BAR0: TIMER1 preload at
 * 0x00, TIMER2 at 0x04 (dword writes), RELOAD at 0x0c; writing 0x80 then 0x86
 * to RELOAD unlocks the next write.  A word write of 0x100 to RELOAD restarts
 * stage 1 ("pet"), 0x200 clears the timeout flag; a word read returns 0x1200
 * while the flag (set when stage 2 ran out) is set.  At 1 kHz a stage lasts
 * preload * 2^15 PCI clocks of 30 ns, i.e. ~0.983 ms per unit.  When the
 * watchdog fires, QEMU resets the device (enable clears) but keeps the flag,
 * across a machine reset too.
 *
 * Boot 1 arms and pets; later boots (after a watchdog reset) only report
 * and clear the flag.  The idle loop waits in `hlt` windows (irq_wait with
 * the LAPIC one-shot timer), polls the flag, the NMI count and the ACPI
 * power button (the `shutdown` action presses it). */
#include "tg.h"

struct watchdog_cfg wdtcfg = {.pets = 3};

/* pets=N, lint1=0|1; 1: the word was one of these (bad values are ignored) */
int watchdog_key(const char *w, size_t kn, const char *v, size_t vn)
{
    u64 num = 0;
    int ok = vn > 0 && vn < 10;
    for (size_t i = 0; i < vn && ok; i++) {
        ok = v[i] >= '0' && v[i] <= '9';
        num = num * 10 + (u64)(v[i] - '0');
    }
    if (kn == 4 && !memcmp(w, "pets", 4)) {
        if (ok)
            wdtcfg.pets = (unsigned)num;
    } else if (kn == 5 && !memcmp(w, "lint1", 5)) {
        if (ok && num <= 1)
            wdtcfg.lint1_masked = num == 0;
    } else {
        return 0;
    }
    return 1;
}

#define ESB_VENDOR 0x8086
#define ESB_DEVICE 0x25ab
#define ESB_CONFIG_REG 0x60
#define ESB_LOCK_REG 0x68
#define ESB_TIMER1_REG 0x00
#define ESB_TIMER2_REG 0x04
#define ESB_RELOAD_REG 0x0c
#define ESB_WDT_ENABLE 0x02
#define ESB_WDT_LOCK 0x01
#define ESB_WDT_RELOAD 0x100
#define ESB_WDT_TIMEOUT 0x200
#define ESB_UNLOCK1 0x80
#define ESB_UNLOCK2 0x86

#define STAGE_UNITS 200         /* per stage: 200 * 0.983 ms = 197 ms */
#define PET_US 100000           /* well inside one stage */
#define REARM_US 1200000        /* watchdog-loop: expiries ~1.7 s apart, beyond QEMU's 1 s WATCHDOG event rate limit */
#define GRACE_US 100000          /* see watchdog_run */
#define LAPIC_TICR 0x380
#define LAPIC_LVT_LINT1 0x360
#define LVT_DM_NMI (4u << 8)

/* ---- NMI: a CPL0 stub that counts (vector 2's gate, set below); before,
   vector 2 went to entry.S's exception stub, which prints and halts ---- */
volatile u64 nmi_count;
extern char nmi_stub[];
extern u8 idt[256 * 16];
__asm__(".pushsection .text\n"
        ".p2align 4\n"
        ".globl nmi_stub\n"
        "nmi_stub:\n"
        "  incq nmi_count\n"
        "  iretq\n"
        ".popsection\n");

void nmi_init(void)
{
    u64 h = (u64)(uintptr_t)nmi_stub;
    u8 *g = &idt[2 * 16];
    nmi_count = 0;
    *(volatile u16 *)(g + 0) = (u16)h;
    *(volatile u16 *)(g + 2) = 0x08;            /* kernel code */
    *(volatile u16 *)(g + 4) = 0x8e00;          /* present, DPL0, interrupt gate */
    *(volatile u16 *)(g + 6) = (u16)(h >> 16);
    *(volatile u32 *)(g + 8) = (u32)(h >> 32);
    *(volatile u32 *)(g + 12) = 0;
    /* LINT1 unmasked, delivery mode NMI, as Linux programs the boot CPU
       (arch/x86/kernel/apic/apic.c setup_local_APIC).  QEMU delivers an
       external NMI (the watchdog's, QMP inject-nmi) only through it
       (hw/i386/kvm/apic.c do_inject_external_nmi); irq_init masked it.
       lint1=0 keeps it masked, to see that. */
    if (!wdtcfg.lint1_masked)
        mmio_write32(LAPIC_BASE + LAPIC_LVT_LINT1, LVT_DM_NMI);
    printf_("# vector 2 (nmi) counted; lvt lint1 0x%x\n", mmio_read32(LAPIC_BASE + LAPIC_LVT_LINT1));
}

/* ---- the device ---- */
static const struct pci_fn *esb;
static u64 esb_bar;

/* A byte write to configuration space (pci.c has 16 and 32 bits only; the
   lock register is written, and decoded by QEMU, as one byte). */
static void cfg_write8(unsigned bdf, unsigned off, u8 v)
{
    u64 ecam = pci_ecam();
    if (ecam) {
        mmio_write8(ecam + ((u64)bdf << 12) + off, v);
        return;
    }
    outl(0xcf8, 0x80000000u | bdf << 8 | (off & 0xfc));
    outb((u16)(0xcfc + (off & 3)), v);
}

static void esb_unlock(void)
{
    mmio_write8(esb_bar + ESB_RELOAD_REG, ESB_UNLOCK1);
    mmio_write8(esb_bar + ESB_RELOAD_REG, ESB_UNLOCK2);
}

static void esb_pet(void)
{
    esb_unlock();
    mmio_write16(esb_bar + ESB_RELOAD_REG, ESB_WDT_RELOAD);
}

static u16 esb_reload(void) { return mmio_read16(esb_bar + ESB_RELOAD_REG); }
static u8 esb_lock(void) { return pci_read8(esb->bdf, ESB_LOCK_REG); }

/* Linux esb_initdevice + esb_timer_set_heartbeat + esb_timer_start. */
static void esb_arm(void)
{
    /* bit 5 clear: reboot (WDT_OUTPUT) enabled; bit 2 clear: 1 kHz;
       bits 1:0 = 3: no stage-1 interrupt */
    pci_write16(esb->bdf, ESB_CONFIG_REG, 0x0003);
    esb_pet();                                  /* esb_timer_stop */
    cfg_write8(esb->bdf, ESB_LOCK_REG, 0);
    esb_unlock();
    mmio_write32(esb_bar + ESB_TIMER1_REG, STAGE_UNITS);
    esb_unlock();
    mmio_write32(esb_bar + ESB_TIMER2_REG, STAGE_UNITS);
    esb_pet();
    esb_pet();                                  /* esb_timer_start */
    cfg_write8(esb->bdf, ESB_LOCK_REG, ESB_WDT_ENABLE);
}

static void esb_clear_flag(void)
{
    esb_unlock();
    mmio_write16(esb_bar + ESB_RELOAD_REG, ESB_WDT_TIMEOUT | ESB_WDT_RELOAD);
}

static unsigned boot;

int watchdog_checks(unsigned boot_count)
{
    boot = boot_count;
    nmi_init();
    esb = pci_find(ESB_VENDOR, ESB_DEVICE);
    if (!esb || esb->bar[0].type != BAR_MEM32 || !esb->bar[0].addr) {
        tap(0, "watchdog", esb ? "8086:25ab has no memory BAR0" : "no 8086:25ab function");
        return 0;
    }
    esb_bar = esb->bar[0].addr;
    u16 flag = esb_reload();
    printf_("# watchdog timeout flag %d (reload reads 0x%x)\n", flag & ESB_WDT_TIMEOUT ? 1 : 0, flag);
    if (boot > 1) {
        /* After the watchdog's reset: report, clear as Linux does, do not arm. */
        esb_clear_flag();
        printf_("# watchdog boot %u: flag cleared (reload reads 0x%x), not arming\n", boot, esb_reload());
        tap(1, "watchdog", "%02x:%02x.%u, boot %u", esb->bdf >> 8, (esb->bdf >> 3) & 31, esb->bdf & 7,
            boot);
        return 1;
    }
    u8 lock0 = esb_lock();
    if (lock0 & ESB_WDT_LOCK)
        printf_("# watchdog lock register 0x%x: locked (nowayout) before we touched it\n", lock0);
    esb_arm();
    tap(esb_lock() == ESB_WDT_ENABLE, "watchdog", "%02x:%02x.%u bar0 0x%lx config 0x%04x lock 0x%02x",
        esb->bdf >> 8, (esb->bdf >> 3) & 31, esb->bdf & 7, esb_bar, pci_read16(esb->bdf, ESB_CONFIG_REG),
        esb_lock());
    printf_("# watchdog armed 1: 1 kHz, timer1=%u timer2=%u units (~%u ms to expiry)\n", STAGE_UNITS,
            STAGE_UNITS, 2 * STAGE_UNITS * 983 / 1000);
    for (unsigned k = 1; k <= wdtcfg.pets; k++) {
        delay_us(PET_US);
        esb_pet();
        char name[32];
        snprintf_(name, sizeof name, "watchdog pet %u", k);
        tap(!(esb_reload() & ESB_WDT_TIMEOUT), name, 0);
    }
    return 1;
}

/* One hlt window of at most ~2 ms (LAPIC timer at KVM's 1 GHz). */
static void nap(void)
{
    mmio_write32(LAPIC_BASE + LAPIC_TICR, 2000000);
    irq_wait();
    mmio_write32(LAPIC_BASE + LAPIC_TICR, 0);
}

void __attribute__((noreturn)) watchdog_run(void)
{
    if (!esb)
        poweroff();
    int en = pwrbtn_arm();
    printf_("# watchdog: %s; nmis and %s counted\n",
            boot > 1 ? "idle" : "stopped petting", en ? "the power button" : "no power button");
    u64 seen_nmi = nmi_count;
    unsigned fired = 0, armed = boot > 1 ? 0 : 1;
    u64 rearm_at = 0, flag_at = 0;
    for (;;) {
        nap();
        if (pwrbtn_pressed())
            poweroff();
        u64 n = nmi_count;
        if (n != seen_nmi) {
            seen_nmi = n;
            printf_("# nmi %lu\n", n);
        }
        /* The flag is taken (reported and cleared) only after a grace
           period: with the reset action the machine resets a moment after
           the flag is set, and boot 2 must still find it. */
        u64 now = clock_us();
        if (!flag_at && (esb_reload() & ESB_WDT_TIMEOUT))
            flag_at = now + GRACE_US;
        if (flag_at && now >= flag_at) {
            flag_at = 0;
            esb_clear_flag();
            printf_("# watchdog fired %u (flag cleared, reload reads 0x%x)\n", ++fired, esb_reload());
            if (wdtcfg.loop) {
                printf_("# watchdog re-arm in %u ms\n", REARM_US / 1000);
                rearm_at = clock_us() + REARM_US;
            }
        }
        if (rearm_at && clock_us() >= rearm_at) {
            rearm_at = 0;
            esb_arm();
            printf_("# watchdog armed %u: lock 0x%02x\n", ++armed, esb_lock());
        }
    }
}
