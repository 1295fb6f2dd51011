/* ferrovm test guest: shared modern virtio-pci layer (virtio 1.2 §4.1.4
 * capabilities, §4.1.4.3 common configuration, §3.1.1 initialization, §2.7
 * split virtqueues).  Everything is polled: queues are set up with no MSI-X
 * vector and VRING_AVAIL_F_NO_INTERRUPT, and the device configuration is
 * read directly (with the config generation for multi-field reads). */
#include "virtio.h"

#define CC_DFSELECT 0x00
#define CC_DF 0x04
#define CC_GFSELECT 0x08
#define CC_GF 0x0c
#define CC_MSIX 0x10
#define CC_NUMQ 0x12
#define CC_STATUS 0x14
#define CC_CFGGEN 0x15
#define CC_Q_SELECT 0x16
#define CC_Q_SIZE 0x18
#define CC_Q_MSIX 0x1a
#define CC_Q_ENABLE 0x1c
#define CC_Q_NOFF 0x1e
#define CC_Q_DESCLO 0x20
#define CC_Q_AVAILLO 0x28
#define CC_Q_USEDLO 0x30

#define S_ACK 1
#define S_DRIVER 2
#define S_DRIVER_OK 4
#define S_FEATURES_OK 8
#define S_NEEDS_RESET 0x40
#define S_FAILED 0x80
#define NO_VECTOR 0xffff

static inline void barrier(void) { __asm__ volatile("" ::: "memory"); }
static inline void mfence(void) { __asm__ volatile("mfence" ::: "memory"); }

/* ---- DMA memory ---- */
static u64 dma_next;

int virtio_dma_reset(void)
{
    dma_next = VDMA_BASE;
    return ram_covers(VDMA_BASE, VDMA_SIZE);
}

void *virtio_dma_alloc(u64 size, u64 align)
{
    if (!dma_next)
        dma_next = VDMA_BASE;
    u64 a = (dma_next + align - 1) & ~(align - 1);
    if (a + size > VDMA_BASE + VDMA_SIZE)
        return 0;
    dma_next = a + size;
    memset(phys(a), 0, size);
    return phys(a);
}

/* ---- common configuration ---- */
static u8 cc8(struct vdev *d, unsigned o) { return mmio_read8(d->common + o); }
static u16 cc16(struct vdev *d, unsigned o) { return mmio_read16(d->common + o); }
static u32 cc32(struct vdev *d, unsigned o) { return mmio_read32(d->common + o); }
static void wc8(struct vdev *d, unsigned o, u8 v) { mmio_write8(d->common + o, v); }
static void wc16(struct vdev *d, unsigned o, u16 v) { mmio_write16(d->common + o, v); }
static void wc32(struct vdev *d, unsigned o, u32 v) { mmio_write32(d->common + o, v); }
static void wc64(struct vdev *d, unsigned o, u64 v)
{
    wc32(d, o, (u32)v);
    wc32(d, o + 4, (u32)(v >> 32));
}

u8 virtio_cfg_gen(struct vdev *d) { return cc8(d, CC_CFGGEN); }
u8 virtio_cfg8(struct vdev *d, unsigned off) { return mmio_read8(d->devcfg + off); }
u16 virtio_cfg16(struct vdev *d, unsigned off) { return mmio_read16(d->devcfg + off); }
u32 virtio_cfg32(struct vdev *d, unsigned off) { return mmio_read32(d->devcfg + off); }
void virtio_cfg_w32(struct vdev *d, unsigned off, u32 v) { mmio_write32(d->devcfg + off, v); }
u16 virtio_num_queues(struct vdev *d) { return cc16(d, CC_NUMQ); }

const struct pci_fn *virtio_find(u16 id) { return pci_find(0x1af4, id); }

/* The address a virtio_pci_cap points at; 0 if its BAR is not memory. */
static u64 cap_addr(const struct pci_fn *f, u8 off, u32 *len)
{
    u8 bar = pci_read8(f->bdf, off + 4);
    u32 o = pci_read32(f->bdf, off + 8);
    *len = pci_read32(f->bdf, off + 12);
    if (bar > 5)
        return 0;
    const struct pci_bar *b = &f->bar[bar];
    if ((b->type != BAR_MEM32 && b->type != BAR_MEM64) || !b->addr || (u64)o + *len > b->size)
        return 0;
    if (!map_mmio(b->addr + o, *len ? *len : 1))
        return 0;
    return b->addr + o;
}

static int map_caps(struct vdev *d, char *why, size_t n)
{
    const struct pci_fn *f = d->pci;
    u32 len;
    u64 a;
    for (u8 off = pci_find_cap(f, 0x09, 0); off; off = pci_find_cap(f, 0x09, off)) {
        switch (pci_read8(f->bdf, off + 3)) {   /* cfg_type; the first usable of each */
        case 1:
            if (!d->common && (a = cap_addr(f, off, &len)) && len >= 0x38)
                d->common = a;
            break;
        case 2:
            if (!d->notify_base && (a = cap_addr(f, off, &len))) {
                d->notify_base = a;
                d->notify_mult = pci_read32(f->bdf, off + 16);
            }
            break;
        case 3:
            if (!d->isr && (a = cap_addr(f, off, &len)))
                d->isr = a;
            break;
        case 4:
            if (!d->devcfg && (a = cap_addr(f, off, &len))) {
                d->devcfg = a;
                d->devcfg_len = len;
            }
            break;
        }
    }
    if (!d->common || !d->notify_base || !d->devcfg) {
        snprintf_(why, n, "missing virtio caps:%s%s%s", d->common ? "" : " common",
                  d->notify_base ? "" : " notify", d->devcfg ? "" : " device");
        return 0;
    }
    return 1;
}

static int fail(struct vdev *d, char *why, size_t n, const char *what)
{
    u8 st = cc8(d, CC_STATUS);
    snprintf_(why, n, "%s (status 0x%02x)", what, st);
    wc8(d, CC_STATUS, st | S_FAILED);
    return 0;
}

void virtio_reset(struct vdev *d)
{
    if (!d->common)
        return;
    wc8(d, CC_STATUS, 0);
    u64 end = clock_us() + 1000000;
    while (cc8(d, CC_STATUS) && clock_us() < end)
        cpu_relax();
}

int virtio_start(struct vdev *d, const struct pci_fn *f, u64 want, char *why, size_t n)
{
    memset(d, 0, sizeof *d);
    d->pci = f;
    if (!map_caps(d, why, n))
        return 0;
    pci_write16(f->bdf, 4, pci_read16(f->bdf, 4) | 0x6);       /* memory + bus master */
    virtio_reset(d);
    if (cc8(d, CC_STATUS))
        return fail(d, why, n, "reset did not complete");
    wc8(d, CC_STATUS, S_ACK);
    wc8(d, CC_STATUS, S_ACK | S_DRIVER);
    wc32(d, CC_DFSELECT, 0);
    u64 feat = cc32(d, CC_DF);
    wc32(d, CC_DFSELECT, 1);
    feat |= (u64)cc32(d, CC_DF) << 32;
    d->offered = feat;
    if (!(feat >> VIRTIO_F_VERSION_1_BIT & 1))
        return fail(d, why, n, "device does not offer VIRTIO_F_VERSION_1");
    d->features = feat & (want | 1ull << VIRTIO_F_VERSION_1_BIT);
    wc32(d, CC_GFSELECT, 0);
    wc32(d, CC_GF, (u32)d->features);
    wc32(d, CC_GFSELECT, 1);
    wc32(d, CC_GF, (u32)(d->features >> 32));
    wc8(d, CC_STATUS, S_ACK | S_DRIVER | S_FEATURES_OK);
    if (!(cc8(d, CC_STATUS) & S_FEATURES_OK))
        return fail(d, why, n, "FEATURES_OK not accepted");
    wc16(d, CC_MSIX, NO_VECTOR);
    return 1;
}

int virtio_queue(struct vdev *d, struct vq *q, u16 index, u16 max, char *why, size_t n)
{
    char msg[64];
    memset(q, 0, sizeof *q);
    if (index >= cc16(d, CC_NUMQ)) {
        snprintf_(msg, sizeof msg, "queue %u missing (num_queues %u)", index, cc16(d, CC_NUMQ));
        return fail(d, why, n, msg);
    }
    wc16(d, CC_Q_SELECT, index);
    u16 qmax = cc16(d, CC_Q_SIZE);
    if (!qmax) {
        snprintf_(msg, sizeof msg, "queue %u size is 0", index);
        return fail(d, why, n, msg);
    }
    if (max > VQ_MAX)
        max = VQ_MAX;
    u16 qs = qmax < max ? qmax : max;
    wc16(d, CC_Q_SIZE, qs);
    q->size = cc16(d, CC_Q_SIZE);
    if (!q->size || q->size > VQ_MAX) {
        snprintf_(msg, sizeof msg, "queue %u size %u not accepted", index, qs);
        return fail(d, why, n, msg);
    }
    q->index = index;
    q->desc = virtio_dma_alloc(16ull * q->size, 4096);
    q->avail = virtio_dma_alloc(6 + 2ull * q->size, 4096);
    q->used = virtio_dma_alloc(6 + 8ull * q->size, 4096);
    if (!q->desc || !q->avail || !q->used) {
        snprintf_(msg, sizeof msg, "no DMA memory for queue %u", index);
        return fail(d, why, n, msg);
    }
    for (u16 i = 0; i < q->size; i++)
        q->desc[i].next = (u16)(i + 1);
    q->nfree = q->size;
    q->avail[0] = VRING_AVAIL_F_NO_INTERRUPT;
    wc16(d, CC_Q_MSIX, NO_VECTOR);
    wc64(d, CC_Q_DESCLO, (u64)(uintptr_t)q->desc);
    wc64(d, CC_Q_AVAILLO, (u64)(uintptr_t)q->avail);
    wc64(d, CC_Q_USEDLO, (u64)(uintptr_t)q->used);
    q->notify = d->notify_base + (u64)cc16(d, CC_Q_NOFF) * d->notify_mult;
    wc16(d, CC_Q_ENABLE, 1);
    return 1;
}

int virtio_driver_ok(struct vdev *d, char *why, size_t n)
{
    wc8(d, CC_STATUS, S_ACK | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK);
    u8 st = cc8(d, CC_STATUS);
    if (st & (S_NEEDS_RESET | S_FAILED) || !(st & S_DRIVER_OK))
        return fail(d, why, n, "DRIVER_OK not kept");
    return 1;
}

/* ---- split virtqueue ---- */
static volatile u16 *used_idx(const struct vq *q) { return (volatile u16 *)(q->used + 2); }

int vq_add(struct vq *q, const struct vbuf *b, unsigned nout, unsigned nin)
{
    unsigned cnt = nout + nin;
    if (!cnt || cnt > q->nfree)
        return -1;
    u16 head = q->free_head, d = head, last = head;
    for (unsigned i = 0; i < cnt; i++) {
        last = d;
        q->desc[d].addr = b[i].addr;
        q->desc[d].len = b[i].len;
        q->desc[d].flags = (u16)((i >= nout ? VRING_DESC_F_WRITE : 0) | (i + 1 < cnt ? VRING_DESC_F_NEXT : 0));
        d = q->desc[d].next;
    }
    q->free_head = q->desc[last].next;
    q->nfree = (u16)(q->nfree - cnt);
    q->avail[2 + (q->avail_idx % q->size)] = head;
    q->avail_idx++;
    return head;
}

void vq_kick(struct vq *q)
{
    barrier();
    q->avail[1] = q->avail_idx;             /* x86: ring stores are visible before this one */
    mfence();                               /* ... and it before the used flags load below */
    if (q->kicked_idx == q->avail_idx)
        return;
    q->kicked_idx = q->avail_idx;
    if (!(*(volatile u16 *)q->used & VRING_USED_F_NO_NOTIFY)) {
        mmio_write16(q->notify, q->index);
        q->kicks++;
    }
}

int vq_used_pending(const struct vq *q) { return *used_idx(q) != q->last_used; }

int vq_reap(struct vq *q, u32 *len)
{
    if (*used_idx(q) == q->last_used)
        return -1;
    barrier();
    volatile u32 *e = (volatile u32 *)(q->used + 4 + 8u * (q->last_used % q->size));
    u32 head = e[0];
    *len = e[1];
    q->last_used++;
    if (head >= q->size)
        return -2;                          /* a broken device: the entry is dropped */
    u16 d = (u16)head;
    unsigned cnt = 1;
    while ((q->desc[d].flags & VRING_DESC_F_NEXT) && cnt < q->size) {
        d = q->desc[d].next;
        cnt++;
    }
    q->desc[d].next = q->free_head;
    q->free_head = (u16)head;
    q->nfree = (u16)(q->nfree + cnt);
    return (int)head;
}
