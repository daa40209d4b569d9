//! End-to-end relay bench: what one `tools/call` round trip costs through mcpdome, next to what
//! it costs with no gateway at all and through the simplest relay that could possibly work.
//!
//! Three targets, measured in interleaved rounds so that drift on a shared machine hits all of
//! them alike:
//!
//! - `direct`: the echo server, spoken to directly. The baseline.
//! - `floor`: a bare two-thread line relay in front of the echo server (`read_until` +
//!   `write_all`, no parsing). Any gateway that looks at whole messages pays at least this, so
//!   mcpdome's added latency is judged against the floor's added latency, not against zero.
//! - `mcpdome`: the real binary, `mcpdome proxy -- <echo server>`.
//!
//! The echo server and the floor relay are this same executable, re-executed with
//! `MCPDOME_BENCH_ROLE` set to `echo` or `floor`, so the bench needs nothing but std and
//! serde_json. The echo server answers `initialize`, `tools/list` and `ping`, and answers each
//! `tools/call` with a text result that is the call's `arguments` re-serialized, as a real server
//! that reads its input would.
//!
//! Each call is ping-pong (one request in flight). The clock starts before the one `write_all` of
//! the request line and stops when the response line is read; checking the response (id, shape,
//! and that the text is the arguments we sent) happens after the clock stops. A wrong answer
//! fails the bench with exit status 1; slowness never does.
//!
//! CPU per message is the on-CPU time of the relay process alone (every thread's
//! `/proc/<pid>/task/*/schedstat`) over the measured calls, divided by the calls: one request
//! and its response, as the shared harness counts it. For `direct` it is the echo server's own
//! cost, for reference.
//!
//! This is a local, self-contained view. The shared harness (`../shared/bench`, `mcpbench`) is
//! the authoritative instrument and also measures pipelined throughput; see benches/README.
//!
//! `cargo bench --bench relay` runs for 20 to 40 s; `MCPDOME_BENCH_QUICK=1` or
//! `cargo bench --bench relay -- --quick` runs in seconds, for CI.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::AsFd;
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

#[path = "payload.rs"]
mod payload;
use payload::arguments;

/// Selects what this executable is when it is re-executed: `echo` or `floor`.
const ROLE: &str = "MCPDOME_BENCH_ROLE";

/// The mcpdome binary under test; cargo builds it with the bench profile.
const MCPDOME: &str = env!("CARGO_BIN_EXE_mcpdome");

/// Size in bytes of the serialized `arguments` object of each `tools/call`.
const SIZES: [usize; 3] = [200, 4 << 10, 64 << 10];

/// A response later than this means a target is stuck: the bench reports it and fails.
const STALL: Duration = Duration::from_secs(20);

fn main() -> ExitCode {
    match std::env::var(ROLE).as_deref() {
        Ok("echo") => echo_server(),
        Ok("floor") => floor_relay(),
        Ok(other) => {
            eprintln!("relay bench: unknown {ROLE}={other:?}");
            ExitCode::from(2)
        }
        Err(_) => drive(),
    }
}

// ---------------------------------------------------------------------------------------------
// Driver

/// How much to measure.
struct Plan {
    /// Unmeasured calls per target per size.
    warmup: usize,
    /// Interleaved rounds per size.
    rounds: usize,
    /// Measured calls per target per round.
    calls: usize,
}

const FULL: Plan = Plan { warmup: 1000, rounds: 30, calls: 1000 };

const QUICK: Plan = Plan { warmup: 200, rounds: 8, calls: 250 };

/// The three targets, in table order; `direct` must stay first (it is the baseline).
const TARGETS: [&str; 3] = ["direct", "floor", "mcpdome"];

fn drive() -> ExitCode {
    // cargo passes `--bench`; anything else but `--quick` is ignored too, like libtest filters.
    let quick = std::env::var("MCPDOME_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0")
        || std::env::args().any(|arg| arg == "--quick");
    let plan = if quick { QUICK } else { FULL };
    let exe = std::env::current_exe().expect("the bench knows its own path");

    let progress = Arc::new(AtomicU64::new(0));
    watchdog(Arc::clone(&progress));

    println!(
        "relay bench: tools/call ping-pong, {} rounds x {} calls per target per size, interleaved{}",
        plan.rounds,
        plan.calls,
        if quick { " (quick)" } else { "" }
    );
    println!("  mcpdome: {MCPDOME}");
    let started = Instant::now();
    let mut targets = Vec::new();
    for name in TARGETS {
        match Target::start(name, &exe) {
            Ok(target) => targets.push(target),
            Err(err) => {
                eprintln!("relay bench: {name}: {err}");
                return ExitCode::FAILURE;
            }
        }
    }

    let mut results = Vec::new();
    for size in SIZES {
        match measure(&mut targets, size, &plan, &progress) {
            Ok(result) => results.push(result),
            Err(err) => {
                eprintln!("relay bench: FAILED: {err}");
                return ExitCode::FAILURE;
            }
        }
    }
    let rss: Vec<(&str, Option<u64>)> =
        targets.iter().map(|t| (t.name, peak_rss_kib(t.child.id()))).collect();
    let mut failed = false;
    for target in targets {
        if let Err(err) = target.stop() {
            eprintln!("relay bench: FAILED: {err}");
            failed = true;
        }
    }

    report(&results, &rss);
    println!(
        "\nall {} responses checked: correct ({:.1} s)",
        progress.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64()
    );
    if failed {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// One running target: the process we talk to and our ends of its pipes.
struct Target {
    name: &'static str,
    child: Child,
    to: ChildStdin,
    from: BufReader<ChildStdout>,
    next_id: u64,
    line: Vec<u8>,
}

impl Target {
    fn start(name: &'static str, exe: &Path) -> Result<Target, String> {
        let mut command = match name {
            "direct" => {
                let mut command = Command::new(exe);
                command.env(ROLE, "echo");
                command
            }
            "floor" => {
                let mut command = Command::new(exe);
                command.env(ROLE, "floor").arg("--").arg(exe);
                command
            }
            "mcpdome" => {
                // mcpdome passes its environment on, so the upstream it starts is the echo server.
                let mut command = Command::new(MCPDOME);
                command.env(ROLE, "echo").arg("proxy").arg("--").arg(exe);
                command
            }
            _ => unreachable!("TARGETS names every target"),
        };
        command
            .env_remove("RUST_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = command.spawn().map_err(|err| format!("failed to start: {err}"))?;
        let to = child.stdin.take().expect("stdin was piped");
        let from =
            BufReader::with_capacity(1 << 16, child.stdout.take().expect("stdout was piped"));
        let mut target =
            Target { name, child, to, from, next_id: 0, line: Vec::with_capacity(1 << 18) };
        target.handshake()?;
        Ok(target)
    }

    /// `initialize`, then `notifications/initialized`, then `tools/list`, as a client does.
    fn handshake(&mut self) -> Result<(), String> {
        let init = json!({
            "jsonrpc": "2.0",
            "id": self.take_id(),
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "mcpdome-relay-bench", "version": "0"}
            }
        });
        let reply = self.call_value(&init)?;
        if reply["result"]["protocolVersion"] != "2025-06-18" {
            return Err(format!("{}: bad initialize reply: {reply}", self.name));
        }
        let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        self.send(format!("{initialized}\n").as_bytes())?;
        let list = json!({"jsonrpc": "2.0", "id": self.take_id(), "method": "tools/list"});
        let reply = self.call_value(&list)?;
        if reply["result"]["tools"][0]["name"] != "write_file" {
            return Err(format!("{}: bad tools/list reply: {reply}", self.name));
        }
        Ok(())
    }

    fn take_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn call_value(&mut self, request: &Value) -> Result<Value, String> {
        let id = request["id"].clone();
        self.send(format!("{request}\n").as_bytes())?;
        self.receive()?;
        let reply: Value = serde_json::from_slice(&self.line)
            .map_err(|err| format!("{}: reply is not JSON ({err})", self.name))?;
        if reply["jsonrpc"] != "2.0" || reply["id"] != id {
            return Err(format!("{}: reply does not match {request}: {reply}", self.name));
        }
        Ok(reply)
    }

    fn send(&mut self, line: &[u8]) -> Result<(), String> {
        self.to.write_all(line).map_err(|err| format!("{}: write failed: {err}", self.name))
    }

    fn receive(&mut self) -> Result<(), String> {
        self.line.clear();
        match self.from.read_until(b'\n', &mut self.line) {
            Ok(0) => Err(format!("{}: closed its stdout", self.name)),
            Ok(_) => Ok(()),
            Err(err) => Err(format!("{}: read failed: {err}", self.name)),
        }
    }

    /// One timed `tools/call`; the answer is checked after the clock stops.
    fn call(&mut self, call: &Call) -> Result<Duration, String> {
        let id = self.take_id();
        let request = call.request(id);
        let start = Instant::now();
        self.send(&request)?;
        self.receive()?;
        let elapsed = start.elapsed();
        call.check(self.name, id, &self.line)?;
        Ok(elapsed)
    }

    /// Closes the target's stdin, which ends the whole chain, and checks that it exits cleanly.
    fn stop(self) -> Result<(), String> {
        let Target { name, mut child, to, from, .. } = self;
        drop(to);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => return Err(format!("{name}: exited with {status} at EOF")),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Ok(None) => {
                    let _ = child.kill();
                    drop(from);
                    return Err(format!("{name}: still running 10 s after its stdin closed"));
                }
                Err(err) => return Err(format!("{name}: wait failed: {err}")),
            }
        }
    }
}

/// A `tools/call` request of a given size, and the text its answer must carry.
struct Call {
    /// The request line up to the id.
    head: Vec<u8>,
    /// The request line after the id, newline included.
    tail: Vec<u8>,
    /// The serialized `arguments`, which the echo server sends back as the result text.
    arguments: String,
}

impl Call {
    fn new(size: usize) -> Call {
        let arguments = arguments(size);
        let head = br#"{"jsonrpc":"2.0","id":"#.to_vec();
        let tail = format!(
            r#","method":"tools/call","params":{{"name":"write_file","arguments":{arguments}}}}}"#
        );
        let mut tail = tail.into_bytes();
        tail.push(b'\n');
        Call { head, tail, arguments }
    }

    fn request(&self, id: u64) -> Vec<u8> {
        let mut line = Vec::with_capacity(self.head.len() + 20 + self.tail.len());
        line.extend_from_slice(&self.head);
        line.extend_from_slice(id.to_string().as_bytes());
        line.extend_from_slice(&self.tail);
        line
    }

    fn check(&self, target: &str, id: u64, line: &[u8]) -> Result<(), String> {
        let wrong = |what: &str| {
            let shown = String::from_utf8_lossy(&line[..line.len().min(300)]).into_owned();
            Err(format!("{target}: response to id {id}: {what}: {shown}"))
        };
        let Ok(reply) = serde_json::from_slice::<Value>(line) else {
            return wrong("not JSON");
        };
        if reply["jsonrpc"] != "2.0" {
            return wrong("jsonrpc is not \"2.0\"");
        }
        if reply["id"] != id {
            return wrong("wrong id");
        }
        if reply.get("error").is_some() {
            return wrong("an error");
        }
        let content = &reply["result"]["content"][0];
        if content["type"] != "text" || reply["result"]["isError"] == true {
            return wrong("not a text result");
        }
        if content["text"].as_str() != Some(self.arguments.as_str()) {
            return wrong("the text is not the arguments that were sent");
        }
        Ok(())
    }
}

/// The results of one size.
struct SizeResult {
    size: usize,
    request_bytes: usize,
    /// Per target, in `TARGETS` order.
    targets: Vec<TargetResult>,
}

struct TargetResult {
    /// Pooled latencies of all measured calls, sorted, in µs.
    samples: Vec<f64>,
    /// p50 of each round, in µs, so that added latency can also be paired round by round.
    round_p50: Vec<f64>,
    /// On-CPU ns of the target's own process over the measured calls.
    cpu_ns: u64,
}

fn measure(
    targets: &mut [Target],
    size: usize,
    plan: &Plan,
    progress: &AtomicU64,
) -> Result<SizeResult, String> {
    let call = Call::new(size);
    for target in targets.iter_mut() {
        for _ in 0..plan.warmup {
            target.call(&call)?;
            progress.fetch_add(1, Ordering::Relaxed);
        }
    }
    let mut results: Vec<TargetResult> = targets
        .iter()
        .map(|_| TargetResult {
            samples: Vec::with_capacity(plan.rounds * plan.calls),
            round_p50: Vec::with_capacity(plan.rounds),
            cpu_ns: 0,
        })
        .collect();
    let mut round = Vec::with_capacity(plan.calls);
    for r in 0..plan.rounds {
        // Rotate the order, so no target is always first after the driver's own pause.
        for k in 0..targets.len() {
            let i = (r + k) % targets.len();
            let target = &mut targets[i];
            round.clear();
            let pid = target.child.id();
            let cpu_before = cpu_ns(pid);
            for _ in 0..plan.calls {
                let elapsed = target.call(&call)?;
                round.push(elapsed.as_secs_f64() * 1e6);
                progress.fetch_add(1, Ordering::Relaxed);
            }
            let cpu_after = cpu_ns(pid);
            let result = &mut results[i];
            result.cpu_ns += cpu_after.saturating_sub(cpu_before);
            round.sort_by(f64::total_cmp);
            result.round_p50.push(percentile(&round, 0.5));
            result.samples.extend_from_slice(&round);
        }
    }
    for result in &mut results {
        result.samples.sort_by(f64::total_cmp);
    }
    Ok(SizeResult { size, request_bytes: call.request(1).len(), targets: results })
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn report(results: &[SizeResult], rss: &[(&str, Option<u64>)]) {
    for result in results {
        let calls = result.targets[0].samples.len();
        println!(
            "\n== arguments {} B (request line {} B), {} measured calls per target; latency in µs ==",
            result.size, result.request_bytes, calls
        );
        println!(
            "{:<8} {:>8} {:>8} {:>8} {:>9} {:>16} {:>11}",
            "target", "p50", "p90", "p99", "+p50", "paired +p50", "cpu µs/msg"
        );
        let base = &result.targets[0];
        let base_p50 = percentile(&base.samples, 0.5);
        let mut added = Vec::new();
        for (name, target) in TARGETS.iter().zip(&result.targets) {
            let p50 = percentile(&target.samples, 0.5);
            let cpu = target.cpu_ns as f64 / 1e3 / target.samples.len() as f64;
            let (plus, paired) = if *name == "direct" {
                ("-".to_owned(), "-".to_owned())
            } else {
                let paired = median(
                    target.round_p50.iter().zip(&base.round_p50).map(|(t, b)| t - b).collect(),
                );
                added.push(p50 - base_p50);
                (format!("{:+.1}", p50 - base_p50), format!("{paired:+.1}"))
            };
            let cpu =
                if *name == "direct" { format!("({cpu:.1} echo)") } else { format!("{cpu:.1}") };
            println!(
                "{:<8} {:>8.1} {:>8.1} {:>8.1} {:>9} {:>16} {:>11}",
                name,
                p50,
                percentile(&target.samples, 0.9),
                percentile(&target.samples, 0.99),
                plus,
                paired,
                cpu
            );
        }
        let (floor, dome) = (added[0], added[1]);
        if floor > 0.0 {
            println!(
                "mcpdome added / floor added = {:.1} / {:.1} = {:.2}x",
                dome,
                floor,
                dome / floor
            );
        } else {
            println!("mcpdome added / floor added: n/a (the floor added {floor:.1} µs)");
        }
    }

    println!("\n== summary: p50 µs, added over direct, ratio ==");
    println!(
        "{:>9} {:>8} {:>8} {:>8} {:>9} {:>9} {:>7} {:>11} {:>11}",
        "args",
        "direct",
        "floor",
        "mcpdome",
        "+floor",
        "+mcpdome",
        "ratio",
        "floor cpu",
        "mcpdome cpu"
    );
    for result in results {
        let p50: Vec<f64> = result.targets.iter().map(|t| percentile(&t.samples, 0.5)).collect();
        let cpu: Vec<f64> =
            result.targets.iter().map(|t| t.cpu_ns as f64 / 1e3 / t.samples.len() as f64).collect();
        let (floor, dome) = (p50[1] - p50[0], p50[2] - p50[0]);
        let ratio = if floor > 0.0 { format!("{:.2}x", dome / floor) } else { "n/a".to_owned() };
        println!(
            "{:>9} {:>8.1} {:>8.1} {:>8.1} {:>+9.1} {:>+9.1} {:>7} {:>11.1} {:>11.1}",
            format!("{} B", result.size),
            p50[0],
            p50[1],
            p50[2],
            floor,
            dome,
            ratio,
            cpu[1],
            cpu[2]
        );
    }
    print!("\npeak RSS (VmHWM) of the target process:");
    for (name, kib) in rss {
        match kib {
            Some(kib) => print!("  {name} {kib} KiB"),
            None => print!("  {name} ?"),
        }
    }
    println!();
}

/// Fails the bench if no response arrives for `STALL`: a stuck target must not hang CI.
fn watchdog(progress: Arc<AtomicU64>) {
    std::thread::spawn(move || {
        let mut seen = progress.load(Ordering::Relaxed);
        let mut since = Instant::now();
        loop {
            std::thread::sleep(Duration::from_millis(250));
            let now = progress.load(Ordering::Relaxed);
            if now != seen {
                seen = now;
                since = Instant::now();
            } else if since.elapsed() > STALL {
                eprintln!("relay bench: FAILED: no response for {STALL:?}; a target is stuck");
                // Our pipes close as we exit, so every target sees EOF and ends.
                std::process::exit(1);
            }
        }
    });
}

/// On-CPU ns of every thread of `pid` (first field of each task's schedstat). A thread that
/// exits takes its time with it; the relays' threads live as long as the measurement.
fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|task| {
            let mut path = task.path();
            path.push("schedstat");
            let text = fs::read_to_string(path).ok()?;
            text.split_whitespace().next()?.parse::<u64>().ok()
        })
        .sum()
}

/// `VmHWM` of `pid` in KiB.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

// ---------------------------------------------------------------------------------------------
// Roles

/// Our own unbuffered handles on fds 0 and 1 (std's `Stdout` is line-buffered behind a lock).
fn stdio() -> (File, File) {
    let stdin = io::stdin().as_fd().try_clone_to_owned().expect("stdin is open");
    let stdout = io::stdout().as_fd().try_clone_to_owned().expect("stdout is open");
    (File::from(stdin), File::from(stdout))
}

/// A minimal MCP server: parses each line, answers requests, ignores notifications, exits at EOF.
/// Each answer is one `write_all` on an unbuffered fd.
fn echo_server() -> ExitCode {
    let (stdin, mut stdout) = stdio();
    let mut input = BufReader::with_capacity(1 << 16, stdin);
    let mut line = Vec::with_capacity(1 << 16);
    let mut out = Vec::with_capacity(1 << 16);
    loop {
        line.clear();
        match input.read_until(b'\n', &mut line) {
            Ok(0) => return ExitCode::SUCCESS,
            Ok(_) => {}
            Err(err) => {
                eprintln!("echo server: read failed: {err}");
                return ExitCode::FAILURE;
            }
        }
        let Some(reply) = answer(&line) else { continue };
        out.clear();
        serde_json::to_writer(&mut out, &reply).expect("a Value serializes");
        out.push(b'\n');
        if stdout.write_all(&out).is_err() {
            return ExitCode::SUCCESS;
        }
    }
}

fn answer(line: &[u8]) -> Option<Value> {
    let Ok(mut msg) = serde_json::from_slice::<Value>(line) else {
        return Some(
            json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32700, "message": "parse error"}}),
        );
    };
    let id = msg.get_mut("id")?.take();
    let method = msg.get("method")?.as_str()?;
    let result = match method {
        "initialize" => json!({
            "protocolVersion": "2025-06-18",
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "relay-bench-echo", "version": "0"}
        }),
        "ping" => json!({}),
        "tools/list" => json!({"tools": [{
            "name": "write_file",
            "description": "Writes a file.",
            "inputSchema": {
                "type": "object",
                "properties": {"path": {"type": "string"}, "content": {"type": "string"}},
                "required": ["path", "content"]
            }
        }]}),
        "tools/call" => {
            let text = msg["params"]["arguments"].to_string();
            json!({"content": [{"type": "text", "text": text}], "isError": false})
        }
        _ => {
            return Some(json!({
                "jsonrpc": "2.0", "id": id,
                "error": {"code": -32601, "message": format!("method not found: {method}")}
            }))
        }
    };
    Some(json!({"jsonrpc": "2.0", "id": id, "result": result}))
}

/// The physical floor: spawns the upstream given after `--` and copies whole lines both ways
/// with no parsing, `read_until` then one `write_all` on an unbuffered fd.
fn floor_relay() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip_while(|arg| arg != "--").skip(1).collect();
    let Some((program, args)) = argv.split_first() else {
        eprintln!("floor relay: usage: {ROLE}=floor <exe> -- <upstream argv>");
        return ExitCode::from(2);
    };
    let mut child = match Command::new(program)
        .args(args)
        .env(ROLE, "echo")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
    {
        Ok(child) => child,
        Err(err) => {
            eprintln!("floor relay: failed to start {program}: {err}");
            return ExitCode::FAILURE;
        }
    };
    let mut to_upstream = child.stdin.take().expect("stdin was piped");
    let from_upstream = child.stdout.take().expect("stdout was piped");
    let (client_in, mut client_out) = stdio();
    std::thread::spawn(move || {
        copy_lines(client_in, &mut to_upstream);
        // Dropping `to_upstream` here is the upstream's EOF.
    });
    copy_lines(from_upstream, &mut client_out);
    match child.wait() {
        Ok(status) if status.success() => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    }
}

fn copy_lines(from: impl io::Read, to: &mut impl Write) {
    let mut input = BufReader::with_capacity(1 << 16, from);
    let mut line = Vec::with_capacity(1 << 16);
    loop {
        line.clear();
        match input.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                if to.write_all(&line).is_err() {
                    return;
                }
            }
        }
    }
}
