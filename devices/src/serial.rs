//! 16550A UART for COM1 (port 0x3f8, IRQ 4), a thin shell around
//! `vm_superio::Serial`, which models the registers.
//!
//! Interrupts: the UART pulses `interrupt` (an eventfd the VMM registers as an
//! irqfd for GSI 4) when an enabled THR-empty or received-data condition arises;
//! ISA IRQ 4 is edge-triggered, so a pulse per condition is what the guest sees.
//! Output bytes go to `out` as the guest writes them; write errors drop the
//! byte (a UART cannot block its driver). Host → guest bytes are queued with
//! [`Serial::enqueue_input`] into the 64-byte receive FIFO.

use std::io::{self, Write};
use std::sync::Arc;

use vm_superio::serial::SerialEvents;
use vm_superio::Trigger;
use vmm_sys_util::eventfd::EventFd;

use crate::bus::BusDevice;
use crate::{read_bytewise, write_bytewise};

/// The UART decodes eight consecutive ports.
pub const SERIAL_PORT_LEN: u64 = 8;

/// The interrupt line: one eventfd write per edge.
#[derive(Clone)]
struct IrqTrigger(Arc<EventFd>);

impl Trigger for IrqTrigger {
    type E = io::Error;
    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

/// Tells the backend when the guest has drained the receive FIFO, so it can
/// resume reading host input it stopped taking when the FIFO was full.
#[derive(Clone, Default)]
struct InputEvents(Option<Arc<EventFd>>);

impl SerialEvents for InputEvents {
    fn buffer_read(&self) {}
    fn out_byte(&self) {}
    fn tx_lost_byte(&self) {}
    fn in_buffer_empty(&self) {
        if let Some(e) = &self.0 {
            let _ = e.write(1);
        }
    }
}

type Out = Box<dyn Write + Send>;
type Uart = vm_superio::Serial<IrqTrigger, InputEvents, Out>;

/// COM1.
pub struct Serial {
    uart: Uart,
}

impl Serial {
    /// `interrupt` is written once per interrupt edge; guest output goes to `out`.
    pub fn new(interrupt: EventFd, out: Box<dyn Write + Send>) -> Self {
        Self::build(interrupt, InputEvents(None), out)
    }

    /// Like [`Serial::new`], and `input_drained` is written whenever the guest
    /// empties the receive FIFO.
    pub fn with_input_drained(
        interrupt: EventFd,
        out: Box<dyn Write + Send>,
        input_drained: EventFd,
    ) -> Self {
        Self::build(interrupt, InputEvents(Some(Arc::new(input_drained))), out)
    }

    fn build(interrupt: EventFd, events: InputEvents, out: Out) -> Self {
        Self {
            uart: Uart::with_events(IrqTrigger(Arc::new(interrupt)), events, out),
        }
    }

    /// Queues host → guest bytes in the receive FIFO and raises the
    /// received-data interrupt if the guest enabled it. Returns how many bytes
    /// were taken: at most the free FIFO space ([`Serial::fifo_capacity`]), and
    /// none in loopback mode, where the line is disconnected.
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> usize {
        let room = self.uart.fifo_capacity();
        match self.uart.enqueue_raw_bytes(bytes) {
            Ok(n) => n,
            // The bytes were queued; only raising the interrupt failed.
            Err(vm_superio::serial::Error::Trigger(e)) => {
                log::warn!("serial: cannot raise interrupt: {e}");
                room.min(bytes.len())
            }
            Err(_) => 0,
        }
    }

    /// Free space in the receive FIFO, in bytes.
    pub fn fifo_capacity(&self) -> usize {
        self.uart.fifo_capacity()
    }

    /// Machine reset: registers return to their power-on values and the
    /// receive FIFO is emptied (QEMU hw/char/serial.c `serial_reset`). The
    /// output and the eventfds stay connected.
    pub fn reset(&mut self) {
        let irq = self.uart.interrupt_evt().clone();
        let events = self.uart.events().clone();
        let idle = Uart::with_events(irq.clone(), events.clone(), Box::new(io::sink()));
        let old = std::mem::replace(&mut self.uart, idle);
        self.uart = Uart::with_events(irq, events, old.into_writer());
    }
}

/// Receive FIFO size of the 16550A (and of `vm_superio::Serial`).
pub const SERIAL_FIFO_SIZE: usize = 64;

impl BusDevice for Serial {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let uart = &mut self.uart;
        read_bytewise(offset, data, |o| {
            if o < SERIAL_PORT_LEN {
                uart.read(o as u8)
            } else {
                0xff
            }
        });
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let uart = &mut self.uart;
        write_bytewise(offset, data, |o, v| {
            if o < SERIAL_PORT_LEN {
                if let Err(e) = uart.write(o as u8, v) {
                    log::debug!("serial: {e:?}");
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::hammer;
    use std::sync::Mutex;

    const THR: u64 = 0;
    const IER: u64 = 1;
    const IIR: u64 = 2;
    const LCR: u64 = 3;
    const MCR: u64 = 4;
    const LSR: u64 = 5;
    const SCR: u64 = 7;

    #[derive(Clone, Default)]
    struct SharedBuf(Arc<Mutex<Vec<u8>>>);
    impl Write for SharedBuf {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    struct Broken;
    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::other("gone"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Err(io::Error::other("gone"))
        }
    }

    fn evt() -> EventFd {
        EventFd::new(libc::EFD_NONBLOCK).unwrap()
    }

    fn serial() -> (Serial, EventFd, SharedBuf) {
        let irq = evt();
        let out = SharedBuf::default();
        (
            Serial::new(irq.try_clone().unwrap(), Box::new(out.clone())),
            irq,
            out,
        )
    }

    fn rd(s: &mut Serial, off: u64) -> u8 {
        let mut b = [0u8];
        s.read(off, &mut b);
        b[0]
    }

    #[test]
    fn guest_output_reaches_the_writer() {
        let (mut s, _, out) = serial();
        for &c in b"hi\n" {
            s.write(THR, &[c]);
        }
        assert_eq!(&*out.0.lock().unwrap(), b"hi\n");
        assert_eq!(
            rd(&mut s, LSR) & 0x60,
            0x60,
            "THR empty and transmitter idle"
        );
    }

    #[test]
    fn thr_empty_interrupt_when_enabled() {
        let (mut s, irq, _) = serial();
        s.write(THR, b"x");
        assert!(irq.read().is_err(), "no interrupt while IER is clear");
        s.write(IER, &[0x02]);
        assert_eq!(
            irq.read().unwrap(),
            1,
            "enabling THRE with THR empty interrupts at once"
        );
        assert_eq!(rd(&mut s, IIR) & 0x0f, 0x02);
    }

    #[test]
    fn input_respects_fifo_capacity_and_interrupts() {
        let (mut s, irq, _) = serial();
        s.write(IER, &[0x01]);
        let _ = irq.read();
        let input: Vec<u8> = (0..100).collect();
        assert_eq!(s.enqueue_input(&input), SERIAL_FIFO_SIZE);
        assert_eq!(s.fifo_capacity(), 0);
        assert_eq!(s.enqueue_input(b"more"), 0, "a full FIFO takes nothing");
        assert_eq!(irq.read().unwrap(), 1);
        assert_eq!(rd(&mut s, LSR) & 1, 1, "data ready");
        for i in 0..SERIAL_FIFO_SIZE as u8 {
            assert_eq!(rd(&mut s, THR), i);
        }
        assert_eq!(rd(&mut s, LSR) & 1, 0);
        assert_eq!(s.enqueue_input(&[]), 0);
    }

    #[test]
    fn drained_fifo_is_signalled() {
        let drained = evt();
        let mut s =
            Serial::with_input_drained(evt(), Box::new(io::sink()), drained.try_clone().unwrap());
        assert_eq!(s.enqueue_input(b"ab"), 2);
        rd(&mut s, THR);
        assert!(drained.read().is_err());
        rd(&mut s, THR);
        assert_eq!(drained.read().unwrap(), 1);
    }

    #[test]
    fn loopback_takes_no_host_input() {
        let (mut s, _, out) = serial();
        s.write(MCR, &[0x10]);
        assert_eq!(s.enqueue_input(b"abc"), 0);
        s.write(THR, b"z");
        assert_eq!(rd(&mut s, THR), b'z', "loopback echoes");
        assert!(out.0.lock().unwrap().is_empty());
    }

    #[test]
    fn reset_restores_power_on_registers_and_keeps_output() {
        let (mut s, irq, out) = serial();
        s.write(IER, &[0x0f]);
        s.write(LCR, &[0x1b]);
        s.write(SCR, &[0x5a]);
        s.enqueue_input(b"pending");
        s.reset();
        assert_eq!(rd(&mut s, IER), 0);
        assert_eq!(rd(&mut s, LCR), 0x03);
        assert_eq!(rd(&mut s, SCR), 0);
        assert_eq!(rd(&mut s, MCR), 0x08);
        assert_eq!(rd(&mut s, LSR) & 1, 0, "receive FIFO emptied");
        assert_eq!(s.fifo_capacity(), SERIAL_FIFO_SIZE);
        s.write(THR, b"k");
        assert_eq!(&*out.0.lock().unwrap(), b"k");
        let _ = irq.read();
        s.write(IER, &[0x02]);
        assert_eq!(irq.read().unwrap(), 1, "interrupt still wired after reset");
    }

    #[test]
    fn wide_accesses_are_split_into_bytes() {
        let (mut s, _, out) = serial();
        s.write(SCR - 1, &[0x00, 0x77]); // MSR (read-only here), then SCR
        assert_eq!(rd(&mut s, SCR), 0x77);
        let mut w = [0u8; 2];
        s.read(LSR, &mut w);
        assert_eq!(w[0] & 0x60, 0x60);
        s.write(THR, &[b'A', 0x00]); // THR then IER
        assert_eq!(&*out.0.lock().unwrap(), b"A");
        let mut far = [0u8; 4];
        s.read(6, &mut far);
        assert_eq!(
            far[2..],
            [0xff, 0xff],
            "bytes past the UART read as all ones"
        );
    }

    #[test]
    fn broken_output_does_not_stop_the_uart() {
        let mut s = Serial::new(evt(), Box::new(Broken));
        s.write(THR, b"x");
        assert_eq!(rd(&mut s, LSR) & 0x20, 0x20);
    }

    #[test]
    fn survives_any_access() {
        let (mut s, _, _) = serial();
        hammer(&mut s, SERIAL_PORT_LEN);
        let mut s = Serial::new(evt(), Box::new(Broken));
        hammer(&mut s, SERIAL_PORT_LEN);
        s.reset();
        hammer(&mut s, SERIAL_PORT_LEN);
    }
}
