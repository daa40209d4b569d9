//! The newcomer's commands through the binary: `mcpdome demo`, `mcpdome wrap` on a sample config
//! of each client, and `mcpdome audit` on a ledger a real session wrote (intact, tampered, time
//! ranges, `--json`, `--follow`).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;

use serde_json::Value;

use crate::util::{
    call, echo, error, run_mcpdome, Proxy, TempDir, ANNOUNCEMENT, DEV_KEY, KEYS, MCPDOME, TIMEOUT,
};

const WRAP_DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/wrap");

/// The mcpdome path the wrapped configs name.
const WRAPPER: &str = "/usr/local/bin/mcpdome";

#[test]
fn demo_makes_every_expected_decision() {
    let dir = TempDir::new("demo_keep");
    let keep = dir.arg("kept");
    let out = run_mcpdome(&["demo", "--keep", &keep]);
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    for expected in [
        "mcpdome: allowed: the session belongs to psk:demo-agent",
        "mcpdome: allowed: list_files, read_file, write_file (each definition pinned on first use in pins.json)",
        "mcpdome: allowed by rule \"read-files\"",
        "the ward redacted the secret in the result: …[REDACTED:secret-aws-access-key]…",
        "mcpdome: refused by the policy (rule \"no-env-files\"), error -32013",
        "mcpdome: refused by the ward (secret, rule secret-aws-access-key), error -32014",
        "mcpdome: refused by the ward (injection, rule inj-override), error -32014",
        "server: sends notifications/tools/list_changed",
        "mcpdome: read_file was removed: its definition no longer matches its pin",
        "mcpdome: refused by the pins (pin-changed), error -32015",
        "audit log: deny tools/call read_file by psk:demo-agent, rule pin-changed",
        "mcpdome: intact, 14 line(s), head ",
        "all 12 steps went as expected.",
    ] {
        assert!(out.stdout.contains(expected), "missing {expected:?} in:\n{}", out.stdout);
    }
    assert!(!out.stdout.contains("UNEXPECTED"), "{}", out.stdout);
    assert!(!out.stdout.contains("AKIAQ3EGUKZ7XN4RW2PD"), "the demo never shows the secret");
    // What --keep leaves behind is a valid starting point.
    let validate = run_mcpdome(&["validate", &format!("{keep}/mcpdome.toml")]);
    assert_eq!(validate.code, Some(0), "{validate:?}");
    let verify = run_mcpdome(&["verify-log", &format!("{keep}/audit.jsonl")]);
    assert_eq!(verify.code, Some(0), "{verify:?}");
    let diff = run_mcpdome(&["pins", "diff", "--pins", &format!("{keep}/pins.json")]);
    assert!(diff.stdout.contains("+    \"destructiveHint\": true"), "{diff:?}");
    assert!(diff.stdout.contains("\"read-and-delete\""), "{diff:?}");
}

/// Copies a fixture into a scratch directory, returns its path.
fn fixture(dir: &TempDir, relative: &str) -> std::path::PathBuf {
    let from = format!("{WRAP_DATA}/{relative}");
    let name = std::path::Path::new(relative).file_name().unwrap().to_str().unwrap();
    let to = dir.join(name);
    std::fs::copy(&from, &to).unwrap();
    to
}

/// Strips `//` and `/* */` comments and trailing commas from the VS Code fixture, so that
/// serde_json can check the result (good enough for our fixtures, which have no `//` in strings
/// other than URLs, handled by only stripping comments that start a line or follow a comma).
fn jsonc_to_json(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("//") || (trimmed.starts_with("/*") && trimmed.ends_with("*/")) {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    let mut cleaned = String::new();
    let chars: Vec<char> = out.chars().collect();
    for (idx, c) in chars.iter().enumerate() {
        if *c == ',' {
            let next = chars[idx + 1..].iter().find(|c| !c.is_whitespace());
            if matches!(next, Some('}' | ']')) {
                continue;
            }
        }
        cleaned.push(*c);
    }
    cleaned
}

/// Wraps a fixture and checks the result, wraps again (nothing changes), unwraps (the original,
/// byte for byte). `stdio` lists the servers to be wrapped with their original command lines;
/// `remote` the ones that must be reported as not covered.
#[track_caller]
fn wrap_round_trip(
    relative: &str,
    map: &str,
    client: &str,
    stdio: &[(&str, &[&str])],
    remote: &[&str],
) {
    let dir = TempDir::new(&format!("wrap_{}", relative.replace(['/', '.'], "_")));
    let file = fixture(&dir, relative);
    let path = file.to_str().unwrap();
    let original = std::fs::read_to_string(&file).unwrap();

    let out = run_mcpdome(&["wrap", path, "--mcpdome", WRAPPER]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stdout.starts_with(&format!(
            "{path}: {client} ({map}), {} server(s)\n",
            stdio.len() + remote.len()
        )),
        "{}",
        out.stdout
    );
    for name in remote {
        assert!(
            out.stdout
                .lines()
                .any(|line| line.trim_start().starts_with(name) && line.contains("not covered: ")),
            "{name} not reported as not covered:\n{}",
            out.stdout
        );
    }
    let backup = format!("{path}.mcpdome-backup");
    assert_eq!(std::fs::read_to_string(&backup).unwrap(), original, "the backup is the original");
    assert!(out.stdout.contains("backup: "), "{}", out.stdout);

    let wrapped_text = std::fs::read_to_string(&file).unwrap();
    let wrapped: Value = serde_json::from_str(&jsonc_to_json(&wrapped_text)).unwrap();
    let before: Value = serde_json::from_str(&jsonc_to_json(&original)).unwrap();
    let pointer = format!("/{}", map.replace('.', "/"));
    for (name, argv) in stdio {
        let server = &wrapped[&pointer[1..]][name];
        assert_eq!(server["command"], WRAPPER, "{name}");
        let mut expected = vec!["proxy", "--"];
        expected.extend_from_slice(argv);
        assert_eq!(server["args"], serde_json::json!(expected), "{name}");
        // Everything else in the entry is as it was.
        let (mut server, mut old) = (server.clone(), before[&pointer[1..]][name].clone());
        for entry in [&mut server, &mut old] {
            let object = entry.as_object_mut().unwrap();
            object.remove("command");
            object.remove("args");
        }
        assert_eq!(server, old, "{name}");
        assert!(
            out.stdout.contains(&format!("wrapped: {WRAPPER} proxy -- {}", argv.join(" "))),
            "{}",
            out.stdout
        );
    }
    for name in remote {
        assert_eq!(wrapped[&pointer[1..]][name], before[&pointer[1..]][name], "{name}");
    }

    // Idempotent: a second wrap changes nothing and writes nothing.
    let again = run_mcpdome(&["wrap", path, "--mcpdome", "/somewhere/else/mcpdome"]);
    assert_eq!(again.code, Some(0), "{again:?}");
    assert!(again.stdout.ends_with("nothing to change\n"), "{}", again.stdout);
    assert_eq!(again.stdout.matches("already wrapped").count(), stdio.len(), "{}", again.stdout);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), wrapped_text);

    // Unwrap gives back the original, byte for byte; the wrapped file is backed up beside the
    // first backup, which is not overwritten.
    let unwrapped = run_mcpdome(&["wrap", path, "--unwrap"]);
    assert_eq!(unwrapped.code, Some(0), "{unwrapped:?}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), original);
    assert_eq!(std::fs::read_to_string(&backup).unwrap(), original);
    assert_eq!(std::fs::read_to_string(format!("{backup}.1")).unwrap(), wrapped_text);
}

#[test]
fn wrap_claude_desktop() {
    wrap_round_trip(
        "claude_desktop_config.json",
        "mcpServers",
        "Claude Desktop",
        &[
            (
                "filesystem",
                &["npx", "-y", "@modelcontextprotocol/server-filesystem", "/Users/me/Desktop"],
            ),
            (
                "github",
                &[
                    "docker",
                    "run",
                    "-i",
                    "--rm",
                    "-e",
                    "GITHUB_PERSONAL_ACCESS_TOKEN",
                    "ghcr.io/github/github-mcp-server",
                ],
            ),
            ("time", &["uvx", "mcp-server-time", "--local-timezone=Europe/Paris"]),
        ],
        &[],
    );
}

#[test]
fn wrap_cursor() {
    wrap_round_trip(
        "cursor/mcp.json",
        "mcpServers",
        "Cursor or another mcpServers client",
        &[
            ("sqlite", &["uvx", "mcp-server-sqlite", "--db-path", "C:\\data\\app.db"]),
            ("memory", &["npx", "-y", "@modelcontextprotocol/server-memory"]),
        ],
        &["linear"],
    );
}

#[test]
fn wrap_claude_code() {
    wrap_round_trip(
        "claude-code/.mcp.json",
        "mcpServers",
        "Claude Code",
        &[
            ("git", &["uvx", "mcp-server-git", "--repository", "."]),
            ("local-tool", &["/opt/tools/bin/my-server"]),
        ],
        &["sentry"],
    );
}

#[test]
fn wrap_vs_code_keeps_comments() {
    wrap_round_trip(
        "vscode/mcp.json",
        "servers",
        "VS Code",
        &[
            ("fetch", &["uvx", "mcp-server-fetch"]),
            ("playwright", &["npx", "@playwright/mcp@latest"]),
        ],
        &["github"],
    );
}

#[test]
fn wrap_dry_run_writes_nothing() {
    let dir = TempDir::new("wrap_dry_run");
    let file = fixture(&dir, "claude_desktop_config.json");
    let path = file.to_str().unwrap();
    let original = std::fs::read(&file).unwrap();
    let out = run_mcpdome(&["wrap", path, "--dry-run", "--mcpdome", WRAPPER]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(std::fs::read(&file).unwrap(), original);
    assert!(!dir.join("claude_desktop_config.json.mcpdome-backup").exists());
    assert!(out.stdout.contains(&format!("--- {path}\n+++ {path} (wrapped)\n")), "{}", out.stdout);
    assert!(
        out.stdout.contains(
            "-      \"command\": \"npx\",\n+      \"command\": \"/usr/local/bin/mcpdome\",\n"
        ),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("+        \"proxy\",\n+        \"--\",\n+        \"npx\",\n"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.ends_with("(dry run: nothing was written)\n"), "{}", out.stdout);
}

#[test]
fn wrap_refuses_what_it_cannot_read() {
    let dir = TempDir::new("wrap_errors");
    let file = dir.write("settings.json", "{\"editor\": {\"fontSize\": 12}}\n");
    let out = run_mcpdome(&["wrap", file.to_str().unwrap()]);
    assert_eq!(out.code, Some(2));
    assert_eq!(
        out.stderr,
        format!(
            "mcpdome: {}: no `mcpServers` or `servers` map: is this an MCP client config?\n",
            file.display()
        )
    );
    let file = dir.write("broken.json", "{\"mcpServers\": {\"a\": {\"command\": \"x\",, }}}\n");
    let out = run_mcpdome(&["wrap", file.to_str().unwrap()]);
    assert_eq!(out.code, Some(2));
    assert_eq!(out.stderr, format!("mcpdome: {}: 1:38: expected a key or `}}`\n", file.display()));
}

/// A ledger written by a real session: an allowed call, a default denial and a rule denial.
fn session_ledger(dir: &TempDir) -> String {
    let config = format!("{ANNOUNCEMENT}\n{KEYS}\n[ledger]\npath = \"audit.jsonl\"\n");
    let config = dir.write("mcpdome.toml", &config);
    let config = config.to_str().unwrap();
    let mut proxy = Proxy::start_env(&["--config", config], &[], &[("MCPDOME_TOKEN", DEV_KEY)]);
    let read = call("1", "read_file", r#"{"path": "/tmp/a"}"#);
    proxy.send_line(&read);
    proxy.expect(&echo("1", &read));
    for id in ["2", "3"] {
        proxy.send_line(&call(id, "delete_file", r#"{"path":"/tmp/a"}"#));
        proxy.expect(&error(
            id,
            -32013,
            "no rule allows tool `delete_file` for psk:dev (default deny)",
        ));
    }
    proxy.send_line(&call("4", "grep", r#"{"q":"AKIAIOSFODNN7EXAMPLE"}"#));
    proxy.recv();
    proxy.close_stdin();
    proxy.finish().assert_exit(0);
    dir.arg("audit.jsonl")
}

#[test]
fn audit_summarises_a_real_session() {
    let dir = TempDir::new("audit_session");
    let ledger = session_ledger(&dir);
    let out = run_mcpdome(&["audit", &ledger]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines[0].starts_with(&format!("{ledger}: chain intact (6 lines, head ")),
        "{}",
        out.stdout
    );
    assert_eq!(lines[2], "4 decision(s): 3 deny, 1 allow; 1 start; 1 stop");
    let denied = out.stdout.find("denied (3):").expect("a denials section");
    let by_identity = out.stdout.find("by identity:").expect("an identity section");
    assert!(denied < by_identity, "denials come first:\n{}", out.stdout);
    assert_eq!(
        lines[5].split_whitespace().collect::<Vec<_>>(),
        ["count", "identity", "tool", "rule", "last", "reason"]
    );
    let rows: Vec<Vec<&str>> =
        lines[6..8].iter().map(|line| line.split_whitespace().take(5).collect()).collect();
    assert_eq!(
        rows,
        [
            ["2", "psk:dev", "delete_file", "(no", "rule)"],
            ["1", "psk:dev", "grep", "block-secrets", "denied"]
        ]
    );
    let by_rule = out.stdout.split("\nby rule:\n").nth(1).expect("a rule section");
    let by_rule: Vec<Vec<&str>> =
        by_rule.lines().map(|line| line.split_whitespace().collect()).collect();
    assert_eq!(
        by_rule,
        [
            vec!["(no", "rule)", "2", "deny"],
            vec!["block-secrets", "1", "deny"],
            vec!["dev-read-tools", "1", "allow"]
        ]
    );

    let out = run_mcpdome(&["audit", &ledger, "--json"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.stdout.lines().count(), 1);
    let summary: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(summary["chain"]["intact"], true);
    assert_eq!(summary["chain"]["lines"], 6);
    assert_eq!(summary["decisions"], serde_json::json!({ "allow": 1, "deny": 3 }));
    assert_eq!(summary["denials"][0]["tool"], "delete_file");
    assert_eq!(summary["denials"][0]["count"], 2);
    assert_eq!(summary["by_tool"][0]["name"], "delete_file");

    // A range that ends before the session holds nothing; one that starts before holds it all.
    let out = run_mcpdome(&["audit", &ledger, "--until", "2000-01-01T00:00:00Z"]);
    assert_eq!(
        out.stdout.lines().nth(1),
        Some("0 event(s) (until 2000-01-01T00:00:00Z)"),
        "{}",
        out.stdout
    );
    let out = run_mcpdome(&["audit", &ledger, "--since", "2000-01-01T01:00:00+01:00", "--json"]);
    let summary: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(summary["events"]["decision"], 4);
    let out = run_mcpdome(&["audit", &ledger, "--since", "last tuesday"]);
    assert_eq!(out.code, Some(2));
    assert!(out.stderr.contains("invalid value \"last tuesday\" for `--since`"), "{out:?}");
}

#[test]
fn audit_names_a_tampered_line_first() {
    let dir = TempDir::new("audit_tampered");
    let ledger = session_ledger(&dir);
    let text = std::fs::read_to_string(&ledger).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines[2] = lines[2].replace("delete_file", "read_file");
    std::fs::write(&ledger, lines.join("\n") + "\n").unwrap();
    let out = run_mcpdome(&["audit", &ledger]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert_eq!(
        out.stdout.lines().next().unwrap(),
        format!("{ledger}: chain BROKEN at line 3: hash does not match its content; lines from 3 on are not verified (check with `mcpdome verify-log`)")
    );
    let out = run_mcpdome(&["audit", &ledger, "--json"]);
    assert_eq!(out.code, Some(1));
    let summary: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        summary["chain"],
        serde_json::json!({ "intact": false, "line": 3, "error": "hash does not match its content" })
    );
}

#[test]
fn audit_follow_prints_new_events() {
    let dir = TempDir::new("audit_follow");
    let ledger = session_ledger(&dir);
    let mut child = Command::new(MCPDOME)
        .args(["audit", &ledger, "--follow"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, lines) = mpsc::channel();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let first = lines.recv_timeout(TIMEOUT).unwrap();
    assert!(first.contains("chain intact (6 lines"), "{first}");
    // A second session continues the chain; each of its events appears as it is written.
    session_ledger_again(&dir);
    let mut seen = Vec::new();
    while !seen.iter().any(|line: &String| line.starts_with("20") && line.contains(" stop")) {
        match lines.recv_timeout(TIMEOUT) {
            Ok(line) => seen.push(line),
            Err(_) => break,
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let events: Vec<&String> = seen.iter().filter(|line| line.starts_with("20")).collect();
    assert!(
        events
            .iter()
            .any(|line| line
                .contains(" decision deny psk:dev tools/call delete_file: no rule allows")),
        "{seen:#?}"
    );
    assert!(events.last().is_some_and(|line| line.contains(" stop")), "{seen:#?}");
}

/// Another session on the same config and ledger.
fn session_ledger_again(dir: &TempDir) {
    let config = dir.arg("mcpdome.toml");
    let mut proxy = Proxy::start_env(&["--config", &config], &[], &[("MCPDOME_TOKEN", DEV_KEY)]);
    proxy.send_line(&call("1", "delete_file", r#"{"path":"/x"}"#));
    proxy.recv();
    proxy.close_stdin();
    proxy.finish().assert_exit(0);
}

#[test]
fn log_format_json_writes_one_object_per_line() {
    let dir = TempDir::new("log_format_json");
    let config = dir.write("mcpdome.toml", &format!("{ANNOUNCEMENT}\n{KEYS}\n"));
    let config = config.to_str().unwrap();
    let mut proxy = Proxy::start_env(
        &["--config", config, "--log-format", "json"],
        &[],
        &[("MCPDOME_TOKEN", DEV_KEY)],
    );
    proxy.send_line(&call("1", "delete_file", r#"{"path":"/x"}"#));
    proxy.recv();
    proxy.close_stdin();
    let finished = proxy.finish();
    let lines: Vec<&str> = finished.stderr.lines().filter(|line| !line.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "a denial is logged");
    for line in &lines {
        let value: Value =
            serde_json::from_str(line).unwrap_or_else(|err| panic!("not JSON ({err}): {line}"));
        assert_eq!(value["level"], "warn", "{line}");
    }
    let out = run_mcpdome(&["proxy", "--log-format", "yaml", "--", "true"]);
    assert_eq!(
        out.stderr,
        "mcpdome: invalid value \"yaml\" for `--log-format`: expected text or json\n"
    );
}
