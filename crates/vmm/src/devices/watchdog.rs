//! The i6300esb watchdog on the machine: its PCI function, and its stage
//! timer on the backend thread's virtual clock, so a paused VM's watchdog
//! stands still (QEMU's timer is QEMU_CLOCK_VIRTUAL). When it runs out, the
//! machine's owner hears [`DeviceEvent::WatchdogExpired`] and performs the
//! `-watchdog-action` (`Vm::watchdog_expired`).

use std::sync::{Arc, Mutex};

use devices::watchdog::I6300Esb;

use super::qdev::I6300EsbRequest;
use super::DeviceManager;
use crate::backend::{BackendHandle, TimerId, TimerSubscriber};
use crate::messages::{ControlMsg, ControlSender, DeviceEvent};
use crate::sync::lock;

/// The model's deadline passed: run its expiry, report a fire.
struct StageTimer {
    model: Arc<Mutex<I6300Esb>>,
    events: Arc<ControlSender>,
}

impl TimerSubscriber for StageTimer {
    fn expired(&mut self, _: TimerId, now_ns: u64) {
        // The model re-arms stage 2 (or free-running stage 1) itself,
        // through its deadline notifier.
        let fired = lock(&self.model).expired(now_ns);
        if fired.is_some() {
            self.events
                .send(ControlMsg::Device(DeviceEvent::WatchdogExpired));
        }
    }
}

/// Moves the backend timer with the model's deadline.
fn follow_deadline(backend: BackendHandle, timer: TimerId) -> devices::watchdog::DeadlineFn {
    Arc::new(move |deadline| match deadline {
        Some(at) => backend.arm_timer(timer, at),
        None => backend.cancel_timer(timer),
    })
}

impl DeviceManager {
    /// Builds `-device i6300esb` on bus 0.
    pub(super) fn add_i6300esb(
        &self,
        request: I6300EsbRequest,
        qom_path: String,
    ) -> Result<devices::pci::PciAddress, String> {
        let backend = self.backend.handle();
        let model = I6300Esb::new(Box::new(backend.guest_clock())).map_err(|e| e.to_string())?;
        let model = Arc::new(Mutex::new(model));
        let events = self
            .events
            .clone()
            .ok_or("i6300esb: the machine has no event channel")?;
        let timer = backend.create_timer(Arc::new(Mutex::new(StageTimer {
            model: model.clone(),
            events,
        })));
        lock(&model).set_deadline_notifier(follow_deadline(backend.clone(), timer));
        self.add_pci_function(model, "i6300esb", request.pci, qom_path, None)
    }
}
