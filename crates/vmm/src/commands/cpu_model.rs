//! `query-cpu-definitions` and `query-cpu-model-expansion`
//! (machine-target.json; QEMU's target/i386/cpu.c `qmp_query_cpu_definitions`,
//! `qmp_query_cpu_model_expansion`), from the CPUID a ferrovm vCPU of each
//! model really gets on this host: KVM's supported CPUID, patched as
//! `vcpu_setup` patches it ([`cpuid::patch`]).

use std::sync::OnceLock;

use kvm_bindings::{kvm_cpuid_entry2, CpuId, KVM_MAX_CPUID_ENTRIES};
use qmp::{Args, QmpError};
use serde_json::{json, Map, Value};

use crate::cpu_features::{self, FEATURE_NAMES};
use crate::cpuid::{self, CpuModel, Topology};
use crate::qom_types::{cpu_type_name, CPU_TYPES};

/// Properties libvirt sets in its probe that change nothing here: ferrovm's
/// `host` has no non-migratable extras to drop and no Hyper-V
/// enlightenments to pass through.
const INERT_PROPS: &[&str] = &["migratable", "hv-passthrough"];

/// KVM_GET_SUPPORTED_CPUID, asked once.
fn supported() -> Result<&'static [kvm_cpuid_entry2], QmpError> {
    static CPUID: OnceLock<Result<Vec<kvm_cpuid_entry2>, String>> = OnceLock::new();
    CPUID
        .get_or_init(|| {
            let kvm = kvm_ioctls::Kvm::new().map_err(|e| e.to_string())?;
            let c = kvm
                .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
                .map_err(|e| e.to_string())?;
            Ok(c.as_slice().to_vec())
        })
        .as_ref()
        .map(Vec::as_slice)
        .map_err(|e| QmpError::generic(format!("KVM_GET_SUPPORTED_CPUID failed: {e}")))
}

/// The CPUID vCPU 0 of a one-vCPU machine gets with `model`.
pub(super) fn vcpu_cpuid(model: &CpuModel) -> Result<Vec<kvm_cpuid_entry2>, QmpError> {
    let mut c = CpuId::from_entries(supported()?)
        .map_err(|e| QmpError::generic(format!("CPUID: {e:?}")))?;
    cpuid::patch(
        &mut c,
        model,
        Topology {
            threads: 1,
            cores: 1,
        },
        0,
    );
    Ok(c.as_slice().to_vec())
}

fn model_of(name: &str, removed: Vec<String>) -> Option<CpuModel> {
    match name {
        "host" | "max" => Some(CpuModel::Host { removed }),
        "qemu64" => Some(CpuModel::Baseline),
        _ => None,
    }
}

/// `query-cpu-definitions`: ferrovm's `-cpu` models. `host` and `max` pass
/// KVM's set through, so nothing is unavailable; `qemu64` lacks whichever
/// of QEMU's qemu64 features ferrovm's baseline does not give on this host.
pub(super) fn definitions() -> Result<Value, QmpError> {
    let mut out = Vec::new();
    for (name, _) in CPU_TYPES {
        let unavailable: Vec<&str> = if *name == "qemu64" {
            cpu_features::qemu64_unavailable(&vcpu_cpuid(&CpuModel::Baseline)?)
        } else {
            Vec::new()
        };
        out.push(json!({"name": name, "typename": cpu_type_name(name),
            "unavailable-features": unavailable, "static": false,
            "migration-safe": *name == "qemu64", "deprecated": false}));
    }
    Ok(Value::Array(out))
}

/// `query-cpu-model-expansion`: `static` expands onto QEMU's static `base`
/// model, `full` keeps the model's name; both list every feature of the
/// words ferrovm reports and the CPU's signature.
pub(super) fn expansion(args: &Args) -> Result<Value, QmpError> {
    let kind = args.str("type")?;
    let model = args
        .get("model")
        .and_then(Value::as_object)
        .ok_or_else(|| QmpError::generic("Parameter 'model' is missing"))?;
    let name = model.get("name").and_then(Value::as_str).unwrap_or("");
    let typename = cpu_type_name(name);
    if name == "base" {
        return expand_base(model.get("props"), &typename);
    }
    if model_of(name, Vec::new()).is_none() {
        return Err(QmpError::generic(format!("CPU model '{name}' not found")));
    }
    let mut removed = Vec::new();
    if let Some(props) = model.get("props").and_then(Value::as_object) {
        for (k, v) in props {
            let removable = cpuid::removable_feature_names().any(|n| n == k);
            if removable && name != "qemu64" {
                if v == &json!(false) {
                    removed.push(k.clone());
                }
            } else if !INERT_PROPS.contains(&k.as_str()) {
                return Err(QmpError::generic(format!(
                    "Property '{typename}.{k}' not found"
                )));
            }
        }
    }
    let c = vcpu_cpuid(&model_of(name, removed).unwrap_or(CpuModel::Baseline))?;
    let mut props = Map::new();
    for (f, ..) in FEATURE_NAMES {
        props.insert(
            (*f).into(),
            json!(cpu_features::has(&c, f).unwrap_or(false)),
        );
    }
    signature(&c, &mut props);
    let shown = if kind == "static" { "base" } else { name };
    Ok(json!({"model": {"name": shown, "props": props}}))
}

/// The signature properties a static expansion carries besides features.
const SIGNATURE: &[&str] = &["family", "model", "stepping", "vendor", "model-id"];

/// `base`, QEMU's static model (no features at all), plus `props`: what a
/// static expansion of ferrovm's models names, so libvirt expands it back
/// (`full`) when `max-x86_64-cpu` has no `migratable` property
/// (qemu_capabilities.c, `QEMU_MONITOR_CPU_MODEL_EXPANSION_STATIC_FULL`).
/// It describes a CPU; `-cpu base` is not one ferrovm builds, so
/// `query-cpu-definitions` does not list it.
fn expand_base(props: Option<&Value>, typename: &str) -> Result<Value, QmpError> {
    let given = props
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut out = Map::new();
    for (f, ..) in FEATURE_NAMES {
        out.insert((*f).into(), json!(false));
    }
    for (k, v) in given {
        let known = FEATURE_NAMES.iter().any(|(f, ..)| *f == k) && v.is_boolean()
            || SIGNATURE.contains(&k.as_str());
        if !known && !INERT_PROPS.contains(&k.as_str()) {
            return Err(QmpError::generic(format!(
                "Property '{typename}.{k}' not found"
            )));
        }
        if known {
            out.insert(k, v);
        }
    }
    Ok(json!({"model": {"name": "base", "props": out}}))
}

fn leaf(c: &[kvm_cpuid_entry2], function: u32) -> Option<&kvm_cpuid_entry2> {
    c.iter().find(|e| e.function == function && e.index == 0)
}

/// `family`, `model`, `stepping`, `vendor`, `model-id` as QEMU's
/// x86_cpuid_version_get_* and x86_cpuid_get_vendor/model_id read them.
fn signature(c: &[kvm_cpuid_entry2], props: &mut Map<String, Value>) {
    if let Some(e) = leaf(c, 1) {
        let eax = e.eax;
        let mut family = (eax >> 8) & 0xf;
        if family == 0xf {
            family += (eax >> 20) & 0xff;
        }
        props.insert("family".into(), json!(family));
        props.insert(
            "model".into(),
            json!(((eax >> 4) & 0xf) | ((eax >> 12) & 0xf0)),
        );
        props.insert("stepping".into(), json!(eax & 0xf));
    }
    if let Some(e) = leaf(c, 0) {
        let bytes: Vec<u8> = [e.ebx, e.edx, e.ecx]
            .iter()
            .flat_map(|r| r.to_le_bytes())
            .collect();
        props.insert(
            "vendor".into(),
            json!(String::from_utf8_lossy(&bytes).to_string()),
        );
    }
    let brand: Vec<u8> = (0x8000_0002..=0x8000_0004)
        .filter_map(|f| leaf(c, f))
        .flat_map(|e| [e.eax, e.ebx, e.ecx, e.edx])
        .flat_map(|r| r.to_le_bytes())
        .take_while(|b| *b != 0)
        .collect();
    if !brand.is_empty() {
        props.insert(
            "model-id".into(),
            json!(String::from_utf8_lossy(&brand).to_string()),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(function: u32, eax: u32, ebx: u32, ecx: u32, edx: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            eax,
            ebx,
            ecx,
            edx,
            ..Default::default()
        }
    }

    /// AMD EPYC (Zen 3) signature 0x00a00f11: base family 0xf + extended
    /// family 0xa = 25, model 1, stepping 1 (AMD CPUID Specification,
    /// Fn0000_0001_EAX), as QEMU reports `family: 25` on this host.
    #[test]
    fn signature_reads_family_model_stepping_and_vendor() {
        let c = [
            // "AuthenticAMD" in EBX, EDX, ECX.
            e(0, 0xd, 0x6874_7541, 0x444d_4163, 0x6974_6e65),
            e(1, 0x00a0_0f11, 0, 0, 0),
            // Intel's family 6, extended model 0x5, model 0xe: model 0x5e.
        ];
        let mut p = Map::new();
        signature(&c, &mut p);
        assert_eq!(p["family"], 25);
        assert_eq!(p["model"], 1);
        assert_eq!(p["stepping"], 1);
        assert_eq!(p["vendor"], "AuthenticAMD");
        let mut p = Map::new();
        signature(&[e(1, 0x0005_06e3, 0, 0, 0)], &mut p);
        assert_eq!(
            (p["family"].clone(), p["model"].clone()),
            (json!(6), json!(0x5e))
        );
    }

    /// libvirt expands the static `base` result back with `full`: the
    /// properties come back as given, the others false; an unknown one is
    /// QEMU's "Property 'base-x86_64-cpu.X' not found".
    #[test]
    fn base_expands_to_the_given_properties() {
        let props = json!({"sse2": true, "family": 25, "vendor": "AuthenticAMD"});
        let v = expand_base(Some(&props), "base-x86_64-cpu").unwrap();
        let p = &v["model"]["props"];
        assert_eq!(v["model"]["name"], "base");
        assert_eq!(
            (p["sse2"].clone(), p["lm"].clone()),
            (json!(true), json!(false))
        );
        assert_eq!(
            (p["family"].clone(), p["vendor"].clone()),
            (json!(25), json!("AuthenticAMD"))
        );
        let e = expand_base(Some(&json!({"nosuch": 1})), "base-x86_64-cpu").unwrap_err();
        assert_eq!(e.desc, "Property 'base-x86_64-cpu.nosuch' not found");
    }

    /// Feature bits by QEMU's names (target/i386/cpu.c feature_word_info:
    /// CPUID.1:ECX[20] is "sse4.2", CPUID.7.0:EBX[5] "avx2",
    /// CPUID.80000001h:EDX[29] "lm").
    #[test]
    fn feature_names_read_the_right_bits() {
        let c = [
            e(1, 0, 0, 1 << 20, 0),
            e(7, 0, 1 << 5, 0, 0),
            e(0x8000_0001, 0, 0, 0, 1 << 29),
        ];
        assert_eq!(cpu_features::has(&c, "sse4.2"), Some(true));
        assert_eq!(cpu_features::has(&c, "sse4.1"), Some(false));
        assert_eq!(cpu_features::has(&c, "avx2"), Some(true));
        assert_eq!(cpu_features::has(&c, "lm"), Some(true));
        assert_eq!(cpu_features::has(&c, "nx"), Some(false));
        assert_eq!(cpu_features::has(&c, "nosuch"), None);
    }
}
