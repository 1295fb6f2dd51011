//! Requests through a quorum node (QEMU 7.2 block/quorum.c
//! `quorum_co_preadv`, `quorum_co_pwritev`, `quorum_co_flush`). QEMU runs
//! the children's requests as coroutines side by side; here they run one
//! after the other on the request's thread, with the same results and
//! events.

use std::sync::Arc;

use super::vote::{self, ReadVote};
use super::State;
use crate::error::strerror;
use crate::events::{emit, NodeEvent};
use crate::job::nodeio::NodeIo;
use crate::node::{FormatIo, Node};

pub(crate) struct QuorumIo {
    s: Arc<State>,
}

impl QuorumIo {
    pub(crate) fn new(s: Arc<State>) -> Self {
        QuorumIo { s }
    }

    /// `quorum_report_bad`.
    fn report_bad(&self, op: &'static str, off: u64, len: u64, child: &Node, err: Option<i32>) {
        let (sector_num, sectors_count) = vote::sectors(off, len);
        emit(NodeEvent::QuorumReportBad {
            op,
            error: err.map(strerror),
            node_name: child.name.clone(),
            sector_num,
            sectors_count,
        });
    }

    /// `quorum_report_failure`.
    fn report_failure(&self, off: u64, len: u64) {
        let (sector_num, sectors_count) = vote::sectors(off, len);
        emit(NodeEvent::QuorumFailure {
            node_name: self.s.name.clone(),
            sector_num,
            sectors_count,
        });
    }

    /// `read_fifo_child`: the children in order until one reads.
    fn read_fifo(&self, children: &[Arc<Node>], off: u64, buf: &mut [u8]) -> Result<(), i32> {
        let mut r = Err(libc::EIO);
        for c in children {
            r = NodeIo::new(c).read(off, buf);
            match r {
                Ok(()) => break,
                Err(e) => self.report_bad("read", off, buf.len() as u64, c, Some(e)),
            }
        }
        r
    }

    /// `read_quorum_children` + `quorum_vote`.
    fn read_quorum(&self, children: &[Arc<Node>], off: u64, buf: &mut [u8]) -> Result<(), i32> {
        let len = buf.len() as u64;
        let mut bufs: Vec<Vec<u8>> = Vec::with_capacity(children.len());
        let mut rets = Vec::with_capacity(children.len());
        for c in children {
            let mut b = vec![0u8; buf.len()];
            let r = NodeIo::new(c).read(off, &mut b);
            if let Err(e) = r {
                self.report_bad("read", off, len, c, Some(e));
            }
            bufs.push(b);
            rets.push(r);
        }
        let reads: Vec<Result<&[u8], i32>> = rets
            .iter()
            .zip(&bufs)
            .map(|(r, b)| r.map(|()| b.as_slice()))
            .collect();
        if self.s.cfg.blkverify {
            self.blkverify(&reads, off, len);
        }
        match vote::vote_read(&reads, self.s.cfg.threshold) {
            ReadVote::TooManyFailed(e) => {
                self.report_failure(off, len);
                Err(e)
            }
            ReadVote::Unanimous(i) => {
                buf.copy_from_slice(&bufs[i]);
                Ok(())
            }
            ReadVote::NoQuorum => {
                self.report_failure(off, len);
                Err(libc::EIO)
            }
            ReadVote::Majority { winner, bad } => {
                buf.copy_from_slice(&bufs[winner]);
                for &i in &bad {
                    self.report_bad("read", off, len, &children[i], None);
                }
                if self.s.cfg.rewrite_corrupted {
                    // quorum_rewrite_entry: errors are ignored, it is only
                    // a correction attempt.
                    for &i in &bad {
                        let _ = NodeIo::new(&children[i]).write(off, buf);
                    }
                }
                Ok(())
            }
        }
    }

    /// `quorum_compare` in blkverify mode: a difference between the two
    /// children is printed and the emulator exits, as QEMU does.
    fn blkverify(&self, reads: &[Result<&[u8], i32>], off: u64, len: u64) {
        let ok: Vec<&[u8]> = reads.iter().filter_map(|r| r.ok()).collect();
        if let [a, rest @ ..] = ok.as_slice() {
            for b in rest {
                if let Some(d) = vote::first_difference(a, b) {
                    eprintln!(
                        "quorum: offset={off} bytes={len} contents mismatch at offset {}",
                        off + d as u64
                    );
                    std::process::exit(1);
                }
            }
        }
    }

    /// `quorum_co_pwritev`: every child; fewer than the threshold
    /// succeeding fails with the most common errno.
    fn write_all(
        &self,
        off: u64,
        len: u64,
        op: impl Fn(&NodeIo) -> Result<(), i32>,
    ) -> Result<(), i32> {
        let children = self.s.children();
        let mut rets = Vec::with_capacity(children.len());
        for c in &children {
            let r = op(&NodeIo::new(c));
            if let Err(e) = r {
                self.report_bad("write", off, len, c, Some(e));
            }
            rets.push(r);
        }
        let ok = rets.iter().filter(|r| r.is_ok()).count();
        if ok < self.s.cfg.threshold {
            self.report_failure(off, len);
            return match vote::vote_error(&rets) {
                0 => Ok(()),
                e => Err(e),
            };
        }
        Ok(())
    }
}

impl FormatIo for QuorumIo {
    fn read(&self, off: u64, buf: &mut [u8]) -> Result<(), i32> {
        let children = self.s.children();
        if self.s.cfg.fifo {
            self.read_fifo(&children, off, buf)
        } else {
            self.read_quorum(&children, off, buf)
        }
    }

    fn write(&self, off: u64, buf: &[u8]) -> Result<(), i32> {
        self.write_all(off, buf.len() as u64, |c| c.write(off, buf))
    }

    fn write_zeroes(&self, off: u64, len: u64, may_unmap: bool) -> Result<(), i32> {
        self.write_all(off, len, |c| c.write_zeroes(off, len, may_unmap))
    }

    /// quorum has no `bdrv_co_pdiscard`: the block layer succeeds without
    /// doing anything.
    fn discard(&self, _off: u64, _len: u64) -> Result<(), i32> {
        Ok(())
    }

    /// `quorum_co_flush`: failures are reported, and win only without a
    /// quorum of successful flushes.
    fn flush(&self) -> Result<(), i32> {
        let children = self.s.children();
        let mut rets = Vec::with_capacity(children.len());
        for c in &children {
            let r = NodeIo::new(c).flush();
            if let Err(e) = r {
                self.report_bad("flush", 0, 0, c, Some(e));
            }
            rets.push(r);
        }
        let ok = rets.iter().filter(|r| r.is_ok()).count();
        if ok >= self.s.cfg.threshold {
            return Ok(());
        }
        match vote::vote_error(&rets) {
            0 => Ok(()),
            e => Err(e),
        }
    }
}
