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
        "blockdev-del" => {
            vm.block.blockdev_del(args.str("node-name")?).map_err(err)?;
            Ok(Value::Null)
        }
        _ => Err(super::not_found(cmd)),
    }
}
