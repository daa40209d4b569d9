//! `mcpdome validate`, `explain` and `keygen`: a policy can be checked and tried before it is
//! deployed, and a key made for it.

use crate::util::{run_mcpdome, Output, TempDir, ANNOUNCEMENT, DEV_KEY, KEYS};

const ANNOUNCEMENT_FILE: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/config/announcement.toml");

#[test]
fn validate_summarises_the_announcement() {
    let out = run_mcpdome(&["validate", ANNOUNCEMENT_FILE]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.stderr, "");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], format!("{ANNOUNCEMENT_FILE}: valid"));
    assert_eq!(lines[1], "policy: 3 rule(s), default deny");
    // The rules in the order they are tried.
    let rules: Vec<Vec<&str>> =
        lines[2..5].iter().map(|line| line.split_whitespace().collect()).collect();
    assert_eq!(
        rules,
        [
            ["1", "deny", "block-secrets"],
            ["100", "allow", "dev-read-tools"],
            ["110", "allow", "dev-write-safe"]
        ]
    );
    assert_eq!(lines[5], "identities: 0 key(s), anonymous allowed");
}

#[test]
fn validate_reports_every_error_with_its_position_and_rule() {
    let dir = TempDir::new("validate_errors");
    // Line 17: `tools` misspelled; line 26 (in the `arguments` starting on line 25): `allow_glob`
    // misspelled; and a section that does not exist.
    let text = ANNOUNCEMENT
        .replace("tools = [\"read_file\"", "tool = [\"read_file\"")
        .replace("allow_glob", "alow_glob");
    let text = format!("{text}\n[sentinal]\nallow_anonymous = false\n");
    let file = dir.write("policy.toml", &text);
    let file = file.to_str().unwrap();
    let out = run_mcpdome(&["validate", file]);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert_eq!(out.stdout, "");
    let expected = [
        format!("{file}:29:1: unknown section `sentinal`; expected one of mcpdome, sentinel, psk, api_key, rate_limit, budget, rules, ledger, ward, schema_pin"),
        format!("{file}:17:1: rules[1] (id = \"dev-read-tools\"): unknown field `tool`; expected one of id, description, priority, effect, identities, tools, resources, prompts, methods, arguments, hours, days"),
        format!("{file}:12:1: rules[1] (id = \"dev-read-tools\"): a rule must name what it governs: `tools`, `resources`, `prompts` or `methods`"),
        format!("{file}:25:1: rules[2] (id = \"dev-write-safe\"): unknown field `arguments[0].alow_glob`; expected param, allow_glob, deny_regex or max_length"),
        format!("{file}: 4 error(s)"),
    ];
    assert_eq!(out.stderr.lines().collect::<Vec<_>>(), expected);
}

#[test]
fn validate_reports_toml_syntax_errors() {
    let dir = TempDir::new("validate_syntax");
    let file = dir.write("policy.toml", "[[rules]]\nid = \"x\"\npriority = \n");
    let file = file.to_str().unwrap();
    let out = run_mcpdome(&["validate", file]);
    assert_eq!(
        out,
        Output {
            code: Some(2),
            stdout: String::new(),
            stderr: format!(
                "{file}:3:12: TOML syntax: expected a value, found a newline\n{file}: 1 error(s)\n"
            ),
        }
    );
}

/// The proxy refuses to start on a config `validate` rejects, naming the same error.
#[test]
fn proxy_refuses_an_invalid_config() {
    let dir = TempDir::new("proxy_invalid_config");
    let file =
        dir.write("policy.toml", &ANNOUNCEMENT.replace("effect = \"deny\"", "effect = \"block\""));
    let file = file.to_str().unwrap();
    let out = run_mcpdome(&["proxy", "--config", file, "--", "true"]);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert_eq!(
        out.stderr,
        format!("mcpdome: invalid config file `{file}`:\n  {file}:5:1: rules[0] (id = \"block-secrets\"): `effect` must be \"allow\" or \"deny\"\n")
    );
}

fn explain(config: &str, token: Option<&str>, tool: &str, args: &str) -> Output {
    let mut all = vec!["explain", "--config", config];
    if let Some(token) = token {
        all.extend(["--token", token]);
    }
    all.extend(["--tool", tool, "--args", args]);
    run_mcpdome(&all)
}

#[test]
fn explain_prints_the_decision_and_the_rule() {
    let dir = TempDir::new("explain");
    let config = dir.write("mcpdome.toml", &format!("{ANNOUNCEMENT}\n{KEYS}"));
    let config = config.to_str().unwrap();
    assert_eq!(
        explain(config, Some(DEV_KEY), "write_file", r#"{"path":"/tmp/a.env"}"#),
        Output {
            code: Some(1),
            stdout: concat!(
                "identity: psk:dev (role:developer)\n",
                "decision: deny\n",
                "rule:     (none: default_effect)\n",
                "reason:   no rule allows tool `write_file` for psk:dev (default deny); rule \"dev-write-safe\" does not apply: argument `path` matches deny_regex `.*\\.env$`\n",
            )
            .to_owned(),
            stderr: String::new(),
        }
    );
    assert_eq!(
        explain(config, Some(DEV_KEY), "write_file", r#"{"path":"/tmp/a.txt"}"#),
        Output {
            code: Some(0),
            stdout: "identity: psk:dev (role:developer)\ndecision: allow\nrule:     dev-write-safe\nreason:   allowed by rule \"dev-write-safe\"\n".to_owned(),
            stderr: String::new(),
        }
    );
    let out = explain(config, Some(DEV_KEY), "grep", r#"{"q":{"deep":["AKIAIOSFODNN7EXAMPLE"]}}"#);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stdout.contains("decision: deny\nrule:     block-secrets\n"), "{out:?}");
    let out = explain(config, None, "read_file", "{}");
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stdout.starts_with("identity: anonymous\ndecision: deny\n"), "{out:?}");
    let out = explain(config, Some("not-a-key"), "read_file", "{}");
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stdout.contains("decision: deny\n"), "{out:?}");
    // The same duplicate-key rule as the proxy.
    let out =
        explain(config, Some(DEV_KEY), "write_file", r#"{"path":"/tmp/a","path":"/etc/passwd"}"#);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains(r#"key "path" appears more than once"#), "{out:?}");
}

#[test]
fn keygen_prints_a_key_and_its_config_entry() {
    let out = run_mcpdome(&["keygen", "ci"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let key =
        out.stdout.lines().next().unwrap().strip_prefix("key: ").expect("key: line").to_owned();
    assert!(key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit()), "{key}");
    let entry = &out.stdout[out.stdout.find("[[psk]]\n").expect("a [[psk]] entry")..];
    let digest = entry
        .lines()
        .find_map(|line| line.strip_prefix("secret_sha256 = \""))
        .unwrap()
        .trim_end_matches('"');
    // Checked with another implementation of SHA-256.
    let python = std::process::Command::new(crate::util::python())
        .args([
            "-c",
            "import hashlib, sys; print(hashlib.sha256(sys.argv[1].encode()).hexdigest())",
            &key,
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(python.stdout).unwrap().trim(), digest);
    assert!(entry.starts_with("[[psk]]\nkey_id = \"ci\"\n"), "{entry}");
    assert_ne!(run_mcpdome(&["keygen", "ci"]).stdout, out.stdout, "a fresh key each time");

    // The entry pasted into a config as printed makes the key work.
    let dir = TempDir::new("keygen");
    let config = format!(
        "{entry}\n[[rules]]\nid = \"ci-reads\"\npriority = 1\neffect = \"allow\"\nidentities = {{ principals = [\"psk:ci\"] }}\ntools = \"read_file\"\n"
    );
    let config = dir.write("mcpdome.toml", &config);
    let out = explain(config.to_str().unwrap(), Some(&key), "read_file", "{}");
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stdout.starts_with("identity: psk:ci\ndecision: allow\nrule:     ci-reads\n"),
        "{out:?}"
    );
}
