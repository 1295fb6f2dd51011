//! The typed result of parsing: what the VMM consumes.

use serde_json::{Map, Value};
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// Guest RAM when `-m` is not given (QEMU's default).
pub const DEFAULT_MEMORY_BYTES: u64 = 128 << 20;

/// Everything a command line asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `-machine` / `-M`.
    pub machine: MachineSpec,
    /// KVM was requested (`-accel kvm`, `-enable-kvm`, `-machine accel=kvm`).
    /// ferrovm always uses KVM; this records whether the user asked.
    pub accel_kvm: bool,
    /// TCG was chosen (`accel=tcg`): accepted for `-machine none` only,
    /// where no vCPU runs, so nothing is accelerated (libvirt probes so).
    pub accel_tcg: bool,
    /// The qtest accelerator (`-accel qtest`): no vCPU runs and the virtual
    /// clock moves only when the qtest client steps it; the board is only
    /// its device tree and block attachments (no KVM VM is created).
    pub accel_qtest: bool,
    /// `-cpu`; default `qemu64`.
    pub cpu: CpuModel,
    /// `-m` size, rounded up to 8 KiB as QEMU does; default 128 MiB.
    pub memory_bytes: u64,
    /// `-m` was given (QEMU's `none` machine reports no RAM without it).
    pub memory_given: bool,
    /// `-m slots=`: hot-plug memory slots (0 when not given).
    pub memory_slots: u64,
    /// `-m maxmem=`: hot-plug ceiling.
    pub memory_max_bytes: Option<u64>,
    /// `-smp`, with the omitted values computed as QEMU does.
    pub smp: Smp,
    /// `-kernel` (or `-machine kernel=`).
    pub kernel: Option<PathBuf>,
    /// `-initrd` (or `-machine initrd=`).
    pub initrd: Option<PathBuf>,
    /// `-append` (or `-machine append=`); empty when not given.
    pub append: String,
    /// Character devices: `-chardev` and those implied by `-serial`, `-qmp`,
    /// `-monitor` (labelled `serialN`, `compat_monitorN` as in QEMU).
    pub chardevs: Vec<ChardevSpec>,
    /// Serial ports in order: index 0 is COM1.
    pub serials: Vec<SerialSpec>,
    /// Monitors (`-mon`, `-qmp`, `-qmp-pretty`, `-monitor`, `-serial mon:...`).
    pub monitors: Vec<MonitorSpec>,
    /// `-qtest`: the qtest protocol server's chardev and log.
    pub qtest: Option<QtestSpec>,
    /// `-S`: do not start the vCPUs.
    pub start_paused: bool,
    /// `-no-shutdown` was given (also reflected in `actions.shutdown`).
    pub no_shutdown: bool,
    /// `-no-reboot` was given (also reflected in `actions.reboot`).
    pub no_reboot: bool,
    /// Run-state actions after `-action`, `-watchdog-action`, `-no-reboot`,
    /// `-no-shutdown`, applied in command-line order.
    pub actions: Actions,
    /// `-name guest=`.
    pub name: Option<String>,
    /// `-name process=`: the host process name.
    pub process_name: Option<String>,
    /// `-name debug-threads=on`: name host threads after their role.
    pub debug_threads: bool,
    /// `-uuid`.
    pub uuid: Option<Uuid>,
    /// `-rtc`.
    pub rtc: RtcSpec,
    /// `-daemonize`.
    pub daemonize: bool,
    /// `-pidfile`.
    pub pidfile: Option<PathBuf>,
    /// `-nodefaults`.
    pub nodefaults: bool,
    /// `-no-user-config`.
    pub no_user_config: bool,
    /// `-display none` or `-nographic`.
    pub display_none: bool,
    /// `-nographic`.
    pub nographic: bool,
    /// `-drive`.
    pub drives: Vec<DriveSpec>,
    /// `-blockdev`, as JSON objects (keyval leaves are strings).
    pub blockdevs: Vec<Value>,
    /// `-device`, as JSON objects with a `driver` member.
    pub devices: Vec<Value>,
    /// Where each of `blockdevs` and `devices` was written (`-device ARG`),
    /// same order: errors the machine finds later point there, as QEMU's do.
    pub blockdev_locations: Vec<String>,
    pub device_locations: Vec<String>,
    /// `-netdev`, as JSON objects with `type` and `id` members.
    pub netdevs: Vec<Value>,
    /// `-netdev ARG` of each of [`Config::netdevs`], for error messages.
    pub netdev_locations: Vec<String>,
    /// `-object`, as JSON objects with `qom-type` and `id` members.
    pub objects: Vec<Value>,
    /// Where each `-object` was given (for error messages).
    pub object_locations: Vec<String>,
    /// `-global`.
    pub globals: Vec<GlobalSpec>,
    /// `-overcommit mem-lock=on`: lock guest and VMM memory.
    pub mem_lock: bool,
    /// `-add-fd`, in command-line order.
    pub add_fds: Vec<AddFdSpec>,
    /// `-msg timestamp=on`: prefix messages with a timestamp.
    pub msg_timestamp: bool,
    /// `-sandbox on`: a seccomp sandbox was requested.
    pub sandbox: bool,
    /// `-bios FILE` (or `-machine firmware=`): the firmware image, as written;
    /// the VMM resolves a bare name against the data directories as QEMU's
    /// `qemu_find_file(QEMU_FILE_TYPE_BIOS, ...)` does.
    pub bios: Option<PathBuf>,
    /// `-L DIR`, in command-line order without repeats (QEMU's
    /// `qemu_add_data_dir`); the default directories come after these.
    pub data_dirs: Vec<PathBuf>,
    /// `-L help` was given: print the data directories (these, then the
    /// defaults) one per line and exit 0, as QEMU does once the whole command
    /// line has been read.
    pub list_data_dirs: bool,
    /// `-boot`, merged over all occurrences and validated as QEMU 7.2 does.
    pub boot: BootOptions,
    /// `-smbios`, in command-line order.
    pub smbios: Vec<SmbiosOption>,
    /// Where each of `smbios` was written (`-smbios ARG`), same order: errors
    /// found when the VMM reads a `file=` point there, as QEMU's do.
    pub smbios_locations: Vec<String>,
    /// Warnings to print (`ferrovm: <warning>`), e.g. deprecated short-form flags.
    pub warnings: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            machine: MachineSpec::default(),
            accel_kvm: false,
            accel_tcg: false,
            accel_qtest: false,
            cpu: CpuModel::default(),
            memory_bytes: DEFAULT_MEMORY_BYTES,
            memory_given: false,
            memory_slots: 0,
            memory_max_bytes: None,
            smp: Smp::default(),
            kernel: None,
            initrd: None,
            append: String::new(),
            chardevs: Vec::new(),
            serials: Vec::new(),
            monitors: Vec::new(),
            qtest: None,
            start_paused: false,
            no_shutdown: false,
            no_reboot: false,
            actions: Actions::default(),
            name: None,
            process_name: None,
            debug_threads: false,
            uuid: None,
            rtc: RtcSpec::default(),
            daemonize: false,
            pidfile: None,
            nodefaults: false,
            no_user_config: false,
            display_none: false,
            nographic: false,
            drives: Vec::new(),
            blockdevs: Vec::new(),
            devices: Vec::new(),
            blockdev_locations: Vec::new(),
            device_locations: Vec::new(),
            netdevs: Vec::new(),
            netdev_locations: Vec::new(),
            objects: Vec::new(),
            object_locations: Vec::new(),
            globals: Vec::new(),
            mem_lock: false,
            add_fds: Vec::new(),
            msg_timestamp: false,
            sandbox: false,
            bios: None,
            data_dirs: Vec::new(),
            list_data_dirs: false,
            boot: BootOptions::default(),
            smbios: Vec::new(),
            smbios_locations: Vec::new(),
            warnings: Vec::new(),
        }
    }
}

impl Config {
    /// The chardev with this id.
    pub fn chardev(&self, id: &str) -> Option<&ChardevSpec> {
        self.chardevs.iter().find(|c| c.id == id)
    }
}

/// The machine family ferrovm builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MachineKind {
    /// ferrovm's PC (Q35-like): `q35`, `pc`, `pc-q35-*`, `pc-i440fx-*`, `ferrovm`.
    Q35,
    /// `none`: no board, for probing (QMP only).
    None,
}

/// `-machine`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineSpec {
    pub kind: MachineKind,
    /// The type name as given (`q35`, `pc-q35-7.2`, ...); `q35` by default.
    pub name: String,
    /// `memory-backend=ID`: the `-object memory-backend-*` that provides RAM.
    pub memory_backend: Option<String>,
    /// `dump-guest-core=`: include guest RAM in host core dumps (default on).
    pub dump_guest_core: bool,
    /// `mem-merge=`: allow KSM merging of guest RAM (default on).
    pub mem_merge: bool,
    /// `acpi=` (and `-no-acpi`): `false` for `off`; `on` and `auto` build ACPI.
    pub acpi: bool,
}

impl Default for MachineSpec {
    fn default() -> Self {
        MachineSpec {
            kind: MachineKind::Q35,
            name: "q35".to_string(),
            memory_backend: None,
            dump_guest_core: true,
            mem_merge: true,
            acpi: true,
        }
    }
}

/// The `-cpu` model name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuModelName {
    /// `host`: pass the host CPU through.
    Host,
    /// `max`: all features KVM supports (the same as `host` under KVM).
    Max,
    /// `qemu64`, QEMU's default model: a conservative x86-64 baseline.
    Qemu64,
}

/// A `-cpu` feature setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CpuFeatureValue {
    /// `+feat`, `feat`, `feat=on`.
    On,
    /// `-feat`, `feat=off`.
    Off,
    /// `feat=value` with a non-boolean value.
    Value(String),
}

/// One `-cpu` feature, in command-line order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuFeature {
    pub name: String,
    pub value: CpuFeatureValue,
}

/// `-cpu`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuModel {
    pub model: CpuModelName,
    pub features: Vec<CpuFeature>,
}

impl Default for CpuModel {
    fn default() -> Self {
        CpuModel {
            model: CpuModelName::Qemu64,
            features: Vec::new(),
        }
    }
}

/// `-smp` after QEMU's computation of omitted values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Smp {
    /// vCPUs present at start.
    pub cpus: u32,
    pub sockets: u32,
    pub dies: u32,
    pub cores: u32,
    pub threads: u32,
    /// vCPUs possible (hot-plug ceiling); `sockets*dies*cores*threads`.
    pub max_cpus: u32,
}

impl Default for Smp {
    fn default() -> Self {
        Smp {
            cpus: 1,
            sockets: 1,
            dies: 1,
            cores: 1,
            threads: 1,
            max_cpus: 1,
        }
    }
}

/// A character device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChardevSpec {
    pub id: String,
    pub backend: ChardevBackend,
    /// `mux=on`: several front ends (serial, monitor) share it.
    pub mux: bool,
}

/// What a character device connects to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChardevBackend {
    /// The VMM's stdin/stdout. `signal`: Ctrl-C etc. raise signals in the VMM
    /// (default on; off for `-serial mon:stdio`, so Ctrl-C reaches the guest).
    Stdio { signal: bool },
    /// Discards output, never produces input.
    Null,
    /// Output to a file (`append`: do not truncate).
    File { path: PathBuf, append: bool },
    /// A stream socket.
    Socket(SocketSpec),
    /// A pseudo-terminal whose slave path is announced at start-up (libvirt's console).
    Pty,
}

/// A socket chardev.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketSpec {
    pub addr: SocketAddress,
    /// Listen (`server=on`) rather than connect.
    pub server: bool,
    /// For a server: block start-up until a client connects (QEMU's default
    /// `wait=on`). Always false for clients.
    pub wait: bool,
    /// `nodelay=on`: disable Nagle (TCP).
    pub nodelay: bool,
}

/// Where a socket chardev listens or connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketAddress {
    /// `path=` / `unix:PATH`.
    Unix(PathBuf),
    /// `host=,port=` / `tcp:HOST:PORT`; an empty host means all addresses.
    Tcp { host: String, port: u16 },
    /// `fd=N`: an already open socket passed by the parent (libvirt).
    Fd(i32),
}

/// `-qtest DEV` and `-qtest-log FILE`: the qtest protocol server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QtestSpec {
    /// Its chardev (`qtest`, or the `-chardev` that `chardev:ID` names).
    pub chardev_id: String,
    /// Where the protocol is logged: QEMU's default is stderr, `none` is
    /// nowhere (softmmu/qtest.c `qtest_server_start`).
    pub log: QtestLog,
}

/// `-qtest-log`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum QtestLog {
    #[default]
    Stderr,
    None,
    File(PathBuf),
}

/// A serial port, bound to a chardev.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerialSpec {
    pub chardev_id: String,
}

/// The protocol a monitor speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MonitorMode {
    /// QMP.
    Control,
    /// HMP (human monitor).
    Readline,
}

/// A monitor on a chardev.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorSpec {
    /// `-mon id=`.
    pub id: Option<String>,
    pub chardev_id: String,
    pub mode: MonitorMode,
    /// Pretty-print QMP JSON (`pretty=on`, `-qmp-pretty`).
    pub pretty: bool,
}

macro_rules! qapi_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $var:ident = $s:literal),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vm])* $var),* }
        impl $name {
            /// All values, in QAPI order.
            pub const ALL: &'static [$name] = &[$($name::$var),*];
            /// The QAPI name.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$var => $s),* }
            }
            pub(crate) const NAMES: &'static [&'static str] = &[$($s),*];
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl FromStr for $name {
            type Err = ();
            fn from_str(s: &str) -> Result<Self, ()> {
                match s { $($s => Ok($name::$var),)* _ => Err(()) }
            }
        }
    };
}

qapi_enum!(
    /// QAPI `RebootAction`: what a guest reboot does.
    RebootAction { Reset = "reset", Shutdown = "shutdown" }
);
qapi_enum!(
    /// QAPI `ShutdownAction`: what a guest shutdown does.
    ShutdownAction { Poweroff = "poweroff", Pause = "pause" }
);
qapi_enum!(
    /// QAPI `PanicAction`: what a guest panic does.
    PanicAction { Pause = "pause", Shutdown = "shutdown", ExitFailure = "exit-failure", None = "none" }
);
qapi_enum!(
    /// QAPI `WatchdogAction`: what a watchdog expiry does.
    WatchdogAction {
        Reset = "reset",
        Shutdown = "shutdown",
        Poweroff = "poweroff",
        Pause = "pause",
        Debug = "debug",
        None = "none",
        InjectNmi = "inject-nmi",
    }
);
qapi_enum!(
    /// `-rtc clock=`: the clock the RTC follows.
    RtcClock { Host = "host", Rt = "rt", Vm = "vm" }
);
qapi_enum!(
    /// `-rtc driftfix=`: lost-tick compensation.
    RtcDriftfix { None = "none", Slew = "slew" }
);
qapi_enum!(
    /// `-drive if=`: the interface a drive is attached to.
    DriveInterface {
        None = "none",
        Ide = "ide",
        Scsi = "scsi",
        Floppy = "floppy",
        Pflash = "pflash",
        Mtd = "mtd",
        Sd = "sd",
        Virtio = "virtio",
        Xen = "xen",
    }
);

/// Run-state actions (QMP `set-action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Actions {
    pub reboot: RebootAction,
    pub shutdown: ShutdownAction,
    pub panic: PanicAction,
    pub watchdog: WatchdogAction,
}

impl Default for Actions {
    /// QEMU 7.2's defaults.
    fn default() -> Self {
        Actions {
            reboot: RebootAction::Reset,
            shutdown: ShutdownAction::Poweroff,
            panic: PanicAction::Shutdown,
            watchdog: WatchdogAction::Reset,
        }
    }
}

/// `-rtc base=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtcBase {
    Utc,
    Localtime,
    /// A fixed start date, in seconds since the Unix epoch (UTC).
    Datetime(i64),
}

/// `-rtc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtcSpec {
    pub base: RtcBase,
    pub clock: RtcClock,
    pub driftfix: RtcDriftfix,
}

impl Default for RtcSpec {
    fn default() -> Self {
        RtcSpec {
            base: RtcBase::Utc,
            clock: RtcClock::Host,
            driftfix: RtcDriftfix::None,
        }
    }
}

/// `-drive`: the common keys typed, every key kept as given.
#[derive(Debug, Clone, PartialEq)]
pub struct DriveSpec {
    pub id: Option<String>,
    pub file: Option<PathBuf>,
    /// `if=`: `none`, `virtio`, or (under `-accel qtest` only) `ide`.
    pub interface: DriveInterface,
    /// `media=cdrom` (under `-accel qtest` only): a read-only drive with
    /// removable media, which may be empty.
    pub cdrom: bool,
    pub format: Option<String>,
    /// All keys as given (values are strings, as in QEMU's QemuOpts).
    pub opts: Map<String, Value>,
    /// Where it was written (`-drive ARG`), for later errors.
    pub location: String,
}

/// `-add-fd fd=FD,set=SET[,opaque=S]`: an inherited descriptor put in a
/// descriptor set, which `/dev/fdset/SET` paths then open. Checked when the
/// machine is set up (QEMU's `parse_add_fd`): `None` is a missing key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddFdSpec {
    pub fd: Option<u64>,
    pub set: Option<u64>,
    pub opaque: Option<String>,
}

/// `-global driver.property=value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalSpec {
    pub driver: String,
    pub property: String,
    pub value: String,
}

/// QEMU's `default_boot_order` for the PC machines (`hw/i386/pc.c`): floppy,
/// hard disk, CD-ROM.
pub const DEFAULT_BOOT_ORDER: &str = "cad";

/// `-boot` (QAPI `BootConfiguration`), what the firmware is told through
/// fw_cfg (`bootorder`, `etc/boot-menu-wait`, `etc/boot-fail-wait`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootOptions {
    /// `order=`: boot device letters (`a`-`p`, each at most once); `cad` when not given.
    pub order: String,
    /// `once=`: the order for the first boot only; `order` applies after a reset.
    pub once: Option<String>,
    /// `menu=on`: show the firmware's boot menu.
    pub menu: bool,
    /// `splash=`: a boot splash image file (JPEG or BMP), as written; the VMM
    /// looks it up like a `-bios` file.
    pub splash: Option<String>,
    /// `splash-time=`: how long the menu/splash waits, in milliseconds (0..=65535).
    pub splash_time: Option<u32>,
    /// `reboot-timeout=`: ms before a failed boot reboots; -1 means never
    /// (-1..=65535). QEMU gives the firmware -1 when it is not given.
    pub reboot_timeout: Option<i64>,
    /// `strict=on`: boot only from the devices in the boot order.
    pub strict: bool,
}

impl Default for BootOptions {
    fn default() -> Self {
        BootOptions {
            order: DEFAULT_BOOT_ORDER.to_string(),
            once: None,
            menu: false,
            splash: None,
            splash_time: None,
            reboot_timeout: None,
            strict: false,
        }
    }
}

/// One `-smbios` option (QEMU 7.2 `hw/smbios/smbios.c`, `smbios_entry_add`).
///
/// Each keeps only what was written; the SMBIOS builder applies them in
/// order as QEMU does (a later string replaces an earlier one; OEM strings
/// accumulate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SmbiosOption {
    /// `file=`: a binary SMBIOS structure to include as is.
    File(PathBuf),
    /// `type=0`: BIOS information.
    Type0(SmbiosType0),
    /// `type=1`: system information.
    Type1(SmbiosType1),
    /// `type=2`: baseboard information.
    Type2(SmbiosType2),
    /// `type=3`: chassis information.
    Type3(SmbiosType3),
    /// `type=4`: processor information (one table per socket).
    Type4(SmbiosType4),
    /// `type=11`: OEM strings, in order (`value=` and `path=` may repeat).
    Type11(Vec<SmbiosOemString>),
    /// `type=17`: memory device (one table per 16 GiB of RAM).
    Type17(SmbiosType17),
}

/// `-smbios type=0,...`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SmbiosType0 {
    pub vendor: Option<String>,
    pub version: Option<String>,
    pub date: Option<String>,
    /// `release=MAJOR.MINOR` (each read as C's `%hhu`, so 256 wraps to 0).
    pub release: Option<(u8, u8)>,
    /// `uefi=`; QEMU resets it to off on every `type=0` option without it.
    pub uefi: Option<bool>,
}

/// `-smbios type=1,...`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SmbiosType1 {
    pub manufacturer: Option<String>,
    pub product: Option<String>,
    pub version: Option<String>,
    pub serial: Option<String>,
    /// `uuid=`: also the machine UUID, exactly as `-uuid` (QEMU shares one
    /// `qemu_uuid`), so it is applied to [`Config::uuid`] in command-line order.
    pub uuid: Option<Uuid>,
    pub sku: Option<String>,
    pub family: Option<String>,
}

/// `-smbios type=2,...`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SmbiosType2 {
    pub manufacturer: Option<String>,
    pub product: Option<String>,
    pub version: Option<String>,
    pub serial: Option<String>,
    pub asset: Option<String>,
    pub location: Option<String>,
}

/// `-smbios type=3,...`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SmbiosType3 {
    pub manufacturer: Option<String>,
    pub version: Option<String>,
    pub serial: Option<String>,
    pub asset: Option<String>,
    pub sku: Option<String>,
}

/// `-smbios type=4,...`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SmbiosType4 {
    /// `sock_pfx=`: socket designation prefix (default `CPU`, then the
    /// socket number as `%2x`).
    pub sock_pfx: Option<String>,
    pub manufacturer: Option<String>,
    pub version: Option<String>,
    pub serial: Option<String>,
    pub asset: Option<String>,
    pub part: Option<String>,
    /// `max-speed=` MHz; QEMU resets it to 2000 on every `type=4` option without it.
    pub max_speed: Option<u16>,
    /// `current-speed=` MHz; likewise reset to 2000.
    pub current_speed: Option<u16>,
    /// `processor-id=`; 0 (the reset value) means the CPU's CPUID signature.
    pub processor_id: Option<u64>,
}

/// One `-smbios type=11` OEM string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SmbiosOemString {
    /// `value=`.
    Value(String),
    /// `path=`: the file's contents (QEMU rejects a NUL in it).
    Path(PathBuf),
}

/// `-smbios type=17,...`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SmbiosType17 {
    /// `loc_pfx=`: device locator prefix (default `DIMM`, then ` N`).
    pub loc_pfx: Option<String>,
    pub bank: Option<String>,
    pub manufacturer: Option<String>,
    pub serial: Option<String>,
    pub asset: Option<String>,
    pub part: Option<String>,
    /// `speed=` MT/s; QEMU stores it in 16 bits without a check, so it is
    /// truncated (70000 becomes 4464), and resets it to 0 when not given.
    pub speed: Option<u16>,
}

/// A UUID (`-uuid`), displayed in QEMU's lower-case 8-4-4-4-12 form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Uuid(pub [u8; 16]);

impl Uuid {
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// The error of [`Uuid::from_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UuidParseError;

impl fmt::Display for UuidParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("failed to parse UUID string: wrong format")
    }
}

impl FromStr for Uuid {
    type Err = UuidParseError;
    /// Accepts `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, hex digits of either case.
    fn from_str(s: &str) -> Result<Self, UuidParseError> {
        let b = s.as_bytes();
        if b.len() != 36 {
            return Err(UuidParseError);
        }
        let mut out = [0u8; 16];
        let mut n = 0;
        let mut i = 0;
        while i < 36 {
            if matches!(i, 8 | 13 | 18 | 23) {
                if b[i] != b'-' {
                    return Err(UuidParseError);
                }
                i += 1;
                continue;
            }
            let hi = (b[i] as char).to_digit(16).ok_or(UuidParseError)?;
            let lo = (b[i + 1] as char).to_digit(16).ok_or(UuidParseError)?;
            out[n] = (hi * 16 + lo) as u8;
            n += 1;
            i += 2;
        }
        Ok(Uuid(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_round_trip() {
        let u: Uuid = "12345678-1234-1234-1234-1234567890AB".parse().unwrap();
        assert_eq!(u.to_string(), "12345678-1234-1234-1234-1234567890ab");
        assert_eq!(u.as_bytes()[0], 0x12);
        assert_eq!(u.as_bytes()[15], 0xab);
    }

    #[test]
    fn uuid_rejects() {
        for bad in [
            "",
            "foo",
            "12345678123412341234123456789",
            "12345678-1234-1234-1234-1234567890ag",
            "12345678-1234-1234-1234-1234567890abc",
            "123456781-234-1234-1234-1234567890ab",
            "12345678-1234-1234-1234-1234567890a\u{e9}",
        ] {
            assert!(bad.parse::<Uuid>().is_err(), "{bad}");
        }
    }

    #[test]
    fn enums() {
        assert_eq!("inject-nmi".parse(), Ok(WatchdogAction::InjectNmi));
        assert_eq!(PanicAction::ExitFailure.as_str(), "exit-failure");
        assert_eq!(WatchdogAction::ALL.len(), 7);
        assert!("bogus".parse::<RebootAction>().is_err());
        assert_eq!(Actions::default().panic, PanicAction::Shutdown);
    }
}
