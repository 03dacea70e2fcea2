//! Streaming end to end: `Exec`, `Attach` and `PortForward` URLs from a real criusd,
//! served to crius-stream's own client over SPDY/3.1 and WebSocket, against real
//! containers of the busybox fixture. Needs root.
#![allow(clippy::unwrap_used)] // test code: panics are failures

mod common;

use std::time::{Duration, Instant};

use common::{container_config, pod_config, run_container, run_pod, setup, setup_with, Setup};
use crius::api;
use crius::client::CriClient;
use crius_stream::client::spdy::{ClientStream, PortForwardClient, SpdyClient};
use crius_stream::client::ws::{ExecOutput, PortEvent, WsClient, WsPortForward};
use crius_stream::ws::frame::OP_BINARY;
use serde_json::Value;
use tonic::Code;

const V4: &str = "v4.channel.k8s.io";
const V5: &str = "v5.channel.k8s.io";

/// A pod with one running container of the busybox image.
async fn running(s: &mut Setup, name: &str, cmd: &[&str], tty: bool) -> (String, String) {
    let (pod, sandbox) = run_pod(s, name).await;
    let mut config = container_config(&s.image, name, cmd);
    config.tty = tty;
    config.stdin = tty;
    let id = run_container(s, &pod, &sandbox, config).await;
    (pod, id)
}

fn exec_request(id: &str, cmd: &[&str], tty: bool, stdin: bool) -> api::ExecRequest {
    api::ExecRequest {
        container_id: id.into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        tty,
        stdin,
        stdout: true,
        stderr: !tty,
    }
}

async fn exec_url(client: &mut CriClient, r: api::ExecRequest) -> Result<String, tonic::Status> {
    Ok(client.runtime.exec(r).await?.into_inner().url)
}

async fn attach_url(
    client: &mut CriClient,
    r: api::AttachRequest,
) -> Result<String, tonic::Status> {
    Ok(client.runtime.attach(r).await?.into_inner().url)
}

async fn port_forward_url(
    client: &mut CriClient,
    pod: &str,
    ports: &[i32],
) -> Result<String, tonic::Status> {
    let r = api::PortForwardRequest {
        pod_sandbox_id: pod.into(),
        port: ports.to_vec(),
    };
    Ok(client.runtime.port_forward(r).await?.into_inner().url)
}

/// Runs `cmd` over WebSocket v5 with `stdin` (then closed).
async fn ws_exec(
    client: &mut CriClient,
    id: &str,
    cmd: &[&str],
    stdin: Option<&[u8]>,
) -> ExecOutput {
    let url = exec_url(client, exec_request(id, cmd, false, stdin.is_some()))
        .await
        .unwrap();
    WsClient::exec(&url, stdin).await.unwrap()
}

/// Opens the remotecommand streams of `kinds` on a SPDY session.
async fn spdy_streams(c: &mut SpdyClient, kinds: &[&str]) -> Vec<ClientStream> {
    let mut streams = Vec::new();
    for kind in kinds {
        streams.push(c.open(&[("streamType", kind)]).await.unwrap());
    }
    streams
}

/// The exit code a v4 Status JSON reports (0 for Success).
fn exit_code(status: &[u8]) -> i32 {
    let v: Value = serde_json::from_slice(status).unwrap();
    if v["status"] == "Success" {
        return 0;
    }
    assert_eq!(v["reason"], "NonZeroExitCode", "{v}");
    v["details"]["causes"][0]["message"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn exec_without_tty_carries_output_and_exit_codes() {
    let Some(mut s) = setup("stream-exec").await else {
        return;
    };
    let (_, id) = running(&mut s, "exec", &["sleep", "1000"], false).await;

    let out = ws_exec(
        &mut s.client,
        &id,
        &["sh", "-c", "hostname; echo err >&2"],
        None,
    )
    .await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "exec-host\n",
        "{}",
        String::from_utf8_lossy(&out.error)
    );
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    assert_eq!(out.exit_code(), Some(0));

    let out = ws_exec(&mut s.client, &id, &["false"], None).await;
    assert_eq!(
        out.exit_code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.error)
    );

    // The same over SPDY, as kubelet and crictl speak it; a short id prefix works too.
    let url = exec_url(
        &mut s.client,
        exec_request(&id[..12], &["sh", "-c", "echo out; exit 3"], false, false),
    )
    .await
    .unwrap();
    let mut c = SpdyClient::connect(&url, &[V4], false).await.unwrap();
    let mut st = spdy_streams(&mut c, &["error", "stdout", "stderr"]).await;
    assert_eq!(st[1].read_all().await, b"out\n");
    assert!(st[2].read_all().await.is_empty());
    assert_eq!(exit_code(&st[0].read_all().await), 3);
}

#[tokio::test]
async fn exec_stdin_is_echoed_through_cat() {
    let Some(mut s) = setup("stream-cat").await else {
        return;
    };
    let (_, id) = running(&mut s, "cat", &["sleep", "1000"], false).await;

    let out = ws_exec(&mut s.client, &id, &["cat"], Some(b"hello through cat")).await;
    assert_eq!(out.stdout, b"hello through cat");
    assert_eq!(out.exit_code(), Some(0));

    // A megabyte over SPDY: the process reads EOF once the client closes stdin.
    let data: Vec<u8> = (0..1u32 << 20)
        .map(|i| i.wrapping_mul(2654435761).to_le_bytes()[3])
        .collect();
    let url = exec_url(&mut s.client, exec_request(&id, &["cat"], false, true))
        .await
        .unwrap();
    let mut c = SpdyClient::connect(&url, &[V4], true).await.unwrap();
    let st = spdy_streams(&mut c, &["error", "stdin", "stdout", "stderr"]).await;
    let [mut error, stdin, mut stdout, _stderr]: [ClientStream; 4] = st.try_into().unwrap();
    let ((), received) = tokio::join!(
        async {
            stdin.send(&data).await.unwrap();
            stdin.close().await.unwrap();
        },
        async {
            let mut out = Vec::new();
            while let Some(chunk) = stdout.next().await {
                out.extend_from_slice(&chunk);
            }
            out
        }
    );
    assert_eq!(received.len(), data.len());
    assert!(received == data, "cat returned different bytes");
    assert_eq!(exit_code(&error.read_all().await), 0);
}

#[tokio::test]
async fn exec_with_tty_has_a_terminal_that_resizes() {
    let Some(mut s) = setup("stream-tty").await else {
        return;
    };
    let (_, id) = running(&mut s, "tty", &["sleep", "1000"], false).await;

    // A terminal turns "\n" into "\r\n" and makes stdin a tty.
    let url = exec_url(
        &mut s.client,
        exec_request(
            &id,
            &["sh", "-c", "test -t 0 && echo is a tty"],
            true,
            false,
        ),
    )
    .await
    .unwrap();
    let out = WsClient::exec(&url, None).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "is a tty\r\n");
    assert_eq!(out.exit_code(), Some(0));

    // An interactive shell over SPDY: resize, then ask the terminal its size.
    let url = exec_url(&mut s.client, exec_request(&id, &["sh"], true, true))
        .await
        .unwrap();
    let mut c = SpdyClient::connect(&url, &[V4], false).await.unwrap();
    let mut st = spdy_streams(&mut c, &["error", "stdin", "stdout", "resize"]).await;
    st[3].send(b"{\"Width\":123,\"Height\":45}").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("45 123") {
        assert!(
            Instant::now() < deadline,
            "stty never reported 45 rows, 123 columns: {}",
            String::from_utf8_lossy(&seen)
        );
        st[1].send(b"stty size\n").await.unwrap();
        if let Ok(Some(chunk)) =
            tokio::time::timeout(Duration::from_millis(500), st[2].next()).await
        {
            seen.extend_from_slice(&chunk);
        }
    }
    st[3].send(b"{\"Width\":80,\"Height\":24}").await.unwrap();
    st[1].send(b"sleep 0.2; stty size; exit 4\n").await.unwrap();
    let rest = st[2].read_all().await;
    assert!(
        String::from_utf8_lossy(&rest).contains("24 80"),
        "{}",
        String::from_utf8_lossy(&rest)
    );
    assert_eq!(exit_code(&st[0].read_all().await), 4);
}

/// Reads a v5 session until `count` lines containing `needle` arrived on stdout.
async fn ws_lines(c: &mut WsClient, needle: &str, count: usize) -> String {
    let mut text = String::new();
    while text.matches(needle).count() < count {
        let frame = c.recv().await.unwrap().expect("session ended early");
        if frame.opcode == OP_BINARY && frame.payload.first() == Some(&1) {
            text.push_str(&String::from_utf8_lossy(&frame.payload[1..]));
        }
    }
    text
}

#[tokio::test]
async fn attach_shows_the_output_to_every_client() {
    let Some(mut s) = setup("stream-attach").await else {
        return;
    };
    let counter = "i=0; while true; do echo count $i; i=$((i+1)); sleep 0.1; done";
    let (_, id) = running(&mut s, "counter", &["sh", "-c", counter], false).await;
    let request = api::AttachRequest {
        container_id: id.clone(),
        stdin: false,
        tty: false,
        stdout: true,
        stderr: true,
    };
    let url1 = attach_url(&mut s.client, request.clone()).await.unwrap();
    let url2 = attach_url(&mut s.client, request).await.unwrap();
    let mut ws = WsClient::connect(&url1, V5).await.unwrap();
    let mut spdy = SpdyClient::connect(&url2, &[V4], false).await.unwrap();
    let mut st = spdy_streams(&mut spdy, &["error", "stdout", "stderr"]).await;

    let ws_text = ws_lines(&mut ws, "count ", 5).await;
    let mut spdy_text = String::new();
    while spdy_text.matches("count ").count() < 5 {
        let chunk = st[1].next().await.expect("attach ended early");
        spdy_text.push_str(&String::from_utf8_lossy(&chunk));
    }
    // Both see the live counter (not a replay from the start of the log).
    for text in [&ws_text, &spdy_text] {
        assert!(text.lines().any(|l| l.starts_with("count ")), "{text}");
    }
    drop(ws);
    spdy.go_away().await.unwrap();
    // Detaching leaves the container running.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        common::status(&mut s, &id).await.state,
        api::ContainerState::ContainerRunning as i32
    );
}

#[tokio::test]
async fn attach_forwards_stdin_to_a_tty_container() {
    let Some(mut s) = setup("stream-attach-in").await else {
        return;
    };
    let (_, id) = running(&mut s, "shell", &["sh"], true).await;
    let url = attach_url(
        &mut s.client,
        api::AttachRequest {
            container_id: id.clone(),
            stdin: true,
            tty: true,
            stdout: true,
            stderr: false,
        },
    )
    .await
    .unwrap();
    let mut c = SpdyClient::connect(&url, &[V4], false).await.unwrap();
    let mut st = spdy_streams(&mut c, &["error", "stdin", "stdout", "resize"]).await;
    st[1].send(b"echo attached-$((6*7))\n").await.unwrap();
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !seen.contains("attached-42") {
        assert!(
            Instant::now() < deadline,
            "no answer from the shell: {seen}"
        );
        if let Ok(Some(chunk)) = tokio::time::timeout(Duration::from_secs(1), st[2].next()).await {
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
    // `exit` ends the container, and with it the session.
    st[1].send(b"exit\n").await.unwrap();
    st[2].read_all().await;
    common::wait_exited(&mut s, &id).await;
}

/// A pod with a `cat` container whose stdin is open, closed after the first attach
/// detaches when `stdin_once`.
async fn cat_with_stdin(s: &mut Setup, name: &str, stdin_once: bool) -> String {
    let (pod, sandbox) = run_pod(s, name).await;
    let mut config = container_config(&s.image, name, &["cat"]);
    config.stdin = true;
    config.stdin_once = stdin_once;
    run_container(s, &pod, &sandbox, config).await
}

async fn attach_stdin_url(s: &mut Setup, id: &str) -> String {
    let r = api::AttachRequest {
        container_id: id.into(),
        stdin: true,
        tty: false,
        stdout: true,
        stderr: true,
    };
    attach_url(&mut s.client, r).await.unwrap()
}

/// Attaches over SPDY, writes `line` and waits for `cat` to echo it; then closes stdin.
async fn spdy_attach_echo(url: &str, line: &str) {
    let mut c = SpdyClient::connect(url, &[V4], false).await.unwrap();
    let mut st = spdy_streams(&mut c, &["error", "stdin", "stdout", "stderr"]).await;
    st[1].send(line.as_bytes()).await.unwrap();
    let mut seen = String::new();
    while !seen.contains(line) {
        let chunk = tokio::time::timeout(Duration::from_secs(20), st[2].next())
            .await
            .expect("no echo from cat")
            .expect("attach ended before the echo");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    st[1].close().await.unwrap();
}

/// Attaches over WebSocket v5, writes `line` and waits for the echo; then closes stdin.
async fn ws_attach_echo(url: &str, line: &str) -> WsClient {
    let mut c = WsClient::connect(url, V5).await.unwrap();
    c.send(0, line.as_bytes()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(20), ws_lines(&mut c, line, 1))
        .await
        .expect("no echo from cat");
    c.close_channel(0).await.unwrap();
    c
}

#[tokio::test]
async fn attach_stdin_once_closes_the_containers_stdin() {
    let Some(mut s) = setup("stream-stdin-once").await else {
        return;
    };
    // Over SPDY: closing the client's stdin ends cat, which exits 0.
    let id = cat_with_stdin(&mut s, "once-spdy", true).await;
    let url = attach_stdin_url(&mut s, &id).await;
    spdy_attach_echo(&url, "once over spdy\n").await;
    let st = common::wait_exited(&mut s, &id).await;
    assert_eq!(st.exit_code, 0, "{st:?}");

    // Over WebSocket: the v5 stream close does the same.
    let id = cat_with_stdin(&mut s, "once-ws", true).await;
    let url = attach_stdin_url(&mut s, &id).await;
    let c = ws_attach_echo(&url, "once over websocket\n").await;
    let st = common::wait_exited(&mut s, &id).await;
    assert_eq!(st.exit_code, 0, "{st:?}");
    drop(c);
}

#[tokio::test]
async fn attach_without_stdin_once_keeps_the_containers_stdin() {
    let Some(mut s) = setup("stream-stdin-kept").await else {
        return;
    };
    let id = cat_with_stdin(&mut s, "kept", false).await;
    let url = attach_stdin_url(&mut s, &id).await;
    spdy_attach_echo(&url, "first attach\n").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        common::status(&mut s, &id).await.state,
        api::ContainerState::ContainerRunning as i32,
        "cat saw end of file after the first attach"
    );
    // A second attacher (over WebSocket this time) still reaches cat's stdin.
    let url = attach_stdin_url(&mut s, &id).await;
    let c = ws_attach_echo(&url, "second attach\n").await;
    drop(c);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        common::status(&mut s, &id).await.state,
        api::ContainerState::ContainerRunning as i32
    );
}

/// A pod whose container serves /www with busybox httpd on port 8080, answering.
async fn httpd_pod(s: &mut Setup, name: &str, setup_www: &str) -> String {
    let script = format!("mkdir -p /www && {setup_www} && exec httpd -f -p 8080 -h /www");
    let (pod, sandbox) = run_pod(s, name).await;
    let config = container_config(&s.image, name, &["sh", "-c", &script]);
    let id = run_container(s, &pod, &sandbox, config).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, _, _) = common::exec(
            &mut s.client,
            &id,
            &[
                "wget",
                "-q",
                "-O",
                "/dev/null",
                "http://127.0.0.1:8080/ready",
            ],
        )
        .await;
        if code == 0 {
            return pod;
        }
        assert!(
            Instant::now() < deadline,
            "httpd never answered in pod {name}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends an HTTP/1.0 GET for `path` on a forwarded stream pair; returns the whole response.
async fn http_get(data: &mut ClientStream, error: &mut ClientStream, path: &str) -> Vec<u8> {
    data.send(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let response = data.read_all().await;
    // As kubectl does once its local client is gone: the session then ends.
    data.close().await.unwrap();
    let err = error.read_all().await;
    assert!(err.is_empty(), "{}", String::from_utf8_lossy(&err));
    response
}

#[tokio::test]
async fn port_forward_reaches_httpd_with_many_streams_on_one_connection() {
    let Some(mut s) = setup("stream-pf").await else {
        return;
    };
    let pod = httpd_pod(
        &mut s,
        "web",
        "echo hello from httpd > /www/index.html && touch /www/ready",
    )
    .await;
    let url = port_forward_url(&mut s.client, &pod, &[8080, 9])
        .await
        .unwrap();
    let mut pf = PortForwardClient::connect(&url).await.unwrap();
    let mut pairs = Vec::new();
    for _ in 0..8 {
        pairs.push(pf.open(8080).await.unwrap());
    }
    let responses =
        futures_join_all(pairs.iter_mut().map(|(d, e)| http_get(d, e, "/index.html"))).await;
    for r in responses {
        let text = String::from_utf8_lossy(&r);
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\nhello from httpd\n"), "{text}");
    }
    // A port nothing listens on: the error stream says so, the connection stays usable.
    let (mut d, mut e) = pf.open(9).await.unwrap();
    let err = String::from_utf8_lossy(&e.read_all().await).into_owned();
    assert!(err.contains("port 9"), "{err}");
    assert!(d.read_all().await.is_empty());
    let (mut d, mut e) = pf.open(8080).await.unwrap();
    assert!(http_get(&mut d, &mut e, "/index.html")
        .await
        .ends_with(b"hello from httpd\n"));
}

#[tokio::test]
async fn port_forward_over_websocket_fetches_a_file_from_httpd() {
    let Some(mut s) = setup("stream-pf-ws").await else {
        return;
    };
    // 300 KB of every byte value, more than one WebSocket message.
    let pod = httpd_pod(
        &mut s,
        "webws",
        "all=$(printf '\\\\%03o' $(seq 0 255)); i=0; \
         while [ $i -lt 1200 ]; do printf \"$all\"; i=$((i+1)); done > /www/file; \
         touch /www/ready",
    )
    .await;
    let url = port_forward_url(&mut s.client, &pod, &[8080, 9])
        .await
        .unwrap();
    let mut pf = WsPortForward::connect(&url, &[8080, 9]).await.unwrap();
    pf.send(0, b"GET /file HTTP/1.0\r\n\r\n").await.unwrap();
    // The second port has nothing listening: its error channel says so.
    let mut port9_error = Vec::new();
    let mut buf = Vec::new();
    let (head, body) = loop {
        match pf.recv().await.unwrap().expect("session ended early") {
            PortEvent::Data(0, d) => buf.extend_from_slice(&d),
            PortEvent::Error(1, e) => port9_error.extend_from_slice(&e),
            other => panic!("unexpected {other:?}"),
        }
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        if buf.len() >= end + 4 + 1200 * 256 {
            break (
                String::from_utf8_lossy(&buf[..end]).into_owned(),
                buf[end + 4..].to_vec(),
            );
        }
    };
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    let expected: Vec<u8> = (0..1200).flat_map(|_| 0..=255u8).collect();
    assert_eq!(body.len(), expected.len());
    assert!(body == expected, "the file arrived with different bytes");
    while port9_error.is_empty() {
        match pf.recv().await.unwrap().expect("no error for port 9") {
            PortEvent::Error(1, e) => port9_error.extend_from_slice(&e),
            other => panic!("unexpected {other:?}"),
        }
    }
    let err = String::from_utf8_lossy(&port9_error);
    assert!(err.contains("port 9"), "{err}");
    pf.close().await.unwrap();
}

/// Polls the futures concurrently and returns their outputs in order.
async fn futures_join_all<F: std::future::Future>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output> {
    let mut pinned: Vec<_> = futures.map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, slot) in pinned.iter_mut().zip(out.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(|o| o.unwrap()).collect()
}

/// `seq 1 LAST`: numbers one per line, 105 MB (over 100 MiB), cheap to check as it arrives.
const LAST: u64 = 13_000_000;

#[tokio::test]
async fn port_forward_copies_100_mib_intact() {
    let Some(mut s) = setup("stream-pf-big").await else {
        return;
    };
    let pod = httpd_pod(
        &mut s,
        "big",
        &format!("seq 1 {LAST} > /www/big && touch /www/ready"),
    )
    .await;
    let url = port_forward_url(&mut s.client, &pod, &[8080])
        .await
        .unwrap();
    let mut pf = PortForwardClient::connect(&url).await.unwrap();
    let (data, mut error) = pf.open(8080).await.unwrap();
    data.send(b"GET /big HTTP/1.0\r\n\r\n").await.unwrap();
    let mut data = data;
    // Parse the head, then check the body line by line against what seq wrote.
    let mut buf = Vec::new();
    let mut body_len = 0u64;
    let mut next = 1u64;
    let mut head_done = false;
    while let Some(chunk) = data.next().await {
        buf.extend_from_slice(&chunk);
        if !head_done {
            let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
            buf.drain(..end + 4);
            head_done = true;
        }
        let complete = buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        for line in buf[..complete]
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
        {
            assert_eq!(line, next.to_string().as_bytes(), "line {next} corrupted");
            next += 1;
        }
        body_len += u64::try_from(complete).unwrap();
        buf.drain(..complete);
    }
    data.close().await.unwrap();
    assert!(buf.is_empty(), "trailing partial line");
    assert_eq!(next, LAST + 1, "lines missing");
    assert!(body_len > 100 << 20, "only {body_len} bytes");
    assert!(error.read_all().await.is_empty());
}

#[tokio::test]
async fn sixteen_concurrent_execs() {
    let Some(mut s) = setup("stream-16").await else {
        return;
    };
    let (_, id) = running(&mut s, "many", &["sleep", "1000"], false).await;
    let mut tasks = Vec::new();
    for i in 0..16 {
        let mut client = s.client.clone();
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            let script = format!("read line; echo $line-{i}; exit {i}");
            let url = exec_url(
                &mut client,
                exec_request(&id, &["sh", "-c", &script], false, true),
            )
            .await
            .unwrap();
            let input = "exec\n";
            if i % 2 == 0 {
                let out = WsClient::exec(&url, Some(input.as_bytes())).await.unwrap();
                assert_eq!(String::from_utf8_lossy(&out.stdout), format!("exec-{i}\n"));
                assert_eq!(out.exit_code(), Some(i));
            } else {
                let mut c = SpdyClient::connect(&url, &[V4], false).await.unwrap();
                let mut st = spdy_streams(&mut c, &["error", "stdin", "stdout", "stderr"]).await;
                st[1].send(input.as_bytes()).await.unwrap();
                st[1].close().await.unwrap();
                assert_eq!(
                    String::from_utf8_lossy(&st[2].read_all().await),
                    format!("exec-{i}\n")
                );
                assert_eq!(exit_code(&st[0].read_all().await), i);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test]
async fn tokens_are_single_use_and_expire() {
    let Some(mut s) = setup_with("stream-tokens", |l| {
        l.add_config("[stream]\ntoken_ttl_seconds = 1\n")
    })
    .await
    else {
        return;
    };
    let (_, id) = running(&mut s, "tokens", &["sleep", "1000"], false).await;
    let refused = |r: crius_stream::Result<WsClient>| match r {
        Err(crius_stream::Error::Refused { status }) => status,
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("connection accepted"),
    };

    // Used once: the second use is refused.
    let url = exec_url(&mut s.client, exec_request(&id, &["true"], false, false))
        .await
        .unwrap();
    assert_eq!(
        WsClient::exec(&url, None).await.unwrap().exit_code(),
        Some(0)
    );
    assert_eq!(refused(WsClient::connect(&url, V5).await), 404);

    // A token never issued.
    let (base, token) = url.rsplit_once('/').unwrap();
    let forged: String = token.chars().rev().collect();
    assert_ne!(forged, token);
    assert_eq!(
        refused(WsClient::connect(&format!("{base}/{forged}"), V5).await),
        404
    );

    // An exec token is not a port-forward token.
    let url = exec_url(&mut s.client, exec_request(&id, &["true"], false, false))
        .await
        .unwrap();
    let moved = url.replace("/exec/", "/portforward/");
    assert_eq!(
        refused(WsClient::connect(&moved, "portforward.k8s.io").await),
        404
    );

    // Expired after token_ttl_seconds.
    let url = exec_url(&mut s.client, exec_request(&id, &["true"], false, false))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(refused(WsClient::connect(&url, V5).await), 404);
}

#[tokio::test]
async fn invalid_requests_get_the_right_codes() {
    let Some(mut s) = setup("stream-invalid").await else {
        return;
    };
    let (pod, id) = running(&mut s, "valid", &["sleep", "1000"], false).await;
    let c = &mut s.client;
    let code = |r: Result<String, tonic::Status>| r.unwrap_err().code();

    let mut r = exec_request(&id, &["true"], true, false);
    r.stderr = true;
    let err = exec_url(c, r).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("tty and stderr"),
        "{}",
        err.message()
    );
    let mut r = exec_request(&id, &["true"], false, false);
    (r.stdout, r.stderr) = (false, false);
    assert_eq!(code(exec_url(c, r).await), Code::InvalidArgument);
    assert_eq!(
        code(exec_url(c, exec_request(&id, &[], false, false)).await),
        Code::InvalidArgument
    );
    let err = exec_url(c, exec_request("nosuchcontainer", &["true"], false, false))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(
        err.message().contains("nosuchcontainer"),
        "{}",
        err.message()
    );

    let attach = |tty: bool, stdout: bool, stderr: bool| api::AttachRequest {
        container_id: id.clone(),
        stdin: false,
        tty,
        stdout,
        stderr,
    };
    assert_eq!(
        code(attach_url(c, attach(false, false, false)).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(attach_url(c, attach(true, true, true)).await),
        Code::InvalidArgument
    );
    // The container has no terminal to attach to.
    let err = attach_url(c, attach(true, true, false)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("without tty"), "{}", err.message());
    let mut r = attach(false, true, false);
    r.container_id = "nosuchcontainer".into();
    assert_eq!(code(attach_url(c, r).await), Code::NotFound);

    for bad in [0, -1, 65536] {
        let err = port_forward_url(c, &pod, &[80, bad]).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{bad}");
        assert!(
            err.message().contains("between 1 and 65535"),
            "{}",
            err.message()
        );
    }
    assert_eq!(
        code(port_forward_url(c, "nosuchpod", &[80]).await),
        Code::NotFound
    );

    // A stopped container, then a stopped pod.
    c.runtime
        .stop_container(api::StopContainerRequest {
            container_id: id.clone(),
            timeout: 0,
        })
        .await
        .unwrap();
    let err = exec_url(c, exec_request(&id, &["true"], false, false))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("not running"), "{}", err.message());
    assert_eq!(
        code(attach_url(c, attach(false, true, true)).await),
        Code::FailedPrecondition
    );
    common::stop_pod(c, &pod).await;
    assert_eq!(
        code(port_forward_url(c, &pod, &[80]).await),
        Code::FailedPrecondition
    );
    // Checkpointing stays unimplemented.
    let err = c
        .runtime
        .checkpoint_container(api::CheckpointContainerRequest {
            container_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
}

#[tokio::test]
async fn host_network_pod_forwards_to_the_host_loopback() {
    let Some(mut s) = setup("stream-pf-host").await else {
        return;
    };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = [0u8; 5];
        conn.read_exact(&mut buf).unwrap();
        conn.write_all(b"host:").unwrap();
        conn.write_all(&buf).unwrap();
    });
    let mut config = pod_config(&s.layout, "hostnet");
    config.linux = Some(api::LinuxPodSandboxConfig {
        security_context: Some(api::LinuxSandboxSecurityContext {
            namespace_options: Some(api::NamespaceOption {
                network: api::NamespaceMode::Node as i32,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let pod = common::run_pod_with(&mut s.client, &config).await;
    let url = port_forward_url(&mut s.client, &pod, &[]).await.unwrap();
    let mut pf = PortForwardClient::connect(&url).await.unwrap();
    let (mut d, mut e) = pf.open(port).await.unwrap();
    d.send(b"hello").await.unwrap();
    d.close().await.unwrap();
    assert_eq!(d.read_all().await, b"host:hello");
    assert!(e.read_all().await.is_empty());
    server.join().unwrap();
}

#[tokio::test]
async fn a_client_that_leaves_takes_its_exec_process_with_it() {
    let Some(mut s) = setup("stream-cancel").await else {
        return;
    };
    let (_, id) = running(&mut s, "cancel", &["sleep", "1000"], false).await;
    let url = exec_url(
        &mut s.client,
        exec_request(&id, &["sleep", "777"], false, true),
    )
    .await
    .unwrap();
    let c = WsClient::connect(&url, V5).await.unwrap();
    let sleeping = |ps: &str| ps.lines().any(|l| l.contains("sleep 777"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !sleeping(
        &common::exec(&mut s.client, &id, &["ps", "-o", "args"])
            .await
            .1,
    ) {
        assert!(Instant::now() < deadline, "the exec never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(c);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ps = common::exec(&mut s.client, &id, &["ps", "-o", "args"])
            .await
            .1;
        if !sleeping(&ps) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the exec outlived its client:\n{ps}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
