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
use crate::log::Level;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

pub const HELP: &str = "\
mcpdome: a security gateway for MCP servers on stdio

Usage:
  mcpdome proxy [OPTIONS] -- <COMMAND> [ARGS...]
  mcpdome proxy [OPTIONS] --upstream \"<COMMAND LINE>\"
  mcpdome help [COMMAND]
  mcpdome --version

Commands:
  proxy     Start an MCP server and relay its stdio, checking every message
  help      Print this help, or the help of a command

Options:
  -h, --help       Print help
  -V, --version    Print the version

A client host starts `mcpdome proxy -- <server command>` where it used to start the
server. Run `mcpdome help proxy` for the proxy's options.
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
      --config <FILE>             Policy and settings file (TOML)
      --enable-ward               Scan messages for injection, exfiltration and secrets
      --enable-schema-pin         Pin tool definitions and refuse changed tools
      --enable-rate-limit         Apply default rate limits
      --max-message-bytes <N>     Longest accepted message, newline excluded
                                  (suffixes K, M, G; default 16M)
      --shutdown-grace <DURATION> How long the server may take to exit after its
                                  stdin closes, and again after SIGTERM, before it
                                  gets SIGKILL (e.g. 500ms, 2s; default 2s)
      --log-level <LEVEL>         off, error, warn, info or debug (default warn)
  -h, --help                      Print help

Logs go to stderr; stdout carries MCP only. mcpdome exits with the server's exit
status (128 + N if the server was ended by signal N), or 2 on a usage error.
";

pub enum Command {
    Proxy(ProxyArgs),
    /// `help`, `--help`: print the text for this command (`None` = top level).
    Help(Option<String>),
    Version,
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
    pub log_level: Level,
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
        Some("proxy") => Some(HELP_PROXY),
        Some("help") => Some(HELP),
        Some(_) => None,
    }
}

fn parse(mut parser: lexopt::Parser) -> Result<Command, Error> {
    while let Some(arg) = parser.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(Command::Help(None)),
            Short('V') | Long("version") => return Ok(Command::Version),
            Value(command) => {
                return match command.to_str() {
                    Some("proxy") => parse_proxy(&mut parser),
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

fn parse_proxy(parser: &mut lexopt::Parser) -> Result<Command, Error> {
    let mut args = ProxyArgs {
        upstream: Vec::new(),
        config: None,
        enable_ward: false,
        enable_schema_pin: false,
        enable_rate_limit: false,
        max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
        shutdown_grace: Duration::from_secs(2),
        log_level: Level::Warn,
    };
    let mut upstream_line: Option<String> = None;
    while let Some(arg) = parser.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(Command::Help(Some("proxy".to_owned()))),
            Long("upstream") => upstream_line = Some(parser.value()?.string()?),
            Long("config") => args.config = Some(parser.value()?.into()),
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
            Long("log-level") => {
                let text = parser.value()?.string()?;
                args.log_level = Level::parse(&text).ok_or_else(|| {
                    Error::usage(format!(
                        "invalid value {text:?} for `--log-level`: expected off, error, warn, info or debug"
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

/// `2s`, `500ms`, `1m`; a bare number is seconds.
fn parse_duration(text: &str) -> Option<Duration> {
    let digits = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let n: u64 = digits.parse().ok()?;
    match &text[digits.len()..] {
        "ms" => Some(Duration::from_millis(n)),
        "" | "s" => Some(Duration::from_secs(n)),
        "m" => Some(Duration::from_secs(n.checked_mul(60)?)),
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
            &[
                "npx",
                "-y",
                "@modelcontextprotocol/server-filesystem",
                "/tmp",
            ],
        );
        words("  a\t b  ", &["a", "b"]);
        words(
            r#"say 'it''s' "a \"b\" \$c \d" e\ f"#,
            &["say", "its", r#"a "b" $c \d"#, "e f"],
        );
        words(
            r#"env X='$HOME' *.txt ~"#,
            &["env", "X=$HOME", "*.txt", "~"],
        );
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
    fn usage_errors() {
        usage_error(
            &[],
            "no command given; try `mcpdome proxy -- <server command>` or `mcpdome --help`",
        );
        usage_error(
            &["serve"],
            "unknown command \"serve\"; try `mcpdome --help`",
        );
        usage_error(
            &["proxy", "--frobnicate", "--", "s"],
            "invalid option '--frobnicate'",
        );
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
        usage_error(
            &["proxy", "--upstream"],
            "missing argument for option '--upstream'",
        );
    }

    #[test]
    fn help_and_version() {
        assert!(matches!(
            parse_from(["mcpdome", "--help"]),
            Ok(Command::Help(None))
        ));
        assert!(matches!(
            parse_from(["mcpdome", "-V"]),
            Ok(Command::Version)
        ));
        match parse_from(["mcpdome", "help", "proxy"]) {
            Ok(Command::Help(Some(topic))) => assert_eq!(help_text(Some(&topic)), Some(HELP_PROXY)),
            _ => panic!("help proxy"),
        }
        assert_eq!(help_text(Some("nope")), None);
    }
}
