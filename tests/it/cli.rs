//! The command line as a user meets it: help, version, usage errors (one line on stderr, exit
//! status 2), and the two ways of naming the upstream.

use std::ffi::OsString;

use mcpdome::cli::{HELP, HELP_PROXY};

use crate::util::{python, round_trip, scratch, Proxy, FAKE_SERVER};

/// Runs `mcpdome <args>` with stdin closed; returns (exit status, stdout, stderr).
#[track_caller]
fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let args: Vec<OsString> = args.iter().map(OsString::from).collect();
    let mut proxy = Proxy::spawn(&args);
    proxy.close_stdin();
    let finished = proxy.finish();
    let stdout =
        finished.stdout.iter().map(|line| String::from_utf8(line.clone()).unwrap()).collect();
    (finished.code, stdout, finished.stderr)
}

#[track_caller]
fn prints(args: &[&str], expected: &str) {
    assert_eq!(run(args), (Some(0), expected.to_owned(), String::new()));
}

#[track_caller]
fn usage_error(args: &[&str], expected: &str) {
    assert_eq!(run(args), (Some(2), String::new(), format!("mcpdome: {expected}\n")));
}

#[test]
fn help() {
    prints(&["--help"], HELP);
    prints(&["-h"], HELP);
    prints(&["help"], HELP);
    prints(&["help", "proxy"], HELP_PROXY);
    prints(&["proxy", "--help"], HELP_PROXY);
}

#[test]
fn version() {
    prints(&["--version"], "mcpdome 0.1.0\n");
    prints(&["-V"], "mcpdome 0.1.0\n");
}

#[test]
fn usage_errors() {
    usage_error(
        &[],
        "no command given; try `mcpdome proxy -- <server command>` or `mcpdome --help`",
    );
    usage_error(&["serve"], "unknown command \"serve\"; try `mcpdome --help`");
    usage_error(&["help", "serve"], "no help for unknown command \"serve\"; try `mcpdome --help`");
    usage_error(&["proxy", "--frobnicate", "--", "server"], "invalid option '--frobnicate'");
    usage_error(
        &["proxy"],
        "no upstream server given: use `mcpdome proxy -- <command> [args...]` or `--upstream \"<command line>\"`",
    );
    usage_error(
        &["proxy", "--upstream", "server 'unterminated"],
        "invalid value for `--upstream`: unterminated single quote",
    );
    usage_error(
        &["proxy", "--max-message-bytes", "1000", "--", "server"],
        "invalid value \"1000\" for `--max-message-bytes`: expected bytes such as 65536, 64K or 16M (at least 1K)",
    );
}

#[test]
fn missing_upstream_program() {
    usage_error(
        &["proxy", "--", "/nonexistent/mcpdome-test-server", "--flag"],
        "failed to start upstream `/nonexistent/mcpdome-test-server`: No such file or directory (os error 2)",
    );
}

#[test]
fn upstream_command_line_with_quotes() {
    let dir = scratch("upstream_command_line_with_quotes").join("dir with space");
    std::fs::create_dir_all(&dir).unwrap();
    let server = dir.join("it's the server.py");
    std::fs::copy(FAKE_SERVER, &server).unwrap();
    let line = format!(
        "{} \"{}\" --eof-exit 9",
        shell_quote(python()),
        server.to_str().unwrap().replace('"', "\\\"")
    );
    let mut proxy = Proxy::spawn(&["proxy".into(), "--upstream".into(), line.into()]);
    round_trip(&mut proxy, "1", "ping");
    proxy.close_stdin();
    proxy.finish().assert_exit(9);
}

/// `'…'`, with each `'` written as `'\''`.
fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

#[test]
fn enable_ward_relays_clean_traffic_quietly() {
    let mut proxy = Proxy::start(&["--enable-ward"], &[]);
    round_trip(&mut proxy, "1", "ping");
    proxy.close_stdin();
    let finished = proxy.finish();
    finished.assert_exit(0);
    assert_eq!(finished.stderr, "");
}
