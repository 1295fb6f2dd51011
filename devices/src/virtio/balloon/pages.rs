//! Guest pages the driver hands back: the inflate and deflate queues' page
//! frame numbers (virtio 1.2 §5.5.6.1) and free page reporting's ranges
//! (§5.5.6.4), turned into runs of guest RAM (pure functions, used by the
//! device and the fuzz target), then the host side: the run's host memory
//! is discarded as QEMU's `ram_block_discard_range` does (softmmu/physmem.c).
//!
//! What QEMU ignores (a PFN outside RAM, an unaligned reported range) is a
//! [`PageError`] in the plan's `skipped` list, logged at debug level like
//! QEMU's trace points; it never fails the request.

use std::os::fd::AsRawFd;

use vm_memory::{Address, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use super::{BALLOON_PAGE_SIZE, PFN_SHIFT};
use crate::virtio::chain::Segment;

/// One region of guest RAM, as the device sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RamRange {
    pub start: u64,
    pub len: u64,
}

impl RamRange {
    /// The regions of `mem`, in address order.
    pub fn of(mem: &GuestMemoryMmap) -> Vec<RamRange> {
        mem.iter()
            .map(|r| RamRange {
                start: r.start_addr().raw_value(),
                len: r.len(),
            })
            .collect()
    }

    /// Whether `[gpa, gpa + len)` lies inside this region.
    fn holds(&self, gpa: u64, len: u64) -> bool {
        gpa >= self.start
            && gpa
                .checked_add(len)
                .is_some_and(|end| end - self.start <= self.len)
    }
}

/// A range of guest RAM inside one region, whole 4 KiB pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestRun {
    pub gpa: u64,
    pub len: u64,
}

/// What the device skips, as QEMU does (never a reason to fail a request).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PageError {
    /// QEMU `trace_virtio_balloon_bad_addr`: `memory_region_find` found no
    /// RAM for the page.
    #[error("virtio-balloon: page frame {pfn:#x} (guest address {gpa:#x}) is not RAM")]
    PfnNotRam { pfn: u32, gpa: u64 },
    /// `virtio_balloon_handle_report` ignores ranges whose start or size is
    /// not a multiple of the page size.
    #[error("virtio-balloon: reported range {addr:#x}+{len:#x} is not page aligned")]
    Unaligned { addr: u64, len: u64 },
    /// A reported range (or the part of it in one region) outside RAM.
    #[error("virtio-balloon: reported range {addr:#x}+{len:#x} is not RAM")]
    ReportNotRam { addr: u64, len: u64 },
}

/// Page frame numbers read from a buffer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PfnList {
    pub pfns: Vec<u32>,
    /// Bytes after the last whole PFN, ignored (QEMU reads 4 bytes at a
    /// time while 4 are left).
    pub trailing: usize,
}

/// The little-endian 32-bit PFNs in `data` (§5.5.6: `le32 pfns[]`).
pub fn parse_pfns(data: &[u8]) -> PfnList {
    let chunks = data.chunks_exact(4);
    let trailing = chunks.remainder().len();
    PfnList {
        pfns: chunks
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        trailing,
    }
}

/// What to do with a request's pages: runs to act on and what was skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub runs: Vec<GuestRun>,
    pub skipped: Vec<PageError>,
}

impl Plan {
    /// Adds `[gpa, gpa + len)`, extending the last run when it is adjacent
    /// in the same region, so that one `madvise` covers consecutive pages.
    fn push(&mut self, gpa: u64, len: u64, region: usize, last_region: &mut Option<usize>) {
        if let Some(last) = self.runs.last_mut() {
            if *last_region == Some(region) && last.gpa + last.len == gpa {
                last.len += len;
                return;
            }
        }
        self.runs.push(GuestRun { gpa, len });
        *last_region = Some(region);
    }
}

fn region_of(ram: &[RamRange], gpa: u64, len: u64) -> Option<usize> {
    ram.iter().position(|r| r.holds(gpa, len))
}

/// The inflate (or deflate) queue's PFNs as runs of RAM pages, in order
/// (QEMU `virtio_balloon_handle_output`: each PFN's 4 KiB page must be RAM,
/// otherwise it is skipped). The 32-bit PFN shifted by 12 cannot overflow.
pub fn plan_inflate(pfns: &[u32], ram: &[RamRange]) -> Plan {
    let mut plan = Plan::default();
    let mut last_region = None;
    for &pfn in pfns {
        let gpa = u64::from(pfn) << PFN_SHIFT;
        match region_of(ram, gpa, BALLOON_PAGE_SIZE) {
            Some(region) => plan.push(gpa, BALLOON_PAGE_SIZE, region, &mut last_region),
            None => plan.skipped.push(PageError::PfnNotRam { pfn, gpa }),
        }
    }
    plan
}

/// Free page reporting's device-writable buffers as runs to discard (QEMU
/// `virtio_balloon_handle_report`). A buffer spanning two regions is taken
/// region by region (QEMU maps it as one iovec per memory region); each
/// piece must start and end on a page boundary.
pub fn plan_report(segs: &[Segment], ram: &[RamRange]) -> Plan {
    let mut plan = Plan::default();
    let mut last_region = None;
    for s in segs {
        let mut addr = s.addr;
        let end = s.addr.saturating_add(u64::from(s.len));
        while addr < end {
            let Some((i, r)) = ram.iter().enumerate().find(|(_, r)| r.holds(addr, 1)) else {
                plan.skipped.push(PageError::ReportNotRam {
                    addr,
                    len: end - addr,
                });
                break;
            };
            let piece_end = end.min(r.start + r.len);
            let len = piece_end - addr;
            if (addr | len) & (BALLOON_PAGE_SIZE - 1) != 0 {
                plan.skipped.push(PageError::Unaligned { addr, len });
            } else {
                plan.push(addr, len, i, &mut last_region);
            }
            addr = piece_end;
        }
    }
    plan
}

/// Discards `run`'s host memory: its contents are gone and the host frees
/// the pages; the guest reads zeros on next touch. Anonymous private RAM
/// needs `MADV_DONTNEED`; file-backed RAM also has its file range punched
/// (QEMU `ram_block_discard_range`). Failures are reported, not fatal.
pub fn discard(mem: &GuestMemoryMmap, run: GuestRun) {
    let Some((host, region, offset)) = host_of(mem, run) else {
        return;
    };
    if let Some(fo) = region.file_offset() {
        let at = fo.start().saturating_add(offset);
        // SAFETY: fallocate on a descriptor the region keeps open; it only
        // changes the file's contents.
        let r = unsafe {
            libc::fallocate(
                fo.file().as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                at as libc::off_t,
                run.len as libc::off_t,
            )
        };
        if r != 0 {
            log::error!(
                "ram_block_discard_range: Failed to fallocate {:#x} +{:#x} ({})",
                run.gpa,
                run.len,
                std::io::Error::last_os_error()
            );
            return;
        }
    }
    advise(host, run, libc::MADV_DONTNEED, "discard range");
}

/// Hints that `run` will be used again (QEMU `balloon_deflate_page`:
/// MADV_WILLNEED; anonymous memory comes back zeroed on first touch anyway).
pub fn will_need(mem: &GuestMemoryMmap, run: GuestRun) {
    if let Some((host, _, _)) = host_of(mem, run) {
        advise(
            host,
            run,
            libc::MADV_WILLNEED,
            "MADV_WILLNEED on balloon deflate",
        );
    }
}

/// The host address of `run` (inside one region), the region and the
/// offset in it.
fn host_of(
    mem: &GuestMemoryMmap,
    run: GuestRun,
) -> Option<(*mut u8, &vm_memory::GuestRegionMmap, u64)> {
    let region = mem.find_region(GuestAddress(run.gpa))?;
    let offset = run.gpa - region.start_addr().raw_value();
    if offset.checked_add(run.len)? > region.len() {
        return None;
    }
    let host = region
        .get_host_address(vm_memory::MemoryRegionAddress(offset))
        .ok()?;
    Some((host, region, offset))
}

fn advise(host: *mut u8, run: GuestRun, advice: libc::c_int, what: &str) {
    // SAFETY: `host..host + run.len` lies inside a mapping the guest memory
    // owns (checked by host_of); both advices only drop or prefetch page
    // contents, which the guest owns, and never unmap.
    let r = unsafe { libc::madvise(host.cast(), run.len as usize, advice) };
    if r != 0 {
        log::warn!(
            "virtio-balloon: {what} {:#x} +{:#x} failed: {}",
            run.gpa,
            run.len,
            std::io::Error::last_os_error()
        );
    }
}
