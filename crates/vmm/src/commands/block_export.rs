//! `block-export.json`: the NBD server (QEMU's blockdev-nbd.c). The
//! server is the block layer's (`block::nbd`); this file unpacks the
//! arguments and sends BLOCK_EXPORT_DELETED for the exports that went.

use qmp::{Args, Event, EventSink, QmpError};
use serde_json::{json, Value};

use block::nbd::{AddArgs, ListenAddr};

use crate::vm::Vm;

pub(super) fn execute(
    vm: &mut Vm,
    cmd: &str,
    args: &Args,
    events: &mut dyn EventSink,
) -> Result<Value, QmpError> {
    let err = |e: block::BlockError| QmpError::generic(e.msg);
    match cmd {
        "nbd-server-start" => {
            let addr = ListenAddr::from_legacy(args.get("addr").unwrap_or(&Value::Null));
            let max = args
                .opt_i64("max-connections")
                .and_then(|m| u32::try_from(m).ok());
            // tls-authz is only resolved when a TLS client connects
            // (QEMU accepts it without tls-creds).
            vm.nbd
                .start(&vm.block, &addr, args.opt_str("tls-creds"), max)
                .map_err(err)?;
        }
        "nbd-server-add" => {
            let a = AddArgs {
                device: args.str("device")?,
                name: args.opt_str("name"),
                description: args.opt_str("description"),
                writable: args.opt_bool("writable").unwrap_or(false),
                bitmap: args.opt_str("bitmap"),
            };
            vm.nbd.add(&mut vm.block, &a).map_err(err)?;
        }
        "nbd-server-remove" => {
            let hard = args.opt_str("mode") == Some("hard");
            let gone = vm
                .nbd
                .remove(&mut vm.block, args.str("name")?, hard)
                .map_err(err)?;
            emit_deleted(events, gone);
        }
        "nbd-server-stop" => {
            let gone = vm.nbd.stop(&mut vm.block).map_err(err)?;
            emit_deleted(events, gone);
        }
        "query-block-exports" => return Ok(vm.nbd.query()),
        _ => return Err(super::not_found(cmd)),
    }
    Ok(json!({}))
}

/// BLOCK_EXPORT_DELETED for each export that went (`blk_exp_delete_bh`).
pub(crate) fn emit_deleted(events: &mut dyn EventSink, ids: Vec<String>) {
    for id in ids {
        events.emit(Event::new(
            "BLOCK_EXPORT_DELETED",
            Some(json!({ "id": id })),
        ));
    }
}
