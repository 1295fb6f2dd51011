//! A port that is decoded but does nothing: POST code port 0x80 (Linux's
//! default I/O delay writes there) and 0xed (`io_delay=0xed`).
//!
//! QEMU claims 0x80 with a device whose reads return all ones and whose writes
//! are dropped (hw/i386/pc.c, `ioport80_read`/`ioport80_write`); claiming the
//! port keeps these accesses from being logged as unhandled.

use crate::bus::BusDevice;

/// Reads return all ones, writes are ignored, at any offset and width.
#[derive(Debug, Default, Clone, Copy)]
pub struct IgnoredPort;

impl BusDevice for IgnoredPort {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }

    fn write(&mut self, _offset: u64, _data: &[u8]) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::hammer;

    #[test]
    fn reads_all_ones_and_ignores_writes() {
        let mut p = IgnoredPort;
        p.write(0, &[0x42]);
        let mut b = [0u8; 4];
        p.read(0, &mut b);
        assert_eq!(b, [0xff; 4]);
    }

    #[test]
    fn survives_any_access() {
        hammer(&mut IgnoredPort, 1);
    }
}
