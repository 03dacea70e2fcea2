//! Pods: a set of pinned namespaces held by a per-pod monitor, with no pause container.
//!
//! ```text
//!  run ──▶ Ready ──stop──▶ NotReady ──remove──▶ (gone)
//!   └──(any failure: everything acquired is rolled back, nothing is recorded)
//! ```
//! A pod record is written only once the pod is fully set up, in one transaction; its
//! name key (name, namespace, uid, attempt) is unique, and a retry of an in-flight
//! `run` waits for the first call ([`crate::inflight`]).

pub mod config;
mod files;
mod port_forward;
pub(crate) mod remove;
mod run;
pub(crate) mod shm;
pub(crate) mod status;
mod stop;
pub mod sysctl;
mod update;

pub use status::{PodFilter, PodState, PodStatus};
