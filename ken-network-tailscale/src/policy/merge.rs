//! Merging Ken's section into the tailnet policy file's HuJSON text.
//!
//! Only Ken's entries are inserted, replaced or removed; every other byte of the
//! file stays as it was, comments and order included. Ken marks each entry it
//! writes with a line comment containing [`MARKER`] and the sandbox tag right above
//! it, so sections for different tags live side by side. On the next apply for a
//! tag, a marked entry of that tag that still matches the section is kept, one that
//! no longer matches is removed, and a missing entry is appended at the end of its
//! list. Entries marked for other tags are left alone. A marker without a tag
//! (written by older versions of Ken) belongs to the tag its entry names. An unmarked entry equal to one of Ken's (an admin wrote it by hand) counts
//! as present, so nothing is duplicated.

use ken_core::{Error, Result};
use serde_json::{json, Value};

use super::hujson::{self, Container, Item, Kind, Member, Node};
use super::render::{inline, PolicySection};

/// The text that marks an entry Ken wrote.
pub const MARKER: &str = "ken:managed";

/// Returns the comment Ken writes above each of its entries for `tag`.
fn marker_comment(tag: &str) -> String {
    format!("// {MARKER} {tag} - `ken policy apply` writes and replaces this entry")
}

/// Returns whether an entry whose leading text is `leading` carries Ken's marker
/// for `tag`. A marker that names no tag counts for `tag` when `entry` names it.
fn is_marked_for(leading: &str, entry: &Value, tag: &str) -> bool {
    let Some(at) = leading.rfind(MARKER) else {
        return false;
    };
    let after = &leading[at + MARKER.len()..];
    let word = after.split_whitespace().next().unwrap_or("");
    if word.starts_with("tag:") {
        word == tag
    } else {
        names_tag(entry, tag)
    }
}

/// Returns whether any string in `value` is `tag` or `tag:PORT`.
fn names_tag(value: &Value, tag: &str) -> bool {
    match value {
        Value::String(text) => text == tag || text.strip_prefix(tag).is_some_and(|rest| rest.starts_with(':')),
        Value::Array(items) => items.iter().any(|item| names_tag(item, tag)),
        Value::Object(members) => members.values().any(|member| names_tag(member, tag)),
        _ => false,
    }
}

/// One replacement of a byte range of the text.
struct Edit {
    range: std::ops::Range<usize>,
    text: String,
}

/// Returns `text` with Ken's `section` merged in. Returns `text` unchanged when the
/// section is already there.
pub fn merge(text: &str, section: &PolicySection) -> Result<String> {
    let root = hujson::parse(text)?;
    let Kind::Object(object) = &root.kind else {
        return Err(Error::invalid("policy file", "(top level)", "the policy file must be a JSON object"));
    };
    let indent_unit = if text.contains("\n\t") { "\t" } else { "  " };
    let mut edits = Vec::new();
    let mut new_members = Vec::new();

    let owner_entry = (section.tag.clone(), section.owners_json());
    match root.member("tagOwners") {
        None => new_members.push(("tagOwners", vec![object_entry(&owner_entry.0, &owner_entry.1)], '{')),
        Some(member) => match &member.value.value.kind {
            Kind::Object(owners) => merge_tag_owner(text, owners, &owner_entry, indent_unit, &mut edits),
            _ => return Err(not_a("tagOwners", "an object", text, &member.value.value)),
        },
    }

    for (name, entries) in [("grants", &section.grants), ("tests", &section.tests)] {
        match root.member(name) {
            None if entries.is_empty() => {}
            None => new_members.push((name, entries.iter().map(inline).collect(), '[')),
            Some(member) => match &member.value.value.kind {
                Kind::Array(array) => merge_list(text, array, entries, &section.tag, indent_unit, &mut edits),
                _ => return Err(not_a(name, "an array", text, &member.value.value)),
            },
        }
    }

    if !new_members.is_empty() {
        let indent = item_indent(text, object.items.last().map(|item| item.start), object.close, indent_unit);
        let members: Vec<String> = new_members
            .into_iter()
            .map(|(name, entries, open)| {
                let close = if open == '[' { ']' } else { '}' };
                let inner = format!("{indent}{indent_unit}");
                let marker = marker_comment(&section.tag);
                let body: String = entries.iter().map(|entry| format!("\n{inner}{marker}\n{inner}{entry},")).collect();
                format!("{}: {open}{body}\n{indent}{close}", Value::String(name.to_owned()))
            })
            .collect();
        append(text, object, members, &indent, None, &mut edits);
    }

    Ok(apply_edits(text, edits))
}

/// Adds the tag's owners when the tag has none, and replaces Ken's marked entry
/// when its owners changed. Owners an admin wrote are kept.
fn merge_tag_owner(
    text: &str,
    owners: &Container<Member>,
    (tag, value): &(String, Value),
    indent_unit: &str,
    edits: &mut Vec<Edit>,
) {
    match owners.items.iter().find(|item| &item.value.key == tag) {
        Some(item) if is_marked_for(item.leading(text), &Value::String(tag.clone()), tag) && item.value.value.to_json() != *value => {
            edits.push(Edit {
                range: item.value.value.span.clone(),
                text: inline(value),
            });
        }
        Some(_) => {}
        None => {
            let indent = item_indent(text, owners.items.last().map(|item| item.start), owners.close, indent_unit);
            append(text, owners, vec![object_entry(tag, value)], &indent, Some(tag), edits);
        }
    }
}

/// Keeps Ken's entries marked for `tag` that are still wanted, removes the others
/// marked for `tag`, and appends the wanted entries that are missing.
fn merge_list(text: &str, array: &Container<Node>, wanted: &[Value], tag: &str, indent_unit: &str, edits: &mut Vec<Edit>) {
    let is_marked = |item: &Item<Node>| is_marked_for(item.leading(text), &item.value.to_json(), tag);
    let mut missing: Vec<&Value> = wanted
        .iter()
        .filter(|entry| !array.items.iter().any(|item| !is_marked(item) && item.value.to_json() == **entry))
        .collect();
    for item in array.items.iter().filter(|item| is_marked(item)) {
        let json = item.value.to_json();
        match missing.iter().position(|entry| **entry == json) {
            Some(found) => {
                missing.remove(found);
            }
            None => edits.push(Edit {
                range: removal_range(text, item),
                text: String::new(),
            }),
        }
    }
    if missing.is_empty() {
        return;
    }
    let indent = item_indent(text, array.items.last().map(|item| item.start), array.close, indent_unit);
    append(text, array, missing.into_iter().map(inline).collect(), &indent, Some(tag), edits);
}

/// Inserts `entries` after the container's last item (and after any comment on
/// that item's line), each followed by a comma and, with a `marker_tag`, under a
/// marker comment for that tag.
fn append<T>(text: &str, container: &Container<T>, entries: Vec<String>, indent: &str, marker_tag: Option<&str>, edits: &mut Vec<Edit>)
where
    Item<T>: ItemEnd,
{
    let marker = match marker_tag {
        Some(tag) => format!("\n{indent}{}", marker_comment(tag)),
        None => String::new(),
    };
    let body: String = entries.iter().map(|entry| format!("{marker}\n{indent}{entry},")).collect();
    let Some(last) = container.items.last() else {
        let closing_indent = line_indent(text, container.close);
        edits.push(Edit {
            range: container.close..container.close,
            text: format!("{body}\n{closing_indent}"),
        });
        return;
    };
    let end = last.item_end();
    let at = end_of_line_comment(text, end, container.close);
    match last.comma {
        Some(_) => edits.push(Edit { range: at..at, text: body }),
        None if at == end => edits.push(Edit {
            range: at..at,
            text: format!(",{body}"),
        }),
        None => {
            edits.push(Edit {
                range: end..end,
                text: ",".to_owned(),
            });
            edits.push(Edit { range: at..at, text: body });
        }
    }
}

/// The end of an item, for arrays and objects alike.
trait ItemEnd {
    fn item_end(&self) -> usize;
}

impl ItemEnd for Item<Node> {
    fn item_end(&self) -> usize {
        self.end()
    }
}

impl ItemEnd for Item<Member> {
    fn item_end(&self) -> usize {
        self.end()
    }
}

fn object_entry(key: &str, value: &Value) -> String {
    format!("{}: {}", Value::String(key.to_owned()), inline(value))
}

/// Returns the position after the spaces and the `//` comment that follow `pos` on
/// its line, but not past `limit`.
fn end_of_line_comment(text: &str, pos: usize, limit: usize) -> usize {
    let rest = &text[pos..limit];
    let spaces = rest.len() - rest.trim_start_matches([' ', '\t']).len();
    let after = &rest[spaces..];
    if after.starts_with("//") {
        pos + spaces + after.find('\n').unwrap_or(after.len())
    } else {
        pos
    }
}

/// Returns the range that removes a marked entry: from the start of its marker
/// comment's line through its comma and the rest of its line.
fn removal_range(text: &str, item: &Item<Node>) -> std::ops::Range<usize> {
    let leading = item.leading(text);
    let marker_at = item.lead + leading.find(MARKER).unwrap_or(leading.len());
    let comment_at = text[..marker_at].rfind("//").filter(|at| *at >= item.lead).unwrap_or(marker_at);
    let line_start = text[..comment_at].rfind('\n').map_or(0, |newline| newline + 1);
    let start = if text[line_start..comment_at].trim().is_empty() { line_start.max(item.lead) } else { comment_at };
    let mut end = item.end();
    let rest = &text[end..];
    let spaces = rest.len() - rest.trim_start_matches([' ', '\t']).len();
    if rest[spaces..].starts_with('\n') && start == line_start {
        end += spaces + 1;
    }
    start..end
}

/// Returns the indentation for an item of a container: that of its last item when
/// the item starts its line, else one unit more than the closing bracket's line.
fn item_indent(text: &str, last_start: Option<usize>, close: usize, unit: &str) -> String {
    if let Some(start) = last_start {
        let line_start = text[..start].rfind('\n').map_or(0, |newline| newline + 1);
        let before = &text[line_start..start];
        if before.trim().is_empty() {
            return before.to_owned();
        }
    }
    format!("{}{unit}", line_indent(text, close))
}

/// Returns the whitespace at the start of the line containing `pos`.
fn line_indent(text: &str, pos: usize) -> String {
    let line_start = text[..pos].rfind('\n').map_or(0, |newline| newline + 1);
    text[line_start..].chars().take_while(|c| *c == ' ' || *c == '\t').collect()
}

fn apply_edits(text: &str, mut edits: Vec<Edit>) -> String {
    edits.sort_by_key(|edit| std::cmp::Reverse((edit.range.start, edit.range.end)));
    let mut out = text.to_owned();
    for edit in edits {
        out.replace_range(edit.range, &edit.text);
    }
    out
}

fn not_a(name: &str, expected: &str, text: &str, node: &Node) -> Error {
    let (line, _) = hujson::line_column(text, node.span.start);
    Error::invalid(
        "policy file",
        format!("\"{name}\" on line {line}"),
        format!("it must be {expected}; fix the policy file in the admin console"),
    )
}

/// Returns whether the policy `root` gives the sandbox tag owners and contains
/// each of the section's grants, as a grant or as the equivalent legacy ACL.
pub(crate) fn contains_section(root: &Node, section: &PolicySection) -> bool {
    let owners_present = root
        .member("tagOwners")
        .and_then(|owners| owners.value.value.member(&section.tag))
        .is_some();
    let entries = |name: &str| -> Vec<Value> {
        match root.member(name).map(|m| &m.value.value.kind) {
            Some(Kind::Array(array)) => array.items.iter().map(|item| item.value.to_json()).collect(),
            _ => Vec::new(),
        }
    };
    let grants = entries("grants");
    let acls = entries("acls");
    owners_present
        && section
            .grants
            .iter()
            .all(|grant| grants.contains(grant) || acls.contains(&legacy_acl(grant)))
}

/// Returns the owners of `tag` in the policy's `tagOwners`.
pub(crate) fn tag_owners(root: &Node, tag: &str) -> Vec<String> {
    let owners = root
        .member("tagOwners")
        .and_then(|owners| owners.value.value.member(tag))
        .map(|owners| owners.value.value.to_json());
    match owners {
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        Some(Value::String(one)) => vec![one],
        _ => Vec::new(),
    }
}

/// Returns the legacy ACL equivalent of a grant `{"src", "dst": [tag], "ip": ["*"]}`,
/// which counts as Ken's grant when an admin wrote the policy with `acls`.
pub(crate) fn legacy_acl(grant: &Value) -> Value {
    let dst: Vec<String> = grant["dst"]
        .as_array()
        .map(|dst| dst.iter().filter_map(Value::as_str).map(|d| format!("{d}:*")).collect())
        .unwrap_or_default();
    json!({"action": "accept", "src": grant["src"], "dst": dst})
}

#[cfg(test)]
mod tests;
