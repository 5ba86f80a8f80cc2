//! `ken-testserver-tailscale`: runs the Tailscale test server until Ctrl-C, for manual
//! `ken new` runs against a stand-in tailnet.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;

use clap::Parser;
use ken_testserver_tailscale::{docker, ApiToken, OAuthClient, TestServer, TestServerConfig};

/// Runs a Tailscale API v2 test server on 127.0.0.1 and a control plane for the
/// stand-in `tailscale`/`tailscaled` scripts, printing the URLs and credentials.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Tailnet name the API accepts besides `-`.
    #[arg(long, default_value = "example.com")]
    tailnet: String,

    /// API access token to accept; a fresh `tskey-api-...` is printed when omitted.
    #[arg(long, env = "KEN_TEST_TS_API_TOKEN", hide_env_values = true)]
    api_token: Option<String>,

    /// OAuth client id to accept; generated when omitted.
    #[arg(long)]
    oauth_client_id: Option<String>,

    /// OAuth client secret to accept; generated when omitted.
    #[arg(long, env = "KEN_TEST_TS_OAUTH_SECRET", hide_env_values = true)]
    oauth_client_secret: Option<String>,

    /// Tags of the OAuth client, comma-separated.
    #[arg(long, default_value = "tag:ken-sandbox", value_delimiter = ',')]
    oauth_tags: Vec<String>,

    /// Control-plane bind address; 127.0.0.1 with a free port when omitted.
    #[arg(long, conflicts_with = "docker_network")]
    control_bind: Option<SocketAddr>,

    /// Bind the control plane to the gateway of this Docker network (for example
    /// ken-sandboxes), so sandboxes on it can reach the stand-in control server.
    #[arg(long)]
    docker_network: Option<String>,

    /// Port of the control plane when --docker-network is given (0: a free port).
    #[arg(long, default_value_t = 0)]
    control_port: u16,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();

    let control_bind = match (&args.docker_network, args.control_bind) {
        (Some(network), _) => match docker::network_gateway(network).await {
            Ok(gateway) => SocketAddr::new(gateway, args.control_port),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        },
        (None, Some(addr)) => addr,
        (None, None) => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
    };

    let mut client = OAuthClient::generate(
        &["auth_keys", "devices:core", "policy_file"],
        &args.oauth_tags.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    if let Some(id) = args.oauth_client_id {
        client.id = id;
    }
    if let Some(secret) = args.oauth_client_secret {
        client.secret = secret;
    }
    let token = args
        .api_token
        .map(|token| ApiToken { token })
        .unwrap_or_else(ApiToken::generate);
    let config = TestServerConfig {
        tailnet: args.tailnet,
        api_tokens: vec![token],
        oauth_clients: vec![client],
        control_bind: Some(control_bind),
        ..TestServerConfig::default()
    };

    let server = match TestServer::try_start(config).await {
        Ok(server) => server,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The credentials are printed on purpose: they exist only in this test server.
    println!("TAILSCALE_BASE_URL:  {}  (the API is under /api/v2)", server.api_url());
    println!("control URL:         {}  (KEN_TAILSCALE_CONTROL_URL or control_url)", server.control_url().unwrap_or_default());
    println!("tailnet:             {}", server.tailnet());
    println!("API access token:    {}", server.api_token());
    println!("OAuth client id:     {}", server.oauth_client().id);
    println!("OAuth client secret: {}", server.oauth_client().secret);
    println!("Press Ctrl-C to stop.");

    if let Err(e) = tokio::signal::ctrl_c().await {
        eprintln!("error: waiting for Ctrl-C failed: {e}");
    }
    server.shutdown().await;
    ExitCode::SUCCESS
}
