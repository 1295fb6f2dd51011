//! Guest RAM: anonymous host mappings registered with KVM as memory slots.

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::error::VmmError;

pub fn create(regions: &[(GuestAddress, usize)]) -> Result<GuestMemoryMmap, VmmError> {
    GuestMemoryMmap::from_ranges(regions).map_err(|e| VmmError::Memory(e.to_string()))
}

/// Registers every region of `mem` with `vm`, slot numbers in order.
///
/// Call it before KVM_CREATE_IRQCHIP: measured on this project's hosts, the
/// first memory slot added after the in-kernel irqchip exists costs 5-8 ms
/// (the host waits for an SRCU grace period), against 0.03 ms before it.
pub fn register(vm: &VmFd, mem: &GuestMemoryMmap) -> Result<(), VmmError> {
    for (slot, region) in mem.iter().enumerate() {
        let r = kvm_userspace_memory_region {
            slot: slot as u32,
            flags: 0,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: region.as_ptr() as u64,
        };
        // SAFETY: the mapping outlives the VM: both are owned by the Machine,
        // which drops the VM first.
        unsafe { vm.set_user_memory_region(r) }
            .map_err(|e| VmmError::Kvm("KVM_SET_USER_MEMORY_REGION", e))?;
    }
    Ok(())
}
