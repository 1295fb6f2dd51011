//! blkdebug's rules and state machine (QEMU 7.2 block/blkdebug.c): rules
//! hang off events; an event makes its inject-error rules active, changes
//! the state, or suspends the request that signalled it (a breakpoint);
//! every request into the node is checked against the active rules.
//!
//! QEMU's lists are kept in QEMU's order (`QLIST_INSERT_HEAD`), because the
//! order decides which rule fires: rules of an event newest first, the
//! active rules newest first.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

use crate::debug::DebugEvent;

/// QEMU prints suspensions and resumptions unless run under qtest
/// (`qtest_enabled()`); the emulator sets this with `-accel qtest`.
pub static QTEST: AtomicBool = AtomicBool::new(false);

/// `BlkdebugIOType`, as bit numbers of an injection's mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoType {
    Read = 0,
    Write = 1,
    WriteZeroes = 2,
    Discard = 3,
    Flush = 4,
    BlockStatus = 5,
}

pub const IO_TYPES: &[&str] = &[
    "read",
    "write",
    "write-zeroes",
    "discard",
    "flush",
    "block-status",
];

/// The default mask: every type but block-status.
pub const DEFAULT_IOTYPE_MASK: u64 = 0x1f;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inject {
    pub iotype_mask: u64,
    pub error: i32,
    pub immediately: bool,
    pub once: bool,
    /// A byte offset the request must cover, or -1 for any request.
    pub offset: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Inject(Inject),
    SetState(i64),
    Suspend(String),
}

#[derive(Debug, Clone)]
struct Rule {
    id: u64,
    event: DebugEvent,
    /// 0: in any state.
    state: i64,
    action: Action,
}

struct State {
    state: i64,
    /// Every rule, newest first (each event's list is this order filtered).
    rules: Vec<Rule>,
    /// Ids of the active inject-error rules, newest first.
    active: Vec<u64>,
    /// Suspended requests: (request id, tag), newest first.
    suspended: Vec<(u64, String)>,
}

pub struct Rules {
    st: Mutex<State>,
    /// Signalled when a request is suspended or resumed.
    cv: Condvar,
    next_id: AtomicU64,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            // blkdebug_open: the initial state is 1.
            st: Mutex::new(State {
                state: 1,
                rules: Vec::new(),
                active: Vec::new(),
                suspended: Vec::new(),
            }),
            cv: Condvar::new(),
            next_id: AtomicU64::new(1),
        }
    }
}

fn say(what: &str, tag: &str) {
    if !QTEST.load(Ordering::Relaxed) {
        let mut o = std::io::stdout().lock();
        let _ = writeln!(o, "blkdebug: {what} request '{tag}'");
        let _ = o.flush();
    }
}

impl Rules {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// `add_rule`.
    pub fn add(&self, event: DebugEvent, state: i64, action: Action) {
        let id = self.id();
        self.lock().rules.insert(
            0,
            Rule {
                id,
                event,
                state,
                action,
            },
        );
    }

    /// `blkdebug_debug_event`: the rules of `ev` for the current state
    /// act; a suspending rule blocks the caller until its request is
    /// resumed.
    pub fn event(&self, ev: DebugEvent) {
        let mut st = self.lock();
        let mut new_state = st.state;
        let mut injects = 0;
        let mut mine = Vec::new();
        let ids: Vec<u64> = st
            .rules
            .iter()
            .filter(|r| r.event == ev)
            .map(|r| r.id)
            .collect();
        for id in ids {
            let Some(pos) = st.rules.iter().position(|r| r.id == id) else {
                continue;
            };
            let r = &st.rules[pos];
            if r.state != 0 && r.state != st.state {
                continue;
            }
            match r.action.clone() {
                Action::Inject(_) => {
                    injects += 1;
                    if injects == 1 {
                        st.active.clear();
                    }
                    st.active.insert(0, id);
                }
                Action::SetState(n) => new_state = n,
                Action::Suspend(tag) => {
                    // suspend_request: the breakpoint is used up.
                    st.rules.remove(pos);
                    let req = self.id();
                    say("Suspended", &tag);
                    st.suspended.insert(0, (req, tag));
                    mine.push(req);
                }
            }
        }
        st.state = new_state;
        if mine.is_empty() {
            return;
        }
        self.cv.notify_all();
        let _st = self
            .cv
            .wait_while(st, |s| s.suspended.iter().any(|(r, _)| mine.contains(r)))
            .unwrap_or_else(|e| e.into_inner());
    }

    /// `rule_check`: the error (a positive errno) the first matching
    /// active rule injects into a request of `bytes` at `offset`, if any;
    /// with `immediately` false QEMU completes it from a later iteration
    /// of the event loop, which a blocking request cannot tell apart.
    pub fn check(&self, offset: u64, bytes: u64, io: IoType) -> Option<i32> {
        let mut st = self.lock();
        let found = st.active.iter().copied().find(|id| {
            let Some(Rule {
                action: Action::Inject(i),
                ..
            }) = st.rules.iter().find(|r| r.id == *id)
            else {
                return false;
            };
            let covers = i.offset == -1
                || (bytes != 0
                    && i.offset >= 0
                    && (i.offset as u64) >= offset
                    && (i.offset as u64) < offset.saturating_add(bytes));
            covers && i.iotype_mask & (1 << io as u64) != 0
        })?;
        let pos = st.rules.iter().position(|r| r.id == found)?;
        let Action::Inject(i) = st.rules[pos].action.clone() else {
            return None;
        };
        if i.error == 0 {
            return None;
        }
        if i.once {
            st.active.retain(|a| *a != found);
            st.rules.remove(pos);
        }
        Some(i.error)
    }

    /// `blkdebug_debug_breakpoint`: a suspending rule on `event`.
    pub fn breakpoint(&self, event: &str, tag: &str) -> Result<(), i32> {
        let ev = DebugEvent::parse(event).ok_or(libc::ENOENT)?;
        self.add(ev, 0, Action::Suspend(tag.to_string()));
        Ok(())
    }

    /// `resume_req_by_tag` with the lock held: the newest request
    /// suspended with `tag` (or with `all` every one) goes on.
    fn resume_locked(&self, st: &mut State, tag: &str, all: bool) -> bool {
        let mut any = false;
        while let Some(pos) = st.suspended.iter().position(|(_, t)| t == tag) {
            let (_, t) = st.suspended.remove(pos);
            say("Resuming", &t);
            any = true;
            if !all {
                break;
            }
        }
        if any {
            self.cv.notify_all();
        }
        any
    }

    /// `blkdebug_debug_resume`.
    pub fn resume(&self, tag: &str) -> Result<(), i32> {
        let mut st = self.lock();
        if self.resume_locked(&mut st, tag, false) {
            Ok(())
        } else {
            Err(libc::ENOENT)
        }
    }

    /// `blkdebug_debug_remove_breakpoint`: the breakpoints tagged `tag` go
    /// and every request they suspended goes on.
    pub fn remove_breakpoint(&self, tag: &str) -> Result<(), i32> {
        let mut st = self.lock();
        let before = st.rules.len();
        st.rules
            .retain(|r| !matches!(&r.action, Action::Suspend(t) if t == tag));
        let removed = st.rules.len() != before;
        let resumed = self.resume_locked(&mut st, tag, true);
        if removed || resumed {
            Ok(())
        } else {
            Err(libc::ENOENT)
        }
    }

    /// `blkdebug_debug_is_suspended`.
    pub fn is_suspended(&self, tag: &str) -> bool {
        self.lock().suspended.iter().any(|(_, t)| t == tag)
    }

    /// qemu-io's `wait_break`: until a request with `tag` is suspended.
    pub fn wait_suspended(&self, tag: &str) {
        let st = self.lock();
        let _st = self
            .cv
            .wait_while(st, |s| !s.suspended.iter().any(|(_, t)| t == tag))
            .unwrap_or_else(|e| e.into_inner());
    }

    /// The current state (for tests).
    pub fn state(&self) -> i64 {
        self.lock().state
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn inject(offset: i64, once: bool) -> Action {
        Action::Inject(Inject {
            iotype_mask: DEFAULT_IOTYPE_MASK,
            error: libc::EIO,
            immediately: false,
            once,
            offset,
        })
    }

    #[test]
    fn an_event_activates_its_injections() {
        let r = Rules::default();
        r.add(DebugEvent::READ_AIO, 0, inject(1024, true));
        assert_eq!(r.check(0, 4096, IoType::Read), None, "not active yet");
        r.event(DebugEvent::WRITE_AIO);
        assert_eq!(r.check(0, 4096, IoType::Read), None);
        r.event(DebugEvent::READ_AIO);
        assert_eq!(
            r.check(2048, 4096, IoType::Read),
            None,
            "offset not covered"
        );
        assert_eq!(r.check(1024, 0, IoType::Read), None, "zero bytes");
        assert_eq!(
            r.check(0, 4096, IoType::BlockStatus),
            None,
            "type not in mask"
        );
        assert_eq!(r.check(0, 4096, IoType::Write), Some(libc::EIO));
        assert_eq!(r.check(0, 4096, IoType::Read), None, "once: gone");
        r.event(DebugEvent::READ_AIO);
        assert_eq!(r.check(0, 4096, IoType::Read), None);
    }

    #[test]
    fn state_machine_gates_rules() {
        // 030's TestErrors file: inject in state 1; 1 -> 2 -> 1.
        let r = Rules::default();
        r.add(DebugEvent::READ_AIO, 1, inject(-1, false));
        r.add(DebugEvent::READ_AIO, 1, Action::SetState(2));
        r.add(DebugEvent::READ_AIO, 2, Action::SetState(1));
        r.event(DebugEvent::READ_AIO);
        assert_eq!(r.state(), 2);
        assert_eq!(r.check(0, 512, IoType::Read), Some(libc::EIO));
        // In state 2 no injection runs, so the active list is kept.
        r.event(DebugEvent::READ_AIO);
        assert_eq!(r.state(), 1);
        assert_eq!(r.check(0, 512, IoType::Read), Some(libc::EIO));
    }

    #[test]
    fn errno_zero_injects_nothing() {
        let r = Rules::default();
        r.add(
            DebugEvent::READ_AIO,
            0,
            Action::Inject(Inject {
                iotype_mask: DEFAULT_IOTYPE_MASK,
                error: 0,
                immediately: true,
                once: false,
                offset: -1,
            }),
        );
        r.event(DebugEvent::READ_AIO);
        assert_eq!(r.check(0, 512, IoType::Read), None);
    }

    #[test]
    fn breakpoints_suspend_until_resumed() {
        let r = Arc::new(Rules::default());
        assert_eq!(r.breakpoint("bogus", "t"), Err(libc::ENOENT));
        r.breakpoint("read_aio", "t").unwrap();
        r.breakpoint("write_aio", "t").unwrap();
        let r2 = r.clone();
        let h = std::thread::spawn(move || r2.event(DebugEvent::READ_AIO));
        r.wait_suspended("t");
        assert!(r.is_suspended("t"));
        assert!(!h.is_finished());
        r.resume("t").unwrap();
        h.join().unwrap();
        assert!(!r.is_suspended("t"));
        assert_eq!(r.resume("t"), Err(libc::ENOENT));
        // The read breakpoint was used up; the write one is still set.
        r.event(DebugEvent::READ_AIO);
        let r2 = r.clone();
        let h = std::thread::spawn(move || r2.event(DebugEvent::WRITE_AIO));
        r.wait_suspended("t");
        r.remove_breakpoint("t").unwrap();
        h.join().unwrap();
        assert_eq!(r.remove_breakpoint("t"), Err(libc::ENOENT));
    }
}
