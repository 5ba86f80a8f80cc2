//! The progress display for a person at a terminal: indicatif spinners.

use std::collections::VecDeque;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use ken_core::{LaunchEvent, Phase};

use super::{first_line, write_stderr, View};
use crate::output;

/// Lines of build output kept on screen under the running phase.
const OUTPUT_LINES: usize = 5;
/// Width of the phase column; "repository" is the longest phase name.
const PHASE_WIDTH: usize = 10;
/// Minimum width of the step column.
const STEP_WIDTH: usize = 16;
/// How often spinners advance.
const TICK: Duration = Duration::from_millis(100);

/// Spinners on a terminal. Only running work is drawn as a spinner; a finished phase
/// is printed once as a permanent line above the spinners, followed by its steps.
pub(crate) struct TerminalView {
    multi: MultiProgress,
    color: bool,
    phase: Option<RunningPhase>,
    teardown: Option<ProgressBar>,
}

struct RunningPhase {
    phase: Phase,
    bar: ProgressBar,
    steps: Vec<StepLine>,
    output_bars: Vec<ProgressBar>,
    output_lines: VecDeque<String>,
}

struct StepLine {
    name: String,
    bar: ProgressBar,
    duration: Option<Duration>,
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|error| {
        tracing::warn!(%error, template, "invalid progress template; using the default spinner");
        ProgressStyle::default_spinner()
    })
}

/// Makes `text` printable on one line: tabs become spaces, and other control
/// characters (carriage returns, terminal escapes) are dropped.
fn printable(text: &str) -> String {
    text.trim_end()
        .chars()
        .map(|c| if c == '\t' { ' ' } else { c })
        .filter(|c| !c.is_control())
        .collect()
}

impl TerminalView {
    pub(crate) fn new() -> Self {
        TerminalView {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            color: std::env::var_os("NO_COLOR").is_none(),
            phase: None,
            teardown: None,
        }
    }

    /// Wraps `text` in the ANSI color `code` unless NO_COLOR is set.
    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    fn println(&self, line: &str) {
        if self.multi.println(line).is_err() {
            write_stderr(line);
        }
    }

    fn start_phase(&mut self, phase: Phase) {
        self.close_phase(None);
        let bar = self.multi.add(ProgressBar::new_spinner());
        bar.set_style(style(
            "{spinner:.cyan} {prefix} {elapsed:>6}  {wide_msg:.dim}",
        ));
        bar.set_prefix(format!("{:<PHASE_WIDTH$}", phase.as_str()));
        bar.enable_steady_tick(TICK);
        self.phase = Some(RunningPhase {
            phase,
            bar,
            steps: Vec::new(),
            output_bars: Vec::new(),
            output_lines: VecDeque::new(),
        });
    }

    /// Removes the running phase's spinners and prints `headline` and the phase's
    /// step lines in their place. Without a headline the phase is shown as
    /// interrupted.
    fn close_phase(&mut self, headline: Option<String>) {
        let Some(running) = self.phase.take() else {
            if let Some(headline) = headline {
                self.println(&headline);
            }
            return;
        };
        for bar in running
            .output_bars
            .iter()
            .chain(running.steps.iter().map(|s| &s.bar))
        {
            bar.finish_and_clear();
            self.multi.remove(bar);
        }
        let elapsed = running.bar.elapsed();
        running.bar.finish_and_clear();
        self.multi.remove(&running.bar);

        let headline = headline.unwrap_or_else(|| {
            format!(
                "{} {:<PHASE_WIDTH$} {:>6}  interrupted",
                self.paint("31", "✗"),
                running.phase.as_str(),
                output::duration(elapsed)
            )
        });
        self.println(&headline);
        for step in &running.steps {
            let line = match step.duration {
                Some(duration) => format!(
                    "  {} {:<STEP_WIDTH$} {:>6}",
                    self.paint("32", "✓"),
                    step.name,
                    output::duration(duration)
                ),
                None => {
                    let elapsed = output::duration(step.bar.elapsed());
                    self.paint(
                        "2",
                        &format!("  · {:<STEP_WIDTH$} {elapsed:>6}  not finished", step.name),
                    )
                }
            };
            self.println(&line);
        }
    }

    fn start_step(&mut self, step: &str) {
        let Some(running) = &mut self.phase else {
            return;
        };
        let after = running
            .steps
            .last()
            .map_or(&running.bar, |s| &s.bar)
            .clone();
        let bar = self.multi.insert_after(&after, ProgressBar::new_spinner());
        bar.set_style(style("  {spinner:.cyan} {msg} {elapsed:>6}"));
        bar.set_message(format!("{step:<STEP_WIDTH$}"));
        bar.enable_steady_tick(TICK);
        running.steps.push(StepLine {
            name: step.to_owned(),
            bar,
            duration: None,
        });
    }

    fn finish_step(&mut self, step: &str, duration: Duration) {
        let check = self.paint("32", "✓");
        let Some(running) = &mut self.phase else {
            self.println(&format!(
                "  {check} {step:<STEP_WIDTH$} {:>6}",
                output::duration(duration)
            ));
            return;
        };
        match running.steps.iter_mut().find(|s| s.name == step) {
            Some(line) => {
                line.duration = Some(duration);
                line.bar.set_style(style("  {msg}"));
                line.bar.finish_with_message(format!(
                    "{check} {step:<STEP_WIDTH$} {:>6}",
                    output::duration(duration)
                ));
            }
            None => {
                // A step that finished without a start event still gets its line.
                let after = running
                    .steps
                    .last()
                    .map_or(&running.bar, |s| &s.bar)
                    .clone();
                let bar = self.multi.insert_after(&after, ProgressBar::new_spinner());
                bar.set_style(style("  {msg}"));
                bar.finish_with_message(format!(
                    "{check} {step:<STEP_WIDTH$} {:>6}",
                    output::duration(duration)
                ));
                running.steps.push(StepLine {
                    name: step.to_owned(),
                    bar,
                    duration: Some(duration),
                });
            }
        }
    }

    /// Shows `line` dimmed under the running phase, keeping the last few lines.
    fn output_line(&mut self, line: &str) {
        let Some(running) = &mut self.phase else {
            return;
        };
        running.output_lines.push_back(printable(line));
        if running.output_lines.len() > OUTPUT_LINES {
            running.output_lines.pop_front();
        }
        while running.output_bars.len() < running.output_lines.len() {
            let after = running
                .output_bars
                .last()
                .or(running.steps.last().map(|s| &s.bar))
                .unwrap_or(&running.bar)
                .clone();
            let bar = self.multi.insert_after(&after, ProgressBar::new_spinner());
            bar.set_style(style("    {wide_msg:.dim}"));
            running.output_bars.push(bar);
        }
        for (bar, text) in running.output_bars.iter().zip(&running.output_lines) {
            bar.set_message(text.clone());
        }
    }

    fn phase_line(
        &self,
        mark: &str,
        color: &str,
        phase: Phase,
        duration: Option<Duration>,
        detail: &str,
    ) -> String {
        let duration = duration.map(output::duration).unwrap_or_default();
        let text = format!("{:<PHASE_WIDTH$} {duration:>6}  {detail}", phase.as_str());
        format!("{} {}", self.paint(color, mark), text.trim_end())
    }
}

impl View for TerminalView {
    fn event(&mut self, event: &LaunchEvent) {
        match event {
            LaunchEvent::Started { sandbox } => {
                let line = format!("launching sandbox {}", self.paint("1", sandbox));
                self.println(&line);
            }
            LaunchEvent::PhaseStarted { phase } => self.start_phase(*phase),
            LaunchEvent::PhaseFinished {
                phase,
                duration,
                detail,
            } => {
                let line = self.phase_line(
                    "✓",
                    "32",
                    *phase,
                    Some(*duration),
                    detail.as_deref().unwrap_or_default(),
                );
                self.close_phase(Some(line));
            }
            LaunchEvent::PhaseSkipped { phase } => {
                let line = self.paint(
                    "2",
                    &format!("- {:<PHASE_WIDTH$} {:>6}  skipped", phase.as_str(), ""),
                );
                self.close_phase(Some(line));
            }
            LaunchEvent::PhaseFailed {
                phase,
                duration,
                error,
            } => {
                let detail = format!("failed: {}", first_line(error));
                let line = self.phase_line("✗", "31", *phase, Some(*duration), &detail);
                self.close_phase(Some(line));
            }
            LaunchEvent::StepStarted { step } => self.start_step(step),
            LaunchEvent::StepFinished { step, duration } => self.finish_step(step, *duration),
            LaunchEvent::Output { line, .. } => self.output_line(line),
            LaunchEvent::TeardownStarted => {
                let bar = self.multi.add(ProgressBar::new_spinner());
                bar.set_style(style("{spinner:.yellow} {msg} {elapsed:>6}"));
                bar.set_message("removing what the launch made");
                bar.enable_steady_tick(TICK);
                self.teardown = Some(bar);
            }
            LaunchEvent::TeardownFinished { duration } => {
                if let Some(bar) = self.teardown.take() {
                    bar.finish_and_clear();
                    self.multi.remove(&bar);
                }
                let line = format!(
                    "{} removed what the launch made in {}",
                    self.paint("33", "✓"),
                    output::duration(*duration)
                );
                self.println(&line);
            }
            _ => {}
        }
    }

    fn note(&mut self, message: &str) {
        self.println(message);
    }

    fn interrupt(&mut self) {
        self.close_phase(None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_drops_control_characters() {
        assert_eq!(printable("a\tb\r\x1b[0m\n"), "a b[0m");
    }
}
