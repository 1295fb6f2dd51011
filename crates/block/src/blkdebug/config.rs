//! blkdebug's rule file: QEMU 7.2's config-file syntax (util/qemu-config.c
//! `qemu_config_foreach`), with its `sscanf` quirks kept, since a file that
//! QEMU reads must read the same here:
//!
//! ```text
//! # comment
//! [inject-error]
//! event = "read_aio"
//! errno = "5"
//! ```
//!
//! A line is read as `sscanf(line, " %63s = \"%1023[^\"]\"")`, else as
//! `" %63s = \"\""`, which assigns the first word whatever follows it, so
//! `event=5` is an option named `event=5` with an empty value.

/// One `[group]` section: its name, the `"id"` of `[group "id"]`, and its
/// `key = "value"` lines in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub group: String,
    pub id: Option<String>,
    pub entries: Vec<(String, String)>,
}

/// fgets' buffer: a longer line is read as several.
const LINE_MAX: usize = 1023;

/// Splits `text` into lines the way `fgets(line, 1024, fp)` does.
fn fgets_lines(text: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let nl = rest.iter().position(|&b| b == b'\n').map(|p| p + 1);
        let n = nl.unwrap_or(rest.len()).min(LINE_MAX);
        out.push(&rest[..n]);
        rest = &rest[n..];
    }
    out
}

/// C's `isspace` in the "C" locale, as `sscanf` uses it.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

fn skip_space(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|&&b| is_space(b)).count();
    &s[n..]
}

/// `%Ns`: skips white space, then up to `max` non-space bytes.
fn scan_word(s: &[u8], max: usize) -> Option<(&[u8], &[u8])> {
    let s = skip_space(s);
    let n = s.iter().take(max).take_while(|&&b| !is_space(b)).count();
    (n > 0).then(|| (&s[..n], &s[n..]))
}

/// `%N[^c]`: up to `max` bytes other than `c`, at least one.
fn scan_until(s: &[u8], c: u8, max: usize) -> Option<(&[u8], &[u8])> {
    let n = s.iter().take(max).take_while(|&&b| b != c).count();
    (n > 0).then(|| (&s[..n], &s[n..]))
}

/// A literal in a format: white space in it matches any amount (also none).
fn scan_lit<'a>(mut s: &'a [u8], lit: &[u8]) -> Option<&'a [u8]> {
    for &c in lit {
        if is_space(c) {
            s = skip_space(s);
        } else if s.first() == Some(&c) {
            s = &s[1..];
        } else {
            return None;
        }
    }
    Some(s)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `[%63s "%63[^"]"]`, else `[%63[^]]]`: the group name and id.
fn scan_header(line: &[u8]) -> Option<(String, Option<String>)> {
    let body = &line[1..];
    if let Some((group, rest)) = scan_word(body, 63) {
        let with_id = scan_lit(rest, b" \"").and_then(|r| scan_until(r, b'"', 63));
        if let Some((id, _)) = with_id {
            return Some((text(group), Some(text(id))));
        }
    }
    scan_until(body, b']', 63).map(|(g, _)| (text(g), None))
}

/// `" %63s = \"%1023[^\"]\""` or `" %63s = \"\""`: the key and value
/// (sscanf counts assignments: a missing closing quote still assigns).
fn scan_entry(line: &[u8]) -> Option<(String, String)> {
    let (key, rest) = scan_word(line, 63)?;
    let value = scan_lit(rest, b" = \"")
        .and_then(|r| scan_until(r, b'"', 1023))
        .map_or_else(String::new, |(v, _)| text(v));
    Some((text(key), value))
}

/// `qemu_config_foreach`: the sections of `text`, or the error QEMU
/// reports ("no group defined", "parse error"). `check` is called for
/// each finished section in order (QEMU's callback: it parses the options
/// then, so a bad option stops the file there).
pub fn parse(
    text: &[u8],
    mut check: impl FnMut(&Section) -> Result<(), String>,
) -> Result<Vec<Section>, String> {
    let mut out: Vec<Section> = Vec::new();
    let mut cur: Option<Section> = None;
    for line in fgets_lines(text) {
        match line.first() {
            Some(b'\n') | Some(b'#') => continue,
            Some(b'[') => {
                if let Some((group, id)) = scan_header(line) {
                    if let Some(prev) = cur.take() {
                        check(&prev)?;
                        out.push(prev);
                    }
                    cur = Some(Section {
                        group,
                        id,
                        entries: Vec::new(),
                    });
                    continue;
                }
            }
            _ => {}
        }
        match scan_entry(line) {
            Some(kv) => match cur.as_mut() {
                Some(s) => s.entries.push(kv),
                None => return Err("no group defined".into()),
            },
            None => return Err("parse error".into()),
        }
    }
    if let Some(last) = cur {
        check(&last)?;
        out.push(last);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sections(t: &str) -> Result<Vec<Section>, String> {
        parse(t.as_bytes(), |_| Ok(()))
    }

    #[test]
    fn reads_groups_and_entries() {
        let s = sections(
            "\n# c\n[inject-error]\nevent = \"read_aio\"\n  errno = \"5\"\n\n[set-state \"x\"]\nstate = \"\"\n",
        )
        .unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].group, "inject-error");
        assert_eq!(s[0].id, None);
        assert_eq!(
            s[0].entries,
            vec![
                ("event".into(), "read_aio".into()),
                ("errno".into(), "5".into())
            ]
        );
        assert_eq!(s[1].group, "set-state");
        assert_eq!(s[1].id.as_deref(), Some("x"));
        assert_eq!(s[1].entries, vec![("state".into(), "".into())]);
    }

    #[test]
    fn keeps_the_sscanf_quirks() {
        // The first word is the key whatever follows it.
        let s = sections("[a]\nevent=5\nk = unquoted\n").unwrap();
        assert_eq!(
            s[0].entries,
            vec![("event=5".into(), "".into()), ("k".into(), "".into())]
        );
        // A header sscanf cannot read is an entry line.
        let s = sections("[a]\n[]\n").unwrap();
        assert_eq!(s[0].entries, vec![("[]".into(), "".into())]);
        // A group name may hold spaces when it has no id.
        assert_eq!(sections("[a b]\n").unwrap()[0].group, "a b");
    }

    #[test]
    fn errors_as_qemu() {
        assert_eq!(sections("event = \"x\"\n").unwrap_err(), "no group defined");
        assert_eq!(sections("[a]\n   \n").unwrap_err(), "parse error");
        // The callback's error stops the file at the next header.
        let r = parse(b"[a]\nx = \"1\"\n[b]\n   \n", |s| {
            Err(format!("There is no option group '{}'", s.group))
        });
        assert_eq!(r.unwrap_err(), "There is no option group 'a'");
    }

    #[test]
    fn long_lines_split_as_fgets_does() {
        let long = format!("[a]\nk = \"{}\"\n", "v".repeat(2000));
        let s = sections(&long);
        // The tail of the line is read as a second line: a key of 63 'v's.
        let s = s.unwrap();
        assert_eq!(s[0].entries[0].1.len(), LINE_MAX - 5);
        assert_eq!(s[0].entries[1].0.len(), 63);
    }
}
