//! A vCPU's QOM properties as libvirt reads them once a domain has started
//! (qemu_monitor_json.c `qemuMonitorJSONGetGuestCPU`): `qom-list` of the
//! CPU, `qom-get` of every bool property (the CPUID features it has), and
//! `unavailable-features` (what the model asked for and the host lacks).
//! libvirt uses them to record the CPU the guest really got. The values
//! come from the CPUID ferrovm gives the vCPU (target/i386/cpu.c names).

use qmp::QmpError;
use serde_json::{json, Value};

use super::cpu_model::vcpu_cpuid;
use crate::cpu_features::{self, FEATURE_NAMES};
use crate::cpuid::CpuModel;
use crate::vm::Vm;

/// The CPU's properties beyond `type` and `realized`.
pub(super) fn properties() -> impl Iterator<Item = (String, String)> {
    FEATURE_NAMES
        .iter()
        .map(|f| (f.0.to_string(), "bool".to_string()))
        .chain(std::iter::once((
            "unavailable-features".to_string(),
            "strList".to_string(),
        )))
}

fn model(vm: &Vm) -> CpuModel {
    vm.machine
        .as_ref()
        .map(|m| m.spec.cpu_model.clone())
        .unwrap_or(CpuModel::Baseline)
}

/// `qom-get` of `property` on a vCPU; `None` when it is not one of these.
pub(super) fn get(vm: &Vm, property: &str) -> Option<Result<Value, QmpError>> {
    let is_feature = FEATURE_NAMES.iter().any(|f| f.0 == property);
    if !is_feature && property != "unavailable-features" {
        return None;
    }
    let model = model(vm);
    Some(vcpu_cpuid(&model).map(|c| {
        if is_feature {
            return json!(cpu_features::has(&c, property).unwrap_or(false));
        }
        // `host` passes KVM's set through: nothing it asks for is missing.
        match model {
            CpuModel::Baseline => json!(cpu_features::qemu64_unavailable(&c)),
            CpuModel::Host { .. } => json!([]),
        }
    }))
}
