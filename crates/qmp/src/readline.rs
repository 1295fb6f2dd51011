//! The human monitor over a socket (`-monitor` / `-mon mode=readline`):
//! QEMU 7.2's line editor (util/readline.c) in front of the HMP subset.
//!
//! The editor redraws the way QEMU's does — cursor back over the old line,
//! the whole line, erase to end of line — so a terminal (or a script reading
//! the echo) sees the same bytes.  Supported keys: printable characters,
//! Backspace/DEL, ^A/^E/^D/^W, ^P/^N and the arrow keys (history), Home/End/
//! Delete escape sequences, Enter (CR or LF).  Tab completion is not
//! implemented (Tab is ignored).

use crate::dispatch::{EventSink, Handler};
use crate::{hmp, QEMU_VERSION};

const CMD_BUF_SIZE: usize = 4095;
const HISTORY_MAX: usize = 64;

#[derive(Clone, Copy, PartialEq, Eq)]
enum EscState {
    Norm,
    Esc,
    Csi,
    Ss3,
}

/// One HMP connection's line-editor state.
pub struct Readline {
    buf: Vec<u8>,
    index: usize,
    last_buf: Vec<u8>,
    last_index: usize,
    esc: EscState,
    esc_param: u32,
    history: Vec<Vec<u8>>,
    hist_entry: Option<usize>,
}

impl Default for Readline {
    fn default() -> Self {
        Self::new()
    }
}

/// The banner and first prompt.
pub fn banner() -> String {
    let (a, b, c) = QEMU_VERSION;
    format!("QEMU {a}.{b}.{c} monitor - type 'help' for more information\r\n(qemu) ")
}

impl Readline {
    pub fn new() -> Self {
        Readline {
            buf: Vec::new(),
            index: 0,
            last_buf: Vec::new(),
            last_index: 0,
            esc: EscState::Norm,
            esc_param: 0,
            history: Vec::new(),
            hist_entry: None,
        }
    }

    /// Feeds one input byte; appends what the monitor prints to `out`,
    /// running a completed line through HMP.
    pub fn feed_byte(
        &mut self,
        ch: u8,
        out: &mut Vec<u8>,
        handler: &mut dyn Handler,
        events: &mut dyn EventSink,
    ) {
        match self.esc {
            EscState::Norm => match ch {
                1 => self.index = 0,
                4 => self.delete_char(),
                5 => self.index = self.buf.len(),
                10 | 13 => {
                    let line = std::mem::take(&mut self.buf);
                    self.hist_add(&line);
                    out.extend_from_slice(b"\r\n");
                    self.index = 0;
                    self.last_buf.clear();
                    self.last_index = 0;
                    let text = String::from_utf8_lossy(&line).into_owned();
                    let reply = hmp::run(&text, None, handler, events)
                        .unwrap_or_else(|e| format!("Error: {}\r\n", e.desc));
                    out.extend_from_slice(reply.as_bytes());
                    if !handler.exit_requested() {
                        out.extend_from_slice(b"(qemu) ");
                    }
                }
                14 => self.hist_down(),
                16 => self.hist_up(),
                23 => self.backword(),
                27 => self.esc = EscState::Esc,
                127 | 8 => self.backspace(),
                155 => {
                    self.esc = EscState::Csi;
                    self.esc_param = 0;
                }
                _ if ch >= 32 => self.insert(ch),
                _ => {}
            },
            EscState::Esc => {
                self.esc_param = 0;
                self.esc = match ch {
                    b'[' => EscState::Csi,
                    b'O' => EscState::Ss3,
                    _ => EscState::Norm,
                };
            }
            EscState::Csi => {
                match ch {
                    b'A' | b'F' => self.hist_up(),
                    b'B' | b'E' => self.hist_down(),
                    b'D' => self.index = self.index.saturating_sub(1),
                    b'C' => self.index = (self.index + 1).min(self.buf.len()),
                    b'0'..=b'9' => {
                        self.esc_param = self
                            .esc_param
                            .saturating_mul(10)
                            .saturating_add((ch - b'0') as u32);
                        self.update(out);
                        return;
                    }
                    b'~' => match self.esc_param {
                        1 => self.index = 0,
                        3 => self.delete_char(),
                        4 => self.index = self.buf.len(),
                        _ => {}
                    },
                    _ => {}
                }
                self.esc = EscState::Norm;
            }
            EscState::Ss3 => {
                match ch {
                    b'F' => self.index = self.buf.len(),
                    b'H' => self.index = 0,
                    _ => {}
                }
                self.esc = EscState::Norm;
            }
        }
        self.update(out);
    }

    fn insert(&mut self, ch: u8) {
        if self.buf.len() < CMD_BUF_SIZE {
            self.buf.insert(self.index, ch);
            self.index += 1;
        }
    }

    fn backspace(&mut self) {
        if self.index > 0 {
            self.buf.remove(self.index - 1);
            self.index -= 1;
        }
    }

    fn delete_char(&mut self) {
        if self.index < self.buf.len() {
            self.buf.remove(self.index);
        }
    }

    /// ^W: delete the word before the cursor.
    fn backword(&mut self) {
        if self.index == 0 || self.index > self.buf.len() {
            return;
        }
        let mut start = self.index - 1;
        while start > 0 && self.buf[start] == b' ' {
            start -= 1;
        }
        while start > 0 && self.buf[start - 1] != b' ' {
            start -= 1;
        }
        self.buf.drain(start..self.index);
        self.index = start;
    }

    fn hist_add(&mut self, line: &[u8]) {
        if line.is_empty() {
            return;
        }
        if let Some(p) = self.history.iter().position(|h| h == line) {
            self.history.remove(p);
        }
        if self.history.len() == HISTORY_MAX {
            self.history.remove(0);
        }
        self.history.push(line.to_vec());
        self.hist_entry = None;
    }

    fn hist_up(&mut self) {
        let e = match self.hist_entry {
            None if !self.history.is_empty() => self.history.len() - 1,
            Some(e) if e > 0 => e - 1,
            _ => return,
        };
        self.hist_entry = Some(e);
        self.buf = self.history[e].clone();
        self.index = self.buf.len();
    }

    fn hist_down(&mut self) {
        match self.hist_entry {
            Some(e) if e + 1 < self.history.len() => {
                self.hist_entry = Some(e + 1);
                self.buf = self.history[e + 1].clone();
            }
            Some(_) => {
                self.hist_entry = None;
                self.buf.clear();
            }
            None => return,
        }
        self.index = self.buf.len();
    }

    /// `readline_update()`.
    fn update(&mut self, out: &mut Vec<u8>) {
        if self.buf != self.last_buf {
            for _ in 0..self.last_index {
                out.extend_from_slice(b"\x1b[D");
            }
            out.extend_from_slice(&self.buf);
            out.extend_from_slice(b"\x1b[K");
            self.last_buf = self.buf.clone();
            self.last_index = self.buf.len();
        }
        if self.index != self.last_index {
            let seq: &[u8] = if self.index > self.last_index {
                b"\x1b[C"
            } else {
                b"\x1b[D"
            };
            for _ in 0..self.index.abs_diff(self.last_index) {
                out.extend_from_slice(seq);
            }
            self.last_index = self.index;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakeVm;

    fn type_bytes(rl: &mut Readline, vm: &mut FakeVm, input: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut events = Vec::new();
        for &b in input {
            rl.feed_byte(b, &mut out, vm, &mut events);
        }
        out
    }

    /// Byte streams recorded from QEMU 7.2's `-monitor unix:...`.
    #[test]
    fn echo_matches_qemu() {
        let mut rl = Readline::new();
        let mut vm = FakeVm::default();
        assert_eq!(
            type_bytes(&mut rl, &mut vm, b"foo\n"),
            b"f\x1b[K\x1b[Dfo\x1b[K\x1b[D\x1b[Dfoo\x1b[K\r\nunknown command: 'foo'\r\n(qemu) "
        );
        assert_eq!(
            type_bytes(&mut rl, &mut vm, b"abc\x7f\x7fx\n"),
            b"a\x1b[K\x1b[Dab\x1b[K\x1b[D\x1b[Dabc\x1b[K\x1b[D\x1b[D\x1b[Dab\x1b[K\x1b[D\x1b[Da\x1b[K\x1b[Dax\x1b[K\r\nunknown command: 'ax'\r\n(qemu) "
        );
        assert_eq!(type_bytes(&mut rl, &mut vm, b"\x1b[A"), b"ax\x1b[K");
        assert_eq!(
            type_bytes(&mut rl, &mut vm, b"\n"),
            b"\r\nunknown command: 'ax'\r\n(qemu) "
        );
        assert_eq!(type_bytes(&mut rl, &mut vm, b"\n"), b"\r\n(qemu) ");
        let out = type_bytes(&mut rl, &mut vm, b"info status\r\n");
        assert!(out.ends_with(
            b"info status\x1b[K\r\nVM status: paused (prelaunch)\r\n(qemu) \r\n(qemu) "
        ));
        assert_eq!(
            banner(),
            "QEMU 7.2.0 monitor - type 'help' for more information\r\n(qemu) "
        );
    }
}
