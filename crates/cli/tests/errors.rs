//! Every rejection is one line naming the option and the offending key or
//! value, worded as QEMU 7.2 words it where QEMU has an equivalent.

mod common;
use common::err;

fn check(cases: &[(&[&str], &str)]) {
    for (args, want) in cases {
        assert_eq!(err(args), *want, "{args:?}");
    }
}

#[test]
fn option_level() {
    check(&[
        (&["-frobnicate"], "-frobnicate: invalid option"),
        (&["--frobnicate"], "--frobnicate: invalid option"),
        (&["-"], "-: invalid option"),
        (&["--m=256"], "--m=256: invalid option"),
        (&["-vnc", ":0"], "-vnc: option is not supported by ferrovm"),
        (
            &["-hda", "x.img"],
            "-hda: option is not supported by ferrovm",
        ),
        (&["-net", "nic"], "-net: option is not supported by ferrovm"),
        (&["-m"], "-m: requires an argument"),
        (&["-S", "-kernel"], "-kernel: requires an argument"),
        (
            &["disk.img"],
            "disk.img: positional disk images (QEMU's -hda shorthand) are not supported by ferrovm",
        ),
        (
            &["-S", ""],
            "'': positional disk images (QEMU's -hda shorthand) are not supported by ferrovm",
        ),
    ]);
}

#[test]
fn machine() {
    check(&[
        (
            &["-machine", "foo"],
            "-machine foo: unsupported machine type 'foo' (supported: q35, pc, pc-q35-X.Y, pc-i440fx-X.Y, ferrovm, none; see -machine help)",
        ),
        (&["-M", "microvm"], "-M microvm: machine type 'microvm' is not supported by ferrovm"),
        (&["-M", "q35,bogus=1"], "-M q35,bogus=1: Invalid parameter 'bogus'"),
        (&["-M", "q35,usb"], "-M q35,usb: Expected '=' after parameter 'usb'"),
        (&["-M", "q35,usb=on"], "-M q35,usb=on: 'usb=on' is not supported by ferrovm"),
        (&["-M", "q35,usb=maybe"], "-M q35,usb=maybe: Parameter 'usb' expects 'on' or 'off'"),
        (
            &["-M", "q35,kernel_irqchip=split"],
            "-M q35,kernel_irqchip=split: 'kernel_irqchip=split' is not supported by ferrovm",
        ),
        (
            &["-M", "q35,kernel-irqchip=off"],
            "-M q35,kernel-irqchip=off: 'kernel-irqchip=off' is not supported by ferrovm",
        ),
        (&["-M", "q35,smm=on"], "-M q35,smm=on: 'smm=on' is not supported by ferrovm"),
        (&["-M", "q35,vmport=on"], "-M q35,vmport=on: 'vmport=on' is not supported by ferrovm"),
        (&["-M", "q35,acpi=maybe"], "-M q35,acpi=maybe: Parameter 'acpi' does not accept value 'maybe'"),
        (&["-add-fd", "fd=3,bogus=1"], "-add-fd fd=3,bogus=1: Invalid parameter 'bogus'"),
        (&["-M", "q35,hpet=on"], "-M q35,hpet=on: 'hpet=on' is not supported by ferrovm"),
        (
            &["-M", "q35,accel=tcg"],
            "-M q35,accel=tcg: accelerator 'tcg' is not supported (ferrovm runs on KVM only)",
        ),
        (
            &["-machine", "none,accel=tcg", "-machine", "q35"],
            "-machine none,accel=tcg: accelerator 'tcg' is not supported (ferrovm runs on KVM only)",
        ),
        (
            &["-M", "q35,max-ram-below-4g=1G"],
            "-M q35,max-ram-below-4g=1G: Invalid parameter 'max-ram-below-4g'",
        ),
        // The last type is the one checked.
        (&["-M", "q35", "-M", "foo,accel=kvm"], "-M foo,accel=kvm: unsupported machine type 'foo' (supported: q35, pc, pc-q35-X.Y, pc-i440fx-X.Y, ferrovm, none; see -machine help)"),
        (
            &["-M", "none", "-smp", "2"],
            "-smp 2: Invalid SMP CPUs 2. The max CPUs supported by machine 'none' is 1",
        ),
    ]);
}

#[test]
fn accel_cpu() {
    check(&[
        (&["-accel", "tcg"], "-accel tcg: accelerator 'tcg' is not supported (ferrovm runs on KVM only)"),
        (&["-accel", "hvf"], "-accel hvf: accelerator 'hvf' is not supported (ferrovm runs on KVM only)"),
        (&["-accel", "foo"], "-accel foo: invalid accelerator foo"),
        (&["-accel", "kvm,bogus=1"], "-accel kvm,bogus=1: Invalid parameter 'bogus'"),
        (
            &["-accel", "kvm,kernel-irqchip=split"],
            "-accel kvm,kernel-irqchip=split: 'kernel-irqchip=split' is not supported by ferrovm",
        ),
        (&["-accel", "qtest", "-machine", "accel=kvm"], "The -accel and \"-machine accel=\" options are incompatible"),
        (&["-enable-kvm", "-accel", "kvm"], "The -accel and \"-machine accel=\" options are incompatible"),
        (&["-accel", "qtest", "-qtest", "chardev:nope"], "-qtest chardev:nope: Failed to initialize device for qtest: \"chardev:nope\""),
        (&["-machine", "q35,help"], "-machine q35,help: machine property help is not supported by ferrovm (see docs/cli.md)"),
        (&["-M", "none", "-machine", "help"], "-machine help: machine property help is not supported by ferrovm (see docs/cli.md)"),
        (
            &["-cpu", "core2duo"],
            "-cpu core2duo: CPU model 'core2duo' is not supported (ferrovm supports 'host', 'max' and 'qemu64')",
        ),
        (
            &["-cpu", "host", "-cpu", "Skylake-Client"],
            "-cpu Skylake-Client: CPU model 'Skylake-Client' is not supported (ferrovm supports 'host', 'max' and 'qemu64')",
        ),
        (&["-cpu", "host,+"], "-cpu host,+: CPU feature name missing in '+'"),
    ]);
}

#[test]
fn memory() {
    let hint = "expects a non-negative number below 2^64 (optional suffix k, M, G, T, P or E)";
    check(&[
        (&["-m", "foo"], &format!("-m foo: Parameter 'size' {hint}")),
        (&["-m", "1X"], &format!("-m 1X: Parameter 'size' {hint}")),
        (&["-m", "-1"], &format!("-m -1: Parameter 'size' {hint}")),
        (&["-m", "1.5"], &format!("-m 1.5: Parameter 'size' {hint}")),
        (&["-m", ""], &format!("-m : Parameter 'size' {hint}")),
        (&["-m", "size="], &format!("-m size=: Parameter 'size' {hint}")),
        (&["-m", "16E"], "-m 16E: Value '16E' is out of range for parameter 'size'"),
        (
            &["-m", "99999999999999"],
            "-m 99999999999999: Value '99999999999999' is out of range for parameter 'size'",
        ),
        (&["-m", "0"], "-m 0: Parameter 'size' must be greater than zero"),
        (&["-m", "256,bogus=1"], "-m 256,bogus=1: Invalid parameter 'bogus'"),
        (&["-m", "256,slots=x"], "-m 256,slots=x: Parameter 'slots' expects a number"),
        (&["-m", "256,slots=2"], "-m 256,slots=2: slots specified but no max-size"),
        (
            &["-m", "256,slots=2,maxmem=128M"],
            "-m 256,slots=2,maxmem=128M: invalid value of maxmem: maximum memory size (0x8000000) must be at least the initial memory size (0x10000000)",
        ),
        (
            &["-m", "256,slots=2,maxmem=256M"],
            "-m 256,slots=2,maxmem=256M: invalid value of maxmem: memory slots were specified but maximum memory size (0x10000000) is equal to the initial memory size (0x10000000)",
        ),
        (&["-m", "1G,slots=300,maxmem=2G"], "-m 1G,slots=300,maxmem=2G: unsupported amount of memory slots: 300"),
    ]);
}

#[test]
fn smp() {
    check(&[
        (&["-smp", "4,bogus=1"], "-smp 4,bogus=1: Invalid parameter 'bogus'"),
        (&["-smp", "foo"], "-smp foo: Parameter 'cpus' expects a number"),
        (&["-smp", "-1"], "-smp -1: Parameter 'cpus' expects a number"),
        (
            &["-smp", "4,sockets=3"],
            "-smp 4,sockets=3: Invalid CPU topology: product of the hierarchy must match maxcpus: sockets (3) * dies (1) * cores (1) * threads (1) != maxcpus (4)",
        ),
        (
            &["-smp", "4,maxcpus=2"],
            "-smp 4,maxcpus=2: Invalid CPU topology: maxcpus must be equal to or greater than smp: sockets (1) * dies (1) * cores (2) * threads (1) == maxcpus (2) < smp_cpus (4)",
        ),
        (
            &["-smp", "300"],
            "-smp 300: Invalid SMP CPUs 300. The max CPUs supported by machine 'pc-q35-7.2' is 288",
        ),
        (
            &["-M", "pc", "-smp", "256"],
            "-smp 256: Invalid SMP CPUs 256. The max CPUs supported by machine 'pc-i440fx-7.2' is 255",
        ),
        (&["-smp", "4,clusters=2"], "-smp 4,clusters=2: clusters not supported by this machine's CPU topology"),
        (&["-smp", "4,cpus"], "-smp 4,cpus: Parameter 'cpus' expects a number"),
    ]);
}

#[test]
fn boot_files() {
    check(&[
        (
            &["-append", "x"],
            "-append only allowed with -kernel option",
        ),
        (
            &["-initrd", "x"],
            "-initrd only allowed with -kernel option",
        ),
    ]);
}

#[test]
fn chardev() {
    check(&[
        (&["-chardev", "socket,path=/tmp/x"], "-chardev socket,path=/tmp/x: chardev: no id specified"),
        (&["-chardev", "pty"], "-chardev pty: chardev: no id specified"),
        (
            &["-chardev", "vc,id=p"],
            "-chardev vc,id=p: chardev backend 'vc' is not supported by ferrovm (supported: stdio, null, file, socket, pty)",
        ),
        (&["-chardev", "bogus,id=x"], "-chardev bogus,id=x: 'bogus' is not a valid char driver name"),
        (&["-chardev", "id=x"], "-chardev id=x: chardev: \"x\" missing backend"),
        (&["-chardev", "file,id=x"], "-chardev file,id=x: chardev: file: no filename given"),
        (
            &["-chardev", "socket,id=x"],
            "-chardev socket,id=x: chardev: socket: one of 'path', 'host' or 'fd' is required",
        ),
        (&["-chardev", "socket,id=x,host=localhost"], "-chardev socket,id=x,host=localhost: chardev: socket: no port given"),
        (&["-chardev", "socket,id=x,fd=foo"], "-chardev socket,id=x,fd=foo: Unable to parse FD number foo"),
        (&["-chardev", "socket,id=x,fd=-1"], "-chardev socket,id=x,fd=-1: Unable to parse FD number -1"),
        (
            &["-chardev", "socket,id=x,path=/tmp/x,server=maybe"],
            "-chardev socket,id=x,path=/tmp/x,server=maybe: Parameter 'server' expects 'on' or 'off'",
        ),
        (
            &["-chardev", "socket,id=x,path=/tmp/x,wait=off"],
            "-chardev socket,id=x,path=/tmp/x,wait=off: 'wait' option is incompatible with socket in client connect mode",
        ),
        (&["-chardev", "null,id=x,bogus=1"], "-chardev null,id=x,bogus=1: Invalid parameter 'bogus'"),
        (
            &["-chardev", "null,id=x,path=/x"],
            "-chardev null,id=x,path=/x: Parameter 'path' is not valid for chardev backend 'null'",
        ),
        (
            &["-chardev", "null,id=1x"],
            "-chardev null,id=1x: Parameter 'id' expects an identifier (letters, digits, '-', '.', '_', starting with a letter)",
        ),
        (
            &["-chardev", "socket,id=x,path=/x,logfile=/y"],
            "-chardev socket,id=x,path=/x,logfile=/y: Invalid parameter 'logfile'",
        ),
        (
            &["-chardev", "null,id=x", "-chardev", "null,id=x"],
            "-chardev null,id=x: Duplicate ID 'x' for chardev",
        ),
        (
            &["-chardev", "stdio,id=a", "-chardev", "stdio,id=b"],
            "-chardev stdio,id=b: cannot use stdio by multiple character devices",
        ),
        (&["-daemonize", "-chardev", "stdio,id=a"], "-chardev stdio,id=a: cannot use stdio with -daemonize"),
    ]);
}

#[test]
fn serial_and_monitors() {
    check(&[
        (&["-serial", "vc"], "-serial vc: char device 'vc' is not supported by ferrovm (supported: stdio, null, pty, file:, unix:, tcp:, chardev:)"),
        (&["-serial", "foo"], "-serial foo: 'foo' is not a valid char driver"),
        (
            &["-serial", "chardev:nope"],
            "-serial chardev:nope: could not connect serial device to character backend 'chardev:nope'",
        ),
        (
            &["-chardev", "null,id=c", "-serial", "chardev:c", "-mon", "chardev=c"],
            "-mon chardev=c: Device 'c' is in use",
        ),
        (
            &["-chardev", "null,id=c", "-serial", "chardev:c", "-serial", "chardev:c"],
            "-serial chardev:c: Device 'c' is in use",
        ),
        (
            &["-chardev", "null,id=c", "-device", "isa-serial,chardev=c", "-serial", "chardev:c"],
            "-serial chardev:c: Device 'c' is in use",
        ),
        (
            &["-device", "isa-serial,chardev=nope"],
            "-device isa-serial,chardev=nope: Property 'isa-serial.chardev' can't find value 'nope'",
        ),
        (&["-serial", "stdio", "-qmp", "stdio"], "-qmp stdio: cannot use stdio by multiple character devices"),
        (&["-qmp", "stdio", "-qmp", "stdio"], "-qmp stdio: cannot use stdio by multiple character devices"),
        (&["-daemonize", "-serial", "stdio"], "-serial stdio: cannot use stdio with -daemonize"),
        (&["-nographic", "-daemonize"], "-nographic cannot be used with -daemonize"),
        (&["-mon", "chardev=nope"], "-mon chardev=nope: chardev \"nope\" not found"),
        (&["-mon", "mode=control"], "-mon mode=control: Parameter 'chardev' is missing"),
        (&["-mon", "mode=foo"], "-mon mode=foo: Parameter 'mode' does not accept value 'foo'"),
        (&["-mon", "chardev=c,bogus"], "-mon chardev=c,bogus: Invalid parameter 'bogus'"),
        (
            &["-chardev", "null,id=c", "-mon", "chardev=c,mode=readline,pretty=on"],
            "-mon chardev=c,mode=readline,pretty=on: 'pretty' is not compatible with HMP monitors",
        ),
        (&["-qmp", "foo"], "-qmp foo: 'foo' is not a valid char driver"),
        (&["-qmp", "tcp:localhost"], "-qmp tcp:localhost: parse error: tcp:localhost"),
        (
            &["-qmp", "tcp:localhost:4444x,server=on,wait=off"],
            "-qmp tcp:localhost:4444x,server=on,wait=off: Parameter 'port' expects a port number, not '4444x'",
        ),
        (
            &["-qmp", "unix:/tmp/q1,server=on,wait=off,bogus=1"],
            "-qmp unix:/tmp/q1,server=on,wait=off,bogus=1: Invalid parameter 'bogus'",
        ),
        (
            &["-qmp", "unix:"],
            "-qmp unix:: chardev: socket: one of 'path', 'host' or 'fd' is required",
        ),
        (
            &["-serial", "stdio", "-chardev", "null,id=serial0"],
            "-chardev null,id=serial0: Duplicate ID 'serial0' for chardev",
        ),
    ]);
}

#[test]
fn runstate() {
    check(&[
        (
            &["-action", "reboot=foo"],
            "-action reboot=foo: Parameter 'reboot' does not accept value 'foo'",
        ),
        (
            &["-action", "panic=poweroff"],
            "-action panic=poweroff: Parameter 'panic' does not accept value 'poweroff'",
        ),
        (
            &["-action", "bogus=foo"],
            "-action bogus=foo: Invalid parameter 'bogus'",
        ),
        (
            &["-watchdog-action", "foo"],
            "-watchdog-action foo: Parameter 'watchdog' does not accept value 'foo'",
        ),
    ]);
}

#[test]
fn identity_and_misc() {
    check(&[
        (&["-name", "guest=x,bogus=1"], "-name guest=x,bogus=1: Invalid parameter 'bogus'"),
        (&["-name", "x,debug-threads=2"], "-name x,debug-threads=2: Parameter 'debug-threads' expects 'on' or 'off'"),
        (&["-uuid", "foo"], "-uuid foo: failed to parse UUID string: wrong format"),
        (
            &["-uuid", "12345678-1234-1234-1234-1234567890ag"],
            "-uuid 12345678-1234-1234-1234-1234567890ag: failed to parse UUID string: wrong format",
        ),
        (
            &["-rtc", "base=foo"],
            "-rtc base=foo: invalid datetime format 'foo'; valid formats: '2006-06-17T16:01:21' or '2006-06-17'",
        ),
        (&["-rtc", "clock=foo"], "-rtc clock=foo: Parameter 'clock' does not accept value 'foo'"),
        (&["-rtc", "driftfix=foo"], "-rtc driftfix=foo: Parameter 'driftfix' does not accept value 'foo'"),
        (&["-rtc", "bogus=1"], "-rtc bogus=1: Invalid parameter 'bogus'"),
        (&["-rtc", "utc"], "-rtc utc: Invalid parameter 'utc'"),
        (&["-display", "gtk"], "-display gtk: display 'gtk' is not supported by ferrovm (only 'none')"),
        (&["-display", "foo"], "-display foo: Parameter 'type' does not accept value 'foo'"),
        (&["-display", "none,bogus"], "-display none,bogus: Expected '=' after parameter 'bogus'"),
        (&["-display", "none,gl=on"], "-display none,gl=on: Invalid parameter 'gl'"),
        (&["-vga", "std"], "-vga std: VGA card 'std' is not supported by ferrovm (only 'none')"),
        (&["-overcommit", "cpu-pm=on"], "-overcommit cpu-pm=on: 'cpu-pm=on' is not supported by ferrovm"),
        (&["-overcommit", "mem-lock=maybe"], "-overcommit mem-lock=maybe: Parameter 'mem-lock' expects 'on' or 'off'"),
        (&["-sandbox", "on,spawn=maybe"], "-sandbox on,spawn=maybe: Parameter 'spawn' does not accept value 'maybe'"),
        (&["-msg", "bogus=on"], "-msg bogus=on: Invalid parameter 'bogus'"),
    ]);
}

/// Wording from qemu-system-x86_64 7.2 -nodefaults -display none -machine q35.
/// QEMU checks -boot when it creates the machine, so those errors carry no
/// option location, except the keyval syntax errors.
#[test]
fn firmware_boot() {
    check(&[
        (
            &["-boot", "bogus=on"],
            "Parameter 'boot.bogus' is unexpected",
        ),
        (&["-boot", "foo.x=1"], "Parameter 'boot.foo' is unexpected"),
        (
            &["-boot", "order.0=c"],
            "Parameters 'boot.order.*' are unexpected",
        ),
        (
            &["-boot", "menu.x=1"],
            "Parameters 'boot.menu.*' are unexpected",
        ),
        (&["-boot", "order=z"], "Invalid boot device 'z'"),
        (&["-boot", "z"], "Invalid boot device 'z'"),
        (&["-boot", "order=C"], "Invalid boot device 'C'"),
        (&["-boot", "order=cc"], "Boot device 'c' was given twice"),
        (&["-boot", "once=q"], "Invalid boot device 'q'"),
        (&["-boot", "order=z,once=q"], "Invalid boot device 'z'"),
        (&["-boot", "once=c,order=z"], "Invalid boot device 'z'"),
        // "menu" alone is the implied order "menu": m, e, n are drives, u is not.
        (&["-boot", "menu"], "Invalid boot device 'u'"),
        (
            &["-boot", "menu=maybe"],
            "Parameter 'boot.menu' expects 'on' or 'off'",
        ),
        (
            &["-boot", "strict=x"],
            "Parameter 'boot.strict' expects 'on' or 'off'",
        ),
        // Members are visited in BootConfiguration's order, leftovers last.
        (
            &["-boot", "menu=on,foo=1,strict=x"],
            "Parameter 'boot.strict' expects 'on' or 'off'",
        ),
        (
            &["-boot", "splash-time=abc"],
            "Parameter 'boot.splash-time' expects integer",
        ),
        (
            &["-boot", "splash-time=1.5"],
            "Parameter 'boot.splash-time' expects integer",
        ),
        (
            &["-boot", "reboot-timeout=abc"],
            "Parameter 'boot.reboot-timeout' expects integer",
        ),
        (
            &["-boot", "reboot-timeout=99999999999999999999"],
            "Parameter 'boot.reboot-timeout' expects integer",
        ),
        (
            &["-boot", "splash-time=-1"],
            "splash-time is invalid,it should be a value between 0 and 65535",
        ),
        (
            &["-boot", "splash-time=70000"],
            "splash-time is invalid,it should be a value between 0 and 65535",
        ),
        (
            &["-boot", "splash-time=0x10000"],
            "splash-time is invalid,it should be a value between 0 and 65535",
        ),
        (
            &["-boot", "reboot-timeout=70000"],
            "reboot timeout is invalid,it should be a value between -1 and 65535",
        ),
        (
            &["-boot", "reboot-timeout=-2"],
            "reboot timeout is invalid,it should be a value between -1 and 65535",
        ),
        (
            &["-boot", "reboot-timeout=-0x2"],
            "reboot timeout is invalid,it should be a value between -1 and 65535",
        ),
        (
            &["-boot", "splash-time=-1,reboot-timeout=70000"],
            "splash-time is invalid,it should be a value between 0 and 65535",
        ),
        (
            &["-boot", ",menu=on"],
            "-boot ,menu=on: Invalid parameter ''",
        ),
        (
            &["-boot", "help"],
            "-boot help: option help is not supported by ferrovm",
        ),
        (&["-bios"], "-bios: requires an argument"),
        (&["-L"], "-L: requires an argument"),
    ]);
}

/// Wording from qemu-system-x86_64 7.2 (`hw/smbios/smbios.c`), with QEMU's location.
#[test]
fn smbios() {
    check(&[
        (&["-smbios", "type=1,foo=x"], "-smbios type=1,foo=x: Invalid parameter 'foo'"),
        (
            &["-smbios", "type=1,manufacturer=X,product=Y,serial=Z,uuid=bad"],
            "-smbios type=1,manufacturer=X,product=Y,serial=Z,uuid=bad: Invalid UUID",
        ),
        (&["-smbios", "type=128"], "-smbios type=128: out of range!"),
        (&["-smbios", "type=-1"], "-smbios type=-1: out of range!"),
        (
            &["-smbios", "type=5"],
            "-smbios type=5: Don't know how to build fields for SMBIOS type 5",
        ),
        (
            &["-smbios", "type=99"],
            "-smbios type=99: Don't know how to build fields for SMBIOS type 99",
        ),
        (&["-smbios", "type=x"], "-smbios type=x: Parameter 'type' expects a number"),
        (&["-smbios", "type=1x"], "-smbios type=1x: Parameter 'type' expects a number"),
        (&["-smbios", "foo=1"], "-smbios foo=1: Must specify type= or file="),
        (&["-smbios", ""], "-smbios : Must specify type= or file="),
        (&["-smbios", "type=0,release=1"], "-smbios type=0,release=1: Invalid release"),
        (
            &["-smbios", "type=0,uefi=maybe"],
            "-smbios type=0,uefi=maybe: Parameter 'uefi' expects 'on' or 'off'",
        ),
        (
            &["-smbios", "type=4,max-speed=70000"],
            "-smbios type=4,max-speed=70000: SMBIOS CPU speed is too large (> 65535)",
        ),
        (
            &["-smbios", "type=4,max-speed=-1"],
            "-smbios type=4,max-speed=-1: SMBIOS CPU speed is too large (> 65535)",
        ),
        (
            &["-smbios", "type=4,max-speed=x"],
            "-smbios type=4,max-speed=x: Parameter 'max-speed' expects a number",
        ),
        (
            &["-smbios", "type=4,max-speed=99999999999999999999"],
            "-smbios type=4,max-speed=99999999999999999999: Value '99999999999999999999' is too large for parameter 'max-speed'",
        ),
        (
            &["-smbios", "type=11,value=a,foo=b"],
            "-smbios type=11,value=a,foo=b: Invalid parameter 'foo'",
        ),
        (
            &["-smbios", "file=/etc/hostname,type=1"],
            "-smbios file=/etc/hostname,type=1: Invalid parameter 'type'",
        ),
        (
            &["-smbios", "type=1,file=/etc/hostname"],
            "-smbios type=1,file=/etc/hostname: Invalid parameter 'type'",
        ),
        (&["-smbios", "type=3,product=x"], "-smbios type=3,product=x: Invalid parameter 'product'"),
        (
            &["-smbios", "type=8"],
            "-smbios type=8: SMBIOS type 8 fields are not supported by ferrovm",
        ),
        (&["-smbios"], "-smbios: requires an argument"),
    ]);
}

#[test]
fn block() {
    check(&[
        (
            &["-drive", "file=x.img"],
            "-drive file=x.img: interface 'if=ide' (QEMU's default) has no register model in ferrovm (accepted only under -accel qtest, where no guest runs); use if=virtio, or if=none with -device",
        ),
        (
            &["-drive", "if=ide,media=cdrom", "-accel", "kvm"],
            "-drive if=ide,media=cdrom: interface 'if=ide' has no register model in ferrovm (accepted only under -accel qtest, where no guest runs); use if=virtio, or if=none with -device",
        ),
        (
            &["-blockdev", "driver=help"],
            "-blockdev driver=help: Parameter 'driver' does not accept value 'help'",
        ),
        (
            &["-drive", "if=none,id=c,media=cdrom"],
            "-drive if=none,id=c,media=cdrom: 'media=cdrom' has no register model in ferrovm (accepted only under -accel qtest, where no guest runs); use if=virtio, or if=none with -device",
        ),
        (
            &["-drive", "file=x.img,if=scsi"],
            "-drive file=x.img,if=scsi: interface 'if=scsi' is not supported by ferrovm; use if=virtio, or if=none with -device",
        ),
        (&["-drive", "file=x,if=foo"], "-drive file=x,if=foo: Parameter 'if' does not accept value 'foo'"),
        (&["-drive", "file=x,if=none,readonly=2"], "-drive file=x,if=none,readonly=2: Parameter 'readonly' expects 'on' or 'off'"),
        (
            &["-drive", "if=none,id=d", "-drive", "if=none,id=d"],
            "-drive if=none,id=d: Duplicate ID 'd' for drive",
        ),
        (&["-blockdev", "file.driver=file"], "-blockdev file.driver=file: Parameter 'driver' is missing"),
        (&["-blockdev", "driver=file,filename=/x"], "-blockdev driver=file,filename=/x: 'node-name' must be specified for the root node"),
        (&["-blockdev", "driver=file,node-name=1x"], "-blockdev driver=file,node-name=1x: Invalid node-name: '1x'"),
        (&["-blockdev", "driver=file,node-name=n,a..b=1"], "-blockdev driver=file,node-name=n,a..b=1: Invalid parameter 'a..b'"),
        (
            &["-blockdev", "driver=file,node-name=n,file=1,file.x=2"],
            "-blockdev driver=file,node-name=n,file=1,file.x=2: Parameters 'file.*' used inconsistently",
        ),
        (&["-blockdev", "driver=file,filename"], "-blockdev driver=file,filename: Expected '=' after parameter 'filename'"),
        (&["-blockdev", "driver=q,node-name=n,c.1=x"], "-blockdev driver=q,node-name=n,c.1=x: Parameter 'c.0' missing"),
        (
            &["-blockdev", "{\"driver\":"],
            "-blockdev {\"driver\":: JSON parse error, EOF while parsing a value at line 1 column 10",
        ),
        (&["-blockdev", "{\"driver\":1,\"node-name\":\"n\"}"], "-blockdev {\"driver\":1,\"node-name\":\"n\"}: Invalid parameter type for 'driver', expected: string"),
        (
            &["-blockdev", "driver=file,node-name=n", "-blockdev", "driver=raw,node-name=n"],
            "-blockdev driver=raw,node-name=n: Duplicate nodes with node-name='n'",
        ),
    ]);
}

#[test]
fn devices() {
    check(&[
        (&["-device", "{\"id\":\"x\"}"], "-device {\"id\":\"x\"}: Parameter 'driver' is missing"),
        (&["-device", ",id=x"], "-device ,id=x: '' is not a valid device model name"),
        (
            &["-device", "virtio-balloon,id=1x"],
            "-device virtio-balloon,id=1x: Parameter 'id' expects an identifier (letters, digits, '-', '.', '_', starting with a letter)",
        ),
        (
            &["-device", "e1000,id=d", "-device", "{\"driver\":\"e1000\",\"id\":\"d\"}"],
            "-device {\"driver\":\"e1000\",\"id\":\"d\"}: Duplicate ID 'd' for device",
        ),
        (&["-netdev", "tap"], "-netdev tap: Parameter 'id' is missing"),
        (&["-netdev", "id=n"], "-netdev id=n: Parameter 'type' is missing"),
        (&["-netdev", "tap,id=x,bogus=1"], "-netdev tap,id=x,bogus=1: Invalid parameter 'bogus'"),
        (&["-netdev", "foo,id=x"], "-netdev foo,id=x: Parameter 'type' does not accept value 'foo'"),
        (
            &["-netdev", "user,id=x"],
            "-netdev user,id=x: network backend 'user' is not supported by ferrovm (only 'tap')",
        ),
        (
            &["-netdev", "{\"type\":\"tap\",\"id\":\"n\"}", "-netdev", "tap,id=n"],
            "-netdev tap,id=n: Duplicate ID 'n' for netdev",
        ),
        (&["-object", "foo"], "-object foo: Parameter 'id' is missing"),
        (&["-object", "id=x"], "-object id=x: Parameter 'qom-type' is missing"),
        (&["-object", "memory-backend-ram,size=1G"], "-object memory-backend-ram,size=1G: Parameter 'id' is missing"),
        // QEMU 7.2: only the JSON form nests.
        (
            &["-object", "throttle-group,id=t,limits.iops-total=5"],
            "-object throttle-group,id=t,limits.iops-total=5: Invalid parameter 'limits.iops-total'",
        ),
        (
            &["-object", "iothread,id=a", "-object", "iothread,id=a"],
            "-object iothread,id=a: Duplicate ID 'a' for object",
        ),
        (&["-global", "foo"], "-global foo: Invalid parameter 'foo'"),
        (&["-global", "driver=foo"], "-global driver=foo: options 'driver', 'property', and 'value' are required"),
        (
            &["-audiodev", "pa,id=a"],
            "-audiodev pa,id=a: audio driver 'pa' is not supported by ferrovm (only 'none')",
        ),
    ]);
}
