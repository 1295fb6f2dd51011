//! A PCI function's INTx pin as a level-triggered IOAPIC line: an irqfd with
//! a resample fd. KVM raises the GSI when the device asserts; when the guest
//! EOIs, KVM lowers the line and signals the resample fd, and the line is
//! raised again if the device still asserts it (the usual KVM way to model a
//! level interrupt; a deassert before the EOI takes effect at the EOI).

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use devices::interrupt::IntxLine;
use vmm_sys_util::eventfd::EventFd;

use super::kvm_wiring::KvmWiring;
use crate::backend::{BackendHandle, Subscriber};
use crate::error::VmmError;

pub struct LevelLine {
    trigger: EventFd,
    resample: EventFd,
    level: AtomicBool,
}

impl LevelLine {
    pub fn new() -> Result<Arc<Self>, VmmError> {
        Ok(Arc::new(Self {
            trigger: EventFd::new(libc::EFD_NONBLOCK).map_err(VmmError::Io)?,
            resample: EventFd::new(libc::EFD_NONBLOCK).map_err(VmmError::Io)?,
            level: AtomicBool::new(false),
        }))
    }

    /// Connects the line to `gsi` and serves its resample on the backend thread.
    pub fn wire(
        self: &Arc<Self>,
        gsi: u32,
        wiring: &KvmWiring,
        backend: &BackendHandle,
    ) -> Result<(), VmmError> {
        wiring.add_level_irqfd(gsi, &self.trigger, &self.resample)?;
        backend.watch(
            self.resample.as_raw_fd(),
            gsi,
            Arc::new(Mutex::new(Resample(self.clone()))),
        );
        Ok(())
    }
}

impl IntxLine for LevelLine {
    fn set_level(&self, asserted: bool) {
        let was = self.level.swap(asserted, Ordering::SeqCst);
        if asserted && !was {
            let _ = self.trigger.write(1);
        }
    }
}

struct Resample(Arc<LevelLine>);

impl Subscriber for Resample {
    fn ready(&mut self, _: u32) {
        if self.0.resample.read().is_ok() && self.0.level.load(Ordering::SeqCst) {
            let _ = self.0.trigger.write(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What KVM would see: a write on the trigger fd raises the line.
    fn raised(l: &LevelLine) -> bool {
        l.trigger.read().is_ok()
    }

    #[test]
    fn a_level_held_high_is_raised_again_after_each_eoi_and_not_after_it_drops() {
        let l = LevelLine::new().unwrap();
        let mut resample = Resample(l.clone());
        l.set_level(true);
        assert!(raised(&l), "asserting raises the line");
        l.set_level(true);
        assert!(!raised(&l), "no second edge while already asserted");
        // The guest EOIs while the device still asserts: raised again.
        l.resample.write(1).unwrap();
        resample.ready(21);
        assert!(raised(&l));
        // The device drops the level (ISR read) before the next EOI: stays low.
        l.set_level(false);
        l.resample.write(1).unwrap();
        resample.ready(21);
        assert!(!raised(&l));
        // A spurious wake-up with nothing to read does nothing.
        l.set_level(true);
        assert!(raised(&l));
        resample.ready(21);
        assert!(!raised(&l));
    }
}
