#![allow(dead_code)]

use cli::{parse, Action, Config};

pub fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// Parse and expect a VM configuration.
pub fn run(a: &[&str]) -> Config {
    match parse(args(a)) {
        Ok(Action::Run(c)) => *c,
        other => panic!("{a:?}: expected Run, got {other:?}"),
    }
}

/// Parse and expect an error; returns its one-line text.
pub fn err(a: &[&str]) -> String {
    match parse(args(a)) {
        Err(e) => {
            let s = e.to_string();
            assert!(!s.contains('\n'), "multi-line error: {s:?}");
            s
        }
        Ok(other) => panic!("{a:?}: expected an error, got {other:?}"),
    }
}
