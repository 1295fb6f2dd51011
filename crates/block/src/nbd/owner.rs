//! The server as the owner of the block graph runs it: QMP's
//! `nbd-server-start`, `nbd-server-add`, `nbd-server-remove`,
//! `nbd-server-stop` and `query-block-exports`, with QEMU 7.2's checks in
//! QEMU's order (blockdev-nbd.c, block/export/export.c `blk_exp_add`,
//! nbd/server.c `nbd_export_create`). An export is a BlockBackend in the
//! graph (QEMU's `exp->blk`), so it is one more parent of its node, with
//! QEMU's permissions.

use std::sync::Arc;

use serde_json::{json, Value};

use super::backend_io::BackendIo;
use super::export::Export;
use super::gate::Gate;
use super::listen::{self, ListenAddr};
use super::proto;
use super::server::{Notify, Server, Shared};
use crate::error::BlockError;
use crate::graph::{id_wellformed, BlockGraph};
use crate::io::{Backend, BlockBackend};
use crate::node::Node;
use crate::parents::PermUser;
use crate::perm;
use crate::policy::OnError;

/// `nbd-server-add`'s arguments (NbdServerAddOptions).
#[derive(Debug, Clone, Default)]
pub struct AddArgs<'a> {
    pub device: &'a str,
    pub name: Option<&'a str>,
    pub description: Option<&'a str>,
    pub writable: bool,
    pub bitmap: Option<&'a str>,
}

/// One block export (`BlockExport` + `NBDExport`).
struct Entry {
    /// The block export id.
    id: String,
    export: Arc<Export>,
    backend: BlockBackend,
    /// Removal was asked for; it goes when its last client has.
    shutting_down: bool,
    /// The named drive it was added by: when the drive loses its medium,
    /// the export goes (`nbd_export_set_on_eject_blk`).
    on_eject: Option<BlockBackend>,
}

struct Running {
    server: Server,
    /// Newest first (QEMU's `block_exports` list).
    exports: Vec<Entry>,
}

/// The NBD server of one VM.
pub struct NbdServer {
    notify: Notify,
    gate: Arc<Gate>,
    running: Option<Running>,
}

impl NbdServer {
    /// `notify` is called (on a connection thread) when a connection ends;
    /// the owner then calls [`NbdServer::reap`].
    pub fn new(notify: Notify) -> Self {
        NbdServer {
            notify,
            gate: Arc::new(Gate::default()),
            running: None,
        }
    }

    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// `nbd_server_start`: listen, then check the TLS credentials (the
    /// socket closes again if they are refused). `max_connections`
    /// defaults to 100; 0 is no limit.
    pub fn start(
        &mut self,
        graph: &BlockGraph,
        addr: &ListenAddr,
        tls_creds: Option<&str>,
        max_connections: Option<u32>,
    ) -> Result<(), BlockError> {
        if self.running.is_some() {
            return Err(BlockError::new("NBD server already running"));
        }
        let listening = listen::listen(addr)?;
        if let Some(id) = tls_creds {
            // nbd_get_tls_creds; dropping `listening` closes the socket.
            return Err(match graph.object_type(id) {
                None => BlockError::new(format!("No TLS credentials with id '{id}'")),
                Some(t) if t.starts_with("tls-creds") => {
                    BlockError::new("ferrovm: TLS for the NBD server is not supported")
                }
                Some(_) => BlockError::new(format!("Object with id '{id}' is not TLS credentials")),
            });
        }
        let max = max_connections.unwrap_or(proto::DEFAULT_MAX_CONNECTIONS);
        let shared = Shared::new(max, self.notify.clone());
        let server = Server::start(listening, shared)
            .map_err(|e| BlockError::new(format!("ferrovm: cannot start the NBD server: {e}")))?;
        self.running = Some(Running {
            server,
            exports: Vec::new(),
        });
        Ok(())
    }

    /// `qmp_nbd_server_add` → `blk_exp_add` → `nbd_export_create`.
    pub fn add(&mut self, graph: &mut BlockGraph, a: &AddArgs<'_>) -> Result<(), BlockError> {
        let node = graph.lookup_bs(Some(a.device), Some(a.device))?;
        let id = a.name.unwrap_or(a.device);
        if !id_wellformed(id) {
            return Err(BlockError::new("Invalid block export id"));
        }
        if self.entries().iter().any(|e| e.id == id) {
            return Err(BlockError::new(format!(
                "Block export id '{id}' is already in use"
            )));
        }
        // nbd-server-add exports a read-only node read-only rather than fail.
        let read_only = !a.writable || node.flags().read_only;
        let mut p = perm::CONSISTENT_READ;
        if !read_only {
            p |= perm::WRITE;
        }
        // blk_new(perm, BLK_PERM_ALL), then nbd_export_create unshares
        // resize while the export exists.
        let new = PermUser {
            desc: crate::parents::backend_desc("", None),
            role: "root".into(),
            perm: p,
            shared: perm::ALL,
        };
        graph.check_new_parent(&node, &new)?;
        let Some(run) = self.running.as_mut() else {
            return Err(BlockError::new("NBD server not running"));
        };
        let name = id;
        if name.len() > proto::MAX_STRING_SIZE {
            return Err(BlockError::new(format!("export name '{name}' too long")));
        }
        if let Some(d) = a.description.filter(|d| d.len() > proto::MAX_STRING_SIZE) {
            return Err(BlockError::new(format!("description '{d}' too long")));
        }
        if run
            .exports
            .iter()
            .any(|e| !e.shutting_down && e.export.name == name)
        {
            return Err(BlockError::new(format!(
                "NBD server already has export named '{name}'"
            )));
        }
        let size = node.size().map_err(|e| {
            BlockError::new(format!(
                "Failed to determine the NBD export's length: {}",
                e.msg
            ))
        })?;
        let shared = perm::ALL & !perm::RESIZE;
        graph.check_new_parent(&node, &PermUser { shared, ..new })?;
        if let Some(b) = a.bitmap {
            bitmap_check(&node, b)?;
        }
        let be = Backend::new(
            String::new(),
            Some(node.clone()),
            read_only,
            true,
            OnError::Report,
            OnError::Report,
        );
        let bb = BlockBackend {
            inner: Arc::new(be),
        };
        node.set_parent_perm(bb.inner.parent_id, Some((p, shared)))?;
        let export = Arc::new(Export {
            name: name.to_string(),
            description: a.description.map(str::to_string),
            size: size & !511,
            flags: Export::flags_for(read_only, run.server.shared.max_connections() != 1),
            min_block: request_alignment(&node),
            io: Arc::new(BackendIo {
                bb: bb.clone(),
                gate: self.gate.clone(),
            }),
        });
        graph.insert_backend(bb.clone());
        run.server.shared.publish(export.clone());
        run.exports.insert(
            0,
            Entry {
                id: id.to_string(),
                export,
                backend: bb,
                shutting_down: false,
                on_eject: graph.backend(a.device).cloned(),
            },
        );
        Ok(())
    }

    fn entries(&self) -> &[Entry] {
        self.running.as_ref().map_or(&[], |r| &r.exports)
    }

    /// `qmp_block_export_del` for NBD exports: `safe` refuses while
    /// clients are connected, `hard` disconnects them. Returns the ids of
    /// the exports that went (BLOCK_EXPORT_DELETED).
    pub fn remove(
        &mut self,
        graph: &mut BlockGraph,
        id: &str,
        hard: bool,
    ) -> Result<Vec<String>, BlockError> {
        let run = self.running.as_mut();
        let Some((run, i)) = run.and_then(|r| {
            let i = r.exports.iter().position(|e| e.id == id)?;
            Some((r, i))
        }) else {
            return Err(BlockError::new(format!("Export '{id}' is not found")));
        };
        let e = &mut run.exports[i];
        if e.shutting_down {
            return Err(BlockError::new(format!(
                "Export '{id}' is already shutting down"
            )));
        }
        let clients = run.server.shared.clients(&e.export);
        if !hard && clients > 0 {
            return Err(BlockError::new(format!("export '{id}' still in use"))
                .with_hint("Use mode='hard' to force client disconnect\n"));
        }
        e.shutting_down = true;
        run.server.shared.withdraw(&e.export, true);
        if clients > 0 {
            // It goes once the disconnected clients have finished (QEMU's
            // event comes after this command's return).
            return Ok(Vec::new());
        }
        Ok(self.reap(graph))
    }

    /// Exports being removed whose last client has gone are deleted
    /// (`blk_exp_delete_bh`): their BlockBackends leave the graph.
    /// Returns their ids, for BLOCK_EXPORT_DELETED.
    pub fn reap(&mut self, graph: &mut BlockGraph) -> Vec<String> {
        let Some(run) = self.running.as_mut() else {
            return Vec::new();
        };
        let mut gone = Vec::new();
        let shared = run.server.shared.clone();
        run.exports.retain(|e| {
            if e.shutting_down && shared.clients(&e.export) == 0 {
                graph.remove_backend(&e.backend);
                gone.push(e.id.clone());
                false
            } else {
                true
            }
        });
        gone
    }

    /// The named drive an export was added by lost its medium or went
    /// away (`nbd_eject_notifier`): the export is shut down.
    pub fn ejected(&mut self, graph: &mut BlockGraph) -> Vec<String> {
        let Some(run) = self.running.as_mut() else {
            return Vec::new();
        };
        for e in &mut run.exports {
            let gone = e
                .on_eject
                .as_ref()
                .is_some_and(|d| d.root().is_none() || !graph.backends().iter().any(|b| b.same(d)));
            if gone && !e.shutting_down {
                e.shutting_down = true;
                run.server.shared.withdraw(&e.export, true);
            }
        }
        self.reap(graph)
    }

    /// `qmp_nbd_server_stop`: every export goes (its clients
    /// disconnected), then the server. Returns the deleted exports' ids.
    pub fn stop(&mut self, graph: &mut BlockGraph) -> Result<Vec<String>, BlockError> {
        let Some(mut run) = self.running.take() else {
            return Err(BlockError::new("NBD server not running"));
        };
        // An export without clients goes at once, one with clients when
        // they have gone; QEMU waits for both before it returns. Its
        // deletions run as bottom halves, the last scheduled first: the
        // oldest export's event comes first.
        let mut exports: Vec<(bool, Entry)> = run
            .exports
            .drain(..)
            .rev()
            .map(|e| (run.server.shared.clients(&e.export) > 0, e))
            .collect();
        for (_, e) in &exports {
            run.server.shared.withdraw(&e.export, true);
        }
        // Waits for every connection thread.
        run.server.stop();
        exports.sort_by_key(|(busy, _)| *busy);
        Ok(exports
            .into_iter()
            .map(|(_, e)| {
                graph.remove_backend(&e.backend);
                e.id
            })
            .collect())
    }

    /// At exit (`blk_exp_close_all`), before the images close.
    pub fn close_all(&mut self, graph: &mut BlockGraph) -> Vec<String> {
        self.stop(graph).unwrap_or_default()
    }

    /// `query-block-exports`.
    pub fn query(&self) -> Value {
        Value::Array(
            self.entries()
                .iter()
                .map(|e| {
                    let node = e.backend.root().map(|r| r.name.clone()).unwrap_or_default();
                    json!({"id": e.id, "type": "nbd", "node-name": node,
                           "shutting-down": e.shutting_down})
                })
                .collect(),
        )
    }

    /// Runs `f` with no export request in flight (a drained section).
    pub fn drained<T>(&self, f: impl FnOnce() -> T) -> T {
        self.gate.drained(f)
    }
}

/// `blk_get_request_alignment`: a file node opened with O_DIRECT needs
/// its alignment; every driver above takes bytes.
fn request_alignment(node: &Arc<Node>) -> u32 {
    match node.driver.file_io() {
        Some(io) => u32::try_from(io.req_align.max(1)).unwrap_or(1),
        None => 1,
    }
}

/// The `bitmap` argument: looked up as QEMU does (down the backing chain),
/// then refused, as ferrovm has no qemu:dirty-bitmap context.
fn bitmap_check(node: &Arc<Node>, name: &str) -> Result<(), BlockError> {
    let mut cur = Some(node.clone());
    while let Some(n) = cur {
        if n.bitmaps.find(name).is_some() {
            return Err(BlockError::new(
                "ferrovm: exporting a dirty bitmap over NBD is not supported",
            ));
        }
        cur = n.filter_or_cow_child();
    }
    Err(BlockError::new(format!("Bitmap '{name}' is not found")))
}
