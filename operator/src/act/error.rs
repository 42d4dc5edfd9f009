//! Why an action could not be carried out, and which failures are the API server's final
//! answer rather than something to retry.

use kube::core::Status;

use super::refused_by;
use crate::api::WorkloadKind;

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
    /// Patching the restart annotation (a Rollout's `spec.restartAt`) failed.
    #[error("failed to restart {kind} {name}")]
    RestartDeployment {
        /// Deployment or Rollout.
        kind: WorkloadKind,
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
    /// Listing the namespace's KEDA ScaledObjects failed while an autoscaler belongs to one.
    #[error("failed to list KEDA scaled objects (an autoscaler of this namespace belongs to one)")]
    ListScaledObjects {
        /// The API error.
        source: kube::Error,
    },
    /// Patching a KEDA ScaledObject failed.
    #[error("failed to patch KEDA scaled object {name}")]
    PatchScaledObject {
        /// The ScaledObject.
        name: String,
        /// The API error.
        source: kube::Error,
    },
    /// Reading a Deployment's (or Rollout's) scale subresource failed.
    #[error("failed to read the scale of {kind} {name}")]
    GetScale {
        /// Deployment or Rollout.
        kind: WorkloadKind,
        /// The Deployment.
        name: String,
        /// The API error.
        source: kube::Error,
    },
    /// Writing a Deployment's (or Rollout's) scale subresource failed.
    #[error("failed to scale {kind} {name}")]
    ScaleDeployment {
        /// Deployment or Rollout.
        kind: WorkloadKind,
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
}

impl ActError {
    /// The API error behind this failure, if the API server answered.
    fn api_status(&self) -> Option<&Status> {
        match self {
            Self::EvictPod { source, .. }
            | Self::RestartDeployment { source, .. }
            | Self::ListAutoscalers { source }
            | Self::ListScaledObjects { source }
            | Self::PatchScaledObject { source, .. }
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
            | Self::NoDeploymentForZone { .. } => None,
        }
    }

    /// The permission the failed request needed: (verb, API group, resource).
    pub fn permission(&self) -> Option<(&'static str, &'static str, &'static str)> {
        Some(match self {
            Self::EvictPod { .. } => ("create", "", "pods/eviction"),
            Self::RestartDeployment { kind, .. } => ("patch", kind.group(), kind.plural()),
            Self::PatchAffinity { .. } => ("patch", "apps", "deployments"),
            Self::GetDeployment { .. } => ("get", "apps", "deployments"),
            Self::ListAutoscalers { .. } => ("list", "autoscaling", "horizontalpodautoscalers"),
            Self::PatchAutoscaler { .. } => ("patch", "autoscaling", "horizontalpodautoscalers"),
            Self::ListScaledObjects { .. } => ("list", "keda.sh", "scaledobjects"),
            Self::PatchScaledObject { .. } => ("patch", "keda.sh", "scaledobjects"),
            Self::GetScale { kind, .. } => ("get", kind.group(), scale_of(*kind)),
            Self::ScaleDeployment { kind, .. } => ("patch", kind.group(), scale_of(*kind)),
            Self::ApplyModeSwitch { .. } => ("patch", "", "configmaps"),
            Self::MissingNamespace { .. }
            | Self::ReadOnlyNotConfigured
            | Self::NoDeploymentForZone { .. } => return None,
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
                Some((refused_by::FORBIDDEN, format!("{}{fix}", status.message)))
            }
            404 => Some((
                refused_by::NOT_FOUND,
                format!("{}: {}", self, status.message),
            )),
            // Except the affinity patch, whose `test` op answers 422 when the user edited the
            // affinity since it was read: the next reconcile reads it afresh.
            422 if !matches!(self, Self::PatchAffinity { .. }) => {
                Some((refused_by::INVALID, format!("{}: {}", self, status.message)))
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
            Self::ListScaledObjects { .. } => "list_scaled_objects",
            Self::PatchScaledObject { .. } => "patch_scaled_object",
            Self::GetScale { .. } => "get_scale",
            Self::ScaleDeployment { .. } => "scale_deployment",
            Self::PatchAutoscaler { .. } => "patch_autoscaler",
            Self::ReadOnlyNotConfigured => "read_only_not_configured",
            Self::ApplyModeSwitch { .. } => "apply_mode_switch",
            Self::GetDeployment { .. } => "get_deployment",
            Self::PatchAffinity { .. } => "patch_affinity",
            Self::NoDeploymentForZone { .. } => "no_deployment_for_zone",
        }
    }
}

/// The scale subresource of a workload kind.
fn scale_of(kind: WorkloadKind) -> &'static str {
    match kind {
        WorkloadKind::Deployment => "deployments/scale",
        WorkloadKind::Rollout => "rollouts/scale",
    }
}
