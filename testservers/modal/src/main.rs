//! Runs a Modal test server until Ctrl-C, for manual `ken new --provider modal`.

use ken_testserver_modal::{ModalTestServer, ModalTestServerConfig};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();

    let server = match ModalTestServer::start(ModalTestServerConfig::new()).await {
        Ok(server) => server,
        Err(error) => {
            eprintln!("ken-testserver-modal: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    println!("Modal test server listening on {}", server.url());
    println!("Export these variables to use it:");
    for (name, value) in server.client_env() {
        println!("export {name}={value}");
    }
    println!("Press Ctrl-C to stop it and remove its sandboxes.");

    if let Err(error) = tokio::signal::ctrl_c().await {
        eprintln!("ken-testserver-modal: waiting for Ctrl-C failed: {error}");
    }
    server.shutdown().await;
    std::process::ExitCode::SUCCESS
}
