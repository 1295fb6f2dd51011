//! The CMOS RTC as `-rtc` sets it up: the clock it runs on, where its
//! RTC_CHANGE reports go, its lost-tick policy, and its QOM path.

use devices::cmos::RtcChangeFn;
use devices::{Clock, Cmos, EpochClock, MonotonicClock, WallClock};

use crate::backend::GuestClock;

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

/// The CMOS on the clock `spec` asks for. `clock=vm` runs on the
/// backend's virtual clock (QEMU_CLOCK_VIRTUAL), which follows host time
/// while the VM runs and stands while it is paused.
pub fn cmos(
    mem_below_4g: u64,
    mem_above_4g: u64,
    cpus: u8,
    spec: RtcSpec,
    guest_clock: GuestClock,
) -> Cmos {
    let clock: Box<dyn Clock> = match spec.clock {
        cli::RtcClock::Host => Box::new(WallClock),
        cli::RtcClock::Rt => Box::new(EpochClock::new(MonotonicClock::new())),
        cli::RtcClock::Vm => Box::new(EpochClock::new(guest_clock)),
    };
    let mut cmos = Cmos::new(mem_below_4g, mem_above_4g, cpus, clock);
    if spec.clock != cli::RtcClock::Host {
        cmos = cmos.with_host_clock(Box::new(WallClock));
    }
    cmos.set_base_offset(spec.base_offset);
    cmos.set_lost_tick_slew(spec.slew);
    cmos.on_rtc_change(spec.report);
    cmos
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qom_path_follows_the_cpu_count() {
        assert_eq!(rtc_qom_path(1), "/machine/unattached/device[9]");
        assert_eq!(rtc_qom_path(4), "/machine/unattached/device[12]");
    }
}
