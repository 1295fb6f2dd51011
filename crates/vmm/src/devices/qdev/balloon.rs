//! `virtio-balloon-pci` (hw/virtio/virtio-balloon-pci.c,
//! hw/virtio/virtio-balloon.c). It has no `vectors` property: QEMU gives it
//! no MSI-X, so it interrupts through INTx.

use serde_json::{Map, Value};

use super::{p, props, Def, Kind, Prop, VirtioPciProxy, V};

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VirtioBalloonPci {
    pub proxy: VirtioPciProxy,
    pub deflate_on_oom: bool,
    pub free_page_reporting: bool,
    /// `guest-stats-polling-interval=` (a QOM property QEMU's proxy aliases).
    pub stats_interval: Option<i64>,
}

pub(super) const PROPS: &[Prop] = &[
    p("deflate-on-oom", Kind::Bool).def(Def::Bool(false)),
    p("free-page-reporting", Kind::Bool).def(Def::Bool(false)),
    // A plain QOM property of the balloon (no qdev default).
    p("guest-stats-polling-interval", Kind::I64),
];

pub(super) fn parse(
    dev: &Map<String, Value>,
    driver: &'static str,
) -> Result<VirtioBalloonPci, String> {
    let (mut proxy, own) =
        VirtioPciProxy::take(props(driver, "virtio-balloon-device", PROPS, dev)?)?;
    proxy.twin = super::is_twin(driver).then_some(driver);
    let mut r = VirtioBalloonPci {
        proxy,
        ..Default::default()
    };
    for (name, v) in own {
        match (name, v) {
            ("deflate-on-oom", V::Bool(x)) => r.deflate_on_oom = x,
            ("free-page-reporting", V::Bool(x)) => r.free_page_reporting = x,
            ("guest-stats-polling-interval", V::Int(n)) => r.stats_interval = Some(n),
            _ => {}
        }
    }
    Ok(r)
}
