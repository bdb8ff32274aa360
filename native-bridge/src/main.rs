//! `kathon-bridge`: the command line of the Kathon Sync bridge.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kathon_bridge::{Config, DEFAULT_LISTEN};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

#[derive(Parser, Debug)]
#[command(name = "kathon-bridge", version, about = "Serverless LAN sync of browser state: the bridge")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the bridge until Ctrl-C or SIGTERM.
    Run {
        /// Loopback address for browsers on this machine.
        #[arg(long, default_value = DEFAULT_LISTEN)]
        listen: SocketAddr,
        /// A name for this machine, shown on the user's other devices.
        #[arg(long)]
        name: Option<String>,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kathon-bridge: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kathon-bridge: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Run { listen, name } => {
            let listener = TcpListener::bind(listen).await.map_err(|e| format!("cannot listen on {listen}: {e}"))?;
            let bound = listener.local_addr().map_err(|e| e.to_string())?;
            let config = Config { machine_name: name.unwrap_or_else(default_machine_name) };
            println!("kathon-bridge {} running", env!("CARGO_PKG_VERSION"));
            println!("  machine name: {}", config.machine_name);
            println!("  status:       http://{bound}/status");
            kathon_bridge::run(listener, config, shutdown_signal()).await.map_err(|e| e.to_string())?;
            println!("kathon-bridge stopped");
            Ok(())
        }
    }
}

fn default_machine_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "this machine".to_owned())
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
