//! The one error type of the crate.
//!
//! QEMU reports command-line errors as `LOCATION: MESSAGE`, where the location
//! is the option as written followed by its argument (`-m foo: Parameter 'size'
//! expects ...`). [`CliError`] keeps both parts; its `Display` joins them into a
//! single line, which the binary prints as `ferrovm: <error>`.

use std::fmt;

/// A command-line error: which option (and argument) it concerns, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError {
    location: Option<String>,
    message: String,
}

impl CliError {
    /// An error not tied to one option (e.g. `-append only allowed with -kernel option`).
    pub(crate) fn new(message: impl Into<String>) -> Self {
        CliError {
            location: None,
            message: message.into(),
        }
    }

    /// An error located at `option` (as written, e.g. `-m` or `--m`) and its argument.
    pub(crate) fn at(option: &str, arg: Option<&str>, message: impl Into<String>) -> Self {
        let location = match arg {
            Some(a) => format!("{option} {a}"),
            None => option.to_string(),
        };
        CliError {
            location: Some(location),
            message: message.into(),
        }
    }

    /// The option and argument the error concerns, as QEMU prints them (`-m foo`).
    pub fn location(&self) -> Option<&str> {
        self.location.as_deref()
    }

    /// The message without its location.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// Keep the error on one line whatever the user typed.
fn one_line(s: &str) -> String {
    s.replace('\r', "\\r").replace('\n', "\\n")
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Some(loc) => write!(f, "{}: {}", one_line(loc), one_line(&self.message)),
            None => write!(f, "{}", one_line(&self.message)),
        }
    }
}

impl std::error::Error for CliError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_with_location() {
        let e = CliError::at("-m", Some("foo"), "bad");
        assert_eq!(e.to_string(), "-m foo: bad");
        assert_eq!(e.location(), Some("-m foo"));
        assert_eq!(e.message(), "bad");
    }

    #[test]
    fn display_without_argument_or_location() {
        assert_eq!(CliError::at("-S", None, "x").to_string(), "-S: x");
        assert_eq!(CliError::new("plain").to_string(), "plain");
    }

    #[test]
    fn display_is_one_line() {
        let e = CliError::at("-append", Some("a\nb"), "m\nn");
        assert_eq!(e.to_string(), "-append a\\nb: m\\nn");
        assert!(!e.to_string().contains('\n'));
    }
}
