//! What the simulator watches in the cluster: InvoiceServices, their pods, the nodes (for
//! zones) and the mode ConfigMaps, kept in kube-rs reflector stores. `watch` does IO;
//! `snapshot` turns the stores into [`ServiceView`]s and is pure.

use std::{
    borrow::Borrow,
    collections::{BTreeMap, HashMap},
};

use futures::StreamExt as _;
use invoice_operator::{api::InvoiceService, controller::pod_deployment};
use invoice_operator_e2e::is_ready;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use kube::{
    Api, Client, Resource, ResourceExt,
    runtime::{WatchStreamExt as _, reflector, watcher},
};

use crate::{fleet::ServiceView, model::PodView};

/// The node label holding the zone.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// Reflector stores of everything the model needs.
#[derive(Clone)]
#[allow(missing_debug_implementations)] // reflector stores have no Debug
pub struct Stores {
    services: reflector::Store<InvoiceService>,
    pods: reflector::Store<Pod>,
    nodes: reflector::Store<Node>,
    config_maps: reflector::Store<ConfigMap>,
}

fn spawn_reflector<K>(api: Api<K>) -> reflector::Store<K>
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    let (reader, writer) = reflector::store();
    let stream = reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff()
        .applied_objects();
    tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            if let Err(error) = event {
                tracing::debug!(%error, "watch error");
            }
        }
    });
    reader
}

/// Starts watching `namespace` (all namespaces when `None`).
pub fn watch(client: &Client, namespace: Option<&str>) -> Stores {
    fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match namespace {
            Some(namespace) => Api::namespaced(client.clone(), namespace),
            None => Api::all(client.clone()),
        }
    }
    Stores {
        services: spawn_reflector(api(client, namespace)),
        pods: spawn_reflector(api(client, namespace)),
        nodes: spawn_reflector(Api::all(client.clone())),
        config_maps: spawn_reflector(api(client, namespace)),
    }
}

impl Stores {
    /// The services as they are now. The stores' objects are shared, not copied: at fleet
    /// scale (12,000 pods) a deep copy every tick would be most of the simulator's work.
    pub fn snapshot(&self) -> Vec<ServiceView> {
        snapshot(
            &self.services.state(),
            &self.pods.state(),
            &self.nodes.state(),
            &self.config_maps.state(),
        )
    }
}

/// Builds the views: each service's pods (by owning Deployment), their zones (node label,
/// else the zonal Deployment's zone), and its read-only mode from the mode ConfigMap. Pods
/// and ConfigMaps are indexed once, so this is linear in the number of objects.
pub fn snapshot<S, P, N, C>(
    services: &[S],
    pods: &[P],
    nodes: &[N],
    config_maps: &[C],
) -> Vec<ServiceView>
where
    S: Borrow<InvoiceService>,
    P: Borrow<Pod>,
    N: Borrow<Node>,
    C: Borrow<ConfigMap>,
{
    let node_zones: HashMap<String, String> = nodes
        .iter()
        .map(Borrow::borrow)
        .filter_map(|node: &Node| Some((node.name_any(), node.labels().get(ZONE_LABEL)?.clone())))
        .collect();
    // (namespace, deployment) -> its pods.
    let mut pods_of: HashMap<(String, String), Vec<&Pod>> = HashMap::new();
    for pod in pods.iter().map(Borrow::borrow) {
        if let Some(deployment) = pod_deployment(pod) {
            pods_of
                .entry((pod.namespace().unwrap_or_default(), deployment.to_owned()))
                .or_default()
                .push(pod);
        }
    }
    let config_map: HashMap<(String, String), &ConfigMap> = config_maps
        .iter()
        .map(Borrow::borrow)
        .map(|map: &ConfigMap| ((map.namespace().unwrap_or_default(), map.name_any()), map))
        .collect();
    let mut views: Vec<ServiceView> = services
        .iter()
        .map(Borrow::borrow)
        .map(|service: &InvoiceService| {
            let namespace = service.namespace().unwrap_or_default();
            let workload = &service.spec.workload;
            let mut deployments: BTreeMap<String, Option<String>> = BTreeMap::new();
            if let Some(name) = &workload.deployment {
                deployments.insert(name.clone(), None);
            }
            for zonal in workload.deployments.iter().flatten() {
                deployments.insert(zonal.name.clone(), Some(zonal.zone.clone()));
            }
            let mut view = ServiceView {
                namespace: namespace.clone(),
                name: service.name_any(),
                ..ServiceView::default()
            };
            for (deployment, deployment_zone) in &deployments {
                let key = (namespace.clone(), deployment.clone());
                for pod in pods_of.get(&key).into_iter().flatten() {
                    view.all_pods.push(pod.name_any());
                    if !is_ready(pod) {
                        continue;
                    }
                    let node_zone = pod
                        .spec
                        .as_ref()
                        .and_then(|spec| spec.node_name.as_ref())
                        .and_then(|node| node_zones.get(node).cloned());
                    let zone = node_zone
                        .or_else(|| deployment_zone.clone())
                        .unwrap_or_else(|| "unknown".to_owned());
                    view.pods.push(PodView {
                        name: pod.name_any(),
                        zone,
                    });
                }
            }
            view.all_pods.sort();
            view.pods.sort_by(|a, b| a.name.cmp(&b.name));
            if let Some(read_only) = &service.spec.remediation.read_only {
                let switch = &read_only.switch.config_map;
                view.read_only = config_map
                    .get(&(namespace.clone(), switch.name.clone()))
                    .and_then(|map| map.data.as_ref()?.get(&switch.key).cloned())
                    .is_some_and(|value| value == switch.read_only);
            }
            view
        })
        .collect();
    views.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    views
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(namespace: &str, name: &str, replica_set: &str, node: &str, ready: bool) -> Pod {
        serde_json::from_value(json!({
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {"pod-template-hash": replica_set.rsplit_once('-').unwrap().1},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": replica_set, "uid": "u"}],
            },
            "spec": {"nodeName": node, "containers": []},
            "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
        }))
        .expect("valid pod")
    }

    fn service(namespace: &str, name: &str) -> InvoiceService {
        serde_json::from_value(json!({
            "apiVersion": "invoiceops.dev/v1alpha1",
            "kind": "InvoiceService",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "workload": {"deployments": [{"name": format!("{name}-az1"), "zone": "az1"}, {"name": format!("{name}-az2"), "zone": "az2"}]},
                "slos": {"availability": {"objective": "99.9"}},
            },
        }))
        .expect("valid service")
    }

    #[test]
    fn each_service_gets_the_pods_of_its_deployments_in_its_namespace() {
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": "n3", "labels": {ZONE_LABEL: "az3"}},
        }))
        .expect("valid node");
        let pods = vec![
            std::sync::Arc::new(pod("a", "api-az1-x1", "api-az1-5d9f", "n1", true)),
            std::sync::Arc::new(pod("a", "api-az2-x2", "api-az2-5d9f", "n3", true)),
            std::sync::Arc::new(pod("a", "api-az2-x3", "api-az2-5d9f", "n1", false)),
            // Same Deployment name, other namespace; and another service's pod.
            std::sync::Arc::new(pod("b", "api-az1-y1", "api-az1-77aa", "n1", true)),
            std::sync::Arc::new(pod("a", "web-az1-z1", "web-az1-1234", "n1", true)),
        ];
        let services = vec![std::sync::Arc::new(service("a", "api"))];
        let views = snapshot::<_, _, _, ConfigMap>(&services, &pods, &[node], &[]);
        assert_eq!(views.len(), 1);
        let view = &views[0];
        assert_eq!(view.all_pods, ["api-az1-x1", "api-az2-x2", "api-az2-x3"]);
        let ready: Vec<(&str, &str)> = view
            .pods
            .iter()
            .map(|pod| (pod.name.as_str(), pod.zone.as_str()))
            .collect();
        // The node's zone label wins over the Deployment's zone.
        assert_eq!(ready, [("api-az1-x1", "az1"), ("api-az2-x2", "az3")]);
    }
}
