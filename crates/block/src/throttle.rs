//! I/O throttling of BlockBackends (`block_set_io_throttle`, `-drive
//! throttling.*`): QEMU 7.2's leaky buckets (util/throttle.c), their checks
//! (`throttle_is_valid`) and throttle groups (block/throttle-groups.c).
//!
//! Backends that name the same group share one set of buckets, so their
//! combined I/O is limited. Each member's reads and writes wait in two
//! queues, each in order. A request goes at once while nothing of its
//! direction waits anywhere in the group and no bucket it counts in is
//! over its size; otherwise it waits for the group's scheduler thread,
//! which wakes when the buckets have leaked enough (QEMU's throttle timers)
//! and serves the waiting members round-robin. Queued requests count as in
//! flight, so a drain waits for them.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::error::BlockError;

/// QEMU's `THROTTLE_VALUE_MAX`.
const VALUE_MAX: u64 = 1_000_000_000_000_000;

/// QEMU's `BucketType` order.
const BPS_TOTAL: usize = 0;
const BPS_READ: usize = 1;
const BPS_WRITE: usize = 2;
const OPS_TOTAL: usize = 3;
const OPS_READ: usize = 4;
const OPS_WRITE: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    /// Units per second (bytes or operations); 0: no limit.
    pub avg: u64,
    /// Burst rate; 0: none.
    pub max: u64,
    /// Seconds a burst at `max` may last.
    pub burst_length: u64,
    level: f64,
    burst_level: f64,
}

impl Default for Bucket {
    fn default() -> Self {
        Bucket {
            avg: 0,
            max: 0,
            burst_length: 1,
            level: 0.0,
            burst_level: 0.0,
        }
    }
}

impl Bucket {
    /// `throttle_leak_bucket`.
    fn leak(&mut self, delta: Duration) {
        let s = delta.as_secs_f64();
        self.level = (self.level - self.avg as f64 * s).max(0.0);
        if self.burst_length > 1 {
            self.burst_level = (self.burst_level - self.max as f64 * s).max(0.0);
        }
    }

    /// `throttle_compute_wait`: how long until this bucket lets I/O pass.
    fn wait(&self) -> Duration {
        if self.avg == 0 {
            return Duration::ZERO;
        }
        let (size, burst_size) = if self.max == 0 {
            (self.avg as f64 / 10.0, 0.0)
        } else {
            (
                (self.max * self.burst_length) as f64,
                self.max as f64 / 10.0,
            )
        };
        let extra = self.level - size;
        if extra > 0.0 {
            return Duration::from_secs_f64(extra / self.avg as f64);
        }
        if self.burst_length > 1 {
            let extra = self.burst_level - burst_size;
            if extra > 0.0 {
                return Duration::from_secs_f64(extra / self.max as f64);
            }
        }
        Duration::ZERO
    }
}

/// The limits `block_set_io_throttle` sets (QEMU's ThrottleConfig).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ThrottleConfig {
    /// bps, bps_rd, bps_wr, iops, iops_rd, iops_wr.
    pub buckets: [Bucket; 6],
    /// `iops_size`: bytes one operation counts as at most.
    pub op_size: u64,
}

/// The names QMP gives the buckets, in [`ThrottleConfig::buckets`] order.
pub const BUCKET_NAMES: [&str; 6] = ["bps", "bps_rd", "bps_wr", "iops", "iops_rd", "iops_wr"];

impl ThrottleConfig {
    /// Any limit set (`throttle_enabled`).
    pub fn enabled(&self) -> bool {
        self.buckets.iter().any(|b| b.avg > 0)
    }

    /// `throttle_is_valid`, with QEMU's messages.
    pub fn validate(&self) -> Result<(), BlockError> {
        let b = &self.buckets;
        let both = |t: usize, r: usize, w: usize, f: fn(&Bucket) -> u64| {
            f(&b[t]) != 0 && (f(&b[r]) != 0 || f(&b[w]) != 0)
        };
        if both(BPS_TOTAL, BPS_READ, BPS_WRITE, |x| x.avg)
            || both(OPS_TOTAL, OPS_READ, OPS_WRITE, |x| x.avg)
            || both(BPS_TOTAL, BPS_READ, BPS_WRITE, |x| x.max)
            || both(OPS_TOTAL, OPS_READ, OPS_WRITE, |x| x.max)
        {
            return Err(BlockError::new(
                "bps/iops/max total values and read/write values cannot be used at the same time",
            ));
        }
        if self.op_size != 0
            && b[OPS_TOTAL].avg == 0
            && b[OPS_READ].avg == 0
            && b[OPS_WRITE].avg == 0
        {
            return Err(BlockError::new(
                "iops size requires an iops value to be set",
            ));
        }
        for k in b {
            if k.avg > VALUE_MAX || k.max > VALUE_MAX {
                return Err(BlockError::new(format!(
                    "bps/iops/max values must be within [0, {VALUE_MAX}]"
                )));
            }
            if k.burst_length == 0 {
                return Err(BlockError::new("the burst length cannot be 0"));
            }
            if k.burst_length > 1 && k.max == 0 {
                return Err(BlockError::new("burst length set without burst rate"));
            }
            if k.max != 0 && k.burst_length > VALUE_MAX / k.max {
                return Err(BlockError::new("burst length too high for this burst rate"));
            }
            if k.max != 0 && k.avg == 0 {
                return Err(BlockError::new(
                    "bps_max/iops_max require corresponding bps/iops values",
                ));
            }
            if k.max != 0 && k.max < k.avg {
                return Err(BlockError::new(
                    "bps_max/iops_max cannot be lower than bps/iops",
                ));
            }
        }
        Ok(())
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// One member's waiting requests: reads, writes.
struct Member {
    id: u64,
    queues: [VecDeque<(u64, Job)>; 2],
}

struct State {
    cfg: ThrottleConfig,
    previous_leak: Instant,
    members: Vec<Member>,
    /// The member served last in each direction (QEMU's `tokens`): the
    /// scheduler goes on from the one after it.
    tokens: [u64; 2],
    stop: bool,
}

impl State {
    fn leak(&mut self, now: Instant) {
        let delta = now.saturating_duration_since(self.previous_leak);
        self.previous_leak = now;
        for b in &mut self.cfg.buckets {
            b.leak(delta);
        }
    }

    /// `throttle_compute_wait_for`: the buckets a request of this
    /// direction counts in.
    fn wait(&self, write: bool) -> Duration {
        let dir = if write {
            [BPS_WRITE, OPS_WRITE]
        } else {
            [BPS_READ, OPS_READ]
        };
        [BPS_TOTAL, OPS_TOTAL, dir[0], dir[1]]
            .iter()
            .map(|&i| self.cfg.buckets[i].wait())
            .max()
            .unwrap_or(Duration::ZERO)
    }

    /// `throttle_account`.
    fn account(&mut self, write: bool, bytes: u64) {
        let units = if self.cfg.op_size != 0 && bytes > self.cfg.op_size {
            bytes as f64 / self.cfg.op_size as f64
        } else {
            1.0
        };
        let (b, o) = if write {
            (BPS_WRITE, OPS_WRITE)
        } else {
            (BPS_READ, OPS_READ)
        };
        for (i, n) in [
            (BPS_TOTAL, bytes as f64),
            (b, bytes as f64),
            (OPS_TOTAL, units),
            (o, units),
        ] {
            let k = &mut self.cfg.buckets[i];
            k.level += n;
            if k.burst_length > 1 {
                k.burst_level += n;
            }
        }
    }

    fn pending(&self, q: usize) -> bool {
        self.members.iter().any(|m| !m.queues[q].is_empty())
    }

    /// `next_throttle_token`: the first member after the last one served
    /// that has a request waiting in this direction.
    fn next_token(&self, q: usize) -> Option<usize> {
        let n = self.members.len();
        let last = self
            .members
            .iter()
            .position(|m| m.id == self.tokens[q])
            .unwrap_or(n.saturating_sub(1));
        (1..=n)
            .map(|i| (last + i) % n)
            .find(|&i| !self.members[i].queues[q].is_empty())
    }
}

struct Group {
    name: String,
    st: Mutex<State>,
    cv: Condvar,
}

impl Group {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Every group by name (QEMU's global `throttle_groups` list). A group
/// lives while it has members; its scheduler thread ends with the last.
fn registry() -> std::sync::MutexGuard<'static, Vec<Arc<Group>>> {
    static GROUPS: Mutex<Vec<Arc<Group>>> = Mutex::new(Vec::new());
    GROUPS.lock().unwrap_or_else(|e| e.into_inner())
}

/// A backend's membership of a throttle group (QEMU's
/// ThrottleGroupMember): the group's buckets limit the combined I/O of
/// all members, and the scheduler serves waiting members round-robin.
pub struct Throttle {
    group: Arc<Group>,
    id: u64,
}

impl Throttle {
    /// `throttle_group_register_tgm`: joins the group `name`, creating it
    /// (without limits) if it does not exist.
    pub fn join(name: &str) -> std::io::Result<Self> {
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let member = || Member {
            id,
            queues: [VecDeque::new(), VecDeque::new()],
        };
        let mut reg = registry();
        if let Some(g) = reg.iter().find(|g| g.name == name) {
            let mut st = g.state();
            if !st.stop {
                st.members.push(member());
                drop(st);
                return Ok(Self {
                    group: g.clone(),
                    id,
                });
            }
        }
        let group = Arc::new(Group {
            name: name.to_string(),
            st: Mutex::new(State {
                cfg: ThrottleConfig::default(),
                previous_leak: Instant::now(),
                members: vec![member()],
                tokens: [id; 2],
                stop: false,
            }),
            cv: Condvar::new(),
        });
        let g = group.clone();
        std::thread::Builder::new()
            .name("block-throttle".into())
            .spawn(move || scheduler(&g))?;
        reg.retain(|g| g.name != name);
        reg.push(group.clone());
        Ok(Self { group, id })
    }

    /// `throttle_group_obj_complete`: a new group `name` with `cfg`, this
    /// membership holding it (the object's own reference); QEMU's error if
    /// a group of that name exists.
    pub fn create(name: &str, cfg: ThrottleConfig) -> Result<Self, BlockError> {
        if group_exists(name) {
            return Err(BlockError::new("A group with this name already exists"));
        }
        let t = Self::join(name).map_err(|e| BlockError::new(e.to_string()))?;
        t.set_config(cfg);
        Ok(t)
    }

    /// How many members the group has (QEMU counts them as references).
    pub fn members(&self) -> usize {
        self.group.state().members.len()
    }

    /// The group's name (`group` in query-block).
    pub fn group_name(&self) -> &str {
        &self.group.name
    }

    /// The group's limits (without the bucket levels' history).
    pub fn config(&self) -> ThrottleConfig {
        self.group.state().cfg.clone()
    }

    /// `throttle_group_config`: new limits for the whole group, with empty
    /// buckets (QEMU's `throttle_config` zeroes the levels).
    pub fn set_config(&self, cfg: ThrottleConfig) {
        let mut st = self.group.state();
        st.cfg = cfg;
        st.previous_leak = Instant::now();
        drop(st);
        self.group.cv.notify_all();
    }

    /// Runs `job` (which starts the request) now or once the limits allow:
    /// at once only while nothing of this direction waits in the group
    /// (QEMU: no member's timer armed) and the buckets have room.
    pub fn submit(&self, write: bool, bytes: u64, job: Job) {
        let mut st = self.group.state();
        st.leak(Instant::now());
        let q = usize::from(write);
        if !st.pending(q) && st.wait(write).is_zero() {
            st.account(write, bytes);
            drop(st);
            job();
            return;
        }
        let id = self.id;
        if let Some(m) = st.members.iter_mut().find(|m| m.id == id) {
            m.queues[q].push_back((bytes, job));
        }
        drop(st);
        self.group.cv.notify_all();
    }
}

impl Drop for Throttle {
    /// `blk_io_limits_disable`: what this member still has waiting goes
    /// at once, and it leaves the group; the last member ends the group.
    fn drop(&mut self) {
        let (jobs, last) = {
            let mut st = self.group.state();
            let mut v = Vec::new();
            if let Some(i) = st.members.iter().position(|m| m.id == self.id) {
                let mut m = st.members.remove(i);
                for q in &mut m.queues {
                    v.extend(q.drain(..).map(|(_, j)| j));
                }
            }
            let last = st.members.is_empty();
            st.stop |= last;
            (v, last)
        };
        self.group.cv.notify_all();
        if last {
            registry().retain(|g| !Arc::ptr_eq(g, &self.group));
        }
        for j in jobs {
            j();
        }
    }
}

/// `throttle_group_exists`: a group of this name exists (a
/// `throttle-group` object's or one a drive's `throttling.group` made).
pub fn group_exists(name: &str) -> bool {
    registry().iter().any(|g| g.name == name && !g.state().stop)
}

/// The names of the groups that exist (for tests).
pub fn group_names() -> Vec<String> {
    registry().iter().map(|g| g.name.clone()).collect()
}

/// The group's scheduler (QEMU's per-direction throttle timers): starts
/// waiting requests round-robin across members as the buckets leak.
fn scheduler(group: &Group) {
    let mut st = group.state();
    loop {
        if st.stop {
            return;
        }
        st.leak(Instant::now());
        let mut ready = Vec::new();
        let mut sleep: Option<Duration> = None;
        for write in [false, true] {
            let q = usize::from(write);
            while let Some(i) = st.next_token(q) {
                let w = st.wait(write);
                if !w.is_zero() {
                    sleep = Some(sleep.map_or(w, |s| s.min(w)));
                    break;
                }
                let m = &mut st.members[i];
                let id = m.id;
                if let Some((bytes, job)) = m.queues[q].pop_front() {
                    st.account(write, bytes);
                    st.tokens[q] = id;
                    ready.push(job);
                }
            }
        }
        if !ready.is_empty() {
            drop(st);
            for j in ready {
                j();
            }
            st = group.state();
            continue;
        }
        st = match sleep {
            Some(d) => {
                group
                    .cv
                    .wait_timeout(st, d)
                    .unwrap_or_else(|e| e.into_inner())
                    .0
            }
            None => group.cv.wait(st).unwrap_or_else(|e| e.into_inner()),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(pairs: &[(usize, u64)]) -> ThrottleConfig {
        let mut c = ThrottleConfig::default();
        for &(i, v) in pairs {
            c.buckets[i].avg = v;
        }
        c
    }

    /// QEMU 7.2's `block_set_io_throttle` errors for the same values.
    #[test]
    fn invalid_limits_are_refused_as_qemu_does() {
        let e = |c: ThrottleConfig| c.validate().unwrap_err().msg;
        assert_eq!(
            e(cfg(&[(BPS_TOTAL, 1), (BPS_READ, 1)])),
            "bps/iops/max total values and read/write values cannot be used at the same time"
        );
        let mut c = cfg(&[(BPS_TOTAL, 100)]);
        c.buckets[BPS_TOTAL].max = 50;
        assert_eq!(e(c), "bps_max/iops_max cannot be lower than bps/iops");
        let mut c = cfg(&[]);
        c.buckets[OPS_TOTAL].max = 50;
        assert_eq!(
            e(c),
            "bps_max/iops_max require corresponding bps/iops values"
        );
        let mut c = cfg(&[(BPS_TOTAL, 100)]);
        c.buckets[BPS_TOTAL].burst_length = 5;
        assert_eq!(e(c), "burst length set without burst rate");
        let mut c = cfg(&[]);
        c.op_size = 4096;
        assert_eq!(e(c), "iops size requires an iops value to be set");
        assert!(cfg(&[(BPS_READ, 1), (BPS_WRITE, 1), (OPS_TOTAL, 5)])
            .validate()
            .is_ok());
    }

    /// Two members of one group: their combined bytes stay under the
    /// group's limit, both make progress (round-robin), a limit set through
    /// one is the other's, and the group goes with its last member.
    #[test]
    fn a_group_limits_its_members_together() {
        let limit = 1 << 20;
        let a = Throttle::join("unit-shared").unwrap();
        let b = Throttle::join("unit-shared").unwrap();
        a.set_config(cfg(&[(BPS_TOTAL, limit)]));
        assert_eq!(b.config().buckets[BPS_TOTAL].avg, limit);
        let done = Arc::new(Mutex::new([0u64; 2]));
        let start = Instant::now();
        let chunk = 64 << 10;
        for _ in 0..20 {
            for (i, t) in [&a, &b].iter().enumerate() {
                let d = done.clone();
                t.submit(true, chunk, Box::new(move || d.lock().unwrap()[i] += chunk));
            }
        }
        std::thread::sleep(Duration::from_millis(700));
        let [x, y] = *done.lock().unwrap();
        let secs = start.elapsed().as_secs_f64();
        let bound = limit as f64 * secs + limit as f64 / 10.0 + chunk as f64;
        assert!(((x + y) as f64) <= bound, "{x}+{y} > {bound}");
        assert!(x >= limit / 8 && y >= limit / 8, "both move: {x} {y}");
        drop(a);
        assert!(group_names().contains(&"unit-shared".to_string()));
        drop(b);
        assert!(!group_names().contains(&"unit-shared".to_string()));
        assert_eq!(*done.lock().unwrap(), [20 * chunk; 2]);
    }

    /// Bytes let through stay under limit × time + the 100 ms bucket.
    #[test]
    fn a_bps_limit_bounds_the_rate() {
        let limit = 1 << 20;
        let t = Throttle::join("unit-bps").unwrap();
        t.set_config(cfg(&[(BPS_TOTAL, limit)]));
        let done = Arc::new(Mutex::new(0u64));
        let start = Instant::now();
        let chunk = 64 << 10;
        for _ in 0..40 {
            let d = done.clone();
            t.submit(true, chunk, Box::new(move || *d.lock().unwrap() += chunk));
        }
        std::thread::sleep(Duration::from_millis(700));
        let through = *done.lock().unwrap();
        let secs = start.elapsed().as_secs_f64();
        // QEMU's bucket: avg/10 may pass at once, one request beyond it.
        let bound = limit as f64 * secs + limit as f64 / 10.0 + chunk as f64;
        assert!((through as f64) <= bound, "{through} > {bound}");
        assert!(through >= limit / 2, "the queue moves: {through}");
        drop(t);
        assert_eq!(
            *done.lock().unwrap(),
            40 * chunk,
            "dropping the limits releases the rest"
        );
    }
}
