//! The SMBIOS tables of a firmware boot: pc-q35-7.2's defaults
//! (`boot::smbios`) with the command line's `-smbios` options applied, in
//! command-line order as QEMU applies them (hw/smbios/smbios.c).

use boot::smbios::{self, SmbiosEntry, SmbiosInput, SmbiosTables};
use cli::{Config, SmbiosOemString, SmbiosOption};

use crate::error::VmmError;

/// Builds `etc/smbios/smbios-anchor` and `-tables`; errors name the option.
pub fn tables(config: &Config, ram_bytes: u64) -> Result<SmbiosTables, VmmError> {
    let layout = boot::MemoryLayout::new(ram_bytes);
    let smp = config.smp;
    let mut input = SmbiosInput::q35(
        layout.low_end(),
        layout.high_bytes(),
        smp.sockets,
        smp.dies * smp.cores,
        smp.dies * smp.cores * smp.threads,
    );
    input.uuid = config.uuid.map(|u| *u.as_bytes());
    // Type 4's processor ID: CPUID leaf 1's signature and feature flags, as
    // the guest sees them with `-cpu host` (QEMU reads its vCPU's).
    let leaf1 = core::arch::x86_64::__cpuid(1);
    input.cpuid_version = leaf1.eax;
    input.cpuid_features = leaf1.edx;
    let at = |i: usize, m: String| {
        let loc = config
            .smbios_locations
            .get(i)
            .map(String::as_str)
            .unwrap_or("-smbios");
        VmmError::Config(format!("{loc}: {m}"))
    };
    for (i, o) in config.smbios.iter().enumerate() {
        input.entries.push(match o {
            SmbiosOption::File(p) => {
                SmbiosEntry::Blob(smbios::read_smbios_file(p).map_err(|e| at(i, e))?)
            }
            SmbiosOption::Type0(t) => SmbiosEntry::Type0(t.clone()),
            SmbiosOption::Type1(t) => SmbiosEntry::Type1(t.clone()),
            SmbiosOption::Type2(t) => SmbiosEntry::Type2(t.clone()),
            SmbiosOption::Type3(t) => SmbiosEntry::Type3(t.clone()),
            SmbiosOption::Type4(t) => SmbiosEntry::Type4(t.clone()),
            SmbiosOption::Type11(strings) => {
                let mut v = Vec::new();
                for s in strings {
                    v.push(match s {
                        SmbiosOemString::Value(s) => s.clone(),
                        SmbiosOemString::Path(p) => {
                            smbios::read_oem_string_file(p).map_err(|e| at(i, e))?
                        }
                    });
                }
                SmbiosEntry::Type11(v)
            }
            SmbiosOption::Type17(t) => SmbiosEntry::Type17(t.clone()),
        });
    }
    smbios::build_smbios(&input).map_err(|e| VmmError::Config(format!("-smbios: {e}")))
}
