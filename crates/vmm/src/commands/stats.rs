//! `stats.json`: query-stats and query-stats-schemas from KVM's binary
//! statistics, shaped as QEMU 7.2 shapes them (monitor/qmp-cmds.c
//! `qmp_query_stats`, accel/kvm/kvm-all.c `query_stats_cb`).
//!
//! QEMU builds every list by prepending, so what KVM lists first comes last:
//! stats within a result, histogram buckets, vCPU results (the last CPU
//! first), and schemas (vcpu before vm). The answers here keep that order.

use kvm_bindings::{
    KVM_STATS_BASE_MASK, KVM_STATS_BASE_POW10, KVM_STATS_BASE_POW2, KVM_STATS_TYPE_CUMULATIVE,
    KVM_STATS_TYPE_INSTANT, KVM_STATS_TYPE_LINEAR_HIST, KVM_STATS_TYPE_LOG_HIST,
    KVM_STATS_TYPE_MASK, KVM_STATS_TYPE_PEAK, KVM_STATS_UNIT_BOOLEAN, KVM_STATS_UNIT_BYTES,
    KVM_STATS_UNIT_CYCLES, KVM_STATS_UNIT_MASK, KVM_STATS_UNIT_NONE, KVM_STATS_UNIT_SECONDS,
};
use qmp::{Args, EventSink, QmpError};
use serde_json::{json, Map, Value};

use crate::kvm_stats::{StatDesc, StatsFd};
use crate::vm::Vm;

pub(super) fn execute(
    vm: &mut Vm,
    cmd: &str,
    args: &Args,
    _events: &mut dyn EventSink,
) -> Result<Value, QmpError> {
    match cmd {
        "query-stats" => query_stats(vm, args),
        "query-stats-schemas" => query_stats_schemas(vm, args),
        _ => Err(super::not_found(cmd)),
    }
}

/// The VM's stats file. Without a machine QEMU's KVM accelerator still
/// holds an (empty) VM, so one is made, once, just for its stats. Under TCG
/// and qtest no stats provider is registered at all: `None`.
fn vm_stats(vm: &mut Vm) -> Option<Result<&StatsFd, String>> {
    if !vm.info.kvm_in_use() {
        return None;
    }
    if let Some(m) = &vm.machine {
        return Some(m.vm_stats());
    }
    let idle = vm.idle_vm_stats.get_or_insert_with(|| {
        let kvm = kvm_ioctls::Kvm::new().map_err(|e| format!("KVM stats: {e}"))?;
        let fd = kvm
            .create_vm()
            .map_err(|e| format!("KVM stats: KVM_CREATE_VM failed: {e}"))?;
        // The stats file holds its own reference to the VM.
        StatsFd::open(&fd)
    });
    Some(idle.as_ref().map_err(Clone::clone))
}

/// `names` of a request: `None` for all, an empty list for none.
fn str_list(v: Option<&Value>) -> Option<Vec<&str>> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
}

/// QEMU's `apply_str_list_filter`: no list (or an empty one, which QAPI
/// cannot tell apart once the caller let it through) passes everything.
fn passes(name: &str, list: &Option<Vec<&str>>) -> bool {
    match list {
        None => true,
        Some(l) => l.is_empty() || l.contains(&name),
    }
}

fn query_stats(vm: &mut Vm, args: &Args) -> Result<Value, QmpError> {
    let target = args.str("target")?.to_string();
    let vcpus = str_list(args.get("vcpus"));
    // One pass per request (all providers when there is none); each kvm
    // request runs the callback again, as qmp_query_stats does.
    let requests: Vec<Option<Vec<&str>>> = match args.get("providers").and_then(Value::as_array) {
        None => vec![None],
        Some(reqs) => reqs
            .iter()
            .filter(|r| r["provider"] == "kvm")
            .filter_map(|r| match str_list(r.get("names")) {
                Some(n) if n.is_empty() => None,
                names => Some(names),
            })
            .collect(),
    };
    let mut results: Vec<Value> = Vec::new();
    for names in requests {
        if target == "vm" {
            let Some(stats) = vm_stats(vm) else { break };
            let list = stat_list(stats.map_err(QmpError::generic)?, &names)?;
            if !list.is_empty() {
                results.insert(0, json!({"provider": "kvm", "stats": list}));
            }
        } else {
            if vcpus.as_ref().is_some_and(Vec::is_empty) || !vm.info.kvm_in_use() {
                continue;
            }
            for v in &vm.vcpus {
                let path = super::machine::cpu_qom_path(v.index);
                if !passes(&path, &vcpus) {
                    continue;
                }
                let fd = v.stats.as_ref().map_err(|e| QmpError::generic(e.clone()))?;
                let list = stat_list(fd, &names)?;
                if !list.is_empty() {
                    results.insert(
                        0,
                        json!({"provider": "kvm", "qom-path": path, "stats": list}),
                    );
                }
            }
        }
    }
    Ok(Value::Array(results))
}

/// The stats of one file that QEMU understands and `names` lets through.
fn stat_list(fd: &StatsFd, names: &Option<Vec<&str>>) -> Result<Vec<Value>, QmpError> {
    let values = fd.values().map_err(QmpError::generic)?;
    let mut list = Vec::new();
    for (d, vals) in fd.layout.descs.iter().zip(values) {
        if !passes(&d.name, names) || !understood(d) {
            continue;
        }
        let value = if d.flags & KVM_STATS_UNIT_MASK == KVM_STATS_UNIT_BOOLEAN {
            json!(vals[0] != 0)
        } else if d.size == 1 {
            json!(vals[0])
        } else {
            json!(vals.iter().rev().collect::<Vec<_>>())
        };
        list.insert(0, json!({"name": d.name, "value": value}));
    }
    Ok(list)
}

/// kvm-all.c `add_kvmstat_entry`: known type, unit and base only.
fn understood(d: &StatDesc) -> bool {
    matches!(
        d.flags & KVM_STATS_TYPE_MASK,
        KVM_STATS_TYPE_CUMULATIVE
            | KVM_STATS_TYPE_INSTANT
            | KVM_STATS_TYPE_PEAK
            | KVM_STATS_TYPE_LINEAR_HIST
            | KVM_STATS_TYPE_LOG_HIST
    ) && matches!(
        d.flags & KVM_STATS_UNIT_MASK,
        KVM_STATS_UNIT_NONE
            | KVM_STATS_UNIT_BYTES
            | KVM_STATS_UNIT_CYCLES
            | KVM_STATS_UNIT_SECONDS
            | KVM_STATS_UNIT_BOOLEAN
    ) && matches!(
        d.flags & KVM_STATS_BASE_MASK,
        KVM_STATS_BASE_POW10 | KVM_STATS_BASE_POW2
    )
}

/// kvm-all.c `add_kvmschema_entry`: the schema of one stat, or `None` for
/// one QEMU skips. The base is given only with a nonzero exponent.
fn schema_entry(d: &StatDesc) -> Option<Value> {
    let mut e = Map::new();
    e.insert("name".into(), json!(d.name));
    let ty = match d.flags & KVM_STATS_TYPE_MASK {
        KVM_STATS_TYPE_CUMULATIVE => "cumulative",
        KVM_STATS_TYPE_INSTANT => "instant",
        KVM_STATS_TYPE_PEAK => "peak",
        KVM_STATS_TYPE_LINEAR_HIST => {
            e.insert("bucket-size".into(), json!(d.bucket_size));
            "linear-histogram"
        }
        KVM_STATS_TYPE_LOG_HIST => "log2-histogram",
        _ => return None,
    };
    e.insert("type".into(), json!(ty));
    let unit = match d.flags & KVM_STATS_UNIT_MASK {
        KVM_STATS_UNIT_NONE => None,
        KVM_STATS_UNIT_BOOLEAN => Some("boolean"),
        KVM_STATS_UNIT_BYTES => Some("bytes"),
        KVM_STATS_UNIT_CYCLES => Some("cycles"),
        KVM_STATS_UNIT_SECONDS => Some("seconds"),
        _ => return None,
    };
    if let Some(u) = unit {
        e.insert("unit".into(), json!(u));
    }
    e.insert("exponent".into(), json!(d.exponent));
    if d.exponent != 0 {
        let base = match d.flags & KVM_STATS_BASE_MASK {
            KVM_STATS_BASE_POW10 => 10,
            KVM_STATS_BASE_POW2 => 2,
            _ => return None,
        };
        e.insert("base".into(), json!(base));
    }
    Some(Value::Object(e))
}

fn schema(fd: &StatsFd, target: &str) -> Value {
    let stats: Vec<Value> = fd
        .layout
        .descs
        .iter()
        .rev()
        .filter_map(schema_entry)
        .collect();
    json!({"provider": "kvm", "target": target, "stats": stats})
}

fn query_stats_schemas(vm: &mut Vm, args: &Args) -> Result<Value, QmpError> {
    // `kvm` is the only provider; a request for it is a request for all.
    let _ = args.opt_str("provider");
    let vm_schema = match vm_stats(vm) {
        None => return Ok(json!([])),
        Some(fd) => schema(fd.map_err(QmpError::generic)?, "vm"),
    };
    let mut out = vec![vm_schema];
    // The first CPU's descriptors stand for every vCPU (QEMU: first_cpu).
    if let Some(first) = vm.vcpus.first() {
        let fd = first
            .stats
            .as_ref()
            .map_err(|e| QmpError::generic(e.clone()))?;
        out.insert(0, schema(fd, "vcpu"));
    }
    Ok(Value::Array(out))
}
