//! The block graph: every node by name and every BlockBackend, built from
//! `-drive` (QEMU blockdev.c `drive_new`/`blockdev_init`) and `-blockdev`
//! (`qmp_blockdev_add`), with QEMU's validation and error texts.

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::drive_throttle;
use crate::error::BlockError;
use crate::file::FileDriver;
use crate::io::{check_resize_size, Backend, BlockBackend};
use crate::node::{Child, Driver, Node, NodeFlags};
use crate::options::{nest, Opts};
use crate::perm;
use crate::policy::{CacheMode, OnError};
use crate::qcow2_node::{Qcow2Driver, Qcow2Options};
use crate::raw::RawDriver;

/// The drivers [`BlockGraph`] opens: every name `open_node`'s `match`
/// dispatches on, listed once (`-drive format=help` prints them; the tests
/// check that each opens and that every other QEMU driver is refused).
/// A driver added to the match goes here too.
pub const DRIVER_NAMES: &[&str] = &[
    "blkdebug",
    "copy-on-read",
    "file",
    "host_device",
    "null-aio",
    "null-co",
    "qcow2",
    "quorum",
    "raw",
    "throttle",
];

/// [`DRIVER_NAMES`] sorted, as QEMU's `bdrv_iterate_format` lists them.
pub fn driver_names() -> Vec<&'static str> {
    let mut v = DRIVER_NAMES.to_vec();
    v.sort_unstable();
    v
}

/// QEMU 7.2's `BlockdevDriver` values on this host that ferrovm has no
/// driver for: refused by name rather than as unknown.
const QEMU_DRIVERS: &[&str] = &[
    "blklogwrites",
    "blkreplay",
    "blkverify",
    "bochs",
    "cloop",
    "compress",
    "copy-before-write",
    "dmg",
    "snapshot-access",
    "ftp",
    "ftps",
    "gluster",
    "host_cdrom",
    "host_device",
    "http",
    "https",
    "iscsi",
    "luks",
    "nbd",
    "nfs",
    "nvme",
    "parallels",
    "preallocate",
    "qcow",
    "qed",
    "rbd",
    "ssh",
    "vdi",
    "vhdx",
    "vmdk",
    "vpc",
    "vvfat",
];

/// A block or character device (`hdev_probe_device`).
fn is_device(filename: Option<&str>) -> bool {
    use std::os::unix::fs::FileTypeExt;
    filename
        .and_then(|f| std::fs::metadata(f).ok())
        .is_some_and(|m| m.file_type().is_block_device() || m.file_type().is_char_device())
}

/// Protocol drivers: a `-drive` with one of them as its format opens the
/// filename with it directly, with no format node above.
const PROTOCOLS: &[&str] = &["file", "blkdebug", "null-co", "null-aio"];

/// `bdrv_find_protocol`: the protocol driver a file name's prefix names,
/// else `file` (`host_device` for a device).
pub(crate) fn protocol_of(filename: Option<&str>) -> &'static str {
    match filename {
        Some(f) if f.starts_with("blkdebug:") => "blkdebug",
        Some(f) if f.starts_with("null-co:") => "null-co",
        Some(f) if f.starts_with("null-aio:") => "null-aio",
        f if is_device(f) => "host_device",
        _ => "file",
    }
}

/// Format probing (`bdrv_probe_all`) as far as ferrovm has formats: the
/// qcow2 magic `QFI\xfb`, else raw.
pub(crate) fn probe_qcow2(filename: Option<&str>) -> bool {
    use std::io::Read;
    let Some(mut f) = filename else { return false };
    // The probe reads through the protocol (bdrv_open_inherit probes the
    // opened file): a `blkdebug:CONFIG:IMAGE` name probes IMAGE.
    let inner;
    if protocol_of(Some(f)) == "blkdebug" {
        let Ok((_, img)) = crate::blkdebug::parse_filename(f) else {
            return false;
        };
        inner = img;
        f = &inner;
    }
    let mut magic = [0u8; 4];
    std::fs::File::open(f)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok_and(|()| magic == *b"QFI\xfb")
}

/// How leftover options are reported.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Syntax {
    /// `-blockdev`/`blockdev-add`: "Parameter 'K' is unexpected".
    Blockdev,
    /// `-drive`: "Block format 'raw' does not support the option 'K'".
    Drive,
}

/// Options for [`BlockGraph::attach`] (the device's drive properties).
#[derive(Debug, Clone, Copy, Default)]
pub struct AttachOptions {
    /// `share-rw=on`: other writers are allowed.
    pub share_rw: bool,
    /// The device is read-only (e.g. a CD-ROM) even on a writable drive.
    pub read_only: bool,
    /// The device has removable media with a tray (a CD-ROM): its drive
    /// may be empty, and query-block shows `removable` and `tray_open`
    /// (QEMU's `BlockDevOps` `change_media_cb` and `is_tray_open`).
    pub removable: bool,
}

#[derive(Default)]
pub struct BlockGraph {
    /// In creation order (QEMU's `graph_bdrv_states`).
    nodes: Vec<Arc<Node>>,
    /// In creation order (QEMU's `block_backends`).
    backends: Vec<BlockBackend>,
    /// `id_generate(ID_BLOCK)` counter.
    auto_counter: u64,
    warnings: Vec<String>,
    /// Root nodes of `-blockdev` / `blockdev-add`: the monitor owns them and
    /// may delete them (QEMU's `monitor_bdrv_states`).
    monitor_owned: Vec<String>,
    /// Nodes a block job works on, by job id, and the job's type: other
    /// operations on them fail (QEMU's op blockers, `block_job_add_bdrv`).
    job_blockers: Vec<(String, &'static str, Vec<Arc<Node>>)>,
    /// `throttle-group` objects (`/objects/ID`), in creation order.
    pub(crate) throttle_groups: Vec<crate::throttle_group::ThrottleGroupObject>,
    /// The other `-object`s (id, qom-type): ferrovm does not use them, but
    /// their ids are taken in `/objects`.
    pub(crate) other_objects: Vec<(String, String)>,
}

/// `id_wellformed`: a letter, then letters, digits, '-', '.', '_'.
pub fn id_wellformed(id: &str) -> bool {
    let mut c = id.chars();
    c.next().is_some_and(|f| f.is_ascii_alphabetic())
        && c.all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '.' | '_'))
}

fn random_below_100() -> u32 {
    let mut b = [0u8; 4];
    // SAFETY: getrandom writes at most 4 bytes into b.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), 4, 0) };
    if n != 4 {
        return (std::process::id()
            ^ std::time::UNIX_EPOCH
                .elapsed()
                .map_or(0, |d| d.subsec_nanos()))
            % 100;
    }
    u32::from_ne_bytes(b) % 100
}

impl BlockGraph {
    pub fn new() -> Self {
        Self::default()
    }

    /// Warnings QEMU would print on stderr (format probing).
    pub fn take_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.warnings)
    }

    /// Nodes in creation order.
    pub fn nodes(&self) -> &[Arc<Node>] {
        &self.nodes
    }

    pub fn backends(&self) -> &[BlockBackend] {
        &self.backends
    }

    /// A BlockBackend that is not a device's or a drive's (an export's,
    /// QEMU's `blk_new` + `blk_insert_bs`): its parent permissions are
    /// already taken.
    pub(crate) fn insert_backend(&mut self, bb: BlockBackend) {
        self.backends.push(bb);
    }

    /// The backend goes (`blk_unref`): its permissions are dropped, and so
    /// is its root if nothing else holds it.
    pub(crate) fn remove_backend(&mut self, bb: &BlockBackend) {
        self.backends.retain(|b| !b.same(bb));
        if let Some(r) = bb.root() {
            let _ = r.set_parent_perm(bb.inner.parent_id, None);
            self.drop_if_unused(&r);
        }
    }

    /// Whether the monitor owns node `name` (`-blockdev`, `blockdev-add`).
    pub(crate) fn monitor_owns(&self, name: &str) -> bool {
        self.monitor_owned.iter().any(|n| n == name)
    }

    pub fn node(&self, name: &str) -> Option<&Arc<Node>> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The BlockBackend attached to the device at QOM path `qdev`.
    pub fn backend_of_device(&self, qdev: &str) -> Option<BlockBackend> {
        self.backends
            .iter()
            .find(|b| b.inner.dev().qdev.as_deref() == Some(qdev))
            .cloned()
    }

    /// A BlockBackend by drive id.
    pub fn backend(&self, name: &str) -> Option<&BlockBackend> {
        self.backends
            .iter()
            .find(|b| !b.name().is_empty() && b.name() == name)
    }

    /// QEMU `id_generate(ID_BLOCK)`: `#block` + counter + two random digits.
    pub(crate) fn auto_name(&mut self) -> String {
        let n = format!("#block{}{:02}", self.auto_counter, random_below_100());
        self.auto_counter += 1;
        n
    }

    /// `-blockdev`: a node (and its inline children) by name.
    pub fn add_blockdev(&mut self, opts: &Map<String, Value>) -> Result<Arc<Node>, BlockError> {
        let map = nest(opts);
        if !map.contains_key("node-name") {
            return Err(BlockError::new(
                "'node-name' must be specified for the root node",
            ));
        }
        let node = self.open_node(map, NodeFlags::default(), String::new(), Syntax::Blockdev)?;
        self.monitor_owned.push(node.name.clone());
        Ok(node)
    }

    /// A snapshot's new overlay, opened with the flags of the node it will
    /// sit on (`external_snapshot_prepare`: `old_bs->open_flags`).
    pub(crate) fn open_overlay(
        &mut self,
        opts: Map<String, Value>,
        old: &Node,
    ) -> Result<Arc<Node>, BlockError> {
        let flags = NodeFlags {
            read_only: false,
            ..old.flags()
        };
        self.open_node(opts, flags, String::new(), Syntax::Blockdev)
    }

    /// A node defined inline where a BlockdevRef may be a definition
    /// (`bdrv_open_blockdev_ref`); the caller removes it when done.
    pub(crate) fn open_inline(
        &mut self,
        opts: Map<String, Value>,
    ) -> Result<Arc<Node>, BlockError> {
        self.open_node(opts, NodeFlags::default(), String::new(), Syntax::Blockdev)
    }

    /// QMP `blockdev-del` (blockdev.c `qmp_blockdev_del`): a monitor-owned
    /// node nobody uses goes, with the inline children only it holds.
    pub fn blockdev_del(&mut self, name: &str) -> Result<(), BlockError> {
        let Some(node) = self.node(name).cloned() else {
            return Err(BlockError::new(format!(
                "Failed to find node with node-name='{name}'"
            )));
        };
        if self
            .backends
            .iter()
            .any(|b| b.root().is_some_and(|r| Arc::ptr_eq(&r, &node)))
        {
            return Err(BlockError::new(format!("Node {name} is in use")));
        }
        self.check_op_blocker(&node)?;
        if !self.monitor_owned.iter().any(|n| n == name) {
            return Err(BlockError::new(format!(
                "Node {name} is not owned by the monitor"
            )));
        }
        let parents = self
            .nodes
            .iter()
            .filter(|n| n.children().iter().any(|c| Arc::ptr_eq(&c.node, &node)))
            .count();
        if parents > 0 {
            return Err(BlockError::new(format!("Block device {name} is in use")));
        }
        self.monitor_owned.retain(|n| n != name);
        self.remove_subtree(&node);
        Ok(())
    }

    /// Drops `node` (and its children nobody else holds) when no device,
    /// no node and not the monitor holds it (`bdrv_unref` of the last
    /// reference).
    pub(crate) fn drop_if_unused(&mut self, node: &Arc<Node>) {
        let held = self.monitor_owned.iter().any(|n| *n == node.name)
            || self
                .nodes
                .iter()
                .any(|n| n.children().iter().any(|c| Arc::ptr_eq(&c.node, node)))
            || self
                .backends
                .iter()
                .any(|b| b.root().is_some_and(|r| Arc::ptr_eq(&r, node)));
        if !held {
            self.remove_subtree(node);
        }
    }

    /// `bdrv_assign_node_name`'s checks for a node named `n`.
    pub(crate) fn check_new_node_name(&self, n: &str) -> Result<(), BlockError> {
        if !id_wellformed(n) {
            return Err(BlockError::new(format!("Invalid node-name: '{n}'")));
        }
        if self.backend(n).is_some() {
            return Err(BlockError::new(format!(
                "node-name={n} is conflicting with a device id"
            )));
        }
        if self.node(n).is_some() {
            return Err(BlockError::new(format!(
                "Duplicate nodes with node-name='{n}'"
            )));
        }
        if n.len() >= 32 {
            return Err(BlockError::new("Node name too long"));
        }
        Ok(())
    }

    /// A node made outside [`Self::open_node`] (a job's filter) joins the
    /// graph, newest last as QEMU's `graph_bdrv_states`.
    pub(crate) fn add_node(&mut self, node: Arc<Node>) {
        self.nodes.push(node);
    }

    /// `node` leaves the graph; its children stay.
    pub(crate) fn remove_node(&mut self, node: &Arc<Node>) {
        self.nodes.retain(|n| !Arc::ptr_eq(n, node));
    }

    /// Drops `node` and every child no other node or backend still holds.
    pub(crate) fn remove_subtree(&mut self, node: &Arc<Node>) {
        self.nodes.retain(|n| !Arc::ptr_eq(n, node));
        for c in &node.children() {
            let held = self.monitor_owned.iter().any(|n| *n == c.node.name)
                || self
                    .nodes
                    .iter()
                    .any(|n| n.children().iter().any(|cc| Arc::ptr_eq(&cc.node, &c.node)))
                || self
                    .backends
                    .iter()
                    .any(|b| b.root().is_some_and(|r| Arc::ptr_eq(&r, &c.node)));
            if !held {
                let child = c.node.clone();
                self.remove_subtree(&child);
            }
        }
    }

    /// `-drive`: the format node over a `file` node (auto-named unless
    /// `node-name=`) and a BlockBackend named `id`. `opts` is every key
    /// as given (`cli::DriveSpec::opts`, strings, dotted child keys).
    pub fn add_drive(
        &mut self,
        id: &str,
        opts: &Map<String, Value>,
    ) -> Result<BlockBackend, BlockError> {
        if self.node(id).is_some() {
            return Err(BlockError::new(format!(
                "Device name '{id}' conflicts with an existing node name"
            )));
        }
        let mut flat = opts.clone();
        drive_throttle::rename_legacy(&mut flat)?;
        let mut o = Opts::new(nest(&flat));
        // Keys the CLI and the device layer own.
        for k in [
            "id", "if", "index", "bus", "unit", "media", "serial", "addr", "boot", "trans", "cyls",
            "heads", "secs",
        ] {
            o.take(k);
        }
        // Checked before the image opens, as blockdev_init does; set up
        // once the backend exists. Unknown `throttling.*` keys go on to the
        // format's "does not support the option" error.
        let mut unknown = Map::new();
        let (throttle, throttle_group) =
            drive_throttle::extract(o.take("throttling"), &mut unknown)?;
        let werror = match o.take_str("werror")? {
            Some(s) => OnError::parse(&s, false)?,
            None => OnError::Enospc,
        };
        let rerror = match o.take_str("rerror")? {
            Some(s) => OnError::parse(&s, true)?,
            None => OnError::Report,
        };
        if o.take_bool("snapshot")?.unwrap_or(false) {
            return Err(BlockError::new("ferrovm: snapshot=on is not supported"));
        }
        if o.take_bool("copy-on-read")?.unwrap_or(false) {
            return Err(BlockError::new("ferrovm: copy-on-read=on is not supported"));
        }
        let mut flags = NodeFlags::default();
        let ro_a = o.take_bool("readonly")?;
        let ro_b = o.take_bool("read-only")?;
        flags.read_only = ro_a.or(ro_b).unwrap_or(false);
        let mut writeback = true;
        if let Some(c) = o.take_str("cache")? {
            let m = CacheMode::parse(&c)?;
            writeback = m.writeback;
            flags.direct = m.direct;
            flags.no_flush = m.no_flush;
        }
        let mut cache = match o.take("cache") {
            Some(Value::Object(m)) => Opts::child(m, "cache.".into()),
            _ => Opts::new(Map::new()),
        };
        if let Some(w) = cache.take_bool("writeback")? {
            writeback = w;
        }
        // blockdev.c blockdev_init: no file and no format or driver option
        // left is an empty drive (a BlockBackend without a medium).
        let opts_file = o.take("file").filter(|f| f.as_str() != Some(""));
        // A driver that opens no file of its own (quorum: its children
        // have theirs) is opened from the options alone (bdrv_open with no
        // filename).
        let fileless = opts_file.is_none()
            && [o.get("format"), o.get("driver")]
                .iter()
                .any(|v| v.and_then(Value::as_str) == Some("quorum"));
        if opts_file.is_none() && !fileless {
            if !o
                .remaining_keys()
                .all(|k| matches!(k.as_str(), "aio" | "discard" | "detect-zeroes"))
            {
                return Err(BlockError::new(
                    "A block device must be specified for \"file\"",
                ));
            }
            let be = Backend::new(
                id.to_string(),
                None,
                flags.read_only,
                writeback,
                werror,
                rerror,
            );
            let bb = BlockBackend {
                inner: Arc::new(be),
            };
            if throttle.enabled() {
                bb.set_throttle(throttle, throttle_group.as_deref(), id)?;
            }
            self.backends.push(bb.clone());
            return Ok(bb);
        }
        // Protocol node: `file=` string, plus `file.*`, plus drive-level aio.
        let mut file = match opts_file {
            Some(Value::String(s)) => {
                let mut m = Map::new();
                m.insert("filename".into(), Value::String(s));
                m
            }
            Some(Value::Object(m)) => m,
            None if fileless => Map::new(),
            Some(_) | None => {
                return Err(BlockError::new(
                    "A block device must be specified for \"file\"",
                ))
            }
        };
        let mut top = Map::new();
        // `driver=` names the node's driver as `format=` does.
        let drv_opt = o.take_str("driver")?;
        let driver = match o.take_str("format")?.or(drv_opt) {
            Some(f) => f,
            None if probe_qcow2(file.get("filename").and_then(Value::as_str)) => "qcow2".into(),
            None => {
                let file = file.get("filename").and_then(Value::as_str).unwrap_or("");
                self.warnings.push(format!(
                    "Image format was not specified for '{file}' and probing guessed raw.\n         Automatically detecting the format is dangerous for raw images, write operations on block 0 will be restricted.\n         Specify the 'raw' format explicitly to remove the restrictions."
                ));
                "raw".to_string()
            }
        };
        if !matches!(driver.as_str(), "raw" | "qcow2" | "quorum")
            && !PROTOCOLS.contains(&driver.as_str())
        {
            return Err(BlockError::new(format!("Unknown driver '{driver}'")));
        }
        top.insert("driver".into(), Value::String(driver.clone()));
        if let Some(a) = o.take("aio") {
            file.entry("aio").or_insert(a);
        }
        if let Some(d) = o.take("discard") {
            top.insert("discard".into(), d);
        }
        if let Some(d) = o.take("detect-zeroes") {
            top.insert("detect-zeroes".into(), d);
        }
        for (k, v) in o.into_map().into_iter().chain(unknown) {
            top.insert(k, v);
        }
        let root = if fileless {
            self.open_node(top, flags, String::new(), Syntax::Drive)?
        } else if PROTOCOLS.contains(&driver.as_str()) {
            for (k, v) in file {
                top.entry(k).or_insert(v);
            }
            self.open_node(top, flags, String::new(), Syntax::Drive)?
        } else {
            // bdrv_find_protocol: by the file name's prefix; a device path
            // takes host_device.
            let proto = protocol_of(file.get("filename").and_then(Value::as_str));
            file.entry("driver").or_insert(Value::String(proto.into()));
            top.insert("file".into(), Value::Object(file));
            self.open_node(top, flags, String::new(), Syntax::Drive)?
        };
        let be = Backend::new(
            id.to_string(),
            Some(root.clone()),
            root.flags().read_only,
            writeback,
            werror,
            rerror,
        );
        let bb = BlockBackend {
            inner: Arc::new(be),
        };
        if throttle.enabled() {
            // blockdev_init: the group defaults to the drive's id.
            bb.set_throttle(throttle, throttle_group.as_deref(), id)?;
        }
        // Observed on QEMU 7.2: a -drive without a device holds only
        // "consistent read" (byte 100); the device takes the rest on attach.
        root.set_parent_perm(bb.inner.parent_id, Some((perm::CONSISTENT_READ, perm::ALL)))?;
        self.backends.push(bb.clone());
        Ok(bb)
    }

    fn open_node(
        &mut self,
        map: Map<String, Value>,
        inherit: NodeFlags,
        prefix: String,
        syntax: Syntax,
    ) -> Result<Arc<Node>, BlockError> {
        let mut o = Opts::child(map, prefix.clone());
        let driver = o
            .take_str("driver")?
            .ok_or_else(|| BlockError::new(format!("Parameter '{prefix}driver' is missing")))?;
        let name = o.take_str("node-name")?;
        if let Some(n) = &name {
            self.check_new_node_name(n)?;
        }
        let mut flags = inherit;
        if let Some(r) = o.take_bool("read-only")? {
            flags.read_only = r;
        }
        if let Some(Value::Object(c)) = o.take("cache") {
            let mut c = Opts::child(c, format!("{prefix}cache."));
            if let Some(d) = c.take_bool("direct")? {
                flags.direct = d;
            }
            if let Some(n) = c.take_bool("no-flush")? {
                flags.no_flush = n;
            }
            c.finish()?;
        }
        if let Some(d) = o.take_enum("discard", &["ignore", "off", "unmap", "on"])? {
            flags.discard = matches!(d.as_str(), "unmap" | "on");
        }
        let detect_zeroes = o.take_enum("detect-zeroes", &["off", "on", "unmap"])?;
        let mut name = name;
        let mut reserved = None;
        if let Some(a) = o.take_bool("auto-read-only")? {
            flags.auto_read_only = a;
        }
        o.take_bool("force-share")?;
        let (drv, children): (Box<dyn Driver>, Vec<Child>) = match driver.as_str() {
            "file" => (
                Box::new(FileDriver::open(
                    &mut o,
                    &flags,
                    flags.auto_read_only,
                    false,
                )?),
                Vec::new(),
            ),
            "host_device" => (
                Box::new(FileDriver::open(
                    &mut o,
                    &flags,
                    flags.auto_read_only,
                    true,
                )?),
                Vec::new(),
            ),
            "qcow2" => {
                let file = self.child_node(&mut o, "file", flags, &prefix, syntax)?;
                // QEMU names the node and lists it before it opens the
                // backing chain (bdrv_open_common, then bdrv_open_backing_file):
                // that decides the `#block` counters and the listing order.
                reserved = Some((self.take_name(name.take()), self.nodes.len()));
                self.open_qcow2(&mut o, file, flags, &prefix, syntax)?
            }
            "blkdebug" => {
                // A protocol driver opens its children itself, after the
                // node is named (bdrv_open_common, then bdrv_file_open).
                reserved = Some((self.take_name(name.take()), self.nodes.len()));
                self.open_blkdebug(&mut o, flags, &prefix, syntax)?
            }
            "null-co" | "null-aio" => {
                let name = if driver == "null-co" {
                    "null-co"
                } else {
                    "null-aio"
                };
                let latency_ns = match o.take("latency-ns") {
                    None => None,
                    // A uint64 in QAPI, read into an int64 (-1 stays -1).
                    Some(Value::Number(n)) => n.as_i64().or_else(|| n.as_u64().map(|u| u as i64)),
                    Some(Value::String(s)) => Some(s.parse::<i64>().map_err(|_| {
                        BlockError::new(format!("Parameter '{prefix}latency-ns' expects a number"))
                    })?),
                    Some(_) => {
                        return Err(BlockError::new(format!(
                            "Invalid parameter type for '{prefix}latency-ns', expected: integer"
                        )))
                    }
                };
                let d = crate::null::NullDriver::open(
                    name,
                    crate::null::NullOptions {
                        filename: o.take_str("filename")?,
                        size: o.take_size("size")?,
                        latency_ns,
                        read_zeroes: o.take_bool("read-zeroes")?,
                    },
                )?;
                (Box::new(d), Vec::new())
            }
            "copy-on-read" => {
                let file = self.child_node(&mut o, "file", flags, &prefix, syntax)?;
                let bottom =
                    match o.take_str("bottom")? {
                        Some(b) => Some(self.node(&b).cloned().ok_or_else(|| {
                            BlockError::new(format!("Bottom node '{b}' not found"))
                        })?),
                        None => None,
                    };
                let d = crate::cor::CorDriver::open(file.clone(), bottom)?;
                (Box::new(d), vec![Child::new("file", file)])
            }
            "throttle" => {
                let file = self.child_node(&mut o, "file", flags, &prefix, syntax)?;
                let group = o.take_str("throttle-group")?;
                if group.is_none() && syntax == Syntax::Blockdev {
                    // The QAPI member is mandatory.
                    return Err(BlockError::new(format!(
                        "Parameter '{prefix}throttle-group' is missing"
                    )));
                }
                let d = crate::throttle_filter::ThrottleFilter::open(file.clone(), group)?;
                (Box::new(d), vec![Child::new("file", file)])
            }
            "quorum" => {
                // quorum_open runs once the node is named (bdrv_open_common).
                let (qname, auto) = self.take_name(name.take());
                reserved = Some(((qname.clone(), auto), self.nodes.len()));
                self.open_quorum(&mut o, qname, flags, &prefix, syntax)?
            }
            "raw" => {
                let child = self.child_node(&mut o, "file", flags, &prefix, syntax)?;
                let offset = o.take_size("offset")?;
                let size = o.take_size("size")?;
                let d = RawDriver::open(child.clone(), offset, size)?;
                (Box::new(d), vec![Child::new("file", child)])
            }
            _ if syntax == Syntax::Drive => {
                return Err(BlockError::new(format!("Unknown driver '{driver}'")))
            }
            d if QEMU_DRIVERS.contains(&d) => {
                return Err(BlockError::new(format!(
                    "ferrovm: block driver '{d}' is not supported (only {})",
                    driver_names().join(", ")
                )))
            }
            _ => {
                return Err(BlockError::new(format!(
                    "Parameter '{prefix}driver' does not accept value '{driver}'"
                )))
            }
        };
        if let Some(k) = o.remaining_keys().next() {
            return Err(match syntax {
                Syntax::Blockdev => {
                    BlockError::new(format!("Parameter '{prefix}{k}' is unexpected"))
                }
                Syntax::Drive if PROTOCOLS.contains(&driver.as_str()) => BlockError::new(format!(
                    "Block protocol '{driver}' doesn't support the option '{k}'"
                )),
                Syntax::Drive => BlockError::new(format!(
                    "Block format '{driver}' does not support the option '{k}'"
                )),
            });
        }
        let ((name, auto), at) = match reserved {
            Some(r) => r,
            None => (self.take_name(name), self.nodes.len()),
        };
        let mut node = Node::new(name, auto, flags, drv, children);
        if let Some(dz) = detect_zeroes {
            node.detect_zeroes = dz;
        }
        let node = Arc::new(node);
        if driver == "quorum" {
            // quorum's children share only read and unchanged writes
            // (quorum_child_perm), from the start as in QEMU.
            node.take_child_perms()?;
        }
        self.nodes.insert(at, node.clone());
        Ok(node)
    }

    /// `blkdebug_open`: the filename (`blkdebug:CONFIG:IMAGE`), the rules,
    /// then the `image` child (given, or opened from the filename's image
    /// part), then the limits.
    fn open_blkdebug(
        &mut self,
        o: &mut Opts,
        flags: NodeFlags,
        prefix: &str,
        syntax: Syntax,
    ) -> Result<(Box<dyn Driver>, Vec<Child>), BlockError> {
        use crate::blkdebug::{parse_filename, BlkdebugOptions, Limits, Pending};
        let (fconf, fimage) = match o.take_str("filename")? {
            Some(f) => {
                let (c, i) = parse_filename(&f)?;
                (c, Some(i))
            }
            None => (None, None),
        };
        let config = o.take_str("config")?.or(fconf);
        let x_image = o.take_str("x-image")?.or(fimage);
        let aio = if syntax == Syntax::Drive {
            o.take("aio")
        } else {
            None
        };
        let mut other = Vec::new();
        for k in [
            "align",
            "max-transfer",
            "opt-write-zero",
            "max-write-zero",
            "opt-discard",
            "max-discard",
        ] {
            if let Some(v) = o.take(k) {
                other.push((k.to_string(), v));
            }
        }
        let mut lo = Opts::child(other.iter().cloned().collect(), prefix.to_string());
        let limits = Limits {
            align: lo.take_size("align")?,
            max_transfer: lo.take_size("max-transfer")?,
            opt_write_zero: lo.take_size("opt-write-zero")?,
            max_write_zero: lo.take_size("max-write-zero")?,
            opt_discard: lo.take_size("opt-discard")?,
            max_discard: lo.take_size("max-discard")?,
        };
        let pending = Pending::read(BlkdebugOptions {
            config,
            inject_error: o.take("inject-error"),
            set_state: o.take("set-state"),
            take_child_perms: o.take("take-child-perms"),
            unshare_child_perms: o.take("unshare-child-perms"),
            other_options: other,
        })?;
        // bdrv_open_file_child(x-image, options, "image").
        let image = if o.has("image") {
            self.child_node(o, "image", flags, prefix, syntax)?
        } else if let Some(f) = x_image {
            let mut m = Map::new();
            // -drive aio= is a flag (BDRV_O_NATIVE_AIO) every node inherits;
            // here it goes on to the image's own file node.
            if let Some(a) = aio {
                m.insert("aio".into(), a);
            }
            m.insert("driver".into(), Value::String(protocol_of(Some(&f)).into()));
            m.insert("filename".into(), Value::String(f));
            let n = self.open_node(m, flags, format!("{prefix}image."), syntax)?;
            n.inherited
                .store(true, std::sync::atomic::Ordering::Relaxed);
            n
        } else if syntax == Syntax::Blockdev {
            // The QAPI visitor's check (BlockdevOptionsBlkdebug.image).
            return Err(BlockError::new(format!(
                "Parameter '{prefix}image' is missing"
            )));
        } else {
            return Err(BlockError::new(
                "A block device must be specified for \"image\"",
            ));
        };
        let d = pending.finish(image.clone(), limits)?;
        Ok((Box::new(d), vec![Child::new("image", image)]))
    }

    /// `quorum_open`: the options, then each child (a node name or an
    /// inline definition) as `children.N`.
    fn open_quorum(
        &mut self,
        o: &mut Opts,
        name: String,
        flags: NodeFlags,
        prefix: &str,
        syntax: Syntax,
    ) -> Result<(Box<dyn Driver>, Vec<Child>), BlockError> {
        use crate::quorum::{children_entries, QuorumConfig, QuorumDriver};
        let qapi = syntax == Syntax::Blockdev;
        let raw = o.take("children");
        if qapi && raw.is_none() {
            return Err(BlockError::new(format!(
                "Parameter '{prefix}children' is missing"
            )));
        }
        let entries = children_entries(raw)?;
        let cfg = QuorumConfig::parse(o, entries.len(), qapi)?;
        let mut nodes = Vec::with_capacity(entries.len());
        for (i, e) in entries.into_iter().enumerate() {
            let role = format!("children.{i}");
            let mut one = Map::new();
            let e = match e {
                Value::Object(m) if syntax == Syntax::Drive => {
                    Value::Object(self.drive_child_defaults(m))
                }
                e => e,
            };
            one.insert(role.clone(), e);
            let mut co = Opts::child(one, prefix.to_string());
            nodes.push(self.child_node(&mut co, &role, flags, prefix, syntax)?);
        }
        let children = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| Child::new(format!("children.{i}"), n.clone()))
            .collect();
        Ok((Box::new(QuorumDriver::new(name, cfg, nodes)), children))
    }

    /// A `-drive` child's defaults (bdrv_open_inherit): its file's protocol
    /// from the file name, and without a driver (`children.0.file.filename=`)
    /// the format probed from that file.
    fn drive_child_defaults(&mut self, mut m: Map<String, Value>) -> Map<String, Value> {
        let filename = match m.get_mut("file") {
            Some(Value::Object(f)) => {
                let name = f
                    .get("filename")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                f.entry("driver")
                    .or_insert_with(|| Value::from(protocol_of(name.as_deref())));
                name
            }
            Some(Value::String(s)) => Some(s.clone()),
            _ => None,
        };
        if m.contains_key("driver") {
            return m;
        }
        let fmt = if probe_qcow2(filename.as_deref()) {
            "qcow2"
        } else {
            self.warnings.push(format!(
                "Image format was not specified for '{}' and probing guessed raw.\n         Automatically detecting the format is dangerous for raw images, write operations on block 0 will be restricted.\n         Specify the 'raw' format explicitly to remove the restrictions.",
                filename.as_deref().unwrap_or("")
            ));
            "raw"
        };
        m.insert("driver".into(), Value::from(fmt));
        m
    }

    /// The node's name: the user's, or the next automatic one.
    fn take_name(&mut self, name: Option<String>) -> (String, bool) {
        match name {
            Some(n) => (n, false),
            None => (self.auto_name(), true),
        }
    }

    /// A child given by reference (a node name) or inline (options), as
    /// `bdrv_open_child` takes it.
    fn child_node(
        &mut self,
        o: &mut Opts,
        role: &str,
        flags: NodeFlags,
        prefix: &str,
        syntax: Syntax,
    ) -> Result<Arc<Node>, BlockError> {
        match o.take(role) {
            Some(Value::String(r)) => self.node(&r).cloned().ok_or_else(|| {
                BlockError::new(format!("Cannot find device='{r}' nor node-name='{r}'"))
            }),
            Some(Value::Object(m)) => {
                let given = m.contains_key("read-only");
                // bdrv_inherited_options: a child passes discards down
                // unless its own options say otherwise (bdrv_co_pdiscard
                // honours the parent's policy first).
                let flags = NodeFlags {
                    discard: true,
                    ..flags
                };
                let n = self.open_node(m, flags, format!("{prefix}{role}."), syntax)?;
                n.inherited
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                n.read_only_given
                    .store(given, std::sync::atomic::Ordering::Relaxed);
                Ok(n)
            }
            Some(_) => Err(BlockError::new(format!(
                "Invalid parameter type for '{prefix}{role}', expected: string or object"
            ))),
            None => Err(BlockError::new(format!(
                "Parameter '{prefix}{role}' is missing"
            ))),
        }
    }

    /// `qcow2_open` over `file`, then the backing chain (`bdrv_open_backing_file`):
    /// `backing` names a node or gives its options, `null` means none, and
    /// absent means the one the image header names, opened read-only.
    fn open_qcow2(
        &mut self,
        o: &mut Opts,
        file: Arc<Node>,
        flags: NodeFlags,
        prefix: &str,
        syntax: Syntax,
    ) -> Result<(Box<dyn Driver>, Vec<Child>), BlockError> {
        let lazy = o.take_bool("lazy-refcounts")?;
        let pass = o.take_bool("pass-discard-request")?;
        let backing_opt = o.take("backing");
        let d = Qcow2Driver::open(
            file.clone(),
            !flags.read_only,
            Qcow2Options {
                lazy_refcounts: lazy,
                pass_discard: pass.unwrap_or(flags.discard),
            },
        )?;
        // bdrv_backing_options: read-only, no auto-read-only.
        let backing_flags = NodeFlags {
            read_only: true,
            auto_read_only: false,
            ..flags
        };
        // Only a backing opened without any options is the implicit one
        // (bdrv_open_backing_file's `implicit_backing`): with options, even
        // just a node-name, the overlay's filename becomes json:{...}.
        let implicit = backing_opt.is_none();
        let backing = match backing_opt {
            // `null`, or the empty string of the dotted syntax: no backing.
            Some(Value::Null) => None,
            Some(Value::String(r)) if r.is_empty() => None,
            Some(Value::String(r)) => Some(self.node(&r).cloned().ok_or_else(|| {
                BlockError::new(format!(
                    "Could not open backing file: Cannot find device='{r}' nor node-name='{r}'"
                ))
            })?),
            // Options for the backing file the header names, without its
            // driver or file (`-drive ...,backing.node-name=X`):
            // bdrv_open_backing_file opens the header's file with them, its
            // format from the header.
            Some(Value::Object(m))
                if !m.contains_key("driver") && d.image().info().backing_file.is_some() =>
            {
                let name = d.image().info().backing_file.unwrap_or_default();
                let fmt = d.image().info().backing_format;
                Some(self.open_backing_file_with(&file.filename(), &name, fmt, backing_flags, m)?)
            }
            Some(Value::Object(m)) => {
                Some(self.open_node(m, backing_flags, format!("{prefix}backing."), syntax)?)
            }
            Some(_) => {
                return Err(BlockError::new(format!(
                    "Invalid parameter type for '{prefix}backing', expected: string or null"
                )))
            }
            None => match d.image().info().backing_file {
                Some(name) => {
                    let fmt = d.image().info().backing_format;
                    Some(self.open_backing_file(&file.filename(), &name, fmt, backing_flags)?)
                }
                None => None,
            },
        };
        d.set_backing(backing.clone(), implicit);
        let mut children = vec![Child::new("file", file)];
        if let Some(b) = backing {
            children.push(Child::new("backing", b));
        }
        Ok((Box::new(d), children))
    }

    /// `bdrv_open_backing_file(bs, NULL, "backing")` on a node opened
    /// without its backing: the file its header names, opened as at open
    /// time and attached as the implicit backing. Nothing for a node whose
    /// header names none.
    pub(crate) fn open_header_backing(&mut self, node: &Arc<Node>) -> Result<(), BlockError> {
        let Some(q) = node.driver.as_qcow2() else {
            return Ok(());
        };
        let info = q.image().info();
        let Some(name) = info.backing_file else {
            return Ok(());
        };
        let Some(file) = node.child("file") else {
            return Ok(());
        };
        let flags = NodeFlags {
            read_only: true,
            auto_read_only: false,
            ..node.flags()
        };
        let b = self.open_backing_file(&file.filename(), &name, info.backing_format, flags)?;
        if let Err(e) = node.set_backing(b.clone()) {
            self.drop_if_unused(&b);
            return Err(e);
        }
        q.backing_is_implicit();
        Ok(())
    }

    /// The header's backing file, relative to the overlay's directory
    /// (`bdrv_get_full_backing_filename`), as auto-named nodes.
    fn open_backing_file(
        &mut self,
        overlay: &str,
        name: &str,
        format: Option<String>,
        flags: NodeFlags,
    ) -> Result<Arc<Node>, BlockError> {
        self.open_backing_file_with(overlay, name, format, flags, Map::new())
    }

    /// [`Self::open_backing_file`] with the user's options for it on top
    /// (`node-name`, a `backing` of its own, ...), as QEMU merges the
    /// `backing.*` options into the header's filename and format.
    fn open_backing_file_with(
        &mut self,
        overlay: &str,
        name: &str,
        format: Option<String>,
        flags: NodeFlags,
        extra: Map<String, Value>,
    ) -> Result<Arc<Node>, BlockError> {
        let path = crate::qcow2_node::full_backing_path(overlay, name);
        let format = match format {
            Some(f) => f,
            None if probe_qcow2(Some(&path)) => "qcow2".into(),
            None => "raw".into(),
        };
        let mut file = Map::new();
        let proto = protocol_of(Some(&path));
        file.insert("driver".into(), Value::String(proto.into()));
        file.insert("filename".into(), Value::String(path.clone()));
        let mut top = extra;
        top.insert("driver".into(), Value::String(format));
        top.entry("file").or_insert(Value::Object(file));
        let n = self
            .open_node(top, flags, String::new(), Syntax::Blockdev)
            .map_err(|e| BlockError::new(format!("Could not open backing file: {}", e.full())))?;
        n.inherited
            .store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }

    /// `-device ...,drive=X`: X is a drive id or a node name. The device's
    /// permissions are taken now (QEMU `blkconf_apply_backend_options`);
    /// a lock conflict fails here with QEMU's text and hint. `qdev` is the
    /// device's QOM path (`/machine/peripheral/vd0/virtio-backend`).
    pub fn attach(
        &mut self,
        drive: &str,
        qdev: &str,
        o: AttachOptions,
    ) -> Result<BlockBackend, BlockError> {
        let bb = match self.backend(drive) {
            Some(b) => b.clone(),
            None => {
                let node = self.node(drive).cloned().ok_or_else(|| {
                    BlockError::new(format!("Property 'drive' can't find value '{drive}'"))
                })?;
                // The device's werror/rerror=auto: enospc and report
                // (hw/block/block.c blkconf_apply_backend_options).
                let be = Backend::new(
                    String::new(),
                    Some(node.clone()),
                    node.flags().read_only,
                    true,
                    OnError::Enospc,
                    OnError::Report,
                );
                BlockBackend {
                    inner: Arc::new(be),
                }
            }
        };
        if bb.inner.dev().qdev.is_some() {
            return Err(BlockError::new(format!(
                "Drive '{drive}' is already in use by another device"
            )));
        }
        match bb.root() {
            Some(root) => {
                let ro = bb.read_only() || o.read_only;
                let (p, s) = perm::device_perms(ro, true, o.share_rw);
                root.set_parent_perm(bb.inner.parent_id, Some((p, s)))?;
            }
            // hw/block/block.c blkconf_... : only removable media may be absent.
            None if o.removable => {}
            None => return Err(BlockError::new("Device needs media, but drive is empty")),
        }
        {
            let mut d = bb.inner.dev();
            d.qdev = Some(qdev.to_string());
            d.iostatus_enabled = true;
            d.removable = o.removable;
        }
        if bb.name().is_empty() {
            self.backends.push(bb.clone());
        }
        Ok(bb)
    }

    /// The device went away (`device_del`): its permissions and locks are
    /// dropped; a named drive stays (as in QEMU, until `drive_del`).
    pub fn detach(&mut self, bb: &BlockBackend) {
        if let Some(r) = bb.root() {
            let keep = (!bb.name().is_empty()).then_some((perm::CONSISTENT_READ, perm::ALL));
            let _ = r.set_parent_perm(bb.inner.parent_id, keep);
        }
        {
            let mut d = bb.inner.dev();
            d.qdev = None;
            d.removable = false;
        }
        if bb.name().is_empty() {
            self.backends.retain(|b| !b.same(bb));
        }
    }

    /// The device of a `-drive` went away (blockdev.c `blockdev_auto_del`):
    /// its drive goes too, with the nodes only it held. Returns the jobs that
    /// worked on the drive's root, which `blockdev_mark_auto_del` cancels.
    pub fn auto_del(&mut self, bb: &BlockBackend) -> Vec<String> {
        let root = bb.root();
        let jobs = root
            .as_ref()
            .map(|r| {
                self.job_blockers
                    .iter()
                    .filter(|(_, _, nodes)| nodes.iter().any(|n| Arc::ptr_eq(n, r)))
                    .map(|(id, _, _)| id.clone())
                    .collect()
            })
            .unwrap_or_default();
        self.detach(bb);
        if !bb.name().is_empty() {
            self.backends.retain(|b| !b.same(bb));
            if let Some(r) = root {
                self.drop_if_unused(&r);
            }
        }
        jobs
    }

    /// QMP `block_resize` (blockdev.c `qmp_block_resize`): the node chosen
    /// by `device` (a drive id) or `node_name` is truncated to `size`;
    /// every backend whose root is that node hears about it through its
    /// [`BlockBackend::on_resize`] callbacks.
    pub fn block_resize(
        &self,
        device: Option<&str>,
        node_name: Option<&str>,
        size: i64,
    ) -> Result<(), BlockError> {
        let node = self.lookup_bs(device, node_name)?;
        self.check_op_blocker(&node)?;
        let size = check_resize_size(size)?;
        // blk_new_with_bs(bs, BLK_PERM_RESIZE, BLK_PERM_ALL): no other
        // user may forbid resizing (bdrv_a_allow_b). A parent node asks
        // what its driver wants of the child even when nothing holds
        // permissions on the parent itself (a qcow2 node over its file
        // keeps anyone else from resizing the file).
        let conflict = |who: String| {
            BlockError::new(format!(
                "Permission conflict on node '{0}': permissions 'resize' are both required by an unnamed block device (uses node '{0}' as 'root' child) and unshared by {who}",
                node.name
            ))
        };
        for p in &self.nodes {
            for c in p.children() {
                if !Arc::ptr_eq(&c.node, &node) {
                    continue;
                }
                let (pp, ps) = p.perms();
                let (_, shared) = p.driver.child_perm(&c.role, pp, ps);
                if shared & perm::RESIZE == 0 {
                    return Err(conflict(format!(
                        "node '{}' (uses node '{}' as '{}' child).",
                        p.name, node.name, c.role
                    )));
                }
            }
        }
        let (_, shared) = node.perms();
        if shared & perm::RESIZE == 0 {
            // bdrv_a_allow_b names the parent that unshares it, when the
            // graph knows it (an export's BlockBackend; a job's hold it
            // does not).
            let resize = crate::parents::PermUser {
                desc: crate::parents::backend_desc("", None),
                role: "root".into(),
                perm: perm::RESIZE,
                shared: perm::ALL,
            };
            self.check_new_parent(&node, &resize)?;
            return Err(conflict("another user".into()));
        }
        if node.flags().read_only {
            return Err(BlockError::new("Image is read-only"));
        }
        node.driver.truncate(size)?;
        let new = node.size()?;
        // bdrv_dirty_bitmap_truncate, for the node and the linear nodes
        // under it that were resized with it.
        crate::bitmap_cmds::resized(&node);
        for b in &self.backends {
            if b.root().is_some_and(|r| Arc::ptr_eq(&r, &node)) {
                b.inner.notify_resize(new);
            }
        }
        Ok(())
    }

    /// QEMU's `bdrv_close_all` at exit, once the devices are gone: every
    /// format node top-down writes its metadata back and marks its image
    /// clean. Errors are printed; the others still close.
    pub fn close_all(&self) {
        for n in self.nodes.iter().rev() {
            if let Err(e) = n.driver.close() {
                eprintln!("ferrovm: closing node '{}': {}", n.name, e.full());
            }
        }
    }

    /// `bdrv_get_device_name`: the drive id of the backend whose root is
    /// `node`, else "".
    pub fn device_name(&self, node: &Arc<Node>) -> String {
        self.backends
            .iter()
            .find(|b| b.root().is_some_and(|r| Arc::ptr_eq(&r, node)) && !b.name().is_empty())
            .map_or_else(String::new, |b| b.name().to_string())
    }

    /// `bdrv_get_device_or_node_name`.
    pub fn device_or_node_name(&self, node: &Arc<Node>) -> String {
        let d = self.device_name(node);
        if d.is_empty() {
            node.name.clone()
        } else {
            d
        }
    }

    /// Blocks every operation on `nodes` while job `id` runs.
    pub(crate) fn block_for_job(&mut self, id: &str, kind: &'static str, nodes: Vec<Arc<Node>>) {
        self.job_blockers.push((id.to_string(), kind, nodes));
    }

    /// The nodes each running job works on: (job id, job type, nodes).
    pub(crate) fn job_nodes(&self) -> &[(String, &'static str, Vec<Arc<Node>>)] {
        &self.job_blockers
    }

    /// The job `id` ended: its nodes are free again.
    pub fn unblock(&mut self, id: &str) {
        self.job_blockers.retain(|(j, _, _)| j != id);
    }

    /// `bdrv_op_is_blocked`: "Node 'X' is busy: block device is in use by
    /// block job: TYPE".
    pub fn check_op_blocker(&self, node: &Arc<Node>) -> Result<(), BlockError> {
        for (_, kind, nodes) in &self.job_blockers {
            if nodes.iter().any(|n| Arc::ptr_eq(n, node)) {
                return Err(BlockError::new(format!(
                    "Node '{}' is busy: block device is in use by block job: {kind}",
                    self.device_or_node_name(node)
                )));
            }
        }
        Ok(())
    }

    /// `bdrv_lookup_bs`.
    pub fn lookup_bs(
        &self,
        device: Option<&str>,
        node_name: Option<&str>,
    ) -> Result<Arc<Node>, BlockError> {
        if let Some(d) = device {
            if let Some(b) = self.backend(d) {
                return b
                    .root()
                    .ok_or_else(|| BlockError::new(format!("Device '{d}' has no medium")));
            }
        }
        if let Some(n) = node_name {
            if let Some(n) = self.node(n) {
                return Ok(n.clone());
            }
        }
        Err(BlockError::new(format!(
            "Cannot find device='{}' nor node-name='{}'",
            device.unwrap_or(""),
            node_name.unwrap_or("")
        )))
    }
}

#[cfg(test)]
mod driver_list_tests {
    use super::*;

    /// [`DRIVER_NAMES`] is what `open_node` dispatches on: each listed
    /// driver, opened without its options, fails only for a missing option
    /// (never as unknown or refused), and each QEMU driver not listed is
    /// refused by name. A driver added to the match but not to the list,
    /// or listed but not opened, fails here.
    #[test]
    fn listed_drivers_are_the_ones_that_open() {
        let refused =
            |msg: &str| msg.contains("is not supported") || msg.contains("does not accept value");
        for name in DRIVER_NAMES.iter().chain(QEMU_DRIVERS) {
            let mut g = BlockGraph::new();
            let mut m = Map::new();
            m.insert("driver".into(), Value::from(*name));
            m.insert("node-name".into(), Value::from("n0"));
            let listed = DRIVER_NAMES.contains(name);
            match g.add_blockdev(&m) {
                Ok(_) => assert!(listed, "'{name}' opens but is not in DRIVER_NAMES"),
                Err(e) => {
                    let msg = e.full();
                    assert_eq!(refused(&msg), !listed, "'{name}': {msg}");
                    if listed {
                        assert!(msg.contains("is missing"), "'{name}': {msg}");
                    }
                }
            }
        }
        assert!(driver_names().windows(2).all(|w| w[0] < w[1]));
    }
}
