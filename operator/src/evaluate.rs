//! Evaluate: turns an [`Observation`] into health verdicts under the spec's thresholds — SLO
//! burn rates and error budget, latency against its objective, which pods and zones are
//! unhealthy, database pool pressure, causes no action fixes — and says which signals are not
//! trusted and why. Pure: a function of (spec, observation).

mod pods;
mod zones;

use std::{collections::BTreeMap, time::Duration};

pub use pods::{CONCENTRATED_ERROR_SHARE, unhealthy_pod_limit};

use crate::{
    api::{BurnSeverity, InvoiceServiceSpec},
    signals::{Measured, Observation, ServiceMetrics, UnknownReason},
};

/// The 4xx ratio above which client errors are a "spike" worth a human's look. Invoice APIs
/// see a few percent of 4xx in normal operation (validation errors, 404s on old invoice
/// links); a quarter of all requests failing with 4xx points at something outside the service
/// (a firewall rule answering 403, an expired client credential) that no restart fixes.
pub const CLIENT_ERROR_SPIKE_RATIO: f64 = 0.25;

/// Verdict on one burn-rate alert window.
#[derive(Clone, Debug, PartialEq)]
pub struct BurnRate {
    /// The long window.
    pub long: Duration,
    /// The short window.
    pub short: Duration,
    /// Burn rate over the long window (multiples of the budget-exact rate).
    pub long_rate: Measured<f64>,
    /// Burn rate over the short window.
    pub short_rate: Measured<f64>,
    /// The alert threshold.
    pub factor: f64,
    /// Page or Ticket.
    pub severity: BurnSeverity,
    /// Both windows burn faster than `factor`.
    pub firing: bool,
}

/// Why a pod is unhealthy.
#[derive(Clone, Debug, PartialEq)]
pub enum PodProblem {
    /// A container is in CrashLoopBackOff.
    CrashLoop {
        /// Container restarts so far.
        restarts: i32,
    },
    /// Unready for at least `restartPod.unreadyFor`.
    Unready {
        /// How long it has been unready.
        for_: Duration,
    },
    /// Its 5xx ratio is above `restartPod.errorRatioAbove`.
    Errors {
        /// The pod's 5xx ratio.
        ratio: f64,
    },
}

impl PodProblem {
    /// One-line description with the numbers, for events and status.
    pub fn describe(&self) -> String {
        match self {
            Self::CrashLoop { restarts } => format!("CrashLoopBackOff after {restarts} restarts"),
            Self::Unready { for_ } => format!("unready for {}s", for_.as_secs()),
            Self::Errors { ratio } => format!("5xx ratio {ratio:.3}"),
        }
    }
}

/// Health of one pod.
#[derive(Clone, Debug, PartialEq)]
pub struct PodHealth {
    /// Pod name.
    pub name: String,
    /// Its Deployment.
    pub deployment: String,
    /// Its zone, when known.
    pub zone: Option<String>,
    /// Why it is unhealthy; `None` when healthy or unknown.
    pub problem: Option<PodProblem>,
    /// The pod is being deleted (already restarting).
    pub terminating: bool,
}

/// Health of one zone.
#[derive(Clone, Debug, PartialEq)]
pub struct ZoneHealth {
    /// Zone name.
    pub name: String,
    /// 5xx ratio of the zone's pods over the detection window.
    pub error_ratio: Measured<f64>,
    /// Above `zoneFailover.unhealthyWhen.zoneErrorRatioAbove`; `None` when unknown.
    pub unhealthy: Option<bool>,
    /// Most of the zone's pods error, or the zone is unhealthy: a zone-wide problem, even
    /// while its ratio is still climbing to the threshold.
    pub errors_zone_wide: bool,
    /// NotReady nodes in the zone.
    pub not_ready_nodes: u32,
    /// Desired replicas of the zone's Deployment(s).
    pub replicas: i32,
    /// Ready replicas.
    pub ready_replicas: i32,
}

/// Everything `decide` needs to know about the service's health now.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    /// Burn-rate verdicts, in spec order.
    pub burn_rates: Vec<BurnRate>,
    /// A `Page` burn-rate alert fires: the error budget is going fast. May act.
    pub fast_burn: bool,
    /// Only a `Ticket` alert fires. Reported, never acted on.
    pub slow_burn: bool,
    /// Availability in percent over the SLO window.
    pub availability: Measured<f64>,
    /// Share of the error budget left over the SLO window (1 untouched, 0 spent).
    pub error_budget_remaining: Measured<f64>,
    /// Service 5xx ratio over the detection window.
    pub error_ratio: Measured<f64>,
    /// Requests per second to the service over the detection window.
    pub request_rate: Measured<f64>,
    /// The configured latency percentile, seconds.
    pub latency_seconds: Measured<f64>,
    /// The spec has a latency SLO.
    pub latency_slo: bool,
    /// Latency above the SLO threshold (`None` without a latency SLO or a measurement).
    pub latency_breach: Option<bool>,
    /// Per pod.
    pub pods: Vec<PodHealth>,
    /// Most pods that may be unhealthy for restarting them one by one to be the answer.
    pub max_unhealthy_pods: usize,
    /// Per zone, in workload order.
    pub zones: Vec<ZoneHealth>,
    /// Database pool utilisation.
    pub db_pool_utilization: Measured<f64>,
    /// 4xx ratio over the detection window.
    pub client_error_ratio: Measured<f64>,
    /// Time left until the serving certificate expires (negative: expired), seconds.
    pub certificate_expires_in: Measured<f64>,
    /// Signals that are unknown, with the reason; empty when every signal is trusted.
    pub untrusted: BTreeMap<&'static str, UnknownReason>,
    /// The window the error ratio, latency and pod signals were measured over.
    pub detection_window: Duration,
}

impl Evaluation {
    /// Pods with a problem that are not already going away.
    pub fn unhealthy_pods(&self) -> impl Iterator<Item = &PodHealth> {
        self.pods
            .iter()
            .filter(|pod| pod.problem.is_some() && !pod.terminating)
    }

    /// The current signals meet every SLO: no paging burn and latency (if any) under its
    /// threshold. This judges now, not the SLO window — a service that has recovered reads
    /// true while its window still carries the outage — so it is what remediation, its
    /// reversals and the phase go by; the `SLOMet` condition goes by
    /// [`Self::slo_met_over_window`].
    pub fn slo_met_now(&self) -> Option<bool> {
        if self.fast_burn || self.latency_breach == Some(true) {
            return Some(false);
        }
        let errors_known = self
            .burn_rates
            .iter()
            .any(|burn| burn.short_rate.is_ok() && burn.long_rate.is_ok());
        let latency_known = !self.latency_slo || self.latency_breach.is_some();
        (errors_known && latency_known).then_some(true)
    }

    /// Every objective is met over its SLO window: the availability over the window is at or
    /// above the objective (equivalently, error budget is left: `error_budget_remaining` is
    /// `1 - errors/budget` over the same window), and the latency is under its threshold.
    /// Latency has no windowed figure (it is measured over the detection window only), so it
    /// is judged on its current value, as before. `None` when a figure is unknown and no
    /// known figure misses.
    pub fn slo_met_over_window(&self) -> Option<bool> {
        let availability_met = self
            .error_budget_remaining
            .ok()
            .map(|remaining| remaining >= 0.0);
        let latency_met = if self.latency_slo {
            self.latency_breach.map(|breach| !breach)
        } else {
            Some(true)
        };
        match (availability_met, latency_met) {
            (Some(false), _) | (_, Some(false)) => Some(false),
            (Some(true), Some(true)) => Some(true),
            _ => None,
        }
    }

    /// The burn-rate alerts that fire (both windows above the factor), in spec order.
    pub fn firing_burn_rates(&self) -> impl Iterator<Item = &BurnRate> {
        self.burn_rates.iter().filter(|burn| burn.firing)
    }

    /// Zones known to be unhealthy.
    pub fn unhealthy_zones(&self) -> Vec<&ZoneHealth> {
        self.zones
            .iter()
            .filter(|zone| zone.unhealthy == Some(true))
            .collect()
    }
}

/// Evaluates an observation against the spec.
pub fn evaluate(
    spec: &InvoiceServiceSpec,
    observation: &Observation,
    detection_window: Duration,
) -> Evaluation {
    let min_rate = spec.signals.min_request_rate.get();
    let metrics = &observation.metrics;
    let mut untrusted = BTreeMap::new();
    let mut note = |signal: &'static str, value: &Measured<f64>| {
        if let Err(reason) = value {
            untrusted.entry(signal).or_insert(*reason);
        }
    };

    let burn_rates = burn_rates(spec, metrics, min_rate);
    for burn in &burn_rates {
        note("errorRatio", &burn.short_rate);
    }
    let fast_burn = burn_rates
        .iter()
        .any(|burn| burn.firing && burn.severity == BurnSeverity::Page);
    let slow_burn = !fast_burn && burn_rates.iter().any(|burn| burn.firing);
    let (availability, error_budget_remaining) = over_slo_window(spec, metrics, min_rate);

    let detection = metrics.rates(detection_window);
    let error_ratio = detection.and_then(|rates| rates.error_ratio(min_rate));
    let request_rate = detection.map(|rates| rates.total);
    let client_error_ratio = detection.and_then(|rates| rates.client_error_ratio(min_rate));
    note("errorRatio", &error_ratio);

    let latency_seconds = metrics.latency_seconds;
    let latency_breach = spec.slos.latency.as_ref().and_then(|slo| {
        note("latency", &latency_seconds);
        latency_seconds
            .ok()
            .map(|seconds| seconds > slo.threshold.get().as_secs_f64())
    });

    let db_pool_utilization = metrics.db_pool_utilization;
    if spec.remediation.read_only.is_some() {
        note("dbPoolUtilization", &db_pool_utilization);
    }

    let certificate_expires_in = metrics
        .certificate_expires_at
        .map(|expires_at| expires_at - observation.at.as_second() as f64);
    if spec.signals.certificate_expiry.is_some() {
        note("certificateExpiry", &certificate_expires_in);
    }

    let workload = zones::evaluate_workload(spec, observation, fast_burn, min_rate);
    Evaluation {
        burn_rates,
        fast_burn,
        slow_burn,
        availability,
        error_budget_remaining,
        error_ratio,
        request_rate,
        latency_seconds,
        latency_slo: spec.slos.latency.is_some(),
        latency_breach,
        pods: workload.pods,
        max_unhealthy_pods: workload.max_unhealthy_pods,
        zones: workload.zones,
        db_pool_utilization,
        client_error_ratio,
        certificate_expires_in,
        untrusted,
        detection_window,
    }
}

/// The 5xx ratio the SLO allows: its error budget as a share of all requests.
fn budget_ratio(spec: &InvoiceServiceSpec) -> f64 {
    let objective = spec.slos.availability.objective.get() / 100.0;
    (1.0 - objective).max(f64::MIN_POSITIVE)
}

/// The verdict on every burn-rate window of the spec, in spec order.
fn burn_rates(spec: &InvoiceServiceSpec, metrics: &ServiceMetrics, min_rate: f64) -> Vec<BurnRate> {
    let budget_ratio = budget_ratio(spec);
    let burn = |window: Duration| -> Measured<f64> {
        let ratio = metrics.rates(window)?.error_ratio(min_rate)?;
        Ok(ratio / budget_ratio)
    };
    spec.slos
        .availability
        .burn_rate_windows
        .iter()
        .map(|window| {
            let long_rate = burn(window.long.get());
            let short_rate = burn(window.short.get());
            let factor = window.factor.get();
            let firing = matches!((long_rate, short_rate), (Ok(long), Ok(short)) if long > factor && short > factor);
            BurnRate {
                long: window.long.get(),
                short: window.short.get(),
                long_rate,
                short_rate,
                factor,
                severity: window.severity,
                firing,
            }
        })
        .collect()
}

/// Availability in percent and the share of the error budget left, over the SLO window.
fn over_slo_window(
    spec: &InvoiceServiceSpec,
    metrics: &ServiceMetrics,
    min_rate: f64,
) -> (Measured<f64>, Measured<f64>) {
    let slo_window_ratio = metrics
        .rates(spec.slos.availability.window.get())
        .and_then(|rates| rates.error_ratio(min_rate));
    let availability = slo_window_ratio.map(|ratio| (1.0 - ratio) * 100.0);
    let budget_ratio = budget_ratio(spec);
    let error_budget_remaining = slo_window_ratio.map(|ratio| 1.0 - ratio / budget_ratio);
    (availability, error_budget_remaining)
}
