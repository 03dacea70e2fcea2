use crius_stream::AttachRequest;
use serde_json::Value;

use crate::common::*;
use crius_stream::client::spdy::{ClientStream, SpdyClient};

const V4: &str = "v4.channel.k8s.io";

async fn exec_streams(c: &mut SpdyClient, kinds: &[&str]) -> Vec<ClientStream> {
    let mut v = Vec::new();
    for k in kinds {
        v.push(c.open(&[("streamType", k)]).await.unwrap());
    }
    v
}

#[tokio::test]
async fn spdy_v4_exec_echoes_stdin_and_reports_success() {
    let (srv, _) = server().await;
    let url = srv
        .issue_exec(exec_req(&["cat"], false, true, false))
        .unwrap();
    let mut c = SpdyClient::connect(&url, &[V4, "v3.channel.k8s.io"], false)
        .await
        .unwrap();
    assert_eq!(c.protocol, V4);
    let mut s = exec_streams(&mut c, &["error", "stdin", "stdout"]).await;
    s[1].send(b"over spdy").await.unwrap();
    s[1].close().await.unwrap();
    assert_eq!(s[2].read_all().await, b"over spdy");
    let status: Value = serde_json::from_slice(&s[0].read_all().await).unwrap();
    assert_eq!(status["status"], "Success");
    c.go_away().await.unwrap();
}

#[tokio::test]
async fn spdy_v4_exec_propagates_exit_code_with_stderr() {
    let (srv, _) = server().await;
    let url = srv
        .issue_exec(exec_req(&["exit", "7"], false, false, true))
        .unwrap();
    let mut c = SpdyClient::connect(&url, &[V4], true).await.unwrap();
    let mut s = exec_streams(&mut c, &["error", "stdout", "stderr"]).await;
    assert_eq!(s[1].read_all().await, b"bye\n");
    assert_eq!(s[2].read_all().await, b"err\n");
    let status: Value = serde_json::from_slice(&s[0].read_all().await).unwrap();
    assert_eq!(status["reason"], "NonZeroExitCode");
    assert_eq!(status["details"]["causes"][0]["message"], "7");
}

#[tokio::test]
async fn spdy_v2_exec_reports_failure_as_plain_text() {
    let (srv, _) = server().await;
    let url = srv
        .issue_exec(exec_req(&["exit", "2"], false, false, false))
        .unwrap();
    let mut c = SpdyClient::connect(&url, &["v2.channel.k8s.io"], false)
        .await
        .unwrap();
    let mut s = exec_streams(&mut c, &["error", "stdout"]).await;
    assert_eq!(s[1].read_all().await, b"bye\n");
    let text = String::from_utf8(s[0].read_all().await).unwrap();
    assert!(text.contains("non-zero exit code"), "{text}");
}

#[tokio::test]
async fn spdy_tty_resize_reaches_backend() {
    let (srv, _) = server().await;
    let url = srv
        .issue_exec(exec_req(&["resize"], true, true, false))
        .unwrap();
    let mut c = SpdyClient::connect(&url, &[V4], false).await.unwrap();
    let mut s = exec_streams(&mut c, &["error", "stdin", "stdout", "resize"]).await;
    s[3].send(b"{\"Width\":200,\"Height\":50}\n").await.unwrap();
    assert_eq!(s[2].read_all().await, b"200x50\n");
    let status: Value = serde_json::from_slice(&s[0].read_all().await).unwrap();
    assert_eq!(status["status"], "Success");
}

#[tokio::test]
async fn spdy_attach_streams_output_and_stdin() {
    let (srv, _) = server().await;
    let req = AttachRequest {
        container_id: "c1".into(),
        tty: false,
        stdin: true,
        stdout: true,
        stderr: false,
    };
    let url = srv.issue_attach(req).unwrap();
    let mut c = SpdyClient::connect(&url, &[V4], false).await.unwrap();
    let mut s = exec_streams(&mut c, &["error", "stdin", "stdout"]).await;
    s[1].send(b"keys").await.unwrap();
    s[1].close().await.unwrap();
    assert_eq!(s[2].read_all().await, b"attached\nkeys");
}

#[tokio::test]
async fn spdy_unsupported_protocol_is_forbidden() {
    let (srv, _) = server().await;
    let url = srv
        .issue_exec(exec_req(&["cat"], false, true, false))
        .unwrap();
    assert_eq!(
        refused(SpdyClient::connect(&url, &["v9.channel.k8s.io"], false).await),
        Some(403)
    );
}

#[tokio::test]
async fn spdy_sixteen_concurrent_execs() {
    let (srv, _) = server().await;
    let mut tasks = Vec::new();
    for i in 0..16 {
        let url = srv
            .issue_exec(exec_req(&["cat"], false, true, false))
            .unwrap();
        tasks.push(tokio::spawn(async move {
            let mut c = SpdyClient::connect(&url, &[V4], i % 2 == 0).await.unwrap();
            let mut s = exec_streams(&mut c, &["error", "stdin", "stdout"]).await;
            let msg = format!("spdy exec {i}");
            s[1].send(msg.as_bytes()).await.unwrap();
            s[1].close().await.unwrap();
            assert_eq!(s[2].read_all().await, msg.as_bytes());
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

async fn pf_pair(c: &mut SpdyClient, port: u16, req: &str) -> (ClientStream, ClientStream) {
    let p = port.to_string();
    let e = c
        .open(&[("streamType", "error"), ("port", &p), ("requestID", req)])
        .await
        .unwrap();
    let d = c
        .open(&[("streamType", "data"), ("port", &p), ("requestID", req)])
        .await
        .unwrap();
    (d, e)
}

#[tokio::test]
async fn spdy_port_forward_runs_several_streams_on_one_connection() {
    let (srv, backend) = server().await;
    let port = echo_server().await;
    let url = srv.issue_port_forward("pod1", &[port]).unwrap();
    let mut c = SpdyClient::connect(&url, &["portforward.k8s.io"], false)
        .await
        .unwrap();
    let mut pairs = Vec::new();
    for i in 0..4 {
        pairs.push(pf_pair(&mut c, port, &i.to_string()).await);
    }
    for (i, (d, _)) in pairs.iter().enumerate() {
        d.send(format!("stream {i}").as_bytes()).await.unwrap();
        d.close().await.unwrap();
    }
    for (i, (d, e)) in pairs.iter_mut().enumerate() {
        assert_eq!(d.read_all().await, format!("stream {i}").as_bytes());
        assert!(e.read_all().await.is_empty());
    }
    assert_eq!(backend.forwarded.lock().unwrap().len(), 4);
}

#[tokio::test]
async fn spdy_port_forward_to_closed_port_reports_error() {
    let (srv, _) = server().await;
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    let url = srv.issue_port_forward("pod1", &[]).unwrap();
    let mut c = SpdyClient::connect(&url, &["portforward.k8s.io"], false)
        .await
        .unwrap();
    let (mut d, mut e) = pf_pair(&mut c, port, "0").await;
    let msg = String::from_utf8(e.read_all().await).unwrap();
    assert!(
        msg.contains(&format!("error forwarding port {port} to pod pod1")),
        "{msg}"
    );
    assert!(d.read_all().await.is_empty());
}

async fn large_copy(flow: bool) {
    let (srv, _) = server().await;
    let port = echo_server().await;
    let url = srv.issue_port_forward("pod1", &[port]).unwrap();
    let mut c = SpdyClient::connect(&url, &["portforward.k8s.io"], flow)
        .await
        .unwrap();
    let (d, _e) = pf_pair(&mut c, port, "0").await;
    const SIZE: usize = 24 << 20;
    let data: Vec<u8> = (0..SIZE)
        .map(|i| (i as u32).wrapping_mul(2654435761).to_le_bytes()[1])
        .collect();
    let data = std::sync::Arc::new(data);
    let sent = data.clone();
    let sender = tokio::spawn(async move {
        d.send(&sent).await.unwrap();
        d.close().await.unwrap();
        d
    });
    // The client buffers what comes back while it sends; read it after.
    let mut d = sender.await.unwrap();
    let got = d.read_all().await;
    assert_eq!(got.len(), SIZE);
    assert!(got == *data, "payload corrupted");
}

#[tokio::test]
async fn spdy_port_forward_copies_24_mib_intact_without_flow_control() {
    large_copy(false).await;
}

#[tokio::test]
async fn spdy_port_forward_copies_24_mib_intact_with_flow_control() {
    large_copy(true).await;
}

#[tokio::test]
async fn spdy_client_disconnect_cancels_the_backend() {
    let (srv, backend) = server().await;
    let url = srv
        .issue_exec(exec_req(&["sleep"], false, false, false))
        .unwrap();
    let mut c = SpdyClient::connect(&url, &[V4], false).await.unwrap();
    let _s = exec_streams(&mut c, &["error", "stdout"]).await;
    c.go_away().await.unwrap();
    for _ in 0..100 {
        if backend.cancelled.load(std::sync::atomic::Ordering::SeqCst) == 1 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("backend was not cancelled");
}

#[tokio::test]
async fn spdy_bad_frame_version_closes_the_session() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (srv, _) = server().await;
    let url = srv.issue_port_forward("pod1", &[]).unwrap();
    let (status, _, _, mut tcp) = http_request(
        &url,
        &[
            ("Connection", "Upgrade"),
            ("Upgrade", "SPDY/3.1"),
            ("X-Stream-Protocol-Version", "portforward.k8s.io"),
        ],
    )
    .await;
    assert_eq!(status, 101);
    // A PING claiming SPDY version 2.
    tcp.write_all(&[0x80, 0x02, 0x00, 0x06, 0, 0, 0, 4, 0, 0, 0, 1])
        .await
        .unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), tcp.read_to_end(&mut got));
    read.await.unwrap().unwrap();
    // The server said GOAWAY (type 7) before closing.
    assert!(
        got.windows(4).any(|w| w == [0x80, 0x03, 0x00, 0x07]),
        "{got:?}"
    );
}

#[tokio::test]
async fn spdy_port_forward_resets_a_pair_missing_its_partner() {
    let cfg = crius_stream::StreamServerConfig {
        stream_creation_timeout: std::time::Duration::from_millis(200),
        ..Default::default()
    };
    let (srv, _) = server_with(cfg).await;
    let port = echo_server().await;
    let url = srv.issue_port_forward("pod1", &[port]).unwrap();
    let mut c = SpdyClient::connect(&url, &["portforward.k8s.io"], false)
        .await
        .unwrap();
    let p = port.to_string();
    let mut lonely = c
        .open(&[("streamType", "data"), ("port", &p), ("requestID", "9")])
        .await
        .unwrap();
    let t = tokio::time::timeout(std::time::Duration::from_secs(5), lonely.read_all());
    assert!(t.await.unwrap().is_empty());
    // The session still serves complete pairs.
    let (mut d, _e) = pf_pair(&mut c, port, "10").await;
    d.send(b"still alive").await.unwrap();
    d.close().await.unwrap();
    assert_eq!(d.read_all().await, b"still alive");
}

#[tokio::test]
async fn spdy_port_forward_refuses_a_port_not_issued() {
    let (srv, backend) = server().await;
    let url = srv.issue_port_forward("pod1", &[80]).unwrap();
    let mut c = SpdyClient::connect(&url, &["portforward.k8s.io"], false)
        .await
        .unwrap();
    let (mut d, mut e) = pf_pair(&mut c, 81, "0").await;
    let msg = String::from_utf8(e.read_all().await).unwrap();
    assert!(msg.contains("refused"), "{msg}");
    assert!(d.read_all().await.is_empty());
    assert!(backend.forwarded.lock().unwrap().is_empty());
}

#[tokio::test]
async fn spdy_data_for_a_finished_forward_does_not_stall_the_session() {
    let (srv, _) = server().await;
    let echo = echo_server().await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = srv.issue_port_forward("pod1", &[]).unwrap();
    let mut c = SpdyClient::connect(&url, &["portforward.k8s.io"], false)
        .await
        .unwrap();
    let (dead, mut dead_err) = pf_pair(&mut c, closed, "0").await;
    assert!(!dead_err.read_all().await.is_empty());
    // Far more than the per-stream buffer, into a stream nobody reads.
    dead.send(&vec![7u8; 4 << 20]).await.unwrap();
    let (mut d, _e) = pf_pair(&mut c, echo, "1").await;
    d.send(b"next").await.unwrap();
    d.close().await.unwrap();
    let got = tokio::time::timeout(std::time::Duration::from_secs(10), d.read_all());
    assert_eq!(got.await.expect("session stalled"), b"next");
}
