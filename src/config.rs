//! `Config`: what the proxy was asked to do. The command line is read once; the TOML file
//! (`--config FILE`, or `./mcpdome.toml` when it exists) becomes [`Settings`], which are
//! re-read when the file changes and swapped whole.
//!
//! The file is parsed into a `serde_json::Value` by basic-toml and then checked by hand, field
//! by field, so that every error names where it is: `policy.toml:14:1: rules[3] (id =
//! "dev-write"): unknown field "tool"`. An unknown section, an unknown field, a value of the
//! wrong type and a regex that does not compile are all errors: a policy that silently means
//! less than it says is the worst kind of policy.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::auth::{Identity, Key};
use crate::cli::ProxyArgs;
use crate::error::Error;
use crate::glob::Glob;
use crate::policy::{Constraint, Effect, IdentityMatch, Names, Policy, Rule, Window};
use crate::scan::{RuleSpec, Scanner};
use crate::throttle::{self, Budget, Limits, Rate};
use crate::ward::Ward;

/// The file read when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "mcpdome.toml";

/// The longest settings file read; real ones are a few kilobytes.
const MAX_CONFIG_BYTES: usize = 16 << 20;

/// Compiled size limit for one policy regex (regex-lite's default is far larger). A policy is
/// trusted input, but a typo like `(a+)+{1000}` should fail at load, not at the first message.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// The command-line switches that turn features on without a file (or on top of one).
#[derive(Clone, Copy, Debug, Default)]
pub struct Switches {
    pub rate_limit: bool,
    pub ward: bool,
    pub schema_pin: bool,
}

#[derive(Debug)]
pub struct Config {
    pub max_message_bytes: usize,
    pub shutdown_grace: Duration,
    /// `--request-timeout`, if given; it overrides `[mcpdome] request_timeout`. Zero is off.
    pub request_timeout: Option<Duration>,
    /// The settings file, if one is in use; watched for changes.
    pub config_file: Option<PathBuf>,
    pub enable_ward: bool,
    pub enable_schema_pin: bool,
    pub enable_rate_limit: bool,
    /// `MCPDOME_TOKEN` from the environment: the key for every request of this session.
    pub env_token: Option<String>,
}

impl Config {
    /// A gateway with no flags, no settings file and no key: what tests and the fuzz targets
    /// drive, with the line limit they choose and no grace.
    pub fn transparent(max_message_bytes: usize) -> Config {
        Config {
            max_message_bytes,
            shutdown_grace: Duration::ZERO,
            request_timeout: None,
            config_file: None,
            enable_ward: false,
            enable_schema_pin: false,
            enable_rate_limit: false,
            env_token: None,
        }
    }

    /// Reads the command line and the settings file (if any). The file's settings are returned
    /// separately because they may be replaced later.
    pub fn load(args: &ProxyArgs) -> Result<(Config, Settings), Error> {
        let config_file = match &args.config {
            Some(path) => Some(path.clone()),
            None => Some(PathBuf::from(DEFAULT_CONFIG_FILE)).filter(|path| path.is_file()),
        };
        let switches = Switches {
            rate_limit: args.enable_rate_limit,
            ward: args.enable_ward,
            schema_pin: args.enable_schema_pin,
        };
        let settings = match &config_file {
            Some(path) => Settings::load(path, switches)?,
            None => Settings::transparent(switches),
        };
        let config = Config {
            max_message_bytes: args.max_message_bytes,
            shutdown_grace: args.shutdown_grace,
            request_timeout: args.request_timeout,
            config_file,
            enable_ward: args.enable_ward,
            enable_schema_pin: args.enable_schema_pin,
            enable_rate_limit: args.enable_rate_limit,
            env_token: std::env::var("MCPDOME_TOKEN").ok().filter(|token| !token.is_empty()),
        };
        Ok((config, settings))
    }

    pub fn switches(&self) -> Switches {
        Switches {
            rate_limit: self.enable_rate_limit,
            ward: self.enable_ward,
            schema_pin: self.enable_schema_pin,
        }
    }
}

/// Everything the settings file says, checked and compiled.
#[derive(Debug)]
pub struct Settings {
    /// Whether these come from a file. Without one mcpdome is a transparent relay: no message is
    /// inspected for keys, limits or rules.
    pub from_file: bool,
    /// `None` when the file has no rules and no `default_effect`: actions are not governed.
    pub policy: Option<Policy>,
    pub allow_anonymous: bool,
    /// `[mcpdome] request_timeout`, if set; zero is off.
    pub request_timeout: Option<Duration>,
    pub keys: Vec<Key>,
    pub limits: Limits,
    pub budgets: Vec<BudgetRule>,
    pub ledger: Option<LedgerSettings>,
    /// The ward, compiled; `None` when it is off.
    pub ward: Option<Ward>,
    /// Schema pinning; `None` when it is off. Read at start-up only.
    pub pins: Option<PinSettings>,
    /// Things that work but deserve a word at start-up (a plaintext secret in the file).
    pub warnings: Vec<String>,
}

#[derive(Debug)]
pub struct BudgetRule {
    pub budget: Budget,
    pub identities: IdentityMatch,
    pub tools: Names,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinSettings {
    /// `None`: the default file for the upstream command (`pin::default_path`).
    pub file: Option<PathBuf>,
    pub mode: crate::pin::Mode,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerSettings {
    pub path: PathBuf,
    pub hmac_key_file: Option<PathBuf>,
    pub include_arguments: bool,
}

impl Settings {
    /// No file: relay everything; the `--enable-*` switches still apply their defaults.
    pub fn transparent(switches: Switches) -> Settings {
        Settings {
            from_file: false,
            policy: None,
            allow_anonymous: true,
            request_timeout: None,
            keys: Vec::new(),
            limits: if switches.rate_limit { Limits::defaults() } else { Limits::default() },
            budgets: Vec::new(),
            ledger: None,
            ward: switches.ward.then(|| Ward::defaults(Scanner::builtin())),
            pins: switches
                .schema_pin
                .then_some(PinSettings { file: None, mode: crate::pin::Mode::TrustOnFirstUse }),
            warnings: Vec::new(),
        }
    }

    pub fn load(path: &Path, switches: Switches) -> Result<Settings, Error> {
        let text = read_config_text(path).map_err(|err| {
            Error::io(format!("failed to read config file `{}`", path.display()), err)
        })?;
        let base = path.parent().unwrap_or(Path::new(""));
        parse(&text, base, switches).map_err(|errors| {
            let name = path.display().to_string();
            let lines: Vec<String> = errors.iter().map(|err| format!("{name}:{err}")).collect();
            Error::usage(format!("invalid config file `{name}`:\n  {}", lines.join("\n  ")))
        })
    }

    /// Identity for a presented key, checking every configured key in constant time.
    pub fn identity_for(&self, token: &str) -> Option<Arc<Identity>> {
        crate::auth::find_key(&self.keys, &crate::auth::sha256(token.as_bytes()))
    }
}

/// The settings file's text. Only a regular file of at most [`MAX_CONFIG_BYTES`] is read: a
/// FIFO would block the reload (and with it the thread that handles signals) forever, and
/// `/dev/zero` would be read until memory ran out.
fn read_config_text(path: &Path) -> std::io::Result<String> {
    use std::io::{Error as IoError, ErrorKind, Read};
    // Looked at before opening: opening a FIFO for reading already blocks.
    if !std::fs::metadata(path)?.is_file() {
        return Err(IoError::new(ErrorKind::InvalidInput, "not a regular file"));
    }
    let file = std::fs::File::open(path)?;
    let mut text = String::new();
    let limit = MAX_CONFIG_BYTES as u64;
    file.take(limit + 1).read_to_string(&mut text)?;
    if text.len() as u64 > limit {
        return Err(IoError::new(ErrorKind::InvalidData, "larger than 16 MiB"));
    }
    Ok(text)
}

/// Hot reload: notices when the settings file changes and swaps the new settings in. The main
/// thread polls it between waits; a file that fails to load leaves the old settings running.
pub struct Watch {
    path: PathBuf,
    /// The file as last loaded.
    loaded: Option<(std::time::SystemTime, u64)>,
    /// The file as seen at the previous poll.
    seen: Option<(std::time::SystemTime, u64)>,
}

impl Watch {
    pub fn new(path: &Path) -> Watch {
        let now = stamp(path);
        Watch { path: path.to_owned(), loaded: now, seen: now }
    }

    /// Whether the file changed since it was loaded and has stayed the same for one poll: an
    /// editor that truncates and then writes is not caught half-way. A file left empty or cut
    /// short is caught by [`Watch::reload`] instead.
    pub fn changed(&mut self) -> bool {
        let now = stamp(&self.path);
        let settled = now == self.seen;
        self.seen = now;
        settled && now != self.loaded
    }

    pub fn reload(&mut self, gate: &crate::gate::Gate, why: &str) {
        self.loaded = stamp(&self.path);
        self.seen = self.loaded;
        let name = self.path.display().to_string();
        let current = gate.settings();
        let loaded = Settings::load(&self.path, gate.config.switches())
            .and_then(|settings| check_not_dropped(&current, settings, &name));
        let (outcome, reason) = match loaded {
            Ok(settings) => {
                if settings.ledger != current.ledger {
                    crate::warn!("{name}: [ledger] changes take effect at the next start");
                }
                if settings.pins != current.pins {
                    crate::warn!("{name}: [schema_pin] changes take effect at the next start");
                }
                for warning in &settings.warnings {
                    crate::warn!("{warning}");
                }
                gate.replace_settings(settings);
                crate::info!("reloaded {name} ({why})");
                ("allow", format!("reloaded ({why})"))
            }
            Err(err) => {
                crate::error!("{err}; keeping the settings in force");
                ("deny", format!("not reloaded ({why}): {err}"))
            }
        };
        if let Some(ledger) = &gate.ledger {
            let record = crate::ledger::Record {
                event: "reload",
                decision: Some(outcome),
                reason: Some(&reason),
                ..Default::default()
            };
            if let Err(err) = ledger.append(&record) {
                crate::error!("audit log: {err}");
            }
        }
    }
}

/// Refuses a reload that would turn the policy or the ward off by leaving it out. An emptied,
/// truncated or half-written file (a save in progress, a full disk, `: > mcpdome.toml`) parses
/// as valid TOML that governs nothing, so taking it at its word would fail open: every call
/// allowed until the next good save. Turning a check off takes words that say so.
fn check_not_dropped(current: &Settings, new: Settings, name: &str) -> Result<Settings, Error> {
    let dropped = if current.policy.is_some() && new.policy.is_none() {
        "has no rules and no `default_effect`, which would stop governing every call (to allow \
         everything on purpose, write `default_effect = \"allow\"` under [mcpdome])"
    } else if current.ward.is_some() && new.ward.is_none() {
        "has no [ward], which would stop scanning (to only log, set each category to \"log\" \
         under [ward])"
    } else {
        return Ok(new);
    };
    Err(Error::usage(format!("config file `{name}` {dropped}")))
}

fn stamp(path: &Path) -> Option<(std::time::SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// What a valid settings file configures, one line per part, for `mcpdome validate`.
pub fn summary(settings: &Settings) -> String {
    let mut out = String::new();
    match &settings.policy {
        None => out.push_str("policy: none (actions are not governed)\n"),
        Some(policy) => {
            out.push_str(&format!(
                "policy: {} rule(s), default {}\n",
                policy.rules.len(),
                policy.default_effect
            ));
            for rule in &policy.rules {
                out.push_str(&format!("  {:>6}  {:<5}  {}\n", rule.priority, rule.effect, rule.id));
            }
        }
    }
    out.push_str(&format!(
        "identities: {} key(s), anonymous {}\n",
        settings.keys.len(),
        if settings.allow_anonymous { "allowed" } else { "refused" }
    ));
    let limits = &settings.limits;
    let named: Vec<&str> = [
        ("global", limits.global.is_some()),
        ("per_identity", limits.per_identity.is_some()),
        ("per_tool", limits.per_tool.is_some()),
        ("per_identity_tool", limits.per_identity_tool.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, on)| on.then_some(name))
    .collect();
    out.push_str(&format!(
        "rate limits: {}\n",
        if named.is_empty() { "none".to_owned() } else { named.join(", ") }
    ));
    out.push_str(&format!("budgets: {}\n", settings.budgets.len()));
    match &settings.ledger {
        None => out.push_str("ledger: none\n"),
        Some(ledger) => out.push_str(&format!("ledger: {}\n", ledger.path.display())),
    }
    out
}

/// One problem in the settings file, with its position (1-based; 0 when unknown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub line: usize,
    pub col: usize,
    pub context: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: ", self.line, self.col)?;
        if !self.context.is_empty() {
            write!(f, "{}: ", self.context)?;
        }
        f.write_str(&self.message)
    }
}

const TOP_LEVEL: &[&str] = &[
    "mcpdome",
    "sentinel",
    "psk",
    "api_key",
    "rate_limit",
    "budget",
    "rules",
    "ledger",
    "ward",
    "schema_pin",
];

/// Parses and checks a settings file. Relative paths in it are relative to `base` (the file's
/// directory). Returns every error found, not just the first.
pub fn parse(text: &str, base: &Path, switches: Switches) -> Result<Settings, Vec<ConfigError>> {
    let root: Value =
        basic_toml::from_str(text).map_err(|err| vec![toml_error(&err.to_string())])?;
    let mut p = Parser { text, errors: Vec::new(), warnings: Vec::new() };
    let Value::Object(root) = root else { unreachable!("a TOML document is a table") };
    for key in root.keys() {
        if !TOP_LEVEL.contains(&key.as_str()) {
            let message =
                format!("unknown section `{key}`; expected one of {}", TOP_LEVEL.join(", "));
            p.error_at(p.locate_section(key, None), String::new(), message);
        }
    }

    let mut default_effect = None;
    let mut request_timeout = None;
    if let Some(table) = p.table(&root, "mcpdome") {
        let at = p.locate_section("mcpdome", None);
        let mut t = Fields::new(&mut p, table, "[mcpdome]", at);
        default_effect = t.effect("default_effect");
        if let Some(text) = t.string("request_timeout") {
            request_timeout = crate::cli::parse_timeout(&text);
            if request_timeout.is_none() {
                let message = format!("`request_timeout` must be a duration such as \"90s\" or \"10m\", or \"off\"; found {text:?}");
                t.error("request_timeout", message);
            }
        }
        t.finish(&["default_effect", "request_timeout"]);
    }
    let mut allow_anonymous = true;
    if let Some(table) = p.table(&root, "sentinel") {
        let at = p.locate_section("sentinel", None);
        let mut t = Fields::new(&mut p, table, "[sentinel]", at);
        allow_anonymous = t.bool("allow_anonymous").unwrap_or(true);
        t.finish(&["allow_anonymous"]);
    }
    let mut keys = Vec::new();
    for kind in ["psk", "api_key"] {
        for (idx, table) in p.array_of_tables(&root, kind).into_iter().enumerate() {
            if let Some(key) = p.key(kind, idx, table) {
                if keys.iter().any(|k: &Key| k.identity.principal == key.identity.principal) {
                    let at = p.locate_section(kind, Some(idx));
                    p.error_at(
                        at,
                        format!("{kind}[{idx}]"),
                        format!("key_id `{}` is defined twice", key.key_id),
                    );
                }
                keys.push(key);
            }
        }
    }
    let mut limits = if switches.rate_limit { Limits::defaults() } else { Limits::default() };
    if let Some(table) = p.table(&root, "rate_limit") {
        let at = p.locate_section("rate_limit", None);
        let mut t = Fields::new(&mut p, table, "[rate_limit]", at);
        for (name, slot) in [
            ("global", &mut limits.global),
            ("per_identity", &mut limits.per_identity),
            ("per_tool", &mut limits.per_tool),
            ("per_identity_tool", &mut limits.per_identity_tool),
        ] {
            if let Some(rate) = t.rate(name) {
                *slot = Some(rate);
            }
        }
        t.finish(&["global", "per_identity", "per_tool", "per_identity_tool"]);
    }
    let mut budgets = Vec::new();
    for (idx, table) in p.array_of_tables(&root, "budget").into_iter().enumerate() {
        if let Some(budget) = p.budget(idx, table) {
            budgets.push(budget);
        }
    }
    let mut rules = Vec::new();
    for (idx, table) in p.array_of_tables(&root, "rules").into_iter().enumerate() {
        if let Some(rule) = p.rule(idx, table) {
            if rules.iter().any(|r: &Rule| r.id == rule.id) {
                let at = p.locate_section("rules", Some(idx));
                let context = format!("rules[{idx}] (id = \"{}\")", rule.id);
                p.error_at(at, context, format!("id \"{}\" is used by an earlier rule", rule.id));
            }
            rules.push(rule);
        }
    }
    let mut ledger = None;
    if let Some(table) = p.table(&root, "ledger") {
        let at = p.locate_section("ledger", None);
        let mut t = Fields::new(&mut p, table, "[ledger]", at);
        let path = t.string("path");
        let hmac_key_file = t.string("hmac_key_file").map(|file| base.join(file));
        let include_arguments = t.bool("include_arguments").unwrap_or(false);
        if path.is_none() {
            t.missing("path");
        }
        t.finish(&["path", "hmac_key_file", "include_arguments"]);
        ledger = path.map(|path| LedgerSettings {
            path: base.join(path),
            hmac_key_file,
            include_arguments,
        });
    }

    /// The keys of `[ward]` that set an action: one per category, and one for secrets in results.
    const WARD_ACTION_KEYS: [&str; 6] = [
        "injection",
        "role_hijack",
        "exfiltration",
        "tool_poisoning",
        "secret",
        "secret_in_results",
    ];
    let mut ward = None;
    let ward_table = p.table(&root, "ward");
    if ward_table.is_some() || switches.ward {
        let empty = Map::new();
        let at = p.locate_section("ward", None);
        let mut t = Fields::new(&mut p, ward_table.unwrap_or(&empty), "[ward]", at);
        let enabled = t.bool("enabled").unwrap_or(true) || switches.ward;
        let mut actions = Vec::new();
        for category in WARD_ACTION_KEYS {
            if let Some(name) = t.string(category) {
                match crate::ward::Action::from_name(&name) {
                    Some(action) => actions.push((category, action)),
                    None => t.error(
                        category,
                        format!("`{category}` must be \"block\", \"redact\" or \"log\""),
                    ),
                }
            }
        }
        let rules = t.ward_rules("rules");
        let mut known = vec!["enabled"];
        known.extend(WARD_ACTION_KEYS);
        known.push("rules");
        t.finish(&known);
        if enabled {
            match Scanner::with_rules(rules.unwrap_or_default()) {
                Ok(scanner) => {
                    let mut compiled = Ward::defaults(scanner);
                    for (name, action) in actions {
                        match crate::scan::Category::from_name(name) {
                            Some(category) => {
                                compiled.actions.insert(category, action);
                            }
                            None => compiled.secret_in_results = action,
                        }
                    }
                    ward = Some(compiled);
                }
                Err(err) => p.error_at(at, "[ward]".to_owned(), err),
            }
        }
    }
    let mut pins = None;
    let pin_table = p.table(&root, "schema_pin");
    if pin_table.is_some() || switches.schema_pin {
        let empty = Map::new();
        let at = p.locate_section("schema_pin", None);
        let mut t = Fields::new(&mut p, pin_table.unwrap_or(&empty), "[schema_pin]", at);
        let enabled = t.bool("enabled").unwrap_or(true) || switches.schema_pin;
        let file = t.string("file").map(|file| base.join(file));
        let mode = match t.string("mode").as_deref() {
            None | Some("tofu") => Some(crate::pin::Mode::TrustOnFirstUse),
            Some("locked") => Some(crate::pin::Mode::Locked),
            Some(_) => {
                t.error(
                    "mode",
                    "`mode` must be \"tofu\" (trust on first use) or \"locked\"".to_owned(),
                );
                None
            }
        };
        t.finish(&["enabled", "file", "mode"]);
        if let (true, Some(mode)) = (enabled, mode) {
            pins = Some(PinSettings { file, mode });
        }
    }

    if !p.errors.is_empty() {
        return Err(p.errors);
    }
    // Stable sort: equal priorities keep the order of the file.
    rules.sort_by_key(|rule| rule.priority);
    let policy = (!rules.is_empty() || default_effect.is_some())
        .then(|| Policy { rules, default_effect: default_effect.unwrap_or(Effect::Deny) });
    Ok(Settings {
        from_file: true,
        policy,
        allow_anonymous,
        request_timeout,
        keys,
        limits,
        budgets,
        ledger,
        ward,
        pins,
        warnings: p.warnings,
    })
}

/// basic-toml reports "… at line 3 column 12"; we print `3:12: …`.
fn toml_error(text: &str) -> ConfigError {
    let (message, line, col) = match text.rfind(" at line ") {
        Some(at) => {
            let (line, col) =
                text[at + 9..].split_once(" column ").unwrap_or((&text[at + 9..], "1"));
            (&text[..at], line.trim().parse().unwrap_or(0), col.trim().parse().unwrap_or(0))
        }
        None => (text, 0, 0),
    };
    ConfigError { line, col, context: String::new(), message: format!("TOML syntax: {message}") }
}

struct Parser<'t> {
    text: &'t str,
    errors: Vec<ConfigError>,
    warnings: Vec<String>,
}

/// A 1-based (line, column) position.
type At = (usize, usize);

impl<'t> Parser<'t> {
    fn error_at(&mut self, at: At, context: String, message: String) {
        self.errors.push(ConfigError { line: at.0, col: at.1, context, message });
    }

    /// The line of `[name]`, or of the `index`-th `[[name]]`.
    fn locate_section(&self, name: &str, index: Option<usize>) -> At {
        let header = match index {
            Some(_) => format!("[[{name}]]"),
            None => format!("[{name}]"),
        };
        let mut seen = 0;
        for (n, line) in self.text.lines().enumerate() {
            let trimmed = line.trim_start();
            if trimmed.starts_with(&header) {
                if index.is_none_or(|index| index == seen) {
                    return (n + 1, line.len() - trimmed.len() + 1);
                }
                seen += 1;
            }
        }
        // `name = …` as a top-level key or inline table.
        self.locate_key((0, 0), name).unwrap_or((0, 0))
    }

    /// The line of `key =` in the section whose header is on line `section.0` (0: the top).
    fn locate_key(&self, section: At, key: &str) -> Option<At> {
        for (n, line) in self.text.lines().enumerate().skip(section.0) {
            let trimmed = line.trim_start();
            if is_header(trimmed) {
                return None;
            }
            if let Some(rest) = trimmed.strip_prefix(key) {
                if rest.trim_start().starts_with('=') {
                    return Some((n + 1, line.len() - trimmed.len() + 1));
                }
            }
        }
        None
    }

    fn table<'v>(
        &mut self,
        root: &'v Map<String, Value>,
        name: &str,
    ) -> Option<&'v Map<String, Value>> {
        match root.get(name)? {
            Value::Object(table) => Some(table),
            _ => {
                let at = self.locate_section(name, None);
                self.error_at(at, String::new(), format!("`{name}` must be a table ([{name}])"));
                None
            }
        }
    }

    fn array_of_tables<'v>(
        &mut self,
        root: &'v Map<String, Value>,
        name: &str,
    ) -> Vec<&'v Map<String, Value>> {
        let Some(value) = root.get(name) else { return Vec::new() };
        let items = match value {
            Value::Array(items) => items,
            _ => {
                let at = self.locate_section(name, None);
                self.error_at(
                    at,
                    String::new(),
                    format!("`{name}` must be an array of tables ([[{name}]])"),
                );
                return Vec::new();
            }
        };
        let mut tables = Vec::new();
        for (idx, item) in items.iter().enumerate() {
            match item {
                Value::Object(table) => tables.push(table),
                _ => {
                    let at = self.locate_section(name, Some(idx));
                    self.error_at(at, format!("{name}[{idx}]"), "must be a table".to_owned());
                }
            }
        }
        tables
    }

    fn key(&mut self, kind: &'static str, idx: usize, table: &Map<String, Value>) -> Option<Key> {
        let at = self.locate_section(kind, Some(idx));
        let context = format!("{kind}[{idx}]");
        let mut t = Fields::new(self, table, &context, at);
        let key_id = t.string("key_id");
        let secret_sha256 = t.string("secret_sha256");
        let secret = t.string("secret");
        let labels = t.strings("labels").unwrap_or_default();
        t.finish(&["key_id", "secret_sha256", "secret", "labels"]);
        let Some(key_id) = key_id else {
            self.error_at(at, context, "missing field `key_id`".to_owned());
            return None;
        };
        let context = format!("{kind}[{idx}] (key_id = \"{key_id}\")");
        let digest = match (secret_sha256, secret) {
            (Some(hex), None) => match crate::auth::parse_sha256_hex(&hex) {
                Some(digest) => digest,
                None => {
                    let at = self.locate_key(at, "secret_sha256").unwrap_or(at);
                    self.error_at(
                        at,
                        context,
                        "secret_sha256 must be 64 hexadecimal digits".to_owned(),
                    );
                    return None;
                }
            },
            (None, Some(secret)) => {
                self.warnings.push(format!(
                    "{context}: the secret is stored in plain text; store `secret_sha256 = \"{}\"` instead",
                    crate::auth::sha256_hex(secret.as_bytes())
                ));
                crate::auth::sha256(secret.as_bytes())
            }
            (Some(_), Some(_)) => {
                self.error_at(
                    at,
                    context,
                    "give either `secret_sha256` or `secret`, not both".to_owned(),
                );
                return None;
            }
            (None, None) => {
                self.error_at(
                    at,
                    context,
                    "missing field `secret_sha256` (run `mcpdome keygen`)".to_owned(),
                );
                return None;
            }
        };
        let identity = Arc::new(Identity { principal: format!("{kind}:{key_id}"), labels });
        Some(Key { key_id, secret_sha256: digest, identity })
    }

    fn budget(&mut self, idx: usize, table: &Map<String, Value>) -> Option<BudgetRule> {
        let at = self.locate_section("budget", Some(idx));
        let context = format!("budget[{idx}]");
        let mut t = Fields::new(self, table, &context, at);
        let id = t.string("id").unwrap_or_else(|| format!("budget[{idx}]"));
        let identities = t.identities("identities");
        let tools = t.names("tools");
        let max_calls = t.uint("max_calls");
        let window = t.string("window");
        let cost = t.costs("cost");
        t.finish(&["id", "identities", "tools", "max_calls", "window", "cost"]);
        let window = match window.as_deref().map(throttle::parse_window) {
            Some(Some(window)) => window,
            Some(None) => {
                let at = self.locate_key(at, "window").unwrap_or(at);
                self.error_at(
                    at,
                    context,
                    "window must be a duration such as \"30m\", \"1h\" or \"1d\"".to_owned(),
                );
                return None;
            }
            None => {
                self.error_at(at, context, "missing field `window`".to_owned());
                return None;
            }
        };
        let Some(max) = max_calls else {
            self.error_at(at, context, "missing field `max_calls`".to_owned());
            return None;
        };
        let budget = Budget { name: id, max, window, cost: cost.unwrap_or_default() };
        Some(BudgetRule {
            budget,
            identities: identities
                .unwrap_or(IdentityMatch { any: true, ..IdentityMatch::default() }),
            tools: tools.unwrap_or_else(|| Names(vec![Glob::new("*")])),
        })
    }

    fn rule(&mut self, idx: usize, table: &Map<String, Value>) -> Option<Rule> {
        let at = self.locate_section("rules", Some(idx));
        let id = table.get("id").and_then(Value::as_str).map(str::to_owned);
        let context = match &id {
            Some(id) => format!("rules[{idx}] (id = \"{id}\")"),
            None => format!("rules[{idx}]"),
        };
        let n_errors = self.errors.len();
        let mut t = Fields::new(self, table, &context, at);
        t.string("id");
        t.string("description");
        let priority = t.int("priority");
        let effect = t.effect("effect");
        let identities = t.identities("identities");
        let tools = t.names("tools");
        let resources = t.names("resources");
        let prompts = t.names("prompts");
        let methods = t.names("methods");
        let arguments = t.constraints("arguments");
        let minutes = t.hours("hours");
        let days = t.days("days");
        t.finish(&[
            "id",
            "description",
            "priority",
            "effect",
            "identities",
            "tools",
            "resources",
            "prompts",
            "methods",
            "arguments",
            "hours",
            "days",
        ]);
        for (field, present) in [
            ("id", id.is_some()),
            ("priority", priority.is_some()),
            ("effect", effect.is_some()),
            ("identities", identities.is_some()),
        ] {
            if !present && table.get(field).is_none() {
                self.error_at(at, context.clone(), format!("missing field `{field}`"));
            }
        }
        if tools.is_none() && resources.is_none() && prompts.is_none() && methods.is_none() {
            self.error_at(
                at,
                context.clone(),
                "a rule must name what it governs: `tools`, `resources`, `prompts` or `methods`"
                    .to_owned(),
            );
        }
        if self.errors.len() > n_errors {
            return None;
        }
        let window = (minutes.is_some() || days.is_some()).then_some(Window { minutes, days });
        Some(Rule {
            id: id?,
            priority: priority?,
            effect: effect?,
            identities: identities?,
            tools,
            resources,
            prompts,
            methods,
            arguments: arguments.unwrap_or_default(),
            window,
        })
    }
}

/// Reads the fields of one table, remembering which were read so that the rest can be
/// reported as unknown.
struct Fields<'p, 't, 'v> {
    p: &'p mut Parser<'t>,
    table: &'v Map<String, Value>,
    context: String,
    at: At,
}

impl<'p, 't, 'v> Fields<'p, 't, 'v> {
    fn new(p: &'p mut Parser<'t>, table: &'v Map<String, Value>, context: &str, at: At) -> Self {
        Fields { p, table, context: context.to_owned(), at }
    }

    fn error(&mut self, key: &str, message: String) {
        let at = self.p.locate_key(self.at, key).unwrap_or(self.at);
        let context = self.context.clone();
        self.p.error_at(at, context, message);
    }

    fn missing(&mut self, key: &str) {
        let (at, context) = (self.at, self.context.clone());
        self.p.error_at(at, context, format!("missing field `{key}`"));
    }

    fn finish(self, known: &[&str]) {
        for key in self.table.keys() {
            if !known.contains(&key.as_str()) {
                let at = self.p.locate_key(self.at, key).unwrap_or(self.at);
                let message =
                    format!("unknown field `{key}`; expected one of {}", known.join(", "));
                self.p.error_at(at, self.context.clone(), message);
            }
        }
    }

    fn get(&self, key: &str) -> Option<&'v Value> {
        self.table.get(key)
    }

    fn string(&mut self, key: &str) -> Option<String> {
        match self.get(key)? {
            Value::String(text) => Some(text.clone()),
            _ => {
                self.error(key, format!("`{key}` must be a string"));
                None
            }
        }
    }

    fn bool(&mut self, key: &str) -> Option<bool> {
        match self.get(key)? {
            Value::Bool(b) => Some(*b),
            _ => {
                self.error(key, format!("`{key}` must be true or false"));
                None
            }
        }
    }

    fn int(&mut self, key: &str) -> Option<i64> {
        match self.get(key)?.as_i64() {
            Some(n) => Some(n),
            None => {
                self.error(key, format!("`{key}` must be an integer"));
                None
            }
        }
    }

    fn uint(&mut self, key: &str) -> Option<u64> {
        match self.get(key)?.as_u64() {
            Some(n) => Some(n),
            None => {
                self.error(key, format!("`{key}` must be a non-negative integer"));
                None
            }
        }
    }

    fn strings(&mut self, key: &str) -> Option<Vec<String>> {
        match self.get(key)? {
            Value::String(text) => Some(vec![text.clone()]),
            Value::Array(items) if items.iter().all(Value::is_string) => {
                Some(items.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            }
            _ => {
                self.error(key, format!("`{key}` must be a string or an array of strings"));
                None
            }
        }
    }

    fn effect(&mut self, key: &str) -> Option<Effect> {
        match self.get(key)?.as_str() {
            Some("allow") => Some(Effect::Allow),
            Some("deny") => Some(Effect::Deny),
            _ => {
                self.error(key, format!("`{key}` must be \"allow\" or \"deny\""));
                None
            }
        }
    }

    fn names(&mut self, key: &str) -> Option<Names> {
        let names = self.strings(key)?;
        if names.is_empty() {
            self.error(
                key,
                format!(
                    "`{key}` is empty, so the rule would match nothing; remove it or list names"
                ),
            );
            return None;
        }
        Some(Names(names.iter().map(|name| Glob::new(name)).collect()))
    }

    fn identities(&mut self, key: &str) -> Option<IdentityMatch> {
        match self.get(key)? {
            Value::String(star) if star == "*" => {
                Some(IdentityMatch { any: true, ..IdentityMatch::default() })
            }
            Value::Object(table) => {
                let mut out = IdentityMatch::default();
                for (field, value) in table {
                    let list = match value {
                        Value::Array(items) if items.iter().all(Value::is_string) => {
                            items.iter().filter_map(Value::as_str).map(str::to_owned).collect()
                        }
                        _ => {
                            self.error(key, format!("`{key}.{field}` must be an array of strings"));
                            return None;
                        }
                    };
                    match field.as_str() {
                        "labels" => out.labels = list,
                        "principals" => out.principals = list,
                        _ => {
                            self.error(
                                key,
                                format!(
                                    "unknown field `{key}.{field}`; expected labels or principals"
                                ),
                            );
                            return None;
                        }
                    }
                }
                if out.labels.is_empty() && out.principals.is_empty() {
                    self.error(
                        key,
                        format!("`{key}` names no labels or principals; use \"*\" for everyone"),
                    );
                    return None;
                }
                Some(out)
            }
            _ => {
                self.error(
                    key,
                    format!(
                        "`{key}` must be \"*\", {{ labels = [...] }} or {{ principals = [...] }}"
                    ),
                );
                None
            }
        }
    }

    fn constraints(&mut self, key: &str) -> Option<Vec<Constraint>> {
        let Value::Array(items) = self.get(key)? else {
            self.error(key, format!("`{key}` must be an array of {{ param = ..., ... }} tables"));
            return None;
        };
        let mut out = Vec::new();
        for (idx, item) in items.iter().enumerate() {
            let Value::Object(table) = item else {
                self.error(key, format!("`{key}[{idx}]` must be a table"));
                return None;
            };
            let mut constraint = Constraint {
                param: String::new(),
                allow_glob: Vec::new(),
                deny_regex: Vec::new(),
                max_length: None,
            };
            for (field, value) in table {
                let list = || -> Option<Vec<String>> {
                    match value {
                        Value::String(text) => Some(vec![text.clone()]),
                        Value::Array(items) if items.iter().all(Value::is_string) => Some(
                            items.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
                        ),
                        _ => None,
                    }
                };
                match field.as_str() {
                    "param" => match value.as_str() {
                        Some(param) if !param.is_empty() => constraint.param = param.to_owned(),
                        _ => {
                            self.error(
                                key,
                                format!("`{key}[{idx}].param` must be a non-empty string"),
                            );
                            return None;
                        }
                    },
                    "allow_glob" => match list() {
                        Some(globs) => {
                            constraint.allow_glob =
                                globs.iter().map(|glob| Glob::new(glob)).collect()
                        }
                        None => {
                            self.error(key, format!("`{key}[{idx}].allow_glob` must be a string or an array of strings"));
                            return None;
                        }
                    },
                    "deny_regex" => match list() {
                        Some(patterns) => {
                            for pattern in patterns {
                                match regex_lite::RegexBuilder::new(&pattern)
                                    .size_limit(REGEX_SIZE_LIMIT)
                                    .build()
                                {
                                    Ok(regex) => constraint
                                        .deny_regex
                                        .push(crate::policy::DenyRegex::new(regex)),
                                    Err(err) => {
                                        let message = format!("`{key}[{idx}].deny_regex` `{pattern}` does not compile: {err}");
                                        self.error(key, message.replace('\n', " "));
                                        return None;
                                    }
                                }
                            }
                        }
                        None => {
                            self.error(key, format!("`{key}[{idx}].deny_regex` must be a string or an array of strings"));
                            return None;
                        }
                    },
                    "max_length" => match value.as_u64() {
                        Some(max) => constraint.max_length = Some(max as usize),
                        None => {
                            self.error(
                                key,
                                format!("`{key}[{idx}].max_length` must be a non-negative integer"),
                            );
                            return None;
                        }
                    },
                    _ => {
                        let message = format!("unknown field `{key}[{idx}].{field}`; expected param, allow_glob, deny_regex or max_length");
                        self.error(key, message);
                        return None;
                    }
                }
            }
            if constraint.param.is_empty() {
                self.error(key, format!("`{key}[{idx}]` is missing `param`"));
                return None;
            }
            if constraint.param == "*" && !constraint.allow_glob.is_empty() {
                self.error(
                    key,
                    format!("`{key}[{idx}]`: allow_glob needs a named param, not \"*\""),
                );
                return None;
            }
            if constraint.allow_glob.is_empty()
                && constraint.deny_regex.is_empty()
                && constraint.max_length.is_none()
                && constraint.param == "*"
            {
                self.error(key, format!("`{key}[{idx}]` constrains nothing; give allow_glob, deny_regex or max_length"));
                return None;
            }
            out.push(constraint);
        }
        Some(out)
    }

    /// `rules = [{ id, category, pattern, anchors, targets }]` under `[ward]`.
    fn ward_rules(&mut self, key: &str) -> Option<Vec<RuleSpec>> {
        let Value::Array(items) = self.get(key)? else {
            self.error(
                key,
                format!("`{key}` must be an array of {{ id, category, pattern, anchors }} tables"),
            );
            return None;
        };
        let mut out = Vec::new();
        for (idx, item) in items.iter().enumerate() {
            let text = |field: &str| item.get(field).and_then(Value::as_str).map(str::to_owned);
            let list = |field: &str| -> Option<Vec<String>> {
                match item.get(field) {
                    None => Some(Vec::new()),
                    Some(Value::Array(values)) => {
                        values.iter().map(|v| v.as_str().map(str::to_owned)).collect()
                    }
                    Some(_) => None,
                }
            };
            let known = ["id", "category", "pattern", "anchors", "targets"];
            if let Some(unknown) = item
                .as_object()
                .and_then(|table| table.keys().find(|k| !known.contains(&k.as_str())))
            {
                self.error(
                    key,
                    format!(
                        "unknown field `{key}[{idx}].{unknown}`; expected one of {}",
                        known.join(", ")
                    ),
                );
                return None;
            }
            let category =
                text("category").and_then(|name| crate::scan::Category::from_name(&name));
            let targets = list("targets").and_then(|names| {
                names
                    .iter()
                    .map(|name| match name.as_str() {
                        "request" => Some(crate::scan::Target::Request),
                        "response" => Some(crate::scan::Target::Response),
                        "tool_definition" => Some(crate::scan::Target::ToolDefinition),
                        _ => None,
                    })
                    .collect::<Option<Vec<_>>>()
            });
            match (text("id"), category, text("pattern"), list("anchors"), targets) {
                (Some(id), Some(category), Some(pattern), Some(anchors), Some(targets)) => {
                    out.push(RuleSpec { id, category, pattern, anchors, targets });
                }
                _ => {
                    self.error(key, format!(
                        "`{key}[{idx}]` needs id, category (injection, role_hijack, exfiltration, tool_poisoning, secret), pattern, and optionally anchors = [..] and targets = [\"request\", \"response\", \"tool_definition\"]"
                    ));
                    return None;
                }
            }
        }
        Some(out)
    }

    fn rate(&mut self, key: &str) -> Option<Rate> {
        let value = self.get(key)?;
        let rate = value.get("rate").and_then(Value::as_f64);
        let burst = value.get("burst").and_then(Value::as_f64).or(rate);
        let extra =
            value.as_object().is_none_or(|table| table.keys().any(|k| k != "rate" && k != "burst"));
        match (rate, burst) {
            (Some(rate), Some(burst))
                if !extra && (Rate { per_second: rate, burst }).is_valid() =>
            {
                Some(Rate { per_second: rate, burst })
            }
            _ => {
                self.error(key, format!("`{key}` must be {{ rate = <calls per second, > 0>, burst = <calls, >= 1> }}"));
                None
            }
        }
    }

    fn costs(&mut self, key: &str) -> Option<Vec<(String, u64)>> {
        let value = self.get(key)?;
        let parsed = value.as_object().and_then(|table| {
            table
                .iter()
                .map(|(tool, cost)| cost.as_u64().map(|cost| (tool.clone(), cost)))
                .collect::<Option<Vec<_>>>()
        });
        if parsed.is_none() {
            self.error(key, format!("`{key}` must be a table of tool = <non-negative integer>"));
        }
        parsed
    }

    /// `hours = "09:00-17:00"` (UTC).
    fn hours(&mut self, key: &str) -> Option<(u16, u16)> {
        let text = self.get(key)?.as_str();
        let parsed = text.and_then(|text| {
            let (start, end) = text.split_once('-')?;
            Some((minutes(start.trim())?, minutes(end.trim())?))
        });
        if parsed.is_none() {
            self.error(key, format!("`{key}` must look like \"09:00-17:00\" (UTC)"));
        }
        parsed
    }

    /// `days = ["mon", "tue", ...]`.
    fn days(&mut self, key: &str) -> Option<u8> {
        const NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
        let parsed = self.get(key)?.as_array().and_then(|items| {
            items.iter().try_fold(0u8, |mask, item| {
                let day = item.as_str()?.to_ascii_lowercase();
                let idx = NAMES.iter().position(|name| day.starts_with(name))?;
                Some(mask | 1 << idx)
            })
        });
        if parsed.is_none() {
            self.error(key, format!("`{key}` must be an array of day names (\"mon\" … \"sun\")"));
        }
        parsed
    }
}

/// `[name]` or `[[name]]`, possibly followed by a comment. (A line inside a multi-line array
/// may also start with `[`, but then it holds a value, not a name.)
fn is_header(line: &str) -> bool {
    let body = line.split('#').next().unwrap_or("").trim_end();
    body.starts_with('[') && body.ends_with(']') && !body.contains(['=', ',', '"', '{'])
}

fn minutes(text: &str) -> Option<u16> {
    let (h, m) = text.split_once(':').unwrap_or((text, "0"));
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    (h <= 24 && m < 60 && h * 60 + m <= 24 * 60).then(|| h * 60 + m)
}

/// Parses a settings text that must be valid; for tests elsewhere in the crate.
#[cfg(test)]
pub fn parse_policy_text(text: &str) -> Policy {
    match parse(text, Path::new(""), Switches::default()) {
        Ok(settings) => settings.policy.expect("the text has rules"),
        Err(errors) => {
            panic!("{}", errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn errors(text: &str, expected: &[&str]) {
        match parse(text, Path::new(""), Switches::default()) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(errors) => {
                let got: Vec<String> = errors.iter().map(ToString::to_string).collect();
                assert_eq!(got, expected);
            }
        }
    }

    const RULE: &str = "[[rules]]\nid = \"r\"\npriority = 1\neffect = \"allow\"\nidentities = \"*\"\ntools = \"*\"\n";

    #[test]
    fn empty_file_is_transparent() {
        let settings = parse("", Path::new(""), Switches::default()).unwrap();
        assert!(settings.policy.is_none());
        assert!(settings.allow_anonymous);
        let settings =
            parse("[mcpdome]\ndefault_effect = \"deny\"\n", Path::new(""), Switches::default())
                .unwrap();
        assert_eq!(settings.policy.unwrap().default_effect, Effect::Deny);
    }

    #[test]
    fn rules_sorted_by_priority_then_file_order() {
        let text = format!(
            "{}\n{}\n{}",
            RULE.replace("\"r\"", "\"a\"").replace("1\n", "5\n"),
            RULE.replace("\"r\"", "\"b\""),
            RULE.replace("\"r\"", "\"c\"")
        );
        let ids: Vec<String> = parse(&text, Path::new(""), Switches::default())
            .unwrap()
            .policy
            .unwrap()
            .rules
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(ids, ["b", "c", "a"]);
    }

    #[test]
    fn semantic_errors_name_rule_and_line() {
        errors(&format!("{RULE}tool = \"x\"\n"), &[
            "7:1: rules[0] (id = \"r\"): unknown field `tool`; expected one of id, description, priority, effect, identities, tools, resources, prompts, methods, arguments, hours, days",
        ]);
        errors("[[rules]]\nid = \"x\"\npriority = \"high\"\neffect = \"permit\"\nidentities = \"*\"\n", &[
            "3:1: rules[0] (id = \"x\"): `priority` must be an integer",
            "4:1: rules[0] (id = \"x\"): `effect` must be \"allow\" or \"deny\"",
            "1:1: rules[0] (id = \"x\"): a rule must name what it governs: `tools`, `resources`, `prompts` or `methods`",
        ]);
        errors(&format!("{RULE}arguments = [{{ param = \"*\", deny_regex = [\"(\"] }}]\n"), &[
            "7:1: rules[0] (id = \"r\"): `arguments[0].deny_regex` `(` does not compile: found open group without closing ')'",
        ]);
        errors(
            &format!("{RULE}\n{RULE}"),
            &["8:1: rules[1] (id = \"r\"): id \"r\" is used by an earlier rule"],
        );
        errors("[ward]\nx = 1\n", &["2:1: [ward]: unknown field `x`; expected one of enabled, injection, role_hijack, exfiltration, tool_poisoning, secret, secret_in_results, rules"]);
        errors("[polcy]\n", &["1:1: unknown section `polcy`; expected one of mcpdome, sentinel, psk, api_key, rate_limit, budget, rules, ledger, ward, schema_pin"]);
        errors("[[rules]]\nid = \n", &["2:6: TOML syntax: expected a value, found a newline"]);
        errors(
            "[[psk]]\nkey_id = \"ci\"\nsecret_sha256 = \"abc\"\n",
            &["3:1: psk[0] (key_id = \"ci\"): secret_sha256 must be 64 hexadecimal digits"],
        );
        errors("[rate_limit]\nper_tool = { rate = 0 }\n", &["2:1: [rate_limit]: `per_tool` must be { rate = <calls per second, > 0>, burst = <calls, >= 1> }"]);
    }

    #[test]
    fn keys_and_warnings() {
        let hex = "a".repeat(64);
        let text = format!("[[psk]]\nkey_id = \"ci\"\nsecret_sha256 = \"{hex}\"\nlabels = [\"role:ci\"]\n\n[[api_key]]\nkey_id = \"old\"\nsecret = \"hunter2\"\n");
        let settings = parse(&text, Path::new(""), Switches::default()).unwrap();
        let principals: Vec<&str> =
            settings.keys.iter().map(|k| k.identity.principal.as_str()).collect();
        assert_eq!(principals, ["psk:ci", "api_key:old"]);
        assert_eq!(settings.warnings.len(), 1);
        assert!(settings.warnings[0]
            .starts_with("api_key[0] (key_id = \"old\"): the secret is stored in plain text"));
    }
}
