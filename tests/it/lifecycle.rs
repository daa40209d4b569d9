//! How a session ends: the upstream crashes, the client hangs up, or mcpdome is told to stop.
//! In every case each open request gets exactly one answer, mcpdome exits with the server's
//! status, and nothing the server started outlives it.

use std::path::Path;

use crate::util::{
    assert_dies, assert_lines, echo, error, read_pid, request, result, round_trip, scratch, Proxy,
    GRACE,
};

/// Asks the fake server to start a `sleep` that would outlive it; returns (sleep's pid, the
/// server's pid).
#[track_caller]
fn spawn_grandchild(proxy: &mut Proxy, dir: &Path, keep_stdout: bool) -> (u32, u32) {
    let pidfile = dir.join("grandchild.pid");
    proxy.send_line(&format!(
        r#"{{"jsonrpc":"2.0","id":"spawn","method":"fake/spawn","params":{{"pidfile":{},"keep_stdout":{keep_stdout}}}}}"#,
        serde_json::to_string(pidfile.to_str().unwrap()).unwrap()
    ));
    let line = proxy.recv();
    let answer: serde_json::Value = serde_json::from_slice(&line).expect("fake/spawn answer");
    let server = answer["result"]["parent"].as_u64().expect("parent pid") as u32;
    let grandchild = read_pid(&pidfile);
    assert_lines(
        &[line],
        &[&result(r#""spawn""#, &format!(r#"{{"pid":{grandchild},"parent":{server}}}"#))],
    );
    (grandchild, server)
}

#[test]
fn upstream_crash_answers_every_open_request() {
    let mut proxy = Proxy::start(&[], &[]);
    proxy.send_line(&request("1", "fake/hold"));
    proxy.send_line(&request("\"two\"", "fake/crash"));
    let reason = "the upstream server exited with status 3 before answering";
    // The open requests are answered in no particular order.
    let mut answers = vec![proxy.recv(), proxy.recv()];
    answers.sort();
    assert_lines(&answers, &[&error("\"two\"", -32000, reason), &error("1", -32000, reason)]);
    let finished = proxy.finish();
    finished.assert_exit(3);
    assert_eq!(
        finished.stderr,
        "mcpdome: warn: the upstream server exited with status 3; answering 2 open request(s) with an error\n"
    );
}

#[test]
fn client_eof_lets_answers_in_flight_through() {
    let mut proxy = Proxy::start(&[], &["--eof-exit", "4"]);
    let (one, two) = (request("1", "fake/hold"), request("2", "fake/hold"));
    proxy.send_line(&one);
    proxy.send_line(&two);
    proxy.close_stdin();
    // The fake answers what it holds when its stdin closes, then exits 4.
    proxy.expect(&echo("1", &one));
    proxy.expect(&echo("2", &two));
    let finished = proxy.finish();
    finished.assert_exit(4);
    assert_eq!(finished.stderr, "");
}

#[test]
fn server_ignoring_eof_and_sigterm_is_killed() {
    let dir = scratch("server_ignoring_eof_and_sigterm_is_killed");
    let mut proxy = Proxy::start(&["--shutdown-grace", GRACE], &["--ignore-eof", "--ignore-term"]);
    // The sleep inherits the ignored SIGTERM, so only the SIGKILL to the group ends it.
    let (grandchild, server) = spawn_grandchild(&mut proxy, &dir, false);
    proxy.send_line(&request("2", "fake/hold"));
    proxy.close_stdin();
    proxy.expect(&error(
        "2",
        -32000,
        "the upstream server was killed by signal 9 before answering",
    ));
    let finished = proxy.finish();
    finished.assert_exit(137);
    assert_eq!(
        finished.stderr,
        format!(
            "mcpdome: warn: upstream (pid {server}) ignored SIGTERM for {GRACE}; sending SIGKILL\n\
             mcpdome: warn: the upstream server was killed by signal 9; answering 1 open request(s) with an error\n"
        )
    );
    assert_dies(server);
    assert_dies(grandchild);
}

#[test]
fn child_left_behind_by_an_exited_server_is_killed() {
    let dir = scratch("child_left_behind_by_an_exited_server_is_killed");
    // mcpdome waits one grace period for the server's stdout to close, which the sleep keeps
    // open after the server exits; then it kills the server's process group.
    let mut proxy = Proxy::start(&["--shutdown-grace", "1s"], &["--eof-exit", "5"]);
    let (grandchild, _) = spawn_grandchild(&mut proxy, &dir, true);
    proxy.close_stdin();
    let finished = proxy.finish();
    finished.assert_exit(5);
    assert_eq!(finished.stderr, "");
    assert_dies(grandchild);
}

#[test]
fn sigterm_ends_the_server() {
    let dir = scratch("sigterm_ends_the_server");
    let mut proxy = Proxy::start(&["--shutdown-grace", GRACE], &["--ignore-eof"]);
    let (grandchild, server) = spawn_grandchild(&mut proxy, &dir, false);
    proxy.send_line(&request("1", "fake/hold"));
    // An answer shows mcpdome has read the hold, so request 1 is open.
    let ping = request("2", "ping");
    proxy.send_line(&ping);
    proxy.expect(&echo("2", &ping));
    proxy.kill("TERM");
    // The server ignores its closed stdin, so mcpdome sends it SIGTERM after the grace period.
    proxy.expect(&error("1", -32000, "mcpdome was stopped by signal 15 before answering"));
    let finished = proxy.finish();
    finished.assert_exit(128 + 15);
    assert_eq!(
        finished.stderr,
        "mcpdome: warn: mcpdome was stopped by signal 15; answering 1 open request(s) with an error\n"
    );
    assert_dies(server);
    assert_dies(grandchild);
}

#[test]
fn sigint_lets_the_server_finish() {
    let dir = scratch("sigint_lets_the_server_finish");
    let mut proxy = Proxy::start(&[], &["--eof-exit", "6"]);
    let (grandchild, server) = spawn_grandchild(&mut proxy, &dir, false);
    let hold = request("1", "fake/hold");
    proxy.send_line(&hold);
    let ping = request("2", "ping");
    proxy.send_line(&ping);
    proxy.expect(&echo("2", &ping));
    proxy.kill("INT");
    // mcpdome closes the server's stdin; the fake answers what it holds and exits 6.
    proxy.expect(&echo("1", &hold));
    let finished = proxy.finish();
    finished.assert_exit(6);
    assert_eq!(finished.stderr, "");
    assert_dies(server);
    assert_dies(grandchild);
}

/// mcpdome blocks SIGTERM, SIGINT and SIGHUP in itself to receive them with `sigwait`; the
/// server must not inherit that mask, or the SIGTERM of the shutdown sequence never reaches it.
#[test]
fn upstream_starts_with_no_signal_blocked() {
    let mut proxy = Proxy::start(&[], &[]);
    proxy.send_line(&request("1", "fake/sigmask"));
    proxy.expect(&result("1", r#"{"blocked":"0000000000000000"}"#));
    proxy.close_stdin();
    proxy.finish().assert_exit(0);
}

#[test]
fn sighup_is_ignored() {
    let mut proxy = Proxy::start(&[], &[]);
    round_trip(&mut proxy, "1", "ping");
    proxy.kill("HUP");
    round_trip(&mut proxy, "2", "ping");
    proxy.close_stdin();
    let finished = proxy.finish();
    finished.assert_exit(0);
    assert_eq!(finished.stderr, "");
}

#[test]
fn upstream_that_stops_reading_gets_no_more_requests() {
    let mut proxy = Proxy::start(&["--shutdown-grace", GRACE], &["--ignore-term"]);
    let close = request("1", "fake/closein");
    proxy.send_line(&close);
    proxy.expect(&echo("1", &close));
    proxy.send_line(&request("2", "ping"));
    proxy.expect(&error(
        "2",
        -32000,
        "the upstream server is not accepting messages (Broken pipe (os error 32))",
    ));
    // Notifications have nobody to tell.
    proxy.send_line(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
    proxy.close_stdin();
    let finished = proxy.finish();
    finished.assert_exit(137);
}
