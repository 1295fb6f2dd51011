//! `virtio-net-pci` (hw/virtio/virtio-net-pci.c, hw/net/virtio-net.c
//! `virtio_net_properties`).

use serde_json::{Map, Value};

use super::{p, props, Def, Kind, Prop, VirtioPciProxy, V};

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VirtioNetPci {
    pub proxy: VirtioPciProxy,
    /// `netdev=`: the backend's id; a NIC without one has no peer and
    /// drops what it sends (QEMU allows that too).
    pub netdev: Option<String>,
    /// `mac=`; `None` takes QEMU's next default address.
    pub mac: Option<[u8; 6]>,
    pub rx_queue_size: Option<u16>,
    pub tx_queue_size: Option<u16>,
    /// `host_mtu=` (0 is QEMU's "not set").
    pub host_mtu: Option<u16>,
    /// The feature-bit properties given (`csum=off`, `mq=on`, …), in order.
    pub features: Vec<(&'static str, bool)>,
}

/// The feature-bit properties and QEMU 7.2's defaults.
pub const FEATURE_PROPS: &[(&str, bool)] = &[
    ("csum", true),
    ("guest_csum", true),
    ("gso", true),
    ("guest_tso4", true),
    ("guest_tso6", true),
    ("guest_ecn", true),
    ("guest_ufo", true),
    ("guest_announce", true),
    ("host_tso4", true),
    ("host_tso6", true),
    ("host_ecn", true),
    ("host_ufo", true),
    ("mrg_rxbuf", true),
    ("status", true),
    ("ctrl_vq", true),
    ("ctrl_rx", true),
    ("ctrl_vlan", true),
    ("ctrl_rx_extra", true),
    ("ctrl_mac_addr", true),
    ("ctrl_guest_offloads", true),
    ("mq", false),
];

/// virtio-net-pci's properties after the proxy's (the feature bits are
/// matched through [`FEATURE_PROPS`]).
pub(super) const PROPS: &[Prop] = &[
    p("vectors", Kind::U32).def(Def::Int(4294967295)),
    p("bootindex", Kind::U32).qtype("int32"),
    p("mac", Kind::Mac),
    p("netdev", Kind::Str).desc(Some("ID of a netdev to use as a backend")),
    p("rx_queue_size", Kind::U16).def(Def::Int(256)),
    p("tx_queue_size", Kind::U16).def(Def::Int(256)),
    p("host_mtu", Kind::U16).def(Def::Int(0)),
    p("csum", Kind::Bool).def(Def::Bool(true)),
    p("guest_csum", Kind::Bool).def(Def::Bool(true)),
    p("gso", Kind::Bool).def(Def::Bool(true)),
    p("guest_tso4", Kind::Bool).def(Def::Bool(true)),
    p("guest_tso6", Kind::Bool).def(Def::Bool(true)),
    p("guest_ecn", Kind::Bool).def(Def::Bool(true)),
    p("guest_ufo", Kind::Bool).def(Def::Bool(true)),
    p("guest_announce", Kind::Bool).def(Def::Bool(true)),
    p("host_tso4", Kind::Bool).def(Def::Bool(true)),
    p("host_tso6", Kind::Bool).def(Def::Bool(true)),
    p("host_ecn", Kind::Bool).def(Def::Bool(true)),
    p("host_ufo", Kind::Bool).def(Def::Bool(true)),
    p("mrg_rxbuf", Kind::Bool).def(Def::Bool(true)),
    p("status", Kind::Bool).def(Def::Bool(true)),
    p("ctrl_vq", Kind::Bool).def(Def::Bool(true)),
    p("ctrl_rx", Kind::Bool).def(Def::Bool(true)),
    p("ctrl_vlan", Kind::Bool).def(Def::Bool(true)),
    p("ctrl_rx_extra", Kind::Bool).def(Def::Bool(true)),
    p("ctrl_mac_addr", Kind::Bool).def(Def::Bool(true)),
    p("ctrl_guest_offloads", Kind::Bool).def(Def::Bool(true)),
    p("mq", Kind::Bool).def(Def::Bool(false)),
];

pub(super) fn parse(
    dev: &Map<String, Value>,
    driver: &'static str,
) -> Result<VirtioNetPci, String> {
    let (mut proxy, own) = VirtioPciProxy::take(props(driver, "virtio-net-device", PROPS, dev)?)?;
    proxy.twin = super::is_twin(driver).then_some(driver);
    let mut r = VirtioNetPci {
        proxy,
        ..Default::default()
    };
    for (name, v) in own {
        match (name, v) {
            ("mac", V::Mac(m)) => r.mac = Some(m),
            ("netdev", V::Str(s)) => r.netdev = Some(s),
            ("rx_queue_size", V::Num(n)) => r.rx_queue_size = Some(n as u16),
            ("tx_queue_size", V::Num(n)) => r.tx_queue_size = Some(n as u16),
            ("host_mtu", V::Num(n)) => r.host_mtu = (n != 0).then_some(n as u16),
            (f, V::Bool(x)) => {
                if let Some((name, _)) = FEATURE_PROPS.iter().find(|(n, _)| *n == f) {
                    r.features.push((name, x));
                }
            }
            _ => {}
        }
    }
    Ok(r)
}

impl VirtioNetPci {
    /// The value of feature property `name` after the command line.
    pub fn feature(&self, name: &str) -> bool {
        self.features
            .iter()
            .rev()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
            .or_else(|| {
                FEATURE_PROPS
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| *v)
            })
            .unwrap_or(false)
    }
}
