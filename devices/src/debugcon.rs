//! QEMU's ISA debug console (hw/char/debugcon.c, `isa-debugcon`): one I/O
//! port whose writes go to a chardev and whose reads return a fixed
//! "readback" byte, by which firmware detects it. SeaBIOS logs to port
//! 0x402 (`-device isa-debugcon,iobase=0x402,chardev=...`).

use std::io::Write;

use crate::bus::BusDevice;

/// QEMU's defaults: port 0xe9 (Bochs' "port e9 hack"), readback 0xe9.
pub const DEFAULT_IOBASE: u16 = 0xe9;
pub const DEFAULT_READBACK: u8 = 0xe9;

pub struct DebugCon {
    out: Box<dyn Write + Send>,
    readback: u8,
}

impl DebugCon {
    pub fn new(out: Box<dyn Write + Send>, readback: u8) -> Self {
        Self { out, readback }
    }
}

impl BusDevice for DebugCon {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(self.readback);
    }

    fn write(&mut self, _offset: u64, data: &[u8]) {
        // A byte per access, as QEMU writes it; the log must not stall the guest.
        if let Some(&b) = data.first() {
            let _ = self.out.write_all(&[b]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn writes_reach_the_chardev_and_reads_return_the_readback() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut d = DebugCon::new(Box::new(Shared(log.clone())), DEFAULT_READBACK);
        for b in b"SeaBIOS" {
            d.write(0, &[*b]);
        }
        assert_eq!(&*log.lock().unwrap(), b"SeaBIOS");
        let mut r = [0u8; 2];
        d.read(0, &mut r);
        assert_eq!(r, [0xe9, 0xe9]);
        d.write(0, &[]);
    }
}
