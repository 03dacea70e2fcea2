//! The server behind TLS: handshake, token routing and the `https://` URLs.

use std::path::Path;
use std::sync::Arc;

use crius_stream::{StreamServerConfig, TlsFiles};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

use crate::common::{exec_req, server_with};

/// A self-signed certificate for 127.0.0.1 in `dir`.
fn self_signed(dir: &Path) -> TlsFiles {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    crius_testkit::tls::self_signed_localhost(&cert, &key).unwrap();
    TlsFiles { cert, key }
}

/// Splits `https://host:port/path` into (addr, path).
fn split_url(url: &str) -> (String, String) {
    let rest = url.strip_prefix("https://").unwrap();
    let (addr, path) = rest.split_once('/').unwrap();
    (addr.to_string(), format!("/{path}"))
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("crius-stream-tls-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Sends one request head over TLS (trusting only `cert`) and returns the
/// response head.
async fn tls_request(cert: &Path, url: &str, extra: &str) -> String {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(cert).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let (addr, path) = split_url(url);
    let tcp = TcpStream::connect(&addr).await.unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    let head = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}\r\n");
    tls.write_all(head.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tls.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed after {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

const WS_UPGRADE: &str =
    "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: v4.channel.k8s.io\r\n";

#[tokio::test]
async fn tls_server_upgrades_valid_tokens_and_refuses_plain_http() {
    let dir = tempdir("ok");
    let files = self_signed(&dir);
    let (server, _) = server_with(StreamServerConfig {
        tls: Some(files.clone()),
        ..StreamServerConfig::default()
    })
    .await;
    assert!(
        server.base_url().starts_with("https://"),
        "{}",
        server.base_url()
    );

    let url = server
        .issue_exec(exec_req(&["echo", "hi"], false, false, false))
        .unwrap();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");

    // Unknown token: handshake succeeds, then a bare 404.
    let wrong = format!(
        "{}/exec/00000000000000000000000000000000",
        server.base_url()
    );
    let head = tls_request(&files.cert, &wrong, "").await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");

    // Plain HTTP on the TLS port gets no HTTP answer.
    let (addr, path) = split_url(&url);
    let mut tcp = TcpStream::connect(&addr).await.unwrap();
    tcp.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{WS_UPGRADE}\r\n").as_bytes())
        .await
        .unwrap();
    let mut got = Vec::new();
    let _ = tcp.read_to_end(&mut got).await;
    assert!(
        !got.starts_with(b"HTTP/"),
        "plain HTTP got {:?}",
        String::from_utf8_lossy(&got)
    );

    // The token the plain attempt carried is still unused: TLS upgrades it.
    let head = tls_request(&files.cert, &url, WS_UPGRADE).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-protocol: v4.channel.k8s.io"),
        "{head}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn tls_start_refuses_missing_or_invalid_files() {
    let dir = tempdir("bad");
    let files = self_signed(&dir);
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "not a pem file\n").unwrap();
    let cases = [
        (dir.join("absent.pem"), files.key.clone(), "absent.pem"),
        (garbage.clone(), files.key.clone(), "no PEM CERTIFICATE"),
        (files.cert.clone(), garbage.clone(), "garbage.pem"),
        (files.key.clone(), files.key.clone(), "no PEM CERTIFICATE"),
    ];
    for (cert, key, want) in cases {
        let backend = Arc::new(crate::common::FakeBackend::default());
        let cfg = StreamServerConfig {
            tls: Some(TlsFiles { cert, key }),
            ..StreamServerConfig::default()
        };
        let err = crius_stream::StreamServer::start(cfg, backend)
            .await
            .unwrap_err();
        assert!(matches!(err, crius_stream::Error::Tls(_)), "{err:?}");
        assert!(err.to_string().contains(want), "{err} lacks {want}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
