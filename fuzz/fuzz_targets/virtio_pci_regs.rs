//! Arbitrary register access sequences against the virtio-pci transport:
//! configuration space, BAR1 (MSI-X) and BAR4 (common, ISR, device, notify)
//! reads and writes of any width, status writes that activate or reset, and
//! device interrupts in between. The transport never panics.
#![no_main]
use std::sync::{Arc, Mutex};

use devices::interrupt::{IntxLine, MsiMessage, MsiVectors};
use devices::pci::PciDevice;
use devices::virtio::pci::VirtioPciDevice;
use devices::virtio::{ActivateError, ActiveQueue, VirtioDevice, VirtioInterrupt};
use libfuzzer_sys::fuzz_target;
use vm_memory::{GuestAddress, GuestMemoryMmap};

struct Dev(Option<Arc<dyn VirtioInterrupt>>);

impl VirtioDevice for Dev {
    fn device_type(&self) -> u16 {
        2
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[256, 8]
    }
    fn device_features(&self) -> u64 {
        u64::MAX
    }
    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    fn activate(
        &mut self,
        _mem: GuestMemoryMmap,
        _features: u64,
        _queues: Vec<ActiveQueue>,
        interrupt: Arc<dyn VirtioInterrupt>,
    ) -> Result<(), ActivateError> {
        self.0 = Some(interrupt);
        Ok(())
    }
    fn queue_notify(&mut self, queue: u16) {
        if let Some(i) = &self.0 {
            i.notify_queue(queue);
        }
    }
    fn reset(&mut self) {
        self.0 = None;
    }
}

struct Sink;
impl MsiVectors for Sink {
    fn set_route(&self, _vector: u16, _msg: Option<MsiMessage>) {}
    fn trigger(&self, _vector: u16) {}
}
impl IntxLine for Sink {
    fn set_level(&self, _asserted: bool) {}
}

fuzz_target!(|data: &[u8]| {
    let Ok(mem) = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)]) else {
        return;
    };
    let dev = Arc::new(Mutex::new(Dev(None)));
    let Ok(mut t) = VirtioPciDevice::new(dev, mem, 3, Arc::new(Sink), Some(Arc::new(Sink))) else {
        return;
    };
    // Each op: kind, target, offset (2 bytes), width, value (8 bytes).
    for op in data.chunks_exact(13) {
        let offset = u64::from(u16::from_le_bytes([op[2], op[3]]));
        let len = [1usize, 2, 4, 8, 3][usize::from(op[4] % 5)];
        let value = &op[5..5 + len.min(8)];
        let mut buf = [0u8; 8];
        match op[0] % 6 {
            0 => t.bar_write(op[1] % 6, offset, value),
            1 => t.bar_read(op[1] % 6, offset, &mut buf[..len]),
            2 => t.write_config(
                usize::from(op[1]),
                offset % 4,
                &value[..len.min(4 - (offset % 4) as usize)],
            ),
            3 => {
                t.read_config(usize::from(op[1]));
            }
            4 => t.handle_kick(u16::from(op[1] % 4)),
            _ => {
                if op[1] & 1 == 0 {
                    t.interrupt().notify_config();
                } else {
                    t.reset();
                }
            }
        }
    }
});
