//! Reconcile against a mocked API server (the recording `ApiServer` fixture): the exact
//! writes of a remediation, of an invalid spec, and no write at all for a reconcile that
//! changes nothing. A test that asserts what was (not) sent drops every client first and
//! reads the requests from `ApiServer::finish`, so nothing can still be on its way.

use std::sync::Arc;

use http::Method;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Client,
    runtime::{reflector, watcher},
};
use serde_json::{Value, json};

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use kube::{
    Resource,
    runtime::{
        controller::Action,
        reflector::{ObjectRef, Store},
    },
};
use tokio::sync::watch;

use super::{
    fleet::{evaluate_fleet, measure},
    memory::{FIRST_RETRY, LONGEST_RETRY, WrittenStatus},
    reconcile::hold_through_query_blip,
    wiring::cache_synced,
    *,
};
use crate::{
    act::refused_by,
    engine::Gate,
    report::{condition_reasons, reasons},
};
use crate::{
    api::{InvoiceService, InvoiceServiceStatus, condition_types},
    fixtures::{ApiServer, NO_PROMETHEUS, PrometheusStub, Reply, Sent},
    prometheus::{FleetMetrics, FleetQuery, MetricProfile},
    signals::{DeploymentState, PodState, UnknownReason},
};

const SERVICE_STATUS: &str = "/apis/invoiceops.dev/v1alpha1/namespaces/invoicing/invoiceservices/invoice-api/status?&force=true&fieldManager=invoice-operator";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/invoicing/events?";

/// A recording API server answering every request like the real one would (see [`answer`]).
fn api_server() -> (Client, ApiServer) {
    api_server_refusing_evictions(false)
}

/// [`api_server`], refusing every eviction with a PodDisruptionBudget's 429 when `refuse`.
fn api_server_refusing_evictions(refuse: bool) -> (Client, ApiServer) {
    ApiServer::recording(move |sent| answer(sent, refuse))
}

/// The API server's answer to `sent`: the object echoed (an InvoiceService with its name,
/// resourceVersion 100 and spec; an Event named), an empty list of autoscalers, the scale
/// subresource as written, an eviction granted or, when `refuse_evictions`, refused by a
/// PodDisruptionBudget.
fn answer(sent: &Sent, refuse_evictions: bool) -> Reply {
    let (uri, body) = (&sent.uri, &sent.body);
    let mut answer = body.clone();
    if uri.contains("/invoiceservices/") {
        if !answer.is_object() {
            // A JSON patch (the finalizers): answer with the object.
            answer = service_object(false);
        }
        answer["metadata"] =
            json!({"name": "invoice-api", "namespace": "invoicing", "resourceVersion": "100"});
        answer["spec"] = service_object(false)["spec"].clone();
    }
    if uri.contains("/events") {
        answer["metadata"] = json!({"name": "event-1", "namespace": "invoicing"});
    }
    // Scaling: no autoscaler, and the scale subresource as written.
    if uri.contains("/horizontalpodautoscalers") {
        answer = json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscalerList", "metadata": {}, "items": []});
    }
    if uri.contains("/scaledobjects") {
        answer = json!({"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObjectList", "metadata": {}, "items": []});
    }
    if uri.contains("/scale?") {
        answer = json!({"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": {"name": "invoice-api", "namespace": "invoicing"}, "spec": body["spec"].clone()});
    }
    let mut code = if answer.is_null() { 200 } else { 201 };
    if uri.ends_with("/eviction?") {
        answer = json!({"kind": "Status", "apiVersion": "v1", "status": "Success"});
        if refuse_evictions {
            code = 429;
            answer = json!({
                "kind": "Status", "apiVersion": "v1", "status": "Failure",
                "message": "Cannot evict pod as it would violate the pod's disruption budget.",
                "reason": "TooManyRequests", "code": 429,
                "details": {"causes": [{"reason": "DisruptionBudget",
                    "message": "The disruption budget invoice-api needs 1 healthy pods and has 1 currently"}]}
            });
        }
    }
    Reply::new(code, answer)
}

fn service_object(invalid: bool) -> Value {
    json!({
        "apiVersion": "invoiceops.dev/v1alpha1",
        "kind": "InvoiceService",
        "metadata": {
            "name": "invoice-api", "namespace": "invoicing", "uid": "1", "generation": 2,
            "finalizers": [FINALIZER]
        },
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

/// A pod as the API server sends it.
fn pod_json(name: &str, crash_loop: bool) -> Value {
    json!({
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
    })
}

/// That pod as the operator caches it (deserialised from the full JSON, as from a watch).
fn pod(name: &str, crash_loop: bool) -> CachedPod {
    serde_json::from_value(pod_json(name, crash_loop)).unwrap()
}

fn context(client: Client, pods: Vec<CachedPod>) -> Arc<Context> {
    measured_nothing(Context::test(
        client,
        NO_PROMETHEUS,
        Caches::with_pods(pods),
    ))
}

/// `context` after a fleet evaluation that measured nothing (as with no traffic yet).
fn measured_nothing(context: Context) -> Arc<Context> {
    context.fleet.write().unwrap().metrics = Some(Arc::new(FleetMetrics::unknown(
        &FleetQuery::new(Duration::from_secs(60), Duration::from_secs(120)),
        &MetricProfile::default(),
        UnknownReason::NoData,
    )));
    Arc::new(context)
}

/// The context of `invoice-api` with two pods, the first crash-looping.
fn one_pod_crash_looping(client: Client) -> Arc<Context> {
    context(
        client,
        vec![
            pod("invoice-api-7d9f-aaaaa", true),
            pod("invoice-api-7d9f-bbbbb", false),
        ],
    )
}

#[tokio::test]
async fn a_crash_looping_pod_is_evicted_then_status_and_events_are_written() {
    let (client, server) = api_server();
    let context = one_pod_crash_looping(client);
    let service: InvoiceService = serde_json::from_value(service_object(false)).unwrap();
    reconcile(Arc::new(service), context).await.unwrap();
    let sent = server.finish().await;
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
            .filter(|reason| **reason == reasons::POD_RESTARTED)
            .count(),
        2,
        "{reasons:?}"
    );
    assert!(reasons.contains(&reasons::SIGNALS_UNTRUSTED), "{reasons:?}");
    assert_eq!(sent.len(), 2 + events.len(), "no other request: {sent:#?}");
}

/// A PodDisruptionBudget refuses the eviction: one POST, then the refusal is recorded in
/// history with who refused, named by `RemediationAllowed` and a Warning Event — and the
/// reconcile succeeds (a refusal is an answer, not an error to retry at once).
#[tokio::test]
async fn an_eviction_refused_by_a_disruption_budget_is_recorded_once_and_named() {
    let (client, server) = api_server_refusing_evictions(true);
    let context = context(client, vec![pod("invoice-api-7d9f-aaaaa", true)]);
    let service: InvoiceService = serde_json::from_value(service_object(false)).unwrap();
    reconcile(Arc::new(service), context).await.unwrap();
    let sent = server.finish().await;
    let evictions = sent
        .iter()
        .filter(|request| request.uri.contains("/eviction"))
        .count();
    assert_eq!(evictions, 1);
    let status = &sent
        .iter()
        .find(|request| request.uri.contains("/status"))
        .expect("the status is written")
        .body["status"];
    assert_eq!(status["lastAction"]["outcome"], "Refused");
    assert_eq!(
        status["lastAction"]["evidence"]["refusedBy"],
        refused_by::POD_DISRUPTION_BUDGET
    );
    let allowed = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|condition| condition["type"] == condition_types::REMEDIATION_ALLOWED)
        .unwrap();
    assert_eq!(allowed["status"], "False");
    assert_eq!(allowed["reason"], refused_by::POD_DISRUPTION_BUDGET);
    assert!(
        allowed["message"]
            .as_str()
            .unwrap()
            .contains("The disruption budget invoice-api needs 1 healthy pods"),
        "{allowed}"
    );
    let refused_event = sent
        .iter()
        .filter(|request| request.uri.starts_with(EVENTS))
        .find(|request| request.body["reason"] == reasons::REMEDIATION_REFUSED)
        .expect("a RemediationRefused Event");
    assert_eq!(refused_event.body["type"], "Warning");
}

/// A service the operator has not taken yet gets the finalizer first, with a JSON patch
/// guarded by a `test` of the (absent) list it was computed from.
#[tokio::test]
async fn a_managed_service_gets_the_deletion_finalizer_before_anything_else() {
    let (client, server) = api_server();
    let context = context(client, Vec::new());
    let mut object = service_object(false);
    object["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("finalizers");
    let service: InvoiceService = serde_json::from_value(object).unwrap();
    reconcile(Arc::new(service), context).await.unwrap();
    let sent = server.finish().await;
    let first = &sent[0];
    assert_eq!(first.method, Method::PATCH);
    assert!(
        first.uri.starts_with(
            "/apis/invoiceops.dev/v1alpha1/namespaces/invoicing/invoiceservices/invoice-api?"
        ),
        "{}",
        first.uri
    );
    assert_eq!(
        first.body,
        json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]}
        ])
    );
}

/// Deleted while read-only: the mode key goes back to read-write (an apply of just that
/// key), an Event says so on the ConfigMap, and only then is the finalizer removed. Before,
/// a deleted service left every invoice write refused.
#[tokio::test]
async fn a_deleted_service_undoes_read_only_mode_before_letting_go() {
    let (client, server) = api_server();
    let context = context(client, Vec::new());
    let mut object = service_object(false);
    object["metadata"]["deletionTimestamp"] = json!("2026-12-02T00:00:00Z");
    object["spec"]["remediation"]["readOnly"] = json!({
        "enterWhen": {"dbPoolUtilizationAbove": "0.95", "for": "1m"},
        "exitWhen": {"dbPoolUtilizationBelow": "0.70", "for": "5m"},
        "switch": {"configMap": {"name": "invoice-api-mode", "key": "mode",
            "readOnly": "read-only", "readWrite": "read-write"}}
    });
    object["status"] = json!({"readOnly": {"since": "2026-12-01T23:50:00Z"}});
    let service: InvoiceService = serde_json::from_value(object).unwrap();
    reconcile(Arc::new(service), context).await.unwrap();
    let sent = server.finish().await;
    let mode = sent
        .iter()
        .position(|request| request.uri.contains("/configmaps/invoice-api-mode"))
        .expect("the mode switch is written");
    assert_eq!(sent[mode].body["data"], json!({"mode": "read-write"}));
    let released = sent
        .iter()
        .position(|request| {
            request.method == Method::PATCH && request.uri.contains("/invoiceservices/invoice-api?")
        })
        .expect("the finalizer is removed");
    assert!(mode < released, "the finalizer went before the undo");
    assert_eq!(
        sent[released].body,
        json!([
            {"op": "test", "path": "/metadata/finalizers/0", "value": FINALIZER},
            {"op": "remove", "path": "/metadata/finalizers/0"}
        ])
    );
    let event = sent
        .iter()
        .filter(|request| request.uri.starts_with(EVENTS))
        .find(|request| request.body["reason"] == reasons::READ_ONLY_EXITED)
        .expect("a ReadOnlyExited Event");
    assert!(
        event.body["note"]
            .as_str()
            .unwrap()
            .contains("being deleted"),
        "{}",
        event.body
    );
    assert!(
        !sent.iter().any(|request| request.uri.contains("/status")),
        "a deleted service's status is not written"
    );
}

#[tokio::test]
async fn a_reconcile_that_changes_nothing_writes_nothing() {
    let (client, server) = api_server();
    let context = context(client, vec![pod("invoice-api-7d9f-bbbbb", false)]);
    let mut service: InvoiceService = serde_json::from_value(service_object(false)).unwrap();
    reconcile(Arc::new(service.clone()), Arc::clone(&context))
        .await
        .unwrap();
    let first = server.take();
    assert_eq!(
        first[0].uri, SERVICE_STATUS,
        "the first reconcile reports status"
    );
    // The API server now holds that status; the next interval sees the same world.
    service.status = Some(serde_json::from_value(first[0].body["status"].clone()).unwrap());
    reconcile(Arc::new(service), context).await.unwrap();
    let second = server.finish().await;
    assert!(second.is_empty(), "steady state wrote: {second:#?}");
}

#[tokio::test]
async fn an_invalid_spec_is_reported_and_never_acted_on() {
    let (client, server) = api_server();
    // A crash-looping pod that would be evicted if the spec were valid.
    let context = context(client, vec![pod("invoice-api-7d9f-aaaaa", true)]);
    let service: InvoiceService = serde_json::from_value(service_object(true)).unwrap();
    let action = reconcile(Arc::new(service), context).await.unwrap();
    assert_eq!(action, Action::await_change());
    let sent = server.finish().await;
    assert_eq!(sent.len(), 2, "{sent:#?}");
    assert_eq!(sent[0].uri, SERVICE_STATUS);
    let ready = sent[0].body["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|condition| condition["type"] == condition_types::READY)
        .unwrap()
        .clone();
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], reasons::INVALID_SPEC);
    assert!(
        ready["message"]
            .as_str()
            .unwrap()
            .contains("spec.remediation.scale.minReplicas"),
        "{ready}"
    );
    assert_eq!(sent[1].uri, EVENTS);
    assert_eq!(sent[1].body["reason"], reasons::INVALID_SPEC);
    assert_eq!(sent[1].body["type"], "Warning");
}

#[tokio::test]
async fn a_follower_replica_neither_acts_nor_writes() {
    let (client, server) = api_server();
    let leader = context(client, vec![pod("invoice-api-7d9f-aaaaa", true)]);
    let mut follower = Context::test(leader.client.clone(), NO_PROMETHEUS, leader.caches.clone());
    follower.leader = watch::channel(false).1;
    drop(leader);
    let service: InvoiceService = serde_json::from_value(service_object(false)).unwrap();
    reconcile(Arc::new(service), Arc::new(follower))
        .await
        .unwrap();
    assert!(server.finish().await.is_empty());
}

/// A service object named `name` in `namespace` (the workload is still `invoice-api`).
fn service_in(namespace: &str, name: &str) -> InvoiceService {
    let mut object = service_object(false);
    object["metadata"]["name"] = json!(name);
    object["metadata"]["namespace"] = json!(namespace);
    object["metadata"]["uid"] = json!(format!("{namespace}-{name}"));
    serde_json::from_value(object).unwrap()
}

/// That crash-looping pod in `namespace`.
fn crash_looping_pod_in(namespace: &str) -> CachedPod {
    let mut object = pod_json("invoice-api-7d9f-aaaaa", true);
    object["metadata"]["namespace"] = json!(namespace);
    serde_json::from_value(object).unwrap()
}

/// Six services share one cause (every one has a crash-looping pod). The census at the tick
/// counts them all before any reconcile runs, so not even the first one reconciled acts: it
/// is blocked by StormGate and says so. Counting as reconciles ran let the first half act.
#[tokio::test]
async fn the_tick_census_freezes_a_shared_outage_before_the_first_service_acts() {
    let (client, server) = api_server();
    let namespaces: Vec<String> = (0..6).map(|index| format!("team-{index}")).collect();
    let context = context(
        client,
        namespaces
            .iter()
            .map(|namespace| crash_looping_pod_in(namespace))
            .collect(),
    );
    let (services, mut writer) = reflector::store();
    for namespace in &namespaces {
        writer.apply_watcher_event(&watcher::Event::Apply(service_in(namespace, "invoice-api")));
    }

    context.storm_census(&services);
    assert_eq!(
        context.storm.lock().unwrap().verdict(),
        crate::storm::StormVerdict {
            closed: true,
            in_trouble: 6,
            services: 6
        }
    );
    assert_eq!(context.metrics.storm_gate_closed.get(), 1);

    let first = services.state()[0].clone();
    reconcile(first, Arc::clone(&context)).await.unwrap();
    drop(context);
    let sent = server.finish().await;
    assert!(
        !sent.iter().any(|request| request.uri.contains("/eviction")),
        "a service acted during a shared outage: {sent:?}"
    );
    let status = sent
        .iter()
        .find(|request| request.uri.contains("/status"))
        .expect("the status is written");
    let allowed = status.body["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|condition| condition["type"] == condition_types::REMEDIATION_ALLOWED)
        .unwrap();
    assert_eq!(allowed["status"], "False");
    assert_eq!(allowed["reason"], Gate::StormGate.as_str());
}

#[tokio::test]
async fn a_fleet_cycle_completes_when_every_service_at_the_tick_was_reconciled() {
    let (client, _server) = api_server();
    let context = context(client, vec![pod("invoice-api-7d9f-bbbbb", false)]);
    let service: InvoiceService = serde_json::from_value(service_object(false)).unwrap();
    let (services, mut writer) = reflector::store();
    writer.apply_watcher_event(&watcher::Event::Apply(service.clone()));

    context.start_fleet_cycle(&services, Duration::ZERO);
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
    context.start_fleet_cycle(&services, Duration::ZERO);
    context.fleet_cycle_dispatched(Duration::from_millis(5), &services);
    context.start_fleet_cycle(&services, Duration::ZERO);
    let text = context.metrics.encode();
    assert!(
        text.contains("invoiceops_fleet_cycle_overruns_total 1"),
        "{text}"
    );

    // A tick that comes late (the previous round's queries outlasted the interval) is an
    // overrun too, even with every reconcile done; a little jitter is not.
    context.fleet_cycle_dispatched(Duration::from_millis(5), &services);
    reconcile(Arc::new(service.clone()), Arc::clone(&context))
        .await
        .unwrap();
    context.start_fleet_cycle(&services, Duration::from_millis(10));
    context.fleet_cycle_dispatched(Duration::from_millis(5), &services);
    reconcile(Arc::new(service.clone()), Arc::clone(&context))
        .await
        .unwrap();
    let interval = context.settings.evaluation_interval;
    context.start_fleet_cycle(&services, interval);
    let text = context.metrics.encode();
    assert!(
        text.contains("invoiceops_fleet_cycle_overruns_total 2"),
        "{text}"
    );
}

/// Caches holding these objects as the watches deliver them: pods and Deployments (Argo
/// Rollouts and HorizontalPodAutoscalers among them, by their `kind`) read from their full
/// JSON into the cached types, every object stripped by `slim`.
fn caches_of(
    pods: &[Value],
    deployments: &[Value],
    nodes: &[Node],
    config_maps: &[ConfigMap],
) -> Caches {
    fn store<K>(objects: impl IntoIterator<Item = K>, slim: fn(&mut K)) -> Store<K>
    where
        K: Resource + Clone + std::fmt::Debug + Send + Sync + 'static,
        K::DynamicType: Default + Eq + std::hash::Hash + Clone,
    {
        let (store, mut writer) = reflector::store();
        for mut object in objects {
            slim(&mut object);
            writer.apply_watcher_event(&watcher::Event::Apply(object));
        }
        store
    }
    fn read<K: serde::de::DeserializeOwned>(json: &Value) -> K {
        serde_json::from_value(json.clone()).unwrap()
    }
    Caches {
        pods: store(pods.iter().map(read), slim::pod),
        deployments: store(
            deployments
                .iter()
                .filter(|object| object["kind"] != "Rollout")
                .filter(|object| object["kind"] != "HorizontalPodAutoscaler")
                .map(read),
            slim::deployment,
        ),
        rollouts: store(
            deployments
                .iter()
                .filter(|object| object["kind"] == "Rollout")
                .map(read),
            slim::rollout,
        ),
        rollouts_not_served: Default::default(),
        autoscalers: store(
            deployments
                .iter()
                .filter(|object| object["kind"] == "HorizontalPodAutoscaler")
                .map(read),
            slim::autoscaler,
        ),
        nodes: store(nodes.iter().cloned(), slim::node),
        config_maps: store(config_maps.iter().cloned(), slim::config_map),
    }
}

#[tokio::test]
async fn cached_objects_keep_what_observe_reads_and_drop_the_rest() {
    let managed_fields = json!([{"manager": "kubectl", "operation": "Apply", "apiVersion": "v1",
        "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {}}}]);
    let annotations = json!({"kubectl.kubernetes.io/last-applied-configuration": "{}"});
    let full_pod = |name: &str, crash_loop: bool, node: &str| {
        let mut pod = pod_json(name, crash_loop);
        pod["metadata"]["managedFields"] = managed_fields.clone();
        pod["metadata"]["annotations"] = annotations.clone();
        pod["metadata"]["uid"] = json!(format!("uid-{name}"));
        pod["metadata"]["resourceVersion"] = json!("42");
        pod["spec"]["nodeName"] = json!(node);
        pod["spec"]["containers"][0]["env"] = json!([{"name": "A", "value": "b"}]);
        pod["spec"]["volumes"] = json!([{"name": "v", "emptyDir": {}}]);
        pod["status"]["podIP"] = json!("10.0.0.1");
        pod["status"]["conditions"][0]["lastTransitionTime"] = json!("2025-01-01T00:00:00Z");
        // Every full pod is a valid k8s-openapi Pod: the cached type reads the real shape.
        serde_json::from_value::<Pod>(pod.clone()).unwrap();
        pod
    };
    let mut terminating = full_pod("invoice-api-7d9f-ccccc", false, "node-b");
    terminating["metadata"]["deletionTimestamp"] = json!("2025-01-01T00:00:00Z");
    let pods = [
        full_pod("invoice-api-7d9f-aaaaa", true, "node-a"),
        full_pod("invoice-api-7d9f-bbbbb", false, "node-b"),
        terminating,
    ];
    let deployment = json!({
        "metadata": {"name": "invoice-api", "namespace": "invoicing",
            "managedFields": managed_fields, "annotations": annotations},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "invoice-api"}},
            "template": {
                "metadata": {"labels": {"app": "invoice-api"}},
                "spec": {"containers": [{"name": "app", "image": "invoice-api"}]}
            }
        },
        "status": {"replicas": 3, "readyReplicas": 2}
    });
    serde_json::from_value::<k8s_openapi::api::apps::v1::Deployment>(deployment.clone()).unwrap();
    let node = |name: &str, zone: &str, ready: bool| -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"topology.kubernetes.io/zone": zone},
                "managedFields": managed_fields, "annotations": annotations},
            "status": {
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
                "images": [{"names": ["registry/invoice-api:1"], "sizeBytes": 1000}]
            }
        }))
        .unwrap()
    };
    let nodes = [
        node("node-a", "zone-a", true),
        node("node-b", "zone-b", false),
    ];
    let config_map: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "invoice-api-mode", "namespace": "invoicing",
            "managedFields": managed_fields, "annotations": annotations},
        "data": {"mode": "read-write"},
        "binaryData": {"blob": "AAAA"}
    }))
    .unwrap();
    let mut service = service_object(false);
    service["spec"]["remediation"]["readOnly"] = json!({"switch": {"configMap": {
        "name": "invoice-api-mode", "key": "mode",
        "readOnly": "read-only", "readWrite": "read-write"}}});
    let service: InvoiceService = serde_json::from_value(service).unwrap();

    let (client, _server) = api_server();
    let caches = caches_of(
        &pods,
        std::slice::from_ref(&deployment),
        &nodes,
        std::slice::from_ref(&config_map),
    );
    let context = Context::test(client, NO_PROMETHEUS, caches);
    let metrics = crate::signals::ServiceMetrics::unknown(UnknownReason::NoData);
    let now: Timestamp = "2025-01-01T00:10:00Z".parse().unwrap();
    let mut observation = observe::observe(&context.caches, &service, metrics, now);
    // Stores list in no particular order.
    observation.pods.sort_by(|a, b| a.name.cmp(&b.name));
    let pod_state = |name: &str, zone: &str, crash_loop: bool, terminating: bool| PodState {
        name: name.to_owned(),
        deployment: "invoice-api".to_owned(),
        zone: Some(zone.to_owned()),
        ready: !crash_loop,
        unready_since: crash_loop.then(|| "2025-01-01T00:00:00Z".parse().unwrap()),
        restart_count: if crash_loop { 5 } else { 0 },
        crash_loop,
        terminating,
    };
    assert_eq!(
        observation.pods,
        [
            pod_state("invoice-api-7d9f-aaaaa", "zone-a", true, false),
            pod_state("invoice-api-7d9f-bbbbb", "zone-b", false, false),
            pod_state("invoice-api-7d9f-ccccc", "zone-b", false, true),
        ]
    );
    assert_eq!(
        observation.deployments,
        [DeploymentState {
            name: "invoice-api".to_owned(),
            zone: None,
            replicas: 3,
            ready_replicas: 2,
            exists: true,
            replicas_manager: None,
            replicas_set_at: None,
            update: None,
            excluded_zones: Default::default(),
            affinity_set_by: None,
            autoscaler: None,
        }]
    );
    assert_eq!(observation.mode_value.as_deref(), Some("read-write"));
    assert_eq!(observation.not_ready_nodes.get("zone-b"), Some(&1));

    // And the rest is gone.
    let caches = context.caches;
    let pod = caches
        .pods
        .get(&ObjectRef::new("invoice-api-7d9f-aaaaa").within("invoicing"))
        .unwrap();
    assert_eq!(pod.metadata.managed_fields, None);
    assert_eq!(pod.metadata.annotations, None);
    assert_eq!(
        pod.metadata.uid.as_deref(),
        Some("uid-invoice-api-7d9f-aaaaa")
    );
    assert_eq!(pod.metadata.resource_version.as_deref(), Some("42"));
    assert_eq!(pod.spec.node_name.as_deref(), Some("node-a"));
    let deployment = caches
        .deployments
        .get(&ObjectRef::new("invoice-api").within("invoicing"))
        .unwrap();
    assert_eq!(deployment.metadata.managed_fields, None);
    assert_eq!(deployment.metadata.annotations, None);
    let node = caches.nodes.get(&ObjectRef::new("node-a")).unwrap();
    assert_eq!(node.metadata.managed_fields, None);
    assert_eq!(node.status.as_ref().unwrap().images, None);
    let config_map = caches
        .config_maps
        .get(&ObjectRef::new("invoice-api-mode").within("invoicing"))
        .unwrap();
    assert_eq!(config_map.metadata.managed_fields, None);
    assert_eq!(config_map.binary_data, None);
}

#[test]
fn a_cached_pod_and_deployment_are_a_fraction_of_the_full_objects() {
    let cached = std::mem::size_of::<CachedPod>();
    let full = std::mem::size_of::<Pod>();
    assert!(cached * 4 < full, "CachedPod {cached} B, Pod {full} B");
    let cached = std::mem::size_of::<CachedDeployment>();
    let full = std::mem::size_of::<k8s_openapi::api::apps::v1::Deployment>();
    assert!(
        cached * 4 < full,
        "CachedDeployment {cached} B, Deployment {full} B"
    );
}

#[tokio::test]
async fn the_per_service_query_mode_queries_each_service_on_its_own() {
    let prometheus = PrometheusStub::empty();
    let service: InvoiceService = serde_json::from_value(service_object(false)).unwrap();
    let (services, mut writer) = reflector::store();
    writer.apply_watcher_event(&watcher::Event::Apply(service.clone()));
    let measure_in = |mode: QueryMode| {
        let (client, _server) = api_server();
        let mut context = Context::test(client, prometheus.url(), Caches::with_pods([]));
        context.settings.query_mode = mode;
        Arc::into_inner(measured_nothing(context)).unwrap()
    };

    // Batched: the fleet tick queries the fleet, a reconcile reads the split answers.
    let batched = measure_in(QueryMode::Batched);
    evaluate_fleet(&batched, &services).await;
    let fleet_queries = prometheus.take_queries();
    assert!(fleet_queries.len() > 4, "{fleet_queries:#?}");
    assert!(
        fleet_queries
            .iter()
            .all(|query| !query.contains("invoice-api")),
        "{fleet_queries:#?}"
    );
    measure(&batched, &service).await;
    assert!(prometheus.take_queries().is_empty(), "no query per service");

    // Per-service: no fleet query; each reconcile sends the same queries restricted to it.
    let per_service = measure_in(QueryMode::PerService);
    assert_eq!(
        evaluate_fleet(&per_service, &services).await,
        Duration::ZERO
    );
    assert!(prometheus.take_queries().is_empty(), "no fleet query");
    measure(&per_service, &service).await;
    let own_queries = prometheus.take_queries();
    assert_eq!(own_queries.len(), fleet_queries.len(), "{own_queries:#?}");
    for query in &own_queries {
        assert!(
            query.contains(r#"{namespace="invoicing",service="invoice-api"}"#)
                || query.contains(r#"{namespace="invoicing"}"#),
            "{query}"
        );
    }
}

/// kube-runtime's store readiness wakes only its latest waiter; the controller waits on the
/// InvoiceService store too. The readiness probe must still see the store become ready when
/// another waiter polled after it.
#[tokio::test(start_paused = true)]
async fn readiness_is_seen_even_when_another_waiter_polled_last() {
    let (reader, mut writer) = kube::runtime::reflector::store::<Pod>();
    let probe = {
        let reader = reader.clone();
        tokio::spawn(async move { cache_synced("pods", || reader.wait_until_ready()).await })
    };
    // Let the probe poll first, then another waiter (the controller) after it.
    tokio::task::yield_now().await;
    let other = {
        let reader = reader.clone();
        tokio::spawn(async move { reader.wait_until_ready().await.is_ok() })
    };
    tokio::task::yield_now().await;
    writer.apply_watcher_event(&kube::runtime::watcher::Event::Init);
    writer.apply_watcher_event(&kube::runtime::watcher::Event::InitDone);
    let synced = tokio::time::timeout(Duration::from_secs(5), probe)
        .await
        .expect("the probe saw the store ready within a few polls")
        .expect("probe task");
    assert!(synced);
    assert!(other.await.expect("waiter task"));
}

/// The pod the operator just evicted goes away before the watch delivers the operator's own
/// status patch: the reconcile that deletion triggers sees the old status in the cache. It
/// must decide on the status it wrote (cooldown, verify window), not act a second time.
#[tokio::test]
async fn a_reconcile_on_a_cache_behind_our_own_status_write_does_not_act_twice() {
    let (client, server) = api_server();
    let context = one_pod_crash_looping(client);
    let mut stale: InvoiceService = serde_json::from_value(service_object(false)).unwrap();
    stale.metadata.resource_version = Some("42".into());
    reconcile(Arc::new(stale.clone()), Arc::clone(&context))
        .await
        .unwrap();
    let first = server.take();
    assert!(first[0].uri.ends_with("/eviction?"), "{first:#?}");
    let written = first[1].body["status"].clone();

    // Same cached object (resourceVersion 42 < the patch's 100), the pod still crash-looping.
    reconcile(Arc::new(stale.clone()), Arc::clone(&context))
        .await
        .unwrap();
    let second = server.take();
    assert!(
        second
            .iter()
            .all(|request| request.method != Method::POST || !request.uri.ends_with("/eviction?")),
        "evicted twice: {second:#?}"
    );
    assert!(
        second.iter().all(|request| request.uri != SERVICE_STATUS),
        "nothing new to write: {second:#?}"
    );

    // Once the cache has caught up, its status is used again.
    let mut fresh = stale;
    fresh.metadata.resource_version = Some("101".into());
    fresh.status = Some(serde_json::from_value(written).unwrap());
    assert_eq!(
        context.freshest_status(&fresh),
        fresh.status.clone().unwrap()
    );
    assert_eq!(context.memory.written(&ObjectRef::from_obj(&fresh)), None);
    drop(context);
    let after = server.finish().await;
    assert!(after.is_empty(), "sent after the reconciles: {after:#?}");
}

/// A replica that just started (or just became leader) has no fleet evaluation yet: it must
/// not report every service's signals untrusted, nor act, before the first one.
#[tokio::test]
async fn before_the_first_fleet_evaluation_nothing_is_written() {
    let (client, server) = api_server();
    let context = context(client, vec![pod("invoice-api-7d9f-aaaaa", true)]);
    context.fleet.write().unwrap().metrics = None;
    let service: InvoiceService = serde_json::from_value(service_object(false)).unwrap();
    let action = reconcile(Arc::new(service), context).await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(15)));
    let sent = server.finish().await;
    assert!(sent.is_empty(), "{sent:#?}");
}

/// A service whose status says its signals were trusted, fed a fleet evaluation in which
/// every query failed (Prometheus too slow to answer) for the `failed_in_a_row`-th time.
async fn reconcile_after_failed_queries(failed_in_a_row: u32) -> Vec<Sent> {
    let (client, server) = api_server();
    let context = context(client, vec![pod("invoice-api-7d9f-aaaaa", false)]);
    {
        let mut fleet = context.fleet.write().unwrap();
        let mut query = FleetQuery::new(Duration::from_secs(60), Duration::from_secs(120));
        query.windows.insert(Duration::from_secs(300));
        fleet.metrics = Some(Arc::new(FleetMetrics::unknown(
            &query,
            &MetricProfile::default(),
            UnknownReason::PrometheusUnreachable,
        )));
        fleet.failed_in_a_row = failed_in_a_row;
    }
    let mut object = service_object(false);
    object["status"] = json!({
        "observedGeneration": 2,
        "conditions": [{
            "type": condition_types::SIGNALS_TRUSTED, "status": "True",
            "reason": condition_reasons::ALL_SIGNALS_KNOWN,
            "message": "every signal has a fresh value",
            "lastTransitionTime": "2026-11-27T08:00:00Z", "observedGeneration": 2
        }]
    });
    let service: InvoiceService = serde_json::from_value(object).unwrap();
    let action = reconcile(Arc::new(service), context).await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(15)));
    server.finish().await
}

/// One slow round of fleet queries must not cost every service two status writes and an
/// Event; a second one in a row is reported as usual.
#[tokio::test]
async fn one_failed_round_of_fleet_queries_writes_nothing_and_a_second_is_reported() {
    let sent = reconcile_after_failed_queries(1).await;
    assert!(sent.is_empty(), "{sent:#?}");

    let sent = reconcile_after_failed_queries(2).await;
    let status = sent
        .iter()
        .find(|request| request.uri == SERVICE_STATUS)
        .unwrap_or_else(|| panic!("no status patch in {sent:#?}"));
    let trusted = status.body["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|condition| condition["type"] == condition_types::SIGNALS_TRUSTED)
        .unwrap();
    assert_eq!(trusted["status"], "False");
    assert_eq!(
        trusted["reason"],
        UnknownReason::PrometheusUnreachable.as_str()
    );
    assert!(
        sent.iter().any(|request| request.uri == EVENTS),
        "the untrusted signals are announced: {sent:#?}"
    );
}

#[test]
fn only_a_first_blip_of_failed_queries_over_trusted_signals_is_held() {
    let trusted = |status: &str| InvoiceServiceStatus {
        conditions: vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
            type_: condition_types::SIGNALS_TRUSTED.to_owned(),
            status: status.to_owned(),
            reason: condition_reasons::ALL_SIGNALS_KNOWN.to_owned(),
            message: String::new(),
            observed_generation: None,
            last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                jiff::Timestamp::UNIX_EPOCH,
            ),
        }],
        ..InvoiceServiceStatus::default()
    };
    let unreachable = BTreeMap::from([("errorRatio", UnknownReason::PrometheusUnreachable)]);
    let refused = BTreeMap::from([("latency", UnknownReason::QueryFailed)]);
    let no_data = BTreeMap::from([
        ("errorRatio", UnknownReason::PrometheusUnreachable),
        ("latency", UnknownReason::NoData),
    ]);
    assert!(hold_through_query_blip(&unreachable, &trusted("True"), 1));
    assert!(hold_through_query_blip(&refused, &trusted("True"), 1));
    assert!(
        !hold_through_query_blip(&unreachable, &trusted("True"), 2),
        "a second failed round is reported"
    );
    assert!(
        !hold_through_query_blip(&unreachable, &trusted("False"), 1),
        "already untrusted: nothing to hold"
    );
    assert!(
        !hold_through_query_blip(&unreachable, &InvoiceServiceStatus::default(), 1),
        "a new service has no trusted status to keep"
    );
    assert!(
        !hold_through_query_blip(&no_data, &trusted("True"), 1),
        "missing series are not a query blip"
    );
    assert!(
        !hold_through_query_blip(&BTreeMap::new(), &trusted("True"), 1),
        "every signal known: reconcile as usual"
    );
}

/// A deleted service that was unhealthy must not keep counting towards the storm gate, nor
/// keep its detection time or last written status in memory.
#[tokio::test]
async fn a_fleet_tick_forgets_services_that_were_deleted() {
    let (client, _server) = api_server();
    let context = context(client, Vec::new());
    let kept: InvoiceService = serde_json::from_value(service_object(false)).unwrap();
    let kept_key = ObjectRef::from_obj(&kept);
    let gone_key = ObjectRef::<InvoiceService>::new("deleted").within("invoicing");
    let (services, mut writer) = reflector::store();
    writer.apply_watcher_event(&watcher::Event::Apply(kept));
    for key in [&kept_key, &gone_key] {
        context
            .storm
            .lock()
            .unwrap()
            .observe(key.clone(), true, &context.settings.storm);
        context.memory.unhealthy(key, true);
        context.memory.wrote(
            key,
            WrittenStatus {
                resource_version: 7,
                status: InvoiceServiceStatus::default(),
            },
        );
        context
            .metrics
            .burn_rates
            .get_or_create(&crate::metrics::BurnRateLabels {
                namespace: "invoicing".into(),
                service: key.name.clone(),
                window: "5m".into(),
            })
            .set(2.0);
    }

    context.start_fleet_cycle(&services, Duration::ZERO);

    let storm = context.storm.lock().unwrap();
    assert_eq!(storm.verdict().services, 1, "only {kept_key} is counted");
    assert_eq!(context.memory.services(), std::slice::from_ref(&kept_key));
    assert!(context.memory.detected(&kept_key).is_some());
    assert_eq!(context.memory.written(&kept_key), Some(7));
    let exported = context.metrics.encode();
    assert!(exported.contains("service=\"invoice-api\""), "{exported}");
    assert!(!exported.contains("service=\"deleted\""), "{exported}");
}

mod recorded_signals;
mod resume;
mod state_metrics;

/// A reconcile that fails is retried after 5 s, then 10 s … up to 5 minutes; until then the
/// fleet tick and watch events skip the service instead of repeating the failure (a missing
/// permission had caused 105 failed reconciles in 120 s).
#[tokio::test]
async fn a_service_whose_reconciles_fail_waits_out_a_growing_backoff() {
    let (client, server) = api_server();
    let context = context(client, vec![pod("invoice-api-7d9f-aaaaa", true)]);
    let service: Arc<InvoiceService> =
        Arc::new(serde_json::from_value(service_object(false)).unwrap());
    let key = ObjectRef::from_obj(service.as_ref());
    assert_eq!(context.memory.failed(&key), FIRST_RETRY);
    assert_eq!(context.memory.failed(&key), FIRST_RETRY * 2);
    reconcile(Arc::clone(&service), Arc::clone(&context))
        .await
        .unwrap();
    // Whatever the awaited reconcile sent is recorded by now.
    assert_eq!(server.count(), 0, "a service backing off was reconciled");
    for _ in 0..10 {
        context.memory.failed(&key);
    }
    assert_eq!(context.memory.failed(&key), LONGEST_RETRY);
    // A success ends the backoff.
    context.memory.succeeded(&key);
    reconcile(service, context).await.unwrap();
    assert!(!server.finish().await.is_empty());
}

/// An Argo Rollout `invoice-api` as the API server sends it, with `status`.
fn rollout_json(spec_extra: Value, status: Value) -> Value {
    let mut spec = json!({"replicas": 3, "strategy": {"canary": {"steps": [{"setWeight": 50},
        {"pause": {}}]}}});
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), spec_extra.as_object()) {
        spec.extend(extra.clone());
    }
    json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
        "metadata": {"name": "invoice-api", "namespace": "invoicing",
            "managedFields": [{"manager": "kubectl-argo-rollouts", "operation": "Update",
                "apiVersion": "argoproj.io/v1alpha1", "time": "2025-01-01T00:05:00Z",
                "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:replicas": {}}}}]},
        "spec": spec,
        "status": status
    })
}

fn rollout_update(spec_extra: Value, status: Value) -> Option<String> {
    let mut rollout: CachedRollout =
        serde_json::from_value(rollout_json(spec_extra, status)).unwrap();
    slim::rollout(&mut rollout);
    rollout.update()
}

#[test]
fn a_rollout_updates_while_its_new_revision_is_not_stable_or_it_is_paused_and_not_when_aborted() {
    let settled = json!({"currentPodHash": "6f8b", "stableRS": "6f8b", "phase": "Healthy",
        "readyReplicas": 3});
    assert_eq!(rollout_update(json!({}), settled.clone()), None);
    // A new revision at its first canary step.
    let updating = json!({"currentPodHash": "84c1", "stableRS": "6f8b", "phase": "Progressing",
        "currentStepIndex": 0});
    assert_eq!(
        rollout_update(json!({}), updating).as_deref(),
        Some("is updating to revision 84c1 at step 0, phase Progressing")
    );
    // Paused by its pause step.
    let paused = json!({"currentPodHash": "84c1", "stableRS": "6f8b", "phase": "Paused",
        "pauseConditions": [{"reason": "CanaryPauseStep", "startTime": "2025-01-01T00:00:00Z"}]});
    assert_eq!(
        rollout_update(json!({}), paused).as_deref(),
        Some("is paused (CanaryPauseStep), phase Paused")
    );
    // Paused by a person, even when settled.
    assert_eq!(
        rollout_update(json!({"paused": true}), settled).as_deref(),
        Some("is paused (spec.paused)")
    );
    // Aborted: the stable revision serves again; nothing moves until the spec changes.
    let aborted = json!({"currentPodHash": "84c1", "stableRS": "6f8b", "phase": "Degraded",
        "abort": true});
    assert_eq!(rollout_update(json!({}), aborted), None);
    // No status yet (the controller has not seen it): nothing to hold on.
    assert_eq!(rollout_update(json!({}), json!({})), None);
}

#[test]
fn observe_reads_a_rollout_and_its_pods_for_a_service_of_kind_rollout() {
    let mut service = service_object(false);
    service["spec"]["workload"]["kind"] = json!("Rollout");
    let service: InvoiceService = serde_json::from_value(service).unwrap();
    // Argo Rollouts labels its ReplicaSets' pods with rollouts-pod-template-hash.
    let mut rollout_pod = pod_json("invoice-api-84c1-aaaaa", false);
    rollout_pod["metadata"]["labels"] =
        json!({"app": "invoice-api", "rollouts-pod-template-hash": "84c1"});
    rollout_pod["metadata"]["ownerReferences"][0]["name"] = json!("invoice-api-84c1");
    let status = json!({"currentPodHash": "84c1", "stableRS": "6f8b", "phase": "Progressing",
        "readyReplicas": 2});
    // A Deployment of the same name is not the service's workload.
    let mut deployment = rollout_json(json!({}), json!({"readyReplicas": 9}));
    deployment["kind"] = json!("Deployment");
    deployment["apiVersion"] = json!("apps/v1");
    let caches = caches_of(
        &[rollout_pod],
        &[rollout_json(json!({}), status), deployment],
        &[],
        &[],
    );
    let metrics = crate::signals::ServiceMetrics::unknown(UnknownReason::NoData);
    let now: Timestamp = "2025-01-01T00:10:00Z".parse().unwrap();
    let observation = observe::observe(&caches, &service, metrics, now);
    assert_eq!(observation.pods.len(), 1);
    assert_eq!(observation.pods[0].deployment, "invoice-api");
    assert_eq!(
        observation.deployments,
        [DeploymentState {
            name: "invoice-api".to_owned(),
            zone: None,
            replicas: 3,
            ready_replicas: 2,
            exists: true,
            replicas_manager: Some("kubectl-argo-rollouts".to_owned()),
            replicas_set_at: Some("2025-01-01T00:05:00Z".parse().unwrap()),
            update: Some("is updating to revision 84c1, phase Progressing".to_owned()),
            excluded_zones: Default::default(),
            affinity_set_by: None,
            autoscaler: None,
        }]
    );
}

#[test]
fn a_deployment_s_zone_exclusions_and_who_wrote_its_affinity_are_cached() {
    let not_in = |zone: &str| {
        json!({"key": "topology.kubernetes.io/zone", "operator": "NotIn",
        "values": [zone]})
    };
    let deployment = |terms: Value| -> CachedDeployment {
        let mut deployment: CachedDeployment = serde_json::from_value(json!({
            "metadata": {"name": "invoice-api", "namespace": "invoicing",
                "managedFields": [{"manager": "invoice-operator", "operation": "Update",
                    "apiVersion": "apps/v1", "time": "2025-01-01T00:05:00Z",
                    "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:template": {"f:spec":
                        {"f:affinity": {".": {}}}}}}}]},
            "spec": {"replicas": 3, "template": {"spec": {"affinity": {"nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}},
                "containers": [{"name": "app", "image": "invoice-api"}]}}}
        }))
        .unwrap();
        slim::deployment(&mut deployment);
        deployment
    };
    // Every term excludes az2 (the operator's requirement appended to each); only one term
    // excludes az3, which therefore admits it.
    let cached = deployment(json!([
        {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}, not_in("az2"),
            not_in("az3")]},
        {"matchExpressions": [not_in("az2")]}
    ]));
    assert_eq!(
        cached.excluded.get("topology.kubernetes.io/zone"),
        Some(&std::collections::BTreeSet::from(["az2".to_owned()]))
    );
    let setter = cached.affinity_set_by.clone().unwrap();
    assert_eq!(setter.manager.as_deref(), Some("invoice-operator"));
    assert_eq!(setter.at, Some("2025-01-01T00:05:00Z".parse().unwrap()));
    // The template itself is not kept.
    assert_eq!(
        cached.spec,
        serde_json::from_value(json!({"replicas": 3})).unwrap()
    );
    assert!(deployment(json!([])).excluded.is_empty());
}

#[test]
fn a_scaled_out_workload_gets_the_floor_of_its_autoscaler_and_who_set_it_but_not_keda_s() {
    let service: InvoiceService = serde_json::from_value(service_object(false)).unwrap();
    let autoscaler = |name: &str, kind: &str, keda: bool| {
        let mut object = json!({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": name, "namespace": "invoicing",
                "annotations": {"invoiceops.dev/floor-before-scale-out": "2"},
                "managedFields": [{"manager": "argocd-controller", "operation": "Apply",
                    "apiVersion": "autoscaling/v2", "time": "2025-01-01T00:05:00Z",
                    "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:minReplicas": {}}}}]},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": kind,
                "name": "invoice-api"}, "minReplicas": 3, "maxReplicas": 10}
        });
        if keda {
            object["metadata"]["ownerReferences"] = json!([{"apiVersion": "keda.sh/v1alpha1",
                "kind": "ScaledObject", "name": "so", "uid": "u", "controller": true}]);
        }
        object
    };
    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "invoice-api", "namespace": "invoicing"},
        "spec": {"replicas": 3}, "status": {"readyReplicas": 3}});
    let observe_with = |objects: &[Value]| {
        let caches = caches_of(&[], objects, &[], &[]);
        let metrics = crate::signals::ServiceMetrics::unknown(UnknownReason::NoData);
        let now: Timestamp = "2025-01-01T00:10:00Z".parse().unwrap();
        let mut deployments = observe::observe(&caches, &service, metrics, now).deployments;
        let scaled_out: crate::api::ScaledOutState = serde_json::from_value(json!({
            "baseline": {"invoice-api": 3}, "since": "2025-01-01T00:04:00Z",
            "written": {"invoice-api": 5}}))
        .unwrap();
        observe::autoscaler_floors(&caches, &service, Some(&scaled_out), &mut deployments);
        deployments[0].autoscaler.clone()
    };
    let floor = observe_with(&[
        deployment.clone(),
        autoscaler("keda-hpa-so", "Deployment", true),
        autoscaler("statefulset-hpa", "StatefulSet", false),
        autoscaler("invoice-api", "Deployment", false),
    ])
    .expect("the Deployment's autoscaler");
    assert_eq!(floor.name, "invoice-api");
    assert_eq!(floor.min_replicas, 3);
    assert_eq!(floor.before, Some(2));
    let setter = floor.set_by.unwrap();
    assert_eq!(setter.manager.as_deref(), Some("argocd-controller"));
    assert_eq!(setter.at, Some("2025-01-01T00:05:00Z".parse().unwrap()));
    // KEDA's autoscaler alone is not the floor the operator writes.
    assert_eq!(
        observe_with(&[deployment, autoscaler("keda-hpa-so", "Deployment", true)]),
        None
    );
}
