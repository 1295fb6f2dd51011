//! `-rtc driftfix=slew` (QEMU's `lost_tick_policy=slew`, hw/rtc/mc146818rtc.c):
//! periodic interrupts the guest could not take are counted
//! (`irq_coalesced`) and given back later, one each time the guest reads
//! register C (at most 20 in a row, `RTC_REINJECT_ON_ACK_COUNT`) and from a
//! timer that runs at 2-8 times the periodic rate (`rtc_coalesced_timer`).
//!
//! QEMU on KVM learns that a tick was lost from KVM_IRQ_LINE_STATUS: the
//! edge did not reach the APIC because the line was still high (the guest
//! had not read C) or KVM's IOAPIC still waited for the previous RTC
//! interrupt's EOI. ferrovm raises IRQ 8 through an irqfd, which reports
//! neither; it sees the first cause only: a tick is lost when IRQF is still
//! set (docs/known-gaps.md).

const NS_PER_SEC: i128 = 1_000_000_000;
/// QEMU `RTC_REINJECT_ON_ACK_COUNT`.
const REINJECT_ON_ACK_COUNT: u16 = 20;

#[derive(Debug, Default)]
pub(super) struct Slew {
    enabled: bool,
    /// Ticks owed to the guest (QEMU `irq_coalesced`).
    coalesced: u32,
    /// Reinjections on C reads since the last delivered tick.
    reinject_on_ack: u16,
    /// Guest time the coalesced timer is due.
    next_ns: Option<i128>,
}

impl Slew {
    pub(super) fn new(enabled: bool) -> Self {
        Self {
            enabled,
            ..Self::default()
        }
    }

    pub(super) fn lost_ticks(&self) -> u32 {
        self.coalesced
    }

    /// `n` periodic ticks of `period` (32 kHz cycles) came by `now`; the
    /// first reached the guest iff `delivered` (QEMU `rtc_periodic_timer`).
    pub(super) fn ticks(&mut self, n: i128, delivered: bool, now: i128, period: i128) {
        if !self.enabled || n <= 0 {
            return;
        }
        if self.reinject_on_ack >= REINJECT_ON_ACK_COUNT {
            self.reinject_on_ack = 0;
        }
        let lost = n - i128::from(delivered);
        if lost > 0 {
            let lost = u32::try_from(lost).unwrap_or(u32::MAX);
            self.coalesced = self.coalesced.saturating_add(lost);
            self.schedule(now, period);
        }
    }

    /// The coalesced timer's deadline, if a tick is owed.
    pub(super) fn deadline(&self) -> Option<i128> {
        if self.enabled && self.coalesced > 0 {
            self.next_ns
        } else {
            None
        }
    }

    /// The coalesced timer fired at `now`; `delivered`: its edge reached
    /// the guest.
    pub(super) fn timer_fired(&mut self, delivered: bool, now: i128, period: i128) {
        if delivered {
            self.coalesced = self.coalesced.saturating_sub(1);
        }
        self.schedule(now, period);
    }

    /// The guest read register C with PIE `pie`: true if an owed tick is
    /// given back now (the line just dropped, so its edge is delivered).
    pub(super) fn on_ack(&mut self, pie: bool) -> bool {
        if self.enabled && self.coalesced > 0 && pie && self.reinject_on_ack < REINJECT_ON_ACK_COUNT
        {
            self.reinject_on_ack += 1;
            self.coalesced -= 1;
            true
        } else {
            false
        }
    }

    /// The periodic rate changed from `old` to `new` cycles (0: off). QEMU
    /// `periodic_timer_update`: off forgets the debt; a new rate rescales it
    /// (the guest counts owed ticks in the new period).
    pub(super) fn period_changed(&mut self, old: i128, new: i128, now: i128) {
        if new == 0 {
            self.coalesced = 0;
            self.next_ns = None;
        } else if old != 0 && old != new && self.coalesced > 0 {
            let scaled = i128::from(self.coalesced) * old / new;
            self.coalesced = u32::try_from(scaled).unwrap_or(u32::MAX);
            self.schedule(now, new);
        }
    }

    /// QMP `rtc-reset-reinjection` (`qmp_rtc_reset_reinjection`).
    pub(super) fn reset_reinjection(&mut self) {
        self.coalesced = 0;
        self.next_ns = None;
    }

    /// Machine reset (`rtc_reset_enter`).
    pub(super) fn reset(&mut self) {
        self.reset_reinjection();
        self.reinject_on_ack = 0;
    }

    /// QEMU `rtc_coalesced_timer_update`: each period split in 2-8.
    fn schedule(&mut self, now: i128, period: i128) {
        self.next_ns = if self.coalesced == 0 || period <= 0 {
            None
        } else {
            let c = i128::from(self.coalesced.min(7)) + 1;
            Some(now + (period / c).max(1) * NS_PER_SEC / 32768)
        };
    }
}
