//! Watchdog timers. Models own no threads and no host timers: each takes a
//! virtual clock from the machine (one that stops while the VM is paused, as
//! QEMU's `QEMU_CLOCK_VIRTUAL`), exposes its next deadline, and is told by
//! the machine's timer when that deadline has passed. What the machine does
//! when a watchdog fires (`-watchdog-action`) is the machine's business.
//!
//! - [`i6300esb::I6300Esb`]: Intel 6300ESB watchdog, QEMU's `i6300esb`
//!   (hw/watchdog/wdt_i6300esb.c).

pub mod i6300esb;

pub use i6300esb::{DeadlineFn, I6300Esb, WatchdogFired};
