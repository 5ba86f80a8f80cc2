//! Launches the demo project through the library API, prints its endpoints and boot
//! report, fetches one page, and removes the sandbox again.
//!
//! Run with a Docker engine up (`scripts/docker-up.sh`):
//!
//! ```text
//! cargo run --example quickstart            # launch, show, remove
//! cargo run --example quickstart -- --keep  # leave it running; remove with `ken rm`
//! ```

use std::sync::Arc;

use ken::docker::DockerProvider;
use ken::orchestrator::LaunchOptions;
use ken::{EventSink, LaunchEvent, Manifest, Orchestrator};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let keep = std::env::args().any(|a| a == "--keep");
    let manifest_path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/demo-app/ken.toml");
    let manifest = Manifest::load(manifest_path)?;

    let provider = Arc::new(DockerProvider::connect().await?);
    let events = EventSink::new(|event| match event {
        LaunchEvent::PhaseFinished { phase, duration, detail } => {
            eprintln!("{phase:>10} {:>7.1?} {}", duration, detail.unwrap_or_default());
        }
        LaunchEvent::PhaseFailed { phase, error, .. } => eprintln!("{phase:>10} failed: {error}"),
        _ => {}
    });
    let orchestrator = Orchestrator::builder(provider).events(events).build();

    let launched = orchestrator.launch(&manifest, LaunchOptions::default()).await?;
    let name = launched.sandbox.name().clone();
    println!("sandbox {name} ready in {:.1?}", launched.report.total);
    for endpoint in &launched.endpoints {
        println!("  {:<6} {}", endpoint.name, endpoint.url);
    }

    if let Some(web) = launched.endpoints.iter().find(|e| e.name == "web") {
        let body = http_get(web.url.port().unwrap_or(80), "/api/tasks?limit=3").await?;
        println!("GET /api/tasks?limit=3 ->\n{body}");
    }

    if keep {
        println!("kept; remove it with `ken rm {name}`");
    } else {
        orchestrator.destroy(&name).await?;
        println!("removed {name}");
    }
    Ok(())
}

/// Fetches `path` from 127.0.0.1:`port` with a bare HTTP/1.0 request and returns the body.
async fn http_get(port: u16, path: &str) -> std::io::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or(response))
}
