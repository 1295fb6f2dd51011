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

#endif
