//! The block commands (QEMU's qapi/block-core.json): what the graph holds,
//! its statistics and resizing, nodes added and deleted. The answers are the
//! block layer's (`block::qapi`); this file only routes.

use qmp::{Args, EventSink, QmpError};
use serde_json::Value;

use crate::vm::Vm;

pub(super) fn execute(
    vm: &mut Vm,
    cmd: &str,
    args: &Args,
    events: &mut dyn EventSink,
) -> Result<Value, QmpError> {
    let err = |e: block::BlockError| QmpError::generic(e.msg);
    if cmd == "query-block-jobs" || cmd.starts_with("block-job-") {
        return super::job::block_job(vm, cmd, args, events);
    }
    if cmd.starts_with("block-dirty-bitmap-") {
        return super::bitmap::execute(vm, cmd, args);
    }
    match cmd {
        "block-stream" => super::job::block_stream(vm, args, events),
        "block-commit" => super::job::block_commit(vm, args, events),
        "blockdev-mirror" | "drive-mirror" => super::job::mirror(vm, cmd, args, events),
        "blockdev-backup" | "drive-backup" => super::job::backup(vm, cmd, args, events),
        "blockdev-create" => super::job::blockdev_create(vm, args, events),
        "query-block" => Ok(vm.block.query_block()),
        "query-blockstats" => Ok(vm
            .block
            .query_blockstats(args.opt_bool("query-nodes").unwrap_or(false))),
        "query-named-block-nodes" => Ok(vm
            .block
            .query_named_block_nodes(args.opt_bool("flat").unwrap_or(false))),
        "x-debug-query-block-graph" => Ok(vm.block.xdbg_block_graph()),
        "block_resize" => {
            let size = args.i64("size")?;
            vm.block
                .block_resize(args.opt_str("device"), args.opt_str("node-name"), size)
                .map_err(err)?;
            Ok(Value::Null)
        }
        // The schema has checked the options against QEMU's BlockdevOptions;
        // the graph opens what ferrovm has drivers for.
        "blockdev-add" => {
            vm.block.add_blockdev(args.as_map()).map_err(err)?;
            Ok(Value::Null)
        }
        // One-action transactions in QEMU (drained as the transaction is).
        "blockdev-snapshot-sync" | "blockdev-snapshot" => {
            super::transaction::single(vm, cmd, args, events)
        }
        "block_set_io_throttle" => {
            let (bb, default_group) = throttled_backend(vm, args)?;
            let cfg = throttle_config(args);
            bb.set_throttle(cfg, args.opt_str("group"), &default_group)
                .map_err(err)?;
            Ok(Value::Null)
        }
        // Drained as the snapshots are: a descriptor or an image that
        // changes writability has no guest request in flight.
        "blockdev-reopen" => {
            let list = args
                .as_map()
                .get("options")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            drained(vm, |g| g.blockdev_reopen(&list)).map_err(err)?;
            Ok(Value::Null)
        }
        "change-backing-file" => {
            let (dev, img) = (args.str("device")?, args.str("image-node-name")?);
            let file = args.str("backing-file")?;
            drained(vm, |g| g.change_backing_file(dev, img, file)).map_err(err)?;
            Ok(Value::Null)
        }
        "blockdev-del" => {
            vm.block.blockdev_del(args.str("node-name")?).map_err(err)?;
            Ok(Value::Null)
        }
        _ => Err(super::not_found(cmd)),
    }
}

/// Runs `f` on the block graph with every device drained (no machine: no
/// device to drain).
fn drained<T>(vm: &mut Vm, f: impl FnOnce(&mut block::BlockGraph) -> T) -> T {
    super::job::drained(vm, |_, g| f(g))
}

/// blockdev.c `qmp_get_blk`: `device` is a drive name; `id` a device's
/// QOM path or `/machine/peripheral/ID`, which must be the device the
/// drive is attached to (a virtio-blk-pci's `virtio-backend`). Returns the
/// backend and the group name QEMU defaults to (`device`, else `id`).
fn throttled_backend(vm: &Vm, args: &Args) -> Result<(block::BlockBackend, String), QmpError> {
    match (args.opt_str("device"), args.opt_str("id")) {
        (Some(d), None) => vm
            .block
            .backend(d)
            .cloned()
            .map(|b| (b, d.to_string()))
            .ok_or_else(|| QmpError::device_not_found(format!("Device '{d}' not found"))),
        (None, Some(id)) => {
            let path = if id.starts_with('/') {
                id.to_string()
            } else {
                format!("/machine/peripheral/{id}")
            };
            // A device with an id shows it as its `qdev` (a SCSI disk's).
            if let Some(b) = vm
                .block
                .backend_of_device(&path)
                .or_else(|| vm.block.backend_of_device(id))
            {
                return Ok((b, id.to_string()));
            }
            let is_device = vm
                .peripherals()
                .iter()
                .any(|p| p.qom_path == path || format!("{}/virtio-backend", p.qom_path) == path);
            Err(if is_device {
                QmpError::generic("Device does not have a block device backend")
            } else {
                QmpError::device_not_found(format!("Device '{id}' not found"))
            })
        }
        _ => Err(QmpError::generic("Need exactly one of 'device' and 'id'")),
    }
}

/// The limits in QEMU's ThrottleConfig (the schema has checked the types).
fn throttle_config(args: &Args) -> block::throttle::ThrottleConfig {
    let mut c = block::throttle::ThrottleConfig::default();
    let u = |k: &str| args.opt_i64(k).map(|v| v.max(0) as u64);
    for (i, name) in block::throttle::BUCKET_NAMES.iter().enumerate() {
        let b = &mut c.buckets[i];
        b.avg = u(name).unwrap_or(0);
        if let Some(m) = u(&format!("{name}_max")) {
            b.max = m;
        }
        if let Some(l) = u(&format!("{name}_max_length")) {
            b.burst_length = l;
        }
    }
    c.op_size = u("iops_size").unwrap_or(0);
    c
}

/// HMP `qemu-io` (block/monitor/block-hmp-cmds.c `hmp_qemu_io`): the
/// target is a device's BlockBackend (`-d`), a drive, or a node (through a
/// temporary backend); qemu-io prints on the emulator's stdout.
pub(super) fn hmp_qemu_io(
    vm: &mut Vm,
    qdev: bool,
    device: &str,
    command: &str,
) -> Result<(), QmpError> {
    let target = if qdev {
        // blk_by_qdev_id.
        let path = format!("/machine/peripheral/{device}");
        let bb = vm.block.backends().iter().find(|b| {
            b.qdev_path()
                .is_some_and(|q| q == path || q.starts_with(&format!("{path}/")))
        });
        match bb {
            Some(b) => block_target(b)?,
            None => {
                let exists = vm
                    .machine
                    .as_ref()
                    .is_some_and(|m| m.devices.peripherals().iter().any(|p| p.qom_path == path));
                return Err(QmpError::generic(if exists {
                    format!("Device '{device}' does not have a block device backend")
                } else {
                    format!("Device '{device}' not found")
                }));
            }
        }
    } else if let Some(b) = vm.block.backend(device) {
        block_target(b)?
    } else {
        let node = vm
            .block
            .lookup_bs(None, Some(device))
            .map_err(|e| QmpError::generic(e.msg))?;
        block::qemu_io::Target {
            node,
            backend: None,
        }
    };
    block::qemu_io::run(&target, command, std::sync::Arc::new(block::qemu_io::Stdio));
    Ok(())
}

fn block_target(b: &block::BlockBackend) -> Result<block::qemu_io::Target, QmpError> {
    let node = b
        .root()
        .ok_or_else(|| QmpError::generic(format!("Device '{}' has no medium", b.name())))?;
    Ok(block::qemu_io::Target {
        node,
        backend: Some(b.clone()),
    })
}
