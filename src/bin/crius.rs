//! crius: the command-line companion of criusd.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use crius::api;
use crius::config::Config;

/// Inspect and configure the crius container runtime.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// The daemon's CRI endpoint.
    #[arg(long, global = true, default_value = "unix:///run/crius/crius.sock")]
    endpoint: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Configuration helpers.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Print the runtime's name and versions.
    Version,
    /// Print the runtime's conditions, handlers and, verbosely, its configuration.
    Status {
        /// Include the daemon's configuration and facts.
        #[arg(long, short)]
        verbose: bool,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print the full default configuration as TOML.
    Default,
    /// Check a config file and print the effective configuration.
    Check { path: std::path::PathBuf },
}

fn main() {
    if let Err(e) = run() {
        eprintln!("crius: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Config {
            command: ConfigCommand::Default,
        } => {
            print!("{}", Config::default().to_toml());
            Ok(())
        }
        Command::Config {
            command: ConfigCommand::Check { path },
        } => {
            let config = Config::load(&path)?;
            for warning in config.validate()? {
                eprintln!("warning: {warning}");
            }
            print!("{}", config.to_toml());
            Ok(())
        }
        Command::Version => block_on(version(&cli.endpoint)),
        Command::Status { verbose } => block_on(status(&cli.endpoint, verbose)),
    }
}

fn block_on<F: std::future::Future<Output = Result<()>>>(f: F) -> Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f)
}

async fn connect(endpoint: &str) -> Result<crius::client::CriClient> {
    let path = crius::client::endpoint_path(endpoint)
        .with_context(|| format!("endpoint {endpoint:?} is not unix:///absolute/path"))?;
    crius::client::connect(&path)
        .await
        .with_context(|| format!("connect to {}; is criusd running?", path.display()))
}

async fn version(endpoint: &str) -> Result<()> {
    let mut client = connect(endpoint).await?;
    let v = client
        .runtime
        .version(api::VersionRequest::default())
        .await?
        .into_inner();
    println!("Version:           {}", v.version);
    println!("RuntimeName:       {}", v.runtime_name);
    println!("RuntimeVersion:    {}", v.runtime_version);
    println!("RuntimeApiVersion: {}", v.runtime_api_version);
    Ok(())
}

async fn status(endpoint: &str, verbose: bool) -> Result<()> {
    let mut client = connect(endpoint).await?;
    let s = client
        .runtime
        .status(api::StatusRequest { verbose })
        .await?
        .into_inner();
    for c in s.status.map(|s| s.conditions).unwrap_or_default() {
        let state = if c.status { "true" } else { "false" };
        println!("{:<14} {state:<5} {} {}", c.r#type, c.reason, c.message);
    }
    for h in s.runtime_handlers {
        let name = if h.name.is_empty() {
            "(default)"
        } else {
            h.name.as_str()
        };
        let f = h.features.unwrap_or_default();
        println!(
            "handler {name}: recursive_read_only_mounts={} user_namespaces={}",
            f.recursive_read_only_mounts, f.user_namespaces
        );
    }
    let mut info: Vec<_> = s.info.into_iter().collect();
    info.sort();
    for (k, v) in info {
        println!("{k}: {v}");
    }
    Ok(())
}
