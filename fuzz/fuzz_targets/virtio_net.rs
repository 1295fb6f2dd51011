//! Arbitrary bytes as what a virtio-net guest puts in front of the device:
//! control-queue commands (class, command, data), transmit headers and
//! chain lengths, and frames for the receive filter. The parsers and the
//! filter they program must never panic, and their answers must stay
//! within the limits QEMU's handlers keep (a MAC table of at most 64
//! entries, VLAN ids below 4096, a transmitted frame no longer than the
//! chain).
#![no_main]
use devices::virtio::net::ctrl::{self, CtrlCommand};
use devices::virtio::net::filter::RxFilter;
use devices::virtio::net::header::{self, TxPlan, VirtioNetHdr};
use devices::virtio::net::{MacAddr, MAC_TABLE_ENTRIES, NET_BUFSIZE};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    // The first byte splits the rest into a command and a frame.
    let at = usize::from(split).min(rest.len());
    let (cmd, frame) = rest.split_at(at);

    let mut filter = RxFilter::default();
    let mut mac = MacAddr::QEMU_DEFAULT;
    match ctrl::parse(cmd) {
        Ok(CtrlCommand::RxMode { mode, on }) => filter.set_mode(mode, on),
        Ok(CtrlCommand::MacTableSet(t)) => {
            assert!(t.macs.len() <= MAC_TABLE_ENTRIES);
            assert!(t.first_multi <= t.macs.len());
            filter.promisc = false;
            filter.mac_table = t;
        }
        Ok(CtrlCommand::MacAddrSet(m)) => mac = m,
        Ok(CtrlCommand::VlanAdd(v)) | Ok(CtrlCommand::VlanDel(v)) => {
            assert!(v < 4096);
            filter.promisc = false;
            filter.set_vlan(v, true);
        }
        Ok(_) | Err(_) => {}
    }
    let _ = ctrl::parse_mac_table(cmd);
    let _ = filter.accepts(frame, mac);
    let info = filter.info(mac, split & 1 != 0);
    assert!(info.unicast_table.len() + info.multicast_table.len() <= MAC_TABLE_ENTRIES);

    let _ = VirtioNetHdr::parse(frame);
    let total = frame.len() as u64 * u64::from(split);
    for host in [0, 10, 12] {
        if let Ok(TxPlan::Send { len, .. }) =
            header::tx_plan(usize::from(split % 4), total, 12, host, NET_BUFSIZE)
        {
            assert!(len as u64 <= total && len <= NET_BUFSIZE);
        }
    }
});
