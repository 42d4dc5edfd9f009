//! What to ask Prometheus: the fleet-wide query of one evaluation interval ([`FleetQuery`]),
//! the per-service query of a service with its own Prometheus or custom PromQL
//! ([`ServiceQuery`]), and the PromQL each of them plans. No IO.

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use super::{
    fleet::FleetMetrics,
    profile::MetricProfile,
    promql::{QueryWriter, quantile_from_percentile, range},
    rules,
};
use crate::{
    api::{CustomQueries, InvoiceServiceSpec},
    signals::ServiceKey,
};

/// One query the fleet evaluation issues, by what it measures.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QueryKind {
    /// Request rates by pod, zone and status class over the detection window.
    PodRates,
    /// Request rates by service and status class over one window: raw, or read from the
    /// recorded series (see [`SliSource`]).
    ServiceRates(Duration),
    /// The raw rates over one window, asked beside the recorded ones under
    /// [`SliSource::Auto`] while some service is not covered by the recorded series.
    RawFallbackRates(Duration),
    /// One latency quantile by service over the detection window.
    ServiceLatency(String),
    /// One latency quantile by pod over the detection window.
    PodLatency(String),
    /// Both database-pool gauges by pod.
    DbPool,
    /// Certificate expiry by certificate.
    Certificates,
    /// The newest sample time by pod, to tell stale pods.
    Freshness,
}

impl QueryKind {
    /// A fixed name for logs and metric labels (bounded: the window or quantile is left out).
    pub fn name(&self) -> &'static str {
        match self {
            Self::PodRates => "pod_rates",
            Self::ServiceRates(_) => "service_rates",
            Self::RawFallbackRates(_) => "raw_fallback_rates",
            Self::ServiceLatency(_) => "service_latency",
            Self::PodLatency(_) => "pod_latency",
            Self::DbPool => "db_pool",
            Self::Certificates => "certificates",
            Self::Freshness => "freshness",
        }
    }
}

/// A query ready to send, with what it measures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedQuery<Kind> {
    /// What the answer means.
    pub kind: Kind,
    /// The PromQL.
    pub promql: String,
}

/// Whether a service is measured by the batched fleet queries: it uses the operator-wide
/// Prometheus and the metric profile. Otherwise it needs a [`ServiceQuery`] of its own.
pub fn uses_fleet_queries(spec: &InvoiceServiceSpec) -> bool {
    spec.signals.prometheus.is_none() && spec.signals.queries.is_none()
}

/// The SLO windows of a service: both windows of every burn-rate alert and the SLO window.
pub fn slo_windows(spec: &InvoiceServiceSpec) -> impl Iterator<Item = Duration> + '_ {
    let availability = &spec.slos.availability;
    availability
        .burn_rate_windows
        .iter()
        .flat_map(|window| [window.long.get(), window.short.get()])
        .chain(std::iter::once(availability.window.get()))
        // A zero-length range is refused by Prometheus; the API allows "0s", so skip it here
        // rather than fail a query every interval.
        .filter(|window| !window.is_zero())
}

/// The `histogram_quantile` argument of the service's latency SLO (`"0.99"` for the 99th
/// percentile), `None` without a latency SLO.
pub fn latency_quantile(spec: &InvoiceServiceSpec) -> Option<String> {
    let latency = spec.slos.latency.as_ref()?;
    quantile_from_percentile(latency.percentile.as_str())
}

/// Windows up to this long are asked every evaluation: they carry the fast-burn alerts
/// (1 h / 5 min by default), where minutes matter.
pub const ALWAYS_ASKED_UP_TO: Duration = Duration::from_secs(3600);

/// How long an answer over a service-level `window` is reused before it is asked again:
/// nothing for windows up to [`ALWAYS_ASKED_UP_TO`], a sixtieth of the window above (2 min for
/// 2 h, 24 min for 1 d, 12 h for 30 d). A rate over a window moves by at most the share of the
/// window that passed since it was asked, so a reused answer is within about 1.7 % of a fresh
/// one, while the longest windows, which cost Prometheus the most (every sample in the
/// window of every series), are asked a sixtieth as often.
pub fn reuse_period(window: Duration) -> Duration {
    if window <= ALWAYS_ASKED_UP_TO {
        Duration::ZERO
    } else {
        window / 60
    }
}

/// Where the services' request rates over their SLO and burn-rate windows come from. The
/// per-pod detection window (a minute) is always read from the raw counters; so is every
/// window shorter than the recorded 5-minute rate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SliSource {
    /// Rates over the raw counters for every window, as Prometheus keeps them. Costs every
    /// sample of the window: a 30-day window over a large fleet exceeds Prometheus'
    /// `--query.max-samples` and stays unknown.
    #[default]
    Raw,
    /// The recorded series of the operator's recording rules (`invoice-operator rules`);
    /// a window they do not cover yet is `WindowNotYetRecorded` for the services concerned.
    Recorded,
    /// Recorded where the recorded series cover the window, raw for the services they do not
    /// cover yet (or for every service while the rules are not installed); a raw query
    /// Prometheus refuses leaves those services `WindowNotYetRecorded`.
    Auto,
}

/// Which series in the fleet answers belong to one service.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServiceSelector {
    /// The `namespace` and `service` label values.
    pub key: ServiceKey,
    /// The latency quantile the service is measured at (see [`latency_quantile`]).
    pub quantile: Option<String>,
    /// The cert-manager Certificate whose expiry is reported, when expiry is watched.
    pub certificate: Option<String>,
}

impl ServiceSelector {
    /// The selector of the InvoiceService `namespace/name`: its service label
    /// (`signals.serviceLabel`, else the name), latency quantile and certificate
    /// (`signals.certificateExpiry.certificate`, else the service label).
    pub fn for_service(namespace: &str, name: &str, spec: &InvoiceServiceSpec) -> Self {
        let service = spec.signals.service_label.as_deref().unwrap_or(name);
        let certificate = spec.signals.certificate_expiry.as_ref().map(|expiry| {
            expiry
                .certificate
                .clone()
                .unwrap_or_else(|| service.to_owned())
        });
        Self {
            key: ServiceKey {
                namespace: namespace.to_owned(),
                service: service.to_owned(),
            },
            quantile: latency_quantile(spec),
            certificate,
        }
    }
}

/// Everything one evaluation interval asks Prometheus about the fleet. Its queries depend on
/// the distinct windows and quantiles, never on how many services share them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FleetQuery {
    /// The short window per-pod rates and latencies are measured over, e.g. one minute.
    pub detection_window: Duration,
    /// Service-level rate windows: every burn-rate window and SLO window in the fleet.
    pub windows: BTreeSet<Duration>,
    /// Latency quantiles in the fleet, as `histogram_quantile` arguments (`"0.99"`).
    pub quantiles: BTreeSet<String>,
    /// A pod whose newest sample is older than this is `Stale`.
    pub stale_after: Duration,
    /// Restrict every query to one service (the per-service path); `None` for the fleet.
    pub only: Option<ServiceKey>,
    /// Service windows not asked this time: the earlier answer is recent enough (see
    /// [`reuse_period`] and [`FleetQuery::reusing`]).
    pub reused: BTreeSet<Duration>,
    /// Where the long windows' rates come from.
    pub source: SliSource,
    /// Long windows whose raw rates are asked too ([`SliSource::Auto`]): the earlier recorded
    /// answer left some service uncovered, or there was none.
    pub raw_fallback: BTreeSet<Duration>,
}

impl FleetQuery {
    /// A fleet query with no SLO windows or quantiles yet.
    pub fn new(detection_window: Duration, stale_after: Duration) -> Self {
        Self {
            detection_window,
            windows: BTreeSet::new(),
            quantiles: BTreeSet::new(),
            stale_after,
            only: None,
            reused: BTreeSet::new(),
            source: SliSource::Raw,
            raw_fallback: BTreeSet::new(),
        }
    }

    /// The same query, reading long windows from `source`.
    pub fn reading(mut self, source: SliSource) -> Self {
        self.source = source;
        self
    }

    /// Whether `window`'s rates are read from the recorded series: every window of at least
    /// [`rules::SHORT_WINDOW`] unless the source is raw. The short windows too: over a large
    /// fleet the raw hour alone is tens of millions of samples every interval, the recorded
    /// one a few hundred per service (at the price of up to one rule interval of delay).
    pub fn recorded(&self, window: Duration) -> bool {
        self.source != SliSource::Raw && window >= rules::SHORT_WINDOW
    }

    /// The fleet query for these services: the union of their SLO windows and latency
    /// quantiles. Services that need their own query ([`uses_fleet_queries`] is false) are
    /// left out.
    pub fn for_services<'a>(
        specs: impl IntoIterator<Item = &'a InvoiceServiceSpec>,
        detection_window: Duration,
        stale_after: Duration,
    ) -> Self {
        let mut query = Self::new(detection_window, stale_after);
        for spec in specs.into_iter().filter(|spec| uses_fleet_queries(spec)) {
            query.add_service(spec);
        }
        query
    }

    /// Adds the windows and quantile of one service.
    pub fn add_service(&mut self, spec: &InvoiceServiceSpec) {
        self.windows.extend(slo_windows(spec));
        self.quantiles.extend(latency_quantile(spec));
    }

    /// The service-level rate windows queried on their own. The detection window is left out:
    /// its service rates are the sum of the per-pod rates, already in hand.
    pub fn service_windows(&self) -> impl Iterator<Item = Duration> + '_ {
        self.windows
            .iter()
            .copied()
            .filter(|window| *window != self.detection_window)
    }

    /// Leaves out the service windows whose answer in `earlier` (the previous evaluation) is
    /// younger than its [`reuse_period`] at `now`; [`FleetMetrics::carry_over`] puts those
    /// answers back after the evaluation.
    pub fn reusing(mut self, earlier: Option<&FleetMetrics>, now: Instant) -> Self {
        self.reused = match earlier {
            Some(earlier) => self
                .windows
                .iter()
                .copied()
                .filter(|window| {
                    earlier
                        .answer_age(*window, now)
                        .is_some_and(|age| age < reuse_period(*window))
                })
                .collect(),
            None => BTreeSet::new(),
        };
        self.raw_fallback = match self.source {
            SliSource::Auto => self
                .asked_windows()
                .filter(|window| self.recorded(*window))
                .filter(|window| earlier.is_none_or(|earlier| !earlier.fully_recorded(*window)))
                .collect(),
            SliSource::Raw | SliSource::Recorded => BTreeSet::new(),
        };
        self
    }

    /// The service windows asked this time: [`service_windows`](Self::service_windows)
    /// minus the [`reused`](Self::reused) ones.
    pub fn asked_windows(&self) -> impl Iterator<Item = Duration> + '_ {
        self.service_windows()
            .filter(|window| !self.reused.contains(window))
    }

    /// The queries of one evaluation, in a fixed order: per-pod and cheap ones first, then
    /// latencies, then the service windows from shortest to longest.
    pub fn plan(&self, profile: &MetricProfile) -> Vec<PlannedQuery<QueryKind>> {
        let writer = QueryWriter::new(profile, self.only.as_ref());
        let detection = self.detection_window;
        let planned = |kind, promql| PlannedQuery { kind, promql };
        let mut queries = vec![
            planned(QueryKind::PodRates, writer.pod_rates(detection)),
            planned(QueryKind::Freshness, writer.freshness()),
            planned(QueryKind::DbPool, writer.db_pool()),
            planned(QueryKind::Certificates, writer.certificates()),
        ];
        for quantile in &self.quantiles {
            queries.push(planned(
                QueryKind::ServiceLatency(quantile.clone()),
                writer.service_latency(quantile, detection),
            ));
            queries.push(planned(
                QueryKind::PodLatency(quantile.clone()),
                writer.pod_latency(quantile, detection),
            ));
        }
        // Longest windows last: they cost Prometheus the most, and when it stops answering the
        // rest of the batch is given up (see `Prometheus`), the cheap signals are in by then.
        for window in self.asked_windows() {
            let promql = if self.recorded(window) {
                writer.recorded_service_rates(window)
            } else {
                writer.service_rates(window)
            };
            queries.push(planned(QueryKind::ServiceRates(window), promql));
            if self.raw_fallback.contains(&window) {
                queries.push(planned(
                    QueryKind::RawFallbackRates(window),
                    writer.service_rates(window),
                ));
            }
        }
        queries
    }

    /// How many queries one evaluation issues: `4 + windows + 2 × quantiles`, minus the
    /// reused windows, plus the raw fallbacks.
    pub fn planned_queries(&self) -> usize {
        4 + self.asked_windows().count() + 2 * self.quantiles.len() + self.raw_fallback.len()
    }
}

/// One custom PromQL query of a service, by what it measures.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CustomKind {
    /// `signals.queries.errorRatio` over one window.
    ErrorRatio(Duration),
    /// `signals.queries.requestRate` over one window.
    RequestRate(Duration),
    /// `signals.queries.latency` over the detection window.
    Latency,
    /// `signals.queries.dbPoolUtilization`.
    DbPoolUtilization,
}

impl CustomKind {
    /// A fixed name for logs and metric labels.
    pub fn name(&self) -> &'static str {
        match self {
            Self::ErrorRatio(_) => "custom_error_ratio",
            Self::RequestRate(_) => "custom_request_rate",
            Self::Latency => "custom_latency",
            Self::DbPoolUtilization => "custom_db_pool_utilization",
        }
    }
}

/// The measurements of one service that is not part of the fleet batch: it names its own
/// Prometheus, or custom PromQL, or both. Evaluated on its own, so its cost grows with the
/// number of such services.
///
/// The metric profile still covers what the custom queries leave out (per-pod signals, the
/// certificate, any of the four SLIs not given), restricted to this service with escaped
/// label matchers. Custom queries replace the profile's: `errorRatio` every rate window,
/// `latency` the service latency (pod latencies then stay `NoData`).
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceQuery {
    /// Which series are the service's.
    pub selector: ServiceSelector,
    /// `signals.prometheus.url`; the operator-wide Prometheus when `None`.
    pub url: Option<String>,
    /// `signals.queries`.
    pub custom: CustomQueries,
    /// The profile's queries restricted to this service, minus what `custom` replaces.
    pub profile: FleetQuery,
    /// Every rate window of the service, the detection window included.
    pub windows: BTreeSet<Duration>,
    /// `signals.minRequestRate`, used when a custom error ratio comes without a request rate.
    pub min_request_rate: f64,
}

impl ServiceQuery {
    /// The per-service query of the InvoiceService `namespace/name`.
    pub fn for_service(
        namespace: &str,
        name: &str,
        spec: &InvoiceServiceSpec,
        detection_window: Duration,
        stale_after: Duration,
    ) -> Self {
        let selector = ServiceSelector::for_service(namespace, name, spec);
        let custom = spec.signals.queries.clone().unwrap_or_default();
        let mut windows: BTreeSet<Duration> = slo_windows(spec).collect();
        windows.insert(detection_window);
        let mut profile = FleetQuery::new(detection_window, stale_after);
        profile.only = Some(selector.key.clone());
        if custom.error_ratio.is_none() {
            profile.windows = windows.clone();
        }
        if custom.latency.is_none() {
            profile.quantiles.extend(selector.quantile.clone());
        }
        Self {
            selector,
            url: spec
                .signals
                .prometheus
                .as_ref()
                .map(|source| source.url.clone()),
            custom,
            profile,
            windows,
            min_request_rate: spec.signals.min_request_rate.get(),
        }
    }

    /// The custom queries, placeholders filled: `$window` with each window (the detection
    /// window for latency and pool utilisation), `$quantile` with the latency quantile.
    pub fn plan_custom(&self) -> Vec<PlannedQuery<CustomKind>> {
        let detection = range(self.profile.detection_window);
        let fill = |template: &str, window: &str| {
            let quantile = self.selector.quantile.as_deref().unwrap_or("");
            template
                .replace("$window", window)
                .replace("$quantile", quantile)
        };
        let mut queries = Vec::new();
        for window in &self.windows {
            let text = range(*window);
            if let Some(template) = &self.custom.error_ratio {
                queries.push(PlannedQuery {
                    kind: CustomKind::ErrorRatio(*window),
                    promql: fill(template, &text),
                });
                if let Some(template) = &self.custom.request_rate {
                    queries.push(PlannedQuery {
                        kind: CustomKind::RequestRate(*window),
                        promql: fill(template, &text),
                    });
                }
            }
        }
        // Without a latency SLO there is no quantile to fill in, and nothing to measure.
        if let (Some(template), Some(_)) = (&self.custom.latency, &self.selector.quantile) {
            queries.push(PlannedQuery {
                kind: CustomKind::Latency,
                promql: fill(template, &detection),
            });
        }
        if let Some(template) = &self.custom.db_pool_utilization {
            queries.push(PlannedQuery {
                kind: CustomKind::DbPoolUtilization,
                promql: fill(template, &detection),
            });
        }
        queries
    }
}
