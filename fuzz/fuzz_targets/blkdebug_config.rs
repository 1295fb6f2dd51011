//! Arbitrary blkdebug rule files through the config-file parser
//! (QEMU's `qemu_config_foreach` syntax): no panic; every section it
//! returns has a group name, and every error is one line.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match block::blkdebug::config::parse(data, |_| Ok(())) {
        Ok(sections) => {
            for s in sections {
                assert!(!s.group.is_empty());
            }
        }
        Err(e) => assert!(!e.contains('\n'), "{e}"),
    }
});
