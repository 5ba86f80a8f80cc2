//! A client for the HTTP API of `opencode serve`, as of opencode-ai 1.18.33.

use std::time::Duration;

use futures::stream::BoxStream;
use ken_core::sandbox::Credentials;
use ken_core::{Error, Result};
use serde_json::{json, Value};
use url::Url;

/// The time limit of every request except the event stream.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The maximum time the event stream may stay silent. The server sends a heartbeat
/// every 10 s, so a silent minute means the connection is gone, even when no TCP
/// FIN or reset arrived.
const EVENT_SILENCE_LIMIT: Duration = Duration::from_secs(60);

/// The service name in errors.
const SERVICE: &str = "opencode";

/// A client for one OpenCode server, authenticated with HTTP Basic auth.
#[derive(Clone)]
pub struct OpenCodeClient {
    http: reqwest::Client,
    base: Url,
    credentials: Credentials,
}

impl std::fmt::Debug for OpenCodeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenCodeClient")
            .field("base", &self.base.as_str())
            .field("username", &self.credentials.username)
            .finish_non_exhaustive()
    }
}

impl OpenCodeClient {
    /// Creates a client for the server at `base` (for example an endpoint URL).
    pub fn new(base: Url, credentials: Credentials) -> Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| Error::backend_with(SERVICE, "failed to create an HTTP client", e))?;
        Ok(OpenCodeClient { http, base, credentials })
    }

    /// Returns the server's base URL.
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    /// Returns `GET /global/health`, for example `{"healthy": true, "version": "1.18.33"}`.
    ///
    /// `timeout` bounds the whole request: the server can accept a connection and
    /// never respond while it is still starting.
    pub async fn health(&self, timeout: Duration) -> Result<Value> {
        self.send(reqwest::Method::GET, "/global/health", None, timeout).await
    }

    /// Creates a session with `title` and returns it: `{id, directory, title, ...}`.
    ///
    /// A title saves the completion that OpenCode would otherwise spend naming it.
    pub async fn create_session(&self, title: &str) -> Result<Value> {
        let session = self
            .send(reqwest::Method::POST, "/session", Some(json!({ "title": title })), REQUEST_TIMEOUT)
            .await?;
        if session["id"].as_str().is_none() {
            return Err(Error::backend(SERVICE, format!("POST /session returned no session id: {session}")));
        }
        Ok(session)
    }

    /// Returns the session `id` (`GET /session/{id}`); fails with
    /// [`Error::NotFound`] when it does not exist.
    pub async fn session(&self, id: &str) -> Result<Value> {
        self.send(reqwest::Method::GET, &format!("/session/{}", segment(id)), None, REQUEST_TIMEOUT)
            .await
    }

    /// Sends `text` to the session without waiting for the reply
    /// (`POST /session/{id}/prompt_async`).
    pub async fn prompt_async(&self, session: &str, text: &str) -> Result<()> {
        let body = json!({ "parts": [{ "type": "text", "text": text }] });
        self.send(
            reqwest::Method::POST,
            &format!("/session/{}/prompt_async", segment(session)),
            Some(body),
            REQUEST_TIMEOUT,
        )
        .await
        .map(drop)
    }

    /// Aborts the running turn of the session (`POST /session/{id}/abort`).
    pub async fn abort(&self, session: &str) -> Result<()> {
        self.send(
            reqwest::Method::POST,
            &format!("/session/{}/abort", segment(session)),
            None,
            REQUEST_TIMEOUT,
        )
        .await
        .map(drop)
    }

    /// Returns the session's messages (`GET /session/{id}/message`), each
    /// `{info, parts}`, oldest first.
    pub async fn messages(&self, session: &str) -> Result<Vec<Value>> {
        let value = self
            .send(
                reqwest::Method::GET,
                &format!("/session/{}/message", segment(session)),
                None,
                REQUEST_TIMEOUT,
            )
            .await?;
        match value {
            Value::Array(messages) => Ok(messages),
            other => Err(Error::backend(SERVICE, format!("GET /session/{session}/message returned {other}, not a list"))),
        }
    }

    /// Opens the project's event feed (`GET /event`) and returns its events as JSON
    /// values, `{id, type, properties}` each, starting with `server.connected`.
    ///
    /// The call returns once the server has sent the response headers, so events
    /// caused by requests made after it are in the stream. It fails when the headers
    /// take longer than the request time limit of 30 s. The stream ends with an error
    /// when the connection breaks or stays silent for a minute.
    pub async fn events(&self) -> Result<BoxStream<'static, Result<Value>>> {
        let url = self.url("/event")?;
        let request = self
            .http
            .get(url)
            .basic_auth(&self.credentials.username, Some(self.credentials.password.expose()))
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .send();
        // `RequestBuilder::timeout` would also cut the endless body, so only the wait
        // for the headers is bounded here.
        let response = tokio::time::timeout(REQUEST_TIMEOUT, request)
            .await
            .map_err(|_| Error::Timeout {
                operation: format!("waiting for the response headers of GET {}event", self.base),
                after: REQUEST_TIMEOUT,
            })?
            .map_err(|e| request_error("GET /event", e))?;
        let response = check_status("GET /event", response).await?;
        let state = (response, SseDecoder::default(), std::collections::VecDeque::<String>::new());
        let stream = futures::stream::unfold(Some(state), |state| async move {
            let (mut response, mut decoder, mut ready) = state?;
            loop {
                if let Some(data) = ready.pop_front() {
                    let event = serde_json::from_str::<Value>(&data).map_err(|e| {
                        Error::backend_with(SERVICE, format!("the event stream sent invalid JSON: {data}"), e)
                    });
                    return Some((event, Some((response, decoder, ready))));
                }
                let Ok(chunk) = tokio::time::timeout(EVENT_SILENCE_LIMIT, response.chunk()).await else {
                    let error = Error::Timeout {
                        operation: "waiting for the next event or heartbeat of GET /event".to_owned(),
                        after: EVENT_SILENCE_LIMIT,
                    };
                    return Some((Err(error), None));
                };
                match chunk {
                    Ok(Some(bytes)) => ready.extend(decoder.push(&bytes)),
                    Ok(None) => {
                        let error = Error::backend(SERVICE, "the event stream ended: the server stopped or the connection broke");
                        return Some((Err(error), None));
                    }
                    Err(e) => return Some((Err(request_error("reading GET /event", e)), None)),
                }
            }
        });
        Ok(Box::pin(stream))
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>, timeout: Duration) -> Result<Value> {
        let what = format!("{method} {path}");
        let mut request = self
            .http
            .request(method, self.url(path)?)
            .basic_auth(&self.credentials.username, Some(self.credentials.password.expose()))
            .timeout(timeout);
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.map_err(|e| request_error(&what, e))?;
        let response = check_status(&what, response).await?;
        let text = response.text().await.map_err(|e| request_error(&what, e))?;
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text)
            .map_err(|e| Error::backend_with(SERVICE, format!("{what} returned invalid JSON: {}", truncate(&text)), e))
    }

    fn url(&self, path: &str) -> Result<Url> {
        self.base
            .join(path.trim_start_matches('/'))
            .map_err(|e| Error::invalid("OpenCode URL", format!("{}{path}", self.base), e.to_string()))
    }
}

/// Percent-encodes an id for use as one path segment.
fn segment(id: &str) -> String {
    id.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn request_error(what: &str, error: reqwest::Error) -> Error {
    let retryable = error.is_timeout() || error.is_connect();
    let message = if error.is_timeout() {
        format!("{what} timed out")
    } else if error.is_connect() {
        format!("{what} failed to connect; is the sandbox running and its agent port published?")
    } else {
        format!("{what} failed")
    };
    Error::Backend {
        service: SERVICE.to_owned(),
        message,
        source: Some(Box::new(error)),
        retryable,
    }
}

async fn check_status(what: &str, response: reqwest::Response) -> Result<reqwest::Response> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body = response.text().await.unwrap_or_default();
    Err(match status.as_u16() {
        401 | 403 => Error::Unauthenticated {
            service: SERVICE.to_owned(),
            message: format!("{what} returned {status}; the server password is wrong or missing"),
        },
        404 => Error::NotFound {
            kind: "OpenCode resource",
            name: format!("{what}: {}", truncate(&body)),
        },
        _ => Error::Backend {
            service: SERVICE.to_owned(),
            message: format!("{what} returned {status}: {}", truncate(&body)),
            source: None,
            retryable: status.is_server_error(),
        },
    })
}

fn truncate(text: &str) -> String {
    const MAX: usize = 500;
    if text.len() <= MAX {
        return text.to_owned();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

/// Splits a `text/event-stream` body into the data of its events.
///
/// OpenCode sends only `data:` lines and blank lines. Other fields and comments are
/// skipped, and the lines of an event with several `data:` lines are joined with
/// `\n`, as the SSE standard requires.
#[derive(Debug, Default)]
pub struct SseDecoder {
    buffer: Vec<u8>,
    data: Option<String>,
}

impl SseDecoder {
    /// Adds received bytes and returns the data of every event they completed.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.buffer.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(newline) = self.buffer.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buffer.drain(..=newline).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if let Some(data) = self.data.take() {
                    events.push(data);
                }
            } else if let Some(value) = line.strip_prefix("data:") {
                let value = value.strip_prefix(' ').unwrap_or(value);
                match &mut self.data {
                    Some(data) => {
                        data.push('\n');
                        data.push_str(value);
                    }
                    None => self.data = Some(value.to_owned()),
                }
            }
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoder_joins_split_chunks() {
        let mut decoder = SseDecoder::default();
        assert!(decoder.push(b"data: {\"type\":").is_empty());
        assert!(decoder.push(b"\"a\"}\n").is_empty());
        let events = decoder.push(b"\ndata: {\"type\":\"b\"}\r\n\r\n: comment\nevent: x\n\n");
        assert_eq!(events, vec![r#"{"type":"a"}"#.to_owned(), r#"{"type":"b"}"#.to_owned()]);
    }

    #[test]
    fn decoder_joins_multiline_data() {
        let mut decoder = SseDecoder::default();
        assert_eq!(decoder.push(b"data:one\ndata: two\n\n"), vec!["one\ntwo".to_owned()]);
    }

    #[test]
    fn segment_encodes_specials() {
        assert_eq!(segment("ses_1AbC"), "ses_1AbC");
        assert_eq!(segment("a/b c"), "a%2Fb%20c");
    }
}
