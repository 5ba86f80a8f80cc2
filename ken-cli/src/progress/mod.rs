//! Progress display of a launch on stderr: a spinner per phase on a terminal, plain
//! lines in logs and pipes, and JSON lines with `--json`.

mod terminal;

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};

use ken_core::{EventSink, LaunchEvent};

use crate::output;
use terminal::TerminalView;

/// The form in which progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Style {
    /// Spinners redrawn in place, for a person at a terminal.
    Terminal,
    /// One line per event, for logs and pipes.
    Plain,
    /// One JSON object per event.
    Json,
}

impl Style {
    /// Picks the style: JSON when asked for, spinners when stderr is a terminal that
    /// no log line can interleave with, plain lines otherwise.
    pub(crate) fn detect(json: bool, logs_to_stderr: bool) -> Style {
        let dumb_terminal = std::env::var("TERM").is_ok_and(|term| term == "dumb");
        if json {
            Style::Json
        } else if std::io::stderr().is_terminal() && !logs_to_stderr && !dumb_terminal {
            Style::Terminal
        } else {
            Style::Plain
        }
    }
}

/// One way of showing progress.
pub(crate) trait View: Send {
    /// Shows a launch event.
    fn event(&mut self, event: &LaunchEvent);
    /// Shows a message below what was shown so far.
    fn note(&mut self, message: &str);
    /// Marks the running phase as interrupted.
    fn interrupt(&mut self);
}

/// The progress display of one launch. Events arrive from the launch task and, after
/// a cancellation, from the teardown task, so the view sits behind a mutex.
pub(crate) struct Progress {
    view: Mutex<Box<dyn View>>,
}

impl Progress {
    /// Creates a display in `style`.
    pub(crate) fn new(style: Style) -> Arc<Self> {
        let view: Box<dyn View> = match style {
            Style::Terminal => Box::new(TerminalView::new()),
            Style::Plain => Box::new(PlainView),
            Style::Json => Box::new(JsonView),
        };
        Arc::new(Progress {
            view: Mutex::new(view),
        })
    }

    /// Returns an event sink that shows every event it receives.
    pub(crate) fn sink(self: &Arc<Self>) -> EventSink {
        let progress = self.clone();
        EventSink::new(move |event| progress.with_view(|view| view.event(&event)))
    }

    /// Shows a message below the progress shown so far.
    pub(crate) fn note(&self, message: &str) {
        self.with_view(|view| view.note(message));
    }

    /// Marks the running phase as interrupted and stops its spinner.
    pub(crate) fn interrupt(&self) {
        self.with_view(|view| view.interrupt());
    }

    fn with_view(&self, show: impl FnOnce(&mut dyn View)) {
        // A panic while drawing leaves nothing inconsistent that matters for a display.
        let mut view = self
            .view
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        show(view.as_mut());
    }
}

/// Returns the first line of a possibly multi-line message, without the colon that
/// introduces the lines after it. The full message is printed when the command fails.
pub(crate) fn first_line(text: &str) -> &str {
    text.lines()
        .next()
        .unwrap_or_default()
        .trim_end_matches([':', ' '])
}

pub(crate) fn write_stderr(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// Plain lines such as `phase image finished in 1.2s: ken-image:abc (cache hit)`.
struct PlainView;

impl View for PlainView {
    fn event(&mut self, event: &LaunchEvent) {
        let line = match event {
            LaunchEvent::Started { sandbox } => format!("launching sandbox {sandbox}"),
            LaunchEvent::PhaseStarted { phase } => format!("phase {phase} started"),
            LaunchEvent::PhaseFinished {
                phase,
                duration,
                detail,
            } => match detail {
                Some(detail) => format!(
                    "phase {phase} finished in {}: {detail}",
                    output::duration(*duration)
                ),
                None => format!("phase {phase} finished in {}", output::duration(*duration)),
            },
            LaunchEvent::PhaseSkipped { phase } => format!("phase {phase} skipped"),
            LaunchEvent::PhaseFailed {
                phase,
                duration,
                error,
            } => {
                format!(
                    "phase {phase} failed after {}: {}",
                    output::duration(*duration),
                    first_line(error)
                )
            }
            LaunchEvent::StepStarted { step } => format!("step {step} started"),
            LaunchEvent::StepFinished { step, duration } => {
                format!("step {step} finished in {}", output::duration(*duration))
            }
            LaunchEvent::Output { phase, line } => format!("[{phase}] {line}"),
            LaunchEvent::TeardownStarted => "removing what the launch made".to_owned(),
            LaunchEvent::TeardownFinished { duration } => {
                format!(
                    "removed what the launch made in {}",
                    output::duration(*duration)
                )
            }
            _ => return,
        };
        write_stderr(&line);
    }

    fn note(&mut self, message: &str) {
        write_stderr(message);
    }

    fn interrupt(&mut self) {}
}

/// One JSON object per line, as `ken_core::LaunchEvent` serializes it (tagged by
/// `event`), plus `{"event":"note","message":...}` for messages.
struct JsonView;

impl View for JsonView {
    fn event(&mut self, event: &LaunchEvent) {
        match serde_json::to_string(event) {
            Ok(line) => write_stderr(&line),
            Err(error) => tracing::warn!(%error, ?event, "failed to encode a launch event as JSON"),
        }
    }

    fn note(&mut self, message: &str) {
        write_stderr(&serde_json::json!({ "event": "note", "message": message }).to_string());
    }

    fn interrupt(&mut self) {
        write_stderr(&serde_json::json!({ "event": "interrupted" }).to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_line_of_multiline_error() {
        assert_eq!(
            first_line("step failed; last lines of its log:\nboom"),
            "step failed; last lines of its log"
        );
        assert_eq!(first_line(""), "");
    }
}
