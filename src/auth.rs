//! Identity: who is calling, from a pre-shared key.
//!
//! A key is looked for, in this order, in the gateway's environment (`MCPDOME_TOKEN`, for hosts
//! that start one gateway per server), in the `initialize` params (`_mcpdome_psk` or
//! `_mcpdome_api_key`; it then holds for the session), and in a request's
//! `_meta["mcpdome/token"]` (the stateless 2026-07-28 revision has no `initialize`). The first key
//! found decides. A key that matches no configured key is refused, never treated as anonymous;
//! no key at all is `anonymous`, which `[sentinel] allow_anonymous = false` refuses. Keys are
//! removed from every client message (notifications too) before it is forwarded, so the server
//! never sees them. Without a settings file mcpdome is a transparent relay and inspects nothing.
//!
//! The file stores SHA-256 digests of keys; a presented key is hashed and compared with every
//! configured digest in constant time, so timing tells nothing about which key came close.

use std::sync::Arc;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::chain::{Ctx, Deny, AUTH_FAILED};
use crate::frame::Kind;
use crate::gate::{Gate, Side};

/// Who is calling: `psk:<key_id>` (or `api_key:<key_id>`) with the key's labels, or
/// `anonymous` with none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub principal: String,
    pub labels: Vec<String>,
}

impl Identity {
    pub fn anonymous() -> Identity {
        Identity { principal: "anonymous".to_owned(), labels: Vec::new() }
    }
}

/// A configured key.
#[derive(Debug)]
pub struct Key {
    pub key_id: String,
    pub secret_sha256: [u8; 32],
    pub identity: Arc<Identity>,
}

/// The params fields that carry a key in `initialize`.
const INIT_KEY_FIELDS: [&str; 2] = ["_mcpdome_psk", "_mcpdome_api_key"];
/// The `_meta` field that carries a key on any request.
pub const META_KEY_FIELD: &str = "mcpdome/token";

/// Resolves the identity of a client request, strips any key from it, and refuses wrong keys
/// and (when so configured) anonymous callers.
pub fn check(gate: &Gate, ctx: &mut Ctx<'_>) -> Result<(), Deny> {
    if ctx.from != Side::Client || ctx.msg.kind == Kind::Response {
        return Ok(());
    }
    let settings = ctx.settings;
    if !settings.from_file {
        // No settings file: a transparent relay, which inspects nothing.
        return Ok(());
    }
    let is_initialize = ctx.msg.method() == "initialize";
    // Strip every key the message carries, whichever one decides.
    let (init_keys, meta_key) = strip_keys(ctx)?;
    let lookup = |token: &Value| -> Result<(Arc<Identity>, [u8; 32]), Deny> {
        let token =
            token.as_str().ok_or_else(|| Deny::new(AUTH_FAILED, "the key must be a string"))?;
        let digest = sha256(token.as_bytes());
        let identity = find_key(&settings.keys, &digest)
            .ok_or_else(|| Deny::new(AUTH_FAILED, "unknown key"))?;
        Ok((identity, digest))
    };
    // Every key the message carries must be right, and they must be one key: a wrong key next
    // to a right one is still a wrong key, and two right ones would leave the identity to
    // whichever field is read first.
    let mut presented = Vec::new();
    for token in init_keys.iter().chain(&meta_key) {
        presented.push(lookup(token)?);
    }
    if presented.windows(2).any(|pair| pair[0].1 != pair[1].1) {
        return Err(Deny::new(AUTH_FAILED, "the message carries two different keys"));
    }
    let (identity, session_key) = if let Some(digest) = gate.env_token_sha256() {
        // A key in the environment was put there by the host; it wins, but a wrong key in the
        // message is still refused. It is looked up in the settings in force, so a reload that
        // removes it takes effect at once.
        let identity = find_key(&settings.keys, digest)
            .ok_or_else(|| Deny::new(AUTH_FAILED, "MCPDOME_TOKEN matches no configured key"))?;
        (identity, None)
    } else if let Some((identity, digest)) = presented.into_iter().next() {
        // A key in `initialize` holds for the session; elsewhere, for this request.
        let session_key = (!init_keys.is_empty()).then_some(digest);
        (identity, session_key)
    } else if let Some(digest) = gate.session_key() {
        // The session's key is looked up again in the settings in force, so a reload that
        // changes its labels or removes it applies to open sessions too.
        let identity = find_key(&settings.keys, &digest).ok_or_else(|| {
            Deny::new(AUTH_FAILED, "the key this session started with is no longer configured")
        })?;
        (identity, None)
    } else {
        if !settings.allow_anonymous {
            return Err(Deny::new(
                AUTH_FAILED,
                "a key is required ([sentinel] allow_anonymous = false)",
            ));
        }
        (gate.anonymous(), None)
    };
    if is_initialize {
        // Recorded by the relay only when the request passes the whole chain, so a denied
        // initialize leaves no session behind.
        ctx.session_key = session_key;
    }
    ctx.identity = Some(identity);
    Ok(())
}

/// Removes `_mcpdome_psk`/`_mcpdome_api_key` from the params and `mcpdome/token` from their
/// `_meta`, returning them. Key names are compared after JSON unescaping, so an escaped
/// spelling is still a key.
fn strip_keys(ctx: &mut Ctx<'_>) -> Result<(Vec<Value>, Option<Value>), Deny> {
    let action = ctx.action()?;
    // `_meta` is small; anything that could spell the field, escaped or not, is looked at.
    let meta_may_carry =
        action.meta.is_some_and(|meta| meta.get().contains("mcpdome") || meta.get().contains('\\'));
    if !action.has_key_field && !meta_may_carry {
        return Ok((Vec::new(), None));
    }
    let (mut init_keys, mut meta_key) = (Vec::new(), None);
    if let Some(Value::Object(map)) = ctx.params_mut()? {
        init_keys.extend(INIT_KEY_FIELDS.iter().filter_map(|field| map.remove(*field)));
        if let Some(Value::Object(meta)) = map.get_mut("_meta") {
            meta_key = meta.remove(META_KEY_FIELD);
        }
    }
    ctx.changed |= !init_keys.is_empty() || meta_key.is_some();
    Ok((init_keys, meta_key))
}

/// The identity for a presented key's SHA-256, comparing against every configured digest.
pub fn find_key(keys: &[Key], digest: &[u8; 32]) -> Option<Arc<Identity>> {
    let mut found = None;
    for key in keys {
        // Look at every key and every byte, whatever matched before.
        if constant_time_eq(digest, &key.secret_sha256) {
            found = Some(Arc::clone(&key.identity));
        }
    }
    found
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&sha256(bytes))
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

pub fn parse_sha256_hex(text: &str) -> Option<[u8; 32]> {
    let text = text.as_bytes();
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (idx, pair) in text.chunks(2).enumerate() {
        let digit = |c: u8| (c as char).to_digit(16);
        out[idx] = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
    }
    Some(out)
}

/// A fresh 256-bit key from the kernel's random source, as 64 hex digits.
pub fn generate_key() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(hex(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let digest = sha256(b"abc");
        assert_eq!(
            hex(&digest),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(parse_sha256_hex(&hex(&digest)), Some(digest));
        assert_eq!(parse_sha256_hex("zz"), None);
        assert_eq!(parse_sha256_hex(&"g".repeat(64)), None);
    }

    #[test]
    fn keys() {
        let identity = Arc::new(Identity {
            principal: "psk:ci".to_owned(),
            labels: vec!["role:ci".to_owned()],
        });
        let keys = vec![Key {
            key_id: "ci".to_owned(),
            secret_sha256: sha256(b"s3cret"),
            identity: identity.clone(),
        }];
        assert_eq!(find_key(&keys, &sha256(b"s3cret")), Some(identity));
        assert_eq!(find_key(&keys, &sha256(b"s3cre")), None);
        assert_eq!(find_key(&keys, &sha256(b"")), None);
        let key = generate_key().unwrap();
        assert_eq!(key.len(), 64);
        assert_ne!(key, generate_key().unwrap());
    }
}
