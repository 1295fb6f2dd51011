//! `-device help` and `-device DRIVER,help`, printed as QEMU 7.2 prints
//! them (softmmu/qdev-monitor.c `qdev_print_devinfos`, `qdev_device_help`;
//! qom/object_interfaces.c `object_property_help`), from the registry: what
//! is listed is what `-device` builds.

use serde_json::Value;

use super::{driver, DRIVERS};

/// QEMU's `DeviceCategory`, in its order, with `-device help`'s headings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Category {
    Bridge,
    Usb,
    Storage,
    Network,
    Input,
    Display,
    Sound,
    Misc,
    Cpu,
    Watchdog,
    Uncategorized,
}

const HEADINGS: &[(Category, &str)] = &[
    (Category::Bridge, "Controller/Bridge/Hub"),
    (Category::Usb, "USB"),
    (Category::Storage, "Storage"),
    (Category::Network, "Network"),
    (Category::Input, "Input"),
    (Category::Display, "Display"),
    (Category::Sound, "Sound"),
    (Category::Misc, "Misc"),
    (Category::Cpu, "CPU"),
    (Category::Watchdog, "Watchdog"),
    (Category::Uncategorized, "Uncategorized"),
];

/// A line of the device list: name, bus, alias, description.
struct Entry {
    name: &'static str,
    bus: &'static str,
    alias: Option<&'static str>,
    desc: &'static str,
    category: Category,
}

/// The console's front-ends, built by console.rs rather than the registry.
const FRONT_ENDS: &[Entry] = &[
    Entry {
        name: "isa-serial",
        bus: "ISA",
        alias: None,
        desc: "",
        category: Category::Input,
    },
    Entry {
        name: "isa-debugcon",
        bus: "ISA",
        alias: None,
        desc: "",
        category: Category::Misc,
    },
];

/// What `-device` asked for help about, if it did: `help` (or `?`) as the
/// driver, or a `help` property. An unknown driver's help is an `Err`
/// message; QEMU prints it and still exits 0 (`qdev_device_help` fails,
/// but the help path of `qemu_init` exits with success), and so does
/// ferrovm.
pub fn requested(devices: &[Value]) -> Option<Result<String, String>> {
    devices.iter().find_map(|d| {
        let name = d.get("driver").and_then(Value::as_str)?;
        if matches!(name, "help" | "?") {
            Some(Ok(device_list()))
        } else if d.get("help").is_some() || d.get("?").is_some() {
            Some(properties(name))
        } else {
            None
        }
    })
}

/// `-device help`: by category, each sorted by name; every category after
/// the first opens with a blank line, whether or not the first was printed.
pub fn device_list() -> String {
    let mut entries: Vec<Entry> = DRIVERS
        .iter()
        .map(|d| Entry {
            name: d.name,
            bus: d.bus,
            alias: d.alias,
            desc: d.desc,
            category: d.category,
        })
        .collect();
    entries.extend(FRONT_ENDS.iter().map(|e| Entry { ..*e }));
    entries.sort_by_key(|e| e.name);
    let mut out = String::new();
    for (i, (cat, heading)) in HEADINGS.iter().enumerate() {
        let mut printed = false;
        for e in entries.iter().filter(|e| e.category == *cat) {
            if !printed {
                let sep = if i > 0 { "\n" } else { "" };
                out.push_str(&format!("{sep}{heading} devices:\n"));
                printed = true;
            }
            out.push_str(&format!("name \"{}\", bus {}", e.name, e.bus));
            if let Some(a) = e.alias {
                out.push_str(&format!(", alias \"{a}\""));
            }
            if !e.desc.is_empty() {
                out.push_str(&format!(", desc \"{}\"", e.desc));
            }
            out.push('\n');
        }
    }
    out
}

/// `-device DRIVER,help`: its properties, one line each, sorted.
pub fn properties(name: &str) -> Result<String, String> {
    let d = driver(name).ok_or_else(|| format!("Device '{name}' not found"))?;
    let mut lines: Vec<String> = d.property_infos().iter().map(property_line).collect();
    lines.sort();
    let mut out = format!("{} options:\n", d.name);
    for l in lines {
        out.push_str(&l);
        out.push('\n');
    }
    Ok(out)
}

fn property_line(info: &Value) -> String {
    let s = |k: &str| info.get(k).and_then(Value::as_str);
    let mut line = format!(
        "  {}=<{}>",
        s("name").unwrap_or(""),
        s("type").unwrap_or("")
    );
    let desc = s("description");
    let default = info.get("default-value");
    if desc.is_some() || default.is_some() {
        if line.len() < 24 {
            line.push_str(&" ".repeat(24 - line.len()));
        }
        line.push_str(" - ");
    }
    if let Some(d) = desc {
        line.push_str(d);
    }
    if let Some(v) = default {
        line.push_str(&format!(" (default: {v})"));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Lines copied from QEMU 7.2's `-device i6300esb,help` and
    /// `-device virtio-balloon-pci,help`.
    #[test]
    fn property_lines_are_qemus() {
        let text = properties("i6300esb").unwrap();
        assert!(text.starts_with("i6300esb options:\n"), "{text}");
        for want in [
            "  addr=<int32>           - Slot and optional function number, example: 06.0 or 06 (default: -1)",
            "  multifunction=<bool>   - on/off (default: false)",
            "  rombar=<uint32>        -  (default: 1)",
            "  romfile=<str>",
        ] {
            assert!(text.lines().any(|l| l == want), "{want:?} not in\n{text}");
        }
        let b = properties("virtio-balloon-pci").unwrap();
        for want in [
            "  disable-legacy=<OnOffAuto> - on/off/auto (default: \"auto\")",
            "  deflate-on-oom=<bool>  - on/off (default: false)",
        ] {
            assert!(b.lines().any(|l| l == want), "{want:?} not in\n{b}");
        }
        assert_eq!(
            properties("nosuch").unwrap_err(),
            "Device 'nosuch' not found"
        );
    }

    #[test]
    fn the_list_has_qemus_headings_and_lines() {
        let text = device_list();
        // As QEMU 7.2 prints these devices (`-device help`).
        for want in [
            "\nStorage devices:\nname \"virtio-blk-pci\", bus PCI, alias \"virtio-blk\"\n",
            "\nWatchdog devices:\nname \"i6300esb\", bus PCI, desc \"Intel 6300ESB\"\n",
            "name \"pvpanic\", bus ISA\nname \"pvpanic-pci\", bus PCI\n",
            "\nInput devices:\nname \"isa-serial\", bus ISA\n",
        ] {
            assert!(text.contains(want), "{want:?} not in\n{text}");
        }
        assert!(
            text.starts_with("\nUSB devices:\nname \"qemu-xhci\", bus PCI\n\nStorage devices:\n"),
            "{text}"
        );
    }

    #[test]
    fn help_is_found_as_driver_or_property() {
        assert!(requested(&[json!({"driver": "virtio-blk-pci"})]).is_none());
        let list = requested(&[json!({"driver": "help"})]).unwrap().unwrap();
        assert!(list.contains("virtio-net-pci"));
        let props = requested(&[json!({"driver": "virtio-blk", "help": "on"})])
            .unwrap()
            .unwrap();
        assert!(props.starts_with("virtio-blk-pci options:\n"), "{props}");
    }
}
