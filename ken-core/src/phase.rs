//! Launch phases and the progress events reported while a launch runs.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

/// One phase of a launch, in the order the orchestrator runs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Phase {
    /// Build or reuse the sandbox image.
    Image,
    /// Create and start the sandbox.
    Create,
    /// Put a fresh clone of the repository into the sandbox.
    Repository,
    /// Run the startup plan: steps and services with their readiness probes.
    Plan,
    /// Load seed data.
    Seed,
    /// Start the agent harness server.
    Harness,
    /// Attach the sandbox to the network and expose its ports.
    Network,
    /// Check the endpoints and mark the sandbox ready.
    Ready,
}

impl Phase {
    /// Every phase in launch order.
    pub const ALL: [Phase; 8] = [
        Phase::Image,
        Phase::Create,
        Phase::Repository,
        Phase::Plan,
        Phase::Seed,
        Phase::Harness,
        Phase::Network,
        Phase::Ready,
    ];

    /// Returns the phase's short name, as used in logs and `--json` output.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Image => "image",
            Phase::Create => "create",
            Phase::Repository => "repository",
            Phase::Plan => "plan",
            Phase::Seed => "seed",
            Phase::Harness => "harness",
            Phase::Network => "network",
            Phase::Ready => "ready",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something that happened during a launch, for progress display.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum LaunchEvent {
    /// The launch passed its checks and is about to make its first resource.
    Started {
        /// The sandbox's name, generated when none was given.
        sandbox: String,
    },
    /// A phase started.
    PhaseStarted {
        /// The phase.
        phase: Phase,
    },
    /// A phase finished successfully.
    PhaseFinished {
        /// The phase.
        phase: Phase,
        /// How long it took.
        #[serde(rename = "duration_ms", with = "duration_ms")]
        duration: Duration,
        /// A one-line summary, for example `cache hit` or `3 steps, 2 services`.
        detail: Option<String>,
    },
    /// A phase was skipped because nothing in the manifest requests it.
    PhaseSkipped {
        /// The phase.
        phase: Phase,
    },
    /// A phase failed; teardown follows.
    PhaseFailed {
        /// The phase.
        phase: Phase,
        /// How long it ran before failing.
        #[serde(rename = "duration_ms", with = "duration_ms")]
        duration: Duration,
        /// The error message.
        error: String,
    },
    /// A step or service of the startup plan started.
    StepStarted {
        /// Name of the step or service.
        step: String,
    },
    /// A step finished, or a service passed its readiness probe.
    StepFinished {
        /// Name of the step or service.
        step: String,
        /// How long it took.
        #[serde(rename = "duration_ms", with = "duration_ms")]
        duration: Duration,
    },
    /// A line of output, for example from the image build.
    Output {
        /// The phase producing it.
        phase: Phase,
        /// The line, without its newline.
        line: String,
    },
    /// Teardown of a failed or cancelled launch started.
    TeardownStarted,
    /// Teardown finished.
    TeardownFinished {
        /// How long it took.
        #[serde(rename = "duration_ms", with = "duration_ms")]
        duration: Duration,
    },
}

mod duration_ms {
    use std::time::Duration;

    pub(super) fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
}

/// A cheap, cloneable receiver for [`LaunchEvent`]s.
///
/// The default sink drops every event.
#[derive(Clone, Default)]
pub struct EventSink {
    callback: Option<Arc<dyn Fn(LaunchEvent) + Send + Sync>>,
}

impl EventSink {
    /// Creates a sink that calls `callback` for every event.
    ///
    /// The callback runs on the task that emits the event, so it must not block.
    pub fn new(callback: impl Fn(LaunchEvent) + Send + Sync + 'static) -> Self {
        EventSink {
            callback: Some(Arc::new(callback)),
        }
    }

    /// Creates a sink that drops every event.
    pub fn none() -> Self {
        EventSink::default()
    }

    /// Sends an event to the callback, if there is one.
    pub fn emit(&self, event: LaunchEvent) {
        if let Some(callback) = &self.callback {
            callback(event);
        }
    }

    /// Sends a line of output for `phase`.
    pub fn output(&self, phase: Phase, line: impl Into<String>) {
        self.emit(LaunchEvent::Output {
            phase,
            line: line.into(),
        });
    }
}

impl fmt::Debug for EventSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventSink")
            .field("active", &self.callback.is_some())
            .finish()
    }
}

/// A line splitter for a phase's output. It sends each line to an [`EventSink`]
/// and keeps the last [`PhaseLog::TAIL_LINES`] lines for error messages.
///
/// Providers feed it build output as it arrives, in pieces that may end in the
/// middle of a line.
pub struct PhaseLog<'a> {
    events: &'a EventSink,
    phase: Phase,
    partial: String,
    tail: VecDeque<String>,
}

impl<'a> PhaseLog<'a> {
    /// Maximum number of lines that [`tail`](Self::tail) returns.
    pub const TAIL_LINES: usize = 30;

    /// Creates a log that sends the lines of `phase` to `events`.
    pub fn new(events: &'a EventSink, phase: Phase) -> Self {
        PhaseLog {
            events,
            phase,
            partial: String::new(),
            tail: VecDeque::with_capacity(Self::TAIL_LINES),
        }
    }

    /// Adds output that may contain several lines or end in the middle of one.
    pub fn push(&mut self, text: &str) {
        self.partial.push_str(text);
        while let Some(newline) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=newline).collect();
            self.emit(line.trim_end_matches(['\n', '\r']).to_owned());
        }
    }

    /// Sends the last line when it had no newline.
    pub fn finish(&mut self) {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.emit(line.trim_end_matches('\r').to_owned());
        }
    }

    /// Returns the last lines, joined by newlines.
    pub fn tail(&self) -> String {
        self.tail.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    fn emit(&mut self, line: String) {
        if self.tail.len() == Self::TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(line.clone());
        self.events.output(self.phase, line);
    }
}

impl fmt::Debug for PhaseLog<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PhaseLog")
            .field("phase", &self.phase)
            .field("lines_kept", &self.tail.len())
            .finish_non_exhaustive()
    }
}
