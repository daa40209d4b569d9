//! `allow_glob` and name patterns: a small matcher with no dependencies.
//!
//! `*` matches any run of characters except `/`, `**` any run including `/`, `?` one character
//! other than `/`. Everything else is literal; there are no classes or braces, so a pattern means
//! what it looks like. Paths are normalised lexically before they are matched ([`normalize_path`]):
//! `/tmp/../etc/passwd` is `/etc/passwd`, so `..` cannot walk out of an allowed directory. Symbolic
//! links are not resolved: the gateway does not see the server's filesystem.

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Glob {
    pattern: String,
}

impl Glob {
    pub fn new(pattern: &str) -> Glob {
        Glob { pattern: pattern.to_owned() }
    }

    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// Matches a name (a tool, prompt or resource name): `*` may cross `/` here, since names are
    /// not paths.
    pub fn matches_name(&self, name: &str) -> bool {
        if self.pattern == "*" {
            return true;
        }
        matches(self.pattern.as_bytes(), name.as_bytes(), true)
    }

    /// Matches a URI already normalised by [`normalize_uri`]: `*` stays within a path segment,
    /// `**` crosses segments; the pattern `*` alone matches everything.
    pub fn matches_uri(&self, normalized: &str) -> bool {
        self.pattern == "*" || matches_dirs(&canonical_prefix(&self.pattern), normalized.as_bytes())
    }

    /// Matches a path after normalising it; a path that climbs above `/` never matches.
    pub fn matches_path(&self, path: &str) -> bool {
        let Some(path) = normalize_path(path) else { return false };
        matches_dirs(&self.pattern, path.as_bytes())
    }
}

/// A resource URI made comparable: its path percent-decoded and normalised like a file path, so
/// `file:///tmp/%2e%2e/etc/passwd` is `file:///etc/passwd`; its scheme in lower case, and a
/// `file:` URI in the form `file:///path` (`file:/path` and `file://localhost/path` name the same
/// file). The authority, and any query or fragment, are kept as written. `None` when the path
/// climbs above its root, its percent-encoding is not UTF-8, or the URI holds what URI parsers
/// disagree on: a backslash (a path separator to WHATWG parsers such as Node's, a file name
/// character to others), a control character (tabs and line breaks are silently removed by
/// WHATWG and Python parsers, so `pri\nvate` is `private` to the server), or a leading or
/// trailing space (also removed). Such a URI cannot be allowed by anything narrower than `*`.
pub fn normalize_uri(uri: &str) -> Option<String> {
    let ambiguous = |c: char| c == '\\' || c.is_ascii_control();
    if uri.contains(ambiguous) || uri.starts_with(' ') || uri.ends_with(' ') {
        return None;
    }
    let uri = canonical_prefix(uri);
    let (prefix, rest) = match uri.find("://") {
        Some(at) => {
            let after = at + 3;
            let path_at = uri[after..].find('/').map_or(uri.len(), |idx| after + idx);
            uri.split_at(path_at)
        }
        None => ("", uri.as_str()),
    };
    let (path, suffix) = rest.split_at(rest.find(['?', '#']).unwrap_or(rest.len()));
    let decoded = percent_decode(path)?;
    let path = if decoded.contains('/') { normalize_path(&decoded)? } else { decoded };
    Some(format!("{prefix}{path}{suffix}"))
}

/// The scheme in lower case (`FILE:` is `file:`), and `file:/path` or `file://localhost/path`
/// as `file:///path`. Applied to URIs and to the patterns they are matched against alike. A
/// scheme with a wildcard in it is left as written.
fn canonical_prefix(uri: &str) -> String {
    let Some(colon) = uri.find(':') else { return uri.to_owned() };
    let scheme = &uri[..colon];
    let is_scheme = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !is_scheme {
        return uri.to_owned();
    }
    let scheme = scheme.to_ascii_lowercase();
    let rest = &uri[colon + 1..];
    if scheme != "file" {
        return format!("{scheme}:{rest}");
    }
    let path = match rest.strip_prefix("//") {
        Some(after) => {
            let host_end = after.find('/').unwrap_or(after.len());
            if after[..host_end].eq_ignore_ascii_case("localhost") {
                &after[host_end..]
            } else {
                return format!("file:{rest}");
            }
        }
        None if rest.starts_with('/') => rest,
        None => return format!("file:{rest}"),
    };
    format!("file://{path}")
}

fn percent_decode(text: &str) -> Option<String> {
    if !text.contains('%') {
        return Some(text.to_owned());
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut idx = 0;
    while idx < bytes.len() {
        if bytes[idx] == b'%' {
            let hex = text.get(idx + 1..idx + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            idx += 3;
        } else {
            out.push(bytes[idx]);
            idx += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Resolves `.`, `..` and repeated `/` without touching the filesystem. `None` when `..` climbs
/// above the root of an absolute path, or above the start of a relative one: such a path cannot
/// be inside anything we could allow. A NUL byte also gives `None` (no file name contains one).
pub fn normalize_path(path: &str) -> Option<String> {
    if path.contains('\0') {
        return None;
    }
    let absolute = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            part => parts.push(part),
        }
    }
    let mut out = String::with_capacity(path.len());
    if absolute {
        out.push('/');
    }
    out.push_str(&parts.join("/"));
    // `/a/b/.` and `/a/b/c/..` name the directory `/a/b/`, as `/a/b/` does (and as URL parsers
    // resolve them), so they match what `/a/b/` matches.
    let dir = path.ends_with('/') || path.ends_with("/.") || path.ends_with("/..");
    if dir && !parts.is_empty() {
        out.push('/');
    }
    Some(out)
}

/// `a/**/b` also matches `a/b`: try the pattern with each `/**/` read as `/` too. Patterns have at
/// most a few of these, and the expansion is capped.
fn matches_dirs(pattern: &str, text: &[u8]) -> bool {
    if matches(pattern.as_bytes(), text, false) {
        return true;
    }
    let mut start = 0;
    let mut tries = 0;
    while let Some(at) = pattern[start..].find("/**/") {
        let at = start + at;
        tries += 1;
        if tries > 4 {
            return false;
        }
        let shorter = format!("{}{}", &pattern[..at], &pattern[at + 3..]);
        if matches_dirs(&shorter, text) {
            return true;
        }
        start = at + 1;
    }
    false
}

/// Iterative wildcard matching with backtracking to the last star: linear in practice and never
/// exponential, whatever the pattern.
fn matches(pattern: &[u8], text: &[u8], star_crosses_slash: bool) -> bool {
    // (pattern index after the star, text index the star currently extends to, crosses '/')
    let mut star: Option<(usize, usize, bool)> = None;
    let (mut p, mut t) = (0, 0);
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            let double = pattern.get(p + 1) == Some(&b'*');
            p += if double { 2 } else { 1 };
            star = Some((p, t, double || star_crosses_slash));
            continue;
        }
        if p < pattern.len() && (pattern[p] == text[t] || pattern[p] == b'?' && text[t] != b'/') {
            p += 1;
            t += 1;
            continue;
        }
        match star {
            Some((star_p, star_t, crosses)) if crosses || text[star_t] != b'/' => {
                star = Some((star_p, star_t + 1, crosses));
                p = star_p;
                t = star_t + 1;
            }
            _ => return false,
        }
    }
    while p < pattern.len() && pattern[p] == b'*' {
        p += 1;
    }
    p == pattern.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn path(pattern: &str, text: &str, expected: bool) {
        assert_eq!(Glob::new(pattern).matches_path(text), expected, "{pattern} vs {text}");
    }

    #[test]
    fn normalize() {
        assert_eq!(normalize_path("/tmp/../etc/passwd").as_deref(), Some("/etc/passwd"));
        assert_eq!(normalize_path("/tmp/./../../etc/x"), None);
        assert_eq!(normalize_path("//etc/passwd").as_deref(), Some("/etc/passwd"));
        assert_eq!(normalize_path("/tmp//a/./b/").as_deref(), Some("/tmp/a/b/"));
        assert_eq!(normalize_path("a/../../b"), None);
        assert_eq!(normalize_path("/").as_deref(), Some("/"));
        assert_eq!(normalize_path("/tmp/a\0b"), None);
        assert_eq!(normalize_path("/srv/private/.").as_deref(), Some("/srv/private/"));
        assert_eq!(normalize_path("/srv/private/key/..").as_deref(), Some("/srv/private/"));
        assert_eq!(normalize_path("/srv/..").as_deref(), Some("/"));
    }

    #[test]
    fn paths() {
        path("/tmp/**", "/tmp/a.txt", true);
        path("/tmp/**", "/tmp/a/b/c", true);
        path("/tmp/**", "/tmp", false);
        path("/tmp/**", "/tmp/", true);
        path("/tmp/**", "/tmp/../etc/passwd", false);
        path("/tmp/**", "/tmp/./../../etc/x", false);
        path("/tmp/**", "//etc/passwd", false);
        path("/tmp/**", "/tmpfoo/x", false);
        path("/tmp/**", "tmp/x", false);
        path("/tmp/*", "/tmp/a", true);
        path("/tmp/*", "/tmp/a/b", false);
        path("/tmp/*.txt", "/tmp/a.txt", true);
        path("/tmp/*.txt", "/tmp/a.txt.sh", false);
        path("/tmp/?.txt", "/tmp/a.txt", true);
        path("/tmp/?.txt", "/tmp/ab.txt", false);
        path("/srv/**/logs/*", "/srv/logs/x", true);
        path("/srv/**/logs/*", "/srv/a/b/logs/x", true);
        path("/srv/**/logs/*", "/srv/a/b/logs/x/y", false);
        path("/a/*b*c", "/a/xbybzc", true);
    }

    #[test]
    fn uris() {
        let norm = |uri: &str| normalize_uri(uri);
        assert_eq!(norm("file:///tmp/../etc/passwd").as_deref(), Some("file:///etc/passwd"));
        assert_eq!(norm("file:///tmp/%2e%2e/etc/passwd").as_deref(), Some("file:///etc/passwd"));
        assert_eq!(norm("file:///tmp/sub/../../etc/passwd").as_deref(), Some("file:///etc/passwd"));
        assert_eq!(norm("file:///../etc"), None);
        assert_eq!(norm("file:///tmp/%zz"), None);
        assert_eq!(
            norm("https://host/a/./b?x=../y#z").as_deref(),
            Some("https://host/a/b?x=../y#z")
        );
        assert_eq!(norm("demo://resource/static/1").as_deref(), Some("demo://resource/static/1"));
        assert_eq!(norm("urn:x").as_deref(), Some("urn:x"));
        // What URI parsers disagree on is refused; other spellings of one file are one URI.
        assert_eq!(norm("file:///srv/private\\key"), None);
        assert_eq!(norm("file:///srv/pri\nvate/key"), None);
        assert_eq!(norm("file:///srv/a\t/../private/key"), None);
        assert_eq!(norm("file:///srv/private\x7f"), None);
        assert_eq!(norm(" file:///srv/private/key"), None);
        assert_eq!(norm("file:///srv/private "), None);
        assert_eq!(norm("FILE:///srv/a").as_deref(), Some("file:///srv/a"));
        assert_eq!(norm("file:/srv/a").as_deref(), Some("file:///srv/a"));
        assert_eq!(norm("file://LocalHost/srv/a").as_deref(), Some("file:///srv/a"));
        assert_eq!(norm("file://server/share/a").as_deref(), Some("file://server/share/a"));
        assert_eq!(norm("file:///srv/private/.").as_deref(), Some("file:///srv/private/"));
        assert_eq!(norm("HTTPS://Host/a").as_deref(), Some("https://Host/a"));
        assert!(Glob::new("FILE://localhost/srv/private/**").matches_uri("file:///srv/private/k"));
        let glob = Glob::new("file:///tmp/*");
        assert!(glob.matches_uri("file:///tmp/a"));
        assert!(!glob.matches_uri("file:///tmp/a/b"));
        assert!(!glob.matches_uri(&norm("file:///tmp/../etc/passwd").unwrap()));
        assert!(Glob::new("file:///tmp/**").matches_uri("file:///tmp/a/b"));
    }

    #[test]
    fn names() {
        let glob = Glob::new("git_*");
        assert!(glob.matches_name("git_status"));
        assert!(!glob.matches_name("github_status"));
        assert!(Glob::new("*").matches_name("anything/at all"));
        assert!(Glob::new("read_file").matches_name("read_file"));
        assert!(!Glob::new("read_file").matches_name("read_file "));
        assert!(Glob::new("file:///srv/*").matches_name("file:///srv/a/b"));
        // Pathological patterns stay fast.
        let text = "a".repeat(5000);
        assert!(!Glob::new(&"*a".repeat(50)).matches_name(&(text + "b")));
    }
}
