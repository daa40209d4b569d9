//! `mcpdome wrap`: an MCP client's configuration edited so that its stdio servers run through
//! `mcpdome proxy --`, and `--unwrap` to undo it.
//!
//! # Formats
//!
//! Claude Desktop (`claude_desktop_config.json`), Cursor (`mcp.json`) and Claude Code (`.mcp.json`,
//! and `~/.claude.json` with per-project maps under `projects`) list servers under `mcpServers`;
//! VS Code (`.vscode/mcp.json`) under `servers`, where an entry may say `"type": "stdio"`, and its
//! user settings under `mcp.servers`. A server is started with `command` and `args`; one with a
//! `url` (or a `type` of `http`, `sse`, …) is remote and cannot be wrapped: mcpdome relays stdio.
//!
//! # Edits, not re-serialisation
//!
//! serde_json here sorts object keys (its `preserve_order` feature is off) and cannot read the
//! comments and trailing commas VS Code allows. So the file is parsed by a small JSONC reader of
//! our own that records where each value is, and only the values that change are replaced: the
//! `command`, and the head of `args` (`"proxy", "--", <old command>` is inserted before the old
//! arguments, in the array's own layout). Everything else (key order, indentation, comments)
//! stays byte for byte, and `--unwrap` deletes exactly what wrapping inserted, so wrap then
//! unwrap gives back the original file. Two exceptions: a server without `args` gets one, and
//! unwrapping removes an `args` that ends up empty (so `"args": []` does not come back); proxy
//! options added by hand between `proxy` and `--` are dropped by `--unwrap`, which says so.
//!
//! The old command is kept as it was written in the file (its escapes included), so nothing is
//! decoded and re-encoded on the way.

use std::fmt::Write as _;
use std::fs;
use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::cli::WrapArgs;
use crate::error::Error;

/// Suffix of the copy written before a change.
pub const BACKUP_SUFFIX: &str = ".mcpdome-backup";

/// Nesting deeper than this is refused (serde_json's own limit).
const MAX_DEPTH: usize = 128;

/// Runs `mcpdome wrap`: exit 0 when the file is (or, with `--dry-run`, would be) as asked, 2 when
/// it cannot be read, parsed or written.
pub fn run(args: &WrapArgs, out: &mut dyn Write) -> Result<u8, Error> {
    let name = args.file.display().to_string();
    let text = fs::read_to_string(&args.file)
        .map_err(|err| Error::io(format!("failed to read client config `{name}`"), err))?;
    let mcpdome = match &args.mcpdome {
        Some(path) => path.clone(),
        None => std::env::current_exe().and_then(fs::canonicalize).map_err(|err| {
            Error::io("cannot tell where this mcpdome is; pass --mcpdome PATH", err)
        })?,
    };
    let mcpdome = mcpdome
        .to_str()
        .ok_or_else(|| {
            Error::usage(format!("the mcpdome path {mcpdome:?} is not UTF-8; pass --mcpdome PATH"))
        })?
        .to_owned();
    let mode = if args.unwrap { Mode::Unwrap } else { Mode::Wrap { mcpdome: &mcpdome } };
    let plan = plan(&text, file_name(&args.file), mode)
        .map_err(|err| Error::usage(format!("{name}: {err}")))?;
    let new_text = apply(&text, &plan.edits);

    let mut report = format!("{name}: {}, {} server(s)\n", plan.client, plan.servers.len());
    let width = plan.servers.iter().map(|server| server.name.chars().count()).max().unwrap_or(0);
    for server in &plan.servers {
        writeln!(report, "  {:<width$}  {}", server.name, server.outcome)
            .expect("writing to a String");
    }
    if new_text == text {
        report.push_str("nothing to change\n");
        print(out, &report);
        return Ok(0);
    }
    if args.dry_run {
        report.push_str(&format!(
            "\n--- {name}\n+++ {name} ({})\n",
            if args.unwrap { "unwrapped" } else { "wrapped" }
        ));
        let old: Vec<&str> = text.lines().collect();
        let new: Vec<&str> = new_text.lines().collect();
        crate::pin::line_diff(&old, &new, &mut report);
        report.push_str("\n(dry run: nothing was written)\n");
        print(out, &report);
        return Ok(0);
    }
    // Write through a symbolic link (dotfiles managers link configs), not over it.
    let target = fs::canonicalize(&args.file)
        .map_err(|err| Error::io(format!("failed to resolve `{name}`"), err))?;
    let backup = backup(&target, &text)?;
    write_atomically(&target, &new_text)?;
    report.push_str(&format!("backup: {}\n", backup.display()));
    report.push_str(&format!("wrote {name}; restart {} to apply it\n", plan.client_app));
    if !args.unwrap
        && args.mcpdome.is_none()
        && (mcpdome.contains("/target/debug/") || mcpdome.contains("/target/release/"))
    {
        report.push_str(&format!(
            "note: {mcpdome} is a build output, which `cargo clean` removes; copy it somewhere stable and run `mcpdome wrap --unwrap` then `wrap --mcpdome <PATH>`\n"
        ));
    }
    print(out, &report);
    Ok(0)
}

/// What to do to each stdio server.
#[derive(Clone, Copy)]
pub enum Mode<'a> {
    /// Put `<mcpdome> proxy --` in front of it.
    Wrap { mcpdome: &'a str },
    /// Take a wrapping off.
    Unwrap,
}

/// The edits for one file, and what they do to each server.
pub struct Plan {
    /// The format, in words: `Claude Desktop (mcpServers)`.
    pub client: String,
    /// The application to restart.
    pub client_app: &'static str,
    pub servers: Vec<ServerReport>,
    pub edits: Vec<Edit>,
}

pub struct ServerReport {
    pub name: String,
    /// `wrapped: …`, `already wrapped`, `not covered: …`.
    pub outcome: String,
}

/// Replace `range` of the text by `text`.
#[derive(Debug, PartialEq, Eq)]
pub struct Edit {
    pub range: Range<usize>,
    pub text: String,
}

/// Works out the edits for `text`, a client config named `file_name`.
pub fn plan(text: &str, file_name: &str, mode: Mode<'_>) -> Result<Plan, String> {
    let root = Reader::new(text).document()?;
    let Node::Object { members, .. } = &root else {
        return Err("not a JSON object: is this an MCP client config?".to_owned());
    };
    let (client, client_app) = match file_name {
        "claude_desktop_config.json" => ("Claude Desktop", "Claude Desktop"),
        ".mcp.json" | ".claude.json" => ("Claude Code", "Claude Code"),
        _ if get(members, "mcpServers").is_some() => {
            ("Cursor or another mcpServers client", "the client")
        }
        _ => ("VS Code", "the MCP servers in VS Code"),
    };
    // The server maps in the file, with how they are named in the report.
    let mut maps: Vec<(String, &[Member])> = Vec::new();
    let mut key = "";
    if let Some(Node::Object { members: servers, .. }) = get(members, "mcpServers") {
        maps.push((String::new(), servers));
        key = "mcpServers";
    }
    if let Some(Node::Object { members: projects, .. }) = get(members, "projects") {
        for project in projects {
            if let Node::Object { members: inner, .. } = &project.value {
                if let Some(Node::Object { members: servers, .. }) = get(inner, "mcpServers") {
                    maps.push((format!("{}: ", project.key), servers));
                    key = "mcpServers";
                }
            }
        }
    }
    if maps.is_empty() {
        if let Some(Node::Object { members: servers, .. }) = get(members, "servers") {
            maps.push((String::new(), servers));
            key = "servers";
        } else if let Some(Node::Object { members: mcp, .. }) = get(members, "mcp") {
            if let Some(Node::Object { members: servers, .. }) = get(mcp, "servers") {
                maps.push((String::new(), servers));
                key = "mcp.servers";
            }
        }
    }
    if maps.is_empty() {
        return Err("no `mcpServers` or `servers` map: is this an MCP client config?".to_owned());
    }
    let mut plan = Plan {
        client: format!("{client} ({key})"),
        client_app,
        servers: Vec::new(),
        edits: Vec::new(),
    };
    for (prefix, servers) in maps {
        for server in servers {
            let outcome = match &server.value {
                Node::Object { members: entry, .. } => {
                    edit_server(text, entry, mode, &mut plan.edits)
                }
                _ => "skipped: not an object".to_owned(),
            };
            plan.servers.push(ServerReport { name: format!("{prefix}{}", server.key), outcome });
        }
    }
    Ok(plan)
}

/// Applies edits (which never overlap) to `text`.
pub fn apply(text: &str, edits: &[Edit]) -> String {
    let mut edits: Vec<&Edit> = edits.iter().collect();
    edits.sort_by_key(|edit| edit.range.start);
    let mut out = String::with_capacity(text.len() + 256);
    let mut at = 0;
    for edit in edits {
        out.push_str(&text[at..edit.range.start]);
        out.push_str(&edit.text);
        at = edit.range.end;
    }
    out.push_str(&text[at..]);
    out
}

/// Adds the edits for one server entry and says what they do.
fn edit_server(text: &str, entry: &[Member], mode: Mode<'_>, edits: &mut Vec<Edit>) -> String {
    let kind = match get(entry, "type") {
        Some(Node::String { value, .. }) => Some(value.as_str()),
        _ => None,
    };
    if let Some(url) = get(entry, "url").or_else(|| get(entry, "serverUrl")) {
        let url = match url {
            Node::String { value, .. } => value.clone(),
            _ => "?".to_owned(),
        };
        return format!("not covered: remote server ({url}); mcpdome relays stdio servers only");
    }
    if let Some(kind) = kind.filter(|kind| *kind != "stdio") {
        return format!("not covered: type `{kind}`; mcpdome relays stdio servers only");
    }
    let Some(command) = get_member(entry, "command") else {
        return "skipped: no `command`".to_owned();
    };
    let Node::String { value: program, span: command_span } = &command.value else {
        return "skipped: `command` is not a string".to_owned();
    };
    let args_member = get_member(entry, "args");
    let items: &[Node] = match args_member.map(|member| &member.value) {
        None => &[],
        Some(Node::Array { items, .. }) => items,
        Some(_) => return "skipped: `args` is not an array".to_owned(),
    };
    let strings: Option<Vec<&str>> = items
        .iter()
        .map(|item| match item {
            Node::String { value, .. } => Some(value.as_str()),
            _ => None,
        })
        .collect();
    let Some(strings) = strings else {
        return "skipped: `args` holds something other than strings".to_owned();
    };
    let wrapped = is_mcpdome(program) && strings.first() == Some(&"proxy");
    match mode {
        Mode::Wrap { .. } if wrapped => "already wrapped".to_owned(),
        Mode::Unwrap if !wrapped => "not wrapped".to_owned(),
        Mode::Wrap { mcpdome } => {
            let old_command = &text[command_span.clone()];
            edits.push(Edit { range: command_span.clone(), text: json_string(mcpdome) });
            let head = ["\"proxy\"", "\"--\"", old_command];
            match (args_member, items.first()) {
                (Some(_), Some(first)) => {
                    let separator = separator_before(text, first.span().start);
                    let mut insert = String::new();
                    for item in head {
                        insert.push_str(item);
                        insert.push(',');
                        insert.push_str(&separator);
                    }
                    edits
                        .push(Edit { range: first.span().start..first.span().start, text: insert });
                }
                (Some(member), None) => {
                    edits.push(Edit {
                        range: member.value.span(),
                        text: format!("[{}]", head.join(", ")),
                    });
                }
                (None, _) => {
                    let separator = separator_before(text, command.key_span.start);
                    let insert = format!(",{separator}\"args\": [{}]", head.join(", "));
                    edits.push(Edit { range: command_span.end..command_span.end, text: insert });
                }
            }
            let shown: Vec<&str> =
                std::iter::once(program.as_str()).chain(strings.iter().copied()).collect();
            format!("wrapped: {mcpdome} proxy -- {}", shown.join(" "))
        }
        Mode::Unwrap => {
            let Some(dashes) = strings.iter().position(|arg| *arg == "--") else {
                return "cannot unwrap: no `--` before the server command in `args`".to_owned();
            };
            let Some(real) = items.get(dashes + 1) else {
                return "cannot unwrap: no server command after `--` in `args`".to_owned();
            };
            edits.push(Edit { range: command_span.clone(), text: text[real.span()].to_owned() });
            let args_member = args_member.expect("a wrapped entry has args");
            match items.get(dashes + 2) {
                Some(rest) => edits.push(Edit {
                    range: items[0].span().start..rest.span().start,
                    text: String::new(),
                }),
                None => edits.push(Edit {
                    range: member_removal(text, entry, args_member),
                    text: String::new(),
                }),
            }
            let dropped = &strings[1..dashes];
            let shown = strings[dashes + 1..].join(" ");
            if dropped.is_empty() {
                format!("unwrapped: {shown}")
            } else {
                format!("unwrapped: {shown} (dropped the proxy options {})", dropped.join(" "))
            }
        }
    }
}

/// Whether a command is an mcpdome: its file name is `mcpdome`, or starts with it
/// (`mcpdome-x86_64`, `mcpdome.exe`).
fn is_mcpdome(program: &str) -> bool {
    let file = program.rsplit(['/', '\\']).next().unwrap_or(program);
    file.starts_with("mcpdome")
}

/// What separates items at `at` from what comes before: a line break and the indentation of
/// `at`'s line when `at` starts its line, else one space.
fn separator_before(text: &str, at: usize) -> String {
    let line_start = text[..at].rfind('\n').map_or(0, |n| n + 1);
    let indent = &text[line_start..at];
    if line_start > 0 && indent.chars().all(|c| c == ' ' || c == '\t') {
        format!("\n{indent}")
    } else {
        " ".to_owned()
    }
}

/// The range to delete to remove `member` from `members`, with its comma: from the end of the
/// value before it, or (when it is first) up to the key after it.
fn member_removal(text: &str, members: &[Member], member: &Member) -> Range<usize> {
    let idx = members.iter().position(|m| std::ptr::eq(m, member)).expect("member of members");
    let end = member.value.span().end;
    if idx > 0 {
        return members[idx - 1].value.span().end..end;
    }
    match members.get(1) {
        Some(next) => member.key_span.start..next.key_span.start,
        // The only member: leave `{}` behind, keeping the whitespace before the closing brace.
        None => {
            let after = text[end..].find(|c: char| !c.is_whitespace()).map_or(end, |n| end + n);
            member.key_span.start..after.max(end)
        }
    }
}

fn json_string(text: &str) -> String {
    serde_json::to_string(text).expect("a str always serialises")
}

fn file_name(path: &Path) -> &str {
    path.file_name().and_then(|name| name.to_str()).unwrap_or("")
}

fn get<'n>(members: &'n [Member], key: &str) -> Option<&'n Node> {
    get_member(members, key).map(|member| &member.value)
}

fn get_member<'n>(members: &'n [Member], key: &str) -> Option<&'n Member> {
    members.iter().find(|member| member.key == key)
}

/// Copies the original next to it before it is changed. An existing backup with other content
/// is kept, and the copy goes to the first free `.mcpdome-backup.N`.
fn backup(target: &Path, text: &str) -> Result<PathBuf, Error> {
    let base = target.as_os_str().to_owned();
    for n in 0..100 {
        let mut name = base.clone();
        name.push(BACKUP_SUFFIX);
        if n > 0 {
            name.push(format!(".{n}"));
        }
        let path = PathBuf::from(name);
        match fs::read(&path) {
            Ok(existing) if existing == text.as_bytes() => return Ok(path),
            Ok(_) => continue,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                // The config may hold tokens in `env`: the copy gets the original's permissions.
                let copy = || -> std::io::Result<()> {
                    fs::write(&path, text)?;
                    fs::set_permissions(&path, fs::metadata(target)?.permissions())
                };
                copy().map_err(|err| {
                    Error::io(format!("failed to write the backup `{}`", path.display()), err)
                })?;
                return Ok(path);
            }
            Err(err) => return Err(Error::io(format!("failed to read `{}`", path.display()), err)),
        }
    }
    Err(Error::usage(format!("too many backups of `{}`; remove some", target.display())))
}

/// Writes a temporary file next to `target` with its permissions, then renames it over
/// `target`, so a client never reads half a config.
fn write_atomically(target: &Path, text: &str) -> Result<(), Error> {
    let name = target.display();
    let dir = target.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".{}.mcpdome-{}.tmp", file_name(target), std::process::id()));
    let write = || -> std::io::Result<()> {
        fs::write(&tmp, text)?;
        fs::set_permissions(&tmp, fs::metadata(target)?.permissions())?;
        fs::rename(&tmp, target)
    };
    write().map_err(|err| {
        let _ = fs::remove_file(&tmp);
        Error::io(format!("failed to write `{name}`"), err)
    })
}

fn print(out: &mut dyn Write, text: &str) {
    let _ = out.write_all(text.as_bytes());
}

/// A JSON value and where it is in the text.
#[derive(Debug)]
pub enum Node {
    Object {
        span: Range<usize>,
        members: Vec<Member>,
    },
    Array {
        span: Range<usize>,
        items: Vec<Node>,
    },
    String {
        span: Range<usize>,
        value: String,
    },
    /// A number, `true`, `false` or `null`.
    Other {
        span: Range<usize>,
    },
}

#[derive(Debug)]
pub struct Member {
    pub key: String,
    pub key_span: Range<usize>,
    pub value: Node,
}

impl Node {
    pub fn span(&self) -> Range<usize> {
        match self {
            Node::Object { span, .. }
            | Node::Array { span, .. }
            | Node::String { span, .. }
            | Node::Other { span } => span.clone(),
        }
    }
}

/// A JSONC reader: JSON plus `//` and `/* */` comments and trailing commas (what VS Code
/// accepts). A key given twice in one object is an error: clients disagree on which copy wins.
struct Reader<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(text: &'a str) -> Reader<'a> {
        // A byte order mark is allowed before the value.
        let pos = if text.starts_with('\u{feff}') { 3 } else { 0 };
        Reader { text, pos }
    }

    fn document(mut self) -> Result<Node, String> {
        let node = self.value(0)?;
        self.skip()?;
        if self.pos != self.text.len() {
            return Err(self.error("unexpected text after the JSON value"));
        }
        Ok(node)
    }

    fn error(&self, what: &str) -> String {
        let before = &self.text[..self.pos.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |last| last.chars().count()) + 1;
        format!("{line}:{column}: {what}")
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    /// Skips whitespace and comments.
    fn skip(&mut self) -> Result<(), String> {
        loop {
            match self.peek() {
                Some(b' ' | b'\t' | b'\n' | b'\r') => self.pos += 1,
                Some(b'/') if self.text[self.pos..].starts_with("//") => {
                    self.pos =
                        self.text[self.pos..].find('\n').map_or(self.text.len(), |n| self.pos + n);
                }
                Some(b'/') if self.text[self.pos..].starts_with("/*") => {
                    match self.text[self.pos + 2..].find("*/") {
                        Some(n) => self.pos += n + 4,
                        None => return Err(self.error("unterminated comment")),
                    }
                }
                _ => return Ok(()),
            }
        }
    }

    fn value(&mut self, depth: usize) -> Result<Node, String> {
        if depth > MAX_DEPTH {
            return Err(self.error("nested too deeply"));
        }
        self.skip()?;
        let start = self.pos;
        match self.peek() {
            Some(b'{') => {
                self.pos += 1;
                let mut members: Vec<Member> = Vec::new();
                loop {
                    self.skip()?;
                    match self.peek() {
                        Some(b'}') => {
                            self.pos += 1;
                            return Ok(Node::Object { span: start..self.pos, members });
                        }
                        Some(b'"') => {}
                        _ => return Err(self.error("expected a key or `}`")),
                    }
                    let key_at = self.pos;
                    let Node::String { span: key_span, value: key } = self.string()? else {
                        unreachable!("string returns strings")
                    };
                    if members.iter().any(|member| member.key == key) {
                        self.pos = key_at;
                        return Err(self.error(&format!("key `{key}` given twice")));
                    }
                    self.skip()?;
                    if self.peek() != Some(b':') {
                        return Err(self.error("expected `:`"));
                    }
                    self.pos += 1;
                    let value = self.value(depth + 1)?;
                    members.push(Member { key, key_span, value });
                    self.skip()?;
                    match self.peek() {
                        Some(b',') => self.pos += 1,
                        Some(b'}') => {}
                        _ => return Err(self.error("expected `,` or `}`")),
                    }
                }
            }
            Some(b'[') => {
                self.pos += 1;
                let mut items = Vec::new();
                loop {
                    self.skip()?;
                    if self.peek() == Some(b']') {
                        self.pos += 1;
                        return Ok(Node::Array { span: start..self.pos, items });
                    }
                    items.push(self.value(depth + 1)?);
                    self.skip()?;
                    match self.peek() {
                        Some(b',') => self.pos += 1,
                        Some(b']') => {}
                        _ => return Err(self.error("expected `,` or `]`")),
                    }
                }
            }
            Some(b'"') => self.string(),
            Some(_) => {
                let len = self.text[start..]
                    .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
                    .unwrap_or(self.text.len() - start);
                let token = &self.text[start..start + len];
                if len == 0 || serde_json::from_str::<serde::de::IgnoredAny>(token).is_err() {
                    return Err(self.error("expected a JSON value"));
                }
                self.pos += len;
                Ok(Node::Other { span: start..self.pos })
            }
            None => Err(self.error("unexpected end of file")),
        }
    }

    fn string(&mut self) -> Result<Node, String> {
        let start = self.pos;
        let bytes = self.text.as_bytes();
        let mut at = start + 1;
        loop {
            match bytes.get(at) {
                None => return Err(self.error("unterminated string")),
                Some(b'"') => break,
                Some(b'\\') => at += 2,
                Some(_) => at += 1,
            }
        }
        let span = start..at + 1;
        let value: String = serde_json::from_str(&self.text[span.clone()])
            .map_err(|err| self.error(&format!("bad string: {err}")))?;
        self.pos = at + 1;
        Ok(Node::String { span, value })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MCPDOME: &str = "/opt/mcpdome";

    #[track_caller]
    fn wrap(text: &str) -> String {
        let plan =
            plan(text, "claude_desktop_config.json", Mode::Wrap { mcpdome: MCPDOME }).unwrap();
        apply(text, &plan.edits)
    }

    #[track_caller]
    fn unwrap(text: &str) -> String {
        let plan = plan(text, "claude_desktop_config.json", Mode::Unwrap).unwrap();
        apply(text, &plan.edits)
    }

    #[track_caller]
    fn round_trip(original: &str, wrapped: &str) {
        assert_eq!(wrap(original), wrapped);
        assert_eq!(wrap(wrapped), wrapped, "wrapping twice changes nothing");
        assert_eq!(unwrap(wrapped), original);
        assert_eq!(unwrap(original), original, "unwrapping an unwrapped file changes nothing");
    }

    #[test]
    fn multi_line_args_keep_their_layout() {
        round_trip(
            "{\n  \"mcpServers\": {\n    \"fs\": {\n      \"command\": \"npx\",\n      \"args\": [\n        \"-y\",\n        \"pkg\"\n      ]\n    }\n  }\n}\n",
            "{\n  \"mcpServers\": {\n    \"fs\": {\n      \"command\": \"/opt/mcpdome\",\n      \"args\": [\n        \"proxy\",\n        \"--\",\n        \"npx\",\n        \"-y\",\n        \"pkg\"\n      ]\n    }\n  }\n}\n",
        );
    }

    #[test]
    fn one_line_args_empty_args_and_no_args() {
        round_trip(
            r#"{"mcpServers":{"a":{"args":["x"], "command":"srv\u0020"}}}"#,
            r#"{"mcpServers":{"a":{"args":["proxy", "--", "srv\u0020", "x"], "command":"/opt/mcpdome"}}}"#,
        );
        round_trip(
            "{\"mcpServers\": {\"t\": {\"command\": \"time\", \"env\": {\"A\": \"1\"}}}}",
            "{\"mcpServers\": {\"t\": {\"command\": \"/opt/mcpdome\", \"args\": [\"proxy\", \"--\", \"time\"], \"env\": {\"A\": \"1\"}}}}",
        );
        // An empty `args` cannot be told from a missing one once wrapped; unwrapping removes it.
        let wrapped = wrap(r#"{"mcpServers":{"t":{"command":"time","args":[]}}}"#);
        assert_eq!(
            wrapped,
            r#"{"mcpServers":{"t":{"command":"/opt/mcpdome","args":["proxy", "--", "time"]}}}"#
        );
        assert_eq!(unwrap(&wrapped), r#"{"mcpServers":{"t":{"command":"time"}}}"#);
        assert_eq!(
            unwrap(r#"{"mcpServers":{"t":{"args":["proxy","--","time"],"command":"mcpdome"}}}"#),
            r#"{"mcpServers":{"t":{"command":"time"}}}"#
        );
    }

    #[test]
    fn vs_code_with_comments_remote_servers_and_types() {
        let text = "{\n  // my servers\n  \"servers\": {\n    \"git\": { \"type\": \"stdio\", \"command\": \"uvx\", \"args\": [\"mcp-server-git\",], },\n    \"web\": { \"type\": \"http\", \"url\": \"https://example.com/mcp\" },\n  },\n}\n";
        let plan = plan(text, "mcp.json", Mode::Wrap { mcpdome: MCPDOME }).unwrap();
        assert_eq!(plan.client, "VS Code (servers)");
        let outcomes: Vec<&str> =
            plan.servers.iter().map(|server| server.outcome.as_str()).collect();
        assert_eq!(
            outcomes,
            [
                "wrapped: /opt/mcpdome proxy -- uvx mcp-server-git",
                "not covered: remote server (https://example.com/mcp); mcpdome relays stdio servers only"
            ]
        );
        let wrapped = apply(text, &plan.edits);
        assert!(
            wrapped.contains("\"args\": [\"proxy\", \"--\", \"uvx\", \"mcp-server-git\",]"),
            "{wrapped}"
        );
        assert!(wrapped.starts_with("{\n  // my servers\n"));
        assert_eq!(unwrap(&wrapped), text);
    }

    #[test]
    fn unwrap_drops_added_proxy_options_and_says_so() {
        let text = r#"{"mcpServers":{"a":{"command":"/usr/bin/mcpdome","args":["proxy","--config","p.toml","--","srv","-v"]}}}"#;
        let plan = plan(text, "x.json", Mode::Unwrap).unwrap();
        assert_eq!(
            plan.servers[0].outcome,
            "unwrapped: srv -v (dropped the proxy options --config p.toml)"
        );
        assert_eq!(
            apply(text, &plan.edits),
            r#"{"mcpServers":{"a":{"command":"srv","args":["-v"]}}}"#
        );
    }

    #[test]
    fn errors_say_where() {
        let err = |text: &str| plan(text, "x.json", Mode::Unwrap).err().unwrap();
        assert_eq!(
            err("{\"mcpServers\": {\n  \"a\": {},\n  \"a\": {}}}"),
            "3:3: key `a` given twice"
        );
        assert_eq!(err("{\"mcpServers\": {]}"), "1:17: expected a key or `}`");
        assert_eq!(err("[]"), "not a JSON object: is this an MCP client config?");
        assert_eq!(
            err("{\"x\": 1}"),
            "no `mcpServers` or `servers` map: is this an MCP client config?"
        );
        assert_eq!(err("{\"a\": tru}"), "1:7: expected a JSON value");
    }
}
