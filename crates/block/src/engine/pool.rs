//! The process-wide I/O thread pool (QEMU util/thread-pool.c): workers are
//! started on demand up to [`MAX_THREADS`] and run blocking syscalls, so
//! neither vCPU threads nor the main loop ever wait on the disk.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// QEMU's default `thread-pool-max`.
pub const MAX_THREADS: usize = 64;

/// A worker that just finished a job looks for the next one this long
/// before it sleeps: under nested KVM a sleeping thread costs a cross-CPU
/// wake-up per request, and a guest at queue depth 1 sends the next
/// request a few tens of microseconds after the last completion (the
/// backend thread polls the same way, see `POLL_WINDOW` there).
const SPIN: Duration = Duration::from_micros(50);

type Job = Box<dyn FnOnce() + Send>;

struct State {
    jobs: VecDeque<Job>,
    idle: usize,
    threads: usize,
}

pub struct Pool {
    st: Mutex<State>,
    cv: Condvar,
    /// `st.jobs.len()`, readable without the lock by spinning workers.
    queued: AtomicUsize,
    /// Workers spinning for a job (counted as available by `run`).
    spinning: AtomicUsize,
}

pub fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| Pool {
        st: Mutex::new(State {
            jobs: VecDeque::new(),
            idle: 0,
            threads: 0,
        }),
        cv: Condvar::new(),
        queued: AtomicUsize::new(0),
        spinning: AtomicUsize::new(0),
    })
}

impl Pool {
    pub fn run(&'static self, job: Job) {
        let mut st = self.st.lock().unwrap_or_else(|e| e.into_inner());
        st.jobs.push_back(job);
        self.queued.store(st.jobs.len(), Ordering::Release);
        let available = st.idle + self.spinning.load(Ordering::Acquire);
        if available < st.jobs.len() && st.threads < MAX_THREADS {
            let ok = std::thread::Builder::new()
                .name("block-io".into())
                .spawn(move || self.worker())
                .is_ok();
            if ok {
                st.threads += 1;
            }
        }
        drop(st);
        self.cv.notify_one();
    }

    fn worker(&'static self) {
        let mut st = self.st.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(job) = st.jobs.pop_front() {
                self.queued.store(st.jobs.len(), Ordering::Release);
                drop(st);
                job();
                self.spin_for_work();
                st = self.st.lock().unwrap_or_else(|e| e.into_inner());
                continue;
            }
            st.idle += 1;
            st = self.cv.wait(st).unwrap_or_else(|e| e.into_inner());
            st.idle -= 1;
        }
    }

    /// Spins up to [`SPIN`] until a job is queued.
    fn spin_for_work(&self) {
        self.spinning.fetch_add(1, Ordering::AcqRel);
        let until = Instant::now() + SPIN;
        while self.queued.load(Ordering::Acquire) == 0 && Instant::now() < until {
            std::hint::spin_loop();
        }
        self.spinning.fetch_sub(1, Ordering::AcqRel);
    }
}
