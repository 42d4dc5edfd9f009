//! Act: carries out a [`PlannedAction`] on the cluster. Does IO (API server writes).
//!
//! The Deployments, Pods, autoscalers and the mode ConfigMap belong to the user, so each
//! action touches only the one field it manages and never rewrites an object:
//!
//! - **RestartPod** evicts the pods (policy/v1 Eviction) instead of deleting them, so the API
//!   server enforces PodDisruptionBudgets. A refusal (429) is an answer, not a failure: it is
//!   returned as [`ActOutcome::Refused`] with the API server's message; a pod already gone
//!   (404) counts as restarted.
//! - **RolloutRestart** does what `kubectl rollout restart` does: a strategic-merge patch of
//!   the `kubectl.kubernetes.io/restartedAt` pod-template annotation, so the Deployment
//!   controller rolls the pods at its own pace (maxSurge/maxUnavailable).
//! - **ScaleOut/ScaleIn** write the `/scale` subresource, which carries nothing but the
//!   replica count. When a HorizontalPodAutoscaler drives the Deployment, its `minReplicas`
//!   is set instead (raising `maxReplicas` if needed), because the HPA would undo a direct
//!   scale on its next sync. When KEDA scales the Deployment, its ScaledObject is written
//!   instead of KEDA's HPA (`minReplicaCount`; a drain pauses it at 0), see [`keda`].
//! - **EnterReadOnly/ExitReadOnly** server-side apply the one ConfigMap key the spec names,
//!   with [`FIELD_MANAGER`] and `force` so the operator takes over just that key; the app
//!   watches the ConfigMap, so no pod is restarted.
//! - **ZoneFailover/ZoneFailBack** scale per-zone Deployments (capacity in the healthy zones
//!   first, then the failed zone; on fail-back the failed zone first), or steer a single
//!   Deployment with a node-affinity requirement (see [`affinity`]). A fail-back canary, and
//!   its withdrawal, scale only the failed zone's Deployment (to 1, and back to 0).
//!
//! Every operation is idempotent: carried out twice (e.g. after the operator restarted before
//! it recorded the action, see [`crate::engine::resume`]), the second run changes nothing — an evicted pod is gone (404), the
//! replica counts, mode key and affinity are already as wanted, and a rollout restart with the
//! same `now` writes the same annotation value, which does not roll the pods again.

pub mod affinity;
mod cluster;
mod error;
pub mod keda;

use std::collections::BTreeMap;

use jiff::Timestamp;
use kube::{Client, ResourceExt};

pub use error::ActError;

use crate::{
    api::{InvoiceService, WorkloadKind},
    engine::{PlannedAction, Step},
};
use cluster::Cluster;

/// The pod-template annotation `kubectl rollout restart` sets; any change of it rolls the pods.
pub const RESTARTED_AT_ANNOTATION: &str = "kubectl.kubernetes.io/restartedAt";

/// On an autoscaler (or KEDA ScaledObject) the operator raised: its floor from before the
/// first ScaleOut, which ScaleIn puts back (then removes the annotation), so the user's floor
/// survives the round trip instead of becoming the Deployment's baseline replica count.
pub const FLOOR_BEFORE_ANNOTATION: &str = "invoiceops.dev/floor-before-scale-out";

/// What a scaling write does to an autoscaler's floor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Floor {
    /// ScaleOut: raised to the replicas, the floor from before the first raise remembered
    /// ([`FLOOR_BEFORE_ANNOTATION`]).
    Raise,
    /// ScaleIn: the remembered floor put back; the replicas when none is remembered.
    Restore,
    /// A zone moving: set to the replicas.
    Set,
}

impl Floor {
    /// The floor to write for `replicas`, given the floor now (`current`) and the one
    /// remembered in `annotations` ([`FLOOR_BEFORE_ANNOTATION`]); and the annotation's new
    /// value when it changes (`Value::Null` removes it). The one rule for HPAs and KEDA's
    /// ScaledObjects.
    pub fn next(
        self,
        replicas: i64,
        current: i64,
        annotations: &BTreeMap<String, String>,
    ) -> (i64, Option<serde_json::Value>) {
        let remembered = annotations
            .get(FLOOR_BEFORE_ANNOTATION)
            .and_then(|value| value.parse::<i64>().ok());
        match (self, remembered) {
            (Self::Restore, Some(before)) => (before, Some(serde_json::Value::Null)),
            (Self::Raise, None) if replicas > current => (
                replicas,
                Some(serde_json::Value::String(current.to_string())),
            ),
            _ => (replicas, None),
        }
    }
}

/// Whether a scale target (`kind`, `api_version`, `name`) is the workload `name` of kind
/// `wanted`: the kind and name match and the API version is of the kind's group (an
/// autoscaler may leave it out for a Deployment).
pub fn scale_target_is(
    kind: &str,
    api_version: Option<&str>,
    target: &str,
    wanted: WorkloadKind,
    name: &str,
) -> bool {
    let group = format!("{}/", wanted.group());
    kind == wanted.as_str()
        && target == name
        && api_version.map_or(wanted == WorkloadKind::Deployment, |version| {
            version.starts_with(&group)
        })
}

/// Who refused an action, as a fixed PascalCase name: [`ActOutcome::Refused`]'s `by`, which
/// `RemediationAllowed` shows as its reason.
pub mod refused_by {
    /// A PodDisruptionBudget allows no disruption now.
    pub const POD_DISRUPTION_BUDGET: &str = "PodDisruptionBudget";
    /// The API server sheds load (429 without a disruption budget named).
    pub const TOO_MANY_REQUESTS: &str = "TooManyRequests";
    /// The operator lacks the permission (403).
    pub const FORBIDDEN: &str = "Forbidden";
    /// The object to act on is gone (404).
    pub const NOT_FOUND: &str = "NotFound";
    /// The API server rejects the write (422).
    pub const INVALID: &str = "Invalid";
}

/// What happened to an action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ActOutcome {
    /// Carried out (or already in effect).
    Applied,
    /// The API server declined it for a reason that is not a failure, such as a
    /// PodDisruptionBudget that allows no disruption now. Nothing was changed.
    Refused {
        /// Who refused, one of [`refused_by`].
        by: &'static str,
        /// The API server's explanation.
        reason: String,
    },
}

/// Carries out `action` for the InvoiceService `service`, in the service's namespace. `now`
/// is written as the rollout-restart time.
pub async fn act(
    client: &Client,
    service: &InvoiceService,
    action: &PlannedAction,
    now: Timestamp,
) -> Result<ActOutcome, ActError> {
    // A permanent refusal (no permission, the target gone, an invalid write) is the API
    // server's answer, recorded like a PodDisruptionBudget's: retrying it at once, as an error
    // would be, only repeats it.
    match carry_out(client, service, action, now).await {
        Err(error) => match error.permanent_refusal() {
            Some((by, reason)) => Ok(ActOutcome::Refused { by, reason }),
            None => Err(error),
        },
        outcome => outcome,
    }
}

async fn carry_out(
    client: &Client,
    service: &InvoiceService,
    action: &PlannedAction,
    now: Timestamp,
) -> Result<ActOutcome, ActError> {
    let namespace = service
        .namespace()
        .ok_or_else(|| ActError::MissingNamespace {
            name: service.name_any(),
        })?;
    let cluster = Cluster {
        client,
        namespace: &namespace,
        kind: service.spec.workload.kind,
    };
    match &action.step {
        Step::RestartPod { pods } => cluster.evict_pods(pods).await,
        Step::RolloutRestart { deployments } => {
            for name in deployments {
                cluster.restart_deployment(name, now).await?;
            }
            Ok(ActOutcome::Applied)
        }
        Step::ScaleOut { replicas } | Step::ScaleIn { replicas } => {
            let floor = if matches!(action.step, Step::ScaleOut { .. }) {
                Floor::Raise
            } else {
                Floor::Restore
            };
            let scaler = cluster.scaler().await?;
            for (name, replicas) in replicas {
                scaler.scale(name, *replicas, floor).await?;
                scale_step_done();
            }
            Ok(ActOutcome::Applied)
        }
        Step::EnterReadOnly => cluster.switch_mode(service, true).await,
        Step::ExitReadOnly => cluster.switch_mode(service, false).await,
        Step::ZoneFailover { zone, replicas, .. } => {
            move_zone(&cluster, service, zone, replicas, true).await
        }
        Step::ZoneFailBack { zone, replicas, .. } => {
            move_zone(&cluster, service, zone, replicas, false).await
        }
    }
}

/// Fails `zone` over (`failing_over`) or back: scales the per-zone Deployments to `replicas`
/// in [`zone_scale_order`], or steers the single Deployment when `replicas` is empty.
async fn move_zone(
    cluster: &Cluster<'_>,
    service: &InvoiceService,
    zone: &str,
    replicas: &BTreeMap<String, i32>,
    failing_over: bool,
) -> Result<ActOutcome, ActError> {
    if replicas.is_empty() {
        let name = service.spec.workload.deployment.as_deref().ok_or_else(|| {
            ActError::NoDeploymentForZone {
                zone: zone.to_owned(),
            }
        })?;
        let label = &service.spec.workload.zone_label;
        cluster.steer(name, label, zone, failing_over).await
    } else {
        let scaler = cluster.scaler().await?;
        for (name, replicas) in zone_scale_order(service, zone, replicas, failing_over) {
            scaler.scale(name, replicas, Floor::Set).await?;
            scale_step_done();
        }
        Ok(ActOutcome::Applied)
    }
}

/// The exit status of a process stopped by the `act-scale-step` fail point (as a SIGKILL
/// would report it: 128 + 9).
pub const KILLED_BY_FAIL_POINT: i32 = 137;

/// One Deployment of a scaling action is written. Home of the fail point `act-scale-step`,
/// the kill hook of the crash-safety tests: with the `failpoints` cargo feature (the
/// end-to-end test crate turns it on, so `cargo build --workspace` has it; the image, built
/// with `-p invoice-operator`, does not) and `FAILPOINTS=act-scale-step=return` the process
/// exits right after the first Deployment is scaled, with `1*off->return` after the second,
/// and so on. Without the variable the fail point does nothing.
fn scale_step_done() {
    #[cfg(feature = "failpoints")]
    fail::fail_point!("act-scale-step", |_| {
        // Exit at once, like a kill: no status write, no graceful shutdown, no lease release.
        eprintln!("fail point act-scale-step: exiting with {KILLED_BY_FAIL_POINT}");
        std::process::exit(KILLED_BY_FAIL_POINT)
    });
}

/// The per-zone Deployments in the order they are scaled: on failover the healthy zones
/// first (capacity before drain), then the failed zone; on fail-back the failed zone first,
/// then the others. By name within each group.
pub fn zone_scale_order<'a>(
    service: &InvoiceService,
    zone: &str,
    replicas: &'a BTreeMap<String, i32>,
    failing_over: bool,
) -> Vec<(&'a str, i32)> {
    let in_zone = |name: &str| {
        service
            .spec
            .workload
            .deployments
            .iter()
            .flatten()
            .any(|deployment| deployment.name == name && deployment.zone == zone)
    };
    let (failed, others): (Vec<_>, Vec<_>) = replicas
        .iter()
        .map(|(name, replicas)| (name.as_str(), *replicas))
        .partition(|(name, _)| in_zone(name));
    if failing_over {
        others.into_iter().chain(failed).collect()
    } else {
        failed.into_iter().chain(others).collect()
    }
}

#[cfg(test)]
mod tests;
