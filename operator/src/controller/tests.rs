//! Reconcile against a mocked API server (tower-test): the exact writes of a remediation, of
//! an invalid spec, and no write at all for a reconcile that changes nothing.

use std::sync::{Arc, Mutex};

use http::{Method, Request, Response};
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Client,
    client::Body,
    runtime::{reflector, watcher},
};
use serde_json::{Value, json};

use super::*;
use crate::{
    metrics::Metrics,
    prometheus::{Limits, MetricProfile},
};

const SERVICE_STATUS: &str = "/apis/invoiceops.dev/v1alpha1/namespaces/invoicing/invoiceservices/invoice-api/status?&force=true&fieldManager=invoice-operator";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/invoicing/events?";

/// One request the operator sent.
#[derive(Clone, Debug)]
struct Sent {
    method: Method,
    uri: String,
    body: Value,
}

/// Answers every request like the API server would (echoing the object) and records it.
fn api_server() -> (Client, Arc<Mutex<Vec<Sent>>>) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let sent = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&sent);
    tokio::spawn(async move {
        while let Some((request, respond)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let bytes = http_body_util::BodyExt::collect(body)
                .await
                .map(|collected| collected.to_bytes())
                .unwrap_or_default();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let uri = parts.uri.to_string();
            let mut answer = body.clone();
            if uri.contains("/invoiceservices/") {
                answer["metadata"] = json!({"name": "invoice-api", "namespace": "invoicing"});
                answer["spec"] = service_object(false)["spec"].clone();
            }
            if uri.contains("/events") {
                answer["metadata"] = json!({"name": "event-1", "namespace": "invoicing"});
            }
            if uri.ends_with("/eviction?") {
                answer = json!({"kind": "Status", "apiVersion": "v1", "status": "Success"});
            }
            record.lock().unwrap().push(Sent {
                method: parts.method,
                uri,
                body,
            });
            respond.send_response(
                Response::builder()
                    .status(if answer.is_null() { 200 } else { 201 })
                    .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                    .unwrap(),
            );
        }
    });
    (Client::new(service, "invoicing"), sent)
}

fn service_object(invalid: bool) -> Value {
    json!({
        "apiVersion": "invoiceops.dev/v1alpha1",
        "kind": "InvoiceService",
        "metadata": {"name": "invoice-api", "namespace": "invoicing", "uid": "1", "generation": 2},
        "spec": {
            "workload": {"deployment": "invoice-api"},
            "slos": {"availability": {"objective": "99.9"}},
            "remediation": {
                "ladder": ["RestartPod"],
                "scale": {"minReplicas": if invalid { 9 } else { 2 }, "maxReplicas": 4}
            }
        }
    })
}

fn pod(name: &str, crash_loop: bool) -> Pod {
    serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "namespace": "invoicing",
            "labels": {"app": "invoice-api", "pod-template-hash": "7d9f"},
            "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "invoice-api-7d9f",
                "uid": "rs", "controller": true
            }]
        },
        "spec": {"containers": [{"name": "app", "image": "invoice-api"}], "nodeName": "node-a"},
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": if crash_loop { "False" } else { "True" }}],
            "containerStatuses": [{
                "name": "app", "image": "invoice-api", "imageID": "", "ready": !crash_loop,
                "restartCount": if crash_loop { 5 } else { 0 },
                "state": if crash_loop {
                    json!({"waiting": {"reason": "CrashLoopBackOff"}})
                } else {
                    json!({"running": {}})
                }
            }]
        }
    }))
    .unwrap()
}

fn context(client: Client, pods: Vec<Pod>) -> Arc<Context> {
    let (pod_store, mut pod_writer) = reflector::store();
    for pod in pods {
        pod_writer.apply_watcher_event(&watcher::Event::Apply(pod));
    }
    let caches = Caches {
        pods: pod_store,
        deployments: reflector::store().0,
        nodes: reflector::store().0,
        config_maps: reflector::store().0,
    };
    let prometheus = Prometheus::new(
        "http://127.0.0.1:1",
        MetricProfile::default(),
        Limits::default(),
    )
    .unwrap();
    Arc::new(Context::new(
        client,
        Reporter {
            controller: "invoice-operator".into(),
            instance: Some("test".into()),
        },
        Arc::new(Metrics::default()),
        prometheus,
        Settings {
            evaluation_interval: Duration::from_secs(15),
            detection_window: Duration::from_secs(60),
            stale_after: Duration::from_secs(120),
            storm_share: 0.5,
            storm_min_services: 5,
            force_dry_run: false,
            namespace: None,
        },
        watch::channel(true).1,
        caches,
    ))
}

async fn settle() {
    tokio::time::sleep(Duration::from_millis(50)).await;
}

#[tokio::test]
async fn a_crash_looping_pod_is_evicted_then_status_and_events_are_written() {
    let (client, sent) = api_server();
    let context = context(
        client,
        vec![
            pod("invoice-api-7d9f-aaaaa", true),
            pod("invoice-api-7d9f-bbbbb", false),
        ],
    );
    let service: InvoiceService = serde_json::from_value(service_object(false)).unwrap();
    reconcile(Arc::new(service), context).await.unwrap();
    settle().await;
    let sent = sent.lock().unwrap().clone();
    assert_eq!(sent[0].method, Method::POST);
    assert_eq!(
        sent[0].uri,
        "/api/v1/namespaces/invoicing/pods/invoice-api-7d9f-aaaaa/eviction?"
    );
    assert_eq!(sent[1].method, Method::PATCH);
    assert_eq!(sent[1].uri, SERVICE_STATUS);
    let status = &sent[1].body["status"];
    assert_eq!(status["lastAction"]["action"], "RestartPod");
    assert_eq!(status["lastAction"]["target"], "pod/invoice-api-7d9f-aaaaa");
    assert_eq!(status["lastAction"]["outcome"], "Pending");
    assert_eq!(status["phase"], "Remediating");
    assert_eq!(status["observedGeneration"], 2);
    let events: Vec<&Sent> = sent[2..].iter().filter(|s| s.uri == EVENTS).collect();
    let reasons: Vec<&str> = events
        .iter()
        .filter_map(|event| event.body["reason"].as_str())
        .collect();
    // On the InvoiceService and on the pod; and the untrusted signals (no metrics yet).
    assert_eq!(
        reasons
            .iter()
            .filter(|reason| **reason == "PodRestarted")
            .count(),
        2,
        "{reasons:?}"
    );
    assert!(reasons.contains(&"SignalsUntrusted"), "{reasons:?}");
    assert_eq!(sent.len(), 2 + events.len(), "no other request: {sent:#?}");
}

#[tokio::test]
async fn a_reconcile_that_changes_nothing_writes_nothing() {
    let (client, sent) = api_server();
    let context = context(client, vec![pod("invoice-api-7d9f-bbbbb", false)]);
    let mut service: InvoiceService = serde_json::from_value(service_object(false)).unwrap();
    reconcile(Arc::new(service.clone()), Arc::clone(&context))
        .await
        .unwrap();
    settle().await;
    let first: Vec<Sent> = sent.lock().unwrap().drain(..).collect();
    assert_eq!(
        first[0].uri, SERVICE_STATUS,
        "the first reconcile reports status"
    );
    // The API server now holds that status; the next interval sees the same world.
    service.status = Some(serde_json::from_value(first[0].body["status"].clone()).unwrap());
    reconcile(Arc::new(service), context).await.unwrap();
    settle().await;
    let second = sent.lock().unwrap().clone();
    assert!(second.is_empty(), "steady state wrote: {second:#?}");
}

#[tokio::test]
async fn an_invalid_spec_is_reported_and_never_acted_on() {
    let (client, sent) = api_server();
    // A crash-looping pod that would be evicted if the spec were valid.
    let context = context(client, vec![pod("invoice-api-7d9f-aaaaa", true)]);
    let service: InvoiceService = serde_json::from_value(service_object(true)).unwrap();
    let action = reconcile(Arc::new(service), context).await.unwrap();
    assert_eq!(action, Action::await_change());
    settle().await;
    let sent = sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 2, "{sent:#?}");
    assert_eq!(sent[0].uri, SERVICE_STATUS);
    let ready = sent[0].body["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|condition| condition["type"] == "Ready")
        .unwrap()
        .clone();
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "InvalidSpec");
    assert!(
        ready["message"]
            .as_str()
            .unwrap()
            .contains("spec.remediation.scale.minReplicas"),
        "{ready}"
    );
    assert_eq!(sent[1].uri, EVENTS);
    assert_eq!(sent[1].body["reason"], "InvalidSpec");
    assert_eq!(sent[1].body["type"], "Warning");
}

#[tokio::test]
async fn a_follower_replica_neither_acts_nor_writes() {
    let (client, sent) = api_server();
    let leader = context(client, vec![pod("invoice-api-7d9f-aaaaa", true)]);
    let follower = Arc::new(Context::new(
        leader.client.clone(),
        Reporter {
            controller: "invoice-operator".into(),
            instance: Some("follower".into()),
        },
        Arc::clone(&leader.metrics),
        leader.prometheus.clone(),
        leader.settings.clone(),
        watch::channel(false).1,
        leader.caches.clone(),
    ));
    let service: InvoiceService = serde_json::from_value(service_object(false)).unwrap();
    reconcile(Arc::new(service), follower).await.unwrap();
    settle().await;
    assert!(sent.lock().unwrap().is_empty());
}

#[test]
fn the_storm_gate_closes_only_when_many_services_are_unhealthy_at_once() {
    let settings = Settings {
        evaluation_interval: Duration::from_secs(15),
        detection_window: Duration::from_secs(60),
        stale_after: Duration::from_secs(120),
        storm_share: 0.5,
        storm_min_services: 3,
        force_dry_run: false,
        namespace: None,
    };
    let gate = |unhealthy: usize, healthy: usize| {
        let mut gate = StormGate::default();
        for index in 0..unhealthy + healthy {
            gate.unhealthy.insert(
                ObjectRef::new(&format!("service-{index}")).within("invoicing"),
                index < unhealthy,
            );
        }
        gate.closed(&settings)
    };
    assert!(!gate(0, 0), "no services");
    assert!(
        !gate(2, 0),
        "two bad services are not a storm, however large the share"
    );
    assert!(!gate(3, 3), "half is not more than half");
    assert!(gate(3, 2), "three of five");
    assert!(gate(10, 1));
    assert!(!gate(4, 10), "a few bad services in a large fleet");
}

#[tokio::test]
async fn a_fleet_cycle_completes_when_every_service_at_the_tick_was_reconciled() {
    let (client, _sent) = api_server();
    let context = context(client, vec![pod("invoice-api-7d9f-bbbbb", false)]);
    let service: InvoiceService = serde_json::from_value(service_object(false)).unwrap();
    let (services, mut writer) = reflector::store();
    writer.apply_watcher_event(&watcher::Event::Apply(service.clone()));

    context.start_fleet_cycle(&services);
    context.fleet_cycle_dispatched(Duration::from_millis(5), &services);
    let text = context.metrics.encode();
    assert!(
        text.contains("invoiceops_fleet_cycle_duration_seconds_count 0"),
        "{text}"
    );
    reconcile(Arc::new(service.clone()), Arc::clone(&context))
        .await
        .unwrap();
    let text = context.metrics.encode();
    assert!(
        text.contains("invoiceops_fleet_cycle_duration_seconds_count 1"),
        "{text}"
    );
    assert!(
        text.contains("invoiceops_fleet_cycle_overruns_total 0"),
        "{text}"
    );

    // The next tick comes before this cycle's reconcile: an overrun.
    context.start_fleet_cycle(&services);
    context.fleet_cycle_dispatched(Duration::from_millis(5), &services);
    context.start_fleet_cycle(&services);
    let text = context.metrics.encode();
    assert!(
        text.contains("invoiceops_fleet_cycle_overruns_total 1"),
        "{text}"
    );
}
