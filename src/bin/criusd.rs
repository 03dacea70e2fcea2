//! criusd: the crius CRI daemon.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use crius::admin::wire::admin_server::AdminServer;
use crius::admin::AdminService;
use crius::api::image_service_server::ImageServiceServer;
use crius::api::runtime_service_server::RuntimeServiceServer;
use crius::config::{Config, LogFormat, DEFAULT_CONFIG_PATH};
use crius::cri::{ImageService, RuntimeService};
use crius::server::{CriSocket, ShutdownSignals, SocketLock};
use crius::stream::DaemonStreams;
use crius_core::Runtime;
use crius_stream::StreamServer;

/// The crius container runtime daemon: serves CRI v1 on a unix socket.
#[derive(Debug, Parser)]
#[command(version, about, args_override_self = true)]
struct Flags {
    /// Config file (TOML). Without this flag /etc/crius/config.toml is read when it exists;
    /// `crius config default` prints every key with its default.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Persistent data directory [default: /var/lib/crius].
    #[arg(long)]
    root: Option<PathBuf>,
    /// Volatile state directory, normally on tmpfs [default: /run/crius].
    #[arg(long)]
    state: Option<PathBuf>,
    /// CRI endpoint, unix:///path only [default: unix:///run/crius/crius.sock].
    #[arg(long)]
    listen: Option<String>,
    /// Log filter: error, warn, info, debug, trace, or tracing directives [default: info].
    #[arg(long)]
    log_level: Option<String>,
    /// Log line format [default: text].
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
}

fn main() {
    if let Err(e) = run() {
        eprintln!("criusd: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let flags = Flags::parse();
    let config = load_config(&flags)?;
    crius::telemetry::init(&config.log.level, config.log.format).map_err(anyhow::Error::msg)?;
    for warning in config.validate()? {
        tracing::warn!(warning, "config");
    }
    let grace = Duration::from_secs(config.shutdown_grace_seconds);
    let config_json = serde_json::to_string(&config)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start async runtime")?;
    rt.block_on(async {
        // Order matters: catch signals, claim the socket (refusing a second daemon before it
        // touches the store), open the runtime, and only then accept connections.
        let signals = ShutdownSignals::install().context("install signal handlers")?;
        let lock = SocketLock::take(&config.socket_path()?)?;
        let runtime = Arc::new(Runtime::open(config.runtime_options())?);
        // Reconnect to every pod's monitor and learn what happened while criusd was down.
        runtime.recover()?;
        let streams = StreamServer::start(
            config.stream.server_config()?,
            Arc::new(DaemonStreams::new(runtime.clone())),
        )
        .await
        .context("start the streaming server")?;
        tracing::info!(url = streams.base_url(), "streaming server listening");
        let streams = Arc::new(streams);
        let socket = lock.bind()?;
        let served = serve(
            socket,
            runtime,
            streams.clone(),
            config_json,
            config.listen.clone(),
            grace,
            signals,
        )
        .await;
        // Stop accepting streaming connections; sessions already running end with criusd.
        match Arc::try_unwrap(streams) {
            Ok(streams) => streams.shutdown().await,
            Err(streams) => drop(streams),
        }
        served
    })
}

fn load_config(flags: &Flags) -> Result<Config> {
    let mut config = match &flags.config {
        Some(path) => Config::load(path)?,
        None if std::path::Path::new(DEFAULT_CONFIG_PATH).exists() => {
            Config::load(DEFAULT_CONFIG_PATH.as_ref())?
        }
        None => Config::default(),
    };
    if let Some(root) = &flags.root {
        config.root.clone_from(root);
    }
    if let Some(state) = &flags.state {
        config.state.clone_from(state);
    }
    if let Some(listen) = &flags.listen {
        config.listen.clone_from(listen);
    }
    if let Some(level) = &flags.log_level {
        config.log.level.clone_from(level);
    }
    if let Some(format) = flags.log_format {
        config.log.format = format;
    }
    if config.root == config.state {
        bail!(
            "root and state must be different directories, both are {}",
            config.root.display()
        );
    }
    Ok(config)
}

async fn serve(
    socket: CriSocket,
    runtime: Arc<Runtime>,
    streams: Arc<StreamServer>,
    config_json: String,
    listen: String,
    grace: Duration,
    signals: ShutdownSignals,
) -> Result<()> {
    let (listener, _guard) = socket.into_tokio()?;
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    let max = crius::client::MAX_MESSAGE;
    let runtime_service =
        RuntimeServiceServer::new(RuntimeService::new(runtime.clone(), streams, config_json))
            .max_decoding_message_size(max)
            .max_encoding_message_size(max);
    let image_service = ImageServiceServer::new(ImageService::new(runtime.clone()))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    // crius's own image archive and fsck service, on the same 0660 socket as CRI.
    let admin_service = AdminServer::new(AdminService::new(runtime.clone()))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    tracing::info!(
        listen,
        version = env!("CARGO_PKG_VERSION"),
        "criusd serving CRI v1"
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tonic::transport::Server::builder()
        .add_service(runtime_service)
        .add_service(image_service)
        .add_service(admin_service)
        .serve_with_incoming_shutdown(incoming, async {
            let _ = stop_rx.await;
        });
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => result.context("serve CRI")?,
        () = signals.recv() => {
            // Stop accepting, let in-flight calls finish, but never hang on clients that
            // keep idle connections open (kubelet always does).
            let _ = stop_tx.send(());
            match tokio::time::timeout(grace, &mut server).await {
                Ok(result) => result.context("serve CRI")?,
                Err(_) => tracing::warn!(?grace, "calls still in flight after the grace period; exiting"),
            }
        }
    }
    tracing::info!("criusd stopped");
    Ok(())
}
