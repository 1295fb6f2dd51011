/* ferrovm test guest: a polled virtio-net driver (virtio 1.2 §5.1) and the
 * net plans.  plan=net answers ARP (RFC 826) for ip= and ICMP echo (RFC 792)
 * and prints link changes from the config STATUS field; plan=net-blast
 * first sends or counts UDP frames for blast_secs (README.md has the lines).
 *
 * Queues: 0 receive, 1 transmit (no MQ); with net_ctrl=1 also 2, the control
 * queue (virtio 1.2 §5.1.6.5), whose command script runs in two phases, each
 * started by the host toggling the link down and up.  Every rx/tx buffer is
 * one descriptor of NBUF bytes: the 12-byte virtio_net_hdr (VERSION_1 always
 * has num_buffers) and the frame.  Descriptor i always uses buffer i of its
 * queue, so a used id names its buffer. */
#include "virtio.h"

#define VIRTIO_NET_F_MAC 5
#define VIRTIO_NET_F_MRG_RXBUF 15
#define VIRTIO_NET_F_STATUS 16
#define VIRTIO_NET_F_CTRL_VQ 17
#define VIRTIO_NET_F_CTRL_RX 18
#define VIRTIO_NET_F_CTRL_VLAN 19
#define VIRTIO_NET_F_CTRL_RX_EXTRA 20
#define VIRTIO_NET_F_CTRL_MAC_ADDR 23
#define VIRTIO_NET_S_LINK_UP 1

#define NET_HDR 12
#define NBUF 2048u
#define RX_BATCH 32u                /* rx buffers given back per kick */
#define TX_BATCH 64u                /* free tx descriptors that make a blast refill */
#define ETH_MIN 60u
#define ETH_MAX 1514u
#define GW_IP (10u << 24 | 2u << 8 | 1u)    /* 10.0.2.1: the blast peer */

static struct vdev dev;
static struct vq rxq, txq, ctrlq;
static u8 *rxmem, *txmem;
static u8 *ctrlmem;             /* a command (header + data) at 0, its ack byte at CTRL_ACK */
static int ctrl_up;             /* the control queue is set up and has not timed out */
static int ctrl_armed;          /* link toggles run the script (only in net_run's answering loop,
                                   not during a blast, which owns every tx buffer) */
#define CTRL_ACK 256u
#define CTRL_QSIZE 16u
static u8 mac[6], peer_mac[6];
static int peer_known, has_status, mrg, link_up;
static unsigned rx_pending;     /* buffers added since the last rx kick */
static unsigned rx_owed;        /* buffers of the frame last returned: given back on the next call */
static u64 rx_frames, rx_bytes, tx_frames, tx_bytes;
static u8 scratch[4 * NBUF];
static u64 echo_reply_tsc;      /* when our echo request to the peer was answered */
#define ECHO_ID 0x7467    /* a frame the device split over several buffers */

static const u8 bcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};

static u16 get16(const u8 *p) { return (u16)(p[0] << 8 | p[1]); }
static u32 get32(const u8 *p) { return (u32)p[0] << 24 | (u32)p[1] << 16 | (u32)p[2] << 8 | p[3]; }
static void put16(u8 *p, u16 v)
{
    p[0] = (u8)(v >> 8);
    p[1] = (u8)v;
}
static void put32(u8 *p, u32 v)
{
    put16(p, (u16)(v >> 16));
    put16(p + 2, (u16)v);
}

/* RFC 1071 Internet checksum of `n` bytes, seeded with a partial sum. */
static u16 csum(const u8 *p, u32 n, u32 sum)
{
    for (; n > 1; n -= 2, p += 2)
        sum += get16(p);
    if (n)
        sum += (u32)p[0] << 8;
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    return (u16)~sum;
}

/* ---- config ---- */
static void read_config(u8 m[6], u16 *status)
{
    u8 gen;
    do {
        gen = virtio_cfg_gen(&dev);
        for (int i = 0; i < 6; i++)
            m[i] = virtio_cfg8(&dev, (unsigned)i);
        *status = has_status ? virtio_cfg16(&dev, 6) : VIRTIO_NET_S_LINK_UP;
    } while (gen != virtio_cfg_gen(&dev));
}

static void ctrl_on_link(int up);

/* Reads STATUS and prints a change of LINK_UP at once (and, with net_ctrl=1,
   runs the control script's next phase on a down then up). */
static void watch_link(void)
{
    if (!has_status)
        return;
    int up = virtio_cfg16(&dev, 6) & VIRTIO_NET_S_LINK_UP;
    if (up != link_up) {
        link_up = up;
        printf_("# net link=%s\n", up ? "up" : "down");
        ctrl_on_link(up);
    }
}

/* ---- rx ---- */
static void rx_give(void)
{
    u16 d = rxq.free_head;
    struct vbuf b = {(u64)(uintptr_t)(rxmem + (u64)d * NBUF), NBUF};
    if (rxq.nfree && vq_add(&rxq, &b, 0, 1) >= 0)
        rx_pending++;
}

static void rx_flush(void)
{
    for (; rx_owed; rx_owed--)
        rx_give();
    if (rx_pending) {
        vq_kick(&rxq);
        rx_pending = 0;
    }
}

/* ---- tx ---- */
static void tx_reap(void)
{
    u32 len;
    while (vq_reap(&txq, &len) != -1)
        ;
}

/* The buffer (after the header) the next transmitted frame goes in; 0 if the
   ring stays full for 100 ms. */
static u8 *tx_buf(void)
{
    tx_reap();
    u64 end = rdtsc() + tsc_hz() / 10;
    while (!txq.nfree) {
        if (rdtsc() > end)
            return 0;
        cpu_relax();
        tx_reap();
    }
    u8 *b = txmem + (u64)txq.free_head * NBUF;
    memset(b, 0, NET_HDR);
    return b + NET_HDR;
}

/* Queues the frame just written to tx_buf(); kicks when `kick`. */
static void tx_put(u32 len, int kick)
{
    u16 d = txq.free_head;
    struct vbuf b = {(u64)(uintptr_t)(txmem + (u64)d * NBUF), NET_HDR + len};
    if (vq_add(&txq, &b, 1, 0) < 0)
        return;
    tx_frames++;
    tx_bytes += len;
    if (kick)
        vq_kick(&txq);
}

static void eth_hdr(u8 *f, const u8 *dst, u16 type)
{
    memcpy(f, dst, 6);
    memcpy(f + 6, mac, 6);
    put16(f + 12, type);
}

static void send_arp(u16 op, const u8 *tha, u32 tpa)
{
    u8 *f = tx_buf();
    if (!f)
        return;
    eth_hdr(f, op == 1 ? bcast : tha, 0x0806);
    put16(f + 14, 1);                       /* Ethernet */
    put16(f + 16, 0x0800);                  /* IPv4 */
    f[18] = 6;
    f[19] = 4;
    put16(f + 20, op);
    memcpy(f + 22, mac, 6);
    put32(f + 28, netcfg.ip);
    memcpy(f + 32, op == 1 ? (const u8 *)"\0\0\0\0\0\0" : tha, 6);
    put32(f + 38, tpa);
    memset(f + 42, 0, ETH_MIN - 42);
    tx_put(ETH_MIN, 1);
}

static void on_arp(const u8 *f, u32 len)
{
    if (len < 42 || get16(f + 14) != 1 || get16(f + 16) != 0x0800 || f[18] != 6 || f[19] != 4)
        return;
    u16 op = get16(f + 20);
    u32 spa = get32(f + 28), tpa = get32(f + 38);
    if (spa == GW_IP) {
        memcpy(peer_mac, f + 22, 6);
        peer_known = 1;
    }
    if (op == 1 && tpa == netcfg.ip)
        send_arp(2, f + 22, spa);
}

/* Echo request to us -> echo reply: the same IP header (options too) with the
   addresses swapped, TTL 64, and both checksums recomputed. */
static void on_ipv4(const u8 *f, u32 len)
{
    if (len < 34 || (f[14] >> 4) != 4)
        return;
    u32 ihl = (f[14] & 15u) * 4, tot = get16(f + 16);
    if (ihl < 20 || tot < ihl + 8 || 14 + tot > len || csum(f + 14, ihl, 0) != 0)
        return;
    if (get32(f + 30) != netcfg.ip || f[23] != 1 || (get16(f + 20) & 0x3fff))
        return;                             /* not ours, not ICMP, or a fragment */
    const u8 *icmp = f + 14 + ihl;
    u32 ilen = tot - ihl;
    if (icmp[0] == 0 && get16(icmp + 4) == ECHO_ID && get32(f + 26) == GW_IP && csum(icmp, ilen, 0) == 0)
        echo_reply_tsc = rdtsc();
    if (icmp[0] != 8 || icmp[1] != 0 || csum(icmp, ilen, 0) != 0 || 14 + tot > NBUF - NET_HDR)
        return;
    u8 *r = tx_buf();
    if (!r)
        return;
    memcpy(r, f, 14 + tot);
    eth_hdr(r, f + 6, 0x0800);
    put32(r + 26, netcfg.ip);
    memcpy(r + 30, f + 26, 4);
    r[22] = 64;
    put16(r + 24, 0);
    put16(r + 24, csum(r + 14, ihl, 0));
    u8 *ri = r + 14 + ihl;
    ri[0] = 0;
    put16(ri + 2, 0);
    put16(ri + 2, csum(ri, ilen, 0));
    u32 flen = 14 + tot < ETH_MIN ? ETH_MIN : 14 + tot;
    if (flen > 14 + tot)
        memset(r + 14 + tot, 0, flen - 14 - tot);
    tx_put(flen, 1);
}

/* A UDP datagram to our IP (what a blast sender sends)? */
static int is_udp_to_us(const u8 *f, u32 len)
{
    return len >= 42 && get16(f + 12) == 0x0800 && (f[14] >> 4) == 4 && f[23] == 17 &&
           get32(f + 30) == netcfg.ip;
}

static void on_frame(const u8 *f, u32 len)
{
    if (len < 14)
        return;
    u16 type = get16(f + 12);
    if (type == 0x0806)
        on_arp(f, len);
    else if (type == 0x0800)
        on_ipv4(f, len);
}

/* Takes one received frame off the used ring (gathering MRG_RXBUF pieces);
   gives the buffers back.  Returns its length, 0 if none, and *fp the frame. */
static u32 rx_one(const u8 **fp)
{
    u32 len;
    for (; rx_owed; rx_owed--)
        rx_give();
    if (rx_pending >= RX_BATCH) {
        vq_kick(&rxq);
        rx_pending = 0;
    }
    int head = vq_reap(&rxq, &len);
    if (head == -1)
        return 0;
    if (head < 0) {
        rx_give();
        return 0;
    }
    u8 *b = rxmem + (u64)head * NBUF;
    u16 nbufs = (u16)(b[10] | b[11] << 8);  /* num_buffers, little endian */
    if (len > NBUF)
        len = NBUF;
    u32 flen = len > NET_HDR ? len - NET_HDR : 0;
    const u8 *f = b + NET_HDR;
    if (!(mrg && nbufs > 1)) {
        rx_owed = 1;                        /* the caller reads the frame in place */
    } else {
        u32 have = flen < sizeof scratch ? flen : (u32)sizeof scratch;
        memcpy(scratch, f, have);
        rx_give();
        for (u16 k = 1; k < nbufs; k++) {
            u64 end = rdtsc() + tsc_hz() / 100;
            while ((head = vq_reap(&rxq, &len)) == -1 && rdtsc() < end)
                cpu_relax();
            if (head < 0)
                break;
            if (len > NBUF)
                len = NBUF;
            u32 c = have + len <= sizeof scratch ? len : (u32)sizeof scratch - have;
            memcpy(scratch + have, rxmem + (u64)head * NBUF, c);
            have += c;
            flen += len;
            rx_give();
        }
        f = scratch;
        if (flen > have)
            flen = have;
    }
    rx_frames++;
    rx_bytes += flen;
    *fp = f;
    return flen;
}

/* Handles (or, unless `answer`, only counts) everything received so far;
   returns the number of frames. */
static unsigned rx_poll(int answer)
{
    const u8 *f;
    u32 len;
    unsigned n = 0;
    while ((len = rx_one(&f))) {
        if (answer)
            on_frame(f, len);
        n++;
    }
    rx_flush();
    return n;
}

/* ---- control queue (virtio 1.2 §5.1.6.5) ---- */
#define CTRL_RX 0
#define CTRL_RX_PROMISC 0
#define CTRL_RX_ALLMULTI 1
#define CTRL_RX_NOBCAST 5
#define CTRL_MAC 1
#define CTRL_MAC_TABLE_SET 0
#define CTRL_MAC_ADDR_SET 1
#define CTRL_VLAN 2
#define CTRL_VLAN_ADD 0
#define CTRL_VLAN_DEL 1
#define CTRL_ACK_NONE 0xee      /* what the ack byte holds until the device writes it */

static int has(unsigned bit) { return !!(dev.features >> bit & 1); }

/* One command: a device-readable descriptor with the header and `n` data bytes,
   then a device-writable one for the ack.  Waits up to 1 s for the device to use
   it (answering ARP and ping meanwhile) and prints `# net ctrl CLASS.CMD ack=A`.
   Returns the ack, -1 on a timeout (the queue is then given up: the device may
   still own the buffers). */
static int ctrl_cmd(u8 cls, u8 cmd, const u8 *data, u32 n)
{
    if (!ctrl_up)
        return -1;
    volatile u8 *ack = ctrlmem + CTRL_ACK;
    ctrlmem[0] = cls;
    ctrlmem[1] = cmd;
    memcpy(ctrlmem + 2, data, n);
    *ack = CTRL_ACK_NONE;
    struct vbuf b[2] = {{(u64)(uintptr_t)ctrlmem, 2 + n}, {(u64)(uintptr_t)ack, 1}};
    if (vq_add(&ctrlq, b, 1, 1) < 0) {
        printf_("# net ctrl %u.%u ack=none (ring full)\n", cls, cmd);
        ctrl_up = 0;
        return -1;
    }
    vq_kick(&ctrlq);
    u32 len;
    u64 end = rdtsc() + tsc_hz();
    int head;
    while ((head = vq_reap(&ctrlq, &len)) == -1 && rdtsc() < end)
        rx_poll(1);
    if (head < 0) {
        printf_("# net ctrl %u.%u ack=none (not used in 1 s)\n", cls, cmd);
        ctrl_up = 0;
        return -1;
    }
    u8 a = *ack;
    printf_("# net ctrl %u.%u ack=%u\n", cls, cmd, a);
    return a;
}

static int ctrl_rx(u8 cmd, u8 on) { return ctrl_cmd(CTRL_RX, cmd, &on, 1); }

static int ctrl_vlan(u8 cmd, u16 vid)
{
    u8 d[2] = {(u8)vid, (u8)(vid >> 8)};    /* little endian (VERSION_1) */
    return ctrl_cmd(CTRL_VLAN, cmd, d, 2);
}

static void put_le32(u8 *p, u32 v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (u8)(v >> (8 * i));
}

static void print_mac(const char *what, const u8 *m)
{
    printf_("%s%02x:%02x:%02x:%02x:%02x:%02x", what, m[0], m[1], m[2], m[3], m[4], m[5]);
}

/* Phase 1: promiscuous off, a MAC table of one unicast and two multicast
   addresses, VLANs 5 and 100 added and 100 deleted again. */
static void ctrl_phase1(void)
{
    if (has(VIRTIO_NET_F_CTRL_RX))
        ctrl_rx(CTRL_RX_PROMISC, 0);
    if (has(VIRTIO_NET_F_CTRL_RX)) {            /* MAC_TABLE_SET belongs to CTRL_RX */
        static const u8 uni[6] = {0x52, 0x54, 0x00, 0x00, 0x00, 0x01};
        static const u8 multi[12] = {0x01, 0x00, 0x5e, 0x00, 0x00, 0x01, 0x33, 0x33, 0x00, 0x00, 0x00, 0x01};
        u8 d[4 + 6 + 4 + 12];
        put_le32(d, 1);
        memcpy(d + 4, uni, 6);
        put_le32(d + 10, 2);
        memcpy(d + 14, multi, 12);
        ctrl_cmd(CTRL_MAC, CTRL_MAC_TABLE_SET, d, sizeof d);
    }
    if (has(VIRTIO_NET_F_CTRL_VLAN)) {
        ctrl_vlan(CTRL_VLAN_ADD, 5);
        ctrl_vlan(CTRL_VLAN_ADD, 100);
        ctrl_vlan(CTRL_VLAN_DEL, 100);
    }
}

/* Phase 2: all-multicast on, broadcast off (RX_EXTRA), a new MAC address
   (CTRL_MAC_ADDR), then two commands the device must refuse: VLAN_ADD 4096
   (ids are 0-4095) and an unknown class 0xff. */
static void ctrl_phase2(void)
{
    if (has(VIRTIO_NET_F_CTRL_RX))
        ctrl_rx(CTRL_RX_ALLMULTI, 1);
    if (has(VIRTIO_NET_F_CTRL_RX_EXTRA))
        ctrl_rx(CTRL_RX_NOBCAST, 1);
    if (has(VIRTIO_NET_F_CTRL_MAC_ADDR)) {
        static const u8 nmac[6] = {0x52, 0x54, 0x00, 0x12, 0x34, 0x99};
        if (ctrl_cmd(CTRL_MAC, CTRL_MAC_ADDR_SET, nmac, 6) == 0) {
            /* Frames we send carry the new address from now on.  The host still
               maps our IP to the old one, which the filter now drops (promiscuous
               is off and it is not in the MAC table), and its ARP broadcasts are
               dropped too (NOBCAST): a gratuitous ARP updates its entry. */
            u8 cm[6];
            u16 st;
            memcpy(mac, nmac, 6);
            read_config(cm, &st);
            print_mac("# net mac=", mac);
            print_mac(" config=", cm);
            puts_(" (gratuitous arp sent)\n");
            send_arp(1, 0, netcfg.ip);
        }
    }
    if (has(VIRTIO_NET_F_CTRL_VLAN))
        ctrl_vlan(CTRL_VLAN_ADD, 4096);
    ctrl_cmd(0xff, 0, 0, 0);
}

/* Called on every link change: a down then an up runs the next phase. */
static void ctrl_on_link(int up)
{
    static int phase, seen_down;
    if (!ctrl_up || !ctrl_armed || phase >= 2)
        return;
    if (!up) {
        seen_down = 1;
        return;
    }
    if (!seen_down)
        return;
    seen_down = 0;
    phase++;
    if (phase == 1)
        ctrl_phase1();
    else
        ctrl_phase2();
    if (!ctrl_up)
        return;
    printf_("# net ctrl phase %d done\n", phase);
    if (phase == 1)
        puts_("# net ctrl: phase 2 runs on the next link down and up\n");
}

/* ------------------------------------------------------------------ */
int net_checks(void)
{
    const struct pci_fn *f = virtio_find(0x1041);
    char why[96];
    if (!f) {
        tap(0, "net", "no 1af4:1041 on bus 0");
        return 0;
    }
    if (!virtio_dma_reset()) {
        tap(0, "net", "no RAM at 0x%lx-0x%lx for rings and buffers", VDMA_BASE, VDMA_BASE + VDMA_SIZE - 1);
        return 0;
    }
    u64 want = 1ull << VIRTIO_NET_F_MAC | 1ull << VIRTIO_NET_F_STATUS | 1ull << VIRTIO_NET_F_MRG_RXBUF;
    if (netcfg.ctrl)
        want |= 1ull << VIRTIO_NET_F_CTRL_VQ | 1ull << VIRTIO_NET_F_CTRL_RX | 1ull << VIRTIO_NET_F_CTRL_VLAN |
                1ull << VIRTIO_NET_F_CTRL_RX_EXTRA | 1ull << VIRTIO_NET_F_CTRL_MAC_ADDR;
    if (!virtio_start(&dev, f, want, why, sizeof why) || !virtio_queue(&dev, &rxq, 0, VQ_MAX, why, sizeof why) ||
        !virtio_queue(&dev, &txq, 1, VQ_MAX, why, sizeof why)) {
        tap(0, "net", "%s", why);
        return 0;
    }
    /* The control queue is the last one: 2 without MQ (§5.1.2). */
    if (has(VIRTIO_NET_F_CTRL_VQ)) {
        if (!virtio_queue(&dev, &ctrlq, 2, CTRL_QSIZE, why, sizeof why)) {
            tap(0, "net", "control queue: %s", why);
            return 0;
        }
        if (!(ctrlmem = virtio_dma_alloc(CTRL_ACK + 1, 64))) {
            tap(0, "net", "no DMA memory for the control queue's buffer");
            return 0;
        }
        ctrl_up = 1;
    }
    rxmem = virtio_dma_alloc((u64)rxq.size * NBUF, 4096);
    txmem = virtio_dma_alloc((u64)txq.size * NBUF, 4096);
    if (!rxmem || !txmem) {
        tap(0, "net", "no DMA memory for %u+%u buffers", rxq.size, txq.size);
        return 0;
    }
    has_status = !!(dev.features & 1ull << VIRTIO_NET_F_STATUS);
    mrg = !!(dev.features & 1ull << VIRTIO_NET_F_MRG_RXBUF);
    while (rxq.nfree)
        rx_give();
    if (!virtio_driver_ok(&dev, why, sizeof why)) {
        tap(0, "net", "%s", why);
        return 0;
    }
    rx_flush();
    u16 status;
    read_config(mac, &status);
    if (!(dev.features & 1ull << VIRTIO_NET_F_MAC)) {
        static const u8 own[6] = {0x02, 0, 0, 0, 0, 0x01};     /* locally administered */
        memcpy(mac, own, 6);
    }
    link_up = status & VIRTIO_NET_S_LINK_UP;
    printf_("# virtio-net %02x:%02x.%u: features offered 0x%lx accepted 0x%lx; rx %u tx %u entries;"
            " ip %u.%u.%u.%u\n",
            f->bdf >> 8, (f->bdf >> 3) & 31, f->bdf & 7, dev.offered, dev.features, rxq.size, txq.size,
            netcfg.ip >> 24, (netcfg.ip >> 16) & 255, (netcfg.ip >> 8) & 255, netcfg.ip & 255);
    printf_("# net mac=%02x:%02x:%02x:%02x:%02x:%02x link=%s\n", mac[0], mac[1], mac[2], mac[3], mac[4],
            mac[5], link_up ? "up" : "down");
    if (netcfg.ctrl && !ctrl_up)
        puts_("# net ctrl: the device offers no control queue\n");
    else if (ctrl_up)
        printf_("# net ctrl queue 2: %u entries; rx %s, vlan %s, rx_extra %s, mac_addr %s\n", ctrlq.size,
                has(VIRTIO_NET_F_CTRL_RX) ? "yes" : "no", has(VIRTIO_NET_F_CTRL_VLAN) ? "yes" : "no",
                has(VIRTIO_NET_F_CTRL_RX_EXTRA) ? "yes" : "no", has(VIRTIO_NET_F_CTRL_MAC_ADDR) ? "yes" : "no");
    tap(1, "net", 0);
    return 1;
}

/* The peer's (10.0.2.1) MAC: ARP for up to 200 ms. */
static int resolve_peer(void)
{
    send_arp(1, 0, GW_IP);
    u64 end = rdtsc() + tsc_hz() / 5;
    while (!peer_known && rdtsc() < end)
        rx_poll(1);
    return peer_known;
}

/* One ICMP echo request to the peer, reply awaited for 1 s (answering meanwhile). */
static void ping_peer(void)
{
    if (!resolve_peer()) {
        puts_("# net ping 10.0.2.1: no arp reply\n");
        return;
    }
    u8 *f = tx_buf();
    if (!f)
        return;
    eth_hdr(f, peer_mac, 0x0800);
    memset(f + 14, 0, 20 + 64);
    f[14] = 0x45;
    put16(f + 16, 20 + 64);
    f[22] = 64;
    f[23] = 1;
    put32(f + 26, netcfg.ip);
    put32(f + 30, GW_IP);
    put16(f + 24, csum(f + 14, 20, 0));
    u8 *ic = f + 34;
    ic[0] = 8;
    put16(ic + 4, ECHO_ID);
    put16(ic + 6, 1);
    for (int i = 8; i < 64; i++)
        ic[i] = (u8)i;
    put16(ic + 2, csum(ic, 64, 0));
    echo_reply_tsc = 0;
    u64 t0 = rdtsc(), end = t0 + tsc_hz();
    tx_put(14 + 20 + 64, 1);
    while (!echo_reply_tsc && rdtsc() < end)
        rx_poll(1);
    if (echo_reply_tsc)
        printf_("# net ping 10.0.2.1 reply rtt_us=%lu\n", (echo_reply_tsc - t0) * 1000000 / tsc_hz());
    else
        puts_("# net ping 10.0.2.1: no reply\n");
}

/* ---- blast ---- */
static void blast_tx(void)
{
    /* to the peer's MAC, else broadcast */
    resolve_peer();
    u64 end = rdtsc() + tsc_hz() / 10;
    while (txq.nfree < txq.size && rdtsc() < end)
        tx_reap();
    u32 size = netcfg.blast_size < ETH_MIN ? ETH_MIN : netcfg.blast_size > ETH_MAX ? ETH_MAX : (u32)netcfg.blast_size;
    printf_("# blast tx: %u-byte udp frames to 10.0.2.1:9 dst %s for %lu s\n", size,
            peer_known ? "learned by arp" : "broadcast", netcfg.blast_secs);
    /* one frame, written into every tx buffer */
    u8 fr[ETH_MAX];
    memset(fr, 0, sizeof fr);
    eth_hdr(fr, peer_known ? peer_mac : bcast, 0x0800);
    u32 ipl = size - 14;
    fr[14] = 0x45;
    put16(fr + 16, (u16)ipl);
    put16(fr + 20, 0x4000);                 /* DF */
    fr[22] = 64;
    fr[23] = 17;
    put32(fr + 26, netcfg.ip);
    put32(fr + 30, GW_IP);
    put16(fr + 24, csum(fr + 14, 20, 0));
    put16(fr + 34, 5001);
    put16(fr + 36, 9);                      /* discard */
    put16(fr + 38, (u16)(ipl - 20));
    for (u32 i = 42; i < size; i++)
        fr[i] = (u8)i;
    u32 pseudo = (netcfg.ip >> 16) + (netcfg.ip & 0xffff) + (GW_IP >> 16) + (GW_IP & 0xffff) + 17 + (ipl - 20);
    u16 uc = csum(fr + 34, ipl - 20, pseudo);
    put16(fr + 40, uc ? uc : 0xffff);
    for (u16 i = 0; i < txq.size; i++) {
        memset(txmem + (u64)i * NBUF, 0, NET_HDR);
        memcpy(txmem + (u64)i * NBUF + NET_HDR, fr, size);
    }
    u64 hz = tsc_hz(), t0 = rdtsc(), stop = t0 + netcfg.blast_secs * hz, next_link = 0;
    u64 sent = 0, done = 0;
    u32 len;
    u16 batch = txq.size < TX_BATCH ? txq.size : TX_BATCH;
    for (;;) {
        u64 now = rdtsc();
        int more = now < stop;
        while (vq_reap(&txq, &len) >= 0)
            done++;
        if (more) {
            if (txq.nfree >= batch) {       /* refill in batches: fewer kicks */
                sent += txq.nfree;
                while (txq.nfree) {
                    struct vbuf b = {(u64)(uintptr_t)(txmem + (u64)txq.free_head * NBUF), NET_HDR + size};
                    vq_add(&txq, &b, 1, 0);
                }
                vq_kick(&txq);
            }
        } else if (done >= sent || now > stop + hz) {
            break;
        }
        if (now > next_link) {              /* frames from the peer only counted: every tx */
            watch_link();                   /* buffer holds the blast frame */
            rx_poll(0);
            if (pwrbtn_pressed())
                poweroff();
            next_link = now + hz / 1000;
        }
        cpu_relax();
    }
    u64 usecs = (rdtsc() - t0) * 1000000 / hz;
    tx_frames += done;
    tx_bytes += done * size;
    printf_("# blast tx frames=%lu bytes=%lu usecs=%lu\n", done, done * size, usecs);
}

static void blast_rx(void)
{
    printf_("# blast rx: counting udp frames to our ip for %lu s after the first\n", netcfg.blast_secs);
    u64 hz = tsc_hz(), t0 = 0, tlast = 0, stop = 0, next_link = 0;
    u64 frames = 0, bytes = 0;
    for (;;) {
        const u8 *f;
        u32 len;
        while ((len = rx_one(&f))) {
            if (!is_udp_to_us(f, len)) {
                on_frame(f, len);           /* ARP and ping still answered */
                continue;
            }
            u64 now = rdtsc();
            if (!t0) {
                t0 = now;
                stop = now + netcfg.blast_secs * hz;
            }
            if (now >= stop)
                break;
            frames++;
            bytes += len;
            tlast = now;
        }
        rx_flush();
        u64 now = rdtsc();
        if (t0 && now >= stop)
            break;
        if (now > next_link) {
            watch_link();
            if (pwrbtn_pressed())
                poweroff();
            next_link = now + hz / 1000;
        }
    }
    printf_("# blast rx frames=%lu bytes=%lu usecs=%lu\n", frames, bytes, (tlast - t0) * 1000000 / hz);
}

void net_run(int blast)
{
    pwrbtn_arm();
    if (blast) {
        if (netcfg.blast_rx)
            blast_rx();
        else
            blast_tx();
    } else {
        ping_peer();
    }
    puts_("# net: answering arp and ping until the power button\n");
    if (ctrl_up) {
        puts_("# net ctrl: phase 1 runs on the next link down and up\n");
        ctrl_armed = 1;
    }
    for (;;) {
        rx_poll(1);
        tx_reap();
        watch_link();
        if (pwrbtn_pressed()) {
            printf_("# net rx_frames=%lu rx_bytes=%lu tx_frames=%lu tx_bytes=%lu\n", rx_frames, rx_bytes, tx_frames,
                    tx_bytes);
            poweroff();
        }
    }
}
