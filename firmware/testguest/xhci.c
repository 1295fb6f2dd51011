/* ferrovm test guest: plan=xhci, an xHCI host controller (xHCI 1.2) as
 * QEMU's qemu-xhci (1b36:000d, class 0x0c0330, registers in BAR0) with no
 * USB devices.  A driver's bring-up (§4.2): reset, read the capability
 * registers and the Supported Protocol capabilities, set up the device
 * context base address array, a command ring of 8 TRBs ending in a Link
 * TRB with Toggle Cycle, and one event ring segment of 16 TRBs; run with
 * MSI-X vector 0 at LAPIC vector 0x42; then commands (No Op, Enable Slot,
 * Disable Slot, Address Device, Stop Endpoint, a transfer TRB type), each
 * batch's completions taken after its interrupt, the event ring wrapping
 * with its cycle bit; every PORTSC read; HCRST at the end.  With
 * intx_gsi= MSI-X stays off and interrupter 0 signals INTA# instead, routed
 * through the IOAPIC (level, active high) to the same vector; writing
 * IMAN.IP drops the line (QEMU xhci_intr_update).  Every value is
 * printed, so the VMMs can be compared line for line. */
#include "tg.h"

#define XHCI_VENDOR 0x1b36
#define XHCI_DEVICE 0x000d
#define XHCI_VEC 2                  /* IRQ_BASE + 2 = 0x42 */

#define MEM (DMA_BASE + 0x700000)   /* 4 KiB pages, see below */
#define DCBAA (MEM)
#define CMD_RING (MEM + 0x1000)
#define ERST (MEM + 0x2000)
#define EV_RING (MEM + 0x3000)
#define ICTX (MEM + 0x4000)
#define CMD_TRBS 8
#define EV_TRBS 16

/* TRB types and completion codes (xHCI 1.2 Tables 6-90, 6-91). */
#define T_LINK 6
#define T_NOOP_TR 8
#define T_ENABLE_SLOT 9
#define T_DISABLE_SLOT 10
#define T_ADDRESS_DEVICE 11
#define T_STOP_EP 15
#define T_NOOP 23

#define IOAPIC_BASE 0xfec00000ul

static u64 op, rt, db;
static unsigned cmd_idx, ev_idx;
static int cmd_cycle = 1, ev_cycle = 1;

static void ioapic_write(u32 reg, u32 v)
{
    mmio_write32(IOAPIC_BASE, reg);
    mmio_write32(IOAPIC_BASE + 0x10, v);
}

static u32 rd(u64 a) { return mmio_read32(a); }
static void wr(u64 a, u32 v) { mmio_write32(a, v); }
static void wr64(u64 a, u64 v)      /* low dword first, as Linux's lo_hi_writeq */
{
    wr(a, (u32)v);
    wr(a + 4, (u32)(v >> 32));
}

static void put_trb(u64 addr, u64 param, u32 status, u32 control)
{
    volatile u32 *t = phys(addr);
    t[0] = (u32)param;
    t[1] = (u32)(param >> 32);
    t[2] = status;
    t[3] = control;
}

/* Queues a command TRB; past the last slot the Link TRB goes back to the
   start and toggles the producer cycle. */
static void cmd(u32 type, u32 control, u64 param)
{
    put_trb(CMD_RING + 16u * cmd_idx, param, 0, control | type << 10 | (u32)cmd_cycle);
    if (++cmd_idx == CMD_TRBS - 1) {
        put_trb(CMD_RING + 16u * cmd_idx, CMD_RING, 0, T_LINK << 10 | 2u | (u32)cmd_cycle);
        cmd_idx = 0;
        cmd_cycle ^= 1;
    }
}

/* Rings doorbell 0, waits for the interrupt, prints the events it
   produced, then acknowledges: IMAN.IP and ERDP with EHB (§4.17.2). */
static int run(const char *what, int expect)
{
    u64 before = irq_count[XHCI_VEC];
    wr(db, 0);
    irq_wait_vector(XHCI_VEC, before, 1000000);
    int irqs = (int)(irq_count[XHCI_VEC] - before);
    int n = 0;
    for (;;) {
        volatile u32 *e = phys(EV_RING + 16u * ev_idx);
        if ((int)(e[3] & 1) != ev_cycle)
            break;
        u64 ptr = e[0] | (u64)e[1] << 32;
        printf_("# xhci %s event %u: type %u cc %u slot %u ptr %s0x%lx cycle %u\n", what, ev_idx,
                (e[3] >> 10) & 0x3f, e[2] >> 24, e[3] >> 24, ptr >= CMD_RING ? "cmd+" : "",
                ptr >= CMD_RING ? ptr - CMD_RING : ptr, e[3] & 1);
        n++;
        if (++ev_idx == EV_TRBS) {
            ev_idx = 0;
            ev_cycle ^= 1;
        }
    }
    u32 iman = rd(rt + 0x20);
    wr(rt + 0x20, iman | 1);
    wr64(rt + 0x38, (EV_RING + 16u * ev_idx) | 8);
    char name[48];
    snprintf_(name, sizeof name, "xhci %s", what);
    tap(irqs >= 1 && n == expect, name, "%d events, interrupt %s, iman 0x%x", n, irqs ? "taken" : "missing", iman);
    return n;
}

int xhci_checks(void)
{
    const struct pci_fn *f = pci_find(XHCI_VENDOR, XHCI_DEVICE);
    if (!f || f->bar[0].type != BAR_MEM64 || !f->bar[0].addr) {
        tap(0, "xhci", f ? "1b36:000d has no 64-bit BAR0" : "no 1b36:000d function");
        return 0;
    }
    if (!ram_covers(MEM, 0x5000)) {
        tap(0, "xhci", "no RAM at 0x%lx for rings", MEM);
        return 0;
    }
    u64 base = f->bar[0].addr;
    map_mmio(base, f->bar[0].size);
    printf_("# xhci %02x:%02x.%u class %06x bar0 size 0x%lx pin %u caps", f->bdf >> 8, (f->bdf >> 3) & 31,
            f->bdf & 7, f->class, f->bar[0].size, pci_read8(f->bdf, 0x3d));
    for (u8 i = 0; i < f->ncaps; i++)
        printf_(" %02x@%02x", f->cap_id[i], f->cap_off[i]);
    printf_(" sbrn 0x%x\n", pci_read8(f->bdf, 0x60));

    /* Capability registers (§5.3). */
    u32 cap0 = rd(base), hcs1 = rd(base + 4), hcs2 = rd(base + 8), hcs3 = rd(base + 12);
    u32 hcc1 = rd(base + 0x10), dboff = rd(base + 0x14), rtsoff = rd(base + 0x18), hcc2 = rd(base + 0x1c);
    op = base + (cap0 & 0xff);
    rt = base + (rtsoff & ~0x1fu);
    db = base + (dboff & ~0x3u);
    unsigned ports = hcs1 >> 24, slots = hcs1 & 0xff;
    tap((cap0 & 0xff) == 0x40 && ports && slots, "xhci capabilities",
        "caplength 0x%x hciversion 0x%x hcsparams 0x%08x 0x%08x 0x%08x hccparams 0x%08x 0x%08x dboff 0x%x rtsoff 0x%x",
        cap0 & 0xff, cap0 >> 16, hcs1, hcs2, hcs3, hcc1, hcc2, dboff, rtsoff);
    /* Extended capabilities from xECP: Supported Protocol (id 2). */
    u64 x = base + ((hcc1 >> 16) << 2);
    for (int k = 0; k < 8 && x > base; k++) {
        u32 d0 = rd(x);
        if ((d0 & 0xff) == 2)
            printf_("# xhci protocol USB %x.%02x name 0x%08x ports %u-%u\n", d0 >> 24, (d0 >> 16) & 0xff,
                    rd(x + 4), rd(x + 8) & 0xff, (rd(x + 8) & 0xff) + ((rd(x + 8) >> 8) & 0xff) - 1);
        else
            printf_("# xhci extended capability %u\n", d0 & 0xff);
        if (!((d0 >> 8) & 0xff))
            break;
        x += ((d0 >> 8) & 0xff) << 2;
    }

    /* Reset (§4.2): stop, HCRST, wait for HCRST and CNR to clear. */
    wr(op, 0);
    wr(op, 2);
    u64 t0 = clock_us();
    while ((rd(op) & 2 || rd(op + 4) & (1u << 11)) && clock_us() - t0 < 1000000)
        cpu_relax();
    u32 sts = rd(op + 4);
    tap(sts == 1 && rd(op) == 0, "xhci reset",
        "usbcmd 0x%x usbsts 0x%x pagesize 0x%x crcr 0x%x dcbaap 0x%x config 0x%x dnctrl 0x%x", rd(op), sts,
        rd(op + 8), rd(op + 0x18), rd(op + 0x30), rd(op + 0x38), rd(op + 0x14));
    for (unsigned p = 0; p < ports; p++)
        printf_("# xhci port %u portsc 0x%08x after reset\n", p + 1, rd(op + 0x400 + 0x10 * p));

    /* Rings and contexts. */
    memset(phys(MEM), 0, 0x5000);
    wr(op + 0x38, slots);                           /* CONFIG.MaxSlotsEn */
    wr64(op + 0x30, DCBAA);
    wr64(op + 0x18, CMD_RING | 1);                  /* RCS = 1 */
    volatile u32 *seg = phys(ERST);
    seg[0] = (u32)EV_RING;
    seg[1] = 0;
    seg[2] = EV_TRBS;
    wr(rt + 0x28, 1);                               /* ERSTSZ */
    wr64(rt + 0x38, EV_RING);                       /* ERDP */
    wr64(rt + 0x30, ERST);                          /* ERSTBA last: the ring is read then */
    wr(rt + 0x20, 2);                               /* IMAN.IE */
    u32 gsi = (u32)blkcfg.intx_gsi;
    if (gsi) {
        if (gsi > 23) {
            tap(0, "xhci intx", "intx_gsi= must be 16-23");
            return 0;
        }
        irq_drain();
        /* fixed delivery, physical destination, active high, level, unmasked */
        ioapic_write(0x11 + 2 * gsi, lapic_id() << 24);
        ioapic_write(0x10 + 2 * gsi, (IRQ_BASE + XHCI_VEC) | 1u << 15);
        printf_("# xhci intx gsi %u vector 0x%x\n", gsi, IRQ_BASE + XHCI_VEC);
    } else {
        struct msix mx;
        if (!msix_setup(f, &mx)) {
            tap(0, "xhci msi-x", "no MSI-X capability");
            return 0;
        }
        msix_set(&mx, 0, IRQ_BASE + XHCI_VEC);
        msix_enable(&mx);
        printf_("# xhci msi-x %u vectors table bar %u +0x%lx pba +0x%lx\n", mx.n, mx.table_bir,
                mx.table - base, mx.pba - base);
    }
    wr(op, 1 | 4);                                  /* Run/Stop, INTE */
    sts = rd(op + 4);
    tap(!(sts & 1), "xhci running", "usbcmd 0x%x usbsts 0x%x crcr 0x%x", rd(op), sts, rd(op + 0x18));

    cmd(T_NOOP, 0, 0);
    run("noop", 1);
    cmd(T_ENABLE_SLOT, 0, 0);
    cmd(T_ENABLE_SLOT, 0, 0);
    cmd(T_NOOP, 0, 0);
    run("enable slot", 3);
    cmd(T_DISABLE_SLOT, 2u << 24, 0);
    cmd(T_DISABLE_SLOT, 2u << 24, 0);
    cmd(T_ENABLE_SLOT, 0, 0);
    run("disable slot", 3);
    /* Address Device on slot 1 for root port 1 (nothing there). */
    volatile u32 *ic = phys(ICTX);
    ic[1] = 3;                                      /* add slot and ep0 contexts */
    ic[8 + 1] = 1u << 16;                           /* slot context: root hub port 1 */
    ic[16 + 1] = 4u << 3;                           /* ep0: control */
    cmd(T_ADDRESS_DEVICE, 1u << 24, ICTX);
    cmd(T_STOP_EP, 1u << 24 | 1u << 16, 0);
    cmd(T_NOOP_TR, 0, 0);
    cmd(T_ENABLE_SLOT, 0, 0);
    cmd(T_NOOP, 0, 0);
    run("slot commands", 5);
    for (int i = 0; i < 6; i++)
        cmd(T_NOOP, 0, 0);
    run("event ring wrap", 6);

    unsigned connected = 0;
    for (unsigned p = 0; p < ports; p++) {
        u32 sc = rd(op + 0x400 + 0x10 * p);
        connected += sc & 1;
        printf_("# xhci port %u portsc 0x%08x\n", p + 1, sc);
        wr(op + 0x400 + 0x10 * p, (sc & (1u << 9)) | (1u << 17));   /* clear CSC */
    }
    printf_("# xhci port 1 portsc 0x%08x after clearing CSC\n", rd(op + 0x400));
    tap(connected == 0, "xhci root hub ports empty", "%u ports, %u connected", ports, connected);

    if (gsi)
        ioapic_write(0x10 + 2 * gsi, 1u << 16);     /* masked again */
    wr(op, 0);
    t0 = clock_us();
    while (!(rd(op + 4) & 1) && clock_us() - t0 < 1000000)
        cpu_relax();
    wr(op, 2);
    tap(rd(op + 4) == 1 && rd(op + 0x30) == 0 && rd(rt + 0x20) == 0, "xhci reset again",
        "usbsts 0x%x dcbaap 0x%x iman 0x%x erstsz 0x%x erdp 0x%x", rd(op + 4), rd(op + 0x30), rd(rt + 0x20),
        rd(rt + 0x28), rd(rt + 0x38));
    return 1;
}
