//! The HTTP server: token routing and protocol upgrades.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue, CONNECTION, UPGRADE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::backend::{AttachRequest, ExecRequest, PortForwardRequest, StreamBackend};
use crate::idle::IdleIo;
use crate::session::Command;
use crate::token::{Pending, TokenRegistry};
use crate::{spdy, ws, Error, Result};

/// How long a client may take to finish the TLS handshake, and then again to
/// send its request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Settings of a [`StreamServer`].
#[derive(Debug, Clone)]
pub struct StreamServerConfig {
    /// Listen address; port 0 lets the kernel choose. Default `127.0.0.1:0`.
    pub addr: SocketAddr,
    /// Base of the returned URLs (for example `http://10.0.0.5:10010`);
    /// default `http://<bound address>`, or `https://` with `tls` set.
    pub base_url: Option<String>,
    /// How long an issued token stays valid. Default 60 s.
    pub token_ttl: Duration,
    /// Most tokens outstanding at once. Default 4096.
    pub max_tokens: usize,
    /// How long to wait for a SPDY client to open its streams. Default 30 s.
    pub stream_creation_timeout: Duration,
    /// End a session after this long without traffic; `None` never does.
    /// Default 4 h (as kubelet and containerd).
    pub idle_timeout: Option<Duration>,
    /// Serve HTTPS with this certificate and key; `None` (the default)
    /// serves plain HTTP.
    pub tls: Option<TlsFiles>,
}

/// PEM files the server presents when it serves TLS; both are read once, at
/// [`StreamServer::start`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key of the leaf (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl TlsFiles {
    /// Reads both files into a TLS acceptor.
    fn acceptor(&self) -> Result<TlsAcceptor> {
        let cert_err = |e: rustls::pki_types::pem::Error| {
            Error::Tls(format!(
                "read certificate file {}: {e}",
                self.cert.display()
            ))
        };
        let certs = CertificateDer::pem_file_iter(&self.cert)
            .map_err(cert_err)?
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(cert_err)?;
        if certs.is_empty() {
            return Err(Error::Tls(format!(
                "certificate file {} holds no PEM CERTIFICATE block",
                self.cert.display()
            )));
        }
        let key = PrivateKeyDer::from_pem_file(&self.key).map_err(|e| {
            Error::Tls(format!("read private key file {}: {e}", self.key.display()))
        })?;
        // An explicit provider: the process may link more than one, and then
        // rustls will not pick a default on its own.
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Tls(format!("TLS protocol versions: {e}")))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| {
                Error::Tls(format!(
                    "certificate {} and key {} do not form a usable pair: {e}",
                    self.cert.display(),
                    self.key.display()
                ))
            })?;
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

impl Default for StreamServerConfig {
    fn default() -> Self {
        StreamServerConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            base_url: None,
            token_ttl: Duration::from_secs(60),
            max_tokens: 4096,
            stream_creation_timeout: Duration::from_secs(30),
            idle_timeout: Some(Duration::from_secs(4 * 3600)),
            tls: None,
        }
    }
}

/// State shared by the accept loop and every connection.
struct Shared {
    tokens: TokenRegistry,
    backend: Arc<dyn StreamBackend>,
    config: StreamServerConfig,
    tls: Option<TlsAcceptor>,
}

/// A running streaming server. Dropping it stops accepting connections.
pub struct StreamServer {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    base_url: String,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for StreamServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamServer")
            .field("local_addr", &self.local_addr)
            .field("base_url", &self.base_url)
            .finish()
    }
}

impl StreamServer {
    /// Binds the listener and starts serving on the current tokio runtime.
    pub async fn start(
        config: StreamServerConfig,
        backend: Arc<dyn StreamBackend>,
    ) -> Result<StreamServer> {
        // Certificate problems surface before the port is bound.
        let tls = config.tls.as_ref().map(TlsFiles::acceptor).transpose()?;
        let listener = TcpListener::bind(config.addr)
            .await
            .map_err(|source| Error::Bind {
                addr: config.addr,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| Error::Bind {
            addr: config.addr,
            source,
        })?;
        let base_url = config
            .base_url
            .clone()
            .unwrap_or_else(|| {
                let scheme = if tls.is_some() { "https" } else { "http" };
                format!("{scheme}://{local_addr}")
            })
            .trim_end_matches('/')
            .to_string();
        let shared = Arc::new(Shared {
            tokens: TokenRegistry::new(config.token_ttl, config.max_tokens),
            backend,
            config,
            tls,
        });
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, shared.clone(), stopped));
        tracing::debug!(addr = %local_addr, "streaming server listening");
        Ok(StreamServer {
            shared,
            local_addr,
            base_url,
            stop,
            task,
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The base the returned URLs start with, e.g. `http://127.0.0.1:34567`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Registers an exec and returns the URL the client connects to.
    pub fn issue_exec(&self, req: ExecRequest) -> Result<String> {
        if req.cmd.is_empty() {
            return Err(Error::InvalidRequest("exec needs a command".into()));
        }
        if req.container_id.is_empty() {
            return Err(Error::InvalidRequest("exec needs a container id".into()));
        }
        check_streams(req.tty, req.stdin, req.stdout, req.stderr)?;
        self.issue(Pending::Exec(req))
    }

    /// Registers an attach and returns the URL the client connects to.
    pub fn issue_attach(&self, req: AttachRequest) -> Result<String> {
        if req.container_id.is_empty() {
            return Err(Error::InvalidRequest("attach needs a container id".into()));
        }
        check_streams(req.tty, req.stdin, req.stdout, req.stderr)?;
        self.issue(Pending::Attach(req))
    }

    /// Registers a port-forward to `pod_id` and returns the URL.
    pub fn issue_port_forward(&self, pod_id: &str, ports: &[u16]) -> Result<String> {
        if pod_id.is_empty() {
            return Err(Error::InvalidRequest("port-forward needs a pod id".into()));
        }
        if ports.contains(&0) {
            return Err(Error::InvalidRequest("port 0 cannot be forwarded".into()));
        }
        self.issue(Pending::PortForward(PortForwardRequest {
            pod_id: pod_id.to_string(),
            ports: ports.to_vec(),
        }))
    }

    fn issue(&self, pending: Pending) -> Result<String> {
        let path = pending.path();
        let token = self.shared.tokens.insert(pending)?;
        Ok(format!("{}/{path}/{token}", self.base_url))
    }

    /// Stops accepting connections; sessions already running continue.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

fn check_streams(tty: bool, stdin: bool, stdout: bool, stderr: bool) -> Result<()> {
    if !(stdin || stdout || stderr) {
        return Err(Error::InvalidRequest(
            "one of stdin, stdout or stderr must be set".into(),
        ));
    }
    if tty && stderr {
        return Err(Error::InvalidRequest(
            "tty and stderr cannot both be set".into(),
        ));
    }
    Ok(())
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stopped.changed() => return,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::debug!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let shared = shared.clone();
        tokio::spawn(async move {
            let Some(acceptor) = shared.tls.clone() else {
                return serve_http(shared, TokioIo::new(tcp), peer).await;
            };
            match tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => serve_http(shared, TokioIo::new(tls), peer).await,
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

/// Serves HTTP/1.1 (with upgrades) on one connection, plain or TLS.
async fn serve_http<I>(shared: Arc<Shared>, io: I, peer: SocketAddr)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| {
        let shared = shared.clone();
        async move { Ok::<_, std::convert::Infallible>(route(shared, req)) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(io, svc)
        .with_upgrades();
    if let Err(e) = conn.await {
        tracing::debug!(%peer, error = %e, "streaming connection ended with an error");
    }
}

type Resp = Response<Full<Bytes>>;

fn plain(status: StatusCode, body: &str) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r
}

fn route(shared: Arc<Shared>, mut req: Request<Incoming>) -> Resp {
    let path = req.uri().path().trim_start_matches('/');
    let Some((kind, token)) = path.split_once('/') else {
        return plain(StatusCode::NOT_FOUND, "");
    };
    let Some(pending) = shared.tokens.take(kind, token) else {
        return plain(StatusCode::NOT_FOUND, "");
    };
    let headers = req.headers().clone();
    let upgrade = header_str(&headers, UPGRADE).to_ascii_lowercase();
    let on_upgrade = hyper::upgrade::on(&mut req);
    if upgrade == "websocket" && has_token(&headers, CONNECTION, "upgrade") {
        ws_upgrade(shared, &headers, pending, on_upgrade)
    } else if upgrade.starts_with("spdy/3") {
        spdy_upgrade(shared, &headers, pending, on_upgrade)
    } else {
        plain(
            StatusCode::BAD_REQUEST,
            "this endpoint needs a websocket or SPDY/3.1 upgrade\n",
        )
    }
}

fn header_str(h: &HeaderMap, name: hyper::header::HeaderName) -> String {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .trim()
        .to_string()
}

fn has_token(h: &HeaderMap, name: hyper::header::HeaderName, token: &str) -> bool {
    h.get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// All values of a possibly repeated, comma-separated header.
fn list(h: &HeaderMap, name: &str) -> Vec<String> {
    h.get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn ws_upgrade(
    shared: Arc<Shared>,
    headers: &HeaderMap,
    pending: Pending,
    on: hyper::upgrade::OnUpgrade,
) -> Resp {
    let key = header_str(headers, hyper::header::SEC_WEBSOCKET_KEY);
    if key.is_empty() || header_str(headers, hyper::header::SEC_WEBSOCKET_VERSION) != "13" {
        return plain(
            StatusCode::BAD_REQUEST,
            "websocket version 13 with a key is required\n",
        );
    }
    let offered = list(headers, "sec-websocket-protocol");
    let supported = match pending {
        Pending::PortForward(_) => ws::serve::PORT_FORWARD_PROTOCOLS,
        Pending::Exec(_) | Pending::Attach(_) => ws::serve::EXEC_PROTOCOLS,
    };
    let Some(protocol) = ws::serve::negotiate(&offered, supported) else {
        let msg = format!(
            "none of the websocket protocols {offered:?} is supported; use one of {supported:?}\n"
        );
        return plain(StatusCode::BAD_REQUEST, &msg);
    };
    let mut resp = plain(StatusCode::SWITCHING_PROTOCOLS, "");
    let h = resp.headers_mut();
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&ws::accept_key(&key)) {
        h.insert(hyper::header::SEC_WEBSOCKET_ACCEPT, v);
    }
    if !protocol.is_empty() {
        h.insert(
            hyper::header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(protocol),
        );
    }
    tokio::spawn(async move {
        let io = match on.await {
            Ok(u) => IdleIo::new(TokioIo::new(u), shared.config.idle_timeout),
            Err(e) => {
                tracing::debug!(error = %e, "websocket upgrade failed");
                return;
            }
        };
        let backend = shared.backend.clone();
        let kind = pending.path();
        tracing::debug!(kind, protocol, "stream session started");
        match pending {
            Pending::Exec(r) => {
                ws::serve::serve_exec(io, protocol, backend, Command::Exec(r)).await
            }
            Pending::Attach(r) => {
                ws::serve::serve_exec(io, protocol, backend, Command::Attach(r)).await
            }
            Pending::PortForward(r) => {
                ws::serve::serve_port_forward(io, protocol, backend, r).await
            }
        }
        tracing::debug!(kind, protocol, "stream session ended");
    });
    resp
}

fn spdy_upgrade(
    shared: Arc<Shared>,
    headers: &HeaderMap,
    pending: Pending,
    on: hyper::upgrade::OnUpgrade,
) -> Resp {
    let offered = list(headers, spdy::PROTOCOL_HEADER);
    let supported = match pending {
        Pending::PortForward(_) => spdy::serve::PORT_FORWARD_PROTOCOLS,
        Pending::Exec(_) | Pending::Attach(_) => spdy::serve::EXEC_PROTOCOLS,
    };
    let Some(protocol) = offered
        .iter()
        .find_map(|o| supported.iter().find(|s| **s == o.as_str()).copied())
    else {
        let mut resp = plain(
            StatusCode::FORBIDDEN,
            &format!("unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server accepts {supported:?}\n"),
        );
        for s in supported {
            resp.headers_mut().append(
                "x-accepted-stream-protocol-versions",
                HeaderValue::from_static(s),
            );
        }
        return resp;
    };
    let mut resp = plain(StatusCode::SWITCHING_PROTOCOLS, "");
    let h = resp.headers_mut();
    h.insert(UPGRADE, HeaderValue::from_static("SPDY/3.1"));
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(spdy::PROTOCOL_HEADER, HeaderValue::from_static(protocol));
    tokio::spawn(async move {
        let io = match on.await {
            Ok(u) => IdleIo::new(TokioIo::new(u), shared.config.idle_timeout),
            Err(e) => {
                tracing::debug!(error = %e, "spdy upgrade failed");
                return;
            }
        };
        let backend = shared.backend.clone();
        let timeout = shared.config.stream_creation_timeout;
        let kind = pending.path();
        tracing::debug!(kind, protocol, "stream session started");
        match pending {
            Pending::Exec(r) => {
                spdy::serve::serve_exec(io, protocol, backend, Command::Exec(r), timeout).await
            }
            Pending::Attach(r) => {
                spdy::serve::serve_exec(io, protocol, backend, Command::Attach(r), timeout).await
            }
            Pending::PortForward(r) => {
                spdy::serve::serve_port_forward(io, backend, r, timeout).await
            }
        }
        tracing::debug!(kind, protocol, "stream session ended");
    });
    resp
}
