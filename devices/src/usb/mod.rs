//! USB host controllers. Only xHCI exists, and no USB device can be
//! attached to it: its root hub ports stay empty (`-device usb-*` is refused).

pub mod xhci;
