/* ferrovm test guest: the virtio-blk checks and the blk-* plans (README.md
 * documents the output lines and the data pattern). */
#include "tg.h"

struct blk_cfg blkcfg;
static int up;

#define SECT 512u
#define CHUNK 256u              /* sectors per request: 128 KiB */
#define MAXQD 32u
#define NOPROGRESS_US ((u64)60000000)   /* guest time (PM timer: stops while the VM is paused) */

/* Byte i of sector s = (s*131 + i*7 + seed) & 0xff. */
static void pattern_fill(u8 *p, u64 s, u32 n)
{
    for (u32 k = 0; k < n; k++, s++) {
        u8 b = (u8)(s * 131 + blkcfg.seed);
        for (u32 i = 0; i < SECT; i++, b = (u8)(b + 7))
            *p++ = b;
    }
}

struct mismatch {
    int found;
    u64 sector;
    u32 byte;
    u8 got, want;
};

static int pattern_check(const u8 *p, u64 s, u32 n, struct mismatch *m)
{
    for (u32 k = 0; k < n; k++, s++) {
        u8 b = (u8)(s * 131 + blkcfg.seed);
        for (u32 i = 0; i < SECT; i++, b = (u8)(b + 7), p++)
            if (*p != b) {
                if (!m->found) {
                    m->found = 1;
                    m->sector = s;
                    m->byte = i;
                    m->got = *p;
                    m->want = b;
                }
                return 0;
            }
    }
    return 1;
}

/* ------------------------------------------------------------------ */
/* A pipeline of `qd` requests of up to `chunk` sectors over [start, start+count).
 * Writes carry the pattern when `pat`; reads are checked against it when `pat`. */
struct stream {
    u32 type;
    u64 start, count;
    u32 chunk;
    unsigned qd;
    int pat;
    int nowait;                 /* submit everything that fits, kick, return */
    /* results */
    u8 bad_status;
    u64 bad_sector;
    u64 done_reqs, submitted;
    struct mismatch mm;
    int timeout;
};

static u8 slot_of_head[256], mine[256];

static int run_stream(struct stream *st)
{
    u64 next = st->start, end = st->start + st->count;
    u64 sect_of[MAXQD];
    u32 n_of[MAXQD];
    u8 free_slots[MAXQD];
    unsigned nfs = 0, inflight = 0;
    unsigned qd = st->qd > MAXQD ? MAXQD : st->qd;
    if ((u64)qd * st->chunk * SECT > DMA_DATA_SIZE)
        qd = (unsigned)(DMA_DATA_SIZE / ((u64)st->chunk * SECT));
    for (unsigned i = qd; i-- > 0;)
        free_slots[nfs++] = (u8)i;
    u64 last_progress = clock_us(), next_check = rdtsc() + tsc_hz() / 1000;
    st->bad_status = 0;
    while (next < end || inflight) {
        int added = 0;
        while (next < end && nfs) {
            u32 n = end - next < st->chunk ? (u32)(end - next) : st->chunk;
            u8 slot = free_slots[nfs - 1];
            u8 *buf = phys(DMA_DATA + (u64)slot * st->chunk * SECT);
            if (st->pat && st->type == VIRTIO_BLK_T_OUT)
                pattern_fill(buf, next, n);
            int h = vblk_submit(st->type, next, buf, n * SECT);
            if (h < 0)
                break;
            nfs--;
            slot_of_head[h] = slot;
            mine[h] = 1;
            sect_of[slot] = next;
            n_of[slot] = n;
            next += n;
            inflight++;
            st->submitted++;
            added = 1;
        }
        if (added)
            vblk_kick();
        if (st->nowait)
            return 1;
        u16 id;
        u8 s;
        int got = 0;
        while (vblk_reap(&id, &s)) {
            got = 1;
            if (id >= 256 || !mine[id])
                continue;                   /* not this stream's (a stale completion) */
            mine[id] = 0;
            u8 slot = slot_of_head[id];
            inflight--;
            st->done_reqs++;
            if (s != VIRTIO_BLK_S_OK && !st->bad_status) {
                st->bad_status = s ? s : 0xfe;
                st->bad_sector = sect_of[slot];
            }
            if (s == VIRTIO_BLK_S_OK && st->pat && st->type == VIRTIO_BLK_T_IN)
                pattern_check(phys(DMA_DATA + (u64)slot * st->chunk * SECT), sect_of[slot], n_of[slot], &st->mm);
            free_slots[nfs++] = slot;
        }
        if (got) {
            next_check = rdtsc() + tsc_hz() / 1000;
            last_progress = 0;
        } else if (rdtsc() > next_check) {
            u64 now = clock_us();
            if (!last_progress)
                last_progress = now;
            if (now - last_progress > NOPROGRESS_US) {
                st->timeout = 1;
                return 0;
            }
            next_check = rdtsc() + tsc_hz() / 1000;
        }
        cpu_relax();
    }
    return !st->bad_status && !st->mm.found;
}

static void stream_reason(const struct stream *st, char *r, size_t n)
{
    if (st->timeout)
        snprintf_(r, n, "no completion for %lus, %lu of %lu requests done", NOPROGRESS_US / 1000000,
                  st->done_reqs, st->submitted);
    else if (st->bad_status)
        snprintf_(r, n, "status %u at sector %lu", st->bad_status, st->bad_sector);
    else if (st->mm.found)
        snprintf_(r, n, "mismatch at sector %lu byte %u: got 0x%02x want 0x%02x", st->mm.sector, st->mm.byte,
                  st->mm.got, st->mm.want);
    else
        r[0] = 0;
}

static int region_ok(const char *name, u64 start, u64 count)
{
    if (start + count <= vblk()->capacity && count)
        return 1;
    tap(0, name, "sectors %lu+%lu outside capacity %lu", start, count, vblk()->capacity);
    return 0;
}

/* ------------------------------------------------------------------ */
/* The checks every plan runs when a virtio-blk device is present. */
/* Reads sector 1 with interrupts on, waits (2 s) for vector IRQ_BASE + v and
   takes the completion (1 s). With `read_isr` (INTx) the ISR is read after
   the interrupt, which drops the device's line. */
struct irq_read {
    int head, reaped;
    u64 count;
    u16 id;
    u8 status, isr;
};

static struct irq_read read_by_interrupt(unsigned v, int read_isr)
{
    struct irq_read r = {.id = 0xffff, .status = 0xff};
    u64 before = irq_count[v];
    vblk_irq_mode(1);
    r.head = vblk_submit(VIRTIO_BLK_T_IN, 1, phys(DMA_DATA), SECT);
    vblk_kick();
    irq_wait_vector(v, before, 2000000);
    r.count = irq_count[v] - before;
    if (read_isr)
        r.isr = vblk_read_isr();
    for (u64 t = clock_us() + 1000000; !r.reaped && clock_us() < t;)
        r.reaped = vblk_reap(&r.id, &r.status);
    vblk_irq_mode(0);
    return r;
}

int blk_checks(void)
{
    up = 0;
    const struct pci_fn *f = vblk_find();
    if (!f) {
        if (blkcfg.disk || blkcfg.plan != BLK_NONE)
            tap(0, "virtio-blk device", "no 1af4:1042 on bus 0");
        return 0;
    }
    char name[64], why[96];
    snprintf_(name, sizeof name, "virtio-blk init %02x:%02x.%u", f->bdf >> 8, (f->bdf >> 3) & 31, f->bdf & 7);
    if (!ram_covers(DMA_BASE, DMA_SIZE)) {
        tap(0, name, "no RAM at 0x%lx-0x%lx for rings and buffers", DMA_BASE, DMA_BASE + DMA_SIZE - 1);
        return 0;
    }
    vblk_no_msix = blkcfg.plan == BLK_INTX;
    if (!vblk_init(f, why, sizeof why)) {
        tap(0, name, "%s", why);
        return 0;
    }
    tap(1, name, "capacity=%lu", vblk()->capacity);
    up = 1;

    /* GET_ID: 20 bytes, NUL-terminated only when shorter */
    u8 *id = phys(DMA_DATA);
    memset(id, 0, 32);
    u8 s = vblk_sync(VIRTIO_BLK_T_GET_ID, 0, id, 20, 5000000);
    char serial[21];
    for (int i = 0; i < 20; i++)
        serial[i] = id[i] >= 0x20 && id[i] < 0x7f ? (char)id[i] : id[i] ? '?' : 0;
    serial[20] = 0;
    printf_("# serial=%s\n", serial);
    tap(s == VIRTIO_BLK_S_OK, "virtio-blk get_id", s == VIRTIO_BLK_S_OK ? 0 : "status %u", s);

    /* one polled read of sector 0 (interrupts suppressed) */
    memset(phys(DMA_DATA), 0x5a, SECT);
    s = vblk_sync(VIRTIO_BLK_T_IN, 0, phys(DMA_DATA), SECT, 5000000);
    tap(s == VIRTIO_BLK_S_OK, "virtio-blk read sector 0", s == VIRTIO_BLK_S_OK ? 0 : "status %u", s);

    /* one read completed by an MSI-X interrupt (blk-intx leaves MSI-X off) */
    if (blkcfg.plan == BLK_INTX) {
        puts_("# msix: left off for blk-intx\n");
    } else if (!vblk()->msix) {
        tap(0, "virtio-blk msix interrupt", "no usable MSI-X");
    } else {
        int self = irq_self_test();
        irq_drain();
        struct irq_read r = read_by_interrupt(vblk()->queue_vector - IRQ_BASE, 0);
        irq_drain();
        int done = r.reaped && r.id == r.head && r.status == VIRTIO_BLK_S_OK;
        tap(r.head >= 0 && r.count == 1 && done, "virtio-blk msix interrupt", "vector 0x%x count %lu%s%s",
            vblk()->queue_vector, r.count, done ? "" : ", request not completed",
            self ? "" : ", lapic self-ipi not delivered");
    }
    return 1;
}

/* ------------------------------------------------------------------ */
/* Writes (or reads and checks) the pattern over [start, start+count) at
   queue depth 8. A failure is reported as check `name`; so is a read's
   success, while a write that works leaves the verdict to the caller. */
static int pattern_stream(u32 type, const char *name, u64 start, u64 count)
{
    struct stream st = {.type = type, .start = start, .count = count, .chunk = CHUNK, .qd = 8, .pat = 1};
    int ok = run_stream(&st);
    char r[96];
    stream_reason(&st, r, sizeof r);
    if (!ok || type == VIRTIO_BLK_T_IN)
        tap(ok, name, ok ? 0 : "%s", r);
    return ok;
}

static int write_pattern(const char *name, u64 start, u64 count)
{
    return pattern_stream(VIRTIO_BLK_T_OUT, name, start, count);
}

static int read_pattern(const char *name, u64 start, u64 count)
{
    return pattern_stream(VIRTIO_BLK_T_IN, name, start, count);
}

static u8 flush(void)
{
    if (!(vblk()->features & VIRTIO_BLK_F_FLUSH))
        return VIRTIO_BLK_S_OK;
    return vblk_sync(VIRTIO_BLK_T_FLUSH, 0, 0, 0, 30000000);
}

/* DISCARD / WRITE_ZEROES on the 8 sectors after the region, as offered. */
static void zeroes_and_discard(u64 at)
{
    struct seg {
        u64 sector;
        u32 num, flags;
    } *sg = phys(DMA_DATA);
    if (at + 8 > vblk()->capacity)
        return;
    if (vblk()->features & VIRTIO_BLK_F_WRITE_ZEROES) {
        sg->sector = at;
        sg->num = 8;
        sg->flags = 0;
        u8 s = vblk_sync(VIRTIO_BLK_T_WRITE_ZEROES, 0, sg, 16, 10000000);
        int ok = s == VIRTIO_BLK_S_OK;
        u8 *b = phys(DMA_DATA + 4096);
        if (ok) {
            memset(b, 0xa5, 8 * SECT);
            s = vblk_sync(VIRTIO_BLK_T_IN, at, b, 8 * SECT, 5000000);
            for (u32 i = 0; i < 8 * SECT && s == VIRTIO_BLK_S_OK; i++)
                if (b[i]) {
                    s = 0xfd;
                    break;
                }
            ok = s == VIRTIO_BLK_S_OK;
        }
        char n[48];
        snprintf_(n, sizeof n, "blk write_zeroes sectors=%lu+8", at);
        tap(ok, n, ok ? 0 : s == 0xfd ? "sectors not zero afterwards" : "status %u", s);
    }
    if (vblk()->features & VIRTIO_BLK_F_DISCARD) {
        sg->sector = at;
        sg->num = 8;
        sg->flags = 0;
        u8 s = vblk_sync(VIRTIO_BLK_T_DISCARD, 0, sg, 16, 10000000);
        char n[48];
        snprintf_(n, sizeof n, "blk discard sectors=%lu+8", at);
        tap(s == VIRTIO_BLK_S_OK, n, s == VIRTIO_BLK_S_OK ? 0 : "status %u", s);
    }
}

static void plan_write(void)
{
    char name[80];
    snprintf_(name, sizeof name, "blk write sectors=%lu+%lu seed=%lu", blkcfg.start, blkcfg.sectors, blkcfg.seed);
    if (!region_ok(name, blkcfg.start, blkcfg.sectors) || !write_pattern(name, blkcfg.start, blkcfg.sectors))
        return;
    u8 s = flush();
    tap(s == VIRTIO_BLK_S_OK, name, s == VIRTIO_BLK_S_OK ? 0 : "flush status %u", s);
    zeroes_and_discard(blkcfg.start + blkcfg.sectors);
}

static void plan_read(void)
{
    char name[80];
    snprintf_(name, sizeof name, "blk read sectors=%lu+%lu seed=%lu", blkcfg.start, blkcfg.sectors, blkcfg.seed);
    if (region_ok(name, blkcfg.start, blkcfg.sectors))
        read_pattern(name, blkcfg.start, blkcfg.sectors);
}

static void plan_ro(void)
{
    int ro = !!(vblk()->features & VIRTIO_BLK_F_RO);
    tap(ro, "blk ro feature offered", ro ? 0 : "features 0x%lx", vblk()->offered);
    u8 *b = phys(DMA_DATA);
    pattern_fill(b, blkcfg.start, 8);
    u8 s = vblk_sync(VIRTIO_BLK_T_OUT, blkcfg.start, b, 8 * SECT, 10000000);
    tap(s == VIRTIO_BLK_S_IOERR, "blk ro write refused", "status %u", s);
    char name[80];
    snprintf_(name, sizeof name, "blk ro read sectors=%lu+%lu seed=%lu", blkcfg.start, blkcfg.sectors, blkcfg.seed);
    if (region_ok(name, blkcfg.start, blkcfg.sectors))
        read_pattern(name, blkcfg.start, blkcfg.sectors);
}

static int plan_reset(unsigned boot)
{
    char name[80];
    if (boot <= 1) {
        u64 count = (u64)MAXQD * CHUNK;
        if (!region_ok("blk reset writes in flight", blkcfg.start, count))
            return 0;
        struct stream st = {.type = VIRTIO_BLK_T_OUT, .start = blkcfg.start, .count = count, .chunk = CHUNK,
                            .qd = MAXQD, .pat = 1, .nowait = 1};
        run_stream(&st);
        u16 used = 0;
        for (u16 id; vblk_used_pending();) {
            u8 s;
            vblk_reap(&id, &s);
            used++;
        }
        printf_("# blk-reset: %lu writes of %u KiB submitted, %u completed before the reset\n", st.submitted,
                CHUNK / 2, used);
        tap(st.submitted > 0, "blk reset writes in flight", "%lu", st.submitted);
        return 1;
    }
    snprintf_(name, sizeof name, "blk reset recovery write+read sectors=%lu+%lu seed=%lu", blkcfg.start,
              blkcfg.sectors, blkcfg.seed);
    if (region_ok(name, blkcfg.start, blkcfg.sectors) && write_pattern(name, blkcfg.start, blkcfg.sectors)) {
        u8 s = flush();
        if (s != VIRTIO_BLK_S_OK)
            tap(0, name, "flush status %u", s);
        else
            read_pattern(name, blkcfg.start, blkcfg.sectors);
    }
    return 0;
}

static void plan_fill(void)
{
    char name[48];
    snprintf_(name, sizeof name, "blk fill mib=%lu", blkcfg.mib);
    u64 count = blkcfg.mib * 2048;
    if (!region_ok(name, blkcfg.start, count))
        return;
    printf_("# blk-fill: writing %lu MiB from sector %lu\n", blkcfg.mib, blkcfg.start);
    struct stream st = {.type = VIRTIO_BLK_T_OUT, .start = blkcfg.start, .count = count, .chunk = CHUNK, .qd = 8, .pat = 1};
    int ok = run_stream(&st);
    char r[96];
    stream_reason(&st, r, sizeof r);
    u8 s = ok ? flush() : 0;
    if (ok && s != VIRTIO_BLK_S_OK)
        snprintf_(r, sizeof r, "flush status %u", s);
    tap(ok && s == VIRTIO_BLK_S_OK, name, ok && s == VIRTIO_BLK_S_OK ? 0 : "%s", r);
}

/* plan=blk-fill2: `blk_mib` MiB from `blk_start` onto each of the first two
   virtio-blk devices at once, 4 requests of 128 KiB in flight on each (the
   data is not checked: this is the load for limits shared by both disks). */
static const struct pci_fn *second_vblk(void)
{
    const struct pci_fn *first = vblk_find(), *f;
    for (int i = 0; (f = pci_fn_at(i)); i++)
        if (f != first && f->vendor == 0x1af4 && f->device == 0x1042)
            return f;
    return 0;
}

static void plan_fill2(void)
{
    char name[48], why[96];
    snprintf_(name, sizeof name, "blk fill2 mib=%lu", blkcfg.mib);
    const struct pci_fn *f = second_vblk();
    if (!f) {
        tap(0, name, "no second 1af4:1042 on bus 0");
        return;
    }
    vblk_use(1);
    vblk_no_msix = 1;           /* polled: device 0 keeps the vectors */
    int ok = vblk_init(f, why, sizeof why);
    vblk_no_msix = 0;
    if (!ok) {
        vblk_use(0);
        tap(0, name, "second device: %s", why);
        return;
    }
    u64 count = blkcfg.mib * 2048, end = blkcfg.start + count;
    u64 next[2] = {blkcfg.start, blkcfg.start}, inflight[2] = {0, 0};
    unsigned qd = 4;
    u8 bad = 0;
    for (unsigned d = 0; d < 2; d++) {
        vblk_use(d);
        if (!region_ok(name, blkcfg.start, count)) {
            vblk_use(0);
            return;
        }
    }
    printf_("# blk-fill2: writing %lu MiB from sector %lu on each of two disks\n", blkcfg.mib, blkcfg.start);
    u64 last = clock_us();
    while ((next[0] < end || inflight[0] || next[1] < end || inflight[1]) && !bad) {
        for (unsigned d = 0; d < 2; d++) {
            vblk_use(d);
            int added = 0;
            while (next[d] < end && inflight[d] < qd) {
                u32 n = end - next[d] < CHUNK ? (u32)(end - next[d]) : CHUNK;
                u8 *buf = phys(DMA_DATA + (u64)(d * qd + next[d] / CHUNK % qd) * CHUNK * SECT);
                if (vblk_submit(VIRTIO_BLK_T_OUT, next[d], buf, n * SECT) < 0)
                    break;
                next[d] += n;
                inflight[d]++;
                added = 1;
            }
            if (added)
                vblk_kick();
            u16 id;
            u8 st;
            while (vblk_reap(&id, &st)) {
                inflight[d]--;
                last = clock_us();
                if (st != VIRTIO_BLK_S_OK)
                    bad = st;
            }
        }
        if (clock_us() - last > NOPROGRESS_US)
            break;
    }
    u8 s0 = 0, s1 = 0;
    if (!bad && next[0] >= end && next[1] >= end && !inflight[0] && !inflight[1]) {
        vblk_use(1);
        s1 = flush();
        vblk_use(0);
        s0 = flush();
        ok = s0 == VIRTIO_BLK_S_OK && s1 == VIRTIO_BLK_S_OK;
        tap(ok, name, ok ? 0 : "flush status %u/%u", s0, s1);
    } else if (bad) {
        vblk_use(0);
        tap(0, name, "write status %u", bad);
    } else {
        vblk_use(0);
        tap(0, name, "no progress for 60 s (up to sectors %lu, %lu)", next[0], next[1]);
    }
}

/* Waits (up to 60 s of guest time) for the configuration-change interrupt a
   capacity change raises (the host resizes the disk: QMP block_resize), then
   reads the capacity again. */
static void plan_resize(void)
{
    u64 old = vblk()->capacity;
    if (!vblk()->msix) {
        tap(0, "blk resize", "no usable MSI-X for the config vector");
        return;
    }
    irq_drain();
    unsigned v = vblk()->config_vector - IRQ_BASE;
    u64 before = irq_count[v];
    printf_("# blk-resize: capacity %lu, waiting for a config interrupt\n", old);
    irq_wait_vector(v, before, 60000000);
    u64 seen = irq_count[v] - before;
    vblk_reread_config();
    u64 now = vblk()->capacity;
    tap(seen > 0 && now != old, "blk resize", "capacity %lu -> %lu, %lu config interrupt(s)",
        old, now, seen);
}

/* MSI-X left off: one read completes through INTA# on the IOAPIC GSI given
   as intx_gsi= (the DSDT's _PRT entry for the slot; level, active high),
   routed here to vector 0x42. Reading the ISR drops the line. */
#define IOAPIC_BASE 0xfec00000ul
static void ioapic_write(u32 reg, u32 v)
{
    mmio_write32(IOAPIC_BASE, reg);
    mmio_write32(IOAPIC_BASE + 0x10, v);
}

static void plan_intx(void)
{
    u64 gsi = blkcfg.intx_gsi;
    if (!gsi || gsi > 23) {
        tap(0, "blk intx interrupt", "intx_gsi= (16-23) not given");
        return;
    }
    unsigned v = 2;
    irq_drain();
    /* fixed delivery, physical destination, active high, level, unmasked */
    ioapic_write(0x11 + 2 * (u32)gsi, lapic_id() << 24);
    ioapic_write(0x10 + 2 * (u32)gsi, (IRQ_BASE + v) | 1u << 15);
    struct irq_read r = read_by_interrupt(v, 1);
    ioapic_write(0x10 + 2 * (u32)gsi, 1u << 16);   /* masked again */
    tap(r.head >= 0 && r.count > 0 && (r.isr & 1) && r.reaped && r.status == VIRTIO_BLK_S_OK,
        "blk intx interrupt", "gsi %lu vector 0x%x count %lu isr 0x%x status %u", gsi, IRQ_BASE + v,
        r.count, r.isr, r.status);
}

int blk_plan_run(unsigned boot)
{
    if (!up)
        return 0;
    switch (blkcfg.plan) {
    case BLK_WRITE:
        plan_write();
        break;
    case BLK_READ:
        plan_read();
        break;
    case BLK_RO:
        plan_ro();
        break;
    case BLK_RESET:
        return plan_reset(boot);
    case BLK_FILL:
        plan_fill();
        break;
    case BLK_BENCH:
        blk_bench();
        break;
    case BLK_RANDW:
        blk_bench_randw();
        break;
    case BLK_SEQREAD:
        blk_bench_seqread();
        break;
    case BLK_FILL2:
        plan_fill2();
        break;
    case BLK_RESIZE:
        plan_resize();
        break;
    case BLK_INTX:
        plan_intx();
        break;
    case BLK_NONE:
        break;
    }
    return 0;
}
