//! `Exec`, `Attach` and `PortForward`: validate through the domain, then issue a
//! single-use URL on the streaming server, which serves the session (see `crate::stream`).

use std::sync::Arc;

use crius_core::container::StreamsRequest;
use crius_core::Runtime;
use crius_stream::StreamServer;

use super::{blocking, CriError};
use crate::api;

pub(crate) async fn exec(
    rt: &Arc<Runtime>,
    server: &Arc<StreamServer>,
    r: api::ExecRequest,
) -> Result<api::ExecResponse, CriError> {
    let streams = StreamsRequest {
        stdin: r.stdin,
        stdout: r.stdout,
        stderr: r.stderr,
        tty: r.tty,
    };
    let rt = rt.clone();
    let cmd = r.cmd.clone();
    let id = r.container_id;
    let id = blocking(move || rt.check_exec(&id, &cmd, streams).map_err(CriError::from)).await?;
    let url = server.issue_exec(crius_stream::ExecRequest {
        container_id: id,
        cmd: r.cmd,
        tty: r.tty,
        stdin: r.stdin,
        stdout: r.stdout,
        stderr: r.stderr,
    })?;
    Ok(api::ExecResponse { url })
}

pub(crate) async fn attach(
    rt: &Arc<Runtime>,
    server: &Arc<StreamServer>,
    r: api::AttachRequest,
) -> Result<api::AttachResponse, CriError> {
    let streams = StreamsRequest {
        stdin: r.stdin,
        stdout: r.stdout,
        stderr: r.stderr,
        tty: r.tty,
    };
    let rt = rt.clone();
    let id = r.container_id;
    let target = blocking(move || rt.check_attach(&id, streams).map_err(CriError::from)).await?;
    // The issued request keeps the client's tty: it decides which streams the client
    // opens (a resize stream only with tty). The backend reads the container's own.
    let url = server.issue_attach(crius_stream::AttachRequest {
        container_id: target.id,
        tty: r.tty,
        stdin: r.stdin,
        stdout: r.stdout,
        stderr: r.stderr,
    })?;
    Ok(api::AttachResponse { url })
}

pub(crate) async fn port_forward(
    rt: &Arc<Runtime>,
    server: &Arc<StreamServer>,
    r: api::PortForwardRequest,
) -> Result<api::PortForwardResponse, CriError> {
    let ports = ports(&r.port)?;
    let rt = rt.clone();
    let id = r.pod_sandbox_id;
    let id = blocking(move || rt.check_port_forward(&id).map_err(CriError::from)).await?;
    let url = server.issue_port_forward(&id, &ports)?;
    Ok(api::PortForwardResponse { url })
}

/// The requested ports as TCP ports; an empty list lets the client name any port.
fn ports(requested: &[i32]) -> Result<Vec<u16>, CriError> {
    requested
        .iter()
        .map(|&p| {
            u16::try_from(p).ok().filter(|&p| p != 0).ok_or_else(|| {
                CriError::InvalidArgument(format!(
                    "port {p} is not a TCP port; give ports between 1 and 65535"
                ))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_must_be_tcp_ports() {
        assert_eq!(ports(&[80, 65535, 1]).unwrap(), vec![80, 65535, 1]);
        assert!(ports(&[]).unwrap().is_empty());
        for bad in [0, -1, 65536, i32::MAX] {
            let err = ports(&[80, bad]).unwrap_err();
            assert!(matches!(err, CriError::InvalidArgument(_)), "{bad}");
            assert!(err.to_string().contains(&bad.to_string()), "{err}");
        }
    }
}
