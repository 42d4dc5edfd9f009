//! Splitting answers in memory: the fleet-wide vectors become per-service, per-pod
//! [`ServiceMetrics`], and a service's custom query answers are laid over its profile
//! measurements. Pure: answers come in as [`QueryOutcome`]s, recorded or fresh. No IO.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
    time::{Duration, Instant},
};

use super::{
    profile::MetricProfile,
    promql::{CLASS_LABEL, POOL_ACTIVE, POOL_GAUGE_LABEL, POOL_MAX},
    query::{CustomKind, FleetQuery, QueryKind, ServiceQuery, ServiceSelector, reuse_period},
};
use crate::signals::{
    Measured, PodMetrics, RequestRates, ServiceKey, ServiceMetrics, UnknownReason, measured,
};

/// One sample of an instant-vector answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// The series' labels.
    pub labels: HashMap<String, String>,
    /// When the query was evaluated (Unix seconds, Prometheus' clock).
    pub timestamp: f64,
    /// The sample value, NaN and infinities included.
    pub value: f64,
}

/// The answer to one query: its series, or why there are none.
pub type QueryOutcome = Measured<Vec<Series>>;

/// Why an `/api/v1/query` answer holds no series.
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    /// Prometheus answered with `"status": "error"`.
    #[error("prometheus refused the query: {error_type}: {error}")]
    Refused {
        /// Prometheus' `errorType` (`bad_data`, `timeout`, `execution`, ...).
        error_type: String,
        /// Prometheus' message.
        error: String,
    },
    /// The body is not a Prometheus answer.
    #[error("the answer is not a prometheus query response")]
    Malformed(#[source] serde_json::Error),
    /// A success without data, or data of a type an instant query does not return.
    #[error("the answer holds {0} data, not an instant vector or scalar")]
    ResultType(String),
}

/// The envelope of an `/api/v1/query` answer. `result` stays raw JSON (borrowed from the body)
/// until `resultType` says what it holds, so the answer is read once, straight into
/// [`Series`], with no intermediate tree of the whole body.
#[derive(serde::Deserialize)]
struct Answer<'a> {
    #[serde(borrow)]
    status: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    data: Option<AnswerData<'a>>,
    #[serde(rename = "errorType")]
    error_type: Option<String>,
    error: Option<String>,
}

#[derive(serde::Deserialize)]
struct AnswerData<'a> {
    #[serde(rename = "resultType", borrow)]
    result_type: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    result: &'a serde_json::value::RawValue,
}

/// One sample: `[<unix seconds>, "<value>"]`, the value a string so NaN and infinities fit.
#[derive(serde::Deserialize)]
struct Sample<'a>(f64, #[serde(borrow)] std::borrow::Cow<'a, str>);

impl Sample<'_> {
    fn value(&self) -> Result<f64, AnswerError> {
        self.1.parse().map_err(|_| {
            AnswerError::Malformed(serde::de::Error::custom(format!(
                "sample value {:?} is not a number",
                self.1
            )))
        })
    }
}

#[derive(serde::Deserialize)]
struct VectorSeries<'a> {
    metric: HashMap<String, String>,
    #[serde(borrow)]
    value: Sample<'a>,
}

/// Reads the body of an `/api/v1/query` answer: a vector or scalar answer becomes series; an
/// error answer, a malformed body or another result type is an [`AnswerError`].
pub fn read_answer(body: &[u8]) -> Result<Vec<Series>, AnswerError> {
    let answer: Answer<'_> = serde_json::from_slice(body).map_err(AnswerError::Malformed)?;
    if answer.status != "success" {
        return Err(AnswerError::Refused {
            error_type: answer.error_type.unwrap_or_default(),
            error: answer
                .error
                .unwrap_or_else(|| format!("status {}", answer.status)),
        });
    }
    let data = answer
        .data
        .ok_or_else(|| AnswerError::ResultType("no".to_owned()))?;
    let raw = data.result.get();
    match data.result_type.as_ref() {
        "vector" => {
            let vector: Vec<VectorSeries<'_>> =
                serde_json::from_str(raw).map_err(AnswerError::Malformed)?;
            vector
                .into_iter()
                .map(|series| {
                    Ok(Series {
                        timestamp: series.value.0,
                        value: series.value.value()?,
                        labels: series.metric,
                    })
                })
                .collect()
        }
        "scalar" => {
            let sample: Sample<'_> = serde_json::from_str(raw).map_err(AnswerError::Malformed)?;
            Ok(vec![Series {
                labels: HashMap::new(),
                timestamp: sample.0,
                value: sample.value()?,
            }])
        }
        other => Err(AnswerError::ResultType(other.to_owned())),
    }
}

/// Parses a recorded `/api/v1/query` response body (Prometheus' JSON) into an outcome, as
/// [`read_answer`] does for live answers: a vector or scalar answer becomes series, an error
/// answer or a malformed body `QueryFailed`.
pub fn parse_query_response(body: &str) -> QueryOutcome {
    read_answer(body.as_bytes()).map_err(|_| UnknownReason::QueryFailed)
}

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

/// Raw rates split by status class, before NaN checks (NaN survives the sums).
#[derive(Clone, Copy, Debug, Default)]
struct ClassRates {
    total: f64,
    server_errors: f64,
    client_errors: f64,
}

impl ClassRates {
    fn add(&mut self, series: &Series) {
        self.total += series.value;
        match series.labels.get(CLASS_LABEL).map(String::as_str) {
            Some("5xx") => self.server_errors += series.value,
            Some("4xx") => self.client_errors += series.value,
            _ => {}
        }
    }

    fn measured(self) -> Measured<RequestRates> {
        Ok(RequestRates {
            total: measured(self.total)?,
            server_errors: measured(self.server_errors)?,
            client_errors: measured(self.client_errors)?,
        })
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

/// The answer over one service-level window, shared between evaluations while it is reused.
#[derive(Clone, Debug)]
struct WindowAnswer {
    rates: Measured<Arc<ByService<ClassRates>>>,
    /// When Prometheus gave it, once [`FleetMetrics::carry_over`] has stamped it.
    asked_at: Option<Instant>,
}

impl WindowAnswer {
    fn failed(reason: UnknownReason) -> Self {
        Self {
            rates: Err(reason),
            asked_at: None,
        }
    }
}

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
                let mut rates: ByService<ClassRates> = HashMap::new();
                for sample in &series {
                    if let Some(key) = labels.key(sample) {
                        rates.entry(key).or_default().add(sample);
                    }
                }
                self.service_rates.insert(
                    window,
                    WindowAnswer {
                        rates: Ok(Arc::new(rates)),
                        asked_at: None,
                    },
                );
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

    fn fail(&mut self, kind: QueryKind, reason: UnknownReason) {
        match kind {
            QueryKind::PodRates => self.pod_rates = Err(reason),
            QueryKind::Freshness => self.freshness = Err(reason),
            QueryKind::ServiceRates(window) => {
                self.service_rates
                    .insert(window, WindowAnswer::failed(reason));
            }
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

    /// Whether a pod's values can be trusted now: its newest sample is recent enough.
    /// A pod missing from a successful freshness answer has no current sample at all (its
    /// series ended), so it is stale too; a failed freshness answer leaves every pod unknown.
    fn pod_freshness(&self, key: &ServiceKey, pod: &str) -> Measured<()> {
        let ages = self.freshness.as_ref().map_err(|reason| *reason)?;
        match ages.get(key).and_then(|pods| pods.get(pod)) {
            Some(age) if *age <= self.stale_after.as_secs_f64() => Ok(()),
            _ => Err(UnknownReason::Stale),
        }
    }

    /// What was measured for one service. Fields the service has no series for are `NoData`;
    /// fields whose query failed carry that query's reason; NaN and infinities are
    /// `NotANumber`; pods with old samples are `Stale`. The detection-window rates are the sum
    /// of the fresh pods' rates, the pool utilisation is the fresh pods' sum of active over
    /// sum of max.
    pub fn service(&self, selector: &ServiceSelector) -> ServiceMetrics {
        let key = &selector.key;
        let pod_rates = lookup(&self.pod_rates, key);
        let pod_latency = match &selector.quantile {
            Some(quantile) => match self.pod_latency.get(quantile) {
                Some(answer) => lookup(answer, key),
                None => Err(UnknownReason::NoData),
            },
            None => Err(UnknownReason::NoData),
        };
        let pools = lookup(&self.db_pool, key);

        let mut windows = BTreeMap::new();
        let detection_rates = self.sum_fresh(
            key,
            &pod_rates,
            |rates| rates.measured(),
            |sum, rates| sum.add(&rates),
        );
        windows.insert(self.detection_window, detection_rates);
        for window in &self.service_windows {
            let rates = match self.service_rates.get(window).map(|answer| &answer.rates) {
                Some(Ok(by_service)) => by_service
                    .get(key)
                    .ok_or(UnknownReason::NoData)
                    .and_then(|rates| rates.measured()),
                Some(Err(reason)) => Err(*reason),
                None => Err(UnknownReason::NoData),
            };
            windows.insert(*window, rates);
        }

        let latency_seconds = match &selector.quantile {
            Some(quantile) => match self.service_latency.get(quantile) {
                Some(answer) => lookup(answer, key).and_then(|latency| measured(*latency)),
                None => Err(UnknownReason::NoData),
            },
            None => Err(UnknownReason::NoData),
        };

        let db_pool_utilization = self
            .sum_fresh(
                key,
                &pools,
                |pool| match (pool.active, pool.max) {
                    (Some(active), Some(max)) => Ok((measured(active)?, measured(max)?)),
                    _ => Err(UnknownReason::NoData),
                },
                |sum, (active, max)| {
                    sum.0 += active;
                    sum.1 += max;
                },
            )
            .and_then(|(active, max)| measured(active / max));

        let certificate_expires_at = match &selector.certificate {
            Some(name) => match &self.certificates {
                Ok(certificates) => certificates
                    .get(&(key.namespace.clone(), name.clone()))
                    .map_or(Err(UnknownReason::NoData), |expiry| measured(*expiry)),
                Err(reason) => Err(*reason),
            },
            None => Err(UnknownReason::NoData),
        };

        let mut pods: BTreeMap<String, PodMetrics> = BTreeMap::new();
        let mut pod_names = BTreeSet::new();
        pod_names.extend(names(&pod_rates));
        pod_names.extend(names(&pod_latency));
        pod_names.extend(names(&pools));
        // The empty name gathers series without a pod label: part of sums, not a pod.
        pod_names.remove(&String::new());
        for name in pod_names {
            let row_rates = pod_row(&pod_rates, name);
            let row_latency = pod_row(&pod_latency, name);
            let row_pool = pod_row(&pools, name);
            let zone = row_rates
                .ok()
                .and_then(|row| row.zone.clone())
                .or_else(|| row_latency.ok().and_then(|row| row.zone.clone()));
            let freshness = self.pod_freshness(key, name);
            let fresh = |value: Measured<f64>| value.and_then(|v| freshness.map(|()| v));
            let rates = row_rates
                .and_then(|row| row.value.measured())
                .and_then(|rates| freshness.map(|()| rates));
            pods.insert(
                name.clone(),
                PodMetrics {
                    zone,
                    rates,
                    latency_seconds: fresh(row_latency.and_then(|row| measured(row.value))),
                    db_pool_utilization: fresh(
                        row_pool.and_then(|row| pool_utilization(&row.value)),
                    ),
                },
            );
        }

        ServiceMetrics {
            windows,
            latency_seconds,
            db_pool_utilization,
            certificate_expires_at,
            pods,
        }
    }

    /// Sums a per-pod value over the service's fresh pods. With no pod contributing, the
    /// reason of the first pod (or `NoData` without pods) explains why.
    fn sum_fresh<T, S: Default>(
        &self,
        key: &ServiceKey,
        rows: &Measured<&ByPod<T>>,
        value: impl Fn(&T) -> Measured<S>,
        add: impl Fn(&mut S, S),
    ) -> Measured<S> {
        let rows = rows.as_ref().map_err(|reason| *reason)?;
        let mut sum = None;
        let mut first_reason = None;
        for (name, row) in *rows {
            match self
                .pod_freshness(key, name)
                .and_then(|()| value(&row.value))
            {
                Ok(value) => add(sum.get_or_insert_with(S::default), value),
                Err(reason) => {
                    first_reason.get_or_insert(reason);
                }
            }
        }
        sum.ok_or(first_reason.unwrap_or(UnknownReason::NoData))
    }
}

/// The per-pod rows of `key` in a split answer; `NoData` when the service has none.
fn lookup<'a, T>(answer: &'a Measured<ByService<T>>, key: &ServiceKey) -> Measured<&'a T> {
    match answer {
        Ok(by_service) => by_service.get(key).ok_or(UnknownReason::NoData),
        Err(reason) => Err(*reason),
    }
}

fn names<'a, T>(rows: &Measured<&'a ByPod<T>>) -> impl Iterator<Item = &'a String> {
    rows.iter().flat_map(|rows| rows.keys())
}

fn pod_row<'a, T>(rows: &Measured<&'a ByPod<T>>, name: &str) -> Measured<&'a PodRow<T>> {
    match rows {
        Ok(rows) => rows.get(name).ok_or(UnknownReason::NoData),
        Err(reason) => Err(*reason),
    }
}

fn pool_utilization(pool: &PoolGauges) -> Measured<f64> {
    match (pool.active, pool.max) {
        (Some(active), Some(max)) => measured(measured(active)? / measured(max)?),
        _ => Err(UnknownReason::NoData),
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

/// A custom query's single value: no series is `NoData`, more than one `QueryFailed` (the
/// query does not describe one service), NaN `NotANumber`.
fn single_value(outcome: &QueryOutcome) -> Measured<f64> {
    match outcome.as_ref().map_err(|reason| *reason)?.as_slice() {
        [] => Err(UnknownReason::NoData),
        [series] => measured(series.value),
        _ => Err(UnknownReason::QueryFailed),
    }
}

/// Lays a service's custom query answers over its profile measurements (`base`, from the
/// restricted profile query).
///
/// A custom `errorRatio` has no request counts, but [`ServiceMetrics::windows`] holds
/// [`RequestRates`]; each window is synthesised as `total` = the custom `requestRate` (or,
/// without one, `max(1, minRequestRate)` so the ratio passes the traffic gate as is),
/// `server_errors` = ratio × total, `client_errors` = 0. A NaN ratio at a request rate below
/// `minRequestRate` (0/0 with no traffic) becomes zero errors, so the engine reports
/// `LowTraffic` rather than `NotANumber`.
pub fn merge_custom(
    mut base: ServiceMetrics,
    query: &ServiceQuery,
    outcomes: impl IntoIterator<Item = (CustomKind, QueryOutcome)>,
) -> ServiceMetrics {
    let outcomes: BTreeMap<CustomKind, QueryOutcome> = outcomes.into_iter().collect();
    let answer = |kind: &CustomKind| {
        outcomes
            .get(kind)
            .map_or(Err(UnknownReason::QueryFailed), single_value)
    };
    if query.custom.error_ratio.is_some() {
        for window in &query.windows {
            let ratio = answer(&CustomKind::ErrorRatio(*window));
            let total = match query.custom.request_rate {
                Some(_) => answer(&CustomKind::RequestRate(*window)),
                None => Ok(query.min_request_rate.max(1.0)),
            };
            let rates = match (ratio, total) {
                (Err(reason), _) | (_, Err(reason)) => Err(reason),
                (Ok(ratio), Ok(total)) => Ok(RequestRates {
                    total,
                    server_errors: ratio * total,
                    client_errors: 0.0,
                }),
            };
            let rates = match (rates, total) {
                (Err(UnknownReason::NotANumber), Ok(total)) if total < query.min_request_rate => {
                    Ok(RequestRates {
                        total,
                        ..RequestRates::default()
                    })
                }
                (rates, _) => rates,
            };
            base.windows.insert(*window, rates);
        }
    }
    if query.custom.latency.is_some() {
        base.latency_seconds = match query.selector.quantile {
            Some(_) => answer(&CustomKind::Latency),
            None => Err(UnknownReason::NoData),
        };
    }
    if query.custom.db_pool_utilization.is_some() {
        base.db_pool_utilization = answer(&CustomKind::DbPoolUtilization);
    }
    base
}
