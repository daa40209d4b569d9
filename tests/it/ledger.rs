//! The audit ledger through the binary: what a session writes, and `mcpdome verify-log` on it,
//! intact, edited, cut short, restarted and keyed.

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::util::{
    call, denied_by, echo, error, json, request, run_mcpdome, Output, Proxy, TempDir, ANNOUNCEMENT,
    DEV_KEY, KEYS,
};

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The ledger's lines, raw (each without its newline).
#[track_caller]
fn raw_lines(path: &std::path::Path) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(path).unwrap();
    assert!(bytes.ends_with(b"\n"), "the ledger ends with a whole line");
    bytes.split(|&b| b == b'\n').filter(|line| !line.is_empty()).map(<[u8]>::to_vec).collect()
}

/// Checks the chain of an unkeyed ledger independently of mcpdome's verifier: `seq` counts from
/// `first_seq`, `prev` is the hash of the line before, `hash` is the SHA-256 of the bytes before
/// `,"hash":` and the last member. Returns the lines parsed, without `ts`, `prev` and `hash`.
#[track_caller]
fn check_chain(lines: &[Vec<u8>]) -> Vec<Value> {
    let mut prev = "0".repeat(64);
    let mut out = Vec::new();
    for (idx, line) in lines.iter().enumerate() {
        let mut value = json(line);
        assert_eq!(value["seq"], idx + 1, "line {}", idx + 1);
        assert_eq!(value["prev"], prev.as_str(), "line {}", idx + 1);
        let text = std::str::from_utf8(line).unwrap();
        let at = text.rfind(",\"hash\":\"").expect("a hash member");
        let hash = sha256_hex(&line[..at]);
        assert_eq!(&text[at..], format!(",\"hash\":\"{hash}\"}}"), "line {}", idx + 1);
        let ts = value["ts"].as_str().unwrap();
        assert!(ts.len() == 24 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T', "ts {ts}");
        let object = value.as_object_mut().unwrap();
        for key in ["ts", "prev", "hash"] {
            object.remove(key);
        }
        out.push(value);
        prev = hash;
    }
    out
}

#[track_caller]
fn verify(args: &[&str]) -> Output {
    let mut all = vec!["verify-log"];
    all.extend_from_slice(args);
    run_mcpdome(&all)
}

fn config_with_ledger(extra: &str) -> String {
    format!("{ANNOUNCEMENT}\n{KEYS}\n[ledger]\npath = \"audit.jsonl\"\n{extra}")
}

/// Runs one short session that makes an allowed, a default-denied and a rule-denied call.
/// Returns the lines the client sent.
fn session(dir: &TempDir, options: &[&str]) -> Vec<String> {
    let config = dir.arg("mcpdome.toml");
    let mut all = vec!["--config", &config];
    all.extend_from_slice(options);
    let mut proxy = Proxy::start_env(&all, &[], &[("MCPDOME_TOKEN", DEV_KEY)]);
    let read = call("1", "read_file", r#"{"path": "/tmp/a"}"#);
    proxy.send_line(&read);
    proxy.expect(&echo("1", &read));
    let delete = call("\"two\"", "delete_file", r#"{"path":"/tmp/a"}"#);
    proxy.send_line(&delete);
    proxy.expect(&error(
        "\"two\"",
        -32013,
        "no rule allows tool `delete_file` for psk:dev (default deny)",
    ));
    let secret = call("3", "grep", r#"{"q":["AKIAIOSFODNN7EXAMPLE"]}"#);
    proxy.send_line(&secret);
    proxy.expect(&denied_by(
        "3",
        -32013,
        r#"denied by rule "block-secrets": an argument matches deny_regex `AKIA[A-Z0-9]{16}`"#,
        "block-secrets",
    ));
    proxy.close_stdin();
    proxy.finish().assert_exit(0);
    vec![read, delete, secret]
}

#[test]
fn one_line_per_decision() {
    let dir = TempDir::new("ledger_lines");
    dir.write("mcpdome.toml", &config_with_ledger(""));
    session(&dir, &[]);
    let path = dir.join("audit.jsonl");
    let lines = raw_lines(&path);
    let values = check_chain(&lines);
    assert_eq!(values.len(), 5, "{values:#?}");
    let start = &values[0];
    assert_eq!(start["event"], "start");
    assert_eq!(start["detail"]["config"], dir.arg("mcpdome.toml"));
    assert_eq!(
        values[1],
        json!({
            "seq": 2, "event": "decision", "direction": "client", "method": "tools/call", "id": 1,
            "identity": "psk:dev", "tool": "read_file", "decision": "allow", "rule": "dev-read-tools",
            "args_sha256": sha256_hex(br#"{"path": "/tmp/a"}"#),
        })
    );
    assert_eq!(
        values[2],
        json!({
            "seq": 3, "event": "decision", "direction": "client", "method": "tools/call", "id": "two",
            "identity": "psk:dev", "tool": "delete_file", "decision": "deny",
            "reason": "no rule allows tool `delete_file` for psk:dev (default deny)",
            "args_sha256": sha256_hex(br#"{"path":"/tmp/a"}"#),
        })
    );
    assert_eq!(
        values[3],
        json!({
            "seq": 4, "event": "decision", "direction": "client", "method": "tools/call", "id": 3,
            "identity": "psk:dev", "tool": "grep", "decision": "deny", "rule": "block-secrets",
            "reason": "denied by rule \"block-secrets\": an argument matches deny_regex `AKIA[A-Z0-9]{16}`",
            "args_sha256": sha256_hex(br#"{"q":["AKIAIOSFODNN7EXAMPLE"]}"#),
        })
    );
    assert_eq!(values[4]["event"], "stop");
    // The arguments themselves are not in the ledger.
    let text = String::from_utf8(lines.concat()).unwrap();
    assert!(!text.contains("AKIAIOSFODNN7EXAMPLE") && !text.contains("/tmp/a"), "{text}");

    let head = json(lines.last().unwrap())["hash"].as_str().unwrap().to_owned();
    let file = path.to_str().unwrap();
    assert_eq!(
        verify(&[file]),
        Output {
            code: Some(0),
            stdout: format!("{file}: intact, 5 line(s), head {head}\n"),
            stderr: String::new()
        }
    );
    let out = verify(&[file, "--expect-head", &head]);
    assert_eq!(out.code, Some(0), "{out:?}");
}

#[test]
fn arguments_are_included_on_request() {
    let dir = TempDir::new("ledger_arguments");
    dir.write("mcpdome.toml", &config_with_ledger("include_arguments = true\n"));
    session(&dir, &[]);
    let values = check_chain(&raw_lines(&dir.join("audit.jsonl")));
    assert_eq!(values[1]["arguments"], json!({"path": "/tmp/a"}));
    assert_eq!(values[1]["args_sha256"], sha256_hex(br#"{"path": "/tmp/a"}"#));
    assert_eq!(values[3]["arguments"], json!({"q": ["AKIAIOSFODNN7EXAMPLE"]}));
}

/// A one-byte edit in a middle line, and a cut tail with `--expect-head`.
#[test]
fn verify_log_names_the_bad_line() {
    let dir = TempDir::new("ledger_tampered");
    dir.write("mcpdome.toml", &config_with_ledger(""));
    session(&dir, &[]);
    let lines = raw_lines(&dir.join("audit.jsonl"));
    let head = json(lines.last().unwrap())["hash"].as_str().unwrap().to_owned();

    // "deny" → "deni" in line 3, the first denial.
    let mut edited: Vec<Vec<u8>> = lines.clone();
    let text = String::from_utf8(edited[2].clone()).unwrap();
    let at = text.find("\"decision\":\"deny\"").unwrap() + "\"decision\":\"den".len();
    edited[2][at] = b'i';
    let path = dir.join("edited.jsonl");
    std::fs::write(
        &path,
        edited.iter().map(|line| [&line[..], b"\n"].concat()).collect::<Vec<_>>().concat(),
    )
    .unwrap();
    let file = path.to_str().unwrap();
    assert_eq!(
        verify(&[file]),
        Output {
            code: Some(1),
            stdout: String::new(),
            stderr: format!("{file}: line 3: hash does not match its content\n")
        }
    );

    // The last line removed: still a valid chain, but not the head we noted.
    let path = dir.join("cut.jsonl");
    let cut = &lines[..lines.len() - 1];
    std::fs::write(
        &path,
        cut.iter().map(|line| [&line[..], b"\n"].concat()).collect::<Vec<_>>().concat(),
    )
    .unwrap();
    let file = path.to_str().unwrap();
    assert_eq!(verify(&[file]).code, Some(0));
    let out = verify(&[file, "--expect-head", &head]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.starts_with(&format!("{file}: line 4: the ledger ends at line 4 with head ")),
        "{out:?}"
    );
    assert!(out.stderr.contains(&format!("no line has the expected head {head}")), "{out:?}");

    // A wrong head for the whole file.
    let file = dir.arg("audit.jsonl");
    let out = verify(&[&file, "--expect-head", &"ab".repeat(32)]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("no line has the expected head abab"), "{out:?}");
}

/// A second run appends to the same file and continues its chain (`--ledger FILE`).
#[test]
fn restart_continues_the_chain() {
    let dir = TempDir::new("ledger_restart");
    dir.write("mcpdome.toml", &format!("{ANNOUNCEMENT}\n{KEYS}"));
    let ledger = dir.arg("audit.jsonl");
    session(&dir, &["--ledger", &ledger]);
    let first = raw_lines(&dir.join("audit.jsonl"));
    assert_eq!(first.len(), 5);
    session(&dir, &["--ledger", &ledger]);
    let both = raw_lines(&dir.join("audit.jsonl"));
    assert_eq!(both.len(), 10);
    assert_eq!(both[..5], first[..]);
    let values = check_chain(&both);
    let events: Vec<&str> = values.iter().map(|value| value["event"].as_str().unwrap()).collect();
    assert_eq!(
        events,
        [
            "start", "decision", "decision", "decision", "stop", "start", "decision", "decision",
            "decision", "stop"
        ]
    );
    let out = verify(&[&ledger]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains(": intact, 10 line(s), head "), "{out:?}");
}

/// With `hmac_key_file` the chain verifies only with the key.
#[test]
fn hmac_chain_needs_its_key() {
    let dir = TempDir::new("ledger_hmac");
    let key = dir.write("ledger.key", &format!("{}\n", "5a".repeat(32)));
    let wrong = dir.write("wrong.key", &format!("{}\n", "a5".repeat(32)));
    dir.write("mcpdome.toml", &config_with_ledger("hmac_key_file = \"ledger.key\"\n"));
    session(&dir, &[]);
    let file = dir.arg("audit.jsonl");
    assert_eq!(
        verify(&[&file]),
        Output {
            code: Some(1),
            stdout: String::new(),
            stderr: format!(
                "{file}: line 1: hash does not match its content (or the ledger has an HMAC key)\n"
            ),
        }
    );
    assert_eq!(
        verify(&[&file, "--hmac-key-file", wrong.to_str().unwrap()]),
        Output {
            code: Some(1),
            stdout: String::new(),
            stderr: format!(
                "{file}: line 1: hash does not match its content, or the HMAC key is wrong\n"
            ),
        }
    );
    let out = verify(&[&file, "--hmac-key-file", key.to_str().unwrap()]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.starts_with(&format!("{file}: intact, 5 line(s), head ")), "{out:?}");
    // A restart with the key continues the keyed chain.
    session(&dir, &[]);
    let out = verify(&[&file, "--hmac-key-file", key.to_str().unwrap()]);
    assert!(out.stdout.starts_with(&format!("{file}: intact, 10 line(s), head ")), "{out:?}");
}

/// Auth failures, limit hits and reloads are decisions too.
#[test]
fn auth_failures_limits_and_reloads_are_recorded() {
    let dir = TempDir::new("ledger_events");
    let config = format!(
        "[[rules]]\nid = \"any\"\npriority = 1\neffect = \"allow\"\nidentities = \"*\"\ntools = \"*\"\n\n{KEYS}\n[rate_limit]\nper_tool = {{ rate = 0.01, burst = 1 }}\n\n[ledger]\npath = \"audit.jsonl\"\n"
    );
    let config = dir.write("mcpdome.toml", &config);
    let mut proxy =
        Proxy::start(&["--config", config.to_str().unwrap(), "--log-level", "info"], &[]);
    let wrong = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search","arguments":{},"_meta":{"mcpdome/token":"nope"}}}"#;
    proxy.send_line(wrong);
    proxy.expect(&error("1", -32010, "unknown key"));
    let search = call("2", "search", "{}");
    proxy.send_line(&search);
    proxy.expect(&echo("2", &search));
    proxy.send_line(&call("3", "search", "{}"));
    let limited = json(&proxy.recv());
    assert_eq!(limited["error"]["code"], -32011, "{limited}");
    proxy.kill("HUP");
    proxy.wait_stderr("(SIGHUP)\n", 1);
    // The log line comes just before the ledger line; wait for that too, so the next decision
    // is recorded after it.
    let deadline = std::time::Instant::now() + crate::util::TIMEOUT;
    while !std::fs::read_to_string(dir.join("audit.jsonl")).unwrap().contains(r#""event":"reload""#)
    {
        assert!(std::time::Instant::now() < deadline, "no reload line in the ledger");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    proxy.send_line(&request("4", "ping"));
    proxy.expect(&echo("4", &request("4", "ping")));
    proxy.close_stdin();
    proxy.finish().assert_exit(0);

    let values = check_chain(&raw_lines(&dir.join("audit.jsonl")));
    let events: Vec<&str> = values.iter().map(|value| value["event"].as_str().unwrap()).collect();
    assert_eq!(
        events,
        ["start", "decision", "decision", "decision", "reload", "decision", "stop"],
        "{values:#?}"
    );
    let auth = &values[1];
    assert_eq!(
        (&auth["method"], &auth["id"], &auth["decision"], &auth["reason"]),
        (&json!("tools/call"), &json!(1), &json!("deny"), &json!("unknown key")),
        "{auth}"
    );
    assert_eq!(auth["args_sha256"], sha256_hex(b"{}"));
    let limit = &values[3];
    assert_eq!(
        (&limit["id"], &limit["identity"], &limit["decision"], &limit["rule"]),
        (&json!(3), &json!("anonymous"), &json!("deny"), &json!("tool")),
        "{limit}"
    );
    assert!(limit["reason"]
        .as_str()
        .unwrap()
        .starts_with("the rate limit for this tool is exceeded; retry after "));
    assert_eq!(
        values[4],
        json!({"seq": 5, "event": "reload", "decision": "allow", "reason": "reloaded (SIGHUP)"})
    );
    assert_eq!(values[5]["method"], "ping");
    assert_eq!(values[5]["decision"], "allow");
    // Every decision about a tools/call names the tool, whichever check made it.
    assert_eq!(values[2]["tool"], "search", "{}", values[2]);
    assert_eq!(limit["tool"], "search", "a limit hit names the tool: {limit}");
    assert_eq!(auth["tool"], "search", "an auth failure names the tool: {auth}");
}

/// A ledger that cannot be opened stops mcpdome at start, before anything is relayed.
#[test]
fn unwritable_ledger_stops_the_proxy() {
    let dir = TempDir::new("ledger_unwritable");
    for (ledger, why) in [
        (dir.arg("no-such-dir/audit.jsonl"), "No such file or directory (os error 2)"),
        (dir.arg(""), "Is a directory (os error 21)"),
    ] {
        let mut proxy = Proxy::start(&["--ledger", &ledger], &[]);
        proxy.close_stdin();
        let finished = proxy.finish();
        finished.assert_exit(2);
        assert_eq!(finished.stderr, format!("mcpdome: cannot open ledger `{ledger}`: {why}\n"));
    }
}

/// The ledger is opened before the upstream starts, so a ledger that cannot be written means the
/// server never runs (unaudited, even briefly). Seen from outside: with both a bad ledger and a
/// server that cannot start, the ledger is what mcpdome complains about.
#[test]
fn ledger_is_opened_before_the_upstream_starts() {
    let dir = TempDir::new("ledger_before_upstream");
    let ledger = dir.arg("no-such-dir/audit.jsonl");
    let out =
        run_mcpdome(&["proxy", "--ledger", &ledger, "--", "/nonexistent/mcpdome-test-server"]);
    assert_eq!(
        out,
        Output {
            code: Some(2),
            stdout: String::new(),
            stderr: format!(
                "mcpdome: cannot open ledger `{ledger}`: No such file or directory (os error 2)\n"
            ),
        }
    );
}

/// `kill -9` between messages leaves a ledger that verifies (without its `stop` line); a line cut
/// short is reported as such, not as tampering, and the next start cuts it off and says so.
#[test]
fn crash_loses_at_most_the_line_being_written() {
    let dir = TempDir::new("ledger_crash");
    let ledger = dir.arg("audit.jsonl");
    let mut proxy = Proxy::start(&["--ledger", &ledger], &[]);
    let ping = request("1", "ping");
    proxy.send_line(&ping);
    proxy.expect(&echo("1", &ping));
    proxy.kill("KILL");
    assert_eq!(proxy.finish().code, None);
    let lines = raw_lines(&dir.join("audit.jsonl"));
    let events: Vec<Value> =
        check_chain(&lines).into_iter().map(|value| value["event"].clone()).collect();
    assert_eq!(events, [json!("start"), json!("decision")]);
    assert_eq!(verify(&[&ledger]).code, Some(0));

    // The write of line 3 was cut short.
    let mut file = std::fs::OpenOptions::new().append(true).open(&ledger).unwrap();
    let tail = br#"{"seq":3,"ts":"2026-11-23T22:07:3"#;
    std::io::Write::write_all(&mut file, tail).unwrap();
    drop(file);
    let out = verify(&[&ledger]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.starts_with(&format!("{ledger}: intact, 2 line(s), head ")), "{out:?}");
    assert!(out.stdout.contains("\nnote: the last line is incomplete"), "{out:?}");

    let mut proxy = Proxy::start(&["--ledger", &ledger], &[]);
    proxy.close_stdin();
    proxy.finish().assert_exit(0);
    let values = check_chain(&raw_lines(&dir.join("audit.jsonl")));
    let events: Vec<&str> = values.iter().map(|value| value["event"].as_str().unwrap()).collect();
    assert_eq!(events, ["start", "decision", "recovered", "start", "stop"]);
    assert_eq!(values[2]["detail"], json!({"dropped_bytes": tail.len()}));
    let out = verify(&[&ledger]);
    assert!(out.stdout.starts_with(&format!("{ledger}: intact, 5 line(s), head ")), "{out:?}");
}

#[test]
fn verify_log_of_a_missing_file_exits_2() {
    let dir = TempDir::new("ledger_missing");
    let file = dir.arg("none.jsonl");
    let out = verify(&[&file]);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert_eq!(out.stdout, "");
    assert!(out.stderr.contains(&file), "{out:?}");
}
