//! The command line: flags in, `Args` out.
//!
//! Shape: `mcpdome [OPTIONS] COMMAND [ARGS...]`. For `proxy`, everything from the first positional
//! (or after `--`) is the upstream's argv, taken raw so the server's flags are never read as ours
//! and stay `OsString` all the way to `Command`. This module does no I/O and opens no files:
//! `--config` is a path here, and whether it can be read is decided when it is loaded.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use lexopt::prelude::*;

use crate::error::Error;
use crate::frame::DEFAULT_MAX_MESSAGE_BYTES;
use crate::log::{Format, Level};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

pub const HELP: &str = "\
mcpdome: a security gateway for MCP servers on stdio

Usage:
  mcpdome demo [--keep <DIR>]
  mcpdome wrap <CLIENT CONFIG> [--dry-run] [--unwrap] [--mcpdome <PATH>]
  mcpdome proxy [OPTIONS] -- <COMMAND> [ARGS...]
  mcpdome proxy [OPTIONS] --upstream \"<COMMAND LINE>\"
  mcpdome audit <FILE> [--follow] [--json] [--since <TIME>] [--until <TIME>]
  mcpdome validate <FILE>
  mcpdome explain --config <FILE> [--token <KEY>] --tool <NAME> [--args <JSON>]
  mcpdome keygen [KEY_ID]
  mcpdome verify-log <FILE> [--hmac-key-file <FILE>] [--expect-head <HASH>]
  mcpdome pins list|diff|approve [NAME...] (--pins <FILE> | -- <SERVER COMMAND>)
  mcpdome hash-schema <FILE>
  mcpdome scan [FILE]
  mcpdome help [COMMAND]
  mcpdome --version

Commands:
  demo        See what mcpdome does: a scripted agent, a built-in server, the real gateway
  wrap        Put mcpdome in front of every stdio server in an MCP client's config
  proxy       Start an MCP server and relay its stdio, checking every message
  audit       Summarise an audit log: decisions per identity, tool and rule
  validate    Check a config file and summarise it
  explain     Show what the policy decides for one call
  keygen      Make a pre-shared key and its config entry
  verify-log  Check the hash chain of an audit log
  pins        List, diff and approve tool-definition pins
  hash-schema Print the pins of a saved tools/list response
  scan        Run the ward's detectors on a saved tools/list or transcript
  help        Print this help, or the help of a command

Options:
  -h, --help       Print help
  -V, --version    Print the version

New here? Run `mcpdome demo`. A client host starts `mcpdome proxy -- <server command>`
where it used to start the server (`mcpdome wrap` edits its config for you). Run
`mcpdome help proxy` for the proxy's options.
";

pub const HELP_PROXY: &str = "\
mcpdome proxy: start an MCP server and relay its stdio through the gateway

Usage:
  mcpdome proxy [OPTIONS] -- <COMMAND> [ARGS...]
  mcpdome proxy [OPTIONS] --upstream \"<COMMAND LINE>\"

The upstream server is started directly, never through a shell. With --upstream the
command line is split into words like a POSIX shell does (quotes and backslashes),
without expanding variables, globs or `~`.

Options:
      --upstream <CMDLINE>        The server to start, as one command line
      --config <FILE>             Policy and settings file (TOML; default
                                  ./mcpdome.toml when it exists). Re-read
                                  when it changes and on SIGHUP
      --ledger <FILE>             Audit log (NDJSON, hash-chained); overrides
                                  [ledger] path
      --enable-ward               Scan messages for injection, exfiltration and secrets
      --enable-schema-pin         Pin tool definitions and refuse changed tools
      --enable-rate-limit         Apply default rate limits
      --max-message-bytes <N>     Longest accepted message, newline excluded
                                  (suffixes K, M, G; default 16M)
      --shutdown-grace <DURATION> How long the server may take to exit after its
                                  stdin closes, and again after SIGTERM, before it
                                  gets SIGKILL (e.g. 500ms, 2s; default 2s)
      --request-timeout <DURATION>
                                  How long a client request may wait for the
                                  server's answer (default 10m; `off` or 0
                                  disables it; overrides [mcpdome]
                                  request_timeout). A progress notification
                                  for the request starts the wait again. When
                                  it runs out the client gets error -32017 and
                                  the server notifications/cancelled
      --log-level <LEVEL>         off, error, warn, info or debug (default warn)
      --log-format <FORMAT>       text (default) or json: one JSON object per line
  -h, --help                      Print help

Logs go to stderr; stdout carries MCP only. mcpdome exits with the server's exit
status (128 + N if the server was ended by signal N), or 2 on a usage error.
";

pub const HELP_VALIDATE: &str = "\
mcpdome validate: check a config file

Usage:
  mcpdome validate <FILE>

Prints every error as FILE:LINE:COL with the rule it is in, or a summary of what the
file configures. Exits 0 when the file is valid, 2 when it is not.
";

pub const HELP_EXPLAIN: &str = "\
mcpdome explain: show what the policy decides for one call, without running anything

Usage:
  mcpdome explain --config <FILE> [--token <KEY>] --tool <NAME> [--args <JSON>]
  mcpdome explain --config <FILE> [--token <KEY>] --resource <URI>
  mcpdome explain --config <FILE> [--token <KEY>] --prompt <NAME> [--args <JSON>]

Options:
      --config <FILE>   Config file (default ./mcpdome.toml)
      --token <KEY>     The caller's pre-shared key (default: anonymous)
      --tool <NAME>     A tools/call of this tool
      --resource <URI>  A resources/read of this URI
      --prompt <NAME>   A prompts/get of this prompt
      --args <JSON>     The call's arguments object

Prints the identity, the decision and the rule that made it. Exits 0 when allowed,
1 when denied, 2 on a usage or config error.
";

pub const HELP_KEYGEN: &str = "\
mcpdome keygen: make a new pre-shared key

Usage:
  mcpdome keygen [KEY_ID]

Prints a fresh 256-bit key (give it to the client, e.g. as MCPDOME_TOKEN) and the
[[psk]] entry to paste into the config, which stores only the key's SHA-256.
";

pub const HELP_VERIFY_LOG: &str = "\
mcpdome verify-log: check the hash chain of an audit log

Usage:
  mcpdome verify-log <FILE> [--hmac-key-file <FILE>] [--expect-head <HASH>]

Options:
      --hmac-key-file <FILE>  The key the log was written with ([ledger] hmac_key_file)
      --expect-head <HASH>    The hash the last line must have (catches a cut tail)

Exits 0 when the chain is intact, 1 naming the first bad line otherwise.
";

pub const HELP_PINS: &str = "\
mcpdome pins: review tool-definition pins

Usage:
  mcpdome pins list    (--pins <FILE> | -- <SERVER COMMAND>)
  mcpdome pins diff    [NAME...] (--pins <FILE> | -- <SERVER COMMAND>)
  mcpdome pins approve [NAME...] (--pins <FILE> | -- <SERVER COMMAND>)

`list` shows every pinned tool and every change waiting for approval; `diff` shows what
changed; `approve` accepts the changes (all of them when no NAME is given). A running
gateway sees an approval at once. Without --pins, the default pin file of the server
command after `--` is used (the one `mcpdome proxy --enable-schema-pin -- <command>` uses).
";

pub const HELP_HASH_SCHEMA: &str = "\
mcpdome hash-schema: print the pin of every tool in a saved tools/list response

Usage:
  mcpdome hash-schema <FILE>

FILE holds a JSON-RPC response line, its `result`, or `{\"tools\": [...]}`.
";

pub const HELP_SCAN: &str = "\
mcpdome scan: run the ward's detectors offline

Usage:
  mcpdome scan [FILE]

FILE (or stdin) holds a saved tools/list response, or a transcript of JSON-RPC lines.
Prints one line per finding; exits 1 when there are findings, 0 when there are none.
";

pub const HELP_DEMO: &str = "\
mcpdome demo: see what mcpdome does, with nothing else installed

Usage:
  mcpdome demo [--keep <DIR>]

Starts mcpdome as a small built-in MCP server with file tools over a throw-away
directory, puts the real gateway with an example policy in front of it, and drives it
with a scripted agent: an allowed call, a call the policy denies, a secret in
arguments, a secret and an injection in results, and a tool whose description changes
mid-session (a rug pull). Prints what the agent tried, what mcpdome decided and why,
then verifies the audit log it wrote. Exits 0 when every decision was the expected
one, 1 naming the step that differed.

Options:
      --keep <DIR>   Copy the demo's config, pin file and audit log to DIR, as a
                     starting point for your own
";

pub const HELP_WRAP: &str = "\
mcpdome wrap: put mcpdome in front of every stdio server in an MCP client's config

Usage:
  mcpdome wrap <CLIENT CONFIG> [--dry-run] [--unwrap] [--mcpdome <PATH>]

Understands Claude Desktop (claude_desktop_config.json), Cursor (mcp.json) and Claude
Code (.mcp.json), which list servers under `mcpServers`, and VS Code (mcp.json), which
lists them under `servers`. Every server started with `command` and `args` becomes
`<mcpdome> proxy -- <command> <args...>`; its env, cwd and other fields stay. Remote
(URL) servers are listed as not covered. Only the edited values change in the file:
the rest, comments and key order included, is kept byte for byte. Wrapping a wrapped
file changes nothing.

Options:
      --dry-run          Show the changes as a diff; write nothing
      --unwrap           Undo the wrapping (from the file itself; no backup needed)
      --mcpdome <PATH>   The mcpdome the client should start (default: this one)

Before writing, the file is copied to <FILE>.mcpdome-backup (or .mcpdome-backup.N
when that exists with other content). Restart the client to apply the change.
";

pub const HELP_AUDIT: &str = "\
mcpdome audit: read an audit log

Usage:
  mcpdome audit <FILE> [--follow] [--json] [--since <TIME>] [--until <TIME>]

Verifies the hash chain while reading and says so on the first line, then summarises
the decisions: denials first (by identity, tool and rule, with the last reason), then
counts per identity, per tool and per rule.

Options:
      --since <TIME>          Only events at or after TIME (RFC 3339, e.g.
                              2026-11-23T09:00:00Z or 2026-11-23T10:00:00+01:00,
                              or a date: 2026-11-23)
      --until <TIME>          Only events at or before TIME
      --follow                Keep reading lines as they are appended and print
                              one line per event, until interrupted
      --json                  One JSON object (and with --follow, each new
                              ledger line as it is)
      --hmac-key-file <FILE>  The key the log was written with

Exits 0 when the chain is intact, 1 when a line is bad, 2 when the file cannot be read.
";

pub enum Command {
    /// `demo [--keep DIR]`: the scripted tour.
    Demo(Option<PathBuf>),
    /// `demo-server DIR`: the demo's built-in MCP server (not listed in the help).
    DemoServer(PathBuf),
    /// `wrap FILE`: edit an MCP client's config.
    Wrap(WrapArgs),
    /// `audit FILE`: summarise a ledger.
    Audit(AuditArgs),
    Proxy(ProxyArgs),
    /// `validate FILE`: check a config file and summarise it.
    Validate(PathBuf),
    /// `explain`: what the policy decides for one call.
    Explain(ExplainArgs),
    /// `keygen [KEY_ID]`: a new pre-shared key and its config entry.
    Keygen(Option<String>),
    /// `verify-log FILE`: check a ledger's chain.
    VerifyLog(VerifyLogArgs),
    /// `pins list|diff|approve`: review and accept tool-definition changes.
    Pins(PinsArgs),
    /// `hash-schema FILE`: the pins of a saved `tools/list` response.
    HashSchema(PathBuf),
    /// `scan [FILE]`: the ward's detectors, offline.
    Scan(Option<PathBuf>),
    /// `help`, `--help`: print the text for this command (`None` = top level).
    Help(Option<String>),
    Version,
}

#[derive(Debug, Default)]
pub struct WrapArgs {
    pub file: PathBuf,
    pub dry_run: bool,
    pub unwrap: bool,
    /// The mcpdome the client should start; `None`: the running executable.
    pub mcpdome: Option<PathBuf>,
}

#[derive(Debug, Default)]
pub struct AuditArgs {
    pub file: PathBuf,
    pub follow: bool,
    pub json: bool,
    pub since: Option<String>,
    pub until: Option<String>,
    pub hmac_key_file: Option<PathBuf>,
}

#[derive(Debug)]
pub struct ProxyArgs {
    pub upstream: Vec<OsString>,
    pub config: Option<PathBuf>,
    pub enable_ward: bool,
    pub enable_schema_pin: bool,
    pub enable_rate_limit: bool,
    pub max_message_bytes: usize,
    pub shutdown_grace: Duration,
    /// `--request-timeout`; `None` when not given (the settings file or the default decide).
    pub request_timeout: Option<Duration>,
    pub log_level: Level,
    pub log_format: Format,
    pub ledger: Option<PathBuf>,
}

#[derive(Debug, Default)]
pub struct ExplainArgs {
    pub config: Option<PathBuf>,
    pub token: Option<String>,
    pub tool: Option<String>,
    pub resource: Option<String>,
    pub prompt: Option<String>,
    pub args: Option<String>,
}

#[derive(Debug, Default)]
pub struct PinsArgs {
    /// `list`, `diff` or `approve`.
    pub action: String,
    pub names: Vec<String>,
    pub pins: Option<PathBuf>,
    /// The server command whose default pin file to use.
    pub upstream: Vec<OsString>,
}

#[derive(Debug, Default)]
pub struct VerifyLogArgs {
    pub file: PathBuf,
    pub hmac_key_file: Option<PathBuf>,
    pub expect_head: Option<String>,
}

pub fn parse_env() -> Result<Command, Error> {
    parse(lexopt::Parser::from_env())
}

pub fn parse_from<I>(args: I) -> Result<Command, Error>
where
    I: IntoIterator,
    I::Item: Into<OsString>,
{
    parse(lexopt::Parser::from_iter(args))
}

/// The help text for `mcpdome help COMMAND`, or `None` for a command we do not have.
pub fn help_text(command: Option<&str>) -> Option<&'static str> {
    match command {
        None => Some(HELP),
        Some("demo") => Some(HELP_DEMO),
        Some("wrap") => Some(HELP_WRAP),
        Some("audit") => Some(HELP_AUDIT),
        Some("proxy") => Some(HELP_PROXY),
        Some("validate") => Some(HELP_VALIDATE),
        Some("explain") => Some(HELP_EXPLAIN),
        Some("keygen") => Some(HELP_KEYGEN),
        Some("verify-log") => Some(HELP_VERIFY_LOG),
        Some("pins") => Some(HELP_PINS),
        Some("hash-schema") => Some(HELP_HASH_SCHEMA),
        Some("scan") => Some(HELP_SCAN),
        Some("help") => Some(HELP),
        Some(_) => None,
    }
}

fn parse(mut parser: lexopt::Parser) -> Result<Command, Error> {
    if let Some(arg) = parser.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(Command::Help(None)),
            Short('V') | Long("version") => return Ok(Command::Version),
            Value(command) => {
                return match command.to_str() {
                    Some("proxy") => parse_proxy(&mut parser),
                    Some("demo") => {
                        let mut keep = None;
                        while let Some(arg) = parser.next()? {
                            match arg {
                                Short('h') | Long("help") => {
                                    return Ok(Command::Help(Some("demo".to_owned())))
                                }
                                Long("keep") => keep = Some(parser.value()?.into()),
                                _ => return Err(arg.unexpected().into()),
                            }
                        }
                        Ok(Command::Demo(keep))
                    }
                    Some("demo-server") => {
                        Ok(Command::DemoServer(one_path(&mut parser, "demo-server", "DIR")?))
                    }
                    Some("wrap") => parse_wrap(&mut parser),
                    Some("audit") => parse_audit(&mut parser),
                    Some("validate") => {
                        let file = one_path(&mut parser, "validate", "FILE")?;
                        Ok(Command::Validate(file))
                    }
                    Some("explain") => parse_explain(&mut parser),
                    Some("keygen") => {
                        let mut key_id = None;
                        while let Some(arg) = parser.next()? {
                            match arg {
                                Short('h') | Long("help") => {
                                    return Ok(Command::Help(Some("keygen".to_owned())))
                                }
                                Value(id) if key_id.is_none() => key_id = Some(id.string()?),
                                _ => return Err(arg.unexpected().into()),
                            }
                        }
                        Ok(Command::Keygen(key_id))
                    }
                    Some("verify-log") => parse_verify_log(&mut parser),
                    Some("pins") => parse_pins(&mut parser),
                    Some("hash-schema") => {
                        Ok(Command::HashSchema(one_path(&mut parser, "hash-schema", "FILE")?))
                    }
                    Some("scan") => {
                        let mut file = None;
                        while let Some(arg) = parser.next()? {
                            match arg {
                                Short('h') | Long("help") => {
                                    return Ok(Command::Help(Some("scan".to_owned())))
                                }
                                Value(value) if file.is_none() => file = Some(PathBuf::from(value)),
                                _ => return Err(arg.unexpected().into()),
                            }
                        }
                        Ok(Command::Scan(file))
                    }
                    Some("help") => {
                        let topic = parser.next()?;
                        match topic {
                            None => Ok(Command::Help(None)),
                            Some(Value(topic)) => Ok(Command::Help(Some(topic.string()?))),
                            Some(other) => Err(other.unexpected().into()),
                        }
                    }
                    _ => Err(Error::usage(format!(
                        "unknown command {command:?}; try `mcpdome --help`"
                    ))),
                };
            }
            _ => return Err(arg.unexpected().into()),
        }
    }
    Err(Error::usage(
        "no command given; try `mcpdome proxy -- <server command>` or `mcpdome --help`",
    ))
}

/// The single positional argument of a command.
fn one_path(parser: &mut lexopt::Parser, command: &str, what: &str) -> Result<PathBuf, Error> {
    let mut path = None;
    while let Some(arg) = parser.next()? {
        match arg {
            Short('h') | Long("help") => {
                return Err(Error::usage(format!("usage: mcpdome {command} {what}")))
            }
            Value(value) if path.is_none() => path = Some(PathBuf::from(value)),
            _ => return Err(arg.unexpected().into()),
        }
    }
    path.ok_or_else(|| Error::usage(format!("missing {what}: usage: mcpdome {command} {what}")))
}

fn parse_explain(parser: &mut lexopt::Parser) -> Result<Command, Error> {
    let mut args = ExplainArgs::default();
    while let Some(arg) = parser.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(Command::Help(Some("explain".to_owned()))),
            Long("config") => args.config = Some(parser.value()?.into()),
            Long("token") => args.token = Some(parser.value()?.string()?),
            Long("tool") => args.tool = Some(parser.value()?.string()?),
            Long("resource") => args.resource = Some(parser.value()?.string()?),
            Long("prompt") => args.prompt = Some(parser.value()?.string()?),
            Long("args") => args.args = Some(parser.value()?.string()?),
            _ => return Err(arg.unexpected().into()),
        }
    }
    let n_actions =
        [&args.tool, &args.resource, &args.prompt].iter().filter(|it| it.is_some()).count();
    if n_actions != 1 {
        return Err(Error::usage(
            "explain needs exactly one of `--tool NAME`, `--resource URI`, `--prompt NAME`",
        ));
    }
    Ok(Command::Explain(args))
}

fn parse_pins(parser: &mut lexopt::Parser) -> Result<Command, Error> {
    let mut args = PinsArgs::default();
    while let Some(arg) = parser.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(Command::Help(Some("pins".to_owned()))),
            Long("pins") => args.pins = Some(parser.value()?.into()),
            Value(value) if args.action.is_empty() => args.action = value.string()?,
            Value(value) => args.names.push(value.string()?),
            _ => return Err(arg.unexpected().into()),
        }
        if parser.try_raw_args().is_some_and(|raw| raw.peek() == Some(std::ffi::OsStr::new("--"))) {
            let mut raw = parser.raw_args()?;
            raw.next();
            args.upstream = raw.collect();
            break;
        }
    }
    if args.action.is_empty() {
        return Err(Error::usage(
            "missing action: usage: mcpdome pins list|diff|approve [NAME...] --pins FILE",
        ));
    }
    Ok(Command::Pins(args))
}

fn parse_verify_log(parser: &mut lexopt::Parser) -> Result<Command, Error> {
    let mut args = VerifyLogArgs::default();
    let mut file = None;
    while let Some(arg) = parser.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(Command::Help(Some("verify-log".to_owned()))),
            Long("hmac-key-file") => args.hmac_key_file = Some(parser.value()?.into()),
            Long("expect-head") => args.expect_head = Some(parser.value()?.string()?),
            Value(value) if file.is_none() => file = Some(PathBuf::from(value)),
            _ => return Err(arg.unexpected().into()),
        }
    }
    args.file = file.ok_or_else(|| {
        Error::usage(
            "missing FILE: usage: mcpdome verify-log FILE [--hmac-key-file K] [--expect-head HASH]",
        )
    })?;
    Ok(Command::VerifyLog(args))
}

fn parse_wrap(parser: &mut lexopt::Parser) -> Result<Command, Error> {
    let mut args = WrapArgs::default();
    let mut file = None;
    while let Some(arg) = parser.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(Command::Help(Some("wrap".to_owned()))),
            Long("dry-run") | Short('n') => args.dry_run = true,
            Long("unwrap") => args.unwrap = true,
            Long("mcpdome") => args.mcpdome = Some(parser.value()?.into()),
            Value(value) if file.is_none() => file = Some(PathBuf::from(value)),
            _ => return Err(arg.unexpected().into()),
        }
    }
    args.file = file.ok_or_else(|| {
        Error::usage("missing CLIENT CONFIG: usage: mcpdome wrap <FILE> [--dry-run] [--unwrap] [--mcpdome PATH]")
    })?;
    Ok(Command::Wrap(args))
}

fn parse_audit(parser: &mut lexopt::Parser) -> Result<Command, Error> {
    let mut args = AuditArgs::default();
    let mut file = None;
    while let Some(arg) = parser.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(Command::Help(Some("audit".to_owned()))),
            Long("follow") | Short('f') => args.follow = true,
            Long("json") => args.json = true,
            Long("since") => args.since = Some(parser.value()?.string()?),
            Long("until") => args.until = Some(parser.value()?.string()?),
            Long("hmac-key-file") => args.hmac_key_file = Some(parser.value()?.into()),
            Value(value) if file.is_none() => file = Some(PathBuf::from(value)),
            _ => return Err(arg.unexpected().into()),
        }
    }
    args.file = file.ok_or_else(|| {
        Error::usage("missing FILE: usage: mcpdome audit FILE [--follow] [--json] [--since TIME] [--until TIME]")
    })?;
    Ok(Command::Audit(args))
}

fn parse_proxy(parser: &mut lexopt::Parser) -> Result<Command, Error> {
    let mut args = ProxyArgs {
        upstream: Vec::new(),
        config: None,
        enable_ward: false,
        enable_schema_pin: false,
        enable_rate_limit: false,
        max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
        shutdown_grace: Duration::from_secs(2),
        request_timeout: None,
        log_level: Level::Warn,
        log_format: Format::Text,
        ledger: None,
    };
    let mut upstream_line: Option<String> = None;
    while let Some(arg) = parser.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(Command::Help(Some("proxy".to_owned()))),
            Long("upstream") => upstream_line = Some(parser.value()?.string()?),
            Long("config") => args.config = Some(parser.value()?.into()),
            Long("ledger") => args.ledger = Some(parser.value()?.into()),
            Long("enable-ward") => args.enable_ward = true,
            Long("enable-schema-pin") => args.enable_schema_pin = true,
            Long("enable-rate-limit") => args.enable_rate_limit = true,
            Long("max-message-bytes") => {
                let text = parser.value()?.string()?;
                args.max_message_bytes = parse_size(&text).ok_or_else(|| {
                    Error::usage(format!(
                        "invalid value {text:?} for `--max-message-bytes`: expected bytes such as 65536, 64K or 16M (at least 1K)"
                    ))
                })?;
            }
            Long("shutdown-grace") => {
                let text = parser.value()?.string()?;
                args.shutdown_grace = parse_duration(&text).ok_or_else(|| {
                    Error::usage(format!(
                        "invalid value {text:?} for `--shutdown-grace`: expected a duration such as 500ms or 2s"
                    ))
                })?;
            }
            Long("request-timeout") => {
                let text = parser.value()?.string()?;
                args.request_timeout = Some(parse_timeout(&text).ok_or_else(|| {
                    Error::usage(format!(
                        "invalid value {text:?} for `--request-timeout`: expected a duration such as 90s or 10m, or off"
                    ))
                })?);
            }
            Long("log-level") => {
                let text = parser.value()?.string()?;
                args.log_level = Level::parse(&text).ok_or_else(|| {
                    Error::usage(format!(
                        "invalid value {text:?} for `--log-level`: expected off, error, warn, info or debug"
                    ))
                })?;
            }
            Long("log-format") => {
                let text = parser.value()?.string()?;
                args.log_format = Format::parse(&text).ok_or_else(|| {
                    Error::usage(format!(
                        "invalid value {text:?} for `--log-format`: expected text or json"
                    ))
                })?;
            }
            Value(program) => {
                args.upstream.push(program);
                args.upstream.extend(parser.raw_args()?);
            }
            _ => return Err(arg.unexpected().into()),
        }
    }
    match (upstream_line, args.upstream.is_empty()) {
        (Some(_), false) => {
            return Err(Error::usage(
                "the upstream is given twice: use either `--upstream \"<command line>\"` or `-- <command> [args...]`",
            ))
        }
        (Some(line), true) => {
            let words = split_words(&line).map_err(|why| {
                Error::usage(format!("invalid value for `--upstream`: {why}"))
            })?;
            if words.is_empty() {
                return Err(Error::usage("`--upstream` is empty: give the server's command line"));
            }
            args.upstream = words.into_iter().map(OsString::from).collect();
        }
        (None, true) => {
            return Err(Error::usage(
                "no upstream server given: use `mcpdome proxy -- <command> [args...]` or `--upstream \"<command line>\"`",
            ))
        }
        (None, false) => {}
    }
    Ok(Command::Proxy(args))
}

/// Splits a command line into words with POSIX shell quoting: `'…'` is literal, `"…"` keeps
/// `\` only before `$ \` " \\` and newline, and a bare `\` quotes the next character. Nothing is
/// expanded, because no shell is run: `$HOME`, `*` and `~` stay as written.
pub fn split_words(line: &str) -> Result<Vec<String>, &'static str> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("unterminated single quote"),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some('\n') => {}
                            Some(c @ ('$' | '`' | '"' | '\\')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err("unterminated double quote"),
                        },
                        Some(c) => word.push(c),
                        None => return Err("unterminated double quote"),
                    }
                }
            }
            '\\' => match chars.next() {
                Some('\n') => {}
                Some(c) => {
                    in_word = true;
                    word.push(c);
                }
                None => return Err("trailing backslash"),
            },
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// `65536`, `64K`, `16M`, `1G` (binary multiples; `KiB`/`MiB`/`GiB` too). At least 1 KiB, so a
/// typo cannot make every message too long.
fn parse_size(text: &str) -> Option<usize> {
    let digits = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let multiplier: usize = match &text[digits.len()..] {
        "" | "B" => 1,
        "K" | "k" | "KiB" | "KB" => 1 << 10,
        "M" | "MiB" | "MB" => 1 << 20,
        "G" | "GiB" | "GB" => 1 << 30,
        _ => return None,
    };
    let n: usize = digits.parse().ok()?;
    let bytes = n.checked_mul(multiplier)?;
    (1024..=(usize::MAX >> 1)).contains(&bytes).then_some(bytes)
}

/// A timeout: a duration, or `off` (zero, which also means off).
pub fn parse_timeout(text: &str) -> Option<Duration> {
    match text {
        "off" => Some(Duration::ZERO),
        _ => parse_duration(text),
    }
}

/// `2s`, `500ms`, `1m`, `1h`; a bare number is seconds.
fn parse_duration(text: &str) -> Option<Duration> {
    let digits = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let n: u64 = digits.parse().ok()?;
    match &text[digits.len()..] {
        "ms" => Some(Duration::from_millis(n)),
        "" | "s" => Some(Duration::from_secs(n)),
        "m" => Some(Duration::from_secs(n.checked_mul(60)?)),
        "h" => Some(Duration::from_secs(n.checked_mul(3600)?)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn words(line: &str, expected: &[&str]) {
        assert_eq!(split_words(line).unwrap(), expected);
    }

    #[track_caller]
    fn proxy(args: &[&str]) -> ProxyArgs {
        let argv = ["mcpdome", "proxy"].into_iter().chain(args.iter().copied());
        match parse_from(argv) {
            Ok(Command::Proxy(args)) => args,
            Ok(_) => panic!("not a proxy command"),
            Err(err) => panic!("{err}"),
        }
    }

    #[track_caller]
    fn usage_error(args: &[&str], expected: &str) {
        let argv = std::iter::once("mcpdome").chain(args.iter().copied());
        match parse_from(argv) {
            Err(err) => assert_eq!(err.to_string(), expected),
            Ok(_) => panic!("accepted {args:?}"),
        }
    }

    #[test]
    fn shell_words() {
        words(
            "npx -y @modelcontextprotocol/server-filesystem /tmp",
            &["npx", "-y", "@modelcontextprotocol/server-filesystem", "/tmp"],
        );
        words("  a\t b  ", &["a", "b"]);
        words(r#"say 'it''s' "a \"b\" \$c \d" e\ f"#, &["say", "its", r#"a "b" $c \d"#, "e f"]);
        words(r#"env X='$HOME' *.txt ~"#, &["env", "X=$HOME", "*.txt", "~"]);
        words(r#"'' """#, &["", ""]);
        words("a\\\nb", &["ab"]);
        assert_eq!(split_words("a 'b"), Err("unterminated single quote"));
        assert_eq!(split_words("a \"b"), Err("unterminated double quote"));
        assert_eq!(split_words("a \\"), Err("trailing backslash"));
    }

    #[test]
    fn upstream_forms() {
        let args = proxy(&["--", "server", "--help", "-x"]);
        assert_eq!(args.upstream, ["server", "--help", "-x"]);
        let args = proxy(&["--enable-ward", "server", "--config", "x"]);
        assert_eq!(args.upstream, ["server", "--config", "x"]);
        assert!(args.enable_ward);
        assert_eq!(args.config, None);
        let args = proxy(&["--upstream", "node 'my server.js' --port 1"]);
        assert_eq!(args.upstream, ["node", "my server.js", "--port", "1"]);
    }

    #[test]
    fn proxy_options() {
        let args = proxy(&[
            "--config=p.toml",
            "--enable-schema-pin",
            "--enable-rate-limit",
            "--max-message-bytes",
            "64K",
            "--shutdown-grace",
            "250ms",
            "--log-level",
            "debug",
            "--",
            "s",
        ]);
        assert_eq!(args.config, Some(PathBuf::from("p.toml")));
        assert!(args.enable_schema_pin && args.enable_rate_limit && !args.enable_ward);
        assert_eq!(args.max_message_bytes, 65536);
        assert_eq!(args.shutdown_grace, Duration::from_millis(250));
        assert_eq!(args.log_level, Level::Debug);
        assert_eq!(proxy(&["s"]).max_message_bytes, 16 << 20);
    }

    #[test]
    fn request_timeouts() {
        assert_eq!(proxy(&["s"]).request_timeout, None);
        let timeout = |text: &str| proxy(&["--request-timeout", text, "s"]).request_timeout;
        assert_eq!(timeout("300ms"), Some(Duration::from_millis(300)));
        assert_eq!(timeout("5m"), Some(Duration::from_secs(300)));
        assert_eq!(timeout("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(timeout("off"), Some(Duration::ZERO));
        assert_eq!(timeout("0"), Some(Duration::ZERO));
        usage_error(&["proxy", "--request-timeout", "never", "s"], "invalid value \"never\" for `--request-timeout`: expected a duration such as 90s or 10m, or off");
    }

    #[test]
    fn usage_errors() {
        usage_error(
            &[],
            "no command given; try `mcpdome proxy -- <server command>` or `mcpdome --help`",
        );
        usage_error(&["serve"], "unknown command \"serve\"; try `mcpdome --help`");
        usage_error(&["proxy", "--frobnicate", "--", "s"], "invalid option '--frobnicate'");
        usage_error(&["proxy"], "no upstream server given: use `mcpdome proxy -- <command> [args...]` or `--upstream \"<command line>\"`");
        usage_error(&["proxy", "--"], "no upstream server given: use `mcpdome proxy -- <command> [args...]` or `--upstream \"<command line>\"`");
        usage_error(&["proxy", "--upstream", "a", "--", "b"], "the upstream is given twice: use either `--upstream \"<command line>\"` or `-- <command> [args...]`");
        usage_error(
            &["proxy", "--upstream", "  "],
            "`--upstream` is empty: give the server's command line",
        );
        usage_error(
            &["proxy", "--upstream", "a 'b"],
            "invalid value for `--upstream`: unterminated single quote",
        );
        usage_error(&["proxy", "--max-message-bytes", "12", "s"], "invalid value \"12\" for `--max-message-bytes`: expected bytes such as 65536, 64K or 16M (at least 1K)");
        usage_error(&["proxy", "--shutdown-grace", "soon", "s"], "invalid value \"soon\" for `--shutdown-grace`: expected a duration such as 500ms or 2s");
        usage_error(
            &["proxy", "--log-level", "loud", "s"],
            "invalid value \"loud\" for `--log-level`: expected off, error, warn, info or debug",
        );
        usage_error(&["proxy", "--upstream"], "missing argument for option '--upstream'");
    }

    #[test]
    fn help_and_version() {
        assert!(matches!(parse_from(["mcpdome", "--help"]), Ok(Command::Help(None))));
        assert!(matches!(parse_from(["mcpdome", "-V"]), Ok(Command::Version)));
        match parse_from(["mcpdome", "help", "proxy"]) {
            Ok(Command::Help(Some(topic))) => assert_eq!(help_text(Some(&topic)), Some(HELP_PROXY)),
            _ => panic!("help proxy"),
        }
        assert_eq!(help_text(Some("nope")), None);
    }
}
