//! Turning a Dockerfile into the command list of a Modal image layer.
//!
//! Modal builds an image from `dockerfile_commands`, lines of a Dockerfile that
//! start with `FROM <registry tag>`. Ken sends the whole Dockerfile as one layer:
//! every instruction becomes one command, with continued lines joined and
//! heredocs kept whole.
//!
//! Local `COPY` and `ADD` sources are rejected. Modal's builder runs in Modal's
//! cloud and gets no build context in this protocol (only `COPY --from=<stage>`
//! and remote `ADD` sources work), and copying the files after creation would run
//! them after the `RUN` lines that may need them. The error names the line and
//! states what to do instead. The two lines Ken itself adds for the host's CA bundle
//! (see [`ken_core::image::inject_host_ca`]) are left out: that bundle serves
//! builds behind the host's TLS-inspecting proxy, and Modal builds elsewhere.

use ken_core::image::{HOST_CA_CONTEXT_NAME, HOST_CA_ENV_VARS, HOST_CA_IMAGE_PATH};
use ken_core::{Error, Result};

/// Instructions passed through unchanged.
const PASSED: [&str; 15] = [
    "FROM",
    "RUN",
    "ENV",
    "WORKDIR",
    "ARG",
    "USER",
    "LABEL",
    "EXPOSE",
    "SHELL",
    "ENTRYPOINT",
    "CMD",
    "VOLUME",
    "STOPSIGNAL",
    "HEALTHCHECK",
    "ONBUILD",
];

/// Returns the Modal layer commands for `dockerfile`.
///
/// Fails with [`Error::InvalidInput`] naming the line for a local `COPY`/`ADD`,
/// an unknown instruction, or a Dockerfile without `FROM`.
pub fn modal_commands(dockerfile: &str) -> Result<Vec<String>> {
    let mut commands = Vec::new();
    let mut saw_from = false;
    for instruction in instructions(dockerfile) {
        let Instruction { line, text } = instruction;
        let keyword = text
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        let args = text.trim_start()[keyword.len()..].trim();
        match keyword.as_str() {
            "COPY" | "ADD" => {
                if !is_remote_copy(&keyword, args) {
                    return Err(Error::invalid(
                        format!("Dockerfile line {line}"),
                        text.trim(),
                        "Modal builds images in its cloud without Ken's build context, so local COPY and ADD \
                         sources cannot be used; fetch the files in a RUN line (curl, git clone), use \
                         `COPY --from=<stage>`, or let Ken's repository seeding put them in the sandbox",
                    ));
                }
            }
            "FROM" => saw_from = true,
            "MAINTAINER" => continue,
            other if PASSED.contains(&other) => {}
            other => {
                return Err(Error::invalid(
                    format!("Dockerfile line {line}"),
                    text.trim(),
                    format!("{other} is not a Dockerfile instruction Ken can send to Modal"),
                ))
            }
        }
        if !saw_from && keyword != "ARG" {
            return Err(Error::invalid(
                format!("Dockerfile line {line}"),
                text.trim(),
                "the Dockerfile must start with FROM (only ARG may come before it)",
            ));
        }
        commands.push(text.trim().to_owned());
    }
    if !saw_from {
        return Err(Error::invalid(
            "Dockerfile",
            dockerfile.lines().next().unwrap_or_default(),
            "it has no FROM line; start it with a base image, for example `FROM debian:bookworm-slim`",
        ));
    }
    Ok(commands)
}

/// One instruction and the line it starts on.
struct Instruction {
    line: usize,
    text: String,
}

/// Splits a Dockerfile into instructions: comments and blank lines dropped,
/// continued lines joined (the escape character and newline removed), heredoc
/// bodies kept with their newlines.
///
/// The host CA lines that Ken adds are dropped too, and line numbers count only
/// the other lines, so they match the user's own Dockerfile.
fn instructions(dockerfile: &str) -> Vec<Instruction> {
    let escape = escape_character(dockerfile);
    let mut out = Vec::new();
    let mut added_lines = 0;
    let mut lines = dockerfile.lines().enumerate().peekable();
    while let Some((index, raw)) = lines.next() {
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if is_host_ca_line(trimmed) {
            added_lines += 1;
            continue;
        }
        let mut text = String::new();
        let mut current = raw.trim_end().to_owned();
        loop {
            if let Some(stripped) = current.strip_suffix(escape) {
                text.push_str(stripped);
                // Comment lines inside a continued instruction are dropped.
                let mut next = None;
                for (_, following) in lines.by_ref() {
                    if following.trim_start().starts_with('#') {
                        continue;
                    }
                    next = Some(following.trim_end().to_owned());
                    break;
                }
                match next {
                    Some(next) => current = next,
                    None => break,
                }
            } else {
                text.push_str(&current);
                break;
            }
        }
        for delimiter in heredoc_delimiters(&text) {
            for (_, body) in lines.by_ref() {
                text.push('\n');
                text.push_str(body);
                let end = if delimiter.strip_tabs { body.trim_start_matches('\t') } else { body };
                if end == delimiter.word {
                    break;
                }
            }
        }
        out.push(Instruction {
            line: index + 1 - added_lines,
            text,
        });
    }
    out
}

struct Heredoc {
    word: String,
    strip_tabs: bool,
}

/// Returns the heredoc delimiters (`<<EOF`, `<<-EOF`, `<<"EOF"`) of an instruction.
fn heredoc_delimiters(text: &str) -> Vec<Heredoc> {
    let keyword = text.split_whitespace().next().unwrap_or_default().to_ascii_uppercase();
    if !matches!(keyword.as_str(), "RUN" | "COPY" | "ADD") {
        return Vec::new();
    }
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("<<") {
        rest = &rest[at + 2..];
        let strip_tabs = rest.starts_with('-');
        let word_start = if strip_tabs { &rest[1..] } else { rest };
        let word: String = word_start
            .trim_start_matches(['"', '\''])
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !word.is_empty() {
            found.push(Heredoc { word, strip_tabs });
        }
    }
    found
}

/// Returns the escape character of a `# escape=` parser directive, or `\`.
fn escape_character(dockerfile: &str) -> char {
    for line in dockerfile.lines() {
        let Some(comment) = line.trim().strip_prefix('#') else {
            break;
        };
        let Some((key, value)) = comment.split_once('=') else {
            break;
        };
        if key.trim().eq_ignore_ascii_case("escape") {
            return if value.trim() == "`" { '`' } else { '\\' };
        }
    }
    '\\'
}

/// True for `COPY --from=...` and for `ADD` whose sources are all URLs.
fn is_remote_copy(keyword: &str, args: &str) -> bool {
    let words: Vec<&str> = args.split_whitespace().collect();
    if words.iter().any(|w| w.starts_with("--from=")) {
        return true;
    }
    if keyword != "ADD" {
        return false;
    }
    let sources: Vec<&&str> = words.iter().filter(|w| !w.starts_with("--")).collect();
    let Some((_, sources)) = sources.split_last() else {
        return false;
    };
    !sources.is_empty()
        && sources
            .iter()
            .all(|s| s.starts_with("https://") || s.starts_with("http://") || s.starts_with("git@"))
}

/// True for one of the two lines that [`ken_core::image::inject_host_ca`] adds.
fn is_host_ca_line(line: &str) -> bool {
    let keyword = line.split_whitespace().next().unwrap_or_default();
    let args = line[keyword.len()..].trim();
    match keyword.to_ascii_uppercase().as_str() {
        "COPY" => is_host_ca_copy(args),
        "ENV" => is_host_ca_env(args),
        _ => false,
    }
}

/// True for the `COPY` of the host CA bundle that Ken adds.
fn is_host_ca_copy(args: &str) -> bool {
    let words: Vec<&str> = args.split_whitespace().collect();
    words == [HOST_CA_CONTEXT_NAME, HOST_CA_IMAGE_PATH]
}

/// True for the `ENV` line that Ken adds with the host CA bundle.
fn is_host_ca_env(args: &str) -> bool {
    let assignments: Vec<&str> = args.split_whitespace().collect();
    !assignments.is_empty()
        && assignments.iter().all(|a| {
            a.split_once('=').is_some_and(|(name, value)| {
                HOST_CA_ENV_VARS.contains(&name) && value == HOST_CA_IMAGE_PATH
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kit_dockerfile_is_one_layer() {
        let commands = modal_commands(ken_core::testkit::KIT_DOCKERFILE).unwrap();
        assert_eq!(commands.len(), 2);
        assert_eq!(commands[0], "FROM debian:bookworm-slim");
        assert!(commands[1].starts_with("RUN apt-get update"));
    }

    #[test]
    fn continuations_comments_and_env() {
        let file = "# syntax=docker/dockerfile:1\nARG V=1\nFROM alpine:${V}\n\n# a comment\nRUN apk add \\\n  # inline\n  git \\\n  curl\nENV A=1 B=\"two words\"\nWORKDIR /work\nUSER nobody\n";
        let commands = modal_commands(file).unwrap();
        assert_eq!(
            commands,
            [
                "ARG V=1",
                "FROM alpine:${V}",
                "RUN apk add   git   curl",
                "ENV A=1 B=\"two words\"",
                "WORKDIR /work",
                "USER nobody",
            ]
        );
    }

    #[test]
    fn local_copy_is_rejected_with_its_line() {
        let error = modal_commands("FROM debian\nRUN true\nCOPY package.json /app/\n").unwrap_err();
        let text = error.to_string();
        assert!(text.contains("line 3"), "{text}");
        assert!(text.contains("COPY package.json /app/"), "{text}");
        assert!(text.contains("build context"), "{text}");
    }

    #[test]
    fn remote_sources_pass() {
        let file = "FROM golang AS build\nRUN go build\nFROM debian\nCOPY --from=build /out /usr/bin/\nADD https://example.com/a.tgz /tmp/\n";
        assert_eq!(modal_commands(file).unwrap().len(), 5);
        assert!(modal_commands("FROM debian\nADD local.tgz /tmp/\n").is_err());
    }

    #[test]
    fn host_ca_lines_are_left_out() {
        let file = ken_core::image::inject_host_ca("FROM debian:bookworm-slim\nRUN true\n");
        assert!(file.contains(HOST_CA_CONTEXT_NAME));
        let commands = modal_commands(&file).unwrap();
        assert_eq!(commands, ["FROM debian:bookworm-slim", "RUN true"]);
    }

    #[test]
    fn line_numbers_count_only_the_users_lines() {
        let file = ken_core::image::inject_host_ca("FROM debian\nRUN true\nCOPY package.json /app/\n");
        let text = modal_commands(&file).unwrap_err().to_string();
        assert!(text.contains("line 3"), "{text}");
        let stages = ken_core::image::inject_host_ca("FROM golang AS build\nRUN true\nFROM debian\nADD a.tgz /\n");
        let text = modal_commands(&stages).unwrap_err().to_string();
        assert!(text.contains("line 4"), "{text}");
    }

    #[test]
    fn heredoc_is_kept_whole() {
        let file = "FROM debian\nRUN <<EOF\necho one\necho two\nEOF\nRUN true\n";
        let commands = modal_commands(file).unwrap();
        assert_eq!(commands, ["FROM debian", "RUN <<EOF\necho one\necho two\nEOF", "RUN true"]);
    }

    #[test]
    fn missing_from_and_unknown_instruction() {
        assert!(modal_commands("RUN true\n").unwrap_err().to_string().contains("FROM"));
        assert!(modal_commands("").is_err());
        let error = modal_commands("FROM debian\nFOO bar\n").unwrap_err();
        assert!(error.to_string().contains("FOO"));
    }
}
