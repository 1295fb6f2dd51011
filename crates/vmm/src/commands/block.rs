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
    _events: &mut dyn EventSink,
) -> Result<Value, QmpError> {
    let err = |e: block::BlockError| QmpError::generic(e.msg);
    match cmd {
        "query-block" => Ok(vm.block.query_block()),
        "query-blockstats" => Ok(vm
            .block
            .query_blockstats(args.opt_bool("query-nodes").unwrap_or(false))),
        "query-named-block-nodes" => Ok(vm
            .block
            .query_named_block_nodes(args.opt_bool("flat").unwrap_or(false))),
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
        // A drained section around the switch (QEMU drains old_bs): no
        // guest request is in flight while the devices move to the overlay.
        "blockdev-snapshot-sync" => {
            let a = block::snapshot::SnapshotSync {
                device: args.opt_str("device"),
                node_name: args.opt_str("node-name"),
                snapshot_file: args.str("snapshot-file")?,
                snapshot_node_name: args.opt_str("snapshot-node-name"),
                format: args.opt_str("format"),
                existing: args.opt_str("mode") == Some("existing"),
            };
            drained(vm, |g| g.snapshot_sync(&a)).map_err(err)?;
            Ok(Value::Null)
        }
        "blockdev-snapshot" => {
            let (node, overlay) = (args.str("node")?, args.str("overlay")?);
            drained(vm, |g| g.snapshot(node, overlay)).map_err(err)?;
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
    let backend = vm.machine.as_ref().map(|m| m.devices.backend().clone());
    let graph = &mut vm.block;
    match backend {
        Some(b) => b.drained(|| f(graph)),
        None => f(graph),
    }
}
