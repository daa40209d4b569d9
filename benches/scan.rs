//! The ward's scanner on its own: what `Scanner::scan_json_text` costs on the arguments of a
//! `tools/call` and on the result that echoes them, as the proxy scans them with
//! `--enable-ward`. No processes, no pipes: the figures are the scan, and the relay benches
//! (`relay`, and `../shared/bench`) put them in context.
//!
//! The arguments are the relay bench's (source code with an escape every 30 bytes or so); the
//! result is `{"content":[{"type":"text","text":<the arguments as JSON text>}],"isError":false}`,
//! the shape of a server that echoes what it read, which makes the scanner read JSON text inside
//! a string as well. Both must be clean: a finding fails the bench.
//!
//! `cargo bench --bench scan` takes a few seconds. Each figure is the best of several rounds,
//! which on a shared machine is the figure least disturbed by other work.

use std::process::ExitCode;
use std::time::Instant;

use mcpdome::scan::{Scanner, Target};
use serde_json::json;

#[path = "payload.rs"]
mod payload;

const SIZES: [usize; 3] = [200, 4 << 10, 64 << 10];
const ROUNDS: usize = 7;
/// Bytes scanned per round and size: enough for a stable figure, little enough for seconds.
const BYTES_PER_ROUND: usize = 8 << 20;

fn main() -> ExitCode {
    let started = Instant::now();
    let scanner = Scanner::builtin();
    println!("scanner built in {:.1} ms", started.elapsed().as_secs_f64() * 1e3);
    println!("{:>8}  {:<9} {:>8}  {:>10}  {:>8}", "args", "scanned", "bytes", "us/scan", "MB/s");
    for size in SIZES {
        let arguments = payload::arguments(size);
        let result =
            json!({"content": [{"type": "text", "text": arguments}], "isError": false}).to_string();
        for (what, text, target) in
            [("arguments", &arguments, Target::Request), ("result", &result, Target::Response)]
        {
            let findings = scanner.scan_json_text(text, target);
            if !findings.is_empty() {
                eprintln!("scan: benign {what} of {size} B flagged: {findings:?}");
                return ExitCode::FAILURE;
            }
            let n = (BYTES_PER_ROUND / text.len()).max(10);
            let mut best = f64::MAX;
            for _ in 0..ROUNDS {
                let t = Instant::now();
                for _ in 0..n {
                    std::hint::black_box(
                        scanner.scan_json_text(std::hint::black_box(text), target),
                    );
                }
                best = best.min(t.elapsed().as_secs_f64() / n as f64);
            }
            let us = best * 1e6;
            let mbs = text.len() as f64 / best / 1e6;
            println!("{size:>8}  {what:<9} {:>8}  {us:>10.2}  {mbs:>8.0}", text.len());
        }
    }
    ExitCode::SUCCESS
}
