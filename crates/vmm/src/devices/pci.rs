//! PCI bus 0 (q35's pcie.0): the root complex, its two configuration
//! front-ends (ports 0xcf8/0xcfc and ECAM), and the functions on it.

use std::sync::{Arc, Mutex};

use devices::bus::Bus;
use devices::{GuestRequestFn, PciConfigIo, PciConfigMmio, PciRoot};

use super::legacy::insert;
use crate::error::VmmError;
use crate::sync::lock;

const PCI_CONFIG_PORT: u64 = 0xcf8;
pub const ECAM_BASE: u64 = 0xe000_0000;
const ECAM_SIZE: u64 = devices::pci::ECAM_SIZE;

pub struct PciDevices {
    pub root: Arc<Mutex<PciRoot>>,
    config_io: Arc<Mutex<PciConfigIo>>,
}

impl PciDevices {
    /// Bus 0 with the host bridge, reachable through 0xcf8 and ECAM.
    /// `requests` receives the resets written to RST_CNT (0xcf9).
    pub fn new(requests: GuestRequestFn, pio: &mut Bus, mmio: &mut Bus) -> Result<Self, VmmError> {
        let root = Arc::new(Mutex::new(PciRoot::new()));
        let config_io = Arc::new(Mutex::new(PciConfigIo::new(root.clone(), requests)));
        insert(pio, config_io.clone(), PCI_CONFIG_PORT, 8)?;
        insert(
            mmio,
            Arc::new(Mutex::new(PciConfigMmio::new(root.clone()))),
            ECAM_BASE,
            ECAM_SIZE,
        )?;
        Ok(Self { root, config_io })
    }

    pub fn reset(&self) {
        lock(&self.root).reset();
        lock(&self.config_io).reset();
    }
}
