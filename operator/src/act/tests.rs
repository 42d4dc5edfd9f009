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

/// A service with one Deployment per zone, read-only switch configured.
fn zonal_service() -> InvoiceService {
    serde_yaml::from_str(
        "
apiVersion: invoiceops.dev/v1alpha1
kind: InvoiceService
metadata: {name: billing-api, namespace: invoicing}
spec:
  workload:
    deployments:
    - {name: billing-api-az1, zone: az1}
    - {name: billing-api-az2, zone: az2}
    - {name: billing-api-az3, zone: az3}
  slos: {availability: {objective: '99.95'}}
  remediation:
    readOnly:
      switch: {configMap: {name: billing-api-mode, key: mode, readOnly: read-only, readWrite: read-write}}
",
    )
    .unwrap()
}

/// A service with one Deployment spread over zones.
fn spread_service() -> InvoiceService {
    serde_yaml::from_str(
        "
apiVersion: invoiceops.dev/v1alpha1
kind: InvoiceService
metadata: {name: billing-api, namespace: invoicing}
spec:
  workload:
    deployment: billing-api
    zones: [az1, az2, az3]
    zoneLabel: topology.kubernetes.io/zone
  slos: {availability: {objective: '99.95'}}
",
    )
    .unwrap()
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

fn restart_pods(names: &[&str]) -> PlannedAction {
    action(Step::RestartPod {
        pods: names.iter().map(|name| (*name).to_owned()).collect(),
    })
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
    Exchange::patch(
        format!("{DEPLOYMENTS}/{name}/scale?&fieldManager=invoice-operator"),
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

// --- RestartPod -------------------------------------------------------------------------

#[tokio::test]
async fn restarting_a_pod_evicts_it_so_disruption_budgets_apply() {
    let outcome = run(
        &zonal_service(),
        &restart_pods(&["billing-api-az1-7f9c-abcde"]),
        vec![eviction("billing-api-az1-7f9c-abcde").answer(StatusCode::CREATED, success())],
    )
    .await;
    assert_eq!(outcome.unwrap(), ActOutcome::Applied);
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
        &restart_pods(&["pod-a", "pod-b"]),
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
    let outcome = run(
        &zonal_service(),
        &restart_pods(&["pod-a", "pod-b", "pod-c"]),
        vec![
            eviction("pod-a").answer(StatusCode::CREATED, success()),
            eviction("pod-b").answer(
                StatusCode::TOO_MANY_REQUESTS,
                failure(429, "TooManyRequests", "Cannot evict pod"),
            ),
        ],
    )
    .await;
    assert_eq!(outcome.unwrap(), ActOutcome::Applied);
}

#[tokio::test]
async fn evicting_a_pod_that_is_already_gone_counts_as_applied() {
    let outcome = run(
        &zonal_service(),
        &restart_pods(&["pod-a", "pod-b"]),
        vec![
            eviction("pod-a").answer(
                StatusCode::NOT_FOUND,
                failure(404, "NotFound", "pods \"pod-a\" not found"),
            ),
            eviction("pod-b").answer(StatusCode::CREATED, success()),
        ],
    )
    .await;
    assert_eq!(outcome.unwrap(), ActOutcome::Applied);
}

/// A missing permission is the API server's answer, not an error to retry: refused, naming the
/// permission and the rule that grants it.
#[tokio::test]
async fn eviction_forbidden_is_a_refusal_naming_the_permission_and_the_fix() {
    let outcome = run(
        &zonal_service(),
        &restart_pods(&["pod-a"]),
        vec![eviction("pod-a").answer(
            StatusCode::FORBIDDEN,
            failure(
                403,
                "Forbidden",
                "pods \"pod-a\" is forbidden: User \"system:serviceaccount:ops:trimmed\" \
                 cannot create resource \"pods/eviction\" in API group \"\"",
            ),
        )],
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
    let error = run(
        &zonal_service(),
        &restart_pods(&["pod-a"]),
        vec![eviction("pod-a").answer(
            StatusCode::INTERNAL_SERVER_ERROR,
            failure(500, "InternalError", "etcdserver: request timed out"),
        )],
    )
    .await
    .unwrap_err();
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
    let outcome = run(
        &zonal_service(),
        &action(Step::RolloutRestart {
            deployments: vec!["billing-api-az1".to_owned(), "billing-api-az2".to_owned()],
        }),
        vec![
            Exchange::patch(
                format!("{DEPLOYMENTS}/billing-api-az1?&fieldManager=invoice-operator"),
                STRATEGIC_PATCH,
                body.clone(),
            )
            .ok(deployment("billing-api-az1", Value::Null)),
            Exchange::patch(
                format!("{DEPLOYMENTS}/billing-api-az2?&fieldManager=invoice-operator"),
                STRATEGIC_PATCH,
                body,
            )
            .ok(deployment("billing-api-az2", Value::Null)),
        ],
    )
    .await;
    assert_eq!(outcome.unwrap(), ActOutcome::Applied);
}

// --- ScaleOut / ScaleIn -----------------------------------------------------------------

#[tokio::test]
async fn scaling_writes_the_scale_subresource_when_no_autoscaler_targets_the_deployment() {
    let outcome = run(
        &zonal_service(),
        &action(Step::ScaleOut {
            replicas: replicas(&[("billing-api-az1", 5), ("billing-api-az2", 4)]),
        }),
        vec![
            // An autoscaler for another Deployment, and one for a StatefulSet of that name.
            list_autoscalers(vec![
                autoscaler("other", "Deployment", "reports-api", 2, 10),
                autoscaler("db", "StatefulSet", "billing-api-az1", 1, 3),
            ]),
            scale_patch("billing-api-az1", 5),
            scale_patch("billing-api-az2", 4),
        ],
    )
    .await;
    assert_eq!(outcome.unwrap(), ActOutcome::Applied);
}

#[tokio::test]
async fn scaling_a_deployment_driven_by_an_autoscaler_raises_its_minimum_instead() {
    let outcome = run(
        &zonal_service(),
        &action(Step::ScaleOut {
            replicas: replicas(&[("billing-api-az1", 6)]),
        }),
        vec![
            list_autoscalers(vec![autoscaler(
                "billing-api-az1",
                "Deployment",
                "billing-api-az1",
                2,
                5,
            )]),
            // maxReplicas 5 is below 6: raised too, or the autoscaler could not comply.
            Exchange::patch(
                format!("{AUTOSCALERS}/billing-api-az1?&fieldManager=invoice-operator"),
                MERGE_PATCH,
                json!({"spec": {"minReplicas": 6, "maxReplicas": 6}}),
            )
            .ok(autoscaler(
                "billing-api-az1",
                "Deployment",
                "billing-api-az1",
                6,
                6,
            )),
            // Already at 7 (the autoscaler's choice): left to the autoscaler.
            Exchange::get(format!("{DEPLOYMENTS}/billing-api-az1/scale"))
                .ok(scale("billing-api-az1", 7)),
        ],
    )
    .await;
    assert_eq!(outcome.unwrap(), ActOutcome::Applied);
}

#[tokio::test]
async fn scaling_in_through_an_autoscaler_lowers_only_its_minimum() {
    let outcome = run(
        &zonal_service(),
        &action(Step::ScaleIn {
            replicas: replicas(&[("billing-api-az2", 3)]),
        }),
        vec![
            list_autoscalers(vec![autoscaler(
                "az2-autoscaler",
                "Deployment",
                "billing-api-az2",
                5,
                12,
            )]),
            Exchange::patch(
                format!("{AUTOSCALERS}/az2-autoscaler?&fieldManager=invoice-operator"),
                MERGE_PATCH,
                json!({"spec": {"minReplicas": 3}}),
            )
            .ok(autoscaler(
                "az2-autoscaler",
                "Deployment",
                "billing-api-az2",
                3,
                12,
            )),
            Exchange::get(format!("{DEPLOYMENTS}/billing-api-az2/scale"))
                .ok(scale("billing-api-az2", 5)),
        ],
    )
    .await;
    assert_eq!(outcome.unwrap(), ActOutcome::Applied);
}

#[tokio::test]
async fn listing_autoscalers_failing_is_an_error_and_nothing_is_scaled() {
    let error = run(
        &zonal_service(),
        &action(Step::ScaleOut {
            replicas: replicas(&[("billing-api-az1", 5)]),
        }),
        vec![Exchange::get(format!("{AUTOSCALERS}?")).answer(
            StatusCode::SERVICE_UNAVAILABLE,
            failure(
                503,
                "ServiceUnavailable",
                "the server is currently unable to handle the request",
            ),
        )],
    )
    .await
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "failed to list horizontal pod autoscalers"
    );
    assert_eq!(error.metric_label(), "list_autoscalers");
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
    let outcome = run(
        &zonal_service(),
        &action(Step::EnterReadOnly),
        vec![mode_apply("read-only")],
    )
    .await;
    assert_eq!(outcome.unwrap(), ActOutcome::Applied);
}

#[tokio::test]
async fn exiting_read_only_applies_the_read_write_value() {
    let outcome = run(
        &zonal_service(),
        &action(Step::ExitReadOnly),
        vec![mode_apply("read-write")],
    )
    .await;
    assert_eq!(outcome.unwrap(), ActOutcome::Applied);
}

#[tokio::test]
async fn read_only_without_a_configured_switch_is_an_error_not_a_panic() {
    let error = run(&spread_service(), &action(Step::EnterReadOnly), vec![])
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "read-only mode is not configured (spec.remediation.readOnly)"
    );
    assert_eq!(error.metric_label(), "read_only_not_configured");
}

// --- ZoneFailover / ZoneFailBack --------------------------------------------------------

#[tokio::test]
async fn zone_failover_scales_healthy_zones_up_before_draining_the_failed_zone() {
    let outcome = run(
        &zonal_service(),
        &action(Step::ZoneFailover {
            zone: "az2".to_owned(),
            replicas: replicas(&[
                ("billing-api-az1", 6),
                ("billing-api-az2", 0),
                ("billing-api-az3", 6),
            ]),
            canary: false,
        }),
        vec![
            list_autoscalers(vec![]),
            scale_patch("billing-api-az1", 6),
            scale_patch("billing-api-az3", 6),
            scale_patch("billing-api-az2", 0),
        ],
    )
    .await;
    assert_eq!(outcome.unwrap(), ActOutcome::Applied);
}

#[tokio::test]
async fn zone_fail_back_restores_the_failed_zone_before_shrinking_the_others() {
    let outcome = run(
        &zonal_service(),
        &action(Step::ZoneFailBack {
            zone: "az3".to_owned(),
            replicas: replicas(&[
                ("billing-api-az1", 4),
                ("billing-api-az2", 4),
                ("billing-api-az3", 4),
            ]),
            canary: false,
        }),
        vec![
            list_autoscalers(vec![]),
            scale_patch("billing-api-az3", 4),
            scale_patch("billing-api-az1", 4),
            scale_patch("billing-api-az2", 4),
        ],
    )
    .await;
    assert_eq!(outcome.unwrap(), ActOutcome::Applied);
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
    let failover = run(
        &service,
        &action(Step::ZoneFailover {
            zone: "az1".to_owned(),
            replicas: replicas(&[("billing-api-az1", 0), ("billing-api-az2", 8)]),
            canary: false,
        }),
        vec![
            autoscalers(),
            Exchange::patch(
                format!("{AUTOSCALERS}/az2?&fieldManager=invoice-operator"),
                MERGE_PATCH,
                json!({"spec": {"minReplicas": 8}}),
            )
            .ok(autoscaler("az2", "Deployment", "billing-api-az2", 8, 10)),
            Exchange::get(format!("{DEPLOYMENTS}/billing-api-az2/scale"))
                .ok(scale("billing-api-az2", 4)),
            scale_patch("billing-api-az2", 8),
            // minReplicas cannot be 0; an autoscaler leaves a Deployment at zero alone.
            scale_patch("billing-api-az1", 0),
        ],
    )
    .await;
    assert_eq!(failover.unwrap(), ActOutcome::Applied);

    let fail_back = run(
        &service,
        &action(Step::ZoneFailBack {
            zone: "az1".to_owned(),
            replicas: replicas(&[("billing-api-az1", 4), ("billing-api-az2", 4)]),
            canary: false,
        }),
        vec![
            autoscalers(),
            Exchange::patch(
                format!("{AUTOSCALERS}/az1?&fieldManager=invoice-operator"),
                MERGE_PATCH,
                json!({"spec": {"minReplicas": 4}}),
            )
            .ok(autoscaler("az1", "Deployment", "billing-api-az1", 4, 10)),
            // At zero the autoscaler is disabled, so the operator wakes the Deployment.
            Exchange::get(format!("{DEPLOYMENTS}/billing-api-az1/scale"))
                .ok(scale("billing-api-az1", 0)),
            scale_patch("billing-api-az1", 4),
            Exchange::patch(
                format!("{AUTOSCALERS}/az2?&fieldManager=invoice-operator"),
                MERGE_PATCH,
                json!({"spec": {"minReplicas": 4}}),
            )
            .ok(autoscaler("az2", "Deployment", "billing-api-az2", 4, 10)),
            Exchange::get(format!("{DEPLOYMENTS}/billing-api-az2/scale"))
                .ok(scale("billing-api-az2", 8)),
        ],
    )
    .await;
    assert_eq!(fail_back.unwrap(), ActOutcome::Applied);
}

#[tokio::test]
async fn zone_failover_of_a_single_deployment_adds_a_guarded_node_affinity_term() {
    let zone_path = "/spec/template/spec/affinity";
    let outcome = run(
        &spread_service(),
        &action(Step::ZoneFailover {
            zone: "az1".to_owned(),
            replicas: BTreeMap::new(),
            canary: false,
        }),
        vec![
            Exchange::get(format!("{DEPLOYMENTS}/billing-api"))
                .ok(deployment("billing-api", Value::Null)),
            Exchange::patch(
                format!("{DEPLOYMENTS}/billing-api?&fieldManager=invoice-operator"),
                JSON_PATCH,
                json!([
                    {"op": "test", "path": zone_path, "value": null},
                    {"op": "add", "path": zone_path, "value": {"nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [zone_term(&[])]}}}}
                ]),
            )
            .ok(deployment(
                "billing-api",
                json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [zone_term(&[])]}}}),
            )),
        ],
    )
    .await;
    assert_eq!(outcome.unwrap(), ActOutcome::Applied);
}

#[tokio::test]
async fn zone_failover_of_a_single_deployment_already_steered_writes_nothing() {
    let steered = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [zone_term(&[])]}}});
    let outcome = run(
        &spread_service(),
        &action(Step::ZoneFailover {
            zone: "az1".to_owned(),
            replicas: BTreeMap::new(),
            canary: false,
        }),
        vec![
            Exchange::get(format!("{DEPLOYMENTS}/billing-api"))
                .ok(deployment("billing-api", steered)),
        ],
    )
    .await;
    assert_eq!(outcome.unwrap(), ActOutcome::Applied);
}

#[tokio::test]
async fn zone_fail_back_of_a_single_deployment_removes_only_our_expression() {
    let user = json!({"key": "pool", "operator": "In", "values": ["invoices"]});
    let terms_path = "/spec/template/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms";
    let outcome = run(
        &spread_service(),
        &action(Step::ZoneFailBack {
                zone: "az1".to_owned(),
                replicas: BTreeMap::new(), canary: false,
            }),
        vec![
            Exchange::get(format!("{DEPLOYMENTS}/billing-api")).ok(deployment(
                "billing-api",
                json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [zone_term(std::slice::from_ref(&user))]}}}),
            )),
            Exchange::patch(
                format!("{DEPLOYMENTS}/billing-api?&fieldManager=invoice-operator"),
                JSON_PATCH,
                json!([
                    {"op": "test", "path": terms_path, "value": [zone_term(std::slice::from_ref(&user))]},
                    {"op": "add", "path": terms_path, "value": [{"matchExpressions": [user]}]}
                ]),
            )
            .ok(deployment("billing-api", Value::Null)),
        ],
    )
    .await;
    assert_eq!(outcome.unwrap(), ActOutcome::Applied);
}

#[tokio::test]
async fn a_concurrent_affinity_edit_fails_the_patch_instead_of_being_overwritten() {
    let error = run(
        &spread_service(),
        &action(Step::ZoneFailover {
                zone: "az1".to_owned(),
                replicas: BTreeMap::new(), canary: false,
            }),
        vec![
            Exchange::get(format!("{DEPLOYMENTS}/billing-api"))
                .ok(deployment("billing-api", Value::Null)),
            Exchange::patch(
                format!("{DEPLOYMENTS}/billing-api?&fieldManager=invoice-operator"),
                JSON_PATCH,
                json!([
                    {"op": "test", "path": "/spec/template/spec/affinity", "value": null},
                    {"op": "add", "path": "/spec/template/spec/affinity", "value": {"nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [zone_term(&[])]}}}}
                ]),
            )
            .answer(
                StatusCode::UNPROCESSABLE_ENTITY,
                failure(
                    422,
                    "",
                    "the server rejected our request due to an error in our request",
                ),
            ),
        ],
    )
    .await
    .unwrap_err();
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
