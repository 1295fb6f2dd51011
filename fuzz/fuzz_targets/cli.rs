//! Arbitrary argument vectors through the QEMU command-line parser: no
//! panic, and every error is a single line.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // NUL separates arguments, so whole argument vectors are explored.
    let args: Vec<String> = text.split('\0').map(str::to_string).collect();
    if let Err(e) = cli::parse(args) {
        assert!(!e.to_string().contains('\n'), "{e}");
    }
});
