//! Arbitrary guest accesses to the i6300esb watchdog (configuration space,
//! BAR0) interleaved with its virtual clock running and the timer firing,
//! and to both pvpanic devices (the ISA port, pvpanic-pci's configuration
//! space and BAR). Nothing panics; a fired watchdog and panic events only
//! reach the callbacks.
#![no_main]
use std::sync::Arc;

use devices::bus::BusDevice;
use devices::pci::PciDevice;
use devices::pvpanic::{PvPanicIsa, PvPanicPci, PVPANIC_EVENTS_DEFAULT};
use devices::watchdog::I6300Esb;
use devices::ManualClock;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let clock = ManualClock::new(0);
    let Ok(mut esb) = I6300Esb::new(Box::new(clock.clone())) else {
        return;
    };
    esb.set_deadline_notifier(Arc::new(|_| {}));
    let report = Arc::new(|_| {});
    let mut isa = PvPanicIsa::new(PVPANIC_EVENTS_DEFAULT, report.clone());
    let Ok(mut ppci) = PvPanicPci::new(PVPANIC_EVENTS_DEFAULT, report) else {
        return;
    };
    for op in data.chunks(10) {
        if op.len() < 10 {
            break;
        }
        let len = [1usize, 2, 3, 4, 8][usize::from(op[1]) % 5];
        let off = u64::from(op[2]);
        let val = &op[2..2 + len];
        let reg = usize::from(op[3]);
        let cfg_off = u64::from(op[4] % 4);
        let cfg_val = &val[..len.min(4 - cfg_off as usize)];
        let mut buf = vec![0u8; len];
        match op[0] % 10 {
            0 => esb.bar_write(op[5] % 2, off % 20, val),
            1 => esb.bar_read(op[5] % 2, off % 20, &mut buf),
            2 => esb.write_config(reg % 80, cfg_off, cfg_val),
            3 => {
                let _ = esb.read_config(reg % 80);
                let _ = esb.bars();
            }
            4 => {
                let step = i64::from(u32::from_le_bytes([op[5], op[6], op[7], op[8]]));
                clock.advance_ns(step << (op[9] % 24));
                let now = u64::try_from(clock_now(&clock)).unwrap_or(0);
                let _ = esb.expired(now);
            }
            5 => {
                if let Some(d) = esb.next_deadline_ns() {
                    let _ = esb.expired(d);
                }
            }
            6 => esb.reset(),
            7 => {
                isa.write(off % 2, val);
                isa.read(off % 2, &mut buf);
            }
            8 => {
                ppci.bar_write(op[5] % 2, off % 17, val);
                ppci.bar_read(op[5] % 2, off % 17, &mut buf);
            }
            _ => {
                ppci.write_config(reg % 80, cfg_off, cfg_val);
                let _ = ppci.read_config(reg % 80);
                let _ = ppci.bars();
            }
        }
    }
});

fn clock_now(c: &ManualClock) -> i128 {
    use devices::Clock;
    c.now_ns()
}
