/* ferrovm test guest: MSI-X (PCI Local Bus 3.0 §6.8.2).
 *
 * Each table entry is 16 bytes: message address low/high, data, vector
 * control (bit 0 = masked).  Messages go to the local APIC of the boot CPU
 * (address 0xfee00000 | APIC ID << 12, data = vector: fixed, edge). */
#include "tg.h"

int msix_setup(const struct pci_fn *f, struct msix *m)
{
    memset(m, 0, sizeof *m);
    u8 cap = pci_find_cap(f, 0x11, 0);
    if (!cap)
        return 0;
    u16 ctl = pci_read16(f->bdf, cap + 2);
    u32 tbl = pci_read32(f->bdf, cap + 4), pba = pci_read32(f->bdf, cap + 8);
    const struct pci_bar *tb = &f->bar[tbl & 7], *pb = &f->bar[pba & 7];
    if ((tbl & 7) > 5 || (tb->type != BAR_MEM32 && tb->type != BAR_MEM64) || !tb->addr)
        return 0;
    m->bdf = f->bdf;
    m->cap = cap;
    m->n = (u16)((ctl & 0x7ff) + 1);
    m->table = tb->addr + (tbl & ~7u);
    m->pba = pb->addr + (pba & ~7u);
    m->table_bir = (u8)(tbl & 7);
    m->pba_bir = (u8)(pba & 7);
    if (!map_mmio(m->table, (u64)m->n * 16))
        return 0;
    /* Function mask while the table is programmed; every entry masked. */
    pci_write16(f->bdf, cap + 2, (u16)((ctl & ~0x8000u) | 0x4000u));
    for (u16 i = 0; i < m->n; i++)
        mmio_write32(m->table + 16u * i + 12, 1);
    return 1;
}

void msix_set(const struct msix *m, u16 entry, u8 vector)
{
    u64 e = m->table + 16u * entry;
    mmio_write32(e + 0, (u32)LAPIC_BASE | lapic_id() << 12);
    mmio_write32(e + 4, 0);
    mmio_write32(e + 8, vector);
    mmio_write32(e + 12, 0);                    /* unmasked */
}

void msix_enable(const struct msix *m)
{
    u16 ctl = pci_read16(m->bdf, m->cap + 2);
    pci_write16(m->bdf, m->cap + 2, (u16)((ctl & ~0x4000u) | 0x8000u));
}
