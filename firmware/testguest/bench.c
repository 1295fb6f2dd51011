/* ferrovm test guest: plan=blk-bench.  Polled phases run with device
 * interrupts suppressed (VIRTQ_AVAIL_F_NO_INTERRUPT, or used_event behind
 * the used index under EVENT_IDX); the last phase is interrupt-driven (MSI-X)
 * and counts the vector.  Time is the TSC, calibrated against the ACPI PM
 * timer in time.c. */
#include "tg.h"

#define SECT 512u

static u64 tsc_per_us(void)
{
    u64 t = tsc_hz() / 1000000;
    return t ? t : 1;
}

static u64 rng = 0x9e3779b97f4a7c15ull;
static u64 next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* Sequential: `req` sectors per request, `qd` in flight, over the region. */
static int seq(u32 type, u64 start, u64 count, u32 req, unsigned qd, u64 *us)
{
    u64 next = start, end = start + count, inflight = 0;
    u64 t0 = rdtsc(), deadline = t0 + 60 * tsc_hz();
    int ok = 1;
    while (next < end || inflight) {
        int added = 0;
        while (next < end && inflight < qd) {
            u8 *buf = phys(DMA_DATA + ((next - start) / req % qd) * req * SECT);
            u32 n = end - next < req ? (u32)(end - next) : req;
            if (vblk_submit(type, next, buf, n * SECT) < 0)
                break;
            next += n;
            inflight++;
            added = 1;
        }
        if (added)
            vblk_kick();
        u16 id;
        u8 s;
        while (vblk_reap(&id, &s)) {
            inflight--;
            if (s != VIRTIO_BLK_S_OK)
                ok = 0;
        }
        if (rdtsc() > deadline)
            return 0;
    }
    *us = (rdtsc() - t0) / tsc_per_us();
    return ok;
}

/* Random 4 KiB reads at queue depth `qd` for `secs`; returns requests done. */
static u64 rand_reads(u64 start, u64 count, unsigned qd, u64 secs, u64 *us, int *ok)
{
    u64 slots = count / 8, done = 0, inflight = 0;
    u64 t0 = rdtsc(), stop = t0 + secs * tsc_hz();
    u8 slot_of[256];
    u8 free_slots[64];
    unsigned nfs = 0;
    for (unsigned i = 0; i < qd; i++)
        free_slots[nfs++] = (u8)i;
    while (rdtsc() < stop || inflight) {
        int added = 0;
        while (rdtsc() < stop && nfs) {
            u8 slot = free_slots[nfs - 1];
            u64 sector = start + (next_rand() % slots) * 8;
            int h = vblk_submit(VIRTIO_BLK_T_IN, sector, phys(DMA_DATA + slot * 4096u), 4096);
            if (h < 0)
                break;
            nfs--;
            slot_of[h] = slot;
            inflight++;
            added = 1;
        }
        if (added)
            vblk_kick();
        u16 id;
        u8 s;
        while (vblk_reap(&id, &s)) {
            if (s != VIRTIO_BLK_S_OK)
                *ok = 0;
            if (id < 256)
                free_slots[nfs++] = slot_of[id];
            inflight--;
            done++;
        }
        if (rdtsc() > stop + 30 * tsc_hz())
            return *ok = 0;
    }
    *us = (rdtsc() - t0) / tsc_per_us();
    return done;
}

/* Interrupt-driven QD1: submit, spin with IF=1 until the queue's vector
   has been counted, reap.  Returns requests done. */
static u64 irq_qd1(u64 start, u64 count, u64 secs, u64 *lat_sum_us10, u64 *irqs, int *ok)
{
    unsigned v = vblk()->queue_vector - IRQ_BASE;
    u64 slots = count / 8, done = 0, lat = 0;
    u64 stop = rdtsc() + secs * tsc_hz();
    u64 c0 = irq_count[v];
    vblk_irq_mode(1);
    while (rdtsc() < stop) {
        u64 seen = irq_count[v];
        u64 sector = start + (next_rand() % slots) * 8;
        u64 t0 = rdtsc();
        if (vblk_submit(VIRTIO_BLK_T_IN, sector, phys(DMA_DATA), 4096) < 0) {
            *ok = 0;
            break;
        }
        vblk_kick();
        irq_wait_vector(v, seen, 1000000);
        u64 t1 = rdtsc();
        if (irq_count[v] == seen) {
            *ok = 0;
            break;
        }
        u16 id;
        u8 s;
        while (!vblk_reap(&id, &s))
            cpu_relax();
        if (s != VIRTIO_BLK_S_OK)
            *ok = 0;
        lat += t1 - t0;
        done++;
    }
    vblk_irq_mode(0);
    *irqs = irq_count[v] - c0;
    *lat_sum_us10 = lat * 10 / tsc_per_us();
    return done;
}

static void fixed1(char *b, size_t n, u64 tenths) { snprintf_(b, n, "%lu.%lu", tenths / 10, tenths % 10); }

void blk_bench(void)
{
    u64 start = blkcfg.bench_start, count = blkcfg.bench_mib * 2048, secs = blkcfg.bench_secs;
    u32 req = 256;                              /* 128 KiB */
    unsigned qd = 8;
    if (!count || start + count > vblk()->capacity) {
        tap(0, "blk bench", "region %lu+%lu outside capacity %lu", start, count, vblk()->capacity);
        return;
    }
    if (!secs)
        secs = 1;
    if (count < req * qd)
        qd = 1;
    if ((vblk()->features & VIRTIO_BLK_F_SIZE_MAX) && vblk()->size_max < req * SECT)
        printf_("# bench: size_max %u splits each 128 KiB request\n", vblk()->size_max);
    unsigned qd32 = 32;
    if (vblk_free_descs() < qd32 * 3)
        qd32 = vblk_free_descs() / 3;
    printf_("# bench: region sectors %lu+%lu, seq %u KiB x qd %u, rand 4 KiB qd1/qd%u %lus each, "
            "event_idx %u, tsc %lu kHz\n",
            start, count, req / 2, qd, qd32, secs, !!(vblk()->features & VIRTIO_F_EVENT_IDX), tsc_hz() / 1000);
    memset(phys(DMA_DATA), 0x3c, (size_t)req * SECT * qd);
    int ok = 1;
    u64 wus = 1, rus = 1, q1us = 1, q32us = 1;
    ok &= seq(VIRTIO_BLK_T_OUT, start, count, req, qd, &wus);
    if (vblk()->features & VIRTIO_BLK_F_FLUSH)
        ok &= vblk_sync(VIRTIO_BLK_T_FLUSH, 0, 0, 0, 30000000) == VIRTIO_BLK_S_OK;
    ok &= seq(VIRTIO_BLK_T_IN, start, count, req, qd, &rus);
    u64 n1 = rand_reads(start, count, 1, secs, &q1us, &ok);
    u64 n32 = rand_reads(start, count, qd32, secs, &q32us, &ok);
    u64 lat10 = 0, irqs = 0, nirq = 0;
    if (vblk()->msix)
        nirq = irq_qd1(start, count, secs, &lat10, &irqs, &ok);
    u64 bytes = count * SECT;
    char w[24], r[24], l[24];
    fixed1(w, sizeof w, bytes * 10 / (wus ? wus : 1));
    fixed1(r, sizeof r, bytes * 10 / (rus ? rus : 1));
    fixed1(l, sizeof l, nirq ? lat10 / nirq : 0);
    printf_("# bench: seq write %lu us, seq read %lu us, qd1 %lu reads in %lu us, qd%u %lu reads in %lu us, "
            "irq qd1 %lu reads %lu interrupts on vector 0x%x\n",
            wus, rus, n1, q1us, qd32, n32, q32us, nirq, irqs, vblk()->queue_vector);
    printf_("bench seq_read_mbps=%s seq_write_mbps=%s rand4k_qd1_iops=%lu rand4k_qd32_iops=%lu irq_qd1_lat_us=%s\n",
            r, w, n1 * 1000000 / (q1us ? q1us : 1), n32 * 1000000 / (q32us ? q32us : 1), l);
    int irq_ok = vblk()->msix && nirq && irqs == nirq;
    tap(ok && irq_ok, "blk bench", ok && irq_ok ? 0 : "%s", !ok ? "a request failed or timed out"
                                                          : "irq qd1: interrupts do not match requests");
}

/* plan=blk-randw: 4 KiB writes at QD1, then QD32, `bench_secs` each, every
   one into a 64 KiB cluster not written before (the clusters of the region
   in an odd-stride permutation, a random 4 KiB block in each), so on a fresh
   qcow2 image (default cluster size) each write allocates. */
static u64 new_cluster_writes(u64 start, u64 count, unsigned qd, u64 secs, u64 *next, u64 *us, int *ok)
{
    u64 clusters = count / 128, done = 0, inflight = 0;
    u64 stride = (0x9e3779b1ull % clusters) | 1;   /* odd: a permutation when clusters is a power of 2 */
    u64 t0 = rdtsc(), stop = t0 + secs * tsc_hz();
    while ((rdtsc() < stop && *next < clusters) || inflight) {
        int added = 0;
        while (rdtsc() < stop && *next < clusters && inflight < qd) {
            u64 c = (*next * stride) % clusters;
            u64 sector = start + c * 128 + (next_rand() % 16) * 8;
            if (vblk_submit(VIRTIO_BLK_T_OUT, sector, phys(DMA_DATA + (*next % qd) * 4096u), 4096) < 0)
                break;
            (*next)++;
            inflight++;
            added = 1;
        }
        if (added)
            vblk_kick();
        u16 id;
        u8 s;
        while (vblk_reap(&id, &s)) {
            if (s != VIRTIO_BLK_S_OK)
                *ok = 0;
            inflight--;
            done++;
        }
        if (rdtsc() > stop + 30 * tsc_hz())
            return *ok = 0;
    }
    *us = (rdtsc() - t0) / tsc_per_us();
    return done;
}

void blk_bench_randw(void)
{
    u64 start = blkcfg.bench_start, count = blkcfg.bench_mib * 2048, secs = blkcfg.bench_secs ? blkcfg.bench_secs : 1;
    if (count < 128 || start + count > vblk()->capacity) {
        tap(0, "blk bench randw", "region %lu+%lu outside capacity %lu", start, count, vblk()->capacity);
        return;
    }
    unsigned qd32 = 32;
    if (vblk_free_descs() < qd32 * 3)
        qd32 = vblk_free_descs() / 3;
    memset(phys(DMA_DATA), 0x5a, 4096u * qd32);
    int ok = 1;
    u64 next = 0, us1 = 1, us32 = 1;
    u64 n1 = new_cluster_writes(start, count, 1, secs, &next, &us1, &ok);
    u64 n32 = new_cluster_writes(start, count, qd32, secs, &next, &us32, &ok);
    if (vblk()->features & VIRTIO_BLK_F_FLUSH)
        ok &= vblk_sync(VIRTIO_BLK_T_FLUSH, 0, 0, 0, 30000000) == VIRTIO_BLK_S_OK;
    printf_("# bench: new-cluster writes: qd1 %lu in %lu us, qd%u %lu in %lu us, %lu of %lu clusters\n", n1, us1,
            qd32, n32, us32, next, count / 128);
    printf_("bench randw4k_qd1_iops=%lu randw4k_qd32_iops=%lu\n", n1 * 1000000 / (us1 ? us1 : 1),
            n32 * 1000000 / (us32 ? us32 : 1));
    tap(ok, "blk bench randw", ok ? 0 : "a request failed or timed out");
}

/* plan=blk-seqread: the region read once, 128 KiB requests, 8 in flight
   (nothing is written: for a read through a backing chain). */
void blk_bench_seqread(void)
{
    u64 start = blkcfg.bench_start, count = blkcfg.bench_mib * 2048, us = 1;
    if (!count || start + count > vblk()->capacity) {
        tap(0, "blk bench seqread", "region %lu+%lu outside capacity %lu", start, count, vblk()->capacity);
        return;
    }
    int ok = seq(VIRTIO_BLK_T_IN, start, count, 256, 8, &us);
    char r[24];
    fixed1(r, sizeof r, count * SECT * 10 / (us ? us : 1));
    printf_("bench seq_read_mbps=%s\n", r);
    tap(ok, "blk bench seqread", ok ? 0 : "a request failed or timed out");
}
