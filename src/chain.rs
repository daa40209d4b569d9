//! The interceptor chain: which checks a message passes through, what they share, and how a
//! refusal is worded on the wire.
//!
//! A check is a plain function of the gate and the message's [`Ctx`]. It returns `Err(Deny)` to
//! refuse the message; that is a verdict, not a failure of the gateway. The relay runs
//! [`INBOUND`] on messages from the client and [`OUTBOUND`] on messages from the upstream, in
//! order, stopping at the first `Deny`. New behaviour is a new function in one of these arrays.
//!
//! Checks look at the borrowed message view and, when they must, at its params parsed on demand
//! ([`Ctx::action`], [`Ctx::arguments`]). Parsing is strict: a key given twice anywhere the
//! gateway looks is refused, because the server might read the other copy. A check that must
//! change the message (strip a key, filter a list) edits [`Ctx::params_mut`] or
//! [`Ctx::result_mut`]; only then is the message re-serialised.

use std::borrow::Cow;
use std::cell::OnceCell;
use std::fmt;
use std::sync::Arc;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::auth::{self, Identity};
use crate::config::Settings;
use crate::frame::{Kind, Msg, Raw, INVALID_REQUEST};
use crate::gate::{Gate, Open, Side};
use crate::policy;
use crate::throttle;
use crate::ward;

pub type Check = fn(&Gate, &mut Ctx<'_>) -> Result<(), Deny>;

/// Checks on client → upstream messages: who (identity), how often (throttle), whether they may
/// (policy), what they carry (ward), and whether the tool is still the one pinned.
pub const INBOUND: &[Check] =
    &[auth::check, throttle::check, policy::check, ward::check, ward::check_pins];

/// Checks on upstream → client messages: the tools an identity may see (policy), pins, and what
/// results and definitions carry (ward).
/// The ward runs before the pins, so a poisoned definition is removed before trust on first use
/// could pin it.
pub const OUTBOUND: &[Check] = &[policy::filter_tools, ward::check, ward::check_pins];

// JSON-RPC error codes of refusals. -32000 to -32019 are ours (JSON-RPC's implementation range,
// minus -32001 (a timeout in the TypeScript SDK), -32002 (MCP's resource-not-found) and
// -32020..-32099, which MCP reserves).

/// The upstream is gone (exited, crashed or stopped reading) and cannot answer. The same code
/// the TypeScript SDK uses for a closed connection.
pub const UPSTREAM_GONE: i32 = -32000;
/// The key is wrong, or a key is required and none was given.
pub const AUTH_FAILED: i32 = -32010;
/// A rate limit or budget is exhausted; `data.retry_after_ms` says when to try again.
pub const RATE_LIMITED: i32 = -32011;
/// The policy does not allow this action for this identity.
pub const POLICY_DENIED: i32 = -32013;
/// The ward found injection, exfiltration, poisoning or a secret.
pub const WARD_BLOCKED: i32 = -32014;
/// The tool's definition changed since it was pinned (or is not pinned, with locked pins).
pub const PIN_DENIED: i32 = -32015;
/// The audit log could not be written, so the action is not taken.
pub const AUDIT_FAILED: i32 = -32016;
/// The upstream did not answer within the request timeout; mcpdome cancelled the request.
pub const REQUEST_TIMEOUT: i32 = -32017;
/// The params are not what the method needs (JSON-RPC's invalid params).
pub const INVALID_PARAMS: i32 = -32602;

/// A refusal: the JSON-RPC error code, the reason given to the sender, and what decided it.
#[derive(Debug, Clone, PartialEq)]
pub struct Deny {
    pub code: i32,
    pub reason: String,
    /// The rule id or limit that decided, for the ledger and `data.mcpdome.rule`.
    pub rule: Option<String>,
    /// Extra machine-readable fields for `error.data` (`retry_after_ms`).
    pub data: Option<Value>,
}

impl Deny {
    pub fn new(code: i32, reason: impl Into<String>) -> Deny {
        Deny { code, reason: reason.into(), rule: None, data: None }
    }

    pub fn invalid(reason: impl Into<String>) -> Deny {
        Deny::new(INVALID_REQUEST, reason)
    }
}

/// One message on its way through the chain.
pub struct Ctx<'a> {
    pub from: Side,
    pub msg: &'a Msg<'a>,
    /// The settings in force for this message (a reload swaps them between messages).
    pub settings: &'a Settings,
    /// For a response: the request it answers.
    pub request: Option<Open>,
    /// For a client request: who sent it (set by `auth::check`).
    pub identity: Option<Arc<Identity>>,
    /// Set on an `initialize` whose key should hold for the rest of the session.
    pub session_key: Option<[u8; 32]>,
    /// The rule that allowed the message, for the ledger.
    pub rule: Option<String>,
    /// The tool this message calls, for the ledger.
    pub tool: Option<Cow<'a, str>>,
    /// Whether a check changed params or result, so the message must be re-serialised.
    pub changed: bool,
    /// Whether a check found something worth a ledger line even though the message passes.
    pub flagged: bool,
    /// What a check found, for the ledger's `detail` (findings with excerpts, old and new pins).
    pub detail: Option<Value>,
    action: OnceCell<Result<ActionParams<'a>, Deny>>,
    params: Option<Option<Value>>,
    result: Option<Option<Value>>,
    error: Option<Option<Value>>,
}

/// What a `tools/call`, `resources/read` or `prompts/get` asks for, borrowed from the params.
#[derive(Debug, Default)]
pub struct ActionParams<'a> {
    pub name: Option<Cow<'a, str>>,
    pub uri: Option<Cow<'a, str>>,
    pub arguments: Option<Raw<'a>>,
    /// `_meta`, raw (where a per-request key travels).
    pub meta: Option<Raw<'a>>,
    /// Whether `_mcpdome_psk` or `_mcpdome_api_key` is present.
    pub has_key_field: bool,
}

impl<'a> ActionParams<'a> {
    /// Where a top-level member of the params goes: one of the four slots [`ActionParams::store`]
    /// fills, or none. A gateway key field is noted in `has_key_field` on the way.
    fn slot_of(&mut self, key: &str) -> Option<usize> {
        match key {
            "name" => Some(0),
            "uri" => Some(1),
            "arguments" => Some(2),
            "_meta" => Some(3),
            "_mcpdome_psk" | "_mcpdome_api_key" => {
                self.has_key_field = true;
                None
            }
            _ => None,
        }
    }

    /// Puts `raw` in `slot`; the error names a member that must be a string and is not.
    fn store(&mut self, slot: usize, raw: Raw<'a>) -> Result<(), &'static str> {
        match slot {
            0 => self.name = Some(string_of(raw.get()).ok_or("\"name\" must be a string")?),
            1 => self.uri = Some(string_of(raw.get()).ok_or("\"uri\" must be a string")?),
            2 => self.arguments = Some(raw).filter(|raw| raw.get() != "null"),
            _ => self.meta = Some(raw),
        }
        Ok(())
    }
}

impl<'a> Ctx<'a> {
    pub fn new(
        from: Side,
        msg: &'a Msg<'a>,
        settings: &'a Settings,
        request: Option<Open>,
    ) -> Ctx<'a> {
        Ctx {
            from,
            msg,
            settings,
            request,
            identity: None,
            session_key: None,
            rule: None,
            tool: None,
            changed: false,
            flagged: false,
            detail: None,
            action: OnceCell::new(),
            params: None,
            result: None,
            error: None,
        }
    }

    /// `name`, `uri` and `arguments` of the params, read without building a tree. A key given
    /// twice at this level is refused.
    /// Read once per message, however many checks ask.
    pub fn action(&self) -> Result<&ActionParams<'a>, Deny> {
        let action = self.action.get_or_init(|| {
            let Some(raw) = self.msg.params else { return Ok(ActionParams::default()) };
            if let Some(action) = plain_action(self.msg) {
                return Ok(action);
            }
            let mut de = serde_json::Deserializer::from_str(raw.get());
            de.deserialize_map(ActionVisitor).map_err(|err| Deny::invalid(format!("params: {err}")))
        });
        action.as_ref().map_err(Clone::clone)
    }

    /// The `arguments` of the params as a tree, strictly parsed (a key given twice at any depth
    /// is refused).
    pub fn arguments(&self) -> Result<Option<Value>, Deny> {
        match self.action()?.arguments {
            None => Ok(None),
            Some(raw) => strict_value(raw.get())
                .map(Some)
                .map_err(|err| Deny::invalid(format!("arguments: {err}"))),
        }
    }

    /// The params as a tree, for a check that changes them; mark `changed` after editing.
    pub fn params_mut(&mut self) -> Result<Option<&mut Value>, Deny> {
        tree(&mut self.params, self.msg.params, "params")
    }

    /// The result as a tree, for a check that changes it; mark `changed` after editing.
    pub fn result_mut(&mut self) -> Result<Option<&mut Value>, Deny> {
        tree(&mut self.result, self.msg.result, "result")
    }

    /// The error of an error response as a tree, for a check that changes it; mark `changed`
    /// after editing.
    pub fn error_mut(&mut self) -> Result<Option<&mut Value>, Deny> {
        tree(&mut self.error, self.msg.error, "error")
    }

    /// The message as it leaves the gateway when a check changed it. Only the JSON-RPC members
    /// are kept; members MCP does not define are dropped.
    pub fn rewritten(&self) -> Vec<u8> {
        let msg = self.msg;
        let mut out = Map::new();
        out.insert("jsonrpc".to_owned(), Value::String("2.0".to_owned()));
        if let Some(id) = msg.id {
            out.insert("id".to_owned(), serde_json::from_str(id.get()).unwrap_or(Value::Null));
        }
        if let Some(method) = &msg.method {
            out.insert("method".to_owned(), Value::String(method.to_string()));
        }
        let reparse = |raw: Option<Raw<'_>>| {
            raw.and_then(|raw| serde_json::from_str::<Value>(raw.get()).ok())
        };
        let params = match &self.params {
            Some(edited) => edited.clone(),
            None => reparse(msg.params),
        };
        if let Some(params) = params {
            out.insert("params".to_owned(), params);
        }
        if msg.kind == Kind::Response {
            match (&self.result, msg.error) {
                (_, Some(error)) => {
                    let error = match &self.error {
                        Some(edited) => edited.clone(),
                        None => reparse(Some(error)),
                    };
                    out.insert("error".to_owned(), error.unwrap_or(Value::Null));
                }
                (Some(edited), None) => {
                    out.insert("result".to_owned(), edited.clone().unwrap_or(Value::Null));
                }
                (None, None) => {
                    out.insert("result".to_owned(), reparse(msg.result).unwrap_or(Value::Null));
                }
            }
        }
        let mut line = serde_json::to_vec(&Value::Object(out)).expect("a Value always serialises");
        line.push(b'\n');
        line
    }
}

/// One member of the message as a tree, parsed strictly on first use and kept in `slot`.
fn tree<'s>(
    slot: &'s mut Option<Option<Value>>,
    raw: Option<Raw<'_>>,
    what: &str,
) -> Result<Option<&'s mut Value>, Deny> {
    if slot.is_none() {
        let parsed = raw
            .map(|raw| {
                strict_value(raw.get()).map_err(|err| Deny::invalid(format!("{what}: {err}")))
            })
            .transpose()?;
        *slot = Some(parsed);
    }
    Ok(slot.as_mut().and_then(Option::as_mut))
}

pub fn run(checks: &[Check], gate: &Gate, ctx: &mut Ctx<'_>) -> Result<(), Deny> {
    for check in checks {
        check(gate, ctx)?;
    }
    Ok(())
}

/// The one place a refusal becomes bytes: a JSON-RPC error response line for `id` (JSON text;
/// `None` gives `null`, for lines whose id could not be read).
pub fn error_line(id: Option<&str>, code: i32, reason: &str) -> Vec<u8> {
    deny_line(id, &Deny::new(code, reason))
}

/// A JSON-RPC error response for a [`Deny`]: `message` is the reason, and `data.mcpdome` carries
/// the rule and any extra fields when there are some.
pub fn deny_line(id: Option<&str>, deny: &Deny) -> Vec<u8> {
    let message = Value::String(format!("mcpdome: {}", deny.reason));
    let mut data = Map::new();
    if let Some(rule) = &deny.rule {
        data.insert("rule".to_owned(), Value::String(rule.clone()));
    }
    if let Some(Value::Object(extra)) = &deny.data {
        data.extend(extra.clone());
    }
    let data =
        if data.is_empty() { String::new() } else { format!(",\"data\":{}", Value::Object(data)) };
    format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":{},\"error\":{{\"code\":{},\"message\":{message}{data}}}}}\n",
        id.unwrap_or("null"),
        deny.code
    )
    .into_bytes()
}

/// Parses JSON into a `Value`, refusing an object that has a key twice, at any depth.
/// serde_json's recursion limit (128) still applies.
pub fn strict_value(text: &str) -> Result<Value, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = de::DeserializeSeed::deserialize(StrictSeed, &mut de)?;
    de.end()?;
    Ok(value)
}

struct StrictSeed;

impl<'de> de::DeserializeSeed<'de> for StrictSeed {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Value, D::Error> {
        de.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Value, E> {
        Ok(Value::from(n))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Value, E> {
        Ok(Value::from(n))
    }

    fn visit_f64<E>(self, n: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_owned()))
    }

    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(StrictSeed)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(StrictSeed)?;
            if out.contains_key(&key) {
                return Err(de::Error::custom(format_args!(
                    "key \"{key}\" appears more than once"
                )));
            }
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

struct ActionVisitor;

impl<'de> Visitor<'de> for ActionVisitor {
    type Value = ActionParams<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ActionParams<'de>, A::Error> {
        let mut out = ActionParams::default();
        let mut seen = [false; 4];
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            let Some(slot) = out.slot_of(&key) else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            if std::mem::replace(&mut seen[slot], true) {
                return Err(de::Error::custom(format_args!(
                    "key \"{key}\" appears more than once"
                )));
            }
            let raw = Raw::of_raw_value(map.next_value::<&'de RawValue>()?);
            out.store(slot, raw).map_err(de::Error::custom)?;
        }
        Ok(out)
    }
}

/// [`ActionVisitor`]'s reading of the params, from the members the frame noted while it checked
/// the line ([`Msg::params_members`]), so the arguments are not read a second time. `None` for
/// anything out of the common way (no params object, a key with an escape, a key given twice, a
/// name that is not a string), which is left to `ActionVisitor`, for the same verdict and the
/// same error.
fn plain_action<'a>(msg: &Msg<'a>) -> Option<ActionParams<'a>> {
    let mut out = ActionParams::default();
    let mut seen = [false; 4];
    let mut plain = true;
    msg.params_members(|key, raw| {
        let key = &key[1..key.len() - 1];
        if key.contains('\\') {
            plain = false;
            return false;
        }
        let Some(slot) = out.slot_of(key) else { return true };
        if std::mem::replace(&mut seen[slot], true) || out.store(slot, raw).is_err() {
            plain = false;
        }
        plain
    })?;
    plain.then_some(out)
}

/// The decoded text of a JSON string, borrowed unless it has escapes.
fn string_of(text: &str) -> Option<Cow<'_, str>> {
    let inner = text.strip_prefix('"')?.strip_suffix('"')?;
    if !inner.contains('\\') {
        return Some(Cow::Borrowed(inner));
    }
    serde_json::from_str::<String>(text).ok().map(Cow::Owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame;

    #[test]
    fn error_lines() {
        assert_eq!(
            error_line(Some("\"a\""), -32600, "key \"id\" appears more than once"),
            b"{\"jsonrpc\":\"2.0\",\"id\":\"a\",\"error\":{\"code\":-32600,\"message\":\"mcpdome: key \\\"id\\\" appears more than once\"}}\n"
        );
        assert_eq!(
            error_line(None, -32700, "message is not valid JSON"),
            b"{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32700,\"message\":\"mcpdome: message is not valid JSON\"}}\n"
        );
        let deny = Deny {
            code: RATE_LIMITED,
            reason: "slow down".to_owned(),
            rule: Some("per_tool".to_owned()),
            data: Some(serde_json::json!({"retry_after_ms": 250})),
        };
        assert_eq!(
            String::from_utf8(deny_line(Some("7"), &deny)).unwrap(),
            "{\"jsonrpc\":\"2.0\",\"id\":7,\"error\":{\"code\":-32011,\"message\":\"mcpdome: slow down\",\"data\":{\"retry_after_ms\":250,\"rule\":\"per_tool\"}}}\n"
        );
    }

    #[test]
    fn strict_parse() {
        assert_eq!(
            strict_value(r#"{"a":[1,{"b":"c"}],"d":null}"#).unwrap(),
            serde_json::json!({"a":[1,{"b":"c"}],"d":null})
        );
        assert_eq!(
            strict_value(r#"{"a":1,"a":2}"#).unwrap_err().to_string(),
            "key \"a\" appears more than once at line 1 column 13"
        );
        assert!(strict_value(r#"{"x":{"p":1,"\u0070":2}}"#).is_err());
        assert!(strict_value(&format!("{}{}", "[".repeat(200), "]".repeat(200))).is_err());
    }

    #[test]
    fn plain_action_agrees() {
        fn serde_view(text: &str) -> Result<ActionParams<'_>, String> {
            let mut de = serde_json::Deserializer::from_str(text);
            de.deserialize_map(ActionVisitor).map_err(|err| err.to_string())
        }
        let shape = |a: &ActionParams<'_>| {
            (
                a.name.as_deref().map(str::to_owned),
                a.uri.as_deref().map(str::to_owned),
                a.arguments.map(|r| r.get().to_owned()),
                a.meta.map(|r| r.get().to_owned()),
                a.has_key_field,
            )
        };
        let deep = format!("{}{}", "[".repeat(300), "]".repeat(300));
        let texts = [
            r#"{"name":"read_file","arguments":{"path":"/tmp"},"_meta":{}}"#.to_owned(),
            r#"{ "name" : "re\u0061d" , "arguments" : null , "x" : [1,{"name":2}] }"#.to_owned(),
            r#"{"uri":"file:///a","_mcpdome_psk":"k","_mcpdome_api_key":1}"#.to_owned(),
            r#"{"name":"a","name":"b"}"#.to_owned(),
            r#"{"name":7}"#.to_owned(),
            r#"{"uri":null}"#.to_owned(),
            r#"{"n\u0061me":"a","name":"b"}"#.to_owned(),
            r#"{"other":1,"other":2}"#.to_owned(),
            r#"{}"#.to_owned(),
            format!(r#"{{"name":"t","arguments":{{"a":{deep}}}}}"#),
            format!(r#"{{"name":"t","x":{deep}}}"#),
            format!(r#"{{"name":"t","_meta":{deep}}}"#),
        ];
        let line =
            |params: &str| format!(r#"{{"jsonrpc":"2.0","id":1,"method":"m","params":{params}}}"#);
        for text in &texts {
            let line = line(text);
            let msg = frame::parse(line.as_bytes()).unwrap();
            if let Some(fast) = plain_action(&msg) {
                let slow = serde_view(text).unwrap_or_else(|err| panic!("{text}: {err}"));
                assert_eq!(shape(&fast), shape(&slow), "{text}");
            }
        }
        let plain = |params: &str| {
            let line = line(params);
            plain_action(&frame::parse(line.as_bytes()).unwrap()).is_some()
        };
        assert!(!plain(r#"{"name":"a","name":"b"}"#));
        assert!(!plain(r#"{"name":7}"#));
        assert!(!plain(r#"{"n\u0061me":"a"}"#));
        assert!(!plain("null"));
        // More members than the frame keeps are read from the params again.
        let many = (0..20).map(|n| format!(r#""k{n}":{n}"#)).collect::<Vec<_>>().join(",");
        let many = line(&format!(r#"{{{many},"name":"t"}}"#));
        let msg = frame::parse(many.as_bytes()).unwrap();
        assert_eq!(plain_action(&msg).unwrap().name.as_deref(), Some("t"));
    }

    #[test]
    fn action_params() {
        let parse = |text: &str| {
            let mut de = serde_json::Deserializer::from_str(text);
            de.deserialize_map(ActionVisitor)
                .map(|a| (a.name.map(|n| n.into_owned()), a.arguments.map(|r| r.get().to_owned())))
        };
        assert_eq!(
            parse(r#"{"name":"read_file","arguments":{"path":"/tmp"},"_meta":{}}"#).unwrap(),
            (Some("read_file".to_owned()), Some(r#"{"path":"/tmp"}"#.to_owned()))
        );
        assert_eq!(parse(r#"{"name":"re\u0061d"}"#).unwrap(), (Some("read".to_owned()), None));
        assert!(parse(r#"{"name":"a","name":"b"}"#)
            .unwrap_err()
            .to_string()
            .starts_with("key \"name\" appears more than once"));
        assert!(parse(r#"{"name":7}"#).is_err());
    }
}
