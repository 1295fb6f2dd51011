//! `virtio-blk-pci` (hw/virtio/virtio-blk-pci.c, hw/block/virtio-blk.c).

use serde_json::{Map, Value};

use devices::virtio::block::{BlkOptions, WriteCache};

use super::{p, props, Def, Kind, Prop, VirtioPciProxy, V};

#[derive(Debug, Clone, PartialEq)]
pub struct VirtioBlkPci {
    pub proxy: VirtioPciProxy,
    pub drive: String,
    pub share_rw: bool,
    pub blk: BlkOptions,
}

/// virtio-blk-pci's properties after the proxy's.
pub(super) const PROPS: &[Prop] = &[
    p("vectors", Kind::U32).def(Def::Int(4294967295)),
    p("drive", Kind::Str).desc(Some(
        "Node name or ID of a block device to use as a backend",
    )),
    p("share-rw", Kind::Bool).desc(None).def(Def::Bool(false)),
    p("serial", Kind::Str),
    p("num-queues", Kind::U16).def(Def::Int(65535)),
    p("queue-size", Kind::U16).def(Def::Int(256)),
    p("write-cache", Kind::OnOffAuto).def(Def::Str("auto")),
    p("logical_block_size", Kind::Size)
        .desc(Some("A power of two between 512 B and 2 MiB"))
        .def(Def::Int(0)),
    p("physical_block_size", Kind::Size)
        .desc(Some("A power of two between 512 B and 2 MiB"))
        .def(Def::Int(0)),
    p("min_io_size", Kind::Size).def(Def::Int(0)),
    p("opt_io_size", Kind::Size).def(Def::Int(0)),
    p("discard_granularity", Kind::Size).def(Def::Int(4294967295)),
    p("config-wce", Kind::Bool).def(Def::Bool(true)),
    p("discard", Kind::Bool).def(Def::Bool(true)),
    p("write-zeroes", Kind::Bool).def(Def::Bool(true)),
    p("max-discard-sectors", Kind::U32).def(Def::Int(4194303)),
    p("max-write-zeroes-sectors", Kind::U32).def(Def::Int(4194303)),
    p("seg-max-adjust", Kind::Bool)
        .desc(None)
        .def(Def::Bool(true)),
    p("bootindex", Kind::U32).qtype("int32"),
];

impl VirtioBlkPci {
    /// `-drive if=virtio`: a virtio-blk-pci with every default on `drive`.
    pub fn for_drive(drive: &str, cpus: u16) -> Self {
        Self {
            proxy: VirtioPciProxy::default(),
            drive: drive.to_string(),
            share_rw: false,
            blk: BlkOptions {
                cpus,
                ..BlkOptions::default()
            },
        }
    }
}

pub(super) fn parse(
    dev: &Map<String, Value>,
    cpus: u16,
    driver: &'static str,
) -> Result<VirtioBlkPci, String> {
    let (mut proxy, own) = VirtioPciProxy::take(props(driver, "virtio-blk-device", PROPS, dev)?)?;
    proxy.twin = super::is_twin(driver).then_some(driver);
    let mut r = VirtioBlkPci {
        proxy,
        ..VirtioBlkPci::for_drive("", cpus)
    };
    for (name, v) in own {
        let b = &mut r.blk;
        match (name, v) {
            ("drive", V::Str(s)) => r.drive = s,
            ("share-rw", V::Bool(x)) => r.share_rw = x,
            ("serial", V::Str(s)) => b.serial = Some(s),
            ("num-queues", V::Num(n)) => b.num_queues = Some(n as u16),
            ("queue-size", V::Num(n)) => b.queue_size = n as u16,
            ("write-cache", V::OnOffAuto(x)) => {
                b.write_cache = match x {
                    Some(true) => WriteCache::On,
                    Some(false) => WriteCache::Off,
                    None => WriteCache::Auto,
                }
            }
            ("logical_block_size", V::Num(n)) => b.logical_block_size = n,
            ("physical_block_size", V::Num(n)) => b.physical_block_size = n,
            ("min_io_size", V::Num(n)) => b.min_io_size = n.min(u64::from(u32::MAX)) as u32,
            ("opt_io_size", V::Num(n)) => b.opt_io_size = n.min(u64::from(u32::MAX)) as u32,
            ("discard_granularity", V::Num(n)) => {
                b.discard_granularity = Some(n.min(u64::from(u32::MAX)) as u32)
            }
            ("config-wce", V::Bool(x)) => b.config_wce = x,
            ("discard", V::Bool(x)) => b.discard = x,
            ("write-zeroes", V::Bool(x)) => b.write_zeroes = x,
            ("max-discard-sectors", V::Num(n)) => b.max_discard_sectors = n as u32,
            ("max-write-zeroes-sectors", V::Num(n)) => b.max_write_zeroes_sectors = n as u32,
            ("seg-max-adjust", V::Bool(x)) => b.seg_max_adjust = x,
            _ => {}
        }
    }
    if r.drive.is_empty() {
        return Err("drive property not set".into());
    }
    r.blk.id = r.proxy.id.clone().unwrap_or_default();
    Ok(r)
}
