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
//!   scale on its next sync.
//! - **EnterReadOnly/ExitReadOnly** server-side apply the one ConfigMap key the spec names,
//!   with [`FIELD_MANAGER`] and `force` so the operator takes over just that key; the app
//!   watches the ConfigMap, so no pod is restarted.
//! - **ZoneFailover/ZoneFailBack** scale per-zone Deployments (capacity in the healthy zones
//!   first, then the failed zone; on fail-back the failed zone first), or steer a single
//!   Deployment with a node-affinity requirement (see [`affinity`]).
//!
//! Every operation is idempotent: carried out twice (e.g. after the operator restarted before
//! it recorded the action, see [`crate::engine::resume`]), the second run changes nothing — an evicted pod is gone (404), the
//! replica counts, mode key and affinity are already as wanted, and a rollout restart with the
//! same `now` writes the same annotation value, which does not roll the pods again.

pub mod affinity;

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::{
    apps::v1::Deployment, autoscaling::v2::HorizontalPodAutoscaler, core::v1::ConfigMap,
    core::v1::Pod,
};
use kube::{
    Api, Client, ResourceExt,
    api::{EvictParams, ListParams, ObjectMeta, Patch, PatchParams},
    core::Status,
};
use serde_json::json;

use crate::{
    FIELD_MANAGER,
    api::{ActionKind, InvoiceService},
    engine::{PlannedAction, Target},
};

/// The pod-template annotation `kubectl rollout restart` sets; any change of it rolls the pods.
pub const RESTARTED_AT_ANNOTATION: &str = "kubectl.kubernetes.io/restartedAt";

/// What happened to an action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ActOutcome {
    /// Carried out (or already in effect).
    Applied,
    /// The API server declined it for a reason that is not a failure, such as a
    /// PodDisruptionBudget that allows no disruption now. Nothing was changed.
    Refused {
        /// Who refused, as a fixed PascalCase name for conditions (`PodDisruptionBudget`,
        /// `TooManyRequests`).
        by: &'static str,
        /// The API server's explanation.
        reason: String,
    },
}

/// Why an action could not be carried out. Each variant names the operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum ActError {
    /// The InvoiceService carries no namespace (it is a namespaced resource, so it always
    /// should).
    #[error("invoiceservice {name} has no namespace")]
    MissingNamespace {
        /// The InvoiceService.
        name: String,
    },
    /// Evicting a pod failed (other than a refusal or the pod being gone).
    #[error("failed to evict pod {name}")]
    EvictPod {
        /// The pod.
        name: String,
        /// The API error.
        source: kube::Error,
    },
    /// Patching the restart annotation failed.
    #[error("failed to restart deployment {name}")]
    RestartDeployment {
        /// The Deployment.
        name: String,
        /// The API error.
        source: kube::Error,
    },
    /// Listing the namespace's HorizontalPodAutoscalers failed.
    #[error("failed to list horizontal pod autoscalers")]
    ListAutoscalers {
        /// The API error.
        source: kube::Error,
    },
    /// Reading a Deployment's scale subresource failed.
    #[error("failed to read the scale of deployment {name}")]
    GetScale {
        /// The Deployment.
        name: String,
        /// The API error.
        source: kube::Error,
    },
    /// Writing a Deployment's scale subresource failed.
    #[error("failed to scale deployment {name}")]
    ScaleDeployment {
        /// The Deployment.
        name: String,
        /// The API error.
        source: kube::Error,
    },
    /// Patching a HorizontalPodAutoscaler's replica bounds failed.
    #[error("failed to patch horizontal pod autoscaler {name}")]
    PatchAutoscaler {
        /// The HorizontalPodAutoscaler.
        name: String,
        /// The API error.
        source: kube::Error,
    },
    /// A read-only switch was asked for but `spec.remediation.readOnly` is not set.
    #[error("read-only mode is not configured (spec.remediation.readOnly)")]
    ReadOnlyNotConfigured,
    /// Applying the mode key of the ConfigMap failed.
    #[error("failed to apply config map {name}")]
    ApplyModeSwitch {
        /// The ConfigMap.
        name: String,
        /// The API error.
        source: kube::Error,
    },
    /// Reading the Deployment to steer out of a zone failed.
    #[error("failed to get deployment {name}")]
    GetDeployment {
        /// The Deployment.
        name: String,
        /// The API error.
        source: kube::Error,
    },
    /// Writing the node affinity of the Deployment failed (also when the user changed it
    /// between our read and our write: the patch's `test` op then fails).
    #[error("failed to patch the node affinity of deployment {name}")]
    PatchAffinity {
        /// The Deployment.
        name: String,
        /// The API error.
        source: kube::Error,
    },
    /// A zone action without per-zone replicas on a workload without a single Deployment.
    #[error("no deployment to steer for zone {zone}")]
    NoDeploymentForZone {
        /// The zone.
        zone: String,
    },
    /// The action kind does not go with its target (the engine never plans that).
    #[error("action {action} cannot act on {target}")]
    UnsupportedAction {
        /// The action kind.
        action: &'static str,
        /// The target, described.
        target: String,
    },
}

impl ActError {
    /// The API error behind this failure, if the API server answered.
    fn api_status(&self) -> Option<&Status> {
        match self {
            Self::EvictPod { source, .. }
            | Self::RestartDeployment { source, .. }
            | Self::ListAutoscalers { source }
            | Self::GetScale { source, .. }
            | Self::ScaleDeployment { source, .. }
            | Self::PatchAutoscaler { source, .. }
            | Self::ApplyModeSwitch { source, .. }
            | Self::GetDeployment { source, .. }
            | Self::PatchAffinity { source, .. } => match source {
                kube::Error::Api(status) => Some(status),
                _ => None,
            },
            Self::MissingNamespace { .. }
            | Self::ReadOnlyNotConfigured
            | Self::NoDeploymentForZone { .. }
            | Self::UnsupportedAction { .. } => None,
        }
    }

    /// The permission the failed request needed: (verb, API group, resource).
    pub fn permission(&self) -> Option<(&'static str, &'static str, &'static str)> {
        Some(match self {
            Self::EvictPod { .. } => ("create", "", "pods/eviction"),
            Self::RestartDeployment { .. } | Self::PatchAffinity { .. } => {
                ("patch", "apps", "deployments")
            }
            Self::GetDeployment { .. } => ("get", "apps", "deployments"),
            Self::ListAutoscalers { .. } => ("list", "autoscaling", "horizontalpodautoscalers"),
            Self::PatchAutoscaler { .. } => ("patch", "autoscaling", "horizontalpodautoscalers"),
            Self::GetScale { .. } => ("get", "apps", "deployments/scale"),
            Self::ScaleDeployment { .. } => ("patch", "apps", "deployments/scale"),
            Self::ApplyModeSwitch { .. } => ("patch", "", "configmaps"),
            Self::MissingNamespace { .. }
            | Self::ReadOnlyNotConfigured
            | Self::NoDeploymentForZone { .. }
            | Self::UnsupportedAction { .. } => return None,
        })
    }

    /// A refusal no retry changes, as who refused (a fixed PascalCase name for conditions) and
    /// what to do about it: 403 (`Forbidden`: the permission and the fix), 404 (`NotFound`: the
    /// object to act on is gone), 422 (`Invalid`: the API server rejects the write).
    pub fn permanent_refusal(&self) -> Option<(&'static str, String)> {
        let status = self.api_status()?;
        match status.code {
            403 => {
                let fix = self
                    .permission()
                    .map_or(String::new(), |(verb, group, resource)| {
                        format!(
                            "; the operator's ServiceAccount needs {verb} on {resource} (API group \
                         {group:?}): install the chart with rbac.create=true, or add the rule \
                         {{apiGroups: [{group:?}], resources: [{resource:?}], verbs: [{verb:?}]}}"
                        )
                    });
                Some(("Forbidden", format!("{}{fix}", status.message)))
            }
            404 => Some(("NotFound", format!("{}: {}", self, status.message))),
            // Except the affinity patch, whose `test` op answers 422 when the user edited the
            // affinity since it was read: the next reconcile reads it afresh.
            422 if !matches!(self, Self::PatchAffinity { .. }) => {
                Some(("Invalid", format!("{}: {}", self, status.message)))
            }
            _ => None,
        }
    }

    /// A fixed label per variant, for metrics (bounded cardinality).
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::MissingNamespace { .. } => "missing_namespace",
            Self::EvictPod { .. } => "evict_pod",
            Self::RestartDeployment { .. } => "restart_deployment",
            Self::ListAutoscalers { .. } => "list_autoscalers",
            Self::GetScale { .. } => "get_scale",
            Self::ScaleDeployment { .. } => "scale_deployment",
            Self::PatchAutoscaler { .. } => "patch_autoscaler",
            Self::ReadOnlyNotConfigured => "read_only_not_configured",
            Self::ApplyModeSwitch { .. } => "apply_mode_switch",
            Self::GetDeployment { .. } => "get_deployment",
            Self::PatchAffinity { .. } => "patch_affinity",
            Self::NoDeploymentForZone { .. } => "no_deployment_for_zone",
            Self::UnsupportedAction { .. } => "unsupported_action",
        }
    }
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
    };
    match &action.target {
        Target::Pods(pods) => cluster.evict_pods(pods).await,
        Target::Deployments(deployments) => {
            for name in deployments {
                cluster.restart_deployment(name, now).await?;
            }
            Ok(ActOutcome::Applied)
        }
        Target::Replicas(replicas) => {
            let scaler = cluster.scaler().await?;
            for (name, replicas) in replicas {
                scaler.scale(name, *replicas).await?;
                scale_step_done();
            }
            Ok(ActOutcome::Applied)
        }
        Target::ReadOnly(read_only) => cluster.switch_mode(service, *read_only).await,
        Target::Zone { zone, replicas } => {
            let failing_over = match action.kind {
                ActionKind::ZoneFailover => true,
                ActionKind::ZoneFailBack => false,
                other => {
                    return Err(ActError::UnsupportedAction {
                        action: other.as_str(),
                        target: action.target.describe(),
                    });
                }
            };
            if replicas.is_empty() {
                let name = service
                    .spec
                    .workload
                    .deployment
                    .as_deref()
                    .ok_or_else(|| ActError::NoDeploymentForZone { zone: zone.clone() })?;
                let label = &service.spec.workload.zone_label;
                cluster.steer(name, label, zone, failing_over).await
            } else {
                let scaler = cluster.scaler().await?;
                for (name, replicas) in zone_scale_order(service, zone, replicas, failing_over) {
                    scaler.scale(name, replicas).await?;
                    scale_step_done();
                }
                Ok(ActOutcome::Applied)
            }
        }
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

/// The API of the service's namespace.
struct Cluster<'a> {
    client: &'a Client,
    namespace: &'a str,
}

impl Cluster<'_> {
    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), self.namespace)
    }

    /// Evicts the pods in order. Stops at the first refusal: the same PodDisruptionBudget
    /// most likely covers the rest. Refused only if no pod was evicted; otherwise the action
    /// happened (and the refusal is logged).
    async fn evict_pods(&self, names: &[String]) -> Result<ActOutcome, ActError> {
        let pods: Api<Pod> = self.api();
        let mut evicted = 0;
        for name in names {
            match pods.evict(name, &EvictParams::default()).await {
                Ok(_) => evicted += 1,
                // Already gone: the restart the action wanted has happened.
                Err(kube::Error::Api(status)) if status.is_not_found() => evicted += 1,
                Err(kube::Error::Api(status)) if is_too_many_requests(&status) => {
                    let reason = refusal(&status);
                    if evicted == 0 {
                        return Ok(ActOutcome::Refused {
                            by: refused_by(&status),
                            reason,
                        });
                    }
                    tracing::info!(pod = %name, %reason, evicted, "eviction refused; stopping");
                    break;
                }
                Err(source) => {
                    return Err(ActError::EvictPod {
                        name: name.clone(),
                        source,
                    });
                }
            }
        }
        Ok(ActOutcome::Applied)
    }

    async fn restart_deployment(&self, name: &str, now: Timestamp) -> Result<(), ActError> {
        let deployments: Api<Deployment> = self.api();
        let patch = json!({"spec": {"template": {"metadata": {"annotations": {
            RESTARTED_AT_ANNOTATION: restarted_at(now)
        }}}}});
        deployments
            .patch(name, &patch_params(), &Patch::Strategic(patch))
            .await
            .map_err(|source| ActError::RestartDeployment {
                name: name.to_owned(),
                source,
            })?;
        Ok(())
    }

    /// Lists the namespace's autoscalers once for all the Deployments of one action.
    async fn scaler(&self) -> Result<Scaler, ActError> {
        let autoscalers: Api<HorizontalPodAutoscaler> = self.api();
        let list = autoscalers
            .list(&ListParams::default())
            .await
            .map_err(|source| ActError::ListAutoscalers { source })?;
        Ok(Scaler {
            deployments: self.api(),
            autoscalers,
            existing: list.items,
        })
    }

    async fn switch_mode(
        &self,
        service: &InvoiceService,
        read_only: bool,
    ) -> Result<ActOutcome, ActError> {
        let policy = service
            .spec
            .remediation
            .read_only
            .as_ref()
            .ok_or(ActError::ReadOnlyNotConfigured)?;
        let switch = &policy.switch.config_map;
        let value = if read_only {
            &switch.read_only
        } else {
            &switch.read_write
        };
        // Only the key: server-side apply leaves the user's other keys (and owners) alone. A
        // missing ConfigMap is created with just this key, so the switch works before the app
        // ever wrote it. (Renaming `switch.configMap.key` later makes the next apply drop the
        // old key, which this field manager then owned alone.)
        let config_map = ConfigMap {
            metadata: ObjectMeta {
                name: Some(switch.name.clone()),
                namespace: Some(self.namespace.to_owned()),
                ..ObjectMeta::default()
            },
            data: Some(BTreeMap::from([(switch.key.clone(), value.clone())])),
            ..ConfigMap::default()
        };
        let config_maps: Api<ConfigMap> = self.api();
        config_maps
            .patch(
                &switch.name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&config_map),
            )
            .await
            .map_err(|source| ActError::ApplyModeSwitch {
                name: switch.name.clone(),
                source,
            })?;
        Ok(ActOutcome::Applied)
    }

    /// Adds (failover) or removes (fail-back) our zone exclusion in the Deployment's pod
    /// template. Reads first, writes only on a change, and guards the write with a `test` op.
    async fn steer(
        &self,
        name: &str,
        label: &str,
        zone: &str,
        failing_over: bool,
    ) -> Result<ActOutcome, ActError> {
        let deployments: Api<Deployment> = self.api();
        let deployment = deployments
            .get(name)
            .await
            .map_err(|source| ActError::GetDeployment {
                name: name.to_owned(),
                source,
            })?;
        let current = deployment.spec.template.spec.and_then(|pod| pod.affinity);
        let wanted = if failing_over {
            Some(affinity::exclude_zone(current.as_ref(), label, zone))
        } else {
            affinity::allow_zone(current.as_ref(), label, zone)
        };
        let Some(patch) = affinity::affinity_patch(current.as_ref(), wanted.as_ref()) else {
            return Ok(ActOutcome::Applied);
        };
        deployments
            .patch(name, &patch_params(), &Patch::<()>::Json(patch))
            .await
            .map_err(|source| ActError::PatchAffinity {
                name: name.to_owned(),
                source,
            })?;
        Ok(ActOutcome::Applied)
    }
}

/// Sets replica counts, through the autoscaler where there is one.
struct Scaler {
    deployments: Api<Deployment>,
    autoscalers: Api<HorizontalPodAutoscaler>,
    existing: Vec<HorizontalPodAutoscaler>,
}

impl Scaler {
    /// The autoscalers whose scale target is the Deployment `name`.
    fn autoscalers_of<'a>(
        &'a self,
        name: &'a str,
    ) -> impl Iterator<Item = &'a HorizontalPodAutoscaler> + 'a {
        self.existing.iter().filter(move |autoscaler| {
            let target = &autoscaler.spec.scale_target_ref;
            target.kind == "Deployment"
                && target.name == name
                && target
                    .api_version
                    .as_deref()
                    .is_none_or(|version| version.starts_with("apps/"))
        })
    }

    /// Sets the Deployment `name` to `replicas`.
    ///
    /// Without an autoscaler: a merge patch of `/scale`. With one and `replicas > 0`: its
    /// `minReplicas` becomes `replicas` (and `maxReplicas` at least that), and `/scale` is
    /// raised to `replicas` only if it is below — the autoscaler would do the same on its next
    /// sync, but does nothing at all for a Deployment at 0 (e.g. a failed-over zone). With one
    /// and `replicas == 0` (zone failover): `/scale` is set to 0, since `minReplicas` cannot be
    /// 0 and an autoscaler leaves a Deployment scaled to zero alone.
    async fn scale(&self, name: &str, replicas: i32) -> Result<(), ActError> {
        let autoscalers: Vec<_> = self.autoscalers_of(name).collect();
        if autoscalers.is_empty() || replicas == 0 {
            return self.patch_scale(name, replicas).await;
        }
        for autoscaler in autoscalers {
            let autoscaler_name = autoscaler.name_any();
            let patch = if autoscaler.spec.max_replicas < replicas {
                json!({"spec": {"minReplicas": replicas, "maxReplicas": replicas}})
            } else {
                json!({"spec": {"minReplicas": replicas}})
            };
            self.autoscalers
                .patch(&autoscaler_name, &patch_params(), &Patch::Merge(patch))
                .await
                .map_err(|source| ActError::PatchAutoscaler {
                    name: autoscaler_name,
                    source,
                })?;
        }
        let scale =
            self.deployments
                .get_scale(name)
                .await
                .map_err(|source| ActError::GetScale {
                    name: name.to_owned(),
                    source,
                })?;
        let current = scale.spec.and_then(|spec| spec.replicas).unwrap_or(0);
        if current < replicas {
            self.patch_scale(name, replicas).await?;
        }
        Ok(())
    }

    async fn patch_scale(&self, name: &str, replicas: i32) -> Result<(), ActError> {
        let patch = json!({"spec": {"replicas": replicas}});
        self.deployments
            .patch_scale(name, &patch_params(), &Patch::Merge(patch))
            .await
            .map_err(|source| ActError::ScaleDeployment {
                name: name.to_owned(),
                source,
            })?;
        Ok(())
    }
}

/// Parameters of every non-apply patch: the field manager names the operator in
/// `managedFields`, so a user can see who changed what.
fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    }
}

/// `now` in RFC 3339 at whole seconds, as `kubectl rollout restart` writes it.
fn restarted_at(now: Timestamp) -> String {
    Timestamp::from_second(now.as_second())
        .expect("a timestamp truncated to seconds is in range")
        .to_string()
}

/// 429 Too Many Requests: a PodDisruptionBudget allows no disruption now (or the API server
/// is shedding load). Either way: not now, try again later.
fn is_too_many_requests(status: &Status) -> bool {
    status.code == 429 || status.reason == "TooManyRequests"
}

/// Who refused an eviction: a PodDisruptionBudget names itself in the causes
/// (`DisruptionBudget`); otherwise the API server was shedding load.
fn refused_by(status: &Status) -> &'static str {
    let budget = status
        .details
        .iter()
        .flat_map(|details| &details.causes)
        .any(|cause| cause.reason == "DisruptionBudget");
    if budget {
        "PodDisruptionBudget"
    } else {
        "TooManyRequests"
    }
}

/// The API server's explanation of a refusal, with the causes it lists (which name the
/// PodDisruptionBudget).
fn refusal(status: &Status) -> String {
    let causes: Vec<&str> = status
        .details
        .iter()
        .flat_map(|details| &details.causes)
        .map(|cause| cause.message.as_str())
        .filter(|message| !message.is_empty())
        .collect();
    if causes.is_empty() {
        status.message.clone()
    } else {
        format!("{} ({})", status.message, causes.join("; "))
    }
}

#[cfg(test)]
mod tests;
