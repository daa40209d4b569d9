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
//!   a server that never answers a cancelled request costs no memory.
//!
//! - `settings`: the settings file's contents, replaced whole by a reload (main thread) and
//!   cloned (an `Arc`) by each message, so a message sees one version from start to end.
//! - `session`: the key an allowed `initialize` established; written by the inbound thread,
//!   read by it for later requests.
//!
//! Invariant: never hold two of these locks at once.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Write};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use crate::auth::Identity;
use crate::config::{Config, Settings};
use crate::ledger::Ledger;
use crate::pin::Pins;
use crate::ward::Quarantine;
use crate::throttle::Throttle;

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
    session: Mutex<Option<[u8; 32]>>,
    anonymous: Arc<Identity>,
    pub throttle: Throttle,
    /// The audit log, if one is configured. It locks internally, one line at a time.
    pub ledger: Option<Ledger>,
    /// Tool-definition pins, if enabled. They lock internally.
    pub pins: Option<Pins>,
    /// Tools the ward removed from a list; calls to them are refused.
    pub quarantine: Quarantine,
    writers: [Mutex<Option<Writer>>; 2],
    requests: [Mutex<Requests>; 2],
}

/// What the gateway remembers of a request until it is answered.
#[derive(Clone, Debug)]
pub struct Open {
    pub method: Box<str>,
    /// Who sent it (client requests, when an identity was resolved).
    pub identity: Option<Arc<Identity>>,
}

/// Requests sent by one side.
#[derive(Default)]
struct Requests {
    open: HashMap<String, Open>,
    /// The most recent cancellations, oldest first, at most `MAX_CANCELLED`.
    cancelled: VecDeque<String>,
}

/// How many cancelled ids are remembered per direction.
const MAX_CANCELLED: usize = 256;

/// What closing a request found.
#[derive(Debug)]
pub enum Closed {
    /// It was open: this is its answer.
    Open(Open),
    /// It was cancelled recently: a late answer, which the spec tells the sender to ignore.
    Cancelled,
    /// No such request: never sent, or already answered.
    Unknown,
}

impl Gate {
    pub fn new(config: Config, settings: Settings, to_client: Writer, to_upstream: Writer) -> Gate {
        Gate {
            config,
            settings: RwLock::new(Arc::new(settings)),
            session: Mutex::new(None),
            anonymous: Arc::new(Identity::anonymous()),
            throttle: Throttle::new(),
            ledger: None,
            pins: None,
            quarantine: Quarantine::default(),
            writers: [Mutex::new(Some(to_client)), Mutex::new(Some(to_upstream))],
            requests: [Mutex::default(), Mutex::default()],
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
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "closed by mcpdome",
            ));
        };
        let res = if line.ends_with(b"\n") {
            out.write_all(line)
        } else {
            let mut whole = Vec::with_capacity(line.len() + 1);
            whole.extend_from_slice(line);
            whole.push(b'\n');
            out.write_all(&whole)
        };
        res.and_then(|()| out.flush())
    }

    /// Closes the pipe to `side` (for the upstream: its stdin, which tells it to exit).
    pub fn close(&self, side: Side) {
        lock(&self.writers[side.index()]).take();
    }

    /// The settings in force now.
    pub fn settings(&self) -> Arc<Settings> {
        Arc::clone(&self.settings.read().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    /// Replaces the settings; messages already in the chain finish under the old ones.
    pub fn replace_settings(&self, settings: Settings) {
        *self.settings.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(settings);
    }

    /// The SHA-256 of the key `initialize` established for the session, if any. The identity is
    /// looked up again for every request, so a reload applies to the session.
    pub fn session_key(&self) -> Option<[u8; 32]> {
        *lock(&self.session)
    }

    pub fn set_session_key(&self, digest: [u8; 32]) {
        *lock(&self.session) = Some(digest);
    }

    pub fn anonymous(&self) -> Arc<Identity> {
        Arc::clone(&self.anonymous)
    }

    /// Records a request sent by `from`; false if that id is already open in that direction.
    pub fn open_request(&self, from: Side, id: &str, open: Open) -> bool {
        let mut requests = lock(&self.requests[from.index()]);
        if requests.open.contains_key(id) {
            return false;
        }
        requests.open.insert(id.to_owned(), open);
        true
    }

    /// Closes a request sent by `from` because its answer arrived (or will never be delivered).
    pub fn close_request(&self, from: Side, id: &str) -> Closed {
        let mut requests = lock(&self.requests[from.index()]);
        if let Some(open) = requests.open.remove(id) {
            return Closed::Open(open);
        }
        match requests.cancelled.iter().position(|it| it == id) {
            Some(idx) => {
                requests.cancelled.remove(idx);
                Closed::Cancelled
            }
            None => Closed::Unknown,
        }
    }

    /// Marks a request sent by `from` as cancelled by its sender; false if it was not open.
    pub fn cancel_request(&self, from: Side, id: &str) -> bool {
        let mut requests = lock(&self.requests[from.index()]);
        let Some((id, _)) = requests.open.remove_entry(id) else {
            return false;
        };
        if requests.cancelled.len() == MAX_CANCELLED {
            requests.cancelled.pop_front();
        }
        requests.cancelled.push_back(id);
        true
    }

    /// Takes every open request sent by `from`, so the caller can answer each one.
    pub fn drain_requests(&self, from: Side) -> Vec<String> {
        lock(&self.requests[from.index()]).open.drain().map(|(id, _)| id).collect()
    }
}

/// A poisoned lock means a thread panicked, and a panic aborts the process (`panic = "abort"`),
/// so poisoning is only possible in tests; the data is still consistent (every critical section
/// is one map operation or one write).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
