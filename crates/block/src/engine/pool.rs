//! The process-wide I/O thread pool (QEMU util/thread-pool.c): workers are
//! started on demand up to [`MAX_THREADS`] and run blocking syscalls, so
//! neither vCPU threads nor the main loop ever wait on the disk.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, OnceLock};

/// QEMU's default `thread-pool-max`.
pub const MAX_THREADS: usize = 64;

type Job = Box<dyn FnOnce() + Send>;

struct State {
    jobs: VecDeque<Job>,
    idle: usize,
    threads: usize,
}

pub struct Pool {
    st: Mutex<State>,
    cv: Condvar,
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
    })
}

impl Pool {
    pub fn run(&'static self, job: Job) {
        let mut st = self.st.lock().unwrap_or_else(|e| e.into_inner());
        st.jobs.push_back(job);
        if st.idle < st.jobs.len() && st.threads < MAX_THREADS {
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
                drop(st);
                job();
                st = self.st.lock().unwrap_or_else(|e| e.into_inner());
                continue;
            }
            st.idle += 1;
            st = self.cv.wait(st).unwrap_or_else(|e| e.into_inner());
            st.idle -= 1;
        }
    }
}
