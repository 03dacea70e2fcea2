//! The crius domain, free of protobuf and gRPC.
//!
//! `crius-core` owns what the runtime *is*: its identity and version, its health
//! conditions, the settings kubelet pushes (`UpdateRuntimeConfig`), and — as later issues
//! land — pods, containers and images as plain Rust types, orchestrated with rollback.
//! It refuses to own wire formats (the root package translates CRI messages into these
//! types) and never forks: container processes are created by `crius-monitor`.
#![forbid(unsafe_code)]

mod cgroup;
pub mod container;
mod decoded;
mod error;
pub mod events;
mod inflight;
mod network;
pub mod pod;
mod rollback;
mod runtime;

pub use cgroup::{CgroupDriver, CgroupDriverChoice, CgroupVersion};
pub use crius_image::content::BadBlob;
pub use crius_image::{FsUsage, Image, ImageConfig, PullAuth, RegistryConfig};
pub use error::{Error, ErrorKind, Result};
pub use network::{NetworkMode, NetworkOptions, DEFAULT_POD_CIDR};
pub use runtime::{
    now_ns, Condition, Runtime, RuntimeHandler, RuntimeHandlerConfig, RuntimeOptions,
    RuntimeStatus, VersionInfo, NETWORK_READY, RUNTIME_READY,
};
