//! The `blkdebug` filter (QEMU 7.2 block/blkdebug.c): passes requests to
//! its `image` child, injecting errors and suspending requests by rules
//! read from a config file (`blkdebug:CONFIG:IMAGE`, `config=`) or given as
//! `inject-error`/`set-state` options, and by breakpoints set with
//! qemu-io's `break`. The events come from the format above it
//! (`read_aio`, `write_aio`, ...) and from its own request path
//! (`pwritev`, `pwritev_done`, ...).

pub mod config;
pub mod rules;

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::debug::DebugEvent;
use crate::error::BlockError;
use crate::io::IoBuf;
use crate::job::nodeio::NodeIo;
use crate::node::{Driver, FormatIo, Node};
use crate::perm;
use rules::{Action, Inject, IoType, Rules, DEFAULT_IOTYPE_MASK, IO_TYPES};

pub use rules::QTEST;

/// The options of `inject_error_opts` and `set_state_opts`, and whether
/// each is a number (else a bool, except `event`/`iotype`: strings).
const INJECT_OPTS: &[(&str, Kind)] = &[
    ("event", Kind::Str),
    ("state", Kind::Number),
    ("iotype", Kind::Str),
    ("errno", Kind::Number),
    ("sector", Kind::Number),
    ("once", Kind::Bool),
    ("immediately", Kind::Bool),
];
const SET_STATE_OPTS: &[(&str, Kind)] = &[
    ("event", Kind::Str),
    ("state", Kind::Number),
    ("new_state", Kind::Number),
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Str,
    Number,
    Bool,
}

/// `parse_option_number`: `qemu_strtou64(value, base 0)`, the whole string.
fn parse_number(name: &str, v: &str) -> Result<u64, String> {
    let err = || format!("Parameter '{name}' expects a number");
    let t = v.trim_start_matches(|c: char| c.is_ascii_whitespace());
    let (neg, t) = match t.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let n = if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        u64::from_str_radix(h, 16).map_err(|_| err())?
    } else if t.len() > 1 && t.starts_with('0') {
        u64::from_str_radix(&t[1..], 8).map_err(|_| err())?
    } else {
        t.parse::<u64>().map_err(|_| err())?
    };
    Ok(if neg { n.wrapping_neg() } else { n })
}

/// `qapi_bool_parse`.
fn parse_bool(name: &str, v: &str) -> Result<bool, String> {
    match v {
        "on" | "yes" | "true" | "y" => Ok(true),
        "off" | "no" | "false" | "n" => Ok(false),
        _ => Err(format!("Parameter '{name}' expects 'on' or 'off'")),
    }
}

/// `id_wellformed`.
fn id_wellformed(id: &str) -> bool {
    crate::graph::id_wellformed(id)
}

/// One parsed `[inject-error]` or `[set-state]` group (QemuOpts).
struct RuleOpts {
    inject: bool,
    opts: Vec<(String, String)>,
}

impl RuleOpts {
    fn get(&self, k: &str) -> Option<&str> {
        // qemu_opt_find: the last setting wins.
        self.opts
            .iter()
            .rev()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }
}

/// Collects the groups in QEMU's two option lists (duplicate ids refused).
#[derive(Default)]
struct Groups {
    inject: Vec<RuleOpts>,
    set_state: Vec<RuleOpts>,
    ids: Vec<(bool, String)>,
}

impl Groups {
    /// `qemu_config_do_parse`: `find_list`, then `qemu_opts_from_qdict`.
    fn add(
        &mut self,
        group: &str,
        id: Option<&str>,
        entries: &[(String, String)],
    ) -> Result<(), String> {
        let (inject, desc) = match group {
            "inject-error" => (true, INJECT_OPTS),
            "set-state" => (false, SET_STATE_OPTS),
            _ => return Err(format!("There is no option group '{group}'")),
        };
        let id = entries
            .iter()
            .rev()
            .find(|(k, _)| k == "id")
            .map(|(_, v)| v.as_str())
            .or(id);
        if let Some(id) = id {
            if !id_wellformed(id) {
                return Err("Parameter 'id' expects an identifier".into());
            }
            if self.ids.iter().any(|(i, n)| *i == inject && n == id) {
                return Err(format!("Duplicate ID '{id}' for {group}"));
            }
            self.ids.push((inject, id.to_string()));
        }
        let mut opts = Vec::new();
        for (k, v) in entries.iter().filter(|(k, _)| k != "id") {
            let Some((_, kind)) = desc.iter().find(|(n, _)| n == k) else {
                return Err(format!("Invalid parameter '{k}'"));
            };
            match kind {
                Kind::Number => {
                    parse_number(k, v)?;
                }
                Kind::Bool => {
                    parse_bool(k, v)?;
                }
                Kind::Str => {}
            }
            opts.push((k.clone(), v.clone()));
        }
        let r = RuleOpts { inject, opts };
        if inject {
            self.inject.push(r);
        } else {
            self.set_state.push(r);
        }
        Ok(())
    }
}

/// A QMP value as `qemu_opts_from_qdict_entry` turns it into a string.
fn opt_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(if *b { "on" } else { "off" }.into()),
        _ => None,
    }
}

/// The members of an `inject-error`/`set-state` option: a JSON list, or
/// the keyval form's `{"0": {...}, "1": {...}}`.
fn list_items(v: Value, key: &str) -> Result<Vec<Map<String, Value>>, BlockError> {
    let items: Vec<Value> = match v {
        Value::Array(a) => a,
        Value::Object(m) => {
            let mut e: Vec<(u64, Value)> = Vec::new();
            for (k, v) in m {
                let i = k.parse::<u64>().map_err(|_| {
                    BlockError::new(format!(
                        "Invalid parameter type for '{key}', expected: array"
                    ))
                })?;
                e.push((i, v));
            }
            e.sort_by_key(|(i, _)| *i);
            e.into_iter().map(|(_, v)| v).collect()
        }
        _ => {
            return Err(BlockError::new(format!(
                "Invalid parameter type for '{key}', expected: array"
            )))
        }
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::Object(m) => Ok(m),
            _ => Err(BlockError::new(format!(
                "Invalid parameter type for '{key}[{i}]', expected: object"
            ))),
        })
        .collect()
}

/// The groups of the config file `path` and of the options (`read_config`).
fn read_config(
    path: Option<&str>,
    inject: Option<Value>,
    set_state: Option<Value>,
) -> Result<Groups, BlockError> {
    let mut g = Groups::default();
    if let Some(p) = path {
        let text = std::fs::read(p).map_err(|e| {
            BlockError::new(format!(
                "Could not read blkdebug config file: {}",
                crate::error::strerror(e.raw_os_error().unwrap_or(libc::EIO))
            ))
        })?;
        let mut pending = Groups::default();
        config::parse(&text, |s| {
            pending.add(&s.group, s.id.as_deref(), &s.entries)
        })
        .map_err(BlockError::new)?;
        g = pending;
    }
    for (key, v) in [("inject-error", inject), ("set-state", set_state)] {
        let Some(v) = v else { continue };
        for m in list_items(v, key)? {
            let mut entries = Vec::new();
            for (k, v) in m {
                let s = opt_string(&v).ok_or_else(|| {
                    BlockError::new(format!(
                        "Invalid parameter type for '{k}', expected: string"
                    ))
                })?;
                entries.push((k, s));
            }
            g.add(key, None, &entries).map_err(BlockError::new)?;
        }
    }
    Ok(g)
}

/// `add_rule` for every group, inject-error first.
fn add_rules(rules: &Rules, g: &Groups) -> Result<(), BlockError> {
    for r in g.inject.iter().chain(&g.set_state) {
        let name = r
            .get("event")
            .ok_or_else(|| BlockError::new("Missing event name for rule"))?;
        let event = DebugEvent::parse(name)
            .ok_or_else(|| BlockError::new(format!("invalid parameter value: {name}")))?;
        let num = |k: &str, d: u64| r.get(k).map_or(Ok(d), |v| parse_number(k, v));
        let state = num("state", 0).map_err(BlockError::new)? as i32 as i64;
        let action = if r.inject {
            let error = num("errno", libc::EIO as u64).map_err(BlockError::new)? as i32;
            let flag = |k: &str| r.get(k).map_or(Ok(false), |v| parse_bool(k, v));
            let once = flag("once").map_err(BlockError::new)?;
            let immediately = flag("immediately").map_err(BlockError::new)?;
            let sector = num("sector", u64::MAX).map_err(BlockError::new)? as i64;
            let iotype_mask = match r.get("iotype") {
                None => DEFAULT_IOTYPE_MASK,
                Some(t) => match IO_TYPES.iter().position(|n| *n == t) {
                    Some(i) => 1 << i,
                    None => return Err(BlockError::new(format!("invalid parameter value: {t}"))),
                },
            };
            Action::Inject(Inject {
                iotype_mask,
                error,
                immediately,
                once,
                offset: if sector == -1 {
                    -1
                } else {
                    sector.wrapping_mul(512)
                },
            })
        } else {
            Action::SetState(num("new_state", 0).map_err(BlockError::new)? as i32 as i64)
        };
        rules.add(event, state, action);
    }
    Ok(())
}

/// `blkdebug_parse_filename`: `blkdebug:[CONFIG]:IMAGE`, else the whole
/// name is the image. Returns (config, image).
pub fn parse_filename(name: &str) -> Result<(Option<String>, String), BlockError> {
    let Some(rest) = name.strip_prefix("blkdebug:") else {
        return Ok((None, name.to_string()));
    };
    let (conf, image) = rest
        .split_once(':')
        .ok_or_else(|| BlockError::new("blkdebug requires both config file and image path"))?;
    Ok((
        (!conf.is_empty()).then(|| conf.to_string()),
        image.to_string(),
    ))
}

/// `BlockPermission` names, as the perm-list options take them.
fn perm_list(v: Option<Value>, key: &str) -> Result<u64, BlockError> {
    let Some(v) = v else { return Ok(0) };
    let mut out = 0;
    for (i, item) in list_items_any(v, key)?.into_iter().enumerate() {
        let p = match item.as_str() {
            Some("consistent-read") => perm::CONSISTENT_READ,
            Some("write") => perm::WRITE,
            Some("write-unchanged") => perm::WRITE_UNCHANGED,
            Some("resize") => perm::RESIZE,
            Some(s) => {
                return Err(BlockError::new(format!(
                    "Parameter '{key}[{i}]' does not accept value '{s}'"
                )))
            }
            None => {
                return Err(BlockError::new(format!(
                    "Invalid parameter type for '{key}[{i}]', expected: string"
                )))
            }
        };
        out |= p;
    }
    Ok(out)
}

fn list_items_any(v: Value, key: &str) -> Result<Vec<Value>, BlockError> {
    match v {
        Value::Array(a) => Ok(a),
        Value::Object(m) => {
            let mut e: Vec<(u64, Value)> = Vec::new();
            for (k, v) in m {
                let i = k.parse::<u64>().map_err(|_| {
                    BlockError::new(format!(
                        "Invalid parameter type for '{key}', expected: array"
                    ))
                })?;
                e.push((i, v));
            }
            e.sort_by_key(|(i, _)| *i);
            Ok(e.into_iter().map(|(_, v)| v).collect())
        }
        _ => Err(BlockError::new(format!(
            "Invalid parameter type for '{key}', expected: array"
        ))),
    }
}

/// What `blkdebug_open` reads before it opens its image.
pub struct BlkdebugOptions {
    pub config: Option<String>,
    pub inject_error: Option<Value>,
    pub set_state: Option<Value>,
    pub take_child_perms: Option<Value>,
    pub unshare_child_perms: Option<Value>,
    /// The other options as given (`align`, ...): the filename is `json:`.
    pub other_options: Vec<(String, Value)>,
}

/// `qdict_flatten`: lists and objects as `key.0.member` entries.
fn flatten(prefix: &str, v: &Value, out: &mut Map<String, Value>) {
    match v {
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                flatten(&format!("{prefix}.{i}"), x, out);
            }
        }
        Value::Object(m) => {
            for (k, x) in m {
                flatten(&format!("{prefix}.{k}"), x, out);
            }
        }
        v => {
            out.insert(prefix.to_string(), v.clone());
        }
    }
}

/// The limits blkdebug imposes (`blkdebug_refresh_limits`), checked as
/// `blkdebug_open` checks them once the image is open.
#[derive(Default)]
pub struct Limits {
    pub align: Option<u64>,
    pub max_transfer: Option<u64>,
    pub opt_write_zero: Option<u64>,
    pub max_write_zero: Option<u64>,
    pub opt_discard: Option<u64>,
    pub max_discard: Option<u64>,
}

impl Limits {
    pub fn any(&self) -> bool {
        [
            self.align,
            self.max_transfer,
            self.opt_write_zero,
            self.max_write_zero,
            self.opt_discard,
            self.max_discard,
        ]
        .iter()
        .any(Option::is_some)
    }

    fn check(&self) -> Result<(), BlockError> {
        let bad = |what: &str, v: u64| {
            Err(BlockError::new(format!(
                "Cannot meet constraints with {what} {v}"
            )))
        };
        let big = |v: u64| v >= i32::MAX as u64;
        let align = self.align.unwrap_or(0);
        if align != 0 && (big(align) || !align.is_power_of_two()) {
            return bad("align", align);
        }
        // The image's request alignment is 1 for ferrovm's file nodes.
        let a = align.max(1);
        let aligned = |v: u64, a: u64| v.is_multiple_of(a);
        if let Some(v) = self.max_transfer.filter(|v| *v != 0) {
            if big(v) || !aligned(v, a) {
                return bad("max-transfer", v);
            }
        }
        let owz = self.opt_write_zero.unwrap_or(0);
        if owz != 0 && (big(owz) || !aligned(owz, a)) {
            return bad("opt-write-zero", owz);
        }
        if let Some(v) = self.max_write_zero.filter(|v| *v != 0) {
            if big(v) || !aligned(v, owz.max(a)) {
                return bad("max-write-zero", v);
            }
        }
        let od = self.opt_discard.unwrap_or(0);
        if od != 0 && (big(od) || !aligned(od, a)) {
            return bad("opt-discard", od);
        }
        if let Some(v) = self.max_discard.filter(|v| *v != 0) {
            if big(v) || !aligned(v, od.max(a)) {
                return bad("max-discard", v);
            }
        }
        Ok(())
    }
}

pub struct BlkdebugDriver {
    image: Arc<Node>,
    config: Option<String>,
    rules: Arc<Rules>,
    take: u64,
    unshare: u64,
    json_name: bool,
    given: Map<String, Value>,
}

/// The rules of a `blkdebug` node being opened, read before its image is
/// (`blkdebug_open`: `read_config`, `blkdebug_parse_perms`, then the image).
pub struct Pending {
    o: BlkdebugOptions,
    rules: Arc<Rules>,
    take: u64,
    unshare: u64,
}

impl Pending {
    pub fn read(o: BlkdebugOptions) -> Result<Self, BlockError> {
        let groups = read_config(
            o.config.as_deref(),
            o.inject_error.clone(),
            o.set_state.clone(),
        )?;
        let rules = Arc::new(Rules::default());
        add_rules(&rules, &groups)?;
        let take = perm_list(o.take_child_perms.clone(), "take-child-perms")?;
        let unshare = perm_list(o.unshare_child_perms.clone(), "unshare-child-perms")?;
        Ok(Pending {
            o,
            rules,
            take,
            unshare,
        })
    }

    /// The image is open: the limits are checked against it.
    pub fn finish(self, image: Arc<Node>, limits: Limits) -> Result<BlkdebugDriver, BlockError> {
        limits.check()?;
        // blkdebug_open ends with bdrv_debug_event(bs, BLKDBG_NONE).
        self.rules.event(DebugEvent::NONE);
        let o = self.o;
        // The options a json: file name lists (full_open_options).
        let mut given = Map::new();
        for (k, v) in [
            ("inject-error", &o.inject_error),
            ("set-state", &o.set_state),
            ("take-child-perms", &o.take_child_perms),
            ("unshare-child-perms", &o.unshare_child_perms),
        ] {
            if let Some(v) = v {
                flatten(k, v, &mut given);
            }
        }
        for (k, v) in &o.other_options {
            given.insert(k.clone(), v.clone());
        }
        Ok(BlkdebugDriver {
            image,
            json_name: !given.is_empty(),
            given,
            config: o.config,
            rules: self.rules,
            take: self.take,
            unshare: self.unshare,
        })
    }
}

impl BlkdebugDriver {
    pub fn rules(&self) -> &Arc<Rules> {
        &self.rules
    }
}

impl Driver for BlkdebugDriver {
    fn format_name(&self) -> &'static str {
        "blkdebug"
    }

    /// `blkdebug_refresh_filename`: `blkdebug:CONFIG:IMAGE` when only the
    /// config file and the image were given, else a `json:` name.
    fn filename(&self) -> String {
        let img = self.image.filename();
        if !self.json_name && !img.starts_with("json:") {
            return format!("blkdebug:{}:{img}", self.config.as_deref().unwrap_or(""));
        }
        let mut m = Map::new();
        if let Some(c) = &self.config {
            m.insert("config".into(), c.clone().into());
        }
        m.insert("driver".into(), "blkdebug".into());
        m.insert(
            "image".into(),
            crate::qcow2_node::node_open_options(&self.image),
        );
        for (k, v) in &self.given {
            m.insert(k.clone(), v.clone());
        }
        format!(
            "json:{}",
            crate::qcow2_node::qobject_json(&Value::Object(m))
        )
    }

    fn size(&self) -> Result<u64, BlockError> {
        self.image.size()
    }

    /// A protocol driver without `bdrv_get_allocated_file_size`: unknown.
    fn actual_size(&self) -> Option<u64> {
        None
    }

    fn is_filter(&self) -> bool {
        true
    }

    /// No `bdrv_co_truncate`: a filter resizes its child.
    fn truncate(&self, size: u64) -> Result<(), BlockError> {
        self.image.driver.truncate(size)
    }

    /// `blkdebug_child_perm`: the filter defaults, plus `take-child-perms`,
    /// minus `unshare-child-perms`.
    fn child_perm(&self, _role: &str, p: u64, shared: u64) -> (u64, u64) {
        let np = p & perm::DEFAULT_PERM_PASSTHROUGH;
        let ns = (shared & perm::DEFAULT_PERM_PASSTHROUGH) | perm::DEFAULT_PERM_UNCHANGED;
        (np | self.take, ns & !self.unshare)
    }

    fn format_io(&self) -> Option<Arc<dyn FormatIo>> {
        Some(Arc::new(BlkdebugIo {
            rules: self.rules.clone(),
            child: NodeIo::new(&self.image),
        }))
    }

    fn block_status(&self, off: u64, len: u64) -> Result<(bool, u64), i32> {
        if let Some(e) = self.rules.check(off, len, IoType::BlockStatus) {
            return Err(e);
        }
        self.image.driver.block_status(off, len)
    }

    fn has_info(&self) -> bool {
        self.image.driver.has_info()
    }

    fn as_blkdebug(&self) -> Option<&BlkdebugDriver> {
        Some(self)
    }
}

/// A request through the filter: checked against the active rules, then
/// passed on. Writes also signal the generic write-path events QEMU's
/// block layer raises on the node itself (`bdrv_aligned_pwritev`).
struct BlkdebugIo {
    rules: Arc<Rules>,
    child: NodeIo,
}

impl BlkdebugIo {
    fn check(&self, off: u64, len: u64, t: IoType) -> Result<(), i32> {
        match self.rules.check(off, len, t) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn pwritev(&self, zero: bool, op: impl FnOnce() -> Result<(), i32>) -> Result<(), i32> {
        self.rules.event(if zero {
            DebugEvent::PWRITEV_ZERO
        } else {
            DebugEvent::PWRITEV
        });
        let r = op();
        self.rules.event(DebugEvent::PWRITEV_DONE);
        r
    }
}

impl FormatIo for BlkdebugIo {
    fn read(&self, off: u64, buf: &mut [u8]) -> Result<(), i32> {
        self.check(off, buf.len() as u64, IoType::Read)?;
        self.child.read(off, buf)
    }
    fn readv(&self, off: u64, bufs: &[IoBuf]) -> Result<(), i32> {
        self.check(off, crate::iovec::total(bufs) as u64, IoType::Read)?;
        self.child.readv(off, bufs)
    }
    fn write(&self, off: u64, buf: &[u8]) -> Result<(), i32> {
        self.pwritev(false, || {
            self.check(off, buf.len() as u64, IoType::Write)?;
            self.child.write(off, buf)
        })
    }
    fn flush(&self) -> Result<(), i32> {
        self.check(0, 0, IoType::Flush)?;
        self.child.flush()
    }
    fn discard(&self, off: u64, len: u64) -> Result<(), i32> {
        self.check(off, len, IoType::Discard)?;
        self.child.discard(off, len)
    }
    fn write_zeroes(&self, off: u64, len: u64, may_unmap: bool) -> Result<(), i32> {
        self.pwritev(true, || {
            self.check(off, len, IoType::WriteZeroes)?;
            self.child.write_zeroes(off, len, may_unmap)
        })
    }
    fn debug_event(&self, ev: DebugEvent) {
        self.rules.event(ev);
    }
}

/// The `blkdebug` node that breakpoints on `node` reach
/// (`bdrv_debug_breakpoint`: down the primary children until a driver
/// that has breakpoints).
pub fn find(node: &Arc<Node>) -> Option<Arc<Node>> {
    let mut cur = Some(node.clone());
    while let Some(n) = cur {
        if n.driver.as_blkdebug().is_some() {
            return Some(n);
        }
        cur = n.primary_child();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filenames_split_as_qemu() {
        assert_eq!(
            parse_filename("blkdebug:/c:/i").unwrap(),
            (Some("/c".into()), "/i".into())
        );
        assert_eq!(
            parse_filename("blkdebug::null-co://").unwrap(),
            (None, "null-co://".into())
        );
        assert_eq!(parse_filename("/plain").unwrap(), (None, "/plain".into()));
        assert_eq!(
            parse_filename("blkdebug:/i").unwrap_err().msg,
            "blkdebug requires both config file and image path"
        );
    }

    #[test]
    fn numbers_parse_as_strtou64() {
        assert_eq!(parse_number("x", "5"), Ok(5));
        assert_eq!(parse_number("x", "0x10"), Ok(16));
        assert_eq!(parse_number("x", "010"), Ok(8));
        assert_eq!(parse_number("x", "-1"), Ok(u64::MAX));
        assert_eq!(
            parse_number("errno", "x5").unwrap_err(),
            "Parameter 'errno' expects a number"
        );
        assert!(parse_number("x", "").is_err());
    }

    fn groups_of(text: &str) -> Result<Groups, BlockError> {
        let dir =
            std::env::temp_dir().join(format!("blkdebug-{}-{}", std::process::id(), text.len()));
        std::fs::write(&dir, text).unwrap();
        let r = read_config(dir.to_str(), None, None);
        let _ = std::fs::remove_file(&dir);
        r
    }

    #[test]
    fn config_errors_are_qemus() {
        let e = |t: &str| groups_of(t).err().map(|e| e.msg);
        assert_eq!(
            e("[inject-error]\nevent = \"read_aio\"\n\n[bogus]\nx = \"1\"\n").as_deref(),
            Some("There is no option group 'bogus'")
        );
        assert_eq!(
            e("[inject-error]\nerrno = \"x5\"\n").as_deref(),
            Some("Parameter 'errno' expects a number")
        );
        assert_eq!(
            e("[inject-error]\n event=5\n").as_deref(),
            Some("Invalid parameter 'event=5'")
        );
        assert_eq!(e("event = \"5\"\n").as_deref(), Some("no group defined"));
        assert_eq!(
            e("[inject-error]\nonce = \"maybe\"\n").as_deref(),
            Some("Parameter 'once' expects 'on' or 'off'")
        );
        let g = groups_of("[inject-error]\nevent = \"reada\"\n").unwrap();
        let r = Rules::default();
        assert_eq!(
            add_rules(&r, &g).unwrap_err().msg,
            "invalid parameter value: reada"
        );
        let g = groups_of("[set-state]\nstate = \"1\"\n").unwrap();
        assert_eq!(
            add_rules(&r, &g).unwrap_err().msg,
            "Missing event name for rule"
        );
        let missing = read_config(Some("/nonexistent/blkdebug.conf"), None, None);
        assert_eq!(
            missing.err().unwrap().msg,
            "Could not read blkdebug config file: No such file or directory"
        );
    }

    #[test]
    fn qmp_options_become_rules() {
        let inj =
            serde_json::json!([{"event": "read_aio", "sector": 2, "once": true, "errno": 28}]);
        let g = read_config(None, Some(inj), None).unwrap();
        let r = Rules::default();
        add_rules(&r, &g).unwrap();
        r.event(DebugEvent::READ_AIO);
        assert_eq!(
            r.check(0, 1024, IoType::Read),
            None,
            "sector 2 is byte 1024"
        );
        assert_eq!(r.check(1024, 512, IoType::Read), Some(libc::ENOSPC));
        assert_eq!(r.check(1024, 512, IoType::Read), None);
    }
}
