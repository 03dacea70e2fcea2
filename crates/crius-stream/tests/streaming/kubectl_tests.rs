//! Interop with the real Go clients: kubectl (client-go, spdystream,
//! gorilla websocket) runs exec and port-forward against the server through
//! a tiny fake API server that answers discovery and the pod lookup, and
//! splices the exec/port-forward upgrade onto a freshly issued token URL.
//! Skipped when `kubectl` is not installed.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use crius_stream::StreamServer;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;

use crate::common::*;

fn kubectl() -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| std::path::Path::new(d).join("kubectl"))
        .find(|p| p.exists())
}

const POD: &str = r#"{"kind":"Pod","apiVersion":"v1","metadata":{"name":"p1","namespace":"default","uid":"u1"},"spec":{"containers":[{"name":"c1","image":"busybox"}]},"status":{"phase":"Running"}}"#;
const API: &str = r#"{"kind":"APIVersions","versions":["v1"],"serverAddressByClientCIDRs":[{"clientCIDR":"0.0.0.0/0","serverAddress":"127.0.0.1:443"}]}"#;
const APIS: &str = r#"{"kind":"APIGroupList","apiVersion":"v1","groups":[]}"#;
const V1: &str = r#"{"kind":"APIResourceList","groupVersion":"v1","resources":[{"name":"pods","singularName":"pod","namespaced":true,"kind":"Pod","verbs":["get","list"],"shortNames":["po"]},{"name":"pods/exec","singularName":"","namespaced":true,"kind":"PodExecOptions","verbs":["create","get"]},{"name":"pods/portforward","singularName":"","namespaced":true,"kind":"PodPortForwardOptions","verbs":["create","get"]}]}"#;

fn query_values(query: &str, key: &str) -> Vec<String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| *k == key)
        .map(|(_, v)| {
            let v = v.replace('+', " ");
            let mut out = Vec::new();
            let b = v.as_bytes();
            let mut i = 0;
            while i < b.len() {
                if b[i] == b'%' && i + 2 < b.len() {
                    out.push(u8::from_str_radix(&v[i + 1..i + 3], 16).unwrap());
                    i += 3;
                } else {
                    out.push(b[i]);
                    i += 1;
                }
            }
            String::from_utf8(out).unwrap()
        })
        .collect()
}

/// Serves one client connection of the fake API server.
async fn api_conn(srv: Arc<StreamServer>, seen: Seen, tcp: TcpStream) {
    let mut r = BufReader::new(tcp);
    loop {
        let mut head = Vec::new();
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                return;
            }
            let end = line == "\r\n";
            head.push(line);
            if end {
                break;
            }
        }
        let mut parts = head[0].split(' ');
        let (_method, target) = (
            parts.next().unwrap().to_string(),
            parts.next().unwrap().to_string(),
        );
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let len: usize = head
            .iter()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse().unwrap())
            })
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        r.read_exact(&mut body).await.unwrap();
        let url = if path.ends_with("/exec") {
            let cmd = query_values(query, "command");
            let on = |k: &str| {
                query_values(query, k)
                    .first()
                    .map(|v| v == "true")
                    .unwrap_or(false)
            };
            let mut req = exec_req(
                &cmd.iter().map(String::as_str).collect::<Vec<_>>(),
                on("tty"),
                on("stdin"),
                on("stderr"),
            );
            req.stdout = on("stdout");
            Some(srv.issue_exec(req).unwrap())
        } else if path.ends_with("/attach") {
            let on = |k: &str| {
                query_values(query, k)
                    .first()
                    .map(|v| v == "true")
                    .unwrap_or(false)
            };
            let req = crius_stream::AttachRequest {
                container_id: "c1".into(),
                tty: on("tty"),
                stdin: on("stdin"),
                stdout: on("stdout"),
                stderr: on("stderr"),
            };
            Some(srv.issue_attach(req).unwrap())
        } else if path.ends_with("/portforward") {
            Some(srv.issue_port_forward("p1", &[]).unwrap())
        } else {
            None
        };
        if let Some(url) = url {
            let upgrade = head.iter().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("upgrade")
                    .then(|| v.trim().to_string())
            });
            seen.lock().unwrap().push(upgrade.unwrap_or_default());
            // Splice the upgrade request onto the token URL.
            let (addr, token_path) = split_url(&url);
            let mut up = TcpStream::connect(addr).await.unwrap();
            let mut out = format!("GET {token_path} HTTP/1.1\r\n");
            for l in &head[1..] {
                out.push_str(l);
            }
            up.write_all(out.as_bytes()).await.unwrap();
            let mut client = r.into_inner();
            let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
            return;
        }
        let body = match path {
            "/api" => API,
            "/apis" => APIS,
            "/api/v1" => V1,
            "/api/v1/namespaces/default/pods/p1" => POD,
            _ => "",
        };
        let status = if body.is_empty() {
            "404 Not Found"
        } else {
            "200 OK"
        };
        let resp = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if r.get_mut().write_all(resp.as_bytes()).await.is_err() {
            return;
        }
    }
}

type Seen = Arc<std::sync::Mutex<Vec<String>>>;

async fn fake_api(srv: StreamServer, seen: Seen) -> String {
    let srv = Arc::new(srv);
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = l.accept().await.unwrap();
            tokio::spawn(api_conn(srv.clone(), seen.clone(), tcp));
        }
    });
    format!("http://{addr}")
}

struct Kubectl {
    bin: std::path::PathBuf,
    api: String,
    dir: std::path::PathBuf,
    /// The `Upgrade` header of every streaming request kubectl made.
    seen: Seen,
}

impl Kubectl {
    async fn start() -> Option<Kubectl> {
        let Some(bin) = kubectl() else {
            eprintln!("kubectl not installed; skipping interop test");
            return None;
        };
        let (srv, _) = server().await;
        let seen = Seen::default();
        let api = fake_api(srv, seen.clone()).await;
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir =
            std::env::temp_dir().join(format!("crius-stream-kubectl-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config"), "").unwrap();
        Some(Kubectl {
            bin,
            api,
            dir,
            seen,
        })
    }

    fn cmd(&self, websockets: bool) -> Command {
        let mut c = Command::new(&self.bin);
        c.env("KUBECONFIG", self.dir.join("config"))
            .env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", websockets.to_string())
            .env("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false")
            .arg(format!("--server={}", self.api))
            .arg(format!("--cache-dir={}", self.dir.join("cache").display()))
            .arg("--request-timeout=20s")
            .kill_on_drop(true);
        c
    }

    /// Runs `kubectl exec [-i] p1 -- args` with `stdin`; returns (code, stdout, stderr).
    async fn exec(
        &self,
        websockets: bool,
        args: &[&str],
        stdin: Option<&[u8]>,
    ) -> (i32, String, String) {
        let mut c = self.cmd(websockets);
        c.arg("exec");
        if stdin.is_some() {
            c.arg("-i");
        }
        c.arg("p1").arg("--").args(args);
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        let mut i = child.stdin.take().unwrap();
        if let Some(data) = stdin {
            i.write_all(data).await.unwrap();
        }
        drop(i);
        let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
            .await
            .expect("kubectl exec hung")
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    }
}

impl Drop for Kubectl {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn exec_cases(websockets: bool) {
    let Some(k) = Kubectl::start().await else {
        return;
    };
    let (code, out, err) = k.exec(websockets, &["echo", "hello", "world"], None).await;
    assert_eq!((code, out.as_str()), (0, "hello world"), "stderr: {err}");
    let (code, out, err) = k.exec(websockets, &["exit", "3"], None).await;
    assert_eq!(code, 3, "stdout: {out} stderr: {err}");
    assert_eq!(out, "bye\n");
    let (code, out, err) = k
        .exec(websockets, &["cat"], Some(b"piped through kubectl"))
        .await;
    assert_eq!(
        (code, out.as_str()),
        (0, "piped through kubectl"),
        "stderr: {err}"
    );
    let big: String = (0..200_000).map(|i| format!("{i}\n")).collect();
    let (code, out, err) = k.exec(websockets, &["cat"], Some(big.as_bytes())).await;
    assert_eq!(code, 0, "stderr: {err}");
    assert!(out == big, "{} bytes back of {}", out.len(), big.len());
    let want = if websockets { "websocket" } else { "SPDY/3.1" };
    let seen = k.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 4);
    assert!(
        seen.iter().all(|u| u.eq_ignore_ascii_case(want)),
        "{seen:?}"
    );
}

async fn attach_case(websockets: bool) {
    let Some(k) = Kubectl::start().await else {
        return;
    };
    let mut c = k.cmd(websockets);
    c.args(["attach", "-i", "p1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut i = child.stdin.take().unwrap();
    i.write_all(b"typed into attach").await.unwrap();
    drop(i);
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("kubectl attach hung")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("attached\ntyped into attach"),
        "stdout: {stdout} stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success());
}

#[tokio::test]
async fn kubectl_attach_over_websocket_and_spdy() {
    attach_case(true).await;
    attach_case(false).await;
}

#[tokio::test]
async fn kubectl_exec_over_websocket_v5() {
    exec_cases(true).await;
}

#[tokio::test]
async fn kubectl_exec_over_spdy() {
    exec_cases(false).await;
}

#[tokio::test]
async fn kubectl_port_forward_over_spdy() {
    let Some(k) = Kubectl::start().await else {
        return;
    };
    let echo = echo_server().await;
    let local = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut c = k.cmd(false);
    c.arg("port-forward")
        .arg("pod/p1")
        .arg(format!("{local}:{echo}"));
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("kubectl port-forward did not start")
        .unwrap();
    assert!(first.unwrap_or_default().contains("Forwarding from"));
    for round in 0..3 {
        let mut s = TcpStream::connect(("127.0.0.1", local)).await.unwrap();
        let msg = format!("round {round} through kubectl");
        s.write_all(msg.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut buf))
            .await
            .expect("no echo through kubectl port-forward")
            .unwrap();
        assert_eq!(buf, msg.as_bytes());
    }
    // A bulk copy: spdystream never returns window, so this stalls if the
    // server honoured windows for a client that does not do flow control.
    let s = TcpStream::connect(("127.0.0.1", local)).await.unwrap();
    let (mut r, mut w) = s.into_split();
    let data: Vec<u8> = (0..(8usize << 20)).map(|i| (i % 253) as u8).collect();
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        w.write_all(&sent).await.unwrap();
        w
    });
    let mut got = vec![0u8; data.len()];
    tokio::time::timeout(Duration::from_secs(30), r.read_exact(&mut got))
        .await
        .expect("bulk copy through kubectl port-forward stalled")
        .unwrap();
    assert!(got == data, "bulk copy corrupted");
    drop(writer.await.unwrap());
    child.kill().await.unwrap();
    assert_eq!(k.seen.lock().unwrap().as_slice(), ["SPDY/3.1"]);
}

/// `kubectl exec -it` under a pseudo-terminal (util-linux `script`): the
/// terminal size kubectl sends on the resize stream reaches the backend.
async fn tty_case(websockets: bool) {
    let Some(k) = Kubectl::start().await else {
        return;
    };
    if !std::path::Path::new("/usr/bin/script").exists() {
        eprintln!("script(1) not installed; skipping tty interop test");
        return;
    }
    let line = format!(
        "stty cols 123 rows 45; {} --server={} --cache-dir={} exec -it p1 -- resize",
        k.bin.display(),
        k.api,
        k.dir.join("cache").display()
    );
    let out = Command::new("/usr/bin/script")
        .args(["-qec", &line, "/dev/null"])
        .env("KUBECONFIG", k.dir.join("config"))
        .env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", websockets.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), out)
        .await
        .expect("kubectl exec -it hung")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("123x45"),
        "stdout: {stdout:?} stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn kubectl_exec_tty_sends_terminal_size_over_websocket_and_spdy() {
    tty_case(true).await;
    tty_case(false).await;
}
