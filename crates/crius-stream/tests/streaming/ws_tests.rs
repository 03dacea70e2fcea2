use std::time::Duration;

use crius_stream::{AttachRequest, StreamServerConfig};
use serde_json::Value;

use crate::common::*;

fn status(out: &std::collections::HashMap<u8, Vec<u8>>) -> Value {
    serde_json::from_slice(&out[&3]).unwrap()
}

#[tokio::test]
async fn ws_v5_exec_echoes_stdin_and_reports_success() {
    let (srv, _) = server().await;
    let url = srv
        .issue_exec(exec_req(&["cat"], false, true, false))
        .unwrap();
    let mut c = WsClient::connect(&url, "v5.channel.k8s.io").await.unwrap();
    assert_eq!(c.protocol, "v5.channel.k8s.io");
    c.send(0, b"hello ").await.unwrap();
    c.send(0, b"world").await.unwrap();
    c.send(255, &[0]).await.unwrap();
    let out = c.collect().await.unwrap();
    assert_eq!(out[&1], b"hello world");
    assert_eq!(status(&out)["status"], "Success");
}

#[tokio::test]
async fn ws_v4_exec_propagates_non_zero_exit_code() {
    let (srv, _) = server().await;
    let url = srv
        .issue_exec(exec_req(&["exit", "3"], false, false, true))
        .unwrap();
    let mut c = WsClient::connect(&url, "v4.channel.k8s.io").await.unwrap();
    let out = c.collect().await.unwrap();
    assert_eq!(out[&1], b"bye\n");
    assert_eq!(out[&2], b"err\n");
    let s = status(&out);
    assert_eq!(s["reason"], "NonZeroExitCode");
    assert_eq!(s["details"]["causes"][0]["reason"], "ExitCode");
    assert_eq!(s["details"]["causes"][0]["message"], "3");
}

#[tokio::test]
async fn ws_base64_protocol_encodes_channels_as_text() {
    let (srv, _) = server().await;
    let url = srv
        .issue_exec(exec_req(&["echo", "hi", "there"], false, false, false))
        .unwrap();
    let mut c = WsClient::connect(&url, "v4.base64.channel.k8s.io")
        .await
        .unwrap();
    assert_eq!(c.protocol, "v4.base64.channel.k8s.io");
    let out = c.collect().await.unwrap();
    assert_eq!(out[&1], b"hi there");
    assert_eq!(status(&out)["status"], "Success");
}

#[tokio::test]
async fn ws_tty_resize_reaches_backend() {
    let (srv, _) = server().await;
    let url = srv
        .issue_exec(exec_req(&["resize"], true, true, false))
        .unwrap();
    let mut c = WsClient::connect(&url, "v5.channel.k8s.io").await.unwrap();
    c.send(4, br#"{"Width":132,"Height":43}"#).await.unwrap();
    let out = c.collect().await.unwrap();
    assert_eq!(out[&1], b"132x43\n");
}

#[tokio::test]
async fn ws_backend_error_becomes_failure_status() {
    let (srv, _) = server().await;
    let url = srv
        .issue_exec(exec_req(&["fail"], false, false, false))
        .unwrap();
    let mut c = WsClient::connect(&url, "v5.channel.k8s.io").await.unwrap();
    let out = c.collect().await.unwrap();
    let s = status(&out);
    assert_eq!(s["status"], "Failure");
    assert_eq!(s["message"], "container is not running");
}

#[tokio::test]
async fn ws_attach_streams_output_and_stdin() {
    let (srv, _) = server().await;
    let req = AttachRequest {
        container_id: "c1".into(),
        tty: false,
        stdin: true,
        stdout: true,
        stderr: false,
    };
    let url = srv.issue_attach(req).unwrap();
    let mut c = WsClient::connect(&url, "v5.channel.k8s.io").await.unwrap();
    c.send(0, b"typed").await.unwrap();
    c.send(255, &[0]).await.unwrap();
    let out = c.collect().await.unwrap();
    assert_eq!(out[&1], b"attached\ntyped");
    assert_eq!(status(&out)["status"], "Success");
}

#[tokio::test]
async fn ws_sixteen_concurrent_execs_each_get_their_own_output() {
    let (srv, _) = server().await;
    let mut tasks = Vec::new();
    for i in 0..16 {
        let url = srv
            .issue_exec(exec_req(&["cat"], false, true, false))
            .unwrap();
        tasks.push(tokio::spawn(async move {
            let mut c = WsClient::connect(&url, "v5.channel.k8s.io").await.unwrap();
            let msg = format!("exec number {i}");
            c.send(0, msg.as_bytes()).await.unwrap();
            c.send(255, &[0]).await.unwrap();
            let out = c.collect().await.unwrap();
            assert_eq!(out[&1], msg.as_bytes());
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test]
async fn ws_port_forward_copies_to_local_echo_server() {
    let (srv, backend) = server().await;
    let port = echo_server().await;
    let url = srv.issue_port_forward("pod1", &[port]).unwrap();
    let mut c = WsClient::connect(&url, "v4.channel.k8s.io").await.unwrap();
    // The first message on each channel is the port, little-endian.
    let mut got_prefix = 0;
    while got_prefix < 2 {
        let f = c.recv().await.unwrap().unwrap();
        assert_eq!(&f.payload[1..], &port.to_le_bytes());
        got_prefix += 1;
    }
    c.send(0, b"ping through the tunnel").await.unwrap();
    let f = c.recv().await.unwrap().unwrap();
    assert_eq!(f.payload[0], 0);
    assert_eq!(&f.payload[1..], b"ping through the tunnel");
    assert_eq!(
        backend.forwarded.lock().unwrap()[0],
        ("pod1".to_string(), port)
    );
}

#[tokio::test]
async fn token_is_single_use_and_wrong_token_is_404() {
    let (srv, _) = server().await;
    let url = srv
        .issue_exec(exec_req(&["echo", "x"], false, false, false))
        .unwrap();
    let c = WsClient::connect(&url, "v5.channel.k8s.io").await;
    assert!(c.is_ok());
    assert_eq!(
        refused(WsClient::connect(&url, "v5.channel.k8s.io").await),
        Some(404)
    );
    let wrong = format!("{}X", &url[..url.len() - 1]);
    assert_eq!(
        refused(WsClient::connect(&wrong, "v5.channel.k8s.io").await),
        Some(404)
    );
    let (status, _, rest, _) =
        http_request(&format!("http://{}/nothing", srv.local_addr()), &[]).await;
    assert_eq!(status, 404);
    assert!(rest.is_empty());
}

#[tokio::test]
async fn expired_token_is_404() {
    let cfg = StreamServerConfig {
        token_ttl: Duration::from_millis(50),
        ..Default::default()
    };
    let (srv, _) = server_with(cfg).await;
    let url = srv
        .issue_exec(exec_req(&["echo", "x"], false, false, false))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(
        refused(WsClient::connect(&url, "v5.channel.k8s.io").await),
        Some(404)
    );
}

#[tokio::test]
async fn invalid_requests_are_refused_at_issue() {
    let (srv, _) = server().await;
    let mut r = exec_req(&["cat"], true, true, true);
    assert!(srv.issue_exec(r.clone()).is_err());
    r.tty = false;
    r.stdin = false;
    r.stdout = false;
    r.stderr = false;
    assert!(srv.issue_exec(r).is_err());
    assert!(srv.issue_exec(exec_req(&[], false, true, false)).is_err());
    assert!(srv.issue_port_forward("", &[80]).is_err());
    let url = srv.issue_port_forward("p", &[80]).unwrap();
    assert!(url.starts_with(&format!("{}/portforward/", srv.base_url())));
    assert!(srv.base_url().starts_with("http://127.0.0.1:"));
}

async fn wait_cancelled(b: &FakeBackend) {
    for _ in 0..100 {
        if b.cancelled.load(std::sync::atomic::Ordering::SeqCst) == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("backend was not cancelled after the client left");
}

#[tokio::test]
async fn ws_client_disconnect_cancels_the_backend() {
    let (srv, backend) = server().await;
    let url = srv
        .issue_exec(exec_req(&["sleep"], false, false, false))
        .unwrap();
    let c = WsClient::connect(&url, "v5.channel.k8s.io").await.unwrap();
    drop(c);
    wait_cancelled(&backend).await;
}

#[tokio::test]
async fn ws_garbage_frame_ends_the_session() {
    let (srv, backend) = server().await;
    let url = srv
        .issue_exec(exec_req(&["sleep"], false, true, false))
        .unwrap();
    let mut c = WsClient::connect(&url, "v5.channel.k8s.io").await.unwrap();
    // Unmasked, reserved bits set: a protocol error.
    use tokio::io::AsyncWriteExt;
    c.tcp.write_all(&[0xf2, 0x05, 1, 2, 3, 4, 5]).await.unwrap();
    wait_cancelled(&backend).await;
    // The server closes the connection.
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(f) = c.recv().await.unwrap() {
            if f.opcode == crius_stream::ws::frame::OP_CLOSE {
                break;
            }
        }
    });
    end.await.unwrap();
}

#[tokio::test]
async fn ws_port_forward_two_ports_and_20_mib_intact() {
    use crius_stream::ws::frame;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (srv, _) = server().await;
    let (p1, p2) = (echo_server().await, echo_server().await);
    let url = srv.issue_port_forward("pod1", &[p1, p2]).unwrap();
    let c = WsClient::connect(&url, "v4.channel.k8s.io").await.unwrap();
    let WsClient { tcp, buf, .. } = c;
    let (mut r, mut w) = tcp.into_split();
    const SIZE: usize = 20 << 20;
    let data: Vec<u8> = (0..SIZE).map(|i| (i % 251) as u8).collect();
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        let mut out = Vec::new();
        frame::encode(
            &mut out,
            true,
            frame::OP_BINARY,
            b"\x02second port",
            Some([1, 2, 3, 4]),
        );
        w.write_all(&out).await.unwrap();
        for chunk in sent.chunks(60_000) {
            let mut p = vec![0u8];
            p.extend_from_slice(chunk);
            out.clear();
            frame::encode(&mut out, true, frame::OP_BINARY, &p, Some([5, 6, 7, 8]));
            w.write_all(&out).await.unwrap();
        }
        w
    });
    let mut pending = buf;
    let mut per_channel: std::collections::HashMap<u8, Vec<u8>> = Default::default();
    let mut firsts = 0;
    while per_channel.get(&0).map_or(0, Vec::len) < SIZE
        || per_channel.get(&2).map_or(0, Vec::len) < 11
    {
        match frame::parse(&pending, 1 << 24, false).unwrap() {
            Some((f, used)) => {
                pending.drain(..used);
                let (ch, d) = f.payload.split_first().unwrap();
                if firsts < 4 {
                    // Port prefixes: channels 0..=3, ports p1, p1, p2, p2.
                    let want = if *ch < 2 { p1 } else { p2 };
                    assert_eq!(d, want.to_le_bytes());
                    firsts += 1;
                    continue;
                }
                per_channel.entry(*ch).or_default().extend_from_slice(d);
            }
            None => {
                let mut chunk = vec![0u8; 1 << 16];
                let n = r.read(&mut chunk).await.unwrap();
                assert!(n > 0, "server closed early");
                pending.extend_from_slice(&chunk[..n]);
            }
        }
    }
    let _ = writer.await.unwrap();
    assert_eq!(per_channel[&2], b"second port");
    assert!(per_channel[&0] == data, "20 MiB payload corrupted");
}

#[tokio::test]
async fn library_client_runs_exec_and_port_forward() {
    use crius_stream::client::spdy::PortForwardClient;
    let (srv, _) = server().await;
    let url = srv
        .issue_exec(exec_req(&["cat"], false, true, false))
        .unwrap();
    let out = WsClient::exec(&url, Some(b"via the library client"))
        .await
        .unwrap();
    assert_eq!(out.stdout, b"via the library client");
    assert_eq!(out.exit_code(), Some(0));
    let url = srv
        .issue_exec(exec_req(&["exit", "42"], false, false, false))
        .unwrap();
    assert_eq!(
        WsClient::exec(&url, None).await.unwrap().exit_code(),
        Some(42)
    );

    let port = echo_server().await;
    let url = srv.issue_port_forward("pod1", &[port]).unwrap();
    let mut pf = PortForwardClient::connect(&url).await.unwrap();
    let (mut d, _e) = pf.open(port).await.unwrap();
    d.send(b"pf").await.unwrap();
    d.close().await.unwrap();
    assert_eq!(d.read_all().await, b"pf");
}

#[tokio::test]
async fn idle_sessions_are_closed_and_the_backend_cancelled() {
    let cfg = StreamServerConfig {
        idle_timeout: Some(Duration::from_millis(300)),
        ..Default::default()
    };
    let (srv, backend) = server_with(cfg).await;
    let url = srv
        .issue_exec(exec_req(&["sleep"], false, true, false))
        .unwrap();
    let mut c = WsClient::connect(&url, "v5.channel.k8s.io").await.unwrap();
    let t = tokio::time::timeout(Duration::from_secs(5), c.collect());
    t.await.expect("idle session was not closed").unwrap();
    wait_cancelled(&backend).await;
    // Traffic keeps a session alive past the timeout.
    let url = srv
        .issue_exec(exec_req(&["cat"], false, true, false))
        .unwrap();
    let mut c = WsClient::connect(&url, "v5.channel.k8s.io").await.unwrap();
    for _ in 0..6 {
        c.send(0, b"tick").await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.close_channel(0).await.unwrap();
    assert_eq!(c.collect().await.unwrap()[&1], b"ticktickticktickticktick");
}
