//! Deployments scaled by KEDA. A `ScaledObject` (keda.sh/v1alpha1) owns the
//! HorizontalPodAutoscaler `keda-hpa-<name>` and rebuilds it from its own spec on every
//! reconcile, so a write to that autoscaler is undone within seconds; and KEDA scales a
//! Deployment at 0 back up to `minReplicaCount` (or to 1 when a trigger is active), so a
//! zone drained with `/scale` comes back. The operator therefore talks to the ScaledObject,
//! the way KEDA documents it:
//!
//! - **A floor** (ScaleOut, ScaleIn, a zone's replicas restored): `spec.minReplicaCount` is
//!   set (and `spec.maxReplicaCount` raised if it is below), which KEDA carries into its
//!   autoscaler — the same as `minReplicas` of a plain HorizontalPodAutoscaler; ScaleOut
//!   remembers the floor from before ([`FLOOR_BEFORE_ANNOTATION`]) and ScaleIn puts it back.
//! - **A drain to 0** (zone failover): the annotation `autoscaling.keda.sh/paused-replicas: "0"`
//!   pauses the ScaledObject at 0 replicas (KEDA then scales the workload to 0 and leaves it
//!   there), marked as the operator's with [`PAUSED_BY_OPERATOR`]. Fail-back removes both,
//!   and only when the marker is there: a ScaledObject someone else paused stays paused.
//!
//! Pure: what to write, from the ScaledObject as read; the writes are in `cluster`.

use kube::{
    api::{ApiResource, DynamicObject, GroupVersionKind},
    core::ResourceExt,
};
use serde_json::{Map, Value, json};

use super::{FLOOR_BEFORE_ANNOTATION, Floor};
use crate::api::WorkloadKind;

/// KEDA's annotation pausing a ScaledObject at a fixed replica count.
pub const PAUSED_REPLICAS: &str = "autoscaling.keda.sh/paused-replicas";
/// Marks [`PAUSED_REPLICAS`] as set by the operator (a zone it drained).
pub const PAUSED_BY_OPERATOR: &str = "invoiceops.dev/paused-replicas";
/// KEDA's default `maxReplicaCount` when a ScaledObject does not set it.
const DEFAULT_MAX_REPLICAS: i64 = 100;
/// KEDA's default `minReplicaCount`.
const DEFAULT_MIN_REPLICAS: i64 = 0;

/// The ScaledObject resource.
pub fn resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("keda.sh", "v1alpha1", "ScaledObject"),
        "scaledobjects",
    )
}

/// The ScaledObject scales the workload `name` of kind `kind` (`spec.scaleTargetRef`, whose
/// kind defaults to Deployment).
pub fn targets(object: &DynamicObject, kind: WorkloadKind, name: &str) -> bool {
    let target = &object.data["spec"]["scaleTargetRef"];
    super::scale_target_is(
        target["kind"].as_str().unwrap_or("Deployment"),
        Some(target["apiVersion"].as_str().unwrap_or("apps/v1")),
        target["name"].as_str().unwrap_or_default(),
        kind,
        name,
    )
}

/// The merge patch that makes the ScaledObject hold the Deployment at `replicas` (its floor
/// as `floor` says), or `None` when it already does (every write is idempotent).
pub fn patch(object: &DynamicObject, replicas: i32, floor: Floor) -> Option<Value> {
    let annotations = object.annotations();
    let ours = annotations.contains_key(PAUSED_BY_OPERATOR);
    let mut patch = Map::new();
    if replicas == 0 {
        // Paused by someone else already: KEDA leaves the workload alone, `/scale` drains it.
        if annotations.contains_key(PAUSED_REPLICAS) && !ours {
            return None;
        }
        if annotations.get(PAUSED_REPLICAS).map(String::as_str) != Some("0") || !ours {
            patch.insert(
                "metadata".to_owned(),
                json!({"annotations": {PAUSED_REPLICAS: "0", PAUSED_BY_OPERATOR: "true"}}),
            );
        }
    } else {
        let mut lifted = Map::new();
        if ours {
            lifted.insert(PAUSED_REPLICAS.to_owned(), Value::Null);
            lifted.insert(PAUSED_BY_OPERATOR.to_owned(), Value::Null);
        }
        let spec = &object.data["spec"];
        let current = spec["minReplicaCount"]
            .as_i64()
            .unwrap_or(DEFAULT_MIN_REPLICAS);
        let (wanted, remembered) = floor.next(i64::from(replicas), current, annotations);
        if let Some(remembered) = remembered {
            lifted.insert(FLOOR_BEFORE_ANNOTATION.to_owned(), remembered);
        }
        if !lifted.is_empty() {
            patch.insert(
                "metadata".to_owned(),
                json!({ "annotations": Value::Object(lifted) }),
            );
        }
        let mut bounds = Map::new();
        if spec["minReplicaCount"].as_i64() != Some(wanted) {
            bounds.insert("minReplicaCount".to_owned(), json!(wanted));
        }
        if spec["maxReplicaCount"]
            .as_i64()
            .unwrap_or(DEFAULT_MAX_REPLICAS)
            < wanted
        {
            bounds.insert("maxReplicaCount".to_owned(), json!(wanted));
        }
        if !bounds.is_empty() {
            patch.insert("spec".to_owned(), Value::Object(bounds));
        }
    }
    (!patch.is_empty()).then_some(Value::Object(patch))
}

/// The autoscaler belongs to a ScaledObject (KEDA's controller reference): KEDA rewrites it.
pub fn owns(
    owner_references: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference],
) -> bool {
    owner_references
        .iter()
        .any(|owner| owner.kind == "ScaledObject" && owner.api_version.starts_with("keda.sh/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scaled_object(spec: Value, annotations: &[(&str, &str)]) -> DynamicObject {
        let mut object = DynamicObject::new("billing-api-az1", &resource()).within("invoicing");
        object.data = json!({ "spec": spec });
        for (key, value) in annotations {
            object
                .annotations_mut()
                .insert((*key).to_owned(), (*value).to_owned());
        }
        object
    }

    fn target(name: &str) -> Value {
        json!({"scaleTargetRef": {"name": name}, "minReplicaCount": 2, "maxReplicaCount": 10})
    }

    #[test]
    fn a_scaled_object_targets_its_deployment_by_name_kind_defaulting_to_deployment() {
        let object = scaled_object(target("billing-api-az1"), &[]);
        let deployment = WorkloadKind::Deployment;
        assert!(targets(&object, deployment, "billing-api-az1"));
        assert!(!targets(&object, deployment, "billing-api-az2"));
        assert!(!targets(&object, WorkloadKind::Rollout, "billing-api-az1"));
        let rollout = scaled_object(
            json!({"scaleTargetRef": {"name": "billing-api-az1", "kind": "Rollout",
                    "apiVersion": "argoproj.io/v1alpha1"}}),
            &[],
        );
        assert!(!targets(&rollout, deployment, "billing-api-az1"));
        assert!(targets(&rollout, WorkloadKind::Rollout, "billing-api-az1"));
        // A Rollout of another API group is not Argo's.
        let other = scaled_object(
            json!({"scaleTargetRef": {"name": "billing-api-az1", "kind": "Rollout",
                    "apiVersion": "example.com/v1"}}),
            &[],
        );
        assert!(!targets(&other, WorkloadKind::Rollout, "billing-api-az1"));
    }

    #[test]
    fn a_floor_sets_min_replica_count_and_raises_the_maximum_only_when_below() {
        let object = scaled_object(target("billing-api-az1"), &[]);
        assert_eq!(
            patch(&object, 5, Floor::Set),
            Some(json!({"spec": {"minReplicaCount": 5}}))
        );
        assert_eq!(
            patch(&object, 12, Floor::Set),
            Some(json!({"spec": {"minReplicaCount": 12, "maxReplicaCount": 12}}))
        );
        assert_eq!(
            patch(&object, 2, Floor::Set),
            None,
            "already the floor: no write"
        );
        // KEDA's default maximum is 100.
        let unbounded = scaled_object(json!({"scaleTargetRef": {"name": "x"}}), &[]);
        assert_eq!(
            patch(&unbounded, 120, Floor::Set),
            Some(json!({"spec": {"minReplicaCount": 120, "maxReplicaCount": 120}}))
        );
    }

    #[test]
    fn scale_out_remembers_the_floor_and_scale_in_puts_it_back() {
        let object = scaled_object(target("billing-api-az1"), &[]);
        assert_eq!(
            patch(&object, 5, Floor::Raise),
            Some(
                json!({"metadata": {"annotations": {FLOOR_BEFORE_ANNOTATION: "2"}},
                        "spec": {"minReplicaCount": 5}})
            )
        );
        // A second step keeps the first floor.
        let raised = scaled_object(
            json!({"scaleTargetRef": {"name": "billing-api-az1"}, "minReplicaCount": 5,
                   "maxReplicaCount": 10}),
            &[(FLOOR_BEFORE_ANNOTATION, "2")],
        );
        assert_eq!(
            patch(&raised, 7, Floor::Raise),
            Some(json!({"spec": {"minReplicaCount": 7}}))
        );
        // ScaleIn to the Deployment's baseline of 3: the floor goes back to 2, not 3.
        assert_eq!(
            patch(&raised, 3, Floor::Restore),
            Some(
                json!({"metadata": {"annotations": {FLOOR_BEFORE_ANNOTATION: null}},
                        "spec": {"minReplicaCount": 2}})
            )
        );
        // Nothing remembered (raised by an older operator): the replicas, as before.
        assert_eq!(
            patch(&object, 3, Floor::Restore),
            Some(json!({"spec": {"minReplicaCount": 3}}))
        );
    }

    #[test]
    fn a_drain_pauses_the_scaled_object_at_zero_and_marks_the_pause_as_ours() {
        let object = scaled_object(target("billing-api-az1"), &[]);
        assert_eq!(
            patch(&object, 0, Floor::Set),
            Some(json!({"metadata": {"annotations": {
                PAUSED_REPLICAS: "0", PAUSED_BY_OPERATOR: "true"}}}))
        );
        let drained = scaled_object(
            target("billing-api-az1"),
            &[(PAUSED_REPLICAS, "0"), (PAUSED_BY_OPERATOR, "true")],
        );
        assert_eq!(
            patch(&drained, 0, Floor::Set),
            None,
            "drained already: no write"
        );
    }

    #[test]
    fn restoring_replicas_lifts_only_our_own_pause() {
        let drained = scaled_object(
            target("billing-api-az1"),
            &[(PAUSED_REPLICAS, "0"), (PAUSED_BY_OPERATOR, "true")],
        );
        assert_eq!(
            patch(&drained, 2, Floor::Set),
            Some(json!({"metadata": {"annotations": {
                PAUSED_REPLICAS: null, PAUSED_BY_OPERATOR: null}}}))
        );
        // Someone paused it at 3 for their own reasons: neither drained over nor un-paused.
        let theirs = scaled_object(target("billing-api-az1"), &[(PAUSED_REPLICAS, "3")]);
        assert_eq!(patch(&theirs, 0, Floor::Set), None);
        assert_eq!(
            patch(&theirs, 4, Floor::Set),
            Some(json!({"spec": {"minReplicaCount": 4}}))
        );
    }

    #[test]
    fn only_a_scaled_object_owner_makes_an_autoscaler_keda_s() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
        let owner = |api_version: &str, kind: &str| OwnerReference {
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
            name: "billing-api".to_owned(),
            uid: "1".to_owned(),
            controller: Some(true),
            ..OwnerReference::default()
        };
        assert!(owns(&[owner("keda.sh/v1alpha1", "ScaledObject")]));
        assert!(!owns(&[owner("apps/v1", "Deployment")]));
        assert!(!owns(&[]));
    }
}
