//! A model of glib 2.74's `GHashTable` (string keys, `g_str_hash`), only to
//! know its iteration order.
//!
//! QEMU's input visitor remembers the argument names it has not consumed in
//! a GHashTable and reports the *first one the table iterates* as
//! "Parameter '...' is unexpected".  With several unexpected arguments,
//! which one QEMU names depends on glib's bucket layout: open addressing
//! with quadratic probing, `(hash * 11) % prime` as the home bucket,
//! tombstones on removal, and in-place rehashing when the table grows or
//! shrinks.  This module reproduces that layout.

const MIN_SHIFT: u32 = 3;
const UNUSED: u32 = 0;
const TOMBSTONE: u32 = 1;

/// glib's `prime_mod` table.
const PRIME_MOD: [u32; 32] = [
    1, 2, 3, 7, 13, 31, 61, 127, 251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071,
    262139, 524287, 1048573, 2097143, 4194301, 8388593, 16777213, 33554393, 67108859, 134217689,
    268435399, 536870909, 1073741789, 2147483647,
];

/// `g_str_hash` (djb2 over *signed* chars).
fn g_str_hash(s: &str) -> u32 {
    let mut h: u32 = 5381;
    for &b in s.as_bytes() {
        h = (h << 5).wrapping_add(h).wrapping_add(b as i8 as i32 as u32);
    }
    h
}

fn is_real(h: u32) -> bool {
    h >= 2
}

pub struct GHashTable {
    size: usize,
    modulo: u32,
    mask: u32,
    nnodes: usize,
    noccupied: usize,
    hashes: Vec<u32>,
    keys: Vec<Option<String>>,
}

impl Default for GHashTable {
    fn default() -> Self {
        Self::new()
    }
}

impl GHashTable {
    pub fn new() -> Self {
        let mut t = GHashTable {
            size: 0,
            modulo: 0,
            mask: 0,
            nnodes: 0,
            noccupied: 0,
            hashes: Vec::new(),
            keys: Vec::new(),
        };
        t.set_shift(MIN_SHIFT);
        t.hashes = vec![UNUSED; t.size];
        t.keys = vec![None; t.size];
        t
    }

    fn set_shift(&mut self, shift: u32) {
        self.size = 1 << shift;
        self.modulo = PRIME_MOD[shift as usize];
        self.mask = (self.size - 1) as u32;
    }

    fn set_shift_from_size(&mut self, size: usize) {
        let mut n = size;
        let mut shift = 0;
        while n != 0 {
            n >>= 1;
            shift += 1;
        }
        self.set_shift(shift.max(MIN_SHIFT));
    }

    fn hash_to_index(&self, hash: u32) -> u32 {
        hash.wrapping_mul(11) % self.modulo
    }

    fn lookup_node(&self, key: &str) -> (usize, u32) {
        let mut hash = g_str_hash(key);
        if !is_real(hash) {
            hash = 2;
        }
        let mut idx = self.hash_to_index(hash);
        let mut first_tombstone = None;
        let mut step = 0u32;
        loop {
            let node_hash = self.hashes[idx as usize];
            if node_hash == UNUSED {
                break;
            }
            if node_hash == hash && self.keys[idx as usize].as_deref() == Some(key) {
                return (idx as usize, hash);
            } else if node_hash == TOMBSTONE && first_tombstone.is_none() {
                first_tombstone = Some(idx as usize);
            }
            step += 1;
            idx = (idx + step) & self.mask;
        }
        (first_tombstone.unwrap_or(idx as usize), hash)
    }

    pub fn insert(&mut self, key: &str) {
        let (idx, hash) = self.lookup_node(key);
        let old = self.hashes[idx];
        if is_real(old) {
            return;
        }
        self.hashes[idx] = hash;
        self.keys[idx] = Some(key.to_string());
        self.nnodes += 1;
        if old == UNUSED {
            self.noccupied += 1;
            self.maybe_resize();
        }
    }

    pub fn remove(&mut self, key: &str) -> bool {
        let (idx, _) = self.lookup_node(key);
        if !is_real(self.hashes[idx]) {
            return false;
        }
        self.hashes[idx] = TOMBSTONE;
        self.keys[idx] = None;
        self.nnodes -= 1;
        self.maybe_resize();
        true
    }

    /// The first key `g_hash_table_iter_next` returns.
    pub fn first(&self) -> Option<&str> {
        (0..self.size)
            .find(|&i| is_real(self.hashes[i]))
            .and_then(|i| self.keys[i].as_deref())
    }

    fn maybe_resize(&mut self) {
        let (size, noccupied) = (self.size, self.noccupied);
        if (size > self.nnodes * 4 && size > 1 << MIN_SHIFT) || size <= noccupied + noccupied / 16 {
            self.resize();
        }
    }

    fn resize(&mut self) {
        let old_size = self.size;
        self.set_shift_from_size((self.nnodes as f64 * 1.333) as usize);
        if self.size > old_size {
            self.hashes.resize(self.size, UNUSED);
            self.keys.resize(self.size, None);
        }
        let mut relocated = vec![false; self.size.max(old_size)];
        for i in 0..old_size {
            let node_hash = self.hashes[i];
            if !is_real(node_hash) {
                self.hashes[i] = UNUSED;
                continue;
            }
            if relocated[i] {
                continue;
            }
            self.hashes[i] = UNUSED;
            let mut node_hash = node_hash;
            let mut key = self.keys[i].take();
            loop {
                let mut step = 0u32;
                let mut h = self.hash_to_index(node_hash);
                while relocated[h as usize] {
                    step += 1;
                    h = (h + step) & self.mask;
                }
                let h = h as usize;
                relocated[h] = true;
                let replaced = self.hashes[h];
                self.hashes[h] = node_hash;
                if !is_real(replaced) {
                    self.keys[h] = key;
                    break;
                }
                node_hash = replaced;
                key = std::mem::replace(&mut self.keys[h], key);
            }
        }
        if self.size < old_size {
            self.hashes.truncate(self.size);
            self.keys.truncate(self.size);
        }
        self.noccupied = self.nnodes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_tables() {
        let mut t = GHashTable::new();
        t.insert("a");
        t.insert("b");
        assert_eq!(t.first(), Some("b"));
        assert!(t.remove("b"));
        assert_eq!(t.first(), Some("a"));
        assert!(!t.remove("b"));
        assert!(t.remove("a"));
        assert_eq!(t.first(), None);
    }

    #[test]
    fn growth_keeps_every_key() {
        let mut t = GHashTable::new();
        let keys: Vec<String> = (0..500).map(|i| format!("k{i}")).collect();
        for k in &keys {
            t.insert(k);
        }
        assert_eq!(t.nnodes, 500);
        for k in &keys {
            assert!(t.remove(k), "{k}");
        }
        assert_eq!(t.first(), None);
        assert!(t.size <= 16);
    }
}
