//! Building virtio-pci functions on bus 0, the same way for every device
//! model: the model wrapped for the backend thread, its transport with
//! MSI-X vectors and an INTx line wired to KVM, its doorbells as ioeventfds,
//! its place in the boot order.

use std::sync::{Arc, Mutex};

use devices::pci::{FunctionOptions, PciAddress};
use devices::virtio::pci::VirtioPciDevice;
use devices::virtio::VirtioDevice;
use vm_memory::GuestMemoryMmap;

use super::nic::Nic;
use super::qdev::VirtioPciProxy;
use super::virtio::{self as glue, Served, Watched};
use super::{balloon, bootorder, intx, kvm_wiring, pci, DeviceManager, Peripheral, PlannedModel};
use crate::sync::lock;

/// What differs between virtio-pci drivers when the function is built.
pub struct FunctionSpec<'a> {
    /// The QOM type (`virtio-blk-pci`), which `query-pci` and errors name.
    pub driver: &'static str,
    pub proxy: &'a VirtioPciProxy,
    /// The driver's MSI-X vector count when `vectors=` is not given (0:
    /// INTx only, as QEMU's balloon).
    pub default_vectors: u16,
    /// The OpenFirmware path of the function at an address, for `bootindex=`.
    pub boot_path: fn(PciAddress) -> String,
    /// Its QOM path.
    pub qom_path: &'a str,
}

impl DeviceManager {
    /// Builds `model` as a virtio-pci function. Errors are QEMU's texts.
    pub fn add_virtio_pci<D: VirtioDevice + 'static>(
        &self,
        mem: &GuestMemoryMmap,
        model: Arc<Mutex<D>>,
        spec: FunctionSpec<'_>,
    ) -> Result<(PciAddress, Watched<D>), String> {
        let served = Served::new(model, self.backend.handle().clone());
        let watched = served.watched();
        let nvectors = spec.proxy.vectors.unwrap_or(spec.default_vectors);
        let msi = self.wiring.msi_group(nvectors).map_err(|e| e.to_string())?;
        let line = intx::LevelLine::new().map_err(|e| e.to_string())?;
        let transport = VirtioPciDevice::new(
            Arc::new(Mutex::new(served)),
            mem.clone(),
            nvectors,
            msi,
            Some(line.clone()),
        )
        .map_err(|e| e.to_string())?;
        let transport = Arc::new(Mutex::new(transport));
        let addr = self.pci.add_on(
            &spec.proxy.pci,
            transport.clone(),
            FunctionOptions {
                driver: spec.driver.into(),
                id: spec.proxy.id.clone().unwrap_or_default(),
                multifunction: spec.proxy.pci.multifunction,
            },
        )?;
        for io in lock(&transport).ioevents() {
            self.wiring
                .add_ioeventfd(
                    pci::doorbell_owner(addr, io.bar),
                    kvm_wiring::IoSpace::Mmio,
                    io.offset,
                    &io.eventfd,
                )
                .map_err(|e| e.to_string())?;
        }
        glue::watch_kicks(&transport, self.backend.handle());
        lock(&self.peripherals).push(Peripheral {
            qom_path: spec.qom_path.to_string(),
            driver: spec.driver,
        });
        if let Some(index) = spec.proxy.bootindex {
            lock(&self.boot_devices).push(bootorder::BootDevice {
                index,
                path: self.pci.fw_path((spec.boot_path)(addr), addr),
            });
        }
        // virtio-pci raises INTA# when MSI-X is off (QEMU: interrupt pin 1).
        if let Some(gsi) = self.pci.intx_gsi(addr, 1) {
            line.wire(gsi, &self.wiring, self.backend.handle())
                .map_err(|e| e.to_string())?;
        }
        Ok((addr, watched))
    }
}

impl DeviceManager {
    /// Builds a planned function (virtio or not).
    pub(super) fn add_planned(
        &self,
        mem: &GuestMemoryMmap,
        model: PlannedModel,
        qom_path: String,
    ) -> Result<PciAddress, String> {
        match model {
            PlannedModel::Block {
                request,
                model,
                backend,
            } => {
                let queues = model.queue_max_sizes().len() as u16;
                let model = Arc::new(Mutex::new(model));
                // block_resize reaches the guest as a capacity change (config interrupt).
                let resized = Arc::downgrade(&model);
                backend.on_resize(move |size| {
                    if let Some(m) = resized.upgrade() {
                        lock(&m).resize(size);
                    }
                });
                let spec = FunctionSpec {
                    driver: request.proxy.type_name("virtio-blk-pci"),
                    proxy: &request.proxy,
                    // QEMU's default: one vector per queue plus one for configuration.
                    default_vectors: queues + 1,
                    boot_path: bootorder::virtio_blk_path,
                    qom_path: &qom_path,
                };
                Ok(self.add_virtio_pci(mem, model, spec)?.0)
            }
            PlannedModel::Net {
                request,
                model,
                name,
                device_path,
            } => {
                let pairs = model.queue_pairs() as u16;
                let model = Arc::new(Mutex::new(model));
                let spec = FunctionSpec {
                    driver: request.proxy.type_name("virtio-net-pci"),
                    proxy: &request.proxy,
                    // hw/virtio/virtio-net-pci.c: two per queue pair, one for
                    // configuration changes (and the control queue).
                    default_vectors: 2 * pairs.max(1) + 1,
                    boot_path: bootorder::virtio_net_path,
                    qom_path: &qom_path,
                };
                let (addr, watched) = self.add_virtio_pci(mem, model.clone(), spec)?;
                lock(&self.nics).push(Arc::new(Nic::new(
                    name,
                    device_path,
                    model,
                    request.netdev.clone(),
                    watched,
                )));
                Ok(addr)
            }
            PlannedModel::Balloon { request, model } => {
                let model = Arc::new(Mutex::new(model));
                let spec = FunctionSpec {
                    driver: request.proxy.type_name("virtio-balloon-pci"),
                    proxy: &request.proxy,
                    // QEMU's virtio-balloon-pci has no MSI-X: INTx only.
                    default_vectors: 0,
                    boot_path: |_| String::new(),
                    qom_path: &qom_path,
                };
                let addr = self.add_virtio_pci(mem, model.clone(), spec)?.0;
                let b = balloon::Balloon::new(qom_path, model, self.backend.handle().clone());
                if self.balloon.set(b).is_err() {
                    return Err("Only one balloon device is supported".into());
                }
                Ok(addr)
            }
            PlannedModel::Watchdog { request } => self.add_i6300esb(request, qom_path),
            PlannedModel::PvPanicPci { request, report } => {
                let dev = devices::pvpanic::PvPanicPci::new(request.events, report)
                    .map_err(|e| e.to_string())?;
                let dev = Arc::new(Mutex::new(dev));
                self.add_pci_function(dev, "pvpanic-pci", request.pci, qom_path, None)
            }
            PlannedModel::RootPort { request } => self.add_root_port(request, qom_path),
            PlannedModel::PciBridge { request } => self.add_pcie_pci_bridge(request, qom_path),
            PlannedModel::Xhci { request } => self.add_xhci(mem, request, qom_path),
        }
    }
}
