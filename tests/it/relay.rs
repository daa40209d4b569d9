//! Relaying while both peers are up: byte-faithful forwarding, refused lines and their answers,
//! request bookkeeping in both directions, cancellation, stderr.

use crate::util::{
    assert_bytes, assert_lines, echo, error, json_string, read_log, request, result, round_trip,
    scratch, Proxy,
};

/// Starts a proxy whose fake server logs what it receives to `<scratch>/received`.
fn logged(test: &str, options: &[&str]) -> (Proxy, std::path::PathBuf) {
    let log = scratch(test).join("received");
    let proxy = Proxy::start(options, &["--log", log.to_str().unwrap()]);
    (proxy, log)
}

#[test]
fn request_reaches_server_byte_identical() {
    let (mut proxy, log) = logged("request_reaches_server_byte_identical", &[]);
    // Keys out of order, spaces, escapes (also in the id, and in a key), raw non-ASCII,
    // numbers beyond u64 and f64, and a CRLF line end.
    let line = concat!(
        r#" { "params" : {"b":1, "a":"caf\u00e9 ☕ \ud83d\ude00", "n": 123456789012345678901234567890,"#,
        r#" "f": -1.5e400 , "\u006b": [ ] }, "id" : "r\u0031", "method":"tools\/call" , "jsonrpc":"2.0" }"#,
        "\r\n"
    );
    proxy.send(line);
    // The fake answers with the id decoded ("r1"), which must still match "r\u0031".
    proxy.expect(&echo(r#""r1""#, line.strip_suffix('\n').unwrap()));
    proxy.close_stdin();
    proxy.finish().assert_exit(0);
    assert_bytes(&read_log(&log).concat(), line.as_bytes());
}

#[test]
fn response_reaches_client_byte_identical() {
    let mut proxy = Proxy::start(&[], &[]);
    let response = concat!(
        r#"{ "result" : {"z":1, "a":"\u00e9 é \ud83d\ude00", "big":123456789012345678901234567890, "f":1e400},"#,
        r#" "id" : 7 , "extra":null, "jsonrpc" : "2.0" }"#,
        "\r\n"
    );
    let params = format!(r#"{{"raw":{}}}"#, json_string(response));
    proxy.send_line(&format!(
        r#"{{"jsonrpc":"2.0","id":7,"method":"fake/reply","params":{params}}}"#
    ));
    assert_bytes(&proxy.recv(), response.as_bytes());
    round_trip(&mut proxy, "8", "ping");
    proxy.close_stdin();
    proxy.finish().assert_exit(0);
}

#[test]
fn last_line_without_newline_is_relayed() {
    let (mut proxy, log) = logged("last_line_without_newline_is_relayed", &[]);
    let line = request("1", "ping");
    proxy.send(&line);
    proxy.close_stdin();
    proxy.expect(&echo("1", &line));
    proxy.finish().assert_exit(0);
    assert_lines(&read_log(&log), &[&line]);
}

#[test]
fn blank_lines_are_skipped() {
    let (mut proxy, log) = logged("blank_lines_are_skipped", &[]);
    proxy.send("\n \t\r\n");
    round_trip(&mut proxy, "1", "ping");
    proxy.close_stdin();
    proxy.finish().assert_exit(0);
    assert_lines(&read_log(&log), &[&request("1", "ping")]);
}

/// Sends `bad`, expects `reply`, then checks the relay still works and `bad` never reached the
/// server.
#[track_caller]
fn refused(test: &str, bad: &[u8], reply: &str) {
    let (mut proxy, log) = logged(test, &[]);
    proxy.send(bad);
    proxy.expect(reply);
    round_trip(&mut proxy, "100", "ping");
    proxy.close_stdin();
    proxy.finish().assert_exit(0);
    assert_lines(&read_log(&log), &[&request("100", "ping")]);
}

#[test]
fn not_json_is_a_parse_error() {
    refused(
        "not_json_is_a_parse_error",
        b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"\n",
        &error("null", -32700, "message is not valid JSON"),
    );
}

#[test]
fn invalid_utf8_is_a_parse_error() {
    refused(
        "invalid_utf8_is_a_parse_error",
        b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"p\xffng\"}\n",
        &error("null", -32700, "message is not valid UTF-8"),
    );
}

#[test]
fn batch_is_refused() {
    refused(
        "batch_is_refused",
        b"[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}]\n",
        &error(
            "null",
            -32600,
            "JSON-RPC batches are not supported (removed from MCP in 2025-06-18)",
        ),
    );
}

#[test]
fn wrong_version_is_refused_with_its_id() {
    refused(
        "wrong_version_is_refused_with_its_id",
        b"{\"jsonrpc\":\"1.0\",\"id\":7,\"method\":\"ping\"}\n",
        &error("7", -32600, r#""jsonrpc" must be "2.0""#),
    );
}

#[test]
fn duplicate_method_is_refused_with_its_id() {
    refused(
        "duplicate_method_is_refused_with_its_id",
        b"{\"jsonrpc\":\"2.0\",\"id\":\"d\",\"method\":\"ping\",\"method\":\"tools/call\"}\n",
        &error(r#""d""#, -32600, r#"key "method" appears more than once"#),
    );
}

/// A request in the Node SDK's key order, `id` last, padded to `len` bytes (newline excluded).
/// The fake server answers it with `{"pad":""}`.
fn node_request(id: &str, len: usize) -> String {
    let head = r#"{"method":"fake/big","params":{"n":0,"pad":""#;
    let tail = format!(r#""}},"jsonrpc":"2.0","id":{id}}}"#);
    let pad = "x".repeat(len - head.len() - tail.len());
    format!("{head}{pad}{tail}")
}

#[test]
fn oversized_request_is_answered_with_its_id() {
    let (mut proxy, log) =
        logged("oversized_request_is_answered_with_its_id", &["--max-message-bytes", "1K"]);
    let at_limit = node_request("1", 1024);
    proxy.send_line(&at_limit);
    proxy.expect(&result("1", r#"{"pad":""}"#));
    proxy.send_line(&node_request("\"big\"", 1025));
    proxy.expect(&error(
        r#""big""#,
        -32600,
        "message of 1025 bytes exceeds the limit of 1024 bytes",
    ));
    proxy.send_line(&node_request("3", 5000));
    proxy.expect(&error("3", -32600, "message of 5000 bytes exceeds the limit of 1024 bytes"));
    round_trip(&mut proxy, "4", "ping");
    proxy.close_stdin();
    proxy.finish().assert_exit(0);
    assert_lines(&read_log(&log), &[&at_limit, &request("4", "ping")]);
}

#[test]
fn oversized_notification_is_dropped() {
    let (mut proxy, log) =
        logged("oversized_notification_is_dropped", &["--max-message-bytes", "1K"]);
    let pad = "x".repeat(2000);
    proxy.send_line(&format!(
        r#"{{"method":"notifications/message","params":{{"data":"{pad}"}},"jsonrpc":"2.0"}}"#
    ));
    round_trip(&mut proxy, "1", "ping");
    proxy.close_stdin();
    proxy.finish().assert_exit(0);
    assert_lines(&read_log(&log), &[&request("1", "ping")]);
}

#[test]
fn oversized_response_becomes_an_error_for_its_request() {
    let mut proxy = Proxy::start(&["--max-message-bytes", "1K"], &[]);
    proxy.send_line(r#"{"jsonrpc":"2.0","id":12,"method":"fake/big","params":{"n":2000}}"#);
    let len = result("12", &format!(r#"{{"pad":"{}"}}"#, "x".repeat(2000))).len();
    proxy.expect(&error(
        "12",
        -32600,
        &format!(
            "the upstream's response was refused: message of {len} bytes exceeds the limit of 1024 bytes"
        ),
    ));
    round_trip(&mut proxy, "13", "ping");
    // Request 12 is closed: a late second answer to it would be dropped, and the shutdown has
    // nothing left to answer.
    proxy.close_stdin();
    proxy.finish().assert_exit(0);
}

#[test]
fn non_json_from_server_is_dropped_and_logged() {
    let mut proxy = Proxy::start(&[], &[]);
    proxy.send_line(
        r#"{"jsonrpc":"2.0","method":"fake/say","params":{"out":"Server listening on stdio\n"}}"#,
    );
    round_trip(&mut proxy, "1", "ping");
    proxy.close_stdin();
    let finished = proxy.finish();
    finished.assert_exit(0);
    assert_eq!(
        finished.stderr,
        "mcpdome: warn: upstream line 1: message is not valid JSON; dropped\n"
    );
}

#[test]
fn request_ids_are_tracked_per_direction() {
    let mut proxy = Proxy::start(&[], &[]);
    // The client's request 0 is open while the server asks the client its own request 0.
    proxy.send_line(&request("0", "fake/roots"));
    proxy.expect(&request("0", "roots/list"));
    let answer =
        r#"{"jsonrpc":"2.0","id":0,"result":{"roots":[{"uri":"file:///tmp","name":"tmp"}]}}"#;
    proxy.send_line(answer);
    proxy.expect(&result("0", &format!(r#"{{"client_said":{}}}"#, json_string(answer))));
    round_trip(&mut proxy, "0", "ping");
    proxy.close_stdin();
    proxy.finish().assert_exit(0);
}

#[test]
fn server_request_with_an_id_in_use_is_refused_to_the_server() {
    let (mut proxy, log) = logged("server_request_with_an_id_in_use_is_refused_to_the_server", &[]);
    let ask = request("0", "roots/list");
    // The notification after the second request shows that mcpdome has dealt with it.
    let note = r#"{"jsonrpc":"2.0","method":"notifications/message","params":{"data":"x"}}"#;
    let say = format!("{ask}\n{ask}\n{note}\n");
    proxy.send_line(&format!(
        r#"{{"jsonrpc":"2.0","method":"fake/say","params":{{"out":{}}}}}"#,
        json_string(&say)
    ));
    proxy.expect(&ask);
    proxy.expect(note);
    round_trip(&mut proxy, "1", "ping");
    proxy.close_stdin();
    proxy.finish().assert_exit(0);
    // mcpdome's own answer to the server is written by a thread of its own (a server that does
    // not read must not stall the relay), so it is not ordered against the client's ping.
    let mut received = read_log(&log).split_off(1);
    received.sort();
    let refusal = error("0", -32600, "request id 0 is already in use by an unanswered request");
    let ping = request("1", "ping");
    let mut expected = [refusal.as_str(), ping.as_str()];
    expected.sort_by_key(|line| line.as_bytes().to_vec());
    assert_lines(&received, &expected);
}

#[test]
fn server_response_to_unknown_id_is_dropped() {
    let mut proxy = Proxy::start(&[], &[]);
    proxy.send_line(
        r#"{"jsonrpc":"2.0","method":"fake/say","params":{"out":"{\"jsonrpc\":\"2.0\",\"id\":99,\"result\":{}}\n"}}"#,
    );
    let twice = request("4", "fake/twice");
    proxy.send_line(&twice);
    proxy.expect(&echo("4", &twice));
    // The second answer to 4 comes before this one and must not reach the client.
    round_trip(&mut proxy, "5", "ping");
    proxy.close_stdin();
    let finished = proxy.finish();
    finished.assert_exit(0);
    assert_eq!(
        finished.stderr,
        "mcpdome: warn: upstream line 1: response to id 99, which no open request has; dropped\n\
         mcpdome: warn: upstream line 3: response to id 4, which no open request has; dropped\n"
    );
}

#[test]
fn client_response_to_unknown_id_is_dropped() {
    let (mut proxy, log) = logged("client_response_to_unknown_id_is_dropped", &[]);
    proxy.send_line(r#"{"jsonrpc":"2.0","id":0,"result":{"roots":[]}}"#);
    round_trip(&mut proxy, "1", "ping");
    proxy.close_stdin();
    proxy.finish().assert_exit(0);
    assert_lines(&read_log(&log), &[&request("1", "ping")]);
}

#[test]
fn duplicate_open_request_id_is_refused() {
    let (mut proxy, log) = logged("duplicate_open_request_id_is_refused", &[]);
    let hold = request("5", "fake/hold");
    proxy.send_line(&hold);
    proxy.send_line(&request("5", "ping"));
    proxy.expect(&error("5", -32600, "request id 5 is already in use by an unanswered request"));
    let release = request("6", "fake/release");
    proxy.send_line(&release);
    proxy.expect(&echo("5", &hold));
    proxy.expect(&echo("6", &release));
    // Answered, so 5 is free again.
    round_trip(&mut proxy, "5", "ping");
    proxy.close_stdin();
    proxy.finish().assert_exit(0);
    assert_lines(&read_log(&log), &[&hold, &release, &request("5", "ping")]);
}

#[test]
fn cancellation_of_an_open_request_is_forwarded() {
    let (mut proxy, log) = logged("cancellation_of_an_open_request_is_forwarded", &[]);
    let hold = request("3", "fake/hold");
    proxy.send_line(&hold);
    let cancel = r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":3,"reason":"user"}}"#;
    proxy.send_line(cancel);
    // Not open: never sent, a string instead of the integer, and 3 a second time.
    proxy.send_line(
        r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":42}}"#,
    );
    proxy.send_line(
        r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"3"}}"#,
    );
    proxy.send_line(cancel);
    let release = request("4", "fake/release");
    proxy.send_line(&release);
    // The late answer to the cancelled request is dropped: the client would ignore it, and
    // with the request gone the gateway could not check it.
    proxy.expect(&echo("4", &release));
    proxy.close_stdin();
    proxy.finish().assert_exit(0);
    assert_lines(&read_log(&log), &[&hold, cancel, &release]);
}

#[test]
fn server_stderr_passes_through() {
    let mut proxy = Proxy::start(&[], &["--stderr", "fake: starting"]);
    let line =
        r#"{"jsonrpc":"2.0","id":1,"method":"fake/stderr","params":{"text":"fake: working\n"}}"#;
    proxy.send_line(line);
    proxy.expect(&echo("1", line));
    proxy.close_stdin();
    let finished = proxy.finish();
    finished.assert_exit(0);
    assert_eq!(finished.stderr, "fake: starting\nfake: working\n");
}
