//! KVM's binary statistics (Linux Documentation/virt/kvm/api.rst,
//! "KVM_GET_STATS_FD"): a file per VM and per vCPU holding a header, the
//! stat descriptors, and the values. The layout is fixed for the life of the
//! file, so it is read once; each query preads only the values.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::FileExt;

/// `_IO(KVMIO, 0xce)`: valid on a VM fd and on a vCPU fd.
const KVM_GET_STATS_FD: libc::c_ulong = 0xae << 8 | 0xce;

const HEADER_SIZE: usize = 24;
/// A descriptor without its name: flags, exponent, size, offset, bucket_size.
const DESC_FIXED_SIZE: usize = 16;
/// No kernel stat has more values than this (the largest histograms have 32).
const MAX_VALUES: u16 = 4096;

/// One stat as its descriptor describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatDesc {
    pub name: String,
    /// KVM_STATS_TYPE_* | KVM_STATS_UNIT_* | KVM_STATS_BASE_*.
    pub flags: u32,
    pub exponent: i16,
    /// How many u64 values the stat has (1 for a scalar).
    pub size: u16,
    /// Byte offset of the values from the start of the data block.
    pub offset: u32,
    pub bucket_size: u32,
}

/// The fixed part of a stats file: where the values are and what they mean.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub descs: Vec<StatDesc>,
    data_offset: u64,
    /// Bytes of the data block that cover every descriptor's values.
    data_len: usize,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn bad(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

impl Layout {
    /// Reads the header and descriptors through `read_at(offset, len)`,
    /// which returns exactly `len` bytes or an error.
    pub fn read(read_at: impl Fn(u64, usize) -> io::Result<Vec<u8>>) -> io::Result<Self> {
        let header = read_at(0, HEADER_SIZE)?;
        if header.len() != HEADER_SIZE {
            return Err(bad(format!(
                "KVM stats: failed to read stats header: expected {HEADER_SIZE} actual {}",
                header.len()
            )));
        }
        let name_size = u32_at(&header, 4) as usize;
        let num_desc = u32_at(&header, 8) as usize;
        let desc_offset = u64::from(u32_at(&header, 16));
        let data_offset = u64::from(u32_at(&header, 20));
        if name_size == 0 || name_size > 4096 || num_desc > 65536 {
            return Err(bad(format!(
                "KVM stats: implausible header (name_size {name_size}, num_desc {num_desc})"
            )));
        }
        let desc_size = DESC_FIXED_SIZE + name_size;
        let want = desc_size * num_desc;
        let raw = read_at(desc_offset, want)?;
        if raw.len() != want {
            return Err(bad(format!(
                "KVM stats: failed to read stats descriptors: expected {want} actual {}",
                raw.len()
            )));
        }
        let mut descs = Vec::with_capacity(num_desc);
        let mut data_len = 0usize;
        for d in raw.chunks_exact(desc_size) {
            let flags = u32_at(d, 0);
            let exponent = i16::from_ne_bytes([d[4], d[5]]);
            let size = u16::from_ne_bytes([d[6], d[7]]);
            let offset = u32_at(d, 8);
            let bucket_size = u32_at(d, 12);
            let name = &d[DESC_FIXED_SIZE..];
            let end = name.iter().position(|&c| c == 0).unwrap_or(name.len());
            let name = String::from_utf8_lossy(&name[..end]).into_owned();
            if size == 0 || size > MAX_VALUES || !offset.is_multiple_of(8) {
                return Err(bad(format!(
                    "KVM stats: bad descriptor for '{name}' (size {size}, offset {offset})"
                )));
            }
            data_len = data_len.max(offset as usize + usize::from(size) * 8);
            descs.push(StatDesc {
                name,
                flags,
                exponent,
                size,
                offset,
                bucket_size,
            });
        }
        Ok(Self {
            descs,
            data_offset,
            data_len,
        })
    }

    /// Every descriptor's values, in descriptor order, from `read_at`.
    pub fn values(
        &self,
        read_at: impl Fn(u64, usize) -> io::Result<Vec<u8>>,
    ) -> io::Result<Vec<Vec<u64>>> {
        let data = read_at(self.data_offset, self.data_len)?;
        if data.len() != self.data_len {
            return Err(bad(format!(
                "KVM stats: failed to read data: expected {} actual {}",
                self.data_len,
                data.len()
            )));
        }
        Ok(self
            .descs
            .iter()
            .map(|d| {
                let start = d.offset as usize;
                data[start..start + usize::from(d.size) * 8]
                    .chunks_exact(8)
                    .map(|c| u64::from_ne_bytes(c.try_into().unwrap_or([0; 8])))
                    .collect()
            })
            .collect())
    }
}

/// An open stats file with its layout.
#[derive(Debug)]
pub struct StatsFd {
    file: File,
    pub layout: Layout,
    /// Per descriptor, what an earlier incarnation had counted (see
    /// [`StatsFd::carry_over`]); empty for none.
    carried: Vec<Vec<u64>>,
}

impl StatsFd {
    /// KVM_GET_STATS_FD on a VM or vCPU fd; the "ioctl failed" error is
    /// QEMU's (kvm-all.c `query_stats_cb`).
    pub fn open(owner: &impl AsRawFd) -> Result<Self, String> {
        // SAFETY: KVM_GET_STATS_FD takes no argument and returns a new fd or -1.
        let fd = unsafe { libc::ioctl(owner.as_raw_fd(), KVM_GET_STATS_FD as _, 0) };
        if fd < 0 {
            return Err(format!(
                "KVM stats: ioctl failed: {}",
                ::block::error::strerror(io::Error::last_os_error().raw_os_error().unwrap_or(0))
            ));
        }
        // SAFETY: the fd was just returned to us and is owned by nobody else.
        let file = unsafe { File::from_raw_fd(fd) };
        let layout =
            Layout::read(|off, len| read_at(&file, off, len)).map_err(|e| e.to_string())?;
        Ok(Self {
            file,
            layout,
            carried: Vec::new(),
        })
    }

    /// The current values, in descriptor order.
    pub fn values(&self) -> Result<Vec<Vec<u64>>, String> {
        let mut values = self
            .layout
            .values(|off, len| read_at(&self.file, off, len))
            .map_err(|e| e.to_string())?;
        for ((d, vals), base) in self.layout.descs.iter().zip(&mut values).zip(&self.carried) {
            merge(d.flags, vals, base);
        }
        Ok(values)
    }

    /// A guest reset rebuilds the KVM VM and vCPUs (see machine.rs), where
    /// QEMU keeps them: so that counters do not fall back to zero, this file
    /// goes on from what `old` counted. Cumulative stats and histograms add
    /// up, peaks keep the higher, instant values are the new file's own.
    pub fn carry_over(&mut self, old: &StatsFd) {
        let Ok(old_values) = old.values() else { return };
        self.carried = self
            .layout
            .descs
            .iter()
            .map(|d| {
                old.layout
                    .descs
                    .iter()
                    .zip(&old_values)
                    .find(|(o, v)| {
                        o.name == d.name && o.flags == d.flags && v.len() == usize::from(d.size)
                    })
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            })
            .collect();
    }
}

/// `vals` on top of an earlier file's `base` for a stat of type `flags`.
fn merge(flags: u32, vals: &mut [u64], base: &[u64]) {
    use kvm_bindings::{
        KVM_STATS_TYPE_CUMULATIVE, KVM_STATS_TYPE_LINEAR_HIST, KVM_STATS_TYPE_LOG_HIST,
        KVM_STATS_TYPE_MASK, KVM_STATS_TYPE_PEAK,
    };
    if base.len() != vals.len() {
        return;
    }
    for (v, b) in vals.iter_mut().zip(base) {
        match flags & KVM_STATS_TYPE_MASK {
            KVM_STATS_TYPE_CUMULATIVE | KVM_STATS_TYPE_LINEAR_HIST | KVM_STATS_TYPE_LOG_HIST => {
                *v = v.wrapping_add(*b)
            }
            KVM_STATS_TYPE_PEAK => *v = (*v).max(*b),
            _ => {}
        }
    }
}

/// Up to `len` bytes at `off` (fewer only at the end of the file).
fn read_at(file: &File, off: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0; len];
    let mut got = 0;
    while got < len {
        match file.read_at(&mut buf[got..], off + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(got);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAME_SIZE: usize = 48;

    /// A stats file image as the kernel lays it out: header, id string,
    /// descriptors, data.
    fn image(descs: &[(&str, u32, i16, u16, u32)], data: &[u64]) -> Vec<u8> {
        let id_offset = HEADER_SIZE;
        let desc_offset = id_offset + NAME_SIZE;
        let data_offset = desc_offset + descs.len() * (DESC_FIXED_SIZE + NAME_SIZE);
        let mut b = Vec::new();
        for v in [
            0u32,
            NAME_SIZE as u32,
            descs.len() as u32,
            id_offset as u32,
            desc_offset as u32,
            data_offset as u32,
        ] {
            b.extend_from_slice(&v.to_ne_bytes());
        }
        let mut id = b"kvm-1234".to_vec();
        id.resize(NAME_SIZE, 0);
        b.extend_from_slice(&id);
        for &(name, flags, exponent, size, offset) in descs {
            b.extend_from_slice(&flags.to_ne_bytes());
            b.extend_from_slice(&exponent.to_ne_bytes());
            b.extend_from_slice(&size.to_ne_bytes());
            b.extend_from_slice(&offset.to_ne_bytes());
            b.extend_from_slice(&7u32.to_ne_bytes());
            let mut n = name.as_bytes().to_vec();
            n.resize(NAME_SIZE, 0);
            b.extend_from_slice(&n);
        }
        for v in data {
            b.extend_from_slice(&v.to_ne_bytes());
        }
        b
    }

    fn reader(img: &[u8]) -> impl Fn(u64, usize) -> io::Result<Vec<u8>> + '_ {
        move |off, len| {
            let start = (off as usize).min(img.len());
            let end = (start + len).min(img.len());
            Ok(img[start..end].to_vec())
        }
    }

    #[test]
    fn parses_header_descriptors_and_values() {
        let img = image(
            &[
                ("exits", 0, 0, 1, 0),
                ("halt_wait_hist", 0x104 | 0x20, -9, 3, 8),
                ("guest_mode", 0x41, 0, 1, 32),
            ],
            &[42, 1, 2, 3, 1],
        );
        let layout = Layout::read(reader(&img)).unwrap();
        assert_eq!(layout.descs.len(), 3);
        assert_eq!(layout.descs[1].name, "halt_wait_hist");
        assert_eq!(layout.descs[1].exponent, -9);
        assert_eq!(layout.descs[1].flags, 0x124);
        assert_eq!(layout.descs[1].bucket_size, 7);
        let values = layout.values(reader(&img)).unwrap();
        assert_eq!(values, vec![vec![42], vec![1, 2, 3], vec![1]]);
    }

    #[test]
    fn carried_counts_add_up_peaks_keep_the_higher() {
        let mut vals = vec![5, 1, 2];
        merge(kvm_bindings::KVM_STATS_TYPE_LOG_HIST, &mut vals, &[1, 1, 1]);
        assert_eq!(vals, [6, 2, 3]);
        let mut peak = vec![3];
        merge(kvm_bindings::KVM_STATS_TYPE_PEAK, &mut peak, &[9]);
        assert_eq!(peak, [9]);
        let mut instant = vec![3];
        merge(kvm_bindings::KVM_STATS_TYPE_INSTANT, &mut instant, &[9]);
        assert_eq!(instant, [3]);
    }

    #[test]
    fn truncated_or_garbage_files_are_errors() {
        let img = image(&[("exits", 0, 0, 1, 0), ("other", 0, 0, 2, 8)], &[1, 2, 3]);
        // Cut inside the header, the descriptors, and the data.
        for cut in [10, HEADER_SIZE + NAME_SIZE + 20] {
            let err = Layout::read(reader(&img[..cut])).unwrap_err();
            assert!(
                err.to_string().starts_with("KVM stats: failed to read"),
                "{err}"
            );
        }
        let layout = Layout::read(reader(&img)).unwrap();
        let err = layout.values(reader(&img[..img.len() - 4])).unwrap_err();
        assert!(err.to_string().contains("failed to read data"), "{err}");
        // Garbage: random-looking header fields, a descriptor whose values
        // lie past any sane size, an unaligned offset.
        let garbage: Vec<u8> = (0..200u32)
            .map(|i| (i.wrapping_mul(151) ^ 0x5a) as u8)
            .collect();
        assert!(Layout::read(reader(&garbage)).is_err());
        let huge = image(&[("x", 0, 0, u16::MAX, 0)], &[0]);
        assert!(Layout::read(reader(&huge)).is_err());
        let unaligned = image(&[("x", 0, 0, 1, 3)], &[0]);
        assert!(Layout::read(reader(&unaligned)).is_err());
    }
}
