//! The quorum driver's votes (QEMU 7.2 block/quorum.c `quorum_vote`,
//! `quorum_vote_error`, `quorum_count_vote`, `quorum_get_vote_winner`),
//! kept free of I/O so they can be checked on their own.
//!
//! QEMU groups equal reads by their SHA-256 hash; here equal contents are
//! compared directly, which groups them the same way. The lists QEMU builds
//! insert at their head, so a tie goes to the version (or errno) seen last,
//! and bad versions are reported newest first: both are kept.

/// What a read of every child comes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadVote {
    /// Fewer than `vote-threshold` children read at all: the most common
    /// errno (`quorum_has_too_much_io_failed`), with QUORUM_FAILURE.
    TooManyFailed(i32),
    /// Every successful read returned the same data: the caller gets child
    /// `.0`'s.
    Unanimous(usize),
    /// The reads differ and the most common version has fewer than
    /// `vote-threshold` votes: QUORUM_FAILURE and EIO.
    NoQuorum,
    /// The reads differ and version of child `winner` has a quorum: the
    /// children in `bad` (in QEMU's report order) returned something else.
    Majority { winner: usize, bad: Vec<usize> },
}

/// `quorum_count_vote` + `quorum_get_vote_winner` over values that compare
/// with `eq`: the versions in the order QEMU's list holds them (newest
/// first), each with its children (newest first).
fn versions<T>(items: &[(usize, T)], eq: impl Fn(&T, &T) -> bool) -> Vec<Vec<usize>> {
    // Oldest first while counting, reversed at the end.
    let mut v: Vec<(usize, Vec<usize>)> = Vec::new();
    for (idx, val) in items {
        match v.iter_mut().find(|(first, _)| {
            let f = items.iter().find(|(i, _)| i == first).map(|(_, x)| x);
            f.is_some_and(|f| eq(f, val))
        }) {
            Some((_, members)) => members.insert(0, *idx),
            None => v.push((*idx, vec![*idx])),
        }
    }
    v.into_iter().rev().map(|(_, m)| m).collect()
}

/// The version with the most votes; on a tie the first in list order
/// (`candidate->vote_count > max`).
fn winner(versions: &[Vec<usize>]) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, v) in versions.iter().enumerate() {
        if best.is_none_or(|b| v.len() > versions[b].len()) {
            best = Some(i);
        }
    }
    best
}

/// `quorum_vote_error`: the errno most children failed with (0 if none
/// failed).
pub fn vote_error(rets: &[Result<(), i32>]) -> i32 {
    let errs: Vec<(usize, i32)> = rets
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.err().map(|e| (i, e)))
        .collect();
    let v = versions(&errs, |a, b| a == b);
    winner(&v)
        .and_then(|w| v[w].first())
        .and_then(|i| errs.iter().find(|(j, _)| j == i))
        .map_or(0, |(_, e)| *e)
}

/// `quorum_vote` for a read: `reads[i]` is child i's data or errno.
pub fn vote_read(reads: &[Result<&[u8], i32>], threshold: usize) -> ReadVote {
    let rets: Vec<Result<(), i32>> = reads.iter().map(|r| r.map(|_| ())).collect();
    let ok: Vec<(usize, &[u8])> = reads
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.ok().map(|d| (i, d)))
        .collect();
    if ok.len() < threshold || ok.is_empty() {
        return ReadVote::TooManyFailed(vote_error(&rets));
    }
    let first = ok[0];
    if ok[1..].iter().all(|(_, d)| *d == first.1) {
        return ReadVote::Unanimous(first.0);
    }
    let v = versions(&ok, |a, b| a == b);
    let Some(w) = winner(&v) else {
        return ReadVote::NoQuorum;
    };
    if v[w].len() < threshold {
        return ReadVote::NoQuorum;
    }
    // version->index: the child that first had it.
    let winner_idx = v[w].last().copied().unwrap_or(first.0);
    let bad = v
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != w)
        .flat_map(|(_, m)| m.iter().copied())
        .collect();
    ReadVote::Majority {
        winner: winner_idx,
        bad,
    }
}

/// blkverify mode (`qemu_iovec_compare`): the first byte where `a` and `b`
/// differ.
pub fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| x != y)
}

/// QUORUM_* events' `sector-num` and `sectors-count` for a request.
pub fn sectors(offset: u64, bytes: u64) -> (u64, u64) {
    let start = offset / 512;
    let end = (offset + bytes).div_ceil(512);
    (start, end - start)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EIO: i32 = libc::EIO;
    const ENOSPC: i32 = libc::ENOSPC;

    #[test]
    fn agreeing_reads_are_unanimous_from_the_first_that_worked() {
        let a = [1u8; 8];
        assert_eq!(
            vote_read(&[Err(EIO), Ok(&a), Ok(&a)], 2),
            ReadVote::Unanimous(1)
        );
    }

    #[test]
    fn one_corrupt_child_of_three_is_the_bad_one() {
        let (a, b) = ([1u8; 8], [2u8; 8]);
        assert_eq!(
            vote_read(&[Ok(&a), Ok(&b), Ok(&a)], 2),
            ReadVote::Majority {
                winner: 0,
                bad: vec![1]
            }
        );
    }

    #[test]
    fn two_different_corruptions_leave_no_quorum() {
        let (a, b, c) = ([1u8; 8], [2u8; 8], [3u8; 8]);
        assert_eq!(vote_read(&[Ok(&a), Ok(&b), Ok(&c)], 2), ReadVote::NoQuorum);
    }

    #[test]
    fn too_few_successful_reads_fail_with_the_most_common_errno() {
        let a = [1u8; 8];
        assert_eq!(
            vote_read(&[Err(ENOSPC), Err(EIO), Err(EIO), Ok(&a)], 2),
            ReadVote::TooManyFailed(EIO)
        );
        // A tie goes to the errno seen last (QEMU's lists insert at the head).
        assert_eq!(vote_error(&[Err(ENOSPC), Err(EIO), Ok(())]), EIO);
        assert_eq!(vote_error(&[Ok(()), Ok(())]), 0);
    }

    #[test]
    fn tie_at_threshold_one_goes_to_the_version_seen_last() {
        let (a, b) = ([1u8; 8], [2u8; 8]);
        assert_eq!(
            vote_read(&[Ok(&a), Ok(&b)], 1),
            ReadVote::Majority {
                winner: 1,
                bad: vec![0]
            }
        );
    }

    #[test]
    fn bad_children_are_listed_newest_version_first() {
        let (a, b, c) = ([1u8; 4], [2u8; 4], [3u8; 4]);
        assert_eq!(
            vote_read(&[Ok(&b), Ok(&a), Ok(&c), Ok(&a), Ok(&b), Ok(&a)], 3),
            ReadVote::Majority {
                winner: 1,
                bad: vec![2, 4, 0]
            }
        );
    }

    #[test]
    fn sector_ranges_round_outwards() {
        assert_eq!(sectors(0, 512), (0, 1));
        assert_eq!(sectors(513, 512), (1, 2));
        assert_eq!(sectors(0, 0), (0, 0));
    }
}
