//! The interceptor chain: which checks a message passes through, and how a refusal is worded on
//! the wire.
//!
//! A check is a plain function. It returns `Err(Deny)` to refuse a message; that is a verdict,
//! not a failure of the gateway. The relay runs `INBOUND` on messages from the client and
//! `OUTBOUND` on messages from the upstream, in order, stopping at the first `Deny`. New
//! behaviour is a new function in one of these arrays.
//!
//! The arrays are empty in this version: mcpdome relays transparently, checking only framing
//! (in `frame`) and request bookkeeping (in `relay`). Identity, throttle, policy, ward and pin
//! checks slot in here, in that order.

use crate::frame::Msg;
use crate::gate::Gate;

pub type Check = fn(&Gate, &Msg<'_>) -> Result<(), Deny>;

/// Checks on client → upstream messages.
pub const INBOUND: &[Check] = &[];

/// Checks on upstream → client messages.
pub const OUTBOUND: &[Check] = &[];

/// A refusal: the JSON-RPC error code and the reason given to the sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deny {
    pub code: i32,
    pub reason: String,
}

pub fn run(checks: &[Check], gate: &Gate, msg: &Msg<'_>) -> Result<(), Deny> {
    for check in checks {
        check(gate, msg)?;
    }
    Ok(())
}

/// The upstream is gone (exited, crashed or stopped reading) and cannot answer. The same code
/// the TypeScript SDK uses for a closed connection.
pub const UPSTREAM_GONE: i32 = -32000;

/// The one place a refusal becomes bytes: a JSON-RPC error response line for `id` (JSON text;
/// `None` gives `null`, for lines whose id could not be read).
pub fn error_line(id: Option<&str>, code: i32, reason: &str) -> Vec<u8> {
    let message = serde_json::Value::String(format!("mcpdome: {reason}"));
    format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":{},\"error\":{{\"code\":{code},\"message\":{message}}}}}\n",
        id.unwrap_or("null")
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
