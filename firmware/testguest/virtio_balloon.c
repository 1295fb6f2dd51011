/* ferrovm test guest: a polled virtio-balloon driver (virtio 1.2 §5.5) and
 * plan=balloon.
 *
 * The pool is the RAM from above the image and the DMA regions to the end of
 * that RAM region less a margin (and below the start_info, memmap, cmdline
 * and ACPI tables).  Every pool page is written once at start so the host has
 * it resident.  The balloon holds the top `inflated` pages of the pool;
 * inflating gives the next lower pages, deflating takes back the lowest ones.
 * Queues: 0 inflate, 1 deflate, 2 stats (with VIRTIO_BALLOON_F_STATS_VQ). */
#include "virtio.h"

#define F_MUST_TELL_HOST 0
#define F_STATS_VQ 1
#define F_DEFLATE_ON_OOM 2
#define CFG_NUM_PAGES 0
#define CFG_ACTUAL 4

#define S_SWAP_IN 0
#define S_SWAP_OUT 1
#define S_MEMFREE 4
#define S_MEMTOT 5
#define S_AVAIL 6

#define PAGE ((u64)4096)
#define BATCH 256u                          /* PFNs per descriptor chain */
#define MARGIN ((u64)4 << 20)                 /* left alone at the top of the RAM region */
#define WAIT_US ((u64)5000000)

struct stat {
    u16 tag;
    u64 val;
} __attribute__((packed));
#define NSTATS 5

static struct vdev dev;
static struct vq infq, defq, stq;
static int have_stats;
static u32 *pfns;
static struct stat *stats;
static u64 pool_lo, pool_pages, inflated, stats_sent;

static void fill_stats(void)
{
    u64 free = (pool_pages - inflated) * PAGE;
    const struct stat s[NSTATS] = {
        {S_SWAP_IN, 0}, {S_SWAP_OUT, 0}, {S_MEMFREE, free}, {S_MEMTOT, ram_total()}, {S_AVAIL, free},
    };
    memcpy(stats, s, sizeof s);
}

static void stats_give(void)
{
    fill_stats();
    struct vbuf b = {(u64)(uintptr_t)stats, sizeof(struct stat) * NSTATS};
    if (vq_add(&stq, &b, 1, 0) >= 0) {
        vq_kick(&stq);
        stats_sent++;
    }
}

/* One chain of `n` PFNs on `q`; 1 once the device has used it. */
static int give_pfns(struct vq *q, u64 first_page, u32 n)
{
    for (u32 i = 0; i < n; i++)
        pfns[i] = (u32)((pool_lo >> 12) + first_page + i);
    struct vbuf b = {(u64)(uintptr_t)pfns, 4 * n};
    int head = vq_add(q, &b, 1, 0);
    if (head < 0)
        return 0;
    vq_kick(q);
    u64 end = clock_us() + WAIT_US;
    u32 len;
    int got;
    while ((got = vq_reap(q, &len)) == -1) {
        if (clock_us() > end)
            return 0;
        cpu_relax();
    }
    return got == head;
}

static u64 pattern(u64 addr) { return addr * 0x9e3779b97f4a7c15ull ^ 0x5a5a5a5a5a5a5a5aull; }

/* Writes then reads back every word of the pages just taken back. */
static int check_pages(u64 first_page, u32 n)
{
    for (u32 i = 0; i < n; i++) {
        u64 base = pool_lo + (first_page + i) * PAGE;
        volatile u64 *p = phys(base);
        for (u32 w = 0; w < PAGE / 8; w++)
            p[w] = pattern(base + 8 * w);
        for (u32 w = 0; w < PAGE / 8; w++)
            if (p[w] != pattern(base + 8 * w)) {
                printf_("not ok - balloon deflated page 0x%lx word %u reads 0x%lx want 0x%lx\n", base, w, p[w],
                        pattern(base + 8 * w));
                return 0;
            }
    }
    return 1;
}

int balloon_checks(void)
{
    const struct pci_fn *f = virtio_find(0x1045);
    char why[96];
    if (!f) {
        tap(0, "balloon", "no 1af4:1045 on bus 0");
        return 0;
    }
    if (!virtio_dma_reset()) {
        tap(0, "balloon", "no RAM at 0x%lx-0x%lx for rings", VDMA_BASE, VDMA_BASE + VDMA_SIZE - 1);
        return 0;
    }
    u64 want = 1ull << F_MUST_TELL_HOST | 1ull << F_STATS_VQ | 1ull << F_DEFLATE_ON_OOM;
    if (!virtio_start(&dev, f, want, why, sizeof why) || !virtio_queue(&dev, &infq, 0, 8, why, sizeof why) ||
        !virtio_queue(&dev, &defq, 1, 8, why, sizeof why)) {
        tap(0, "balloon", "%s", why);
        return 0;
    }
    have_stats = !!(dev.features & 1ull << F_STATS_VQ);
    if (have_stats && !virtio_queue(&dev, &stq, 2, 8, why, sizeof why)) {
        tap(0, "balloon", "%s", why);
        return 0;
    }
    pfns = virtio_dma_alloc(4 * BATCH, 4096);
    stats = virtio_dma_alloc(sizeof(struct stat) * NSTATS, 64);
    if (!pfns || !stats) {
        tap(0, "balloon", "no DMA memory");
        return 0;
    }

    /* the pool, each page written once */
    extern char __image_end[];
    u64 lo = (u64)(uintptr_t)__image_end;
    if (lo < VDMA_BASE + VDMA_SIZE)
        lo = VDMA_BASE + VDMA_SIZE;
    pool_lo = (lo + PAGE - 1) & ~(PAGE - 1);
    u64 hi = ram_free_end(pool_lo, MARGIN);
    pool_pages = hi > pool_lo ? (hi - pool_lo) / PAGE : 0;
    for (u64 i = 0; i < pool_pages; i++)
        *(volatile u64 *)phys(pool_lo + i * PAGE) = pool_lo + i * PAGE;
    printf_("# balloon pool=%lu pages\n", pool_pages);

    if (!virtio_driver_ok(&dev, why, sizeof why)) {
        tap(0, "balloon", "%s", why);
        return 0;
    }
    virtio_cfg_w32(&dev, CFG_ACTUAL, 0);
    if (have_stats)
        stats_give();
    printf_("# virtio-balloon %02x:%02x.%u: features offered 0x%lx accepted 0x%lx; pool 0x%lx-0x%lx\n",
            f->bdf >> 8, (f->bdf >> 3) & 31, f->bdf & 7, dev.offered, dev.features, pool_lo,
            pool_lo + pool_pages * PAGE - 1);
    tap(1, "balloon", 0);
    return 1;
}

void balloon_run(void)
{
    pwrbtn_arm();
    u64 hz = tsc_hz(), next_cfg = 0, next_btn = 0;
    u64 shown_target = ~0ull, shown_actual = ~0ull;
    u32 len;
    for (;;) {
        u64 now = rdtsc();
        if (have_stats && vq_reap(&stq, &len) != -1)
            stats_give();                   /* the device wants fresh stats */
        if (now > next_btn) {
            if (pwrbtn_pressed()) {
                printf_("# balloon stats_sent=%lu\n", stats_sent);
                poweroff();
            }
            next_btn = now + hz / 100;
        }
        if (now < next_cfg)
            continue;
        u64 target = virtio_cfg32(&dev, CFG_NUM_PAGES);
        u64 goal = target < pool_pages ? target : pool_pages;
        if (goal > inflated) {
            u32 n = goal - inflated < BATCH ? (u32)(goal - inflated) : BATCH;
            if (!give_pfns(&infq, pool_pages - inflated - n, n)) {
                puts_("not ok - balloon inflate chain not used by the device\n");
                next_cfg = now + hz;
                continue;
            }
            inflated += n;
            virtio_cfg_w32(&dev, CFG_ACTUAL, (u32)inflated);
        } else if (goal < inflated) {
            u32 n = inflated - goal < BATCH ? (u32)(inflated - goal) : BATCH;
            u64 first = pool_pages - inflated;
            if (!give_pfns(&defq, first, n)) {
                puts_("not ok - balloon deflate chain not used by the device\n");
                next_cfg = now + hz;
                continue;
            }
            inflated -= n;
            virtio_cfg_w32(&dev, CFG_ACTUAL, (u32)inflated);
            check_pages(first, n);
        } else {
            if (target != shown_target || inflated != shown_actual) {
                if (target > pool_pages)
                    printf_("# balloon actual=%lu pages (target %lu: pool exhausted)\n", inflated, target);
                else
                    printf_("# balloon actual=%lu pages\n", inflated);
                shown_target = target;
                shown_actual = inflated;
            }
            next_cfg = now + hz / 1000;
        }
    }
}
