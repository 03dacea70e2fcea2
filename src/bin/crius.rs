//! crius: the command-line companion of criusd.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use crius::admin::wire;
use crius::api;
use crius::client::CriClient;
use crius::config::{Config, DEFAULT_CONFIG_PATH};
use crius::server::SocketLock;
use crius_core::{NetworkMode, Runtime};

/// Inspect and configure the crius container runtime.
///
/// Commands that need the daemon talk to it over its socket. The image and fsck
/// commands, when nothing answers on the socket, open the daemon's store directly (with
/// the config file and flags the daemon would use) while holding the daemon's socket
/// lock, so a daemon starting meanwhile waits for them instead of sharing the store.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// The daemon's CRI endpoint [default: `listen` of the config file,
    /// unix:///run/crius/crius.sock].
    #[arg(long, global = true)]
    endpoint: Option<String>,
    /// The daemon's config file [default: /etc/crius/config.toml when it exists].
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// The daemon's persistent data directory, for working without the daemon
    /// [default: `root` of the config file, /var/lib/crius].
    #[arg(long, global = true)]
    root: Option<PathBuf>,
    /// The daemon's volatile state directory, for working without the daemon
    /// [default: `state` of the config file, /run/crius].
    #[arg(long, global = true)]
    state: Option<PathBuf>,
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
    /// Image archives and the image list.
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
    /// Re-verify every blob of the content store against its digest; print each bad one
    /// and exit 1 when there is any.
    Fsck,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print the full default configuration as TOML.
    Default,
    /// Check a config file and print the effective configuration.
    Check { path: std::path::PathBuf },
}

#[derive(Debug, Subcommand)]
enum ImageCommand {
    /// Load every image of a `docker save` tarball or an OCI image-layout archive.
    Import {
        /// The archive; `-` reads standard input.
        file: String,
    },
    /// Write an image as an OCI image-layout archive (`docker load` takes it too).
    Export {
        /// The image: id, id prefix, tag or digest reference.
        reference: String,
        /// Where to write the archive; `-` writes standard output.
        file: String,
    },
    /// List images like `crictl images`.
    #[command(alias = "list")]
    Ls,
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("crius: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<ExitCode> {
    let cli = Cli::parse();
    match &cli.command {
        Command::Config {
            command: ConfigCommand::Default,
        } => {
            print!("{}", Config::default().to_toml());
        }
        Command::Config {
            command: ConfigCommand::Check { path },
        } => {
            let config = Config::load(path)?;
            for warning in config.validate()? {
                eprintln!("warning: {warning}");
            }
            print!("{}", config.to_toml());
        }
        Command::Version => block_on(version(&cli))?,
        Command::Status { verbose } => block_on(status(&cli, *verbose))?,
        Command::Image {
            command: ImageCommand::Import { file },
        } => block_on(import(&cli, file))?,
        Command::Image {
            command: ImageCommand::Export { reference, file },
        } => block_on(export(&cli, reference, file))?,
        Command::Image {
            command: ImageCommand::Ls,
        } => block_on(list(&cli))?,
        Command::Fsck => return block_on(fsck(&cli)),
    }
    Ok(ExitCode::SUCCESS)
}

/// The config the daemon would run with: `--config`, else the default file when it
/// exists, else the defaults; `--root`, `--state` and `--endpoint` over it.
fn load_config(cli: &Cli) -> Result<Config> {
    let mut config = match &cli.config {
        Some(path) => Config::load(path)?,
        None if Path::new(DEFAULT_CONFIG_PATH).exists() => {
            Config::load(DEFAULT_CONFIG_PATH.as_ref())?
        }
        None => Config::default(),
    };
    if let Some(root) = &cli.root {
        config.root.clone_from(root);
    }
    if let Some(state) = &cli.state {
        config.state.clone_from(state);
    }
    if let Some(endpoint) = &cli.endpoint {
        config.listen.clone_from(endpoint);
    }
    Ok(config)
}

fn block_on<T, F: std::future::Future<Output = Result<T>>>(f: F) -> Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f)
}

fn socket_path(cli: &Cli) -> Result<PathBuf> {
    let endpoint = match &cli.endpoint {
        Some(endpoint) => endpoint.clone(),
        None => load_config(cli)?.listen,
    };
    crius::client::endpoint_path(&endpoint)
        .with_context(|| format!("endpoint {endpoint:?} is not unix:///absolute/path"))
}

async fn connect(cli: &Cli) -> Result<CriClient> {
    let path = socket_path(cli)?;
    crius::client::connect(&path)
        .await
        .with_context(|| format!("connect to {}; is criusd running?", path.display()))
}

async fn version(cli: &Cli) -> Result<()> {
    let mut client = connect(cli).await?;
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

async fn status(cli: &Cli, verbose: bool) -> Result<()> {
    let mut client = connect(cli).await?;
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

/// The daemon's answer, without the transport's metadata.
fn rpc_error(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{} ({:?})", status.message(), status.code())
}

/// Where the image commands do their work: the running daemon, or — when nothing answers
/// on its socket — the store itself, opened while holding the daemon's socket lock.
enum Store {
    Daemon(Box<CriClient>),
    Local {
        runtime: Box<Runtime>,
        _lock: SocketLock,
    },
}

async fn open_store(cli: &Cli) -> Result<Store> {
    let config = load_config(cli)?;
    let socket = config.socket_path()?;
    match std::os::unix::net::UnixStream::connect(&socket) {
        Ok(_) => {
            let client = crius::client::connect(&socket)
                .await
                .with_context(|| format!("connect to {}", socket.display()))?;
            return Ok(Store::Daemon(Box::new(client)));
        }
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) => {}
        Err(e) => return Err(e).with_context(|| format!("connect to {}", socket.display())),
    }
    // The daemon's own lock: a daemon that holds it (still starting) is not raced for
    // the store, and a daemon started now is refused until this command is done.
    let lock = SocketLock::take(&socket).with_context(|| {
        format!(
            "criusd does not answer on {}, and the store cannot be opened directly",
            socket.display()
        )
    })?;
    eprintln!(
        "crius: criusd is not answering on {}; working on {} directly",
        socket.display(),
        config.root.display()
    );
    let mut options = config.runtime_options();
    // Image work needs no pod network; never touch bridges or CNI from the CLI.
    options.network.mode = NetworkMode::None;
    let runtime = Runtime::open(options)
        .with_context(|| format!("open the store at {}", config.root.display()))?;
    Ok(Store::Local {
        runtime: Box::new(runtime),
        _lock: lock,
    })
}

async fn import(cli: &Cli, file: &str) -> Result<()> {
    let input: Box<dyn Read + Send> = if file == "-" {
        Box::new(io::stdin())
    } else {
        Box::new(std::fs::File::open(file).with_context(|| format!("open {file}"))?)
    };
    let images = match open_store(cli).await? {
        Store::Daemon(mut client) => import_remote(&mut client, input).await?,
        Store::Local { runtime, .. } => runtime
            .images()
            .import(input)
            .await
            .map_err(crius_core::Error::from)?
            .iter()
            .map(crius::admin::summary)
            .collect(),
    };
    for image in images {
        let names = if image.repo_tags.is_empty() {
            "<none>".to_string()
        } else {
            image.repo_tags.join(", ")
        };
        println!("imported {} {names}", image.id);
    }
    Ok(())
}

/// Streams `input` to the daemon in chunks read on a blocking thread.
async fn import_remote(
    client: &mut CriClient,
    mut input: Box<dyn Read + Send>,
) -> Result<Vec<wire::ImageSummary>> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let feeder = tokio::task::spawn_blocking(move || -> io::Result<()> {
        loop {
            let mut data = Vec::with_capacity(crius::admin::CHUNK);
            let limit = u64::try_from(crius::admin::CHUNK).unwrap_or(u64::MAX);
            input.by_ref().take(limit).read_to_end(&mut data)?;
            if data.is_empty() {
                return Ok(());
            }
            // The daemon stopped reading: it answers with the reason.
            if tx.blocking_send(wire::ImportImageChunk { data }).is_err() {
                return Ok(());
            }
        }
    });
    let answer = client
        .admin
        .import_image(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await;
    // A read failure explains a truncated archive better than the daemon can.
    feeder
        .await
        .context("archive reader")?
        .context("read the archive")?;
    Ok(answer.map_err(rpc_error)?.into_inner().images)
}

async fn export(cli: &Cli, reference: &str, file: &str) -> Result<()> {
    let mut out = ArchiveOut::create(file)?;
    match open_store(cli).await? {
        Store::Daemon(mut client) => {
            let mut stream = client
                .admin
                .export_image(wire::ExportImageRequest {
                    reference: reference.to_string(),
                })
                .await
                .map_err(rpc_error)?
                .into_inner();
            while let Some(chunk) = stream.message().await.map_err(rpc_error)? {
                out.writer
                    .write_all(&chunk.data)
                    .context("write the archive")?;
            }
        }
        Store::Local { runtime, .. } => runtime
            .images()
            .export(reference, &mut out.writer)
            .map_err(crius_core::Error::from)?,
    }
    out.commit()
}

/// The export's destination: standard output, or a file written under a temporary name
/// and renamed into place only when complete, so a failed export leaves no half archive.
struct ArchiveOut {
    writer: Box<dyn Write>,
    partial: Option<(PathBuf, PathBuf)>,
}

impl ArchiveOut {
    fn create(file: &str) -> Result<Self> {
        if file == "-" {
            return Ok(Self {
                writer: Box::new(io::BufWriter::new(io::stdout().lock())),
                partial: None,
            });
        }
        let target = PathBuf::from(file);
        let mut name = target.file_name().unwrap_or_default().to_os_string();
        name.push(format!(".partial-{}", std::process::id()));
        let partial = target.with_file_name(name);
        let f = std::fs::File::create(&partial)
            .with_context(|| format!("create {}", partial.display()))?;
        Ok(Self {
            writer: Box::new(io::BufWriter::new(f)),
            partial: Some((partial, target)),
        })
    }

    fn commit(mut self) -> Result<()> {
        self.writer.flush().context("write the archive")?;
        if let Some((partial, target)) = self.partial.take() {
            let renamed = std::fs::rename(&partial, &target);
            if renamed.is_err() {
                let _ = std::fs::remove_file(&partial);
            }
            renamed.with_context(|| format!("rename into {}", target.display()))?;
        }
        Ok(())
    }
}

impl Drop for ArchiveOut {
    fn drop(&mut self) {
        if let Some((partial, _)) = &self.partial {
            let _ = std::fs::remove_file(partial);
        }
    }
}

async fn list(cli: &Cli) -> Result<()> {
    let images = match open_store(cli).await? {
        Store::Daemon(mut client) => client
            .image
            .list_images(api::ListImagesRequest::default())
            .await
            .map_err(rpc_error)?
            .into_inner()
            .images
            .into_iter()
            .map(|i| wire::ImageSummary {
                id: i.id,
                repo_tags: i.repo_tags,
                repo_digests: i.repo_digests,
                size: i.size,
            })
            .collect(),
        Store::Local { runtime, .. } => runtime
            .images()
            .list(None)
            .map_err(crius_core::Error::from)?
            .iter()
            .map(crius::admin::summary)
            .collect::<Vec<_>>(),
    };
    print!("{}", image_table(&images));
    Ok(())
}

/// The `crictl images` table: one row per tag (an untagged image shows `<none>`).
fn image_table(images: &[wire::ImageSummary]) -> String {
    let mut rows = Vec::new();
    for i in images {
        let id = i.id.strip_prefix("sha256:").unwrap_or(&i.id);
        let id = id.get(..12).unwrap_or(id).to_string();
        let size = human_size(i.size);
        let mut names: Vec<(String, String)> = i.repo_tags.iter().map(|t| split_tag(t)).collect();
        if names.is_empty() {
            let repo = i
                .repo_digests
                .first()
                .and_then(|d| d.split_once('@'))
                .map_or("<none>", |(repo, _)| repo);
            names.push((repo.to_string(), "<none>".to_string()));
        }
        for (repo, tag) in names {
            rows.push([repo, tag, id.clone(), size.clone()]);
        }
    }
    rows.sort();
    let header = ["IMAGE", "TAG", "IMAGE ID", "SIZE"].map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let line = format!(
            "{:<w0$}   {:<w1$}   {:<w2$}   {}",
            row[0],
            row[1],
            row[2],
            row[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `registry/repo:tag` → (`registry/repo`, `tag`); a port colon is not a tag.
fn split_tag(reference: &str) -> (String, String) {
    match reference.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo.to_string(), tag.to_string()),
        _ => (reference.to_string(), "<none>".to_string()),
    }
}

/// Decimal units with three significant digits, as crictl prints sizes (`4.26MB`).
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    #[allow(clippy::cast_precision_loss)] // three significant digits are shown
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 999.5 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    let decimals = if value >= 99.95 {
        0
    } else if value >= 9.995 {
        1
    } else {
        2
    };
    let mut text = format!("{value:.decimals$}");
    if text.contains('.') {
        text = text.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    format!("{text}{}", UNITS[unit])
}

async fn fsck(cli: &Cli) -> Result<ExitCode> {
    let bad = match open_store(cli).await? {
        Store::Daemon(mut client) => {
            client
                .admin
                .fsck(wire::FsckRequest {})
                .await
                .map_err(rpc_error)?
                .into_inner()
                .bad_blobs
        }
        Store::Local { runtime, .. } => runtime
            .images()
            .fsck()
            .map_err(crius_core::Error::from)?
            .iter()
            .map(|b| wire::BadBlob {
                digest: b.digest.to_string(),
                reason: b.reason.clone(),
            })
            .collect(),
    };
    if bad.is_empty() {
        println!("every blob matches its digest");
        return Ok(ExitCode::SUCCESS);
    }
    for b in &bad {
        println!("bad blob {}: {}", b.digest, b.reason);
    }
    eprintln!(
        "crius: {} bad blob(s); remove the images that use them and pull or import them again",
        bad.len()
    );
    Ok(ExitCode::FAILURE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_crictl() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1000), "1kB");
        assert_eq!(human_size(4_264_000), "4.26MB");
        assert_eq!(human_size(12_340_000), "12.3MB");
        assert_eq!(human_size(123_400_000), "123MB");
    }

    #[test]
    fn a_registry_port_is_not_a_tag() {
        assert_eq!(
            split_tag("127.0.0.1:5000/busybox:v1"),
            ("127.0.0.1:5000/busybox".into(), "v1".into())
        );
        assert_eq!(
            split_tag("127.0.0.1:5000/busybox"),
            ("127.0.0.1:5000/busybox".into(), "<none>".into())
        );
    }

    #[test]
    fn table_has_one_row_per_tag_and_short_ids() {
        let table = image_table(&[wire::ImageSummary {
            id: format!("sha256:{}", "ab".repeat(32)),
            repo_tags: vec!["docker.io/library/busybox:1".into(), "x.io/b:2".into()],
            repo_digests: vec![],
            size: 2_000_000,
        }]);
        let lines: Vec<_> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        assert!(lines[0].starts_with("IMAGE"), "{table}");
        assert!(lines[1].contains("abababababab   2MB"), "{table}");
        assert!(!lines[1].contains("ababababababa"), "{table}");
    }
}
