//! PCI INTx routing of the root bus (pcie.0): which IOAPIC GSI the INTx pin
//! of a function in each slot drives. The VMM wires each (slot, pin) to that
//! GSI with a level-triggered irqfd; the DSDT (`acpi.rs`) tells the guest the
//! same thing through `\_SB.PCI0._PRT` and the link devices `\_SB.GSIA`..`GSIH`.
//!
//! # The mapping is QEMU q35's, in APIC mode
//!
//! QEMU 7.2 routes a root-bus INTx pin to one of the ICH9's eight PIRQ lines
//! (hw/isa/lpc_ich9.c `ich9_lpc_map_irq` reads `lpc->irr[slot][intx]`), and
//! in APIC mode PIRQ A..H is GSI 16..23 (`ich9_pirq_to_gsi`: `pirq + 16`).
//! `irr` holds, after `ich9_cc_init` and the reset values of the D`<N>`IR
//! chipset registers (`ICH9_CC_DIR_DEFAULT` 0x3210, include/hw/i386/ich9.h):
//!
//! | slot          | INTA..INTD (pin 1..4) → PIRQ | GSI                          |
//! |---------------|------------------------------|------------------------------|
//! | 0..=24        | E + (slot + pin - 1) % 4     | 20 + (slot + pin - 1) % 4    |
//! | 25..=29, 31   | A + pin - 1 (D`<N>`IR = 0x3210)| 16 + pin - 1                 |
//! | 30            | E + pin - 1 (DMI-to-PCI)     | 20 + pin - 1                 |
//!
//! and hw/i386/acpi-build.c `build_q35_routing_table("GSI")` publishes the
//! same table as `PRTA`, the `_PRT` QEMU returns once the OS called `_PIC(1)`.
//!
//! ferrovm has no LPC and so no PIRQ routing registers (PIRQx_ROUT, D`<N>`IR):
//! the table above is fixed, and the PIC-mode table (`PRTP`, links
//! LNKA..LNKH whose ISA IRQ the OS may reprogram) does not exist. A guest that
//! stays in PIC mode gets no INTx interrupts; guests that use INTx at all on
//! this machine use the IOAPIC (or MSI-X, which bypasses all of this).

/// The first GSI used for PCI INTx: IOAPIC pin 16, the first above the 16
/// ISA IRQs (QEMU: `ICH9_LPC_PIC_NUM_PINS`).
pub const PCI_INTX_GSI_BASE: u32 = 16;
/// GSIs 16..=23 carry PCI INTx, one per PIRQ line A..H.
pub const PCI_INTX_GSI_COUNT: u32 = 8;
/// Slots on the root bus (PCI device numbers 0..=31).
pub const PCI_SLOTS: u8 = 32;

/// The IOAPIC GSI that INTx `pin` of a function in root-bus `slot` raises.
///
/// `pin` is the Interrupt Pin register (config offset 0x3d): 1 = INTA# ..
/// 4 = INTD#. Returns `None` for a pin of 0 (the function uses no INTx) or
/// above 4, and for a slot above 31. Every `Some` lies in 16..=23.
pub fn pci_intx_gsi(slot: u8, pin: u8) -> Option<u32> {
    if slot >= PCI_SLOTS || !(1..=4).contains(&pin) {
        return None;
    }
    let intx = u32::from(pin - 1);
    let pirq = match slot {
        // ich9_cc_init: irr[slot][intx] = (slot + intx) % 4 + 4.
        0..=24 => 4 + (u32::from(slot) + intx) % 4,
        // ich9_cc_update: D30 (the DMI-to-PCI bridge) uses PIRQ E..H.
        30 => 4 + intx,
        // D25IR..D29IR, D31IR reset to 0x3210: INTx -> PIRQ A..D.
        _ => intx,
    };
    Some(PCI_INTX_GSI_BASE + pirq)
}

/// ACPI name of the link device for `gsi` (16..=23): `GSIA`..`GSIH`, as
/// QEMU's q35 DSDT names them.
pub fn gsi_link_name(gsi: u32) -> Option<String> {
    let idx = gsi.checked_sub(PCI_INTX_GSI_BASE)?;
    if idx >= PCI_INTX_GSI_COUNT {
        return None;
    }
    Some(format!("GSI{}", char::from(b'A' + idx as u8)))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected values: QEMU 7.2's `PRTA` package, from hw/i386/acpi-build.c
    // build_q35_routing_table("GSI") / append_q35_prt_entry (GSIx = 16 + x-'A'):
    //   slots 0x00..0x17: name 'E' + (slot & 3), rotated per pin within E..H
    //   slot 0x18: GSIE..GSIH; slots 0x19..0x1d: GSIA..GSID;
    //   slot 0x1e: GSIE..GSIH; slot 0x1f: GSIA..GSID.
    // Cross-checked against hw/isa/lpc_ich9.c ich9_cc_init/ich9_cc_reset.

    #[test]
    fn slot_0_starts_at_pirq_e() {
        // append_q35_prt_entry(0, "GSIE"): GSIE, GSIF, GSIG, GSIH.
        assert_eq!(pci_intx_gsi(0, 1), Some(20));
        assert_eq!(pci_intx_gsi(0, 2), Some(21));
        assert_eq!(pci_intx_gsi(0, 3), Some(22));
        assert_eq!(pci_intx_gsi(0, 4), Some(23));
    }

    #[test]
    fn swizzle_rotates_with_the_slot() {
        // Slot 1: "GSIF" → GSIF, GSIG, GSIH, GSIE.
        assert_eq!(pci_intx_gsi(1, 1), Some(21));
        assert_eq!(pci_intx_gsi(1, 4), Some(20));
        // Slot 2: "GSIG" → GSIG, GSIH, GSIE, GSIF.
        assert_eq!(pci_intx_gsi(2, 1), Some(22));
        assert_eq!(pci_intx_gsi(2, 2), Some(23));
        assert_eq!(pci_intx_gsi(2, 3), Some(20));
        assert_eq!(pci_intx_gsi(2, 4), Some(21));
        // Slot 3: "GSIH" → GSIH, GSIE, ...
        assert_eq!(pci_intx_gsi(3, 1), Some(23));
        assert_eq!(pci_intx_gsi(3, 2), Some(20));
        // Slot 4 is "GSIE" again; slot 23 (0x17 & 3 = 3) is "GSIH".
        assert_eq!(pci_intx_gsi(4, 1), Some(20));
        assert_eq!(pci_intx_gsi(23, 1), Some(23));
        assert_eq!(pci_intx_gsi(23, 2), Some(20));
    }

    #[test]
    fn high_slots_follow_the_ich9_defaults() {
        // Slot 0x18: "GSIE" unrotated.
        assert_eq!(pci_intx_gsi(24, 1), Some(20));
        assert_eq!(pci_intx_gsi(24, 4), Some(23));
        // Slots 0x19..0x1d: GSIA..GSID, the same for every slot.
        assert_eq!(pci_intx_gsi(25, 1), Some(16));
        assert_eq!(pci_intx_gsi(26, 2), Some(17));
        assert_eq!(pci_intx_gsi(29, 4), Some(19));
        // Slot 0x1e: GSIE..GSIH.
        assert_eq!(pci_intx_gsi(30, 1), Some(20));
        assert_eq!(pci_intx_gsi(30, 3), Some(22));
        // Slot 0x1f: GSIA..GSID.
        assert_eq!(pci_intx_gsi(31, 1), Some(16));
        assert_eq!(pci_intx_gsi(31, 4), Some(19));
    }

    #[test]
    fn no_pin_or_bad_slot_has_no_gsi() {
        assert_eq!(pci_intx_gsi(2, 0), None, "Interrupt Pin 0: no INTx");
        assert_eq!(pci_intx_gsi(2, 5), None);
        assert_eq!(pci_intx_gsi(2, 0xff), None);
        assert_eq!(pci_intx_gsi(32, 1), None);
        assert_eq!(pci_intx_gsi(0xff, 1), None);
    }

    #[test]
    fn every_gsi_is_above_the_isa_range() {
        for slot in 0..=31 {
            for pin in 1..=4 {
                let gsi = pci_intx_gsi(slot, pin).unwrap();
                assert!((16..=23).contains(&gsi), "{slot}/{pin} -> {gsi}");
            }
        }
    }

    #[test]
    fn link_names() {
        assert_eq!(gsi_link_name(16).as_deref(), Some("GSIA"));
        assert_eq!(gsi_link_name(20).as_deref(), Some("GSIE"));
        assert_eq!(gsi_link_name(23).as_deref(), Some("GSIH"));
        assert_eq!(gsi_link_name(15), None);
        assert_eq!(gsi_link_name(24), None);
        assert_eq!(gsi_link_name(0), None);
    }
}
