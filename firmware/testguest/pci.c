/* ferrovm test guest: PCI configuration access, enumeration of bus 0 and
 * of every bus behind a bridge whose secondary bus number is set (type 1
 * headers, PCI-to-PCI Bridge 1.2 §3.2.5.3; firmware or the VMM numbers the
 * buses, the guest only follows them), BAR
 * sizing and assignment, capability walk, and identity mapping of BARs that
 * lie above 4 GiB (PCI Local Bus 3.0 §6.2.5, PCIe Base 4.0 §7.5.1).
 *
 * QEMU q35 runs SeaBIOS, which assigns BARs (and may place 64-bit BARs above
 * 4 GiB); ferrovm assigns them at build time.  Either way the guest uses what
 * it finds and assigns only BARs that read 0. */
#include "tg.h"

static u64 ecam;                /* 0: ports 0xcf8/0xcfc */
static u8 ecam_bus0;

void pci_use_ecam(u64 base, u8 bus_start)
{
    ecam = base;
    ecam_bus0 = bus_start;
}

u64 pci_ecam(void) { return ecam; }

static u64 ecam_addr(unsigned bdf, unsigned off)
{
    return ecam + ((u64)(bdf - ((unsigned)ecam_bus0 << 8)) << 12) + off;
}

static void cf8(unsigned bdf, unsigned off)
{
    outl(0xcf8, 0x80000000u | bdf << 8 | (off & 0xfc));
}

u32 pci_cf8_read32(unsigned bdf, unsigned off)
{
    cf8(bdf, off);
    return inl(0xcfc);
}

u32 pci_read32(unsigned bdf, unsigned off)
{
    if (ecam)
        return mmio_read32(ecam_addr(bdf, off));
    return pci_cf8_read32(bdf, off);
}

u16 pci_read16(unsigned bdf, unsigned off)
{
    if (ecam)
        return mmio_read16(ecam_addr(bdf, off));
    cf8(bdf, off);
    return inw((u16)(0xcfc + (off & 2)));
}

u8 pci_read8(unsigned bdf, unsigned off)
{
    if (ecam)
        return mmio_read8(ecam_addr(bdf, off));
    cf8(bdf, off);
    return inb((u16)(0xcfc + (off & 3)));
}

void pci_write32(unsigned bdf, unsigned off, u32 v)
{
    if (ecam) {
        mmio_write32(ecam_addr(bdf, off), v);
        return;
    }
    cf8(bdf, off);
    outl(0xcfc, v);
}

void pci_write16(unsigned bdf, unsigned off, u16 v)
{
    if (ecam) {
        mmio_write16(ecam_addr(bdf, off), v);
        return;
    }
    cf8(bdf, off);
    outw((u16)(0xcfc + (off & 2)), v);
}

/* ------------------------------------------------------------------ */
/* Identity mapping above 4 GiB.  entry.S maps 0-4 GiB; the paging
 * structures live in user-accessible RAM, so CPL3 can add entries.  Only
 * not-present entries are ever filled in, and the CPU caches no translation
 * for a not-present entry, so no TLB flush (a CPL0 instruction) is needed. */
extern u64 pml4[512], pdpt[512];
static u64 pt_pool[6][512] __attribute__((aligned(4096)));
static unsigned pt_used;

void paging_reset(void)
{
    /* After a reset without an image reload, stale entries could point into
       pt_pool (just zeroed with .bss).  Nothing above 4 GiB was touched yet
       in this boot, so clearing them needs no flush. */
    for (int i = 1; i < 512; i++)
        pml4[i] = 0;
    for (int i = 4; i < 512; i++)
        pdpt[i] = 0;
    pt_used = 0;
}

static u64 *next_table(u64 *entry)
{
    if (!(*entry & 1)) {
        if (pt_used >= sizeof pt_pool / sizeof pt_pool[0])
            return 0;
        u64 *t = pt_pool[pt_used++];
        *entry = (u64)(uintptr_t)t | 7;       /* P RW US */
    }
    return phys(*entry & 0x000ffffffffff000ull);
}

static unsigned phys_bits(void)
{
    u32 a, b, c, d;
    __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(0x80000000u), "c"(0));
    if (a < 0x80000008u)
        return 36;
    __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(0x80000008u), "c"(0));
    return a & 0xff;
}

int map_mmio(u64 addr, u64 size)
{
    if (addr + size <= PHYS_LIMIT)
        return 1;
    if (!size || addr + size < addr || (addr + size - 1) >> phys_bits())
        return 0;
    for (u64 a = addr & ~0x1fffffull; a < addr + size; a += 0x200000) {
        if (a < PHYS_LIMIT)
            continue;
        u64 *l3 = next_table(&pml4[(a >> 39) & 511]);
        u64 *l2 = l3 ? next_table(&l3[(a >> 30) & 511]) : 0;
        if (!l2)
            return 0;
        u64 *e = &l2[(a >> 21) & 511];
        if (!(*e & 1))
            *e = a | 0x9f;                      /* P RW US PWT PCD PS: uncached 2 MiB */
    }
    return 1;
}

/* ------------------------------------------------------------------ */
static struct pci_fn fns[PCI_MAX_FNS];
static int nfns;

static void size_bars(struct pci_fn *f)
{
    unsigned nbars = (f->hdr & 0x7f) == 0 ? 6 : (f->hdr & 0x7f) == 1 ? 2 : 0;
    u16 cmd = pci_read16(f->bdf, 4);
    pci_write16(f->bdf, 4, cmd & ~3u);          /* no decoding while sizing */
    for (unsigned i = 0; i < nbars; i++) {
        unsigned off = 0x10 + 4 * i;
        u32 orig = pci_read32(f->bdf, off);
        pci_write32(f->bdf, off, 0xffffffffu);
        u32 rb = pci_read32(f->bdf, off);
        pci_write32(f->bdf, off, orig);
        struct pci_bar *b = &f->bar[i];
        if (!rb || rb == 0xffffffffu)
            continue;
        if (orig & 1) {
            b->type = BAR_IO;
            b->addr = orig & ~3u;
            b->size = (u32)(~((rb & ~3u) | 0xffff0000u) + 1) & 0xffff;
            if (!b->size)
                b->type = BAR_NONE;
            continue;
        }
        b->prefetch = !!(orig & 8);
        u64 mask = rb & ~0xfu;
        b->addr = orig & ~0xfu;
        if (((orig >> 1) & 3) == 2 && i + 1 < nbars) {
            u32 orig_hi = pci_read32(f->bdf, off + 4);
            pci_write32(f->bdf, off + 4, 0xffffffffu);
            u32 rb_hi = pci_read32(f->bdf, off + 4);
            pci_write32(f->bdf, off + 4, orig_hi);
            b->type = BAR_MEM64;
            b->addr |= (u64)orig_hi << 32;
            mask |= (u64)rb_hi << 32;
            b->size = ~mask + 1;
            f->bar[i + 1].type = BAR_UPPER;
            i++;
        } else {
            b->type = BAR_MEM32;
            b->size = (u32)(~(u32)mask + 1);
        }
        if (!b->size)
            b->type = BAR_NONE;
    }
    pci_write16(f->bdf, 4, cmd);
}

static void walk_caps(struct pci_fn *f)
{
    if (!(pci_read16(f->bdf, 6) & 0x10))        /* status: capabilities list */
        return;
    u8 off = pci_read8(f->bdf, 0x34) & 0xfc;
    for (int guard = 0; off >= 0x40 && guard < 48 && f->ncaps < PCI_MAX_CAPS; guard++) {
        f->cap_off[f->ncaps] = off;
        f->cap_id[f->ncaps] = pci_read8(f->bdf, off);
        f->ncaps++;
        off = pci_read8(f->bdf, off + 1) & 0xfc;
    }
}

/* Assigns BARs that read 0: memory from above the highest assigned 32-bit
   memory BAR (at least 0xc0000000, the start of ferrovm's 32-bit window and
   of SeaBIOS's on q35), I/O from above the highest I/O BAR (at least
   0xc000), each naturally aligned.  64-bit BARs go below 4 GiB too. */
static void assign_bars(void)
{
    u64 mem = 0xc0000000ull, io = 0xc000;
    for (int k = 0; k < nfns; k++)
        for (int i = 0; i < 6; i++) {
            struct pci_bar *b = &fns[k].bar[i];
            if ((b->type == BAR_MEM32 || b->type == BAR_MEM64) && b->addr &&
                b->addr + b->size <= 0xe0000000ull && b->addr + b->size > mem)
                mem = b->addr + b->size;
            if (b->type == BAR_IO && b->addr && b->addr + b->size > io)
                io = b->addr + b->size;
        }
    for (int k = 0; k < nfns; k++) {
        struct pci_fn *f = &fns[k];
        /* Behind a bridge a BAR must lie in its windows: leave those to
           whoever programmed the windows. */
        if ((f->hdr & 0x7f) != 0 || f->bdf >> 8)
            continue;
        for (int i = 0; i < 6; i++) {
            struct pci_bar *b = &f->bar[i];
            unsigned off = 0x10 + 4 * i;
            if (b->addr || b->type == BAR_NONE || b->type == BAR_UPPER)
                continue;
            if (b->type == BAR_IO) {
                io = (io + b->size - 1) & ~(b->size - 1);
                if (io + b->size > 0x10000)
                    continue;
                b->addr = io;
                io += b->size;
                pci_write32(f->bdf, off, (u32)b->addr);
            } else {
                mem = (mem + b->size - 1) & ~(b->size - 1);
                if (mem + b->size > 0xfec00000ull)
                    continue;
                b->addr = mem;
                mem += b->size;
                pci_write32(f->bdf, off, (u32)b->addr | (pci_read32(f->bdf, off) & 0xf));
                if (b->type == BAR_MEM64)
                    pci_write32(f->bdf, off + 4, 0);
            }
            b->assigned = 1;
        }
    }
}

static void enable_decoding(struct pci_fn *f)
{
    u16 want = 0;
    for (int i = 0; i < 6; i++) {
        if (!f->bar[i].addr)
            continue;
        if (f->bar[i].type == BAR_IO)
            want |= 1;
        else if (f->bar[i].type == BAR_MEM32 || f->bar[i].type == BAR_MEM64)
            want |= 2;
    }
    u16 cmd = pci_read16(f->bdf, 4);
    if ((cmd & want) != want)
        pci_write16(f->bdf, 4, cmd | want);
}

static const char *bar_kind(const struct pci_bar *b)
{
    switch (b->type) {
    case BAR_IO:
        return "io";
    case BAR_MEM32:
        return b->prefetch ? "mem32p" : "mem32";
    case BAR_MEM64:
        return b->prefetch ? "mem64p" : "mem64";
    }
    return "?";
}

/* Scans bus `bus`, then, depth first, the secondary bus of every bridge on
   it whose secondary number lies above `bus` (a bound that also stops
   loops in a misprogrammed hierarchy). */
static void scan_bus(unsigned bus, int depth)
{
    int first = nfns;
    for (unsigned dev = 0; dev < 32; dev++) {
        for (unsigned fn = 0; fn < 8; fn++) {
            unsigned bdf = bus << 8 | dev << 3 | fn;
            u32 id = pci_read32(bdf, 0);
            if ((id & 0xffff) == 0xffff || (id & 0xffff) == 0) {
                if (fn == 0)
                    break;
                continue;
            }
            u8 hdr = pci_read8(bdf, 0x0e);
            if (nfns < PCI_MAX_FNS) {
                struct pci_fn *f = &fns[nfns++];
                memset(f, 0, sizeof *f);
                f->bdf = (u16)bdf;
                f->vendor = (u16)id;
                f->device = (u16)(id >> 16);
                f->class = pci_read32(bdf, 8) >> 8;
                f->hdr = hdr;
                size_bars(f);
                walk_caps(f);
            }
            if (fn == 0 && !(hdr & 0x80))
                break;                          /* single-function device */
        }
    }
    int last = nfns;
    for (int k = first; k < last && depth < 8; k++) {
        if ((fns[k].hdr & 0x7f) != 1)
            continue;
        u32 buses = pci_read32(fns[k].bdf, 0x18);
        unsigned sec = (buses >> 8) & 0xff, sub = (buses >> 16) & 0xff;
        fns[k].secondary = (u8)sec;
        fns[k].subordinate = (u8)sub;
        if (sec > bus && sec <= sub)
            scan_bus(sec, depth + 1);
    }
}

int pci_enumerate(void)
{
    nfns = 0;
    scan_bus(0, 0);
    assign_bars();
    for (int k = 0; k < nfns; k++) {
        struct pci_fn *f = &fns[k];
        enable_decoding(f);
        char line[256];
        int n = snprintf_(line, sizeof line, "# %02x:%02x.%u %04x:%04x %06x", f->bdf >> 8,
                          (f->bdf >> 3) & 31, f->bdf & 7, f->vendor, f->device, f->class);
        if (f->hdr & 0x80)
            n += snprintf_(line + n, sizeof line - n, " mf");
        if ((f->hdr & 0x7f) == 1)
            n += snprintf_(line + n, sizeof line - n, " buses=%02x:%02x", f->secondary,
                           f->subordinate);
        for (int i = 0; i < 6 && n < (int)sizeof line; i++) {
            struct pci_bar *b = &f->bar[i];
            if (b->type == BAR_NONE || b->type == BAR_UPPER)
                continue;
            n += snprintf_(line + n, sizeof line - n, " bar%d=%s:0x%lx@0x%lx%s", i, bar_kind(b),
                           b->size, b->addr, b->assigned ? "(assigned)" : "");
        }
        if (f->ncaps && n < (int)sizeof line)
            n += snprintf_(line + n, sizeof line - n, " caps");
        for (int c = 0; c < f->ncaps && n < (int)sizeof line; c++)
            n += snprintf_(line + n, sizeof line - n, "%s%02x@%02x", c ? "," : "=", f->cap_id[c],
                           f->cap_off[c]);
        printf_("%s\n", line);
    }
    return nfns;
}

const struct pci_fn *pci_fn_at(int i) { return i >= 0 && i < nfns ? &fns[i] : 0; }

const struct pci_fn *pci_find(u16 vendor, u16 device)
{
    for (int k = 0; k < nfns; k++)
        if (fns[k].vendor == vendor && fns[k].device == device)
            return &fns[k];
    return 0;
}

u8 pci_find_cap(const struct pci_fn *f, u8 id, u8 after)
{
    int seen = !after;
    for (int c = 0; c < f->ncaps; c++) {
        if (seen && f->cap_id[c] == id)
            return f->cap_off[c];
        if (f->cap_off[c] == after)
            seen = 1;
    }
    return 0;
}
