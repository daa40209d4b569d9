//! The `mcpdome` binary: parse the command line, run the command, map the result to an exit
//! status. This is the only place that ends the process.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::process::ExitCode;

use std::path::Path;

use mcpdome::auth::{self, Identity};
use mcpdome::chain;
use mcpdome::cli::{self, Command, ExplainArgs, VerifyLogArgs};
use mcpdome::config::{self, Config};
use mcpdome::error::Error;
use mcpdome::gate::Gate;
use mcpdome::ledger;
use mcpdome::pin;
use mcpdome::policy::{Action, Effect};
use mcpdome::{log, relay, signal, upstream, warn};

fn main() -> ExitCode {
    match run() {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            let _ = writeln!(io::stderr(), "mcpdome: {err}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<u8, Error> {
    match cli::parse_env()? {
        Command::Help(topic) => {
            let text = cli::help_text(topic.as_deref()).ok_or_else(|| {
                Error::usage(format!(
                    "no help for unknown command {:?}; try `mcpdome --help`",
                    topic.unwrap_or_default()
                ))
            })?;
            print_stdout(text);
            Ok(0)
        }
        Command::Version => {
            print_stdout(&format!("mcpdome {}\n", cli::VERSION));
            Ok(0)
        }
        Command::Demo(keep) => mcpdome::demo::run(keep.as_deref()),
        Command::DemoServer(dir) => mcpdome::demo::serve(&dir),
        Command::Wrap(args) => mcpdome::wrap::run(&args, &mut io::stdout()),
        Command::Audit(args) => mcpdome::audit::run(&args, &mut io::stdout()),
        Command::Validate(file) => validate(&file),
        Command::Explain(args) => explain(&args),
        Command::Keygen(key_id) => keygen(key_id.as_deref()),
        Command::VerifyLog(args) => verify_log(&args),
        Command::Pins(args) => pins(&args),
        Command::HashSchema(file) => {
            let text = read_input(Some(&file))?;
            let out = pin::hash_schema(&text)
                .map_err(|err| Error::usage(format!("{}: {err}", file.display())))?;
            print_stdout(&out);
            Ok(0)
        }
        Command::Scan(file) => scan(file.as_deref()),
        Command::Proxy(args) => {
            log::set_level(args.log_level);
            log::set_format(args.log_format);
            let (config, settings) = Config::load(&args)?;
            for line in &settings.warnings {
                warn!("{line}");
            }
            // The audit log first: if it cannot be written, nothing starts.
            let ledger = open_ledger(&args, &settings)?;
            if let Some(ledger) = &ledger {
                let detail = serde_json::json!({
                    "version": cli::VERSION,
                    "upstream": args.upstream.iter().map(|arg| arg.to_string_lossy()).collect::<Vec<_>>(),
                    "config": config.config_file.as_ref().map(|path| path.display().to_string()),
                });
                let record =
                    ledger::Record { event: "start", detail: Some(&detail), ..Default::default() };
                ledger
                    .append(&record)
                    .map_err(|err| Error::io("failed to write the audit log", err))?;
            }
            // Pins next, for the same reason: an unreadable pin file stops mcpdome here.
            let pins = match &settings.pins {
                Some(pin_settings) => {
                    let path = pin_settings
                        .file
                        .clone()
                        .unwrap_or_else(|| pin::default_path(&args.upstream));
                    mcpdome::info!("pins: {} ({})", path.display(), pin_settings.mode.name());
                    Some(pin::Pins::load(path, pin_settings.mode)?)
                }
                None => None,
            };
            // Before any thread or child exists, so that every thread inherits the mask.
            let signals =
                signal::block().map_err(|err| Error::io("failed to block signals", err))?;
            let (server, to_upstream, from_upstream) = upstream::spawn(&args.upstream)?;
            // Our own handles on fds 0 and 1: unbuffered, and never locked by std's `Stdout`.
            let client_in = dup(io::stdin().as_fd(), "stdin")?;
            let to_client = dup(io::stdout().as_fd(), "stdout")?;
            let mut gate = Gate::new(config, settings, Box::new(to_client), Box::new(to_upstream));
            if let Some(pins) = pins {
                gate = gate.with_pins(pins);
            }
            if let Some(ledger) = ledger {
                gate = gate.with_ledger(ledger);
            }
            // One Gate for the life of the process, shared by both relay threads.
            let gate: &'static Gate = Box::leak(Box::new(gate));
            Ok(relay::run(gate, client_in, from_upstream, server, signals))
        }
    }
}

/// The ledger from `--ledger` or `[ledger]`, opened before the upstream starts so that a ledger
/// that cannot be written stops mcpdome instead of running unaudited.
fn open_ledger(
    args: &cli::ProxyArgs,
    settings: &config::Settings,
) -> Result<Option<ledger::Ledger>, Error> {
    let configured = settings.ledger.as_ref();
    let Some(path) = args.ledger.as_deref().or(configured.map(|ledger| ledger.path.as_path()))
    else {
        return Ok(None);
    };
    let key = match configured.and_then(|ledger| ledger.hmac_key_file.as_deref()) {
        Some(file) => Some(ledger::load_key(file)?),
        None => None,
    };
    let include_arguments = configured.is_some_and(|ledger| ledger.include_arguments);
    ledger::Ledger::open(path, key, include_arguments).map(Some)
}

fn validate(file: &Path) -> Result<u8, Error> {
    let text = std::fs::read_to_string(file).map_err(|err| {
        Error::io(format!("failed to read config file `{}`", file.display()), err)
    })?;
    let base = file.parent().unwrap_or(Path::new(""));
    let name = file.display();
    match config::parse(&text, base, config::Switches::default()) {
        Err(errors) => {
            for err in &errors {
                let _ = writeln!(io::stderr(), "{name}:{err}");
            }
            let _ = writeln!(io::stderr(), "{name}: {} error(s)", errors.len());
            Ok(2)
        }
        Ok(settings) => {
            for warning in &settings.warnings {
                let _ = writeln!(io::stderr(), "{name}: warning: {warning}");
            }
            print_stdout(&format!("{name}: valid\n{}", config::summary(&settings)));
            Ok(0)
        }
    }
}

fn explain(args: &ExplainArgs) -> Result<u8, Error> {
    let path = args.config.clone().unwrap_or_else(|| config::DEFAULT_CONFIG_FILE.into());
    let settings = config::Settings::load(&path, config::Switches::default())?;
    let arguments: Option<serde_json::Value> = match &args.args {
        None => None,
        Some(text) => Some(
            chain::strict_value(text)
                .map_err(|err| Error::usage(format!("invalid value for `--args`: {err}")))?,
        ),
    };
    let identity = match &args.token {
        None if !settings.allow_anonymous => {
            print_stdout("identity: anonymous\ndecision: deny\nreason:   a key is required ([sentinel] allow_anonymous = false)\n");
            return Ok(1);
        }
        None => Identity::anonymous(),
        Some(token) => match settings.identity_for(token) {
            Some(identity) => (*identity).clone(),
            None => {
                print_stdout("identity: (unknown key)\ndecision: deny\nreason:   unknown key\n");
                return Ok(1);
            }
        },
    };
    let action = match (&args.tool, &args.resource, &args.prompt) {
        (Some(name), _, _) => Action::Tool { name, arguments: arguments.as_ref() },
        (_, Some(uri), _) => Action::Resource { uri },
        (_, _, Some(name)) => Action::Prompt { name, arguments: arguments.as_ref() },
        _ => unreachable!("cli requires one action"),
    };
    let labels = if identity.labels.is_empty() {
        String::new()
    } else {
        format!(" ({})", identity.labels.join(", "))
    };
    let mut out = format!("identity: {}{labels}\n", identity.principal);
    let allowed = match &settings.policy {
        None => {
            out.push_str(
                "decision: allow\nreason:   the config has no rules, so actions are not governed\n",
            );
            true
        }
        Some(policy) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let decision = policy.decide(&identity, action, now);
            out.push_str(&format!("decision: {}\n", decision.effect));
            out.push_str(&format!(
                "rule:     {}\n",
                decision.rule.unwrap_or("(none: default_effect)")
            ));
            out.push_str(&format!("reason:   {}\n", decision.reason));
            decision.effect == Effect::Allow
        }
    };
    print_stdout(&out);
    Ok(if allowed { 0 } else { 1 })
}

fn keygen(key_id: Option<&str>) -> Result<u8, Error> {
    let key = auth::generate_key().map_err(|err| Error::io("failed to read /dev/urandom", err))?;
    let key_id = key_id.unwrap_or("agent");
    print_stdout(&format!(
        "key: {key}\n\n# Give the key to the client (for example as MCPDOME_TOKEN); put this in the config:\n[[psk]]\nkey_id = \"{key_id}\"\nsecret_sha256 = \"{}\"\nlabels = []\n",
        auth::sha256_hex(key.as_bytes())
    ));
    Ok(0)
}

fn verify_log(args: &VerifyLogArgs) -> Result<u8, Error> {
    let key = match &args.hmac_key_file {
        Some(path) => Some(ledger::load_key(path)?),
        None => None,
    };
    match ledger::verify(&args.file, key.as_deref(), args.expect_head.as_deref()) {
        Ok(report) => {
            let mut out = format!(
                "{}: intact, {} line(s), head {}\n",
                args.file.display(),
                report.lines,
                report.head
            );
            if let Some(line) = report.expected_at {
                out.push_str(&format!(
                    "the expected head is line {line}; every line after it chains on from it\n"
                ));
            }
            if report.incomplete_tail {
                out.push_str("note: the last line is incomplete (the writer was killed while writing it); every whole line verifies\n");
            }
            print_stdout(&out);
            Ok(0)
        }
        Err(broken) => {
            let _ = writeln!(io::stderr(), "{}: {broken}", args.file.display());
            // Line 0 means the file as a whole could not be checked (unreadable, bad arguments).
            Ok(if broken.line == 0 { 2 } else { 1 })
        }
    }
}

fn pins(args: &cli::PinsArgs) -> Result<u8, Error> {
    let path =
        match (&args.pins, args.upstream.is_empty()) {
            (Some(path), _) => path.clone(),
            (None, false) => pin::default_path(&args.upstream),
            (None, true) => return Err(Error::usage(
                "say which pin file: `--pins FILE`, or `-- <server command>` for its default file",
            )),
        };
    let out = match args.action.as_str() {
        "list" => pin::list(&path)?,
        "diff" => pin::diff(&path, &args.names)?,
        "approve" => pin::approve(&path, &args.names)?,
        other => {
            return Err(Error::usage(format!(
                "unknown pins action {other:?}; expected list, diff or approve"
            )))
        }
    };
    print_stdout(&out);
    Ok(0)
}

/// `mcpdome scan`: the ward's detectors on a saved `tools/list` response, or on a transcript of
/// JSON-RPC lines, offline. Exit 1 when anything is found.
fn scan(file: Option<&Path>) -> Result<u8, Error> {
    let text = read_input(file)?;
    let scanner = mcpdome::scan::Scanner::builtin();
    let name = file.map_or("stdin".to_owned(), |file| file.display().to_string());
    let report = mcpdome::ward::scan_document(&scanner, &text);
    let mut out = String::new();
    for line in &report {
        out.push_str(&format!("{name}:{line}\n"));
    }
    out.push_str(&format!("{name}: {} finding(s)\n", report.len()));
    print_stdout(&out);
    Ok(if report.is_empty() { 0 } else { 1 })
}

fn read_input(file: Option<&Path>) -> Result<String, Error> {
    use std::io::Read;
    match file {
        Some(file) => std::fs::read_to_string(file)
            .map_err(|err| Error::io(format!("failed to read `{}`", file.display()), err)),
        None => {
            let mut text = String::new();
            io::stdin()
                .read_to_string(&mut text)
                .map_err(|err| Error::io("failed to read stdin", err))?;
            Ok(text)
        }
    }
}

fn dup(fd: std::os::fd::BorrowedFd<'_>, name: &str) -> Result<File, Error> {
    fd.try_clone_to_owned()
        .map(File::from)
        .map_err(|err| Error::io(format!("failed to use {name}"), err))
}

/// Help and version text; a closed stdout (`mcpdome --help | head -1`) is not an error.
fn print_stdout(text: &str) {
    let _ = io::stdout().write_all(text.as_bytes());
}
