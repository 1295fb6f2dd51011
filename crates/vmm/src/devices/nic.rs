//! The machine's NICs as QMP reaches them: by their net client name
//! (`set_link`, `query-rx-filter`, `announce-self`), and by their netdev
//! when it goes away (`netdev_del`).

use std::sync::{Arc, Mutex};

use devices::virtio::net::VirtioNet;
use serde_json::{json, Value};

use super::virtio::Watched;
use crate::sync::lock;

pub struct Nic {
    /// QEMU's net client name: the device id, or `virtio-net-pci.N`.
    pub name: String,
    /// The virtio device's QOM path (`/machine/peripheral/ID/virtio-backend`),
    /// which NIC_RX_FILTER_CHANGED names.
    pub device_path: String,
    pub model: Arc<Mutex<VirtioNet>>,
    /// The netdev it was built on; `None` without one or once deleted.
    pub netdev: Mutex<Option<String>>,
    watched: Watched<VirtioNet>,
}

impl Nic {
    pub fn new(
        name: String,
        device_path: String,
        model: Arc<Mutex<VirtioNet>>,
        netdev: Option<String>,
        watched: Watched<VirtioNet>,
    ) -> Self {
        Self {
            name,
            device_path,
            model,
            netdev: Mutex::new(netdev),
            watched,
        }
    }

    /// Whether `set_link NAME` reaches this NIC: its own name or its
    /// netdev's id (QEMU `qmp_set_link` changes the NIC peer of a netdev).
    pub fn answers_to(&self, name: &str) -> bool {
        self.name == name || lock(&self.netdev).as_deref() == Some(name)
    }

    pub fn mac(&self) -> [u8; 6] {
        lock(&self.model).mac().0
    }

    /// One round of `announce-self`: `rarp` out of the backend (not while
    /// the link is down, as net/net.c drops it), and the guest asked to
    /// announce itself if its driver can.
    pub fn announce(&self, rarp: &[u8]) {
        let mut m = lock(&self.model);
        m.send_to_backend(rarp);
        m.announce();
    }

    pub fn set_link(&self, up: bool) {
        lock(&self.model).set_link(up);
    }

    /// `netdev_del` of its netdev (QEMU `qemu_del_net_client` with a NIC
    /// peer): the link goes down and the backend's queues close; the NIC
    /// stays, with nothing behind it.
    pub fn lose_backend(&self) {
        *lock(&self.netdev) = None;
        let old = {
            let mut m = lock(&self.model);
            m.set_link(false);
            m.detach_backends()
        };
        // Forget the old descriptors on the backend thread before they close.
        self.watched.refresh();
        drop(old);
    }

    /// `query-rx-filter`'s entry for this NIC (QEMU RxFilterInfo); asking
    /// re-arms NIC_RX_FILTER_CHANGED.
    pub fn rx_filter(&self) -> Value {
        let f = lock(&self.model).rx_filter();
        let mac = |m: &devices::virtio::net::MacAddr| m.to_string();
        json!({
            "name": self.name,
            "promiscuous": f.promiscuous,
            "multicast": f.multicast.as_str(),
            "unicast": f.unicast.as_str(),
            "vlan": f.vlan.as_str(),
            "broadcast-allowed": f.broadcast_allowed,
            "multicast-overflow": f.multicast_overflow,
            "unicast-overflow": f.unicast_overflow,
            "main-mac": mac(&f.main_mac),
            "vlan-table": f.vlan_table,
            "unicast-table": f.unicast_table.iter().map(mac).collect::<Vec<_>>(),
            "multicast-table": f.multicast_table.iter().map(mac).collect::<Vec<_>>(),
        })
    }
}
