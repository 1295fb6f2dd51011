/* ferrovm test guest: plan=panic-pci and plan=crashloaded-pci, QEMU's
 * pvpanic-pci (hw/misc/pvpanic-pci.c): 1b36:0011 with the pvpanic register
 * as the first byte of BAR0 (a 2-byte memory region; a memory BAR register
 * sizes as at least 16 bytes).  As for the ISA device (plan=panic in
 * main.c): a read returns the events the device supports, a write of bit 0
 * (PVPANIC_PANICKED) or bit 1 (PVPANIC_CRASH_LOADED) reports one
 * (hw/misc/pvpanic.c).  What follows is the VMM's -action panic= policy. */
#include "tg.h"

#define PVPANIC_PCI_VENDOR 0x1b36
#define PVPANIC_PCI_DEVICE 0x0011

int pvpanic_pci(u8 event)
{
    const struct pci_fn *f = pci_find(PVPANIC_PCI_VENDOR, PVPANIC_PCI_DEVICE);
    if (!f || f->bar[0].type != BAR_MEM32 || !f->bar[0].addr) {
        printf_("not ok - pvpanic-pci: %s\n", f ? "1b36:0011 has no memory BAR0" : "no 1b36:0011 function");
        return 0;
    }
    u64 reg = f->bar[0].addr;
    printf_("# pvpanic-pci %02x:%02x.%u bar0 0x%lx reads 0x%x; writing 0x%x\n", f->bdf >> 8, (f->bdf >> 3) & 31,
            f->bdf & 7, reg, mmio_read8(reg), event);
    mmio_write8(reg, event);
    puts_("pvpanic written\n");
    return 1;
}
