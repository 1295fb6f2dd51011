//! QEMU's qtest protocol (softmmu/qtest.c `qtest_process_command`): one
//! request per line, words split on single spaces, one reply line each.
//!
//! ferrovm answers what means something where no guest runs: the virtual
//! clock (`clock_step`, `clock_set`, under `-accel qtest` only, as QEMU's
//! `qtest_enabled()` checks) and `endianness`. The commands that reach guest
//! memory, ports or interrupt lines fail with `FAIL` and the reason: under
//! qtest ferrovm builds no guest RAM and no device registers. Anything else
//! is QEMU's `FAIL Unknown command 'X'`.

/// QEMU's commands that need guest memory, I/O ports or device pins.
const NEEDS_A_GUEST: &[&str] = &[
    "irq_intercept_out",
    "irq_intercept_in",
    "set_irq_in",
    "outb",
    "outw",
    "outl",
    "inb",
    "inw",
    "inl",
    "writeb",
    "writew",
    "writel",
    "writeq",
    "readb",
    "readw",
    "readl",
    "readq",
    "read",
    "write",
    "b64read",
    "b64write",
    "memset",
];

/// The protocol's state: the virtual clock it owns.
#[derive(Debug)]
pub struct Qtest {
    /// QEMU's `qtest_clock_counter`: virtual nanoseconds, moved only here.
    clock_ns: i64,
    /// `-accel qtest`: the clock commands exist (QEMU's `qtest_enabled()`).
    accel_qtest: bool,
}

/// `qemu_strtoi64(s, NULL, 0, ..)`: decimal, `0x` hex or `0` octal, with
/// an optional sign, and nothing after the number.
fn parse_i64(s: &str) -> Option<i64> {
    let (neg, digits) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let (radix, body) = if let Some(h) = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        (16, h)
    } else if digits.len() > 1 && digits.starts_with('0') {
        (8, &digits[1..])
    } else {
        (10, digits)
    };
    if body.is_empty() || body.starts_with(['+', '-']) {
        return None;
    }
    let v = i64::from_str_radix(body, radix).ok()?;
    Some(if neg { -v } else { v })
}

impl Qtest {
    pub fn new(accel_qtest: bool) -> Self {
        Self {
            clock_ns: 0,
            accel_qtest,
        }
    }

    /// The virtual clock, in nanoseconds.
    pub fn clock_ns(&self) -> i64 {
        self.clock_ns
    }

    /// `qtest_clock_warp(dest)`: the clock moves forward to `dest`, never
    /// back. With no timer on the virtual clock (nothing runs under qtest
    /// here) there is no deadline to stop at on the way.
    fn warp(&mut self, dest: i64) {
        self.clock_ns = self.clock_ns.max(dest);
    }

    /// One request line (without its `\n`); returns the reply line with it.
    pub fn process(&mut self, line: &str) -> String {
        let words: Vec<&str> = line.split(' ').collect();
        let cmd = words[0];
        let arg = words.get(1).copied();
        let clock = matches!(cmd, "clock_step" | "clock_set");
        match cmd {
            _ if clock && !self.accel_qtest => format!("FAIL Unknown command '{cmd}'\n"),
            "clock_step" => {
                // Without NS, to the next deadline: there is none (QEMU's
                // qemu_clock_deadline_ns_all returns -1), so no move.
                let ns = match arg {
                    Some(a) => match parse_i64(a) {
                        Some(n) => n,
                        None => return format!("FAIL Invalid number '{a}'\n"),
                    },
                    None => -1,
                };
                self.warp(self.clock_ns.saturating_add(ns));
                format!("OK {}\n", self.clock_ns)
            }
            "clock_set" => {
                let Some(a) = arg else {
                    return "FAIL clock_set needs a time in nanoseconds\n".into();
                };
                let Some(ns) = parse_i64(a) else {
                    return format!("FAIL Invalid number '{a}'\n");
                };
                self.warp(ns);
                format!("OK {}\n", self.clock_ns)
            }
            // x86 is little-endian (qtest.c `target_words_bigendian`).
            "endianness" => "OK little\n".into(),
            "module_load" => "FAIL\n".into(),
            c if NEEDS_A_GUEST.contains(&c) => format!(
                "FAIL '{c}' needs guest memory, ports or device pins, which ferrovm does not build under qtest\n"
            ),
            c => format!("FAIL Unknown command '{c}'\n"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_moves_forward_only() {
        let mut q = Qtest::new(true);
        assert_eq!(q.process("clock_step"), "OK 0\n");
        assert_eq!(q.process("clock_step 100"), "OK 100\n");
        assert_eq!(q.process("clock_step 0x10"), "OK 116\n");
        assert_eq!(q.process("clock_set 1000"), "OK 1000\n");
        assert_eq!(q.process("clock_set 10"), "OK 1000\n");
        assert_eq!(q.process("clock_step -5"), "OK 1000\n");
        assert_eq!(q.process("clock_step 010"), "OK 1008\n");
        assert_eq!(q.clock_ns(), 1008);
        assert_eq!(q.process("clock_step x"), "FAIL Invalid number 'x'\n");
        assert_eq!(
            q.process("clock_set"),
            "FAIL clock_set needs a time in nanoseconds\n"
        );
        assert_eq!(
            q.process(&format!("clock_step {}", i64::MAX)),
            format!("OK {}\n", i64::MAX)
        );
    }

    #[test]
    fn replies_as_qemu() {
        let mut q = Qtest::new(true);
        assert_eq!(q.process("endianness"), "OK little\n");
        assert_eq!(
            q.process("frobnicate 1"),
            "FAIL Unknown command 'frobnicate'\n"
        );
        assert_eq!(q.process(""), "FAIL Unknown command ''\n");
        assert!(q
            .process("readl 0x1000")
            .starts_with("FAIL 'readl' needs guest memory"));
        // Without the qtest accelerator the clock is not qtest's to move.
        let mut q = Qtest::new(false);
        assert_eq!(
            q.process("clock_step 10"),
            "FAIL Unknown command 'clock_step'\n"
        );
    }

    #[test]
    fn numbers_as_qemu_strtoi64() {
        assert_eq!(parse_i64("42"), Some(42));
        assert_eq!(parse_i64("-0x10"), Some(-16));
        assert_eq!(parse_i64("0"), Some(0));
        assert_eq!(parse_i64("017"), Some(15));
        assert_eq!(parse_i64("1e3"), None);
        assert_eq!(parse_i64(""), None);
        assert_eq!(parse_i64("--1"), None);
        assert_eq!(parse_i64("99999999999999999999"), None);
    }
}
