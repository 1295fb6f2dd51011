//! QEMU's firmware configuration device, x86 I/O-port flavour with DMA
//! (hw/nvram/fw_cfg.c; docs/specs/fw_cfg.rst): how SeaBIOS learns the
//! machine — its memory map, CPU count, boot order, SMBIOS and ACPI tables.
//!
//! | port | access | what |
//! |---|---|---|
//! | 0x510 | 16-bit write | select an item (its offset goes back to 0) |
//! | 0x510, 0x511 | 8-bit read | the next byte of the selected item (0 past its end) |
//! | 0x514 | 32-bit write | DMA descriptor address, high half (big-endian) |
//! | 0x518 | 32-bit write | DMA descriptor address, low half: starts the transfer |
//! | 0x514-0x51b | read | the DMA signature "QEMU CFG" |
//!
//! A DMA descriptor (big-endian) is `u32 control, u32 length, u64 address`;
//! control: ERROR 1, READ 2, SKIP 4, SELECT 8 (the item in bits 31:16),
//! WRITE 0x10. The device runs it at once and writes `control` back as 0, or
//! ERROR. Items are read-only: a WRITE fails, as for QEMU's non-writable
//! items. Byte writes to the data port are ignored (QEMU 2.4 and later).
//!
//! Files (item 0x19 lists them) are kept sorted by name, their selectors
//! following that order from 0x20. QEMU orders them by a fixed priority list
//! instead; firmware finds files by name, so only the numbers differ.

mod items;

pub use items::*;

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::bus::BusDevice;

/// The port block's base and length.
pub const FW_CFG_PORT: u64 = 0x510;
pub const FW_CFG_PORT_LEN: u64 = 12;
const DMA_OFFSET: u64 = 4;
/// "QEMU CFG", what the DMA register reads.
pub const DMA_SIGNATURE: u64 = 0x5145_4d55_2043_4647;
const DMA_ERROR: u32 = 1;
const DMA_READ: u32 = 2;
const DMA_SKIP: u32 = 4;
const DMA_SELECT: u32 = 8;
const DMA_WRITE: u32 = 0x10;
/// File names are at most 55 bytes and a NUL (`FWCfgFile.name[56]`).
pub const FILE_NAME_MAX: usize = 55;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FwCfgError {
    #[error("fw_cfg file name '{0}' is empty or longer than 55 bytes")]
    BadName(String),
    #[error("fw_cfg file '{0}' already exists")]
    Duplicate(String),
    #[error("fw_cfg has no room for more files")]
    Full,
}

/// Rewrites a file's bytes in place when the guest first selects it.
pub type Refresh = Box<dyn FnMut(&mut [u8]) + Send>;

struct File {
    name: String,
    data: Vec<u8>,
    refresh: Option<Refresh>,
    /// The refresh has run since the last reset.
    refreshed: bool,
}

/// The device. Build it with its items before the guest runs.
pub struct FwCfg {
    mem: GuestMemoryMmap,
    /// Items by selector, except files.
    items: std::collections::BTreeMap<u16, Vec<u8>>,
    /// Files, sorted by name: file `i` is selector `FILE_FIRST + i`.
    files: Vec<File>,
    selected: Option<u16>,
    offset: usize,
    dma_high: u32,
}

impl FwCfg {
    /// A device with the signature and ID items; DMA reaches `mem`.
    pub fn new(mem: GuestMemoryMmap) -> Self {
        let mut s = Self {
            mem,
            items: Default::default(),
            files: Vec::new(),
            selected: None,
            offset: 0,
            dma_high: 0,
        };
        s.add_bytes(SIGNATURE, b"QEMU".to_vec());
        s.add_u32(ID, ID_TRADITIONAL | ID_DMA);
        s
    }

    /// Sets item `key` (not a file selector).
    pub fn add_bytes(&mut self, key: u16, data: Vec<u8>) {
        self.items.insert(key, data);
    }

    pub fn add_u16(&mut self, key: u16, v: u16) {
        self.add_bytes(key, v.to_le_bytes().to_vec());
    }

    pub fn add_u32(&mut self, key: u16, v: u32) {
        self.add_bytes(key, v.to_le_bytes().to_vec());
    }

    pub fn add_u64(&mut self, key: u16, v: u64) {
        self.add_bytes(key, v.to_le_bytes().to_vec());
    }

    /// Adds a file; returns its selector (valid until the next file is added).
    pub fn add_file(&mut self, name: &str, data: Vec<u8>) -> Result<u16, FwCfgError> {
        self.insert_file(name, data, None)
    }

    /// Adds a file whose bytes `refresh` rewrites (same length) when the
    /// guest first selects it after creation or [`FwCfg::reset`]: QEMU's
    /// `acpi_build_update`, which rebuilds the ACPI tables once the firmware
    /// has programmed the chipset.
    pub fn add_file_with_refresh(
        &mut self,
        name: &str,
        data: Vec<u8>,
        refresh: Refresh,
    ) -> Result<u16, FwCfgError> {
        self.insert_file(name, data, Some(refresh))
    }

    fn insert_file(
        &mut self,
        name: &str,
        data: Vec<u8>,
        refresh: Option<Refresh>,
    ) -> Result<u16, FwCfgError> {
        if name.is_empty() || name.len() > FILE_NAME_MAX || name.contains('\0') {
            return Err(FwCfgError::BadName(name.into()));
        }
        let at = match self.files.binary_search_by(|f| f.name.as_str().cmp(name)) {
            Ok(_) => return Err(FwCfgError::Duplicate(name.into())),
            Err(at) => at,
        };
        if self.files.len() >= usize::from(FILE_SLOTS) {
            return Err(FwCfgError::Full);
        }
        self.files.insert(
            at,
            File {
                name: name.into(),
                data,
                refresh,
                refreshed: false,
            },
        );
        Ok(FILE_FIRST + at as u16)
    }

    /// The selector of file `name`, if present.
    pub fn file_selector(&self, name: &str) -> Option<u16> {
        self.files
            .iter()
            .position(|f| f.name == name)
            .map(|i| FILE_FIRST + i as u16)
    }

    /// Machine reset: nothing selected, refreshes armed again.
    pub fn reset(&mut self) {
        self.selected = None;
        self.offset = 0;
        self.dma_high = 0;
        for f in &mut self.files {
            f.refreshed = false;
        }
    }

    /// The file directory (item 0x19): be32 count, then per file be32 size,
    /// be16 select, be16 reserved, name[56].
    fn directory(&self) -> Vec<u8> {
        let mut d = (self.files.len() as u32).to_be_bytes().to_vec();
        for (i, f) in self.files.iter().enumerate() {
            d.extend_from_slice(&(f.data.len() as u32).to_be_bytes());
            d.extend_from_slice(&(FILE_FIRST + i as u16).to_be_bytes());
            d.extend_from_slice(&[0, 0]);
            let mut name = [0u8; 56];
            name[..f.name.len()].copy_from_slice(f.name.as_bytes());
            d.extend_from_slice(&name);
        }
        d
    }

    fn select(&mut self, key: u16) {
        self.offset = 0;
        self.selected = Some(key);
        if let Some(f) = key
            .checked_sub(FILE_FIRST)
            .and_then(|i| self.files.get_mut(usize::from(i)))
        {
            if !f.refreshed {
                f.refreshed = true;
                if let Some(r) = f.refresh.as_mut() {
                    r(&mut f.data);
                }
            }
        }
    }

    /// The selected item's bytes (the directory is built on demand).
    fn with_item<R>(&self, f: impl FnOnce(&[u8]) -> R) -> R {
        match self.selected {
            Some(FILE_DIR) => f(&self.directory()),
            Some(k) if k >= FILE_FIRST => match self.files.get(usize::from(k - FILE_FIRST)) {
                Some(file) => f(&file.data),
                None => f(&[]),
            },
            Some(k) => f(self.items.get(&k).map(Vec::as_slice).unwrap_or(&[])),
            None => f(&[]),
        }
    }

    fn read_data_byte(&mut self) -> u8 {
        let off = self.offset;
        let b = self.with_item(|d| d.get(off).copied());
        match b {
            Some(b) => {
                self.offset += 1;
                b
            }
            None => 0,
        }
    }

    /// Runs the descriptor at `addr` (QEMU `fw_cfg_dma_transfer`).
    fn dma(&mut self, addr: u64) {
        let mut desc = [0u8; 16];
        if self.mem.read_slice(&mut desc, GuestAddress(addr)).is_err() {
            self.dma_status(addr, DMA_ERROR);
            return;
        }
        let control = u32::from_be_bytes([desc[0], desc[1], desc[2], desc[3]]);
        let mut length = u64::from(u32::from_be_bytes([desc[4], desc[5], desc[6], desc[7]]));
        let mut target = u64::from_be_bytes([
            desc[8], desc[9], desc[10], desc[11], desc[12], desc[13], desc[14], desc[15],
        ]);
        if control & DMA_SELECT != 0 {
            self.select((control >> 16) as u16);
        }
        let (read, write) = if control & DMA_READ != 0 {
            (true, false)
        } else if control & DMA_WRITE != 0 {
            (false, true)
        } else if control & DMA_SKIP != 0 {
            (false, false)
        } else {
            length = 0;
            (false, false)
        };
        let mut status = 0;
        while length > 0 && status == 0 {
            let off = self.offset;
            let chunk = self.with_item(|d| {
                let avail = d.len().saturating_sub(off) as u64;
                let n = length.min(avail);
                (n, d.get(off..off + n as usize).map(<[u8]>::to_vec))
            });
            let len = match chunk {
                // Past the end: reads give zeros, writes fail.
                (0, _) => {
                    if read && self.fill_zero(target, length).is_err() {
                        status = DMA_ERROR;
                    }
                    if write {
                        status = DMA_ERROR;
                    }
                    length
                }
                (n, bytes) => {
                    if read {
                        let ok = bytes
                            .map(|b| self.mem.write_slice(&b, GuestAddress(target)).is_ok())
                            .unwrap_or(false);
                        if !ok {
                            status = DMA_ERROR;
                        }
                    }
                    if write {
                        // No item is writable.
                        status = DMA_ERROR;
                    }
                    self.offset += n as usize;
                    n
                }
            };
            target = target.wrapping_add(len);
            length -= len;
        }
        self.dma_status(addr, status);
    }

    fn fill_zero(&self, addr: u64, len: u64) -> Result<(), ()> {
        let zeros = [0u8; 4096];
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(4096);
            let at = addr.checked_add(done).ok_or(())?;
            self.mem
                .write_slice(&zeros[..n as usize], GuestAddress(at))
                .map_err(|_| ())?;
            done += n;
        }
        Ok(())
    }

    fn dma_status(&self, addr: u64, control: u32) {
        // Nothing to report to if the descriptor itself is unreachable.
        let _ = self
            .mem
            .write_slice(&control.to_be_bytes(), GuestAddress(addr));
    }
}

impl BusDevice for FwCfg {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match (offset, data.len()) {
            (0 | 1, 1) => data[0] = self.read_data_byte(),
            (o, n) if o >= DMA_OFFSET && o + n as u64 <= DMA_OFFSET + 8 => {
                let sig = DMA_SIGNATURE.to_be_bytes();
                let at = (o - DMA_OFFSET) as usize;
                data.copy_from_slice(&sig[at..at + n]);
            }
            _ => data.fill(0),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        match (offset, data.len()) {
            (0 | 1, 2) => self.select(u16::from_le_bytes([data[0], data[1]])),
            // The descriptor address, written big-endian (DEVICE_BIG_ENDIAN).
            (4, 4) => self.dma_high = u32::from_be_bytes([data[0], data[1], data[2], data[3]]),
            (8, 4) => {
                let low = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
                let addr = u64::from(self.dma_high) << 32 | u64::from(low);
                self.dma_high = 0;
                self.dma(addr);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests;
