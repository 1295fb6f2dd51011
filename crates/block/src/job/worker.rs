//! A job's worker thread and what it says to the job's owner (QEMU runs a
//! job as a coroutine; ferrovm gives it a thread, so it runs on while the
//! main loop serves monitors and the VM is stopped).
//!
//! The owner ([`super::Jobs`], on the main thread) holds the job's status;
//! the worker only does I/O. They talk through typed messages: [`ToWorker`]
//! down (pause, resume, cancel, speed, complete), [`JobMsg`] up (parked at
//! a pause point, running again, ready, an I/O error, done).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::ratelimit::RateLimit;
use super::{JobDriver, OnJobError};
use crate::io::ErrorAction;

/// The owner's requests to a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ToWorker {
    /// The pause count went from 0 to 1: park at the next pause point.
    Pause,
    /// The pause count went back to 0.
    Resume,
    /// `force`: stop copying now (a soft cancel of a ready mirror
    /// completes without pivoting instead).
    Cancel {
        force: bool,
    },
    SetSpeed(u64),
    /// `job-complete` on a ready job.
    Complete,
}

/// What a worker tells the owner, by job id.
pub enum JobMsg {
    /// Parked at a pause point (status paused, or standby when ready).
    Parked(String),
    /// Left the pause point.
    Unparked(String),
    /// The copy has converged (`job_transition_to_ready`).
    Ready(String),
    /// An I/O error and the action `on-error` chose (`block_job_error_action`).
    Error {
        id: String,
        is_read: bool,
        action: ErrorAction,
        errno: i32,
    },
    /// `run` returned; the driver comes back to the owner for finalizing.
    Done {
        id: String,
        result: Result<(), String>,
        driver: Box<dyn JobDriver>,
    },
}

impl std::fmt::Debug for JobMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JobMsg::Parked(id) => write!(f, "Parked({id})"),
            JobMsg::Unparked(id) => write!(f, "Unparked({id})"),
            JobMsg::Ready(id) => write!(f, "Ready({id})"),
            JobMsg::Error { id, action, .. } => write!(f, "Error({id}, {action:?})"),
            JobMsg::Done { id, result, .. } => write!(f, "Done({id}, {result:?})"),
        }
    }
}

/// How a worker reaches the owner (the VMM wraps its control channel).
pub type Notify = Arc<dyn Fn(JobMsg) + Send + Sync>;

/// `job->progress`: written by the worker, read by the owner's queries.
#[derive(Debug, Default)]
pub struct Progress {
    current: AtomicU64,
    total: AtomicU64,
}

impl Progress {
    /// (current, total), as `progress_get_snapshot`.
    pub fn snapshot(&self) -> (u64, u64) {
        (
            self.current.load(Ordering::Relaxed),
            self.total.load(Ordering::Relaxed),
        )
    }

    /// Work done off the worker (a backup's copy-before-write filter).
    pub(crate) fn add_current(&self, n: u64) {
        self.current.fetch_add(n, Ordering::Relaxed);
    }
}

/// The worker's side of a job: pause points, sleeping under the speed
/// limit, progress, and the error policy.
pub struct JobCtl {
    id: String,
    rx: Receiver<ToWorker>,
    notify: Notify,
    progress: Arc<Progress>,
    limit: RateLimit,
    want_pause: bool,
    /// Paused by an error with action `stop`, until the owner resumes it.
    error_paused: bool,
    cancelled: bool,
    force_cancel: bool,
    complete_requested: bool,
}

impl JobCtl {
    pub(crate) fn new(
        id: String,
        rx: Receiver<ToWorker>,
        notify: Notify,
        progress: Arc<Progress>,
        speed: u64,
    ) -> Self {
        JobCtl {
            id,
            rx,
            notify,
            progress,
            limit: RateLimit::new(speed),
            want_pause: false,
            error_paused: false,
            cancelled: false,
            force_cancel: false,
            complete_requested: false,
        }
    }

    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    pub(crate) fn send(&self, m: JobMsg) {
        (self.notify)(m)
    }

    fn take(&mut self, m: ToWorker) {
        match m {
            ToWorker::Pause => self.want_pause = true,
            ToWorker::Resume => {
                self.want_pause = false;
                self.error_paused = false;
            }
            ToWorker::Cancel { force } => {
                self.cancelled = true;
                self.force_cancel |= force;
                // job_cancel_async: a user pause ends with the cancel.
                self.want_pause = false;
                self.error_paused = false;
            }
            ToWorker::SetSpeed(s) => self.limit.set_speed(s),
            ToWorker::Complete => self.complete_requested = true,
        }
    }

    fn drain(&mut self) {
        while let Ok(m) = self.rx.try_recv() {
            self.take(m);
        }
    }

    /// `job_is_cancelled`: a forced cancel (the job stops as it can).
    pub fn is_cancelled(&mut self) -> bool {
        self.drain();
        self.force_cancel
    }

    /// Any cancel, soft ones included (`job_cancel_requested`).
    pub fn cancel_requested(&mut self) -> bool {
        self.drain();
        self.cancelled
    }

    /// `job-complete` arrived since the last call.
    pub fn take_complete(&mut self) -> bool {
        self.drain();
        std::mem::take(&mut self.complete_requested)
    }

    fn should_pause(&self) -> bool {
        (self.want_pause || self.error_paused) && !self.force_cancel
    }

    /// `job_pause_point`: parks while the owner wants the job paused.
    pub fn pause_point(&mut self) {
        self.drain();
        if !self.should_pause() {
            return;
        }
        self.send(JobMsg::Parked(self.id.clone()));
        while self.should_pause() {
            match self.rx.recv() {
                Ok(m) => self.take(m),
                // The owner is gone: the process is exiting.
                Err(_) => {
                    self.force_cancel = true;
                    self.cancelled = true;
                }
            }
        }
        self.send(JobMsg::Unparked(self.id.clone()));
    }

    /// `job_sleep_ns`: waits `d` (a cancel or any request cuts it short),
    /// then a pause point.
    pub fn sleep(&mut self, d: Duration) {
        let end = Instant::now() + d;
        while !self.force_cancel && !self.should_pause() {
            let now = Instant::now();
            if now >= end {
                break;
            }
            match self.rx.recv_timeout(end - now) {
                // job_enter: set-speed, a cancel and job-complete wake a
                // job sleeping on its rate limit, so a new speed (or the
                // request) takes effect at once rather than after a delay
                // the old speed computed.
                Ok(m @ (ToWorker::SetSpeed(_) | ToWorker::Cancel { .. } | ToWorker::Complete)) => {
                    self.take(m);
                    break;
                }
                Ok(m) => self.take(m),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => {
                    self.force_cancel = true;
                    self.cancelled = true;
                }
            }
        }
        self.pause_point();
    }

    /// `job_yield`: waits for any request (a ready job waiting for
    /// `job-complete` or a cancel), then a pause point.
    pub fn wait_for_request(&mut self, poll: Duration) {
        if self.force_cancel || self.cancelled {
            return;
        }
        match self.rx.recv_timeout(poll) {
            Ok(m) => self.take(m),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                self.force_cancel = true;
                self.cancelled = true;
            }
        }
        self.pause_point();
    }

    /// `block_job_ratelimit_get_delay`.
    pub fn rate_delay(&mut self, n: u64) -> Duration {
        self.limit.delay(n, Instant::now())
    }

    pub fn set_remaining(&self, n: u64) {
        let cur = self.progress.current.load(Ordering::Relaxed);
        self.progress.total.store(cur + n, Ordering::Relaxed);
    }

    pub fn add_remaining(&self, n: u64) {
        self.progress.total.fetch_add(n, Ordering::Relaxed);
    }

    /// The progress meter, for work done on other threads.
    pub(crate) fn meter(&self) -> Arc<Progress> {
        self.progress.clone()
    }

    pub fn progress(&self, n: u64) {
        self.progress.current.fetch_add(n, Ordering::Relaxed);
    }

    /// `job_transition_to_ready`.
    pub fn ready(&self) {
        self.send(JobMsg::Ready(self.id.clone()));
    }

    /// `block_job_error_action`: the action `on-error` takes for `errno`;
    /// with `stop` the job pauses at its next pause point until resumed.
    pub fn error_action(&mut self, on_err: OnJobError, is_read: bool, errno: i32) -> ErrorAction {
        let action = match on_err {
            OnJobError::Enospc | OnJobError::Auto if errno == libc::ENOSPC => ErrorAction::Stop,
            OnJobError::Enospc | OnJobError::Auto | OnJobError::Report => ErrorAction::Report,
            OnJobError::Stop => ErrorAction::Stop,
            OnJobError::Ignore => ErrorAction::Ignore,
        };
        if action == ErrorAction::Stop {
            self.error_paused = true;
        }
        self.send(JobMsg::Error {
            id: self.id.clone(),
            is_read,
            action,
            errno,
        });
        action
    }
}
