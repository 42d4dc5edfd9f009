//! Splitting answers in memory: the fleet-wide vectors become per-service, per-pod
//! [`ServiceMetrics`], and a service's custom query answers are laid over its profile
//! measurements. Pure: answers come in as [`QueryOutcome`]s, recorded or fresh. No IO.

mod answer;
mod custom;
mod service;
mod window;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
    time::{Duration, Instant},
};

pub use answer::{
    AnswerError, Answered, QueryOutcome, Series, parse_query_response, read_answer,
    read_answer_with_stats,
};
pub use custom::merge_custom;
use window::{ClassRates, WindowAnswer, by_service};

use super::{
    profile::MetricProfile,
    promql::{POOL_ACTIVE, POOL_GAUGE_LABEL, POOL_MAX},
    query::{FleetQuery, QueryKind, reuse_period},
};
use crate::signals::{Measured, ServiceKey, UnknownReason};

/// Label names of the profile, borrowed while splitting.
struct Labels<'a> {
    profile: &'a MetricProfile,
}

impl Labels<'_> {
    /// The service a series belongs to; series without both labels belong to none.
    fn key(&self, series: &Series) -> Option<ServiceKey> {
        Some(ServiceKey {
            namespace: series.labels.get(&self.profile.namespace_label)?.clone(),
            service: series.labels.get(&self.profile.service_label)?.clone(),
        })
    }

    /// The pod of a series. Series without a pod label are kept under the empty name: they
    /// count towards their service's sums but are not a pod of their own.
    fn pod(&self, series: &Series) -> String {
        series
            .labels
            .get(&self.profile.pod_label)
            .cloned()
            .unwrap_or_default()
    }

    fn zone(&self, series: &Series) -> Option<String> {
        series.labels.get(&self.profile.zone_label).cloned()
    }
}

/// One pod's row in a per-pod answer.
#[derive(Clone, Debug, Default)]
struct PodRow<T> {
    zone: Option<String>,
    value: T,
}

/// Both pool gauges of one pod.
#[derive(Clone, Copy, Debug, Default)]
struct PoolGauges {
    active: Option<f64>,
    max: Option<f64>,
}

impl PoolGauges {
    /// Takes one series of the combined pool answer, told apart by its synthetic label.
    fn add(&mut self, series: &Series) {
        match series.labels.get(POOL_GAUGE_LABEL).map(String::as_str) {
            Some(POOL_ACTIVE) => self.active = Some(series.value),
            Some(POOL_MAX) => self.max = Some(series.value),
            _ => {}
        }
    }
}

type ByService<T> = HashMap<ServiceKey, T>;
type ByPod<T> = BTreeMap<String, PodRow<T>>;

/// The fleet's measurements of one evaluation interval, split by service and pod, each answer
/// kept with its own failure reason. [`FleetMetrics::service`] reads one service out.
#[derive(Clone, Debug)]
pub struct FleetMetrics {
    detection_window: Duration,
    service_windows: Vec<Duration>,
    stale_after: Duration,
    pod_rates: Measured<ByService<ByPod<ClassRates>>>,
    freshness: Measured<ByService<BTreeMap<String, f64>>>,
    service_rates: BTreeMap<Duration, WindowAnswer>,
    service_latency: BTreeMap<String, Measured<ByService<f64>>>,
    pod_latency: BTreeMap<String, Measured<ByService<ByPod<f64>>>>,
    db_pool: Measured<ByService<ByPod<PoolGauges>>>,
    certificates: Measured<HashMap<(String, String), f64>>,
}

impl FleetMetrics {
    /// Splits the answers to `query`'s plan. A planned query without an answer counts as
    /// `QueryFailed`.
    pub fn from_outcomes(
        query: &FleetQuery,
        profile: &MetricProfile,
        outcomes: impl IntoIterator<Item = (QueryKind, QueryOutcome)>,
    ) -> Self {
        let mut metrics = Self::awaiting(query);
        for (kind, outcome) in outcomes {
            metrics.absorb(profile, kind, outcome);
        }
        metrics
    }

    /// Measurements of `query` before any answer came in: every one `QueryFailed`, until
    /// [`absorb`](Self::absorb)ed.
    pub fn awaiting(query: &FleetQuery) -> Self {
        Self {
            detection_window: query.detection_window,
            service_windows: query.service_windows().collect(),
            stale_after: query.stale_after,
            pod_rates: Err(UnknownReason::QueryFailed),
            freshness: Err(UnknownReason::QueryFailed),
            service_rates: query
                .service_windows()
                .map(|window| (window, WindowAnswer::failed(UnknownReason::QueryFailed)))
                .collect(),
            service_latency: query
                .quantiles
                .iter()
                .map(|quantile| (quantile.clone(), Err(UnknownReason::QueryFailed)))
                .collect(),
            pod_latency: query
                .quantiles
                .iter()
                .map(|quantile| (quantile.clone(), Err(UnknownReason::QueryFailed)))
                .collect(),
            db_pool: Err(UnknownReason::QueryFailed),
            certificates: Err(UnknownReason::QueryFailed),
        }
    }

    /// Splits one answer into its per-service form as soon as it arrives, so the raw series
    /// (a few per pod) are dropped before the next answer is read.
    pub fn absorb(&mut self, profile: &MetricProfile, kind: QueryKind, outcome: QueryOutcome) {
        let labels = Labels { profile };
        let series = match outcome {
            Ok(series) => series,
            Err(reason) => {
                self.fail(kind, reason);
                return;
            }
        };
        match kind {
            QueryKind::PodRates => {
                self.pod_rates = Ok(split_by_pod(&labels, &series, ClassRates::add));
            }
            QueryKind::Freshness => {
                let mut ages: ByService<BTreeMap<String, f64>> = HashMap::new();
                for sample in &series {
                    if let Some(key) = labels.key(sample) {
                        let age = sample.timestamp - sample.value;
                        ages.entry(key).or_default().insert(labels.pod(sample), age);
                    }
                }
                self.freshness = Ok(ages);
            }
            QueryKind::ServiceRates(window) => {
                self.window(window).rates = Ok(Arc::new(by_service(&labels, &series)));
            }
            QueryKind::RawFallbackRates(window) => {
                self.window(window).fallback = Some(Arc::new(by_service(&labels, &series)));
            }
            QueryKind::ServiceLatency(quantile) => {
                let latencies = series
                    .iter()
                    .filter_map(|sample| Some((labels.key(sample)?, sample.value)))
                    .collect();
                self.service_latency.insert(quantile, Ok(latencies));
            }
            QueryKind::PodLatency(quantile) => {
                let latencies = split_by_pod(&labels, &series, |latency, sample| {
                    *latency = sample.value;
                });
                self.pod_latency.insert(quantile, Ok(latencies));
            }
            QueryKind::DbPool => {
                self.db_pool = Ok(split_by_pod(&labels, &series, PoolGauges::add));
            }
            QueryKind::Certificates => {
                let certificates = series
                    .iter()
                    .filter_map(|sample| {
                        let namespace = sample.labels.get(&profile.certificate_namespace_label);
                        let name = sample.labels.get(&profile.certificate_name_label);
                        Some(((namespace?.clone(), name?.clone()), sample.value))
                    })
                    .collect();
                self.certificates = Ok(certificates);
            }
        }
    }

    /// Finishes an evaluation that started at `now`: stamps this evaluation's window answers
    /// with `now`, and fills from `earlier` (the previous evaluation) the windows `query`
    /// reused and the long windows whose query failed, as long as the earlier answer is
    /// younger than the window's [`reuse_period`] (reused) or twice that (failed). Windows
    /// asked every evaluation are never filled in: a failed one stays unknown.
    pub fn carry_over(&mut self, earlier: Option<&FleetMetrics>, query: &FleetQuery, now: Instant) {
        for (window, answer) in &mut self.service_rates {
            if answer.rates.is_ok() && answer.asked_at.is_none() {
                answer.asked_at = Some(now);
                continue;
            }
            let reused = query.reused.contains(window);
            let period = reuse_period(*window);
            let limit = if reused { period } else { period * 2 };
            let Some(kept) = earlier.and_then(|earlier| earlier.service_rates.get(window)) else {
                continue;
            };
            let young_enough = kept
                .asked_at
                .is_some_and(|at| now.saturating_duration_since(at) < limit);
            if kept.rates.is_ok() && young_enough {
                *answer = kept.clone();
            }
        }
    }

    /// How many of this evaluation's answers are missing because the query failed or
    /// Prometheus did not answer (`QueryFailed`, `PrometheusUnreachable`); reused and
    /// carried-over windows count as answered.
    pub fn failed_queries(&self) -> usize {
        let failed = |reason: &UnknownReason| {
            matches!(
                reason,
                UnknownReason::QueryFailed | UnknownReason::PrometheusUnreachable
            )
        };
        let reasons = [
            self.pod_rates.as_ref().err(),
            self.freshness.as_ref().err(),
            self.db_pool.as_ref().err(),
            self.certificates.as_ref().err(),
        ]
        .into_iter()
        .chain(
            self.service_rates
                .values()
                .map(|answer| answer.rates.as_ref().err()),
        )
        .chain(
            self.service_latency
                .values()
                .map(|answer| answer.as_ref().err()),
        )
        .chain(
            self.pod_latency
                .values()
                .map(|answer| answer.as_ref().err()),
        );
        reasons.flatten().filter(|reason| failed(reason)).count()
    }

    /// Whether the recorded answer over `window` covered every service it names: no service
    /// marked uncovered, and at least one service (none at all means the recording rules are
    /// not installed). False without a successful answer.
    pub fn fully_recorded(&self, window: Duration) -> bool {
        self.service_rates
            .get(&window)
            .and_then(|answer| answer.rates.as_ref().ok())
            .is_some_and(|rates| !rates.is_empty() && rates.values().all(|rates| !rates.uncovered))
    }

    /// How old the answer over `window` is at `now`; `None` without a stamped, successful one.
    pub fn answer_age(&self, window: Duration, now: Instant) -> Option<Duration> {
        let answer = self.service_rates.get(&window)?;
        answer.rates.as_ref().ok()?;
        Some(now.saturating_duration_since(answer.asked_at?))
    }

    /// Every measurement of `query` unknown for one `reason`, e.g. `PrometheusUnreachable`.
    pub fn unknown(query: &FleetQuery, profile: &MetricProfile, reason: UnknownReason) -> Self {
        let outcomes = query
            .plan(profile)
            .into_iter()
            .map(|p| (p.kind, Err(reason)));
        Self::from_outcomes(query, profile, outcomes)
    }

    /// The answer over `window`, created (as failed) if the plan did not have it.
    fn window(&mut self, window: Duration) -> &mut WindowAnswer {
        self.service_rates
            .entry(window)
            .or_insert_with(|| WindowAnswer::failed(UnknownReason::QueryFailed))
    }

    fn fail(&mut self, kind: QueryKind, reason: UnknownReason) {
        match kind {
            QueryKind::PodRates => self.pod_rates = Err(reason),
            QueryKind::Freshness => self.freshness = Err(reason),
            QueryKind::ServiceRates(window) => self.window(window).rates = Err(reason),
            // Expected on a large Prometheus (the sample limit): the services concerned stay
            // `WindowNotYetRecorded`, and it does not count as a failed query.
            QueryKind::RawFallbackRates(_) => {}
            QueryKind::ServiceLatency(quantile) => {
                self.service_latency.insert(quantile, Err(reason));
            }
            QueryKind::PodLatency(quantile) => {
                self.pod_latency.insert(quantile, Err(reason));
            }
            QueryKind::DbPool => self.db_pool = Err(reason),
            QueryKind::Certificates => self.certificates = Err(reason),
        }
    }

    /// The services that appear in any per-pod or per-service answer.
    pub fn services(&self) -> BTreeSet<ServiceKey> {
        let mut keys = BTreeSet::new();
        if let Ok(pods) = &self.pod_rates {
            keys.extend(pods.keys().cloned());
        }
        for answer in self.service_rates.values() {
            if let Ok(rates) = &answer.rates {
                keys.extend(rates.keys().cloned());
            }
        }
        keys
    }
}

/// Groups per-pod series by service and pod, folding each series into its pod's value.
fn split_by_pod<T: Default>(
    labels: &Labels<'_>,
    series: &[Series],
    mut fold: impl FnMut(&mut T, &Series),
) -> ByService<ByPod<T>> {
    let mut split: ByService<ByPod<T>> = HashMap::new();
    for sample in series {
        let Some(key) = labels.key(sample) else {
            continue;
        };
        let row = split
            .entry(key)
            .or_default()
            .entry(labels.pod(sample))
            .or_default();
        if row.zone.is_none() {
            row.zone = labels.zone(sample);
        }
        fold(&mut row.value, sample);
    }
    split
}
