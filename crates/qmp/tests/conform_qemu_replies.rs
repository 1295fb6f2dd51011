//! Replies captured from QEMU 7.2 (`tests/data/qemu-7.2-*.txt`: a `> `
//! request line, then QEMU's reply line) go through the schema's `conform`
//! with their members reordered, as a handler building them with `json!`
//! would, and must print byte for byte as QEMU printed them: QEMU's member
//! order is the QAPI declaration order, which decides the printed order of
//! keys sharing a hash bucket.
//!
//! Captured with `qemu-system-x86_64 -machine q35 -accel kvm -S -nodefaults
//! -display none -drive file=IMG,format=raw,if=none,id=d0 -device
//! virtio-blk-pci,drive=d0,id=vd0` (`virtio-blk-raw`), the same after
//! `blockdev-add` of a qcow2 node (`qcow2-node`), and with a PCIe root port,
//! a pcie-pci-bridge and the disk behind it (`pci-bridge`).

use qmp::qobject::{QDict, QObject};
use qmp::schema::TypeRef;

const CAPTURES: &[(&str, &str)] = &[
    (
        "virtio-blk-raw",
        include_str!("data/qemu-7.2-q35-virtio-blk-raw.txt"),
    ),
    (
        "qcow2-node",
        include_str!("data/qemu-7.2-q35-qcow2-node.txt"),
    ),
    (
        "pci-bridge",
        include_str!("data/qemu-7.2-q35-pci-bridge.txt"),
    ),
];

/// (request, reply) pairs of a capture.
fn pairs(text: &str) -> Vec<(&str, &str)> {
    let lines: Vec<&str> = text.lines().collect();
    lines
        .chunks(2)
        .map(|c| (c[0].strip_prefix("> ").expect("request line"), c[1]))
        .collect()
}

/// Every object's members inserted in alphabetical order (`descending`:
/// the reverse), recursively: orders unrelated to QEMU's.  (Reversing the
/// printed order would not do: QEMU prints a bucket newest first, so that
/// re-creates its insertion order.)
fn shuffled(v: &serde_json::Value, descending: bool) -> QObject {
    match v {
        serde_json::Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            if descending {
                keys.reverse();
            }
            let mut d = QDict::new();
            for k in keys {
                d.insert(k.clone(), shuffled(&m[k], descending));
            }
            QObject::Dict(d)
        }
        serde_json::Value::Array(a) => {
            QObject::List(a.iter().map(|x| shuffled(x, descending)).collect())
        }
        other => QObject::from(other),
    }
}

fn reply_line(ret: QObject) -> String {
    let mut d = QDict::new();
    d.insert("return", ret);
    QObject::Dict(d).to_json()
}

#[test]
fn conformed_replies_print_as_qemu_printed_them() {
    let s = qmp::schema();
    let mut checked = Vec::new();
    let mut order_mattered = 0;
    for (capture, text) in CAPTURES {
        for (request, reply) in pairs(text) {
            let req: serde_json::Value = serde_json::from_str(request).unwrap();
            let name = req["execute"].as_str().unwrap();
            let cmd = s
                .command(name)
                .unwrap_or_else(|| panic!("{name} not declared"));
            let ty: &TypeRef = cmd.ret_type.as_ref().unwrap();
            if let Some(args) = req.get("arguments") {
                let QObject::Dict(a) = QObject::from(args) else {
                    panic!("{request}: arguments")
                };
                s.validate_args(cmd, &a)
                    .unwrap_or_else(|e| panic!("{capture}: {request}: {e}"));
            }
            let parsed: serde_json::Value = serde_json::from_str(reply).unwrap();
            for descending in [false, true] {
                let v = shuffled(&parsed["return"], descending);
                if reply_line(v.clone()) != reply {
                    order_mattered += 1;
                }
                let conformed = s
                    .conform(&v, ty)
                    .unwrap_or_else(|e| panic!("{capture}: {request}: {e}"));
                assert_eq!(reply_line(conformed), reply, "{capture}: {request}");
            }
            checked.push(name.to_string());
        }
    }
    for name in [
        "query-block",
        "query-blockstats",
        "query-named-block-nodes",
        "query-pci",
    ] {
        assert!(checked.iter().any(|c| c == name), "no capture of {name}");
    }
    // The reordering changes the printed bytes (of most replies), so the comparison
    // above tests conform's ordering, not just the parser's.
    assert!(order_mattered > 0, "reordering never changed the output");
    eprintln!(
        "{} replies, {order_mattered} reorderings changed the bytes before conform",
        checked.len()
    );
}

/// conform rejects what QEMU could not have sent.
#[test]
fn conform_rejects_replies_off_the_schema() {
    let s = qmp::schema();
    let ty = s.command("query-pci").unwrap().ret_type.clone().unwrap();
    let bad = |j: &str| {
        let v: serde_json::Value = serde_json::from_str(j).unwrap();
        s.conform(&QObject::from(&v), &ty)
    };
    let ok = r#"[{"bus":0,"devices":[{"bus":0,"slot":0,"function":0,"class_info":{"class":1536},"id":{"device":1,"vendor":2},"irq_pin":0,"qdev_id":"","regions":[]}]}]"#;
    assert!(bad(ok).is_ok());
    // irq_pin missing
    assert!(bad(r#"[{"bus":0,"devices":[{"bus":0,"slot":0,"function":0,"class_info":{"class":1536},"id":{"device":1,"vendor":2},"qdev_id":"","regions":[]}]}]"#).is_err());
    // a member PciDeviceInfo does not have
    assert!(bad(r#"[{"bus":0,"devices":[{"bus":0,"slot":0,"function":0,"class_info":{"class":1536},"id":{"device":1,"vendor":2},"irq_pin":0,"qdev_id":"","regions":[],"x":1}]}]"#).is_err());
    let stats = s
        .command("query-blockstats")
        .unwrap()
        .ret_type
        .clone()
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(
        r#"[{"stats":{},"driver-specific":{"driver":"file","discard-nb-ok":"x"}}]"#,
    )
    .unwrap();
    assert!(s.conform(&QObject::from(&v), &stats).is_err());
}
