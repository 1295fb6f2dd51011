//! `-device`, `-netdev`, `-object`, `-global`, `-audiodev`.
//!
//! These are kept as JSON objects for the VMM: a JSON argument as given, a
//! `key=value` argument with string values (QemuOpts for `-device` and
//! `-netdev`, keyval with dotted nesting for `-object` and `-audiodev`).
//! Here only what every such option needs is checked: the required members,
//! well-formed and unique ids, and the backend types ferrovm provides.

use crate::builder::{Builder, Frontend, Inv};
use crate::config::GlobalSpec;
use crate::error::CliError;
use crate::schema::{bad_id, id_wellformed, key, Kind, Schema};
use crate::table::Parsed;
use serde_json::{Map, Value};

/// `-device` in key=value form: implied `driver`, any property.
pub(crate) const DEVICE_SCHEMA: Schema = Schema {
    implied: Some("driver"),
    keys: &[key("driver", Kind::Str), key("id", Kind::Id)],
    warn_flags: true,
    open: true,
};

/// `-netdev` in key=value form: implied `type`; keys checked per type.
pub(crate) const NETDEV_SCHEMA: Schema = Schema {
    implied: Some("type"),
    keys: &[key("type", Kind::Str), key("id", Kind::Id)],
    warn_flags: true,
    open: true,
};

/// `-netdev tap` members (QAPI `NetdevTapOptions`).
pub(crate) const TAP_KEYS: &[&str] = &[
    "type",
    "id",
    "ifname",
    "fd",
    "fds",
    "script",
    "downscript",
    "br",
    "helper",
    "sndbuf",
    "vnet_hdr",
    "vhost",
    "vhostfd",
    "vhostfds",
    "vhostforce",
    "queues",
    "poll-us",
];

/// QEMU netdev types ferrovm does not provide.
const OTHER_NETDEVS: &[&str] = &[
    "user",
    "bridge",
    "socket",
    "stream",
    "dgram",
    "vde",
    "l2tpv3",
    "vhost-user",
    "vhost-vdpa",
    "hubport",
    "vmnet-host",
    "vmnet-shared",
    "vmnet-bridged",
];

/// Fetch a required string member.
fn required<'a>(inv: &Inv, map: &'a Map<String, Value>, name: &str) -> Result<&'a str, CliError> {
    match map.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(inv.err(format!(
            "Invalid parameter type for '{name}', expected: string"
        ))),
        None => Err(inv.err(format!("Parameter '{name}' is missing"))),
    }
}

/// Check an `id` member if present (or required), and claim it in `ns`.
fn check_id(
    b: &mut Builder,
    inv: &Inv,
    map: &Map<String, Value>,
    ns: &'static str,
    needed: bool,
) -> Result<(), CliError> {
    let id = match map.get("id") {
        None if !needed => return Ok(()),
        _ => required(inv, map, "id")?,
    };
    if !id_wellformed(id) {
        return Err(inv.err(bad_id()));
    }
    b.claim_id(inv, ns, id)
}

pub(crate) fn handle_device(b: &mut Builder, inv: &Inv, p: Parsed) -> Result<(), CliError> {
    let map = p.json();
    let driver = required(inv, &map, "driver")?.to_string();
    if driver.is_empty() {
        return Err(inv.err("'' is not a valid device model name"));
    }
    check_id(b, inv, &map, "device", false)?;
    if let Some(Value::String(chr)) = map.get("chardev") {
        b.frontends
            .push((chr.clone(), inv.clone(), Frontend::Device(driver)));
    }
    b.cfg.devices.push(Value::Object(map));
    b.cfg.device_locations.push(inv.location());
    Ok(())
}

pub(crate) fn handle_netdev(b: &mut Builder, inv: &Inv, p: Parsed) -> Result<(), CliError> {
    let map = p.json();
    let ty = required(inv, &map, "type")?.to_string();
    if ty != "tap" {
        return Err(inv.err(if OTHER_NETDEVS.contains(&ty.as_str()) {
            format!("network backend '{ty}' is not supported by ferrovm (only 'tap')")
        } else {
            format!("Parameter 'type' does not accept value '{ty}'")
        }));
    }
    check_id(b, inv, &map, "netdev", true)?;
    if let Some(k) = map.keys().find(|k| !TAP_KEYS.contains(&k.as_str())) {
        return Err(inv.err(format!("Invalid parameter '{k}'")));
    }
    b.cfg.netdevs.push(Value::Object(map));
    b.cfg.netdev_locations.push(inv.location());
    Ok(())
}

pub(crate) fn handle_object(b: &mut Builder, inv: &Inv, p: Parsed) -> Result<(), CliError> {
    let map = p.json();
    // Observed on QEMU 7.2: the key=value form takes no dotted keys (only
    // the JSON form nests, e.g. a throttle-group's `limits`).
    if let Some(arg) = inv.arg.as_deref().filter(|a| !crate::keyval::is_json(a)) {
        if let Some(k) = map.iter().find_map(|(k, v)| v.is_object().then_some(k)) {
            let inner = arg
                .split(',')
                .filter_map(|kv| kv.split_once('=').map(|(k, _)| k))
                .find(|key| key.starts_with(&format!("{k}.")))
                .unwrap_or(k);
            return Err(inv.err(format!("Invalid parameter '{inner}'")));
        }
    }
    required(inv, &map, "qom-type")?;
    check_id(b, inv, &map, "object", true)?;
    b.cfg.objects.push(Value::Object(map));
    b.cfg.object_locations.push(inv.location());
    Ok(())
}

pub(crate) fn handle_audiodev(b: &mut Builder, inv: &Inv, p: Parsed) -> Result<(), CliError> {
    let map = p.json();
    let driver = required(inv, &map, "driver")?;
    if driver != "none" {
        return Err(inv.err(format!(
            "audio driver '{driver}' is not supported by ferrovm (only 'none')"
        )));
    }
    check_id(b, inv, &map, "audiodev", true)
}

/// `-global` keys in the `driver=,property=,value=` form.
pub(crate) const GLOBAL_SCHEMA: Schema = Schema {
    implied: None,
    keys: &[
        key("driver", Kind::Str),
        key("property", Kind::Str),
        key("value", Kind::Str),
    ],
    warn_flags: true,
    open: false,
};

/// Parse `driver.property=value` (value taken verbatim) or the key=value form.
pub(crate) fn parse_global(s: &str) -> Result<(GlobalSpec, Vec<String>), String> {
    if let Some((lhs, value)) = s.split_once('=') {
        if let Some((driver, property)) = lhs.split_once('.') {
            if !driver.is_empty() && !property.is_empty() {
                let spec = GlobalSpec {
                    driver: driver.to_string(),
                    property: property.to_string(),
                    value: value.to_string(),
                };
                return Ok((spec, Vec::new()));
            }
        }
    }
    let o = GLOBAL_SCHEMA.parse(s)?;
    match (o.str("driver"), o.str("property"), o.str("value")) {
        (Some(d), Some(p), Some(v)) => Ok((
            GlobalSpec {
                driver: d.to_string(),
                property: p.to_string(),
                value: v.to_string(),
            },
            o.warnings,
        )),
        _ => Err("options 'driver', 'property', and 'value' are required".to_string()),
    }
}

pub(crate) fn handle_global(b: &mut Builder, inv: &Inv, _p: Parsed) -> Result<(), CliError> {
    let (spec, warnings) = parse_global(inv.arg()).map_err(|e| inv.err(e))?;
    for w in warnings {
        b.warn(inv, &w);
    }
    b.cfg.globals.push(spec);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globals() {
        let (g, _) = parse_global("kvm-pit.lost_tick_policy=delay").unwrap();
        assert_eq!(
            (g.driver.as_str(), g.property.as_str(), g.value.as_str()),
            ("kvm-pit", "lost_tick_policy", "delay")
        );
        let (g, _) = parse_global("ICH9-LPC.disable_s3=1").unwrap();
        assert_eq!(g.value, "1");
        let (g, _) = parse_global("driver=a,property=b,value=c,,d").unwrap();
        assert_eq!(
            (g.driver.as_str(), g.property.as_str(), g.value.as_str()),
            ("a", "b", "c,d")
        );
        let (g, _) = parse_global("a.b=x,y").unwrap();
        assert_eq!(g.value, "x,y");
        assert_eq!(
            parse_global("driver=foo").unwrap_err(),
            "options 'driver', 'property', and 'value' are required"
        );
        assert_eq!(parse_global("foo").unwrap_err(), "Invalid parameter 'foo'");
        assert_eq!(
            parse_global("foo.bar").unwrap_err(),
            "Invalid parameter 'foo.bar'"
        );
    }
}
