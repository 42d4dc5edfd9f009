//! The reconcilers' shared state: the clients, the reflector caches, the latest fleet
//! measurements, the storm gate, the fleet cycle in flight and the per-service memory.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex, OnceLock, RwLock},
};

use k8s_openapi::api::core::v1::{ConfigMap, Node};
use kube::{
    Client,
    runtime::{
        events::{Recorder, Reporter},
        reflector::{ObjectRef, Store},
    },
};
use tokio::sync::watch;

use super::{
    CachedAutoscaler, CachedDeployment, CachedPod, CachedRollout, Settings, cycle::FleetCycles,
    fleet::FleetSnapshot, memory::Memory,
};
use crate::{
    api::{InvoiceService, WorkloadKind},
    metrics::Metrics,
    prometheus::MetricsSource,
    storm::StormGate,
};

/// Shared state of the reconcilers.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// Publishes Events.
    pub recorder: Recorder,
    /// The operator's metrics.
    pub metrics: Arc<Metrics>,
    /// Where measurements come from: the operator-wide Prometheus in production.
    pub prometheus: Arc<dyn MetricsSource>,
    /// Settings.
    pub settings: Settings,
    /// True while this replica holds the leader lease.
    pub leader: watch::Receiver<bool>,
    pub(super) caches: Caches,
    pub(super) fleet: RwLock<FleetSnapshot>,
    /// The fleet-wide storm gate (see [`crate::storm`]).
    pub(super) storm: Mutex<StormGate<ObjectRef<InvoiceService>, std::time::Instant>>,
    /// The fleet cycle in flight (see `cycle`).
    pub(super) cycles: Mutex<FleetCycles>,
    /// What is remembered per service between reconciles.
    pub(super) memory: Memory,
    /// The InvoiceService store, set once by `run`: the pre-flight step reads the other
    /// services' claims from it. Unset where a context is built without one (unit tests).
    pub(super) services: OnceLock<Store<InvoiceService>>,
}

/// The reflector caches a reconcile reads instead of calling the API server. Pods and
/// Deployments are cached as small types holding only what is read ([`CachedPod`],
/// [`CachedDeployment`]); the other objects are stripped of managed fields, annotations and
/// a Node's images (see the `slim` module): read anything else from the API server, or add it
/// there first.
#[derive(Clone)]
#[allow(missing_debug_implementations)] // reflector stores have no Debug
pub struct Caches {
    /// Pods of the watched namespace(s).
    pub pods: Store<CachedPod>,
    /// Deployments.
    pub deployments: Store<CachedDeployment>,
    /// Argo Rollouts; empty (and never synced) where Argo Rollouts is not installed.
    pub rollouts: Store<CachedRollout>,
    /// Set while the API server is known not to serve Argo Rollouts (the wiring looks again
    /// every minute); unset while unknown or served.
    pub rollouts_not_served: Arc<std::sync::atomic::AtomicBool>,
    /// HorizontalPodAutoscalers (who set the floor of a workload the operator scaled out).
    pub autoscalers: Store<CachedAutoscaler>,
    /// Nodes (zones, readiness).
    pub nodes: Store<Node>,
    /// ConfigMaps (the read-only mode switch).
    pub config_maps: Store<ConfigMap>,
}

/// A workload as `observe` reads it, whatever its kind.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct CachedWorkload {
    pub replicas: i32,
    pub ready_replicas: i32,
    pub replicas_manager: Option<String>,
    pub replicas_set_at: Option<jiff::Timestamp>,
    /// A Rollout's update under way ([`CachedRollout::update`]).
    pub update: Option<String>,
    /// A Deployment's zone exclusions per node label ([`CachedDeployment::excluded`]).
    pub excluded: BTreeMap<String, BTreeSet<String>>,
    /// Who last wrote a Deployment's pod-template affinity.
    pub affinity_set_by: Option<crate::signals::FieldSetter>,
}

impl Caches {
    /// The Deployment or Rollout `name` of `namespace`, if cached.
    pub(super) fn workload(
        &self,
        kind: WorkloadKind,
        namespace: &str,
        name: &str,
    ) -> Option<CachedWorkload> {
        match kind {
            WorkloadKind::Deployment => self
                .deployments
                .get(&ObjectRef::new(name).within(namespace))
                .map(|found| CachedWorkload {
                    replicas: found.spec.replicas.unwrap_or(0),
                    ready_replicas: found.status.ready_replicas.unwrap_or(0),
                    replicas_manager: found.replicas_manager.clone(),
                    replicas_set_at: found.replicas_set_at,
                    update: None,
                    excluded: found.excluded.clone(),
                    affinity_set_by: found.affinity_set_by.clone(),
                }),
            WorkloadKind::Rollout => self
                .rollouts
                .get(&ObjectRef::new(name).within(namespace))
                .map(|found| CachedWorkload {
                    replicas: found.spec.replicas.unwrap_or(0),
                    ready_replicas: found.status.ready_replicas.unwrap_or(0),
                    replicas_manager: found.replicas_manager.clone(),
                    replicas_set_at: found.replicas_set_at,
                    update: found.update(),
                    excluded: BTreeMap::new(),
                    affinity_set_by: None,
                }),
        }
    }
}

impl Context {
    /// A context over the given caches.
    pub fn new(
        client: Client,
        reporter: Reporter,
        metrics: Arc<Metrics>,
        prometheus: Arc<dyn MetricsSource>,
        settings: Settings,
        leader: watch::Receiver<bool>,
        caches: Caches,
    ) -> Self {
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            prometheus,
            settings,
            leader,
            caches,
            fleet: RwLock::new(FleetSnapshot::default()),
            storm: Mutex::new(StormGate::default()),
            cycles: Mutex::new(FleetCycles::default()),
            memory: Memory::default(),
            services: OnceLock::new(),
        }
    }

    /// Whether this replica leads: only the leader observes and writes.
    pub(super) fn leads(&self) -> bool {
        *self.leader.borrow()
    }
}

impl std::fmt::Debug for Context {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Context")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}
