//! Events the block layer raises from wherever a request runs (an I/O
//! thread, a job's worker), for the monitor: QEMU's
//! `qapi_event_send_quorum_*`. The emulator installs one sink at start;
//! until then (tools, tests that do not care) events are dropped.

use std::sync::{Arc, RwLock};

use serde_json::{json, Map, Value};

/// An event a node raised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeEvent {
    /// QUORUM_REPORT_BAD: child `node_name` failed (`error`) or returned
    /// data the others outvoted (no `error`).
    QuorumReportBad {
        /// `QuorumOpType`: `read`, `write` or `flush`.
        op: &'static str,
        error: Option<String>,
        node_name: String,
        sector_num: u64,
        sectors_count: u64,
    },
    /// QUORUM_FAILURE: quorum node `node_name` reached no quorum.
    QuorumFailure {
        node_name: String,
        sector_num: u64,
        sectors_count: u64,
    },
}

impl NodeEvent {
    /// The QMP event's name and data. `reference` turns a node name into
    /// `bdrv_get_device_or_node_name` (the drive id if a drive is on it).
    pub fn to_qmp(&self, reference: impl Fn(&str) -> String) -> (&'static str, Value) {
        match self {
            NodeEvent::QuorumReportBad {
                op,
                error,
                node_name,
                sector_num,
                sectors_count,
            } => {
                let mut m = Map::new();
                m.insert("type".into(), json!(op));
                if let Some(e) = error {
                    m.insert("error".into(), json!(e));
                }
                m.insert("node-name".into(), json!(node_name));
                m.insert("sector-num".into(), json!(sector_num));
                m.insert("sectors-count".into(), json!(sectors_count));
                ("QUORUM_REPORT_BAD", Value::Object(m))
            }
            NodeEvent::QuorumFailure {
                node_name,
                sector_num,
                sectors_count,
            } => (
                "QUORUM_FAILURE",
                json!({
                    "reference": reference(node_name),
                    "sector-num": sector_num,
                    "sectors-count": sectors_count,
                }),
            ),
        }
    }
}

pub type EventSink = Arc<dyn Fn(NodeEvent) + Send + Sync>;

static SINK: RwLock<Option<EventSink>> = RwLock::new(None);

/// Where events go from now on.
pub fn set_sink(sink: EventSink) {
    *SINK.write().unwrap_or_else(|e| e.into_inner()) = Some(sink);
}

/// Raises `e` (dropped if no sink is installed).
pub fn emit(e: NodeEvent) {
    let sink = SINK.read().unwrap_or_else(|e| e.into_inner()).clone();
    if let Some(s) = sink {
        s(e);
    }
}
