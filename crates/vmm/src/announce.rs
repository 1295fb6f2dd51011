//! `announce-self` (QEMU net/announce.c): each round, every NIC (or those
//! in `interfaces`) sends a RARP frame from its MAC out of its backend, and
//! a driver that negotiated GUEST_ANNOUNCE is asked to announce itself.
//! Rounds are spaced `initial`, `initial + step`, … ms apart, at most `max`,
//! on the host's clock (QEMU_CLOCK_REALTIME). A timer has an id; a new
//! request with the same id replaces it.

use std::collections::HashMap;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::devices::nic::Nic;
use crate::vm::Vm;

/// The running announcement timers by id; dropping a sender stops its thread.
#[derive(Default)]
pub struct Announcers {
    timers: HashMap<String, Sender<()>>,
}

/// QEMU's AnnounceParameters.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Params {
    initial: i64,
    max: i64,
    rounds: i64,
    step: i64,
    interfaces: Option<Vec<String>>,
}

impl Params {
    fn from(args: &Map<String, Value>) -> Self {
        let int = |k: &str| args.get(k).and_then(Value::as_i64).unwrap_or(0);
        Self {
            initial: int("initial"),
            max: int("max"),
            rounds: int("rounds"),
            step: int("step"),
            interfaces: args.get("interfaces").and_then(Value::as_array).map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            }),
        }
    }

    /// The delay before the round after `done` rounds
    /// (`qemu_announce_timer_step`).
    fn delay_after(&self, done: i64) -> Duration {
        let step = self
            .initial
            .saturating_add((done - 1).saturating_mul(self.step));
        let ms = if step < 0 || step > self.max {
            self.max
        } else {
            step
        };
        Duration::from_millis(ms.max(0) as u64)
    }
}

/// The 60-byte RARP request QEMU sends for `mac` (net/announce.c
/// `announce_self_create`).
pub fn rarp_frame(mac: [u8; 6]) -> [u8; 60] {
    let mut f = [0u8; 60];
    f[0..6].fill(0xff);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&0x8035u16.to_be_bytes()); // ETH_P_RARP
    f[14..16].copy_from_slice(&1u16.to_be_bytes()); // hardware: Ethernet
    f[16..18].copy_from_slice(&0x0800u16.to_be_bytes()); // protocol: IPv4
    f[18] = 6;
    f[19] = 4;
    f[20..22].copy_from_slice(&3u16.to_be_bytes()); // reverse request
    f[22..28].copy_from_slice(&mac);
    f[32..38].copy_from_slice(&mac);
    f
}

fn announce_round(nics: &[Arc<Nic>], interfaces: &Option<Vec<String>>) {
    for n in nics {
        if interfaces
            .as_ref()
            .is_some_and(|list| !list.iter().any(|i| *i == n.name))
        {
            continue;
        }
        n.announce(&rarp_frame(n.mac()));
    }
}

/// `announce-self`: the first round now, the others on a timer thread.
pub fn start(vm: &mut Vm, args: &Map<String, Value>) {
    let id = args
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let params = Params::from(args);
    // Replacing a timer stops the old one (qemu_announce_timer_reset).
    vm.announcers.timers.remove(&id);
    if params.rounds <= 0 {
        return;
    }
    let nics = crate::commands::nics_of(vm);
    announce_round(&nics, &params.interfaces);
    if params.rounds == 1 {
        return;
    }
    let (tx, rx) = mpsc::channel::<()>();
    vm.announcers.timers.insert(id, tx);
    let spawned = std::thread::Builder::new()
        .name("announce".into())
        .spawn(move || {
            for done in 1..params.rounds {
                match rx.recv_timeout(params.delay_after(done)) {
                    Err(RecvTimeoutError::Timeout) => announce_round(&nics, &params.interfaces),
                    _ => return,
                }
            }
        });
    if let Err(e) = spawned {
        log::error!("announce-self: cannot start its timer: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// net/announce.c's frame, byte by byte (ETH_P_RARP, ARPOP_RREQUEST 3,
    /// sender and target hardware address both ours, zero-padded to 60).
    #[test]
    fn rarp_frame_is_qemus() {
        let mac = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
        let f = rarp_frame(mac);
        assert_eq!(&f[..6], &[0xff; 6]);
        assert_eq!(&f[6..12], &mac);
        assert_eq!(&f[12..22], &[0x80, 0x35, 0, 1, 8, 0, 6, 4, 0, 3]);
        assert_eq!((&f[22..28], &f[28..32]), (&mac[..], &[0u8; 4][..]));
        assert_eq!((&f[32..38], &f[38..]), (&mac[..], &[0u8; 22][..]));
    }

    /// QEMU's defaults (50, 550, 5, 100): 50, 150, 250, 350 ms between rounds;
    /// a step beyond `max` is `max`.
    #[test]
    fn rounds_are_spaced_as_qemu_steps_them() {
        let p = Params {
            initial: 50,
            max: 550,
            rounds: 5,
            step: 100,
            interfaces: None,
        };
        let ms: Vec<u128> = (1..5).map(|d| p.delay_after(d).as_millis()).collect();
        assert_eq!(ms, [50, 150, 250, 350]);
        let p = Params { max: 120, ..p };
        assert_eq!(p.delay_after(3).as_millis(), 120);
    }
}
