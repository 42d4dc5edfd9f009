//! The operator's own permissions: what its RBAC must grant for every action an InvoiceService
//! can ask for, checked once at start with SelfSubjectAccessReviews. A missing one is reported
//! once — a Warning log naming the rule to add, and `invoiceops_permission_missing{verb,
//! resource}` — and the operator keeps running: it can still observe and report, and an action
//! the API server then refuses is recorded as refused (`Forbidden`, naming the permission)
//! rather than retried. Does IO (the reviews).

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::{Api, Client, api::PostParams};
use tracing::{info, warn};

use crate::metrics::{Metrics, PermissionLabels};

/// One permission the operator uses, and what for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Permission {
    /// The verb.
    pub verb: &'static str,
    /// The API group (`""` for the core group).
    pub group: &'static str,
    /// The resource, with its subresource after a slash (`pods/eviction`).
    pub resource: &'static str,
    /// Whether it is cluster-scoped (checked across the cluster even when one namespace is
    /// watched).
    pub cluster_scoped: bool,
    /// What needs it.
    pub why: &'static str,
}

const fn namespaced(
    verb: &'static str,
    group: &'static str,
    resource: &'static str,
    why: &'static str,
) -> Permission {
    Permission {
        verb,
        group,
        resource,
        cluster_scoped: false,
        why,
    }
}

const fn cluster_wide(verb: &'static str, resource: &'static str, why: &'static str) -> Permission {
    Permission {
        verb,
        group: "",
        resource,
        cluster_scoped: true,
        why,
    }
}

/// Every permission the operator's code uses (the chart's RBAC grants exactly these, plus the
/// Lease of leader election in its own namespace).
#[rustfmt::skip] // a table: one permission per line
pub const REQUIRED: &[Permission] = &[
    namespaced("list", "invoiceops.dev", "invoiceservices", "watching InvoiceServices"),
    namespaced("watch", "invoiceops.dev", "invoiceservices", "watching InvoiceServices"),
    namespaced("patch", "invoiceops.dev", "invoiceservices", "the deletion finalizer"),
    namespaced("patch", "invoiceops.dev", "invoiceservices/status", "status"),
    namespaced("list", "", "pods", "pod health"),
    namespaced("watch", "", "pods", "pod health"),
    namespaced("create", "", "pods/eviction", "RestartPod"),
    namespaced("list", "apps", "deployments", "replicas and zones"),
    namespaced("watch", "apps", "deployments", "replicas and zones"),
    namespaced("get", "apps", "deployments", "ZoneFailover of a single Deployment"),
    namespaced("patch", "apps", "deployments", "RolloutRestart and ZoneFailover"),
    namespaced("get", "apps", "deployments/scale", "ScaleOut with an autoscaler"),
    namespaced("patch", "apps", "deployments/scale", "ScaleOut, ScaleIn and ZoneFailover"),
    namespaced("list", "argoproj.io", "rollouts", "replicas and updates of Argo Rollouts"),
    namespaced("watch", "argoproj.io", "rollouts", "replicas and updates of Argo Rollouts"),
    namespaced("patch", "argoproj.io", "rollouts", "RolloutRestart of a Rollout (spec.restartAt)"),
    namespaced("get", "argoproj.io", "rollouts/scale", "ScaleOut of a Rollout with an autoscaler"),
    namespaced("patch", "argoproj.io", "rollouts/scale", "ScaleOut, ScaleIn and ZoneFailover of Rollouts"),
    namespaced("list", "autoscaling", "horizontalpodautoscalers", "ScaleOut with an autoscaler"),
    namespaced("patch", "autoscaling", "horizontalpodautoscalers", "ScaleOut with an autoscaler"),
    namespaced("watch", "autoscaling", "horizontalpodautoscalers", "who set an autoscaler's floor back"),
    namespaced("list", "keda.sh", "scaledobjects", "ScaleOut of a Deployment KEDA scales"),
    namespaced("patch", "keda.sh", "scaledobjects", "ScaleOut and ZoneFailover of a Deployment KEDA scales"),
    namespaced("list", "", "configmaps", "the read-only mode switch"),
    namespaced("watch", "", "configmaps", "the read-only mode switch"),
    namespaced("patch", "", "configmaps", "the read-only mode switch"),
    namespaced("create", "", "configmaps", "the read-only mode switch, before the app wrote it"),
    namespaced("create", "events.k8s.io", "events", "Events"),
    namespaced("patch", "events.k8s.io", "events", "Events"),
    cluster_wide("list", "nodes", "zones and node readiness"),
    cluster_wide("watch", "nodes", "zones and node readiness"),
];

/// The review of `permission` in `namespace` (all namespaces when `None`).
pub fn review(permission: &Permission, namespace: Option<&str>) -> SelfSubjectAccessReview {
    let (resource, subresource) = match permission.resource.split_once('/') {
        Some((resource, subresource)) => (resource, Some(subresource.to_owned())),
        None => (permission.resource, None),
    };
    SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(permission.verb.to_owned()),
                group: Some(permission.group.to_owned()),
                resource: Some(resource.to_owned()),
                subresource,
                namespace: namespace
                    .filter(|_| !permission.cluster_scoped)
                    .map(str::to_owned),
                ..ResourceAttributes::default()
            }),
            ..SelfSubjectAccessReviewSpec::default()
        },
        ..SelfSubjectAccessReview::default()
    }
}

/// The RBAC rule that grants `permission`, as YAML flow.
pub fn rule(permission: &Permission) -> String {
    format!(
        "{{apiGroups: [{:?}], resources: [{:?}], verbs: [{:?}]}}",
        permission.group, permission.resource, permission.verb
    )
}

/// Reviews every [`REQUIRED`] permission once and reports the missing ones (log and metric).
/// A review that fails is logged and counted as neither missing nor granted. Returns the
/// missing permissions.
pub async fn report_missing(
    client: Client,
    namespace: Option<String>,
    metrics: &Metrics,
) -> Vec<Permission> {
    let reviews: Api<SelfSubjectAccessReview> = Api::all(client);
    let mut missing = Vec::new();
    for permission in REQUIRED {
        let answer = reviews
            .create(
                &PostParams::default(),
                &review(permission, namespace.as_deref()),
            )
            .await;
        let allowed = match answer {
            Ok(review) => review.status.is_some_and(|status| status.allowed),
            Err(error) => {
                warn!(
                    error = &error as &dyn std::error::Error,
                    verb = permission.verb,
                    resource = permission.resource,
                    "could not review a permission"
                );
                continue;
            }
        };
        metrics
            .permission_missing
            .get_or_create(&PermissionLabels {
                verb: permission.verb,
                resource: permission.resource,
            })
            .set(i64::from(!allowed));
        if !allowed {
            missing.push(*permission);
        }
    }
    if missing.is_empty() {
        info!(
            checked = REQUIRED.len(),
            "every permission the operator uses is granted"
        );
    } else {
        let rules: Vec<String> = missing
            .iter()
            .map(|permission| format!("{} (for {})", rule(permission), permission.why))
            .collect();
        warn!(
            missing = %rules.join(", "),
            "the operator's ServiceAccount lacks permissions: the actions that need them will be \
             refused and reported as Forbidden; install the chart with rbac.create=true or add \
             these rules"
        );
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subresource_is_reviewed_as_resource_and_subresource_in_the_watched_namespace() {
        let eviction = REQUIRED
            .iter()
            .find(|permission| permission.resource == "pods/eviction")
            .expect("eviction is required");
        let attributes = review(eviction, Some("invoicing"))
            .spec
            .resource_attributes
            .expect("resource attributes");
        assert_eq!(attributes.verb.as_deref(), Some("create"));
        assert_eq!(attributes.resource.as_deref(), Some("pods"));
        assert_eq!(attributes.subresource.as_deref(), Some("eviction"));
        assert_eq!(attributes.namespace.as_deref(), Some("invoicing"));
        assert_eq!(
            rule(eviction),
            r#"{apiGroups: [""], resources: ["pods/eviction"], verbs: ["create"]}"#
        );
    }

    #[test]
    fn nodes_are_reviewed_across_the_cluster_even_for_one_namespace() {
        let nodes = REQUIRED
            .iter()
            .find(|permission| permission.resource == "nodes")
            .expect("nodes are required");
        let attributes = review(nodes, Some("invoicing"))
            .spec
            .resource_attributes
            .expect("resource attributes");
        assert_eq!(attributes.namespace, None);
    }

    /// Every permission an action can fail for is reviewed at start.
    #[test]
    fn every_permission_an_action_needs_is_reviewed() {
        use crate::{act::ActError, api::WorkloadKind};
        let source = || kube::Error::LinesCodecMaxLineLengthExceeded;
        let name = || "x".to_owned();
        let per_kind = [WorkloadKind::Deployment, WorkloadKind::Rollout]
            .into_iter()
            .flat_map(|kind| {
                [
                    ActError::RestartDeployment {
                        kind,
                        name: name(),
                        source: source(),
                    },
                    ActError::GetScale {
                        kind,
                        name: name(),
                        source: source(),
                    },
                    ActError::ScaleDeployment {
                        kind,
                        name: name(),
                        source: source(),
                    },
                ]
            });
        for error in per_kind.chain([
            ActError::EvictPod {
                name: name(),
                source: source(),
            },
            ActError::ListAutoscalers { source: source() },
            ActError::PatchAutoscaler {
                name: name(),
                source: source(),
            },
            ActError::ApplyModeSwitch {
                name: name(),
                source: source(),
            },
            ActError::GetDeployment {
                name: name(),
                source: source(),
            },
            ActError::PatchAffinity {
                name: name(),
                source: source(),
            },
        ]) {
            let (verb, group, resource) = error.permission().expect("a permission");
            assert!(
                REQUIRED.iter().any(|permission| permission.verb == verb
                    && permission.group == group
                    && permission.resource == resource),
                "{verb} {group}/{resource} is not reviewed"
            );
        }
    }
}
