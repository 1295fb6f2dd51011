//! Per-BlockBackend I/O accounting (QEMU 7.2 block/accounting.c): counted
//! when a request completes; failed requests count as failed and (with
//! `account_failed`) add their latency; invalid ones are counted apart.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use serde_json::{json, Value};

/// `BlockAcctType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcctType {
    Read = 0,
    Write = 1,
    Flush = 2,
    Unmap = 3,
}

#[derive(Default)]
struct PerType {
    bytes: AtomicU64,
    ops: AtomicU64,
    failed: AtomicU64,
    invalid: AtomicU64,
    total_ns: AtomicU64,
    merged: AtomicU64,
}

/// `BlockAcctStats`.
pub struct Stats {
    types: [PerType; 4],
    /// ns since `epoch` of the last access, 0 = never.
    last_access_ns: AtomicU64,
    epoch: Instant,
    pub account_invalid: AtomicBool,
    pub account_failed: AtomicBool,
}

impl Stats {
    /// QEMU's BlockBackend defaults: account-invalid and account-failed on.
    pub fn new(account: bool) -> Self {
        Stats {
            types: Default::default(),
            last_access_ns: AtomicU64::new(0),
            epoch: Instant::now(),
            account_invalid: AtomicBool::new(account),
            account_failed: AtomicBool::new(account),
        }
    }

    fn now_ns(&self) -> u64 {
        (self.epoch.elapsed().as_nanos() as u64).max(1)
    }

    /// `block_account_one_io`.
    /// `requests` guest requests finished as one operation (more than one
    /// when the device merged them): each counts, as QEMU accounts each.
    pub fn done(&self, ty: AcctType, bytes: u64, start: Instant, failed: bool, requests: u64) {
        let t = &self.types[ty as usize];
        if failed {
            t.failed.fetch_add(requests, Ordering::Relaxed);
        } else {
            t.bytes.fetch_add(bytes, Ordering::Relaxed);
            t.ops.fetch_add(requests, Ordering::Relaxed);
        }
        if !failed || self.account_failed.load(Ordering::Relaxed) {
            t.total_ns.fetch_add(
                start.elapsed().as_nanos() as u64 * requests,
                Ordering::Relaxed,
            );
            self.last_access_ns.store(self.now_ns(), Ordering::Relaxed);
        }
    }

    /// `block_acct_invalid`.
    pub fn invalid(&self, ty: AcctType) {
        self.types[ty as usize]
            .invalid
            .fetch_add(1, Ordering::Relaxed);
        if self.account_invalid.load(Ordering::Relaxed) {
            self.last_access_ns.store(self.now_ns(), Ordering::Relaxed);
        }
    }

    /// `block_acct_merge_done`.
    pub fn merged(&self, ty: AcctType, n: u64) {
        self.types[ty as usize]
            .merged
            .fetch_add(n, Ordering::Relaxed);
    }

    pub fn ops(&self, ty: AcctType) -> u64 {
        self.types[ty as usize].ops.load(Ordering::Relaxed)
    }
    pub fn bytes(&self, ty: AcctType) -> u64 {
        self.types[ty as usize].bytes.load(Ordering::Relaxed)
    }
    pub fn failed(&self, ty: AcctType) -> u64 {
        self.types[ty as usize].failed.load(Ordering::Relaxed)
    }

    /// `BlockDeviceStats` in QAPI declaration order.
    pub fn to_json(&self, wr_highest_offset: u64) -> Value {
        let g = |ty: AcctType, f: fn(&PerType) -> &AtomicU64| {
            f(&self.types[ty as usize]).load(Ordering::Relaxed)
        };
        use AcctType::*;
        let mut m = serde_json::Map::new();
        let mut put = |k: &str, v: Value| {
            m.insert(k.to_string(), v);
        };
        put("rd_bytes", json!(g(Read, |t| &t.bytes)));
        put("wr_bytes", json!(g(Write, |t| &t.bytes)));
        put("unmap_bytes", json!(g(Unmap, |t| &t.bytes)));
        put("rd_operations", json!(g(Read, |t| &t.ops)));
        put("wr_operations", json!(g(Write, |t| &t.ops)));
        put("flush_operations", json!(g(Flush, |t| &t.ops)));
        put("unmap_operations", json!(g(Unmap, |t| &t.ops)));
        put("rd_total_time_ns", json!(g(Read, |t| &t.total_ns)));
        put("wr_total_time_ns", json!(g(Write, |t| &t.total_ns)));
        put("flush_total_time_ns", json!(g(Flush, |t| &t.total_ns)));
        put("unmap_total_time_ns", json!(g(Unmap, |t| &t.total_ns)));
        put("wr_highest_offset", json!(wr_highest_offset));
        put("rd_merged", json!(g(Read, |t| &t.merged)));
        put("wr_merged", json!(g(Write, |t| &t.merged)));
        put("unmap_merged", json!(g(Unmap, |t| &t.merged)));
        let last = self.last_access_ns.load(Ordering::Relaxed);
        if last > 0 {
            put("idle_time_ns", json!(self.now_ns().saturating_sub(last)));
        }
        put("failed_rd_operations", json!(g(Read, |t| &t.failed)));
        put("failed_wr_operations", json!(g(Write, |t| &t.failed)));
        put("failed_flush_operations", json!(g(Flush, |t| &t.failed)));
        put("failed_unmap_operations", json!(g(Unmap, |t| &t.failed)));
        put("invalid_rd_operations", json!(g(Read, |t| &t.invalid)));
        put("invalid_wr_operations", json!(g(Write, |t| &t.invalid)));
        put("invalid_flush_operations", json!(g(Flush, |t| &t.invalid)));
        put("invalid_unmap_operations", json!(g(Unmap, |t| &t.invalid)));
        put(
            "account_invalid",
            json!(self.account_invalid.load(Ordering::Relaxed)),
        );
        put(
            "account_failed",
            json!(self.account_failed.load(Ordering::Relaxed)),
        );
        put("timed_stats", json!([]));
        Value::Object(m)
    }
}
