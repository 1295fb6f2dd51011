//! The VM run state, exactly as QEMU 7.2 models it.
//!
//! * [`RunState`]: every value of QEMU 7.2's `RunState` (qapi/run-state.json),
//!   serialized with QEMU's names.
//! * [`TRANSITIONS`]: QEMU's `runstate_transitions_def` table
//!   (softmmu/runstate.c) as data.  [`RunStateMachine`] is the single owner
//!   of the current state; every change goes through
//!   [`RunStateMachine::transition`], and a transition the table does not
//!   allow is an error naming both states — never a silent overwrite.
//!   (QEMU aborts on it; setting the current state again is a no-op, as in
//!   QEMU's `runstate_set`.)
//! * [`ShutdownCause`] with QEMU's names and `shutdown_caused_by_guest()`.
//! * The `-action` / `set-action` policies ([`RebootAction`],
//!   [`ShutdownAction`], [`PanicAction`], [`WatchdogAction`], the command
//!   line's own types) and [`GuestPanicAction`] (what GUEST_PANICKED reports).

use serde::{Deserialize, Serialize};
use std::fmt;

/// QEMU 7.2's `RunState`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunState {
    Debug,
    Inmigrate,
    InternalError,
    IoError,
    Paused,
    Postmigrate,
    Prelaunch,
    FinishMigrate,
    RestoreVm,
    Running,
    SaveVm,
    Shutdown,
    Suspended,
    Watchdog,
    GuestPanicked,
    Colo,
}

impl RunState {
    /// Every value, in QAPI declaration order.
    pub const ALL: [RunState; 16] = [
        RunState::Debug,
        RunState::Inmigrate,
        RunState::InternalError,
        RunState::IoError,
        RunState::Paused,
        RunState::Postmigrate,
        RunState::Prelaunch,
        RunState::FinishMigrate,
        RunState::RestoreVm,
        RunState::Running,
        RunState::SaveVm,
        RunState::Shutdown,
        RunState::Suspended,
        RunState::Watchdog,
        RunState::GuestPanicked,
        RunState::Colo,
    ];

    /// QEMU's name (`RunState_str`).
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Debug => "debug",
            RunState::Inmigrate => "inmigrate",
            RunState::InternalError => "internal-error",
            RunState::IoError => "io-error",
            RunState::Paused => "paused",
            RunState::Postmigrate => "postmigrate",
            RunState::Prelaunch => "prelaunch",
            RunState::FinishMigrate => "finish-migrate",
            RunState::RestoreVm => "restore-vm",
            RunState::Running => "running",
            RunState::SaveVm => "save-vm",
            RunState::Shutdown => "shutdown",
            RunState::Suspended => "suspended",
            RunState::Watchdog => "watchdog",
            RunState::GuestPanicked => "guest-panicked",
            RunState::Colo => "colo",
        }
    }
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

use RunState as S;

/// QEMU 7.2's `runstate_transitions_def`: every allowed (from, to) pair.
/// (QEMU lists prelaunch → inmigrate twice; it appears once here.)
pub const TRANSITIONS: &[(RunState, RunState)] = &[
    (S::Debug, S::Running),
    (S::Debug, S::FinishMigrate),
    (S::Debug, S::Prelaunch),
    (S::Inmigrate, S::InternalError),
    (S::Inmigrate, S::IoError),
    (S::Inmigrate, S::Paused),
    (S::Inmigrate, S::Running),
    (S::Inmigrate, S::Shutdown),
    (S::Inmigrate, S::Suspended),
    (S::Inmigrate, S::Watchdog),
    (S::Inmigrate, S::GuestPanicked),
    (S::Inmigrate, S::FinishMigrate),
    (S::Inmigrate, S::Prelaunch),
    (S::Inmigrate, S::Postmigrate),
    (S::Inmigrate, S::Colo),
    (S::InternalError, S::Paused),
    (S::InternalError, S::FinishMigrate),
    (S::InternalError, S::Prelaunch),
    (S::IoError, S::Running),
    (S::IoError, S::FinishMigrate),
    (S::IoError, S::Prelaunch),
    (S::Paused, S::Running),
    (S::Paused, S::FinishMigrate),
    (S::Paused, S::Postmigrate),
    (S::Paused, S::Prelaunch),
    (S::Paused, S::Colo),
    (S::Postmigrate, S::Running),
    (S::Postmigrate, S::FinishMigrate),
    (S::Postmigrate, S::Prelaunch),
    (S::Prelaunch, S::Running),
    (S::Prelaunch, S::FinishMigrate),
    (S::Prelaunch, S::Inmigrate),
    (S::FinishMigrate, S::Running),
    (S::FinishMigrate, S::Paused),
    (S::FinishMigrate, S::Postmigrate),
    (S::FinishMigrate, S::Prelaunch),
    (S::FinishMigrate, S::Colo),
    (S::RestoreVm, S::Running),
    (S::RestoreVm, S::Prelaunch),
    (S::Colo, S::Running),
    (S::Colo, S::Prelaunch),
    (S::Colo, S::Shutdown),
    (S::Running, S::Debug),
    (S::Running, S::InternalError),
    (S::Running, S::IoError),
    (S::Running, S::Paused),
    (S::Running, S::FinishMigrate),
    (S::Running, S::RestoreVm),
    (S::Running, S::SaveVm),
    (S::Running, S::Shutdown),
    (S::Running, S::Watchdog),
    (S::Running, S::GuestPanicked),
    (S::Running, S::Colo),
    (S::SaveVm, S::Running),
    (S::Shutdown, S::Paused),
    (S::Shutdown, S::FinishMigrate),
    (S::Shutdown, S::Prelaunch),
    (S::Shutdown, S::Colo),
    (S::Debug, S::Suspended),
    (S::Running, S::Suspended),
    (S::Suspended, S::Running),
    (S::Suspended, S::FinishMigrate),
    (S::Suspended, S::Prelaunch),
    (S::Suspended, S::Colo),
    (S::Watchdog, S::Running),
    (S::Watchdog, S::FinishMigrate),
    (S::Watchdog, S::Prelaunch),
    (S::Watchdog, S::Colo),
    (S::GuestPanicked, S::Running),
    (S::GuestPanicked, S::FinishMigrate),
    (S::GuestPanicked, S::Prelaunch),
];

/// Whether the table allows `from` → `to`.
pub fn transition_allowed(from: RunState, to: RunState) -> bool {
    TRANSITIONS.iter().any(|&(f, t)| f == from && t == to)
}

/// A transition the table does not allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IllegalTransition {
    pub from: RunState,
    pub to: RunState,
}

impl fmt::Display for IllegalTransition {
    /// QEMU's wording: `invalid runstate transition: 'running' -> 'prelaunch'`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid runstate transition: '{}' -> '{}'",
            self.from, self.to
        )
    }
}

impl std::error::Error for IllegalTransition {}

/// The single owner of the VM's run state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunStateMachine {
    state: RunState,
}

impl Default for RunStateMachine {
    /// QEMU starts in `prelaunch` (`current_run_state`).
    fn default() -> Self {
        RunStateMachine {
            state: RunState::Prelaunch,
        }
    }
}

impl RunStateMachine {
    pub fn new(initial: RunState) -> Self {
        RunStateMachine { state: initial }
    }

    pub fn state(&self) -> RunState {
        self.state
    }

    /// `runstate_set()`: moves to `to` if the table allows it; setting the
    /// current state again is a no-op.
    pub fn transition(&mut self, to: RunState) -> Result<(), IllegalTransition> {
        if self.state == to {
            return Ok(());
        }
        if !transition_allowed(self.state, to) {
            return Err(IllegalTransition {
                from: self.state,
                to,
            });
        }
        self.state = to;
        Ok(())
    }

    /// `runstate_is_running()`.
    pub fn is_running(&self) -> bool {
        self.state == RunState::Running
    }

    /// `runstate_needs_reset()`.
    pub fn needs_reset(&self) -> bool {
        matches!(self.state, RunState::InternalError | RunState::Shutdown)
    }
}

/// QEMU 7.2's `ShutdownCause` (declaration order matters: see [`Self::is_guest`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ShutdownCause {
    None,
    HostError,
    HostQmpQuit,
    HostQmpSystemReset,
    HostSignal,
    HostUi,
    GuestShutdown,
    GuestReset,
    GuestPanic,
    SubsystemReset,
    SnapshotLoad,
}

impl ShutdownCause {
    pub const ALL: [ShutdownCause; 11] = [
        ShutdownCause::None,
        ShutdownCause::HostError,
        ShutdownCause::HostQmpQuit,
        ShutdownCause::HostQmpSystemReset,
        ShutdownCause::HostSignal,
        ShutdownCause::HostUi,
        ShutdownCause::GuestShutdown,
        ShutdownCause::GuestReset,
        ShutdownCause::GuestPanic,
        ShutdownCause::SubsystemReset,
        ShutdownCause::SnapshotLoad,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ShutdownCause::None => "none",
            ShutdownCause::HostError => "host-error",
            ShutdownCause::HostQmpQuit => "host-qmp-quit",
            ShutdownCause::HostQmpSystemReset => "host-qmp-system-reset",
            ShutdownCause::HostSignal => "host-signal",
            ShutdownCause::HostUi => "host-ui",
            ShutdownCause::GuestShutdown => "guest-shutdown",
            ShutdownCause::GuestReset => "guest-reset",
            ShutdownCause::GuestPanic => "guest-panic",
            ShutdownCause::SubsystemReset => "subsystem-reset",
            ShutdownCause::SnapshotLoad => "snapshot-load",
        }
    }

    /// QEMU's `shutdown_caused_by_guest()`: `cause >= guest-shutdown`, the
    /// `guest` member of SHUTDOWN and RESET.  (As in QEMU, this is also true
    /// for subsystem-reset and snapshot-load, which emit no event.)
    pub fn is_guest(self) -> bool {
        self >= ShutdownCause::GuestShutdown
    }

    /// Whether `qemu_system_reset()` emits a RESET event for this cause
    /// (not for none, subsystem-reset, snapshot-load).
    pub fn emits_reset_event(self) -> bool {
        !matches!(
            self,
            ShutdownCause::None | ShutdownCause::SubsystemReset | ShutdownCause::SnapshotLoad
        )
    }
}

impl fmt::Display for ShutdownCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// The `-action` / `set-action` policies are the command line's types: one
// definition, with QEMU's names, shared by the parser and the run state.
pub use cli::{Actions, PanicAction, RebootAction, ShutdownAction, WatchdogAction};

/// The `action` member of GUEST_PANICKED.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GuestPanicAction {
    Pause,
    Poweroff,
    Run,
}

/// What GUEST_PANICKED reports and whether the VM pauses / shuts down,
/// per QEMU's `qemu_system_guest_panicked()`.
pub fn on_panic(actions: &Actions) -> (GuestPanicAction, bool, bool) {
    match actions.panic {
        PanicAction::Pause => (GuestPanicAction::Pause, true, false),
        PanicAction::Shutdown if actions.shutdown == ShutdownAction::Pause => {
            (GuestPanicAction::Pause, true, false)
        }
        PanicAction::Shutdown | PanicAction::ExitFailure => {
            (GuestPanicAction::Poweroff, true, true)
        }
        PanicAction::None => (GuestPanicAction::Run, false, false),
    }
}

/// What the machine does after WATCHDOG, per `-watchdog-action`
/// (hw/watchdog/watchdog.c `watchdog_perform_action`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchdogEffect {
    /// `qemu_system_reset_request(SHUTDOWN_CAUSE_GUEST_RESET)` (so
    /// `-no-reboot` turns it into a shutdown).
    ResetRequest,
    /// `qemu_system_powerdown_request()`: POWERDOWN and the ACPI button.
    Powerdown,
    /// `exit(0)`: no SHUTDOWN event.
    Exit,
    /// `qemu_system_vmstop_request(RUN_STATE_WATCHDOG)`: STOP.
    Stop,
    /// `nmi_monitor_handle()`: an NMI on every vCPU, as `inject-nmi`.
    Nmi,
    /// "watchdog: timer fired" on stderr.
    Debug,
    Nothing,
}

pub fn on_watchdog(action: WatchdogAction) -> WatchdogEffect {
    match action {
        WatchdogAction::Reset => WatchdogEffect::ResetRequest,
        WatchdogAction::Shutdown => WatchdogEffect::Powerdown,
        WatchdogAction::Poweroff => WatchdogEffect::Exit,
        WatchdogAction::Pause => WatchdogEffect::Stop,
        WatchdogAction::Debug => WatchdogEffect::Debug,
        WatchdogAction::None => WatchdogEffect::Nothing,
        WatchdogAction::InjectNmi => WatchdogEffect::Nmi,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_pair_is_accepted_and_every_other_refused() {
        for &from in &RunState::ALL {
            for &to in &RunState::ALL {
                let mut m = RunStateMachine::new(from);
                let listed = TRANSITIONS.contains(&(from, to));
                let r = m.transition(to);
                if from == to {
                    assert_eq!(r, Ok(()), "{from} -> itself is a no-op");
                    assert_eq!(m.state(), from);
                } else if listed {
                    assert_eq!(r, Ok(()), "{from} -> {to}");
                    assert_eq!(m.state(), to);
                } else {
                    assert_eq!(r, Err(IllegalTransition { from, to }), "{from} -> {to}");
                    assert_eq!(m.state(), from, "refused transition must not change state");
                }
            }
        }
    }

    #[test]
    fn table_has_no_duplicates_or_self_loops() {
        for (i, p) in TRANSITIONS.iter().enumerate() {
            assert_ne!(p.0, p.1);
            assert!(!TRANSITIONS[i + 1..].contains(p), "{:?} listed twice", p);
        }
        assert_eq!(TRANSITIONS.len(), 71);
    }

    #[test]
    fn names_match_qemu() {
        let names: Vec<&str> = RunState::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            names,
            [
                "debug",
                "inmigrate",
                "internal-error",
                "io-error",
                "paused",
                "postmigrate",
                "prelaunch",
                "finish-migrate",
                "restore-vm",
                "running",
                "save-vm",
                "shutdown",
                "suspended",
                "watchdog",
                "guest-panicked",
                "colo"
            ]
        );
        for s in RunState::ALL {
            assert_eq!(
                serde_json::to_value(s).unwrap(),
                serde_json::Value::String(s.as_str().into())
            );
        }
        for c in ShutdownCause::ALL {
            assert_eq!(
                serde_json::to_value(c).unwrap(),
                serde_json::Value::String(c.as_str().into())
            );
        }
        assert_eq!(WatchdogAction::InjectNmi.as_str(), "inject-nmi");
        assert_eq!(PanicAction::ExitFailure.as_str(), "exit-failure");
    }

    #[test]
    fn guest_causes() {
        use ShutdownCause::*;
        for c in [
            None,
            HostError,
            HostQmpQuit,
            HostQmpSystemReset,
            HostSignal,
            HostUi,
        ] {
            assert!(!c.is_guest(), "{c}");
        }
        for c in [
            GuestShutdown,
            GuestReset,
            GuestPanic,
            SubsystemReset,
            SnapshotLoad,
        ] {
            assert!(c.is_guest(), "{c}");
        }
        assert!(!SubsystemReset.emits_reset_event() && HostQmpSystemReset.emits_reset_event());
    }

    #[test]
    fn typical_lifecycle() {
        let mut m = RunStateMachine::default();
        assert_eq!(m.state(), RunState::Prelaunch);
        m.transition(RunState::Running).unwrap();
        assert!(m.is_running());
        m.transition(RunState::Paused).unwrap();
        m.transition(RunState::Running).unwrap();
        m.transition(RunState::Shutdown).unwrap();
        assert!(m.needs_reset());
        let e = m.transition(RunState::Running).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid runstate transition: 'shutdown' -> 'running'"
        );
        m.transition(RunState::Paused).unwrap();
        m.transition(RunState::Running).unwrap();
    }

    #[test]
    fn panic_policy() {
        let a = Actions::default();
        assert_eq!(on_panic(&a), (GuestPanicAction::Poweroff, true, true));
        let a = Actions {
            shutdown: ShutdownAction::Pause,
            ..Actions::default()
        };
        assert_eq!(on_panic(&a), (GuestPanicAction::Pause, true, false));
        let a = Actions {
            panic: PanicAction::None,
            ..Actions::default()
        };
        assert_eq!(on_panic(&a), (GuestPanicAction::Run, false, false));
    }
}
