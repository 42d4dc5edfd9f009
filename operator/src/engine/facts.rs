//! What the decision starts from: the facts that must hold for a while (`status.heldSince`),
//! the causes no action fixes, and the symptom to act on.

use std::{collections::BTreeMap, time::Duration};

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::{Attention, DecisionInput, duration_since, timers};
use crate::{
    api::{IncidentSymptom, Rung},
    evaluate::{Evaluation, PodHealth, PodProblem},
};

/// Keeps a timer running while `holds`, removes it otherwise; returns how long it has held.
fn hold(
    timers: &mut BTreeMap<String, Time>,
    key: &str,
    holds: bool,
    now: Timestamp,
) -> Option<Duration> {
    if holds {
        let since = timers.entry(key.to_owned()).or_insert_with(|| Time(now));
        Some(duration_since(now, since))
    } else {
        timers.remove(key);
        None
    }
}

/// The facts with `for` durations, and what follows from them.
pub(super) struct Facts {
    /// The database pool has been above the read-only enter threshold for long enough.
    pub database_high: bool,
    /// The database pool has been below the read-only exit threshold for long enough.
    pub database_low: bool,
    /// The database pool is over the read-only threshold but not yet for long enough: the
    /// latency and errors it causes are its own, and scaling out would only add connections.
    pub database_pending: bool,
    /// Every SLO met now and no unhealthy pod.
    pub healthy: bool,
    /// How long the service has been healthy.
    pub healthy_for: Option<Duration>,
    /// The first zone failing for long enough while another is fine.
    pub zone_down: Option<Symptom>,
    /// How long the failed-over zone has looked healthy again.
    pub failed_zone_healthy_for: Option<Duration>,
    /// How long every replica of the fail-back canary has been Ready.
    pub canary_ready_for: Option<Duration>,
}

impl Facts {
    /// Reads the facts, running or stopping their timers in `timers`.
    pub fn observe(input: &DecisionInput<'_>, timers: &mut BTreeMap<String, Time>) -> Self {
        let evaluation = input.evaluation;
        let database_high = database_held(input, timers, true);
        let database_low = database_held(input, timers, false);
        let healthy =
            evaluation.slo_met_now() == Some(true) && evaluation.unhealthy_pods().next().is_none();
        let healthy_for = hold(timers, timers::HEALTHY, healthy, input.now);
        Self {
            database_high,
            database_low,
            database_pending: !database_high && database_above_threshold(input),
            healthy,
            healthy_for,
            zone_down: zone_down(input, timers),
            failed_zone_healthy_for: failed_zone_healthy_for(input, timers),
            canary_ready_for: canary_ready_for(input, timers),
        }
    }

    /// The symptom, most specific first. Unknown values never produce one.
    pub fn symptom(&self, evaluation: &Evaluation) -> Option<Symptom> {
        let unhealthy_pods: Vec<_> = evaluation.unhealthy_pods().collect();
        let count = unhealthy_pods.len();
        self.zone_down
            .clone()
            .or_else(|| {
                self.database_high.then(|| Symptom::DatabasePool {
                    utilization: evaluation.db_pool_utilization.unwrap_or(0.0),
                })
            })
            .or_else(|| {
                (count > 0 && count <= evaluation.max_unhealthy_pods).then(|| Symptom::BadPods {
                    pods: rank_pods(&unhealthy_pods),
                    count,
                })
            })
            .or_else(|| {
                let many_bad_pods = count > evaluation.max_unhealthy_pods;
                (evaluation.fast_burn || many_bad_pods).then(|| Symptom::ServiceErrors {
                    burn: fastest_burn(evaluation),
                })
            })
            .or_else(|| {
                (evaluation.latency_breach == Some(true)).then(|| Symptom::Latency {
                    seconds: evaluation.latency_seconds.unwrap_or(0.0),
                })
            })
    }

    /// Why a service-wide symptom waits: a more specific cause (the database pool, a zone
    /// erroring as a whole) is about to be answered by its own rung.
    pub fn waiting(&self, input: &DecisionInput<'_>, symptom: &Symptom) -> Option<String> {
        if !matches!(
            symptom,
            Symptom::ServiceErrors { .. } | Symptom::Latency { .. }
        ) {
            return None;
        }
        if self.database_pending {
            return Some(
                "the database pool is above the read-only threshold: waiting for it to hold before acting"
                    .to_owned(),
            );
        }
        // Likewise a zone erroring as a whole, while ZoneFailover can still answer it: rolling
        // every Deployment would not fix a zone's network.
        let zone_pending = input.status.failover.is_none()
            && input.spec.effective_ladder().contains(&Rung::ZoneFailover)
            && input
                .evaluation
                .zones
                .iter()
                .any(|zone| zone.errors_zone_wide && healthy_zone_exists(input, &zone.name));
        zone_pending.then(|| {
            format!(
                "a zone errors as a whole: waiting {} for it to count as failed",
                input.spec.remediation.zone_failover.unhealthy_when.for_
            )
        })
    }
}

/// Whether the database pool has been beyond the read-only enter threshold (`entering`: above
/// it) or exit threshold (below it) for long enough. Without a read-only policy there is no
/// timer.
fn database_held(
    input: &DecisionInput<'_>,
    timers: &mut BTreeMap<String, Time>,
    entering: bool,
) -> bool {
    let utilization = input.evaluation.db_pool_utilization;
    let Some(policy) = input.spec.remediation.read_only.as_ref() else {
        return false;
    };
    let (key, beyond, for_) = if entering {
        let above = policy.enter_when.db_pool_utilization_above.get();
        (
            timers::DATABASE_POOL_HIGH,
            utilization.is_ok_and(|value| value > above),
            policy.enter_when.for_.get(),
        )
    } else {
        let below = policy.exit_when.db_pool_utilization_below.get();
        (
            timers::DATABASE_POOL_LOW,
            utilization.is_ok_and(|value| value < below),
            policy.exit_when.for_.get(),
        )
    };
    hold(timers, key, beyond, input.now).is_some_and(|held| held >= for_)
}

/// The database pool is above the read-only enter threshold now.
fn database_above_threshold(input: &DecisionInput<'_>) -> bool {
    input
        .spec
        .remediation
        .read_only
        .as_ref()
        .is_some_and(|policy| {
            input
                .evaluation
                .db_pool_utilization
                .is_ok_and(|value| value > policy.enter_when.db_pool_utilization_above.get())
        })
}

/// A zone other than `except` is known to be fine. A zone outage is one zone failing while
/// another is known to be fine; every zone failing at once is the service's own problem.
pub(super) fn healthy_zone_exists(input: &DecisionInput<'_>, except: &str) -> bool {
    input.evaluation.zones.iter().any(|zone| {
        zone.name != except
            && zone.unhealthy == Some(false)
            && !zone.errors_zone_wide
            && input.failed_zone() != Some(zone.name.as_str())
    })
}

/// The first zone unhealthy for `unhealthyWhen.for` while another is fine; runs the timer of
/// every zone.
fn zone_down(input: &DecisionInput<'_>, timers: &mut BTreeMap<String, Time>) -> Option<Symptom> {
    let for_ = input
        .spec
        .remediation
        .zone_failover
        .unhealthy_when
        .for_
        .get();
    let mut down = None;
    for zone in &input.evaluation.zones {
        let unhealthy = zone.unhealthy == Some(true)
            && healthy_zone_exists(input, &zone.name)
            && input.failed_zone() != Some(zone.name.as_str());
        let held = hold(
            timers,
            &timers::zone_unhealthy(&zone.name),
            unhealthy,
            input.now,
        );
        if down.is_none() && held.is_some_and(|held| held >= for_) {
            down = Some(Symptom::ZoneDown {
                zone: zone.name.clone(),
                ratio: zone.error_ratio.unwrap_or(0.0),
            });
        }
    }
    down
}

/// How long the failed-over zone has looked healthy again.
fn failed_zone_healthy_for(
    input: &DecisionInput<'_>,
    timers: &mut BTreeMap<String, Time>,
) -> Option<Duration> {
    let evaluation = input.evaluation;
    input.status.failover.as_ref().and_then(|state| {
        let zone = evaluation.zones.iter().find(|zone| zone.name == state.zone);
        // A drained zone serves no traffic, so its own error ratio is usually unknown: it
        // counts as healthy when its nodes are Ready, it shows no errors, and Prometheus is
        // answering for the service (an outage is no evidence of recovery).
        let looks_healthy = evaluation.error_ratio.is_ok()
            && zone.is_some_and(|zone| zone.not_ready_nodes == 0 && zone.unhealthy != Some(true));
        hold(
            timers,
            &timers::zone_healthy(&state.zone),
            looks_healthy,
            input.now,
        )
    })
}

/// How long every replica of the fail-back canary has been Ready.
fn canary_ready_for(
    input: &DecisionInput<'_>,
    timers: &mut BTreeMap<String, Time>,
) -> Option<Duration> {
    let state = input.status.failover.as_ref()?;
    let wanted: i32 = state.canary.iter().flat_map(|c| c.replicas.values()).sum();
    let ready = state.canary.is_some()
        && input
            .evaluation
            .zones
            .iter()
            .find(|zone| zone.name == state.zone)
            .is_some_and(|zone| zone.ready_replicas >= wanted);
    hold(
        timers,
        &timers::zone_canary_ready(&state.zone),
        ready,
        input.now,
    )
}

/// Causes no action fixes: a 4xx spike, an expiring certificate.
pub(super) fn attention(input: &DecisionInput<'_>) -> Vec<Attention> {
    let evaluation = input.evaluation;
    let mut attention = Vec::new();
    if let Ok(ratio) = evaluation.client_error_ratio
        && ratio > crate::evaluate::CLIENT_ERROR_SPIKE_RATIO
    {
        attention.push(Attention::ClientErrorSpike { ratio });
    }
    if let (Some(expiry), Ok(seconds_left)) = (
        &input.spec.signals.certificate_expiry,
        evaluation.certificate_expires_in,
    ) && seconds_left < expiry.warn_before.get().as_secs_f64()
    {
        attention.push(Attention::CertificateExpiring { seconds_left });
    }
    attention
}

/// The rungs that address a symptom of `kind`, in the default ladder's order; none for a
/// cause no action fixes (a 4xx spike).
pub fn symptom_rungs(kind: IncidentSymptom) -> &'static [Rung] {
    match kind {
        IncidentSymptom::ZoneDown => &[Rung::ZoneFailover],
        IncidentSymptom::DatabasePool => &[Rung::ReadOnly],
        IncidentSymptom::BadPods => &[Rung::RestartPod, Rung::RolloutRestart],
        IncidentSymptom::ServiceErrors => &[Rung::RolloutRestart, Rung::ScaleOut],
        IncidentSymptom::Latency => &[Rung::ScaleOut],
        IncidentSymptom::ClientErrorSpike => &[],
    }
}

/// What is wrong, most specific cause first.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Symptom {
    ZoneDown { zone: String, ratio: f64 },
    DatabasePool { utilization: f64 },
    BadPods { pods: Vec<String>, count: usize },
    ServiceErrors { burn: f64 },
    Latency { seconds: f64 },
}

impl Symptom {
    /// The rungs that address this symptom.
    pub fn rungs(&self) -> &'static [Rung] {
        symptom_rungs(self.kind())
    }

    /// The symptom's kind, as incidents record it.
    pub fn kind(&self) -> IncidentSymptom {
        match self {
            Self::ZoneDown { .. } => IncidentSymptom::ZoneDown,
            Self::DatabasePool { .. } => IncidentSymptom::DatabasePool,
            Self::BadPods { .. } => IncidentSymptom::BadPods,
            Self::ServiceErrors { .. } => IncidentSymptom::ServiceErrors,
            Self::Latency { .. } => IncidentSymptom::Latency,
        }
    }

    /// The signal judged for verification and its value.
    pub fn signal(&self) -> (&'static str, f64) {
        match self {
            Self::ZoneDown { ratio, .. } => ("zoneErrorRatio", *ratio),
            Self::DatabasePool { utilization } => ("dbPoolUtilization", *utilization),
            Self::BadPods { count, .. } => ("unhealthyPods", *count as f64),
            Self::ServiceErrors { burn } => ("burnRate", *burn),
            Self::Latency { seconds } => ("latencySeconds", *seconds),
        }
    }
}

fn fastest_burn(evaluation: &Evaluation) -> f64 {
    evaluation
        .burn_rates
        .iter()
        .filter_map(|burn| burn.short_rate.ok())
        .fold(0.0, f64::max)
}

/// Unhealthy pods, worst first: crash loops, then unready, then errors; by name within.
fn rank_pods(pods: &[&PodHealth]) -> Vec<String> {
    let rank = |pod: &PodHealth| match pod.problem {
        Some(PodProblem::CrashLoop { .. }) => 0,
        Some(PodProblem::Unready { .. }) => 1,
        _ => 2,
    };
    let mut ranked: Vec<_> = pods.to_vec();
    ranked.sort_by(|a, b| rank(a).cmp(&rank(b)).then_with(|| a.name.cmp(&b.name)));
    ranked.into_iter().map(|pod| pod.name.clone()).collect()
}
