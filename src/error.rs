//! Start-up errors: what went wrong before the relay could begin.
//!
//! Once messages flow, nothing is an `Error`: a bad line gets a JSON-RPC reply and a log line, and
//! the relay goes on. Everything here ends the process with exit status 2 (usage or config), so
//! each message names the input it was about.

use std::fmt;

pub struct Error {
    kind: Box<ErrorKind>,
}

// Intentionally not public: callers print errors, they do not branch on them.
enum ErrorKind {
    Usage(String),
    Spawn { program: String, err: std::io::Error },
    Io { what: String, err: std::io::Error },
}

impl Error {
    pub fn usage(message: impl Into<String>) -> Error {
        ErrorKind::Usage(message.into()).into()
    }

    pub fn spawn(program: impl Into<String>, err: std::io::Error) -> Error {
        ErrorKind::Spawn { program: program.into(), err }.into()
    }

    pub fn io(what: impl Into<String>, err: std::io::Error) -> Error {
        ErrorKind::Io { what: what.into(), err }.into()
    }
}

impl From<ErrorKind> for Error {
    fn from(kind: ErrorKind) -> Error {
        Error { kind: Box::new(kind) }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.kind {
            ErrorKind::Usage(message) => f.write_str(message),
            ErrorKind::Spawn { program, err } => {
                write!(f, "failed to start upstream `{program}`: {err}")
            }
            ErrorKind::Io { what, err } => write!(f, "{what}: {err}"),
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for Error {}

impl From<lexopt::Error> for Error {
    fn from(err: lexopt::Error) -> Error {
        Error::usage(err.to_string())
    }
}
