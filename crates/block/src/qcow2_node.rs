//! The `qcow2` format node: a [`Qcow2`] image over its `file` child's host
//! file, with an optional `backing` child it reads unallocated clusters
//! from. qcow2 maps guest offsets through its tables, so it has no linear
//! mapping; its requests run on the I/O thread pool through [`FormatIo`].
//!
//! Permissions follow QEMU 7.2 block.c: the `file` child gets
//! `bdrv_default_perms_for_storage` (metadata and data: consistent read
//! always, write and resize when the node is writable, nobody else may
//! write or resize), the `backing` child `bdrv_default_perms_for_cow`
//! (consistent read only, others may read and write unchanged).

use std::os::unix::fs::FileTypeExt;
use std::os::unix::io::AsRawFd;
use std::sync::Arc;

use crate::engine::sync_ops;
use crate::error::BlockError;
use crate::file::FileIo;
use crate::io::{IoBuf, Route};
use crate::iovec;
use crate::node::{Driver, FormatIo, Node};
use crate::perm;
use crate::qcow2::{readv_clipped, ImageFile, ImageRead, OpenOptions, Qcow2, Qcow2Error};

/// The qcow2 image's host file: the `file` child's descriptor, through the
/// same positional I/O the pool engine uses (bounce buffers under O_DIRECT).
struct ProtocolFile(Arc<FileIo>);

fn errno_io(e: i32) -> std::io::Error {
    std::io::Error::from_raw_os_error(e)
}

fn buf(ptr: *mut u8, len: usize) -> [IoBuf; 1] {
    [IoBuf { ptr, len }]
}

impl ImageFile for ProtocolFile {
    fn read_at(&self, b: &mut [u8], off: u64) -> std::io::Result<()> {
        self.readv_at(&iovec::of(b), off)
    }

    fn readv_at(&self, bufs: &[IoBuf], off: u64) -> std::io::Result<()> {
        sync_ops::read(&self.0, off, bufs)
            .map(|_| ())
            .map_err(errno_io)
    }

    fn write_at(&self, b: &[u8], off: u64) -> std::io::Result<()> {
        // The engine's write only reads from the buffer.
        sync_ops::write(&self.0, off, &buf(b.as_ptr().cast_mut(), b.len()))
            .map(|_| ())
            .map_err(errno_io)
    }

    fn flush(&self) -> std::io::Result<()> {
        sync_ops::flush(&self.0).map(|_| ()).map_err(errno_io)
    }

    fn file_size(&self) -> std::io::Result<u64> {
        let m = self.0.file.metadata()?;
        if !m.file_type().is_block_device() {
            return Ok(m.len());
        }
        // A device's length is where its end is (metadata says 0).
        // SAFETY: lseek on an open fd; no memory is passed.
        let end = unsafe { libc::lseek(self.0.file.as_raw_fd(), 0, libc::SEEK_END) };
        if end < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(end as u64)
    }

    /// `raw_co_truncate`: a regular file is cut or extended; a device
    /// cannot grow and does not shrink.
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        if self.0.file.metadata()?.file_type().is_block_device() {
            if len > self.file_size()? {
                return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
            }
            return Ok(());
        }
        self.0.file.set_len(len)
    }

    fn punch_hole(&self, off: u64, len: u64) -> std::io::Result<()> {
        sync_ops::discard(&self.0, off, len)
            .map(|_| ())
            .map_err(errno_io)
    }

    fn zero_range(&self, off: u64, len: u64) -> std::io::Result<bool> {
        sync_ops::zero_range_no_fallback(&self.0, off, len).map_err(errno_io)
    }
}

/// A `file` child that is not a host file (a filter such as `blkdebug`
/// over one, or `null-co`): the image's host file is reached through the
/// child's own request path, which also hears the format's debug events.
struct NodeFile {
    node: Arc<Node>,
    io: crate::job::nodeio::NodeIo,
}

impl ImageFile for NodeFile {
    fn read_at(&self, b: &mut [u8], off: u64) -> std::io::Result<()> {
        self.io.read(off, b).map_err(errno_io)
    }

    fn readv_at(&self, bufs: &[IoBuf], off: u64) -> std::io::Result<()> {
        self.io.readv(off, bufs).map_err(errno_io)
    }

    fn write_at(&self, b: &[u8], off: u64) -> std::io::Result<()> {
        self.io.write(off, b).map_err(errno_io)
    }

    fn flush(&self) -> std::io::Result<()> {
        self.io.flush().map_err(errno_io)
    }

    fn file_size(&self) -> std::io::Result<u64> {
        self.node.size().map_err(|e| std::io::Error::other(e.msg))
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.node
            .driver
            .truncate(len)
            .map_err(|e| std::io::Error::other(e.msg))
    }

    fn punch_hole(&self, off: u64, len: u64) -> std::io::Result<()> {
        self.io.discard(off, len).map_err(errno_io)
    }

    fn debug_event(&self, ev: crate::debug::DebugEvent) {
        self.io.debug_event(ev);
    }
}

/// The image file of a qcow2 node over `file`: its host file directly,
/// or through the node's request path.
fn image_file(file: &Arc<Node>) -> Arc<dyn ImageFile> {
    match file.driver.file_io() {
        Some(io) => Arc::new(ProtocolFile(io.clone())),
        None => Arc::new(NodeFile {
            node: file.clone(),
            io: crate::job::nodeio::NodeIo::new(file),
        }),
    }
}

/// A protocol node's file as a qcow2 image's host file (blockdev-create).
pub(crate) fn protocol_file(io: Arc<FileIo>) -> Arc<dyn ImageFile> {
    Arc::new(ProtocolFile(io))
}

/// A backing node as the image below a qcow2 overlay: raw (linear onto a
/// file) or another format node. How its reads reach the image is worked
/// out once, as a BlockBackend's route is.
pub(crate) struct NodeImage(Route);

impl NodeImage {
    fn new(node: Arc<Node>) -> Self {
        NodeImage(Route::of(Some(node)))
    }
}

impl ImageRead for NodeImage {
    fn size(&self) -> u64 {
        self.0
            .root
            .as_ref()
            .and_then(|n| n.size().ok())
            .unwrap_or(0)
    }

    fn read_at(&self, b: &mut [u8], off: u64) -> crate::qcow2::Result<()> {
        self.readv_at(&iovec::of(b), off)
    }

    fn readv_at(&self, bufs: &[IoBuf], off: u64) -> crate::qcow2::Result<()> {
        // A backing file shorter than the overlay reads as zeros past its end.
        readv_clipped(bufs, off, ImageRead::size(self), |b, off| {
            let failed = |e: i32| Qcow2Error::io("Could not read backing file", &errno_io(e));
            if let Some(dp) = &self.0.data {
                sync_ops::read(&dp.io, dp.base + off, b)
                    .map(|_| ())
                    .map_err(failed)
            } else if let Some(f) = &self.0.format {
                f.readv(off, b).map_err(failed)
            } else {
                Err(failed(libc::EIO))
            }
        })
    }
}

/// The pool engine's view of the image, marking the node's dirty bitmaps
/// after every write, write-zeroes and discard (`bdrv_co_write_req_finish`).
struct Qcow2Io(
    Arc<Qcow2>,
    std::sync::OnceLock<Arc<crate::dirty::NodeBitmaps>>,
);

impl Qcow2Io {
    #[inline]
    fn mark(&self, off: u64, len: u64) {
        if let Some(b) = self.1.get() {
            b.mark(off, len);
        }
    }

    #[inline]
    fn mark_discard(&self, off: u64, len: u64) {
        if let Some(b) = self.1.get() {
            b.mark_discard(off, len);
        }
    }
}

fn errno(e: Qcow2Error) -> i32 {
    if !matches!(e, Qcow2Error::Io { .. } | Qcow2Error::ReadOnly) {
        log::error!("qcow2: {e}");
    }
    e.errno()
}

impl FormatIo for Qcow2Io {
    fn read(&self, off: u64, b: &mut [u8]) -> Result<(), i32> {
        self.0.read_at(b, off).map_err(errno)
    }
    fn readv(&self, off: u64, bufs: &[IoBuf]) -> Result<(), i32> {
        self.0.readv_at(bufs, off).map_err(errno)
    }
    fn write(&self, off: u64, b: &[u8]) -> Result<(), i32> {
        let r = self.0.write_at(b, off).map_err(errno);
        self.mark(off, b.len() as u64);
        r
    }
    fn flush(&self) -> Result<(), i32> {
        self.0.flush().map_err(errno)
    }
    fn discard(&self, off: u64, len: u64) -> Result<(), i32> {
        let r = self.0.discard(off, len).map_err(errno);
        self.mark_discard(off, len);
        r
    }
    fn write_zeroes(&self, off: u64, len: u64, may_unmap: bool) -> Result<(), i32> {
        let r = self.0.write_zeroes(off, len, may_unmap).map_err(errno);
        self.mark(off, len);
        r
    }
}

pub struct Qcow2Driver {
    image: Arc<Qcow2>,
    io: Arc<Qcow2Io>,
    file: Arc<Node>,
    /// Changes with a reopen (`blockdev-reopen`, `change-backing-file`).
    writable: std::sync::atomic::AtomicBool,
    /// `json:{...}` when the backing is not the one the header names
    /// (QEMU's `bdrv_refresh_filename` with `bdrv_backing_overridden`).
    /// The backing node, for the file name.
    backing: std::sync::Mutex<Option<Arc<Node>>>,
    /// QEMU's `bs->auto_backing_file`: the backing node's filename when it
    /// was opened from the header, else the header's name as written.
    auto_backing: std::sync::Mutex<String>,
    /// The persistent bitmaps were written at close.
    bitmaps_stored: std::sync::atomic::AtomicBool,
}

/// The header's backing file name resolved against the overlay's
/// directory (`bdrv_get_full_backing_filename`).
pub fn full_backing_path(overlay: &str, name: &str) -> String {
    // path_has_protocol: `proto:` before any '/' is taken as it is.
    let has_protocol = name
        .find([':', '/', '\\'])
        .is_some_and(|i| name.as_bytes()[i] == b':');
    if name.starts_with('/') || has_protocol {
        return name.to_string();
    }
    let dir = std::path::Path::new(overlay)
        .parent()
        .unwrap_or(std::path::Path::new(""));
    dir.join(name).to_string_lossy().into_owned()
}

/// JSON as QEMU's `qobject_to_json` writes it: `", "` and `": "` between
/// members.
pub(crate) fn qobject_json(v: &serde_json::Value) -> String {
    use serde_json::Value;
    match v {
        Value::Object(m) => {
            let items: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{}: {}", Value::from(k.as_str()), qobject_json(v)))
                .collect();
            format!("{{{}}}", items.join(", "))
        }
        Value::Array(a) => {
            let items: Vec<String> = a.iter().map(qobject_json).collect();
            format!("[{}]", items.join(", "))
        }
        other => other.to_string(),
    }
}

/// A node's `full_open_options` as QEMU's `json:` filenames spell them:
/// keys in alphabetical order, children inline.
pub(crate) fn node_open_options(n: &Node) -> serde_json::Value {
    open_options(n)
}

fn open_options(n: &Node) -> serde_json::Value {
    // A node that already needs a `json:` filename has its options there.
    if let Some(v) = n
        .filename()
        .strip_prefix("json:")
        .and_then(|j| serde_json::from_str(j).ok())
    {
        return v;
    }
    let mut m = serde_json::Map::new();
    m.insert("driver".into(), n.driver.format_name().into());
    // null-co needs no filename (no bdrv_needs_filename).
    if matches!(n.driver.format_name(), "null-co" | "null-aio") {
        return serde_json::Value::Object(m);
    }
    let primary = n
        .children()
        .into_iter()
        .find(|c| matches!(c.role.as_ref(), "file" | "image"));
    match primary {
        Some(c) => {
            m.insert(c.role.to_string(), open_options(&c.node));
        }
        None => {
            m.insert("filename".into(), n.filename().into());
        }
    }
    serde_json::Value::Object(m)
}

/// What `-blockdev driver=qcow2` takes besides the common node options.
pub struct Qcow2Options {
    pub lazy_refcounts: Option<bool>,
    pub pass_discard: bool,
}

impl Qcow2Driver {
    /// `qcow2_store_persistent_dirty_bitmaps`, once (at close or when the
    /// node goes): the persistent bitmaps that are neither inconsistent nor
    /// read-only.
    fn store_bitmaps(&self) -> Result<(), BlockError> {
        if !self.writable()
            || self
                .bitmaps_stored
                .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            return Ok(());
        }
        let Some(nb) = self.io.1.get() else {
            return Ok(());
        };
        let list: Vec<_> = nb
            .list()
            .into_iter()
            .filter(|b| b.persistent() && !b.inconsistent && !b.readonly())
            .collect();
        let guards: Vec<_> = list.iter().map(|b| b.bits()).collect();
        let req: Vec<crate::qcow2::BitmapToStore<'_>> = list
            .iter()
            .zip(&guards)
            .map(|(b, g)| crate::qcow2::BitmapToStore {
                name: &b.name,
                enabled: b.recording(),
                bits: g,
            })
            .collect();
        self.image.store_bitmaps(&req).map_err(|e| {
            BlockError::new(format!(
                "Failed to store persistent dirty bitmaps in {}: {e}",
                self.file.filename()
            ))
        })
    }

    /// `qcow2_co_remove_persistent_dirty_bitmap`.
    pub fn remove_persistent_bitmap(&self, name: &str) -> Result<(), BlockError> {
        self.image
            .remove_bitmap(name)
            .map_err(|e| BlockError::new(format!("Failed to update bitmap extension: {e}")))
    }

    /// Opens the image in `file` (a protocol node); `backing` is attached
    /// afterwards with [`Qcow2Driver::set_backing`].
    pub fn open(file: Arc<Node>, writable: bool, o: Qcow2Options) -> Result<Self, BlockError> {
        let image = Qcow2::open(
            image_file(&file),
            OpenOptions {
                writable,
                lazy_refcounts: o.lazy_refcounts,
                pass_discard: o.pass_discard,
                file_unmap: file.flags().discard,
                ..OpenOptions::default()
            },
        )
        .map_err(|e| BlockError::new(e.to_string()))?;
        let image = Arc::new(image);
        Ok(Self {
            io: Arc::new(Qcow2Io(image.clone(), Default::default())),
            image,
            file,
            writable: std::sync::atomic::AtomicBool::new(writable),
            backing: std::sync::Mutex::new(None),
            auto_backing: std::sync::Mutex::new(String::new()),
            bitmaps_stored: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The header's backing file, resolved, if it names one.
    pub fn full_backing_filename(&self) -> Option<String> {
        let name = self.image.info().backing_file?;
        Some(full_backing_path(&self.file.filename(), &name))
    }

    pub fn image(&self) -> &Arc<Qcow2> {
        &self.image
    }

    pub fn writable(&self) -> bool {
        self.writable.load(std::sync::atomic::Ordering::Acquire)
    }

    /// A reopen: the image written back and marked clean before it goes
    /// read-only; the file child must be writable before it goes writable.
    pub fn set_writable(&self, w: bool) -> Result<(), BlockError> {
        use std::sync::atomic::Ordering;
        let was = self.writable();
        // qcow2_reopen_prepare: the bitmaps are stored before write access
        // goes, and are read-only until it comes back.
        if was && !w {
            self.store_bitmaps()?;
        }
        self.image
            .set_writable(w)
            .map_err(|e| BlockError::new(e.to_string()))?;
        self.writable.store(w, Ordering::Release);
        if was == w {
            return Ok(());
        }
        let stored: Vec<_> = self
            .io
            .1
            .get()
            .map(|nb| nb.list())
            .unwrap_or_default()
            .into_iter()
            .filter(|b| b.persistent() && !b.inconsistent)
            .collect();
        if w {
            // qcow2_reopen_bitmaps_rw: in use again, on disk first.
            self.image
                .mark_bitmaps_in_use()
                .map_err(|e| BlockError::new(format!("Failed to update bitmap extension: {e}")))?;
            self.bitmaps_stored.store(false, Ordering::Release);
        }
        for b in stored {
            b.set_readonly(!w);
        }
        Ok(())
    }

    /// The node it sits on (`file` child).
    pub fn file_node(&self) -> &Arc<Node> {
        &self.file
    }

    /// Attaches the backing node (or none) at open. `implicit`: opened
    /// from the header's name, whose filename then counts as the header's
    /// (`bdrv_open_backing_file`); otherwise the header's name as written
    /// does (`qcow2_do_open`).
    pub fn set_backing(&self, backing: Option<Arc<Node>>, implicit: bool) {
        *self.auto_backing.lock().unwrap_or_else(|e| e.into_inner()) = match &backing {
            Some(b) if implicit => b.filename(),
            _ => self.image.info().backing_file.unwrap_or_default(),
        };
        self.attach_backing(backing);
    }

    /// The backing attached now is the one the header names, opened
    /// without options (bdrv_open_backing_file's `implicit_backing`): the
    /// node's filename stays plain.
    pub fn backing_is_implicit(&self) {
        let name = self
            .backing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|b| b.filename());
        if let Some(n) = name {
            *self.auto_backing.lock().unwrap_or_else(|e| e.into_inner()) = n;
        }
    }

    /// `change-backing-file`: the header names `name` from now on.
    pub fn change_backing_file(&self, name: &str) -> Result<(), Qcow2Error> {
        self.image.change_backing_file(Some(name), Some("qcow2"))?;
        *self.auto_backing.lock().unwrap_or_else(|e| e.into_inner()) = name.to_string();
        Ok(())
    }

    fn attach_backing(&self, backing: Option<Arc<Node>>) {
        *self.backing.lock().unwrap_or_else(|e| e.into_inner()) = backing.clone();
        self.image
            .set_backing(backing.map(|n| Arc::new(NodeImage::new(n)) as Arc<dyn ImageRead>));
    }
}

/// `bdrv_backing_overridden`: the backing attached is not the one the
/// header names (or the header names one and none is attached).
fn overridden(backing: Option<&Node>, auto_backing: &str) -> bool {
    match backing {
        Some(b) => b.filename() != auto_backing,
        None => !auto_backing.is_empty(),
    }
}

impl Qcow2Driver {
    /// [`overridden`] for this node.
    pub fn backing_overridden(&self) -> bool {
        let backing = self
            .backing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let auto = self
            .auto_backing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        overridden(backing.as_deref(), &auto)
    }
}

impl Drop for Qcow2Driver {
    /// `qcow2_close` for a node that goes away before the emulator exits
    /// (`blockdev-del`); a second close does nothing.
    fn drop(&mut self) {
        if let Err(e) = Driver::close(self) {
            log::error!("qcow2: closing: {e}");
        }
    }
}

impl Driver for Qcow2Driver {
    fn format_name(&self) -> &'static str {
        "qcow2"
    }

    fn filename(&self) -> String {
        let backing = self
            .backing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let auto = self
            .auto_backing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        // bdrv_backing_overridden, evaluated on every query as QEMU's
        // bdrv_refresh_filename is: a parent follows its backing's name.
        if !overridden(backing.as_deref(), &auto) {
            return self.file.filename();
        }
        let mut m = serde_json::Map::new();
        m.insert(
            "backing".into(),
            backing
                .as_deref()
                .map_or(serde_json::Value::Null, open_options),
        );
        m.insert("driver".into(), "qcow2".into());
        m.insert("file".into(), open_options(&self.file));
        format!("json:{}", qobject_json(&serde_json::Value::Object(m)))
    }

    fn full_backing_filename(&self) -> Option<String> {
        Qcow2Driver::full_backing_filename(self)
    }

    fn set_backing(&self, backing: Option<Arc<Node>>) -> Result<(), BlockError> {
        self.attach_backing(backing);
        Ok(())
    }

    fn size(&self) -> Result<u64, BlockError> {
        Ok(self.image.virtual_size())
    }

    fn actual_size(&self) -> Option<u64> {
        self.file.driver.actual_size()
    }

    fn truncate(&self, size: u64) -> Result<(), BlockError> {
        let warning = self
            .image
            .truncate(size)
            .map_err(|e| BlockError::new(e.to_string()))?;
        // qcow2_co_truncate: warn_reportf_err for a tail it could not cut.
        if let Some(w) = warning {
            eprintln!("ferrovm: warning: {w}");
        }
        Ok(())
    }

    fn child_perm(&self, role: &str, p: u64, shared: u64) -> (u64, u64) {
        if role == "backing" {
            let mut s = if shared & perm::WRITE != 0 {
                perm::WRITE | perm::RESIZE
            } else {
                0
            };
            s |= perm::CONSISTENT_READ | perm::WRITE_UNCHANGED;
            return (p & perm::CONSISTENT_READ, s);
        }
        // bdrv_filter_default_perms, then the metadata and data rules.
        let mut np = p & perm::DEFAULT_PERM_PASSTHROUGH;
        let mut ns = (shared & perm::DEFAULT_PERM_PASSTHROUGH) | perm::DEFAULT_PERM_UNCHANGED;
        if self.writable() {
            np |= perm::WRITE | perm::RESIZE;
        }
        np |= perm::CONSISTENT_READ;
        ns &= !(perm::WRITE | perm::RESIZE);
        if np & perm::WRITE_UNCHANGED != 0 {
            np |= perm::WRITE;
        }
        if np & perm::WRITE != 0 {
            np |= perm::RESIZE;
        }
        (np, ns)
    }

    fn format_io(&self) -> Option<Arc<dyn FormatIo>> {
        Some(self.io.clone())
    }

    /// Also loads the bitmaps stored in the image (`qcow2_load_dirty_bitmaps`).
    fn attach_bitmaps(&self, b: &Arc<crate::dirty::NodeBitmaps>) -> bool {
        let _ = self.io.1.set(b.clone());
        match self.image.load_bitmaps() {
            Ok(list) => {
                for s in list {
                    b.insert(Arc::new(crate::dirty::NamedBitmap::loaded(
                        &s.name,
                        s.bits,
                        s.enabled,
                        !self.writable(),
                        s.in_use,
                    )));
                }
            }
            Err(e) => log::error!("qcow2: could not load bitmaps: {e}"),
        }
        true
    }

    fn as_qcow2(&self) -> Option<&Qcow2Driver> {
        Some(self)
    }

    fn close(&self) -> Result<(), BlockError> {
        if !self.writable() {
            return Ok(());
        }
        let stored = self.store_bitmaps();
        self.image
            .close()
            .map_err(|e| BlockError::new(format!("{}: {e}", self.file.filename())))?;
        stored
    }

    fn image_info(&self) -> Option<crate::qcow2::ImageInfo> {
        Some(self.image.info())
    }

    fn block_status(&self, off: u64, len: u64) -> Result<(bool, u64), i32> {
        let ext = self.image.map(off, len).map_err(errno)?;
        let first = ext.first().ok_or(libc::EINVAL)?;
        Ok((
            !matches!(first.kind, crate::qcow2::ExtentKind::Unallocated),
            first.len,
        ))
    }

    fn copy_on_read(&self, off: u64, len: u64) -> Result<(), i32> {
        self.image.copy_on_read(off, len).map_err(errno)
    }

    fn change_backing_file(&self, file: Option<&str>, fmt: Option<&str>) -> Result<(), BlockError> {
        self.image
            .change_backing_file(file, fmt)
            .map_err(|e| BlockError::new(e.to_string()))?;
        *self.auto_backing.lock().unwrap_or_else(|e| e.into_inner()) =
            file.unwrap_or_default().to_string();
        Ok(())
    }
}
