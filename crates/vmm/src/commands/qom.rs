//! `qom.json`: the QOM tree ferrovm models (containers, the machine, vCPUs),
//! and the QOM types it has (`qom_types`).

use qmp::{Args, EventSink, QmpError};
use serde_json::{json, Value};

use super::machine::cpu_qom_path;
use crate::devices::Peripheral;
use crate::sync::lock;
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
        "qom-set" => qom_set(
            vm,
            args.str("path")?,
            args.str("property")?,
            args.get("value").unwrap_or(&Value::Null),
        ),
        "qom-list-types" => Ok(crate::qom_types::list(
            args.opt_str("implements"),
            args.opt_bool("abstract").unwrap_or(false),
        )),
        "object-add" => {
            let mut props = args.as_map().clone();
            let ty = props.remove("qom-type");
            let id = props.remove("id");
            let ty = ty.as_ref().and_then(Value::as_str).unwrap_or_default();
            let id = id.as_ref().and_then(Value::as_str).unwrap_or_default();
            vm.block
                .object_add(ty, id, &props, false)
                .map_err(|e| QmpError::generic(e.msg))?;
            Ok(json!({}))
        }
        "object-del" => {
            vm.block
                .object_del(args.str("id")?)
                .map_err(|e| QmpError::generic(e.msg))?;
            Ok(json!({}))
        }
        "qom-list-properties" => Ok(crate::qom_types::class_properties(args.str("typename")?)?),
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
    paths.extend(
        throttle_groups(vm)
            .into_iter()
            .map(|id| format!("/objects/{id}")),
    );
    paths.extend(peripherals(vm).into_iter().map(|p| p.qom_path));
    paths
}

/// The ids of the `throttle-group` objects (`/objects/ID`).
fn throttle_groups(vm: &Vm) -> Vec<String> {
    vm.block
        .objects()
        .into_iter()
        .filter(|(_, t)| t == "throttle-group")
        .map(|(id, _)| id)
        .collect()
}

/// The throttle-group object at `path`, if it is one.
fn throttle_group_at<'a>(
    vm: &'a Vm,
    path: &str,
) -> Option<&'a block::throttle_group::ThrottleGroupObject> {
    vm.block.throttle_group(path.strip_prefix("/objects/")?)
}

fn peripherals(vm: &Vm) -> Vec<Peripheral> {
    vm.peripherals()
}

/// The children of a peripheral container, as `child<TYPE>` links.
fn children_of(vm: &Vm, container: &str) -> Vec<(String, String)> {
    peripherals(vm)
        .into_iter()
        .filter_map(|p| {
            let (parent, name) = p.qom_path.rsplit_once('/')?;
            (parent == container).then(|| (name.to_string(), format!("child<{}>", p.driver)))
        })
        .collect()
}

fn peripheral_at(vm: &Vm, path: &str) -> Option<Peripheral> {
    peripherals(vm).into_iter().find(|p| p.qom_path == path)
}

/// The balloon's own QOM properties (hw/virtio/virtio-balloon.c), if
/// `path` is the balloon.
fn balloon_at<'a>(vm: &'a Vm, path: &str) -> Option<&'a crate::devices::balloon::Balloon> {
    vm.machine
        .as_ref()
        .and_then(|m| m.devices.balloon())
        .filter(|b| b.qom_path == path)
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
        "/objects" => {
            let mut v = pairs(&[("type", "string")]);
            v.extend(
                throttle_groups(vm)
                    .into_iter()
                    .map(|id| (id, "child<throttle-group>".to_string())),
            );
            v
        }
        "/chardevs" => pairs(&[("type", "string")]),
        p if throttle_group_at(vm, p).is_some() => {
            let mut v = pairs(&[("type", "string"), ("limits", "ThrottleLimits")]);
            if let Some(Value::Object(l)) = throttle_group_at(vm, p).map(|o| o.limits()) {
                v.extend(l.keys().map(|k| (format!("x-{k}"), "int".to_string())));
            }
            v
        }
        c @ ("/machine/peripheral" | "/machine/peripheral-anon") => {
            let mut v = pairs(&[("type", "string")]);
            v.extend(children_of(vm, c));
            v
        }
        "/machine/unattached" => {
            let mut v = pairs(&[("type", "string")]);
            v.extend(vm.vcpus.iter().map(|c| {
                let path = cpu_qom_path(c.index);
                let child = path.rsplit('/').next().unwrap_or_default().to_string();
                (child, "child<qemu64-x86_64-cpu>".to_string())
            }));
            // The board's own devices under qtest (an IDE CD-ROM).
            v.extend(children_of(vm, "/machine/unattached"));
            v
        }
        p if cpu_by_path(vm, p).is_some() => {
            let mut v = pairs(&[("type", "string"), ("realized", "bool")]);
            v.extend(super::cpu_qom::properties());
            v
        }
        p if balloon_at(vm, p).is_some() => pairs(&[
            ("type", "string"),
            ("realized", "bool"),
            ("guest-stats", "guest statistics"),
            ("guest-stats-polling-interval", "int"),
        ]),
        p if peripheral_at(vm, p).is_some() => pairs(&[("type", "string"), ("realized", "bool")]),
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
        p if throttle_group_at(vm, p).is_some() => "throttle-group".into(),
        p => match peripheral_at(vm, p) {
            Some(d) => d.driver.into(),
            None => {
                return Err(QmpError::device_not_found(format!(
                    "Device '{p}' not found"
                )))
            }
        },
    };
    if let Some(b) = balloon_at(vm, &path) {
        match property {
            "guest-stats" => return Ok(lock(&b.model).guest_stats_json()),
            "guest-stats-polling-interval" => return Ok(json!(lock(&b.model).stats_interval())),
            _ => {}
        }
    }
    if let Some(v) = throttle_group_at(vm, &path).and_then(|o| o.property(property)) {
        return Ok(v);
    }
    if cpu_by_path(vm, &path).is_some() {
        if let Some(v) = super::cpu_qom::get(vm, property) {
            return v;
        }
    }
    match property {
        "type" => Ok(json!(type_name)),
        "realized" if type_name.ends_with("-cpu") || peripheral_at(vm, &path).is_some() => {
            Ok(json!(true))
        }
        p => Err(QmpError::generic(format!(
            "Property '{type_name}.{p}' not found"
        ))),
    }
}

/// `qom-set`: the balloon's polling interval is the one writable property
/// ferrovm models; the others are read-only, as `type` is in QEMU.
fn qom_set(vm: &Vm, path: &str, property: &str, value: &Value) -> Result<Value, QmpError> {
    let path = resolve_qom_path(vm, path)?;
    if let Some(b) = balloon_at(vm, &path) {
        if property == "guest-stats-polling-interval" {
            let secs = value.as_i64().ok_or_else(|| {
                QmpError::generic(format!(
                    "Invalid parameter type for '{property}', expected: integer"
                ))
            })?;
            b.set_stats_interval(secs).map_err(QmpError::generic)?;
            return Ok(json!({}));
        }
    }
    if let Some(r) = throttle_group_at(vm, &path).and_then(|o| o.set_property(property, value)) {
        r.map_err(|e| QmpError::generic(e.msg))?;
        return Ok(json!({}));
    }
    let type_name = qom_get(vm, &path, "type")?;
    let type_name = type_name.as_str().unwrap_or_default();
    // A property qom-get can read is read-only; any other is unknown.
    match qom_get(vm, &path, property) {
        Ok(_) => Err(QmpError::generic(format!(
            "Property '{type_name}.{property}' is not writable"
        ))),
        Err(_) => Err(QmpError::generic(format!(
            "Property '{type_name}.{property}' not found"
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
