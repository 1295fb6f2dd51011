//! The receive filter the control queue programs (QEMU `receive_filter`)
//! and its `query-rx-filter` view (qapi/net.json RxFilterInfo, QEMU
//! `virtio_net_query_rxfilter`).

use super::ctrl::{MacTable, RxMode};
use super::options::MacAddr;
use super::MAX_VLAN;

/// QAPI RxState.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxState {
    Normal,
    None,
    All,
}

impl RxState {
    /// The QAPI name.
    pub fn as_str(self) -> &'static str {
        match self {
            RxState::Normal => "normal",
            RxState::None => "none",
            RxState::All => "all",
        }
    }
}

/// QAPI RxFilterInfo, without `name` (the NIC's id, which the caller knows).
/// The lists are in QEMU's order: it prepends while walking the tables, so
/// they come out reversed (VLAN ids descending).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RxFilterInfo {
    pub promiscuous: bool,
    pub multicast: RxState,
    pub unicast: RxState,
    pub vlan: RxState,
    /// QEMU 7.2 reports its `nobcast` switch here (sic): true once the
    /// driver turned broadcast reception off.
    pub broadcast_allowed: bool,
    pub multicast_overflow: bool,
    pub unicast_overflow: bool,
    pub main_mac: MacAddr,
    pub vlan_table: Vec<u16>,
    pub unicast_table: Vec<MacAddr>,
    pub multicast_table: Vec<MacAddr>,
}

/// The filter state (`VirtIONet` promisc..nobcast, mac_table, vlans).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RxFilter {
    pub promisc: bool,
    pub allmulti: bool,
    pub alluni: bool,
    pub nomulti: bool,
    pub nouni: bool,
    pub nobcast: bool,
    pub mac_table: MacTable,
    /// One bit per VLAN id, as QEMU's `uint32_t vlans[MAX_VLAN >> 5]`.
    pub vlans: Box<[u32; MAX_VLAN / 32]>,
}

impl Default for RxFilter {
    /// `virtio_net_reset`: promiscuous "for compatibility", tables empty.
    fn default() -> Self {
        Self {
            promisc: true,
            allmulti: false,
            alluni: false,
            nomulti: false,
            nouni: false,
            nobcast: false,
            mac_table: MacTable::default(),
            vlans: Box::new([0; MAX_VLAN / 32]),
        }
    }
}

impl RxFilter {
    pub fn set_mode(&mut self, mode: RxMode, on: bool) {
        let flag = match mode {
            RxMode::Promisc => &mut self.promisc,
            RxMode::AllMulti => &mut self.allmulti,
            RxMode::AllUni => &mut self.alluni,
            RxMode::NoMulti => &mut self.nomulti,
            RxMode::NoUni => &mut self.nouni,
            RxMode::NoBcast => &mut self.nobcast,
        };
        *flag = on;
    }

    /// Fills the VLAN table: all ids pass unless the driver negotiated
    /// CTRL_VLAN (QEMU `virtio_net_set_features`).
    /// The filter after a device reset: `virtio_net_reset` clears the VLAN
    /// table, then `virtio_reset` applies features 0, which without
    /// CTRL_VLAN passes every VLAN (`virtio_net_set_features`). So before a
    /// driver negotiates, `query-rx-filter` lists all 4096.
    pub fn after_device_reset() -> Self {
        let mut f = Self::default();
        f.set_all_vlans(true);
        f
    }

    pub fn set_all_vlans(&mut self, pass: bool) {
        self.vlans.fill(if pass { u32::MAX } else { 0 });
    }

    pub fn set_vlan(&mut self, vid: u16, on: bool) {
        let (w, b) = (usize::from(vid >> 5) % self.vlans.len(), vid & 0x1f);
        if on {
            self.vlans[w] |= 1 << b;
        } else {
            self.vlans[w] &= !(1 << b);
        }
    }

    pub fn vlan_allowed(&self, vid: u16) -> bool {
        let (w, b) = (usize::from(vid >> 5) % self.vlans.len(), vid & 0x1f);
        self.vlans[w] & (1 << b) != 0
    }

    fn in_table(&self, range: std::ops::Range<usize>, dest: &[u8]) -> bool {
        self.mac_table
            .macs
            .get(range)
            .is_some_and(|t| t.iter().any(|m| m.0 == dest))
    }

    /// `receive_filter` for an Ethernet frame (no vnet header). Bytes a
    /// runt frame lacks read as zero.
    pub fn accepts(&self, frame: &[u8], mac: MacAddr) -> bool {
        if self.promisc {
            return true;
        }
        let mut h = [0u8; 16];
        let n = frame.len().min(16);
        h[..n].copy_from_slice(&frame[..n]);
        if h[12..14] == [0x81, 0x00] {
            let vid = u16::from_be_bytes([h[14], h[15]]) & 0xfff;
            if !self.vlan_allowed(vid) {
                return false;
            }
        }
        let dest = &h[..6];
        let t = &self.mac_table;
        if dest[0] & 1 != 0 {
            if dest == MacAddr::BROADCAST.0 {
                !self.nobcast
            } else if self.nomulti {
                false
            } else if self.allmulti || t.multi_overflow {
                true
            } else {
                self.in_table(t.first_multi..t.macs.len(), dest)
            }
        } else if self.nouni {
            false
        } else if self.alluni || t.uni_overflow || dest == mac.0 {
            true
        } else {
            self.in_table(0..t.first_multi, dest)
        }
    }

    /// `virtio_net_query_rxfilter`; `ctrl_vlan` is whether the driver
    /// negotiated VIRTIO_NET_F_CTRL_VLAN.
    pub fn info(&self, main_mac: MacAddr, ctrl_vlan: bool) -> RxFilterInfo {
        let state = |none: bool, all: bool| {
            if none {
                RxState::None
            } else if all {
                RxState::All
            } else {
                RxState::Normal
            }
        };
        let t = &self.mac_table;
        let first_multi = t.first_multi.min(t.macs.len());
        let vlan_table: Vec<u16> = (0..MAX_VLAN as u16)
            .rev()
            .filter(|&v| self.vlan_allowed(v))
            .collect();
        let vlan = if !ctrl_vlan {
            RxState::All
        } else if vlan_table.is_empty() {
            RxState::None
        } else {
            RxState::Normal
        };
        RxFilterInfo {
            promiscuous: self.promisc,
            unicast: state(self.nouni, self.alluni),
            multicast: state(self.nomulti, self.allmulti),
            vlan,
            broadcast_allowed: self.nobcast,
            multicast_overflow: t.multi_overflow,
            unicast_overflow: t.uni_overflow,
            main_mac,
            vlan_table,
            unicast_table: t.macs[..first_multi].iter().rev().copied().collect(),
            multicast_table: t.macs[first_multi..].iter().rev().copied().collect(),
        }
    }
}
