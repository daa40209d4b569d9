//! `Config`: what the proxy was asked to do, checked once at start-up and immutable afterwards.
//!
//! Today this is the command line. The interceptors that read a policy file (`--config`) and
//! the `--enable-*` switches are not in this version; asking for them is accepted so that
//! deployments written against the announced CLI start, and a warning says plainly that the
//! feature is not enforced yet.

use std::path::PathBuf;
use std::time::Duration;

use crate::cli::ProxyArgs;
use crate::error::Error;

#[derive(Debug)]
pub struct Config {
    pub max_message_bytes: usize,
    pub shutdown_grace: Duration,
    pub config_file: Option<PathBuf>,
    pub enable_ward: bool,
    pub enable_schema_pin: bool,
    pub enable_rate_limit: bool,
}

impl Config {
    pub fn load(args: &ProxyArgs) -> Result<Config, Error> {
        if let Some(path) = &args.config {
            std::fs::read(path).map_err(|err| {
                Error::io(
                    format!("failed to read config file `{}`", path.display()),
                    err,
                )
            })?;
        }
        Ok(Config {
            max_message_bytes: args.max_message_bytes,
            shutdown_grace: args.shutdown_grace,
            config_file: args.config.clone(),
            enable_ward: args.enable_ward,
            enable_schema_pin: args.enable_schema_pin,
            enable_rate_limit: args.enable_rate_limit,
        })
    }

    /// One line per requested feature that this version does not enforce yet.
    pub fn not_enforced(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.config_file.is_some() {
            out.push(
                "--config: policy files are not enforced in this version; every message is relayed",
            );
        }
        if self.enable_ward {
            out.push("--enable-ward: the ward is not in this version; messages are not scanned");
        }
        if self.enable_schema_pin {
            out.push("--enable-schema-pin: schema pinning is not in this version; tool definitions are not pinned");
        }
        if self.enable_rate_limit {
            out.push(
                "--enable-rate-limit: rate limiting is not in this version; calls are not limited",
            );
        }
        out
    }
}
