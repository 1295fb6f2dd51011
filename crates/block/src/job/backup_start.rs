//! Starting a backup: `blockdev-backup` and `drive-backup`'s checks in
//! QEMU 7.2's order and words (blockdev.c `drive_backup_prepare`,
//! `blockdev_backup_prepare`, `do_backup_common`; block/backup.c
//! `backup_job_create`; block/block-copy.c
//! `block_copy_calculate_cluster_size`), and drive-backup's target image.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::backup::{Backup, BackupSpec, BackupSync, BitmapMode, SyncBitmap, DEFAULT_CLUSTER};
use super::mirror_start::create_image;
use super::{JobPlan, OnJobError};
use crate::bitmap_cmds;
use crate::error::BlockError;
use crate::graph::BlockGraph;
use crate::node::Node;

/// The arguments both backup commands share (`BackupCommon`).
pub struct BackupArgs<'a> {
    pub job_id: Option<&'a str>,
    pub device: &'a str,
    pub target: &'a str,
    pub sync: &'a str,
    pub bitmap: Option<&'a str>,
    pub bitmap_mode: Option<&'a str>,
    pub compress: bool,
    pub on_source_error: OnJobError,
    pub on_target_error: OnJobError,
    pub filter_node_name: Option<&'a str>,
    /// `x-perf.max-workers`, `x-perf.max-chunk`.
    pub max_workers: Option<i64>,
    pub max_chunk: Option<i64>,
}

/// drive-backup's own arguments.
pub struct DriveBackupArgs<'a> {
    pub format: Option<&'a str>,
    /// `mode=existing`.
    pub existing: bool,
}

/// What a warning for the monitor's stderr and the plan come back as.
pub struct BackupStart {
    pub plan: JobPlan,
    /// QEMU's `warn_report` text, if any (printed on stderr).
    pub warning: Option<String>,
}

impl BlockGraph {
    /// `blockdev-backup`.
    pub fn blockdev_backup(&mut self, a: &BackupArgs<'_>) -> Result<BackupStart, BlockError> {
        let bs = self.lookup_bs(Some(a.device), Some(a.device))?;
        let target = self.lookup_bs(Some(a.target), Some(a.target))?;
        self.backup_common(a, a.sync, bs, target, false)
    }

    /// `drive-backup`: creates (unless `mode=existing`) and opens the target.
    pub fn drive_backup(
        &mut self,
        a: &BackupArgs<'_>,
        d: &DriveBackupArgs<'_>,
    ) -> Result<BackupStart, BlockError> {
        let bs = self.lookup_bs(Some(a.device), Some(a.device))?;
        let format = match d.format {
            Some(f) => Some(f.to_string()),
            None if d.existing => None,
            None => Some(bs.driver.format_name().to_string()),
        };
        self.check_op_blocker(&bs)?;
        let mut sync = a.sync;
        // The image the new target sits on.
        let mut backing = None;
        if sync == "top" {
            backing = bs.child("backing");
            if backing.is_none() {
                sync = "full";
            }
        }
        if sync == "none" {
            backing = Some(bs.clone());
        }
        let size = bs.size()?;
        if !d.existing {
            create_image(
                a.target,
                format.as_deref().unwrap_or("raw"),
                size,
                backing.as_ref(),
            )?;
        }
        let fmt = match format {
            Some(f) => f,
            None if crate::graph::probe_qcow2(Some(a.target)) => "qcow2".into(),
            None => "raw".into(),
        };
        let mut opts = Map::new();
        opts.insert("driver".into(), Value::from(fmt.as_str()));
        opts.insert("discard".into(), Value::from("unmap"));
        opts.insert("detect-zeroes".into(), Value::from("unmap"));
        if fmt == "file" {
            // format=file: the target is the protocol node itself
            // (bdrv_open with driver=file on the target's name).
            opts.insert("filename".into(), Value::from(a.target));
        } else {
            let mut file = Map::new();
            file.insert(
                "driver".into(),
                Value::from(crate::graph::protocol_of(Some(a.target))),
            );
            file.insert("filename".into(), Value::from(a.target));
            opts.insert("file".into(), Value::Object(file));
        }
        if fmt == "qcow2" {
            // The backup writes every cluster it copies whole, so the
            // target never reads below; sync=none gets the source itself
            // as its backing, as QEMU's bdrv_set_backing_hd does.
            opts.insert("backing".into(), Value::Null);
        }
        let target = self.open_overlay(opts, &bs)?;
        if sync == "none" && fmt == "qcow2" {
            if let Err(e) = target.set_backing(bs.clone()) {
                self.drop_if_unused(&target);
                return Err(e);
            }
        }
        let r = self.backup_common(a, sync, bs, target.clone(), true);
        if r.is_err() {
            self.drop_if_unused(&target);
        }
        r
    }

    /// `do_backup_common` + `backup_job_create`.
    fn backup_common(
        &mut self,
        a: &BackupArgs<'_>,
        sync: &str,
        bs: Arc<Node>,
        target: Arc<Node>,
        owns_target: bool,
    ) -> Result<BackupStart, BlockError> {
        let err = |m: String| Err(BlockError::new(m));
        let mut sync = sync;
        let mut bitmap_mode = a.bitmap_mode;
        if matches!(sync, "bitmap" | "incremental") && a.bitmap.is_none() {
            return err(format!(
                "must provide a valid bitmap name for '{sync}' sync mode"
            ));
        }
        if sync == "incremental" {
            if bitmap_mode.is_some_and(|m| m != "on-success") {
                return err(
                    "Bitmap sync mode must be 'on-success' when using sync mode 'incremental'"
                        .into(),
                );
            }
            sync = "bitmap";
            bitmap_mode = Some("on-success");
        }
        let mut bitmap = None;
        if let Some(name) = a.bitmap {
            let Some(b) = bs.bitmaps.find(name) else {
                return err(format!("Bitmap '{name}' could not be found"));
            };
            let Some(mode) = bitmap_mode else {
                return err("Bitmap sync mode must be given when providing a bitmap".into());
            };
            bitmap_cmds::check(&b, bitmap_cmds::ALLOW_RO)?;
            if sync == "none" {
                return err(format!(
                    "sync mode '{sync}' does not produce meaningful bitmap outputs"
                ));
            }
            if mode == "never" && sync != "bitmap" {
                return err(format!(
                    "Bitmap sync mode '{mode}' has no meaningful effect when combined with \
                     sync mode '{sync}'"
                ));
            }
            let mode = match mode {
                "never" => BitmapMode::Never,
                "always" => BitmapMode::Always,
                _ => BitmapMode::OnSuccess,
            };
            bitmap = Some((b, mode));
        } else if bitmap_mode.is_some() {
            return err("Cannot specify bitmap sync mode without a bitmap".into());
        }
        let sync = match sync {
            "full" => BackupSync::Full,
            "top" => BackupSync::Top,
            "none" => BackupSync::None,
            "bitmap" => BackupSync::Bitmap,
            // The schema admits nothing else.
            other => return err(format!("Sync mode '{other}' not supported")),
        };
        if Arc::ptr_eq(&bs, &target) {
            return err("Source and target cannot be the same".into());
        }
        if a.compress {
            if target.driver.image_info().is_some() {
                return err("ferrovm: compressed backup is not supported".into());
            }
            let name = self.device_name(&target);
            return err(format!(
                "Compression is not supported for this drive {name}"
            ));
        }
        self.check_op_blocker(&bs)?;
        self.check_op_blocker(&target)?;
        let workers = a.max_workers.unwrap_or(64);
        if !(1..=i32::MAX as i64).contains(&workers) {
            return err(format!("max-workers must be between 1 and {}", i32::MAX));
        }
        let max_chunk = a.max_chunk.unwrap_or(0);
        if max_chunk < 0 {
            return err("max-chunk must be zero (which means no limit) or positive".into());
        }
        if let Some((b, mode)) = &bitmap {
            // backup_job_create: a bitmap the job will write must allow it.
            if *mode != BitmapMode::Never {
                bitmap_cmds::check(b, bitmap_cmds::DEFAULT)?;
            }
        }
        if bs.size()? != target.size()? {
            return err("Source and target image have different sizes".into());
        }
        if a.filter_node_name.is_some() {
            return err("ferrovm: 'filter-node-name' is not supported".into());
        }
        let (cluster, warning) = cluster_size(&target);
        if max_chunk != 0 && (max_chunk as u64) < cluster {
            return err(format!(
                "Required max-chunk ({max_chunk}) is less than backup cluster size ({cluster})"
            ));
        }
        let id = match a.job_id {
            Some(i) => i.to_string(),
            None => self.device_name(&bs),
        };
        let spec = BackupSpec {
            id: id.clone(),
            source: bs.clone(),
            target: target.clone(),
            sync,
            cluster,
            on_source_error: a.on_source_error,
            on_target_error: a.on_target_error,
            owns_target,
            bitmap: bitmap.map(|(b, m)| SyncBitmap::new(b, m)),
        };
        let driver = Backup::new(spec).map_err(BlockError::new)?;
        Ok(BackupStart {
            plan: JobPlan {
                id,
                driver: Box::new(driver),
                nodes: vec![bs, target],
            },
            warning,
        })
    }
}

/// `block_copy_calculate_cluster_size`: the target's cluster size, at
/// least 64 KiB; a target that cannot tell (raw) and has no backing gets
/// the default with QEMU's warning.
fn cluster_size(target: &Node) -> (u64, Option<String>) {
    match target.driver.image_info() {
        Some(i) => (i.cluster_size.max(DEFAULT_CLUSTER), None),
        None if target.child("backing").is_some() => (DEFAULT_CLUSTER, None),
        None => (
            DEFAULT_CLUSTER,
            Some(format!(
                "The target block device doesn't provide information about the block size \
                 and it doesn't have a backing file. The default block size of {DEFAULT_CLUSTER} \
                 bytes is used. If the actual block size of the target exceeds this default, \
                 the backup may be unusable"
            )),
        ),
    }
}
