//! Arbitrary guest accesses to the devices firmware programs: fw_cfg's
//! ports (selects, data reads, DMA descriptors anywhere in RAM or outside
//! it), the q35 MCH and LPC configuration spaces (PAM, PCIEXBAR, PMBASE),
//! and the PAM area's exit handler under whatever PAM says. Nothing panics.
#![no_main]
use std::sync::{Arc, Mutex};

use devices::bus::BusDevice;
use devices::chipset::lpc::Lpc;
use devices::chipset::mch::Mch;
use devices::chipset::pam::{PamArea, PAM_START};
use devices::fw_cfg::FwCfg;
use devices::pci::PciDevice;
use libfuzzer_sys::fuzz_target;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const RAM: usize = 0x10_0000;

fuzz_target!(|data: &[u8]| {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), RAM)]).unwrap();
    let mut fw = FwCfg::new(mem.clone());
    let _ = fw.add_file("etc/e820", vec![1; 40]);
    let _ = fw.add_file_with_refresh("etc/acpi/tables", vec![0; 64], Box::new(|d| d.fill(7)));
    let pam = Arc::new(Mutex::new([0u8; 7]));
    let mut mch = Mch::new(pam.clone());
    let mut lpc = Lpc::new();
    let mut area = PamArea::new(pam, Some(Arc::from(vec![0x5a; 0x2_0000])), mem.clone());
    for op in data.chunks(12) {
        if op.len() < 12 {
            break;
        }
        let len = [1usize, 2, 4, 8][usize::from(op[1] & 3)];
        let off = u64::from(u32::from_le_bytes([op[2], op[3], op[4], op[5]]));
        let val = &op[4..4 + len.min(8)];
        let mut buf = vec![0u8; len];
        match op[0] % 8 {
            0 => fw.read(off % 12, &mut buf),
            1 => fw.write(off % 12, &val[..len.min(val.len())]),
            2 => {
                // A descriptor somewhere, then start it.
                let at = off % RAM as u64;
                let _ = mem.write_slice(&op[4..12], GuestAddress(at));
                fw.write(8, &(at as u32).to_be_bytes());
            }
            3 => mch.write_config(usize::from(op[6]) % 80, u64::from(op[7] % 4), &val[..len.min(4)]),
            4 => lpc.write_config(usize::from(op[6]) % 80, u64::from(op[7] % 4), &val[..len.min(4)]),
            5 => area.read(off % 0x4_0000, &mut buf),
            6 => area.write(off, &val[..len.min(val.len())]),
            _ => {
                let _ = mch.read_config(usize::from(op[6]));
                let _ = lpc.read_config(usize::from(op[6]));
                fw.reset();
                mch.reset();
            }
        }
    }
    let _ = PAM_START;
});
