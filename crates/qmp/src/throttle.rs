//! QEMU's event rate limiting (monitor/monitor.c): guest-triggerable events
//! are sent at most once per second per key.  The first one goes out at
//! once; later ones within the second are held, each replacing the previous
//! one, and the last is sent when the second is over (keeping its own
//! timestamp).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::dispatch::Event;

/// `monitor_qapi_event_conf`: the rate-limited events of QEMU 7.2.
const RATE_LIMITED: &[&str] = &[
    "RTC_CHANGE",
    "WATCHDOG",
    "BALLOON_CHANGE",
    "QUORUM_REPORT_BAD",
    "QUORUM_FAILURE",
    "VSERPORT_CHANGE",
    "MEMORY_DEVICE_SIZE_CHANGE",
];

/// The rate: one event per second per key.
pub const RATE: Duration = Duration::from_secs(1);

struct State {
    deadline: Instant,
    pending: Option<Event>,
}

/// Per-key throttling state.
#[derive(Default)]
pub struct Throttle {
    states: HashMap<String, State>,
}

/// `qapi_event_throttle_hash/equal`: some events are throttled per device.
fn key(e: &Event) -> Option<String> {
    if !RATE_LIMITED.contains(&e.name.as_str()) {
        return None;
    }
    let member = match e.name.as_str() {
        "VSERPORT_CHANGE" => Some("id"),
        "QUORUM_REPORT_BAD" => Some("node-name"),
        "MEMORY_DEVICE_SIZE_CHANGE" => Some("qom-path"),
        _ => None,
    };
    let sub = member.and_then(|m| e.data.as_ref()?.get(m)?.as_str().map(str::to_string));
    Some(match sub {
        Some(s) => format!("{}\0{s}", e.name),
        None => e.name.clone(),
    })
}

impl Throttle {
    /// Decides what to do with an event now: `Some` to send it at once,
    /// `None` if it is held for later.
    pub fn offer(&mut self, e: Event, now: Instant) -> Option<Event> {
        let Some(k) = key(&e) else { return Some(e) };
        match self.states.get_mut(&k) {
            Some(st) => {
                st.pending = Some(e);
                None
            }
            None => {
                self.states.insert(
                    k,
                    State {
                        deadline: now + RATE,
                        pending: None,
                    },
                );
                Some(e)
            }
        }
    }

    /// Events whose hold time is over (`monitor_qapi_event_handler`).
    pub fn expire(&mut self, now: Instant) -> Vec<Event> {
        let mut out = Vec::new();
        self.states.retain(|_, st| {
            if st.deadline > now {
                return true;
            }
            match st.pending.take() {
                Some(e) => {
                    out.push(e);
                    st.deadline = now + RATE;
                    true
                }
                None => false,
            }
        });
        out.sort_by_key(|e| (e.seconds, e.microseconds));
        out
    }

    /// Time until the next [`Throttle::expire`] has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.states.values().map(|s| s.deadline).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn wd(action: &str) -> Event {
        Event::new("WATCHDOG", Some(json!({ "action": action })))
    }

    #[test]
    fn watchdog_is_limited_to_one_per_second() {
        let mut t = Throttle::default();
        let t0 = Instant::now();
        assert!(t.offer(wd("reset"), t0).is_some());
        assert!(t
            .offer(wd("pause"), t0 + Duration::from_millis(10))
            .is_none());
        assert!(t
            .offer(wd("none"), t0 + Duration::from_millis(20))
            .is_none());
        assert!(t.expire(t0 + Duration::from_millis(500)).is_empty());
        let out = t.expire(t0 + RATE);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].data, Some(json!({"action": "none"})));
        // Still within the re-armed second: held again.
        assert!(t
            .offer(wd("reset"), t0 + RATE + Duration::from_millis(1))
            .is_none());
        assert_eq!(t.expire(t0 + RATE * 2).len(), 1);
        // A quiet second ends the throttling.
        assert!(t.expire(t0 + RATE * 3).is_empty());
        assert_eq!(t.next_deadline(), None);
        assert!(t.offer(wd("reset"), t0 + RATE * 4).is_some());
    }

    #[test]
    fn other_events_pass() {
        let mut t = Throttle::default();
        let now = Instant::now();
        for _ in 0..3 {
            assert!(t.offer(Event::new("STOP", None), now).is_some());
        }
        assert_eq!(t.next_deadline(), None);
    }
}
