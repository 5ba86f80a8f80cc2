//! Agent harnesses for Ken.
//!
//! - [`OpenCodeHarness`] runs an OpenCode server (`opencode serve`) inside the
//!   sandbox, publishes its web UI and API behind a per-sandbox password, and drives
//!   it over HTTP: prompts, the event feed mapped to Ken's
//!   [`AgentEvent`](ken_core::AgentEvent)s, and aborts.
//! - [`CommandHarness`] runs a one-shot agent CLI (Claude Code, Codex) inside the
//!   sandbox for each prompt and parses its JSON lines into the same events.
//!
//! Built against opencode-ai 1.18.33 ([`OPENCODE_VERSION`]); its HTTP API changes
//! between releases.

mod client;
mod command;
mod config;
mod events;
mod harness;
mod settings;

pub use client::{OpenCodeClient, SseDecoder};
pub use command::{CommandHarness, LineFormat, LineParser};
pub use config::opencode_config;
pub use events::{error_message, turn_outcome, EventMapper, Mapped, TurnOutcome};
pub use harness::{follow_turn, image_lines, log_path, state_dir, OpenCodeHarness};
pub use settings::{
    OpenCodeSettings, ProviderSettings, DEFAULT_PORT, DEFAULT_STARTUP_TIMEOUT, DEFAULT_USERNAME, OPENCODE_VERSION,
};
