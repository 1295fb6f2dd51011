//! QEMU's job state machine as data (job.c `JobSTT` and `JobVerbTable`,
//! qapi/job.json `JobStatus` and `JobVerb`): which status may follow
//! which, and which command verb each status accepts.

/// qapi/job.json `JobStatus`, in QEMU's order (the tables' index).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    Undefined,
    Created,
    Running,
    Paused,
    Ready,
    Standby,
    Waiting,
    Pending,
    Aborting,
    Concluded,
    Null,
}

/// qapi/job.json `JobVerb`, in QEMU's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobVerb {
    Cancel,
    Pause,
    Resume,
    SetSpeed,
    Complete,
    Dismiss,
    Finalize,
}

use JobStatus as S;

const STATUSES: [JobStatus; 11] = [
    S::Undefined,
    S::Created,
    S::Running,
    S::Paused,
    S::Ready,
    S::Standby,
    S::Waiting,
    S::Pending,
    S::Aborting,
    S::Concluded,
    S::Null,
];

/// `JobSTT[from][to]`: columns U, C, R, P, Y, S, W, D, X, E, N.
const TRANSITIONS: [[u8; 11]; 11] = [
    /* U */ [0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    /* C */ [0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 1],
    /* R */ [0, 0, 0, 1, 1, 0, 1, 0, 1, 0, 0],
    /* P */ [0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0],
    /* Y */ [0, 0, 0, 0, 0, 1, 1, 0, 1, 0, 0],
    /* S */ [0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0],
    /* W */ [0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0],
    /* D */ [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0],
    /* X */ [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0],
    /* E */ [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
    /* N */ [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
];

/// `JobVerbTable[verb][status]`: columns U, C, R, P, Y, S, W, D, X, E, N.
const VERBS: [[u8; 11]; 7] = [
    /* cancel    */ [0, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
    /* pause     */ [0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0],
    /* resume    */ [0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0],
    /* set-speed */ [0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0],
    /* complete  */ [0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0],
    /* dismiss   */ [0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0],
    /* finalize  */ [0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0],
];

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            S::Undefined => "undefined",
            S::Created => "created",
            S::Running => "running",
            S::Paused => "paused",
            S::Ready => "ready",
            S::Standby => "standby",
            S::Waiting => "waiting",
            S::Pending => "pending",
            S::Aborting => "aborting",
            S::Concluded => "concluded",
            S::Null => "null",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// `JobSTT[self][to]`.
    pub fn may_become(self, to: JobStatus) -> bool {
        TRANSITIONS[self.index()][to.index()] == 1
    }

    /// `job_is_completed_locked`: the job's run is over.
    pub fn is_completed(self) -> bool {
        matches!(
            self,
            S::Waiting | S::Pending | S::Aborting | S::Concluded | S::Null
        )
    }

    /// Every status, in QEMU's order.
    pub fn all() -> &'static [JobStatus] {
        &STATUSES
    }
}

impl JobVerb {
    pub fn as_str(self) -> &'static str {
        match self {
            JobVerb::Cancel => "cancel",
            JobVerb::Pause => "pause",
            JobVerb::Resume => "resume",
            JobVerb::SetSpeed => "set-speed",
            JobVerb::Complete => "complete",
            JobVerb::Dismiss => "dismiss",
            JobVerb::Finalize => "finalize",
        }
    }

    /// `JobVerbTable[self][status]`.
    pub fn allowed_in(self, status: JobStatus) -> bool {
        VERBS[self as usize][status.index()] == 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The qapi/job.json documentation of each status, read as the set of
    /// statuses that may follow it (an independent transcription of the
    /// life cycle the tables encode).
    #[test]
    fn transitions_follow_the_documented_life_cycle() {
        let next: &[(JobStatus, &[JobStatus])] = &[
            (S::Undefined, &[S::Created]),
            (S::Created, &[S::Running, S::Aborting, S::Null]),
            (S::Running, &[S::Paused, S::Ready, S::Waiting, S::Aborting]),
            (S::Paused, &[S::Running]),
            (S::Ready, &[S::Standby, S::Waiting, S::Aborting]),
            (S::Standby, &[S::Ready]),
            (S::Waiting, &[S::Pending, S::Aborting]),
            (S::Pending, &[S::Aborting, S::Concluded]),
            (S::Aborting, &[S::Aborting, S::Concluded]),
            (S::Concluded, &[S::Null]),
            (S::Null, &[]),
        ];
        for (from, tos) in next {
            for to in JobStatus::all() {
                assert_eq!(from.may_become(*to), tos.contains(to), "{from:?} -> {to:?}");
            }
        }
    }

    /// Which verbs a client may send in each status (qapi/job.json
    /// `JobVerb`: cancel until the job is aborting; pause, resume and
    /// set-speed while it can still run; complete only when ready or on
    /// standby; finalize when pending; dismiss when concluded).
    #[test]
    fn verbs_per_status() {
        let ok: &[(JobVerb, &[JobStatus])] = &[
            (
                JobVerb::Cancel,
                &[
                    S::Created,
                    S::Running,
                    S::Paused,
                    S::Ready,
                    S::Standby,
                    S::Waiting,
                    S::Pending,
                ],
            ),
            (
                JobVerb::Pause,
                &[S::Created, S::Running, S::Paused, S::Ready, S::Standby],
            ),
            (
                JobVerb::Resume,
                &[S::Created, S::Running, S::Paused, S::Ready, S::Standby],
            ),
            (
                JobVerb::SetSpeed,
                &[S::Created, S::Running, S::Paused, S::Ready, S::Standby],
            ),
            (JobVerb::Complete, &[S::Ready, S::Standby]),
            (JobVerb::Dismiss, &[S::Concluded]),
            (JobVerb::Finalize, &[S::Pending]),
        ];
        for (verb, statuses) in ok {
            for s in JobStatus::all() {
                assert_eq!(
                    verb.allowed_in(*s),
                    statuses.contains(s),
                    "{verb:?} in {s:?}"
                );
            }
        }
    }

    #[test]
    fn names_are_qapis() {
        let names: Vec<&str> = JobStatus::all().iter().map(|s| s.as_str()).collect();
        assert_eq!(
            names.join(","),
            "undefined,created,running,paused,ready,standby,waiting,pending,aborting,concluded,null"
        );
    }
}
