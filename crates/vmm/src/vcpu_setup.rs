//! Architectural start state of a vCPU beyond what the boot path sets:
//! CPUID, boot MSRs and the local APIC's LINT pins.

use kvm_bindings::{kvm_lapic_state, kvm_msr_entry, CpuId, Msrs};
use kvm_ioctls::VcpuFd;

use crate::cpuid::{self, CpuModel, Topology};
use crate::error::VmmError;

const MSR_IA32_TSC: u32 = 0x10;
const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;

/// MSR values a freshly reset PC has, plus what firmware would have set:
/// fast-string enable and MTRRs on with write-back default (otherwise the
/// guest treats all RAM as uncached).
fn boot_msrs() -> Vec<kvm_msr_entry> {
    let e = |index, data| kvm_msr_entry {
        index,
        data,
        ..Default::default()
    };
    vec![
        e(MSR_IA32_SYSENTER_CS, 0),
        e(MSR_IA32_SYSENTER_ESP, 0),
        e(MSR_IA32_SYSENTER_EIP, 0),
        e(MSR_STAR, 0),
        e(MSR_CSTAR, 0),
        e(MSR_KERNEL_GS_BASE, 0),
        e(MSR_SYSCALL_MASK, 0),
        e(MSR_LSTAR, 0),
        e(MSR_IA32_TSC, 0),
        e(MSR_IA32_MISC_ENABLE, 1),
        e(MSR_MTRR_DEF_TYPE, (1 << 11) | 6),
    ]
}

// Local APIC register offsets and LVT delivery modes (Intel SDM vol. 3A, 10.5.1).
const APIC_LVT_LINT0: usize = 0x350;
const APIC_LVT_LINT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

/// LVT LINT1 unmasked (Intel SDM vol. 3 §10.5.1: mask bit 16) with
/// delivery mode NMI (bits 8-10).
pub(crate) fn lint1_delivers_nmi(l: &kvm_lapic_state) -> bool {
    let lvt = lapic_reg(l, APIC_LVT_LINT1);
    lvt & (1 << 16) == 0 && (lvt >> 8) & 7 == APIC_MODE_NMI
}

fn lapic_reg(l: &kvm_lapic_state, off: usize) -> u32 {
    let b = &l.regs[off..off + 4];
    u32::from_le_bytes([b[0] as u8, b[1] as u8, b[2] as u8, b[3] as u8])
}

fn set_lapic_reg(l: &mut kvm_lapic_state, off: usize, v: u32) {
    for (i, byte) in v.to_le_bytes().iter().enumerate() {
        l.regs[off + i] = *byte as _;
    }
}

fn delivery_mode(reg: u32, mode: u32) -> u32 {
    (reg & !0x700) | (mode << 8)
}

pub fn configure(
    supported_cpuid: &CpuId,
    fd: &VcpuFd,
    model: &CpuModel,
    topo: Topology,
    index: u32,
    as_firmware_left_it: bool,
) -> Result<(), VmmError> {
    let mut cpuid = supported_cpuid.clone();
    cpuid::patch(&mut cpuid, model, topo, index);
    fd.set_cpuid2(&cpuid)
        .map_err(|e| VmmError::Kvm("KVM_SET_CPUID2", e))?;
    if !as_firmware_left_it {
        // Firmware boot: MSRs and LAPIC stay in their reset state.
        return Ok(());
    }

    let msrs =
        Msrs::from_entries(&boot_msrs()).map_err(|e| VmmError::Device(format!("msrs: {e:?}")))?;
    fd.set_msrs(&msrs)
        .map_err(|e| VmmError::Kvm("KVM_SET_MSRS", e))?;

    // LINT0 takes the PIC's ExtINT, LINT1 NMIs, as a PC BIOS programs them.
    let mut lapic = fd
        .get_lapic()
        .map_err(|e| VmmError::Kvm("KVM_GET_LAPIC", e))?;
    let lint0 = lapic_reg(&lapic, APIC_LVT_LINT0);
    set_lapic_reg(
        &mut lapic,
        APIC_LVT_LINT0,
        delivery_mode(lint0, APIC_MODE_EXTINT),
    );
    let lint1 = lapic_reg(&lapic, APIC_LVT_LINT1);
    set_lapic_reg(
        &mut lapic,
        APIC_LVT_LINT1,
        delivery_mode(lint1, APIC_MODE_NMI),
    );
    fd.set_lapic(&lapic)
        .map_err(|e| VmmError::Kvm("KVM_SET_LAPIC", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lint_delivery_modes_keep_other_bits() {
        let mut l = kvm_lapic_state::default();
        set_lapic_reg(&mut l, APIC_LVT_LINT0, 0x0001_0700 | 0x20);
        let v = delivery_mode(lapic_reg(&l, APIC_LVT_LINT0), APIC_MODE_NMI);
        assert_eq!(v, 0x0001_0420);
    }

    #[test]
    fn boot_msrs_enable_mtrrs_write_back() {
        let m = boot_msrs();
        let def = m.iter().find(|e| e.index == MSR_MTRR_DEF_TYPE).unwrap();
        assert_eq!(def.data, 0x806);
    }
}
