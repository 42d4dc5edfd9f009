//! The operator's own metrics, served on `/metrics` in the OpenMetrics text format
//! (prometheus-client). Every label value comes from a fixed set (action, gate, result, error
//! kind) or from the bounded set of InvoiceServices, never from free text. No IO: the HTTP
//! server (`server`) encodes [`Metrics::registry`]. [`CountKubernetesRequestsLayer`] wraps the
//! Kubernetes client's service stack to count the requests it sends.

use std::{sync::Arc, time::Duration};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram, info::Info},
    registry::Registry,
};

use crate::signals::UnknownReason;

mod kubernetes_requests;
mod per_service;
mod service_state;

pub use kubernetes_requests::{
    CountKubernetesRequests, CountKubernetesRequestsLayer, KubernetesRequestLabels,
};
pub use per_service::{PerServiceFamily, ServiceLabels};
pub use service_state::{MODES, PHASES, ServiceState, ServiceStateMetrics};

/// Labels of `invoiceops_remediations_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RemediationLabels {
    /// Action kind, e.g. `RestartPod`.
    pub action: &'static str,
    /// `applied`, `refused`, `failed`, `would` (DryRun) or `undone` (on deletion).
    pub result: &'static str,
    /// `Enforce` or `DryRun`.
    pub mode: &'static str,
}

/// Labels with one gate.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GateLabels {
    /// The gate, e.g. `Cooldown`.
    pub gate: &'static str,
}

/// Labels of a permission the operator uses.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PermissionLabels {
    /// The verb, e.g. `create`.
    pub verb: &'static str,
    /// The resource, e.g. `pods/eviction`.
    pub resource: &'static str,
}

/// Labels with one error kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// A fixed error label (the step that failed).
    pub error: &'static str,
}

/// Labels of Prometheus query metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueryLabels {
    /// The query kind, e.g. `pod_rates`.
    pub kind: &'static str,
}

/// Labels of Prometheus query errors.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueryErrorLabels {
    /// The query kind.
    pub kind: &'static str,
    /// Why it failed (`PrometheusUnreachable`, `QueryFailed`, ...).
    pub reason: &'static str,
}

/// Labels with an incident's symptom (its first, one of a fixed set).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SymptomLabels {
    /// The symptom, e.g. `BadPods`.
    pub symptom: &'static str,
}

/// Labels of the RTO verdicts.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RtoLabels {
    /// `met` or `missed`.
    pub result: &'static str,
}

/// Labels of per-service gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BurnRateLabels {
    /// The InvoiceService's namespace.
    pub namespace: String,
    /// The InvoiceService's name.
    pub service: String,
    /// The window, e.g. `5m`.
    pub window: String,
}

impl ServiceLabels for BurnRateLabels {
    fn service(&self) -> (&str, &str) {
        (&self.namespace, &self.service)
    }
}

/// Every metric the operator exports.
#[derive(Debug)]
pub struct Metrics {
    /// Remediations by action, result and mode.
    pub remediations: Family<RemediationLabels, Counter>,
    /// Decisions blocked, by gate.
    pub blocked: Family<GateLabels, Counter>,
    /// Reconcile duration.
    pub reconcile_duration: Histogram,
    /// Reconcile failures by failed step.
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    /// Prometheus queries sent, by kind.
    pub prometheus_queries: Family<QueryLabels, Counter>,
    /// Prometheus queries that failed, by kind and reason.
    pub prometheus_query_errors: Family<QueryErrorLabels, Counter>,
    /// Samples Prometheus loaded for the queries, by kind (its query statistics).
    pub prometheus_query_samples: Family<QueryLabels, Counter>,
    /// Prometheus query latency.
    pub prometheus_query_duration: Histogram,
    /// Time from the first evaluation that saw a problem to the action that addressed it.
    pub detection_to_action: Histogram,
    /// Time to evaluate the whole fleet's batched signals once.
    pub fleet_evaluation_duration: Histogram,
    /// SLO burn rates per service and window.
    pub burn_rates: PerServiceFamily<BurnRateLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Each service's state (phase, mode, budget, ...), kube-state-metrics style.
    pub service_state: ServiceStateMetrics,
    /// 1 while the global storm gate freezes actions.
    pub storm_gate_closed: Gauge,
    /// InvoiceServices in trouble (unhealthy, or waiting for an action's verdict) at the
    /// latest storm-gate count.
    pub storm_gate_services_in_trouble: Gauge,
    /// InvoiceServices counted by the storm gate.
    pub storm_gate_services: Gauge,
    /// 1 for each permission the operator uses that its ServiceAccount lacks (checked at start).
    pub permission_missing: Family<PermissionLabels, Gauge>,
    /// 1 while this replica holds the leader lease.
    pub leader: Gauge,
    /// Requests sent to the Kubernetes API server, by method and whether they watch.
    pub kubernetes_requests: Family<KubernetesRequestLabels, Counter>,
    /// Time from a fleet tick until every service in the store at the tick was reconciled.
    pub fleet_cycle_duration: Histogram,
    /// Fleet ticks that came while the previous fleet cycle was still pending.
    pub fleet_cycle_overruns: Counter,
    /// Incidents opened, by their first symptom.
    pub incidents_opened: Family<SymptomLabels, Counter>,
    /// Incidents closed, by their first symptom.
    pub incidents_closed: Family<SymptomLabels, Counter>,
    /// Time to recover of closed incidents: fault to health.
    pub incident_recovery: Histogram,
    /// Closed incidents judged against an RTO, by result.
    pub incident_rto: Family<RtoLabels, Counter>,
    registry: Registry,
}

fn latency_buckets() -> impl Iterator<Item = f64> {
    [
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ]
    .into_iter()
}

impl Default for Metrics {
    fn default() -> Self {
        let mut metrics = Self::unregistered();
        metrics.register_actions();
        metrics.register_reconcile();
        metrics.register_prometheus();
        metrics.register_fleet();
        metrics.register_storm_gate();
        metrics.register_cluster();
        metrics.register_incidents();
        metrics.service_state.register(&mut metrics.registry);
        metrics
    }
}

impl Metrics {
    /// Every metric at zero, none of them registered yet.
    fn unregistered() -> Self {
        Self {
            remediations: Family::default(),
            blocked: Family::default(),
            reconcile_duration: Histogram::new(latency_buckets()),
            reconcile_errors: Family::default(),
            prometheus_queries: Family::default(),
            prometheus_query_errors: Family::default(),
            prometheus_query_samples: Family::default(),
            prometheus_query_duration: Histogram::new(latency_buckets()),
            detection_to_action: Histogram::new([
                1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0,
            ]),
            fleet_evaluation_duration: Histogram::new(latency_buckets()),
            burn_rates: PerServiceFamily::default(),
            service_state: ServiceStateMetrics::default(),
            storm_gate_closed: Gauge::default(),
            storm_gate_services_in_trouble: Gauge::default(),
            storm_gate_services: Gauge::default(),
            permission_missing: Family::default(),
            leader: Gauge::default(),
            kubernetes_requests: Family::default(),
            fleet_cycle_duration: Histogram::new([
                0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0,
            ]),
            fleet_cycle_overruns: Counter::default(),
            incidents_opened: Family::default(),
            incidents_closed: Family::default(),
            incident_recovery: Histogram::new([
                30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0,
            ]),
            incident_rto: Family::default(),
            registry: Registry::with_prefix("invoiceops"),
        }
    }

    /// Remediations, the gates that blocked them, and how long after detection they came.
    fn register_actions(&mut self) {
        self.registry.register(
            "remediations",
            "Remediation actions by action, result and mode",
            self.remediations.clone(),
        );
        self.registry.register(
            "decisions_blocked",
            "Decisions whose action a safety gate blocked, by gate",
            self.blocked.clone(),
        );
        self.registry.register(
            "detection_to_action_seconds",
            "Time from the first evaluation that saw a problem to the action taken for it",
            self.detection_to_action.clone(),
        );
    }

    /// Incidents: opened and closed by symptom, time to recover, RTO met or missed.
    fn register_incidents(&mut self) {
        self.registry.register(
            "incidents_opened",
            "Incidents opened, by their first symptom",
            self.incidents_opened.clone(),
        );
        self.registry.register(
            "incidents_closed",
            "Incidents closed (healthy for the settle period), by their first symptom",
            self.incidents_closed.clone(),
        );
        self.registry.register(
            "incident_recovery_seconds",
            "Time to recover of closed incidents, from the fault showing in the signals to health",
            self.incident_recovery.clone(),
        );
        self.registry.register(
            "incident_rto",
            "Closed incidents judged against slos.recovery.rto, by result (met, missed)",
            self.incident_rto.clone(),
        );
    }

    fn register_reconcile(&mut self) {
        self.registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconcile",
            self.reconcile_duration.clone(),
        );
        self.registry.register(
            "reconcile_errors",
            "Reconciles that failed, by the step that failed",
            self.reconcile_errors.clone(),
        );
    }

    /// Queries to Prometheus, and the burn rates read from their answers.
    fn register_prometheus(&mut self) {
        self.registry.register(
            "prometheus_queries",
            "Prometheus queries sent, by kind",
            self.prometheus_queries.clone(),
        );
        self.registry.register(
            "prometheus_query_errors",
            "Prometheus queries that failed, by kind and reason",
            self.prometheus_query_errors.clone(),
        );
        self.registry.register(
            "prometheus_query_samples",
            "Samples Prometheus loaded to answer the queries, by kind (totalQueryableSamples of its query statistics)",
            self.prometheus_query_samples.clone(),
        );
        self.registry.register(
            "prometheus_query_duration_seconds",
            "Prometheus query latency",
            self.prometheus_query_duration.clone(),
        );
        self.registry.register(
            "slo_burn_rate",
            "Error budget burn rate per InvoiceService and window",
            self.burn_rates.family(),
        );
    }

    fn register_fleet(&mut self) {
        self.registry.register(
            "fleet_evaluation_duration_seconds",
            "Time to run the batched Prometheus queries for the whole fleet once",
            self.fleet_evaluation_duration.clone(),
        );
        self.registry.register(
            "fleet_cycle_duration_seconds",
            "Time from a fleet tick until every InvoiceService in the store at the tick was reconciled",
            self.fleet_cycle_duration.clone(),
        );
        self.registry.register(
            "fleet_cycle_overruns",
            "Fleet ticks that came while the previous fleet cycle was still pending",
            self.fleet_cycle_overruns.clone(),
        );
    }

    fn register_storm_gate(&mut self) {
        self.registry.register(
            "storm_gate_closed",
            "1 while too many InvoiceServices are unhealthy at once and actions are frozen",
            self.storm_gate_closed.clone(),
        );
        self.registry.register(
            "storm_gate_services_in_trouble",
            "InvoiceServices unhealthy or waiting for an action's verdict at the latest storm-gate count",
            self.storm_gate_services_in_trouble.clone(),
        );
        self.registry.register(
            "storm_gate_services",
            "InvoiceServices counted by the storm gate",
            self.storm_gate_services.clone(),
        );
    }

    /// The operator's standing in the cluster: its permissions, its lease, its API requests.
    fn register_cluster(&mut self) {
        self.registry.register(
            "build",
            "The operator's version (1)",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        self.registry.register(
            "permission_missing",
            "1 for each permission the operator uses that its ServiceAccount lacks, checked at start",
            self.permission_missing.clone(),
        );
        self.registry.register(
            "leader",
            "1 while this replica holds the leader lease and may act",
            self.leader.clone(),
        );
        self.registry.register(
            "kubernetes_requests",
            "Requests sent to the Kubernetes API server, by HTTP method and whether they watch",
            self.kubernetes_requests.clone(),
        );
    }
}

impl Metrics {
    /// Removes every per-service series of the InvoiceService `namespace`/`service` (its
    /// burn rates): for a service that was deleted.
    pub fn forget_service(&self, namespace: &str, service: &str) {
        self.forget_services_except(|other| other != (namespace, service));
    }

    /// Removes the per-service series of every InvoiceService `(namespace, name)` for which
    /// `present` does not hold: for services deleted since the last fleet tick.
    pub fn forget_services_except(&self, present: impl Fn((&str, &str)) -> bool + Copy) {
        self.burn_rates.retain_services(present);
        self.service_state.retain_services(present);
    }

    /// Removes every per-service series of every InvoiceService: for a replica that lost
    /// the leader lease, whose figures would otherwise stay frozen at their last values.
    pub fn forget_all_services(&self) {
        self.forget_services_except(|_| false);
    }

    /// The registry to encode on `/metrics`.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The metrics in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }

    /// A layer for the Kubernetes client's service stack that counts every request in
    /// [`Metrics::kubernetes_requests`].
    pub fn kubernetes_requests_layer(&self) -> CountKubernetesRequestsLayer {
        CountKubernetesRequestsLayer {
            requests: self.kubernetes_requests.clone(),
        }
    }

    /// Starts a reconcile timer that records its duration when dropped.
    pub fn reconcile_timer(self: &Arc<Self>) -> ReconcileTimer {
        ReconcileTimer {
            metrics: Arc::clone(self),
            start: std::time::Instant::now(),
        }
    }
}

/// Records a reconcile's duration when dropped, so early returns are measured too.
#[derive(Debug)]
pub struct ReconcileTimer {
    metrics: Arc<Metrics>,
    start: std::time::Instant,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.metrics
            .reconcile_duration
            .observe(self.start.elapsed().as_secs_f64());
    }
}

/// Feeds Prometheus query outcomes into the metrics.
#[derive(Debug)]
pub struct QueryMetrics(pub Arc<Metrics>);

impl crate::prometheus::QueryObserver for QueryMetrics {
    fn query_finished(
        &self,
        kind: &'static str,
        outcome: Result<Option<u64>, UnknownReason>,
        elapsed: Duration,
    ) {
        self.0
            .prometheus_queries
            .get_or_create(&QueryLabels { kind })
            .inc();
        self.0
            .prometheus_query_duration
            .observe(elapsed.as_secs_f64());
        match outcome {
            Ok(Some(samples)) => {
                self.0
                    .prometheus_query_samples
                    .get_or_create(&QueryLabels { kind })
                    .inc_by(samples);
            }
            Ok(None) => {}
            Err(reason) => {
                self.0
                    .prometheus_query_errors
                    .get_or_create(&QueryErrorLabels {
                        kind,
                        reason: reason.as_str(),
                    })
                    .inc();
            }
        }
    }
}

#[cfg(test)]
mod tests;
