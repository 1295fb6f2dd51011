//! `-m [size=]megs[,slots=n,maxmem=size]`.
//!
//! As in QEMU, the value is first checked as a byte size; a value ending in a
//! digit is then read in MiB (`-m 256` is 256 MiB, `-m 256k` is 256 KiB). The
//! size is rounded up to 8 KiB. Repeated `-m` options merge key by key.

use crate::builder::{Builder, Inv};
use crate::config::Config;
use crate::error::CliError;
use crate::schema::{key, size_error, Kind, Schema};
use crate::size::parse_size;
use crate::table::Parsed;

/// QEMU's ACPI_MAX_RAM_SLOTS.
const MAX_SLOTS: u64 = 256;

pub(crate) const MEM_SCHEMA: Schema = Schema {
    implied: Some("size"),
    keys: &[
        key("size", Kind::Size),
        key("slots", Kind::Number),
        key("maxmem", Kind::Size),
    ],
    warn_flags: true,
    open: false,
};

/// Merged `-m` values and where they were last given.
#[derive(Debug, Default)]
pub(crate) struct MemArgs {
    pub size: Option<u64>,
    pub slots: Option<u64>,
    pub maxmem: Option<u64>,
    pub loc: Option<Inv>,
}

pub(crate) fn handle_m(b: &mut Builder, inv: &Inv, p: Parsed) -> Result<(), CliError> {
    let o = p.opts();
    if inv.arg().is_empty() {
        return Err(inv.err(size_error("size", "", crate::size::NumError::Invalid)));
    }
    if let Some((_, raw)) = o.raw.iter().rev().find(|(k, _)| k == "size") {
        // Already checked as bytes; now the legacy "no suffix means MiB" rule.
        let legacy = raw.ends_with(|c: char| c.is_ascii_digit());
        let text = if legacy {
            format!("{raw}M")
        } else {
            raw.clone()
        };
        let size = parse_size(&text, 1).map_err(|e| inv.err(size_error("size", raw, e)))?;
        if size.hex_with_suffix {
            b.warn(
                inv,
                &format!("warning: Using a multiplier suffix on hex numbers is deprecated: {text}"),
            );
        }
        if size.bytes == 0 {
            return Err(inv.err("Parameter 'size' must be greater than zero"));
        }
        b.mem.size = Some(size.bytes);
    }
    if let Some(s) = o.num("slots") {
        b.mem.slots = Some(s);
    }
    if let Some(m) = o.num("maxmem") {
        b.mem.maxmem = Some(m);
    }
    b.mem.loc = Some(inv.clone());
    Ok(())
}

impl MemArgs {
    /// Validate the merged values and store them in `cfg`.
    pub(crate) fn apply(&self, cfg: &mut Config) -> Result<(), CliError> {
        let err = |msg: String| match &self.loc {
            Some(l) => l.err(msg),
            None => CliError::new(msg),
        };
        if let Some(size) = self.size {
            cfg.memory_bytes = size
                .checked_next_multiple_of(8192)
                .ok_or_else(|| err("Value is out of range for parameter 'size'".into()))?;
            cfg.memory_given = true;
        }
        let size = cfg.memory_bytes;
        match (self.maxmem, self.slots) {
            (Some(max), slots) => {
                if max < size {
                    return Err(err(format!(
                        "invalid value of maxmem: maximum memory size (0x{max:x}) must be at least \
                         the initial memory size (0x{size:x})"
                    )));
                }
                let slots = slots.unwrap_or(0);
                if slots > 0 && max == size {
                    return Err(err(format!(
                        "invalid value of maxmem: memory slots were specified but maximum memory \
                         size (0x{max:x}) is equal to the initial memory size (0x{size:x})"
                    )));
                }
                if slots > MAX_SLOTS {
                    return Err(err(format!("unsupported amount of memory slots: {slots}")));
                }
                cfg.memory_max_bytes = Some(max);
                cfg.memory_slots = slots;
            }
            (None, Some(_)) => return Err(err("slots specified but no max-size".into())),
            (None, None) => {}
        }
        Ok(())
    }
}
