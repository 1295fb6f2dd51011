//! Guest RAM: anonymous host mappings (their KVM slots: `memory_map`).

use vm_memory::{GuestAddress, GuestMemoryMmap};

use crate::error::VmmError;

pub fn create(regions: &[(GuestAddress, usize)]) -> Result<GuestMemoryMmap, VmmError> {
    GuestMemoryMmap::from_ranges(regions).map_err(|e| VmmError::Memory(e.to_string()))
}
