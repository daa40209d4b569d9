//! mcpdome: a security gateway for the Model Context Protocol on stdio.
//!
//! # Bird's-eye view
//!
//! A client host starts `mcpdome proxy -- <server command>` instead of the server. mcpdome
//! starts the server and relays newline-delimited JSON-RPC both ways. Every line is read once,
//! size-checked, parsed once into a borrowed view ([`frame::Msg`]), passed through a flat array
//! of interceptor functions ([`chain`]), and then either forwarded as the exact bytes that came
//! in, or refused with a JSON-RPC error that carries the sender's id.
//!
//! ```text
//! agent ─stdin─▶ [inbound]  frame::parse ─▶ chain::INBOUND  ─ok─▶ upstream stdin   (original bytes)
//! upstream ─out▶ [outbound] frame::parse ─▶ chain::OUTBOUND ─ok─▶ agent stdout     (original bytes)
//!                           either chain ─deny─▶ JSON-RPC error ─▶ the sender
//! ```
//!
//! # Code map, in reading order
//!
//! - [`cli`]: the command line into `Args`; no I/O.
//! - [`config`]: `Args` into the immutable [`config::Config`].
//! - [`error`]: start-up errors (exit status 2).
//! - [`log`]: one line per event on stderr; stdout is MCP only.
//! - [`frame`]: bytes into lines into message views; every way a line can be wrong.
//! - [`chain`]: the interceptor arrays and the one function that words a refusal.
//! - [`gate`]: [`gate::Gate`], the state both threads share: writers and open requests.
//! - [`relay`]: the two relay threads and the shutdown sequence.
//! - [`upstream`]: the server process: spawn, wait, SIGTERM, SIGKILL.
//! - [`signal`]: POSIX signals, one of the three places with unsafe code (the others are the
//!   frame's SSE2 string scan and the normalizer's SSE2 survey, sixteen bytes per load).
//! - [`audit`]: `mcpdome audit`, a ledger summarised for people (or `--json`), chain verified.
//! - [`wrap`]: `mcpdome wrap`, an MCP client's config edited so its servers run through us.
//! - [`demo`]: `mcpdome demo`, a scripted agent against a built-in server through the gateway.
//! - [`fuzz`]: entry points for the fuzz targets and their replay tests.
//!
//! # Invariants
//!
//! - stdout carries MCP and nothing else; every write to a peer is one whole line under one lock.
//! - Never hold two locks; never hold a lock across a read.
//! - A line that is allowed is forwarded byte for byte; nothing is re-serialised.
//! - A refused request is always answered, and an open request is answered exactly once, even
//!   when the upstream dies.
//! - Nothing built from untrusted bytes panics. A panic anywhere aborts the process
//!   (`panic = "abort"`), so a dead thread can never leave the other one relaying unchecked.

#![deny(unsafe_code)]

pub mod log;

pub mod cli;
pub mod config;
pub mod error;
pub mod frame;
pub mod chain;
pub mod gate;
pub mod glob;
pub mod policy;
pub mod auth;
pub mod throttle;
pub mod normalize;
pub mod scan;
pub mod ledger;
pub mod pin;
pub mod ward;
pub mod relay;
pub mod upstream;
pub mod signal;
pub mod audit;
pub mod wrap;
pub mod demo;
pub mod fuzz;

/// What the unit tests share.
#[cfg(test)]
pub(crate) mod testing {
    /// A small deterministic generator (xorshift), so that property tests need no dependency.
    pub(crate) struct Rng(pub(crate) u64);

    impl Rng {
        pub(crate) fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        /// A number below `n`.
        pub(crate) fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        pub(crate) fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            items[self.below(items.len())]
        }
    }
}
