//! The machine types ferrovm accepts, in one table: `-machine` resolves
//! names from it, `-machine help` prints it (QEMU 7.2 softmmu/vl.c
//! `machine_help_func`) and QMP `query-machines` answers from it (vmm).
//!
//! Every PC name (`pc`, `q35`, `pc-q35-X.Y`, `pc-i440fx-X.Y`, `ferrovm`)
//! builds the same board, ferrovm's Q35 + ICH9 PC; the descriptions say so
//! rather than repeat QEMU's. What QEMU marks is kept: `pc-i440fx-7.2`
//! (alias `pc`) is the default, `pc-q35-7.2` has the alias `q35`, and the
//! i440FX types before 2.0 are deprecated.

use crate::config::MachineKind;
use std::cmp::Ordering;

/// QEMU 7.2's versioned Q35 machine types.
const Q35_VERSIONS: &[&str] = &[
    "2.4", "2.5", "2.6", "2.7", "2.8", "2.9", "2.10", "2.11", "2.12", "3.0", "3.1", "4.0", "4.0.1",
    "4.1", "4.2", "5.0", "5.1", "5.2", "6.0", "6.1", "6.2", "7.0", "7.1", "7.2",
];
/// QEMU 7.2's versioned i440FX machine types.
const I440FX_VERSIONS: &[&str] = &[
    "1.4", "1.5", "1.6", "1.7", "2.0", "2.1", "2.2", "2.3", "2.4", "2.5", "2.6", "2.7", "2.8",
    "2.9", "2.10", "2.11", "2.12", "3.0", "3.1", "4.0", "4.1", "4.2", "5.0", "5.1", "5.2", "6.0",
    "6.1", "6.2", "7.0", "7.1", "7.2",
];
/// hw/i386/pc_piix.c: `pc_i440fx_1_7_machine_options` sets a
/// `deprecation_reason` that the older types inherit.
const I440FX_DEPRECATED: &[&str] = &["1.4", "1.5", "1.6", "1.7"];

const Q35_DESC: &str = "ferrovm's Q35 + ICH9 PC";
const I440FX_DESC: &str =
    "ferrovm's Q35 + ICH9 PC (under the i440FX name: there is no i440FX board)";

/// One machine type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineType {
    pub name: String,
    pub alias: Option<&'static str>,
    pub desc: &'static str,
    /// QEMU's `is_default`: the type used without `-machine`.
    pub is_default: bool,
    pub deprecated: bool,
    pub kind: MachineKind,
    /// QEMU's `max_cpus`.
    pub cpu_max: u32,
    /// QEMU's `family` (machine_help_func sorts by it).
    family: Option<&'static str>,
}

/// Every machine type, in `-machine help`'s order.
pub fn machine_types() -> Vec<MachineType> {
    let pc = |family, prefix: &str, v: &str, desc, cpu_max| MachineType {
        name: format!("{prefix}{v}"),
        alias: None,
        desc,
        is_default: false,
        deprecated: false,
        kind: MachineKind::Q35,
        cpu_max,
        family: Some(family),
    };
    let mut all: Vec<MachineType> = Vec::new();
    for v in Q35_VERSIONS {
        all.push(MachineType {
            alias: (*v == "7.2").then_some("q35"),
            ..pc("pc_q35", "pc-q35-", v, Q35_DESC, 288)
        });
    }
    for v in I440FX_VERSIONS {
        all.push(MachineType {
            alias: (*v == "7.2").then_some("pc"),
            is_default: *v == "7.2",
            deprecated: I440FX_DEPRECATED.contains(v),
            ..pc("pc_piix", "pc-i440fx-", v, I440FX_DESC, 255)
        });
    }
    all.push(MachineType {
        name: "ferrovm".into(),
        family: None,
        ..pc("", "", "", Q35_DESC, 288)
    });
    all.push(MachineType {
        name: "none".into(),
        alias: None,
        desc: "empty machine",
        is_default: false,
        deprecated: false,
        kind: MachineKind::None,
        cpu_max: 1,
        family: None,
    });
    all.sort_by(machine_class_cmp);
    all
}

/// softmmu/vl.c `machine_class_cmp`: families first, alphabetically, and
/// within a family the QOM type names in decreasing order; then the types
/// without a family in increasing order.
fn machine_class_cmp(a: &MachineType, b: &MachineType) -> Ordering {
    let class = |m: &MachineType| format!("{}-machine", m.name);
    match (a.family, b.family) {
        (None, None) => class(a).cmp(&class(b)),
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (Some(fa), Some(fb)) => fa.cmp(fb).then_with(|| class(b).cmp(&class(a))),
    }
}

/// The type `name` names, itself or by its alias.
pub fn find_machine_type(name: &str) -> Option<MachineType> {
    machine_types()
        .into_iter()
        .find(|m| m.name == name || m.alias == Some(name))
}

/// `-machine help`.
pub fn machine_help() -> String {
    let mut s = String::from("Supported machines are:\n");
    for m in machine_types() {
        if let Some(a) = m.alias {
            s.push_str(&format!("{a:<20} {} (alias of {})\n", m.desc, m.name));
        }
        s.push_str(&format!(
            "{:<20} {}{}{}\n",
            m.name,
            m.desc,
            if m.is_default { " (default)" } else { "" },
            if m.deprecated { " (deprecated)" } else { "" }
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_has_qemus_layout_and_markers() {
        let h = machine_help();
        let lines: Vec<&str> = h.lines().collect();
        assert_eq!(lines[0], "Supported machines are:");
        // iotests' testenv.py: the default's line ends in " (default)" and
        // its alias line in " (alias of DEFAULT)".
        let default: Vec<&&str> = lines.iter().filter(|l| l.ends_with(" (default)")).collect();
        assert_eq!(default.len(), 1);
        assert!(default[0].starts_with("pc-i440fx-7.2        "));
        assert!(lines
            .iter()
            .any(|l| l.starts_with("pc                   ")
                && l.ends_with("(alias of pc-i440fx-7.2)")));
        assert!(lines.iter().any(
            |l| l.starts_with("q35                  ") && l.ends_with("(alias of pc-q35-7.2)")
        ));
        assert!(lines
            .iter()
            .any(|l| l.starts_with("pc-i440fx-1.4 ") && l.ends_with(" (deprecated)")));
        // QEMU's order: the i440FX family (pc_piix), then Q35, each newest
        // first by strcmp, then the family-less types.
        let names: Vec<&str> = lines[1..]
            .iter()
            .map(|l| l.split(' ').next().unwrap())
            .collect();
        assert_eq!(&names[..3], ["pc", "pc-i440fx-7.2", "pc-i440fx-7.1"]);
        let i = names.iter().position(|n| *n == "pc-i440fx-2.4").unwrap();
        assert_eq!(
            &names[i..i + 3],
            ["pc-i440fx-2.4", "pc-i440fx-2.3", "pc-i440fx-2.2"]
        );
        assert_eq!(
            names.iter().rev().take(2).collect::<Vec<_>>(),
            [&"none", &"ferrovm"]
        );
        assert_eq!(
            names.len(),
            2 + Q35_VERSIONS.len() + I440FX_VERSIONS.len() + 2
        );
    }

    #[test]
    fn every_listed_type_resolves() {
        for m in machine_types() {
            assert_eq!(find_machine_type(&m.name).as_ref(), Some(&m));
            if let Some(a) = m.alias {
                assert_eq!(find_machine_type(a).as_ref(), Some(&m));
            }
        }
        assert!(find_machine_type("microvm").is_none());
    }
}
