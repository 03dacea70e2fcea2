//! Containers: what they are asked to be ([`config`]), the OCI spec that makes them so
//! ([`spec`]), and their lifecycle through the pod's monitor.
//!
//! ```text
//!  create ──▶ Created ──start──▶ Running ──exit/stop──▶ Exited ──remove──▶ (gone)
//!                └────────────────stop──────────────────▲
//!  (monitor lost while Created/Running ──▶ Exited, reason MonitorLost)
//! ```

mod attach;
mod caps;
pub mod config;
mod create;
mod exec;
mod lifecycle;
pub mod spec;
pub(crate) mod stats;
mod status;
mod update;
pub mod user;
mod volumes;
mod watch;

pub use attach::AttachTarget;
pub use exec::{ExecOutput, StreamsRequest};
pub use stats::{ContainerStats, LayerUsage, PodStats, LAYER_TTL};
pub use status::{ContainerFilter, ContainerState, ContainerStatus, ContainerUser};
