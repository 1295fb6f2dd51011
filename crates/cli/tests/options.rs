//! Each option's accepted forms.

mod common;
use cli::*;
use common::{args, run};
use serde_json::json;
use std::path::PathBuf;

const MIB: u64 = 1 << 20;

#[test]
fn defaults() {
    let c = run(&[]);
    assert_eq!(c, Config::default());
    assert_eq!(c.machine.kind, MachineKind::Q35);
    assert_eq!(c.machine.name, "q35");
    assert_eq!(c.memory_bytes, 128 * MIB);
    assert_eq!(c.smp, Smp::default());
    assert_eq!(c.cpu.model, CpuModelName::Qemu64);
    assert!(c.serials.is_empty() && c.monitors.is_empty() && c.chardevs.is_empty());
    assert_eq!(c.actions, Actions::default());
    assert_eq!(c.actions.panic, PanicAction::Shutdown);
}

#[test]
fn acpi_off_and_no_acpi() {
    assert!(run(&[]).machine.acpi);
    assert!(!run(&["-no-acpi"]).machine.acpi);
    assert!(!run(&["-machine", "q35,acpi=off"]).machine.acpi);
    assert!(run(&["-machine", "q35,acpi=auto"]).machine.acpi);
    // -no-acpi is `acpi=off` in the machine options; a later acpi=on wins.
    assert!(run(&["-no-acpi", "-machine", "acpi=on"]).machine.acpi);
}

#[test]
fn add_fd() {
    let c = run(&[
        "-add-fd",
        "set=0,fd=31,opaque=serial0-source",
        "-add-fd",
        "fd=32,set=1",
    ]);
    assert_eq!(
        c.add_fds,
        [
            AddFdSpec {
                fd: Some(31),
                set: Some(0),
                opaque: Some("serial0-source".into())
            },
            AddFdSpec {
                fd: Some(32),
                set: Some(1),
                opaque: None
            },
        ]
    );
    // Missing keys are checked when the machine is set up (QEMU's parse_add_fd).
    assert_eq!(run(&["-add-fd", "opaque=x"]).add_fds[0].fd, None);
}

#[test]
fn version_and_help() {
    assert_eq!(parse(args(&["-version"])), Ok(Action::Version));
    assert_eq!(parse(args(&["--version"])), Ok(Action::Version));
    assert_eq!(parse(args(&["-h"])), Ok(Action::Help));
    assert_eq!(parse(args(&["-help"])), Ok(Action::Help));
    assert_eq!(parse(args(&["--help"])), Ok(Action::Help));
    // Options before are applied (and may fail); options after are not.
    assert_eq!(parse(args(&["-version", "-m", "foo"])), Ok(Action::Version));
    assert!(parse(args(&["-m", "foo", "-version"])).is_err());
    // Names and argument counts are checked for the whole line first, as QEMU does.
    assert!(parse(args(&["-version", "-frobnicate"])).is_err());
}

#[test]
fn double_dash() {
    let c = run(&["--m", "512", "--smp", "2", "--enable-kvm"]);
    assert_eq!(c.memory_bytes, 512 * MIB);
    assert_eq!(c.smp.cpus, 2);
    assert!(c.accel_kvm);
}

#[test]
fn accel() {
    assert!(run(&["-accel", "kvm"]).accel_kvm);
    assert!(run(&["-accel", "kvm,kernel-irqchip=on"]).accel_kvm);
    assert!(
        run(&[
            "-accel",
            "accel=kvm,dirty-ring-size=4096,kvm-shadow-mem=16M"
        ])
        .accel_kvm
    );
    assert!(run(&["-enable-kvm"]).accel_kvm);
    assert!(run(&["-machine", "accel=kvm"]).accel_kvm);
    assert!(run(&["-machine", "q35,accel=kvm:tcg"]).accel_kvm);
    assert!(!run(&[]).accel_kvm);
}

/// libvirt's second capability probe runs `-machine none,accel=tcg`:
/// machine none runs no vCPU, so it starts (a board with TCG is refused,
/// see errors.rs).
#[test]
fn tcg_starts_machine_none_only() {
    let c = run(&["-machine", "none,accel=tcg"]);
    assert!(c.accel_tcg && !c.accel_kvm);
    assert!(run(&["-accel", "tcg", "-machine", "none"]).accel_tcg);
    // The last accel= wins, as QEMU's machine options merge.
    assert!(!run(&["-machine", "none,accel=tcg", "-machine", "accel=kvm"]).accel_tcg);
    assert!(!run(&["-machine", "none,accel=kvm:tcg"]).accel_tcg);
}

/// `-accel qtest` (QEMU's iotests pass it twice); repeated `-accel`s are
/// tried in order, so the first wins.
#[test]
fn accel_qtest_and_order() {
    let c = run(&["-accel", "qtest", "-accel", "qtest"]);
    assert!(c.accel_qtest && !c.accel_kvm && !c.accel_tcg);
    assert!(run(&["-machine", "accel=qtest"]).accel_qtest);
    assert!(run(&["-M", "none", "-accel", "qtest"]).accel_qtest);
    let c = run(&["-accel", "kvm", "-accel", "qtest"]);
    assert!(c.accel_kvm && !c.accel_qtest);
    let c = run(&["-accel", "qtest", "-accel", "kvm"]);
    assert!(c.accel_qtest && !c.accel_kvm);
}

/// `-qtest` in the compatibility syntax QEMU's Python library writes
/// (`unix:path=...`, client mode), and `chardev:ID`; `-qtest-log`.
#[test]
fn qtest_chardev_and_log() {
    let c = run(&["-qtest", "unix:path=/tmp/q.sock", "-accel", "qtest"]);
    let q = c.qtest.clone().expect("qtest");
    assert_eq!(
        (q.chardev_id.as_str(), &q.log),
        ("qtest", &QtestLog::Stderr)
    );
    let chr = c.chardev("qtest").expect("chardev qtest");
    let ChardevBackend::Socket(s) = &chr.backend else {
        panic!("{chr:?}")
    };
    assert_eq!(s.addr, SocketAddress::Unix("/tmp/q.sock".into()));
    assert!(!s.server);
    let c = run(&[
        "-qtest-log",
        "none",
        "-qtest",
        "unix:/tmp/q,server=on,wait=off",
    ]);
    assert_eq!(c.qtest.unwrap().log, QtestLog::None);
    let c = run(&[
        "-chardev",
        "socket,id=qt,path=/tmp/q",
        "-qtest",
        "chardev:qt",
        "-qtest-log",
        "/tmp/log",
    ]);
    let q = c.qtest.unwrap();
    assert_eq!(q.chardev_id, "qt");
    assert_eq!(q.log, QtestLog::File("/tmp/log".into()));
    // The last -qtest counts; the earlier one creates no chardev.
    let c = run(&["-qtest", "unix:/tmp/a", "-qtest", "unix:/tmp/b"]);
    let ChardevBackend::Socket(s) = &c.chardev("qtest").unwrap().backend else {
        panic!()
    };
    assert_eq!(s.addr, SocketAddress::Unix("/tmp/b".into()));
    assert_eq!(c.chardevs.len(), 1);
}

/// Under `-accel qtest` a drive may be IDE and a CD-ROM (read-only, and
/// `readonly=off` does not change that, as in QEMU's drive_new).
#[test]
fn qtest_ide_cdrom() {
    let c = run(&[
        "-accel",
        "qtest",
        "-drive",
        "if=ide,id=cd,media=cdrom,readonly=off",
    ]);
    let d = &c.drives[0];
    assert_eq!((d.interface, d.cdrom), (DriveInterface::Ide, true));
    assert_eq!(d.opts.get("read-only"), Some(&json!("on")));
    assert!(!d.opts.contains_key("readonly"));
    // `-drive format=help` lists the formats whatever the interface (the vmm prints them).
    assert_eq!(
        run(&["-drive", "format=help"]).drives[0].format.as_deref(),
        Some("help")
    );
    let c = run(&["-drive", "file=x,format=raw", "-accel", "qtest"]);
    assert_eq!(
        (c.drives[0].interface, c.drives[0].cdrom),
        (DriveInterface::Ide, false)
    );
}

/// `-machine help` and `-accel help` print where they stand and exit, as
/// QEMU does (an earlier option's error still comes first).
#[test]
fn help_requests_print() {
    let print = |a: &[&str]| match parse(common::args(a)) {
        Ok(Action::Print(t)) => t,
        other => panic!("{a:?}: {other:?}"),
    };
    let m = print(&["-machine", "help"]);
    assert!(m.starts_with("Supported machines are:\n"), "{m}");
    assert!(m.contains(" (default)\n"));
    assert_eq!(print(&["-M", "?", "-m", "not-a-size"]).len(), m.len());
    assert_eq!(
        print(&["-accel", "help"]),
        "Accelerators supported in QEMU binary:\nkvm\n"
    );
    assert_eq!(
        print(&["-accel", "kernel-irqchip=on"]),
        print(&["-accel", "?"])
    );
}

#[test]
fn machine() {
    for (n, k) in [
        ("q35", MachineKind::Q35),
        ("pc", MachineKind::Q35),
        ("pc-q35-7.2", MachineKind::Q35),
        ("pc-q35-4.0.1", MachineKind::Q35),
        ("pc-i440fx-6.2", MachineKind::Q35),
        ("ferrovm", MachineKind::Q35),
        ("none", MachineKind::None),
    ] {
        let c = run(&["-machine", n]);
        assert_eq!((c.machine.kind, c.machine.name.as_str()), (k, n));
        let c = run(&["-M", &format!("type={n}")]);
        assert_eq!(c.machine.name, n);
    }
    let c = run(&[
        "-M",
        "q35,usb=off,dump-guest-core=off,vmport=off,smm=off,kernel_irqchip=on,hpet=off,mem-merge=off",
    ]);
    assert!(!c.machine.dump_guest_core && !c.machine.mem_merge);
    // Repeated -machine options merge key by key; the last type wins.
    let c = run(&["-M", "pc", "-M", "accel=kvm", "-M", "q35"]);
    assert_eq!(c.machine.name, "q35");
    assert!(c.accel_kvm);
    // The kernel can come from machine properties.
    let c = run(&["-M", "q35,kernel=/k,initrd=/i,append=a b"]);
    assert_eq!(c.kernel, Some(PathBuf::from("/k")));
    assert_eq!(c.initrd, Some(PathBuf::from("/i")));
    assert_eq!(c.append, "a b");
}

#[test]
fn cpu() {
    let c = run(&["-cpu", "max"]);
    assert_eq!(c.cpu.model, CpuModelName::Max);
    let c = run(&["-cpu", "host,+x2apic,-pmu,kvm=off"]);
    assert_eq!(c.cpu.features.len(), 3);
    assert_eq!(c.cpu.features[2].value, CpuFeatureValue::Off);
    assert_eq!(
        run(&["-cpu", "qemu64", "-cpu", "host"]).cpu.model,
        CpuModelName::Host
    );
}

#[test]
fn memory() {
    let m = |a: &str| run(&["-m", a]).memory_bytes;
    assert_eq!(m("256"), 256 * MIB);
    assert_eq!(m("256M"), 256 * MIB);
    assert_eq!(m("256m"), 256 * MIB);
    assert_eq!(m("1G"), 1 << 30);
    assert_eq!(m("1.5G"), 3 << 29);
    assert_eq!(m("size=1G"), 1 << 30);
    assert_eq!(m("2048k"), 2 * MIB);
    assert_eq!(m("1k"), 8192); // rounded up to 8 KiB
    assert_eq!(m("1T"), 1 << 40);
    let c = run(&["-m", "size=1G,slots=4,maxmem=4G"]);
    assert_eq!(c.memory_slots, 4);
    assert_eq!(c.memory_max_bytes, Some(4 << 30));
    let c = run(&["-m", "256,maxmem=1G"]);
    assert_eq!(c.memory_max_bytes, Some(1 << 30));
    // Merged key by key; last size wins.
    let c = run(&["-m", "256", "-m", "maxmem=2G", "-m", "512"]);
    assert_eq!(c.memory_bytes, 512 * MIB);
    assert_eq!(c.memory_max_bytes, Some(2 << 30));
    // Hex is accepted, with QEMU's deprecation warning for the implied suffix.
    let c = run(&["-m", "0x100"]);
    assert_eq!(c.memory_bytes, 256 * MIB);
    assert_eq!(
        c.warnings,
        vec!["-m 0x100: warning: Using a multiplier suffix on hex numbers is deprecated: 0x100M"]
    );
}

#[test]
fn smp() {
    let c = run(&["-smp", "4"]);
    assert_eq!((c.smp.sockets, c.smp.cores, c.smp.max_cpus), (1, 4, 4));
    let c = run(&["-smp", "cpus=4,sockets=2"]);
    assert_eq!((c.smp.sockets, c.smp.cores, c.smp.threads), (2, 2, 1));
    let c = run(&["-smp", "4,sockets=2,cores=2,threads=1,maxcpus=4"]);
    assert_eq!(c.smp.max_cpus, 4);
    let c = run(&["-smp", "2,maxcpus=8,sockets=2,dies=2,cores=2,threads=1"]);
    assert_eq!((c.smp.cpus, c.smp.dies, c.smp.max_cpus), (2, 2, 8));
    // Machine types before 6.2 prefer sockets.
    let c = run(&["-M", "pc-q35-6.1", "-smp", "4"]);
    assert_eq!((c.smp.sockets, c.smp.cores), (4, 1));
    let c = run(&["-M", "pc-q35-6.2", "-smp", "4"]);
    assert_eq!((c.smp.sockets, c.smp.cores), (1, 4));
    // Merged key by key.
    let c = run(&["-smp", "8", "-smp", "sockets=2"]);
    assert_eq!((c.smp.cpus, c.smp.sockets, c.smp.cores), (8, 2, 4));
    // Zero means omitted, with a warning.
    let c = run(&["-smp", "0"]);
    assert_eq!(c.smp.cpus, 1);
    assert_eq!(c.warnings.len(), 1);
    assert!(c.warnings[0].contains("Deprecated CPU topology"));
    // clusters=1 is accepted (x86 has no clusters).
    let c = run(&["-smp", "2,clusters=1"]);
    assert_eq!(c.smp.cpus, 2);
    assert_eq!(run(&["-M", "pc", "-smp", "255"]).smp.cpus, 255);
    assert_eq!(run(&["-smp", "288"]).smp.cpus, 288);
}

#[test]
fn kernel_initrd_append() {
    let c = run(&[
        "-kernel",
        "/boot/vmlinuz",
        "-initrd",
        "/boot/initrd",
        "-append",
        "console=ttyS0 quiet",
    ]);
    assert_eq!(c.kernel, Some(PathBuf::from("/boot/vmlinuz")));
    assert_eq!(c.initrd, Some(PathBuf::from("/boot/initrd")));
    assert_eq!(c.append, "console=ttyS0 quiet");
    // Arguments are taken verbatim, even when they start with a dash.
    assert_eq!(run(&["-kernel", "k", "-append", "-x,y"]).append, "-x,y");
}

#[test]
fn serial() {
    let c = run(&["-serial", "stdio"]);
    assert_eq!(
        c.serials,
        vec![SerialSpec {
            chardev_id: "serial0".into()
        }]
    );
    assert_eq!(
        c.chardev("serial0").unwrap().backend,
        ChardevBackend::Stdio { signal: true }
    );

    let c = run(&[
        "-serial",
        "null",
        "-serial",
        "file:/tmp/s1",
        "-serial",
        "none",
    ]);
    assert_eq!(c.serials.len(), 2);
    assert_eq!(c.chardev("serial0").unwrap().backend, ChardevBackend::Null);
    assert_eq!(
        c.chardev("serial1").unwrap().backend,
        ChardevBackend::File {
            path: "/tmp/s1".into(),
            append: false
        }
    );

    let c = run(&[
        "-chardev",
        "socket,id=ser,path=/tmp/ser,server=on,wait=off",
        "-serial",
        "chardev:ser",
    ]);
    assert_eq!(
        c.serials,
        vec![SerialSpec {
            chardev_id: "ser".into()
        }]
    );
    // The chardev may come after the -serial that uses it.
    let c = run(&["-serial", "chardev:c", "-chardev", "null,id=c"]);
    assert_eq!(c.serials[0].chardev_id, "c");

    let c = run(&["-serial", "mon:stdio"]);
    let chr = c.chardev("serial0").unwrap();
    assert!(chr.mux);
    assert_eq!(chr.backend, ChardevBackend::Stdio { signal: false });
    assert_eq!(c.monitors[0].mode, MonitorMode::Readline);
    assert_eq!(c.monitors[0].chardev_id, "serial0");

    let c = run(&[
        "-serial",
        "unix:/tmp/s,server=on,wait=off",
        "-serial",
        "tcp::4555,server=on,wait=off",
    ]);
    assert_eq!(c.serials.len(), 2);
    assert!(matches!(
        &c.chardev("serial1").unwrap().backend,
        ChardevBackend::Socket(SocketSpec {
            addr: SocketAddress::Tcp { port: 4555, .. },
            ..
        })
    ));
}

#[test]
fn chardev() {
    let c = run(&[
        "-chardev",
        "stdio,id=s0,signal=off",
        "-chardev",
        "null,id=n0",
        "-chardev",
        "file,id=f0,path=/tmp/log,append=on",
        "-chardev",
        "socket,id=u0,path=/tmp/u0,server=on,wait=off",
        "-chardev",
        "socket,id=u1,path=/tmp/u1,server,nowait",
        "-chardev",
        "socket,id=t0,host=127.0.0.1,port=4444,server=on,wait=off,nodelay=on",
        "-chardev",
        "socket,id=t1,host=localhost,port=4445",
        "-chardev",
        "socket,id=fd0,fd=3,server=on,wait=off",
        "-chardev",
        "null,id=mx,mux=on",
    ]);
    assert_eq!(c.chardevs.len(), 9);
    assert_eq!(
        c.chardevs[0].backend,
        ChardevBackend::Stdio { signal: false }
    );
    let sock = |i: usize| match &c.chardevs[i].backend {
        ChardevBackend::Socket(s) => s.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(sock(3).addr, SocketAddress::Unix("/tmp/u0".into()));
    assert!(sock(3).server && !sock(3).wait);
    assert_eq!(sock(4), sock(3).clone_with_path("/tmp/u1"));
    assert!(sock(5).nodelay);
    assert_eq!(
        sock(6).addr,
        SocketAddress::Tcp {
            host: "localhost".into(),
            port: 4445
        }
    );
    assert!(!sock(6).server && !sock(6).wait);
    assert_eq!(sock(7).addr, SocketAddress::Fd(3));
    assert!(c.chardevs[8].mux);
    // The short-form flags warn as in QEMU 7.2.
    assert_eq!(c.warnings.len(), 2);
    assert!(c.warnings[0].starts_with(
        "-chardev socket,id=u1,path=/tmp/u1,server,nowait: warning: short-form boolean option 'server' deprecated"
    ));
}

trait WithPath {
    fn clone_with_path(&self, p: &str) -> SocketSpec;
}
impl WithPath for SocketSpec {
    fn clone_with_path(&self, p: &str) -> SocketSpec {
        SocketSpec {
            addr: SocketAddress::Unix(p.into()),
            ..self.clone()
        }
    }
}

#[test]
fn mon() {
    let c = run(&[
        "-chardev",
        "socket,id=m,path=/tmp/m,server=on,wait=off",
        "-mon",
        "chardev=m,mode=control,pretty=on",
    ]);
    assert_eq!(
        c.monitors,
        vec![MonitorSpec {
            id: None,
            chardev_id: "m".into(),
            mode: MonitorMode::Control,
            pretty: true
        }]
    );
    let c = run(&["-chardev", "null,id=m", "-mon", "m"]);
    assert_eq!(c.monitors[0].mode, MonitorMode::Readline);
    // A mux chardev may serve several front ends.
    let c = run(&[
        "-chardev",
        "stdio,id=c,mux=on",
        "-serial",
        "chardev:c",
        "-mon",
        "chardev=c",
    ]);
    assert_eq!(c.monitors.len(), 1);
    assert_eq!(c.serials.len(), 1);
}

#[test]
fn qmp() {
    for spec in [
        "unix:/tmp/q.sock,server=on,wait=off",
        "unix:/tmp/q.sock,server,nowait",
        "unix:path=/tmp/q.sock,server=on,wait=off",
    ] {
        let c = run(&["-qmp", spec]);
        assert_eq!(
            c.chardevs,
            vec![ChardevSpec {
                id: "compat_monitor0".into(),
                backend: ChardevBackend::Socket(SocketSpec {
                    addr: SocketAddress::Unix("/tmp/q.sock".into()),
                    server: true,
                    wait: false,
                    nodelay: false
                }),
                mux: false
            }],
            "{spec}"
        );
        assert_eq!(
            c.monitors,
            vec![MonitorSpec {
                id: None,
                chardev_id: "compat_monitor0".into(),
                mode: MonitorMode::Control,
                pretty: false
            }]
        );
        // The compatibility syntax does not warn about short-form flags (as QEMU).
        assert!(c.warnings.is_empty());
    }
    let c = run(&[
        "-qmp",
        "tcp:localhost:4444,server=on,wait=off",
        "-qmp",
        "stdio",
        "-qmp-pretty",
        "unix:/tmp/p,server=on,wait=off",
    ]);
    assert_eq!(c.monitors.len(), 3);
    assert_eq!(c.chardevs[1].id, "compat_monitor1");
    assert_eq!(
        c.chardevs[1].backend,
        ChardevBackend::Stdio { signal: true }
    );
    assert!(c.monitors[2].pretty);
    assert_eq!(c.monitors[2].chardev_id, "compat_monitor2");
    let c = run(&["-chardev", "null,id=q", "-qmp", "chardev:q"]);
    assert_eq!(c.monitors[0].chardev_id, "q");
    // -monitor: readline; none adds nothing.
    let c = run(&[
        "-monitor",
        "unix:/tmp/h,server=on,wait=off",
        "-monitor",
        "none",
    ]);
    assert_eq!(c.monitors.len(), 1);
    assert_eq!(c.monitors[0].mode, MonitorMode::Readline);
}

#[test]
fn runstate() {
    let c = run(&["-S", "-no-shutdown", "-no-reboot"]);
    assert!(c.start_paused && c.no_shutdown && c.no_reboot);
    assert_eq!(c.actions.shutdown, ShutdownAction::Pause);
    assert_eq!(c.actions.reboot, RebootAction::Shutdown);

    let c = run(&[
        "-action",
        "reboot=shutdown,shutdown=pause,panic=none,watchdog=inject-nmi",
    ]);
    assert_eq!(
        c.actions,
        Actions {
            reboot: RebootAction::Shutdown,
            shutdown: ShutdownAction::Pause,
            panic: PanicAction::None,
            watchdog: WatchdogAction::InjectNmi
        }
    );
    // Command-line order decides.
    let c = run(&["-no-reboot", "-action", "reboot=reset"]);
    assert_eq!(c.actions.reboot, RebootAction::Reset);
    let c = run(&["-action", "reboot=reset", "-no-reboot"]);
    assert_eq!(c.actions.reboot, RebootAction::Shutdown);
    let c = run(&["-watchdog-action", "debug", "-action", "panic=exit-failure"]);
    assert_eq!(c.actions.watchdog, WatchdogAction::Debug);
    assert_eq!(c.actions.panic, PanicAction::ExitFailure);
    for w in WatchdogAction::ALL {
        assert_eq!(run(&["-watchdog-action", w.as_str()]).actions.watchdog, *w);
    }
}

#[test]
fn name_uuid() {
    let c = run(&["-name", "vm0"]);
    assert_eq!(c.name.as_deref(), Some("vm0"));
    let c = run(&["-name", "guest=a,,b,process=qemu-a,debug-threads=on"]);
    assert_eq!(c.name.as_deref(), Some("a,b"));
    assert_eq!(c.process_name.as_deref(), Some("qemu-a"));
    assert!(c.debug_threads);
    let c = run(&["-name", "a", "-name", "process=p"]);
    assert_eq!(
        (c.name.as_deref(), c.process_name.as_deref()),
        (Some("a"), Some("p"))
    );
    let c = run(&["-uuid", "12345678-1234-1234-1234-1234567890AB"]);
    let u = c.uuid.unwrap();
    assert_eq!(u.to_string(), "12345678-1234-1234-1234-1234567890ab");
    assert_eq!(u.as_bytes()[..4], [0x12, 0x34, 0x56, 0x78]);
}

#[test]
fn rtc() {
    let c = run(&["-rtc", "base=localtime,clock=vm,driftfix=slew"]);
    assert_eq!(
        c.rtc,
        RtcSpec {
            base: RtcBase::Localtime,
            clock: RtcClock::Vm,
            driftfix: RtcDriftfix::Slew
        }
    );
    assert_eq!(
        run(&["-rtc", "base=2006-06-17T16:01:21"]).rtc.base,
        RtcBase::Datetime(1150560081)
    );
    assert_eq!(
        run(&["-rtc", "base=2006-06-17"]).rtc.base,
        RtcBase::Datetime(1150502400)
    );
    assert_eq!(run(&["-rtc", "clock=rt"]).rtc.clock, RtcClock::Rt);
}

#[test]
fn display_and_defaults() {
    let c = run(&["-display", "none", "-display", "none"]);
    assert!(c.display_none && !c.nographic);
    assert!(c.serials.is_empty());
    let c = run(&["-vga", "none"]);
    assert!(!c.display_none);

    // -nographic: serial0 on stdio unless -nodefaults or -serial.
    let c = run(&["-nographic"]);
    assert!(c.nographic && c.display_none);
    assert_eq!(
        c.serials,
        vec![SerialSpec {
            chardev_id: "serial0".into()
        }]
    );
    assert_eq!(
        c.chardev("serial0").unwrap().backend,
        ChardevBackend::Stdio { signal: true }
    );
    assert!(c.monitors.is_empty());
    assert!(run(&["-nographic", "-nodefaults"]).serials.is_empty());
    let c = run(&["-nographic", "-serial", "null"]);
    assert_eq!(c.chardev("serial0").unwrap().backend, ChardevBackend::Null);
    assert!(run(&["-nographic", "-serial", "none"]).serials.is_empty());
    // -nographic -daemonize is fine once nothing defaults to stdio.
    assert!(run(&["-nographic", "-daemonize", "-nodefaults"]).daemonize);
}

#[test]
fn process_control() {
    let c = run(&[
        "-daemonize",
        "-pidfile",
        "/run/vm.pid",
        "-nodefaults",
        "-no-user-config",
    ]);
    assert!(c.daemonize && c.nodefaults && c.no_user_config);
    assert_eq!(c.pidfile, Some(PathBuf::from("/run/vm.pid")));
}

#[test]
fn drive() {
    let c = run(&[
        "-drive",
        "file=/img/a,,b.qcow2,if=virtio,format=qcow2,id=d0,cache=none,file.locking=off,snapshot",
    ]);
    let d = &c.drives[0];
    assert_eq!(d.file, Some(PathBuf::from("/img/a,b.qcow2")));
    assert_eq!(d.interface, DriveInterface::Virtio);
    assert_eq!(d.format.as_deref(), Some("qcow2"));
    assert_eq!(d.id.as_deref(), Some("d0"));
    assert_eq!(d.opts["file.locking"], "off");
    assert_eq!(d.opts["snapshot"], "on");
    assert_eq!(d.opts["cache"], "none");
    let c = run(&["-drive", "if=none,id=d1,file=/x,node-name=n1"]);
    assert_eq!(c.drives[0].interface, DriveInterface::None);
}

#[test]
fn blockdev() {
    let c = run(&[
        "-blockdev",
        "driver=qcow2,node-name=disk,file.driver=file,file.filename=/img/x,,y.qcow2,read-only=on",
    ]);
    assert_eq!(
        c.blockdevs[0],
        json!({
            "driver": "qcow2",
            "node-name": "disk",
            "file": {"driver": "file", "filename": "/img/x,y.qcow2"},
            "read-only": "on"
        })
    );
    let c = run(&[
        "-blockdev",
        r#"{"driver":"raw","node-name":"r","file":{"driver":"file","filename":"/x"}}"#,
    ]);
    assert_eq!(c.blockdevs[0]["file"]["filename"], "/x");
    let c = run(&[
        "-blockdev",
        "driver=quorum,node-name=q,children.0=a,children.1=b,vote-threshold=1",
    ]);
    assert_eq!(c.blockdevs[0]["children"], json!(["a", "b"]));
}

#[test]
fn device() {
    let c = run(&[
        "-device",
        "virtio-blk-pci,drive=d0,id=vblk0,bootindex=1,disable-legacy=on,serial=a,,b",
    ]);
    assert_eq!(
        c.devices[0],
        json!({"driver": "virtio-blk-pci", "drive": "d0", "id": "vblk0", "bootindex": "1",
               "disable-legacy": "on", "serial": "a,b"})
    );
    let c = run(&["-device", "driver=i6300esb,id=wd"]);
    assert_eq!(c.devices[0]["driver"], "i6300esb");
    let c = run(&["-device", r#"{"driver":"pvpanic","ioport":1285}"#]);
    assert_eq!(c.devices[0]["ioport"], json!(1285));
    // A device's chardev property counts as a front end.
    let c = run(&["-chardev", "null,id=c", "-device", "isa-serial,chardev=c"]);
    assert_eq!(c.devices.len(), 1);
}

#[test]
fn netdev_object() {
    let c = run(&[
        "-netdev",
        "tap,id=n0,ifname=tap0,script=no,downscript=no,vhost=on",
    ]);
    assert_eq!(
        c.netdevs[0],
        json!({"type": "tap", "id": "n0", "ifname": "tap0", "script": "no", "downscript": "no", "vhost": "on"})
    );
    let c = run(&["-netdev", r#"{"type":"tap","id":"n1","fd":"4"}"#]);
    assert_eq!(c.netdevs[0]["fd"], "4");
    let c = run(&["-object", "memory-backend-ram,id=mem0,size=1G"]);
    assert_eq!(
        c.objects[0],
        json!({"qom-type": "memory-backend-ram", "id": "mem0", "size": "1G"})
    );
    let c = run(&["-object", "qom-type=iothread,id=io0"]);
    assert_eq!(c.objects[0]["qom-type"], "iothread");
    let c = run(&[
        "-object",
        r#"{"qom-type":"rng-random","id":"rng0","filename":"/dev/urandom"}"#,
    ]);
    assert_eq!(c.objects[0]["filename"], "/dev/urandom");
}

#[test]
fn global() {
    let c = run(&[
        "-global",
        "kvm-pit.lost_tick_policy=delay",
        "-global",
        "driver=isa-serial,property=x,value=y",
    ]);
    assert_eq!(
        c.globals[1],
        GlobalSpec {
            driver: "isa-serial".into(),
            property: "x".into(),
            value: "y".into()
        }
    );
}

#[test]
fn tolerated() {
    let c = run(&[
        "-msg",
        "timestamp=on",
        "-overcommit",
        "mem-lock=on",
        "-sandbox",
        "off",
        "-boot",
        "strict=on",
        "-boot",
        "order=c,menu=off",
        "-no-hpet",
        "-audiodev",
        "none,id=a0",
    ]);
    assert!(c.msg_timestamp && c.mem_lock && !c.sandbox);
    assert!(run(&["-sandbox", "on"]).sandbox);
}

#[test]
fn bios_and_data_dirs() {
    let c = run(&[]);
    assert_eq!((c.bios.as_ref(), c.data_dirs.len()), (None, 0));
    assert!(!c.list_data_dirs);
    let c = run(&["-bios", "bios.bin", "-bios", "/opt/fw/bios-256k.bin"]);
    assert_eq!(c.bios, Some(PathBuf::from("/opt/fw/bios-256k.bin")));
    // QEMU stores -bios as the machine's firmware property.
    let c = run(&["-machine", "q35,firmware=my.bin"]);
    assert_eq!(c.bios, Some(PathBuf::from("my.bin")));
    // -L: command-line order, a repeated directory once (qemu_add_data_dir).
    let c = run(&["-L", "/a", "-L", "b", "-L", "/a"]);
    assert_eq!(c.data_dirs, vec![PathBuf::from("/a"), PathBuf::from("b")]);
    assert!(!c.list_data_dirs);
    let c = run(&["-L", "/a", "-L", "help"]);
    assert!(c.list_data_dirs);
    assert_eq!(c.data_dirs, vec![PathBuf::from("/a")]);
    assert!(run(&["-L", "?"]).list_data_dirs);
    // QEMU keeps 16 directories and drops the rest silently.
    let many: Vec<String> = (0..20).map(|i| format!("/d{i}")).collect();
    let mut a: Vec<&str> = Vec::new();
    for d in &many {
        a.extend(["-L", d.as_str()]);
    }
    let c = run(&a);
    assert_eq!(c.data_dirs.len(), 16);
    assert_eq!(c.data_dirs[15], PathBuf::from("/d15"));
    // `-L help` exits before QEMU validates -boot (qemu-system-x86_64 -L help -boot order=z: exit 0).
    assert!(run(&["-L", "help", "-boot", "order=z"]).list_data_dirs);
}

#[test]
fn boot() {
    let d = run(&[]).boot;
    assert_eq!(d, BootOptions::default());
    assert_eq!(
        (d.order.as_str(), d.once.as_deref(), d.menu, d.strict),
        ("cad", None, false, false)
    );
    assert_eq!(
        (d.splash_time, d.reboot_timeout, d.splash.as_deref()),
        (None, None, None)
    );
    // The legacy form: the implied key is order.
    assert_eq!(run(&["-boot", "dc"]).boot.order, "dc");
    let c = run(&[
        "-boot",
        "order=nc,once=d,menu=on,splash=logo.bmp,splash-time=3000,reboot-timeout=-1,strict=on",
    ]);
    assert_eq!(
        c.boot,
        BootOptions {
            order: "nc".into(),
            once: Some("d".into()),
            menu: true,
            splash: Some("logo.bmp".into()),
            splash_time: Some(3000),
            reboot_timeout: Some(-1),
            strict: true,
        }
    );
    // Repeated -boot options merge; a later key wins (and an invalid order
    // overridden later is fine, as in QEMU).
    let c = run(&["-boot", "order=z", "-boot", "menu=yes", "-boot", "order=d"]);
    assert_eq!((c.boot.order.as_str(), c.boot.menu), ("d", true));
    // QAPI integers: hex and the limits.
    let c = run(&["-boot", "splash-time=0xffff,reboot-timeout=65535"]);
    assert_eq!(
        (c.boot.splash_time, c.boot.reboot_timeout),
        (Some(65535), Some(65535))
    );
    assert_eq!(
        run(&["-boot", "order=abcdefghijklmnop"]).boot.order.len(),
        16
    );
    assert_eq!(run(&["-boot", "order="]).boot.order, "");
    assert!(c.warnings.is_empty());
}

#[test]
fn smbios() {
    assert!(run(&[]).smbios.is_empty());
    let c = run(&[
        "-smbios",
        "file=/tmp/t1.bin",
        "-smbios",
        "type=0,vendor=V,version=1.0,date=01/02/2023,release=2.7,uefi=on",
        "-smbios",
        "type=1,manufacturer=M,product=P,version=v,serial=S,uuid=c7a5fdbd-edaf-9455-926a-d65c16db1809,sku=K,family=F",
        "-smbios",
        "type=2,manufacturer=BM,product=BP,version=BV,serial=BS,asset=BA,location=BL",
        "-smbios",
        "type=3,manufacturer=CM,version=CV,serial=CS,asset=CA,sku=CK",
        "-smbios",
        "type=4,sock_pfx=Socket,manufacturer=PM,version=PV,serial=PS,asset=PA,part=PP,max-speed=3000,current-speed=0x9c4,processor-id=0x12345678",
        "-smbios",
        "type=11,value=one,path=/tmp/oem,value=a,,b",
        "-smbios",
        "type=17,loc_pfx=Slot,bank=B0,manufacturer=DM,serial=DS,asset=DA,part=DP,speed=2400",
    ]);
    assert_eq!(c.smbios.len(), 8);
    assert_eq!(
        c.smbios[0],
        SmbiosOption::File(PathBuf::from("/tmp/t1.bin"))
    );
    assert_eq!(
        c.smbios[1],
        SmbiosOption::Type0(SmbiosType0 {
            vendor: Some("V".into()),
            version: Some("1.0".into()),
            date: Some("01/02/2023".into()),
            release: Some((2, 7)),
            uefi: Some(true),
        })
    );
    let uuid: Uuid = "c7a5fdbd-edaf-9455-926a-d65c16db1809".parse().unwrap();
    assert_eq!(
        c.smbios[2],
        SmbiosOption::Type1(SmbiosType1 {
            manufacturer: Some("M".into()),
            product: Some("P".into()),
            version: Some("v".into()),
            serial: Some("S".into()),
            uuid: Some(uuid),
            sku: Some("K".into()),
            family: Some("F".into()),
        })
    );
    // type=1,uuid= is QEMU's machine UUID too.
    assert_eq!(c.uuid, Some(uuid));
    let SmbiosOption::Type2(t2) = &c.smbios[3] else {
        panic!("{:?}", c.smbios[3])
    };
    assert_eq!(
        (t2.asset.as_deref(), t2.location.as_deref()),
        (Some("BA"), Some("BL"))
    );
    let SmbiosOption::Type3(t3) = &c.smbios[4] else {
        panic!("{:?}", c.smbios[4])
    };
    assert_eq!(
        (t3.manufacturer.as_deref(), t3.sku.as_deref()),
        (Some("CM"), Some("CK"))
    );
    assert_eq!(
        c.smbios[5],
        SmbiosOption::Type4(SmbiosType4 {
            sock_pfx: Some("Socket".into()),
            manufacturer: Some("PM".into()),
            version: Some("PV".into()),
            serial: Some("PS".into()),
            asset: Some("PA".into()),
            part: Some("PP".into()),
            max_speed: Some(3000),
            current_speed: Some(2500),
            processor_id: Some(0x1234_5678),
        })
    );
    assert_eq!(
        c.smbios[6],
        SmbiosOption::Type11(vec![
            SmbiosOemString::Value("one".into()),
            SmbiosOemString::Path(PathBuf::from("/tmp/oem")),
            SmbiosOemString::Value("a,b".into()),
        ])
    );
    let SmbiosOption::Type17(t17) = &c.smbios[7] else {
        panic!("{:?}", c.smbios[7])
    };
    assert_eq!(
        (t17.loc_pfx.as_deref(), t17.speed),
        (Some("Slot"), Some(2400))
    );
    assert_eq!(c.smbios_locations[0], "-smbios file=/tmp/t1.bin");
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);

    // Omitted keys stay None: the builder applies QEMU's per-option resets.
    assert_eq!(
        run(&["-smbios", "type=0"]).smbios,
        vec![SmbiosOption::Type0(SmbiosType0::default())]
    );
    // Accepted by QEMU 7.2 as C reads them: %hhu wraps, a third part is ignored,
    // speed=70000 is stored in 16 bits, negative numbers wrap.
    let SmbiosOption::Type0(t0) = &run(&["-smbios", "type=0,release=256.1.9"]).smbios[0] else {
        panic!()
    };
    assert_eq!(t0.release, Some((0, 1)));
    let SmbiosOption::Type17(t17) = &run(&["-smbios", "type=17,speed=70000"]).smbios[0] else {
        panic!()
    };
    assert_eq!(t17.speed, Some(4464)); // 70000 - 65536
    let SmbiosOption::Type4(t4) = &run(&["-smbios", "type=4,processor-id=-1"]).smbios[0] else {
        panic!()
    };
    assert_eq!(t4.processor_id, Some(u64::MAX));
    // type= is read with strtoul: hex, and the last one wins.
    assert!(matches!(
        run(&["-smbios", "type=0x1,product=p"]).smbios[0],
        SmbiosOption::Type1(_)
    ));
    assert!(matches!(
        run(&["-smbios", "type=1,type=2,location=x"]).smbios[0],
        SmbiosOption::Type2(_)
    ));
    // The later of -uuid and type=1,uuid= is the machine UUID.
    let c = run(&[
        "-smbios",
        "type=1,uuid=c7a5fdbd-edaf-9455-926a-d65c16db1809",
        "-uuid",
        "12345678-1234-1234-1234-1234567890ab",
    ]);
    assert_eq!(
        c.uuid.unwrap().to_string(),
        "12345678-1234-1234-1234-1234567890ab"
    );
    // A short-form flag is QEMU's deprecation warning, and the string "on".
    let c = run(&["-smbios", "type=1,manufacturer"]);
    assert_eq!(
        c.warnings,
        vec!["-smbios type=1,manufacturer: warning: short-form boolean option 'manufacturer' deprecated; please use manufacturer=on instead".to_string()]
    );
    let SmbiosOption::Type1(t1) = &c.smbios[0] else {
        panic!()
    };
    assert_eq!(t1.manufacturer.as_deref(), Some("on"));
}

#[test]
fn debugcon() {
    // QEMU's -debugcon: chardev "debugcon" plus an isa-debugcon device on it.
    let c = run(&["-debugcon", "file:/tmp/seabios.log"]);
    assert_eq!(
        c.chardev("debugcon").unwrap().backend,
        ChardevBackend::File {
            path: "/tmp/seabios.log".into(),
            append: false
        }
    );
    assert_eq!(
        c.devices,
        vec![json!({"driver": "isa-debugcon", "chardev": "debugcon"})]
    );
    let c = run(&["-chardev", "null,id=x", "-debugcon", "chardev:x"]);
    assert_eq!(
        c.devices,
        vec![json!({"driver": "isa-debugcon", "chardev": "x"})]
    );
    assert!(run(&["-debugcon", "none"]).devices.is_empty());
}
