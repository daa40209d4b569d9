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

use std::fmt;

use regex_lite::Regex;
use serde_json::Value;

use crate::auth::Identity;
use crate::chain::{Ctx, Deny, INVALID_PARAMS, POLICY_DENIED};
use crate::frame::Kind;
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
}

impl DenyRegex {
    pub fn new(regex: Regex) -> DenyRegex {
        let literal = required_literal(regex.as_str())
            .map(|lit| memchr::memmem::Finder::new(lit.as_bytes()).into_owned());
        DenyRegex { regex, literal }
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

impl Action<'_> {
    /// The name a decision is recorded under.
    pub fn name(&self) -> &str {
        match *self {
            Action::Tool { name, .. } | Action::Prompt { name, .. } | Action::Method { name } => {
                name
            }
            Action::Resource { uri } => uri,
        }
    }

    fn arguments(&self) -> Option<&Value> {
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
            let violation = rule
                .arguments
                .iter()
                .find_map(|constraint| constraint.violation(action.arguments()));
            match (rule.effect, violation) {
                (Effect::Allow, None) => {
                    return Decision {
                        effect: Effect::Allow,
                        rule: Some(&rule.id),
                        reason: format!("allowed by rule \"{}\"", rule.id),
                    };
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
        let named = match action {
            Action::Resource { uri } => {
                names.as_ref().is_some_and(|names| names.0.iter().any(|glob| glob.matches_uri(uri)))
            }
            _ => names.as_ref().is_some_and(|names| names.matches(action.name())),
        };
        named
            && self.identities.matches(identity)
            && self.window.is_none_or(|window| window.contains(unix_secs))
    }
}

impl Constraint {
    /// `None` if satisfied, else why not.
    fn violation(&self, arguments: Option<&Value>) -> Option<String> {
        let param = &self.param;
        if param == "*" {
            let arguments = arguments?;
            return self
                .deny_hit(arguments)
                .map(|hit| format!("an argument matches deny_regex `{hit}`"))
                .or_else(|| {
                    let too_long = self
                        .max_length
                        .is_some_and(|max| any_string(arguments, &mut |s| s.chars().count() > max));
                    too_long.then(|| {
                        format!(
                            "an argument is longer than max_length {}",
                            self.max_length.unwrap_or(0)
                        )
                    })
                });
        }
        let Some(value) = arguments.and_then(|args| args.get(param)) else {
            return Some(format!("argument `{param}` is missing"));
        };
        if !self.allow_glob.is_empty() {
            let Value::String(text) = value else {
                return Some(format!("argument `{param}` is not a string"));
            };
            if !self.allow_glob.iter().any(|glob| glob.matches_path(text)) {
                return Some(format!("argument `{param}` is outside allow_glob"));
            }
        }
        if let Some(hit) = self.deny_hit(value) {
            return Some(format!("argument `{param}` matches deny_regex `{hit}`"));
        }
        if let Some(max) = self.max_length {
            let len = match value {
                Value::String(text) => text.chars().count(),
                other => other.to_string().len(),
            };
            if len > max {
                return Some(format!("argument `{param}` is longer than max_length {max}"));
            }
        }
        None
    }

    /// The first deny_regex that matches a string (or key) inside `value`.
    fn deny_hit(&self, value: &Value) -> Option<&str> {
        self.deny_regex
            .iter()
            .find(|regex| any_string(value, &mut |s| regex.is_match(s)))
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
pub fn check(_gate: &Gate, ctx: &mut Ctx<'_>) -> Result<(), Deny> {
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
    let arguments = if needs_arguments(policy, method) {
        let arguments = ctx.arguments()?;
        if arguments.as_ref().is_some_and(|args| !args.is_object()) {
            return Err(Deny::new(
                INVALID_PARAMS,
                format!("{method} needs params.arguments as an object"),
            ));
        }
        arguments
    } else {
        None
    };
    let action = match method {
        "tools/call" => Action::Tool {
            name: params.name.as_deref().ok_or_else(|| needs("name"))?,
            arguments: arguments.as_ref(),
        },
        "resources/read" | "resources/subscribe" => {
            Action::Resource { uri: params.uri.as_deref().ok_or_else(|| needs("uri"))? }
        }
        "prompts/get" => Action::Prompt {
            name: params.name.as_deref().ok_or_else(|| needs("name"))?,
            arguments: arguments.as_ref(),
        },
        other => Action::Method { name: other },
    };
    let tool = matches!(action, Action::Tool { .. }).then(|| action.name().to_owned());
    let anonymous = Identity::anonymous();
    let identity = ctx.identity.as_deref().unwrap_or(&anonymous);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let decision = policy.decide(identity, action, now);
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
        let args: Value = serde_json::from_str(args).unwrap();
        let decision =
            policy.decide(identity, Action::Tool { name: tool, arguments: Some(&args) }, 0);
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
}
