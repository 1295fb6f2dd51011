//! The memory statistics (virtio 1.2 §5.5.6.3) as QEMU 7.2 keeps and shows
//! them: the driver's `struct virtio_balloon_stat { le16 tag; le64 val; }`
//! entries (packed, 10 bytes), QEMU's names (`balloon_stat_names`), the
//! `guest-stats` QOM property (`balloon_stats_get_all`) and the
//! `guest-stats-polling-interval` property's validation
//! (`balloon_stats_set_poll_interval`).

/// Tags QEMU knows (VIRTIO_BALLOON_S_NR).
pub const STAT_COUNT: usize = 10;

/// `balloon_stat_names`, indexed by tag (VIRTIO_BALLOON_S_SWAP_IN = 0 …
/// VIRTIO_BALLOON_S_HTLB_PGFAIL = 9).
pub const STAT_NAMES: [&str; STAT_COUNT] = [
    "stat-swap-in",
    "stat-swap-out",
    "stat-major-faults",
    "stat-minor-faults",
    "stat-free-memory",
    "stat-total-memory",
    "stat-available-memory",
    "stat-disk-caches",
    "stat-htlb-pgalloc",
    "stat-htlb-pgfail",
];

/// A statistic the guest did not report: QEMU stores -1 in its `uint64_t`
/// array (`reset_stats`) and visits it as uint64, so QMP shows
/// 18446744073709551615.
pub const STAT_UNKNOWN: u64 = u64::MAX;

/// `sizeof(struct virtio_balloon_stat)` (packed).
pub const STAT_ENTRY_LEN: usize = 10;

/// What a stats buffer held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsReport {
    /// Per tag, the last value the buffer gave, or [`STAT_UNKNOWN`].
    pub values: [u64; STAT_COUNT],
    /// Entries whose tag QEMU does not know: ignored.
    pub unknown_tags: Vec<u16>,
    /// Bytes after the last whole entry: ignored.
    pub trailing: usize,
}

impl Default for StatsReport {
    fn default() -> Self {
        Self {
            values: [STAT_UNKNOWN; STAT_COUNT],
            unknown_tags: Vec::new(),
            trailing: 0,
        }
    }
}

impl StatsReport {
    /// Adds the entries of `data` (the next bytes of the same buffer) as
    /// `virtio_balloon_receive_stats` does: a later entry for a tag wins.
    pub fn extend(&mut self, data: &[u8]) {
        let chunks = data.chunks_exact(STAT_ENTRY_LEN);
        self.trailing = chunks.remainder().len();
        for e in chunks {
            let tag = u16::from_le_bytes([e[0], e[1]]);
            let mut v = [0u8; 8];
            v.copy_from_slice(&e[2..10]);
            match self.values.get_mut(usize::from(tag)) {
                Some(slot) => *slot = u64::from_le_bytes(v),
                None => self.unknown_tags.push(tag),
            }
        }
    }
}

/// The stats entries in `data` (one whole buffer).
pub fn parse_stats(data: &[u8]) -> StatsReport {
    let mut r = StatsReport::default();
    r.extend(data);
    r
}

/// `guest-stats`: `{"last-update": N, "stats": {"stat-swap-in": N, …}}`,
/// every name present, unknown ones as 2^64-1 (QEMU's uint64 of -1).
pub fn guest_stats_json(values: &[u64; STAT_COUNT], last_update: i64) -> serde_json::Value {
    let stats: serde_json::Map<String, serde_json::Value> = STAT_NAMES
        .iter()
        .zip(values)
        .map(|(name, v)| ((*name).to_owned(), serde_json::Value::from(*v)))
        .collect();
    serde_json::json!({
        "last-update": last_update,
        "stats": stats,
    })
}

/// Why `guest-stats-polling-interval` refused a value (QEMU's texts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StatsIntervalError {
    #[error("timer value must be greater than zero")]
    Negative,
    #[error("timer value is too big")]
    TooBig,
}

/// What the caller's stats timer must do after an interval change
/// (`balloon_stats_set_poll_interval`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatsTimer {
    /// Same value: leave the timer as it is.
    Unchanged,
    /// 0: polling is off, stop the timer.
    Stop,
    /// (Re)arm the timer to fire in `first_after_secs` seconds, then every
    /// `period_secs`: a new timer fires at once (QEMU
    /// `balloon_stats_change_timer(s, 0)`), a running one is moved to the
    /// new period.
    Arm {
        first_after_secs: u32,
        period_secs: u32,
    },
}

/// Validates a new interval against the current one (`current` 0: off).
pub fn change_interval(current: u32, value: i64) -> Result<StatsTimer, StatsIntervalError> {
    if value < 0 {
        return Err(StatsIntervalError::Negative);
    }
    let value = u32::try_from(value).map_err(|_| StatsIntervalError::TooBig)?;
    Ok(if value == current {
        StatsTimer::Unchanged
    } else if value == 0 {
        StatsTimer::Stop
    } else if current != 0 {
        StatsTimer::Arm {
            first_after_secs: value,
            period_secs: value,
        }
    } else {
        StatsTimer::Arm {
            first_after_secs: 0,
            period_secs: value,
        }
    })
}
