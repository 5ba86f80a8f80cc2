//! Formatting of results: durations, ages, tables and JSON on stdout, notes on stderr.

use std::io::Write;
use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;

/// Formats a duration for people: `0.4s`, `12.3s`, `2m03s`, `1h05m`.
pub(crate) fn duration(value: Duration) -> String {
    let seconds = value.as_secs_f64();
    if seconds < 60.0 {
        return format!("{seconds:.1}s");
    }
    let whole = value.as_secs();
    if whole < 3600 {
        return format!("{}m{:02}s", whole / 60, whole % 60);
    }
    format!("{}h{:02}m", whole / 3600, (whole % 3600) / 60)
}

/// Formats the time since `created_at` (Unix seconds) in its largest whole unit:
/// `45s`, `5m`, `2h`, `3d`; `-` when unknown.
pub(crate) fn age(created_at: Option<u64>, now: u64) -> String {
    let Some(created_at) = created_at else {
        return "-".to_owned();
    };
    let seconds = now.saturating_sub(created_at);
    match seconds {
        0..=59 => format!("{seconds}s"),
        60..=3599 => format!("{}m", seconds / 60),
        3600..=86_399 => format!("{}h", seconds / 3600),
        _ => format!("{}d", seconds / 86_400),
    }
}

/// Prints `rows` under `headers` on stdout, columns separated by two spaces. The last
/// column is not padded, so lines carry no trailing blanks.
pub(crate) fn print_table(headers: &[&str], rows: &[Vec<String>]) -> anyhow::Result<()> {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let header_row: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    let mut text = String::new();
    for row in std::iter::once(&header_row).chain(rows) {
        let last = row.len().saturating_sub(1);
        for (index, cell) in row.iter().enumerate() {
            if index == last {
                text.push_str(cell);
            } else {
                let padding = widths[index].saturating_sub(cell.chars().count());
                text.push_str(cell);
                text.push_str(&" ".repeat(padding + 2));
            }
        }
        text.push('\n');
    }
    print_stdout(&text)
}

/// Prints `value` as one line of JSON on stdout.
pub(crate) fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    let mut text = serde_json::to_string(value).context("failed to encode the result as JSON")?;
    text.push('\n');
    print_stdout(&text)
}

/// Writes `text` to stdout. A reader that went away (`| head`) is not an error.
pub(crate) fn print_stdout(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::Error::new(error).context("failed to write to stdout"))
        }
        _ => Ok(()),
    }
}

/// Prints an informational message on stderr, prefixed with `ken: `.
pub(crate) fn note(message: &str) {
    let _ = writeln!(std::io::stderr().lock(), "ken: {message}");
}

/// Returns the width of the longest name, for aligning `name  url` lines.
pub(crate) fn name_width<'a>(names: impl IntoIterator<Item = &'a str>) -> usize {
    names
        .into_iter()
        .map(|n| n.chars().count())
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duration_uses_largest_units() {
        assert_eq!(duration(Duration::from_millis(1234)), "1.2s");
        assert_eq!(duration(Duration::from_secs(123)), "2m03s");
        assert_eq!(duration(Duration::from_secs(3900)), "1h05m");
    }

    #[test]
    fn age_rounds_down_to_whole_units() {
        assert_eq!(age(Some(100), 145), "45s");
        assert_eq!(age(Some(0), 7200), "2h");
        assert_eq!(age(Some(0), 3 * 86_400 + 5), "3d");
        assert_eq!(age(None, 10), "-");
        assert_eq!(age(Some(20), 10), "0s");
    }
}
