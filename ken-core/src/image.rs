//! Provider-neutral image preparation: the Dockerfile Ken builds and the build
//! context it sends.
//!
//! Ken changes a team's Dockerfile in one way only: when the host has a CA bundle,
//! every build stage gets a copy of it and the environment variables that make
//! OpenSSL, Node, Python `requests`, curl and git trust it. This makes HTTPS work
//! inside builds and sandboxes behind a TLS-inspecting proxy whose CA only the host
//! trusts.
//!
//! [`pack_context`] turns an [`ImageSpec`] into a deterministic tar archive and a
//! content hash, so that providers can tag images by content and skip unchanged
//! builds.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::labels::Labels;
use crate::sandbox::ImageSpec;

/// Name of the host CA bundle inside the build context.
pub const HOST_CA_CONTEXT_NAME: &str = "ken-host-ca.crt";

/// Path of the host CA bundle inside the image.
pub const HOST_CA_IMAGE_PATH: &str = "/usr/local/share/ken/host-ca.crt";

/// Environment variables that point TLS clients at [`HOST_CA_IMAGE_PATH`]: OpenSSL,
/// Node, Python `requests`, curl and git, in that order.
pub const HOST_CA_ENV_VARS: [&str; 5] = [
    "SSL_CERT_FILE",
    "NODE_EXTRA_CA_CERTS",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "GIT_SSL_CAINFO",
];

/// Path of the generated Dockerfile inside the build context.
///
/// A context file with the same path is replaced by the generated one.
pub const DOCKERFILE_NAME: &str = ".ken.Dockerfile";

/// Well-known locations of the system CA bundle: Debian, Ubuntu and Alpine; Fedora
/// and RHEL; openSUSE; RHEL 7 and later; macOS, Arch and Alpine.
const CA_BUNDLE_CANDIDATES: [&str; 6] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/cert.pem",
    "/usr/local/etc/openssl/cert.pem",
];

/// Finds the host's CA bundle.
///
/// Checks `SSL_CERT_FILE` first, then the usual locations of the system bundle on
/// Linux distributions and macOS. Returns the first one that is a non-empty file.
pub fn host_ca_bundle() -> Option<PathBuf> {
    let from_env = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
    from_env
        .into_iter()
        .chain(CA_BUNDLE_CANDIDATES.iter().map(PathBuf::from))
        .find(|path| fs::metadata(path).is_ok_and(|meta| meta.is_file() && meta.len() > 0))
}

/// Builds the [`ImageSpec`] for `dockerfile` and `context`.
///
/// With a CA bundle, the Dockerfile gets the lines of [`inject_host_ca`] and the
/// bundle goes into the context as [`HOST_CA_CONTEXT_NAME`]. Without one, the
/// Dockerfile is used unchanged.
pub fn image_spec(
    dockerfile: &str,
    context: impl Into<PathBuf>,
    ca_bundle: Option<Bytes>,
    labels: Labels,
) -> ImageSpec {
    let mut extra_files = BTreeMap::new();
    let dockerfile = match ca_bundle {
        Some(bundle) => {
            extra_files.insert(HOST_CA_CONTEXT_NAME.to_owned(), bundle);
            inject_host_ca(dockerfile)
        }
        None => dockerfile.to_owned(),
    };
    ImageSpec {
        dockerfile,
        context: context.into(),
        extra_files,
        labels,
    }
}

/// Adds the host CA bundle to every build stage of `dockerfile`.
///
/// After each `FROM` instruction (including `FROM ... AS name` and instructions
/// continued over several lines) it inserts a `COPY` of [`HOST_CA_CONTEXT_NAME`] to
/// [`HOST_CA_IMAGE_PATH`] and an `ENV` that points [`HOST_CA_ENV_VARS`] at it. The
/// `# escape=` parser directive is honoured. Everything else is kept byte for byte.
pub fn inject_host_ca(dockerfile: &str) -> String {
    let escape = escape_character(dockerfile);
    let addition = host_ca_lines();
    let mut output = String::with_capacity(dockerfile.len() + 4 * addition.len());
    // True while inside an instruction continued with the escape character.
    let mut continued = false;
    // True while that instruction is a FROM.
    let mut continued_from = false;

    for line in dockerfile.split_inclusive('\n') {
        output.push_str(line);
        let content = line.trim_end_matches(['\n', '\r']);
        let trimmed = content.trim_start();

        // Blank lines and comments neither start nor end an instruction.
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let is_from = !continued && is_from_instruction(trimmed, escape);
        if is_from {
            continued_from = true;
        }
        continued = ends_with_escape(content, escape);
        if !continued && continued_from {
            continued_from = false;
            push_on_new_line(&mut output, &addition);
        }
    }
    // A Dockerfile that ends inside a continued FROM is invalid, but the builder
    // reports that better than Ken can; the lines still go after it.
    if continued_from {
        push_on_new_line(&mut output, &addition);
    }
    output
}

fn host_ca_lines() -> String {
    let env = HOST_CA_ENV_VARS
        .iter()
        .map(|name| format!("{name}={HOST_CA_IMAGE_PATH}"))
        .collect::<Vec<_>>()
        .join(" ");
    format!("COPY {HOST_CA_CONTEXT_NAME} {HOST_CA_IMAGE_PATH}\nENV {env}\n")
}

fn push_on_new_line(output: &mut String, text: &str) {
    if !output.is_empty() && !output.ends_with('\n') {
        output.push('\n');
    }
    output.push_str(text);
}

/// Returns the escape character set by a `# escape=` parser directive, or `\`.
///
/// Parser directives are only recognised at the top of the file, before any blank
/// line, other comment or instruction.
fn escape_character(dockerfile: &str) -> char {
    for line in dockerfile.lines() {
        let Some(comment) = line.trim().strip_prefix('#') else {
            break;
        };
        let Some((key, value)) = comment.split_once('=') else {
            break;
        };
        let key = key.trim();
        if key.is_empty() || key.contains(char::is_whitespace) {
            break;
        }
        if key.eq_ignore_ascii_case("escape") {
            match value.trim() {
                "`" => return '`',
                _ => return '\\',
            }
        }
    }
    '\\'
}

fn is_from_instruction(trimmed: &str, escape: char) -> bool {
    let keyword = trimmed
        .split(char::is_whitespace)
        .next()
        .unwrap_or_default()
        .trim_end_matches(escape);
    keyword.eq_ignore_ascii_case("FROM")
}

fn ends_with_escape(content: &str, escape: char) -> bool {
    content.trim_end().ends_with(escape)
}

/// A build context packed for a provider.
#[derive(Clone)]
pub struct BuildContext {
    /// The uncompressed tar archive: the filtered context directory, the generated
    /// Dockerfile at [`DOCKERFILE_NAME`] and the spec's extra files.
    pub archive: Bytes,
    /// Lowercase hex SHA-256 of `archive`. Because the archive is deterministic, it
    /// changes exactly when the Dockerfile, a context file (contents, path, mode or
    /// symlink target) or an extra file changes.
    pub content_hash: String,
}

impl std::fmt::Debug for BuildContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuildContext")
            .field("archive_len", &self.archive.len())
            .field("content_hash", &self.content_hash)
            .finish()
    }
}

/// Packs the build context of `spec` into a deterministic tar archive.
///
/// The archive contains the context directory with paths sorted, modification times,
/// owners and groups zeroed, permission bits kept and symlinks stored as symlinks.
/// Paths excluded by the context's `.dockerignore` are left out, and so is every
/// `.git` directory or file. The generated Dockerfile is added as
/// [`DOCKERFILE_NAME`] and the extra files under their names; both replace context
/// files of the same path. Sockets, FIFOs and device files are skipped.
///
/// The whole archive is held in memory, so large directories belong in
/// `.dockerignore`. This function does blocking file I/O; call it from a blocking
/// task in async code.
pub fn pack_context(spec: &ImageSpec) -> Result<BuildContext> {
    let root = &spec.context;
    let meta = fs::metadata(root).map_err(|e| {
        Error::io(
            format!(
                "failed to read the build context directory {}; check that it exists and is readable",
                root.display()
            ),
            e,
        )
    })?;
    if !meta.is_dir() {
        return Err(Error::invalid(
            "build context",
            root.display().to_string(),
            "it is not a directory; point the build context at the directory the Dockerfile's COPY lines read from",
        ));
    }

    let ignore = read_dockerignore(root)?;
    let mut entries = BTreeMap::new();
    walk_context(root, "", &ignore, &mut entries)?;

    let generated = std::iter::once((DOCKERFILE_NAME, Bytes::from(spec.dockerfile.clone())))
        .chain(spec.extra_files.iter().map(|(name, data)| (name.as_str(), data.clone())));
    for (name, data) in generated {
        check_extra_file_name(name)?;
        entries.insert(name.to_owned(), ContextEntry::Generated(data));
    }

    let archive = write_archive(root, &entries)?;
    let content_hash = hex::encode(Sha256::digest(&archive));
    Ok(BuildContext {
        archive: Bytes::from(archive),
        content_hash,
    })
}

/// One entry of the build context, keyed by its path relative to the context root.
enum ContextEntry {
    Directory { mode: u32 },
    File { mode: u32 },
    Symlink { target: PathBuf },
    Generated(Bytes),
}

fn read_dockerignore(root: &Path) -> Result<DockerIgnore> {
    let path = root.join(".dockerignore");
    match fs::read_to_string(&path) {
        Ok(text) => Ok(DockerIgnore::parse(&text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(DockerIgnore::default()),
        Err(e) => Err(Error::io(
            format!(
                "failed to read {}; make it a readable UTF-8 text file or remove it",
                path.display()
            ),
            e,
        )),
    }
}

fn check_extra_file_name(name: &str) -> Result<()> {
    let valid = !name.is_empty()
        && !name.starts_with('/')
        && name
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..");
    if valid {
        Ok(())
    } else {
        Err(Error::invalid(
            "build context file name",
            name,
            "use a relative path without `.` or `..` parts, such as `certs/ca.crt`",
        ))
    }
}

/// Collects the entries under `dir` (the directory at `prefix` relative to `root`).
///
/// Returns true when at least one entry was added, so that an excluded directory is
/// still written when an exception pattern brings back something inside it.
fn walk_context(
    dir: &Path,
    prefix: &str,
    ignore: &DockerIgnore,
    entries: &mut BTreeMap<String, ContextEntry>,
) -> Result<bool> {
    let read_error = |e: io::Error| {
        Error::io(
            format!(
                "failed to list {} in the build context; fix its permissions or add it to .dockerignore",
                dir.display()
            ),
            e,
        )
    };
    let mut children = fs::read_dir(dir)
        .map_err(read_error)?
        .collect::<io::Result<Vec<_>>>()
        .map_err(read_error)?;
    children.sort_by_key(|child| child.file_name());

    let mut added_any = false;
    for child in children {
        let path = child.path();
        let file_name = child.file_name();
        let Some(file_name) = file_name.to_str() else {
            return Err(Error::invalid(
                "build context path",
                path.display().to_string(),
                "the name is not valid UTF-8; rename it or add it to .dockerignore",
            ));
        };
        if file_name == ".git" {
            continue;
        }
        let relative = if prefix.is_empty() {
            file_name.to_owned()
        } else {
            format!("{prefix}/{file_name}")
        };
        let meta = fs::symlink_metadata(&path).map_err(|e| {
            Error::io(
                format!(
                    "failed to read {} in the build context; fix its permissions or add it to .dockerignore",
                    path.display()
                ),
                e,
            )
        })?;
        let excluded = ignore.is_excluded(&relative);
        let mode = meta.permissions().mode() & 0o7777;
        let file_type = meta.file_type();

        if file_type.is_dir() {
            if excluded && !ignore.may_include_below(&relative) {
                continue;
            }
            let added_below = walk_context(&path, &relative, ignore, entries)?;
            if !excluded || added_below {
                entries.insert(relative, ContextEntry::Directory { mode });
                added_any = true;
            }
            continue;
        }
        if excluded {
            continue;
        }
        if file_type.is_symlink() {
            let target = fs::read_link(&path).map_err(|e| {
                Error::io(
                    format!(
                        "failed to read the symlink {} in the build context; fix it or add it to .dockerignore",
                        path.display()
                    ),
                    e,
                )
            })?;
            entries.insert(relative, ContextEntry::Symlink { target });
            added_any = true;
        } else if file_type.is_file() {
            entries.insert(relative, ContextEntry::File { mode });
            added_any = true;
        } else {
            tracing::debug!(path = %path.display(), "skipping a socket, FIFO or device file in the build context");
        }
    }
    Ok(added_any)
}

fn write_archive(root: &Path, entries: &BTreeMap<String, ContextEntry>) -> Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    for (relative, entry) in entries {
        let tar_error = |e: io::Error| {
            Error::io(format!("failed to add {relative} to the build context archive"), e)
        };
        let mut header = tar::Header::new_gnu();
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        match entry {
            ContextEntry::Directory { mode } => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(*mode);
                header.set_size(0);
                builder
                    .append_data(&mut header, format!("{relative}/"), io::empty())
                    .map_err(tar_error)?;
            }
            ContextEntry::File { mode } => {
                let path = root.join(relative);
                let data = fs::read(&path).map_err(|e| {
                    Error::io(
                        format!(
                            "failed to read {} in the build context; fix its permissions or add it to .dockerignore",
                            path.display()
                        ),
                        e,
                    )
                })?;
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(*mode);
                header.set_size(data.len() as u64);
                builder
                    .append_data(&mut header, relative, data.as_slice())
                    .map_err(tar_error)?;
            }
            ContextEntry::Symlink { target } => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_mode(0o777);
                header.set_size(0);
                builder
                    .append_link(&mut header, relative, target)
                    .map_err(tar_error)?;
            }
            ContextEntry::Generated(data) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(0o644);
                header.set_size(data.len() as u64);
                builder
                    .append_data(&mut header, relative, data.as_ref())
                    .map_err(tar_error)?;
            }
        }
    }
    builder
        .into_inner()
        .map_err(|e| Error::io("failed to finish the build context archive", e))
}

/// The patterns of a `.dockerignore` file, matched the way the Docker engine does.
///
/// Supported syntax: `#` comments at the start of a line, `!` exceptions, a leading
/// `/`, and `\` escapes. Wildcards: `*` matches any run of characters except `/`,
/// `?` one character except `/`, and `**` any number of directories. Character
/// classes such as `[a-z]` and `[^a-z]` work as in Go's `filepath.Match`. Patterns are matched against paths relative to the context root,
/// and a path is excluded when it or one of its parent directories matches. The
/// last matching pattern wins.
#[derive(Debug, Clone, Default)]
pub struct DockerIgnore {
    patterns: Vec<IgnorePattern>,
}

#[derive(Debug, Clone)]
struct IgnorePattern {
    tokens: Vec<Token>,
    exception: bool,
    /// Leading path segments free of wildcards, used to skip excluded directories
    /// that an exception cannot reach.
    literal_segments: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Literal(char),
    /// `*`: any run of characters except `/`.
    Star,
    /// `**` followed by more pattern: zero or more whole directories.
    AnyDirectories,
    /// `**` at the end of the pattern: anything.
    AnyRest,
    /// `?`: one character except `/`.
    AnyChar,
    /// `[...]`: one character in (or, when negated, not in) the ranges.
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

impl DockerIgnore {
    /// Parses the text of a `.dockerignore` file.
    pub fn parse(text: &str) -> Self {
        let patterns = text
            .lines()
            .enumerate()
            .filter_map(|(index, line)| {
                let line = if index == 0 { line.trim_start_matches('\u{feff}') } else { line };
                if line.starts_with('#') {
                    return None;
                }
                IgnorePattern::parse(line)
            })
            .collect();
        DockerIgnore { patterns }
    }

    /// Returns true when the path `relative` (with `/` separators, relative to the
    /// context root) is excluded from the build context.
    pub fn is_excluded(&self, relative: &str) -> bool {
        let parents = parent_paths(relative);
        let mut excluded = false;
        for pattern in &self.patterns {
            // An exclusion cannot change an excluded path, nor an exception an
            // included one.
            if pattern.exception != excluded {
                continue;
            }
            let matched = pattern.matches(relative) || parents.iter().any(|parent| pattern.matches(parent));
            if matched {
                excluded = !pattern.exception;
            }
        }
        excluded
    }

    /// Returns true when an exception pattern could bring back a path inside the
    /// excluded directory `relative`, so the directory must still be walked.
    fn may_include_below(&self, relative: &str) -> bool {
        let dir_segments: Vec<&str> = relative.split('/').collect();
        self.patterns.iter().filter(|p| p.exception).any(|pattern| {
            pattern
                .literal_segments
                .iter()
                .zip(&dir_segments)
                .all(|(literal, segment)| literal == segment)
        })
    }
}

/// Returns `a`, `a/b` for the path `a/b/c`.
fn parent_paths(relative: &str) -> Vec<&str> {
    relative
        .match_indices('/')
        .map(|(index, _)| &relative[..index])
        .collect()
}

impl IgnorePattern {
    fn parse(line: &str) -> Option<Self> {
        let mut text = line.trim();
        if text.is_empty() {
            return None;
        }
        let exception = text.starts_with('!');
        if exception {
            text = text[1..].trim();
        }
        let cleaned = clean_pattern_path(text);
        if cleaned.is_empty() {
            return None;
        }
        let tokens = tokenize(&cleaned);
        let literal_segments = cleaned
            .split('/')
            .take_while(|segment| !segment.contains(['*', '?', '[', '\\']))
            .map(str::to_owned)
            .collect();
        Some(IgnorePattern {
            tokens,
            exception,
            literal_segments,
        })
    }

    fn matches(&self, path: &str) -> bool {
        let chars: Vec<char> = path.chars().collect();
        match_tokens(&self.tokens, &chars)
    }
}

/// Cleans a pattern the way Go's `filepath.Clean` does for the cases that occur in
/// `.dockerignore` files: repeated and trailing `/`, `.` parts, `..` parts and a
/// leading `/`.
fn clean_pattern_path(pattern: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in pattern.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    parts.join("/")
}

fn tokenize(pattern: &str) -> Vec<Token> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '*' if chars.get(i + 1) == Some(&'*') => {
                i += 2;
                // `**/` behaves like `**`: the slash is part of the directories.
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                if i >= chars.len() {
                    tokens.push(Token::AnyRest);
                } else {
                    tokens.push(Token::AnyDirectories);
                }
                continue;
            }
            '*' => tokens.push(Token::Star),
            '?' => tokens.push(Token::AnyChar),
            '\\' if i + 1 < chars.len() => {
                i += 1;
                tokens.push(Token::Literal(chars[i]));
            }
            '[' => {
                if let Some((class, next)) = parse_class(&chars, i) {
                    tokens.push(class);
                    i = next;
                    continue;
                }
                tokens.push(Token::Literal('['));
            }
            other => tokens.push(Token::Literal(other)),
        }
        i += 1;
    }
    tokens
}

/// Parses the character class starting at `chars[start] == '['`. Returns the token
/// and the index after the closing `]`, or `None` when the class is not closed.
fn parse_class(chars: &[char], start: usize) -> Option<(Token, usize)> {
    let mut i = start + 1;
    let negated = chars.get(i) == Some(&'^');
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    let mut first = true;
    while i < chars.len() {
        let mut low = chars[i];
        if low == ']' && !first {
            return Some((Token::Class { negated, ranges }, i + 1));
        }
        first = false;
        if low == '\\' && i + 1 < chars.len() {
            i += 1;
            low = chars[i];
        }
        let mut high = low;
        if chars.get(i + 1) == Some(&'-') && chars.get(i + 2).is_some_and(|c| *c != ']') {
            i += 2;
            high = chars[i];
            if high == '\\' && i + 1 < chars.len() {
                i += 1;
                high = chars[i];
            }
        }
        ranges.push((low, high));
        i += 1;
    }
    None
}

fn match_tokens(tokens: &[Token], path: &[char]) -> bool {
    let Some((token, rest)) = tokens.split_first() else {
        return path.is_empty();
    };
    match token {
        Token::Literal(c) => path.first() == Some(c) && match_tokens(rest, &path[1..]),
        Token::AnyChar => path.first().is_some_and(|c| *c != '/') && match_tokens(rest, &path[1..]),
        Token::Class { negated, ranges } => {
            let Some(c) = path.first() else {
                return false;
            };
            let in_ranges = ranges.iter().any(|(low, high)| low <= c && c <= high);
            *c != '/' && in_ranges != *negated && match_tokens(rest, &path[1..])
        }
        Token::Star => {
            // Try every run of non-`/` characters, shortest first.
            let limit = path.iter().position(|c| *c == '/').unwrap_or(path.len());
            (0..=limit).any(|taken| match_tokens(rest, &path[taken..]))
        }
        Token::AnyDirectories => {
            // Zero directories, or everything up to and including some `/`.
            match_tokens(rest, path)
                || path
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| **c == '/')
                    .any(|(index, _)| match_tokens(rest, &path[index + 1..]))
        }
        Token::AnyRest => true,
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn excluded(ignore: &str, path: &str) -> bool {
        DockerIgnore::parse(ignore).is_excluded(path)
    }

    #[test]
    fn ignore_plain_names_and_parents() {
        assert!(excluded("node_modules", "node_modules"));
        assert!(excluded("node_modules", "node_modules/a/b.js"));
        assert!(!excluded("node_modules", "src/node_modules"));
        assert!(!excluded("node_modules", "node_modules2"));
    }

    #[test]
    fn ignore_comments_and_blank_lines() {
        let ignore = "# build output\n\n   \ntarget\n";
        assert!(excluded(ignore, "target/debug"));
        assert!(!excluded(ignore, "# build output"));
        assert!(!excluded(ignore, "src"));
    }

    #[test]
    fn ignore_star_stays_in_one_segment() {
        assert!(excluded("*.log", "debug.log"));
        assert!(!excluded("*.log", "logs/debug.log"));
        assert!(excluded("*/*.log", "logs/debug.log"));
        assert!(excluded("*", "anything"));
        assert!(excluded("*", "dir/inside"));
    }

    #[test]
    fn ignore_question_mark_is_one_character() {
        assert!(excluded("file?.txt", "file1.txt"));
        assert!(!excluded("file?.txt", "file12.txt"));
        assert!(!excluded("a?b", "a/b"));
    }

    #[test]
    fn ignore_double_star_spans_directories() {
        assert!(excluded("**/*.log", "debug.log"));
        assert!(excluded("**/*.log", "a/b/c/debug.log"));
        assert!(excluded("docs/**", "docs/a/b"));
        assert!(excluded("a/**/z", "a/z"));
        assert!(excluded("a/**/z", "a/b/c/z"));
        assert!(!excluded("a/**/z", "b/z"));
    }

    #[test]
    fn ignore_exceptions_reinclude() {
        let ignore = "*.md\n!README.md\n";
        assert!(excluded(ignore, "CHANGES.md"));
        assert!(!excluded(ignore, "README.md"));

        let ignore = "*\n!src\n";
        assert!(!excluded(ignore, "src/main.rs"));
        assert!(excluded(ignore, "target/x"));

        // A later exclusion wins over an earlier exception.
        let ignore = "*.md\n!README*.md\nREADME-secret.md\n";
        assert!(!excluded(ignore, "README.md"));
        assert!(excluded(ignore, "README-secret.md"));
    }

    #[test]
    fn ignore_leading_slash_and_cleaning() {
        assert!(excluded("/build", "build/out"));
        assert!(excluded("build/", "build/out"));
        assert!(excluded("./build//", "build"));
        assert!(excluded("  build  ", "build"));
    }

    #[test]
    fn ignore_character_classes_and_escapes() {
        assert!(excluded("log[0-9]", "log7"));
        assert!(!excluded("log[0-9]", "logx"));
        assert!(excluded("log[^0-9]", "logx"));
        assert!(!excluded("log[^0-9]", "log7"));
        assert!(excluded(r"\*.txt", "*.txt"));
        assert!(!excluded(r"\*.txt", "a.txt"));
    }

    #[test]
    fn ignore_walks_excluded_directory_only_for_reachable_exceptions() {
        let ignore = DockerIgnore::parse("vendor\nnode_modules\n!vendor/keep\n");
        assert!(ignore.may_include_below("vendor"));
        assert!(!ignore.may_include_below("node_modules"));
    }

    #[test]
    fn inject_after_every_from() {
        let dockerfile = "FROM debian:bookworm-slim AS build\nRUN make\n\nfrom build\nCMD [\"x\"]\n";
        let output = inject_host_ca(dockerfile);
        let lines: Vec<&str> = output.lines().collect();
        assert_eq!(lines[0], "FROM debian:bookworm-slim AS build");
        assert_eq!(lines[1], format!("COPY {HOST_CA_CONTEXT_NAME} {HOST_CA_IMAGE_PATH}"));
        assert!(lines[2].starts_with("ENV SSL_CERT_FILE=/usr/local/share/ken/host-ca.crt "));
        assert_eq!(lines[3], "RUN make");
        assert_eq!(lines[5], "from build");
        assert!(lines[6].starts_with("COPY "));
        assert!(lines[7].starts_with("ENV "));
        assert_eq!(lines[8], "CMD [\"x\"]");
        assert_eq!(output.matches("COPY ken-host-ca.crt").count(), 2);
    }

    #[test]
    fn inject_sets_every_variable() {
        let output = inject_host_ca("FROM scratch\n");
        for name in HOST_CA_ENV_VARS {
            assert!(output.contains(&format!("{name}={HOST_CA_IMAGE_PATH}")), "{name} missing");
        }
    }

    #[test]
    fn inject_after_continued_from() {
        let dockerfile = "FROM \\\n  # the base\n  debian:bookworm-slim \\\n  AS base\nRUN true\n";
        let output = inject_host_ca(dockerfile);
        let lines: Vec<&str> = output.lines().collect();
        assert_eq!(lines[3], "  AS base");
        assert!(lines[4].starts_with("COPY "));
        assert!(lines[5].starts_with("ENV "));
        assert_eq!(lines[6], "RUN true");
    }

    #[test]
    fn inject_ignores_from_inside_other_instructions() {
        let dockerfile = "FROM a\nRUN echo \\\n  from here\n";
        let output = inject_host_ca(dockerfile);
        assert_eq!(output.matches("COPY ").count(), 1);
        assert!(output.ends_with("  from here\n"));
    }

    #[test]
    fn inject_honours_escape_directive() {
        let dockerfile = "# escape=`\nFROM `\n  mcr.microsoft.com/windows\nRUN dir c:\\\n";
        let output = inject_host_ca(dockerfile);
        let lines: Vec<&str> = output.lines().collect();
        assert_eq!(lines[2], "  mcr.microsoft.com/windows");
        assert!(lines[3].starts_with("COPY "));
        // With the backtick escape, a trailing backslash does not continue the line.
        assert_eq!(lines[5], "RUN dir c:\\");
    }

    #[test]
    fn inject_without_trailing_newline_and_crlf() {
        let output = inject_host_ca("FROM a");
        assert!(output.starts_with("FROM a\nCOPY "));
        assert!(output.ends_with('\n'));

        let output = inject_host_ca("FROM a\r\nRUN b\r\n");
        assert!(output.starts_with("FROM a\r\nCOPY "));
        assert!(output.ends_with("RUN b\r\n"));
    }

    #[test]
    fn image_spec_adds_ca_only_when_given() {
        let with_ca = image_spec("FROM a\n", "/ctx", Some(Bytes::from_static(b"pem")), Labels::new());
        assert_eq!(with_ca.extra_files.get(HOST_CA_CONTEXT_NAME).map(|b| b.as_ref()), Some(&b"pem"[..]));
        assert!(with_ca.dockerfile.contains("COPY "));

        let without = image_spec("FROM a\n", "/ctx", None, Labels::new());
        assert!(without.extra_files.is_empty());
        assert_eq!(without.dockerfile, "FROM a\n");
    }

    fn fixture() -> (tempfile::TempDir, ImageSpec) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::write(root.join("app.txt"), "hello").unwrap();
        fs::create_dir_all(root.join("src/deep")).unwrap();
        fs::write(root.join("src/deep/main.rs"), "fn main() {}").unwrap();
        fs::create_dir_all(root.join("node_modules/pkg")).unwrap();
        fs::write(root.join("node_modules/pkg/index.js"), "x").unwrap();
        fs::create_dir_all(root.join(".git")).unwrap();
        fs::write(root.join(".git/HEAD"), "ref").unwrap();
        fs::write(root.join("debug.log"), "noise").unwrap();
        fs::write(root.join(".dockerignore"), "node_modules\n*.log\n").unwrap();
        symlink("app.txt", root.join("link")).unwrap();
        let spec = image_spec(
            "FROM debian:bookworm-slim\n",
            root,
            Some(Bytes::from_static(b"-----BEGIN CERTIFICATE-----\n")),
            Labels::new(),
        );
        (dir, spec)
    }

    fn archive_paths(context: &BuildContext) -> Vec<(String, tar::EntryType)> {
        let mut archive = tar::Archive::new(context.archive.as_ref());
        archive
            .entries()
            .unwrap()
            .map(|entry| {
                let entry = entry.unwrap();
                let path = entry.path().unwrap().to_string_lossy().into_owned();
                (path, entry.header().entry_type())
            })
            .collect()
    }

    #[test]
    fn pack_filters_and_adds_generated_files() {
        let (_dir, spec) = fixture();
        let context = pack_context(&spec).unwrap();
        let entries = archive_paths(&context);
        let paths: Vec<&str> = entries.iter().map(|(p, _)| p.as_str()).collect();

        assert!(paths.contains(&"app.txt"));
        assert!(paths.contains(&"src/deep/main.rs"));
        assert!(paths.contains(&DOCKERFILE_NAME));
        assert!(paths.contains(&HOST_CA_CONTEXT_NAME));
        assert!(paths.contains(&".dockerignore"));
        assert!(!paths.iter().any(|p| p.starts_with("node_modules")));
        assert!(!paths.iter().any(|p| p.starts_with(".git/") || *p == ".git"));
        assert!(!paths.contains(&"debug.log"));

        let link = entries.iter().find(|(p, _)| p == "link").unwrap();
        assert_eq!(link.1, tar::EntryType::Symlink);

        let mut sorted = paths.clone();
        sorted.sort();
        assert_eq!(paths, sorted);
    }

    #[test]
    fn pack_zeroes_metadata_and_keeps_modes() {
        let (dir, spec) = fixture();
        let script = dir.path().join("run.sh");
        fs::write(&script, "#!/bin/sh\n").unwrap();
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();

        let context = pack_context(&spec).unwrap();
        let mut archive = tar::Archive::new(context.archive.as_ref());
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            let header = entry.header();
            assert_eq!(header.mtime().unwrap(), 0);
            assert_eq!(header.uid().unwrap(), 0);
            assert_eq!(header.gid().unwrap(), 0);
            if entry.path().unwrap().as_ref() == Path::new("run.sh") {
                assert_eq!(header.mode().unwrap(), 0o755);
            }
        }
    }

    #[test]
    fn pack_keeps_exception_inside_excluded_directory() {
        let (dir, mut spec) = fixture();
        fs::write(dir.path().join(".dockerignore"), "node_modules\n!node_modules/pkg/index.js\n").unwrap();
        spec.extra_files.clear();
        let context = pack_context(&spec).unwrap();
        let paths: Vec<String> = archive_paths(&context).into_iter().map(|(p, _)| p).collect();
        assert!(paths.contains(&"node_modules/pkg/index.js".to_owned()));
        assert!(paths.contains(&"node_modules/pkg/".to_owned()) || paths.contains(&"node_modules/pkg".to_owned()));
    }

    #[test]
    fn pack_hash_is_deterministic() {
        let (dir, spec) = fixture();
        let first = pack_context(&spec).unwrap();
        // Touching a file changes its mtime, which must not change the hash.
        let file = fs::File::options().append(true).open(dir.path().join("app.txt")).unwrap();
        file.set_modified(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(12345))
            .unwrap();
        let second = pack_context(&spec).unwrap();
        assert_eq!(first.content_hash, second.content_hash);
        assert_eq!(first.archive, second.archive);
        assert_eq!(first.content_hash.len(), 64);
    }

    #[test]
    fn pack_hash_changes_with_one_byte() {
        let (dir, spec) = fixture();
        let before = pack_context(&spec).unwrap().content_hash;

        fs::write(dir.path().join("app.txt"), "hellO").unwrap();
        let context_changed = pack_context(&spec).unwrap().content_hash;
        assert_ne!(before, context_changed);

        let mut dockerfile_changed = spec.clone();
        dockerfile_changed.dockerfile.push(' ');
        assert_ne!(context_changed, pack_context(&dockerfile_changed).unwrap().content_hash);

        let mut extra_changed = spec.clone();
        extra_changed
            .extra_files
            .insert(HOST_CA_CONTEXT_NAME.to_owned(), Bytes::from_static(b"-----BEGIN CERTIFICATE-----\r"));
        assert_ne!(context_changed, pack_context(&extra_changed).unwrap().content_hash);
    }

    #[test]
    fn pack_hash_ignores_excluded_files() {
        let (dir, spec) = fixture();
        let before = pack_context(&spec).unwrap().content_hash;
        fs::write(dir.path().join("debug.log"), "different noise").unwrap();
        fs::write(dir.path().join(".git/HEAD"), "other").unwrap();
        assert_eq!(before, pack_context(&spec).unwrap().content_hash);
    }

    #[test]
    fn pack_reports_missing_context() {
        let spec = image_spec("FROM a\n", "/nonexistent/ken-context", None, Labels::new());
        let error = pack_context(&spec).unwrap_err().to_string();
        assert!(error.contains("/nonexistent/ken-context"), "{error}");
        assert!(error.contains("check that it exists"), "{error}");
    }

    #[test]
    fn pack_rejects_escaping_extra_file() {
        let (_dir, mut spec) = fixture();
        spec.extra_files.insert("../outside".to_owned(), Bytes::new());
        let error = pack_context(&spec).unwrap_err().to_string();
        assert!(error.contains("../outside"), "{error}");
    }
}
