//! Arbitrary bytes as a kernel file (ELF, bzImage, compressed payloads): the
//! loader answers with an error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = boot::KernelImage::parse(data);
});
