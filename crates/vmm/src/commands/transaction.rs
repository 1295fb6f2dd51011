//! `transaction` (QEMU 7.2 blockdev.c `qmp_transaction`): the actions run
//! all or nothing. Everything is drained first; each action's prepare step
//! runs in order and notes how to undo itself; if one fails, the prepared
//! ones are undone newest first and the command fails with that action's
//! error. Backups are only checked (and drive-backup's target created) in
//! their prepare step; their jobs start once every action has prepared.

use block::job::backup_start::DriveBackupArgs;
use block::job::{JobEvent, JobPlan};
use qmp::{Args, EventSink, QmpError};
use serde_json::Value;

use super::job::{drained, emit, job_options};
use crate::vm::Vm;

/// How to take a prepared action back.
enum Undo {
    BitmapAdded {
        node: String,
        name: String,
    },
    BitmapRemoved {
        node: String,
        at: usize,
        bitmap: std::sync::Arc<block::dirty::NamedBitmap>,
    },
    BitmapBits {
        bitmap: std::sync::Arc<block::dirty::NamedBitmap>,
        words: Vec<u64>,
    },
    BitmapEnabled {
        bitmap: std::sync::Arc<block::dirty::NamedBitmap>,
        was: bool,
    },
    Snapshot {
        old: std::sync::Arc<block::node::Node>,
        opened: bool,
    },
    Backup {
        plan: JobPlan,
        args: Args,
    },
}

fn err(e: block::BlockError) -> QmpError {
    QmpError::generic(e.msg)
}

pub(super) fn execute(
    vm: &mut Vm,
    _cmd: &str,
    args: &Args,
    events: &mut dyn EventSink,
) -> Result<Value, QmpError> {
    let actions: Vec<(String, Args)> = args
        .get("actions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|a| {
            let kind = a["type"].as_str().unwrap_or_default().to_string();
            let data = a
                .get("data")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            (kind, Args(data))
        })
        .collect();
    run(vm, actions, args, events)
}

/// A command QEMU runs as a one-action transaction (`blockdev_do_action`):
/// `blockdev-snapshot-sync`, `blockdev-snapshot`.
pub(super) fn single(
    vm: &mut Vm,
    cmd: &str,
    args: &Args,
    events: &mut dyn EventSink,
) -> Result<Value, QmpError> {
    run(
        vm,
        vec![(cmd.to_string(), args.clone())],
        &Args::default(),
        events,
    )
}

fn run(
    vm: &mut Vm,
    actions: Vec<(String, Args)>,
    args: &Args,
    events: &mut dyn EventSink,
) -> Result<Value, QmpError> {
    let grouped = args
        .get("properties")
        .and_then(|p| p.get("completion-mode"))
        .and_then(Value::as_str)
        == Some("grouped");
    let mut ev = Vec::new();
    // qmp_transaction: bdrv_drain_all() before anything.
    let all = vm.jobs.drain_begin(None, &mut ev);
    vm.jobs.drain_end(&all, &mut ev);
    let mut undo: Vec<Undo> = Vec::new();
    let mut section = Vec::new();
    let mut failed = None;
    for (kind, a) in &actions {
        let r = if grouped && !kind.ends_with("-backup") {
            // action_check_completion_mode.
            Err(QmpError::generic(format!(
                "Action '{kind}' does not support Transaction property completion-mode = grouped"
            )))
        } else if grouped {
            Err(QmpError::generic(
                "ferrovm: completion-mode 'grouped' is not supported",
            ))
        } else {
            prepare(vm, kind, a, &mut section, &mut ev)
        };
        match r {
            Ok(u) => undo.extend(u),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    let r = match failed {
        Some(e) => {
            for u in undo.into_iter().rev() {
                abort(vm, u, &mut ev);
            }
            Err(e)
        }
        None => commit(vm, undo, &mut section, &mut ev),
    };
    vm.jobs.drain_end(&section, &mut ev);
    emit(events, ev);
    r.map(|()| Value::Object(Default::default()))
}

fn prepare(
    vm: &mut Vm,
    kind: &str,
    a: &Args,
    section: &mut Vec<String>,
    ev: &mut Vec<JobEvent>,
) -> Result<Option<Undo>, QmpError> {
    let node = || a.str("node");
    let name = || a.str("name");
    match kind {
        "abort" => Err(QmpError::generic("Transaction aborted using Abort action")),
        "block-dirty-bitmap-add" => {
            vm.block
                .bitmap_add(
                    node()?,
                    name()?,
                    a.opt_i64("granularity").map(|v| v as u64),
                    a.opt_bool("persistent").unwrap_or(false),
                    a.opt_bool("disabled").unwrap_or(false),
                )
                .map_err(err)?;
            Ok(Some(Undo::BitmapAdded {
                node: node()?.to_string(),
                name: name()?.to_string(),
            }))
        }
        "block-dirty-bitmap-remove" => {
            let b = vm.block.bitmap_find(node()?, name()?);
            vm.block.bitmap_remove(node()?, name()?).map_err(err)?;
            let node = node()?.to_string();
            Ok(b.map(|(at, bitmap)| Undo::BitmapRemoved { node, at, bitmap }))
        }
        "block-dirty-bitmap-clear" | "block-dirty-bitmap-merge" => {
            let target = if kind.ends_with("merge") {
                a.str("target")?
            } else {
                name()?
            };
            let b = vm.block.bitmap_find(node()?, target).map(|(_, b)| b);
            let words = b.as_ref().map(|b| b.bits().snapshot());
            super::bitmap::execute(vm, kind, a)?;
            Ok(b.zip(words)
                .map(|(bitmap, words)| Undo::BitmapBits { bitmap, words }))
        }
        "block-dirty-bitmap-enable" | "block-dirty-bitmap-disable" => {
            let b = vm.block.bitmap_find(node()?, name()?).map(|(_, b)| b);
            let was = b.as_ref().is_some_and(|b| b.recording());
            vm.block
                .bitmap_enable(node()?, name()?, kind.ends_with("enable"))
                .map_err(err)?;
            Ok(b.map(|bitmap| Undo::BitmapEnabled { bitmap, was }))
        }
        "blockdev-snapshot-sync" | "blockdev-snapshot" => {
            let sync = kind.ends_with("sync");
            let old = if sync {
                vm.block
                    .lookup_bs(a.opt_str("device"), a.opt_str("node-name"))
            } else {
                vm.block.lookup_bs(Some(node()?), Some(node()?))
            }
            .map_err(err)?;
            let r = if sync {
                let s = block::snapshot::SnapshotSync {
                    device: a.opt_str("device"),
                    node_name: a.opt_str("node-name"),
                    snapshot_file: a.str("snapshot-file")?,
                    snapshot_node_name: a.opt_str("snapshot-node-name"),
                    format: a.opt_str("format"),
                    existing: a.opt_str("mode") == Some("existing"),
                };
                drained(vm, |_, g| g.snapshot_sync(&s))
            } else {
                let overlay = a.str("overlay")?;
                drained(vm, |_, g| g.snapshot(node().unwrap_or(""), overlay))
            };
            r.map_err(err)?;
            Ok(Some(Undo::Snapshot { old, opened: sync }))
        }
        "blockdev-backup" | "drive-backup" => {
            let b = super::job::backup_args(a)?;
            let bs = vm
                .block
                .lookup_bs(Some(b.device), Some(b.device))
                .map_err(err)?;
            if kind == "blockdev-backup" {
                vm.block
                    .lookup_bs(Some(b.target), Some(b.target))
                    .map_err(err)?;
            }
            section.extend(vm.jobs.drain_begin(Some(&bs), ev));
            let started = if kind == "drive-backup" {
                let d = DriveBackupArgs {
                    format: a.opt_str("format"),
                    existing: a.opt_str("mode") == Some("existing"),
                };
                vm.block.drive_backup(&b, &d)
            } else {
                vm.block.blockdev_backup(&b)
            }
            .map_err(err)?;
            // block_job_create's checks, before any job starts.
            let id = started.plan.id.clone();
            let mut plan = started.plan;
            if vm.jobs.exists(&id) {
                plan.driver.clean(&mut vm.block);
                return Err(QmpError::generic(format!("Job ID '{id}' already in use")));
            }
            if let Some(w) = &started.warning {
                eprintln!("ferrovm: warning: {w}");
            }
            Ok(Some(Undo::Backup {
                plan,
                args: a.clone(),
            }))
        }
        "blockdev-snapshot-internal-sync" => Err(QmpError::generic(
            "ferrovm: internal snapshots are not supported",
        )),
        other => Err(super::not_found(other)),
    }
}

/// `.abort` of one prepared action.
fn abort(vm: &mut Vm, u: Undo, ev: &mut Vec<JobEvent>) {
    let g = &mut vm.block;
    match u {
        Undo::BitmapAdded { node, name } => {
            let _ = g.bitmap_remove(&node, &name);
        }
        Undo::BitmapRemoved { node, at, bitmap } => g.bitmap_restore(&node, at, bitmap),
        Undo::BitmapBits { bitmap, words } => bitmap.bits().restore(&words),
        Undo::BitmapEnabled { bitmap, was } => bitmap.set_enabled(was),
        Undo::Snapshot { old, opened } => {
            drained(vm, |_, g| g.undo_snapshot(&old, opened));
        }
        Undo::Backup { mut plan, .. } => {
            // QEMU created the job in its prepare step: it ends unstarted.
            for status in ["created", "aborting", "concluded", "null"] {
                ev.push(JobEvent {
                    name: "JOB_STATUS_CHANGE",
                    data: serde_json::json!({ "id": plan.id, "status": status }),
                });
            }
            plan.driver.clean(g)
        }
    }
}

/// `.commit`: the backups' jobs start; the other actions are done.
fn commit(
    vm: &mut Vm,
    done: Vec<Undo>,
    section: &mut Vec<String>,
    ev: &mut Vec<JobEvent>,
) -> Result<(), QmpError> {
    for u in done {
        if let Undo::Backup { plan, args } = u {
            let bs = plan.nodes.first().cloned();
            let opts = job_options(&args);
            drained(vm, |jobs, g| jobs.start(plan, opts, g, ev)).map_err(err)?;
            // Started inside the drained section: paused at once.
            section.extend(vm.jobs.drain_begin(bs.as_ref(), ev));
        }
    }
    Ok(())
}
