//! The interceptor chain through the binary: the announcement's policy, the bypass list,
//! housekeeping, `tools/list` filtering, identity, throttle and hot reload.
//!
//! Each test writes its config into a fresh temp dir and runs `mcpdome proxy --config FILE --
//! fake_server.py --log FILE`, so it can assert both what the client got (exact bytes) and what
//! the server received (a refused line never reaches it; a key is stripped before it does).

use std::ffi::OsString;

use serde_json::json;

use crate::util::{
    call, denied_by, echo, error, json, read_log, request, Finished, Proxy, TempDir, ANNOUNCEMENT,
    CI_KEY, DEV_KEY, KEYS,
};

const POLICY_DENIED: i32 = -32013;
const AUTH_FAILED: i32 = -32010;
const RATE_LIMITED: i32 = -32011;

/// A proxy started with a config file in a temp dir; its fake server logs what it receives.
struct Gateway {
    proxy: Proxy,
    config: std::path::PathBuf,
    dir: TempDir,
}

impl Gateway {
    fn start(test: &str, config: &str) -> Gateway {
        Gateway::start_with(test, config, &[], &[], &[])
    }

    fn start_with(
        test: &str,
        config: &str,
        options: &[&str],
        server_flags: &[&str],
        env: &[(&str, &str)],
    ) -> Gateway {
        let dir = TempDir::new(test);
        let config = dir.write("mcpdome.toml", config);
        let path = config.to_str().unwrap().to_owned();
        let log = dir.arg("received");
        let mut all_options = vec!["--config", &path];
        all_options.extend_from_slice(options);
        let mut all_flags = vec!["--log", &log];
        all_flags.extend_from_slice(server_flags);
        let proxy = Proxy::start_env(&all_options, &all_flags, env);
        Gateway { proxy, config, dir }
    }

    /// Sends `line` and expects the fake server's echo of it, unchanged.
    #[track_caller]
    fn allowed(&mut self, id: &str, line: &str) {
        self.proxy.send_line(line);
        self.proxy.expect(&echo(id, line));
    }

    /// Sends `line` and expects `reply` from mcpdome.
    #[track_caller]
    fn refused(&mut self, line: &str, reply: &str) {
        self.proxy.send_line(line);
        self.proxy.expect(reply);
    }

    /// Sends `line` and returns what the server received, from its echo (for lines mcpdome
    /// rewrites, such as one whose key it stripped).
    #[track_caller]
    fn forwarded(&mut self, line: &str) -> serde_json::Value {
        self.proxy.send_line(line);
        let answer = json(&self.proxy.recv());
        let echoed =
            answer["result"]["echo"].as_str().unwrap_or_else(|| panic!("not an echo: {answer}"));
        serde_json::from_str(echoed).unwrap()
    }

    /// Closes stdin, waits for a clean exit, and returns what the server received.
    #[track_caller]
    fn finish(self) -> (Vec<String>, Finished) {
        let Gateway { mut proxy, dir, .. } = self;
        proxy.close_stdin();
        let finished = proxy.finish();
        finished.assert_exit(0);
        let received = read_log(&dir.join("received"))
            .into_iter()
            .map(|line| String::from_utf8(line).unwrap())
            .collect();
        (received, finished)
    }
}

/// `lines`, each with its newline.
fn lines(lines: &[&str]) -> Vec<String> {
    lines.iter().map(|line| format!("{line}\n")).collect()
}

fn announcement_with_keys() -> String {
    format!("{ANNOUNCEMENT}\n{KEYS}")
}

/// The announcement's three rules, as its text describes them, for a `role:developer` key.
#[test]
fn announcement_policy_behaves_as_written() {
    let config = announcement_with_keys();
    let mut gw = Gateway::start_with(
        "announcement_policy",
        &config,
        &[],
        &[],
        &[("MCPDOME_TOKEN", DEV_KEY)],
    );
    // "Developers can read": every read tool it lists.
    let read = call("1", "read_file", r#"{"path":"/etc/hosts"}"#);
    gw.allowed("1", &read);
    let grep = call("2", "grep", r#"{"pattern":"TODO","path":"/src"}"#);
    gw.allowed("2", &grep);
    let status = call("3", "git_status", "{}");
    gw.allowed("3", &status);
    // "Write only to safe paths".
    let write = call("4", "write_file", r#"{"path":"/tmp/a.txt","content":"hello"}"#);
    gw.allowed("4", &write);
    // "not delete": nothing allows it, so the default denies it.
    gw.refused(
        &call("5", "delete_file", r#"{"path":"/tmp/a.txt"}"#),
        &error("5", POLICY_DENIED, "no rule allows tool `delete_file` for psk:dev (default deny)"),
    );
    // "Block secret patterns everywhere (highest priority)": even in a call that is allowed.
    gw.refused(
        &call("6", "read_file", r#"{"path":"/tmp/AKIAIOSFODNN7EXAMPLE"}"#),
        &denied_by(
            "6",
            POLICY_DENIED,
            r#"denied by rule "block-secrets": an argument matches deny_regex `AKIA[A-Z0-9]{16}`"#,
            "block-secrets",
        ),
    );
    let pat = format!("ghp_{}", "a1B2c3D4e5".repeat(4).split_at(36).0);
    gw.refused(
        &call("7", "write_file", &format!(r#"{{"path":"/tmp/a.txt","content":"token={pat}"}}"#)),
        &denied_by(
            "7",
            POLICY_DENIED,
            r#"denied by rule "block-secrets": an argument matches deny_regex `ghp_[a-zA-Z0-9]{36}`"#,
            "block-secrets",
        ),
    );
    let (received, _) = gw.finish();
    assert_eq!(received, lines(&[&read, &grep, &status, &write]));
}

#[test]
fn announcement_policy_denies_anonymous() {
    let config = announcement_with_keys();
    let mut gw = Gateway::start("announcement_anonymous", &config);
    gw.refused(
        &call("1", "read_file", r#"{"path":"/etc/hosts"}"#),
        &error("1", POLICY_DENIED, "no rule allows tool `read_file` for anonymous (default deny)"),
    );
    gw.refused(
        &call("2", "write_file", r#"{"path":"/tmp/a.txt"}"#),
        &error("2", POLICY_DENIED, "no rule allows tool `write_file` for anonymous (default deny)"),
    );
    let (received, _) = gw.finish();
    assert_eq!(received, lines(&[]));
}

/// The spec's bypass list: every one is denied, and none reaches the server.
#[test]
fn dev_write_safe_has_no_bypass() {
    let config = announcement_with_keys();
    let mut gw = Gateway::start_with(
        "dev_write_safe_bypasses",
        &config,
        &[],
        &[],
        &[("MCPDOME_TOKEN", DEV_KEY)],
    );
    let near_miss = |why: &str| {
        format!("no rule allows tool `write_file` for psk:dev (default deny); rule \"dev-write-safe\" does not apply: {why}")
    };
    let outside = near_miss("argument `path` is outside allow_glob");
    let not_string = near_miss("argument `path` is not a string");
    let cases: &[(&str, String)] = &[
        (r#"{"path":"/tmp/../etc/passwd"}"#, outside.clone()),
        (r#"{"path":"/tmp/./../../etc/x"}"#, outside.clone()),
        (r#"{"path":"//etc/passwd"}"#, outside.clone()),
        (r#"{"path":"/etc/passwd"}"#, outside.clone()),
        (r#"{"path":"/tmp/../tmp/../etc/passwd"}"#, outside.clone()),
        (r#"{"path":"/tmpevil/x"}"#, outside.clone()),
        (r#"{"path":"tmp/a.txt"}"#, outside.clone()),
        (r#"{"path":"/tmp/a.txt\u0000.sh"}"#, outside.clone()),
        (r#"{"content":"x"}"#, near_miss("argument `path` is missing")),
        (r#"{"path":null}"#, not_string.clone()),
        (r#"{"path":7}"#, not_string.clone()),
        (r#"{"path":["/tmp/a"]}"#, not_string.clone()),
        (r#"{"path":{"path":"/tmp/a"}}"#, not_string.clone()),
        (r#"{"path":"/tmp/a.env"}"#, near_miss(r"argument `path` matches deny_regex `.*\.env$`")),
        (
            r#"{"path":"/tmp/sub/.env"}"#,
            near_miss(r"argument `path` matches deny_regex `.*\.env$`"),
        ),
    ];
    for (idx, (args, reason)) in cases.iter().enumerate() {
        let id = (idx + 1).to_string();
        gw.refused(&call(&id, "write_file", args), &error(&id, POLICY_DENIED, reason));
    }
    // `path` twice in the raw JSON: the server might read either copy, so the call is refused
    // whatever the policy says. The same for an escaped spelling of the same key, and for
    // `arguments` or `name` given twice.
    gw.refused(
        &call("20", "write_file", r#"{"path":"/tmp/a","path":"/etc/passwd"}"#),
        &error("20", -32600, r#"arguments: key "path" appears more than once at line 1 column 38"#),
    );
    gw.refused(
        &call("21", "write_file", r#"{"path":"/tmp/a","p\u0061th":"/etc/passwd"}"#),
        &error("21", -32600, r#"arguments: key "path" appears more than once at line 1 column 43"#),
    );
    gw.refused(
        r#"{"jsonrpc":"2.0","id":22,"method":"tools/call","params":{"name":"write_file","arguments":{"path":"/tmp/a"},"arguments":{"path":"/etc/passwd"}}}"#,
        &error("22", -32600, r#"params: key "arguments" appears more than once at line 1 column 62"#),
    );
    gw.refused(
        r#"{"jsonrpc":"2.0","id":23,"method":"tools/call","params":{"name":"write_file","name":"delete_file","arguments":{"path":"/tmp/a"}}}"#,
        &error("23", -32600, r#"params: key "name" appears more than once at line 1 column 27"#),
    );
    // The control: a safe path still works.
    let ok = call("30", "write_file", r#"{"path":"/tmp/sub/../a.txt"}"#);
    gw.allowed("30", &ok);
    let (received, _) = gw.finish();
    assert_eq!(received, lines(&[&ok]));
}

/// `deny_regex` on `param = "*"` looks at every string: nested, in arrays, and in keys.
#[test]
fn block_secrets_sees_every_string() {
    let config = announcement_with_keys();
    let mut gw = Gateway::start_with(
        "block_secrets_everywhere",
        &config,
        &[],
        &[],
        &[("MCPDOME_TOKEN", DEV_KEY)],
    );
    let aws =
        r#"denied by rule "block-secrets": an argument matches deny_regex `AKIA[A-Z0-9]{16}`"#;
    let github =
        r#"denied by rule "block-secrets": an argument matches deny_regex `ghp_[a-zA-Z0-9]{36}`"#;
    let ghp = format!("ghp_{}", "x".repeat(36));
    let cases = [
        (r#"{"q":{"a":{"b":{"c":"key AKIAIOSFODNN7EXAMPLE"}}}}"#.to_owned(), aws),
        (format!(r#"{{"paths":["/src",["/lib","{ghp}"]]}}"#), github),
        (r#"{"env":{"AKIAIOSFODNN7EXAMPLE":"x"}}"#.to_owned(), aws),
        (r#"{"deep":[{"x":[{"y":{"AKIAIOSFODNN7EXAMPLE":null}}]}]}"#.to_owned(), aws),
    ];
    for (idx, (args, reason)) in cases.iter().enumerate() {
        let id = (idx + 1).to_string();
        gw.refused(
            &call(&id, "grep", args),
            &denied_by(&id, POLICY_DENIED, reason, "block-secrets"),
        );
    }
    let ok = call(
        "9",
        "grep",
        r#"{"q":{"a":{"b":{"c":"AKIA is a prefix, not a key"}}},"n":["ghp_short"]}"#,
    );
    gw.allowed("9", &ok);
    let (received, _) = gw.finish();
    assert_eq!(received, lines(&[&ok]));
}

/// `tools = "add"`, a string rather than a list, matches `add` and nothing else.
#[test]
fn tools_as_a_string_matches() {
    let config = r#"
[[rules]]
id = "add-only"
priority = 1
effect = "allow"
identities = "*"
tools = "add"
"#;
    let mut gw = Gateway::start("tools_as_a_string", config);
    let add = call("1", "add", r#"{"a":1,"b":2}"#);
    gw.allowed("1", &add);
    gw.refused(
        &call("2", "addition", "{}"),
        &error("2", POLICY_DENIED, "no rule allows tool `addition` for anonymous (default deny)"),
    );
    gw.refused(
        &call("3", "ad", "{}"),
        &error("3", POLICY_DENIED, "no rule allows tool `ad` for anonymous (default deny)"),
    );
    let (received, _) = gw.finish();
    assert_eq!(received, lines(&[&add]));
}

#[test]
fn tool_name_globs() {
    let config = r#"
[[rules]]
id = "git"
priority = 1
effect = "allow"
identities = "*"
tools = ["git_*", "fs?"]
"#;
    let mut gw = Gateway::start("tool_name_globs", config);
    let status = call("1", "git_status", "{}");
    gw.allowed("1", &status);
    let fs1 = call("2", "fs1", "{}");
    gw.allowed("2", &fs1);
    for (id, tool) in [("3", "gitx"), ("4", "my_git_status"), ("5", "fs12")] {
        gw.refused(
            &call(id, tool, "{}"),
            &error(
                id,
                POLICY_DENIED,
                &format!("no rule allows tool `{tool}` for anonymous (default deny)"),
            ),
        );
    }
    let (received, _) = gw.finish();
    assert_eq!(received, lines(&[&status, &fs1]));
}

/// `[mcpdome] default_effect = "allow"`: a deny list instead of an allow list.
#[test]
fn default_effect_allow() {
    let config = r#"
[mcpdome]
default_effect = "allow"

[[rules]]
id = "no-delete"
priority = 1
effect = "deny"
identities = "*"
tools = "delete_*"
"#;
    let mut gw = Gateway::start("default_effect_allow", config);
    let read = call("1", "read_file", "{}");
    gw.allowed("1", &read);
    gw.refused(
        &call("2", "delete_file", "{}"),
        &denied_by("2", POLICY_DENIED, r#"denied by rule "no-delete""#, "no-delete"),
    );
    let unknown = request("3", "vendor/extension");
    gw.allowed("3", &unknown);
    let (received, _) = gw.finish();
    assert_eq!(received, lines(&[&read, &unknown]));
}

const RESOURCES_AND_PROMPTS: &str = r#"
[[rules]]
id = "tmp-files"
priority = 1
effect = "allow"
identities = "*"
resources = ["file:///tmp/*"]

[[rules]]
id = "greet"
priority = 2
effect = "allow"
identities = "*"
prompts = "greet"
"#;

fn read_resource(id: &str, uri: &str) -> String {
    format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"resources/read","params":{{"uri":"{uri}"}}}}"#)
}

/// `resources/read` is governed by URI and `prompts/get` by name, each by its own kind of rule.
#[test]
fn resources_and_prompts_are_governed() {
    let mut gw = Gateway::start("resources_and_prompts", RESOURCES_AND_PROMPTS);
    let tmp = read_resource("1", "file:///tmp/a.txt");
    gw.allowed("1", &tmp);
    gw.refused(
        &read_resource("2", "file:///etc/passwd"),
        &error(
            "2",
            POLICY_DENIED,
            "no rule allows resource `file:///etc/passwd` for anonymous (default deny)",
        ),
    );
    let greet = r#"{"jsonrpc":"2.0","id":3,"method":"prompts/get","params":{"name":"greet","arguments":{"who":"x"}}}"#;
    gw.allowed("3", greet);
    gw.refused(
        r#"{"jsonrpc":"2.0","id":4,"method":"prompts/get","params":{"name":"other"}}"#,
        &error("4", POLICY_DENIED, "no rule allows prompt `other` for anonymous (default deny)"),
    );
    // A tool of the same name is not a prompt.
    gw.refused(
        &call("5", "greet", "{}"),
        &error("5", POLICY_DENIED, "no rule allows tool `greet` for anonymous (default deny)"),
    );
    let (received, _) = gw.finish();
    assert_eq!(received, lines(&[&tmp, greet]));
}

/// A resource pattern for a directory must not let `..` (plain or percent-encoded, which RFC 3986
/// makes the same URI) walk out of it.
#[test]
fn resource_patterns_do_not_allow_traversal() {
    let mut gw = Gateway::start("resource_traversal", RESOURCES_AND_PROMPTS);
    for (idx, uri) in [
        "file:///tmp/../etc/passwd",
        "file:///tmp/%2e%2e/etc/passwd",
        "file:///tmp/sub/../../etc/passwd",
    ]
    .into_iter()
    .enumerate()
    {
        let id = (idx + 1).to_string();
        gw.proxy.send_line(&read_resource(&id, uri));
        let answer = json(&gw.proxy.recv());
        assert_eq!(answer["error"]["code"], POLICY_DENIED, "{uri} was not denied: {answer}");
    }
    let (received, _) = gw.finish();
    assert_eq!(received, lines(&[]));
}

/// An action sent without an id (as a notification) is still an action: the policy must not be
/// skipped because nobody waits for an answer. It cannot be answered, so it is dropped.
#[test]
fn actions_sent_as_notifications_are_not_forwarded() {
    let config = announcement_with_keys();
    let mut gw = Gateway::start("action_notifications", &config);
    gw.proxy.send_line(r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"delete_file","arguments":{"path":"/"}}}"#);
    gw.proxy.send_line(
        r#"{"jsonrpc":"2.0","method":"resources/read","params":{"uri":"file:///etc/shadow"}}"#,
    );
    let initialized = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
    gw.proxy.send_line(initialized);
    let ping = request("1", "ping");
    gw.allowed("1", &ping);
    let (received, _) = gw.finish();
    assert_eq!(received, lines(&[initialized, &ping]));
}

/// A policy written only about tools still lets a session start and run.
#[test]
fn housekeeping_is_never_denied_by_tool_rules() {
    let config = announcement_with_keys();
    let mut gw = Gateway::start("housekeeping", &config);
    let init = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"it","version":"1"}}}"#;
    gw.allowed("0", init);
    let initialized = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
    gw.proxy.send_line(initialized);
    let mut sent = vec![init.to_owned(), initialized.to_owned()];
    for (idx, method) in [
        "ping",
        "server/discover",
        "tools/list",
        "resources/list",
        "resources/templates/list",
        "prompts/list",
    ]
    .into_iter()
    .enumerate()
    {
        let id = (idx + 1).to_string();
        let line = request(&id, method);
        gw.allowed(&id, &line);
        sent.push(line);
    }
    let progress = r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":1,"progress":1}}"#;
    gw.proxy.send_line(progress);
    sent.push(progress.to_owned());
    // Actions are still governed: a resource no rule names is denied by default.
    gw.refused(
        r#"{"jsonrpc":"2.0","id":20,"method":"resources/read","params":{"uri":"file:///etc/passwd"}}"#,
        &error("20", POLICY_DENIED, "no rule allows resource `file:///etc/passwd` for anonymous (default deny)"),
    );
    let last = request("21", "ping");
    gw.allowed("21", &last);
    sent.push(last);
    let (received, _) = gw.finish();
    let sent: Vec<&str> = sent.iter().map(String::as_str).collect();
    assert_eq!(received, lines(&sent));
}

/// The client's answer to a server request is housekeeping too.
#[test]
fn client_responses_are_not_governed() {
    let config = format!(
        "{ANNOUNCEMENT}\n[[rules]]\nid = \"fake\"\npriority = 200\neffect = \"allow\"\nidentities = \"*\"\nmethods = [\"fake/roots\"]\n"
    );
    let mut gw = Gateway::start("client_responses", &config);
    gw.proxy.send_line(&request("1", "fake/roots"));
    gw.proxy.expect(r#"{"jsonrpc":"2.0","id":0,"method":"roots/list"}"#);
    let answer = r#"{"jsonrpc":"2.0","id":0,"result":{"roots":[]}}"#;
    gw.proxy.send_line(answer);
    gw.proxy.expect(&format!(
        r#"{{"jsonrpc":"2.0","id":1,"result":{{"client_said":{}}}}}"#,
        crate::util::json_string(answer)
    ));
    gw.finish();
}

const TOOLS: &[&str] = &["--tools", "read_file,write_file,delete_file,grep"];

fn tool_names(answer: &serde_json::Value) -> Vec<&str> {
    let tools =
        answer["result"]["tools"].as_array().unwrap_or_else(|| panic!("no tools: {answer}"));
    tools.iter().map(|tool| tool["name"].as_str().unwrap()).collect()
}

/// `tools/list` offers each identity only the tools it may call.
#[test]
fn tools_list_is_filtered_per_identity() {
    let config = announcement_with_keys();
    let mut gw = Gateway::start_with("tools_list_filtered", &config, &[], TOOLS, &[]);
    // Anonymous may call nothing.
    gw.proxy.send_line(&request("1", "tools/list"));
    let answer = json(&gw.proxy.recv());
    assert_eq!(answer, json!({"jsonrpc":"2.0","id":1,"result":{"tools":[]}}));
    // A per-request key: this request is the developer's.
    gw.proxy.send_line(&format!(
        r#"{{"jsonrpc":"2.0","id":2,"method":"tools/list","params":{{"_meta":{{"mcpdome/token":"{DEV_KEY}"}}}}}}"#
    ));
    let answer = json(&gw.proxy.recv());
    assert_eq!(tool_names(&answer), ["read_file", "write_file", "grep"]);
    assert_eq!(
        answer["result"]["tools"][0],
        json!({"name":"read_file","inputSchema":{"type":"object"}})
    );
    // A developer session.
    let init = format!(
        r#"{{"jsonrpc":"2.0","id":3,"method":"initialize","params":{{"protocolVersion":"2025-06-18","_mcpdome_psk":"{DEV_KEY}"}}}}"#
    );
    gw.forwarded(&init);
    gw.proxy.send_line(&request("4", "tools/list"));
    assert_eq!(tool_names(&json(&gw.proxy.recv())), ["read_file", "write_file", "grep"]);
    // A filtered tool is still denied by name.
    gw.refused(
        &call("5", "delete_file", r#"{"path":"/tmp/a"}"#),
        &error("5", POLICY_DENIED, "no rule allows tool `delete_file` for psk:dev (default deny)"),
    );
    gw.finish();
}

#[test]
fn tools_list_for_another_role_is_empty() {
    let config = announcement_with_keys();
    let mut gw =
        Gateway::start_with("tools_list_ci", &config, &[], TOOLS, &[("MCPDOME_TOKEN", CI_KEY)]);
    gw.proxy.send_line(&request("\"l\"", "tools/list"));
    assert_eq!(json(&gw.proxy.recv()), json!({"jsonrpc":"2.0","id":"l","result":{"tools":[]}}));
    gw.refused(
        &call("2", "read_file", r#"{"path":"/tmp/a"}"#),
        &error("2", POLICY_DENIED, "no rule allows tool `read_file` for psk:ci (default deny)"),
    );
    gw.finish();
}

// Identity.

const INIT_PARAMS: &str =
    r#""protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"it","version":"1"}"#;

fn initialize_with(id: &str, field: &str, key: &str) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"initialize","params":{{{INIT_PARAMS},"{field}":"{key}"}}}}"#
    )
}

#[track_caller]
fn assert_no_key_reached_the_server(received: &[String]) {
    for line in received {
        assert!(
            !line.contains("_mcpdome") && !line.contains("mcpdome/token"),
            "a key field reached the server: {line}"
        );
        assert!(
            !line.contains(DEV_KEY) && !line.contains(CI_KEY),
            "a key reached the server: {line}"
        );
    }
}

/// `_mcpdome_psk` in `initialize`: stripped, and the identity holds for the session.
#[test]
fn key_in_initialize_is_stripped_and_holds_for_the_session() {
    let config = announcement_with_keys();
    let mut gw = Gateway::start("key_in_initialize", &config);
    let seen = gw.forwarded(&initialize_with("1", "_mcpdome_psk", DEV_KEY));
    let expected =
        format!(r#"{{"jsonrpc":"2.0","id":1,"method":"initialize","params":{{{INIT_PARAMS}}}}}"#);
    assert_eq!(seen, serde_json::from_str::<serde_json::Value>(&expected).unwrap());
    let read = call("2", "read_file", r#"{"path":"/tmp/a"}"#);
    gw.allowed("2", &read);
    let (received, _) = gw.finish();
    assert_eq!(received.len(), 2);
    assert_eq!(received[1], format!("{read}\n"));
    assert_no_key_reached_the_server(&received);
}

/// `[[api_key]]` and `_mcpdome_api_key` work like `[[psk]]` and `_mcpdome_psk`.
#[test]
fn api_key_in_initialize() {
    let config = format!(
        "{ANNOUNCEMENT}\n[[api_key]]\nkey_id = \"legacy\"\nsecret_sha256 = \"ccd554a1f6849cbabfadb884125e5af0a9ebd2cba0c971013256f2bae4075f36\"\nlabels = [\"role:developer\"]\n"
    );
    let mut gw = Gateway::start("api_key_in_initialize", &config);
    gw.forwarded(&initialize_with("1", "_mcpdome_api_key", CI_KEY));
    gw.refused(
        &call("2", "delete_file", "{}"),
        &error(
            "2",
            POLICY_DENIED,
            "no rule allows tool `delete_file` for api_key:legacy (default deny)",
        ),
    );
    let read = call("3", "read_file", r#"{"path":"/tmp/a"}"#);
    gw.allowed("3", &read);
    let (received, _) = gw.finish();
    assert_no_key_reached_the_server(&received);
}

/// `_meta["mcpdome/token"]`: for this request only, and stripped (the rest of `_meta` stays).
#[test]
fn key_in_meta_is_per_request_and_stripped() {
    let config = announcement_with_keys();
    let mut gw = Gateway::start("key_in_meta", &config);
    let with_key = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"read_file","arguments":{{"path":"/tmp/a"}},"_meta":{{"progressToken":"p1","mcpdome/token":"{DEV_KEY}"}}}}}}"#
    );
    let seen = gw.forwarded(&with_key);
    assert_eq!(
        seen,
        json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"/tmp/a"},"_meta":{"progressToken":"p1"}}})
    );
    gw.refused(
        &call("2", "read_file", r#"{"path":"/tmp/a"}"#),
        &error("2", POLICY_DENIED, "no rule allows tool `read_file` for anonymous (default deny)"),
    );
    let (received, _) = gw.finish();
    assert_eq!(received.len(), 1);
    assert_no_key_reached_the_server(&received);
}

/// A key is a key however its field name is spelled in JSON: `"mcpdome\/token"` and
/// `"mcpdome/\u0074oken"` are the same name, and the server decodes them as such.
#[test]
fn escaped_key_field_is_still_a_key() {
    let config = announcement_with_keys();
    let mut gw = Gateway::start("escaped_key_field", &config);
    gw.forwarded(&format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"_meta":{{"mcpdome/\u0074oken":"{DEV_KEY}"}}}}}}"#
    ));
    gw.forwarded(&format!(
        r#"{{"jsonrpc":"2.0","id":2,"method":"initialize","params":{{"_mcpdome_ps\u006b":"{DEV_KEY}"}}}}"#
    ));
    // In a developer session, a request with psk:ci's key is psk:ci's.
    gw.refused(
        &format!(
            r#"{{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{{"name":"read_file","arguments":{{}},"_meta":{{"mcpdome\/token":"{CI_KEY}"}}}}}}"#
        ),
        &error("3", POLICY_DENIED, "no rule allows tool `read_file` for psk:ci (default deny)"),
    );
    let (received, _) = gw.finish();
    assert_no_key_reached_the_server(&received);
}

/// Notifications are not checked, but a key in one is still stripped: the server never sees a
/// key.
#[test]
fn keys_in_notifications_are_stripped() {
    let config = announcement_with_keys();
    let mut gw = Gateway::start("keys_in_notifications", &config);
    gw.proxy.send_line(&format!(
        r#"{{"jsonrpc":"2.0","method":"notifications/initialized","params":{{"_meta":{{"mcpdome/token":"{DEV_KEY}"}}}}}}"#
    ));
    gw.proxy.send_line(&format!(
        r#"{{"jsonrpc":"2.0","method":"notifications/progress","params":{{"progressToken":1,"progress":1,"_mcpdome_psk":"{CI_KEY}"}}}}"#
    ));
    let ping = request("1", "ping");
    gw.allowed("1", &ping);
    let (received, _) = gw.finish();
    assert_eq!(received.len(), 3, "{received:?}");
    assert_no_key_reached_the_server(&received);
}

/// A reload that revokes a key or changes its labels applies to sessions already open, not only
/// to new ones: a revoked key must stop working.
#[test]
fn reload_applies_to_an_open_session() {
    let config = announcement_with_keys();
    let mut gw =
        Gateway::start_with("reload_open_session", &config, &["--log-level", "info"], &[], &[]);
    let name = gw.config.display().to_string();
    gw.forwarded(&initialize_with("1", "_mcpdome_psk", DEV_KEY));
    let read = call("2", "read_file", r#"{"path":"/tmp/a"}"#);
    gw.allowed("2", &read);

    // psk:dev loses role:developer.
    let keys = KEYS.replacen(r#"labels = ["role:developer"]"#, "labels = []", 1);
    gw.dir.write("mcpdome.toml", &format!("{ANNOUNCEMENT}\n{keys}"));
    gw.proxy.wait_stderr(&format!("reloaded {name} (the file changed)"), 1);
    gw.refused(
        &call("3", "read_file", r#"{"path":"/tmp/a"}"#),
        &error("3", POLICY_DENIED, "no rule allows tool `read_file` for psk:dev (default deny)"),
    );

    // The key is revoked altogether.
    gw.dir.write(
        "mcpdome.toml",
        &format!(
            "{ANNOUNCEMENT}
"
        ),
    );
    gw.proxy.wait_stderr(&format!("reloaded {name} (the file changed)"), 2);
    gw.proxy.send_line(&call("4", "read_file", r#"{"path":"/tmp/a"}"#));
    let answer = json(&gw.proxy.recv());
    assert!(answer["error"].is_object(), "a revoked key still works: {answer}");
    gw.finish();
}

/// `MCPDOME_TOKEN` in the gateway's environment: every request is that identity's.
#[test]
fn key_in_environment() {
    let config = announcement_with_keys();
    let mut gw =
        Gateway::start_with("key_in_env", &config, &[], &[], &[("MCPDOME_TOKEN", DEV_KEY)]);
    let init = request("1", "initialize");
    gw.allowed("1", &init);
    let read = call("2", "read_file", r#"{"path":"/tmp/a"}"#);
    gw.allowed("2", &read);
    gw.finish();
}

/// The key in the gateway's environment is the gateway's: the server it starts does not inherit
/// it (a server that reads its environment would otherwise hold the key that guards it).
#[test]
fn key_in_environment_is_not_handed_to_the_server() {
    let dir = TempDir::new("key_not_handed_on");
    let config =
        dir.write("mcpdome.toml", &format!("[mcpdome]\ndefault_effect = \"allow\"\n{KEYS}"));
    let server = r#"read line; printf '{"jsonrpc":"2.0","id":1,"result":{"token":"%s"}}\n' "${MCPDOME_TOKEN-unset}""#;
    let args: Vec<OsString> =
        ["proxy", "--config", &config.to_string_lossy(), "--", "sh", "-c", server]
            .iter()
            .map(OsString::from)
            .collect();
    let mut proxy = Proxy::spawn_env(&args, &[("MCPDOME_TOKEN", DEV_KEY)]);
    proxy.send_line(&request("1", "ping"));
    proxy.expect(r#"{"jsonrpc":"2.0","id":1,"result":{"token":"unset"}}"#);
    proxy.close_stdin();
    proxy.finish();
}

#[test]
fn wrong_key_in_environment_is_refused() {
    let config = announcement_with_keys();
    let mut gw =
        Gateway::start_with("wrong_key_in_env", &config, &[], &[], &[("MCPDOME_TOKEN", "nope")]);
    gw.refused(
        &request("1", "ping"),
        &error("1", AUTH_FAILED, "MCPDOME_TOKEN matches no configured key"),
    );
    let (received, _) = gw.finish();
    assert_eq!(received, lines(&[]));
}

/// A policy under which anonymous may read, so that a wrong key treated as anonymous would be
/// allowed.
const ANYONE_READS: &str = r#"
[[rules]]
id = "anyone-reads"
priority = 1
effect = "allow"
identities = "*"
tools = "read_file"
"#;

/// A wrong key is refused, never treated as anonymous, wherever it comes from.
#[test]
fn wrong_key_is_refused_not_anonymous() {
    let config = format!("{ANYONE_READS}\n{KEYS}");
    let mut gw = Gateway::start("wrong_key", &config);
    gw.refused(
        &initialize_with("1", "_mcpdome_psk", "wrong-key"),
        &error("1", AUTH_FAILED, "unknown key"),
    );
    gw.refused(
        &format!(
            r#"{{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{{"name":"read_file","arguments":{{}},"_meta":{{"mcpdome/token":"{}"}}}}}}"#,
            &DEV_KEY[1..]
        ),
        &error("2", AUTH_FAILED, "unknown key"),
    );
    gw.refused(
        r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"read_file","arguments":{},"_meta":{"mcpdome/token":7}}}"#,
        &error("3", AUTH_FAILED, "the key must be a string"),
    );
    // No key at all is anonymous, which this policy allows to read.
    let read = call("4", "read_file", "{}");
    gw.allowed("4", &read);
    let (received, _) = gw.finish();
    assert_eq!(received, lines(&[&read]));
}

/// A key in a message when the config has no keys at all matches no configured key: it is
/// refused like any wrong key, and it never reaches the server.
#[test]
fn key_when_no_key_is_configured_is_refused() {
    let mut gw = Gateway::start("key_without_keys", ANYONE_READS);
    gw.refused(
        &format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"read_file","arguments":{{}},"_meta":{{"mcpdome/token":"{DEV_KEY}"}}}}}}"#
        ),
        &error("1", AUTH_FAILED, "unknown key"),
    );
    let read = call("2", "read_file", "{}");
    gw.allowed("2", &read);
    let (received, _) = gw.finish();
    assert_no_key_reached_the_server(&received);
    assert_eq!(received, lines(&[&read]));
}

#[test]
fn anonymous_refused_when_not_allowed() {
    let config = format!("[sentinel]\nallow_anonymous = false\n{ANYONE_READS}\n{KEYS}");
    let mut gw = Gateway::start("anonymous_refused", &config);
    let required = "a key is required ([sentinel] allow_anonymous = false)";
    gw.refused(&request("1", "ping"), &error("1", AUTH_FAILED, required));
    gw.refused(&request("2", "initialize"), &error("2", AUTH_FAILED, required));
    gw.refused(&call("3", "read_file", "{}"), &error("3", AUTH_FAILED, required));
    // With a key, the session works.
    gw.forwarded(&initialize_with("4", "_mcpdome_psk", CI_KEY));
    let ping = request("5", "ping");
    gw.allowed("5", &ping);
    let read = call("6", "read_file", "{}");
    gw.allowed("6", &read);
    let (received, _) = gw.finish();
    assert_eq!(received.len(), 3);
}

/// An `initialize` with a good key that a later check refuses (here, a rate limit) must not
/// leave that key's session behind.
#[test]
fn denied_initialize_leaves_no_session() {
    let config = format!(
        "{}\n[rate_limit]\nper_identity = {{ rate = 0.001, burst = 1 }}\n",
        announcement_with_keys()
    );
    let mut gw = Gateway::start("denied_initialize", &config);
    // Spend psk:dev's only token.
    gw.forwarded(&format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"_meta":{{"mcpdome/token":"{DEV_KEY}"}}}}}}"#
    ));
    gw.proxy.send_line(&initialize_with("2", "_mcpdome_psk", DEV_KEY));
    let answer = json(&gw.proxy.recv());
    assert_eq!(answer["error"]["code"], RATE_LIMITED, "{answer}");
    // The next request is anonymous (its own bucket, then the policy's default deny), not
    // psk:dev (whose bucket is empty).
    gw.refused(
        &call("3", "read_file", r#"{"path":"/tmp/a"}"#),
        &error("3", POLICY_DENIED, "no rule allows tool `read_file` for anonymous (default deny)"),
    );
    let (received, _) = gw.finish();
    assert_eq!(received.len(), 1);
}

/// `secret = "..."` (plain text) works, with a warning that gives the digest to store instead.
#[test]
fn plain_secret_works_with_a_warning() {
    use sha2::Digest;
    let config = format!(
        "{ANNOUNCEMENT}\n[[psk]]\nkey_id = \"plain\"\nsecret = \"plain-secret\"\nlabels = [\"role:developer\"]\n"
    );
    let mut gw = Gateway::start("plain_secret", &config);
    gw.forwarded(&initialize_with("1", "_mcpdome_psk", "plain-secret"));
    let read = call("2", "read_file", r#"{"path":"/tmp/a"}"#);
    gw.allowed("2", &read);
    let (received, finished) = gw.finish();
    assert!(!received.concat().contains("plain-secret"));
    let digest: String =
        sha2::Sha256::digest(b"plain-secret").iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        finished.stderr,
        format!(
            "mcpdome: warn: psk[0] (key_id = \"plain\"): the secret is stored in plain text; store `secret_sha256 = \"{digest}\"` instead\n"
        )
    );
}

// Throttle.

/// Checks a rate-limit refusal: code, `data.rule`, a message naming the limit, and a
/// `retry_after_ms` in `(0, max_ms]` that the message repeats.
#[track_caller]
fn assert_limited(line: &[u8], id: u64, limit: &str, kind: &str, max_ms: u64) {
    let answer = json(line);
    let retry =
        answer["error"]["data"]["retry_after_ms"].as_u64().unwrap_or_else(|| panic!("{answer}"));
    assert!(retry > 0 && retry <= max_ms, "retry_after_ms {retry}: {answer}");
    assert_eq!(
        answer,
        json!({"jsonrpc":"2.0","id":id,"error":{
            "code":RATE_LIMITED,
            "message":format!("mcpdome: {limit} is exceeded; retry after {retry} ms"),
            "data":{"retry_after_ms":retry,"rule":kind},
        }})
    );
}

#[test]
fn per_tool_rate_limit() {
    let config = "[rate_limit]\nper_tool = { rate = 1, burst = 2 }\n";
    let mut gw = Gateway::start("per_tool_rate_limit", config);
    let one = call("1", "search", r#"{"q":"a"}"#);
    gw.allowed("1", &one);
    let two = call("2", "search", r#"{"q":"b"}"#);
    gw.allowed("2", &two);
    gw.proxy.send_line(&call("3", "search", r#"{"q":"c"}"#));
    assert_limited(&gw.proxy.recv(), 3, "the rate limit for this tool", "tool", 1000);
    // Other tools and other requests have their own buckets (or none).
    let other = call("4", "fetch", "{}");
    gw.allowed("4", &other);
    let ping = request("5", "ping");
    gw.allowed("5", &ping);
    let (received, _) = gw.finish();
    assert_eq!(received, lines(&[&one, &two, &other, &ping]));
}

#[test]
fn budget_refuses_with_its_name() {
    let config = "[[budget]]\nid = \"hourly-calls\"\nmax_calls = 2\nwindow = \"1h\"\n";
    let mut gw = Gateway::start("budget", config);
    gw.allowed("1", &call("1", "search", "{}"));
    gw.allowed("2", &call("2", "fetch", "{}"));
    gw.proxy.send_line(&call("3", "search", "{}"));
    assert_limited(&gw.proxy.recv(), 3, "the budget `hourly-calls`", "hourly-calls", 3_600_000);
    // A budget counts tool calls only.
    gw.allowed("4", &request("4", "ping"));
    gw.finish();
}

#[test]
fn budget_cost_per_tool() {
    let config = r#"
[[budget]]
id = "spend"
identities = { labels = ["role:developer"] }
max_calls = 3
window = "1d"
cost = { expensive = 2, free = 0 }
"#;
    let config = format!("{config}\n{KEYS}");
    let mut gw =
        Gateway::start_with("budget_cost", &config, &[], &[], &[("MCPDOME_TOKEN", DEV_KEY)]);
    gw.allowed("1", &call("1", "expensive", "{}"));
    gw.allowed("2", &call("2", "free", "{}"));
    gw.proxy.send_line(&call("3", "expensive", "{}"));
    assert_limited(&gw.proxy.recv(), 3, "the budget `spend`", "spend", 86_400_000);
    gw.allowed("4", &call("4", "cheap", "{}"));
    gw.proxy.send_line(&call("5", "cheap", "{}"));
    assert_limited(&gw.proxy.recv(), 5, "the budget `spend`", "spend", 86_400_000);
    gw.allowed("6", &call("6", "free", "{}"));
    gw.finish();
}

// Hot reload.

fn reader(effect: &str) -> String {
    format!("[[rules]]\nid = \"reader\"\npriority = 1\neffect = {effect:<7}\nidentities = \"*\"\ntools = \"read_file\"\n")
}

#[test]
fn hot_reload_follows_the_file_and_keeps_the_old_policy_on_errors() {
    let mut gw =
        Gateway::start_with("hot_reload", &reader("\"allow\""), &["--log-level", "info"], &[], &[]);
    let name = gw.config.display().to_string();
    gw.allowed("1", &call("1", "read_file", "{}"));

    gw.dir.write("mcpdome.toml", &format!("# now denied\n{}", reader("\"deny\"")));
    gw.proxy.wait_stderr(&format!("mcpdome: info: reloaded {name} (the file changed)\n"), 1);
    let denied = |id: &str| denied_by(id, POLICY_DENIED, r#"denied by rule "reader""#, "reader");
    gw.refused(&call("2", "read_file", "{}"), &denied("2"));

    gw.dir.write("mcpdome.toml", "[[rules]\nthis is not TOML\n");
    gw.proxy.wait_stderr("; keeping the settings in force\n", 1);
    gw.refused(&call("3", "read_file", "{}"), &denied("3"));

    // A valid file again, with a misspelled field: still an error, still the old policy.
    gw.dir.write("mcpdome.toml", &reader("\"allow\"").replace("tools =", "tool ="));
    gw.proxy.wait_stderr("; keeping the settings in force\n", 2);
    gw.refused(&call("4", "read_file", "{}"), &denied("4"));

    gw.dir.write("mcpdome.toml", &reader("\"allow\""));
    gw.proxy.wait_stderr(&format!("mcpdome: info: reloaded {name} (the file changed)\n"), 2);
    gw.allowed("5", &call("5", "read_file", "{}"));

    let (_, finished) = gw.finish();
    let errors: Vec<&str> =
        finished.stderr.lines().filter(|line| line.starts_with("mcpdome: error:")).collect();
    assert_eq!(errors.len(), 2, "{}", finished.stderr);
    assert!(
        errors[0].starts_with(&format!("mcpdome: error: invalid config file `{name}`:")),
        "{}",
        finished.stderr
    );
    assert!(finished.stderr.contains(&format!("  {name}:1:")), "{}", finished.stderr);
    assert!(
        finished
            .stderr
            .contains(&format!("  {name}:6:1: rules[0] (id = \"reader\"): unknown field `tool`")),
        "{}",
        finished.stderr
    );
}

/// SIGHUP re-reads the file even when the watcher cannot tell it changed (same size, same
/// modification time).
#[test]
fn sighup_reloads() {
    let mut gw = Gateway::start_with(
        "sighup_reloads",
        &reader("\"allow\""),
        &["--log-level", "info"],
        &[],
        &[],
    );
    let name = gw.config.display().to_string();
    gw.allowed("1", &call("1", "read_file", "{}"));

    let before = std::fs::metadata(&gw.config).unwrap();
    let deny = reader("\"deny\"");
    assert_eq!(deny.len() as u64, before.len());
    let tmp = gw.dir.join("next.toml");
    std::fs::write(&tmp, &deny).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&tmp)
        .unwrap()
        .set_modified(before.modified().unwrap())
        .unwrap();
    std::fs::rename(&tmp, &gw.config).unwrap();
    // Longer than the watcher's poll: it must not notice.
    std::thread::sleep(std::time::Duration::from_millis(300));
    gw.allowed("2", &call("2", "read_file", "{}"));

    gw.proxy.kill("HUP");
    gw.proxy.wait_stderr(&format!("mcpdome: info: reloaded {name} (SIGHUP)\n"), 1);
    gw.refused(
        &call("3", "read_file", "{}"),
        &denied_by("3", POLICY_DENIED, r#"denied by rule "reader""#, "reader"),
    );
    let (_, finished) = gw.finish();
    assert_eq!(finished.stderr.matches("reloaded").count(), 1, "{}", finished.stderr);
}
