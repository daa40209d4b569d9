//! Framing: bytes on a pipe → one line → one borrowed message view.
//!
//! MCP on stdio is one JSON-RPC message per line, UTF-8, no embedded newlines, and (since
//! 2025-06-18) no batches. [`LineReader`] cuts lines without ever buffering more than the limit;
//! [`parse`] checks a line once and returns a [`Msg`] that borrows `id`, `params` and
//! `result`/`error` as raw JSON ([`Raw`]) from the line, so an allowed message can be forwarded
//! as the exact bytes that came in. The check is our own (module `json` below), strict and equal
//! to serde_json's, because it is most of what a transparent relay spends per message. This
//! module does not decide what is allowed and does not reply to anyone: it says what a line is,
//! or precisely why it is not a message.
//!
//! # Untrusted input
//!
//! Both peers are untrusted. A line longer than the limit is discarded as it streams in; only a
//! bounded scan for its `id` survives ([`Oversize`]). Nesting has no depth limit here, as in
//! serde_json's skipping of values: nothing recurses, and each level costs one bit; the checks
//! that look inside params parse them with serde_json's limit (128). A top-level key given twice
//! is refused, because the two peers could resolve it differently (first wins in some parsers,
//! last in others), which would let a message say one thing to the gateway and another to the
//! server.

use std::borrow::Cow;
use std::fmt;
use std::io::{self, BufRead};

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
        LineReader { inner, buf: Vec::with_capacity(64 * 1024), limit }
    }

    /// The next line, or `None` at end of input.
    pub fn read_line(&mut self) -> io::Result<Option<Read<'_>>> {
        if self.buf.capacity() > KEEP_CAPACITY {
            self.buf = Vec::with_capacity(64 * 1024);
        }
        self.buf.clear();
        let n = self.read_until_newline()?;
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
            let (used, done) = match memchr::memchr(b'\n', available) {
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
        Ok(Some(Read::TooLong(Oversize { len, id: sniffer.id(), has_method: sniffer.has_method })))
    }

    /// Appends to `buf` up to and including the next `\n`, stopping early at end of input or
    /// after `limit + 1` bytes; returns how many bytes it appended. `read_until` on a `Take` does
    /// the same, but looks for the newline a word at a time; `memchr` is several times faster,
    /// which matters on lines of many kilobytes.
    fn read_until_newline(&mut self) -> io::Result<usize> {
        let cap = self.limit.saturating_add(1);
        let mut n = 0;
        loop {
            let available = match self.inner.fill_buf() {
                Ok(available) => available,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            };
            let available = &available[..available.len().min(cap - n)];
            let (used, done) = match memchr::memchr(b'\n', available) {
                Some(i) => (i + 1, true),
                None => (available.len(), available.is_empty() || n + available.len() == cap),
            };
            self.buf.extend_from_slice(&available[..used]);
            self.inner.consume(used);
            n += used;
            if done {
                return Ok(n);
            }
        }
    }
}

/// A borrowed view of one JSON-RPC message.
///
/// `id`, `params`, `result` and `error` are the raw JSON text from the line. `method` is decoded
/// (borrowed unless it contained escapes), so `"tools\/call"` is seen as `tools/call`.
#[derive(Debug)]
pub struct Msg<'a> {
    pub kind: Kind,
    pub id: Option<Raw<'a>>,
    pub method: Option<Cow<'a, str>>,
    pub params: Option<Raw<'a>>,
    pub result: Option<Raw<'a>>,
    pub error: Option<Raw<'a>>,
    /// The members of `params`, as [`parse`] found them on its way through the line.
    params_members: Option<Members<'a>>,
}

/// JSON text already validated by [`parse`]: exactly one JSON value, without the whitespace
/// around it, borrowed from the line it was read from.
///
/// It plays the part of serde_json's `&RawValue` without a second pass over the text: the
/// checks that look inside (the chain, the ward) parse it again on demand, and it is always
/// valid input for them.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Raw<'a>(&'a str);

impl<'a> Raw<'a> {
    /// The JSON text.
    pub fn get(&self) -> &'a str {
        self.0
    }

    /// `text` as a value, if it is exactly one JSON value (whitespace around it is dropped), by
    /// the same rules as [`parse`].
    pub fn parse(text: &str) -> Option<Raw<'_>> {
        json::value(text).map(Raw)
    }
}

impl<'a> Raw<'a> {
    /// serde_json's raw value as a `Raw`: serde_json checked it as it read it.
    pub fn of_raw_value(raw: &'a serde_json::value::RawValue) -> Raw<'a> {
        Raw(raw.get())
    }

    /// Calls `each` with the JSON text of each member's key (quotes included, escapes left as
    /// they are) and its value, in order, while it returns `true`. `None` when this is not an
    /// object. No check is made again: the text was checked when it was read.
    pub fn members(&self, each: impl FnMut(&'a str, Raw<'a>) -> bool) -> Option<()> {
        json::members(self.0, each).ok()
    }
}

impl fmt::Debug for Raw<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Raw({})", self.0)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Request,
    Notification,
    Response,
}

impl<'a> Msg<'a> {
    pub fn method(&self) -> &str {
        self.method.as_deref().unwrap_or("")
    }

    /// [`Raw::members`] of the params, without reading them again: [`parse`] kept where each
    /// member is while it checked the line, unless there were more than it keeps.
    pub fn params_members(&self, mut each: impl FnMut(&'a str, Raw<'a>) -> bool) -> Option<()> {
        match self.params_members {
            Some(members) if members.len <= MAX_MEMBERS => {
                for &(key, value) in &members.list[..members.len] {
                    if !each(key, value) {
                        break;
                    }
                }
                Some(())
            }
            _ => self.params?.members(each),
        }
    }
}

/// How many members of `params` [`parse`] keeps. MCP's params have a handful (`name`,
/// `arguments`, `_meta`); more than this are found again by reading the params.
const MAX_MEMBERS: usize = 8;

/// The first [`MAX_MEMBERS`] members of an object: each key's JSON text (quotes included) and
/// its value; `len` counts them all.
#[derive(Clone, Copy, Debug)]
struct Members<'a> {
    list: [(&'a str, Raw<'a>); MAX_MEMBERS],
    len: usize,
}

impl Default for Members<'_> {
    fn default() -> Self {
        Members { list: [("", Raw("")); MAX_MEMBERS], len: 0 }
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
                write!(f, "message of {len} bytes exceeds the limit of {limit} bytes")
            }
        }
    }
}

/// A line that is not a message, with what could still be learnt from it.
#[derive(Debug)]
pub struct Rejected<'a> {
    pub error: FrameError,
    /// The `id`, when the line was an object whose `id` was valid.
    pub id: Option<Raw<'a>>,
    /// Whether the object had a `method` key (so a reply may be owed to its sender).
    pub has_method: bool,
}

/// Checks one line (a trailing `\n` or `\r\n` is allowed) and returns its message view.
///
/// The line is valid JSON exactly when serde_json would accept it (`from_slice::<IgnoredAny>`),
/// with one addition serde_json makes for keys it decodes: a top-level key may not hold an
/// unpaired surrogate escape (`"\ud800"`), so no peer can read such a key as `id` by dropping it.
pub fn parse(line: &[u8]) -> Result<Msg<'_>, Rejected<'_>> {
    let reject = |error| Rejected { error, id: None, has_method: false };
    let text = std::str::from_utf8(line).map_err(|_| reject(FrameError::NotUtf8))?;
    let fields = match json::top(text) {
        Ok(json::Top::Object(fields)) => fields,
        Ok(json::Top::Array) => return Err(reject(FrameError::Batch)),
        Ok(json::Top::Other) => return Err(reject(FrameError::NotObject)),
        Err(json::Invalid) => return Err(reject(FrameError::NotJson)),
    };
    fields.into_msg()
}

/// The index just past the string whose opening quote is at `open` in `text`, which is known to
/// be valid JSON (a [`Raw`], or a part of one that starts at a value): the first quote after an
/// even run of backslashes. For the checks that read inside params the frame already checked.
pub(crate) fn string_end(text: &[u8], open: usize) -> Option<usize> {
    json::string_end::<false>(text, open).ok()
}

/// A JSON string read by [`read_string`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Str {
    /// The index just past its closing quote.
    pub(crate) end: usize,
    /// Whether it has escapes, and so was decoded into the reader's buffer. If not, the string
    /// is what lies between its quotes, as written.
    pub(crate) decoded: bool,
    /// Whether the string, decoded, is printable ASCII, tab and line breaks only: what
    /// [`normalize::is_plain`](crate::normalize::is_plain) says of it, found on the way.
    pub(crate) plain: bool,
}

/// What [`read_string`] makes of a `\u` escape of half a surrogate pair without its other half,
/// which JSON's grammar allows but which is no character.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LoneSurrogate {
    /// U+FFFD, as a client's parser reads it (JavaScript's, Python's).
    Replace,
    /// The string is refused, as `serde_json` refuses it.
    Refuse,
}

/// Reads the string whose opening quote is at `open` in `text`, in one pass: finds its end,
/// refuses what `serde_json` refuses (a raw control byte, an unknown escape, `\u` without four
/// hex digits, and a lone surrogate if `lone` says so) and, only if the string has escapes,
/// decodes it into `out`, which is cleared first. `None` when it is not a valid JSON string.
pub(crate) fn read_string(
    text: &str,
    open: usize,
    lone: LoneSurrogate,
    out: &mut String,
) -> Option<Str> {
    json::read_string::<false>(text, open, lone, out).ok()
}

/// The canonical text of a valid `id`, used to match a response to its request: strings are
/// re-encoded only when they contain escapes, so `"a"` and `"\u0061"` are the same id. Integers
/// are kept as written (`parse` refuses fractions and exponents).
pub fn id_key(id: Raw<'_>) -> Cow<'_, str> {
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
    jsonrpc: Option<Raw<'a>>,
    id: Option<Raw<'a>>,
    method: Option<Raw<'a>>,
    params: Option<Raw<'a>>,
    result: Option<Raw<'a>>,
    error: Option<Raw<'a>>,
    duplicate: Option<&'static str>,
    /// The members of the last `params`, when it is an object.
    params_members: Option<Members<'a>>,
}

impl<'a> Fields<'a> {
    /// Records a member; the last one of a name wins, and the first name seen twice is kept.
    fn set(&mut self, name: &'static str, value: Raw<'a>) {
        let slot = match name {
            "jsonrpc" => &mut self.jsonrpc,
            "id" => &mut self.id,
            "method" => &mut self.method,
            "params" => &mut self.params,
            "result" => &mut self.result,
            _ => &mut self.error,
        };
        if slot.replace(value).is_some() {
            self.duplicate.get_or_insert(name);
        }
    }

    fn into_msg(self) -> Result<Msg<'a>, Rejected<'a>> {
        let has_method = self.method.is_some();
        let id = self.id.filter(|id| valid_id(*id));
        let reject = |error| Err(Rejected { error, id, has_method });
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
            params_members: self.params_members.filter(|_| params.is_some()),
        })
    }
}

/// A string, or an integer within `i64` written without fraction or exponent. A string with a
/// lone surrogate escape (`"\ud800"`) is not one: it is no Unicode text, serde_json peers refuse
/// the whole message for it, and a peer that takes it cannot always write it back in an answer.
fn valid_id(id: Raw<'_>) -> bool {
    let text = id.get();
    match text.as_bytes()[0] {
        b'"' => !text.contains('\\') || serde_json::from_str::<String>(text).is_ok(),
        b'-' | b'0'..=b'9' => text.parse::<i64>().is_ok(),
        _ => false,
    }
}

fn decode_str(raw: Raw<'_>) -> Option<Cow<'_, str>> {
    let text = raw.get();
    let inner = text.strip_prefix('"')?.strip_suffix('"')?;
    if !inner.contains('\\') {
        return Some(Cow::Borrowed(inner));
    }
    serde_json::from_str::<String>(text).ok().map(Cow::Owned)
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
        let raw = Raw::parse(text)?;
        valid_id(raw).then(|| id_key(raw).into_owned())
    }
}

/// A strict JSON checker that also finds the top-level members of an object: the one pass
/// [`parse`] makes over a line.
///
/// It accepts exactly what serde_json accepts (RFC 8259: no trailing commas, no leading zeros, no
/// raw control bytes in strings, escapes checked, `\u` with four hex digits but unpaired
/// surrogates allowed in values, any depth of nesting, since serde_json skips values without a
/// depth limit too), and it decodes a top-level key only when it has a backslash.
///
/// Why not serde_json: skipping a string costs it a call per escape sequence, and MCP payloads
/// are mostly strings of code and JSON with an escape every dozen bytes. Here a string is read
/// 64 bytes at a time: one mask each of its quotes, backslashes and control bytes, from which a
/// few operations on the masks tell which bytes are escaped (those after an odd run of
/// backslashes), so where the string ends, whether a control byte comes before, and where the
/// escapes to check are; each escape is then one look at the byte after its backslash. The cost
/// is about the same whether a block holds no escape or a dozen.
mod json {
    use super::{Fields, LoneSurrogate, Members, Raw, Str};

    /// The line is not JSON. Where and why does not matter to anyone: it is `NotJson`.
    pub(super) struct Invalid;

    /// A line that is one valid JSON value. The object's fields are large (they keep the params'
    /// members) and stay unboxed: this is made once per line and unpacked at once.
    #[allow(clippy::large_enum_variant)]
    pub(super) enum Top<'a> {
        Object(Fields<'a>),
        Array,
        Other,
    }

    /// Checks `text` and, for an object, records the members [`Fields`] knows.
    pub(super) fn top(text: &str) -> Result<Top<'_>, Invalid> {
        top_with::<false>(text)
    }

    /// `text` without the whitespace around it, if it is exactly one JSON value.
    pub(super) fn value(text: &str) -> Option<&str> {
        let b = text.as_bytes();
        let start = ws(b, 0);
        let end = value_end::<false>(b, start, &mut Nesting::default()).ok()?;
        (ws(b, end) == b.len()).then(|| text.get(start..end))?
    }

    /// [`top`], with the string classifier `PORTABLE` picks (see [`string_end`]).
    pub(super) fn top_with<const PORTABLE: bool>(text: &str) -> Result<Top<'_>, Invalid> {
        let b = text.as_bytes();
        let mut nesting = Nesting::default();
        let mut i = ws(b, 0);
        let top = match b.get(i) {
            Some(b'{') => {
                let mut fields = Fields::default();
                i = ws(b, i + 1);
                if b.get(i) == Some(&b'}') {
                    i += 1;
                } else {
                    loop {
                        if b.get(i) != Some(&b'"') {
                            return Err(Invalid);
                        }
                        let key_end = string_end::<PORTABLE>(b, i)?;
                        let name = member(&b[i + 1..key_end - 1])?;
                        i = ws(b, key_end);
                        if b.get(i) != Some(&b':') {
                            return Err(Invalid);
                        }
                        let start = ws(b, i + 1);
                        // The params' members are noted on the way, for the checks that read
                        // `name` and `arguments`; any other value is only checked.
                        let params = name == Some("params");
                        if params {
                            fields.params_members = None;
                        }
                        i = if params && b.get(start) == Some(&b'{') {
                            let members = fields.params_members.insert(Members::default());
                            object::<PORTABLE>(text, start, members)?
                        } else {
                            value_end::<PORTABLE>(b, start, &mut nesting)?
                        };
                        if let Some(name) = name {
                            fields.set(name, Raw(text.get(start..i).ok_or(Invalid)?));
                        }
                        i = ws(b, i);
                        match b.get(i) {
                            Some(b',') => i = ws(b, i + 1),
                            Some(b'}') => {
                                i += 1;
                                break;
                            }
                            _ => return Err(Invalid),
                        }
                    }
                }
                Top::Object(fields)
            }
            Some(b'[') => {
                i = value_end::<PORTABLE>(b, i, &mut nesting)?;
                Top::Array
            }
            _ => {
                i = value_end::<PORTABLE>(b, i, &mut nesting)?;
                Top::Other
            }
        };
        if ws(b, i) != b.len() {
            return Err(Invalid);
        }
        Ok(top)
    }

    /// See [`Raw::members`].
    pub(super) fn members<'a>(
        text: &'a str,
        mut each: impl FnMut(&'a str, Raw<'a>) -> bool,
    ) -> Result<(), Invalid> {
        let b = text.as_bytes();
        if b.first() != Some(&b'{') {
            return Err(Invalid);
        }
        let mut i = ws(b, 1);
        if b.get(i) == Some(&b'}') {
            return Ok(());
        }
        let mut nesting = Nesting::default();
        loop {
            if b.get(i) != Some(&b'"') {
                return Err(Invalid);
            }
            let key_end = string_end::<false>(b, i)?;
            let key = &text[i..key_end];
            i = ws(b, key_end);
            if b.get(i) != Some(&b':') {
                return Err(Invalid);
            }
            i = ws(b, i + 1);
            let end = value_end::<false>(b, i, &mut nesting)?;
            if !each(key, Raw(&text[i..end])) {
                return Ok(());
            }
            i = ws(b, end);
            match b.get(i) {
                Some(b',') => i = ws(b, i + 1),
                Some(b'}') => return Ok(()),
                _ => return Err(Invalid),
            }
        }
    }

    /// The index just past the object that starts at `open`, whose members are put in `out`:
    /// [`value_end`] for an object, keeping what it passes over.
    fn object<'a, const PORTABLE: bool>(
        text: &'a str,
        open: usize,
        out: &mut Members<'a>,
    ) -> Result<usize, Invalid> {
        let b = text.as_bytes();
        let mut i = ws(b, open + 1);
        if b.get(i) == Some(&b'}') {
            return Ok(i + 1);
        }
        let mut nesting = Nesting::default();
        loop {
            if b.get(i) != Some(&b'"') {
                return Err(Invalid);
            }
            let key_end = string_end::<PORTABLE>(b, i)?;
            let key = text.get(i..key_end).ok_or(Invalid)?;
            i = ws(b, key_end);
            if b.get(i) != Some(&b':') {
                return Err(Invalid);
            }
            let start = ws(b, i + 1);
            i = value_end::<PORTABLE>(b, start, &mut nesting)?;
            if let Some(slot) = out.list.get_mut(out.len) {
                *slot = (key, Raw(text.get(start..i).ok_or(Invalid)?));
            }
            out.len += 1;
            i = ws(b, i);
            match b.get(i) {
                Some(b',') => i = ws(b, i + 1),
                Some(b'}') => return Ok(i + 1),
                _ => return Err(Invalid),
            }
        }
    }

    /// The index just past the value that starts at `i` (not at whitespace). Iterative: the
    /// containers around the current value live in `nesting`, not on the call stack.
    fn value_end<const PORTABLE: bool>(
        b: &[u8],
        mut i: usize,
        nesting: &mut Nesting,
    ) -> Result<usize, Invalid> {
        'value: loop {
            match *b.get(i).ok_or(Invalid)? {
                b'{' => {
                    i = ws(b, i + 1);
                    if b.get(i) == Some(&b'}') {
                        i += 1;
                    } else {
                        nesting.push(true);
                        i = member_value::<PORTABLE>(b, i)?;
                        continue 'value;
                    }
                }
                b'[' => {
                    i = ws(b, i + 1);
                    if b.get(i) == Some(&b']') {
                        i += 1;
                    } else {
                        nesting.push(false);
                        continue 'value;
                    }
                }
                b'"' => i = string_end::<PORTABLE>(b, i)?,
                b't' => i = literal(b, i, b"true")?,
                b'f' => i = literal(b, i, b"false")?,
                b'n' => i = literal(b, i, b"null")?,
                _ => i = number_end(b, i)?,
            }
            // After a value: close containers until one continues with a comma.
            while let Some(object) = nesting.top() {
                i = ws(b, i);
                match b.get(i) {
                    Some(b',') => {
                        i = ws(b, i + 1);
                        if object {
                            i = member_value::<PORTABLE>(b, i)?;
                        }
                        continue 'value;
                    }
                    Some(b'}') if object => nesting.pop(),
                    Some(b']') if !object => nesting.pop(),
                    _ => return Err(Invalid),
                }
                i += 1;
            }
            return Ok(i);
        }
    }

    /// Reads `"key" :` from `i` and returns where the value starts.
    fn member_value<const PORTABLE: bool>(b: &[u8], i: usize) -> Result<usize, Invalid> {
        if b.get(i) != Some(&b'"') {
            return Err(Invalid);
        }
        let i = ws(b, string_end::<PORTABLE>(b, i)?);
        if b.get(i) != Some(&b':') {
            return Err(Invalid);
        }
        Ok(ws(b, i + 1))
    }

    /// The index just past the string whose opening quote is at `open`, having checked what is
    /// between the quotes as serde_json does: no control byte, and every backslash starts one
    /// of the escapes JSON has (`\u` with four hex digits).
    ///
    /// `PORTABLE` picks the classifier that works a word at a time, which the tests hold against
    /// the vector one; other architectures always use it.
    #[inline]
    pub(super) fn string_end<const PORTABLE: bool>(
        b: &[u8],
        open: usize,
    ) -> Result<usize, Invalid> {
        let close = string_blocks::<PORTABLE>(b, open, |at, block, escapes, _| {
            // What follows each backslash, looked up in a table: a `match` here jumps to a
            // place per escape letter, in an order no branch predictor learns. `\u` needs its
            // digits.
            let mut kinds = 0;
            let mut rest = escapes;
            while rest != 0 {
                kinds |= ESCAPE[usize::from(block[rest.trailing_zeros() as usize])];
                rest &= rest - 1;
            }
            if kinds != 0 && (kinds & BAD_KIND != 0 || !unicode_escapes(b, at, escapes)) {
                return Err(Invalid);
            }
            Ok(())
        })?;
        Ok(close + 1)
    }

    /// [`string_end`] that also decodes: see [`read_string`](super::read_string).
    ///
    /// The escapes of each block are visited by their bits, so that a string with an escape
    /// every dozen bytes costs one copy of the text between two escapes and one table look per
    /// escape, not a search for each backslash.
    pub(super) fn read_string<const PORTABLE: bool>(
        text: &str,
        open: usize,
        lone: LoneSurrogate,
        out: &mut String,
    ) -> Result<Str, Invalid> {
        // Bytes as written that are not plain (control bytes are refused, so these are the ones
        // from 0x7F), and whether every escape decoded to a plain character.
        let mut wide = 0;
        let mut plain = true;
        // From the first escape on: where the text not yet copied to `out` starts.
        let mut copied = None;
        let close =
            string_blocks::<PORTABLE>(text.as_bytes(), open, |at, block, escapes, high| {
                wide |= high;
                if escapes != 0 {
                    let from = copied.get_or_insert_with(|| {
                        out.clear();
                        open + 1
                    });
                    *from = unescape(text, at, block, escapes, *from, lone, out, &mut plain)?;
                }
                Ok(())
            })?;
        if let Some(from) = copied {
            out.push_str(text.get(from..close).ok_or(Invalid)?);
        }
        Ok(Str { end: close + 1, decoded: copied.is_some(), plain: plain && wide == 0 })
    }

    /// Walks the string whose opening quote is at `open`, refusing control bytes, and hands
    /// each stretch of it to `each`: where it starts, its bytes (a block, padded at the end of
    /// the text), and as bit masks over them, the escaped bytes (each just after its backslash)
    /// and the bytes from 0x7F, both before the closing quote. Returns where the closing quote
    /// is. What an escape means is for `each` to check.
    #[inline(always)]
    fn string_blocks<const PORTABLE: bool>(
        b: &[u8],
        open: usize,
        mut each: impl FnMut(usize, &[u8], u64, u64) -> Result<(), Invalid>,
    ) -> Result<usize, Invalid> {
        let start = open + 1;
        // Most strings in a message are short and plain (keys, `"2.0"`, method names): one look
        // at sixteen bytes ends them.
        if let Some(chunk) = b.get(start..start + 16) {
            let [quotes, backslashes, controls, high] = classify::<PORTABLE>(chunk);
            let before = quotes.wrapping_sub(1) & !quotes;
            if quotes != 0 && (backslashes | controls) & before == 0 {
                each(start, chunk, 0, u64::from(high & before))?;
                return Ok(start + quotes.trailing_zeros() as usize);
            }
        }
        let mut at = start;
        // Whether the byte at `at` is escaped by a backslash at the end of the block before.
        let mut carry = 0;
        let mut padded = [b' '; BLOCK];
        loop {
            let (block, last) = match b.get(at..at + BLOCK) {
                Some(block) => (block, false),
                None => {
                    // The rest of the line, padded with spaces: no quote, backslash or control.
                    let rest = b.get(at..).unwrap_or_default();
                    padded[..rest.len()].copy_from_slice(rest);
                    (&padded[..], true)
                }
            };
            let [quotes, backslashes, controls, high] = classify_block::<PORTABLE>(block);
            let (escaped, carry_out) = escaped(backslashes, carry);
            let ends = quotes & !escaped;
            let before = ends.wrapping_sub(1) & !ends;
            if controls & before != 0 {
                return Err(Invalid);
            }
            each(at, block, escaped & before, high & before)?;
            if ends != 0 {
                return Ok(at + ends.trailing_zeros() as usize);
            }
            if last {
                return Err(Invalid);
            }
            carry = carry_out;
            at += BLOCK;
        }
    }

    /// Appends to `out` the text from `from` and the escapes `escapes` (the bits of the escaped
    /// bytes, each just after its backslash) of the block at `at`; returns where the text not
    /// yet copied starts. `plain` is cleared if an escape decodes to a character that is not.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    fn unescape(
        text: &str,
        at: usize,
        block: &[u8],
        mut escapes: u64,
        mut from: usize,
        lone: LoneSurrogate,
        out: &mut String,
        plain: &mut bool,
    ) -> Result<usize, Invalid> {
        while escapes != 0 {
            let bit = escapes.trailing_zeros() as usize;
            escapes &= escapes - 1;
            let i = at + bit;
            // The second half of a surrogate pair, already read with the first.
            if i < from {
                continue;
            }
            out.push_str(text.get(from..i - 1).ok_or(Invalid)?);
            match UNESCAPE[usize::from(block[bit])] {
                BAD => return Err(Invalid),
                UNICODE => {
                    let (c, next) = unicode(text.as_bytes(), i, lone)?;
                    *plain &= plain_char(c);
                    out.push(c);
                    from = next;
                }
                c => {
                    *plain &= plain_char(char::from(c));
                    out.push(char::from(c));
                    from = i + 1;
                }
            }
        }
        Ok(from)
    }

    /// The character of the `\u` escape whose `u` is at `i`, and the index just past it: past
    /// the second half too when it is the first half of a surrogate pair.
    fn unicode(b: &[u8], i: usize, lone: LoneSurrogate) -> Result<(char, usize), Invalid> {
        let unit = hex4(b, i + 1)?;
        let after = i + 5;
        let c = match unit {
            0xD800..=0xDBFF => {
                let low = match b.get(after..after + 2) {
                    Some(b"\\u") => {
                        hex4(b, after + 2).ok().filter(|low| (0xDC00..0xE000).contains(low))
                    }
                    _ => None,
                };
                if let Some(low) = low {
                    let c = char::from_u32(0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00));
                    return Ok((c.ok_or(Invalid)?, after + 6));
                }
                None
            }
            0xDC00..=0xDFFF => None,
            _ => char::from_u32(unit),
        };
        match (c, lone) {
            (Some(c), _) => Ok((c, after)),
            (None, LoneSurrogate::Replace) => Ok(('\u{FFFD}', after)),
            (None, LoneSurrogate::Refuse) => Err(Invalid),
        }
    }

    /// What [`normalize::is_plain`](crate::normalize::is_plain) accepts, for one character.
    fn plain_char(c: char) -> bool {
        matches!(c, ' '..='~' | '\t' | '\n' | '\r')
    }

    /// Bytes a string is scanned by at a time, one bit of a `u64` each.
    const BLOCK: usize = 64;

    /// What the byte after an escaping backslash makes of the escape: the byte it stands for, or
    /// [`BAD`] for none, or [`UNICODE`] for `\u`, which needs four hex digits after it.
    const UNESCAPE: [u8; 256] = {
        let mut table = [BAD; 256];
        let mut simple: &[u8] = b"\"\"\\\\//b\x08f\x0cn\nr\rt\t";
        while let [c, decoded, rest @ ..] = simple {
            table[*c as usize] = *decoded;
            simple = rest;
        }
        table[b'u' as usize] = UNICODE;
        table
    };
    const BAD: u8 = 0;
    const UNICODE: u8 = 0x80;

    /// [`UNESCAPE`] as [`string_end`] reads it, to check escapes without decoding them: 0 for a
    /// two-byte escape, [`BAD_KIND`] for none, [`UNICODE_KIND`] for `\u`.
    const ESCAPE: [u8; 256] = {
        let mut table = [0; 256];
        let mut c = 0;
        while c < 256 {
            table[c] = match UNESCAPE[c] {
                BAD => BAD_KIND,
                UNICODE => UNICODE_KIND,
                _ => 0,
            };
            c += 1;
        }
        table
    };
    const BAD_KIND: u8 = 1;
    const UNICODE_KIND: u8 = 2;

    /// Whether each `\u` among the escaped bytes `escapes` of the block at `at` has four hex
    /// digits after it.
    #[cold]
    fn unicode_escapes(b: &[u8], at: usize, mut escapes: u64) -> bool {
        while escapes != 0 {
            let i = at + escapes.trailing_zeros() as usize;
            if b.get(i) == Some(&b'u')
                && !b.get(i + 1..i + 5).is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
            {
                return false;
            }
            escapes &= escapes - 1;
        }
        true
    }

    /// Which bytes of a block are escaped, given the backslashes in it and whether its first
    /// byte is escaped (`carry`, 0 or 1); and whether the first byte of the next block is.
    ///
    /// A byte is escaped when the run of backslashes just before it has odd length. The
    /// arithmetic is simdjson's: a subtraction runs a borrow through each run of backslashes,
    /// and the odd-bit mask it starts from makes where the borrow stops depend on the parity of
    /// the run. A block costs the same few operations however many escapes it holds, where a
    /// scan that stops at each quote or escape pays for each (`escaped_masks` in the tests holds
    /// it against the rule written out byte by byte).
    #[inline]
    pub(super) fn escaped(backslashes: u64, carry: u64) -> (u64, u64) {
        const ODD: u64 = 0xAAAA_AAAA_AAAA_AAAA;
        // A backslash that is itself escaped starts nothing.
        let starts = backslashes & !carry;
        let escape_and_terminal = (((starts << 1) | ODD).wrapping_sub(starts)) ^ ODD;
        let escaped = escape_and_terminal ^ (backslashes | carry);
        let escape = escape_and_terminal & backslashes;
        (escaped, escape >> 63)
    }

    /// [`classify`] for a whole block.
    #[inline]
    fn classify_block<const PORTABLE: bool>(block: &[u8]) -> [u64; 4] {
        let mut masks = [0; 4];
        for (idx, chunk) in block[..BLOCK].chunks_exact(16).enumerate() {
            for (mask, part) in masks.iter_mut().zip(classify::<PORTABLE>(chunk)) {
                *mask |= u64::from(part) << (16 * idx);
            }
        }
        masks
    }

    /// Bit `i` of each mask tells whether byte `i` of the sixteen is a quote, a backslash, a
    /// control byte, a byte from 0x7F (not ASCII, or DEL). A caller that does not read a mask
    /// does not pay for it: the function is inlined and the mask's work left out.
    #[inline(always)]
    pub(super) fn classify<const PORTABLE: bool>(chunk: &[u8]) -> [u16; 4] {
        #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
        if !PORTABLE {
            return sse2::classify(chunk);
        }
        let mut masks = [0; 4];
        for (half, word) in chunk[..16].chunks_exact(8).enumerate() {
            let word = u64::from_le_bytes(word.try_into().unwrap_or_default());
            for (mask, bytes) in masks.iter_mut().zip([
                zero_bytes(word ^ (ONES * u64::from(b'"'))),
                zero_bytes(word ^ (ONES * u64::from(b'\\'))),
                below_0x20(word),
                from_0x7f(word),
            ]) {
                *mask |= pack(bytes) << (8 * half);
            }
        }
        masks
    }

    const ONES: u64 = u64::from_le_bytes([0x01; 8]);
    const LOW: u64 = u64::from_le_bytes([0x7F; 8]);
    const HIGH: u64 = u64::from_le_bytes([0x80; 8]);

    /// The high bit of each zero byte of `x`. Exact: the low seven bits of a byte are added to
    /// 0x7F apart, so no carry reaches the next byte.
    #[inline(always)]
    fn zero_bytes(x: u64) -> u64 {
        !(((x & LOW) + LOW) | x) & HIGH
    }

    /// The high bit of each byte of `x` below 0x20, exactly (as in [`zero_bytes`]).
    #[inline(always)]
    fn below_0x20(x: u64) -> u64 {
        !(((x & LOW) + ONES * 0x60) | x) & HIGH
    }

    /// The high bit of each byte of `x` from 0x7F, exactly: adding one to the low seven bits
    /// carries into the high bit only from 0x7F.
    #[inline(always)]
    fn from_0x7f(x: u64) -> u64 {
        (((x & LOW) + ONES) | x) & HIGH
    }

    /// The high bits of the eight bytes of `x`, as eight bits. The multiplier moves each one to
    /// its place in the top byte; no two partial products meet, so nothing carries.
    #[inline(always)]
    fn pack(x: u64) -> u16 {
        ((x >> 7).wrapping_mul(0x0102_0408_1020_4080) >> 56) as u16
    }

    /// The vector classifier: four compares and four byte masks per sixteen bytes. The
    /// compiler does not make `pmovmskb` from a loop, and a mask is the whole point here.
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    #[allow(unsafe_code)]
    mod sse2 {
        use std::arch::x86_64::{
            _mm_cmpeq_epi8, _mm_loadu_si128, _mm_max_epu8, _mm_min_epu8, _mm_movemask_epi8,
            _mm_set1_epi8,
        };

        #[inline(always)]
        pub(super) fn classify(chunk: &[u8]) -> [u16; 4] {
            let chunk = &chunk[..16];
            // SAFETY: SSE2 is enabled at compile time (the `cfg` above; every x86_64 CPU has
            // it), and the unaligned load reads exactly the sixteen bytes `chunk` borrows.
            unsafe {
                let v = _mm_loadu_si128(chunk.as_ptr().cast());
                let quotes = _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8)));
                let backslashes = _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8)));
                // Below 0x20 exactly when the unsigned minimum with 0x1F leaves the byte as is.
                let controls =
                    _mm_movemask_epi8(_mm_cmpeq_epi8(_mm_min_epu8(v, _mm_set1_epi8(0x1F)), v));
                // From 0x7F exactly when the unsigned maximum with 0x7F leaves it as is.
                let wide =
                    _mm_movemask_epi8(_mm_cmpeq_epi8(_mm_max_epu8(v, _mm_set1_epi8(0x7F)), v));
                [quotes as u16, backslashes as u16, controls as u16, wide as u16]
            }
        }
    }

    /// Which member [`Fields`] records `key` names (the text between its quotes, already
    /// checked), decoding escapes as serde_json does for keys: an unpaired surrogate is an error.
    fn member(key: &[u8]) -> Result<Option<&'static str>, Invalid> {
        if !key.contains(&b'\\') {
            return Ok(name_of(key));
        }
        // The longest name is 7 bytes; a longer key is decoded only to check it.
        let mut out = [0u8; 8];
        let mut len = 0;
        let mut push = |bytes: &[u8]| {
            if let Some(to) = out.get_mut(len..len + bytes.len()) {
                to.copy_from_slice(bytes);
            }
            len += bytes.len();
        };
        let mut i = 0;
        while i < key.len() {
            if key[i] != b'\\' {
                push(&key[i..i + 1]);
                i += 1;
                continue;
            }
            let decoded = match key.get(i + 1) {
                Some(b'u') => {
                    let high = hex4(key, i + 2)?;
                    i += 6;
                    match high {
                        0xD800..=0xDBFF => {
                            if key.get(i..i + 2) != Some(b"\\u") {
                                return Err(Invalid);
                            }
                            let low = hex4(key, i + 2)?;
                            if !(0xDC00..=0xDFFF).contains(&low) {
                                return Err(Invalid);
                            }
                            i += 6;
                            0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
                        }
                        0xDC00..=0xDFFF => return Err(Invalid),
                        _ => high,
                    }
                }
                Some(&c) => {
                    i += 2;
                    u32::from(match c {
                        b'b' => 0x08,
                        b'f' => 0x0C,
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        other => other,
                    })
                }
                None => return Err(Invalid),
            };
            let decoded = char::from_u32(decoded).ok_or(Invalid)?;
            push(decoded.encode_utf8(&mut [0; 4]).as_bytes());
        }
        Ok(out.get(..len).and_then(name_of))
    }

    pub(super) fn name_of(key: &[u8]) -> Option<&'static str> {
        Some(match key {
            b"jsonrpc" => "jsonrpc",
            b"id" => "id",
            b"method" => "method",
            b"params" => "params",
            b"result" => "result",
            b"error" => "error",
            _ => return None,
        })
    }

    /// The four hex digits at `i`.
    fn hex4(b: &[u8], i: usize) -> Result<u32, Invalid> {
        let hex = b.get(i..i + 4).ok_or(Invalid)?;
        hex.iter().try_fold(0, |n, &c| Ok(n << 4 | char::from(c).to_digit(16).ok_or(Invalid)?))
    }

    /// Number grammar: `-? (0 | [1-9][0-9]*) (\.[0-9]+)? ([eE][+-]?[0-9]+)?`.
    fn number_end(b: &[u8], mut i: usize) -> Result<usize, Invalid> {
        let digits = |mut i: usize| {
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            i
        };
        if b.get(i) == Some(&b'-') {
            i += 1;
        }
        i = match b.get(i) {
            Some(b'0') => i + 1,
            Some(b'1'..=b'9') => digits(i + 1),
            _ => return Err(Invalid),
        };
        if b.get(i) == Some(&b'.') {
            if !b.get(i + 1).is_some_and(u8::is_ascii_digit) {
                return Err(Invalid);
            }
            i = digits(i + 1);
        }
        if let Some(b'e' | b'E') = b.get(i) {
            i += 1;
            if let Some(b'+' | b'-') = b.get(i) {
                i += 1;
            }
            if !b.get(i).is_some_and(u8::is_ascii_digit) {
                return Err(Invalid);
            }
            i = digits(i);
        }
        Ok(i)
    }

    fn literal(b: &[u8], i: usize, word: &[u8]) -> Result<usize, Invalid> {
        match b.get(i..i + word.len()) {
            Some(found) if found == word => Ok(i + word.len()),
            _ => Err(Invalid),
        }
    }

    /// The index of the first byte at or after `i` that is not JSON whitespace.
    #[inline]
    fn ws(b: &[u8], mut i: usize) -> usize {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = b.get(i) {
            i += 1;
        }
        i
    }

    /// The containers around the current value, one bit per level (set for an object). The
    /// first 64 levels take no allocation; deeper levels take a bit each, so a line of `n`
    /// bytes needs at most `n / 8` bytes here.
    #[derive(Default)]
    struct Nesting {
        depth: usize,
        low: u64,
        high: Vec<u64>,
    }

    impl Nesting {
        fn push(&mut self, object: bool) {
            let (word, bit) = match self.depth {
                depth @ 0..64 => (&mut self.low, depth),
                depth => {
                    let idx = (depth - 64) / 64;
                    if idx == self.high.len() {
                        self.high.push(0);
                    }
                    (&mut self.high[idx], depth % 64)
                }
            };
            *word = *word & !(1 << bit) | u64::from(object) << bit;
            self.depth += 1;
        }

        fn pop(&mut self) {
            self.depth -= 1;
        }

        /// Whether the innermost container is an object; `None` at the top level.
        fn top(&self) -> Option<bool> {
            let depth = self.depth.checked_sub(1)?;
            let word = match depth {
                0..64 => self.low,
                _ => self.high[(depth - 64) / 64],
            };
            Some(word >> (depth % 64) & 1 == 1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn ok(line: &str, kind: Kind, id: Option<&str>, method: Option<&str>) {
        let msg = parse(line.as_bytes()).unwrap_or_else(|rej| panic!("rejected: {}", rej.error));
        assert_eq!(msg.kind, kind);
        assert_eq!(msg.id.map(|id| id.get()), id);
        assert_eq!(msg.method.as_deref(), method);
    }

    #[track_caller]
    fn bad(line: &[u8], error: FrameError, id: Option<&str>) {
        match parse(line) {
            Ok(msg) => panic!("accepted: {msg:?}"),
            Err(rej) => {
                assert_eq!(rej.error, error);
                assert_eq!(rej.id.map(|id| id.get()), id);
            }
        }
    }

    #[test]
    fn kinds() {
        ok(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#, Kind::Request, Some("1"), Some("ping"));
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
        ok(r#"{"jsonrpc":"2.0","id":0,"result":{}}"#, Kind::Response, Some("0"), None);
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
        bad(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"\xff\"}", FrameError::NotUtf8, None);
        bad(b"hello", FrameError::NotJson, None);
        bad(b"{\"jsonrpc\":\"2.0\",\"id\":1,", FrameError::NotJson, None);
        bad(
            br#"{"jsonrpc":"2.0","id":1,"method":"a"} {"jsonrpc":"2.0"}"#,
            FrameError::NotJson,
            None,
        );
        bad(br#"[{"jsonrpc":"2.0","id":1,"method":"a"}]"#, FrameError::Batch, None);
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
        bad(br#"{"jsonrpc":"1.0","id":3,"method":"a"}"#, FrameError::BadVersion, Some("3"));
        bad(br#"{"id":3,"method":"a"}"#, FrameError::BadVersion, Some("3"));
        bad(br#"{"jsonrpc":"2.0","id":null,"method":"a"}"#, FrameError::BadId, None);
        bad(br#"{"jsonrpc":"2.0","id":1.5,"method":"a"}"#, FrameError::BadId, None);
        bad(br#"{"jsonrpc":"2.0","id":"\ud800","method":"a"}"#, FrameError::BadId, None);
        bad(br#"{"jsonrpc":"2.0","id":"a\udc00","result":{}}"#, FrameError::BadId, None);
        bad(br#"{"jsonrpc":"2.0","id":1e3,"method":"a"}"#, FrameError::BadId, None);
        bad(br#"{"jsonrpc":"2.0","id":{"a":1},"method":"a"}"#, FrameError::BadId, None);
        bad(
            br#"{"jsonrpc":"2.0","id":123456789012345678901234567890,"method":"a"}"#,
            FrameError::BadId,
            None,
        );
        bad(br#"{"jsonrpc":"2.0","id":1,"method":7}"#, FrameError::BadMethod, Some("1"));
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
        bad(br#"{"jsonrpc":"2.0","id":1}"#, FrameError::ResultAndError, Some("1"));
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
        let key = |text: &str| id_key(Raw::parse(text).unwrap()).into_owned();
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
            [Ok(b"ab\n".to_vec()), Ok(b"\n".to_vec()), Ok(b"cd\r\n".to_vec()), Ok(b"ef".to_vec())]
        );
        // Exactly at the limit is fine, one byte more is not.
        let out = read_all(b"12345678\n123456789\nok\n", 8);
        assert_eq!(
            out,
            [
                Ok(b"12345678\n".to_vec()),
                Err(Oversize { len: 9, id: None, has_method: false }),
                Ok(b"ok\n".to_vec()),
            ]
        );
        let out = read_all(b"123456789", 8);
        assert_eq!(out, [Err(Oversize { len: 9, id: None, has_method: false })]);
    }

    #[test]
    fn oversize_recovers_id() {
        let pad = "x".repeat(100);
        let line = format!("{{\"method\":\"tools/call\",\"params\":{{\"a\":\"{pad}\",\"id\":5,\"b\":[{{}}]}},\"jsonrpc\":\"2.0\",\"id\":\"r-1\"}}\nnext\n");
        let out = read_all(line.as_bytes(), 40);
        let Err(oversize) = &out[0] else { panic!("not too long") };
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
            let Err(oversize) = &out[0] else { panic!("not too long") };
            assert_eq!(oversize.id, None, "{line}");
        }
    }

    /// What serde_json makes of a line: `Err` if it refuses it, `None` for a valid value that
    /// is not an object, and an object's members in order (keys decoded). Keys are decoded
    /// into `String`, so a top-level key with an unpaired surrogate is refused, as `parse` does.
    fn serde_view(text: &str) -> Result<Option<Vec<(String, String)>>, ()> {
        struct Members;
        impl<'de> serde::de::Visitor<'de> for Members {
            type Value = Vec<(String, String)>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut members = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    let value = map.next_value::<&serde_json::value::RawValue>()?;
                    members.push((key, value.get().to_owned()));
                }
                Ok(members)
            }
        }
        serde_json::from_str::<serde::de::IgnoredAny>(text).map_err(|_| ())?;
        if !text.trim_start_matches([' ', '\t', '\n', '\r']).starts_with('{') {
            return Ok(None);
        }
        let mut de = serde_json::Deserializer::from_str(text);
        let members = serde::Deserializer::deserialize_map(&mut de, Members).map_err(|_| ())?;
        de.end().map_err(|_| ())?;
        Ok(Some(members))
    }

    /// Asserts that both ways of checking `text` (either string classifier) agree with
    /// serde_json: the same verdict, the same kind of value, the same members; and that
    /// `Raw::parse` agrees with `serde_json::from_str::<&RawValue>`. Returns the verdict.
    #[track_caller]
    fn agrees(text: &str) -> bool {
        let expected = serde_view(text);
        let vector = json::top(text);
        let portable = json::top_with::<true>(text);
        for (how, got) in [("vector", vector), ("portable", portable)] {
            match (&expected, got) {
                (Err(()), Err(json::Invalid)) => {}
                (Ok(None), Ok(json::Top::Array | json::Top::Other)) => {
                    let array = text.trim_start_matches([' ', '\t', '\n', '\r']).starts_with('[');
                    let got_array = matches!(json::top(text), Ok(json::Top::Array));
                    assert_eq!(got_array, array, "{how}: array or not: {text:?}");
                }
                (Ok(Some(members)), Ok(json::Top::Object(fields))) => {
                    let mut duplicate = None;
                    for (idx, (key, _)) in members.iter().enumerate() {
                        if members[..idx].iter().any(|(other, _)| other == key) {
                            duplicate = duplicate.or(json::name_of(key.as_bytes()));
                        }
                    }
                    assert_eq!(fields.duplicate, duplicate, "{how}: duplicate in {text:?}");
                    let last = |name: &str| {
                        members
                            .iter()
                            .rev()
                            .find(|(key, _)| key == name)
                            .map(|(_, value)| value.as_str())
                    };
                    let got = [
                        fields.jsonrpc,
                        fields.id,
                        fields.method,
                        fields.params,
                        fields.result,
                        fields.error,
                    ];
                    if let Some(recorded) = fields.params_members {
                        let mut expected = Vec::new();
                        fields.params.unwrap().members(|key, value| {
                            expected.push((key, value.get()));
                            true
                        });
                        let kept = recorded.len.min(MAX_MEMBERS);
                        let got: Vec<_> = recorded.list[..kept]
                            .iter()
                            .map(|&(key, value)| (key, value.get()))
                            .collect();
                        assert_eq!(
                            recorded.len,
                            expected.len(),
                            "{how}: params members of {text:?}"
                        );
                        assert_eq!(got, expected[..kept], "{how}: params members of {text:?}");
                    }
                    assert_eq!(
                        fields.params_members.is_some(),
                        fields.params.is_some_and(|raw| raw.get().starts_with('{')),
                        "{how}: params members kept or not: {text:?}"
                    );
                    for (name, got) in ["jsonrpc", "id", "method", "params", "result", "error"]
                        .into_iter()
                        .zip(got)
                    {
                        assert_eq!(
                            got.map(|raw| raw.get()),
                            last(name),
                            "{how}: member {name} of {text:?}"
                        );
                    }
                }
                (expected, got) => panic!(
                    "{how}: serde_json says {expected:?}, we say {:?}: {text:?}",
                    got.map(|top| match top {
                        json::Top::Object(_) => "object",
                        json::Top::Array => "array",
                        json::Top::Other => "other",
                    })
                    .map_err(|_| "invalid")
                ),
            }
        }
        let raw =
            serde_json::from_str::<&serde_json::value::RawValue>(text).ok().map(|raw| raw.get());
        assert_eq!(Raw::parse(text).map(|raw| raw.get()), raw, "Raw::parse of {text:?}");
        expected.is_ok()
    }

    #[track_caller]
    fn valid(text: &str) {
        assert!(agrees(text), "refused: {text:?}");
    }

    #[track_caller]
    fn invalid(text: &str) {
        assert!(!agrees(text), "accepted: {text:?}");
    }

    #[test]
    fn json_strings() {
        valid(r#"{"a":"x\""}"#);
        invalid(r#"{"a":"x\"}"#);
        valid(r#"{"a":"x\\"}"#);
        invalid(r#"{"a":"x\\\"}"#);
        valid(r#"{"a":"x\\\""}"#);
        valid(r#"{"a":"\\\\\\\"\\"}"#);
        valid(r#"{"a":"\"\"\"","b":"\\"}"#);
        valid(r#"{"a":"\/\b\f\n\r\t"}"#);
        invalid(r#"{"a":"\x"}"#);
        invalid(r#"{"a":"\'"}"#);
        invalid(r#"{"a":"\"#);
        invalid(r#"{"a":"abc"#);
        invalid("{\"a\":\"x\ty\"}");
        invalid("{\"a\":\"x\ny\"}");
        invalid("{\"a\":\"\u{0}\"}");
        invalid("{\"a\":\"\u{1f}\"}");
        valid("{\"a\":\"\u{7f}\u{a0}\u{2028}é🦀\"}");
        valid("{\"a\":\"\\t\",\t\"b\":\"tab before\"}");
        invalid("{\"a\":\"\\u12\"}");
        invalid("{\"a\":\"\\u12G4\"}");
        invalid("{\"a\":\"\\U1234\"}");
        valid("{\"a\":\"\\uABCD\\uabcd\\u0000\"}");
        // Unpaired surrogates are valid JSON text in values and nested keys...
        valid(r#"{"a":"\ud800","b":"\udc00x","c":"\ud800\u0041"}"#);
        valid(r#"{"a":{"\ud800":1},"b":["\udfff"]}"#);
        valid(r#"{"\ud83d\ude00":1,"a":"\ud83d\ude00"}"#);
        // ...but serde_json refuses them in the keys it decodes, and so do we at the top level.
        invalid(r#"{"\ud800":1}"#);
        invalid(r#"{"\udc00":1}"#);
        invalid(r#"{"i\ud800d":1,"method":"m"}"#);
        invalid(r#"{"\ud800\u0041":1}"#);
        invalid(r#"{"\ud800\n":1}"#);
        valid(r#"["\ud800",{"\ud800":1}]"#);
        // Escaped keys are the keys they spell.
        valid(r#"{"\u0069d":1,"\u006d\u0065thod":"m","para\u006ds":{},"\"id\"":2,"i\\d":3}"#);
    }

    #[test]
    fn json_grammar() {
        for number in
            ["0", "-0", "1e5", "1.5E-3", "-0.0E+00", "1E400", "12345678901234567890123", "0e0"]
        {
            valid(&format!("{{\"n\":{number}}}"));
            valid(&format!("[{number}]"));
            valid(number);
        }
        for number in [
            "01", "-01", "1.", ".5", "+1", "1e", "1e+", "-", "1.e3", "0x1", "--1", "1ee2",
            "Infinity", "NaN",
        ] {
            invalid(&format!("{{\"n\":{number}}}"));
            invalid(&format!("[{number}]"));
            invalid(number);
        }
        for literal in ["true", "false", "null"] {
            valid(&format!("{{\"v\":{literal}}}"));
        }
        for literal in ["tru", "nul", "True", "nulll", "fals"] {
            invalid(&format!("{{\"v\":{literal}}}"));
        }
        invalid(r#"{"a":1,}"#);
        invalid(r#"[1,]"#);
        invalid(r#"{"a":[1,2,]}"#);
        invalid(r#"[,1]"#);
        invalid(r#"{,}"#);
        invalid(r#"{"a" 1}"#);
        invalid(r#"{"a":}"#);
        invalid(r#"{a:1}"#);
        invalid(r#"{"a":1 "b":2}"#);
        invalid(r#"{"a":1}}"#);
        invalid(r#"{"a":1} x"#);
        invalid(r#"{"a":1}{}"#);
        invalid(r#"[}"#);
        invalid(r#"{]"#);
        invalid(r#"{"a":[}]}"#);
        invalid(r#"{"a":{]}"#);
        invalid("");
        invalid("   ");
        valid(r#"{"a":[[],{},[{}],{"b":[]},[[[]]]],"c":{}}"#);
        valid("{}");
        valid("[]");
        valid("\"s\"");
        valid(" \t\r\n{ \t\"a\" \n: \r[ 1 , { } ,[ ] ] , \"b\"\t:\tnull ,\"c\" : \"\" } \r\n");
        invalid("\u{c}{\"a\":1}");
        invalid("{\"a\":1}\u{c}");
        invalid("\u{a0}{\"a\":1}");
        invalid("{\"a\":\u{a0}1}");
        // No depth limit, as serde_json's skipping has none; nothing recurses.
        let depth = 100_000;
        valid(&format!("{{\"a\":{}{}}}", "[".repeat(depth), "]".repeat(depth)));
        valid(&format!("[{}1{}]", "{\"a\":[".repeat(depth), "]}".repeat(depth)));
        invalid(&format!("{{\"a\":{}{}}}", "[".repeat(depth), "]".repeat(depth - 1)));
        invalid(&format!("[{}1{}]", "{\"a\":[".repeat(depth), "}]".repeat(depth)));
    }

    /// Strings around the 16- and 64-byte steps of the string scan: backslash runs of every
    /// length ending at every offset, before a quote, an escape letter, a bad escape or a
    /// control byte, inside short and long strings, alone on the line or followed by more.
    #[test]
    fn json_strings_at_block_edges() {
        let after: [&str; 8] = ["\"", "n", "u0041", "u00G1", "x", "\u{1}", "\u{1f}", "é"];
        for run in 0..=67 {
            for lead in 0..=130 {
                let lead = "a".repeat(lead);
                let run = "\\".repeat(run);
                for next in after {
                    for rest in ["\"", "\"}", "xyz\",\"b\":\"\\\"\"}"] {
                        agrees(&format!("{{\"a\":\"{lead}{run}{next}{rest}"));
                    }
                }
            }
        }
        // Escaped quotes at and across every block edge, and long strings of them.
        for len in 0..300 {
            for unit in ["\\\"", "\\\\", "\\\\\\\"", "ab\\n", "\\u0022", "\u{1f}"] {
                let body = unit.repeat(len / unit.len() + 1);
                let body = &body[..len];
                agrees(&format!("{{\"s\":\"{body}\"}}"));
                agrees(&format!("[\"{body}\",\"{body}\"]"));
                agrees(&format!("\"{body}"));
            }
        }
        valid(&format!("{{\"s\":\"{}\"}}", "code \\\"with\\\" escapes\\n\\t".repeat(3000)));
        invalid(&format!("{{\"s\":\"{}\\x\"}}", "code \\\"with\\\" escapes\\n\\t".repeat(3000)));
    }

    /// The decoding reader against the checking one and `serde_json`, with both classifiers, on
    /// strings whose escapes, control bytes and wide bytes meet every block edge.
    #[test]
    fn string_readers_agree() {
        let read = |text: &str, lone, portable: bool| {
            let mut out = String::from("stale");
            let read = if portable {
                json::read_string::<true>(text, 0, lone, &mut out)
            } else {
                json::read_string::<false>(text, 0, lone, &mut out)
            };
            read.ok().map(|read| {
                let s = if read.decoded { out } else { text[1..read.end - 1].to_owned() };
                (read, s)
            })
        };
        let after: [&str; 12] = [
            "\"",
            "n",
            "u0041",
            "u00G1",
            "ud800\\udfff",
            "ud800\\n",
            "x",
            "\u{1}",
            "\u{7f}",
            "é",
            "😀",
            "\\",
        ];
        for run in 0..=6 {
            for lead in 0..=130 {
                let lead = "a".repeat(lead);
                let run = "\\".repeat(run);
                for next in after {
                    for rest in ["\"", "xyz\",\"b\":\"\\\"\"}", "\\t\\u00e9\"", ""] {
                        let text = format!("\"{lead}{run}{next}{rest}");
                        let replaced = read(&text, LoneSurrogate::Replace, false);
                        assert_eq!(replaced, read(&text, LoneSurrogate::Replace, true), "{text}");
                        let end = json::string_end::<false>(text.as_bytes(), 0).ok();
                        assert_eq!(replaced.as_ref().map(|(read, _)| read.end), end, "{text}");
                        let strict = read(&text, LoneSurrogate::Refuse, false);
                        assert_eq!(strict, read(&text, LoneSurrogate::Refuse, true), "{text}");
                        let serde =
                            end.and_then(|end| serde_json::from_str::<String>(&text[..end]).ok());
                        assert_eq!(strict.map(|(_, s)| s), serde, "{text}");
                    }
                }
            }
        }
    }

    /// The escaped-byte masks against the rule written out byte by byte: every run of up to 16
    /// backslashes in every place, with and without a carry, and random blocks.
    #[test]
    fn escaped_masks() {
        fn model(backslashes: u64, carry: u64) -> (u64, u64) {
            let mut escaped = 0;
            let mut next = carry == 1;
            for bit in 0..64 {
                if next {
                    escaped |= 1 << bit;
                    next = false;
                } else if backslashes >> bit & 1 == 1 {
                    next = true;
                }
            }
            (escaped, u64::from(next))
        }
        let mut rng = Rng(0x2545_F491_4F6C_DD1D);
        let check = |backslashes: u64| {
            for carry in [0, 1] {
                assert_eq!(
                    json::escaped(backslashes, carry),
                    model(backslashes, carry),
                    "{backslashes:064b} carry {carry}"
                );
            }
        };
        for pattern in 0..1 << 16 {
            for shift in [0, 20, 48] {
                check(pattern << shift);
            }
        }
        for _ in 0..100_000 {
            let (a, b) = (rng.next(), rng.next());
            check(a);
            check(a & b);
            check(a | b);
        }
    }

    /// The word-at-a-time classifier against the vector one, on every byte value in every place.
    #[test]
    fn classifiers_agree() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut chunks: Vec<[u8; 16]> = (0..=255).map(|c| [c; 16]).collect();
        for _ in 0..50_000 {
            let mut chunk = [0; 16];
            for byte in &mut chunk {
                *byte = match rng.below(4) {
                    0 => b"\"\\\x1f\x20\x00\x7f\x80\xff"[rng.below(8)],
                    _ => rng.next() as u8,
                };
            }
            chunks.push(chunk);
        }
        for chunk in &chunks {
            let expected: [u16; 4] =
                [|c: u8| c == b'"', |c: u8| c == b'\\', |c: u8| c < 0x20, |c: u8| c >= 0x7F].map(
                    |test| chunk.iter().rev().fold(0, |mask, &c| mask << 1 | u16::from(test(c))),
                );
            assert_eq!(json::classify::<true>(chunk), expected, "{chunk:?}");
            assert_eq!(json::classify::<false>(chunk), expected, "{chunk:?}");
        }
    }

    use crate::testing::Rng;

    /// Appends a random JSON value, valid by construction; `depth` bounds the nesting.
    fn gen_value(rng: &mut Rng, out: &mut String, depth: usize) {
        let pad = |rng: &mut Rng, out: &mut String| {
            if rng.below(4) == 0 {
                out.push_str(rng.pick(&[" ", "\t", "\r\n", "  ", "\n"]));
            }
        };
        pad(rng, out);
        match rng.below(if depth == 0 { 4 } else { 6 }) {
            0 => gen_string(rng, out),
            1 => out.push_str(rng.pick(&[
                "0",
                "-0",
                "7",
                "-12",
                "1.5",
                "1e5",
                "1.5E-3",
                "-0.0e+1",
                "123456789012345678901234567890",
            ])),
            2 => out.push_str(rng.pick(&["true", "false", "null"])),
            3 => gen_string(rng, out),
            4 => {
                out.push('[');
                for idx in 0..rng.below(4) {
                    if idx > 0 {
                        out.push(',');
                    }
                    gen_value(rng, out, depth - 1);
                }
                pad(rng, out);
                out.push(']');
            }
            _ => {
                out.push('{');
                for idx in 0..rng.below(4) {
                    if idx > 0 {
                        out.push(',');
                    }
                    pad(rng, out);
                    gen_key(rng, out);
                    pad(rng, out);
                    out.push(':');
                    gen_value(rng, out, depth - 1);
                }
                pad(rng, out);
                out.push('}');
            }
        }
        pad(rng, out);
    }

    fn gen_key(rng: &mut Rng, out: &mut String) {
        match rng.below(3) {
            0 => gen_string(rng, out),
            _ => out.push_str(rng.pick(&[
                r#""id""#,
                r#""\u0069d""#,
                r#""method""#,
                r#""m\u0065thod""#,
                r#""jsonrpc""#,
                r#""params""#,
                r#""result""#,
                r#""error""#,
                r#""i\ud800d""#,
                r#""\ud83d\ude00""#,
                r#""ids""#,
                r#""""#,
            ])),
        }
    }

    fn gen_string(rng: &mut Rng, out: &mut String) {
        out.push('"');
        for _ in 0..rng.below(12) {
            out.push_str(rng.pick(&[
                "a",
                "xyz",
                " ",
                "é",
                "🦀",
                "\\\"",
                "\\\\",
                "\\/",
                "\\b",
                "\\f",
                "\\n",
                "\\r",
                "\\t",
                "\\u0041",
                "\\ud800",
                "\\udc00",
                "\\ud83d\\ude00",
                "\\uFFFF",
                "\\\\\\\"",
                "'",
                "{",
                "]",
                ":",
                ",",
            ]));
        }
        if rng.below(8) == 0 {
            // A long run, so the screen's chunked loop runs too.
            out.push_str(&"code \\\"with\\\" escapes\\n\\t".repeat(1 + rng.below(8)));
        }
        out.push('"');
    }

    /// Breaks a valid text in a random place, the way a fuzzer would.
    fn mutate(rng: &mut Rng, text: &str) -> String {
        const BYTES: &[u8] = b"{}[]\",:\\ utfnlrsae0123456789-+.eE\t\n\r\x00\x1f\x0cx/";
        let mut bytes = text.as_bytes().to_vec();
        for _ in 0..1 + rng.below(3) {
            let at = rng.below(bytes.len() + 1);
            let byte = BYTES[rng.below(BYTES.len())];
            match rng.below(3) {
                0 if at < bytes.len() => bytes[at] = byte,
                1 if at < bytes.len() => {
                    bytes.remove(at);
                }
                _ => bytes.insert(at, byte),
            }
        }
        // Keep it UTF-8: `parse` checks UTF-8 before anything else.
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The property: for any text, our checker and serde_json agree (see `agrees`).
    #[test]
    fn json_agrees_with_serde_json() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let (mut n_valid, mut n_invalid) = (0, 0);
        for _ in 0..60_000 {
            let mut text = String::new();
            if rng.below(3) > 0 {
                // Shaped like a message, so the top-level members are exercised.
                text.push('{');
                for idx in 0..rng.below(6) {
                    if idx > 0 {
                        text.push(',');
                    }
                    gen_key(&mut rng, &mut text);
                    text.push(':');
                    gen_value(&mut rng, &mut text, 3);
                }
                text.push('}');
            } else {
                gen_value(&mut rng, &mut text, 4);
            }
            if rng.below(2) == 0 {
                text = mutate(&mut rng, &text);
            }
            if agrees(&text) {
                n_valid += 1;
            } else {
                n_invalid += 1;
            }
        }
        // Both verdicts are well represented, or the property proves little.
        assert!(n_valid > 20_000 && n_invalid > 10_000, "{n_valid} valid, {n_invalid} invalid");
    }
}
