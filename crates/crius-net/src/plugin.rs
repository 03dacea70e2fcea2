//! The [`NetworkPlugin`] role and its contract.

use crate::error::Result;
use crate::types::{NetworkReadiness, PodNetworkRequest, PodNetworkStatus};

/// Attaches pods' network namespaces to a network and detaches them again.
///
/// Implementations: [`CniNetwork`](crate::CniNetwork) (CNI plugins from a conf dir) and
/// [`BuiltinNetwork`](crate::BuiltinNetwork) (the `crius0` bridge). Both pass the same
/// conformance suite (`conformance` module of this crate's tests).
///
/// Methods block (they run plugins and talk netlink); async callers use
/// `tokio::task::spawn_blocking`. Implementations are `Send + Sync` and may be called for
/// different pods concurrently; calls for the same pod must be serialised by the caller.
///
/// # Contract
///
/// - `setup` (CNI ADD) attaches the namespace at `req.netns_path` and returns its addresses,
///   primary first. On error nothing it acquired stays behind (interfaces, addresses, host
///   ports, cache files): the partial work is rolled back and the error is
///   [`Error::SetupFailed`](crate::Error::SetupFailed) carrying the cause and any rollback
///   failure. A request that fails validation → `InvalidArgument`; no usable configuration
///   → `FailedPrecondition`; a plugin that overruns its timeout → `DeadlineExceeded`; no free
///   address → `ResourceExhausted`; a host port held by another pod → `AlreadyExists`.
/// - `teardown` (CNI DEL) releases everything `setup` acquired. It is idempotent: tearing
///   down an unknown pod, a pod already torn down, or a pod whose namespace file is gone
///   returns `Ok`. It works from state persisted at `setup` time, so a fresh instance (after
///   a daemon restart) tears down pods set up by an earlier one.
/// - `check` (CNI CHECK) verifies that the pod's network is still as `setup` left it:
///   `NotFound` when the pod was never set up (or was torn down), `FailedPrecondition` or
///   the plugin's error when it differs.
/// - `status` reports whether `setup` can be expected to work now; it reflects changes to
///   the configuration without a restart.
pub trait NetworkPlugin: Send + Sync + std::fmt::Debug {
    /// Attaches the pod to the network (CNI ADD).
    fn setup(&self, req: &PodNetworkRequest) -> Result<PodNetworkStatus>;

    /// Detaches the pod and releases what `setup` acquired (CNI DEL); idempotent.
    fn teardown(&self, req: &PodNetworkRequest) -> Result<()>;

    /// Verifies the pod's network (CNI CHECK).
    fn check(&self, req: &PodNetworkRequest) -> Result<()>;

    /// Whether the network is ready to set up pods (CRI `NetworkReady`).
    fn status(&self) -> NetworkReadiness;

    /// The pods this network holds state for: set up and not yet torn down, or cut short
    /// by a crash during `setup`. A restarted daemon tears down those it has no record of.
    fn attached(&self) -> Result<Vec<String>>;
}
