//! The CPUID a vCPU sees: KVM's supported set, with our topology and
//! hypervisor leaves, and (for the default CPU model) a conservative baseline.

use kvm_bindings::{kvm_cpuid_entry2, CpuId};

/// Which CPUID the guest gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CpuModel {
    /// `-cpu host`: everything KVM supports, minus features named with `-feat`.
    Host { removed: Vec<String> },
    /// No `-cpu`: a qemu64-like baseline (QEMU's default model is qemu64).
    Baseline,
}

/// Topology of the whole machine, from `-smp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Topology {
    pub threads: u32,
    pub cores: u32,
}

// Leaf 1 ECX bits.
const ECX_POPCNT: u32 = 1 << 23;
const ECX_TSC_DEADLINE: u32 = 1 << 24;
const ECX_XSAVE: u32 = 1 << 26;
const ECX_OSXSAVE: u32 = 1 << 27;
const ECX_AVX: u32 = 1 << 28;
const ECX_F16C: u32 = 1 << 29;
const ECX_RDRAND: u32 = 1 << 30;
const ECX_HYPERVISOR: u32 = 1 << 31;
const ECX_FMA: u32 = 1 << 12;
const ECX_CX16: u32 = 1 << 13;
const ECX_SSSE3: u32 = 1 << 9;
const ECX_SSE41: u32 = 1 << 19;
const ECX_SSE42: u32 = 1 << 20;
const ECX_MOVBE: u32 = 1 << 22;
const ECX_AES: u32 = 1 << 25;
const ECX_PCLMUL: u32 = 1 << 1;
const ECX_PCID: u32 = 1 << 17;
const ECX_X2APIC: u32 = 1 << 21;
const EDX_HTT: u32 = 1 << 28;
// Leaf 7.0 EBX bits.
const EBX7_SMAP: u32 = 1 << 20;

/// Named features that `-cpu host,-NAME` may remove: (name, leaf, register, bit).
const NAMED_FEATURES: &[(&str, u32, Reg, u32)] = &[
    ("popcnt", 1, Reg::Ecx, ECX_POPCNT),
    ("xsave", 1, Reg::Ecx, ECX_XSAVE),
    ("avx", 1, Reg::Ecx, ECX_AVX),
    ("x2apic", 1, Reg::Ecx, ECX_X2APIC),
    ("rdrand", 1, Reg::Ecx, ECX_RDRAND),
    ("pcid", 1, Reg::Ecx, ECX_PCID),
    ("smap", 7, Reg::Ebx, EBX7_SMAP),
    ("smep", 7, Reg::Ebx, 1 << 7),
    ("avx2", 7, Reg::Ebx, 1 << 5),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reg {
    Ebx,
    Ecx,
}

/// The feature names `-cpu host,-NAME` removes (the CPU's QOM properties
/// ferrovm honours).
pub fn removable_feature_names() -> impl Iterator<Item = &'static str> {
    NAMED_FEATURES.iter().map(|(n, ..)| *n)
}

/// Errors for unknown feature names given to `-cpu host,-NAME`.
pub fn check_feature_names(removed: &[String]) -> Result<(), String> {
    for name in removed {
        if !NAMED_FEATURES.iter().any(|(n, ..)| n == name) {
            let known: Vec<_> = NAMED_FEATURES.iter().map(|(n, ..)| *n).collect();
            return Err(format!(
                "-cpu: feature '{name}' cannot be removed by ferrovm (known: {})",
                known.join(", ")
            ));
        }
    }
    Ok(())
}

/// Patches `cpuid` (KVM_GET_SUPPORTED_CPUID's answer) for vCPU `index`.
pub fn patch(cpuid: &mut CpuId, model: &CpuModel, topo: Topology, index: u32) {
    let logical = (topo.threads * topo.cores).max(1);
    let entries = cpuid.as_mut_slice();
    for e in entries.iter_mut() {
        match e.function {
            1 => {
                // EBX[31:24] initial APIC id, [23:16] logical processors per package.
                e.ebx = (e.ebx & 0x0000_ffff) | (index << 24) | ((logical.min(255)) << 16);
                e.ecx |= ECX_HYPERVISOR;
                if logical > 1 {
                    e.edx |= EDX_HTT;
                } else {
                    e.edx &= !EDX_HTT;
                }
            }
            4 => {
                // EAX[31:26] cores per package - 1; [25:14] threads sharing this cache - 1.
                let sharing = if e.eax & 0xe0 >= 0x60 {
                    logical
                } else {
                    topo.threads
                };
                e.eax = (e.eax & 0x3fff) | ((topo.cores - 1) << 26) | ((sharing.max(1) - 1) << 14);
            }
            0xb => {
                // Extended topology (Intel SDM vol. 2A, CPUID leaf 0BH).
                let (shift, count, level_type) = match e.index {
                    0 => (bits_for(topo.threads), topo.threads, 1),
                    1 => (bits_for(topo.threads) + bits_for(topo.cores), logical, 2),
                    _ => (0, 0, 0),
                };
                e.eax = shift;
                e.ebx = count;
                e.ecx = (level_type << 8) | e.index;
                e.edx = index;
            }
            _ => {}
        }
    }
    match model {
        CpuModel::Host { removed } => {
            for name in removed {
                if let Some(&(_, leaf, reg, bit)) = NAMED_FEATURES.iter().find(|(n, ..)| n == name)
                {
                    clear(entries, leaf, reg, bit);
                }
            }
        }
        CpuModel::Baseline => baseline(entries),
    }
}

fn clear(entries: &mut [kvm_cpuid_entry2], leaf: u32, reg: Reg, bit: u32) {
    for e in entries
        .iter_mut()
        .filter(|e| e.function == leaf && e.index == 0)
    {
        match reg {
            Reg::Ebx => e.ebx &= !bit,
            Reg::Ecx => e.ecx &= !bit,
        }
    }
}

/// A qemu64-like feature set: SSE2/SSE3, no CX16/XSAVE/AVX/POPCNT/SMAP.
/// Besides matching QEMU's default model, this matters on hosts whose KVM
/// emulates guest ring 0 (nested paravirtual KVM): its instruction emulator
/// lacks XSAVE/XRSTOR, CMPXCHG16B, POPCNT and CLAC/STAC, so a kernel told it has them dies.
fn baseline(entries: &mut [kvm_cpuid_entry2]) {
    // CMPXCHG16B too: qemu64 has it, but the nested emulator does not.
    let leaf1_ecx_removed = ECX_CX16
        | ECX_POPCNT
        | ECX_XSAVE
        | ECX_OSXSAVE
        | ECX_AVX
        | ECX_F16C
        | ECX_FMA
        | ECX_SSSE3
        | ECX_SSE41
        | ECX_SSE42
        | ECX_MOVBE
        | ECX_AES
        | ECX_PCLMUL
        | ECX_PCID
        | ECX_RDRAND
        | ECX_TSC_DEADLINE;
    for e in entries.iter_mut() {
        match (e.function, e.index) {
            (1, _) => e.ecx &= !leaf1_ecx_removed,
            // Structured extended features (SMEP, SMAP, AVX2, ...): none.
            (7, _) => {
                e.ebx = 0;
                e.ecx = 0;
                e.edx = 0;
            }
            // XSAVE state enumeration is meaningless without XSAVE.
            (0xd, _) => {
                e.eax = 0;
                e.ebx = 0;
                e.ecx = 0;
                e.edx = 0;
            }
            _ => {}
        }
    }
}

fn bits_for(n: u32) -> u32 {
    if n <= 1 {
        0
    } else {
        32 - (n - 1).leading_zeros()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            ..Default::default()
        }
    }

    fn sample() -> CpuId {
        let mut e1 = entry(1, 0);
        e1.ecx = ECX_XSAVE | ECX_POPCNT | ECX_SSE42;
        let mut e7 = entry(7, 0);
        e7.ebx = EBX7_SMAP | 1;
        CpuId::from_entries(&[e1, e7, entry(0xb, 0), entry(0xb, 1)]).unwrap()
    }

    fn find(c: &CpuId, f: u32, i: u32) -> kvm_cpuid_entry2 {
        *c.as_slice()
            .iter()
            .find(|e| e.function == f && e.index == i)
            .unwrap()
    }

    #[test]
    fn topology_and_apic_id_are_per_vcpu() {
        let mut c = sample();
        patch(
            &mut c,
            &CpuModel::Host { removed: vec![] },
            Topology {
                threads: 2,
                cores: 2,
            },
            3,
        );
        let e1 = find(&c, 1, 0);
        assert_eq!(e1.ebx >> 24, 3, "initial APIC id");
        assert_eq!((e1.ebx >> 16) & 0xff, 4, "logical processors per package");
        assert_ne!(e1.ecx & ECX_HYPERVISOR, 0);
        assert_ne!(e1.edx & EDX_HTT, 0);
        let smt = find(&c, 0xb, 0);
        assert_eq!((smt.eax, smt.ebx, smt.ecx >> 8, smt.edx), (1, 2, 1, 3));
        let core = find(&c, 0xb, 1);
        assert_eq!((core.eax, core.ebx, core.ecx >> 8), (2, 4, 2));
    }

    #[test]
    fn host_keeps_features_unless_removed() {
        let mut c = sample();
        patch(
            &mut c,
            &CpuModel::Host {
                removed: vec!["xsave".into()],
            },
            Topology {
                threads: 1,
                cores: 1,
            },
            0,
        );
        let e1 = find(&c, 1, 0);
        assert_eq!(e1.ecx & ECX_XSAVE, 0);
        assert_ne!(e1.ecx & ECX_POPCNT, 0);
        assert_ne!(find(&c, 7, 0).ebx & EBX7_SMAP, 0);
    }

    #[test]
    fn baseline_drops_what_emulated_ring0_cannot_run() {
        let mut c = sample();
        patch(
            &mut c,
            &CpuModel::Baseline,
            Topology {
                threads: 1,
                cores: 1,
            },
            0,
        );
        let e1 = find(&c, 1, 0);
        assert_eq!(e1.ecx & (ECX_XSAVE | ECX_POPCNT | ECX_SSE42), 0);
        assert_eq!(find(&c, 7, 0).ebx, 0);
    }

    #[test]
    fn unknown_feature_names_are_refused() {
        assert!(check_feature_names(&["xsave".into()]).is_ok());
        let err = check_feature_names(&["frob".into()]).unwrap_err();
        assert!(err.contains("'frob'"), "{err}");
    }
}
