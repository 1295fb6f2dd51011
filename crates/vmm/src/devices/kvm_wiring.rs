//! The one place that wires devices to KVM: irqfds (with resample fds for
//! level-triggered lines), ioeventfds, and the GSI routing table with the
//! MSI routes of every MSI-X vector.
//!
//! All of it belongs to one `VmFd`, and a reset rebuilds the KVM VM, so the
//! wiring keeps every registration and re-creates all of it on the new VM in
//! one call ([`KvmWiring::attach`]), after undoing it on the old one
//! ([`KvmWiring::detach`]: KVM lets an eventfd drive one VM at a time).
//! Devices never see a KVM fd: they hold eventfds and the
//! [`devices::interrupt::MsiVectors`] this module hands out.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use devices::interrupt::{MsiMessage, MsiVectors};
use kvm_bindings::{
    kvm_irq_routing_entry, KvmIrqRouting, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE, KVM_IRQ_ROUTING_IRQCHIP, KVM_IRQ_ROUTING_MSI,
};
use kvm_ioctls::{IoEventAddress, NoDatamatch, VmFd};
use vmm_sys_util::eventfd::EventFd;

use crate::error::VmmError;
use crate::sync::lock;

/// GSIs 0-23 are the IOAPIC's pins; MSI routes get GSIs from here up.
const FIRST_MSI_GSI: u32 = 24;
/// KVM_MAX_IRQ_ROUTES on x86 is 4096.
const MAX_GSI: u32 = 4096;

/// Where an ioeventfd listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoSpace {
    Pio,
    Mmio,
}

/// Identifies a group of ioeventfds that move together (a PCI function's
/// BAR): the VMM's own numbering.
pub type IoEventOwner = (u32, u8);

struct Irqfd {
    gsi: u32,
    fd: EventFd,
    resample: Option<EventFd>,
}

struct IoEvent {
    owner: IoEventOwner,
    space: IoSpace,
    /// Offset inside the owner's window.
    offset: u64,
    fd: EventFd,
}

#[derive(Default)]
struct State {
    vm: Option<Arc<VmFd>>,
    irqfds: Vec<Irqfd>,
    ioevents: Vec<IoEvent>,
    /// Where each owner's window is mapped now (`None`: not decoded).
    windows: BTreeMap<IoEventOwner, u64>,
    msi_routes: BTreeMap<u32, MsiMessage>,
    next_msi_gsi: u32,
}

/// Shared by the device manager and the [`MsiGroup`]s it hands out.
#[derive(Clone, Default)]
pub struct KvmWiring {
    state: Arc<Mutex<State>>,
}

fn kvm(what: &'static str) -> impl Fn(kvm_ioctls::Error) -> VmmError {
    move |e| VmmError::Kvm(what, e)
}

fn clone_fd(fd: &EventFd) -> Result<EventFd, VmmError> {
    fd.try_clone().map_err(VmmError::Io)
}

impl KvmWiring {
    pub fn new() -> Self {
        Self::default()
    }

    /// Wires everything registered so far to `vm` (a new or rebuilt VM).
    pub fn attach(&self, vm: Arc<VmFd>) -> Result<(), VmmError> {
        let mut s = lock(&self.state);
        set_routing(&vm, &s.msi_routes)?;
        for i in &s.irqfds {
            register_irqfd(&vm, i)?;
        }
        for e in &s.ioevents {
            if let Some(&base) = s.windows.get(&e.owner) {
                register_ioevent(&vm, e, base)?;
            }
        }
        s.vm = Some(vm);
        Ok(())
    }

    /// Undoes every registration on the current VM (before it is dropped).
    pub fn detach(&self) -> Result<(), VmmError> {
        let mut s = lock(&self.state);
        let Some(vm) = s.vm.take() else {
            return Ok(());
        };
        for i in &s.irqfds {
            vm.unregister_irqfd(&i.fd, i.gsi)
                .map_err(kvm("KVM_IRQFD deassign"))?;
        }
        for e in &s.ioevents {
            if let Some(&base) = s.windows.get(&e.owner) {
                unregister_ioevent(&vm, e, base)?;
            }
        }
        Ok(())
    }

    /// An edge-triggered line (or an MSI GSI): `fd` raises GSI `gsi`.
    pub fn add_irqfd(&self, gsi: u32, fd: &EventFd) -> Result<(), VmmError> {
        self.add(Irqfd {
            gsi,
            fd: clone_fd(fd)?,
            resample: None,
        })
    }

    /// A level-triggered line: KVM signals `resample` when the guest EOIs and
    /// the line drops; the device raises `fd` again if its level is still high.
    pub fn add_level_irqfd(
        &self,
        gsi: u32,
        fd: &EventFd,
        resample: &EventFd,
    ) -> Result<(), VmmError> {
        self.add(Irqfd {
            gsi,
            fd: clone_fd(fd)?,
            resample: Some(clone_fd(resample)?),
        })
    }

    fn add(&self, i: Irqfd) -> Result<(), VmmError> {
        let mut s = lock(&self.state);
        if let Some(vm) = &s.vm {
            register_irqfd(vm, &i)?;
        }
        s.irqfds.push(i);
        Ok(())
    }

    /// A doorbell: a guest write at `offset` inside `owner`'s window signals
    /// `fd` without leaving KVM (the backend thread serves it).
    pub fn add_ioeventfd(
        &self,
        owner: IoEventOwner,
        space: IoSpace,
        offset: u64,
        fd: &EventFd,
    ) -> Result<(), VmmError> {
        let mut s = lock(&self.state);
        let e = IoEvent {
            owner,
            space,
            offset,
            fd: clone_fd(fd)?,
        };
        if let (Some(vm), Some(&base)) = (&s.vm, s.windows.get(&owner)) {
            register_ioevent(vm, &e, base)?;
        }
        s.ioevents.push(e);
        Ok(())
    }

    /// `owner`'s window moved to `base` (`None`: no longer decoded, e.g. the
    /// guest cleared the command register's enable bit): its ioeventfds move
    /// with it.
    pub fn move_window(&self, owner: IoEventOwner, base: Option<u64>) -> Result<(), VmmError> {
        let mut s = lock(&self.state);
        let old = s.windows.get(&owner).copied();
        if old == base {
            return Ok(());
        }
        if let Some(vm) = s.vm.clone() {
            for e in s.ioevents.iter().filter(|e| e.owner == owner) {
                if let Some(o) = old {
                    unregister_ioevent(&vm, e, o)?;
                }
                if let Some(n) = base {
                    register_ioevent(&vm, e, n)?;
                }
            }
        }
        match base {
            Some(b) => s.windows.insert(owner, b),
            None => s.windows.remove(&owner),
        };
        Ok(())
    }

    /// `count` MSI vectors, each with its own GSI and irqfd.
    pub fn msi_group(&self, count: u16) -> Result<Arc<MsiGroup>, VmmError> {
        let mut vectors = Vec::new();
        for _ in 0..count {
            let gsi = {
                let mut s = lock(&self.state);
                if s.next_msi_gsi == 0 {
                    s.next_msi_gsi = FIRST_MSI_GSI;
                }
                let g = s.next_msi_gsi;
                if g >= MAX_GSI {
                    return Err(VmmError::Device("out of MSI routes".into()));
                }
                s.next_msi_gsi += 1;
                g
            };
            let fd = EventFd::new(libc::EFD_NONBLOCK).map_err(VmmError::Io)?;
            self.add_irqfd(gsi, &fd)?;
            vectors.push((gsi, fd));
        }
        Ok(Arc::new(MsiGroup {
            wiring: self.clone(),
            vectors,
        }))
    }

    fn set_msi_route(&self, gsi: u32, msg: Option<MsiMessage>) -> Result<(), VmmError> {
        let mut s = lock(&self.state);
        let changed = match msg {
            Some(m) => s.msi_routes.insert(gsi, m) != Some(m),
            None => s.msi_routes.remove(&gsi).is_some(),
        };
        if changed {
            if let Some(vm) = &s.vm {
                set_routing(vm, &s.msi_routes)?;
            }
        }
        Ok(())
    }

    #[cfg(test)]
    fn msi_routes(&self) -> BTreeMap<u32, MsiMessage> {
        lock(&self.state).msi_routes.clone()
    }
}

/// One PCI function's MSI vectors.
pub struct MsiGroup {
    wiring: KvmWiring,
    vectors: Vec<(u32, EventFd)>,
}

impl MsiVectors for MsiGroup {
    fn set_route(&self, vector: u16, msg: Option<MsiMessage>) {
        if let Some((gsi, _)) = self.vectors.get(usize::from(vector)) {
            if let Err(e) = self.wiring.set_msi_route(*gsi, msg) {
                log::error!("MSI vector {vector}: {e}");
            }
        }
    }

    fn trigger(&self, vector: u16) {
        if let Some((_, fd)) = self.vectors.get(usize::from(vector)) {
            let _ = fd.write(1);
        }
    }
}

fn register_irqfd(vm: &VmFd, i: &Irqfd) -> Result<(), VmmError> {
    match &i.resample {
        Some(r) => vm
            .register_irqfd_with_resample(&i.fd, r, i.gsi)
            .map_err(kvm("KVM_IRQFD (resample)")),
        None => vm.register_irqfd(&i.fd, i.gsi).map_err(kvm("KVM_IRQFD")),
    }
}

fn io_addr(e: &IoEvent, base: u64) -> IoEventAddress {
    let a = base.wrapping_add(e.offset);
    match e.space {
        IoSpace::Pio => IoEventAddress::Pio(a),
        IoSpace::Mmio => IoEventAddress::Mmio(a),
    }
}

fn register_ioevent(vm: &VmFd, e: &IoEvent, base: u64) -> Result<(), VmmError> {
    vm.register_ioevent(&e.fd, &io_addr(e, base), NoDatamatch)
        .map_err(kvm("KVM_IOEVENTFD"))
}

fn unregister_ioevent(vm: &VmFd, e: &IoEvent, base: u64) -> Result<(), VmmError> {
    vm.unregister_ioevent(&e.fd, &io_addr(e, base), NoDatamatch)
        .map_err(kvm("KVM_IOEVENTFD deassign"))
}

/// KVM_SET_GSI_ROUTING replaces the whole table, so it carries the
/// in-kernel irqchip's default routes too, as QEMU builds them
/// (hw/i386/kvm/irqchip.c `kvm_pc_setup_irq_routing`): GSIs 0-15 on the
/// PICs except the cascade (2), GSIs 0-23 on the IOAPIC with GSI 0 on pin 2.
fn set_routing(vm: &VmFd, msi: &BTreeMap<u32, MsiMessage>) -> Result<(), VmmError> {
    let mut entries = Vec::new();
    let chip = |gsi: u32, irqchip: u32, pin: u32| {
        let mut e = kvm_irq_routing_entry {
            gsi,
            type_: KVM_IRQ_ROUTING_IRQCHIP,
            ..Default::default()
        };
        e.u.irqchip.irqchip = irqchip;
        e.u.irqchip.pin = pin;
        e
    };
    for i in 0..8 {
        if i != 2 {
            entries.push(chip(i, KVM_IRQCHIP_PIC_MASTER, i));
        }
    }
    for i in 8..16 {
        entries.push(chip(i, KVM_IRQCHIP_PIC_SLAVE, i - 8));
    }
    for i in 0..24 {
        match i {
            0 => entries.push(chip(0, KVM_IRQCHIP_IOAPIC, 2)),
            2 => {}
            _ => entries.push(chip(i, KVM_IRQCHIP_IOAPIC, i)),
        }
    }
    for (&gsi, m) in msi {
        let mut e = kvm_irq_routing_entry {
            gsi,
            type_: KVM_IRQ_ROUTING_MSI,
            ..Default::default()
        };
        e.u.msi.address_lo = m.address as u32;
        e.u.msi.address_hi = (m.address >> 32) as u32;
        e.u.msi.data = m.data;
        entries.push(e);
    }
    let table = KvmIrqRouting::from_entries(&entries)
        .map_err(|e| VmmError::Device(format!("GSI routing table: {e:?}")))?;
    vm.set_gsi_routing(&table)
        .map_err(kvm("KVM_SET_GSI_ROUTING"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm() -> Arc<VmFd> {
        let kvm = kvm_ioctls::Kvm::new().expect("these tests need /dev/kvm (KVM_CREATE_VM)");
        let vm = kvm.create_vm().expect("KVM_CREATE_VM");
        vm.create_irq_chip().expect("KVM_CREATE_IRQCHIP");
        Arc::new(vm)
    }

    #[test]
    fn everything_moves_to_a_rebuilt_vm() {
        let w = KvmWiring::new();
        let line = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let resample = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let bell = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        w.add_level_irqfd(9, &line, &resample).unwrap();
        w.add_ioeventfd((1, 4), IoSpace::Mmio, 0x3000, &bell)
            .unwrap();
        w.move_window((1, 4), Some(0xfe00_0000)).unwrap();
        let msi = w.msi_group(3).unwrap();
        msi.set_route(
            1,
            Some(MsiMessage {
                address: 0xfee0_0000,
                data: 0x41,
            }),
        );
        let first = vm();
        w.attach(first.clone()).unwrap();
        // The same eventfd cannot drive two VMs at once: attaching to a
        // second VM only works because detach() released the first.
        assert!(
            first.register_irqfd(&line, 9).is_err(),
            "registered already"
        );
        w.detach().unwrap();
        assert!(first.register_irqfd(&line, 9).is_ok(), "detach released it");
        first.unregister_irqfd(&line, 9).unwrap();
        let second = vm();
        w.attach(second.clone()).unwrap();
        assert!(
            second.register_irqfd(&line, 9).is_err(),
            "re-created on the new VM"
        );
        // The doorbell is registered at the window's address on the new VM.
        assert!(second
            .register_ioevent(&bell, &IoEventAddress::Mmio(0xfe00_3000), NoDatamatch)
            .is_err());
        assert_eq!(w.msi_routes().len(), 1);
    }

    #[test]
    fn a_moved_window_moves_its_doorbells() {
        let w = KvmWiring::new();
        let v = vm();
        w.attach(v.clone()).unwrap();
        let bell = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        w.add_ioeventfd((2, 4), IoSpace::Mmio, 0x3004, &bell)
            .unwrap();
        w.move_window((2, 4), Some(0xc000_0000)).unwrap();
        w.move_window((2, 4), Some(0xd000_0000)).unwrap();
        let at = |a| v.register_ioevent(&bell, &IoEventAddress::Mmio(a), NoDatamatch);
        assert!(at(0xc000_3004).is_ok(), "the old address was released");
        v.unregister_ioevent(&bell, &IoEventAddress::Mmio(0xc000_3004), NoDatamatch)
            .unwrap();
        assert!(at(0xd000_3004).is_err(), "registered at the new address");
        w.move_window((2, 4), None).unwrap();
        assert!(at(0xd000_3004).is_ok(), "not decoded: no doorbell");
    }

    #[test]
    fn masking_a_vector_removes_its_route_and_vectors_get_distinct_gsis() {
        let w = KvmWiring::new();
        w.attach(vm()).unwrap();
        let a = w.msi_group(2).unwrap();
        let b = w.msi_group(1).unwrap();
        let m = MsiMessage {
            address: 0xfee0_0000,
            data: 0x30,
        };
        a.set_route(0, Some(m));
        a.set_route(1, Some(m));
        b.set_route(0, Some(m));
        let gsis: Vec<u32> = w.msi_routes().keys().copied().collect();
        assert_eq!(gsis, vec![24, 25, 26]);
        a.set_route(1, None);
        assert_eq!(
            w.msi_routes().keys().copied().collect::<Vec<_>>(),
            vec![24, 26]
        );
        a.set_route(7, Some(m)); // no such vector: ignored
        assert_eq!(w.msi_routes().len(), 2);
    }
}
