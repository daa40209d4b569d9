//! The policy: which identity may take which action, with which arguments.
//!
//! Rules are tried in priority order (lower first; equal priorities keep file order) and the
//! first rule that applies decides. When none applies, the default decides, and the default is
//! deny. Only *actions* are governed: `tools/call` (by tool name), `resources/read` and
//! `resources/subscribe` (by URI), `prompts/get` (by prompt name), and requests whose method no
//! revision of MCP defines (by method, for rules with `methods`). Protocol housekeeping
//! (`initialize`, `server/discover`, `ping`, the `*/list` methods, notifications, responses) is
//! never denied by a rule, so a policy that lists only tools still lets a session start.
//!
//! A rule *applies* when its identities, its action kind and name, and its time window match,
//! and then, for its argument constraints:
//! - an `allow` rule applies only if every constraint is satisfied;
//! - a `deny` rule applies if any constraint is violated (or it has none).
//!
//! A constraint on `param` is satisfied when the parameter is present, every `allow_glob`
//! condition holds (the value is a string and matches one glob after path normalisation), no
//! string inside the value (keys included) matches a `deny_regex`, and it is no longer than
//! `max_length`. `param = "*"` means every string anywhere in the arguments, keys included. A
//! missing parameter, or one of the wrong type, never satisfies a constraint: a missing `path`
//! cannot slip past a path rule.
//!
//! This module evaluates; `config` builds the rules and checks them.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use regex_lite::Regex;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::auth::Identity;
use crate::chain::{Ctx, Deny, INVALID_PARAMS, POLICY_DENIED};
use crate::frame::{Kind, Raw};
use crate::gate::{Gate, Side};
use crate::glob::Glob;

#[derive(Debug)]
pub struct Policy {
    /// Sorted by priority, then file order.
    pub rules: Vec<Rule>,
    pub default_effect: Effect,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    Allow,
    Deny,
}

impl fmt::Display for Effect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Effect::Allow => "allow",
            Effect::Deny => "deny",
        })
    }
}

#[derive(Debug)]
pub struct Rule {
    pub id: String,
    pub priority: i64,
    pub effect: Effect,
    pub identities: IdentityMatch,
    pub tools: Option<Names>,
    pub resources: Option<Names>,
    pub prompts: Option<Names>,
    pub methods: Option<Names>,
    pub arguments: Vec<Constraint>,
    pub window: Option<Window>,
}

#[derive(Debug, Default)]
pub struct IdentityMatch {
    /// `"*"`: everyone, anonymous included.
    pub any: bool,
    /// Every one of these labels must be held.
    pub labels: Vec<String>,
    /// The principal must be one of these (`psk:ci-bot`, `anonymous`).
    pub principals: Vec<String>,
}

impl IdentityMatch {
    pub fn matches(&self, identity: &Identity) -> bool {
        if self.any {
            return true;
        }
        self.labels.iter().all(|label| identity.labels.contains(label))
            && (self.principals.is_empty() || self.principals.contains(&identity.principal))
    }
}

/// A list of name patterns (`"*"`, `"read_file"`, `"git_*"`).
#[derive(Debug)]
pub struct Names(pub Vec<Glob>);

impl Names {
    pub fn matches(&self, name: &str) -> bool {
        self.0.iter().any(|glob| glob.matches_name(name))
    }
}

#[derive(Debug)]
pub struct Constraint {
    /// A top-level argument name, or `*` for every string in the arguments.
    pub param: String,
    pub allow_glob: Vec<Glob>,
    pub deny_regex: Vec<DenyRegex>,
    pub max_length: Option<usize>,
}

/// A `deny_regex`, with the literal every match must contain when the pattern has one.
///
/// regex-lite has no literal optimisations: it walks every byte (about 100 µs for 4 KiB per
/// pattern, measured). Most secret patterns start with a fixed prefix (`AKIA`, `ghp_`) or end in
/// one (`.*\.env$`), so a SIMD substring search rules out almost every text first, and the
/// regex runs only on texts that contain the literal.
#[derive(Debug)]
pub struct DenyRegex {
    regex: Regex,
    literal: Option<memchr::memmem::Finder<'static>>,
    /// Whether the literal holds none of the characters a JSON escape other than `\u` stands
    /// for (`"`, `\\`, `/`, and the controls `\b \f \n \r \t`). Then every occurrence of
    /// it in a decoded string comes from plain characters side by side in the string's JSON
    /// text, and a JSON text without it cannot decode to a text that matches.
    literal_survives_escapes: bool,
}

impl DenyRegex {
    pub fn new(regex: Regex) -> DenyRegex {
        let literal = required_literal(regex.as_str());
        let literal_survives_escapes = literal
            .as_ref()
            .is_some_and(|lit| !lit.contains(['"', '\\', '/', '\u{8}', '\u{c}', '\n', '\r', '\t']));
        let literal = literal.map(|lit| memchr::memmem::Finder::new(lit.as_bytes()).into_owned());
        DenyRegex { regex, literal, literal_survives_escapes }
    }

    /// Whether no string whose JSON text (between the quotes) is `escaped` can match, where
    /// `escaped` holds escapes but no `\u` escape. `false` when that cannot be told without
    /// decoding.
    fn cannot_match_escaped(&self, escaped: &str) -> bool {
        match &self.literal {
            Some(literal) if self.literal_survives_escapes => {
                literal.find(escaped.as_bytes()).is_none()
            }
            _ => false,
        }
    }

    pub fn is_match(&self, text: &str) -> bool {
        if let Some(literal) = &self.literal {
            if literal.find(text.as_bytes()).is_none() {
                return false;
            }
        }
        self.regex.is_match(text)
    }

    pub fn as_str(&self) -> &str {
        self.regex.as_str()
    }
}

/// A literal that every match of `pattern` contains: its leading run of plain characters, after
/// an optional `^` and `.*`. `None` when there is no such run of at least two characters, or
/// when the pattern could match without it (alternation, flags, an optional last character).
fn required_literal(pattern: &str) -> Option<String> {
    if pattern.contains('|') || pattern.starts_with("(?") {
        return None;
    }
    let rest = pattern.strip_prefix('^').unwrap_or(pattern);
    let rest = rest.strip_prefix(".*").unwrap_or(rest);
    let mut literal = String::new();
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.peek() {
                // An escaped punctuation character is itself; `\d`, `\w`, `\b`… are classes.
                Some(&next) if next.is_ascii_punctuation() => {
                    literal.push(next);
                    chars.next();
                }
                _ => break,
            },
            c if c.is_alphanumeric() || " _-/:@#%=,;'\"!~`<>&".contains(c) => literal.push(c),
            _ => {
                // A quantifier that allows zero makes the character before it optional.
                if matches!(c, '?' | '*' | '{') {
                    literal.pop();
                }
                break;
            }
        }
    }
    if matches!(chars.peek(), Some('?' | '*' | '{')) {
        literal.pop();
    }
    (literal.chars().count() >= 2).then_some(literal)
}

/// A UTC time window: hours `[start, end)` in minutes since midnight (may wrap past midnight),
/// and a set of weekdays (bit 0 = Monday).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub minutes: Option<(u16, u16)>,
    pub days: Option<u8>,
}

impl Window {
    /// `unix_secs` is seconds since the epoch (UTC).
    pub fn contains(&self, unix_secs: u64) -> bool {
        let minute = ((unix_secs / 60) % (24 * 60)) as u16;
        // 1970-01-01 was a Thursday (index 3 with Monday = 0).
        let weekday = ((unix_secs / 86_400 + 3) % 7) as u8;
        let day_ok = self.days.is_none_or(|days| days & (1 << weekday) != 0);
        let time_ok = self.minutes.is_none_or(|(start, end)| {
            if start <= end {
                (start..end).contains(&minute)
            } else {
                minute >= start || minute < end
            }
        });
        day_ok && time_ok
    }
}

/// What a request asks to do, for the rules to look at.
#[derive(Clone, Copy, Debug)]
pub enum Action<'a> {
    Tool { name: &'a str, arguments: Option<&'a Value> },
    Resource { uri: &'a str },
    Prompt { name: &'a str, arguments: Option<&'a Value> },
    Method { name: &'a str },
}

impl<'a> Action<'a> {
    /// The name a decision is recorded under.
    pub fn name(&self) -> &str {
        match *self {
            Action::Tool { name, .. } | Action::Prompt { name, .. } | Action::Method { name } => {
                name
            }
            Action::Resource { uri } => uri,
        }
    }

    fn arguments(&self) -> Option<&'a Value> {
        match *self {
            Action::Tool { arguments, .. } | Action::Prompt { arguments, .. } => arguments,
            Action::Resource { .. } | Action::Method { .. } => None,
        }
    }
}

/// The outcome of [`Policy::decide`].
#[derive(Debug, PartialEq, Eq)]
pub struct Decision<'p> {
    pub effect: Effect,
    /// The rule that decided; `None` when the default did.
    pub rule: Option<&'p str>,
    /// Why, in words, for the denied caller and the ledger.
    pub reason: String,
}

impl Policy {
    pub fn decide(&self, identity: &Identity, action: Action<'_>, unix_secs: u64) -> Decision<'_> {
        self.judge(identity, action, action.arguments(), None, unix_secs, true)
    }

    /// [`Policy::decide`] with the arguments given apart from the action (any [`Args`]), and,
    /// unless `explain_allow`, an empty `reason` when the effect is allow (the gateway does not
    /// use it, and formatting it is most of an allowed decision's cost). `text` is the
    /// arguments' JSON text when no string in it has a `\u` escape (see [`ArgValue::scan_text`]).
    fn judge<A: Args + ?Sized>(
        &self,
        identity: &Identity,
        action: Action<'_>,
        arguments: Option<&A>,
        text: Option<&str>,
        unix_secs: u64,
        explain_allow: bool,
    ) -> Decision<'_> {
        // Resource URIs are matched in normal form, so `..` and `%2e%2e` cannot walk out of an
        // allowed directory; one that climbs above its root is refused outright.
        let normalized;
        let action = match action {
            Action::Resource { uri } => match crate::glob::normalize_uri(uri) {
                Some(uri) => {
                    normalized = uri;
                    Action::Resource { uri: &normalized }
                }
                None => {
                    let reason = format!("resource URI `{uri}` climbs above its root, is not valid percent-encoding, or holds a backslash, a control character or an outer space");
                    return Decision { effect: Effect::Deny, rule: None, reason };
                }
            },
            other => other,
        };
        // The first allow rule that covered the action but whose constraints failed: the most
        // useful thing to tell a caller who is then denied by default.
        let mut near_miss: Option<(&str, String)> = None;
        for rule in &self.rules {
            if !rule.covers(identity, action, unix_secs) {
                continue;
            }
            let violation =
                rule.arguments.iter().find_map(|constraint| constraint.violation(arguments, text));
            match (rule.effect, violation) {
                (Effect::Allow, None) => {
                    let reason = if explain_allow {
                        format!("allowed by rule \"{}\"", rule.id)
                    } else {
                        String::new()
                    };
                    return Decision { effect: Effect::Allow, rule: Some(&rule.id), reason };
                }
                (Effect::Deny, Some(why)) => {
                    return Decision {
                        effect: Effect::Deny,
                        rule: Some(&rule.id),
                        reason: format!("denied by rule \"{}\": {why}", rule.id),
                    };
                }
                (Effect::Deny, None) if rule.arguments.is_empty() => {
                    return Decision {
                        effect: Effect::Deny,
                        rule: Some(&rule.id),
                        reason: format!("denied by rule \"{}\"", rule.id),
                    };
                }
                (Effect::Allow, Some(why)) => {
                    near_miss.get_or_insert((&rule.id, why));
                }
                // A deny rule whose constraints all hold does not apply: the next rule decides.
                (Effect::Deny, None) => {}
            }
        }
        let reason = match self.default_effect {
            Effect::Allow if !explain_allow => String::new(),
            Effect::Allow => "allowed by default_effect".to_owned(),
            Effect::Deny => match near_miss {
                Some((rule, why)) => format!(
                    "no rule allows {} for {} (default deny); rule \"{rule}\" does not apply: {why}",
                    describe(action),
                    identity.principal
                ),
                None => format!("no rule allows {} for {} (default deny)", describe(action), identity.principal),
            },
        };
        Decision { effect: self.default_effect, rule: None, reason }
    }

    /// Whether some call of tool `name` could be allowed for `identity` (at some time, with some
    /// arguments). `tools/list` hides the tools for which this is false.
    pub fn may_call_tool(&self, identity: &Identity, name: &str) -> bool {
        for rule in &self.rules {
            let covers = rule.identities.matches(identity)
                && rule.tools.as_ref().is_some_and(|tools| tools.matches(name));
            if !covers {
                continue;
            }
            let conditional = rule.window.is_some() || !rule.arguments.is_empty();
            match rule.effect {
                Effect::Allow => return true,
                Effect::Deny if !conditional => return false,
                Effect::Deny => {}
            }
        }
        self.default_effect == Effect::Allow
    }
}

fn describe(action: Action<'_>) -> String {
    match action {
        Action::Tool { name, .. } => format!("tool `{name}`"),
        Action::Resource { uri } => format!("resource `{uri}`"),
        Action::Prompt { name, .. } => format!("prompt `{name}`"),
        Action::Method { name } => format!("method `{name}`"),
    }
}

impl Rule {
    fn covers(&self, identity: &Identity, action: Action<'_>, unix_secs: u64) -> bool {
        let names = match action {
            Action::Tool { .. } => &self.tools,
            Action::Resource { .. } => &self.resources,
            Action::Prompt { .. } => &self.prompts,
            Action::Method { .. } => &self.methods,
        };
        let named = || match action {
            Action::Resource { uri } => {
                names.as_ref().is_some_and(|names| names.0.iter().any(|glob| glob.matches_uri(uri)))
            }
            _ => names.as_ref().is_some_and(|names| names.matches(action.name())),
        };
        // The identity first: comparing a few labels is cheaper than matching name globs.
        self.identities.matches(identity)
            && named()
            && self.window.is_none_or(|window| window.contains(unix_secs))
    }
}

impl Constraint {
    /// `None` if satisfied, else why not. `text` is the JSON text of `arguments` when no
    /// string in it has a `\u` escape.
    fn violation<A: Args + ?Sized>(
        &self,
        arguments: Option<&A>,
        text: Option<&str>,
    ) -> Option<String> {
        let param = &self.param;
        if param == "*" {
            let arguments = arguments?;
            return self
                .deny_hit(arguments, text)
                .map(|hit| format!("an argument matches deny_regex `{hit}`"))
                .or_else(|| {
                    let too_long = self.max_length.is_some_and(|max| {
                        // A string has no more characters than bytes, so only a long one is
                        // counted.
                        let longer = |s: &str| s.len() > max && s.chars().count() > max;
                        arguments
                            .any_string_unless(&mut |s| longer(s), &|escaped| escaped.len() <= max)
                    });
                    too_long.then(|| {
                        format!(
                            "an argument is longer than max_length {}",
                            self.max_length.unwrap_or(0)
                        )
                    })
                });
        }
        let Some(value) = arguments.and_then(|args| args.member(param)) else {
            return Some(format!("argument `{param}` is missing"));
        };
        if !self.allow_glob.is_empty() {
            let Some(text) = value.as_text() else {
                return Some(format!("argument `{param}` is not a string"));
            };
            if !self.allow_glob.iter().any(|glob| glob.matches_path(&text)) {
                return Some(format!("argument `{param}` is outside allow_glob"));
            }
        }
        if let Some(hit) = self.deny_hit(value, None) {
            return Some(format!("argument `{param}` matches deny_regex `{hit}`"));
        }
        if let Some(max) = self.max_length {
            let len = match value.as_text() {
                Some(text) => text.chars().count(),
                None => value.json_len(),
            };
            if len > max {
                return Some(format!("argument `{param}` is longer than max_length {max}"));
            }
        }
        None
    }

    /// The first deny_regex that matches a string (or key) inside `value`.
    ///
    /// With `text`, the JSON text of `value` without a `\u` escape, a regex whose literal is
    /// not in that text is ruled out at once: every string's text is a part of it, so one pass
    /// over the arguments replaces a search in every key and value.
    fn deny_hit<A: Args + ?Sized>(&self, value: &A, text: Option<&str>) -> Option<&str> {
        self.deny_regex
            .iter()
            .find(|regex| {
                if text.is_some_and(|text| regex.cannot_match_escaped(text)) {
                    return false;
                }
                value.any_string_unless(&mut |s| regex.is_match(s), &|escaped| {
                    regex.cannot_match_escaped(escaped)
                })
            })
            .map(DenyRegex::as_str)
    }
}

/// Methods of every MCP revision that are protocol housekeeping, not actions: never governed by
/// rules. (Notifications and responses are never governed either.)
const HOUSEKEEPING: &[&str] = &[
    "initialize",
    "ping",
    "server/discover",
    "tools/list",
    "resources/list",
    "resources/templates/list",
    "resources/unsubscribe",
    "prompts/list",
    "completion/complete",
    "logging/setLevel",
    "subscriptions/listen",
    "tasks/get",
    "tasks/list",
    "tasks/result",
    "tasks/cancel",
];

/// Decides a client request with the policy, when there is one.
///
/// A client notification is governed too when its method is not a `notifications/…` one: a
/// `tools/call` without an id is still a call to a server that executes what it reads.
pub fn check(gate: &Gate, ctx: &mut Ctx<'_>) -> Result<(), Deny> {
    if ctx.from != Side::Client || ctx.msg.kind == Kind::Response {
        return Ok(());
    }
    let method = ctx.msg.method();
    let settings = ctx.settings;
    let Some(policy) = &settings.policy else { return Ok(()) };
    if HOUSEKEEPING.contains(&method)
        || ctx.msg.kind == Kind::Notification && method.starts_with("notifications/")
    {
        return Ok(());
    }
    let params = ctx.action()?;
    let needs =
        |what: &str| Deny::new(INVALID_PARAMS, format!("{method} needs params.{what} as a string"));
    // Arguments are parsed (strictly) only when some rule needs to look at them.
    let mut text = None;
    let arguments = if needs_arguments(policy, method) {
        let arguments = match params.arguments {
            None => None,
            Some(raw) => {
                let (arguments, plain) = ArgValue::scan_text(raw)
                    .map_err(|err| Deny::invalid(format!("arguments: {err}")))?;
                text = plain;
                Some(arguments)
            }
        };
        if arguments.as_ref().is_some_and(|args| !matches!(args, ArgValue::Object(_))) {
            return Err(Deny::new(
                INVALID_PARAMS,
                format!("{method} needs params.arguments as an object"),
            ));
        }
        arguments
    } else {
        None
    };
    // The arguments go to the rules apart from the action, as a borrowed view.
    let action = match method {
        "tools/call" => Action::Tool {
            name: params.name.as_deref().ok_or_else(|| needs("name"))?,
            arguments: None,
        },
        "resources/read" | "resources/subscribe" => {
            Action::Resource { uri: params.uri.as_deref().ok_or_else(|| needs("uri"))? }
        }
        "prompts/get" => Action::Prompt {
            name: params.name.as_deref().ok_or_else(|| needs("name"))?,
            arguments: None,
        },
        other => Action::Method { name: other },
    };
    let tool = match action {
        Action::Tool { .. } => params.name.clone(),
        _ => None,
    };
    let identity = gate.identity_or_anonymous(ctx.identity.as_deref());
    // Only a time window looks at the clock; without one, the time is never read.
    let now = if policy.rules.iter().any(|rule| rule.window.is_some()) {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    } else {
        0
    };
    let decision = policy.judge(identity, action, arguments.as_ref(), text, now, false);
    let rule = decision.rule.map(str::to_owned);
    ctx.tool = tool;
    match decision.effect {
        Effect::Allow => {
            ctx.rule = rule;
            Ok(())
        }
        Effect::Deny => {
            Err(Deny { code: POLICY_DENIED, reason: decision.reason, rule, data: None })
        }
    }
}

/// Whether any rule that could cover this method constrains arguments.
fn needs_arguments(policy: &Policy, method: &str) -> bool {
    policy.rules.iter().any(|rule| {
        !rule.arguments.is_empty()
            && match method {
                "tools/call" => rule.tools.is_some(),
                "prompts/get" => rule.prompts.is_some(),
                _ => false,
            }
    })
}

/// Removes from a `tools/list` result the tools the requester may never call, so the model is
/// not offered them. Calling one by name is still denied by [`check`].
pub fn filter_tools(_gate: &Gate, ctx: &mut Ctx<'_>) -> Result<(), Deny> {
    if ctx.from != Side::Upstream || ctx.msg.kind != Kind::Response || ctx.msg.result.is_none() {
        return Ok(());
    }
    let Some(request) = &ctx.request else { return Ok(()) };
    if &*request.method != "tools/list" {
        return Ok(());
    }
    let identity = request.identity.clone();
    let settings = ctx.settings;
    if !settings.from_file && settings.ward.is_none() && settings.pins.is_none() {
        return Ok(());
    }
    // The filter, the ward and the pins read `tools` as an array; any other shape would pass
    // all three unread, so it is refused (`null` or no `tools` lists nothing and passes).
    let tools = ctx.result_mut()?.and_then(|result| result.get_mut("tools"));
    if tools.as_ref().is_some_and(|tools| !tools.is_array() && !tools.is_null()) {
        return Err(Deny::invalid(
            "the upstream's tools/list result has `tools` that is not an array",
        ));
    }
    let Some(policy) = &settings.policy else { return Ok(()) };
    let anonymous = Identity::anonymous();
    let identity = identity.as_deref().unwrap_or(&anonymous);
    let Some(Value::Array(tools)) = ctx.result_mut()?.and_then(|result| result.get_mut("tools"))
    else {
        return Ok(());
    };
    let before = tools.len();
    tools.retain(|tool| {
        tool.get("name")
            .and_then(Value::as_str)
            .is_some_and(|name| policy.may_call_tool(identity, name))
    });
    let removed = before - tools.len();
    if removed > 0 {
        ctx.changed = true;
        ctx.rule = Some(format!("removed {removed} of {before} tools"));
    }
    Ok(())
}

/// Whether `test` holds for any string in `value`: string values and object keys at any depth.
pub fn any_string(value: &Value, test: &mut dyn FnMut(&str) -> bool) -> bool {
    match value {
        Value::String(text) => test(text),
        Value::Array(items) => items.iter().any(|item| any_string(item, test)),
        Value::Object(map) => map.iter().any(|(key, item)| test(key) || any_string(item, test)),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

/// What a constraint needs of the arguments: a `Value` (the `decide` API) or an [`ArgValue`]
/// (the gateway's borrowed view). Both give the same answers for the same JSON.
pub trait Args {
    /// Whether `test` holds for any string value or object key at any depth.
    fn any_string(&self, test: &mut dyn FnMut(&str) -> bool) -> bool {
        self.any_string_unless(test, &|_| false)
    }
    /// [`Args::any_string`], where `test` is known to be false for a string still in its JSON
    /// text (escapes other than `\u`, not decoded) when `rules_out` says so of that text.
    fn any_string_unless(
        &self,
        test: &mut dyn FnMut(&str) -> bool,
        rules_out: &dyn Fn(&str) -> bool,
    ) -> bool;
    /// The member `name` of an object; `None` for anything else.
    fn member(&self, name: &str) -> Option<&Self>;
    /// The text of a string.
    fn as_text(&self) -> Option<Cow<'_, str>>;
    /// The length of the value written as compact JSON, as `Value`'s `to_string` writes it.
    fn json_len(&self) -> usize;
}

impl Args for Value {
    fn any_string_unless(
        &self,
        test: &mut dyn FnMut(&str) -> bool,
        _rules_out: &dyn Fn(&str) -> bool,
    ) -> bool {
        any_string(self, test)
    }

    fn member(&self, name: &str) -> Option<&Value> {
        self.get(name)
    }

    fn as_text(&self) -> Option<Cow<'_, str>> {
        self.as_str().map(Cow::Borrowed)
    }

    fn json_len(&self) -> usize {
        self.to_string().len()
    }
}

/// A JSON value borrowed from the text it was parsed from: a string without escapes, key or
/// value, is not copied. Objects keep their members in order, and never hold a key twice.
#[derive(Debug, Clone, PartialEq)]
pub enum ArgValue<'a> {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    Str(Cow<'a, str>),
    /// A string as its JSON text between the quotes, not decoded yet: it has escapes, none of
    /// them `\u` (so decoding cannot fail).
    Escaped(&'a str),
    Array(Vec<ArgValue<'a>>),
    Object(Vec<(Cow<'a, str>, ArgValue<'a>)>),
}

impl<'a> ArgValue<'a> {
    /// Parses JSON text exactly as [`crate::chain::strict_value`] does: the same values, the
    /// same refusal of a key given twice in an object at any depth (with the same error, at the
    /// same position), the same recursion limit; only without copying plain strings.
    pub fn parse(text: &'a str) -> Result<ArgValue<'a>, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_str(text);
        let value = de::DeserializeSeed::deserialize(ViewSeed, &mut de)?;
        de.end()?;
        Ok(value)
    }

    /// The arguments of a message, which the frame already checked as JSON: read with one
    /// structural scan that leaves strings with simple escapes undecoded until a rule needs
    /// them. Whatever the scan does not take in its stride (a `\u` escape, a key given twice,
    /// nesting past [`SCAN_DEPTH`], a number that is not an `f64`) is read by
    /// [`ArgValue::parse`] instead, so the value and any error are exactly that function's.
    pub fn scan(raw: Raw<'a>) -> Result<ArgValue<'a>, serde_json::Error> {
        ArgValue::scan_text(raw).map(|(value, _)| value)
    }

    /// [`ArgValue::scan`], and the text it read when no string in it (key or value) has a `\u`
    /// escape: that is when the scan reads all of it, since it leaves a `\u` to serde_json.
    pub fn scan_text(raw: Raw<'a>) -> Result<(ArgValue<'a>, Option<&'a str>), serde_json::Error> {
        let text = raw.get();
        let mut scan = Scan { text, b: text.as_bytes(), i: 0 };
        match scan.value(0) {
            Some(value) if scan.i == text.len() => Ok((value, Some(text))),
            _ => ArgValue::parse(text).map(|value| (value, None)),
        }
    }

    /// The same value as a `Value`.
    pub fn to_value(&self) -> Value {
        match self {
            ArgValue::Null => Value::Null,
            ArgValue::Bool(b) => Value::Bool(*b),
            ArgValue::Number(n) => Value::Number(n.clone()),
            ArgValue::Str(text) => Value::String(text.to_string()),
            ArgValue::Escaped(escaped) => Value::String(unescape(escaped)),
            ArgValue::Array(items) => Value::Array(items.iter().map(ArgValue::to_value).collect()),
            ArgValue::Object(members) => Value::Object(
                members.iter().map(|(key, value)| (key.to_string(), value.to_value())).collect(),
            ),
        }
    }
}

impl Args for ArgValue<'_> {
    fn any_string_unless(
        &self,
        test: &mut dyn FnMut(&str) -> bool,
        rules_out: &dyn Fn(&str) -> bool,
    ) -> bool {
        match self {
            ArgValue::Str(text) => test(text),
            ArgValue::Escaped(escaped) => !rules_out(escaped) && test(&unescape(escaped)),
            ArgValue::Array(items) => {
                items.iter().any(|item| item.any_string_unless(test, rules_out))
            }
            ArgValue::Object(members) => members
                .iter()
                .any(|(key, item)| test(key) || item.any_string_unless(test, rules_out)),
            ArgValue::Null | ArgValue::Bool(_) | ArgValue::Number(_) => false,
        }
    }

    fn member(&self, name: &str) -> Option<&Self> {
        match self {
            ArgValue::Object(members) => {
                members.iter().find(|(key, _)| key == name).map(|(_, value)| value)
            }
            _ => None,
        }
    }

    fn as_text(&self) -> Option<Cow<'_, str>> {
        match self {
            ArgValue::Str(text) => Some(Cow::Borrowed(text)),
            ArgValue::Escaped(escaped) => Some(Cow::Owned(unescape(escaped))),
            _ => None,
        }
    }

    fn json_len(&self) -> usize {
        self.to_value().to_string().len()
    }
}

/// How deep [`ArgValue::scan`] goes before leaving the text to serde_json, well short of
/// serde_json's recursion limit (128) so that a refusal for depth stays serde_json's.
const SCAN_DEPTH: usize = 100;

/// The decoded text of a JSON string's contents that have escapes, none of them `\u`.
fn unescape(escaped: &str) -> String {
    let mut out = String::with_capacity(escaped.len());
    let mut rest = escaped;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let Some(&code) = rest.as_bytes().get(at + 1) else { break };
        out.push(match code {
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            other => char::from(other),
        });
        rest = &rest[at + 2..];
    }
    out.push_str(rest);
    out
}

/// The state of [`ArgValue::scan`]: JSON text known to be valid, and a position in it.
struct Scan<'a> {
    text: &'a str,
    b: &'a [u8],
    i: usize,
}

impl<'a> Scan<'a> {
    fn ws(&mut self) {
        while matches!(self.b.get(self.i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    /// The value at the current position; `None` to leave the text to serde_json.
    fn value(&mut self, depth: usize) -> Option<ArgValue<'a>> {
        self.ws();
        match *self.b.get(self.i)? {
            b'{' => {
                if depth >= SCAN_DEPTH {
                    return None;
                }
                self.i += 1;
                let mut members: Vec<(Cow<'a, str>, ArgValue<'a>)> = Vec::new();
                let mut seen: Option<HashSet<Cow<'a, str>>> = None;
                self.ws();
                if self.b.get(self.i) == Some(&b'}') {
                    self.i += 1;
                    return Some(ArgValue::Object(members));
                }
                loop {
                    self.ws();
                    let key = match self.string()? {
                        ArgValue::Str(key) => key,
                        ArgValue::Escaped(escaped) => Cow::Owned(unescape(escaped)),
                        _ => return None,
                    };
                    self.ws();
                    if self.b.get(self.i) != Some(&b':') {
                        return None;
                    }
                    self.i += 1;
                    let value = self.value(depth + 1)?;
                    let repeated = match &mut seen {
                        Some(seen) => !seen.insert(key.clone()),
                        None => members.iter().any(|(known, _)| *known == key),
                    };
                    if repeated {
                        return None;
                    }
                    members.push((key, value));
                    if seen.is_none() && members.len() > LINEAR_KEYS {
                        seen = Some(members.iter().map(|(known, _)| known.clone()).collect());
                    }
                    self.ws();
                    match self.b.get(self.i)? {
                        b',' => self.i += 1,
                        b'}' => {
                            self.i += 1;
                            return Some(ArgValue::Object(members));
                        }
                        _ => return None,
                    }
                }
            }
            b'[' => {
                if depth >= SCAN_DEPTH {
                    return None;
                }
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.b.get(self.i) == Some(&b']') {
                    self.i += 1;
                    return Some(ArgValue::Array(items));
                }
                loop {
                    items.push(self.value(depth + 1)?);
                    self.ws();
                    match self.b.get(self.i)? {
                        b',' => self.i += 1,
                        b']' => {
                            self.i += 1;
                            return Some(ArgValue::Array(items));
                        }
                        _ => return None,
                    }
                }
            }
            b'"' => self.string(),
            b't' => self.word("true", ArgValue::Bool(true)),
            b'f' => self.word("false", ArgValue::Bool(false)),
            b'n' => self.word("null", ArgValue::Null),
            _ => {
                let start = self.i;
                while matches!(
                    self.b.get(self.i),
                    Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
                ) {
                    self.i += 1;
                }
                // The same number parser as a whole parse, on the number alone.
                match serde_json::from_str::<Value>(&self.text[start..self.i]).ok()? {
                    Value::Number(n) => Some(ArgValue::Number(n)),
                    _ => None,
                }
            }
        }
    }

    fn word(&mut self, word: &str, value: ArgValue<'a>) -> Option<ArgValue<'a>> {
        let end = self.i + word.len();
        if self.text.get(self.i..end)? != word {
            return None;
        }
        self.i = end;
        Some(value)
    }

    /// The string whose opening quote is at the current position: borrowed when it has no
    /// escape, [`ArgValue::Escaped`] when it has escapes but no `\u`; `None` for a `\u`.
    ///
    /// The text is valid JSON, so its end is found as the frame finds it (the first quote after
    /// an even run of backslashes). Code and JSON in arguments have an escape every few dozen
    /// bytes; finding quotes (rarer), then a backslash, then a `\u`, one pass each, costs a few
    /// calls of `memchr` per string rather than one per escape.
    fn string(&mut self) -> Option<ArgValue<'a>> {
        if self.b.get(self.i) != Some(&b'"') {
            return None;
        }
        let start = self.i + 1;
        let end = string_end(self.b, self.i)?;
        let close = end - 1;
        self.i = end;
        let contents = &self.text[start..close];
        let Some(first) = memchr::memchr(b'\\', contents.as_bytes()) else {
            return Some(ArgValue::Str(Cow::Borrowed(contents)));
        };
        // Without the two bytes `\u` side by side there is no `\u` escape. With them, they may
        // still be an escaped backslash before a `u`, which only walking the escapes tells.
        if BACKSLASH_U.find(&contents.as_bytes()[first..]).is_some() {
            let escapes = &contents.as_bytes()[first..];
            let mut at = 0;
            while let Some(found) = memchr::memchr(b'\\', &escapes[at..]) {
                at += found;
                if escapes.get(at + 1) == Some(&b'u') {
                    return None;
                }
                at += 2;
            }
        }
        Some(ArgValue::Escaped(contents))
    }
}

/// The index just past the string whose opening quote is at `open` in `text`, which is valid
/// JSON: the first quote after an even run of backslashes.
///
/// Quotes are rare in argument text, even in code, so looking for the next quote with `memchr`
/// reads a string about twice as fast as the frame's scan, which also checks every escape on the
/// way (the frame has checked this text already). Each escaped quote costs a call, though, so
/// after [`ESCAPED_QUOTES`] of them the rest of the string is left to the frame's scan: a string
/// of `\"` pairs costs no more than that scan. A backslash run ends at a quote, so each run is
/// counted once.
fn string_end(text: &[u8], open: usize) -> Option<usize> {
    let mut at = open + 1;
    for _ in 0..ESCAPED_QUOTES {
        let quote = at + memchr::memchr(b'"', text.get(at..)?)?;
        let run = text[at..quote].iter().rev().take_while(|&&byte| byte == b'\\').count();
        if run % 2 == 0 {
            return Some(quote + 1);
        }
        at = quote + 1;
    }
    // The escaped quote just passed is read as an opening one: its backslash is used up, so the
    // scan starts out of any escape, as the string does there.
    crate::frame::string_end(text, at - 1)
}

/// How many escaped quotes [`string_end`] steps over with `memchr` before it leaves the rest of
/// the string to the frame's scan.
const ESCAPED_QUOTES: usize = 64;

/// The two bytes `\u`, searched for in every string with an escape. Built once: `memmem::find`
/// builds its searcher (choosing rare bytes, a SIMD kernel) on every call, which costs more than
/// the search itself on a string of a few KiB.
static BACKSLASH_U: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\\u"));

/// Objects with more members than this look for a repeated key in a hash set rather than by
/// comparing with every member before.
const LINEAR_KEYS: usize = 16;

struct ViewSeed;

impl<'de> de::DeserializeSeed<'de> for ViewSeed {
    type Value = ArgValue<'de>;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<ArgValue<'de>, D::Error> {
        de.deserialize_any(ViewVisitor)
    }
}

struct ViewVisitor;

impl<'de> Visitor<'de> for ViewVisitor {
    type Value = ArgValue<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, b: bool) -> Result<ArgValue<'de>, E> {
        Ok(ArgValue::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<ArgValue<'de>, E> {
        Ok(ArgValue::Number(n.into()))
    }

    fn visit_u64<E>(self, n: u64) -> Result<ArgValue<'de>, E> {
        Ok(ArgValue::Number(n.into()))
    }

    fn visit_f64<E>(self, n: f64) -> Result<ArgValue<'de>, E> {
        Ok(serde_json::Number::from_f64(n).map_or(ArgValue::Null, ArgValue::Number))
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<ArgValue<'de>, E> {
        Ok(ArgValue::Str(Cow::Borrowed(s)))
    }

    fn visit_str<E>(self, s: &str) -> Result<ArgValue<'de>, E> {
        Ok(ArgValue::Str(Cow::Owned(s.to_owned())))
    }

    fn visit_string<E>(self, s: String) -> Result<ArgValue<'de>, E> {
        Ok(ArgValue::Str(Cow::Owned(s)))
    }

    fn visit_unit<E>(self) -> Result<ArgValue<'de>, E> {
        Ok(ArgValue::Null)
    }

    fn visit_none<E>(self) -> Result<ArgValue<'de>, E> {
        Ok(ArgValue::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ArgValue<'de>, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(ViewSeed)? {
            items.push(item);
        }
        Ok(ArgValue::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ArgValue<'de>, A::Error> {
        let mut members: Vec<(Cow<'de, str>, ArgValue<'de>)> = Vec::new();
        let mut seen: Option<HashSet<Cow<'de, str>>> = None;
        while let Some(key) = map.next_key_seed(KeySeed)? {
            // The value is read before the key is looked up, as `strict_value` does, so an
            // error names the same position.
            let value = map.next_value_seed(ViewSeed)?;
            let repeated = match &mut seen {
                Some(seen) => !seen.insert(key.clone()),
                None => members.iter().any(|(known, _)| *known == key),
            };
            if repeated {
                return Err(de::Error::custom(format_args!(
                    "key \"{key}\" appears more than once"
                )));
            }
            members.push((key, value));
            if seen.is_none() && members.len() > LINEAR_KEYS {
                seen = Some(members.iter().map(|(known, _)| known.clone()).collect());
            }
        }
        Ok(ArgValue::Object(members))
    }
}

struct KeySeed;

impl<'de> de::DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Cow<'de, str>, D::Error> {
        de.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(s))
    }

    fn visit_str<E>(self, s: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(s.to_owned()))
    }

    fn visit_string<E>(self, s: String) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_policy_text;

    const ANNOUNCEMENT: &str = r#"
# Block secret patterns everywhere (highest priority)
[[rules]]
id = "block-secrets"
priority = 1
effect = "deny"
identities = "*"
tools = "*"
arguments = [
{ param = "*", deny_regex = ["AKIA[A-Z0-9]{16}", "ghp_[a-zA-Z0-9]{36}"] },
]
# Developers can read, not delete
[[rules]]
id = "dev-read-tools"
priority = 100
effect = "allow"
identities = { labels = ["role:developer"] }
tools = ["read_file", "grep", "git_status"]
# Write only to safe paths, never to .env files
[[rules]]
id = "dev-write-safe"
priority = 110
effect = "allow"
identities = { labels = ["role:developer"] }
tools = ["write_file"]
arguments = [
{ param = "path", allow_glob = ["/tmp/**"], deny_regex = [".*\\.env$"] },
]"#;

    fn dev() -> Identity {
        Identity { principal: "psk:dev".to_owned(), labels: vec!["role:developer".to_owned()] }
    }

    #[track_caller]
    fn decide(
        policy: &Policy,
        identity: &Identity,
        tool: &str,
        args: &str,
    ) -> (Effect, Option<String>) {
        let (view, text) = ArgValue::scan_text(Raw::parse(args).unwrap()).unwrap();
        let args: Value = serde_json::from_str(args).unwrap();
        let decision =
            policy.decide(identity, Action::Tool { name: tool, arguments: Some(&args) }, 0);
        // The gateway's path: the borrowed view, no reason for an allow.
        let viewed = policy.judge(
            identity,
            Action::Tool { name: tool, arguments: None },
            Some(&view),
            text,
            0,
            false,
        );
        assert_eq!((viewed.effect, viewed.rule), (decision.effect, decision.rule));
        if decision.effect == Effect::Deny {
            assert_eq!(viewed.reason, decision.reason);
        }
        (decision.effect, decision.rule.map(str::to_owned))
    }

    #[track_caller]
    fn denied(policy: &Policy, tool: &str, args: &str) {
        assert_eq!(decide(policy, &dev(), tool, args).0, Effect::Deny, "{tool} {args}");
    }

    #[test]
    fn announcement_policy() {
        let policy = parse_policy_text(ANNOUNCEMENT);
        let rule = |r: &str| Some(r.to_owned());
        assert_eq!(
            decide(&policy, &dev(), "read_file", r#"{"path":"/etc/hosts"}"#),
            (Effect::Allow, rule("dev-read-tools"))
        );
        assert_eq!(
            decide(&policy, &dev(), "write_file", r#"{"path":"/tmp/a.txt","content":"x"}"#),
            (Effect::Allow, rule("dev-write-safe"))
        );
        assert_eq!(
            decide(&policy, &dev(), "delete_file", r#"{"path":"/tmp/a"}"#),
            (Effect::Deny, None)
        );
        assert_eq!(
            decide(&policy, &Identity::anonymous(), "read_file", r#"{}"#),
            (Effect::Deny, None)
        );
        assert_eq!(
            decide(
                &policy,
                &dev(),
                "read_file",
                r#"{"path":"/tmp/x","note":"AKIAABCDEFGHIJKLMNOP"}"#
            ),
            (Effect::Deny, rule("block-secrets"))
        );
    }

    #[test]
    fn no_bypasses() {
        let policy = parse_policy_text(ANNOUNCEMENT);
        for args in [
            r#"{"path":"/tmp/../etc/passwd"}"#,
            r#"{"path":"/tmp/./../../etc/x"}"#,
            r#"{"path":"//etc/passwd"}"#,
            r#"{"content":"x"}"#,
            r#"{"path":7}"#,
            r#"{"path":["/tmp/a"]}"#,
            r#"{"path":{"p":"/tmp/a"}}"#,
            r#"{"path":"/tmp/a.env"}"#,
            r#"{"path":"/tmp/sub/.env"}"#,
        ] {
            denied(&policy, "write_file", args);
        }
        let secret = "ghp_abcdefghijklmnopqrstuvwxyz0123456789";
        for args in [
            format!(r#"{{"a":{{"b":{{"c":"{secret}"}}}}}}"#),
            format!(r#"{{"list":["x",["{secret}"]]}}"#),
            format!(r#"{{"map":{{"{secret}":1}}}}"#),
        ] {
            assert_eq!(
                decide(&policy, &dev(), "grep", &args),
                (Effect::Deny, Some("block-secrets".to_owned())),
                "{args}"
            );
        }
    }

    #[test]
    fn tool_visibility() {
        let policy = parse_policy_text(ANNOUNCEMENT);
        assert!(policy.may_call_tool(&dev(), "read_file"));
        assert!(policy.may_call_tool(&dev(), "write_file"));
        assert!(!policy.may_call_tool(&dev(), "delete_file"));
        assert!(!policy.may_call_tool(&Identity::anonymous(), "read_file"));
        let policy = parse_policy_text(
            "[[rules]]\nid = \"no-shell\"\npriority = 1\neffect = \"deny\"\nidentities = \"*\"\ntools = \"run_*\"\n\n[[rules]]\nid = \"all\"\npriority = 2\neffect = \"allow\"\nidentities = \"*\"\ntools = \"*\"\n",
        );
        assert!(!policy.may_call_tool(&dev(), "run_command"));
        assert!(policy.may_call_tool(&dev(), "add"));
    }

    #[test]
    fn rule_shapes() {
        let policy = parse_policy_text(
            "[[rules]]\nid = \"add\"\npriority = 5\neffect = \"allow\"\nidentities = { principals = [\"anonymous\"] }\ntools = \"add\"\narguments = [{ param = \"note\", max_length = 3 }]\n",
        );
        let anon = Identity::anonymous();
        assert_eq!(decide(&policy, &anon, "add", r#"{"note":"abc"}"#).0, Effect::Allow);
        assert_eq!(decide(&policy, &anon, "add", r#"{"note":"abcd"}"#).0, Effect::Deny);
        assert_eq!(decide(&policy, &dev(), "add", r#"{"note":"abc"}"#).0, Effect::Deny);
        assert_eq!(decide(&policy, &anon, "adder", r#"{"note":"abc"}"#).0, Effect::Deny);
    }

    #[test]
    fn argument_view_matches_strict_value() {
        let long_object = (0..40).map(|i| format!("\"k{i}\":{i}")).collect::<Vec<_>>().join(",");
        let texts = [
            r#"{"a":[1,{"b":"c"}],"d":null,"e":true,"f":-2,"g":1.5,"h":1e2}"#.to_owned(),
            r#"{"p\u0061th":"/tmp/\"x\"","":"","n":{"m":["\u00e9",[[]]]}}"#.to_owned(),
            r#"{"a":1,"a":2}"#.to_owned(),
            r#"{"x":{"p":1,"\u0070":2}}"#.to_owned(),
            r#"{"x":[{"y":1},{"y":2,"y":3}]}"#.to_owned(),
            format!("{{{long_object}}}"),
            format!("{{{long_object},\"k7\":0}}"),
            format!("{{{long_object},\"k39\":0}}"),
            format!("{}{}", "[".repeat(200), "]".repeat(200)),
            r#"{"a":1} x"#.to_owned(),
            r#"{"a":"#.to_owned(),
            "7".to_owned(),
        ];
        let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let nested_objects =
            |depth: usize| format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth));
        let more = [
            r#"{"s":"a\nb\t\"c\" \\ \/ \b\f\r","k\"ey":[true,false,null]}"#.to_owned(),
            r#"{"s":"\u0041KIA","t":"\ud83d\ude00"}"#.to_owned(),
            r#"{"s":"a\\u0041 \\\\u","t":"x\n\\\u0041"}"#.to_owned(),
            r#"{"s":"\\\"\\","\\u":"\"\\\\\""}"#.to_owned(),
            r#"{"a\n":1,"a\u000a":2}"#.to_owned(),
            r#"{"a\n":1,"a\n":2}"#.to_owned(),
            r#"{"n":[-0,0,1.0,-1.5e3,1E-2,18446744073709551615,-9223372036854775808,1e400]}"#
                .to_owned(),
            r#"{"n":123456789012345678901234567890}"#.to_owned(),
            r#" { "a" : [ 1 , { "b" : "c" } ] , "d" : { } , "e" : [ ] } "#.to_owned(),
            r#""just a string""#.to_owned(),
            "[1,2]".to_owned(),
            nested(99),
            nested(100),
            nested(101),
            nested(127),
            nested(128),
            nested(129),
            nested(300),
            nested_objects(100),
            nested_objects(128),
            nested_objects(129),
        ];
        for text in texts.iter().chain(&more) {
            let strict = crate::chain::strict_value(text);
            match (&strict, ArgValue::parse(text)) {
                (Ok(value), Ok(view)) => assert_eq!(&view.to_value(), value, "{text}"),
                (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "{text}"),
                (a, b) => panic!("{text}: {a:?} vs {b:?}"),
            }
            // The scan takes only what the frame accepted.
            let Some(raw) = Raw::parse(text) else { continue };
            match (&strict, ArgValue::scan(raw)) {
                (Ok(value), Ok(view)) => assert_eq!(&view.to_value(), value, "{text}"),
                (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "{text}"),
                (a, b) => panic!("{text}: {a:?} vs {b:?}"),
            }
        }
        let escaped = ArgValue::scan(Raw::parse(r#"{"p":"\/tmp\/a\n"}"#).unwrap()).unwrap();
        assert!(matches!(escaped.member("p"), Some(ArgValue::Escaped(_))));
        assert_eq!(escaped.member("p").unwrap().as_text().as_deref(), Some("/tmp/a\n"));
        // An escaped backslash before a `u` is no `\u` escape: still read by the scan.
        let windows = ArgValue::scan(Raw::parse(r#"{"p":"C:\\users"}"#).unwrap()).unwrap();
        assert!(matches!(windows.member("p"), Some(ArgValue::Escaped(r"C:\\users"))));
        let view = ArgValue::parse(r#"{"n":[1,"x"],"s":"ab"}"#).unwrap();
        let value: Value = serde_json::from_str(r#"{"n":[1,"x"],"s":"ab"}"#).unwrap();
        assert_eq!(view.member("n").unwrap().json_len(), value["n"].json_len());
        assert_eq!(view.member("s").unwrap().as_text().as_deref(), Some("ab"));
        assert!(view.member("t").is_none());
    }

    #[test]
    fn escaped_strings_are_still_checked() {
        let policy = parse_policy_text(ANNOUNCEMENT);
        let rule = |r: &str| Some(r.to_owned());
        // Escapes around and inside the secret and the path: decoded before matching.
        for args in [
            r#"{"path":"/tmp/x","note":"\nAKIAABCDEFGHIJKLMNOP\t"}"#,
            r#"{"path":"/tmp/x","note":"\"AKIA\u0041BCDEFGHIJKLMNOP"}"#,
            r#"{"path":"/tmp/x","n\tote":{"ghp_abcdefghijklmnopqrstuvwxyz0123456789\n":1}}"#,
        ] {
            assert_eq!(
                decide(&policy, &dev(), "write_file", args),
                (Effect::Deny, rule("block-secrets")),
                "{args}"
            );
        }
        for args in [
            r#"{"path":"\/tmp\/..\/etc\/passwd"}"#,
            r#"{"path":"\/tmp\/a.env"}"#,
            r#"{"path":"\/tmp\/a.\u0065nv"}"#,
            r#"{"path":"\/etc\/x\n"}"#,
        ] {
            denied(&policy, "write_file", args);
        }
        assert_eq!(
            decide(&policy, &dev(), "write_file", r#"{"path":"\/tmp\/a\tb","content":"x\ny"}"#),
            (Effect::Allow, rule("dev-write-safe"))
        );
        let short = parse_policy_text(
            "[[rules]]\nid = \"short\"\npriority = 1\neffect = \"allow\"\nidentities = \"*\"\ntools = \"*\"\narguments = [{ param = \"*\", max_length = 3 }]\n",
        );
        let anon = Identity::anonymous();
        assert_eq!(decide(&short, &anon, "t", r#"{"a":"\n\n\n"}"#).0, Effect::Allow);
        assert_eq!(decide(&short, &anon, "t", r#"{"a":"\n\n\n\n"}"#).0, Effect::Deny);
        assert_eq!(decide(&short, &anon, "t", r#"{"a":"ab\n"}"#).0, Effect::Allow);
        assert_eq!(decide(&short, &anon, "t", r#"{"a":"ab\nc"}"#).0, Effect::Deny);
    }

    #[test]
    fn regex_literals() {
        assert_eq!(required_literal("AKIA[A-Z0-9]{16}").as_deref(), Some("AKIA"));
        assert_eq!(required_literal("ghp_[a-zA-Z0-9]{36}").as_deref(), Some("ghp_"));
        assert_eq!(required_literal(".*\\.env$").as_deref(), Some(".env"));
        assert_eq!(required_literal("^/etc/").as_deref(), Some("/etc/"));
        assert_eq!(required_literal("colou?r").as_deref(), Some("colo"));
        assert_eq!(required_literal("abc*").as_deref(), Some("ab"));
        assert_eq!(required_literal("a|b"), None);
        assert_eq!(required_literal("(?i)akia"), None);
        assert_eq!(required_literal("[0-9]+"), None);
        assert_eq!(required_literal("\\d{4}"), None);
        let deny = DenyRegex::new(Regex::new(".*\\.env$").unwrap());
        assert!(deny.is_match("/tmp/a.env"));
        assert!(!deny.is_match("/tmp/a.envy"));
        assert!(!deny.is_match("/tmp/a.txt"));
    }

    #[test]
    fn windows() {
        // 2026-11-23 is a Monday; 1_795_392_000 is 2026-11-23T00:00:00Z.
        let monday = 1_795_392_000;
        let office = Window { minutes: Some((9 * 60, 17 * 60)), days: Some(0b1_1111) };
        assert!(office.contains(monday + 9 * 3600));
        assert!(!office.contains(monday + 17 * 3600));
        assert!(!office.contains(monday + 5 * 86_400 + 10 * 3600));
        let night = Window { minutes: Some((22 * 60, 6 * 60)), days: None };
        assert!(night.contains(monday + 23 * 3600));
        assert!(night.contains(monday + 3600));
        assert!(!night.contains(monday + 12 * 3600));
    }

    /// The strings' end as `memchr` finds it is the frame's, for strings thick with quotes and
    /// backslashes, short and long (past the escaped quotes it steps over itself), followed by
    /// more JSON.
    #[test]
    fn string_end_agrees_with_the_frame() {
        let mut rng = crate::testing::Rng(0x2545_F491_4F6C_DD1D);
        let mut next = move |n: usize| rng.below(n);
        let pieces = ["\"", "\\", "\\\\", "a", "é", "\n", "u", "\u{1}", "x\"y", "  "];
        for round in 0..4000 {
            let len = if round % 10 == 0 { 200 + next(400) } else { next(12) };
            let text: String = (0..len).map(|_| pieces[next(pieces.len())]).collect();
            let json = serde_json::to_string(&text).unwrap();
            let line = format!("{json},\"\\\"\":[\"\\\\\"]");
            let b = line.as_bytes();
            assert_eq!(string_end(b, 0), Some(json.len()), "{json}");
            assert_eq!(string_end(b, 0), crate::frame::string_end(b, 0), "{json}");
        }
        // Past ESCAPED_QUOTES escaped quotes, with backslash runs of every parity around them.
        for run in 0..4 {
            let text = format!("{}\"", "\\".repeat(run)).repeat(3 * ESCAPED_QUOTES);
            let json = serde_json::to_string(&text).unwrap();
            assert_eq!(string_end(format!("{json}]").as_bytes(), 0), Some(json.len()));
        }
        assert_eq!(string_end(b"\"no end", 0), None);
    }

    /// Ruling regexes out on the arguments' whole text never changes a decision: arguments
    /// built from pieces of the literals, escapes (`\u` among them) and near misses are decided
    /// alike through the view with its text and through a `Value` (see `decide`).
    #[test]
    fn the_literal_prefilter_on_the_whole_text_never_changes_a_decision() {
        let policy = parse_policy_text(
            r#"
[[rules]]
id = "secrets"
priority = 1
effect = "deny"
identities = "*"
tools = "*"
arguments = [{ param = "*", deny_regex = ["AKIA[A-Z0-9]{4}", "xox[bp]-", "\\.ssh/", "a\"b"] }]
[[rules]]
id = "rest"
priority = 2
effect = "allow"
identities = "*"
tools = "*"
"#,
        );
        let mut rng = crate::testing::Rng(0x9E37_79B9_7F4A_7C15);
        let mut next = move |n: usize| rng.below(n);
        let pieces = [
            "AKIA", "AKI", "A", "KIA", "\\u0041", "\\u004b", "Z9Q1", "xox", "b-", "p", "-", "\\/",
            ".ssh", "/", "a", "\\\"", "b", "\\\\", "\\n", "q", " ",
        ];
        let mut denied = 0;
        for _ in 0..3000 {
            let strings = [(); 2].map(|()| {
                let parts: String = (0..next(8)).map(|_| pieces[next(pieces.len())]).collect();
                format!("\"{parts}\"")
            });
            let [a, b] = strings;
            let args = match next(3) {
                0 => format!("{{{a}:{b}}}"),
                1 => format!("{{\"k\":[{a},{{{b}:1}}]}}"),
                _ => format!("{{\"k\":{a},\"l\":{b}}}"),
            };
            if serde_json::from_str::<Value>(&args).is_err() {
                continue;
            }
            if decide(&policy, &dev(), "t", &args).0 == Effect::Deny {
                denied += 1;
            }
        }
        assert!(denied > 100, "only {denied} denials: the test no longer tries hits");
    }
}
