//! Random argument vectors never panic, and every error is one line.

use cli::{parse, Action};

/// xorshift64*: deterministic, no dependencies.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, v: &[&'a str]) -> &'a str {
        v[self.below(v.len())]
    }
}

const OPTIONS: &[&str] = &[
    "-m",
    "-smp",
    "-machine",
    "-M",
    "-accel",
    "-cpu",
    "-chardev",
    "-serial",
    "-mon",
    "-qmp",
    "-qmp-pretty",
    "-monitor",
    "-action",
    "-watchdog-action",
    "-name",
    "-uuid",
    "-rtc",
    "-display",
    "-drive",
    "-blockdev",
    "-device",
    "-netdev",
    "-object",
    "-global",
    "-audiodev",
    "-msg",
    "-overcommit",
    "-sandbox",
    "-boot",
    "-bios",
    "-L",
    "-smbios",
    "-kernel",
    "-initrd",
    "-append",
    "-vga",
    "-pidfile",
    "-S",
    "-nographic",
    "-nodefaults",
    "-daemonize",
    "-no-shutdown",
    "-no-reboot",
    "-enable-kvm",
    "-no-hpet",
    "-no-user-config",
    "--m",
    "-version",
    "-h",
    "-bogus",
    "-vnc",
];

const PIECES: &[&str] = &[
    "",
    ",",
    ",,",
    "=",
    ".",
    "..",
    "{",
    "}",
    "[",
    "]",
    "\"",
    ":",
    "+",
    "-",
    "0",
    "1",
    "4",
    "0x",
    "0x10",
    "99999999999999999999999",
    "4294967296",
    "1.5",
    "e",
    "G",
    "k",
    "on",
    "off",
    "no",
    "none",
    "stdio",
    "null",
    "mon:",
    "chardev:",
    "unix:",
    "tcp:",
    "file:",
    "socket",
    "id",
    "id=",
    "id=a",
    "id=1",
    "path",
    "host",
    "port",
    "fd",
    "server",
    "nowait",
    "wait",
    "driver",
    "node-name",
    "file.",
    "a.0",
    "a.1",
    "0.",
    "type",
    "tap",
    "q35",
    "pc-q35-6.1",
    "none",
    "host",
    "max",
    "size",
    "slots",
    "maxmem",
    "cpus",
    "sockets",
    "cores",
    "threads",
    "dies",
    "clusters",
    "maxcpus",
    "mode",
    "control",
    "readline",
    "pretty",
    "reboot",
    "shutdown",
    "panic",
    "watchdog",
    "pause",
    "base",
    "utc",
    "2006-06-17",
    "T",
    "qom-type",
    "if",
    "virtio",
    "\u{e9}",
    "\u{1F600}",
    "\n",
    "\0",
    " ",
    "{\"driver\":\"x\"}",
    "{\"type\":\"tap\",\"id\":\"n\"}",
    "{\"a\":",
    "[1]",
    "kvm",
    "tcg",
    "accel",
];

fn random_arg(r: &mut Rng) -> String {
    let n = r.below(8);
    let mut s = String::new();
    for _ in 0..n {
        s.push_str(r.pick(PIECES));
    }
    s
}

fn random_bytes_arg(r: &mut Rng) -> String {
    let n = r.below(24);
    let bytes: Vec<u8> = (0..n)
        .map(|_| {
            // Mostly ASCII punctuation and letters, sometimes anything.
            let b = r.next() as u8;
            if r.below(4) == 0 {
                b
            } else {
                const ALPHABET: &[u8] = b"=,.:{}\"0123456789abcxyz-+ ";
                ALPHABET[usize::from(b) % ALPHABET.len()]
            }
        })
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Parse; true if a VM configuration came out.
fn check(args: Vec<String>) -> bool {
    match parse(args.clone()) {
        Ok(Action::Run(_)) => true,
        Ok(Action::Version) | Ok(Action::Help) | Ok(Action::Print(_)) => false,
        Err(e) => {
            let s = e.to_string();
            assert!(!s.contains('\n'), "{args:?}: multi-line error {s:?}");
            assert!(!s.is_empty());
            false
        }
    }
}

#[test]
fn random_vectors_never_panic() {
    let mut r = Rng(0x9E37_79B9_7F4A_7C15);
    let mut accepted = 0;
    for _ in 0..40_000 {
        let n = r.below(6);
        let mut args = Vec::new();
        for _ in 0..n {
            if r.below(3) > 0 {
                args.push(r.pick(OPTIONS).to_string());
            }
            args.push(if r.below(3) == 0 {
                random_bytes_arg(&mut r)
            } else {
                random_arg(&mut r)
            });
        }
        accepted += usize::from(check(args));
    }
    // The generator must reach the typed conversion, not only the lexer.
    assert!(accepted > 1_000, "only {accepted} accepted");
}

#[test]
fn every_option_with_every_piece() {
    for opt in OPTIONS {
        for p in PIECES {
            check(vec![opt.to_string(), p.to_string()]);
            check(vec![opt.to_string(), format!("{p},{p}={p}")]);
            check(vec![opt.to_string(), format!("{p}={p},id=x{p}")]);
        }
    }
}

#[test]
fn huge_inputs() {
    let long = "a".repeat(100_000);
    let deep = vec!["a"; 10_000].join(".") + "=1";
    let commas = ",".repeat(100_001);
    let json_deep = "{\"a\":".repeat(10_000);
    for opt in [
        "-blockdev",
        "-object",
        "-device",
        "-netdev",
        "-m",
        "-smp",
        "-chardev",
        "-M",
    ] {
        for arg in [&long, &deep, &commas, &json_deep] {
            check(vec![opt.to_string(), arg.clone()]);
        }
    }
}
