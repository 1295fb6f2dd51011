//! `query-command-line-options` (QEMU's util/qemu-config.c
//! `qmp_query_command_line_options`), derived from the option table: each
//! option read as QemuOpts (or keyval with declared keys) is reported under
//! QEMU's QemuOpts group name, with the keys ferrovm accepts.

use serde_json::{json, Value};

use crate::schema::{Kind, Schema};
use crate::table::OPTIONS;

/// Options left out, and why.
const LEFT_OUT: &[&str] = &[
    // Checked and recorded, but ferrovm installs no seccomp filter: listing
    // it would make libvirt believe `-sandbox on` protects the host.
    "sandbox",
];

/// QEMU's QemuOpts group of an option whose group is not its name
/// (softmmu/vl.c: `qemu_mem_opts`, `qemu_smp_opts`, `qemu_boot_opts`).
fn group(option: &str) -> &str {
    match option {
        "m" => "memory",
        "smp" => "smp-opts",
        "boot" => "boot-opts",
        o => o,
    }
}

/// The declared keys (an open schema takes others too, as QEMU's `-drive`
/// passes unknown keys to the block driver and still lists its own).
fn parameters(schema: &Schema) -> Vec<Value> {
    schema
        .keys
        .iter()
        .map(|k| {
            let ty = match k.kind {
                Kind::Bool => "boolean",
                Kind::Number => "number",
                Kind::Size => "size",
                Kind::Str | Kind::Enum(_) | Kind::Id => "string",
            };
            json!({"name": k.name, "type": ty})
        })
        .collect()
}

/// Every `CommandLineOptionInfo`, or QEMU's error for an unknown `option`.
pub fn command_line_options(option: Option<&str>) -> Result<Vec<Value>, String> {
    let all: Vec<Value> = OPTIONS
        .iter()
        .filter(|d| !LEFT_OUT.contains(&d.names[0]))
        .filter_map(|d| {
            d.schema()
                .map(|s| json!({"option": group(d.names[0]), "parameters": parameters(s)}))
        })
        .collect();
    match option {
        None => Ok(all),
        Some(o) => {
            let one: Vec<Value> = all.into_iter().filter(|v| v["option"] == o).collect();
            if one.is_empty() {
                Err(format!("invalid option name: {o}"))
            } else {
                Ok(one)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// QEMU 7.2 answers GenericError "invalid option name: X" for a name
    /// that is no QemuOpts group (`m` is the `memory` group; `kernel` has
    /// none).
    #[test]
    fn unknown_groups_are_refused_as_qemu_does() {
        assert_eq!(
            command_line_options(Some("nosuch")).unwrap_err(),
            "invalid option name: nosuch"
        );
        assert_eq!(
            command_line_options(Some("m")).unwrap_err(),
            "invalid option name: m"
        );
        assert!(command_line_options(Some("kernel")).is_err());
        let mem = command_line_options(Some("memory")).unwrap();
        assert_eq!(mem[0]["parameters"][0]["name"], "size");
        assert_eq!(mem[0]["parameters"][0]["type"], "size");
    }

    #[test]
    fn sandbox_is_not_listed_without_a_seccomp_filter() {
        assert!(command_line_options(Some("sandbox")).is_err());
        let all = command_line_options(None).unwrap();
        assert!(all.iter().all(|o| o["option"] != "sandbox"));
        // -drive is QemuOpts with declared keys, as in QEMU.
        let drive = command_line_options(Some("drive")).unwrap();
        let params = drive[0]["parameters"].as_array().unwrap();
        assert!(params
            .iter()
            .any(|p| p["name"] == "read-only" && p["type"] == "boolean"));
    }
}
