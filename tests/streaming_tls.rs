//! criusd's `[stream]` TLS settings: refused when incomplete or unreadable, and an
//! `https://` streaming server when both PEM files are good.
#![allow(clippy::unwrap_used)] // test code: panics are failures

mod common;

use common::{run_criusd, Daemon, Layout};

#[test]
fn one_tls_file_alone_is_refused() {
    let layout = Layout::new("stream-tls-one");
    layout.add_config("[stream]\ntls_cert_file = \"/etc/crius/stream.pem\"\n");
    let out = run_criusd(&layout, &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("must be set together"), "{stderr}");
}

#[test]
fn a_missing_certificate_stops_start_up_and_a_good_one_serves_https() {
    let layout = Layout::new("stream-tls");
    let cert = layout.scratch.path().join("stream-cert.pem");
    let key = layout.scratch.path().join("stream-key.pem");
    layout.add_config(&format!(
        "[stream]\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
        cert.display(),
        key.display()
    ));
    let out = run_criusd(&layout, &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&cert.display().to_string()), "{stderr}");

    crius_testkit::tls::self_signed_localhost(&cert, &key).unwrap();
    let daemon = Daemon::start(&layout, &[]);
    let log = daemon.log();
    assert!(log.contains("https://127.0.0.1:"), "{log}");
    assert!(daemon.stop().success());
}
