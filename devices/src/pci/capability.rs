//! Capability IDs (PCI Code and ID Assignment, §2) and the capability-list
//! walk (PCI 3.0 §6.7) used to report a function's capabilities.

use super::config::{PCI_CAPABILITY_LIST, PCI_STATUS, STATUS_CAP_LIST};

pub const CAP_ID_PM: u8 = 0x01;
pub const CAP_ID_MSI: u8 = 0x05;
pub const CAP_ID_VENDOR: u8 = 0x09;
pub const CAP_ID_PCIE: u8 = 0x10;
pub const CAP_ID_MSIX: u8 = 0x11;

/// One entry of a function's capability list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PciCapability {
    pub offset: u8,
    pub id: u8,
}

/// Walks the capability list through `byte` (a configuration-space byte
/// reader). A list the function built badly (a loop, a pointer into the
/// header) ends the walk instead of hanging it: at most 48 entries fit.
pub fn walk(mut byte: impl FnMut(usize) -> u8) -> Vec<PciCapability> {
    let status = u16::from_le_bytes([byte(PCI_STATUS), byte(PCI_STATUS + 1)]);
    let mut caps = Vec::new();
    if status & STATUS_CAP_LIST == 0 {
        return caps;
    }
    let mut ptr = byte(PCI_CAPABILITY_LIST) & 0xfc;
    while ptr >= 0x40 && caps.len() < 48 {
        let offset = usize::from(ptr);
        caps.push(PciCapability {
            offset: ptr,
            id: byte(offset),
        });
        ptr = byte(offset + 1) & 0xfc;
    }
    caps
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::PciConfigSpace;

    #[test]
    fn walks_in_list_order_and_survives_loops() {
        let mut c = PciConfigSpace::new(0, 0, 0, 0);
        assert!(walk(|o| c.byte(o)).is_empty());
        c.add_capability(CAP_ID_VENDOR, &[4, 0]).unwrap();
        c.add_capability(CAP_ID_MSIX, &[0; 10]).unwrap();
        assert_eq!(
            walk(|o| c.byte(o)),
            vec![
                PciCapability {
                    offset: 0x44,
                    id: CAP_ID_MSIX
                },
                PciCapability {
                    offset: 0x40,
                    id: CAP_ID_VENDOR
                },
            ]
        );
        c.set_bytes(0x41, &[0x44]); // 0x40 -> 0x44 -> 0x40 ...
        assert_eq!(walk(|o| c.byte(o)).len(), 48);
    }
}
