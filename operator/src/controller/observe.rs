//! Observe: the pipeline's first step. Builds one service's [`Observation`] from the reflector
//! caches (its Deployments, its pods, the nodes' readiness per zone, the read-only switch) and
//! the Prometheus measurements handed in. Reads the caches only: no client, no `Context`.

use std::{collections::BTreeMap, sync::Arc};

use jiff::Timestamp;
use kube::{Resource, ResourceExt, runtime::reflector::ObjectRef};

use super::{CachedPod, Caches};
use crate::{
    act::scale_target_is,
    api::{InvoiceService, InvoiceServiceSpec, ScaledOutState, WorkloadKind},
    signals::{
        AutoscalerFloor, DeploymentState, NotReadyNodes, Observation, PodState, ServiceMetrics,
    },
};

/// The Deployment (or Argo Rollout) a pod belongs to, from its ReplicaSet owner
/// (`<deployment>-<hash>`; Argo Rollouts labels the hash `rollouts-pod-template-hash`).
pub fn pod_deployment(pod: &impl Resource) -> Option<&str> {
    let labels = pod.labels();
    let hash = labels
        .get("pod-template-hash")
        .or_else(|| labels.get("rollouts-pod-template-hash"))?;
    let owner = pod
        .owner_references()
        .iter()
        .find(|owner| owner.kind == "ReplicaSet")?;
    owner
        .name
        .strip_suffix(hash.as_str())
        .and_then(|name| name.strip_suffix('-'))
}

/// Builds the observation of one service from the caches and the Prometheus measurements.
pub(super) fn observe(
    caches: &Caches,
    service: &InvoiceService,
    metrics: ServiceMetrics,
    now: Timestamp,
) -> Observation {
    let pods = caches.pods.state();
    observe_among(caches, service, metrics, now, pods.iter().map(Arc::as_ref))
}

/// [`observe`] over the given pods instead of the whole pod cache (the storm census indexes
/// the cache by namespace once per tick rather than scanning it once per service).
pub(super) fn observe_among<'a>(
    caches: &Caches,
    service: &InvoiceService,
    metrics: ServiceMetrics,
    now: Timestamp,
    pods: impl Iterator<Item = &'a CachedPod>,
) -> Observation {
    let view = ServiceView::new(caches, service);
    Observation {
        at: now,
        metrics,
        pods: view.pods(pods),
        deployments: view.deployments(),
        not_ready_nodes: not_ready_nodes(caches, &service.spec.workload.zone_label),
        mode_value: view.mode_value(),
        mode_set_by: view.mode_set_by(),
    }
}

/// Gives each workload of `deployments` that the operator scaled out (`scaled_out`, from the
/// status the decision is made on) the floor of its HorizontalPodAutoscaler, which
/// `foreign::detect` compares with what the operator set. Only those: finding a workload's
/// autoscaler scans the autoscaler cache, and nothing else reads the floor.
pub(super) fn autoscaler_floors(
    caches: &Caches,
    service: &InvoiceService,
    scaled_out: Option<&ScaledOutState>,
    deployments: &mut [DeploymentState],
) {
    let Some(scaled_out) = scaled_out else {
        return;
    };
    let view = ServiceView::new(caches, service);
    for deployment in deployments
        .iter_mut()
        .filter(|deployment| deployment.exists)
        .filter(|deployment| scaled_out.written.contains_key(&deployment.name))
    {
        deployment.autoscaler = view.autoscaler_of(service.spec.workload.kind, &deployment.name);
    }
}

/// One service's slice of the caches.
struct ServiceView<'a> {
    caches: &'a Caches,
    namespace: Option<String>,
    spec: &'a InvoiceServiceSpec,
    /// The Deployments the spec names.
    wanted: Vec<&'a str>,
    /// The zone the spec pins each Deployment to, if it does.
    zone_of_deployment: BTreeMap<&'a str, &'a str>,
}

impl<'a> ServiceView<'a> {
    fn new(caches: &'a Caches, service: &'a InvoiceService) -> Self {
        let spec = &service.spec;
        Self {
            caches,
            namespace: service.namespace(),
            spec,
            wanted: spec.workload.deployment_names(),
            zone_of_deployment: spec
                .workload
                .deployments
                .iter()
                .flatten()
                .map(|deployment| (deployment.name.as_str(), deployment.zone.as_str()))
                .collect(),
        }
    }

    fn namespace(&self) -> &str {
        self.namespace.as_deref().unwrap_or_default()
    }

    fn deployments(&self) -> Vec<DeploymentState> {
        let kind = self.spec.workload.kind;
        self.wanted
            .iter()
            .map(|name| {
                let found = self.caches.workload(kind, self.namespace(), name);
                DeploymentState {
                    name: (*name).to_owned(),
                    zone: self
                        .zone_of_deployment
                        .get(name)
                        .map(|zone| (*zone).to_owned()),
                    replicas: found.as_ref().map_or(0, |w| w.replicas),
                    ready_replicas: found.as_ref().map_or(0, |w| w.ready_replicas),
                    exists: found.is_some(),
                    replicas_manager: found.as_ref().and_then(|w| w.replicas_manager.clone()),
                    replicas_set_at: found.as_ref().and_then(|w| w.replicas_set_at),
                    excluded_zones: found
                        .as_ref()
                        .and_then(|w| w.excluded.get(&self.spec.workload.zone_label).cloned())
                        .unwrap_or_default(),
                    affinity_set_by: found.as_ref().and_then(|w| w.affinity_set_by.clone()),
                    // Filled in by `autoscaler_floors`, only where it is needed.
                    autoscaler: None,
                    update: found.and_then(|w| w.update),
                }
            })
            .collect()
    }

    /// The floor of the HorizontalPodAutoscaler (not KEDA's) that scales the workload `name`.
    fn autoscaler_of(&self, kind: WorkloadKind, name: &str) -> Option<AutoscalerFloor> {
        self.caches
            .autoscalers
            .state()
            .iter()
            .filter(|autoscaler| autoscaler.metadata.namespace.as_deref() == Some(self.namespace()))
            .filter(|autoscaler| !autoscaler.keda())
            .find(|autoscaler| {
                let target = &autoscaler.spec.scale_target_ref;
                scale_target_is(
                    &target.kind,
                    target.api_version.as_deref(),
                    &target.name,
                    kind,
                    name,
                )
            })
            .map(|autoscaler| AutoscalerFloor {
                name: autoscaler.name_any(),
                min_replicas: autoscaler.spec.min_replicas.unwrap_or(1),
                set_by: autoscaler.floor_set_by.clone(),
                before: autoscaler.floor_before,
            })
    }

    fn pods<'p>(&self, pods: impl Iterator<Item = &'p CachedPod>) -> Vec<PodState> {
        pods
            // Every reconcile scans the pod cache (12,000 pods at fleet scale): no allocation
            // before the pod is known to be one of the service's.
            .filter(|pod| pod.metadata.namespace.as_deref() == self.namespace.as_deref())
            .filter_map(|pod| {
                let deployment = pod_deployment(pod)?;
                self.wanted
                    .contains(&deployment)
                    .then(|| self.pod_state(pod, deployment))
            })
            .collect()
    }

    fn pod_state(&self, pod: &CachedPod, deployment: &str) -> PodState {
        let ready_condition = pod.status.conditions.iter().find(|c| c.type_ == "Ready");
        let ready = ready_condition.is_some_and(|c| c.status == "True");
        let container_statuses = &pod.status.container_statuses;
        let zone = self
            .zone_of_deployment
            .get(deployment)
            .map(|zone| (*zone).to_owned())
            .or_else(|| {
                pod.spec
                    .node_name
                    .as_deref()
                    .and_then(|node| self.node_zone(node))
            });
        PodState {
            name: pod.name_any(),
            deployment: deployment.to_owned(),
            zone,
            ready,
            unready_since: ready_condition
                .filter(|_| !ready)
                .and_then(|c| c.last_transition_time.as_ref())
                .map(|time| time.0),
            restart_count: container_statuses.iter().map(|c| c.restart_count).sum(),
            crash_loop: container_statuses
                .iter()
                .any(|c| c.waiting_reason.as_deref() == Some("CrashLoopBackOff")),
            terminating: pod.metadata.deletion_timestamp.is_some(),
        }
    }

    fn node_zone(&self, node_name: &str) -> Option<String> {
        self.caches
            .nodes
            .get(&ObjectRef::new(node_name))
            .and_then(|node| node.labels().get(&self.spec.workload.zone_label).cloned())
    }

    /// The read-only switch's value, when the spec has one and the ConfigMap holds the key.
    fn mode_set_by(&self) -> Option<crate::signals::FieldSetter> {
        let policy = self.spec.remediation.read_only.as_ref()?;
        let switch = &policy.switch.config_map;
        let key = format!("f:{}", switch.key);
        self.caches
            .config_maps
            .get(&ObjectRef::new(&switch.name).within(self.namespace()))
            .and_then(|config_map| {
                super::slim::field_setter(config_map.metadata.managed_fields.as_deref(), |fields| {
                    fields.get("f:data")?.get(&key)
                })
            })
    }

    fn mode_value(&self) -> Option<String> {
        let policy = self.spec.remediation.read_only.as_ref()?;
        let switch = &policy.switch.config_map;
        self.caches
            .config_maps
            .get(&ObjectRef::new(&switch.name).within(self.namespace()))
            .and_then(|config_map| config_map.data.as_ref()?.get(&switch.key).cloned())
    }
}

/// NotReady nodes per zone (by the given zone label).
fn not_ready_nodes(caches: &Caches, zone_label: &str) -> NotReadyNodes {
    let mut not_ready = BTreeMap::new();
    for node in caches.nodes.state() {
        let ready = node
            .status
            .as_ref()
            .and_then(|status| status.conditions.as_ref())
            .and_then(|conditions| conditions.iter().find(|c| c.type_ == "Ready"))
            .is_some_and(|c| c.status == "True");
        if let Some(zone) = node.labels().get(zone_label)
            && !ready
        {
            *not_ready.entry(zone.clone()).or_insert(0) += 1;
        }
    }
    not_ready
}
