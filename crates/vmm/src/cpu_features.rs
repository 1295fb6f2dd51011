//! QEMU 7.2's CPUID feature names (target/i386/cpu.c `feature_word_info`),
//! for the feature words ferrovm reports in `query-cpu-model-expansion`:
//! (QOM property name, leaf, subleaf, register, bit).

use kvm_bindings::kvm_cpuid_entry2;

/// A CPUID output register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reg {
    Eax,
    Ebx,
    Ecx,
    Edx,
}

/// (name, leaf, subleaf, register, bit).
pub const FEATURE_NAMES: &[(&str, u32, u32, Reg, u32)] = &[
    ("fpu", 0x1, 0, Reg::Edx, 0),
    ("vme", 0x1, 0, Reg::Edx, 1),
    ("de", 0x1, 0, Reg::Edx, 2),
    ("pse", 0x1, 0, Reg::Edx, 3),
    ("tsc", 0x1, 0, Reg::Edx, 4),
    ("msr", 0x1, 0, Reg::Edx, 5),
    ("pae", 0x1, 0, Reg::Edx, 6),
    ("mce", 0x1, 0, Reg::Edx, 7),
    ("cx8", 0x1, 0, Reg::Edx, 8),
    ("apic", 0x1, 0, Reg::Edx, 9),
    ("sep", 0x1, 0, Reg::Edx, 11),
    ("mtrr", 0x1, 0, Reg::Edx, 12),
    ("pge", 0x1, 0, Reg::Edx, 13),
    ("mca", 0x1, 0, Reg::Edx, 14),
    ("cmov", 0x1, 0, Reg::Edx, 15),
    ("pat", 0x1, 0, Reg::Edx, 16),
    ("pse36", 0x1, 0, Reg::Edx, 17),
    ("pn", 0x1, 0, Reg::Edx, 18),
    ("clflush", 0x1, 0, Reg::Edx, 19),
    ("ds", 0x1, 0, Reg::Edx, 21),
    ("acpi", 0x1, 0, Reg::Edx, 22),
    ("mmx", 0x1, 0, Reg::Edx, 23),
    ("fxsr", 0x1, 0, Reg::Edx, 24),
    ("sse", 0x1, 0, Reg::Edx, 25),
    ("sse2", 0x1, 0, Reg::Edx, 26),
    ("ss", 0x1, 0, Reg::Edx, 27),
    ("ht", 0x1, 0, Reg::Edx, 28),
    ("tm", 0x1, 0, Reg::Edx, 29),
    ("ia64", 0x1, 0, Reg::Edx, 30),
    ("pbe", 0x1, 0, Reg::Edx, 31),
    ("pni", 0x1, 0, Reg::Ecx, 0),
    ("pclmulqdq", 0x1, 0, Reg::Ecx, 1),
    ("dtes64", 0x1, 0, Reg::Ecx, 2),
    ("monitor", 0x1, 0, Reg::Ecx, 3),
    ("ds-cpl", 0x1, 0, Reg::Ecx, 4),
    ("vmx", 0x1, 0, Reg::Ecx, 5),
    ("smx", 0x1, 0, Reg::Ecx, 6),
    ("est", 0x1, 0, Reg::Ecx, 7),
    ("tm2", 0x1, 0, Reg::Ecx, 8),
    ("ssse3", 0x1, 0, Reg::Ecx, 9),
    ("cid", 0x1, 0, Reg::Ecx, 10),
    ("fma", 0x1, 0, Reg::Ecx, 12),
    ("cx16", 0x1, 0, Reg::Ecx, 13),
    ("xtpr", 0x1, 0, Reg::Ecx, 14),
    ("pdcm", 0x1, 0, Reg::Ecx, 15),
    ("pcid", 0x1, 0, Reg::Ecx, 17),
    ("dca", 0x1, 0, Reg::Ecx, 18),
    ("sse4.1", 0x1, 0, Reg::Ecx, 19),
    ("sse4.2", 0x1, 0, Reg::Ecx, 20),
    ("x2apic", 0x1, 0, Reg::Ecx, 21),
    ("movbe", 0x1, 0, Reg::Ecx, 22),
    ("popcnt", 0x1, 0, Reg::Ecx, 23),
    ("tsc-deadline", 0x1, 0, Reg::Ecx, 24),
    ("aes", 0x1, 0, Reg::Ecx, 25),
    ("xsave", 0x1, 0, Reg::Ecx, 26),
    ("avx", 0x1, 0, Reg::Ecx, 28),
    ("f16c", 0x1, 0, Reg::Ecx, 29),
    ("rdrand", 0x1, 0, Reg::Ecx, 30),
    ("hypervisor", 0x1, 0, Reg::Ecx, 31),
    ("fsgsbase", 0x7, 0, Reg::Ebx, 0),
    ("tsc-adjust", 0x7, 0, Reg::Ebx, 1),
    ("sgx", 0x7, 0, Reg::Ebx, 2),
    ("bmi1", 0x7, 0, Reg::Ebx, 3),
    ("hle", 0x7, 0, Reg::Ebx, 4),
    ("avx2", 0x7, 0, Reg::Ebx, 5),
    ("smep", 0x7, 0, Reg::Ebx, 7),
    ("bmi2", 0x7, 0, Reg::Ebx, 8),
    ("erms", 0x7, 0, Reg::Ebx, 9),
    ("invpcid", 0x7, 0, Reg::Ebx, 10),
    ("rtm", 0x7, 0, Reg::Ebx, 11),
    ("mpx", 0x7, 0, Reg::Ebx, 14),
    ("avx512f", 0x7, 0, Reg::Ebx, 16),
    ("avx512dq", 0x7, 0, Reg::Ebx, 17),
    ("rdseed", 0x7, 0, Reg::Ebx, 18),
    ("adx", 0x7, 0, Reg::Ebx, 19),
    ("smap", 0x7, 0, Reg::Ebx, 20),
    ("avx512ifma", 0x7, 0, Reg::Ebx, 21),
    ("pcommit", 0x7, 0, Reg::Ebx, 22),
    ("clflushopt", 0x7, 0, Reg::Ebx, 23),
    ("clwb", 0x7, 0, Reg::Ebx, 24),
    ("intel-pt", 0x7, 0, Reg::Ebx, 25),
    ("avx512pf", 0x7, 0, Reg::Ebx, 26),
    ("avx512er", 0x7, 0, Reg::Ebx, 27),
    ("avx512cd", 0x7, 0, Reg::Ebx, 28),
    ("sha-ni", 0x7, 0, Reg::Ebx, 29),
    ("avx512bw", 0x7, 0, Reg::Ebx, 30),
    ("avx512vl", 0x7, 0, Reg::Ebx, 31),
    ("avx512vbmi", 0x7, 0, Reg::Ecx, 1),
    ("umip", 0x7, 0, Reg::Ecx, 2),
    ("pku", 0x7, 0, Reg::Ecx, 3),
    ("waitpkg", 0x7, 0, Reg::Ecx, 5),
    ("avx512vbmi2", 0x7, 0, Reg::Ecx, 6),
    ("gfni", 0x7, 0, Reg::Ecx, 8),
    ("vaes", 0x7, 0, Reg::Ecx, 9),
    ("vpclmulqdq", 0x7, 0, Reg::Ecx, 10),
    ("avx512vnni", 0x7, 0, Reg::Ecx, 11),
    ("avx512bitalg", 0x7, 0, Reg::Ecx, 12),
    ("avx512-vpopcntdq", 0x7, 0, Reg::Ecx, 14),
    ("la57", 0x7, 0, Reg::Ecx, 16),
    ("rdpid", 0x7, 0, Reg::Ecx, 22),
    ("bus-lock-detect", 0x7, 0, Reg::Ecx, 24),
    ("cldemote", 0x7, 0, Reg::Ecx, 25),
    ("movdiri", 0x7, 0, Reg::Ecx, 27),
    ("movdir64b", 0x7, 0, Reg::Ecx, 28),
    ("sgxlc", 0x7, 0, Reg::Ecx, 30),
    ("pks", 0x7, 0, Reg::Ecx, 31),
    ("avx512-4vnniw", 0x7, 0, Reg::Edx, 2),
    ("avx512-4fmaps", 0x7, 0, Reg::Edx, 3),
    ("fsrm", 0x7, 0, Reg::Edx, 4),
    ("avx512-vp2intersect", 0x7, 0, Reg::Edx, 8),
    ("md-clear", 0x7, 0, Reg::Edx, 10),
    ("serialize", 0x7, 0, Reg::Edx, 14),
    ("tsx-ldtrk", 0x7, 0, Reg::Edx, 16),
    ("arch-lbr", 0x7, 0, Reg::Edx, 19),
    ("amx-bf16", 0x7, 0, Reg::Edx, 22),
    ("avx512-fp16", 0x7, 0, Reg::Edx, 23),
    ("amx-tile", 0x7, 0, Reg::Edx, 24),
    ("amx-int8", 0x7, 0, Reg::Edx, 25),
    ("spec-ctrl", 0x7, 0, Reg::Edx, 26),
    ("stibp", 0x7, 0, Reg::Edx, 27),
    ("arch-capabilities", 0x7, 0, Reg::Edx, 29),
    ("core-capability", 0x7, 0, Reg::Edx, 30),
    ("ssbd", 0x7, 0, Reg::Edx, 31),
    ("avx-vnni", 0x7, 1, Reg::Eax, 4),
    ("avx512-bf16", 0x7, 1, Reg::Eax, 5),
    ("syscall", 0x80000001, 0, Reg::Edx, 11),
    ("nx", 0x80000001, 0, Reg::Edx, 20),
    ("mmxext", 0x80000001, 0, Reg::Edx, 22),
    ("fxsr-opt", 0x80000001, 0, Reg::Edx, 25),
    ("pdpe1gb", 0x80000001, 0, Reg::Edx, 26),
    ("rdtscp", 0x80000001, 0, Reg::Edx, 27),
    ("lm", 0x80000001, 0, Reg::Edx, 29),
    ("3dnowext", 0x80000001, 0, Reg::Edx, 30),
    ("3dnow", 0x80000001, 0, Reg::Edx, 31),
    ("lahf-lm", 0x80000001, 0, Reg::Ecx, 0),
    ("cmp-legacy", 0x80000001, 0, Reg::Ecx, 1),
    ("svm", 0x80000001, 0, Reg::Ecx, 2),
    ("extapic", 0x80000001, 0, Reg::Ecx, 3),
    ("cr8legacy", 0x80000001, 0, Reg::Ecx, 4),
    ("abm", 0x80000001, 0, Reg::Ecx, 5),
    ("sse4a", 0x80000001, 0, Reg::Ecx, 6),
    ("misalignsse", 0x80000001, 0, Reg::Ecx, 7),
    ("3dnowprefetch", 0x80000001, 0, Reg::Ecx, 8),
    ("osvw", 0x80000001, 0, Reg::Ecx, 9),
    ("ibs", 0x80000001, 0, Reg::Ecx, 10),
    ("xop", 0x80000001, 0, Reg::Ecx, 11),
    ("skinit", 0x80000001, 0, Reg::Ecx, 12),
    ("wdt", 0x80000001, 0, Reg::Ecx, 13),
    ("lwp", 0x80000001, 0, Reg::Ecx, 15),
    ("fma4", 0x80000001, 0, Reg::Ecx, 16),
    ("tce", 0x80000001, 0, Reg::Ecx, 17),
    ("nodeid-msr", 0x80000001, 0, Reg::Ecx, 19),
    ("tbm", 0x80000001, 0, Reg::Ecx, 21),
    ("topoext", 0x80000001, 0, Reg::Ecx, 22),
    ("perfctr-core", 0x80000001, 0, Reg::Ecx, 23),
    ("perfctr-nb", 0x80000001, 0, Reg::Ecx, 24),
    ("xsaveopt", 0xd, 1, Reg::Eax, 0),
    ("xsavec", 0xd, 1, Reg::Eax, 1),
    ("xgetbv1", 0xd, 1, Reg::Eax, 2),
    ("xsaves", 0xd, 1, Reg::Eax, 3),
    ("xfd", 0xd, 1, Reg::Eax, 4),
    ("arat", 0x6, 0, Reg::Eax, 2),
    ("clzero", 0x80000008, 0, Reg::Ebx, 0),
    ("xsaveerptr", 0x80000008, 0, Reg::Ebx, 2),
    ("wbnoinvd", 0x80000008, 0, Reg::Ebx, 9),
    ("ibpb", 0x80000008, 0, Reg::Ebx, 12),
    ("ibrs", 0x80000008, 0, Reg::Ebx, 14),
    ("amd-stibp", 0x80000008, 0, Reg::Ebx, 15),
    ("amd-ssbd", 0x80000008, 0, Reg::Ebx, 24),
    ("virt-ssbd", 0x80000008, 0, Reg::Ebx, 25),
    ("amd-no-ssb", 0x80000008, 0, Reg::Ebx, 26),
];

/// Whether the CPUID `entries` have feature `name` (None: not a feature name).
pub fn has(entries: &[kvm_cpuid_entry2], name: &str) -> Option<bool> {
    let &(_, leaf, sub, reg, bit) = FEATURE_NAMES.iter().find(|f| f.0 == name)?;
    Some(entries.iter().any(|e| {
        e.function == leaf
            && e.index == sub
            && (match reg {
                Reg::Eax => e.eax,
                Reg::Ebx => e.ebx,
                Reg::Ecx => e.ecx,
                Reg::Edx => e.edx,
            } >> bit)
                & 1
                == 1
    }))
}

/// What QEMU 7.2's `qemu64` asks for under KVM, where the accelerator's
/// defaults turn `svm` off and `x2apic` on (target/i386/kvm/kvm-cpu.c
/// `kvm_default_props`): the features a qemu64 vCPU should have, so the
/// ones it lacks are its `unavailable-features`.
pub fn qemu64_kvm_features() -> impl Iterator<Item = &'static str> {
    QEMU64_FEATURES
        .iter()
        .copied()
        .filter(|f| *f != "svm")
        .chain(std::iter::once("x2apic"))
}

/// `qemu64_kvm_features` that the CPUID `entries` lack.
pub fn qemu64_unavailable(entries: &[kvm_cpuid_entry2]) -> Vec<&'static str> {
    qemu64_kvm_features()
        .filter(|f| has(entries, f) == Some(false))
        .collect()
}

/// The features QEMU 7.2's `qemu64` model asks for (target/i386/cpu.c
/// `builtin_x86_defs`: PPRO_FEATURES, MTRR, CLFLUSH, MCA, PSE36; SSE3,
/// CX16; LM, SYSCALL, NX; LAHF_LM, SVM).
pub const QEMU64_FEATURES: &[&str] = &[
    "fpu", "de", "pse", "tsc", "msr", "mce", "cx8", "pge", "cmov", "pat", "fxsr", "mmx", "sse",
    "sse2", "pae", "sep", "apic", "mtrr", "clflush", "mca", "pse36", "pni", "cx16", "lm",
    "syscall", "nx", "lahf-lm", "svm",
];
