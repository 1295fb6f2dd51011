//! The typed messages threads send each other, and the channel that carries
//! them to the controller. Neither the controller nor the [`crate::vm::Vm`]
//! owns these types, so both depend on this module and not on each other.

use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;

use mio::{Poll, Token, Waker};

use crate::error::VmmError;
use crate::vcpu::{EventSink, VcpuEvent};

/// The controller poll's token for [`ControlSender`]'s wake-ups.
pub const WAKER: Token = Token(0);

/// Why the machine stopped for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// The guest powered off (ACPI S5).
    GuestPoweroff,
    /// The guest reset and `-no-reboot` turned that into an exit.
    GuestResetNoReboot,
    /// QMP `system_reset` under `-no-reboot`.
    ResetNoReboot,
    /// A guest panic under `-action panic=exit-failure`: QEMU exits 1
    /// (softmmu/runstate.c `main_loop_should_exit`).
    GuestPanicFailure,
    /// QMP `quit`.
    Quit,
    /// The watchdog's `poweroff` action: QEMU exits 0 at once, with no
    /// SHUTDOWN event (hw/watchdog/watchdog.c).
    WatchdogPoweroff,
    /// `-device help`: printed, nothing was run.
    HelpPrinted,
    /// SIGINT, SIGTERM or SIGHUP.
    Signal(i32),
}

/// What a device backend tells the machine's owner.
#[derive(Debug)]
pub enum DeviceEvent {
    /// A block request failed (QEMU's `blk_error_action`): emit
    /// BLOCK_IO_ERROR with `data`; with `stop`, enter `io-error`.
    BlockIoError { data: serde_json::Value, stop: bool },
    /// A NIC's receive filter changed (NIC_RX_FILTER_CHANGED; `name` is the
    /// device id, `path` the virtio device's QOM path).
    NicRxFilterChanged { name: Option<String>, path: String },
    /// The balloon driver reported a new guest size (BALLOON_CHANGE).
    BalloonChange { actual: u64 },
    /// The guest wrote to a pvpanic device (GUEST_PANICKED or
    /// GUEST_CRASHLOADED, then the `-action panic=` policy).
    GuestPanic(devices::pvpanic::PvPanicEvent),
    /// A watchdog ran out: WATCHDOG, then the `-watchdog-action`.
    WatchdogExpired,
    /// The guest set the RTC (RTC_CHANGE: `offset` from the `-rtc base=`
    /// time in seconds, `qom_path` the RTC's).
    RtcChange { offset: i64, qom_path: String },
    /// A block node raised an event (a quorum's QUORUM_*).
    Node(block::events::NodeEvent),
}

/// Messages that reach the controller from other threads.
#[derive(Debug)]
pub enum ControlMsg {
    Vcpu(VcpuEvent),
    Device(DeviceEvent),
    /// The machine built on a helper thread under `-S` is ready (or failed).
    MachineBuilt,
    /// A block job's worker reports (parked, ready, an error, done).
    Job(block::job::JobMsg),
    /// The NBD server's threads report (a connection closed).
    Nbd(block::nbd::NbdMsg),
}

/// Sends to the controller's channel and wakes its poll.
pub struct ControlSender {
    tx: Sender<ControlMsg>,
    waker: Waker,
}

impl ControlSender {
    pub fn send(&self, msg: ControlMsg) {
        // A failed send only happens while the controller tears down.
        if self.tx.send(msg).is_ok() {
            let _ = self.waker.wake();
        }
    }
}

impl EventSink for ControlSender {
    fn send(&self, event: VcpuEvent) {
        ControlSender::send(self, ControlMsg::Vcpu(event));
    }
}

/// Creates the poll and the channel every other thread uses to reach the controller.
pub fn channel() -> Result<(Poll, Arc<ControlSender>, Receiver<ControlMsg>), VmmError> {
    let poll = Poll::new()?;
    let waker = Waker::new(poll.registry(), WAKER)?;
    let (tx, rx) = mpsc::channel();
    Ok((poll, Arc::new(ControlSender { tx, waker }), rx))
}
