//! `block-stream` (QEMU 7.2 block/stream.c, blockdev.c `qmp_block_stream`):
//! the data of the backing layers above `base` is copied into the top
//! image, which then takes `base` as its backing file (none when the whole
//! chain was streamed). The copy is copy-on-read in the top image, cluster
//! by cluster, so a guest writing to the top meanwhile loses nothing.

use std::sync::Arc;

use super::nodeio::allocated_above;
use super::{JobCtl, JobDriver, JobPlan, JobType, OnJobError};
use crate::error::{strerror, BlockError};
use crate::graph::BlockGraph;
use crate::io::ErrorAction;
use crate::node::Node;

/// `STREAM_CHUNK`.
const CHUNK: u64 = 512 << 10;

/// `block-stream`'s arguments.
pub struct StreamArgs<'a> {
    pub job_id: Option<&'a str>,
    pub device: &'a str,
    pub base: Option<&'a str>,
    pub base_node: Option<&'a str>,
    pub backing_file: Option<&'a str>,
    pub bottom: Option<&'a str>,
    pub on_error: OnJobError,
    /// The copy-on-read filter above the top becomes a node of that name.
    pub filter_node_name: Option<&'a str>,
}

pub struct Stream {
    top: Arc<Node>,
    base: Option<Arc<Node>>,
    /// The lowest layer copied from (`s->base_overlay`).
    base_overlay: Arc<Node>,
    /// The node right above the base (`s->above_base`: the base overlay,
    /// or a filter below it): the top's new backing is what it filters or
    /// backs when the job ends, which another job may have changed.
    above_base: Arc<Node>,
    /// `filter-node-name`: the copy-on-read filter as a node of the graph,
    /// between the top and its parents while the job runs.
    filter: Option<Arc<Node>>,
    backing_file: Option<String>,
    on_error: OnJobError,
    id: String,
    /// The top was read-only (an intermediate layer): reopened read-write
    /// for the job, read-only again when it ends.
    top_ro: bool,
}

impl Stream {
    fn clean_top(&mut self, g: &mut BlockGraph) {
        if std::mem::take(&mut self.top_ro) {
            let _ = g.reopen_set_read_only(&self.top, true);
        }
    }
}

impl JobDriver for Stream {
    fn job_type(&self) -> JobType {
        JobType::Stream
    }

    /// stream_start's failure path: the top read-only again.
    fn refused(&mut self, g: &mut BlockGraph) {
        self.clean_top(g);
    }

    /// `bdrv_insert_node(bs, copy-on-read)`: a named filter takes the
    /// top's place for its parents.
    fn install(&mut self, g: &mut BlockGraph) -> Result<(), String> {
        match &self.filter {
            Some(f) => g.insert_filter(f, &self.top).map_err(|e| e.msg),
            None => Ok(()),
        }
    }

    fn run(&mut self, ctl: &mut JobCtl) -> Result<(), String> {
        if Arc::ptr_eq(&self.top, &self.base_overlay) {
            return Ok(());
        }
        let fail = |e: i32| strerror(e);
        let len = self.top.size().map_err(|e| e.msg)?;
        ctl.set_remaining(len);
        let Some(below) = self.top.child("backing") else {
            return Ok(());
        };
        let mut error = 0;
        let mut delay = std::time::Duration::ZERO;
        let mut off = 0;
        while off < len {
            ctl.sleep(delay);
            if ctl.is_cancelled() {
                break;
            }
            let want = CHUNK.min(len - off);
            let mut step = self.top.driver.block_status(off, want);
            let mut copy = false;
            if let Ok((false, n)) = step {
                step = allocated_above(&below, Some(&self.base_overlay), off, n).map(|(a, m)| {
                    copy = a;
                    // Past the end of every backing layer: nothing left.
                    (a, if !a && m == 0 { len - off } else { m })
                });
            }
            let r = step.and_then(|(_, n)| {
                if copy {
                    self.top.driver.copy_on_read(off, n).map(|()| n)
                } else {
                    Ok(n)
                }
            });
            let n = match r {
                Ok(n) => n,
                Err(e) => match ctl.error_action(self.on_error, true, e) {
                    ErrorAction::Stop => {
                        delay = std::time::Duration::ZERO;
                        continue;
                    }
                    ErrorAction::Report => {
                        error = e;
                        break;
                    }
                    ErrorAction::Ignore => {
                        if error == 0 {
                            error = e;
                        }
                        want
                    }
                },
            };
            ctl.progress(n);
            delay = if copy {
                ctl.rate_delay(n)
            } else {
                std::time::Duration::ZERO
            };
            off += n.max(1);
        }
        // An ignored error keeps the backing file.
        if error != 0 {
            return Err(fail(error));
        }
        Ok(())
    }

    /// `stream_prepare`: the top takes `base` as its backing file, in the
    /// graph and in its header.
    fn prepare(&mut self, g: &mut BlockGraph) -> Result<(), String> {
        // "We should drop filter at this point, as filter hold the backing
        // chain."
        if let Some(f) = self.filter.take() {
            g.drop_filter(&f);
        }
        let Some(old) = self.top.child("backing") else {
            return Ok(());
        };
        // base = bdrv_filter_or_cow_bs(s->above_base), now; the header
        // names the format node under any filters (bdrv_skip_filters).
        let base = match self.base {
            Some(_) => self.above_base.filter_or_cow_child(),
            None => None,
        };
        let named = base.as_ref().map(skip_filters);
        let id = named
            .as_ref()
            .map(|b| self.backing_file.clone().unwrap_or_else(|| b.filename()));
        let fmt = named.as_ref().map(|b| b.driver.format_name());
        self.top.replace_backing(base).map_err(|e| e.msg)?;
        // The layers streamed away close unless something else holds them
        // (bdrv_set_backing_hd drops the top's reference).
        g.drop_if_unused(&old);
        self.top
            .driver
            .change_backing_file(id.as_deref(), fmt)
            .map_err(|e| e.msg)
    }

    /// stream_clean: the top back to read-only if it was, errors ignored.
    fn clean(&mut self, g: &mut BlockGraph) {
        if let Some(f) = self.filter.take() {
            g.drop_filter(&f);
        }
        g.unblock(&self.id);
        self.clean_top(g);
    }
}

/// `bdrv_skip_filters`.
pub(super) fn skip_filters(n: &Arc<Node>) -> Arc<Node> {
    let mut n = n.clone();
    while n.driver.is_filter() {
        match n.filter_or_cow_child() {
            Some(c) => n = c,
            None => break,
        }
    }
    n
}

/// `bdrv_freeze_backing_chain(top, base)`'s refusal: a link from `top`
/// down to (not including) `base` that points at a node that never lets
/// itself be frozen (a commit's `commit_top` filter).
fn check_freeze(top: &Arc<Node>, base: &Arc<Node>) -> Result<(), BlockError> {
    let mut cur = top.clone();
    while !Arc::ptr_eq(&cur, base) {
        let role = if cur.driver.is_filter() && cur.primary_child().is_some() {
            "file"
        } else {
            "backing"
        };
        let Some(next) = cur.filter_or_cow_child() else {
            break;
        };
        if next
            .driver
            .as_top_filter()
            .is_some_and(|t| t.never_freeze())
        {
            return Err(BlockError::new(format!(
                "Cannot freeze '{role}' link to '{}'",
                next.name
            )));
        }
        cur = next;
    }
    Ok(())
}

impl BlockGraph {
    /// `qmp_block_stream`'s checks; the job to start.
    pub fn stream_job(&mut self, a: &StreamArgs<'_>) -> Result<JobPlan, BlockError> {
        let both = |x: &str, y: &str| {
            BlockError::new(format!(
                "'{x}' and '{y}' cannot be specified at the same time"
            ))
        };
        if a.base.is_some() && a.base_node.is_some() {
            return Err(both("base", "base-node"));
        }
        if a.base.is_some() && a.bottom.is_some() {
            return Err(both("base", "bottom"));
        }
        if a.bottom.is_some() && a.base_node.is_some() {
            return Err(both("bottom", "base-node"));
        }
        let top = self.lookup_bs(Some(a.device), Some(a.device))?;
        let chain = top.backing_chain();
        let mut base = None;
        if let Some(b) = a.base {
            base = Some(find_backing_image(&top, b).ok_or_else(|| {
                BlockError::new(format!("Can't find '{b}' in the backing chain"))
            })?);
        }
        if let Some(b) = a.base_node {
            let n = self.lookup_bs(None, Some(b))?;
            if !chain.iter().any(|c| Arc::ptr_eq(c, &n)) {
                return Err(BlockError::new(format!(
                    "Node '{b}' is not a backing image of '{}'",
                    a.device
                )));
            }
            base = Some(n);
        }
        let mut bottom = None;
        if let Some(b) = a.bottom {
            let n = self.lookup_bs(None, Some(b))?;
            if !Arc::ptr_eq(&n, &top) && !chain.iter().any(|c| Arc::ptr_eq(c, &n)) {
                return Err(BlockError::new(format!(
                    "Node '{b}' is not in a chain starting from '{}'",
                    a.device
                )));
            }
            base = n.child("backing");
            bottom = Some(n);
        }
        // The layers the job works on: the top down to (not including) base.
        let mut layers = vec![top.clone()];
        layers.extend(
            chain
                .iter()
                .take_while(|c| !base.as_ref().is_some_and(|b| Arc::ptr_eq(b, c)))
                .cloned(),
        );
        for l in &layers {
            self.check_op_blocker(l)?;
        }
        if base.is_none() && a.backing_file.is_some() {
            return Err(BlockError::new(
                "backing file specified, but streaming the entire chain",
            ));
        }
        // stream_start: "Make sure that the image is opened in read-write
        // mode", before the job exists (a failure fails the command with no
        // job events).
        // base_overlay: the lowest format layer above the base; above_base:
        // the node right above the base (it may be a filter).
        let above_base = layers.last().cloned().unwrap_or(top.clone());
        let base_overlay = match &bottom {
            Some(b) => b.clone(),
            None => layers
                .iter()
                .rev()
                .find(|n| !n.driver.is_filter())
                .cloned()
                .unwrap_or(top.clone()),
        };
        let top_ro = top.flags().read_only;
        if top_ro {
            // "Hold the chain during reopen".
            check_freeze(&top, &above_base)?;
            self.reopen_set_read_only(&top, false)?;
        }
        // Then the copy-on-read filter above the top needs it writable down
        // to its file: a file node of its own that stays read-only fails it
        // (bdrv_cor_filter_append).
        let mut n = Some(top.clone());
        while let Some(x) = n {
            if x.flags().read_only {
                if top_ro {
                    let _ = self.reopen_set_read_only(&top, true);
                }
                return Err(BlockError::new(
                    "Could not create node: Block node is read-only",
                ));
            }
            n = x.child("file");
        }
        // bdrv_insert_node: the filter's name is checked as any node's.
        let filter = match a.filter_node_name {
            Some(name) => {
                let f = self.new_cor_filter(name, &top, &base_overlay);
                if f.is_err() && top_ro {
                    let _ = self.reopen_set_read_only(&top, true);
                }
                Some(f?)
            }
            None => None,
        };
        let id = match a.job_id {
            Some(i) => i.to_string(),
            None => self.device_name(&top),
        };
        let driver = Stream {
            top,
            base,
            base_overlay,
            above_base,
            filter: filter.clone(),
            backing_file: a.backing_file.map(str::to_string),
            on_error: a.on_error,
            id: id.clone(),
            top_ro,
        };
        Ok(JobPlan {
            id,
            driver: Box::new(driver),
            // block_job_create's main node is the filter.
            nodes: filter.into_iter().chain(layers).collect(),
        })
    }

    /// stream_start's copy-on-read filter over `top`, named `name`, with
    /// `bottom` the base overlay; not yet in anyone's path.
    fn new_cor_filter(
        &mut self,
        name: &str,
        top: &Arc<Node>,
        bottom: &Arc<Node>,
    ) -> Result<Arc<Node>, BlockError> {
        self.check_new_node_name(name)?;
        let bottom = (!Arc::ptr_eq(bottom, top)).then(|| bottom.clone());
        let drv = crate::cor::CorDriver::open(top.clone(), bottom)?;
        let flags = crate::node::NodeFlags {
            read_only: false,
            ..top.flags()
        };
        Ok(Arc::new(Node::new(
            name.to_string(),
            false,
            flags,
            Box::new(drv),
            vec![crate::node::Child::new("file", top.clone())],
        )))
    }
}

/// `bdrv_find_backing_image`: the layer below `top` that `name` names. For
/// each layer and the one below it, as QEMU compares:
/// - a layer whose backing was overridden: `name` against the filename of
///   the node below;
/// - a protocol name (either side): against the header's name and its full
///   form;
/// - else both made absolute relative to the layer's own directory and
///   canonicalized (`../mid.img` names the file next to the overlay's
///   directory, not the emulator's working directory).
pub(super) fn find_backing_image(top: &Arc<Node>, name: &str) -> Option<Arc<Node>> {
    let has_protocol = |p: &str| {
        p.find([':', '/', '\\'])
            .is_some_and(|i| p.as_bytes()[i] == b':')
    };
    let canon = |p: &str| std::fs::canonicalize(p).ok();
    // The format layers only (bdrv_find_backing_image walks
    // bdrv_backing_chain_next, which skips filters).
    let mut layers = vec![top.clone()];
    layers.extend(
        top.backing_chain()
            .into_iter()
            .filter(|n| !n.driver.is_filter()),
    );
    for pair in layers.windows(2) {
        let (curr, below) = (&pair[0], &pair[1]);
        let header = curr.driver.image_info().and_then(|i| i.backing_file);
        let full = curr.driver.full_backing_filename();
        let found = if curr
            .driver
            .as_qcow2()
            .is_some_and(|q| q.backing_overridden())
        {
            below.filename() == name
        } else if has_protocol(name) || header.as_deref().is_some_and(has_protocol) {
            header.as_deref() == Some(name) || full.as_deref() == Some(name)
        } else {
            let dir_of = curr
                .child("file")
                .map_or_else(|| curr.filename(), |f| f.filename());
            let wanted = canon(&crate::qcow2_node::full_backing_path(&dir_of, name));
            wanted.is_some() && full.as_deref().and_then(canon) == wanted
        };
        if found {
            return Some(below.clone());
        }
    }
    None
}
