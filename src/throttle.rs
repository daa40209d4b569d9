//! Throttle: token buckets and budgets, counted per identity and per tool.
//!
//! Four kinds of token bucket (global, per identity, per tool, per identity and tool) bound how
//! fast calls may come; budgets bound how many calls an identity makes in a fixed window, with a
//! cost per tool. [`Throttle::check`] charges a call against every counter that applies to it, or
//! against none of them: a refused call costs nothing.
//!
//! This module keeps counters and does arithmetic, nothing more. It does not read the config
//! (the caller builds [`Limits`] and [`Budget`]s), does not decide which budgets apply to an
//! identity or a tool (the caller's policy matchers do, and pass only those), and does not word
//! the JSON-RPC error (the chain does, from [`Exceeded`]). It reads the clock in one place,
//! [`Throttle::check`]; all the math takes `now`, so the tests are exact and never sleep.
//!
//! # Representation
//!
//! A bucket is stored as its *debt*: how long, in nanoseconds, it needs to refill completely,
//! as of an instant. A full bucket has no debt; taking a token adds one interval
//! (`1 / per_second`); time pays the debt back. A call is allowed when the debt plus one interval
//! fits in the bucket's span (`burst` intervals). This is the token bucket in integer
//! nanoseconds (the "generic cell rate algorithm"): no float accumulates error across calls, and
//! a bucket that is full again holds no information at all, which makes eviction exact.
//!
//! # Untrusted input
//!
//! Tool names come from the client, so an attacker can send a new one with every call. Each map
//! tracks at most [`MAX_KEYS`] keys, and tool names are keyed by at most [`MAX_TOOL_KEY`] bytes,
//! which bounds the memory to a few megabytes. When a map is full and a new key arrives, full
//! buckets and expired windows are dropped first; that changes no outcome, since a new bucket
//! starts full. Only when every tracked key is still counting are the ones closest to full
//! dropped (an eighth of the map at once, so the scan is amortised). That forgives those keys
//! their small remaining debt, which is the cheaper failure: refusing new keys instead would let
//! one client lock every other client out of tools it has never called. The global and
//! per-identity buckets are not keyed by anything the client chooses, so cycling tool names
//! never escapes them.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::chain::{Ctx, Deny, RATE_LIMITED};
use crate::frame::Kind;
use crate::gate::{Gate, Side};

/// A token bucket's shape: it refills continuously at `per_second` tokens a second, holds at most
/// `burst` tokens, and starts full. One call takes one token.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: f64,
}

impl Rate {
    /// Whether this rate means what it says: both numbers finite, `per_second > 0`, and
    /// `burst >= 1` (a smaller bucket never holds a whole token). The config loader should
    /// refuse anything else. The throttle fails closed on an invalid rate: a `per_second` that
    /// is not positive refills one token a year, and a `burst` below 1 admits nothing.
    pub fn is_valid(self) -> bool {
        self.per_second.is_finite()
            && self.per_second > 0.0
            && self.burst.is_finite()
            && self.burst >= 1.0
    }
}

/// Which token buckets are on. `Limits::default()` has none (transparent, as with no config);
/// [`Limits::defaults`] is what `--enable-rate-limit` turns on.
#[derive(Clone, Debug, Default)]
pub struct Limits {
    pub global: Option<Rate>,
    pub per_identity: Option<Rate>,
    pub per_tool: Option<Rate>,
    pub per_identity_tool: Option<Rate>,
}

impl Limits {
    /// Limits that no normal agent hits, so turning them on never breaks a working setup.
    ///
    /// An agent driven by a model makes a tool call per model turn, a few a second at most, and
    /// fans out perhaps a few dozen calls at once when it runs tools in parallel. A runaway
    /// agent (a loop in a script, a retry storm, a compromised client) makes thousands a second.
    /// The limits sit between the two with an order of magnitude to spare on the normal side:
    ///
    /// - per identity and tool, 50/s with a burst of 100: one agent hammering one tool, the
    ///   usual runaway loop, is stopped here first;
    /// - per tool, 100/s with a burst of 200: several agents sharing a server still fit, while
    ///   one tool cannot take the whole server;
    /// - per identity, 200/s with a burst of 400: counts every request, including
    ///   `resources/read` and the `*/list` calls a host makes at start-up;
    /// - global, 500/s with a burst of 1000: the ceiling for the upstream server, which is
    ///   usually far slower than the gateway (mcpdome relays a message in microseconds).
    ///
    /// Each burst is two seconds of refill, so a host that opens a session with a flurry of
    /// requests is never refused.
    pub fn defaults() -> Limits {
        Limits {
            global: Some(Rate { per_second: 500.0, burst: 1000.0 }),
            per_identity: Some(Rate { per_second: 200.0, burst: 400.0 }),
            per_tool: Some(Rate { per_second: 100.0, burst: 200.0 }),
            per_identity_tool: Some(Rate { per_second: 50.0, burst: 100.0 }),
        }
    }
}

/// At most `max` units of cost per identity in a fixed window that starts at the identity's
/// first counted call. The caller decides which identities and tools a budget applies to.
#[derive(Clone, Debug)]
pub struct Budget {
    /// Shown in refusals, so a denied caller knows which budget it spent.
    pub name: String,
    pub max: u64,
    pub window: Duration,
    /// Tool name → cost of one call; tools not listed cost 1, and a call that is not a tool
    /// call costs 1. A cost of 0 makes a tool free under this budget.
    pub cost: Vec<(String, u64)>,
}

impl Budget {
    /// What one call to `tool` costs under this budget.
    pub fn cost_of(&self, tool: Option<&str>) -> u64 {
        let Some(tool) = tool else { return 1 };
        self.cost.iter().find(|(name, _)| name == tool).map_or(1, |&(_, cost)| cost)
    }
}

/// The rate-limit and budget counters. One per gateway, shared by reference.
///
/// All the state sits behind one std `Mutex`. Only [`Throttle::check_at`] touches it: it locks
/// once per message, decides, charges, and unlocks, a few map operations in all, never across a
/// read or a write to a peer. One lock rather than one per map because a call must be charged
/// against every counter or none, and the decision has to see them all at once.
pub struct Throttle {
    state: Mutex<State>,
    max_keys: usize,
}

/// Which limit refused a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Limited {
    Global,
    Identity,
    Tool,
    IdentityTool,
    /// The budget with this name.
    Budget(String),
}

impl Limited {
    /// A stable one-word name, for the ledger and the error's `data`.
    pub fn kind(&self) -> &'static str {
        match self {
            Limited::Global => "global",
            Limited::Identity => "identity",
            Limited::Tool => "tool",
            Limited::IdentityTool => "identity_tool",
            Limited::Budget(_) => "budget",
        }
    }
}

impl fmt::Display for Limited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limited::Global => f.write_str("the global rate limit"),
            Limited::Identity => f.write_str("the rate limit for this identity"),
            Limited::Tool => f.write_str("the rate limit for this tool"),
            Limited::IdentityTool => f.write_str("the rate limit for this identity and tool"),
            Limited::Budget(name) => write!(f, "the budget `{name}`"),
        }
    }
}

/// A refused call: which limit refused it, and how long until the same call would be allowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exceeded {
    pub limit: Limited,
    /// Always a whole, non-zero number of milliseconds, rounded up.
    pub retry_after: Duration,
}

impl Exceeded {
    /// `retry_after` in milliseconds, for `data.retry_after_ms`.
    pub fn retry_after_ms(&self) -> u64 {
        u64::try_from(self.retry_after.as_millis()).unwrap_or(u64::MAX)
    }
}

impl fmt::Display for Exceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} is exceeded; retry after {} ms", self.limit, self.retry_after_ms())
    }
}

/// How many keys each map tracks: identities, tools, (identity, tool) pairs, and budget windows.
/// An entry costs about 100 bytes plus its key, so a full map of the longest tool names is about
/// 4 MB; identities and budget windows are few in practice (identities come from the config), so
/// all four maps stay around 10 MB at worst.
pub const MAX_KEYS: usize = 10_000;

/// Tool names are keyed by at most this many bytes (cut at a character boundary). MCP asks for
/// names of at most 128 characters; a longer name is no real tool, and names sharing a long
/// prefix sharing a bucket only makes their limit stricter.
pub const MAX_TOOL_KEY: usize = 256;

impl Default for Throttle {
    fn default() -> Throttle {
        Throttle::new()
    }
}

impl fmt::Debug for Throttle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Throttle").field("max_keys", &self.max_keys).finish_non_exhaustive()
    }
}

impl Throttle {
    pub fn new() -> Throttle {
        Throttle::with_max_keys(MAX_KEYS)
    }

    /// Takes one token from every applicable bucket, or none at all if any is empty (no partial
    /// charge), and charges every budget in `budgets` the call's cost, again all or nothing.
    ///
    /// `tool` is `None` for requests that are not `tools/call`; then only the global and
    /// per-identity buckets apply (and budgets, at cost 1). `budgets` pairs each applicable
    /// budget with its index in the config, which keys its windows.
    ///
    /// When several limits refuse, the one with the longest wait is reported, so retrying after
    /// `retry_after` gets past all the buckets.
    pub fn check(
        &self,
        limits: &Limits,
        budgets: &[(usize, &Budget)],
        identity: &str,
        tool: Option<&str>,
    ) -> Result<(), Exceeded> {
        self.check_at(limits, budgets, identity, tool, Instant::now())
    }

    /// [`Throttle::check`] at a given instant. Instants earlier than one already seen refill
    /// nothing, rather than panicking or refilling twice.
    pub fn check_at(
        &self,
        limits: &Limits,
        budgets: &[(usize, &Budget)],
        identity: &str,
        tool: Option<&str>,
        now: Instant,
    ) -> Result<(), Exceeded> {
        let tool_name = tool;
        let tool = tool.map(tool_key);
        let global = limits.global.map(Pace::new);
        let per_identity = limits.per_identity.map(Pace::new);
        let per_tool = tool.and(limits.per_tool).map(Pace::new);
        let per_pair = tool.and(limits.per_identity_tool).map(Pace::new);
        if global.is_none()
            && per_identity.is_none()
            && per_tool.is_none()
            && per_pair.is_none()
            && budgets.is_empty()
        {
            return Ok(());
        }
        let pair = per_pair.and(tool).map(|tool| (identity.to_owned(), tool.to_owned()));

        let mut state = lock(&self.state);
        let state = &mut *state;

        // The identity's and the tool's buckets are looked up once, for the decision and the
        // charge both.
        let mut identity_bucket = match per_identity {
            Some(_) => state.identities.get_mut(identity),
            None => None,
        };
        let mut tool_bucket = match (per_tool, tool) {
            (Some(_), Some(tool)) => state.tools.get_mut(tool),
            _ => None,
        };

        // First decide, changing nothing, so that a refused call charges no counter.
        let mut worst = None;
        if let Some(pace) = global {
            note(&mut worst, pace.wait(debt(state.global.as_ref(), now)), || Limited::Global);
        }
        if let Some(pace) = per_identity {
            let wait = pace.wait(debt(identity_bucket.as_deref(), now));
            note(&mut worst, wait, || Limited::Identity);
        }
        if let (Some(pace), Some(_)) = (per_tool, tool) {
            note(&mut worst, pace.wait(debt(tool_bucket.as_deref(), now)), || Limited::Tool);
        }
        if let (Some(pace), Some(pair)) = (per_pair, &pair) {
            let wait = pace.wait(debt(state.pairs.get(pair), now));
            note(&mut worst, wait, || Limited::IdentityTool);
        }
        for &(index, budget) in budgets {
            let cost = budget.cost_of(tool_name);
            if cost == 0 {
                continue;
            }
            let window = state.windows.get(&(index, identity.to_owned()));
            let wait = budget_wait(window, budget, cost, now);
            note(&mut worst, wait, || Limited::Budget(budget.name.clone()));
        }
        if let Some((wait, limit)) = worst {
            return Err(Exceeded { limit, retry_after: round_up_to_ms(wait) });
        }

        // Then charge everything.
        if let Some(pace) = global {
            state.global.get_or_insert(Bucket::full(now)).charge(pace, now);
        }
        if let Some(pace) = per_identity {
            match identity_bucket.take() {
                Some(bucket) => bucket.charge(pace, now),
                None => charge(&mut state.identities, identity, pace, now, self.max_keys),
            }
        }
        if let (Some(pace), Some(tool)) = (per_tool, tool) {
            match tool_bucket.take() {
                Some(bucket) => bucket.charge(pace, now),
                None => charge(&mut state.tools, tool, pace, now, self.max_keys),
            }
        }
        if let (Some(pace), Some(pair)) = (per_pair, &pair) {
            charge(&mut state.pairs, pair, pace, now, self.max_keys);
        }
        for &(index, budget) in budgets {
            let cost = budget.cost_of(tool_name);
            if cost == 0 {
                continue;
            }
            let length = nanos(budget.window);
            let key = (index, identity.to_owned());
            match state.windows.get_mut(&key) {
                Some(window) if window.is_live(length, now) => {
                    window.used = window.used.saturating_add(cost);
                    window.length = length;
                }
                Some(window) => *window = Window { start: now, length, used: cost },
                None => {
                    make_room(&mut state.windows, self.max_keys, |window| window.weight(now));
                    state.windows.insert(key, Window { start: now, length, used: cost });
                }
            }
        }
        Ok(())
    }

    fn with_max_keys(max_keys: usize) -> Throttle {
        Throttle { state: Mutex::new(State::default()), max_keys: max_keys.max(1) }
    }
}

/// The chain's entry point: charges a client request against the rate limits and budgets.
/// Global and per-identity limits count every request; per-tool limits and budgets count
/// `tools/call` only.
pub fn check(gate: &Gate, ctx: &mut Ctx<'_>) -> Result<(), Deny> {
    if ctx.from != Side::Client || ctx.msg.kind != Kind::Request {
        return Ok(());
    }
    let settings = ctx.settings;
    let limits = &settings.limits;
    let no_limits = limits.global.is_none()
        && limits.per_identity.is_none()
        && limits.per_tool.is_none()
        && limits.per_identity_tool.is_none();
    if no_limits && settings.budgets.is_empty() {
        return Ok(());
    }
    let action = if ctx.msg.method() == "tools/call" { Some(ctx.action()?) } else { None };
    let tool = action.as_ref().and_then(|action| action.name.as_deref());
    let identity = gate.identity_or_anonymous(ctx.identity.as_deref());
    let budgets: Vec<(usize, &Budget)> = match tool {
        None => Vec::new(),
        Some(tool) => settings
            .budgets
            .iter()
            .enumerate()
            .filter(|(_, rule)| rule.identities.matches(identity) && rule.tools.matches(tool))
            .map(|(idx, rule)| (idx, &rule.budget))
            .collect(),
    };
    gate.throttle.check(limits, &budgets, &identity.principal, tool).map_err(|exceeded| {
        let retry_after_ms = exceeded.retry_after_ms();
        Deny {
            code: RATE_LIMITED,
            reason: exceeded.to_string(),
            rule: Some(match &exceeded.limit {
                Limited::Budget(name) => name.clone(),
                other => other.kind().to_owned(),
            }),
            data: Some(serde_json::json!({ "retry_after_ms": retry_after_ms })),
        }
    })
}

/// Parses a budget window: a positive whole number and one unit, `s`, `m`, `h` or `d`
/// (`"30s"`, `"15m"`, `"1h"`, `"1d"`). Nothing else: no spaces, signs, fractions, other units,
/// combinations like `1h30m`, or zero.
pub fn parse_window(text: &str) -> Option<Duration> {
    let unit = text.chars().next_back()?;
    let digits = &text[..text.len() - unit.len_utf8()];
    let unit_secs = match unit {
        's' => 1,
        'm' => 60,
        'h' => 60 * 60,
        'd' => 24 * 60 * 60,
        _ => return None,
    };
    // `u64::from_str` alone would also take a leading `+`.
    if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let count: u64 = digits.parse().ok()?;
    if count == 0 {
        return None;
    }
    Some(Duration::from_secs(count.checked_mul(unit_secs)?))
}

#[derive(Default)]
struct State {
    /// `None` until the first call: a bucket starts full.
    global: Option<Bucket>,
    identities: HashMap<String, Bucket>,
    tools: HashMap<String, Bucket>,
    pairs: HashMap<(String, String), Bucket>,
    /// Keyed by (budget index in the config, identity).
    windows: HashMap<(usize, String), Window>,
}

/// A token bucket: `debt` nanoseconds until it is full again, as of `at`.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    debt: u64,
    at: Instant,
}

impl Bucket {
    fn full(now: Instant) -> Bucket {
        Bucket { debt: 0, at: now }
    }

    fn debt_at(&self, now: Instant) -> u64 {
        self.debt.saturating_sub(nanos(now.saturating_duration_since(self.at)))
    }

    fn charge(&mut self, pace: Pace, now: Instant) {
        self.debt = self.debt_at(now).saturating_add(pace.interval);
        self.at = self.at.max(now);
    }
}

/// A [`Rate`] in integer nanoseconds.
#[derive(Clone, Copy, Debug)]
struct Pace {
    /// Time to refill one token.
    interval: u64,
    /// Time to refill a whole burst from empty: the most debt a bucket may hold.
    span: u64,
}

/// Refilling one token a year is as slow as a rate gets; slower rates are clamped to it. This
/// and the span bound keep every sum of nanoseconds below `u64::MAX`.
const MAX_INTERVAL: u64 = 365 * 24 * 60 * 60 * NANOS_PER_SECOND;
const MAX_SPAN: u64 = 1 << 62;
const NANOS_PER_SECOND: u64 = 1_000_000_000;
const NANOS_PER_MILLI: u64 = 1_000_000;

impl Pace {
    fn new(rate: Rate) -> Pace {
        // `as` saturates, and turns NaN into 0. A NaN `per_second` takes the `else` branch.
        let interval = if rate.per_second > 0.0 {
            ((NANOS_PER_SECOND as f64 / rate.per_second).round() as u64).clamp(1, MAX_INTERVAL)
        } else {
            MAX_INTERVAL
        };
        // Computed from the rounded interval, so a whole burst is exactly `burst` intervals.
        let span = ((rate.burst * interval as f64).round() as u64).min(MAX_SPAN);
        Pace { interval, span }
    }

    /// Nanoseconds until a bucket with `debt` can give one token; 0 if it can now.
    fn wait(self, debt: u64) -> u64 {
        debt.saturating_add(self.interval).saturating_sub(self.span)
    }
}

/// A budget's window for one identity.
#[derive(Clone, Copy, Debug)]
struct Window {
    start: Instant,
    /// The budget's window in nanoseconds when last charged; eviction needs it without the
    /// budget at hand.
    length: u64,
    used: u64,
}

impl Window {
    fn is_live(&self, length: u64, now: Instant) -> bool {
        nanos(now.saturating_duration_since(self.start)) < length
    }

    /// What dropping this window would forgive: nothing once it has expired.
    fn weight(&self, now: Instant) -> u64 {
        if self.is_live(self.length, now) {
            self.used
        } else {
            0
        }
    }
}

fn debt(bucket: Option<&Bucket>, now: Instant) -> u64 {
    bucket.map_or(0, |bucket| bucket.debt_at(now))
}

/// Nanoseconds until `budget` can take `cost` more for the identity whose window is `window`;
/// 0 if it can now. A call that costs more than the whole budget waits a full window, which is
/// the most honest answer there is for a call that can never pass.
fn budget_wait(window: Option<&Window>, budget: &Budget, cost: u64, now: Instant) -> u64 {
    let length = nanos(budget.window);
    let (used, left) = match window {
        Some(window) if window.is_live(length, now) => {
            (window.used, length - nanos(now.saturating_duration_since(window.start)))
        }
        _ => (0, length),
    };
    match used.checked_add(cost) {
        Some(total) if total <= budget.max => 0,
        // A zero-length window still refuses: a wait of 0 would read as "allowed".
        _ => left.max(1),
    }
}

/// Keeps the refusal with the longest wait; on a tie, the first one found.
fn note(worst: &mut Option<(u64, Limited)>, wait: u64, limit: impl FnOnce() -> Limited) {
    if wait > 0 && worst.as_ref().is_none_or(|&(longest, _)| wait > longest) {
        *worst = Some((wait, limit()));
    }
}

fn charge<K, Q>(map: &mut HashMap<K, Bucket>, key: &Q, pace: Pace, now: Instant, max_keys: usize)
where
    K: Borrow<Q> + Hash + Eq,
    Q: ToOwned<Owned = K> + Hash + Eq + ?Sized,
{
    if let Some(bucket) = map.get_mut(key) {
        bucket.charge(pace, now);
        return;
    }
    make_room(map, max_keys, |bucket| bucket.debt_at(now));
    let mut bucket = Bucket::full(now);
    bucket.charge(pace, now);
    map.insert(key.to_owned(), bucket);
}

/// Makes room for one more key when `map` holds `max_keys`: drops every entry of weight 0 (a
/// full bucket, an expired window), and if that frees nothing, the lightest eighth of the map.
fn make_room<K, V>(map: &mut HashMap<K, V>, max_keys: usize, weight: impl Fn(&V) -> u64) {
    if map.len() < max_keys {
        return;
    }
    map.retain(|_, value| weight(value) > 0);
    if map.len() < max_keys {
        return;
    }
    let keep = max_keys - (max_keys / 8).max(1);
    let excess = map.len() - keep;
    let mut weights: Vec<u64> = map.values().map(&weight).collect();
    let (_, &mut threshold, _) = weights.select_nth_unstable(excess - 1);
    let lighter = weights.iter().filter(|&&w| w < threshold).count();
    let mut ties = excess - lighter;
    map.retain(|_, value| {
        let w = weight(value);
        if w < threshold {
            false
        } else if w == threshold && ties > 0 {
            ties -= 1;
            false
        } else {
            true
        }
    });
}

fn tool_key(tool: &str) -> &str {
    if tool.len() <= MAX_TOOL_KEY {
        return tool;
    }
    let mut end = MAX_TOOL_KEY;
    while !tool.is_char_boundary(end) {
        end -= 1;
    }
    &tool[..end]
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

fn round_up_to_ms(wait: u64) -> Duration {
    Duration::from_millis(wait.div_ceil(NANOS_PER_MILLI))
}

/// A poisoned lock means a thread panicked, and a panic aborts the process (`panic = "abort"`),
/// so poisoning is only possible in tests; the state is still consistent, since nothing in the
/// critical section can panic between the decision and the last charge.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(per_second: f64, burst: f64) -> Rate {
        Rate { per_second, burst }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn budget(name: &str, max: u64, window: Duration, cost: &[(&str, u64)]) -> Budget {
        let cost = cost.iter().map(|&(tool, cost)| (tool.to_owned(), cost)).collect();
        Budget { name: name.to_owned(), max, window, cost }
    }

    /// One throttle, one set of limits, and budgets that apply to every call; times are offsets
    /// from `t0`.
    struct Run {
        throttle: Throttle,
        limits: Limits,
        budgets: Vec<Budget>,
        t0: Instant,
    }

    impl Run {
        fn new(limits: Limits) -> Run {
            Run { throttle: Throttle::new(), limits, budgets: Vec::new(), t0: Instant::now() }
        }

        fn call(&self, at: Duration, identity: &str, tool: Option<&str>) -> Result<(), Exceeded> {
            let budgets: Vec<(usize, &Budget)> = self.budgets.iter().enumerate().collect();
            self.throttle.check_at(&self.limits, &budgets, identity, tool, self.t0 + at)
        }

        #[track_caller]
        fn ok(&self, at: Duration, identity: &str, tool: Option<&str>) {
            if let Err(exceeded) = self.call(at, identity, tool) {
                panic!("refused at {at:?}: {exceeded}");
            }
        }

        #[track_caller]
        fn refused(
            &self,
            at: Duration,
            identity: &str,
            tool: Option<&str>,
            limit: Limited,
            retry_ms: u64,
        ) {
            let expected = Exceeded { limit, retry_after: ms(retry_ms) };
            assert_eq!(self.call(at, identity, tool), Err(expected));
        }

        fn tool_keys(&self) -> Vec<String> {
            let mut keys: Vec<String> = lock(&self.throttle.state).tools.keys().cloned().collect();
            keys.sort();
            keys
        }
    }

    #[test]
    fn burst_then_refusal_then_refill() {
        let run = Run::new(Limits { global: Some(rate(10.0, 3.0)), ..Limits::default() });
        for _ in 0..3 {
            run.ok(ms(0), "a", None);
        }
        run.refused(ms(0), "a", None, Limited::Global, 100);
        run.refused(ms(60), "a", None, Limited::Global, 40);
        // One nanosecond short of a whole token: still refused, and told to wait 1 ms.
        run.refused(ms(100) - Duration::from_nanos(1), "a", None, Limited::Global, 1);
        run.ok(ms(100), "a", None);
        run.refused(ms(100), "a", None, Limited::Global, 100);
        // Two and a half tokens back: two calls pass, the third waits for the half.
        run.ok(ms(350), "a", None);
        run.ok(ms(350), "a", None);
        run.refused(ms(350), "a", None, Limited::Global, 50);
        // Idle for long: the bucket holds `burst` tokens, not more.
        for _ in 0..3 {
            run.ok(ms(10_000), "a", None);
        }
        run.refused(ms(10_000), "a", None, Limited::Global, 100);
    }

    #[test]
    fn retry_after_rounds_up_to_whole_ms() {
        // 3/s: a token every 333.333333 ms, reported as 334 ms.
        let run = Run::new(Limits { per_identity: Some(rate(3.0, 1.0)), ..Limits::default() });
        run.ok(ms(0), "a", None);
        run.refused(ms(0), "a", None, Limited::Identity, 334);
        run.refused(ms(333), "a", None, Limited::Identity, 1);
        run.ok(Duration::from_nanos(333_333_333), "a", None);

        // A fractional burst holds a fraction of a token after the whole ones are gone.
        let run = Run::new(Limits { global: Some(rate(1.0, 1.5)), ..Limits::default() });
        run.ok(ms(0), "a", None);
        run.refused(ms(0), "a", None, Limited::Global, 500);
        run.ok(ms(500), "a", None);
        run.refused(ms(500), "a", None, Limited::Global, 1000);
    }

    #[test]
    fn buckets_are_keyed_by_identity_tool_and_pair() {
        let run = Run::new(Limits {
            per_identity: Some(rate(1.0, 3.0)),
            per_tool: Some(rate(1.0, 2.0)),
            per_identity_tool: Some(rate(1.0, 1.0)),
            ..Limits::default()
        });
        run.ok(ms(0), "alice", Some("read"));
        run.refused(ms(0), "alice", Some("read"), Limited::IdentityTool, 1000);
        run.ok(ms(0), "bob", Some("read"));
        // The tool's bucket is shared by everyone; with every bucket empty the longest wait is
        // reported, and on a tie the first bucket checked.
        run.refused(ms(0), "carol", Some("read"), Limited::Tool, 1000);
        run.ok(ms(0), "alice", Some("write"));
        run.ok(ms(0), "alice", Some("list"));
        run.refused(ms(0), "alice", Some("grep"), Limited::Identity, 1000);
        // Not a tool call: only the global and per-identity buckets apply.
        run.ok(ms(0), "carol", None);
        run.refused(ms(0), "alice", None, Limited::Identity, 1000);
    }

    #[test]
    fn the_longest_wait_is_reported() {
        let run = Run::new(Limits {
            global: Some(rate(1.0, 1.0)),
            per_tool: Some(rate(10.0, 1.0)),
            ..Limits::default()
        });
        run.ok(ms(0), "a", Some("t"));
        run.refused(ms(0), "a", Some("t"), Limited::Global, 1000);
        run.refused(ms(950), "a", Some("t"), Limited::Global, 50);
    }

    #[test]
    fn a_refused_call_charges_no_bucket() {
        let run = Run::new(Limits {
            global: Some(rate(1.0, 5.0)),
            per_tool: Some(rate(1.0, 1.0)),
            ..Limits::default()
        });
        run.ok(ms(0), "a", Some("t"));
        // The tool bucket refuses after the global one would have given a token: the global
        // bucket must still hold its four.
        for _ in 0..3 {
            run.refused(ms(0), "a", Some("t"), Limited::Tool, 1000);
        }
        for tool in ["b", "c", "d", "e"] {
            run.ok(ms(0), "a", Some(tool));
        }
        run.refused(ms(0), "a", Some("f"), Limited::Global, 1000);
        // Neither did that refusal create a bucket for `f`.
        assert_eq!(run.tool_keys(), ["b", "c", "d", "e", "t"]);
    }

    #[test]
    fn budgets_and_buckets_charge_together_or_not_at_all() {
        let mut run = Run::new(Limits { per_tool: Some(rate(1.0, 1.0)), ..Limits::default() });
        run.budgets.push(budget("daily", 2, Duration::from_secs(86_400), &[]));
        run.ok(ms(0), "a", Some("t"));
        // The bucket refuses: the budget is not charged.
        run.refused(ms(0), "a", Some("t"), Limited::Tool, 1000);
        run.ok(ms(0), "a", Some("u"));
        // The budget refuses: the bucket for `v` is not charged (nor created).
        run.refused(ms(0), "a", Some("v"), Limited::Budget("daily".to_owned()), 86_400_000);
        assert_eq!(run.tool_keys(), ["t", "u"]);
    }

    #[test]
    fn budgets_with_costs() {
        let mut run = Run::new(Limits::default());
        let hour = Duration::from_secs(3600);
        run.budgets.push(budget("hourly", 10, hour, &[("search", 4), ("ping", 0)]));
        let hourly = || Limited::Budget("hourly".to_owned());
        run.ok(ms(0), "a", Some("search"));
        run.ok(ms(0), "a", Some("search"));
        // 8 used: a search (4) no longer fits, a read (1) does.
        run.refused(ms(0), "a", Some("search"), hourly(), 3_600_000);
        run.ok(ms(0), "a", Some("read"));
        // A request that is not a tool call costs 1.
        run.ok(ms(0), "a", None);
        run.refused(Duration::from_secs(600), "a", Some("read"), hourly(), 3_000_000);
        // A free tool passes however spent the budget is.
        run.ok(Duration::from_secs(600), "a", Some("ping"));
        // Another identity has its own window.
        run.ok(Duration::from_secs(600), "b", Some("search"));
        // The window resets exactly an hour after its first call.
        run.refused(hour - Duration::from_nanos(1), "a", None, hourly(), 1);
        for _ in 0..10 {
            run.ok(hour, "a", None);
        }
        run.refused(hour, "a", None, hourly(), 3_600_000);
        // `b`'s window started at 600 s, so it ends at 4200 s.
        run.ok(hour, "b", Some("search"));
        run.refused(hour, "b", Some("search"), hourly(), 600_000);
    }

    #[test]
    fn a_window_starts_at_the_first_counted_call() {
        let mut run = Run::new(Limits::default());
        let minute = Duration::from_secs(60);
        run.budgets.push(budget("tiny", 2, minute, &[("huge", 3), ("free", 0)]));
        let tiny = || Limited::Budget("tiny".to_owned());
        // A call that costs more than the whole budget never passes; it waits a full window and
        // starts none. Free calls start none either.
        run.refused(ms(0), "a", Some("huge"), tiny(), 60_000);
        run.ok(ms(1000), "a", Some("free"));
        assert!(lock(&run.throttle.state).windows.is_empty());
        run.ok(ms(5000), "a", None);
        run.ok(ms(5000), "a", None);
        run.refused(ms(5000), "a", None, tiny(), 60_000);
        run.refused(ms(64_999), "a", None, tiny(), 1);
        run.ok(ms(65_000), "a", None);
    }

    #[test]
    fn budgets_are_counted_per_index_and_identity() {
        let throttle = Throttle::new();
        let t0 = Instant::now();
        let first = budget("first", 1, Duration::from_secs(60), &[]);
        let second = budget("second", 1, Duration::from_secs(60), &[]);
        let limits = Limits::default();
        let check = |budgets: &[(usize, &Budget)], identity: &str| {
            throttle.check_at(&limits, budgets, identity, Some("t"), t0)
        };
        assert_eq!(check(&[(0, &first)], "a"), Ok(()));
        assert_eq!(check(&[(1, &second)], "a"), Ok(()));
        assert_eq!(check(&[(0, &first)], "b"), Ok(()));
        let refused = check(&[(0, &first)], "a").unwrap_err();
        assert_eq!(refused.limit, Limited::Budget("first".to_owned()));
        // For `b`, `second` would allow the call and `first` refuses it: `second` is not charged.
        let refused = check(&[(1, &second), (0, &first)], "b").unwrap_err();
        assert_eq!(refused.limit, Limited::Budget("first".to_owned()));
        assert_eq!(check(&[(1, &second)], "b"), Ok(()));
        // The window is keyed by the index, not the name: the same budget under another index
        // counts afresh.
        assert_eq!(check(&[(2, &first)], "a"), Ok(()));
    }

    #[test]
    fn eviction_drops_full_buckets_first_then_the_lightest() {
        let mut run = Run::new(Limits { per_tool: Some(rate(1.0, 10.0)), ..Limits::default() });
        run.throttle = Throttle::with_max_keys(4);
        for (tool, calls) in [("a", 4), ("b", 3), ("c", 2), ("d", 1)] {
            for _ in 0..calls {
                run.ok(ms(0), "x", Some(tool));
            }
        }
        // Nothing is full: `d`, the closest to full, makes room for `e`.
        run.ok(ms(0), "x", Some("e"));
        assert_eq!(run.tool_keys(), ["a", "b", "c", "e"]);
        // At 3.5 s only `a` still has debt; the three full buckets go, and nothing else.
        run.ok(ms(3500), "x", Some("f"));
        assert_eq!(run.tool_keys(), ["a", "f"]);
        // `a` kept its debt through all this: 10 tokens, 4 taken, 3.5 back, so 9.5 left.
        for _ in 0..9 {
            run.ok(ms(3500), "x", Some("a"));
        }
        run.refused(ms(3500), "x", Some("a"), Limited::Tool, 500);
    }

    #[test]
    fn cycling_names_cannot_grow_the_maps() {
        let limits = Limits {
            per_tool: Some(rate(1.0, 1.0)),
            per_identity_tool: Some(rate(1.0, 1.0)),
            ..Limits::default()
        };
        let run = Run::new(limits);
        for n in 0..2 * MAX_KEYS {
            run.ok(ms(0), "x", Some(&format!("tool-{n}")));
            let state = lock(&run.throttle.state);
            assert!(state.tools.len() <= MAX_KEYS && state.pairs.len() <= MAX_KEYS, "{n}");
        }
        let state = lock(&run.throttle.state);
        assert!(state.tools.contains_key(&format!("tool-{}", 2 * MAX_KEYS - 1)));

        let mut run = Run::new(Limits::default());
        run.throttle = Throttle::with_max_keys(4);
        run.budgets.push(budget("b", 10, Duration::from_secs(60), &[]));
        for n in 0..20 {
            run.ok(ms(0), &format!("identity-{n}"), None);
            assert!(lock(&run.throttle.state).windows.len() <= 4, "{n}");
        }
    }

    #[test]
    fn long_tool_names_share_a_key() {
        let run = Run::new(Limits { per_tool: Some(rate(1.0, 1.0)), ..Limits::default() });
        // 255 ASCII bytes then a 2-byte character: the cut falls inside it and moves back.
        let prefix = "x".repeat(MAX_TOOL_KEY - 1);
        run.ok(ms(0), "a", Some(&format!("{prefix}éa")));
        run.refused(ms(0), "a", Some(&format!("{prefix}éb")), Limited::Tool, 1000);
        run.refused(ms(0), "a", Some(&prefix), Limited::Tool, 1000);
        assert_eq!(run.tool_keys(), [prefix]);
    }

    #[test]
    fn the_clock_going_backwards_refills_nothing() {
        let run = Run::new(Limits { global: Some(rate(1.0, 1.0)), ..Limits::default() });
        run.ok(ms(5000), "a", None);
        run.refused(ms(0), "a", None, Limited::Global, 1000);
        run.refused(ms(5500), "a", None, Limited::Global, 500);
        run.ok(ms(6000), "a", None);
    }

    #[test]
    fn rates() {
        for rate in [Limits::defaults().global, Limits::defaults().per_identity_tool] {
            assert!(rate.unwrap().is_valid());
        }
        assert!(rate(0.5, 1.0).is_valid());
        for bad in [rate(0.0, 1.0), rate(-1.0, 1.0), rate(f64::NAN, 1.0), rate(f64::INFINITY, 1.0)]
        {
            assert!(!bad.is_valid(), "{bad:?}");
        }
        for bad in [rate(1.0, 0.5), rate(1.0, f64::NAN), rate(1.0, f64::INFINITY)] {
            assert!(!bad.is_valid(), "{bad:?}");
        }
        // Invalid rates fail closed, and nothing overflows or panics.
        let run = Run::new(Limits { global: Some(rate(0.0, 1.0)), ..Limits::default() });
        run.ok(ms(0), "a", None);
        run.refused(ms(0), "a", None, Limited::Global, MAX_INTERVAL / NANOS_PER_MILLI);
        let run = Run::new(Limits { global: Some(rate(1.0, f64::NAN)), ..Limits::default() });
        run.refused(ms(0), "a", None, Limited::Global, 1000);
        let run =
            Run::new(Limits { global: Some(rate(f64::MIN_POSITIVE, 1e300)), ..Limits::default() });
        run.ok(ms(0), "a", None);
    }

    #[test]
    fn no_limits_no_lock_no_state() {
        let throttle = Throttle::new();
        let limits = Limits::default();
        for _ in 0..1000 {
            assert_eq!(throttle.check(&limits, &[], "a", Some("t")), Ok(()));
        }
        let state = lock(&throttle.state);
        assert!(state.global.is_none() && state.identities.is_empty() && state.tools.is_empty());
    }

    #[test]
    fn check_reads_the_clock() {
        // Not timed: a burst of two allows two calls whatever the clock says.
        let throttle = Throttle::new();
        let limits = Limits { per_identity: Some(rate(1.0, 2.0)), ..Limits::default() };
        assert_eq!(throttle.check(&limits, &[], "a", None), Ok(()));
        assert_eq!(throttle.check(&limits, &[], "a", None), Ok(()));
    }

    #[test]
    fn messages() {
        let cases = [
            (Limited::Global, "the global rate limit is exceeded; retry after 1 ms", "global"),
            (
                Limited::Identity,
                "the rate limit for this identity is exceeded; retry after 1 ms",
                "identity",
            ),
            (Limited::Tool, "the rate limit for this tool is exceeded; retry after 1 ms", "tool"),
            (
                Limited::IdentityTool,
                "the rate limit for this identity and tool is exceeded; retry after 1 ms",
                "identity_tool",
            ),
            (
                Limited::Budget("ci-hourly".to_owned()),
                "the budget `ci-hourly` is exceeded; retry after 1 ms",
                "budget",
            ),
        ];
        for (limit, message, kind) in cases {
            assert_eq!(limit.kind(), kind);
            let exceeded = Exceeded { limit, retry_after: ms(1) };
            assert_eq!(exceeded.to_string(), message);
            assert_eq!(exceeded.retry_after_ms(), 1);
        }
    }

    #[track_caller]
    fn window(text: &str, secs: Option<u64>) {
        assert_eq!(parse_window(text), secs.map(Duration::from_secs), "{text:?}");
    }

    #[test]
    fn windows() {
        window("30s", Some(30));
        window("15m", Some(900));
        window("1h", Some(3600));
        window("1d", Some(86_400));
        window("007h", Some(25_200));
        window("213503982334601d", Some(213_503_982_334_601 * 86_400));
        for bad in [
            "",
            "s",
            "h",
            "0s",
            "00m",
            "10",
            "1w",
            "1H",
            "1 h",
            " 1h",
            "1h ",
            "+1h",
            "-1h",
            "1.5h",
            "1h30m",
            "é",
            "1é",
            "213503982334602d",
            "18446744073709551616s",
        ] {
            window(bad, None);
        }
    }

    #[test]
    fn throttle_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Throttle>();
    }
}
