//! The network backends: `-netdev` at start-up, `netdev_add` and
//! `netdev_del` later (QEMU net/net.c `net_client_init`,
//! `qmp_netdev_del`). The table owns each backend's TAP queues until a NIC
//! takes them, and remembers which NIC did.

use net::{Tap, TapOptions};
use serde_json::{Map, Value};

/// One `-netdev`.
pub struct Netdev {
    pub id: String,
    pub options: TapOptions,
    state: State,
}

enum State {
    /// Open, with no NIC yet (QEMU would drop what arrives: no peer).
    Idle(Vec<Tap>),
    /// A NIC owns the queues; its QMP name.
    Attached(String),
}

/// What removing a netdev left to do.
#[derive(Debug, PartialEq, Eq)]
pub enum Removed {
    /// It was idle: its TAPs are closed (and the downscript has run).
    Closed,
    /// The NIC with this name owns its queues: the caller detaches them
    /// (QEMU marks the NIC's peer deleted and sets its link down).
    FromNic(String),
}

/// Every netdev, in creation order.
#[derive(Default)]
pub struct Netdevs {
    list: Vec<Netdev>,
}

impl Netdevs {
    /// Opens every `-netdev` of the command line; errors carry QEMU's
    /// `-netdev ARG:` prefix.
    pub fn open(netdevs: &[Value], locations: &[String]) -> Result<Self, String> {
        let mut table = Self::default();
        for (n, loc) in netdevs.iter().zip(locations) {
            let map = n.as_object().cloned().unwrap_or_default();
            table.add(&map, None).map_err(|e| format!("{loc}: {e}"))?;
        }
        Ok(table)
    }

    /// Adds one netdev (`netdev_add`'s arguments, or a `-netdev`). `named`
    /// resolves descriptors passed by name (QMP `getfd`).
    pub fn add(
        &mut self,
        args: &Map<String, Value>,
        named: Option<net::NamedFds<'_>>,
    ) -> Result<(), String> {
        match args.get("type").and_then(Value::as_str) {
            Some("tap") => {}
            Some(other) => {
                return Err(format!(
                    "network backend '{other}' is not supported by ferrovm (only 'tap')"
                ))
            }
            None => return Err("Parameter 'type' is missing".into()),
        }
        let options = TapOptions::from_json(args)?;
        if self.get(&options.id).is_some() {
            // net/net.c net_client_init1.
            return Err(format!("Duplicate ID '{}'", options.id));
        }
        let taps = net::open_tap_with(&options, named).map_err(|e| e.to_string())?;
        self.list.push(Netdev {
            id: options.id.clone(),
            options,
            state: State::Idle(taps),
        });
        Ok(())
    }

    pub fn get(&self, id: &str) -> Option<&Netdev> {
        self.list.iter().find(|n| n.id == id)
    }

    /// Hands netdev `id`'s queues to the NIC named `nic`. Errors are QEMU's
    /// `set_netdev` texts for property `prop` (`virtio-net-device.netdev`).
    pub fn attach(&mut self, id: &str, nic: &str, prop: &str) -> Result<Vec<Tap>, String> {
        let Some(n) = self.list.iter_mut().find(|n| n.id == id) else {
            return Err(format!("Property '{prop}' can't find value '{id}'"));
        };
        match std::mem::replace(&mut n.state, State::Attached(nic.to_string())) {
            State::Idle(taps) => Ok(taps),
            State::Attached(other) => {
                n.state = State::Attached(other);
                Err(format!(
                    "Property '{prop}' can't take value '{id}', it's in use"
                ))
            }
        }
    }

    /// `netdev_del`: forgets `id`. Idle TAPs close here; attached ones are
    /// the NIC's to drop ([`Removed::FromNic`]).
    pub fn remove(&mut self, id: &str) -> Option<Removed> {
        let i = self.list.iter().position(|n| n.id == id)?;
        let n = self.list.remove(i);
        Some(match n.state {
            State::Idle(taps) => {
                close(taps);
                Removed::Closed
            }
            State::Attached(nic) => Removed::FromNic(nic),
        })
    }
}

/// Closes a backend's queues; the first runs the downscript, whose failure
/// QEMU only reports.
pub fn close(taps: Vec<Tap>) {
    for t in taps {
        if let Err(e) = t.close() {
            eprintln!("ferrovm: {e}");
        }
    }
}
