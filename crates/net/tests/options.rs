//! `TapOptions::from_json` against QEMU 7.2: the error texts are copied
//! from net/tap.c, qapi/opts-visitor.c and qapi/qobject-input-visitor.c (and
//! were seen from `qemu-system-x86_64 -netdev tap,...` and QMP `netdev_add`).

use net::{TapOpen, TapOptions, TapSource};
use serde_json::{json, Value};

fn parse(v: Value) -> Result<TapOptions, String> {
    match v {
        Value::Object(m) => TapOptions::from_json(&m),
        _ => panic!("test input must be an object"),
    }
}

fn err(v: Value) -> String {
    match parse(v) {
        Ok(o) => panic!("expected an error, got {o:?}"),
        Err(e) => e,
    }
}

#[test]
fn fd_excludes_the_open_options() {
    let text = "ifname=, script=, downscript=, vnet_hdr=, helper=, queues=, fds=, and vhostfds= are invalid with fd=";
    assert_eq!(err(json!({"id": "n0", "fd": "3", "ifname": "x"})), text);
    // script=no is still a script= (QEMU checks presence, not value).
    assert_eq!(
        err(json!({"id": "n0", "fd": "abc", "script": "no", "downscript": "no"})),
        text
    );
    assert_eq!(err(json!({"id": "n0", "fd": "3", "fds": "4"})), text);
    assert_eq!(err(json!({"id": "n0", "fd": "3", "queues": "1"})), text);
}

#[test]
fn fds_excludes_the_open_options() {
    let text = "ifname=, script=, downscript=, vnet_hdr=, helper=, queues=, and vhostfd= are invalid with fds=";
    assert_eq!(err(json!({"id": "n0", "fds": "3:4", "vhostfd": "5"})), text);
    assert_eq!(err(json!({"id": "n0", "fds": "3", "vnet_hdr": "on"})), text);
    assert_eq!(
        err(json!({"id": "n0", "fds": "3", "vhostfds": "4:5"})),
        "The number of fds passed does not match the number of vhostfds passed"
    );
}

#[test]
fn helper_is_checked_then_refused() {
    assert_eq!(
        err(json!({"id": "n0", "helper": "/bin/false", "script": "no"})),
        "ifname=, script=, downscript=, vnet_hdr=, queues=, and vhostfds= are invalid with helper="
    );
    let e = err(json!({"id": "n0", "helper": "/usr/lib/qemu/qemu-bridge-helper", "br": "br0"}));
    assert!(e.starts_with("helper= is not supported by ferrovm"), "{e}");
    assert!(!e.contains('\n'));
}

#[test]
fn vhostfds_need_fds() {
    assert_eq!(
        err(json!({"id": "n0", "vhostfds": "3"})),
        "vhostfds= is invalid if fds= wasn't specified"
    );
}

#[test]
fn every_way_to_ask_for_vhost_is_refused_in_one_line() {
    for v in [
        json!({"id": "n0", "script": "no", "vhost": "on"}),
        json!({"id": "n0", "vhost": true}),
        json!({"id": "n0", "vhostforce": "on"}),
        json!({"id": "n0", "vhostfd": "4"}),
        json!({"id": "n0", "fd": "3", "vhost": "on"}),
        json!({"id": "n0", "fds": "3:4", "vhostfds": "5:6"}),
    ] {
        let e = err(v.clone());
        assert!(
            e.starts_with("vhost-net is not supported by ferrovm"),
            "{v}: {e}"
        );
        assert!(!e.contains('\n'));
    }
}

#[test]
fn a_vhost_fd_without_vhost_is_an_error() {
    assert_eq!(
        err(json!({"id": "n0", "vhost": "off", "vhostfd": "4"})),
        "vhostfd(s)= is not valid without vhost"
    );
    // vhost=off alone is fine, as is poll-us (only vhost reads it).
    let o = parse(json!({"id": "n0", "vhost": "off", "poll-us": "50"})).unwrap();
    assert_eq!(o.poll_us, Some(50));
}

#[test]
fn command_line_values_are_checked_as_the_opts_visitor_does() {
    assert_eq!(
        err(json!({"id": "n0", "vnet_hdr": "maybe"})),
        "Parameter 'vnet_hdr' expects 'on' or 'off'"
    );
    assert_eq!(
        err(json!({"id": "n0", "queues": "abc"})),
        "Parameter 'queues' expects a uint64 value"
    );
    assert_eq!(
        err(json!({"id": "n0", "queues": "-1"})),
        "Parameter 'queues' expects a uint64 value"
    );
    assert_eq!(
        err(json!({"id": "n0", "queues": "4294967296"})),
        "Parameter 'queues' expects uint32_t"
    );
    assert_eq!(
        err(json!({"id": "n0", "sndbuf": "1x"})),
        "Parameter 'sndbuf' expects a size value"
    );
    assert_eq!(
        err(json!({"id": "n0", "poll-us": "x"})),
        "Parameter 'poll-us' expects a uint64 value"
    );
    assert_eq!(
        err(json!({"id": "n0", "foo": "1"})),
        "Invalid parameter 'foo'"
    );
}

#[test]
fn qmp_values_are_checked_as_the_qobject_visitor_does() {
    assert_eq!(
        err(json!({"id": "n0", "vnet_hdr": 1})),
        "Invalid parameter type for 'vnet_hdr', expected: boolean"
    );
    assert_eq!(
        err(json!({"id": "n0", "fd": 3})),
        "Invalid parameter type for 'fd', expected: string"
    );
    assert_eq!(
        err(json!({"id": "n0", "queues": 4294967296u64})),
        "Parameter 'queues' expects uint32_t"
    );
    assert_eq!(
        err(json!({"id": "n0", "queues": true})),
        "Parameter 'queues' expects uint64"
    );
}

#[test]
fn both_paths_give_the_same_typed_options() {
    let want = TapOptions {
        id: "n0".into(),
        source: TapSource::Open(TapOpen {
            ifname: Some("t0".into()),
            script: None,
            downscript: Some("no".into()),
            vnet_hdr: Some(false),
            queues: 2,
        }),
        sndbuf: Some(65536),
        poll_us: None,
        br: None,
    };
    let cmdline = json!({"type": "tap", "id": "n0", "ifname": "t0", "downscript": "no",
                         "vnet_hdr": "off", "queues": "2", "sndbuf": "64k"});
    let qmp = json!({"type": "tap", "id": "n0", "ifname": "t0", "downscript": "no",
                     "vnet_hdr": false, "queues": 2, "sndbuf": 65536});
    assert_eq!(parse(cmdline).unwrap(), want);
    assert_eq!(parse(qmp).unwrap(), want);
}

#[test]
fn scripts_default_to_qemus_and_no_disables_them() {
    let o = match parse(json!({"id": "n0"})).unwrap().source {
        TapSource::Open(o) => o,
        s => panic!("{s:?}"),
    };
    assert_eq!(o.script(), Some("/etc/qemu-ifup"));
    assert_eq!(o.downscript(), Some("/etc/qemu-ifdown"));
    assert_eq!(o.queues, 1);
    assert_eq!(o.vnet_hdr, None);
    let o = match parse(json!({"id": "n0", "script": "no", "downscript": ""}))
        .unwrap()
        .source
    {
        TapSource::Open(o) => o,
        s => panic!("{s:?}"),
    };
    assert_eq!(o.script(), None);
    assert_eq!(o.downscript(), None);
}

#[test]
fn fds_and_fd_are_kept_as_given() {
    assert_eq!(
        parse(json!({"id": "n0", "fds": "3:4"})).unwrap().source,
        TapSource::Fds(vec!["3".into(), "4".into()])
    );
    assert_eq!(
        parse(json!({"id": "n0", "fd": "tapfd"})).unwrap().source,
        TapSource::Fd("tapfd".into())
    );
    // br= without helper= is read by nothing; QEMU accepts it.
    assert_eq!(
        parse(json!({"id": "n0", "br": "br0", "script": "no"}))
            .unwrap()
            .br
            .as_deref(),
        Some("br0")
    );
}

#[test]
fn queues_0_and_a_missing_id_are_errors() {
    // QEMU 7.2 asserts on queues=0; ferrovm refuses it.
    assert!(err(json!({"id": "n0", "queues": "0"})).starts_with("queues=0 is invalid"));
    assert_eq!(err(json!({"ifname": "t0"})), "Parameter 'id' is missing");
}
