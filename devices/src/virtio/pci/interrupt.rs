//! Interrupt delivery of a virtio-pci function (virtio 1.2 §4.1.4.5,
//! §4.1.5.3-4): the queue's or configuration's MSI-X vector while MSI-X is
//! enabled, otherwise an ISR status bit and the INTx line.
//!
//! It lives apart from the transport, behind its own small lock, because
//! devices signal from the backend thread while a vCPU may hold the
//! transport: lock order is transport, then device, then this.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::interrupt::IntxLine;
use crate::pci::{Msix, PciConfigSpace};
use crate::virtio::VirtioInterrupt;

/// "No vector" in msix_config / queue_msix_vector (§4.1.4.3).
pub const VIRTIO_MSI_NO_VECTOR: u16 = 0xffff;
/// ISR bit 0: a used buffer notification.
pub const ISR_QUEUE: u8 = 0x1;
/// ISR bit 1: a configuration change.
pub const ISR_CONFIG: u8 = 0x2;

pub(crate) struct Vectors {
    pub(crate) msix: Option<Msix>,
    /// The MSI-X vector of each queue.
    pub(crate) queue: Vec<u16>,
    pub(crate) config: u16,
}

/// The interrupt state of one virtio-pci function; what the device gets as
/// its [`VirtioInterrupt`].
pub struct VirtioPciInterrupt {
    vectors: Mutex<Vectors>,
    isr: AtomicU8,
    generation: AtomicU8,
    driver_ok: AtomicBool,
    intx: Option<Arc<dyn IntxLine>>,
    intx_disabled: AtomicBool,
}

impl VirtioPciInterrupt {
    pub(crate) fn new(msix: Option<Msix>, queues: usize, intx: Option<Arc<dyn IntxLine>>) -> Self {
        Self {
            vectors: Mutex::new(Vectors {
                msix,
                queue: vec![VIRTIO_MSI_NO_VECTOR; queues],
                config: VIRTIO_MSI_NO_VECTOR,
            }),
            isr: AtomicU8::new(0),
            generation: AtomicU8::new(0),
            driver_ok: AtomicBool::new(false),
            intx,
            intx_disabled: AtomicBool::new(false),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Vectors> {
        self.vectors.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The ISR status register: reading it clears it and deasserts INTx
    /// (§4.1.4.5; QEMU `virtio_pci_isr_read`).
    pub fn read_isr(&self) -> u8 {
        let v = self.isr.swap(0, Ordering::SeqCst);
        self.set_intx(false);
        v
    }

    /// Peeks at the ISR without clearing it.
    pub fn isr(&self) -> u8 {
        self.isr.load(Ordering::SeqCst)
    }

    pub fn config_generation(&self) -> u8 {
        self.generation.load(Ordering::SeqCst)
    }

    pub(crate) fn set_driver_ok(&self, on: bool) {
        self.driver_ok.store(on, Ordering::SeqCst);
    }

    fn set_intx(&self, level: bool) {
        if let Some(l) = &self.intx {
            l.set_level(level && !self.intx_disabled.load(Ordering::SeqCst));
        }
    }

    /// The command register's INTx disable bit (PCI 3.0 §6.2.2) changed.
    pub(crate) fn set_intx_disabled(&self, disabled: bool) {
        if self.intx_disabled.swap(disabled, Ordering::SeqCst) != disabled {
            self.set_intx(self.isr() != 0);
        }
    }

    /// Picks up MSI-X enable/mask after a configuration write.
    pub(crate) fn config_written(&self, config: &PciConfigSpace) {
        if let Some(m) = self.lock().msix.as_mut() {
            m.config_written(config);
        }
        self.set_intx_disabled(config.command() & crate::pci::COMMAND_INTX_DISABLE != 0);
    }

    /// Signals `vector` if MSI-X is on, else sets `isr_bit` and asserts INTx.
    fn deliver(&self, vector: impl FnOnce(&Vectors) -> u16, isr_bit: u8) {
        let mut v = self.lock();
        let vec = vector(&v);
        if let Some(m) = v.msix.as_mut().filter(|m| m.enabled()) {
            if vec != VIRTIO_MSI_NO_VECTOR {
                m.notify(vec);
            }
            return;
        }
        drop(v);
        self.isr.fetch_or(isr_bit, Ordering::SeqCst);
        self.set_intx(true);
    }

    /// A configuration-change interrupt even before DRIVER_OK (used for
    /// DEVICE_NEEDS_RESET, §2.1.2).
    pub(crate) fn raise_config(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.deliver(|v| v.config, ISR_CONFIG);
    }

    /// Device reset: ISR cleared, INTx deasserted, vectors unassigned.
    pub(crate) fn reset(&self) {
        {
            let mut v = self.lock();
            v.queue.fill(VIRTIO_MSI_NO_VECTOR);
            v.config = VIRTIO_MSI_NO_VECTOR;
        }
        self.driver_ok.store(false, Ordering::SeqCst);
        self.isr.store(0, Ordering::SeqCst);
        self.set_intx(false);
    }
}

impl VirtioInterrupt for VirtioPciInterrupt {
    fn notify_queue(&self, queue: u16) {
        self.deliver(
            |v| {
                v.queue
                    .get(usize::from(queue))
                    .copied()
                    .unwrap_or(VIRTIO_MSI_NO_VECTOR)
            },
            ISR_QUEUE,
        );
    }

    /// Bumps config_generation (§4.1.4.3.1) and, once the driver is up
    /// (QEMU `virtio_notify_config`), interrupts.
    fn notify_config(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        if self.driver_ok.load(Ordering::SeqCst) {
            self.deliver(|v| v.config, ISR_CONFIG);
        }
    }
}
