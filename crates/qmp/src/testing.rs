//! A [`Handler`] that answers like `qemu-system-x86_64 -machine none -S`
//! (no vCPUs, no RAM), for tests, fuzzing and tools.  Not a VMM.

use serde_json::{json, Value};

use crate::dispatch::{Args, Event, EventSink, Handler, QmpError};

/// A pretend machine: run state, name, vCPU count; records `quit`.
pub struct FakeVm {
    pub status: &'static str,
    pub name: Option<String>,
    pub cpus: usize,
    pub quit_requested: bool,
}

impl Default for FakeVm {
    fn default() -> Self {
        FakeVm {
            status: "prelaunch",
            name: None,
            cpus: 0,
            quit_requested: false,
        }
    }
}

impl Handler for FakeVm {
    fn exit_requested(&self) -> bool {
        self.quit_requested
    }

    fn execute(
        &mut self,
        cmd: &str,
        args: &Args,
        events: &mut dyn EventSink,
    ) -> Result<Value, QmpError> {
        Ok(match cmd {
            "query-status" => json!({"running": self.status == "running", "singlestep": false, "status": self.status}),
            "stop" => {
                if self.status == "running" {
                    self.status = "paused";
                    events.emit(Event::new("STOP", None));
                }
                Value::Null
            }
            "cont" => {
                if self.status != "running" {
                    self.status = "running";
                    events.emit(Event::new("RESUME", None));
                }
                Value::Null
            }
            "system_reset" => {
                events.emit(Event::new("RESET", Some(json!({"guest": false, "reason": "host-qmp-system-reset"}))));
                Value::Null
            }
            "system_powerdown" => {
                events.emit(Event::new("POWERDOWN", None));
                Value::Null
            }
            "system_wakeup" => return Err(QmpError::generic("wake-up from suspend is not supported by this guest")),
            "quit" => {
                self.quit_requested = true;
                events.emit(Event::new("SHUTDOWN", Some(json!({"guest": false, "reason": "host-qmp-quit"}))));
                Value::Null
            }
            "inject-nmi" => {
                if self.cpus == 0 {
                    return Err(QmpError::unsupported());
                }
                Value::Null
            }
            "set-action" | "watchdog-set-action" => Value::Null,
            // No block graph: nothing to add to or delete from.
            "blockdev-add" => return Err(QmpError::generic("The fake VM has no block layer")),
            "block_set_io_throttle" => {
                return Err(QmpError::generic("Need exactly one of 'device' and 'id'"))
            }
            "blockdev-snapshot-sync" | "blockdev-snapshot" => {
                let d = args.opt_str("device").or(args.opt_str("node")).unwrap_or("");
                return Err(QmpError::generic(format!(
                    "Cannot find device='{d}' nor node-name=''"
                )));
            }
            // No block graph: no jobs, no devices to start one on.
            "query-jobs" | "query-block-jobs" => json!([]),
            "job-pause" | "job-resume" | "job-cancel" | "job-complete" | "job-dismiss"
            | "job-finalize" => return Err(QmpError::generic("Job not found")),
            "block-job-set-speed" | "block-job-cancel" | "block-job-pause"
            | "block-job-resume" | "block-job-complete" | "block-job-dismiss"
            | "block-job-finalize" => {
                let d = args.opt_str("device").or(args.opt_str("id")).unwrap_or("");
                return Err(QmpError::device_not_active(format!("Block job '{d}' not found")));
            }
            "block-stream" | "drive-mirror" | "blockdev-mirror" | "drive-backup"
            | "blockdev-backup" => {
                let d = args.str("device")?;
                return Err(QmpError::generic(format!(
                    "Cannot find device='{d}' nor node-name='{d}'"
                )));
            }
            "block-commit" => {
                let d = args.str("device")?;
                return Err(QmpError::device_not_found(format!("Device '{d}' not found")));
            }
            "blockdev-reopen" | "blockdev-create" | "transaction" => {
                return Err(QmpError::generic("The fake VM has no block layer"))
            }
            // No block graph: no node to put a bitmap on.
            "block-dirty-bitmap-add" => {
                let (n, name) = (args.str("node")?, args.str("name")?);
                return Err(QmpError::generic(if name.is_empty() {
                    "Bitmap name cannot be empty".to_string()
                } else {
                    format!("Cannot find device='{n}' nor node-name='{n}'")
                }));
            }
            "block-dirty-bitmap-remove" | "block-dirty-bitmap-clear"
            | "block-dirty-bitmap-enable" | "block-dirty-bitmap-disable"
            | "block-dirty-bitmap-merge" => {
                let n = args.str("node")?;
                return Err(QmpError::generic(format!("Node '{n}' not found")));
            }
            "change-backing-file" => {
                let d = args.str("device")?;
                return Err(QmpError::generic(format!(
                    "Cannot find device='{d}' nor node-name='{d}'"
                )));
            }
            // No block graph: no server to listen, nothing to export.
            "nbd-server-start" => return Err(QmpError::generic("The fake VM has no block layer")),
            "nbd-server-add" => {
                let d = args.str("device")?;
                return Err(QmpError::generic(format!(
                    "Cannot find device='{d}' nor node-name='{d}'"
                )));
            }
            "nbd-server-remove" => {
                let n = args.str("name")?;
                return Err(QmpError::generic(format!("Export '{n}' is not found")));
            }
            "nbd-server-stop" => return Err(QmpError::generic("NBD server not running")),
            "query-block-exports" => json!([]),
            // The fake VM holds no objects (ferrovm's are the block layer's).
            "object-add" => return Err(QmpError::generic("The fake VM has no block layer")),
            "object-del" => {
                let id = args.str("id")?;
                return Err(QmpError::generic(format!("object '{id}' not found")));
            }
            "blockdev-del" => {
                let n = args.str("node-name")?;
                return Err(QmpError::generic(format!(
                    "Failed to find node with node-name='{n}'"
                )));
            }
            "query-name" => match &self.name {
                Some(n) => json!({"name": n}),
                None => json!({}),
            },
            "query-uuid" => json!({"UUID": "00000000-0000-0000-0000-000000000000"}),
            "query-kvm" => json!({"enabled": false, "present": true}),
            "query-target" => json!({"arch": "x86_64"}),
            "query-machines" => json!([{"name": "none", "cpu-max": 1, "hotpluggable-cpus": false,
                "numa-mem-supported": false, "deprecated": false, "default-ram-id": "ram"}]),
            "query-current-machine" => json!({"wakeup-suspend-support": false}),
            "query-cpus-fast" => Value::Array(
                (0..self.cpus)
                    .map(|i| {
                        json!({"cpu-index": i, "qom-path": format!("/machine/unattached/device[{i}]"),
                        "thread-id": 1000 + i, "props": {"core-id": 0, "thread-id": 0, "socket-id": i}, "target": "x86_64"})
                    })
                    .collect(),
            ),
            "query-hotpluggable-cpus" => {
                return Err(QmpError::generic("The feature 'query-hotpluggable-cpus' is not enabled"))
            }
            "query-memory-size-summary" => json!({"base-memory": 0, "plugged-memory": 0}),
            "query-chardev" => json!([{"label": "compat_monitor0", "filename": "unix:/tmp/q.sock,server=on", "frontend-open": true}]),
            "query-iothreads" => json!([]),
            "qom-list" => match args.str("path")? {
                "/" => json!([{"name": "type", "type": "string"}, {"name": "machine", "type": "child<none-machine>"},
                    {"name": "chardevs", "type": "child<container>"}]),
                p => return Err(QmpError::device_not_found(format!("Device '{p}' not found"))),
            },
            "qom-get" => match (args.str("path")?, args.str("property")?) {
                ("/machine", "type") => json!("none-machine"),
                ("/machine", p) => return Err(QmpError::generic(format!("Property 'none-machine.{p}' not found"))),
                (p, _) => return Err(QmpError::device_not_found(format!("Device '{p}' not found"))),
            },
            "qom-set" => match (args.str("path")?, args.str("property")?) {
                ("/machine", "type") => return Err(QmpError::generic("Property 'none-machine.type' is not writable")),
                ("/machine", p) => return Err(QmpError::generic(format!("Property 'none-machine.{p}' not found"))),
                (p, _) => return Err(QmpError::device_not_found(format!("Device '{p}' not found"))),
            },
            // No drives and no PCI bus, as `-machine none`: the errors are
            // QEMU's for names that do not exist.
            "query-block" | "query-blockstats" | "query-named-block-nodes" | "query-pci" => json!([]),
            "x-debug-query-block-graph" => json!({ "nodes": [], "edges": [] }),
            "block_resize" => {
                return Err(QmpError::generic(format!(
                    "Cannot find device='{}' nor node-name='{}'",
                    args.opt_str("device").unwrap_or(""),
                    args.opt_str("node-name").unwrap_or("")
                )))
            }
            "device_add" => match args.opt_str("driver") {
                None => return Err(QmpError::generic("Parameter 'driver' is missing")),
                Some(d) if d.ends_with("-pci") => {
                    return Err(QmpError::generic(format!("No 'PCI' bus found for device '{d}'")))
                }
                Some(d) => return Err(QmpError::generic(format!("'{d}' is not a valid device model name"))),
            },
            "device_del" => {
                return Err(QmpError::device_not_found(format!("Device '{}' not found", args.str("id")?)))
            }
            // No NIC, no netdev, no balloon.
            "query-rx-filter" => match args.opt_str("name") {
                None => json!([]),
                Some(n) => return Err(QmpError::generic(format!("invalid net client name: {n}"))),
            },
            "set_link" => return Err(QmpError::device_not_found(format!("Device '{}' not found", args.str("name")?))),
            "netdev_del" => return Err(QmpError::device_not_found(format!("Device '{}' not found", args.str("id")?))),
            "netdev_add" => return Err(QmpError::generic("netdev_add is not possible in a pretend machine")),
            "announce-self" => json!({}),
            "balloon" | "query-balloon" => {
                return Err(QmpError::device_not_active("No balloon device has been activated"))
            }
            // No devices, no CPU models, no TPM, no migration: only the
            // board-less machine type exists.
            "qom-list-types" => json!([{"name": "none-machine", "parent": "machine"}]),
            "qom-list-properties" => match args.str("typename")? {
                "none-machine" => json!([{"name": "type", "type": "string"}]),
                t => return Err(QmpError::device_not_found(format!("Class '{t}' not found"))),
            },
            "device-list-properties" => {
                return Err(QmpError::device_not_found(format!("Device '{}' not found", args.str("typename")?)))
            }
            "query-migrate-capabilities" => json!([{"capability": "events", "state": false}]),
            "migrate-set-capabilities" => json!({}),
            // No KVM behind the fake: no vCPUs, no stats.
            "query-stats" | "query-stats-schemas" => json!([]),
            "query-dirty-rate" => json!({"status": "unstarted", "sample-pages": 0,
                                         "mode": "page-sampling", "start-time": 0, "calc-time": 0}),
            "query-tpm-models" | "query-tpm-types" | "query-cpu-definitions" => {
                json!([])
            }
            "query-command-line-options" => match args.opt_str("option") {
                None => json!([]),
                Some(o) => return Err(QmpError::generic(format!("invalid option name: {o}"))),
            },
            "rtc-reset-reinjection" => Value::Null,
            "query-sev-capabilities" => return Err(QmpError::generic("SEV is not enabled in KVM")),
            "query-sgx-capabilities" => return Err(QmpError::generic("SGX is not enabled in KVM")),
            "query-cpu-model-expansion" => {
                let name = args.get("model").and_then(|m| m.get("name")).and_then(Value::as_str).unwrap_or("");
                return Err(QmpError::generic(format!("CPU model '{name}' not found")));
            }
            _ => return Err(QmpError::command_not_found(format!("The command {cmd} has not been found"))),
        })
    }
}
