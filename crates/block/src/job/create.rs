//! `blockdev-create` (QEMU 7.2 block/create.c): image creation as a job of
//! type `create`. It is a plain job, not a block job: only
//! JOB_STATUS_CHANGE events, not in `query-block-jobs`, and it waits in
//! `concluded` for `job-dismiss` (QEMU creates it with
//! `JOB_MANUAL_DISMISS`). Its progress goes from 0 to 1 of 1.
//!
//! Drivers: `file` (file-posix `raw_co_create`) and `qcow2`
//! (`qcow2_co_create`, through the image creation of [`crate::qcow2`]).

use std::sync::Arc;

use serde_json::{Map, Value};

use super::{JobCtl, JobDriver, JobPlan, JobType};
use crate::error::{strerror, BlockError};
use crate::graph::BlockGraph;
use crate::node::Node;
use crate::qcow2::{create, Compat, CreateOptions, ImageFile};
use crate::{lock, perm};

/// Drivers QEMU 7.2 can create images with that ferrovm cannot.
const QEMU_ONLY: &[&str] = &[
    "gluster",
    "luks",
    "nfs",
    "parallels",
    "qcow",
    "qed",
    "rbd",
    "ssh",
    "vdi",
    "vhdx",
    "vmdk",
    "vpc",
];

/// What the job creates.
enum Target {
    File {
        filename: String,
        size: u64,
        prealloc: String,
    },
    Qcow2 {
        file: Arc<Node>,
        /// The node was opened for the job (an inline `file` definition).
        inline: bool,
        opts: Box<CreateOptions>,
    },
}

pub struct Create {
    id: String,
    target: Target,
}

fn str_of<'a>(o: &'a Map<String, Value>, k: &str) -> Option<&'a str> {
    o.get(k).and_then(Value::as_str)
}

fn u64_of(o: &Map<String, Value>, k: &str) -> Option<u64> {
    o.get(k).and_then(Value::as_u64)
}

impl BlockGraph {
    /// `qmp_blockdev_create` (the schema has checked `options` against
    /// QEMU's BlockdevCreateOptions).
    pub fn create_job(&mut self, id: &str, o: &Map<String, Value>) -> Result<JobPlan, BlockError> {
        let driver = str_of(o, "driver").unwrap_or("");
        let target = match driver {
            "file" => Target::File {
                filename: str_of(o, "filename").unwrap_or("").to_string(),
                size: u64_of(o, "size").unwrap_or(0),
                prealloc: str_of(o, "preallocation").unwrap_or("off").to_string(),
            },
            "qcow2" => self.qcow2_target(o)?,
            d if QEMU_ONLY.contains(&d) => {
                return Err(BlockError::new(format!(
                    "ferrovm: blockdev-create supports the file and qcow2 drivers, not '{d}'"
                )))
            }
            _ => return Err(BlockError::new("Driver does not support blockdev-create")),
        };
        Ok(JobPlan {
            id: id.to_string(),
            driver: Box::new(Create {
                id: id.to_string(),
                target,
            }),
            nodes: Vec::new(),
        })
    }

    /// The `file` reference and the options of a qcow2 creation; what
    /// ferrovm's qcow2 cannot write is refused here, the rest is checked
    /// by the job in QEMU's order.
    fn qcow2_target(&mut self, o: &Map<String, Value>) -> Result<Target, BlockError> {
        for (k, what) in [
            ("data-file", "external data files"),
            ("encrypt", "encryption"),
        ] {
            if o.contains_key(k) {
                return Err(BlockError::new(format!(
                    "ferrovm: qcow2 images with {what} cannot be created"
                )));
            }
        }
        if o.get("extended-l2").and_then(Value::as_bool) == Some(true) {
            return Err(BlockError::new(
                "ferrovm: qcow2 images with extended L2 entries cannot be created",
            ));
        }
        if str_of(o, "compression-type").is_some_and(|c| c != "zlib") {
            return Err(BlockError::new(
                "ferrovm: only zlib compressed qcow2 images can be created",
            ));
        }
        if str_of(o, "preallocation").is_some_and(|p| p != "off") {
            return Err(BlockError::new(
                "ferrovm: qcow2 images can only be created with preallocation=off",
            ));
        }
        let mut c = CreateOptions::new(u64_of(o, "size").unwrap_or(0));
        if let Some(cs) = u64_of(o, "cluster-size") {
            c.cluster_size = cs;
        }
        c.compat = match str_of(o, "version") {
            Some("v2") => Compat::V2,
            _ => Compat::V3,
        };
        c.lazy_refcounts = o.get("lazy-refcounts").and_then(Value::as_bool) == Some(true);
        if let Some(b) = u64_of(o, "refcount-bits") {
            c.refcount_bits = b.min(u32::MAX as u64) as u32;
        }
        c.backing_file = str_of(o, "backing-file").map(str::to_string);
        c.backing_format = str_of(o, "backing-fmt").map(str::to_string);
        // bdrv_open_blockdev_ref: a node name, or a node defined inline.
        let (file, inline) = match o.get("file") {
            Some(Value::String(name)) => match self.node(name) {
                Some(n) => (n.clone(), false),
                None => {
                    return Err(BlockError::new(format!(
                        "Cannot find device='' nor node-name='{name}'"
                    )))
                }
            },
            Some(Value::Object(m)) => (self.open_inline(m.clone())?, true),
            _ => return Err(BlockError::new("Parameter 'file' is missing")),
        };
        Ok(Target::Qcow2 {
            file,
            inline,
            opts: Box::new(c),
        })
    }
}

impl Create {
    /// `raw_co_create`: create (not truncate) the file, take its locks,
    /// empty it, then grow it to the size.
    fn create_file(filename: &str, size: u64, prealloc: &str) -> Result<(), String> {
        use std::os::fd::AsRawFd;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(filename)
            .map_err(|e| {
                format!(
                    "Could not create '{filename}': {}",
                    strerror(e.raw_os_error().unwrap_or(libc::EIO))
                )
            })?;
        let want = perm::WRITE | perm::RESIZE;
        let shared = perm::ALL & !perm::RESIZE;
        let mut st = lock::LockState::default();
        lock::apply(f.as_raw_fd(), &mut st, want, !shared & perm::ALL, false)
            .and_then(|_| lock::check(f.as_raw_fd(), want, shared))
            .map_err(|e| e.msg)?;
        let grow = |e: std::io::Error| {
            format!(
                "Could not resize file: {}",
                strerror(e.raw_os_error().unwrap_or(libc::EIO))
            )
        };
        f.set_len(0).map_err(grow)?;
        match prealloc {
            "off" => f.set_len(size).map_err(grow),
            "falloc" => {
                // SAFETY: plain syscall on an open fd.
                let r = unsafe { libc::posix_fallocate(f.as_raw_fd(), 0, size as i64) };
                if r != 0 {
                    return Err(format!("Could not preallocate new data: {}", strerror(r)));
                }
                Ok(())
            }
            "full" => {
                use std::os::unix::fs::FileExt;
                let zero = vec![0u8; 1 << 20];
                let mut off = 0;
                while off < size {
                    let n = (size - off).min(zero.len() as u64) as usize;
                    f.write_all_at(&zero[..n], off).map_err(|e| {
                        format!(
                            "Could not write zeros for preallocation: {}",
                            strerror(e.raw_os_error().unwrap_or(libc::EIO))
                        )
                    })?;
                    off += n as u64;
                }
                Ok(())
            }
            other => Err(format!("Unsupported preallocation mode: {other}")),
        }
    }

    /// `qcow2_co_create` onto the `file` node.
    fn create_qcow2(file: &Arc<Node>, o: &CreateOptions) -> Result<(), String> {
        // qcow2_co_create's own checks come before anything is written,
        // with the words blockdev-create uses (version=v3, not compat=1.1).
        if !o.size.is_multiple_of(512) {
            return Err("Image size must be a multiple of 512 bytes".into());
        }
        let v3 = o.compat == Compat::V3;
        let cs = o.cluster_size;
        if !cs.is_power_of_two() || !(512..=2 << 20).contains(&cs) {
            return Err("Cluster size must be a power of two between 512 and 2048k".into());
        }
        if o.backing_format.is_some() && o.backing_file.is_none() {
            return Err("Backing format cannot be used without backing file".into());
        }
        if !v3 && o.lazy_refcounts {
            return Err(
                "Lazy refcounts only supported with compatibility level 1.1 and \
                        above (use version=v3 or greater)"
                    .into(),
            );
        }
        if !o.refcount_bits.is_power_of_two() || o.refcount_bits > 64 {
            return Err("Refcount width must be a power of two and may not exceed 64 bits".into());
        }
        if !v3 && o.refcount_bits != 16 {
            return Err(
                "Different refcount widths than 16 bits require compatibility level \
                        1.1 or above (use version=v3 or greater)"
                    .into(),
            );
        }
        if file.flags().read_only {
            return Err("Block node is read-only".into());
        }
        let Some(dp) = file.resolve_file().filter(|d| d.base == 0) else {
            return Err(format!(
                "ferrovm: cannot create a qcow2 image on node '{}' (a file node is needed)",
                file.name
            ));
        };
        let image: Arc<dyn ImageFile> = crate::qcow2_node::protocol_file(dp.io);
        create(image, o).map_err(|e| e.to_string())
    }
}

impl JobDriver for Create {
    fn job_type(&self) -> JobType {
        JobType::Create
    }

    fn block_job(&self) -> bool {
        false
    }

    fn run(&mut self, ctl: &mut JobCtl) -> Result<(), String> {
        ctl.set_remaining(1);
        let r = match &self.target {
            Target::File {
                filename,
                size,
                prealloc,
            } => Self::create_file(filename, *size, prealloc),
            Target::Qcow2 { file, opts, .. } => Self::create_qcow2(file, opts),
        };
        ctl.progress(1);
        r
    }

    fn clean(&mut self, g: &mut BlockGraph) {
        g.unblock(&self.id);
        if let Target::Qcow2 {
            file, inline: true, ..
        } = &self.target
        {
            g.remove_subtree(file);
        }
    }
}
