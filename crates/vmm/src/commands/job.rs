//! The job commands (QEMU's qapi/job.json, job-qmp.c) and the block-job
//! ones of qapi/block-core.json (blockdev.c), over the VM's job table
//! (`block::job::Jobs`). Jobs' events go out before the command's reply,
//! where QEMU sends them from inside the command.

use block::job::{JobEvent, JobOptions, JobPlan, OnJobError};
use qmp::{Args, Event, EventSink, QmpError};
use serde_json::Value;

use crate::vm::Vm;

fn err(e: block::BlockError) -> QmpError {
    QmpError::generic(e.msg)
}

pub(crate) fn emit(events: &mut dyn EventSink, ev: Vec<JobEvent>) {
    for e in ev {
        events.emit(Event::new(e.name, Some(e.data)));
    }
}

/// The schema module `job`.
pub(super) fn execute(
    vm: &mut Vm,
    cmd: &str,
    args: &Args,
    events: &mut dyn EventSink,
) -> Result<Value, QmpError> {
    if cmd == "query-jobs" {
        return Ok(vm.jobs.query_jobs());
    }
    let id = args.str("id")?;
    // job-qmp.c find_job_locked.
    if !vm.jobs.exists(id) {
        return Err(QmpError::generic("Job not found"));
    }
    run_verb(vm, cmd.trim_start_matches("job-"), id, true, events)?;
    Ok(Value::Null)
}

/// A verb on job `id`, which exists. `force`: cancel's.
fn run_verb(
    vm: &mut Vm,
    verb: &str,
    id: &str,
    force: bool,
    events: &mut dyn EventSink,
) -> Result<(), QmpError> {
    let jobs = &mut vm.jobs;
    match verb {
        "pause" => jobs.user_pause(id).map_err(err),
        "resume" => {
            emit(events, jobs.user_resume(id).map_err(err)?);
            Ok(())
        }
        "cancel" => {
            let ev = drained(vm, |jobs, g| jobs.user_cancel(id, force, g)).map_err(err)?;
            emit(events, ev);
            Ok(())
        }
        "complete" => jobs.complete(id).map_err(err),
        "finalize" => {
            let ev = drained(vm, |jobs, g| jobs.finalize(id, g)).map_err(err)?;
            emit(events, ev);
            Ok(())
        }
        "dismiss" => {
            let ev = jobs.dismiss(id).map_err(err)?;
            emit(events, ev);
            Ok(())
        }
        _ => Err(super::not_found(verb)),
    }
}

/// `block-job-*` and `query-block-jobs` (blockdev.c).
pub(super) fn block_job(
    vm: &mut Vm,
    cmd: &str,
    args: &Args,
    events: &mut dyn EventSink,
) -> Result<Value, QmpError> {
    if cmd == "query-block-jobs" {
        return Ok(vm.jobs.query_block_jobs());
    }
    let key = if matches!(cmd, "block-job-dismiss" | "block-job-finalize") {
        "id"
    } else {
        "device"
    };
    let id = args.str(key)?;
    // find_block_job_locked.
    if !vm.jobs.exists_block_job(id) {
        return Err(QmpError::device_not_active(format!(
            "Block job '{id}' not found"
        )));
    }
    match cmd {
        "block-job-set-speed" => vm.jobs.set_speed(id, args.i64("speed")?).map_err(err)?,
        "block-job-cancel" => {
            let force = args.opt_bool("force").unwrap_or(false);
            if vm.jobs.user_paused(id) && !force {
                return Err(QmpError::generic(format!(
                    "The block job for device '{id}' is currently paused"
                )));
            }
            run_verb(vm, "cancel", id, force, events)?
        }
        _ => run_verb(vm, cmd.trim_start_matches("block-job-"), id, false, events)?,
    }
    Ok(Value::Null)
}

/// The options every job-starting command has.
pub(super) fn job_options(args: &Args) -> JobOptions {
    JobOptions {
        auto_finalize: args.opt_bool("auto-finalize").unwrap_or(true),
        auto_dismiss: args.opt_bool("auto-dismiss").unwrap_or(true),
        speed: args.opt_i64("speed").unwrap_or(0),
    }
}

/// Runs `f` on the jobs and the graph with every device and NBD export
/// drained: a job
/// puts filters into the devices' routes and takes them out, and ends by
/// moving devices, while no guest request is in flight.
pub(crate) fn drained<T>(
    vm: &mut Vm,
    f: impl FnOnce(&mut block::job::Jobs, &mut block::BlockGraph) -> T,
) -> T {
    let backend = vm.machine.as_ref().map(|m| m.devices.backend().clone());
    let (jobs, graph, nbd) = (&mut vm.jobs, &mut vm.block, &vm.nbd);
    // NBD exports are drained too (QEMU's nbd_drained_begin).
    nbd.drained(|| match backend {
        Some(b) => b.drained(|| f(jobs, graph)),
        None => f(jobs, graph),
    })
}

/// A worker's report; a finished job's graph changes run drained.
pub(crate) fn on_worker_msg(vm: &mut Vm, m: block::job::JobMsg, events: &mut dyn EventSink) {
    let ev = if matches!(m, block::job::JobMsg::Done { .. }) {
        drained(vm, |jobs, g| jobs.handle(m, g))
    } else {
        vm.jobs.handle(m, &mut vm.block)
    };
    emit(events, ev);
}

fn start(
    vm: &mut Vm,
    plan: JobPlan,
    args: &Args,
    events: &mut dyn EventSink,
) -> Result<Value, QmpError> {
    let mut ev = Vec::new();
    let opts = job_options(args);
    let r = drained(vm, |jobs, g| jobs.start(plan, opts, g, &mut ev));
    emit(events, ev);
    r.map_err(err)?;
    Ok(Value::Null)
}

fn mirror_args(args: &Args) -> Result<block::job::mirror_start::MirrorArgs<'_>, QmpError> {
    Ok(block::job::mirror_start::MirrorArgs {
        job_id: args.opt_str("job-id"),
        device: args.str("device")?,
        target: args.str("target")?,
        sync: args.str("sync")?,
        granularity: args.opt_i64("granularity").map(|g| g as u64),
        buf_size: args.opt_i64("buf-size"),
        on_source_error: OnJobError::parse(args.opt_str("on-source-error")),
        on_target_error: OnJobError::parse(args.opt_str("on-target-error")),
        write_blocking: args.opt_str("copy-mode") == Some("write-blocking"),
        replaces: args.opt_str("replaces"),
        filter_node_name: args.opt_str("filter-node-name"),
    })
}

/// `blockdev-mirror` and `drive-mirror`.
pub(super) fn mirror(
    vm: &mut Vm,
    cmd: &str,
    args: &Args,
    events: &mut dyn EventSink,
) -> Result<Value, QmpError> {
    let a = mirror_args(args)?;
    let plan = if cmd == "drive-mirror" {
        let d = block::job::mirror_start::DriveMirrorArgs {
            format: args.opt_str("format"),
            node_name: args.opt_str("node-name"),
            existing: args.opt_str("mode") == Some("existing"),
        };
        vm.block.drive_mirror(&a, &d)
    } else {
        vm.block.blockdev_mirror(&a)
    }
    .map_err(err)?;
    start(vm, plan, args, events)
}

/// `block-stream`.
pub(super) fn block_stream(
    vm: &mut Vm,
    args: &Args,
    events: &mut dyn EventSink,
) -> Result<Value, QmpError> {
    let a = block::job::stream::StreamArgs {
        job_id: args.opt_str("job-id"),
        device: args.str("device")?,
        base: args.opt_str("base"),
        base_node: args.opt_str("base-node"),
        backing_file: args.opt_str("backing-file"),
        bottom: args.opt_str("bottom"),
        on_error: OnJobError::parse(args.opt_str("on-error")),
        filter_node_name: args.opt_str("filter-node-name"),
    };
    let plan = vm.block.stream_job(&a).map_err(err)?;
    start(vm, plan, args, events)
}

/// `blockdev-backup` and `drive-backup`.
pub(super) fn backup(
    vm: &mut Vm,
    cmd: &str,
    args: &Args,
    events: &mut dyn EventSink,
) -> Result<Value, QmpError> {
    let a = backup_args(args)?;
    // qmp_transaction drains everything first (bdrv_drain_all), then the
    // prepare step drains the source until the job has started.
    let mut ev = Vec::new();
    let all = vm.jobs.drain_begin(None, &mut ev);
    vm.jobs.drain_end(&all, &mut ev);
    let r = backup_drained(vm, cmd, &a, args, &mut ev);
    emit(events, ev);
    r
}

/// The part of a backup command inside its drained section on the source.
fn backup_drained(
    vm: &mut Vm,
    cmd: &str,
    a: &block::job::backup_start::BackupArgs<'_>,
    args: &Args,
    ev: &mut Vec<JobEvent>,
) -> Result<Value, QmpError> {
    let bs = vm
        .block
        .lookup_bs(Some(a.device), Some(a.device))
        .map_err(err)?;
    if cmd == "blockdev-backup" {
        vm.block
            .lookup_bs(Some(a.target), Some(a.target))
            .map_err(err)?;
    }
    let mut section = vm.jobs.drain_begin(Some(&bs), ev);
    let started = if cmd == "drive-backup" {
        let d = block::job::backup_start::DriveBackupArgs {
            format: args.opt_str("format"),
            existing: args.opt_str("mode") == Some("existing"),
        };
        vm.block.drive_backup(a, &d)
    } else {
        vm.block.blockdev_backup(a)
    };
    let r = started.map_err(err).and_then(|started| {
        if let Some(w) = &started.warning {
            // QEMU's warn_report, on stderr.
            eprintln!("ferrovm: warning: {w}");
        }
        let opts = job_options(args);
        drained(vm, |jobs, g| jobs.start(started.plan, opts, g, ev)).map_err(err)?;
        // The new job starts inside the section: it pauses at once.
        section.extend(vm.jobs.drain_begin(Some(&bs), ev));
        Ok(Value::Null)
    });
    vm.jobs.drain_end(&section, ev);
    r
}

/// `block-commit`.
pub(super) fn block_commit(
    vm: &mut Vm,
    args: &Args,
    events: &mut dyn EventSink,
) -> Result<Value, QmpError> {
    let device = args.str("device")?;
    // qmp_block_commit looks the device up before anything else.
    if !vm.block.commit_device_exists(device) {
        return Err(QmpError::device_not_found(format!(
            "Device '{device}' not found"
        )));
    }
    let a = block::job::commit_start::CommitArgs {
        job_id: args.opt_str("job-id"),
        device,
        base_node: args.opt_str("base-node"),
        base: args.opt_str("base"),
        top_node: args.opt_str("top-node"),
        top: args.opt_str("top"),
        backing_file: args.opt_str("backing-file"),
        on_error: OnJobError::parse(args.opt_str("on-error")),
        filter_node_name: args.opt_str("filter-node-name"),
    };
    let plan = vm.block.commit_job(&a).map_err(err)?;
    start(vm, plan, args, events)
}

/// `blockdev-create`: a plain job that concludes and waits for
/// `job-dismiss` (QEMU's JOB_MANUAL_DISMISS).
pub(super) fn blockdev_create(
    vm: &mut Vm,
    args: &Args,
    events: &mut dyn EventSink,
) -> Result<Value, QmpError> {
    let id = args.str("job-id")?;
    let options = args
        .get("options")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let plan = vm.block.create_job(id, &options).map_err(err)?;
    let opts = JobOptions {
        auto_finalize: true,
        auto_dismiss: false,
        speed: 0,
    };
    let mut ev = Vec::new();
    let r = drained(vm, |jobs, g| jobs.start(plan, opts, g, &mut ev));
    emit(events, ev);
    r.map_err(err)?;
    Ok(Value::Null)
}

/// `BackupCommon` and its `target`, as blockdev-backup, drive-backup and
/// their transaction actions give them.
pub(super) fn backup_args(
    args: &Args,
) -> Result<block::job::backup_start::BackupArgs<'_>, QmpError> {
    let perf = args.get("x-perf").and_then(Value::as_object);
    let perf_i64 = |k: &str| perf.and_then(|p| p.get(k)).and_then(Value::as_i64);
    Ok(block::job::backup_start::BackupArgs {
        job_id: args.opt_str("job-id"),
        device: args.str("device")?,
        target: args.str("target")?,
        sync: args.str("sync")?,
        bitmap: args.opt_str("bitmap"),
        bitmap_mode: args.opt_str("bitmap-mode"),
        compress: args.opt_bool("compress").unwrap_or(false),
        on_source_error: OnJobError::parse(args.opt_str("on-source-error")),
        on_target_error: OnJobError::parse(args.opt_str("on-target-error")),
        filter_node_name: args.opt_str("filter-node-name"),
        max_workers: perf_i64("max-workers"),
        max_chunk: perf_i64("max-chunk"),
    })
}
