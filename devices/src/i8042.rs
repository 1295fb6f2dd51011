//! i8042 PS/2 controller: data port 0x60, status/command port 0x64 (insert at
//! 0x60 with length 5; offsets 1-3 read all ones, and port 0x61 is KVM's
//! in-kernel PIT speaker port, served before it reaches the bus).
//!
//! Enough of the controller for Linux's i8042 driver to probe it cleanly
//! (self-test, command byte, port enable/disable, AUX loopback) and for the
//! guest to reset the machine: command 0xfe, any even pulse command 0xf0-0xfe,
//! or clearing bit 0 of the output port (0xd1) sends [`GuestRequest::Reset`],
//! as QEMU hw/input/pckbd.c does.
//!
//! There is never a mouse; the AUX interrupt (IRQ 12) is not wired, so Linux's
//! AUX IRQ test fails and it registers no AUX port. A keyboard is present only
//! if built with [`I8042::with_keyboard`]: it has no keys, but answers the
//! commands atkbd sends while probing, and raises IRQ 1 through an eventfd.
//! Without it, bytes written to the keyboard vanish and atkbd times out.

use std::collections::VecDeque;

use vmm_sys_util::eventfd::EventFd;

use crate::bus::BusDevice;
use crate::{read_bytewise, write_bytewise, GuestRequest, GuestRequestFn};

const DATA_OFFSET: u64 = 0;
const COMMAND_OFFSET: u64 = 4;

// Status register (read at 0x64).
const STAT_OBF: u8 = 0x01;
const STAT_SELFTEST: u8 = 0x04;
const STAT_CMD: u8 = 0x08;
const STAT_UNLOCKED: u8 = 0x10;
const STAT_AUX_OBF: u8 = 0x20;

// Controller command byte ("mode" in QEMU).
const CTR_KBD_INT: u8 = 0x01;
const CTR_AUX_INT: u8 = 0x02;
const CTR_KBD_DISABLE: u8 = 0x10;
const CTR_AUX_DISABLE: u8 = 0x20;
const CTR_XLATE: u8 = 0x40;

// Output port.
const OUT_RESET: u8 = 0x01;
const OUT_A20: u8 = 0x02;
const OUT_OBF: u8 = 0x10;
const OUT_AUX_OBF: u8 = 0x20;
const OUT_ONES: u8 = 0xcc;

// Controller commands (written to 0x64).
const CMD_READ_CTR: u8 = 0x20;
const CMD_WRITE_CTR: u8 = 0x60;
const CMD_AUX_DISABLE: u8 = 0xa7;
const CMD_AUX_ENABLE: u8 = 0xa8;
const CMD_AUX_TEST: u8 = 0xa9;
const CMD_SELF_TEST: u8 = 0xaa;
const CMD_KBD_TEST: u8 = 0xab;
const CMD_KBD_DISABLE: u8 = 0xad;
const CMD_KBD_ENABLE: u8 = 0xae;
const CMD_READ_INPORT: u8 = 0xc0;
const CMD_READ_OUTPORT: u8 = 0xd0;
const CMD_WRITE_OUTPORT: u8 = 0xd1;
const CMD_WRITE_KBD_OBUF: u8 = 0xd2;
const CMD_WRITE_AUX_OBUF: u8 = 0xd3;
const CMD_WRITE_AUX: u8 = 0xd4;
const CMD_DISABLE_A20: u8 = 0xdd;
const CMD_ENABLE_A20: u8 = 0xdf;
const CMD_READ_TEST_INPUTS: u8 = 0xe0;
const CMD_PULSE_FIRST: u8 = 0xf0;

// Keyboard commands and replies (written to / read from 0x60).
const KBD_SET_LEDS: u8 = 0xed;
const KBD_ECHO: u8 = 0xee;
const KBD_SCANCODE_SET: u8 = 0xf0;
const KBD_GET_ID: u8 = 0xf2;
const KBD_SET_RATE: u8 = 0xf3;
const KBD_RESET: u8 = 0xff;
const KBD_ACK: u8 = 0xfa;
const KBD_RESEND: u8 = 0xfe;
const KBD_BAT_OK: u8 = 0xaa;

/// Bytes the controller holds for the guest before it drops more.
const QUEUE_LEN: usize = 16;

/// The PS/2 controller.
pub struct I8042 {
    request: GuestRequestFn,
    /// IRQ 1, present with the keyboard.
    kbd_irq: Option<EventFd>,
    status: u8,
    ctr: u8,
    outport: u8,
    /// Controller command waiting for its data byte on 0x60.
    pending_cmd: Option<u8>,
    /// Keyboard command waiting for its parameter byte.
    pending_kbd: Option<u8>,
    /// Output buffer and what queues behind it: (byte, from the AUX port).
    queue: VecDeque<(u8, bool)>,
    /// What 0x60 returns when nothing is queued: the last byte read.
    last: u8,
}

impl I8042 {
    /// A controller with nothing attached.
    pub fn new(request: GuestRequestFn) -> Self {
        Self {
            request,
            kbd_irq: None,
            status: 0,
            ctr: 0,
            outport: 0,
            pending_cmd: None,
            pending_kbd: None,
            queue: VecDeque::new(),
            last: 0,
        }
        .powered_on()
    }

    /// A controller with a key-less keyboard whose interrupt is `kbd_irq`
    /// (written once per edge; register it as an irqfd for GSI 1).
    pub fn with_keyboard(request: GuestRequestFn, kbd_irq: EventFd) -> Self {
        Self {
            kbd_irq: Some(kbd_irq),
            ..Self::new(request)
        }
    }

    /// Machine reset: back to the power-on state, queue emptied.
    pub fn reset(&mut self) {
        let kbd_irq = self.kbd_irq.take();
        let request = self.request.clone();
        *self = Self {
            kbd_irq,
            ..Self::new(request)
        };
    }

    /// QEMU `kbd_reset`: both interrupts enabled, A20 on, reset line high.
    fn powered_on(mut self) -> Self {
        self.status = STAT_CMD | STAT_UNLOCKED;
        self.ctr = CTR_KBD_INT | CTR_AUX_INT;
        self.outport = OUT_RESET | OUT_A20 | OUT_ONES;
        self
    }

    fn status(&self) -> u8 {
        match self.queue.front() {
            None => self.status,
            Some(&(_, false)) => self.status | STAT_OBF,
            Some(&(_, true)) => self.status | STAT_OBF | STAT_AUX_OBF,
        }
    }

    fn reset_machine(&self) {
        (self.request)(GuestRequest::Reset);
    }

    /// Puts a byte in the output buffer (or behind it).
    fn queue(&mut self, byte: u8, aux: bool) {
        if self.queue.len() >= QUEUE_LEN {
            log::debug!("i8042: output queue full, dropping {byte:#04x}");
            return;
        }
        self.queue.push_back((byte, aux));
        if self.queue.len() == 1 {
            self.output_buffer_filled();
        }
    }

    /// A byte just became readable at 0x60: interrupt if enabled. IRQ 12 is
    /// not wired, so AUX bytes interrupt nothing.
    fn output_buffer_filled(&self) {
        match (self.queue.front(), &self.kbd_irq) {
            (Some(&(_, false)), Some(irq)) if self.ctr & CTR_KBD_INT != 0 => {
                if let Err(e) = irq.write(1) {
                    log::warn!("i8042: cannot raise IRQ 1: {e}");
                }
            }
            _ => {}
        }
    }

    fn read_data(&mut self) -> u8 {
        if let Some((byte, _)) = self.queue.pop_front() {
            self.last = byte;
            if !self.queue.is_empty() {
                self.output_buffer_filled();
            }
        }
        self.last
    }

    fn write_command(&mut self, cmd: u8) {
        self.status |= STAT_CMD;
        self.pending_cmd = None;
        match cmd {
            CMD_READ_CTR => self.queue(self.ctr, false),
            CMD_WRITE_CTR | CMD_WRITE_OUTPORT | CMD_WRITE_KBD_OBUF | CMD_WRITE_AUX_OBUF
            | CMD_WRITE_AUX => self.pending_cmd = Some(cmd),
            CMD_AUX_DISABLE => self.ctr |= CTR_AUX_DISABLE,
            CMD_AUX_ENABLE => self.ctr &= !CTR_AUX_DISABLE,
            CMD_AUX_TEST | CMD_KBD_TEST => self.queue(0x00, false),
            CMD_SELF_TEST => {
                self.status |= STAT_SELFTEST;
                self.queue(0x55, false);
            }
            CMD_KBD_DISABLE => self.ctr |= CTR_KBD_DISABLE,
            CMD_KBD_ENABLE => self.ctr &= !CTR_KBD_DISABLE,
            CMD_READ_INPORT => self.queue(0x80, false),
            CMD_READ_OUTPORT => {
                let obf = match self.queue.front() {
                    None => 0,
                    Some(&(_, false)) => OUT_OBF,
                    Some(&(_, true)) => OUT_AUX_OBF,
                };
                self.queue(self.outport | obf, false);
            }
            CMD_DISABLE_A20 => self.outport &= !OUT_A20,
            CMD_ENABLE_A20 => self.outport |= OUT_A20,
            CMD_READ_TEST_INPUTS => self.queue(0x00, false),
            // Pulse output lines for 6 us: a clear bit 0 pulses the CPU reset
            // line (0xfe is the classic reset; QEMU treats 0xf0-0xfe alike).
            CMD_PULSE_FIRST..=0xff => {
                if cmd & 1 == 0 {
                    self.reset_machine();
                }
            }
            _ => log::debug!("i8042: unsupported controller command {cmd:#04x}"),
        }
    }

    fn write_data(&mut self, v: u8) {
        self.status &= !STAT_CMD;
        match self.pending_cmd.take() {
            Some(CMD_WRITE_CTR) => {
                let was = self.ctr;
                self.ctr = v;
                // The interrupt line follows OBF & enable: enabling it with a
                // byte waiting raises it now.
                if was & CTR_KBD_INT == 0 {
                    self.output_buffer_filled();
                }
            }
            Some(CMD_WRITE_OUTPORT) => {
                self.outport = v;
                if v & OUT_RESET == 0 {
                    self.reset_machine();
                }
            }
            Some(CMD_WRITE_KBD_OBUF) => self.queue(v, false),
            Some(CMD_WRITE_AUX_OBUF) => self.queue(v, true),
            // No mouse: the byte goes nowhere.
            Some(_) => {}
            None => {
                // Sending to the keyboard re-enables its interface (QEMU).
                self.ctr &= !CTR_KBD_DISABLE;
                if self.kbd_irq.is_some() {
                    self.keyboard(v);
                }
            }
        }
    }

    /// The key-less keyboard's replies (PS/2 keyboard command set; QEMU
    /// hw/input/ps2.c `ps2_write_keyboard`).
    fn keyboard(&mut self, v: u8) {
        if let Some(cmd) = self.pending_kbd.take() {
            self.queue(KBD_ACK, false);
            if cmd == KBD_SCANCODE_SET && v == 0 {
                // Report set 2, as translated when the controller translates.
                self.queue(
                    if self.ctr & CTR_XLATE != 0 {
                        0x41
                    } else {
                        0x02
                    },
                    false,
                );
            }
            return;
        }
        match v {
            KBD_SET_LEDS | KBD_SET_RATE | KBD_SCANCODE_SET => {
                self.pending_kbd = Some(v);
                self.queue(KBD_ACK, false);
            }
            KBD_ECHO => self.queue(KBD_ECHO, false),
            KBD_GET_ID => {
                self.queue(KBD_ACK, false);
                self.queue(0xab, false);
                self.queue(
                    if self.ctr & CTR_XLATE != 0 {
                        0x41
                    } else {
                        0x83
                    },
                    false,
                );
            }
            KBD_RESET => {
                self.queue(KBD_ACK, false);
                self.queue(KBD_BAT_OK, false);
            }
            // Enable, disable, set defaults, typematic modes.
            0xf4..=0xfd => self.queue(KBD_ACK, false),
            _ => self.queue(KBD_RESEND, false),
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        read_bytewise(offset, data, |o| match o {
            DATA_OFFSET => self.read_data(),
            COMMAND_OFFSET => self.status(),
            _ => 0xff,
        });
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        write_bytewise(offset, data, |o, v| match o {
            DATA_OFFSET => self.write_data(v),
            COMMAND_OFFSET => self.write_command(v),
            _ => {}
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{hammer, recorder};

    fn status(k: &mut I8042) -> u8 {
        let mut b = [0u8];
        k.read(COMMAND_OFFSET, &mut b);
        b[0]
    }

    fn data(k: &mut I8042) -> u8 {
        let mut b = [0u8];
        k.read(DATA_OFFSET, &mut b);
        b[0]
    }

    fn cmd(k: &mut I8042, c: u8) {
        k.write(COMMAND_OFFSET, &[c]);
    }

    fn put(k: &mut I8042, v: u8) {
        k.write(DATA_OFFSET, &[v]);
    }

    /// Sends a controller command and collects what it answers.
    fn ask(k: &mut I8042, c: u8) -> Vec<u8> {
        cmd(k, c);
        drain(k)
    }

    fn drain(k: &mut I8042) -> Vec<u8> {
        let mut out = Vec::new();
        while status(k) & STAT_OBF != 0 {
            out.push(data(k));
        }
        out
    }

    #[test]
    fn reset_command_requests_a_reset() {
        let (req, log) = recorder();
        let mut k = I8042::new(req);
        cmd(&mut k, 0xfe);
        assert_eq!(*log.lock().unwrap(), vec![GuestRequest::Reset]);
        cmd(&mut k, 0xff);
        cmd(&mut k, 0xf1);
        assert_eq!(
            log.lock().unwrap().len(),
            1,
            "odd pulse commands leave bit 0 alone"
        );
        cmd(&mut k, 0xf0);
        assert_eq!(log.lock().unwrap().len(), 2);
    }

    #[test]
    fn output_port_bit0_clear_resets() {
        let (req, log) = recorder();
        let mut k = I8042::new(req);
        assert_eq!(ask(&mut k, CMD_READ_OUTPORT), vec![0xcf]);
        cmd(&mut k, CMD_WRITE_OUTPORT);
        put(&mut k, 0xcf);
        assert!(log.lock().unwrap().is_empty());
        cmd(&mut k, CMD_WRITE_OUTPORT);
        put(&mut k, 0xce);
        assert_eq!(*log.lock().unwrap(), vec![GuestRequest::Reset]);
    }

    #[test]
    fn linux_probe_sequence() {
        let (req, log) = recorder();
        let mut k = I8042::new(req);
        assert_eq!(
            status(&mut k),
            STAT_CMD | STAT_UNLOCKED,
            "empty, keyboard unlocked"
        );
        assert!(drain(&mut k).is_empty(), "i8042_flush finds nothing");
        assert_eq!(ask(&mut k, CMD_SELF_TEST), vec![0x55]);
        assert_ne!(status(&mut k) & STAT_SELFTEST, 0);
        assert_eq!(ask(&mut k, CMD_READ_CTR), vec![0x03]);
        assert_eq!(ask(&mut k, CMD_READ_CTR), vec![0x03], "stable CTR");
        cmd(&mut k, CMD_WRITE_CTR);
        put(&mut k, 0x47);
        assert_eq!(ask(&mut k, CMD_READ_CTR), vec![0x47]);
        assert_eq!(ask(&mut k, CMD_KBD_TEST), vec![0x00]);
        // AUX loopback and toggles (i8042_check_aux).
        cmd(&mut k, CMD_WRITE_AUX_OBUF);
        put(&mut k, 0x5a);
        assert_eq!(
            status(&mut k) & (STAT_OBF | STAT_AUX_OBF),
            STAT_OBF | STAT_AUX_OBF
        );
        assert_eq!(data(&mut k), 0x5a);
        assert_eq!(ask(&mut k, CMD_AUX_TEST), vec![0x00]);
        cmd(&mut k, CMD_AUX_DISABLE);
        assert_eq!(
            ask(&mut k, CMD_READ_CTR)[0] & CTR_AUX_DISABLE,
            CTR_AUX_DISABLE
        );
        cmd(&mut k, CMD_AUX_ENABLE);
        assert_eq!(ask(&mut k, CMD_READ_CTR)[0] & CTR_AUX_DISABLE, 0);
        cmd(&mut k, CMD_KBD_DISABLE);
        assert_eq!(
            ask(&mut k, CMD_READ_CTR)[0] & CTR_KBD_DISABLE,
            CTR_KBD_DISABLE
        );
        cmd(&mut k, CMD_KBD_ENABLE);
        assert_eq!(ask(&mut k, CMD_READ_CTR)[0] & CTR_KBD_DISABLE, 0);
        assert_eq!(ask(&mut k, CMD_READ_INPORT), vec![0x80]);
        assert_eq!(ask(&mut k, CMD_READ_TEST_INPUTS), vec![0x00]);
        // Without a keyboard, keyboard bytes vanish.
        put(&mut k, KBD_GET_ID);
        assert!(drain(&mut k).is_empty());
        assert!(log.lock().unwrap().is_empty());
    }

    #[test]
    fn data_port_repeats_the_last_byte_when_empty() {
        let (req, _) = recorder();
        let mut k = I8042::new(req);
        cmd(&mut k, CMD_WRITE_KBD_OBUF);
        put(&mut k, 0x42);
        assert_eq!(data(&mut k), 0x42);
        assert_eq!(data(&mut k), 0x42);
        assert_eq!(status(&mut k) & STAT_OBF, 0);
    }

    #[test]
    fn a20_commands_move_the_output_port() {
        let (req, _) = recorder();
        let mut k = I8042::new(req);
        cmd(&mut k, CMD_DISABLE_A20);
        assert_eq!(ask(&mut k, CMD_READ_OUTPORT), vec![0xcd]);
        cmd(&mut k, CMD_ENABLE_A20);
        cmd(&mut k, CMD_WRITE_KBD_OBUF);
        put(&mut k, 1);
        cmd(&mut k, CMD_READ_OUTPORT);
        assert_eq!(
            drain(&mut k),
            vec![1, 0xcf | OUT_OBF],
            "OBF shows in the output port"
        );
    }

    #[test]
    fn keyboard_answers_atkbd_probe_with_interrupts() {
        let (req, _) = recorder();
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut k = I8042::with_keyboard(req, irq.try_clone().unwrap());
        put(&mut k, KBD_GET_ID);
        assert_eq!(irq.read().unwrap(), 1, "first byte interrupts");
        assert_eq!(data(&mut k), KBD_ACK);
        assert_eq!(irq.read().unwrap(), 1, "so does each next one");
        assert_eq!(drain(&mut k), vec![0xab, 0x83]);
        put(&mut k, KBD_SET_LEDS);
        put(&mut k, 0x07);
        assert_eq!(drain(&mut k), vec![KBD_ACK, KBD_ACK]);
        put(&mut k, KBD_SCANCODE_SET);
        put(&mut k, 0);
        assert_eq!(drain(&mut k), vec![KBD_ACK, KBD_ACK, 0x02]);
        put(&mut k, KBD_RESET);
        assert_eq!(drain(&mut k), vec![KBD_ACK, KBD_BAT_OK]);
        put(&mut k, KBD_ECHO);
        put(&mut k, 0xf4);
        put(&mut k, 0x01);
        assert_eq!(drain(&mut k), vec![KBD_ECHO, KBD_ACK, KBD_RESEND]);
        // With the keyboard interrupt disabled, bytes arrive silently, and
        // enabling it with a byte waiting interrupts at once.
        while irq.read().is_ok() {}
        cmd(&mut k, CMD_WRITE_CTR);
        put(&mut k, CTR_XLATE);
        put(&mut k, KBD_GET_ID);
        assert!(irq.read().is_err());
        cmd(&mut k, CMD_WRITE_CTR);
        put(&mut k, CTR_XLATE | CTR_KBD_INT);
        assert_eq!(irq.read().unwrap(), 1);
        assert_eq!(drain(&mut k), vec![KBD_ACK, 0xab, 0x41], "translated ID");
    }

    #[test]
    fn queue_is_bounded_and_reset_clears_it() {
        let (req, _) = recorder();
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut k = I8042::with_keyboard(req, irq.try_clone().unwrap());
        for _ in 0..100 {
            cmd(&mut k, CMD_READ_CTR);
        }
        assert_eq!(drain(&mut k).len(), QUEUE_LEN);
        cmd(&mut k, CMD_WRITE_CTR);
        put(&mut k, 0x00);
        cmd(&mut k, CMD_READ_CTR);
        cmd(&mut k, CMD_WRITE_CTR); // left pending across the reset
        k.reset();
        assert_eq!(status(&mut k), STAT_CMD | STAT_UNLOCKED);
        put(&mut k, 0x99); // goes to the keyboard, not to the CTR
        assert_eq!(drain(&mut k), vec![KBD_RESEND]);
        assert_eq!(ask(&mut k, CMD_READ_CTR), vec![0x03]);
        while irq.read().is_ok() {}
        put(&mut k, KBD_ECHO);
        assert_eq!(irq.read().unwrap(), 1, "keyboard still wired after reset");
    }

    #[test]
    fn unused_offsets_and_wide_accesses() {
        let (req, _) = recorder();
        let mut k = I8042::new(req);
        let mut b = [0u8; 4];
        k.read(1, &mut b[..3]);
        assert_eq!(b[..3], [0xff; 3]);
        k.write(1, &[0xfe, 0xfe, 0xfe]); // offsets 1-3: nothing happens
        cmd(&mut k, CMD_SELF_TEST);
        let mut w = [0u8; 2];
        k.read(DATA_OFFSET, &mut w);
        assert_eq!(
            w,
            [0x55, 0xff],
            "a word read is the data port then port 0x61's stand-in"
        );
    }

    #[test]
    fn survives_any_access() {
        let (req, _) = recorder();
        let mut k = I8042::new(req);
        hammer(&mut k, 5);
        let (req, _) = recorder();
        let mut k = I8042::with_keyboard(req, EventFd::new(libc::EFD_NONBLOCK).unwrap());
        hammer(&mut k, 5);
        for c in 0..=255u8 {
            for v in [0u8, 0x5a, 0xfe, 0xff] {
                cmd(&mut k, c);
                put(&mut k, v);
                drain(&mut k);
            }
        }
    }
}
