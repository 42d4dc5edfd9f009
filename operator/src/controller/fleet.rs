//! The fleet tick and the storm gate. Once per evaluation interval the leader measures the whole
//! fleet with one batched set of Prometheus queries ([`evaluate_fleet`]), counts every service
//! in trouble for the storm gate before any of them reconciles (`storm_census`), then triggers
//! a reconcile of every service; a fleet cycle ends once all of them finished. Each reconcile
//! reads its service's measurements out of the tick's snapshot ([`measure`]). IO: the
//! Prometheus queries.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use jiff::Timestamp;
use kube::{
    ResourceExt,
    runtime::reflector::{ObjectRef, Store},
};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::{CachedPod, Context, QueryMode, cycle, observe::observe_among, wiring::cache_synced};
use crate::{
    api::{InvoiceService, validate},
    evaluate::evaluate,
    prometheus::{FleetMetrics, FleetQuery, ServiceQuery, ServiceSelector, uses_fleet_queries},
    signals::ServiceMetrics,
    storm::{StormVerdict, in_trouble},
};

/// The latest batched measurements of the fleet.
#[derive(Debug, Default)]
pub(super) struct FleetSnapshot {
    pub(super) metrics: Option<Arc<FleetMetrics>>,
    /// Fleet evaluations in a row, up to the latest, in which some query failed.
    pub(super) failed_in_a_row: u32,
}

/// The fleet tick, until the reconciles' side of `ticks` is gone: evaluate everyone's batched
/// signals, count the storm census, then reconcile everyone. Followers only wait.
pub(super) async fn tick(
    context: Arc<Context>,
    services: Store<InvoiceService>,
    ticks: mpsc::Sender<()>,
) {
    // A first evaluation over a store still listing would ask for none of the services'
    // windows: every service would read "no data" once after each start.
    if !cache_synced("invoiceservices", || services.wait_until_ready()).await {
        return;
    }
    let mut ticker = tokio::time::interval(context.settings.evaluation_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut led = false;
    loop {
        // With `Delay`, a tick is late when the previous round (queries included) ran past
        // the next one: an overrun even when every reconcile is done.
        let late = ticker.tick().await.elapsed();
        if !context.leads() {
            if std::mem::take(&mut led) {
                // A follower's per-service figures would stay frozen at their last values.
                context.metrics.forget_all_services();
            }
            continue;
        }
        led = true;
        context.start_fleet_cycle(&services, late);
        let query = evaluate_fleet(&context, &services).await;
        context.storm_census(&services);
        if ticks.send(()).await.is_err() {
            return;
        }
        context.fleet_cycle_dispatched(query, &services);
    }
}

/// Runs the fleet evaluation once: one batched query set for every service that uses the
/// operator-wide profile. Returns how long the queries took. Sends nothing in the per-service
/// query mode, where each reconcile queries for its own service.
pub(super) async fn evaluate_fleet(
    context: &Context,
    services: &Store<InvoiceService>,
) -> Duration {
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
    .reading(context.settings.sli_source)
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

/// The service's measurements, with how many fleet evaluations in a row had failed queries
/// (0 for a service measured on its own); `None` while it waits for the first fleet
/// evaluation.
pub(super) async fn measure(
    context: &Context,
    service: &InvoiceService,
) -> Option<(ServiceMetrics, u32)> {
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

impl Context {
    fn cycles(&self) -> std::sync::MutexGuard<'_, cycle::FleetCycles> {
        self.cycles
            .lock()
            .expect("fleet cycle lock is never poisoned")
    }

    /// One service's latest evaluation for the storm gate, from its reconcile: may close the
    /// gate, never opens it. True while the gate is closed.
    pub(super) fn storm_observe(&self, service: ObjectRef<InvoiceService>, trouble: bool) -> bool {
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
    pub(super) fn fleet_snapshot(&self) -> (Option<Arc<FleetMetrics>>, u32) {
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
    pub(super) fn storm_census(&self, services: &Store<InvoiceService>) {
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
                let observation = observe_among(&self.caches, service, metrics, now, pods);
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

    /// A fleet tick `late` after its time: starts a fleet cycle over every service in the
    /// store, and reports an overrun when the previous cycle is still pending (reconciles
    /// outlasting the interval) or the tick is late by more than a tenth of the interval (the
    /// previous round's queries outlasted it, e.g. a Prometheus that answers slowly).
    pub(super) fn start_fleet_cycle(&self, services: &Store<InvoiceService>, late: Duration) {
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
        } else if late > self.settings.evaluation_interval / 10 {
            self.metrics.fleet_cycle_overruns.inc();
            warn!(
                late_ms = late.as_millis() as u64,
                "fleet evaluation overran the interval: the tick came late"
            );
        }
    }

    /// Drops what is remembered per service for services no longer in the store: a deleted
    /// service that was unhealthy would otherwise count towards the storm gate for good, its
    /// detection time and last written status would stay in memory, and its burn rates would
    /// be exported for good.
    fn forget_deleted(&self, services: &Store<InvoiceService>) {
        let present = |key: &ObjectRef<InvoiceService>| services.get(key).is_some();
        self.storm
            .lock()
            .expect("storm gate lock is never poisoned")
            .retain(|key| present(key));
        self.memory.retain(present);
        self.metrics.forget_services_except(|(namespace, name)| {
            services
                .get(&ObjectRef::new(name).within(namespace))
                .is_some()
        });
    }

    /// The tick's fleet evaluation took `query` and its reconciles are triggered.
    pub(super) fn fleet_cycle_dispatched(&self, query: Duration, services: &Store<InvoiceService>) {
        let completed = self
            .cycles()
            .dispatched(query, Instant::now(), |key| services.get(key).is_some());
        self.fleet_cycle_completed(completed);
    }

    /// A reconcile of `service` finished, successfully or not.
    pub(super) fn fleet_cycle_reconciled(&self, service: &ObjectRef<InvoiceService>) {
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
