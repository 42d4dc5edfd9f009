//! Evaluate: turns an [`Observation`] into health verdicts under the spec's thresholds — SLO
//! burn rates and error budget, latency against its objective, which pods and zones are
//! unhealthy, database pool pressure, causes no action fixes — and says which signals are not
//! trusted and why. Pure: a function of (spec, observation).

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::{
    api::{BurnSeverity, InvoiceServiceSpec},
    signals::{Measured, Observation, RequestRates, UnknownReason},
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

    let objective = spec.slos.availability.objective.get() / 100.0;
    let budget_ratio = (1.0 - objective).max(f64::MIN_POSITIVE);
    let burn = |window: Duration| -> Measured<f64> {
        let ratio = metrics.rates(window)?.error_ratio(min_rate)?;
        Ok(ratio / budget_ratio)
    };
    let burn_rates: Vec<BurnRate> = spec
        .slos
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
        .collect();
    for burn in &burn_rates {
        note("errorRatio", &burn.short_rate);
    }
    let fast_burn = burn_rates
        .iter()
        .any(|burn| burn.firing && burn.severity == BurnSeverity::Page);
    let slow_burn = !fast_burn && burn_rates.iter().any(|burn| burn.firing);

    let slo_window_ratio = metrics
        .rates(spec.slos.availability.window.get())
        .and_then(|rates| rates.error_ratio(min_rate));
    let availability = slo_window_ratio.map(|ratio| (1.0 - ratio) * 100.0);
    let error_budget_remaining = slo_window_ratio.map(|ratio| 1.0 - ratio / budget_ratio);

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

    let mut pods = evaluate_pods(spec, observation, min_rate);
    let max_unhealthy_pods = unhealthy_pod_limit(&spec.remediation.max_unhealthy_pods, pods.len());
    let mut zones = evaluate_zones(spec, observation, min_rate);
    if fast_burn {
        blame_concentrated_errors(&mut pods, observation, max_unhealthy_pods, min_rate);
    }
    // A pod's errors are its own only while its zone is fine: when the zone errors as a whole
    // (over its threshold, or most of its pods erroring while the ratio climbs), restarting
    // its pods one by one is not the answer — zone failover is, once `for` has passed.
    let zone_wide: Vec<String> = zones
        .iter()
        .filter(|zone| {
            let in_zone = pods
                .iter()
                .filter(|pod| pod.zone.as_deref() == Some(&zone.name));
            let (total, erroring) = in_zone.fold((0, 0), |(total, erroring), pod| {
                let errors = matches!(pod.problem, Some(PodProblem::Errors { .. }));
                (total + 1, erroring + usize::from(errors))
            });
            zone.unhealthy == Some(true) || (total >= 2 && erroring * 2 > total)
        })
        .map(|zone| zone.name.clone())
        .collect();
    for zone in &mut zones {
        zone.errors_zone_wide = zone_wide.contains(&zone.name);
    }
    for pod in &mut pods {
        let zone_wide = pod
            .zone
            .as_ref()
            .is_some_and(|zone| zone_wide.contains(zone));
        if zone_wide && matches!(pod.problem, Some(PodProblem::Errors { .. })) {
            pod.problem = None;
        }
    }

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
        pods,
        max_unhealthy_pods,
        zones,
        db_pool_utilization,
        client_error_ratio,
        certificate_expires_in,
        untrusted,
        detection_window,
    }
}

fn evaluate_pods(
    spec: &InvoiceServiceSpec,
    observation: &Observation,
    min_rate: f64,
) -> Vec<PodHealth> {
    let policy = &spec.remediation.restart_pod;
    let error_threshold = policy.error_ratio_above.get();
    observation
        .pods
        .iter()
        .map(|pod| {
            let unready_for = pod.unready_since.filter(|_| !pod.ready).map(|since| {
                let seconds = (observation.at - since)
                    .total(jiff::Unit::Second)
                    .unwrap_or(0.0);
                Duration::from_secs_f64(seconds.max(0.0))
            });
            let pod_error_ratio = observation
                .metrics
                .pods
                .get(&pod.name)
                .ok_or(UnknownReason::NoData)
                .and_then(|metrics| metrics.rates)
                .and_then(|rates| rates.error_ratio(min_rate));
            let problem = if policy.crash_loop && pod.crash_loop {
                Some(PodProblem::CrashLoop {
                    restarts: pod.restart_count,
                })
            } else if let Some(for_) = unready_for.filter(|for_| *for_ >= policy.unready_for.get())
            {
                Some(PodProblem::Unready { for_ })
            } else {
                match pod_error_ratio {
                    Ok(ratio) if ratio > error_threshold => Some(PodProblem::Errors { ratio }),
                    _ => None,
                }
            };
            PodHealth {
                name: pod.name.clone(),
                deployment: pod.deployment.clone(),
                zone: pod.zone.clone(),
                problem,
                terminating: pod.terminating,
            }
        })
        .collect()
}

/// The share of a burning service's 5xx that a few pods must account for to be blamed: a
/// fast burn that one leaking pod causes is that pod's problem, to be restarted alone, not a
/// reason to roll the whole service. Four in five is well above what chance gives one pod of
/// a healthy fleet, and still catches a pod whose own ratio is only ramping up.
pub const CONCENTRATED_ERROR_SHARE: f64 = 0.8;

/// Marks the pods that cause most of a fast burn's 5xx as having errors, when they are few
/// (at most `max_unhealthy_pods`, and never half the pods or more).
fn blame_concentrated_errors(
    pods: &mut [PodHealth],
    observation: &Observation,
    max_unhealthy_pods: usize,
    min_rate: f64,
) {
    let mut by_errors: Vec<(&str, f64, Measured<f64>)> = observation
        .metrics
        .pods
        .iter()
        .filter_map(|(name, metrics)| {
            let rates = metrics.rates.ok()?;
            Some((
                name.as_str(),
                rates.server_errors,
                rates.error_ratio(min_rate),
            ))
        })
        .collect();
    let total: f64 = by_errors.iter().map(|(_, errors, _)| errors).sum();
    if total <= 0.0 || by_errors.len() < 2 {
        return;
    }
    by_errors.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    let mut blamed = Vec::new();
    let mut covered = 0.0;
    for (name, errors, ratio) in &by_errors {
        if covered >= CONCENTRATED_ERROR_SHARE * total {
            break;
        }
        covered += errors;
        blamed.push((*name, *ratio));
    }
    if blamed.len() > max_unhealthy_pods || blamed.len() * 2 >= by_errors.len() {
        return;
    }
    for (name, ratio) in blamed {
        if let Some(pod) = pods.iter_mut().find(|pod| pod.name == name)
            && pod.problem.is_none()
            && let Ok(ratio) = ratio
        {
            pod.problem = Some(PodProblem::Errors { ratio });
        }
    }
}

fn evaluate_zones(
    spec: &InvoiceServiceSpec,
    observation: &Observation,
    min_rate: f64,
) -> Vec<ZoneHealth> {
    let threshold = spec
        .remediation
        .zone_failover
        .unhealthy_when
        .zone_error_ratio_above
        .get();
    spec.workload
        .zone_names()
        .into_iter()
        .map(|zone| {
            // Rates over one window are additive: the zone's rate is the sum of its pods'.
            let mut rates = RequestRates::default();
            let mut measured_pods = 0;
            for (pod_name, pod) in &observation.metrics.pods {
                let pod_zone = pod.zone.clone().or_else(|| {
                    observation
                        .pods
                        .iter()
                        .find(|state| &state.name == pod_name)
                        .and_then(|state| state.zone.clone())
                });
                if pod_zone.as_deref() == Some(zone)
                    && let Ok(pod_rates) = pod.rates
                {
                    rates.add(&pod_rates);
                    measured_pods += 1;
                }
            }
            let error_ratio = if measured_pods == 0 {
                Err(UnknownReason::NoData)
            } else {
                rates.error_ratio(min_rate)
            };
            let in_zone = |name: &str| {
                observation
                    .deployments
                    .iter()
                    .filter(|deployment| deployment.zone.as_deref() == Some(zone))
                    .any(|deployment| deployment.name == name)
            };
            let zonal = observation.deployments.iter().any(|d| d.zone.is_some());
            let (replicas, ready_replicas) = if zonal {
                observation
                    .deployments
                    .iter()
                    .filter(|deployment| in_zone(&deployment.name))
                    .fold((0, 0), |(replicas, ready), deployment| {
                        (
                            replicas + deployment.replicas,
                            ready + deployment.ready_replicas,
                        )
                    })
            } else {
                let pods = observation
                    .pods
                    .iter()
                    .filter(|pod| pod.zone.as_deref() == Some(zone));
                pods.fold((0, 0), |(replicas, ready), pod| {
                    (replicas + 1, ready + i32::from(pod.ready))
                })
            };
            let not_ready_nodes = observation.not_ready_nodes.get(zone).copied().unwrap_or(0);
            let unhealthy = match error_ratio {
                Ok(ratio) => Some(ratio > threshold),
                Err(_) => None,
            };
            ZoneHealth {
                name: zone.to_owned(),
                error_ratio,
                unhealthy,
                errors_zone_wide: false,
                not_ready_nodes,
                replicas,
                ready_replicas,
            }
        })
        .collect()
}

/// How many unhealthy pods are still "a few bad pods": a count, or a percentage of all pods
/// rounded down, but at least one so a single bad pod can always be restarted.
pub fn unhealthy_pod_limit(limit: &IntOrString, pods: usize) -> usize {
    let limit = match limit {
        IntOrString::Int(count) => usize::try_from(*count).unwrap_or(0),
        IntOrString::String(text) => {
            let percent: usize = text.trim_end_matches('%').parse().unwrap_or(0);
            pods * percent / 100
        }
    };
    limit.max(1)
}
