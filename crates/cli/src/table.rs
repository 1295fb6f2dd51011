//! The option table: one declaration per option (names, argument syntax,
//! grammar with its keys, help, notes, handler). Parsing, `-h` and the
//! markdown reference are all derived from it.

use crate::builder::{Builder, Inv};
use crate::error::CliError;
use crate::schema::{Opts, Schema};
use crate::{
    block, chardev, devices, firmware, frontends, machine, memory, misc, rtc, runstate, smbios, smp,
};
use serde_json::{Map, Value};

/// How an option's argument is read before its handler sees it.
#[derive(Clone, Copy)]
pub(crate) enum Grammar {
    /// No argument.
    Flag,
    /// An argument the handler reads itself; the schema, if any, documents its keys.
    Raw(Option<&'static Schema>),
    /// QemuOpts `key=value,...` checked against the schema.
    Opts(&'static Schema),
    /// JSON object, or QemuOpts (values kept as strings).
    JsonOrOpts(&'static Schema),
    /// JSON object, or keyval with dotted keys (leaves kept as strings).
    JsonOrKeyval(Option<&'static str>),
}

/// The argument after the grammar has been applied.
pub(crate) enum Parsed {
    None,
    Opts(Opts),
    Json(Map<String, Value>),
}

impl Parsed {
    pub(crate) fn opts(self) -> Opts {
        match self {
            Parsed::Opts(o) => o,
            _ => Opts::default(),
        }
    }
    pub(crate) fn json(self) -> Map<String, Value> {
        match self {
            Parsed::Json(m) => m,
            _ => Map::new(),
        }
    }
}

pub(crate) type HandlerFn = fn(&mut Builder, &Inv, Parsed) -> Result<(), CliError>;

/// What an option does.
#[derive(Clone, Copy)]
pub(crate) enum Handler {
    Run(HandlerFn),
    Version,
    Help,
}

/// One option.
pub(crate) struct OptionDef {
    /// Names without the dash; the first is the one documented.
    pub names: &'static [&'static str],
    /// Argument syntax as QEMU documents it ("" for flags).
    pub args: &'static str,
    pub grammar: Grammar,
    /// One-line description.
    pub help: &'static str,
    /// What ferrovm accepts and rejects, for docs/cli.md.
    pub notes: &'static str,
    pub handler: Handler,
}

impl OptionDef {
    pub(crate) fn takes_arg(&self) -> bool {
        !matches!(self.grammar, Grammar::Flag)
    }
    pub(crate) fn schema(&self) -> Option<&'static Schema> {
        match self.grammar {
            Grammar::Raw(s) => s,
            Grammar::Opts(s) | Grammar::JsonOrOpts(s) => Some(s),
            _ => None,
        }
    }
}

use Grammar::*;
use Handler::Run;

pub(crate) const OPTIONS: &[OptionDef] = &[
    OptionDef {
        names: &["h", "help"],
        args: "",
        grammar: Flag,
        help: "display this help and exit",
        notes: "",
        handler: Handler::Help,
    },
    OptionDef {
        names: &["version"],
        args: "",
        grammar: Flag,
        help: "display version information and exit",
        notes: "First line `QEMU emulator version 7.2.0 (ferrovm X.Y.Z)`: ferrovm follows QEMU 7.2's command line and QMP.",
        handler: Handler::Version,
    },
    OptionDef {
        names: &["machine", "M"],
        args: "[type=]name[,prop=value[,...]]",
        grammar: Raw(Some(&machine::MACHINE_SCHEMA)),
        help: "select the machine type and its properties",
        notes: "Types: `q35`, `pc`, `pc-q35-X.Y`, `pc-i440fx-X.Y` (QEMU 7.2's versions), `ferrovm` all build ferrovm's Q35-like PC, the name is kept; `none` has no board. Types before 6.2 compute omitted `-smp` sockets first, as QEMU does. `help` lists the types in QEMU's format (`pc-i440fx-7.2`, alias `pc`, is the default, as in QEMU; `TYPE,help` is an error). `accel=` must list `kvm` or `qtest` first (`tcg` is accepted with `none` only, which runs no vCPU: libvirt's second capability probe). Only these values are accepted: LIMITS. Any other key is an error. Repeated options merge.",
        handler: Run(machine::handle_machine),
    },
    OptionDef {
        names: &["accel"],
        args: "kvm|qtest[,prop=value[,...]]",
        grammar: Opts(&machine::ACCEL_SCHEMA),
        help: "select the accelerator (kvm, or qtest for tests)",
        notes: "`kvm` runs the vCPUs. `qtest` (QEMU's test accelerator, used by its iotests) runs none: the machine is its device tree and block attachments only, no KVM VM is created, the run state and QMP work as usual and the virtual clock moves only through `-qtest`'s `clock_step`/`clock_set`. `tcg` is accepted with `-machine none` only (no vCPU runs). Any other accelerator is an error. Repeated `-accel`s are tried in order and the first wins; `-accel` together with `-machine accel=` (or `-enable-kvm`) is an error, as in QEMU. `help` (or no accelerator) lists `kvm`. `kernel-irqchip` must be `on`; `kvm-shadow-mem` and `dirty-ring-size` are accepted.",
        handler: Run(machine::handle_accel),
    },
    OptionDef {
        names: &["qtest"],
        args: "dev",
        grammar: Raw(None),
        help: "serve QEMU's qtest protocol on a character device",
        notes: "A socket chardev in the compatibility syntax (`unix:path=PATH`, `unix:PATH[,server=on]`, `tcp:HOST:PORT[,...]`) or `chardev:ID`; as in QEMU it creates chardev `qtest`, and without `server=on` ferrovm connects to it (QEMU's Python `QEMUQtestMachine` listens). ferrovm answers `clock_step [NS]`, `clock_set NS` (under `-accel qtest`) and `endianness`; the other commands of QEMU's protocol (port and memory access, IRQ interception) fail with `FAIL`, since no guest memory or device registers exist under qtest.",
        handler: Run(frontends::handle_qtest),
    },
    OptionDef {
        names: &["qtest-log"],
        args: "file",
        grammar: Raw(None),
        help: "log the qtest protocol to a file",
        notes: "`none` logs nothing; without it the log goes to stderr, as in QEMU.",
        handler: Run(frontends::handle_qtest_log),
    },
    OptionDef {
        names: &["enable-kvm"],
        args: "",
        grammar: Flag,
        help: "use KVM (the same as -machine accel=kvm)",
        notes: "",
        handler: Run(machine::handle_enable_kvm),
    },
    OptionDef {
        names: &["cpu"],
        args: "host|max|qemu64[,+feature][,-feature][,feature=value]",
        grammar: Raw(None),
        help: "select the CPU model",
        notes: "`host` and `max` (the same under KVM) pass KVM's CPUID through; `qemu64`, the default as in QEMU, is a conservative baseline without XSAVE, AVX, POPCNT, CX16 or SMAP. `-feature` removes one of popcnt, xsave, avx, x2apic, rdrand, pcid, smap, smep, avx2; `+feature` and properties such as `migratable=on` change nothing.",
        handler: Run(machine::handle_cpu),
    },
    OptionDef {
        names: &["m"],
        args: "[size=]megs[,slots=n,maxmem=size]",
        grammar: Opts(&memory::MEM_SCHEMA),
        help: "set guest RAM size (default 128 MiB)",
        notes: "A number without suffix is MiB; suffixes K, M, G, T, P, E; fractions with a suffix (`1.5G`). Rounded up to 8 KiB. 0 is rejected (QEMU would use the default). `slots` needs `maxmem` >= size. Repeated options merge.",
        handler: Run(memory::handle_m),
    },
    OptionDef {
        names: &["smp"],
        args: "[cpus=]n[,maxcpus=cpus][,sockets=sockets][,dies=dies][,cores=cores][,threads=threads]",
        grammar: Opts(&smp::SMP_SCHEMA),
        help: "set the number of vCPUs and the CPU topology",
        notes: "Omitted values computed as QEMU 7.2 does (cores preferred since machine version 6.2, sockets before); sockets*dies*cores*threads must equal maxcpus, cpus <= maxcpus, maxcpus <= 288 (255 for `pc`). `clusters` above 1 is an error. 0 means omitted, with QEMU's deprecation warning.",
        handler: Run(smp::handle_smp),
    },
    OptionDef {
        names: &["kernel"],
        args: "bzImage",
        grammar: Raw(None),
        help: "boot this Linux kernel (bzImage or PVH ELF)",
        notes: "",
        handler: Run(misc::handle_kernel),
    },
    OptionDef {
        names: &["initrd"],
        args: "file",
        grammar: Raw(None),
        help: "use this file as the initial ram disk",
        notes: "Requires `-kernel`.",
        handler: Run(misc::handle_initrd),
    },
    OptionDef {
        names: &["append"],
        args: "cmdline",
        grammar: Raw(None),
        help: "use cmdline as the kernel command line",
        notes: "Requires `-kernel`.",
        handler: Run(misc::handle_append),
    },
    OptionDef {
        names: &["chardev"],
        args: "backend,id=id[,mux=on|off][,...]",
        grammar: Opts(&chardev::CHARDEV_SCHEMA),
        help: "create a character device",
        notes: "Backends: `stdio[,signal=]`, `null`, `file,path=[,append=]`, `socket` with exactly one of `path=` (unix), `host=,port=` (tcp) or `fd=N` (inherited), plus `server=`, `wait=` (server only; default on), `nodelay`; `pty` (its path is announced on stderr and in `query-chardev`). The legacy `server,nowait` spelling works (with QEMU's deprecation warning). `vc`, `pipe`, `udp`, `telnet=on`, `websocket=on`, `reconnect`, `logfile` and other backends are errors, as is a key that does not belong to the backend.",
        handler: Run(chardev::handle_chardev),
    },
    OptionDef {
        names: &["serial"],
        args: "dev",
        grammar: Raw(None),
        help: "add a serial port (COM1, COM2, ...) on a character device",
        notes: "`stdio`, `null`, `none` (no port), `file:PATH`, `unix:PATH[,...]`, `tcp:HOST:PORT[,...]`, `chardev:ID`, `pty`, `mon:DEV` (mux with a readline monitor). Creates chardev `serialN`. `vc` is an error. ferrovm has one serial port, COM1 (also attachable with `-device isa-serial,chardev=ID`).",
        handler: Run(frontends::handle_serial),
    },
    OptionDef {
        names: &["debugcon"],
        args: "dev",
        grammar: Raw(None),
        help: "redirect the debug console (isa-debugcon) to a character device",
        notes: "As `-serial`'s devices; creates chardev `debugcon` and `-device isa-debugcon,chardev=debugcon` at port 0xe9 (`-global isa-debugcon.iobase=0x402` for SeaBIOS's log).",
        handler: Run(frontends::handle_debugcon),
    },
    OptionDef {
        names: &["mon"],
        args: "[chardev=]name[,mode=readline|control][,pretty=on|off]",
        grammar: Opts(&frontends::MON_SCHEMA),
        help: "add a monitor on a character device",
        notes: "Default mode `readline` (HMP); `pretty` only with `control`.",
        handler: Run(frontends::handle_mon),
    },
    OptionDef {
        names: &["qmp"],
        args: "dev",
        grammar: Raw(None),
        help: "add a QMP monitor on a device (like -monitor, in control mode)",
        notes: "`unix:PATH,server=on,wait=off`, `unix:PATH,server,nowait`, `tcp:HOST:PORT,server=on,wait=off`, `stdio`, `chardev:ID`. Creates chardev `compat_monitorN`.",
        handler: Run(frontends::handle_qmp),
    },
    OptionDef {
        names: &["qmp-pretty"],
        args: "dev",
        grammar: Raw(None),
        help: "like -qmp, with pretty-printed JSON",
        notes: "",
        handler: Run(frontends::handle_qmp_pretty),
    },
    OptionDef {
        names: &["monitor"],
        args: "dev",
        grammar: Raw(None),
        help: "add a readline (HMP) monitor on a device",
        notes: "Same devices as `-qmp`; `none` adds none.",
        handler: Run(frontends::handle_monitor),
    },
    OptionDef {
        names: &["S"],
        args: "",
        grammar: Flag,
        help: "do not start the CPUs at startup (use 'cont' over QMP)",
        notes: "",
        handler: Run(runstate::handle_s),
    },
    OptionDef {
        names: &["no-shutdown"],
        args: "",
        grammar: Flag,
        help: "stop rather than exit when the guest shuts down",
        notes: "The same as `-action shutdown=pause`.",
        handler: Run(runstate::handle_no_shutdown),
    },
    OptionDef {
        names: &["no-reboot"],
        args: "",
        grammar: Flag,
        help: "exit instead of rebooting",
        notes: "The same as `-action reboot=shutdown`.",
        handler: Run(runstate::handle_no_reboot),
    },
    OptionDef {
        names: &["action"],
        args: "event=action",
        grammar: Opts(&runstate::ACTION_SCHEMA),
        help: "set the action taken on guest events (reboot, shutdown, panic, watchdog)",
        notes: "Applied in command-line order together with `-no-reboot`, `-no-shutdown`, `-watchdog-action`.",
        handler: Run(runstate::handle_action),
    },
    OptionDef {
        names: &["watchdog-action"],
        args: "reset|shutdown|poweroff|inject-nmi|pause|debug|none",
        grammar: Raw(None),
        help: "action when the watchdog fires",
        notes: "The same as `-action watchdog=...`.",
        handler: Run(runstate::handle_watchdog_action),
    },
    OptionDef {
        names: &["name"],
        args: "[guest=]name[,process=name][,debug-threads=on|off]",
        grammar: Opts(&misc::NAME_SCHEMA),
        help: "set the guest name",
        notes: "",
        handler: Run(misc::handle_name),
    },
    OptionDef {
        names: &["uuid"],
        args: "%08x-%04x-%04x-%04x-%012x",
        grammar: Raw(None),
        help: "set the system UUID",
        notes: "",
        handler: Run(misc::handle_uuid),
    },
    OptionDef {
        names: &["rtc"],
        args: "[base=utc|localtime|date][,clock=host|rt|vm][,driftfix=none|slew]",
        grammar: Opts(&rtc::RTC_SCHEMA),
        help: "set the RTC base and clock",
        notes: "date is `2006-06-17T16:01:21` or `2006-06-17` (UTC).",
        handler: Run(rtc::handle_rtc),
    },
    OptionDef {
        names: &["display"],
        args: "none",
        grammar: Raw(None),
        help: "select the display (only none)",
        notes: "Any other display type is an error.",
        handler: Run(misc::handle_display),
    },
    OptionDef {
        names: &["nographic"],
        args: "",
        grammar: Flag,
        help: "no display; without -nodefaults, serial port 0 on stdio",
        notes: "QEMU also muxes a readline monitor onto stdio (`mon:stdio`); ferrovm puts only the serial port there. Use `-serial mon:stdio` for the mux.",
        handler: Run(misc::handle_nographic),
    },
    OptionDef {
        names: &["vga"],
        args: "none",
        grammar: Raw(None),
        help: "select the VGA card (only none)",
        notes: "",
        handler: Run(misc::handle_vga),
    },
    OptionDef {
        names: &["nodefaults"],
        args: "",
        grammar: Flag,
        help: "do not create default devices",
        notes: "",
        handler: Run(misc::handle_nodefaults),
    },
    OptionDef {
        names: &["no-user-config"],
        args: "",
        grammar: Flag,
        help: "do not load user-provided config files",
        notes: "ferrovm reads no config files.",
        handler: Run(misc::handle_no_user_config),
    },
    OptionDef {
        names: &["daemonize"],
        args: "",
        grammar: Flag,
        help: "daemonize after initialization",
        notes: "stdio chardevs are then an error.",
        handler: Run(misc::handle_daemonize),
    },
    OptionDef {
        names: &["pidfile"],
        args: "file",
        grammar: Raw(None),
        help: "write the process id to file",
        notes: "",
        handler: Run(misc::handle_pidfile),
    },
    OptionDef {
        names: &["drive"],
        args: "[file=file][,if=none|virtio|ide][,format=f][,id=id][,...]",
        grammar: Opts(&block::DRIVE_SCHEMA),
        help: "define a drive (legacy block device option)",
        notes: "`if=virtio` and `if=none`; QEMU's default `if=ide`, and `media=cdrom` (a read-only drive, which may be empty), only under `-accel qtest`, where an IDE drive is a device tree entry on q35's AHCI ports; otherwise they are errors (ferrovm has no IDE or CD-ROM register model). Without `file=` the drive is empty. `format=help` lists the block drivers ferrovm opens and exits, as QEMU does when it opens that drive. Other keys are kept as strings for the block layer.",
        handler: Run(block::handle_drive),
    },
    OptionDef {
        names: &["blockdev"],
        args: "driver=d,node-name=n[,prop=value[,...]] | JSON",
        grammar: JsonOrKeyval(None),
        help: "define a block node",
        notes: "JSON or dotted keys (`file.driver=file,file.filename=x`) building nested objects; keyval leaves stay strings. `driver` and a unique `node-name` are required.",
        handler: Run(block::handle_blockdev),
    },
    OptionDef {
        names: &["device"],
        args: "driver[,prop=value[,...]] | JSON",
        grammar: JsonOrOpts(&devices::DEVICE_SCHEMA),
        help: "add a device",
        notes: "Kept as a JSON object (`driver` plus properties; key=value values are strings). The VMM checks the driver; `help` and `DRIVER,help` list what it builds. `virtio-scsi-pci` (alias `virtio-scsi`) and `scsi-hd` are accepted only under `-accel qtest`, as device tree entries with their drive attached (no register model).",
        handler: Run(devices::handle_device),
    },
    OptionDef {
        names: &["netdev"],
        args: "tap,id=id[,prop=value[,...]] | JSON",
        grammar: JsonOrOpts(&devices::NETDEV_SCHEMA),
        help: "add a network backend (only tap)",
        notes: "Only `tap` with its QEMU keys (`ifname`, `fd`, `fds`, `script`, `downscript`, `br`, `helper`, `sndbuf`, `vnet_hdr`, `vhost`, `vhostfd`, `vhostfds`, `vhostforce`, `queues`, `poll-us`); `user` and the others are errors.",
        handler: Run(devices::handle_netdev),
    },
    OptionDef {
        names: &["object"],
        args: "type,id=id[,prop=value[,...]] | JSON",
        grammar: JsonOrKeyval(Some("qom-type")),
        help: "create a user-creatable object",
        notes: "Kept as a JSON object with `qom-type` and `id`; the VMM checks the type.",
        handler: Run(devices::handle_object),
    },
    OptionDef {
        names: &["global"],
        args: "driver.property=value | driver=d,property=p,value=v",
        grammar: Raw(Some(&devices::GLOBAL_SCHEMA)),
        help: "set a default for a device property",
        notes: "Stored for the VMM.",
        handler: Run(devices::handle_global),
    },
    OptionDef {
        names: &["audiodev"],
        args: "none,id=id | JSON",
        grammar: JsonOrKeyval(Some("driver")),
        help: "define an audio backend (only none)",
        notes: "Accepted for libvirt; only driver `none`.",
        handler: Run(devices::handle_audiodev),
    },
    OptionDef {
        names: &["msg"],
        args: "[timestamp=on|off][,guest-name=on|off]",
        grammar: Opts(&misc::MSG_SCHEMA),
        help: "control error message format",
        notes: "",
        handler: Run(misc::handle_msg),
    },
    OptionDef {
        names: &["add-fd"],
        args: "fd=fd,set=set[,opaque=opaque]",
        grammar: Opts(&misc::ADD_FD_SCHEMA),
        help: "Add 'fd' to fd 'set'",
        notes: "`/dev/fdset/SET` then names the set wherever ferrovm opens a chardev `file` path. The `add-fd`/`remove-fd`/`query-fdsets` QMP commands are not implemented.",
        handler: Run(misc::handle_add_fd),
    },
    OptionDef {
        names: &["overcommit"],
        args: "[mem-lock=on|off][,cpu-pm=on|off]",
        grammar: Opts(&misc::OVERCOMMIT_SCHEMA),
        help: "control memory locking and CPU power management",
        notes: "`cpu-pm=on` is an error.",
        handler: Run(misc::handle_overcommit),
    },
    OptionDef {
        names: &["sandbox"],
        args: "on|off[,obsolete=...][,elevateprivileges=...][,spawn=...][,resourcecontrol=...]",
        grammar: Opts(&misc::SANDBOX_SCHEMA),
        help: "request a seccomp sandbox",
        notes: "Checked and recorded (`Config::sandbox`); the filter policy is the VMM's.",
        handler: Run(misc::handle_sandbox),
    },
    OptionDef {
        names: &["bios"],
        args: "file",
        grammar: Raw(None),
        help: "set the filename for the BIOS (firmware boot, e.g. SeaBIOS)",
        notes: "The same as `-machine firmware=`. A path that exists is used as is; otherwise the name is looked up in the `-L` directories, then the default ones (see `-L help`). Without `-bios` and `-kernel` the firmware is `bios-256k.bin`.",
        handler: Run(firmware::handle_bios),
    },
    OptionDef {
        names: &["L"],
        args: "path",
        grammar: Raw(None),
        help: "set the directory for the BIOS and other firmware files",
        notes: "Repeatable; searched in command-line order before the default directories, repeats ignored, at most 16 in all (as QEMU). `-L help` lists the directories and exits.",
        handler: Run(firmware::handle_l),
    },
    OptionDef {
        names: &["boot"],
        args: "[order=drives][,once=drives][,menu=on|off][,splash=sp_name][,splash-time=sp_time][,reboot-timeout=rb_timeout][,strict=on|off]",
        grammar: Raw(Some(&firmware::BOOT_SCHEMA)),
        help: "firmware boot order and menu",
        notes: "keyval syntax with implied `order` (`-boot dc`); repeated options merge. Drives are letters `a`-`p` (a floppy, c disk, d CD-ROM, n network), each once; default order `cad`. `splash-time` 0..65535 ms, `reboot-timeout` -1..65535 ms. Passed to the firmware; `-kernel` boots ignore it.",
        handler: Run(firmware::handle_boot),
    },
    OptionDef {
        names: &["smbios"],
        args: "file=binary | type=0|1|2|3|4|11|17[,field=value[,...]]",
        grammar: Raw(Some(&smbios::SMBIOS_SCHEMA)),
        help: "add SMBIOS entries or override their fields",
        notes: "QEMU 7.2's keys per type: 0 `vendor,version,date,release=MAJOR.MINOR,uefi`; 1 `manufacturer,product,version,serial,uuid,sku,family`; 2 `manufacturer,product,version,serial,asset,location`; 3 `manufacturer,version,serial,asset,sku`; 4 `sock_pfx,manufacturer,version,serial,asset,part,max-speed,current-speed,processor-id`; 11 `value`, `path` (repeatable OEM strings); 17 `loc_pfx,bank,manufacturer,serial,asset,part,speed`. `file=` takes only itself. `type=1,uuid=` also sets the machine UUID, like `-uuid`. Types 8 and 41 are not supported.",
        handler: Run(smbios::handle_smbios),
    },
    OptionDef {
        names: &["no-acpi"],
        args: "",
        grammar: Flag,
        help: "disable ACPI",
        notes: "The same as `-machine acpi=off` (QEMU 7.2 `QEMU_OPTION_no_acpi`): no ACPI tables; on direct boot the PM block is not enabled either.",
        handler: Run(misc::handle_no_acpi),
    },
    OptionDef {
        names: &["no-hpet"],
        args: "",
        grammar: Flag,
        help: "no HPET (ferrovm has none)",
        notes: "",
        handler: Run(misc::handle_tolerated),
    },
];

/// QEMU options ferrovm rejects with "not supported" (rather than "invalid").
pub(crate) const UNSUPPORTED: &[&str] = &[
    "D",
    "acpitable",
    "async-teardown",
    "audio",
    "audio-help",
    "cdrom",
    "chroot",
    "compat",
    "d",
    "dfilter",
    "dtb",
    "dump-vmstate",
    "echr",
    "enable-sync-profile",
    "fda",
    "fdb",
    "hda",
    "hdb",
    "hdc",
    "hdd",
    "fsdev",
    "full-screen",
    "fw_cfg",
    "gdb",
    "icount",
    "incoming",
    "iscsi",
    "k",
    "loadvm",
    "mem-path",
    "mem-prealloc",
    "mtdblock",
    "net",
    "nic",
    "no-fd-bootchk",
    "numa",
    "only-migratable",
    "option-rom",
    "parallel",
    "pflash",
    "plugin",
    "portrait",
    "preconfig",
    "readconfig",
    "rotate",
    "runas",
    "s",
    "sd",
    "seed",
    "set",
    "singlestep",
    "snapshot",
    "spice",
    "tpmdev",
    "trace",
    "usb",
    "usbdevice",
    "virtfs",
    "vnc",
    "watchdog",
    "win2k-hack",
    "xen-attach",
    "xen-domid",
    "xen-domid-restrict",
];

/// Look up an option by name (without dashes).
pub(crate) fn find(name: &str) -> Option<&'static OptionDef> {
    OPTIONS.iter().find(|d| d.names.contains(&name))
}
