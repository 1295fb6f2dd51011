//! Arbitrary client bytes through the NBD server's handshake and request
//! loop (option payloads, request headers, write payloads) on a small
//! in-memory export: no panic, the conversation ends, and every message
//! the server would print is one line.
#![no_main]
use std::sync::{Arc, Mutex};

use block::nbd::duplex::{converse, Duplex};
use block::nbd::export::{Export, MemDisk, StaticExports};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks a read-only or a writable export.
    let Some((&mode, client)) = data.split_first() else {
        return;
    };
    let read_only = mode & 1 == 0;
    let exports = StaticExports {
        exports: vec![Arc::new(Export {
            name: "e".into(),
            description: (mode & 2 != 0).then(|| "desc".to_string()),
            size: 64 << 10,
            flags: Export::flags_for(read_only, mode & 4 != 0),
            min_block: if mode & 8 != 0 { 512 } else { 1 },
            io: Arc::new(MemDisk(Mutex::new(vec![0u8; 64 << 10]))),
        })],
        claims: Mutex::new(0),
    };
    let mut d = Duplex::new(client.to_vec());
    if let Err(e) = converse(&mut d, &exports) {
        assert!(!e.contains('\n'), "{e}");
    }
    // The greeting always goes first.
    assert!(d.output.starts_with(b"NBDMAGICIHAVEOPT"));
});
