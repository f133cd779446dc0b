//! Where in the file something is: byte offsets to line:col, and the dotted
//! key (`agent[2].allow`) an error is reported under.

use std::ops::Range;

use super::Cx;

impl Cx<'_> {
    /// 1-based line and column (in characters) of byte `offset`.
    pub(super) fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|&start| start <= offset);
        let line_start = self
            .line_starts
            .get(line.wrapping_sub(1))
            .copied()
            .unwrap_or(0);
        let col = self
            .text
            .get(line_start..offset)
            .map_or(0, |s| s.chars().count())
            + 1;
        (line.max(1), col)
    }
}

/// The dotted key at byte `offset`: the enclosing `[table]` header plus the
/// key that starts the line, e.g. `egress.ports` or `agent[2].allow`. On a
/// line that starts no key (an entry of a multi-line array), the last key
/// above it in the same table; on a header line, the header's name.
pub(super) fn key_at(text: &str, offset: usize) -> String {
    let offset = offset.min(text.len());
    let line_start = text
        .get(..offset)
        .and_then(|b| b.rfind('\n'))
        .map_or(0, |i| i + 1);
    let header_name = |t: &str| {
        t.trim_start_matches('[')
            .split(']')
            .next()
            .unwrap_or("")
            .trim()
            .to_owned()
    };
    let line_key = |t: &str| {
        t.split_once('=')
            .map(|(k, _)| k.trim())
            .filter(|k| {
                !k.is_empty()
                    && k.chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            })
            .map(str::to_owned)
    };
    let mut table = String::new();
    let mut last_key: Option<String> = None;
    let mut agent_count = 0usize;
    for line in text.get(..line_start).unwrap_or("").lines() {
        let t = line.trim();
        if t.starts_with('[') {
            last_key = None;
            table = header_name(t);
            if t.starts_with("[[") && table == "agent" {
                table = format!("agent[{agent_count}]");
                agent_count += 1;
            }
        } else if let Some(k) = line_key(t) {
            last_key = Some(k);
        }
    }
    let line = text
        .get(line_start..)
        .and_then(|s| s.lines().next())
        .unwrap_or("")
        .trim();
    if line.starts_with('[') {
        // The header itself is the unknown key: `[egres]`; an empty one
        // (`[]`) still gets a name.
        let name = header_name(line);
        return if name.is_empty() {
            "(table header)".to_owned()
        } else {
            name
        };
    }
    let key = line_key(line).or(last_key).unwrap_or_default();
    match (table.is_empty(), key.is_empty()) {
        (true, true) => "(top level)".to_owned(),
        (true, false) => key,
        (false, true) => table,
        (false, false) => format!("{table}.{key}"),
    }
}

/// Span of `table.key` in the text, for errors on values serde has already consumed.
/// Falls back to the `[table]` header, then to the start of the file.
pub(super) fn span_of_key(text: &str, dotted: &str) -> Range<usize> {
    let (table, key) = dotted.split_once('.').unwrap_or(("", dotted));
    let header = format!("[{table}]");
    let mut at = 0;
    let mut in_table: Option<Range<usize>> = None;
    for line in text.split_inclusive('\n') {
        let start = at;
        at += line.len();
        let t = line.trim_start();
        let indent = start + (line.len() - t.len());
        if t.starts_with('[') {
            // A header only counts at the start of a line, never inside a comment.
            if in_table.is_some() {
                break;
            }
            if t.starts_with(&header) {
                in_table = Some(indent..indent + header.len());
            }
        } else if in_table.is_some() && t.split('=').next().map(str::trim) == Some(key) {
            return indent..indent + key.len();
        }
    }
    in_table.unwrap_or(0..0)
}
