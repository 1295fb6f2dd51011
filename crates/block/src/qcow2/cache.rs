//! A small LRU of metadata tables (QEMU block/qcow2-cache.c): L2 tables
//! and refcount blocks stay in memory so sequential I/O does not re-read
//! them, and dirty ones are written back on eviction or flush (in the
//! order the dependency rules of [`super::meta`] demand).

pub(crate) struct Entry<T> {
    /// Host offset of the table.
    pub off: u64,
    pub data: T,
    pub dirty: bool,
    used: u64,
}

pub(crate) struct Lru<T> {
    cap: usize,
    tick: u64,
    pub ents: Vec<Entry<T>>,
}

impl<T> Lru<T> {
    pub fn new(cap: usize) -> Self {
        Lru {
            cap: cap.max(1),
            tick: 0,
            ents: Vec::new(),
        }
    }

    /// The slot holding the table at `off`, marked most recently used.
    pub fn find(&mut self, off: u64) -> Option<usize> {
        let i = self.ents.iter().position(|e| e.off == off)?;
        self.tick += 1;
        self.ents[i].used = self.tick;
        Some(i)
    }

    /// The slot to evict before an insert, if the cache is full.
    pub fn victim(&self) -> Option<usize> {
        if self.ents.len() < self.cap {
            return None;
        }
        self.ents
            .iter()
            .enumerate()
            .min_by_key(|(_, e)| e.used)
            .map(|(i, _)| i)
    }

    /// Inserts (the caller made room with [`Lru::victim`]); returns the slot.
    pub fn insert(&mut self, off: u64, data: T, dirty: bool) -> usize {
        self.tick += 1;
        self.ents.push(Entry {
            off,
            data,
            dirty,
            used: self.tick,
        });
        self.ents.len() - 1
    }

    pub fn remove(&mut self, i: usize) -> Entry<T> {
        self.ents.swap_remove(i)
    }

    /// Forgets the table at `off` (its cluster was freed).
    pub fn drop_table(&mut self, off: u64) {
        self.ents.retain(|e| e.off != off);
    }

    pub fn dirty_slots(&self) -> Vec<usize> {
        (0..self.ents.len())
            .filter(|&i| self.ents[i].dirty)
            .collect()
    }

    pub fn any_dirty(&self) -> bool {
        self.ents.iter().any(|e| e.dirty)
    }
}
