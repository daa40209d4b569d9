//! Diagnostics on stderr, one line per event.
//!
//! stdout belongs to the MCP client and carries nothing but MCP, so every word mcpdome says about
//! itself goes to stderr, where the upstream's own stderr also passes through. Each event is
//! formatted first and written with one `write_all`, so it does not interleave mid-line with the
//! upstream's output. The default level is `warn`: a healthy session prints nothing.
//!
//! With `--log-format json` every event is one JSON object on its line instead
//! (`{"level":"warn","msg":"…"}`), and a refusal logged through [`refusal`] carries its fields
//! (`side`, `line`, `id`, `code`, `identity`, `tool`, `rule`, `reason`, `outcome`, `hint`) as
//! members, for log shippers. In text a refusal reads as one sentence a person can act on: what
//! was refused, for whom, by which rule or detector, and what to do about it.
//!
//! This module does not buffer, rotate or timestamp: the host that started mcpdome owns stderr.

use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Off = 0,
    Error = 1,
    Warn = 2,
    Info = 3,
    Debug = 4,
}

impl Level {
    pub fn parse(text: &str) -> Option<Level> {
        let level = match text {
            "off" => Level::Off,
            "error" => Level::Error,
            "warn" => Level::Warn,
            "info" => Level::Info,
            "debug" => Level::Debug,
            _ => return None,
        };
        Some(level)
    }

    fn name(self) -> &'static str {
        match self {
            Level::Off => "off",
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
        }
    }
}

/// How event lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `mcpdome: warn: …`, for people.
    Text = 0,
    /// One JSON object per line, for log shippers.
    Json = 1,
}

impl Format {
    pub fn parse(text: &str) -> Option<Format> {
        match text {
            "text" => Some(Format::Text),
            "json" => Some(Format::Json),
            _ => None,
        }
    }
}

static LEVEL: AtomicU8 = AtomicU8::new(Level::Warn as u8);
static FORMAT: AtomicU8 = AtomicU8::new(Format::Text as u8);

pub fn set_level(level: Level) {
    LEVEL.store(level as u8, Ordering::Relaxed);
}

pub fn set_format(format: Format) {
    FORMAT.store(format as u8, Ordering::Relaxed);
}

pub fn format() -> Format {
    if FORMAT.load(Ordering::Relaxed) == Format::Json as u8 {
        Format::Json
    } else {
        Format::Text
    }
}

pub fn enabled(level: Level) -> bool {
    level != Level::Off && level as u8 <= LEVEL.load(Ordering::Relaxed)
}

/// Writes one event line. Call it through the macros, which skip formatting when the level is off.
pub fn write(level: Level, args: fmt::Arguments<'_>) {
    let line = match format() {
        Format::Text => format!("mcpdome: {}: {args}\n", level.name()),
        Format::Json => {
            let msg = args.to_string();
            format!("{}\n", serde_json::json!({ "level": level.name(), "msg": msg }))
        }
    };
    emit(&line);
}

/// A refused message, as the relay knows it. Every field but `reason` and `outcome` is optional:
/// a line that is not JSON has no id, identity or tool.
#[derive(Clone, Copy, Debug, Default)]
pub struct Refusal<'a> {
    /// Who sent the refused line: `client` or `upstream`.
    pub side: &'a str,
    /// Its line number on that side.
    pub line: u64,
    /// The JSON-RPC id as JSON text (`7`, `"a"`).
    pub id: Option<&'a str>,
    pub method: Option<&'a str>,
    /// `psk:ci-bot`, `anonymous`, …
    pub identity: Option<&'a str>,
    pub tool: Option<&'a str>,
    /// The JSON-RPC error code the refusal carries.
    pub code: i32,
    /// The rule id, detector or limit that decided.
    pub rule: Option<&'a str>,
    /// The ward's category (`injection`, `secret`, …) when the ward decided.
    pub category: Option<&'a str>,
    pub reason: &'a str,
    /// What became of the line: `answered request 7 with error -32013`, `dropped`, …
    pub outcome: &'a str,
}

/// Logs a refusal at `warn`: in text, one sentence with what to do ([`hint`]); in JSON, one
/// object with every field.
pub fn refusal(refusal: &Refusal<'_>) {
    if !enabled(Level::Warn) {
        return;
    }
    emit(&refusal_line(refusal, format()));
}

/// The line [`refusal`] writes, newline included.
pub fn refusal_line(refusal: &Refusal<'_>, format: Format) -> String {
    let hint = hint(refusal);
    match format {
        Format::Json => {
            let mut object = serde_json::Map::new();
            let mut put = |key: &str, value: serde_json::Value| {
                object.insert(key.to_owned(), value);
            };
            put("level", "warn".into());
            put("event", "refused".into());
            put("side", refusal.side.into());
            put("line", refusal.line.into());
            if let Some(id) = refusal.id {
                // The id as the JSON it was; text that is not JSON stays a string.
                put("id", serde_json::from_str(id).unwrap_or_else(|_| id.into()));
            }
            let strings = [
                ("method", refusal.method),
                ("identity", refusal.identity),
                ("tool", refusal.tool),
                ("rule", refusal.rule),
                ("category", refusal.category),
            ];
            for (key, value) in strings {
                if let Some(value) = value {
                    put(key, value.into());
                }
            }
            put("code", refusal.code.into());
            put("reason", refusal.reason.into());
            put("outcome", refusal.outcome.into());
            if let Some(hint) = hint {
                put("hint", hint.into());
            }
            format!("{}\n", serde_json::Value::Object(object))
        }
        // A line refused before any check ran (not JSON, a bad id, too long) has no subject
        // and nothing to do but fix the sender: it keeps the short form.
        Format::Text
            if refusal.method.is_none() && refusal.identity.is_none() && hint.is_none() =>
        {
            format!(
                "mcpdome: warn: {} line {}: {}; {}\n",
                refusal.side, refusal.line, refusal.reason, refusal.outcome
            )
        }
        Format::Text => {
            let what = match (refusal.tool, refusal.method) {
                (Some(tool), _) => format!("call to `{tool}`"),
                (None, Some(method)) => format!("`{method}`"),
                (None, None) => "line".to_owned(),
            };
            let whom =
                refusal.identity.map(|identity| format!(" from {identity}")).unwrap_or_default();
            let by = match (refusal.rule, refusal.category) {
                (Some(rule), Some(category)) => format!(" [{category}: {rule}]"),
                (Some(rule), None) => format!(" [{rule}]"),
                _ => String::new(),
            };
            let mut line = format!(
                "mcpdome: warn: refused {what}{whom} ({} line {}){by}: {}; {}",
                refusal.side, refusal.line, refusal.reason, refusal.outcome
            );
            if let Some(hint) = hint {
                line.push_str(" (");
                line.push_str(&hint);
                line.push(')');
            }
            line.push('\n');
            line
        }
    }
}

/// What a person can do about a refusal, by its error code: approve a pin, edit a rule, tune
/// the ward, use a key, wait. `None` when there is nothing to do but fix the sender.
pub fn hint(refusal: &Refusal<'_>) -> Option<String> {
    use crate::chain::{AUTH_FAILED, PIN_DENIED, POLICY_DENIED, RATE_LIMITED, WARD_BLOCKED};
    let tool = refusal.tool.unwrap_or("<tool>");
    let hint = match refusal.code {
        POLICY_DENIED => match refusal.rule {
            Some(rule) => format!(
                "to change this, edit rule \"{rule}\" in the config; `mcpdome explain --config <config> --tool {tool}` shows why"
            ),
            None => format!(
                "no rule allows it: add an allow rule for `{tool}` to the config; `mcpdome explain --config <config> --tool {tool}` shows why"
            ),
        },
        WARD_BLOCKED if refusal.rule == Some("ward-quarantine") => {
            format!("the server's definition of `{tool}` is poisoned; check it with `mcpdome scan` before trusting the server")
        }
        WARD_BLOCKED => match refusal.category {
            Some(category) => format!(
                "if this is a false positive, set `{category} = \"log\"` under [ward] in the config"
            ),
            None => "if this is a false positive, set that category to \"log\" under [ward] in the config".to_owned(),
        },
        PIN_DENIED => format!(
            "if the change is expected, review it with `mcpdome pins diff {tool}` and accept it with `mcpdome pins approve {tool}` (add `--pins FILE` or `-- <server command>`)"
        ),
        AUTH_FAILED => "give the client a key from the config's [[psk]] entries (MCPDOME_TOKEN, or `_mcpdome_psk` in initialize)".to_owned(),
        RATE_LIMITED => "retry later, or raise the limit in [rate_limit] or [[budget]]".to_owned(),
        _ => return None,
    };
    Some(hint)
}

/// One whole line to stderr in one write. A failed write to stderr has nowhere left to be
/// reported.
fn emit(line: &str) {
    let _ = std::io::stderr().write_all(line.as_bytes());
}

#[macro_export]
macro_rules! log_at {
    ($level:expr, $($arg:tt)+) => {
        if $crate::log::enabled($level) {
            $crate::log::write($level, format_args!($($arg)+));
        }
    };
}

#[macro_export]
macro_rules! error {
    ($($arg:tt)+) => { $crate::log_at!($crate::log::Level::Error, $($arg)+) };
}

#[macro_export]
macro_rules! warn {
    ($($arg:tt)+) => { $crate::log_at!($crate::log::Level::Warn, $($arg)+) };
}

#[macro_export]
macro_rules! info {
    ($($arg:tt)+) => { $crate::log_at!($crate::log::Level::Info, $($arg)+) };
}

#[macro_export]
macro_rules! debug {
    ($($arg:tt)+) => { $crate::log_at!($crate::log::Level::Debug, $($arg)+) };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy_denial() -> Refusal<'static> {
        Refusal {
            side: "client",
            line: 3,
            id: Some("\"two\""),
            method: Some("tools/call"),
            identity: Some("psk:dev"),
            tool: Some("delete_file"),
            code: crate::chain::POLICY_DENIED,
            rule: Some("no-deletes"),
            category: None,
            reason: "rule \"no-deletes\" denies tool `delete_file` for psk:dev",
            outcome: "answered request \"two\" with error -32013",
        }
    }

    #[test]
    fn refusal_in_text_says_what_whom_which_rule_and_what_to_do() {
        assert_eq!(
            refusal_line(&policy_denial(), Format::Text),
            "mcpdome: warn: refused call to `delete_file` from psk:dev (client line 3) [no-deletes]: \
             rule \"no-deletes\" denies tool `delete_file` for psk:dev; answered request \"two\" with error -32013 \
             (to change this, edit rule \"no-deletes\" in the config; `mcpdome explain --config <config> --tool delete_file` shows why)\n"
        );
    }

    #[test]
    fn refusal_in_json_is_one_object_with_every_field() {
        let line = refusal_line(&policy_denial(), Format::Json);
        assert!(line.ends_with('\n') && !line[..line.len() - 1].contains('\n'));
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["event"], "refused");
        assert_eq!(value["id"], "two");
        assert_eq!(value["identity"], "psk:dev");
        assert_eq!(value["rule"], "no-deletes");
        assert_eq!(value["code"], -32013);
        assert!(value["hint"].as_str().unwrap().starts_with("to change this, edit rule"));
    }

    #[test]
    fn a_line_refused_before_the_checks_keeps_the_short_form() {
        let framing = Refusal {
            side: "upstream",
            line: 1,
            code: -32700,
            reason: "message is not valid JSON",
            outcome: "dropped",
            ..Refusal::default()
        };
        assert_eq!(
            refusal_line(&framing, Format::Text),
            "mcpdome: warn: upstream line 1: message is not valid JSON; dropped\n"
        );
    }

    #[test]
    fn hints_per_code() {
        let pin = Refusal {
            code: crate::chain::PIN_DENIED,
            rule: Some("pin-changed"),
            ..policy_denial()
        };
        assert!(hint(&pin).unwrap().contains("mcpdome pins approve delete_file"));
        let ward = Refusal {
            code: crate::chain::WARD_BLOCKED,
            category: Some("secret"),
            ..policy_denial()
        };
        assert_eq!(
            hint(&ward).unwrap(),
            "if this is a false positive, set `secret = \"log\"` under [ward] in the config"
        );
        let framing = Refusal { code: -32600, ..policy_denial() };
        assert_eq!(hint(&framing), None);
    }
}
