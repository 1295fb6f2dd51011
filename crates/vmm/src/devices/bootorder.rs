//! fw_cfg's `bootorder` file: the devices with a `bootindex=`, lowest index
//! first, each as the OpenFirmware device path QEMU gives it (softmmu/
//! bootdevice.c `get_boot_devices_list`), one per line, NUL-terminated;
//! `-boot strict=on` appends `HALT` so SeaBIOS tries nothing else.

use devices::pci::PciAddress;

/// q35's and pc's PCI root in OpenFirmware terms (QEMU's host bridge
/// `fw_name` "pci" at I/O port 0xcf8).
const PCI_ROOT: &str = "/pci@i0cf8";

/// The path of a virtio-blk-pci function: its PCI class (mass storage,
/// SCSI) names the node, as hw/pci/pci.c `pci_dev_fw_name` does, and the
/// virtio-blk device below it is `disk@0,0`. Seen in SeaBIOS's log on
/// QEMU 7.2: `/pci@i0cf8/scsi@1/disk@0,0`.
pub fn virtio_blk_path(addr: PciAddress) -> String {
    format!("{PCI_ROOT}/{}/disk@0,0", pci_node("scsi", addr))
}

/// The path of a virtio-net-pci function: class "ethernet", and the NIC's
/// own suffix (hw/net/virtio-net.c adds its bootindex as `/ethernet-phy@0`).
pub fn virtio_net_path(addr: PciAddress) -> String {
    format!("{PCI_ROOT}/{}/ethernet-phy@0", pci_node("ethernet", addr))
}

/// `name@slot[,function]` in hex (hw/pci/pci.c `pcibus_get_fw_dev_path`).
fn pci_node(name: &str, addr: PciAddress) -> String {
    if addr.function == 0 {
        format!("{name}@{:x}", addr.slot)
    } else {
        format!("{name}@{:x},{:x}", addr.slot, addr.function)
    }
}

/// A device with a `bootindex`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootDevice {
    pub index: u32,
    pub path: String,
}

/// The file's bytes, `None` when no device has a boot index (QEMU then adds
/// no file). Errors on an index used twice, in QEMU's words.
pub fn bootorder(devices: &[BootDevice], strict: bool) -> Result<Option<Vec<u8>>, String> {
    let mut sorted = devices.to_vec();
    sorted.sort_by_key(|d| d.index);
    if let Some(w) = sorted.windows(2).find(|w| w[0].index == w[1].index) {
        return Err(format!(
            "The bootindex {} has already been used",
            w[0].index
        ));
    }
    if sorted.is_empty() {
        return Ok(None);
    }
    let mut lines: Vec<&str> = sorted.iter().map(|d| d.path.as_str()).collect();
    if strict {
        lines.push("HALT");
    }
    let mut bytes = lines.join("\n").into_bytes();
    bytes.push(0);
    Ok(Some(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(index: u32, slot: u8, function: u8) -> BootDevice {
        BootDevice {
            index,
            path: virtio_blk_path(PciAddress::new(0, slot, function)),
        }
    }

    #[test]
    fn paths_are_qemus() {
        assert_eq!(
            virtio_blk_path(PciAddress::new(0, 1, 0)),
            "/pci@i0cf8/scsi@1/disk@0,0"
        );
        assert_eq!(
            virtio_blk_path(PciAddress::new(0, 0x1a, 3)),
            "/pci@i0cf8/scsi@1a,3/disk@0,0"
        );
    }

    #[test]
    fn lowest_index_first_nul_terminated() {
        let f = bootorder(&[dev(2, 3, 0), dev(1, 4, 0)], false)
            .unwrap()
            .unwrap();
        assert_eq!(
            f,
            b"/pci@i0cf8/scsi@4/disk@0,0\n/pci@i0cf8/scsi@3/disk@0,0\0".to_vec()
        );
        let f = bootorder(&[dev(0, 2, 0)], true).unwrap().unwrap();
        assert_eq!(f, b"/pci@i0cf8/scsi@2/disk@0,0\nHALT\0".to_vec());
    }

    #[test]
    fn no_file_without_boot_indexes_even_when_strict() {
        assert_eq!(bootorder(&[], true), Ok(None));
    }

    #[test]
    fn an_index_used_twice_is_an_error() {
        assert_eq!(
            bootorder(&[dev(1, 2, 0), dev(1, 3, 0)], false),
            Err("The bootindex 1 has already been used".into())
        );
    }
}
