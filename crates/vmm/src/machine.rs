//! The KVM machine: VM fd, guest RAM, the device manager and vCPUs.
//!
//! A guest-visible reset rebuilds the KVM VM from scratch (fresh irqchip, PIT,
//! vCPU state), keeping guest RAM and the device models (CMOS NVRAM survives
//! a reset on a PC), then boots the kernel again. Cloud Hypervisor resets the
//! same way; it is simpler and more complete than resetting every piece of KVM
//! state in place.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;

use kvm_bindings::{kvm_pit_config, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Kvm, VmFd};
use vm_memory::GuestMemoryMmap;

use crate::cpuid::{CpuModel, Topology};
use crate::devices::DeviceManager;
use crate::error::VmmError;
use crate::kvm_stats::StatsFd;
use crate::memory_map::BiosRom;
use crate::vcpu::{EventSink, Vcpu, VcpuHandle};
use crate::{memory, vcpu_setup};

/// KVM on Intel needs three pages for the real-mode TSS and one for the
/// identity map, below 4 GiB and outside RAM and MMIO (QEMU uses the same spot).
const KVM_TSS_ADDRESS: usize = boot::layout::KVM_TSS_ADDR as usize;
const KVM_IDENTITY_MAP_ADDRESS: u64 = boot::layout::KVM_IDENTITY_MAP_ADDR;

/// What the machine is, independent of how the command line spelled it.
#[derive(Debug, Clone)]
pub struct MachineSpec {
    pub ram_bytes: u64,
    pub cpus: u32,
    pub max_cpus: u32,
    pub topology: Topology,
    pub cpu_model: CpuModel,
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    pub cmdline: String,
    /// The BIOS image for a firmware boot (no `kernel`), resolved as QEMU
    /// resolves `-bios`.
    pub firmware: Option<PathBuf>,
    /// `-device pvpanic`'s port, for the DSDT and fw_cfg.
    pub pvpanic_port: Option<u16>,
    /// `-machine acpi=`: without it there are no ACPI tables.
    pub acpi: bool,
}

pub struct Machine {
    pub spec: MachineSpec,
    // Field order matters: the VM (and its vCPUs, and the device wiring that
    // holds the VM too) go before the memory they map.
    vm: Arc<VmFd>,
    /// The VM's KVM_GET_STATS_FD, or QEMU's words for why there is none.
    vm_stats: Result<StatsFd, String>,
    kvm: Kvm,
    pub devices: DeviceManager,
    pub mem: GuestMemoryMmap,
    /// KVM_GET_SUPPORTED_CPUID's answer, asked once (it costs ~1 ms per call).
    supported_cpuid: kvm_bindings::CpuId,
    kernel: Option<boot::KernelImage>,
    initrd: Option<Vec<u8>>,
    layout: boot::MemoryLayout,
}

/// A regular file of at most `max` bytes (boot::image_file: never blocks or reads unboundedly).
fn read_file(what: &'static str, path: &Path, max: u64) -> Result<Vec<u8>, VmmError> {
    boot::image_file::read(path, max).map_err(|err| VmmError::Image {
        what,
        path: path.display().to_string(),
        err,
    })
}

/// The BIOS image at `path`, as QEMU loads `-bios` (hw/i386/x86.c
/// `x86_bios_rom_init`, whose message this is).
fn load_bios(path: &Path) -> Result<BiosRom, VmmError> {
    let fail = |why: String| {
        VmmError::Boot(format!(
            "could not load PC BIOS '{}': {why}",
            path.display()
        ))
    };
    let bytes = boot::image_file::read(path, 16 << 20).map_err(|e| fail(e.to_string()))?;
    BiosRom::new(&bytes).map_err(fail)
}

impl Machine {
    pub fn new(spec: MachineSpec, mut devices: DeviceManager) -> Result<Self, VmmError> {
        let kvm = Kvm::new().map_err(VmmError::KvmOpen)?;
        // KVM_GET_SUPPORTED_CPUID takes ~1 ms here; ask for it on another
        // thread while the VM is built.
        let cpuid_query = {
            let kvm = Kvm::new().map_err(VmmError::KvmOpen)?;
            std::thread::spawn(move || kvm.get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES))
        };
        let layout = boot::MemoryLayout::new(spec.ram_bytes);
        let mem = memory::create(&layout.ram_regions())?;
        let rom = match &spec.firmware {
            Some(path) => Some(load_bios(path)?),
            None => None,
        };
        devices.realize(&mem, rom)?;
        let vm = create_vm(&kvm, &devices)?;
        let kernel = match &spec.kernel {
            Some(path) => {
                let bytes = read_file("could not load kernel", path, layout.low_end())?;
                // Parsed (and for a PVH-capable bzImage, decompressed) once; loaded on every boot.
                Some(boot::KernelImage::parse(&bytes).map_err(|e| {
                    VmmError::Boot(format!("could not load kernel '{}': {e}", path.display()))
                })?)
            }
            None => None,
        };
        let initrd = spec
            .initrd
            .as_ref()
            .map(|p| read_file("could not load initrd", p, layout.low_end()))
            .transpose()?;
        if initrd.is_some() && kernel.is_none() {
            return Err(VmmError::Config(
                "-initrd is only supported with -kernel".into(),
            ));
        }
        let supported_cpuid = cpuid_query
            .join()
            .map_err(|_| VmmError::Device("CPUID query thread panicked".into()))?
            .map_err(|e| VmmError::Kvm("KVM_GET_SUPPORTED_CPUID", e))?;
        let vm_stats = StatsFd::open(vm.as_ref());
        Ok(Self {
            spec,
            vm_stats,
            vm,
            kvm,
            mem,
            devices,
            supported_cpuid,
            kernel,
            initrd,
            layout,
        })
    }

    /// Writes firmware tables and the kernel, then creates the vCPUs and
    /// starts their threads (paused when `start_paused`).
    pub fn boot(
        &mut self,
        sink: Arc<dyn EventSink>,
        start_paused: bool,
    ) -> Result<Vec<VcpuHandle>, VmmError> {
        let vcpus = self.prepare_vcpus()?;
        let mut handles = Vec::new();
        for (index, fd, runnable) in vcpus {
            // Opened here, while the fd is still ours: the monitor reads the
            // stats without asking the vCPU thread.
            let stats = StatsFd::open(&fd);
            let (tx, rx) = mpsc::channel();
            let vcpu = Vcpu {
                index,
                fd,
                pio: self.devices.pio.clone(),
                mmio: self.devices.mmio.clone(),
                commands: rx,
                events: sink.clone(),
                // Without a kernel there is nothing to run: the vCPUs wait.
                start_paused: start_paused || !runnable,
            };
            let (thread, tid) = vcpu.spawn()?;
            handles.push(VcpuHandle::new(index, tx, thread, tid, stats));
        }
        Ok(handles)
    }

    /// Writes the firmware tables and the kernel into guest RAM, and creates
    /// and configures every vCPU: (index, fd, has something to run). A
    /// firmware boot leaves RAM and the vCPUs in their reset state: the BSP
    /// starts at the reset vector, the APs wait for SIPIs.
    fn prepare_vcpus(&self) -> Result<Vec<(usize, kvm_ioctls::VcpuFd, bool)>, VmmError> {
        let firmware = self.spec.firmware.is_some();
        if firmware {
            let mut vcpus = Vec::new();
            for index in 0..self.spec.cpus {
                let fd = self.create_vcpu(index, true)?;
                vcpus.push((index as usize, fd, true));
            }
            return Ok(vcpus);
        }
        let acpi =
            boot::AcpiConfig::new(self.spec.cpus as u8, self.spec.max_cpus as u8, self.layout)
                .with_pvpanic(self.spec.pvpanic_port);
        // acpi=off: no tables, and the boot protocol says so with a zero RSDP
        // address (PVH start_info.rsdp_paddr, boot_params.acpi_rsdp_addr).
        let rsdp = if self.spec.acpi {
            boot::build_acpi(&self.mem, &acpi).map_err(|e| VmmError::Boot(e.to_string()))?
        } else {
            vm_memory::GuestAddress(0)
        };
        let entry = match &self.kernel {
            Some(k) => Some(
                k.load(
                    &self.mem,
                    self.initrd.as_deref(),
                    &self.spec.cmdline,
                    &self.layout,
                    rsdp,
                )
                .map_err(|e| VmmError::Boot(format!("could not load kernel: {e}")))?,
            ),
            None => None,
        };
        let mut vcpus = Vec::new();
        for index in 0..self.spec.cpus {
            let fd = self.create_vcpu(index, false)?;
            if index == 0 {
                if let Some(entry) = &entry {
                    let mut regs = fd
                        .get_regs()
                        .map_err(|e| VmmError::Kvm("KVM_GET_REGS", e))?;
                    let mut sregs = fd
                        .get_sregs()
                        .map_err(|e| VmmError::Kvm("KVM_GET_SREGS", e))?;
                    let mut fpu = fd.get_fpu().map_err(|e| VmmError::Kvm("KVM_GET_FPU", e))?;
                    boot::setup_boot_cpu(&self.mem, entry, &mut regs, &mut sregs, &mut fpu)
                        .map_err(|e| VmmError::Boot(e.to_string()))?;
                    fd.set_sregs(&sregs)
                        .map_err(|e| VmmError::Kvm("KVM_SET_SREGS", e))?;
                    fd.set_regs(&regs)
                        .map_err(|e| VmmError::Kvm("KVM_SET_REGS", e))?;
                    fd.set_fpu(&fpu)
                        .map_err(|e| VmmError::Kvm("KVM_SET_FPU", e))?;
                }
            }
            vcpus.push((index as usize, fd, entry.is_some()));
        }
        Ok(vcpus)
    }

    /// A vCPU with its CPUID; `at_reset` keeps the rest in the architectural
    /// reset state for firmware, else it gets what firmware would have set.
    fn create_vcpu(&self, index: u32, at_reset: bool) -> Result<kvm_ioctls::VcpuFd, VmmError> {
        let fd = self
            .vm
            .create_vcpu(u64::from(index))
            .map_err(|e| VmmError::Kvm("KVM_CREATE_VCPU", e))?;
        vcpu_setup::configure(
            &self.supported_cpuid,
            &fd,
            &self.spec.cpu_model,
            self.spec.topology,
            index,
            !at_reset,
        )?;
        Ok(fd)
    }

    /// Replaces the KVM VM with a fresh one and resets the device models.
    /// Every vCPU thread of the old VM must have ended.
    pub fn reset(&mut self) -> Result<(), VmmError> {
        // The old VM's slots are not worth remapping as the chipset resets.
        if let Some(m) = self.devices.memory() {
            m.release();
        }
        self.devices.reset()?;
        self.devices.detach()?;
        self.vm = create_vm(&self.kvm, &self.devices)?;
        let mut stats = StatsFd::open(self.vm.as_ref());
        if let (Ok(new), Ok(old)) = (&mut stats, &self.vm_stats) {
            new.carry_over(old);
        }
        self.vm_stats = stats;
        Ok(())
    }

    /// The VM's binary statistics (query-stats target `vm`).
    pub fn vm_stats(&self) -> Result<&StatsFd, String> {
        self.vm_stats.as_ref().map_err(Clone::clone)
    }
}

/// A VM with guest RAM, irqchip, PIT and interrupt lines.
fn create_vm(kvm: &Kvm, devices: &DeviceManager) -> Result<Arc<VmFd>, VmmError> {
    let vm = kvm
        .create_vm()
        .map_err(|e| VmmError::Kvm("KVM_CREATE_VM", e))?;
    vm.set_tss_address(KVM_TSS_ADDRESS)
        .map_err(|e| VmmError::Kvm("KVM_SET_TSS_ADDR", e))?;
    vm.set_identity_map_address(KVM_IDENTITY_MAP_ADDRESS)
        .map_err(|e| VmmError::Kvm("KVM_SET_IDENTITY_MAP_ADDR", e))?;
    let vm = Arc::new(vm);
    // Memory first: see MemoryMap::register_all for why the order matters.
    devices
        .memory()
        .ok_or_else(|| VmmError::Device("the VM is created before guest RAM".into()))?
        .register_all(&vm)?;
    vm.create_irq_chip()
        .map_err(|e| VmmError::Kvm("KVM_CREATE_IRQCHIP", e))?;
    let pit = kvm_pit_config {
        flags: KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    };
    vm.create_pit2(pit)
        .map_err(|e| VmmError::Kvm("KVM_CREATE_PIT2", e))?;
    devices.attach(vm.clone())?;
    Ok(vm)
}
