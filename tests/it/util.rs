//! Helpers shared by the tests: run the real `mcpdome` binary against `tests/data/fake_server.py`,
//! talk to it line by line, and compare exact bytes.
//!
//! Every read has a deadline ([`TIMEOUT`]), so a test that goes wrong fails with a message
//! instead of hanging, and [`Proxy`]'s `Drop` kills the mcpdome it started (the fake server dies
//! with it, because mcpdome asks the kernel to SIGKILL its upstream when mcpdome dies).

use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// How long any one wait may take before the test fails.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// `--shutdown-grace` for tests whose server must be escalated to SIGTERM or SIGKILL: short, so
/// they stay fast. A server that is meant to exit by itself gets the default (2s) instead, so a
/// slow machine cannot turn its clean exit into a SIGTERM.
pub const GRACE: &str = "300ms";

pub const MCPDOME: &str = env!("CARGO_BIN_EXE_mcpdome");

pub const FAKE_SERVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/fake_server.py");

/// The Python interpreter itself, not a launcher shim (pyenv's forks a child, which would put
/// a process between mcpdome and the fake server and hide the server's signals and status).
pub fn python() -> &'static str {
    static PYTHON: OnceLock<String> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let out = Command::new("python3")
            .args(["-c", "import sys; sys.stdout.write(sys.executable)"])
            .output()
            .expect("python3 is on PATH");
        String::from_utf8(out.stdout).expect("sys.executable is UTF-8")
    })
}

/// Reads `out` line by line on a thread of its own; each line (with its `\n`, if it had one)
/// arrives on the receiver, which closes at end of input.
pub fn read_lines(out: impl Read + Send + 'static) -> Receiver<Vec<u8>> {
    let (tx, lines) = mpsc::channel();
    let mut out = BufReader::new(out);
    thread::spawn(move || loop {
        let mut line = Vec::new();
        match out.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                if tx.send(line).is_err() {
                    return;
                }
            }
        }
    });
    lines
}

/// A fresh, empty directory for one test's files.
pub fn scratch(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("it").join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// What a finished mcpdome left behind.
pub struct Finished {
    /// `None` if a signal ended it.
    pub code: Option<i32>,
    /// Lines on stdout that the test had not read yet.
    pub stdout: Vec<Vec<u8>>,
    pub stderr: String,
}

/// A running `mcpdome`, with its stdin, stdout and stderr in the test's hands.
pub struct Proxy {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Receiver<Vec<u8>>,
    /// Everything mcpdome wrote to stderr so far; the reader thread appends as it reads.
    stderr: Arc<Mutex<Vec<u8>>>,
    /// Receives `()` when stderr is closed.
    stderr_done: Receiver<()>,
}

impl Proxy {
    /// `mcpdome proxy <options> -- <python> fake_server.py <server_flags>`.
    pub fn start(options: &[&str], server_flags: &[&str]) -> Proxy {
        Proxy::start_env(options, server_flags, &[])
    }

    /// `mcpdome proxy <options> -- <python> fake_server.py <server_flags>`, with `env` added to
    /// mcpdome's environment.
    pub fn start_env(options: &[&str], server_flags: &[&str], env: &[(&str, &str)]) -> Proxy {
        let mut args: Vec<OsString> = vec!["proxy".into()];
        args.extend(options.iter().map(OsString::from));
        args.extend(["--".into(), python().into(), FAKE_SERVER.into()]);
        args.extend(server_flags.iter().map(OsString::from));
        Proxy::spawn_env(&args, env)
    }

    /// `mcpdome <args>`, exactly.
    pub fn spawn(args: &[OsString]) -> Proxy {
        Proxy::spawn_env(args, &[])
    }

    /// `mcpdome <args>` with `env` added to its environment. `MCPDOME_TOKEN` is never inherited
    /// from the test's own environment.
    pub fn spawn_env(args: &[OsString], env: &[(&str, &str)]) -> Proxy {
        let mut child = Command::new(MCPDOME)
            .args(args)
            .env_remove("MCPDOME_TOKEN")
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("failed to start mcpdome");
        let stdout = read_lines(child.stdout.take().unwrap());
        let (tx, stderr_done) = mpsc::channel();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut err = child.stderr.take().unwrap();
        let all = Arc::clone(&stderr);
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match err.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => all.lock().unwrap().extend_from_slice(&buf[..n]),
                }
            }
            let _ = tx.send(());
        });
        let stdin = child.stdin.take();
        Proxy { child, stdin, stdout, stderr, stderr_done }
    }

    /// How many times `needle` occurs in what mcpdome wrote to stderr so far.
    pub fn stderr_count(&self, needle: &str) -> usize {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).matches(needle).count()
    }

    /// Waits until `needle` has occurred `n` times on mcpdome's stderr.
    #[track_caller]
    pub fn wait_stderr(&self, needle: &str, n: usize) {
        let deadline = Instant::now() + TIMEOUT;
        while self.stderr_count(needle) < n {
            if Instant::now() >= deadline {
                let text = String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned();
                panic!("{needle:?} did not occur {n} time(s) on stderr within {TIMEOUT:?}; stderr:\n{text}");
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Writes these bytes to mcpdome's stdin as they are (the caller supplies the newline).
    #[track_caller]
    pub fn send(&mut self, bytes: impl AsRef<[u8]>) {
        let stdin = self.stdin.as_mut().expect("stdin already closed");
        stdin.write_all(bytes.as_ref()).expect("write to mcpdome's stdin");
        stdin.flush().unwrap();
    }

    /// Writes `line` and a newline.
    #[track_caller]
    pub fn send_line(&mut self, line: &str) {
        self.send(format!("{line}\n"));
    }

    pub fn close_stdin(&mut self) {
        self.stdin.take();
    }

    /// The next line on mcpdome's stdout, newline included.
    #[track_caller]
    pub fn recv(&self) -> Vec<u8> {
        match self.stdout.recv_timeout(TIMEOUT) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => panic!("no line from mcpdome within {TIMEOUT:?}"),
            Err(RecvTimeoutError::Disconnected) => panic!("mcpdome closed its stdout"),
        }
    }

    /// Asserts that the next line on stdout is `expected` plus a newline.
    #[track_caller]
    pub fn expect(&self, expected: &str) {
        assert_bytes(&self.recv(), format!("{expected}\n").as_bytes());
    }

    /// Sends `kill -<signal> <mcpdome's pid>`.
    #[track_caller]
    pub fn kill(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits for mcpdome to exit by itself and collects what it left on stdout and stderr.
    #[track_caller]
    pub fn finish(mut self) -> Finished {
        let deadline = Instant::now() + TIMEOUT;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for mcpdome") {
                break status;
            }
            if Instant::now() >= deadline {
                panic!("mcpdome did not exit within {TIMEOUT:?}");
            }
            thread::sleep(Duration::from_millis(5));
        };
        let mut stdout = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(line) => stdout.push(line),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => panic!("mcpdome's stdout stayed open"),
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        self.stderr_done.recv_timeout(left).expect("mcpdome's stderr stayed open");
        let stderr = std::mem::take(&mut *self.stderr.lock().unwrap());
        Finished {
            code: status.code(),
            stdout,
            stderr: String::from_utf8(stderr).expect("stderr is UTF-8"),
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Finished {
    /// Asserts the exit status and that stdout had nothing more.
    #[track_caller]
    pub fn assert_exit(&self, code: i32) {
        assert_eq!(self.code, Some(code), "exit status; stderr:\n{}", self.stderr);
        assert_lines(&self.stdout, &[]);
    }
}

/// Compares bytes, showing them as text on failure.
#[track_caller]
pub fn assert_bytes(actual: &[u8], expected: &[u8]) {
    if actual != expected {
        panic!("bytes differ\n  actual: {}\nexpected: {}", show(actual), show(expected));
    }
}

/// Compares lines (each with its newline) against `expected` (each without).
#[track_caller]
pub fn assert_lines(actual: &[Vec<u8>], expected: &[&str]) {
    let actual: Vec<String> = actual.iter().map(|line| show(line)).collect();
    let expected: Vec<String> =
        expected.iter().map(|line| show(format!("{line}\n").as_bytes())).collect();
    assert_eq!(actual, expected);
}

/// Bytes as a Rust-escaped string, so CR, newlines and invalid UTF-8 are visible.
pub fn show(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.utf8_chunks() {
        write!(out, "{}", chunk.valid().escape_debug()).unwrap();
        for b in chunk.invalid() {
            write!(out, "\\x{b:02x}").unwrap();
        }
    }
    out
}

/// `{"jsonrpc":"2.0","id":<id>,"method":"<method>"}`
pub fn request(id: &str, method: &str) -> String {
    format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"{method}"}}"#)
}

/// The fake server's default answer to `line` (sent with a newline).
pub fn echo(id: &str, line: &str) -> String {
    result(id, &format!(r#"{{"echo":{}}}"#, json_string(line)))
}

pub fn result(id: &str, result: &str) -> String {
    format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{result}}}"#)
}

/// The error line mcpdome writes, for a reason given without the "mcpdome: " prefix.
pub fn error(id: &str, code: i32, reason: &str) -> String {
    let message = json_string(&format!("mcpdome: {reason}"));
    format!(r#"{{"jsonrpc":"2.0","id":{id},"error":{{"code":{code},"message":{message}}}}}"#)
}

pub fn json_string(text: &str) -> String {
    serde_json::to_string(text).unwrap()
}

/// Sends `request(id, method)` and asserts that the fake server echoed it: the relay works.
#[track_caller]
pub fn round_trip(proxy: &mut Proxy, id: &str, method: &str) {
    let line = request(id, method);
    proxy.send_line(&line);
    proxy.expect(&echo(id, &line));
}

/// The lines the fake server logged with `--log`, each with its newline.
#[track_caller]
pub fn read_log(path: &Path) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(path).unwrap_or_default();
    bytes.split_inclusive(|&b| b == b'\n').map(<[u8]>::to_vec).collect()
}

/// Waits until process `pid` is gone or a zombie (dead, waiting to be reaped by whoever
/// inherited it); panics if it is still alive after [`TIMEOUT`]. SIGKILL is delivered
/// asynchronously, so a killed process may take a moment to die.
#[track_caller]
pub fn assert_dies(pid: u32) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().and_then(|stat| {
            // The state follows the command name, which is in parentheses.
            let after = &stat[stat.rfind(')')? + 1..];
            after.split_whitespace().next().map(str::to_owned)
        });
        match state.as_deref() {
            None | Some("Z" | "X") => return,
            Some(state) if Instant::now() >= deadline => {
                panic!("process {pid} is still alive (state {state})")
            }
            Some(_) => thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// Reads a pid that the fake server wrote.
#[track_caller]
pub fn read_pid(path: &Path) -> u32 {
    std::fs::read_to_string(path).expect("pid file").trim().parse().expect("pid")
}

/// A fresh, empty directory under the system's temp dir for one test's files, removed when
/// dropped (even when the test fails).
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(test: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("mcpdome-it-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir { path }
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// The path as a `&str`, for command lines.
    pub fn arg(&self, name: &str) -> String {
        self.join(name).to_str().expect("temp paths are UTF-8").to_owned()
    }

    /// Writes `name` atomically (a temporary file renamed over it), so a watcher never sees it
    /// half written. Returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.join(name);
        let tmp = self.join(&format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// What a finished `mcpdome <command>` printed.
#[derive(Debug, PartialEq, Eq)]
pub struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `mcpdome <args>` to completion with stdin closed.
#[track_caller]
pub fn run_mcpdome(args: &[&str]) -> Output {
    let args: Vec<OsString> = args.iter().map(OsString::from).collect();
    let mut proxy = Proxy::spawn(&args);
    proxy.close_stdin();
    let finished = proxy.finish();
    Output {
        code: finished.code,
        stdout: finished
            .stdout
            .iter()
            .map(|line| String::from_utf8(line.clone()).unwrap())
            .collect(),
        stderr: finished.stderr,
    }
}

/// The policy example of the announcement, exactly as published.
pub const ANNOUNCEMENT: &str = include_str!("../data/config/announcement.toml");

/// Two `[[psk]]` entries: `psk:dev` (label `role:developer`, key [`DEV_KEY`]) and `psk:ci`
/// (label `env:ci`, key [`CI_KEY`]).
pub const KEYS: &str = include_str!("../data/config/keys.toml");
pub const DEV_KEY: &str = "dev-key-7f3a9c";
pub const CI_KEY: &str = "ci-key-51d0e2";

/// `{"jsonrpc":"2.0","id":<id>,"method":"tools/call","params":{"name":"<tool>","arguments":<args>}}`
pub fn call(id: &str, tool: &str, args: &str) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{tool}","arguments":{args}}}}}"#
    )
}

/// The error line mcpdome writes for a refusal decided by `rule` (`data.rule`).
pub fn denied_by(id: &str, code: i32, reason: &str, rule: &str) -> String {
    let message = json_string(&format!("mcpdome: {reason}"));
    let rule = json_string(rule);
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"error":{{"code":{code},"message":{message},"data":{{"rule":{rule}}}}}}}"#
    )
}

/// Parses one line as JSON.
#[track_caller]
pub fn json(line: &[u8]) -> serde_json::Value {
    serde_json::from_slice(line).unwrap_or_else(|err| panic!("not JSON ({err}): {}", show(line)))
}
