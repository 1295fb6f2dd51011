//! Quiescing the exports for a drained section (QEMU's `nbd_drained_begin`
//! / `nbd_drained_poll` / `nbd_drained_end`): while the owner changes the
//! graph (a job's filter in the route, a snapshot's new overlay), no
//! export request is in flight and none starts.

use std::sync::{Condvar, Mutex, MutexGuard};

#[derive(Default)]
struct State {
    /// Nested drained sections.
    drained: u32,
    /// Requests running.
    active: usize,
}

#[derive(Default)]
pub struct Gate {
    st: Mutex<State>,
    cv: Condvar,
}

/// A request's pass through the gate; leaving drops it.
pub struct Pass<'a>(&'a Gate);

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        st.active -= 1;
        if st.active == 0 {
            self.0.cv.notify_all();
        }
    }
}

impl Gate {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits while drained, then counts a request in.
    pub fn enter(&self) -> Pass<'_> {
        let mut st = self.lock();
        while st.drained > 0 {
            st = self.cv.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        st.active += 1;
        Pass(self)
    }

    /// Runs `f` with no request in flight and none starting.
    pub fn drained<T>(&self, f: impl FnOnce() -> T) -> T {
        {
            let mut st = self.lock();
            st.drained += 1;
            while st.active > 0 {
                st = self.cv.wait(st).unwrap_or_else(|e| e.into_inner());
            }
        }
        let r = f();
        let mut st = self.lock();
        st.drained -= 1;
        if st.drained == 0 {
            self.cv.notify_all();
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    #[test]
    fn drained_waits_for_requests_and_holds_new_ones() {
        let g = Arc::new(Gate::default());
        let in_drain = Arc::new(AtomicBool::new(false));
        let p = g.enter();
        let (g2, d2) = (g.clone(), in_drain.clone());
        let t = std::thread::spawn(move || g2.drained(|| d2.store(true, Ordering::SeqCst)));
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!in_drain.load(Ordering::SeqCst));
        drop(p);
        t.join().unwrap();
        assert!(in_drain.load(Ordering::SeqCst));
        drop(g.enter());
    }
}
