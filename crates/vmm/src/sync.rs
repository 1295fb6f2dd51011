//! Lock helpers shared by the VMM's threads.

use std::sync::{Mutex, MutexGuard};

/// Device locks are only poisoned by a panic, already reported; keep going.
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
