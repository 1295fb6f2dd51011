//! The `block-dirty-bitmap-*` commands (QEMU's
//! block/monitor/bitmap-qmp-cmds.c); the work is the block layer's
//! (`block::bitmap_cmds`), this file only unpacks the arguments.

use qmp::{Args, QmpError};
use serde_json::Value;

use block::bitmap_cmds::BitmapRef;

use crate::vm::Vm;

pub(super) fn execute(vm: &mut Vm, cmd: &str, args: &Args) -> Result<Value, QmpError> {
    let err = |e: block::BlockError| QmpError::generic(e.msg);
    let g = &vm.block;
    let node = args.str("node")?;
    match cmd {
        "block-dirty-bitmap-add" => g.bitmap_add(
            node,
            args.str("name")?,
            args.opt_i64("granularity").map(|v| v as u64),
            args.opt_bool("persistent").unwrap_or(false),
            args.opt_bool("disabled").unwrap_or(false),
        ),
        "block-dirty-bitmap-remove" => g.bitmap_remove(node, args.str("name")?),
        "block-dirty-bitmap-clear" => g.bitmap_clear(node, args.str("name")?),
        "block-dirty-bitmap-enable" => g.bitmap_enable(node, args.str("name")?, true),
        "block-dirty-bitmap-disable" => g.bitmap_enable(node, args.str("name")?, false),
        "block-dirty-bitmap-merge" => {
            // The schema has checked each element: a name, or {node, name}.
            let list = args.as_map().get("bitmaps").and_then(Value::as_array);
            let sources: Vec<BitmapRef> = list
                .into_iter()
                .flatten()
                .map(|v| match v {
                    Value::String(s) => BitmapRef::Local(s.clone()),
                    o => BitmapRef::External {
                        node: o["node"].as_str().unwrap_or_default().to_string(),
                        name: o["name"].as_str().unwrap_or_default().to_string(),
                    },
                })
                .collect();
            g.bitmap_merge(node, args.str("target")?, &sources)
        }
        _ => return Err(super::not_found(cmd)),
    }
    .map_err(err)?;
    Ok(Value::Null)
}
