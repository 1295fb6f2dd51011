//! From the command line's `-drive`, `-blockdev` and `-device` to the block
//! graph and the list of devices to build, checked before anything runs (as
//! QEMU does), with QEMU's messages behind the option that caused them.

use std::sync::Arc;

use block::{AttachOptions, BlockGraph};
use cli::{Config, DriveInterface};
use devices::virtio::block::{BlockIoError, VirtioBlock};
use serde_json::Value;

use super::qdev::{self, DeviceRequest, VirtioBlkPci};
use super::{PlannedModel, VirtioPlan};
use crate::error::VmmError;
use crate::messages::{ControlMsg, ControlSender, DeviceEvent};

/// The block graph and the devices to build on it.
pub struct Plan {
    pub graph: BlockGraph,
    pub virtio: Vec<VirtioPlan>,
}

fn at(location: &str, msg: impl std::fmt::Display) -> VmmError {
    VmmError::Config(format!("{location}: {msg}"))
}

/// QEMU's default drive ids (blockdev.c `drive_new`): the interface name
/// and the drive's index on it.
fn default_drive_id(interface: DriveInterface, index: usize) -> String {
    format!("{interface}{index}")
}

pub fn plan(config: &Config, sender: &Arc<ControlSender>, cpus: u16) -> Result<Plan, VmmError> {
    let mut graph = BlockGraph::new();
    let mut requests: Vec<(String, VirtioBlkPci)> = Vec::new();
    // QEMU opens every -blockdev before any -drive (vl.c configure_blockdev),
    // which decides the automatic node names' counters.
    for (b, loc) in config.blockdevs.iter().zip(&config.blockdev_locations) {
        let map = b.as_object().cloned().unwrap_or_default();
        graph.add_blockdev(&map).map_err(|e| at(loc, e.full()))?;
    }
    let mut per_interface: std::collections::HashMap<String, usize> = Default::default();
    for d in &config.drives {
        let n = per_interface.entry(d.interface.to_string()).or_default();
        let id =
            d.id.clone()
                .unwrap_or_else(|| default_drive_id(d.interface, *n));
        *n += 1;
        graph
            .add_drive(&id, &d.opts)
            .map_err(|e| at(&d.location, e.full()))?;
        if d.interface == DriveInterface::Virtio {
            // `if=virtio` is shorthand for a virtio-blk-pci on that drive.
            requests.push((d.location.clone(), VirtioBlkPci::for_drive(&id, cpus)));
        }
    }
    for w in graph.take_warnings() {
        eprintln!("ferrovm: warning: {w}");
    }
    for (d, loc) in config.devices.iter().zip(&config.device_locations) {
        let Some(map) = d.as_object() else { continue };
        if matches!(
            map.get("driver").and_then(Value::as_str),
            Some("isa-serial" | "isa-debugcon")
        ) {
            continue; // COM1's front-end (console.rs)
        }
        match qdev::parse(map, cpus).map_err(|e| at(loc, e))? {
            DeviceRequest::VirtioBlkPci(r) => requests.push((loc.clone(), r)),
            DeviceRequest::VirtioNetPci(_) | DeviceRequest::VirtioBalloonPci(_) => {
                return Err(at(loc, "not built yet"));
            }
        }
    }
    let mut anon = 0;
    let mut virtio = Vec::new();
    for (loc, r) in requests {
        let qdev_path = match &r.proxy.id {
            Some(id) => format!("/machine/peripheral/{id}/virtio-backend"),
            None => {
                anon += 1;
                format!(
                    "/machine/peripheral-anon/device[{}]/virtio-backend",
                    anon - 1
                )
            }
        };
        let backend = graph
            .attach(
                &r.drive,
                &qdev_path,
                AttachOptions {
                    share_rw: r.share_rw,
                    read_only: false,
                },
            )
            .map_err(|e| {
                let msg = e.full();
                // QEMU names the property of the virtio device it sets.
                at(
                    &loc,
                    msg.replace("Property 'drive'", "Property 'virtio-blk-device.drive'"),
                )
            })?;
        let on_error = error_reporter(backend.clone(), sender.clone());
        // The model validates its properties now, before anything runs.
        let model = VirtioBlock::new(backend.clone(), &r.blk, on_error).map_err(|e| at(&loc, e))?;
        virtio.push(VirtioPlan {
            model: PlannedModel::Block {
                request: r,
                model,
                backend,
            },
            location: loc,
        });
    }
    Ok(Plan { graph, virtio })
}

/// Turns a failed request into BLOCK_IO_ERROR (and `io-error` on a stop)
/// for the machine's owner. Called on the backend thread: only sends.
fn error_reporter(
    backend: block::BlockBackend,
    sender: Arc<ControlSender>,
) -> devices::virtio::block::BlockIoErrorFn {
    Arc::new(move |e: BlockIoError| {
        let is_read = e.operation == devices::virtio::block::IoOperation::Read;
        let data = backend.error_event(e.action, is_read, e.errno);
        sender.send(ControlMsg::Device(DeviceEvent::BlockIoError {
            data,
            stop: e.action == block::ErrorAction::Stop,
        }));
    })
}
