//! `-machine`/`-M`, `-accel`, `-enable-kvm`, `-cpu`.

use crate::builder::{Builder, Inv};
use crate::config::{
    CpuFeature, CpuFeatureValue, CpuModel, CpuModelName, MachineKind, MachineSpec,
};
use crate::error::CliError;
use crate::keyval::parse_keyval_help;
use crate::machine_types::find_machine_type;
use crate::schema::{check, key, parse_bool, Key, Kind, Schema, Val};
use crate::table::Parsed;
use std::path::PathBuf;

/// `-machine` keys ferrovm accepts (keyval syntax, implied `type`).
pub(crate) const MACHINE_KEYS: &[Key] = &[
    key("type", Kind::Str),
    key("accel", Kind::Str),
    key("kernel", Kind::Str),
    key("initrd", Kind::Str),
    key("append", Kind::Str),
    key("firmware", Kind::Str),
    key("memory-backend", Kind::Str),
    key("dump-guest-core", Kind::Bool),
    key("mem-merge", Kind::Bool),
    key("kernel-irqchip", Kind::Enum(&["on", "off", "split"])),
    key("kernel_irqchip", Kind::Enum(&["on", "off", "split"])),
    key("usb", Kind::Bool),
    key("vmport", Kind::Enum(&["on", "off", "auto"])),
    key("smm", Kind::Enum(&["on", "off", "auto"])),
    key("hpet", Kind::Bool),
    key("acpi", Kind::Enum(&["on", "off", "auto"])),
    key("pit", Kind::Enum(&["on", "off", "auto"])),
    key("pic", Kind::Enum(&["on", "off", "auto"])),
    key("sata", Kind::Bool),
    key("smbus", Kind::Bool),
    key("i8042", Kind::Bool),
    key("graphics", Kind::Bool),
    key("suppress-vmdesc", Kind::Bool),
];

/// For documentation only: `-machine` is parsed with keyval.
pub(crate) const MACHINE_SCHEMA: Schema = Schema {
    implied: Some("type"),
    keys: MACHINE_KEYS,
    warn_flags: false,
    open: false,
};

/// Accepted-only-when values: (key, values ferrovm can honour).
const MACHINE_LIMITS: &[(&str, &[&str])] = &[
    ("kernel-irqchip", &["on"]),
    ("kernel_irqchip", &["on"]),
    ("usb", &["off"]),
    ("vmport", &["off", "auto"]),
    ("smm", &["off", "auto"]),
    ("hpet", &["off"]),
    ("pit", &["on", "auto"]),
    ("pic", &["on", "auto"]),
    ("sata", &["off"]),
    ("smbus", &["off"]),
    ("i8042", &["on"]),
];

/// QEMU machine types ferrovm does not provide.
const OTHER_QEMU_MACHINES: &[&str] = &["microvm", "isapc", "xenfv", "xenpv", "x-remote"];

/// Resolve a machine type name (or alias) to its kind.
pub(crate) fn machine_kind(name: &str) -> Result<MachineKind, String> {
    match find_machine_type(name) {
        Some(m) => Ok(m.kind),
        None if OTHER_QEMU_MACHINES.contains(&name) => {
            Err(format!("machine type '{name}' is not supported by ferrovm"))
        }
        None => Err(format!(
            "unsupported machine type '{name}' (supported: q35, pc, pc-q35-X.Y, pc-i440fx-X.Y, ferrovm, none; see -machine help)"
        )),
    }
}

/// (max vCPUs, prefer sockets when computing topology, QEMU's machine name).
pub(crate) fn smp_limits(m: &MachineSpec) -> (u64, bool, String) {
    let ty = find_machine_type(&m.name);
    let name = ty
        .as_ref()
        .map_or_else(|| m.name.clone(), |t| t.name.clone());
    let max = ty.as_ref().map_or(1, |t| u64::from(t.cpu_max));
    if m.kind == MachineKind::None {
        return (1, false, name);
    }
    let version = name
        .strip_prefix("pc-q35-")
        .or_else(|| name.strip_prefix("pc-i440fx-"));
    // Before 6.2 QEMU computed omitted sockets before cores.
    let prefer_sockets = version.is_some_and(|v| {
        let mut it = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        let major = it.next().unwrap_or(0);
        let minor = it.next().unwrap_or(0);
        (major, minor) < (6, 2)
    });
    (max, prefer_sockets, name)
}

fn not_supported(key: &str, value: &str) -> String {
    format!("'{key}={value}' is not supported by ferrovm")
}

/// The accelerators ferrovm accepts, with whether `-accel help` lists them:
/// `kvm` runs the vCPUs; `tcg` only with `-machine none`, which runs no vCPU
/// (libvirt's second capability probe), so it is not offered; `qtest` runs
/// no vCPU either and, as QEMU, is left out of the list (vl.c: "omit qtest
/// which is used for tests only").
pub(crate) const ACCELERATORS: &[(&str, bool)] = &[("kvm", true), ("tcg", false), ("qtest", false)];

/// QEMU accelerators ferrovm does not provide.
const OTHER_ACCELS: &[&str] = &["xen", "hax", "hvf", "whpx", "nvmm"];

/// `-accel help` (vl.c; QEMU's heading).
fn accel_help() -> String {
    let mut s = String::from("Accelerators supported in QEMU binary:\n");
    for (name, listed) in ACCELERATORS {
        if *listed {
            s.push_str(name);
            s.push('\n');
        }
    }
    s
}

/// `accel=` lists accelerators to try in order; the first must be one
/// ferrovm has (a TCG board is refused once the type is known).
fn check_accel_list(list: &str) -> Result<String, String> {
    let first = list.split(':').next().unwrap_or("");
    if ACCELERATORS.iter().any(|(n, _)| *n == first) {
        Ok(first.to_string())
    } else {
        Err(tcg_refused(first))
    }
}

/// The error for an accelerator ferrovm cannot run vCPUs with.
pub(crate) fn tcg_refused(accel: &str) -> String {
    format!("accelerator '{accel}' is not supported (ferrovm runs on KVM only)")
}

/// Resolves the accelerator once the whole command line is read, as
/// vl.c `configure_accelerators`: the `-accel` options are tried in order
/// and the first wins (ferrovm can start each it accepts); without them
/// the machine's `accel=` (also `-enable-kvm`) decides; both at once are
/// an error.
pub(crate) fn resolve_accel(b: &mut Builder) -> Result<(), CliError> {
    let chosen = match (b.accels.first(), &b.machine_accel) {
        (Some(_), Some(_)) => {
            return Err(CliError::new(
                "The -accel and \"-machine accel=\" options are incompatible",
            ))
        }
        (Some(a), None) | (None, Some(a)) => a.clone(),
        (None, None) => return Ok(()),
    };
    match chosen.0.as_str() {
        "kvm" => b.cfg.accel_kvm = true,
        "qtest" => b.cfg.accel_qtest = true,
        _ => {
            if b.cfg.machine.kind != MachineKind::None {
                return Err(chosen.1.err(tcg_refused("tcg")));
            }
            b.cfg.accel_tcg = true;
        }
    }
    Ok(())
}

pub(crate) fn handle_machine(b: &mut Builder, inv: &Inv, _p: Parsed) -> Result<(), CliError> {
    let (map, help) = parse_keyval_help(inv.arg(), Some("type")).map_err(|e| inv.err(e))?;
    if help {
        // vl.c machine_help_func: with a type (here or from an earlier
        // -machine) QEMU lists that type's properties instead.
        if map.contains_key("type") || b.machine_type.is_some() {
            return Err(
                inv.err("machine property help is not supported by ferrovm (see docs/cli.md)")
            );
        }
        b.print_and_exit = Some(crate::machine_types::machine_help());
        return Ok(());
    }
    for (k, v) in &map {
        let Some(def) = MACHINE_SCHEMA.find(k) else {
            return Err(inv.err(format!("Invalid parameter '{k}'")));
        };
        let Some(v) = v.as_str() else {
            return Err(inv.err(format!("Parameter '{k}' expects a value")));
        };
        let checked = check(def.kind, k, v).map_err(|e| inv.err(e))?;
        if let Some((_, ok)) = MACHINE_LIMITS.iter().find(|(n, _)| n == k) {
            let canon = match checked {
                Val::Bool(true) => "on",
                Val::Bool(false) => "off",
                _ => v,
            };
            if !ok.contains(&canon) {
                return Err(inv.err(not_supported(k, v)));
            }
        }
        let m = &mut b.cfg.machine;
        match k.as_str() {
            // Resolved once all options are read: the last type wins.
            "type" => b.machine_type = Some((v.to_string(), inv.clone())),
            "accel" => {
                let first = check_accel_list(v).map_err(|e| inv.err(e))?;
                b.machine_accel = Some((first, inv.clone()));
            }
            "kernel" => {
                b.cfg.kernel = Some(PathBuf::from(v));
            }
            "initrd" => {
                b.cfg.initrd = Some(PathBuf::from(v));
                b.initrd_set = true;
            }
            "append" => {
                b.cfg.append = v.to_string();
                b.append_set = true;
            }
            // `-bios` is stored as this property in QEMU.
            "firmware" => b.cfg.bios = Some(PathBuf::from(v)),
            "memory-backend" => m.memory_backend = Some(v.to_string()),
            "dump-guest-core" => m.dump_guest_core = parse_bool(k, v).map_err(|e| inv.err(e))?,
            "mem-merge" => m.mem_merge = parse_bool(k, v).map_err(|e| inv.err(e))?,
            "acpi" => m.acpi = v != "off",
            _ => {} // validated above; nothing to record
        }
    }
    Ok(())
}

/// `-accel` keys (QemuOpts, implied `accel`).
pub(crate) const ACCEL_SCHEMA: Schema = Schema {
    implied: Some("accel"),
    keys: &[
        key("accel", Kind::Str),
        key("kernel-irqchip", Kind::Enum(&["on", "off", "split"])),
        key("kvm-shadow-mem", Kind::Size),
        key("dirty-ring-size", Kind::Number),
    ],
    warn_flags: true,
    open: false,
};

pub(crate) fn handle_accel(b: &mut Builder, inv: &Inv, p: Parsed) -> Result<(), CliError> {
    let o = p.opts();
    let name = match o.str("accel") {
        // vl.c: `-accel help`, or no accelerator at all, lists them.
        None | Some("help" | "?") => {
            b.print_and_exit = Some(accel_help());
            return Ok(());
        }
        Some(a) if ACCELERATORS.iter().any(|(n, _)| *n == a) => a.to_string(),
        Some(a) if OTHER_ACCELS.contains(&a) => return Err(inv.err(tcg_refused(a))),
        Some(a) => return Err(inv.err(format!("invalid accelerator {a}"))),
    };
    if name == "kvm" {
        if let Some(v) = o.str("kernel-irqchip") {
            if v != "on" {
                return Err(inv.err(not_supported("kernel-irqchip", v)));
            }
        }
    }
    b.accels.push((name, inv.clone()));
    Ok(())
}

/// vl.c: `-enable-kvm` is `-machine accel=kvm`.
pub(crate) fn handle_enable_kvm(b: &mut Builder, inv: &Inv, _p: Parsed) -> Result<(), CliError> {
    b.machine_accel = Some(("kvm".into(), inv.clone()));
    Ok(())
}

fn feature_value(v: &str) -> CpuFeatureValue {
    match v {
        "on" | "yes" | "true" => CpuFeatureValue::On,
        "off" | "no" | "false" => CpuFeatureValue::Off,
        _ => CpuFeatureValue::Value(v.to_string()),
    }
}

/// Parse `model[,+feat][,-feat][,feat=value][,feat]`.
pub(crate) fn parse_cpu(s: &str) -> Result<CpuModel, String> {
    let mut parts = s.split(',');
    let model = match parts.next().unwrap_or("") {
        "host" => CpuModelName::Host,
        "max" => CpuModelName::Max,
        "qemu64" => CpuModelName::Qemu64,
        other => {
            return Err(format!(
                "CPU model '{other}' is not supported (ferrovm supports 'host', 'max' and 'qemu64')"
            ))
        }
    };
    let mut features = Vec::new();
    for f in parts.filter(|f| !f.is_empty()) {
        let (name, value) = if let Some(n) = f.strip_prefix('+') {
            (n, CpuFeatureValue::On)
        } else if let Some(n) = f.strip_prefix('-') {
            (n, CpuFeatureValue::Off)
        } else if let Some((n, v)) = f.split_once('=') {
            (n, feature_value(v))
        } else {
            (f, CpuFeatureValue::On)
        };
        if name.is_empty() {
            return Err(format!("CPU feature name missing in '{f}'"));
        }
        features.push(CpuFeature {
            name: name.to_string(),
            value,
        });
    }
    Ok(CpuModel { model, features })
}

/// QEMU keeps only the last `-cpu` and parses it when building the machine.
pub(crate) fn handle_cpu(b: &mut Builder, inv: &Inv, _p: Parsed) -> Result<(), CliError> {
    b.cpu = Some(inv.clone());
    Ok(())
}

/// `-machine` value-level check used by docs: which keys have limits.
pub(crate) fn machine_limits_doc() -> String {
    MACHINE_LIMITS
        .iter()
        .filter(|(k, _)| *k != "kernel_irqchip")
        .map(|(k, v)| format!("{k}={}", v.join("|")))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        for n in [
            "q35",
            "pc",
            "ferrovm",
            "pc-q35-7.2",
            "pc-q35-4.0.1",
            "pc-i440fx-1.4",
        ] {
            assert_eq!(machine_kind(n), Ok(MachineKind::Q35), "{n}");
        }
        assert_eq!(machine_kind("none"), Ok(MachineKind::None));
        assert!(machine_kind("pc-q35-99.0")
            .unwrap_err()
            .starts_with("unsupported machine type"));
        assert!(machine_kind("microvm")
            .unwrap_err()
            .contains("not supported by ferrovm"));
        assert!(machine_kind("").is_err());
    }

    #[test]
    fn limits() {
        let m = |n: &str, k| MachineSpec {
            name: n.into(),
            kind: k,
            ..MachineSpec::default()
        };
        assert_eq!(
            smp_limits(&m("q35", MachineKind::Q35)),
            (288, false, "pc-q35-7.2".into())
        );
        assert_eq!(
            smp_limits(&m("pc", MachineKind::Q35)),
            (255, false, "pc-i440fx-7.2".into())
        );
        assert!(smp_limits(&m("pc-q35-6.1", MachineKind::Q35)).1);
        assert!(!smp_limits(&m("pc-q35-6.2", MachineKind::Q35)).1);
        assert!(smp_limits(&m("pc-i440fx-2.10", MachineKind::Q35)).1);
        assert_eq!(smp_limits(&m("none", MachineKind::None)).0, 1);
        assert_eq!(
            smp_limits(&m("ferrovm", MachineKind::Q35)),
            (288, false, "ferrovm".into())
        );
    }

    #[test]
    fn cpu() {
        let c = parse_cpu("host,+x2apic,-pmu,migratable=on,hv-spinlocks=0x1fff,kvm,").unwrap();
        assert_eq!(c.model, CpuModelName::Host);
        let f: Vec<_> = c
            .features
            .iter()
            .map(|f| (f.name.as_str(), f.value.clone()))
            .collect();
        assert_eq!(
            f,
            vec![
                ("x2apic", CpuFeatureValue::On),
                ("pmu", CpuFeatureValue::Off),
                ("migratable", CpuFeatureValue::On),
                ("hv-spinlocks", CpuFeatureValue::Value("0x1fff".into())),
                ("kvm", CpuFeatureValue::On),
            ]
        );
        assert_eq!(parse_cpu("max").unwrap().model, CpuModelName::Max);
        assert_eq!(parse_cpu("qemu64").unwrap().model, CpuModelName::Qemu64);
        assert!(parse_cpu("core2duo").unwrap_err().contains("'core2duo'"));
        assert!(parse_cpu("").is_err());
        assert!(parse_cpu("host,+").is_err());
    }
}
