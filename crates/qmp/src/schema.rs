//! The QMP schema: every command, event and type ferrovm's monitor knows,
//! declared once in QAPI syntax under `crates/qmp/schema/` and embedded at
//! build time.
//!
//! From that one declaration this module derives
//! * argument validation with QEMU 7.2's exact errors ([`Schema::validate_args`]),
//! * return/event data conformance and QEMU's member order ([`Schema::conform`]),
//! * `query-qmp-schema` in QEMU's SchemaInfo format, type names masked as
//!   numbers as a production QEMU does ([`Schema::introspect`]),
//! * `query-commands` ([`Schema::command_names`]),
//! * the support table for docs/qmp.md ([`support_table_markdown`]).

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use crate::ghash::GHashTable;
use crate::json_stream::JsonStream;
use crate::qobject::{QDict, QObject};

/// The schema files, in the order QEMU's qapi-schema.json includes their
/// counterparts.  The order only affects the numbering of masked type names.
const SCHEMA_FILES: &[(&str, &str)] = &[
    ("common.json", include_str!("../schema/common.json")),
    ("sockets.json", include_str!("../schema/sockets.json")),
    ("run-state.json", include_str!("../schema/run-state.json")),
    ("crypto.json", include_str!("../schema/crypto.json")),
    ("job.json", include_str!("../schema/job.json")),
    ("block-core.json", include_str!("../schema/block-core.json")),
    (
        "block-export.json",
        include_str!("../schema/block-export.json"),
    ),
    ("char.json", include_str!("../schema/char.json")),
    ("net.json", include_str!("../schema/net.json")),
    ("control.json", include_str!("../schema/control.json")),
    ("introspect.json", include_str!("../schema/introspect.json")),
    ("qom.json", include_str!("../schema/qom.json")),
    ("qdev.json", include_str!("../schema/qdev.json")),
    ("machine.json", include_str!("../schema/machine.json")),
    ("misc.json", include_str!("../schema/misc.json")),
    ("pci.json", include_str!("../schema/pci.json")),
    ("stats.json", include_str!("../schema/stats.json")),
    ("tpm.json", include_str!("../schema/tpm.json")),
    ("migration.json", include_str!("../schema/migration.json")),
    (
        "transaction.json",
        include_str!("../schema/transaction.json"),
    ),
];

/// The build whose QMP ferrovm reproduces: Debian's qemu-system-x86_64 7.2
/// on Linux.  QAPI `'if'` conditions are evaluated against these symbols
/// (each checked against that build's query-qmp-schema); a symbol in
/// neither list is a schema error, so no condition is silently guessed.
const CONFIG_TRUE: &[&str] = &[
    "CONFIG_LINUX",
    "CONFIG_POSIX",
    "CONFIG_LINUX_IO_URING",
    "CONFIG_REPLICATION",
    "CONFIG_ZSTD",
    "HAVE_IPPROTO_MPTCP",
    "HAVE_HOST_BLOCK_DEVICE",
    "CONFIG_TPM",
    "TARGET_I386",
    "CONFIG_VHOST_CRYPTO",
    "CONFIG_SECRET_KEYRING",
    "CONFIG_LIBPMEM",
    "CONFIG_VHOST_USER_BLK_SERVER",
    "CONFIG_FUSE",
    "CONFIG_VDUSE_BLK_EXPORT",
];
const CONFIG_FALSE: &[&str] = &[
    "CONFIG_BLKIO",
    "CONFIG_VMNET",
    "TARGET_S390X",
    "TARGET_ARM",
    "TARGET_PPC",
    "TARGET_MIPS",
    "TARGET_LOONGARCH64",
];

/// Names of every command and event of QEMU 7.2 (for the support table).
const QEMU_NAMES: &str = include_str!("../schema/qemu-7.2-names.txt");

/// QAPI's integer types; all introspect as `int`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntKind {
    Int,
    Int8,
    Int16,
    Int32,
    Int64,
    Uint8,
    Uint16,
    Uint32,
    Uint64,
    Size,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Builtin {
    Str,
    Int(IntKind),
    Bool,
    Number,
    Any,
    Null,
}

impl Builtin {
    fn from_name(n: &str) -> Option<Builtin> {
        use IntKind::*;
        Some(match n {
            "str" => Builtin::Str,
            "bool" => Builtin::Bool,
            "number" => Builtin::Number,
            "any" => Builtin::Any,
            "null" => Builtin::Null,
            "int" => Builtin::Int(Int),
            "int8" => Builtin::Int(Int8),
            "int16" => Builtin::Int(Int16),
            "int32" => Builtin::Int(Int32),
            "int64" => Builtin::Int(Int64),
            "uint8" => Builtin::Int(Uint8),
            "uint16" => Builtin::Int(Uint16),
            "uint32" => Builtin::Int(Uint32),
            "uint64" => Builtin::Int(Uint64),
            "size" => Builtin::Int(Size),
            _ => return None,
        })
    }

    /// Name in introspection (all integer types are `int`).
    fn introspect_name(self) -> &'static str {
        match self {
            Builtin::Str => "str",
            Builtin::Int(_) => "int",
            Builtin::Bool => "bool",
            Builtin::Number => "number",
            Builtin::Any => "any",
            Builtin::Null => "null",
        }
    }

    fn json_type(self) -> &'static str {
        match self {
            Builtin::Str => "string",
            Builtin::Int(_) => "int",
            Builtin::Bool => "boolean",
            Builtin::Number => "number",
            Builtin::Any => "value",
            Builtin::Null => "null",
        }
    }
}

/// A reference to a type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TypeRef {
    Builtin(Builtin),
    /// A named (or implicit) enum/struct/union.
    Named(String),
    Array(Box<TypeRef>),
}

#[derive(Clone, Debug)]
pub struct Member {
    pub name: String,
    pub ty: TypeRef,
    pub optional: bool,
    pub features: Vec<String>,
}

#[derive(Clone, Debug)]
pub enum TypeDef {
    Enum {
        values: Vec<String>,
    },
    /// A struct, an implicit argument/data type, or a union (base members,
    /// discriminator and the branches, every discriminator value covered:
    /// branches the declaration leaves out are the empty object, as in QAPI).
    Object {
        members: Vec<Member>,
        tag: Option<String>,
        variants: Vec<(String, String)>,
    },
    /// An alternate: the branch is chosen by the JSON type of the value
    /// (each branch type has a distinct one).
    Alternate {
        branches: Vec<(String, TypeRef)>,
    },
}

#[derive(Clone, Debug)]
pub struct Command {
    pub name: String,
    /// Name of the argument type (an implicit `q_obj_NAME-arg` type for
    /// inline `data`), `None` without arguments.
    pub arg_type: Option<String>,
    pub ret_type: Option<TypeRef>,
    pub allow_oob: bool,
    /// `'gen': false`: QEMU generates no marshaller, the command gets its
    /// arguments unchecked ([`Schema::validate_args`] passes them through).
    pub gen: bool,
    pub features: Vec<String>,
    pub note: Option<String>,
    /// The schema module (file stem, e.g. `run-state`, `block`) that declares
    /// it: the VMM routes commands to the subsystem that serves that module.
    pub module: String,
}

#[derive(Clone, Debug)]
pub struct Event {
    pub name: String,
    pub arg_type: Option<String>,
    pub features: Vec<String>,
    pub note: Option<String>,
}

/// The parsed schema.
#[derive(Debug)]
pub struct Schema {
    pub commands: Vec<Command>,
    pub events: Vec<Event>,
    types: HashMap<String, TypeDef>,
    /// Features of types (shown by introspection only).
    type_features: HashMap<String, Vec<String>>,
    /// Commands and events in definition order (introspection order).
    entities: Vec<Entity>,
}

#[derive(Clone, Copy, Debug)]
enum Entity {
    Command(usize),
    Event(usize),
}

/// A union read from the schema: name, base members, discriminator, branches.
type PendingUnion = (String, Vec<Member>, String, Vec<(String, String)>);

/// QAPI's `the_empty_object_type`.
const EMPTY_OBJECT: &str = "q_empty";

/// The embedded schema, parsed once.
pub fn schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let files: Vec<(&str, &str)> = SCHEMA_FILES.to_vec();
        Schema::parse(&files).unwrap_or_else(|e| panic!("embedded QMP schema is invalid: {e}"))
    })
}

fn expr_str<'a>(d: &'a QDict, key: &str) -> Result<Option<&'a str>, String> {
    match d.get(key) {
        None => Ok(None),
        Some(QObject::Str(s)) => Ok(Some(s)),
        Some(_) => Err(format!("'{key}' must be a string")),
    }
}

/// Evaluates a QAPI condition: a symbol, or `{'all': [..]}`,
/// `{'any': [..]}`, `{'not': ..}` (docs/devel/qapi-code-gen.rst,
/// "Configuring the schema").
fn condition_holds(c: &QObject) -> Result<bool, String> {
    match c {
        QObject::Str(s) if CONFIG_TRUE.contains(&s.as_str()) => Ok(true),
        QObject::Str(s) if CONFIG_FALSE.contains(&s.as_str()) => Ok(false),
        QObject::Str(s) => Err(format!("unknown 'if' condition {s}")),
        QObject::Dict(d) => match (d.get("all"), d.get("any"), d.get("not")) {
            (Some(QObject::List(l)), None, None) => l
                .iter()
                .try_fold(true, |acc, c| Ok(condition_holds(c)? && acc)),
            (None, Some(QObject::List(l)), None) => l
                .iter()
                .try_fold(false, |acc, c| Ok(condition_holds(c)? || acc)),
            (None, None, Some(n)) => Ok(!condition_holds(n)?),
            _ => Err(format!("bad 'if' condition {}", c.to_json())),
        },
        _ => Err(format!("bad 'if' condition {}", c.to_json())),
    }
}

/// Whether a definition, member, branch, enum value or feature written as
/// an object is compiled in (its `'if'` holds, or it has none).
fn enabled(v: &QObject) -> Result<bool, String> {
    match v {
        QObject::Dict(d) => d.get("if").map_or(Ok(true), condition_holds),
        _ => Ok(true),
    }
}

fn features_of(d: &QDict) -> Result<Vec<String>, String> {
    match d.get("features") {
        None => Ok(Vec::new()),
        Some(QObject::List(l)) => {
            let mut out = Vec::new();
            for f in l {
                if !enabled(f)? {
                    continue;
                }
                out.push(match f {
                    QObject::Str(s) => s.clone(),
                    QObject::Dict(fd) => expr_str(fd, "name")?
                        .ok_or("feature without name")?
                        .to_string(),
                    _ => return Err("bad feature".to_string()),
                });
            }
            Ok(out)
        }
        Some(_) => Err("'features' must be a list".into()),
    }
}

impl Schema {
    /// Parses QAPI-syntax files (`#` comments, single-quoted strings).
    pub fn parse(files: &[(&str, &str)]) -> Result<Schema, String> {
        let mut s = Schema {
            commands: Vec::new(),
            events: Vec::new(),
            types: HashMap::new(),
            type_features: HashMap::new(),
            entities: Vec::new(),
        };
        s.types.insert(
            EMPTY_OBJECT.into(),
            TypeDef::Object {
                members: vec![],
                tag: None,
                variants: vec![],
            },
        );
        let mut unions: Vec<PendingUnion> = Vec::new();
        for (fname, text) in files {
            let mut js = JsonStream::new();
            let mut note: Option<String> = None;
            let mut pending_note: Option<String> = None;
            for line in text.lines() {
                let t = line.trim_start();
                if let Some(c) = t.strip_prefix('#') {
                    if let Some(n) = c.trim_start().strip_prefix("ferrovm:") {
                        pending_note = Some(n.trim().to_string());
                    }
                    continue;
                }
                if !t.is_empty() && note.is_none() && !js.in_message() {
                    note = pending_note.take();
                }
                js.feed(line.as_bytes());
                js.feed(b"\n");
                while let Some(item) = js.next_item() {
                    let expr = item.map_err(|e| format!("{fname}: {e}"))?;
                    let d = expr
                        .as_dict()
                        .ok_or_else(|| format!("{fname}: top-level value must be an object"))?;
                    let module = fname.trim_end_matches(".json");
                    s.add_expr(d, note.take(), module, &mut unions)
                        .map_err(|e| format!("{fname}: {e}"))?;
                }
            }
            if js.in_message() {
                return Err(format!("{fname}: unterminated definition"));
            }
        }
        // Unions: fill in branches the declaration leaves out (empty object).
        for (name, base, tag, mut variants) in unions {
            let tag_member = base
                .iter()
                .find(|m| m.name == tag)
                .ok_or_else(|| format!("union {name}: no member '{tag}'"))?;
            let TypeRef::Named(enum_name) = &tag_member.ty else {
                return Err(format!("union {name}: discriminator must be an enum"));
            };
            let Some(TypeDef::Enum { values }) = s.types.get(enum_name) else {
                return Err(format!(
                    "union {name}: discriminator type {enum_name} is not an enum"
                ));
            };
            for (case, _) in &variants {
                if !values.contains(case) {
                    return Err(format!(
                        "union {name}: '{case}' is not a value of {enum_name}"
                    ));
                }
            }
            for v in values.clone() {
                if !variants.iter().any(|(c, _)| *c == v) {
                    variants.push((v, EMPTY_OBJECT.into()));
                }
            }
            s.types.insert(
                name,
                TypeDef::Object {
                    members: base,
                    tag: Some(tag),
                    variants,
                },
            );
        }
        s.check()?;
        Ok(s)
    }

    fn parse_type(&self, v: &QObject) -> Result<TypeRef, String> {
        match v {
            QObject::Str(n) => {
                Ok(Builtin::from_name(n)
                    .map_or_else(|| TypeRef::Named(n.clone()), TypeRef::Builtin))
            }
            QObject::List(l) if l.len() == 1 => {
                Ok(TypeRef::Array(Box::new(self.parse_type(&l[0])?)))
            }
            _ => Err(format!("bad type {}", v.to_json())),
        }
    }

    fn parse_members(&self, d: &QDict) -> Result<Vec<Member>, String> {
        let mut out = Vec::new();
        for (k, v) in d.iter() {
            if !enabled(v)? {
                continue;
            }
            let (name, optional) = match k.strip_prefix('*') {
                Some(n) => (n.to_string(), true),
                None => (k.clone(), false),
            };
            let (ty, features) = match v {
                QObject::Dict(md) => (
                    self.parse_type(md.get("type").ok_or("member without type")?)?,
                    features_of(md)?,
                ),
                other => (self.parse_type(other)?, Vec::new()),
            };
            out.push(Member {
                name,
                ty,
                optional,
                features,
            });
        }
        Ok(out)
    }

    /// Members of a `'base'`: inline members, or those of a struct defined
    /// earlier (its own base's members included).
    fn base_members(&self, base: Option<&QObject>, what: &str) -> Result<Vec<Member>, String> {
        match base {
            Some(QObject::Dict(bd)) => self.parse_members(bd),
            Some(QObject::Str(bn)) => match self.types.get(bn.as_str()) {
                Some(TypeDef::Object {
                    members, tag: None, ..
                }) => Ok(members.clone()),
                _ => Err(format!(
                    "{what}: base {bn} must be a struct defined earlier"
                )),
            },
            None => Ok(Vec::new()),
            Some(_) => Err(format!("{what}: bad 'base'")),
        }
    }

    /// `data` of a command/event: inline members become an implicit type.
    fn implicit_type(
        &mut self,
        d: &QDict,
        implicit_name: String,
    ) -> Result<Option<String>, String> {
        match d.get("data") {
            None => Ok(None),
            Some(QObject::Str(n)) => Ok(Some(n.clone())),
            Some(QObject::Dict(md)) => {
                let members = self.parse_members(md)?;
                self.types.insert(
                    implicit_name.clone(),
                    TypeDef::Object {
                        members,
                        tag: None,
                        variants: vec![],
                    },
                );
                Ok(Some(implicit_name))
            }
            Some(_) => Err("'data' must be an object or a type name".into()),
        }
    }

    fn add_expr(
        &mut self,
        d: &QDict,
        note: Option<String>,
        module: &str,
        unions: &mut Vec<PendingUnion>,
    ) -> Result<(), String> {
        if !d.get("if").map_or(Ok(true), condition_holds)? {
            return Ok(());
        }
        let type_name = ["enum", "struct", "union", "alternate"]
            .iter()
            .find_map(|k| expr_str(d, k).ok().flatten());
        if let Some(name) = type_name {
            let features = features_of(d)?;
            if !features.is_empty() {
                self.type_features.insert(name.to_string(), features);
            }
        }
        if let Some(name) = expr_str(d, "enum")? {
            let values = match d.get("data") {
                Some(QObject::List(l)) => {
                    let mut values = Vec::new();
                    for v in l {
                        if !enabled(v)? {
                            continue;
                        }
                        values.push(match v {
                            QObject::Str(s) => s.clone(),
                            QObject::Dict(vd) => expr_str(vd, "name")?
                                .ok_or("enum value without name")?
                                .to_string(),
                            _ => return Err("bad enum value".to_string()),
                        });
                    }
                    values
                }
                _ => return Err(format!("enum {name}: 'data' must be a list")),
            };
            self.define(name, TypeDef::Enum { values })
        } else if let Some(name) = expr_str(d, "alternate")? {
            let Some(QObject::Dict(bd)) = d.get("data") else {
                return Err(format!("alternate {name}: 'data' must be an object"));
            };
            let mut branches = Vec::new();
            for (k, v) in bd.iter() {
                if !enabled(v)? {
                    continue;
                }
                let ty = match v {
                    QObject::Dict(vd) => vd.get("type").ok_or("branch without type")?,
                    other => other,
                };
                branches.push((k.clone(), self.parse_type(ty)?));
            }
            self.define(name, TypeDef::Alternate { branches })
        } else if let Some(name) = expr_str(d, "struct")? {
            let mut members = self.base_members(d.get("base"), &format!("struct {name}"))?;
            match d.get("data") {
                Some(QObject::Dict(md)) => members.extend(self.parse_members(md)?),
                None => {}
                _ => return Err(format!("struct {name}: 'data' must be an object")),
            };
            self.define(
                name,
                TypeDef::Object {
                    members,
                    tag: None,
                    variants: vec![],
                },
            )
        } else if let Some(name) = expr_str(d, "union")? {
            if d.get("base").is_none() {
                return Err(format!("union {name}: 'base' missing"));
            }
            let base = self.base_members(d.get("base"), &format!("union {name}"))?;
            let tag = expr_str(d, "discriminator")?
                .ok_or_else(|| format!("union {name}: 'discriminator' missing"))?;
            let Some(QObject::Dict(vd)) = d.get("data") else {
                return Err(format!("union {name}: 'data' must be an object"));
            };
            let mut variants = Vec::new();
            for (k, v) in vd.iter() {
                if !enabled(v)? {
                    continue;
                }
                let ty = match v {
                    QObject::Str(t) => t.as_str(),
                    QObject::Dict(bd) => expr_str(bd, "type")?.ok_or("branch without type")?,
                    _ => return Err("bad union branch".to_string()),
                };
                variants.push((k.clone(), ty.to_string()));
            }
            if self.types.contains_key(name) {
                return Err(format!("type {name} defined twice"));
            }
            // Placeholder so later references resolve; completed after parsing.
            self.types.insert(
                name.to_string(),
                TypeDef::Object {
                    members: vec![],
                    tag: None,
                    variants: vec![],
                },
            );
            unions.push((name.to_string(), base, tag.to_string(), variants));
            Ok(())
        } else if let Some(name) = expr_str(d, "command")? {
            if self.commands.iter().any(|c| c.name == name) {
                return Err(format!("command {name} defined twice"));
            }
            let arg_type = self.implicit_type(d, format!("q_obj_{name}-arg"))?;
            let ret_type = d.get("returns").map(|r| self.parse_type(r)).transpose()?;
            let allow_oob = matches!(d.get("allow-oob"), Some(QObject::Bool(true)));
            let gen = !matches!(d.get("gen"), Some(QObject::Bool(false)));
            let features = features_of(d)?;
            self.entities.push(Entity::Command(self.commands.len()));
            self.commands.push(Command {
                name: name.to_string(),
                arg_type,
                ret_type,
                allow_oob,
                gen,
                features,
                note,
                module: module.to_string(),
            });
            Ok(())
        } else if let Some(name) = expr_str(d, "event")? {
            if self.events.iter().any(|e| e.name == name) {
                return Err(format!("event {name} defined twice"));
            }
            let arg_type = self.implicit_type(d, format!("q_obj_{name}-arg"))?;
            let features = features_of(d)?;
            self.entities.push(Entity::Event(self.events.len()));
            self.events.push(Event {
                name: name.to_string(),
                arg_type,
                features,
                note,
            });
            Ok(())
        } else {
            Err(format!(
                "unknown definition {}",
                QObject::Dict(d.clone()).to_json()
            ))
        }
    }

    fn define(&mut self, name: &str, def: TypeDef) -> Result<(), String> {
        if self.types.insert(name.to_string(), def).is_some() {
            return Err(format!("type {name} defined twice"));
        }
        Ok(())
    }

    /// Every type reference resolves.
    fn check(&self) -> Result<(), String> {
        fn check_ref(s: &Schema, t: &TypeRef, ctx: &str) -> Result<(), String> {
            match t {
                TypeRef::Builtin(_) => Ok(()),
                TypeRef::Array(e) => check_ref(s, e, ctx),
                TypeRef::Named(n) => s
                    .types
                    .get(n)
                    .map(|_| ())
                    .ok_or_else(|| format!("{ctx}: unknown type {n}")),
            }
        }
        for (name, def) in &self.types {
            if let TypeDef::Object {
                members, variants, ..
            } = def
            {
                for m in members {
                    check_ref(self, &m.ty, name)?;
                }
                for (_, v) in variants {
                    match self.types.get(v) {
                        Some(TypeDef::Object { tag: None, .. }) => {}
                        _ => return Err(format!("{name}: branch type {v} must be a struct")),
                    }
                }
            }
            if let TypeDef::Alternate { branches } = def {
                for (_, t) in branches {
                    check_ref(self, t, name)?;
                }
            }
        }
        for c in &self.commands {
            if let Some(a) = &c.arg_type {
                match self.types.get(a) {
                    Some(TypeDef::Object { .. }) => {}
                    _ => {
                        return Err(format!(
                            "{}: argument type {a} must be an object type",
                            c.name
                        ))
                    }
                }
            }
            if let Some(r) = &c.ret_type {
                check_ref(self, r, &c.name)?;
            }
        }
        for e in &self.events {
            if let Some(a) = &e.arg_type {
                check_ref(self, &TypeRef::Named(a.clone()), &e.name)?;
            }
        }
        Ok(())
    }

    pub fn command(&self, name: &str) -> Option<&Command> {
        self.commands.iter().find(|c| c.name == name)
    }

    pub fn event(&self, name: &str) -> Option<&Event> {
        self.events.iter().find(|e| e.name == name)
    }

    pub fn type_def(&self, name: &str) -> Option<&TypeDef> {
        self.types.get(name)
    }

    /// Command names in definition order.
    pub fn command_names(&self) -> impl Iterator<Item = &str> {
        self.commands.iter().map(|c| c.name.as_str())
    }

    /// The commands the VMM's [`crate::Handler`] serves: every command but
    /// [`crate::LIBRARY_COMMANDS`], in definition order.
    pub fn handler_commands(&self) -> impl Iterator<Item = &Command> {
        self.commands
            .iter()
            .filter(|c| !crate::LIBRARY_COMMANDS.contains(&c.name.as_str()))
    }

    /// `query-commands` result.
    pub fn query_commands(&self) -> QObject {
        QObject::List(
            self.commands
                .iter()
                .map(|c| {
                    let mut d = QDict::new();
                    d.insert("name", QObject::Str(c.name.clone()));
                    QObject::Dict(d)
                })
                .collect(),
        )
    }

    /// Object members including the variant selected by the tag's value.
    fn object_members<'a>(
        &'a self,
        name: &str,
        value_of_tag: &dyn Fn(&str) -> Option<String>,
    ) -> Vec<&'a Member> {
        let Some(TypeDef::Object {
            members,
            tag,
            variants,
        }) = self.types.get(name)
        else {
            return Vec::new();
        };
        let mut out: Vec<&Member> = members.iter().collect();
        if let Some(tag) = tag {
            if let Some(v) = value_of_tag(tag) {
                if let Some((_, bt)) = variants.iter().find(|(c, _)| *c == v) {
                    out.extend(self.object_members(bt, &|_| None));
                }
            }
        }
        out
    }

    // ---- argument validation (QEMU's qobject input visitor) ----

    /// Validates a command's `arguments` exactly as QEMU 7.2's generated
    /// marshaller and qobject-input-visitor do, returning the first error's
    /// desc (class GenericError).  On success returns the arguments in
    /// schema member order.
    pub fn validate_args(&self, cmd: &Command, args: &QDict) -> Result<QDict, String> {
        let mut v = InputVisitor {
            schema: self,
            stack: Vec::new(),
        };
        if !cmd.gen {
            // No marshaller: QEMU hands the command its arguments as sent.
            return Ok(args.clone());
        }
        let ty = cmd.arg_type.as_deref().unwrap_or(EMPTY_OBJECT);
        let root = QObject::Dict(args.clone());
        v.visit_struct_body(None, &root, ty)
    }

    /// The alternate branch for a value: the one whose type has the
    /// value's JSON type (QEMU switches on the value's QType).
    fn alternate_branch<'a>(
        &self,
        branches: &'a [(String, TypeRef)],
        v: &QObject,
    ) -> Option<&'a TypeRef> {
        branches.iter().map(|(_, t)| t).find(|t| match (t, v) {
            (TypeRef::Builtin(Builtin::Str), QObject::Str(_)) => true,
            (TypeRef::Builtin(Builtin::Bool), QObject::Bool(_)) => true,
            (TypeRef::Builtin(Builtin::Null), QObject::Null) => true,
            (
                TypeRef::Builtin(Builtin::Int(_) | Builtin::Number),
                QObject::Int(_) | QObject::UInt(_) | QObject::Double(_),
            ) => true,
            (TypeRef::Array(_), QObject::List(_)) => true,
            (TypeRef::Named(n), _) => matches!(
                (self.types.get(n), v),
                (Some(TypeDef::Enum { .. }), QObject::Str(_))
                    | (Some(TypeDef::Object { .. }), QObject::Dict(_))
            ),
            _ => false,
        })
    }

    // ---- output conformance ----

    /// Checks `value` against a type and rebuilds it with object members in
    /// schema order — the order QEMU's output visitor inserts them, which
    /// decides the printed order of keys sharing a hash bucket.
    pub fn conform(&self, value: &QObject, ty: &TypeRef) -> Result<QObject, String> {
        self.conform_at(value, ty, "")
    }

    fn conform_at(&self, value: &QObject, ty: &TypeRef, path: &str) -> Result<QObject, String> {
        let bad = |what: &str| {
            Err(format!(
                "{}: expected {what}, got {}",
                if path.is_empty() { "<value>" } else { path },
                value.to_json()
            ))
        };
        match ty {
            TypeRef::Builtin(b) => {
                let ok = match (b, value) {
                    (Builtin::Str, QObject::Str(_)) => true,
                    (Builtin::Bool, QObject::Bool(_)) => true,
                    (Builtin::Null, QObject::Null) => true,
                    (Builtin::Any, _) => true,
                    (Builtin::Number, QObject::Int(_) | QObject::UInt(_) | QObject::Double(_)) => {
                        true
                    }
                    (Builtin::Int(k), v) => int_in_range(*k, v),
                    _ => false,
                };
                if ok {
                    Ok(value.clone())
                } else {
                    bad(b.introspect_name())
                }
            }
            TypeRef::Array(e) => match value {
                QObject::List(l) => Ok(QObject::List(
                    l.iter()
                        .enumerate()
                        .map(|(i, x)| self.conform_at(x, e, &format!("{path}[{i}]")))
                        .collect::<Result<_, _>>()?,
                )),
                _ => bad("array"),
            },
            TypeRef::Named(n) => match self.types.get(n) {
                Some(TypeDef::Enum { values }) => match value {
                    QObject::Str(s) if values.contains(s) => Ok(value.clone()),
                    _ => bad(&format!("a value of {n}")),
                },
                Some(TypeDef::Alternate { branches }) => {
                    match self.alternate_branch(branches, value) {
                        Some(bt) => self.conform_at(value, bt, path),
                        None => bad(&format!("a value of {n}")),
                    }
                }
                Some(TypeDef::Object { .. }) => {
                    let QObject::Dict(d) = value else {
                        return bad("object");
                    };
                    let members = self.object_members(n, &|tag| {
                        d.get(tag).and_then(|v| v.as_str()).map(str::to_string)
                    });
                    let mut out = QDict::new();
                    for m in &members {
                        let sub = if path.is_empty() {
                            m.name.clone()
                        } else {
                            format!("{path}.{}", m.name)
                        };
                        match d.get(&m.name) {
                            Some(x) => out.insert(m.name.clone(), self.conform_at(x, &m.ty, &sub)?),
                            None if m.optional => {}
                            None => return Err(format!("{sub}: missing")),
                        }
                    }
                    if let Some((k, _)) = d
                        .iter()
                        .find(|(k, _)| !members.iter().any(|m| &m.name == *k))
                    {
                        return Err(format!(
                            "{}: unexpected member '{k}'",
                            if path.is_empty() { n } else { path }
                        ));
                    }
                    Ok(QObject::Dict(out))
                }
                None => bad(n),
            },
        }
    }

    // ---- introspection ----

    /// `query-qmp-schema` result, generated as QEMU's scripts/qapi/introspect.py
    /// does: commands and events in definition order, then every type they
    /// use (transitively) in order of first use, non-builtin type names
    /// masked as "0", "1", ...; integer types collapse to `int`.
    pub fn introspect(&self) -> QObject {
        let mut g = Introspector {
            schema: self,
            used: Vec::new(),
            used_set: HashSet::new(),
            names: HashMap::new(),
            trees: Vec::new(),
        };
        for e in &self.entities {
            match *e {
                Entity::Command(i) => {
                    let c = &self.commands[i];
                    let arg =
                        TypeRef::Named(c.arg_type.clone().unwrap_or_else(|| EMPTY_OBJECT.into()));
                    let ret = c
                        .ret_type
                        .clone()
                        .unwrap_or_else(|| TypeRef::Named(EMPTY_OBJECT.into()));
                    let mut d = QDict::new();
                    let a = g.use_type(&arg);
                    let r = g.use_type(&ret);
                    d.insert("arg-type", QObject::Str(a));
                    d.insert("ret-type", QObject::Str(r));
                    if c.allow_oob {
                        d.insert("allow-oob", QObject::Bool(true));
                    }
                    g.tree(&c.name, "command", d, &c.features);
                }
                Entity::Event(i) => {
                    let ev = &self.events[i];
                    let arg =
                        TypeRef::Named(ev.arg_type.clone().unwrap_or_else(|| EMPTY_OBJECT.into()));
                    let mut d = QDict::new();
                    let a = g.use_type(&arg);
                    d.insert("arg-type", QObject::Str(a));
                    g.tree(&ev.name, "event", d, &ev.features);
                }
            }
        }
        let mut i = 0;
        while i < g.used.len() {
            let t = g.used[i].clone();
            g.visit_type(&t);
            i += 1;
        }
        QObject::List(g.trees)
    }
}

fn int_in_range(k: IntKind, v: &QObject) -> bool {
    let (lo, hi): (i128, i128) = match k {
        IntKind::Int | IntKind::Int64 => (i64::MIN as i128, i64::MAX as i128),
        IntKind::Int8 => (i8::MIN as i128, i8::MAX as i128),
        IntKind::Int16 => (i16::MIN as i128, i16::MAX as i128),
        IntKind::Int32 => (i32::MIN as i128, i32::MAX as i128),
        IntKind::Uint8 => (0, u8::MAX as i128),
        IntKind::Uint16 => (0, u16::MAX as i128),
        IntKind::Uint32 => (0, u32::MAX as i128),
        IntKind::Uint64 | IntKind::Size => (0, u64::MAX as i128),
    };
    let x = match *v {
        QObject::Int(i) => i as i128,
        QObject::UInt(u) => u as i128,
        _ => return false,
    };
    (lo..=hi).contains(&x)
}

struct Introspector<'a> {
    schema: &'a Schema,
    used: Vec<TypeRef>,
    used_set: HashSet<String>,
    names: HashMap<String, String>,
    trees: Vec<QObject>,
}

fn type_key(t: &TypeRef) -> String {
    match t {
        TypeRef::Builtin(b) => b.introspect_name().to_string(),
        TypeRef::Named(n) => n.clone(),
        TypeRef::Array(e) => format!("{}List", type_key(e)),
    }
}

impl Introspector<'_> {
    /// `_use_type()`: records the type for emission and returns its
    /// (masked) name.
    fn use_type(&mut self, t: &TypeRef) -> String {
        // Map the integer types to plain int, arrays of them to [int].
        let t = match t {
            TypeRef::Builtin(Builtin::Int(_)) => TypeRef::Builtin(Builtin::Int(IntKind::Int)),
            TypeRef::Array(e) if matches!(**e, TypeRef::Builtin(Builtin::Int(_))) => {
                TypeRef::Array(Box::new(TypeRef::Builtin(Builtin::Int(IntKind::Int))))
            }
            other => other.clone(),
        };
        if self.used_set.insert(type_key(&t)) {
            self.used.push(t.clone());
        }
        match &t {
            TypeRef::Builtin(b) => b.introspect_name().to_string(),
            TypeRef::Array(e) => format!("[{}]", self.use_type(e)),
            TypeRef::Named(n) => self.mask(n),
        }
    }

    fn type_features(&self, n: &str) -> Vec<String> {
        self.schema
            .type_features
            .get(n)
            .cloned()
            .unwrap_or_default()
    }

    fn mask(&mut self, n: &str) -> String {
        let next = self.names.len().to_string();
        self.names.entry(n.to_string()).or_insert(next).clone()
    }

    fn tree(&mut self, name: &str, meta: &str, mut d: QDict, features: &[String]) {
        d.insert("name", QObject::Str(name.to_string()));
        d.insert("meta-type", QObject::Str(meta.to_string()));
        if !features.is_empty() {
            d.insert(
                "features",
                QObject::List(features.iter().map(|f| QObject::Str(f.clone())).collect()),
            );
        }
        self.trees.push(QObject::Dict(d));
    }

    fn visit_type(&mut self, t: &TypeRef) {
        match t {
            TypeRef::Builtin(b) => {
                let mut d = QDict::new();
                d.insert("json-type", QObject::Str(b.json_type().to_string()));
                self.tree(b.introspect_name(), "builtin", d, &[]);
            }
            TypeRef::Array(e) => {
                let elem = self.use_type(e);
                let mut d = QDict::new();
                d.insert("element-type", QObject::Str(elem.clone()));
                self.tree(&format!("[{elem}]"), "array", d, &[]);
            }
            TypeRef::Named(n) => {
                let name = self.mask(n);
                match self.schema.types.get(n) {
                    Some(TypeDef::Enum { values }) => {
                        let mut d = QDict::new();
                        d.insert(
                            "members",
                            QObject::List(
                                values
                                    .iter()
                                    .map(|v| {
                                        let mut m = QDict::new();
                                        m.insert("name", QObject::Str(v.clone()));
                                        QObject::Dict(m)
                                    })
                                    .collect(),
                            ),
                        );
                        d.insert(
                            "values",
                            QObject::List(values.iter().map(|v| QObject::Str(v.clone())).collect()),
                        );
                        let features = self.type_features(n);
                        self.tree(&name, "enum", d, &features);
                    }
                    Some(TypeDef::Object {
                        members,
                        tag,
                        variants,
                    }) => {
                        let mut d = QDict::new();
                        let ms = members
                            .iter()
                            .map(|m| {
                                let mut md = QDict::new();
                                md.insert("name", QObject::Str(m.name.clone()));
                                md.insert("type", QObject::Str(self.use_type(&m.ty)));
                                if m.optional {
                                    md.insert("default", QObject::Null);
                                }
                                if !m.features.is_empty() {
                                    md.insert(
                                        "features",
                                        QObject::List(
                                            m.features
                                                .iter()
                                                .map(|f| QObject::Str(f.clone()))
                                                .collect(),
                                        ),
                                    );
                                }
                                QObject::Dict(md)
                            })
                            .collect();
                        d.insert("members", QObject::List(ms));
                        if let Some(tag) = tag {
                            d.insert("tag", QObject::Str(tag.clone()));
                            let vs = variants
                                .iter()
                                .map(|(case, ty)| {
                                    let mut vd = QDict::new();
                                    vd.insert("case", QObject::Str(case.clone()));
                                    vd.insert(
                                        "type",
                                        QObject::Str(self.use_type(&TypeRef::Named(ty.clone()))),
                                    );
                                    QObject::Dict(vd)
                                })
                                .collect();
                            d.insert("variants", QObject::List(vs));
                        }
                        let features = self.type_features(n);
                        self.tree(&name, "object", d, &features);
                    }
                    Some(TypeDef::Alternate { branches }) => {
                        let ms = branches
                            .iter()
                            .map(|(_, t)| {
                                let mut md = QDict::new();
                                md.insert("type", QObject::Str(self.use_type(t)));
                                QObject::Dict(md)
                            })
                            .collect();
                        let mut d = QDict::new();
                        d.insert("members", QObject::List(ms));
                        let features = self.type_features(n);
                        self.tree(&name, "alternate", d, &features);
                    }
                    None => {}
                }
            }
        }
    }
}

/// A stack entry of the input visitor: the object being visited, its name
/// and (lists) the index of the element last taken.
struct Frame<'v> {
    obj: &'v QObject,
    name: Option<String>,
    index: i64,
    /// Keys not yet consumed (dicts), in glib hash-table order.
    unvisited: Option<GHashTable>,
}

/// Emulation of QEMU's `QObjectInputVisitor` error reporting.
struct InputVisitor<'s, 'v> {
    schema: &'s Schema,
    stack: Vec<Frame<'v>>,
}

impl<'v> InputVisitor<'_, 'v> {
    /// `full_name()`: "a.b[2].c" for the member/element being visited.
    fn full_name(&self, name: Option<&str>) -> String {
        let mut err = String::new();
        let mut name = name.map(str::to_string);
        for so in self.stack.iter().rev() {
            if matches!(so.obj, QObject::Dict(_)) {
                err.insert_str(0, name.as_deref().unwrap_or("<anonymous>"));
                err.insert(0, '.');
            } else {
                err.insert_str(0, &format!("[{}]", so.index));
            }
            name = so.name.clone();
        }
        if let Some(n) = name {
            err.insert_str(0, &n);
        } else if err.starts_with('.') {
            err.remove(0);
        } else if err.is_empty() {
            return "<anonymous>".into();
        }
        err
    }

    /// `qobject_input_get_object(consume=true)`.
    fn take(&mut self, name: Option<&str>) -> Option<&'v QObject> {
        let tos = self.stack.last_mut()?;
        match tos.obj {
            QObject::Dict(d) => {
                let key = name?;
                let v = d.get(key);
                if v.is_some() {
                    if let Some(h) = tos.unvisited.as_mut() {
                        h.remove(key);
                    }
                }
                v
            }
            QObject::List(l) => {
                tos.index += 1;
                l.get(tos.index as usize)
            }
            _ => None,
        }
    }

    /// `qobject_input_get_object(consume=false)`.
    fn peek(&self, name: Option<&str>) -> Option<&'v QObject> {
        let tos = self.stack.last()?;
        match tos.obj {
            QObject::Dict(d) => d.get(name?),
            QObject::List(l) => l.get((tos.index + 1) as usize),
            _ => None,
        }
    }

    fn get(&mut self, name: Option<&str>) -> Result<&'v QObject, String> {
        match self.take(name) {
            Some(v) => Ok(v),
            None => Err(format!("Parameter '{}' is missing", self.full_name(name))),
        }
    }

    fn type_err(&self, name: Option<&str>, expected: &str) -> String {
        format!(
            "Invalid parameter type for '{}', expected: {expected}",
            self.full_name(name)
        )
    }

    fn push(&mut self, name: Option<&str>, obj: &'v QObject) {
        let unvisited = match obj {
            QObject::Dict(d) => {
                let mut h = GHashTable::new();
                for (k, _) in d.qemu_order() {
                    h.insert(k);
                }
                Some(h)
            }
            _ => None,
        };
        self.stack.push(Frame {
            obj,
            name: name.map(str::to_string),
            index: -1,
            unvisited,
        });
    }

    /// Visits the members of object type `ty` in `obj` (already fetched),
    /// then checks for unexpected members.
    fn visit_struct_body(
        &mut self,
        name: Option<&str>,
        obj: &'v QObject,
        ty: &str,
    ) -> Result<QDict, String> {
        let QObject::Dict(d) = obj else {
            return Err(self.type_err(name, "object"));
        };
        self.push(name, obj);
        let members = self.schema.object_members(ty, &|tag| {
            d.get(tag).and_then(|v| v.as_str()).map(str::to_string)
        });
        let mut out = QDict::new();
        for m in members {
            if m.optional && !d.contains_key(&m.name) {
                continue;
            }
            let v = self.visit(Some(&m.name), &m.ty)?;
            out.insert(m.name.clone(), v);
        }
        // visit_check_struct(): first leftover key in hash-table order.
        let tos = self.stack.last().expect("pushed above");
        if let Some(key) = tos.unvisited.as_ref().and_then(|h| h.first()) {
            let key = key.to_string();
            return Err(format!(
                "Parameter '{}' is unexpected",
                self.full_name(Some(&key))
            ));
        }
        self.stack.pop();
        Ok(out)
    }

    fn visit(&mut self, name: Option<&str>, ty: &TypeRef) -> Result<QObject, String> {
        let bare = name.unwrap_or("null").to_string();
        match ty {
            TypeRef::Builtin(b) => {
                let v = self.get(name)?;
                match b {
                    Builtin::Any => Ok(v.clone()),
                    Builtin::Str => match v {
                        QObject::Str(_) => Ok(v.clone()),
                        _ => Err(self.type_err(name, "string")),
                    },
                    Builtin::Bool => match v {
                        QObject::Bool(_) => Ok(v.clone()),
                        _ => Err(self.type_err(name, "boolean")),
                    },
                    Builtin::Null => match v {
                        QObject::Null => Ok(v.clone()),
                        _ => Err(self.type_err(name, "null")),
                    },
                    Builtin::Number => match v {
                        QObject::Int(i) => Ok(QObject::Double(*i as f64)),
                        QObject::UInt(u) => Ok(QObject::Double(*u as f64)),
                        QObject::Double(_) => Ok(v.clone()),
                        _ => Err(self.type_err(name, "number")),
                    },
                    Builtin::Int(k) => self.visit_int(name, &bare, *k, v),
                }
            }
            TypeRef::Array(e) => {
                let v = self.get(name)?;
                let QObject::List(l) = v else {
                    return Err(self.type_err(name, "array"));
                };
                self.push(name, v);
                let mut out = Vec::with_capacity(l.len());
                for _ in 0..l.len() {
                    out.push(self.visit(None, e)?);
                }
                self.stack.pop();
                Ok(QObject::List(out))
            }
            TypeRef::Named(n) => match self.schema.types.get(n) {
                Some(TypeDef::Enum { values }) => {
                    let v = self.get(name)?;
                    let QObject::Str(s) = v else {
                        return Err(self.type_err(name, "string"));
                    };
                    if values.contains(s) {
                        Ok(v.clone())
                    } else {
                        Err(format!("Parameter '{bare}' does not accept value '{s}'"))
                    }
                }
                Some(TypeDef::Object { .. }) => {
                    let v = self.get(name)?;
                    Ok(QObject::Dict(self.visit_struct_body(name, v, n)?))
                }
                Some(TypeDef::Alternate { branches }) => {
                    // qobject_input_start_alternate(): look without consuming,
                    // then visit the branch for the value's QType.
                    let Some(v) = self.peek(name) else {
                        return Err(format!("Parameter '{}' is missing", self.full_name(name)));
                    };
                    match self.schema.alternate_branch(branches, v) {
                        Some(bt) => self.visit(name, bt),
                        // The generated visitor names the member bare and
                        // expects the alternate's own name.
                        None => Err(format!(
                            "Invalid parameter type for '{bare}', expected: {n}"
                        )),
                    }
                }
                None => Err(format!("Parameter '{bare}' has unknown type {n}")),
            },
        }
    }

    fn visit_int(
        &self,
        name: Option<&str>,
        bare: &str,
        k: IntKind,
        v: &QObject,
    ) -> Result<QObject, String> {
        let range = |lo: i64, hi: i64, label: &str| -> Result<QObject, String> {
            match v.as_i64() {
                None => Err(self.type_err(name, "integer")),
                Some(i) if i < lo || i > hi => Err(format!("Parameter '{bare}' expects {label}")),
                Some(i) => Ok(QObject::Int(i)),
            }
        };
        // qapi/qobject-input-visitor.c `qobject_input_type_uint64`: anything
        // but an integer (a string, a float) "expects uint64" whatever the
        // width, negative integers wrap for backward compatibility; then
        // qapi-visit-core.c `visit_type_uintN` checks the width against
        // its C type's name. `size` has no type_size here, so it is uint64.
        let urange = |hi: u64, label: &str| -> Result<QObject, String> {
            let u = match (v.as_u64(), v.as_i64()) {
                (Some(u), _) => u,
                (None, Some(i)) => i as u64,
                _ => {
                    return Err(format!(
                        "Parameter '{}' expects uint64",
                        self.full_name(name)
                    ))
                }
            };
            if u > hi {
                Err(format!("Parameter '{bare}' expects {label}"))
            } else {
                Ok(if u <= i64::MAX as u64 {
                    QObject::Int(u as i64)
                } else {
                    QObject::UInt(u)
                })
            }
        };
        match k {
            IntKind::Int | IntKind::Int64 => range(i64::MIN, i64::MAX, "int64"),
            IntKind::Int8 => range(i8::MIN.into(), i8::MAX.into(), "int8_t"),
            IntKind::Int16 => range(i16::MIN.into(), i16::MAX.into(), "int16_t"),
            IntKind::Int32 => range(i32::MIN.into(), i32::MAX.into(), "int32_t"),
            IntKind::Uint8 => urange(u8::MAX.into(), "uint8_t"),
            IntKind::Uint16 => urange(u16::MAX.into(), "uint16_t"),
            IntKind::Uint32 => urange(u32::MAX.into(), "uint32_t"),
            IntKind::Uint64 | IntKind::Size => urange(u64::MAX, "uint64"),
        }
    }
}

/// Markdown support table for docs/qmp.md: every command and event of QEMU
/// 7.2, whether ferrovm implements it, and the schema's note.
pub fn support_table_markdown() -> String {
    let s = schema();
    let mut out = String::new();
    out.push_str(&format!(
        "ferrovm implements {} of QEMU 7.2's commands and {} of its events; the\n\
         table is generated from `crates/qmp/schema/` by `qmp::support_table_markdown()`.\n\n",
        s.commands.len(),
        s.events.len()
    ));
    for (kind, title) in [("command", "Commands"), ("event", "Events")] {
        out.push_str(&format!(
            "### {title}\n\n| {kind} | implemented | notes |\n|---|---|---|\n"
        ));
        let mut names: Vec<&str> = QEMU_NAMES
            .lines()
            .filter_map(|l| l.strip_prefix(kind).and_then(|r| r.strip_prefix(' ')))
            .collect();
        let ours: Vec<(&str, Option<&str>)> = if kind == "command" {
            s.commands
                .iter()
                .map(|c| (c.name.as_str(), c.note.as_deref()))
                .collect()
        } else {
            s.events
                .iter()
                .map(|e| (e.name.as_str(), e.note.as_deref()))
                .collect()
        };
        for (n, _) in &ours {
            if !names.contains(n) {
                names.push(n);
            }
        }
        names.sort_unstable();
        for n in names {
            match ours.iter().find(|(o, _)| *o == n) {
                Some((_, note)) => {
                    out.push_str(&format!("| `{n}` | yes | {} |\n", note.unwrap_or("")))
                }
                None => out.push_str(&format!("| `{n}` | no | |\n")),
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json_stream::JsonStream;

    fn parse(s: &str) -> QObject {
        let mut js = JsonStream::new();
        js.feed(s.as_bytes());
        js.feed(b" ");
        js.next_item().unwrap().unwrap()
    }

    fn validate(cmd: &str, args: &str) -> Result<String, String> {
        let s = schema();
        let c = s.command(cmd).unwrap();
        let a = parse(args);
        s.validate_args(c, a.as_dict().unwrap())
            .map(|d| QObject::Dict(d).to_json())
    }

    #[test]
    fn schema_parses_and_covers_issue_3() {
        let s = schema();
        for c in "qmp_capabilities query-status stop cont system_reset system_powerdown system_wakeup quit inject-nmi \
                  set-action query-name query-uuid query-version query-kvm query-target query-machines query-current-machine \
                  query-cpus-fast query-hotpluggable-cpus query-memory-size-summary query-chardev query-iothreads \
                  query-commands query-qmp-schema qom-list qom-get human-monitor-command"
            .split_whitespace()
        {
            assert!(s.command(c).is_some(), "{c}");
        }
        for e in "SHUTDOWN POWERDOWN RESET STOP RESUME WAKEUP SUSPEND WATCHDOG GUEST_PANICKED"
            .split_whitespace()
        {
            assert!(s.event(e).is_some(), "{e}");
        }
        assert_eq!(
            s.command("query-qmp-schema")
                .unwrap()
                .note
                .as_deref()
                .map(|n| n.starts_with("served")),
            Some(true)
        );
    }

    /// Errors recorded from QEMU 7.2.
    #[test]
    fn argument_errors_match_qemu() {
        assert_eq!(
            validate("qmp_capabilities", r#"{"enable":[1]}"#).unwrap_err(),
            "Invalid parameter type for 'enable[0]', expected: string"
        );
        assert_eq!(
            validate("qmp_capabilities", r#"{"enable":["bar"]}"#).unwrap_err(),
            "Parameter 'null' does not accept value 'bar'"
        );
        assert_eq!(
            validate("qmp_capabilities", r#"{"enable":"oob"}"#).unwrap_err(),
            "Invalid parameter type for 'enable', expected: array"
        );
        assert_eq!(
            validate("qmp_capabilities", r#"{"x":1}"#).unwrap_err(),
            "Parameter 'x' is unexpected"
        );
        assert_eq!(
            validate("query-status", r#"{"a":1,"b":2}"#).unwrap_err(),
            "Parameter 'b' is unexpected"
        );
        assert_eq!(
            validate("query-status", r#"{"b":1,"a":2}"#).unwrap_err(),
            "Parameter 'b' is unexpected"
        );
        assert_eq!(
            validate(
                "query-status",
                r#"{"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":8,"i":9}"#
            )
            .unwrap_err(),
            "Parameter 'b' is unexpected"
        );
        assert_eq!(
            validate("qom-list", "{}").unwrap_err(),
            "Parameter 'path' is missing"
        );
        assert_eq!(
            validate("qom-list", r#"{"path":1}"#).unwrap_err(),
            "Invalid parameter type for 'path', expected: string"
        );
        assert_eq!(
            validate("qom-list", r#"{"path":null}"#).unwrap_err(),
            "Invalid parameter type for 'path', expected: string"
        );
        assert_eq!(
            validate("qom-list", r#"{"path":"/","x":1}"#).unwrap_err(),
            "Parameter 'x' is unexpected"
        );
        assert_eq!(
            validate("qom-list", r#"{"x":1}"#).unwrap_err(),
            "Parameter 'path' is missing"
        );
        assert_eq!(
            validate("qom-get", r#"{"path":"/"}"#).unwrap_err(),
            "Parameter 'property' is missing"
        );
        assert_eq!(
            validate("qom-get", r#"{"property":"x"}"#).unwrap_err(),
            "Parameter 'path' is missing"
        );
        for bad in [r#""x""#, "1.5", "18446744073709551615"] {
            assert_eq!(
                validate(
                    "human-monitor-command",
                    &format!(r#"{{"command-line":"info status","cpu-index":{bad}}}"#)
                )
                .unwrap_err(),
                "Invalid parameter type for 'cpu-index', expected: integer"
            );
        }
        assert_eq!(
            validate("human-monitor-command", r#"{"command-line":true}"#).unwrap_err(),
            "Invalid parameter type for 'command-line', expected: string"
        );
        assert_eq!(
            validate("set-action", r#"{"reboot":"foo"}"#).unwrap_err(),
            "Parameter 'reboot' does not accept value 'foo'"
        );
        assert_eq!(
            validate("set-action", r#"{"reboot":1}"#).unwrap_err(),
            "Invalid parameter type for 'reboot', expected: string"
        );
        assert_eq!(
            validate(
                "set-action",
                r#"{"panic":"none","reboot":"shutdown","shutdown":"pause","watchdog":"debug"}"#
            )
            .unwrap(),
            r#"{"shutdown": "pause", "reboot": "shutdown", "panic": "none", "watchdog": "debug"}"#
        );
        assert_eq!(
            validate("qmp_capabilities", r#"{"enable":["oob"]}"#).unwrap(),
            r#"{"enable": ["oob"]}"#
        );
    }

    /// Errors recorded from QEMU 7.2 for the block and qdev commands (the
    /// differential test re-checks them live). Alternates are covered by
    /// `parser_handles_alternates_bases_conditions_and_features`.
    #[test]
    fn block_and_qdev_argument_errors_match_qemu() {
        assert_eq!(
            validate("block_resize", r#"{"size":"x"}"#).unwrap_err(),
            "Invalid parameter type for 'size', expected: integer"
        );
        assert_eq!(
            validate("block_resize", "{}").unwrap_err(),
            "Parameter 'size' is missing"
        );
        // 'gen': false: device_add's arguments reach the handler as sent.
        let passed = validate("device_add", r#"{"drive":"d0","driver":"virtio-blk-pci"}"#).unwrap();
        assert!(passed.contains(r#""drive": "d0""#), "{passed}");
        assert_eq!(validate("device_add", "{}").unwrap(), "{}");
        assert_eq!(
            validate("device_del", "{}").unwrap_err(),
            "Parameter 'id' is missing"
        );
    }

    /// The QAPI features the block declarations use, on a small schema.
    #[test]
    fn parser_handles_alternates_bases_conditions_and_features() {
        let s = Schema::parse(&[(
            "t.json",
            "{ 'struct': 'B', 'data': { 'a': 'int' } }\n\
             { 'struct': 'S', 'base': 'B',\n\
               'data': { 'b': 'str', '*c': { 'type': 'bool', 'if': 'CONFIG_BLKIO' },\n\
                         '*d': { 'type': 'bool', 'if': { 'not': 'CONFIG_BLKIO' } } },\n\
               'features': [ 'f1', { 'name': 'f2', 'if': 'CONFIG_BLKIO' } ] }\n\
             { 'alternate': 'A', 'data': { 's': 'S', 'n': 'null' } }\n\
             { 'enum': 'E', 'data': [ 'x', { 'name': 'y', 'if': 'CONFIG_BLKIO' } ] }\n\
             { 'struct': 'Gone', 'data': {}, 'if': 'CONFIG_BLKIO' }\n\
             { 'command': 'c', 'data': { 'v': 'A', '*e': 'E' } }",
        )])
        .unwrap();
        let c = s.command("c").unwrap();
        let ok = |a: &str| s.validate_args(c, parse(a).as_dict().unwrap());
        // Base members first, then the struct's own, in both directions.
        assert_eq!(
            QObject::Dict(ok(r#"{"v":{"b":"x","a":1}}"#).unwrap()).to_json(),
            r#"{"v": {"a": 1, "b": "x"}}"#
        );
        assert!(ok(r#"{"v":null}"#).is_ok());
        assert_eq!(
            ok(r#"{"v":"s"}"#).unwrap_err(),
            "Invalid parameter type for 'v', expected: A"
        );
        assert_eq!(ok("{}").unwrap_err(), "Parameter 'v' is missing");
        assert_eq!(
            ok(r#"{"v":{"a":1,"b":"x","c":true}}"#).unwrap_err(),
            "Parameter 'v.c' is unexpected"
        );
        assert!(ok(r#"{"v":{"a":1,"b":"x","d":true}}"#).is_ok());
        assert_eq!(
            ok(r#"{"v":null,"e":"y"}"#).unwrap_err(),
            "Parameter 'e' does not accept value 'y'"
        );
        assert!(s.type_def("Gone").is_none());
        let intro = s.introspect().to_json();
        assert!(
            intro.contains(
                r#"{"name": "2", "members": [{"type": "4"}, {"type": "null"}], "meta-type": "alternate"}"#
            ),
            "{intro}"
        );
        assert!(intro.contains(r#""features": ["f1"]"#), "{intro}");
        assert!(!intro.contains("f2"), "{intro}");
        // An unknown condition is an error, not a guess.
        assert!(Schema::parse(&[(
            "t.json",
            "{ 'struct': 'X', 'data': {}, 'if': 'CONFIG_WHATEVER' }"
        )])
        .unwrap_err()
        .contains("CONFIG_WHATEVER"));
    }

    #[test]
    fn introspection_has_qemu_shape() {
        let intro = schema().introspect();
        let QObject::List(entries) = &intro else {
            panic!()
        };
        let by_name = |n: &str| {
            entries
                .iter()
                .find(|e| e.as_dict().unwrap().get("name").unwrap().as_str() == Some(n))
                .unwrap()
        };
        let qs = by_name("query-status").to_json();
        // query-status is the first command: its empty arg type is "0", StatusInfo "1".
        assert_eq!(
            qs,
            r#"{"name": "query-status", "ret-type": "1", "meta-type": "command", "arg-type": "0"}"#
        );
        assert_eq!(
            by_name("0").to_json(),
            r#"{"name": "0", "members": [], "meta-type": "object"}"#
        );
        let status = by_name("1").to_json();
        assert!(status.starts_with(r#"{"name": "1", "members": [{"name": "running", "type": "bool"}, {"name": "singlestep", "type": "bool"}, {"name": "status", "type": ""#), "{status}");
        let hmp = by_name("human-monitor-command").to_json();
        assert!(
            hmp.contains(r#""features": ["savevm-monitor-nodes"]"#),
            "{hmp}"
        );
        assert!(hmp.contains(r#""ret-type": "str""#), "{hmp}");
        assert_eq!(
            by_name("str").to_json(),
            r#"{"name": "str", "json-type": "string", "meta-type": "builtin"}"#
        );
        // Every type reference resolves to an entry.
        let names: HashSet<String> = entries
            .iter()
            .map(|e| {
                e.as_dict()
                    .unwrap()
                    .get("name")
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        let text = intro.to_json();
        for key in [
            "\"type\": \"",
            "\"arg-type\": \"",
            "\"ret-type\": \"",
            "\"element-type\": \"",
        ] {
            for part in text.split(key).skip(1) {
                let n = &part[..part.find('"').unwrap()];
                assert!(names.contains(n), "dangling {n}");
            }
        }
    }

    #[test]
    fn conform_reorders_and_checks() {
        let s = schema();
        let ty = s.command("query-status").unwrap().ret_type.clone().unwrap();
        let v = parse(r#"{"status":"running","running":true,"singlestep":false}"#);
        assert_eq!(
            s.conform(&v, &ty).unwrap().to_json(),
            r#"{"status": "running", "singlestep": false, "running": true}"#
        );
        assert!(s
            .conform(
                &parse(r#"{"status":"bogus","running":true,"singlestep":false}"#),
                &ty
            )
            .is_err());
        assert!(s
            .conform(&parse(r#"{"running":true,"singlestep":false}"#), &ty)
            .is_err());
        let cpus = s
            .command("query-cpus-fast")
            .unwrap()
            .ret_type
            .clone()
            .unwrap();
        let v = parse(
            r#"[{"cpu-index":0,"qom-path":"/machine/unattached/device[0]","thread-id":5,"target":"x86_64","props":{"core-id":0,"thread-id":0,"socket-id":0}}]"#,
        );
        assert!(s.conform(&v, &cpus).is_ok());
    }

    #[test]
    fn support_table_lists_everything() {
        let t = support_table_markdown();
        assert!(t.contains("| `query-status` | yes |"));
        assert!(t.contains("| `add_client` | no |"));
        assert!(t.contains("| `blockdev-add` | yes |"));
        assert!(t.contains("| `nbd-server-start` | yes |"));
        assert!(t.contains("| `block-export-add` | no |"));
        assert!(t.contains("| `SHUTDOWN` | yes |"));
    }
}
