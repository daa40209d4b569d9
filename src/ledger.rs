//! The audit ledger: one hash-chained JSON line per event, and [`verify`] to check a file.
//!
//! # Line format
//!
//! ```text
//! {"seq":1,"ts":"2026-11-23T22:07:37.123Z","event":"decision","direction":"client",…,"prev":"00…00","hash":"9f…"}
//! ```
//!
//! Each line is written by hand in a fixed key order: `seq`, `ts`, `event`, then whichever of
//! `direction`, `method`, `id`, `identity`, `tool`, `decision`, `rule`, `reason`, `args_sha256`,
//! `arguments`, `detail` the record has, then `prev` and `hash`. serde_json only escapes strings
//! and writes `detail`. `hash` is the SHA-256 of the line's bytes before `,"hash":` (HMAC-SHA-256
//! when the ledger has a key), and `prev` is the `hash` of the line before, 64 zeros for the
//! first line. `seq` is the line number: it starts at 1 and goes on across restarts, because
//! [`Ledger::open`] continues the chain of the file it finds.
//!
//! # What the chain proves
//!
//! A line cannot be edited, removed, inserted or moved without [`verify`] naming it, unless the
//! editor recomputes every hash after it. Without a key anyone who can write the file can do that;
//! with a key (`[ledger] hmac_key_file`) they also need the key. Neither kind of chain shows that
//! lines were cut off the end: for that, keep the head ([`Ledger::head`]) somewhere else and pass
//! it to [`verify`] as `expect_head`.
//!
//! # Crashes
//!
//! Every line goes to the file in one `write_all` on an unbuffered file opened for append, so a
//! `kill -9` loses at most the line being written and leaves a prefix of it without its newline.
//! [`verify`] reports such a tail as `incomplete_tail`, not as tampering, and [`Ledger::open`]
//! cuts it off and records a `recovered` line saying how many bytes it dropped.
//!
//! This module does not fsync (a power cut can lose lines the kernel had not written yet), does
//! not rotate, and does not lock the file: two gateways must not share one ledger, or their
//! chains interleave and `verify` rejects the file.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::Error;

/// The least key material [`load_key`] accepts: 256 bits, the size of the HMAC's output.
pub const MIN_KEY_BYTES: usize = 32;

/// An append-only, hash-chained ledger file, shared by both relay threads.
pub struct Ledger {
    hasher: Hasher,
    include_arguments: bool,
    /// The file and the end of the chain. `append` holds the lock while it builds and writes one
    /// line, so the two relay threads' lines never interleave and each `prev` is the hash of the
    /// line just before it in the file. Nothing is read under the lock.
    state: Mutex<State>,
}

/// One event to record. Every field but `event` is optional and left out of the line when `None`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Record<'a> {
    /// `decision`, `start`, `stop`, `reload`, `auth`, `limit`, `recovered`, …
    pub event: &'a str,
    /// `client` (a message from the client) or `upstream`.
    pub direction: Option<&'a str>,
    pub method: Option<&'a str>,
    /// The JSON-RPC id as JSON text (`7`, `"a"`), written into the line as JSON.
    pub id: Option<&'a str>,
    /// `psk:ci-bot`, `anonymous`, …
    pub identity: Option<&'a str>,
    pub tool: Option<&'a str>,
    /// `allow`, `deny`, `redact` or `filter`.
    pub decision: Option<&'a str>,
    pub rule: Option<&'a str>,
    pub reason: Option<&'a str>,
    /// The arguments as the raw JSON text that came in. The line always records their SHA-256
    /// (`args_sha256`, over exactly these bytes), and the arguments themselves only when the
    /// ledger was opened with `include_arguments`.
    pub arguments: Option<&'a str>,
    /// Anything else: old and new pin hashes, counts.
    pub detail: Option<&'a Value>,
}

/// What [`verify`] found in an intact ledger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// Whole lines, all verified.
    pub lines: u64,
    /// The hash of the last whole line (64 zeros when there is none).
    pub head: String,
    /// The file ends with part of a line and no newline: a write cut short by a crash.
    pub incomplete_tail: bool,
    /// How many bytes that partial line has (0 when there is none).
    pub tail_bytes: u64,
    /// The line whose hash is `expect_head`, when one was given (0 for the head of an empty log).
    /// Lines after it are fine: a ledger grows after its head was noted.
    pub expected_at: Option<u64>,
}

/// The first thing wrong with a ledger, and on which line (1-based). Line 0 means the ledger as a
/// whole: the file could not be read, or `expect_head` is not a hash.
#[derive(Clone, PartialEq, Eq)]
pub struct Broken {
    pub line: u64,
    pub what: String,
}

impl Ledger {
    /// Opens or creates the ledger at `path` and continues its chain.
    ///
    /// Only the last whole line is read and checked against its own hash (with `hmac_key`, so a
    /// wrong key is caught here rather than by the next `verify`); checking the whole chain would
    /// make start-up as slow as the ledger is long, and that is what `verify-log` is for. A
    /// partial last line left by a crash is cut off, and a `recovered` line records it.
    pub fn open(
        path: &Path,
        hmac_key: Option<Vec<u8>>,
        include_arguments: bool,
    ) -> Result<Ledger, Error> {
        let name = path.display();
        let hasher = Hasher::new(hmac_key.as_deref());
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(|err| Error::io(format!("cannot open ledger `{name}`"), err))?;
        let end = find_end(&mut file)
            .map_err(|err| Error::io(format!("cannot read ledger `{name}`"), err))?;

        let (seq, head) = match &end.last_line {
            None => (0, GENESIS),
            Some(bytes) => {
                let line = parse_line(bytes).map_err(|what| {
                    Error::usage(format!(
                        "ledger `{name}`: cannot continue after its last line: {what}"
                    ))
                })?;
                if hasher.hash(line.body) != line.hash {
                    let why = if hasher.is_keyed() {
                        "does not verify with this HMAC key: the key is wrong, or the line was edited"
                    } else {
                        "does not match its hash: the ledger needs its HMAC key, or the line was edited"
                    };
                    return Err(Error::usage(format!(
                        "ledger `{name}`: the last line (seq {}) {why}",
                        line.seq
                    )));
                }
                (line.seq, line.hash)
            }
        };

        let dropped = end.len - end.tail_start;
        if dropped > 0 {
            check_tail(&end.tail_prefix, dropped, seq + 1).map_err(|what| {
                Error::usage(format!(
                    "ledger `{name}`: will not cut off its last line: {what}; check it with \
                     `mcpdome verify-log`"
                ))
            })?;
            file.set_len(end.tail_start).map_err(|err| {
                Error::io(format!("cannot cut the partial last line off ledger `{name}`"), err)
            })?;
        }

        let state = State { file, seq, head, len: end.tail_start, line: Vec::new() };
        let ledger = Ledger { hasher, include_arguments, state: Mutex::new(state) };
        if dropped > 0 {
            let detail = serde_json::json!({ "dropped_bytes": dropped });
            let record = Record {
                event: "recovered",
                reason: Some("the last line was cut short, probably by a crash"),
                detail: Some(&detail),
                ..Record::default()
            };
            ledger
                .append(&record)
                .map_err(|err| Error::io(format!("cannot write to ledger `{name}`"), err))?;
        }
        Ok(ledger)
    }

    /// Appends one line with one `write_all`. On error nothing is recorded and the chain is as
    /// before, so the caller may go on (and report the error) or stop.
    pub fn append(&self, record: &Record<'_>) -> io::Result<()> {
        let mut state = lock(&self.state);
        let state = &mut *state;
        let seq = state.seq + 1;
        let hash = render(
            &mut state.line,
            &self.hasher,
            self.include_arguments,
            seq,
            now_millis(),
            &state.head,
            record,
        );
        if let Err(err) = state.file.write_all(&state.line) {
            // A short write leaves part of a line at the end of the file, and the next line would
            // be glued onto it. Cut it back; should that fail too, `open` finds the partial line
            // next time and records it.
            let _ = state.file.set_len(state.len);
            return Err(err);
        }
        state.len += state.line.len() as u64;
        state.seq = seq;
        state.head = hash;
        if state.line.capacity() > KEEP_BUFFER {
            state.line = Vec::new();
        }
        Ok(())
    }

    /// The hash of the last line, in hex: note it elsewhere to catch lines cut off the end.
    pub fn head(&self) -> String {
        hex(&lock(&self.state).head)
    }
}

/// Reads an HMAC key file. A file of hex digits (whitespace anywhere ignored, so `openssl rand
/// -hex 32 > key` works) is decoded; any other file is the key as raw bytes, all of them. Either
/// way the key must have at least [`MIN_KEY_BYTES`] bytes.
pub fn load_key(path: &Path) -> Result<Vec<u8>, Error> {
    let name = path.display();
    let bytes = std::fs::read(path)
        .map_err(|err| Error::io(format!("cannot read HMAC key file `{name}`"), err))?;
    let digits: Vec<u8> = bytes.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
    let is_hex = !digits.is_empty() && digits.iter().all(u8::is_ascii_hexdigit);
    let (key, form) = if is_hex {
        if digits.len() % 2 == 1 {
            return Err(Error::usage(format!(
                "HMAC key file `{name}` has an odd number of hex digits ({})",
                digits.len()
            )));
        }
        let key = digits.chunks(2).map(|pair| nibble(pair[0]) << 4 | nibble(pair[1])).collect();
        (key, "bytes of key in hex")
    } else {
        (bytes, "bytes of raw key")
    };
    if key.len() < MIN_KEY_BYTES {
        return Err(Error::usage(format!(
            "HMAC key file `{name}` holds {} {form}; at least {MIN_KEY_BYTES} are needed \
             (`openssl rand -hex 32` makes one)",
            key.len()
        )));
    }
    Ok(key)
}

/// Checks the ledger at `path` line by line, holding one line in memory at a time. See
/// [`verify_bytes`].
pub fn verify(
    path: &Path,
    hmac_key: Option<&[u8]>,
    expect_head: Option<&str>,
) -> Result<Report, Broken> {
    let cannot_read = |err: io::Error| Broken {
        line: 0,
        what: format!("cannot read `{}`: {err}", path.display()),
    };
    let mut verifier = Verifier::new(hmac_key, expect_head)?;
    let file = File::open(path).map_err(cannot_read)?;
    let mut reader = BufReader::with_capacity(CHUNK, file);
    let mut line = Vec::new();
    loop {
        line.clear();
        reader.read_until(b'\n', &mut line).map_err(cannot_read)?;
        if line.pop_if(|last| *last == b'\n').is_none() {
            return verifier.finish(&line);
        }
        verifier.line(&line)?;
    }
}

/// Checks a whole ledger in memory and stops at the first bad line: not JSON, a field missing,
/// a `hash` that does not match the line, a `seq` out of step, a `prev` that is not the hash of
/// the line before. A last line without its newline is reported as `incomplete_tail` if it
/// begins the way the next line would. With `expect_head`, some line must have that hash. Any
/// bytes at all are safe to pass (this is the fuzz target's entry point).
pub fn verify_bytes(
    bytes: &[u8],
    hmac_key: Option<&[u8]>,
    expect_head: Option<&str>,
) -> Result<Report, Broken> {
    let mut verifier = Verifier::new(hmac_key, expect_head)?;
    let mut rest = bytes;
    while let Some(end) = rest.iter().position(|&b| b == b'\n') {
        verifier.line(&rest[..end])?;
        rest = &rest[end + 1..];
    }
    verifier.finish(rest)
}

impl fmt::Display for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            f.write_str(&self.what)
        } else {
            write!(f, "line {}: {}", self.line, self.what)
        }
    }
}

impl fmt::Debug for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for Broken {}

/// `prev` of the first line.
const GENESIS: [u8; 32] = [0; 32];

/// How much `open` reads at a time while looking backwards for the last whole line, and the
/// buffer size of `verify`.
const CHUNK: usize = 64 << 10;

/// A line buffer grown past this by a long record (arguments included) is freed rather than kept.
const KEEP_BUFFER: usize = 64 << 10;

/// What ends every line: `,"hash":"` + 64 hex digits + `"}`.
const HASH_KEY: &[u8] = b",\"hash\":\"";
const HASH_SUFFIX_LEN: usize = HASH_KEY.len() + 64 + 2;

struct State {
    file: File,
    /// `seq` of the last line in the file; 0 when there is none.
    seq: u64,
    /// `hash` of the last line in the file; [`GENESIS`] when there is none.
    head: [u8; 32],
    /// The file's length, where a failed write is cut back to. Right as long as we are the only
    /// writer.
    len: u64,
    /// The line being built, kept between appends to save an allocation.
    line: Vec<u8>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// SHA-256, or HMAC-SHA-256 (RFC 2104) with the key's padded blocks already absorbed, so each
/// line costs two clones and the hashing of the line and of one inner digest.
// One per ledger and one per `verify`, so the size of the HMAC variant does not matter, and a
// Box would cost a pointer chase per line.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
enum Hasher {
    Plain,
    Hmac { inner: Sha256, outer: Sha256 },
}

impl Hasher {
    fn new(key: Option<&[u8]>) -> Hasher {
        let Some(key) = key else {
            return Hasher::Plain;
        };
        const BLOCK: usize = 64;
        // RFC 2104: a key longer than the block is hashed first; the key is padded with zeros to
        // a block and XORed with ipad (0x36) for the inner hash and opad (0x5c) for the outer.
        let mut block = [0u8; BLOCK];
        if key.len() > BLOCK {
            block[..32].copy_from_slice(&Sha256::digest(key));
        } else {
            block[..key.len()].copy_from_slice(key);
        }
        let padded = |pad: u8| Sha256::new_with_prefix(block.map(|byte| byte ^ pad));
        Hasher::Hmac { inner: padded(0x36), outer: padded(0x5c) }
    }

    fn hash(&self, bytes: &[u8]) -> [u8; 32] {
        match self {
            Hasher::Plain => Sha256::digest(bytes).into(),
            Hasher::Hmac { inner, outer } => {
                let inner = inner.clone().chain_update(bytes).finalize();
                outer.clone().chain_update(inner).finalize().into()
            }
        }
    }

    fn is_keyed(&self) -> bool {
        matches!(self, Hasher::Hmac { .. })
    }
}

/// Builds one whole line, newline included, into `line` and returns its hash.
fn render(
    line: &mut Vec<u8>,
    hasher: &Hasher,
    include_arguments: bool,
    seq: u64,
    millis: u64,
    prev: &[u8; 32],
    record: &Record<'_>,
) -> [u8; 32] {
    line.clear();
    line.extend_from_slice(b"{\"seq\":");
    push_digits(line, seq, 1);
    line.extend_from_slice(b",\"ts\":\"");
    push_timestamp(line, millis);
    line.push(b'"');
    push_string(line, "event", record.event);
    for (key, value) in [("direction", record.direction), ("method", record.method)] {
        if let Some(value) = value {
            push_string(line, key, value);
        }
    }
    if let Some(id) = record.id {
        push_key(line, "id");
        push_json_text(line, id);
    }
    let strings = [
        ("identity", record.identity),
        ("tool", record.tool),
        ("decision", record.decision),
        ("rule", record.rule),
        ("reason", record.reason),
    ];
    for (key, value) in strings {
        if let Some(value) = value {
            push_string(line, key, value);
        }
    }
    if let Some(arguments) = record.arguments {
        push_key(line, "args_sha256");
        line.push(b'"');
        push_hex(line, &Sha256::digest(arguments.as_bytes()).into());
        line.push(b'"');
        if include_arguments {
            push_key(line, "arguments");
            push_json_text(line, arguments);
        }
    }
    if let Some(detail) = record.detail {
        push_key(line, "detail");
        serde_json::to_writer(&mut *line, detail).expect("a Value always serialises into a Vec");
    }
    line.extend_from_slice(b",\"prev\":\"");
    push_hex(line, prev);
    line.push(b'"');
    let hash = hasher.hash(line);
    line.extend_from_slice(HASH_KEY);
    push_hex(line, &hash);
    line.extend_from_slice(b"\"}\n");
    hash
}

/// `,"key":` for one of our own keys, which need no escaping.
fn push_key(line: &mut Vec<u8>, key: &str) {
    line.extend_from_slice(b",\"");
    line.extend_from_slice(key.as_bytes());
    line.extend_from_slice(b"\":");
}

fn push_string(line: &mut Vec<u8>, key: &str, value: &str) {
    push_key(line, key);
    // serde_json escapes `"`, `\\` and the controls below 0x20, nothing else: a string
    // without them is written as it is, which is what it would write.
    if !value.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        line.push(b'"');
        line.extend_from_slice(value.as_bytes());
        line.push(b'"');
        return;
    }
    serde_json::to_writer(&mut *line, value).expect("a str always serialises into a Vec");
}

/// Writes JSON text from a peer (an id, the arguments) as JSON. Valid JSON on one line goes in
/// as the bytes that came, so `1.0` stays `1.0`; valid JSON with line breaks in its whitespace is
/// re-serialised, since a line break would end our line; anything else is recorded as a string.
///
/// "Valid" means what the verifier can read back: a full `Value` parse, which also refuses
/// numbers out of `f64` range (`1e999`). A skip-only parse accepts those, and a line holding
/// one could then never be read again: a peer could break the chain for every later restart.
fn push_json_text(line: &mut Vec<u8>, text: &str) {
    let one_line = !text.bytes().any(|b| b == b'\n' || b == b'\r');
    let res = match serde_json::from_str::<Value>(text) {
        Ok(_) if one_line => {
            line.extend_from_slice(text.trim_matches([' ', '\t']).as_bytes());
            return;
        }
        Ok(value) => serde_json::to_writer(&mut *line, &value),
        Err(_) => serde_json::to_writer(&mut *line, text),
    };
    res.expect("a Value or a str always serialises into a Vec");
}

fn now_millis() -> u64 {
    // A clock before 1970 is wrong; recording 1970 says so better than failing to record.
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)
}

/// `2026-11-23T22:07:37.123Z`: UTC, milliseconds, always the same width (until the year 10000).
fn push_timestamp(line: &mut Vec<u8>, millis: u64) {
    const DAY: u64 = 86_400_000;
    let (year, month, day) = civil_from_days(millis / DAY);
    let of_day = millis % DAY;
    let fields = [
        (year, 4, b'-'),
        (month, 2, b'-'),
        (day, 2, b'T'),
        (of_day / 3_600_000, 2, b':'),
        (of_day / 60_000 % 60, 2, b':'),
        (of_day / 1_000 % 60, 2, b'.'),
        (of_day % 1_000, 3, b'Z'),
    ];
    for (value, width, separator) in fields {
        push_digits(line, value, width);
        line.push(separator);
    }
}

/// (year, month, day) of a day counted from 1970-01-01: Howard Hinnant's `civil_from_days`,
/// with eras of 400 years starting on 0000-03-01, so that leap days fall at the end of a year.
pub(crate) fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    (year, month, day)
}

/// `value` in decimal, zero-padded to `width` (at most 20) digits.
fn push_digits(line: &mut Vec<u8>, mut value: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    line.extend_from_slice(&digits[start.min(digits.len() - width)..]);
}

fn push_hex(line: &mut Vec<u8>, bytes: &[u8; 32]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = [0u8; 64];
    for (pair, byte) in text.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0xf)];
    }
    line.extend_from_slice(&text);
}

fn hex(bytes: &[u8; 32]) -> String {
    let mut text = Vec::with_capacity(64);
    push_hex(&mut text, bytes);
    String::from_utf8(text).expect("hex digits are ASCII")
}

/// 64 lowercase hex digits, as we write them: an uppercase digit would be an edit the hash does
/// not cover.
fn parse_hex(text: &[u8]) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut bytes = [0u8; 32];
    for (byte, pair) in bytes.iter_mut().zip(text.chunks(2)) {
        *byte = nibble(pair[0]) << 4 | nibble(pair[1]);
    }
    Some(bytes)
}

/// The value of one hex digit, either case; the caller has checked that it is one.
fn nibble(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        _ => digit - b'A' + 10,
    }
}

/// The fields of one line that the chain depends on.
struct Line<'a> {
    seq: u64,
    prev: [u8; 32],
    hash: [u8; 32],
    /// The bytes the hash covers: everything before `,"hash":`.
    body: &'a [u8],
}

/// Parses one line (without its newline). The error says what is wrong with it.
fn parse_line(bytes: &[u8]) -> Result<Line<'_>, String> {
    let value: Value = serde_json::from_slice(bytes).map_err(|err| format!("not JSON: {err}"))?;
    let Some(object) = value.as_object() else {
        return Err("not a JSON object".to_string());
    };
    let field = |key: &str| object.get(key).ok_or_else(|| format!("missing field `{key}`"));
    let seq = field("seq")?.as_u64().ok_or("field `seq` is not a whole number")?;
    for key in ["ts", "event"] {
        if !field(key)?.is_string() {
            return Err(format!("field `{key}` is not a string"));
        }
    }
    let prev = field("prev")?
        .as_str()
        .and_then(|text| parse_hex(text.as_bytes()))
        .ok_or("field `prev` is not 64 lowercase hex digits")?;
    field("hash")?;
    // The hash covers the exact bytes before it, so it must end the line in exactly the form we
    // write; then any edit after `,"hash":` changes the hash itself, or breaks this form.
    let split = bytes.len().saturating_sub(HASH_SUFFIX_LEN);
    let (body, suffix) = bytes.split_at(split);
    let hash = Some(suffix)
        .filter(|suffix| suffix.starts_with(HASH_KEY) && suffix.ends_with(b"\"}"))
        .and_then(|suffix| parse_hex(&suffix[HASH_KEY.len()..suffix.len() - 2]))
        .ok_or("field `hash` is not last, as `\"hash\":\"<64 lowercase hex digits>\"}`")?;
    Ok(Line { seq, prev, hash, body })
}

/// Whether a partial last line (`prefix`: its first bytes, `len`: its length) can be the start
/// of line `seq`, cut short by a crash. Anything else at the end of a ledger was not written by
/// us, so neither `verify` nor `open` passes it off as a crash.
fn check_tail(prefix: &[u8], len: u64, seq: u64) -> Result<(), String> {
    let mut start = b"{\"seq\":".to_vec();
    push_digits(&mut start, seq, 1);
    start.extend_from_slice(b",\"ts\":\"");
    let n = prefix.len().min(start.len());
    if prefix[..n] == start[..n] {
        return Ok(());
    }
    Err(format!(
        "the last line is incomplete ({len} bytes, no newline) and does not begin like line {seq}"
    ))
}

/// Checks lines one at a time, so that `verify` can stream a file, `verify_bytes` a slice, and
/// `mcpdome audit --follow` a file that is still growing.
pub struct Verifier {
    hasher: Hasher,
    expect: Option<[u8; 32]>,
    lines: u64,
    head: [u8; 32],
    expected_at: Option<u64>,
}

impl Verifier {
    pub fn new(hmac_key: Option<&[u8]>, expect_head: Option<&str>) -> Result<Verifier, Broken> {
        let expect = match expect_head {
            None => None,
            Some(text) => {
                Some(parse_hex(text.to_ascii_lowercase().as_bytes()).ok_or_else(|| Broken {
                    line: 0,
                    what: format!("expected head `{text}` is not 64 hex digits"),
                })?)
            }
        };
        Ok(Verifier {
            hasher: Hasher::new(hmac_key),
            expect,
            lines: 0,
            head: GENESIS,
            expected_at: (expect == Some(GENESIS)).then_some(0),
        })
    }

    /// Checks the next whole line (without its newline).
    pub fn line(&mut self, bytes: &[u8]) -> Result<(), Broken> {
        self.lines += 1;
        let n = self.lines;
        let broken = |what: String| Broken { line: n, what };
        let line = parse_line(bytes).map_err(broken)?;
        if self.hasher.hash(line.body) != line.hash {
            let what = if self.hasher.is_keyed() {
                "hash does not match its content, or the HMAC key is wrong"
            } else if n == 1 {
                "hash does not match its content (or the ledger has an HMAC key)"
            } else {
                "hash does not match its content"
            };
            return Err(broken(what.to_string()));
        }
        if line.seq != n {
            let what = if n == 1 {
                format!("seq is {}, expected 1: this is not the start of the ledger", line.seq)
            } else {
                format!(
                    "seq is {}, expected {n}: lines are missing, repeated or reordered",
                    line.seq
                )
            };
            return Err(broken(what));
        }
        if line.prev != self.head {
            let what = if n == 1 {
                "prev is not 64 zeros: this is not the start of the ledger".to_string()
            } else {
                format!("prev does not match the hash of line {}", n - 1)
            };
            return Err(broken(what));
        }
        self.head = line.hash;
        if self.expect == Some(self.head) && self.expected_at.is_none() {
            self.expected_at = Some(n);
        }
        Ok(())
    }

    /// How many lines have been checked, and the hash of the last one (hex).
    pub fn state(&self) -> (u64, String) {
        (self.lines, hex(&self.head))
    }

    /// Ends the check; `tail` is whatever follows the last newline.
    pub fn finish(self, tail: &[u8]) -> Result<Report, Broken> {
        let tail_bytes = tail.len() as u64;
        if !tail.is_empty() {
            check_tail(tail, tail_bytes, self.lines + 1)
                .map_err(|what| Broken { line: self.lines + 1, what })?;
        }
        if let (Some(expect), None) = (self.expect, self.expected_at) {
            let what = format!(
                "the ledger ends at line {} with head {}, and no line has the expected head {}: \
                 lines were removed from the end, or this is another ledger",
                self.lines,
                hex(&self.head),
                hex(&expect)
            );
            return Err(Broken { line: self.lines, what });
        }
        Ok(Report {
            lines: self.lines,
            head: hex(&self.head),
            incomplete_tail: !tail.is_empty(),
            tail_bytes,
            expected_at: self.expected_at,
        })
    }
}

/// Where the chain ends in an existing file.
struct End {
    len: u64,
    /// The last line that has its newline (without it).
    last_line: Option<Vec<u8>>,
    /// Where the bytes after that line start; `len` when the file ends with a newline.
    tail_start: u64,
    /// The first bytes of the partial line after it, enough for `check_tail`.
    tail_prefix: Vec<u8>,
}

/// Finds the last whole line and any partial one after it, reading backwards from the end so
/// that opening a long ledger costs no more than opening a short one.
fn find_end(file: &mut File) -> io::Result<End> {
    const TAIL_PREFIX: u64 = 64;
    let len = file.metadata()?.len();
    // Positions of the last newline and the one before it.
    let mut newlines = Vec::with_capacity(2);
    let mut chunk = vec![0u8; CHUNK];
    let mut pos = len;
    while pos > 0 && newlines.len() < 2 {
        let start = pos.saturating_sub(CHUNK as u64);
        let buf = &mut chunk[..(pos - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(buf)?;
        let found = buf.iter().enumerate().rev().filter(|&(_, &b)| b == b'\n');
        newlines.extend(found.map(|(i, _)| start + i as u64).take(2 - newlines.len()));
        pos = start;
    }
    let tail_start = newlines.first().map_or(0, |&end| end + 1);
    let last_line = match newlines.first() {
        None => None,
        Some(&end) => {
            let start = newlines.get(1).map_or(0, |&before| before + 1);
            Some(read_at(file, start, end - start)?)
        }
    };
    let tail_prefix = read_at(file, tail_start, (len - tail_start).min(TAIL_PREFIX))?;
    Ok(End { len, last_line, tail_start, tail_prefix })
}

fn read_at(file: &mut File, start: u64, len: u64) -> io::Result<Vec<u8>> {
    let len = usize::try_from(len).map_err(|_| io::Error::other("line too long for memory"))?;
    let mut bytes = vec![0u8; len];
    file.seek(SeekFrom::Start(start))?;
    file.read_exact(&mut bytes)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use serde_json::json;

    use super::*;

    /// 2026-11-23T22:07:37.123Z: the time of every rendered test line.
    const TS: u64 = 1_795_471_657_123;

    const KEY: &[u8] = b"an HMAC key of thirty-two bytes!";

    /// Renders `records` as one ledger, every line at [`TS`].
    fn render_all(records: &[Record<'_>], key: Option<&[u8]>, include_arguments: bool) -> Vec<u8> {
        let hasher = Hasher::new(key);
        let (mut out, mut line, mut prev) = (Vec::new(), Vec::new(), GENESIS);
        for (seq, record) in (1..).zip(records) {
            prev = render(&mut line, &hasher, include_arguments, seq, TS, &prev, record);
            out.extend_from_slice(&line);
        }
        out
    }

    /// A start, an allowed call and a denied one, with escapes, both kinds of id, and details.
    fn sample(detail: &Value) -> [Record<'_>; 3] {
        [
            Record { event: "start", detail: Some(detail), ..Record::default() },
            Record {
                event: "decision",
                direction: Some("client"),
                method: Some("tools/call"),
                id: Some("7"),
                identity: Some("psk:ci-bot"),
                tool: Some("read_file"),
                decision: Some("allow"),
                rule: Some("dev-read"),
                arguments: Some(r#"{"path":"/tmp/a"}"#),
                ..Record::default()
            },
            Record {
                event: "decision",
                direction: Some("client"),
                method: Some("tools/call"),
                id: Some(r#""a""#),
                identity: Some("anonymous"),
                tool: Some("write_file"),
                decision: Some("deny"),
                reason: Some("no rule allows \"write_file\"\n(default: deny)"),
                arguments: Some(r#"{"path":"/etc/passwd","text":"x"}"#),
                ..Record::default()
            },
        ]
    }

    fn sample_ledger(key: Option<&[u8]>) -> Vec<u8> {
        render_all(&sample(&json!({ "version": "0.1.0" })), key, false)
    }

    fn lines(bytes: &[u8]) -> Vec<&[u8]> {
        bytes.split_inclusive(|&b| b == b'\n').collect()
    }

    #[track_caller]
    fn verified(bytes: &[u8], key: Option<&[u8]>, expect_head: Option<&str>) -> Report {
        verify_bytes(bytes, key, expect_head).unwrap_or_else(|broken| panic!("{broken}"))
    }

    #[track_caller]
    fn broken(bytes: &[u8], key: Option<&[u8]>, expect_head: Option<&str>, message: &str) {
        match verify_bytes(bytes, key, expect_head) {
            Ok(report) => panic!("verified: {report:?}"),
            Err(broken) => assert_eq!(broken.to_string(), message),
        }
    }

    /// A path in the temporary directory that no other test uses, with nothing there yet.
    fn temp(name: &str) -> PathBuf {
        let path =
            std::env::temp_dir().join(format!("mcpdome-ledger-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        path
    }

    /// Asserts that `open` refuses a file holding `bytes`, with `message` after the file's name,
    /// and leaves the file as it was.
    #[track_caller]
    fn refused(path: &Path, bytes: &[u8], key: Option<&[u8]>, message: &str) {
        std::fs::write(path, bytes).unwrap();
        let res = Ledger::open(path, key.map(<[u8]>::to_vec), false);
        let expected = format!("ledger `{}`: {message}", path.display());
        assert_eq!(res.err().map(|err| err.to_string()), Some(expected));
        assert_eq!(std::fs::read(path).unwrap(), bytes, "open changed the file");
    }

    fn key_from(path: &Path, bytes: &[u8]) -> Result<Vec<u8>, String> {
        std::fs::write(path, bytes).unwrap();
        load_key(path).map_err(|err| err.to_string())
    }

    fn head_of(line: &[u8]) -> String {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        hex(&parse_line(line).unwrap_or_else(|what| panic!("{what}")).hash)
    }

    const PLAIN: &[u8] = include_bytes!("../tests/data/ledger/plain.jsonl");
    const KEYED: &[u8] = include_bytes!("../tests/data/ledger/keyed.jsonl");
    const PLAIN_HEAD: &str = "cc412da43c147505486b64b94b0300cdd2d26269283233d456bc052d3e548ac6";
    const KEYED_HEAD: &str = "bcd9ad1278eecb6d1b1f8db16a13801bd30f97706cb8e55729e1f4c554f978f6";

    #[test]
    fn a_chain_of_three_lines_verifies() {
        let report = verified(&sample_ledger(None), None, None);
        let expected = Report {
            lines: 3,
            head: PLAIN_HEAD.to_string(),
            incomplete_tail: false,
            tail_bytes: 0,
            expected_at: None,
        };
        assert_eq!(report, expected);
        assert_eq!(verified(b"", None, None).head, hex(&GENESIS));
    }

    /// The fixtures were checked by an independent script (Python's hashlib and hmac), so they
    /// pin the line format and the hashes: a change to either breaks this test first.
    #[test]
    fn the_line_format_is_stable() {
        assert_eq!(sample_ledger(None), PLAIN);
        assert_eq!(sample_ledger(Some(KEY)), KEYED);
        assert_eq!(
            lines(PLAIN)[0],
            concat!(
                r#"{"seq":1,"ts":"2026-11-23T22:07:37.123Z","event":"start","detail":{"version":"0.1.0"},"#,
                r#""prev":"0000000000000000000000000000000000000000000000000000000000000000","#,
                r#""hash":"96251c8fc3ee005e4d71830217ec1212d9dddc00fc89d8ef4ab5a82e400389cb"}"#,
                "\n"
            )
            .as_bytes()
        );
        assert_eq!(verified(PLAIN, None, Some(PLAIN_HEAD)).expected_at, Some(3));
        let key = load_key(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/ledger/keyed.key"
        )));
        assert_eq!(key.as_deref().ok(), Some(KEY));
        assert_eq!(verified(KEYED, Some(KEY), Some(KEYED_HEAD)).expected_at, Some(3));
    }

    /// Every bit flip, and a newline or a space, at every byte of a small ledger, with and
    /// without a key: all fail, except an edit of the final newline, which leaves a last line
    /// cut short, as a crash would. With the head noted, even that fails.
    #[test]
    fn every_one_byte_edit_is_caught() {
        for key in [None, Some(KEY)] {
            let bytes = sample_ledger(key);
            let head = verified(&bytes, key, None).head;
            let final_newline = bytes.len() - 1;
            let mut edits = 0;
            for pos in 0..bytes.len() {
                let replacements = (0..8).map(|bit| bytes[pos] ^ 1 << bit).chain([b'\n', b' ']);
                for replacement in replacements.filter(|&byte| byte != bytes[pos]) {
                    let mut edited = bytes.clone();
                    edited[pos] = replacement;
                    edits += 1;
                    if let Ok(report) = verify_bytes(&edited, key, None) {
                        assert_eq!(pos, final_newline, "{replacement:#04x} at byte {pos} verifies");
                        assert!(report.incomplete_tail && report.lines == 2, "{report:?}");
                    }
                    assert!(verify_bytes(&edited, key, Some(&head)).is_err());
                }
            }
            assert!(edits > bytes.len() * 8, "every bit of every byte, and more");
        }
    }

    #[test]
    fn removed_repeated_and_reordered_lines_fail() {
        let [one, two, three] = lines(PLAIN)[..] else { panic!("three lines") };
        let message = "line 2: seq is 3, expected 2: lines are missing, repeated or reordered";
        broken(&[one, three].concat(), None, None, message);
        broken(&[one, three, two].concat(), None, None, message);
        broken(
            &[one, two, two, three].concat(),
            None,
            None,
            "line 3: seq is 2, expected 3: lines are missing, repeated or reordered",
        );
        let message = "line 1: seq is 2, expected 1: this is not the start of the ledger";
        broken(&[two, three].concat(), None, None, message);
        broken(&[two, one, three].concat(), None, None, message);
    }

    #[test]
    fn a_line_from_another_ledger_fails() {
        let detail = json!({ "version": "0.2.0" });
        let other = render_all(&sample(&detail), None, false);
        let spliced = [lines(PLAIN)[0], lines(PLAIN)[1], lines(&other)[2]].concat();
        broken(&spliced, None, None, "line 3: prev does not match the hash of line 2");
        let spliced = [lines(&other)[0], lines(PLAIN)[1]].concat();
        broken(&spliced, None, None, "line 2: prev does not match the hash of line 1");
        let line = r#"{"seq":1,"ts":"","event":"","prev":"1111111111111111111111111111111111111111111111111111111111111111""#;
        let hash = hex(&Sha256::digest(line).into());
        let line = format!("{line},\"hash\":\"{hash}\"}}\n");
        broken(
            line.as_bytes(),
            None,
            None,
            "line 1: prev is not 64 zeros: this is not the start of the ledger",
        );
    }

    #[test]
    fn malformed_lines_are_named() {
        let zeros = hex(&GENESIS);
        let cases = [
            ("hello\n", "line 1: not JSON: expected value at line 1 column 1"),
            ("\n", "line 1: not JSON: EOF while parsing a value at line 1 column 0"),
            ("[1]\n", "line 1: not a JSON object"),
            (r#"{"seq":1}"#, "line 1: missing field `ts`"),
            (r#"{"seq":-1}"#, "line 1: field `seq` is not a whole number"),
            (r#"{"seq":1,"ts":1}"#, "line 1: field `ts` is not a string"),
            (
                r#"{"seq":1,"ts":"","event":"","prev":"00"}"#,
                "line 1: field `prev` is not 64 lowercase hex digits",
            ),
        ];
        for (text, message) in cases {
            let text = if text.ends_with('\n') { text.to_string() } else { format!("{text}\n") };
            broken(text.as_bytes(), None, None, message);
        }
        let hash_not_last =
            format!(r#"{{"seq":1,"ts":"","event":"","hash":"{zeros}","prev":"{zeros}"}}"#);
        let spaced =
            format!(r#"{{"seq":1,"ts":"","event":"","prev":"{zeros}","hash": "{zeros}"}}"#);
        let upper = format!(
            r#"{{"seq":1,"ts":"","event":"","prev":"{zeros}","hash":"{}"}}"#,
            "A".repeat(64)
        );
        for line in [hash_not_last, spaced, upper] {
            broken(
                format!("{line}\n").as_bytes(),
                None,
                None,
                r#"line 1: field `hash` is not last, as `"hash":"<64 lowercase hex digits>"}`"#,
            );
        }
    }

    #[test]
    fn a_line_cut_short_is_an_incomplete_tail() {
        let [one, two, three] = lines(PLAIN)[..] else { panic!("three lines") };
        for cut in 1..three.len() {
            let bytes = [one, two, &three[..cut]].concat();
            let report = verified(&bytes, None, None);
            assert_eq!(
                (report.lines, report.incomplete_tail, report.tail_bytes),
                (2, true, cut as u64)
            );
            assert_eq!(report.head, head_of(two));
        }
        broken(
            &[one, two, b"garbage"].concat(),
            None,
            None,
            "line 3: the last line is incomplete (7 bytes, no newline) and does not begin like line 3",
        );
        broken(
            &[one, &three[..20]].concat(),
            None,
            None,
            "line 2: the last line is incomplete (20 bytes, no newline) and does not begin like line 2",
        );
    }

    #[test]
    fn expect_head_catches_lines_removed_from_the_end() {
        let [one, two, _] = lines(PLAIN)[..] else { panic!("three lines") };
        let head_two = head_of(two);
        assert_eq!(verified(PLAIN, None, Some(&head_two)).expected_at, Some(2));
        assert_eq!(verified(PLAIN, None, Some(&PLAIN_HEAD.to_uppercase())).expected_at, Some(3));
        assert_eq!(verified(b"", None, Some(&hex(&GENESIS))).expected_at, Some(0));
        broken(
            &[one, two].concat(),
            None,
            Some(PLAIN_HEAD),
            &format!(
                "line 2: the ledger ends at line 2 with head {head_two}, and no line has the \
                 expected head {PLAIN_HEAD}: lines were removed from the end, or this is another ledger"
            ),
        );
        broken(PLAIN, None, Some("cc41"), "expected head `cc41` is not 64 hex digits");
    }

    #[test]
    fn hmac_chain_needs_the_right_key() {
        assert_eq!(verified(KEYED, Some(KEY), None).head, KEYED_HEAD);
        broken(
            KEYED,
            Some(b"another key of thirty-two bytes!"),
            None,
            "line 1: hash does not match its content, or the HMAC key is wrong",
        );
        broken(
            KEYED,
            None,
            None,
            "line 1: hash does not match its content (or the ledger has an HMAC key)",
        );
        broken(
            PLAIN,
            Some(KEY),
            None,
            "line 1: hash does not match its content, or the HMAC key is wrong",
        );
        let mut edited = PLAIN.to_vec();
        let pos = PLAIN.len() - 100;
        edited[pos] ^= 1;
        broken(&edited, None, None, "line 3: hash does not match its content");
    }

    /// RFC 4231, test cases 1 to 7 (case 5 compares the first 128 bits, as the RFC does).
    #[test]
    fn strings_are_written_as_serde_json_writes_them() {
        for value in [
            "",
            "allow",
            "psk:bench",
            "a\"b",
            "a\\b",
            "tab\there",
            "\u{1}\u{1f}",
            "\u{7f}é€😀",
            "/x/",
        ] {
            let mut line = Vec::new();
            push_string(&mut line, "k", value);
            let expected = format!(",\"k\":{}", serde_json::to_string(value).unwrap());
            assert_eq!(String::from_utf8(line).unwrap(), expected, "{value:?}");
        }
    }

    #[test]
    fn hmac_sha256_matches_rfc_4231() {
        let mac = |key: &[u8], data: &[u8]| hex(&Hasher::new(Some(key)).hash(data));
        assert_eq!(
            mac(&[0x0b; 20], b"Hi There"),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        assert_eq!(
            mac(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            mac(&[0xaa; 20], &[0xdd; 50]),
            "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"
        );
        assert_eq!(
            mac(&(1..=25).collect::<Vec<u8>>(), &[0xcd; 50]),
            "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"
        );
        assert_eq!(
            mac(&[0x0c; 20], b"Test With Truncation")[..32],
            *"a3b6167473100ee06e0c796c2955552b"
        );
        let long_key = [0xaa; 131];
        assert_eq!(
            mac(&long_key, b"Test Using Larger Than Block-Size Key - Hash Key First"),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
        let data =
            "This is a test using a larger than block-size key and a larger than block-size \
                    data. The key needs to be hashed before being used by the HMAC algorithm.";
        assert_eq!(
            mac(&long_key, data.as_bytes()),
            "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"
        );
        // A key of exactly one block is used as it is, not hashed.
        let block_key = [0x42; 64];
        assert_ne!(
            Hasher::new(Some(&block_key)).hash(b""),
            Hasher::new(Some(&block_key[..63])).hash(b"")
        );
    }

    #[test]
    fn timestamps_are_utc_with_milliseconds() {
        let cases = [
            (0, "1970-01-01T00:00:00.000Z"),
            (94_694_399_999, "1972-12-31T23:59:59.999Z"),
            (951_825_600_000, "2000-02-29T12:00:00.000Z"),
            (1_709_251_199_999, "2024-02-29T23:59:59.999Z"),
            (TS, "2026-11-23T22:07:37.123Z"),
            (2_147_483_648_000, "2038-01-19T03:14:08.000Z"),
            (4_107_542_399_999, "2100-02-28T23:59:59.999Z"),
            (4_107_542_400_000, "2100-03-01T00:00:00.000Z"),
        ];
        for (millis, expected) in cases {
            let mut text = Vec::new();
            push_timestamp(&mut text, millis);
            assert_eq!(String::from_utf8(text).unwrap(), expected, "{millis}");
        }
    }

    /// `civil_from_days` against counting days one by one, 1970 to 2400.
    #[test]
    fn civil_from_days_counts_every_day() {
        let is_leap = |year: u64| {
            year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400))
        };
        let mut days = 0;
        for year in 1970..2400 {
            for month in 1..=12 {
                let length = match month {
                    2 if is_leap(year) => 29,
                    2 => 28,
                    4 | 6 | 9 | 11 => 30,
                    _ => 31,
                };
                for day in 1..=length {
                    assert_eq!(civil_from_days(days), (year, month, day), "day {days}");
                    days += 1;
                }
            }
        }
    }

    #[test]
    fn arguments_are_hashed_and_included_only_on_request() {
        let arguments = r#"{"path": "/tmp/a"}"#;
        let record = Record { event: "decision", arguments: Some(arguments), ..Record::default() };
        let args_hash =
            r#""args_sha256":"1599b29c5b519984d920bbb0c0d41e53130be51d67685a76844437e58a30b696""#;
        let without = String::from_utf8(render_all(&[record], None, false)).unwrap();
        assert!(
            without.contains(&format!(r#""event":"decision",{args_hash},"prev":"#)),
            "{without}"
        );
        assert!(!without.contains("/tmp/a"), "{without}");
        let with = String::from_utf8(render_all(&[record], None, true)).unwrap();
        let included = format!(r#"{args_hash},"arguments":{{"path": "/tmp/a"}},"prev":"#);
        assert!(with.contains(&included), "{with}");

        // Line breaks would end the line: the JSON is re-serialised; text that is not JSON is
        // kept as a string. The hash is always over the bytes that came.
        let cases =
            [("{\"a\":\n1}", r#""arguments":{"a":1}"#), (r#"{"a":"#, r#""arguments":"{\"a\":""#)];
        for (arguments, expected) in cases {
            let record =
                Record { event: "decision", arguments: Some(arguments), ..Record::default() };
            let line = String::from_utf8(render_all(&[record], None, true)).unwrap();
            assert!(line.contains(expected), "{line}");
            assert!(line.contains(&hex(&Sha256::digest(arguments).into())), "{line}");
            verified(line.as_bytes(), None, None);
        }
    }

    #[test]
    fn ids_are_written_as_json() {
        let cases = [
            ("7", r#""id":7,"#),
            (r#""a""#, r#""id":"a","#),
            (" 1.0 ", r#""id":1.0,"#),
            ("abc", r#""id":"abc","#),
        ];
        for (id, expected) in cases {
            let record = Record { event: "decision", id: Some(id), ..Record::default() };
            let line = String::from_utf8(render_all(&[record], None, false)).unwrap();
            assert!(line.contains(expected), "{line}");
        }
    }

    #[test]
    fn a_restart_continues_seq_and_chain() {
        let path = temp("restart");
        let [start, decision, _] = sample(&Value::Null);
        let first_head = {
            let ledger = Ledger::open(&path, None, false).unwrap();
            assert_eq!(ledger.head(), hex(&GENESIS));
            ledger.append(&start).unwrap();
            ledger.append(&decision).unwrap();
            ledger.head()
        };
        let ledger = Ledger::open(&path, None, false).unwrap();
        assert_eq!(ledger.head(), first_head);
        ledger.append(&Record { event: "stop", ..Record::default() }).unwrap();
        let report = verify(&path, None, Some(&first_head)).unwrap();
        assert_eq!((report.lines, report.expected_at, report.head), (3, Some(2), ledger.head()));
        let bytes = std::fs::read(&path).unwrap();
        assert!(lines(&bytes)[2].starts_with(br#"{"seq":3,"ts":""#));
        assert!(lines(&bytes)[2]
            .ends_with(format!(r#""hash":"{}"}}{}"#, ledger.head(), '\n').as_bytes()));
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_partial_last_line_is_recovered() {
        let [one, two, three] = lines(PLAIN)[..] else { panic!("three lines") };
        let path = temp("partial");
        std::fs::write(&path, [one, two, &three[..40]].concat()).unwrap();
        let report = verify(&path, None, None).unwrap();
        assert_eq!((report.lines, report.incomplete_tail, report.tail_bytes), (2, true, 40));

        let ledger = Ledger::open(&path, None, false).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let report = verify(&path, None, None).unwrap();
        assert_eq!((report.lines, report.incomplete_tail, report.head), (3, false, ledger.head()));
        assert_eq!(&bytes[..one.len() + two.len()], &PLAIN[..one.len() + two.len()]);
        let recovered = String::from_utf8(lines(&bytes)[2].to_vec()).unwrap();
        let expected = format!(
            r#","event":"recovered","reason":"the last line was cut short, probably by a crash","detail":{{"dropped_bytes":40}},"prev":"{}","hash":"#,
            head_of(two)
        );
        assert!(
            recovered.starts_with(r#"{"seq":3,"ts":""#) && recovered.contains(&expected),
            "{recovered}"
        );

        // A file that is nothing but a partial line starts over.
        std::fs::write(&path, &one[..10]).unwrap();
        let ledger = Ledger::open(&path, None, false).unwrap();
        let report = verify(&path, None, None).unwrap();
        assert_eq!((report.lines, report.head), (1, ledger.head()));
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn open_refuses_what_it_cannot_continue() {
        let [one, two, _] = lines(PLAIN)[..] else { panic!("three lines") };
        let path = temp("refuses");
        let wrong_key =
            "does not verify with this HMAC key: the key is wrong, or the line was edited";
        let other_key = Some(&b"another key of thirty-two bytes!"[..]);
        refused(&path, KEYED, other_key, &format!("the last line (seq 3) {wrong_key}"));
        refused(&path, PLAIN, Some(KEY), &format!("the last line (seq 3) {wrong_key}"));
        refused(
            &path,
            KEYED,
            None,
            "the last line (seq 3) does not match its hash: the ledger needs its HMAC key, or the \
             line was edited",
        );
        refused(
            &path,
            &[one, b"{}\n"].concat(),
            None,
            "cannot continue after its last line: missing field `seq`",
        );
        refused(
            &path,
            &[one, two, b"garbage"].concat(),
            None,
            "will not cut off its last line: the last line is incomplete (7 bytes, no newline) \
             and does not begin like line 3; check it with `mcpdome verify-log`",
        );

        std::fs::write(&path, KEYED).unwrap();
        let ledger = Ledger::open(&path, Some(KEY.to_vec()), false).unwrap();
        assert_eq!(ledger.head(), KEYED_HEAD);
        ledger.append(&Record { event: "stop", ..Record::default() }).unwrap();
        assert_eq!(verify(&path, Some(KEY), Some(KEYED_HEAD)).unwrap().lines, 4);
        std::fs::remove_file(&path).unwrap();
    }

    /// Both relay threads append at once; the chain comes out whole.
    #[test]
    fn concurrent_appends_keep_the_chain() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Ledger>();
        let path = temp("threads");
        let ledger = Ledger::open(&path, Some(KEY.to_vec()), true).unwrap();
        std::thread::scope(|scope| {
            for direction in ["client", "upstream"] {
                let ledger = &ledger;
                scope.spawn(move || {
                    for _ in 0..200 {
                        let record = Record {
                            event: "decision",
                            direction: Some(direction),
                            ..Record::default()
                        };
                        ledger.append(&record).unwrap();
                    }
                });
            }
        });
        let report = verify(&path, Some(KEY), Some(&ledger.head())).unwrap();
        assert_eq!((report.lines, report.expected_at), (400, Some(400)));
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn verify_names_a_file_it_cannot_read() {
        let path = temp("missing");
        let message =
            format!("cannot read `{}`: No such file or directory (os error 2)", path.display());
        assert_eq!(verify(&path, None, None).map_err(|broken| broken.to_string()), Err(message));
    }

    #[test]
    fn load_key_takes_hex_or_raw_bytes() {
        let path = temp("key");
        let hex_key = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF\n";
        let bytes: Vec<u8> = (0..16).map(|n| n * 0x11).collect();
        assert_eq!(key_from(&path, hex_key.as_bytes()), Ok(bytes.repeat(2)));
        assert_eq!(key_from(&path, KEY), Ok(KEY.to_vec()));
        assert_eq!(key_from(&path, &[0xff; 32]), Ok(vec![0xff; 32]));
        let short = "at least 32 are needed (`openssl rand -hex 32` makes one)";
        let name = path.display();
        let message = format!("HMAC key file `{name}` holds 31 bytes of key in hex; {short}");
        assert_eq!(key_from(&path, &hex_key.as_bytes()[..62]), Err(message));
        let message = format!("HMAC key file `{name}` holds 18 bytes of raw key; {short}");
        assert_eq!(key_from(&path, b"a short passphrase"), Err(message));
        let message = format!("HMAC key file `{name}` has an odd number of hex digits (3)");
        assert_eq!(key_from(&path, b"abc"), Err(message));
        std::fs::remove_file(&path).unwrap();
        let message =
            format!("cannot read HMAC key file `{name}`: No such file or directory (os error 2)");
        assert_eq!(load_key(&path).map_err(|err| err.to_string()), Err(message));
    }

    /// Cut, spliced and garbled ledgers: `verify_bytes` answers, and never panics.
    #[test]
    fn verify_takes_any_bytes() {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut intact = 0;
        for _ in 0..2_000 {
            let mut bytes = PLAIN.to_vec();
            for _ in 0..next() % 4 {
                let pos = (next() % bytes.len() as u64) as usize;
                match next() % 4 {
                    0 => bytes[pos] = next() as u8,
                    1 => bytes.truncate(pos),
                    2 => bytes.insert(pos, next() as u8),
                    _ => drop(bytes.drain(pos..(pos + 80).min(bytes.len()))),
                }
                if bytes.is_empty() {
                    break;
                }
            }
            intact += usize::from(verify_bytes(&bytes, None, None).is_ok());
        }
        assert!(intact > 0 && intact < 2_000, "{intact}");
    }
}
