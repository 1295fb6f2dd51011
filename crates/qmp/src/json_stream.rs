//! Incremental JSON reader with QEMU 7.2's json-lexer / json-streamer /
//! json-parser semantics.
//!
//! Bytes are fed in arbitrary chunks; complete top-level values (or errors)
//! come out in order.  What is reproduced, because QMP clients can observe it:
//!
//! * **Lexing** follows QEMU's state table: single-quoted strings and the
//!   `\'` escape are accepted; bytes `0x20..=0xFD` may appear in strings
//!   (UTF-8 is validated later); keywords are `[a-z]+`; `%` interpolation is
//!   *not* enabled (QMP never enables it), so `%` is a lexical error.
//! * **Message boundaries** come from counting braces and brackets only: a
//!   message ends when both counts are back to zero, or when either goes
//!   negative.  Only then is the message's value — or its *first* syntax
//!   error — emitted.
//! * **Errors** carry QEMU's `desc` text (`JSON parse error, ...`).  A lexical
//!   error (`stray '...'`) is reported at once, throws away the message so
//!   far, and puts the lexer into recovery: it skips input until a structural
//!   character (`{ } [ ] : ,`), an ASCII control character other than TAB, or
//!   a `0xFE`/`0xFF` byte, and restarts there.
//! * **Limits**: 64 MiB of token text per message, 2 Mi tokens per message,
//!   nesting deeper than 1024; each yields QEMU's error and discards the
//!   message so far (its remaining tokens are then read as new messages,
//!   exactly as QEMU does).  A single token longer than 64 MiB is cut off
//!   with the same "token size" error.  Memory per stream is therefore
//!   bounded by the value being built (≤ 64 MiB of text).

use std::collections::VecDeque;

use crate::qobject::{c_string_lossy, is_valid_codepoint, mod_utf8_codepoint, QDict, QObject};

/// `MAX_TOKEN_SIZE` (json-lexer.c, json-streamer.c).
pub const MAX_TOKEN_SIZE: usize = 64 << 20;
/// `MAX_TOKEN_COUNT` (json-streamer.c).
pub const MAX_TOKEN_COUNT: usize = 2 << 20;
/// `MAX_NESTING` (json-streamer.c).
pub const MAX_NESTING: i64 = 1 << 10;

/// One item produced by the stream: a value, or the `desc` of the error QEMU
/// would report (its class is always GenericError).
pub type StreamItem = Result<QObject, String>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lex {
    Recovery,
    DqString,
    DqEscape,
    SqString,
    SqEscape,
    Zero,
    ExpDigits,
    ExpSign,
    ExpE,
    Mantissa,
    MantissaDigits,
    Digits,
    Sign,
    Keyword,
    Start,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tok {
    LCurly,
    RCurly,
    LSquare,
    RSquare,
    Colon,
    Comma,
    Integer,
    Float,
    Keyword,
    String,
}

/// Result of one lexer table lookup.
enum Step {
    /// Consume the byte and go to the state.
    Go(Lex),
    /// Consume the byte; it completes a token.
    Emit(Tok),
    /// The token ended *before* this byte: emit it, reprocess the byte.
    EmitLookahead(Tok),
    /// Recovery is over: reprocess the byte in the start state.
    RestartLookahead,
    /// Lexical error: the byte is consumed into the bad token.
    Error,
}

fn step(state: Lex, b: u8) -> Step {
    use Step::*;
    match state {
        Lex::Recovery => match b {
            b'\t' => Go(Lex::Recovery),
            0..=0x1F | 0xFE | 0xFF => RestartLookahead,
            b'[' | b']' | b'{' | b'}' | b':' | b',' => RestartLookahead,
            _ => Go(Lex::Recovery),
        },
        Lex::DqEscape => match b {
            0x20..=0xFD => Go(Lex::DqString),
            _ => Error,
        },
        Lex::DqString => match b {
            b'\\' => Go(Lex::DqEscape),
            b'"' => Emit(Tok::String),
            0x20..=0xFD => Go(Lex::DqString),
            _ => Error,
        },
        Lex::SqEscape => match b {
            0x20..=0xFD => Go(Lex::SqString),
            _ => Error,
        },
        Lex::SqString => match b {
            b'\\' => Go(Lex::SqEscape),
            b'\'' => Emit(Tok::String),
            0x20..=0xFD => Go(Lex::SqString),
            _ => Error,
        },
        Lex::Zero => match b {
            b'0'..=b'9' => Error,
            b'.' => Go(Lex::Mantissa),
            _ => EmitLookahead(Tok::Integer),
        },
        Lex::ExpDigits => match b {
            b'0'..=b'9' => Go(Lex::ExpDigits),
            _ => EmitLookahead(Tok::Float),
        },
        Lex::ExpSign => match b {
            b'0'..=b'9' => Go(Lex::ExpDigits),
            _ => Error,
        },
        Lex::ExpE => match b {
            b'-' | b'+' => Go(Lex::ExpSign),
            b'0'..=b'9' => Go(Lex::ExpDigits),
            _ => Error,
        },
        Lex::MantissaDigits => match b {
            b'0'..=b'9' => Go(Lex::MantissaDigits),
            b'e' | b'E' => Go(Lex::ExpE),
            _ => EmitLookahead(Tok::Float),
        },
        Lex::Mantissa => match b {
            b'0'..=b'9' => Go(Lex::MantissaDigits),
            _ => Error,
        },
        Lex::Digits => match b {
            b'0'..=b'9' => Go(Lex::Digits),
            b'e' | b'E' => Go(Lex::ExpE),
            b'.' => Go(Lex::Mantissa),
            _ => EmitLookahead(Tok::Integer),
        },
        Lex::Sign => match b {
            b'0' => Go(Lex::Zero),
            b'1'..=b'9' => Go(Lex::Digits),
            _ => Error,
        },
        Lex::Keyword => match b {
            b'a'..=b'z' => Go(Lex::Keyword),
            _ => EmitLookahead(Tok::Keyword),
        },
        Lex::Start => match b {
            b'"' => Go(Lex::DqString),
            b'\'' => Go(Lex::SqString),
            b'0' => Go(Lex::Zero),
            b'1'..=b'9' => Go(Lex::Digits),
            b'-' => Go(Lex::Sign),
            b'{' => Emit(Tok::LCurly),
            b'}' => Emit(Tok::RCurly),
            b'[' => Emit(Tok::LSquare),
            b']' => Emit(Tok::RSquare),
            b',' => Emit(Tok::Comma),
            b':' => Emit(Tok::Colon),
            b'a'..=b'z' => Go(Lex::Keyword),
            b' ' | b'\t' | b'\r' | b'\n' => Go(Lex::Start),
            _ => Error,
        },
    }
}

/// The incremental JSON reader.  Feed bytes with [`JsonStream::feed`], take
/// results with [`JsonStream::next_item`] (or iterate with `drain`).
pub struct JsonStream {
    state: Lex,
    token: Vec<u8>,
    brace_count: i64,
    bracket_count: i64,
    token_count: usize,
    token_size: usize,
    parser: Parser,
    out: VecDeque<StreamItem>,
}

impl Default for JsonStream {
    fn default() -> Self {
        Self::new()
    }
}

impl JsonStream {
    pub fn new() -> Self {
        JsonStream {
            state: Lex::Start,
            token: Vec::new(),
            brace_count: 0,
            bracket_count: 0,
            token_count: 0,
            token_size: 0,
            parser: Parser::default(),
            out: VecDeque::new(),
        }
    }

    /// Feeds bytes; any number of complete values or errors may result.
    pub fn feed(&mut self, data: &[u8]) {
        for &b in data {
            self.feed_byte(b);
        }
    }

    /// Next completed value or error, in input order.
    pub fn next_item(&mut self) -> Option<StreamItem> {
        self.out.pop_front()
    }

    /// Takes every completed item.
    pub fn drain(&mut self) -> impl Iterator<Item = StreamItem> + '_ {
        self.out.drain(..)
    }

    /// Number of completed items waiting to be taken.
    pub fn pending(&self) -> usize {
        self.out.len()
    }

    /// True while part of a message has been read (lexer mid-token or
    /// unbalanced brackets).
    pub fn in_message(&self) -> bool {
        self.token_count > 0 || !matches!(self.state, Lex::Start | Lex::Recovery)
    }

    fn feed_byte(&mut self, b: u8) {
        loop {
            match step(self.state, b) {
                Step::Go(next) => {
                    match next {
                        Lex::Start | Lex::Recovery => self.token.clear(),
                        _ => self.token.push(b),
                    }
                    self.state = next;
                    break;
                }
                Step::Emit(tok) => {
                    self.token.push(b);
                    self.process_token(tok);
                    self.token.clear();
                    self.state = Lex::Start;
                    break;
                }
                Step::EmitLookahead(tok) => {
                    self.process_token(tok);
                    self.token.clear();
                    self.state = Lex::Start;
                }
                Step::RestartLookahead => {
                    self.token.clear();
                    self.state = Lex::Start;
                }
                Step::Error => {
                    self.token.push(b);
                    let desc = format!("JSON parse error, stray '{}'", c_string_lossy(&self.token));
                    self.emit(Err(desc));
                    self.token.clear();
                    self.state = Lex::Recovery;
                    break;
                }
            }
        }
        if self.token.len() > MAX_TOKEN_SIZE {
            // QEMU hands the oversized partial token to the streamer, whose
            // size check then fails; the lexer restarts in the start state.
            self.emit(Err("JSON token size limit exceeded".into()));
            self.token = Vec::new();
            self.state = Lex::Start;
        }
    }

    /// `json_message_process_token()`.
    fn process_token(&mut self, tok: Tok) {
        match tok {
            Tok::LCurly => self.brace_count += 1,
            Tok::RCurly => self.brace_count -= 1,
            Tok::LSquare => self.bracket_count += 1,
            Tok::RSquare => self.bracket_count -= 1,
            _ => {}
        }
        if self.token_size + self.token.len() + 1 > MAX_TOKEN_SIZE {
            self.emit(Err("JSON token size limit exceeded".into()));
            return;
        }
        if self.token_count + 1 > MAX_TOKEN_COUNT {
            self.emit(Err("JSON token count limit exceeded".into()));
            return;
        }
        if self.bracket_count + self.brace_count > MAX_NESTING {
            self.emit(Err("JSON nesting depth limit exceeded".into()));
            return;
        }
        self.parser.feed(tok, &self.token);
        self.token_size += self.token.len();
        self.token_count += 1;
        if (self.brace_count > 0 || self.bracket_count > 0)
            && self.brace_count >= 0
            && self.bracket_count >= 0
        {
            return;
        }
        let result = self.parser.finish();
        self.emit(result);
    }

    /// Emits a result and resets the message state (`out_emit:`).
    fn emit(&mut self, item: StreamItem) {
        self.brace_count = 0;
        self.bracket_count = 0;
        self.token_count = 0;
        self.token_size = 0;
        self.parser = Parser::default();
        self.out.push_back(item);
    }
}

/// Where the parser is inside a container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    /// Just after `[` / `{`: a closer or the first element/key may follow.
    AfterOpen,
    /// After `,` in an array, or `:` in an object: a value must follow.
    NeedValue,
    /// After `,` in an object: a key must follow.
    NeedKey,
    /// An object key (any value, rejected later unless a string) is being parsed.
    ParsingKey,
    /// After a key: `:` must follow.
    AfterKey,
    /// After an element or member value: `,` or the closer must follow.
    AfterValue,
}

enum Frame {
    Array(Vec<QObject>, Slot),
    Object(QDict, Option<String>, Slot),
}

/// An incremental equivalent of QEMU 7.2's recursive-descent parser: tokens
/// are consumed as they arrive, and the first error is kept, exactly as the
/// recursive parser (whose `parse_error` keeps the first error) reports it
/// when it runs over the whole message at once.
#[derive(Default)]
struct Parser {
    stack: Vec<Frame>,
    done: Option<QObject>,
    error: Option<String>,
}

impl Parser {
    fn fail(&mut self, msg: String) {
        if self.error.is_none() {
            self.error = Some(format!("JSON parse error, {msg}"));
        }
        self.stack.clear();
    }

    fn finish(&mut self) -> StreamItem {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        match self.done.take() {
            Some(v) => Ok(v),
            None => Err("JSON parse error, premature EOI".into()),
        }
    }

    fn feed(&mut self, tok: Tok, text: &[u8]) {
        if self.error.is_some() || self.done.is_some() {
            return;
        }
        let slot = match self.stack.last() {
            None => Slot::NeedValue,
            Some(Frame::Array(_, s)) | Some(Frame::Object(_, _, s)) => *s,
        };
        let is_object = matches!(self.stack.last(), Some(Frame::Object(..)));
        match slot {
            Slot::AfterOpen if is_object => {
                if tok == Tok::RCurly {
                    self.close();
                } else {
                    self.set_slot(Slot::ParsingKey);
                    self.begin_value(tok, text);
                }
            }
            Slot::AfterOpen => {
                if tok == Tok::RSquare {
                    self.close();
                } else {
                    self.set_slot(Slot::NeedValue);
                    self.begin_value(tok, text);
                }
            }
            Slot::NeedKey => {
                self.set_slot(Slot::ParsingKey);
                self.begin_value(tok, text);
            }
            Slot::NeedValue | Slot::ParsingKey => self.begin_value(tok, text),
            Slot::AfterKey => {
                if tok == Tok::Colon {
                    self.set_slot(Slot::NeedValue);
                } else {
                    self.fail("missing : in object pair".into());
                }
            }
            Slot::AfterValue if is_object => match tok {
                Tok::RCurly => self.close(),
                Tok::Comma => self.set_slot(Slot::NeedKey),
                _ => self.fail("expected separator in dict".into()),
            },
            Slot::AfterValue => match tok {
                Tok::RSquare => self.close(),
                Tok::Comma => self.set_slot(Slot::NeedValue),
                _ => self.fail("expected separator in list".into()),
            },
        }
    }

    fn set_slot(&mut self, slot: Slot) {
        match self.stack.last_mut() {
            Some(Frame::Array(_, s)) | Some(Frame::Object(_, _, s)) => *s = slot,
            None => {}
        }
    }

    fn close(&mut self) {
        match self.stack.pop() {
            Some(Frame::Array(items, _)) => self.complete(QObject::List(items)),
            Some(Frame::Object(dict, _, _)) => self.complete(QObject::Dict(dict)),
            None => {}
        }
    }

    /// `parse_value()` on the first token of a value.
    fn begin_value(&mut self, tok: Tok, text: &[u8]) {
        let v = match tok {
            Tok::LCurly => {
                self.stack
                    .push(Frame::Object(QDict::new(), None, Slot::AfterOpen));
                return;
            }
            Tok::LSquare => {
                self.stack.push(Frame::Array(Vec::new(), Slot::AfterOpen));
                return;
            }
            Tok::String => match parse_string(text) {
                Ok(s) => QObject::Str(s),
                Err(e) => return self.fail(e),
            },
            Tok::Integer => parse_integer(text),
            Tok::Float => QObject::Double(parse_float(text)),
            Tok::Keyword => match text {
                b"true" => QObject::Bool(true),
                b"false" => QObject::Bool(false),
                b"null" => QObject::Null,
                _ => return self.fail(format!("invalid keyword '{}'", c_string_lossy(text))),
            },
            Tok::RCurly | Tok::RSquare | Tok::Colon | Tok::Comma => {
                return self.fail("expecting value".into());
            }
        };
        self.complete(v);
    }

    /// A value is complete: hand it to the enclosing container.
    fn complete(&mut self, v: QObject) {
        let Some(top) = self.stack.last_mut() else {
            self.done = Some(v);
            return;
        };
        let err = match top {
            Frame::Array(items, slot) => {
                items.push(v);
                *slot = Slot::AfterValue;
                None
            }
            Frame::Object(_, key, slot) if *slot == Slot::ParsingKey => match v {
                QObject::Str(s) => {
                    *key = Some(s);
                    *slot = Slot::AfterKey;
                    None
                }
                _ => Some("key is not a string in object"),
            },
            Frame::Object(dict, key, slot) => {
                let k = key.take().unwrap_or_default();
                if dict.contains_key(&k) {
                    Some("duplicate key")
                } else {
                    dict.insert(k, v);
                    *slot = Slot::AfterValue;
                    None
                }
            }
        };
        if let Some(e) = err {
            self.fail(e.to_string());
        }
    }
}

fn cvt4hex(s: &[u8]) -> Option<u32> {
    let mut cp = 0u32;
    for i in 0..4 {
        let d = (*s.get(i)? as char).to_digit(16)?;
        cp = (cp << 4) | d;
    }
    Some(cp)
}

/// `parse_string()`: unescapes a string token (with its quotes).
fn parse_string(token: &[u8]) -> Result<String, String> {
    let quote = token[0];
    let body = &token[1..];
    let mut out = String::new();
    let mut i = 0;
    while i < body.len() && body[i] != quote {
        let c = body[i];
        if c == b'\\' {
            let beg = i;
            i += 1;
            let e = body.get(i).copied().unwrap_or(0);
            i += 1;
            match e {
                b'"' => out.push('"'),
                b'\'' => out.push('\''),
                b'\\' => out.push('\\'),
                b'/' => out.push('/'),
                b'b' => out.push('\u{8}'),
                b'f' => out.push('\u{c}'),
                b'n' => out.push('\n'),
                b'r' => out.push('\r'),
                b't' => out.push('\t'),
                b'u' => {
                    // QEMU reads 4 bytes regardless (they may include the
                    // closing quote), then looks for a trailing surrogate.
                    let mut cp = cvt4hex(&body[i..]).map(|c| c as i64).unwrap_or(-1);
                    i += 4;
                    if (0xD800..=0xDBFF).contains(&cp)
                        && body.get(i) == Some(&b'\\')
                        && body.get(i + 1) == Some(&b'u')
                    {
                        cp = 0x10000 + ((cp & 0x3FF) << 10);
                        match cvt4hex(body.get(i + 2..).unwrap_or(&[])) {
                            Some(t) if (0xDC00..=0xDFFF).contains(&t) => {
                                cp |= (t & 0x3FF) as i64;
                                i += 6;
                            }
                            _ => cp = -1,
                        }
                    }
                    let end = i.min(body.len());
                    let valid = cp >= 0 && is_valid_codepoint(cp as u32);
                    match char::from_u32(cp as u32).filter(|_| valid) {
                        Some(ch) => out.push(ch),
                        None => {
                            return Err(format!(
                                "{} is not a valid Unicode character",
                                c_string_lossy(&body[beg..end])
                            ))
                        }
                    }
                }
                _ => return Err("invalid escape sequence in string".into()),
            }
        } else {
            let (cp, len) = mod_utf8_codepoint(&body[i..]);
            if c == 0 {
                // Cannot happen: the lexer rejects control characters.
                return Err("invalid UTF-8 sequence in string".into());
            }
            match cp.and_then(char::from_u32) {
                Some(ch) => out.push(ch),
                None => return Err("invalid UTF-8 sequence in string".into()),
            }
            i += len;
        }
    }
    Ok(out)
}

/// JSON_INTEGER: `int64` if possible, else `uint64`, else `double`.
fn parse_integer(text: &[u8]) -> QObject {
    let s = std::str::from_utf8(text).unwrap_or("0");
    if let Ok(i) = s.parse::<i64>() {
        return QObject::Int(i);
    }
    if !s.starts_with('-') {
        if let Ok(u) = s.parse::<u64>() {
            return QObject::UInt(u);
        }
    }
    QObject::Double(parse_float(text))
}

fn parse_float(text: &[u8]) -> f64 {
    std::str::from_utf8(text)
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &[u8]) -> Vec<String> {
        let mut js = JsonStream::new();
        js.feed(input);
        js.drain()
            .map(|r| match r {
                Ok(v) => format!("ok {}", v.to_json()),
                Err(e) => format!("err {e}"),
            })
            .collect()
    }

    fn run_bytewise(input: &[u8]) -> Vec<String> {
        let mut js = JsonStream::new();
        for b in input {
            js.feed(std::slice::from_ref(b));
        }
        js.drain()
            .map(|r| match r {
                Ok(v) => format!("ok {}", v.to_json()),
                Err(e) => format!("err {e}"),
            })
            .collect()
    }

    fn check(input: &[u8], want: &[&str]) {
        assert_eq!(
            run(input),
            want,
            "input {:?}",
            String::from_utf8_lossy(input)
        );
        assert_eq!(
            run_bytewise(input),
            want,
            "bytewise {:?}",
            String::from_utf8_lossy(input)
        );
    }

    const EV: &str = "err JSON parse error, expecting value";

    /// Every case below was sent to QEMU 7.2 and its answers recorded.
    #[test]
    fn qemu_malformed_cases() {
        check(b"{]\n", &[EV]);
        check(b"{\xff", &["err JSON parse error, stray '\u{fffd}'"]);
        check(b"{\x01", &["err JSON parse error, stray '\u{1}'"]);
        check(
            b"{'bad \xff",
            &["err JSON parse error, stray ''bad \u{fffd}'"],
        );
        check(
            b"{'execute': 'nonexistent', 'id':'\n",
            &["err JSON parse error, stray ''\n'"],
        );
        check(b"%p", &["err JSON parse error, stray '%'"]);
        check(b"foo ", &["err JSON parse error, invalid keyword 'foo'"]);
        check(b"foo", &[]);
        check(b"}", &[EV]);
        check(b"]", &[EV]);
        check(
            b"{\"a\" 1}",
            &["err JSON parse error, missing : in object pair"],
        );
        check(b"{\"a\":}", &[EV]);
        check(
            b"{1:2}",
            &["err JSON parse error, key is not a string in object"],
        );
        check(b"{\"a\":1,}", &[EV]);
        check(b"[1,]", &[EV]);
        check(
            b"[1 2]",
            &["err JSON parse error, expected separator in list"],
        );
        check(
            b"{\"a\":1 \"b\":2}",
            &["err JSON parse error, expected separator in dict"],
        );
        check(
            b"{\"a\":1,\"a\":2}",
            &["err JSON parse error, duplicate key"],
        );
        check(
            b"\"\\uFFFF\"",
            &["err JSON parse error, \\uFFFF is not a valid Unicode character"],
        );
        check(
            b"\"\\uD800\"",
            &["err JSON parse error, \\uD800 is not a valid Unicode character"],
        );
        check(
            b"\"\\uDE00\"",
            &["err JSON parse error, \\uDE00 is not a valid Unicode character"],
        );
        check(
            b"\"\\uD83Dx\"",
            &["err JSON parse error, \\uD83D is not a valid Unicode character"],
        );
        check(
            b"\"\\u12\"",
            &["err JSON parse error, \\u12\" is not a valid Unicode character"],
        );
        check(
            b"\"\\x\"",
            &["err JSON parse error, invalid escape sequence in string"],
        );
        for bad in [
            &b"\"\xc0\x81\""[..],
            b"\"\xed\xa0\x80\"",
            b"\"\xef\xbf\xbe\"",
            b"\"\x80\"",
            b"\"\xf4\x90\x80\x80\"",
            b"\"\xc3\"",
        ] {
            check(
                bad,
                &["err JSON parse error, invalid UTF-8 sequence in string"],
            );
        }
        check(b"{\"id\":01}", &["err JSON parse error, stray '01'", EV]);
        check(b"{\"id\":-}", &["err JSON parse error, stray '-}'"]);
        check(b"{\"id\":1.}", &["err JSON parse error, stray '1.}'"]);
        check(b"{\"id\":1e}", &["err JSON parse error, stray '1e}'"]);
        check(b"{\"id\":TRUE}", &["err JSON parse error, stray 'T'", EV]);
        check(
            b"{\"id\":nul}",
            &["err JSON parse error, invalid keyword 'nul'"],
        );
        check(
            b"{\"id\":\"a\tb\"}",
            &["err JSON parse error, stray '\"a\t'", EV],
        );
        check(
            b"{\"id\":\"\xfe\"}",
            &["err JSON parse error, stray '\"\u{fffd}'", EV],
        );
        check(b"\x00", &["err JSON parse error, stray ''"]);
        // (QEMU's session was in recovery here, so it skipped "abc".)
        check(
            b"abc\xff{\"id\":1}",
            &[
                "err JSON parse error, invalid keyword 'abc'",
                "err JSON parse error, stray '\u{fffd}'",
                "ok {\"id\": 1}",
            ],
        );
        check(
            b"\xffabc\xff{\"id\":1}",
            &[
                "err JSON parse error, stray '\u{fffd}'",
                "err JSON parse error, stray '\u{fffd}'",
                "ok {\"id\": 1}",
            ],
        );
        check(
            b"x{\"id\":2}",
            &[
                "err JSON parse error, invalid keyword 'x'",
                "ok {\"id\": 2}",
            ],
        );
        check(
            b"@@@ {\"id\":3}",
            &["err JSON parse error, stray '@'", "ok {\"id\": 3}"],
        );
        check(b"[[[[]]]]]]]", &["ok [[[[]]]]", EV, EV, EV]);
        check(b"{\"id\":%d}", &["err JSON parse error, stray '%'", EV]);
        // Recovery skips everything up to a structural character.
        check(
            b"'\n%p null {}",
            &["err JSON parse error, stray ''\n'", "ok {}"],
        );
    }

    #[test]
    fn values_and_numbers() {
        check(
            b"{'execute':'q','id':'it\"s'}",
            &["ok {\"execute\": \"q\", \"id\": \"it\\\"s\"}"],
        );
        check(b"1 ", &["ok 1"]);
        check(b"\"abc\"", &["ok \"abc\""]);
        check(b"[1,2.5,0.1,1e2,-0,-0.0,18446744073709551615,18446744073709551616,-9223372036854775809] ",
            &["ok [1, 2.5, 0.10000000000000001, 100, 0, -0, 18446744073709551615, 1.8446744073709552e+19, -9.2233720368547758e+18]"]);
        check(
            b"[1e400, 1E+2, -1.5e-3, 1e-400, 9223372036854775808, -9223372036854775808]",
            &["ok [inf, 100, -0.0015, 0, 9223372036854775808, -9223372036854775808]"],
        );
        check(b"[\"\\u0000\", \"\xc0\x80\", \"\\uD83D\\uDE00\", \"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"]",
            &["ok [\"\\u0000\", \"\\u0000\", \"\\uD83D\\uDE00\", \"\\u00E9\\u20AC\\uD83D\\uDE00\"]"]);
        check(
            b"\"a\\/b\\'c'd\\b\\f\\n\\r\\t\x7f\"",
            &["ok \"a/b'c'd\\b\\f\\n\\r\\t\\u007F\""],
        );
        check(
            b"{\"a\":1} {\"b\":[true,false,null]}",
            &["ok {\"a\": 1}", "ok {\"b\": [true, false, null]}"],
        );
        check(b"  \t\r\n  ", &[]);
        check(b"{}[]", &["ok {}", "ok []"]);
    }

    #[test]
    fn split_across_feeds() {
        let mut js = JsonStream::new();
        js.feed(b"{\"execute\":\"query-name\",");
        assert_eq!(js.pending(), 0);
        assert!(js.in_message());
        js.feed(b"\"id\":\"split\"}");
        assert_eq!(
            js.next_item().unwrap().unwrap().to_json(),
            "{\"execute\": \"query-name\", \"id\": \"split\"}"
        );
        assert!(!js.in_message());
    }

    #[test]
    fn first_error_wins_and_nested_keys() {
        check(b"{]}", &[EV, EV]);
        check(
            b"{{}:1}",
            &["err JSON parse error, key is not a string in object"],
        );
        check(
            b"{[1 2]:3}",
            &["err JSON parse error, expected separator in list"],
        );
        check(
            b"{\"a\":1,\"a\":[1 2]}",
            &["err JSON parse error, expected separator in list"],
        );
        check(b"{\"a\":[}]", &[EV]);
        check(
            b"[\"x\"}",
            &["err JSON parse error, expected separator in list"],
        );
        check(
            b"{\"a\":1]",
            &["err JSON parse error, expected separator in dict"],
        );
        check(
            b"{true:1}",
            &["err JSON parse error, key is not a string in object"],
        );
        check(b"{foo:1}", &["err JSON parse error, invalid keyword 'foo'"]);
        // A lexical error discards a pending syntax error.
        check(b"[1 2 \xff", &["err JSON parse error, stray '\u{fffd}'"]);
    }

    #[test]
    fn nesting_limit_like_qemu() {
        let mut input = vec![b'['; 1025];
        input.extend(std::iter::repeat_n(b']', 1025));
        let out = run(&input);
        assert_eq!(out.len(), 1026);
        assert_eq!(out[0], "err JSON nesting depth limit exceeded");
        assert!(out[1..].iter().all(|s| s == EV));

        let mut input = vec![b'['; 1024];
        input.extend(std::iter::repeat_n(b']', 1024));
        assert_eq!(run(&input).len(), 1);
        assert!(run(&input)[0].starts_with("ok [[[["));

        let mut input = b"{\"a\":".repeat(1025);
        input.push(b'1');
        input.extend(std::iter::repeat_n(b'}', 1025));
        let out = run(&input);
        assert_eq!(out[0], "err JSON nesting depth limit exceeded");
        assert_eq!(out.iter().filter(|s| *s == EV).count(), 1026);
        assert_eq!(out.iter().filter(|s| s.starts_with("ok ")).count(), 2);
    }

    #[test]
    fn token_count_limit() {
        let mut js = JsonStream::new();
        js.feed(b"[");
        let chunk = b"0,".repeat(1 << 16);
        for _ in 0..((MAX_TOKEN_COUNT / 2) >> 16) {
            js.feed(&chunk);
        }
        js.feed(b"0]");
        let items: Vec<_> = js.drain().collect();
        assert_eq!(items[0], Err("JSON token count limit exceeded".to_string()));
        // The rest of the message is then read as new messages.
        assert!(items.len() > 1);
    }

    #[test]
    fn token_size_limit() {
        let mut js = JsonStream::new();
        js.feed(b"[\"");
        let chunk = vec![b'a'; 1 << 20];
        for _ in 0..64 {
            js.feed(&chunk);
        }
        js.feed(b"a");
        assert_eq!(
            js.next_item(),
            Some(Err("JSON token size limit exceeded".to_string()))
        );
        // Lexer restarted in the start state: 'a's are a keyword now.
        js.feed(b"aa\"]");
        assert_eq!(
            js.next_item(),
            Some(Err("JSON parse error, invalid keyword 'aaa'".to_string()))
        );
    }
}
