//! Faults at either end of the relay, each through the real binary: a server that dies half way
//! through a line, never answers, floods, or exits with its stdin held open; a client that stops
//! reading; mcpdome itself killed or stopped with requests in flight.
//!
//! Every case checks that no process is left behind, that no message is lost or delivered twice,
//! and that whoever waits for an answer gets one (or a clear error).

use std::io::Write;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::thread;
use std::time::{Duration, Instant};

use crate::util::{
    assert_dies, assert_lines, echo, error, json, python, read_lines, read_log, request, result,
    round_trip, run_mcpdome, scratch, show, Proxy, TempDir, FAKE_SERVER, GRACE, MCPDOME, TIMEOUT,
};

/// `--request-timeout` for the timeout cases: short, so they stay fast.
const REQUEST_TIMEOUT: &str = "300ms";

/// The error code mcpdome answers a timed-out request with.
const TIMED_OUT: i32 = -32017;

/// The error code for an upstream that is gone.
const GONE: i32 = -32000;

/// Asks the fake server for its pid.
#[track_caller]
fn server_pid(proxy: &mut Proxy) -> u32 {
    proxy.send_line(&request("\"pid\"", "fake/pid"));
    let answer = json(&proxy.recv());
    assert_eq!(answer["id"], "pid", "{answer}");
    answer["result"]["pid"].as_u64().expect("fake/pid answers with a pid") as u32
}

/// Receives `n` lines and returns them sorted, for answers that come in no set order.
#[track_caller]
fn recv_sorted(proxy: &Proxy, n: usize) -> Vec<Vec<u8>> {
    let mut lines: Vec<Vec<u8>> = (0..n).map(|_| proxy.recv()).collect();
    lines.sort();
    lines
}

/// The server is SIGKILLed after writing half of an answer: the half line never reaches the
/// client, and each open request gets exactly one error.
#[test]
fn server_killed_mid_line() {
    let mut proxy = Proxy::start(&[], &[]);
    let server = server_pid(&mut proxy);
    proxy.send_line(&request("1", "fake/hold"));
    proxy.send_line(&request("\"two\"", "fake/hold"));
    round_trip(&mut proxy, "3", "ping");
    // Half of an answer to request 1, cut inside its result.
    proxy.send_line(
        r#"{"jsonrpc":"2.0","id":4,"method":"fake/die","params":{"out":"{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"pa"}}"#,
    );
    let reason = "the upstream server was killed by signal 9 before answering";
    let answers = recv_sorted(&proxy, 3);
    assert_lines(
        &answers,
        &[&error("\"two\"", GONE, reason), &error("1", GONE, reason), &error("4", GONE, reason)],
    );
    let finished = proxy.finish();
    finished.assert_exit(128 + 9);
    assert_dies(server);
}

/// A request the server never answers gets an error when its time runs out, the server is told
/// to cancel it, and its late answer is dropped. A request whose tool reports progress outlives
/// the timeout.
#[test]
fn server_that_never_answers() {
    let dir = scratch("server_that_never_answers");
    let log = dir.join("server.log");
    let mut proxy =
        Proxy::start(&["--request-timeout", REQUEST_TIMEOUT], &["--log", log.to_str().unwrap()]);
    let server = server_pid(&mut proxy);
    let started = Instant::now();
    let (hold, hold_str) = (request("1", "fake/hold"), request("\"s\"", "fake/hold"));
    proxy.send_line(&hold);
    proxy.send_line(&hold_str);
    let reason = |method: &str| {
        format!("the upstream server did not answer {method} within 300ms (request_timeout); the request was cancelled")
    };
    let answers = recv_sorted(&proxy, 2);
    let elapsed = started.elapsed();
    assert_lines(
        &answers,
        &[
            &error("\"s\"", TIMED_OUT, &reason("fake/hold")),
            &error("1", TIMED_OUT, &reason("fake/hold")),
        ],
    );
    assert!(elapsed >= Duration::from_millis(300), "timed out after {elapsed:?}");

    // The server answers both now: too late, so neither answer reaches the client.
    let release = request("2", "fake/release");
    proxy.send_line(&release);
    proxy.expect(&echo("2", &release));
    // The client's own cancellation of a request mcpdome already cancelled goes nowhere.
    let cancel = r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1}}"#;
    proxy.send_line(cancel);

    // Progress every 100ms for 600ms keeps a request alive past a 300ms timeout.
    let progress = r#"{"jsonrpc":"2.0","id":5,"method":"fake/progress","params":{"count":6,"every":0.1,"token":"tok","_meta":{"progressToken":"tok"}}}"#;
    proxy.send_line(progress);
    for n in 1..=6 {
        proxy.expect(&format!(
            r#"{{"jsonrpc":"2.0","method":"notifications/progress","params":{{"progressToken":"tok","progress":{n}}}}}"#
        ));
    }
    proxy.expect(&result("5", r#"{"progressed":6}"#));
    round_trip(&mut proxy, "6", "ping");
    proxy.close_stdin();
    let finished = proxy.finish();
    finished.assert_exit(0);
    assert_eq!(
        finished.stderr.matches("got no answer within 300ms").count(),
        2,
        "{}",
        finished.stderr
    );
    assert_dies(server);

    // The server was told to cancel both, with a reason; nothing else reached it.
    let mut logged: Vec<String> = read_log(&log)
        .iter()
        .map(|line| String::from_utf8(line.clone()).unwrap().trim_end().to_owned())
        .collect();
    let mut cancels: Vec<&String> =
        logged.iter().filter(|line| line.contains("notifications/cancelled")).collect();
    cancels.sort();
    let cancelled = |id: &str| {
        format!(
            r#"{{"jsonrpc":"2.0","method":"notifications/cancelled","params":{{"requestId":{id},"reason":"mcpdome: no answer within 300ms (request_timeout)"}}}}"#
        )
    };
    assert_eq!(cancels, [&cancelled("\"s\""), &cancelled("1")]);
    logged.retain(|line| !line.contains("notifications/cancelled"));
    assert_eq!(
        logged,
        [
            request("\"pid\"", "fake/pid"),
            hold,
            hold_str,
            release,
            progress.to_owned(),
            request("6", "ping")
        ]
    );
}

/// A server that stops reading its stdin: mcpdome's write of a request blocks, and so does the
/// cancellation of an earlier request that timed out, but later timeouts still answer the client.
#[test]
fn server_that_stops_reading_still_times_out() {
    let mut proxy = Proxy::start(&["--request-timeout", REQUEST_TIMEOUT], &[]);
    let server = server_pid(&mut proxy);
    let started = Instant::now();
    // The server sleeps without reading, then exits.
    proxy.send_line(
        r#"{"jsonrpc":"2.0","id":1,"method":"fake/exit","params":{"delay":2,"code":0}}"#,
    );
    thread::sleep(Duration::from_millis(200));
    // More than the pipe holds: mcpdome blocks writing it.
    let pad = "x".repeat(256 * 1024);
    proxy.send_line(&format!(
        r#"{{"jsonrpc":"2.0","id":2,"method":"fake/padded","params":{{"pad":"{pad}"}}}}"#
    ));
    let reason = |method: &str| {
        format!("the upstream server did not answer {method} within 300ms (request_timeout); the request was cancelled")
    };
    proxy.expect(&error("1", TIMED_OUT, &reason("fake/exit")));
    proxy.expect(&error("2", TIMED_OUT, &reason("fake/padded")));
    // Had the timer waited for the server to read, request 2 would have ended when the server
    // exited, with another error.
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(2), "the second timeout came after {elapsed:?}");
    proxy.close_stdin();
    proxy.finish().assert_exit(0);
    assert_dies(server);
}

/// A server that stops reading and then writes a request mcpdome refuses: the error reply waits
/// for the server to read, but the relay of its stdout goes on (mcpdome is blocked writing a
/// client request to it meanwhile, so a reply written in line would stall the relay for good).
#[test]
fn server_that_stops_reading_sends_a_bad_request() {
    let mut proxy = Proxy::start(&["--shutdown-grace", GRACE], &[]);
    let server = server_pid(&mut proxy);
    // Sent after the server stops reading, before it writes: a key given twice, refused with
    // an error the server is not reading.
    let bad = r#"{"jsonrpc":"2.0","id":"dup","method":"roots/list","method":"x"}"#;
    proxy.send_line(&format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"fake/deaf","params":{{"delay":0.3,"out":{},"n":200,"size":1024}}}}"#,
        serde_json::to_string(&format!("{bad}\n")).unwrap()
    ));
    let pad = "x".repeat(256 * 1024);
    proxy.send_line(&format!(
        r#"{{"jsonrpc":"2.0","id":2,"method":"fake/padded","params":{{"pad":"{pad}"}}}}"#
    ));
    let pad = "x".repeat(1024);
    for seq in 0..200 {
        proxy.expect(&format!(
            r#"{{"jsonrpc":"2.0","method":"notifications/message","params":{{"seq":{seq},"pad":"{pad}"}}}}"#
        ));
    }
    proxy.expect(&result("1", r#"{"sent":200}"#));
    // The client cannot end the session by closing stdin (mcpdome is not reading it while its
    // write to the server is blocked); it stops mcpdome instead.
    proxy.kill("TERM");
    let answer = json(&proxy.recv());
    assert_eq!((&answer["id"], &answer["error"]["code"]), (&2.into(), &GONE.into()), "{answer}");
    let finished = proxy.finish();
    finished.assert_exit(128 + 15);
    assert_dies(server);
}

/// mcpdome with its stdout handed to the test as a pipe, read only when the test says so.
struct Raw {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Option<ChildStdout>,
}

impl Raw {
    fn start(options: &[&str], server_flags: &[&str]) -> Raw {
        let mut child = Command::new(MCPDOME)
            .arg("proxy")
            .args(options)
            .arg("--")
            .args([python(), FAKE_SERVER])
            .args(server_flags)
            .env_remove("MCPDOME_TOKEN")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("failed to start mcpdome");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        Raw { child, stdin, stdout }
    }

    fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(format!("{line}\n").as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    /// Starts reading stdout: every line arrives on the receiver.
    fn read(&mut self) -> Receiver<Vec<u8>> {
        read_lines(self.stdout.take().expect("stdout not read yet"))
    }

    /// mcpdome's peak resident memory so far, in KiB.
    fn peak_kib(&self) -> u64 {
        peak_kib(self.child.id())
    }

    /// Waits for mcpdome to exit; returns its exit code (`None` for a signal).
    #[track_caller]
    fn wait(&mut self) -> Option<i32> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(Instant::now() < deadline, "mcpdome did not exit within {TIMEOUT:?}");
            thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `VmHWM` of a process, in KiB.
#[track_caller]
fn peak_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process status");
    let line = status.lines().find(|line| line.starts_with("VmHWM:")).expect("VmHWM");
    line.split_whitespace().nth(1).and_then(|kib| kib.parse().ok()).expect("VmHWM in kB")
}

/// The next line from `lines`, within [`TIMEOUT`].
#[track_caller]
fn next(lines: &Receiver<Vec<u8>>) -> Vec<u8> {
    lines.recv_timeout(TIMEOUT).expect("a line from mcpdome within the timeout")
}

/// Flood: 1500 lines of 32 KiB (48 MiB).
const FLOOD_LINES: u64 = 1500;
const FLOOD: &str =
    r#"{"jsonrpc":"2.0","id":"flood","method":"fake/flood","params":{"n":1500,"size":32768}}"#;

/// mcpdome must hold no more than this, whatever the server writes: the pipes' backpressure
/// stops the server while the client does not read.
const PEAK_LIMIT_KIB: u64 = 16 * 1024;

/// How long the tests leave a flood unread: time enough for unbounded buffering to show.
const STALL: Duration = Duration::from_millis(500);

#[test]
fn server_floods_a_slow_client() {
    let mut raw = Raw::start(&[], &[]);
    raw.send_line(FLOOD);
    thread::sleep(STALL);
    let stalled = raw.peak_kib();
    assert!(stalled < PEAK_LIMIT_KIB, "mcpdome holds {stalled} KiB while its client does not read");
    let lines = raw.read();
    let pad = "x".repeat(32768);
    for seq in 0..FLOOD_LINES {
        let line = next(&lines);
        let expected = format!(
            "{{\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{{\"seq\":{seq},\"pad\":\"{pad}\"}}}}\n"
        );
        assert!(
            line == expected.as_bytes(),
            "line {seq} is not the server's line {seq}: {}",
            show(&line[..80.min(line.len())])
        );
    }
    assert_lines(&[next(&lines)], &[&result(r#""flood""#, r#"{"sent":1500}"#)]);
    let peak = raw.peak_kib();
    assert!(peak < PEAK_LIMIT_KIB, "mcpdome held {peak} KiB relaying 48 MiB");
    raw.stdin.take();
    assert_eq!(raw.wait(), Some(0));
    assert!(lines.recv_timeout(TIMEOUT).is_err(), "a line after the last answer");
}

/// A client that stops reading holds the server back without mcpdome buffering; when it goes
/// away, mcpdome ends the server and exits.
#[test]
fn client_stops_reading_then_goes_away() {
    let mut raw = Raw::start(&["--shutdown-grace", GRACE], &[]);
    raw.send_line(&request("\"pid\"", "fake/pid"));
    raw.send_line(FLOOD);
    thread::sleep(STALL);
    let peak = raw.peak_kib();
    assert!(peak < PEAK_LIMIT_KIB, "mcpdome holds {peak} KiB while its client does not read");
    let lines = raw.read();
    let answer = json(&next(&lines));
    let server = answer["result"]["pid"].as_u64().expect("fake/pid answers with a pid") as u32;
    // The client reads one more line and goes away.
    next(&lines);
    drop(lines);
    // mcpdome stops reading the server, whose next write fails: Python exits 1 on the broken
    // pipe.
    assert_eq!(raw.wait(), Some(1));
    assert_dies(server);
}

/// SIGTERM while the client reads nothing: mcpdome cannot deliver the final answers, but it still
/// ends the server and exits.
#[test]
fn sigterm_while_the_client_is_not_reading() {
    let mut raw = Raw::start(&["--shutdown-grace", GRACE], &[]);
    raw.send_line(&request("\"pid\"", "fake/pid"));
    raw.send_line(&request("1", "fake/hold"));
    raw.send_line(FLOOD);
    thread::sleep(STALL);
    let status = Command::new("kill").args(["-TERM", &raw.child.id().to_string()]).status();
    assert!(status.unwrap().success());
    assert_eq!(raw.wait(), Some(128 + 15));
    let lines = raw.read();
    let answer = json(&next(&lines));
    let server = answer["result"]["pid"].as_u64().expect("fake/pid answers with a pid") as u32;
    assert_dies(server);
}

/// The server exits while a child it started still holds its stdin, and mcpdome is blocked
/// writing a request into that full pipe: it must still end, answer what is open, and leave
/// nothing behind.
#[test]
fn server_exits_with_its_stdin_still_open() {
    let dir = scratch("server_exits_with_its_stdin_still_open");
    let pidfile = dir.join("child.pid");
    let mut proxy = Proxy::start(&["--shutdown-grace", GRACE], &[]);
    proxy.send_line(&format!(
        r#"{{"jsonrpc":"2.0","id":"spawn","method":"fake/spawn","params":{{"pidfile":{},"keep_stdin":true}}}}"#,
        serde_json::to_string(pidfile.to_str().unwrap()).unwrap()
    ));
    let answer = json(&proxy.recv());
    let child = answer["result"]["pid"].as_u64().expect("child pid") as u32;
    let server = answer["result"]["parent"].as_u64().expect("server pid") as u32;
    proxy.send_line(
        r#"{"jsonrpc":"2.0","id":"exit","method":"fake/exit","params":{"delay":0.3,"code":7}}"#,
    );
    // More than the pipe holds, so mcpdome blocks writing it: nobody reads the server's stdin.
    let pad = "x".repeat(256 * 1024);
    proxy.send_line(&format!(
        r#"{{"jsonrpc":"2.0","id":10,"method":"fake/padded","params":{{"pad":"{pad}"}}}}"#
    ));
    let reason = "the upstream server exited with status 7 before answering";
    let mut answers = recv_sorted(&proxy, 2);
    // Request 10 may have been refused as undeliverable instead: the pipe broke under it.
    let undeliverable = error(
        "10",
        GONE,
        "the upstream server is not accepting messages (Broken pipe (os error 32))",
    );
    for answer in &mut answers {
        if *answer == format!("{undeliverable}\n").as_bytes() {
            *answer = format!("{}\n", error("10", GONE, reason)).into_bytes();
        }
    }
    assert_lines(&answers, &[&error("\"exit\"", GONE, reason), &error("10", GONE, reason)]);
    let finished = proxy.finish();
    finished.assert_exit(7);
    assert_dies(server);
    assert_dies(child);
}

/// `kill -9` of mcpdome: the kernel ends the server with it, and the audit log verifies.
#[test]
fn mcpdome_killed_with_sigkill() {
    let dir = scratch("mcpdome_killed_with_sigkill");
    let ledger = dir.join("audit.jsonl");
    let mut proxy = Proxy::start(&["--ledger", ledger.to_str().unwrap()], &[]);
    let server = server_pid(&mut proxy);
    for id in 1..=20 {
        round_trip(&mut proxy, &id.to_string(), "tools/list");
    }
    proxy.send_line(&request("21", "fake/hold"));
    proxy.kill("KILL");
    assert_dies(server);
    let out = run_mcpdome(&["verify-log", ledger.to_str().unwrap()]);
    let stdout = &out.stdout;
    assert_eq!(out.code, Some(0), "{stdout}{}", out.stderr);
    assert!(stdout.contains(": intact, "), "{stdout}");
    // A kill in the middle of a write leaves half a line: every whole line still verifies.
    let bytes = std::fs::read(&ledger).unwrap();
    let body = &bytes[..bytes.len() - 1];
    let last = body.iter().rposition(|&b| b == b'\n').map_or(0, |at| at + 1);
    std::fs::write(&ledger, &bytes[..last + (bytes.len() - last) / 2]).unwrap();
    let out = run_mcpdome(&["verify-log", ledger.to_str().unwrap()]);
    let stdout = &out.stdout;
    assert_eq!(out.code, Some(0), "{stdout}{}", out.stderr);
    assert!(stdout.contains("note: the last line is incomplete"), "{stdout}");
}

/// `[mcpdome] request_timeout` sets the timeout; `--request-timeout off` overrides it; a value
/// that is not a duration is a configuration error.
#[test]
fn request_timeout_from_the_settings_file() {
    let dir = TempDir::new("request_timeout_from_the_settings_file");
    let config = dir.write("mcpdome.toml", "[mcpdome]\nrequest_timeout = \"300ms\"\n");
    let config = config.to_str().unwrap();
    let mut proxy = Proxy::start(&["--config", config], &[]);
    proxy.send_line(&request("1", "fake/hold"));
    proxy.expect(&error(
        "1",
        TIMED_OUT,
        "the upstream server did not answer fake/hold within 300ms (request_timeout); the request was cancelled",
    ));
    proxy.close_stdin();
    proxy.finish().assert_exit(0);

    let mut proxy = Proxy::start(&["--config", config, "--request-timeout", "off"], &[]);
    let hold = request("1", "fake/hold");
    proxy.send_line(&hold);
    thread::sleep(Duration::from_millis(700));
    let release = request("2", "fake/release");
    proxy.send_line(&release);
    proxy.expect(&echo("1", &hold));
    proxy.expect(&echo("2", &release));
    proxy.close_stdin();
    proxy.finish().assert_exit(0);

    let bad = dir.write("bad.toml", "[mcpdome]\nrequest_timeout = \"soon\"\n");
    let out = run_mcpdome(&["validate", bad.to_str().unwrap()]);
    assert_eq!(out.code, Some(2));
    assert_eq!(
        out.stderr,
        format!(
            "{}:2:1: [mcpdome]: `request_timeout` must be a duration such as \"90s\" or \"10m\", or \"off\"; found \"soon\"\n{}: 1 error(s)\n",
            bad.display(),
            bad.display()
        )
    );
}

/// SIGTERM with requests in flight: each gets exactly one error, nothing else is written, and
/// the server is gone.
#[test]
fn sigterm_with_requests_in_flight() {
    let mut proxy = Proxy::start(&["--shutdown-grace", GRACE], &["--ignore-eof"]);
    let server = server_pid(&mut proxy);
    for id in ["1", "2", "\"three\"", "-4"] {
        proxy.send_line(&request(id, "fake/hold"));
    }
    round_trip(&mut proxy, "5", "ping");
    proxy.kill("TERM");
    let reason = "mcpdome was stopped by signal 15 before answering";
    let answers = recv_sorted(&proxy, 4);
    assert_lines(
        &answers,
        &[
            &error("\"three\"", GONE, reason),
            &error("-4", GONE, reason),
            &error("1", GONE, reason),
            &error("2", GONE, reason),
        ],
    );
    let finished = proxy.finish();
    finished.assert_exit(128 + 15);
    assert_dies(server);
}
