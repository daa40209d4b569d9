//! Framing: bytes on a pipe → one line → one borrowed message view.
//!
//! MCP on stdio is one JSON-RPC message per line, UTF-8, no embedded newlines, and (since
//! 2025-06-18) no batches. [`LineReader`] cuts lines without ever buffering more than the limit;
//! [`parse`] checks a line once and returns a [`Msg`] that borrows `id`, `params` and
//! `result`/`error` as raw JSON from the line, so an allowed message can be forwarded as the exact
//! bytes that came in. This module does not decide what is allowed and does not reply to anyone:
//! it says what a line is, or precisely why it is not a message.
//!
//! # Untrusted input
//!
//! Both peers are untrusted. A line longer than the limit is discarded as it streams in; only a
//! bounded scan for its `id` survives ([`Oversize`]). Nesting deeper than serde_json's recursion
//! limit (128) is refused as unparseable. A top-level key given twice is refused, because the two
//! peers could resolve it differently (first wins in some parsers, last in others), which would
//! let a message say one thing to the gateway and another to the server.

use std::borrow::Cow;
use std::fmt;
use std::io::{self, BufRead};

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

/// The default for `--max-message-bytes`. The spec sets no limit; real servers send lines of
/// several MB (a 3 MB file read is a 6.5 MB line), so the cap only stops unbounded growth.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 16 << 20;

/// What the reader keeps between lines. A buffer that grew past this for one large message is
/// given back, so one 16 MB line does not pin 16 MB for the rest of the session.
const KEEP_CAPACITY: usize = 1 << 20;

/// Longest `id` text recovered from an oversized line; longer ids are not recovered.
const MAX_SNIFFED_ID: usize = 256;

/// Reads newline-terminated lines, never holding more than `limit + 1` bytes of one line.
pub struct LineReader<R> {
    inner: R,
    buf: Vec<u8>,
    limit: usize,
}

/// One read from a [`LineReader`].
pub enum Read<'a> {
    /// A whole line, including its `\n` (absent only on a last line cut by EOF).
    Line(&'a [u8]),
    /// A line longer than the limit, already discarded.
    TooLong(Oversize),
}

/// What survives of an oversized line.
#[derive(Debug, PartialEq, Eq)]
pub struct Oversize {
    /// Bytes in the line, newline excluded.
    pub len: u64,
    /// The top-level `id` in canonical form ([`id_key`]), when the scan could find a valid one.
    pub id: Option<String>,
    /// Whether a top-level `method` key was seen (a request or notification, not a response).
    pub has_method: bool,
}

impl<R: BufRead> LineReader<R> {
    pub fn new(inner: R, limit: usize) -> LineReader<R> {
        LineReader {
            inner,
            buf: Vec::with_capacity(64 * 1024),
            limit,
        }
    }

    /// The next line, or `None` at end of input.
    pub fn read_line(&mut self) -> io::Result<Option<Read<'_>>> {
        if self.buf.capacity() > KEEP_CAPACITY {
            self.buf = Vec::with_capacity(64 * 1024);
        }
        self.buf.clear();
        let cap = self.limit as u64 + 1;
        let n = io::Read::take(&mut self.inner, cap).read_until(b'\n', &mut self.buf)?;
        if n == 0 {
            return Ok(None);
        }
        if self.buf.last() == Some(&b'\n') || n <= self.limit {
            return Ok(Some(Read::Line(&self.buf)));
        }
        // Over the limit: scan what we hold for the id, then stream the rest of the line
        // through the same scan without keeping it.
        let mut sniffer = IdSniffer::default();
        sniffer.feed(&self.buf);
        let mut len = n as u64;
        loop {
            let available = match self.inner.fill_buf() {
                Ok(available) => available,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            };
            if available.is_empty() {
                break;
            }
            let (used, done) = match available.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (available.len(), false),
            };
            sniffer.feed(&available[..if done { used - 1 } else { used }]);
            self.inner.consume(used);
            len += used as u64;
            if done {
                len -= 1;
                break;
            }
        }
        self.buf = Vec::with_capacity(64 * 1024);
        Ok(Some(Read::TooLong(Oversize {
            len,
            id: sniffer.id(),
            has_method: sniffer.has_method,
        })))
    }
}

/// A borrowed view of one JSON-RPC message.
///
/// `id`, `params`, `result` and `error` are the raw JSON text from the line. `method` is decoded
/// (borrowed unless it contained escapes), so `"tools\/call"` is seen as `tools/call`.
#[derive(Debug)]
pub struct Msg<'a> {
    pub kind: Kind,
    pub id: Option<&'a RawValue>,
    pub method: Option<Cow<'a, str>>,
    pub params: Option<&'a RawValue>,
    pub result: Option<&'a RawValue>,
    pub error: Option<&'a RawValue>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Request,
    Notification,
    Response,
}

impl Msg<'_> {
    pub fn method(&self) -> &str {
        self.method.as_deref().unwrap_or("")
    }
}

/// Why a line is not a message we relay. Small and `Copy`: this is the hot path's error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    NotUtf8,
    NotJson,
    Batch,
    NotObject,
    DuplicateKey(&'static str),
    BadVersion,
    BadId,
    BadMethod,
    BadParams,
    NoMethodOrId,
    ResultAndError,
    MethodWithResult,
    TooLong { len: u64, limit: usize },
}

impl FrameError {
    /// The JSON-RPC error code for this error: -32700 when the line is not JSON at all, -32600
    /// when it is JSON but not a message we accept.
    pub fn code(self) -> i32 {
        match self {
            FrameError::NotUtf8 | FrameError::NotJson => PARSE_ERROR,
            _ => INVALID_REQUEST,
        }
    }
}

pub const PARSE_ERROR: i32 = -32700;
pub const INVALID_REQUEST: i32 = -32600;

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            FrameError::NotUtf8 => f.write_str("message is not valid UTF-8"),
            FrameError::NotJson => f.write_str("message is not valid JSON"),
            FrameError::Batch => {
                f.write_str("JSON-RPC batches are not supported (removed from MCP in 2025-06-18)")
            }
            FrameError::NotObject => f.write_str("message is not a JSON-RPC object"),
            FrameError::DuplicateKey(key) => write!(f, "key \"{key}\" appears more than once"),
            FrameError::BadVersion => f.write_str("\"jsonrpc\" must be \"2.0\""),
            FrameError::BadId => {
                f.write_str("\"id\" must be a string or an integer that fits in 64 bits")
            }
            FrameError::BadMethod => f.write_str("\"method\" must be a string"),
            FrameError::BadParams => f.write_str("\"params\" must be an object"),
            FrameError::NoMethodOrId => {
                f.write_str("message has no \"method\" and is not a response with an \"id\"")
            }
            FrameError::ResultAndError => {
                f.write_str("a response must have exactly one of \"result\" and \"error\"")
            }
            FrameError::MethodWithResult => {
                f.write_str("a message cannot have both \"method\" and \"result\" or \"error\"")
            }
            FrameError::TooLong { len, limit } => {
                write!(
                    f,
                    "message of {len} bytes exceeds the limit of {limit} bytes"
                )
            }
        }
    }
}

/// A line that is not a message, with what could still be learnt from it.
#[derive(Debug)]
pub struct Rejected<'a> {
    pub error: FrameError,
    /// The `id`, when the line was an object whose `id` was valid.
    pub id: Option<&'a RawValue>,
    /// Whether the object had a `method` key (so a reply may be owed to its sender).
    pub has_method: bool,
}

/// Checks one line (a trailing `\n` or `\r\n` is allowed) and returns its message view.
pub fn parse(line: &[u8]) -> Result<Msg<'_>, Rejected<'_>> {
    let reject = |error| Rejected {
        error,
        id: None,
        has_method: false,
    };
    let text = std::str::from_utf8(line).map_err(|_| reject(FrameError::NotUtf8))?;
    match text.trim_start().as_bytes().first() {
        Some(b'{') => {}
        Some(b'[') => {
            return Err(reject(if is_json(text) {
                FrameError::Batch
            } else {
                FrameError::NotJson
            }))
        }
        _ => {
            return Err(reject(if is_json(text) {
                FrameError::NotObject
            } else {
                FrameError::NotJson
            }))
        }
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let fields = match Fields::deserialize(&mut de).and_then(|fields| de.end().map(|()| fields)) {
        Ok(fields) => fields,
        Err(_) => return Err(reject(FrameError::NotJson)),
    };
    fields.into_msg()
}

fn is_json(text: &str) -> bool {
    serde_json::from_str::<IgnoredAny>(text).is_ok()
}

/// The canonical text of a valid `id`, used to match a response to its request: strings are
/// re-encoded only when they contain escapes, so `"a"` and `"\u0061"` are the same id. Integers
/// are kept as written (`parse` refuses fractions and exponents).
pub fn id_key(id: &RawValue) -> Cow<'_, str> {
    let text = id.get();
    if text == "-0" {
        // Peers that parse ids as numbers answer `-0` with `0`.
        return Cow::Borrowed("0");
    }
    if !text.contains('\\') {
        return Cow::Borrowed(text);
    }
    match serde_json::from_str::<String>(text) {
        Ok(decoded) => Cow::Owned(serde_json::Value::String(decoded).to_string()),
        Err(_) => Cow::Borrowed(text),
    }
}

/// The top-level fields of a message object, as raw JSON.
#[derive(Default)]
struct Fields<'a> {
    jsonrpc: Option<&'a RawValue>,
    id: Option<&'a RawValue>,
    method: Option<&'a RawValue>,
    params: Option<&'a RawValue>,
    result: Option<&'a RawValue>,
    error: Option<&'a RawValue>,
    duplicate: Option<&'static str>,
}

impl<'a> Fields<'a> {
    fn deserialize(
        de: &mut serde_json::Deserializer<serde_json::de::StrRead<'a>>,
    ) -> serde_json::Result<Fields<'a>> {
        de.deserialize_map(FieldsVisitor)
    }

    fn into_msg(self) -> Result<Msg<'a>, Rejected<'a>> {
        let has_method = self.method.is_some();
        let id = self.id.filter(|id| valid_id(id));
        let reject = |error| {
            Err(Rejected {
                error,
                id,
                has_method,
            })
        };
        if let Some(key) = self.duplicate {
            return reject(FrameError::DuplicateKey(key));
        }
        if self.jsonrpc.and_then(decode_str).as_deref() != Some("2.0") {
            return reject(FrameError::BadVersion);
        }
        if self.id.is_some() && id.is_none() {
            return reject(FrameError::BadId);
        }
        let method = match self.method {
            None => None,
            Some(raw) => match decode_str(raw) {
                Some(method) => Some(method),
                None => return reject(FrameError::BadMethod),
            },
        };
        // `"params": null` is what some serialisers write for "no params".
        let params = self.params.filter(|raw| raw.get() != "null");
        if params.is_some_and(|raw| !raw.get().starts_with('{')) {
            return reject(FrameError::BadParams);
        }
        let kind = match (&method, id, self.result.is_some(), self.error.is_some()) {
            (Some(_), _, false, false) if id.is_some() => Kind::Request,
            (Some(_), _, false, false) => Kind::Notification,
            (Some(_), _, _, _) => return reject(FrameError::MethodWithResult),
            (None, None, _, _) => return reject(FrameError::NoMethodOrId),
            (None, Some(_), true, false) | (None, Some(_), false, true) => Kind::Response,
            (None, Some(_), _, _) => return reject(FrameError::ResultAndError),
        };
        Ok(Msg {
            kind,
            id,
            method,
            params,
            result: self.result,
            error: self.error,
        })
    }
}

/// A string, or an integer within `i64` written without fraction or exponent.
fn valid_id(id: &RawValue) -> bool {
    let text = id.get();
    match text.as_bytes()[0] {
        b'"' => true,
        b'-' | b'0'..=b'9' => text.parse::<i64>().is_ok(),
        _ => false,
    }
}

fn decode_str(raw: &RawValue) -> Option<Cow<'_, str>> {
    let text = raw.get();
    let inner = text.strip_prefix('"')?.strip_suffix('"')?;
    if !inner.contains('\\') {
        return Some(Cow::Borrowed(inner));
    }
    serde_json::from_str::<String>(text).ok().map(Cow::Owned)
}

struct FieldsVisitor;

impl<'de> Visitor<'de> for FieldsVisitor {
    type Value = Fields<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON-RPC message object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
        let mut fields = Fields::default();
        while let Some(key) = map.next_key::<Key>()? {
            let (slot, name) = match key {
                Key::Jsonrpc => (&mut fields.jsonrpc, "jsonrpc"),
                Key::Id => (&mut fields.id, "id"),
                Key::Method => (&mut fields.method, "method"),
                Key::Params => (&mut fields.params, "params"),
                Key::Result => (&mut fields.result, "result"),
                Key::Error => (&mut fields.error, "error"),
                Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            let value = map.next_value::<&'de RawValue>()?;
            if slot.is_some() {
                fields.duplicate.get_or_insert(name);
            }
            *slot = Some(value);
        }
        Ok(fields)
    }
}

enum Key {
    Jsonrpc,
    Id,
    Method,
    Params,
    Result,
    Error,
    Other,
}

impl<'de> de::Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Key, D::Error> {
        de.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl Visitor<'_> for KeyVisitor {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    // serde_json decodes escapes before calling this, so `"\u0069d"` arrives as `id`.
    fn visit_str<E: de::Error>(self, key: &str) -> Result<Key, E> {
        Ok(match key {
            "jsonrpc" => Key::Jsonrpc,
            "id" => Key::Id,
            "method" => Key::Method,
            "params" => Key::Params,
            "result" => Key::Result,
            "error" => Key::Error,
            _ => Key::Other,
        })
    }
}

/// Finds the top-level `"id"` of a JSON object fed to it in pieces, keeping at most
/// [`MAX_SNIFFED_ID`] bytes. Used only for lines too long to parse: it does not validate JSON,
/// and gives up (returns no id) on anything it does not understand, such as escaped keys or an
/// `id` given twice.
#[derive(Default)]
struct IdSniffer {
    started: bool,
    failed: bool,
    depth: u32,
    in_string: bool,
    escaped: bool,
    /// At depth 1, the next string is a key.
    expect_key: bool,
    /// The current depth-1 key, while it is being read and until its value starts.
    key: Vec<u8>,
    key_done: bool,
    /// The id's text while it is being captured.
    capture: Option<Vec<u8>>,
    id: Option<Vec<u8>>,
    has_method: bool,
}

impl IdSniffer {
    fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.failed {
                return;
            }
            self.step(b);
        }
    }

    fn step(&mut self, b: u8) {
        if !self.started {
            match b {
                b' ' | b'\t' | b'\r' | b'\n' => {}
                b'{' => {
                    self.started = true;
                    self.expect_key = true;
                    self.depth = 1;
                }
                _ => self.failed = true,
            }
            return;
        }
        if let Some(capture) = &mut self.capture {
            let ends = !self.in_string && self.depth == 1 && matches!(b, b',' | b'}');
            if !ends {
                if capture.len() >= MAX_SNIFFED_ID {
                    self.failed = true;
                    return;
                }
                capture.push(b);
            } else {
                let capture = self.capture.take().unwrap_or_default();
                if self.id.replace(capture).is_some() {
                    self.failed = true;
                    return;
                }
            }
        }
        if self.in_string {
            if self.escaped {
                self.escaped = false;
                if self.depth == 1 && self.expect_key && self.key.len() < 8 {
                    // Escaped keys are not decoded here; such a key never matches.
                    self.key.push(b'\\');
                }
            } else if b == b'\\' {
                self.escaped = true;
            } else if b == b'"' {
                self.in_string = false;
                if self.depth == 1 && self.expect_key {
                    self.expect_key = false;
                    self.key_done = true;
                }
            } else if self.depth == 1 && self.expect_key && self.key.len() < 8 {
                self.key.push(b);
            }
            return;
        }
        match b {
            b' ' | b'\t' | b'\r' | b'\n' => {}
            b'"' => self.in_string = true,
            b'{' | b'[' => self.depth += 1,
            b'}' | b']' => self.depth = self.depth.saturating_sub(1),
            b':' if self.depth == 1 && self.key_done => {
                self.key_done = false;
                match self.key.as_slice() {
                    b"id" => self.capture = Some(Vec::new()),
                    b"method" => self.has_method = true,
                    _ => {}
                }
                self.key.clear();
            }
            b',' if self.depth == 1 => self.expect_key = true,
            _ => {}
        }
    }

    fn id(&self) -> Option<String> {
        if self.failed {
            return None;
        }
        let text = std::str::from_utf8(self.id.as_deref()?).ok()?.trim();
        let raw = serde_json::from_str::<&RawValue>(text).ok()?;
        valid_id(raw).then(|| id_key(raw).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn ok(line: &str, kind: Kind, id: Option<&str>, method: Option<&str>) {
        let msg = parse(line.as_bytes()).unwrap_or_else(|rej| panic!("rejected: {}", rej.error));
        assert_eq!(msg.kind, kind);
        assert_eq!(msg.id.map(RawValue::get), id);
        assert_eq!(msg.method.as_deref(), method);
    }

    #[track_caller]
    fn bad(line: &[u8], error: FrameError, id: Option<&str>) {
        match parse(line) {
            Ok(msg) => panic!("accepted: {msg:?}"),
            Err(rej) => {
                assert_eq!(rej.error, error);
                assert_eq!(rej.id.map(RawValue::get), id);
            }
        }
    }

    #[test]
    fn kinds() {
        ok(
            r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
            Kind::Request,
            Some("1"),
            Some("ping"),
        );
        ok(
            "{\"method\":\"tools/call\",\"params\":{\"name\":\"x\"},\"jsonrpc\":\"2.0\",\"id\":\"a\"}\r\n",
            Kind::Request,
            Some("\"a\""),
            Some("tools/call"),
        );
        ok(
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            Kind::Notification,
            None,
            Some("notifications/initialized"),
        );
        ok(
            r#"{"jsonrpc":"2.0","id":0,"result":{}}"#,
            Kind::Response,
            Some("0"),
            None,
        );
        ok(
            r#"{"jsonrpc":"2.0","id":-7,"error":{"code":1,"message":"x"}}"#,
            Kind::Response,
            Some("-7"),
            None,
        );
        ok(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools\/call","params":null}"#,
            Kind::Request,
            Some("1"),
            Some("tools/call"),
        );
        ok(
            r#"{"\u006aso\u006erpc":"\u0032.0","\u0069d":2,"method":"x","extra":[1,{"a":null}]}"#,
            Kind::Request,
            Some("2"),
            Some("x"),
        );
    }

    #[test]
    fn rejections() {
        bad(
            b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"\xff\"}",
            FrameError::NotUtf8,
            None,
        );
        bad(b"hello", FrameError::NotJson, None);
        bad(b"{\"jsonrpc\":\"2.0\",\"id\":1,", FrameError::NotJson, None);
        bad(
            br#"{"jsonrpc":"2.0","id":1,"method":"a"} {"jsonrpc":"2.0"}"#,
            FrameError::NotJson,
            None,
        );
        bad(
            br#"[{"jsonrpc":"2.0","id":1,"method":"a"}]"#,
            FrameError::Batch,
            None,
        );
        bad(b"42", FrameError::NotObject, None);
        bad(b"", FrameError::NotJson, None);
        bad(
            br#"{"jsonrpc":"2.0","id":1,"method":"a","method":"b"}"#,
            FrameError::DuplicateKey("method"),
            Some("1"),
        );
        bad(
            br#"{"jsonrpc":"2.0","id":1,"\u0069d":2,"method":"a"}"#,
            FrameError::DuplicateKey("id"),
            Some("2"),
        );
        bad(
            br#"{"jsonrpc":"1.0","id":3,"method":"a"}"#,
            FrameError::BadVersion,
            Some("3"),
        );
        bad(
            br#"{"id":3,"method":"a"}"#,
            FrameError::BadVersion,
            Some("3"),
        );
        bad(
            br#"{"jsonrpc":"2.0","id":null,"method":"a"}"#,
            FrameError::BadId,
            None,
        );
        bad(
            br#"{"jsonrpc":"2.0","id":1.5,"method":"a"}"#,
            FrameError::BadId,
            None,
        );
        bad(
            br#"{"jsonrpc":"2.0","id":1e3,"method":"a"}"#,
            FrameError::BadId,
            None,
        );
        bad(
            br#"{"jsonrpc":"2.0","id":{"a":1},"method":"a"}"#,
            FrameError::BadId,
            None,
        );
        bad(
            br#"{"jsonrpc":"2.0","id":123456789012345678901234567890,"method":"a"}"#,
            FrameError::BadId,
            None,
        );
        bad(
            br#"{"jsonrpc":"2.0","id":1,"method":7}"#,
            FrameError::BadMethod,
            Some("1"),
        );
        bad(
            br#"{"jsonrpc":"2.0","id":1,"method":"a","params":[1]}"#,
            FrameError::BadParams,
            Some("1"),
        );
        bad(
            br#"{"jsonrpc":"2.0","id":1,"method":"a","params":"x"}"#,
            FrameError::BadParams,
            Some("1"),
        );
        bad(br#"{"jsonrpc":"2.0"}"#, FrameError::NoMethodOrId, None);
        bad(
            br#"{"jsonrpc":"2.0","id":1}"#,
            FrameError::ResultAndError,
            Some("1"),
        );
        bad(
            br#"{"jsonrpc":"2.0","id":1,"result":1,"error":{}}"#,
            FrameError::ResultAndError,
            Some("1"),
        );
        bad(
            br#"{"jsonrpc":"2.0","id":1,"method":"a","result":{}}"#,
            FrameError::MethodWithResult,
            Some("1"),
        );
        // Nesting inside params is skipped without recursion, so only the size limit bounds it
        // here; the checks that look inside params parse them with serde_json's depth limit.
        let deep = format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"a\",\"params\":{{\"x\":{}{}}}}}",
            "[".repeat(2000),
            "]".repeat(2000)
        );
        ok(&deep, Kind::Request, Some("1"), Some("a"));
    }

    #[test]
    fn id_keys() {
        let key =
            |text: &str| id_key(serde_json::from_str::<&RawValue>(text).unwrap()).into_owned();
        assert_eq!(key("7"), "7");
        assert_eq!(key("-0"), "0");
        assert_eq!(key("\"7\""), "\"7\"");
        assert_eq!(key(r#""\u0061b""#), "\"ab\"");
        assert_eq!(key(r#""a\"b""#), r#""a\"b""#);
    }

    #[track_caller]
    fn read_all(input: &[u8], limit: usize) -> Vec<Result<Vec<u8>, Oversize>> {
        let mut reader = LineReader::new(io::BufReader::with_capacity(16, input), limit);
        let mut out = Vec::new();
        while let Some(read) = reader.read_line().unwrap() {
            out.push(match read {
                Read::Line(line) => Ok(line.to_vec()),
                Read::TooLong(oversize) => Err(oversize),
            });
        }
        out
    }

    #[test]
    fn line_reader() {
        let out = read_all(b"ab\n\ncd\r\nef", 8);
        assert_eq!(
            out,
            [
                Ok(b"ab\n".to_vec()),
                Ok(b"\n".to_vec()),
                Ok(b"cd\r\n".to_vec()),
                Ok(b"ef".to_vec())
            ]
        );
        // Exactly at the limit is fine, one byte more is not.
        let out = read_all(b"12345678\n123456789\nok\n", 8);
        assert_eq!(
            out,
            [
                Ok(b"12345678\n".to_vec()),
                Err(Oversize {
                    len: 9,
                    id: None,
                    has_method: false
                }),
                Ok(b"ok\n".to_vec()),
            ]
        );
        let out = read_all(b"123456789", 8);
        assert_eq!(
            out,
            [Err(Oversize {
                len: 9,
                id: None,
                has_method: false
            })]
        );
    }

    #[test]
    fn oversize_recovers_id() {
        let pad = "x".repeat(100);
        let line = format!("{{\"method\":\"tools/call\",\"params\":{{\"a\":\"{pad}\",\"id\":5,\"b\":[{{}}]}},\"jsonrpc\":\"2.0\",\"id\":\"r-1\"}}\nnext\n");
        let out = read_all(line.as_bytes(), 40);
        let Err(oversize) = &out[0] else {
            panic!("not too long")
        };
        assert_eq!(oversize.id.as_deref(), Some("\"r-1\""));
        assert!(oversize.has_method);
        assert_eq!(oversize.len as usize, line.len() - 6);
        assert_eq!(out[1], Ok(b"next\n".to_vec()));

        let line = format!("{{\"jsonrpc\":\"2.0\",\"id\":12,\"result\":{{\"t\":\"{pad}\"}}}}\n");
        let out = read_all(line.as_bytes(), 40);
        assert_eq!(
            out[0],
            Err(Oversize {
                len: line.len() as u64 - 1,
                id: Some("12".to_owned()),
                has_method: false
            })
        );

        for line in [
            format!("{{\"id\":1,\"id\":2,\"method\":\"{pad}\"}}\n"),
            format!("{{\"\\u0069d\":1,\"method\":\"{pad}\"}}\n"),
            format!("[{{\"id\":1,\"method\":\"{pad}\"}}]\n"),
            format!("{{\"id\":null,\"method\":\"{pad}\"}}\n"),
            format!("{{\"id\":\"{pad}{pad}{pad}\",\"method\":1}}\n"),
        ] {
            let out = read_all(line.as_bytes(), 40);
            let Err(oversize) = &out[0] else {
                panic!("not too long")
            };
            assert_eq!(oversize.id, None, "{line}");
        }
    }
}
