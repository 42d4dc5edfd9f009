//! What the simulator watches in the cluster: InvoiceServices, their pods, the nodes (for
//! zones) and the mode ConfigMaps, kept in kube-rs reflector stores. `watch` does IO;
//! `snapshot` turns the stores into [`ServiceView`]s and is pure.

use std::collections::BTreeMap;

use futures::StreamExt as _;
use invoice_operator::api::InvoiceService;
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
    /// The services as they are now.
    pub fn snapshot(&self) -> Vec<ServiceView> {
        let services: Vec<InvoiceService> = self
            .services
            .state()
            .iter()
            .map(|s| (**s).clone())
            .collect();
        let pods: Vec<Pod> = self.pods.state().iter().map(|p| (**p).clone()).collect();
        let nodes: Vec<Node> = self.nodes.state().iter().map(|n| (**n).clone()).collect();
        let config_maps: Vec<ConfigMap> = self
            .config_maps
            .state()
            .iter()
            .map(|c| (**c).clone())
            .collect();
        snapshot(&services, &pods, &nodes, &config_maps)
    }
}

/// The Deployment owning `pod` through its ReplicaSet (`<deployment>-<hash>`).
fn deployment_of(pod: &Pod) -> Option<String> {
    let owner = pod
        .owner_references()
        .iter()
        .find(|owner| owner.kind == "ReplicaSet")?;
    owner
        .name
        .rsplit_once('-')
        .map(|(deployment, _)| deployment.to_owned())
}

fn is_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|status| status.conditions.as_ref())
            .is_some_and(|conditions| {
                conditions
                    .iter()
                    .any(|condition| condition.type_ == "Ready" && condition.status == "True")
            })
}

/// Builds the views: each service's pods (by owning Deployment), their zones (node label,
/// else the zonal Deployment's zone), and its read-only mode from the mode ConfigMap.
pub fn snapshot(
    services: &[InvoiceService],
    pods: &[Pod],
    nodes: &[Node],
    config_maps: &[ConfigMap],
) -> Vec<ServiceView> {
    let node_zones: BTreeMap<String, String> = nodes
        .iter()
        .filter_map(|node| Some((node.name_any(), node.labels().get(ZONE_LABEL)?.clone())))
        .collect();
    let mut views: Vec<ServiceView> = services
        .iter()
        .map(|service| {
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
            for pod in pods {
                if pod.namespace().as_deref() != Some(namespace.as_str()) {
                    continue;
                }
                let Some(deployment_zone) =
                    deployment_of(pod).and_then(|name| deployments.get(&name).cloned())
                else {
                    continue;
                };
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
                    .or(deployment_zone)
                    .unwrap_or_else(|| "unknown".to_owned());
                view.pods.push(PodView {
                    name: pod.name_any(),
                    zone,
                });
            }
            view.all_pods.sort();
            view.pods.sort_by(|a, b| a.name.cmp(&b.name));
            if let Some(read_only) = &service.spec.remediation.read_only {
                let switch = &read_only.switch.config_map;
                view.read_only = config_maps
                    .iter()
                    .find(|map| {
                        map.namespace().as_deref() == Some(namespace.as_str())
                            && map.name_any() == switch.name
                    })
                    .and_then(|map| map.data.as_ref()?.get(&switch.key).cloned())
                    .is_some_and(|value| value == switch.read_only);
            }
            view
        })
        .collect();
    views.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    views
}
