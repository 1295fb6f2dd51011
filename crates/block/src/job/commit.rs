//! `block-commit` (QEMU 7.2 block/commit.c, and block/mirror.c
//! `commit_active_start` for the active layer).
//!
//! An intermediate commit ([`Commit`]) copies what the layers from `top`
//! down to just above `base` hold into `base`; then the overlay of `top`
//! takes `base` as its backing file, in the graph and in its header, and the
//! layers in between go. The guest only writes the active layer, above
//! `top`, so the copied layers do not change while the job runs.
//!
//! An active commit ([`ActiveCommit`]) is a mirror of the active layer
//! onto `base` (`kind = Commit`, `drop_between`): READY, then `job-complete`
//! moves the devices onto `base` and the layers above it go.
//!
//! Both make `base` writable for the job (`bdrv_reopen_set_read_only`).

use std::sync::Arc;

use super::mirror::Mirror;
use super::nodeio::{allocated_above, NodeIo};
use super::{JobCtl, JobDriver, JobType, OnJobError};
use crate::error::strerror;
use crate::graph::BlockGraph;
use crate::io::ErrorAction;
use crate::node::{new_parent_id, FormatIo, Node};
use crate::perm;

/// `COMMIT_BUFFER_SIZE`.
const CHUNK: u64 = 512 << 10;

/// An intermediate commit.
pub struct Commit {
    pub(super) id: String,
    pub(super) top: Arc<Node>,
    pub(super) base: Arc<Node>,
    /// The layer just above `base` (`s->base_overlay`).
    pub(super) base_overlay: Arc<Node>,
    /// The layer whose backing `top` is; it takes `base` instead.
    pub(super) overlay: Arc<Node>,
    pub(super) backing_file: Option<String>,
    pub(super) on_error: OnJobError,
    /// `s->base_read_only`: the job made the base writable.
    pub(super) base_ro: bool,
    /// The job's hold on the base (QEMU's `s->base` BlockBackend).
    pub(super) base_perm: u64,
    /// `filter-node-name`: the `commit_top` filter as a node between
    /// `top` and its overlays while the job runs.
    pub(super) filter: Option<Arc<Node>>,
}

impl Commit {
    pub(super) fn new(
        id: String,
        top: Arc<Node>,
        base: Arc<Node>,
        base_overlay: Arc<Node>,
        overlay: Arc<Node>,
        backing_file: Option<String>,
        on_error: OnJobError,
    ) -> Self {
        Commit {
            id,
            top,
            base,
            base_overlay,
            overlay,
            backing_file,
            on_error,
            base_ro: false,
            base_perm: new_parent_id(),
            filter: None,
        }
    }

    fn release_base(&self) {
        let _ = self.base.set_parent_perm(self.base_perm, None);
    }
}

/// `commit_start`'s reopen of the base, undone by [`restore_base`].
fn base_writable(g: &mut BlockGraph, base: &Arc<Node>) -> Result<bool, String> {
    if !base.flags().read_only {
        return Ok(false);
    }
    g.reopen_set_read_only(base, false).map_err(|e| e.msg)?;
    Ok(true)
}

/// `commit_clean`: back to read-only, errors ignored as QEMU does.
fn restore_base(g: &mut BlockGraph, base: &Arc<Node>, was_ro: &mut bool) {
    if std::mem::take(was_ro) {
        let _ = g.reopen_set_read_only(base, true);
    }
}

impl JobDriver for Commit {
    fn job_type(&self) -> JobType {
        JobType::Commit
    }

    /// `commit_start` after `block_job_create`: the base writable, and the
    /// job's write permission on it.
    fn install(&mut self, g: &mut BlockGraph) -> Result<(), String> {
        self.base_ro = base_writable(g, &self.base)?;
        let mut want = perm::CONSISTENT_READ | perm::WRITE;
        let (base_len, top_len) = (self.base.size(), self.top.size());
        if let (Ok(b), Ok(t)) = (base_len, top_len) {
            if b < t {
                want |= perm::RESIZE;
            }
        }
        self.base
            .set_parent_perm(
                self.base_perm,
                Some((want, perm::CONSISTENT_READ | perm::WRITE_UNCHANGED)),
            )
            .map_err(|e| e.msg)?;
        // bdrv_append(commit_top_bs, top).
        match &self.filter {
            Some(f) => g.insert_filter(f, &self.top).map_err(|e| e.msg),
            None => Ok(()),
        }
    }

    /// `commit_run`.
    fn run(&mut self, ctl: &mut JobCtl) -> Result<(), String> {
        let len = self.top.size().map_err(|e| e.msg)?;
        ctl.set_remaining(len);
        let base_len = self.base.size().map_err(|e| e.msg)?;
        if base_len < len {
            self.base.driver.truncate(len).map_err(|e| e.msg)?;
        }
        let src = NodeIo::new(&self.top);
        let dst = NodeIo::new(&self.base);
        let mut buf = Vec::new();
        let mut delay = std::time::Duration::ZERO;
        let mut off = 0;
        while off < len {
            // A pause point even without a speed limit (job_sleep_ns).
            ctl.sleep(delay);
            if ctl.is_cancelled() {
                break;
            }
            let want = CHUNK.min(len - off);
            let mut copy = false;
            let r = allocated_above(&self.top, Some(&self.base_overlay), off, want)
                .map_err(|e| (e, true))
                .and_then(|(alloc, n)| {
                    copy = alloc;
                    let n = n.clamp(1, want);
                    if !alloc {
                        return Ok(n);
                    }
                    buf.resize(n as usize, 0);
                    src.read(off, &mut buf).map_err(|e| (e, true))?;
                    dst.write(off, &buf).map_err(|e| (e, false))?;
                    Ok(n)
                });
            let n = match r {
                Ok(n) => n,
                Err((e, is_read)) => match ctl.error_action(self.on_error, is_read, e) {
                    ErrorAction::Report => return Err(strerror(e)),
                    // Stop, ignore: the same range again (n = 0).
                    _ => {
                        delay = std::time::Duration::ZERO;
                        continue;
                    }
                },
            };
            ctl.progress(n);
            delay = if copy {
                ctl.rate_delay(n)
            } else {
                std::time::Duration::ZERO
            };
            off += n;
        }
        Ok(())
    }

    /// `commit_prepare` and `bdrv_drop_intermediate`: the overlay of `top`
    /// takes the base as its backing, its header names it (the
    /// `backing-file` argument, else the base's file name, with the base's
    /// format), and the layers in between go unless someone holds them.
    fn prepare(&mut self, g: &mut BlockGraph) -> Result<(), String> {
        self.release_base();
        let name = self
            .backing_file
            .clone()
            .unwrap_or_else(|| self.base.filename());
        // bdrv_drop_intermediate(commit_top_bs, base): every overlay on the
        // filter (another job may have given it one more), else the overlay
        // of `top`.
        let overlays = match &self.filter {
            Some(f) => g
                .nodes()
                .iter()
                .filter(|n| {
                    n.children()
                        .iter()
                        .any(|c| c.role == "backing" && Arc::ptr_eq(&c.node, f))
                })
                .cloned()
                .collect(),
            None => vec![self.overlay.clone()],
        };
        let mut r = Ok(());
        for ov in &overlays {
            ov.replace_backing(Some(self.base.clone()))
                .map_err(|e| e.msg)?;
            // bdrv_child_cb_update_filename: a read-only overlay is writable
            // for as long as its header changes.
            let ro = ov.flags().read_only;
            if ro {
                g.reopen_set_read_only(ov, false).map_err(|e| e.msg)?;
            }
            let changed = ov
                .driver
                .change_backing_file(Some(&name), Some(self.base.driver.format_name()));
            if ro {
                let _ = g.reopen_set_read_only(ov, true);
            }
            if r.is_ok() {
                r = changed;
            }
        }
        if let Some(f) = self.filter.take() {
            g.remove_node(&f);
            f.release_children();
        }
        let top = self.top.clone();
        g.drop_if_unused(&top);
        r.map_err(|e| format!("Could not update backing file link: {}", e.msg))
    }

    fn clean(&mut self, g: &mut BlockGraph) {
        if let Some(f) = self.filter.take() {
            g.drop_filter(&f);
        }
        self.release_base();
        restore_base(g, &self.base.clone(), &mut self.base_ro);
        g.unblock(&self.id);
    }
}

/// An active commit: the mirror job of the active layer onto the base,
/// with the base made writable first (`commit_active_start`).
pub struct ActiveCommit {
    pub(super) mirror: Mirror,
    pub(super) base: Arc<Node>,
    /// The base was made writable and the job did not get going: it goes
    /// back (`error_restore_flags`). Once the mirror runs, QEMU 7.2 leaves
    /// the base writable, whatever the end.
    pub(super) restore_ro: bool,
    /// The active layer was read-only: after a pivot the base is too
    /// (mirror_exit_common gives the target the replaced node's flag).
    pub(super) source_ro: bool,
}

impl JobDriver for ActiveCommit {
    fn job_type(&self) -> JobType {
        JobType::Commit
    }
    fn install(&mut self, g: &mut BlockGraph) -> Result<(), String> {
        self.restore_ro = base_writable(g, &self.base)?;
        self.mirror.install(g)?;
        self.restore_ro = false;
        Ok(())
    }
    fn run(&mut self, ctl: &mut JobCtl) -> Result<(), String> {
        self.mirror.run(ctl)
    }
    fn prepare(&mut self, g: &mut BlockGraph) -> Result<(), String> {
        self.mirror.prepare(g)
    }
    fn abort(&mut self, g: &mut BlockGraph) {
        self.mirror.abort(g)
    }
    fn clean(&mut self, g: &mut BlockGraph) {
        self.mirror.clean(g);
        restore_base(g, &self.base.clone(), &mut self.restore_ro);
        // Once the job no longer writes it (QEMU drops the job's hold on
        // the target before it reopens it).
        let pivoted = g
            .backends()
            .iter()
            .any(|b| b.root().is_some_and(|r| Arc::ptr_eq(&r, &self.base)));
        if pivoted && self.source_ro && !self.base.flags().read_only {
            let _ = g.reopen_set_read_only(&self.base.clone(), true);
        }
    }
    fn completable(&self) -> bool {
        self.mirror.completable()
    }
    /// `commit_active_cancel`: `force || !job_is_ready`, as mirror's.
    fn soft_cancel_when_ready(&self) -> bool {
        self.mirror.soft_cancel_when_ready()
    }
}
