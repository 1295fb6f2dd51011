//! From a parsed command line to a running machine: resolves chardevs,
//! checks what ferrovm cannot do yet (with a message naming it), and hands
//! the machine to the controller.

use cli::{Config, CpuFeatureValue, MachineKind};

use crate::console;
use crate::controller::Controller;
use crate::cpuid::{self, CpuModel, Topology};
use crate::daemon;
use crate::devices::firmware::{BootConfig, FirmwareSpec};
use crate::devices::legacy::LegacySpec;
use crate::devices::{plan, DeviceManager, DeviceSpec};
use crate::error::VmmError;
use crate::machine::{Machine, MachineSpec};
use crate::messages::{self, Exit};
use crate::monitors;
use crate::pidfile::Pidfile;
use crate::vcpu;
use crate::vm::{Vm, VmInfo};

/// Runs the machine `config` describes until it stops for good.
pub fn run(config: Config) -> Result<Exit, VmmError> {
    // `-device help` and `-device DRIVER,help` print and exit, as QEMU.
    if let Some(help) = crate::devices::qdev::help::requested(&config.devices) {
        match help {
            Ok(text) => print!("{text}"),
            Err(e) => eprintln!("ferrovm: {e}"),
        }
        return Ok(Exit::HelpPrinted);
    }
    check_supported(&config)?;
    // Before any thread starts, so that every one inherits the mask.
    crate::controller::block_signals_early()?;
    let fdsets = crate::fdsets::FdSets::from_specs(&config.add_fds)?;
    // Before any thread exists: fork() keeps only the calling thread.
    let daemon = if config.daemonize {
        Some(daemon::daemonize()?)
    } else {
        None
    };
    // Locked by this (the daemon) process, before anything else can clash
    // with a running instance (QEMU: qemu_maybe_daemonize). Held until
    // `run` returns; dropping it removes the file.
    let _pidfile = config.pidfile.as_deref().map(Pidfile::create).transpose()?;
    if !config.monitors.is_empty() {
        // Parsing the QMP schema takes ~0.5 ms: do it while the machine is built.
        std::thread::spawn(|| {
            qmp::schema();
        });
    }
    let console::Console {
        output: serial_out,
        input: console_input,
        info: serial_info,
    } = console::open(&config, &fdsets)?;
    vcpu::install_kick_handler()?;
    let (poll, sender, msgs) = messages::channel()?;
    let cpus = config.smp.cpus.clamp(1, u32::from(u16::MAX)) as u16;
    // QEMU opens the netdevs before it creates devices (net_init_clients).
    let mut netdevs = crate::network::Netdevs::open(&config.netdevs, &config.netdev_locations)
        .map_err(VmmError::Config)?;
    // qtest_enabled(), which blkdebug asks before it prints a suspension;
    // set once, before any drive opens.
    block::blkdebug::QTEST.store(config.accel_qtest, std::sync::atomic::Ordering::Relaxed);
    let plan = plan::plan(&config, &sender, cpus, &mut netdevs)?;
    if plan.format_help {
        return Ok(Exit::HelpPrinted);
    }
    if config.machine.kind == MachineKind::None {
        if let Some(p) = plan.pci.first() {
            return Err(VmmError::Config(format!(
                "{}: No 'PCI' bus found for device '{}'",
                p.location,
                p.driver()
            )));
        }
    }
    let plan::Plan {
        graph: block_graph,
        pci,
        pvpanic,
        tree,
        format_help: _,
    } = plan;

    let mut unbuilt = None;
    let mut device_tree = None;
    let machine = match config.machine.kind {
        // No guest runs under qtest: the board is its device tree, with no
        // KVM VM, guest RAM or register model (devices/tree.rs).
        MachineKind::Q35 if config.accel_qtest => {
            device_tree = Some(tree.with_pci(pci));
            None
        }
        MachineKind::Q35 => {
            let mut spec = machine_spec(&config)?;
            spec.pvpanic_port = pvpanic.first().map(|r| r.ioport);
            let layout = boot::MemoryLayout::new(spec.ram_bytes);
            let requests = {
                let sender = sender.clone();
                std::sync::Arc::new(move |r| {
                    messages::ControlSender::send(
                        &sender,
                        messages::ControlMsg::Vcpu(vcpu::VcpuEvent::Guest(r)),
                    )
                }) as devices::GuestRequestFn
            };
            let mut devices = DeviceManager::new(
                DeviceSpec {
                    legacy: LegacySpec {
                        mem_below_4g: layout.low_end(),
                        mem_above_4g: layout.high_bytes(),
                        cpus: spec.cpus.min(255) as u8,
                        serial_out,
                        rtc: rtc_spec(&config, spec.cpus as usize, &sender),
                        debugcons: console::debugcons(&config, &fdsets)?,
                        keyboard: spec.firmware.is_some(),
                        pvpanic: pvpanic
                            .iter()
                            .map(|r| (r.ioport, r.events, plan::panic_report(&sender)))
                            .collect(),
                    },
                    pci_mmio32: (
                        boot::layout::PCI_MMIO32_START,
                        boot::layout::PCI_MMIO32_START + boot::layout::PCI_MMIO32_SIZE,
                    ),
                    firmware: match spec.firmware {
                        Some(_) => Some(firmware_spec(&config, &spec)?),
                        None => None,
                    },
                    acpi: spec.acpi,
                },
                requests,
            )?;
            devices.plan_pci(pci, sender.clone());
            if config.start_paused {
                // Built after the monitors greet (Vm::defer_start); missing
                // files are still reported before anything listens.
                check_readable(&spec)?;
                unbuilt = Some((spec, devices));
                None
            } else {
                Some(Machine::new(spec, devices)?)
            }
        }
        MachineKind::None => None,
    };
    let info = vm_info(&config, serial_info);
    let mut vm = Vm::new(
        machine,
        sender,
        msgs,
        config.actions,
        info,
        !config.monitors.is_empty(),
    )
    .with_block(block_graph)
    .with_netdevs(netdevs)
    .with_tree(device_tree);
    if config.start_paused {
        vm.defer_start(unbuilt);
    }
    // QEMU opens the qtest chardev before the monitors (qemu_create_late_backends).
    let qtest = crate::qtest::QtestServer::open(
        &config,
        crate::controller::QTEST_LISTEN,
        crate::controller::QTEST_CONN,
    )?;
    let monitors = qmp::MonitorSet::new(monitors::specs(&config)?)
        .map_err(|e| VmmError::Config(format!("-qmp/-mon: {e}")))?;
    let controller = Controller::new(vm, monitors, poll, console_input)?.with_qtest(qtest);
    if let Some(d) = daemon {
        d.ready();
    }
    controller.run(config.start_paused)
}

/// What fw_cfg tells the firmware.
fn firmware_spec(config: &Config, spec: &MachineSpec) -> Result<FirmwareSpec, VmmError> {
    let layout = boot::MemoryLayout::new(spec.ram_bytes);
    let b = &config.boot;
    Ok(FirmwareSpec {
        ram_bytes: spec.ram_bytes,
        cpus: spec.cpus.min(255) as u16,
        max_cpus: spec.max_cpus.min(255) as u16,
        uuid: config
            .uuid
            .as_ref()
            .map(|u| *u.as_bytes())
            .unwrap_or([0; 16]),
        nographic: config.nographic,
        // The CLI checked the ranges (QEMU's messages).
        boot: BootConfig {
            menu: b.menu,
            splash_time: b.splash_time.map(|t| t.min(0xffff) as u16),
            reboot_timeout: b.reboot_timeout.map(|t| t as i32),
            strict: b.strict,
            order: b.order.clone(),
            once: b.once.clone(),
            splash: b
                .splash
                .as_deref()
                .and_then(|s| splash(s, &config.data_dirs)),
        },
        acpi: boot::AcpiConfig::new(spec.cpus as u8, spec.max_cpus as u8, layout)
            .with_pvpanic(spec.pvpanic_port),
        acpi_tables: spec.acpi,
        smbios: crate::devices::smbios_config::tables(config, spec.ram_bytes)?,
    })
}

/// `-boot splash=FILE`, found and checked as QEMU's `fw_cfg_bootsplash`
/// does: a problem is reported and the boot goes on without it.
fn splash(name: &str, data_dirs: &[std::path::PathBuf]) -> Option<(&'static str, Vec<u8>)> {
    let Ok(path) = crate::firmware_file::find_firmware(name, data_dirs) else {
        eprintln!("ferrovm: failed to find file '{name}'");
        return None;
    };
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) => {
            eprintln!(
                "ferrovm: failed to read splash file '{}': {e}",
                path.display()
            );
            return None;
        }
    };
    match crate::devices::firmware::splash_name(&bytes) {
        Some(fw_name) => Some((fw_name, bytes)),
        None => {
            eprintln!(
                "ferrovm: splash file '{}' format not recognized; must be JPEG or 24 bit BMP",
                path.display()
            );
            None
        }
    }
}

fn vm_info(config: &Config, serial_info: Option<serde_json::Value>) -> VmInfo {
    let machine_type = match config.machine.kind {
        MachineKind::None => "none-machine".to_string(),
        MachineKind::Q35 => match config.machine.name.as_str() {
            "q35" => "pc-q35-7.2-machine".to_string(),
            "pc" => "pc-i440fx-7.2-machine".to_string(),
            other => format!("{other}-machine"),
        },
    };
    VmInfo {
        name: config.name.clone(),
        uuid: config.uuid.as_ref().map(|u| u.to_string()),
        machine_type,
        // `-machine none` has no default RAM: QEMU reports 0 unless -m was given.
        ram_bytes: if config.machine.kind == MachineKind::None && !config.memory_given {
            0
        } else {
            config.memory_bytes
        },
        sockets: config.smp.sockets,
        cores: config.smp.cores * config.smp.dies,
        threads: config.smp.threads,
        chardevs: serial_info.into_iter().collect(),
        accel_tcg: config.accel_tcg,
        accel_qtest: config.accel_qtest,
    }
}

/// Fails as Machine::new would on a kernel or initrd that cannot be read.
fn check_readable(spec: &MachineSpec) -> Result<(), VmmError> {
    for (what, path) in [
        ("could not load kernel", &spec.kernel),
        ("could not load initrd", &spec.initrd),
    ] {
        if let Some(p) = path {
            let max = boot::MemoryLayout::new(spec.ram_bytes).low_end();
            boot::image_file::open(p, max).map_err(|err| VmmError::Image {
                what,
                path: p.display().to_string(),
                err,
            })?;
        }
    }
    Ok(())
}

fn machine_spec(config: &Config) -> Result<MachineSpec, VmmError> {
    let smp = config.smp;
    if smp.max_cpus > 255 {
        return Err(VmmError::Config(format!(
            "-smp: maxcpus={} is more than ferrovm's limit of 255 (xAPIC)",
            smp.max_cpus
        )));
    }
    let cpu_model = cpu_model(&config.cpu)?;
    Ok(MachineSpec {
        ram_bytes: config.memory_bytes,
        cpus: smp.cpus,
        max_cpus: smp.max_cpus,
        topology: Topology {
            threads: smp.threads,
            cores: smp.cores * smp.dies,
        },
        cpu_model,
        kernel: config.kernel.clone(),
        initrd: config.initrd.clone(),
        cmdline: config.append.clone(),
        // Without -kernel the machine boots its firmware, as QEMU's does,
        // found as QEMU finds -bios (its message when it is not).
        firmware: match config.kernel {
            Some(_) => None,
            None => {
                let name = config
                    .bios
                    .as_ref()
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_else(|| crate::firmware_file::DEFAULT_BIOS.into());
                Some(
                    crate::firmware_file::find_firmware(&name, &config.data_dirs)
                        .map_err(VmmError::Boot)?,
                )
            }
        },
        pvpanic_port: None,
        acpi: config.machine.acpi,
    })
}

fn cpu_model(cpu: &cli::CpuModel) -> Result<CpuModel, VmmError> {
    let mut removed = Vec::new();
    for f in &cpu.features {
        match &f.value {
            CpuFeatureValue::Off => removed.push(f.name.clone()),
            // Adding host features is a no-op: `host` already has all KVM supports.
            CpuFeatureValue::On => {}
            // Properties such as migratable=on (libvirt) do not change CPUID here.
            CpuFeatureValue::Value(_) => {}
        }
    }
    cpuid::check_feature_names(&removed).map_err(VmmError::Config)?;
    Ok(match cpu.model {
        cli::CpuModelName::Host | cli::CpuModelName::Max => CpuModel::Host { removed },
        cli::CpuModelName::Qemu64 => CpuModel::Baseline,
    })
}

/// `-rtc`, and RTC_CHANGE to the controller as a [`messages::DeviceEvent`].
fn rtc_spec(
    config: &Config,
    cpus: usize,
    sender: &std::sync::Arc<messages::ControlSender>,
) -> crate::devices::rtc::RtcSpec {
    let sender = sender.clone();
    let qom_path = crate::devices::rtc::rtc_qom_path(cpus);
    crate::devices::rtc::RtcSpec {
        base_offset: rtc_offset(config),
        clock: config.rtc.clock,
        slew: config.rtc.driftfix == cli::RtcDriftfix::Slew,
        report: Box::new(move |offset| {
            sender.send(messages::ControlMsg::Device(
                messages::DeviceEvent::RtcChange {
                    offset,
                    qom_path: qom_path.clone(),
                },
            ))
        }),
    }
}

fn rtc_offset(config: &Config) -> i64 {
    match config.rtc.base {
        cli::RtcBase::Utc => 0,
        cli::RtcBase::Localtime => local_utc_offset(),
        cli::RtcBase::Datetime(start) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            start - now
        }
    }
}

fn local_utc_offset() -> i64 {
    // SAFETY: localtime_r writes into our struct; time(NULL) has no preconditions.
    unsafe {
        let now = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&now, &mut tm).is_null() {
            return 0;
        }
        tm.tm_gmtoff
    }
}

/// Options the parser accepts (so command lines from libvirt and scripts
/// parse) but whose function ferrovm does not have yet: refuse by name
/// rather than silently ignore something that changes the guest.
fn check_supported(config: &Config) -> Result<(), VmmError> {
    let unsupported = |what: &str| {
        Err(VmmError::Config(format!(
            "{what} is not supported by ferrovm yet"
        )))
    };
    // `-device isa-serial` is COM1 (see console::serial_chardev) and
    // `isa-debugcon` a port (console::debugcons); the others
    // ferrovm builds are in qdev::DRIVERS, and qdev refuses the rest by name.
    for (d, loc) in config.devices.iter().zip(&config.device_locations) {
        let driver = console::device_driver(d).unwrap_or("?");
        if ["isa-serial", "isa-debugcon"].contains(&driver)
            || crate::devices::qdev::driver(driver).is_some()
        {
            continue;
        }
        if crate::devices::tree::tree_driver(driver).is_some() {
            // Only the device tree exists under qtest (devices/tree.rs).
            if config.accel_qtest {
                continue;
            }
            return Err(VmmError::Config(format!(
                "{loc}: '{driver}' has no register model in ferrovm (accepted only under -accel qtest, where no guest runs)"
            )));
        }
        return unsupported(&format!("-device '{driver}'"));
    }
    if console::serial_chardevs(config).len() > 1 {
        return unsupported("more than one serial port");
    }
    Ok(())
}
