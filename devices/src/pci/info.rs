//! What QMP `query-pci` reports per function (QEMU qapi/pci.json
//! `PciDeviceInfo`; filled like hw/pci/pci.c `qmp_query_pci_device`), in
//! plain Rust types: the VMM turns them into JSON.

use super::bridge::BridgeState;
use super::capability::{self, PciCapability};
use super::root::{lock_fn, BusIndex, PciRoot};
use super::{BarKind, PciAddress};

/// `PciDeviceClass`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PciClassInfo {
    /// Class << 8 | subclass (the word at 0x0a), QMP's `class`.
    pub class: u16,
    /// QEMU's description of `class`, QMP's `desc` (absent when `None`).
    pub desc: Option<&'static str>,
}

/// `PciDeviceId`. The subsystem fields are present for type 0 headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PciDeviceId {
    pub vendor: u16,
    pub device: u16,
    pub subsystem_vendor: Option<u16>,
    pub subsystem: Option<u16>,
}

/// `PciMemoryRegion`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PciRegionInfo {
    pub bar: u8,
    pub kind: BarKind,
    /// Where the BAR decodes; `None` is QMP's `-1` (unmapped).
    pub address: Option<u64>,
    pub size: u64,
}

impl PciRegionInfo {
    /// QMP `type`: "io" or "memory".
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            BarKind::Io => "io",
            _ => "memory",
        }
    }
    /// QMP `prefetch` (memory BARs only).
    pub fn prefetch(&self) -> Option<bool> {
        (self.kind != BarKind::Io).then(|| self.kind.prefetchable())
    }
    /// QMP `mem_type_64` (memory BARs only).
    pub fn mem_type_64(&self) -> Option<bool> {
        (self.kind != BarKind::Io).then(|| self.kind.is_64bit())
    }
}

/// `PciDeviceInfo` for one function, plus the revision, programming
/// interface and capability list (not in QMP's reply; lspci shows them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PciDeviceInfo {
    pub address: PciAddress,
    pub class_info: PciClassInfo,
    pub prog_if: u8,
    pub revision: u8,
    pub id: PciDeviceId,
    /// Interrupt pin, 0 none, 1-4 INTA#-INTD# (QMP `irq_pin`).
    pub irq_pin: u8,
    /// The interrupt line register, present when there is a pin (QMP `irq`).
    pub irq: Option<u8>,
    /// QMP `qdev_id`, "" when the device has no id.
    pub qdev_id: String,
    pub regions: Vec<PciRegionInfo>,
    pub capabilities: Vec<PciCapability>,
    /// For a bridge, QMP's `pci_bridge`.
    pub bridge: Option<PciBridgeInfo>,
}

/// `PciBridgeInfo`: the bridge's bus numbers and windows, and the functions
/// on its secondary bus once that has a number (hw/pci/pci.c
/// `qmp_query_pci_bridge`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PciBridgeInfo {
    pub state: BridgeState,
    pub devices: Option<Vec<PciDeviceInfo>>,
}

/// QEMU's hw/pci/pci.c `pci_class_descriptions`, looked up like its
/// `get_class_desc`: exact class/subclass match.
pub fn class_description(class: u16) -> Option<&'static str> {
    const TABLE: &[(u16, &str)] = &[
        (0x0001, "VGA controller"),
        (0x0100, "SCSI controller"),
        (0x0101, "IDE controller"),
        (0x0102, "Floppy controller"),
        (0x0103, "IPI controller"),
        (0x0104, "RAID controller"),
        (0x0106, "SATA controller"),
        (0x0107, "SAS controller"),
        (0x0180, "Storage controller"),
        (0x0200, "Ethernet controller"),
        (0x0201, "Token Ring controller"),
        (0x0202, "FDDI controller"),
        (0x0203, "ATM controller"),
        (0x0280, "Network controller"),
        (0x0300, "VGA controller"),
        (0x0301, "XGA controller"),
        (0x0302, "3D controller"),
        (0x0380, "Display controller"),
        (0x0400, "Video controller"),
        (0x0401, "Audio controller"),
        (0x0402, "Phone"),
        (0x0403, "Audio controller"),
        (0x0480, "Multimedia controller"),
        (0x0500, "RAM controller"),
        (0x0501, "Flash controller"),
        (0x0580, "Memory controller"),
        (0x0600, "Host bridge"),
        (0x0601, "ISA bridge"),
        (0x0602, "EISA bridge"),
        (0x0603, "MC bridge"),
        (0x0604, "PCI bridge"),
        (0x0605, "PCMCIA bridge"),
        (0x0606, "NUBUS bridge"),
        (0x0607, "CARDBUS bridge"),
        (0x0608, "RACEWAY bridge"),
        (0x0680, "Bridge"),
        (0x0700, "Serial port"),
        (0x0701, "Parallel port"),
        (0x0800, "Interrupt controller"),
        (0x0801, "DMA controller"),
        (0x0802, "Timer"),
        (0x0803, "RTC"),
        (0x0900, "Keyboard"),
        (0x0901, "Pen"),
        (0x0902, "Mouse"),
        (0x0A00, "Dock station"),
        (0x0B00, "i386 cpu"),
        (0x0c00, "Firewire controller"),
        (0x0c01, "Access bus controller"),
        (0x0c02, "SSA controller"),
        (0x0c03, "USB controller"),
        (0x0c04, "Fibre channel controller"),
        (0x0c05, "SMBus"),
    ];
    TABLE.iter().find(|(c, _)| *c == class).map(|(_, d)| *d)
}

impl PciRoot {
    /// `query-pci`'s device list for bus 0, in devfn order, with the
    /// functions behind each bridge nested in its `bridge`.
    pub fn query_pci(&mut self) -> Vec<PciDeviceInfo> {
        self.bus_info(0, 0)
    }

    fn bus_info(&mut self, bus: BusIndex, depth: usize) -> Vec<PciDeviceInfo> {
        self.addresses()
            .into_iter()
            .filter(|a| a.bus == bus)
            .filter_map(|a| self.function_info_nested(a, depth))
            .collect()
    }

    /// One function's [`PciDeviceInfo`] (`a` a topology address).
    pub fn function_info(&mut self, a: PciAddress) -> Option<PciDeviceInfo> {
        self.function_info_nested(a, 0)
    }

    fn function_info_nested(&mut self, a: PciAddress, depth: usize) -> Option<PciDeviceInfo> {
        let qdev_id = self.options(a)?.id.clone();
        let dev = self.device(a)?;
        let regions = lock_fn(&dev)
            .bars()
            .into_iter()
            .map(|b| PciRegionInfo {
                bar: b.index,
                kind: b.kind,
                address: b.window.map(|w| w.base),
                size: b.size,
            })
            .collect();
        let key = (a.bus, a.devfn());
        let read = |reg: usize| self.read_at(key, reg);
        let id = read(0);
        let class = read(2);
        let header = read(3);
        let subsystem = read(11);
        let intr = read(15);
        let type0 = (header >> 16) as u8 & 0x7f == 0;
        let capabilities = capability::walk(|o| read(o / 4).to_le_bytes()[o % 4]);
        let irq_pin = (intr >> 8) as u8;
        let bridge = match self.secondary_of(a) {
            // The bridge count bounds the nesting even if the guest loops numbers.
            Some(child) if depth < 256 => {
                let state = self.bridge_info(a)?;
                let devices = (state.secondary != 0).then(|| self.bus_info(child, depth + 1));
                Some(PciBridgeInfo { state, devices })
            }
            _ => None,
        };
        Some(PciDeviceInfo {
            address: PciAddress::new(self.bus_number(a.bus), a.slot, a.function),
            class_info: PciClassInfo {
                class: (class >> 16) as u16,
                desc: class_description((class >> 16) as u16),
            },
            prog_if: (class >> 8) as u8,
            revision: class as u8,
            id: PciDeviceId {
                vendor: id as u16,
                device: (id >> 16) as u16,
                subsystem_vendor: type0.then_some(subsystem as u16),
                subsystem: type0.then_some((subsystem >> 16) as u16),
            },
            irq_pin,
            irq: (irq_pin != 0).then_some(intr as u8),
            qdev_id,
            regions,
            capabilities,
            bridge,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_bridge_reads_like_qemus_query_pci() {
        let mut root = PciRoot::new();
        let info = root.query_pci();
        assert_eq!(info.len(), 1);
        let hb = &info[0];
        assert_eq!(hb.address, PciAddress::new(0, 0, 0));
        assert_eq!(
            hb.class_info,
            PciClassInfo {
                class: 0x0600,
                desc: Some("Host bridge")
            }
        );
        assert_eq!(hb.id.subsystem_vendor, Some(0x1af4));
        assert_eq!(hb.id.subsystem, Some(0x1100));
        assert_eq!(
            (hb.irq_pin, hb.irq),
            (0, None),
            "QEMU omits irq without a pin"
        );
        assert!(hb.regions.is_empty());
        assert!(hb.capabilities.is_empty());
        assert_eq!(hb.qdev_id, "");
    }

    #[test]
    fn class_descriptions_match_exactly() {
        assert_eq!(class_description(0x0100), Some("SCSI controller"));
        assert_eq!(class_description(0x0c05), Some("SMBus"));
        assert_eq!(class_description(0x0a00), Some("Dock station"));
        assert_eq!(
            class_description(0x00ff),
            None,
            "virtio-balloon's class has no text"
        );
        assert_eq!(class_description(0x0105), None);
    }
}
