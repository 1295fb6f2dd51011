/* The start-up floor: the least a KVM VMM can do before a guest prints.
 * Creates a VM with 4 KiB of RAM, an in-kernel irqchip and one vCPU, runs
 * real-mode code that writes one byte to port 0x3f8, and writes that byte to
 * stdout. `make bench` times exec-to-byte of this against ferrovm's first
 * serial byte. Build: cc -O2 -o kvm_floor kvm_floor.c */
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

int main(void)
{
    /* mov $'F', %al; mov $0x3f8, %dx; out %al, (%dx); hlt */
    static const uint8_t code[] = {0xb0, 'F', 0xba, 0xf8, 0x03, 0xee, 0xf4};
    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0) { perror("/dev/kvm"); return 1; }
    int vm = ioctl(kvm, KVM_CREATE_VM, 0);
    uint8_t *mem = mmap(NULL, 0x1000, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    memcpy(mem, code, sizeof code);
    struct kvm_userspace_memory_region r = {
        .slot = 0, .guest_phys_addr = 0x1000, .memory_size = 0x1000, .userspace_addr = (uint64_t)mem};
    if (vm < 0 || ioctl(vm, KVM_SET_USER_MEMORY_REGION, &r) < 0) { perror("vm"); return 1; }
    if (ioctl(vm, KVM_CREATE_IRQCHIP, 0) < 0) { perror("irqchip"); return 1; }
    int cpu = ioctl(vm, KVM_CREATE_VCPU, 0);
    int sz = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
    struct kvm_run *run = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_SHARED, cpu, 0);
    struct kvm_sregs s;
    ioctl(cpu, KVM_GET_SREGS, &s);
    s.cs.base = 0; s.cs.selector = 0;
    ioctl(cpu, KVM_SET_SREGS, &s);
    struct kvm_regs regs = {.rip = 0x1000, .rflags = 2};
    ioctl(cpu, KVM_SET_REGS, &regs);
    for (;;) {
        if (ioctl(cpu, KVM_RUN, 0) < 0) { perror("KVM_RUN"); return 1; }
        if (run->exit_reason == KVM_EXIT_IO && run->io.port == 0x3f8) {
            fputc(*((char *)run + run->io.data_offset), stdout);
            fflush(stdout);
            return 0;
        }
        if (run->exit_reason != KVM_EXIT_IO) { fprintf(stderr, "exit %d\n", run->exit_reason); return 1; }
    }
}
