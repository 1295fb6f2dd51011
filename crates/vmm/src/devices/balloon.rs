//! The machine's virtio balloon as QMP reaches it: `balloon`,
//! `query-balloon`, and the QOM properties `guest-stats` and
//! `guest-stats-polling-interval`, whose timer runs on the backend thread's
//! virtual clock (QEMU's stats timer is QEMU_CLOCK_VIRTUAL: it stops while
//! the VM is paused).

use std::sync::{Arc, Mutex};

use devices::virtio::balloon::{StatsTimer, VirtioBalloon};

use crate::backend::{BackendHandle, TimerId, TimerSubscriber};
use crate::sync::lock;

const NS_PER_SEC: u64 = 1_000_000_000;

pub struct Balloon {
    /// Its QOM path (`/machine/peripheral/ID`).
    pub qom_path: String,
    pub model: Arc<Mutex<VirtioBalloon>>,
    timer: TimerId,
    backend: BackendHandle,
}

/// The stats timer: hands the stats buffer back to the driver, then comes
/// again one interval later while polling is on.
struct StatsTick {
    model: Arc<Mutex<VirtioBalloon>>,
    backend: BackendHandle,
}

impl TimerSubscriber for StatsTick {
    fn expired(&mut self, id: TimerId, now_ns: u64) {
        let period = {
            let mut m = lock(&self.model);
            m.request_stats();
            m.stats_interval()
        };
        if period > 0 {
            let next = now_ns.saturating_add(u64::from(period) * NS_PER_SEC);
            self.backend.arm_timer(id, next);
        }
    }
}

impl Balloon {
    pub fn new(qom_path: String, model: Arc<Mutex<VirtioBalloon>>, backend: BackendHandle) -> Self {
        let timer = backend.create_timer(Arc::new(Mutex::new(StatsTick {
            model: model.clone(),
            backend: backend.clone(),
        })));
        let period = lock(&model).stats_interval();
        if period > 0 {
            // Given on the command line: polling starts with the guest.
            backend.arm_timer_in(timer, 0);
        }
        Self {
            qom_path,
            model,
            timer,
            backend,
        }
    }

    /// `qom-set … guest-stats-polling-interval`, with QEMU's checks.
    pub fn set_stats_interval(&self, secs: i64) -> Result<(), String> {
        let t = lock(&self.model)
            .set_stats_interval(secs)
            .map_err(|e| e.to_string())?;
        match t {
            StatsTimer::Unchanged => {}
            StatsTimer::Stop => self.backend.cancel_timer(self.timer),
            StatsTimer::Arm {
                first_after_secs, ..
            } => self
                .backend
                .arm_timer_in(self.timer, u64::from(first_after_secs) * NS_PER_SEC),
        }
        Ok(())
    }
}
