//! Command lines as libvirt (9.x, QEMU 7.2 capabilities) writes them.

mod common;
use cli::*;
use common::run;
use serde_json::json;

#[test]
fn libvirt_q35_domain() {
    let c = run(&[
        "-name",
        "guest=vm1,debug-threads=on",
        "-S",
        "-object",
        r#"{"qom-type":"secret","id":"masterKey0","format":"raw","file":"/var/lib/libvirt/qemu/domain-1-vm1/master-key.aes"}"#,
        "-machine",
        "pc-q35-7.2,usb=off,dump-guest-core=off,memory-backend=pc.ram",
        "-accel",
        "kvm",
        "-cpu",
        "host,migratable=on",
        "-m",
        "1024",
        "-object",
        r#"{"qom-type":"memory-backend-ram","id":"pc.ram","size":1073741824}"#,
        "-overcommit",
        "mem-lock=off",
        "-smp",
        "1,sockets=1,cores=1,threads=1",
        "-uuid",
        "7b5d1c8e-2f0a-4c3e-9a51-3d0f6b2c4e11",
        "-display",
        "none",
        "-no-user-config",
        "-nodefaults",
        "-chardev",
        "socket,id=charmonitor,fd=31,server=on,wait=off",
        "-mon",
        "chardev=charmonitor,id=monitor,mode=control",
        "-rtc",
        "base=utc",
        "-no-shutdown",
        "-boot",
        "strict=on",
        "-device",
        r#"{"driver":"pcie-root-port","port":16,"chassis":1,"id":"pci.1","bus":"pcie.0","multifunction":true,"addr":"0x2"}"#,
        "-blockdev",
        r#"{"driver":"file","filename":"/var/lib/libvirt/images/vm1.qcow2","node-name":"libvirt-1-storage","auto-read-only":true,"discard":"unmap"}"#,
        "-blockdev",
        r#"{"node-name":"libvirt-1-format","read-only":false,"driver":"qcow2","file":"libvirt-1-storage","backing":null}"#,
        "-device",
        r#"{"driver":"virtio-blk-pci","bus":"pci.1","addr":"0x0","drive":"libvirt-1-format","id":"virtio-disk0","bootindex":1}"#,
        "-sandbox",
        "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
        "-msg",
        "timestamp=on",
    ]);
    assert_eq!(c.name.as_deref(), Some("vm1"));
    assert!(c.debug_threads);
    assert!(c.start_paused);
    assert_eq!(c.machine.kind, MachineKind::Q35);
    assert_eq!(c.machine.name, "pc-q35-7.2");
    assert_eq!(c.machine.memory_backend.as_deref(), Some("pc.ram"));
    assert!(!c.machine.dump_guest_core);
    assert!(c.accel_kvm);
    assert_eq!(c.cpu.model, CpuModelName::Host);
    assert_eq!(
        c.cpu.features,
        vec![CpuFeature {
            name: "migratable".into(),
            value: CpuFeatureValue::On
        }]
    );
    assert_eq!(c.memory_bytes, 1 << 30);
    assert_eq!(
        c.smp,
        Smp {
            cpus: 1,
            sockets: 1,
            dies: 1,
            cores: 1,
            threads: 1,
            max_cpus: 1
        }
    );
    assert_eq!(
        c.uuid.unwrap().to_string(),
        "7b5d1c8e-2f0a-4c3e-9a51-3d0f6b2c4e11"
    );
    assert!(c.display_none && c.no_user_config && c.nodefaults);
    assert_eq!(
        c.chardevs,
        vec![ChardevSpec {
            id: "charmonitor".into(),
            backend: ChardevBackend::Socket(SocketSpec {
                addr: SocketAddress::Fd(31),
                server: true,
                wait: false,
                nodelay: false,
            }),
            mux: false,
        }]
    );
    assert_eq!(
        c.monitors,
        vec![MonitorSpec {
            id: Some("monitor".into()),
            chardev_id: "charmonitor".into(),
            mode: MonitorMode::Control,
            pretty: false,
        }]
    );
    assert!(c.serials.is_empty());
    assert_eq!(c.rtc, RtcSpec::default());
    assert!(c.no_shutdown);
    assert_eq!(c.actions.shutdown, ShutdownAction::Pause);
    assert_eq!(c.actions.reboot, RebootAction::Reset);
    assert_eq!(c.objects.len(), 2);
    assert_eq!(c.objects[1]["size"], json!(1073741824));
    assert_eq!(c.devices.len(), 2);
    assert_eq!(c.devices[0]["driver"], "pcie-root-port");
    assert_eq!(c.devices[1]["bootindex"], json!(1));
    assert_eq!(c.blockdevs.len(), 2);
    assert_eq!(c.blockdevs[1]["backing"], serde_json::Value::Null);
    assert!(c.sandbox);
    assert!(c.msg_timestamp);
    assert!(!c.mem_lock);
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn libvirt_extras() {
    // Other pieces libvirt emits for common domains.
    let c = run(&[
        "-machine",
        "pc-q35-7.2,usb=off,vmport=off,dump-guest-core=off",
        "-accel",
        "kvm",
        "-global",
        "kvm-pit.lost_tick_policy=delay",
        "-global",
        "ICH9-LPC.disable_s3=1",
        "-no-hpet",
        "-rtc",
        "base=utc,driftfix=slew",
        "-netdev",
        r#"{"type":"tap","fd":"34","vhost":true,"vhostfd":"36","id":"hostnet0"}"#,
        "-device",
        r#"{"driver":"virtio-net-pci","netdev":"hostnet0","id":"net0","mac":"52:54:00:12:34:56","bus":"pci.1","addr":"0x0"}"#,
        "-device",
        r#"{"driver":"i6300esb","id":"watchdog0","bus":"pcie.0","addr":"0x1"}"#,
        "-watchdog-action",
        "pause",
        "-device",
        r#"{"driver":"virtio-balloon-pci","id":"balloon0","bus":"pci.4","addr":"0x0"}"#,
        "-audiodev",
        r#"{"id":"audio1","driver":"none"}"#,
        "-nodefaults",
    ]);
    assert_eq!(c.globals.len(), 2);
    assert_eq!(
        c.globals[0],
        GlobalSpec {
            driver: "kvm-pit".into(),
            property: "lost_tick_policy".into(),
            value: "delay".into()
        }
    );
    assert_eq!(c.rtc.driftfix, RtcDriftfix::Slew);
    assert_eq!(c.netdevs[0]["id"], "hostnet0");
    assert_eq!(c.actions.watchdog, WatchdogAction::Pause);
    assert_eq!(c.devices.len(), 3);
}

#[test]
fn libvirt_sysinfo_and_firmware() {
    // <sysinfo type='smbios'> with <smbios mode='sysinfo'/>, <bootmenu>,
    // <bios rebootTimeout>, a custom <loader>: as libvirt 9 writes them.
    let c = run(&[
        "-machine",
        "pc-q35-7.2,usb=off,dump-guest-core=off",
        "-bios",
        "/usr/share/seabios/bios-256k.bin",
        "-smbios",
        "type=0,vendor=LENOVO,version=6FET82WW (3.12 ),date=01/01/2012,release=20.12",
        "-smbios",
        "type=1,manufacturer=Fedora,product=Virt-Manager,version=0.9.4,serial=123456,uuid=c7a5fdbd-edaf-9455-926a-d65c16db1809,sku=1234567890,family=Red Hat",
        "-smbios",
        "type=2,manufacturer=Hewlett-Packard,product=0B4Ch,version=D,serial=CZC1065993,asset=CZC1065993,location=Upside down",
        "-smbios",
        "type=3,manufacturer=Lenovo,version=1,serial=2,asset=3,sku=4",
        "-smbios",
        "type=11,value=Hello,value=World",
        "-uuid",
        "c7a5fdbd-edaf-9455-926a-d65c16db1809",
        "-boot",
        "menu=on,splash-time=3000,reboot-timeout=0,strict=on",
        "-nodefaults",
    ]);
    assert_eq!(c.bios, Some("/usr/share/seabios/bios-256k.bin".into()));
    assert_eq!(c.boot.order, "cad");
    assert!(c.boot.menu && c.boot.strict);
    assert_eq!(
        (c.boot.splash_time, c.boot.reboot_timeout),
        (Some(3000), Some(0))
    );
    assert_eq!(c.smbios.len(), 5);
    let SmbiosOption::Type0(t0) = &c.smbios[0] else {
        panic!("{:?}", c.smbios[0])
    };
    assert_eq!(t0.version.as_deref(), Some("6FET82WW (3.12 )"));
    assert_eq!(t0.release, Some((20, 12)));
    let SmbiosOption::Type1(t1) = &c.smbios[1] else {
        panic!("{:?}", c.smbios[1])
    };
    assert_eq!(t1.family.as_deref(), Some("Red Hat"));
    assert_eq!(t1.uuid, c.uuid);
    let SmbiosOption::Type2(t2) = &c.smbios[2] else {
        panic!("{:?}", c.smbios[2])
    };
    assert_eq!(t2.location.as_deref(), Some("Upside down"));
    assert_eq!(
        c.smbios[4],
        SmbiosOption::Type11(vec![
            SmbiosOemString::Value("Hello".into()),
            SmbiosOemString::Value("World".into())
        ])
    );
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}
