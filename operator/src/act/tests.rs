//! The act step against a strict mocked API server (the `ApiServer` fixture): every request
//! is asserted exactly (method, path and query, content type, JSON body), in order, and
//! nothing else is sent.

use std::collections::BTreeMap;

use http::StatusCode;
use jiff::Timestamp;
use serde_json::{Value, json};

use super::*;
use crate::{
    api::{Evidence, Rung},
    fixtures::{ApiServer, Exchange},
};

const NAMESPACE: &str = "invoicing";
const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/invoicing/deployments";
const AUTOSCALERS: &str = "/apis/autoscaling/v2/namespaces/invoicing/horizontalpodautoscalers";
const SCALED_OBJECTS: &str = "/apis/keda.sh/v1alpha1/namespaces/invoicing/scaledobjects";
const MERGE_PATCH: &str = "application/merge-patch+json";
const JSON_PATCH: &str = "application/json-patch+json";
const STRATEGIC_PATCH: &str = "application/strategic-merge-patch+json";
const APPLY_PATCH: &str = "application/apply-patch+yaml";

/// Runs `action` against a strict mocked API server expecting `exchanges`; returns what
/// `act` returned once every exchange happened and nothing more was sent.
async fn run(
    service: &InvoiceService,
    action: &PlannedAction,
    exchanges: Vec<Exchange>,
) -> Result<ActOutcome, ActError> {
    let (client, server) = ApiServer::strict(exchanges);
    let outcome = act(&client, service, action, now()).await;
    drop(client);
    server.finish().await;
    outcome
}

fn now() -> Timestamp {
    "2026-03-31T18:04:05.678Z".parse().unwrap()
}

/// The service `billing-api` in `invoicing` with a 99.95 % availability SLO and the other
/// `spec` fields given (YAML, indented under `spec:`).
fn billing_api(spec: &str) -> InvoiceService {
    let manifest = format!(
        "
apiVersion: invoiceops.dev/v1alpha1
kind: InvoiceService
metadata: {{name: billing-api, namespace: invoicing}}
spec:
  slos: {{availability: {{objective: '99.95'}}}}
{spec}"
    );
    serde_yaml::from_str(&manifest).unwrap()
}

/// A service with one Deployment per zone, read-only switch configured.
fn zonal_service() -> InvoiceService {
    billing_api(
        "
  workload:
    deployments:
    - {name: billing-api-az1, zone: az1}
    - {name: billing-api-az2, zone: az2}
    - {name: billing-api-az3, zone: az3}
  remediation:
    readOnly:
      switch: {configMap: {name: billing-api-mode, key: mode, readOnly: read-only, readWrite: read-write}}
",
    )
}

/// A service with one Deployment spread over zones.
fn spread_service() -> InvoiceService {
    billing_api(
        "
  workload:
    deployment: billing-api
    zones: [az1, az2, az3]
    zoneLabel: topology.kubernetes.io/zone
",
    )
}

fn action(step: Step) -> PlannedAction {
    PlannedAction {
        step,
        rung: Some(Rung::RestartPod),
        reason: "test".to_owned(),
        evidence: Evidence::new(),
        signal: None,
    }
}

fn restart_pods(names: &[&str]) -> Step {
    Step::RestartPod {
        pods: names.iter().map(|name| (*name).to_owned()).collect(),
    }
}

fn replicas(pairs: &[(&str, i32)]) -> BTreeMap<String, i32> {
    pairs
        .iter()
        .map(|(name, replicas)| ((*name).to_owned(), *replicas))
        .collect()
}

fn eviction(pod: &str) -> Exchange {
    Exchange::post(
        format!("/api/v1/namespaces/invoicing/pods/{pod}/eviction?"),
        json!({"delete_options": null, "metadata": {"name": pod}}),
    )
}

fn success() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"})
}

fn failure(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

fn scale(name: &str, replicas: i32) -> Value {
    json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
           "metadata": {"name": name, "namespace": NAMESPACE},
           "spec": {"replicas": replicas}, "status": {"replicas": replicas}})
}

fn scale_patch(name: &str, replicas: i32) -> Exchange {
    scale_patch_of(DEPLOYMENTS, name, replicas)
}

/// The merge patch of `/scale` of the workload `name` under `resources` (Deployments or
/// Rollouts).
fn scale_patch_of(resources: &str, name: &str, replicas: i32) -> Exchange {
    Exchange::patch(
        format!("{resources}/{name}/scale?&fieldManager=invoice-operator"),
        MERGE_PATCH,
        json!({"spec": {"replicas": replicas}}),
    )
    .ok(scale(name, replicas))
}

fn list_autoscalers(items: Vec<Value>) -> Exchange {
    Exchange::get(format!("{AUTOSCALERS}?")).ok(json!({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscalerList",
        "metadata": {"resourceVersion": "7"}, "items": items
    }))
}

fn autoscaler(name: &str, kind: &str, target: &str, min: i32, max: i32) -> Value {
    json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
           "metadata": {"name": name, "namespace": NAMESPACE},
           "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": kind, "name": target},
                    "minReplicas": min, "maxReplicas": max}})
}

fn deployment(name: &str, affinity: Value) -> Value {
    let mut pod = json!({"containers": [{"name": "app", "image": "invoice:1"}]});
    if !affinity.is_null() {
        pod["affinity"] = affinity;
    }
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": name, "namespace": NAMESPACE, "resourceVersion": "42"},
           "spec": {"replicas": 6, "selector": {"matchLabels": {"app": name}},
                    "template": {"metadata": {"labels": {"app": name}}, "spec": pod}}})
}

fn zone_term(extra: &[Value]) -> Value {
    let mut expressions = extra.to_vec();
    expressions.push(
        json!({"key": "topology.kubernetes.io/zone", "operator": "NotIn", "values": ["az1"]}),
    );
    json!({"matchExpressions": expressions})
}

/// Runs `step` for `service` against the strict mock expecting `exchanges` and asserts that
/// it was applied.
async fn assert_applied(service: &InvoiceService, step: Step, exchanges: Vec<Exchange>) {
    let outcome = run(service, &action(step), exchanges).await;
    assert_eq!(outcome.unwrap(), ActOutcome::Applied);
}

/// Runs `step` for `service` against the strict mock expecting `exchanges`; the error `act`
/// returned (panics if it succeeded).
async fn act_error(service: &InvoiceService, step: Step, exchanges: Vec<Exchange>) -> ActError {
    run(service, &action(step), exchanges).await.unwrap_err()
}

/// `request` answered with a Status failure of `status`, its API `reason` and `message`.
fn failing(request: Exchange, status: StatusCode, reason: &str, message: &str) -> Exchange {
    request.answer(status, failure(status.as_u16(), reason, message))
}

fn evicted(pod: &str) -> Exchange {
    eviction(pod).answer(StatusCode::CREATED, success())
}

/// A merge patch of `spec` onto the autoscaler `name` of Deployment `target`, answered with
/// that autoscaler at `min`..`max`.
fn autoscaler_patch(name: &str, target: &str, spec: Value, (min, max): (i32, i32)) -> Exchange {
    Exchange::patch(
        format!("{AUTOSCALERS}/{name}?&fieldManager=invoice-operator"),
        MERGE_PATCH,
        json!({ "spec": spec }),
    )
    .ok(autoscaler(name, "Deployment", target, min, max))
}

fn list_scaled_objects(items: Vec<Value>) -> Exchange {
    Exchange::get(format!("{SCALED_OBJECTS}?")).ok(json!({
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObjectList",
        "metadata": {"resourceVersion": "8"}, "items": items
    }))
}

/// A ScaledObject for the Deployment `target` with KEDA's replica bounds, and `annotations`.
fn scaled_object(name: &str, target: &str, (min, max): (i32, i32), annotations: Value) -> Value {
    json!({"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
           "metadata": {"name": name, "namespace": NAMESPACE, "annotations": annotations},
           "spec": {"scaleTargetRef": {"name": target}, "minReplicaCount": min,
                    "maxReplicaCount": max, "triggers": []}})
}

/// KEDA's autoscaler for the ScaledObject `owner`: `keda-hpa-<owner>`, owned by it.
fn keda_autoscaler(owner: &str, target: &str, (min, max): (i32, i32)) -> Value {
    let mut autoscaler = autoscaler(&format!("keda-hpa-{owner}"), "Deployment", target, min, max);
    autoscaler["metadata"]["ownerReferences"] = json!([{
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "name": owner,
        "uid": "so-1", "controller": true, "blockOwnerDeletion": true}]);
    autoscaler
}

fn scaled_object_patch(name: &str, patch: Value) -> Exchange {
    Exchange::patch(
        format!("{SCALED_OBJECTS}/{name}?&fieldManager=invoice-operator"),
        MERGE_PATCH,
        patch,
    )
    .ok(
        json!({"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
               "metadata": {"name": name, "namespace": NAMESPACE}}),
    )
}

/// Listing the autoscalers finds only `name`, on Deployment `target`, at `min`..`max`.
fn list_one_autoscaler(name: &str, target: &str, (min, max): (i32, i32)) -> Exchange {
    list_autoscalers(vec![autoscaler(name, "Deployment", target, min, max)])
}

fn scale_out(targets: &[(&str, i32)]) -> Step {
    Step::ScaleOut {
        replicas: replicas(targets),
    }
}

fn scale_read(name: &str, replicas: i32) -> Exchange {
    Exchange::get(format!("{DEPLOYMENTS}/{name}/scale")).ok(scale(name, replicas))
}

fn failover(zone: &str, targets: &[(&str, i32)]) -> Step {
    Step::ZoneFailover {
        zone: zone.to_owned(),
        replicas: replicas(targets),
        canary: false,
    }
}

fn fail_back(zone: &str, targets: &[(&str, i32)]) -> Step {
    Step::ZoneFailBack {
        zone: zone.to_owned(),
        replicas: replicas(targets),
        canary: false,
    }
}

/// Reading the spread Deployment `billing-api`, its pods' affinity `affinity`.
fn spread_deployment_read(affinity: Value) -> Exchange {
    Exchange::get(format!("{DEPLOYMENTS}/billing-api")).ok(deployment("billing-api", affinity))
}

/// The JSON patch `operations` on the spread Deployment `billing-api`.
fn spread_deployment_patch(operations: Value) -> Exchange {
    Exchange::patch(
        format!("{DEPLOYMENTS}/billing-api?&fieldManager=invoice-operator"),
        JSON_PATCH,
        operations,
    )
}

/// A pod affinity requiring one of the node selector `terms`.
fn required_node_terms(terms: Value) -> Value {
    json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": terms}}})
}

/// The guarded patch that steers the spread Deployment off `az1`: fails if its pods' affinity
/// is no longer empty.
fn steer_off_az1() -> Exchange {
    let path = "/spec/template/spec/affinity";
    spread_deployment_patch(json!([
        {"op": "test", "path": path, "value": null},
        {"op": "add", "path": path, "value": required_node_terms(json!([zone_term(&[])]))}
    ]))
}

// --- RestartPod -------------------------------------------------------------------------

#[tokio::test]
async fn restarting_a_pod_evicts_it_so_disruption_budgets_apply() {
    let pod = "billing-api-az1-7f9c-abcde";
    assert_applied(&zonal_service(), restart_pods(&[pod]), vec![evicted(pod)]).await;
}

#[tokio::test]
async fn eviction_refused_by_pdb_is_reported_not_raised() {
    let refusal = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "Cannot evict pod as it would violate the pod's disruption budget.",
        "reason": "TooManyRequests", "code": 429,
        "details": {"causes": [{"reason": "DisruptionBudget",
            "message": "The disruption budget billing-api needs 2 healthy pods and has 2 currently"}]}
    });
    let outcome = run(
        &zonal_service(),
        &action(restart_pods(&["pod-a", "pod-b"])),
        vec![eviction("pod-a").answer(StatusCode::TOO_MANY_REQUESTS, refusal)],
    )
    .await;
    assert_eq!(
        outcome.unwrap(),
        ActOutcome::Refused {
            by: refused_by::POD_DISRUPTION_BUDGET,
            reason: "Cannot evict pod as it would violate the pod's disruption budget. \
                     (The disruption budget billing-api needs 2 healthy pods and has 2 currently)"
                .to_owned()
        }
    );
}

#[tokio::test]
async fn eviction_refused_after_one_pod_was_evicted_stops_and_counts_as_applied() {
    let refused = StatusCode::TOO_MANY_REQUESTS;
    let exchanges = vec![
        evicted("pod-a"),
        failing(
            eviction("pod-b"),
            refused,
            "TooManyRequests",
            "Cannot evict pod",
        ),
    ];
    let step = restart_pods(&["pod-a", "pod-b", "pod-c"]);
    assert_applied(&zonal_service(), step, exchanges).await;
}

#[tokio::test]
async fn evicting_a_pod_that_is_already_gone_counts_as_applied() {
    let gone = StatusCode::NOT_FOUND;
    let exchanges = vec![
        failing(
            eviction("pod-a"),
            gone,
            "NotFound",
            "pods \"pod-a\" not found",
        ),
        evicted("pod-b"),
    ];
    assert_applied(
        &zonal_service(),
        restart_pods(&["pod-a", "pod-b"]),
        exchanges,
    )
    .await;
}

/// A missing permission is the API server's answer, not an error to retry: refused, naming the
/// permission and the rule that grants it.
#[tokio::test]
async fn eviction_forbidden_is_a_refusal_naming_the_permission_and_the_fix() {
    let message = "pods \"pod-a\" is forbidden: User \"system:serviceaccount:ops:trimmed\" \
                   cannot create resource \"pods/eviction\" in API group \"\"";
    let forbidden = failing(
        eviction("pod-a"),
        StatusCode::FORBIDDEN,
        "Forbidden",
        message,
    );
    let outcome = run(
        &zonal_service(),
        &action(restart_pods(&["pod-a"])),
        vec![forbidden],
    )
    .await
    .unwrap();
    let ActOutcome::Refused { by, reason } = outcome else {
        panic!("expected a refusal, got {outcome:?}");
    };
    assert_eq!(by, refused_by::FORBIDDEN);
    assert!(
        reason.contains("system:serviceaccount:ops:trimmed"),
        "{reason}"
    );
    assert!(
        reason.contains(
            r#"add the rule {apiGroups: [""], resources: ["pods/eviction"], verbs: ["create"]}"#
        ),
        "{reason}"
    );
}

/// A server error is not a refusal: it stays an error naming the pod, retried after a backoff.
#[tokio::test]
async fn eviction_failing_on_the_server_is_an_error_naming_the_pod() {
    let broken = StatusCode::INTERNAL_SERVER_ERROR;
    let exchanges = vec![failing(
        eviction("pod-a"),
        broken,
        "InternalError",
        "etcdserver: request timed out",
    )];
    let error = act_error(&zonal_service(), restart_pods(&["pod-a"]), exchanges).await;
    assert_eq!(error.to_string(), "failed to evict pod pod-a");
    assert_eq!(error.metric_label(), "evict_pod");
    assert!(std::error::Error::source(&error).is_some());
}

// --- RolloutRestart ---------------------------------------------------------------------

#[tokio::test]
async fn rollout_restart_patches_only_the_restarted_at_annotation() {
    let body = json!({"spec": {"template": {"metadata": {"annotations": {
        "kubectl.kubernetes.io/restartedAt": "2026-03-31T18:04:05Z"
    }}}}});
    let restart = |name: &str| {
        Exchange::patch(
            format!("{DEPLOYMENTS}/{name}?&fieldManager=invoice-operator"),
            STRATEGIC_PATCH,
            body.clone(),
        )
        .ok(deployment(name, Value::Null))
    };
    let step = Step::RolloutRestart {
        deployments: vec!["billing-api-az1".to_owned(), "billing-api-az2".to_owned()],
    };
    let exchanges = vec![restart("billing-api-az1"), restart("billing-api-az2")];
    assert_applied(&zonal_service(), step, exchanges).await;
}

// --- ScaleOut / ScaleIn -----------------------------------------------------------------

#[tokio::test]
async fn scaling_writes_the_scale_subresource_when_no_autoscaler_targets_the_deployment() {
    let step = scale_out(&[("billing-api-az1", 5), ("billing-api-az2", 4)]);
    let exchanges = vec![
        // An autoscaler for another Deployment, and one for a StatefulSet of that name.
        list_autoscalers(vec![
            autoscaler("other", "Deployment", "reports-api", 2, 10),
            autoscaler("db", "StatefulSet", "billing-api-az1", 1, 3),
        ]),
        list_scaled_objects(vec![]),
        scale_patch("billing-api-az1", 5),
        scale_patch("billing-api-az2", 4),
    ];
    assert_applied(&zonal_service(), step, exchanges).await;
}

#[tokio::test]
async fn scaling_a_deployment_driven_by_an_autoscaler_raises_its_minimum_instead() {
    let (name, target) = ("billing-api-az1", "billing-api-az1");
    let raised = json!({"minReplicas": 6, "maxReplicas": 6});
    let exchanges = vec![
        list_one_autoscaler(name, target, (2, 5)),
        list_scaled_objects(vec![]),
        // maxReplicas 5 is below 6: raised too, or the autoscaler could not comply.
        // Its floor before (2) is remembered on it for ScaleIn.
        Exchange::patch(
            format!("{AUTOSCALERS}/{name}?&fieldManager=invoice-operator"),
            MERGE_PATCH,
            json!({"metadata": {"annotations": {FLOOR_BEFORE_ANNOTATION: "2"}}, "spec": raised}),
        )
        .ok(autoscaler(name, "Deployment", target, 6, 6)),
        // Already at 7 (the autoscaler's choice): left to the autoscaler.
        scale_read(target, 7),
    ];
    assert_applied(&zonal_service(), scale_out(&[(target, 6)]), exchanges).await;
}

#[tokio::test]
async fn scaling_in_through_an_autoscaler_lowers_only_its_minimum() {
    let (name, target) = ("az2-autoscaler", "billing-api-az2");
    let lowered = json!({"minReplicas": 3});
    let exchanges = vec![
        list_one_autoscaler(name, target, (5, 12)),
        list_scaled_objects(vec![]),
        autoscaler_patch(name, target, lowered, (3, 12)),
        scale_read(target, 5),
    ];
    let step = Step::ScaleIn {
        replicas: replicas(&[(target, 3)]),
    };
    assert_applied(&zonal_service(), step, exchanges).await;
}

#[tokio::test]
async fn scaling_in_puts_back_the_floor_the_autoscaler_had_before_the_scale_out() {
    let (name, target) = ("az1-autoscaler", "billing-api-az1");
    // Raised 2 -> 5 by an earlier ScaleOut, which remembered the 2.
    let mut raised = autoscaler(name, "Deployment", target, 5, 10);
    raised["metadata"]["annotations"] = json!({FLOOR_BEFORE_ANNOTATION: "2"});
    let exchanges = vec![
        list_autoscalers(vec![raised]),
        list_scaled_objects(vec![]),
        // Back to 2, not to the Deployment's baseline of 3; the memory goes.
        Exchange::patch(
            format!("{AUTOSCALERS}/{name}?&fieldManager=invoice-operator"),
            MERGE_PATCH,
            json!({"metadata": {"annotations": {FLOOR_BEFORE_ANNOTATION: null}},
                   "spec": {"minReplicas": 2}}),
        )
        .ok(autoscaler(name, "Deployment", target, 2, 10)),
        scale_read(target, 5),
    ];
    let step = Step::ScaleIn {
        replicas: replicas(&[(target, 3)]),
    };
    assert_applied(&zonal_service(), step, exchanges).await;
}

#[tokio::test]
async fn listing_autoscalers_failing_is_an_error_and_nothing_is_scaled() {
    let step = scale_out(&[("billing-api-az1", 5)]);
    let exchanges = vec![failing(
        Exchange::get(format!("{AUTOSCALERS}?")),
        StatusCode::SERVICE_UNAVAILABLE,
        "ServiceUnavailable",
        "the server is currently unable to handle the request",
    )];
    let error = act_error(&zonal_service(), step, exchanges).await;
    assert_eq!(
        error.to_string(),
        "failed to list horizontal pod autoscalers"
    );
    assert_eq!(error.metric_label(), "list_autoscalers");
}

#[tokio::test]
async fn scaling_a_deployment_keda_scales_writes_its_scaled_object_not_keda_s_autoscaler() {
    let target = "billing-api-az1";
    let exchanges = vec![
        list_autoscalers(vec![keda_autoscaler("billing", target, (2, 5))]),
        list_scaled_objects(vec![scaled_object("billing", target, (2, 5), json!({}))]),
        // KEDA rebuilds keda-hpa-billing from this; its maximum 5 is below 6: raised too.
        scaled_object_patch(
            "billing",
            json!({"metadata": {"annotations": {FLOOR_BEFORE_ANNOTATION: "2"}},
                   "spec": {"minReplicaCount": 6, "maxReplicaCount": 6}}),
        ),
        scale_read(target, 4),
        scale_patch(target, 6),
    ];
    assert_applied(&zonal_service(), scale_out(&[(target, 6)]), exchanges).await;
}

#[tokio::test]
async fn a_zone_keda_scales_is_drained_by_pausing_its_scaled_object_and_woken_by_lifting_the_pause()
{
    let (az1, az2) = ("billing-api-az1", "billing-api-az2");
    let objects = |paused: Value, az2_minimum: i32| {
        list_scaled_objects(vec![
            scaled_object("az1", az1, (3, 10), paused),
            scaled_object("az2", az2, (az2_minimum, 10), json!({})),
        ])
    };
    let drain = failover("az1", &[(az1, 0), (az2, 6)]);
    let exchanges = vec![
        list_autoscalers(vec![
            keda_autoscaler("az1", az1, (3, 10)),
            keda_autoscaler("az2", az2, (3, 10)),
        ]),
        objects(json!({}), 3),
        scaled_object_patch("az2", json!({"spec": {"minReplicaCount": 6}})),
        scale_read(az2, 3),
        scale_patch(az2, 6),
        // KEDA would scale a Deployment at 0 back to its minimum: paused at 0 instead.
        scaled_object_patch(
            "az1",
            json!({"metadata": {"annotations": {
                "autoscaling.keda.sh/paused-replicas": "0",
                "invoiceops.dev/paused-replicas": "true"}}}),
        ),
        scale_patch(az1, 0),
    ];
    assert_applied(&zonal_service(), drain, exchanges).await;

    // KEDA removed its autoscaler while paused; fail-back lifts our pause and restores both.
    let back = fail_back("az1", &[(az1, 3), (az2, 3)]);
    let ours = json!({"autoscaling.keda.sh/paused-replicas": "0",
                      "invoiceops.dev/paused-replicas": "true"});
    let exchanges = vec![
        list_autoscalers(vec![keda_autoscaler("az2", az2, (6, 10))]),
        objects(ours, 6),
        scaled_object_patch(
            "az1",
            json!({"metadata": {"annotations": {
                "autoscaling.keda.sh/paused-replicas": null,
                "invoiceops.dev/paused-replicas": null}}}),
        ),
        scale_read(az1, 0),
        scale_patch(az1, 3),
        scaled_object_patch("az2", json!({"spec": {"minReplicaCount": 3}})),
        scale_read(az2, 6),
    ];
    assert_applied(&zonal_service(), back, exchanges).await;
}

#[tokio::test]
async fn scaled_objects_that_cannot_be_listed_stop_a_scale_only_when_keda_owns_an_autoscaler() {
    let target = "billing-api-az1";
    let forbidden = || {
        failing(
            Exchange::get(format!("{SCALED_OBJECTS}?")),
            StatusCode::FORBIDDEN,
            "Forbidden",
            "scaledobjects.keda.sh is forbidden",
        )
    };
    // No KEDA autoscaler: scaled as before.
    let exchanges = vec![
        list_autoscalers(vec![]),
        forbidden(),
        scale_patch(target, 5),
    ];
    assert_applied(&zonal_service(), scale_out(&[(target, 5)]), exchanges).await;
    // KEDA's autoscaler there: writing it would be undone, so nothing is written, and the
    // refusal names the missing permission.
    let exchanges = vec![
        list_autoscalers(vec![keda_autoscaler("billing", target, (2, 5))]),
        forbidden(),
    ];
    let outcome = run(
        &zonal_service(),
        &action(scale_out(&[(target, 5)])),
        exchanges,
    )
    .await;
    let Ok(ActOutcome::Refused { by, reason }) = outcome else {
        panic!("not refused: {outcome:?}");
    };
    assert_eq!(by, refused_by::FORBIDDEN);
    assert!(reason.contains("list on scaledobjects"), "{reason}");
}

// --- EnterReadOnly / ExitReadOnly -------------------------------------------------------

fn mode_apply(value: &str) -> Exchange {
    Exchange::patch(
        "/api/v1/namespaces/invoicing/configmaps/billing-api-mode?&force=true&fieldManager=invoice-operator",
        APPLY_PATCH,
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "billing-api-mode", "namespace": NAMESPACE},
               "data": {"mode": value}}),
    )
    .ok(json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "billing-api-mode", "namespace": NAMESPACE},
               "data": {"mode": value, "featureFlags": "a,b"}}))
}

#[tokio::test]
async fn entering_read_only_applies_only_the_mode_key_with_our_field_manager() {
    let exchanges = vec![mode_apply("read-only")];
    assert_applied(&zonal_service(), Step::EnterReadOnly, exchanges).await;
}

#[tokio::test]
async fn exiting_read_only_applies_the_read_write_value() {
    let exchanges = vec![mode_apply("read-write")];
    assert_applied(&zonal_service(), Step::ExitReadOnly, exchanges).await;
}

#[tokio::test]
async fn read_only_without_a_configured_switch_is_an_error_not_a_panic() {
    let error = act_error(&spread_service(), Step::EnterReadOnly, vec![]).await;
    assert_eq!(
        error.to_string(),
        "read-only mode is not configured (spec.remediation.readOnly)"
    );
    assert_eq!(error.metric_label(), "read_only_not_configured");
}

// --- ZoneFailover / ZoneFailBack --------------------------------------------------------

/// Runs the zone move `step` for the zonal service, no autoscaler in the namespace, and
/// asserts it was applied by writing the `/scale` of each Deployment in `written`, in order.
async fn assert_scaled_in_order(step: Step, written: &[(&str, i32)]) {
    let mut exchanges = vec![list_autoscalers(vec![]), list_scaled_objects(vec![])];
    exchanges.extend(
        written
            .iter()
            .map(|(name, replicas)| scale_patch(name, *replicas)),
    );
    assert_applied(&zonal_service(), step, exchanges).await;
}

#[tokio::test]
async fn zone_failover_scales_healthy_zones_up_before_draining_the_failed_zone() {
    let (az1, az2, az3) = ("billing-api-az1", "billing-api-az2", "billing-api-az3");
    let step = failover("az2", &[(az1, 6), (az2, 0), (az3, 6)]);
    assert_scaled_in_order(step, &[(az1, 6), (az3, 6), (az2, 0)]).await;
}

#[tokio::test]
async fn zone_fail_back_restores_the_failed_zone_before_shrinking_the_others() {
    let (az1, az2, az3) = ("billing-api-az1", "billing-api-az2", "billing-api-az3");
    let step = fail_back("az3", &[(az1, 4), (az2, 4), (az3, 4)]);
    assert_scaled_in_order(step, &[(az3, 4), (az1, 4), (az2, 4)]).await;
}

#[tokio::test]
async fn zone_failover_drains_an_autoscaled_zone_through_scale_and_fail_back_wakes_it() {
    let service = zonal_service();
    let autoscalers = || {
        list_autoscalers(vec![
            autoscaler("az1", "Deployment", "billing-api-az1", 4, 10),
            autoscaler("az2", "Deployment", "billing-api-az2", 4, 10),
        ])
    };
    let minimum = |replicas: i32| json!({ "minReplicas": replicas });
    let drain_az1 = failover("az1", &[("billing-api-az1", 0), ("billing-api-az2", 8)]);
    let exchanges = vec![
        autoscalers(),
        list_scaled_objects(vec![]),
        autoscaler_patch("az2", "billing-api-az2", minimum(8), (8, 10)),
        scale_read("billing-api-az2", 4),
        scale_patch("billing-api-az2", 8),
        // minReplicas cannot be 0; an autoscaler leaves a Deployment at zero alone.
        scale_patch("billing-api-az1", 0),
    ];
    assert_applied(&service, drain_az1, exchanges).await;

    let restored = [("billing-api-az1", 4), ("billing-api-az2", 4)];
    let exchanges = vec![
        autoscalers(),
        list_scaled_objects(vec![]),
        autoscaler_patch("az1", "billing-api-az1", minimum(4), (4, 10)),
        // At zero the autoscaler is disabled, so the operator wakes the Deployment.
        scale_read("billing-api-az1", 0),
        scale_patch("billing-api-az1", 4),
        autoscaler_patch("az2", "billing-api-az2", minimum(4), (4, 10)),
        scale_read("billing-api-az2", 8),
    ];
    assert_applied(&service, fail_back("az1", &restored), exchanges).await;
}

#[tokio::test]
async fn zone_failover_of_a_single_deployment_adds_a_guarded_node_affinity_term() {
    let steered = required_node_terms(json!([zone_term(&[])]));
    let exchanges = vec![
        spread_deployment_read(Value::Null),
        steer_off_az1().ok(deployment("billing-api", steered)),
    ];
    assert_applied(&spread_service(), failover("az1", &[]), exchanges).await;
}

#[tokio::test]
async fn zone_failover_of_a_single_deployment_already_steered_writes_nothing() {
    let steered = required_node_terms(json!([zone_term(&[])]));
    let exchanges = vec![spread_deployment_read(steered)];
    assert_applied(&spread_service(), failover("az1", &[]), exchanges).await;
}

#[tokio::test]
async fn zone_fail_back_of_a_single_deployment_removes_only_our_expression() {
    let user = json!({"key": "pool", "operator": "In", "values": ["invoices"]});
    let terms_path = "/spec/template/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms";
    let ours_and_user = json!([zone_term(std::slice::from_ref(&user))]);
    let exchanges = vec![
        spread_deployment_read(required_node_terms(ours_and_user.clone())),
        spread_deployment_patch(json!([
            {"op": "test", "path": terms_path, "value": ours_and_user},
            {"op": "add", "path": terms_path, "value": [{"matchExpressions": [user]}]}
        ]))
        .ok(deployment("billing-api", Value::Null)),
    ];
    assert_applied(&spread_service(), fail_back("az1", &[]), exchanges).await;
}

#[tokio::test]
async fn a_concurrent_affinity_edit_fails_the_patch_instead_of_being_overwritten() {
    let exchanges = vec![
        spread_deployment_read(Value::Null),
        failing(
            steer_off_az1(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "",
            "the server rejected our request due to an error in our request",
        ),
    ];
    let error = act_error(&spread_service(), failover("az1", &[]), exchanges).await;
    assert_eq!(
        error.to_string(),
        "failed to patch the node affinity of deployment billing-api"
    );
    assert_eq!(error.metric_label(), "patch_affinity");
}

#[test]
fn zone_scale_order_puts_capacity_before_drain_and_the_failed_zone_first_on_fail_back() {
    let service = zonal_service();
    let targets = replicas(&[
        ("billing-api-az1", 6),
        ("billing-api-az2", 0),
        ("billing-api-az3", 6),
        ("unknown-deployment", 1),
    ]);
    assert_eq!(
        zone_scale_order(&service, "az2", &targets, true),
        vec![
            ("billing-api-az1", 6),
            ("billing-api-az3", 6),
            ("unknown-deployment", 1),
            ("billing-api-az2", 0),
        ]
    );
    assert_eq!(
        zone_scale_order(&service, "az2", &targets, false),
        vec![
            ("billing-api-az2", 0),
            ("billing-api-az1", 6),
            ("billing-api-az3", 6),
            ("unknown-deployment", 1),
        ]
    );
}

#[test]
fn every_error_has_a_fixed_lowercase_metric_label() {
    let errors = [
        ActError::MissingNamespace {
            name: "a".to_owned(),
        },
        ActError::ReadOnlyNotConfigured,
        ActError::NoDeploymentForZone {
            zone: "az1".to_owned(),
        },
    ];
    for error in errors {
        let label = error.metric_label();
        assert!(
            label
                .chars()
                .all(|character| character.is_ascii_lowercase() || character == '_'),
            "{label}"
        );
        let message = error.to_string();
        assert!(!message.ends_with('.'), "{message}");
        assert!(message.starts_with(|c: char| c.is_lowercase()), "{message}");
    }
}

// --- Argo Rollouts ----------------------------------------------------------------------

const ROLLOUTS: &str = "/apis/argoproj.io/v1alpha1/namespaces/invoicing/rollouts";

/// A service with one Argo Rollout per zone.
fn zonal_rollouts() -> InvoiceService {
    billing_api(
        "
  workload:
    kind: Rollout
    deployments:
    - {name: billing-api-az1, zone: az1}
    - {name: billing-api-az2, zone: az2}
",
    )
}

fn rollout(name: &str) -> Value {
    json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
           "metadata": {"name": name, "namespace": NAMESPACE}, "spec": {"replicas": 3}})
}

fn rollout_scale_patch(name: &str, replicas: i32) -> Exchange {
    scale_patch_of(ROLLOUTS, name, replicas)
}

#[tokio::test]
async fn a_rollout_is_restarted_through_its_restart_at_not_a_template_annotation() {
    // A merge patch (custom resources serve no strategic merge) of spec.restartAt alone: Argo
    // Rollouts restarts the pods created before it, without a new revision.
    let restart = |name: &str| {
        Exchange::patch(
            format!("{ROLLOUTS}/{name}?&fieldManager=invoice-operator"),
            MERGE_PATCH,
            json!({"spec": {"restartAt": "2026-03-31T18:04:05Z"}}),
        )
        .ok(rollout(name))
    };
    let step = Step::RolloutRestart {
        deployments: vec!["billing-api-az1".to_owned()],
    };
    assert_applied(&zonal_rollouts(), step, vec![restart("billing-api-az1")]).await;
}

#[tokio::test]
async fn a_rollout_is_scaled_through_its_scale_subresource_and_a_deployment_s_autoscaler_is_left_alone()
 {
    let step = scale_out(&[("billing-api-az1", 5), ("billing-api-az2", 4)]);
    let exchanges = vec![
        // An autoscaler of a Deployment of the same name is not the Rollout's.
        list_one_autoscaler("deployment-hpa", "billing-api-az1", (2, 10)),
        list_scaled_objects(vec![]),
        rollout_scale_patch("billing-api-az1", 5),
        rollout_scale_patch("billing-api-az2", 4),
    ];
    assert_applied(&zonal_rollouts(), step, exchanges).await;
}

#[tokio::test]
async fn a_rollout_driven_by_an_autoscaler_gets_its_floor_raised_and_its_scale_read() {
    let mut hpa = autoscaler("rollout-hpa", "Rollout", "billing-api-az1", 2, 10);
    hpa["spec"]["scaleTargetRef"]["apiVersion"] = json!("argoproj.io/v1alpha1");
    let mut raised = hpa.clone();
    raised["spec"]["minReplicas"] = json!(5);
    let exchanges = vec![
        list_autoscalers(vec![hpa]),
        list_scaled_objects(vec![]),
        Exchange::patch(
            format!("{AUTOSCALERS}/rollout-hpa?&fieldManager=invoice-operator"),
            MERGE_PATCH,
            json!({"metadata": {"annotations": {FLOOR_BEFORE_ANNOTATION: "2"}},
                   "spec": {"minReplicas": 5}}),
        )
        .ok(raised),
        Exchange::get(format!("{ROLLOUTS}/billing-api-az1/scale")).ok(scale("billing-api-az1", 3)),
        rollout_scale_patch("billing-api-az1", 5),
    ];
    let step = scale_out(&[("billing-api-az1", 5)]);
    assert_applied(&zonal_rollouts(), step, exchanges).await;
}

#[tokio::test]
async fn scaling_a_rollout_without_the_permission_is_refused_naming_the_rollouts_rule() {
    let forbidden = failing(
        Exchange::patch(
            format!("{ROLLOUTS}/billing-api-az1/scale?&fieldManager=invoice-operator"),
            MERGE_PATCH,
            json!({"spec": {"replicas": 5}}),
        ),
        StatusCode::FORBIDDEN,
        "Forbidden",
        "rollouts.argoproj.io \"billing-api-az1\" is forbidden",
    );
    let exchanges = vec![
        list_autoscalers(vec![]),
        list_scaled_objects(vec![]),
        forbidden,
    ];
    let outcome = run(
        &zonal_rollouts(),
        &action(scale_out(&[("billing-api-az1", 5)])),
        exchanges,
    )
    .await
    .unwrap();
    let ActOutcome::Refused { by, reason } = outcome else {
        panic!("not refused: {outcome:?}");
    };
    assert_eq!(by, refused_by::FORBIDDEN);
    assert!(
        reason.contains(
            r#"{apiGroups: ["argoproj.io"], resources: ["rollouts/scale"], verbs: ["patch"]}"#
        ),
        "{reason}"
    );
}
