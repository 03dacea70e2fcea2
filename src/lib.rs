//! crius: a Kubernetes container runtime serving CRI v1 on a unix socket.
//!
//! This package is the edge. It owns the CRI wire types ([`api`], generated from
//! `proto/runtime/v1/api.proto`), the daemon's configuration ([`config`]), the socket it
//! listens on ([`server`]), the streaming sessions behind `Exec`/`Attach`/`PortForward`
//! URLs ([`stream`]), and the gRPC services ([`cri`]) — thin translations between
//! CRI messages and the protobuf-free domain in `crius-core`, plus crius's own
//! [`admin`] service (image archives, fsck) for the `crius` CLI. tonic and prost never
//! leave this package.
#![forbid(unsafe_code)]

pub mod admin;
pub mod api;
pub mod client;
pub mod config;
pub mod cri;
pub mod server;
pub mod stream;
pub mod telemetry;
