//! Consistency check and repair (QEMU block/qcow2-refcount.c
//! `qcow2_check_refcounts`): every reference from the header, the active
//! and snapshot L1/L2 tables, the refcount table and its blocks and the
//! snapshot table is counted and compared with the stored refcount.
//! Repair sets each stored refcount to the counted one and fixes the
//! OFLAG_COPIED flags; it runs on open of a dirty (lazy-refcounts) image.

use std::collections::HashMap;

use super::error::{Qcow2Error, Result};
use super::header::SNAPSHOT_HEADER_LEN;
use super::meta::{ClusterKind, Meta, L1E_OFFSET_MASK, OFLAG_COMPRESSED, OFLAG_COPIED};

/// What a check found (QEMU's BdrvCheckResult).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Refcounts below the references, bad COPIED flags, broken entries.
    pub corruptions: u64,
    /// Clusters with a refcount but fewer references.
    pub leaks: u64,
    pub corruptions_fixed: u64,
    pub leaks_fixed: u64,
    /// Guest clusters allocated in this image / all guest clusters.
    pub allocated_clusters: u64,
    pub total_clusters: u64,
    /// One line per finding, in QEMU's wording.
    pub messages: Vec<String>,
}

impl CheckReport {
    pub fn is_clean(&self) -> bool {
        self.corruptions == 0 && self.leaks == 0
    }
}

struct Refs {
    counts: HashMap<u64, u64>,
    /// (L1 index, L2 offset) of every active L2 table.
    active_l2: Vec<(usize, u64)>,
    allocated: u64,
    corruptions: u64,
    messages: Vec<String>,
}

impl Refs {
    fn add_range(&mut self, cs: u64, off: u64, len: u64) {
        if len == 0 {
            return;
        }
        let first = off / cs;
        let last = (off + len - 1) / cs;
        for c in first..=last {
            *self.counts.entry(c).or_insert(0) += 1;
        }
    }
}

fn read_bytes(m: &Meta, off: u64, len: usize) -> Result<Vec<u8>> {
    let mut b = vec![0u8; len];
    m.file
        .read_at(&mut b, off)
        .map_err(|e| Qcow2Error::io("Could not read metadata", &e))?;
    Ok(b)
}

/// Counts references from one L1 table and its L2 tables.
fn walk_l1(m: &mut Meta, refs: &mut Refs, l1: &[u64], active: bool) -> Result<()> {
    let cs = m.cs;
    for (i, &e) in l1.iter().enumerate() {
        let l2 = e & L1E_OFFSET_MASK;
        if l2 == 0 {
            continue;
        }
        if !l2.is_multiple_of(cs) {
            refs.corruptions += 1;
            refs.messages.push(format!(
                "ERROR l2_offset={l2:x}: Table is not cluster aligned; L1 entry corrupted"
            ));
            continue;
        }
        refs.add_range(cs, l2, cs);
        if active {
            refs.active_l2.push((i, l2));
        }
        let t = m.l2_table(l2)?;
        for (j, &le) in t.iter().enumerate() {
            match m.classify(le, l2, j as u64) {
                Ok(ClusterKind::Normal(h)) | Ok(ClusterKind::ZeroAlloc(h)) => {
                    refs.add_range(cs, h, cs);
                    if active {
                        refs.allocated += 1;
                    }
                }
                Ok(ClusterKind::Compressed(h, len)) => {
                    if le & OFLAG_COPIED != 0 {
                        refs.corruptions += 1;
                        refs.messages.push(format!(
                            "ERROR: coffset=0x{h:x}: copied flag must never be set for compressed clusters"
                        ));
                    }
                    refs.add_range(cs, h, len);
                    if active {
                        refs.allocated += 1;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    refs.corruptions += 1;
                    refs.messages.push(format!("ERROR {e}"));
                }
            }
        }
    }
    Ok(())
}

fn collect(m: &mut Meta) -> Result<Refs> {
    let cs = m.cs;
    let mut refs = Refs {
        counts: HashMap::new(),
        active_l2: Vec::new(),
        allocated: 0,
        corruptions: 0,
        messages: Vec::new(),
    };
    refs.add_range(cs, 0, cs);
    refs.add_range(cs, m.l1_offset, m.l1.len() as u64 * 8);
    let l1 = m.l1.clone();
    walk_l1(m, &mut refs, &l1, true)?;
    // Snapshots: the table and every snapshot's L1 tree.
    let mut pos = m.snapshots_offset;
    for _ in 0..m.nb_snapshots {
        let h = read_bytes(m, pos, SNAPSHOT_HEADER_LEN as usize)?;
        let be32 = |o: usize| u32::from_be_bytes([h[o], h[o + 1], h[o + 2], h[o + 3]]);
        let l1_off = (be32(0) as u64) << 32 | be32(4) as u64;
        let l1_size = be32(8) as u64;
        let id_len = u16::from_be_bytes([h[12], h[13]]) as u64;
        let name_len = u16::from_be_bytes([h[14], h[15]]) as u64;
        let extra = be32(36) as u64;
        if l1_size * 8 > super::header::MAX_L1_SIZE || !l1_off.is_multiple_of(cs) {
            return Err(Qcow2Error::Corrupt("snapshot L1 table invalid".into()));
        }
        refs.add_range(cs, l1_off, l1_size * 8);
        let sl1 = super::meta::read_u64_table(&*m.file, l1_off, l1_size as usize)?;
        walk_l1(m, &mut refs, &sl1, false)?;
        pos = (pos + SNAPSHOT_HEADER_LEN + extra + id_len + name_len).div_ceil(8) * 8;
    }
    // Persistent bitmaps: directory, tables, data (bitmaps.rs).
    for (off, len) in super::bitmaps::referenced(&*m.file, cs)? {
        refs.add_range(cs, off, len);
    }
    if m.nb_snapshots > 0 {
        refs.add_range(cs, m.snapshots_offset, pos - m.snapshots_offset);
    }
    refs.add_range(cs, m.reftable_offset, m.reftable.len() as u64 * 8);
    for (i, &e) in m.reftable.clone().iter().enumerate() {
        let off = e & L1E_OFFSET_MASK;
        if off == 0 {
            continue;
        }
        if !off.is_multiple_of(cs) {
            return Err(Qcow2Error::Corrupt(format!(
                "ERROR refcount block {i} is not cluster aligned; refcount table entry corrupted"
            )));
        }
        refs.add_range(cs, off, cs);
    }
    // References past the end of the image file point at nothing.
    let end = m.end_cluster;
    let mut beyond: Vec<u64> = refs.counts.keys().copied().filter(|&c| c >= end).collect();
    beyond.sort_unstable();
    for c in beyond {
        refs.counts.remove(&c);
        refs.corruptions += 1;
        refs.messages.push(format!(
            "ERROR: cluster {c} is referenced but lies beyond the end of the image file"
        ));
    }
    Ok(refs)
}

fn compare(m: &mut Meta, refs: &Refs, r: &mut CheckReport) -> Result<Vec<(u64, u64, u64)>> {
    let max_ref = refs.counts.keys().copied().max().unwrap_or(0);
    let n = m.end_cluster.max(max_ref + 1);
    let mut diffs = Vec::new();
    for c in 0..n {
        let want = refs.counts.get(&c).copied().unwrap_or(0);
        let have = m.refcount(c)?;
        if have == want {
            continue;
        }
        if have > want {
            r.leaks += 1;
            r.messages.push(format!(
                "Leaked cluster {c} refcount={have} reference={want}"
            ));
        } else {
            r.corruptions += 1;
            r.messages.push(format!(
                "ERROR cluster {c} refcount={have} reference={want}"
            ));
        }
        diffs.push((c, have, want));
    }
    Ok(diffs)
}

/// COPIED flags that disagree with the refcounts: (L1 index or None,
/// L2 offset, L2 index, fixed entry).
/// (L1 index, L2 offset, L2 index or None for the L1 entry, fixed entry).
type CopiedFix = (usize, u64, Option<usize>, u64);

fn copied_errors(m: &mut Meta, refs: &Refs) -> Result<Vec<CopiedFix>> {
    let cs = m.cs;
    let mut out = Vec::new();
    for &(i, l2) in &refs.active_l2 {
        let e = m.l1[i];
        let want = m.refcount(l2 / cs)? == 1;
        if (e & OFLAG_COPIED != 0) != want {
            out.push((
                i,
                l2,
                None,
                (e & !OFLAG_COPIED) | if want { OFLAG_COPIED } else { 0 },
            ));
        }
        let t = m.l2_table(l2)?;
        for (j, &le) in t.iter().enumerate() {
            if le & OFLAG_COMPRESSED != 0 {
                continue;
            }
            if let Ok(ClusterKind::Normal(h) | ClusterKind::ZeroAlloc(h)) =
                m.classify(le, l2, j as u64)
            {
                let want = m.refcount(h / cs)? == 1;
                if (le & OFLAG_COPIED != 0) != want {
                    let fixed = (le & !OFLAG_COPIED) | if want { OFLAG_COPIED } else { 0 };
                    out.push((i, l2, Some(j), fixed));
                }
            }
        }
    }
    Ok(out)
}

pub(crate) fn check(m: &mut Meta) -> Result<CheckReport> {
    let refs = collect(m)?;
    let mut r = CheckReport {
        corruptions: refs.corruptions,
        allocated_clusters: refs.allocated,
        total_clusters: m.size.div_ceil(m.cs),
        messages: refs.messages.clone(),
        ..Default::default()
    };
    compare(m, &refs, &mut r)?;
    for (i, l2, j, _) in copied_errors(m, &refs)? {
        r.corruptions += 1;
        r.messages.push(match j {
            None => format!(
                "ERROR OFLAG_COPIED L2 cluster: l1_index={i} l1_entry={:x}",
                m.l1[i]
            ),
            Some(j) => format!("ERROR OFLAG_COPIED data cluster: l2_offset={l2:x} index={j}"),
        });
    }
    Ok(r)
}

/// Fixes refcounts and COPIED flags, then clears the dirty bit if nothing
/// is left to fix (`qcow2_co_check_locked` with BDRV_FIX_ERRORS|LEAKS).
pub(crate) fn repair(m: &mut Meta) -> Result<CheckReport> {
    m.flush()?;
    let before = check(m)?;
    for _ in 0..8 {
        let refs = collect(m)?;
        if refs.corruptions != 0 {
            return Err(Qcow2Error::Corrupt(refs.messages.join("; ")));
        }
        let mut scratch = CheckReport::default();
        let diffs = compare(m, &refs, &mut scratch)?;
        if diffs.is_empty() {
            break;
        }
        // New refblocks go past everything referenced: on-disk refcounts
        // of 0 cannot be trusted until the repair is done.
        let max_ref = refs.counts.keys().copied().max().unwrap_or(0);
        m.free_hint = m.end_cluster.max(max_ref + 1);
        m.end_cluster = m.free_hint;
        for &(c, have, want) in diffs.iter().filter(|d| d.2 > d.1) {
            let _ = have;
            m.set_refcount_alloc(c, want)?;
        }
        for &(c, _, want) in diffs.iter().filter(|d| d.2 < d.1) {
            m.set_refcount(c, want)?;
        }
        m.flush()?;
    }
    m.free_hint = 0;
    let refs = collect(m)?;
    for (i, l2, j, fixed) in copied_errors(m, &refs)? {
        match j {
            None => m.set_l1(i, fixed)?,
            Some(j) => m.patch_l2(l2, j, fixed)?,
        }
    }
    m.flush()?;
    let after = check(m)?;
    if after.corruptions == 0 {
        m.mark_clean()?;
    }
    Ok(CheckReport {
        corruptions_fixed: before.corruptions.saturating_sub(after.corruptions),
        leaks_fixed: before.leaks.saturating_sub(after.leaks),
        messages: before.messages,
        corruptions: after.corruptions,
        leaks: after.leaks,
        allocated_clusters: after.allocated_clusters,
        total_clusters: after.total_clusters,
    })
}
