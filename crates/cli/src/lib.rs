//! ferrovm's command line: QEMU's `qemu-system-x86_64` syntax for the server
//! subset, parsed into a typed [`Config`].
//!
//! ```
//! let args = ["-machine", "q35,accel=kvm", "-m", "1G", "-smp", "2"];
//! let cli::Action::Run(cfg) = cli::parse(args.iter().map(|s| s.to_string())).unwrap() else {
//!     unreachable!()
//! };
//! assert_eq!(cfg.memory_bytes, 1 << 30);
//! assert_eq!(cfg.smp.cpus, 2);
//! ```
//!
//! Layout: `opts` and `keyval` lex QEMU's two
//! `key=value` grammars, `schema` types the keys, `table` declares every
//! option once (help, docs and dispatch come from it), and one module per
//! option family converts to the typed [`Config`].

mod block;
mod builder;
mod chardev;
mod config;
mod devices;
mod error;
mod firmware;
mod frontends;
mod help;
mod keyval;
mod machine;
mod machine_types;
mod memory;
mod misc;
mod opts;
mod qmp_options;
mod rtc;
mod runstate;
mod schema;
mod size;
mod smbios;
mod smp;
mod table;

pub use config::*;
pub use error::CliError;
pub use firmware::{validate_boot_devices, MAX_DATA_DIRS};
pub use help::{help_text, options_markdown, version_text, QEMU_COMPAT_VERSION};
pub use machine_types::{find_machine_type, machine_types, MachineType};
pub use qmp_options::command_line_options;

use builder::{Builder, Inv};
use keyval::{is_json, parse_json_object, parse_keyval};
use serde_json::Value;
use table::{Grammar, Handler, OptionDef, Parsed};

/// What the command line asks the program to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Build and run a VM.
    Run(Box<Config>),
    /// Print [`version_text`] and exit 0.
    Version,
    /// Print [`help_text`] and exit 0.
    Help,
    /// Print this text and exit 0 (`-machine help`, `-accel help`).
    Print(String),
}

/// Parse the arguments (without `argv[0]`).
///
/// As in QEMU, every option name and argument count is checked first, then
/// options are applied in order; `-version` and `-h` end parsing where they
/// stand. Errors are one line (see [`CliError`]); nothing panics.
pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Action, CliError> {
    let args: Vec<String> = args.into_iter().collect();
    let mut steps: Vec<(&'static OptionDef, Inv)> = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let written = &args[i];
        i += 1;
        let Some(name) = written.strip_prefix('-') else {
            let shown = if written.is_empty() { "''" } else { written };
            return Err(CliError::new(format!(
                "{shown}: positional disk images (QEMU's -hda shorthand) are not supported by ferrovm"
            )));
        };
        let name = name.strip_prefix('-').unwrap_or(name);
        let Some(def) = table::find(name) else {
            let msg = if table::UNSUPPORTED.contains(&name) {
                "option is not supported by ferrovm"
            } else {
                "invalid option"
            };
            return Err(CliError::at(written, None, msg));
        };
        let arg = if def.takes_arg() {
            let Some(a) = args.get(i) else {
                return Err(CliError::at(written, None, "requires an argument"));
            };
            i += 1;
            Some(a.as_str())
        } else {
            None
        };
        steps.push((def, Inv::new(written, arg)));
    }

    let mut b = Builder::new();
    for (def, inv) in &steps {
        match def.handler {
            Handler::Version => return Ok(Action::Version),
            Handler::Help => return Ok(Action::Help),
            Handler::Run(f) => {
                let parsed = apply_grammar(&mut b, def.grammar, inv)?;
                f(&mut b, inv, parsed)?;
                if let Some(text) = b.print_and_exit.take() {
                    return Ok(Action::Print(text));
                }
            }
        }
    }
    Ok(Action::Run(Box::new(b.finish()?)))
}

/// Read an option's argument according to its grammar.
fn apply_grammar(b: &mut Builder, g: Grammar, inv: &Inv) -> Result<Parsed, CliError> {
    let arg = inv.arg();
    let with_warnings = |b: &mut Builder, o: schema::Opts| {
        for w in &o.warnings {
            b.warn(inv, w);
        }
        o
    };
    Ok(match g {
        Grammar::Flag | Grammar::Raw(_) => Parsed::None,
        Grammar::Opts(s) => {
            let o = s.parse(arg).map_err(|e| inv.err(e))?;
            Parsed::Opts(with_warnings(b, o))
        }
        Grammar::JsonOrOpts(_) | Grammar::JsonOrKeyval(_) if is_json(arg) => {
            Parsed::Json(parse_json_object(arg).map_err(|e| inv.err(e))?)
        }
        Grammar::JsonOrOpts(s) => {
            let o = with_warnings(b, s.parse(arg).map_err(|e| inv.err(e))?);
            let mut map = serde_json::Map::new();
            for (k, v) in o.raw {
                map.insert(k, Value::String(v));
            }
            Parsed::Json(map)
        }
        Grammar::JsonOrKeyval(implied) => {
            Parsed::Json(parse_keyval(arg, implied).map_err(|e| inv.err(e))?)
        }
    })
}
