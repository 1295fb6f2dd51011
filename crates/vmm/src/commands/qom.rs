//! `qom.json`: the QOM tree ferrovm models (containers, the machine, vCPUs).

use qmp::{Args, EventSink, QmpError};
use serde_json::{json, Value};

use super::machine::cpu_qom_path;
use crate::vm::Vm;

pub(super) fn execute(
    vm: &mut Vm,
    cmd: &str,
    args: &Args,
    _events: &mut dyn EventSink,
) -> Result<Value, QmpError> {
    match cmd {
        "qom-list" => qom_list(vm, args.str("path")?),
        "qom-get" => qom_get(vm, args.str("path")?, args.str("property")?),
        _ => Err(super::not_found(cmd)),
    }
}

/// Every QOM path ferrovm models.
fn qom_paths(vm: &Vm) -> Vec<String> {
    let mut paths: Vec<String> = [
        "/",
        "/objects",
        "/chardevs",
        "/machine",
        "/machine/peripheral",
        "/machine/peripheral-anon",
        "/machine/unattached",
    ]
    .iter()
    .map(|p| p.to_string())
    .collect();
    paths.extend(vm.vcpus.iter().map(|v| cpu_qom_path(v.index)));
    paths
}

/// QEMU's `object_resolve_path()`: an absolute path ignores empty
/// components; a partial path names the unique object whose path ends
/// with it, and is ambiguous when several do.
fn resolve_qom_path(vm: &Vm, path: &str) -> Result<String, QmpError> {
    let parts: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let paths = qom_paths(vm);
    if path.starts_with('/') {
        let canon = format!("/{}", parts.join("/"));
        if paths.contains(&canon) {
            return Ok(canon);
        }
    } else {
        let matches: Vec<&String> = paths
            .iter()
            .filter(|p| {
                let comps: Vec<&str> = p.split('/').filter(|c| !c.is_empty()).collect();
                comps.len() >= parts.len() && comps[comps.len() - parts.len()..] == parts[..]
            })
            .collect();
        match matches.len() {
            0 => {}
            1 => return Ok(matches[0].clone()),
            _ => return Err(QmpError::generic(format!("Path '{path}' is ambiguous"))),
        }
    }
    Err(QmpError::device_not_found(format!(
        "Device '{path}' not found"
    )))
}

fn qom_list(vm: &Vm, path: &str) -> Result<Value, QmpError> {
    let path = resolve_qom_path(vm, path)?;
    let entries: Vec<(String, String)> = match path.as_str() {
        "/" => pairs(&[
            ("type", "string"),
            ("objects", "child<container>"),
            ("machine", &format!("child<{}>", vm.info.machine_type)),
            ("chardevs", "child<container>"),
        ]),
        "/machine" => pairs(&[
            ("type", "string"),
            ("peripheral", "child<container>"),
            ("peripheral-anon", "child<container>"),
            ("unattached", "child<container>"),
        ]),
        "/objects" | "/chardevs" | "/machine/peripheral" | "/machine/peripheral-anon" => {
            pairs(&[("type", "string")])
        }
        "/machine/unattached" => {
            let mut v = pairs(&[("type", "string")]);
            v.extend(vm.vcpus.iter().map(|c| {
                let path = cpu_qom_path(c.index);
                let child = path.rsplit('/').next().unwrap_or_default().to_string();
                (child, "child<qemu64-x86_64-cpu>".to_string())
            }));
            v
        }
        p if cpu_by_path(vm, p).is_some() => pairs(&[("type", "string"), ("realized", "bool")]),
        p => {
            return Err(QmpError::device_not_found(format!(
                "Device '{p}' not found"
            )))
        }
    };
    Ok(Value::Array(
        entries
            .into_iter()
            .map(|(n, t)| json!({"name": n, "type": t}))
            .collect(),
    ))
}

fn qom_get(vm: &Vm, path: &str, property: &str) -> Result<Value, QmpError> {
    let path = resolve_qom_path(vm, path)?;
    let type_name = match path.as_str() {
        "/machine" => vm.info.machine_type.clone(),
        "/"
        | "/objects"
        | "/chardevs"
        | "/machine/peripheral"
        | "/machine/peripheral-anon"
        | "/machine/unattached" => "container".into(),
        p if cpu_by_path(vm, p).is_some() => "qemu64-x86_64-cpu".into(),
        p => {
            return Err(QmpError::device_not_found(format!(
                "Device '{p}' not found"
            )))
        }
    };
    match property {
        "type" => Ok(json!(type_name)),
        "realized" if type_name.ends_with("-cpu") => Ok(json!(true)),
        p => Err(QmpError::generic(format!(
            "Property '{type_name}.{p}' not found"
        ))),
    }
}

fn cpu_by_path(vm: &Vm, path: &str) -> Option<usize> {
    vm.vcpus
        .iter()
        .map(|v| v.index)
        .find(|&i| cpu_qom_path(i) == path)
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}
