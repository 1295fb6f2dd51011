//! MSI-X (PCI Local Bus 3.0 §6.8.2): the capability, the vector table and the
//! pending bit array (PBA).
//!
//! The function places the table and PBA in one of its BARs and forwards
//! accesses there to [`Msix::table_read`] / [`Msix::table_write`] /
//! [`Msix::pba_read`]. What a vector delivers goes to a [`MsiVectors`] sink:
//! [`MsiVectors::set_route`] whenever a vector's effective message changes
//! (`None` while MSI-X is disabled or the vector or function is masked) and
//! [`MsiVectors::trigger`] only for a deliverable vector. A vector that fires
//! while masked sets its pending bit and is delivered when unmasked
//! (§6.8.3.4), as QEMU's hw/pci/msix.c does.

use std::sync::Arc;

use super::capability::CAP_ID_MSIX;
use super::{PciConfigSpace, PciError};
use crate::interrupt::{MsiMessage, MsiVectors};

/// Bytes per table entry: address low, address high, data, vector control.
pub const MSIX_ENTRY_SIZE: u64 = 16;
/// Most vectors a function can have (table size field is 11 bits).
pub const MSIX_MAX_VECTORS: u16 = 2048;
/// Message control bit 15.
const CONTROL_ENABLE: u16 = 1 << 15;
/// Message control bit 14.
const CONTROL_FUNCTION_MASK: u16 = 1 << 14;
/// Vector control bit 0.
const VECTOR_MASKED: u32 = 1;

#[derive(Debug, Clone, Copy)]
struct Entry {
    address: u64,
    data: u32,
    control: u32,
}

impl Default for Entry {
    /// Power-on: every vector masked (§6.8.2.9).
    fn default() -> Self {
        Entry {
            address: 0,
            data: 0,
            control: VECTOR_MASKED,
        }
    }
}

/// Where QEMU's `msix_init_exclusive_bar` (hw/pci/msix.c) puts a table and
/// PBA that have a BAR to themselves: (BAR size, table offset, PBA offset).
/// 4 KiB with the PBA in the upper half up to 128 vectors.
pub fn exclusive_bar_layout(nvectors: u16) -> (u64, u64, u64) {
    let n = u64::from(nvectors);
    let pba_size = n.div_ceil(64) * 8;
    let pba_offset = (n * MSIX_ENTRY_SIZE).max(0x800);
    let size = (pba_offset + pba_size).max(0x1000).next_power_of_two();
    (size, 0, pba_offset)
}

/// One function's MSI-X state.
pub struct Msix {
    entries: Vec<Entry>,
    pending: Vec<u64>,
    enabled: bool,
    function_masked: bool,
    /// What the sink was last told per vector.
    routes: Vec<Option<MsiMessage>>,
    sink: Arc<dyn MsiVectors>,
    cap_offset: Option<u8>,
}

impl Msix {
    /// `nvectors` is clamped to 1..=2048.
    pub fn new(nvectors: u16, sink: Arc<dyn MsiVectors>) -> Self {
        let n = usize::from(nvectors.clamp(1, MSIX_MAX_VECTORS));
        Msix {
            entries: vec![Entry::default(); n],
            pending: vec![0; n.div_ceil(64)],
            enabled: false,
            function_masked: false,
            routes: vec![None; n],
            sink,
            cap_offset: None,
        }
    }

    pub fn nvectors(&self) -> u16 {
        self.entries.len() as u16
    }

    /// Bytes of the vector table.
    pub fn table_len(&self) -> u64 {
        self.entries.len() as u64 * MSIX_ENTRY_SIZE
    }

    /// Bytes of the PBA (whole qwords).
    pub fn pba_len(&self) -> u64 {
        self.pending.len() as u64 * 8
    }

    /// Adds the MSI-X capability to `config`: table at `table_offset` of BAR
    /// `table_bar`, PBA at `pba_offset` of BAR `pba_bar` (offsets 8-byte
    /// aligned). Only the enable and function-mask bits are writable.
    pub fn add_capability(
        &mut self,
        config: &mut PciConfigSpace,
        table_bar: u8,
        table_offset: u32,
        pba_bar: u8,
        pba_offset: u32,
    ) -> Result<u8, PciError> {
        let control = self.nvectors() - 1;
        let mut body = [0u8; 10];
        body[0..2].copy_from_slice(&control.to_le_bytes());
        body[2..6].copy_from_slice(&((table_offset & !7) | u32::from(table_bar & 7)).to_le_bytes());
        body[6..10].copy_from_slice(&((pba_offset & !7) | u32::from(pba_bar & 7)).to_le_bytes());
        let offset = config.add_capability(CAP_ID_MSIX, &body)?;
        config.set_writable(
            usize::from(offset) + 2,
            &(CONTROL_ENABLE | CONTROL_FUNCTION_MASK).to_le_bytes(),
        );
        self.cap_offset = Some(offset);
        Ok(offset)
    }

    /// Picks up the message control register after a configuration write.
    pub fn config_written(&mut self, config: &PciConfigSpace) {
        let Some(cap) = self.cap_offset else {
            return;
        };
        let control = config.word(usize::from(cap) + 2);
        let enabled = control & CONTROL_ENABLE != 0;
        let masked = control & CONTROL_FUNCTION_MASK != 0;
        if (enabled, masked) != (self.enabled, self.function_masked) {
            self.enabled = enabled;
            self.function_masked = masked;
            for v in 0..self.nvectors() {
                self.refresh(v);
            }
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn function_masked(&self) -> bool {
        self.function_masked
    }

    /// Whether vector `v`'s pending bit is set.
    pub fn is_pending(&self, v: u16) -> bool {
        let v = usize::from(v);
        self.pending
            .get(v / 64)
            .is_some_and(|q| q & (1 << (v % 64)) != 0)
    }

    fn set_pending(&mut self, v: usize, on: bool) {
        if let Some(q) = self.pending.get_mut(v / 64) {
            if on {
                *q |= 1 << (v % 64);
            } else {
                *q &= !(1 << (v % 64));
            }
        }
    }

    /// What vector `v` delivers now.
    fn effective(&self, v: usize) -> Option<MsiMessage> {
        let e = self.entries.get(v)?;
        (self.enabled && !self.function_masked && e.control & VECTOR_MASKED == 0).then_some(
            MsiMessage {
                address: e.address,
                data: e.data,
            },
        )
    }

    /// Tells the sink about a changed route and delivers a pending vector
    /// that just became deliverable.
    fn refresh(&mut self, v: u16) {
        let i = usize::from(v);
        let route = self.effective(i);
        if self.routes.get(i) != Some(&route) {
            self.routes[i] = route;
            self.sink.set_route(v, route);
        }
        if route.is_some() && self.is_pending(v) {
            self.set_pending(i, false);
            self.sink.trigger(v);
        }
    }

    /// The function signals vector `v`. Returns false when MSI-X is disabled
    /// (the function then uses INTx); a masked vector only sets its pending
    /// bit; a vector past the table is dropped.
    pub fn notify(&mut self, v: u16) -> bool {
        if !self.enabled {
            return false;
        }
        let i = usize::from(v);
        if i >= self.entries.len() {
            return true;
        }
        if self.effective(i).is_some() {
            self.sink.trigger(v);
        } else {
            self.set_pending(i, true);
        }
        true
    }

    /// A dword of the table at 4-aligned `offset`.
    fn table_dword(&self, offset: u64) -> u32 {
        let Some(e) = self.entries.get((offset / MSIX_ENTRY_SIZE) as usize) else {
            return 0;
        };
        match offset % MSIX_ENTRY_SIZE {
            0 => e.address as u32,
            4 => (e.address >> 32) as u32,
            8 => e.data,
            _ => e.control,
        }
    }

    /// A table read of 4 or 8 bytes at a naturally aligned offset; other
    /// accesses read all ones (QEMU allows 4 and 8, aligned).
    pub fn table_read(&self, offset: u64, data: &mut [u8]) {
        if !aligned_4_or_8(offset, data.len()) || offset >= self.table_len() {
            data.fill(0xff);
            return;
        }
        for (i, chunk) in data.chunks_mut(4).enumerate() {
            chunk.copy_from_slice(&self.table_dword(offset + 4 * i as u64).to_le_bytes());
        }
    }

    /// A table write of 4 or 8 aligned bytes; others are dropped.
    pub fn table_write(&mut self, offset: u64, data: &[u8]) {
        if !aligned_4_or_8(offset, data.len()) || offset >= self.table_len() {
            return;
        }
        let v = (offset / MSIX_ENTRY_SIZE) as usize;
        for (i, chunk) in data.chunks(4).enumerate() {
            let Ok(bytes) = <[u8; 4]>::try_from(chunk) else {
                return;
            };
            let value = u32::from_le_bytes(bytes);
            let e = &mut self.entries[v];
            match (offset + 4 * i as u64) % MSIX_ENTRY_SIZE {
                0 => e.address = (e.address & !0xffff_ffff) | u64::from(value),
                4 => e.address = (e.address & 0xffff_ffff) | u64::from(value) << 32,
                8 => e.data = value,
                // Only the mask bit is defined in vector control.
                _ => e.control = value & VECTOR_MASKED,
            }
        }
        self.refresh(v as u16);
    }

    /// A PBA read of 4 or 8 aligned bytes. The PBA is read-only.
    pub fn pba_read(&self, offset: u64, data: &mut [u8]) {
        if !aligned_4_or_8(offset, data.len()) || offset >= self.pba_len() {
            data.fill(0xff);
            return;
        }
        let q = self.pending[(offset / 8) as usize].to_le_bytes();
        let start = (offset % 8) as usize;
        data.copy_from_slice(&q[start..start + data.len()]);
    }

    /// Function reset: disabled, every vector masked and cleared, nothing pending.
    pub fn reset(&mut self) {
        self.entries.fill(Entry::default());
        self.pending.fill(0);
        self.enabled = false;
        self.function_masked = false;
        for v in 0..self.nvectors() {
            self.refresh(v);
        }
    }
}

fn aligned_4_or_8(offset: u64, len: usize) -> bool {
    matches!(len, 4 | 8) && offset.is_multiple_of(len as u64)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A recording MSI sink.
    #[derive(Default)]
    pub struct Vectors {
        pub routes: Mutex<Vec<(u16, Option<MsiMessage>)>>,
        pub fired: Mutex<Vec<u16>>,
    }

    impl MsiVectors for Vectors {
        fn set_route(&self, vector: u16, msg: Option<MsiMessage>) {
            self.routes.lock().unwrap().push((vector, msg));
        }
        fn trigger(&self, vector: u16) {
            self.fired.lock().unwrap().push(vector);
        }
    }

    impl Vectors {
        pub fn take_routes(&self) -> Vec<(u16, Option<MsiMessage>)> {
            std::mem::take(&mut self.routes.lock().unwrap())
        }
        pub fn take_fired(&self) -> Vec<u16> {
            std::mem::take(&mut self.fired.lock().unwrap())
        }
    }

    fn rig(n: u16) -> (Msix, PciConfigSpace, Arc<Vectors>, usize) {
        let sink = Arc::new(Vectors::default());
        let mut m = Msix::new(n, sink.clone());
        let mut c = PciConfigSpace::new(0x1af4, 0x1042, 0x010000, 1);
        let cap = m.add_capability(&mut c, 1, 0, 1, 0x800).unwrap();
        (m, c, sink, usize::from(cap))
    }

    fn set_control(m: &mut Msix, c: &mut PciConfigSpace, cap: usize, v: u16) {
        c.write((cap + 2) / 4, ((cap + 2) % 4) as u64, &v.to_le_bytes());
        m.config_written(c);
    }

    fn program(m: &mut Msix, v: u64, addr: u64, data: u32, masked: bool) {
        m.table_write(v * 16, &addr.to_le_bytes());
        m.table_write(v * 16 + 8, &data.to_le_bytes());
        m.table_write(v * 16 + 12, &u32::from(masked).to_le_bytes());
    }

    #[test]
    fn capability_describes_table_and_pba() {
        let (_, c, _, cap) = rig(3);
        assert_eq!(c.byte(cap), 0x11);
        assert_eq!(c.word(cap + 2), 2, "table size is N-1, disabled, unmasked");
        assert_eq!(c.read((cap + 4) / 4), 1, "table at offset 0 of BAR1");
        assert_eq!(c.read((cap + 8) / 4), 0x801, "PBA at 0x800 of BAR1");
        let mut c2 = c.clone();
        c2.write((cap + 2) / 4, 0, &[0xff; 4]);
        assert_eq!(
            c2.word(cap + 2),
            0xc002,
            "only enable and function mask are writable"
        );
    }

    #[test]
    fn qemu_exclusive_bar_layout() {
        assert_eq!(exclusive_bar_layout(2), (0x1000, 0, 0x800));
        assert_eq!(exclusive_bar_layout(128), (0x1000, 0, 0x800));
        assert_eq!(exclusive_bar_layout(129), (0x1000, 0, 0x810));
        assert_eq!(exclusive_bar_layout(256), (0x2000, 0, 0x1000));
    }

    #[test]
    fn table_reads_back_at_4_and_8_bytes() {
        let (mut m, _, _, _) = rig(2);
        let mut q = [0u8; 8];
        m.table_read(12, &mut q[..4]);
        assert_eq!(q[..4], [1, 0, 0, 0], "vectors start masked");
        m.table_write(16, &0x1_fee0_1000u64.to_le_bytes());
        m.table_write(24, &0x4041u32.to_le_bytes());
        m.table_read(16, &mut q);
        assert_eq!(u64::from_le_bytes(q), 0x1_fee0_1000);
        m.table_read(20, &mut q[..4]);
        assert_eq!(q[..4], [1, 0, 0, 0]);
        m.table_read(24, &mut q);
        assert_eq!(
            u64::from_le_bytes(q),
            0x1_0000_4041,
            "data then vector control"
        );
        m.table_read(18, &mut q[..2]);
        assert_eq!(q[..2], [0xff, 0xff], "2-byte access is not allowed");
        m.table_write(17, &[0; 4]);
        m.table_write(32, &[0; 4]);
        m.table_read(32, &mut q[..4]);
        assert_eq!(q[..4], [0xff; 4], "past the table");
        m.table_read(16, &mut q);
        assert_eq!(
            u64::from_le_bytes(q),
            0x1_fee0_1000,
            "bad writes changed nothing"
        );
    }

    #[test]
    fn routes_follow_enable_and_masks() {
        let (mut m, mut c, sink, cap) = rig(2);
        let msg = MsiMessage {
            address: 0xfee0_0000,
            data: 0x41,
        };
        program(&mut m, 0, msg.address, msg.data, false);
        assert!(sink.take_routes().is_empty(), "MSI-X still disabled");
        set_control(&mut m, &mut c, cap, 0x8000);
        assert_eq!(
            sink.take_routes(),
            vec![(0, Some(msg))],
            "vector 1 stays masked"
        );
        set_control(&mut m, &mut c, cap, 0xc000);
        assert_eq!(sink.take_routes(), vec![(0, None)], "function mask");
        set_control(&mut m, &mut c, cap, 0x8000);
        assert_eq!(sink.take_routes(), vec![(0, Some(msg))]);
        m.table_write(12, &1u32.to_le_bytes());
        assert_eq!(sink.take_routes(), vec![(0, None)], "vector mask");
        m.table_write(8, &0x42u32.to_le_bytes());
        assert!(
            sink.take_routes().is_empty(),
            "a masked vector's data change delivers nothing"
        );
        m.table_write(12, &0u32.to_le_bytes());
        assert_eq!(
            sink.take_routes(),
            vec![(0, Some(MsiMessage { data: 0x42, ..msg }))]
        );
        set_control(&mut m, &mut c, cap, 0);
        assert_eq!(sink.take_routes(), vec![(0, None)]);
    }

    #[test]
    fn masked_vector_pends_and_fires_on_unmask() {
        let (mut m, mut c, sink, cap) = rig(2);
        assert!(!m.notify(0), "disabled: the caller uses INTx");
        set_control(&mut m, &mut c, cap, 0x8000);
        program(&mut m, 1, 0xfee0_0000, 0x51, false);
        assert!(m.notify(1));
        assert_eq!(sink.take_fired(), vec![1]);
        assert!(m.notify(0), "masked vector 0");
        assert!(sink.take_fired().is_empty());
        let mut b = [0u8; 8];
        m.pba_read(0, &mut b);
        assert_eq!(u64::from_le_bytes(b), 1, "vector 0 pending");
        program(&mut m, 0, 0xfee0_0000, 0x50, false);
        assert_eq!(sink.take_fired(), vec![0], "delivered on unmask");
        m.pba_read(0, &mut b[..4]);
        assert_eq!(b[..4], [0; 4], "pending bit cleared");
        // Function mask pends too; clearing it delivers.
        set_control(&mut m, &mut c, cap, 0xc000);
        m.notify(1);
        assert!(sink.take_fired().is_empty());
        assert!(m.is_pending(1));
        set_control(&mut m, &mut c, cap, 0x8000);
        assert_eq!(sink.take_fired(), vec![1]);
        assert!(m.notify(7), "out-of-range vector is dropped");
        assert!(sink.take_fired().is_empty());
        m.reset();
        assert!(!m.enabled());
        m.pba_read(0, &mut b);
        assert_eq!(u64::from_le_bytes(b), 0);
    }
}
