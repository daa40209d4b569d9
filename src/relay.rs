//! The relay: two threads move lines, the main thread decides when it is over.
//!
//! - The *inbound* thread reads the client (our stdin), checks each line and forwards it to the
//!   upstream's stdin.
//! - The *outbound* thread reads the upstream's stdout, checks each line and forwards it to the
//!   client (our stdout).
//! - The main thread waits for the first end: client EOF, upstream EOF or exit, a closed stdout,
//!   or SIGTERM/SIGINT. Then it ends the upstream (close stdin, grace, SIGTERM, grace, SIGKILL),
//!   lets the outbound thread forward what the server wrote, answers every client request still
//!   open with an error that names the cause, and returns the server's exit status.
//! - The *timer* thread ticks every [`TICK`]: a client request that got no answer within the
//!   request timeout is answered with an error and cancelled upstream.
//! - The *later* thread writes what mcpdome itself says to the upstream (errors for refused
//!   server requests, cancellations), so that a server that stopped reading blocks only it.
//!
//! A line that is allowed is forwarded as the bytes we read. A line that is refused never
//! reaches the other side; its sender gets a JSON-RPC error if it was a request (or if it was not
//! even JSON, from the client), and a response that cannot be delivered turns into an error for
//! the request it answered, so nobody waits forever. Each refusal is one log line.
//!
//! The inbound thread's blocking read on stdin cannot be cancelled, so `run` returns while it is
//! still blocked and the process exits under it.

use std::io::{BufRead, BufReader};
use std::process::ExitStatus;
use std::sync::{mpsc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use crate::chain::{self, Check, Ctx, Deny, AUDIT_FAILED, REQUEST_TIMEOUT, UPSTREAM_GONE};
use crate::config::{self, Settings};
use crate::frame::{self, Kind, LineReader, Read, INVALID_REQUEST};
use crate::gate::{self, Closed, Gate, NotOpened, Open, Side, Token, TICK};
use crate::ledger;
use crate::log;
use crate::signal::{self, Signals};
use crate::upstream::{self, Upstream};
use crate::{debug, error, info, warn};

/// Read buffer per direction. Lines longer than this are still read whole (up to the limit).
const READ_BUFFER: usize = 64 * 1024;

/// How often the main thread checks whether the upstream exited while its stdout stays open
/// (a child it left behind may hold the pipe).
const EXIT_POLL: Duration = Duration::from_millis(100);

/// How long a client request may wait for its answer unless configured otherwise. Generous on
/// purpose: a tool may legitimately run for minutes (a build, a crawl, a model call) without
/// reporting progress, and cutting it off is worse than a client waiting. The timeout is for
/// the server that will never answer (hung, deadlocked, lost the request), and ten minutes
/// still ends that wait while someone is around to notice.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// Why the relay stops.
#[derive(Debug)]
pub enum Event {
    /// The client closed our stdin.
    ClientEof,
    /// Our stdout is closed: the client stopped reading.
    ClientGone,
    /// The upstream closed its stdout.
    UpstreamEof,
    /// The upstream exited (its stdout may still be open).
    UpstreamExited(ExitStatus),
    /// SIGTERM or SIGINT.
    Signal(i32),
}

/// Relays until one side ends, then shuts down as described above; returns the exit code.
pub fn run(
    gate: &'static Gate,
    client_in: impl std::io::Read + Send + 'static,
    upstream_out: impl std::io::Read + Send + 'static,
    mut upstream: Upstream,
    signals: Signals,
) -> u8 {
    let (events, inbox) = mpsc::channel();
    let tx = events.clone();
    thread::spawn(move || {
        let event = pump(gate, Side::Client, BufReader::with_capacity(READ_BUFFER, client_in));
        let _ = tx.send(event);
    });
    let tx = events.clone();
    thread::spawn(move || {
        let event = pump(gate, Side::Upstream, BufReader::with_capacity(READ_BUFFER, upstream_out));
        let _ = tx.send(event);
    });
    // What mcpdome itself says to the upstream (error replies to its requests, cancellations)
    // is written by a thread of its own: a server that stopped reading blocks that write, and
    // must not stop the relay of its stdout or the timeouts of later requests.
    let later = gate.defer_upstream();
    thread::spawn(move || {
        for line in later {
            if let Err(err) = gate.send_deferred(&line) {
                debug!("not delivered to the upstream: {err}");
            }
        }
    });
    thread::spawn(move || loop {
        thread::sleep(TICK);
        expire_requests(gate);
    });
    thread::spawn(move || loop {
        let sig = signal::wait(&signals);
        if events.send(Event::Signal(sig)).is_err() {
            return;
        }
    });

    let mut watch = gate.config.config_file.as_deref().map(config::Watch::new);
    let cause = loop {
        match inbox.recv_timeout(EXIT_POLL) {
            Ok(Event::Signal(signal::SIGHUP)) => match &mut watch {
                Some(watch) => watch.reload(gate, "SIGHUP"),
                None => info!("SIGHUP: there is no config file to reload"),
            },
            Ok(event) => break event,
            Err(_) => {
                // The timer thread ticks too, but it may be blocked on a client that does not
                // read; requests opened meanwhile must not look older than they are.
                gate.tick();
                if let Some(status) = upstream.try_status() {
                    break Event::UpstreamExited(status);
                }
                if let Some(watch) = &mut watch {
                    if watch.changed() {
                        watch.reload(gate, "the file changed");
                    }
                }
            }
        }
    };
    info!("stopping: {cause:?}");
    let grace = gate.config.shutdown_grace;
    // What mcpdome still has to say to the upstream goes before its stdin closes.
    if !matches!(cause, Event::UpstreamExited(_) | Event::UpstreamEof)
        && !gate.flush_deferred(grace)
    {
        warn!("the upstream is not reading; lines mcpdome queued for it were not delivered");
    }
    gate.close(Side::Upstream);
    let status = match cause {
        Event::UpstreamExited(status) => status,
        _ => upstream.end(grace),
    };
    if !matches!(cause, Event::UpstreamEof | Event::ClientGone) {
        // Let the outbound thread forward everything the server wrote before it exited.
        let deadline = Instant::now() + grace;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match inbox.recv_timeout(left) {
                Ok(Event::UpstreamEof | Event::ClientGone) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
    upstream.kill_rest();

    let why = match cause {
        Event::Signal(sig) => format!("mcpdome was stopped by signal {sig}"),
        _ => format!("the upstream server {}", upstream::describe(status)),
    };
    let open = gate.drain_requests(Side::Client);
    if !open.is_empty() {
        warn!("{why}; answering {} open request(s) with an error", open.len());
        answer_open(gate, open, &why, grace);
    }
    if let Some(ledger) = &gate.ledger {
        let detail = serde_json::json!({ "cause": format!("{cause:?}"), "upstream": upstream::describe(status) });
        let record = ledger::Record {
            event: "stop",
            reason: Some(&why),
            detail: Some(&detail),
            ..ledger::Record::default()
        };
        if let Err(err) = ledger.append(&record) {
            error!("audit log: {err}");
        }
    }
    upstream::exit_code(status)
}

/// Answers the client's requests that the upstream left open. A client that stopped reading
/// could keep these writes (and the outbound thread's) blocked forever, so they are made on a
/// thread of their own and given `grace` to finish; mcpdome exits either way.
fn answer_open(gate: &'static Gate, open: Vec<String>, why: &str, grace: Duration) {
    let (done, finished) = mpsc::channel();
    let reason = format!("{why} before answering");
    thread::spawn(move || {
        for id in open {
            let line = chain::error_line(Some(&id), UPSTREAM_GONE, &reason);
            if gate.send(Side::Client, &line).is_err() {
                break;
            }
        }
        let _ = done.send(());
    });
    if finished.recv_timeout(grace.max(MIN_ANSWER_WAIT)).is_err() {
        warn!("the client is not reading; the answers to the open requests were not delivered");
    }
}

/// The least time the open requests' final answers are given, however short the grace.
const MIN_ANSWER_WAIT: Duration = Duration::from_millis(100);

/// The timer thread's work each tick: every client request whose time ran out gets an error,
/// and the server a `notifications/cancelled` for it, so it can stop working on it. Its late
/// answer, if one comes, is dropped by the outbound thread ([`Closed::Answered`]).
///
/// This runs on its own thread because the write to the client may block on a client that
/// stopped reading; the main thread must stay free to handle signals and the end of the
/// upstream. The cancellations are queued ([`Gate::send_upstream_later`]), for the same reason.
fn expire_requests(gate: &Gate) {
    let now_ms = gate.tick();
    for expired in gate.expire(Side::Client, now_ms) {
        let (id, method, timeout) = (&expired.id, &expired.method, expired.timeout);
        warn!("request {id} ({method}) got no answer within {timeout:?} (request_timeout); answered with error {REQUEST_TIMEOUT} and cancelled upstream");
        let reason = format!(
            "the upstream server did not answer {method} within {timeout:?} (request_timeout); the request was cancelled"
        );
        let _ = gate.send(Side::Client, &chain::error_line(Some(id), REQUEST_TIMEOUT, &reason));
        let line = format!(
            r#"{{"jsonrpc":"2.0","method":"notifications/cancelled","params":{{"requestId":{id},"reason":{}}}}}"#,
            serde_json::Value::String(format!(
                "mcpdome: no answer within {timeout:?} (request_timeout)"
            ))
        );
        if let Err(err) = gate.send_upstream_later(line.into_bytes()) {
            debug!("cancellation of request {id} not sent to the upstream: {err}");
        }
        if let Some(ledger) = &gate.ledger {
            let detail = serde_json::json!({ "timeout_ms": timeout.as_millis() as u64 });
            let record = ledger::Record {
                event: "timeout",
                direction: Some(Side::Client.name()),
                method: Some(method),
                id: Some(id),
                reason: Some(&reason),
                detail: Some(&detail),
                ..ledger::Record::default()
            };
            if let Err(err) = ledger.append(&record) {
                error!("audit log: {err}");
            }
        }
    }
}

/// The client's stdout is closed; nothing more can be delivered to it.
struct ClientGone;

/// Relays lines read from `from` until its input ends or the client is gone.
pub fn pump(gate: &Gate, from: Side, input: impl BufRead) -> Event {
    let checks = match from {
        Side::Client => chain::INBOUND,
        Side::Upstream => chain::OUTBOUND,
    };
    let mut reader = LineReader::new(input, gate.config.max_message_bytes);
    let mut settings = gate.settings_cache();
    let mut n_line: u64 = 0;
    loop {
        let read = match reader.read_line() {
            Ok(Some(read)) => read,
            Ok(None) => break,
            Err(err) => {
                warn!("reading from the {}: {err}", from.name());
                break;
            }
        };
        n_line += 1;
        let res = match read {
            Read::Line(line) => {
                let settings = gate.settings_now(&mut settings);
                relay_line(gate, checks, Line { from, n: n_line }, line, settings)
            }
            Read::TooLong(oversize) => {
                let error = frame::FrameError::TooLong {
                    len: oversize.len,
                    limit: gate.config.max_message_bytes,
                };
                let shape = shape(oversize.has_method, oversize.id.is_some());
                let line = Line { from, n: n_line };
                let reason = error.to_string();
                let id = oversize.id.as_deref();
                refuse(
                    gate,
                    line,
                    Refusal { shape, id, code: error.code(), reason: &reason, answer_null: false },
                )
            }
        };
        if res.is_err() {
            return Event::ClientGone;
        }
    }
    match from {
        Side::Client => Event::ClientEof,
        Side::Upstream => Event::UpstreamEof,
    }
}

/// Where a line came from, for replies and log lines.
#[derive(Clone, Copy)]
struct Line {
    from: Side,
    n: u64,
}

fn relay_line(
    gate: &Gate,
    checks: &[Check],
    line: Line,
    bytes: &[u8],
    settings: &Settings,
) -> Result<(), ClientGone> {
    let Line { from, n } = line;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        debug!("{} line {n}: blank; skipped", from.name());
        return Ok(());
    }
    let msg = match frame::parse(bytes) {
        Ok(msg) => msg,
        Err(rejected) => {
            let id = rejected.id.map(frame::id_key);
            let shape = shape(rejected.has_method, id.is_some());
            let (code, reason) = (rejected.error.code(), rejected.error.to_string());
            let id = id.as_deref();
            return refuse(
                gate,
                line,
                Refusal { shape, id, code, reason: &reason, answer_null: true },
            );
        }
    };
    let id = msg.id.map(frame::id_key);
    // A response closes the request it answers before the checks run, so they can see what
    // was asked (and a refused response still ends that request: see `refuse`).
    let mut request = None;
    if let (Kind::Response, Some(id)) = (msg.kind, id.as_deref()) {
        match gate.close_request(from.other(), id) {
            Closed::Open(open) => request = Some(open),
            // The sender of the cancellation ignores a late answer (the spec says so), and
            // what it asked is no longer known, so the answer could not be checked: dropped.
            Closed::Cancelled => {
                debug!(
                    "{} line {n}: late response to cancelled request {id}; dropped",
                    from.name()
                );
                return Ok(());
            }
            Closed::Answered => {
                debug!(
                    "{} line {n}: late response to request {id}, which timed out; dropped",
                    from.name()
                );
                return Ok(());
            }
            Closed::Unknown => {
                warn!(
                    "{} line {n}: response to id {id}, which no open request has; dropped",
                    from.name()
                );
                return Ok(());
            }
        }
    }
    let mut ctx = Ctx::new(from, &msg, settings, request);
    let verdict =
        chain::run(checks, gate, &mut ctx).and_then(|()| audit_allowed(gate, &ctx, id.as_deref()));
    if let Err(deny) = verdict {
        audit_denied(gate, &ctx, id.as_deref(), &deny);
        let shape = match msg.kind {
            Kind::Request => Shape::Request,
            Kind::Response if ctx.request.is_some() => Shape::ClosedResponse,
            _ => Shape::Other,
        };
        let about = record(&ctx, id.as_deref(), "deny");
        return refuse_with(gate, line, shape, id.as_deref(), &deny, &about);
    }
    match (msg.kind, id.as_deref()) {
        (Kind::Request, Some(id)) => {
            let mut open = Open::new(msg.method(), ctx.identity.clone());
            if from == Side::Client {
                let timeout = request_timeout(gate, settings);
                if !timeout.is_zero() {
                    open.timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
                    open.since_ms = gate.now_ms();
                    open.progress = progress_token(&ctx);
                }
            }
            if let Err(not_opened) = gate.open_request(from, id, open) {
                let reason = match not_opened {
                    NotOpened::InUse => {
                        format!("request id {id} is already in use by an unanswered request")
                    }
                    NotOpened::TooMany => format!(
                        "too many unanswered requests ({} at most, {} bytes of ids); wait for answers",
                        gate::MAX_OPEN,
                        gate::MAX_OPEN_ID_BYTES
                    ),
                };
                let refusal = Refusal {
                    shape: Shape::Request,
                    id: Some(id),
                    code: INVALID_REQUEST,
                    reason: &reason,
                    answer_null: false,
                };
                return refuse(gate, line, refusal);
            }
            if let Some(digest) = ctx.session_key {
                gate.set_session_key(digest);
            }
        }
        // Progress on a client request shows the server is working on it: its wait for the
        // answer starts again.
        (Kind::Notification, _)
            if from == Side::Upstream
                && msg.method() == "notifications/progress"
                && !request_timeout(gate, settings).is_zero() =>
        {
            if let Some(token) = notified_token(&msg) {
                gate.progress(Side::Client, &token);
            }
        }
        _ if msg.method() == "notifications/cancelled" => {
            // Only the sender of a request may cancel it, and only while it is open. A
            // cancellation for anything else (answered, refused by mcpdome, never sent) has
            // nobody to tell.
            match cancelled_request(&msg) {
                Some(id) if gate.cancel_request(from, &id) => {}
                _ => {
                    debug!(
                        "{} line {n}: cancellation of a request that is not open; dropped",
                        from.name()
                    );
                    return Ok(());
                }
            }
        }
        _ => {}
    }
    let rewritten;
    let out = if ctx.changed {
        rewritten = ctx.rewritten();
        &rewritten[..]
    } else {
        bytes
    };
    match gate.send(from.other(), out) {
        Ok(()) => Ok(()),
        Err(_) if from == Side::Upstream => Err(ClientGone),
        Err(err) => {
            debug!("client line {n}: not delivered to the upstream: {err}");
            match (msg.kind, id.as_deref()) {
                (Kind::Request, Some(id))
                    if matches!(gate.close_request(from, id), Closed::Open(_)) =>
                {
                    let reason = format!("the upstream server is not accepting messages ({err})");
                    reply(gate, Side::Client, Some(id), &Deny::new(UPSTREAM_GONE, reason))
                }
                _ => Ok(()),
            }
        }
    }
}

/// Records an allowed client request, or a message a check changed, before it is forwarded. If
/// the record cannot be written the message is refused: an action the audit log does not show
/// must not happen.
fn audit_allowed(gate: &Gate, ctx: &Ctx<'_>, id: Option<&str>) -> Result<(), Deny> {
    let Some(ledger) = &gate.ledger else { return Ok(()) };
    let is_client_request = ctx.from == Side::Client && ctx.msg.kind == Kind::Request;
    if !is_client_request && !ctx.changed && !ctx.flagged {
        return Ok(());
    }
    let decision = match (is_client_request, ctx.changed, ctx.flagged) {
        (true, _, false) => "allow",
        (false, true, _) => "filter",
        _ => "flag",
    };
    let record = record(ctx, id, decision);
    let arguments = arguments_of(ctx);
    let record = ledger::Record {
        arguments,
        rule: ctx.rule.as_deref(),
        detail: ctx.detail.as_ref(),
        ..record
    };
    ledger.append(&record).map_err(|err| {
        error!("audit log: {err}; refusing the message");
        Deny::new(AUDIT_FAILED, format!("the audit log cannot be written ({err})"))
    })
}

fn audit_denied(gate: &Gate, ctx: &Ctx<'_>, id: Option<&str>, deny: &Deny) {
    let Some(ledger) = &gate.ledger else { return };
    if deny.code == AUDIT_FAILED {
        return;
    }
    let arguments = arguments_of(ctx);
    let record = ledger::Record {
        rule: deny.rule.as_deref(),
        reason: Some(&deny.reason),
        arguments,
        detail: deny.data.as_ref(),
        ..record(ctx, id, "deny")
    };
    if let Err(err) = ledger.append(&record) {
        error!("audit log: {err}");
    }
}

fn record<'c>(ctx: &'c Ctx<'_>, id: Option<&'c str>, decision: &'static str) -> ledger::Record<'c> {
    let identity =
        ctx.identity.as_ref().or(ctx.request.as_ref().and_then(|open| open.identity.as_ref()));
    let method = ctx.msg.method.as_deref().or(ctx.request.as_ref().map(|open| &*open.method));
    ledger::Record {
        event: "decision",
        direction: Some(ctx.from.name()),
        method,
        id,
        identity: identity.map(|identity| identity.principal.as_str()),
        tool: ctx.tool.as_deref().or_else(|| called_tool(ctx)),
        decision: Some(decision),
        ..ledger::Record::default()
    }
}

/// The tool a client's `tools/call` names, if it can be read.
fn called_tool<'c>(ctx: &'c Ctx<'_>) -> Option<&'c str> {
    let is_call = ctx.from == Side::Client && ctx.msg.method() == "tools/call";
    if !is_call {
        return None;
    }
    ctx.action().ok()?.name.as_deref()
}

/// The raw arguments of a call, for the ledger's hash of them.
fn arguments_of<'a>(ctx: &Ctx<'a>) -> Option<&'a str> {
    if ctx.from != Side::Client || ctx.msg.kind != Kind::Request {
        return None;
    }
    ctx.action().ok()?.arguments.map(|raw| raw.get())
}

/// The request timeout in force: `--request-timeout`, else `[mcpdome] request_timeout`, else
/// [`DEFAULT_REQUEST_TIMEOUT`]. Zero is off.
fn request_timeout(gate: &Gate, settings: &Settings) -> Duration {
    gate.config.request_timeout.or(settings.request_timeout).unwrap_or(DEFAULT_REQUEST_TIMEOUT)
}

/// The `params._meta.progressToken` of a request, if it has one. The bytes are searched first,
/// so a request without one costs a substring search of its params and nothing else.
fn progress_token(ctx: &Ctx<'_>) -> Option<Token> {
    static NEEDLE: OnceLock<memchr::memmem::Finder<'static>> = OnceLock::new();
    let needle = NEEDLE.get_or_init(|| memchr::memmem::Finder::new(b"progressToken"));
    needle.find(ctx.msg.params?.get().as_bytes())?;
    let meta: serde_json::Value = serde_json::from_str(ctx.action().ok()?.meta?.get()).ok()?;
    Token::of(meta.get("progressToken")?)
}

/// The `progressToken` of a `notifications/progress`.
fn notified_token(msg: &frame::Msg<'_>) -> Option<Token> {
    let params: serde_json::Value = serde_json::from_str(msg.params?.get()).ok()?;
    Token::of(params.get("progressToken")?)
}

/// The `requestId` of a `notifications/cancelled`, as an id key.
fn cancelled_request(msg: &frame::Msg<'_>) -> Option<String> {
    let params: serde_json::Value = serde_json::from_str(msg.params?.get()).ok()?;
    match params.get("requestId")? {
        id @ serde_json::Value::String(_) => Some(id.to_string()),
        serde_json::Value::Number(n) if n.is_i64() => Some(n.to_string()),
        _ => None,
    }
}

/// A refused line: what it was and why it was refused.
struct Refusal<'a> {
    shape: Shape,
    id: Option<&'a str>,
    code: i32,
    reason: &'a str,
    /// A client line that is not a message at all: JSON-RPC answers it with id `null`.
    answer_null: bool,
}

/// Refuses a message a check denied.
fn refuse_with(
    gate: &Gate,
    line: Line,
    shape: Shape,
    id: Option<&str>,
    deny: &Deny,
    about: &ledger::Record<'_>,
) -> Result<(), ClientGone> {
    let Line { from, n } = line;
    let (outcome, to) = match (shape, id) {
        (Shape::Request, Some(id)) => {
            (format!("answered request {id} with error {}", deny.code), Some(from))
        }
        (Shape::ClosedResponse, Some(id)) => {
            let other = from.other();
            (
                format!("answered the {}'s request {id} with error {}", other.name(), deny.code),
                Some(other),
            )
        }
        _ => ("dropped".to_owned(), None),
    };
    let category = deny
        .data
        .as_ref()
        .and_then(|data| data.get("category"))
        .and_then(serde_json::Value::as_str);
    log::refusal(&log::Refusal {
        side: from.name(),
        line: n,
        id,
        method: about.method,
        identity: about.identity,
        tool: about.tool,
        code: deny.code,
        rule: deny.rule.as_deref(),
        category,
        reason: &deny.reason,
        outcome: &outcome,
    });
    match to {
        Some(to) => reply(gate, to, id, deny),
        None => Ok(()),
    }
}

/// What a refused line was, as far as it could be read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// Has a method and an id: its sender waits for an answer.
    Request,
    /// Has an id and no method: the other side waits for it.
    Response,
    /// A response whose request was already closed when it was read: the other side waits.
    ClosedResponse,
    /// A notification, or a line too broken to tell.
    Other,
}

fn shape(has_method: bool, has_id: bool) -> Shape {
    match (has_method, has_id) {
        (true, true) => Shape::Request,
        (false, true) => Shape::Response,
        _ => Shape::Other,
    }
}

/// Keeps a refused line from the other side and makes sure nobody waits for it: a request is
/// answered with an error; a response becomes an error for the request it answered; a line from
/// the client that could not even be read as a message gets an error with id `null`, as
/// JSON-RPC prescribes (`answer_null`); everything else is dropped. One log line says which.
fn refuse(gate: &Gate, line: Line, refusal: Refusal<'_>) -> Result<(), ClientGone> {
    let Line { from, n } = line;
    let Refusal { shape, id, code, reason, answer_null } = refusal;
    let who = from.name();
    match (shape, id) {
        (Shape::Request, Some(id)) => {
            warn!("{who} line {n}: {reason}; answered request {id} with error {code}");
            reply(gate, from, Some(id), &Deny::new(code, reason))
        }
        (Shape::Response | Shape::ClosedResponse, Some(id)) => {
            if !matches!(gate.close_request(from.other(), id), Closed::Open(_)) {
                warn!("{who} line {n}: {reason}; dropped (a response to no open request)");
                return Ok(());
            }
            warn!(
                "{who} line {n}: {reason}; answered the {}'s request {id} with error {code}",
                from.other().name()
            );
            let reason = format!("the {who}'s response was refused: {reason}");
            reply(gate, from.other(), Some(id), &Deny::new(code, reason))
        }
        _ if from == Side::Client && answer_null => {
            warn!("{who} line {n}: {reason}; answered with error {code} (id null)");
            reply(gate, from, None, &Deny::new(code, reason))
        }
        _ => {
            warn!("{who} line {n}: {reason}; dropped");
            Ok(())
        }
    }
}

/// Sends a JSON-RPC error to `to`. Only a failure to reach the client matters to the caller.
fn reply(gate: &Gate, to: Side, id: Option<&str>, deny: &Deny) -> Result<(), ClientGone> {
    let line = chain::deny_line(id, deny);
    let res = match to {
        Side::Client => gate.send(to, &line),
        Side::Upstream => gate.send_upstream_later(line),
    };
    match res {
        Ok(()) => Ok(()),
        Err(_) if to == Side::Client => Err(ClientGone),
        Err(err) => {
            debug!("error reply not delivered to the upstream: {err}");
            Ok(())
        }
    }
}
