//! The upstream MCP server as a process: start it, watch it, end it.
//!
//! The server is started directly from its argv (no shell), in a process group of its own so
//! that `npx`-style launchers and whatever they start can be signalled together, and with
//! stdin/stdout piped to the relay and stderr passed through. Ending it follows the MCP stdio
//! shutdown sequence: close its stdin, wait, SIGTERM, wait, SIGKILL.

use std::ffi::OsString;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::signal;

pub struct Upstream {
    child: Child,
    status: Option<ExitStatus>,
}

pub fn spawn(argv: &[OsString]) -> Result<(Upstream, ChildStdin, ChildStdout), Error> {
    let (program, args) = argv.split_first().expect("cli guarantees a non-empty upstream argv");
    let mut command = Command::new(program);
    command
        .args(args)
        // The gateway's key is for the gateway: the server it guards must not be handed it.
        .env_remove("MCPDOME_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .process_group(0);
    signal::prepare_child(&mut command);
    let mut child = command.spawn().map_err(|err| Error::spawn(program.to_string_lossy(), err))?;
    let stdin = child.stdin.take().expect("stdin was piped");
    let stdout = child.stdout.take().expect("stdout was piped");
    Ok((Upstream { child, status: None }, stdin, stdout))
}

impl Upstream {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status, if the server has exited.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Waits up to `grace` for the server to exit on its own (its stdin should be closed by
    /// now), then sends its process group SIGTERM, waits `grace` again, then SIGKILL.
    pub fn end(&mut self, grace: Duration) -> ExitStatus {
        if let Some(status) = self.wait_for(grace) {
            return status;
        }
        crate::info!(
            "upstream (pid {}) still running {grace:?} after its stdin closed; sending SIGTERM",
            self.pid()
        );
        signal::kill_group(self.pid(), signal::SIGTERM);
        if let Some(status) = self.wait_for(grace) {
            return status;
        }
        crate::warn!(
            "upstream (pid {}) ignored SIGTERM for {grace:?}; sending SIGKILL",
            self.pid()
        );
        self.kill_rest();
        loop {
            match self.child.wait() {
                Ok(status) => {
                    self.status = Some(status);
                    return status;
                }
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
                // wait fails only if the child was already reaped, which `status` records.
                Err(_) => {
                    return self.status.unwrap_or_else(|| ExitStatus::from_raw(signal::SIGKILL))
                }
            }
        }
    }

    /// SIGKILLs whatever is left in the server's process group (children it left behind).
    pub fn kill_rest(&self) {
        signal::kill_group(self.pid(), signal::SIGKILL);
    }

    fn wait_for(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let mut nap = Duration::from_millis(1);
        loop {
            if let Some(status) = self.try_status() {
                return Some(status);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            thread::sleep(nap.min(deadline - now));
            nap = (nap * 2).min(Duration::from_millis(50));
        }
    }
}

/// The status mcpdome exits with: the server's code, or 128 + N if signal N ended it (as a
/// shell reports it).
pub fn exit_code(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code as u8,
        (None, Some(sig)) => 128u8.wrapping_add(sig as u8),
        (None, None) => 1,
    }
}

/// "exited with status 3", "was killed by signal 9".
pub fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        (None, None) => "ended".to_owned(),
    }
}
