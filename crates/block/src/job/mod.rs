//! Block jobs on QEMU 7.2's job model (job.c, blockjob.c): the status table
//! ([`status`]), the owner of every job's state ([`Jobs`], on the main
//! thread), and the worker thread each job's copy loop runs on
//! ([`worker`]). The drivers (`stream`, ...) say what a job copies and what
//! it changes in the graph when it ends.
//!
//! The owner keeps QEMU's fields and order of events: JOB_STATUS_CHANGE on
//! every transition, and BLOCK_JOB_READY, _ERROR, _PENDING, _COMPLETED and
//! _CANCELLED where job.c/blockjob.c send them. A driver's `prepare`,
//! `commit`, `abort` and `clean` run on the owner, with the graph.

pub mod backup;
pub mod backup_start;
pub mod commit;
pub mod commit_start;
pub mod create;
pub mod filter_node;
pub mod mirror;
pub mod mirror_start;
pub mod nodeio;
pub mod ratelimit;
pub mod status;
pub mod stream;
pub mod worker;

use std::sync::mpsc::{channel, Sender};
use std::sync::Arc;

use serde_json::{json, Value};

pub use status::{JobStatus, JobVerb};
pub use worker::{JobCtl, JobMsg, Notify, Progress};

use crate::error::{strerror, BlockError};
use crate::graph::BlockGraph;
use crate::io::ErrorAction;
use crate::policy::IoStatus;
use worker::ToWorker;

/// qapi/job.json `JobType` (the kinds ferrovm runs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobType {
    Commit,
    Stream,
    Mirror,
    Backup,
    Create,
}

impl JobType {
    pub fn as_str(self) -> &'static str {
        match self {
            JobType::Commit => "commit",
            JobType::Stream => "stream",
            JobType::Mirror => "mirror",
            JobType::Backup => "backup",
            JobType::Create => "create",
        }
    }
}

/// qapi `BlockdevOnError` for a job's `on-error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnJobError {
    Report,
    Ignore,
    Enospc,
    Stop,
    Auto,
}

impl OnJobError {
    /// The schema has checked the value; anything else is `report`.
    pub fn parse(s: Option<&str>) -> Self {
        match s {
            Some("ignore") => OnJobError::Ignore,
            Some("enospc") => OnJobError::Enospc,
            Some("stop") => OnJobError::Stop,
            Some("auto") => OnJobError::Auto,
            _ => OnJobError::Report,
        }
    }
}

/// What a job does: `run` on its worker thread, the rest on the owner.
pub trait JobDriver: Send {
    fn job_type(&self) -> JobType;
    /// On the owner before the worker starts, with the devices drained:
    /// filters into the devices' routes, holds on target nodes. A failure
    /// fails the job's start.
    fn install(&mut self, _g: &mut BlockGraph) -> Result<(), String> {
        Ok(())
    }
    /// The job was refused before it existed (its id): undo what the
    /// command already changed in the graph (block-stream's reopen).
    fn refused(&mut self, _g: &mut BlockGraph) {}
    /// The copy loop (`JobDriver.run`); an error is the job's error text.
    fn run(&mut self, ctl: &mut JobCtl) -> Result<(), String>;
    /// `.prepare`: graph changes that may still fail (success only).
    fn prepare(&mut self, _g: &mut BlockGraph) -> Result<(), String> {
        Ok(())
    }
    /// `.abort`: undo after a failure or cancel.
    fn abort(&mut self, _g: &mut BlockGraph) {}
    /// `.clean`: always, last; releases the nodes the job held.
    fn clean(&mut self, _g: &mut BlockGraph) {}
    /// A block job (BLOCK_JOB_* events, `query-block-jobs`); a plain job
    /// (blockdev-create) has only JOB_STATUS_CHANGE.
    fn block_job(&self) -> bool {
        true
    }
    /// The job has a `.complete` (mirror, active commit).
    fn completable(&self) -> bool {
        false
    }
    /// `.cancel`'s answer to a soft cancel once ready: mirror's
    /// `force || !job_is_ready`, so a soft cancel of a ready mirror
    /// completes without pivoting. Jobs without `.cancel` are always forced.
    fn soft_cancel_when_ready(&self) -> bool {
        false
    }
}

/// A job a command has checked, to start with [`Jobs::start`]; `nodes`
/// are blocked for other operations while it runs (`block_job_add_bdrv`).
pub struct JobPlan {
    pub id: String,
    pub driver: Box<dyn JobDriver>,
    pub nodes: Vec<Arc<crate::node::Node>>,
}

/// An event for the monitor.
#[derive(Debug, Clone, PartialEq)]
pub struct JobEvent {
    pub name: &'static str,
    pub data: Value,
}

/// How a job was asked to run.
#[derive(Debug, Clone, Copy)]
pub struct JobOptions {
    pub auto_finalize: bool,
    pub auto_dismiss: bool,
    pub speed: i64,
}

impl Default for JobOptions {
    fn default() -> Self {
        JobOptions {
            auto_finalize: true,
            auto_dismiss: true,
            speed: 0,
        }
    }
}

/// One job's state (QEMU's Job + BlockJob), owned by [`Jobs`].
struct Job {
    id: String,
    kind: JobType,
    status: JobStatus,
    /// The status a pause point left (running or ready).
    before_pause: JobStatus,
    opts: JobOptions,
    speed: u64,
    user_paused: bool,
    pause_count: u32,
    parked: bool,
    cancelled: bool,
    force_cancel: bool,
    /// The worker returned (`deferred_to_main_loop`).
    deferred: bool,
    error: Option<String>,
    iostatus: IoStatus,
    completable: bool,
    soft_cancel_when_ready: bool,
    progress: Arc<Progress>,
    /// The nodes the job works on (`block_job_add_bdrv`): a drained
    /// section on one of them pauses the job.
    nodes: Vec<Arc<crate::node::Node>>,
    /// Paused by the drained section now open, not by a pause point.
    drain_paused: bool,
    /// See [`JobDriver::block_job`].
    block_job: bool,
    /// Back from the worker once it is done.
    driver: Option<Box<dyn JobDriver>>,
    tx: Option<Sender<ToWorker>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Job {
    fn transition(&mut self, to: JobStatus, ev: &mut Vec<JobEvent>) {
        debug_assert!(self.status.may_become(to), "{:?} -> {to:?}", self.status);
        let from = self.status;
        self.status = to;
        if from != to {
            ev.push(JobEvent {
                name: "JOB_STATUS_CHANGE",
                data: json!({ "id": self.id, "status": to.as_str() }),
            });
        }
    }

    /// `job_apply_verb_locked`.
    fn verb(&self, v: JobVerb) -> Result<(), BlockError> {
        if v.allowed_in(self.status) {
            return Ok(());
        }
        Err(BlockError::new(format!(
            "Job '{}' in state '{}' cannot accept command verb '{}'",
            self.id,
            self.status.as_str(),
            v.as_str()
        )))
    }

    fn send(&self, m: ToWorker) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(m);
        }
    }

    fn ready(&self) -> bool {
        matches!(self.status, JobStatus::Ready | JobStatus::Standby)
    }

    fn pause(&mut self) {
        self.pause_count += 1;
        if self.pause_count == 1 {
            self.send(ToWorker::Pause);
        }
    }

    /// `job_resume_locked`. A worker parked at its pause point shows its
    /// old status at once: QEMU's job_enter runs the job's coroutine
    /// before the command returns, so query-block-jobs right after
    /// `block-job-resume` never says `paused` (030 TestENOSPC). The
    /// worker's Unparked then finds nothing to change.
    fn resume(&mut self, ev: &mut Vec<JobEvent>) {
        self.pause_count = self.pause_count.saturating_sub(1);
        if self.pause_count == 0 {
            self.send(ToWorker::Resume);
            if self.parked
                && !self.drain_paused
                && matches!(self.status, JobStatus::Paused | JobStatus::Standby)
            {
                let back = self.before_pause;
                self.transition(back, ev);
            }
        }
    }

    fn progress_fields(&self) -> (u64, u64) {
        self.progress.snapshot()
    }

    /// BLOCK_JOB_READY / _CANCELLED / _COMPLETED's common data.
    fn block_event(&self, name: &'static str, error: Option<&str>) -> JobEvent {
        let (cur, total) = self.progress_fields();
        let mut d = json!({
            "type": self.kind.as_str(),
            "device": self.id,
            "len": total,
            "offset": cur,
            "speed": self.speed,
        });
        if let Some(e) = error {
            d["error"] = e.into();
        }
        JobEvent { name, data: d }
    }

    /// `job_update_rc_locked`: a cancelled job fails with ECANCELED.
    fn update_rc(&mut self, ev: &mut Vec<JobEvent>) {
        if self.error.is_none() && self.force_cancel {
            self.error = Some(strerror(libc::ECANCELED));
        }
        if self.error.is_some() {
            self.transition(JobStatus::Aborting, ev);
        }
    }
}

/// Every job, by id, in creation order (QEMU's `jobs` list, which it
/// walks newest first).
pub struct Jobs {
    jobs: Vec<Job>,
    notify: Notify,
}

impl Jobs {
    pub fn new(notify: Notify) -> Self {
        Jobs {
            jobs: Vec::new(),
            notify,
        }
    }

    fn find(&mut self, id: &str) -> Option<&mut Job> {
        self.jobs.iter_mut().find(|j| j.id == id)
    }

    pub fn exists(&self, id: &str) -> bool {
        self.jobs.iter().any(|j| j.id == id)
    }

    /// `find_block_job_locked`: a block job, not a plain one.
    pub fn exists_block_job(&self, id: &str) -> bool {
        self.jobs.iter().any(|j| j.id == id && j.block_job)
    }

    /// `job_create` + `block_job_set_speed` + `job_start`. `id` is the
    /// job id (the caller has defaulted it to the device name). A bad
    /// speed ends the created job at once, with its events, as QEMU's
    /// `job_early_fail`.
    pub fn start(
        &mut self,
        plan: JobPlan,
        opts: JobOptions,
        g: &mut BlockGraph,
        ev: &mut Vec<JobEvent>,
    ) -> Result<(), BlockError> {
        let JobPlan {
            id,
            mut driver,
            nodes,
        } = plan;
        let id = id.as_str();
        // block_job_create defaults the id to the device name, "" for a
        // node without a device: QEMU 7.2 then says "Invalid job ID ''".
        let refused = if !crate::graph::id_wellformed(id) {
            Some(format!("Invalid job ID '{id}'"))
        } else if self.exists(id) {
            Some(format!("Job ID '{id}' already in use"))
        } else {
            None
        };
        if let Some(e) = refused {
            driver.refused(g);
            return Err(BlockError::new(e));
        }
        let mut job = Job {
            id: id.to_string(),
            kind: driver.job_type(),
            status: JobStatus::Undefined,
            before_pause: JobStatus::Running,
            opts,
            speed: 0,
            user_paused: false,
            pause_count: 0,
            parked: false,
            cancelled: false,
            force_cancel: false,
            deferred: false,
            error: None,
            iostatus: IoStatus::Ok,
            completable: driver.completable(),
            soft_cancel_when_ready: driver.soft_cancel_when_ready(),
            progress: Arc::new(Progress::default()),
            nodes: nodes.clone(),
            drain_paused: false,
            block_job: driver.block_job(),
            driver: Some(driver),
            tx: None,
            thread: None,
        };
        job.transition(JobStatus::Created, ev);
        if opts.speed < 0 {
            job.transition(JobStatus::Null, ev);
            return Err(BlockError::new(
                "Parameter 'speed' expects a non-negative value",
            ));
        }
        job.speed = opts.speed as u64;
        let (tx, rx) = channel();
        let mut ctl = JobCtl::new(
            job.id.clone(),
            rx,
            self.notify.clone(),
            job.progress.clone(),
            job.speed,
        );
        let mut driver = job.driver.take().expect("a new job holds its driver");
        if let Err(e) = driver.install(g) {
            driver.clean(g);
            job.transition(JobStatus::Null, ev);
            return Err(BlockError::new(e));
        }
        job.transition(JobStatus::Running, ev);
        let thread = std::thread::Builder::new()
            .name(format!("job {}", job.id))
            .spawn(move || {
                // job_co_entry: a pause point before the job proper.
                ctl.pause_point();
                let result = driver.run(&mut ctl);
                let id = ctl.id().to_string();
                ctl.send(JobMsg::Done { id, result, driver });
            })
            .map_err(|e| BlockError::new(format!("cannot start the job thread: {e}")))?;
        job.tx = Some(tx);
        job.thread = Some(thread);
        g.block_for_job(id, job.kind.as_str(), nodes);
        self.jobs.push(job);
        Ok(())
    }

    /// A drained section on `node` begins (every node for `None`, QEMU's
    /// `bdrv_drain_all`): each running or ready job on it comes to a
    /// pause point, as `child_job_drained_begin` makes it, and shows it
    /// (paused, or standby when ready). The section is short and on the
    /// owner, so the worker is not told; [`Jobs::drain_end`] with the
    /// returned ids undoes it.
    pub fn drain_begin(
        &mut self,
        node: Option<&Arc<crate::node::Node>>,
        ev: &mut Vec<JobEvent>,
    ) -> Vec<String> {
        let mut ids = Vec::new();
        for j in &mut self.jobs {
            let on = node.is_none_or(|n| j.nodes.iter().any(|m| Arc::ptr_eq(m, n)));
            if !on || j.drain_paused || j.pause_count > 0 {
                continue;
            }
            let to = match j.status {
                JobStatus::Running => JobStatus::Paused,
                JobStatus::Ready => JobStatus::Standby,
                _ => continue,
            };
            j.before_pause = j.status;
            j.drain_paused = true;
            j.transition(to, ev);
            ids.push(j.id.clone());
        }
        ids
    }

    /// The drained section [`Jobs::drain_begin`] opened ends.
    pub fn drain_end(&mut self, ids: &[String], ev: &mut Vec<JobEvent>) {
        for id in ids {
            if let Some(j) = self.find(id) {
                if std::mem::take(&mut j.drain_paused) {
                    let to = j.before_pause;
                    j.transition(to, ev);
                }
            }
        }
    }

    /// A message from a worker.
    pub fn handle(&mut self, msg: JobMsg, g: &mut BlockGraph) -> Vec<JobEvent> {
        let mut ev = Vec::new();
        match msg {
            JobMsg::Parked(id) => {
                if let Some(j) = self.find(&id) {
                    if matches!(j.status, JobStatus::Running | JobStatus::Ready) {
                        j.before_pause = j.status;
                        let to = if j.status == JobStatus::Ready {
                            JobStatus::Standby
                        } else {
                            JobStatus::Paused
                        };
                        j.transition(to, &mut ev);
                    }
                    j.parked = true;
                }
            }
            JobMsg::Unparked(id) => {
                if let Some(j) = self.find(&id) {
                    j.parked = false;
                    if matches!(j.status, JobStatus::Paused | JobStatus::Standby) {
                        let back = j.before_pause;
                        j.transition(back, &mut ev);
                    }
                }
            }
            JobMsg::Ready(id) => {
                if let Some(j) = self.find(&id) {
                    if j.status == JobStatus::Running {
                        j.transition(JobStatus::Ready, &mut ev);
                        ev.push(j.block_event("BLOCK_JOB_READY", None));
                    }
                }
            }
            JobMsg::Error {
                id,
                is_read,
                action,
                errno,
            } => {
                if let Some(j) = self.find(&id) {
                    ev.push(JobEvent {
                        name: "BLOCK_JOB_ERROR",
                        data: json!({
                            "device": j.id,
                            "operation": if is_read { "read" } else { "write" },
                            "action": action.as_str(),
                        }),
                    });
                    if action == ErrorAction::Stop {
                        // The worker paused itself; make it a user pause.
                        if !j.user_paused {
                            j.pause_count += 1;
                            j.user_paused = true;
                        }
                        if j.iostatus == IoStatus::Ok {
                            j.iostatus = if errno == libc::ENOSPC {
                                IoStatus::Nospace
                            } else {
                                IoStatus::Failed
                            };
                        }
                    }
                }
            }
            JobMsg::Done { id, result, driver } => {
                if let Some(i) = self.jobs.iter().position(|j| j.id == id) {
                    let j = &mut self.jobs[i];
                    j.driver = Some(driver);
                    j.deferred = true;
                    j.parked = false;
                    j.tx = None;
                    if let Some(t) = j.thread.take() {
                        let _ = t.join();
                    }
                    if let Err(e) = result {
                        j.error = Some(e);
                    }
                    self.completed(i, g, &mut ev);
                }
            }
        }
        ev
    }

    /// `job_completed_locked` (a job is its own transaction).
    fn completed(&mut self, i: usize, g: &mut BlockGraph, ev: &mut Vec<JobEvent>) {
        let j = &mut self.jobs[i];
        j.update_rc(ev);
        if j.error.is_some() {
            self.finalize_single(i, g, ev);
            return;
        }
        j.transition(JobStatus::Waiting, ev);
        j.transition(JobStatus::Pending, ev);
        if !j.opts.auto_finalize && j.block_job {
            ev.push(JobEvent {
                name: "BLOCK_JOB_PENDING",
                data: json!({ "type": j.kind.as_str(), "id": j.id }),
            });
            return;
        }
        self.do_finalize(i, g, ev);
    }

    /// `job_do_finalize_locked`: prepare, then commit or abort.
    fn do_finalize(&mut self, i: usize, g: &mut BlockGraph, ev: &mut Vec<JobEvent>) {
        let j = &mut self.jobs[i];
        if j.error.is_none() {
            if let Some(d) = j.driver.as_mut() {
                if let Err(e) = d.prepare(g) {
                    j.error = Some(e);
                }
            }
            j.update_rc(ev);
        }
        self.finalize_single(i, g, ev);
    }

    /// `job_finalize_single_locked` and `job_conclude_locked`.
    fn finalize_single(&mut self, i: usize, g: &mut BlockGraph, ev: &mut Vec<JobEvent>) {
        let j = &mut self.jobs[i];
        j.update_rc(ev);
        if let Some(d) = j.driver.as_mut() {
            if j.error.is_some() {
                d.abort(g);
            }
            d.clean(g);
        }
        if !j.block_job {
            // A plain job has no BLOCK_JOB_* events.
        } else if j.force_cancel {
            ev.push(j.block_event("BLOCK_JOB_CANCELLED", None));
        } else {
            let e = j.error.clone();
            ev.push(j.block_event("BLOCK_JOB_COMPLETED", e.as_deref()));
        }
        j.transition(JobStatus::Concluded, ev);
        if j.opts.auto_dismiss {
            self.dismiss_at(i, ev);
        }
    }

    fn dismiss_at(&mut self, i: usize, ev: &mut Vec<JobEvent>) {
        let mut j = self.jobs.remove(i);
        j.transition(JobStatus::Null, ev);
    }

    fn index(&self, id: &str) -> Option<usize> {
        self.jobs.iter().position(|j| j.id == id)
    }

    /// `job_user_pause_locked`.
    pub fn user_pause(&mut self, id: &str) -> Result<(), BlockError> {
        let j = self.find(id).ok_or_else(not_found)?;
        j.verb(JobVerb::Pause)?;
        if j.user_paused {
            return Err(BlockError::new("Job is already paused"));
        }
        j.user_paused = true;
        j.pause();
        Ok(())
    }

    /// `job_user_resume_locked` (with `block_job_user_resume`).
    pub fn user_resume(&mut self, id: &str) -> Result<Vec<JobEvent>, BlockError> {
        let j = self.find(id).ok_or_else(not_found)?;
        if !j.user_paused || j.pause_count == 0 {
            return Err(BlockError::new("Can't resume a job that was not paused"));
        }
        j.verb(JobVerb::Resume)?;
        j.iostatus = IoStatus::Ok;
        j.user_paused = false;
        let mut ev = Vec::new();
        j.resume(&mut ev);
        Ok(ev)
    }

    /// Whether the job is paused by the user (block-job-cancel refuses a
    /// soft cancel then).
    pub fn user_paused(&self, id: &str) -> bool {
        self.jobs.iter().any(|j| j.id == id && j.user_paused)
    }

    /// `job_user_cancel_locked`.
    pub fn user_cancel(
        &mut self,
        id: &str,
        force: bool,
        g: &mut BlockGraph,
    ) -> Result<Vec<JobEvent>, BlockError> {
        let i = self.index(id).ok_or_else(not_found)?;
        let j = &mut self.jobs[i];
        j.verb(JobVerb::Cancel)?;
        let mut ev = Vec::new();
        // job_cancel_async_locked.
        let force = force || !(j.soft_cancel_when_ready && j.ready());
        if j.user_paused {
            j.user_paused = false;
            j.pause_count = j.pause_count.saturating_sub(1);
        }
        if force || !j.deferred {
            j.cancelled = true;
            j.force_cancel |= force;
        }
        if j.deferred {
            // Done already (waiting for finalize): abort now.
            if j.force_cancel {
                self.finalize_single(i, g, &mut ev);
            }
        } else {
            j.send(ToWorker::Cancel { force });
        }
        Ok(ev)
    }

    /// `job_complete_locked`.
    pub fn complete(&mut self, id: &str) -> Result<(), BlockError> {
        let j = self.find(id).ok_or_else(not_found)?;
        j.verb(JobVerb::Complete)?;
        if j.cancelled || !j.completable {
            return Err(BlockError::new(format!(
                "The active block job '{}' cannot be completed",
                j.id
            )));
        }
        j.send(ToWorker::Complete);
        Ok(())
    }

    /// `job_finalize_locked`.
    pub fn finalize(&mut self, id: &str, g: &mut BlockGraph) -> Result<Vec<JobEvent>, BlockError> {
        let i = self.index(id).ok_or_else(not_found)?;
        self.jobs[i].verb(JobVerb::Finalize)?;
        let mut ev = Vec::new();
        self.do_finalize(i, g, &mut ev);
        Ok(ev)
    }

    /// `job_dismiss_locked`.
    pub fn dismiss(&mut self, id: &str) -> Result<Vec<JobEvent>, BlockError> {
        let i = self.index(id).ok_or_else(not_found)?;
        self.jobs[i].verb(JobVerb::Dismiss)?;
        let mut ev = Vec::new();
        self.dismiss_at(i, &mut ev);
        Ok(ev)
    }

    /// `block_job_set_speed_locked`.
    pub fn set_speed(&mut self, id: &str, speed: i64) -> Result<(), BlockError> {
        let j = self.find(id).ok_or_else(not_found)?;
        j.verb(JobVerb::SetSpeed)?;
        if speed < 0 {
            return Err(BlockError::new(
                "Parameter 'speed' expects a non-negative value",
            ));
        }
        j.speed = speed as u64;
        j.send(ToWorker::SetSpeed(speed as u64));
        Ok(())
    }

    /// `query-jobs` (`JobInfo`).
    pub fn query_jobs(&self) -> Value {
        // QEMU's job list takes new jobs at its head: newest first.
        Value::Array(
            self.jobs
                .iter()
                .rev()
                .map(|j| {
                    let (cur, total) = j.progress_fields();
                    let mut v = json!({
                        "id": j.id,
                        "type": j.kind.as_str(),
                        "status": j.status.as_str(),
                        "current-progress": cur,
                        "total-progress": total,
                    });
                    if let Some(e) = &j.error {
                        v["error"] = e.clone().into();
                    }
                    v
                })
                .collect(),
        )
    }

    /// `query-block-jobs` (`BlockJobInfo`).
    pub fn query_block_jobs(&self) -> Value {
        Value::Array(
            self.jobs
                .iter()
                .rev()
                .filter(|j| j.block_job)
                .map(|j| {
                    let (cur, total) = j.progress_fields();
                    let busy = !j.deferred && !j.parked && j.status != JobStatus::Created;
                    let mut v = json!({
                        "auto-finalize": j.opts.auto_finalize,
                        "io-status": j.iostatus.as_str(),
                        "device": j.id,
                        "auto-dismiss": j.opts.auto_dismiss,
                        "busy": busy,
                        "len": total,
                        "offset": cur,
                        "status": j.status.as_str(),
                        "paused": j.pause_count > 0,
                        "speed": j.speed,
                        "ready": j.ready(),
                        "type": j.kind.as_str(),
                    });
                    if let Some(e) = &j.error {
                        v["error"] = e.clone().into();
                    }
                    v
                })
                .collect(),
        )
    }

    /// `job_cancel_sync_all` at exit: every worker is stopped and its
    /// driver's abort and clean run, so the images close consistent.
    pub fn cancel_all_sync(&mut self, g: &mut BlockGraph) {
        for j in &mut self.jobs {
            j.force_cancel = true;
            j.cancelled = true;
            j.send(ToWorker::Cancel { force: true });
            j.tx = None;
            if let Some(t) = j.thread.take() {
                let _ = t.join();
            }
        }
        // The drivers come back in Done messages the owner no longer reads.
        self.jobs.clear();
        let _ = g;
    }
}

fn not_found() -> BlockError {
    BlockError::new("Job not found")
}
