//! `kathon-bridge`: the command line of the Kathon Sync bridge.
//!
//! `run` starts the daemon. The other commands talk to a running bridge's native peer over its
//! loopback control API; when none is running they start one in-process on the same data
//! directory for the length of the command (with LAN discovery for the pairing commands).

// The answers are read as `serde_json::Value`, whose `value["key"]` gives `Null` for a missing
// key instead of panicking.
#![allow(clippy::indexing_slicing)]

use std::io::{IsTerminal, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use kathon_bridge::mcast::DiscoveryConfig;
use kathon_bridge::peer::{FileFormat, PeerConfig};
use kathon_bridge::{Config, DEFAULT_LISTEN, DEFAULT_RELAY_PORT, Listeners};
use serde::Deserialize;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

#[derive(Parser, Debug)]
#[command(name = "kathon-bridge", version, about = "Serverless LAN sync of browser state: the bridge and native peer")]
struct Cli {
    /// Where the native peer keeps its store (default: the platform's data directory).
    #[arg(long, global = true, env = "KATHON_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// A TOML configuration file (default: `config.toml` in the platform's config directory).
    #[arg(long, global = true, env = "KATHON_CONFIG")]
    config: Option<PathBuf>,
    /// Loopback address of the bridge (to run on, or to talk to).
    #[arg(long, global = true)]
    listen: Option<SocketAddr>,
    /// Print machine-readable JSON.
    #[arg(long, global = true)]
    json: bool,
    /// Fail if no bridge is running, instead of starting one for the command.
    #[arg(long, global = true)]
    no_autostart: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the bridge until Ctrl-C or SIGTERM.
    Run(RunArgs),
    /// This device's identity.
    #[command(subcommand)]
    Identity(IdentityCommand),
    /// Pair devices.
    #[command(subcommand)]
    Pair(PairCommand),
    /// The identity's devices.
    #[command(subcommand)]
    Devices(DevicesCommand),
    /// The native peer's state: sessions, last sync, counts.
    Status,
    /// Import bookmarks or passwords from a file.
    Import {
        /// The file's format.
        #[arg(long, value_enum)]
        format: Format,
        /// The file.
        file: PathBuf,
    },
    /// Export bookmarks or passwords.
    Export {
        /// The format.
        #[arg(long, value_enum)]
        format: Format,
        /// Where to write (default: standard output).
        file: Option<PathBuf>,
    },
    /// Bookmarks.
    #[command(subcommand)]
    Bookmarks(BookmarksCommand),
    /// A hash of the replica's whole JSON view (equal on replicas holding the same data).
    #[command(hide = true)]
    Digest,
}

#[derive(Args, Debug, Default)]
struct RunArgs {
    /// A name for this machine, shown on the user's other devices.
    #[arg(long)]
    name: Option<String>,
    /// Run without the native peer (signaling only).
    #[arg(long)]
    no_peer: bool,
    /// Stay off the LAN: no discovery, no relay between bridges.
    #[arg(long)]
    no_discovery: bool,
    /// Address of the LAN interface for discovery and the relay (default: the default route's).
    #[arg(long)]
    interface: Option<IpAddr>,
    /// Index of the LAN interface for IPv6 link-local discovery.
    #[arg(long)]
    interface_v6: Option<u32>,
    /// Port of the relay between bridges.
    #[arg(long)]
    relay_port: Option<u16>,
    /// Discovery's UDP port.
    #[arg(long)]
    discovery_port: Option<u16>,
    /// A web origin allowed to use signaling (repeatable; `*` for any).
    #[arg(long = "allow-origin")]
    allow_origins: Vec<String>,
    /// A folder of static files to serve at `/` (the demo page).
    #[arg(long)]
    site: Option<PathBuf>,
    /// Local UDP addresses for the native peer's WebRTC host candidates (repeatable).
    #[arg(long = "udp")]
    udp_addrs: Vec<String>,
}

#[derive(Subcommand, Debug)]
enum IdentityCommand {
    /// Create a new identity with this device as its first member.
    Create,
    /// Show the identity and this device.
    Show,
}

#[derive(Subcommand, Debug)]
enum PairCommand {
    /// Show a one-time pairing code for a new device, then confirm it when it asks.
    Code {
        /// Print the code and return without waiting for the device.
        #[arg(long)]
        no_wait: bool,
    },
    /// Join an identity with a code shown by one of its devices.
    Join {
        /// The pairing code (`KS1-…`).
        code: String,
        /// Return once the request is sent, without waiting to be enrolled.
        #[arg(long)]
        no_wait: bool,
    },
    /// Accept (or `--reject`) a pending pairing request by its connection number.
    Confirm {
        /// The request's connection number (see `status`).
        peer: u64,
        /// Refuse instead.
        #[arg(long)]
        reject: bool,
    },
}

#[derive(Subcommand, Debug)]
enum DevicesCommand {
    /// List the identity's devices.
    List,
    /// Revoke a lost device: its later writes are refused and secrets are re-sealed.
    Revoke {
        /// Its device ID.
        device: String,
    },
}

#[derive(Subcommand, Debug)]
enum BookmarksCommand {
    /// Add a bookmark to "Other bookmarks".
    Add {
        /// The URL.
        url: String,
        /// The title.
        #[arg(long, default_value = "")]
        title: String,
    },
    /// Search bookmarks by title or URL.
    Search {
        /// What to look for.
        query: String,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Format {
    /// Netscape bookmark HTML (every browser's bookmark export).
    BookmarksHtml,
    /// Chromium's `Bookmarks` JSON file.
    ChromiumJson,
    /// Passwords as CSV (Chrome, Firefox or Bitwarden columns).
    PasswordsCsv,
}

impl Format {
    fn wire(self) -> FileFormat {
        match self {
            Format::BookmarksHtml => FileFormat::BookmarksHtml,
            Format::ChromiumJson => FileFormat::ChromiumJson,
            Format::PasswordsCsv => FileFormat::PasswordsCsv,
        }
    }
    fn query(self) -> &'static str {
        match self {
            Format::BookmarksHtml => "bookmarks-html",
            Format::ChromiumJson => "chromium-json",
            Format::PasswordsCsv => "passwords-csv",
        }
    }
}

/// The configuration file: every field optional; flags win.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    name: Option<String>,
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    peer: Option<bool>,
    discovery: Option<bool>,
    interface: Option<IpAddr>,
    interface_v6: Option<u32>,
    relay_port: Option<u16>,
    discovery_port: Option<u16>,
    allow_origins: Option<Vec<String>>,
    site: Option<PathBuf>,
    udp_addrs: Option<Vec<String>>,
}

fn project_dirs() -> Option<directories::ProjectDirs> {
    directories::ProjectDirs::from("org", "Kathon", "kathon-sync")
}

fn load_file_config(cli: &Cli) -> Result<FileConfig, String> {
    let (path, explicit) = match &cli.config {
        Some(p) => (p.clone(), true),
        None => match project_dirs() {
            Some(d) => (d.config_dir().join("config.toml"), false),
            None => return Ok(FileConfig::default()),
        },
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => Ok(FileConfig::default()),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

fn data_dir(cli: &Cli, file: &FileConfig) -> PathBuf {
    cli.data_dir
        .clone()
        .or_else(|| file.data_dir.clone())
        .or_else(|| project_dirs().map(|d| d.data_dir().to_path_buf()))
        .unwrap_or_else(|| PathBuf::from("kathon-data"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The daemon logs its progress; a one-shot command only its warnings.
    let default_filter = if matches!(cli.command, Command::Run(_)) { "info,webrtc=warn,rtc=warn" } else { "warn" };
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter)))
        .with_writer(std::io::stderr)
        .init();
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
    let file = load_file_config(&cli)?;
    let listen: SocketAddr =
        cli.listen.or(file.listen).map_or_else(|| DEFAULT_LISTEN.parse().map_err(|e| format!("{e}")), Ok)?;
    match &cli.command {
        Command::Run(args) => run(&cli, &file, args, listen).await,
        _ => {
            let network = matches!(cli.command, Command::Pair(PairCommand::Code { .. } | PairCommand::Join { .. }));
            let bridge = Bridge::connect(&cli, &file, listen, network).await?;
            let result = command(&cli, &bridge).await;
            bridge.stop().await;
            result
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

/// Builds the daemon's configuration from flags, then the file, then defaults.
fn config(cli: &Cli, file: &FileConfig, args: &RunArgs) -> Config {
    let machine_name = args.name.clone().or_else(|| file.name.clone()).unwrap_or_else(default_machine_name);
    let discovery = (!args.no_discovery && file.discovery.unwrap_or(true)).then(|| {
        let mut d = DiscoveryConfig {
            interface_v4: match args.interface.or(file.interface) {
                Some(IpAddr::V4(v4)) => Some(v4),
                _ => None,
            },
            interface_v6: args.interface_v6.or(file.interface_v6),
            ..DiscoveryConfig::default()
        };
        if let Some(port) = args.discovery_port.or(file.discovery_port) {
            d.port = port;
        }
        d
    });
    let native_peer = (!args.no_peer && file.peer.unwrap_or(true)).then(|| {
        let mut peer = PeerConfig::new(data_dir(cli, file), machine_name.clone());
        let udp =
            if args.udp_addrs.is_empty() { file.udp_addrs.clone().unwrap_or_default() } else { args.udp_addrs.clone() };
        if !udp.is_empty() {
            peer.udp_addrs = udp;
        } else if let Some(ip) = args.interface.or(file.interface) {
            peer.udp_addrs = kathon_bridge::peer::udp_addrs_for(ip);
        }
        peer
    });
    let mut allowed_origins = file.allow_origins.clone().unwrap_or_default();
    allowed_origins.extend(args.allow_origins.iter().cloned());
    Config {
        machine_name,
        allowed_origins,
        discovery,
        native_peer,
        site_dir: args.site.clone().or_else(|| file.site.clone()),
    }
}

async fn bind_relay(interface: Option<IpAddr>, port: u16) -> Result<TcpListener, String> {
    let addr = SocketAddr::new(interface.unwrap_or(IpAddr::from([0, 0, 0, 0])), port);
    match TcpListener::bind(addr).await {
        Ok(l) => Ok(l),
        // Another bridge on this machine has the port: take any (discovery announces it).
        Err(_) => TcpListener::bind(SocketAddr::new(addr.ip(), 0))
            .await
            .map_err(|e| format!("cannot bind the relay on {addr}: {e}")),
    }
}

async fn run(cli: &Cli, file: &FileConfig, args: &RunArgs, listen: SocketAddr) -> Result<(), String> {
    let config = config(cli, file, args);
    let local = TcpListener::bind(listen).await.map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let bound = local.local_addr().map_err(|e| e.to_string())?;
    let relay = match &config.discovery {
        Some(_) => Some(
            bind_relay(
                args.interface.or(file.interface),
                args.relay_port.or(file.relay_port).unwrap_or(DEFAULT_RELAY_PORT),
            )
            .await?,
        ),
        None => None,
    };
    println!("kathon-bridge {} running", env!("CARGO_PKG_VERSION"));
    println!("  machine name: {}", config.machine_name);
    match &config.native_peer {
        Some(p) => println!("  native peer:  {}", p.data_dir.display()),
        None => println!("  native peer:  off"),
    }
    match (&config.discovery, &relay) {
        (Some(d), Some(r)) => println!(
            "  discovery:    {}:{} (relay on {})",
            d.group_v4,
            d.port,
            r.local_addr().map(|a| a.to_string()).unwrap_or_default()
        ),
        _ => println!("  discovery:    off"),
    }
    if config.site_dir.is_some() {
        println!("  page:         http://{bound}/");
    }
    println!("  signaling:    ws://{bound}/ws");
    println!("  status:       http://{bound}/status");
    let _ = std::io::stdout().flush();
    kathon_bridge::run(Listeners { local, relay }, config, shutdown_signal()).await.map_err(|e| e.to_string())?;
    println!("kathon-bridge stopped");
    Ok(())
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

// ------------------------------------------------------------------------------------------------
// Commands against a bridge's native peer
// ------------------------------------------------------------------------------------------------

/// A bridge this command started: how to stop it, and its task.
type OwnBridge = (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<Result<(), std::io::Error>>);

/// A bridge with a native peer: the one running, or one started for this command.
struct Bridge {
    base: String,
    client: reqwest::Client,
    own: Option<OwnBridge>,
}

impl Bridge {
    async fn connect(cli: &Cli, file: &FileConfig, listen: SocketAddr, network: bool) -> Result<Self, String> {
        let client = reqwest::Client::builder().no_proxy().build().map_err(|e| e.to_string())?;
        let base = format!("http://{listen}");
        if let Ok(r) = client.get(format!("{base}/status")).send().await
            && r.status().is_success()
        {
            return Ok(Self { base, client, own: None });
        }
        if cli.no_autostart {
            return Err(format!("no bridge is running at {listen}"));
        }
        // None running here: start one for this command.
        let args = RunArgs { no_discovery: !network, ..RunArgs::default() };
        let mut config = config(cli, file, &args);
        if config.native_peer.is_none() {
            config.native_peer = Some(PeerConfig::new(data_dir(cli, file), config.machine_name.clone()));
        }
        config.site_dir = None;
        let local = TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
        let base = format!("http://{}", local.local_addr().map_err(|e| e.to_string())?);
        let relay = match &config.discovery {
            Some(_) => Some(bind_relay(file.interface, 0).await?),
            None => None,
        };
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(kathon_bridge::run(Listeners { local, relay }, config, async {
            let _ = stop_rx.await;
        }));
        // Wait for it to answer (the store loads first).
        for _ in 0..600 {
            if server.is_finished() {
                let why = match server.await {
                    Ok(Err(e)) => e.to_string(),
                    _ => "the in-process bridge stopped".into(),
                };
                return Err(why);
            }
            if client.get(format!("{base}/peer/status")).send().await.is_ok_and(|r| r.status().is_success()) {
                return Ok(Self { base, client, own: Some((stop_tx, server)) });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err("the in-process bridge did not start".into())
    }

    async fn stop(self) {
        if let Some((stop, server)) = self.own {
            let _ = stop.send(());
            let _ = server.await;
        }
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, String> {
        let response = self.client.get(format!("{}{path}", self.base)).send().await.map_err(|e| e.to_string())?;
        decode(response).await
    }

    async fn post<T: serde::de::DeserializeOwned>(&self, path: &str, body: serde_json::Value) -> Result<T, String> {
        let response =
            self.client.post(format!("{}{path}", self.base)).json(&body).send().await.map_err(|e| e.to_string())?;
        decode(response).await
    }
}

async fn decode<T: serde::de::DeserializeOwned>(response: reqwest::Response) -> Result<T, String> {
    let status = response.status();
    let text = response.text().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        let message = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .unwrap_or(text);
        return Err(message);
    }
    serde_json::from_str(&text).map_err(|e| format!("unexpected answer from the bridge: {e}"))
}

fn spinner(message: &str) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    if std::io::stderr().is_terminal() {
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(Duration::from_millis(100));
    } else {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.set_message(message.to_owned());
    bar
}

fn print_json(value: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
}

async fn command(cli: &Cli, bridge: &Bridge) -> Result<(), String> {
    match &cli.command {
        Command::Run(_) => Ok(()),
        Command::Status => {
            let status: serde_json::Value = bridge.get("/status").await?;
            let peer: Option<serde_json::Value> = bridge.get("/peer/status").await.ok();
            if cli.json {
                print_json(&serde_json::json!({ "bridge": status, "peer": peer }));
            } else {
                print_bridge_status(&status);
                match &peer {
                    Some(peer) => print_status(peer),
                    None => println!("Native peer:  off"),
                }
            }
            Ok(())
        }
        Command::Identity(IdentityCommand::Create) => {
            let status: serde_json::Value = bridge.post("/peer/identity", serde_json::json!({})).await?;
            if cli.json {
                print_json(&status);
            } else {
                println!("Created identity {}", status["identity"].as_str().unwrap_or("?"));
                println!("This device:      {}", status["device"].as_str().unwrap_or("?"));
                println!("Add another device with `kathon-bridge pair code`.");
            }
            Ok(())
        }
        Command::Identity(IdentityCommand::Show) => {
            let status: serde_json::Value = bridge.get("/peer/status").await?;
            if cli.json {
                print_json(
                    &serde_json::json!({ "identity": status["identity"], "device": status["device"], "fingerprint": status["fingerprint"] }),
                );
            } else if status["identity"].is_null() {
                println!("No identity yet: `kathon-bridge identity create`, or `kathon-bridge pair join CODE`.");
            } else {
                println!("Identity:    {}", status["identity"].as_str().unwrap_or("?"));
                println!("This device: {}", status["device"].as_str().unwrap_or("?"));
                println!("DTLS:        {}", status["fingerprint"].as_str().unwrap_or("?"));
            }
            Ok(())
        }
        Command::Pair(PairCommand::Code { no_wait }) => pair_code(cli, bridge, *no_wait).await,
        Command::Pair(PairCommand::Join { code, no_wait }) => pair_join(cli, bridge, code, *no_wait).await,
        Command::Pair(PairCommand::Confirm { peer, reject }) => {
            let () = bridge.post("/peer/confirm", serde_json::json!({ "peer": peer, "accept": !reject })).await?;
            println!("{}", if *reject { "Refused." } else { "Accepted." });
            Ok(())
        }
        Command::Devices(DevicesCommand::List) => {
            let devices: serde_json::Value = bridge.get("/peer/devices").await?;
            if cli.json {
                print_json(&devices);
            } else {
                for d in devices.as_array().into_iter().flatten() {
                    let mut notes = Vec::new();
                    if d["this_device"].as_bool() == Some(true) {
                        notes.push("this device");
                    }
                    if d["connected"].as_bool() == Some(true) {
                        notes.push("connected");
                    }
                    if d["revoked"].as_bool() == Some(true) {
                        notes.push("REVOKED");
                    }
                    println!(
                        "{}  {:<24} {}",
                        d["id"].as_str().unwrap_or("?"),
                        d["name"].as_str().unwrap_or("?"),
                        notes.join(", ")
                    );
                }
            }
            Ok(())
        }
        Command::Devices(DevicesCommand::Revoke { device }) => {
            let () = bridge.post("/peer/revoke", serde_json::json!({ "device": device })).await?;
            println!("Revoked {device}. Its later writes are refused and secrets were re-sealed with a new vault key.");
            Ok(())
        }
        Command::Import { format, file } => import(cli, bridge, *format, file).await,
        Command::Export { format, file } => {
            let bar = spinner("exporting");
            let response = bridge
                .client
                .get(format!("{}/peer/export?format={}", bridge.base, format.query()))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if !response.status().is_success() {
                bar.finish_and_clear();
                return decode::<()>(response).await;
            }
            let text = response.text().await.map_err(|e| e.to_string())?;
            bar.finish_and_clear();
            match file {
                Some(path) => {
                    write_private(path, text.as_bytes(), format.wire() == FileFormat::PasswordsCsv)?;
                    eprintln!("Wrote {} bytes to {}", text.len(), path.display());
                }
                None => print!("{text}"),
            }
            Ok(())
        }
        Command::Digest => {
            let digest: String = bridge.get("/peer/digest").await?;
            println!("{}", serde_json::Value::String(digest));
            Ok(())
        }
        Command::Bookmarks(BookmarksCommand::Add { url, title }) => {
            let id: String = bridge.post("/peer/bookmarks", serde_json::json!({ "url": url, "title": title })).await?;
            println!("{id}");
            Ok(())
        }
        Command::Bookmarks(BookmarksCommand::Search { query }) => {
            let q: String = url_encode(query);
            let hits: serde_json::Value = bridge.get(&format!("/peer/bookmarks?q={q}")).await?;
            if cli.json {
                print_json(&hits);
            } else {
                for h in hits.as_array().into_iter().flatten() {
                    println!("{}  {}", h["title"].as_str().unwrap_or(""), h["url"].as_str().unwrap_or(""));
                }
            }
            Ok(())
        }
    }
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Writes a file; password exports are created readable by the owner only.
fn write_private(path: &Path, bytes: &[u8], private: bool) -> Result<(), String> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut f = options.open(path).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    f.write_all(bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

async fn import(cli: &Cli, bridge: &Bridge, format: Format, path: &Path) -> Result<(), String> {
    let size = std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?.len();
    if size > kathon_bridge::control::MAX_IMPORT_BYTES as u64 {
        return Err(format!(
            "{} is {size} bytes; the limit is {} bytes",
            path.display(),
            kathon_bridge::control::MAX_IMPORT_BYTES
        ));
    }
    // Read with a progress bar (a large export on a slow disk takes a while).
    let bar = ProgressBar::new(size);
    if std::io::stderr().is_terminal() {
        bar.set_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
    } else {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.set_message("reading");
    let mut file = tokio::fs::File::open(path).await.map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    let mut chunk = vec![0u8; 256 * 1024];
    loop {
        let n = tokio::io::AsyncReadExt::read(&mut file, &mut chunk).await.map_err(|e| e.to_string())?;
        let Some(read) = chunk.get(..n) else { break };
        if n == 0 {
            break;
        }
        bytes.extend_from_slice(read);
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
    let text = String::from_utf8(bytes)
        .map_err(|e| format!("{} is not UTF-8 text (at byte {})", path.display(), e.utf8_error().valid_up_to()))?;
    let bar = spinner("importing, signing and storing");
    let response = bridge
        .client
        .post(format!("{}/peer/import?format={}", bridge.base, format.query()))
        .body(text)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let report: Result<serde_json::Value, String> = decode(response).await;
    bar.finish_and_clear();
    let report = report?;
    if cli.json {
        print_json(&report);
    } else {
        println!(
            "Imported {}: {} folders, {} bookmarks, {} passwords added, {} passwords updated, {} duplicates skipped.",
            path.display(),
            report["foldersAdded"],
            report["bookmarksAdded"],
            report["passwordsAdded"],
            report["passwordsUpdated"],
            report["duplicatesSkipped"]
        );
    }
    Ok(())
}

fn print_bridge_status(s: &serde_json::Value) {
    println!(
        "Bridge:       {} ({}), up {} s",
        s["machine_name"].as_str().unwrap_or("?"),
        s["listen"].as_str().unwrap_or("?"),
        s["uptime_ms"].as_u64().unwrap_or(0) / 1000
    );
    println!("Endpoints:    {} local, {} behind other bridges", s["local_endpoints"], s["remote_endpoints"]);
    if let Some(neighbours) = s["discovery"]["neighbours"].as_array() {
        println!("LAN bridges:  {}", neighbours.len());
        for n in neighbours {
            println!(
                "  {} at {} (relay port {})",
                n["bridge"].as_str().unwrap_or("?"),
                n["addr"].as_str().unwrap_or("?"),
                n["relay_port"]
            );
        }
    }
}

fn print_status(s: &serde_json::Value) {
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_owned();
    println!("State:        {}", text(&s["state"]));
    println!("Identity:     {}", text(&s["identity"]));
    println!("This device:  {}", text(&s["device"]));
    println!("Peers found:  {}   connections: {}", s["peers_found"], s["connections"]);
    for (device, name) in s["sessions"].as_array().into_iter().flatten().filter_map(|p| Some((p.get(0)?, p.get(1)?))) {
        println!("  session with {} ({})", text(name), text(device));
    }
    let last = s["last_sync_ms"].as_u64().unwrap_or(0);
    if last == 0 {
        println!("Last sync:    never");
    } else {
        let ago = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0))
            .saturating_sub(last);
        println!("Last sync:    {} s ago", ago / 1000);
    }
    let c = &s["counts"];
    println!(
        "Holds:        {} bookmarks, {} visits, {} passwords, {} keys, {} workspaces ({} envelopes)",
        c["bookmarks"], c["history"], c["passwords"], c["keys"], c["workspaces"], c["envelopes"]
    );
    for p in s["pairing"].as_array().into_iter().flatten() {
        println!("Pairing:      #{} {} {} code {}", p["peer"], text(&p["role"]), text(&p["name"]), text(&p["sas"]));
    }
    if let Some(e) = s["last_error"].as_str() {
        println!("Last error:   {e}");
    }
}

async fn pair_code(cli: &Cli, bridge: &Bridge, no_wait: bool) -> Result<(), String> {
    let answer: serde_json::Value = bridge.post("/peer/pairing-code", serde_json::json!({})).await?;
    let code = answer["code"].as_str().unwrap_or_default().to_owned();
    if cli.json {
        print_json(&answer);
    } else {
        println!("Pairing code (valid 10 minutes, once):\n\n    {code}\n");
        println!("On the new device: `kathon-bridge pair join {code}`, or paste it into the demo page.");
    }
    if no_wait {
        return Ok(());
    }
    let bar = spinner("waiting for the new device");
    let deadline =
        tokio::time::Instant::now().checked_add(Duration::from_secs(600)).unwrap_or_else(tokio::time::Instant::now);
    while tokio::time::Instant::now() < deadline {
        let status: serde_json::Value = bridge.get("/peer/status").await?;
        let request = status["pairing"].as_array().into_iter().flatten().find(|p| p["role"] == "request").cloned();
        if let Some(p) = request {
            bar.finish_and_clear();
            let peer = p["peer"].as_u64().unwrap_or(0);
            println!(
                "\"{}\" ({}) asks to join. Its screen must show the code\n\n    {}\n",
                p["name"].as_str().unwrap_or("?"),
                p["device"].as_str().unwrap_or("?"),
                p["sas"].as_str().unwrap_or("?")
            );
            let accept = if std::io::stdin().is_terminal() {
                print!("Do the codes match? [y/N] ");
                let _ = std::io::stdout().flush();
                let mut line = String::new();
                let _ = std::io::stdin().read_line(&mut line);
                matches!(line.trim(), "y" | "Y" | "yes")
            } else {
                println!("Not a terminal: confirm with `kathon-bridge pair confirm {peer}`.");
                return Ok(());
            };
            let () = bridge.post("/peer/confirm", serde_json::json!({ "peer": peer, "accept": accept })).await?;
            println!("{}", if accept { "Accepted: the device is being enrolled." } else { "Refused." });
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    bar.finish_and_clear();
    Err("no device asked to join within 10 minutes".into())
}

async fn pair_join(cli: &Cli, bridge: &Bridge, code: &str, no_wait: bool) -> Result<(), String> {
    let () = bridge.post("/peer/join", serde_json::json!({ "code": code })).await?;
    if no_wait {
        if !cli.json {
            println!("Looking for the device that showed the code…");
        }
        return Ok(());
    }
    let bar = spinner("looking for the device that showed the code");
    let mut shown = false;
    let deadline =
        tokio::time::Instant::now().checked_add(Duration::from_secs(600)).unwrap_or_else(tokio::time::Instant::now);
    while tokio::time::Instant::now() < deadline {
        let status: serde_json::Value = bridge.get("/peer/status").await?;
        if status["state"] == "enrolled" {
            bar.finish_and_clear();
            println!("Joined identity {}.", status["identity"].as_str().unwrap_or("?"));
            return Ok(());
        }
        if !shown && let Some(p) = status["pairing"].as_array().into_iter().flatten().find(|p| p["role"] == "joining") {
            bar.println(format!(
                "Compare with the other device's screen:\n\n    {}\n",
                p["sas"].as_str().unwrap_or("?")
            ));
            bar.set_message("waiting for the other device to confirm");
            shown = true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    bar.finish_and_clear();
    Err("not enrolled within 10 minutes".into())
}
