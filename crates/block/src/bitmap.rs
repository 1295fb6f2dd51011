//! A dirty bitmap (QEMU's BdrvDirtyBitmap over an HBitmap): one bit per
//! `granularity` bytes of a node, set by writes and cleared by whoever
//! copies the data (mirror, backup). Bits are atomic words, so guest
//! writes on I/O threads and a job's worker share it without a lock.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug)]
pub struct DirtyBitmap {
    granularity: u64,
    size: u64,
    words: Vec<AtomicU64>,
}

impl DirtyBitmap {
    /// `granularity` is a power of two (the callers check QEMU's range).
    pub fn new(size: u64, granularity: u64) -> Self {
        let bits = size.div_ceil(granularity);
        DirtyBitmap {
            granularity,
            size,
            words: (0..bits.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    pub fn granularity(&self) -> u64 {
        self.granularity
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    fn bits(&self, off: u64, len: u64) -> std::ops::Range<u64> {
        let end = off.saturating_add(len).min(self.size);
        if off >= end {
            return 0..0;
        }
        off / self.granularity..end.div_ceil(self.granularity)
    }

    fn for_each_word(&self, bits: std::ops::Range<u64>, f: impl Fn(&AtomicU64, u64)) {
        let mut b = bits.start;
        while b < bits.end {
            let w = b / 64;
            let lo = b % 64;
            let hi = (bits.end - w * 64).min(64);
            let mask = if hi - lo == 64 {
                u64::MAX
            } else {
                ((1u64 << (hi - lo)) - 1) << lo
            };
            f(&self.words[w as usize], mask);
            b = w * 64 + hi;
        }
    }

    /// Marks every granule the byte range touches.
    pub fn set(&self, off: u64, len: u64) {
        self.for_each_word(self.bits(off, len), |w, m| {
            w.fetch_or(m, Ordering::AcqRel);
        });
    }

    /// Clears every granule the byte range touches.
    pub fn reset(&self, off: u64, len: u64) {
        self.for_each_word(self.bits(off, len), |w, m| {
            w.fetch_and(!m, Ordering::AcqRel);
        });
    }

    pub fn set_all(&self) {
        self.set(0, self.size);
    }

    pub fn clear(&self) {
        for w in &self.words {
            w.store(0, Ordering::Release);
        }
    }

    pub fn is_set(&self, off: u64) -> bool {
        let b = off / self.granularity;
        self.words
            .get((b / 64) as usize)
            .is_some_and(|w| w.load(Ordering::Acquire) & (1 << (b % 64)) != 0)
    }

    /// Dirty bytes (`bdrv_get_dirty_count`), the last granule clipped to
    /// the size.
    pub fn count(&self) -> u64 {
        let bits: u64 = self
            .words
            .iter()
            .map(|w| w.load(Ordering::Acquire).count_ones() as u64)
            .sum();
        let mut bytes = bits * self.granularity;
        let last = self.size.div_ceil(self.granularity).saturating_sub(1);
        if bits > 0 && self.is_set(last * self.granularity) {
            bytes -= (last + 1) * self.granularity - self.size;
        }
        bytes
    }

    /// The first dirty run at or after `from`, at most `max` bytes long:
    /// (offset, length), clipped to the size.
    pub fn next_dirty(&self, from: u64, max: u64) -> Option<(u64, u64)> {
        let g = self.granularity;
        let nbits = self.size.div_ceil(g);
        let mut b = from / g;
        // Find the first set bit.
        loop {
            if b >= nbits {
                return None;
            }
            let w = self.words[(b / 64) as usize].load(Ordering::Acquire) >> (b % 64);
            if w == 0 {
                b = (b / 64 + 1) * 64;
                continue;
            }
            b += w.trailing_zeros() as u64;
            break;
        }
        if b >= nbits {
            return None;
        }
        let start = b * g;
        let mut end = b + 1;
        while end < nbits && (end - b) * g < max && self.is_set(end * g) {
            end += 1;
        }
        let len = (end * g).min(self.size) - start;
        Some((start, len.min(max.max(g))))
    }

    /// Sets the bits set in `other` (same size and granularity).
    pub fn merge(&self, other: &DirtyBitmap) {
        for (a, b) in self.words.iter().zip(&other.words) {
            a.fetch_or(b.load(Ordering::Acquire), Ordering::AcqRel);
        }
    }

    /// Marks every byte range dirty in `other`, whatever its granularity
    /// (`hbitmap_merge`: a coarser target rounds the ranges out).
    pub fn merge_from(&self, other: &DirtyBitmap) {
        if other.granularity == self.granularity && other.size == self.size {
            return self.merge(other);
        }
        let mut off = 0;
        while let Some((o, n)) = other.next_dirty(off, u64::MAX) {
            self.set(o, n);
            off = o + n;
        }
    }

    /// Set bits × granularity (`hbitmap_count`, what BlockDirtyInfo's
    /// `count` shows: the last granule is not clipped to the size).
    pub fn count_granules(&self) -> u64 {
        let bits: u64 = self
            .words
            .iter()
            .map(|w| w.load(Ordering::Acquire).count_ones() as u64)
            .sum();
        bits * self.granularity
    }

    /// The same bits over `size` bytes (`hbitmap_truncate`): granules past
    /// a smaller size are dropped, new ones are clean.
    pub fn resized(&self, size: u64) -> DirtyBitmap {
        let n = DirtyBitmap::new(size, self.granularity);
        let nbits = size.div_ceil(self.granularity);
        for (i, (a, b)) in n.words.iter().zip(&self.words).enumerate() {
            let mut v = b.load(Ordering::Acquire);
            let first = i as u64 * 64;
            if first + 64 > nbits {
                let keep = nbits - first;
                v &= (1u64 << keep) - 1;
            }
            a.store(v, Ordering::Release);
        }
        n
    }

    /// A copy of the bits (`hbitmap` backup for an undo).
    pub fn snapshot(&self) -> Vec<u64> {
        self.words
            .iter()
            .map(|w| w.load(Ordering::Acquire))
            .collect()
    }

    /// Puts back bits taken with [`DirtyBitmap::snapshot`].
    pub fn restore(&self, words: &[u64]) {
        for (w, v) in self.words.iter().zip(words) {
            w.store(*v, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_round_out_to_granules() {
        let b = DirtyBitmap::new(1 << 20, 65536);
        b.set(65535, 2);
        assert!(b.is_set(0) && b.is_set(65536) && !b.is_set(131072));
        assert_eq!(b.count(), 131072);
        assert_eq!(b.next_dirty(0, u64::MAX), Some((0, 131072)));
        b.reset(0, 65536);
        assert_eq!(b.next_dirty(0, u64::MAX), Some((65536, 65536)));
    }

    #[test]
    fn runs_are_cut_at_max_and_the_size() {
        // 300 granules of 512 bytes, the last one partial.
        let b = DirtyBitmap::new(300 * 512 - 100, 512);
        b.set_all();
        assert_eq!(b.count(), 300 * 512 - 100);
        assert_eq!(b.next_dirty(0, 4096), Some((0, 4096)));
        assert_eq!(b.next_dirty(299 * 512, 4096), Some((299 * 512, 412)));
        b.reset(0, 299 * 512);
        assert_eq!(b.next_dirty(0, 4096), Some((299 * 512, 412)));
        b.clear();
        assert_eq!(b.next_dirty(0, 4096), None);
        assert_eq!(b.count(), 0);
    }

    #[test]
    fn word_boundaries() {
        let b = DirtyBitmap::new(200 * 4096, 4096);
        b.set(60 * 4096, 10 * 4096);
        assert_eq!(b.count(), 10 * 4096);
        assert_eq!(b.next_dirty(0, u64::MAX), Some((60 * 4096, 10 * 4096)));
        assert_eq!(
            b.next_dirty(65 * 4096, u64::MAX),
            Some((65 * 4096, 5 * 4096))
        );
        let c = DirtyBitmap::new(200 * 4096, 4096);
        c.set(199 * 4096, 1);
        b.merge(&c);
        assert_eq!(b.count(), 11 * 4096);
    }

    #[test]
    fn merge_across_granularities() {
        // A fine source into a coarse target rounds out, and back.
        let fine = DirtyBitmap::new(1 << 20, 512);
        fine.set(65536 + 512, 512);
        fine.set(1024, 1);
        let coarse = DirtyBitmap::new(1 << 20, 65536);
        coarse.merge_from(&fine);
        assert_eq!(coarse.count(), 2 * 65536);
        let fine2 = DirtyBitmap::new(1 << 20, 4096);
        fine2.merge_from(&coarse);
        assert_eq!(fine2.count(), 2 * 65536);
        // Undo restores the target as it was.
        let saved = fine.snapshot();
        fine.merge_from(&coarse);
        assert_eq!(fine.count(), 2 * 65536);
        fine.restore(&saved);
        assert_eq!(fine.count(), 1024);
    }

    #[test]
    fn resize_keeps_the_bits_inside() {
        let b = DirtyBitmap::new(64 * 4096 + 100, 4096);
        b.set(0, 1);
        b.set(64 * 4096, 1);
        let big = b.resized(1 << 20);
        assert_eq!(big.count_granules(), 2 * 4096);
        assert_eq!(big.size(), 1 << 20);
        let small = big.resized(10 * 4096);
        assert_eq!(small.count_granules(), 4096);
        assert_eq!(small.resized(1 << 20).count_granules(), 4096);
    }

    #[test]
    fn count_clips_the_last_granule_and_clear_empties() {
        let b = DirtyBitmap::new(100_000, 65536);
        b.set(99_999, 1);
        assert_eq!(b.count(), 100_000 - 65536);
        assert_eq!(b.count_granules(), 65536);
        b.set(0, 1);
        assert_eq!(b.count(), 100_000);
        b.clear();
        assert_eq!(b.count(), 0);
    }
}
