//! The wiring: the watches and reflector caches, the mapping from a watched object to the
//! services it concerns, the fleet tick's channel, readiness, and the kube-runtime
//! `Controller` that runs [`reconcile`] for every service. Does IO (the watches).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures::{Stream, StreamExt, future, stream};
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use kube::{
    Api, Client, ResourceExt,
    runtime::{
        Controller, WatchStreamExt,
        events::Reporter,
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use tokio::sync::watch;
use tracing::{debug, error, info};

use super::{
    CachedDeployment, CachedPod, CachedRollout, Caches, Context, Settings, fleet,
    observe::pod_deployment,
    reconcile::{error_policy, reconcile},
    slim,
};
use crate::{
    api::{InvoiceService, WorkloadKind},
    metrics::Metrics,
    prometheus::MetricsSource,
};

/// What the controller needs from the process that runs it.
pub struct Runtime {
    /// Kubernetes client.
    pub client: Client,
    /// Where measurements come from: the operator-wide Prometheus.
    pub prometheus: Arc<dyn MetricsSource>,
    /// The operator's metrics.
    pub metrics: Arc<Metrics>,
    /// Settings.
    pub settings: Settings,
    /// Who publishes Events.
    pub reporter: Reporter,
    /// True while this replica holds the leader lease.
    pub leader: watch::Receiver<bool>,
    /// Set once every cache has synced (for `/readyz`).
    pub ready: Arc<AtomicBool>,
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

/// The APIs of the watched namespace, or of all namespaces.
fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

/// A reflector over `api`, stripping each object with `slim` before it is cached; yields the
/// objects touched.
fn cached<K>(
    api: Api<K>,
    strip: fn(&mut K),
) -> (
    Store<K>,
    impl Stream<Item = Result<K, watcher::Error>> + Send,
)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    (store, reflect(writer, api, strip).touched_objects())
}

/// The watch of `api` feeding `writer`, each object stripped with `strip` first, with the
/// default backoff.
fn reflect<K>(
    writer: reflector::store::Writer<K>,
    api: Api<K>,
    strip: fn(&mut K),
) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let config = watcher::Config::default().any_semantic();
    reflector::reflector(writer, watcher(api, config).modify(strip)).default_backoff()
}

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
    let namespace = settings.namespace.clone();
    // The permissions every action needs, reviewed once: a missing one is reported now rather
    // than at the first incident.
    tokio::spawn({
        let (client, namespace, metrics) =
            (client.clone(), namespace.clone(), Arc::clone(&metrics));
        async move { crate::permissions::report_missing(client, namespace, &metrics).await }
    });
    // Objects are stripped of what the operator never reads before they are cached (`slim`).
    let (pods, pod_stream) = cached(api(&client, namespace.as_deref()), slim::pod);
    let (deployments, deployment_stream) =
        cached(api(&client, namespace.as_deref()), slim::deployment);
    let (config_maps, config_map_stream) =
        cached(api(&client, namespace.as_deref()), slim::config_map);
    // Nodes only feed the cache (zones, NotReady counts); the fleet tick picks changes up.
    let (nodes, node_stream) = cached(Api::<Node>::all(client.clone()), slim::node);
    tokio::spawn(node_stream.for_each(|_| future::ready(())));
    // Autoscalers too (who set a floor the operator raised).
    let (autoscalers, autoscaler_stream) =
        cached(api(&client, namespace.as_deref()), slim::autoscaler);
    tokio::spawn(autoscaler_stream.for_each(|_| future::ready(())));
    // Argo Rollouts too, once the API server serves them.
    let (rollouts, rollout_writer) = reflector::store();
    let rollouts_not_served = Arc::new(AtomicBool::new(false));
    tokio::spawn(watch_rollouts(
        client.clone(),
        namespace.clone(),
        rollout_writer,
        Arc::clone(&rollouts_not_served),
    ));
    let caches = Caches {
        pods,
        deployments,
        rollouts,
        rollouts_not_served,
        autoscalers,
        nodes,
        config_maps,
    };
    let context = Arc::new(Context::new(
        client.clone(),
        reporter,
        metrics,
        prometheus,
        settings,
        leader,
        caches.clone(),
    ));
    let (services, service_stream) = watch_services(&client, namespace.as_deref());
    let _ = context.services.set(services.clone());
    // The fleet tick: evaluate everyone's batched signals, then reconcile everyone.
    let (tick_sender, tick_receiver) = tokio::sync::mpsc::channel::<()>(1);
    tokio::spawn(fleet::tick(
        Arc::clone(&context),
        services.clone(),
        tick_sender,
    ));
    tokio::spawn(report_ready(caches, services.clone(), ready));
    // Bounded concurrency bounds memory and the burst of status writes when thousands of
    // services change at once (the first interval); a steady fleet tick is CPU only.
    let controller = Controller::for_stream(service_stream, services.clone()).with_config(
        kube::runtime::controller::Config::default().concurrency(RECONCILE_CONCURRENCY),
    );
    let cycle_context = Arc::clone(&context);
    with_watches(
        controller,
        &services,
        pod_stream,
        deployment_stream,
        config_map_stream,
    )
    .reconcile_all_on(receiver_stream(tick_receiver))
    .graceful_shutdown_on(shutdown)
    .run(reconcile, error_policy, context)
    .for_each(|result| {
        if let Err(error) = result {
            controller_error(&cycle_context, &error);
        }
        future::ready(())
    })
    .await;
}

/// Fills the Rollout cache through `writer` once the API server serves Argo Rollouts
/// (`argoproj.io/v1alpha1` with `rollouts`), looking every minute until it does: an operator
/// started before Argo Rollouts was installed picks it up without a restart. Meanwhile
/// `not_served` is set (pre-flight refuses services of kind Rollout, naming the missing API).
/// Rollouts only feed the cache, like nodes: the fleet tick reads them every interval. Not
/// part of readiness, since most clusters have no Argo Rollouts.
async fn watch_rollouts(
    client: Client,
    namespace: Option<String>,
    writer: reflector::store::Writer<CachedRollout>,
    not_served: Arc<AtomicBool>,
) {
    let kind = WorkloadKind::Rollout;
    let group_version = format!("{}/{}", kind.group(), kind.version());
    loop {
        match client.list_api_group_resources(&group_version).await {
            Ok(list) if list.resources.iter().any(|r| r.name == kind.plural()) => break,
            Ok(_) | Err(kube::Error::Api(_)) => {
                if !not_served.swap(true, Ordering::Relaxed) {
                    info!(
                        api = %group_version,
                        "Argo Rollouts is not installed: InvoiceServices of workload kind Rollout \
                         are refused until it is (looking again every minute)"
                    );
                }
            }
            Err(error) => debug!(%error, "cannot tell whether Argo Rollouts is installed"),
        }
        tokio::time::sleep(ROLLOUT_DISCOVERY_INTERVAL).await;
    }
    not_served.store(false, Ordering::Relaxed);
    info!(api = %group_version, "Argo Rollouts is installed: watching Rollouts");
    reflect(writer, api(&client, namespace.as_deref()), slim::rollout)
        .for_each(|event| {
            if let Err(error) = event {
                debug!(%error, "rollout watch");
            }
            future::ready(())
        })
        .await;
}

/// How often the operator looks for Argo Rollouts while it is not installed.
const ROLLOUT_DISCOVERY_INTERVAL: Duration = Duration::from_secs(60);

/// The InvoiceService cache and its stream of changed objects. InvoiceServices keep their
/// annotations (pause, fail-back) but lose managed fields: the status patches' field sets
/// were the largest part of each cached object.
fn watch_services(
    client: &Client,
    namespace: Option<&str>,
) -> (
    Store<InvoiceService>,
    impl Stream<Item = Result<InvoiceService, watcher::Error>> + Send + 'static,
) {
    let (services, writer) = reflector::store();
    let stream = reflect(writer, api(client, namespace), slim::invoice_service).applied_objects();
    (services, stream)
}

/// Adds the watches that trigger a service's reconcile: its pods, its Deployments, its
/// read-only switch.
fn with_watches(
    controller: Controller<InvoiceService>,
    services: &Store<InvoiceService>,
    pods: impl Stream<Item = Result<CachedPod, watcher::Error>> + Send + 'static,
    deployments: impl Stream<Item = Result<CachedDeployment, watcher::Error>> + Send + 'static,
    config_maps: impl Stream<Item = Result<ConfigMap, watcher::Error>> + Send + 'static,
) -> Controller<InvoiceService> {
    let (pod_services, deployment_services, config_map_services) =
        (services.clone(), services.clone(), services.clone());
    controller
        .watches_stream(pods, move |pod: CachedPod| {
            let namespace = pod.namespace();
            pod_deployment(&pod)
                .map(|deployment| services_using_deployment(&pod_services, namespace, deployment))
                .unwrap_or_default()
        })
        .watches_stream(deployments, move |deployment: CachedDeployment| {
            services_using_deployment(
                &deployment_services,
                deployment.namespace(),
                &deployment.name_any(),
            )
        })
        .watches_stream(config_maps, move |config_map: ConfigMap| {
            services_switched_by(&config_map_services, &config_map)
        })
}

/// An error of the controller itself (not of a reconcile): logged; a service deleted before
/// its reconcile ran is not waited for by the fleet cycle.
fn controller_error(
    context: &Context,
    error: &kube::runtime::controller::Error<super::Error, watcher::Error>,
) {
    if let kube::runtime::controller::Error::ObjectNotFound(reference) = error {
        let mut key = ObjectRef::<InvoiceService>::new(&reference.name);
        if let Some(namespace) = &reference.namespace {
            key = key.within(namespace);
        }
        context.fleet_cycle_reconciled(&key);
    }
    debug!(error = error as &dyn std::error::Error, "controller event");
}

/// Sets `ready` once every cache has synced.
async fn report_ready(caches: Caches, services: Store<InvoiceService>, ready: Arc<AtomicBool>) {
    let synced = future::join5(
        cache_synced("pods", || caches.pods.wait_until_ready()),
        cache_synced("deployments", || caches.deployments.wait_until_ready()),
        cache_synced("nodes", || caches.nodes.wait_until_ready()),
        cache_synced("configmaps", || caches.config_maps.wait_until_ready()),
        cache_synced("invoiceservices", || services.wait_until_ready()),
    )
    .await;
    if let (true, true, true, true, true) = synced {
        ready.store(true, std::sync::atomic::Ordering::Relaxed);
        info!("caches synced; ready");
    }
}

/// The services that name `deployment` (in `namespace`) in their workload.
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

/// The services whose read-only switch is `config_map`.
fn services_switched_by(
    services: &Store<InvoiceService>,
    config_map: &ConfigMap,
) -> Vec<ObjectRef<InvoiceService>> {
    let name = config_map.name_any();
    services
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
        .collect()
}

/// Waits for one cache's first full list, logging it; false when the cache can never sync.
///
/// A store's readiness keeps the waker of only its latest waiter (a oneshot channel inside
/// kube-runtime's `DelayedInit`), and the controller waits on the InvoiceService store too: of
/// two waiters one is never woken. Seen at fleet scale as a `/readyz` stuck at 503 while pods
/// churned at start-up. So the wait is polled afresh every second.
pub(super) async fn cache_synced<F, Fut, E>(kind: &'static str, ready: F) -> bool
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

fn receiver_stream(mut receiver: tokio::sync::mpsc::Receiver<()>) -> impl Stream<Item = ()> {
    stream::poll_fn(move |context| receiver.poll_recv(context))
}
