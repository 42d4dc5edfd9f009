//! The facts the pre-flight step reads from the caches: only synced caches are judged, zones
//! come from the nodes' zone label, claims from the other services of the namespace.

use k8s_openapi::api::core::v1::{ConfigMap, Node};
use kube::runtime::{reflector, watcher};
use serde_json::{Value, json};

use super::*;
use crate::controller::CachedDeployment;

/// A store as a reflector leaves it after its first full list.
fn synced_store<K>(objects: impl IntoIterator<Item = K>) -> Store<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (store, mut writer) = reflector::store();
    writer.apply_watcher_event(&watcher::Event::Init);
    for object in objects {
        writer.apply_watcher_event(&watcher::Event::InitApply(object));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    store
}

fn deployment(namespace: &str, name: &str) -> CachedDeployment {
    serde_json::from_value(json!({"metadata": {"name": name, "namespace": namespace}})).unwrap()
}

fn node(name: &str, zone: &str) -> Node {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"topology.kubernetes.io/zone": zone}}
    }))
    .unwrap()
}

fn invoice_service(namespace: &str, name: &str, created: &str, workload: Value) -> InvoiceService {
    serde_json::from_value(json!({
        "apiVersion": "invoiceops.dev/v1alpha1",
        "kind": "InvoiceService",
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": created},
        "spec": {"workload": workload, "slos": {"availability": {"objective": "99.9"}}}
    }))
    .unwrap()
}

/// Synced caches of a cluster with nodes in az1 and az2 and the Deployment
/// `invoicing/invoice-api`.
fn caches() -> Caches {
    Caches {
        pods: synced_store(Vec::new()),
        deployments: synced_store([
            deployment("invoicing", "invoice-api"),
            deployment("other-team", "billing-api"),
        ]),
        rollouts: reflector::store().0,
        rollouts_not_served: Default::default(),
        autoscalers: reflector::store().0,
        nodes: synced_store([node("node-a", "az1"), node("node-b", "az2")]),
        config_maps: synced_store(Vec::<ConfigMap>::new()),
    }
}

#[test]
fn caches_still_listing_refute_nothing() {
    let listing = Caches {
        pods: reflector::store().0,
        deployments: reflector::store().0,
        rollouts: reflector::store().0,
        rollouts_not_served: Default::default(),
        autoscalers: reflector::store().0,
        nodes: reflector::store().0,
        config_maps: reflector::store().0,
    };
    let service = invoice_service(
        "invoicing",
        "invoice-api",
        "2025-06-01T10:00:00Z",
        json!({"deployment": "missing", "zones": ["az8", "az9"]}),
    );
    assert_eq!(judge(&listing, None, &service), None);
}

#[test]
fn synced_caches_refute_a_deployment_of_another_namespace_and_a_zone_no_node_carries() {
    let service = invoice_service(
        "invoicing",
        "billing-api",
        "2025-06-01T10:00:00Z",
        json!({"deployment": "billing-api", "zones": ["az1", "az9"]}),
    );
    let refusal = judge(&caches(), None, &service).unwrap();
    assert_eq!(refusal.reason, "WorkloadNotFound");
    let fields: Vec<&str> = refusal.problems.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(
        fields,
        ["spec.workload.deployment", "spec.workload.zones[1]"]
    );
}

#[test]
fn a_synced_node_cache_without_nodes_judges_no_zone() {
    let caches = Caches {
        nodes: synced_store(Vec::new()),
        ..caches()
    };
    let service = invoice_service(
        "invoicing",
        "invoice-api",
        "2025-06-01T10:00:00Z",
        json!({"deployment": "invoice-api", "zones": ["az8", "az9"]}),
    );
    assert_eq!(judge(&caches, None, &service), None);
}

#[test]
fn the_younger_claim_in_the_store_is_refused_and_claims_of_other_namespaces_do_not_count() {
    let workload = json!({"deployment": "invoice-api"});
    let first = invoice_service(
        "invoicing",
        "first",
        "2025-06-01T10:00:00Z",
        workload.clone(),
    );
    let second = invoice_service(
        "invoicing",
        "second",
        "2025-06-01T10:05:00Z",
        workload.clone(),
    );
    let elsewhere = invoice_service("other-team", "older", "2025-01-01T00:00:00Z", workload);
    let services = synced_store([first.clone(), second.clone(), elsewhere]);

    assert_eq!(judge(&caches(), Some(&services), &first), None);
    let refusal = judge(&caches(), Some(&services), &second).unwrap();
    assert_eq!(refusal.reason, "Conflict");
    assert!(
        refusal.problems[0].message.contains("\"first\""),
        "{refusal:?}"
    );
}
