//! External snapshots (QEMU 7.2 blockdev.c `external_snapshot_prepare`,
//! block.c `bdrv_append`): a new overlay goes on top of a node, the node
//! becomes the overlay's backing file, and every device on the node moves
//! to the overlay. The caller runs this in a drained section, so no request
//! is in flight while the devices switch and none is lost.

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::engine::sync_ops;
use crate::error::BlockError;
use crate::graph::BlockGraph;
use crate::io::Route;
use crate::node::Node;
use crate::qcow2::{create, CreateOptions, ImageFile};

/// `blockdev-snapshot-sync`'s arguments.
pub struct SnapshotSync<'a> {
    pub device: Option<&'a str>,
    pub node_name: Option<&'a str>,
    pub snapshot_file: &'a str,
    pub snapshot_node_name: Option<&'a str>,
    pub format: Option<&'a str>,
    /// `mode=existing`: the file is there already (else it is created with
    /// the node as its backing file, `absolute-paths`).
    pub existing: bool,
}

impl BlockGraph {
    /// QMP `blockdev-snapshot-sync`.
    pub fn snapshot_sync(&mut self, a: &SnapshotSync<'_>) -> Result<(), BlockError> {
        let old = self.lookup_bs(a.device, a.node_name)?;
        self.check_op_blocker(&old)?;
        if a.node_name.is_some() && a.snapshot_node_name.is_none() {
            return Err(BlockError::new("New overlay node-name missing"));
        }
        if let Some(n) = a.snapshot_node_name {
            if self.node(n).is_some() || self.backend(n).is_some() {
                return Err(BlockError::new("New overlay node-name already in use"));
            }
        }
        self.flush_node(&old)?;
        let format = a.format.unwrap_or("qcow2");
        if !a.existing {
            if format != "qcow2" {
                return Err(BlockError::new(format!(
                    "ferrovm: snapshot overlays are created as qcow2 only, not '{format}'"
                )));
            }
            let size = old.size()?;
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(a.snapshot_file)
                .map_err(|e| {
                    BlockError::new(format!(
                        "Could not create '{}': {}",
                        a.snapshot_file,
                        crate::error::strerror(e.raw_os_error().unwrap_or(libc::EIO))
                    ))
                })?;
            let mut o = CreateOptions::new(size);
            o.backing_file = Some(old.filename());
            o.backing_format = Some(old.driver.format_name().to_string());
            create(Arc::new(file) as Arc<dyn ImageFile>, &o)
                .map_err(|e| BlockError::new(e.to_string()))?;
        }
        let mut opts = Map::new();
        opts.insert("driver".into(), Value::from(format));
        if let Some(n) = a.snapshot_node_name {
            opts.insert("node-name".into(), Value::from(n));
        }
        let mut file = Map::new();
        file.insert("driver".into(), Value::from("file"));
        file.insert("filename".into(), Value::from(a.snapshot_file));
        opts.insert("file".into(), Value::Object(file));
        if format == "qcow2" {
            // BDRV_O_NO_BACKING: the backing is attached below.
            opts.insert("backing".into(), Value::Null);
        }
        let new = self.open_overlay(opts, &old)?;
        self.append(&new, &old)
    }

    /// QMP `blockdev-snapshot`: `overlay` (added with `backing: null`)
    /// goes on top of `node`.
    pub fn snapshot(&mut self, node: &str, overlay: &str) -> Result<(), BlockError> {
        let old = self.lookup_bs(Some(node), Some(node))?;
        self.check_op_blocker(&old)?;
        let new = self.node(overlay).cloned().ok_or_else(|| {
            BlockError::new(format!(
                "Cannot find device='{overlay}' nor node-name='{overlay}'"
            ))
        })?;
        self.flush_node(&old)?;
        if new.perms().0 & crate::perm::CONSISTENT_READ != 0 {
            return Err(BlockError::new("The overlay is already in use"));
        }
        if new.child("backing").is_some() {
            return Err(BlockError::new("The overlay already has a backing image"));
        }
        if new.driver.format_io().is_none() {
            return Err(BlockError::new(
                "The overlay does not support backing images",
            ));
        }
        self.append(&new, &old)
    }

    fn flush_node(&self, n: &Arc<Node>) -> Result<(), BlockError> {
        if n.flags().read_only {
            return Ok(());
        }
        let r = match (n.driver.format_io(), n.resolve_file()) {
            (Some(f), _) => f.flush(),
            (None, Some(dp)) => sync_ops::flush(&dp.io).map(|_| ()),
            (None, None) => Ok(()),
        };
        r.map_err(|_| BlockError::new("Input/output error"))
    }

    /// `bdrv_append(new, old)`: `old` becomes `new`'s backing child, and
    /// every parent of `old` (devices, parent nodes) moves to `new` with
    /// its permissions.
    pub(crate) fn append(&mut self, new: &Arc<Node>, old: &Arc<Node>) -> Result<(), BlockError> {
        new.set_backing(old.clone())?;
        if let Err(e) = self.replace_node(old, new) {
            let _ = new.replace_backing(None);
            return Err(e);
        }
        Ok(())
    }
}

impl BlockGraph {
    /// `external_snapshot_abort`: the devices go back from the overlay the
    /// snapshot of `old` put them on, which loses its backing; an overlay
    /// the snapshot opened itself (`blockdev-snapshot-sync`) is closed.
    /// Returns false if `old` had no overlay of this transaction.
    pub fn undo_snapshot(&mut self, old: &Arc<Node>, opened: bool) -> bool {
        let Some(new) = self
            .backends()
            .iter()
            .filter_map(|b| b.root())
            .find(|r| r.child("backing").is_some_and(|c| Arc::ptr_eq(&c, old)))
        else {
            return false;
        };
        if self.replace_node(&new, old).is_err() {
            return false;
        }
        let _ = new.replace_backing(None);
        if opened {
            self.drop_if_unused(&new);
        }
        true
    }

    /// `bdrv_replace_node` for the devices: every backend on `from` moves
    /// to `to`, with the permissions it held (snapshots, a mirror's pivot).
    pub(crate) fn move_devices(&self, from: &Arc<Node>, to: &Arc<Node>) -> Result<(), BlockError> {
        for b in self.backends() {
            if !b.root().is_some_and(|r| Arc::ptr_eq(&r, from)) {
                continue;
            }
            let id = b.inner.parent_id;
            let held = from.parent_perm(id);
            to.set_parent_perm(id, held)?;
            from.set_parent_perm(id, None)?;
            b.inner.set_route(Route::of(Some(to.clone())));
        }
        Ok(())
    }
}
