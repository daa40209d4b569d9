//! `Gate`: the state both relay threads share.
//!
//! `Config` is immutable and read without locks. Everything mutable sits behind its own small
//! std `Mutex`, held for a map operation or one write, never across a read:
//!
//! - `writers[side]`: the pipe *to* that side. The thread relaying the other direction forwards
//!   through it, and either thread may reply through it, so every write is one whole line under
//!   the lock and lines never interleave. `None` once closed.
//! - `requests[side]`: ids of requests *sent by* that side and not yet answered. The sender's
//!   thread inserts an id before forwarding the request; the other thread removes it when the
//!   response passes; the main thread drains the client's set when the upstream dies, so each
//!   open request gets exactly one answer. Ids are tracked per direction because both sides
//!   number their requests independently (both may use id 0 at once). A cancelled request moves
//!   to a short list of recent cancellations, so a late answer to it is still recognised while
//!   a server that never answers a cancelled request costs no memory. The timer thread
//!   ([`Gate::expire`]) takes requests whose time ran out, and the outbound thread moves a
//!   request's deadline when the server reports progress on it ([`Gate::progress`]).
//! - `clock`: milliseconds since the gate was made, written by the timer thread every tick and
//!   read by the relay threads when a request opens, so a request costs an atomic load instead
//!   of a clock read.
//! - `later`: a bounded queue of lines for the upstream from threads that must not wait for it
//!   (error replies to server requests, cancellations); one writer thread drains it.
//!
//! - `settings`: the settings file's contents, replaced whole by a reload (main thread). Each
//!   relay thread keeps its own `Arc` of them ([`SettingsCache`]) and takes the lock again only
//!   when `generation` says a reload happened, so a message costs one atomic load here and sees
//!   one version from start to end.
//! - `session`: the key an allowed `initialize` established; written by the inbound thread,
//!   read by it for later requests.
//!
//! Invariant: never hold two of these locks at once.

use std::borrow::Cow;
use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock, TryLockError};
use std::thread;
use std::time::{Duration, Instant};

use crate::auth::Identity;
use crate::config::{Config, Settings};
use crate::ledger::Ledger;
use crate::pin::Pins;
use crate::throttle::Throttle;
use crate::ward::Quarantine;

/// One end of the relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The MCP client (agent host): our stdin and stdout.
    Client,
    /// The MCP server we spawned: its stdout and stdin.
    Upstream,
}

impl Side {
    pub fn other(self) -> Side {
        match self {
            Side::Client => Side::Upstream,
            Side::Upstream => Side::Client,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Upstream => "upstream",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

pub type Writer = Box<dyn Write + Send>;

pub struct Gate {
    pub config: Config,
    settings: RwLock<Arc<Settings>>,
    /// Bumped after each replacement of `settings`.
    generation: AtomicU64,
    session: Mutex<Option<[u8; 32]>>,
    anonymous: Arc<Identity>,
    /// The SHA-256 of `config.env_token`, hashed once rather than for every message.
    env_token_sha256: OnceLock<Option<[u8; 32]>>,
    pub throttle: Throttle,
    /// The audit log, if one is configured. It locks internally, one line at a time.
    pub ledger: Option<Ledger>,
    /// Tool-definition pins, if enabled. They lock internally.
    pub pins: Option<Pins>,
    /// Tools the ward removed from a list; calls to them are refused.
    pub quarantine: Quarantine,
    writers: [Mutex<Option<Writer>>; 2],
    /// Lines for the upstream that the thread holding them must not wait to write
    /// ([`Gate::send_upstream_later`]); the relay's writer thread takes them.
    later: OnceLock<SyncSender<Vec<u8>>>,
    /// Lines queued in `later` and not yet written (or given up on).
    later_pending: AtomicUsize,
    /// Set by [`Gate::close`] when the writer was busy: the thread writing closes it after its
    /// write.
    closing: [AtomicBool; 2],
    requests: [Mutex<Requests>; 2],
    /// When the gate was made; `clock` counts from here.
    epoch: Instant,
    /// Milliseconds since `epoch`, as of the timer thread's last tick.
    clock: AtomicU64,
}

/// What the gateway remembers of a request until it is answered.
#[derive(Clone, Debug)]
pub struct Open {
    /// Borrowed from [`METHODS`] for the methods MCP defines, so a request allocates nothing.
    pub method: Cow<'static, str>,
    /// Who sent it (client requests, when an identity was resolved).
    pub identity: Option<Arc<Identity>>,
    /// How long it may wait for its answer, in milliseconds; 0 is forever.
    pub timeout_ms: u64,
    /// When it was sent or last reported progress, on the gate's clock ([`Gate::now_ms`]).
    pub since_ms: u64,
    /// `params._meta.progressToken`, if the sender asked for progress notifications.
    pub progress: Option<Token>,
}

impl Open {
    pub fn new(method: &str, identity: Option<Arc<Identity>>) -> Open {
        let method = match METHODS.iter().find(|known| **known == method) {
            Some(known) => Cow::Borrowed(*known),
            None => Cow::Owned(method.to_owned()),
        };
        Open { method, identity, timeout_ms: 0, since_ms: 0, progress: None }
    }

    /// Whether its time ran out at `now_ms`. The clock is read up to one tick late when a
    /// request opens, so a request is given one tick more, and never expires early.
    fn expired(&self, now_ms: u64) -> bool {
        self.timeout_ms != 0
            && now_ms.saturating_sub(self.since_ms) >= self.timeout_ms.saturating_add(TICK_MS)
    }
}

/// A progress token: MCP allows a string or an integer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Token {
    Int(i64),
    Str(Box<str>),
}

impl Token {
    /// The token a JSON value stands for, if it is one.
    pub fn of(value: &serde_json::Value) -> Option<Token> {
        match value {
            serde_json::Value::String(text) => Some(Token::Str(text.as_str().into())),
            serde_json::Value::Number(n) => n.as_i64().map(Token::Int),
            _ => None,
        }
    }
}

/// How often the timer thread ticks: the resolution of request timeouts.
pub const TICK: Duration = Duration::from_millis(100);
const TICK_MS: u64 = TICK.as_millis() as u64;

/// A request whose time ran out, taken from the open requests by [`Gate::expire`].
#[derive(Debug)]
pub struct Expired {
    /// Its id key ([`frame::id_key`](crate::frame::id_key)), which is also its JSON text.
    pub id: String,
    pub method: Cow<'static, str>,
    pub timeout: Duration,
}

/// The request methods MCP defines (2025-06-18), both directions.
const METHODS: &[&str] = &[
    "tools/call",
    "tools/list",
    "ping",
    "initialize",
    "resources/read",
    "resources/list",
    "resources/templates/list",
    "resources/subscribe",
    "resources/unsubscribe",
    "prompts/get",
    "prompts/list",
    "completion/complete",
    "logging/setLevel",
    "sampling/createMessage",
    "elicitation/create",
    "roots/list",
];

/// A relay thread's own reference to the settings in force, refreshed from the gate when a
/// reload has replaced them since ([`Gate::settings_now`]).
pub struct SettingsCache {
    generation: u64,
    settings: Arc<Settings>,
}

/// Requests sent by one side, by id key ([`frame::id_key`](crate::frame::id_key)). Integer ids,
/// what most peers use, are kept as integers, so tracking a request allocates nothing.
#[derive(Default)]
struct Requests {
    ints: HashMap<i64, Open>,
    strings: HashMap<String, Open>,
    /// The bytes of the keys in `strings`, at most [`MAX_OPEN_ID_BYTES`].
    string_bytes: usize,
    /// The most recent cancellations, oldest first, at most `MAX_CANCELLED` and
    /// [`MAX_CANCELLED_BYTES`] of ids: the id key, and whether mcpdome already answered the
    /// request (it timed out), so a late answer must not reach the sender.
    cancelled: VecDeque<(String, bool)>,
    cancelled_bytes: usize,
}

/// How many requests may be open at once in one direction. A peer that sends requests the
/// other side never answers cannot make the gateway's memory grow without end; beyond this, a
/// request is refused. No MCP session comes near it.
pub const MAX_OPEN: usize = 10_000;

/// How many bytes of string ids the open requests of one direction may hold (ids as long as
/// a message may be would otherwise make [`MAX_OPEN`] requests gigabytes).
pub const MAX_OPEN_ID_BYTES: usize = 16 * 1024 * 1024;

/// How many bytes of ids the ring of recent cancellations may hold per direction.
const MAX_CANCELLED_BYTES: usize = 1024 * 1024;

/// Why a request could not be opened.
#[derive(Debug, PartialEq, Eq)]
pub enum NotOpened {
    /// A request with that id is open in that direction.
    InUse,
    /// [`MAX_OPEN`] requests, or [`MAX_OPEN_ID_BYTES`] of ids, are open in that direction.
    TooMany,
}

/// How many of mcpdome's own lines may wait for an upstream that is not reading
/// ([`Gate::send_upstream_later`]).
pub const MAX_LATER: usize = 1024;

/// How many cancelled ids are remembered per direction.
const MAX_CANCELLED: usize = 256;

/// What closing a request found.
#[derive(Debug)]
pub enum Closed {
    /// It was open: this is its answer.
    Open(Open),
    /// It was cancelled recently: a late answer, which the spec tells the sender to ignore and
    /// mcpdome drops (the request it answers is gone, so the checks could not see what was asked).
    Cancelled,
    /// It timed out and mcpdome answered it: a late answer, which must not be delivered (the
    /// sender would get two answers).
    Answered,
    /// No such request: never sent, or already answered.
    Unknown,
}

impl Gate {
    pub fn new(config: Config, settings: Settings, to_client: Writer, to_upstream: Writer) -> Gate {
        Gate {
            config,
            settings: RwLock::new(Arc::new(settings)),
            generation: AtomicU64::new(0),
            session: Mutex::new(None),
            anonymous: Arc::new(Identity::anonymous()),
            env_token_sha256: OnceLock::new(),
            throttle: Throttle::new(),
            ledger: None,
            pins: None,
            quarantine: Quarantine::default(),
            writers: [Mutex::new(Some(to_client)), Mutex::new(Some(to_upstream))],
            later: OnceLock::new(),
            later_pending: AtomicUsize::new(0),
            closing: [AtomicBool::new(false), AtomicBool::new(false)],
            requests: [Mutex::default(), Mutex::default()],
            epoch: Instant::now(),
            clock: AtomicU64::new(0),
        }
    }

    /// Adds the audit log; every decision is recorded in it from then on.
    pub fn with_ledger(mut self, ledger: Ledger) -> Gate {
        self.ledger = Some(ledger);
        self
    }

    /// Adds tool-definition pins.
    pub fn with_pins(mut self, pins: Pins) -> Gate {
        self.pins = Some(pins);
        self
    }

    /// Writes one whole line to `to`, adding the newline if `line` lacks one.
    pub fn send(&self, to: Side, line: &[u8]) -> io::Result<()> {
        let mut writer = lock(&self.writers[to.index()]);
        let Some(out) = writer.as_mut() else {
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "closed by mcpdome"));
        };
        let res = if line.ends_with(b"\n") {
            out.write_all(line)
        } else {
            let mut whole = Vec::with_capacity(line.len() + 1);
            whole.extend_from_slice(line);
            whole.push(b'\n');
            out.write_all(&whole)
        };
        let res = res.and_then(|()| out.flush());
        if self.closing[to.index()].load(Ordering::Acquire) {
            writer.take();
        }
        res
    }

    /// Queues a line for the upstream, to be written by the thread [`Gate::defer_upstream`]
    /// serves, so that the caller never waits for a server that stopped reading: the outbound
    /// thread replying to a refused server request while the inbound thread is blocked writing
    /// to that server would otherwise stop reading the server's stdout, and the server, blocked
    /// writing it, would never read again. The queue holds [`MAX_LATER`] lines: a server that
    /// does not read and keeps writing requests to be refused cannot make it grow, and loses
    /// the replies it is not reading anyway. Without that thread (in tests), the line is
    /// written at once.
    pub fn send_upstream_later(&self, line: Vec<u8>) -> io::Result<()> {
        let Some(later) = self.later.get() else {
            return self.send(Side::Upstream, &line);
        };
        self.later_pending.fetch_add(1, Ordering::AcqRel);
        later.try_send(line).map_err(|err| {
            self.later_pending.fetch_sub(1, Ordering::AcqRel);
            match err {
                TrySendError::Full(_) => io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!(
                        "the upstream is not reading and {MAX_LATER} lines already wait for it"
                    ),
                ),
                TrySendError::Disconnected(_) => {
                    io::Error::new(io::ErrorKind::BrokenPipe, "the upstream writer has stopped")
                }
            }
        })
    }

    /// Writes one line taken from [`Gate::defer_upstream`]'s queue.
    pub fn send_deferred(&self, line: &[u8]) -> io::Result<()> {
        let sent = self.send(Side::Upstream, line);
        self.later_pending.fetch_sub(1, Ordering::AcqRel);
        sent
    }

    /// Waits up to `limit` for the queued lines for the upstream to be written, so that closing
    /// its stdin does not cut them off. True if none is left.
    pub fn flush_deferred(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while self.later_pending.load(Ordering::Acquire) > 0 {
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(1));
        }
        true
    }

    /// Starts queueing [`Gate::send_upstream_later`]'s lines; the caller writes them with
    /// [`Gate::send`]. Called once, by the relay.
    pub fn defer_upstream(&self) -> Receiver<Vec<u8>> {
        let (tx, rx) = mpsc::sync_channel(MAX_LATER);
        let _ = self.later.set(tx);
        rx
    }

    /// Closes the pipe to `side` (for the upstream: its stdin, which tells it to exit). Never
    /// waits: if a write to that side is blocked (a peer that stopped reading), the writing
    /// thread closes the pipe when its write ends, which ending the peer brings about.
    pub fn close(&self, side: Side) {
        self.closing[side.index()].store(true, Ordering::Release);
        match self.writers[side.index()].try_lock() {
            Ok(mut writer) => drop(writer.take()),
            Err(TryLockError::Poisoned(poisoned)) => drop(poisoned.into_inner().take()),
            Err(TryLockError::WouldBlock) => {}
        }
    }

    /// Milliseconds since the gate was made, as of the timer thread's last [`Gate::tick`].
    pub fn now_ms(&self) -> u64 {
        self.clock.load(Ordering::Relaxed)
    }

    /// Reads the clock for [`Gate::now_ms`]; the timer thread calls it once per [`TICK`].
    pub fn tick(&self) -> u64 {
        let now = self.epoch.elapsed().as_millis() as u64;
        self.clock.store(now, Ordering::Relaxed);
        now
    }

    /// The settings in force now.
    pub fn settings(&self) -> Arc<Settings> {
        Arc::clone(&self.settings.read().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    /// Replaces the settings; messages already in the chain finish under the old ones.
    pub fn replace_settings(&self, settings: Settings) {
        *self.settings.write().unwrap_or_else(|poisoned| poisoned.into_inner()) =
            Arc::new(settings);
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// A cache of the settings in force now, for [`Gate::settings_now`].
    pub fn settings_cache(&self) -> SettingsCache {
        let generation = self.generation.load(Ordering::Acquire);
        SettingsCache { generation, settings: self.settings() }
    }

    /// The settings in force now, from `cache` unless a reload replaced them since it was
    /// filled. A reload that lands while this runs is seen by the next message.
    pub fn settings_now<'c>(&self, cache: &'c mut SettingsCache) -> &'c Settings {
        let generation = self.generation.load(Ordering::Acquire);
        if generation != cache.generation {
            *cache = SettingsCache { generation, settings: self.settings() };
        }
        &cache.settings
    }

    /// The SHA-256 of the key `initialize` established for the session, if any. The identity is
    /// looked up again for every request, so a reload applies to the session.
    pub fn session_key(&self) -> Option<[u8; 32]> {
        *lock(&self.session)
    }

    /// The SHA-256 of the key given in `MCPDOME_TOKEN`, if there is one.
    pub fn env_token_sha256(&self) -> Option<&[u8; 32]> {
        self.env_token_sha256
            .get_or_init(|| {
                self.config.env_token.as_ref().map(|token| crate::auth::sha256(token.as_bytes()))
            })
            .as_ref()
    }

    pub fn set_session_key(&self, digest: [u8; 32]) {
        *lock(&self.session) = Some(digest);
    }

    pub fn anonymous(&self) -> Arc<Identity> {
        Arc::clone(&self.anonymous)
    }

    /// Who a request speaks for: its own identity, or else the shared anonymous one, borrowed
    /// (a clone of the `Arc` is an atomic increment on a count both relay threads touch).
    pub fn identity_or_anonymous<'a>(&'a self, identity: Option<&'a Identity>) -> &'a Identity {
        identity.unwrap_or(&self.anonymous)
    }

    /// Records a request sent by `from`, unless that id is already open in that direction or
    /// the direction holds as many open requests as it may.
    pub fn open_request(&self, from: Side, id: &str, open: Open) -> Result<(), NotOpened> {
        let mut requests = lock(&self.requests[from.index()]);
        let requests = &mut *requests;
        let full = requests.ints.len() + requests.strings.len() >= MAX_OPEN;
        match int_id(id) {
            Some(n) => match requests.ints.entry(n) {
                Entry::Occupied(_) => Err(NotOpened::InUse),
                Entry::Vacant(_) if full => Err(NotOpened::TooMany),
                Entry::Vacant(slot) => {
                    slot.insert(open);
                    Ok(())
                }
            },
            None if requests.strings.contains_key(id) => Err(NotOpened::InUse),
            None if full || requests.string_bytes + id.len() > MAX_OPEN_ID_BYTES => {
                Err(NotOpened::TooMany)
            }
            None => {
                requests.string_bytes += id.len();
                requests.strings.insert(id.to_owned(), open);
                Ok(())
            }
        }
    }

    /// Closes a request sent by `from` because its answer arrived (or will never be delivered).
    pub fn close_request(&self, from: Side, id: &str) -> Closed {
        let mut requests = lock(&self.requests[from.index()]);
        if let Some(open) = requests.remove(id) {
            return Closed::Open(open);
        }
        match requests.cancelled.iter().position(|(it, _)| it == id) {
            Some(idx) => match requests.forget_cancelled(idx) {
                Some((_, true)) => Closed::Answered,
                _ => Closed::Cancelled,
            },
            None => Closed::Unknown,
        }
    }

    /// Marks a request sent by `from` as cancelled by its sender; false if it was not open.
    pub fn cancel_request(&self, from: Side, id: &str) -> bool {
        let mut requests = lock(&self.requests[from.index()]);
        if requests.remove(id).is_none() {
            return false;
        }
        requests.remember_cancelled(id.to_owned(), false);
        true
    }

    /// Takes every request sent by `from` whose time ran out at `now_ms` (see [`Open`]) and
    /// remembers it as answered, so a late answer is dropped. Allocates only when one expired.
    pub fn expire(&self, from: Side, now_ms: u64) -> Vec<Expired> {
        let mut requests = lock(&self.requests[from.index()]);
        let mut expired = Vec::new();
        let ints: Vec<i64> = requests
            .ints
            .iter()
            .filter(|(_, open)| open.expired(now_ms))
            .map(|(n, _)| *n)
            .collect();
        for n in ints {
            if let Some(open) = requests.ints.remove(&n) {
                expired.push((n.to_string(), open));
            }
        }
        let strings: Vec<String> = requests
            .strings
            .iter()
            .filter(|(_, open)| open.expired(now_ms))
            .map(|(id, _)| id.clone())
            .collect();
        for id in strings {
            if let Some(open) = requests.strings.remove(&id) {
                requests.string_bytes -= id.len();
                expired.push((id, open));
            }
        }
        expired
            .into_iter()
            .map(|(id, open)| {
                requests.remember_cancelled(id.clone(), true);
                let timeout = Duration::from_millis(open.timeout_ms);
                Expired { id, method: open.method, timeout }
            })
            .collect()
    }

    /// The server reported progress with `token`: the open request of `from` that asked for
    /// progress with it starts its wait again. False if no open request has that token.
    pub fn progress(&self, from: Side, token: &Token) -> bool {
        let now_ms = self.now_ms();
        let mut requests = lock(&self.requests[from.index()]);
        let Requests { ints, strings, .. } = &mut *requests;
        let found = ints
            .values_mut()
            .chain(strings.values_mut())
            .find(|open| open.progress.as_ref() == Some(token));
        match found {
            Some(open) => {
                open.since_ms = now_ms;
                true
            }
            None => false,
        }
    }

    /// Takes every open request sent by `from`, so the caller can answer each one.
    pub fn drain_requests(&self, from: Side) -> Vec<String> {
        let mut requests = lock(&self.requests[from.index()]);
        let mut ids: Vec<String> = requests.ints.drain().map(|(n, _)| n.to_string()).collect();
        ids.extend(requests.strings.drain().map(|(id, _)| id));
        requests.string_bytes = 0;
        ids
    }
}

impl Requests {
    fn remember_cancelled(&mut self, id: String, answered: bool) {
        self.cancelled_bytes += id.len();
        self.cancelled.push_back((id, answered));
        while self.cancelled.len() > MAX_CANCELLED || self.cancelled_bytes > MAX_CANCELLED_BYTES {
            match self.cancelled.pop_front() {
                Some((old, _)) => self.cancelled_bytes -= old.len(),
                None => break,
            }
        }
    }

    fn forget_cancelled(&mut self, idx: usize) -> Option<(String, bool)> {
        let entry = self.cancelled.remove(idx)?;
        self.cancelled_bytes -= entry.0.len();
        Some(entry)
    }

    fn remove(&mut self, id: &str) -> Option<Open> {
        match int_id(id) {
            Some(n) => self.ints.remove(&n),
            None => {
                let open = self.strings.remove(id)?;
                self.string_bytes -= id.len();
                Some(open)
            }
        }
    }
}

/// The integer an id key stands for, if it is written as `i64::to_string` would write it (what
/// `frame::id_key` gives for integer ids), so that each integer has one key and each key at most
/// one integer: `+5`, `05` and `-0` are left as text.
fn int_id(id: &str) -> Option<i64> {
    let canonical = match id.strip_prefix('-').unwrap_or(id).as_bytes() {
        [b'0'] => !id.starts_with('-'),
        [b'1'..=b'9', ..] => true,
        _ => false,
    };
    if !canonical {
        return None;
    }
    id.parse().ok()
}

/// A poisoned lock means a thread panicked, and a panic aborts the process (`panic = "abort"`),
/// so poisoning is only possible in tests; the data is still consistent (every critical section
/// is one map operation or one write).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn gate() -> Gate {
        let config = Config::transparent(1024);
        let settings = Settings::transparent(Default::default());
        Gate::new(config, settings, Box::new(io::sink()), Box::new(io::sink()))
    }

    #[test]
    fn request_ids() {
        let gate = gate();
        let open =
            |id: &str| gate.open_request(Side::Client, id, Open::new("tools/call", None)).is_ok();
        for id in
            ["7", "\"7\"", "-3", "0", "9223372036854775807", "-9223372036854775808", "\"a\\\"b\""]
        {
            assert!(open(id), "{id}");
            assert!(!open(id), "{id} opened twice");
        }
        // Integers and strings never share a key, whatever the spelling.
        assert!(matches!(gate.close_request(Side::Client, "\"-3\""), Closed::Unknown));
        assert!(matches!(gate.close_request(Side::Upstream, "7"), Closed::Unknown));
        assert!(
            matches!(gate.close_request(Side::Client, "-3"), Closed::Open(open) if open.method == "tools/call")
        );
        assert!(matches!(gate.close_request(Side::Client, "-3"), Closed::Unknown));
        assert!(gate.cancel_request(Side::Client, "7"));
        assert!(!gate.cancel_request(Side::Client, "7"));
        assert!(matches!(gate.close_request(Side::Client, "7"), Closed::Cancelled));
        let mut left = gate.drain_requests(Side::Client);
        left.sort();
        assert_eq!(
            left,
            ["\"7\"", "\"a\\\"b\"", "-9223372036854775808", "0", "9223372036854775807"]
        );
        assert!(gate.drain_requests(Side::Client).is_empty());
    }

    #[test]
    fn open_requests_are_bounded() {
        let gate = gate();
        let open = |from: Side, id: &str| gate.open_request(from, id, Open::new("ping", None));
        for n in 0..MAX_OPEN {
            assert_eq!(open(Side::Client, &n.to_string()), Ok(()), "request {n}");
        }
        assert_eq!(open(Side::Client, "-1"), Err(NotOpened::TooMany));
        assert_eq!(open(Side::Client, "\"s\""), Err(NotOpened::TooMany));
        assert_eq!(open(Side::Client, "0"), Err(NotOpened::InUse));
        // The other direction has its own table; an answer makes room.
        assert_eq!(open(Side::Upstream, "-1"), Ok(()));
        assert!(matches!(gate.close_request(Side::Client, "5"), Closed::Open(_)));
        assert_eq!(open(Side::Client, "-1"), Ok(()));
        gate.drain_requests(Side::Client);

        // String ids are bounded by their bytes too, and every way out gives the bytes back.
        let long = |c: char| format!("\"{}\"", c.to_string().repeat(MAX_OPEN_ID_BYTES / 4 - 2));
        for c in ['a', 'b', 'c', 'd'] {
            assert_eq!(open(Side::Client, &long(c)), Ok(()));
        }
        assert_eq!(open(Side::Client, "\"e\""), Err(NotOpened::TooMany));
        assert_eq!(open(Side::Client, "1"), Ok(()), "integer ids take no id bytes");
        assert!(matches!(gate.close_request(Side::Client, &long('a')), Closed::Open(_)));
        assert!(gate.cancel_request(Side::Client, &long('b')));
        assert_eq!(open(Side::Client, &long('e')), Ok(()));
        assert_eq!(open(Side::Client, &long('f')), Ok(()));
        assert_eq!(open(Side::Client, "\"g\""), Err(NotOpened::TooMany));
        gate.drain_requests(Side::Client);
        assert_eq!(open(Side::Client, &long('g')), Ok(()));
        // The ring of cancellations keeps at most a mebibyte of ids: the long one is forgotten.
        assert!(matches!(gate.close_request(Side::Client, &long('b')), Closed::Unknown));
    }

    #[test]
    fn lines_for_an_upstream_that_does_not_read_are_bounded() {
        let gate = gate();
        let later = gate.defer_upstream();
        for n in 0..MAX_LATER {
            assert!(gate.send_upstream_later(vec![b'x']).is_ok(), "line {n}");
        }
        let err = gate.send_upstream_later(vec![b'x']).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(later.try_iter().count(), MAX_LATER);
        assert!(gate.send_upstream_later(vec![b'x']).is_ok());
    }

    #[test]
    fn requests_time_out() {
        let gate = gate();
        let open = |id: &str, token: Option<Token>| {
            let mut open = Open::new("tools/call", None);
            open.timeout_ms = 300;
            open.progress = token;
            assert!(gate.open_request(Side::Client, id, open).is_ok());
        };
        open("1", None);
        open("\"a\"", Some(Token::Str("t".into())));
        open("2", Some(Token::Int(7)));
        assert!(gate.open_request(Side::Client, "3", Open::new("ping", None)).is_ok());
        // One tick of slack: nothing expires before timeout + tick.
        assert!(gate.expire(Side::Client, 399).is_empty());
        gate.clock.store(250, Ordering::Relaxed);
        assert!(gate.progress(Side::Client, &Token::Str("t".into())));
        assert!(!gate.progress(Side::Client, &Token::Int(8)));
        let mut expired: Vec<String> =
            gate.expire(Side::Client, 400).into_iter().map(|expired| expired.id).collect();
        expired.sort();
        assert_eq!(expired, ["1", "2"]);
        assert!(matches!(gate.close_request(Side::Client, "1"), Closed::Answered));
        assert!(matches!(gate.close_request(Side::Client, "1"), Closed::Unknown));
        let expired = gate.expire(Side::Client, 650);
        assert_eq!(expired.len(), 1);
        assert_eq!((&*expired[0].id, expired[0].timeout), ("\"a\"", Duration::from_millis(300)));
        // A request without a timeout waits forever.
        assert!(gate.expire(Side::Client, u64::MAX).is_empty());
        assert_eq!(gate.drain_requests(Side::Client), ["3"]);
    }

    #[test]
    fn int_ids_are_canonical() {
        assert_eq!(int_id("12"), Some(12));
        assert_eq!(int_id("-12"), Some(-12));
        assert_eq!(int_id("0"), Some(0));
        for text in ["+12", "012", "-0", "-", "", "1e3", "\"12\"", "99999999999999999999"] {
            assert_eq!(int_id(text), None, "{text}");
        }
    }

    #[test]
    fn known_methods_are_borrowed() {
        assert!(matches!(Open::new("tools/call", None).method, Cow::Borrowed("tools/call")));
        assert!(matches!(Open::new("x/custom", None).method, Cow::Owned(_)));
    }

    #[test]
    fn settings_follow_a_reload() {
        let gate = gate();
        let mut cache = gate.settings_cache();
        assert!(!gate.settings_now(&mut cache).from_file);
        let mut settings = Settings::transparent(Default::default());
        settings.from_file = true;
        gate.replace_settings(settings);
        assert!(gate.settings_now(&mut cache).from_file);
    }
}
