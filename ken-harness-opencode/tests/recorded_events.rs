//! The event mapper against event feeds recorded from a real `opencode serve`
//! (opencode-ai 1.18.33) by `opencode_docker` with `KEN_RECORD_EVENTS` set.

use ken_core::harness::{AgentEvent, ToolStatus};
use ken_harness_opencode::{turn_outcome, EventMapper, Mapped, TurnOutcome};
use serde_json::Value;

const PROJECT_DIR: &str = "/workspace/repo/examples/demo-app";

struct Recording {
    events: Vec<Value>,
    messages: Vec<Value>,
}

fn load(name: &str) -> Recording {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let feed = std::fs::read_to_string(dir.join(format!("events-{name}.jsonl"))).unwrap();
    let messages = std::fs::read_to_string(dir.join(format!("events-{name}.messages.json"))).unwrap();
    Recording {
        events: feed.lines().map(|line| serde_json::from_str(line).unwrap()).collect(),
        messages: serde_json::from_str(&messages).unwrap(),
    }
}

/// Returns the id of the session the recording's turn ran in.
fn session_of(recording: &Recording) -> String {
    recording
        .events
        .iter()
        .find(|e| e["type"] == "session.status")
        .and_then(|e| e["properties"]["sessionID"].as_str())
        .expect("a session.status event")
        .to_owned()
}

/// Maps the feed up to the first idle that follows activity, as the harness does.
fn map_turn(recording: &Recording) -> (Vec<AgentEvent>, bool) {
    let mut mapper = EventMapper::new(session_of(recording), PROJECT_DIR);
    let mut events = Vec::new();
    for event in &recording.events {
        for mapped in mapper.push(event) {
            match mapped {
                Mapped::Event(event) => events.push(event),
                Mapped::Idle if mapper.saw_activity() => return (events, true),
                _ => {}
            }
        }
    }
    (events, false)
}

#[test]
fn theme_pink_turn_maps_tools_edits_and_text() {
    let recording = load("theme-pink");
    let (events, idle) = map_turn(&recording);
    assert!(idle, "the recorded turn never became idle");

    let tool_calls: Vec<(&str, ToolStatus)> = events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::ToolCall { tool, status, .. } => Some((tool.as_str(), *status)),
            _ => None,
        })
        .collect();
    assert_eq!(
        tool_calls,
        [
            ("read", ToolStatus::Pending),
            ("read", ToolStatus::Running),
            ("read", ToolStatus::Completed),
            ("edit", ToolStatus::Pending),
            ("edit", ToolStatus::Running),
            ("edit", ToolStatus::Completed),
        ]
    );
    let edited: Vec<&AgentEvent> = events.iter().filter(|e| matches!(e, AgentEvent::FileEdited { .. })).collect();
    assert_eq!(edited, [&AgentEvent::FileEdited { path: "static/style.css".into() }]);
    let text: String = events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::Text { delta } => Some(delta.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(text, "I changed the theme color to pink.");
    assert_eq!(
        turn_outcome(&recording.messages),
        TurnOutcome::Ended(AgentEvent::Finished { text: Some("I changed the theme color to pink.".into()) })
    );
}

#[test]
fn edit_tool_titles_name_the_file() {
    let recording = load("theme-pink");
    let (events, _) = map_turn(&recording);
    let title = events.iter().find_map(|e| match e {
        AgentEvent::ToolCall { tool, status: ToolStatus::Completed, title, .. } if tool == "edit" => title.clone(),
        _ => None,
    });
    assert!(title.is_some_and(|t| t.contains("style.css")), "{events:#?}");
}

#[test]
fn provider_error_turn_fails_with_message() {
    let recording = load("provider-error");
    let (events, idle) = map_turn(&recording);
    assert!(idle);
    assert!(!events.iter().any(|e| e.is_terminal()), "{events:#?}");
    match turn_outcome(&recording.messages) {
        TurnOutcome::Ended(AgentEvent::Failed { message }) => {
            assert!(message.contains("scripted failure: the model is overloaded"), "{message}")
        }
        other => panic!("expected a failed turn, got {other:?}"),
    }
}

#[test]
fn aborted_turn_ends_aborted() {
    let recording = load("abort");
    let (events, idle) = map_turn(&recording);
    assert!(idle);
    assert!(events.iter().any(|e| matches!(e, AgentEvent::Text { .. })), "{events:#?}");
    assert_eq!(turn_outcome(&recording.messages), TurnOutcome::Ended(AgentEvent::Aborted));
}

#[test]
fn other_session_events_are_ignored() {
    let recording = load("theme-pink");
    let mut mapper = EventMapper::new("ses_not_this_one", PROJECT_DIR);
    let mapped: Vec<Mapped> = recording.events.iter().flat_map(|e| mapper.push(e)).collect();
    assert!(mapped.is_empty(), "{mapped:#?}");
}
