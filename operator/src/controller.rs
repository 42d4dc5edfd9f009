//! The controller: watches InvoiceServices, their Deployments, Pods, mode ConfigMaps and the
//! Nodes (reflector caches, no list calls per reconcile), runs the batched Prometheus
//! evaluation once per interval for the whole fleet, and reconciles each service through the
//! pipeline `observe (caches) -> evaluate (pure) -> decide (pure) -> act (client) -> report
//! (client)`. Does IO.
//!
//! Each fleet tick starts a fleet cycle that ends once every InvoiceService in the store at
//! the tick has been reconciled: its duration is `invoiceops_fleet_cycle_duration_seconds`
//! and one `fleet cycle complete` log line (`services`, `cycle_ms`, `query_ms`); a tick that
//! comes before the previous cycle ended counts in `invoiceops_fleet_cycle_overruns_total`.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

use futures::{StreamExt, future, stream};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ConfigMap, Node, ObjectReference};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{
        Controller, WatchStreamExt,
        controller::Action,
        events::{Event, EventType, Recorder, Reporter},
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use serde_json::json;
use tokio::sync::watch;
use tracing::{Instrument, debug, error, info, info_span, warn};

use self::cycle::FleetCycles;
pub use self::slim::{
    CachedContainerStatus, CachedDeployment, CachedDeploymentSpec, CachedDeploymentStatus,
    CachedPod, CachedPodCondition, CachedPodSpec, CachedPodStatus,
};

use crate::{
    FIELD_MANAGER,
    act::{ActOutcome, act},
    api::{
        InvoiceService, InvoiceServiceSpec, InvoiceServiceStatus, RemediationMode, condition_types,
        validate,
    },
    engine::{self, DecisionInput},
    evaluate::evaluate,
    foreign,
    metrics::{BurnRateLabels, GateLabels, Metrics, RemediationLabels},
    prometheus::{
        FleetMetrics, FleetQuery, MetricsSource, Prometheus, ServiceQuery, ServiceSelector,
        uses_fleet_queries,
    },
    report::{self, EventSpec, Related},
    signals::{DeploymentState, Observation, PodState, UnknownReason},
    storm::{StormGate, StormSettings, StormVerdict, in_trouble},
};

/// Annotation that pauses remediation of one InvoiceService.
pub const PAUSED_ANNOTATION: &str = "invoiceops.dev/paused";
/// Annotation with which a human asks for a manual fail-back.
pub const FAIL_BACK_ANNOTATION: &str = "invoiceops.dev/fail-back";

/// Why a reconcile failed. Permanent problems (an invalid spec) are not errors: they are
/// reported in status and wait for a change.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Writing status failed.
    #[error("failed to patch the status of {name}")]
    PatchStatus {
        /// The InvoiceService.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Adding or removing the deletion finalizer failed.
    #[error("failed to patch the finalizers of {name}")]
    PatchFinalizers {
        /// The InvoiceService.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The API server declined a reversal on deletion; the finalizer stays.
    #[error("the api server refused to undo {action} for {name}: {reason}")]
    Undo {
        /// The InvoiceService.
        name: String,
        /// The reversal.
        action: &'static str,
        /// The API server's explanation.
        reason: String,
    },
    /// Carrying out an action failed.
    #[error("failed to act on {name}")]
    Act {
        /// The InvoiceService.
        name: String,
        /// What failed.
        #[source]
        source: crate::act::ActError,
    },
}

impl Error {
    /// A fixed label for the `reconcile_errors` metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::PatchStatus { .. } => "patch_status",
            Self::PatchFinalizers { .. } => "patch_finalizers",
            Self::Undo { .. } => "undo_refused",
            Self::Act { source, .. } => source.metric_label(),
        }
    }
}

/// How the services measured by the operator-wide Prometheus and metric profile are queried.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum QueryMode {
    /// One query per SLI and window for the whole fleet, split per service in memory.
    #[default]
    Batched,
    /// One query per service per SLI and window, the way per-object analysis tools work; only
    /// for comparison benchmarks.
    PerService,
}

/// Operator-wide settings of the controller.
#[derive(Clone, Debug)]
pub struct Settings {
    /// How often the batched fleet evaluation runs.
    pub evaluation_interval: Duration,
    /// The short window pod and zone signals are measured over.
    pub detection_window: Duration,
    /// Samples older than this are stale.
    pub stale_after: Duration,
    /// The fleet-wide storm gate: share, minimum and hold period.
    pub storm: StormSettings,
    /// Force DryRun on every service (a cluster-wide switch for a first rollout).
    pub force_dry_run: bool,
    /// Watch only this namespace; all namespaces when `None`.
    pub namespace: Option<String>,
    /// Batched fleet queries, or per-service queries for comparison.
    pub query_mode: QueryMode,
}

/// The latest batched measurements of the fleet.
#[derive(Debug, Default)]
struct FleetSnapshot {
    metrics: Option<Arc<FleetMetrics>>,
    /// Fleet evaluations in a row, up to the latest, in which some query failed.
    failed_in_a_row: u32,
}

/// Whether a reconcile should neither decide nor write because of one failed round of fleet
/// queries: the latest fleet evaluation is the first in a row with failed queries, the
/// service's signals were trusted until now, and every unknown signal is unknown only because
/// a query failed or Prometheus did not answer. Reporting that blip would cost every service
/// in the fleet two status writes and an Event (untrusted, then trusted again), and at fleet
/// scale a slow Prometheus turns that into thousands of writes per interval, which slow it
/// further. Nothing acts on the unknown signals either way; if the queries fail again the
/// next interval, `SignalsTrusted=False` is reported as usual.
fn hold_through_query_blip(
    untrusted: &BTreeMap<&'static str, UnknownReason>,
    previous: &InvoiceServiceStatus,
    failed_in_a_row: u32,
) -> bool {
    failed_in_a_row == 1
        && !untrusted.is_empty()
        && untrusted.values().all(|reason| {
            matches!(
                reason,
                UnknownReason::PrometheusUnreachable | UnknownReason::QueryFailed
            )
        })
        && previous.conditions.iter().any(|condition| {
            condition.type_ == condition_types::SIGNALS_TRUSTED && condition.status == "True"
        })
}

/// Shared state of the reconcilers.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// Publishes Events.
    pub recorder: Recorder,
    /// The operator's metrics.
    pub metrics: Arc<Metrics>,
    /// The operator-wide Prometheus.
    pub prometheus: Prometheus,
    /// Settings.
    pub settings: Settings,
    /// True while this replica holds the leader lease.
    pub leader: watch::Receiver<bool>,
    caches: Caches,
    fleet: RwLock<FleetSnapshot>,
    /// The fleet-wide storm gate (see [`crate::storm`]).
    storm: Mutex<StormGate<ObjectRef<InvoiceService>, Instant>>,
    /// When each service was first seen unhealthy in the current incident.
    detected: Mutex<HashMap<ObjectRef<InvoiceService>, Instant>>,
    /// The fleet cycle in flight (see [`cycle`]).
    cycles: Mutex<FleetCycles>,
    /// The status this replica last wrote per service, until the cache has caught up with it.
    written: Mutex<HashMap<ObjectRef<InvoiceService>, WrittenStatus>>,
    /// Services whose last reconciles failed, and when to try them again.
    failures: Mutex<HashMap<ObjectRef<InvoiceService>, Failures>>,
    /// The InvoiceService store, set once by [`run`]: the pre-flight step reads the other
    /// services' claims from it. Unset where a context is built without one (unit tests).
    services: std::sync::OnceLock<Store<InvoiceService>>,
}

/// A status as the API server returned it from our patch.
#[derive(Clone, Debug)]
struct WrittenStatus {
    resource_version: u64,
    status: InvoiceServiceStatus,
}

impl Context {
    /// The service's status as this replica knows it: the cached object's, unless the cache
    /// still lags behind a status this replica wrote. A reconcile triggered by a watch event
    /// (the pod it just evicted going away) can run before the watch delivers that status
    /// patch; deciding on the stale status would ignore the action just taken (its cooldown,
    /// its verify window) and act twice. Resource versions are compared as numbers, as the
    /// API server's etcd revisions are; if one is not a number the cache wins.
    fn freshest_status(&self, service: &InvoiceService) -> InvoiceServiceStatus {
        let key = ObjectRef::from_obj(service);
        let cached = service.status.clone().unwrap_or_default();
        let mut written = self.written.lock().expect("written lock is never poisoned");
        let Some(ours) = written.get(&key) else {
            return cached;
        };
        let cached_version = service
            .metadata
            .resource_version
            .as_deref()
            .and_then(|version| version.parse::<u64>().ok());
        match cached_version {
            Some(version) if version < ours.resource_version => ours.status.clone(),
            _ => {
                written.remove(&key);
                cached
            }
        }
    }
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
    /// Nodes (zones, readiness).
    pub nodes: Store<Node>,
    /// ConfigMaps (the read-only mode switch).
    pub config_maps: Store<ConfigMap>,
}

impl Context {
    /// A context over the given caches.
    pub fn new(
        client: Client,
        reporter: Reporter,
        metrics: Arc<Metrics>,
        prometheus: Prometheus,
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
            detected: Mutex::new(HashMap::new()),
            cycles: Mutex::new(FleetCycles::default()),
            written: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            services: std::sync::OnceLock::new(),
        }
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectRef<InvoiceService>, Failures>> {
        self.failures
            .lock()
            .expect("failures lock is never poisoned")
    }

    /// Records a failed reconcile of `service`; returns how long to wait before the next.
    fn failed(&self, service: &ObjectRef<InvoiceService>) -> Duration {
        let mut failures = self.failures();
        let entry = failures.entry(service.clone()).or_insert(Failures {
            in_a_row: 0,
            retry_at: Instant::now(),
        });
        entry.in_a_row = entry.in_a_row.saturating_add(1);
        let wait = FIRST_RETRY
            .saturating_mul(2u32.saturating_pow(entry.in_a_row - 1))
            .min(LONGEST_RETRY);
        entry.retry_at = Instant::now() + wait;
        wait
    }

    /// How long `service` still waits after failed reconciles, if it does.
    fn backing_off(&self, service: &ObjectRef<InvoiceService>) -> Option<Duration> {
        let failures = self.failures();
        let retry_at = failures.get(service)?.retry_at;
        retry_at
            .checked_duration_since(Instant::now())
            .filter(|wait| !wait.is_zero())
    }

    fn cycles(&self) -> std::sync::MutexGuard<'_, FleetCycles> {
        self.cycles
            .lock()
            .expect("fleet cycle lock is never poisoned")
    }

    /// One service's latest evaluation for the storm gate, from its reconcile: may close the
    /// gate, never opens it. True while the gate is closed.
    fn storm_observe(&self, service: ObjectRef<InvoiceService>, trouble: bool) -> bool {
        let mut gate = self
            .storm
            .lock()
            .expect("storm gate lock is never poisoned");
        let was_closed = gate.verdict().closed;
        let closed = gate.observe(service, trouble, &self.settings.storm);
        let verdict = gate.verdict();
        drop(gate);
        self.storm_changed(was_closed, verdict);
        closed
    }

    /// The latest fleet measurements (none before the first fleet evaluation) and how many
    /// fleet evaluations in a row had failed queries.
    fn fleet_snapshot(&self) -> (Option<Arc<FleetMetrics>>, u32) {
        let fleet = self
            .fleet
            .read()
            .expect("fleet snapshot lock is never poisoned");
        (fleet.metrics.clone(), fleet.failed_in_a_row)
    }

    /// The storm census of a fleet tick, after the batched queries and before any reconcile
    /// of the tick: every service measured by them is evaluated (pure, from the caches) and
    /// counted at once, so that the first services of a shared outage cannot act before the
    /// share is reached. Services measured on their own count from their reconciles. A round
    /// of queries that failed is no evidence either way: the gate stays as it is.
    fn storm_census(&self, services: &Store<InvoiceService>) {
        if self.settings.query_mode == QueryMode::PerService {
            return;
        }
        let (snapshot, failed_in_a_row) = self.fleet_snapshot();
        let Some(fleet) = snapshot.filter(|_| failed_in_a_row == 0) else {
            return;
        };
        let pods = self.caches.pods.state();
        let mut pods_by_namespace: HashMap<&str, Vec<&CachedPod>> = HashMap::new();
        for pod in &pods {
            pods_by_namespace
                .entry(pod.metadata.namespace.as_deref().unwrap_or_default())
                .or_default()
                .push(pod.as_ref());
        }
        let now = Timestamp::now();
        let counted: Vec<(ObjectRef<InvoiceService>, bool)> = services
            .state()
            .iter()
            .filter(|service| uses_fleet_queries(&service.spec))
            .filter(|service| validate(&service.spec).is_empty())
            .map(|service| {
                let namespace = service.namespace().unwrap_or_default();
                let metrics = fleet.service(&ServiceSelector::for_service(
                    &namespace,
                    &service.name_any(),
                    &service.spec,
                ));
                let pods = pods_by_namespace
                    .get(namespace.as_str())
                    .into_iter()
                    .flatten()
                    .copied();
                let observation = observe_among(self, service, metrics, now, pods);
                let evaluation =
                    evaluate(&service.spec, &observation, self.settings.detection_window);
                let status = self.freshest_status(service);
                (
                    ObjectRef::from_obj(service.as_ref()),
                    in_trouble(&evaluation, &status),
                )
            })
            .collect();
        let mut gate = self
            .storm
            .lock()
            .expect("storm gate lock is never poisoned");
        let was_closed = gate.verdict().closed;
        let verdict = gate.census(counted, Instant::now(), &self.settings.storm);
        drop(gate);
        self.storm_changed(was_closed, verdict);
    }

    /// Publishes the storm gate's numbers and logs when it closes or opens.
    fn storm_changed(&self, was_closed: bool, verdict: StormVerdict) {
        let as_gauge = |count: usize| i64::try_from(count).unwrap_or(i64::MAX);
        self.metrics
            .storm_gate_closed
            .set(i64::from(verdict.closed));
        self.metrics
            .storm_gate_services_in_trouble
            .set(as_gauge(verdict.in_trouble));
        self.metrics
            .storm_gate_services
            .set(as_gauge(verdict.services));
        if verdict.closed != was_closed {
            let (in_trouble, services) = (verdict.in_trouble, verdict.services);
            if verdict.closed {
                warn!(
                    in_trouble,
                    services, "storm gate closed: every action is frozen"
                );
            } else {
                info!(
                    in_trouble,
                    services, "storm gate opened after its hold period"
                );
            }
        }
    }

    /// A fleet tick: starts a fleet cycle over every service in the store, and reports an
    /// overrun when the previous cycle is still pending.
    fn start_fleet_cycle(&self, services: &Store<InvoiceService>) {
        self.forget_deleted(services);
        let keys = services
            .state()
            .iter()
            .map(|service| ObjectRef::from_obj(service.as_ref()))
            .collect::<Vec<_>>();
        let overran = self.cycles().start(Instant::now(), keys);
        if let Some(pending) = overran {
            self.metrics.fleet_cycle_overruns.inc();
            warn!(pending, "fleet cycle overran the interval");
        }
    }

    /// Drops what is remembered per service for services no longer in the store: a deleted
    /// service that was unhealthy would otherwise count towards the storm gate for good, and
    /// its detection time and last written status would stay in memory.
    fn forget_deleted(&self, services: &Store<InvoiceService>) {
        let present = |key: &ObjectRef<InvoiceService>| services.get(key).is_some();
        self.storm
            .lock()
            .expect("storm gate lock is never poisoned")
            .retain(|key| present(key));
        self.detected
            .lock()
            .expect("detection lock is never poisoned")
            .retain(|key, _| present(key));
        self.written
            .lock()
            .expect("written lock is never poisoned")
            .retain(|key, _| present(key));
        self.failures().retain(|key, _| present(key));
    }

    /// The tick's fleet evaluation took `query` and its reconciles are triggered.
    fn fleet_cycle_dispatched(&self, query: Duration, services: &Store<InvoiceService>) {
        let completed = self
            .cycles()
            .dispatched(query, Instant::now(), |key| services.get(key).is_some());
        self.fleet_cycle_completed(completed);
    }

    /// A reconcile of `service` finished, successfully or not.
    fn fleet_cycle_reconciled(&self, service: &ObjectRef<InvoiceService>) {
        let completed = self.cycles().reconciled(service, Instant::now());
        self.fleet_cycle_completed(completed);
    }

    fn fleet_cycle_completed(&self, completed: Option<cycle::Completed>) {
        let Some(completed) = completed else {
            return;
        };
        let millis = |duration: Duration| u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        self.metrics
            .fleet_cycle_duration
            .observe(completed.cycle.as_secs_f64());
        info!(
            services = completed.services,
            cycle_ms = millis(completed.cycle),
            query_ms = millis(completed.query),
            "fleet cycle complete"
        );
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

/// The Deployment a pod belongs to, from its ReplicaSet owner (`<deployment>-<hash>`).
pub fn pod_deployment(pod: &impl Resource) -> Option<&str> {
    let hash = pod.labels().get("pod-template-hash")?;
    let owner = pod
        .owner_references()
        .iter()
        .find(|owner| owner.kind == "ReplicaSet")?;
    owner
        .name
        .strip_suffix(hash.as_str())
        .and_then(|name| name.strip_suffix('-'))
}

fn services_using_deployment(
    services: &Store<InvoiceService>,
    namespace: Option<String>,
    deployment: &str,
) -> Vec<ObjectRef<InvoiceService>> {
    services
        .state()
        .iter()
        // Borrowed compares: this runs for every service on every pod event.
        .filter(|service| service.metadata.namespace.as_deref() == namespace.as_deref())
        .filter(|service| {
            service
                .spec
                .workload
                .deployment_names()
                .contains(&deployment)
        })
        .map(|service| ObjectRef::from_obj(service.as_ref()))
        .collect()
}

/// Builds the observation of one service from the caches and the Prometheus measurements.
fn observe(
    context: &Context,
    service: &InvoiceService,
    metrics: crate::signals::ServiceMetrics,
    now: Timestamp,
) -> Observation {
    observe_among(
        context,
        service,
        metrics,
        now,
        context.caches.pods.state().iter().map(Arc::as_ref),
    )
}

/// [`observe`] over the given pods instead of the whole pod cache (the storm census indexes
/// the cache by namespace once per tick rather than scanning it once per service).
fn observe_among<'a>(
    context: &Context,
    service: &InvoiceService,
    metrics: crate::signals::ServiceMetrics,
    now: Timestamp,
    pods: impl Iterator<Item = &'a CachedPod>,
) -> Observation {
    let namespace = service.namespace();
    let spec = &service.spec;
    let zone_of_deployment: BTreeMap<&str, &str> = spec
        .workload
        .deployments
        .iter()
        .flatten()
        .map(|deployment| (deployment.name.as_str(), deployment.zone.as_str()))
        .collect();
    let wanted = spec.workload.deployment_names();
    let node_zone = |node_name: &str| {
        context
            .caches
            .nodes
            .get(&ObjectRef::new(node_name))
            .and_then(|node| node.labels().get(&spec.workload.zone_label).cloned())
    };
    let deployments = wanted
        .iter()
        .map(|name| {
            let found = context
                .caches
                .deployments
                .get(&ObjectRef::new(name).within(namespace.as_deref().unwrap_or_default()));
            DeploymentState {
                name: (*name).to_owned(),
                zone: zone_of_deployment.get(name).map(|zone| (*zone).to_owned()),
                replicas: found.as_ref().and_then(|d| d.spec.replicas).unwrap_or(0),
                ready_replicas: found
                    .as_ref()
                    .and_then(|d| d.status.ready_replicas)
                    .unwrap_or(0),
                exists: found.is_some(),
                replicas_manager: found.as_ref().and_then(|d| d.replicas_manager.clone()),
            }
        })
        .collect();
    let pods = pods
        // Every reconcile scans the pod cache (12,000 pods at fleet scale): no allocation
        // before the pod is known to be one of the service's.
        .filter(|pod| pod.metadata.namespace.as_deref() == namespace.as_deref())
        .filter_map(|pod| {
            let deployment = pod_deployment(pod)?;
            if !wanted.contains(&deployment) {
                return None;
            }
            let ready_condition = pod.status.conditions.iter().find(|c| c.type_ == "Ready");
            let ready = ready_condition.is_some_and(|c| c.status == "True");
            let container_statuses = &pod.status.container_statuses;
            let zone = zone_of_deployment
                .get(deployment)
                .map(|zone| (*zone).to_owned())
                .or_else(|| pod.spec.node_name.as_deref().and_then(node_zone));
            Some(PodState {
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
            })
        })
        .collect();
    let mut not_ready_nodes = BTreeMap::new();
    for node in context.caches.nodes.state() {
        let ready = node
            .status
            .as_ref()
            .and_then(|status| status.conditions.as_ref())
            .and_then(|conditions| conditions.iter().find(|c| c.type_ == "Ready"))
            .is_some_and(|c| c.status == "True");
        if let Some(zone) = node.labels().get(&spec.workload.zone_label)
            && !ready
        {
            *not_ready_nodes.entry(zone.clone()).or_insert(0) += 1;
        }
    }
    let mode_value = spec.remediation.read_only.as_ref().and_then(|policy| {
        let switch = &policy.switch.config_map;
        context
            .caches
            .config_maps
            .get(&ObjectRef::new(&switch.name).within(namespace.as_deref().unwrap_or_default()))
            .and_then(|config_map| config_map.data.as_ref()?.get(&switch.key).cloned())
    });
    Observation {
        at: now,
        metrics,
        pods,
        deployments,
        not_ready_nodes,
        mode_value,
    }
}

fn annotation_true(service: &InvoiceService, key: &str) -> bool {
    service
        .annotations()
        .get(key)
        .is_some_and(|value| value == "true")
}

/// The service's measurements, with how many fleet evaluations in a row had failed queries
/// (0 for a service measured on its own); `None` while it waits for the first fleet
/// evaluation.
async fn measure(
    context: &Context,
    service: &InvoiceService,
) -> Option<(crate::signals::ServiceMetrics, u32)> {
    let namespace = service.namespace().unwrap_or_default();
    let name = service.name_any();
    if uses_fleet_queries(&service.spec) && context.settings.query_mode == QueryMode::Batched {
        let (snapshot, failed_in_a_row) = context.fleet_snapshot();
        // None before the first fleet evaluation (a replica just started or became leader).
        return snapshot.map(|fleet| {
            let metrics = fleet.service(&ServiceSelector::for_service(
                &namespace,
                &name,
                &service.spec,
            ));
            (metrics, failed_in_a_row)
        });
    }
    // Its own Prometheus or custom PromQL, or the per-service query mode: the profile's
    // queries restricted to this service (plus any custom ones).
    let query = ServiceQuery::for_service(
        &namespace,
        &name,
        &service.spec,
        context.settings.detection_window,
        context.settings.stale_after,
    );
    Some((context.prometheus.service(&query).await, 0))
}

async fn publish(context: &Context, service: &InvoiceService, event: &EventSpec) {
    let reference = service.object_ref(&());
    let secondary = event.related.as_ref().map(|related| {
        let (kind, api_version, name) = match related {
            Related::Pod(name) => ("Pod", "v1", name),
            Related::Deployment(name) => ("Deployment", "apps/v1", name),
            Related::ConfigMap(name) => ("ConfigMap", "v1", name),
        };
        ObjectReference {
            api_version: Some(api_version.to_owned()),
            kind: Some(kind.to_owned()),
            name: Some(name.clone()),
            namespace: service.namespace(),
            ..ObjectReference::default()
        }
    });
    let kube_event = Event {
        type_: if event.warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: event.reason.to_owned(),
        note: Some(event.note.chars().take(1000).collect()),
        action: event.action.to_owned(),
        secondary: secondary.clone(),
    };
    if let Err(error) = context.recorder.publish(&kube_event, &reference).await {
        warn!(
            error = &error as &dyn std::error::Error,
            reason = event.reason,
            "failed to publish event"
        );
    }
    // The touched object gets the same Event, so `kubectl describe pod` tells the story too.
    if let Some(secondary) = secondary
        && let Err(error) = context.recorder.publish(&kube_event, &secondary).await
    {
        debug!(
            error = &error as &dyn std::error::Error,
            "failed to publish event on the touched object"
        );
    }
}

async fn patch_status(
    context: &Context,
    service: &InvoiceService,
    status: &InvoiceServiceStatus,
) -> Result<(), Error> {
    let api: Api<InvoiceService> = Api::namespaced(
        context.client.clone(),
        &service.namespace().unwrap_or_default(),
    );
    let patch = json!({
        "apiVersion": InvoiceService::api_version(&()),
        "kind": InvoiceService::kind(&()),
        "status": status,
    });
    let patched = api
        .patch_status(
            &service.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(|source| Error::PatchStatus {
            name: service.name_any(),
            source,
        })?;
    if let Some(resource_version) = patched
        .metadata
        .resource_version
        .as_deref()
        .and_then(|version| version.parse::<u64>().ok())
    {
        context
            .written
            .lock()
            .expect("written lock is never poisoned")
            .insert(
                ObjectRef::from_obj(service),
                WrittenStatus {
                    resource_version,
                    status: patched.status.unwrap_or_else(|| status.clone()),
                },
            );
    }
    Ok(())
}

fn requeue(spec: &InvoiceServiceSpec) -> Action {
    Action::requeue(spec.signals.interval.get())
}

/// Reconciles one InvoiceService.
pub async fn reconcile(
    service: Arc<InvoiceService>,
    context: Arc<Context>,
) -> Result<Action, Error> {
    let span = info_span!("reconcile", namespace = %service.namespace().unwrap_or_default(), name = %service.name_any());
    let key = ObjectRef::from_obj(service.as_ref());
    // After a failed reconcile, the fleet tick and every watch event would run the same
    // failing reconcile again at once: wait out the backoff instead.
    if let Some(wait) = context.backing_off(&key) {
        debug!(parent: &span, wait_ms = wait.as_millis(), "backing off after failed reconciles");
        context.fleet_cycle_reconciled(&key);
        return Ok(Action::requeue(wait));
    }
    let result = reconcile_inner(service, Arc::clone(&context))
        .instrument(span)
        .await;
    if result.is_ok() {
        context.failures().remove(&key);
    }
    context.fleet_cycle_reconciled(&key);
    result
}

async fn reconcile_inner(
    service: Arc<InvoiceService>,
    context: Arc<Context>,
) -> Result<Action, Error> {
    let _timer = context.metrics.reconcile_timer();
    // Only the leader observes and writes: followers keep their caches warm and wait.
    if !*context.leader.borrow() {
        return Ok(requeue(&service.spec));
    }
    // Deleted: undo what the operator changed, then let the object go. Not yet holding the
    // finalizer: take it before anything could need undoing.
    if service.metadata.deletion_timestamp.is_some() {
        return finalize::finalize(&context, &service).await;
    }
    if !finalize::has_finalizer(&service) {
        finalize::take_finalizer(&context, &service).await?;
    }
    let now = Timestamp::now();
    let previous = context.freshest_status(&service);
    let generation = service.metadata.generation;

    let problems = validate(&service.spec);
    if !problems.is_empty() {
        let (status, event) = report::report_invalid(&previous, &problems, generation, now);
        if status != previous {
            patch_status(&context, &service, &status).await?;
        }
        if let Some(event) = event {
            warn!(problems = %event.note, "invalid spec");
            publish(&context, &service, &event).await;
        }
        // Permanent until the spec changes.
        return Ok(Action::await_change());
    }
    // Pre-flight (controller/preflight.rs): a valid spec the cluster refutes (a missing
    // Deployment or zone, a Deployment an older InvoiceService claims) is reported and never
    // acted on.
    if let Some(action) = preflight::refuse(&context, &service, &previous, generation, now).await? {
        return Ok(action);
    }

    let mut spec = service.spec.clone();
    if context.settings.force_dry_run {
        spec.remediation.mode = RemediationMode::DryRun;
    }
    let Some((metrics, failed_in_a_row)) = measure(&context, &service).await else {
        // Deciding (and reporting) on no measurements at all would flip every service to
        // untrusted signals on each restart or leader change; the first fleet tick, a moment
        // away, reconciles everyone.
        debug!("waiting for the first fleet evaluation");
        return Ok(requeue(&service.spec));
    };
    let observation = observe(&context, &service, metrics, now);
    let evaluation = evaluate(&spec, &observation, context.settings.detection_window);
    if hold_through_query_blip(&evaluation.untrusted, &previous, failed_in_a_row) {
        debug!(
            unknown = evaluation.untrusted.len(),
            "fleet queries failed once; keeping the status until the next evaluation"
        );
        return Ok(requeue(&service.spec));
    }

    let key = ObjectRef::from_obj(service.as_ref());
    let unhealthy =
        evaluation.slo_met_now() == Some(false) || evaluation.unhealthy_pods().next().is_some();
    let storm = context.storm_observe(key.clone(), in_trouble(&evaluation, &previous));
    {
        let mut detected = context
            .detected
            .lock()
            .expect("detection lock is never poisoned");
        if unhealthy {
            detected.entry(key.clone()).or_insert_with(Instant::now);
        } else {
            detected.remove(&key);
        }
    }
    // Someone else changed what the operator manages (a person's `kubectl scale` mid-surge):
    // adopted into the status the decision is made on, never reverted.
    let foreign_changes = foreign::detect(
        &spec,
        &previous,
        &observation.deployments,
        observation.mode_value.as_deref(),
        now,
    );
    // The status as read stays the reference for "write only on a change"; a copy is made
    // only when there is something to adopt (rarely), not on every reconcile.
    let adopted = (!foreign_changes.is_empty()).then(|| {
        let mut adopted = previous.clone();
        foreign::adopt(&mut adopted, &foreign_changes, now);
        adopted
    });
    let observed_status = previous;
    let previous = adopted.as_ref().unwrap_or(&observed_status);
    let paused = spec.remediation.paused || annotation_true(&service, PAUSED_ANNOTATION);
    let decision = engine::decide(&DecisionInput {
        spec: &spec,
        evaluation: &evaluation,
        status: previous,
        deployments: &observation.deployments,
        now,
        paused_by_annotation: annotation_true(&service, PAUSED_ANNOTATION),
        storm,
        manual_fail_back: annotation_true(&service, FAIL_BACK_ANNOTATION),
    });

    let dry_run = matches!(decision.outcome, engine::Outcome::Act { dry_run: true, .. });
    let mode = if dry_run { "DryRun" } else { "Enforce" };
    let mut applied = true;
    let mut refusal = None;
    if let Some(action) = decision.action() {
        let action_label = action.kind().as_str();
        if dry_run {
            info!(action = action_label, reason = %action.reason, "would remediate (DryRun)");
            context
                .metrics
                .remediations
                .get_or_create(&RemediationLabels {
                    action: action_label,
                    result: "would",
                    mode,
                })
                .inc();
        } else {
            info!(action = action_label, target = %action.step.describe(), reason = %action.reason, "remediating");
            // An action that sets replicas is written down before its first write, so a
            // restart or a new leader completes it from status (engine::resume).
            if let Some(intent) =
                engine::record_intent(previous, &decision, &observation.deployments, now)
            {
                patch_status(&context, &service, &intent).await?;
            }
            match act(&context.client, &service, action, now).await {
                Ok(ActOutcome::Applied) => {
                    context
                        .metrics
                        .remediations
                        .get_or_create(&RemediationLabels {
                            action: action_label,
                            result: "applied",
                            mode,
                        })
                        .inc();
                    if let Some(first_seen) = context
                        .detected
                        .lock()
                        .expect("detection lock is never poisoned")
                        .get(&key)
                    {
                        context
                            .metrics
                            .detection_to_action
                            .observe(first_seen.elapsed().as_secs_f64());
                    }
                }
                Ok(ActOutcome::Refused { by, reason }) => {
                    warn!(action = action_label, %reason, "action refused by the api server");
                    context
                        .metrics
                        .remediations
                        .get_or_create(&RemediationLabels {
                            action: action_label,
                            result: "refused",
                            mode,
                        })
                        .inc();
                    applied = false;
                    refusal = Some((by, reason));
                }
                Err(source) => {
                    context
                        .metrics
                        .remediations
                        .get_or_create(&RemediationLabels {
                            action: action_label,
                            result: "failed",
                            mode,
                        })
                        .inc();
                    // Nothing is recorded: the same decision is made again after the backoff.
                    return Err(Error::Act {
                        name: service.name_any(),
                        source,
                    });
                }
            }
        }
    }
    if let Some(blocked) = decision.blocked() {
        context
            .metrics
            .blocked
            .get_or_create(&GateLabels {
                gate: blocked.gate.as_str(),
            })
            .inc();
        debug!(gate = blocked.gate.as_str(), detail = %blocked.detail, "action blocked");
    }
    for (window, rate) in report::burn_rates(&evaluation) {
        context
            .metrics
            .burn_rates
            .get_or_create(&BurnRateLabels {
                namespace: service.namespace().unwrap_or_default(),
                service: service.name_any(),
                window,
            })
            .set(rate);
    }

    let mut recorded = engine::record(previous, &decision, &observation.deployments, now, applied);
    if let Some((by, reason)) = &refusal {
        engine::note_refusal(&mut recorded, by, reason);
    }
    // An action just taken waits for its verdict: the service counts as in trouble from now
    // on, before the next reconcile of another service consults the gate.
    context.storm_observe(key.clone(), in_trouble(&evaluation, &recorded));
    let (status, events) = report::report(report::ReportInput {
        spec: &spec,
        generation,
        previous,
        recorded,
        evaluation: &evaluation,
        decision: &decision,
        applied,
        refusal: refusal.map(|(_, reason)| reason),
        paused,
        storm,
        now,
    });
    // Quiet steady state: write only when something a user would see changed.
    if status != observed_status {
        patch_status(&context, &service, &status).await?;
    }
    for change in &foreign_changes {
        publish(
            &context,
            &service,
            &foreign_change_event(&context, &service, change).await,
        )
        .await;
    }
    for event in &events {
        publish(&context, &service, event).await;
    }
    Ok(requeue(&spec))
}

/// The Warning Event of a foreign change, on the InvoiceService and the changed object. The
/// caches carry who set a Deployment's replicas; who set the mode key is read from the
/// ConfigMap's managed fields here (once per change, which is rare).
async fn foreign_change_event(
    context: &Context,
    service: &InvoiceService,
    change: &foreign::ForeignChange,
) -> EventSpec {
    let switch = service
        .spec
        .remediation
        .read_only
        .as_ref()
        .map(|policy| &policy.switch.config_map);
    let (related, mode_manager) = match (change, switch) {
        (foreign::ForeignChange::ModeSwitched { .. }, Some(switch)) => {
            let api: Api<ConfigMap> = Api::namespaced(
                context.client.clone(),
                &service.namespace().unwrap_or_default(),
            );
            let manager = api.get(&switch.name).await.ok().and_then(|config_map| {
                let entries = config_map.metadata.managed_fields?;
                entries
                    .into_iter()
                    .filter(|entry| {
                        entry.fields_v1.as_ref().is_some_and(|fields| {
                            fields
                                .0
                                .get("f:data")
                                .and_then(|data| data.get(format!("f:{}", switch.key)))
                                .is_some()
                        })
                    })
                    .filter(|entry| entry.manager.as_deref() != Some(crate::FIELD_MANAGER))
                    .max_by_key(|entry| entry.time.as_ref().map(|time| time.0))
                    .and_then(|entry| entry.manager)
            });
            (Some(Related::ConfigMap(switch.name.clone())), manager)
        }
        (
            foreign::ForeignChange::Replicas { deployment, .. }
            | foreign::ForeignChange::ZoneRestored { deployment, .. },
            _,
        ) => (Some(Related::Deployment(deployment.clone())), None),
        (foreign::ForeignChange::ModeSwitched { .. }, None) => (None, None),
    };
    let note = foreign::describe(change, mode_manager.as_deref());
    warn!(change = %note, "adopted a change made by someone else");
    EventSpec {
        warning: true,
        reason: report::reasons::EXTERNAL_CHANGE_ADOPTED,
        note,
        action: "Evaluate",
        related,
    }
}

fn error_policy(service: Arc<InvoiceService>, error: &Error, context: Arc<Context>) -> Action {
    warn!(
        name = %service.name_any(),
        error = error as &dyn std::error::Error,
        "reconcile failed"
    );
    context
        .metrics
        .reconcile_errors
        .get_or_create(&crate::metrics::ErrorLabels {
            error: error.metric_label(),
        })
        .inc();
    // Transient: try again soon, then less and less often while it keeps failing.
    Action::requeue(context.failed(&ObjectRef::from_obj(service.as_ref())))
}

/// The first wait after a failed reconcile; it doubles with each failure in a row.
const FIRST_RETRY: Duration = Duration::from_secs(5);
/// The longest wait between reconciles of a service that keeps failing.
const LONGEST_RETRY: Duration = Duration::from_secs(300);

/// Failed reconciles in a row of one service, and when it may be tried again.
#[derive(Clone, Copy, Debug)]
struct Failures {
    in_a_row: u32,
    retry_at: Instant,
}

/// Runs the fleet evaluation once: one batched query set for every service that uses the
/// operator-wide profile. Returns how long the queries took. Sends nothing in the per-service
/// query mode, where each reconcile queries for its own service.
async fn evaluate_fleet(context: &Context, services: &Store<InvoiceService>) -> Duration {
    if context.settings.query_mode == QueryMode::PerService {
        return Duration::ZERO;
    }
    let specs: Vec<Arc<InvoiceService>> = services.state();
    let earlier = context
        .fleet
        .read()
        .expect("fleet snapshot lock is never poisoned")
        .metrics
        .clone();
    let started = Instant::now();
    let query = FleetQuery::for_services(
        specs.iter().map(|service| &service.spec),
        context.settings.detection_window,
        context.settings.stale_after,
    )
    .reusing(earlier.as_deref(), started);
    drop(specs);
    let mut fleet = context.prometheus.fleet(&query).await;
    fleet.carry_over(earlier.as_deref(), &query, started);
    drop(earlier);
    let elapsed = started.elapsed();
    context
        .metrics
        .fleet_evaluation_duration
        .observe(elapsed.as_secs_f64());
    let failed = fleet.failed_queries() > 0;
    let mut snapshot = context
        .fleet
        .write()
        .expect("fleet snapshot lock is never poisoned");
    snapshot.metrics = Some(Arc::new(fleet));
    snapshot.failed_in_a_row = if failed {
        snapshot.failed_in_a_row.saturating_add(1)
    } else {
        0
    };
    elapsed
}

/// What the controller needs from the process that runs it.
pub struct Runtime {
    /// Kubernetes client.
    pub client: Client,
    /// The operator-wide Prometheus.
    pub prometheus: Prometheus,
    /// The operator's metrics.
    pub metrics: Arc<Metrics>,
    /// Settings.
    pub settings: Settings,
    /// Who publishes Events.
    pub reporter: Reporter,
    /// True while this replica holds the leader lease.
    pub leader: watch::Receiver<bool>,
    /// Set once every cache has synced (for `/readyz`).
    pub ready: Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Runtime")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Reconciles running at once.
const RECONCILE_CONCURRENCY: u16 = 16;

/// Watches and reconciles until `shutdown` resolves.
pub async fn run(
    runtime: Runtime,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let Runtime {
        client,
        prometheus,
        metrics,
        settings,
        reporter,
        leader,
        ready,
    } = runtime;
    let namespaced = |client: &Client| -> (
        Api<InvoiceService>,
        Api<CachedPod>,
        Api<CachedDeployment>,
        Api<ConfigMap>,
    ) {
        match &settings.namespace {
            Some(namespace) => (
                Api::namespaced(client.clone(), namespace),
                Api::namespaced(client.clone(), namespace),
                Api::namespaced(client.clone(), namespace),
                Api::namespaced(client.clone(), namespace),
            ),
            None => (
                Api::all(client.clone()),
                Api::all(client.clone()),
                Api::all(client.clone()),
                Api::all(client.clone()),
            ),
        }
    };
    let (services_api, pods_api, deployments_api, config_maps_api) = namespaced(&client);
    let nodes_api: Api<Node> = Api::all(client.clone());
    // The permissions every action needs, reviewed once: a missing one is reported now rather
    // than at the first incident.
    {
        let (client, namespace, metrics) = (
            client.clone(),
            settings.namespace.clone(),
            Arc::clone(&metrics),
        );
        tokio::spawn(async move {
            crate::permissions::report_missing(client, namespace, &metrics).await;
        });
    }

    let (pods, pods_writer) = reflector::store();
    let (deployments, deployments_writer) = reflector::store();
    let (nodes, nodes_writer) = reflector::store();
    let (config_maps, config_maps_writer) = reflector::store();

    let config = watcher::Config::default().any_semantic();
    // Objects are stripped of what the operator never reads before they are cached (`slim`).
    let pod_stream = reflector::reflector(
        pods_writer,
        watcher(pods_api, config.clone()).modify(slim::pod),
    )
    .default_backoff()
    .touched_objects();
    let deployment_stream = reflector::reflector(
        deployments_writer,
        watcher(deployments_api, config.clone()).modify(slim::deployment),
    )
    .default_backoff()
    .touched_objects();
    let config_map_stream = reflector::reflector(
        config_maps_writer,
        watcher(config_maps_api, config.clone()).modify(slim::config_map),
    )
    .default_backoff()
    .touched_objects();
    // Nodes only feed the cache (zones, NotReady counts); the fleet tick picks changes up.
    let node_stream = reflector::reflector(
        nodes_writer,
        watcher(nodes_api, config.clone()).modify(slim::node),
    )
    .default_backoff()
    .touched_objects()
    .for_each(|_| future::ready(()));
    tokio::spawn(node_stream);

    let context = Arc::new(Context::new(
        client.clone(),
        reporter,
        Arc::clone(&metrics),
        prometheus,
        settings.clone(),
        leader.clone(),
        Caches {
            pods: pods.clone(),
            deployments: deployments.clone(),
            nodes: nodes.clone(),
            config_maps: config_maps.clone(),
        },
    ));

    // InvoiceServices keep their annotations (pause, fail-back) but lose managed fields: the
    // status patches' field sets were the largest part of each cached object.
    let (services, services_writer) = reflector::store();
    let _ = context.services.set(services.clone());
    let service_stream = reflector::reflector(
        services_writer,
        watcher(services_api, config.clone()).modify(slim::invoice_service),
    )
    .default_backoff()
    .applied_objects();
    // Bounded concurrency bounds memory and the burst of status writes when thousands of
    // services change at once (the first interval); a steady fleet tick is CPU only.
    let controller = Controller::for_stream(service_stream, services.clone()).with_config(
        kube::runtime::controller::Config::default().concurrency(RECONCILE_CONCURRENCY),
    );

    // The fleet tick: evaluate everyone's batched signals, then reconcile everyone.
    let (tick_sender, tick_receiver) = tokio::sync::mpsc::channel::<()>(1);
    {
        let context = Arc::clone(&context);
        let services = services.clone();
        let interval = settings.evaluation_interval;
        tokio::spawn(async move {
            // A first evaluation over a store still listing would ask for none of the
            // services' windows: every service would read "no data" once after each start.
            if !cache_synced("invoiceservices", || services.wait_until_ready()).await {
                return;
            }
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                if !*context.leader.borrow() {
                    continue;
                }
                context.start_fleet_cycle(&services);
                let query = evaluate_fleet(&context, &services).await;
                context.storm_census(&services);
                if tick_sender.send(()).await.is_err() {
                    return;
                }
                context.fleet_cycle_dispatched(query, &services);
            }
        });
    }
    let ticks = tokio_stream_from(tick_receiver);

    // Ready once every cache has synced.
    {
        let (pods, deployments, nodes, config_maps, services) = (
            pods.clone(),
            deployments.clone(),
            nodes.clone(),
            config_maps.clone(),
            services.clone(),
        );
        tokio::spawn(async move {
            let synced = future::join5(
                cache_synced("pods", || pods.wait_until_ready()),
                cache_synced("deployments", || deployments.wait_until_ready()),
                cache_synced("nodes", || nodes.wait_until_ready()),
                cache_synced("configmaps", || config_maps.wait_until_ready()),
                cache_synced("invoiceservices", || services.wait_until_ready()),
            )
            .await;
            if let (true, true, true, true, true) = synced {
                ready.store(true, std::sync::atomic::Ordering::Relaxed);
                info!("caches synced; ready");
            }
        });
    }

    let pod_services = services.clone();
    let cycle_context = Arc::clone(&context);
    let deployment_services = services.clone();
    let config_map_services = services.clone();
    controller
        .watches_stream(pod_stream, move |pod: CachedPod| {
            let namespace = pod.namespace();
            pod_deployment(&pod)
                .map(|deployment| services_using_deployment(&pod_services, namespace, deployment))
                .unwrap_or_default()
        })
        .watches_stream(deployment_stream, move |deployment: CachedDeployment| {
            services_using_deployment(
                &deployment_services,
                deployment.namespace(),
                &deployment.name_any(),
            )
        })
        .watches_stream(config_map_stream, move |config_map: ConfigMap| {
            let name = config_map.name_any();
            config_map_services
                .state()
                .iter()
                .filter(|service| service.namespace() == config_map.namespace())
                .filter(|service| {
                    service
                        .spec
                        .remediation
                        .read_only
                        .as_ref()
                        .is_some_and(|policy| policy.switch.config_map.name == name)
                })
                .map(|service| ObjectRef::from_obj(service.as_ref()))
                .collect::<Vec<_>>()
        })
        .reconcile_all_on(ticks)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, context)
        .for_each(|result| {
            if let Err(error) = result {
                // A service deleted before its reconcile ran is not waited for.
                if let kube::runtime::controller::Error::ObjectNotFound(reference) = &error {
                    let mut key = ObjectRef::<InvoiceService>::new(&reference.name);
                    if let Some(namespace) = &reference.namespace {
                        key = key.within(namespace);
                    }
                    cycle_context.fleet_cycle_reconciled(&key);
                }
                debug!(error = &error as &dyn std::error::Error, "controller event");
            }
            future::ready(())
        })
        .await;
}

/// Waits for one cache's first full list, logging it; false when the cache can never sync.
///
/// A store's readiness keeps the waker of only its latest waiter (a oneshot channel inside
/// kube-runtime's `DelayedInit`), and the controller waits on the InvoiceService store too: of
/// two waiters one is never woken. Seen at fleet scale as a `/readyz` stuck at 503 while pods
/// churned at start-up. So the wait is polled afresh every second.
async fn cache_synced<F, Fut, E>(kind: &'static str, ready: F) -> bool
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    loop {
        match tokio::time::timeout(Duration::from_secs(1), ready()).await {
            Err(_elapsed) => {}
            Ok(Ok(())) => {
                debug!(kind, "cache synced");
                return true;
            }
            Ok(Err(error)) => {
                error!(kind, %error, "cache can never sync");
                return false;
            }
        }
    }
}

fn tokio_stream_from(
    mut receiver: tokio::sync::mpsc::Receiver<()>,
) -> impl futures::Stream<Item = ()> {
    stream::poll_fn(move |context| receiver.poll_recv(context))
}

mod cycle;
mod finalize;
mod preflight;
mod slim;

pub use self::finalize::FINALIZER;

#[cfg(test)]
mod tests;
