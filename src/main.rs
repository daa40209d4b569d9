//! The `mcpdome` binary: parse the command line, run the command, map the result to an exit
//! status. This is the only place that ends the process.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::process::ExitCode;

use mcpdome::cli::{self, Command};
use mcpdome::config::Config;
use mcpdome::error::Error;
use mcpdome::gate::Gate;
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
        Command::Proxy(args) => {
            log::set_level(args.log_level);
            let (config, settings) = Config::load(&args)?;
            for line in config.not_enforced().into_iter().map(str::to_owned).chain(settings.warnings.iter().cloned()) {
                warn!("{line}");
            }
            // Before any thread or child exists, so that every thread inherits the mask.
            let signals =
                signal::block().map_err(|err| Error::io("failed to block signals", err))?;
            let (server, to_upstream, from_upstream) = upstream::spawn(&args.upstream)?;
            // Our own handles on fds 0 and 1: unbuffered, and never locked by std's `Stdout`.
            let client_in = dup(io::stdin().as_fd(), "stdin")?;
            let to_client = dup(io::stdout().as_fd(), "stdout")?;
            let gate = Gate::new(config, settings, Box::new(to_client), Box::new(to_upstream));
            // One Gate for the life of the process, shared by both relay threads.
            let gate: &'static Gate = Box::leak(Box::new(gate));
            Ok(relay::run(gate, client_in, from_upstream, server, signals))
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
