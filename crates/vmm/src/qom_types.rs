//! The QOM types ferrovm has, for `qom-list-types`, `qom-list-properties`
//! and `device-list-properties` (qom/qom-qmp-cmds.c). Everything here is
//! derived from what ferrovm builds: the `-device` registry
//! ([`qdev::DRIVERS`]), the machine types `query-machines` lists and the
//! `-cpu` models; each non-abstract type can be created, and each abstract
//! one is an ancestor of one that can. libvirt turns these answers into
//! command lines, so listing anything more would make it generate lines
//! ferrovm refuses.

use serde_json::{json, Value};

use crate::cpuid;
use crate::devices::qdev;

/// One QOM type: its name, its parent, and whether it is abstract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QomType {
    pub name: String,
    pub parent: Option<String>,
    pub is_abstract: bool,
}

/// The `-cpu` models ferrovm builds and their QOM parents
/// (target/i386/cpu.c: `host` derives from `max`).
pub const CPU_TYPES: &[(&str, &str)] = &[
    ("qemu64", "x86_64-cpu"),
    ("max", "x86_64-cpu"),
    ("host", "max-x86_64-cpu"),
];

/// The machine types (`query-machines` names) and their QOM parents
/// (hw/i386/pc_q35.c, pc_piix.c: `generic-pc-machine`; hw/core/null-machine.c).
const MACHINE_TYPES: &[(&str, &str)] = &[
    ("pc-q35-7.2", "generic-pc-machine"),
    ("pc-i440fx-7.2", "generic-pc-machine"),
    ("ferrovm", "generic-pc-machine"),
    ("none", "machine"),
];

/// The console's front-ends, which console.rs builds rather than the
/// `-device` registry (hw/char/serial-isa.c, debugcon.c: both are ISA
/// devices). libvirt emits `-device isa-serial` for a domain's `<serial>`
/// only when `qom-list-types` lists it.
const FRONT_END_TYPES: &[(&str, &str)] =
    &[("isa-serial", "isa-device"), ("isa-debugcon", "isa-device")];

/// The front-ends' properties that ferrovm honours, with QEMU's types
/// (`serial_isa_properties`, `debugcon_isa_properties`).
fn front_end_properties(name: &str) -> Option<Vec<Value>> {
    let p = |n: &str, ty: &str| json!({"name": n, "type": ty});
    match name {
        "isa-serial" => Some(vec![p("index", "uint32"), p("chardev", "str")]),
        "isa-debugcon" => Some(vec![
            p("iobase", "uint32"),
            p("chardev", "str"),
            p("readback", "uint32"),
        ]),
        _ => None,
    }
}

/// Abstract types above the machines and CPUs, each with its parent.
const ABSTRACT: &[(&str, Option<&str>)] = &[
    ("object", None),
    ("machine", Some("object")),
    ("x86-machine", Some("machine")),
    ("generic-pc-machine", Some("x86-machine")),
    ("cpu", Some("device")),
    ("x86_64-cpu", Some("cpu")),
];

/// The QOM type name of machine type `name` (`TYPE_MACHINE_SUFFIX`).
pub fn machine_type_name(name: &str) -> String {
    format!("{name}-machine")
}

/// The QOM type name of CPU model `model` (`X86_CPU_TYPE_NAME`).
pub fn cpu_type_name(model: &str) -> String {
    format!("{model}-x86_64-cpu")
}

/// Every QOM type ferrovm has.
pub fn all() -> Vec<QomType> {
    let t = |name: &str, parent: Option<&str>, is_abstract| QomType {
        name: name.to_string(),
        parent: parent.map(str::to_string),
        is_abstract,
    };
    let mut v: Vec<QomType> = ABSTRACT.iter().map(|(n, p)| t(n, *p, true)).collect();
    v.extend(
        qdev::ABSTRACT_ANCESTORS
            .iter()
            .map(|(n, p)| t(n, Some(p), true)),
    );
    for d in qdev::DRIVERS {
        if let Some(gp) = d.grandparent {
            if !v.iter().any(|x| x.name == d.parent) {
                v.push(t(d.parent, Some(gp), true));
            }
        }
        v.push(t(d.name, Some(d.parent), false));
    }
    v.extend(FRONT_END_TYPES.iter().map(|(n, p)| t(n, Some(p), false)));
    v.extend(
        MACHINE_TYPES
            .iter()
            .map(|(m, p)| t(&machine_type_name(m), Some(p), false)),
    );
    v.extend(
        CPU_TYPES
            .iter()
            .map(|(c, p)| t(&cpu_type_name(c), Some(p), false)),
    );
    v
}

fn find(name: &str) -> Option<QomType> {
    all().into_iter().find(|t| t.name == name)
}

/// Whether `name` is `ancestor` or derives from it
/// (`object_class_dynamic_cast`).
fn implements(name: &str, ancestor: &str) -> bool {
    let mut cur = find(name);
    while let Some(t) = cur {
        if t.name == ancestor {
            return true;
        }
        cur = t.parent.as_deref().and_then(find);
    }
    false
}

/// `qom-list-types`: the types that implement `implements` (all when
/// absent); abstract ones only if `abstract_` (QEMU's default: false).
pub fn list(implements_: Option<&str>, abstract_: bool) -> Value {
    Value::Array(
        all()
            .into_iter()
            .filter(|t| abstract_ || !t.is_abstract)
            .filter(|t| implements_.is_none_or(|a| implements(&t.name, a)))
            .map(|t| {
                let mut o = json!({"name": t.name});
                if t.is_abstract {
                    o["abstract"] = json!(true);
                }
                if let Some(p) = t.parent {
                    o["parent"] = json!(p);
                }
                o
            })
            .collect(),
    )
}

/// Why a type's properties cannot be listed, in QEMU's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypeError {
    /// DeviceNotFound.
    NotFound(String),
    /// GenericError.
    Generic(String),
}

/// The `-machine` properties ferrovm accepts that QEMU 7.2's machine
/// classes have, with QEMU's type and description (hw/core/machine.c
/// `machine_class_init`). `memory-backend` is left out: `-object
/// memory-backend-*` is accepted but ferrovm does not use the object.
const MACHINE_PROPS: &[(&str, &str, &str)] = &[
    ("kernel", "string", "Linux kernel image file"),
    ("initrd", "string", "Linux initial ramdisk file"),
    ("append", "string", "Linux kernel command line"),
    ("firmware", "string", "Firmware image"),
    (
        "dump-guest-core",
        "bool",
        "Include guest memory in a core dump",
    ),
    ("mem-merge", "bool", "Enable/disable memory merge support"),
    (
        "graphics",
        "bool",
        "Set on/off to enable/disable graphics emulation",
    ),
    ("usb", "bool", "Set on/off to enable/disable usb"),
    (
        "suppress-vmdesc",
        "bool",
        "Set on to disable self-describing migration",
    ),
];

/// The PC machines' own (hw/i386/pc.c, x86.c `x86_machine_class_init`).
const PC_MACHINE_PROPS: &[(&str, &str, &str)] = &[
    ("smm", "OnOffAuto", "Enable SMM"),
    ("acpi", "OnOffAuto", "Enable ACPI"),
    ("pit", "OnOffAuto", "Enable i8254 PIT"),
    ("pic", "OnOffAuto", "Enable i8259 PIC"),
];

/// A type ferrovm lacks but libvirt 9.0 assumes every QEMU has: its probe
/// asks `qom-list-properties` of it unconditionally (qemu_capabilities.c
/// `virQEMUCapsObjectProps`, condition -1) and dereferences the missing
/// list when the answer is DeviceNotFound (`virQEMUCapsProcessStringFlags`:
/// libvirtd segfaults). An empty list is the answer that keeps libvirtd up
/// and claims nothing: it sets none of libvirt's memory-backend-file
/// capabilities, and `qom-list-types` does not list the type.
const LIBVIRT_ASSUMED: &str = "memory-backend-file";

/// `qom-list-properties`: the properties of a machine or CPU type
/// (device types answer through [`device_properties`] as well).
pub fn class_properties(typename: &str) -> Result<Value, TypeError> {
    if typename == LIBVIRT_ASSUMED {
        return Ok(json!([]));
    }
    let t = find(typename)
        .ok_or_else(|| TypeError::NotFound(format!("Class '{typename}' not found")))?;
    let mut out = vec![json!({"name": "type", "type": "string"})];
    let prop = |(n, ty, d): &(&str, &str, &str)| json!({"name": n, "description": d, "type": ty});
    if implements(&t.name, "machine") {
        out.extend(MACHINE_PROPS.iter().map(prop));
        if implements(&t.name, "x86-machine") {
            out.extend(PC_MACHINE_PROPS.iter().map(prop));
        }
    } else if implements(&t.name, "x86_64-cpu") {
        if !t.is_abstract {
            out.push(json!({"name": "realized", "type": "bool"}));
        }
        out.extend(cpuid::removable_feature_names().map(|n| json!({"name": n, "type": "bool"})));
        // What the model asked for and the host lacks (qom-get on a vCPU,
        // commands/cpu_qom.rs); libvirt reads the guest CPU through it.
        out.push(json!({"name": "unavailable-features", "type": "strList"}));
    } else if let Some(d) = qdev::driver(&t.name) {
        out.push(json!({"name": "realized", "type": "bool"}));
        out.extend(d.property_infos());
    } else if !t.is_abstract {
        return Err(TypeError::NotFound(format!("Class '{typename}' not found")));
    }
    Ok(Value::Array(out))
}

/// `device-list-properties` (qom/qom-qmp-cmds.c
/// `qmp_device_list_properties`): QEMU's errors for unknown and abstract
/// types, and for types that are not devices.
pub fn device_properties(typename: &str) -> Result<Value, TypeError> {
    let not_device =
        || TypeError::Generic("Parameter 'typename' expects a non-abstract device type".into());
    let Some(t) = find(typename) else {
        return Err(TypeError::NotFound(format!(
            "Device '{typename}' not found"
        )));
    };
    if t.is_abstract || !implements(&t.name, "device") {
        return Err(not_device());
    }
    if let Some(props) = front_end_properties(&t.name) {
        return Ok(Value::Array(props));
    }
    match qdev::driver(&t.name) {
        Some(d) => Ok(Value::Array(d.property_infos())),
        // A CPU is a device in QEMU too; -device cannot build one here.
        None => Ok(Value::Array(
            cpuid::removable_feature_names()
                .map(|n| json!({"name": n, "type": "bool"}))
                .collect(),
        )),
    }
}

impl From<TypeError> for qmp::QmpError {
    fn from(e: TypeError) -> Self {
        match e {
            TypeError::NotFound(m) => qmp::QmpError::device_not_found(m),
            TypeError::Generic(m) => qmp::QmpError::generic(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;

    fn names(v: &Value) -> Vec<String> {
        let mut n: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_string())
            .collect();
        n.sort();
        n
    }

    fn entry<'a>(list: &'a Value, name: &str) -> Option<&'a Value> {
        list.as_array().unwrap().iter().find(|p| p["name"] == name)
    }

    /// QEMU 7.2 `qom-list-types {"implements": "virtio-pci"}` lists these
    /// three and their `*-non-transitional` twins among its drivers, each
    /// under its `*-base` parent (and `*-transitional` ones, which ferrovm
    /// cannot build); `virtio-pci` itself is abstract and only shown with
    /// `abstract: true`.
    #[test]
    fn list_types_follows_qemus_ancestry_and_abstract_rule() {
        let v = list(Some("virtio-pci"), false);
        assert_eq!(
            names(&v),
            [
                "virtio-balloon-pci",
                "virtio-balloon-pci-non-transitional",
                "virtio-blk-pci",
                "virtio-blk-pci-non-transitional",
                "virtio-net-pci",
                "virtio-net-pci-non-transitional"
            ]
        );
        assert_eq!(
            entry(&v, "virtio-net-pci-non-transitional").unwrap(),
            &json!({"name": "virtio-net-pci-non-transitional", "parent": "virtio-net-pci-base"})
        );
        assert!(entry(&list(None, false), "isa-serial").is_some());
        assert_eq!(
            entry(&v, "virtio-blk-pci").unwrap(),
            &json!({"name": "virtio-blk-pci", "parent": "virtio-blk-pci-base"})
        );
        let with_abstract = list(Some("virtio-pci"), true);
        assert_eq!(
            entry(&with_abstract, "virtio-pci").unwrap(),
            &json!({"name": "virtio-pci", "abstract": true, "parent": "pci-device"})
        );
        assert_eq!(list(Some("nosuch"), false), json!([]));
        // `host` derives from `max` (target/i386/cpu.c), so it implements it.
        assert_eq!(
            names(&list(Some("max-x86_64-cpu"), false)),
            ["host-x86_64-cpu", "max-x86_64-cpu"]
        );
        let all = list(None, false);
        assert!(entry(&all, "none-machine").is_some());
        assert!(entry(&all, "pc-q35-7.2-machine").is_some());
        assert!(entry(&all, "device").is_none());
        // What ferrovm cannot build is not listed (libvirt probes these).
        for absent in [
            "virtio-scsi-pci",
            "ioh3420",
            "memory-backend-file",
            "base-x86_64-cpu",
        ] {
            assert!(entry(&all, absent).is_none(), "{absent}");
        }
    }

    /// Entries as QEMU 7.2 answers `device-list-properties` for the same
    /// driver (recorded from qemu-system-x86_64 -machine none).
    #[test]
    fn twins_lack_the_generic_types_properties() {
        // QEMU 7.2: device-list-properties of virtio-blk-pci lists
        // disable-legacy and disable-modern; of its non-transitional twin, not.
        let twin = device_properties("virtio-blk-pci-non-transitional").unwrap();
        assert!(entry(&twin, "drive").is_some() && entry(&twin, "bootindex").is_some());
        assert!(entry(&twin, "disable-legacy").is_none());
        assert!(entry(&twin, "disable-modern").is_none());
        let generic = device_properties("virtio-blk-pci").unwrap();
        assert!(entry(&generic, "disable-legacy").is_some());
    }

    #[test]
    fn device_properties_have_qemus_shape() {
        let blk = device_properties("virtio-blk-pci").unwrap();
        for want in [
            json!({"default-value": 256, "name": "queue-size", "type": "uint16"}),
            json!({"default-value": -1, "name": "addr", "description": "Slot and optional function number, example: 06.0 or 06", "type": "int32"}),
            json!({"default-value": "auto", "name": "write-cache", "description": "on/off/auto", "type": "OnOffAuto"}),
            json!({"name": "drive", "description": "Node name or ID of a block device to use as a backend", "type": "str"}),
            json!({"default-value": false, "name": "share-rw", "type": "bool"}),
            json!({"name": "bootindex", "type": "int32"}),
            json!({"default-value": "auto", "name": "disable-legacy", "description": "on/off/auto", "type": "OnOffAuto"}),
            json!({"default-value": 0, "name": "logical_block_size", "description": "A power of two between 512 B and 2 MiB", "type": "size"}),
        ] {
            assert_eq!(entry(&blk, want["name"].as_str().unwrap()), Some(&want));
        }
        // `id` and `bus` are not qdev properties.
        assert!(entry(&blk, "id").is_none() && entry(&blk, "bus").is_none());
        let net = device_properties("virtio-net-pci").unwrap();
        assert_eq!(
            entry(&net, "mac"),
            Some(
                &json!({"name": "mac", "description": "Ethernet 6-byte MAC Address, example: 52:54:00:12:34:56", "type": "str"})
            )
        );
        assert_eq!(
            entry(&net, "mq"),
            Some(
                &json!({"default-value": false, "name": "mq", "description": "on/off", "type": "bool"})
            )
        );
        let balloon = device_properties("virtio-balloon-pci").unwrap();
        assert_eq!(
            entry(&balloon, "guest-stats-polling-interval"),
            Some(&json!({"name": "guest-stats-polling-interval", "type": "int"}))
        );
        // QEMU's balloon has no `vectors` (no MSI-X), and -device refuses it.
        assert!(entry(&balloon, "vectors").is_none());
    }

    /// QEMU 7.2's errors: an unknown type is DeviceNotFound; an abstract
    /// type or one that is no device is a GenericError.
    #[test]
    fn device_properties_errors_are_qemus() {
        assert_eq!(
            device_properties("virtio-scsi-ccw"),
            Err(TypeError::NotFound(
                "Device 'virtio-scsi-ccw' not found".into()
            ))
        );
        let abstract_ =
            TypeError::Generic("Parameter 'typename' expects a non-abstract device type".into());
        assert_eq!(device_properties("virtio-pci"), Err(abstract_.clone()));
        assert_eq!(device_properties("device"), Err(abstract_.clone()));
        assert_eq!(device_properties("none-machine"), Err(abstract_));
        // Not a ferrovm type, but asked by libvirt 9.0 unconditionally.
        assert_eq!(class_properties("memory-backend-file"), Ok(json!([])));
        assert_eq!(
            device_properties("memory-backend-file"),
            Err(TypeError::NotFound(
                "Device 'memory-backend-file' not found".into()
            ))
        );
        assert_eq!(
            class_properties("nosuch"),
            Err(TypeError::NotFound("Class 'nosuch' not found".into()))
        );
    }

    /// Every property `device-list-properties` lists is one `-device`
    /// accepts (a value of its type parses, or fails on the value's meaning,
    /// never with "Property ... not found").
    #[test]
    fn listed_device_properties_are_accepted_by_device() {
        for d in qdev::DRIVERS {
            let listed = device_properties(d.name).unwrap();
            for p in listed.as_array().unwrap() {
                let name = p["name"].as_str().unwrap();
                let value = match p["type"].as_str().unwrap() {
                    "bool" => "on",
                    "OnOffAuto" => "auto",
                    "str" if name == "mac" => "52:54:00:12:34:56",
                    "str" => "",
                    "int32" if name == "addr" => "5",
                    _ => "1",
                };
                let mut m = Map::new();
                m.insert("driver".into(), json!(d.name));
                m.insert("drive".into(), json!("d0"));
                m.insert(name.into(), json!(value));
                if d.name != "virtio-blk-pci" {
                    m.remove("drive");
                    if name == "drive" {
                        continue;
                    }
                }
                if let Err(e) = qdev::parse(&m, 1) {
                    assert!(!e.contains("not found"), "{} {name}: {e}", d.name);
                }
            }
        }
    }

    /// The machine properties follow QEMU's hw/core/machine.c and are
    /// accepted by `-machine`; `memory-backend` is not offered, since
    /// ferrovm does not use `-object memory-backend-*`.
    #[test]
    fn machine_properties_are_qemus_and_accepted() {
        let none = class_properties("none-machine").unwrap();
        assert_eq!(
            entry(&none, "kernel"),
            Some(
                &json!({"name": "kernel", "description": "Linux kernel image file", "type": "string"})
            )
        );
        assert!(entry(&none, "memory-backend").is_none());
        assert!(entry(&none, "acpi").is_none());
        let q35 = class_properties("pc-q35-7.2-machine").unwrap();
        assert_eq!(
            entry(&q35, "acpi"),
            Some(&json!({"name": "acpi", "description": "Enable ACPI", "type": "OnOffAuto"}))
        );
        for p in q35.as_array().unwrap() {
            let name = p["name"].as_str().unwrap();
            let value = match (name, p["type"].as_str().unwrap()) {
                ("type", _) => continue,
                ("usb" | "graphics" | "suppress-vmdesc", _) => "off",
                (_, "bool") => "on",
                (_, "OnOffAuto") => "auto",
                _ => "x",
            };
            let arg = format!("q35,{name}={value}");
            // Accepted: no "Invalid parameter" (unknown key) and no "not
            // supported by ferrovm" (a value it cannot honour); other
            // checks of the whole line (an initrd wants a kernel) may fail.
            if let Err(e) = cli::parse(["-machine".to_string(), arg.clone()]) {
                let m = e.to_string();
                assert!(
                    !m.contains("Invalid parameter") && !m.contains("not supported"),
                    "-machine {arg}: {m}"
                );
            }
        }
    }

    #[test]
    fn cpu_types_list_the_removable_features() {
        let max = class_properties("max-x86_64-cpu").unwrap();
        assert_eq!(
            entry(&max, "popcnt"),
            Some(&json!({"name": "popcnt", "type": "bool"}))
        );
        // Not offered: ferrovm's -cpu ignores it, and libvirt would pass it.
        assert!(entry(&max, "migratable").is_none());
    }
}
