//! Starting a mirror: `blockdev-mirror` and `drive-mirror`'s checks, in
//! QEMU 7.2's order and words (blockdev.c `qmp_drive_mirror`,
//! `qmp_blockdev_mirror`, `blockdev_mirror_common`; block/mirror.c
//! `mirror_start`, `mirror_start_job`), and drive-mirror's new target image.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::filter_node::TopKind;
use super::mirror::{BackingMode, Mirror, MirrorSpec, SyncMode, DEFAULT_BUF_SIZE};
use super::{JobPlan, JobType, OnJobError};
use crate::error::BlockError;
use crate::graph::BlockGraph;
use crate::node::Node;
use crate::qcow2::{create, CreateOptions, ImageFile};

/// The arguments both mirror commands share.
pub struct MirrorArgs<'a> {
    pub job_id: Option<&'a str>,
    pub device: &'a str,
    pub target: &'a str,
    pub sync: &'a str,
    pub granularity: Option<u64>,
    pub buf_size: Option<i64>,
    pub on_source_error: OnJobError,
    pub on_target_error: OnJobError,
    pub write_blocking: bool,
    pub replaces: Option<&'a str>,
    pub filter_node_name: Option<&'a str>,
}

/// drive-mirror's own arguments.
pub struct DriveMirrorArgs<'a> {
    pub format: Option<&'a str>,
    pub node_name: Option<&'a str>,
    /// `mode=existing`.
    pub existing: bool,
}

fn sync_mode(s: &str) -> Result<SyncMode, BlockError> {
    match s {
        "full" => Ok(SyncMode::Full),
        "top" => Ok(SyncMode::Top),
        "none" => Ok(SyncMode::None),
        other => Err(BlockError::new(format!(
            "Sync mode '{other}' not supported"
        ))),
    }
}

fn invalid(name: &str, what: &str) -> BlockError {
    BlockError::new(format!("Parameter '{name}' expects {what}"))
}

/// `bdrv_get_default_bitmap_granularity`: the target's cluster size,
/// between 4 KiB and 64 KiB.
pub(super) fn default_granularity(target: &Node) -> u64 {
    match target.driver.image_info() {
        Some(i) => i.cluster_size.clamp(4096, 65536),
        None => 65536,
    }
}

impl BlockGraph {
    /// `qmp_get_root_bs`. A node a job uses has the job as a parent
    /// (`block_job_add_bdrv`), which is not a root parent either; a job's
    /// nodes are the ones with op blockers.
    pub(super) fn root_bs(&self, name: &str) -> Result<Arc<Node>, BlockError> {
        let bs = self.lookup_bs(Some(name), Some(name))?;
        let is_child = self
            .nodes()
            .iter()
            .any(|n| n.children().iter().any(|c| Arc::ptr_eq(&c.node, &bs)));
        if is_child || self.check_op_blocker(&bs).is_err() {
            return Err(BlockError::new("Need a root block node"));
        }
        Ok(bs)
    }

    /// `blockdev-mirror`.
    pub fn blockdev_mirror(&mut self, a: &MirrorArgs<'_>) -> Result<JobPlan, BlockError> {
        let bs = self.root_bs(a.device)?;
        let target = self.lookup_bs(Some(a.target), Some(a.target))?;
        let sync = a.sync;
        self.mirror_common(
            a,
            bs,
            target,
            sync,
            BackingMode::Leave,
            sync == "full",
            false,
        )
    }

    /// `drive-mirror`: opens (or first creates) the target image.
    pub fn drive_mirror(
        &mut self,
        a: &MirrorArgs<'_>,
        d: &DriveMirrorArgs<'_>,
    ) -> Result<JobPlan, BlockError> {
        let bs = self.root_bs(a.device)?;
        self.check_op_blocker(&bs)?;
        let format = match d.format {
            Some(f) => Some(f.to_string()),
            None if d.existing => None,
            None => Some(bs.driver.format_name().to_string()),
        };
        let mut backing = bs.child("backing");
        let mut sync = a.sync;
        if backing.is_none() && sync == "top" {
            sync = "full";
        }
        if sync == "none" {
            backing = Some(bs.clone());
        }
        let size = bs.size()?;
        if a.replaces.is_some() && d.node_name.is_none() {
            return Err(BlockError::new(
                "a node-name must be provided when replacing a named node of the graph",
            ));
        }
        if !d.existing {
            let b = if sync == "full" {
                None
            } else {
                backing.as_ref()
            };
            create_image(a.target, format.as_deref().unwrap_or("raw"), size, b)?;
        }
        let mut opts = Map::new();
        if let Some(n) = d.node_name {
            opts.insert("node-name".into(), Value::from(n));
        }
        let fmt = match format {
            Some(f) => f,
            None => {
                if crate::graph::probe_qcow2(Some(a.target)) {
                    "qcow2".into()
                } else {
                    "raw".into()
                }
            }
        };
        opts.insert("driver".into(), Value::from(fmt.as_str()));
        let mut file = Map::new();
        // bdrv_find_protocol: a `blkdebug:` target gets its filter.
        file.insert(
            "driver".into(),
            Value::from(crate::graph::protocol_of(Some(a.target))),
        );
        file.insert("filename".into(), Value::from(a.target));
        opts.insert("file".into(), Value::Object(file));
        if fmt == "qcow2" {
            // BDRV_O_NO_BACKING: the mirror gives the target its backing.
            opts.insert("backing".into(), Value::Null);
        }
        let target = self.open_overlay(opts, &bs)?;
        let zero_target = sync == "full" && (d.existing || fmt != "qcow2");
        let r = self.mirror_common(
            a,
            bs,
            target.clone(),
            sync,
            // qmp_drive_mirror: absolute-paths gives the target the
            // source's chain, existing opens the target's own.
            if d.existing {
                BackingMode::OpenChain
            } else {
                BackingMode::SourceChain
            },
            zero_target,
            true,
        );
        if r.is_err() {
            self.drop_if_unused(&target);
        }
        r
    }

    /// `blockdev_mirror_common` + `mirror_start` + `mirror_start_job`.
    #[allow(clippy::too_many_arguments)]
    fn mirror_common(
        &mut self,
        a: &MirrorArgs<'_>,
        bs: Arc<Node>,
        target: Arc<Node>,
        sync: &str,
        backing_mode: BackingMode,
        zero_target: bool,
        owns_target: bool,
    ) -> Result<JobPlan, BlockError> {
        let granularity = a.granularity.unwrap_or(0);
        if granularity != 0 && !(512..=64 << 20).contains(&granularity) {
            return Err(invalid("granularity", "a value in range [512B, 64MB]"));
        }
        if granularity & granularity.wrapping_sub(1) != 0 {
            return Err(invalid("granularity", "a power of 2"));
        }
        self.check_op_blocker(&bs)?;
        self.check_op_blocker(&target)?;
        let mut sync = sync;
        if bs.child("backing").is_none() && sync == "top" {
            sync = "full";
        }
        // blockdev_mirror_common: the node to replace must show the
        // source's data and have its size.
        if let Some(r) = a.replaces {
            let bs_size = bs.size().map_err(|e| {
                BlockError::new(format!("Failed to query device's size: {}", e.msg))
            })?;
            let to_replace = self.check_to_replace_node(&bs, r)?;
            let replace_size = to_replace.size().map_err(|e| {
                BlockError::new(format!(
                    "Failed to query the replacement node's size: {}",
                    e.msg
                ))
            })?;
            if bs_size != replace_size {
                return Err(BlockError::new(
                    "cannot replace image with a mirror image of different size",
                ));
            }
        }
        let sync = sync_mode(sync)?;
        let granularity = if granularity == 0 {
            default_granularity(&target)
        } else {
            granularity
        };
        let buf_size = match a.buf_size.unwrap_or(0) {
            b if b < 0 => return Err(BlockError::new("Invalid parameter 'buf-size'")),
            0 => DEFAULT_BUF_SIZE,
            b => b as u64,
        };
        if Arc::ptr_eq(&bs, &target) {
            return Err(BlockError::new("Can't mirror node into itself"));
        }
        if bs.backing_chain().iter().any(|n| Arc::ptr_eq(n, &target)) {
            return Err(BlockError::new(
                "Cannot mirror to a filter on top of a node in the source's backing chain",
            ));
        }
        let id = match a.job_id {
            Some(i) => i.to_string(),
            None => self.device_name(&bs),
        };
        // mirror_start_job: bdrv_new_open_driver(&bdrv_mirror_top, ...).
        let named_filter = match a.filter_node_name {
            Some(n) => Some(self.new_top_filter(n, TopKind::Mirror, &bs)?),
            None => None,
        };
        let spec = MirrorSpec {
            id: id.clone(),
            kind: JobType::Mirror,
            source: bs.clone(),
            target: target.clone(),
            sync,
            backing_mode,
            zero_target,
            granularity,
            buf_size,
            on_source_error: a.on_source_error,
            on_target_error: a.on_target_error,
            write_blocking: a.write_blocking,
            owns_target,
            drop_between: false,
            replaces: a.replaces.map(str::to_string),
            named_filter: named_filter.clone(),
        };
        Ok(JobPlan {
            id,
            driver: Box::new(Mirror::new(spec)?),
            // block_job_create's main node is the filter.
            nodes: named_filter.into_iter().chain([bs, target]).collect(),
        })
    }
}

/// `bdrv_img_create` for drive-mirror's target: raw (an empty file of
/// `size`) or qcow2, over `backing` if given.
pub(super) fn create_image(
    path: &str,
    format: &str,
    size: u64,
    backing: Option<&Arc<Node>>,
) -> Result<(), BlockError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|e| {
            BlockError::new(format!(
                "Could not create '{path}': {}",
                crate::error::strerror(e.raw_os_error().unwrap_or(libc::EIO))
            ))
        })?;
    let mut o = CreateOptions::new(size);
    o.backing_file = backing.map(|b| b.filename());
    o.backing_format = backing.map(|b| b.driver.format_name().to_string());
    if matches!(format, "raw" | "file" | "qcow2") {
        // bdrv_img_create, not quiet: the line QEMU prints on stdout.
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", formatting_line(path, format, &o));
        let _ = out.flush();
    }
    match format {
        // A `file` image is the host file itself, as raw's (file-posix's
        // raw_co_create).
        "raw" | "file" => file
            .set_len(size)
            .map_err(|e| BlockError::new(format!("Could not resize file: {e}"))),
        "qcow2" => create(Arc::new(file) as Arc<dyn ImageFile>, &o)
            .map_err(|e| BlockError::new(e.to_string())),
        other => Err(BlockError::new(format!(
            "ferrovm: cannot create '{other}' images (raw and qcow2 only)"
        ))),
    }
}

/// bdrv_img_create's "Formatting" line: the image's creation options in
/// the format's option order (`qemu_opts_print`).
fn formatting_line(path: &str, format: &str, o: &CreateOptions) -> String {
    let mut line = format!("Formatting '{path}', fmt={format} ");
    if format == "qcow2" {
        line += &format!(
            "cluster_size={} extended_l2=off compression_type=zlib size={}",
            o.cluster_size, o.size
        );
        if let (Some(b), Some(f)) = (&o.backing_file, &o.backing_format) {
            line += &format!(" backing_file={b} backing_fmt={f}");
        }
        line += &format!(
            " lazy_refcounts={} refcount_bits={}",
            if o.lazy_refcounts { "on" } else { "off" },
            o.refcount_bits
        );
    } else {
        line += &format!("size={}", o.size);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lines QEMU 7.2 printed for drive-mirror targets (sync=top over
    /// a raw backing, format=raw, sync=full).
    #[test]
    fn formatting_lines_are_qemus() {
        let mut o = CreateOptions::new(1048576);
        assert_eq!(
            formatting_line("/t/m3.qcow2", "qcow2", &o),
            "Formatting '/t/m3.qcow2', fmt=qcow2 cluster_size=65536 extended_l2=off \
             compression_type=zlib size=1048576 lazy_refcounts=off refcount_bits=16"
        );
        assert_eq!(
            formatting_line("/t/m2.raw", "raw", &o),
            "Formatting '/t/m2.raw', fmt=raw size=1048576"
        );
        o.backing_file = Some("/t/b.img".into());
        o.backing_format = Some("raw".into());
        assert_eq!(
            formatting_line("/t/m1.qcow2", "qcow2", &o),
            "Formatting '/t/m1.qcow2', fmt=qcow2 cluster_size=65536 extended_l2=off \
             compression_type=zlib size=1048576 backing_file=/t/b.img backing_fmt=raw \
             lazy_refcounts=off refcount_bits=16"
        );
    }
}
