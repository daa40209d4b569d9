//! mcpdome's one integration test crate. Most tests run the real binary with
//! `tests/data/fake_server.py` as its upstream and compare exact bytes on each pipe.
//!
//! - `relay`: forwarding, refusals and request bookkeeping while both peers are up.
//! - `lifecycle`: crash, client EOF, signals, and processes left behind.
//! - `cli`: help, version and usage errors.
//! - `chain`: identity, throttle, policy and hot reload, with config files.
//! - `ledger`: the audit log a session writes, and `verify-log` on it.
//! - `commands`: `validate`, `explain` and `keygen`.
//! - `newcomer`: `demo`, `wrap` and `audit`, and `--log-format json`.
//! - `ward`: what the ward refuses, redacts, removes and lets pass; `scan`.
//! - `pins`: schema pins against rug pulls; `pins list|diff|approve` and `hash-schema`.
//! - `faults`: a server that dies mid-line, hangs, floods or leaves its stdin open; a client
//!   that stops reading; mcpdome killed or stopped with requests in flight.
//! - `hostile`: malformed, ambiguous and oversized input from either peer, and the gateway's own
//!   files going bad, with every check on.

mod util;

mod relay;
mod lifecycle;
mod cli;
mod chain;
mod ledger;
mod commands;
mod ward;
mod pins;
mod newcomer;
mod faults;
mod hostile;

/// Both relay threads share one `&Gate`.
#[test]
fn gate_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<mcpdome::gate::Gate>();
}
