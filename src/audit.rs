//! `mcpdome audit`: a ledger read by a person, or by a machine with `--json`.
//!
//! The chain is verified while the file is read, line by line with [`ledger::Verifier`], and the
//! first line of the output says whether it held: `chain intact (N lines, head …)` or the first
//! bad line. Then the decisions in the time range are summarised, denials first: grouped by
//! identity, tool and rule, with the last reason given; then counts per identity, per tool (or
//! method, for messages that name no tool) and per rule. `--follow` goes on reading lines as they
//! are appended (every 200 ms), verifying each, and prints one line per event until it is killed.
//!
//! This module reads the ledger and nothing else. It does not need the configuration, and it
//! does not judge: a tampered chain is reported, and the lines are still summarised (marked as
//! not verified), because the person reading wants to see what the file claims.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::cli::AuditArgs;
use crate::error::Error;
use crate::ledger::{self, Broken, Verifier};

/// How often `--follow` looks for new lines.
pub const FOLLOW_INTERVAL: Duration = Duration::from_millis(200);

/// Runs `mcpdome audit`. Exit status: 0 when the chain is intact, 1 when a line is bad, 2 when
/// the file cannot be read (as `verify-log`). With `--follow` it returns only when the chain
/// breaks, the file shrinks or stdout is closed.
pub fn run(args: &AuditArgs, out: &mut dyn Write) -> Result<u8, Error> {
    let since = parse_bound(args.since.as_deref(), "--since")?;
    let until = parse_bound(args.until.as_deref(), "--until")?;
    let key = match &args.hmac_key_file {
        Some(path) => Some(ledger::load_key(path)?),
        None => None,
    };
    let name = args.file.display().to_string();
    let mut file = File::open(&args.file)
        .map_err(|err| Error::io(format!("failed to read ledger `{name}`"), err))?;
    let verifier =
        Verifier::new(key.as_deref(), None).map_err(|broken| Error::usage(broken.to_string()))?;
    let mut audit = Audit { verifier, broken: None, summary: Summary::default(), since, until };
    let mut reader = BufReader::new(&mut file);
    let mut line = Vec::new();
    let mut offset = 0u64;
    let tail = loop {
        line.clear();
        reader
            .read_until(b'\n', &mut line)
            .map_err(|err| Error::io(format!("failed to read ledger `{name}`"), err))?;
        if line.pop_if(|last| *last == b'\n').is_none() {
            break std::mem::take(&mut line);
        }
        offset += line.len() as u64 + 1;
        audit.line(&line);
    };
    drop(reader);
    let chain = audit.chain_status(&tail, args.follow);
    let text = if args.json {
        format!("{}\n", audit.summary.to_json(&name, &chain, args))
    } else {
        format!("{name}: {}\n{}", chain.sentence(), audit.summary.to_text(&args.since, &args.until))
    };
    if write_out(out, &text).is_err() {
        return Ok(0);
    }
    if !args.follow || audit.broken.is_some() {
        return Ok(if audit.broken.is_some() { 1 } else { 0 });
    }
    follow(&mut audit, &mut file, offset, &name, args.json, out)
}

/// Parses an RFC 3339 time (`2026-11-23T22:07:37Z`, `2026-11-23T23:07:37.5+01:00`) or a date
/// (`2026-11-23`, midnight UTC) into milliseconds since 1970.
pub fn parse_time(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = bytes.get(range)?;
        if !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(digits).ok()?.parse().ok()
    };
    if bytes.get(4) != Some(&b'-') || bytes.get(7) != Some(&b'-') {
        return None;
    }
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    if !(1..=12).contains(&month) || !(1..=days_in_month(year, month)).contains(&day) {
        return None;
    }
    let date = days_from_civil(year, month, day) * 86_400_000;
    if bytes.len() == 10 {
        return Some(date);
    }
    if !matches!(bytes.get(10), Some(b'T' | b't' | b' '))
        || bytes.get(13) != Some(&b':')
        || bytes.get(16) != Some(&b':')
    {
        return None;
    }
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    // 60 is a leap second; it counts as the last second of the minute.
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut millis = date + ((hour * 60 + minute) * 60 + second.min(59)) * 1000;
    let mut rest = &text[19..];
    if let Some(fraction) = rest.strip_prefix('.') {
        let n = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return None;
        }
        let first3 = format!("{:0<3}", &fraction[..n.min(3)]);
        millis += first3.parse::<i64>().ok()?;
        rest = &fraction[n..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first() {
                Some(b'+') => 1,
                Some(b'-') => -1,
                _ => return None,
            };
            let zone = &rest.as_bytes()[1..];
            if zone.len() != 5 || zone[2] != b':' {
                return None;
            }
            let (h, m) = (number_of(&zone[0..2])?, number_of(&zone[3..5])?);
            if h > 23 || m > 59 {
                return None;
            }
            sign * (h * 60 + m) * 60_000
        }
    };
    Some(millis - offset)
}

/// One ledger line, one event, for `--follow`: `TS EVENT …` in words.
pub fn event_line(value: &Value) -> String {
    let field = |key: &str| value.get(key).and_then(Value::as_str);
    let mut out = format!("{} {}", field("ts").unwrap_or("?"), field("event").unwrap_or("?"));
    if let Some(decision) = field("decision") {
        out.push_str(&format!(" {decision}"));
    }
    for key in ["identity", "method", "tool"] {
        if let Some(text) = field(key) {
            out.push_str(&format!(" {text}"));
        }
    }
    if let Some(rule) = field("rule") {
        out.push_str(&format!(" [{rule}]"));
    }
    if let Some(reason) = field("reason") {
        out.push_str(&format!(": {reason}"));
    }
    printable(&out)
}

/// Text from the ledger as it may be shown on a terminal: what a peer sent (tool names, reasons
/// quoting arguments) can hold line breaks, escape sequences and invisible characters, which
/// are shown escaped (`\n`, `\u{1b}`) so that one event stays one line and cannot repaint the
/// screen.
pub fn printable(text: &str) -> String {
    let hidden = |c: char| {
        c.is_control()
            || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}')
    };
    if !text.chars().any(hidden) {
        return text.to_owned();
    }
    text.chars()
        .map(|c| if hidden(c) { c.escape_default().to_string() } else { c.to_string() })
        .collect()
}

/// The chain as far as it was read, and what was summarised.
struct Audit {
    verifier: Verifier,
    /// The first bad line; lines after it are summarised but not verified.
    broken: Option<Broken>,
    summary: Summary,
    since: Option<i64>,
    until: Option<i64>,
}

impl Audit {
    /// Verifies one whole line (while the chain holds) and adds it to the summary when it is in
    /// the time range. Returns the parsed line when it was in range.
    fn line(&mut self, bytes: &[u8]) -> Option<Value> {
        if self.broken.is_none() {
            if let Err(broken) = self.verifier.line(bytes) {
                self.broken = Some(broken);
            }
        }
        let Ok(value) = serde_json::from_slice::<Value>(bytes) else {
            self.summary.unreadable += 1;
            return None;
        };
        let ts = value.get("ts").and_then(Value::as_str).and_then(parse_time);
        let in_range = match ts {
            Some(ts) => {
                self.since.is_none_or(|since| ts >= since)
                    && self.until.is_none_or(|until| ts <= until)
            }
            None => self.since.is_none() && self.until.is_none(),
        };
        if !in_range {
            return None;
        }
        self.summary.add(&value);
        Some(value)
    }

    fn chain_status(&self, tail: &[u8], following: bool) -> Chain {
        if let Some(broken) = &self.broken {
            return Chain::Broken(broken.clone());
        }
        let (lines, head) = self.verifier.state();
        // A partial line at the end is a crash (or, when following, a write in progress).
        let incomplete = !tail.is_empty() && !following;
        Chain::Intact { lines, head, incomplete }
    }
}

enum Chain {
    Intact { lines: u64, head: String, incomplete: bool },
    Broken(Broken),
}

impl Chain {
    fn sentence(&self) -> String {
        match self {
            Chain::Intact { lines, head, incomplete } => {
                let short = &head[..12.min(head.len())];
                let note = if *incomplete { "; the last line is incomplete, cut short by a crash" } else { "" };
                format!("chain intact ({lines} lines, head {short}…){note}")
            }
            Chain::Broken(broken) if broken.line == 0 => format!("chain NOT verified: {}", broken.what),
            Chain::Broken(broken) => format!(
                "chain BROKEN at line {}: {}; lines from {} on are not verified (check with `mcpdome verify-log`)",
                broken.line, broken.what, broken.line
            ),
        }
    }

    fn to_json(&self) -> Value {
        match self {
            Chain::Intact { lines, head, incomplete } => {
                json!({ "intact": true, "lines": lines, "head": head, "incomplete_tail": incomplete })
            }
            Chain::Broken(broken) => {
                json!({ "intact": false, "line": broken.line, "error": broken.what })
            }
        }
    }
}

/// Counts of decisions (`deny`, `allow`, `filter`, `flag`, …) for one identity, tool or rule.
#[derive(Default)]
struct Counts(BTreeMap<String, u64>);

impl Counts {
    fn add(&mut self, decision: &str) {
        *self.0.entry(decision.to_owned()).or_default() += 1;
    }

    fn get(&self, decision: &str) -> u64 {
        self.0.get(decision).copied().unwrap_or(0)
    }

    fn total(&self) -> u64 {
        self.0.values().sum()
    }

    /// `3 deny, 5 allow, 1 filter`: denials first, then allows, then the rest by name.
    fn words(&self) -> String {
        let mut parts = Vec::new();
        for decision in ["deny", "allow"] {
            if self.get(decision) > 0 {
                parts.push(format!("{} {decision}", self.get(decision)));
            }
        }
        for (decision, n) in &self.0 {
            if decision != "deny" && decision != "allow" {
                parts.push(format!("{n} {decision}"));
            }
        }
        parts.join(", ")
    }

    fn to_json(&self) -> Value {
        Value::Object(self.0.iter().map(|(decision, n)| (decision.clone(), json!(n))).collect())
    }
}

/// Denials that share identity, tool and rule.
#[derive(Default)]
struct DenialGroup {
    count: u64,
    last_ts: String,
    last_reason: String,
}

#[derive(Default)]
struct Summary {
    first_ts: Option<String>,
    last_ts: Option<String>,
    /// Lines per `event`.
    events: BTreeMap<String, u64>,
    decisions: Counts,
    /// (identity, tool, rule) of denials.
    denials: BTreeMap<(String, String, String), DenialGroup>,
    identities: BTreeMap<String, Counts>,
    tools: BTreeMap<String, Counts>,
    rules: BTreeMap<String, Counts>,
    /// Lines that are not JSON (only in a broken chain).
    unreadable: u64,
}

const NONE: &str = "-";
/// A decision no rule made: the default effect, or a message no rule governs.
const NO_RULE: &str = "(no rule)";

impl Summary {
    fn add(&mut self, value: &Value) {
        let field = |key: &str| value.get(key).and_then(Value::as_str);
        if let Some(ts) = field("ts") {
            if self.first_ts.is_none() {
                self.first_ts = Some(ts.to_owned());
            }
            self.last_ts = Some(ts.to_owned());
        }
        let event = field("event").unwrap_or("?");
        *self.events.entry(event.to_owned()).or_default() += 1;
        if event != "decision" {
            return;
        }
        let decision = field("decision").unwrap_or("?");
        let identity = field("identity").unwrap_or(NONE).to_owned();
        let tool = match (field("tool"), field("method")) {
            (Some(tool), _) => tool.to_owned(),
            (None, Some(method)) => format!("({method})"),
            (None, None) => NONE.to_owned(),
        };
        let rule = field("rule").unwrap_or(NO_RULE).to_owned();
        self.decisions.add(decision);
        self.identities.entry(identity.clone()).or_default().add(decision);
        self.tools.entry(tool.clone()).or_default().add(decision);
        self.rules.entry(rule.clone()).or_default().add(decision);
        if decision == "deny" {
            let group = self.denials.entry((identity, tool, rule)).or_default();
            group.count += 1;
            group.last_ts = field("ts").unwrap_or("").to_owned();
            group.last_reason = field("reason").unwrap_or("").to_owned();
        }
    }

    /// Denial groups, most frequent first.
    fn sorted_denials(&self) -> Vec<(&(String, String, String), &DenialGroup)> {
        let mut groups: Vec<_> = self.denials.iter().collect();
        groups.sort_by(|a, b| b.1.count.cmp(&a.1.count).then_with(|| a.0.cmp(b.0)));
        groups
    }

    fn to_text(&self, since: &Option<String>, until: &Option<String>) -> String {
        let mut out = String::new();
        let range = match (since, until) {
            (None, None) => String::new(),
            (Some(since), None) => format!(" (since {since})"),
            (None, Some(until)) => format!(" (until {until})"),
            (Some(since), Some(until)) => format!(" (from {since} until {until})"),
        };
        let n_events: u64 = self.events.values().sum();
        match (&self.first_ts, &self.last_ts) {
            (Some(first), Some(last)) => {
                out.push_str(&format!("{n_events} event(s) from {first} to {last}{range}\n"))
            }
            _ => out.push_str(&format!("{n_events} event(s){range}\n")),
        }
        let n_decisions = self.decisions.total();
        let mut parts = vec![if n_decisions == 0 {
            "0 decisions".to_owned()
        } else {
            format!("{n_decisions} decision(s): {}", self.decisions.words())
        }];
        for (event, n) in &self.events {
            if event != "decision" {
                parts.push(format!("{n} {event}"));
            }
        }
        out.push_str(&parts.join("; "));
        out.push('\n');
        if self.unreadable > 0 {
            out.push_str(&format!("{} line(s) are not JSON and were skipped\n", self.unreadable));
        }

        let denials = self.sorted_denials();
        if !denials.is_empty() {
            out.push_str(&format!("\ndenied ({}):\n", self.decisions.get("deny")));
            let header = ["count", "identity", "tool", "rule", "last reason"].map(str::to_owned);
            let mut rows = vec![header.to_vec()];
            for ((identity, tool, rule), group) in &denials {
                let row = [&group.count.to_string(), identity, tool, rule, &group.last_reason];
                rows.push(row.iter().map(|cell| printable(cell)).collect());
            }
            out.push_str(&table(&rows));
        }
        for (title, map) in
            [("identity", &self.identities), ("tool or method", &self.tools), ("rule", &self.rules)]
        {
            if map.is_empty() {
                continue;
            }
            out.push_str(&format!("\nby {title}:\n"));
            let rows: Vec<Vec<String>> = sorted(map)
                .into_iter()
                .map(|(name, counts)| vec![printable(name), counts.words()])
                .collect();
            out.push_str(&table(&rows));
        }
        out
    }

    fn to_json(&self, file: &str, chain: &Chain, args: &AuditArgs) -> Value {
        let denials: Vec<Value> = self
            .sorted_denials()
            .into_iter()
            .map(|((identity, tool, rule), group)| {
                json!({
                    "identity": identity, "tool": tool, "rule": rule, "count": group.count,
                    "last_ts": group.last_ts, "last_reason": group.last_reason,
                })
            })
            .collect();
        let by = |map: &BTreeMap<String, Counts>| -> Value {
            let rows = sorted(map).into_iter().map(|(name, counts)| {
                let mut row = Map::new();
                row.insert("name".to_owned(), json!(name));
                row.insert("decisions".to_owned(), counts.to_json());
                Value::Object(row)
            });
            Value::Array(rows.collect())
        };
        json!({
            "file": file,
            "chain": chain.to_json(),
            "since": args.since,
            "until": args.until,
            "first_ts": self.first_ts,
            "last_ts": self.last_ts,
            "events": self.events,
            "decisions": self.decisions.to_json(),
            "denials": denials,
            "by_identity": by(&self.identities),
            "by_tool": by(&self.tools),
            "by_rule": by(&self.rules),
            "unreadable_lines": self.unreadable,
        })
    }
}

/// Rows with the most denials first, then the busiest, then by name.
fn sorted(map: &BTreeMap<String, Counts>) -> Vec<(&String, &Counts)> {
    let mut rows: Vec<_> = map.iter().collect();
    rows.sort_by(|a, b| {
        b.1.get("deny")
            .cmp(&a.1.get("deny"))
            .then_with(|| b.1.total().cmp(&a.1.total()))
            .then_with(|| a.0.cmp(b.0))
    });
    rows
}

/// Left-aligned columns, two spaces apart, indented by two; the last column is not padded.
fn table(rows: &[Vec<String>]) -> String {
    let n_columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..n_columns)
        .map(|col| {
            rows.iter()
                .filter_map(|row| row.get(col))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::from(" ");
        for (col, cell) in row.iter().enumerate() {
            line.push(' ');
            if col + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$} ", width = widths[col]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Reads lines appended after `offset` until the chain breaks, the file shrinks or stdout
/// closes. A partial line is kept until its newline arrives.
fn follow(
    audit: &mut Audit,
    file: &mut File,
    mut offset: u64,
    name: &str,
    as_json: bool,
    out: &mut dyn Write,
) -> Result<u8, Error> {
    let mut pending = Vec::new();
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        let len = file
            .metadata()
            .map_err(|err| Error::io(format!("failed to read ledger `{name}`"), err))?
            .len();
        if len < offset + pending.len() as u64 {
            let text = format!(
                "{name}: the ledger shrank from {} to {len} bytes; stopped following\n",
                offset + pending.len() as u64
            );
            let _ = write_out(out, &text);
            return Ok(1);
        }
        file.seek(SeekFrom::Start(offset + pending.len() as u64))
            .map_err(|err| Error::io(format!("failed to read ledger `{name}`"), err))?;
        loop {
            let n = io::Read::read(file, &mut chunk)
                .map_err(|err| Error::io(format!("failed to read ledger `{name}`"), err))?;
            if n == 0 {
                break;
            }
            pending.extend_from_slice(&chunk[..n]);
        }
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            offset += line.len() as u64;
            let bytes = &line[..line.len() - 1];
            let value = audit.line(bytes);
            if let Some(broken) = &audit.broken {
                let text = if as_json {
                    format!("{}\n", json!({ "chain": Chain::Broken(broken.clone()).to_json() }))
                } else {
                    format!("{name}: {}\n", Chain::Broken(broken.clone()).sentence())
                };
                let _ = write_out(out, &text);
                return Ok(1);
            }
            if let Some(value) = value {
                let text = if as_json {
                    format!("{}\n", String::from_utf8_lossy(bytes))
                } else {
                    format!("{}\n", event_line(&value))
                };
                if write_out(out, &text).is_err() {
                    return Ok(0);
                }
            }
        }
        std::thread::sleep(FOLLOW_INTERVAL);
    }
}

/// Writes and flushes; an error means stdout is gone (`mcpdome audit … | head`).
fn write_out(out: &mut dyn Write, text: &str) -> io::Result<()> {
    out.write_all(text.as_bytes())?;
    out.flush()
}

fn parse_bound(text: Option<&str>, option: &str) -> Result<Option<i64>, Error> {
    match text {
        None => Ok(None),
        Some(text) => parse_time(text).map(Some).ok_or_else(|| {
            Error::usage(format!(
                "invalid value {text:?} for `{option}`: expected an RFC 3339 time such as 2026-11-23T22:07:37Z or a date such as 2026-11-23"
            ))
        }),
    }
}

fn number_of(digits: &[u8]) -> Option<i64> {
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a date: Howard Hinnant's `days_from_civil`, the inverse of the
/// ledger's `civil_from_days`.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_time("1970-01-01"), Some(0));
        assert_eq!(parse_time("2026-11-23T22:07:37.123Z"), Some(1_795_471_657_123));
        assert_eq!(parse_time("2026-11-23T23:07:37.123+01:00"), Some(1_795_471_657_123));
        assert_eq!(parse_time("2026-11-23t22:07:37.1234567z"), Some(1_795_471_657_123));
        assert_eq!(parse_time("2000-02-29T00:00:00Z"), Some(951_782_400_000));
        assert_eq!(parse_time("2001-02-29T00:00:00Z"), None);
        assert_eq!(parse_time("2026-11-23T22:07:37"), None);
        assert_eq!(parse_time("2026-11-23T22:07:37.Z"), None);
        assert_eq!(parse_time("yesterday"), None);
        assert_eq!(parse_time("2026-13-01"), None);
    }

    #[test]
    fn tables_align() {
        let rows = vec![
            vec!["a".to_owned(), "bb".to_owned(), "c".to_owned()],
            vec!["ddd".to_owned(), "e".to_owned(), "f".to_owned()],
        ];
        assert_eq!(table(&rows), "  a    bb  c\n  ddd  e   f\n");
    }
}
