//! Entry points for the fuzz targets in `fuzz/` and for replaying their findings in tests.
//!
//! Each entry point runs the fuzzer's bytes through the real code and then asserts properties,
//! so a finding is a wrong answer as well as a panic. The targets in `fuzz/fuzz_targets/` are
//! one-line shims into these functions; the tests at the bottom of this file replay the seeds
//! (`fuzz/seeds/<target>/`) and the crashers (`tests/data/fuzz/<target>/`) through the same
//! functions, so `cargo test` keeps every finding fixed.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::auth::{Identity, Key};
use crate::config::{self, Config, Settings, Switches};
use crate::frame::{self, FrameError, Kind, LineReader, Msg, Oversize, Read, INVALID_REQUEST};
use crate::gate::{Gate, Side};
use crate::glob;
use crate::ledger::{self, Ledger};
use crate::log::{self, Level};
use crate::normalize;
use crate::pin;
use crate::policy::{Action, Decision, Effect, Policy};
use crate::relay::{self, Event};
use crate::scan::{Category, Finding, Scanner, Target, EXCERPT_CHARS};

/// `--max-message-bytes` for the fuzz runs: small, so that oversized lines are cheap to reach.
const LIMIT: usize = 256;

/// `frame::MAX_SNIFFED_ID`: the longest id recovered from an oversized line.
const MAX_SNIFFED_ID: usize = 256;

/// `gate::MAX_CANCELLED`: how many cancelled ids the gate remembers per direction.
const MAX_CANCELLED: usize = 256;

/// Target `frame`: `data` is a byte stream from a peer, cut into lines by [`LineReader`] and
/// relayed by [`relay::pump`] into in-memory pipes. It is relayed three times, each through a
/// fresh [`Gate`]: as the client's stream, as the upstream's stream, and as both interleaved (a
/// line that starts with a tab is the upstream's, any other line the client's; each run of lines
/// from one side is one `pump`, as one relay thread would read it). The gate has no settings
/// file ([`Settings::transparent`]), so the interceptor chain must let every message through
/// unchanged and only framing and request bookkeeping can refuse anything. Asserted:
///
/// - The reader returns every line as it came (only a last line cut by end of input lacks its
///   `\n`) and never more than the limit plus one bytes; a longer line is reported with its exact
///   length, and an `id` or `method` recovered from it is what the parser finds in the whole line.
/// - Every line written is one whole line, written after its input line was read and before
///   the next was, so each output is tied to one input line; no input line yields two.
/// - A forwarded line is byte-identical to its input line (plus `\n` if cut by end of input),
///   goes to the other side, is no longer than the limit, and parses as a message.
/// - Every other line written is a JSON-RPC error object `{"jsonrpc","id","error":{"code",
///   "message"[,"data"]}}`, with the id of the request it answers (`null` only for a client line that
///   was not a message) and a reason naming the framing error.
/// - What happens to each line is what the relay promises: a request is forwarded unless its id
///   is open (then it is answered), a refused request is always answered, a response goes through
///   only to an open request (a late one to a cancelled request is dropped), a refused response
///   to an open request becomes an error for that request, and at the end the gate's open
///   requests are exactly the ones forwarded and neither answered nor cancelled.
/// - Each line is JSON to `frame::parse` exactly when it is to serde_json, with the same shape
///   and the same top-level members ([`check_json`]).
/// - Read as a JSON string from each of its quotes, each line reads as serde_json reads it
///   ([`check_strings`]).
pub fn frame(data: &[u8]) {
    log::set_level(Level::Off);
    let lines = split(data);
    for line in &lines {
        check_json(line.bytes);
        check_strings(line.bytes);
    }
    let reads = check_reader(data, &lines);
    check_pump(data, &lines, &reads, |_| Side::Client);
    check_pump(data, &lines, &reads, |_| Side::Upstream);
    check_pump(data, &lines, &reads, |line| match line.first() {
        Some(b'\t') => Side::Upstream,
        _ => Side::Client,
    });
}

/// Target `policy`: `data` is a settings file, a NUL byte, a tool name, a line break, the call's
/// arguments as JSON, another NUL byte, and a recipe for a generated policy. Asserted:
///
/// - [`config::parse`] never panics on the settings text (UTF-8, lossily), whatever it holds.
/// - When the text parses into a policy, [`Policy::decide`] never panics, for every identity the
///   file names (anonymous, each key's, and one holding every label a rule asks for under each
///   principal a rule names), for the tool name and every name pattern of the rules, for all
///   four kinds of action, with the given arguments, none and `{}`, at three times of the week.
/// - A decision names a rule of the policy with the same effect, or no rule and the default
///   effect (a resource URI that climbs above its root is denied without a rule, whatever the
///   default).
/// - `may_call_tool` is never more strict than `decide`: when it says an identity may not call a
///   tool, no call of that tool by that identity is allowed, with any of those arguments, at
///   any of those times.
/// - A `deny` rule with `param = "*"` catches what its `deny_regex` matches wherever it hides.
///   The recipe builds a regex and a string that it matches (literals of any character,
///   classes, repetitions, alternations, case-insensitive groups, anchors), hides the string in
///   the arguments at a chosen depth (as an object value, an object key or an array element,
///   among other values, with text around it unless the regex is anchored), and writes a
///   settings file in which that rule comes first (by priority, or by file order among equal
///   priorities), among other allow and deny rules and any default effect. The file must
///   parse, the call must be denied by that rule, and `may_call_tool` must agree with `decide`.
pub fn policy(data: &[u8]) {
    log::set_level(Level::Off);
    let (text, rest) = cut(data, 0);
    let (call, recipe) = cut(rest, 0);
    let (name, arguments) = cut(call, b'\n');
    let text = String::from_utf8_lossy(text);
    let name = String::from_utf8_lossy(name);
    let arguments: Option<Value> = serde_json::from_slice(arguments).ok();
    if let Ok(settings) = config::parse(&text, Path::new(""), Switches::default()) {
        if let Some(policy) = &settings.policy {
            check_decisions(policy, &settings.keys, &name, arguments.as_ref());
        }
    }
    deny_anywhere(&mut Bytes::new(recipe));
}

/// Target `ledger`. The first byte chooses what the rest is.
///
/// Odd: a ledger file as found on disk, checked with the test key when bit 1 is set, else with
/// none. [`ledger::verify_bytes`] never panics, and when it passes its report describes the
/// bytes: one line per newline, and a tail exactly when the bytes do not end with a newline.
/// [`Ledger::open`] never panics either, and a ledger that verifies can be continued: `open`
/// succeeds, one `append` later the file verifies with the new head one line longer (two when
/// `open` cut off a partial last line and recorded that), and the whole lines that were there
/// are unchanged.
///
/// Even: a recipe for 1 to 6 records (every field present or not, any text in each: ids and
/// arguments are JSON text from a peer, and need not be JSON), with or without an HMAC key of
/// any length, with or without `include_arguments`. They are written with `Ledger::open` and
/// `append` to a temporary file in two sessions (a restart in between). The file must verify,
/// with one line per record and the head that `Ledger::head` reports, and must not verify with
/// the other kind of chain (keyed or not). Then one chosen byte is replaced by another, one is
/// deleted, and one is inserted, each on its own copy, and none of the copies may verify,
/// except as a crash would leave the file: when the edit replaced or removed the final newline
/// the ledger verifies with one line fewer and an incomplete tail (and fails once the head is
/// given as `expect_head`), and a `{` added after the final newline is a tail that a crash
/// could have left. Every other edit fails with or without `expect_head`.
pub fn ledger(data: &[u8]) {
    log::set_level(Level::Off);
    match data.split_first() {
        Some((&mode, file)) if mode & 1 == 1 => {
            ledger_file(file, (mode & 2 != 0).then_some(LEDGER_KEY))
        }
        Some((_, recipe)) => ledger_recipe(&mut Bytes::new(recipe)),
        None => ledger_file(&[], None),
    }
}

/// Target `normalize`: `data` (UTF-8, lossily) is normalised in every form. Asserted:
///
/// - Nothing panics ([`normalize::forms`], [`normalize::hidden_markers`],
///   [`normalize::split_identifier`], [`normalize::entropy`]), and `forms` is exactly its parts.
/// - [`normalize::fold`] is idempotent, as the module promises, and its output is what the module
///   says: no more than one and a half times the bytes of the input (lower-casing makes three
///   bytes of a few two-byte letters; the module's own note that its largest expansion is a
///   ligature, three bytes to three, is not quite right), no ASCII upper case, no control or
///   invisible characters (ANSI escapes, C1 controls, zero-width and bidi characters, soft
///   hyphens, variation selectors, tag characters), and whitespace only as single `' '` or
///   `'\n'` between visible characters. Outside escape sequences, any whitespace character
///   folds as an ASCII space does, or as a line feed does if it is a line break (`\r`, VT, FF,
///   NEL, U+2028, U+2029).
/// - [`normalize::leet`] holds lines of its input, in order, each changed only where a leet
///   character became a letter (so each is as long as its line) and each changed somewhere.
/// - [`normalize::profile`] is right about what the text needs, since the scanner skips the
///   work it rules out: no leet view of the folded text when it finds no leet words, no decoded
///   layer when it finds nothing encoded, and for plain text no hidden markers and a fold that
///   only lower-cases and collapses whitespace. [`normalize::fold_where_needed`] folds to what
///   `fold` gives.
/// - [`normalize::decode`] returns at most [`normalize::MAX_DEPTH`] layers, numbered from 1,
///   each decoded by some encoding, each different from the one before (the first from the
///   input), each with its `folded` equal to `fold` of its text, and all together no longer
///   than [`normalize::MAX_EXPANSION`] times the input.
/// - [`normalize::hidden_markers`] counts tag characters only when it reports tags, never more
///   than the text has, reports concealed ANSI text only along with ANSI, and finds nothing in
///   ASCII text without an escape character.
/// - [`normalize::entropy`] lies between 0 and 8 bits per byte.
/// - [`normalize::json_lone_surrogates`] keeps the text's length and leaves no lone surrogate
///   escape for a second pass.
pub fn normalize(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    check_normalize(&text);
}

/// Target `scan`: `data` (UTF-8, lossily) is scanned with the built-in rules as text, and as
/// JSON: the text itself when it is JSON, else an object whose one key is the first line and
/// whose value is the rest (which reaches the rule for credentials under a key that names one).
/// For every target:
///
/// - [`Scanner::scan_text`], [`Scanner::scan_json`] and [`Scanner::scan_json_text`] never panic.
/// - A finding with a span is a secret, and the span lies on character boundaries inside the
///   string that its pointer names. A secret's excerpt has at most 16 characters (it is
///   masked), any other at most [`EXCERPT_CHARS`] and an ellipsis.
/// - [`Scanner::redact`] redacts exactly when `scan_text` finds a secret with a span; what it
///   returns differs from the input, has no secret with a span left when scanned again, and is
///   left alone by a second `redact` (idempotent).
/// - After [`Scanner::redact_json`], neither `scan_json` nor `scan_json_text` finds a secret
///   with a span in the value, and a second `redact_json` finds nothing to redact.
pub fn scan(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    check_scan(&text);
}

/// Target `pin`: `data` is a JSON value: the bytes themselves when they are JSON, else one
/// built from them (any nesting up to 64 levels, any strings, integers and floats) and then
/// written and read once, as every value that mcpdome pins was parsed from text. The value
/// is written out again with its object keys in a chosen order, strings escaped in chosen ways
/// and whitespace between tokens, and read back. Asserted:
///
/// - The value read back is the value, and has the same [`pin::canonical_json`] and
///   [`pin::tool_pin`]: key order, escapes and whitespace never change a pin. The same holds for
///   a tool definition holding the value as its `inputSchema` and `annotations`.
/// - `canonical_json` is what the module documents: keys sorted by their UTF-8 bytes, no
///   whitespace, strings and numbers as serde_json writes them (checked against a writer in this
///   file), and it is JSON that reads back as the same value and is its own canonical form
///   (idempotent).
/// - `tool_pin` is the hex SHA-256 of the canonical JSON.
pub fn pin(data: &[u8]) {
    let value = match serde_json::from_slice::<Value>(data) {
        Ok(value) => value,
        // Every value mcpdome pins was parsed from text, and serde_json does not read every
        // float back exactly as it wrote it (it has no `float_roundtrip`), so a value built
        // from bytes is written and read once first, as a server's would have been.
        Err(_) => {
            let built = json_value(&mut Bytes::new(data), 0);
            serde_json::from_str(&built.to_string()).expect("serde_json reads what it writes")
        }
    };
    let mut shuffle = Shuffle::new(data);
    check_pin(&value, &mut shuffle);
    let tool = serde_json::json!({
        "name": "fuzz",
        "description": "a tool",
        "inputSchema": value,
        "annotations": { "readOnlyHint": true, "value": value },
    });
    check_pin(&tool, &mut shuffle);
}

/// One line of the input, as the relay should see it.
struct Line<'a> {
    /// The line with its `\n` (absent only on a last line cut by end of input).
    bytes: &'a [u8],
    /// Offset just past the line in the input.
    end: usize,
}

impl Line<'_> {
    fn content(&self) -> &[u8] {
        self.bytes.strip_suffix(b"\n").unwrap_or(self.bytes)
    }

    fn too_long(&self) -> bool {
        self.content().len() > LIMIT
    }

    /// What the relay writes when it forwards this line.
    fn forwarded(&self) -> Vec<u8> {
        let mut out = self.content().to_vec();
        out.push(b'\n');
        out
    }
}

fn split(data: &[u8]) -> Vec<Line<'_>> {
    let mut end = 0;
    data.split_inclusive(|&b| b == b'\n')
        .map(|bytes| {
            end += bytes.len();
            Line { bytes, end }
        })
        .collect()
}

/// Runs [`LineReader`] over `data` and returns, per line, `None` for a line it returned whole
/// and the [`Oversize`] for a line over the limit.
fn check_reader(data: &[u8], lines: &[Line<'_>]) -> Vec<Option<Oversize>> {
    let mut reader = LineReader::new(Input::new(data, 0, data.len(), Arc::default()), LIMIT);
    let mut reads = Vec::with_capacity(lines.len());
    for (n_line, line) in lines.iter().enumerate() {
        match reader.read_line() {
            Ok(Some(Read::Line(bytes))) => {
                assert!(!line.too_long(), "line {n_line}: over the limit but returned whole");
                assert_eq!(bytes, line.bytes, "line {n_line}: returned changed");
                assert!(bytes.len() <= LIMIT + 1, "line {n_line}: reader held {}", bytes.len());
                reads.push(None);
            }
            Ok(Some(Read::TooLong(oversize))) => {
                assert!(line.too_long(), "line {n_line}: within the limit but refused");
                assert_eq!(oversize.len, line.content().len() as u64, "line {n_line}: length");
                check_sniffed(line, &oversize);
                reads.push(Some(oversize));
            }
            Ok(None) => panic!("line {n_line}: input ended early"),
            Err(err) => panic!("line {n_line}: {err}"),
        }
    }
    assert!(matches!(reader.read_line(), Ok(None)), "a line after the last");
    reads
}

/// The id and method recovered from an oversized line agree with what the parser finds in the
/// whole line, and are found whenever the line is a message written plainly (no escapes, no
/// whitespace, an id of at most `MAX_SNIFFED_ID` bytes).
fn check_sniffed(line: &Line<'_>, oversize: &Oversize) {
    let sniffed = oversize.id.as_deref();
    if let Some(id) = sniffed {
        assert!(is_id(id), "recovered id {id} is not a valid id");
    }
    match frame::parse(line.bytes) {
        Ok(msg) => {
            let id = msg.id.map(|id| id.get());
            if let (Some(sniffed), Some(id)) = (sniffed, msg.id) {
                assert_eq!(
                    key(sniffed),
                    frame::id_key(id),
                    "recovered id differs from the parsed one"
                );
            }
            if oversize.has_method {
                assert!(msg.method.is_some(), "recovered a method the parser does not see");
            }
            let plain = !line.content().iter().any(|&b| b == b'\\' || b.is_ascii_whitespace());
            if plain && id.is_none_or(|id| id.len() <= MAX_SNIFFED_ID) {
                assert_eq!(sniffed.is_some(), id.is_some(), "id of a plain message not recovered");
                assert_eq!(oversize.has_method, msg.method.is_some(), "method not recovered");
            }
        }
        // An escaped duplicate key is invisible to the scan, so it may find the other value.
        Err(rejected) if matches!(rejected.error, FrameError::DuplicateKey(_)) => {}
        // Not a JSON object: the scan does not validate, so anything it recovers is allowed.
        Err(rejected)
            if matches!(
                rejected.error,
                FrameError::NotUtf8
                    | FrameError::NotJson
                    | FrameError::Batch
                    | FrameError::NotObject
            ) => {}
        Err(rejected) => {
            if let (Some(sniffed), Some(id)) = (sniffed, rejected.id) {
                assert_eq!(
                    key(sniffed),
                    frame::id_key(id),
                    "recovered id differs from the parsed one"
                );
            }
            if oversize.has_method {
                assert!(rejected.has_method, "recovered a method the parser does not see");
            }
        }
    }
}

/// The [`frame::id_key`] of an id given as JSON text.
fn key(text: &str) -> String {
    frame::id_key(frame::Raw::parse(text).expect("an id is JSON")).into_owned()
}

/// A valid JSON-RPC id as MCP allows it: a string or an integer within `i64`.
fn is_id(text: &str) -> bool {
    serde_json::from_str::<&RawValue>(text).is_ok_and(|raw| raw.get() == text)
        && (text.starts_with('"') || text.parse::<i64>().is_ok())
}

/// `frame::parse` and serde_json agree on `line`: it is JSON to one exactly when it is to the
/// other (`from_slice::<IgnoredAny>`, plus serde_json's refusal of an unpaired surrogate in a
/// top-level key, which it decodes); an array is a `Batch`, another non-object `NotObject`; and
/// an object has the same top-level members: the first of the six names given twice is the
/// `DuplicateKey`, else the message view (or the refusal) holds the last value of each.
/// [`frame::read_string`] from each quote of `line` (the first 64): it reads what serde_json
/// reads from there up to the end it finds, decoded the same and as plain as
/// [`normalize::is_plain`](crate::normalize::is_plain) says; it refuses only what serde_json
/// refuses up to the first quote after an even run of backslashes; and a lone surrogate changes
/// only the strict reading.
fn check_strings(line: &[u8]) {
    let Ok(text) = std::str::from_utf8(line) else { return };
    let mut out = String::new();
    for open in memchr::memchr_iter(b'"', line).take(64) {
        let strict =
            frame::read_string(text, open, frame::LoneSurrogate::Refuse, &mut out).map(|read| {
                let s = if read.decoded {
                    out.clone()
                } else {
                    text[open + 1..read.end - 1].to_owned()
                };
                (read.end, s, read.plain)
            });
        let replaced = frame::read_string(text, open, frame::LoneSurrogate::Replace, &mut out)
            .map(|read| read.end);
        match &strict {
            Some((end, s, plain)) => {
                let serde = serde_json::from_str::<String>(&text[open..*end]);
                assert_eq!(serde.as_ref().ok(), Some(s), "{text:?} from {open}");
                assert_eq!(
                    *plain,
                    crate::normalize::is_plain(s.as_bytes()),
                    "{text:?} from {open}"
                );
                assert_eq!(replaced, Some(*end), "{text:?} from {open}");
            }
            None => {
                let mut close = open + 1;
                let end = loop {
                    match line.get(close) {
                        Some(b'"') => break Some(close + 1),
                        Some(b'\\') => close += 2,
                        Some(_) => close += 1,
                        None => break None,
                    }
                };
                if let Some(end) = end.filter(|&end| end <= text.len()) {
                    let literal = &text[open..end];
                    assert!(serde_json::from_str::<String>(literal).is_err(), "{literal:?}");
                    if replaced.is_some() {
                        assert!(literal.contains("\\u"), "{literal:?}");
                    }
                }
            }
        }
    }
}

fn check_json(line: &[u8]) {
    struct Members;
    impl<'de> serde::de::Visitor<'de> for Members {
        type Value = Vec<(String, &'de str)>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut members = Vec::new();
            while let Some(key) = map.next_key::<String>()? {
                members.push((key, map.next_value::<&RawValue>()?.get()));
            }
            Ok(members)
        }
    }
    let parsed = frame::parse(line);
    let error = parsed.as_ref().err().map(|rejected| rejected.error);
    let Ok(text) = std::str::from_utf8(line) else {
        assert_eq!(error, Some(FrameError::NotUtf8), "{line:?}");
        return;
    };
    if serde_json::from_str::<serde::de::IgnoredAny>(text).is_err() {
        assert_eq!(error, Some(FrameError::NotJson), "serde_json refuses {text:?}");
        return;
    }
    let members = match text.trim_start_matches([' ', '\t', '\n', '\r']).as_bytes()[0] {
        b'{' => {
            let mut de = serde_json::Deserializer::from_str(text);
            serde::Deserializer::deserialize_map(&mut de, Members)
        }
        b'[' => return assert_eq!(error, Some(FrameError::Batch), "{text:?}"),
        _ => return assert_eq!(error, Some(FrameError::NotObject), "{text:?}"),
    };
    let Ok(members) = members else {
        // A top-level key serde_json cannot decode.
        return assert_eq!(error, Some(FrameError::NotJson), "{text:?}");
    };
    let names = ["jsonrpc", "id", "method", "params", "result", "error"];
    let duplicate = members.iter().enumerate().find_map(|(idx, (key, _))| {
        let again = members[..idx].iter().any(|(first, _)| first == key);
        names.into_iter().find(|name| again && name == key)
    });
    if let Some(name) = duplicate {
        return assert_eq!(error, Some(FrameError::DuplicateKey(name)), "{text:?}");
    }
    let last =
        |name: &str| members.iter().rev().find(|(key, _)| key == name).map(|(_, value)| *value);
    match &parsed {
        Ok(msg) => {
            assert_eq!(msg.id.map(|id| id.get()), last("id"), "id of {text:?}");
            let method =
                last("method").map(|method| serde_json::from_str::<String>(method).unwrap());
            assert_eq!(msg.method.as_deref(), method.as_deref(), "method of {text:?}");
            let params = last("params").filter(|params| *params != "null");
            assert_eq!(msg.params.map(|params| params.get()), params, "params of {text:?}");
            assert_eq!(msg.result.map(|result| result.get()), last("result"), "result of {text:?}");
            assert_eq!(msg.error.map(|error| error.get()), last("error"), "error of {text:?}");
        }
        Err(rejected) => {
            assert!(
                !matches!(
                    rejected.error,
                    FrameError::NotJson | FrameError::Batch | FrameError::NotObject
                ),
                "{text:?}"
            );
            assert_eq!(rejected.has_method, last("method").is_some(), "method of {text:?}");
            if let Some(id) = rejected.id {
                assert_eq!(Some(id.get()), last("id"), "id of {text:?}");
            }
        }
    }
}

/// Relays the lines of `data` through one gate, each from the side `side_of` says, and checks
/// what was written for each line against [`Book`].
fn check_pump(
    data: &[u8],
    lines: &[Line<'_>],
    reads: &[Option<Oversize>],
    side_of: fn(&[u8]) -> Side,
) {
    let trace = Arc::new(Mutex::new(Trace::default()));
    let pipe = |to| Box::new(Pipe { to, trace: Arc::clone(&trace) });
    let gate = Gate::new(
        Config::transparent(LIMIT),
        Settings::transparent(Default::default()),
        pipe(Side::Client),
        pipe(Side::Upstream),
    );
    let mut start = 0;
    for run in lines.chunk_by(|a, b| side_of(a.bytes) == side_of(b.bytes)) {
        let from = side_of(run[0].bytes);
        let end = run[run.len() - 1].end;
        let input = Input::new(data, start, end, Arc::clone(&trace));
        let event = relay::pump(&gate, from, input);
        assert!(
            matches!(
                (from, &event),
                (Side::Client, Event::ClientEof) | (Side::Upstream, Event::UpstreamEof)
            ),
            "pump from the {} ended with {event:?}",
            from.name()
        );
        start = end;
    }

    let sent = std::mem::take(&mut lock(&trace).sent);
    let mut sent = sent.iter().peekable();
    let mut book = Book::default();
    for (n_line, (line, oversize)) in lines.iter().zip(reads).enumerate() {
        let from = side_of(line.bytes);
        let mut out = None;
        while let Some(it) = sent.next_if(|it| it.at <= line.end) {
            assert_eq!(it.at, line.end, "line {n_line}: written while the line was being read");
            assert!(out.replace(it).is_none(), "line {n_line}: two lines written for it");
        }
        let expect = book.expect(from, line, oversize.as_ref());
        check_output(n_line, from, line, out, expect);
    }
    assert!(sent.next().is_none(), "written after the last line");
    for side in [Side::Client, Side::Upstream] {
        let open: HashSet<String> = gate.drain_requests(side).into_iter().collect();
        assert_eq!(open, book.open[index(side)], "open requests from the {}", side.name());
    }
}

/// What the relay should write for one input line.
#[derive(Debug)]
enum Expect {
    Nothing,
    /// The line itself, to the other side.
    Forward,
    /// A JSON-RPC error; `reason` is part of its message.
    Reply {
        to: Side,
        id: Option<String>,
        code: i32,
        reason: String,
    },
}

/// The requests each side has sent and not had answered, as the relay promises to track them,
/// keyed by [`frame::id_key`] and indexed by [`index`] of the sender.
#[derive(Default)]
struct Book {
    open: [HashSet<String>; 2],
    /// Cancelled by their sender and not answered yet, oldest first.
    cancelled: [VecDeque<String>; 2],
}

impl Book {
    /// What the relay must write for `line` from `from`, recording its effect on the requests.
    fn expect(&mut self, from: Side, line: &Line<'_>, oversize: Option<&Oversize>) -> Expect {
        if let Some(oversize) = oversize {
            let error = FrameError::TooLong { len: oversize.len, limit: LIMIT };
            let id = oversize.id.as_deref().map(key);
            return self.refused(from, oversize.has_method, id, error, false);
        }
        if line.bytes.iter().all(u8::is_ascii_whitespace) {
            return Expect::Nothing;
        }
        let msg = match frame::parse(line.bytes) {
            Ok(msg) => msg,
            Err(rejected) => {
                let id = rejected.id.map(|id| frame::id_key(id).into_owned());
                return self.refused(from, rejected.has_method, id, rejected.error, true);
            }
        };
        let (sender, other) = (index(from), index(from.other()));
        match (msg.kind, msg.id.map(|id| frame::id_key(id).into_owned())) {
            (Kind::Request, Some(id)) => {
                if self.open[sender].contains(&id) {
                    let reason = String::new();
                    return Expect::Reply { to: from, id: Some(id), code: INVALID_REQUEST, reason };
                }
                self.open[sender].insert(id);
            }
            // The answer to an open request is forwarded; a late one to a cancelled request is
            // recognised (and forgotten) but dropped, like one to no request at all.
            (Kind::Response, Some(id)) if !self.open[other].remove(&id) => {
                self.uncancel(other, &id);
                return Expect::Nothing;
            }
            _ if msg.method() == "notifications/cancelled" => match cancelled_request(&msg) {
                Some(id) if self.open[sender].remove(&id) => {
                    if self.cancelled[sender].len() == MAX_CANCELLED {
                        self.cancelled[sender].pop_front();
                    }
                    self.cancelled[sender].push_back(id);
                }
                _ => return Expect::Nothing,
            },
            _ => {}
        }
        Expect::Forward
    }

    /// A line that is not forwarded: a request is answered, a response to an open request turns
    /// into an error for it, and a client line that is not a message at all (`answer_null`) is
    /// answered with id `null`.
    fn refused(
        &mut self,
        from: Side,
        has_method: bool,
        id: Option<String>,
        error: FrameError,
        answer_null: bool,
    ) -> Expect {
        let (code, reason) = (error.code(), error.to_string());
        match (has_method, id) {
            (true, Some(id)) => Expect::Reply { to: from, id: Some(id), code, reason },
            (false, Some(id)) => {
                let other = from.other();
                if self.open[index(other)].remove(&id) {
                    return Expect::Reply { to: other, id: Some(id), code, reason };
                }
                self.uncancel(index(other), &id);
                Expect::Nothing
            }
            (_, None) if from == Side::Client && answer_null => {
                Expect::Reply { to: from, id: None, code, reason }
            }
            (_, None) => Expect::Nothing,
        }
    }

    /// Forgets one cancellation of `id`; false if there was none.
    fn uncancel(&mut self, sender: usize, id: &str) -> bool {
        let cancelled = &mut self.cancelled[sender];
        match cancelled.iter().position(|it| it == id) {
            Some(idx) => cancelled.remove(idx).is_some(),
            None => false,
        }
    }
}

fn index(side: Side) -> usize {
    match side {
        Side::Client => 0,
        Side::Upstream => 1,
    }
}

/// The `requestId` of a `notifications/cancelled`, as an id key.
fn cancelled_request(msg: &Msg<'_>) -> Option<String> {
    let params: Value = serde_json::from_str(msg.params?.get()).ok()?;
    match params.get("requestId")? {
        id @ Value::String(_) => Some(id.to_string()),
        Value::Number(n) if n.is_i64() => Some(n.to_string()),
        _ => None,
    }
}

fn check_output(n_line: usize, from: Side, line: &Line<'_>, out: Option<&Sent>, expect: Expect) {
    let who = from.name();
    match (expect, out) {
        (Expect::Nothing, None) => {}
        (Expect::Forward, Some(out)) => {
            assert_eq!(out.to, from.other(), "{who} line {n_line}: forwarded back to its sender");
            assert_eq!(out.bytes, line.forwarded(), "{who} line {n_line}: forwarded changed");
            assert!(out.bytes.len() <= LIMIT + 1, "{who} line {n_line}: forwarded over the limit");
            assert!(frame::parse(&out.bytes).is_ok(), "{who} line {n_line}: forwarded non-message");
        }
        (Expect::Reply { to, id, code, reason }, Some(out)) => {
            let what = format!("{who} line {n_line}: error to the {}", to.name());
            assert_eq!(out.to, to, "{what}: sent to the wrong side");
            let reply = error_reply(&out.bytes);
            assert_eq!(reply.id, id, "{what}: id");
            assert_eq!(reply.code, i64::from(code), "{what}: code");
            assert!(
                reply.message.contains(&reason),
                "{what}: {:?} lacks {reason:?}",
                reply.message
            );
        }
        (expect, out) => panic!(
            "{who} line {n_line}: expected {expect:?}, wrote {:?}",
            out.map(|out| (out.to, String::from_utf8_lossy(&out.bytes)))
        ),
    }
}

/// A JSON-RPC error response as mcpdome writes it.
struct Reply {
    /// The id key, `None` for `null`.
    id: Option<String>,
    code: i64,
    message: String,
}

/// Checks that `bytes` is one line holding exactly `{"jsonrpc":"2.0","id":..,"error":{"code":
/// int,"message":string}}` (and perhaps `error.data`, an object), and returns its fields.
///
/// The id is checked as JSON text, not decoded: an id string may hold an escaped lone surrogate
/// (`"\ud800"`), which JSON's grammar allows and `frame::parse` accepts, but serde_json cannot
/// decode into a `String`; mcpdome echoes such an id as the sender wrote it.
fn error_reply(bytes: &[u8]) -> Reply {
    let text = std::str::from_utf8(bytes).expect("error line is not UTF-8");
    let body = text.strip_suffix('\n').expect("error line lacks its newline");
    assert!(!body.contains('\n'), "error line is more than one line: {body}");
    let fields: BTreeMap<String, &RawValue> = serde_json::from_str(body)
        .unwrap_or_else(|err| panic!("error line is not a JSON object ({err}): {body}"));
    assert_eq!(fields.keys().collect::<Vec<_>>(), ["error", "id", "jsonrpc"], "{body}");
    assert_eq!(fields["jsonrpc"].get(), r#""2.0""#, "{body}");
    let error: Value = serde_json::from_str(fields["error"].get()).unwrap();
    let error = error.as_object().expect("`error` is not an object");
    let mut keys: Vec<_> = error.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert!(matches!(keys[..], ["code", "message"] | ["code", "data", "message"]), "{body}");
    assert!(error.get("data").is_none_or(Value::is_object), "{body}");
    let code = error["code"].as_i64().expect("`code` is not an integer");
    assert!(i32::try_from(code).is_ok(), "{body}");
    let message = error["message"].as_str().expect("`message` is not a string").to_owned();
    assert!(message.starts_with("mcpdome: "), "{body}");
    let id = match fields["id"].get() {
        "null" => None,
        id if is_id(id) => Some(key(id)),
        id => panic!("id {id} is not a string or an integer: {body}"),
    };
    if id.is_some() {
        // mcpdome's own error lines pass its own framing, duplicate keys included.
        let msg = frame::parse(bytes).unwrap_or_else(|rej| panic!("{}: {body}", rej.error));
        assert_eq!(msg.kind, Kind::Response, "{body}");
    }
    Reply { id, code, message }
}

/// Everything written to either pipe, in order.
#[derive(Default)]
struct Trace {
    /// Input bytes consumed so far, across all pumps.
    consumed: usize,
    sent: Vec<Sent>,
}

/// One `write` call on a pipe.
struct Sent {
    to: Side,
    /// Input bytes consumed when it was written.
    at: usize,
    bytes: Vec<u8>,
}

/// The pipe to one side, recording every write into the shared trace.
struct Pipe {
    to: Side,
    trace: Arc<Mutex<Trace>>,
}

impl Write for Pipe {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut trace = lock(&self.trace);
        let at = trace.consumed;
        trace.sent.push(Sent { to: self.to, at, bytes: buf.to_vec() });
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `data[pos..end]`, served in pieces of varying size (so lines are cut across reads in many
/// places), recording how far it has been consumed.
struct Input<'a> {
    data: &'a [u8],
    pos: usize,
    end: usize,
    trace: Arc<Mutex<Trace>>,
}

/// Piece sizes, chosen by the offset of the piece.
const PIECES: [usize; 8] = [1, 2, 3, 7, 64, 255, 257, 4096];

impl<'a> Input<'a> {
    fn new(data: &'a [u8], pos: usize, end: usize, trace: Arc<Mutex<Trace>>) -> Input<'a> {
        Input { data, pos, end, trace }
    }
}

impl io::Read for Input<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(out.len());
        out[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for Input<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        let piece = PIECES[self.pos % PIECES.len()];
        Ok(&self.data[self.pos..self.end.min(self.pos + piece)])
    }

    fn consume(&mut self, n: usize) {
        self.pos += n;
        assert!(self.pos <= self.end, "consumed past the end of the input");
        lock(&self.trace).consumed = self.pos;
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

// ---------------------------------------------------------------------------------------------
// Choices from fuzz bytes, shared by the targets below.

/// Takes choices from the front of the fuzzer's bytes, the way `arbitrary::Unstructured` does;
/// once they run out every choice is zero, so any input, even an empty one, is a valid recipe.
struct Bytes<'a> {
    data: &'a [u8],
}

/// Characters that break things: regex and TOML syntax, escapes, line breaks, controls, and
/// characters that change under case folding, zero-width ones, astral ones and tags.
const CHARS: &[char] = &[
    'a',
    'Z',
    '0',
    '_',
    ' ',
    '-',
    '.',
    '/',
    '\\',
    '"',
    '\'',
    '#',
    '[',
    ']',
    '{',
    '}',
    '(',
    ')',
    '*',
    '+',
    '?',
    '^',
    '$',
    '|',
    '=',
    ',',
    '\n',
    '\r',
    '\t',
    '\0',
    '\u{7f}',
    'é',
    'ß',
    'İ',
    'К',
    '\u{200b}',
    '\u{2028}',
    '\u{feff}',
    '😀',
    '\u{e0041}',
];

impl<'a> Bytes<'a> {
    fn new(data: &'a [u8]) -> Bytes<'a> {
        Bytes { data }
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        head
    }

    fn byte(&mut self) -> u8 {
        self.take(1).first().copied().unwrap_or(0)
    }

    fn bool(&mut self) -> bool {
        self.byte() & 1 == 1
    }

    fn u64(&mut self) -> u64 {
        let mut bytes = [0; 8];
        let taken = self.take(8);
        bytes[..taken.len()].copy_from_slice(taken);
        u64::from_le_bytes(bytes)
    }

    /// A number in `0..n` (0 when `n` is 0).
    fn below(&mut self, n: usize) -> usize {
        match n {
            0 | 1 => 0,
            2..=256 => usize::from(self.byte()) % n,
            _ => (self.u64() % n as u64) as usize,
        }
    }

    /// Up to `max` bytes, as UTF-8 (lossily).
    fn text(&mut self, max: usize) -> String {
        let n = self.below(max + 1);
        String::from_utf8_lossy(self.take(n)).into_owned()
    }

    /// One character: mostly from [`CHARS`] or ASCII, sometimes any scalar value.
    fn char(&mut self) -> char {
        let b = self.byte();
        match CHARS.get(usize::from(b)) {
            Some(&c) => c,
            None if b < 0xc0 => char::from(b & 0x7f),
            None => char::from_u32((self.u64() % 0x11_0000) as u32).unwrap_or('\u{fffd}'),
        }
    }
}

/// `data` before the first `sep`, and after it (empty when there is none).
fn cut(data: &[u8], sep: u8) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == sep) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[]),
    }
}

// ---------------------------------------------------------------------------------------------
// Target `policy`.

/// When decisions are asked for: the epoch (a Thursday, 00:00 UTC), a Monday at 09:30 and a
/// Sunday at 23:59.
const TIMES: [u64; 3] = [0, 1_795_392_000 + 34_200, 1_795_392_000 + 6 * 86_400 + 86_340];

/// Most identities and names asked about per input, to keep one run fast.
const MAX_ASKED: usize = 8;

/// The decision checks on a policy parsed from fuzz bytes: see [`policy`].
fn check_decisions(policy: &Policy, keys: &[Key], name: &str, arguments: Option<&Value>) {
    let mut identities = vec![Identity::anonymous()];
    identities.extend(keys.iter().map(|key| Identity::clone(&key.identity)));
    let labels: Vec<String> =
        policy.rules.iter().flat_map(|rule| rule.identities.labels.iter().cloned()).collect();
    let principals = policy.rules.iter().flat_map(|rule| rule.identities.principals.iter());
    for principal in principals.map(String::as_str).chain(["psk:fuzz"]) {
        identities.push(Identity { principal: principal.to_owned(), labels: labels.clone() });
    }
    identities.truncate(MAX_ASKED);

    let mut names = vec![name.to_owned()];
    for rule in &policy.rules {
        let lists = [&rule.tools, &rule.resources, &rule.prompts, &rule.methods];
        for glob in lists.into_iter().flatten().flat_map(|names| &names.0) {
            names.push(glob.as_str().to_owned());
            names.push(glob.as_str().replace('*', "x"));
        }
    }
    names.truncate(MAX_ASKED);

    let empty = Value::Object(Map::new());
    let argument_sets = [arguments, None, Some(&empty)];
    for identity in &identities {
        for name in &names {
            let name = name.as_str();
            let may_call = policy.may_call_tool(identity, name);
            for time in TIMES {
                for arguments in argument_sets {
                    let tool = Action::Tool { name, arguments };
                    let decision = check_decision(policy, identity, tool, time);
                    assert!(
                        may_call || decision.effect == Effect::Deny,
                        "may_call_tool says {} may not call `{name}`, but decide allows it at \
                         {time} with {arguments:?}: {}",
                        identity.principal,
                        decision.reason
                    );
                    check_decision(policy, identity, Action::Prompt { name, arguments }, time);
                }
                check_decision(policy, identity, Action::Resource { uri: name }, time);
                check_decision(policy, identity, Action::Method { name }, time);
            }
        }
    }
}

/// Asks `policy` for a decision and checks that it names a rule with its effect, or no rule and
/// the default effect.
fn check_decision<'p>(
    policy: &'p Policy,
    identity: &Identity,
    action: Action<'_>,
    time: u64,
) -> Decision<'p> {
    let decision = policy.decide(identity, action, time);
    match decision.rule {
        Some(id) => {
            let rule = policy.rules.iter().find(|rule| rule.id == id);
            let rule = rule.unwrap_or_else(|| panic!("{action:?}: decided by unknown rule {id:?}"));
            assert_eq!(decision.effect, rule.effect, "{action:?}: effect of rule {id:?}");
        }
        None => {
            let climbs =
                matches!(action, Action::Resource { uri } if glob::normalize_uri(uri).is_none());
            let effect = if climbs { Effect::Deny } else { policy.default_effect };
            assert_eq!(
                decision.effect, effect,
                "{action:?}: decided by no rule: {}",
                decision.reason
            );
        }
    }
    decision
}

/// The id of the generated deny rule.
const CATCH: &str = "catch";

/// The generated half of [`policy`]: a `deny` rule on `param = "*"` catches its regex's match
/// wherever it hides.
fn deny_anywhere(u: &mut Bytes<'_>) {
    let (pattern, literal, anchored) = regex_and_match(u);
    let regex = regex_lite::Regex::new(&pattern).expect("the generated regex compiles");
    assert!(regex.is_match(&literal), "generated regex {pattern:?} misses {literal:?}");

    let mut tool = u.text(12);
    if tool.is_empty() {
        tool.push('t');
    }
    let identity = Identity {
        principal: format!("psk:{}", u.text(8)),
        labels: (0..u.below(3)).map(|_| u.text(8)).collect(),
    };
    let identities = match u.below(3) {
        1 if !identity.labels.is_empty() => {
            let label = &identity.labels[u.below(identity.labels.len())];
            format!("{{ labels = [{}] }}", toml_string(label))
        }
        2 => format!("{{ principals = [{}] }}", toml_string(&identity.principal)),
        _ => "\"*\"".to_owned(),
    };
    let tools = match u.below(4) {
        0 => "\"*\"".to_owned(),
        1 => toml_string(&tool),
        2 => format!("[\"other\", {}]", toml_string(&tool)),
        _ => {
            let mut end = u.below(tool.len() + 1);
            while !tool.is_char_boundary(end) {
                end -= 1;
            }
            toml_string(&format!("{}*", &tool[..end]))
        }
    };
    let priority: i64 = match u.below(4) {
        0 => i64::MIN,
        1 => 0,
        2 => i64::from(u.byte()) - 128,
        _ => i64::MAX - 8,
    };
    let mut regexes = Vec::new();
    if u.bool() {
        regexes.push(toml_string(&regex_lite::escape(&u.text(6))));
    }
    regexes.push(toml_string(&pattern));
    let catch = format!(
        "[[rules]]\nid = \"{CATCH}\"\npriority = {priority}\neffect = \"deny\"\n\
         identities = {identities}\ntools = {tools}\n\
         arguments = [{{ param = \"*\", deny_regex = [{}] }}]\n\n",
        regexes.join(", ")
    );

    // Other rules for every call: after the catch rule by priority, or by file order.
    let mut text = match u.below(3) {
        0 => String::new(),
        1 => "[mcpdome]\ndefault_effect = \"allow\"\n\n".to_owned(),
        _ => "[mcpdome]\ndefault_effect = \"deny\"\n\n".to_owned(),
    };
    let mut after = String::new();
    for n in 0..u.below(4) {
        let effect = if u.bool() { "allow" } else { "deny" };
        let later = u.below(5);
        let arguments = match u.below(3) {
            0 => "arguments = [{ param = \"*\", max_length = 1000000 }]\n",
            1 => "arguments = [{ param = \"*\", deny_regex = \"^$\" }]\n",
            _ => "",
        };
        let rule = format!(
            "[[rules]]\nid = \"other-{n}\"\npriority = {}\neffect = \"{effect}\"\n\
             identities = \"*\"\ntools = \"*\"\n{arguments}\n",
            priority.saturating_add(later as i64)
        );
        match later {
            0 => after.push_str(&rule),
            _ if u.bool() => text.push_str(&rule),
            _ => after.push_str(&rule),
        }
    }
    text.push_str(&catch);
    text.push_str(&after);

    let hidden = match anchored {
        true => literal,
        false => format!("{}{literal}{}", u.text(6), u.text(6)),
    };
    let arguments = hide(u, hidden);
    let time = u.u64();

    let settings = config::parse(&text, Path::new(""), Switches::default())
        .unwrap_or_else(|errors| panic!("generated settings rejected: {errors:?}\n{text}"));
    let policy = settings.policy.expect("the generated settings have rules");
    let decision =
        policy.decide(&identity, Action::Tool { name: &tool, arguments: Some(&arguments) }, time);
    assert_eq!(
        (decision.effect, decision.rule),
        (Effect::Deny, Some(CATCH)),
        "{}\nsettings:\n{text}\narguments: {arguments}\nidentity: {identity:?}, tool: {tool:?}",
        decision.reason
    );
    check_decisions(&policy, &settings.keys, &tool, Some(&arguments));
}

/// A regex and a string that it matches, built piece by piece, and whether it is anchored at
/// both ends (then the string must stand alone).
fn regex_and_match(u: &mut Bytes<'_>) -> (String, String, bool) {
    const WORD: &[u8] = b"azAZ09_";
    const SPACE: &[char] = &[' ', '\t', '\n', '\r', '\u{b}', '\u{c}'];
    let anchored = u.below(4) == 0;
    let (mut pattern, mut literal) = (String::new(), String::new());
    for _ in 0..1 + u.below(6) {
        match u.below(10) {
            0 => {
                let c = u.char();
                pattern.push_str(&escape_char(c));
                literal.push(c);
            }
            1 => {
                pattern.push('.');
                literal.push(not_newline(u.char()));
            }
            2 => {
                pattern.push_str("[a-z]");
                literal.push(char::from(b'a' + u.below(26) as u8));
            }
            3 => {
                pattern.push_str(r"\d");
                literal.push(char::from(b'0' + u.below(10) as u8));
            }
            4 => {
                pattern.push_str(r"\w");
                literal.push(char::from(WORD[u.below(WORD.len())]));
            }
            5 => {
                pattern.push_str(r"\s");
                literal.push(SPACE[u.below(SPACE.len())]);
            }
            6 => {
                let c = u.char();
                let times = u.below(4);
                let (suffix, times) = match u.below(4) {
                    0 => (format!("{{{times}}}"), times),
                    1 => ("+".to_owned(), times + 1),
                    2 => ("*".to_owned(), times),
                    _ => ("?".to_owned(), times.min(1)),
                };
                pattern.push_str(&format!("(?:{}){suffix}", escape_char(c)));
                literal.extend(std::iter::repeat_n(c, times));
            }
            7 => {
                let a: String = (0..1 + u.below(3)).map(|_| u.char()).collect();
                let b: String = (0..1 + u.below(3)).map(|_| u.char()).collect();
                pattern.push_str(&format!(
                    "(?:{}|{})",
                    regex_lite::escape(&a),
                    regex_lite::escape(&b)
                ));
                literal.push_str(if u.bool() { &a } else { &b });
            }
            8 => {
                let c = char::from(b'a' + u.below(26) as u8);
                pattern.push_str(&format!("(?i:{c})"));
                literal.push(if u.bool() { c.to_ascii_uppercase() } else { c });
            }
            _ => {
                pattern.push_str("[^a-z]");
                let c = not_newline(u.char());
                literal.push(if c.is_ascii_lowercase() { c.to_ascii_uppercase() } else { c });
            }
        }
    }
    if anchored {
        pattern = format!("^{pattern}$");
    }
    (pattern, literal, anchored)
}

fn escape_char(c: char) -> String {
    regex_lite::escape(c.encode_utf8(&mut [0; 4]))
}

/// `.` matches anything but a line feed.
fn not_newline(c: char) -> char {
    if c == '\n' {
        'n'
    } else {
        c
    }
}

/// Arguments (an object) with `hidden` somewhere inside, as a value, a key or an array element,
/// up to five levels down, among other values.
fn hide(u: &mut Bytes<'_>, hidden: String) -> Value {
    let mut value = match u.bool() {
        true => Value::String(hidden),
        false => Value::Object(Map::from_iter([(hidden, filler(u))])),
    };
    for _ in 0..u.below(6) {
        value = match u.bool() {
            true => {
                let mut items: Vec<Value> = (0..u.below(3)).map(|_| filler(u)).collect();
                items.insert(u.below(items.len() + 1), value);
                Value::Array(items)
            }
            false => {
                let mut map: Map<String, Value> =
                    (0..u.below(3)).map(|_| (u.text(4), filler(u))).collect();
                // Inserted last, so a filler under the same key cannot replace it.
                map.insert(u.text(4), value);
                Value::Object(map)
            }
        };
    }
    match value {
        Value::Object(_) => value,
        other => Value::Object(Map::from_iter([(u.text(4), other)])),
    }
}

/// A value around the hidden string.
fn filler(u: &mut Bytes<'_>) -> Value {
    match u.below(5) {
        0 => Value::Null,
        1 => Value::Bool(u.bool()),
        2 => Value::from(u.u64() >> 40),
        3 => Value::Array(Vec::new()),
        _ => Value::String(u.text(6)),
    }
}

/// `text` as a TOML basic string.
fn toml_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\u{0}'..='\u{1f}' | '\u{7f}' => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

// ---------------------------------------------------------------------------------------------
// Target `ledger`.

/// The HMAC key of the ledger's own tests (`tests/data/ledger/keyed.key`), so that its
/// fixtures make good seeds.
const LEDGER_KEY: &[u8] = b"an HMAC key of thirty-two bytes!";

/// Most records in one recipe.
const MAX_RECORDS: usize = 6;

/// Most characters of one text field of a record.
const MAX_FIELD: usize = 40;

/// Mode odd of [`ledger`]: `bytes` as a file found on disk.
fn ledger_file(bytes: &[u8], key: Option<&[u8]>) {
    let report = ledger::verify_bytes(bytes, key, None);
    let temp = TempFile::new("ledger");
    std::fs::write(&temp.0, bytes).expect("write the temporary ledger");
    let opened = Ledger::open(&temp.0, key.map(<[u8]>::to_vec), false);
    let Ok(report) = report else { return };

    let newlines = bytes.iter().filter(|&&b| b == b'\n').count() as u64;
    let tail = bytes.len() - bytes.iter().rposition(|&b| b == b'\n').map_or(0, |end| end + 1);
    assert_eq!(report.lines, newlines, "lines of a ledger that verifies");
    assert_eq!(report.tail_bytes, tail as u64, "tail of a ledger that verifies");
    assert_eq!(report.incomplete_tail, tail > 0, "tail of a ledger that verifies");

    let ledger =
        opened.unwrap_or_else(|err| panic!("a ledger that verifies cannot be opened: {err}"));
    let stop = ledger::Record { event: "stop", ..Default::default() };
    ledger.append(&stop).expect("append to the temporary ledger");
    let head = ledger.head();
    drop(ledger);
    let continued = std::fs::read(&temp.0).expect("read the temporary ledger");
    let after = ledger::verify_bytes(&continued, key, Some(&head))
        .unwrap_or_else(|broken| panic!("a continued ledger fails: {broken}"));
    let added = 1 + u64::from(report.incomplete_tail);
    assert_eq!(after.lines, report.lines + added, "lines after a restart and one append");
    assert_eq!((after.expected_at, after.incomplete_tail), (Some(after.lines), false));
    let whole = bytes.len() - tail;
    assert_eq!(continued[..whole], bytes[..whole], "a restart changed the lines before it");
}

/// The fields of one record, owned.
#[derive(Debug, Default)]
struct Fields {
    event: String,
    strings: [Option<String>; 9],
    detail: Option<Value>,
}

/// Mode even of [`ledger`]: records from the recipe, written, verified and edited.
fn ledger_recipe(u: &mut Bytes<'_>) {
    let key = match u.bool() {
        true => {
            let len = 1 + u.below(100);
            Some(u.take(len).to_vec())
        }
        false => None,
    };
    let include_arguments = u.bool();
    let n_records = 1 + u.below(MAX_RECORDS);
    let restart = u.below(n_records + 1);
    let records: Vec<Fields> = (0..n_records).map(|_| fields(u)).collect();

    let temp = TempFile::new("ledger");
    let mut head = String::new();
    for session in [&records[..restart], &records[restart..]] {
        let ledger = Ledger::open(&temp.0, key.clone(), include_arguments)
            .unwrap_or_else(|err| panic!("cannot open our own ledger: {err}"));
        for fields in session {
            let [direction, method, id, identity, tool, decision, rule, reason, arguments] =
                fields.strings.each_ref().map(Option::as_deref);
            let record = ledger::Record {
                event: &fields.event,
                direction,
                method,
                id,
                identity,
                tool,
                decision,
                rule,
                reason,
                arguments,
                detail: fields.detail.as_ref(),
            };
            ledger.append(&record).expect("append to the temporary ledger");
        }
        head = ledger.head();
    }
    let bytes = std::fs::read(&temp.0).expect("read the temporary ledger");
    let key = key.as_deref();
    let report = ledger::verify_bytes(&bytes, key, Some(&head)).unwrap_or_else(|broken| {
        panic!("our own ledger fails: {broken}\n{records:#?}\n{}", String::from_utf8_lossy(&bytes))
    });
    let n_lines = n_records as u64;
    assert_eq!((report.lines, report.expected_at), (n_lines, Some(n_lines)), "lines written");
    assert_eq!((report.head, report.incomplete_tail), (head.clone(), false));
    let other_key = match key {
        Some(_) => None,
        None => Some(LEDGER_KEY),
    };
    assert!(ledger::verify_bytes(&bytes, other_key, None).is_err(), "verifies with another key");

    let final_newline = bytes.len() - 1;
    let pos = u.below(bytes.len());
    let mut replaced = bytes.clone();
    replaced[pos] = match u.byte() {
        same if same == bytes[pos] => same ^ 1,
        other => other,
    };
    let mut deleted = bytes.clone();
    deleted.remove(pos);
    for (edited, what) in [(replaced, "replaced"), (deleted, "deleted")] {
        let res = ledger::verify_bytes(&edited, key, None);
        let at = format!("byte {pos} of {} {what}", bytes.len());
        match res {
            Ok(report) if pos == final_newline => {
                assert_eq!((report.lines, report.incomplete_tail), (n_lines - 1, true), "{at}");
            }
            Ok(report) => panic!("{at}: still verifies: {report:?}"),
            Err(_) => {}
        }
        assert!(ledger::verify_bytes(&edited, key, Some(&head)).is_err(), "{at}: head still found");
    }

    let pos = u.below(bytes.len() + 1);
    let byte = u.byte();
    let mut inserted = bytes.clone();
    inserted.insert(pos, byte);
    let at = format!("byte {byte:#04x} inserted at {pos} of {}", bytes.len());
    for expect_head in [None, Some(head.as_str())] {
        match ledger::verify_bytes(&inserted, key, expect_head) {
            Ok(report) if pos == bytes.len() && byte == b'{' => {
                assert_eq!((report.lines, report.tail_bytes), (n_lines, 1), "{at}");
            }
            Ok(report) => panic!("{at}: still verifies: {report:?}"),
            Err(_) => {}
        }
    }
}

/// One record's fields from the recipe: a flag byte pair says which are present.
fn fields(u: &mut Bytes<'_>) -> Fields {
    let present = u16::from_le_bytes([u.byte(), u.byte()]);
    let mut fields = Fields { event: u.text(MAX_FIELD), ..Fields::default() };
    for (bit, slot) in fields.strings.iter_mut().enumerate() {
        if present & 1 << bit != 0 {
            *slot = Some(u.text(MAX_FIELD));
        }
    }
    if present & 1 << 9 != 0 {
        // A detail is our own JSON, never deeper than a few levels.
        let text = u.text(MAX_FIELD);
        let value = serde_json::from_str(&text).ok().filter(|value| depth(value) <= 8);
        fields.detail = Some(value.unwrap_or(Value::String(text)));
    }
    fields
}

/// How deep arrays and objects nest in `value` (0 for a scalar).
fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// A file in the temporary directory that no other run uses, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(what: &str) -> TempFile {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("mcpdome-fuzz-{what}-{}-{n}", std::process::id());
        let path = std::env::temp_dir().join(name);
        let _ = std::fs::remove_file(&path);
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

// ---------------------------------------------------------------------------------------------
// Target `normalize`.

/// How much [`normalize::fold`] may grow a text, as a fraction: lower-casing turns a few
/// two-byte letters into three bytes (`İ` into `i` and a combining dot, `Ⱥ` into `ⱥ`), and
/// nothing grows more than that.
const FOLD_GROWTH: (usize, usize) = (3, 2);

fn check_normalize(text: &str) {
    let folded = normalize::fold(text);
    assert_eq!(normalize::fold(&folded), folded, "fold is not idempotent");
    assert!(
        folded.len() * FOLD_GROWTH.1 <= text.len() * FOLD_GROWTH.0,
        "fold grew {} bytes to {}",
        text.len(),
        folded.len()
    );
    check_folded(&folded);

    let leet = normalize::leet(&folded);
    if let Some(leet) = &leet {
        check_leet(leet, &folded);
    }

    let decoded = normalize::decode(text);
    assert!(decoded.len() <= normalize::MAX_DEPTH, "{} layers", decoded.len());
    let mut before = text;
    let mut total = 0;
    for (n, layer) in decoded.iter().enumerate() {
        assert_eq!(usize::from(layer.depth), n + 1, "layer numbers");
        assert!(!layer.via.is_empty(), "layer {} decoded by nothing", n + 1);
        assert_ne!(layer.text, before, "layer {} is the same as the one before", n + 1);
        assert_eq!(layer.folded, normalize::fold(&layer.text), "layer {} folded", n + 1);
        total += layer.text.len();
        before = &layer.text;
    }
    assert!(
        total <= text.len() * normalize::MAX_EXPANSION,
        "decoded {total} bytes from {}",
        text.len()
    );

    let profile = normalize::profile(text);
    if !profile.leet {
        assert_eq!(leet, None, "profile finds no leet words, but the folded text has some");
    }
    if !profile.encoded {
        assert!(decoded.is_empty(), "profile finds nothing encoded, but decode does");
    }
    if profile.plain {
        assert_eq!(folded, fold_plain(text), "fold of plain text");
    }
    assert_eq!(normalize::decode_with(text, &profile), decoded, "decode_with");
    if let Some(read) = normalize::json_lone_surrogates(text) {
        assert_eq!(read.len(), text.len(), "lone surrogates replaced by something longer");
        assert_eq!(normalize::json_lone_surrogates(&read), None, "a lone surrogate left");
    }
    if !text.contains(['\u{1b}', '\u{9b}']) {
        // Outside escape sequences every whitespace character only separates words.
        let spaced: String = text
            .chars()
            .map(|c| match c {
                '\n' | '\r' | '\u{b}' | '\u{c}' | '\u{85}' | '\u{2028}' | '\u{2029}' => '\n',
                c if c.is_whitespace() => ' ',
                c => c,
            })
            .collect();
        assert_eq!(
            normalize::fold(&spaced),
            folded,
            "whitespace folded unlike a space or line break"
        );
    }
    let needed = normalize::fold_where_needed(text);
    assert_eq!(normalize::fold(&needed), folded, "fold of fold_where_needed");

    let forms = normalize::forms(text);
    assert_eq!(forms, normalize::Forms { folded, leet, decoded }, "forms are not their parts");

    let hidden = normalize::hidden_markers(text);
    assert!(hidden.tags || hidden.tag_chars == 0, "{hidden:?}");
    assert!(hidden.tag_chars <= text.chars().count(), "{hidden:?}");
    assert!(hidden.ansi || !hidden.ansi_concealed, "{hidden:?}");
    if profile.plain || text.bytes().all(|b| b.is_ascii() && b != 0x1b) {
        assert_eq!(hidden, normalize::Hidden::default(), "markers in plain ASCII");
    }

    normalize::split_identifier(text);
    let entropy = normalize::entropy(text);
    assert!((0.0..=8.0).contains(&entropy), "entropy {entropy}");
}

/// What `fold` makes of plain text (printable ASCII, spaces, tabs and line breaks): the text in
/// lower case, each run of whitespace one `' '`, or one `'\n'` if it holds a line break, and
/// none at either end.
fn fold_plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut pending: Option<char> = None;
    for c in text.chars() {
        if c.is_ascii_whitespace() {
            let line_break = matches!(c, '\n' | '\r' | '\u{b}' | '\u{c}');
            pending = Some(if line_break || pending == Some('\n') { '\n' } else { ' ' });
            continue;
        }
        if let Some(space) = pending.take() {
            if !out.is_empty() {
                out.push(space);
            }
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// The leet view holds some lines of the folded text, in order, each changed only where a leet
/// character became a letter, and each changed somewhere.
fn check_leet(leet: &str, folded: &str) {
    let is_leet_of = |view: &str, line: &str| {
        view.len() == line.len()
            && view != line
            && view
                .chars()
                .zip(line.chars())
                .all(|(v, l)| v == l || "013457@$".contains(l) && v.is_ascii_alphabetic())
    };
    let mut lines = folded.split('\n');
    for view in leet.split('\n') {
        assert!(
            lines.any(|line| is_leet_of(view, line)),
            "leet line {view:?} is not from {folded:?}"
        );
    }
}

/// What a folded text may not contain.
fn check_folded(folded: &str) {
    let mut prev: Option<char> = None;
    for c in folded.chars() {
        let invisible = matches!(c,
            '\u{ad}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}'
            | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}' | '\u{fe00}'..='\u{fe0f}'
            | '\u{feff}' | '\u{e0000}'..='\u{e007f}');
        let control = c.is_control() && c != '\n';
        assert!(!invisible && !control, "fold kept {c:?}");
        assert!(!c.is_ascii_uppercase(), "fold kept upper case {c:?}");
        if c.is_whitespace() {
            assert!(c == ' ' || c == '\n', "fold kept whitespace {c:?}");
            assert!(prev.is_some_and(|p| !p.is_whitespace()), "whitespace at the start or doubled");
        }
        prev = Some(c);
    }
    assert!(prev.is_none_or(|p| !p.is_whitespace()), "whitespace at the end");
}

// ---------------------------------------------------------------------------------------------
// Target `scan`.

/// The built-in rules, compiled once per process.
fn scanner() -> &'static Scanner {
    static SCANNER: OnceLock<Scanner> = OnceLock::new();
    SCANNER.get_or_init(Scanner::builtin)
}

const TARGETS: [Target; 3] = [Target::Request, Target::Response, Target::ToolDefinition];

fn check_scan(text: &str) {
    let scanner = scanner();
    let whole = Value::String(text.to_owned());
    let parsed = serde_json::from_str::<Value>(text).ok();
    let value = parsed.clone().unwrap_or_else(|| {
        let (key, rest) = text.split_once('\n').unwrap_or((text, ""));
        Value::Object(Map::from_iter([(key.to_owned(), Value::String(rest.to_owned()))]))
    });
    for target in TARGETS {
        let findings = scanner.scan_text(text, target);
        check_findings(&findings, &whole);
        let raw = findings.iter().any(|finding| finding.span.is_some());
        check_findings(&scanner.scan_json(&value, target), &value);
        // Text that is not JSON is scanned as text. Both members of a key written twice are
        // scanned, and a span may then be in the one `parsed` left out (the ward refuses a
        // message whose secret it cannot redact for that reason).
        let mut findings = scanner.scan_json_text(text, target);
        if parsed.is_some() && duplicate_keys(text) {
            findings.iter_mut().for_each(|finding| finding.span = None);
        }
        check_findings(&findings, parsed.as_ref().unwrap_or(&whole));

        let redacted = scanner.redact(text);
        assert_eq!(redacted.is_some(), raw, "redact and scan_text disagree about secrets");
        if let Some(redacted) = redacted {
            assert_ne!(redacted, text, "redact changed nothing");
            let again = scanner.scan_text(&redacted, target);
            let left = again.iter().find(|finding| finding.span.is_some());
            assert!(left.is_none(), "a secret is left after redact: {left:?}\n{redacted:?}");
            assert_eq!(scanner.redact(&redacted), None, "redact is not idempotent: {redacted:?}");
        }
    }

    let mut redacted = value.clone();
    scanner.redact_json(&mut redacted);
    let findings = scanner.scan_json(&redacted, Target::Response);
    let left = findings.iter().find(|finding| finding.span.is_some());
    assert!(left.is_none(), "a secret is left after redact_json: {left:?}\n{redacted}");
    // The ward scans a response's text and redacts its value: the two must agree.
    let findings = scanner.scan_json_text(&redacted.to_string(), Target::Response);
    let left = findings.iter().find(|finding| finding.span.is_some());
    assert!(left.is_none(), "a secret is left after redact_json: {left:?}\n{redacted}");
    let again = scanner.redact_json(&mut redacted);
    assert!(again.is_empty(), "redact_json is not idempotent: {again:?}");
}

/// Whether JSON `text` has an object with a key written twice: what
/// [`chain::strict_value`](crate::chain::strict_value) refuses and serde_json reads.
fn duplicate_keys(text: &str) -> bool {
    crate::chain::strict_value(text)
        .is_err_and(|err| err.to_string().contains("appears more than once"))
}

/// Checks what every finding promises about its span and its excerpt; `value` is what was
/// scanned (a text is a JSON string).
fn check_findings(findings: &[Finding], value: &Value) {
    for finding in findings {
        let excerpt = finding.excerpt.chars().count();
        if finding.category == Category::Secret {
            assert!(excerpt <= 16, "secret excerpt of {excerpt} characters: {finding:?}");
        } else {
            assert!(excerpt <= EXCERPT_CHARS + 1, "excerpt of {excerpt} characters: {finding:?}");
        }
        let Some(span) = &finding.span else { continue };
        assert_eq!(finding.category, Category::Secret, "a span on a finding that is not a secret");
        let held = value.pointer(&finding.pointer).and_then(Value::as_str);
        let held = held.unwrap_or_else(|| panic!("the pointer of {finding:?} names no string"));
        assert!(held.get(span.clone()).is_some(), "span {span:?} outside {held:?}: {finding:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Target `pin`.

/// How deep a value built from bytes nests; serde_json reads up to 128 levels back.
const MAX_JSON_DEPTH: usize = 64;

/// A JSON value built from bytes.
fn json_value(u: &mut Bytes<'_>, depth: usize) -> Value {
    let kinds = if depth < MAX_JSON_DEPTH { 7 } else { 5 };
    match u.below(kinds) {
        0 => Value::Null,
        1 => Value::Bool(u.bool()),
        2 if u.bool() => Value::from(u.u64()),
        2 => Value::from(u.u64() as i64),
        3 => {
            serde_json::Number::from_f64(f64::from_bits(u.u64())).map_or(Value::Null, Value::Number)
        }
        4 => Value::String((0..u.below(8)).map(|_| u.char()).collect()),
        5 => Value::Array((0..u.below(5)).map(|_| json_value(u, depth + 1)).collect()),
        _ => {
            let n = u.below(5);
            let mut map = Map::new();
            for _ in 0..n {
                let key: String = (0..u.below(6)).map(|_| u.char()).collect();
                map.insert(key, json_value(u, depth + 1));
            }
            Value::Object(map)
        }
    }
}

/// Choices for writing a value out again, from a hash of the input: every element of a
/// recipe was already used to build the value.
struct Shuffle(u64);

impl Shuffle {
    fn new(data: &[u8]) -> Shuffle {
        // FNV-1a; never zero, which xorshift needs.
        let hash = data.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, &b| {
            (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        Shuffle(hash | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// Insignificant whitespace, often none.
    fn space(&mut self, out: &mut String) {
        out.push_str(["", "", "", " ", "\n", "\t", "\r\n  "][self.below(7)]);
    }
}

/// `value` as JSON text with object members in a shuffled order, each string character either
/// as it is or escaped, and whitespace between tokens.
fn write_shuffled(out: &mut String, value: &Value, shuffle: &mut Shuffle) {
    shuffle.space(out);
    match value {
        Value::Array(items) => {
            out.push('[');
            for (idx, item) in items.iter().enumerate() {
                if idx > 0 {
                    out.push(',');
                }
                write_shuffled(out, item, shuffle);
            }
            shuffle.space(out);
            out.push(']');
        }
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            for idx in (1..members.len()).rev() {
                members.swap(idx, shuffle.below(idx + 1));
            }
            out.push('{');
            for (idx, (key, item)) in members.into_iter().enumerate() {
                if idx > 0 {
                    out.push(',');
                }
                shuffle.space(out);
                write_string(out, key, shuffle);
                shuffle.space(out);
                out.push(':');
                write_shuffled(out, item, shuffle);
            }
            shuffle.space(out);
            out.push('}');
        }
        Value::String(text) => write_string(out, text, shuffle),
        scalar => out.push_str(&scalar.to_string()),
    }
    shuffle.space(out);
}

fn write_string(out: &mut String, text: &str, shuffle: &mut Shuffle) {
    out.push('"');
    for c in text.chars() {
        let must = c == '"' || c == '\\' || c < ' ';
        if must || shuffle.below(4) == 0 {
            let mut units = [0; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        } else {
            out.push(c);
        }
    }
    out.push('"');
}

/// What [`pin::canonical_json`] is documented to write, written independently.
fn canonical(out: &mut String, value: &Value) {
    match value {
        Value::Array(items) => {
            out.push('[');
            for (idx, item) in items.iter().enumerate() {
                if idx > 0 {
                    out.push(',');
                }
                canonical(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            members.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (idx, (key, item)) in members.into_iter().enumerate() {
                if idx > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                canonical(out, item);
            }
            out.push('}');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

fn check_pin(value: &Value, shuffle: &mut Shuffle) {
    let text = pin::canonical_json(value);
    let mut expected = String::new();
    canonical(&mut expected, value);
    assert_eq!(text, expected, "canonical JSON of {value:?}");
    let pinned = pin::tool_pin(value);
    assert_eq!(pinned, crate::auth::sha256_hex(text.as_bytes()), "tool_pin is not the SHA-256");

    let again: Value = serde_json::from_str(&text).expect("canonical JSON reads back");
    assert_eq!(&again, value, "canonical JSON reads back as another value");
    assert_eq!(pin::canonical_json(&again), text, "canonical JSON is not idempotent");

    let mut shuffled = String::new();
    write_shuffled(&mut shuffled, value, shuffle);
    let reordered: Value = serde_json::from_str(&shuffled).expect("shuffled JSON reads back");
    assert_eq!(&reordered, value, "shuffled JSON reads back as another value: {shuffled}");
    assert_eq!(pin::canonical_json(&reordered), text, "key order changed the canonical JSON");
    assert_eq!(pin::tool_pin(&reordered), pinned, "key order changed the pin: {shuffled}");
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::Path;

    /// Runs every file in `dir` (relative to the crate root) through `target`, in name order,
    /// and returns how many there were. A missing directory has none.
    fn replay(dir: &str, target: fn(&[u8])) -> usize {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
        let Ok(entries) = fs::read_dir(&dir) else {
            return 0;
        };
        let mut paths: Vec<_> = entries.map(|entry| entry.unwrap().path()).collect();
        paths.retain(|path| path.is_file());
        paths.sort();
        for path in &paths {
            // Captured by the test harness and shown if the replay fails.
            eprintln!("replaying {}", path.display());
            target(&fs::read(path).unwrap());
        }
        paths.len()
    }

    /// For each target, `<target>_seeds` replays its seeds (there must be some) and
    /// `<target>_crashers` the findings kept under `tests/data/fuzz/<target>/`.
    macro_rules! replay_tests {
        ($($target:ident: $seeds:ident, $crashers:ident;)*) => {$(
            #[test]
            fn $seeds() {
                let dir = concat!("fuzz/seeds/", stringify!($target));
                assert!(replay(dir, super::$target) > 0, "no seeds in {dir}");
            }

            #[test]
            fn $crashers() {
                replay(concat!("tests/data/fuzz/", stringify!($target)), super::$target);
            }
        )*};
    }

    replay_tests! {
        frame: frame_seeds, frame_crashers;
        policy: policy_seeds, policy_crashers;
        ledger: ledger_seeds, ledger_crashers;
        normalize: normalize_seeds, normalize_crashers;
        scan: scan_seeds, scan_crashers;
        pin: pin_seeds, pin_crashers;
    }
}
