/* ferrovm test guest: external interrupts at CPL3's request.
 *
 * entry.S has 16 tiny CPL0 stubs (vectors 0x40-0x4f) that count in
 * irq_count[] and write the LAPIC EOI; this file writes their IDT gates (the
 * IDT page is user-accessible, and a gate needs no flush) and software-enables
 * the local APIC through its MMIO page (Intel SDM vol. 3 §10.9, SVR).
 *
 * CPL3 always runs with IF=0: on this host cli/sti fault at CPL3 even with
 * IOPL 3, and a pending interrupt is not delivered at CPL3 with IF=1 nor on
 * a syscall's iretq.  So waiting for an interrupt is `ud2`: the #UD handler
 * (full privilege) runs sti; hlt; cli and returns past the ud2 once one
 * interrupt has been handled. */
#include "tg.h"

extern u8 idt[256 * 16];
extern char irq_stubs[], irq_spurious[];

#define LAPIC_ID 0x020
#define LAPIC_TPR 0x080
#define LAPIC_SVR 0x0f0
#define LAPIC_IRR_40 0x220      /* IRR bits for vectors 0x40-0x5f */
#define LAPIC_ICR_LO 0x300
#define LAPIC_ICR_HI 0x310
#define LAPIC_LVT_TIMER 0x320
#define LAPIC_TICR 0x380
#define LAPIC_TDCR 0x3e0

static void set_gate(unsigned vec, void *handler)
{
    u64 h = (u64)(uintptr_t)handler;
    u8 *g = &idt[vec * 16];
    *(volatile u16 *)(g + 0) = (u16)h;
    *(volatile u16 *)(g + 2) = 0x08;            /* kernel code */
    *(volatile u16 *)(g + 4) = 0x8e00;          /* present, DPL0, interrupt gate */
    *(volatile u16 *)(g + 6) = (u16)(h >> 16);
    *(volatile u32 *)(g + 8) = (u32)(h >> 32);
    *(volatile u32 *)(g + 12) = 0;
}

u32 lapic_id(void) { return mmio_read32(LAPIC_BASE + LAPIC_ID) >> 24; }

void irq_init(void)
{
    for (unsigned i = 0; i < IRQ_COUNT; i++) {
        irq_count[i] = 0;
        set_gate(IRQ_BASE + i, irq_stubs + 16 * i);
    }
    set_gate(0xff, irq_spurious);
    /* Nothing but MSI, the wake-up timer and self-IPIs: mask the 8259s
       (firmware may have left the PIT unmasked at vector 8, an exception
       vector here), LINT0/1, and the other LVT entries. */
    outb(0x21, 0xff);
    outb(0xa1, 0xff);
    for (unsigned r = 0x320; r <= 0x370; r += 0x10)
        if (r != 0x330)
            mmio_write32(LAPIC_BASE + r, mmio_read32(LAPIC_BASE + r) | 1u << 16);
    mmio_write32(LAPIC_BASE + LAPIC_TPR, 0);
    mmio_write32(LAPIC_BASE + LAPIC_SVR, 0x1ff);   /* APIC software enable, spurious 0xff */
    mmio_write32(LAPIC_BASE + LAPIC_TDCR, 0x0b);   /* timer: divide by 1, one-shot */
    mmio_write32(LAPIC_BASE + LAPIC_LVT_TIMER, IRQ_BASE + IRQ_TIMER);
}

/* Waits (irq_wait) until irq_count[v] moves past `before` or `timeout_us`
   passes.  A one-shot LAPIC timer (vector IRQ_TIMER) bounds each hlt, so
   a missing interrupt cannot hang the guest. */
void irq_wait_vector(unsigned v, u64 before, u64 timeout_us)
{
    u64 end = 0;
    while (irq_count[v] == before) {
        mmio_write32(LAPIC_BASE + LAPIC_TICR, 10000000);   /* ~10 ms at KVM's 1 GHz APIC clock */
        irq_wait();
        if (irq_count[v] != before)
            break;
        u64 now = clock_us();
        if (!end)
            end = now + timeout_us;
        else if (now > end)
            break;
    }
    mmio_write32(LAPIC_BASE + LAPIC_TICR, 0);
}

/* Takes every interrupt already pending in the LAPIC IRR for 0x40-0x4f
   (e.g. a device's first completion, which QEMU always signals). */
void irq_drain(void)
{
    for (int k = 0; k < 64 && (mmio_read32(LAPIC_BASE + LAPIC_IRR_40) & 0xffff); k++)
        irq_wait();
}

/* A fixed self-IPI: shows the IDT gate, the stub and EOI work before any
   device relies on them. */
int irq_self_test(void)
{
    unsigned v = IRQ_SELFTEST;
    u64 before = irq_count[v];
    mmio_write32(LAPIC_BASE + LAPIC_ICR_HI, 0);
    mmio_write32(LAPIC_BASE + LAPIC_ICR_LO, (IRQ_BASE + v) | 1u << 14 | 1u << 18);
    irq_wait_vector(v, before, 100000);
    return irq_count[v] == before + 1;
}
