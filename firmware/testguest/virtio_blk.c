/* ferrovm test guest: a virtio-blk driver over modern virtio-pci (virtio 1.2
 * §4.1 transport, §2.7 split virtqueue, §5.2 block device), queue 0 only.
 *
 * Rings and request headers live at DMA_BASE in guest RAM.  Completions are
 * polled; vblk_irq_mode(1) lets the device interrupt (MSI-X vector
 * 0x41), vblk_irq_mode(0) suppresses interrupts with
 * VIRTQ_AVAIL_F_NO_INTERRUPT or, under VIRTIO_F_EVENT_IDX, with used_event
 * kept behind the used index. */
#include "tg.h"

/* common configuration structure (virtio 1.2 §4.1.4.3) */
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

#define VIRTIO_MSI_NO_VECTOR 0xffff

#define VRING_DESC_F_NEXT 1
#define VRING_DESC_F_WRITE 2

struct vring_desc {
    u64 addr;
    u32 len;
    u16 flags, next;
};
struct blk_hdr {
    u32 type, reserved;
    u64 sector;
};

#define QMAX 256
/* Device 0's rings at DMA_BASE, device 1's (vblk_use) right after them. */
#define RING_AREA 0x5000u
static u64 ring_base = DMA_BASE;
#define RING_DESC (ring_base + 0x0000)
#define RING_AVAIL (ring_base + 0x1000)
#define RING_USED (ring_base + 0x2000)
#define REQ_HDRS (ring_base + 0x3000)
#define REQ_STATUS (ring_base + 0x4000)

static struct vblk_info info;
static u64 common, notify_base, isr_cfg, devcfg;
static u32 notify_mult;
static u64 notify_addr;
static struct msix mx;

static struct vring_desc *desc;
static volatile u16 *avail;     /* flags, idx, ring[qsize], used_event */
static volatile u8 *used;       /* flags u16, idx u16, ring[qsize]{u32 id, u32 len}, avail_event u16 */
static struct blk_hdr *hdrs;
static volatile u8 *stat;
static u16 free_head, nfree, last_used, avail_idx, kicked_idx;
static int event_idx, irq_mode;

/* The driver's state of each device; vblk_use() swaps it in, so every
   vblk_* call acts on the device selected last. */
#define VBLK_STATE(X)                                                                           \
    X(info) X(common) X(notify_base) X(isr_cfg) X(devcfg) X(notify_mult) X(notify_addr) X(mx)   \
    X(desc) X(avail) X(used) X(hdrs) X(stat) X(free_head) X(nfree) X(last_used) X(avail_idx)    \
    X(kicked_idx) X(event_idx) X(irq_mode) X(ring_base)
#define VBLK_FIELD(f) __typeof__(f) f;
static struct vblk_state {
    VBLK_STATE(VBLK_FIELD)
} vblk_saved[VBLK_MAXDEV];
static unsigned vblk_cur;

void vblk_use(unsigned i)
{
    if (i >= VBLK_MAXDEV || i == vblk_cur)
        return;
    struct vblk_state *o = &vblk_saved[vblk_cur], *n = &vblk_saved[i];
#define VBLK_SAVE(f) o->f = f;
#define VBLK_LOAD(f) f = n->f;
    VBLK_STATE(VBLK_SAVE)
    if (n->ring_base) {
        VBLK_STATE(VBLK_LOAD)
    } else {
        memset(&info, 0, sizeof info);
        ring_base = DMA_BASE + (u64)i * RING_AREA;
    }
    vblk_cur = i;
}

static inline void barrier(void) { __asm__ volatile("" ::: "memory"); }
static inline void mfence(void) { __asm__ volatile("mfence" ::: "memory"); }

static u8 cc8(unsigned o) { return mmio_read8(common + o); }
static u16 cc16(unsigned o) { return mmio_read16(common + o); }
static u32 cc32(unsigned o) { return mmio_read32(common + o); }
static void wc8(unsigned o, u8 v) { mmio_write8(common + o, v); }
static void wc16(unsigned o, u16 v) { mmio_write16(common + o, v); }
static void wc32(unsigned o, u32 v) { mmio_write32(common + o, v); }
static void wc64(unsigned o, u64 v)
{
    wc32(o, (u32)v);
    wc32(o + 4, (u32)(v >> 32));
}

const struct vblk_info *vblk(void) { return &info; }

const struct pci_fn *vblk_find(void) { return pci_find(0x1af4, 0x1042); }

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

static int find_caps(const struct pci_fn *f, char *why, size_t n)
{
    u32 devcfg_len = 0, len;
    common = notify_base = isr_cfg = devcfg = 0;
    for (u8 off = pci_find_cap(f, 0x09, 0); off; off = pci_find_cap(f, 0x09, off)) {
        u8 type = pci_read8(f->bdf, off + 3);
        u8 bar = pci_read8(f->bdf, off + 4);
        u32 o = pci_read32(f->bdf, off + 8);
        len = pci_read32(f->bdf, off + 12);
        printf_("# virtio cap @%02x cfg_type %u bar %u offset 0x%x length 0x%x", off, type, bar, o, len);
        if (type == 2)
            printf_(" notify_off_multiplier %u", pci_read32(f->bdf, off + 16));
        puts_("\n");
        u64 a;
        switch (type) {                     /* the first of each type the driver can use */
        case 1:
            if (!common && (a = cap_addr(f, off, &len)) && len >= 0x38)
                common = a;
            break;
        case 2:
            if (!notify_base && (a = cap_addr(f, off, &len))) {
                notify_base = a;
                notify_mult = pci_read32(f->bdf, off + 16);
            }
            break;
        case 3:
            if (!isr_cfg && (a = cap_addr(f, off, &len)))
                isr_cfg = a;
            break;
        case 4:
            if (!devcfg && (a = cap_addr(f, off, &len))) {
                devcfg = a;
                devcfg_len = len;
            }
            break;
        }
    }
    if (!common || !notify_base || !devcfg) {
        snprintf_(why, n, "missing virtio caps:%s%s%s", common ? "" : " common", notify_base ? "" : " notify",
                  devcfg ? "" : " device");
        return 0;
    }
    if (devcfg_len < 24) {
        snprintf_(why, n, "device cfg length %u < 24", devcfg_len);
        return 0;
    }
    return 1;
}

void vblk_reset(void)
{
    if (!common)
        return;
    wc8(CC_STATUS, 0);
    u64 end = clock_us() + 1000000;
    while (cc8(CC_STATUS) && clock_us() < end)
        cpu_relax();
}

static int fail_status(char *why, size_t n, const char *what)
{
    snprintf_(why, n, "%s (status 0x%02x)", what, cc8(CC_STATUS));
    wc8(CC_STATUS, cc8(CC_STATUS) | S_FAILED);
    return 0;
}

static void read_config(void)
{
    u8 gen;
    do {
        gen = cc8(CC_CFGGEN);
        info.capacity = mmio_read32(devcfg) | (u64)mmio_read32(devcfg + 4) << 32;
        info.size_max = info.features & VIRTIO_BLK_F_SIZE_MAX ? mmio_read32(devcfg + 8) : 0;
        info.seg_max = info.features & VIRTIO_BLK_F_SEG_MAX ? mmio_read32(devcfg + 12) : 0;
        info.blk_size = info.features & VIRTIO_BLK_F_BLK_SIZE ? mmio_read32(devcfg + 20) : 512;
        info.wce = info.features & VIRTIO_BLK_F_CONFIG_WCE ? mmio_read8(devcfg + 32) : 0;
        info.num_queues = info.features & VIRTIO_BLK_F_MQ ? mmio_read16(devcfg + 34) : 1;
        info.max_discard = info.features & VIRTIO_BLK_F_DISCARD ? mmio_read32(devcfg + 36) : 0;
        info.max_write_zeroes = info.features & VIRTIO_BLK_F_WRITE_ZEROES ? mmio_read32(devcfg + 48) : 0;
    } while (gen != cc8(CC_CFGGEN));
}

void vblk_reread_config(void) { read_config(); }

int vblk_no_msix;

u8 vblk_read_isr(void) { return isr_cfg ? mmio_read8(isr_cfg) : 0; }

int vblk_init(const struct pci_fn *f, char *why, size_t n)
{
    memset(&info, 0, sizeof info);
    info.pci = f;
    if (!find_caps(f, why, n))
        return 0;
    /* bus master on: the device reads and writes the rings */
    pci_write16(f->bdf, 4, pci_read16(f->bdf, 4) | 0x6);

    /* MSI-X first (as Linux does), then the virtio vector registers */
    if (!vblk_no_msix && msix_setup(f, &mx) && mx.n >= 2) {
        info.config_vector = IRQ_BASE;
        info.queue_vector = IRQ_BASE + 1;
        msix_set(&mx, 0, info.config_vector);
        msix_set(&mx, 1, info.queue_vector);
        msix_enable(&mx);
        info.msix = 1;
        printf_("# msix: cap @%02x %u entries, table bar%u+0x%lx (0x%lx), pba bar%u (0x%lx)\n", mx.cap, mx.n,
                mx.table_bir, mx.table - f->bar[mx.table_bir].addr, mx.table, mx.pba_bir, mx.pba);
    } else {
        puts_("# msix: none usable (completions are polled only)\n");
    }

    /* virtio 1.2 §3.1.1 driver initialization */
    vblk_reset();
    if (cc8(CC_STATUS))
        return fail_status(why, n, "reset did not complete");
    wc8(CC_STATUS, S_ACK);
    wc8(CC_STATUS, S_ACK | S_DRIVER);
    wc32(CC_DFSELECT, 0);
    u64 feat = cc32(CC_DF);
    wc32(CC_DFSELECT, 1);
    feat |= (u64)cc32(CC_DF) << 32;
    info.offered = feat;
    if (!(feat & VIRTIO_F_VERSION_1))
        return fail_status(why, n, "device does not offer VIRTIO_F_VERSION_1");
    u64 want = VIRTIO_F_VERSION_1 | VIRTIO_F_EVENT_IDX | VIRTIO_F_INDIRECT_DESC | VIRTIO_BLK_F_FLUSH |
               VIRTIO_BLK_F_BLK_SIZE | VIRTIO_BLK_F_SEG_MAX | VIRTIO_BLK_F_SIZE_MAX | VIRTIO_BLK_F_MQ |
               VIRTIO_BLK_F_RO | VIRTIO_BLK_F_DISCARD | VIRTIO_BLK_F_WRITE_ZEROES | VIRTIO_BLK_F_CONFIG_WCE |
               VIRTIO_BLK_F_TOPOLOGY | VIRTIO_BLK_F_GEOMETRY;
    info.features = feat & want;
    wc32(CC_GFSELECT, 0);
    wc32(CC_GF, (u32)info.features);
    wc32(CC_GFSELECT, 1);
    wc32(CC_GF, (u32)(info.features >> 32));
    wc8(CC_STATUS, S_ACK | S_DRIVER | S_FEATURES_OK);
    if (!(cc8(CC_STATUS) & S_FEATURES_OK))
        return fail_status(why, n, "FEATURES_OK not accepted");
    event_idx = !!(info.features & VIRTIO_F_EVENT_IDX);

    if (info.msix) {
        wc16(CC_MSIX, 0);
        if (cc16(CC_MSIX) != 0) {
            printf_("# msix: config vector refused (reads 0x%x)\n", cc16(CC_MSIX));
            info.msix = 0;
        }
    }
    u16 nq = cc16(CC_NUMQ);
    if (!nq)
        return fail_status(why, n, "num_queues is 0");

    /* queue 0: split ring in guest RAM */
    wc16(CC_Q_SELECT, 0);
    u16 qmax = cc16(CC_Q_SIZE);
    if (!qmax)
        return fail_status(why, n, "queue 0 size is 0");
    u16 qs = qmax < QMAX ? qmax : QMAX;
    wc16(CC_Q_SIZE, qs);
    info.qsize = cc16(CC_Q_SIZE);
    if (!info.qsize || info.qsize > QMAX)
        return fail_status(why, n, "queue size not accepted");
    if (info.msix) {
        wc16(CC_Q_MSIX, 1);
        if (cc16(CC_Q_MSIX) != 1) {
            printf_("# msix: queue 0 vector refused (reads 0x%x)\n", cc16(CC_Q_MSIX));
            info.msix = 0;
        }
    } else {
        wc16(CC_Q_MSIX, VIRTIO_MSI_NO_VECTOR);
    }
    memset(phys(ring_base), 0, RING_AREA);
    desc = phys(RING_DESC);
    avail = phys(RING_AVAIL);
    used = phys(RING_USED);
    hdrs = phys(REQ_HDRS);
    stat = phys(REQ_STATUS);
    for (u16 i = 0; i < info.qsize; i++)
        desc[i].next = (u16)(i + 1);
    free_head = 0;
    nfree = info.qsize;
    last_used = avail_idx = kicked_idx = 0;
    irq_mode = 1;
    vblk_irq_mode(0);
    wc64(CC_Q_DESCLO, RING_DESC);
    wc64(CC_Q_AVAILLO, RING_AVAIL);
    wc64(CC_Q_USEDLO, RING_USED);
    u16 noff = cc16(CC_Q_NOFF);
    notify_addr = notify_base + (u64)noff * notify_mult;
    wc16(CC_Q_ENABLE, 1);

    wc8(CC_STATUS, S_ACK | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK);
    u8 st = cc8(CC_STATUS);
    if (st & (S_NEEDS_RESET | S_FAILED) || !(st & S_DRIVER_OK))
        return fail_status(why, n, "DRIVER_OK not kept");
    read_config();
    printf_("# virtio-blk: features offered 0x%lx accepted 0x%lx; %u queues, queue 0 size %u (max %u)"
            " notify 0x%lx\n",
            info.offered, info.features, nq, info.qsize, qmax, notify_addr);
    printf_("# virtio-blk: capacity %lu sectors (%lu MiB) blk_size %u seg_max %u size_max %u wce %u"
            " ro %u discard %u write_zeroes %u\n",
            info.capacity, info.capacity >> 11, info.blk_size, info.seg_max, info.size_max, info.wce,
            !!(info.features & VIRTIO_BLK_F_RO), info.max_discard, info.max_write_zeroes);
    return 1;
}

/* ------------------------------------------------------------------ */
#define AVAIL_FLAGS 0
#define AVAIL_IDX 1
#define AVAIL_RING 2
static volatile u16 *used_event(void) { return &avail[AVAIL_RING + info.qsize]; }
static volatile u16 *used_idx(void) { return (volatile u16 *)(used + 2); }
static volatile u16 *avail_event(void) { return (volatile u16 *)(used + 4 + 8u * info.qsize); }

void vblk_irq_mode(int on)
{
    irq_mode = on;
    if (event_idx) {
        avail[AVAIL_FLAGS] = 0;
        *used_event() = on ? last_used : (u16)(last_used - 1);
    } else {
        avail[AVAIL_FLAGS] = on ? 0 : 1;    /* VIRTQ_AVAIL_F_NO_INTERRUPT */
    }
    mfence();
}

unsigned vblk_free_descs(void) { return nfree; }

static u16 take_desc(void)
{
    u16 d = free_head;
    free_head = desc[d].next;
    nfree--;
    return d;
}

int vblk_submit(u32 type, u64 sector, void *buf, u32 len)
{
    u32 seg = info.size_max ? info.size_max : 0xffffffffu;
    u32 nseg = len ? (len + seg - 1) / seg : 0;
    if (info.seg_max && nseg > info.seg_max)
        return -1;
    if (nfree < nseg + 2)
        return -1;
    int dev_writes = type == VIRTIO_BLK_T_IN || type == VIRTIO_BLK_T_GET_ID;
    u16 head = take_desc();
    hdrs[head].type = type;
    hdrs[head].reserved = 0;
    hdrs[head].sector = sector;
    stat[head] = 0xee;
    desc[head].addr = REQ_HDRS + 16u * head;
    desc[head].len = 16;
    desc[head].flags = VRING_DESC_F_NEXT;
    u16 prev = head;
    u64 a = (u64)(uintptr_t)buf;
    for (u32 left = len; left;) {
        u32 l = left < seg ? left : seg;
        u16 d = take_desc();
        desc[prev].next = d;
        desc[d].addr = a;
        desc[d].len = l;
        desc[d].flags = (u16)(VRING_DESC_F_NEXT | (dev_writes ? VRING_DESC_F_WRITE : 0));
        prev = d;
        a += l;
        left -= l;
    }
    u16 s = take_desc();
    desc[prev].next = s;
    desc[s].addr = REQ_STATUS + head;
    desc[s].len = 1;
    desc[s].flags = VRING_DESC_F_WRITE;
    avail[AVAIL_RING + (avail_idx % info.qsize)] = head;
    avail_idx++;
    return head;
}

void vblk_kick(void)
{
    barrier();
    avail[AVAIL_IDX] = avail_idx;           /* x86 keeps the ring stores before this one */
    mfence();                               /* ... and this store before the loads below */
    u16 old = kicked_idx;
    kicked_idx = avail_idx;
    if (old == avail_idx)
        return;
    int notify;
    if (event_idx) {
        u16 ev = *avail_event();
        notify = (u16)(avail_idx - ev - 1) < (u16)(avail_idx - old);    /* vring_need_event */
    } else {
        notify = !(*(volatile u16 *)used & 1);                          /* VIRTQ_USED_F_NO_NOTIFY */
    }
    if (notify)
        mmio_write16(notify_addr, 0);
}

int vblk_used_pending(void) { return *used_idx() != last_used; }

int vblk_reap(u16 *id, u8 *status)
{
    if (*used_idx() == last_used)
        return 0;
    barrier();
    volatile u32 *e = (volatile u32 *)(used + 4 + 8u * (last_used % info.qsize));
    u16 head = (u16)e[0];
    last_used++;
    if (head >= info.qsize) {               /* a broken device: keep going, report */
        *id = head;
        *status = VBLK_TIMEOUT;
        return 1;
    }
    *id = head;
    *status = stat[head];
    u16 d = head;
    unsigned cnt = 1;
    while ((desc[d].flags & VRING_DESC_F_NEXT) && cnt < info.qsize) {
        d = desc[d].next;
        cnt++;
    }
    desc[d].next = free_head;
    free_head = head;
    nfree = (u16)(nfree + cnt);
    if (event_idx)
        *used_event() = irq_mode ? last_used : (u16)(last_used - 1);
    return 1;
}

u8 vblk_sync(u32 type, u64 sector, void *buf, u32 len, u64 timeout_us)
{
    int head = vblk_submit(type, sector, buf, len);
    if (head < 0)
        return VBLK_TIMEOUT;
    vblk_kick();
    u64 end = clock_us() + timeout_us;
    u16 id;
    u8 st;
    for (;;) {
        while (vblk_reap(&id, &st))
            if (id == head)
                return st;
        if (clock_us() > end)
            return VBLK_TIMEOUT;
        cpu_relax();
    }
}
