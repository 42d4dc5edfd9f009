//! The controller: watches InvoiceServices, their Deployments (or Argo Rollouts), Pods, mode ConfigMaps and the
//! Nodes (reflector caches, no list calls per reconcile), measures the whole fleet once per
//! interval with batched Prometheus queries, and reconciles each service through the pipeline
//! `observe -> evaluate -> decide -> act -> report`. One module per step of the loop:
//!
//! | module | job | IO |
//! |---|---|---|
//! | `wiring` | watches, caches, the kube-runtime `Controller`, readiness | watches |
//! | `fleet` | the fleet tick: batched queries, storm census, fleet cycles | Prometheus |
//! | `reconcile` | the per-service driver, one call per step | through the steps |
//! | `observe` | one service's view of the caches | none |
//! | `remediate` | carries out the decision, counts outcomes | actions, intent |
//! | `write` | the status patch and the Events | writes |
//! | `preflight`, `finalize` | refusals the cluster proves; the undo on deletion | both |
//! | `context`, `memory` | shared state; what is remembered per service | none |
//!
//! The pure steps live outside the controller: `crate::evaluate`, `crate::engine`,
//! `crate::report`, `crate::storm`, `crate::foreign`, `crate::preflight`, `crate::undo`.
//!
//! Each fleet tick starts a fleet cycle that ends once every InvoiceService in the store at
//! the tick has been reconciled: its duration is `invoiceops_fleet_cycle_duration_seconds`
//! and one `fleet cycle complete` log line (`services`, `cycle_ms`, `query_ms`); a tick that
//! comes before the previous cycle ended counts in `invoiceops_fleet_cycle_overruns_total`.

mod context;
mod cycle;
mod finalize;
mod fleet;
mod memory;
mod observe;
mod preflight;
mod reconcile;
mod remediate;
mod slim;
mod wiring;
mod write;

pub use self::{
    context::{Caches, Context},
    finalize::FINALIZER,
    observe::pod_deployment,
    reconcile::{annotation_true, reconcile},
    slim::{
        CachedAutoscaler, CachedAutoscalerSpec, CachedContainerStatus, CachedDeployment,
        CachedDeploymentSpec, CachedDeploymentStatus, CachedPauseCondition, CachedPod,
        CachedPodCondition, CachedPodSpec, CachedPodStatus, CachedRollout, CachedRolloutSpec,
        CachedRolloutStatus, CachedScaleTarget,
    },
    wiring::{Runtime, run},
};

use std::time::Duration;

use crate::{prometheus::SliSource, storm::StormSettings};

/// Annotation that pauses remediation of one InvoiceService.
pub const PAUSED_ANNOTATION: &str = "invoiceops.dev/paused";
/// Annotation with which a human asks for a manual fail-back.
pub const FAIL_BACK_ANNOTATION: &str = "invoiceops.dev/fail-back";

/// Why a reconcile failed. Permanent problems (an invalid spec) are not errors: they are
/// reported in status and wait for a change.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Writing status failed.
    #[error("failed to patch the status of {name}")]
    PatchStatus {
        /// The InvoiceService.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Adding or removing the deletion finalizer failed.
    #[error("failed to patch the finalizers of {name}")]
    PatchFinalizers {
        /// The InvoiceService.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The API server declined a reversal on deletion; the finalizer stays.
    #[error("the api server refused to undo {action} for {name}: {reason}")]
    Undo {
        /// The InvoiceService.
        name: String,
        /// The reversal.
        action: &'static str,
        /// The API server's explanation.
        reason: String,
    },
    /// Carrying out an action failed.
    #[error("failed to act on {name}")]
    Act {
        /// The InvoiceService.
        name: String,
        /// What failed.
        #[source]
        source: crate::act::ActError,
    },
}

impl Error {
    /// A fixed label for the `reconcile_errors` metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::PatchStatus { .. } => "patch_status",
            Self::PatchFinalizers { .. } => "patch_finalizers",
            Self::Undo { .. } => "undo_refused",
            Self::Act { source, .. } => source.metric_label(),
        }
    }
}

/// How the services measured by the operator-wide Prometheus and metric profile are queried.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum QueryMode {
    /// One query per SLI and window for the whole fleet, split per service in memory.
    #[default]
    Batched,
    /// One query per service per SLI and window, the way per-object analysis tools work; only
    /// for comparison benchmarks.
    PerService,
}

/// Operator-wide settings of the controller.
#[derive(Clone, Debug)]
pub struct Settings {
    /// How often the batched fleet evaluation runs.
    pub evaluation_interval: Duration,
    /// The short window pod and zone signals are measured over.
    pub detection_window: Duration,
    /// Samples older than this are stale.
    pub stale_after: Duration,
    /// The fleet-wide storm gate: share, minimum and hold period.
    pub storm: StormSettings,
    /// Force DryRun on every service (a cluster-wide switch for a first rollout).
    pub force_dry_run: bool,
    /// Watch only this namespace; all namespaces when `None`.
    pub namespace: Option<String>,
    /// Batched fleet queries, or per-service queries for comparison.
    pub query_mode: QueryMode,
    /// Where the long windows' rates come from (raw counters or recorded series).
    pub sli_source: SliSource,
}

#[cfg(test)]
mod tests;
