//! Parse state shared by the option handlers, and the final checks that need
//! the whole command line (references between options, defaults, topology).

use crate::config::{ChardevBackend, ChardevSpec, Config, SerialSpec};
use crate::error::CliError;
use crate::firmware;
use crate::machine;
use crate::memory::MemArgs;
use crate::smp::SmpArgs;
use std::collections::HashSet;

/// One option occurrence as written: where errors and warnings point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Inv {
    pub opt: String,
    pub arg: Option<String>,
}

impl Inv {
    pub(crate) fn new(opt: &str, arg: Option<&str>) -> Self {
        Inv {
            opt: opt.to_string(),
            arg: arg.map(str::to_string),
        }
    }
    /// An error at this occurrence.
    pub(crate) fn err(&self, msg: impl Into<String>) -> CliError {
        CliError::at(&self.opt, self.arg.as_deref(), msg)
    }
    /// `-opt ARG` as written: what errors found later point at.
    pub(crate) fn location(&self) -> String {
        match &self.arg {
            Some(a) => format!("{} {a}", self.opt),
            None => self.opt.clone(),
        }
    }
    /// The argument (empty for flags).
    pub(crate) fn arg(&self) -> &str {
        self.arg.as_deref().unwrap_or("")
    }
}

/// Everything collected while walking the options.
pub(crate) struct Builder {
    pub cfg: Config,
    pub smp: SmpArgs,
    pub mem: MemArgs,
    /// QEMU's `default_serial`: cleared by `-serial` and `-nodefaults`.
    pub default_serial: bool,
    /// QEMU's `default_monitor`: cleared by `-mon`, `-qmp`, `-monitor`, `-nodefaults`.
    pub default_monitor: bool,
    /// Next `compat_monitorN` index.
    pub monitor_index: u32,
    /// Where each chardev was declared.
    pub chardev_locs: Vec<(String, Inv)>,
    /// Front ends using a chardev: (chardev id, where, what kind).
    pub frontends: Vec<(String, Inv, Frontend)>,
    /// `-initrd`/`-append` (or the machine properties) were given.
    pub initrd_set: bool,
    pub append_set: bool,
    pub ids: HashSet<(&'static str, String)>,
    /// The last `-machine type=` and where it was given.
    pub machine_type: Option<(String, Inv)>,
    /// The last `-cpu`.
    pub cpu: Option<Inv>,
    /// Every `-accel`'s accelerator, in order (the first wins, see
    /// [`machine::resolve_accel`]).
    pub accels: Vec<(String, Inv)>,
    /// The first accelerator of the last `-machine accel=` (or `-enable-kvm`).
    pub machine_accel: Option<(String, Inv)>,
    /// Every `-boot` merged (keyval leaves), validated in [`Builder::finish`]
    /// as QEMU validates the machine's `boot` property.
    pub boot: serde_json::Map<String, serde_json::Value>,
    /// A help request QEMU answers where it stands in the command line
    /// (`-machine help`, `-accel help`): print this and exit 0.
    pub print_and_exit: Option<String>,
    /// `-qtest-log` (applied to `-qtest` once the command line is read).
    pub qtest_log: crate::config::QtestLog,
}

/// The kind of a chardev front end, for QEMU's wording when it is missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Frontend {
    Serial,
    Monitor,
    /// A `-device` with a `chardev` property; the device driver.
    Device(String),
    /// `-qtest`.
    Qtest,
}

impl Builder {
    pub(crate) fn new() -> Self {
        Builder {
            cfg: Config::default(),
            smp: SmpArgs::default(),
            mem: MemArgs::default(),
            default_serial: true,
            default_monitor: true,
            monitor_index: 0,
            chardev_locs: Vec::new(),
            frontends: Vec::new(),
            initrd_set: false,
            append_set: false,
            ids: HashSet::new(),
            machine_type: None,
            accels: Vec::new(),
            machine_accel: None,
            cpu: None,
            boot: serde_json::Map::new(),
            print_and_exit: None,
            qtest_log: Default::default(),
        }
    }

    /// Record a warning at `inv`.
    pub(crate) fn warn(&mut self, inv: &Inv, w: &str) {
        self.cfg.warnings.push(inv.err(w).to_string());
    }

    /// Register `id` in namespace `ns` (`"device"`, `"netdev"`, ...); QEMU's
    /// `Duplicate ID` error if taken.
    pub(crate) fn claim_id(
        &mut self,
        inv: &Inv,
        ns: &'static str,
        id: &str,
    ) -> Result<(), CliError> {
        if self.ids.insert((ns, id.to_string())) {
            Ok(())
        } else {
            Err(inv.err(format!("Duplicate ID '{id}' for {ns}")))
        }
    }

    /// Add a chardev, rejecting duplicate ids.
    pub(crate) fn add_chardev(&mut self, inv: &Inv, spec: ChardevSpec) -> Result<(), CliError> {
        self.claim_id(inv, "chardev", &spec.id)?;
        self.chardev_locs.push((spec.id.clone(), inv.clone()));
        self.cfg.chardevs.push(spec);
        Ok(())
    }

    fn loc_of(&self, id: &str) -> Inv {
        self.chardev_locs
            .iter()
            .find(|(i, _)| i == id)
            .map(|(_, l)| l.clone())
            .unwrap_or_else(|| Inv::new("-chardev", None))
    }

    /// Checks and defaults that need the whole command line.
    pub(crate) fn finish(mut self) -> Result<Config, CliError> {
        if let Some((name, inv)) = &self.machine_type {
            self.cfg.machine.kind = machine::machine_kind(name).map_err(|e| inv.err(e))?;
            self.cfg.machine.name = name.clone();
        }
        machine::resolve_accel(&mut self)?;
        crate::block::check_qtest_only(&self.cfg)?;
        if let Some(q) = &mut self.cfg.qtest {
            q.log = self.qtest_log.clone();
        }
        if let Some(inv) = &self.cpu {
            self.cfg.cpu = machine::parse_cpu(inv.arg()).map_err(|e| inv.err(e))?;
        }
        // QEMU: -nographic would put default devices on stdio.
        if self.cfg.daemonize && self.cfg.nographic && !self.cfg.nodefaults {
            return Err(CliError::new("-nographic cannot be used with -daemonize"));
        }
        // -nographic without -nodefaults: serial0 on stdio. (QEMU muxes a
        // readline monitor onto it too, "mon:stdio"; ferrovm does not.)
        if self.cfg.nographic && self.default_serial && !self.cfg.nodefaults {
            let inv = Inv::new("-nographic", None);
            let id = format!("serial{}", self.cfg.serials.len());
            self.add_chardev(
                &inv,
                ChardevSpec {
                    id: id.clone(),
                    backend: ChardevBackend::Stdio { signal: true },
                    mux: false,
                },
            )?;
            self.frontends.push((id.clone(), inv, Frontend::Serial));
            self.cfg.serials.push(SerialSpec { chardev_id: id });
        }
        // QEMU checks -boot when it creates the machine, after `-L help` exits.
        if !self.cfg.list_data_dirs {
            self.cfg.boot = firmware::resolve_boot(&self.boot).map_err(CliError::new)?;
        }
        self.check_chardevs()?;
        if self.cfg.kernel.is_none() {
            if self.append_set {
                return Err(CliError::new("-append only allowed with -kernel option"));
            }
            if self.initrd_set {
                return Err(CliError::new("-initrd only allowed with -kernel option"));
            }
        }
        let (max_cpus, prefer_sockets, qemu_name) = machine::smp_limits(&self.cfg.machine);
        self.cfg.smp =
            self.smp
                .resolve(max_cpus, prefer_sockets, &qemu_name, &mut self.cfg.warnings)?;
        self.mem.apply(&mut self.cfg)?;
        Ok(self.cfg)
    }

    fn check_chardevs(&self) -> Result<(), CliError> {
        let mut users: Vec<&str> = Vec::new();
        for (id, inv, kind) in &self.frontends {
            let Some(chr) = self.cfg.chardev(id) else {
                return Err(inv.err(match kind {
                    Frontend::Serial => {
                        format!(
                            "could not connect serial device to character backend 'chardev:{id}'"
                        )
                    }
                    Frontend::Monitor => format!("chardev \"{id}\" not found"),
                    Frontend::Device(d) => {
                        format!("Property '{d}.chardev' can't find value '{id}'")
                    }
                    // softmmu/qtest.c qtest_server_init.
                    Frontend::Qtest => {
                        format!("Failed to initialize device for qtest: \"{}\"", inv.arg())
                    }
                }));
            };
            if !chr.mux && users.contains(&id.as_str()) {
                return Err(inv.err(format!("Device '{id}' is in use")));
            }
            users.push(id);
        }
        let mut stdio_seen = false;
        for c in &self.cfg.chardevs {
            if matches!(c.backend, ChardevBackend::Stdio { .. }) {
                let inv = self.loc_of(&c.id);
                if self.cfg.daemonize {
                    return Err(inv.err("cannot use stdio with -daemonize"));
                }
                if stdio_seen {
                    return Err(inv.err("cannot use stdio by multiple character devices"));
                }
                stdio_seen = true;
            }
        }
        Ok(())
    }
}
