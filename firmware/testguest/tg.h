/* ferrovm test guest: shared declarations (CPL3 C code). */
#ifndef TG_H
#define TG_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

typedef uint8_t u8;
typedef uint16_t u16;
typedef uint32_t u32;
typedef uint64_t u64;
typedef int8_t i8;
typedef int64_t i64;

/* ---- port and MMIO access (ports are open via the TSS I/O bitmap) ---- */
static inline void outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" ::"a"(v), "Nd"(port)); }
static inline void outw(u16 port, u16 v) { __asm__ volatile("outw %0, %1" ::"a"(v), "Nd"(port)); }
static inline void outl(u16 port, u32 v) { __asm__ volatile("outl %0, %1" ::"a"(v), "Nd"(port)); }
static inline u8 inb(u16 port) { u8 v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline u16 inw(u16 port) { u16 v; __asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline u32 inl(u16 port) { u32 v; __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port)); return v; }

static inline u8 mmio_read8(u64 a) { return *(volatile u8 *)(uintptr_t)a; }
static inline u16 mmio_read16(u64 a) { return *(volatile u16 *)(uintptr_t)a; }
static inline u32 mmio_read32(u64 a) { return *(volatile u32 *)(uintptr_t)a; }
static inline void mmio_write8(u64 a, u8 v) { *(volatile u8 *)(uintptr_t)a = v; }
static inline void mmio_write16(u64 a, u16 v) { *(volatile u16 *)(uintptr_t)a = v; }
static inline void mmio_write32(u64 a, u32 v) { *(volatile u32 *)(uintptr_t)a = v; }

static inline u64 rdtsc(void)
{
    u32 lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((u64)hi << 32) | lo;
}
static inline void cpu_relax(void) { __asm__ volatile("pause" ::: "memory"); }

/* syscalls into the CPL0 stub (entry.S) */
#define SYS_TRIPLE_FAULT 1
static inline long syscall0(long nr)
{
    long ret;
    __asm__ volatile("syscall" : "=a"(ret) : "a"(nr) : "rcx", "r11", "memory");
    return ret;
}

/* Physical memory is identity mapped 0-4 GiB and user accessible. */
static inline void *phys(u64 a) { return (void *)(uintptr_t)a; }
#define PHYS_LIMIT 0x100000000ull

/* ---- lib.c ---- */
void *memset(void *d, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);

void serial_init(void);
void serial_putc(char c);
void puts_(const char *s);
void vprintf_(const char *fmt, va_list ap);
void printf_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int snprintf_(char *buf, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* CMOS / NVRAM */
u8 cmos_read(u8 idx);
void cmos_write(u8 idx, u8 v);

/* ---- time.c ---- */
void clock_init(u16 pm_tmr_port, int tmr_32bit);
int clock_has_pmtmr(void);
u64 clock_us(void);             /* monotonic microseconds since clock_init */
void delay_us(u64 us);
u64 tsc_hz(void);               /* calibrated TSC frequency, 0 if unknown */

/* ---- acpi.c ---- */
struct gas {                    /* Generic Address Structure, decoded */
    u8 space;                   /* 0 = memory, 1 = system I/O, 0xff = absent */
    u8 width;
    u64 addr;
};

struct acpi_info {
    int ok;                     /* all checksums fine, FACP + DSDT present */
    char reason[80];
    u64 rsdp, root, fadt, dsdt, madt, mcfg;
    u32 fadt_len;
    int cpus;
    /* FADT */
    u32 smi_cmd;
    u8 acpi_enable, acpi_disable;
    u32 pm1a_evt, pm1b_evt, pm1a_cnt, pm1b_cnt, pm_tmr;
    u8 pm1_evt_len;
    u32 flags;
    u8 century;
    struct gas reset_reg;
    u8 reset_value;
    struct gas sleep_ctl;
    /* DSDT */
    int s5_found;
    u8 slp_typa, slp_typb;
    /* MCFG, segment 0 */
    u64 ecam_base;
    u8 ecam_bus_start, ecam_bus_end;
};

#define FADT_F_TMR_VAL_EXT (1u << 8)
#define FADT_F_RESET_REG_SUP (1u << 10)
#define FADT_F_HW_REDUCED (1u << 20)

void acpi_scan(u64 rsdp_hint, struct acpi_info *ai);

/* ---- pci.c ---- */
enum { BAR_NONE, BAR_MEM32, BAR_MEM64, BAR_IO, BAR_UPPER /* upper half of a 64-bit BAR */ };
struct pci_bar {
    u8 type, prefetch, assigned;
    u64 addr, size;
};
#define PCI_MAX_FNS 32
#define PCI_MAX_CAPS 16
struct pci_fn {
    u16 bdf;                    /* bus << 8 | dev << 3 | fn */
    u16 vendor, device;
    u32 class;
    u8 hdr;
    u8 secondary, subordinate;  /* a bridge's bus numbers (type 1 header) */
    struct pci_bar bar[6];
    u8 ncaps;
    u8 cap_id[PCI_MAX_CAPS], cap_off[PCI_MAX_CAPS];
};
void pci_use_ecam(u64 base, u8 bus_start);
u64 pci_ecam(void);
u32 pci_cf8_read32(unsigned bdf, unsigned off);
u32 pci_read32(unsigned bdf, unsigned off);
u16 pci_read16(unsigned bdf, unsigned off);
u8 pci_read8(unsigned bdf, unsigned off);
void pci_write32(unsigned bdf, unsigned off, u32 v);
void pci_write16(unsigned bdf, unsigned off, u16 v);
int pci_enumerate(void);        /* bus 0: size, assign, enable; prints one '#' line per function */
const struct pci_fn *pci_fn_at(int i);
const struct pci_fn *pci_find(u16 vendor, u16 device);
u8 pci_find_cap(const struct pci_fn *f, u8 id, u8 after);   /* after = 0: first */
void paging_reset(void);
int map_mmio(u64 addr, u64 size);   /* identity-map [addr, addr+size) (above 4 GiB) */

/* ---- irq.c: LAPIC, IDT gates 0x40-0x4f (stubs in entry.S), IF control ---- */
#define IRQ_BASE 0x40
#define IRQ_COUNT 16
#define IRQ_TIMER 14             /* vector 0x4e: wake-up timer */
#define IRQ_SELFTEST 15          /* vector 0x4f */
#define LAPIC_BASE 0xfee00000ull
extern volatile u64 irq_count[IRQ_COUNT];
void irq_init(void);            /* IDT gates + LAPIC software enable; IF stays 0 */
/* Waits at full privilege with interrupts enabled until one interrupt was
   handled (ud2 -> #UD handler: sti; hlt; cli; iretq past the ud2, entry.S).
   CPL3 itself always runs with IF=0: this host delivers nothing there. */
static inline void irq_wait(void) { __asm__ volatile("ud2" ::: "memory"); }
u32 lapic_id(void);
int irq_self_test(void);        /* self-IPI on vector 0x4f: 1 if counted */
void irq_drain(void);           /* handle what is pending for 0x40-0x4f */
void irq_wait_vector(unsigned v, u64 before, u64 timeout_us);   /* irq_wait until irq_count[v] != before */

/* ---- msix.c ---- */
struct msix {
    u16 bdf;
    u8 cap, table_bir, pba_bir;
    u16 n;                      /* table size */
    u64 table, pba;
};
int msix_setup(const struct pci_fn *f, struct msix *m);    /* all entries masked, function masked */
void msix_set(const struct msix *m, u16 entry, u8 vector); /* -> boot CPU's LAPIC, unmasked */
void msix_enable(const struct msix *m);                    /* enable, function unmasked */

/* ---- virtio_blk.c: modern virtio-pci (virtio 1.2 §4.1) block driver, queue 0 ---- */
/* Guest RAM the driver and the plans use for rings and buffers (checked against the memmap). */
#define DMA_BASE ((u64)0x1000000)
#define DMA_SIZE ((u64)0x800000)
#define DMA_DATA (DMA_BASE + 0x10000)
#define DMA_DATA_SIZE (DMA_SIZE - 0x10000)

#define VIRTIO_BLK_T_IN 0
#define VIRTIO_BLK_T_OUT 1
#define VIRTIO_BLK_T_FLUSH 4
#define VIRTIO_BLK_T_GET_ID 8
#define VIRTIO_BLK_T_DISCARD 11
#define VIRTIO_BLK_T_WRITE_ZEROES 13
#define VIRTIO_BLK_S_OK 0
#define VIRTIO_BLK_S_IOERR 1
#define VIRTIO_BLK_S_UNSUPP 2
#define VBLK_TIMEOUT 0xff       /* returned by vblk_sync when the device never answers */

#define VIRTIO_BLK_F_SIZE_MAX (1ull << 1)
#define VIRTIO_BLK_F_SEG_MAX (1ull << 2)
#define VIRTIO_BLK_F_GEOMETRY (1ull << 4)
#define VIRTIO_BLK_F_RO (1ull << 5)
#define VIRTIO_BLK_F_BLK_SIZE (1ull << 6)
#define VIRTIO_BLK_F_FLUSH (1ull << 9)
#define VIRTIO_BLK_F_TOPOLOGY (1ull << 10)
#define VIRTIO_BLK_F_CONFIG_WCE (1ull << 11)
#define VIRTIO_BLK_F_MQ (1ull << 12)
#define VIRTIO_BLK_F_DISCARD (1ull << 13)
#define VIRTIO_BLK_F_WRITE_ZEROES (1ull << 14)
#define VIRTIO_F_INDIRECT_DESC (1ull << 28)
#define VIRTIO_F_EVENT_IDX (1ull << 29)
#define VIRTIO_F_VERSION_1 (1ull << 32)

struct vblk_info {
    const struct pci_fn *pci;
    u64 offered, features;
    u64 capacity;               /* 512-byte sectors */
    u32 blk_size, seg_max, size_max, max_discard, max_write_zeroes;
    u16 num_queues, qsize;
    u8 wce;
    int msix;                   /* MSI-X table programmed and enabled */
    u8 config_vector, queue_vector;     /* LAPIC vectors (0x40, 0x41) */
};
const struct pci_fn *vblk_find(void);
int vblk_init(const struct pci_fn *f, char *why, size_t n);   /* 1: DRIVER_OK */
const struct vblk_info *vblk(void);
#define VBLK_MAXDEV 2
void vblk_use(unsigned i);                  /* later vblk_* calls act on device i (0: the first) */
void vblk_reset(void);                      /* device status 0 */
void vblk_reread_config(void);
extern int vblk_no_msix;                   /* set before vblk_init: leave MSI-X off (INTx + ISR) */
u8 vblk_read_isr(void);                     /* ISR status; reading clears it and drops INTx */              /* refresh capacity etc. (config generation checked) */
void vblk_irq_mode(int on);                 /* 0: completions polled, interrupts suppressed */
unsigned vblk_free_descs(void);
/* Queue a request (not yet visible to the device); data in DMA memory.
   Returns the head descriptor id, or -1 when the ring is full. */
int vblk_submit(u32 type, u64 sector, void *buf, u32 len);
void vblk_kick(void);                       /* publish avail idx, notify unless suppressed */
int vblk_reap(u16 *id, u8 *status);         /* 1: one completion taken off the used ring */
int vblk_used_pending(void);
u8 vblk_sync(u32 type, u64 sector, void *buf, u32 len, u64 timeout_us);


/* ---- main.c helpers for the other files ---- */
void tap(int ok, const char *name, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int ram_covers(u64 addr, u64 len);          /* [addr, addr+len) is type-1 RAM in the memmap */
u64 ram_total(void);                        /* bytes of type-1 RAM in the memmap */
/* End of the type-1 region holding `lo` (capped at 4 GiB) less `margin`, lowered
   below start_info, the memmap, the cmdline and the ACPI tables; <= lo if none. */
u64 ram_free_end(u64 lo, u64 margin);
int pwrbtn_arm(void);                       /* ACPI mode, PWRBTN_EN; 0: no PM1a_EVT_BLK */
int pwrbtn_pressed(void);                   /* PWRBTN_STS was set (now cleared); prints "power button" */
void poweroff(void) __attribute__((noreturn));

/* ---- virtio_net.c: plan=net and plan=net-blast ---- */
struct net_cfg {
    u32 ip;                     /* ip= (host order), default 10.0.2.15 */
    u64 blast_size, blast_secs; /* frame bytes (1500), seconds (3) */
    int blast_rx;               /* blast_dir=rx */
    int ctrl;                   /* net_ctrl=1: control queue and its two-phase script */
};
extern struct net_cfg netcfg;
int net_checks(void);           /* 1: the driver is up ("ok N - net") */
void net_run(int blast) __attribute__((noreturn));

/* ---- virtio_balloon.c: plan=balloon ---- */
int balloon_checks(void);       /* 1: the driver is up ("ok N - balloon") */
void balloon_run(void) __attribute__((noreturn));

/* ---- rtc.c: plan=rtc-set and plan=rtc-irq ---- */
void rtc_run(int irq) __attribute__((noreturn));

/* ---- blk.c: the virtio-blk checks and the blk-* plans ---- */
enum blk_plan { BLK_NONE, BLK_WRITE, BLK_READ, BLK_RO, BLK_RESET, BLK_FILL, BLK_BENCH, BLK_RESIZE, BLK_INTX, BLK_FILL2,
                BLK_RANDW, BLK_SEQREAD };
struct blk_cfg {
    int disk;                   /* disk=1: a missing virtio-blk device is a failure */
    enum blk_plan plan;
    u64 seed, start, sectors;   /* pattern and region of blk-write/read/ro/reset */
    u64 mib;                    /* blk-fill */
    u64 bench_mib, bench_secs, bench_start;
    u64 intx_gsi;               /* blk-intx: the IOAPIC GSI the VMM's _PRT gives slot/INTA */
};
extern struct blk_cfg blkcfg;
int blk_checks(void);           /* 1: the device is up (after the common checks) */
/* Runs the plan's I/O checks; returns 1 to reset (blk-reset boot 1), 0 to power off. */
int blk_plan_run(unsigned boot_count);
void blk_bench(void);           /* bench.c */
void blk_bench_randw(void);
void blk_bench_seqread(void);

/* ---- watchdog.c: plan=watchdog / watchdog-loop (i6300esb), NMI counting ---- */
struct watchdog_cfg {
    unsigned pets;              /* pets= (3): pets on boot 1 before idling */
    int loop;                   /* watchdog-loop: re-arm 1.2 s after taking each expiry */
    int lint1_masked;           /* lint1=0: leave LVT LINT1 masked (QEMU then drops NMIs) */
};
extern struct watchdog_cfg wdtcfg;
int watchdog_key(const char *w, size_t kn, const char *v, size_t vn);  /* pets= lint1= */
extern volatile u64 nmi_count;
void nmi_init(void);            /* IDT vector 2 -> a stub counting in nmi_count; LINT1 = NMI unless lint1=0 */
int watchdog_checks(unsigned boot_count);   /* 1: the device is there (boot 1: armed, petted) */
void watchdog_run(void) __attribute__((noreturn));

/* ---- pvpanic_pci.c: plan=panic-pci / crashloaded-pci ---- */
int pvpanic_pci(u8 event);      /* 1: the event was written to 1b36:0011's BAR0 */

/* ---- xhci.c: plan=xhci (qemu-xhci, 1b36:000d) ---- */
int xhci_checks(void);          /* 1: the controller ran its commands */

/* ---- main.c ---- */
i64 days_from_civil(i64 y, unsigned m, unsigned d);   /* days since 1970-01-01 */

#endif
