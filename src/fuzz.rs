//! Entry points for the fuzz targets in `fuzz/` and for replaying their findings in tests.
//!
//! Each entry point runs the fuzzer's bytes through the real code and then asserts properties,
//! so a finding is a wrong answer as well as a panic. The targets in `fuzz/fuzz_targets/` are
//! one-line shims into these functions; the tests at the bottom of this file replay the seeds
//! (`fuzz/seeds/<target>/`) and the crashers (`tests/data/fuzz/<target>/`) through the same
//! functions, so `cargo test` keeps every finding fixed.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::io::{self, BufRead, Write};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::value::RawValue;
use serde_json::Value;

use crate::config::{Config, Settings};
use crate::frame::{self, FrameError, Kind, LineReader, Msg, Oversize, Read, INVALID_REQUEST};
use crate::gate::{Gate, Side};
use crate::log::{self, Level};
use crate::relay::{self, Event};

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
///   only to an open or cancelled request, a refused response to an open request becomes an error
///   for that request, and at the end the gate's open requests are exactly the ones forwarded and
///   neither answered nor cancelled.
pub fn frame(data: &[u8]) {
    log::set_level(Level::Off);
    let lines = split(data);
    let reads = check_reader(data, &lines);
    check_pump(data, &lines, &reads, |_| Side::Client);
    check_pump(data, &lines, &reads, |_| Side::Upstream);
    check_pump(data, &lines, &reads, |line| match line.first() {
        Some(b'\t') => Side::Upstream,
        _ => Side::Client,
    });
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
            let id = msg.id.map(RawValue::get);
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
    let raw: &RawValue = serde_json::from_str(text).expect("an id is JSON");
    frame::id_key(raw).into_owned()
}

/// A valid JSON-RPC id as MCP allows it: a string or an integer within `i64`.
fn is_id(text: &str) -> bool {
    serde_json::from_str::<&RawValue>(text).is_ok_and(|raw| raw.get() == text)
        && (text.starts_with('"') || text.parse::<i64>().is_ok())
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
        config(),
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

fn config() -> Config {
    Config {
        max_message_bytes: LIMIT,
        shutdown_grace: Duration::ZERO,
        config_file: None,
        enable_ward: false,
        enable_schema_pin: false,
        enable_rate_limit: false,
        env_token: None,
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
            (Kind::Response, Some(id)) => {
                // The answer to an open request, or a late one to a cancelled request.
                let answers = self.open[other].remove(&id) || self.uncancel(other, &id);
                if !answers {
                    return Expect::Nothing;
                }
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

    #[test]
    fn frame_seeds() {
        assert!(replay("fuzz/seeds/frame", super::frame) > 0, "no seeds in fuzz/seeds/frame");
    }

    #[test]
    fn frame_crashers() {
        replay("tests/data/fuzz/frame", super::frame);
    }
}
