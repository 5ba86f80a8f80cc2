//! The `ken` command: gives every coding agent its own disposable sandbox on a local
//! Docker engine or on Modal, optionally on the team's tailnet. It is the reference user of the `ken-core` library: each command is
//! a thin layer over `ken_core::orchestrator::Orchestrator`.

mod commands;
mod context;
mod exit;
mod network;
mod output;
mod progress;
mod signal;
mod stream;
mod turn;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::{ArgAction, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::context::ProviderKind;

/// The exit statuses a script can rely on, shown at the end of `ken --help`.
const EXIT_STATUS_HELP: &str = "\
Exit status:
  0    success
  1    runtime failure (a launch failed, the engine is unreachable)
  2    invalid input (manifest, sandbox name, command-line usage)
  3    not found (sandbox, service log)
  4    already exists (sandbox name taken)
  5    `ken prompt`/`ken attach`: the agent's turn failed (agent or model error)
  6    `ken prompt`/`ken attach`: the turn was aborted (from the web UI, say)
  130  interrupted by Ctrl-C (143 for SIGTERM); `ken prompt` aborts the turn first
`ken exec` exits with the command's own exit code instead: 124 when --timeout
passed and 137 when the command was killed.";

#[derive(Debug, Parser)]
#[command(
    name = "ken",
    version,
    about = "Disposable sandboxes for coding agents, on a local Docker engine or on Modal",
    after_help = EXIT_STATUS_HELP
)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,

    #[command(subcommand)]
    command: Command,
}

/// Options every command accepts.
#[derive(Debug, clap::Args)]
pub(crate) struct GlobalArgs {
    /// Log to stderr: -v for info, -vv for debug (RUST_LOG, when set, takes precedence).
    #[arg(short, long, action = ArgAction::Count, global = true)]
    pub(crate) verbose: u8,

    /// The sandbox provider to use.
    #[arg(long, value_enum, default_value_t = ProviderKind::Docker, env = "KEN_PROVIDER", global = true)]
    pub(crate) provider: ProviderKind,

    /// Owner written into the labels of new sandboxes and selected by `rm --all`
    /// [default: $USER, else the name of the current uid].
    #[arg(long, env = "KEN_OWNER", global = true, value_parser = parse_owner)]
    pub(crate) owner: Option<String>,
}

impl GlobalArgs {
    /// Returns true when tracing logs go to stderr, so that progress display must not
    /// redraw lines that a log line could interleave with.
    pub(crate) fn logs_to_stderr(&self) -> bool {
        self.verbose > 0 || std::env::var_os("RUST_LOG").is_some()
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Launch a new sandbox from a ken.toml manifest and wait until it is ready.
    New(commands::new::Args),
    /// List Ken's sandboxes with their state, readiness and URLs.
    List(commands::list::Args),
    /// Run a command inside a sandbox, waiting for it to become ready first.
    Exec(commands::exec::Args),
    /// Print the logs of a sandbox's startup steps and services.
    Logs(commands::logs::Args),
    /// Print the URLs of a sandbox's exposed ports.
    Urls(commands::urls::Args),
    /// Send a prompt to a sandbox's agent and show its progress until the turn ends.
    Prompt(commands::prompt::Args),
    /// Follow the events of an agent session that is running in a sandbox.
    Attach(commands::attach::Args),
    /// Remove sandboxes and everything made for them.
    Rm(commands::rm::Args),
    /// Remove expired and abandoned sandboxes and resources left behind by them.
    Gc(commands::gc::Args),
    /// Show, check or apply Ken's section of the Tailscale policy file.
    Policy(commands::policy::Args),
}

impl Command {
    /// Returns true when the command was asked for JSON output, so that errors are
    /// reported as JSON too.
    fn json(&self) -> bool {
        match self {
            Command::New(args) => args.json,
            Command::List(args) => args.json,
            Command::Urls(args) => args.json,
            Command::Rm(args) => args.json,
            Command::Gc(args) => args.json,
            Command::Prompt(args) => args.json,
            Command::Attach(args) => args.json,
            Command::Exec(_) | Command::Logs(_) | Command::Policy(_) => false,
        }
    }
}

fn parse_owner(value: &str) -> Result<String, String> {
    if value.trim().is_empty() {
        return Err("the owner is empty; pass a user name such as `alice`".to_owned());
    }
    Ok(value.to_owned())
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => None,
        1 => Some("info"),
        2 => Some("info,ken=debug,ken_core=debug,ken_provider_docker=debug"),
        3 => Some("debug"),
        _ => Some("trace"),
    };
    let filter = if std::env::var_os("RUST_LOG").is_some() {
        EnvFilter::from_default_env()
    } else if let Some(directives) = default {
        EnvFilter::new(directives)
    } else {
        return;
    };
    // bollard logs request bodies at debug level, and a container's create request
    // carries its secret environment, so its logs stop at info whatever filter the user sets.
    let mut filter = filter;
    for quiet in [
        "bollard=info",
        "hyper=info",
        "hyper_util=info",
        "reqwest=info",
    ] {
        filter = filter.add_directive(quiet.parse().expect("valid directive"));
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

async fn run(cli: Cli) -> anyhow::Result<u8> {
    let global = &cli.global;
    match cli.command {
        Command::New(args) => commands::new::run(args, global).await,
        Command::List(args) => commands::list::run(args, global).await,
        Command::Exec(args) => commands::exec::run(args, global).await,
        Command::Logs(args) => commands::logs::run(args, global).await,
        Command::Urls(args) => commands::urls::run(args, global).await,
        Command::Rm(args) => commands::rm::run(args, global).await,
        Command::Gc(args) => commands::gc::run(args, global).await,
        Command::Policy(args) => commands::policy::run(args).await,
        Command::Prompt(args) => commands::prompt::run(args, global).await,
        Command::Attach(args) => commands::attach::run(args, global).await,
    }
}

/// Parses the command line. Usage errors exit with status 2 (help and version with
/// 0), and `ken exec` with its command not after `--` gets a hint.
fn parse_args() -> Result<Cli, ExitCode> {
    let error = match Cli::try_parse() {
        Ok(cli) => return Ok(cli),
        Err(error) => error,
    };
    let _ = error.print();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let exec_without_separator =
        args.iter().any(|arg| arg == "exec") && !args.iter().any(|arg| arg == "--");
    if error.kind() == ErrorKind::UnknownArgument && exec_without_separator {
        eprintln!("\ntip: the command goes after `--`, as in `ken exec NAME -- ls -la`");
    }
    Err(ExitCode::from(
        u8::try_from(error.exit_code()).unwrap_or(exit::INVALID_INPUT),
    ))
}

fn main() -> ExitCode {
    let cli = match parse_args() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    init_tracing(cli.global.verbose);
    let json = cli.command.json();

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            let error = anyhow::Error::new(error).context("failed to start the Tokio runtime");
            exit::report(&error, json);
            return ExitCode::from(exit::FAILURE);
        }
    };
    let result = runtime.block_on(run(cli));
    // `ken exec` may leave a blocking read of standard input behind. That read cannot
    // be cancelled, and waiting for it would hang until the user presses Enter.
    runtime.shutdown_timeout(Duration::from_millis(100));

    let code = match result {
        Ok(code) => code,
        Err(error) => {
            exit::report(&error, json);
            exit::code_for(&error)
        }
    };
    ExitCode::from(code)
}
