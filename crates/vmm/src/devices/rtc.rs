//! The CMOS RTC as `-rtc` sets it up: the clock it runs on, where its
//! RTC_CHANGE reports go, its lost-tick policy, and its QOM path.

use std::sync::{Arc, Mutex};

use devices::cmos::RtcChangeFn;
use devices::{Clock, Cmos, EpochClock, MonotonicClock, WallClock};

use crate::backend::clock::{ClockMode, VirtualClock};
use crate::backend::Drainable;
use crate::sync::lock;

pub struct RtcSpec {
    /// Seconds added to host UTC (`-rtc base=`).
    pub base_offset: i64,
    /// `-rtc clock=`.
    pub clock: cli::RtcClock,
    /// `-rtc driftfix=slew`: periodic interrupts the guest missed are
    /// reinjected (QEMU's `lost_tick_policy=slew`).
    pub slew: bool,
    /// Where RTC_CHANGE offsets go.
    pub report: RtcChangeFn,
}

/// The RTC's QOM path on QEMU 7.2's q35: `/machine/unattached/device[N]`,
/// N = 8 + the boot vCPUs (QEMU 7.2, `qom-list /machine/unattached` with
/// `-smp 1`, 2 and 4 gives device[9], [10] and [12]; memory size and
/// `-nodefaults` devices do not move it).
pub fn rtc_qom_path(cpus: usize) -> String {
    format!("/machine/unattached/device[{}]", 8 + cpus)
}

/// The guest's virtual clock (QEMU_CLOCK_VIRTUAL) for `-rtc clock=vm`: it
/// follows host time while the VM runs and stands while it is paused. The
/// backend thread pauses and resumes it with every other drainable, in
/// `stop`'s drain and `cont` (DeviceManager::pause/resume), so it moves
/// exactly when the backend's own virtual clock does.
#[derive(Clone)]
pub struct VmTime(Arc<Mutex<VirtualClock>>);

impl Default for VmTime {
    /// Stopped at 0 until the VM first runs, as the backend's clock.
    fn default() -> Self {
        Self(Arc::new(Mutex::new(VirtualClock::new(ClockMode::Realtime))))
    }
}

impl Clock for VmTime {
    fn now_ns(&self) -> i128 {
        i128::from(lock(&self.0).now_ns())
    }
}

impl Drainable for VmTime {
    fn pause(&mut self) {
        lock(&self.0).pause();
    }

    fn resume(&mut self) {
        lock(&self.0).resume();
    }
}

/// The CMOS on the clock `spec` asks for; with `clock=vm`, also the
/// virtual clock to register as a drainable on the backend thread.
pub fn cmos(
    mem_below_4g: u64,
    mem_above_4g: u64,
    cpus: u8,
    spec: RtcSpec,
) -> (Cmos, Option<VmTime>) {
    let mut vm_time = None;
    let clock: Box<dyn Clock> = match spec.clock {
        cli::RtcClock::Host => Box::new(WallClock),
        cli::RtcClock::Rt => Box::new(EpochClock::new(MonotonicClock::new())),
        cli::RtcClock::Vm => {
            let t = VmTime::default();
            vm_time = Some(t.clone());
            Box::new(EpochClock::new(t))
        }
    };
    let mut cmos = Cmos::new(mem_below_4g, mem_above_4g, cpus, clock);
    if spec.clock != cli::RtcClock::Host {
        cmos = cmos.with_host_clock(Box::new(WallClock));
    }
    cmos.set_base_offset(spec.base_offset);
    cmos.set_lost_tick_slew(spec.slew);
    cmos.on_rtc_change(spec.report);
    (cmos, vm_time)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn qom_path_follows_the_cpu_count() {
        assert_eq!(rtc_qom_path(1), "/machine/unattached/device[9]");
        assert_eq!(rtc_qom_path(4), "/machine/unattached/device[12]");
    }

    #[test]
    fn vm_time_stands_while_paused() {
        let mut t = VmTime::default();
        let rtc = EpochClock::new(t.clone());
        let start = rtc.now_ns();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(rtc.now_ns(), start, "not running before the VM starts");
        t.resume();
        std::thread::sleep(Duration::from_millis(20));
        t.pause();
        let ran = rtc.now_ns() - start;
        assert!(ran >= 20_000_000, "{ran}");
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(rtc.now_ns() - start, ran, "paused time does not count");
        let host_delta = WallClock.now_ns() - start;
        assert!(host_delta >= 70_000_000, "host UTC went on: {host_delta}");
    }
}
